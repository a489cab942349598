//! What a cluster's files say about it: the system identifier in `global/pg_control`.

/// The cluster's system identifier: the first field of `global/pg_control`
/// (`ControlFileData.system_identifier`, a `uint64` in the server's byte order, which is
/// this machine's: the file is only read on the host that runs the server).
pub fn control_system_identifier(pg_control: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = pg_control.get(..8)?.try_into().ok()?;
    Some(u64::from_ne_bytes(bytes)).filter(|&id| id != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_identifier_is_the_first_word() {
        let mut file = 7_301_234_567_890_123_456u64.to_ne_bytes().to_vec();
        file.extend([0u8; 100]);
        assert_eq!(
            control_system_identifier(&file),
            Some(7_301_234_567_890_123_456)
        );
        assert_eq!(control_system_identifier(&file[..7]), None);
        assert_eq!(control_system_identifier(&[0u8; 16]), None);
    }
}

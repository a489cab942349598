//! Reading the operator's files (config, replicas list) the careful way: a file that any
//! user may write could make walguard archive too early or run any command as postgres.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The file's text and mode; refused when it (or its open file) is world-writable.
pub fn read_protected(path: &Path) -> io::Result<(String, u32)> {
    let mut file = File::open(path)?;
    // fstat on the open file: no window between checking and reading.
    let mode = file.metadata()?.mode();
    if mode & 0o002 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "it is writable by every user (mode {:o}), so anyone could change what walguard does; run chmod o-w {}",
                mode & 0o7777,
                path.display()
            ),
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok((text, mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn world_writable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("slaves.list");
        std::fs::write(&f, "app:r1\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_protected(&f).unwrap().0, "app:r1\n");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = read_protected(&f).unwrap_err().to_string();
        assert!(
            err.contains("writable by every user (mode 666)") && err.contains("chmod o-w"),
            "{err}"
        );
    }
}

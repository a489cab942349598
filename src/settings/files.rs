//! Reading the operator's files (config, replicas list) the careful way: a file that any
//! user may write could make walguard archive too early or run any command as postgres.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The file's text and mode; refused when it (or its open file) is world-writable.
pub fn read_protected(path: &Path) -> io::Result<(String, u32)> {
    let mut file = File::open(path).map_err(|e| with_owner(path, e))?;
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

/// "Permission denied", with who walguard runs as and whose file it is: what to do.
fn with_owner(path: &Path, e: io::Error) -> io::Error {
    if e.kind() != io::ErrorKind::PermissionDenied {
        return e;
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return io::Error::new(
            e.kind(),
            format!(
                "{e}; walguard runs as {}, which cannot reach it: make its directory searchable by that user",
                crate::sys::describe_user(crate::sys::euid())
            ),
        );
    };
    let me = crate::sys::euid();
    io::Error::new(
        e.kind(),
        format!(
            "{e}; walguard runs as {} and the file belongs to {} with mode {:o}: make it readable by {} \
             (for example chgrp the server's group and chmod g+r, or chown it)",
            crate::sys::describe_user(me),
            crate::sys::describe_user(meta.uid()),
            meta.mode() & 0o7777,
            crate::sys::user_name(me).unwrap_or_else(|| format!("uid {me}"))
        ),
    )
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

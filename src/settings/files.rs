//! Reading the operator's files (config, replicas list) the careful way: a file that
//! another user may write could make walguard archive too early or run any command as
//! postgres (`on_event`, `archive_via`).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The file's text and mode; refused when every user may write it, or its group may and
/// that group is not the owner's own (a user private group: same name, the owner's
/// primary group), since every member of it could then change what walguard does.
pub fn read_protected(path: &Path) -> io::Result<(String, u32)> {
    let mut file = File::open(path).map_err(|e| with_owner(path, e))?;
    // fstat on the open file: no window between checking and reading.
    let meta = file.metadata()?;
    let mode = meta.mode();
    if mode & 0o020 != 0 && !crate::sys::is_private_group(meta.uid(), meta.gid()) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "it is writable by the group {} (mode {:o}), so any member could change what walguard does; run chmod g-w {}",
                crate::sys::group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string()),
                mode & 0o7777,
                path.display()
            ),
        ));
    }
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
    fn group_writable_is_refused_unless_the_group_is_the_owners_own() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("walguard.toml");
        std::fs::write(&f, "replicas = \"/x\"\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        let me = crate::sys::euid();
        let own = crate::sys::is_private_group(me, std::fs::metadata(&f).unwrap().gid());
        assert_eq!(
            read_protected(&f).is_ok(),
            own,
            "a private group may write; another may not"
        );
        // A group that is surely not the owner's own (daemon, gid 1), when we may chown.
        if crate::sys::is_root() {
            std::os::unix::fs::chown(&f, None, Some(1)).unwrap();
            let err = read_protected(&f).unwrap_err().to_string();
            assert!(
                err.contains("writable by the group") && err.contains("chmod g-w"),
                "{err}"
            );
        }
    }

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

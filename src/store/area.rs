//! The archive directory and its temp area (`ARCHIVE_DIR/.walguard-tmp`), both held open
//! as directory descriptors: every create, link and delete is relative to them, so a
//! symlink swapped in for the temp area can never redirect a write or a delete.

use std::io;
use std::path::Path;
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, Mode, fstat, mkdirat, statat};
use walguard_core::wal::WalFile;

use super::StoreError;
use super::atomic::Dir;
use crate::sys;

/// The temp area's name inside the archive directory (same file system, so the final
/// link is atomic).
pub const TMP_DIR: &str = ".walguard-tmp";

/// The archive directory, open, with its temp area checked and open.
pub struct ArchiveDir {
    pub dir: Dir,
    pub tmp: Dir,
}

impl ArchiveDir {
    /// Opens `path` (following a symlink there is the operator's choice) and creates or
    /// opens its temp area, refusing one that is not a real directory owned by us.
    pub fn open(path: &Path) -> Result<ArchiveDir, StoreError> {
        let dir = Dir::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::TempArea {
                path: path.to_path_buf(),
                problem: "does not exist: create the archive directory (writable by the server's user), or fix archive_dir".into(),
            },
            _ => not_writable(path, path, "cannot open", e),
        })?;
        let tmp_path = path.join(TMP_DIR);
        match mkdirat(&*dir.fd, TMP_DIR, Mode::RWXU) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(not_writable(&tmp_path, path, "cannot create", e.into())),
        }
        // Look before opening, for messages that say what is wrong; then check the
        // opened directory itself, which no one can swap.
        if let Ok(st) = statat(&*dir.fd, TMP_DIR, AtFlags::SYMLINK_NOFOLLOW) {
            check_temp_area(path, &tmp_path, &st)?;
        }
        let tmp =
            dir.open_subdir(TMP_DIR)
                .map_err(|e| match rustix::io::Errno::from_io_error(&e) {
                    Some(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                        not_a_directory(&tmp_path)
                    }
                    _ => not_writable(&tmp_path, path, "cannot open", e),
                })?;
        let st = fstat(&*tmp.fd).map_err(|e| StoreError::Io {
            what: "cannot stat the temp area of",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        check_temp_area(path, &tmp_path, &st)?;
        Ok(ArchiveDir { dir, tmp })
    }

    /// Makes the directory's entries durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.dir.sync().map_err(|source| StoreError::Io {
            what: "cannot fsync directory",
            path: self.dir.path.clone(),
            source,
        })
    }

    /// Removes temporary files left by runs that died (see [`Dir::clean_stale`]): only
    /// names of walguard's own pattern for a WAL file (possibly `.zst`).
    pub fn clean_stale(&self, stale_after: Duration) {
        self.tmp.clean_stale(false, is_archived_name, stale_after);
    }
}

/// A name a file is archived under: a WAL file name, possibly with `.zst`.
fn is_archived_name(name: &str) -> bool {
    name.strip_suffix(".zst")
        .unwrap_or(name)
        .parse::<WalFile>()
        .is_ok()
}

fn not_a_directory(tmp_path: &Path) -> StoreError {
    StoreError::TempArea {
        path: tmp_path.to_path_buf(),
        problem: "is not a real directory (a symlink or a file): walguard's temp area must be its own directory; remove it and retry".into(),
    }
}

/// The temp area must be a real directory of ours that no one else may enter.
fn check_temp_area(
    archive: &Path,
    tmp_path: &Path,
    st: &rustix::fs::Stat,
) -> Result<(), StoreError> {
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(not_a_directory(tmp_path));
    }
    if st.st_uid != sys::euid() {
        return Err(StoreError::TempArea {
            path: tmp_path.to_path_buf(),
            problem: format!(
                "belongs to {}, but walguard runs as {}: it was probably left by a run as another user; \
                 run `chown -R {} {}` and run walguard as the server's user",
                sys::describe_user(st.st_uid),
                sys::describe_user(sys::euid()),
                sys::user_name(sys::euid()).unwrap_or_else(|| sys::euid().to_string()),
                archive.display()
            ),
        });
    }
    if st.st_mode & 0o077 != 0 {
        return Err(StoreError::TempArea {
            path: tmp_path.to_path_buf(),
            problem: format!(
                "is open to other users (mode {:o}): run `chmod 700 {}`",
                st.st_mode & 0o7777,
                tmp_path.display()
            ),
        });
    }
    Ok(())
}

/// "Permission denied" with what to do: who owns the archive directory, and who we run as.
fn not_writable(path: &Path, archive: &Path, what: &'static str, source: io::Error) -> StoreError {
    if source.kind() != io::ErrorKind::PermissionDenied {
        return StoreError::Io {
            what,
            path: path.to_path_buf(),
            source,
        };
    }
    let owner = std::fs::metadata(archive)
        .map(|m| sys::describe_user(std::os::unix::fs::MetadataExt::uid(&m)))
        .unwrap_or_else(|_| "another user".into());
    StoreError::TempArea {
        path: path.to_path_buf(),
        problem: format!(
            "{what} it: {source}; the archive directory {} belongs to {owner} and walguard runs as {}: \
             make it writable by the server's user (chown), and run walguard as that user",
            archive.display(),
            sys::describe_user(sys::euid())
        ),
    }
}

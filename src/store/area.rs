//! The archive directory and its temp area (`ARCHIVE_DIR/.walguard-tmp`), both held open
//! as directory descriptors: every create, link and delete is relative to them, so a
//! symlink swapped in for the temp area can never redirect a write or a delete.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, fstat, mkdirat, openat, statat};
use walguard_core::wal::WalFile;

use super::StoreError;
use crate::sys;

/// The temp area's name inside the archive directory (same file system, so the final
/// link is atomic).
pub const TMP_DIR: &str = ".walguard-tmp";

/// Temporary names end like this: `NAME.HOST.PID.tmp`.
const TMP_SUFFIX: &str = ".tmp";

/// Another host's temp file is only removed once it is surely abandoned: no run lasts
/// this long, whatever that host's `timeout`.
const OTHER_HOST_STALE: Duration = Duration::from_secs(3600);

/// The archive directory, open, with its temp area checked and open.
pub struct ArchiveDir {
    pub path: PathBuf,
    pub fd: OwnedFd,
    pub tmp: OwnedFd,
    host: String,
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

impl ArchiveDir {
    /// Opens `path` (following a symlink there is the operator's choice) and creates or
    /// opens its temp area, refusing one that is not a real directory owned by us.
    pub fn open(path: &Path) -> Result<ArchiveDir, StoreError> {
        let io_err = |what, source| StoreError::Io {
            what,
            path: path.to_path_buf(),
            source,
        };
        let fd = openat(CWD, path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| match e {
                rustix::io::Errno::NOENT => StoreError::TempArea {
                    path: path.to_path_buf(),
                    problem: "does not exist: create the archive directory (writable by the server's user), or fix archive_dir".into(),
                },
                e => not_writable(path, path, "cannot open", errno(e)),
            })?;
        let tmp_path = path.join(TMP_DIR);
        match mkdirat(&fd, TMP_DIR, Mode::RWXU) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(not_writable(&tmp_path, path, "cannot create", errno(e))),
        }
        // Look before opening, for messages that say what is wrong; then check the
        // opened directory itself, which no one can swap.
        if let Ok(st) = statat(&fd, TMP_DIR, AtFlags::SYMLINK_NOFOLLOW) {
            check_temp_area(path, &tmp_path, &st)?;
        }
        let tmp = openat(
            &fd,
            TMP_DIR,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => not_a_directory(&tmp_path),
            e => not_writable(&tmp_path, path, "cannot open", errno(e)),
        })?;
        let st = fstat(&tmp).map_err(|e| io_err("cannot stat the temp area of", errno(e)))?;
        check_temp_area(path, &tmp_path, &st)?;
        Ok(ArchiveDir {
            path: path.to_path_buf(),
            fd,
            tmp,
            host: sys::host_tag(),
        })
    }

    /// This run's temporary name for the final name `name`.
    pub fn temp_name(&self, name: &str) -> String {
        format!("{name}.{}.{}{TMP_SUFFIX}", self.host, std::process::id())
    }

    /// Opens `name` in the archive directory for reading, never through a symlink.
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(errno)
    }

    /// What `name` is in the archive directory, without following a symlink; `None` if
    /// there is no such entry.
    pub fn entry_type(&self, name: &str) -> io::Result<Option<FileType>> {
        match statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    /// Makes the directory's entries durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        rustix::fs::fsync(&self.fd).map_err(|e| StoreError::Io {
            what: "cannot fsync directory",
            path: self.path.clone(),
            source: errno(e),
        })
    }

    /// Removes temporary files left by runs that died (kill -9, power loss), and nothing
    /// else: only names of walguard's own pattern whose writer is gone (this host: its pid
    /// is dead, or the file is older than `stale_after`, which no live run outlasts;
    /// another host sharing the archive: by age alone).
    pub fn clean_stale(&self, stale_after: Duration) {
        let Ok(dir) = Dir::read_from(&self.tmp) else {
            return;
        };
        let now = SystemTime::now();
        for entry in dir.flatten() {
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
            let Some((host, pid)) = name.to_str().and_then(parse_temp_name) else {
                continue;
            };
            let Ok(st) = statat(&self.tmp, &name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                continue;
            }
            let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
            let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
            let stale = if host == self.host {
                (pid != std::process::id() as i32 && !sys::process_alive(pid)) || age > stale_after
            } else {
                age > OTHER_HOST_STALE.max(stale_after)
            };
            if stale {
                let _ = rustix::fs::unlinkat(&self.tmp, &name, AtFlags::empty());
            }
        }
    }
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

/// `(host, pid)` of a name that walguard itself creates in its temp area
/// (`NAME.HOST.PID.tmp`, NAME a WAL file name, possibly `.zst`); `None` for anything else.
pub fn parse_temp_name(name: &str) -> Option<(&str, i32)> {
    let rest = name.strip_suffix(TMP_SUFFIX)?;
    let (rest, pid) = rest.rsplit_once('.')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (final_name, host) = rest.rsplit_once('.')?;
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let wal = final_name.strip_suffix(".zst").unwrap_or(final_name);
    wal.parse::<WalFile>().ok()?;
    Some((host, pid.parse().ok()?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_walguards_own_temp_names_parse() {
        let cases = [
            ("000000010000000000000001.db1.4242.tmp", Some(("db1", 4242))),
            (
                "000000010000000000000001.zst.db-1_x.7.tmp",
                Some(("db-1_x", 7)),
            ),
            ("00000002.history.h.1.tmp", Some(("h", 1))),
            (
                "000000010000000000000001.00000028.backup.h.1.tmp",
                Some(("h", 1)),
            ),
            ("000000010000000000000001.4242", None), // the old pattern: not ours any more
            ("000000010000000000000001", None),
            ("README", None),
            ("README.h.1.tmp", None),
            ("000000010000000000000001.h.x1.tmp", None),
            ("000000010000000000000001..1.tmp", None),
            ("000000010000000000000001.h/x.1.tmp", None),
            (".tmp", None),
        ];
        for (name, want) in cases {
            assert_eq!(parse_temp_name(name), want, "{name}");
        }
    }
}

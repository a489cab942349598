//! The staging area of `restore_prefetch`: `walguard.prefetch/` beside the file
//! PostgreSQL asks `restore` to write (in `pg_wal`, so that serving a staged copy is a
//! rename). A background worker fills it with the segments after the one asked for,
//! each whole (written through a temporary file and a rename, its header and length
//! checked) and named by the archived file it came from ([`Found::key`]). `restore`
//! serves a staged copy only while the archive holds that same file and the area
//! belongs to the running server ([`Staging::adopt`]): a copy left by a crash, by an
//! earlier start of the server, or from before the archive changed is never served.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use super::atomic::Dir;
use super::restore::{Found, SegmentCheck, check_staged, dir_of};

pub const STAGING_DIR: &str = "walguard.prefetch";
/// Which server instance the area belongs to (its postmaster.pid's pid and start).
const OWNER: &str = "owner";
/// The newest segment `restore` was asked for: the worker fills the window after it.
const WANT: &str = "want";
/// Held by the one worker while it runs.
const LOCK: &str = "lock";

pub struct Staging {
    pub dir: PathBuf,
}

impl Staging {
    /// The area beside `dest` (PostgreSQL's `pg_wal/RECOVERYXLOG`).
    pub fn beside(dest: &Path) -> Staging {
        Staging {
            dir: dir_of(dest).join(STAGING_DIR),
        }
    }

    /// Makes the area `owner`'s, creating it: an area another server instance left (a
    /// crash, a restart) is emptied first, as nothing in it can be trusted.
    pub fn adopt(&self, owner: &str) -> io::Result<()> {
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.owned_by(owner) {
                    return Ok(());
                }
                for entry in fs::read_dir(&self.dir)?.flatten() {
                    let _ = fs::remove_file(entry.path());
                }
            }
            Err(e) => return Err(e),
        }
        self.write_small(OWNER, owner)
    }

    pub fn owned_by(&self, owner: &str) -> bool {
        fs::read_to_string(self.dir.join(OWNER)).is_ok_and(|o| o == owner)
    }

    /// Moves the staged copy of `found` to `dest` when there is one and it is whole (its
    /// header and length checked again): the bytes moved. A copy that fails the check is
    /// removed, and the caller restores from the archive.
    pub fn take(&self, found: &Found, dest: &Path, check: Option<&SegmentCheck>) -> Option<u64> {
        let staged = self.dir.join(found.key());
        let file = File::open(&staged).ok()?;
        match check_staged(&file, &staged, check) {
            Ok(bytes) => fs::rename(&staged, dest).ok().map(|()| bytes),
            Err(_) => {
                let _ = fs::remove_file(&staged);
                None
            }
        }
    }

    pub fn set_want(&self, name: &str) -> io::Result<()> {
        self.write_small(WANT, name)
    }

    pub fn want(&self) -> Option<String> {
        fs::read_to_string(self.dir.join(WANT)).ok()
    }

    /// The area's worker lock, when no other process holds it: kept while the returned
    /// file is open.
    pub fn lock(&self) -> io::Result<Option<File>> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The staged copies, by file name (`NAME.KEY`; temporary files are hidden).
    pub fn entries(&self) -> Vec<String> {
        fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.') && ![OWNER, WANT, LOCK].contains(&n.as_str()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn remove(&self, entry: &str) {
        let _ = fs::remove_file(self.dir.join(entry));
    }

    /// Removes the whole area: recovery is over, or no worker fills it any more.
    pub fn remove_all(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// Writes a small file of the area whole (walguard's temporary file, then a rename).
    fn write_small(&self, name: &str, text: &str) -> io::Result<()> {
        let dir = Dir::open(&self.dir)?;
        let mut tmp = dir.temp(name, true)?;
        tmp.file().write_all(text.as_bytes())?;
        tmp.rename(&dir, name)
    }
}

/// The WAL file name a staged entry holds (`NAME.KEY`), if it is one.
pub fn staged_name(entry: &str) -> Option<&str> {
    entry.split_once('.').map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::restore::find;

    /// A scratch directory with `archive/` and `pg_wal/`, removed when dropped.
    fn scratch() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("archive")).unwrap();
        fs::create_dir(d.path().join("pg_wal")).unwrap();
        d
    }
    const NAME: &str = "000000010000000000000003";

    #[test]
    fn a_staged_copy_is_served_only_for_the_same_archived_file_and_owner() {
        let d = scratch();
        let archived = d.path().join("archive").join(NAME);
        fs::write(&archived, b"the segment").unwrap();
        let dest = d.path().join("pg_wal/RECOVERYXLOG");
        let staging = Staging::beside(&dest);
        assert_eq!(staging.dir, d.path().join("pg_wal").join(STAGING_DIR));
        staging.adopt("start 1").unwrap();
        let found = find(&d.path().join("archive"), NAME).unwrap().unwrap();
        fs::write(staging.dir.join(found.key()), b"the segment").unwrap();
        assert_eq!(staging.entries(), [found.key()]);
        assert_eq!(staged_name(&found.key()), Some(NAME));

        // The archived file replaced since: another key, nothing served.
        fs::write(&archived, b"the segment, again").unwrap();
        let changed = find(&d.path().join("archive"), NAME).unwrap().unwrap();
        assert_ne!(changed.key(), found.key());
        assert_eq!(staging.take(&changed, &dest, None), None);
        assert!(!dest.exists());

        // The same file: moved into place.
        assert_eq!(staging.take(&found, &dest, None), Some(11));
        assert_eq!(fs::read(&dest).unwrap(), b"the segment");
        assert!(staging.entries().is_empty());

        // Another start of the server: whatever the area held is gone before use.
        fs::write(staging.dir.join(found.key()), b"left by a crash").unwrap();
        staging.set_want(NAME).unwrap();
        staging.adopt("start 1").unwrap();
        assert_eq!(
            staging.entries().len(),
            1,
            "the same start keeps its copies"
        );
        staging.adopt("start 2").unwrap();
        assert!(staging.entries().is_empty());
        assert_eq!(staging.want(), None);
        assert!(staging.owned_by("start 2"));
    }

    #[test]
    fn one_worker_holds_the_lock() {
        let d = scratch();
        let staging = Staging::beside(&d.path().join("pg_wal/RECOVERYXLOG"));
        staging.adopt("start").unwrap();
        let held = staging.lock().unwrap();
        assert!(held.is_some());
        assert!(staging.lock().unwrap().is_none());
        drop(held);
        assert!(staging.lock().unwrap().is_some());
        staging.remove_all();
        assert!(!staging.dir.exists());
    }
}

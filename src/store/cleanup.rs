//! The archive's side of `cleanup`: a listing to plan over, and the deletions, relative to
//! the opened archive directory and followed by its fsync.

use std::collections::BTreeMap;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, openat, statat, unlinkat};
use walguard_core::cleanup::{self, Archived};
use walguard_core::wal::WalFile;

use super::StoreError;

/// The WAL files in the archive (never the temp area, never a file of another name) and
/// the history files' text.
pub struct Listing {
    pub files: Vec<Archived>,
    pub histories: BTreeMap<u32, String>,
}

pub fn list(dir: &Path) -> Result<Listing, StoreError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io {
            what: "cannot read",
            path,
            source,
        }
    };
    let (names, _) = super::listing::names(dir)?;
    let mut listing = Listing {
        files: Vec::new(),
        histories: BTreeMap::new(),
    };
    for (stored, file) in names {
        let path = dir.join(&stored);
        let backup = match &file {
            WalFile::History(tli) => {
                let text = std::fs::read_to_string(&path).map_err(read_err(&path))?;
                listing.histories.insert(*tli, text);
                None
            }
            // A label that cannot be read counts as a backup without a label.
            WalFile::Backup(..) => std::fs::read_to_string(&path)
                .ok()
                .map(|text| cleanup::backup_info(&text)),
            _ => None,
        };
        listing.files.push(Archived {
            stored,
            file,
            backup,
        });
    }
    Ok(listing)
}

/// Deletes `names` (regular files only, never through a symlink), then fsyncs the
/// directory so the deletions are as durable as the archive's additions. Returns how
/// many were deleted; a name that is already gone is not an error.
pub fn delete(dir: &Path, names: &[String]) -> Result<usize, StoreError> {
    let io_err = |what, path: &Path, e: rustix::io::Errno| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    };
    let fd = openat(
        CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("cannot open the archive directory", dir, e))?;
    let mut deleted = 0;
    for name in names {
        match statat(&fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
            Ok(_) | Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(io_err("cannot stat", &dir.join(name), e)),
        }
        match unlinkat(&fd, name.as_str(), AtFlags::empty()) {
            Ok(()) => deleted += 1,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(io_err("cannot delete", &dir.join(name), e)),
        }
    }
    rustix::fs::fsync(&fd).map_err(|e| io_err("cannot fsync directory", dir, e))?;
    Ok(deleted)
}

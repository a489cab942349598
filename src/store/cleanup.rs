//! The archive's side of `cleanup`: a listing to plan over, and the deletions, relative to
//! the opened archive directory and followed by its fsync.

use std::collections::BTreeMap;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, openat, statat, unlinkat};
use walguard_core::cleanup::Archived;
use walguard_core::wal::WalFile;

use super::StoreError;
use super::copy::ZSTD_SUFFIX;

/// The WAL files in the archive (never the temp area, never a file of another name) and
/// the history files' text.
pub struct Listing {
    pub files: Vec<Archived>,
    pub histories: BTreeMap<u32, String>,
}

pub fn list(dir: &Path) -> Result<Listing, StoreError> {
    let io_err = |what, source| StoreError::Io {
        what,
        path: dir.to_path_buf(),
        source,
    };
    let mut listing = Listing {
        files: Vec::new(),
        histories: BTreeMap::new(),
    };
    for entry in
        std::fs::read_dir(dir).map_err(|e| io_err("cannot list the archive directory", e))?
    {
        let entry = entry.map_err(|e| io_err("cannot list the archive directory", e))?;
        let stored = entry.file_name().to_string_lossy().into_owned();
        let Ok(file) = stored
            .strip_suffix(ZSTD_SUFFIX)
            .unwrap_or(&stored)
            .parse::<WalFile>()
        else {
            continue;
        };
        if let WalFile::History(tli) = file {
            let text = std::fs::read_to_string(entry.path())
                .map_err(|e| io_err("cannot read a history file in", e))?;
            listing.histories.insert(tli, text);
        }
        listing.files.push(Archived { stored, file });
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

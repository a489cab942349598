//! Restoring from the archive (PostgreSQL's restore_command): `NAME` or `NAME.zst`,
//! decompressed, checked, and written to the destination through walguard's temporary
//! file and a rename, so `%p` is either absent or whole.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use walguard_core::header::{LONG_HEADER_LEN, LongHeader};
use walguard_core::wal::{SegmentId, SegmentSize, WalFile};

use super::StoreError;
use super::atomic::Dir;
use super::copy::{ZSTD_SUFFIX, read_full, reader};
use super::prefetch::Staging;

/// What a restore found.
#[derive(Debug, PartialEq, Eq)]
pub enum Restored {
    /// Neither `NAME` nor `NAME.zst` is in the archive (which is there and readable).
    Missing,
    /// Written to the destination: `bytes` from the archive's `from`; `prefetched` when
    /// a copy decompressed ahead was moved into place.
    Written {
        bytes: u64,
        from: String,
        prefetched: bool,
    },
}

/// For a segment: its id and the cluster's system identifier when known. Its size comes
/// from its own header, which must agree with the name and with its length.
pub struct SegmentCheck {
    pub segment: SegmentId,
    pub sysid: Option<u64>,
}

impl SegmentCheck {
    /// The check for `wal`: segments only, and only with `header_check` on.
    pub fn of(wal: &WalFile, header_check: bool, sysid: Option<u64>) -> Option<SegmentCheck> {
        match wal {
            WalFile::Segment(segment) if header_check => Some(SegmentCheck {
                segment: *segment,
                sysid,
            }),
            _ => None,
        }
    }
}

/// The names PostgreSQL asks restore_command to write (`RECOVERYXLOG`,
/// `RECOVERYHISTORY`), a WAL file name (pg_rewind), or a copy staged ahead
/// (`NAME.KEY`): the temporary files walguard may clean up in `pg_wal` and its staging
/// area.
fn is_restore_target(name: &str) -> bool {
    name.starts_with("RECOVERY")
        || name.parse::<WalFile>().is_ok()
        || name
            .split_once('.')
            .is_some_and(|(wal, _)| wal.parse::<WalFile>().is_ok())
}

/// A file the archive holds for a name: `NAME`, else `NAME.zst`, opened.
pub struct Found {
    pub name: String,
    /// The form it is stored in (`NAME` or `NAME.zst`).
    pub form: String,
    path: PathBuf,
    file: File,
    meta: std::fs::Metadata,
}

impl Found {
    /// What names this archived file's content: its name, inode, length and modification
    /// time. A copy staged ahead is served only while the archive holds that same file.
    pub fn key(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        let m = &self.meta;
        format!(
            "{}.{:x}-{:x}-{:x}.{:x}",
            self.name,
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        )
    }
}

/// Finds `name` in `archive`, plain first. The archive itself must be there: an
/// unmounted network file system is no "end of the archive".
pub fn find(archive: &Path, name: &str) -> Result<Option<Found>, StoreError> {
    std::fs::metadata(archive).map_err(io_err("cannot reach the archive directory", archive))?;
    for form in [name.to_string(), format!("{name}{ZSTD_SUFFIX}")] {
        let path = archive.join(&form);
        match File::open(&path) {
            Ok(file) => {
                let meta = file.metadata().map_err(io_err("cannot stat", &path))?;
                return Ok(Some(Found {
                    name: name.to_string(),
                    form,
                    path,
                    file,
                    meta,
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        }
    }
    Ok(None)
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// Restores `name` from `archive` to `dest`; `check` (segments, with `header_check`)
/// verifies the header and the length before the file is put in place. A whole copy
/// `staged` ahead for this very archived file is moved into place instead.
pub fn restore(
    archive: &Path,
    name: &str,
    dest: &Path,
    check: Option<&SegmentCheck>,
    stale_after: Duration,
    staged: Option<&Staging>,
) -> Result<Restored, StoreError> {
    let Some(found) = find(archive, name)? else {
        return Ok(Restored::Missing);
    };
    let from = found.form.clone();
    if let Some(bytes) = staged.and_then(|s| s.take(&found, dest, check)) {
        return Ok(Restored::Written {
            bytes,
            from,
            prefetched: true,
        });
    }
    let bytes = write(found, dest, check, stale_after)?;
    Ok(Restored::Written {
        bytes,
        from,
        prefetched: false,
    })
}

/// Writes `found`, decompressed and checked, to `dest` through a temporary file in its
/// directory and a rename, so `dest` is either absent or whole. Temporary files of
/// earlier runs that died are removed from that directory first (none lasts longer than
/// `stale_after`). Returns the bytes written.
pub fn write(
    found: Found,
    dest: &Path,
    check: Option<&SegmentCheck>,
    stale_after: Duration,
) -> Result<u64, StoreError> {
    let Found {
        form, path, file, ..
    } = found;
    let (dest_dir, dest_name) = split(dest)?;
    let dir = Dir::open(dest_dir).map_err(io_err("cannot open", dest_dir))?;
    dir.clean_stale(true, is_restore_target, stale_after);
    let mut tmp = dir
        .temp(&dest_name, true)
        .map_err(io_err("cannot create a temporary file in", dest_dir))?;
    let tmp_path = tmp.path();
    // A read error is the archive's fault (damaged), a write error the destination's.
    let damaged = |e: io::Error| StoreError::Unreadable {
        path: path.clone(),
        cause: e.to_string(),
    };
    let (size, bytes) = if form.ends_with(ZSTD_SUFFIX) {
        // Decompressed through a buffer: the header is checked in the first block.
        let mut content = reader(file, &form).map_err(damaged)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut size = None;
        let mut total = 0u64;
        loop {
            let n = read_full(&mut content, &mut buf).map_err(damaged)?;
            if total == 0
                && let Some(check) = check
            {
                size = Some(check_head(&buf[..n], check, &path)?);
            }
            if n == 0 {
                break (size, total);
            }
            tmp.file()
                .write_all(&buf[..n])
                .map_err(io_err("cannot write", &tmp_path))?;
            total += n as u64;
        }
    } else {
        // A plain file: the header read in place, the whole file copied in the kernel
        // (copy_file_range), never through a buffer of ours.
        let size = match check {
            Some(check) => Some(check_head_in_place(&file, check, &path)?),
            None => None,
        };
        let mut file = file;
        let bytes =
            io::copy(&mut file, tmp.file()).map_err(io_err("cannot copy into", &tmp_path))?;
        (size, bytes)
    };
    check_length(bytes, size, &path)?;
    tmp.rename(&dir, &dest_name)
        .map_err(io_err("cannot rename into place", dest))?;
    Ok(bytes)
}

/// A segment must be exactly as long as its header says.
fn check_length(bytes: u64, size: Option<SegmentSize>, path: &Path) -> Result<(), StoreError> {
    match size {
        Some(size) if bytes != size.bytes() => Err(StoreError::Header {
            path: path.to_path_buf(),
            mismatch: format!(
                "it holds {bytes} bytes, but its header says it is a {}-byte segment: it is truncated",
                size.bytes()
            ),
        }),
        _ => Ok(()),
    }
}

/// The directory `dest` is in (`.` for a bare name).
pub(super) fn dir_of(dest: &Path) -> &Path {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `dest`'s directory and file name.
fn split(dest: &Path) -> Result<(&Path, String), StoreError> {
    let dir = dir_of(dest);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| StoreError::Io {
            what: "no file name in",
            path: dest.to_path_buf(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
    Ok((dir, name))
}

/// A copy staged ahead, checked as a restore checks the file it writes: its length.
pub(super) fn check_staged(
    file: &File,
    path: &Path,
    check: Option<&SegmentCheck>,
) -> Result<u64, StoreError> {
    let bytes = file.metadata().map_err(io_err("cannot stat", path))?.len();
    if let Some(check) = check {
        check_length(bytes, Some(check_head_in_place(file, check, path)?), path)?;
    }
    Ok(bytes)
}

/// `file`'s header, read in place (no buffer, the offset untouched) and checked.
fn check_head_in_place(
    file: &File,
    check: &SegmentCheck,
    path: &Path,
) -> Result<SegmentSize, StoreError> {
    let mut head = [0u8; LONG_HEADER_LEN];
    let n = read_head(file, &mut head).map_err(|e| StoreError::Unreadable {
        path: path.to_path_buf(),
        cause: e.to_string(),
    })?;
    check_head(&head[..n], check, path)
}

/// The first bytes of `file` (at most `buf`'s length), read in place.
fn read_head(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The segment's header, checked as `archive` checks it; its segment size comes from the
/// header itself.
fn check_head(head: &[u8], check: &SegmentCheck, path: &Path) -> Result<SegmentSize, StoreError> {
    let size = LongHeader::parse(head)
        .and_then(|h| SegmentSize::new(u64::from(h.seg_size)).ok())
        .ok_or_else(|| StoreError::Header {
            path: path.to_path_buf(),
            mismatch: format!(
                "no WAL long page header with a valid segment size in its first {} bytes",
                head.len().min(LONG_HEADER_LEN)
            ),
        })?;
    let expected = walguard_core::header::Expected {
        segment: check.segment,
        size,
        sysid: check.sysid,
    };
    super::header::check(&mut &head[..], path, &expected)?;
    Ok(size)
}

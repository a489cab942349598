//! Restoring from the archive (PostgreSQL's restore_command): `NAME` or `NAME.zst`,
//! decompressed, checked, and written to the destination through walguard's temporary
//! file and a rename, so `%p` is either absent or whole.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use walguard_core::header::{LONG_HEADER_LEN, LongHeader};
use walguard_core::wal::{SegmentId, SegmentSize, WalFile};

use super::StoreError;
use super::atomic::Dir;
use super::copy::{ZSTD_SUFFIX, read_full, reader};

/// What a restore found.
#[derive(Debug, PartialEq, Eq)]
pub enum Restored {
    /// Neither `NAME` nor `NAME.zst` is in the archive (which is there and readable).
    Missing,
    /// Written to the destination: `bytes` from the archive's `from`.
    Written { bytes: u64, from: String },
}

/// For a segment: its id and the cluster's system identifier when known. Its size comes
/// from its own header, which must agree with the name and with its length.
pub struct SegmentCheck {
    pub segment: SegmentId,
    pub sysid: Option<u64>,
}

/// The names PostgreSQL asks restore_command to write (`RECOVERYXLOG`,
/// `RECOVERYHISTORY`), or a WAL file name (pg_rewind): the temporary files walguard may
/// clean up in `pg_wal`.
fn is_restore_target(name: &str) -> bool {
    name.starts_with("RECOVERY") || name.parse::<WalFile>().is_ok()
}

/// Restores `name` from `archive` to `dest`; `check` (segments, with `header_check`)
/// verifies the header and the length before the file is put in place. Temporary files
/// of earlier runs that died are removed from `dest`'s directory first (none lasts
/// longer than `stale_after`).
pub fn restore(
    archive: &Path,
    name: &str,
    dest: &Path,
    check: Option<&SegmentCheck>,
    stale_after: Duration,
) -> Result<Restored, StoreError> {
    let io_err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { what, path, source }
    };
    // The archive itself must be there: an unmounted network file system is no
    // "end of the archive".
    std::fs::metadata(archive).map_err(io_err("cannot reach the archive directory", archive))?;
    let mut found = None;
    for form in [name.to_string(), format!("{name}{ZSTD_SUFFIX}")] {
        let path = archive.join(&form);
        match File::open(&path) {
            Ok(file) => {
                found = Some((form, path, file));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        }
    }
    let Some((form, path, file)) = found else {
        return Ok(Restored::Missing);
    };
    let dest_dir = match dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    let dest_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| StoreError::Io {
            what: "no file name in",
            path: dest.to_path_buf(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
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
            Some(check) => {
                let mut head = [0u8; LONG_HEADER_LEN];
                let n = read_head(&file, &mut head).map_err(damaged)?;
                Some(check_head(&head[..n], check, &path)?)
            }
            None => None,
        };
        let mut file = file;
        let bytes =
            io::copy(&mut file, tmp.file()).map_err(io_err("cannot copy into", &tmp_path))?;
        (size, bytes)
    };
    if let Some(size) = size
        && bytes != size.bytes()
    {
        return Err(StoreError::Header {
            path,
            mismatch: format!(
                "it holds {bytes} bytes, but its header says it is a {}-byte segment: it is truncated",
                size.bytes()
            ),
        });
    }
    tmp.rename(&dir, &dest_name)
        .map_err(io_err("cannot rename into place", dest))?;
    Ok(Restored::Written { bytes, from: form })
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

//! Restoring from the archive (PostgreSQL's restore_command): `NAME` or `NAME.zst`,
//! decompressed, checked, and written to the destination through a temporary file and a
//! rename, so `%p` is either absent or whole.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use walguard_core::header::{self, Expected, LONG_HEADER_LEN, LongHeader};
use walguard_core::wal::{SegmentId, SegmentSize};

use super::StoreError;
use super::copy::{ZSTD_SUFFIX, read_full, reader};

/// What a restore found.
#[derive(Debug, PartialEq, Eq)]
pub enum Restored {
    /// Neither `NAME` nor `NAME.zst` is in the archive.
    Missing,
    /// Written to the destination: `bytes` from the archive's `from`.
    Written { bytes: u64, from: String },
}

/// Removes the temporary file unless it was renamed into place.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// For a segment: its id and the cluster's system identifier when known. Its size comes
/// from its own header, which must agree with the name and with its length.
pub struct SegmentCheck {
    pub segment: SegmentId,
    pub sysid: Option<u64>,
}

/// Restores `name` from `archive` to `dest`; `check` (segments, with `header_check`)
/// verifies the header and the length before the file is put in place.
pub fn restore(
    archive: &Path,
    name: &str,
    dest: &Path,
    check: Option<&SegmentCheck>,
) -> Result<Restored, StoreError> {
    let io_err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { what, path, source }
    };
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
    let dest_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp_path = dest.with_file_name(format!(".{dest_name}.walguard.{}.tmp", std::process::id()));
    let mut tmp = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp_path)
        .map_err(io_err("cannot create", &tmp_path))?;
    let _cleanup = Temp(tmp_path.clone());
    let damaged = |e: io::Error| StoreError::Damaged {
        dest: path.clone(),
        cause: e.to_string(),
    };
    let bytes = if form.ends_with(ZSTD_SUFFIX) {
        // Read and write apart: a decoder error is the archive's fault, a write error
        // the destination's.
        let mut decoded = reader(file, &form).map_err(damaged)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = read_full(&mut decoded, &mut buf).map_err(damaged)?;
            if n == 0 {
                break total;
            }
            io::Write::write_all(&mut tmp, &buf[..n]).map_err(io_err("cannot write", &tmp_path))?;
            total += n as u64;
        }
    } else {
        let mut file = file;
        io::copy(&mut file, &mut tmp).map_err(io_err("cannot copy into", &tmp_path))?
    };
    if let Some(check) = check {
        let mut page = [0u8; LONG_HEADER_LEN];
        let mut head = File::open(&tmp_path).map_err(io_err("cannot read", &tmp_path))?;
        let n = read_full(&mut head, &mut page).map_err(io_err("cannot read", &tmp_path))?;
        let bad = |mismatch: String| StoreError::Header {
            path: path.clone(),
            mismatch,
        };
        let size = LongHeader::parse(&page[..n])
            .and_then(|h| SegmentSize::new(u64::from(h.seg_size)).ok())
            .ok_or_else(|| {
                bad(format!(
                    "no WAL long page header with a valid segment size in its first {n} bytes"
                ))
            })?;
        let expected = Expected {
            segment: check.segment,
            size,
            sysid: check.sysid,
        };
        header::check(&page[..n], &expected).map_err(|m| bad(m.to_string()))?;
        if bytes != size.bytes() {
            return Err(bad(format!(
                "it holds {bytes} bytes, but its header says it is a {}-byte segment: it is truncated",
                size.bytes()
            )));
        }
    }
    std::fs::rename(&tmp_path, dest).map_err(io_err("cannot rename into place", dest))?;
    Ok(Restored::Written { bytes, from: form })
}

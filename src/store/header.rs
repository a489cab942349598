//! Reading a WAL file's first page for the header check (the check itself is the core's).

use std::io::Read;
use std::path::Path;

use walguard_core::header::{self, Expected, LONG_HEADER_LEN};

use super::StoreError;

/// Checks the long header at the start of `reader` (a file in `pg_wal`, or an archived
/// copy being restored or verified); the error names `path`, the field and both values.
pub fn check(reader: &mut impl Read, path: &Path, expected: &Expected) -> Result<(), StoreError> {
    let mut page = [0u8; LONG_HEADER_LEN];
    let mut filled = 0;
    while filled < page.len() {
        match reader.read(&mut page[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(StoreError::Io {
                    what: "cannot read the header of",
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    header::check(&page[..filled], expected)
        .map(drop)
        .map_err(|mismatch| StoreError::Header {
            path: path.to_path_buf(),
            mismatch: mismatch.to_string(),
        })
}

/// [`check`] on the file at `path`.
pub fn check_file(path: &Path, expected: &Expected) -> Result<(), StoreError> {
    let mut file = std::fs::File::open(path).map_err(|source| StoreError::Io {
        what: "cannot open",
        path: path.to_path_buf(),
        source,
    })?;
    check(&mut file, path, expected)
}

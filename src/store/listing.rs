//! Reading the archive for `verify`: every file once, streaming, in constant memory. A
//! plain segment costs a stat and its first page; a `.zst` is decompressed to the end
//! (its checksum is the only proof it is whole); a history file is read as text.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use walguard_core::header::LONG_HEADER_LEN;
use walguard_core::verify::FileFacts;
use walguard_core::wal::WalFile;

use super::StoreError;
use super::area::TMP_DIR;
use super::copy::{ZSTD_SUFFIX, read_full, reader};

/// What the scan saw besides WAL files.
#[derive(Debug, Default)]
pub struct Others {
    /// Names that are not WAL files (another tool's, a person's).
    pub foreign: Vec<String>,
    /// Files in walguard's temp area (a run in progress, or a crashed one's).
    pub temporary: usize,
}

/// The facts about one archived file.
fn facts(path: &Path, stored: &str, file: WalFile) -> FileFacts {
    let compressed = stored.ends_with(ZSTD_SUFFIX);
    let mut facts = FileFacts {
        stored: stored.to_string(),
        file,
        compressed,
        bytes: None,
        damage: None,
        head: Vec::new(),
        history: None,
    };
    let opened = File::open(path).and_then(|f| {
        let len = f.metadata()?.len();
        Ok((reader(f, stored)?, len))
    });
    let (mut content, len) = match opened {
        Ok(x) => x,
        Err(e) => {
            facts.damage = Some(e.to_string());
            return facts;
        }
    };
    let mut head = vec![0u8; LONG_HEADER_LEN];
    let read = read_full(&mut content, &mut head).and_then(|n| {
        head.truncate(n);
        match &facts.file {
            WalFile::History(_) => {
                let mut text = String::from_utf8_lossy(&head).into_owned();
                content.read_to_string(&mut text)?;
                facts.history = Some(text);
                Ok(None)
            }
            // Only a compressed file must be read to the end to know its length and
            // that its checksum holds.
            _ if compressed => Ok(Some(
                n as u64 + std::io::copy(&mut content, &mut std::io::sink())?,
            )),
            _ => Ok(Some(len)),
        }
    });
    match read {
        Ok(bytes) => facts.bytes = bytes.or(Some(len)),
        Err(e) => facts.damage = Some(e.to_string()),
    }
    facts.head = head;
    facts
}

/// Calls `each` with the facts of every WAL file in `dir`, in directory order.
pub fn scan(dir: &Path, mut each: impl FnMut(FileFacts)) -> Result<Others, StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|source| StoreError::Io {
        what: "cannot list the archive directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut others = Others::default();
    for entry in entries {
        let entry = entry.map_err(|source| StoreError::Io {
            what: "cannot list the archive directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == TMP_DIR {
            others.temporary = std::fs::read_dir(entry.path()).map_or(0, |d| d.count());
            continue;
        }
        match name
            .strip_suffix(ZSTD_SUFFIX)
            .unwrap_or(&name)
            .parse::<WalFile>()
        {
            Ok(file) => each(facts(&entry.path(), &name, file)),
            Err(_) => others.foreign.push(name),
        }
    }
    Ok(others)
}

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

/// The first page of an archived file (decompressed): enough for its long header.
pub fn head(path: &Path, stored: &str) -> std::io::Result<Vec<u8>> {
    let mut content = reader(File::open(path)?, stored)?;
    let mut head = vec![0u8; LONG_HEADER_LEN];
    let n = read_full(&mut content, &mut head)?;
    head.truncate(n);
    Ok(head)
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

/// Every WAL file in the archive directory `dir` (stored name and what it is), and what
/// else is there: the one listing `verify` and `cleanup` work from. Never the temp area.
pub fn names(dir: &Path) -> Result<(Vec<(String, WalFile)>, Others), StoreError> {
    let listing_err = |source| StoreError::Io {
        what: "cannot list the archive directory",
        path: dir.to_path_buf(),
        source,
    };
    let mut others = Others::default();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(listing_err)? {
        let entry = entry.map_err(listing_err)?;
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
            Ok(file) => files.push((name, file)),
            Err(_) => others.foreign.push(name),
        }
    }
    Ok((files, others))
}

/// Calls `each` with the facts of every WAL file in `dir`. Reading (decompressing, for
/// `.zst` files) runs on every core, a file at a time each; `each` runs on the calling
/// thread, in no particular order. Only names are held, never contents.
pub fn scan(dir: &Path, mut each: impl FnMut(FileFacts)) -> Result<Others, StoreError> {
    let (work, others) = names(dir)?;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<FileFacts>(workers * 2);
        for _ in 0..workers {
            let (tx, work, next) = (tx.clone(), &work, &next);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((name, file)) = work.get(i) else {
                        break;
                    };
                    if tx.send(facts(&dir.join(name), name, file.clone())).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for f in rx {
            each(f);
        }
    });
    Ok(others)
}

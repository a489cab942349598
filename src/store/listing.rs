//! Reading the archive for `verify`: every file once, streaming, in constant memory. A
//! segment is read whole (a `.zst` decompressed: its checksum is the only proof it is
//! whole), every page header checked on the way; a history file is read as text.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use walguard_core::header::{
    LONG_HEADER_LEN, LongHeader, PageExpected, SHORT_HEADER_LEN, check_page,
};
use walguard_core::verify::FileFacts;
use walguard_core::wal::Lsn;
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
        bad_page: None,
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
            WalFile::Segment(id) => {
                let (bytes, bad_page) = pages(&mut content, &head, id.timeline)?;
                facts.bad_page = bad_page;
                Ok(Some(bytes))
            }
            // Only a compressed file must be read to the end to know its length and
            // that its checksum holds; a `.partial` ends in whatever the file held.
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

/// Reads the rest of a segment whose first bytes are `head`, checking the short header
/// of every later page against the first page's magic and position; returns its whole
/// length and the first page that is wrong. Page size and position come from the long
/// header (a first page too damaged to tell is the header check's finding).
fn pages(
    content: &mut dyn Read,
    head: &[u8],
    timeline: u32,
) -> std::io::Result<(u64, Option<String>)> {
    let first = LongHeader::parse(head);
    let page = first
        .map(|h| h.block_size as usize)
        .filter(|b| b.is_power_of_two() && (1024..=65536).contains(b));
    let mut total = head.len() as u64;
    let (Some(first), Some(page)) = (first, page) else {
        return Ok((total + std::io::copy(content, &mut std::io::sink())?, None));
    };
    let mut bad = None;
    let mut empty_from: Option<u64> = None;
    let mut buf = vec![0u8; 1 << 20];
    // Where the next page header starts, counted from the start of the file.
    let mut next_page = page as u64;
    loop {
        // Reads end on whole MiBs of the file, which every page size divides: no page
        // header is ever split between two reads.
        let want = buf.len() - (total % buf.len() as u64) as usize;
        let n = read_full(content, &mut buf[..want])?;
        if n == 0 {
            return Ok((total, bad));
        }
        let chunk_start = total;
        total += n as u64;
        while bad.is_none() && next_page + SHORT_HEADER_LEN as u64 <= total {
            let at = (next_page - chunk_start) as usize;
            let expected = PageExpected {
                magic: first.magic,
                pageaddr: Lsn(first.pageaddr.0 + next_page),
                max_timeline: timeline,
            };
            if let Some(header) = buf.get(at..at + SHORT_HEADER_LEN) {
                // After a segment switch (pg_switch_wal, archive_timeout) PostgreSQL 11+
                // zeroes the rest of the segment, page headers included: from the first
                // empty header on, every header must be empty.
                let empty = header.iter().all(|&b| b == 0);
                bad = match (empty, empty_from) {
                    (true, None) => {
                        empty_from = Some(next_page);
                        None
                    }
                    (true, Some(_)) => None,
                    (false, Some(from)) => Some(format!(
                        "page at byte {next_page} has a header after the empty page at byte {from}: the segment is damaged"
                    )),
                    (false, None) => check_page(header, &expected)
                        .err()
                        .map(|m| format!("page at byte {next_page}: {m}")),
                };
            }
            next_page += page as u64;
        }
        // After a bad page, read on: the length and a compressed file's checksum count.
    }
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

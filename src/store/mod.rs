//! The archive store: the durable, never-overwriting copy into the archive directory
//! ([`copy`]), its directory and temp area ([`area`]), and the commit phase that a
//! timeout or signal cannot cut in half ([`commit`]).

pub mod area;
pub mod atomic;
pub mod cleanup;
pub mod commit;
pub mod copy;
pub mod header;
pub mod listing;
pub mod prefetch;
pub mod restore;

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// What to do about an I/O error whose cause says it all.
fn advice(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ReadOnlyFilesystem => {
            " (the file system is mounted read-only: remount it read-write, or point archive_dir \
             at one that is writable; PostgreSQL keeps the file and retries)"
        }
        io::ErrorKind::StorageFull => {
            " (the file system is full: free space there, or move the archive; PostgreSQL keeps \
             the file and retries)"
        }
        _ => "",
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "{dest} already exists with different content: refusing to overwrite it; \
         find out which server wrote it (two primaries archiving to one directory?) before moving it away"
    )]
    Conflict { dest: PathBuf },
    #[error(
        "{dest} is in the archive but cannot be read back ({cause}): it may be damaged; refusing to overwrite it"
    )]
    Damaged { dest: PathBuf, cause: String },
    #[error("{path} is in the archive but cannot be read ({cause}): it is damaged or unreadable")]
    Unreadable { path: PathBuf, cause: String },
    #[error("{dest} is not a regular file: refusing to write through it")]
    NotRegular { dest: PathBuf },
    #[error("{path} {problem}")]
    TempArea { path: PathBuf, problem: String },
    #[error(
        "{src} changed while it was copied: copied {copied} bytes of a {expected}-byte segment; nothing was archived"
    )]
    Short {
        src: PathBuf,
        copied: u64,
        expected: u64,
    },
    #[error(
        "{dest} was linked into place, but the archive directory could not be fsynced ({cause}); PostgreSQL's retry will find it and make it durable"
    )]
    Undurable { dest: PathBuf, cause: String },
    #[error("walguard is ending (timeout or signal): the copy was not committed")]
    Aborted,
    #[error("{path} is not the WAL segment its name says: {mismatch}")]
    Header { path: PathBuf, mismatch: String },
    #[error("{what} {path}: {source}{}", advice(source))]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

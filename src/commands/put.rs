//! Putting one WAL file durably into the archive, by either road: walguard's own copy
//! into `archive_dir`, or the hand-off to `archive_via`. The header check comes first on
//! both. A release and an archive-ahead copy are the same act; only the acknowledgement
//! (the exit status) differs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use walguard_core::header::Expected;
use walguard_core::wal::{SegmentSize, WalFile};

use super::invocation::Invocation;
use crate::exit::Hint;
use crate::hook;
use crate::settings::{Compress, Settings};
use crate::store::copy::{self as archive_copy, Compression, Staged, Stored};

/// Where an archived file goes.
#[derive(Clone, Copy)]
pub enum Road<'a> {
    /// Handed to `archive_via`.
    Via(&'a str),
    /// Copied into `archive_dir` by walguard.
    Copy(&'a Path),
}

impl<'a> Road<'a> {
    pub fn of(settings: &'a Settings) -> Result<Road<'a>> {
        match (
            settings.archive_via.as_deref(),
            settings.archive_dir.as_deref(),
        ) {
            (Some(via), _) => Ok(Road::Via(via)),
            (None, Some(dir)) => Ok(Road::Copy(dir)),
            (None, None) => bail!(
                "no archive directory: set archive_dir in the config file, --archive-dir, or WALGUARD_ARCHIVE_DIR \
                 (or archive_via, to hand the file to another archiver)"
            ),
        }
    }
}

/// How `wal` is kept in the archive: segments compressed as asked; history and
/// backup-label files plain (small, and read by people).
pub fn compression(settings: &Settings, wal: &WalFile) -> Compression {
    match (wal, settings.compress) {
        (WalFile::Segment(_) | WalFile::Partial(_), Compress::Zstd) => Compression::Zstd {
            level: settings.compress_level,
        },
        _ => Compression::None,
    }
}

/// A copy staged while the server was asked, as the thread that made it ended.
pub type Early = std::thread::Result<Result<Staged, crate::store::StoreError>>;

/// One file to put into the archive.
pub struct File<'a> {
    pub path: &'a Path,
    pub name: &'a str,
    pub wal: &'a WalFile,
    /// Its length when the decision looked at it: a segment must still be exactly that.
    pub bytes: u64,
    /// The segment size to check its header against (`None`: its own length).
    pub segment_size: Option<SegmentSize>,
    /// The cluster's system identifier, when known.
    pub sysid: Option<u64>,
}

/// What putting it did.
pub struct Put {
    /// `archived` (now) or `exists` (identical bytes were already there).
    pub decision: &'static str,
    pub bytes: u64,
    /// Bytes stored, when they differ (compressed).
    pub stored: Option<u64>,
}

/// The header check, before a segment leaves pg_wal by either road.
fn check_header(settings: &Settings, file: &File) -> Result<()> {
    let (WalFile::Segment(segment), true) = (file.wal, settings.header_check) else {
        return Ok(());
    };
    let size = file
        .segment_size
        .map_or_else(|| SegmentSize::new(file.bytes), Ok)?;
    let expected = Expected {
        segment: *segment,
        size,
        sysid: file.sysid,
    };
    crate::store::header::check_file(file.path, &expected).hint(
        "nothing was archived: is it another cluster's file, a recycled or zeroed file, or a wrong %p?",
    )
}

/// Hands the file to `archive_via`, within `limit` (the command is killed with its
/// process group at the deadline). Its exit 0 is walguard's.
fn hand_off(via: &str, file: &File, limit: Duration) -> Result<()> {
    let command = walguard_core::template::expand(via, &file.path.to_string_lossy(), file.name)
        .hint("nothing was handed over; fix archive_via")?;
    let ran = hook::run(&command, &[], &hook::VIA_UNSET, limit, true);
    if ran.ok() {
        return Ok(());
    }
    bail!(
        "archive_via ({}) did not archive {}: {}; PostgreSQL will retry",
        walguard_core::template::program(via),
        file.name,
        ran.describe()
    )
}

/// Stages a copy of `file` in `dir`'s temp area (see [`archive_copy::stage`]).
pub fn stage(
    settings: &Settings,
    dir: &Path,
    file_path: &Path,
    name: &str,
    wal: &WalFile,
) -> Result<Staged, crate::store::StoreError> {
    archive_copy::stage(
        file_path,
        dir,
        name,
        settings.timeout,
        compression(settings, wal),
    )
}

/// Puts `file` durably into the archive by `road`: the header check, then the copy (the
/// one `staged` already, if the caller overlapped it with the decision) or the hand-off.
pub fn put(
    run: &Invocation,
    settings: &Settings,
    road: Road,
    file: &File,
    staged: Option<Early>,
) -> Result<Put> {
    check_header(settings, file)?;
    match road {
        Road::Via(via) => {
            hand_off(via, file, run.child_limit(settings.timeout))?;
            Ok(Put {
                decision: "archived",
                bytes: file.bytes,
                stored: None,
            })
        }
        Road::Copy(dir) => {
            let staged = match staged {
                Some(Ok(staged)) => staged,
                Some(Err(_)) => {
                    return Err(anyhow!(
                        "the copy into the archive panicked; nothing was archived"
                    ));
                }
                None => stage(settings, dir, file.path, file.name, file.wal),
            };
            // A segment must be exactly the size the decision validated (a file
            // truncated while it was copied is refused); other files are what was read
            // and fsynced.
            let expected = matches!(file.wal, WalFile::Segment(_)).then_some(file.bytes);
            let stored = staged
                .and_then(|s| s.commit(expected))
                .hint("PostgreSQL will retry")?;
            Ok(match stored {
                Stored::Copied { bytes, stored } => Put {
                    decision: "archived",
                    bytes,
                    stored: (stored != bytes).then_some(stored),
                },
                Stored::Exists { bytes } => Put {
                    decision: "exists",
                    bytes,
                    stored: None,
                },
            })
        }
    }
}

/// Whether the archive holds `file` already, for a standby's acknowledgement (its
/// primary archives; the standby only looks): with walguard's own copy, a file of that
/// name (plain or `.zst`) whose header says it is that segment of this cluster; with
/// `archive_via`, `archive_check_via`'s exit 0. `Err` says why it cannot be told.
pub fn in_archive(
    settings: &Settings,
    road: Road,
    file: &File,
    limit: Duration,
) -> Result<bool, String> {
    match road {
        Road::Copy(dir) => {
            // After a failover, the old timeline's last segment is archived by the
            // promoted node as NAME.partial: what a standby kept of it past the switch
            // is a dead branch, covered by it.
            let zst = archive_copy::ZSTD_SUFFIX;
            let name = file.name;
            let found = [
                name.to_string(),
                format!("{name}{zst}"),
                format!("{name}.partial"),
                format!("{name}.partial{zst}"),
            ]
            .into_iter()
            .find(|form| std::fs::symlink_metadata(dir.join(form)).is_ok());
            let Some(stored) = found else {
                return Ok(false);
            };
            let WalFile::Segment(segment) = file.wal else {
                return Ok(true);
            };
            if !settings.header_check {
                return Ok(true);
            }
            let size = file
                .segment_size
                .map_or_else(|| SegmentSize::new(file.bytes), Ok)
                .map_err(|e| e.to_string())?;
            let head = crate::store::listing::head(&dir.join(&stored), &stored)
                .map_err(|e| format!("cannot read the archive's {stored}: {e}"))?;
            let expected = Expected {
                segment: *segment,
                size,
                sysid: file.sysid,
            };
            walguard_core::header::check(&head, &expected)
                .map(|_| true)
                .map_err(|m| format!("the archive's {stored} is not this segment: {m}"))
        }
        Road::Via(_) => {
            let Some(check) = settings.archive_check_via.as_deref() else {
                return Err(
                    "archive_check_via is not set: with archive_via, a standby cannot look into the archive".into(),
                );
            };
            let command =
                walguard_core::template::expand(check, &file.path.to_string_lossy(), file.name)
                    .map_err(|e| e.to_string())?;
            let ran = hook::run(&command, &[], &hook::VIA_UNSET, limit, true);
            match ran.ended {
                hook::Ended::Exited(0) => Ok(true),
                hook::Ended::Exited(_) => Ok(false),
                _ => Err(format!("archive_check_via {}", ran.describe())),
            }
        }
    }
}

/// Where `pg_wal`'s archive status files are, for a WAL file at `wal_path`.
pub fn archive_status(wal_path: &Path) -> PathBuf {
    wal_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("archive_status")
}

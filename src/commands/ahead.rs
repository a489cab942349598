//! Archive ahead, acknowledge later (`archive_ahead`). What protects a replica is the
//! acknowledgement (exit 0 lets PostgreSQL mark a segment `.done` and recycle it), not
//! the copy. So when the verdict is "hold", the segment still goes durably into the
//! archive, and so does every other finished file waiting in `pg_wal/archive_status`,
//! oldest first, within a time budget; then `archive` exits 1. PostgreSQL keeps them all,
//! a replica that was away still catches up by streaming, and the archive is as current
//! as it would be without walguard. The later release finds the identical file (`exists`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use walguard_core::wal::{SegmentSize, WalFile};

use super::invocation::Invocation;
use super::put::{self, Early, File, Road};
use crate::exit::describe_error;
use crate::settings::Settings;
use crate::store::copy::ZSTD_SUFFIX;

/// What archiving ahead did.
#[derive(Debug, Default)]
pub struct Ahead {
    /// Files put into the archive now.
    pub copied: usize,
    /// The newest segment now in the archive among those looked at.
    pub newest: Option<String>,
    /// The first failure (the hold stays a hold; the rest waits for the next attempt).
    pub failed: Option<String>,
    /// Files waiting that were not looked at, for want of time.
    pub left: usize,
}

/// How long one `archive` may spend archiving ahead: half of `timeout` for the command
/// (the rest is the decision's, the log line's, and the watchdog's margin); inside the
/// server's archiver (the module) at most a second a call, so that the archiver is
/// never kept from its other work longer than a copy or two takes.
pub fn budget(settings: &Settings, inside_server: bool) -> Duration {
    let half = settings.timeout / 2;
    if inside_server {
        half.min(Duration::from_secs(1))
    } else {
        half
    }
}

/// WAL order of two names: by position, then timeline (a name's first 8 digits are its
/// timeline, the next 16 its position).
fn wal_order(name: &str) -> (&str, &str) {
    (name.get(8..).unwrap_or(name), name.get(..8).unwrap_or(""))
}

/// The files waiting to be archived (`NAME.ready`), oldest first.
fn waiting(status: &Path) -> Vec<(String, WalFile)> {
    let mut ready: Vec<(String, WalFile)> = std::fs::read_dir(status)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".ready")?.to_string();
            let wal = name.parse::<WalFile>().ok()?;
            Some((name, wal))
        })
        .collect();
    // History files first, as PostgreSQL's archiver takes them, then WAL order.
    ready.sort_by(|a, b| {
        let history = |w: &WalFile| !matches!(w, WalFile::History(_));
        (history(&a.1), wal_order(&a.0)).cmp(&(history(&b.1), wal_order(&b.0)))
    });
    ready
}

/// Where a hand-off's record of what it handed over ahead lives: `pg_wal/.walguard/ahead`,
/// one empty file per WAL file (as WAL-G keeps its prefetch state in `pg_wal/.wal-g`).
/// A record goes once its file is no longer waiting.
fn records(wal_path: &Path) -> PathBuf {
    wal_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(".walguard/ahead")
}

/// Whether `name` is in the archive already: one lookup, no comparison (the release
/// compares, and then refuses different bytes).
fn present(road: Road, records: &Path, name: &str) -> bool {
    match road {
        Road::Copy(dir) => [name.to_string(), format!("{name}{ZSTD_SUFFIX}")]
            .iter()
            .any(|form| std::fs::symlink_metadata(dir.join(form)).is_ok()),
        Road::Via(_) => records.join(name).exists(),
    }
}

/// Records that `name` was handed over (the hand-off road only).
fn record(road: Road, records: &Path, name: &str) {
    if let Road::Via(_) = road {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(records);
        let _ = std::fs::File::create(records.join(name));
    }
}

/// Forgets what is no longer waiting.
fn forget_done(records: &Path, status: &Path) {
    for entry in std::fs::read_dir(records).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let ready = status.join(format!("{}.ready", name.to_string_lossy()));
        if !ready.exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// What an `archive` of the segment at `wal_path` would put into the archive ahead of a
/// hold: it, and every other waiting file the archive lacks, oldest first. `None` when
/// `pg_wal/archive_status` cannot be read here (`check` run elsewhere).
pub fn pending(road: Road, wal_path: &Path, name: &str) -> Option<Vec<String>> {
    let status = put::archive_status(wal_path);
    std::fs::read_dir(&status).ok()?;
    let records = records(wal_path);
    let mut names = vec![name.to_string()];
    names.extend(
        waiting(&status)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n != name),
    );
    names.retain(|n| !present(road, &records, n));
    Some(names)
}

/// Notes `name` as in the archive: the newest segment so far, in WAL order.
fn newest(name: &str, wal: &WalFile, ahead: &mut Ahead) {
    if matches!(wal, WalFile::Segment(_))
        && ahead
            .newest
            .as_deref()
            .is_none_or(|n| wal_order(n) < wal_order(name))
    {
        ahead.newest = Some(name.to_string());
    }
}

/// Puts `asked` (the file the verdict held; its copy already `staged` when it was
/// overlapped with the decision) and then every other waiting file into the archive,
/// oldest first, until `budget` is spent or a copy fails.
pub fn run(
    run: &Invocation,
    settings: &Settings,
    road: Road,
    asked: &File,
    staged: Option<Early>,
    budget: Duration,
) -> Ahead {
    let started = Instant::now();
    let mut ahead = Ahead::default();
    let records = records(asked.path);
    let status = put::archive_status(asked.path);
    let one = |file: &File, staged: Option<Early>, ahead: &mut Ahead| -> bool {
        if staged.is_none() && present(road, &records, file.name) {
            newest(file.name, file.wal, ahead);
            return true;
        }
        match put::put(run, settings, road, file, staged) {
            Ok(p) => {
                ahead.copied += usize::from(p.decision == "archived");
                record(road, &records, file.name);
                newest(file.name, file.wal, ahead);
                true
            }
            Err(e) => {
                ahead.failed = Some(format!("{}: {}", file.name, describe_error(&e)));
                false
            }
        }
    };
    if !one(asked, staged, &mut ahead) {
        return ahead;
    }
    if let Road::Via(_) = road {
        forget_done(&records, &status);
    }
    let others: Vec<(String, WalFile)> = waiting(&status)
        .into_iter()
        .filter(|(name, _)| name != asked.name)
        .collect();
    let dir = asked
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for (i, (name, wal)) in others.iter().enumerate() {
        if started.elapsed() >= budget {
            ahead.left = others.len() - i;
            break;
        }
        let path = dir.join(name);
        // Gone since it was listed: PostgreSQL archived it meanwhile.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let file = File {
            path: &path,
            name,
            wal,
            bytes: meta.len(),
            segment_size: asked
                .segment_size
                .or_else(|| SegmentSize::new(asked.bytes).ok()),
            sysid: asked.sysid,
        };
        if !one(&file, None, &mut ahead) {
            break;
        }
    }
    ahead
}

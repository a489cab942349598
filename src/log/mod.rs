//! The decision log (`watchdog.log`): one logfmt line per decision, and its summary.

pub mod summary;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use walguard_core::event::Previous;
pub use walguard_core::logfmt::Level;
use walguard_core::logfmt::{format_line, parse_logfmt};

use crate::out::say;

/// Where decision lines go.
#[derive(Clone, Debug)]
pub struct DecisionLog {
    file: Option<PathBuf>,
}

impl DecisionLog {
    /// `None` writes to stderr, which PostgreSQL copies into its own log.
    pub fn new(file: Option<PathBuf>) -> DecisionLog {
        DecisionLog { file }
    }

    /// Appends one line with a single `write(2)` on an `O_APPEND` file, so lines from
    /// concurrent runs never interleave. A log that cannot be written is reported on
    /// stderr and does not change the decision: the archive matters more than its diary.
    pub fn write(&self, level: Level, fields: &[(&str, String)]) {
        let line = format_line(SystemTime::now(), level, std::process::id(), fields);
        let result = match &self.file {
            None => std::io::stderr().write_all(line.as_bytes()),
            Some(path) => OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes())),
        };
        if let Err(e) = result {
            let path = self
                .file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            say(&format!(
                "walguard: cannot write the decision log {path}: {e}; the line was: {}",
                line.trim_end()
            ));
        }
    }
}

/// How much of the log's end is read to find walguard's own last outcomes: many minutes
/// of retries, at a few hundred bytes a line.
const TAIL: u64 = 64 << 10;

/// The last `TAIL` bytes of `path`, whole lines only.
fn tail(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(match (start, text.find('\n')) {
        (0, _) | (_, None) => text,
        (_, Some(first_end)) => text[first_end + 1..].to_string(),
    })
}

/// One decision line, as the tail readers need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Line {
    pub ts: String,
    pub wal: String,
    pub decision: String,
    pub reason: String,
    /// What a hold archived ahead: the newest segment in the archive, and what failed.
    pub newest_archived: String,
    pub ahead_error: String,
    /// Lines whose slot was lost, comma-separated.
    pub lost: String,
}

/// The `cmd=archive` lines of the log's end, newest first.
fn recent(path: &Path) -> Option<Vec<Line>> {
    let text = tail(path).ok()?;
    Some(
        text.lines()
            .rev()
            .filter_map(parse_logfmt)
            .filter(|pairs| pairs.iter().any(|(k, v)| *k == "cmd" && v == "archive"))
            .map(|pairs| {
                let get = |key: &str| {
                    pairs
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default()
                };
                Line {
                    ts: get("ts"),
                    wal: get("wal"),
                    decision: get("decision"),
                    reason: get("reason"),
                    newest_archived: get("newest_archived"),
                    ahead_error: get("ahead_error"),
                    lost: get("lost"),
                }
            })
            .collect(),
    )
}

/// What walguard itself last decided about `wal`, from the end of its log: whether the
/// attempt before this one held it. `None` when the log cannot be read.
pub fn previous_outcome(path: &Path, wal: &str) -> Option<Previous> {
    let lines = recent(path)?;
    Some(match lines.iter().find(|l| l.wal == wal) {
        Some(l) if l.decision == "held" => Previous::Held,
        _ => Previous::Other,
    })
}

/// When each decision was last made, in Unix seconds, from the end of the log.
pub fn last_times(path: &Path) -> std::collections::BTreeMap<String, f64> {
    let mut times = std::collections::BTreeMap::new();
    for line in recent(path).unwrap_or_default() {
        if times.contains_key(&line.decision) {
            continue;
        }
        if let Some(t) = humantime::parse_rfc3339_weak(&line.ts)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        {
            times.insert(line.decision, t.as_secs_f64());
        }
    }
    times
}

/// The newest `archive` decision that archived ahead (a hold), if the log's end has one.
pub fn last_ahead(path: &Path) -> Option<Line> {
    recent(path)?.into_iter().find(|l| {
        l.decision == "held" && !(l.newest_archived.is_empty() && l.ahead_error.is_empty())
    })
}

/// The newest `archive` decision in the log, if any.
pub fn last_decision(path: &Path) -> Option<Line> {
    recent(path)?.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_readers_find_the_newest_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = DecisionLog::new(Some(dir.path().join("watchdog.log")));
        let path = dir.path().join("watchdog.log");
        assert_eq!(previous_outcome(&path, "A"), None, "no log yet");
        let padding = "x".repeat(300);
        for i in 0..400 {
            log.write(
                Level::Info,
                &[
                    ("cmd", "archive".into()),
                    ("wal", format!("W{i}")),
                    ("decision", "archived".into()),
                    ("pad", padding.clone()),
                ],
            );
        }
        log.write(
            Level::Info,
            &[
                ("cmd", "archive".into()),
                ("wal", "A".into()),
                ("decision", "held".into()),
            ],
        );
        log.write(
            Level::Info,
            &[
                ("cmd", "archive".into()),
                ("wal", "B".into()),
                ("decision", "error".into()),
                ("reason", "disk full".into()),
            ],
        );
        log.write(
            Level::Info,
            &[
                ("cmd", "check".into()),
                ("wal", "C".into()),
                ("decision", "held".into()),
            ],
        );
        assert!(
            std::fs::metadata(&path).unwrap().len() > TAIL,
            "the tail is a real tail"
        );
        assert_eq!(previous_outcome(&path, "A"), Some(Previous::Held));
        assert_eq!(previous_outcome(&path, "B"), Some(Previous::Other));
        assert_eq!(
            previous_outcome(&path, "C"),
            Some(Previous::Other),
            "check lines do not count"
        );
        let last = last_decision(&path).unwrap();
        assert_eq!(
            (
                last.wal.as_str(),
                last.decision.as_str(),
                last.reason.as_str()
            ),
            ("B", "error", "disk full")
        );
    }
}

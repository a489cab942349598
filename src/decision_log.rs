//! The decision log (`watchdog.log`): one logfmt line per decision.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Appends `value` to `out`, quoted when logfmt needs it.
fn push_value(out: &mut String, value: &str) {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One line: `ts=... level=... pid=...` then `fields` in order, newline-terminated.
pub fn format_line(ts: SystemTime, level: Level, fields: &[(&str, String)]) -> String {
    let mut out = format!(
        "ts={} level={} pid={}",
        humantime::format_rfc3339_millis(ts),
        level.as_str(),
        std::process::id()
    );
    for (key, value) in fields {
        out.push(' ');
        out.push_str(key);
        out.push('=');
        push_value(&mut out, value);
    }
    out.push('\n');
    out
}

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
        let line = format_line(SystemTime::now(), level, fields);
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
            eprint!("walguard: cannot write the decision log {path}: {e}; the line was: {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn logfmt_line() {
        let ts = UNIX_EPOCH + Duration::from_millis(1_795_307_985_825);
        let line = format_line(
            ts,
            Level::Info,
            &[
                ("cmd", "archive".into()),
                ("reason", "replica app:r2 not connected".into()),
                ("q", "say \"hi\"\\".into()),
                ("empty", String::new()),
                ("nl", "a\nb\tc".into()),
            ],
        );
        let want = format!(
            "ts=2026-11-22T00:39:45.825Z level=info pid={} cmd=archive reason=\"replica app:r2 not connected\" q=\"say \\\"hi\\\"\\\\\" empty=\"\" nl=\"a\\nb\\u{{9}}c\"\n",
            std::process::id()
        );
        assert_eq!(line, want);
    }
}

//! The decision log (`watchdog.log`): one logfmt line per decision, and its summary.

pub mod summary;

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

pub use walguard_core::logfmt::Level;
use walguard_core::logfmt::format_line;

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
            eprint!("walguard: cannot write the decision log {path}: {e}; the line was: {line}");
        }
    }
}

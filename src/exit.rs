//! Exit codes, in one place, and how errors become the messages behind exit 2.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, anyhow};

/// How a command ended; [`Exit::code`] is the process exit status, part of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Archived (or would be; or already there with identical bytes); restored; clean.
    Ok,
    /// Held: a listed replica still needs the segment.
    Held,
    /// `restore`: the file is not in the archive.
    NotFound,
    /// `verify`: problems found.
    Problems,
    /// `cleanup`: refused, because someone may still need the archive.
    Refused,
    /// Error: nothing was archived (restored, deleted). The message says what to fix.
    Error,
    /// `restore` in an archive recovery that is not a standby: PostgreSQL reads every
    /// status from 1 to 125 as "not in the archive" and would end recovery (and promote)
    /// there; above 125 its startup process stops instead. The one status above 2.
    StopRecovery,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Held | Exit::NotFound | Exit::Problems | Exit::Refused => 1,
            Exit::Error => 2,
            Exit::StopRecovery => STOP_RECOVERY,
        }
    }
}

/// The status `restore` ends with when recovery must stop rather than end early.
pub const STOP_RECOVERY: u8 = 200;

/// Set once by `restore` during an archive recovery that is not a standby: every
/// failure (an error, the watchdog, a signal) then ends with [`Exit::StopRecovery`].
static STOP_ON_FAILURE: AtomicBool = AtomicBool::new(false);

/// Makes every later failure of this process stop the recovery that runs it.
pub fn stop_recovery_on_failure() {
    STOP_ON_FAILURE.store(true, Ordering::SeqCst);
}

/// How a failure ends this process: [`Exit::Error`], or [`Exit::StopRecovery`] for a
/// `restore` that must not look like "not in the archive". Only an atomic load: safe in
/// a signal handler.
pub fn failure() -> Exit {
    if STOP_ON_FAILURE.load(Ordering::SeqCst) {
        Exit::StopRecovery
    } else {
        Exit::Error
    }
}

/// The whole error chain on one line, outermost first, skipping a cause whose text its
/// parent already printed (the postgres crate repeats its cause in its own message).
pub fn describe_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Adds "what to do" after an error's "what failed: why".
pub trait Hint<T> {
    fn hint(self, what_to_do: &str) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> Hint<T> for std::result::Result<T, E> {
    fn hint(self, what_to_do: &str) -> Result<T> {
        self.map_err(|e| anyhow!("{}; {what_to_do}", describe_error(&e.into())))
    }
}

//! One invocation's context: what its decision-log lines share, and the watchdog that
//! makes `timeout` hard.

use std::time::{Duration, Instant};

use crate::exit::Exit;
use crate::log::{DecisionLog, Level};
use crate::out::say;
use crate::store::commit::{self, Phase};

/// How long past `timeout` a commit under way (link, directory fsync) may take before
/// the watchdog ends the process anyway.
pub const COMMIT_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Invocation {
    /// `None` for commands that write no decision line (`check`, `status`, `log`).
    pub log: Option<DecisionLog>,
    pub cmd: &'static str,
    pub wal: String,
    /// The cluster's system identifier (from `global/pg_control`): in every line, so that
    /// a log shared by several clusters tells them apart.
    pub sysid: Option<u64>,
    /// The first word of `archive_via`, when walguard hands files over (`via=`).
    pub via: Option<String>,
    pub started: Instant,
}

impl Invocation {
    pub fn write(&self, level: Level, decision: &str, mut fields: Vec<(&'static str, String)>) {
        let mut all = vec![("cmd", self.cmd.to_string())];
        // A command about no one file (cleanup) has no wal= at all.
        if !self.wal.is_empty() {
            all.push(("wal", self.wal.clone()));
        }
        all.push(("decision", decision.to_string()));
        all.append(&mut fields);
        if let Some(via) = &self.via {
            all.push(("via", via.clone()));
        }
        if let Some(id) = self.sysid {
            all.push(("sysid", id.to_string()));
        }
        all.push(("ms", self.started.elapsed().as_millis().to_string()));
        if let Some(log) = &self.log {
            log.write(level, &all);
        }
    }

    /// How long a child command (`on_event`, `archive_via`) may run: what is left of
    /// `timeout`, less a second for the watchdog's log line, so that the child is killed
    /// and reported before the watchdog has to end walguard.
    pub fn child_limit(&self, timeout: Duration) -> Duration {
        timeout
            .saturating_sub(self.started.elapsed())
            .saturating_sub(Duration::from_secs(1))
    }

    /// After `timeout`, logs and exits whatever the main thread is doing (a hung
    /// connection, a stalled network file system): PostgreSQL's archiver waits for us.
    /// Nothing on this path can keep it from exiting: writes that fail are ignored, and
    /// the log line gets one second (its file may be on the stalled file system too). A
    /// commit under way gets [`COMMIT_GRACE`] to finish, so the message is true.
    pub fn arm_watchdog(&self, timeout: Duration) {
        let run = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            crate::hook::kill_running();
            let after = humantime::format_duration(timeout);
            let (exit, level, decision, reason) = match commit::settle(COMMIT_GRACE) {
                Phase::NotStarted => (
                    crate::exit::failure(),
                    Level::Error,
                    "error",
                    format!(
                        "timed out after {after}; {}",
                        match run.cmd {
                            "restore" => "nothing was restored",
                            "cleanup" =>
                                "the files deleted so far stay deleted, the rest stay: run cleanup again",
                            _ => "nothing was archived",
                        }
                    ),
                ),
                Phase::Committing => (
                    crate::exit::failure(),
                    Level::Error,
                    "error",
                    format!(
                        "timed out after {after} while linking the copy into the archive and fsyncing it: \
                         it may be in place; PostgreSQL will retry, and identical bytes count as archived"
                    ),
                ),
                Phase::Committed => (
                    Exit::Ok,
                    Level::Warn,
                    "archived",
                    format!("timed out after {after}, after the file was durably archived"),
                ),
            };
            let (done, wait) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                run.write(level, decision, vec![("reason", reason.clone())]);
                say(&format!("walguard: {decision}: {reason}"));
                let _ = done.send(());
            });
            let _ = wait.recv_timeout(Duration::from_secs(1));
            // SAFETY: _exit ends the process at once; no destructor or stdio flush (which
            // could block on the same stalled pipe or file system) runs.
            unsafe { libc::_exit(i32::from(exit.code())) };
        });
    }
}

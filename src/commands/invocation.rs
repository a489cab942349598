//! One invocation's context: what its decision-log lines share, and the watchdog that
//! makes `timeout` hard.

use std::time::{Duration, Instant};

use crate::exit::Exit;
use crate::log::{DecisionLog, Level};

#[derive(Clone)]
pub struct Invocation {
    /// `None` for commands that write no decision line (`check`, `status`, `log`).
    pub log: Option<DecisionLog>,
    pub cmd: &'static str,
    pub wal: String,
    pub started: Instant,
}

impl Invocation {
    pub fn write(&self, level: Level, decision: &str, mut fields: Vec<(&'static str, String)>) {
        let mut all = vec![
            ("cmd", self.cmd.to_string()),
            ("wal", self.wal.clone()),
            ("decision", decision.to_string()),
        ];
        all.append(&mut fields);
        all.push(("ms", self.started.elapsed().as_millis().to_string()));
        if let Some(log) = &self.log {
            log.write(level, &all);
        }
    }

    /// After `timeout`, logs and exits 2 whatever the main thread is doing (a hung
    /// connection, a stalled network file system): PostgreSQL's archiver waits for us.
    pub fn arm_watchdog(&self, timeout: Duration) {
        let run = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            let reason = format!(
                "timed out after {}; nothing was archived",
                humantime::format_duration(timeout)
            );
            run.write(Level::Error, "error", vec![("reason", reason.clone())]);
            eprintln!("walguard: error: {reason}");
            std::process::exit(Exit::Error as i32);
        });
    }
}

//! The commands walguard runs: the `on_event` hook and the `archive_via` hand-off. One
//! bounded runner serves both: `sh -c` in its own process group, killed with the whole
//! group at its deadline (and when walguard is ended by a signal), never able to make
//! walguard exit above 2. Details reach the hook only through `WALGUARD_*` environment
//! variables, and the hand-off's `%p`/`%f` only shell-quoted: a reason or a name can
//! never become shell syntax.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};
use walguard_core::event::Event;

/// The process group of the command running now (0: none), for the signal handler.
static RUNNING: AtomicI32 = AtomicI32::new(0);

/// Kills the command running now, if any. Only atomics and kill(2): safe in a signal
/// handler, so a hand-off never outlives the walguard that started it.
pub fn kill_running() {
    if let Some(pid) = Pid::from_raw(RUNNING.swap(0, Ordering::SeqCst)) {
        let _ = kill_process_group(pid, Signal::KILL);
    }
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signalled(i32),
    /// Still running at the deadline: killed with its process group.
    Killed(Duration),
    /// Killed with its process group because the host process must stop (the archive
    /// module's archiver was asked to shut down).
    Interrupted,
    NotStarted(String),
}

/// Asked while a command runs: true when the process walguard runs in must stop now.
static INTERRUPT: std::sync::OnceLock<fn() -> bool> = std::sync::OnceLock::new();

/// Makes every later wait for a command also end when `stop()` says so (the archive
/// module: the archiver's shutdown request). Only the first call counts.
pub fn set_interrupt(stop: fn() -> bool) {
    let _ = INTERRUPT.set(stop);
}

/// What a finished command left: how it ended and the last line it wrote to stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    pub ended: Ended,
    pub last_stderr: Option<String>,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.ended == Ended::Exited(0)
    }

    /// For the log: `ok`, `exit status 3`, `killed by signal 9`, `killed after 30s`,
    /// `not started: ...`, with the last stderr line when there is one.
    pub fn describe(&self) -> String {
        let how = match &self.ended {
            Ended::Exited(0) => "ok".to_string(),
            Ended::Exited(code) => format!("exit status {code}"),
            Ended::Signalled(sig) => format!("killed by signal {sig}"),
            Ended::Killed(after) => format!(
                "killed after {}",
                humantime::format_duration(Duration::from_millis(after.as_millis() as u64))
            ),
            Ended::Interrupted => "killed: the server is shutting down".to_string(),
            Ended::NotStarted(e) => format!("not started: {e}"),
        };
        match &self.last_stderr {
            Some(line) if !self.ok() => format!("{how}: {line}"),
            _ => how,
        }
    }
}

/// The last non-empty line of `bytes`.
fn last_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Runs `command` with `sh -c` in the working directory, `env` added and `unset` removed
/// from the environment, and waits at most `limit`. With `keep_stderr` its stderr is
/// read (and passed on to walguard's) so its last line can be logged.
pub fn run(
    command: &str,
    env: &[(&str, &str)],
    unset: &[&str],
    limit: Duration,
    keep_stderr: bool,
) -> Ran {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        // Its output would land in the decision's stdout: PostgreSQL's log.
        .stdout(Stdio::null())
        .stderr(if keep_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                ended: Ended::NotStarted(e.to_string()),
                last_stderr: None,
            };
        }
    };
    RUNNING.store(child.id() as i32, Ordering::SeqCst);
    // Read stderr on the side, keeping the end: a chatty command must not block on a
    // full pipe, nor fill walguard's memory.
    let reader = child.stderr.take().map(|mut pipe| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut kept: Vec<u8> = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                crate::out::pass_on(&buf[..n]);
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 64 << 10 {
                    kept.drain(..kept.len() - (16 << 10));
                }
            }
            let _ = tx.send(kept);
        });
        rx
    });
    let start = Instant::now();
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                break match (status.code(), status.signal()) {
                    (Some(code), _) => Ended::Exited(code),
                    (None, Some(sig)) => Ended::Signalled(sig),
                    (None, None) => Ended::Exited(-1),
                };
            }
            Ok(None) if start.elapsed() >= limit || INTERRUPT.get().is_some_and(|stop| stop()) => {
                if let Some(pid) = Pid::from_raw(child.id() as i32) {
                    let _ = kill_process_group(pid, Signal::KILL);
                }
                let _ = child.wait();
                break if start.elapsed() >= limit {
                    Ended::Killed(limit)
                } else {
                    Ended::Interrupted
                };
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Ended::NotStarted(e.to_string()),
        }
    };
    RUNNING.store(0, Ordering::SeqCst);
    // A grandchild may keep the pipe open: wait for the rest only briefly.
    let last_stderr = reader
        .and_then(|rx| rx.recv_timeout(Duration::from_millis(200)).ok())
        .and_then(|bytes| last_line(&bytes));
    Ran { ended, last_stderr }
}

/// What the hook is told.
pub struct Details<'a> {
    pub event: Event,
    pub wal: &'a str,
    pub replicas: &'a str,
    pub reason: &'a str,
}

/// Secrets the hook must not inherit: it is the operator's script, not a database client.
const HOOK_UNSET: [&str; 3] = ["PGPASSWORD", "WALGUARD_CONNINFO", "PGPASSFILE"];

/// Runs the `on_event` hook and waits at most `limit`; returns how it went, for the log.
pub fn run_hook(command: &str, details: &Details, limit: Duration) -> String {
    let env = [
        ("WALGUARD_EVENT", details.event.as_str()),
        ("WALGUARD_WAL", details.wal),
        ("WALGUARD_REPLICAS", details.replicas),
        ("WALGUARD_REASON", details.reason),
    ];
    let ran = run(command, &env, &HOOK_UNSET, limit, false);
    match ran.ended {
        Ended::Exited(_) | Ended::Signalled(_) if !ran.ok() => {
            format!("failed: {}", ran.describe())
        }
        _ => ran.describe(),
    }
}

/// Secrets of walguard's own that the hand-off must not see (its `PG*` variables are
/// the operator's, and a backup tool may need them).
pub const VIA_UNSET: [&str; 1] = ["WALGUARD_CONNINFO"];

#[cfg(test)]
mod tests {
    use super::*;

    fn details() -> Details<'static> {
        Details {
            event: Event::Held,
            wal: "000000010000000000000003",
            replicas: "app:r2",
            reason: "replica app:r2 not connected; $(touch /tmp/pwned) `id`",
        }
    }

    #[test]
    fn environment_not_interpolation() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cmd = format!(
            "printf '%s|%s|%s|%s' \"$WALGUARD_EVENT\" \"$WALGUARD_WAL\" \"$WALGUARD_REPLICAS\" \"$WALGUARD_REASON\" > {}",
            out.display()
        );
        assert_eq!(run_hook(&cmd, &details(), Duration::from_secs(5)), "ok");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "held|000000010000000000000003|app:r2|replica app:r2 not connected; $(touch /tmp/pwned) `id`"
        );
    }

    #[test]
    fn failing_and_hanging_hooks_are_reported() {
        assert_eq!(
            run_hook("exit 3", &details(), Duration::from_secs(5)),
            "failed: exit status 3"
        );
        let start = Instant::now();
        let got = run_hook(
            "sleep 30 & sleep 30",
            &details(),
            Duration::from_millis(200),
        );
        assert_eq!(got, "killed after 200ms");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_runner_keeps_the_last_stderr_line_and_the_status() {
        let ran = run(
            "echo first >&2; echo 'the reason' >&2; exit 7",
            &[],
            &[],
            Duration::from_secs(5),
            true,
        );
        assert_eq!(ran.ended, Ended::Exited(7));
        assert_eq!(ran.describe(), "exit status 7: the reason");
        let ran = run("kill -TERM $$", &[], &[], Duration::from_secs(5), true);
        assert_eq!(ran.ended, Ended::Signalled(15));
        let ran = run(
            "exec /nonexistent/tool",
            &[],
            &[],
            Duration::from_secs(5),
            true,
        );
        assert_eq!(ran.ended, Ended::Exited(127));
        assert!(
            ran.describe().contains("not found") || ran.describe().contains("No such file"),
            "{}",
            ran.describe()
        );
    }

    #[test]
    fn what_the_shell_makes_of_an_expanded_template_is_the_value() {
        use walguard_core::template::expand;
        for value in [
            "a b",
            "it's",
            "$(id)",
            "`id`",
            "a\nb",
            "\\",
            "'",
            "%p",
            "pg_wal/00000001",
        ] {
            for template in ["printf %s %f", "printf %s '%f'", "printf %s \"%f\""] {
                let Ok(command) = expand(template, "p", value) else {
                    // Refused: only where the value cannot be written as itself.
                    assert!(
                        value.contains(['\'', '"', '\\', '$', '`']),
                        "{template} {value:?}"
                    );
                    continue;
                };
                let out = std::process::Command::new("/bin/sh")
                    .arg("-c")
                    .arg(&command)
                    .output()
                    .unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout), value, "{command}");
            }
        }
    }
}

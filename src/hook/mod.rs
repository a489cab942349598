//! The `on_event` hook: a shell command run on `held`, `released` and `valve` events.
//! Details reach it only through `WALGUARD_*` environment variables, never spliced into
//! the command text, so a reason or a name can never become shell syntax.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use walguard_core::event::Event;

/// What the hook is told.
pub struct Details<'a> {
    pub event: Event,
    pub wal: &'a str,
    pub replicas: &'a str,
    pub reason: &'a str,
}

/// Runs `command` with `sh -c` and waits at most `limit`; a hook still running then is
/// killed with its whole process group. Returns how it went, for the log; never fails.
pub fn run_hook(command: &str, details: &Details, limit: Duration) -> String {
    let spawned = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("WALGUARD_EVENT", details.event.as_str())
        .env("WALGUARD_WAL", details.wal)
        .env("WALGUARD_REPLICAS", details.replicas)
        .env("WALGUARD_REASON", details.reason)
        .stdin(Stdio::null())
        // Hook output would land in the decision's stdout/stderr: PostgreSQL's log.
        .stdout(Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return format!("not started: {e}"),
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return "ok".to_string(),
            Ok(Some(status)) => return format!("failed: {status}"),
            Ok(None) if start.elapsed() >= limit => {
                // SAFETY: kill(2) on the hook's own process group, which we created.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return format!("killed after {}", humantime::format_duration(limit));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return format!("failed: {e}"),
        }
    }
}

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
            "failed: exit status: 3"
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
}

//! walguard as an archive module (`archive_library`, crates/walguard-pg) in a real
//! PostgreSQL 15 primary with real streaming replicas: the same scenario as the command's
//! (tests/cluster.rs), with the positions read from shared memory.
//!
//! The module is built here by crates/walguard-pg/build-module (in its own target
//! directory; `WALGUARD_PG_CONFIG` picks the pg_config), or taken from `WALGUARD_MODULE`.
//! Without PostgreSQL 15's server headers the tests say so and pass, unless
//! `WALGUARD_REQUIRE_MODULE=1` (CI) makes that a failure.

#[path = "support/cluster.rs"]
mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use cluster::{ARCHIVE_WAIT, Cluster, Options, find_bindir, is_contiguous, output_text, wait_for};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

/// Builds the module with crates/walguard-pg/build-module (its exit 2: no headers here).
fn build_module() -> Result<Option<PathBuf>> {
    if let Some(given) = std::env::var_os("WALGUARD_MODULE") {
        return Ok(Some(PathBuf::from(given)));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut build = Command::new(root.join("crates/walguard-pg/build-module"));
    if let Some(pg_config) = std::env::var_os("WALGUARD_PG_CONFIG") {
        build.arg(pg_config);
    }
    // Its own target directory: the outer cargo's is busy with this very test run.
    let out = build
        .env("CARGO_TARGET_DIR", root.join("target/module"))
        .output()
        .context("running crates/walguard-pg/build-module")?;
    match out.status.code() {
        Some(0) => Ok(Some(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim(),
        ))),
        Some(2) if std::env::var_os("WALGUARD_REQUIRE_MODULE").is_none() => {
            eprintln!("skipped: {}", String::from_utf8_lossy(&out.stderr).trim());
            Ok(None)
        }
        _ => bail!("building the archive module failed:\n{}", output_text(&out)),
    }
}

/// The built module, once for all tests here; `None` when it cannot be built here.
fn module() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_module().map_err(|e| format!("{e:#}")))
        .clone()
        .expect("the archive module")
}

/// A PostgreSQL 15 cluster whose primary archives through the module; `None` (skipped)
/// when the module cannot be built here.
fn start(replicas: usize) -> Result<Option<Cluster>> {
    let Some(module) = module() else {
        return Ok(None);
    };
    let Some(bindir) = find_bindir() else {
        bail!("PostgreSQL 15's server programs were not found (apt-get install postgresql-15)");
    };
    if cluster::major_version(&bindir)? < 15 {
        eprintln!("skipped: archive modules need PostgreSQL 15 or later");
        return Ok(None);
    }
    let opts = Options {
        replicas,
        bindir: Some(bindir),
        archive_library: Some(module),
        ..Options::default()
    };
    Ok(Some(Cluster::start(WALGUARD.as_ref(), opts)?))
}

/// The `pid=` field of a decision-log line.
fn pid_of(line: &str) -> &str {
    line.split(' ')
        .find_map(|f| f.strip_prefix("pid="))
        .unwrap_or("")
}

/// The archiver's process id, as pg_stat_activity shows it.
fn archiver_pid(c: &Cluster) -> Result<String> {
    c.query("SELECT pid::text FROM pg_stat_activity WHERE backend_type = 'archiver'")?
        .context("no archiver in pg_stat_activity")
}

#[test]
fn module_holds_for_a_stopped_replica_and_releases_when_it_streams() -> Result<()> {
    let Some(c) = start(2)? else {
        return Ok(());
    };
    let archiver = archiver_pid(&c)?;
    let first = c.switch_wal()?;
    c.wait_archived(&first, ARCHIVE_WAIT)?;
    let line = c.wait_log_line(&format!("wal={first} decision=archived"))?;
    assert!(line.contains("source=shmem"), "{line}");
    assert!(line.contains("replicas=2/2"), "{line}");
    assert!(line.contains("bytes=16777216"), "{line}");
    assert!(line.contains(" slowest=app:r"), "{line}");
    // Written inside the archiver: no process was started for it.
    assert_eq!(pid_of(&line), archiver, "{line}");

    let r2 = c.replica("r2");
    let (held, line) = c.hold_by_stopping("r2", 3)?;
    assert!(line.contains("replicas=1/2"), "{line}");
    assert!(line.contains("source=shmem"), "{line}");
    // The hold is in the server's own log, as a LOG message of the archiver.
    wait_for("the hold in the server log", ARCHIVE_WAIT, || {
        Ok(c.server_log(&c.primary)
            .lines()
            .any(|l| l.contains(&format!("walguard: held {}: replica app:r2", held[0])))
            .then_some(()))
    })?;
    // The command explains the same decision beside the module.
    let check = c.walguard(&["check", &held[0]]);
    assert_eq!(check.status.code(), Some(1), "{}", output_text(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("verdict: HOLD"),
        "{}",
        output_text(&check)
    );
    c.wait_caught_up(&["r1"])?;
    let status = c.walguard(&["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", output_text(&status));
    assert!(
        output_text(&status).starts_with("verdict: held by app:r2 since "),
        "{}",
        output_text(&status)
    );
    c.query("CHECKPOINT")?;
    let ready = c.ready()?;
    for name in &held {
        assert!(ready.contains(name), "{name} not .ready: {ready:?}");
    }

    c.start_node(r2)?;
    c.wait_streaming(2)?;
    let last = c.switch_wal()?;
    c.wait_archived(&last, ARCHIVE_WAIT)?;
    let archived = c.archived()?;
    assert!(is_contiguous(&archived), "gap in the archive: {archived:?}");
    for name in held.iter().chain([&last]) {
        assert!(archived.contains(name), "{name} not archived: {archived:?}");
        let copy = std::fs::read(c.archive.join(name))?;
        let original = std::fs::read(c.primary.data.join("pg_wal").join(name))?;
        assert!(copy == original, "{name} differs from pg_wal");
    }
    // Every decision since the first came from the same archiver: none restarted it.
    assert_eq!(archiver_pid(&c)?, archiver);
    let log = c.log_text();
    let since = log
        .find(&format!("wal={first} decision=archived"))
        .and_then(|at| log[..at].rfind('\n'))
        .map_or(0, |at| at + 1);
    for line in log[since..].lines() {
        assert_eq!(pid_of(line), archiver, "{line}");
    }
    Ok(())
}

#[test]
fn module_failures_are_retries_not_archiver_restarts() -> Result<()> {
    let Some(c) = start(1)? else {
        return Ok(());
    };
    c.archive_everything()?;
    let archiver = archiver_pid(&c)?;
    // A broken config file: every attempt fails, and says why, in the server's log.
    std::fs::write(&c.config, "archive_dir = [\n")?;
    let wal = c.switch_wal()?;
    wait_for("the error in the server log", ARCHIVE_WAIT, || {
        let log = c.server_log(&c.primary);
        Ok((log.contains("WARNING:  walguard: error: config file")
            && log.contains(&format!("{wal} stays in pg_wal")))
        .then_some(()))
    })?;
    wait_for("a failed attempt in pg_stat_archiver", ARCHIVE_WAIT, || {
        let failed = c.query("SELECT last_failed_wal FROM pg_stat_archiver")?;
        Ok((failed.as_deref() == Some(wal.as_str())).then_some(()))
    })?;
    assert!(!c.archived()?.contains(&wal));
    // A missing replica list is an undecided hold in the decision log.
    c.write_config("")?;
    std::fs::rename(&c.list, c.base.join("moved.list"))?;
    let line = c.wait_log_line(&format!("wal={wal} decision=error"))?;
    assert!(line.contains("replicas list"), "{line}");
    // Put right, the same archiver archives it on its next retry.
    std::fs::rename(c.base.join("moved.list"), &c.list)?;
    c.switch_wal()?; // wakes the archiver from its pause after three failures
    c.wait_archived(&wal, ARCHIVE_WAIT)?;
    let server_log = c.server_log(&c.primary);
    assert!(!server_log.contains("archiver process"), "{server_log}");
    assert_eq!(archiver_pid(&c)?, archiver);
    Ok(())
}

//! walguard as an archive module (`archive_library`, crates/walguard-pg) in a real
//! primary with real streaming replicas, on each major it is built for (15, 16, 18): the
//! same scenario as the command's (tests/cluster.rs), with the positions read from shared
//! memory.
//!
//! The module is built here by crates/walguard-pg/build-module (in its own target
//! directory), against the pg_config of the very install whose server then loads it:
//! Debian's 15 (`WALGUARD_PG_CONFIG` picks another pg_config, `WALGUARD_MODULE` a built
//! module), and for 16 and 18 the installs with headers that `.ci/fetch-pg-dev` puts in
//! the cache (`$WALGUARD_PG_CACHE/devN`). Without them the tests say so and pass, unless
//! `WALGUARD_REQUIRE_MODULE=1` (CI) makes that a failure.

#[path = "support/cluster.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use cluster::{ARCHIVE_WAIT, Cluster, Options, find_bindir, is_contiguous, output_text, wait_for};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

/// Why a major cannot be tested here: a skip, or a failure under `WALGUARD_REQUIRE_MODULE`.
fn unavailable<T>(why: String) -> Result<Option<T>> {
    if std::env::var_os("WALGUARD_REQUIRE_MODULE").is_some() {
        bail!("{why}");
    }
    eprintln!("skipped: {why}");
    Ok(None)
}

/// The server programs for `major`, with the pg_config to build against (`None`:
/// build-module's default, Debian's 15).
fn install(major: u32) -> Result<Option<(PathBuf, Option<PathBuf>)>> {
    if major == 15 {
        let Some(bindir) = find_bindir() else {
            bail!("PostgreSQL 15's server programs were not found (apt-get install postgresql-15)");
        };
        if cluster::major_version(&bindir)? != 15 {
            return unavailable(format!("{} is not PostgreSQL 15", bindir.display()));
        }
        return Ok(Some((
            bindir,
            std::env::var_os("WALGUARD_PG_CONFIG").map(PathBuf::from),
        )));
    }
    let cache = std::env::var_os("WALGUARD_PG_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/walguard-pg"), PathBuf::from);
    let bindir = cache.join(format!("dev{major}/bin"));
    if !bindir.join("pg_config").exists() {
        return unavailable(format!(
            "no PostgreSQL {major} with server headers in {} (run .ci/fetch-pg-dev {major})",
            bindir.display()
        ));
    }
    let pg_config = bindir.join("pg_config");
    Ok(Some((bindir, Some(pg_config))))
}

/// Builds the module with crates/walguard-pg/build-module (its exit 2: no headers here).
fn build_module(major: u32, pg_config: Option<&Path>) -> Result<Option<PathBuf>> {
    if major == 15
        && let Some(given) = std::env::var_os("WALGUARD_MODULE")
    {
        return Ok(Some(PathBuf::from(given)));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut build = Command::new(root.join("crates/walguard-pg/build-module"));
    build.args(pg_config);
    // Its own target directory: the outer cargo's is busy with this very test run.
    let out = build
        .env("CARGO_TARGET_DIR", root.join("target/module"))
        .output()
        .context("running crates/walguard-pg/build-module")?;
    match out.status.code() {
        Some(0) => Ok(Some(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim(),
        ))),
        Some(2) => unavailable(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        _ => bail!("building the archive module failed:\n{}", output_text(&out)),
    }
}

/// A cluster of `major` whose primary archives through the module; `None` (skipped) when
/// the module cannot be built or loaded here. Builds run one at a time (they share a
/// target directory and its output file), once per major.
fn start(major: u32, replicas: usize) -> Result<Option<Cluster>> {
    /// Each major's module, or why it could not be built.
    type Built = Result<Option<PathBuf>, String>;
    static BUILT: Mutex<BTreeMap<u32, Built>> = Mutex::new(BTreeMap::new());
    let Some((bindir, pg_config)) = install(major)? else {
        return Ok(None);
    };
    let module = {
        let mut built = BUILT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        built
            .entry(major)
            .or_insert_with(|| {
                build_module(major, pg_config.as_deref()).map_err(|e| format!("{e:#}"))
            })
            .clone()
    };
    let Some(module) = module.map_err(anyhow::Error::msg)? else {
        return Ok(None);
    };
    let opts = Options {
        replicas,
        bindir: Some(bindir),
        archive_library: Some(module),
        ..Options::default()
    };
    let c = Cluster::start(WALGUARD.as_ref(), opts)?;
    assert_eq!(c.major, major, "{}", c.bindir.display());
    Ok(Some(c))
}

/// Both scenarios on every major the module is built for.
macro_rules! on_majors {
    ($($name:ident = $major:literal),*) => {$(
        mod $name {
            #[test]
            fn module_holds_for_a_stopped_replica_and_releases_when_it_streams() -> anyhow::Result<()> {
                super::holds_and_releases($major)
            }
            #[test]
            fn module_failures_are_retries_not_archiver_restarts() -> anyhow::Result<()> {
                super::failures_are_retries($major)
            }
        }
    )*};
}
on_majors!(pg15 = 15, pg16 = 16, pg18 = 18);

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

fn holds_and_releases(major: u32) -> Result<()> {
    let Some(c) = start(major, 2)? else {
        return Ok(());
    };
    let archiver = archiver_pid(&c)?;
    let first = c.switch_wal()?;
    c.wait_archived(&first, ARCHIVE_WAIT)?;
    let first_line = c.wait_released(&first)?;
    assert!(first_line.contains("source=shmem"), "{first_line}");
    assert!(first_line.contains("replicas=2/2"), "{first_line}");
    assert!(first_line.contains("bytes=16777216"), "{first_line}");
    assert!(first_line.contains(" slowest=app:r"), "{first_line}");
    // Written inside the archiver: no process was started for it.
    assert_eq!(pid_of(&first_line), archiver, "{first_line}");

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
    // Held, and archived ahead from inside the archiver too (within its per-call bound).
    wait_for("the held segments archived ahead", ARCHIVE_WAIT, || {
        let archived = c.archived()?;
        Ok(held.iter().all(|h| archived.contains(h)).then_some(()))
    })?;
    assert!(
        c.log_text()
            .lines()
            .any(|l| l.contains(&format!("wal={} decision=held", held[0])) && l.contains(" ahead=")),
        "{}",
        c.log_text()
    );

    c.start_node(r2)?;
    c.wait_streaming(2)?;
    let last = c.switch_wal()?;
    c.wait_archived(&last, ARCHIVE_WAIT)?;
    let archived = c.archived()?;
    assert!(is_contiguous(&archived), "gap in the archive: {archived:?}");
    for name in &held {
        c.wait_log_line(&format!("wal={name} decision=exists"))?;
    }
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
        .find(&first_line)
        .and_then(|at| log[..at].rfind('\n'))
        .map_or(0, |at| at + 1);
    for line in log[since..].lines() {
        assert_eq!(pid_of(line), archiver, "{line}");
    }
    Ok(())
}

fn failures_are_retries(major: u32) -> Result<()> {
    let Some(c) = start(major, 1)? else {
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

/// The archiver told to stop (SIGTERM) while walguard waits for a hand-off: the hand-off
/// is killed with its process group at once, instead of walguard waiting out its
/// `timeout` inside PostgreSQL's process, and the attempt is a retry like any failure.
#[test]
fn pg15_a_stop_request_ends_a_hand_off_at_once() -> Result<()> {
    let Some(c) = start(15, 1)? else {
        return Ok(());
    };
    c.archive_everything()?;
    // A hand-off that would take ten minutes, allowed ten minutes.
    let marker = format!("sleep 600 # {}", c.base.display());
    let text =
        std::fs::read_to_string(&c.config)?.replace("timeout = \"10s\"", "timeout = \"10m\"");
    std::fs::write(&c.config, format!("{text}archive_via = \"{marker} %f\"\n"))?;
    let running = || -> Result<bool> {
        Ok(Command::new("pgrep")
            .args(["-f", &marker])
            .output()?
            .status
            .success())
    };
    c.switch_wal()?;
    wait_for("the hand-off to run", ARCHIVE_WAIT, || {
        Ok(running()?.then_some(()))
    })?;
    let pid: i32 = archiver_pid(&c)?.parse()?;
    // SAFETY: kill(2) on the archiver of our own test server.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_for(
        "the hand-off to be killed",
        std::time::Duration::from_secs(30),
        || Ok((!running()?).then_some(())),
    )
    .with_context(|| c.server_log(&c.primary))?;
    // A retry either way: an error (released, handed off) or a hold whose copy ahead
    // failed (the replica had not reported yet).
    let line = c.wait_log_line("killed: the server is shutting down")?;
    assert!(
        line.contains("decision=error") || line.contains("decision=held"),
        "{line}"
    );
    Ok(())
}

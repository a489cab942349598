//! walguard as its Debian packages install it (pkg/build-debs, then `apt-get install
//! ./target/debian/*.deb`): `/usr/bin/walguard` as a real primary's archive_command, and
//! the module of postgresql-15-walguard as `archive_library = 'walguard'`, found by the
//! server in its own pkglibdir. Each holds for a stopped replica, archives the held
//! segments ahead, releases when it streams again, and leaves a contiguous archive.
//!
//! Runs when `WALGUARD_PACKAGED=1` (CI sets it after installing the packages); otherwise
//! it says so and passes, since a developer's machine need not have them installed.

#[path = "support/cluster.rs"]
mod cluster;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use cluster::{ARCHIVE_WAIT, Cluster, Options, is_contiguous, output_text, wait_for};

const INSTALLED: &str = "/usr/bin/walguard";

fn packaged() -> Result<bool> {
    if std::env::var_os("WALGUARD_PACKAGED").is_none() {
        eprintln!("skipped: set WALGUARD_PACKAGED=1 once the packages are installed");
        return Ok(false);
    }
    if !Path::new(INSTALLED).exists() {
        bail!("WALGUARD_PACKAGED is set but {INSTALLED} is missing: install target/debian/*.deb");
    }
    Ok(true)
}

/// Hold, archive ahead, release, contiguous: the same for the command and the module.
fn holds_and_releases(c: &Cluster, source: &str) -> Result<()> {
    c.archive_everything()?;
    let (held, line) = c.hold_by_stopping("r2", 3)?;
    assert!(line.contains(&format!("source={source}")), "{line}");
    wait_for("the held segments archived ahead", ARCHIVE_WAIT, || {
        let archived = c.archived()?;
        Ok(held.iter().all(|h| archived.contains(h)).then_some(()))
    })?;
    c.start_node(c.replica("r2"))?;
    c.wait_streaming(2)?;
    let last = c.switch_wal()?;
    c.wait_archived(&last, ARCHIVE_WAIT)?;
    for name in &held {
        c.wait_log_line(&format!("wal={name} decision=exists"))?;
    }
    let archived = c.archived()?;
    assert!(is_contiguous(&archived), "gap in the archive: {archived:?}");
    for name in held.iter().chain([&last]) {
        let copy = std::fs::read(c.archive.join(name))?;
        let original = std::fs::read(c.primary.data.join("pg_wal").join(name))?;
        assert!(copy == original, "{name} differs from pg_wal");
    }
    Ok(())
}

#[test]
fn the_packaged_command_holds_and_releases() -> Result<()> {
    if !packaged()? {
        return Ok(());
    }
    let version = Command::new(INSTALLED).arg("--version").output()?;
    let version = output_text(&version);
    assert!(version.contains("Debian package"), "{version}");
    let c = Cluster::start(
        INSTALLED.as_ref(),
        Options {
            installed: true,
            ..Options::default()
        },
    )?;
    let command = c
        .query("SHOW archive_command")?
        .context("no archive_command")?;
    assert!(command.starts_with(&format!("{INSTALLED} ")), "{command}");
    holds_and_releases(&c, "sql")
}

#[test]
fn the_packaged_module_holds_and_releases() -> Result<()> {
    if !packaged()? {
        return Ok(());
    }
    let c = Cluster::start(
        INSTALLED.as_ref(),
        Options {
            installed: true,
            archive_library: Some("walguard".into()),
            ..Options::default()
        },
    )?;
    let library = c.query("SHOW archive_library")?;
    assert_eq!(library.as_deref(), Some("walguard"));
    holds_and_releases(&c, "shmem")
}

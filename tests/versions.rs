//! The core scenario on every PostgreSQL major from 10 to 18: a primary with two
//! streaming replicas and walguard as its archive_command archives contiguously; a
//! stopped replica holds the segments it needs, `check` names it, `status` says held;
//! it comes back and catches up by streaming (no restore_command), with no gap; and
//! `status`, text and JSON, works from any directory.
//!
//! Binaries: `$WALGUARD_PG<major>_BINDIR`, else the cache `.ci/fetch-pg` fills
//! (`$WALGUARD_PG_CACHE`, default /var/cache/walguard-pg), else Debian's for 15. A major
//! without binaries is skipped with a message, unless `WALGUARD_REQUIRE_ALL_MAJORS` is
//! set (as `.ci/run` does): then it fails. One major locally: `.ci/test-pg 14`.

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;
use std::path::PathBuf;

use anyhow::{Result, bail};
use cluster::{ARCHIVE_WAIT, Cluster, Options, is_contiguous, output_text, wait_for};
use serde_json::Value;

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

fn bindir(major: u32) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(format!("WALGUARD_PG{major}_BINDIR")) {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("WALGUARD_PG_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/walguard-pg"));
    [
        cache.join(major.to_string()).join("bin"),
        PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
    ]
    .into_iter()
    .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
}

fn json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", output_text(o)))
}

fn scenario(major: u32) -> Result<()> {
    let Some(bindir) = bindir(major) else {
        if std::env::var_os("WALGUARD_REQUIRE_ALL_MAJORS").is_some() {
            bail!("no PostgreSQL {major} binaries: run .ci/fetch-pg {major}");
        }
        eprintln!("skipped: no PostgreSQL {major} binaries (.ci/fetch-pg {major} fetches them)");
        return Ok(());
    };
    let c = Cluster::start(
        WALGUARD.as_ref(),
        Options {
            bindir: Some(bindir),
            ..Options::default()
        },
    )?;
    assert_eq!(c.major, major, "{}", c.bindir.display());

    // Healthy: every finished segment is archived, from the first, with no gap.
    let mut last = String::new();
    for _ in 0..3 {
        last = c.switch_wal()?;
    }
    c.wait_archived(&last, ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1", "r2"])?;
    let archived = c.archived()?;
    assert_eq!(archived[0], "000000010000000000000001", "{archived:?}");
    assert!(is_contiguous(&archived), "gap: {archived:?}");
    // status from anywhere: another working directory, no pgdata.
    let status = |args: &[&str]| {
        let mut all = vec!["status"];
        all.extend_from_slice(args);
        c.as_server_user(&c.walguard)
            .arg("--config")
            .arg(&c.config)
            .args(&all)
            .current_dir("/")
            .output()
            .expect("running walguard status")
    };
    let flowing = status(&[]);
    assert_eq!(flowing.status.code(), Some(0), "{}", output_text(&flowing));
    assert!(
        output_text(&flowing).starts_with("verdict: archiving flowing"),
        "{}",
        output_text(&flowing)
    );
    let j = json(&status(&["--json"]));
    assert_eq!(j["verdict"]["state"], "flowing", "{j}");
    assert_eq!(j["replicas"].as_array().map(Vec::len), Some(2), "{j}");

    // r2 stops: the segments it has not replayed are held, and check and status say so.
    let r2 = c.replica("r2");
    let (held, _) = c.hold_by_stopping("r2", 2)?;
    let check = c.walguard(&["check", &held[0]]);
    assert_eq!(check.status.code(), Some(1), "{}", output_text(&check));
    assert!(
        output_text(&check).contains("app:r2") && output_text(&check).contains("verdict: HOLD")
    );
    c.wait_caught_up(&["r1"])?;
    let down = status(&[]);
    assert_eq!(down.status.code(), Some(1), "{}", output_text(&down));
    assert!(
        output_text(&down).starts_with("verdict: held by app:r2 since "),
        "{}",
        output_text(&down)
    );
    let j = json(&status(&["--json"]));
    assert_eq!(j["verdict"]["state"], "held", "{j}");
    assert_eq!(j["waiting"]["oldest"], held[0].as_str(), "{j}");
    // Held, but archived ahead: every held segment is in the archive, byte-identical,
    // and still waiting in pg_wal for its acknowledgement.
    wait_for(
        "the held segments to be archived ahead",
        ARCHIVE_WAIT,
        || {
            let archived = c.archived()?;
            Ok(held.iter().all(|h| archived.contains(h)).then_some(()))
        },
    )?;
    let ready = c.ready()?;
    for name in &held {
        assert!(ready.contains(name), "{name} was acknowledged while held");
        assert!(
            fs::read(c.archive.join(name))? == fs::read(c.primary.data.join("pg_wal").join(name))?,
            "{name} differs from pg_wal"
        );
    }

    // A slot speaks for a replica that is away: one reserved now (its restart_lsn past
    // the held segments) releases them; the slot columns of every version are read
    // (wal_status from 13, none before).
    // (A new physical slot reserves from the last checkpoint's redo position.)
    c.query("CHECKPOINT")?;
    c.query("SELECT pg_create_physical_replication_slot('away', true)")?;
    let slotted = c.base.join("slotted.list");
    fs::write(&slotted, "app:r1\napp:r2 slot=away\n")?;
    let by_slot = c.walguard(&[
        "--replicas",
        slotted.to_str().unwrap_or_default(),
        "check",
        &held[0],
    ]);
    assert_eq!(by_slot.status.code(), Some(0), "{}", output_text(&by_slot));
    let j = json(&status(&[
        "--replicas",
        slotted.to_str().unwrap_or_default(),
        "--json",
    ]));
    let slot = &j["replicas"][1]["slot"];
    assert_eq!(slot["speaks_for_it"], true, "{j}");
    assert_eq!(
        slot["wal_status"].is_string(),
        c.major >= 13,
        "wal_status exists from 13: {j}"
    );
    c.query("SELECT pg_drop_replication_slot('away')")?;

    // r2 comes back with no restore_command and streams what it missed.
    c.start_node(r2)?;
    c.wait_streaming(2)?;
    let after = c.switch_wal()?;
    c.wait_archived(&after, ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1", "r2"])?;
    let archived = c.archived()?;
    assert!(is_contiguous(&archived), "gap: {archived:?}");
    for name in held.iter().chain([&after]) {
        assert!(archived.contains(name), "{name} missing: {archived:?}");
    }
    let r2_log = c.server_log(r2);
    assert!(!r2_log.contains("has already been removed"), "{r2_log}");
    Ok(())
}

#[test]
fn postgresql_10() -> Result<()> {
    scenario(10)
}

#[test]
fn postgresql_11() -> Result<()> {
    scenario(11)
}

#[test]
fn postgresql_12() -> Result<()> {
    scenario(12)
}

#[test]
fn postgresql_13() -> Result<()> {
    scenario(13)
}

#[test]
fn postgresql_14() -> Result<()> {
    scenario(14)
}

#[test]
fn postgresql_15() -> Result<()> {
    scenario(15)
}

#[test]
fn postgresql_16() -> Result<()> {
    scenario(16)
}

#[test]
fn postgresql_17() -> Result<()> {
    scenario(17)
}

#[test]
fn postgresql_18() -> Result<()> {
    scenario(18)
}

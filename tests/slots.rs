//! Replicas that are away, on a real primary with two streaming replicas: a replica's
//! physical slot speaks for it while it is away (what it flushed is released, the rest
//! held), a lost slot stops holding (logged `lost=` at WARN, the hook runs once, status
//! says to rebuild it), and a delayed standby listed with `position=flush` does not hold
//! the primary for its delay.

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result};
use cluster::{ARCHIVE_WAIT, Cluster, Options, output_text, wait_for};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

fn start(extra: &str) -> Result<Cluster> {
    let c = Cluster::start(
        WALGUARD.as_ref(),
        Options {
            extra_config: extra.into(),
            ..Options::default()
        },
    )?;
    c.archive_everything()?;
    // r2 streams through a physical slot named after it.
    c.query("SELECT pg_create_physical_replication_slot('r2', true)")?;
    let r2 = c.replica("r2");
    c.configure(r2, "primary_slot_name = 'r2'")?;
    c.restart(r2)?;
    c.wait_streaming(2)?;
    wait_for("r2 on its slot", Duration::from_secs(30), || {
        Ok((c
            .query("SELECT active FROM pg_replication_slots WHERE slot_name = 'r2'")?
            .as_deref()
            == Some("t"))
        .then_some(()))
    })?;
    Ok(c)
}

/// The slot's `restart_lsn`, as text.
fn restart_lsn(c: &Cluster) -> Result<Option<String>> {
    c.query("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'r2'")
}

#[test]
fn a_slot_speaks_for_a_replica_that_is_away() -> Result<()> {
    let c = start("")?;
    let r2 = c.replica("r2");
    // Everything is held for a while (a listed replica that does not exist), so that a
    // segment r2 has received is still waiting when r2 stops.
    c.write_list("app:r1\napp:r2 slot=r2\napp:ghost\n")?;
    let received = c.switch_wal()?;
    c.wait_caught_up(&["r1", "r2"])?;
    let end = c
        .query(&format!(
            "SELECT pg_wal_lsn_diff('{}'::pg_lsn + 0, '0/0')",
            c.query("SELECT pg_current_wal_lsn()")?
                .context("no position")?
        ))?
        .context("no end")?;
    wait_for(
        "the slot to confirm what r2 flushed",
        Duration::from_secs(30),
        || {
            let at = c.query(&format!(
            "SELECT pg_wal_lsn_diff(restart_lsn, '0/0') >= {end} FROM pg_replication_slots WHERE slot_name = 'r2'"
        ))?;
            Ok((at.as_deref() == Some("t")).then_some(()))
        },
    )?;
    c.stop(r2)?;
    let missed = c.switch_wal()?;
    // The ghost goes: r2 is away, but its slot says it has `received`: released;
    // `missed` it never got: held, naming the slot's position.
    c.write_list("app:r1\napp:r2 slot=r2\n")?;
    c.switch_wal()?;
    let released = c.wait_log_line(&format!("wal={received} decision=e"))?;
    assert!(released.contains("decision=exists") || released.contains("decision=archived"));
    let held = c.wait_log_line(&format!("wal={missed} decision=held"))?;
    assert!(
        held.contains("replica app:r2 has slot's restart only up to"),
        "{held}"
    );
    let check = c.walguard(&["check", &missed]);
    assert!(
        output_text(&check).contains("not connected; slot r2 at "),
        "{}",
        output_text(&check)
    );
    let j: serde_json::Value = serde_json::from_slice(&c.walguard(&["status", "--json"]).stdout)?;
    let slot = &j["replicas"][1]["slot"];
    assert_eq!(slot["name"], "r2", "{j}");
    assert_eq!(slot["speaks_for_it"], true, "{j}");
    assert_eq!(
        slot["restart_lsn"],
        restart_lsn(&c)?.unwrap_or_default().as_str(),
        "{j}"
    );
    // r2 returns and streams what it missed.
    c.start_node(r2)?;
    c.wait_streaming(2)?;
    let after = c.switch_wal()?;
    c.wait_archived(&after, ARCHIVE_WAIT)?;
    assert!(!c.server_log(r2).contains("has already been removed"));
    Ok(())
}

#[test]
fn a_lost_slot_stops_holding_and_says_rebuild() -> Result<()> {
    let c = start("min_free = \"0\"\n")?;
    let events = c.base.join("events");
    c.write_config(&format!(
        "min_free = \"0\"\non_event = 'echo \"$WALGUARD_EVENT $WALGUARD_REPLICAS\" >> {}'\n",
        events.display()
    ))?;
    c.write_list("app:r1\napp:r2 slot=r2\n")?;
    // The slot may keep 32 MB; r2 is away while three segments and more are written.
    c.configure(&c.primary, "max_slot_wal_keep_size = '32MB'")?;
    let r2 = c.replica("r2");
    c.stop(r2)?;
    let first = c.switch_wal()?;
    c.wait_log_line(&format!("wal={first} decision=held"))?;
    for _ in 0..4 {
        c.switch_wal()?;
    }
    wait_for("the slot to be lost", Duration::from_secs(60), || {
        c.query("CHECKPOINT")?;
        Ok((c
            .query("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'r2'")?
            .as_deref()
            == Some("lost"))
        .then_some(()))
    })?;
    // The next attempt releases it for r1 alone, saying r2 is lost; every later line too.
    let next = c.switch_wal()?;
    c.wait_archived(&next, ARCHIVE_WAIT)?;
    let line = c.wait_log_line(&format!("wal={first} decision="))?;
    let released = c
        .log_text()
        .lines()
        .rev()
        .find(|l| l.contains(&format!("wal={next} decision=")))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        released.contains("level=warn") && released.contains("lost=app:r2"),
        "{line}\n{released}"
    );
    // The hook ran once for it.
    let text = fs::read_to_string(&events)?;
    assert_eq!(text.matches("lost app:r2").count(), 1, "{text}");
    let status = c.walguard(&["status"]);
    let out = output_text(&status);
    assert!(
        out.contains("must be rebuilt")
            && out.contains("LOST")
            && out.contains("slot r2 (app:r2): "),
        "{out}"
    );
    let prom = c.walguard(&["status", "--format", "prometheus"]);
    assert!(
        String::from_utf8_lossy(&prom.stdout)
            .contains("walguard_replica_slot_lost{replica=\"app:r2\"} 1"),
        "{}",
        output_text(&prom)
    );
    Ok(())
}

#[test]
fn a_delayed_standby_listed_by_flush_does_not_hold_the_primary() -> Result<()> {
    let c = Cluster::start(WALGUARD.as_ref(), Options::default())?;
    c.archive_everything()?;
    let r2 = c.replica("r2");
    c.configure(r2, "recovery_min_apply_delay = '1h'")?;
    c.query("CREATE TABLE delayed (n int); INSERT INTO delayed VALUES (1)")?;
    let seg = c.switch_wal()?;
    // r2 has it on disk (flushed) long before it replays it.
    wait_for("r2 to flush it", Duration::from_secs(30), || {
        let behind = c.query(
            "SELECT flush_lsn >= pg_current_wal_lsn() AND replay_lsn < flush_lsn FROM pg_stat_replication WHERE application_name = 'r2'",
        )?;
        Ok((behind.as_deref() == Some("t")).then_some(()))
    })?;
    // By replay it would be held for the hour; by flush it goes.
    let by_replay = c.walguard(&["check", &seg]);
    assert_eq!(
        by_replay.status.code(),
        Some(1),
        "{}",
        output_text(&by_replay)
    );
    c.write_list("app:r1\napp:r2 position=flush\n")?;
    let by_flush = c.walguard(&["check", &seg]);
    assert_eq!(
        by_flush.status.code(),
        Some(0),
        "{}",
        output_text(&by_flush)
    );
    c.switch_wal()?;
    c.wait_log_line(&format!("wal={seg} decision="))?;
    wait_for("the segment to be acknowledged", ARCHIVE_WAIT, || {
        let last = c.query("SELECT last_archived_wal FROM pg_stat_archiver")?;
        Ok(last.is_some_and(|l| l >= seg).then_some(()))
    })?;
    Ok(())
}

//! walguard on every node of a cluster with one config and one list, through a
//! switchover: a real primary and two streaming replicas, all with
//! `archive_mode = always` and the same archive_command, config (no conninfo: each node
//! asks the server it runs in) and list (naming every node, the primary included; each
//! node knows its own line by its `cluster_name`). The standbys acknowledge only what the
//! primary archived and never write into the archive; the primary holds for a stopped
//! replica (archive_ahead off, so the held segments exist only in pg_wal); the primary is
//! stopped and r1 promoted: r1 archives what the old primary had not, the old primary and
//! r2 rejoin by streaming, and the archive has no gap on either timeline.

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result};
use cluster::{ARCHIVE_WAIT, Cluster, Options, is_contiguous, output_text, wait_for};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

/// The `.ready` files in `node`'s pg_wal.
fn ready_on(node: &cluster::Node) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(node.data.join("pg_wal/archive_status"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".ready").map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Segment names of `timeline` in the archive (plain), sorted.
fn archived_on(c: &Cluster, timeline: &str) -> Result<Vec<String>> {
    Ok(c.archived()?
        .into_iter()
        .filter(|n| n.starts_with(timeline))
        .collect())
}

#[test]
fn one_config_on_every_node_through_a_switchover() -> Result<()> {
    let c = Cluster::start(WALGUARD.as_ref(), Options::default())?;
    // One config for all: no conninfo (each node asks its own server, found from its
    // postmaster.pid), archive_ahead off so that held segments exist only in pg_wal.
    fs::write(
        &c.config,
        format!(
            "archive_dir = \"{}\"\nreplicas = \"{}\"\nlog_file = \"{}\"\ntimeout = \"10s\"\narchive_ahead = false\n",
            c.archive.display(),
            c.list.display(),
            c.log.display()
        ),
    )?;
    c.write_list("app:primary\napp:r1\napp:r2\n")?;
    // Every node archives (archive_mode = always) and knows itself by cluster_name.
    for node in c.replicas.iter().chain(std::iter::once(&c.primary)) {
        c.configure(
            node,
            &format!("archive_mode = always\ncluster_name = '{}'", node.name),
        )?;
        c.restart(node)?;
    }
    c.wait_streaming(2)?;
    let r1 = c.replica("r1");
    let r2 = c.replica("r2");

    // Healthy: the primary archives; the standbys acknowledge once it has, and never
    // write into the archive themselves.
    let mut last = String::new();
    for _ in 0..2 {
        last = c.switch_wal()?;
    }
    c.wait_archived(&last, ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1", "r2"])?;
    // The standbys' archivers wake on new WAL: one more segment, archived too.
    let wake = c.switch_wal()?;
    c.wait_archived(&wake, ARCHIVE_WAIT)?;
    wait_for("the standbys to acknowledge", ARCHIVE_WAIT, || {
        Ok((!ready_on(r1).contains(&last) && !ready_on(r2).contains(&last)).then_some(()))
    })?;
    assert!(
        c.log_text()
            .lines()
            .any(|l| l.contains("decision=exists") && l.contains("role=standby")),
        "{}",
        c.log_text()
    );
    // Each node says which line is itself, and a standby says it is one.
    let check = c.walguard_in(&c.primary, &["check", &last]);
    assert!(
        output_text(&check).contains(
            "this server is app:primary (the server's cluster_name is primary): its line is skipped"
        ),
        "{}",
        output_text(&check)
    );
    let status = c.walguard_in(r1, &["status"]);
    let text = output_text(&status);
    assert!(
        text.starts_with("verdict: standby: ")
            && text.contains("this server: app:r1 (the server's cluster_name is r1)"),
        "{text}"
    );

    // A standby with archive_via looks through archive_check_via (exit 0: the archive
    // holds it); without one it acknowledges nothing.
    let present = format!("test -f {}/%f", c.archive.display());
    for (check_via, code, says) in [
        (Some(present.as_str()), 0, "decision=exists"),
        (Some("false %f"), 1, "is not in the archive yet"),
        (None, 1, "archive_check_via is not set"),
    ] {
        let mut args = vec!["--archive-via", "false %p"];
        if let Some(v) = check_via {
            args.extend(["--archive-check-via", v]);
        }
        let wal_path = format!("pg_wal/{last}");
        args.extend(["archive", &wal_path, &last]);
        // This run's own line (the archivers log beside it): by its pid.
        let child = c
            .as_server_user(&c.walguard)
            .current_dir(&r1.data)
            .arg("--config")
            .arg(&c.config)
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let pid = child.id();
        let out = child.wait_with_output()?;
        assert_eq!(
            out.status.code(),
            Some(code),
            "{check_via:?}: {}",
            output_text(&out)
        );
        let line = c
            .log_text()
            .lines()
            .find(|l| l.contains(&format!(" pid={pid} ")))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains(says) && line.contains("role=standby"),
            "{line}"
        );
    }

    // r2 stops: the primary holds (and, archive_ahead off, archives nothing held); r1
    // keeps what is not archived, as .ready.
    let (held, _) = c.hold_by_stopping("r2", 2)?;
    assert!(held.iter().all(|h| !c.archive.join(h).exists()));
    c.wait_caught_up(&["r1"])?;
    wait_for("r1 to hold the unarchived segments", ARCHIVE_WAIT, || {
        Ok(c.log_text()
            .lines()
            .any(|l| {
                l.contains(&format!("wal={} decision=held", held[0]))
                    && l.contains("role=standby")
                    && l.contains("is not in the archive yet")
            })
            .then_some(()))
    })?;
    assert!(ready_on(r1).contains(&held[0]), "{:?}", ready_on(r1));

    // Switchover: the primary stops cleanly, r1 is promoted. The segments the old
    // primary never archived are r1's to archive now.
    c.stop(&c.primary)?;
    c.promote(r1)?;
    wait_for("r1 to be promoted", Duration::from_secs(60), || {
        Ok((c.query_on(r1, "SELECT pg_is_in_recovery()")?.as_deref() == Some("f")).then_some(()))
    })?;
    // The old primary and r2 rejoin as standbys of r1, by streaming.
    c.follow(&c.primary, r1)?;
    c.start_node(&c.primary)?;
    c.follow(r2, r1)?;
    c.start_node(r2)?;
    c.wait_streaming_from(r1, &["primary", "r2"])?;
    let tl2 = c.switch_wal_on(r1)?;
    assert!(tl2.starts_with("00000002"), "{tl2}");
    c.wait_archived_on(r1, &tl2, ARCHIVE_WAIT)
        .with_context(|| c.log_text())?;
    // No gap on either timeline: timeline 1 up to the switch (the held segments
    // included), its history, and timeline 2.
    let tl1 = archived_on(&c, "00000001")?;
    assert!(is_contiguous(&tl1), "gap on timeline 1: {tl1:?}");
    for h in &held {
        assert!(tl1.contains(h), "{h} was never archived: {tl1:?}");
    }
    assert!(c.archive.join("00000002.history").exists());
    let tl2s = archived_on(&c, "00000002")?;
    assert!(is_contiguous(&tl2s), "gap on timeline 2: {tl2s:?}");
    let verify = c.walguard_in(r1, &["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", output_text(&verify));
    // The old primary, now a standby, acknowledges what it had kept once it is archived.
    c.switch_wal_on(r1)?;
    wait_for("the old primary to acknowledge", ARCHIVE_WAIT, || {
        Ok((!ready_on(&c.primary).contains(&held[0])).then_some(()))
    })?;
    // Its last timeline-1 segment, past the switch point, is covered by the .partial r1
    // archived: it keeps nothing of timeline 1.
    wait_for(
        "the old primary to keep nothing of timeline 1",
        ARCHIVE_WAIT,
        || {
            c.switch_wal_on(r1)?;
            Ok((!ready_on(&c.primary)
                .iter()
                .any(|n| n.starts_with("00000001")))
            .then_some(()))
        },
    )
    .with_context(|| format!("{:?}", ready_on(&c.primary)))?;
    for node in [&c.primary, r2] {
        let log = c.server_log(node);
        assert!(!log.contains("has already been removed"), "{log}");
    }
    Ok(())
}

//! Guarded cleanup on a real primary with two streaming replicas and three base backups
//! (a labelled nightly one, then two rebuilds): `--label` keeps the nightly one however
//! many rebuilds follow; `--keep-backups 3` keeps what the oldest needs (it still
//! restores), then `--keep-backups 2` removes what only it needed and the newer one still
//! restores with `walguard restore`; a stopped listed replica refuses the cleanup;
//! another cluster's archive is refused; `verify` is clean after it.

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;
use std::path::Path;

use anyhow::Result;
use cluster::{Cluster, Options, output_text};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

fn names(dir: &Path) -> Result<Vec<String>> {
    let mut n: Vec<String> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    n.sort();
    Ok(n)
}

/// Starts a server from `backup`, recovering only to consistency, and checks that it
/// comes up with the pgbench tables.
fn restores(c: &Cluster, name: &str, backup: &Path) -> Result<()> {
    let node = c.recovering_server(
        name,
        backup,
        "recovery_target = 'immediate'\nrecovery_target_action = 'promote'",
        false,
    )?;
    c.start_node(&node)?;
    c.wait_promoted(&node, &format!("{name} to recover and promote"))?;
    let rows = c.query_on(&node, "SELECT count(*) FROM pgbench_branches")?;
    anyhow::ensure!(
        rows.as_deref() == Some("2"),
        "{name}: pgbench_branches has {rows:?} rows"
    );
    c.stop(&node)?;
    Ok(())
}

#[test]
fn cleanup_keeps_what_backups_and_replicas_need() -> Result<()> {
    let c = Cluster::start(
        WALGUARD.as_ref(),
        Options {
            extra_config: "compress = \"zstd\"\n".into(),
            ..Options::default()
        },
    )?;
    c.client("pgbench", &["-i", "-s", "2", "-q", "postgres"])?;
    let first = c.base.join("backup1");
    c.client(
        "pg_basebackup",
        &[
            "-D",
            first.to_str().unwrap(),
            "-X",
            "none",
            "-c",
            "fast",
            "-l",
            "nightly 2026-12-05",
        ],
    )?;
    for _ in 0..3 {
        c.client("pgbench", &["-t", "200", "-c", "2", "-n", "postgres"])?;
        c.switch_wal()?;
    }
    let second = c.base_backup("backup2")?;
    c.client("pgbench", &["-t", "200", "-c", "2", "-n", "postgres"])?;
    // A replica rebuilt: one more base backup, with pg_basebackup's default label.
    c.base_backup("rebuild")?;
    c.archive_everything()?;
    c.wait_caught_up(&["r1", "r2"])?;
    let all = names(&c.archive)?;
    let labels: Vec<&String> = all.iter().filter(|n| n.ends_with(".backup")).collect();
    assert_eq!(labels.len(), 3, "{all:?}");
    let second_start = &labels[1][..24];

    // Counting every backup, the rebuilds push the nightly one out; counting only the
    // nightly ones, it stays, and the dry run lists it with its label and start time.
    let out = c.walguard(&["cleanup", "--keep-backups", "1", "--dry-run"]);
    assert!(
        output_text(&out).contains(&format!(
            "the oldest kept is needed by backup {}",
            labels[2]
        )),
        "{}",
        output_text(&out)
    );
    let out = c.walguard(&[
        "cleanup",
        "--keep-backups",
        "1",
        "--label",
        "nightly*",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let text = output_text(&out);
    assert!(
        text.contains(&format!(
            "the oldest kept is needed by backup {}",
            labels[0]
        )) && text.contains(&format!("  {}  started 20", labels[0]))
            && text.contains("label \"nightly 2026-12-05\""),
        "{text}"
    );
    assert_eq!(names(&c.archive)?, all, "a dry run deleted something");
    // Another cluster's archive (its WAL carries another system identifier): refused.
    let foreign = c.scratch_dir("foreign")?;
    let other = c.other_cluster("other")?;
    fs::copy(
        other.join("pg_wal/000000010000000000000001"),
        foreign.join("000000010000000000000001"),
    )?;
    fs::copy(c.archive.join(labels[0]), foreign.join(labels[0]))?;
    c.chown(&foreign)?;
    let out = c.walguard(&[
        "--archive-dir",
        foreign.to_str().unwrap(),
        "cleanup",
        "--keep-backups",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("it is another cluster's archive"),
        "{}",
        output_text(&out)
    );
    assert_eq!(
        fs::read_dir(&foreign)?.count(),
        2,
        "deleted from a foreign archive"
    );

    // Neither bound: nothing is deleted, and it says why.
    let out = c.walguard(&["cleanup"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("give --keep-backups N"),
        "{}",
        output_text(&out)
    );

    // All three kept: a dry run names what would go (only what precedes the first).
    let out = c.walguard(&["cleanup", "--keep-backups", "3", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(&format!(
            "the oldest kept is needed by backup {}",
            labels[0]
        )),
        "{}",
        output_text(&out)
    );
    assert_eq!(names(&c.archive)?, all, "a dry run deleted something");
    let out = c.walguard(&["cleanup", "--keep-backups", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(names(&c.archive)?.iter().any(|n| n == labels[0].as_str()));
    restores(&c, "from-first", &first)?;

    // A stopped listed replica refuses the cleanup, naming it.
    c.stop(c.replica("r2"))?;
    let before = names(&c.archive)?;
    let out = c.walguard(&["cleanup", "--keep-backups", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("replica app:r2 is not connected"),
        "{}",
        output_text(&out)
    );
    assert_eq!(
        names(&c.archive)?,
        before,
        "deleted while a replica was away"
    );
    c.start_node(c.replica("r2"))?;
    c.wait_streaming(2)?;
    c.wait_caught_up(&["r1", "r2"])?;

    // Two backups kept: what only the first needed goes, its label with it.
    let out = c.walguard(&["cleanup", "--keep-backups", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let left = names(&c.archive)?;
    let segments: Vec<&String> = left.iter().filter(|n| n.ends_with(".zst")).collect();
    assert!(
        segments[0].starts_with(second_start),
        "the oldest left is {} ({left:?})",
        segments[0]
    );
    assert!(
        !left.contains(labels[0]) && left.contains(labels[1]) && left.contains(labels[2]),
        "{left:?}"
    );
    assert!(c.log_text().contains("cmd=cleanup"), "{}", c.log_text());
    let line = c
        .log_text()
        .lines()
        .rev()
        .find(|l| l.contains("cmd=cleanup"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("decision=deleted")
            && !line.contains(" wal=")
            && line.contains(&format!("kept_because=\"backup {}\"", labels[1])),
        "{line}"
    );
    restores(&c, "from-second", &second)?;
    // What is kept has no gap, and every replica can still recover.
    let out = c.walguard(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    Ok(())
}

//! walguard as the archive_command of a real PostgreSQL primary with real streaming
//! replicas. Each test starts its own cluster (see support/cluster.rs).

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;

use anyhow::Result;
use cluster::{ARCHIVE_WAIT, Cluster, Options, is_contiguous};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

fn start(opts: Options) -> Cluster {
    Cluster::start(WALGUARD.as_ref(), opts).expect("starting the test cluster")
}

fn expect_contiguous(names: &[String]) {
    assert!(is_contiguous(names), "gap in the archive: {names:?}");
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The log line for `wal` with `decision`, once the archiver has written it.
fn wait_log(c: &Cluster, wal: &str, decision: &str) -> Result<String> {
    c.wait_log_line(&format!("wal={wal} decision={decision}"))
}

#[test]
fn healthy_cluster_archives_every_segment_byte_identical() -> Result<()> {
    let c = start(Options::default());
    let mut last = String::new();
    for _ in 0..3 {
        last = c.switch_wal()?;
    }
    c.wait_archived(&last, ARCHIVE_WAIT)?;
    let archived = c.archived()?;
    assert_eq!(
        archived.first().map(String::as_str),
        Some("000000010000000000000001"),
        "{archived:?}"
    );
    assert_eq!(archived.last(), Some(&last));
    expect_contiguous(&archived);
    for name in &archived {
        let copy = fs::read(c.archive.join(name))?;
        let original = fs::read(c.primary.data.join("pg_wal").join(name))?;
        assert!(copy == original, "{name} differs from pg_wal");
        let mode = fs::metadata(c.archive.join(name))?.permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
            0,
            "{name} readable by others"
        );
    }
    let line = wait_log(&c, &last, "archived")?;
    assert!(line.contains("replicas=2/2"), "{line}");
    assert!(line.contains("bytes=16777216"), "{line}");
    assert!(
        line.contains(" need_lsn=") && line.contains(" slowest=app:r"),
        "{line}"
    );
    assert!(
        !fs::read_dir(c.archive.join(".walguard-tmp"))?.any(|_| true),
        "temp files left"
    );
    Ok(())
}

#[test]
fn stopped_replica_holds_segments_until_it_streams_again() -> Result<()> {
    let c = start(Options::default());
    let first = c.switch_wal()?;
    c.wait_archived(&first, ARCHIVE_WAIT)?;

    let r2 = c.replica("r2");
    let (held, line) = c.hold_by_stopping("r2", 3)?;
    assert!(line.contains("replicas=1/2"), "{line}");

    // The dry run names r2.
    let check = c.walguard(&["check", &held[0]]);
    assert_eq!(
        check.status.code(),
        Some(1),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
    let report = stdout(&check);
    assert!(
        report.contains("app:r2")
            && report.contains("not connected")
            && report.contains("verdict: HOLD"),
        "{report}"
    );

    // A checkpoint would recycle archived segments; held ones must survive it.
    c.query("CHECKPOINT")?;
    let ready = c.ready()?;
    for name in &held {
        assert!(ready.contains(name), "{name} not .ready: {ready:?}");
        assert!(
            c.primary.data.join("pg_wal").join(name).exists(),
            "{name} left pg_wal"
        );
    }

    // r2 comes back with no restore_command: it must stream what it missed.
    c.start_node(r2)?;
    c.wait_streaming(2)?;
    let after = c.switch_wal()?;
    c.wait_archived(&after, ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1", "r2"])?;
    let archived = c.archived()?;
    expect_contiguous(&archived);
    for name in held.iter().chain([&after]) {
        assert!(archived.contains(name), "{name} missing from {archived:?}");
    }
    let r2_log = c.server_log(r2);
    assert!(!r2_log.contains("has already been removed"), "{r2_log}");
    Ok(())
}

#[test]
fn unlisted_replica_holds_and_is_named() -> Result<()> {
    let c = start(Options::default());
    // The archiver works oldest-first: let it finish the start-up segments first.
    let healthy = c.switch_wal()?;
    c.wait_archived(&healthy, ARCHIVE_WAIT)?;
    c.write_list("app:r1\n")?;
    let seg = c.switch_wal()?;
    let line = wait_log(&c, &seg, "held")?;
    assert!(
        line.contains("unlisted replica pid ") && line.contains(" app r2 from 127.0.0.1"),
        "{line}"
    );
    assert!(c.ready()?.contains(&seg), "acknowledged while held");

    let check = c.walguard(&["check", &seg]);
    assert_eq!(check.status.code(), Some(1));
    assert!(stdout(&check).contains("UNLISTED"), "{}", stdout(&check));
    let ignored = c.walguard(&["--unlisted", "ignore", "check", &seg]);
    assert_eq!(ignored.status.code(), Some(0), "{}", stdout(&ignored));

    // By address: two lines with one address need two replicas from it.
    c.write_list("127.0.0.1\n127.0.0.1\n")?;
    let two = c.walguard(&["check", &seg]);
    assert_eq!(two.status.code(), Some(0), "{}", stdout(&two));
    c.write_list("127.0.0.1\n127.0.0.1\n127.0.0.1 # a third that does not exist\n")?;
    let three = c.walguard(&["check", &seg]);
    assert_eq!(three.status.code(), Some(1));
    assert!(
        stdout(&three).contains("replica 127.0.0.1 not connected"),
        "{}",
        stdout(&three)
    );

    // Back to the full list: the held segment goes out at the next wake-up.
    c.write_list("app:r1\napp:r2\n")?;
    let next = c.switch_wal()?;
    c.wait_archived(&next, ARCHIVE_WAIT)?;
    assert!(c.archive.join(&seg).exists());
    Ok(())
}

#[test]
fn one_mib_segments_work_the_same() -> Result<()> {
    let c = start(Options {
        segment_mib: 1,
        ..Options::default()
    });
    let mut last = String::new();
    for _ in 0..4 {
        last = c.switch_wal()?;
    }
    c.wait_archived(&last, ARCHIVE_WAIT)?;
    let archived = c.archived()?;
    expect_contiguous(&archived);
    for name in &archived {
        assert_eq!(fs::metadata(c.archive.join(name))?.len(), 1 << 20, "{name}");
    }
    // The position needed is the segment's end, computed here independently.
    let segno =
        u64::from_str_radix(&last[8..16], 16)? * 4096 + u64::from_str_radix(&last[16..], 16)?;
    let end = (segno + 1) << 20;
    let line = wait_log(&c, &last, "archived")?;
    assert!(
        line.contains(&format!("need_lsn={:X}/{:X}", end >> 32, end & 0xFFFF_FFFF)),
        "{line}"
    );
    assert!(line.contains("bytes=1048576"), "{line}");
    let check = c.walguard(&["check", &last]);
    assert_eq!(check.status.code(), Some(0));
    assert!(
        stdout(&check).contains("wal_segment_size 1 MiB"),
        "{}",
        stdout(&check)
    );
    Ok(())
}

#[test]
fn existing_archive_file_is_never_overwritten() -> Result<()> {
    let c = start(Options::default());
    let seg = c.switch_wal()?;
    c.wait_archived(&seg, ARCHIVE_WAIT)?;
    let wal_path = format!("pg_wal/{seg}");

    // Identical bytes already there: success, logged as `exists`.
    let again = c.walguard(&["archive", &wal_path, &seg]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        c.log_text()
            .lines()
            .any(|l| l.contains(&format!("wal={seg} decision=exists")))
    );

    // Different bytes under the name: exit 2, loud, untouched.
    let other = c.scratch_dir("other-archive")?;
    fs::write(other.join(&seg), b"not this segment")?;
    let out = c.walguard(&[
        "--archive-dir",
        other.to_str().unwrap(),
        "archive",
        &wal_path,
        &seg,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("already exists with different content"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(other.join(&seg))?, b"not this segment");
    let line = c.last_log_line();
    assert!(
        line.contains("level=error") && line.contains("decision=error"),
        "{line}"
    );
    Ok(())
}

#[test]
fn unreachable_database_holds_with_exit_2() -> Result<()> {
    let c = start(Options {
        replicas: 1,
        ..Options::default()
    });
    let seg = c.switch_wal()?;
    c.wait_archived(&seg, ARCHIVE_WAIT)?;
    // An archive directory that exists: the failed run must write nothing into it, even
    // when it began copying a just-finished segment while it asked the server.
    let nowhere = c.scratch_dir("nowhere")?;
    std::fs::File::options()
        .write(true)
        .open(c.primary.data.join("pg_wal").join(&seg))?
        .set_modified(std::time::SystemTime::now())?;
    let out = c.walguard(&[
        "--conninfo",
        "host=127.0.0.1 port=1 user=postgres password=hunter2",
        "--archive-dir",
        nowhere.to_str().unwrap(),
        "archive",
        &format!("pg_wal/{seg}"),
        &seg,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect to the primary (host=127.0.0.1 port=1 user=postgres"),
        "{err}"
    );
    assert!(!err.contains("hunter2") && !c.log_text().contains("hunter2"));
    let left: Vec<String> = fs::read_dir(&nowhere)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|n| n == ".walguard-tmp"), "{left:?}");
    assert_eq!(
        fs::read_dir(nowhere.join(".walguard-tmp"))?.count(),
        0,
        "a temporary file left"
    );
    Ok(())
}

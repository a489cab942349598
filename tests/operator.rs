//! The operator's side on a real primary with two replicas: status, the log summary, the
//! safety valves, the event hook and the process-title fallback.

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::Result;
use cluster::{ARCHIVE_WAIT, Cluster, Options, output_text, wait_for};
use serde_json::Value;

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

fn start() -> Result<Cluster> {
    let c = Cluster::start(WALGUARD.as_ref(), Options::default())?;
    // Let the archiver finish the segments the base backups produced before the test starts.
    let first = c.switch_wal()?;
    c.wait_archived(&first, ARCHIVE_WAIT)?;
    Ok(c)
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", output_text(o)))
}

#[test]
fn status_and_log_follow_an_outage() -> Result<()> {
    let c = start()?;
    let healthy = c.walguard(&["status"]);
    assert_eq!(healthy.status.code(), Some(0), "{}", output_text(&healthy));
    assert!(
        output_text(&healthy).starts_with("verdict: archiving flowing"),
        "{}",
        output_text(&healthy)
    );
    let j = json(&c.walguard(&["status", "--json"]));
    assert_eq!(j["verdict"]["state"], "flowing");
    assert_eq!(j["replicas"].as_array().unwrap().len(), 2);
    assert!(
        j["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["connected"] == true && r["verdict"] == "past")
    );
    assert_eq!(j["source"], "sql");
    assert!(j["archiver"]["last_archived_wal"].is_string());
    let with_password = c.walguard(&[
        "--conninfo",
        &format!("{} password=hunter2", c.conninfo()),
        "status",
        "--json",
    ]);
    assert_eq!(
        with_password.status.code(),
        Some(0),
        "{}",
        output_text(&with_password)
    );
    assert!(!output_text(&with_password).contains("hunter2"));

    let r2 = c.replica("r2");
    c.stop(r2)?;
    let held: Vec<String> = (0..2).map(|_| c.switch_wal()).collect::<Result<_>>()?;
    c.wait_log_line(&format!("wal={} decision=held", held[0]))?;
    // r1 reports its replay position every second: let it catch up, so only r2 holds.
    c.wait_caught_up(&["r1"])?;
    let down = c.walguard(&["status"]);
    assert_eq!(down.status.code(), Some(1), "{}", output_text(&down));
    let t = output_text(&down);
    assert!(t.starts_with("verdict: held by app:r2 since "), "{t}");
    assert!(t.contains("2 segments, 32 MiB"), "{t}");
    let j = json(&c.walguard(&["status", "--json"]));
    assert_eq!(j["verdict"]["state"], "held");
    assert_eq!(j["verdict"]["held_by"], serde_json::json!(["app:r2"]));
    assert_eq!(j["waiting"]["segments"], 2);
    assert_eq!(j["waiting"]["oldest"], held[0].as_str());
    let r2_view = j["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["entry"] == "app:r2")
        .unwrap()
        .clone();
    assert_eq!(r2_view["connected"], false);
    assert_eq!(r2_view["segments_behind"], 2);
    assert!(
        j["valves"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["tripped"] == false)
    );

    // Hold it a little longer, then let r2 back.
    std::thread::sleep(Duration::from_secs(2));
    c.start_node(r2)?;
    c.wait_streaming(2)?;
    let after = c.switch_wal()?;
    c.wait_archived(&after, ARCHIVE_WAIT)?;

    let log = c.walguard(&["log"]);
    assert_eq!(log.status.code(), Some(0), "{}", output_text(&log));
    let j = json(&c.walguard(&["log", "--json"]));
    assert_eq!(j["state"], "flowing", "{j}");
    assert_eq!(j["unparsable"], 0);
    assert!(j["holds_completed"].as_u64().unwrap() >= 2, "{j}");
    let longest = &j["longest_holds"][0];
    assert!(longest["seconds"].as_u64().unwrap() >= 2, "{j}");
    // r2 held it; r1 too, briefly, if an attempt beat r1's once-a-second position report.
    assert!(
        longest["blame"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("app:r2")),
        "{j}"
    );
    assert!(
        j["per_replica"]["app:r2"]["holds"].as_u64().unwrap() >= 2,
        "{j}"
    );
    assert!(
        output_text(&log).contains("current state: flowing"),
        "{}",
        output_text(&log)
    );
    Ok(())
}

#[test]
fn valves_release_a_dead_replica_and_the_hook_runs_once_per_event() -> Result<()> {
    let c = start()?;
    let events = c.base.join("events");
    let hook = format!(
        "on_event = 'echo \"$WALGUARD_EVENT $WALGUARD_WAL $WALGUARD_REPLICAS\" >> {}'\n",
        events.display()
    );
    c.write_config(&hook)?;
    c.stop(c.replica("r2"))?;
    let seg = c.switch_wal()?;
    c.wait_log_line(&format!("wal={seg} decision=held"))?;
    // The archiver retries three times a second apart: one `held` event, not three.
    let held_line = format!("wal={seg} decision=held");
    wait_for("three attempts", ARCHIVE_WAIT, || {
        Ok((c
            .log_text()
            .lines()
            .filter(|l| l.contains(&held_line))
            .count()
            >= 3)
            .then_some(()))
    })?;
    // One event; it names r2 (and r1 too if the first attempt beat r1's position report).
    let held_events = fs::read_to_string(&events)?;
    assert_eq!(held_events.lines().count(), 1, "{held_events}");
    assert!(
        held_events.starts_with(&format!("held {seg} app:r2")),
        "{held_events}"
    );

    // max_hold of 1s: the next attempt archives it anyway.
    c.write_config(&format!("{hook}max_hold = \"1s\"\n"))?;
    c.switch_wal()?; // wakes the archiver
    let line = c.wait_log_line(&format!("wal={seg} decision=valve"))?;
    assert!(
        line.contains("level=warn") && line.contains("valve=max_hold"),
        "{line}"
    );
    assert!(
        line.contains("advice=\"app:r2 will need this segment from the archive"),
        "{line}"
    );
    assert!(c.archive.join(&seg).exists());
    assert!(fs::read_to_string(&events)?.contains(&format!("valve {seg} app:r2\n")));
    c.write_config(&hook)?;

    // min_free and max_retained, by hand into another directory.
    let pending = c.switch_wal()?;
    let other = c.scratch_dir("manual")?;
    let manual = |flags: &[&str]| {
        let mut args = flags.to_vec();
        args.extend(["--archive-dir", other.to_str().unwrap(), "archive"]);
        let path = format!("pg_wal/{pending}");
        args.extend([path.as_str(), pending.as_str()]);
        c.walguard(&args)
    };
    let out = manual(&["--min-free", "100%"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(c.last_log_line().contains("decision=valve valve=min_free"));
    fs::remove_file(other.join(&pending))?;
    let out = manual(&["--max-retained", "1MiB"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        c.last_log_line()
            .contains("decision=valve valve=max_retained")
    );
    let valve_events = fs::read_to_string(&events)?
        .matches(&format!("valve {pending} app:r2"))
        .count();
    assert_eq!(valve_events, 2);

    // A failing or hanging hook never changes the verdict.
    let out = manual(&["--on-event", "exit 3", "--min-free", "100%"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(c.last_log_line().contains("hook=\"failed: exit status 3\""));
    fs::remove_file(other.join(&pending))?;
    let started = Instant::now();
    let out = manual(&[
        "--on-event",
        "sleep 60",
        "--timeout",
        "3s",
        "--min-free",
        "100%",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    let last = c.last_log_line();
    assert!(
        last.contains("decision=valve") && last.contains("hook=\"killed after"),
        "{last}"
    );
    Ok(())
}

#[test]
fn process_titles_decide_when_the_database_cannot_be_asked() -> Result<()> {
    let c = start()?;
    c.write_list("127.0.0.1\n127.0.0.1\n")?;
    let seg = c.switch_wal()?;
    c.wait_archived(&seg, ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1", "r2"])?;
    let wrong = ["--conninfo", "host=127.0.0.1 port=1 user=postgres"];
    let ask = |extra: &[&str]| {
        let mut args = wrong.to_vec();
        args.extend_from_slice(extra);
        args.extend(["check", seg.as_str()]);
        c.walguard(&args)
    };
    let sql_only = ask(&[]);
    assert_eq!(
        sql_only.status.code(),
        Some(2),
        "{}",
        output_text(&sql_only)
    );
    let auto = ask(&["--source", "auto"]);
    assert_eq!(auto.status.code(), Some(0), "{}", output_text(&auto));
    assert!(
        output_text(&auto).contains("positions from walsender process titles"),
        "{}",
        output_text(&auto)
    );

    // An archive by hand records the source in the log.
    let other = c.scratch_dir("manual")?;
    let out = c.walguard(&[
        wrong[0],
        wrong[1],
        "--source",
        "ps",
        "--archive-dir",
        other.to_str().unwrap(),
        "archive",
        &format!("pg_wal/{seg}"),
        &seg,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(c.last_log_line().contains("source=ps"));

    // A server that accepts and never answers: SQL is abandoned at half the timeout, and
    // the titles still decide within it.
    let hung = std::net::TcpListener::bind("127.0.0.1:0")?;
    let hung_port = hung.local_addr()?.port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hung.incoming() {
            held.push(conn);
        }
    });
    let started = Instant::now();
    let out = c.walguard(&[
        "--conninfo",
        &format!("host=127.0.0.1 port={hung_port} user=postgres connect_timeout=60"),
        "--source",
        "auto",
        "--timeout",
        "6s",
        "check",
        &seg,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("positions from walsender process titles"),
        "{}",
        output_text(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );

    // A base backup's walsender is no replica, in the titles too.
    let backup = c.base.join("slow-backup");
    let mut basebackup = c
        .as_server_user(&c.bindir.join("pg_basebackup"))
        .args([
            "-D",
            backup.to_str().unwrap(),
            "-X",
            "none",
            "-c",
            "fast",
            "--max-rate=32k",
        ])
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &c.primary.port.to_string(),
            "-U",
            "postgres",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    wait_for(
        "the base backup's walsender",
        Duration::from_secs(30),
        || {
            let n = c.query("SELECT count(*) FROM pg_stat_replication WHERE state = 'backup'")?;
            Ok((n.as_deref() == Some("1")).then_some(()))
        },
    )?;
    // The backup's checkpoint may have recycled `seg`: decide about a newer segment.
    let newer = c.switch_wal()?;
    c.wait_caught_up(&["r1", "r2"])?;
    // A walsender retitles itself after each send: the titles may trail what
    // pg_stat_replication already shows for a moment.
    let check = || c.walguard(&[wrong[0], wrong[1], "--source", "ps", "check", &newer]);
    let mut during = check();
    let deadline = Instant::now() + Duration::from_secs(15);
    while during.status.code() != Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        during = check();
    }
    let _ = basebackup.kill();
    let _ = basebackup.wait();
    assert_eq!(during.status.code(), Some(0), "{}", output_text(&during));
    assert!(
        !output_text(&during).contains("UNLISTED"),
        "{}",
        output_text(&during)
    );

    // One replica down: the titles show one walsender from 127.0.0.1, the list wants two.
    c.stop(c.replica("r2"))?;
    let held = c.walguard(&[wrong[0], wrong[1], "--source", "ps", "check", &newer]);
    assert_eq!(held.status.code(), Some(1), "{}", output_text(&held));
    assert!(
        output_text(&held).contains("replica 127.0.0.1 not connected"),
        "{}",
        output_text(&held)
    );
    Ok(())
}

/// `promtool check metrics` (Debian package prometheus) on an exposition; its complaints.
fn promtool(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: install the Debian package prometheus (.ci/run does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected:\n{text}\n{}",
        output_text(&out)
    );
    output_text(&out)
}

#[test]
fn prometheus_metrics_from_status_and_from_every_archive_pass_promtool() -> Result<()> {
    let c = start()?;
    let metrics = c.base.join("walguard.prom");
    c.write_config(&format!("metrics_file = \"{}\"\n", metrics.display()))?;
    let seg = c.switch_wal()?;
    c.wait_archived(&seg, ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1", "r2"])?;
    let file = fs::read_to_string(&metrics)?;
    let lint = promtool(&file);
    assert!(lint.trim().is_empty(), "promtool lint: {lint}");
    // Released: archived now, or (held on a first attempt, before the replicas reported,
    // and archived ahead then) found identical.
    assert!(
        file.contains("walguard_last_decision_timestamp_seconds{decision=\"archived\"} ")
            || file.contains("walguard_last_decision_timestamp_seconds{decision=\"exists\"} "),
        "{file}"
    );
    for want in [
        "walguard_up 1\n",
        "walguard_held 0\n",
        "walguard_replica_connected{replica=\"app:r1\"} 1\n",
        "walguard_replica_connected{replica=\"app:r2\"} 1\n",
        "walguard_valve_tripped{valve=\"min_free\"} 0\n",
    ] {
        assert!(file.contains(want), "no {want:?} in\n{file}");
    }
    let status = c.walguard(&["status", "--format", "prometheus"]);
    assert_eq!(status.status.code(), Some(0), "{}", output_text(&status));
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    promtool(&text);
    assert!(
        text.contains("walguard_held 0\n") && text.contains("walguard_waiting_segments 0\n"),
        "{text}"
    );
    // node_exporter runs as another user: the file the archiver wrote (under
    // PostgreSQL's umask 077) must be readable by it.
    let read = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(&metrics)
        .output()?;
    assert!(
        read.status.success() && String::from_utf8_lossy(&read.stdout) == file,
        "another user cannot read {}: {}",
        metrics.display(),
        output_text(&read)
    );
    // A backup label (no segment: nothing observed) keeps the gauges as they were.
    c.base_backup("backup")?;
    // Archived now, or archived ahead while the segment before it was held (its release
    // then finds it there).
    let line = c.wait_log_line(".backup decision=")?;
    assert!(
        line.contains("decision=archived") || line.contains("decision=exists"),
        "{line}"
    );
    let file = fs::read_to_string(&metrics)?;
    promtool(&file);
    for want in [
        "walguard_up 1\n",
        "walguard_replica_connected{replica=\"app:r2\"} 1\n",
    ] {
        assert!(
            file.contains(want),
            "after a backup label: no {want:?} in\n{file}"
        );
    }

    // r2 down: the next archive rewrites the file with the hold.
    c.stop(c.replica("r2"))?;
    let held = c.switch_wal()?;
    c.wait_log_line(&format!("wal={held} decision=held"))?;
    let file = fs::read_to_string(&metrics)?;
    promtool(&file);
    for want in [
        "walguard_held 1\n",
        "walguard_replica_connected{replica=\"app:r2\"} 0\n",
        "walguard_waiting_segments 1\n",
        "walguard_last_decision_timestamp_seconds{decision=\"held\"} ",
        // Held, but archived ahead: the archive is no more than a segment behind.
        "walguard_archive_behind_bytes ",
    ] {
        assert!(file.contains(want), "no {want:?} in\n{file}");
    }
    let behind: u64 = file
        .lines()
        .find_map(|l| l.strip_prefix("walguard_archive_behind_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        behind < 16 << 20,
        "the archive trails by {behind} bytes while held"
    );
    let status = c.walguard(&["status", "--format", "prometheus"]);
    assert_eq!(status.status.code(), Some(1), "{}", output_text(&status));
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    promtool(&text);
    assert!(
        text.contains("walguard_held 1\n")
            && text.contains("walguard_replica_connected{replica=\"app:r2\"} 0\n"),
        "{text}"
    );
    // Unreachable: still an exposition, with walguard_up 0.
    let down = c.walguard(&[
        "--conninfo",
        "host=127.0.0.1 port=1 user=postgres",
        "status",
        "--format",
        "prometheus",
    ]);
    assert_eq!(down.status.code(), Some(2));
    let text = String::from_utf8_lossy(&down.stdout).into_owned();
    promtool(&text);
    assert!(text.contains("walguard_up 0\n"), "{text}");
    Ok(())
}

#[test]
fn events_follow_walguards_own_outcomes() -> Result<()> {
    let c = start()?;
    let events = c.base.join("events");
    let hook = format!(
        "on_event = 'echo \"$WALGUARD_EVENT $WALGUARD_WAL\" >> {}'\n",
        events.display()
    );
    c.write_config(&hook)?;
    // The first attempt at a segment fails (the list is unreadable), then it is held: the
    // hold is a first hold, whatever PostgreSQL's last_failed_wal says.
    let list = fs::read_to_string(&c.list)?;
    fs::write(&c.list, "10.0.0.1 10.0.0.2\n")?; // not a valid list
    c.stop(c.replica("r2"))?;
    let seg = c.switch_wal()?;
    c.wait_log_line(&format!("wal={seg} decision=error"))?;
    c.write_list(&list)?;
    c.switch_wal()?; // wakes the archiver
    c.wait_log_line(&format!("wal={seg} decision=held"))?;
    wait_for("the held event", ARCHIVE_WAIT, || {
        Ok(fs::read_to_string(&events)
            .unwrap_or_default()
            .contains(&format!("held {seg}"))
            .then_some(()))
    })?;
    // r2 returns: the release of a held segment is an event, once.
    c.start_node(c.replica("r2"))?;
    c.wait_streaming(2)?;
    c.switch_wal()?;
    // Archived ahead while held: released as the identical file already there.
    c.wait_log_line(&format!("wal={seg} decision=exists"))?;
    let text = fs::read_to_string(&events)?;
    assert_eq!(
        text.matches(&format!("released {seg}")).count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches(&format!("held {seg}")).count(), 1, "{text}");
    // A segment that errs and is then archived was never held: no released event (by
    // hand, with a log of its own, so the archiver's own attempts do not mix in).
    c.wait_caught_up(&["r1", "r2"])?;
    let next = c.switch_wal()?;
    c.wait_archived(&next, ARCHIVE_WAIT)?;
    let other = c.scratch_dir("manual")?;
    let own_log = c.base.join("manual.log");
    fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o500))?;
    let run = |dir: &std::path::Path| {
        c.walguard(&[
            "--log-file",
            own_log.to_str().unwrap(),
            "--archive-dir",
            dir.to_str().unwrap(),
            "archive",
            &format!("pg_wal/{next}"),
            &next,
        ])
    };
    let before = fs::read_to_string(&events)?;
    assert_eq!(run(&other).status.code(), Some(2));
    fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let out = run(&other);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(
        fs::read_to_string(&events)?,
        before,
        "an event after an error and an archive"
    );
    Ok(())
}

#[test]
fn a_just_finished_segment_that_is_held_leaves_nothing_behind() -> Result<()> {
    let c = start()?;
    c.stop(c.replica("r2"))?;
    let seg = c.switch_wal()?;
    c.wait_log_line(&format!("wal={seg} decision=held"))?;
    let dest = c.scratch_dir("fresh")?;
    // Just finished: the copy starts while the server is asked. With archive_ahead off it
    // is dropped on a hold; by default it is committed ahead of the acknowledgement.
    for (ahead, kept) in [("false", false), ("true", true)] {
        fs::File::options()
            .write(true)
            .open(c.primary.data.join("pg_wal").join(&seg))?
            .set_modified(std::time::SystemTime::now())?;
        let out = c.walguard(&[
            "--archive-dir",
            dest.to_str().unwrap(),
            "--archive-ahead",
            ahead,
            "archive",
            &format!("pg_wal/{seg}"),
            &seg,
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
        assert_eq!(dest.join(&seg).exists(), kept, "archive_ahead = {ahead}");
        assert_eq!(
            fs::read_dir(dest.join(".walguard-tmp"))?.count(),
            0,
            "the staged copy was left behind"
        );
    }
    assert!(
        fs::read(dest.join(&seg))? == fs::read(c.primary.data.join("pg_wal").join(&seg))?,
        "the copy ahead differs"
    );
    Ok(())
}

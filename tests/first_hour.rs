//! What an operator hits in the first hour, on a real primary with two streaming
//! replicas: a status that must not say "flowing" when archiving is about to hold or is
//! failing, hints that name the right role, names that do not resolve, the wrong server
//! asked, runs as root, and lists far longer than a screen.

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use anyhow::Result;
use cluster::{ARCHIVE_WAIT, Cluster, Options, output_text, wait_for};
use serde_json::Value;

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

fn start(opts: Options) -> Result<Cluster> {
    let c = Cluster::start(WALGUARD.as_ref(), opts)?;
    let first = c.switch_wal()?;
    c.wait_archived(&first, ARCHIVE_WAIT)?;
    Ok(c)
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", output_text(o)))
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|t| t.len() >= 20 && &t[10..11] == "T" && t.ends_with('Z'))
}

#[test]
fn status_says_will_hold_held_and_failing_not_flowing() -> Result<()> {
    let c = start(Options::default())?;
    c.wait_caught_up(&["r1", "r2"])?;
    let ok = c.walguard(&["status"]);
    assert_eq!(ok.status.code(), Some(0), "{}", output_text(&ok));
    let j = json(&c.walguard(&["status", "--json"]));
    assert_eq!(j["verdict"]["state"], "flowing");
    assert!(is_rfc3339_utc(&j["archiver"]["last_archived_time"]), "{j}");

    // Nothing waits, but a listed replica is missing: the next segment will be held.
    c.write_list("app:r1\napp:r2\napp:r9\n")?;
    let will = c.walguard(&["status"]);
    assert_eq!(will.status.code(), Some(1), "{}", output_text(&will));
    let text = output_text(&will);
    assert!(
        text.starts_with("verdict: will hold: ") && text.contains("replica app:r9 not connected"),
        "{text}"
    );
    let j = json(&c.walguard(&["status", "--json"]));
    assert_eq!(j["verdict"]["state"], "will_hold");
    assert_eq!(j["verdict"]["held_by"], serde_json::json!(["app:r9"]));
    c.write_list("app:r1\napp:r2\n")?;

    // The archive directory turns unwritable: every attempt fails, and status says so.
    fs::set_permissions(&c.archive, fs::Permissions::from_mode(0o500))?;
    let seg = c.switch_wal()?;
    c.wait_log_line(&format!("wal={seg} decision=error"))?;
    let failing = c.walguard(&["status"]);
    assert_eq!(failing.status.code(), Some(2), "{}", output_text(&failing));
    assert!(
        output_text(&failing).starts_with("verdict: archiving fails: the last attempt"),
        "{}",
        output_text(&failing)
    );
    assert_eq!(
        json(&c.walguard(&["status", "--json"]))["verdict"]["state"],
        "failing"
    );
    let log = c.walguard(&["log"]);
    assert!(
        output_text(&log).contains("current state: failing"),
        "{}",
        output_text(&log)
    );
    // Fixed: archiving resumes and status flows again.
    fs::set_permissions(&c.archive, fs::Permissions::from_mode(0o700))?;
    let next = c.switch_wal()?;
    c.wait_archived(&next, ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1", "r2"])?;
    let back = c.walguard(&["status"]);
    assert_eq!(back.status.code(), Some(0), "{}", output_text(&back));
    // archive_command switched off: nothing reaches the archive, whatever the replicas.
    c.query("ALTER SYSTEM SET archive_command = ''")?;
    c.query("SELECT pg_reload_conf()")?;
    wait_for("the reload", std::time::Duration::from_secs(10), || {
        Ok((c.query("SHOW archive_command")?.as_deref() == Some("")).then_some(()))
    })?;
    let off = c.walguard(&["status"]);
    assert_eq!(off.status.code(), Some(2), "{}", output_text(&off));
    assert!(
        output_text(&off)
            .starts_with("verdict: archiving is not configured: archive_command is not set"),
        "{}",
        output_text(&off)
    );
    Ok(())
}

#[test]
fn the_pg_monitor_hint_names_the_role_walguard_connects_as() -> Result<()> {
    let c = start(Options::default())?;
    c.query("CREATE ROLE walguard_role LOGIN")?;
    let conninfo = format!(
        "host={} port={} user=walguard_role dbname=postgres",
        c.base.display(),
        c.primary.port
    );
    let seg = c.switch_wal()?;
    c.wait_archived(&seg, ARCHIVE_WAIT)?;
    let check = c.walguard(&["--conninfo", &conninfo, "check", &seg]);
    assert_eq!(check.status.code(), Some(1), "{}", output_text(&check));
    let text = output_text(&check);
    assert!(
        text.contains(
            "the role walguard_role lacks pg_monitor (GRANT pg_monitor TO walguard_role)"
        ),
        "{text}"
    );
    assert!(!text.contains("GRANT pg_monitor TO postgres"), "{text}");
    assert!(
        !text.contains("from local socket"),
        "TCP replicas are hidden, not on the socket: {text}"
    );
    let status = c.walguard(&["--conninfo", &conninfo, "status"]);
    assert_eq!(status.status.code(), Some(1), "{}", output_text(&status));
    let text = output_text(&status);
    assert!(text.starts_with("verdict: will hold: "), "{text}");
    assert!(!text.contains("held by  "), "an empty culprit: {text}");
    // The grant fixes it, as the hint says.
    c.query("GRANT pg_monitor TO walguard_role")?;
    let check = c.walguard(&["--conninfo", &conninfo, "check", &seg]);
    assert_eq!(check.status.code(), Some(0), "{}", output_text(&check));
    Ok(())
}

#[test]
fn an_unresolvable_name_holds_the_segment_and_the_valves_still_act() -> Result<()> {
    let c = start(Options::default())?;
    c.write_list("app:r1\napp:r2\nretired-replica.invalid\n")?;
    let seg = c.switch_wal()?;
    let line = c.wait_log_line(&format!("wal={seg} decision=held"))?;
    assert!(
        line.contains("replica retired-replica.invalid not connected: host name \\\"retired-replica.invalid\\\" does not resolve"),
        "{line}"
    );
    assert!(line.contains("blame=retired-replica.invalid"), "{line}");
    // PostgreSQL's own log says why, though the decision line went to log_file.
    wait_for("the hold in the server log", ARCHIVE_WAIT, || {
        Ok(c.server_log(&c.primary)
            .contains(&format!(
                "walguard: held {seg}: replica retired-replica.invalid not connected"
            ))
            .then_some(()))
    })?;
    c.write_config("max_hold = \"1s\"\n")?;
    c.switch_wal()?; // wakes the archiver
    let line = c.wait_log_line(&format!("wal={seg} decision=valve"))?;
    assert!(line.contains("valve=max_hold"), "{line}");
    assert!(c.archive.join(&seg).exists());
    Ok(())
}

#[test]
fn the_server_asked_must_be_the_one_whose_pg_wal_this_is() -> Result<()> {
    let c = start(Options {
        replicas: 1,
        ..Options::default()
    })?;
    // Every line carries the cluster's system identifier.
    let sysid = c
        .query("SELECT system_identifier FROM pg_control_system()")?
        .unwrap();
    assert!(
        c.log_text()
            .lines()
            .all(|l| l.contains(&format!(" sysid={sysid} "))),
        "{}",
        c.log_text()
    );
    // A second cluster, never started, with the same archive_command's settings.
    let data = c.other_cluster("other")?;
    let seg = "000000010000000000000001";
    let out = c
        .as_server_user(&c.walguard)
        .arg("--config")
        .arg(&c.config)
        .args(["archive", &format!("pg_wal/{seg}"), seg])
        .current_dir(&data)
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let text = output_text(&out);
    assert!(
        text.contains(&format!(
            "the server at conninfo has system identifier {sysid}"
        )) && text.contains("is asking another cluster"),
        "{text}"
    );
    // Another server of the same cluster (its replica), asking the primary: the same
    // system identifier, but not the same pg_control.
    let r1 = c.replica("r1");
    let theirs = fs::read_dir(r1.data.join("pg_wal"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.len() == 24)
        .expect("a segment in the replica's pg_wal");
    let out = c
        .as_server_user(&c.walguard)
        .arg("--config")
        .arg(&c.config)
        .args(["archive", &format!("pg_wal/{theirs}"), &theirs])
        .current_dir(&r1.data)
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(
            "the server at conninfo is a primary, but this data directory's server is in recovery"
        ),
        "{}",
        output_text(&out)
    );
    // Asked, the standby explains its own decision: a standby acknowledges only what
    // the archive holds (and checks only the lines that stream from it).
    let standby = format!(
        "host={} port={} user=postgres dbname=postgres",
        c.base.display(),
        c.replica("r1").port
    );
    let check = c.walguard(&["--conninfo", &standby, "check", seg]);
    assert_eq!(check.status.code(), Some(0), "{}", output_text(&check));
    assert!(
        output_text(&check)
            .contains("a standby: it acknowledges a file only once the archive holds it")
            && output_text(&check).contains("verdict: ACKNOWLEDGE"),
        "{}",
        output_text(&check)
    );
    // Promoted, r1 is a primary too, and still not the one asked: its pg_control differs.
    c.promote(r1)?;
    wait_for(
        "r1 to be promoted",
        std::time::Duration::from_secs(60),
        || {
            Ok(
                (c.query_on(r1, "SELECT pg_is_in_recovery()")?.as_deref() == Some("f"))
                    .then_some(()),
            )
        },
    )?;
    c.query_on(r1, "CHECKPOINT")?;
    let out = c
        .as_server_user(&c.walguard)
        .arg("--config")
        .arg(&c.config)
        .args(["archive", &format!("pg_wal/{theirs}"), &theirs])
        .current_dir(&r1.data)
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out)
            .contains("is not the one running this archive_command: its pg_control says"),
        "{}",
        output_text(&out)
    );
    Ok(())
}

#[test]
fn root_is_refused_and_a_root_owned_temp_area_is_explained() -> Result<()> {
    if !Command::new("id")
        .arg("-u")
        .output()?
        .stdout
        .starts_with(b"0\n")
    {
        // CI runs the tests as root: there, skipping would be a test that cannot fail.
        anyhow::ensure!(
            std::env::var_os("WALGUARD_REQUIRE_ROOT").is_none(),
            "WALGUARD_REQUIRE_ROOT is set but the tests do not run as root"
        );
        eprintln!("not root: nothing to refuse");
        return Ok(());
    }
    let c = start(Options {
        replicas: 1,
        ..Options::default()
    })?;
    let seg = c.switch_wal()?;
    c.wait_archived(&seg, ARCHIVE_WAIT)?;
    let as_root = |args: &[&str]| -> Result<Output> {
        Ok(Command::new(&c.walguard)
            .arg("--config")
            .arg(&c.config)
            .args(args)
            .current_dir(&c.primary.data)
            .stdin(Stdio::null())
            .output()?)
    };
    let out = as_root(&["archive", &format!("pg_wal/{seg}"), &seg])?;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(&format!(
            "walguard archive is running as root, but {} belongs to postgres",
            c.primary.data.display()
        )) && output_text(&out).contains("runuser -u postgres"),
        "{}",
        output_text(&out)
    );
    // check and status write nothing: root may run them.
    assert_eq!(as_root(&["check", &seg])?.status.code(), Some(0));
    // A temp area left behind by root: the message says whose it is and what to run.
    let tmp = c.archive.join(".walguard-tmp");
    fs::remove_dir_all(&tmp)?;
    fs::create_dir(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))?;
    let next = c.switch_wal()?;
    c.wait_caught_up(&["r1"])?;
    let out = c.walguard(&["archive", &format!("pg_wal/{next}"), &next]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("belongs to root (uid 0), but walguard runs as postgres")
            && output_text(&out).contains("chown -R postgres"),
        "{}",
        output_text(&out)
    );
    Ok(())
}

#[test]
fn a_thousand_line_list_keeps_lines_and_screens_readable() -> Result<()> {
    let c = start(Options::default())?;
    let list: String = ["app:r1".to_string(), "app:r2".to_string()]
        .into_iter()
        .chain((3..=1000).map(|i| format!("app:missing{i}")))
        .map(|l| l + "\n")
        .collect();
    c.write_list(&list)?;
    let seg = c.switch_wal()?;
    let line = c.wait_log_line(&format!("wal={seg} decision=held"))?;
    assert!(line.len() < 2500, "a {}-byte log line", line.len());
    // 998 missing, and r1 too if the attempt beat its position report.
    assert!(
        line.contains(" more\" ") && line.contains(" blame_more=96"),
        "{line}"
    );
    let check = c.walguard(&["check", &seg]);
    assert_eq!(check.status.code(), Some(1));
    let lines = output_text(&check).lines().count();
    assert!(lines < 80, "a {lines}-line check: {}", output_text(&check));
    assert!(
        output_text(&check).contains("  - and 97"),
        "{}",
        output_text(&check)
    );
    let j = json(&c.walguard(&["status", "--json"]));
    assert_eq!(
        j["replicas"].as_array().unwrap().len(),
        1000,
        "JSON lists them all"
    );
    let log = json(&c.walguard(&["log", "--json"]));
    assert!(
        log["open_holds"][0]["blame"].as_array().unwrap().len() >= 32
            && log["open_holds"][0]["blame_more"].as_u64().unwrap() >= 966,
        "{log}"
    );
    let text = output_text(&c.walguard(&["log"]));
    assert!(
        text.contains(" more "),
        "the log summary hides how many: {text}"
    );
    Ok(())
}

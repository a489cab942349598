//! walguard as the gate in front of a real pgBackRest (Debian package pgbackrest), and the
//! WAL header check, on a real primary with two streaming replicas: pgBackRest is called
//! only for segments every replica has passed, `archive-get` returns them byte-identical,
//! a failing push is exit 2 with pgBackRest's reason, and no segment from another cluster
//! or a zeroed file ever leaves pg_wal.

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cluster::{ARCHIVE_WAIT, Cluster, Options, output_text};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

fn pgbackrest() -> PathBuf {
    let path = PathBuf::from("/usr/bin/pgbackrest");
    assert!(
        path.is_file(),
        "pgbackrest not found: install the Debian package pgbackrest (.ci/run does)"
    );
    path
}

/// A pgBackRest stanza `main` on a local repository inside the cluster's directory.
fn stanza(c: &Cluster) -> Result<PathBuf> {
    let dir = c.scratch_dir("pgbackrest")?;
    let conf = dir.join("pgbackrest.conf");
    fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={0}/repo\nrepo1-retention-full=2\nlock-path={0}/lock\nlog-path={0}/log\nlog-level-console=off\n\
             log-level-stderr=error\nlog-level-file=off\n[main]\npg1-path={1}\npg1-socket-path={2}\npg1-port={3}\npg1-user=postgres\n",
            dir.display(),
            c.primary.data.display(),
            c.base.display(),
            c.primary.port
        ),
    )?;
    c.chown(&dir)?;
    let out = c
        .as_server_user(&pgbackrest())
        .arg(format!("--config={}", conf.display()))
        .args(["--stanza=main", "stanza-create"])
        .output()?;
    anyhow::ensure!(out.status.success(), "stanza-create: {}", output_text(&out));
    Ok(conf)
}

/// `pgbackrest archive-get NAME`: the segment's bytes from the repository, if it is there.
fn archive_get(c: &Cluster, conf: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let dest = c.scratch_dir("got")?.join(name);
    let _ = fs::remove_file(&dest);
    let out = c
        .as_server_user(&pgbackrest())
        .arg(format!("--config={}", conf.display()))
        .args(["--stanza=main", "archive-get", name])
        .arg(&dest)
        .output()?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(
        fs::read(&dest).context("archive-get said yes but wrote nothing")?,
    ))
}

#[test]
fn pgbackrest_behind_the_gate() -> Result<()> {
    let c = Cluster::start(WALGUARD.as_ref(), Options::default())?;
    let first = c.switch_wal()?;
    c.wait_archived(&first, ARCHIVE_WAIT)?;
    let conf = stanza(&c)?;
    let via = format!(
        "pgbackrest --config={} --stanza=main archive-push %p",
        conf.display()
    );
    // The hand-off named in archive_command itself (PostgreSQL turns %%p into %p), as
    // pgBackRest's backup and check want to see "pgbackrest" there.
    c.configure(
        &c.primary,
        &format!(
            "archive_command = '{} --config {} --archive-via \"{}\" archive %p %f'",
            c.walguard.display(),
            c.config.display(),
            via.replace("%p", "%%p")
        ),
    )?;

    // Healthy: pushed, and archive-get returns it byte-identical.
    let seg = c.switch_wal()?;
    let line = c.wait_released(&seg)?;
    assert!(line.contains(" via=pgbackrest "), "{line}");
    let original = fs::read(c.primary.data.join("pg_wal").join(&seg))?;
    assert!(
        archive_get(&c, &conf, &seg)? == Some(original),
        "archive-get differs"
    );
    assert!(
        !c.archive.join(&seg).exists(),
        "walguard copied it itself too"
    );

    // r2 stops: held, but pushed ahead: the repository has it while PostgreSQL keeps it
    // for r2 (still .ready, not acknowledged).
    c.stop(c.replica("r2"))?;
    let held = c.switch_wal()?;
    let line = c.wait_log_line(&format!("wal={held} decision=held"))?;
    assert!(
        line.contains(" ahead=1 ") && line.contains(" via=pgbackrest "),
        "{line}"
    );
    let original = fs::read(c.primary.data.join("pg_wal").join(&held))?;
    assert!(
        archive_get(&c, &conf, &held)? == Some(original.clone()),
        "not pushed ahead"
    );
    assert!(c.ready()?.contains(&held), "acknowledged while held");
    let check = c.walguard(&["--archive-via", &via, "check", &held]);
    assert!(
        output_text(&check).contains(&format!("once released, would run: pgbackrest --config={} --stanza=main archive-push 'pg_wal/{held}'", conf.display())),
        "{}",
        output_text(&check)
    );
    // A backup taken while r2 is away: its stop segment reaches the repository ahead, so
    // pgBackRest does not wait for it until archive-timeout.
    let backup = c
        .as_server_user(&pgbackrest())
        .arg(format!("--config={}", conf.display()))
        .args([
            "--stanza=main",
            "--type=full",
            "--archive-timeout=20",
            "backup",
        ])
        .output()?;
    assert!(backup.status.success(), "backup: {}", output_text(&backup));
    // archive_ahead = false: a held segment is never pushed.
    c.write_config("archive_ahead = false\n")?;
    let behind = c.switch_wal()?;
    cluster::wait_for("a held line without ahead", ARCHIVE_WAIT, || {
        Ok(c.log_text()
            .lines()
            .rev()
            .find(|l| l.contains(&format!("wal={held} decision=held")))
            .filter(|l| !l.contains(" ahead="))
            .map(drop))
    })?;
    assert_eq!(
        archive_get(&c, &conf, &behind)?,
        None,
        "pushed while held, with archive_ahead = false"
    );

    // r2 returns: pushed, identical.
    c.start_node(c.replica("r2"))?;
    c.wait_streaming(2)?;
    c.switch_wal()?;
    c.wait_released(&held)?;
    let original = fs::read(c.primary.data.join("pg_wal").join(&held))?;
    assert!(
        archive_get(&c, &conf, &held)? == Some(original),
        "archive-get differs after the hold"
    );

    // A bad stanza: exit 2, and the log line says why, in pgBackRest's words.
    c.wait_caught_up(&["r1", "r2"])?;
    let out = c.walguard(&[
        "--archive-via",
        &format!(
            "pgbackrest --config={} --stanza=nosuch archive-push %p",
            conf.display()
        ),
        "archive",
        &format!("pg_wal/{held}"),
        &held,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    // (The archiver may log a line of its own meanwhile: look for this run's.)
    let line = c
        .log_text()
        .lines()
        .rev()
        .find(|l| l.contains(&format!("wal={held} decision=error")))
        .unwrap_or_default()
        .to_string();
    // pgBackRest's last stderr line (an ERROR or its HINT) follows its exit status.
    assert!(
        line.contains("decision=error")
            && line.contains("archive_via (pgbackrest) did not archive")
            && (line.contains(": ERROR: [") || line.contains(": HINT: ")),
        "{line}"
    );
    Ok(())
}

#[test]
fn no_segment_of_another_cluster_or_zeroed_ever_leaves_pg_wal() -> Result<()> {
    let c = Cluster::start(
        WALGUARD.as_ref(),
        Options {
            replicas: 1,
            ..Options::default()
        },
    )?;
    let seg = c.switch_wal()?;
    c.wait_archived(&seg, ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1"])?;
    // Another initdb: its first segment, handed over under the same name as ours.
    let other = c.other_cluster("other")?;
    let name = "000000010000000000000001";
    let spool = c.scratch_dir("spool")?;
    fs::copy(other.join("pg_wal").join(name), spool.join(name))?;
    c.chown(&spool)?;
    let dest = c.scratch_dir("dest")?;
    let run = |path: &Path, wal: &str| {
        c.walguard(&[
            "--archive-dir",
            dest.to_str().unwrap(),
            "archive",
            path.to_str().unwrap(),
            wal,
        ])
    };
    let out = run(&spool.join(name), name);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let sysid = c
        .query("SELECT system_identifier FROM pg_control_system()")?
        .unwrap();
    assert!(
        output_text(&out).contains(&format!(
            "WAL header field xlp_sysid: expected {sysid}, found "
        )),
        "{}",
        output_text(&out)
    );
    assert!(
        c.last_log_line().contains("xlp_sysid"),
        "{}",
        c.last_log_line()
    );
    // A zeroed file under our latest segment's name.
    fs::write(spool.join(&seg), vec![0u8; 16 << 20])?;
    c.chown(&spool)?;
    let out = run(&spool.join(&seg), &seg);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("WAL header field xlp_magic"),
        "{}",
        output_text(&out)
    );
    assert_eq!(
        fs::read_dir(&dest)?
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name() != ".walguard-tmp"))
            .count(),
        0
    );
    // The real segment, by the same road: archived.
    let out = run(&c.primary.data.join("pg_wal").join(&seg), &seg);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    Ok(())
}

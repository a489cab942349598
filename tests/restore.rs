//! An archive you can restore from, proven on a real cluster: walguard archives a pgbench
//! load compressed, a new server recovers from a base backup to a point in time with
//! `restore_command = 'walguard ... restore %f %p'` and holds exactly the primary's data
//! at that moment; a standby restored from the archive follows a failover onto the new
//! timeline; `verify` finds every kind of damage and calls a clean archive clean; and
//! `restore` refuses bad input without leaving anything half-written.

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use cluster::{ARCHIVE_WAIT, Cluster, Options, output_text, wait_for};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

fn compressed(replicas: usize) -> Result<Cluster> {
    let c = Cluster::start(
        WALGUARD.as_ref(),
        Options {
            replicas,
            extra_config: "compress = \"zstd\"\n".into(),
            ..Options::default()
        },
    )?;
    let first = c.switch_wal()?;
    c.wait_released(&first)?;
    Ok(c)
}

/// The pgbench tables' contents, as one checksum (every row, in key order).
const CHECKSUM: &str = "SELECT md5(
    (SELECT string_agg(a::text, ',' ORDER BY aid) FROM pgbench_accounts a) ||
    (SELECT string_agg(t::text, ',' ORDER BY tid) FROM pgbench_tellers t) ||
    (SELECT string_agg(b::text, ',' ORDER BY bid) FROM pgbench_branches b) ||
    coalesce((SELECT string_agg(h::text, ',' ORDER BY h.mtime, h.tid, h.aid, h.delta) FROM pgbench_history h), ''))";

#[test]
fn point_in_time_recovery_from_a_compressed_archive() -> Result<()> {
    let c = compressed(1)?;
    c.client("pgbench", &["-i", "-s", "2", "-q", "postgres"])?;
    let backup = c.base_backup("backup")?;
    c.client("pgbench", &["-T", "3", "-c", "2", "-n", "postgres"])?;
    // The moment to recover to: no transaction commits around it.
    let want = c.query(CHECKSUM)?.context("no checksum")?;
    std::thread::sleep(Duration::from_millis(1100));
    let target = c.query("SELECT clock_timestamp()")?.context("no time")?;
    std::thread::sleep(Duration::from_millis(1100));
    c.client("pgbench", &["-T", "2", "-c", "2", "-n", "postgres"])?;
    assert_ne!(
        c.query(CHECKSUM)?.as_deref(),
        Some(want.as_str()),
        "the later load changed nothing"
    );
    c.archive_everything()?;
    let zst = fs::read_dir(&c.archive)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".zst"))
        .count();
    assert!(zst >= 3, "only {zst} compressed segments");

    let pitr = c.recovering_server(
        "pitr",
        &backup,
        &format!("recovery_target_time = '{target}'\nrecovery_target_action = 'promote'"),
        false,
    )?;
    c.start_node(&pitr)?;
    c.wait_promoted(
        &pitr,
        "the recovered server to reach its target and promote",
    )?;
    assert_eq!(
        c.query_on(&pitr, CHECKSUM)?.as_deref(),
        Some(want.as_str()),
        "the data at the target differs"
    );
    let restored = c
        .log_text()
        .lines()
        .filter(|l| {
            l.contains("cmd=restore") && l.contains("decision=restored") && l.contains(".zst")
        })
        .count();
    assert!(
        restored >= 3,
        "{restored} segments restored from .zst: {}",
        c.log_text()
    );
    // restore_prefetch (on by default) decompressed segments ahead while the server
    // replayed, and its staging area is gone once recovery ended.
    assert!(
        c.log_text().contains("prefetched=true"),
        "no segment was served from the prefetch area: {}",
        c.log_text()
    );
    wait_gone(&pitr.data.join("pg_wal").join(STAGING))?;
    Ok(())
}

const STAGING: &str = "walguard.prefetch";

fn wait_gone(path: &Path) -> Result<()> {
    wait_for(
        &format!("{} to be removed", path.display()),
        Duration::from_secs(30),
        || Ok((!path.exists()).then_some(())),
    )
}

/// A recovering server killed with -9 while its worker has segments staged: the worker
/// sees its server gone and removes the area, and the server started again recovers
/// every row.
#[test]
fn a_recovering_server_killed_mid_recovery_leaves_no_staging_area() -> Result<()> {
    let c = compressed(0)?;
    c.client("pgbench", &["-i", "-s", "2", "-q", "postgres"])?;
    let backup = c.base_backup("backup")?;
    c.client("pgbench", &["-T", "2", "-c", "2", "-n", "postgres"])?;
    std::thread::sleep(Duration::from_millis(1100));
    let target = c.query("SELECT clock_timestamp()")?.context("no time")?;
    std::thread::sleep(Duration::from_millis(1100));
    // Segments after the target, for the worker to stage while recovery waits there.
    for _ in 0..3 {
        c.client("pgbench", &["-T", "1", "-c", "2", "-n", "postgres"])?;
        c.switch_wal()?;
    }
    let want = c.query(CHECKSUM)?.context("no checksum")?;
    c.archive_everything()?;

    // Paused at the target, in recovery: the worker keeps the segments after it staged.
    let pitr = c.recovering_server(
        "pitr",
        &backup,
        &format!("recovery_target_time = '{target}'\nrecovery_target_action = 'pause'"),
        false,
    )?;
    let area = pitr.data.join("pg_wal").join(STAGING);
    c.start_node(&pitr)?;
    wait_for(
        "recovery to pause at the target",
        Duration::from_secs(120),
        || {
            Ok((c
                .query_on(&pitr, "SELECT pg_get_wal_replay_pause_state()")
                .ok()
                .flatten()
                .as_deref()
                == Some("paused"))
            .then_some(()))
        },
    )
    .with_context(|| c.server_log(&pitr))?;
    wait_for("segments staged ahead", Duration::from_secs(30), || {
        let staged = fs::read_dir(&area).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("00000001"))
                .count()
        });
        Ok((staged > 0).then_some(()))
    })?;
    let postmaster: i32 = fs::read_to_string(pitr.data.join("postmaster.pid"))?
        .lines()
        .next()
        .context("an empty postmaster.pid")?
        .trim()
        .parse()?;
    // SAFETY: kill(2) on the recovering server's postmaster, a process this test started.
    assert_eq!(unsafe { libc::kill(postmaster, libc::SIGKILL) }, 0);
    wait_gone(&area)?;

    // Started again without the target: it recovers to the end and promotes.
    let conf = pitr.data.join("postgresql.auto.conf");
    let text = fs::read_to_string(&conf)?;
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("recovery_target"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&conf, without)?;
    // Its other processes notice their postmaster's death on their own time: until
    // then, a start finds its shared memory still in use.
    wait_for(
        "the killed server to start again",
        Duration::from_secs(60),
        || Ok(c.start_node(&pitr).ok()),
    )
    .with_context(|| c.server_log(&pitr))?;
    c.wait_promoted(&pitr, "the restarted recovery to promote")?;
    assert_eq!(
        c.query_on(&pitr, CHECKSUM)?.as_deref(),
        Some(want.as_str()),
        "the data differs after the crash"
    );
    wait_gone(&area)?;
    Ok(())
}

/// A copy decompressed ahead and left in the staging area by a crash (or a power
/// loss, which may leave a renamed file with lost blocks) must never be served: the
/// area belongs to one start of one server, and a new start empties it. Planted here
/// under the very name a staged copy of the archived file would have, with a damaged
/// record in the middle that its header check cannot see: served, recovery would end
/// early at the damage and the data would differ.
#[test]
fn a_staged_copy_left_by_a_crash_is_never_served() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let c = compressed(0)?;
    c.client("pgbench", &["-i", "-s", "2", "-q", "postgres"])?;
    let backup = c.base_backup("backup")?;
    c.client("pgbench", &["-T", "3", "-c", "2", "-n", "postgres"])?;
    let want = c.query(CHECKSUM)?.context("no checksum")?;
    c.archive_everything()?;
    let mut segments: Vec<String> = fs::read_dir(&c.archive)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 28 && n.ends_with(".zst"))
        .collect();
    segments.sort();
    // The last segment of the load (the newest is the switch that archived it): its
    // third page holds the load's records.
    let victim = &segments[segments.len() - 2];
    let archived = c.archive.join(victim);
    let meta = fs::metadata(&archived)?;
    let name = &victim[..24];
    let key = format!(
        "{name}.{:x}-{:x}-{:x}.{:x}",
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let mut content = zstd::decode_all(fs::File::open(&archived)?)?;
    for b in &mut content[16384 + 512..16384 + 576] {
        *b ^= 0xFF;
    }

    let pitr = c.recovering_server("pitr", &backup, "recovery_target_action = 'promote'", false)?;
    let area = pitr.data.join("pg_wal").join(STAGING);
    fs::create_dir(&area)?;
    fs::write(area.join("owner"), "12345\n/gone\n1700000000")?;
    fs::write(area.join(&key), &content)?;
    fs::write(area.join("want"), name)?;
    c.chown(&pitr.data)?;
    c.start_node(&pitr)?;
    c.wait_promoted(&pitr, "the recovered server to promote")?;
    assert_eq!(
        c.query_on(&pitr, CHECKSUM)?.as_deref(),
        Some(want.as_str()),
        "the data differs: a damaged staged copy was served? {}",
        c.server_log(&pitr)
    );
    let served = c
        .log_text()
        .lines()
        .find(|l| l.contains(&format!("wal={name} ")) && l.contains("decision=restored"))
        .map(str::to_string)
        .context("the victim segment was never restored")?;
    assert!(served.contains("from="), "{served}");
    wait_gone(&area)?;
    Ok(())
}

#[test]
fn a_standby_restored_from_the_archive_follows_a_failover() -> Result<()> {
    let c = compressed(1)?;
    let r1 = c.replica("r1");
    c.archive_from(r1, "", "compress = \"zstd\"\n")?;
    let backup = c.base_backup("backup")?;
    c.query("CREATE TABLE marks (what text); INSERT INTO marks VALUES ('before the failover')")?;
    c.archive_everything()?;
    c.wait_caught_up(&["r1"])?;

    c.stop(&c.primary)?;
    c.promote(r1)?;
    wait_for("the history file in the archive", ARCHIVE_WAIT, || {
        Ok(c.archive.join("00000002.history").exists().then_some(()))
    })?;
    c.query_on(r1, "INSERT INTO marks VALUES ('after the failover')")?;
    c.switch_wal_on(r1)?;
    let last = c.switch_wal_on(r1)?;
    assert!(last.starts_with("00000002"), "{last}");
    c.wait_released(&last)?;

    // A standby from the old base backup, fed only by the archive (no primary_conninfo).
    let standby = c.recovering_server(
        "restored",
        &backup,
        "hot_standby = on\nrecovery_target_timeline = 'latest'",
        true,
    )?;
    c.start_node(&standby)?;
    wait_for(
        "the restored standby to replay the new timeline",
        Duration::from_secs(120),
        || {
            let seen = c
                .query_on(
                    &standby,
                    "SELECT count(*) FROM marks WHERE what = 'after the failover'",
                )
                .ok()
                .flatten();
            Ok((seen.as_deref() == Some("1")).then_some(()))
        },
    )
    .with_context(|| c.server_log(&standby))?;
    // The row exists only on timeline 2, which the standby restored segment by segment.
    let log = c.server_log(&standby);
    assert!(
        log.contains("restored log file \"00000002.history\" from archive"),
        "{log}"
    );
    assert!(
        log.contains("restored log file \"00000002000000000000000"),
        "{log}"
    );
    // And verify sees both timelines and the history chain as whole.
    let out = c.walguard(&["verify"]);
    let text = output_text(&out);
    assert!(
        text.contains("timeline 1: ") && text.contains("timeline 2: "),
        "{text}"
    );
    assert!(!text.contains("problem:"), "{text}");
    // Without the new timeline's first segment (the one holding the switch point), no
    // server could follow the failover: not clean.
    let dir = archive_copy(&c, "no-switch-segment")?;
    let mut tl2: Vec<String> = fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("00000002") && n.ends_with(".zst"))
        .collect();
    tl2.sort();
    fs::remove_file(dir.join(&tl2[0]))?;
    let out = c.walguard(&["--archive-dir", dir.to_str().unwrap(), "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("a server cannot follow the switch"),
        "{}",
        output_text(&out)
    );
    Ok(())
}

/// PostgreSQL reads every restore_command status from 1 to 125 as "not in the archive"
/// and, in an archive recovery without a target, ends recovery there and promotes: the
/// rest of the archive would be left on a dead timeline. A damaged segment in the middle
/// must stop recovery instead; once the archive is repaired, the same server recovers to
/// the end.
#[test]
fn a_recovery_stops_at_a_damaged_segment_instead_of_promoting_early() -> Result<()> {
    let c = compressed(0)?;
    let backup = c.base_backup("backup")?;
    c.query("CREATE TABLE marks (n int)")?;
    let mut segments = Vec::new();
    for n in 0..4 {
        c.query(&format!("INSERT INTO marks VALUES ({n})"))?;
        segments.push(c.switch_wal()?);
    }
    c.archive_everything()?;
    // The second of them, damaged in the middle of its compressed bytes.
    let damaged = c.archive.join(format!("{}.zst", segments[1]));
    let good = fs::read(&damaged)?;
    let mut bytes = good.clone();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xFF;
    fs::write(&damaged, &bytes)?;

    let pitr = c.recovering_server("pitr", &backup, "", false)?;
    // The server may accept read-only connections for a while; then recovery stops.
    let _ = c.start_node(&pitr);
    wait_for(
        "the recovering server to stop at the damaged segment",
        Duration::from_secs(120),
        || {
            let log = c.server_log(&pitr);
            Ok(
                (log.contains("exit code 200") && log.contains("database system is shut down"))
                    .then_some(()),
            )
        },
    )
    .with_context(|| c.server_log(&pitr))?;
    let log = c.server_log(&pitr);
    assert!(
        !log.contains("selected new timeline ID") && !log.contains("archive recovery complete"),
        "recovery ended early and promoted: {log}"
    );
    assert!(
        log.contains(&segments[1]) && log.contains("recovery STOPS here"),
        "the server log does not say which file and why: {log}"
    );
    assert!(!c.archive.join("00000002.history").exists());

    // Repaired, the same server recovers everything and only then promotes.
    fs::write(&damaged, &good)?;
    c.start_node(&pitr)?;
    c.wait_promoted(&pitr, "the repaired recovery to promote")?;
    assert_eq!(
        c.query_on(&pitr, "SELECT count(*) FROM marks")?.as_deref(),
        Some("4"),
        "not everything was recovered"
    );
    Ok(())
}

/// A server restored from a base backup inherits archive_command, and with it a
/// conninfo that points at the production primary. Promoted to a timeline of its own,
/// it must not write into the production archive: walguard sees that the server it asks
/// is not the one running it, refuses, and says to switch archiving off.
#[test]
fn a_restored_copy_never_archives_into_production() -> Result<()> {
    let c = compressed(0)?;
    let backup = c.base_backup("backup")?;
    c.query("CREATE TABLE marks (n int); INSERT INTO marks VALUES (1)")?;
    c.archive_everything()?;
    // Recovered to the end of the archive, promoted, archive_mode on as it was.
    let copy = c.recovering_server("copy", &backup, "archive_mode = on", false)?;
    c.start_node(&copy)?;
    c.wait_promoted(&copy, "the copy to promote")?;
    let line = c.wait_log_line("wal=00000002.history decision=error")?;
    assert!(
        line.contains("is not the one running this archive_command")
            && line.contains("archive_mode = off"),
        "{line}"
    );
    // Its segments too (the archiver retries the history file first, so ask by hand).
    let theirs = c.switch_wal_on(&copy)?;
    assert!(theirs.starts_with("00000002"), "{theirs}");
    let out = c
        .as_server_user(&c.walguard)
        .current_dir(&copy.data)
        .arg("--config")
        .arg(&c.config)
        .args(["archive", &format!("pg_wal/{theirs}"), &theirs])
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("is not the one running this archive_command"),
        "{}",
        output_text(&out)
    );
    // Production's archive has nothing of the copy's timeline, and stays whole.
    let names: Vec<String> = fs::read_dir(&c.archive)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("00000002")),
        "the copy archived into production: {names:?}"
    );
    let mine = c.switch_wal()?;
    c.wait_released(&mine)?;
    let out = c.walguard(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    // Had the copy's files gone in (as they did before walguard checked), verify would
    // not call the archive clean: no server follows timeline 2.
    let polluted = archive_copy(&c, "polluted")?;
    fs::copy(
        copy.data.join("pg_wal/00000002.history"),
        polluted.join("00000002.history"),
    )?;
    fs::copy(
        copy.data.join("pg_wal").join(&theirs),
        polluted.join(&theirs),
    )?;
    c.chown(&polluted)?;
    let out = c.walguard(&["--archive-dir", polluted.to_str().unwrap(), "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out)
            .contains("timeline 2 is neither the server's timeline 1 nor on its history"),
        "{}",
        output_text(&out)
    );
    Ok(())
}

/// A copy of the archive to damage, owned by the server's user.
fn archive_copy(c: &Cluster, name: &str) -> Result<PathBuf> {
    let dir = c.base.join(name);
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&c.archive)
        .arg(&dir)
        .status()?;
    anyhow::ensure!(copied.success(), "copying the archive");
    Ok(dir)
}

#[test]
fn verify_finds_every_kind_of_damage_and_calls_clean_clean() -> Result<()> {
    let c = compressed(2)?;
    for _ in 0..5 {
        c.switch_wal()?;
    }
    let last = c.archive_everything()?;
    c.wait_caught_up(&["r1", "r2"])?;
    let verify = |dir: &Path| c.walguard(&["--archive-dir", dir.to_str().unwrap(), "verify"]);
    let clean = verify(&c.archive);
    assert_eq!(clean.status.code(), Some(0), "{}", output_text(&clean));
    let text = output_text(&clean);
    assert!(
        text.starts_with("clean: ")
            && text.contains("app:r1 (at ")
            && text.contains("could recover from the archive and pg_wal: yes"),
        "{text}"
    );
    let j: serde_json::Value = serde_json::from_slice(&c.walguard(&["verify", "--json"]).stdout)?;
    assert_eq!(j["clean"], true, "{j}");
    assert!(j["compressed"].as_u64().unwrap() >= 5, "{j}");

    let names: Vec<String> = {
        let mut n: Vec<String> = fs::read_dir(&c.archive)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".zst"))
            .collect();
        n.sort();
        n
    };
    let middle = &names[names.len() / 2];
    let stem = middle.trim_end_matches(".zst").to_string();
    // (what is done to a copy, what verify must say)
    type Damage = Box<dyn Fn(&Path) -> Result<()>>;
    let m = middle.clone();
    let st = stem.clone();
    let cases: Vec<(&str, Damage, String)> = vec![
        (
            "deleted",
            Box::new(move |d: &Path| Ok(fs::remove_file(d.join(&m))?)),
            format!("timeline 1: gap: {stem} is missing"),
        ),
        (
            "corrupted",
            {
                let m = middle.clone();
                Box::new(move |d: &Path| {
                    let mut bytes = fs::read(d.join(&m))?;
                    let at = bytes.len() / 2;
                    bytes[at] ^= 0xFF;
                    Ok(fs::write(d.join(&m), bytes)?)
                })
            },
            format!("{middle}: cannot be read back"),
        ),
        (
            "truncated",
            {
                let st = st.clone();
                let m = middle.clone();
                Box::new(move |d: &Path| {
                    let full = zstd::decode_all(fs::File::open(d.join(&m))?)?;
                    fs::remove_file(d.join(&m))?;
                    Ok(fs::write(d.join(&st), &full[..full.len() / 2])?)
                })
            },
            format!("{stem}: 8388608 bytes, a segment is 16777216"),
        ),
        (
            "twice",
            {
                let st = st.clone();
                let m = middle.clone();
                Box::new(move |d: &Path| {
                    Ok(fs::write(
                        d.join(&st),
                        zstd::decode_all(fs::File::open(d.join(&m))?)?,
                    )?)
                })
            },
            format!("{stem} and {stem}.zst are both in the archive"),
        ),
        (
            "a page header",
            {
                let st = st.clone();
                let m = middle.clone();
                Box::new(move |d: &Path| {
                    let mut full = zstd::decode_all(fs::File::open(d.join(&m))?)?;
                    // The second page's position, as a misplaced page would have it.
                    full[8192 + 8..8192 + 16].copy_from_slice(&u64::MAX.to_ne_bytes());
                    fs::remove_file(d.join(&m))?;
                    Ok(fs::write(d.join(&st), &full)?)
                })
            },
            format!("{stem}: page at byte 8192: WAL header field xlp_"),
        ),
    ];
    for (case, damage, says) in cases {
        let dir = archive_copy(&c, &format!("damaged-{case}"))?;
        damage(&dir)?;
        c.chown(&dir)?;
        let out = verify(&dir);
        assert_eq!(out.status.code(), Some(1), "{case}: {}", output_text(&out));
        assert!(
            output_text(&out).contains(&says),
            "{case}: wanted {says:?} in {}",
            output_text(&out)
        );
    }
    // Another cluster's segment under one of our names.
    let other = c.other_cluster("other")?;
    let dir = archive_copy(&c, "damaged-foreign")?;
    fs::remove_file(dir.join("000000010000000000000001.zst"))?;
    fs::copy(
        other.join("pg_wal/000000010000000000000001"),
        dir.join("000000010000000000000001"),
    )?;
    c.chown(&dir)?;
    let out = verify(&dir);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("000000010000000000000001: WAL header field xlp_sysid"),
        "{}",
        output_text(&out)
    );
    // A missing history file: fake a second timeline's segment.
    let dir = archive_copy(&c, "damaged-history")?;
    let second = format!("00000002{}", &last[8..]);
    fs::copy(
        c.archive.join(format!("{last}.zst")),
        dir.join(format!("{second}.zst")),
    )?;
    c.chown(&dir)?;
    let out = verify(&dir);
    assert!(
        output_text(&out).contains("timeline 2 has segments but no 00000002.history"),
        "{}",
        output_text(&out)
    );
    Ok(())
}

#[test]
fn restore_refuses_bad_input_and_leaves_nothing_half_written() -> Result<()> {
    let c = compressed(1)?;
    let seg = c.switch_wal()?;
    c.wait_released(&seg)?;
    let dest_dir = c.scratch_dir("restored")?;
    let restore = |name: &str, dest: &Path| c.walguard(&["restore", name, dest.to_str().unwrap()]);
    // The normal case: byte-identical to what PostgreSQL wrote.
    let out = restore(&seg, &dest_dir.join("RECOVERYXLOG"));
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        fs::read(dest_dir.join("RECOVERYXLOG"))?
            == fs::read(c.primary.data.join("pg_wal").join(&seg))?
    );
    // Not in the archive: exit 1, quietly.
    let out = restore("00000009.history", &dest_dir.join("RECOVERYHISTORY"));
    assert_eq!(out.status.code(), Some(1));
    assert!(output_text(&out).is_empty(), "{}", output_text(&out));
    // A malformed name, a destination in a missing directory.
    let out = restore("../../etc/passwd", &dest_dir.join("x"));
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("is not a WAL file name"));
    let out = restore(&seg, &dest_dir.join("missing/RECOVERYXLOG"));
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("cannot open"),
        "{}",
        output_text(&out)
    );
    // A damaged .zst: exit 2 naming it, and nothing at %p.
    let broken = c.scratch_dir("broken")?;
    let name = format!("{seg}.zst");
    let mut bytes = fs::read(c.archive.join(&name))?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0xFF;
    fs::write(broken.join(&name), bytes)?;
    c.chown(&broken)?;
    let dest = dest_dir.join("FROM_BROKEN");
    let from_broken = || {
        c.walguard(&[
            "--archive-dir",
            broken.to_str().unwrap(),
            "restore",
            &seg,
            dest.to_str().unwrap(),
        ])
    };
    let out = from_broken();
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(&format!("{}: ", broken.join(&name).display()))
            || output_text(&out).contains(&name),
        "{}",
        output_text(&out)
    );
    assert!(!dest.exists(), "a half-written file at %p");
    assert_eq!(
        fs::read_dir(&dest_dir)?.count(),
        1,
        "temporary files left: {:?}",
        fs::read_dir(&dest_dir)?.collect::<Vec<_>>()
    );
    // An unreadable archive.
    fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o000))?;
    let out = from_broken();
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("Permission denied"),
        "{}",
        output_text(&out)
    );
    assert!(!dest.exists());
    Ok(())
}

//! Faults on a real primary with replicas: kill -9 mid-copy, a full disk, unusable
//! directories and files, a WAL file vanishing mid-run, concurrent runs, a shutdown while
//! segments are held, and a failover. Nothing may be lost, torn, or overwritten.

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use cluster::{ARCHIVE_WAIT, Cluster, Options, is_contiguous, output_text, wait_for};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

fn start() -> Result<(Cluster, String)> {
    let c = Cluster::start(WALGUARD.as_ref(), Options::default())?;
    let seg = c.switch_wal()?;
    c.wait_archived(&seg, ARCHIVE_WAIT)?;
    Ok((c, seg))
}

/// xorshift64*: reproducible randomness without a dependency; the seed is printed.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("rng seed {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// walguard archive into `dest`, as the server's user (the harness's `as_server_user`).
fn archive_cmd(c: &Cluster, dest: &Path, wal_path: &str, name: &str) -> Command {
    let mut cmd = c.as_server_user(&c.walguard);
    cmd.arg("--config")
        .arg(&c.config)
        .arg("--archive-dir")
        .arg(dest)
        .args(["archive", wal_path, name])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn temp_files(dest: &Path) -> usize {
    fs::read_dir(dest.join(".walguard-tmp")).map_or(0, |d| d.count())
}

#[test]
fn kill_9_at_random_points_never_leaves_a_torn_file() -> Result<()> {
    let (c, seg) = start()?;
    let wal_path = format!("pg_wal/{seg}");
    let original = fs::read(c.primary.data.join(&wal_path))?;
    let dest = c.scratch_dir("killed")?;
    let mut rng = Rng::new();
    let (mut mid_run, mut finished_first) = (0, 0);
    for _ in 0..200 {
        // Both paths: a just-finished segment (copy overlapped with the decision) and a retry.
        if rng.below(2) == 0 {
            fs::File::options()
                .write(true)
                .open(c.primary.data.join(&wal_path))?
                .set_modified(SystemTime::now())?;
        }
        let mut child = archive_cmd(&c, &dest, &wal_path, &seg).spawn()?;
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        let exited_already = child.try_wait()?.is_some();
        child.kill()?;
        let status = child.wait()?;
        if exited_already {
            finished_first += 1;
            assert_eq!(status.code(), Some(0));
        } else {
            mid_run += 1;
        }
        let final_file = dest.join(&seg);
        if final_file.exists() {
            assert!(
                fs::read(&final_file)? == original,
                "a torn file under the final name"
            );
            fs::remove_file(&final_file)?;
        }
    }
    eprintln!("kill -9: {mid_run} runs killed mid-run, {finished_first} finished before the kill");
    assert!(
        mid_run >= 50,
        "too few kills landed mid-run ({mid_run}) to mean anything"
    );
    // The next run archives correctly and cleans up what the killed runs left.
    let out = archive_cmd(&c, &dest, &wal_path, &seg).output()?;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(fs::read(dest.join(&seg))? == original);
    let other = c.switch_wal()?;
    c.wait_archived(&other, ARCHIVE_WAIT)?;
    let out = archive_cmd(&c, &dest, &format!("pg_wal/{other}"), &other).output()?;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(
        temp_files(&dest),
        0,
        "temporary files of killed runs were not cleaned up"
    );
    Ok(())
}

/// A small file system for the archive: tmpfs when this process may mount, else `None`.
struct SmallFs(std::path::PathBuf);
impl SmallFs {
    fn mount(at: &Path, mib: u32) -> Option<SmallFs> {
        fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs(at.to_path_buf()))
    }
}
impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_is_exit_2_then_archiving_resumes() -> Result<()> {
    let (c, seg) = start()?;
    let other = c.switch_wal()?;
    c.wait_archived(&other, ARCHIVE_WAIT)?;
    let dest = c.base.join("small");
    let small = SmallFs::mount(&dest, 24);
    c.chown(&dest)?;
    let run = |name: &str, limit: Option<&str>| -> Result<Output> {
        let mut cmd = archive_cmd(&c, &dest, &format!("pg_wal/{name}"), name);
        if let Some(blocks) = limit {
            // No mount allowed: a file-size limit (RLIMIT_FSIZE) stands in for a full disk.
            let mut sh = Command::new("/bin/sh");
            sh.arg("-c")
                .arg(format!("ulimit -f {blocks}; exec \"$@\""))
                .arg("sh")
                .arg(cmd.get_program())
                .args(cmd.get_args())
                .current_dir(&c.primary.data)
                .stdin(Stdio::null());
            cmd = sh;
        }
        Ok(cmd.output()?)
    };
    let limit = if small.is_some() { None } else { Some("8192") }; // 4 MiB
    if small.is_some() {
        let first = run(&seg, None)?;
        assert_eq!(first.status.code(), Some(0), "{}", output_text(&first));
    }
    let full = run(&other, limit)?;
    assert_eq!(full.status.code(), Some(2), "{}", output_text(&full));
    let reason = if small.is_some() {
        "No space left on device"
    } else {
        "File too large"
    };
    assert!(
        output_text(&full).contains(reason),
        "{}",
        output_text(&full)
    );
    let last = c.last_log_line();
    assert!(
        last.contains("decision=error") && last.contains(reason),
        "{last}"
    );
    assert!(
        !dest.join(&other).exists(),
        "a partial file under the final name"
    );
    assert_eq!(
        temp_files(&dest),
        0,
        "the failed copy left its temporary file"
    );
    // Space is freed: archiving resumes.
    if small.is_some() {
        fs::remove_file(dest.join(&seg))?;
    }
    let resumed = run(&other, None)?;
    assert_eq!(resumed.status.code(), Some(0), "{}", output_text(&resumed));
    assert!(fs::read(dest.join(&other))? == fs::read(c.primary.data.join("pg_wal").join(&other))?);
    eprintln!(
        "full disk simulated with {}",
        if small.is_some() {
            "a 24 MiB tmpfs"
        } else {
            "ulimit -f"
        }
    );
    Ok(())
}

#[test]
fn unusable_directories_and_files_are_exit_2_with_the_reason() -> Result<()> {
    let (c, seg) = start()?;
    let wal_path = format!("pg_wal/{seg}");
    // As the server's user, as PostgreSQL runs it (root would ignore permission bits).
    let as_postgres = |extra: &[&str]| -> Result<Output> {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(&c.walguard)
            .arg("--config")
            .arg(&c.config);
        cmd.args(extra).args(["archive", &wal_path, &seg]);
        Ok(cmd
            .current_dir(&c.primary.data)
            .stdin(Stdio::null())
            .output()?)
    };
    let is_root = Command::new("id")
        .arg("-u")
        .output()?
        .stdout
        .starts_with(b"0\n");
    if is_root {
        let read_only = c.base.join("read-only");
        fs::create_dir(&read_only)?; // owned by root, mode 755: postgres cannot write
        let out = as_postgres(&["--archive-dir", read_only.to_str().unwrap()])?;
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        assert!(
            output_text(&out).contains("Permission denied"),
            "{}",
            output_text(&out)
        );
        assert_eq!(fs::read_dir(&read_only)?.count(), 0);
        // A file system mounted read-only (after an I/O error, say): the message says so.
        if let Some(ro) = SmallFs::mount(&c.base.join("ro-fs"), 1) {
            c.chown(&ro.0)?;
            let remounted = Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(&ro.0)
                .status()?;
            assert!(remounted.success());
            let out = as_postgres(&["--archive-dir", ro.0.to_str().unwrap()])?;
            assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
            assert!(
                output_text(&out).contains("mounted read-only: remount it read-write"),
                "{}",
                output_text(&out)
            );
        }

        let hidden = c.base.join("hidden.list");
        fs::write(&hidden, "app:r1\napp:r2\n")?;
        fs::set_permissions(&hidden, fs::Permissions::from_mode(0o600))?;
        let out = as_postgres(&["--replicas", hidden.to_str().unwrap()])?;
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        assert!(
            output_text(&out).contains(&format!(
                "cannot read the replicas list {}",
                hidden.display()
            )),
            "{}",
            output_text(&out)
        );
    }
    let gone = c.base.join("vanished");
    let out = c.walguard(&[
        "--archive-dir",
        gone.to_str().unwrap(),
        "archive",
        &wal_path,
        &seg,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(&format!(
            "{} does not exist: create the archive directory",
            gone.display()
        )),
        "{}",
        output_text(&out)
    );
    assert!(!gone.exists());

    let open_list = c.base.join("open.list");
    fs::write(&open_list, "app:r1\napp:r2\n")?;
    fs::set_permissions(&open_list, fs::Permissions::from_mode(0o666))?;
    let out = c.walguard(&["--replicas", open_list.to_str().unwrap(), "check", &seg]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("writable by every user"),
        "{}",
        output_text(&out)
    );

    // The WAL file vanishes at a random moment: success with the whole file, or exit 2.
    let original = fs::read(c.primary.data.join(&wal_path))?;
    let spool = c.scratch_dir("spool")?;
    let dest = c.scratch_dir("dest")?;
    let mut rng = Rng::new();
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..30 {
        let src = spool.join(&seg);
        fs::write(&src, &original)?;
        let child = archive_cmd(&c, &dest, src.to_str().unwrap(), &seg).spawn()?;
        std::thread::sleep(Duration::from_micros(rng.below(15_000)));
        fs::remove_file(&src)?;
        let out = child.wait_with_output()?;
        match out.status.code() {
            Some(0) => ok += 1,
            Some(2) => {
                failed += 1;
                assert!(
                    output_text(&out).contains("No such file or directory"),
                    "{}",
                    output_text(&out)
                );
            }
            other => panic!("exit {other:?}: {}", output_text(&out)),
        }
        if dest.join(&seg).exists() {
            assert!(
                fs::read(dest.join(&seg))? == original,
                "torn copy of a vanishing file"
            );
            fs::remove_file(dest.join(&seg))?;
        }
    }
    eprintln!("vanishing WAL_PATH: {ok} archived whole, {failed} refused");
    Ok(())
}

#[test]
fn two_runs_at_once_leave_one_identical_file() -> Result<()> {
    let (c, seg) = start()?;
    let wal_path = format!("pg_wal/{seg}");
    let original = fs::read(c.primary.data.join(&wal_path))?;
    for round in 0..20 {
        let dest = c.scratch_dir(&format!("race{round}"))?;
        let a = archive_cmd(&c, &dest, &wal_path, &seg).spawn()?;
        let b = archive_cmd(&c, &dest, &wal_path, &seg).spawn()?;
        let (a, b) = (a.wait_with_output()?, b.wait_with_output()?);
        assert_eq!(
            (a.status.code(), b.status.code()),
            (Some(0), Some(0)),
            "{}{}",
            output_text(&a),
            output_text(&b)
        );
        assert!(fs::read(dest.join(&seg))? == original);
        assert_eq!(
            fs::read_dir(&dest)?
                .filter(|e| e.as_ref().is_ok_and(|e| e.file_name() != ".walguard-tmp"))
                .count(),
            1
        );
    }
    let log = c.log_text();
    let archived = log
        .lines()
        .filter(|l| l.contains(&format!("wal={seg} decision=archived")))
        .count();
    let exists = log
        .lines()
        .filter(|l| l.contains(&format!("wal={seg} decision=exists")))
        .count();
    // Each race: one archived, one exists. The cluster's own release of `seg` is one more
    // line: `archived`, or `exists` when a first attempt held it and archived it ahead.
    assert!(
        archived + exists == 41 && (20..=21).contains(&archived),
        "archived {archived}, exists {exists}"
    );
    Ok(())
}

#[test]
fn fast_shutdown_with_held_segments_then_resume_without_gaps() -> Result<()> {
    let (c, _) = start()?;
    let r2 = c.replica("r2");
    c.stop(r2)?;
    let held: Vec<String> = (0..3).map(|_| c.switch_wal()).collect::<Result<_>>()?;
    c.wait_log_line(&format!("wal={} decision=held", held[0]))?;
    let started = Instant::now();
    c.stop(&c.primary)?;
    let took = started.elapsed();
    eprintln!("fast shutdown with held segments took {took:?}");
    assert!(took < Duration::from_secs(30), "shutdown hung: {took:?}");
    // The archiver's last try during the shutdown is a hold that says why, not an error.
    let log = c.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("decision=held") && l.contains("does not accept connections now")),
        "{log}"
    );
    assert!(!log.contains("level=error"), "{log}");
    c.start_node(&c.primary)?;
    c.start_node(r2)?;
    c.wait_streaming(2)?;
    let after = c.switch_wal()?;
    c.wait_archived(&after, ARCHIVE_WAIT)?;
    let archived = c.archived()?;
    for name in held.iter().chain([&after]) {
        assert!(
            archived.contains(name),
            "{name} missing after restart: {archived:?}"
        );
    }
    assert!(is_contiguous(&archived), "gap: {archived:?}");
    Ok(())
}

#[test]
fn failover_archives_the_history_file_and_both_timelines() -> Result<()> {
    let (c, _) = start()?;
    let (r1, r2) = (c.replica("r1"), c.replica("r2"));
    c.archive_from(r1, "app:r2\n", "")?;
    let last_tl1 = c.switch_wal()?;
    c.wait_archived(&last_tl1, ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1", "r2"])?;

    c.stop(&c.primary)?;
    c.promote(r1)?;
    c.configure(
        r2,
        &format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=r2'",
            r1.port
        ),
    )?;
    wait_for("the history file in the archive", ARCHIVE_WAIT, || {
        Ok(c.archive.join("00000002.history").exists().then_some(()))
    })?;
    wait_for("r2 to stream from r1", ARCHIVE_WAIT, || {
        let n = c.query_on(r1, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'r2' AND state = 'streaming'")?;
        Ok((n.as_deref() == Some("1")).then_some(()))
    })?;
    let mut last_tl2 = String::new();
    for _ in 0..3 {
        last_tl2 = c.switch_wal_on(r1)?;
    }
    assert!(last_tl2.starts_with("00000002"), "{last_tl2}");
    c.wait_archived_on(r1, &last_tl2, ARCHIVE_WAIT)?;

    let log = c.log_text();
    assert!(
        log.contains("wal=00000002.history decision=archived"),
        "{log}"
    );
    let all: Vec<String> = fs::read_dir(&c.archive)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let timeline = |tli: &str| -> Vec<u64> {
        let mut n: Vec<u64> = all
            .iter()
            .filter(|n| n.len() == 24 && n.starts_with(tli))
            .map(|n| u64::from_str_radix(&n[8..], 16).unwrap())
            .collect();
        n.sort();
        n
    };
    let (tl1, tl2) = (timeline("00000001"), timeline("00000002"));
    for (name, nums) in [("timeline 1", &tl1), ("timeline 2", &tl2)] {
        assert!(!nums.is_empty(), "{name} empty: {all:?}");
        assert!(
            nums.windows(2).all(|w| w[1] == w[0] + 1),
            "gap on {name}: {all:?}"
        );
    }
    // Timeline 2 picks up where timeline 1 left off: its first segment is the one where
    // the switch happened, whose timeline-1 version is at most a .partial file.
    assert_eq!(tl1[0], 1);
    let switch = tl2[0];
    assert!(
        *tl1.last().unwrap() + 1 >= switch,
        "timeline 1 stops short of the switch: {all:?}"
    );
    Ok(())
}

#[test]
fn a_segment_truncated_during_the_copy_is_never_archived_short() -> Result<()> {
    let (c, seg) = start()?;
    let original = fs::read(c.primary.data.join(format!("pg_wal/{seg}")))?;
    let spool = c.scratch_dir("trunc-spool")?;
    let dest = c.scratch_dir("trunc-dest")?;
    let src = spool.join(&seg);
    let mut rng = Rng::new();
    let (mut whole, mut refused) = (0, 0);
    for round in 0..40 {
        fs::write(&src, &original)?;
        if round % 2 == 0 {
            // The retry path: an older file is copied only after the verdict.
            fs::File::options()
                .write(true)
                .open(&src)?
                .set_modified(SystemTime::now() - Duration::from_secs(60))?;
        }
        let child = archive_cmd(&c, &dest, src.to_str().unwrap(), &seg).spawn()?;
        std::thread::sleep(Duration::from_micros(rng.below(25_000)));
        fs::File::options()
            .write(true)
            .open(&src)?
            .set_len(8 << 20)?;
        let out = child.wait_with_output()?;
        let archived = dest.join(&seg);
        match out.status.code() {
            Some(0) => {
                whole += 1;
                assert!(
                    fs::read(&archived)? == original,
                    "exit 0 with a short or torn file under the final name (round {round})"
                );
            }
            Some(2) => {
                refused += 1;
                assert!(!archived.exists(), "exit 2 but a file was committed");
            }
            other => panic!("exit {other:?}: {}", output_text(&out)),
        }
        let _ = fs::remove_file(&archived);
    }
    eprintln!("truncated mid-run: {whole} archived whole, {refused} refused");
    Ok(())
}

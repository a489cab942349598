//! `bench/run` (or `cargo bench --bench archive`): walguard's per-segment cost on a live
//! primary with healthy streaming replicas, side by side with what operators use today,
//! interleaved in one run and reported as ratios. Every command runs as the server's
//! user, as PostgreSQL runs it. Writes a Markdown table and the raw numbers to
//! `target/walguard-bench/`; fails only on a broken run, never on a slow one.

#[path = "../tests/support/cluster.rs"]
mod cluster;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cluster::{Cluster, Options};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

/// Runs `cmd` to completion in `dir`; fails the benchmark if it fails.
fn run(dir: &Path, cmd: &mut Command) -> Result<Duration> {
    let start = Instant::now();
    let out = cmd.current_dir(dir).stdin(Stdio::null()).output()?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

struct Stats {
    name: String,
    samples: Vec<f64>, // milliseconds
}

impl Stats {
    fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }
    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.samples.iter().copied().fold(0.0, f64::max)
    }
}

/// A method under test: given a fresh destination directory, do the thing once.
type Method<'a> = (&'a str, Box<dyn Fn(&Path) -> Result<Duration> + 'a>);

/// Runs every method `rounds` times, rotating the order each round so that no method
/// always runs first (cold) or last; each run gets a fresh directory the server's user
/// owns.
fn interleave(
    c: &Cluster,
    rounds: usize,
    scratch: &Path,
    methods: &[Method],
) -> Result<Vec<Stats>> {
    let mut stats: Vec<Stats> = methods
        .iter()
        .map(|(name, _)| Stats {
            name: name.to_string(),
            samples: Vec::new(),
        })
        .collect();
    let mut n = 0;
    for round in 0..rounds {
        for k in 0..methods.len() {
            let i = (round + k) % methods.len();
            n += 1;
            let dest = scratch.join(format!("d{n}"));
            fs::create_dir_all(&dest)?;
            c.chown(&dest)?;
            let took = (methods[i].1)(&dest).with_context(|| format!("method {}", methods[i].0))?;
            stats[i].samples.push(took.as_secs_f64() * 1000.0);
            fs::remove_dir_all(&dest)?;
        }
    }
    Ok(stats)
}

fn table(title: &str, base: &str, stats: &[Stats], out: &mut String) {
    let base = stats
        .iter()
        .find(|s| s.name == base)
        .map(Stats::median)
        .unwrap_or(f64::NAN);
    let _ = writeln!(out, "\n### {title}\n");
    let _ = writeln!(
        out,
        "| method | median ms | min–max ms | ratio to baseline |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for s in stats {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1}–{:.1} | {:.2}x |",
            s.name,
            s.median(),
            s.min(),
            s.max(),
            s.median() / base
        );
    }
}

/// Peak resident memory of one run of `cmd`, in KiB, via GNU time.
fn max_rss_kib(c: &Cluster, args: &[&str]) -> Result<u64> {
    let out = c
        .as_server_user(Path::new("/usr/bin/time"))
        .args(["-f", "%M"])
        .args(args)
        .stdout(Stdio::null())
        .output()
        .context("running /usr/bin/time (Debian package time)")?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .context("no max RSS from /usr/bin/time")
}

/// A pgbackrest stanza on a fresh local repository in `dir`, created untimed.
fn pgbackrest_stanza(c: &Cluster, dir: &Path) -> Result<PathBuf> {
    let conf = dir.join("pgbackrest.conf");
    fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={}\nlock-path={}\nlog-path={}\nlog-level-console=error\nlog-level-file=off\nstart-fast=y\n\
             [bench]\npg1-path={}\npg1-socket-path={}\npg1-port={}\npg1-user=postgres\n",
            dir.join("repo").display(),
            dir.join("lock").display(),
            dir.join("log").display(),
            c.primary.data.display(),
            c.base.display(),
            c.primary.port
        ),
    )?;
    c.chown(dir)?;
    run(
        dir,
        c.as_server_user(Path::new("pgbackrest"))
            .arg(format!("--config={}", conf.display()))
            .args(["--stanza=bench", "stanza-create"]),
    )?;
    Ok(conf)
}

/// A shell command as the server's user.
fn sh(c: &Cluster, script: &str) -> Command {
    let mut cmd = c.as_server_user(Path::new("/bin/sh"));
    cmd.args(["-c", script]);
    cmd
}

/// The largest file under `dir` (a pgbackrest repository's one archived segment).
fn largest_file(dir: &Path) -> Option<u64> {
    let mut best = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let size = match entry.file_type().ok()? {
            t if t.is_dir() => largest_file(&entry.path()),
            _ => entry.metadata().ok().map(|m| m.len()),
        };
        best = best.max(size);
    }
    best
}

/// A segment file whose first page says it is segment `segno` of a cluster with 1 MiB
/// segments: for a synthetic archive of thousands of segments (verify's speed), made
/// from the real segment `real`'s first MiB.
fn synthetic_segment(real: &[u8], segno: u64) -> Vec<u8> {
    let mut b = real[..1 << 20].to_vec();
    b[32..36].copy_from_slice(&(1u32 << 20).to_ne_bytes());
    // Every page's address, as verify checks every page header (an empty one stays).
    for page in (0..b.len()).step_by(8192) {
        if b[page..page + 24].iter().any(|&x| x != 0) {
            b[page + 8..page + 16].copy_from_slice(&((segno << 20) + page as u64).to_ne_bytes());
        }
    }
    b
}

/// Per-segment cost as the archiver pays it, for cp + sync and walguard as archive_command
/// and walguard as archive_library: with archiving switched off, `burst` segments are
/// finished (and replayed by the replicas); then the primary is given the method and
/// reloaded, and the time until `pg_stat_archiver` reports the last one archived is
/// divided by `burst`. Methods rotate over `rounds`; each gets a fresh archive.
fn burst_cost(
    c: &Cluster,
    module: &Path,
    burst: usize,
    rounds: usize,
) -> Result<(usize, Vec<Stats>)> {
    let library = c.base.join("walguard.so");
    fs::copy(module, &library).context("copying the archive module")?;
    let config = c.base.join("burst.toml");
    c.configure(
        &c.primary,
        &format!("walguard.config = '{}'", config.display()),
    )?;
    let set = |library: &str, command: &str| -> Result<()> {
        c.query(&format!("ALTER SYSTEM SET archive_library = '{library}'"))?;
        c.query(&format!("ALTER SYSTEM SET archive_command = '{command}'"))?;
        c.query("SELECT pg_reload_conf()")?;
        Ok(())
    };
    let lib = library.display().to_string();
    let walguard = c.walguard.display().to_string();
    let methods: [(&str, &str, String); 3] = [
        (
            "cp + sync (archive_command)",
            "",
            "cp %p DEST/%f && sync DEST/%f".into(),
        ),
        (
            "walguard archive (archive_command)",
            "",
            format!("{walguard} --config {} archive %p %f", config.display()),
        ),
        ("walguard module (archive_library)", &lib, String::new()),
    ];
    let mut stats: Vec<Stats> = methods
        .iter()
        .map(|(name, ..)| Stats {
            name: name.to_string(),
            samples: Vec::new(),
        })
        .collect();
    let mut watch = c.connect(&c.primary)?;
    eprintln!("bench: archiver bursts of {burst} segments, {rounds} rounds");
    c.archive_everything()?;
    // Archiving off between bursts: each burst waits as .ready files.
    set("", "")?;
    for round in 0..rounds {
        for k in 0..methods.len() {
            let i = (round + k) % methods.len();
            let (_, library, command) = &methods[i];
            let mut last = String::new();
            for _ in 0..burst {
                last = c.switch_wal()?;
            }
            c.wait_caught_up(&["r1", "r2"])?;
            let dest = c.scratch_dir(&format!("burst{round}-{i}"))?;
            fs::write(
                &config,
                format!(
                    "archive_dir = \"{}\"\nreplicas = \"{}\"\nlog_file = \"{}\"\nconninfo = \"{}\"\n",
                    dest.display(),
                    c.list.display(),
                    c.log.display(),
                    c.conninfo()
                ),
            )?;
            let started = Instant::now();
            set(
                library,
                &command.replace("DEST", &dest.display().to_string()),
            )?;
            loop {
                let done = watch
                    .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])?
                    .get::<_, Option<String>>(0)
                    .is_some_and(|a| a >= last);
                if done {
                    break;
                }
                ensure!(
                    started.elapsed() < Duration::from_secs(120),
                    "{} did not archive the burst",
                    methods[i].0
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            // The archive's files were written one after the other: from the first
            // one's mtime to the last one's is the steady cost, without the reload.
            let mut written = Vec::new();
            for entry in fs::read_dir(&dest)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    written.push(entry.metadata()?.modified()?);
                }
            }
            ensure!(
                written.len() >= burst,
                "{}: {} of {burst} segments in the archive",
                methods[i].0,
                written.len()
            );
            written.sort();
            let span = written[written.len() - 1].duration_since(written[0])?;
            stats[i]
                .samples
                .push(span.as_secs_f64() * 1000.0 / (written.len() - 1) as f64);
            set("", "")?;
            fs::remove_dir_all(&dest)?;
        }
    }
    // Back to the command, as the cluster started.
    set(
        "",
        &format!("{walguard} --config {} archive %p %f", c.config.display()),
    )?;
    Ok((burst, stats))
}

fn main() -> Result<()> {
    let quick = std::env::var_os("WALGUARD_BENCH_QUICK").is_some();
    let rounds = if quick { 3 } else { 15 };
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/walguard-bench");
    fs::create_dir_all(&out_dir)?;
    let have_pgbackrest = Command::new("pgbackrest")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());

    eprintln!("bench: starting a primary with 2 streaming replicas");
    let c = Cluster::start(WALGUARD.as_ref(), Options::default())?;
    // Real WAL: a pgbench load (full-page images, index and heap records).
    let client = |program: &str, args: &[&str]| -> Result<Duration> {
        run(
            &c.base,
            c.as_server_user(&c.bindir.join(program))
                .args([
                    "-h",
                    c.base.to_str().unwrap_or_default(),
                    "-p",
                    &c.primary.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(args),
        )
    };
    eprintln!("bench: a pgbench load for real WAL");
    client("pgbench", &["-i", "-s", "5", "-q", "postgres"])?;
    client(
        "pgbench",
        &[
            "-T",
            if quick { "3" } else { "10" },
            "-c",
            "2",
            "-n",
            "postgres",
        ],
    )?;
    let seg = c.switch_wal()?;
    c.wait_archived(&seg, cluster::ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1", "r2"])?;
    let data = c.primary.data.clone();
    let wal = format!("pg_wal/{seg}");
    let src = data.join(&wal);
    ensure!(
        fs::metadata(&src)?.len() == 16 << 20,
        "expected a 16 MiB segment"
    );
    let scratch = c.scratch_dir("bench")?;
    // A copy that outlives the segment in pg_wal (the last sections finish enough WAL
    // for checkpoints to recycle it).
    let kept = c.scratch_dir("kept")?.join(&seg);
    fs::copy(&src, &kept)?;
    let config = c.config.display().to_string();
    let mut report = String::new();
    let mut raw = String::from("section,method,sample_ms\n");
    let walguard = || c.as_server_user(Path::new(WALGUARD));

    // 1. The archive copy of one 16 MiB segment, into a fresh directory each time.
    // PostgreSQL runs archive_command right after it finishes a segment, so the file is
    // made just-finished (mtime now, untimed) for walguard, as in production; retries of
    // older files take walguard's sequential path, measured by the backlog below.
    let walguard_archive_with = |dest: &Path, extra: &[&str]| {
        fs::File::options()
            .write(true)
            .open(&src)?
            .set_modified(std::time::SystemTime::now())?;
        run(
            &data,
            walguard()
                .args(["--config", &config, "--archive-dir"])
                .arg(dest)
                .args(extra)
                .args(["archive", &wal, &seg]),
        )
    };
    let cp_sync = |dest: &Path| {
        let d = dest.join(&seg);
        run(
            &data,
            &mut sh(&c, &format!("cp {wal} {0} && sync {0}", d.display())),
        )
    };
    let test_cp = |dest: &Path| {
        let d = dest.join(&seg);
        run(
            &data,
            &mut sh(&c, &format!("test ! -f {0} && cp {wal} {0}", d.display())),
        )
    };
    let pgbr = |compress: &'static str| {
        let c = &c;
        let wal = wal.clone();
        move |dest: &Path| -> Result<Duration> {
            let conf = pgbackrest_stanza(c, dest)?;
            run(
                &c.primary.data,
                c.as_server_user(Path::new("pgbackrest"))
                    .arg(format!("--config={}", conf.display()))
                    .args([
                        "--stanza=bench",
                        &format!("--compress-type={compress}"),
                        "archive-push",
                        &wal,
                    ]),
            )
        }
    };
    // The gate in front of pgBackRest: walguard deciding, then running the same push
    // (`archive_via` wins over the --archive-dir that walguard_archive_with passes).
    let gated = |dest: &Path| -> Result<Duration> {
        let conf = pgbackrest_stanza(&c, dest)?;
        let via = format!(
            "pgbackrest --config={} --stanza=bench --compress-type=none archive-push %p",
            conf.display()
        );
        walguard_archive_with(dest, &["--archive-via", &via])
    };
    // Bytes stored by each compressing method (the last run's).
    let stored = std::cell::RefCell::new(std::collections::BTreeMap::<&str, u64>::new());
    let keep = |method: &'static str, bytes: u64| {
        stored.borrow_mut().insert(method, bytes);
    };
    let walguard_zstd = |level: &'static str, method: &'static str| {
        let (walguard_archive_with, keep, seg) = (&walguard_archive_with, &keep, &seg);
        move |d: &Path| -> Result<Duration> {
            let took =
                walguard_archive_with(d, &["--compress", "zstd", "--compress-level", level])?;
            keep(method, fs::metadata(d.join(format!("{seg}.zst")))?.len());
            Ok(took)
        }
    };
    let mut methods: Vec<Method> = vec![
        ("cp + sync (floor)", Box::new(cp_sync)),
        (
            "walguard archive",
            Box::new(|d: &Path| walguard_archive_with(d, &[])),
        ),
        (
            "walguard archive + metrics_file",
            Box::new(|d: &Path| {
                let file = d.join("walguard.prom");
                walguard_archive_with(d, &["--metrics-file", file.to_str().unwrap_or_default()])
            }),
        ),
        (
            "walguard archive, header_check = false",
            Box::new(|d: &Path| walguard_archive_with(d, &["--header-check", "false"])),
        ),
        (
            "walguard archive, zstd (level 3, the default)",
            Box::new(walguard_zstd("3", "walguard zstd level 3")),
        ),
        (
            "walguard archive, zstd level 1",
            Box::new(walguard_zstd("1", "walguard zstd level 1")),
        ),
        (
            "walguard archive, zstd level -1",
            Box::new(walguard_zstd("-1", "walguard zstd level -1")),
        ),
        ("test ! -f && cp (no fsync)", Box::new(test_cp)),
    ];
    if have_pgbackrest {
        methods.push(("pgbackrest archive-push, none", Box::new(pgbr("none"))));
        for (compress, method, label) in [
            ("lz4", "pgbackrest archive-push, lz4", "pgbackrest lz4"),
            ("zst", "pgbackrest archive-push, zst", "pgbackrest zst"),
        ] {
            let (push, keep) = (pgbr(compress), &keep);
            methods.push((
                method,
                Box::new(move |d: &Path| {
                    let took = push(d)?;
                    keep(label, largest_file(&d.join("repo/archive")).unwrap_or(0));
                    Ok(took)
                }),
            ));
        }
        methods.push(("walguard archive_via pgbackrest, none", Box::new(gated)));
        // The gate alone: the decision and the hand-off's process, with nothing to push.
        methods.push((
            "walguard archive_via true (the gate alone)",
            Box::new(|d: &Path| walguard_archive_with(d, &["--archive-via", "true %p"])),
        ));
    }
    eprintln!("bench: archive copy, {rounds} interleaved rounds");
    let copy = interleave(&c, rounds, &scratch, &methods)?;
    drop(methods);
    table(
        "Archiving one 16 MiB segment of pgbench WAL (fresh destination each run)",
        "cp + sync (floor)",
        &copy,
        &mut report,
    );
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let _ = writeln!(
        report,
        "\nBytes stored for the 16 MiB segment: {}.",
        stored
            .borrow()
            .iter()
            .map(|(method, bytes)| format!(
                "{method} {:.2} MiB ({:.1}% of the original)",
                mib(*bytes),
                100.0 * *bytes as f64 / f64::from(16 << 20)
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );

    // 1b. The header check itself, in process: open, read the first page, check.
    let expected = walguard_core::header::Expected {
        segment: match seg.parse::<walguard_core::wal::WalFile>()? {
            walguard_core::wal::WalFile::Segment(id) => id,
            other => bail!("{other} is not a segment"),
        },
        size: walguard_core::wal::SegmentSize::new(16 << 20)?,
        sysid: walguard::observe::local::system_identifier(&data),
    };
    let checks = 20_000;
    let started = Instant::now();
    for _ in 0..checks {
        walguard::store::header::check_file(&src, &expected)?;
    }
    let header_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(checks);
    let _ = writeln!(
        report,
        "\nThe header check itself (open, read 40 bytes, check; {checks} in a row, page cache warm): {header_us:.1} µs each.\n"
    );

    // 1c. Restoring that segment: from a plain and a zstd archive, against cp and
    // pgbackrest archive-get, into a fresh directory each time.
    let plain = c.scratch_dir("restore-plain")?;
    fs::copy(&src, plain.join(&seg))?;
    let zstd_dir = c.scratch_dir("restore-zstd")?;
    run(
        &data,
        walguard()
            .args(["--config", &config, "--archive-dir"])
            .arg(&zstd_dir)
            .args(["--compress", "zstd", "archive", &wal, &seg]),
    )?;
    c.chown(&plain)?;
    let pgbr_repo = c.scratch_dir("restore-pgbackrest")?;
    let pgbr_conf = if have_pgbackrest {
        let conf = pgbackrest_stanza(&c, &pgbr_repo)?;
        run(
            &data,
            c.as_server_user(Path::new("pgbackrest"))
                .arg(format!("--config={}", conf.display()))
                .args([
                    "--stanza=bench",
                    "--compress-type=zst",
                    "archive-push",
                    &wal,
                ]),
        )?;
        Some(conf)
    } else {
        None
    };
    let restore_from = |archive: &Path, dest: &Path| {
        run(
            &data,
            walguard()
                .args(["--config", &config, "--archive-dir"])
                .arg(archive)
                .args(["restore", &seg])
                .arg(dest.join("RECOVERYXLOG")),
        )
    };
    let mut restores: Vec<Method> = vec![
        (
            "cp (plain archive)",
            Box::new(|d: &Path| {
                run(
                    &data,
                    &mut sh(
                        &c,
                        &format!(
                            "cp {} {}/RECOVERYXLOG",
                            plain.join(&seg).display(),
                            d.display()
                        ),
                    ),
                )
            }),
        ),
        (
            "walguard restore (plain)",
            Box::new(|d: &Path| restore_from(&plain, d)),
        ),
        (
            "walguard restore (zstd)",
            Box::new(|d: &Path| restore_from(&zstd_dir, d)),
        ),
    ];
    if let Some(conf) = &pgbr_conf {
        let (c, data, seg) = (&c, &data, &seg);
        restores.push((
            "pgbackrest archive-get (zst)",
            Box::new(move |d: &Path| {
                run(
                    data,
                    c.as_server_user(Path::new("pgbackrest"))
                        .arg(format!("--config={}", conf.display()))
                        .args(["--stanza=bench", "archive-get", seg])
                        .arg(d.join("RECOVERYXLOG")),
                )
            }),
        ));
    }
    eprintln!("bench: restore");
    let restore = interleave(&c, rounds, &scratch, &restores)?;
    drop(restores);
    table(
        "Restoring one 16 MiB segment (restore_command)",
        "cp (plain archive)",
        &restore,
        &mut report,
    );

    // 2. The decision alone vs a one-shot psql query of pg_stat_replication.
    let psql = c.bindir.join("psql");
    let conninfo = c.conninfo();
    let decision: Vec<Method> = vec![
        (
            "psql -c 'select ... from pg_stat_replication'",
            Box::new(|_: &Path| {
                run(
                    &data,
                    c.as_server_user(&psql).args([
                        "-X",
                        "-A",
                        "-t",
                        "-d",
                        &conninfo,
                        "-c",
                        "SELECT application_name, replay_lsn FROM pg_stat_replication",
                    ]),
                )
            }),
        ),
        (
            "walguard check",
            Box::new(|_: &Path| run(&data, walguard().args(["--config", &config, "check", &seg]))),
        ),
    ];
    eprintln!("bench: decision");
    let decide = interleave(&c, rounds * 2, &scratch, &decision)?;
    table(
        "The decision alone",
        "psql -c 'select ... from pg_stat_replication'",
        &decide,
        &mut report,
    );

    // 3a. Scale: 1, 8 and 32 real walsenders (r1 plus pg_receivewal processes).
    let mut receivers = Vec::new();
    let mut scale = Vec::new();
    for target in [1usize, 8, 32] {
        while receivers.len() + 1 < target {
            let n = receivers.len() + 1;
            let dir = c.scratch_dir(&format!("rw{n}"))?;
            let child = c
                .as_server_user(&c.bindir.join("pg_receivewal"))
                .arg("-D")
                .arg(&dir)
                .args([
                    "-d",
                    &format!("{conninfo} application_name=rw{n}"),
                    "--no-loop",
                    "--synchronous",
                ])
                .stdout(Stdio::null())
                .stderr(fs::File::create(c.base.join(format!("rw{n}.log")))?)
                .spawn()?;
            receivers.push(child);
        }
        let list: String = std::iter::once("app:r1\n".to_string())
            .chain((1..target).map(|n| format!("app:rw{n}\n")))
            .collect();
        let list_file = c.base.join(format!("scale{target}.list"));
        fs::write(&list_file, list)?;
        cluster::wait_for("the receivers to connect", Duration::from_secs(60), || {
            let n = c.query("SELECT count(*) FROM pg_stat_replication WHERE application_name LIKE 'rw%' AND flush_lsn IS NOT NULL")?;
            Ok((n.as_deref() == Some(&(target - 1).to_string())).then_some(()))
        })
        .with_context(|| fs::read_to_string(c.base.join("rw1.log")).unwrap_or_default())?;
        let list_arg = list_file.display().to_string();
        let one: Vec<Method> = vec![(
            "check",
            Box::new(|_: &Path| {
                run(
                    &data,
                    walguard().args([
                        "--config",
                        &config,
                        "--replicas",
                        &list_arg,
                        "--unlisted",
                        "ignore",
                        "--position",
                        "flush",
                        "check",
                        &seg,
                    ]),
                )
            }),
        )];
        let mut s = interleave(&c, rounds * 2, &scratch, &one)?.remove(0);
        s.name = format!("{target} walsender(s)");
        scale.push(s);
    }
    for mut r in receivers {
        let _ = r.kill();
        let _ = r.wait();
    }
    eprintln!("bench: scale");
    table(
        "The decision with more replicas (walguard check)",
        "1 walsender(s)",
        &scale,
        &mut report,
    );

    // 3b. verify over thousands of segments, against cat of the same files.
    let segments = if quick { 300 } else { 3000 };
    let compressed_segments = segments / 4;
    let real = fs::read(&src)?;
    let synthetic = c.scratch_dir("verify-plain")?;
    let synthetic_zstd = c.scratch_dir("verify-zstd")?;
    eprintln!("bench: a synthetic archive of {segments} 1 MiB segments");
    for n in 1..=segments as u64 {
        let name = format!("00000001{:08X}{:08X}", n >> 12, n & 0xFFF);
        let bytes = synthetic_segment(&real, n);
        if n <= compressed_segments as u64 {
            fs::write(
                synthetic_zstd.join(format!("{name}.zst")),
                zstd::encode_all(&bytes[..], 3)?,
            )?;
        }
        fs::write(synthetic.join(name), bytes)?;
    }
    c.chown(&synthetic)?;
    c.chown(&synthetic_zstd)?;
    // No server and no list: the headers alone say the segment size (1 MiB here).
    let bare = scratch.join("verify.toml");
    fs::write(&bare, "")?;
    let verify_dir = |dir: &Path| {
        run(
            &data,
            walguard()
                .arg("--config")
                .arg(&bare)
                .arg("--archive-dir")
                .arg(dir)
                .arg("verify"),
        )
    };
    // verify exits 0 only on a clean archive: check it is clean, untimed, first.
    verify_dir(&synthetic)?;
    verify_dir(&synthetic_zstd)?;
    let cat = |dir: &Path| run(dir, &mut sh(&c, "cat -- * > /dev/null"));
    let verifying: Vec<Method> = vec![
        (
            "cat of the plain files",
            Box::new(|_: &Path| cat(&synthetic)),
        ),
        (
            "walguard verify, plain",
            Box::new(|_: &Path| verify_dir(&synthetic)),
        ),
        (
            "cat of the .zst files",
            Box::new(|_: &Path| cat(&synthetic_zstd)),
        ),
        (
            "walguard verify, zstd",
            Box::new(|_: &Path| verify_dir(&synthetic_zstd)),
        ),
    ];
    eprintln!("bench: verify");
    let verified = interleave(&c, if quick { 2 } else { 5 }, &scratch, &verifying)?;
    let _ = writeln!(
        report,
        "\n### verify over {segments} segments of 1 MiB (plain) and {compressed_segments} compressed, against cat of the same files (page cache warm)\n"
    );
    let _ = writeln!(
        report,
        "| method | median ms | files per second | speed against cat |"
    );
    let _ = writeln!(report, "|---|---:|---:|---:|");
    for pair in verified.chunks(2) {
        let files = if pair[0].name.contains(".zst") {
            compressed_segments
        } else {
            segments
        } as f64;
        for s in pair {
            let _ = writeln!(
                report,
                "| {} | {:.1} | {:.0} | {:.2}x |",
                s.name,
                s.median(),
                files / (s.median() / 1000.0),
                pair[0].median() / s.median()
            );
        }
    }

    // 3c. cleanup's decision over 100,000 archived names: in process (the pure plan), and
    // end to end (listing a real directory of empty files, asking the server, a dry run).
    let count = if quick { 10_000 } else { 100_000 };
    let size16 = walguard_core::wal::SegmentSize::new(16 << 20)?;
    let synthetic_names: Vec<walguard_core::cleanup::Archived> = (1..=count as u64)
        .map(|n| {
            let id = walguard_core::wal::SegmentId::containing(
                1,
                walguard_core::wal::Lsn(n << 24),
                size16,
            );
            walguard_core::cleanup::Archived {
                stored: format!("{id}.zst"),
                file: walguard_core::wal::WalFile::Segment(id),
                backup: None,
            }
        })
        .chain((1..=10u64).map(|k| {
            let id = walguard_core::wal::SegmentId::containing(
                1,
                walguard_core::wal::Lsn((k * count as u64 / 10) << 24),
                size16,
            );
            walguard_core::cleanup::Archived {
                stored: format!("{id}.00000028.backup"),
                file: walguard_core::wal::WalFile::Backup(id, 0x28),
                backup: None,
            }
        }))
        .collect();
    let replicas_at = [walguard_core::cleanup::Replica::At(
        walguard_core::cleanup::Point {
            timeline: 1,
            lsn: walguard_core::wal::Lsn((count as u64) << 24),
            who: "app:r1".into(),
        },
    )];
    let started = Instant::now();
    let plan = walguard_core::cleanup::plan(
        &synthetic_names,
        &Default::default(),
        size16,
        Some(walguard_core::cleanup::Keep {
            count: 2,
            label: None,
        }),
        None,
        &replicas_at,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan_ms = started.elapsed().as_secs_f64() * 1000.0;
    let many = c.scratch_dir("cleanup-many")?;
    for a in &synthetic_names {
        fs::File::create(many.join(&a.stored))?;
    }
    c.chown(&many)?;
    let dry = run(
        &data,
        walguard()
            .args(["--config", &config, "--archive-dir"])
            .arg(&many)
            .args(["cleanup", "--keep-backups", "2", "--dry-run", "--json"])
            .stdout(Stdio::null()),
    )?;
    let _ = writeln!(
        report,
        "\n### cleanup deciding over {count} archived names\n\n| what | ms |\n|---|---:|\n| the plan, in process ({} to delete) | {plan_ms:.1} |\n| `walguard cleanup --keep-backups 2 --dry-run` (list the directory, ask the server, plan, print) | {:.1} |",
        plan.delete.len(),
        dry.as_secs_f64() * 1000.0
    );

    // 4. Peak memory of one invocation.
    let rss_dest = c.scratch_dir("rss")?;
    let archive_rss = max_rss_kib(
        &c,
        &[
            WALGUARD,
            "--config",
            &config,
            "--archive-dir",
            rss_dest.to_str().unwrap_or_default(),
            "archive",
            &wal,
            &seg,
        ],
    )?;
    let rss_zstd = c.scratch_dir("rss-zstd")?;
    let archive_zstd_rss = max_rss_kib(
        &c,
        &[
            WALGUARD,
            "--config",
            &config,
            "--archive-dir",
            rss_zstd.to_str().unwrap_or_default(),
            "--compress",
            "zstd",
            "archive",
            &wal,
            &seg,
        ],
    )?;
    let restore_zstd_rss = max_rss_kib(
        &c,
        &[
            WALGUARD,
            "--config",
            &config,
            "--archive-dir",
            rss_zstd.to_str().unwrap_or_default(),
            "restore",
            &seg,
            rss_dest.join("RECOVERYXLOG").to_str().unwrap_or_default(),
        ],
    )?;
    let check_rss = max_rss_kib(&c, &[WALGUARD, "--config", &config, "check", &seg])?;
    let verify_rss = max_rss_kib(
        &c,
        &[
            WALGUARD,
            "--config",
            bare.to_str().unwrap_or_default(),
            "--archive-dir",
            synthetic.to_str().unwrap_or_default(),
            "verify",
        ],
    )?;
    let cp_rss = max_rss_kib(
        &c,
        &["cp", &wal, rss_dest.join("cp").to_str().unwrap_or_default()],
    )?;
    let _ = writeln!(report, "\n### Peak memory (max RSS) of one invocation\n");
    let _ = writeln!(report, "| command | max RSS |\n|---|---:|");
    for (what, kib) in [
        ("walguard archive (16 MiB segment)".to_string(), archive_rss),
        (
            "walguard archive, zstd (level 3, a worker per core)".to_string(),
            archive_zstd_rss,
        ),
        ("walguard restore, zstd".to_string(), restore_zstd_rss),
        ("walguard check".to_string(), check_rss),
        (format!("walguard verify ({segments} segments)"), verify_rss),
        ("cp (same file)".to_string(), cp_rss),
    ] {
        let _ = writeln!(report, "| {what} | {:.1} MiB |", kib as f64 / 1024.0);
    }

    // 5a. A held retry with 1, 100 and 1000 files waiting, all archived ahead already: what
    // archive_ahead adds to a retry (a lookup per file), against the same hold without it.
    // Synthetic: sparse 16 MiB segments and empty archived names, a list that holds.
    let mut held_stats = Vec::new();
    for waiting in [1usize, 100, 1000] {
        let dir = c.scratch_dir(&format!("held-{waiting}"))?;
        fs::create_dir_all(dir.join("pg_wal/archive_status"))?;
        fs::create_dir_all(dir.join("archive"))?;
        let names: Vec<String> = (0..waiting)
            .map(|i| format!("00000001000000A0{:08X}", i))
            .collect();
        for name in &names {
            fs::File::create(dir.join("pg_wal").join(name))?.set_len(16 << 20)?;
            fs::File::create(
                dir.join("pg_wal/archive_status")
                    .join(format!("{name}.ready")),
            )?;
            fs::File::create(dir.join("archive").join(name))?;
        }
        fs::write(dir.join("held.list"), "app:r1\napp:away\n")?;
        c.chown(&dir)?;
        let first = names[0].clone();
        let retry = |ahead: &'static str| {
            let (dir, first, config) = (dir.clone(), first.clone(), config.clone());
            move |_: &Path| -> Result<Duration> {
                let started = Instant::now();
                let out = walguard()
                    .current_dir(&dir)
                    .args([
                        "--config",
                        &config,
                        "--replicas",
                        "held.list",
                        "--archive-dir",
                        "archive",
                    ])
                    .args(["--archive-ahead", ahead, "archive"])
                    .arg(format!("pg_wal/{first}"))
                    .arg(&first)
                    .output()?;
                let took = started.elapsed();
                ensure!(
                    out.status.code() == Some(1),
                    "not held: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(took)
            }
        };
        let labels = [
            format!("held retry, archive_ahead = false, {waiting} waiting"),
            format!("held retry, archive_ahead, {waiting} waiting (archived)"),
        ];
        let methods: Vec<Method> = vec![
            (labels[0].as_str(), Box::new(retry("false"))),
            (labels[1].as_str(), Box::new(retry("true"))),
        ];
        eprintln!("bench: a held retry with {waiting} waiting");
        held_stats.extend(interleave(&c, rounds, &scratch, &methods)?);
        fs::remove_dir_all(&dir)?;
    }
    let _ = writeln!(
        report,
        "\n### A held retry, with archive_ahead, when the waiting files are archived already\n"
    );
    let _ = writeln!(
        report,
        "| waiting | archive_ahead = false (ms) | archive_ahead (ms) | what ahead adds (ms) |"
    );
    let _ = writeln!(report, "|---:|---:|---:|---:|");
    for pair in held_stats.chunks(2) {
        let waiting = pair[0]
            .name
            .rsplit(", ")
            .next()
            .unwrap_or("")
            .replace(" waiting", "");
        let _ = writeln!(
            report,
            "| {waiting} | {:.1} | {:.1} | {:.2} |",
            pair[0].median(),
            pair[1].median(),
            pair[1].median() - pair[0].median()
        );
    }

    // 5. A backlog of segments, as after a replica returns: throughput, walguard vs cp+sync.
    let backlog = if quick { 20 } else { 500 };
    // The server's archiving is off meanwhile: the backlog stays .ready, so no checkpoint
    // recycles it before it is drained, and no archiver races the drain.
    c.query("ALTER SYSTEM SET archive_command = ''")?;
    c.query("SELECT pg_reload_conf()")?;
    c.stop(c.replica("r2"))?;
    let mut names = Vec::new();
    for _ in 0..backlog {
        names.push(c.switch_wal()?);
    }
    c.start_node(c.replica("r2"))?;
    c.wait_streaming(2)?;
    c.wait_caught_up(&["r1", "r2"])?;
    let drain = |label: &str, each: &dyn Fn(&str, &Path) -> Result<Duration>| -> Result<Stats> {
        let dest = c.scratch_dir(&format!("drain-{}", label.replace([' ', '+'], "_")))?;
        let start = Instant::now();
        for name in &names {
            each(name, &dest)?;
        }
        let secs = start.elapsed().as_secs_f64();
        fs::remove_dir_all(&dest)?;
        Ok(Stats {
            name: label.to_string(),
            samples: vec![backlog as f64 / secs],
        })
    };
    eprintln!("bench: backlog of {backlog} segments");
    let mut backlog_stats = Vec::new();
    for _ in 0..if quick { 1 } else { 2 } {
        backlog_stats.push(drain("cp + sync", &|name, dest| {
            let d = dest.join(name);
            run(
                &data,
                &mut sh(
                    &c,
                    &format!("cp pg_wal/{name} {0} && sync {0}", d.display()),
                ),
            )
        })?);
        backlog_stats.push(drain("walguard archive", &|name, dest| {
            run(
                &data,
                walguard()
                    .args(["--config", &config, "--archive-dir"])
                    .arg(dest)
                    .args(["archive", &format!("pg_wal/{name}"), name]),
            )
        })?);
        // With archive_ahead the held segments are in the archive already: the release
        // finds each (compares it, fsyncs it) instead of copying it. The copies ahead are
        // made untimed first, as the hold made them.
        let ahead_dest = c.scratch_dir("drain-ahead")?;
        for name in &names {
            fs::copy(data.join("pg_wal").join(name), ahead_dest.join(name))?;
        }
        c.chown(&ahead_dest)?;
        let start = Instant::now();
        for name in &names {
            run(
                &data,
                walguard()
                    .args(["--config", &config, "--archive-dir"])
                    .arg(&ahead_dest)
                    .args(["archive", &format!("pg_wal/{name}"), name]),
            )?;
        }
        backlog_stats.push(Stats {
            name: "walguard archive, archived ahead (release finds each)".into(),
            samples: vec![backlog as f64 / start.elapsed().as_secs_f64()],
        });
        fs::remove_dir_all(&ahead_dest)?;
    }
    let _ = writeln!(
        report,
        "\n### A backlog of {backlog} `.ready` segments after a replica returns\n"
    );
    let _ = writeln!(report, "| method | segments per second (each pass) |");
    let _ = writeln!(report, "|---|---:|");
    for label in [
        "cp + sync",
        "walguard archive",
        "walguard archive, archived ahead (release finds each)",
    ] {
        let rates: Vec<String> = backlog_stats
            .iter()
            .filter(|s| s.name == label)
            .map(|s| format!("{:.1}", s.samples[0]))
            .collect();
        let _ = writeln!(report, "| {label} | {} |", rates.join(", "));
    }
    c.query("ALTER SYSTEM RESET archive_command")?;
    c.query("SELECT pg_reload_conf()")?;

    // 6. The archive module against the command and cp + sync, as PostgreSQL's archiver
    // runs them (burst_cost): the copy itself in process, for what the rest costs. Last,
    // with the backlog: both finish so many segments that checkpoints recycle the
    // pgbench segment (`src`) the earlier sections read.
    let module = std::env::var_os("WALGUARD_MODULE").map(PathBuf::from);
    let bursts = match &module {
        Some(module) => Some(burst_cost(
            &c,
            module,
            if quick { 10 } else { 50 },
            if quick { 1 } else { 5 },
        )?),
        None => None,
    };
    // The copy alone, and walguard's whole archive path with the observation handed in
    // (what the module runs, less reading shared memory), alternating, in this process.
    let copies = if quick { 20 } else { 100 };
    let copy_dir = c.scratch_dir("copy-in-process")?;
    let path_config = scratch.join("path.toml");
    fs::write(
        &path_config,
        format!(
            "archive_dir = \"{}\"\nreplicas = \"{}\"\nlog_file = \"{}\"\npgdata = \"{}\"\n",
            copy_dir.display(),
            c.list.display(),
            scratch.join("path.log").display(),
            data.display()
        ),
    )?;
    let target = walguard::observe::conninfo::Target::new(
        Some(&conninfo),
        Duration::from_secs(10),
        &walguard::observe::conninfo::ProcessEnv,
    )?;
    let observed = walguard::observe::sql::observe_within(&target, Duration::from_secs(5), false)?;
    let sysid = observed
        .system_identifier
        .context("the server reported no system identifier")?;
    let (mut copy_ms, mut path_ms) = (Vec::new(), Vec::new());
    for _ in 0..copies {
        let _ = fs::remove_file(copy_dir.join(&seg));
        let started = Instant::now();
        walguard::store::copy::stage(
            &kept,
            &copy_dir,
            &seg,
            Duration::from_secs(30),
            walguard::store::copy::Compression::None,
        )?
        .commit(Some(16 << 20))?;
        copy_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        fs::remove_file(copy_dir.join(&seg))?;
        let started = Instant::now();
        let exit = walguard::commands::archive_in_server(&path_config, &kept, &seg, sysid, &|| {
            Ok(observed.clone())
        });
        path_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(
            exit == walguard::exit::Exit::Ok,
            "the archive path in process did not archive: {exit:?}"
        );
    }
    let in_process = [
        Stats {
            name: "walguard's copy alone (store::copy)".into(),
            samples: copy_ms,
        },
        Stats {
            name: "walguard's archive path, observation given (archive_in_server)".into(),
            samples: path_ms,
        },
    ];
    let (copy_alone, path) = (in_process[0].median(), in_process[1].median());
    match &bursts {
        Some((burst, stats)) => {
            let _ = writeln!(
                report,
                "\n### Per segment, as PostgreSQL's archiver runs it: bursts of {burst} finished 16 MiB segments\n"
            );
            let _ = writeln!(
                report,
                "| method | ms per segment (median) | min–max | ratio to cp + sync |"
            );
            let _ = writeln!(report, "|---|---:|---:|---:|");
            let floor = stats[0].median();
            for s in stats {
                let _ = writeln!(
                    report,
                    "| {} | {:.2} | {:.2}–{:.2} | {:.2}x |",
                    s.name,
                    s.median(),
                    s.min(),
                    s.max(),
                    s.median() / floor
                );
            }
            let _ = writeln!(
                report,
                "\nPer segment: from the first archived file's modification time to the last one's, over the files between (the archiver's whole cycle, without the reload that starts the burst)."
            );
        }
        None => {
            let _ = writeln!(
                report,
                "\nThe archive module was not measured: bench/run builds it when PostgreSQL 15's server headers are installed (WALGUARD_MODULE names it)."
            );
        }
    }
    let _ = writeln!(
        report,
        "\nIn this process, alternating, {copies} times each: walguard's copy alone (temp file, fsync, link, directory fsync) {copy_alone:.2} ms; walguard's whole archive path with the observation handed in (settings and list read, decision, header check, copy, log line: what the module runs, less reading shared memory) {path:.2} ms. Everything but the copy: {:.2} ms per segment.",
        path - copy_alone
    );

    // 7. A whole recovery, end to end on a real server: a base backup, then at least 64
    // segments (1 GiB) of pgbench WAL; each method recovers a fresh copy of the backup to
    // the end of the archive and promotes (timed until it accepts connections, out of
    // recovery). From a plain archive with cp and with walguard; from a zstd archive
    // with walguard, restore_prefetch off and on.
    let want_segments: u64 = if quick { 16 } else { 64 };
    eprintln!("bench: a base backup and {want_segments} segments of WAL for a whole recovery");
    let backup = c.base.join("recovery-backup");
    client(
        "pg_basebackup",
        &[
            "-D",
            backup.to_str().unwrap_or_default(),
            "-X",
            "none",
            "-c",
            "fast",
        ],
    )?;
    let position = || -> Result<u64> {
        c.query("SELECT pg_current_wal_lsn() - '0/0'")?
            .context("no WAL position")?
            .parse::<f64>()
            .map(|b| b as u64)
            .context("a WAL position")
    };
    let from = position()?;
    client(
        "pgbench",
        &["-i", "-s", &want_segments.to_string(), "-q", "postgres"],
    )?;
    while position()? - from < want_segments << 24 {
        client("pgbench", &["-T", "5", "-c", "2", "-n", "postgres"])?;
    }
    let recovered_segments = (position()? - from) >> 24;
    let accounts = c.query("SELECT count(*) FROM pgbench_accounts")?;
    c.archive_everything()?;
    c.wait_caught_up(&["r1", "r2"])?;
    // The same archive compressed as walguard compresses (level 3, with a checksum).
    let zstd_archive = c.scratch_dir("recovery-zstd")?;
    for entry in fs::read_dir(&c.archive)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_file() {
            continue;
        }
        if name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut encoder = zstd::stream::write::Encoder::new(
                fs::File::create(zstd_archive.join(format!("{name}.zst")))?,
                3,
            )?;
            encoder.include_checksum(true)?;
            std::io::copy(&mut fs::File::open(entry.path())?, &mut encoder)?;
            encoder.finish()?;
        } else {
            fs::copy(entry.path(), zstd_archive.join(&name))?;
        }
    }
    c.chown(&zstd_archive)?;
    let recoveries = std::cell::Cell::new(0);
    let recover = |restore_command: String| {
        let (c, backup, recoveries, accounts) = (&c, &backup, &recoveries, &accounts);
        move |_: &Path| -> Result<Duration> {
            recoveries.set(recoveries.get() + 1);
            let node = c.recovering_server(
                &format!("recovery{}", recoveries.get()),
                backup,
                &format!("hot_standby = off\nrestore_command = '{restore_command}'"),
                false,
            )?;
            let started = Instant::now();
            // pg_ctl -w returns once recovery is consistent (hot_standby off: "standby");
            // the recovery ends when the server accepts connections, promoted.
            c.start_node(&node)?;
            while c
                .query_on(&node, "SELECT pg_is_in_recovery()")
                .ok()
                .flatten()
                .as_deref()
                != Some("f")
            {
                ensure!(
                    started.elapsed() < Duration::from_secs(600),
                    "no promotion after 10 minutes: {}",
                    c.server_log(&node)
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            let took = started.elapsed();
            let got = c.query_on(&node, "SELECT count(*) FROM pgbench_accounts")?;
            ensure!(
                &got == accounts,
                "the recovery ended early: {got:?} accounts, not {accounts:?}"
            );
            c.stop_immediately(&node)?;
            fs::remove_dir_all(&node.data)?;
            Ok(took)
        }
    };
    let walguard_restore = |archive: &Path, extra: &str| {
        format!(
            "{WALGUARD} --config {config} --archive-dir {} {extra} restore %f %p",
            archive.display()
        )
    };
    let whole: Vec<Method> = vec![
        (
            "cp (plain archive)",
            Box::new(recover(format!("cp {}/%f %p", c.archive.display()))),
        ),
        (
            "walguard restore (plain)",
            Box::new(recover(walguard_restore(&c.archive, ""))),
        ),
        (
            "walguard restore (zstd), restore_prefetch = 0",
            Box::new(recover(walguard_restore(
                &zstd_archive,
                "--restore-prefetch 0",
            ))),
        ),
        (
            "walguard restore (zstd), restore_prefetch = 8",
            Box::new(recover(walguard_restore(&zstd_archive, ""))),
        ),
    ];
    eprintln!("bench: whole recoveries");
    let recovered = interleave(&c, if quick { 2 } else { 5 }, &scratch, &whole)?;
    table(
        &format!(
            "A whole recovery of {recovered_segments} segments of pgbench WAL, start to promotion (a real server)"
        ),
        "cp (plain archive)",
        &recovered,
        &mut report,
    );

    for s in copy
        .iter()
        .chain(&restore)
        .chain(&decide)
        .chain(&scale)
        .chain(&held_stats)
        .chain(&backlog_stats)
        .chain(&verified)
        .chain(bursts.iter().flat_map(|(_, s)| s))
        .chain(&in_process)
        .chain(&recovered)
    {
        for v in &s.samples {
            let _ = writeln!(raw, "bench,{},{v:.3}", s.name.replace(',', ";"));
        }
    }
    let _ = writeln!(
        raw,
        "rss_kib,walguard archive,{archive_rss}\nrss_kib,walguard archive zstd,{archive_zstd_rss}\nrss_kib,walguard restore zstd,{restore_zstd_rss}\nrss_kib,walguard check,{check_rss}\nrss_kib,walguard verify,{verify_rss}\nrss_kib,cp,{cp_rss}\nheader_check_us,in process,{header_us:.2}"
    );
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fs::read_to_string("/proc/cpuinfo")?
            .lines()
            .find_map(|l| l.strip_prefix("model name\t: "))
            .unwrap_or("unknown CPU")
    );
    let header = format!(
        "## walguard benchmark\n\nMachine: {machine}; PostgreSQL from {}; {rounds} interleaved rounds (medians).\n",
        c.bindir.display()
    );
    fs::write(out_dir.join("results.md"), format!("{header}{report}"))?;
    fs::write(out_dir.join("raw.csv"), raw)?;
    println!("{header}{report}");
    eprintln!("bench: wrote {}", out_dir.join("results.md").display());
    Ok(())
}

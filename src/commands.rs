//! The thin shell: runs one command, wiring the adapters (settings, list, database, copy,
//! log) around the pure decision, and turns the result into an exit code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::archive_copy::{self, Stored};
use crate::cli::{Cli, Command};
use crate::conninfo::{ProcessEnv, Target};
use crate::decision::{self, Verdict};
use crate::decision_log::{DecisionLog, Level};
use crate::observation::{self, Observation};
use crate::replicas;
use crate::settings::{self, Settings};
use crate::wal::WalFile;

/// The process exit status; the numbers are part of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Archived (or would be; or already there with identical bytes).
    Ok = 0,
    /// Held: a listed replica still needs the segment.
    Held = 1,
    /// Error: nothing was archived.
    Error = 2,
}

/// The whole error chain on one line, outermost first, skipping a cause whose text its
/// parent already printed (the postgres crate repeats its cause in its own message).
pub fn describe_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Adds "what to do" after an error's "what failed: why".
trait Hint<T> {
    fn hint(self, what_to_do: &str) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> Hint<T> for std::result::Result<T, E> {
    fn hint(self, what_to_do: &str) -> Result<T> {
        self.map_err(|e| anyhow!("{}; {what_to_do}", describe_error(&e.into())))
    }
}

/// One invocation's context for its decision-log lines.
struct Run {
    /// `None` for `check`, which is a dry run and writes no log line.
    log: Option<DecisionLog>,
    cmd: &'static str,
    wal: String,
    started: Instant,
}

impl Run {
    fn write(&self, level: Level, decision: &str, mut fields: Vec<(&'static str, String)>) {
        let mut all = vec![
            ("cmd", self.cmd.to_string()),
            ("wal", self.wal.clone()),
            ("decision", decision.to_string()),
        ];
        all.append(&mut fields);
        all.push(("ms", self.started.elapsed().as_millis().to_string()));
        if let Some(log) = &self.log {
            log.write(level, &all);
        }
    }

    /// After `timeout`, logs and exits 2 whatever the main thread is doing (a hung
    /// connection, a stalled network file system): PostgreSQL's archiver waits for us.
    fn arm_watchdog(&self, timeout: Duration) {
        let run = Run {
            log: self.log.clone(),
            cmd: self.cmd,
            wal: self.wal.clone(),
            started: self.started,
        };
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            let reason = format!(
                "timed out after {}; nothing was archived",
                humantime::format_duration(timeout)
            );
            run.write(Level::Error, "error", vec![("reason", reason.clone())]);
            eprintln!("walguard: error: {reason}");
            std::process::exit(Exit::Error as i32);
        });
    }
}

/// The fields every decision line shares: how many listed replicas are connected, the
/// slowest one, and the position needed.
fn verdict_fields(v: &Verdict) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    if !v.reasons.is_empty() {
        fields.push(("reason", v.reasons.join("; ")));
    }
    if !v.matches.is_empty() {
        let (k, n) = v.replicas_connected();
        fields.push(("replicas", format!("{k}/{n}")));
    }
    if let Some(s) = &v.slowest {
        fields.push(("slowest", s.entry.clone()));
        fields.push(("slowest_lsn", s.lsn.to_string()));
    }
    if let Some(need) = v.need {
        fields.push(("need_lsn", need.to_string()));
    }
    fields
}

fn parse_name(name: &str) -> Result<WalFile> {
    name.parse::<WalFile>()
        .hint("archive_command must pass %f as the name")
}

/// Reads the list and asks the server; only needed for segments.
fn observe(settings: &Settings) -> Result<(Vec<replicas::Entry>, Observation)> {
    let list =
        replicas::load(&settings.replicas, settings.resolve).hint("fix the replicas list")?;
    let target = Target::new(settings.conninfo.as_deref(), settings.timeout, &ProcessEnv)?;
    let obs = observation::observe(&target).hint(
        "the segment stays in pg_wal; check conninfo (or PGHOST, PGPORT, PGUSER), \
         that the server is up, and that pg_hba.conf lets walguard in",
    )?;
    Ok((list, obs))
}

/// The decision for `wal`, observing the server only when the file is a segment.
/// `size_of` is the file's size when known, cross-checked against the server's.
fn decide(
    settings: &Settings,
    wal: &WalFile,
    size_of: Option<u64>,
) -> Result<(Verdict, Option<Observation>)> {
    if !matches!(wal, WalFile::Segment(_)) {
        return Ok((decision::decide(wal, None, &[], &settings.policy), None));
    }
    let (list, obs) = observe(settings)?;
    if let Some(size) = size_of
        && size != obs.segment_size.bytes()
    {
        bail!(
            "{wal} has {size} bytes but the server's wal_segment_size is {}: \
             is conninfo pointing at the server whose pg_wal this is?",
            obs.segment_size.bytes()
        );
    }
    let verdict = decision::decide(wal, Some(&obs), &list, &settings.policy);
    Ok((verdict, Some(obs)))
}

fn archive(run: &Run, settings: &Settings, wal_path: &Path, wal: &WalFile) -> Result<Exit> {
    let archive_dir = settings
        .archive_dir
        .as_deref()
        .ok_or_else(|| anyhow!("no archive directory: set archive_dir in the config file, --archive-dir, or WALGUARD_ARCHIVE_DIR"))?;
    let meta = std::fs::metadata(wal_path)
        .with_context(|| format!("cannot read WAL_PATH {}", wal_path.display()))
        .hint("archive_command must pass %p, relative to the data directory")?;
    let (verdict, _) = decide(settings, wal, Some(meta.len()))?;
    let mut fields = verdict_fields(&verdict);
    if !verdict.archive {
        run.write(Level::Info, "held", fields);
        return Ok(Exit::Held);
    }
    let stored = archive_copy::store(wal_path, archive_dir, &run.wal, settings.timeout)
        .hint("nothing was archived; PostgreSQL will retry")?;
    let (decision, bytes) = match stored {
        Stored::Copied { bytes } => ("archived", bytes),
        Stored::Exists { bytes } => ("exists", bytes),
    };
    fields.push(("bytes", bytes.to_string()));
    run.write(Level::Info, decision, fields);
    Ok(Exit::Ok)
}

fn pad(out: &mut String, cells: &[&str], widths: &[usize]) {
    let line: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect();
    let _ = writeln!(out, "  {}", line.join("  ").trim_end());
}

/// The `check` report: what a person needs to see to trust (or fix) the verdict.
fn explain(
    wal: &WalFile,
    verdict: &Verdict,
    obs: Option<&Observation>,
    settings: &Settings,
) -> String {
    let mut out = String::new();
    let Some(obs) = obs else {
        let _ = writeln!(out, "{wal}: {} file", wal.kind());
        for r in &verdict.reasons {
            let _ = writeln!(out, "{r}");
        }
        out.push_str("verdict: ARCHIVE\n");
        return out;
    };
    let position = settings.policy.position;
    let _ = writeln!(
        out,
        "{wal}: segment, wal_segment_size {} MiB",
        obs.segment_size.bytes() >> 20
    );
    if let Some(need) = verdict.need {
        let _ = writeln!(
            out,
            "every listed replica must have its {position} position at or past {need} (segment end + {} extra segments)",
            settings.policy.keep_segments
        );
    }
    out.push('\n');
    let header = [
        "REPLICA",
        "WALSENDER",
        "STATE",
        "SENT",
        "FLUSH",
        "REPLAY",
        "",
    ];
    let mut rows: Vec<[String; 7]> = Vec::new();
    let show = |l: Option<crate::wal::Lsn>| l.map_or("-".to_string(), |l| l.to_string());
    let row = |label: String, w: usize, mark: &str| {
        let ws = &obs.walsenders[w];
        [
            label,
            ws.describe(),
            ws.state.clone().unwrap_or_else(|| "(hidden)".into()),
            show(ws.sent),
            show(ws.flush),
            show(ws.replay),
            mark.to_string(),
        ]
    };
    for m in &verdict.matches {
        rows.push(match m.walsender {
            None => [
                m.entry.to_string(),
                "not connected".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                "NEEDS IT".into(),
            ],
            Some(w) => {
                let past = match (position.of(&obs.walsenders[w]), verdict.need) {
                    (Some(at), Some(need)) => at >= need,
                    _ => false,
                };
                row(
                    m.entry.to_string(),
                    w,
                    if past { "past" } else { "NEEDS IT" },
                )
            }
        });
    }
    for &w in &verdict.unlisted {
        let mark = match settings.policy.unlisted {
            decision::Unlisted::Hold => "UNLISTED",
            decision::Unlisted::Ignore => "ignored",
        };
        rows.push(row("(not in list)".into(), w, mark));
    }
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    pad(&mut out, &header, &widths);
    for r in &rows {
        pad(&mut out, &r.each_ref().map(String::as_str), &widths);
    }
    if rows.is_empty() {
        out.push_str("  (the list is empty and no replica is connected)\n");
    }
    out.push('\n');
    if verdict.archive {
        out.push_str("verdict: ARCHIVE: every listed replica is past this segment\n");
    } else {
        out.push_str("verdict: HOLD\n");
        for r in &verdict.reasons {
            let _ = writeln!(out, "  - {r}");
        }
    }
    out
}

fn check(settings: &Settings, wal: &WalFile) -> Result<Exit> {
    // Cross-check the size when the file is in this server's pg_wal.
    let in_pg_wal: PathBuf = settings.pgdata.join("pg_wal").join(wal.to_string());
    let size = std::fs::metadata(&in_pg_wal).ok().map(|m| m.len());
    let (verdict, obs) = decide(settings, wal, size)?;
    print!("{}", explain(wal, &verdict, obs.as_ref(), settings));
    Ok(if verdict.archive {
        Exit::Ok
    } else {
        Exit::Held
    })
}

/// Runs the parsed command line; every failure becomes exit 2 with a message on stderr
/// (and, for `archive`, a `decision=error` line in the log).
pub fn run(cli: Cli) -> Exit {
    let settings = match settings::load(cli.config.as_deref(), cli.settings) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("walguard: error: {e}");
            return Exit::Error;
        }
    };
    let (cmd, wal_name) = match &cli.command {
        Command::Archive { wal_name, .. } => ("archive", wal_name),
        Command::Check { wal_name } => ("check", wal_name),
    };
    let run = Run {
        log: (cmd == "archive").then(|| DecisionLog::new(settings.log_file.clone())),
        cmd,
        wal: wal_name.clone(),
        started: Instant::now(),
    };
    run.arm_watchdog(settings.timeout);
    let result = parse_name(wal_name).and_then(|wal| match &cli.command {
        Command::Archive { wal_path, .. } => archive(&run, &settings, wal_path, &wal),
        Command::Check { .. } => check(&settings, &wal),
    });
    match result {
        Ok(exit) => exit,
        Err(e) => {
            let message = describe_error(&e);
            run.write(Level::Error, "error", vec![("reason", message.clone())]);
            // Without log_file the log line already went to stderr.
            if run.log.is_none() || settings.log_file.is_some() {
                eprintln!("walguard: error: {message}");
            }
            Exit::Error
        }
    }
}

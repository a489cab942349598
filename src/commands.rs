//! The thin shell: runs one command, wiring the adapters (settings, list, database, copy,
//! log) around the pure decision, and turns the result into an exit code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::CommandFactory;

use crate::archive_copy::{self, Stored};
use crate::cli::{Cli, Command, Guard};
use crate::conninfo::{ProcessEnv, Target};
use crate::decision::{self, Pressure, Verdict};
use crate::decision_log::{DecisionLog, Level};
use crate::events::{self, Details, Event};
use crate::observation::{self, Observation, Origin};
use crate::settings::{self, Settings, Source};
use crate::wal::{SegmentSize, WalFile};
use crate::{log_summary, replicas, status, titles};

/// A segment file younger than this is copied while the decision is being made.
const FRESH: Duration = Duration::from_secs(1);

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
pub trait Hint<T> {
    fn hint(self, what_to_do: &str) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> Hint<T> for std::result::Result<T, E> {
    fn hint(self, what_to_do: &str) -> Result<T> {
        self.map_err(|e| anyhow!("{}; {what_to_do}", describe_error(&e.into())))
    }
}

/// One invocation's context for its decision-log lines.
#[derive(Clone)]
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
        let run = self.clone();
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
    if let Some(t) = &v.valve {
        fields.push(("valve", t.valve.to_string()));
        fields.push((
            "reason",
            format!("{}; left behind: {}", t.detail, v.reasons.join("; ")),
        ));
        fields.push((
            "advice",
            format!(
                "{} will need this segment from the archive (restore_command) or a new base backup",
                v.blame.join(", ")
            ),
        ));
    } else if !v.reasons.is_empty() {
        fields.push(("reason", v.reasons.join("; ")));
    }
    if !v.blame.is_empty() {
        fields.push(("blame", v.blame.join(",")));
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

/// The replicas list named by the settings, read and (if asked) resolved.
pub fn load_list(settings: &Settings) -> Result<Vec<replicas::Entry>> {
    replicas::load(settings.replicas()?, settings.resolve).hint("fix the replicas list")
}

/// Asks the server, or the process titles when configured (`source`). `segment_bytes`
/// is the segment file's size, which is all that tells the segment size without SQL.
pub fn observe(settings: &Settings, segment_bytes: Option<u64>) -> Result<Observation> {
    let sql = || -> Result<Observation> {
        let target = Target::new(settings.conninfo.as_deref(), settings.timeout, &ProcessEnv)?;
        Ok(observation::observe(&target)?)
    };
    let ps = || -> Result<Observation> {
        let bytes = segment_bytes.context(
            "process titles do not tell wal_segment_size, and the segment file was not found",
        )?;
        let size = SegmentSize::new(bytes)?;
        Ok(titles::observe(&settings.pgdata, size)?)
    };
    let hint = "the segment stays in pg_wal; check conninfo (or PGHOST, PGPORT, PGUSER), \
                that the server is up, and that pg_hba.conf lets walguard in";
    match settings.source {
        Source::Sql => sql().hint(hint),
        Source::Ps => {
            ps().hint("check pgdata: walguard reads its postmaster.pid to find the walsenders")
        }
        Source::Auto => sql().or_else(|sql_err| {
            ps().map_err(|ps_err| {
                anyhow!(
                    "{}; the process-title fallback failed too: {}",
                    describe_error(&sql_err),
                    describe_error(&ps_err)
                )
            })
        }),
    }
}

/// Everything a decision about one file needs, gathered by the adapters.
struct Gathered {
    verdict: Verdict,
    observation: Option<Observation>,
}

/// The decision for `wal`, observing the server only when the file is a segment.
/// `file` is the segment file when known: its size is cross-checked against the server's,
/// and its age is how long the segment has waited (the `max_hold` valve).
fn decide(
    settings: &Settings,
    wal: &WalFile,
    file: Option<&std::fs::Metadata>,
) -> Result<Gathered> {
    if !matches!(wal, WalFile::Segment(_)) {
        let verdict = decision::decide(wal, None, &Pressure::default(), &[], &settings.policy);
        return Ok(Gathered {
            verdict,
            observation: None,
        });
    }
    let list = load_list(settings)?;
    let obs = observe(settings, file.map(|m| m.len()))?;
    if let Some(size) = file.map(|m| m.len())
        && size != obs.segment_size.bytes()
    {
        bail!(
            "{wal} has {size} bytes but the server's wal_segment_size is {}: \
             is conninfo pointing at the server whose pg_wal this is?",
            obs.segment_size.bytes()
        );
    }
    let pressure = observation::pressure(&settings.pgdata, file.and_then(|m| m.modified().ok()));
    let verdict = decision::decide(wal, Some(&obs), &pressure, &list, &settings.policy);
    Ok(Gathered {
        verdict,
        observation: Some(obs),
    })
}

/// Which `on_event` event this decision is, if any. PostgreSQL's own `last_failed_wal`
/// tells a first hold from a retry, and a release from an ordinary archive, with no
/// state file; from process titles it is unknown, so every hold counts as a first one.
fn event_of(wal: &str, g: &Gathered) -> Option<Event> {
    let failed_before = g
        .observation
        .as_ref()
        .and_then(|o| o.archiver.as_ref())
        .map(|a| a.last_failed_wal.as_deref() == Some(wal));
    match (&g.verdict, failed_before) {
        (v, _) if v.valve.is_some() => Some(Event::Valve),
        (v, Some(true)) if v.archive => Some(Event::Released),
        (v, Some(false) | None) if !v.archive => Some(Event::Held),
        _ => None,
    }
}

/// Runs `on_event` for `event`, within what is left of the timeout; returns how it ended.
fn run_hook(
    run: &Run,
    settings: &Settings,
    command: &str,
    event: Event,
    verdict: &Verdict,
    fields: &[(&str, String)],
) -> String {
    let replicas = if event == Event::Released {
        let entries: Vec<String> = verdict
            .matches
            .iter()
            .map(|m| m.entry.to_string())
            .collect();
        entries.join(",")
    } else {
        verdict.blame.join(",")
    };
    let reason = fields
        .iter()
        .find(|(k, _)| *k == "reason")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    // Leave the watchdog a second: a slow hook must never turn the verdict into an error.
    let limit = settings
        .timeout
        .saturating_sub(run.started.elapsed())
        .saturating_sub(Duration::from_secs(1));
    let details = Details {
        event,
        wal: &run.wal,
        replicas: &replicas,
        reason,
    };
    events::run_hook(command, &details, limit)
}

fn archive(run: &Run, settings: &Settings, wal_path: &Path, wal: &WalFile) -> Result<Exit> {
    let archive_dir = settings
        .archive_dir
        .as_deref()
        .ok_or_else(|| anyhow!("no archive directory: set archive_dir in the config file, --archive-dir, or WALGUARD_ARCHIVE_DIR"))?;
    let meta = std::fs::metadata(wal_path)
        .with_context(|| format!("cannot read WAL_PATH {}", wal_path.display()))
        .hint("archive_command must pass %p, relative to the data directory")?;
    // A segment that has just been finished is almost always archived at once, so its
    // copy runs while the server is asked, and only becomes durable and visible if the
    // verdict says so. A retry (an older file) is more likely held: it is copied only
    // after the verdict, so an outage does not rewrite the archive's disk every second.
    let fresh = meta
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < FRESH);
    let stage = || archive_copy::stage(wal_path, archive_dir, &run.wal, settings.timeout);
    let (gathered, early) = if fresh {
        std::thread::scope(|scope| {
            let copying = scope.spawn(stage);
            let gathered = decide(settings, wal, Some(&meta));
            (gathered, Some(copying.join()))
        })
    } else {
        (decide(settings, wal, Some(&meta)), None)
    };
    let gathered = gathered?;
    let verdict = &gathered.verdict;
    let mut fields = verdict_fields(verdict);
    if let Some(obs) = &gathered.observation {
        fields.push(("source", obs.origin.as_str().to_string()));
    }
    let (level, decision, exit) = if !verdict.archive {
        (Level::Info, "held", Exit::Held)
    } else {
        let staged = match early {
            Some(Ok(staged)) => staged,
            Some(Err(_)) => bail!("the copy into the archive panicked; nothing was archived"),
            None => stage(),
        };
        let stored = staged
            .and_then(archive_copy::Staged::commit)
            .hint("nothing was archived; PostgreSQL will retry")?;
        let (decision, bytes) = match stored {
            Stored::Copied { bytes } => ("archived", bytes),
            Stored::Exists { bytes } => ("exists", bytes),
        };
        fields.push(("bytes", bytes.to_string()));
        match verdict.valve {
            Some(_) => (Level::Warn, "valve", Exit::Ok),
            None => (Level::Info, decision, Exit::Ok),
        }
    };
    if let (Some(command), Some(event)) = (&settings.on_event, event_of(&run.wal, &gathered)) {
        let hook = run_hook(run, settings, command, event, verdict, &fields);
        fields.push(("event", event.as_str().to_string()));
        fields.push(("hook", hook));
    }
    run.write(level, decision, fields);
    Ok(exit)
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
    let position = settings.policy.position.name(obs.origin);
    let _ = writeln!(
        out,
        "{wal}: segment, wal_segment_size {} MiB",
        obs.segment_size.bytes() >> 20
    );
    if obs.origin == Origin::Ps {
        out.push_str("positions from walsender process titles (sent, not replayed): the database could not be queried\n");
    }
    if let Some(need) = verdict.need {
        let _ = writeln!(
            out,
            "every listed replica must have its {position} position at or past {need} (segment end + {} extra segments)",
            settings.policy.keep_segments
        );
    }
    out.push('\n');
    out.push_str(&status::replica_table(
        &status::replica_views(verdict, obs, &settings.policy, None),
        false,
    ));
    out.push('\n');
    if let Some(t) = &verdict.valve {
        let _ = writeln!(
            out,
            "verdict: ARCHIVE ANYWAY: safety valve {}: {}",
            t.valve, t.detail
        );
        let _ = writeln!(
            out,
            "  left behind (will need the archive or a new base backup):"
        );
        for r in &verdict.reasons {
            let _ = writeln!(out, "  - {r}");
        }
    } else if verdict.archive {
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
    // Cross-check the size, and age the hold, when the file is in this server's pg_wal.
    let in_pg_wal: PathBuf = settings.pgdata.join("pg_wal").join(wal.to_string());
    let meta = std::fs::metadata(&in_pg_wal).ok();
    let g = decide(settings, wal, meta.as_ref())?;
    print!(
        "{}",
        explain(wal, &g.verdict, g.observation.as_ref(), settings)
    );
    Ok(if g.verdict.archive {
        Exit::Ok
    } else {
        Exit::Held
    })
}

/// Runs the parsed command line; every failure becomes exit 2 with a message on stderr
/// (and, for `archive`, a `decision=error` line in the log).
pub fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Guard(guard) => run_guard(cli.config.as_deref(), cli.settings, guard),
        // These two only print what clap knows; they need no settings.
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "walguard",
                &mut std::io::stdout(),
            );
            Exit::Ok
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => Exit::Ok,
                Err(e) => {
                    eprintln!("walguard: error: cannot write the manual page: {e}");
                    Exit::Error
                }
            }
        }
    }
}

fn run_guard(config: Option<&Path>, layer: settings::Layer, guard: Guard) -> Exit {
    let settings = match settings::load(config, layer) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("walguard: error: {e}");
            return Exit::Error;
        }
    };
    let (cmd, wal_name) = match &guard {
        Guard::Archive { wal_name, .. } => ("archive", wal_name.as_str()),
        Guard::Check { wal_name } => ("check", wal_name.as_str()),
        Guard::Status { .. } => ("status", ""),
        Guard::Log { .. } => ("log", ""),
    };
    let run = Run {
        log: (cmd == "archive").then(|| DecisionLog::new(settings.log_file.clone())),
        cmd,
        wal: wal_name.to_string(),
        started: Instant::now(),
    };
    let result = match &guard {
        Guard::Archive { wal_path, .. } => {
            run.arm_watchdog(settings.timeout);
            parse_name(wal_name).and_then(|wal| archive(&run, &settings, wal_path, &wal))
        }
        Guard::Check { .. } => {
            run.arm_watchdog(settings.timeout);
            parse_name(wal_name).and_then(|wal| check(&settings, &wal))
        }
        Guard::Status { json } => {
            run.arm_watchdog(settings.timeout);
            status::run(&settings, *json)
        }
        Guard::Log { file, json } => {
            log_summary::run(file.as_deref().or(settings.log_file.as_deref()), *json)
        }
    };
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

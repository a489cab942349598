//! `walguard archive WAL_PATH WAL_NAME`: PostgreSQL's archive_command.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use walguard_core::decision::{Tripped, Verdict, undecided_valve};
use walguard_core::event::Event;
use walguard_core::header::{ControlStamp, Expected};
use walguard_core::observation::Observation;
use walguard_core::wal::{Lsn, SegmentId, SegmentSize, WalFile};

use super::gather::{self, Gathered, Observer, SHOWN, Undecided, verdict_fields};
use super::invocation::Invocation;
use super::views::{metric_replicas, replica_views};
use crate::exit::{Exit, Hint, describe_error};
use crate::hook::{self, Details};
use crate::log::{self, Level};
use crate::metrics;
use crate::observe::conninfo::{ProcessEnv, Target};
use crate::observe::local;
use crate::observe::sql;
use crate::out::say;
use crate::settings::{Compress, Settings, Source};
use crate::store::copy::{self as archive_copy, Compression, Stored};
use crate::store::{self, commit};

/// A segment file younger than this is copied while the decision is being made.
const FRESH: Duration = Duration::from_secs(1);

/// Runs `on_event` for `event`, within what is left of the timeout; returns how it ended.
fn run_hook(
    run: &Invocation,
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
    // A slow hook must never turn the verdict into an error.
    let limit = run.child_limit(settings.timeout);
    let details = Details {
        event,
        wal: &run.wal,
        replicas: &replicas,
        reason,
    };
    hook::run_hook(command, &details, limit)
}

/// When walguard cannot decide (database unreachable, list unreadable), the valves that
/// need no server still protect the disk: a tripped one archives the segment anyway.
fn undecided(
    settings: &Settings,
    wal: &WalFile,
    meta: &std::fs::Metadata,
    error: anyhow::Error,
) -> Result<Gathered> {
    if !matches!(wal, WalFile::Segment(_)) || error.downcast_ref::<Undecided>().is_none() {
        return Err(error);
    }
    let pressure = local::pressure(&settings.pgdata, meta.modified().ok());
    let Some(tripped) = undecided_valve(&settings.policy.valves, &pressure) else {
        return Err(error);
    };
    let detail = format!(
        "{}; walguard could not decide: {}",
        tripped.detail,
        describe_error(&error)
    );
    let mut verdict = walguard_core::decision::decide(wal, None, &pressure, &[], &settings.policy);
    verdict.archive = true;
    verdict.valve = Some(Tripped {
        valve: tripped.valve,
        detail,
    });
    Ok(Gathered {
        verdict,
        observation: None,
        wal: Some(wal.clone()),
    })
}

/// The gauges after this decision, for `metrics_file`: what one invocation knows without
/// listing `pg_wal` (the waiting segments are counted from positions: PostgreSQL hands
/// over the oldest first, so every segment from this one to the one being written waits).
fn snapshot(
    wal_path: &Path,
    gathered: &Gathered,
    exit: Exit,
    settings: &Settings,
    decision: &str,
) -> metrics::Snapshot {
    let held = exit == Exit::Held;
    let tripped = gathered.verdict.valve.as_ref().map(|t| t.valve);
    let mut snap = metrics::Snapshot {
        held,
        failing: decision == "error",
        valves: ["min_free", "max_retained", "max_hold"]
            .into_iter()
            .map(|v| (v, tripped == Some(v)))
            .collect(),
        ..metrics::Snapshot::default()
    };
    let (Some(obs), Some(WalFile::Segment(id))) = (&gathered.observation, &gathered.wal) else {
        return snap;
    };
    let size = obs.segment_size.bytes();
    let Ok(start) = id.start(obs.segment_size) else {
        return snap;
    };
    let unarchived = obs
        .current_lsn
        .map(|cur| cur.0.saturating_sub(start.0) / size);
    let waiting = unarchived.map(|n| if held { n } else { n.saturating_sub(1) });
    // The oldest waiting segment is this one when it stays, else the next one.
    let oldest = if held {
        Some(wal_path.to_path_buf())
    } else {
        let next = SegmentId::containing(id.timeline, Lsn(start.0 + size), obs.segment_size);
        wal_path.parent().map(|dir| dir.join(next.to_string()))
    };
    snap.up = true;
    snap.waiting_segments = waiting;
    snap.waiting_bytes = waiting.map(|n| n * size);
    snap.oldest_waiting_seconds = match waiting {
        Some(0) => Some(0.0),
        _ => oldest
            .and_then(|p| std::fs::metadata(p).ok()?.modified().ok()?.elapsed().ok())
            .map(|d| d.as_secs_f64()),
    };
    snap.replicas = metric_replicas(&replica_views(
        &gathered.verdict,
        obs,
        &settings.policy,
        None,
    ));
    snap
}

/// Rewrites `metrics_file`, if set, with this decision's time added to the earlier ones
/// and the gauges of `snapshot`; `None` (a file that is not a segment: nothing else was
/// observed) keeps the other gauges as they were. A failure is said on stderr and changes
/// nothing else.
fn write_metrics(settings: &Settings, decision: &str, snapshot: Option<metrics::Snapshot>) {
    let Some(path) = settings.metrics_file.as_deref() else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let written = metrics::update(path, |previous| {
        let mut last = metrics::last_decisions(previous);
        last.insert(decision.to_string(), now);
        match snapshot {
            Some(snapshot) => metrics::render(&metrics::Snapshot {
                last_decisions: last,
                ..snapshot
            }),
            None => metrics::carry_over(previous, &last),
        }
    });
    if let Err(e) = written {
        say(&format!(
            "walguard: cannot write the metrics file {}: {e}",
            path.display()
        ));
    }
}

pub fn run(
    run: &Invocation,
    settings: &Settings,
    observer: Observer,
    wal_path: &Path,
    wal: &WalFile,
) -> Result<Exit> {
    let result = archive(run, settings, observer, wal_path, wal);
    if result.is_err() {
        let failing = metrics::Snapshot {
            failing: true,
            ..metrics::Snapshot::default()
        };
        write_metrics(settings, "error", Some(failing));
    }
    result
}

/// Hands the file to `archive_via`, within what is left of the timeout (the command is
/// killed with its process group at the deadline). Its exit 0 is walguard's.
fn hand_off(run: &Invocation, settings: &Settings, via: &str, wal_path: &Path) -> Result<()> {
    let command = walguard_core::template::expand(via, &wal_path.to_string_lossy(), &run.wal)
        .hint("nothing was handed over; fix archive_via")?;
    let ran = hook::run(
        &command,
        &[],
        &hook::VIA_UNSET,
        run.child_limit(settings.timeout),
        true,
    );
    if ran.ok() {
        return Ok(());
    }
    bail!(
        "archive_via ({}) did not archive {}: {}; PostgreSQL will retry",
        walguard_core::template::program(via),
        run.wal,
        ran.describe()
    )
}

/// The header check, before a segment leaves pg_wal by either road.
fn check_header(
    run: &Invocation,
    settings: &Settings,
    wal_path: &Path,
    gathered: &Gathered,
    size: u64,
) -> Result<()> {
    let (Some(WalFile::Segment(segment)), true) = (&gathered.wal, settings.header_check) else {
        return Ok(());
    };
    let size = gathered
        .observation
        .as_ref()
        .map(|o| o.segment_size)
        .map_or_else(|| SegmentSize::new(size), Ok)?;
    let expected = Expected {
        segment: *segment,
        size,
        sysid: run
            .sysid
            .or_else(|| gathered.observation.as_ref()?.system_identifier),
    };
    store::header::check_file(wal_path, &expected).hint(
        "nothing was archived: is it another cluster's file, a recycled or zeroed file, or a wrong %p?",
    )
}

/// How long a history file or backup label waits to learn whether the server asked is
/// the one running walguard: such a file is archived at once, and an unreachable
/// server must not delay a failover.
const IDENTITY_PROBE: std::time::Duration = std::time::Duration::from_secs(3);
/// What was archived from a server that is not the one asked goes wrong quietly and
/// for good: a copy restored from a base backup inherits archive_command and a conninfo
/// pointing at the production primary, promotes to a timeline of its own, and its files
/// land in the production archive decided by production's positions (the system
/// identifier is the same). The server asked must be the one whose data directory this
/// is: the same last checkpoint in `global/pg_control` (read before and after asking,
/// as a checkpoint may fall in between), and no file of a timeline newer than its own.
fn same_server(
    settings: &Settings,
    obs: &Observation,
    wal: &WalFile,
    control_before: Option<ControlStamp>,
) -> Result<()> {
    let what_to_do = "nothing was archived. If this server was restored from a backup (or is a \
                      copy for tests), switch archiving off on it: ALTER SYSTEM SET archive_mode = off, \
                      then restart; otherwise point conninfo at this server (or leave host and port unset)";
    let timeline = match wal {
        WalFile::Segment(id) | WalFile::Partial(id) | WalFile::Backup(id, _) => id.timeline,
        WalFile::History(tli) => *tli,
    };
    if let Some(theirs) = obs.timeline.filter(|&t| !obs.in_recovery && timeline > t) {
        bail!(
            "{wal} is of timeline {timeline}, but the server at conninfo writes timeline {theirs}: \
             it is not the one running this archive_command; {what_to_do}"
        );
    }
    // A standby asking its primary (or the other way round): the same checkpoint and
    // even the same second can be copied, the state cannot.
    if let Some(ours) = local::control_in_recovery(&settings.pgdata)
        && ours != obs.in_recovery
    {
        bail!(
            "the server at conninfo is {}, but this data directory's server is {}: \
             it is not the one running this archive_command; {what_to_do}",
            if obs.in_recovery {
                "in recovery"
            } else {
                "a primary"
            },
            if ours { "in recovery" } else { "a primary" },
        );
    }
    let Some(theirs) = obs.control else {
        return Ok(());
    };
    let after = local::control_stamp(&settings.pgdata);
    match (control_before, after) {
        (None, None) => Ok(()),
        (before, after) if before == Some(theirs) || after == Some(theirs) => Ok(()),
        (before, after) => bail!(
            "the server at conninfo is not the one running this archive_command: its pg_control \
             says {theirs}, but this data directory's ({}/global/pg_control) says {}; {what_to_do}",
            settings.pgdata.display(),
            after
                .or(before)
                .map_or_else(|| "?".to_string(), |l| l.to_string()),
        ),
    }
}

/// The server's facts for [`same_server`] when a file needs no decision: asked briefly,
/// and only over SQL; `None` when it cannot be asked (the file then goes as always).
fn probe(settings: &Settings) -> Option<Observation> {
    if settings.source == Source::Ps {
        return None;
    }
    let target = Target::new(settings.conninfo.as_deref(), settings.timeout, &ProcessEnv).ok()?;
    sql::observe_within(&target, IDENTITY_PROBE.min(settings.timeout / 2)).ok()
}

/// Where an archived file goes.
#[derive(Clone, Copy)]
enum Road<'a> {
    /// Handed to `archive_via`.
    Via(&'a str),
    /// Copied into `archive_dir` by walguard.
    Copy(&'a Path),
}

fn archive(
    run: &Invocation,
    settings: &Settings,
    observer: Observer,
    wal_path: &Path,
    wal: &WalFile,
) -> Result<Exit> {
    let road = match (
        settings.archive_via.as_deref(),
        settings.archive_dir.as_deref(),
    ) {
        (Some(via), _) => Road::Via(via),
        (None, Some(dir)) => Road::Copy(dir),
        (None, None) => bail!(
            "no archive directory: set archive_dir in the config file, --archive-dir, or WALGUARD_ARCHIVE_DIR \
             (or archive_via, to hand the file to another archiver)"
        ),
    };
    let meta = std::fs::metadata(wal_path)
        .with_context(|| format!("cannot read WAL_PATH {}", wal_path.display()))
        .hint("archive_command must pass %p, relative to the data directory")?;
    gather::check_segment_size(wal, wal_path, meta.len())?;
    // A segment that has just been finished is almost always archived at once, so its
    // copy runs while the server is asked, and only becomes durable and visible if the
    // verdict says so. A retry (an older file) is more likely held: it is copied only
    // after the verdict, so an outage does not rewrite the archive's disk every second.
    // Inside the server, asking takes microseconds: nothing to overlap, and no thread is
    // started in PostgreSQL's archiver.
    let fresh = matches!(observer, Observer::Outside)
        && meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < FRESH);
    // Segments are compressed as asked; history and backup-label files stay plain (small,
    // and read by people).
    let compression = match (wal, settings.compress) {
        (WalFile::Segment(_) | WalFile::Partial(_), Compress::Zstd) => Compression::Zstd {
            level: settings.compress_level,
        },
        _ => Compression::None,
    };
    let stage =
        |dir: &Path| archive_copy::stage(wal_path, dir, &run.wal, settings.timeout, compression);
    let outside = matches!(observer, Observer::Outside);
    // Read before the server is asked (and again after): a checkpoint in between must
    // not make the same server look like another.
    let control_before = outside
        .then(|| local::control_stamp(&settings.pgdata))
        .flatten();
    let decide = || gather::decide(settings, observer, wal, Some((wal_path, &meta)));
    let (gathered, early) = match road {
        Road::Copy(dir) if fresh => std::thread::scope(|scope| {
            let copying = scope.spawn(|| stage(dir));
            (decide(), Some(copying.join()))
        }),
        _ => (decide(), None),
    };
    let gathered = gathered.or_else(|e| undecided(settings, wal, &meta, e))?;
    if outside {
        // A file that needs no decision is still never archived from a server that is
        // not the one asked (a restored copy's new timeline).
        let probed = match (&gathered.observation, wal) {
            (None, WalFile::Segment(_)) => None,
            (None, _) => probe(settings),
            (Some(_), _) => None,
        };
        if let Some(obs) = gathered.observation.as_ref().or(probed.as_ref()) {
            same_server(settings, obs, wal, control_before)?;
        }
    }
    let verdict = &gathered.verdict;
    let mut fields = verdict_fields(verdict);
    if let Some(obs) = &gathered.observation {
        fields.push(("source", obs.origin.as_str().to_string()));
    }
    let (level, decision, exit) = if !verdict.archive {
        (Level::Info, "held", Exit::Held)
    } else {
        check_header(run, settings, wal_path, &gathered, meta.len())?;
        let decision = match road {
            Road::Via(via) => {
                hand_off(run, settings, via, wal_path)?;
                fields.push(("bytes", meta.len().to_string()));
                "archived"
            }
            Road::Copy(dir) => {
                let staged = match early {
                    Some(Ok(staged)) => staged,
                    Some(Err(_)) => {
                        bail!("the copy into the archive panicked; nothing was archived")
                    }
                    None => stage(dir),
                };
                // A segment must be exactly the size the decision validated (a file
                // truncated while it was copied is refused); other files are what was
                // read and fsynced.
                let expected = match wal {
                    WalFile::Segment(_) => Some(meta.len()),
                    _ => None,
                };
                let stored = staged
                    .and_then(|s| s.commit(expected))
                    .hint("PostgreSQL will retry")?;
                let (decision, bytes) = match stored {
                    Stored::Copied { bytes, stored } => {
                        if stored != bytes {
                            fields.push(("stored", stored.to_string()));
                        }
                        ("archived", bytes)
                    }
                    Stored::Exists { bytes } => ("exists", bytes),
                };
                fields.push(("bytes", bytes.to_string()));
                decision
            }
        };
        match verdict.valve {
            Some(_) => (Level::Warn, "valve", Exit::Ok),
            None => (Level::Info, decision, Exit::Ok),
        }
    };
    // A signal during the commit waited for it; now end without starting the hook.
    if let Some(command) = settings.on_event.as_ref().filter(|_| !commit::signalled()) {
        let previous = settings
            .log_file
            .as_deref()
            .and_then(|path| log::previous_outcome(path, &run.wal));
        if let Some(event) = gathered.event(&run.wal, previous) {
            let hook = run_hook(run, settings, command, event, verdict, &fields);
            fields.push(("event", event.as_str().to_string()));
            fields.push(("hook", hook));
        }
    }
    // PostgreSQL's own log only says "archive command failed with exit code 1": say why,
    // in one line, unless the decision line itself goes to stderr.
    if exit == Exit::Held && settings.log_file.is_some() {
        say(&format!(
            "walguard: held {}: {}",
            run.wal,
            walguard_core::decision::join_bounded(&verdict.reasons, SHOWN, "; ")
        ));
    }
    run.write(level, decision, fields);
    if settings.metrics_file.is_some() {
        let snapshot = matches!(wal, WalFile::Segment(_))
            .then(|| snapshot(wal_path, &gathered, exit, settings, decision));
        write_metrics(settings, decision, snapshot);
    }
    Ok(exit)
}

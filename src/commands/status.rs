//! `walguard status [--json]`: the cluster as walguard sees it, for a person or a
//! monitoring check.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;
use walguard_core::decision::{self, Policy, join_bounded};
use walguard_core::observation::{Archiver, Origin, Pressure, Space};
use walguard_core::units::human_bytes;
use walguard_core::wal::{Lsn, SegmentId, WalFile};

use super::gather;
use super::views::{ReplicaView, metric_replicas, replica_table, replica_views};
use crate::cli::Format;
use crate::exit::{Exit, Hint};
use crate::metrics;
use crate::observe::local;
use crate::observe::sql::Ready;
use crate::out::show;
use crate::render::table;
use crate::settings::{Settings, Source};

/// How many reasons and table rows a screen shows before "and N more".
const LISTED: usize = 20;

/// A file waiting to be archived (`.ready`).
struct Waiting {
    name: String,
    bytes: u64,
    modified: Option<SystemTime>,
}

/// The `.ready` files in `pgdata`'s `pg_wal/archive_status`.
fn listed_ready(pgdata: &Path) -> Result<Vec<Ready>> {
    let dir = pgdata.join("pg_wal/archive_status");
    let entries = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))
        .hint(
            "run status where the server can be asked (PostgreSQL 12+ lists them with pg_ls_archive_statusdir, \
             which needs pg_monitor), or set pgdata to the data directory and run it as a user who can read it",
        )?;
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".ready")?.to_string();
            Some(Ready {
                modified: e.metadata().ok().and_then(|m| m.modified().ok()),
                name,
            })
        })
        .collect())
}

/// The waiting files, oldest first, and the data directory when it is readable here.
/// They come from the server (`pg_ls_archive_statusdir()`, 12+), else from the server's
/// data directory when this host can read it, else from `pgdata`.
fn waiting(
    settings: &Settings,
    extras: Option<&crate::observe::sql::Extras>,
    segment_size: u64,
) -> Result<(Vec<Waiting>, std::path::PathBuf)> {
    let local = extras
        .and_then(|x| x.data_directory.clone())
        .filter(|d| d.join("pg_wal").is_dir())
        .unwrap_or_else(|| settings.pgdata.clone());
    let ready = match extras.and_then(|x| x.waiting.clone()) {
        Some(ready) => ready,
        None => listed_ready(&local)?,
    };
    let mut files: Vec<Waiting> = ready
        .into_iter()
        .map(|r| {
            let bytes = match r.name.parse::<WalFile>() {
                Ok(WalFile::Segment(_)) => segment_size,
                _ => std::fs::metadata(local.join("pg_wal").join(&r.name)).map_or(0, |m| m.len()),
            };
            Waiting {
                bytes,
                modified: r.modified,
                name: r.name,
            }
        })
        .collect();
    // PostgreSQL archives oldest first; within a timeline, name order is WAL order.
    files.sort_by(|a, b| a.name[8.min(a.name.len())..].cmp(&b.name[8.min(b.name.len())..]));
    Ok((files, local))
}

#[derive(Serialize)]
struct ValveView {
    name: &'static str,
    threshold: Option<String>,
    current: Option<String>,
    /// How far towards tripping, in percent (100 or more trips it), when it applies.
    used_percent: Option<f64>,
    tripped: bool,
}

/// What archiving does now, for a person and for a monitoring check (the exit code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Segments are archived as they finish.
    Flowing,
    /// Nothing waits, but the segment being written will be held when it finishes (a
    /// replica is missing, unlisted or invisible: not just a little behind).
    WillHold,
    /// A listed replica still needs the oldest waiting segment.
    Held,
    /// Archiving (the command or the module) fails though walguard would archive: the archive is unusable.
    Failing,
}

impl State {
    pub fn exit(self) -> Exit {
        match self {
            State::Flowing => Exit::Ok,
            State::WillHold | State::Held => Exit::Held,
            State::Failing => Exit::Error,
        }
    }
}

#[derive(Serialize)]
struct VerdictView {
    state: State,
    text: String,
    held_by: Vec<String>,
    oldest_waiting: Option<String>,
    held_since: Option<String>,
    /// Why it is held, will hold or fails (every reason).
    reasons: Vec<String>,
    /// What is wrong but holds nothing.
    warnings: Vec<String>,
    /// Settings accepted but without effect (conninfo keys walguard ignores).
    notes: Vec<String>,
}

#[derive(Serialize)]
struct WaitingView {
    files: usize,
    segments: usize,
    bytes: u64,
    oldest: Option<String>,
    /// How long the oldest waiting file has waited.
    oldest_seconds: Option<f64>,
}

/// The `--json` schema (stable: fields are only ever added).
#[derive(Serialize)]
struct StatusView {
    verdict: VerdictView,
    /// `primary` or `standby` (which acknowledges only what the archive holds).
    role: &'static str,
    /// This server's own list line, and why it is taken to be.
    own_line: Option<OwnView>,
    source: Origin,
    segment_size: u64,
    current_lsn: Option<String>,
    replicas: Vec<ReplicaView>,
    archiver: Option<Archiver>,
    waiting: WaitingView,
    pg_wal_space: Option<Space>,
    valves: Vec<ValveView>,
    archive: ArchiveView,
}

#[derive(Serialize)]
struct OwnView {
    entry: String,
    why: String,
}

/// How current the archive is: held segments are archived ahead (`archive_ahead`).
#[derive(Serialize)]
struct ArchiveView {
    /// The newest segment in the archive (from `archive_dir`, or with `archive_via` from
    /// the decision log).
    newest: Option<String>,
    /// How far its end trails the server's position.
    behind_bytes: Option<u64>,
    /// Why the last attempt, a hold, could not archive ahead.
    ahead_error: Option<String>,
}

/// The newest segment in `archive_dir`, in WAL order.
fn newest_in(dir: &Path) -> Option<SegmentId> {
    let (files, _) = crate::store::listing::names(dir).ok()?;
    files
        .into_iter()
        .filter_map(|(_, w)| match w {
            WalFile::Segment(id) => Some(id),
            _ => None,
        })
        .max_by_key(|id| (id.log, id.seg, id.timeline))
}

fn archive_view(settings: &Settings, obs: &walguard_core::observation::Observation) -> ArchiveView {
    let log = settings.log_file.as_deref();
    let newest = match (&settings.archive_via, &settings.archive_dir) {
        (None, Some(dir)) => newest_in(dir),
        _ => log.and_then(crate::log::last_ahead).and_then(|l| {
            match l.newest_archived.parse::<WalFile>() {
                Ok(WalFile::Segment(id)) => Some(id),
                _ => None,
            }
        }),
    };
    let behind_bytes = newest.and_then(|id| {
        let end = id.end(obs.segment_size).ok()?;
        Some(obs.current_lsn?.0.saturating_sub(end.0))
    });
    ArchiveView {
        newest: newest.map(|id| id.to_string()),
        behind_bytes,
        ahead_error: log
            .and_then(crate::log::last_decision)
            .filter(|l| l.decision == "held" && !l.ahead_error.is_empty())
            .map(|l| l.ahead_error),
    }
}

fn valve_views(policy: &Policy, pressure: &Pressure, retained: Option<u64>) -> Vec<ValveView> {
    let v = &policy.valves;
    let min_free = pressure
        .pg_wal_space
        .map(|s| (s, v.min_free.bytes(s.total)));
    vec![
        ValveView {
            name: "min_free",
            threshold: Some(v.min_free.to_string()),
            current: pressure.pg_wal_space.map(|s| {
                format!(
                    "{} free of {}",
                    human_bytes(s.available),
                    human_bytes(s.total)
                )
            }),
            // Closeness: how much of the space above the floor is used up.
            used_percent: min_free.filter(|(_, floor)| *floor > 0).map(|(s, floor)| {
                let used = s.total.saturating_sub(s.available) as f64;
                100.0 * used / (s.total.saturating_sub(floor).max(1)) as f64
            }),
            tripped: min_free.is_some_and(|(s, floor)| floor > 0 && s.available < floor),
        },
        ValveView {
            name: "max_retained",
            threshold: v.max_retained.map(human_bytes),
            current: retained.map(|r| format!("{} held back", human_bytes(r))),
            used_percent: v
                .max_retained
                .zip(retained)
                .map(|(l, r)| 100.0 * r as f64 / l.max(1) as f64),
            tripped: v.max_retained.zip(retained).is_some_and(|(l, r)| r > l),
        },
        ValveView {
            name: "max_hold",
            threshold: v
                .max_hold
                .map(|d| humantime::format_duration(d).to_string()),
            current: pressure.segment_age.map(|a| {
                format!(
                    "oldest waiting for {}",
                    humantime::format_duration(Duration::from_secs(a.as_secs()))
                )
            }),
            used_percent: v
                .max_hold
                .zip(pressure.segment_age)
                .map(|(l, a)| 100.0 * a.as_secs_f64() / l.as_secs_f64().max(0.001)),
            tripped: v
                .max_hold
                .zip(pressure.segment_age)
                .is_some_and(|(l, a)| a > l),
        },
    ]
}

/// `n thing` or `n things`.
fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// Why archiving fails although walguard would archive, when it does: walguard's
/// own last decision was an error, or (without a log) PostgreSQL's last failure is newer
/// than its last success.
fn failing(settings: &Settings, archiver: Option<&Archiver>) -> Option<String> {
    if let Some(path) = settings.log_file.as_deref() {
        let last = crate::log::last_decision(path)?;
        return (last.decision == "error").then(|| {
            format!(
                "archiving fails: the last attempt ({} at {}) ended in an error: {}",
                last.wal, last.ts, last.reason
            )
        });
    }
    let a = archiver?;
    let failed = a.last_failed_time.as_deref()?;
    let newer = a.last_archived_time.as_deref().is_none_or(|ok| failed > ok);
    newer.then(|| {
        format!(
            "archiving fails: PostgreSQL's last attempt ({} at {failed}) failed after its last success, \
             though walguard would archive it; see the server log for walguard's message",
            a.last_failed_wal.as_deref().unwrap_or("?")
        )
    })
}

fn build(settings: &Settings) -> Result<StatusView> {
    let list = gather::load_list(settings)?;
    // Process titles do not tell the segment size: a waiting segment's file does.
    let segment_bytes = match settings.source {
        Source::Sql => None,
        _ => listed_ready(&settings.pgdata).ok().and_then(|ready| {
            ready.iter().find_map(|r| {
                std::fs::metadata(settings.pgdata.join("pg_wal").join(&r.name))
                    .ok()
                    .map(|m| m.len())
            })
        }),
    };
    let obs = gather::observe(settings, segment_bytes, gather::wants_slots(&list))?;
    let extras = gather::extras(settings, &obs);
    let (waiting, pgdata) = waiting(settings, extras.as_ref(), obs.segment_size.bytes())?;
    let oldest_segment = waiting
        .iter()
        .find_map(|w| match w.name.parse::<WalFile>() {
            Ok(file @ WalFile::Segment(_)) => Some((file, w)),
            _ => None,
        });
    let pressure = local::pressure(
        &pgdata,
        oldest_segment.as_ref().and_then(|(_, w)| w.modified),
    );
    // The segment being written: the next one PostgreSQL will hand over.
    let timeline = obs.timeline.unwrap_or(1);
    let current = obs.current_lsn.unwrap_or(Lsn(0));
    let next = SegmentId::containing(timeline, current, obs.segment_size);
    // The decision PostgreSQL's next attempt will get: for the oldest waiting segment,
    // or, with none waiting, for the last finished one. Its reasons that do not depend on
    // positions (a missing, unlisted or invisible replica) will hold the segment being
    // written too.
    let subject = match &oldest_segment {
        Some((file, _)) => file.clone(),
        None => WalFile::Segment(SegmentId::containing(
            timeline,
            Lsn(current.0.saturating_sub(obs.segment_size.bytes())),
            obs.segment_size,
        )),
    };
    let (mut scope, own_warning) = gather::scope(settings, &list, &obs);
    if scope.standby {
        scope.archived = Some(gather::archived(settings, &subject, None, Some(&obs)));
    }
    let mut verdict = decision::decide(
        &subject,
        Some(&obs),
        &pressure,
        &list,
        &settings.policy,
        &scope,
    );
    verdict.warnings.extend(own_warning);
    let retained = oldest_segment
        .as_ref()
        .and_then(|(f, _)| decision::retained(&obs, f));
    let segment_ends: Vec<Lsn> = waiting
        .iter()
        .filter_map(|w| match w.name.parse::<WalFile>() {
            Ok(WalFile::Segment(id)) => id.end(obs.segment_size).ok(),
            _ => None,
        })
        .collect();
    let replicas = replica_views(&verdict, &obs, &settings.policy, Some(&segment_ends));
    let segments = segment_ends.len();
    let bytes: u64 = waiting.iter().map(|w| w.bytes).sum();
    let lasting: Vec<String> = verdict
        .lasting_reasons()
        .iter()
        .map(|r| r.to_string())
        .collect();
    let not_archiving = extras.as_ref().and_then(|x| x.not_archiving.clone());
    let state = match &oldest_segment {
        _ if not_archiving.is_some() => State::Failing,
        Some(_) if !verdict.archive => State::Held,
        None if !lasting.is_empty() && verdict.valve.is_none() => State::WillHold,
        _ if failing(settings, obs.archiver.as_ref()).is_some() => State::Failing,
        _ => State::Flowing,
    };
    let since = oldest_segment
        .as_ref()
        .and_then(|(_, w)| w.modified)
        .map(|t| humantime::format_rfc3339_seconds(t).to_string());
    let reasons: Vec<String> = match state {
        State::Held => verdict.reasons.iter().map(|r| r.to_string()).collect(),
        State::WillHold => lasting.clone(),
        State::Failing => not_archiving
            .map(|why| format!("archiving is not configured: {why}"))
            .or_else(|| failing(settings, obs.archiver.as_ref()))
            .into_iter()
            .collect(),
        State::Flowing => Vec::new(),
    };
    let text = match state {
        State::Held => format!(
            "held by {} since {}, {}, {}",
            verdict.culprits(gather::SHOWN),
            since.as_deref().unwrap_or("?"),
            count(segments, "segment"),
            human_bytes(bytes)
        ),
        State::WillHold => format!(
            "will hold: {next} (being written) will be held when it is finished: {}",
            join_bounded(&lasting, gather::SHOWN, "; ")
        ),
        State::Failing => reasons.join("; "),
        State::Flowing => match (&verdict.valve, waiting.len()) {
            (Some(t), _) => format!(
                "archiving flowing, through the {} safety valve: {}",
                t.valve, t.detail
            ),
            (None, 0) => "archiving flowing".to_string(),
            (None, n) => format!(
                "archiving flowing, {} waiting for the archiver",
                count(n, "file")
            ),
        },
    };
    let held = matches!(state, State::Held | State::WillHold);
    let text = if verdict.standby {
        format!("standby: {text}")
    } else {
        text
    };
    Ok(StatusView {
        role: if verdict.standby {
            "standby"
        } else {
            "primary"
        },
        own_line: verdict
            .own
            .clone()
            .map(|(entry, why)| OwnView { entry, why }),
        verdict: VerdictView {
            state,
            text,
            held_by: if held {
                verdict.blame.clone()
            } else {
                Vec::new()
            },
            oldest_waiting: waiting.first().map(|w| w.name.clone()),
            held_since: since.filter(|_| state == State::Held),
            reasons,
            warnings: verdict.warnings.clone(),
            notes: gather::conninfo_notes(settings),
        },
        source: obs.origin,
        segment_size: obs.segment_size.bytes(),
        current_lsn: obs.current_lsn.map(|l| l.to_string()),
        replicas,
        archiver: obs.archiver.clone(),
        waiting: WaitingView {
            files: waiting.len(),
            segments,
            bytes,
            oldest: waiting.first().map(|w| w.name.clone()),
            oldest_seconds: waiting
                .first()
                .and_then(|w| w.modified?.elapsed().ok())
                .map(|d| d.as_secs_f64()),
        },
        pg_wal_space: pressure.pg_wal_space,
        archive: archive_view(settings, &obs),
        valves: valve_views(&settings.policy, &pressure, retained),
    })
}

fn render(v: &StatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "verdict: {}", v.verdict.text);
    if let Some(own) = &v.own_line {
        let _ = writeln!(
            out,
            "this server: {} ({}); its line is skipped",
            own.entry, own.why
        );
    }
    if let Some(newest) = &v.archive.newest {
        let _ = writeln!(
            out,
            "newest in the archive: {newest}{}",
            v.archive
                .behind_bytes
                .map(|b| format!(" ({} behind the server)", human_bytes(b)))
                .unwrap_or_default()
        );
    }
    if let Some(failed) = &v.archive.ahead_error {
        let _ = writeln!(out, "archiving ahead failed: {failed}");
    }
    if v.verdict.reasons.len() > 1 {
        for r in v.verdict.reasons.iter().take(LISTED) {
            let _ = writeln!(out, "  - {r}");
        }
        if v.verdict.reasons.len() > LISTED {
            let _ = writeln!(
                out,
                "  - and {} more (status --json lists them all)",
                v.verdict.reasons.len() - LISTED
            );
        }
    }
    for w in &v.verdict.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    for n in &v.verdict.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "replicas (source {}, wal_segment_size {}, primary at {}):",
        if v.source == Origin::Ps {
            "process titles: sent positions"
        } else {
            "pg_stat_replication"
        },
        human_bytes(v.segment_size),
        v.current_lsn.as_deref().unwrap_or("?")
    );
    out.push_str(&replica_table(&v.replicas, true, LISTED));
    out.push_str(&super::views::slot_lines(&v.replicas));
    let _ = writeln!(
        out,
        "\nwaiting in pg_wal/archive_status: {} ({}, {}), oldest {}",
        count(v.waiting.files, "file"),
        count(v.waiting.segments, "segment"),
        human_bytes(v.waiting.bytes),
        v.waiting.oldest.as_deref().unwrap_or("-")
    );
    if let Some(a) = &v.archiver {
        let _ = writeln!(
            out,
            "archiver: last archived {} at {}; last failed {} at {}; {}",
            a.last_archived_wal.as_deref().unwrap_or("-"),
            a.last_archived_time.as_deref().unwrap_or("-"),
            a.last_failed_wal.as_deref().unwrap_or("-"),
            a.last_failed_time.as_deref().unwrap_or("-"),
            count(a.failed_count as usize, "failure")
        );
    }
    out.push_str("\nsafety valves:\n");
    let rows: Vec<Vec<String>> = v
        .valves
        .iter()
        .map(|valve| {
            vec![
                valve.name.to_string(),
                valve.threshold.clone().unwrap_or_else(|| "off".into()),
                valve.current.clone().unwrap_or_else(|| "-".into()),
                valve
                    .used_percent
                    .map_or("-".into(), |p| format!("{p:.0}%")),
                if valve.tripped {
                    "TRIPPED".into()
                } else {
                    "ok".into()
                },
            ]
        })
        .collect();
    out.push_str(&table(&["VALVE", "THRESHOLD", "NOW", "TOWARDS", ""], &rows));
    out
}

/// The view as Prometheus gauges; `None` when status could not ask the server.
fn metrics(view: Option<&StatusView>, settings: &Settings) -> metrics::Snapshot {
    let last_decisions = settings
        .log_file
        .as_deref()
        .map(crate::log::last_times)
        .unwrap_or_default();
    let Some(v) = view else {
        return metrics::Snapshot {
            last_decisions,
            ..metrics::Snapshot::default()
        };
    };
    metrics::Snapshot {
        up: true,
        held: matches!(v.verdict.state, State::Held | State::WillHold),
        failing: v.verdict.state == State::Failing,
        waiting_segments: Some(v.waiting.segments as u64),
        waiting_bytes: Some(v.waiting.bytes),
        oldest_waiting_seconds: Some(v.waiting.oldest_seconds.unwrap_or(0.0)),
        archive_behind_bytes: v.archive.behind_bytes,
        replicas: metric_replicas(&v.replicas),
        last_decisions,
        valves: v
            .valves
            .iter()
            .map(|valve| (valve.name, valve.tripped))
            .collect(),
    }
}

pub fn run(settings: &Settings, format: Format) -> Result<Exit> {
    let view = match build(settings) {
        Ok(view) => view,
        Err(e) if format == Format::Prometheus && gather::not_accepting(&e).is_none() => {
            // A scrape still gets walguard_up 0; the reason goes to stderr.
            show(&metrics::render(&metrics(None, settings)))?;
            return Err(e);
        }
        Err(e) => return not_accepting(e, format),
    };
    match format {
        Format::Json => show(&format!("{}\n", serde_json::to_string_pretty(&view)?))?,
        Format::Table => show(&render(&view))?,
        Format::Prometheus => show(&metrics::render(&metrics(Some(&view), settings)))?,
    }
    Ok(view.verdict.state.exit())
}

/// Shutting down or starting up: archiving is held until it is up, not broken.
fn not_accepting(e: anyhow::Error, format: Format) -> Result<Exit> {
    let Some(message) = gather::not_accepting(&e) else {
        return Err(e);
    };
    let reason = walguard_core::decision::Reason::NotAccepting(message).to_string();
    let text = format!("held: {reason}");
    match format {
        Format::Json => {
            let view = serde_json::json!({"verdict": {"state": State::Held, "text": text, "reasons": [reason]}});
            show(&format!("{}\n", serde_json::to_string_pretty(&view)?))?;
        }
        Format::Table => show(&format!("verdict: {text}\n"))?,
        Format::Prometheus => show(&format!(
            "# {text}\n{}",
            metrics::render(&metrics::Snapshot {
                up: true,
                held: true,
                ..metrics::Snapshot::default()
            })
        ))?,
    }
    Ok(Exit::Held)
}

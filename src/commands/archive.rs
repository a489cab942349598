//! `walguard archive WAL_PATH WAL_NAME`: PostgreSQL's archive_command.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use walguard_core::decision::{Tripped, Verdict, undecided_valve};
use walguard_core::event::Event;
use walguard_core::wal::{Lsn, SegmentId, WalFile};

use super::gather::{self, Gathered, Observer, SHOWN, Undecided, verdict_fields};
use super::invocation::Invocation;
use super::put::{self, Road};
use super::views::{metric_replicas, replica_views};
use super::{ahead, identity};
use crate::exit::{Exit, Hint, describe_error};
use crate::hook::{self, Details};
use crate::log::{self, Level};
use crate::metrics;
use crate::observe::local;
use crate::out::say;
use crate::settings::Settings;
use crate::store::commit;

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
    let mut verdict = walguard_core::decision::decide(
        wal,
        None,
        &pressure,
        &[],
        &settings.policy,
        &Default::default(),
    );
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
    newest_archived: Option<&str>,
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
    // The newest segment in the archive: this one once released, else the newest that
    // went ahead of the hold.
    let newest = match (held, newest_archived.map(str::parse::<WalFile>)) {
        (false, _) => Some(*id),
        (true, Some(Ok(WalFile::Segment(newest)))) => Some(newest),
        _ => None,
    };
    snap.archive_behind_bytes = newest
        .and_then(|n| n.end(obs.segment_size).ok())
        .zip(obs.current_lsn)
        .map(|(end, cur)| cur.0.saturating_sub(end.0));
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

fn archive(
    run: &Invocation,
    settings: &Settings,
    observer: Observer,
    wal_path: &Path,
    wal: &WalFile,
) -> Result<Exit> {
    let road = Road::of(settings)?;
    let meta = std::fs::metadata(wal_path)
        .with_context(|| format!("cannot read WAL_PATH {}", wal_path.display()))
        .hint("archive_command must pass %p, relative to the data directory")?;
    gather::check_segment_size(wal, wal_path, meta.len())?;
    // The copy runs while the server is asked, and only becomes durable and visible once
    // the verdict is known (archived, or archived ahead of a hold). With archive_ahead a
    // held file is copied anyway, so every file overlaps (a file the archive holds
    // already costs a lookup); without it only a just-finished segment does, and a retry
    // is copied after the verdict, so an outage does not rewrite the archive's disk every
    // second. A standby never writes into the archive: nothing to overlap. Inside the
    // server, asking takes microseconds: nothing to overlap, and no thread is started in
    // PostgreSQL's archiver.
    let outside = matches!(observer, Observer::Outside);
    let overlap = outside
        && local::recovery(&settings.pgdata) == local::Recovery::None
        && (settings.archive_ahead
            || meta
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < FRESH));
    // Read before the server is asked (and again after): a checkpoint in between must
    // not make the same server look like another.
    let control_before = outside
        .then(|| local::control_stamp(&settings.pgdata))
        .flatten();
    let decide = || gather::decide(settings, observer, wal, Some((wal_path, &meta)));
    let (gathered, early) = match road {
        Road::Copy(dir) if overlap => std::thread::scope(|scope| {
            let copying = scope.spawn(|| put::stage(settings, dir, wal_path, &run.wal, wal));
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
            (None, _) => identity::probe(settings),
            (Some(_), _) => None,
        };
        if let Some(obs) = gathered.observation.as_ref().or(probed.as_ref()) {
            identity::same_server(settings, obs, wal, control_before)?;
        }
    }
    let verdict = &gathered.verdict;
    let mut fields = verdict_fields(verdict);
    if let Some(obs) = &gathered.observation {
        fields.push(("source", obs.origin.as_str().to_string()));
    }
    let file = put::File {
        path: wal_path,
        name: &run.wal,
        wal,
        bytes: meta.len(),
        segment_size: gathered.observation.as_ref().map(|o| o.segment_size),
        sysid: run
            .sysid
            .or_else(|| gathered.observation.as_ref()?.system_identifier),
    };
    let mut newest_archived = None;
    let (level, decision, exit) = if !verdict.archive {
        // A standby never writes into the archive: what it holds, its primary archives.
        let on_standby = gathered.observation.as_ref().is_some_and(|o| o.in_recovery);
        if settings.archive_ahead && !on_standby {
            let a = ahead::run(
                run,
                settings,
                road,
                &file,
                early,
                ahead::budget(settings, !outside),
            );
            fields.push(("ahead", a.copied.to_string()));
            if let Some(newest) = a.newest {
                fields.push(("newest_archived", newest.clone()));
                newest_archived = Some(newest);
            }
            if a.left > 0 {
                fields.push(("ahead_left", a.left.to_string()));
            }
            if let Some(failed) = a.failed {
                fields.push(("ahead_error", failed));
            }
        }
        (Level::Info, "held", Exit::Held)
    } else if verdict.standby {
        // A standby acknowledges what its primary archived; it never writes into the
        // archive (after a promotion it archives like any primary).
        fields.push(("role", "standby".to_string()));
        match verdict.valve {
            Some(_) => (Level::Warn, "valve", Exit::Ok),
            None => (Level::Info, "exists", Exit::Ok),
        }
    } else {
        let done = put::put(run, settings, road, &file, early)?;
        if let Some(stored) = done.stored {
            fields.push(("stored", stored.to_string()));
        }
        fields.push(("bytes", done.bytes.to_string()));
        match verdict.valve {
            Some(_) => (Level::Warn, "valve", Exit::Ok),
            None => (Level::Info, done.decision, Exit::Ok),
        }
    };
    if verdict.standby && exit == Exit::Held {
        fields.push(("role", "standby".to_string()));
    }
    // A replica whose slot is lost holds nothing, and every line says so while it lasts.
    let level = if verdict.lost.is_empty() {
        level
    } else {
        fields.push(("lost", verdict.lost.join(",")));
        Level::Warn
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
        // A lost slot is news once: when the last decision did not say so yet.
        let before = settings.log_file.as_deref().map(|path| {
            log::last_decision(path)
                .map(|l| {
                    l.lost
                        .split(',')
                        .filter(|e| !e.is_empty())
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        });
        if let Some(before) = before {
            let news = walguard_core::event::newly_lost(&verdict.lost, &before);
            if !news.is_empty() {
                let details = Details {
                    event: Event::Lost,
                    wal: &run.wal,
                    replicas: &news.join(","),
                    reason: "its replication slot is lost: the WAL it needs is gone; rebuild it from a base backup",
                };
                let hook = hook::run_hook(command, &details, run.child_limit(settings.timeout));
                fields.push(("lost_event", "lost".to_string()));
                fields.push(("lost_hook", hook));
            }
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
        let snapshot = matches!(wal, WalFile::Segment(_)).then(|| {
            snapshot(
                wal_path,
                &gathered,
                exit,
                settings,
                decision,
                newest_archived.as_deref(),
            )
        });
        write_metrics(settings, decision, snapshot);
    }
    Ok(exit)
}

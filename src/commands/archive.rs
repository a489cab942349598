//! `walguard archive WAL_PATH WAL_NAME`: PostgreSQL's archive_command.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use walguard_core::decision::{Tripped, Verdict, undecided_valve};
use walguard_core::event::Event;
use walguard_core::wal::WalFile;

use super::gather::{self, Gathered, SHOWN, Undecided, verdict_fields};
use super::invocation::Invocation;
use crate::exit::{Exit, Hint, describe_error};
use crate::hook::{self, Details};
use crate::log::{self, Level};
use crate::observe::local;
use crate::out::say;
use crate::settings::Settings;
use crate::store::commit;
use crate::store::copy::{self as archive_copy, Stored};

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
    })
}

pub fn run(run: &Invocation, settings: &Settings, wal_path: &Path, wal: &WalFile) -> Result<Exit> {
    let archive_dir = settings
        .archive_dir
        .as_deref()
        .ok_or_else(|| anyhow!("no archive directory: set archive_dir in the config file, --archive-dir, or WALGUARD_ARCHIVE_DIR"))?;
    let meta = std::fs::metadata(wal_path)
        .with_context(|| format!("cannot read WAL_PATH {}", wal_path.display()))
        .hint("archive_command must pass %p, relative to the data directory")?;
    gather::check_segment_size(wal, wal_path, meta.len())?;
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
    let decide = || gather::decide(settings, wal, Some((wal_path, &meta)));
    let (gathered, early) = if fresh {
        std::thread::scope(|scope| {
            let copying = scope.spawn(stage);
            (decide(), Some(copying.join()))
        })
    } else {
        (decide(), None)
    };
    let gathered = gathered.or_else(|e| undecided(settings, wal, &meta, e))?;
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
        // A segment must be exactly the size the decision validated (a file truncated
        // while it was copied is refused); other files are what was read and fsynced.
        let expected = match wal {
            WalFile::Segment(_) => Some(meta.len()),
            _ => None,
        };
        let stored = staged
            .and_then(|s| s.commit(expected))
            .hint("PostgreSQL will retry")?;
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
    Ok(exit)
}

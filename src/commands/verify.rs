//! `walguard verify [--json]`: is the archive whole, and could each listed replica
//! recover from it?

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::{Result, anyhow};
use serde::Serialize;
use walguard_core::decision::{self, Checked};
use walguard_core::observation::{Observation, Pressure};
use walguard_core::verify::Report;
use walguard_core::wal::{SegmentId, WalFile};

use super::gather;
use crate::exit::{Exit, Hint};
use crate::observe::local;
use crate::out::show;
use crate::settings::Settings;
use crate::store::listing;

#[derive(Serialize)]
struct TimelineView {
    timeline: u32,
    /// Runs of segments held, first and last name.
    ranges: Vec<(String, String)>,
    segments: usize,
}

#[derive(Serialize)]
struct ReplicaCoverage {
    replica: String,
    /// Its position (the one that counts), when the server reports it.
    position: Option<String>,
    /// Whether the archive and pg_wal hold everything from there to the primary's
    /// position; `None` when that cannot be told (not connected, no position).
    could_recover: Option<bool>,
    first_missing: Option<String>,
    note: Option<String>,
}

/// The `--json` schema (stable: fields are only ever added).
#[derive(Serialize)]
struct VerifyView {
    clean: bool,
    files: u64,
    segments: u64,
    compressed: u64,
    bytes: u64,
    segment_size: Option<u64>,
    timelines: Vec<TimelineView>,
    problems: Vec<String>,
    foreign_files: Vec<String>,
    temporary_files: usize,
    /// `None` when the server could not be asked.
    replicas: Option<Vec<ReplicaCoverage>>,
    server: Option<String>,
}

/// For each listed replica the server reports, whether it could recover.
fn coverage(
    settings: &Settings,
    report: &Report,
    obs: &Observation,
) -> Result<Vec<ReplicaCoverage>> {
    let list = gather::load_list(settings)?;
    let extras = gather::extras(settings, obs);
    let in_pg_wal: BTreeSet<String> = extras
        .as_ref()
        .and_then(|x| x.pg_wal.clone())
        .or_else(|| {
            let dir = extras.as_ref()?.data_directory.clone()?.join("pg_wal");
            Some(
                std::fs::read_dir(dir)
                    .ok()?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
            )
        })
        .unwrap_or_default();
    let current = obs
        .current_lsn
        .ok_or_else(|| anyhow!("the server reports no current position (a standby?)"))?;
    let timeline = obs.timeline.unwrap_or(1);
    let subject = WalFile::Segment(SegmentId::containing(timeline, current, obs.segment_size));
    let (scope, _) = gather::scope(settings, &list, obs);
    let verdict = decision::decide(
        &subject,
        Some(obs),
        &Pressure::default(),
        &list,
        &settings.policy,
        &scope,
    );
    Ok(verdict
        .matches
        .iter()
        .filter(|m| !matches!(m.checked, Checked::Own(_)))
        .map(|m| {
            let position = m.at;
            let (could, missing, note) = match (&m.checked, m.walsender, position) {
                (Checked::Elsewhere(why), ..) => (
                    None,
                    None,
                    Some(format!("{why}: its position is not visible here")),
                ),
                (_, Some(_), None) => (None, None, Some("reports no position".to_string())),
                (_, None, None) => (
                    None,
                    None,
                    Some("not connected: its position is unknown".to_string()),
                ),
                (_, _, Some(at)) => match report.covers(timeline, at, current, &in_pg_wal) {
                    Ok(()) => (Some(true), None, None),
                    Err(first) => (Some(false), Some(first), None),
                },
            };
            ReplicaCoverage {
                replica: m.entry.to_string(),
                position: position.map(|p| p.to_string()),
                could_recover: could,
                first_missing: missing,
                note,
            }
        })
        .collect())
}

fn render(v: &VerifyView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} files ({} segments, {} compressed), {} of WAL",
        if v.clean { "clean" } else { "PROBLEMS FOUND" },
        v.files,
        v.segments,
        v.compressed,
        walguard_core::units::human_bytes(v.bytes)
    );
    for t in &v.timelines {
        let ranges: Vec<String> = t
            .ranges
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.clone()
                } else {
                    format!("{a} to {b}")
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "timeline {}: {} segments: {}",
            t.timeline,
            t.segments,
            ranges.join(", ")
        );
    }
    for p in &v.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    if !v.foreign_files.is_empty() {
        let _ = writeln!(
            out,
            "not WAL files (left alone): {}",
            v.foreign_files.join(", ")
        );
    }
    match (&v.replicas, &v.server) {
        (Some(replicas), _) => {
            for r in replicas {
                let verdict = match (r.could_recover, &r.first_missing, &r.note) {
                    (Some(true), _, _) => "yes".to_string(),
                    (Some(false), Some(m), _) => format!("NO, first missing {m}"),
                    (_, _, Some(note)) => format!("unknown: {note}"),
                    _ => "unknown".to_string(),
                };
                let at = r
                    .position
                    .as_deref()
                    .map(|p| format!(" (at {p})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}{at} could recover from the archive and pg_wal: {verdict}",
                    r.replica
                );
            }
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "replicas not checked: {why}");
        }
        (None, None) => {}
    }
    out
}

pub fn run(settings: &Settings, json: bool) -> Result<Exit> {
    let dir = settings.archive_dir.as_deref().ok_or_else(|| {
        anyhow!("no archive directory: set archive_dir in the config file, --archive-dir, or WALGUARD_ARCHIVE_DIR")
    })?;
    // The server, when it answers, says what every header must: an archive can be
    // verified without it (the headers then set the segment size and the cluster).
    let observed = match settings.replicas() {
        Ok(_) => {
            gather::observe(settings, None, false).map_err(|e| crate::exit::describe_error(&e))
        }
        Err(_) => Err("no replicas list".to_string()),
    };
    let server = observed.as_ref().ok();
    let sysid =
        local::system_identifier(&settings.pgdata).or(server.and_then(|o| o.system_identifier));
    let mut report = Report::new(server.map(|o| o.segment_size), sysid);
    let others = listing::scan(dir, |facts| report.add(facts))
        .hint("check archive_dir and that you may read it")?;
    // The server's timeline (a primary's), to find timelines no server follows.
    let report = report.finish(server.filter(|o| !o.in_recovery).and_then(|o| o.timeline));
    let (replicas, server) = match &observed {
        Ok(obs) => match coverage(settings, &report, obs) {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(crate::exit::describe_error(&e))),
        },
        Err(why) => (None, Some(why.clone())),
    };
    let size = report.segment_size;
    let name = |tli: u32, segno: u64| {
        size.map(|s| {
            SegmentId::containing(tli, walguard_core::wal::Lsn(segno * s.bytes()), s).to_string()
        })
        .unwrap_or_default()
    };
    let uncovered = replicas
        .iter()
        .flatten()
        .any(|r| r.could_recover == Some(false));
    let view = VerifyView {
        clean: report.problems.is_empty() && !uncovered,
        files: report.files,
        segments: report.segments,
        compressed: report.compressed,
        bytes: report.bytes,
        segment_size: size.map(|s| s.bytes()),
        timelines: report
            .timelines
            .iter()
            .map(|(&tli, t)| TimelineView {
                timeline: tli,
                segments: t.ranges().iter().map(|(a, b)| (b - a + 1) as usize).sum(),
                ranges: t
                    .ranges()
                    .iter()
                    .map(|&(a, b)| (name(tli, a), name(tli, b)))
                    .collect(),
            })
            .collect(),
        problems: report.problems.iter().map(|p| p.to_string()).collect(),
        foreign_files: others.foreign,
        temporary_files: others.temporary,
        replicas,
        server,
    };
    if json {
        show(&format!("{}\n", serde_json::to_string_pretty(&view)?))?;
    } else {
        show(&render(&view))?;
    }
    Ok(if view.clean { Exit::Ok } else { Exit::Problems })
}

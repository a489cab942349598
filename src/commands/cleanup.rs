//! `walguard cleanup [--dry-run] [--keep-backups N] [--before WAL_NAME] [--json]`:
//! deletes archived WAL only when no kept base backup, no listed replica and not
//! `--before` can still need it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use walguard_core::cleanup::{self, Archived, Plan, Point, Refusal, Replica};
use walguard_core::decision::{self, Checked, Reason};
use walguard_core::logfmt::Level;
use walguard_core::observation::{Observation, Pressure};
use walguard_core::wal::{SegmentId, WalFile};

use super::gather;
use super::invocation::Invocation;
use crate::exit::{Exit, Hint};
use crate::out::show;
use crate::settings::Settings;
use crate::store::cleanup as store;

/// What the command line asked for.
pub struct Ask<'a> {
    pub dry_run: bool,
    pub keep_backups: Option<usize>,
    pub label: Option<&'a str>,
    pub before: Option<&'a str>,
    pub json: bool,
}

/// The `--json` schema (stable: fields are only ever added).
#[derive(Serialize)]
struct CleanupView {
    dry_run: bool,
    deleted: Vec<String>,
    kept: usize,
    /// Who needs the oldest kept file, and from where.
    kept_because: Option<String>,
    /// The base backups kept (with --keep-backups), newest first.
    kept_backups: Vec<BackupView>,
    refused: Option<String>,
}

#[derive(Serialize)]
struct BackupView {
    /// The `.backup` file in the archive.
    file: String,
    label: Option<String>,
    start_time: Option<String>,
    start_lsn: String,
    timeline: u32,
}

/// Each listed replica's point, from the server, as the decision matches them. A line
/// checked elsewhere (a cascade, seen from the primary) has a position cleanup cannot
/// see: it refuses, as for a replica that is away. A line whose slot is lost holds
/// nothing: it needs a new base backup, not the archive.
fn replicas(
    settings: &Settings,
) -> Result<(Vec<Replica>, walguard_core::observation::Observation)> {
    let list = gather::load_list(settings)?;
    let obs = gather::observe(settings, None, gather::wants_slots(&list))?;
    if obs.in_recovery {
        bail!("{}", Reason::InRecovery);
    }
    let timeline = obs.timeline.unwrap_or(1);
    let current = obs
        .current_lsn
        .ok_or_else(|| anyhow!("the server reports no current position"))?;
    let subject = WalFile::Segment(SegmentId::containing(timeline, current, obs.segment_size));
    let (scope, _) = gather::scope(settings, &list, &obs);
    let verdict = decision::decide(
        &subject,
        Some(&obs),
        &Pressure::default(),
        &list,
        &settings.policy,
        &scope,
    );
    let replicas = verdict
        .matches
        .iter()
        .filter(|m| !matches!(m.checked, Checked::Own(_)))
        .filter(|m| !verdict.lost.contains(&m.entry.to_string()))
        .map(|m| {
            let entry = m.entry.to_string();
            match (&m.checked, m.at) {
                (Checked::Here, Some(lsn)) => Replica::At(Point {
                    timeline,
                    lsn,
                    who: format!("{entry} at {lsn}"),
                }),
                (Checked::Elsewhere(why), _) => Replica::Unknown {
                    why: format!("{why}, and its position is not visible from here"),
                    entry,
                },
                _ => Replica::Unknown {
                    why: if m.walsender.is_some() {
                        "reports no position"
                    } else {
                        "is not connected"
                    }
                    .into(),
                    entry,
                },
            }
        })
        .collect();
    Ok((replicas, obs))
}

/// The archive must be the server's cluster's, as for `archive`: deciding what to delete
/// from another cluster's WAL by this server's replicas would delete what that cluster
/// needs. Its newest segment's header says whose it is.
fn same_cluster(dir: &std::path::Path, archived: &[Archived], obs: &Observation) -> Result<()> {
    let Some(server) = obs.system_identifier else {
        return Ok(());
    };
    let newest = archived
        .iter()
        .filter(|a| matches!(a.file, WalFile::Segment(_)))
        .max_by(|a, b| a.file.to_string().cmp(&b.file.to_string()));
    let Some(newest) = newest else {
        return Ok(());
    };
    // A file that cannot be read tells nothing (verify reports it); one that can, tells.
    let Ok(head) = crate::store::listing::head(&dir.join(&newest.stored), &newest.stored) else {
        return Ok(());
    };
    match walguard_core::header::LongHeader::parse(&head) {
        Some(h) if h.sysid != server => bail!(
            "the archive {} holds WAL of system identifier {} ({}), but the server at conninfo is {server}: \
             it is another cluster's archive (or conninfo points at another cluster); nothing was deleted",
            dir.display(),
            h.sysid,
            newest.stored
        ),
        _ => Ok(()),
    }
}

fn render(v: &CleanupView) -> String {
    let mut out = String::new();
    if let Some(why) = &v.refused {
        let _ = writeln!(out, "refused: {why}");
        return out;
    }
    let verb = if v.dry_run { "would delete" } else { "deleted" };
    match (v.deleted.first(), v.deleted.last()) {
        (Some(first), Some(last)) => {
            let _ = writeln!(
                out,
                "{verb} {} files, {first} to {last}; kept {}",
                v.deleted.len(),
                v.kept
            );
        }
        _ => {
            let _ = writeln!(out, "nothing to delete; kept {}", v.kept);
        }
    }
    if v.dry_run {
        for name in &v.deleted {
            let _ = writeln!(out, "  {name}");
        }
    }
    if let Some(why) = &v.kept_because {
        let _ = writeln!(out, "the oldest kept is needed by {why}");
    }
    if v.dry_run && !v.kept_backups.is_empty() {
        let _ = writeln!(out, "base backups kept:");
        for b in &v.kept_backups {
            let _ = writeln!(
                out,
                "  {}  started {}  label {:?}  (timeline {} at {})",
                b.file,
                b.start_time.as_deref().unwrap_or("at an unknown time"),
                b.label.as_deref().unwrap_or(""),
                b.timeline,
                b.start_lsn
            );
        }
    }
    out
}

pub fn run(run: &Invocation, settings: &Settings, ask: &Ask) -> Result<Exit> {
    let dir = settings.archive_dir.as_deref().ok_or_else(|| {
        anyhow!("no archive directory: set archive_dir in the config file, --archive-dir, or WALGUARD_ARCHIVE_DIR")
    })?;
    let (replicas, obs) = replicas(settings)?;
    let size = obs.segment_size;
    let before = match ask.before {
        Some(name) => match gather::parse_name(name, "cleanup --before")? {
            WalFile::Segment(id) => cleanup::before_point(id, size),
            other => bail!(
                "--before takes a segment name, not the {} file {other}",
                other.kind()
            ),
        },
        None => None,
    };
    let listing = store::list(dir).hint("check archive_dir and that you may read it")?;
    let archived: Vec<Archived> = listing.files;
    let total = archived.len();
    let histories: BTreeMap<u32, String> = listing.histories;
    same_cluster(dir, &archived, &obs)?;
    let keep = ask.keep_backups.map(|count| cleanup::Keep {
        count,
        label: ask.label,
    });
    let planned = cleanup::plan(
        &archived,
        &cleanup::ancestors(&histories),
        size,
        keep,
        before,
        &replicas,
    );
    let (plan, refused) = match planned {
        Ok(plan) => (plan, None),
        Err(Refusal::NoBound) => bail!("{}", Refusal::NoBound),
        Err(refusal) => (Plan::default(), Some(refusal.to_string())),
    };
    let kept_because = plan.bound.as_ref().map(|p| p.who.clone());
    if refused.is_none() && !ask.dry_run && !plan.delete.is_empty() {
        let deleted = store::delete(dir, &plan.delete)
            .hint("some files may have been deleted; run cleanup again")?;
        run.write(
            Level::Info,
            "deleted",
            vec![
                ("files", deleted.to_string()),
                ("first", plan.delete.first().cloned().unwrap_or_default()),
                ("last", plan.delete.last().cloned().unwrap_or_default()),
                ("kept", plan.kept.to_string()),
                ("kept_because", kept_because.clone().unwrap_or_default()),
            ],
        );
    }
    let kept_backups = plan
        .kept_backups
        .iter()
        .map(|b| BackupView {
            file: b.stored.clone(),
            label: b.info.label.clone(),
            start_time: b.info.start_time.clone(),
            start_lsn: b.start.to_string(),
            timeline: b.timeline,
        })
        .collect();
    let view = CleanupView {
        dry_run: ask.dry_run,
        kept_backups,
        kept: if refused.is_some() { total } else { plan.kept },
        deleted: plan.delete,
        kept_because,
        refused,
    };
    if ask.json {
        show(&format!("{}\n", serde_json::to_string_pretty(&view)?))?;
    } else {
        show(&render(&view))?;
    }
    Ok(if view.refused.is_some() {
        Exit::Refused
    } else {
        Exit::Ok
    })
}

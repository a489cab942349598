//! `walguard cleanup [--dry-run] [--keep-backups N] [--before WAL_NAME] [--json]`:
//! deletes archived WAL only when no kept base backup, no listed replica and not
//! `--before` can still need it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use walguard_core::cleanup::{self, Archived, Plan, Point, Refusal, Replica};
use walguard_core::decision::{self, Reason};
use walguard_core::logfmt::Level;
use walguard_core::observation::Pressure;
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
    refused: Option<String>,
}

/// Each listed replica's point, from the server, as the decision matches them.
fn replicas(
    settings: &Settings,
) -> Result<(Vec<Replica>, walguard_core::observation::Observation)> {
    let list = gather::load_list(settings)?;
    let obs = gather::observe(settings, None)?;
    if obs.in_recovery {
        bail!("{}", Reason::InRecovery);
    }
    let timeline = obs.timeline.unwrap_or(1);
    let current = obs
        .current_lsn
        .ok_or_else(|| anyhow!("the server reports no current position"))?;
    let subject = WalFile::Segment(SegmentId::containing(timeline, current, obs.segment_size));
    let verdict = decision::decide(
        &subject,
        Some(&obs),
        &Pressure::default(),
        &list,
        &settings.policy,
    );
    let replicas = verdict
        .matches
        .iter()
        .map(|m| {
            let entry = m.entry.to_string();
            let ws = m.walsender.map(|w| &obs.walsenders[w]);
            match ws.and_then(|ws| settings.policy.position.reported(obs.origin, ws)) {
                Some(lsn) => Replica::At(Point {
                    timeline,
                    lsn,
                    who: format!("{entry} at {lsn}"),
                }),
                None => Replica::Unknown {
                    why: if ws.is_some() {
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
    let planned = cleanup::plan(
        &archived,
        &cleanup::ancestors(&histories),
        size,
        ask.keep_backups,
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
    let view = CleanupView {
        dry_run: ask.dry_run,
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

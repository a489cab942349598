//! `walguard check WAL_NAME`: the dry run. Decides, explains, copies and logs nothing.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use walguard_core::decision::Verdict;
use walguard_core::observation::{Observation, Origin};
use walguard_core::wal::WalFile;

use super::gather;
use super::views::{replica_table, replica_views};
use crate::exit::Exit;
use crate::out::show;
use crate::settings::Settings;

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
        if let Some(why) = &verdict.exempt {
            let _ = writeln!(out, "{why}");
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
    if let Some((entry, why)) = &verdict.own {
        let _ = writeln!(out, "this server is {entry} ({why}): its line is skipped");
    }
    if verdict.standby {
        out.push_str(
            "a standby: it acknowledges a file only once the archive holds it, and checks only the lines that stream from it\n",
        );
    }
    out.push('\n');
    let views = replica_views(verdict, obs, &settings.policy, None);
    out.push_str(&replica_table(&views, false, LISTED));
    out.push_str(&super::views::slot_lines(&views));
    for w in &verdict.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    for n in gather::conninfo_notes(settings) {
        let _ = writeln!(out, "note: {n}");
    }
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
        list_reasons(&mut out, verdict);
    } else if verdict.archive && verdict.standby {
        out.push_str(
            "verdict: ACKNOWLEDGE: the archive holds it, and every line checked here is past it\n",
        );
    } else if verdict.archive {
        out.push_str("verdict: ARCHIVE: every listed replica is past this segment\n");
    } else {
        out.push_str("verdict: HOLD\n");
        list_reasons(&mut out, verdict);
        out.push_str(&ahead_note(wal, settings));
    }
    if let Some(via) = &settings.archive_via {
        let path = format!("pg_wal/{wal}");
        let _ = writeln!(
            out,
            "{} run: {}",
            if verdict.archive {
                "would"
            } else {
                "once released, would"
            },
            walguard_core::template::expand(via, &path, &wal.to_string())
                .unwrap_or_else(|e| e.to_string())
        );
    }
    out
}

/// What `archive` would do for a held segment besides exiting 1 (`archive_ahead`).
fn ahead_note(wal: &WalFile, settings: &Settings) -> String {
    let Ok(road) = super::put::Road::of(settings) else {
        return String::new();
    };
    if !settings.archive_ahead {
        return "archive_ahead is off: nothing held leaves pg_wal until it is released\n".into();
    }
    let path = settings.pgdata.join("pg_wal").join(wal.to_string());
    match super::ahead::pending(road, &path, &wal.to_string()) {
        Some(names) if names.is_empty() => {
            "archived ahead already: the archive has it and every file waiting; only PostgreSQL's acknowledgement is withheld\n".into()
        }
        Some(names) => format!(
            "an archive now would put {} into the archive ahead ({}{}), and withhold only PostgreSQL's acknowledgement\n",
            match names.len() {
                1 => "1 file".to_string(),
                n => format!("{n} files"),
            },
            names[0],
            if names.len() > 1 { format!(" to {}", names[names.len() - 1]) } else { String::new() }
        ),
        None => "archived ahead: an archive puts it and every file waiting into the archive, and withholds only PostgreSQL's acknowledgement\n".into(),
    }
}

/// How many reasons and table rows `check` shows before "and N more".
const LISTED: usize = 20;

fn list_reasons(out: &mut String, verdict: &Verdict) {
    for r in verdict.reasons.iter().take(LISTED) {
        let _ = writeln!(out, "  - {r}");
    }
    if verdict.reasons.len() > LISTED {
        let _ = writeln!(out, "  - and {} more", verdict.reasons.len() - LISTED);
    }
}

pub fn run(settings: &Settings, wal: &WalFile) -> Result<Exit> {
    // Cross-check the size, and age the hold, when the file is in this server's pg_wal.
    let in_pg_wal: PathBuf = settings.pgdata.join("pg_wal").join(wal.to_string());
    let meta = std::fs::metadata(&in_pg_wal).ok();
    let g = gather::decide(
        settings,
        gather::Observer::Outside,
        wal,
        meta.as_ref().map(|m| (in_pg_wal.as_path(), m)),
    )?;
    show(&explain(wal, &g.verdict, g.observation.as_ref(), settings))?;
    Ok(if g.verdict.archive {
        Exit::Ok
    } else {
        Exit::Held
    })
}

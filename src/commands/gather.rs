//! What `archive`, `check` and `status` share: the list, the observation (SQL or process
//! titles, as configured), the decision, and how a verdict reads in a log line.

use anyhow::{Context, Result, anyhow, bail};
use walguard_core::decision::{self, Verdict};
use walguard_core::event::{self, Event};
use walguard_core::list::Entry;
use walguard_core::observation::{Observation, Pressure};
use walguard_core::wal::{SegmentSize, WalFile};

use crate::exit::{Hint, describe_error};
use crate::observe::conninfo::{ProcessEnv, Target};
use crate::observe::{local, sql, titles};
use crate::settings::{self, Settings, Source};

/// The fields every decision line shares: how many listed replicas are connected, the
/// slowest one, and the position needed.
pub fn verdict_fields(v: &Verdict) -> Vec<(&'static str, String)> {
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

pub fn parse_name(name: &str) -> Result<WalFile> {
    name.parse::<WalFile>()
        .hint("archive_command must pass %f as the name")
}

/// The replicas list named by the settings, read and (if asked) resolved.
pub fn load_list(settings: &Settings) -> Result<Vec<Entry>> {
    settings::list::load(settings.replicas()?, settings.resolve).hint("fix the replicas list")
}

/// Asks the server, or the process titles when configured (`source`). `segment_bytes`
/// is the segment file's size, which is all that tells the segment size without SQL.
pub fn observe(settings: &Settings, segment_bytes: Option<u64>) -> Result<Observation> {
    let sql = || -> Result<Observation> {
        let target = Target::new(settings.conninfo.as_deref(), settings.timeout, &ProcessEnv)?;
        Ok(sql::observe(&target)?)
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
pub struct Gathered {
    pub verdict: Verdict,
    pub observation: Option<Observation>,
}

impl Gathered {
    /// Which `on_event` event this decision is, if any. PostgreSQL's own `last_failed_wal`
    /// tells a first hold from a retry, and a release from an ordinary archive, with no
    /// state file; from process titles it is unknown, so every hold counts as a first one.
    pub fn event(&self, wal: &str) -> Option<Event> {
        let failed_before = self
            .observation
            .as_ref()
            .and_then(|o| o.archiver.as_ref())
            .map(|a| a.last_failed_wal.as_deref() == Some(wal));
        event::of(&self.verdict, failed_before)
    }
}

/// The decision for `wal`, observing the server only when the file is a segment.
/// `file` is the segment file when known: its size is cross-checked against the server's,
/// and its age is how long the segment has waited (the `max_hold` valve).
pub fn decide(
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
    let pressure = local::pressure(&settings.pgdata, file.and_then(|m| m.modified().ok()));
    let verdict = decision::decide(wal, Some(&obs), &pressure, &list, &settings.policy);
    Ok(Gathered {
        verdict,
        observation: Some(obs),
    })
}

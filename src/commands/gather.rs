//! What `archive`, `check` and `status` share: the list, the observation (SQL or process
//! titles, as configured), the decision, and how a verdict reads in a log line.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use thiserror::Error;
use walguard_core::decision::{self, Reason, Scope, Verdict, join_bounded};
use walguard_core::event::{self, Event, Previous};
use walguard_core::list::Entry;
use walguard_core::observation::{Observation, Pressure};
use walguard_core::wal::{SegmentSize, WalFile};

use crate::exit::{Hint, describe_error};
use crate::observe::conninfo::{ProcessEnv, Target};
use crate::observe::{local, sql, titles};
use crate::settings::{self, Settings, Source};

/// How many reasons and names one log line or one screen carries before "and N more".
pub const SHOWN: usize = 5;
/// How many names `blame` carries (`walguard log` counts holds per name from it).
pub const BLAMED: usize = 32;

/// walguard could not decide (the database or the list): the segment stays, but the
/// valves that need no server may still release it.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct Undecided(pub String);

/// The fields every decision line shares: how many listed replicas are connected, the
/// slowest one, and the position needed.
pub fn verdict_fields(v: &Verdict) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    if let Some(t) = &v.valve {
        fields.push(("valve", t.valve.to_string()));
        fields.push((
            "reason",
            format!(
                "{}; left behind: {}",
                t.detail,
                join_bounded(&v.reasons, SHOWN, "; ")
            ),
        ));
        fields.push((
            "advice",
            format!(
                "{} will need this segment from the archive (restore_command) or a new base backup",
                v.culprits(SHOWN)
            ),
        ));
    } else if !v.reasons.is_empty() {
        fields.push(("reason", join_bounded(&v.reasons, SHOWN, "; ")));
    }
    if !v.blame.is_empty() {
        fields.push((
            "blame",
            v.blame
                .iter()
                .take(BLAMED)
                .cloned()
                .collect::<Vec<_>>()
                .join(","),
        ));
        if v.blame.len() > BLAMED {
            fields.push(("blame_more", (v.blame.len() - BLAMED).to_string()));
        }
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

/// `WAL_NAME` as given; `what` says where it came from, for the hint.
pub fn parse_name(name: &str, command: &str) -> Result<WalFile> {
    let tail = name.rsplit('/').next().unwrap_or(name);
    match name.parse::<WalFile>() {
        Ok(wal) => Ok(wal),
        Err(e) if tail != name && tail.parse::<WalFile>().is_ok() => Err(e).hint(&format!(
            "pass the file name only: walguard {command} {tail}"
        )),
        Err(e) if command == "archive" => Err(e).hint("archive_command must pass %f as the name"),
        Err(e) => Err(e).hint("give a WAL file name such as 000000010000000000000003"),
    }
}

/// The replicas list named by the settings, read and (if asked) resolved.
pub fn load_list(settings: &Settings) -> Result<Vec<Entry>> {
    // Name lookups get a quarter of the budget at most: the server, the valves and the
    // copy need the rest.
    let limit = (settings.timeout / 4).min(std::time::Duration::from_secs(5));
    settings::list::load(settings.replicas()?, settings.resolve, limit)
        .hint("fix the replicas list")
}

/// Where the server is: `conninfo` completed as libpq would, and what that leaves unset
/// of the host and port taken from the server running in `pgdata` (`postmaster.pid`),
/// so that one config serves every node of a cluster.
pub fn target(settings: &Settings) -> Result<Target, crate::observe::conninfo::ConninfoError> {
    Target::with_local(
        settings.conninfo.as_deref(),
        settings.timeout,
        &ProcessEnv,
        local::postmaster(&settings.pgdata).as_ref(),
    )
}

/// Asks the server, or the process titles when configured (`source`). `segment_bytes`
/// is the segment file's size, which is all that tells the segment size without SQL.
pub fn observe(
    settings: &Settings,
    segment_bytes: Option<u64>,
    slots: bool,
) -> Result<Observation> {
    let sql = || -> Result<Observation> {
        let target = target(settings)?;
        // Half the budget at most: the fallback, the valves and the copy need the rest.
        Ok(sql::observe_within(&target, settings.timeout / 2, slots)?)
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
    // A server that is shutting down is no fault to hint at, and no reason to fall back.
    let sql_hinted = || {
        sql().or_else(|e| match not_accepting(&e) {
            Some(_) => Err(e),
            None => Err(e).hint(hint),
        })
    };
    match settings.source {
        Source::Sql => sql_hinted(),
        Source::Ps => {
            ps().hint("check pgdata: walguard reads its postmaster.pid to find the walsenders")
        }
        Source::Auto => sql().or_else(|sql_err| {
            if not_accepting(&sql_err).is_some() {
                return Err(sql_err);
            }
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

/// Where a decision's observation of the server comes from.
#[derive(Clone, Copy)]
pub enum Observer<'a> {
    /// A connection, or the process titles, as `source` says: the commands.
    Outside,
    /// The server's shared memory, read from inside its archiver: the archive module
    /// (`crates/walguard-pg`). It is the server whose `pg_wal` this is, by construction.
    Inside(&'a dyn Fn() -> Result<Observation>),
}

impl Observer<'_> {
    fn observe(
        self,
        settings: &Settings,
        segment_bytes: Option<u64>,
        slots: bool,
    ) -> Result<Observation> {
        match self {
            Observer::Outside => observe(settings, segment_bytes, slots),
            Observer::Inside(read) => read(),
        }
    }
}

/// Whether a list line names a replication slot (the observation then reads them).
pub fn wants_slots(list: &[Entry]) -> bool {
    list.iter().any(|e| e.options.slot.is_some())
}

/// Which line of `list` is this server (see `decision::own_line`), and a warning when
/// that could not be told. The host's addresses are only listed when needed.
pub fn own_line(
    settings: &Settings,
    list: &[Entry],
    cluster_name: Option<&str>,
) -> (Option<(usize, String)>, Option<String>) {
    let by_name = settings.self_.is_some()
        || cluster_name.is_some_and(|n| {
            list.iter()
                .any(|e| e.selector == walguard_core::list::Selector::App(n.to_string()))
        });
    let addrs = if by_name {
        Vec::new()
    } else {
        crate::sys::local_addresses()
    };
    decision::own_line(list, settings.self_.as_deref(), cluster_name, &addrs)
}

/// The conninfo keys that are accepted but change nothing, for `check` and `status`.
pub fn conninfo_notes(settings: &Settings) -> Vec<String> {
    target(settings)
        .map(|t| t.notes().iter().map(|n| format!("conninfo: {n}")).collect())
        .unwrap_or_default()
}

/// What `status` asks the server beyond the observation; `None` from process titles or
/// when the server cannot be asked again.
pub fn extras(settings: &Settings, obs: &Observation) -> Option<sql::Extras> {
    if obs.origin != walguard_core::observation::Origin::Sql {
        return None;
    }
    let target = target(settings).ok()?;
    sql::extras(&target, obs.server_version).ok()
}

/// The server's message when it refused the connection because it is shutting down or
/// starting up.
pub fn not_accepting(e: &anyhow::Error) -> Option<String> {
    match e.downcast_ref::<sql::ObserveError>()? {
        sql::ObserveError::NotAccepting { message, .. } => Some(message.clone()),
        _ => None,
    }
}

/// Everything a decision about one file needs, gathered by the adapters.
pub struct Gathered {
    pub verdict: Verdict,
    pub observation: Option<Observation>,
    /// The file decided about (a segment, for the metrics).
    pub wal: Option<WalFile>,
}

impl Gathered {
    /// Which `on_event` event this decision is, if any. `previous` is walguard's own
    /// last outcome for this file (from its log); without one, PostgreSQL's
    /// `last_failed_wal` stands in (it cannot tell a hold from an error, and on 10 to 14
    /// it lags behind); from process titles it is unknown.
    pub fn event(&self, wal: &str, previous: Option<Previous>) -> Option<Event> {
        let previous = previous.or_else(|| {
            let archiver = self.observation.as_ref()?.archiver.as_ref()?;
            Some(match archiver.last_failed_wal.as_deref() == Some(wal) {
                true => Previous::Held,
                false => Previous::Other,
            })
        });
        event::of(&self.verdict, previous)
    }
}

/// A file whose size is not that of a segment: say so first, and only suggest another
/// cluster when the size is a segment size, just not this server's.
/// `segment` is the server's `wal_segment_size` when known.
fn wrong_size(
    wal: &WalFile,
    path: Option<&Path>,
    size: u64,
    segment: Option<u64>,
) -> anyhow::Error {
    let file = path.map_or_else(|| wal.to_string(), |p| p.display().to_string());
    match segment {
        Some(segment) if SegmentSize::new(size).is_ok() => anyhow!(
            "{file} has {size} bytes but the server's wal_segment_size is {segment}: \
             is conninfo pointing at the server whose pg_wal this is?"
        ),
        Some(segment) => anyhow!(
            "{file} has {size} bytes, not a whole {segment}-byte segment: it is truncated or not a WAL segment; nothing was archived"
        ),
        None => anyhow!(
            "{file} has {size} bytes, which is no WAL segment size (a power of two from 1 MiB to 1 GiB): \
             it is truncated or not a WAL segment; nothing was archived"
        ),
    }
}

/// The decision for `wal`. A segment is decided from an observation of the server; a
/// history file, backup label or `.partial` needs none, except on a standby, where every
/// file waits until the archive holds it. `file` is the file and its metadata when known:
/// a segment's size is cross-checked against the server's, and its age is how long it
/// has waited (`max_hold`). Failures to observe or to read the list come back as
/// [`Undecided`].
pub fn decide(
    settings: &Settings,
    observer: Observer,
    wal: &WalFile,
    file: Option<(&Path, &std::fs::Metadata)>,
) -> Result<Gathered> {
    let meta = file.map(|(_, m)| m);
    let undecided = |e: anyhow::Error| anyhow::Error::new(Undecided(describe_error(&e)));
    if !matches!(wal, WalFile::Segment(_)) {
        // A standby knows itself from its pg_control (or, inside, from shared memory).
        let standby = match observer {
            Observer::Outside => local::control_in_recovery(&settings.pgdata) == Some(true),
            Observer::Inside(read) => read().is_ok_and(|o| o.in_recovery),
        };
        let scope = Scope {
            archived: standby.then(|| archived(settings, wal, file, None)),
            standby,
            ..Scope::default()
        };
        let verdict = decision::decide(
            wal,
            None,
            &Pressure::default(),
            &[],
            &settings.policy,
            &scope,
        );
        return Ok(Gathered {
            verdict,
            observation: None,
            wal: None,
        });
    }
    let list = load_list(settings).map_err(undecided)?;
    let obs = match observer.observe(settings, meta.map(|m| m.len()), wants_slots(&list)) {
        Ok(obs) => obs,
        Err(e) => {
            let message = not_accepting(&e).ok_or_else(|| undecided(e))?;
            return Ok(Gathered {
                verdict: Verdict::held(vec![Reason::NotAccepting(message)]),
                observation: None,
                wal: Some(wal.clone()),
            });
        }
    };
    if matches!(observer, Observer::Outside)
        && let (Some(server), Some(local)) = (
            obs.system_identifier,
            local::system_identifier(&settings.pgdata),
        )
        && server != local
    {
        bail!(Undecided(format!(
            "the server at conninfo has system identifier {server}, but the data directory {} has {local} \
             (global/pg_control): walguard is asking another cluster; point conninfo at this data directory's server",
            settings.pgdata.display()
        )));
    }
    if let Some(size) = meta.map(|m| m.len())
        && size != obs.segment_size.bytes()
    {
        return Err(wrong_size(
            wal,
            file.map(|(p, _)| p),
            size,
            Some(obs.segment_size.bytes()),
        ));
    }
    let pressure = local::pressure(&settings.pgdata, meta.and_then(|m| m.modified().ok()));
    let (mut scope, warning) = scope(settings, &list, &obs);
    if scope.standby {
        scope.archived = Some(archived(settings, wal, file, Some(&obs)));
    }
    let mut verdict = decision::decide(wal, Some(&obs), &pressure, &list, &settings.policy, &scope);
    verdict.warnings.extend(warning);
    Ok(Gathered {
        verdict,
        observation: Some(obs),
        wal: Some(wal.clone()),
    })
}

/// Where this server stands (its own line, standby or primary) for decisions about it;
/// what the archive holds is the caller's to add. Also a warning about the own line.
pub fn scope(settings: &Settings, list: &[Entry], obs: &Observation) -> (Scope, Option<String>) {
    let (own, warning) = own_line(settings, list, obs.cluster_name.as_deref());
    (
        Scope {
            own,
            standby: obs.in_recovery,
            archived: None,
        },
        warning,
    )
}

/// On a standby: whether the archive holds `wal` (see `put::in_archive`).
pub fn archived(
    settings: &Settings,
    wal: &WalFile,
    file: Option<(&Path, &std::fs::Metadata)>,
    obs: Option<&Observation>,
) -> Result<bool, String> {
    let road = super::put::Road::of(settings).map_err(|e| describe_error(&e))?;
    let name = wal.to_string();
    let path = file.map_or_else(
        || settings.pgdata.join("pg_wal").join(&name),
        |(p, _)| p.to_path_buf(),
    );
    let f = super::put::File {
        path: &path,
        name: &name,
        wal,
        bytes: file.map_or(0, |(_, m)| m.len()),
        segment_size: obs.map(|o| o.segment_size),
        sysid: local::system_identifier(&settings.pgdata).or(obs.and_then(|o| o.system_identifier)),
    };
    super::put::in_archive(settings, road, &f, settings.timeout / 3)
}

/// Before the server is asked: a segment file whose size is no segment size at all is
/// damaged, whatever the server says.
pub fn check_segment_size(wal: &WalFile, path: &Path, size: u64) -> Result<()> {
    if matches!(wal, WalFile::Segment(_)) && SegmentSize::new(size).is_err() {
        return Err(wrong_size(wal, Some(path), size, None));
    }
    Ok(())
}

//! The decision: may this WAL file leave `pg_wal` for the archive now? A pure function of
//! what was observed, the replicas list and the policy; docs/design.md, "The decision", rules 2 to 8.
//! (Rule 1, the name, is settled by parsing a [`WalFile`]; rule 9, an unreachable
//! database, never gets this far.)

use std::str::FromStr;
use std::time::Duration;

use crate::list::{Entry, Lookup, Selector};
use crate::observation::{Observation, Origin, Pressure, Walsender};
use crate::units::{FreeSpace, human_bytes};
use crate::wal::{Lsn, WalFile};

/// Which replica position must pass the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// Replayed: the replica's data already contains the segment.
    #[default]
    Replay,
    /// Flushed to the replica's disk: enough for it to stream on, not yet applied.
    Flush,
}

impl Position {
    /// The spellings settings accept.
    pub const NAMES: [&'static str; 2] = ["replay", "flush"];

    /// The position of `ws` that counts. Process titles only show the sent position, so
    /// that is all a ps observation offers.
    pub fn reported(self, origin: Origin, ws: &Walsender) -> Option<Lsn> {
        match (origin, self) {
            (Origin::Ps, _) => ws.sent,
            (Origin::Sql | Origin::Shmem, Position::Replay) => ws.replay,
            (Origin::Sql | Origin::Shmem, Position::Flush) => ws.flush,
        }
    }

    /// The name of the position that counts, for messages.
    pub fn name(self, origin: Origin) -> &'static str {
        match (origin, self) {
            (Origin::Ps, _) => "sent",
            (Origin::Sql | Origin::Shmem, Position::Replay) => "replay",
            (Origin::Sql | Origin::Shmem, Position::Flush) => "flush",
        }
    }
}

impl FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "replay" => Ok(Position::Replay),
            "flush" => Ok(Position::Flush),
            _ => Err(format!("{s:?} is not a position: replay or flush")),
        }
    }
}

/// What to do about a connected replica that the list does not name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unlisted {
    #[default]
    Hold,
    Ignore,
}

impl Unlisted {
    /// The spellings settings accept.
    pub const NAMES: [&'static str; 2] = ["hold", "ignore"];
}

impl FromStr for Unlisted {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hold" => Ok(Unlisted::Hold),
            "ignore" => Ok(Unlisted::Ignore),
            _ => Err(format!(
                "{s:?} is not a choice for unlisted: hold or ignore"
            )),
        }
    }
}

/// The safety valves (rule 8): when one trips, a held segment is archived anyway.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Valves {
    pub min_free: FreeSpace,
    pub max_retained: Option<u64>,
    pub max_hold: Option<Duration>,
}

impl Default for Valves {
    fn default() -> Self {
        Valves {
            min_free: FreeSpace::Percent(5.0),
            max_retained: None,
            max_hold: None,
        }
    }
}

/// The settings the decision depends on.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Policy {
    pub position: Position,
    pub keep_segments: u64,
    pub unlisted: Unlisted,
    pub valves: Valves,
}

/// A valve that tripped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tripped {
    pub valve: &'static str,
    pub detail: String,
}

/// The WAL held back for replicas: from the start of `wal` to the primary's position.
pub fn retained(obs: &Observation, wal: &WalFile) -> Option<u64> {
    let WalFile::Segment(id) = wal else {
        return None;
    };
    let start = id.start(obs.segment_size).ok()?;
    Some(obs.current_lsn?.0.saturating_sub(start.0))
}

/// Rule 8: the first valve that trips, in the order min_free, max_retained, max_hold.
fn check_valves(valves: &Valves, pressure: &Pressure, retained: Option<u64>) -> Option<Tripped> {
    if let Some(space) = pressure.pg_wal_space {
        let floor = valves.min_free.bytes(space.total);
        if floor > 0 && space.available < floor {
            return Some(Tripped {
                valve: "min_free",
                detail: format!(
                    "pg_wal's file system has {} free, below min_free {}",
                    human_bytes(space.available),
                    valves.min_free
                ),
            });
        }
    }
    if let (Some(limit), Some(held)) = (valves.max_retained, retained)
        && held > limit
    {
        return Some(Tripped {
            valve: "max_retained",
            detail: format!(
                "{} of WAL held back for replicas, above max_retained {}",
                human_bytes(held),
                human_bytes(limit)
            ),
        });
    }
    if let (Some(limit), Some(age)) = (valves.max_hold, pressure.segment_age)
        && age > limit
    {
        return Some(Tripped {
            valve: "max_hold",
            detail: format!(
                "held for {}, longer than max_hold {}",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(limit)
            ),
        });
    }
    None
}

/// The valves that need no server (`min_free` and `max_hold` read only local facts), for
/// when walguard cannot decide at all: an unreachable database or an unreadable list must
/// not let a held segment fill the disk either.
pub fn undecided_valve(valves: &Valves, pressure: &Pressure) -> Option<Tripped> {
    check_valves(valves, pressure, None)
}

/// A list entry and the walsender it was matched with (index into the observation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub entry: Entry,
    pub walsender: Option<usize>,
}

/// The slowest listed replica and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slowest {
    pub entry: String,
    pub lsn: Lsn,
}

/// Why a segment is held: one per problem found, each naming who causes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Rule 3: no such segment with this server's segment size.
    Impossible(String),
    /// The replicas could not be observed.
    Unobserved,
    /// The server asked is a standby: its walsenders are not the primary's replicas.
    InRecovery,
    /// The server is shutting down or starting up (its message): PostgreSQL's archiver
    /// tries once more during a clean shutdown, and the segment goes after the restart.
    NotAccepting(String),
    /// Rule 5: a list line with no walsender; `hint` says what probably went wrong.
    NotConnected { entry: String, hint: Option<String> },
    /// Rule 5: a connected replica that no line names.
    Unlisted { pid: i32, walsender: String },
    /// Rule 6: walsenders whose rows the role may not see (no `pg_monitor`).
    Hidden { pids: Vec<i32>, role: String },
    /// Rule 6: a listed replica with no position of the kind that counts.
    NoPosition {
        entry: String,
        noun: &'static str,
        hidden: bool,
    },
    /// Rule 7: the slowest listed replica is not past the position needed.
    Behind {
        entry: String,
        noun: &'static str,
        at: Lsn,
        need: Lsn,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Impossible(text) => f.write_str(text),
            Reason::Unobserved => f.write_str("the replicas could not be observed"),
            Reason::InRecovery => f.write_str(
                "the server at conninfo is a standby (in recovery): walguard must ask the primary; point conninfo at the primary",
            ),
            Reason::NotAccepting(message) => write!(
                f,
                "the server does not accept connections now ({message}): the segment stays in pg_wal and is archived once it is up"
            ),
            Reason::NotConnected { entry, hint: None } => write!(f, "replica {entry} not connected"),
            Reason::NotConnected { entry, hint: Some(h) } => {
                write!(f, "replica {entry} not connected: {h}")
            }
            Reason::Unlisted { walsender, .. } => write!(
                f,
                "unlisted replica {walsender} is connected: add it to the replicas list (or set unlisted = \"ignore\")"
            ),
            Reason::Hidden { pids, role } => {
                let which = match pids.as_slice() {
                    [pid] => format!("walsender pid {pid}"),
                    _ => format!("{} walsenders (pids {})", pids.len(), join_bounded(pids, 5, ", ")),
                };
                write!(
                    f,
                    "cannot see {which}: the role {role} lacks pg_monitor (GRANT pg_monitor TO {role})"
                )
            }
            Reason::NoPosition { entry, noun, hidden: false } => {
                write!(f, "replica {entry} has not reported a {noun} position yet")
            }
            Reason::NoPosition { entry, hidden: true, .. } => {
                write!(f, "replica {entry}: its position is hidden from walguard's role (no pg_monitor)")
            }
            Reason::Behind { entry, noun, at, need } => {
                let verb = match *noun {
                    "replay" => "replayed",
                    "flush" => "flushed",
                    other => other,
                };
                write!(f, "replica {entry} has {verb} only up to {at}, needs {need}")
            }
        }
    }
}

impl Reason {
    /// Who causes it, for `blame`: a list entry, or `unlisted:PID`.
    pub fn culprit(&self) -> Option<String> {
        match self {
            Reason::NotConnected { entry, .. }
            | Reason::NoPosition { entry, .. }
            | Reason::Behind { entry, .. } => Some(entry.clone()),
            Reason::Unlisted { pid, .. } => Some(format!("unlisted:{pid}")),
            Reason::Impossible(_)
            | Reason::Unobserved
            | Reason::InRecovery
            | Reason::NotAccepting(_)
            | Reason::Hidden { .. } => None,
        }
    }

    /// True when only positions hold it, which the next segment may well see passed:
    /// every other reason will hold the next segment too.
    pub fn is_position(&self) -> bool {
        matches!(self, Reason::Behind { .. })
    }
}

/// `items` joined by `sep`, at most `max` of them, then "and N more": one log line or
/// one screen must stay readable with a thousand-line list.
pub fn join_bounded<T: ToString>(items: &[T], max: usize, sep: &str) -> String {
    let mut out: Vec<String> = items.iter().take(max).map(T::to_string).collect();
    if items.len() > max {
        out.push(format!("and {} more", items.len() - max));
    }
    out.join(sep)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Archive now (normally, or because a valve tripped).
    pub archive: bool,
    /// Why it is held (every reason found). When a valve tripped: why it would have been.
    pub reasons: Vec<Reason>,
    /// Why it needed no waiting (rule 2), for files that are not segments.
    pub exempt: Option<String>,
    /// Who holds it: list entries, or `unlisted:PID`; each once.
    pub blame: Vec<String>,
    /// Set when a safety valve overrode a hold.
    pub valve: Option<Tripped>,
    pub matches: Vec<Match>,
    /// Connected replicas that no list line names (indexes into the observation).
    pub unlisted: Vec<usize>,
    pub slowest: Option<Slowest>,
    /// The position every listed replica must reach.
    pub need: Option<Lsn>,
    /// What is wrong but holds nothing (shown by `check` and `status`).
    pub warnings: Vec<String>,
}

impl Verdict {
    /// `k/n`: list entries matched by a connected walsender, of all entries.
    pub fn replicas_connected(&self) -> (usize, usize) {
        let connected = self
            .matches
            .iter()
            .filter(|m| m.walsender.is_some())
            .count();
        (connected, self.matches.len())
    }

    /// A hold for reasons found before any replica was looked at.
    pub fn held(reasons: Vec<Reason>) -> Verdict {
        Verdict::new(false, reasons)
    }

    fn new(archive: bool, reasons: Vec<Reason>) -> Verdict {
        Verdict {
            archive,
            reasons,
            exempt: None,
            blame: Vec::new(),
            valve: None,
            matches: Vec::new(),
            unlisted: Vec::new(),
            slowest: None,
            need: None,
            warnings: Vec::new(),
        }
    }

    /// The reasons that will hold the next segment too, whatever the positions by then.
    pub fn lasting_reasons(&self) -> Vec<&Reason> {
        self.reasons.iter().filter(|r| !r.is_position()).collect()
    }

    /// Who holds it, for a person: the blamed entries, or the first reason when nobody
    /// in particular is (a standby asked, a role without pg_monitor).
    pub fn culprits(&self, max: usize) -> String {
        if self.blame.is_empty() {
            self.reasons
                .first()
                .map(Reason::to_string)
                .unwrap_or_default()
        } else {
            join_bounded(&self.blame, max, ", ")
        }
    }
}

fn selects(selector: &Selector, ws: &Walsender) -> bool {
    match selector {
        // A listed app: name may pick any walsender, even one that is not a replica.
        Selector::App(name) => ws.application_name == *name,
        _ if !ws.is_replica() => false,
        Selector::Addr(addr) => ws.client_addr == Some(*addr),
        Selector::Host {
            lookup: Lookup::Found(addrs),
            ..
        } => ws.client_addr.is_some_and(|a| addrs.contains(&a)),
        Selector::Host {
            lookup: Lookup::Failed(_),
            ..
        } => false,
        Selector::Host {
            name,
            lookup: Lookup::NotAsked,
        } => ws
            .client_hostname
            .as_deref()
            .is_some_and(|h| h.trim_end_matches('.').eq_ignore_ascii_case(name)),
    }
}

/// Gives every entry its own walsender where possible (a maximum bipartite matching, so
/// that e.g. `app:r1` and `10.0.0.5` never compete for one walsender while another fits).
fn assign(list: &[Entry], walsenders: &[Walsender]) -> Vec<Option<usize>> {
    let fits: Vec<Vec<usize>> = list
        .iter()
        .map(|e| {
            (0..walsenders.len())
                .filter(|&w| selects(&e.selector, &walsenders[w]))
                .collect()
        })
        .collect();
    fn augment(
        e: usize,
        fits: &[Vec<usize>],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for &w in &fits[e] {
            if !seen[w] {
                seen[w] = true;
                if owner[w].is_none_or(|other| augment(other, fits, owner, seen)) {
                    owner[w] = Some(e);
                    return true;
                }
            }
        }
        false
    }
    let mut owner = vec![None; walsenders.len()];
    for e in 0..list.len() {
        augment(e, &fits, &mut owner, &mut vec![false; walsenders.len()]);
    }
    let mut assigned = vec![None; list.len()];
    for (w, e) in owner.iter().enumerate() {
        if let Some(e) = e {
            assigned[*e] = Some(w);
        }
    }
    assigned
}

/// What probably went wrong with a list line that no walsender matches.
fn not_connected_hint(entry: &Entry, obs: &Observation, unlisted: &[usize]) -> Option<String> {
    if let Selector::Host {
        name,
        lookup: Lookup::Failed(error),
    } = &entry.selector
    {
        return Some(format!(
            "host name {name:?} does not resolve ({error}): fix the name, add it to /etc/hosts, or use its IP address"
        ));
    }
    if matches!(entry.selector, Selector::App(_)) {
        return None;
    }
    // A replica on the Unix socket has no address for an address or host line to match.
    let socket = unlisted
        .iter()
        .map(|&w| &obs.walsenders[w])
        .find(|ws| ws.client_addr.is_none() && ws.client_hostname.is_none())?;
    let app = if socket.application_name.is_empty() {
        "NAME".to_string()
    } else {
        socket.application_name.clone()
    };
    Some(format!(
        "a replica connected over the Unix socket ({}) has no address to match: list it as app:{app} (and give each replica its own application_name in primary_conninfo)",
        socket.describe()
    ))
}

/// The application_name a replica gets when its primary_conninfo sets none (what
/// `pg_basebackup -R` writes): two replicas sharing it cannot be told apart by `app:`.
const DEFAULT_APPLICATION_NAME: &str = "walreceiver";

/// Decides whether `wal` may be archived now. `observation` is only consulted for
/// segments; `None` stands for "not observed", which holds a segment.
pub fn decide(
    wal: &WalFile,
    observation: Option<&Observation>,
    pressure: &Pressure,
    list: &[Entry],
    policy: &Policy,
) -> Verdict {
    let id = match wal {
        WalFile::Segment(id) => id,
        // Rule 2: replicas never stream these from pg_wal, and a held history file only
        // hurts a failover.
        other => {
            return Verdict {
                exempt: Some(format!(
                    "{} files are archived at once: replicas never stream them from pg_wal",
                    other.kind()
                )),
                ..Verdict::new(true, Vec::new())
            };
        }
    };
    let Some(obs) = observation else {
        return Verdict::new(false, vec![Reason::Unobserved]);
    };
    if obs.in_recovery {
        let valve = check_valves(&policy.valves, pressure, None);
        return Verdict {
            valve: valve.clone(),
            ..Verdict::new(valve.is_some(), vec![Reason::InRecovery])
        };
    }
    let mut reasons = Vec::new();

    // Rule 3: where the segment ends, plus the margin the operator asked for.
    let need = match id.end(obs.segment_size) {
        Ok(end) => {
            let margin = policy
                .keep_segments
                .saturating_mul(obs.segment_size.bytes());
            Some(Lsn(end.0.saturating_add(margin)))
        }
        Err(e) => {
            reasons.push(Reason::Impossible(e.to_string()));
            None
        }
    };

    // Rule 5: every line matched by its own walsender; no unlisted replica.
    let matches: Vec<Match> = list
        .iter()
        .zip(assign(list, &obs.walsenders))
        .map(|(entry, walsender)| Match {
            entry: entry.clone(),
            walsender,
        })
        .collect();
    let matched = |w: usize| matches.iter().any(|m| m.walsender == Some(w));
    let unlisted: Vec<usize> = (0..obs.walsenders.len())
        .filter(|&w| obs.walsenders[w].is_replica() && obs.walsenders[w].visible())
        .filter(|&w| !matched(w))
        .collect();
    for m in matches.iter().filter(|m| m.walsender.is_none()) {
        reasons.push(Reason::NotConnected {
            entry: m.entry.to_string(),
            hint: not_connected_hint(&m.entry, obs, &unlisted),
        });
    }
    if policy.unlisted == Unlisted::Hold {
        for &w in &unlisted {
            reasons.push(Reason::Unlisted {
                pid: obs.walsenders[w].pid,
                walsender: obs.walsenders[w].describe(),
            });
        }
    }

    // Rule 6, first half: without pg_monitor the rows hide addresses and positions.
    let hidden: Vec<i32> = obs
        .walsenders
        .iter()
        .filter(|ws| !ws.visible())
        .map(|ws| ws.pid)
        .collect();
    if !hidden.is_empty() {
        reasons.push(Reason::Hidden {
            pids: hidden,
            role: obs
                .role
                .clone()
                .unwrap_or_else(|| "walguard connects as".to_string()),
        });
    }

    // Rules 6 and 7: every matched replica has reported a position, and the slowest is past.
    let mut slowest: Option<Slowest> = None;
    let noun = policy.position.name(obs.origin);
    for m in &matches {
        let Some(ws) = m.walsender.map(|w| &obs.walsenders[w]) else {
            continue;
        };
        match policy.position.reported(obs.origin, ws) {
            None => reasons.push(Reason::NoPosition {
                entry: m.entry.to_string(),
                noun,
                hidden: !ws.visible(),
            }),
            Some(lsn) if slowest.as_ref().is_none_or(|s| lsn < s.lsn) => {
                slowest = Some(Slowest {
                    entry: m.entry.to_string(),
                    lsn,
                });
            }
            Some(_) => {}
        }
    }
    if let (Some(s), Some(need)) = (&slowest, need)
        && s.lsn < need
    {
        reasons.push(Reason::Behind {
            entry: s.entry.clone(),
            noun,
            at: s.lsn,
            need,
        });
    }

    let sharing = matches
        .iter()
        .filter_map(|m| m.walsender.map(|w| &obs.walsenders[w]))
        .filter(|ws| ws.application_name == DEFAULT_APPLICATION_NAME)
        .count();
    let mut warnings = Vec::new();
    if sharing > 1 {
        warnings.push(format!(
            "{sharing} listed replicas share the default application_name {DEFAULT_APPLICATION_NAME} (pg_basebackup -R leaves it): \
             set application_name=NAME in each replica's primary_conninfo and list them as app:NAME, so the list can tell them apart"
        ));
    }

    // Rule 8: a held segment goes anyway when keeping it would endanger the primary.
    let valve = if reasons.is_empty() {
        None
    } else {
        check_valves(&policy.valves, pressure, retained(obs, wal))
    };
    let mut blame: Vec<String> = Vec::new();
    for culprit in reasons.iter().filter_map(Reason::culprit) {
        if !blame.contains(&culprit) {
            blame.push(culprit);
        }
    }
    Verdict {
        archive: reasons.is_empty() || valve.is_some(),
        reasons,
        exempt: None,
        blame,
        valve,
        matches,
        unlisted,
        slowest,
        need,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::parse;
    use crate::observation::Space;
    use crate::units::Bytes;
    use crate::wal::{SegmentId, SegmentSize};
    use proptest::prelude::*;

    const MIB16: u64 = 16 << 20;

    fn ws(pid: i32, app: &str, addr: Option<&str>, replay: Option<u64>) -> Walsender {
        let lsn = replay.map(Lsn);
        Walsender {
            pid,
            user: Some("replicator".into()),
            application_name: app.into(),
            client_addr: addr.map(|a| a.parse().unwrap()),
            state: Some("streaming".into()),
            sent: lsn,
            write: lsn,
            flush: lsn,
            replay: lsn,
            ..Walsender::default()
        }
    }

    fn obs(walsenders: Vec<Walsender>) -> Observation {
        Observation {
            origin: Origin::Sql,
            segment_size: SegmentSize::new(MIB16).unwrap(),
            current_lsn: Some(Lsn(0x900_0000)),
            timeline: Some(1),
            in_recovery: false,
            role: Some("walguard_role".into()),
            system_identifier: None,
            server_version: None,
            control: None,
            walsenders,
            archiver: None,
        }
    }

    /// Segment 3 of timeline 1: ends at 0/4000000.
    fn seg3() -> WalFile {
        "000000010000000000000003".parse().unwrap()
    }

    fn decide_list(list: &str, o: &Observation, policy: Policy) -> Verdict {
        decide(
            &seg3(),
            Some(o),
            &Pressure::default(),
            &parse(list, "l").unwrap(),
            &policy,
        )
    }

    #[test]
    fn table() {
        let end = 0x400_0000;
        let p = Policy::default();
        // (case, list, walsenders, policy, archive?, a reason must contain)
        type Case = (
            &'static str,
            &'static str,
            Vec<Walsender>,
            Policy,
            bool,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "all past",
                "app:r1\napp:r2",
                vec![
                    ws(1, "r1", None, Some(end)),
                    ws(2, "r2", None, Some(end + 5)),
                ],
                p,
                true,
                "",
            ),
            (
                "one short",
                "app:r1\napp:r2",
                vec![
                    ws(1, "r1", None, Some(end)),
                    ws(2, "r2", None, Some(end - 1)),
                ],
                p,
                false,
                "replica app:r2 has replayed only up to 0/3FFFFFF, needs 0/4000000",
            ),
            (
                "one missing",
                "app:r1\napp:r2",
                vec![ws(1, "r1", None, Some(end))],
                p,
                false,
                "replica app:r2 not connected",
            ),
            (
                "unlisted holds",
                "app:r1",
                vec![
                    ws(1, "r1", None, Some(end)),
                    ws(2, "r2", Some("10.0.0.7"), Some(end)),
                ],
                p,
                false,
                "unlisted replica pid 2 app r2 from 10.0.0.7 is connected",
            ),
            (
                "unlisted ignored",
                "app:r1",
                vec![ws(1, "r1", None, Some(end)), ws(2, "r2", None, Some(0))],
                Policy {
                    unlisted: Unlisted::Ignore,
                    ..p
                },
                true,
                "",
            ),
            (
                "null replay",
                "app:r1",
                vec![ws(1, "r1", None, None)],
                p,
                false,
                "replica app:r1 has not reported a replay position yet",
            ),
            (
                "keep_segments",
                "app:r1",
                vec![ws(1, "r1", None, Some(end + MIB16 - 1))],
                Policy {
                    keep_segments: 1,
                    ..p
                },
                false,
                "needs 0/5000000",
            ),
            (
                "keep_segments met",
                "app:r1",
                vec![ws(1, "r1", None, Some(end + MIB16))],
                Policy {
                    keep_segments: 1,
                    ..p
                },
                true,
                "",
            ),
            (
                "same address twice needs two",
                "10.0.0.5\n10.0.0.5",
                vec![ws(1, "a", Some("10.0.0.5"), Some(end))],
                p,
                false,
                "replica 10.0.0.5 not connected",
            ),
            (
                "same address twice matched",
                "10.0.0.5\n10.0.0.5",
                vec![
                    ws(1, "a", Some("10.0.0.5"), Some(end)),
                    ws(2, "b", Some("10.0.0.5"), Some(end)),
                ],
                p,
                true,
                "",
            ),
            (
                "mapped v4",
                "10.0.0.5",
                vec![ws(1, "a", Some("::ffff:10.0.0.5"), Some(end))],
                p,
                true,
                "",
            ),
            ("empty list, nobody", "", vec![], p, true, ""),
            (
                "empty list, a replica",
                "",
                vec![ws(1, "a", None, Some(end))],
                p,
                false,
                "unlisted replica",
            ),
        ];
        for (name, list, walsenders, policy, archive, reason) in cases {
            let mut o = obs(walsenders);
            for w in &mut o.walsenders {
                w.client_addr = w.client_addr.map(|a| a.to_canonical());
            }
            let v = decide_list(list, &o, policy);
            assert_eq!(v.archive, archive, "{name}: {:?}", v.reasons);
            assert!(
                v.reasons.iter().any(|r| r.to_string().contains(reason))
                    || (archive && v.reasons.is_empty()),
                "{name}: {:?}",
                v.reasons
            );
        }
    }

    #[test]
    fn huge_keep_segments_saturates_and_holds() {
        let o = obs(vec![ws(1, "r1", None, Some(u64::MAX - 1))]);
        let policy = Policy {
            keep_segments: u64::MAX,
            ..Policy::default()
        };
        let v = decide_list("app:r1", &o, policy);
        assert_eq!(v.need, Some(Lsn(u64::MAX)));
        assert!(!v.archive);
    }

    #[test]
    fn flush_position_is_used_when_asked() {
        let mut w = ws(1, "r1", None, Some(0x300_0000));
        w.flush = Some(Lsn(0x400_0000));
        let o = obs(vec![w]);
        assert!(!decide_list("app:r1", &o, Policy::default()).archive);
        let v = decide_list(
            "app:r1",
            &o,
            Policy {
                position: Position::Flush,
                ..Policy::default()
            },
        );
        assert!(v.archive, "{:?}", v.reasons);
        assert_eq!(
            v.slowest,
            Some(Slowest {
                entry: "app:r1".into(),
                lsn: Lsn(0x400_0000)
            })
        );
        assert_eq!(v.need, Some(Lsn(0x400_0000)));
    }

    #[test]
    fn non_replicas_neither_hold_nor_match_addresses() {
        let end = 0x400_0000;
        let mut logical = ws(2, "sub1", Some("10.0.0.5"), Some(0));
        logical.logical = true;
        let mut backup = ws(3, "pg_basebackup", Some("10.0.0.5"), None);
        backup.state = Some("backup".into());
        let stream = ws(4, "pg_basebackup", Some("10.0.0.5"), Some(0));
        let o = obs(vec![
            ws(1, "r1", Some("10.0.0.5"), Some(end)),
            logical,
            backup,
            stream,
        ]);
        let v = decide_list("10.0.0.5", &o, Policy::default());
        assert!(v.archive, "{:?}", v.reasons);
        assert_eq!(v.matches[0].walsender, Some(0));
        // ...but a list line may name one explicitly, and then it counts.
        let v = decide_list("10.0.0.5\napp:sub1", &o, Policy::default());
        assert!(!v.archive);
        assert_eq!(v.slowest.unwrap().entry, "app:sub1");
    }

    #[test]
    fn missing_privilege_names_the_connecting_role_and_the_replica() {
        let mut hidden = ws(7, "r1", None, None);
        hidden.state = None;
        let v = decide_list("app:r1", &obs(vec![hidden]), Policy::default());
        assert!(!v.archive);
        let text: Vec<String> = v.reasons.iter().map(Reason::to_string).collect();
        assert!(
            text[0].contains(
                "the role walguard_role lacks pg_monitor (GRANT pg_monitor TO walguard_role)"
            ),
            "{text:?}"
        );
        assert!(!text.iter().any(|r| r.contains("replicator")), "{text:?}");
        assert_eq!(
            v.blame,
            vec!["app:r1".to_string()],
            "never an empty culprit"
        );
        assert_eq!(v.culprits(5), "app:r1");
    }

    #[test]
    fn exempt_files_and_unobserved_segments() {
        for name in [
            "00000002.history",
            "000000010000000000000003.00000028.backup",
            "000000010000000000000003.partial",
        ] {
            let v = decide(
                &name.parse().unwrap(),
                None,
                &Pressure::default(),
                &parse("app:r1", "l").unwrap(),
                &Policy::default(),
            );
            assert!(v.archive, "{name}");
        }
        let v = decide(&seg3(), None, &Pressure::default(), &[], &Policy::default());
        assert!(!v.archive);
    }

    #[test]
    fn matching_is_not_greedy() {
        // Greedy in list order would give w1 to app:r1 and leave 10.0.0.1 unmatched.
        let end = 0x400_0000;
        let o = obs(vec![
            ws(1, "r1", Some("10.0.0.1"), Some(end)),
            ws(2, "r1", Some("10.0.0.2"), Some(end)),
        ]);
        let v = decide_list("app:r1\n10.0.0.1", &o, Policy::default());
        assert!(v.archive, "{:?}", v.reasons);
        assert_eq!(v.replicas_connected(), (2, 2));
    }

    #[test]
    fn segment_impossible_for_size_holds() {
        let bad: WalFile = "000000010000000000000100".parse().unwrap();
        let v = decide(
            &bad,
            Some(&obs(vec![])),
            &Pressure::default(),
            &[],
            &Policy::default(),
        );
        assert!(!v.archive);
        assert!(
            v.reasons[0]
                .to_string()
                .contains("does not exist with wal_segment_size"),
            "{:?}",
            v.reasons
        );
    }

    #[test]
    fn valves_override_a_hold_and_only_a_hold() {
        let end = 0x400_0000;
        let held = obs(vec![
            ws(1, "r1", None, Some(end)),
            ws(2, "r2", None, Some(0)),
        ]);
        let space = |available| {
            Some(Space {
                available,
                total: 1000,
            })
        };
        let gib = 1u64 << 30;
        // (case, valves, pressure, archive?, tripped valve)
        let cases: Vec<(&str, Valves, Pressure, bool, Option<&str>)> = vec![
            (
                "no pressure",
                Valves::default(),
                Pressure::default(),
                false,
                None,
            ),
            (
                "plenty of space",
                Valves::default(),
                Pressure {
                    pg_wal_space: space(51),
                    ..Pressure::default()
                },
                false,
                None,
            ),
            (
                "below 5%",
                Valves::default(),
                Pressure {
                    pg_wal_space: space(49),
                    ..Pressure::default()
                },
                true,
                Some("min_free"),
            ),
            (
                "min_free 0 disables",
                Valves {
                    min_free: FreeSpace::Size(Bytes(0)),
                    ..Valves::default()
                },
                Pressure {
                    pg_wal_space: space(0),
                    ..Pressure::default()
                },
                false,
                None,
            ),
            (
                "absolute floor",
                Valves {
                    min_free: FreeSpace::Size(Bytes(2 * gib)),
                    ..Valves::default()
                },
                Pressure {
                    pg_wal_space: Some(Space {
                        available: gib,
                        total: 100 * gib,
                    }),
                    ..Pressure::default()
                },
                true,
                Some("min_free"),
            ),
            // 0/9000000 - 0/3000000 = 96 MiB retained
            (
                "retained over",
                Valves {
                    max_retained: Some(95 << 20),
                    ..Valves::default()
                },
                Pressure::default(),
                true,
                Some("max_retained"),
            ),
            (
                "retained under",
                Valves {
                    max_retained: Some(96 << 20),
                    ..Valves::default()
                },
                Pressure::default(),
                false,
                None,
            ),
            (
                "held too long",
                Valves {
                    max_hold: Some(Duration::from_secs(60)),
                    ..Valves::default()
                },
                Pressure {
                    segment_age: Some(Duration::from_secs(61)),
                    ..Pressure::default()
                },
                true,
                Some("max_hold"),
            ),
            (
                "not yet too long",
                Valves {
                    max_hold: Some(Duration::from_secs(60)),
                    ..Valves::default()
                },
                Pressure {
                    segment_age: Some(Duration::from_secs(59)),
                    ..Pressure::default()
                },
                false,
                None,
            ),
        ];
        for (name, valves, pressure, archive, tripped) in cases {
            let policy = Policy {
                valves,
                ..Policy::default()
            };
            let v = decide(
                &seg3(),
                Some(&held),
                &pressure,
                &parse("app:r1\napp:r2", "l").unwrap(),
                &policy,
            );
            assert_eq!(v.archive, archive, "{name}");
            assert_eq!(v.valve.as_ref().map(|t| t.valve), tripped, "{name}");
            assert_eq!(
                v.blame,
                vec!["app:r2".to_string()],
                "{name}: the replica left behind is named"
            );
        }
        // A segment that may go anyway never trips a valve.
        let fine = obs(vec![
            ws(1, "r1", None, Some(end)),
            ws(2, "r2", None, Some(end)),
        ]);
        let pressure = Pressure {
            pg_wal_space: space(0),
            ..Pressure::default()
        };
        let v = decide(
            &seg3(),
            Some(&fine),
            &pressure,
            &parse("app:r1\napp:r2", "l").unwrap(),
            &Policy::default(),
        );
        assert!(v.archive && v.valve.is_none());
    }

    #[test]
    fn shared_memory_decides_like_sql() {
        // The module's observation carries the same positions as pg_stat_replication:
        // every position and policy gives the verdict SQL gives.
        for (replay, flush) in [
            (0x300_0000, 0x400_0000),
            (0x400_0000, 0x400_0000),
            (0, 0x300_0000),
        ] {
            let mut w = ws(1, "r1", None, Some(replay));
            w.flush = Some(Lsn(flush));
            for position in [Position::Replay, Position::Flush] {
                let policy = Policy {
                    position,
                    ..Policy::default()
                };
                let sql = obs(vec![w.clone()]);
                let shmem = Observation {
                    origin: Origin::Shmem,
                    ..sql.clone()
                };
                let (a, b) = (
                    decide_list("app:r1", &sql, policy),
                    decide_list("app:r1", &shmem, policy),
                );
                assert_eq!(
                    (a.archive, a.need, a.reasons),
                    (b.archive, b.need, b.reasons)
                );
            }
        }
    }

    #[test]
    fn process_titles_decide_by_the_sent_position() {
        let mut w = ws(1, "", Some("10.0.0.5"), None);
        w.sent = Some(Lsn(0x400_0000));
        let o = Observation {
            origin: Origin::Ps,
            ..obs(vec![w])
        };
        let v = decide_list("10.0.0.5", &o, Policy::default());
        assert!(v.archive, "{:?}", v.reasons);
        let mut behind = o.clone();
        behind.walsenders[0].sent = Some(Lsn(0x3FF_FFFF));
        let v = decide_list("10.0.0.5", &behind, Policy::default());
        assert!(
            v.reasons[0]
                .to_string()
                .contains("has sent only up to 0/3FFFFFF"),
            "{:?}",
            v.reasons
        );
    }

    #[test]
    fn a_standby_asked_holds_and_says_so() {
        let mut o = obs(vec![ws(1, "r1", None, Some(0))]);
        o.in_recovery = true;
        o.current_lsn = None;
        let v = decide_list("app:r1", &o, Policy::default());
        assert!(!v.archive);
        assert_eq!(v.reasons, vec![Reason::InRecovery]);
        assert!(
            v.reasons[0]
                .to_string()
                .contains("walguard must ask the primary")
        );
        assert!(v.culprits(3).contains("standby"), "never an empty culprit");
    }

    #[test]
    fn an_unresolvable_name_is_a_missing_replica_and_valves_still_apply() {
        let end = 0x400_0000;
        let mut list = parse("app:r1\ngone.example", "l").unwrap();
        list[1].selector = Selector::Host {
            name: "gone.example".into(),
            lookup: Lookup::Failed("failed to lookup address information".into()),
        };
        let o = obs(vec![ws(1, "r1", None, Some(end))]);
        let p = Policy::default();
        let v = decide(&seg3(), Some(&o), &Pressure::default(), &list, &p);
        assert!(!v.archive);
        assert_eq!(v.blame, vec!["gone.example".to_string()]);
        let text = v.reasons[0].to_string();
        assert!(
            text.starts_with("replica gone.example not connected: host name \"gone.example\" does not resolve (failed to lookup"),
            "{text}"
        );
        let full = Pressure {
            pg_wal_space: Some(Space {
                available: 1,
                total: 1000,
            }),
            ..Pressure::default()
        };
        let v = decide(&seg3(), Some(&o), &full, &list, &p);
        assert!(v.archive && v.valve.is_some());
    }

    #[test]
    fn a_socket_replica_listed_by_address_gets_the_app_hint() {
        let end = 0x400_0000;
        let v = decide_list(
            "127.0.0.1",
            &obs(vec![ws(1, "r1", None, Some(end))]),
            Policy::default(),
        );
        assert!(!v.archive);
        let text = v.reasons[0].to_string();
        assert!(
            text.contains("connected over the Unix socket (pid 1 app r1 from local socket)")
                && text.contains("list it as app:r1"),
            "{text}"
        );
    }

    #[test]
    fn two_default_application_names_warn() {
        let end = 0x400_0000;
        let o = obs(vec![
            ws(1, "walreceiver", Some("10.0.0.1"), Some(end)),
            ws(2, "walreceiver", Some("10.0.0.2"), Some(end)),
        ]);
        let v = decide_list("10.0.0.1\n10.0.0.2", &o, Policy::default());
        assert!(v.archive);
        assert_eq!(v.warnings.len(), 1);
        assert!(v.warnings[0].contains("share the default application_name walreceiver"));
        let one = decide_list(
            "10.0.0.1",
            &obs(vec![ws(1, "walreceiver", Some("10.0.0.1"), Some(end))]),
            Policy::default(),
        );
        assert!(one.warnings.is_empty());
    }

    #[test]
    fn lasting_reasons_leave_out_positions() {
        let end = 0x400_0000;
        let o = obs(vec![ws(1, "r1", None, Some(end - 1))]);
        let behind = decide_list("app:r1", &o, Policy::default());
        assert!(!behind.archive && behind.lasting_reasons().is_empty());
        let missing = decide_list("app:r1\napp:r2", &o, Policy::default());
        assert_eq!(missing.lasting_reasons().len(), 1);
    }

    #[test]
    fn bounded_lists() {
        let names: Vec<String> = (0..1000).map(|i| format!("app:r{i}")).collect();
        assert_eq!(join_bounded(&names[..2], 3, ", "), "app:r0, app:r1");
        assert_eq!(
            join_bounded(&names, 3, ", "),
            "app:r0, app:r1, app:r2, and 997 more"
        );
        assert_eq!(join_bounded::<String>(&[], 3, ", "), "");
    }

    #[test]
    fn valves_without_a_server_read_only_local_facts() {
        let valves = Valves {
            max_retained: Some(1),
            max_hold: Some(Duration::from_secs(60)),
            ..Valves::default()
        };
        assert_eq!(undecided_valve(&valves, &Pressure::default()), None);
        let old = Pressure {
            segment_age: Some(Duration::from_secs(61)),
            ..Pressure::default()
        };
        assert_eq!(
            undecided_valve(&valves, &old).map(|t| t.valve),
            Some("max_hold")
        );
    }

    proptest! {
        /// The verdict is "archive" exactly when every listed replica has passed the end.
        #[test]
        fn archive_iff_slowest_past_end(
            positions in proptest::collection::vec(0u64..0x1000_0000, 0..6),
            seg in 0u32..0x10,
            shift in 20u32..=30,
            keep in 0u64..3,
        ) {
            let size = SegmentSize::new(1 << shift).unwrap();
            let id = SegmentId { timeline: 1, log: 0, seg: seg % (1u32 << (32 - shift)) };
            let walsenders: Vec<_> = positions.iter().enumerate()
                .map(|(i, p)| ws(i as i32, &format!("r{i}"), None, Some(*p))).collect();
            let list: String = (0..positions.len()).map(|i| format!("app:r{i}\n")).collect();
            let o = Observation { segment_size: size, walsenders, ..obs(vec![]) };
            let policy = Policy { keep_segments: keep, ..Policy::default() };
            let v = decide(&WalFile::Segment(id), Some(&o), &Pressure::default(), &parse(&list, "l").unwrap(), &policy);
            let need = id.end(size).unwrap().0 + keep * size.bytes();
            prop_assert_eq!(v.archive, positions.iter().all(|p| *p >= need));
            prop_assert_eq!(v.need, Some(Lsn(need)));
        }
    }
}

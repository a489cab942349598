//! The decision: may this WAL file leave `pg_wal` for the archive now? A pure function of
//! what was observed, the replicas list and the policy; docs/design.md, "The decision", rules 2 to 8.
//! (Rule 1, the name, is settled by parsing a [`WalFile`]; rule 9, an unreachable
//! database, never gets this far.)

use std::str::FromStr;
use std::time::Duration;

use crate::list::{Entry, Lookup, Selector};
pub use crate::observation::Position;
use crate::observation::{Observation, Pressure, Slot, Walsender};
use crate::units::{FreeSpace, human_bytes};
use crate::wal::{Lsn, WalFile};

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

/// Where a list line is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// On this server: its replica streams from here.
    Here,
    /// Not at all: the line names this server itself (and why it is taken to).
    Own(String),
    /// On another node (its `upstream=`, or the primary): the reason, for a person.
    Elsewhere(String),
}

/// A list line, the walsender it was matched with (index into the observation), and
/// where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub entry: Entry,
    pub walsender: Option<usize>,
    pub checked: Checked,
    /// Its position that counts: from its walsender, or (not connected) its slot's
    /// `restart_lsn`.
    pub at: Option<Lsn>,
    /// `at` came from its slot.
    pub from_slot: bool,
    /// The position it must reach for the segment to go (its own `keep_segments`).
    pub need: Option<Lsn>,
    /// Its slot as the server shows it, when the line names one.
    pub slot: Option<Slot>,
}

impl Match {
    /// Whether this line counts in the decision here.
    pub fn counts(&self) -> bool {
        self.checked == Checked::Here
    }
}

/// This server's place in the list, and on a standby what the archive already holds:
/// what decides which lines are checked here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// This server's own list line (index) and how it was told (`self = app:n1`).
    pub own: Option<(usize, String)>,
    /// The server is a standby (`archive_mode = always`): it acknowledges a file only once
    /// the archive holds it (the primary archived it), and checks only the lines that
    /// stream from it.
    pub standby: bool,
    /// On a standby: whether the archive holds the file (`Err`: it could not be told, and
    /// why).
    pub archived: Option<Result<bool, String>>,
}

/// Which line of `list` is this server itself: the one `self_setting` names, else the
/// `app:` line of its `cluster_name`, else the one line that names one of `own_addrs`
/// (the host's addresses). Also a warning when the choice could not be made.
pub fn own_line(
    list: &[Entry],
    self_setting: Option<&str>,
    cluster_name: Option<&str>,
    own_addrs: &[core::net::IpAddr],
) -> (Option<(usize, String)>, Option<String>) {
    if let Some(want) = self_setting {
        // Compared as lines write it: `app:n1`, an address, a host name (any case).
        let want = want.trim().to_ascii_lowercase();
        let found = list
            .iter()
            .position(|e| crate::list::display(&e.selector).to_ascii_lowercase() == want);
        return match found {
            Some(i) => (Some((i, format!("self = {want}"))), None),
            None => (
                None,
                Some(format!(
                    "self = {want} names no line of the list: every line is taken for another node"
                )),
            ),
        };
    }
    if let Some(name) = cluster_name.filter(|n| !n.is_empty())
        && let Some(i) = list
            .iter()
            .position(|e| e.selector == Selector::App(name.to_string()))
    {
        return (
            Some((i, format!("the server's cluster_name is {name}"))),
            None,
        );
    }
    let mine: Vec<usize> = (0..list.len())
        .filter(|&i| match &list[i].selector {
            Selector::Addr(a) => own_addrs.contains(a),
            Selector::Host {
                lookup: Lookup::Found(addrs),
                ..
            } => addrs.iter().any(|a| own_addrs.contains(a)),
            _ => false,
        })
        .collect();
    match mine.as_slice() {
        [i] => (
            Some((*i, format!("{} is one of this host's addresses", list[*i]))),
            None,
        ),
        [] => (None, None),
        many => (
            None,
            Some(format!(
                "{} lines name this host's addresses ({}): set self (WALGUARD_SELF) to say which is this server",
                many.len(),
                join_bounded(
                    &many
                        .iter()
                        .map(|&i| list[i].to_string())
                        .collect::<Vec<_>>(),
                    5,
                    ", "
                )
            )),
        ),
    }
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
    /// On a standby: the archive does not hold the file yet (the primary has not
    /// archived it), or it could not be told.
    NotArchivedYet { file: String, why: Option<String> },
    /// A listed replica is not connected and its named slot does not exist.
    SlotMissing { entry: String, slot: String },
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
            Reason::NotArchivedYet { file, why: None } => write!(
                f,
                "{file} is not in the archive yet: on a standby it is acknowledged only once the primary has archived it"
            ),
            Reason::NotArchivedYet { file, why: Some(why) } => write!(
                f,
                "whether {file} is in the archive cannot be told ({why}): on a standby it is acknowledged only once the primary has archived it"
            ),
            Reason::SlotMissing { entry, slot } => write!(
                f,
                "replica {entry} not connected, and its slot {slot} does not exist on this server: create it, or fix slot= in the list"
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
            | Reason::SlotMissing { entry, .. }
            | Reason::Behind { entry, .. } => Some(entry.clone()),
            Reason::Unlisted { pid, .. } => Some(format!("unlisted:{pid}")),
            Reason::Impossible(_)
            | Reason::Unobserved
            | Reason::InRecovery
            | Reason::NotAccepting(_)
            | Reason::NotArchivedYet { .. }
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
    /// Lines whose slot is lost: their replica must be rebuilt, and they hold nothing.
    pub lost: Vec<String>,
    /// Decided on a standby: an acknowledgement only, nothing goes into the archive.
    pub standby: bool,
    /// This server's own line (skipped) and why it is taken to be.
    pub own: Option<(String, String)>,
}

impl Verdict {
    /// `k/n`: list lines checked here that a connected walsender matches, of all lines
    /// checked here.
    pub fn replicas_connected(&self) -> (usize, usize) {
        let here = self.matches.iter().filter(|m| m.counts());
        let connected = here.clone().filter(|m| m.walsender.is_some()).count();
        (connected, here.count())
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
            lost: Vec::new(),
            standby: false,
            own: None,
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

/// Decides whether `wal` may be archived now (on a standby: acknowledged). `observation`
/// is only consulted for segments; `None` stands for "not observed", which holds a
/// segment. `scope` says which list line is this server and, on a standby, what the
/// archive holds.
pub fn decide(
    wal: &WalFile,
    observation: Option<&Observation>,
    pressure: &Pressure,
    list: &[Entry],
    policy: &Policy,
    scope: &Scope,
) -> Verdict {
    let own = scope
        .own
        .as_ref()
        .and_then(|(i, why)| Some((list.get(*i)?.to_string(), why.clone())));
    // On a standby nothing is acknowledged that the archive does not hold: what this
    // standby recycles, its primary must have archived.
    let not_archived = || -> Option<Reason> {
        match &scope.archived {
            _ if !scope.standby => None,
            Some(Ok(true)) => None,
            Some(Ok(false)) | None => Some(Reason::NotArchivedYet {
                file: wal.to_string(),
                why: None,
            }),
            Some(Err(why)) => Some(Reason::NotArchivedYet {
                file: wal.to_string(),
                why: Some(why.clone()),
            }),
        }
    };
    let id = match wal {
        WalFile::Segment(id) => id,
        // Rule 2: replicas never stream these from pg_wal, and a held history file only
        // hurts a failover. On a standby they wait for the archive like the rest.
        other => {
            let held: Vec<Reason> = not_archived().into_iter().collect();
            return Verdict {
                exempt: held.is_empty().then(|| {
                    format!(
                        "{} files are archived at once: replicas never stream them from pg_wal",
                        other.kind()
                    )
                }),
                standby: scope.standby,
                own,
                ..Verdict::new(held.is_empty(), held)
            };
        }
    };
    let Some(obs) = observation else {
        return Verdict::new(false, vec![Reason::Unobserved]);
    };
    if obs.in_recovery && !scope.standby {
        let valve = check_valves(&policy.valves, pressure, None);
        return Verdict {
            valve: valve.clone(),
            ..Verdict::new(valve.is_some(), vec![Reason::InRecovery])
        };
    }
    let mut reasons = Vec::new();
    reasons.extend(not_archived());
    let size = obs.segment_size.bytes();

    // Rule 3: where the segment ends; each line adds the margin asked for it.
    let end = match id.end(obs.segment_size) {
        Ok(end) => Some(end),
        Err(e) => {
            reasons.push(Reason::Impossible(e.to_string()));
            None
        }
    };
    let need_for = |entry: &Entry| {
        let keep = entry.options.keep_segments.unwrap_or(policy.keep_segments);
        end.map(|e| Lsn(e.0.saturating_add(keep.saturating_mul(size))))
    };

    // Which lines are checked here: a line without upstream= on the primary, a line whose
    // upstream is this server's own line; never the own line itself.
    let own_index = scope.own.as_ref().map(|(i, _)| *i);
    let own_name = own_index.and_then(|i| list.get(i)).map(|e| e.to_string());
    let checked: Vec<Checked> = list
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if Some(i) == own_index {
                return Checked::Own(
                    scope
                        .own
                        .as_ref()
                        .map(|(_, w)| w.clone())
                        .unwrap_or_default(),
                );
            }
            match (&e.options.upstream, obs.in_recovery) {
                (Some(up), _) if Some(up) == own_name.as_ref() => Checked::Here,
                (Some(up), _) => Checked::Elsewhere(format!("streams from {up}: checked there")),
                (None, false) => Checked::Here,
                (None, true) => {
                    Checked::Elsewhere("streams from the primary: checked there".into())
                }
            }
        })
        .collect();

    // Rule 5: every line matched by its own walsender (the own line takes none). A line
    // checked elsewhere whose replica streams from here after all (a cascade pointed at
    // this server) is checked here too: it can only protect more.
    let others: Vec<usize> = (0..list.len()).filter(|&i| Some(i) != own_index).collect();
    let picked: Vec<Entry> = others.iter().map(|&i| list[i].clone()).collect();
    let mut assigned: Vec<Option<usize>> = vec![None; list.len()];
    for (&i, w) in others.iter().zip(assign(&picked, &obs.walsenders)) {
        assigned[i] = w;
    }
    let mut matches: Vec<Match> = Vec::with_capacity(list.len());
    for ((entry, walsender), checked) in list.iter().zip(assigned).zip(checked) {
        let checked = match checked {
            Checked::Elsewhere(_) if walsender.is_some() => Checked::Here,
            other => other,
        };
        let slot = entry.options.slot.as_ref().and_then(|name| {
            obs.slots
                .as_ref()?
                .iter()
                .find(|s| &s.name == name)
                .cloned()
        });
        let kind = entry.options.position.unwrap_or(policy.position);
        let (at, from_slot) = match (walsender, &slot) {
            (Some(w), _) => (kind.reported(obs.origin, &obs.walsenders[w]), false),
            // Not connected: what its slot says it last confirmed (flushed), never more.
            (None, Some(s)) if !s.lost() => (s.restart_lsn, s.restart_lsn.is_some()),
            (None, _) => (None, false),
        };
        matches.push(Match {
            need: need_for(entry),
            entry: entry.clone(),
            walsender,
            checked,
            at,
            from_slot,
            slot,
        });
    }
    let matched = |w: usize| matches.iter().any(|m| m.walsender == Some(w));
    let unlisted: Vec<usize> = (0..obs.walsenders.len())
        .filter(|&w| obs.walsenders[w].is_replica() && obs.walsenders[w].visible())
        .filter(|&w| !matched(w))
        .collect();
    let mut lost = Vec::new();
    for m in matches
        .iter()
        .filter(|m| m.counts() && m.walsender.is_none())
    {
        let entry = m.entry.to_string();
        match (&m.entry.options.slot, &m.slot, &obs.slots) {
            // Its slot is lost: it can no longer stream what it needs; holding more only
            // fills the disk. It must be rebuilt.
            (Some(_), Some(s), _) if s.lost() => lost.push(entry),
            // Its slot speaks for it (the position is compared below).
            (Some(_), Some(_), _) if m.from_slot => {}
            (Some(slot), None, Some(_)) => reasons.push(Reason::SlotMissing {
                entry,
                slot: slot.clone(),
            }),
            _ => reasons.push(Reason::NotConnected {
                hint: not_connected_hint(&m.entry, obs, &unlisted),
                entry,
            }),
        }
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

    // Rules 6 and 7: every line counted here has a position, and each is past what it
    // needs. The slowest is the one furthest from its need.
    let mut slowest: Option<(&Match, i128)> = None;
    for m in matches.iter().filter(|m| m.counts()) {
        if lost.contains(&m.entry.to_string()) {
            continue;
        }
        let noun = m
            .entry
            .options
            .position
            .unwrap_or(policy.position)
            .name(obs.origin);
        match (m.at, m.walsender) {
            (None, Some(w)) => reasons.push(Reason::NoPosition {
                entry: m.entry.to_string(),
                noun,
                hidden: !obs.walsenders[w].visible(),
            }),
            (None, None) => {}
            (Some(at), _) => {
                let margin = i128::from(at.0) - i128::from(m.need.unwrap_or(at).0);
                if slowest.is_none_or(|(_, worst)| margin < worst) {
                    slowest = Some((m, margin));
                }
            }
        }
    }
    if let Some((m, margin)) = slowest
        && margin < 0
        && let (Some(at), Some(need)) = (m.at, m.need)
    {
        reasons.push(Reason::Behind {
            entry: m.entry.to_string(),
            noun: if m.from_slot {
                "slot's restart"
            } else {
                m.entry
                    .options
                    .position
                    .unwrap_or(policy.position)
                    .name(obs.origin)
            },
            at,
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
    for entry in &lost {
        warnings.push(format!(
            "replica {entry}: its slot is lost (the WAL it needs is gone): it must be rebuilt from a base backup, and holds nothing until then"
        ));
    }

    // Rule 8: a held segment goes anyway when keeping it would endanger the server.
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
    let default_need = end.map(|e| {
        Lsn(e
            .0
            .saturating_add(policy.keep_segments.saturating_mul(size)))
    });
    Verdict {
        archive: reasons.is_empty() || valve.is_some(),
        reasons,
        exempt: None,
        blame,
        valve,
        slowest: slowest.and_then(|(m, _)| {
            Some(Slowest {
                entry: m.entry.to_string(),
                lsn: m.at?,
            })
        }),
        need: slowest.and_then(|(m, _)| m.need).or(default_need),
        matches,
        unlisted,
        warnings,
        lost,
        standby: scope.standby,
        own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::parse;
    use crate::observation::Origin;
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
            cluster_name: None,
            slots: None,
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
            &Scope::default(),
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
                &Scope::default(),
            );
            assert!(v.archive, "{name}");
        }
        let v = decide(
            &seg3(),
            None,
            &Pressure::default(),
            &[],
            &Policy::default(),
            &Scope::default(),
        );
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
            &Scope::default(),
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
                &Scope::default(),
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
            &Scope::default(),
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

    fn decide_in(list: &str, o: &Observation, scope: &Scope) -> Verdict {
        decide(
            &seg3(),
            Some(o),
            &Pressure::default(),
            &parse(list, "l").unwrap(),
            &Policy::default(),
            scope,
        )
    }

    /// Scope with `own` the line at `i`.
    fn own(i: usize) -> Scope {
        Scope {
            own: Some((i, "self = test".into())),
            ..Scope::default()
        }
    }

    const END: u64 = 0x400_0000;

    #[test]
    fn one_list_for_every_node() {
        // Three nodes, n1 the primary: its own line is skipped, not "not connected".
        let list = "app:n1\napp:n2\napp:n3\napp:c1 upstream=app:n2\n";
        let o = obs(vec![
            ws(1, "n2", None, Some(END)),
            ws(2, "n3", None, Some(END)),
        ]);
        let v = decide_in(list, &o, &own(0));
        assert!(v.archive, "{:?}", v.reasons);
        assert_eq!(v.own, Some(("app:n1".into(), "self = test".into())));
        assert_eq!(
            v.replicas_connected(),
            (2, 2),
            "n2 and n3 count; n1 and c1 do not"
        );
        assert!(matches!(&v.matches[3].checked, Checked::Elsewhere(why) if why.contains("app:n2")));
        // Without knowing which line it is, the primary holds for itself: the reason to
        // set self.
        let v = decide_in(list, &o, &Scope::default());
        assert!(!v.archive);
        assert!(
            v.reasons
                .iter()
                .any(|r| r.to_string() == "replica app:n1 not connected")
        );
        // The cascade's line, checked on n2 (a standby): its own walsender, c1.
        let mut standby = obs(vec![ws(5, "c1", None, Some(END - 1))]);
        standby.in_recovery = true;
        let on_n2 = Scope {
            standby: true,
            archived: Some(Ok(true)),
            ..own(1)
        };
        let v = decide_in(list, &standby, &on_n2);
        assert!(!v.archive);
        assert_eq!(v.blame, vec!["app:c1"]);
        assert_eq!(v.replicas_connected(), (1, 1), "only c1 is checked on n2");
        standby.walsenders[0].replay = Some(Lsn(END));
        assert!(decide_in(list, &standby, &on_n2).archive);
        // A standby acknowledges nothing the archive does not hold.
        let v = decide_in(
            list,
            &standby,
            &Scope {
                archived: Some(Ok(false)),
                ..on_n2.clone()
            },
        );
        assert!(!v.archive && v.blame.is_empty(), "{:?}", v.reasons);
        assert!(
            v.reasons[0]
                .to_string()
                .contains("only once the primary has archived it")
        );
        let v = decide_in(
            list,
            &standby,
            &Scope {
                archived: Some(Err("archive_check_via is not set".into())),
                ..on_n2.clone()
            },
        );
        assert!(
            !v.archive
                && v.reasons[0]
                    .to_string()
                    .contains("archive_check_via is not set")
        );
        // An unlisted walsender on the standby still holds.
        let mut extra = standby.clone();
        extra
            .walsenders
            .push(ws(6, "stranger", Some("10.0.0.9"), Some(END)));
        let v = decide_in(list, &extra, &on_n2);
        assert!(
            v.blame.contains(&"unlisted:6".to_string()),
            "{:?}",
            v.reasons
        );
        // History files on a standby: only once archived; on a primary: at once.
        let history: WalFile = "00000002.history".parse().unwrap();
        let held = decide(
            &history,
            None,
            &Pressure::default(),
            &[],
            &Policy::default(),
            &Scope {
                standby: true,
                archived: Some(Ok(false)),
                ..Scope::default()
            },
        );
        assert!(!held.archive);
        let at_once = decide(
            &history,
            None,
            &Pressure::default(),
            &[],
            &Policy::default(),
            &Scope::default(),
        );
        assert!(at_once.archive);
    }

    #[test]
    fn a_cascade_pointed_at_this_server_counts_here() {
        // c1 says it streams from n2, but after a failover it streams from n1: n1 must
        // keep WAL for it too.
        let list = "app:n1\napp:n2\napp:c1 upstream=app:n2\n";
        let o = obs(vec![
            ws(1, "n2", None, Some(END)),
            ws(2, "c1", None, Some(END - 10)),
        ]);
        let v = decide_in(list, &o, &own(0));
        assert!(!v.archive);
        assert_eq!(v.blame, vec!["app:c1"]);
        assert!(v.unlisted.is_empty());
    }

    #[test]
    fn which_line_is_this_server() {
        let mut list = parse("app:n1\n10.0.0.2\nnode-c.internal\n", "l").unwrap();
        let ten2: core::net::IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            own_line(&list, Some("APP:n1"), None, &[]).0.map(|o| o.0),
            Some(0)
        );
        let (none, warn) = own_line(&list, Some("app:n9"), None, &[]);
        assert!(none.is_none() && warn.unwrap().contains("names no line"));
        assert_eq!(
            own_line(&list, None, Some("n1"), &[]).0.map(|o| o.0),
            Some(0)
        );
        assert_eq!(
            own_line(&list, None, Some("main"), &[ten2]).0.map(|o| o.0),
            Some(1)
        );
        if let Selector::Host { lookup, .. } = &mut list[2].selector {
            *lookup = Lookup::Found(vec![ten2]);
        }
        let (none, warn) = own_line(&list, None, None, &[ten2]);
        assert!(
            none.is_none() && warn.unwrap().contains("set self"),
            "two lines name it"
        );
    }

    fn slot(name: &str, restart: Option<u64>, status: &str) -> Slot {
        Slot {
            name: name.into(),
            restart_lsn: restart.map(Lsn),
            wal_status: Some(status.into()),
            ..Slot::default()
        }
    }

    #[test]
    fn slots_speak_for_replicas_that_are_away() {
        let list = "app:r1\napp:r2 slot=r2\n";
        let mut o = obs(vec![ws(1, "r1", None, Some(END + 1))]);
        // r2 is away; its slot says it flushed up to the segment's end: released.
        o.slots = Some(vec![slot("r2", Some(END), "reserved")]);
        let v = decide_in(list, &o, &Scope::default());
        assert!(v.archive, "{:?}", v.reasons);
        assert!(v.matches[1].from_slot);
        // Short of it: held, naming the slot's position.
        o.slots = Some(vec![slot("r2", Some(END - 1), "reserved")]);
        let v = decide_in(list, &o, &Scope::default());
        assert!(!v.archive);
        assert!(
            v.reasons[0]
                .to_string()
                .contains("has slot's restart only up to 0/3FFFFFF"),
            "{}",
            v.reasons[0]
        );
        // Lost: it holds nothing, and says it must be rebuilt.
        o.slots = Some(vec![slot("r2", Some(0), "lost")]);
        let v = decide_in(list, &o, &Scope::default());
        assert!(v.archive, "{:?}", v.reasons);
        assert_eq!(v.lost, vec!["app:r2"]);
        assert!(v.warnings.iter().any(|w| w.contains("must be rebuilt")));
        let invalidated = Slot {
            invalidation_reason: Some("idle_timeout".into()),
            ..slot("r2", Some(END), "reserved")
        };
        o.slots = Some(vec![invalidated]);
        assert_eq!(decide_in(list, &o, &Scope::default()).lost, vec!["app:r2"]);
        // No such slot: held, saying so; slots not readable: as if none were named.
        o.slots = Some(vec![]);
        let v = decide_in(list, &o, &Scope::default());
        assert!(
            v.reasons[0]
                .to_string()
                .contains("its slot r2 does not exist")
        );
        o.slots = None;
        let v = decide_in(list, &o, &Scope::default());
        assert_eq!(v.reasons[0].to_string(), "replica app:r2 not connected");
        // Connected, its walsender decides, whatever its slot says.
        o.slots = Some(vec![slot("r2", Some(END * 2), "reserved")]);
        o.walsenders.push(ws(2, "r2", None, Some(END - 1)));
        assert!(!decide_in(list, &o, &Scope::default()).archive);
    }

    #[test]
    fn options_per_line_override_the_policy() {
        // A delayed standby: flushed long ago, replays an hour late.
        let mut late = ws(2, "late", None, Some(0x100_0000));
        late.flush = Some(Lsn(END));
        let o = obs(vec![ws(1, "r1", None, Some(END)), late]);
        assert!(!decide_in("app:r1\napp:late", &o, &Scope::default()).archive);
        assert!(decide_in("app:r1\napp:late position=flush", &o, &Scope::default()).archive);
        // keep_segments for one line only.
        let v = decide_in(
            "app:r1 keep_segments=1\napp:late position=flush",
            &o,
            &Scope::default(),
        );
        assert!(!v.archive);
        assert_eq!(v.blame, vec!["app:r1"]);
        assert!(
            v.reasons[0].to_string().ends_with("needs 0/5000000"),
            "{}",
            v.reasons[0]
        );
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
        let v = decide(
            &seg3(),
            Some(&o),
            &Pressure::default(),
            &list,
            &p,
            &Scope::default(),
        );
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
        let v = decide(&seg3(), Some(&o), &full, &list, &p, &Scope::default());
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
        /// A replica that is away is never taken to be further along than its slot's
        /// `restart_lsn`: a segment ending past it is held (unless the slot is lost).
        #[test]
        fn a_slot_never_runs_ahead_of_its_restart_lsn(restart in 0u64..(8 << 24), seg in 1u32..8, lost in any::<bool>()) {
            let id = SegmentId { timeline: 1, log: 0, seg };
            let end = id.end(SegmentSize::new(MIB16).unwrap()).unwrap().0;
            let mut o = obs(vec![]);
            o.slots = Some(vec![slot("r2", Some(restart), if lost { "lost" } else { "reserved" })]);
            let v = decide(&WalFile::Segment(id), Some(&o), &Pressure::default(), &parse("app:r2 slot=r2", "l").unwrap(), &Policy::default(), &Scope::default());
            prop_assert_eq!(v.archive, lost || restart >= end);
        }
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
            let v = decide(&WalFile::Segment(id), Some(&o), &Pressure::default(), &parse(&list, "l").unwrap(), &policy, &Scope::default());
            let need = id.end(size).unwrap().0 + keep * size.bytes();
            prop_assert_eq!(v.archive, positions.iter().all(|p| *p >= need));
            prop_assert_eq!(v.need, Some(Lsn(need)));
        }
    }
}

//! The decision: may this WAL file leave `pg_wal` for the archive now? A pure function of
//! what was observed, the replicas list and the policy; DESIGN.md rules 2 to 8.
//! (Rule 1, the name, is settled by parsing a [`WalFile`]; rule 9, an unreachable
//! database, never gets this far.)

use std::str::FromStr;
use std::time::Duration;

use crate::list::{Entry, Selector};
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
            (Origin::Sql, Position::Replay) => ws.replay,
            (Origin::Sql, Position::Flush) => ws.flush,
        }
    }

    /// The name of the position that counts, for messages.
    pub fn name(self, origin: Origin) -> &'static str {
        match (origin, self) {
            (Origin::Ps, _) => "sent",
            (Origin::Sql, Position::Replay) => "replay",
            (Origin::Sql, Position::Flush) => "flush",
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Archive now (normally, or because a valve tripped).
    pub archive: bool,
    /// Why it is held (every reason found), or why it was exempt from waiting. When a
    /// valve tripped: why it would have been held.
    pub reasons: Vec<String>,
    /// Who holds it: list entries, or `unlisted:PID`.
    pub blame: Vec<String>,
    /// Set when a safety valve overrode a hold.
    pub valve: Option<Tripped>,
    pub matches: Vec<Match>,
    /// Connected replicas that no list line names (indexes into the observation).
    pub unlisted: Vec<usize>,
    pub slowest: Option<Slowest>,
    /// The position every listed replica must reach.
    pub need: Option<Lsn>,
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

    fn exempt(reason: String) -> Verdict {
        Verdict {
            archive: true,
            reasons: vec![reason],
            blame: Vec::new(),
            valve: None,
            matches: Vec::new(),
            unlisted: Vec::new(),
            slowest: None,
            need: None,
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
            addrs: Some(addrs), ..
        } => ws.client_addr.is_some_and(|a| addrs.contains(&a)),
        Selector::Host { name, addrs: None } => ws
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
            return Verdict::exempt(format!(
                "{} files are archived at once: replicas never stream them from pg_wal",
                other.kind()
            ));
        }
    };
    let Some(obs) = observation else {
        return Verdict {
            archive: false,
            reasons: vec!["the replicas could not be observed".to_string()],
            ..Verdict::exempt(String::new())
        };
    };
    let mut reasons = Vec::new();
    let mut blame = Vec::new();

    // Rule 3: where the segment ends, plus the margin the operator asked for.
    let need = match id.end(obs.segment_size) {
        Ok(end) => {
            let margin = policy
                .keep_segments
                .saturating_mul(obs.segment_size.bytes());
            Some(Lsn(end.0.saturating_add(margin)))
        }
        Err(e) => {
            reasons.push(e.to_string());
            None
        }
    };

    // Rule 6, first half: without pg_monitor the rows hide addresses and positions.
    for ws in obs.walsenders.iter().filter(|ws| ws.state.is_none()) {
        reasons.push(format!(
            "cannot see walsender pid {}: the role lacks pg_monitor (GRANT pg_monitor TO {})",
            ws.pid,
            ws.user.as_deref().unwrap_or("the walguard role")
        ));
    }

    // Rule 5: every line matched by its own walsender; no unlisted replica.
    let matches: Vec<Match> = list
        .iter()
        .zip(assign(list, &obs.walsenders))
        .map(|(entry, walsender)| Match {
            entry: entry.clone(),
            walsender,
        })
        .collect();
    for m in matches.iter().filter(|m| m.walsender.is_none()) {
        reasons.push(format!("replica {} not connected", m.entry));
        blame.push(m.entry.to_string());
    }
    let unlisted: Vec<usize> = (0..obs.walsenders.len())
        .filter(|&w| obs.walsenders[w].is_replica() && obs.walsenders[w].state.is_some())
        .filter(|w| !matches.iter().any(|m| m.walsender == Some(*w)))
        .collect();
    if policy.unlisted == Unlisted::Hold {
        for &w in &unlisted {
            reasons.push(format!(
                "unlisted replica {} is connected: add it to the replicas list (or set unlisted = \"ignore\")",
                obs.walsenders[w].describe()
            ));
            blame.push(format!("unlisted:{}", obs.walsenders[w].pid));
        }
    }

    // Rules 6 and 7: every matched replica has reported a position, and the slowest is past.
    let mut slowest: Option<Slowest> = None;
    let noun = policy.position.name(obs.origin);
    for m in &matches {
        let Some(ws) = m.walsender.map(|w| &obs.walsenders[w]) else {
            continue;
        };
        match policy.position.reported(obs.origin, ws) {
            None if ws.state.is_some() => {
                reasons.push(format!(
                    "replica {} has not reported a {noun} position yet",
                    m.entry
                ));
                blame.push(m.entry.to_string());
            }
            None => {} // already explained by the pg_monitor reason
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
        let verb = match noun {
            "replay" => "replayed",
            "flush" => "flushed",
            other => other,
        };
        reasons.push(format!(
            "replica {} has {verb} only up to {}, needs {need}",
            s.entry, s.lsn
        ));
        blame.push(s.entry.clone());
    }

    // Rule 8: a held segment goes anyway when keeping it would endanger the primary.
    let valve = if reasons.is_empty() {
        None
    } else {
        check_valves(&policy.valves, pressure, retained(obs, wal))
    };
    blame.dedup();
    Verdict {
        archive: reasons.is_empty() || valve.is_some(),
        reasons,
        blame,
        valve,
        matches,
        unlisted,
        slowest,
        need,
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
                v.reasons.iter().any(|r| r.contains(reason)) || (archive && v.reasons.is_empty()),
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
    fn missing_privilege_is_explained() {
        let mut hidden = ws(7, "r1", None, None);
        hidden.state = None;
        let v = decide_list("app:r1", &obs(vec![hidden]), Policy::default());
        assert!(!v.archive);
        assert_eq!(v.reasons.len(), 1, "{:?}", v.reasons);
        assert!(
            v.reasons[0].contains("GRANT pg_monitor TO replicator"),
            "{:?}",
            v.reasons
        );
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
            v.reasons[0].contains("does not exist with wal_segment_size"),
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
            v.reasons[0].contains("has sent only up to 0/3FFFFFF"),
            "{:?}",
            v.reasons
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

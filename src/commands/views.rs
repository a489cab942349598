//! The replicas as `check` and `status` show them: one view per list line and per
//! unlisted replica, as a table or JSON.

use serde::Serialize;
use walguard_core::decision::{Checked, Match, Policy, Unlisted, Verdict};
use walguard_core::observation::{Observation, Walsender};
use walguard_core::units::human_bytes;
use walguard_core::wal::Lsn;

use crate::render::table;

/// One list entry (or unlisted replica) and where it stands. Shared by `check` and `status`.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaView {
    /// The list line, or `None` for a connected replica the list does not name.
    pub entry: Option<String>,
    pub connected: bool,
    /// How a person recognises the walsender (table only; JSON has the parts).
    #[serde(skip)]
    pub walsender: Option<String>,
    pub pid: Option<i32>,
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    pub state: Option<String>,
    pub sent_lsn: Option<String>,
    pub write_lsn: Option<String>,
    pub flush_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    /// `past`, `needs it`, `unlisted` (holds), `ignored`, `self` (this server's own line),
    /// `elsewhere` (checked on the node it streams from) or `lost` (its slot is lost).
    pub verdict: &'static str,
    /// Why a line is `self` or `elsewhere`.
    pub note: Option<String>,
    /// Bytes behind the server's current position (by the position that counts).
    pub lag_bytes: Option<u64>,
    /// Waiting segments this replica has not passed yet (status only).
    pub segments_behind: Option<usize>,
    /// The line's replication slot, as the server shows it.
    pub slot: Option<SlotView>,
}

/// A list line's physical replication slot.
#[derive(Clone, Debug, Serialize)]
pub struct SlotView {
    pub name: String,
    /// Whether the server has it at all.
    pub exists: bool,
    pub active: bool,
    /// The walsender using it: the line's own, when it streams through its slot.
    pub active_pid: Option<i32>,
    pub restart_lsn: Option<String>,
    /// `reserved`, `extended`, `unreserved` or `lost`; `None` before PostgreSQL 13.
    pub wal_status: Option<String>,
    pub invalidation_reason: Option<String>,
    /// Since when it is unused (PostgreSQL 17+).
    pub inactive_since: Option<String>,
    /// WAL that may still be written before it is lost (`max_slot_wal_keep_size`).
    pub safe_wal_size: Option<i64>,
    /// The line's position came from it (the replica is away).
    pub speaks_for_it: bool,
}

/// The views of every list entry, then every unlisted replica. `waiting_ends` (the end
/// positions of the segments waiting in pg_wal) fills `segments_behind`, for `status`.
pub fn replica_views(
    verdict: &Verdict,
    obs: &Observation,
    policy: &Policy,
    waiting_ends: Option<&[Lsn]>,
) -> Vec<ReplicaView> {
    let unlisted_mark = match policy.unlisted {
        Unlisted::Hold => "unlisted",
        Unlisted::Ignore => "ignored",
    };
    let listed = verdict.matches.iter().map(|m| {
        let (mark, note) = match &m.checked {
            Checked::Own(why) => (Some("self"), Some(why.clone())),
            Checked::Elsewhere(why) => (Some("elsewhere"), Some(why.clone())),
            Checked::Here if verdict.lost.contains(&m.entry.to_string()) => (
                Some("lost"),
                Some("its slot is lost: rebuild it from a base backup".to_string()),
            ),
            Checked::Here => (None, None),
        };
        (Some(m), m.walsender, mark, note)
    });
    let unlisted = verdict
        .unlisted
        .iter()
        .map(|&w| (None, Some(w), Some(unlisted_mark), None));
    listed
        .chain(unlisted)
        .map(|(m, w, mark, note)| {
            let ws = w.map(|w| &obs.walsenders[w]);
            let lsn = |f: fn(&Walsender) -> Option<Lsn>| ws.and_then(f).map(|l| l.to_string());
            let position = match m {
                Some(m) => m.at,
                None => ws.and_then(|ws| policy.position.reported(obs.origin, ws)),
            };
            let need = m.and_then(|m| m.need).or(verdict.need);
            let past = position.zip(need).is_some_and(|(at, need)| at >= need);
            ReplicaView {
                entry: m.map(|m| m.entry.to_string()),
                connected: ws.is_some(),
                walsender: ws.map(Walsender::describe),
                pid: ws.map(|w| w.pid),
                application_name: ws
                    .map(|w| w.application_name.clone())
                    .filter(|a| !a.is_empty()),
                client_addr: ws.and_then(|w| w.client_addr).map(|a| a.to_string()),
                state: ws.and_then(|w| w.state.clone()),
                sent_lsn: lsn(|w| w.sent),
                write_lsn: lsn(|w| w.write),
                flush_lsn: lsn(|w| w.flush),
                replay_lsn: lsn(|w| w.replay),
                verdict: mark.unwrap_or(if past { "past" } else { "needs it" }),
                note,
                lag_bytes: obs
                    .current_lsn
                    .zip(position)
                    .map(|(c, p)| c.0.saturating_sub(p.0)),
                segments_behind: waiting_ends.and_then(|ends| match (ws, position) {
                    (_, Some(at)) => Some(ends.iter().filter(|end| **end > at).count()),
                    (None, _) => Some(ends.len()),
                    (Some(_), None) => None,
                }),
                slot: m.and_then(|m| slot_view(m, obs)),
            }
        })
        .collect()
}

fn slot_view(m: &Match, obs: &Observation) -> Option<SlotView> {
    let name = m.entry.options.slot.clone()?;
    let s = m.slot.as_ref();
    Some(SlotView {
        exists: s.is_some() || obs.slots.is_none(),
        active: s.is_some_and(|s| s.active),
        active_pid: s.and_then(|s| s.active_pid),
        restart_lsn: s.and_then(|s| s.restart_lsn).map(|l| l.to_string()),
        wal_status: s.and_then(|s| s.wal_status.clone()),
        invalidation_reason: s.and_then(|s| s.invalidation_reason.clone()),
        inactive_since: s.and_then(|s| s.inactive_since.clone()),
        safe_wal_size: s.and_then(|s| s.safe_wal_size),
        speaks_for_it: m.from_slot,
        name,
    })
}

/// The replicas as a table; `with_lag` adds the status-only columns. Connected replicas
/// come first; past `max` rows the rest are counted, not listed (JSON has them all).
pub fn replica_table(views: &[ReplicaView], with_lag: bool, max: usize) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut header = vec!["REPLICA", "WALSENDER", "STATE", "SENT", "FLUSH", "REPLAY"];
    if with_lag {
        header.extend(["LAG", "SEGMENTS BEHIND"]);
    }
    header.push("");
    let mut order: Vec<&ReplicaView> = views.iter().collect();
    order.sort_by_key(|v| !v.connected);
    let rows: Vec<Vec<String>> = order
        .into_iter()
        .map(|v| {
            let who = match (&v.walsender, v.verdict, &v.slot) {
                (Some(w), ..) => w.clone(),
                (None, "self", _) => "this server".to_string(),
                (None, "elsewhere", _) => "(checked on its upstream)".to_string(),
                (None, _, Some(slot)) if slot.speaks_for_it => format!(
                    "not connected; slot {} at {}",
                    slot.name,
                    slot.restart_lsn.as_deref().unwrap_or("-")
                ),
                (None, _, Some(slot)) if !slot.exists => {
                    format!("not connected; no slot {}", slot.name)
                }
                (None, "lost", Some(slot)) => format!("not connected; slot {} LOST", slot.name),
                _ => "not connected".to_string(),
            };
            let mut row = vec![
                v.entry.clone().unwrap_or_else(|| "(not in list)".into()),
                who,
                if v.connected {
                    dash(&v.state)
                } else {
                    String::new()
                },
                dash(&v.sent_lsn),
                dash(&v.flush_lsn),
                dash(&v.replay_lsn),
            ];
            if with_lag {
                row.push(v.lag_bytes.map_or("-".into(), human_bytes));
                row.push(v.segments_behind.map_or("-".into(), |n| n.to_string()));
            }
            // Quiet when fine, loud when it holds.
            row.push(match v.verdict {
                "past" | "ignored" | "self" | "elsewhere" => v.verdict.to_string(),
                other => other.to_uppercase(),
            });
            row
        })
        .collect();
    if rows.is_empty() {
        return "  (the list is empty and no replica is connected)\n".to_string();
    }
    let hidden = rows.len().saturating_sub(max);
    let mut out = table(&header, &rows[..rows.len() - hidden]);
    if hidden > 0 {
        out.push_str(&format!(
            "  ... and {hidden} more (--json lists them all)\n"
        ));
    }
    out
}

/// One line per list line with a slot: what the server says of the slot. Before
/// PostgreSQL 13 there is no `wal_status`: a lost slot cannot be told there.
pub fn slot_lines(views: &[ReplicaView]) -> String {
    let mut out = String::new();
    for (entry, slot) in views
        .iter()
        .filter_map(|v| Some((v.entry.as_deref()?, v.slot.as_ref()?)))
    {
        if !slot.exists {
            out.push_str(&format!(
                "slot {} ({entry}): does not exist on this server\n",
                slot.name
            ));
            continue;
        }
        let mut parts = vec![format!(
            "restart_lsn {}",
            slot.restart_lsn.as_deref().unwrap_or("-")
        )];
        parts.push(match (&slot.wal_status, &slot.invalidation_reason) {
            (_, Some(why)) => format!("invalidated ({why}): {entry} must be rebuilt"),
            (Some(s), None) if s == "lost" => format!("wal_status lost: {entry} must be rebuilt"),
            (Some(s), None) => format!("wal_status {s}"),
            (None, None) => {
                "wal_status unknown (PostgreSQL 12 or older: a lost slot cannot be told)".into()
            }
        });
        if let Some(safe) = slot.safe_wal_size {
            parts.push(format!(
                "{} more may be written before it is lost",
                human_bytes(safe.max(0) as u64)
            ));
        }
        parts.push(match (&slot.active_pid, &slot.inactive_since) {
            (Some(pid), _) => format!("in use by pid {pid}"),
            (None, Some(since)) => format!("unused since {since}"),
            (None, None) => "unused".into(),
        });
        out.push_str(&format!(
            "slot {} ({entry}): {}\n",
            slot.name,
            parts.join(", ")
        ));
    }
    out
}

/// The replicas as Prometheus gauges, labelled by list entry (`unlisted:PID` otherwise).
pub fn metric_replicas(views: &[ReplicaView]) -> Vec<crate::metrics::ReplicaMetric> {
    views
        .iter()
        // This server itself, and cascades checked on their upstream: not replicas here.
        .filter(|v| !matches!(v.verdict, "self" | "elsewhere"))
        .map(|v| crate::metrics::ReplicaMetric {
            slot_lost: v.slot.as_ref().map(|s| {
                s.wal_status.as_deref() == Some("lost") || s.invalidation_reason.is_some()
            }),
            name: v
                .entry
                .clone()
                .unwrap_or_else(|| format!("unlisted:{}", v.pid.unwrap_or_default())),
            connected: v.connected,
            lag_bytes: v.lag_bytes,
        })
        .collect()
}

//! The replicas as `check` and `status` show them: one view per list line and per
//! unlisted replica, as a table or JSON.

use serde::Serialize;
use walguard_core::decision::{Policy, Unlisted, Verdict};
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
    /// `past`, `needs it`, `unlisted` (holds) or `ignored`.
    pub verdict: &'static str,
    /// Bytes behind the primary's current position (by the position that counts).
    pub lag_bytes: Option<u64>,
    /// Waiting segments this replica has not passed yet (status only).
    pub segments_behind: Option<usize>,
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
    let listed = verdict
        .matches
        .iter()
        .map(|m| (Some(m.entry.to_string()), m.walsender, None));
    let unlisted = verdict
        .unlisted
        .iter()
        .map(|&w| (None, Some(w), Some(unlisted_mark)));
    listed
        .chain(unlisted)
        .map(|(entry, w, mark)| {
            let ws = w.map(|w| &obs.walsenders[w]);
            let lsn = |f: fn(&Walsender) -> Option<Lsn>| ws.and_then(f).map(|l| l.to_string());
            let position = ws.and_then(|ws| policy.position.reported(obs.origin, ws));
            let past = position
                .zip(verdict.need)
                .is_some_and(|(at, need)| at >= need);
            ReplicaView {
                entry,
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
                lag_bytes: obs
                    .current_lsn
                    .zip(position)
                    .map(|(c, p)| c.0.saturating_sub(p.0)),
                segments_behind: waiting_ends.and_then(|ends| match (ws, position) {
                    (_, Some(at)) => Some(ends.iter().filter(|end| **end > at).count()),
                    (None, _) => Some(ends.len()),
                    (Some(_), None) => None,
                }),
            }
        })
        .collect()
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
            let who = v
                .walsender
                .clone()
                .unwrap_or_else(|| "not connected".to_string());
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
                "past" | "ignored" => v.verdict.to_string(),
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

/// The replicas as Prometheus gauges, labelled by list entry (`unlisted:PID` otherwise).
pub fn metric_replicas(views: &[ReplicaView]) -> Vec<crate::metrics::ReplicaMetric> {
    views
        .iter()
        .map(|v| crate::metrics::ReplicaMetric {
            name: v
                .entry
                .clone()
                .unwrap_or_else(|| format!("unlisted:{}", v.pid.unwrap_or_default())),
            connected: v.connected,
            lag_bytes: v.lag_bytes,
        })
        .collect()
}

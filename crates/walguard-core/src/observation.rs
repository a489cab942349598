//! What the decision reads: the primary's walsenders and archiver as observed (from SQL,
//! process titles or shared memory), and the local pressure the safety valves look at.

use core::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::wal::{Lsn, SegmentSize};

/// `s` with control characters and the invisible formatting ones (bidirectional
/// overrides, zero-width marks) written as `\u{...}`: an `application_name` is chosen by
/// whoever connects, and must not rewrite the table it is printed in.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    };
    if !s.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if hidden(c) {
                    format!("\\u{{{:x}}}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// One row of `pg_stat_replication`, as far as the decision needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walsender {
    pub pid: i32,
    pub user: Option<String>,
    pub application_name: String,
    /// NULL for Unix-socket connections, and for roles without `pg_monitor`.
    pub client_addr: Option<IpAddr>,
    pub client_hostname: Option<String>,
    /// NULL when the querying role lacks `pg_monitor`.
    pub state: Option<String>,
    pub sent: Option<Lsn>,
    pub write: Option<Lsn>,
    pub flush: Option<Lsn>,
    pub replay: Option<Lsn>,
    /// Belongs to a logical replication slot (a subscriber or decoding client).
    pub logical: bool,
}

impl Walsender {
    /// Physical streaming replicas only: logical walsenders, base backups and the WAL
    /// stream of a running `pg_basebackup` must not hold the archive (docs/design.md, rule 4).
    pub fn is_replica(&self) -> bool {
        !self.logical
            && self.state.as_deref() != Some("backup")
            && self.application_name != "pg_basebackup"
    }

    /// False when the querying role lacks `pg_monitor`: the server then hides the state,
    /// the positions and the client address.
    pub fn visible(&self) -> bool {
        self.state.is_some()
    }

    /// How a person recognises this walsender: `pid 812 app r1 from 10.0.0.12`.
    pub fn describe(&self) -> String {
        let from = match (&self.client_addr, &self.client_hostname) {
            (Some(addr), _) => addr.to_string(),
            (None, Some(host)) => host.clone(),
            (None, None) if !self.visible() => "(address hidden: no pg_monitor)".to_string(),
            (None, None) => "local socket".to_string(),
        };
        let app = if self.application_name.is_empty() {
            String::new()
        } else {
            format!(" app {}", printable(&self.application_name))
        };
        format!("pid {}{app} from {from}", self.pid)
    }
}

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

/// Where an observation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `pg_stat_replication`: write, flush and replay positions.
    Sql,
    /// walsender process titles: only the *sent* position, no application_name.
    Ps,
    /// The server's shared memory, read by the archive module from inside the archiver:
    /// the same positions as `pg_stat_replication`, with no connection.
    Shmem,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Sql => "sql",
            Origin::Ps => "ps",
            Origin::Shmem => "shmem",
        }
    }
}

/// `pg_stat_archiver`: what PostgreSQL's archiver did last.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Archiver {
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<String>,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<String>,
    pub failed_count: u64,
}

/// Everything the decision needs from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub origin: Origin,
    pub segment_size: SegmentSize,
    /// The primary's current write position (NULL on a standby; unknown from ps).
    pub current_lsn: Option<Lsn>,
    /// The timeline being written (NULL on a standby; unknown from ps).
    pub timeline: Option<u32>,
    /// The server is a standby: its walsenders are cascaded replicas, not the primary's.
    pub in_recovery: bool,
    /// The role walguard is connected as (`current_user`), for the pg_monitor hint.
    pub role: Option<String>,
    /// The cluster's system identifier, as the server reports it.
    pub system_identifier: Option<u64>,
    /// `cluster_name`, which names this server's own list line (`app:NAME`) when the
    /// setting `self` does not.
    pub cluster_name: Option<String>,
    /// The physical replication slots, when asked for (a list line names one) and the
    /// server could say.
    pub slots: Option<Vec<Slot>>,
    /// `server_version_num` (150004 for 15.4).
    pub server_version: Option<u32>,
    /// The server's `global/pg_control` stamp (`pg_control_checkpoint()`,
    /// `pg_control_system()`): with the system identifier, what tells one server of a
    /// cluster from another.
    pub control: Option<crate::header::ControlStamp>,
    pub walsenders: Vec<Walsender>,
    /// Unknown from ps.
    pub archiver: Option<Archiver>,
}

/// A physical replication slot, as `pg_replication_slots` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub active: bool,
    pub active_pid: Option<i32>,
    /// The oldest WAL the slot's consumer may still need: for a physical slot, the flush
    /// position its standby last confirmed.
    pub restart_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost` (13+).
    pub wal_status: Option<String>,
    /// Why it was invalidated (17+).
    pub invalidation_reason: Option<String>,
    /// Since when it is unused (17+), as the server prints it.
    pub inactive_since: Option<String>,
    /// How much more WAL may be written before it is lost (13+, with
    /// `max_slot_wal_keep_size`).
    pub safe_wal_size: Option<i64>,
}

impl Slot {
    /// The WAL its standby needs is gone: it can no longer stream, and must be rebuilt.
    pub fn lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost") || self.invalidation_reason.is_some()
    }
}

/// Space on a file system, from statvfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Space {
    pub available: u64,
    pub total: u64,
}

/// Local facts the valves read: free space where pg_wal lives and how long the segment
/// has waited (its file's age). `None` where unknown; an unknown fact trips nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub pg_wal_space: Option<Space>,
    pub segment_age: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_rewrite_a_table() {
        assert_eq!(printable("r1"), "r1");
        assert_eq!(printable("r1\x1b[2J\n"), "r1\\u{1b}[2J\\u{a}");
        assert_eq!(printable("evil\u{202E}txt"), "evil\\u{202e}txt");
        let ws = Walsender {
            pid: 7,
            application_name: "a\rb".into(),
            state: Some("streaming".into()),
            ..Walsender::default()
        };
        assert_eq!(ws.describe(), "pid 7 app a\\u{d}b from local socket");
    }
}

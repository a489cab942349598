//! What the decision reads: the primary's walsenders and archiver as observed (from SQL,
//! process titles or shared memory), and the local pressure the safety valves look at.

use core::net::IpAddr;
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

//! What walguard observes on the primary: its `wal_segment_size` and its walsenders,
//! read from `pg_stat_replication` in one round trip.

use std::net::IpAddr;

use thiserror::Error;

use crate::conninfo::Target;
use crate::wal::{Lsn, SegmentSize};

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
    /// stream of a running `pg_basebackup` must not hold the archive (DESIGN rule 4).
    pub fn is_replica(&self) -> bool {
        !self.logical
            && self.state.as_deref() != Some("backup")
            && self.application_name != "pg_basebackup"
    }

    /// How a person recognises this walsender: `pid 812 app r1 from 10.0.0.12`.
    pub fn describe(&self) -> String {
        let from = match (&self.client_addr, &self.client_hostname) {
            (Some(addr), _) => addr.to_string(),
            (None, Some(host)) => host.clone(),
            (None, None) => "local socket".to_string(),
        };
        let app = if self.application_name.is_empty() {
            String::new()
        } else {
            format!(" app {}", self.application_name)
        };
        format!("pid {}{app} from {from}", self.pid)
    }
}

/// Everything the decision needs from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub segment_size: SegmentSize,
    pub walsenders: Vec<Walsender>,
}

#[derive(Debug, Error)]
pub enum ObserveError {
    #[error("cannot connect to the primary ({target}): {source}")]
    Connect {
        target: String,
        source: postgres::Error,
    },
    #[error("querying pg_stat_replication on {target} failed: {source}")]
    Query {
        target: String,
        source: postgres::Error,
    },
    #[error("the server returned an unexpected value for {what}: {value:?}")]
    Unexpected { what: &'static str, value: String },
}

/// One statement, so one round trip with the simple protocol. The positions go through
/// `to_jsonb` so that both PostgreSQL 10+ (`*_lsn`) and 9.x (`*_location`) answer it.
/// `wal_segment_size` is in bytes from PostgreSQL 11, in 8 kB blocks before.
const QUERY: &str = "\
SELECT ws.bytes, r.* FROM (
  SELECT setting::bigint * CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024 WHEN '8kB' THEN 8192
                                     WHEN 'MB' THEN 1048576 END AS bytes
  FROM pg_settings WHERE name = 'wal_segment_size') ws
LEFT JOIN LATERAL (
  SELECT r.pid, r.usename, r.application_name, host(r.client_addr), r.client_hostname, r.state,
         coalesce(j->>'sent_lsn', j->>'sent_location'),
         coalesce(j->>'write_lsn', j->>'write_location'),
         coalesce(j->>'flush_lsn', j->>'flush_location'),
         coalesce(j->>'replay_lsn', j->>'replay_location'),
         EXISTS (SELECT 1 FROM pg_replication_slots s
                 WHERE s.active_pid = r.pid AND s.slot_type = 'logical')
  FROM pg_stat_replication r, to_jsonb(r) j ORDER BY r.pid) r ON true";

fn parse_row(row: &postgres::SimpleQueryRow) -> Result<Option<Walsender>, ObserveError> {
    let text = |i: usize| row.get(i).map(str::to_string);
    let Some(pid) = row.get(1) else {
        return Ok(None); // no walsender: the LEFT JOIN's one empty row
    };
    let unexpected = |what: &'static str, value: &str| ObserveError::Unexpected {
        what,
        value: value.to_string(),
    };
    let lsn = |i: usize, what: &'static str| {
        row.get(i)
            .map(|v| v.parse::<Lsn>().map_err(|_| unexpected(what, v)))
            .transpose()
    };
    Ok(Some(Walsender {
        pid: pid.parse().map_err(|_| unexpected("pid", pid))?,
        user: text(2),
        application_name: text(3).unwrap_or_default(),
        client_addr: row
            .get(4)
            .map(|v| {
                v.parse::<IpAddr>()
                    .map(|a| a.to_canonical())
                    .map_err(|_| unexpected("client_addr", v))
            })
            .transpose()?,
        client_hostname: text(5),
        state: text(6),
        sent: lsn(7, "sent_lsn")?,
        write: lsn(8, "write_lsn")?,
        flush: lsn(9, "flush_lsn")?,
        replay: lsn(10, "replay_lsn")?,
        logical: row.get(11) == Some("t"),
    }))
}

/// Connects once, reads everything, disconnects.
pub fn observe(target: &Target) -> Result<Observation, ObserveError> {
    let described = target.describe();
    let mut client =
        target
            .config()
            .connect(postgres::NoTls)
            .map_err(|source| ObserveError::Connect {
                target: described.clone(),
                source,
            })?;
    let messages = client
        .simple_query(QUERY)
        .map_err(|source| ObserveError::Query {
            target: described,
            source,
        })?;
    let mut segment_size = None;
    let mut walsenders = Vec::new();
    for message in &messages {
        if let postgres::SimpleQueryMessage::Row(row) = message {
            let bytes = row.get(0).unwrap_or("");
            let size = bytes
                .parse::<u64>()
                .ok()
                .and_then(|b| SegmentSize::new(b).ok())
                .ok_or_else(|| ObserveError::Unexpected {
                    what: "wal_segment_size",
                    value: bytes.to_string(),
                })?;
            segment_size = Some(size);
            walsenders.extend(parse_row(row)?);
        }
    }
    let segment_size = segment_size.ok_or(ObserveError::Unexpected {
        what: "wal_segment_size",
        value: "no row".to_string(),
    })?;
    // Closing politely spares the server a "connection reset" line in its log.
    let _ = client.close();
    Ok(Observation {
        segment_size,
        walsenders,
    })
}

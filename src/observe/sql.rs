//! What walguard observes on the primary over SQL: its `wal_segment_size`, its
//! walsenders and its archiver, read in one round trip.

use std::net::IpAddr;

use thiserror::Error;
use walguard_core::header::ControlStamp;
use walguard_core::observation::{Archiver, Observation, Origin, Slot, Walsender};
use walguard_core::units::Bytes;
use walguard_core::wal::{Lsn, SegmentSize};

use super::conninfo::Target;

#[derive(Debug, Error)]
pub enum ObserveError {
    /// The server is shutting down or starting up (SQLSTATE 57P03): PostgreSQL's
    /// archiver tries once more during every clean shutdown, so this is a hold, not an
    /// error.
    #[error("the server ({target}) does not accept connections now: {message}")]
    NotAccepting { target: String, message: String },
    #[error("the server ({target}) did not answer within {}: a hung server or network", humantime::format_duration(*.after))]
    NoAnswer {
        target: String,
        after: std::time::Duration,
    },
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

/// Two statements sent as one simple query: one round trip. Each invocation is a new
/// session whose first query pays for every catalog object it names, so this calls the
/// functions behind `pg_stat_replication` and `pg_stat_archiver` instead of the views
/// (a view costs a rewrite and several catalog loads: measured 2 ms of a 12 ms run).
/// A walsender connected to a database (`datid`) is a logical one.
/// `pg_stat_get_wal_senders()` starts with pid, state, sent, write, flush, replay in
/// every version since 9.6, so `w.*` goes last and is read by position.
/// Times are RFC 3339 in UTC, like every other time walguard prints.
const QUERY: &str = "\
SELECT current_setting('wal_segment_size'),
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END,
       a.last_archived_wal,
       to_char(a.last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
       a.last_failed_wal,
       to_char(a.last_failed_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
       a.failed_count, pg_is_in_recovery(), current_user, (pg_control_system()).system_identifier,
       CASE WHEN pg_is_in_recovery() THEN lpad(to_hex((pg_control_checkpoint()).timeline_id), 8, '0')
            ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       current_setting('server_version_num'), (pg_control_checkpoint()).checkpoint_lsn,
       extract(epoch FROM (pg_control_system()).pg_control_last_modified)::bigint,
       current_setting('cluster_name')
FROM pg_stat_get_archiver() a;
SELECT pg_get_userbyid(a.usesysid), a.application_name, host(a.client_addr), a.client_hostname,
       a.datid IS NOT NULL, w.*
FROM pg_stat_get_wal_senders() w, pg_stat_get_activity(w.pid) a ORDER BY w.pid";

/// The physical slots, as a third statement of the same round trip when a list line
/// names one: as JSON, so that the columns of every version (`wal_status` from 13,
/// `invalidation_reason` and `inactive_since` from 17) come through one query.
const SLOTS: &str = "\
;
SELECT to_jsonb(s)::text FROM pg_get_replication_slots() s WHERE s.slot_type = 'physical'";

fn unexpected(what: &'static str, value: &str) -> ObserveError {
    ObserveError::Unexpected {
        what,
        value: value.to_string(),
    }
}

fn lsn_at(
    row: &postgres::SimpleQueryRow,
    i: usize,
    what: &'static str,
) -> Result<Option<Lsn>, ObserveError> {
    row.get(i)
        .map(|v| v.parse::<Lsn>().map_err(|_| unexpected(what, v)))
        .transpose()
}

/// The first statement's row: the server's own facts.
struct ServerRow {
    segment_size: SegmentSize,
    current_lsn: Option<Lsn>,
    archiver: Archiver,
    timeline: Option<u32>,
    in_recovery: bool,
    role: Option<String>,
    system_identifier: Option<u64>,
    server_version: Option<u32>,
    control: Option<ControlStamp>,
    cluster_name: Option<String>,
}

fn parse_server_row(row: &postgres::SimpleQueryRow) -> Result<ServerRow, ObserveError> {
    let text = row.get(0).unwrap_or("");
    let segment_size = text
        .parse::<Bytes>()
        .ok()
        .and_then(|b| SegmentSize::new(b.0).ok())
        .ok_or_else(|| unexpected("wal_segment_size", text))?;
    let text = |i: usize| row.get(i).map(str::to_string);
    let archiver = Archiver {
        last_archived_wal: text(2),
        last_archived_time: text(3),
        last_failed_wal: text(4),
        last_failed_time: text(5),
        failed_count: row.get(6).and_then(|v| v.parse().ok()).unwrap_or(0),
    };
    Ok(ServerRow {
        segment_size,
        current_lsn: lsn_at(row, 1, "pg_current_wal_lsn")?,
        archiver,
        timeline: row
            .get(10)
            .and_then(|name| u32::from_str_radix(name.get(..8)?, 16).ok()),
        in_recovery: row.get(7) == Some("t"),
        role: text(8),
        system_identifier: row.get(9).and_then(|v| v.parse().ok()),
        server_version: row.get(11).and_then(|v| v.parse().ok()),
        control: match (
            lsn_at(row, 12, "checkpoint_lsn")?,
            row.get(13).and_then(|v| v.parse().ok()),
        ) {
            (Some(checkpoint), Some(modified)) => Some(ControlStamp {
                checkpoint,
                modified,
            }),
            _ => None,
        },
        cluster_name: text(14).filter(|n| !n.is_empty()),
    })
}

fn parse_row(row: &postgres::SimpleQueryRow) -> Result<Walsender, ObserveError> {
    let text = |i: usize| row.get(i).map(str::to_string);
    let pid = row.get(5).unwrap_or("");
    Ok(Walsender {
        user: text(0),
        application_name: text(1).unwrap_or_default(),
        client_addr: row
            .get(2)
            .map(|v| {
                v.parse::<IpAddr>()
                    .map(|a| a.to_canonical())
                    .map_err(|_| unexpected("client_addr", v))
            })
            .transpose()?,
        client_hostname: text(3),
        logical: row.get(4) == Some("t"),
        pid: pid.parse().map_err(|_| unexpected("pid", pid))?,
        state: text(6),
        sent: lsn_at(row, 7, "sent_lsn")?,
        write: lsn_at(row, 8, "write_lsn")?,
        flush: lsn_at(row, 9, "flush_lsn")?,
        replay: lsn_at(row, 10, "replay_lsn")?,
    })
}

/// One connection to the server.
fn connect(target: &Target) -> Result<postgres::Client, ObserveError> {
    let described = target.describe();
    target
        .connect()
        .map_err(|source| match source.as_db_error() {
            Some(db) if *db.code() == postgres::error::SqlState::CANNOT_CONNECT_NOW => {
                ObserveError::NotAccepting {
                    target: described,
                    message: db.message().to_string(),
                }
            }
            _ => ObserveError::Connect {
                target: described,
                source,
            },
        })
}

/// [`observe`], abandoned after `limit`: a server that accepts and never answers must not
/// eat the whole invocation (the process-title fallback, the valves and the log line
/// still need time). The thread left behind ends with the process.
pub fn observe_within(
    target: &Target,
    limit: std::time::Duration,
    slots: bool,
) -> Result<Observation, ObserveError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = target.clone();
    std::thread::spawn(move || {
        let _ = tx.send(observe(&owned, slots));
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| {
        Err(ObserveError::NoAnswer {
            target: target.describe(),
            after: limit,
        })
    })
}

/// A physical slot from its JSON row (`to_jsonb` of `pg_get_replication_slots()`).
fn parse_slot(json: &str) -> Result<Slot, ObserveError> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|_| unexpected("pg_replication_slots", json))?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Ok(Slot {
        name: text("slot_name").ok_or_else(|| unexpected("slot_name", json))?,
        active: v.get("active").and_then(|x| x.as_bool()).unwrap_or(false),
        active_pid: v
            .get("active_pid")
            .and_then(|x| x.as_i64())
            .and_then(|p| i32::try_from(p).ok()),
        restart_lsn: text("restart_lsn")
            .map(|l| l.parse::<Lsn>().map_err(|_| unexpected("restart_lsn", &l)))
            .transpose()?,
        wal_status: text("wal_status"),
        invalidation_reason: text("invalidation_reason"),
        inactive_since: text("inactive_since"),
        safe_wal_size: v.get("safe_wal_size").and_then(|x| x.as_i64()),
    })
}

/// Connects once, reads everything (with `slots`, the physical slots too), disconnects.
pub fn observe(target: &Target, slots: bool) -> Result<Observation, ObserveError> {
    let described = target.describe();
    let mut client = connect(target)?;
    let query = if slots {
        format!("{QUERY}{SLOTS}")
    } else {
        QUERY.to_string()
    };
    let messages = client
        .simple_query(&query)
        .map_err(|source| ObserveError::Query {
            target: described,
            source,
        })?;
    // Rows of the first statement come before its CommandComplete, then the second's.
    let mut statement = 0;
    let mut server = None;
    let mut walsenders = Vec::new();
    let mut found_slots = Vec::new();
    for message in &messages {
        match message {
            postgres::SimpleQueryMessage::CommandComplete(_) => statement += 1,
            postgres::SimpleQueryMessage::Row(row) if statement == 0 => {
                server = Some(parse_server_row(row)?)
            }
            postgres::SimpleQueryMessage::Row(row) if statement == 1 => {
                walsenders.push(parse_row(row)?)
            }
            postgres::SimpleQueryMessage::Row(row) => {
                found_slots.push(parse_slot(row.get(0).unwrap_or(""))?)
            }
            _ => {}
        }
    }
    let server = server.ok_or_else(|| unexpected("pg_stat_archiver", "no row"))?;
    // Dropping sends Terminate without waiting for the server to acknowledge it, as
    // `close()` would: the server logs no "connection reset" either way.
    drop(client);
    Ok(Observation {
        origin: Origin::Sql,
        segment_size: server.segment_size,
        current_lsn: server.current_lsn,
        timeline: server.timeline,
        in_recovery: server.in_recovery,
        role: server.role,
        system_identifier: server.system_identifier,
        server_version: server.server_version,
        control: server.control,
        cluster_name: server.cluster_name,
        slots: slots.then_some(found_slots),
        walsenders,
        archiver: Some(server.archiver),
    })
}

/// A file waiting to be archived (a `.ready` file), as the server or the file system lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ready {
    pub name: String,
    /// When it was marked ready: its segment was finished then.
    pub modified: Option<std::time::SystemTime>,
}

/// What `status` needs beyond the observation, from wherever it runs: the waiting files
/// (`pg_ls_archive_statusdir()`, PostgreSQL 12+, needs `pg_monitor`) and the server's
/// data directory (to read the rest locally when it is on this host). Each is `None`
/// when the server cannot or may not say.
pub struct Extras {
    pub waiting: Option<Vec<Ready>>,
    pub data_directory: Option<std::path::PathBuf>,
    /// The files in `pg_wal` (`pg_ls_waldir()`, needs `pg_monitor`).
    pub pg_wal: Option<std::collections::BTreeSet<String>>,
    /// Why the server archives nothing at all, when it does not: `archive_mode` off, or
    /// neither `archive_command` nor `archive_library` set.
    pub not_archiving: Option<String>,
}

pub fn extras(target: &Target, server_version: Option<u32>) -> Result<Extras, ObserveError> {
    let mut client = connect(target)?;
    let rows =
        |client: &mut postgres::Client, sql: &str| -> Option<Vec<postgres::SimpleQueryRow>> {
            let messages = client.simple_query(sql).ok()?;
            Some(
                messages
                    .into_iter()
                    .filter_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(r) => Some(r),
                        _ => None,
                    })
                    .collect(),
            )
        };
    let waiting = if server_version.is_some_and(|v| v >= 120_000) {
        rows(
            &mut client,
            "SELECT left(name, -6), extract(epoch FROM modification) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
        )
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    let modified = r
                        .get(1)
                        .and_then(|t| t.parse::<f64>().ok())
                        .filter(|t| t.is_finite() && *t >= 0.0)
                        .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t));
                    Some(Ready {
                        name: r.get(0)?.to_string(),
                        modified,
                    })
                })
                .collect()
        })
    } else {
        None
    };
    let data_directory = rows(&mut client, "SELECT current_setting('data_directory')")
        .and_then(|rows| rows.first()?.get(0).map(std::path::PathBuf::from));
    let pg_wal = rows(&mut client, "SELECT name FROM pg_ls_waldir()").map(|rows| {
        rows.iter()
            .filter_map(|r| r.get(0).map(str::to_string))
            .collect()
    });
    // archive_library exists from 15 on: current_setting's missing_ok gives NULL before.
    let not_archiving = rows(
        &mut client,
        "SELECT current_setting('archive_mode'), current_setting('archive_command'), \
         coalesce(current_setting('archive_library', true), '')",
    )
    .and_then(|rows| {
        let row = rows.first()?;
        let (mode, command, library) = (row.get(0)?, row.get(1)?, row.get(2)?);
        if mode == "off" {
            Some("archive_mode is off: set archive_mode = on (a restart) and archive_command".into())
        } else if library.is_empty() && matches!(command, "" | "(disabled)") {
            Some(
                "archive_command is not set (nor archive_library): set it to walguard's archive command and reload"
                    .into(),
            )
        } else {
            None
        }
    });
    Ok(Extras {
        waiting,
        data_directory,
        pg_wal,
        not_archiving,
    })
}

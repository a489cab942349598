//! The fallback source: walsender process titles, for when the database cannot be
//! queried and the operator asked for it (`source = "ps"` or `"auto"`).
//!
//! A physical walsender's title is `postgres: [CLUSTER: ]walsender USER HOST(PORT) streaming X/Y`
//! (PostgreSQL 10+; 9.x says `wal sender process`). A logical walsender names a database
//! before the host, and is not a replica. Titles show the *sent* position only, and no
//! application_name, so `app:` lines cannot match here.

use std::net::IpAddr;
use std::path::Path;

use thiserror::Error;
use walguard_core::observation::{Observation, Origin, Walsender};
use walguard_core::wal::{Lsn, SegmentSize};

/// What a walsender title tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Title {
    pub user: String,
    /// `None` for `[local]` (a Unix socket).
    pub addr: Option<IpAddr>,
    /// As `pg_stat_replication.state` would say: `streaming`, `backup` (a base backup is
    /// sending files: not a replica), or the activity's first word.
    pub state: String,
    pub sent: Option<Lsn>,
}

/// Parses a physical walsender's title; anything else (other backends, logical walsenders,
/// garbage) is `None`.
pub fn parse_title(title: &str) -> Option<Title> {
    let rest = title.trim().strip_prefix("postgres: ")?;
    // An optional `cluster_name: ` comes first.
    let rest = match rest.split_once(": ") {
        Some((cluster, after)) if !cluster.contains(' ') => after,
        _ => rest,
    };
    let rest = rest
        .strip_prefix("walsender ")
        .or_else(|| rest.strip_prefix("wal sender process "))?;
    let mut words = rest.split_whitespace();
    let user = words.next()?.to_string();
    let host = words.next()?;
    let addr = if host == "[local]" {
        None
    } else {
        // HOST(PORT); a database name here instead means a logical walsender.
        let (ip, port) = host.strip_suffix(')')?.split_once('(')?;
        port.parse::<u16>().ok()?;
        Some(ip.parse::<IpAddr>().ok()?.to_canonical())
    };
    let activity: Vec<&str> = words.collect();
    let sent = match activity.as_slice() {
        ["streaming", lsn] => Some(lsn.parse().ok()?),
        _ => None,
    };
    let state = match activity.as_slice() {
        ["sending", "backup", ..] => "backup",
        [first, ..] => first,
        [] => "",
    };
    Some(Title {
        user,
        addr,
        state: state.to_string(),
        sent,
    })
}

#[derive(Debug, Error)]
pub enum TitleError {
    #[error("cannot read {file} to find the postmaster: {source}")]
    PidFile {
        file: String,
        source: std::io::Error,
    },
    #[error("{file} does not start with the postmaster's pid")]
    BadPidFile { file: String },
    #[error("cannot list processes: {0}")]
    Processes(String),
}

/// Reads the titles of the walsenders that are children of this data directory's
/// postmaster. The segment size cannot be asked for here; the caller knows it from the
/// segment file.
pub fn observe(pgdata: &Path, segment_size: SegmentSize) -> Result<Observation, TitleError> {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
    let pid_file = pgdata.join("postmaster.pid");
    let file = pid_file.display().to_string();
    let text = std::fs::read_to_string(&pid_file).map_err(|source| TitleError::PidFile {
        file: file.clone(),
        source,
    })?;
    let postmaster: u32 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or(TitleError::BadPidFile { file })?;
    let mut system = System::new().map_err(|e| TitleError::Processes(e.to_string()))?;
    system.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing().with_cmd(UpdateKind::Always),
    );
    let mut walsenders: Vec<Walsender> = system
        .processes()
        .iter()
        .filter(|(_, p)| p.parent() == Some(Pid::from_u32(postmaster)))
        .filter_map(|(pid, p)| {
            let cmd: Vec<String> = p
                .cmd()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let title = parse_title(&cmd.join(" "))?;
            Some(Walsender {
                pid: pid.as_u32() as i32,
                user: Some(title.user),
                client_addr: title.addr,
                state: Some(title.state),
                sent: title.sent,
                ..Walsender::default()
            })
        })
        .collect();
    walsenders.sort_by_key(|w| w.pid);
    Ok(Observation {
        origin: Origin::Ps,
        segment_size,
        current_lsn: None,
        timeline: None,
        in_recovery: false,
        role: None,
        system_identifier: None,
        server_version: None,
        control: None,
        cluster_name: None,
        slots: None,
        walsenders,
        archiver: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn title_table() {
        let lsn = |s: &str| Some(s.parse::<Lsn>().unwrap());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        type Want = Option<(&'static str, Option<IpAddr>, Option<Lsn>)>;
        let cases: [(&str, Want); 11] = [
            (
                "postgres: walsender postgres 127.0.0.1(40312) streaming 0/3000148",
                Some(("postgres", ip("127.0.0.1"), lsn("0/3000148"))),
            ),
            (
                "postgres: main: walsender repl 10.0.0.12(5000) streaming 16/B374D848",
                Some(("repl", ip("10.0.0.12"), lsn("16/B374D848"))),
            ),
            (
                "postgres: wal sender process repl 10.0.0.12(5000) streaming 0/5000000",
                Some(("repl", ip("10.0.0.12"), lsn("0/5000000"))),
            ),
            (
                "postgres: walsender repl ::1(5000) streaming 0/1",
                Some(("repl", ip("::1"), lsn("0/1"))),
            ),
            (
                "postgres: walsender repl [local] streaming 0/1",
                Some(("repl", None, lsn("0/1"))),
            ),
            (
                "postgres: walsender repl 10.0.0.1(5000) idle",
                Some(("repl", ip("10.0.0.1"), None)),
            ),
            (
                "postgres: walsender repl appdb 10.0.0.1(5000) START_REPLICATION",
                None,
            ), // logical
            (
                "postgres: walsender repl 10.0.0.1(5000) sending backup \"nightly\"",
                Some(("repl", ip("10.0.0.1"), None)),
            ),
            ("postgres: checkpointer", None),
            ("postgres: walsender", None),
            (
                "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main",
                None,
            ),
        ];
        for (title, want) in cases {
            let got = parse_title(title).map(|t| (t.user, t.addr, t.sent));
            assert_eq!(got, want.map(|(u, a, l)| (u.to_string(), a, l)), "{title}");
        }
        let state = |t: &str| parse_title(t).unwrap().state;
        assert_eq!(
            state("postgres: walsender r 10.0.0.1(1) streaming 0/1"),
            "streaming"
        );
        assert_eq!(
            state("postgres: walsender r 10.0.0.1(1) sending backup \"x\""),
            "backup"
        );
        assert_eq!(state("postgres: walsender r 10.0.0.1(1) idle"), "idle");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse_title(&s);
        }

        #[test]
        fn generated_titles_parse(a: std::net::Ipv4Addr, port: u16, lsn: u64, cluster in "[a-z]{0,8}") {
            let prefix = if cluster.is_empty() { String::new() } else { format!("{cluster}: ") };
            let title = format!("postgres: {prefix}walsender repl {a}({port}) streaming {}", Lsn(lsn));
            let t = parse_title(&title).unwrap();
            prop_assert_eq!(t.addr, Some(IpAddr::V4(a)));
            prop_assert_eq!(t.sent, Some(Lsn(lsn)));
        }
    }
}

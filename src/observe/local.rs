//! Local facts about the data directory that the safety valves read: free space where
//! `pg_wal` lives (statvfs) and how long a segment has waited (its file's age).

use std::path::Path;
use std::time::SystemTime;

use walguard_core::observation::{Pressure, Space};

/// What the safety valves read locally: free space where `pgdata/pg_wal` lives, and the
/// age of a segment file last modified at `modified`.
pub fn pressure(pgdata: &Path, modified: Option<SystemTime>) -> Pressure {
    Pressure {
        pg_wal_space: space(&pgdata.join("pg_wal")).ok(),
        segment_age: modified.and_then(|t| t.elapsed().ok()),
    }
}

/// Free and total space of the file system holding `path` (statvfs: network file systems
/// included).
pub fn space(path: &Path) -> std::io::Result<Space> {
    let st = rustix::fs::statvfs(path)?;
    Ok(Space {
        available: st.f_bavail.saturating_mul(st.f_frsize),
        total: st.f_blocks.saturating_mul(st.f_frsize),
    })
}

/// The first bytes of `pgdata/global/pg_control`; `None` when it cannot be read (not a
/// data directory, no permission).
fn control(pgdata: &Path) -> Option<[u8; 40]> {
    let mut head = [0u8; 40];
    let mut file = std::fs::File::open(pgdata.join("global/pg_control")).ok()?;
    std::io::Read::read_exact(&mut file, &mut head).ok()?;
    Some(head)
}

/// The system identifier of the cluster in `pgdata`, from its `global/pg_control`.
pub fn system_identifier(pgdata: &Path) -> Option<u64> {
    walguard_core::header::control_system_identifier(&control(pgdata)?)
}

/// The stamp of `pgdata/global/pg_control` (its last checkpoint and when it was
/// written): with the system identifier, what tells this data directory's server from
/// another of its cluster.
pub fn control_stamp(pgdata: &Path) -> Option<walguard_core::header::ControlStamp> {
    walguard_core::header::control_stamp(&control(pgdata)?)
}

/// Whether `pgdata/global/pg_control` says its server is in archive recovery (`Some(true)`)
/// or in production (`Some(false)`).
pub fn control_in_recovery(pgdata: &Path) -> Option<bool> {
    walguard_core::header::control_in_recovery(&control(pgdata)?)
}

/// The server running in `pgdata`, from its `postmaster.pid`: `None` when none runs
/// there (or walguard does not run in a data directory).
pub fn postmaster(pgdata: &Path) -> Option<super::conninfo::LocalServer> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    super::conninfo::LocalServer::parse(&text)
}

/// Which start of which server runs in `pgdata`: its postmaster.pid's pid, data
/// directory and start time. `None` when none runs there.
pub fn postmaster_stamp(pgdata: &Path) -> Option<String> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().take(3).collect();
    (lines.len() == 3).then(|| lines.join("\n"))
}

/// Whether the postmaster of a [`postmaster_stamp`] still runs: a server killed with -9
/// leaves its postmaster.pid behind.
pub fn postmaster_alive(stamp: &str) -> bool {
    stamp
        .lines()
        .next()
        .and_then(|pid| pid.trim().parse().ok())
        .is_some_and(crate::sys::process_alive)
}

/// What kind of recovery the server in `pgdata` is in, from its signal files: what a
/// failed `restore` must do depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// `standby.signal` (or `standby_mode = on` in 10 and 11's recovery.conf): a failed
    /// restore is retried while the server streams.
    Standby,
    /// `recovery.signal` (or a recovery.conf without standby_mode): every failed restore
    /// would read as "the end of the archive", and recovery would end there.
    Archive,
    /// Neither: walguard run by hand, or by pg_rewind.
    None,
}

pub fn recovery(pgdata: &Path) -> Recovery {
    if pgdata.join("standby.signal").exists() {
        return Recovery::Standby;
    }
    if pgdata.join("recovery.signal").exists() {
        return Recovery::Archive;
    }
    match std::fs::read_to_string(pgdata.join("recovery.conf")) {
        Ok(text) if recovery_conf_is_standby(&text) => Recovery::Standby,
        Ok(_) => Recovery::Archive,
        Err(_) => Recovery::None,
    }
}

/// `standby_mode = on` (any of PostgreSQL's spellings of true) in a recovery.conf.
fn recovery_conf_is_standby(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.split('#').next().unwrap_or("");
        let Some((key, value)) = line.split_once('=') else {
            return false;
        };
        let value = value.trim().trim_matches('\'').to_ascii_lowercase();
        key.trim() == "standby_mode" && matches!(value.as_str(), "on" | "true" | "yes" | "1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_of_recovery_comes_from_the_signal_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(recovery(d.path()), Recovery::None);
        std::fs::write(d.path().join("recovery.conf"), "restore_command = 'x'\n").unwrap();
        assert_eq!(recovery(d.path()), Recovery::Archive);
        std::fs::write(
            d.path().join("recovery.conf"),
            "standby_mode = 'on' # streaming\n",
        )
        .unwrap();
        assert_eq!(recovery(d.path()), Recovery::Standby);
        std::fs::remove_file(d.path().join("recovery.conf")).unwrap();
        std::fs::write(d.path().join("recovery.signal"), "").unwrap();
        assert_eq!(recovery(d.path()), Recovery::Archive);
        // Both: PostgreSQL takes standby mode.
        std::fs::write(d.path().join("standby.signal"), "").unwrap();
        assert_eq!(recovery(d.path()), Recovery::Standby);
    }
}

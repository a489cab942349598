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

/// The system identifier of the cluster in `pgdata`, from its `global/pg_control`;
/// `None` when that file cannot be read (not a data directory, no permission).
pub fn system_identifier(pgdata: &Path) -> Option<u64> {
    let mut head = [0u8; 8];
    let mut file = std::fs::File::open(pgdata.join("global/pg_control")).ok()?;
    std::io::Read::read_exact(&mut file, &mut head).ok()?;
    walguard_core::header::control_system_identifier(&head)
}

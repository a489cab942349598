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
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c_path is NUL-terminated; st is written by statvfs before we read it.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded, so st is initialised.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit ones): widen explicitly.
    #[allow(clippy::useless_conversion)]
    let (frsize, bavail, blocks) = (
        u64::from(st.f_frsize),
        u64::from(st.f_bavail),
        u64::from(st.f_blocks),
    );
    Ok(Space {
        available: bavail * frsize,
        total: blocks * frsize,
    })
}

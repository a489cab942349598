//! The server observed from inside: the walsenders' positions from `WalSndCtl` (each slot
//! read under its spinlock, as `pg_stat_get_wal_senders()` does) and their
//! `application_name` and client address from the backend status array (as
//! `pg_stat_get_activity()` does). No connection, no SQL, no catalog access (the archiver
//! is connected to no database). Must run on the archiver's own thread.

use std::collections::HashMap;
use std::ffi::{CStr, c_char};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Result, anyhow, bail};
use pgrx::PgTryBuilder;
use pgrx::pg_sys;
use walguard_core::observation::{Observation, Origin, Walsender};
use walguard_core::wal::{Lsn, SegmentSize};

/// One walsender slot, copied while its spinlock was held.
struct Slot {
    pid: i32,
    state: pg_sys::WalSndState::Type,
    sent: u64,
    write: u64,
    flush: u64,
    apply: u64,
}

/// What the backend status array says about one walsender's connection.
#[derive(Default)]
struct Connection {
    application_name: String,
    client_addr: Option<IpAddr>,
    client_hostname: Option<String>,
    /// A walsender connected to a database serves logical replication.
    logical: bool,
}

/// Observes the server; a PostgreSQL error raised on the way (out of memory) comes back
/// as an error, so that the caller holds the segment instead of restarting the archiver.
pub fn observe() -> Result<Observation> {
    PgTryBuilder::new(|| observe_unguarded().map_err(|e| e.to_string()))
        .catch_others(|caught| Err(format!("reading shared memory failed: {caught:?}")))
        .execute()
        .map_err(|e| anyhow!(e))
}

fn observe_unguarded() -> Result<Observation> {
    // SAFETY: these globals are set up by the postmaster before it starts the archiver,
    // and only read here, on the archiver's thread.
    let (segment_bytes, in_recovery) =
        unsafe { (pg_sys::wal_segment_size, pg_sys::RecoveryInProgress()) };
    let segment_size = SegmentSize::new(u64::try_from(segment_bytes)?)?;
    let (current_lsn, timeline) = match in_recovery {
        true => (None, None),
        // SAFETY: both read XLogCtl under its own locks; valid outside recovery.
        false => unsafe {
            (
                Some(Lsn(pg_sys::GetXLogWriteRecPtr())),
                Some(pg_sys::GetWALInsertionTimeLine()),
            )
        },
    };
    let connections = connections();
    let walsenders = slots()?
        .into_iter()
        .map(|slot| {
            let c = connections.get(&slot.pid);
            Walsender {
                pid: slot.pid,
                // A role name needs the catalog, which the archiver cannot read.
                user: None,
                application_name: c.map(|c| c.application_name.clone()).unwrap_or_default(),
                client_addr: c.and_then(|c| c.client_addr),
                client_hostname: c.and_then(|c| c.client_hostname.clone()),
                state: Some(state_name(slot.state).to_string()),
                sent: position(slot.sent),
                write: position(slot.write),
                flush: position(slot.flush),
                replay: position(slot.apply),
                logical: c.is_some_and(|c| c.logical),
            }
        })
        .collect();
    Ok(Observation {
        origin: Origin::Shmem,
        segment_size,
        current_lsn,
        timeline,
        in_recovery,
        role: None,
        // SAFETY: the control file is read into shared memory at start-up.
        system_identifier: Some(unsafe { pg_sys::GetSystemIdentifier() }),
        server_version: setting(c"server_version_num").and_then(|v| v.parse().ok()),
        control: None,
        cluster_name: setting(c"cluster_name").filter(|n| !n.is_empty()),
        // Replication slots are not read here (a slot's wal_status is computed by the
        // server's internals): lines with slot= hold as without one; see the README.
        slots: None,
        walsenders,
        archiver: None,
    })
}

/// `pg_stat_replication` shows an invalid position (0/0) as NULL.
fn position(lsn: u64) -> Option<Lsn> {
    (lsn != 0).then_some(Lsn(lsn))
}

/// The names `pg_stat_replication.state` uses.
fn state_name(state: pg_sys::WalSndState::Type) -> &'static str {
    use pg_sys::WalSndState::*;
    match state {
        WALSNDSTATE_STARTUP => "startup",
        WALSNDSTATE_BACKUP => "backup",
        WALSNDSTATE_CATCHUP => "catchup",
        WALSNDSTATE_STREAMING => "streaming",
        WALSNDSTATE_STOPPING => "stopping",
        _ => "unknown",
    }
}

/// The walsender slots in use.
fn slots() -> Result<Vec<Slot>> {
    // SAFETY: WalSndCtl points at shared memory holding max_wal_senders slots for the
    // server's life; each slot's fields are read under its spinlock, which is held for
    // a few loads only (no call that could raise an error in between).
    unsafe {
        let ctl = pg_sys::WalSndCtl;
        if ctl.is_null() {
            bail!("the walsender array (WalSndCtl) is not in shared memory");
        }
        let count = usize::try_from(pg_sys::max_wal_senders)?;
        let mut slots = Vec::with_capacity(count);
        for walsnd in (*ctl).walsnds.as_mut_slice(count) {
            pg_sys::SpinLockAcquire(&mut walsnd.mutex);
            let slot = Slot {
                pid: walsnd.pid,
                state: walsnd.state,
                sent: walsnd.sentPtr,
                write: walsnd.write,
                flush: walsnd.flush,
                apply: walsnd.apply,
            };
            pg_sys::SpinLockRelease(&mut walsnd.mutex);
            if slot.pid != 0 {
                slots.push(slot);
            }
        }
        Ok(slots)
    }
}

/// Every backend's connection facts by pid, from a fresh snapshot of the backend status
/// array (the archiver keeps no transaction that would pin an old one).
fn connections() -> HashMap<i32, Connection> {
    let mut by_pid = HashMap::new();
    // SAFETY: the snapshot is local memory that stays valid until the next clear; every
    // pointer in it is checked for NULL before use.
    unsafe {
        pg_sys::pgstat_clear_backend_activity_snapshot();
        for beid in 1..=pg_sys::pgstat_fetch_stat_numbackends() {
            let local = local_beentry(beid);
            if local.is_null() {
                continue;
            }
            let be = &(*local).backendStatus;
            if be.st_backendType != pg_sys::BackendType::B_WAL_SENDER {
                continue;
            }
            by_pid.insert(
                be.st_procpid,
                Connection {
                    application_name: text(be.st_appname).unwrap_or_default(),
                    client_addr: address(&be.st_clientaddr),
                    client_hostname: text(be.st_clienthostname).filter(|h| !h.is_empty()),
                    logical: be.st_databaseid != pg_sys::InvalidOid,
                },
            );
        }
        pg_sys::pgstat_clear_backend_activity_snapshot();
    }
    by_pid
}

/// The `index`th (from 1) entry of the local snapshot: PostgreSQL 16 renamed the function.
///
/// SAFETY: only between the snapshot clears in `connections`.
unsafe fn local_beentry(index: i32) -> *mut pg_sys::LocalPgBackendStatus {
    #[cfg(feature = "pg15")]
    return unsafe { pg_sys::pgstat_fetch_stat_local_beentry(index) };
    #[cfg(not(feature = "pg15"))]
    return unsafe { pg_sys::pgstat_get_local_beentry_by_index(index) };
}

/// A C string from shared memory; `None` for NULL.
///
/// SAFETY: `p` is NULL or a NUL-terminated string.
unsafe fn text(p: *const c_char) -> Option<String> {
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The client's IP address; `None` for a Unix socket (as `client_addr` is NULL).
fn address(a: &pg_sys::SockAddr) -> Option<IpAddr> {
    let storage = std::ptr::from_ref(&a.addr).cast::<u8>();
    // SAFETY: sockaddr_storage is large and aligned enough for either form; the family
    // says which one the server wrote; read_unaligned copies it out.
    unsafe {
        match i32::from(a.addr.ss_family) {
            libc::AF_INET => {
                let sin = storage.cast::<libc::sockaddr_in>().read_unaligned();
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 => {
                let sin6 = storage.cast::<libc::sockaddr_in6>().read_unaligned();
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)).to_canonical())
            }
            _ => None,
        }
    }
}

/// A server setting's current value, as `current_setting()` shows it.
fn setting(name: &CStr) -> Option<String> {
    // SAFETY: GetConfigOption returns NULL (missing_ok) or a string owned by the GUC
    // machinery, copied at once.
    unsafe { text(pg_sys::GetConfigOption(name.as_ptr(), true, false)) }
}

//! walguard as a PostgreSQL archive module (PostgreSQL 15):
//!
//! ```text
//! archive_library = 'walguard'
//! walguard.config = '/etc/walguard/walguard.toml'
//! ```
//!
//! The archiver calls [`archive_file`] once per finished WAL file, in its own process: the
//! replicas' positions are read from shared memory ([`shmem`]), and the decision, the
//! durable copy and the decision-log line are the `walguard archive` command's own
//! (`walguard::commands::archive_in_server`). Nothing here ends the process or raises an
//! ERROR for an ordinary outcome: a hold, or any failure, is `false` and a log message,
//! and PostgreSQL keeps the file and retries, as with the command's exit 1.

mod shmem;

use std::ffi::{CStr, CString, c_char};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread::ThreadId;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;
use walguard::exit::Exit;

pgrx::pg_module_magic!();

/// `walguard.config`: the same TOML file the command reads with `--config`.
static CONFIG: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// The archiver's own thread: the only one that may call into PostgreSQL.
static SERVER_THREAD: OnceLock<ThreadId> = OnceLock::new();

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    let _ = SERVER_THREAD.set(std::thread::current().id());
    GucRegistry::define_string_guc(
        c"walguard.config",
        c"walguard's config file (the TOML file walguard --config reads).",
        c"Read again for every WAL file, so that edits take effect without a reload.",
        &CONFIG,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    // SAFETY: called once, while the library is loaded; warns about mistyped walguard.* names.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"walguard".as_ptr()) };
    walguard::out::set_sink(server_log);
}

/// PostgreSQL 15's entry point for archive modules.
///
/// # Safety
/// Called by the archiver with a valid callbacks struct to fill.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _PG_archive_module_init(cb: *mut pg_sys::ArchiveModuleCallbacks) {
    // SAFETY: `cb` is the archiver's struct, valid for this call.
    if let Some(cb) = unsafe { cb.as_mut() } {
        cb.check_configured_cb = Some(check_configured);
        cb.archive_file_cb = Some(archive_file);
        cb.shutdown_cb = None;
    }
}

/// What walguard would say on stderr, as a server log message (WARNING for errors and
/// warnings, LOG otherwise). Another thread's message goes to stderr, which the server
/// also logs: only the archiver's own thread may call into PostgreSQL.
fn server_log(text: &str) {
    if SERVER_THREAD.get() != Some(&std::thread::current().id()) {
        eprintln!("{text}");
        return;
    }
    if text.starts_with("walguard: error") || text.starts_with("walguard: warning") {
        warning!("{text}");
    } else {
        log!("{text}");
    }
}

fn config_path() -> Option<PathBuf> {
    CONFIG
        .get()
        .filter(|c| !c.as_bytes().is_empty())
        .map(|c| PathBuf::from(c.to_string_lossy().into_owned()))
}

/// Without `walguard.config` PostgreSQL does not archive, and says so in its log.
#[pg_guard]
unsafe extern "C-unwind" fn check_configured() -> bool {
    config_path().is_some()
}

/// One WAL file: `true` once it is durably archived (or identical bytes already were),
/// `false` to keep it in pg_wal and retry.
#[pg_guard]
unsafe extern "C-unwind" fn archive_file(file: *const c_char, path: *const c_char) -> bool {
    // SAFETY: the archiver passes two NUL-terminated strings, valid for this call.
    let (file, path) = unsafe {
        (
            CStr::from_ptr(file).to_string_lossy().into_owned(),
            CStr::from_ptr(path).to_string_lossy().into_owned(),
        )
    };
    let Some(config) = config_path() else {
        warning!("walguard: walguard.config is not set; {file} stays in pg_wal");
        return false;
    };
    // SAFETY: read from the control file's copy in shared memory.
    let sysid = unsafe { pg_sys::GetSystemIdentifier() };
    // A panic is a bug; it must still be a retry, never an ERROR that restarts the archiver.
    let exit = std::panic::catch_unwind(|| {
        walguard::commands::archive_in_server(
            &config,
            Path::new(&path),
            &file,
            sysid,
            &shmem::observe,
        )
    })
    .unwrap_or_else(|_| {
        warning!("walguard: archiving {file} failed unexpectedly (a bug); it stays in pg_wal");
        Exit::Error
    });
    exit == Exit::Ok
}

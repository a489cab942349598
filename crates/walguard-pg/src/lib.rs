//! walguard as a PostgreSQL archive module (PostgreSQL 15 to 18):
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
    walguard::hook::set_interrupt(shutdown_requested);
    walguard::store::copy::no_threads();
}

/// True once the archiver has been told to stop (SIGTERM, or a backend's die): a
/// hand-off or hook that walguard waits for is then killed, so the archiver can exit.
fn shutdown_requested() -> bool {
    // SAFETY: sig_atomic_t flags that signal handlers set; read volatile, never written.
    unsafe {
        std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0
            || std::ptr::read_volatile(&raw const pg_sys::ProcDiePending) != 0
    }
}

/// PostgreSQL 15's entry point for archive modules: fill in the archiver's struct.
///
/// # Safety
/// Called by the archiver with a valid callbacks struct to fill.
#[cfg(feature = "pg15")]
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _PG_archive_module_init(cb: *mut pg_sys::ArchiveModuleCallbacks) {
    /// # Safety
    /// The archiver passes two NUL-terminated strings.
    #[pg_guard]
    unsafe extern "C-unwind" fn archive_file_cb(file: *const c_char, path: *const c_char) -> bool {
        // SAFETY: as this function's.
        unsafe { archive_file(file, path) }
    }
    #[pg_guard]
    extern "C-unwind" fn check_configured_cb() -> bool {
        config_path().is_some()
    }
    // SAFETY: `cb` is the archiver's struct, valid for this call.
    if let Some(cb) = unsafe { cb.as_mut() } {
        cb.check_configured_cb = Some(check_configured_cb);
        cb.archive_file_cb = Some(archive_file_cb);
        cb.shutdown_cb = None;
    }
}

/// PostgreSQL 16 and later: the entry point returns a constant table, and every callback
/// gets a state pointer (unused: walguard keeps nothing between files). pgrx has no
/// binding for these (archive/archive_module.h), so they are declared here as the header
/// has them; the table is the same from 16 to 18.
#[cfg(not(feature = "pg15"))]
mod since16 {
    use std::ffi::{c_char, c_void};

    use pgrx::pg_guard;

    #[repr(C)]
    pub struct ArchiveModuleState {
        private_data: *mut c_void,
    }

    type StateCb = unsafe extern "C-unwind" fn(*mut ArchiveModuleState);

    #[repr(C)]
    pub struct ArchiveModuleCallbacks {
        startup_cb: Option<StateCb>,
        check_configured_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState) -> bool>,
        archive_file_cb: Option<
            unsafe extern "C-unwind" fn(
                *mut ArchiveModuleState,
                *const c_char,
                *const c_char,
            ) -> bool,
        >,
        shutdown_cb: Option<StateCb>,
    }

    /// # Safety
    /// The archiver passes two NUL-terminated strings.
    #[pg_guard]
    unsafe extern "C-unwind" fn archive_file_cb(
        _state: *mut ArchiveModuleState,
        file: *const c_char,
        path: *const c_char,
    ) -> bool {
        // SAFETY: as this function's.
        unsafe { super::archive_file(file, path) }
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn check_configured_cb(_state: *mut ArchiveModuleState) -> bool {
        super::config_path().is_some()
    }

    static CALLBACKS: ArchiveModuleCallbacks = ArchiveModuleCallbacks {
        startup_cb: None,
        check_configured_cb: Some(check_configured_cb),
        archive_file_cb: Some(archive_file_cb),
        shutdown_cb: None,
    };

    #[pg_guard]
    #[unsafe(no_mangle)]
    pub extern "C-unwind" fn _PG_archive_module_init() -> *const ArchiveModuleCallbacks {
        &CALLBACKS
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

/// One WAL file: `true` once it is durably archived (or identical bytes already were),
/// `false` to keep it in pg_wal and retry. Without `walguard.config` PostgreSQL does not
/// call it (`check_configured_cb`), and says so in its log.
///
/// # Safety
/// `file` and `path` are NUL-terminated strings.
unsafe fn archive_file(file: *const c_char, path: *const c_char) -> bool {
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

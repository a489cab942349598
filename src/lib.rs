//! walguard: a WAL-aware `archive_command` guard for PostgreSQL.
//!
//! The binary (`src/main.rs`) is a thin wrapper around [`commands::run`]. The pure
//! core is [`wal`], [`replicas`] and [`decision`]; the adapters around it are
//! [`observation`] (the database), [`archive_copy`] (the file system) and
//! [`decision_log`] (the log). See ARCHITECTURE.md.

pub mod archive_copy;
pub mod cli;
pub mod commands;
pub mod conninfo;
pub mod decision;
pub mod decision_log;
pub mod events;
pub mod files;
pub mod log_summary;
pub mod observation;
pub mod render;
pub mod replicas;
pub mod settings;
pub mod status;
pub mod titles;
pub mod wal;

use std::process::ExitCode;

use clap::Parser;
use cli::Cli;
use commands::Exit;

/// Exits 2 on a termination signal: PostgreSQL's archiver treats death by a signal as
/// its own crash, while exit 2 is an ordinary failure it retries. A temporary file left
/// behind is cleaned up by a later run; the final name is never half-written.
extern "C" fn on_signal(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(Exit::Error as i32) }
}

fn install_signal_handlers() {
    // SAFETY: installing handlers at start-up, before any other thread exists.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
        // A file-size limit (ulimit -f) must fail the write with EFBIG, not kill us.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The whole `walguard` program, so that a host binary (the demo) can be walguard too.
pub fn main() -> ExitCode {
    install_signal_handlers();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and succeed; usage errors are exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Error as u8 } else { 0 });
        }
    };
    // A panic is a bug, but it must still end as exit 2, not 101 or an abort.
    let exit = std::panic::catch_unwind(|| commands::run(cli)).unwrap_or(Exit::Error);
    ExitCode::from(exit as u8)
}

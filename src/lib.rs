//! walguard: a WAL-aware `archive_command` guard for PostgreSQL.
//!
//! The binary (`src/main.rs`) is a thin wrapper around [`main`]. The pure core is the
//! `walguard-core` crate (`crates/walguard-core`); around it, the adapters: [`observe`]
//! (the server), [`store`] (the archive), [`log`] (the decision log), [`hook`]
//! (`on_event`), [`settings`] and [`cli`]; on top, [`commands`], one file per
//! subcommand. Each layer imports only those below it. See ARCHITECTURE.md.

pub mod cli;
pub mod commands;
pub mod exit;
pub mod hook;
pub mod log;
pub mod metrics;
pub mod observe;
pub mod out;
pub mod render;
pub mod settings;
pub mod store;
pub mod sys;

use std::process::ExitCode;

use exit::Exit;

/// Exits 2 on a termination signal: PostgreSQL's archiver treats death by a signal as
/// its own crash, while exit 2 is an ordinary failure it retries. A temporary file left
/// behind is cleaned up by a later run; the final name is never half-written. During the
/// commit phase (link, directory fsync) the signal waits for it to finish, so that exit 2
/// keeps meaning "nothing was archived".
extern "C" fn on_signal(_: libc::c_int) {
    // A hand-off or hook must not outlive us.
    hook::kill_running();
    match store::commit::stop() {
        // SAFETY: _exit is async-signal-safe.
        store::commit::Phase::NotStarted => unsafe {
            libc::_exit(i32::from(exit::failure().code()))
        },
        _ => store::commit::note_signal(),
    }
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
    // A panic is a bug, but it must still end as exit 2, not 101 or an abort.
    let exit = std::panic::catch_unwind(|| match cli::parse() {
        Ok(cli) => commands::run(cli),
        Err(e) => {
            // --help and --version print and succeed; usage errors are exit 2.
            let _ = e.print();
            if e.use_stderr() {
                Exit::Error
            } else {
                Exit::Ok
            }
        }
    })
    .unwrap_or_else(|_| exit::failure());
    ExitCode::from(exit.code())
}

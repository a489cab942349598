//! The commands, one file each, wiring the adapters around the pure core; this file
//! dispatches and turns every failure into exit 2 with a message.

mod ahead;
mod archive;
mod check;
mod cleanup;
mod completions;
mod gather;
mod identity;
mod invocation;
mod log;
mod prefetch;
mod put;
mod restore;
mod status;
mod verify;
mod views;

use std::path::Path;
use std::time::Instant;

use invocation::Invocation;

use anyhow::{Result, bail};

use crate::cli::{Cli, Command, Format, Guard};
use crate::exit::{Exit, describe_error};
use crate::log::{DecisionLog, Level};
use crate::observe::local;
use crate::out::say;
use crate::settings::{self, Layer};
use crate::sys;

/// Runs the parsed command line; every failure becomes exit 2 with a message on stderr
/// (and, for `archive`, a `decision=error` line in the log).
pub fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Guard(guard) => run_guard(cli.config.as_deref(), cli.settings, guard),
        // These two only print what clap knows; they need no settings.
        Command::Completions { shell } => completions::completions(shell),
        Command::Man => completions::man(),
        Command::Prefetch(job) => prefetch::run(
            &job,
            cli.settings.pgdata.as_deref().unwrap_or(Path::new(".")),
        ),
    }
}

/// A command that writes files must run as the server's user, as PostgreSQL runs it:
/// one run as root leaves root-owned files that every later run trips over. `dir` is the
/// directory whose owner that user is (the data directory, or the archive).
fn refuse_root(cmd: &str, dir: &Path) -> Result<()> {
    if !sys::is_root() {
        return Ok(());
    }
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir)?);
    if owner != 0 {
        bail!(
            "walguard {cmd} is running as root, but {} belongs to {}: \
             run it as the server's user, as PostgreSQL does (runuser -u {} -- walguard ...), \
             so that the files it creates stay usable",
            std::fs::canonicalize(dir)
                .unwrap_or_else(|_| dir.to_path_buf())
                .display(),
            sys::describe_user(owner),
            sys::user_name(owner).unwrap_or_else(|| "postgres".into())
        );
    }
    Ok(())
}

fn run_guard(config: Option<&Path>, layer: Layer, guard: Guard) -> Exit {
    // A restore in an archive recovery must stop it on any failure, a broken config
    // included: set that up from the data directory the command line names (PostgreSQL
    // runs restore_command in it) before anything can fail.
    if matches!(guard, Guard::Restore { .. }) {
        restore::prepare(layer.pgdata.as_deref().unwrap_or(Path::new(".")));
    }
    let settings = match settings::load(config, layer) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("walguard: error: {e}"));
            return crate::exit::failure();
        }
    };
    if settings::password_in_arguments(std::env::args_os()) {
        say(
            "walguard: warning: a password in --conninfo is visible to every user in the process table; \
             put it in the config file (mode 600), WALGUARD_CONNINFO, or ~/.pgpass",
        );
    }
    let (cmd, wal_name) = match &guard {
        Guard::Archive { wal_name, .. } => ("archive", wal_name.as_str()),
        Guard::Restore { wal_name, .. } => ("restore", wal_name.as_str()),
        Guard::Check { wal_name } => ("check", wal_name.as_str()),
        Guard::Status { .. } => ("status", ""),
        Guard::Verify { .. } => ("verify", ""),
        Guard::Cleanup { .. } => ("cleanup", ""),
        Guard::Log { .. } => ("log", ""),
    };
    let writes = matches!(cmd, "archive" | "restore" | "cleanup");
    let run = Invocation {
        log: writes.then(|| DecisionLog::new(settings.log_file.clone())),
        cmd,
        wal: wal_name.to_string(),
        sysid: writes
            .then(|| local::system_identifier(&settings.pgdata))
            .flatten(),
        via: via_of(&settings, cmd),
        started: Instant::now(),
    };
    let result = match &guard {
        Guard::Archive { wal_path, .. } => {
            run.arm_watchdog(settings.timeout);
            refuse_root(cmd, &settings.pgdata)
                .and_then(|()| gather::parse_name(wal_name, cmd))
                .and_then(|wal| {
                    archive::run(&run, &settings, gather::Observer::Outside, wal_path, &wal)
                })
        }
        Guard::Restore { dest_path, .. } => {
            restore::prepare(&settings.pgdata);
            run.arm_watchdog(settings.restore_timeout);
            refuse_root(cmd, &settings.pgdata)
                .and_then(|()| gather::parse_name(wal_name, cmd))
                .and_then(|wal| restore::run(&run, &settings, &wal, dest_path))
        }
        Guard::Check { .. } => {
            run.arm_watchdog(settings.timeout);
            gather::parse_name(wal_name, cmd).and_then(|wal| check::run(&settings, &wal))
        }
        Guard::Status { json, format } => {
            run.arm_watchdog(settings.timeout);
            status::run(&settings, if *json { Format::Json } else { *format })
        }
        Guard::Cleanup {
            dry_run,
            keep_backups,
            label,
            before,
            json,
        } => {
            run.arm_watchdog(settings.timeout);
            let ask = cleanup::Ask {
                dry_run: *dry_run,
                keep_backups: keep_backups.map(|n| n as usize),
                label: label.as_deref(),
                before: before.as_deref(),
                json: *json,
            };
            // What cleanup touches is the archive (and the log): the archive's owner is
            // the user to be.
            let archive = settings
                .archive_dir
                .clone()
                .unwrap_or_else(|| settings.pgdata.clone());
            refuse_root(cmd, &archive).and_then(|()| cleanup::run(&run, &settings, &ask))
        }
        Guard::Verify { json } => {
            // Reading a large archive takes its time: no watchdog.
            verify::run(&settings, *json)
        }
        Guard::Log { file, json } => {
            log::run(file.as_deref().or(settings.log_file.as_deref()), *json)
        }
    };
    conclude(&run, &settings, result)
}

/// The first word of `archive_via`, for the `via=` field of `archive` lines.
fn via_of(settings: &settings::Settings, cmd: &str) -> Option<String> {
    settings
        .archive_via
        .as_deref()
        .filter(|_| cmd == "archive")
        .map(|v| walguard_core::template::program(v).to_string())
}

/// A command's exit code; a failure is logged (`decision=error`) and said on stderr.
fn conclude(run: &Invocation, settings: &settings::Settings, result: Result<Exit>) -> Exit {
    match result {
        Ok(exit) => exit,
        Err(e) => {
            let message = describe_error(&e);
            run.write(Level::Error, "error", vec![("reason", message.clone())]);
            // Without log_file the log line already went to stderr.
            if run.log.is_none() || settings.log_file.is_some() {
                say(&format!("walguard: error: {message}"));
            }
            crate::exit::failure()
        }
    }
}

/// `archive` for one file from inside PostgreSQL's archiver: the archive module's way in
/// (`crates/walguard-pg`). `config` is `walguard.config`; `read` observes the server from
/// its shared memory; `sysid` is the cluster's system identifier. The same decision, copy
/// and log line as the command, but no watchdog and no signal handlers: the process is
/// PostgreSQL's, and an exit or a signal of ours would be its crash.
pub fn archive_in_server(
    config: &Path,
    wal_path: &Path,
    wal_name: &str,
    sysid: u64,
    read: &dyn Fn() -> Result<walguard_core::observation::Observation>,
) -> Exit {
    // Only the config file, but for WALGUARD_SELF: the one setting that differs per node,
    // passed in the server's environment (Patroni passes its own to PostgreSQL).
    let layer = Layer {
        self_: std::env::var("WALGUARD_SELF").ok(),
        ..Layer::default()
    };
    let settings = match settings::load(Some(config), layer) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("walguard: error: {e}; {wal_name} stays in pg_wal"));
            return crate::exit::failure();
        }
    };
    let run = Invocation {
        log: Some(DecisionLog::new(settings.log_file.clone())),
        cmd: "archive",
        wal: wal_name.to_string(),
        sysid: Some(sysid),
        via: via_of(&settings, "archive"),
        started: Instant::now(),
    };
    let result = gather::parse_name(wal_name, "archive").and_then(|wal| {
        archive::run(
            &run,
            &settings,
            gather::Observer::Inside(read),
            wal_path,
            &wal,
        )
    });
    conclude(&run, &settings, result)
}

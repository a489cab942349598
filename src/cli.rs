//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::settings::Layer;

const AFTER_HELP: &str = "\
Exit codes: 0 archived (or would be) / flowing, 1 held: a listed replica still needs the
segment (PostgreSQL keeps it and retries), 2 error: nothing was archived, the message says why.

In postgresql.conf:
  archive_mode = on
  archive_command = 'walguard --config /etc/walguard/walguard.toml archive %p %f'
or, on PostgreSQL 15, inside the server as an archive module (no process per segment;
crates/walguard-pg builds it):
  archive_library = 'walguard'
  walguard.config = '/etc/walguard/walguard.toml'
";

/// WAL-aware archive_command: archive a WAL segment only once every listed replica has
/// replayed past it, so a replica that was down can catch up by streaming.
#[derive(Debug, Parser)]
#[command(
    name = "walguard",
    version,
    long_version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WALGUARD_BUILD_INFO"), ")"),
    after_help = AFTER_HELP,
    max_term_width = 100
)]
pub struct Cli {
    /// Config file (TOML) with the settings below; flags and WALGUARD_* variables override it
    #[arg(long, global = true, env = "WALGUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: Layer,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Guard(Guard),
    /// Print a shell completion script
    #[command(after_help = "\
Example:
  walguard completions bash > /etc/bash_completion.d/walguard")]
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// restore's background worker (restore_prefetch): started by `restore`, not by people
    #[command(hide = true)]
    Prefetch(PrefetchJob),
    /// Print the manual page (roff)
    #[command(after_help = "\
Example:
  walguard man > /usr/local/share/man/man1/walguard.1")]
    Man,
}

/// What restore's background worker (`restore_prefetch`) needs: the `restore` that starts it
/// passes it on the command line.
#[derive(Debug, Args)]
pub struct PrefetchJob {
    /// The archive directory
    pub archive: PathBuf,
    /// Where PostgreSQL has `restore` write (%p): the area is beside it
    pub dest_path: PathBuf,
    /// The segment size
    pub segment_bytes: u64,
    /// How many segments after the newest asked for to keep staged
    pub window: u32,
    /// Check each segment's header (header_check)
    #[arg(long)]
    pub check_headers: bool,
    /// The cluster's system identifier, for the header check
    #[arg(long)]
    pub sysid: Option<u64>,
    /// restore_timeout, in seconds: temporary files older than this are a dead run's
    #[arg(long)]
    pub stale_after: u64,
}

/// How `status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Prometheus,
}

/// The commands that work on a cluster, and so need the settings.
#[derive(Debug, Subcommand)]
pub enum Guard {
    /// Archive one WAL file if every listed replica is past it (PostgreSQL's archive_command)
    #[command(after_help = "\
Example (postgresql.conf):
  archive_command = 'walguard --config /etc/walguard/walguard.toml archive %p %f'

Exit 0: the file is durably in the archive (copied now, or already there with identical
bytes). Exit 1: held, PostgreSQL keeps it in pg_wal and retries. Exit 2: error.")]
    Archive {
        /// Path of the file to archive (%p: relative to the data directory)
        wal_path: PathBuf,
        /// Its file name (%f), e.g. 000000010000000000000003
        wal_name: String,
    },
    /// Restore one WAL file from the archive (PostgreSQL's restore_command)
    #[command(after_help = "\
Example (postgresql.conf of a standby or a server in recovery):
  restore_command = '/usr/local/bin/walguard --config /etc/walguard/walguard.toml restore %f %p'

Finds NAME or NAME.zst, decompresses it, checks a segment's header, and writes DEST_PATH
through a temporary file and a rename. Exit 0: restored. Exit 1: not in the archive
(PostgreSQL asks for files that do not exist; no message). A file that is there but
damaged or unreadable, a missing archive directory, restore_timeout or a signal: exit 2 on
a standby (standby.signal: PostgreSQL retries and streams meanwhile), exit 200 in an archive
recovery (recovery.signal), which stops recovery instead of letting it end early and promote.

In a recovering server, it also starts a background worker that decompresses the next
restore_prefetch segments (default 8) into pg_wal/walguard.prefetch while PostgreSQL
replays; the next restore of one of them is a rename. The worker removes that directory
when recovery ends.")]
    Restore {
        /// The file's name (%f), e.g. 000000010000000000000003 or 00000002.history
        wal_name: String,
        /// Where to write it (%p: relative to the data directory)
        dest_path: PathBuf,
    },
    /// Dry run: decide about one WAL file and explain why; copies and logs nothing
    #[command(after_help = "\
Example:
  walguard --config /etc/walguard/walguard.toml check 000000010000000000000003

Exit 0: it would be archived now. Exit 1: it would be held. Exit 2: error.")]
    Check {
        /// WAL file name, e.g. 000000010000000000000003
        wal_name: String,
    },
    /// Show the replicas, their positions, the WAL waiting to be archived, the archiver and
    /// the safety valves; exit 0 if archiving flows, 1 if it is held (a monitoring check)
    #[command(after_help = "\
Example:
  walguard --config /etc/walguard/walguard.toml status
  walguard --config /etc/walguard/walguard.toml status --json | jq .verdict
  walguard --config /etc/walguard/walguard.toml status --format prometheus

Exit 0: flowing. 1: held, or the segment being written will be. 2: archiving is failing,
or status could not ask. Works from any directory, on any host, as any role with
pg_monitor (PostgreSQL 12+ lists the waiting files; 10 and 11 need the data directory).")]
    Status {
        /// Print JSON (a stable schema) instead of tables: the same as --format json
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// table, json, or prometheus (the text exposition format)
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Check the archive: gaps, sizes, headers, damaged files, the history chain, and
    /// whether each listed replica could recover from it
    #[command(after_help = "\
Example:
  walguard --config /etc/walguard/walguard.toml verify
  walguard --config /etc/walguard/walguard.toml verify --json | jq .problems

Exit 0: clean. Exit 1: problems found (each is listed). Exit 2: could not verify.")]
    Verify {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Delete archived WAL that no kept base backup, no listed replica and not --before
    /// can still need
    #[command(after_help = "\
Examples:
  walguard --config /etc/walguard/walguard.toml cleanup --keep-backups 2 --dry-run
  walguard --config /etc/walguard/walguard.toml cleanup --keep-backups 2 --label 'nightly*'
  archive_cleanup_command = '/usr/local/bin/walguard --config /etc/walguard/walguard.toml cleanup --before %r'

A file goes only when it is older than all of: what the N newest base backups need (their
.backup labels in the archive; with --label, only those whose LABEL matches), every listed
replica's position, and --before. History files and the labels of kept backups stay.
--dry-run lists the kept backups with their label and start time. Exit 0: done (or nothing
to do). Exit 1: refused: a listed replica is not connected or reports no position, or no
(matching) backup label is in the archive. Exit 2: error, or the archive belongs to another
cluster than the server's.")]
    Cleanup {
        /// Show what would go, and why the oldest kept file stays; delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Keep everything the N newest base backups need
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        keep_backups: Option<u32>,
        /// Count only the base backups whose LABEL matches this pattern (* and ?) among
        /// the N kept, e.g. 'nightly*': replica rebuilds must not push a backup out
        #[arg(long, value_name = "GLOB", requires = "keep_backups")]
        label: Option<String>,
        /// Keep this segment and everything after it (%r in archive_cleanup_command)
        #[arg(long, value_name = "WAL_NAME")]
        before: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Summarise the decision log: holds (how long, which replica), valve releases, errors
    #[command(after_help = "\
Example:
  walguard --config /etc/walguard/walguard.toml log
  walguard log /var/log/walguard/watchdog.log --json")]
    Log {
        /// The log to read [default: the configured log_file]
        file: Option<PathBuf>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

/// The settings each subcommand reads; its `--help` hides the others (they are still
/// accepted anywhere, so one `WALGUARD_*` environment serves every command).
#[rustfmt::skip]
fn reads(subcommand: &str) -> &'static [&'static str] {
    match subcommand {
        "archive" => &[
            "archive_dir", "replicas", "conninfo", "log_file", "position", "keep_segments",
            "unlisted", "resolve", "timeout", "pgdata", "min_free", "max_retained", "max_hold",
            "on_event", "source", "metrics_file", "archive_via", "header_check", "compress",
            "compress_level", "archive_ahead", "self_", "archive_check_via",
        ],
        "check" => &[
            "replicas", "conninfo", "position", "keep_segments", "unlisted", "resolve", "timeout",
            "pgdata", "min_free", "max_retained", "max_hold", "source", "archive_via",
            "archive_dir", "archive_ahead", "self_", "archive_check_via",
        ],
        "status" => &[
            "replicas", "conninfo", "log_file", "position", "keep_segments", "unlisted",
            "resolve", "timeout", "pgdata", "min_free", "max_retained", "max_hold", "source",
            "self_", "archive_dir", "archive_via",
        ],
        "log" => &["log_file"],
        "cleanup" => &[
            "archive_dir", "replicas", "conninfo", "log_file", "position", "resolve", "timeout",
            "pgdata", "source", "self_",
        ],
        "restore" => &[
            "archive_dir", "log_file", "restore_timeout", "pgdata", "header_check",
            "restore_prefetch",
        ],
        "verify" => &[
            "archive_dir", "replicas", "conninfo", "position", "resolve", "timeout", "pgdata",
            "source", "self_",
        ],
        _ => &[],
    }
}

/// The command line definition, with each subcommand's help showing only the settings it
/// reads. Used for parsing, `--help`, completions and the manual page alike.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let settings: Vec<clap::Arg> = Layer::augment_args(clap::Command::new("settings"))
        .get_arguments()
        .filter_map(|a| {
            cmd.get_arguments()
                .find(|g| g.get_id() == a.get_id())
                .cloned()
        })
        .collect();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        let keep = reads(&name);
        // A subcommand that has its own copy of a global argument is not given the
        // global one: the copy, hidden, still parses it.
        cmd = cmd.mut_subcommand(&name, |sub| {
            sub.args(
                settings
                    .iter()
                    .filter(|a| !keep.contains(&a.get_id().as_str()))
                    .map(|a| a.clone().hide(true)),
            )
        });
    }
    cmd
}

/// Parses the process's arguments with [`command`].
pub fn parse() -> Result<Cli, clap::Error> {
    let matches: ArgMatches = command().try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

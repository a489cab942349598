//! Settings from three places, one definition: a TOML file, long flags, and `WALGUARD_*`
//! environment variables. A flag beats the environment (clap does that), which beats
//! the file.

pub mod files;
pub mod list;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use serde::Deserialize;
use thiserror::Error;
use walguard_core::decision::{Policy, Position, Unlisted, Valves};
use walguard_core::units::{Bytes, FreeSpace, deserialize_from_str};

/// A duration written the human way: `30s`, `6h`, `1m 30s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s)
            .map(Span)
            .map_err(|e| format!("{s:?} is not a duration like \"30s\", \"5m\" or \"6h\" ({e})"))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_from_str(d)
    }
}

/// A clap parser for one of the core's choices (`Position`, `Unlisted`): the names show in
/// `--help` and completions, the core's `FromStr` does the parsing.
fn choice<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
}

/// Where replica positions come from.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// pg_stat_replication only (replay positions).
    #[default]
    Sql,
    /// walsender process titles only (sent positions; no database connection).
    Ps,
    /// SQL, and process titles when the database cannot be queried.
    Auto,
}

/// How archived segments are kept.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    /// As PostgreSQL wrote them.
    #[default]
    None,
    /// zstd, as NAME.zst (history and backup-label files stay plain).
    Zstd,
}

/// Every setting, each optional, as read from any one source.
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Directory the WAL files are copied into (required for `archive`)
    #[arg(long, global = true, env = "WALGUARD_ARCHIVE_DIR", value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,

    /// The replicas list: one replica per line (IP address, host name, or app:NAME)
    #[arg(long, global = true, env = "WALGUARD_REPLICAS", value_name = "FILE")]
    pub replicas: Option<PathBuf>,

    /// libpq key=value string or postgresql:// URI of the local primary [default: PGHOST,
    /// PGPORT, PGUSER, PGDATABASE, PGPASSWORD, ~/.pgpass; host /var/run/postgresql]
    #[arg(
        long,
        global = true,
        env = "WALGUARD_CONNINFO",
        value_name = "CONNINFO",
        hide_env_values = true
    )]
    pub conninfo: Option<String>,

    /// The decision log (watchdog.log) [default: stderr, which lands in PostgreSQL's log]
    #[arg(long, global = true, env = "WALGUARD_LOG_FILE", value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Which replica position must pass the segment [default: replay]
    #[arg(long, global = true, env = "WALGUARD_POSITION", value_parser = choice::<Position>(&Position::NAMES))]
    pub position: Option<Position>,

    /// Extra whole segments every replica must be past [default: 0]
    #[arg(long, global = true, env = "WALGUARD_KEEP_SEGMENTS", value_name = "N")]
    pub keep_segments: Option<u64>,

    /// A connected replica that is not in the list [default: hold]
    #[arg(long, global = true, env = "WALGUARD_UNLISTED", value_parser = choice::<Unlisted>(&Unlisted::NAMES))]
    pub unlisted: Option<Unlisted>,

    /// Resolve host names in the list to addresses (DNS, /etc/hosts) [default: true]
    #[arg(long, global = true, env = "WALGUARD_RESOLVE", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub resolve: Option<bool>,

    /// Hard limit for one invocation, connection and query included [default: 30s]
    #[arg(long, global = true, env = "WALGUARD_TIMEOUT", value_name = "DURATION")]
    pub timeout: Option<Span>,

    /// Hard limit for one `restore` (restore_command), reading and checking included
    /// [default: 5m]
    #[arg(
        long,
        global = true,
        env = "WALGUARD_RESTORE_TIMEOUT",
        value_name = "DURATION"
    )]
    pub restore_timeout: Option<Span>,

    /// restore: decompress up to N segments after the one asked for in the background,
    /// into pg_wal/walguard.prefetch, while PostgreSQL replays; 0 turns it off [default: 8]
    #[arg(
        long,
        global = true,
        env = "WALGUARD_RESTORE_PREFETCH",
        value_name = "N"
    )]
    pub restore_prefetch: Option<u32>,

    /// The data directory, to find pg_wal [default: the working directory]
    #[arg(long, global = true, env = "WALGUARD_PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,

    /// Safety valve: archive anyway when pg_wal's file system has less free space than
    /// this ("10%" or "4GiB"; "0" disables) [default: 5%]
    #[arg(
        long,
        global = true,
        env = "WALGUARD_MIN_FREE",
        value_name = "SIZE|PERCENT"
    )]
    pub min_free: Option<FreeSpace>,

    /// Safety valve: archive anyway when the WAL held back for replicas exceeds this ("50GiB")
    #[arg(
        long,
        global = true,
        env = "WALGUARD_MAX_RETAINED",
        value_name = "SIZE"
    )]
    pub max_retained: Option<Bytes>,

    /// Safety valve: archive anyway when a segment has been held longer than this ("6h")
    #[arg(
        long,
        global = true,
        env = "WALGUARD_MAX_HOLD",
        value_name = "DURATION"
    )]
    pub max_hold: Option<Span>,

    /// Shell command run on held, released and valve events; details in WALGUARD_EVENT,
    /// WALGUARD_WAL, WALGUARD_REPLICAS, WALGUARD_REASON
    #[arg(long, global = true, env = "WALGUARD_ON_EVENT", value_name = "COMMAND")]
    pub on_event: Option<String>,

    /// Where replica positions come from [default: sql]
    #[arg(long, global = true, env = "WALGUARD_SOURCE", value_enum)]
    pub source: Option<Source>,

    /// Hand the file to this command instead of copying it, once the verdict is "archive":
    /// %p and %f are replaced by the shell-quoted path and name, %% by % (for example
    /// "pgbackrest --stanza=main archive-push %p") [default: walguard copies into archive_dir]
    #[arg(
        long,
        global = true,
        env = "WALGUARD_ARCHIVE_VIA",
        value_name = "COMMAND"
    )]
    pub archive_via: Option<String>,

    /// Check each segment's first page header (magic, page address, segment size, system
    /// identifier) before it leaves pg_wal, and in restore and verify [default: true]
    #[arg(long, global = true, env = "WALGUARD_HEADER_CHECK", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub header_check: Option<bool>,

    /// Compress archived segments: none or zstd (stored as NAME.zst) [default: none]
    #[arg(long, global = true, env = "WALGUARD_COMPRESS", value_enum)]
    pub compress: Option<Compress>,

    /// zstd level, 1 to 19, or -1 to -7 (zstd's faster levels: less compression) [default: 3]
    #[arg(long, global = true, env = "WALGUARD_COMPRESS_LEVEL", value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-7..=19))]
    pub compress_level: Option<i32>,

    /// When a segment is held, copy it (and every other segment waiting) into the archive
    /// anyway and withhold only the acknowledgement: PostgreSQL keeps it for the replica,
    /// and the archive stays current [default: true]
    #[arg(long, global = true, env = "WALGUARD_ARCHIVE_AHEAD", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub archive_ahead: Option<bool>,

    /// This server's own line in the replicas list (app:n1, an address, a host name), so
    /// that one list can name every node: that line is skipped here [default: the app:
    /// line of the server's cluster_name, else the line naming one of this host's addresses]
    #[arg(
        long = "self",
        global = true,
        env = "WALGUARD_SELF",
        value_name = "LINE"
    )]
    #[serde(rename = "self")]
    pub self_: Option<String>,

    /// On a standby with archive_via: the command that says whether the archive holds a
    /// file (exit 0: it does), %p and %f as for archive_via (e.g. "pgbackrest
    /// --stanza=main archive-get %f /dev/null") [default: unset: a standby with
    /// archive_via acknowledges nothing]
    #[arg(
        long,
        global = true,
        env = "WALGUARD_ARCHIVE_CHECK_VIA",
        value_name = "COMMAND"
    )]
    pub archive_check_via: Option<String>,

    /// Prometheus textfile that every `archive` rewrites (for node_exporter) [default: off]
    #[arg(
        long,
        global = true,
        env = "WALGUARD_METRICS_FILE",
        value_name = "FILE"
    )]
    pub metrics_file: Option<PathBuf>,
}

impl Layer {
    /// Each setting from `self` if set there, else from `lower`.
    fn over(self, lower: Layer) -> Layer {
        Layer {
            archive_dir: self.archive_dir.or(lower.archive_dir),
            replicas: self.replicas.or(lower.replicas),
            conninfo: self.conninfo.or(lower.conninfo),
            log_file: self.log_file.or(lower.log_file),
            position: self.position.or(lower.position),
            keep_segments: self.keep_segments.or(lower.keep_segments),
            unlisted: self.unlisted.or(lower.unlisted),
            resolve: self.resolve.or(lower.resolve),
            timeout: self.timeout.or(lower.timeout),
            restore_timeout: self.restore_timeout.or(lower.restore_timeout),
            restore_prefetch: self.restore_prefetch.or(lower.restore_prefetch),
            pgdata: self.pgdata.or(lower.pgdata),
            min_free: self.min_free.or(lower.min_free),
            max_retained: self.max_retained.or(lower.max_retained),
            max_hold: self.max_hold.or(lower.max_hold),
            on_event: self.on_event.or(lower.on_event),
            source: self.source.or(lower.source),
            metrics_file: self.metrics_file.or(lower.metrics_file),
            archive_via: self.archive_via.or(lower.archive_via),
            header_check: self.header_check.or(lower.header_check),
            compress: self.compress.or(lower.compress),
            compress_level: self.compress_level.or(lower.compress_level),
            archive_ahead: self.archive_ahead.or(lower.archive_ahead),
            self_: self.self_.or(lower.self_),
            archive_check_via: self.archive_check_via.or(lower.archive_check_via),
        }
    }
}

/// The settings in force, defaults applied.
#[derive(Clone, Debug)]
pub struct Settings {
    pub archive_dir: Option<PathBuf>,
    replicas: Option<PathBuf>,
    pub conninfo: Option<String>,
    pub log_file: Option<PathBuf>,
    pub policy: Policy,
    pub resolve: bool,
    pub timeout: Duration,
    pub restore_timeout: Duration,
    /// Segments `restore` decompresses ahead (0: none).
    pub restore_prefetch: u32,
    pub pgdata: PathBuf,
    pub on_event: Option<String>,
    pub source: Source,
    pub metrics_file: Option<PathBuf>,
    pub archive_via: Option<String>,
    pub header_check: bool,
    pub compress: Compress,
    pub compress_level: i32,
    pub archive_ahead: bool,
    /// This server's own list line, as the setting `self` names it.
    pub self_: Option<String>,
    pub archive_check_via: Option<String>,
}

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("cannot read the config file {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("config file {file}: {message}")]
    Parse { file: String, message: String },
    #[error(
        "no replicas list: set `replicas` in the config file, --replicas, or WALGUARD_REPLICAS"
    )]
    NoReplicas,
    #[error("timeout and restore_timeout must be more than zero")]
    ZeroTimeout,
    #[error(
        "compress_level {0} is out of range: zstd levels go from 1 to 19 (higher compresses more), and -1 to -7 are faster still"
    )]
    Level(i32),
    #[error("{setting}: {error}")]
    Template {
        setting: &'static str,
        error: walguard_core::template::TemplateError,
    },
}

impl Settings {
    /// The replicas list, which every command but `log` needs.
    pub fn replicas(&self) -> Result<&Path, SettingsError> {
        self.replicas.as_deref().ok_or(SettingsError::NoReplicas)
    }
}

/// True when `text` carries a password: a `password` key in any case (libpq's
/// `password=`, a `PGPASSWORD`-style name), or one inside a `postgres[ql]://user:pw@` URI.
fn holds_password(text: &str) -> bool {
    if text.to_ascii_lowercase().contains("password") {
        return true;
    }
    ["postgresql://", "postgres://"].iter().any(|scheme| {
        text.match_indices(scheme).any(|(at, _)| {
            let rest = &text[at + scheme.len()..];
            let authority = rest
                .split(|c: char| c == '/' || c == '?' || c == '"' || c == '\'' || c.is_whitespace())
                .next()
                .unwrap_or("");
            authority
                .rsplit_once('@')
                .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        })
    })
}

/// True when a password was given on the command line (`--conninfo ...password...`):
/// every user can read it in the process table while walguard runs.
pub fn password_in_arguments(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    let mut args = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--conninfo") {
            Some("") => args.next(),
            Some(rest) => rest.strip_prefix('=').map(str::to_string),
            None => None,
        };
        if value.is_some_and(|v| holds_password(&v)) {
            return true;
        }
    }
    false
}

/// Reads the config file (if any) and lays the command line and environment over it.
pub fn load(config: Option<&Path>, cli: Layer) -> Result<Settings, SettingsError> {
    let file = match config {
        Some(path) => {
            let name = path.display().to_string();
            let (text, mode) =
                files::read_protected(path).map_err(|source| SettingsError::Read {
                    file: name.clone(),
                    source,
                })?;
            if mode & 0o004 != 0 && holds_password(&text) {
                crate::out::say(&format!(
                    "walguard: warning: {name} holds a password and every user can read it; run chmod o-r {name}"
                ));
            }
            // toml's message keeps its line and caret on lines of their own.
            toml::from_str::<Layer>(&text).map_err(|e| SettingsError::Parse {
                file: name,
                message: e.to_string().trim_end().to_string(),
            })?
        }
        None => Layer::default(),
    };
    let merged = cli.over(file);
    let timeout = merged.timeout.map_or(Duration::from_secs(30), |s| s.0);
    let restore_timeout = merged
        .restore_timeout
        .map_or(Duration::from_secs(300), |s| s.0);
    if timeout.is_zero() || restore_timeout.is_zero() {
        return Err(SettingsError::ZeroTimeout);
    }
    if let Some(level) = merged
        .compress_level
        .filter(|l| !(1..=19).contains(l) && !(-7..=-1).contains(l))
    {
        return Err(SettingsError::Level(level));
    }
    for (setting, template) in [
        ("archive_via", &merged.archive_via),
        ("archive_check_via", &merged.archive_check_via),
    ] {
        if let Some(template) = template {
            walguard_core::template::check(template)
                .map_err(|error| SettingsError::Template { setting, error })?;
        }
    }
    Ok(Settings {
        archive_dir: merged.archive_dir,
        replicas: merged.replicas,
        conninfo: merged.conninfo,
        log_file: merged.log_file,
        policy: Policy {
            position: merged.position.unwrap_or_default(),
            keep_segments: merged.keep_segments.unwrap_or(0),
            unlisted: merged.unlisted.unwrap_or_default(),
            valves: Valves {
                min_free: merged.min_free.unwrap_or(FreeSpace::Percent(5.0)),
                max_retained: merged.max_retained.map(|b| b.0),
                max_hold: merged.max_hold.map(|s| s.0),
            },
        },
        resolve: merged.resolve.unwrap_or(true),
        timeout,
        restore_timeout,
        restore_prefetch: merged.restore_prefetch.unwrap_or(8),
        pgdata: merged.pgdata.unwrap_or_else(|| PathBuf::from(".")),
        on_event: merged.on_event,
        source: merged.source.unwrap_or_default(),
        metrics_file: merged.metrics_file,
        archive_via: merged.archive_via,
        header_check: merged.header_check.unwrap_or(true),
        compress: merged.compress.unwrap_or_default(),
        compress_level: merged.compress_level.unwrap_or(3),
        archive_ahead: merged.archive_ahead.unwrap_or(true),
        self_: merged.self_.filter(|s| !s.trim().is_empty()),
        archive_check_via: merged.archive_check_via,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str, cli: Layer) -> Result<Settings, SettingsError> {
        let path = std::env::temp_dir().join(format!(
            "wg-settings-{}-{:?}.toml",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, text).unwrap();
        let got = load(Some(&path), cli);
        std::fs::remove_file(&path).unwrap();
        got
    }

    #[test]
    fn file_values_and_defaults() {
        let s = with_file(
            "archive_dir = \"/a\"\nreplicas = \"/r\"\nposition = \"flush\"\nkeep_segments = 2\nunlisted = \"ignore\"\nresolve = false\ntimeout = \"1m 30s\"\n",
            Layer::default(),
        )
        .unwrap();
        assert_eq!(s.archive_dir.as_deref(), Some(Path::new("/a")));
        assert_eq!(
            s.policy,
            Policy {
                position: Position::Flush,
                keep_segments: 2,
                unlisted: Unlisted::Ignore,
                valves: Valves::default(),
            }
        );
        assert!(!s.resolve);
        assert_eq!(s.timeout, Duration::from_secs(90));
        assert_eq!(s.pgdata, Path::new("."));

        let d = with_file("replicas = \"/r\"", Layer::default()).unwrap();
        assert_eq!(d.policy, Policy::default());
        assert_eq!(d.policy.valves.min_free, FreeSpace::Percent(5.0));
        assert_eq!(d.source, Source::Sql);
        assert!(d.resolve);
        assert_eq!(d.timeout, Duration::from_secs(30));
        assert_eq!(d.log_file, None);
    }

    #[test]
    fn compression_levels_and_prefetch() {
        for (level, ok) in [
            (1, true),
            (19, true),
            (-1, true),
            (-7, true),
            (0, false),
            (20, false),
            (-8, false),
        ] {
            let got = with_file(
                &format!("compress = \"zstd\"\ncompress_level = {level}"),
                Layer::default(),
            );
            assert_eq!(got.is_ok(), ok, "{level}: {got:?}");
        }
        let d = with_file("", Layer::default()).unwrap();
        assert_eq!((d.compress_level, d.restore_prefetch), (3, 8));
        let off = with_file("restore_prefetch = 0", Layer::default()).unwrap();
        assert_eq!(off.restore_prefetch, 0);
    }

    #[test]
    fn valves_from_the_file() {
        let s = with_file(
            "replicas = \"/r\"\nmin_free = \"0\"\nmax_retained = \"50GiB\"\nmax_hold = \"6h\"\non_event = \"logger x\"\nsource = \"auto\"",
            Layer::default(),
        )
        .unwrap();
        assert_eq!(
            s.policy.valves,
            Valves {
                min_free: FreeSpace::Size(Bytes(0)),
                max_retained: Some(50 << 30),
                max_hold: Some(Duration::from_secs(6 * 3600))
            }
        );
        assert_eq!(s.on_event.as_deref(), Some("logger x"));
        assert_eq!(s.source, Source::Auto);
    }

    #[test]
    fn passwords_are_found_in_every_form() {
        let cases = [
            ("conninfo = \"host=/tmp password=x\"", true),
            ("conninfo = \"host=/tmp PASSWORD=x\"", true),
            ("# PGPASSWORD=x", true),
            ("conninfo = \"postgresql://mon:s3cret@db1/postgres\"", true),
            ("conninfo = \"postgres://mon:s3cret@db1:5433\"", true),
            ("conninfo = \"postgresql://mon@db1/postgres\"", false),
            ("conninfo = \"postgresql://db1/postgres?user=a\"", false),
            ("conninfo = \"host=/tmp user=mon\"", false),
        ];
        for (text, want) in cases {
            assert_eq!(holds_password(text), want, "{text}");
        }
    }

    #[test]
    fn a_password_on_the_command_line_is_noticed() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(password_in_arguments(args(&[
            "walguard",
            "--conninfo",
            "host=a password=x",
            "check",
            "X"
        ])));
        assert!(password_in_arguments(args(&[
            "walguard",
            "--conninfo=postgresql://u:pw@h/db",
            "status"
        ])));
        assert!(!password_in_arguments(args(&[
            "walguard",
            "--conninfo",
            "host=a user=b",
            "check",
            "password"
        ])));
    }

    #[test]
    fn command_line_beats_file() {
        let cli = Layer {
            replicas: Some("/cli".into()),
            keep_segments: Some(5),
            ..Layer::default()
        };
        let s = with_file(
            "replicas = \"/file\"\nkeep_segments = 1\nconninfo = \"port=1\"",
            cli,
        )
        .unwrap();
        assert_eq!(s.replicas().unwrap(), Path::new("/cli"));
        assert_eq!(s.policy.keep_segments, 5);
        assert_eq!(s.conninfo.as_deref(), Some("port=1"));
    }

    #[test]
    fn bad_files_say_what_to_fix() {
        let cases = [
            ("replicas = \"/r\"\nposition = \"sent\"", "position"),
            ("replicas = \"/r\"\nkeep_segment = 1", "keep_segment"),
            ("replicas = \"/r\"\ntimeout = \"soon\"", "not a duration"),
            ("replicas = \"/r\"\nkeep_segments = -1", "keep_segments"),
            ("replicas = ", "config file"),
            ("archive_dir = \"/a\"", "no replicas list"),
            ("replicas = \"/r\"\ntimeout = \"0s\"", "more than zero"),
            ("replicas = \"/r\"\nmin_free = \"lots\"", "min_free"),
            ("replicas = \"/r\"\nmax_retained = \"50%\"", "not a size"),
            ("replicas = \"/r\"\nsource = \"proc\"", "source"),
            (
                "replicas = \"/r\"\narchive_via = \"aws s3 cp %p 's3://b/%f\"",
                "archive_via: the command template",
            ),
        ];
        for (text, needle) in cases {
            let err = match with_file(text, Layer::default()) {
                Err(e) => e.to_string(),
                Ok(s) => s.replicas().unwrap_err().to_string(),
            };
            assert!(err.contains(needle), "{text:?} -> {err}");
        }
    }
}

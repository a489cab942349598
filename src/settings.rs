//! Settings from three places, one definition: a TOML file, long flags, and `WALGUARD_*`
//! environment variables. A flag beats the environment (clap does that), which beats
//! the file.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::decision::{Policy, Position, Unlisted};

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
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
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
    #[arg(long, global = true, env = "WALGUARD_POSITION", value_enum)]
    pub position: Option<Position>,

    /// Extra whole segments every replica must be past [default: 0]
    #[arg(long, global = true, env = "WALGUARD_KEEP_SEGMENTS", value_name = "N")]
    pub keep_segments: Option<u64>,

    /// A connected replica that is not in the list [default: hold]
    #[arg(long, global = true, env = "WALGUARD_UNLISTED", value_enum)]
    pub unlisted: Option<Unlisted>,

    /// Resolve host names in the list to addresses (DNS, /etc/hosts) [default: true]
    #[arg(long, global = true, env = "WALGUARD_RESOLVE", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub resolve: Option<bool>,

    /// Hard limit for one invocation, connection and query included [default: 30s]
    #[arg(long, global = true, env = "WALGUARD_TIMEOUT", value_name = "DURATION")]
    pub timeout: Option<Span>,

    /// The data directory, to find pg_wal [default: the working directory]
    #[arg(long, global = true, env = "WALGUARD_PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
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
            pgdata: self.pgdata.or(lower.pgdata),
        }
    }
}

/// The settings in force, defaults applied.
#[derive(Clone, Debug)]
pub struct Settings {
    pub archive_dir: Option<PathBuf>,
    pub replicas: PathBuf,
    pub conninfo: Option<String>,
    pub log_file: Option<PathBuf>,
    pub policy: Policy,
    pub resolve: bool,
    pub timeout: Duration,
    pub pgdata: PathBuf,
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
    #[error("timeout must be more than zero")]
    ZeroTimeout,
}

/// Reads the config file (if any) and lays the command line and environment over it.
pub fn load(config: Option<&Path>, cli: Layer) -> Result<Settings, SettingsError> {
    let file = match config {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                file: name.clone(),
                source,
            })?;
            toml::from_str::<Layer>(&text).map_err(|e| SettingsError::Parse {
                file: name,
                message: e.to_string().trim_end().replace('\n', " "),
            })?
        }
        None => Layer::default(),
    };
    let merged = cli.over(file);
    let timeout = merged.timeout.map_or(Duration::from_secs(30), |s| s.0);
    if timeout.is_zero() {
        return Err(SettingsError::ZeroTimeout);
    }
    Ok(Settings {
        archive_dir: merged.archive_dir,
        replicas: merged.replicas.ok_or(SettingsError::NoReplicas)?,
        conninfo: merged.conninfo,
        log_file: merged.log_file,
        policy: Policy {
            position: merged.position.unwrap_or_default(),
            keep_segments: merged.keep_segments.unwrap_or(0),
            unlisted: merged.unlisted.unwrap_or_default(),
        },
        resolve: merged.resolve.unwrap_or(true),
        timeout,
        pgdata: merged.pgdata.unwrap_or_else(|| PathBuf::from(".")),
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
                unlisted: Unlisted::Ignore
            }
        );
        assert!(!s.resolve);
        assert_eq!(s.timeout, Duration::from_secs(90));
        assert_eq!(s.pgdata, Path::new("."));

        let d = with_file("replicas = \"/r\"", Layer::default()).unwrap();
        assert_eq!(d.policy, Policy::default());
        assert!(d.resolve);
        assert_eq!(d.timeout, Duration::from_secs(30));
        assert_eq!(d.log_file, None);
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
        assert_eq!(s.replicas, Path::new("/cli"));
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
        ];
        for (text, needle) in cases {
            let err = with_file(text, Layer::default()).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} -> {err}");
        }
    }
}

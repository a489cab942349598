//! Where the primary is and how to log in, following libpq's conventions: the `postgres`
//! crate reads no `PG*` variable and no `~/.pgpass`, so this module fills those in.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use postgres::config::Host;
use thiserror::Error;

/// Debian's (and most packagers') socket directory; libpq's compiled-in default there.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

#[derive(Debug, Error)]
#[error("conninfo is not a valid key=value string or postgresql:// URI: {0}")]
pub struct ConninfoError(String);

/// A resolved connection target. Its `Debug` and `describe` never show the password.
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The environment libpq would look at; a parameter so tests need not touch the process's.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Target {
    /// `conninfo` as given (or none), completed from `PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGDATABASE`, `PGPASSWORD` and the password file, like libpq does.
    pub fn new(
        conninfo: Option<&str>,
        timeout: Duration,
        env: &dyn Env,
    ) -> Result<Target, ConninfoError> {
        let mut config = match conninfo {
            Some(text) => {
                postgres::Config::from_str(text).map_err(|e| ConninfoError(e.to_string()))?
            }
            None => postgres::Config::new(),
        };
        if config.get_hosts().is_empty() {
            let host = env
                .var("PGHOST")
                .unwrap_or_else(|| DEFAULT_SOCKET_DIR.to_string());
            if host.starts_with('/') {
                config.host_path(host);
            } else {
                config.host(&host);
            }
        }
        if config.get_ports().is_empty()
            && let Some(port) = env.var("PGPORT")
        {
            let port = port
                .parse()
                .map_err(|_| ConninfoError(format!("PGPORT={port:?} is not a port number")))?;
            config.port(port);
        }
        if config.get_user().is_none() {
            let user = env
                .var("PGUSER")
                .or_else(os_user)
                .unwrap_or_else(|| "postgres".into());
            config.user(&user);
        }
        if config.get_dbname().is_none()
            && let Some(db) = env.var("PGDATABASE")
        {
            config.dbname(&db);
        }
        if config.get_application_name().is_none() {
            config.application_name("walguard");
        }
        if config.get_password().is_none() {
            let password = env.var("PGPASSWORD").or_else(|| {
                let file = env
                    .var("PGPASSFILE")
                    .map(PathBuf::from)
                    .or_else(|| env.var("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
                lookup_pgpass(
                    &file,
                    &Target {
                        config: config.clone(),
                    },
                )
            });
            if let Some(password) = password {
                config.password(password);
            }
        }
        config.connect_timeout(timeout);
        Ok(Target { config })
    }

    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    fn host(&self) -> String {
        match self.config.get_hosts().first() {
            Some(Host::Tcp(name)) => name.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => DEFAULT_SOCKET_DIR.to_string(),
        }
    }

    fn port(&self) -> u16 {
        self.config.get_ports().first().copied().unwrap_or(5432)
    }

    fn user(&self) -> &str {
        self.config.get_user().unwrap_or("")
    }

    fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or(self.user())
    }

    /// For messages and logs: where, and as whom; never the password.
    pub fn describe(&self) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            self.host(),
            self.port(),
            self.user(),
            self.dbname()
        )
    }
}

/// The effective user's login name, as libpq takes it when no user is given.
fn os_user() -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or NULL; we copy the name
    // out before any other call could overwrite it, and this process is single-threaded here.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return None;
        }
        CStr::from_ptr((*pw).pw_name)
            .to_str()
            .ok()
            .map(str::to_string)
    }
}

/// Splits a `.pgpass` line on unescaped colons, undoing `\:` and `\\`.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    fields.push(current);
    fields
}

/// The password for `target` from a libpq password file, if one line matches.
fn lookup_pgpass(file: &Path, target: &Target) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    // libpq ignores a password file that group or others can read; so do we.
    if meta.permissions().mode() & 0o077 != 0 {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = match target.host() {
        h if h == DEFAULT_SOCKET_DIR => "localhost".to_string(),
        h => h,
    };
    let port = target.port().to_string();
    let wanted = [host.as_str(), port.as_str(), target.dbname(), target.user()];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(pgpass_fields)
        .find(|f| {
            f.len() == 5
                && f.iter()
                    .zip(wanted)
                    .all(|(have, want)| have == "*" || have == want)
        })
        .map(|mut f| f.remove(4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, String>);
    impl Env for FakeEnv {
        fn var(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
    }

    fn env(pairs: &[(&'static str, &str)]) -> FakeEnv {
        FakeEnv(pairs.iter().map(|(k, v)| (*k, v.to_string())).collect())
    }

    const T: Duration = Duration::from_secs(3);

    #[test]
    fn defaults_follow_libpq() {
        let t = Target::new(None, T, &env(&[("PGUSER", "wg")])).unwrap();
        assert_eq!(
            t.describe(),
            "host=/var/run/postgresql port=5432 user=wg dbname=wg"
        );
        let t = Target::new(
            None,
            T,
            &env(&[
                ("PGHOST", "db1"),
                ("PGPORT", "6543"),
                ("PGUSER", "u"),
                ("PGDATABASE", "d"),
            ]),
        )
        .unwrap();
        assert_eq!(t.describe(), "host=db1 port=6543 user=u dbname=d");
        assert!(Target::new(None, T, &env(&[("PGPORT", "x")])).is_err());
    }

    #[test]
    fn conninfo_beats_environment_and_password_is_never_shown() {
        for text in [
            "host=/tmp port=5433 user=mon password=s3cret dbname=postgres",
            "postgresql://mon:s3cret@%2Ftmp:5433/postgres",
        ] {
            let t = Target::new(
                Some(text),
                T,
                &env(&[("PGHOST", "elsewhere"), ("PGUSER", "x")]),
            )
            .unwrap();
            assert_eq!(
                t.describe(),
                "host=/tmp port=5433 user=mon dbname=postgres",
                "{text}"
            );
            assert!(!format!("{t:?}").contains("s3cret"));
            assert_eq!(t.config().get_password(), Some(&b"s3cret"[..]));
        }
        let err = Target::new(Some("host=a password='unterminated"), T, &env(&[])).unwrap_err();
        assert!(!err.to_string().contains("unterminated"), "{err}");
    }

    #[test]
    fn password_from_environment_then_pgpass() {
        let t = Target::new(Some("host=h user=u"), T, &env(&[("PGPASSWORD", "pw")])).unwrap();
        assert_eq!(t.config().get_password(), Some(&b"pw"[..]));

        let dir = std::env::temp_dir().join(format!("wg-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:nope\nh:5432:*:u:p\\:ss\nlocalhost:*:*:*:sock\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = file.display().to_string();
        let e = env(&[("PGPASSFILE", &path)]);
        let t = Target::new(Some("host=h user=u"), T, &e).unwrap();
        assert_eq!(t.config().get_password(), Some(&b"p:ss"[..]));
        let t = Target::new(Some("user=u"), T, &e).unwrap();
        assert_eq!(
            t.config().get_password(),
            Some(&b"sock"[..]),
            "default socket is localhost"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = Target::new(Some("host=h user=u"), T, &e).unwrap();
        assert_eq!(
            t.config().get_password(),
            None,
            "a readable pgpass is ignored, as libpq does"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

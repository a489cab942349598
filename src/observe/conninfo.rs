//! Where the primary is and how to log in, the way libpq reads it: a `key=value` string or
//! a `postgresql://` URI, completed from a service file (`service`, `PGSERVICE`), then the
//! `PG*` variables, then the defaults; the password from `passfile` (or `PGPASSFILE`,
//! `~/.pgpass`). Every libpq key that matters for a local or TLS connection is applied;
//! harmless ones (GSSAPI, compression, CRLs, client encoding) are ignored with a note that
//! `check` and `status` print; anything else is an error naming the key. So the
//! `primary_conninfo` that `pg_basebackup -R` writes can be pasted as it is.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::config::{
    ChannelBinding, Host, LoadBalanceHosts, SslMode, SslNegotiation, TargetSessionAttrs,
};
use thiserror::Error;

use super::tls::{self, Mode, Roots};

/// Debian's (and most packagers') socket directory; libpq's compiled-in default there.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Where libpq built for Debian looks for the system-wide `pg_service.conf`.
const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

#[derive(Debug, Error)]
#[error("conninfo: {0}")]
pub struct ConninfoError(String);

fn bad(message: impl Into<String>) -> ConninfoError {
    ConninfoError(message.into())
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

/// The keys walguard applies, each with the environment variable libpq falls back to.
const APPLIED: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("dbname", Some("PGDATABASE")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("options", Some("PGOPTIONS")),
    ("application_name", Some("PGAPPNAME")),
    ("fallback_application_name", None),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("keepalives_interval", None),
    ("keepalives_count", None),
    ("tcp_user_timeout", None),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("load_balance_hosts", Some("PGLOADBALANCEHOSTS")),
    ("sslmode", Some("PGSSLMODE")),
    ("sslnegotiation", Some("PGSSLNEGOTIATION")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslsni", Some("PGSSLSNI")),
    ("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION")),
    ("ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION")),
    ("gssencmode", Some("PGGSSENCMODE")),
    ("service", Some("PGSERVICE")),
];

/// Keys accepted and ignored, with why: they change nothing walguard can honour.
const IGNORED: &[(&str, &str)] = &[
    (
        "sslcompression",
        "TLS compression is obsolete and off in every server walguard supports",
    ),
    (
        "sslcertmode",
        "a client certificate is sent when sslcert (or ~/.postgresql/postgresql.crt) is there",
    ),
    ("sslcrl", "certificate revocation lists are not checked"),
    ("sslcrldir", "certificate revocation lists are not checked"),
    (
        "sslpassword",
        "an encrypted client key is not supported: give an unencrypted sslkey",
    ),
    ("krbsrvname", "GSSAPI is not supported"),
    ("gsslib", "GSSAPI is not supported"),
    ("gssdelegation", "GSSAPI is not supported"),
    (
        "requirepeer",
        "the server's OS user on the socket is not checked",
    ),
    (
        "require_auth",
        "the server's choice of authentication is not restricted",
    ),
    ("client_encoding", "walguard always speaks UTF8"),
    (
        "replication",
        "walguard's connection is never a replication connection",
    ),
    ("requiressl", "obsolete: use sslmode"),
];

/// `key=value` pairs, values optionally single-quoted with `\'` and `\\` escapes.
fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            // The word may be the rest of a password that has a space: never show it.
            return Err(match out.last() {
                Some((prev, _)) if prev.eq_ignore_ascii_case("password") => bad(
                    "a word after password=... has no \"=\": a password with a space must be quoted, password='...'",
                ),
                _ => bad(format!("missing \"=\" after {key:?}")),
            });
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(bad(format!("the value of {key:?} has no closing quote"))),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// `%XX` escapes undone.
fn percent_decode(s: &str, what: &str) -> Result<String, ConninfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| bad(format!("a bad %-escape in the URI's {what}")))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("the URI's {what} is not UTF-8")))
}

/// `postgresql://[user[:password]@][host][:port][,...][/dbname][?key=value&...]`.
fn parse_uri(text: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let rest = text
        .strip_prefix("postgresql://")
        .or_else(|| text.strip_prefix("postgres://"))
        .ok_or_else(|| bad("not a postgresql:// URI"))?;
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = main.split_once('/').unwrap_or((main, ""));
    let mut out = Vec::new();
    let hostspec = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            if !user.is_empty() {
                out.push(("user".into(), percent_decode(user, "user")?));
            }
            if userinfo.contains(':') {
                out.push(("password".into(), percent_decode(password, "password")?));
            }
            hosts
        }
        None => authority,
    };
    let (mut hosts, mut ports) = (Vec::new(), Vec::new());
    for spec in hostspec.split(',').filter(|s| !s.is_empty()) {
        let (host, port) = match spec.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6
                    .split_once(']')
                    .ok_or_else(|| bad("an IPv6 host in the URI lacks its ']'"))?;
                (addr.to_string(), after.strip_prefix(':').unwrap_or(""))
            }
            None => match spec.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h, "host")?, p),
                None => (percent_decode(spec, "host")?, ""),
            },
        };
        hosts.push(host);
        ports.push(port.to_string());
    }
    if !hosts.is_empty() {
        out.push(("host".into(), hosts.join(",")));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        out.push(("port".into(), ports.join(",")));
    }
    if !path.is_empty() {
        out.push(("dbname".into(), percent_decode(path, "database")?));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("the URI parameter {pair:?} has no \"=\"")))?;
        out.push((
            percent_decode(k, "parameters")?,
            percent_decode(v, "parameters")?,
        ));
    }
    Ok(out)
}

/// The parameters of a service from a `pg_service.conf`-style text, if it defines it.
fn service_in(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut inside = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == name;
            if inside {
                found = Some(Vec::new());
            }
        } else if inside && let Some((k, v)) = line.split_once('=') {
            found
                .get_or_insert_with(Vec::new)
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    found
}

/// The parameters of `service`: the user's service file first, then the system's.
fn service(name: &str, env: &dyn Env) -> Result<Vec<(String, String)>, ConninfoError> {
    let user_file = env.var("PGSERVICEFILE").map(PathBuf::from).or_else(|| {
        env.var("HOME")
            .map(|h| Path::new(&h).join(".pg_service.conf"))
    });
    let system_file = Path::new(
        &env.var("PGSYSCONFDIR")
            .unwrap_or_else(|| DEFAULT_SYSCONFDIR.into()),
    )
    .join("pg_service.conf");
    let mut looked = Vec::new();
    for file in user_file.into_iter().chain([system_file]) {
        looked.push(file.display().to_string());
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Some(params) = service_in(&text, name)
        {
            return Ok(params);
        }
    }
    Err(bad(format!(
        "service {name:?} is not defined in {}",
        looked.join(" or ")
    )))
}

/// The server running in a data directory, from its `postmaster.pid`: where a
/// connection reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalServer {
    pub port: u16,
    /// The first Unix socket directory (`None`: it listens on TCP only).
    pub socket_dir: Option<PathBuf>,
}

impl LocalServer {
    /// `postmaster.pid`'s text: pid, data directory, start time, port, first socket
    /// directory, ... (PostgreSQL 10 to 18).
    pub fn parse(text: &str) -> Option<LocalServer> {
        let lines: Vec<&str> = text.lines().collect();
        let port = lines.get(3)?.trim().parse().ok()?;
        let socket_dir = lines
            .get(4)
            .map(|l| l.trim())
            .filter(|l| l.starts_with('/'))
            .map(PathBuf::from);
        Some(LocalServer { port, socket_dir })
    }
}

/// A resolved connection target. Its `Debug` and `describe` never show the password.
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
    /// `None` when the connection is plain (sslmode=disable, or only Unix sockets).
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Keys accepted and ignored, with why.
    notes: Vec<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A key's value, empty counting as unset (as in libpq).
fn param<'a>(params: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    params
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn parse_u64(key: &str, value: &str) -> Result<u64, ConninfoError> {
    value
        .trim()
        .parse()
        .map_err(|_| bad(format!("{key}={value:?} is not a whole number")))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConninfoError> {
    match value.trim() {
        "1" | "on" | "true" | "yes" => Ok(true),
        "0" | "off" | "false" | "no" => Ok(false),
        _ => Err(bad(format!("{key}={value:?} is not 0 or 1"))),
    }
}

impl Target {
    /// `conninfo` (or none) completed like libpq does; connect and query are each given
    /// at most a third of `timeout`, so that within one invocation the process-title
    /// fallback and the copy still have time.
    pub fn new(
        conninfo: Option<&str>,
        timeout: Duration,
        env: &dyn Env,
    ) -> Result<Target, ConninfoError> {
        Self::with_local(conninfo, timeout, env, None)
    }

    /// [`Target::new`], where what the conninfo, the service and the `PG*` variables
    /// leave unset of the host and the port is `local`'s: the server whose data directory
    /// walguard runs in (PostgreSQL runs archive_command there), from its `postmaster.pid`.
    /// One config then serves every node of a cluster.
    pub fn with_local(
        conninfo: Option<&str>,
        timeout: Duration,
        env: &dyn Env,
        local: Option<&LocalServer>,
    ) -> Result<Target, ConninfoError> {
        let given = match conninfo.map(str::trim) {
            Some(text) if text.starts_with("postgresql://") || text.starts_with("postgres://") => {
                parse_uri(text)?
            }
            Some(text) => parse_pairs(text)?,
            None => Vec::new(),
        };
        // The last value of a key wins, as in libpq.
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        let mut notes = Vec::new();
        for (key, value) in given {
            if let Some((_, why)) = IGNORED.iter().find(|(k, _)| *k == key) {
                notes.push(format!("{key} is ignored: {why}"));
                continue;
            }
            if !APPLIED.iter().any(|(k, _)| *k == key) {
                return Err(bad(format!(
                    "unknown key {key:?}: walguard takes libpq's connection keys"
                )));
            }
            params.insert(key, value);
        }
        let service_name = params
            .get("service")
            .cloned()
            .or_else(|| env.var("PGSERVICE"));
        if let Some(name) = service_name {
            for (key, value) in service(&name, env)? {
                if IGNORED.iter().any(|(k, _)| *k == key) {
                    continue;
                }
                if !APPLIED.iter().any(|(k, _)| *k == key) {
                    return Err(bad(format!("service {name:?}: unknown key {key:?}")));
                }
                params.entry(key).or_insert(value);
            }
        }
        for (key, var) in APPLIED {
            if let Some(value) = var.and_then(|v| env.var(v)) {
                params.entry(key.to_string()).or_insert(value);
            }
        }
        let get = |key: &str| param(&params, key);
        let mut config = postgres::Config::new();
        let local_host = local
            .filter(|_| get("hostaddr").is_none())
            .and_then(|l| l.socket_dir.as_deref())
            .and_then(Path::to_str);
        for host in get("host")
            .or(local_host)
            .unwrap_or(DEFAULT_SOCKET_DIR)
            .split(',')
        {
            if host.starts_with('/') {
                config.host_path(host);
            } else if !host.is_empty() {
                config.host(host);
            }
        }
        for addr in get("hostaddr").into_iter().flat_map(|a| a.split(',')) {
            let ip: IpAddr = addr
                .trim()
                .parse()
                .map_err(|_| bad(format!("hostaddr={addr:?} is not an IP address")))?;
            config.hostaddr(ip);
        }
        let local_port = local.map(|l| l.port.to_string());
        for port in get("port")
            .or(local_port.as_deref())
            .into_iter()
            .flat_map(|p| p.split(','))
            .filter(|p| !p.is_empty())
        {
            let p: u16 = port
                .trim()
                .parse()
                .map_err(|_| bad(format!("port={port:?} is not a port number")))?;
            config.port(p);
        }
        let user = get("user")
            .map(str::to_string)
            .or_else(|| crate::sys::user_name(crate::sys::euid()))
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
        if let Some(db) = get("dbname") {
            config.dbname(db);
        }
        config.application_name(
            get("application_name")
                .or(get("fallback_application_name"))
                .unwrap_or("walguard"),
        );
        // Connect and each query get at most a third of the invocation's budget; the
        // operator's connect_timeout is honoured below that (libpq reads < 2 as 2).
        let third = (timeout / 3).max(Duration::from_millis(500));
        let connect = match get("connect_timeout") {
            Some(v) => match parse_u64("connect_timeout", v)? {
                0 => third,
                s => Duration::from_secs(s.max(2)).min(third),
            },
            None => third,
        };
        config.connect_timeout(connect);
        let statement = format!("-c statement_timeout={}", third.as_millis());
        config.options(&match get("options") {
            Some(o) => format!("{o} {statement}"),
            None => statement,
        });
        if let Some(v) = get("keepalives") {
            config.keepalives(parse_bool("keepalives", v)?);
        }
        if let Some(v) = get("keepalives_idle") {
            config.keepalives_idle(Duration::from_secs(parse_u64("keepalives_idle", v)?));
        }
        if let Some(v) = get("keepalives_interval") {
            config.keepalives_interval(Duration::from_secs(parse_u64("keepalives_interval", v)?));
        }
        if let Some(v) = get("keepalives_count") {
            let n = parse_u64("keepalives_count", v)?;
            config.keepalives_retries(
                u32::try_from(n).map_err(|_| bad("keepalives_count is too large"))?,
            );
        }
        if let Some(v) = get("tcp_user_timeout") {
            config.tcp_user_timeout(Duration::from_millis(parse_u64("tcp_user_timeout", v)?));
        }
        config.target_session_attrs(match get("target_session_attrs").unwrap_or("any") {
            "any" => TargetSessionAttrs::Any,
            "read-write" | "primary" => TargetSessionAttrs::ReadWrite,
            other => {
                return Err(bad(format!(
                    "target_session_attrs={other:?}: walguard must ask the primary (use any, read-write or primary)"
                )));
            }
        });
        config.channel_binding(match get("channel_binding").unwrap_or("prefer") {
            "disable" => ChannelBinding::Disable,
            "prefer" => ChannelBinding::Prefer,
            "require" => ChannelBinding::Require,
            other => {
                return Err(bad(format!(
                    "channel_binding={other:?} is not disable, prefer or require"
                )));
            }
        });
        config.load_balance_hosts(match get("load_balance_hosts").unwrap_or("disable") {
            "disable" => LoadBalanceHosts::Disable,
            "random" => LoadBalanceHosts::Random,
            other => {
                return Err(bad(format!(
                    "load_balance_hosts={other:?} is not disable or random"
                )));
            }
        });
        match get("gssencmode").unwrap_or("disable") {
            "disable" => {}
            "prefer" => notes.push(
                "gssencmode=prefer: GSSAPI encryption is not supported; TLS or plain is used"
                    .into(),
            ),
            "require" => {
                return Err(bad(
                    "gssencmode=require: walguard has no GSSAPI encryption; use sslmode=verify-full instead",
                ));
            }
            other => {
                return Err(bad(format!(
                    "gssencmode={other:?} is not disable, prefer or require"
                )));
            }
        }
        let tls = Self::tls_settings(&params, env)?;
        // Like libpq, never TLS over a Unix socket (and no SSLRequest round trip there).
        let sockets_only = config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, Host::Unix(_)))
            && config.get_hostaddrs().is_empty();
        let plain = tls.mode == Mode::Disable || sockets_only;
        config.ssl_mode(match tls.mode {
            _ if plain => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        let connector = if plain {
            None
        } else {
            Some(tls.connector().map_err(|e| {
                bad(format!(
                    "sslmode={}: {e}",
                    get("sslmode").unwrap_or("prefer")
                ))
            })?)
        };
        config.ssl_negotiation(match get("sslnegotiation").unwrap_or("postgres") {
            "postgres" => SslNegotiation::Postgres,
            "direct" => SslNegotiation::Direct,
            other => {
                return Err(bad(format!(
                    "sslnegotiation={other:?} is not postgres or direct"
                )));
            }
        });
        let mut target = Target {
            config,
            tls: connector,
            notes,
        };
        if let Some(password) = get("password") {
            target.config.password(password);
        } else {
            let file = get("passfile")
                .map(PathBuf::from)
                .or_else(|| env.var("HOME").map(|h| Path::new(&h).join(".pgpass")));
            if let Some(password) = file.and_then(|f| lookup_pgpass(&f, &target)) {
                target.config.password(password);
            }
        }
        Ok(target)
    }

    /// The TLS keys, with libpq's defaults for files in `~/.postgresql/`.
    fn tls_settings(
        params: &BTreeMap<String, String>,
        env: &dyn Env,
    ) -> Result<tls::Settings, ConninfoError> {
        let get = |key: &str| param(params, key);
        let mode_text = get("sslmode").unwrap_or("prefer");
        let mode = Mode::parse(mode_text).ok_or_else(|| {
            bad(format!("sslmode={mode_text:?} is not disable, allow, prefer, require, verify-ca or verify-full"))
        })?;
        let home_file = |name: &str| {
            env.var("HOME")
                .map(|h| Path::new(&h).join(".postgresql").join(name))
                .filter(|p| p.is_file())
        };
        let roots = match get("sslrootcert") {
            Some("system") => Some(Roots::System),
            Some(path) => Some(Roots::File(PathBuf::from(path))),
            None => home_file("root.crt").map(Roots::File),
        };
        if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) && roots.is_none() {
            return Err(bad(format!(
                "sslmode={mode_text} needs a root certificate: set sslrootcert (a file, or system), or put it in ~/.postgresql/root.crt"
            )));
        }
        let client = match (
            get("sslcert").map(PathBuf::from),
            get("sslkey").map(PathBuf::from),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) | (None, Some(_)) => return Err(bad("sslcert and sslkey go together")),
            (None, None) => home_file("postgresql.crt").zip(home_file("postgresql.key")),
        };
        let version = |key: &str| -> Result<Option<u8>, ConninfoError> {
            match get(key).map(str::to_ascii_lowercase).as_deref() {
                None | Some("") => Ok(None),
                Some("tlsv1") => Ok(Some(10)),
                Some("tlsv1.1") => Ok(Some(11)),
                Some("tlsv1.2") => Ok(Some(12)),
                Some("tlsv1.3") => Ok(Some(13)),
                Some(other) => Err(bad(format!(
                    "{key}={other:?} is not TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3"
                ))),
            }
        };
        let (min, max) = (
            version("ssl_min_protocol_version")?,
            version("ssl_max_protocol_version")?,
        );
        if max.is_some_and(|m| m < 12) {
            return Err(bad(
                "ssl_max_protocol_version below TLSv1.2: walguard speaks TLS 1.2 and 1.3 only",
            ));
        }
        Ok(tls::Settings {
            mode,
            roots,
            client,
            sni: get("sslsni")
                .map(|v| parse_bool("sslsni", v))
                .transpose()?
                .unwrap_or(true),
            only_tls13: min == Some(13),
            only_tls12: max == Some(12),
        })
    }

    /// Keys that were accepted but change nothing, for `check` and `status` to say.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Connects, with TLS as `sslmode` says.
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        }
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

    const T: Duration = Duration::from_secs(30);

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
            "host='/tmp' port = 5433 user=mon password='s3\\cret' dbname=postgres",
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
            assert!(!format!("{t:?}").contains("s3"));
            assert!(t.config().get_password().is_some());
        }
        let err = Target::new(Some("host=a password='unterminated"), T, &env(&[])).unwrap_err();
        assert!(!err.to_string().contains("unterminated"), "{err}");
    }

    #[test]
    fn what_pg_basebackup_r_writes_is_accepted() {
        let written = "user=postgres passfile='/var/lib/postgresql/.pgpass' channel_binding=prefer \
                       host=127.0.0.1 port=5432 sslmode=prefer sslnegotiation=postgres sslcompression=0 \
                       sslcertmode=allow sslsni=1 ssl_min_protocol_version=TLSv1.2 gssencmode=prefer \
                       krbsrvname=postgres gssdelegation=0 target_session_attrs=any load_balance_hosts=disable";
        let t = Target::new(Some(written), T, &env(&[])).unwrap();
        assert_eq!(
            t.describe(),
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
        );
        let notes = t.notes().join("; ");
        for key in [
            "sslcompression",
            "krbsrvname",
            "gssdelegation",
            "gssencmode=prefer",
        ] {
            assert!(notes.contains(key), "{notes}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("host=a sslmode=maybe", "sslmode=\"maybe\""),
            ("host=a frobnicate=1", "unknown key \"frobnicate\""),
            ("host=a port=x", "port=\"x\""),
            ("host=a gssencmode=require", "gssencmode=require"),
            (
                "host=a sslmode=verify-full",
                "sslmode=verify-full needs a root certificate",
            ),
            (
                "host=a target_session_attrs=standby",
                "target_session_attrs=\"standby\"",
            ),
            (
                "host=a sslrootcert=/nonexistent sslmode=verify-ca",
                "sslrootcert /nonexistent",
            ),
            (
                "host=a ssl_max_protocol_version=TLSv1.1",
                "ssl_max_protocol_version",
            ),
            ("host", "missing \"=\" after \"host\""),
            ("postgresql://a/b?sslmode", "\"sslmode\" has no \"=\""),
            ("service=nosuch", "service \"nosuch\" is not defined in"),
        ];
        for (text, needle) in cases {
            let err = Target::new(Some(text), T, &env(&[("HOME", "/nonexistent")]))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("conninfo: ") && err.contains(needle),
                "{text}: {err}"
            );
        }
        // An unquoted password with a space: its second half is never shown.
        let err = Target::new(Some("host=a password=open sesame"), T, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("must be quoted") && !err.contains("sesame"),
            "{err}"
        );
    }

    #[test]
    fn the_local_server_fills_what_is_left_unset() {
        let pid = "4242\n/var/lib/postgresql/15/main\n1733450000\n5433\n/var/run/postgresql\n*\n  5433001     98304\nready   \n";
        let local = LocalServer::parse(pid).unwrap();
        assert_eq!(local.port, 5433);
        let t = Target::with_local(None, T, &env(&[]), Some(&local)).unwrap();
        assert!(
            t.describe()
                .starts_with("host=/var/run/postgresql port=5433 "),
            "{}",
            t.describe()
        );
        // What is given wins: a host of its own keeps the local port, a port its own.
        let t = Target::with_local(Some("host=db9"), T, &env(&[]), Some(&local)).unwrap();
        assert_eq!(t.config().get_ports(), &[5433]);
        let t = Target::with_local(None, T, &env(&[("PGPORT", "6000")]), Some(&local)).unwrap();
        assert_eq!(t.config().get_ports(), &[6000]);
        assert_eq!(LocalServer::parse("1\n/d\n"), None);
        // TCP only: no socket directory, the default host.
        let tcp = LocalServer::parse("1\n/d\n1\n5432\n\n*\n").unwrap();
        assert_eq!(tcp.socket_dir, None);
    }

    #[test]
    fn uris_hosts_and_ports() {
        let t = Target::new(
            Some("postgresql://u@[::1]:6000,db2:6001/app?application_name=x&sslmode=disable"),
            T,
            &env(&[]),
        )
        .unwrap();
        assert_eq!(t.config().get_ports(), &[6000, 6001]);
        assert_eq!(t.config().get_hosts().len(), 2);
        assert_eq!(t.config().get_application_name(), Some("x"));
        assert_eq!(t.describe(), "host=::1 port=6000 user=u dbname=app");
    }

    #[test]
    fn timeouts_are_bounded_and_the_operators_value_kept() {
        let t = Target::new(Some("host=a connect_timeout=4"), T, &env(&[])).unwrap();
        assert_eq!(
            t.config().get_connect_timeout(),
            Some(&Duration::from_secs(4))
        );
        let t = Target::new(Some("host=a connect_timeout=60"), T, &env(&[])).unwrap();
        assert_eq!(
            t.config().get_connect_timeout(),
            Some(&Duration::from_secs(10)),
            "a third of timeout at most"
        );
        let t = Target::new(Some("host=a options='-c work_mem=1MB'"), T, &env(&[])).unwrap();
        assert_eq!(
            t.config().get_options(),
            Some("-c work_mem=1MB -c statement_timeout=10000")
        );
    }

    #[test]
    fn service_files_fill_in_and_lose_to_the_conninfo() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg_service.conf");
        std::fs::write(&file, "# services\n[other]\nhost=nope\n[wg]\nhost=db9\nport=7777\nuser=mon\ndbname=postgres\nsslcompression=0\n").unwrap();
        let e = env(&[("PGSERVICEFILE", file.to_str().unwrap())]);
        let t = Target::new(Some("service=wg port=7000"), T, &e).unwrap();
        assert_eq!(t.describe(), "host=db9 port=7000 user=mon dbname=postgres");
        let e = env(&[
            ("PGSERVICEFILE", "/nonexistent"),
            ("PGSYSCONFDIR", dir.path().to_str().unwrap()),
            ("PGSERVICE", "wg"),
        ]);
        assert_eq!(
            Target::new(None, T, &e).unwrap().describe(),
            "host=db9 port=7777 user=mon dbname=postgres"
        );
    }

    #[test]
    fn password_from_environment_then_passfile() {
        let t = Target::new(Some("host=h user=u"), T, &env(&[("PGPASSWORD", "pw")])).unwrap();
        assert_eq!(t.config().get_password(), Some(&b"pw"[..]));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
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
        let t = Target::new(
            Some(&format!("host=h user=u passfile={path}")),
            T,
            &env(&[]),
        )
        .unwrap();
        assert_eq!(
            t.config().get_password(),
            Some(&b"p:ss"[..]),
            "passfile in the conninfo"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = Target::new(Some("host=h user=u"), T, &e).unwrap();
        assert_eq!(
            t.config().get_password(),
            None,
            "a readable pgpass is ignored, as libpq does"
        );
    }
}

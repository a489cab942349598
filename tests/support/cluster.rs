//! A throwaway PostgreSQL primary with streaming replicas, walguard as its
//! archive_command. Shared by the integration tests and `examples/demo.rs`.
//!
//! Everything lives in one short temporary directory (Unix socket paths must stay under
//! ~100 bytes); every server is stopped and the directory removed on drop. When the
//! process runs as root, the servers run as the OS user `postgres` (initdb refuses root).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where PostgreSQL's server programs are: `$WALGUARD_PG_BINDIR`, `pg_config --bindir`,
/// `initdb` on `PATH`, or the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bindir() -> Option<PathBuf> {
    let has_initdb = |d: &Path| d.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("WALGUARD_PG_BINDIR").map(PathBuf::from) {
        return has_initdb(&dir).then_some(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    let mut debian: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    debian.sort_by_key(|p| {
        let version = p
            .parent()
            .and_then(|v| v.file_name())
            .and_then(OsStr::to_str)
            .and_then(|v| v.parse::<u32>().ok());
        std::cmp::Reverse(version)
    });
    from_pg_config
        .into_iter()
        .chain(on_path)
        .chain(debian)
        .find(|d| has_initdb(d))
}

/// A port for a server not started yet. Taken below Linux's ephemeral range (32768 and
/// up), so that no outgoing connection (a replica's to its primary, in a test running
/// beside) can take it before the server listens, as a port from bind(0) could; never the
/// same one twice in a process; and free now.
pub fn free_port() -> Result<u16> {
    const FIRST: u32 = 20000;
    const COUNT: u32 = 12000;
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Processes start at different places, so that concurrent ones rarely probe the same.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = (std::process::id() ^ nanos) % COUNT;
    for i in 0..COUNT {
        let Ok(port) = u16::try_from(FIRST + (start + i) % COUNT) else {
            continue;
        };
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no free TCP port between {FIRST} and {}", FIRST + COUNT)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Set by a Ctrl-C handler (the demo's): every wait then fails, so the caller unwinds
/// and the cluster's drop stops the servers and removes the directory.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Polls `probe` every 100 ms until it yields, or fails after `limit` naming `what`.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted while waiting for {what}");
        }
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How long to wait for the archiver: after three failed attempts it may sleep up to 60 s
/// until a new segment wakes it.
pub const ARCHIVE_WAIT: Duration = Duration::from_secs(90);

/// Stdout then stderr of a finished command, for messages and assertions.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// True when the segment names (one timeline) follow each other with no gap.
pub fn is_contiguous(names: &[String]) -> bool {
    let nums: Vec<Option<u64>> = names
        .iter()
        .map(|n| u64::from_str_radix(n.get(8..)?, 16).ok())
        .collect();
    nums.windows(2)
        .all(|w| matches!((w[0], w[1]), (Some(a), Some(b)) if b == a + 1))
}

pub struct Options {
    pub replicas: usize,
    /// initdb --wal-segsize, in MiB.
    pub segment_mib: u32,
    /// Extra lines for walguard.toml.
    pub extra_config: String,
    /// PostgreSQL's server programs; `None` finds them (`find_bindir`).
    pub bindir: Option<PathBuf>,
    /// walguard's archive module (the built `libwalguard_pg.so`): the primary loads it
    /// as `archive_library` instead of running walguard as its archive_command.
    pub archive_library: Option<PathBuf>,
    /// walguard as its package installs it: the binary run where it is (not copied into
    /// the cluster's directory), and `archive_library` named as given, for the server to
    /// find in its own pkglibdir.
    pub installed: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replicas: 2,
            segment_mib: 16,
            extra_config: String::new(),
            bindir: None,
            archive_library: None,
            installed: false,
        }
    }
}

/// The major version of the server programs in `bindir` (`postgres --version`).
pub fn major_version(bindir: &Path) -> Result<u32> {
    let out = Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .with_context(|| format!("running {}/postgres --version", bindir.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.split('.').next()?.parse::<u32>().ok())
        .with_context(|| format!("no version in {text:?}"))
}

pub struct Node {
    pub name: String,
    pub data: PathBuf,
    pub port: u16,
}

pub struct Cluster {
    pub base: PathBuf,
    pub bindir: PathBuf,
    /// The server's major version (10 to 18).
    pub major: u32,
    pub walguard: PathBuf,
    pub config: PathBuf,
    pub list: PathBuf,
    pub archive: PathBuf,
    pub log: PathBuf,
    pub primary: Node,
    pub replicas: Vec<Node>,
    run_as: Option<&'static str>,
    /// uid and gid of `run_as`.
    server_ids: Option<(u32, u32)>,
}

impl Cluster {
    /// initdb, start the primary with walguard as archive_command, make the replicas
    /// (application_name r1, r2, ...) by a cold copy of the cleanly stopped primary (the
    /// npm server packages have no pg_basebackup), start them all, wait until all stream.
    /// The list names every replica by application name.
    pub fn start(walguard_exe: &Path, opts: Options) -> Result<Cluster> {
        let bindir = match opts.bindir.clone() {
            Some(dir) => dir,
            None => find_bindir().context(
                "PostgreSQL's server programs (initdb, pg_ctl) were not found: install the Debian package postgresql-15 \
                 (apt-get install postgresql-15) or set WALGUARD_PG_BINDIR",
            )?,
        };
        let major = major_version(&bindir)?;
        let base = make_base_dir()?;
        let run_as = is_root().then_some("postgres");
        let server_ids = match run_as {
            Some(user) => Some((id_of(user, "-u")?, id_of(user, "-g")?)),
            None => None,
        };
        let walguard = if opts.installed {
            walguard_exe.to_path_buf()
        } else {
            // Where the server's user can run it (the build's target/ may be private).
            let copy = base.join("walguard");
            fs::copy(walguard_exe, &copy).context("copying walguard into the cluster directory")?;
            fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
            copy
        };
        let mut cluster = Cluster {
            config: base.join("walguard.toml"),
            list: base.join("slaves.list"),
            archive: base.join("archive"),
            log: base.join("watchdog.log"),
            primary: Node {
                name: "primary".into(),
                data: base.join("p"),
                port: free_port()?,
            },
            replicas: Vec::new(),
            base,
            bindir,
            major,
            walguard,
            run_as,
            server_ids,
        };
        cluster.chown(&cluster.base)?;
        fs::create_dir(&cluster.archive)?;
        cluster.chown(&cluster.archive)?;
        let list: String = (1..=opts.replicas).map(|i| format!("app:r{i}\n")).collect();
        cluster.write_list(&list)?;
        cluster.write_config(&opts.extra_config)?;

        let data = cluster.primary.data.clone();
        let segsize = format!("--wal-segsize={}", opts.segment_mib);
        // PostgreSQL 10 fixes the segment size at build time (16 MiB).
        if major >= 11 {
            cluster.initdb(&data, &[&segsize])?;
        } else if opts.segment_mib != 16 {
            bail!("PostgreSQL {major} has no --wal-segsize: it only has 16 MiB segments");
        } else {
            cluster.initdb(&data, &[])?;
        }
        let mut conf = cluster.server_conf(cluster.primary.port);
        match &opts.archive_library {
            Some(module) => {
                let library = if opts.installed {
                    module.clone()
                } else {
                    let copy = cluster.base.join("walguard.so");
                    fs::copy(module, &copy).context("copying the archive module")?;
                    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
                    copy
                };
                let _ = write!(
                    conf,
                    "archive_mode = on\narchive_library = '{}'\nwalguard.config = '{}'\n",
                    library.display(),
                    cluster.config.display()
                );
            }
            None => {
                let _ = write!(
                    conf,
                    "archive_mode = on\narchive_command = '{} --config {} archive %p %f'\n",
                    cluster.walguard.display(),
                    cluster.config.display()
                );
            }
        }
        append(&data.join("postgresql.conf"), &conf)?;
        if opts.replicas > 0 {
            // A clean stop leaves a shutdown checkpoint the copies start from.
            cluster.pg_ctl(&cluster.primary, "start")?;
            cluster.pg_ctl(&cluster.primary, "stop")?;
            for i in 1..=opts.replicas {
                cluster.copy_replica(&format!("r{i}"))?;
            }
        }
        cluster.pg_ctl(&cluster.primary, "start")?;
        for node in &cluster.replicas {
            cluster.pg_ctl(node, "start")?;
        }
        cluster.wait_streaming(opts.replicas)?;
        Ok(cluster)
    }

    fn server_conf(&self, port: u16) -> String {
        // wal_keep_size replaced wal_keep_segments in 13.
        let keep = if self.major >= 13 {
            "wal_keep_size = 0"
        } else {
            "wal_keep_segments = 0"
        };
        format!(
            "\n# walguard test harness\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 40\n{keep}\nwal_receiver_status_interval = 1s\n\
             wal_retrieve_retry_interval = 1s\ncheckpoint_timeout = 1h\nfsync = off\nshared_buffers = 16MB\n",
            self.base.display()
        )
    }

    /// `host=... port=... user=postgres dbname=postgres` of the primary (Unix socket).
    pub fn conninfo(&self) -> String {
        self.conninfo_of(&self.primary)
    }

    /// `node`'s conninfo, over the Unix socket.
    pub fn conninfo_of(&self, node: &Node) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.base.display(),
            node.port
        )
    }

    pub fn chown(&self, path: &Path) -> Result<()> {
        if let Some(user) = self.run_as {
            let status = Command::new("chown")
                .arg("-R")
                .arg(user)
                .arg(path)
                .status()?;
            if !status.success() {
                bail!("chown {user} {} failed", path.display());
            }
        }
        Ok(())
    }

    /// Runs a PostgreSQL program as the cluster's OS user.
    fn pg(&self, program: &str, args: &[&dyn AsRef<OsStr>]) -> Result<Output> {
        let exe = self.bindir.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args.iter().map(|a| a.as_ref()))
            .current_dir(&self.base)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    fn pg_ctl(&self, node: &Node, action: &str) -> Result<()> {
        let log = self.base.join(format!("{}.log", node.name));
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"-D", &node.data, &"-l", &log, &"-w"];
        if action == "stop" {
            args.extend([&"-m" as &dyn AsRef<OsStr>, &"fast"]);
        }
        args.push(&action);
        self.pg("pg_ctl", &args).map(drop).with_context(|| {
            // What the server said is the only clue once its directory is gone.
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            format!(
                "pg_ctl {action} of {}; the end of its log:\n{tail}",
                node.name
            )
        })
    }

    /// A new replica called `name`: a copy of the stopped primary's data directory,
    /// configured as a standby streaming from it (over TCP, so that pg_stat_replication
    /// shows client_addr 127.0.0.1). Not started.
    fn copy_replica(&mut self, name: &str) -> Result<()> {
        let node = Node {
            name: name.to_string(),
            data: self.base.join(name),
            port: free_port()?,
        };
        let status = Command::new("cp")
            .arg("-a")
            .arg(&self.primary.data)
            .arg(&node.data)
            .status()?;
        if !status.success() {
            bail!("copying the primary's data directory for {name} failed");
        }
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres application_name={name}",
            self.primary.port
        );
        append(
            &node.data.join("postgresql.conf"),
            &self.server_conf(node.port),
        )?;
        if self.major >= 12 {
            append(
                &node.data.join("postgresql.conf"),
                &format!("primary_conninfo = '{conninfo}'\n"),
            )?;
            fs::write(node.data.join("standby.signal"), "")?;
        } else {
            // Before 12, recovery settings live in recovery.conf.
            fs::write(
                node.data.join("recovery.conf"),
                format!(
                    "standby_mode = 'on'\nprimary_conninfo = '{conninfo}'\nrecovery_target_timeline = 'latest'\n"
                ),
            )?;
        }
        self.chown(&node.data)?;
        self.replicas.push(node);
        Ok(())
    }

    /// A base backup of the primary into `base/NAME`, without WAL (`-X none`: recovery
    /// restores it from the archive), after a fast checkpoint.
    pub fn base_backup(&self, name: &str) -> Result<PathBuf> {
        let dir = self.base.join(name);
        let path = dir
            .to_str()
            .context("a base backup path that is not UTF-8")?;
        self.client("pg_basebackup", &["-D", path, "-X", "none", "-c", "fast"])?;
        Ok(dir)
    }

    /// Runs a PostgreSQL client program (pgbench, pg_basebackup) against the primary, as
    /// the server's user.
    pub fn client(&self, program: &str, args: &[&str]) -> Result<Output> {
        let out = self
            .as_server_user(&self.bindir.join(program))
            .args([
                "-h",
                &self.base.display().to_string(),
                "-p",
                &self.primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("{program} failed: {}", output_text(&out));
        }
        Ok(out)
    }

    /// Finishes the current segment and waits until the archiver has archived it (and so
    /// everything before it); returns its name.
    pub fn archive_everything(&self) -> Result<String> {
        let last = self.switch_wal()?;
        wait_for(&format!("{last} to be archived"), ARCHIVE_WAIT, || {
            let archived = self.query("SELECT last_archived_wal FROM pg_stat_archiver")?;
            Ok(archived.is_some_and(|a| a >= last).then_some(()))
        })?;
        Ok(last)
    }

    /// A server made from the base backup in `backup`, recovering with walguard's
    /// restore_command and `settings` (standby or plain recovery); not started.
    pub fn recovering_server(
        &self,
        name: &str,
        backup: &Path,
        settings: &str,
        standby: bool,
    ) -> Result<Node> {
        let node = Node {
            name: name.into(),
            data: self.base.join(name),
            port: free_port()?,
        };
        let copied = Command::new("cp")
            .arg("-a")
            .arg(backup)
            .arg(&node.data)
            .status()?;
        if !copied.success() {
            bail!("copying the base backup {}", backup.display());
        }
        fs::write(
            node.data.join("postgresql.auto.conf"),
            format!(
                "port = {}\narchive_mode = off\nrestore_command = '{} --config {} restore %f %p'\n{settings}\n",
                node.port,
                self.walguard.display(),
                self.config.display()
            ),
        )?;
        fs::write(
            node.data.join(if standby {
                "standby.signal"
            } else {
                "recovery.signal"
            }),
            "",
        )?;
        self.chown(&node.data)?;
        Ok(node)
    }

    /// A TCP port nobody listens on now.
    pub fn free_port(&self) -> Result<u16> {
        free_port()
    }

    pub fn replica(&self, name: &str) -> &Node {
        self.replicas
            .iter()
            .find(|n| n.name == name)
            .expect("no such replica")
    }

    /// Appends settings to `node`'s postgresql.conf and reloads it if it runs.
    pub fn configure(&self, node: &Node, text: &str) -> Result<()> {
        append(&node.data.join("postgresql.conf"), &format!("\n{text}\n"))?;
        let _ = self.query_on(node, "SELECT pg_reload_conf()");
        Ok(())
    }

    /// Promotes a replica to primary and waits until it accepts writes.
    pub fn promote(&self, node: &Node) -> Result<()> {
        self.pg_ctl(node, "promote")
    }

    pub fn stop(&self, node: &Node) -> Result<()> {
        self.pg_ctl(node, "stop")
    }

    /// Waits (up to 2 minutes) until `node` has left recovery and answers as a primary;
    /// the error carries its server log. `what` names the wait.
    pub fn wait_promoted(&self, node: &Node, what: &str) -> Result<()> {
        wait_for(what, Duration::from_secs(120), || {
            Ok((self
                .query_on(node, "SELECT pg_is_in_recovery()")
                .ok()
                .flatten()
                .as_deref()
                == Some("f"))
            .then_some(()))
        })
        .with_context(|| self.server_log(node))
    }

    /// Stops and starts `node` (settings that need a restart).
    pub fn restart(&self, node: &Node) -> Result<()> {
        self.pg_ctl(node, "restart")
    }

    /// Makes the stopped `node` a standby streaming from `upstream` (as itself: its
    /// `application_name` is its name), following timeline switches. PostgreSQL 12+.
    pub fn follow(&self, node: &Node, upstream: &Node) -> Result<()> {
        append(
            &node.data.join("postgresql.conf"),
            &format!(
                "\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name={}'\nrecovery_target_timeline = 'latest'\n",
                upstream.port, node.name
            ),
        )?;
        fs::write(node.data.join("standby.signal"), "")?;
        self.chown(&node.data)
    }

    /// Waits until `names` stream from `node` with a reported replay position.
    pub fn wait_streaming_from(&self, node: &Node, names: &[&str]) -> Result<()> {
        let list = names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(",");
        wait_for(
            &format!("{names:?} streaming from {}", node.name),
            Duration::from_secs(60),
            || {
                let count = self.query_on(
                    node,
                    &format!(
                        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' \
                         AND replay_lsn IS NOT NULL AND application_name IN ({list})"
                    ),
                )?;
                Ok((count.as_deref() == Some(&names.len().to_string())).then_some(()))
            },
        )
    }

    /// Runs walguard as the server's user in `node`'s data directory (as its
    /// archive_command runs), with this cluster's config.
    pub fn walguard_in(&self, node: &Node, args: &[&str]) -> Output {
        self.as_server_user(&self.walguard)
            .current_dir(&node.data)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("running walguard")
    }

    /// Stops `node` the way a crash would (`-m immediate`): nothing more is written.
    pub fn stop_immediately(&self, node: &Node) -> Result<()> {
        self.pg(
            "pg_ctl",
            &[&"-D", &node.data, &"-m", &"immediate", &"-w", &"stop"],
        )
        .map(drop)
    }

    pub fn start_node(&self, node: &Node) -> Result<()> {
        self.pg_ctl(node, "start")
    }

    /// Stops replica `name`, finishes `segments` segments and waits until walguard holds
    /// the first: its decision line must name the replica as not connected (the other
    /// replicas may be named too, when they had not reported replaying it yet), and
    /// nothing from it on may be acknowledged (`.done`: PostgreSQL may recycle those; with
    /// `archive_ahead` they are in the archive already). Returns the segments and that
    /// line.
    pub fn hold_by_stopping(&self, name: &str, segments: usize) -> Result<(Vec<String>, String)> {
        self.stop(self.replica(name))?;
        let held: Vec<String> = (0..segments)
            .map(|_| self.switch_wal())
            .collect::<Result<_>>()?;
        // The primary's own line: with one config on every node a standby (archive_mode =
        // always) logs its holds of the same segment to the same file.
        let needle = format!("wal={} decision=held", held[0]);
        let line = wait_for(&format!("the primary's `{needle}`"), ARCHIVE_WAIT, || {
            Ok(self
                .log_text()
                .lines()
                .find(|l| l.contains(&needle) && !l.contains(" role=standby"))
                .map(str::to_string))
        })?;
        if !line.contains(&format!("replica app:{name} not connected")) {
            bail!("the hold does not name {name}: {line}");
        }
        let acknowledged = self.query("SELECT last_archived_wal FROM pg_stat_archiver")?;
        if acknowledged.as_ref().is_some_and(|a| a >= &held[0]) {
            bail!("acknowledged past the stopped replica {name}: {acknowledged:?}");
        }
        let ready = self.ready()?;
        if !held.iter().all(|h| ready.contains(h)) {
            bail!("held segments are not all .ready: {held:?}, {ready:?}");
        }
        Ok((held, line))
    }

    /// Rewrites walguard.toml: the harness's settings plus `extra` lines.
    pub fn write_config(&self, extra: &str) -> Result<()> {
        fs::write(
            &self.config,
            self.config_text(&self.primary, &self.list, extra),
        )
        .context("writing walguard.toml")
    }

    /// A walguard config for `node`'s server: the cluster's archive and log, `list`.
    fn config_text(&self, node: &Node, list: &Path, extra: &str) -> String {
        format!(
            "archive_dir = \"{}\"\nreplicas = \"{}\"\nlog_file = \"{}\"\nconninfo = \"{}\"\ntimeout = \"10s\"\n{extra}",
            self.archive.display(),
            list.display(),
            self.log.display(),
            self.conninfo_of(node),
        )
    }

    /// Gives `node` its own walguard as archive_command, for when it is promoted: the
    /// cluster's archive and log, its own server, `list` as its replicas list.
    pub fn archive_from(&self, node: &Node, list: &str, extra: &str) -> Result<()> {
        let config = self.base.join(format!("walguard-{}.toml", node.name));
        let list_path = self.base.join(format!("{}.list", node.name));
        fs::write(&list_path, list)?;
        fs::write(&config, self.config_text(node, &list_path, extra))?;
        self.chown(&self.base)?;
        self.configure(
            node,
            &format!(
                "archive_command = '{} --config {} archive %p %f'",
                self.walguard.display(),
                config.display()
            ),
        )
    }

    pub fn write_list(&self, text: &str) -> Result<()> {
        fs::write(&self.list, text).context("writing slaves.list")
    }

    pub fn connect(&self, node: &Node) -> Result<postgres::Client> {
        postgres::Client::connect(&self.conninfo_of(node), postgres::NoTls)
            .with_context(|| format!("connecting to {}", node.name))
    }

    /// Runs `sql` on the primary and returns the first column of the first row as text.
    pub fn query(&self, sql: &str) -> Result<Option<String>> {
        self.query_on(&self.primary, sql)
    }

    /// Runs `sql` on `node` and returns the first column of the first row as text.
    pub fn query_on(&self, node: &Node, sql: &str) -> Result<Option<String>> {
        let mut client = self.connect(node)?;
        let rows = client.simple_query(sql)?;
        Ok(rows
            .iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
                _ => None,
            })
            .flatten())
    }

    /// Writes a little, then finishes the current segment; returns the finished segment's name.
    pub fn switch_wal(&self) -> Result<String> {
        self.switch_wal_on(&self.primary)
    }

    /// `switch_wal` on `node` (a promoted replica, say).
    pub fn switch_wal_on(&self, node: &Node) -> Result<String> {
        self.query_on(
            node,"CREATE TABLE IF NOT EXISTS walguard_test (x int); INSERT INTO walguard_test VALUES (1)")?;
        self.query_on(node, "SELECT pg_walfile_name(pg_switch_wal())")?
            .context("pg_switch_wal returned nothing")
    }

    /// Waits until `n` walsenders named r1.. stream with a reported replay position.
    pub fn wait_streaming(&self, n: usize) -> Result<()> {
        wait_for(
            &format!("{n} replicas streaming"),
            Duration::from_secs(60),
            || {
                let count = self.query(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND replay_lsn IS NOT NULL AND application_name ~ '^r[0-9]+$'",
            )?;
                Ok((count.as_deref() == Some(&n.to_string())).then_some(()))
            },
        )
    }

    /// Waits until every replica has replayed everything the primary has written.
    pub fn wait_caught_up(&self, names: &[&str]) -> Result<()> {
        let target = self
            .query("SELECT pg_current_wal_lsn()")?
            .context("no current LSN")?;
        let names = names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(",");
        wait_for("replicas to catch up", Duration::from_secs(60), || {
            let behind = self.query(&format!(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name IN ({names}) AND replay_lsn >= '{target}'"
            ))?;
            Ok((behind.as_deref() == Some(&names.split(',').count().to_string())).then_some(()))
        })
    }

    /// Waits until `name` is in the archive and the archiver has reported it.
    pub fn wait_archived(&self, name: &str, limit: Duration) -> Result<()> {
        self.wait_archived_on(&self.primary, name, limit)
    }

    /// `wait_archived`, for the archiver of `node`.
    pub fn wait_archived_on(&self, node: &Node, name: &str, limit: Duration) -> Result<()> {
        wait_for(&format!("{name} to be archived"), limit, || {
            let last = self.query_on(node, "SELECT last_archived_wal FROM pg_stat_archiver")?;
            Ok(
                (last.is_some_and(|l| l.as_str() >= name) && self.archive.join(name).exists())
                    .then_some(()),
            )
        })
    }

    /// Segment names in the archive, sorted.
    pub fn archived(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = fs::read_dir(&self.archive)?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 24)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The `.ready` files waiting in the primary's pg_wal/archive_status.
    pub fn ready(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = fs::read_dir(self.primary.data.join("pg_wal/archive_status"))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".ready").map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// A command that runs `program` as the cluster's OS user (as PostgreSQL runs
    /// walguard), in the primary's data directory. The child switches user itself
    /// (setgid, setgroups, setuid before exec): no extra process, so timings compare.
    pub fn as_server_user(&self, program: &Path) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(program);
        if let Some((uid, gid)) = self.server_ids {
            cmd.uid(uid)
                .gid(gid)
                .env("HOME", &self.base)
                .env("USER", "postgres");
        }
        cmd.current_dir(&self.primary.data).stdin(Stdio::null());
        cmd
    }

    /// Runs walguard with this cluster's config, as the server's user.
    pub fn walguard(&self, args: &[&str]) -> Output {
        self.as_server_user(&self.walguard)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("running walguard")
    }

    /// A new directory under the cluster's, owned by the server's user.
    /// initdb of a throwaway data directory, as the server's user.
    fn initdb(&self, data: &Path, extra: &[&dyn AsRef<OsStr>]) -> Result<()> {
        let mut args: Vec<&dyn AsRef<OsStr>> =
            vec![&"-D", &data, &"-A", &"trust", &"-U", &"postgres", &"-N"];
        args.extend_from_slice(extra);
        self.pg("initdb", &args).map(drop)
    }

    /// Another cluster's data directory (its own initdb, so its own system identifier),
    /// in the scratch directory `name`; never started.
    pub fn other_cluster(&self, name: &str) -> Result<PathBuf> {
        let data = self.scratch_dir(name)?.join("data");
        self.initdb(&data, &[])?;
        Ok(data)
    }

    pub fn scratch_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.base.join(name);
        fs::create_dir_all(&dir)?;
        self.chown(&dir)?;
        Ok(dir)
    }

    /// Waits (up to `ARCHIVE_WAIT`) for a decision-log line containing `needle`; returns it.
    pub fn wait_log_line(&self, needle: &str) -> Result<String> {
        wait_for(&format!("a log line with `{needle}`"), ARCHIVE_WAIT, || {
            Ok(self
                .log_text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string))
        })
    }

    /// Waits for `name`'s release: `archived`, or `exists` when an earlier attempt held it
    /// (its replicas had not reported replaying it yet) and archived it ahead. Returns the
    /// line.
    pub fn wait_released(&self, name: &str) -> Result<String> {
        let (archived, exists) = (
            format!("wal={name} decision=archived"),
            format!("wal={name} decision=exists"),
        );
        wait_for(&format!("{name} released"), ARCHIVE_WAIT, || {
            Ok(self
                .log_text()
                .lines()
                .find(|l| l.contains(&archived) || l.contains(&exists))
                .map(str::to_string))
        })
    }

    /// The newest line of the decision log.
    pub fn last_log_line(&self) -> String {
        self.log_text()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn server_log(&self, node: &Node) -> String {
        fs::read_to_string(self.base.join(format!("{}.log", node.name))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.replicas.iter().chain(std::iter::once(&self.primary)) {
            let _ = self.pg("pg_ctl", &[&"-D", &node.data, &"-m", &"immediate", &"stop"]);
        }
        if std::env::var_os("WALGUARD_KEEP_CLUSTER").is_none() {
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}

/// `id -u USER` or `id -g USER`.
pub fn id_of(user: &str, flag: &str) -> Result<u32> {
    let out = Command::new("id").args([flag, user]).output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("no such user {user}"))
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// A new directory `/tmp/wgXXXXXX`, short enough for socket paths, world-traversable so
/// the servers' user can reach it.
pub fn make_base_dir() -> Result<PathBuf> {
    let mut template = *b"/tmp/wgXXXXXX\0";
    // SAFETY: template is a writable NUL-terminated buffer ending in XXXXXX.
    let p = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
    if p.is_null() {
        bail!("mkdtemp: {}", std::io::Error::last_os_error());
    }
    let path = PathBuf::from(std::str::from_utf8(&template[..template.len() - 1])?);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

//! walguard under a real Patroni (Debian's `patroni` 3.0.2 and `etcd-server` 3.4): three
//! nodes on loopback, walguard as `archive_command` in the DCS parameters with
//! `archive_mode: always`, each Patroni started with `WALGUARD_SELF=app:<member>`, and
//! one walguard config (no conninfo: each node asks its own server) and one list naming
//! every member. The leader is killed (failover), the old leader rejoins, a switchover
//! is made, a replica is stopped and rejoins: the archive has no gap on any timeline
//! (`walguard verify`), and nobody was rebuilt ("already been removed" never appears).
//!
//! Without patroni and etcd installed the test says so and passes, unless
//! `WALGUARD_REQUIRE_PATRONI=1` (CI, which installs them).

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cluster::{free_port, make_base_dir, output_text, wait_for};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");
const BINDIR: &str = "/usr/lib/postgresql/15/bin";
/// Patroni's timings (ttl 10 s) make a failover take up to about 20 s.
const FAILOVER: Duration = Duration::from_secs(90);

struct Member {
    name: String,
    config: PathBuf,
    data: PathBuf,
    port: u16,
    log: PathBuf,
    patroni: Option<Child>,
}

/// etcd and three Patroni members in one short directory; all stopped and removed on
/// drop.
struct Estate {
    base: PathBuf,
    etcd: Option<Child>,
    members: Vec<Member>,
    archive: PathBuf,
    log: PathBuf,
    walguard_config: PathBuf,
}

impl Drop for Estate {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut p) = m.patroni.take() {
                let _ = p.kill();
                let _ = p.wait();
            }
            let _ = postgres_user(&Path::new(BINDIR).join("pg_ctl"))
                .args(["-D"])
                .arg(&m.data)
                .args(["-m", "immediate", "stop"])
                .output();
        }
        if let Some(mut e) = self.etcd.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
        if std::env::var_os("WALGUARD_KEEP_CLUSTER").is_none() {
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}

/// A command run as the OS user postgres (setpriv execs: the pid is the program's).
fn postgres_user(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(program)
        .stdin(Stdio::null());
    cmd
}

fn chown(path: &Path) -> Result<()> {
    let ok = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()?
        .success();
    if !ok {
        bail!("chown {}", path.display());
    }
    Ok(())
}

/// Whether the test can run here, or why not.
fn available() -> Result<bool> {
    let missing: Vec<&str> = ["/usr/bin/patroni", "/usr/bin/etcd", "/usr/bin/patronictl"]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .chain((!Path::new(BINDIR).join("pg_rewind").exists()).then_some("postgresql-15"))
        .collect();
    let root = Command::new("id")
        .arg("-u")
        .output()?
        .stdout
        .starts_with(b"0\n");
    if missing.is_empty() && root {
        return Ok(true);
    }
    let why = format!(
        "Patroni test skipped: needs root and {missing:?} (apt-get install patroni etcd-server)"
    );
    if std::env::var_os("WALGUARD_REQUIRE_PATRONI").is_some() {
        bail!("{why}");
    }
    eprintln!("{why}");
    Ok(false)
}

impl Estate {
    fn start() -> Result<Estate> {
        let base = make_base_dir()?;
        let archive = base.join("archive");
        fs::create_dir(&archive)?;
        let walguard = base.join("walguard");
        fs::copy(WALGUARD, &walguard)?;
        fs::set_permissions(&walguard, fs::Permissions::from_mode(0o755))?;
        let list = base.join("slaves.list");
        fs::write(&list, "app:n1\napp:n2\napp:n3\n")?;
        let log = base.join("watchdog.log");
        let walguard_config = base.join("walguard.toml");
        // One config for every node; no conninfo: each asks the server it runs in.
        fs::write(
            &walguard_config,
            format!(
                "archive_dir = \"{}\"\nreplicas = \"{}\"\nlog_file = \"{}\"\ntimeout = \"10s\"\n",
                archive.display(),
                list.display(),
                log.display()
            ),
        )?;
        let (client, peer) = (free_port()?, free_port()?);
        let etcd_dir = base.join("etcd");
        fs::create_dir(&etcd_dir)?;
        let etcd = Command::new("etcd")
            .args(["--name", "e1", "--data-dir"])
            .arg(&etcd_dir)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("e1=http://127.0.0.1:{peer}"),
            ])
            .stdout(fs::File::create(base.join("etcd.log"))?)
            .stderr(Stdio::inherit())
            .stderr(fs::File::create(base.join("etcd.err"))?)
            .spawn()
            .context("starting etcd")?;
        let mut estate = Estate {
            base: base.clone(),
            etcd: Some(etcd),
            members: Vec::new(),
            archive,
            log,
            walguard_config: walguard_config.clone(),
        };
        wait_for("etcd", Duration::from_secs(30), || {
            Ok(std::net::TcpStream::connect(("127.0.0.1", client))
                .is_ok()
                .then_some(()))
        })?;
        for n in 1..=3 {
            let name = format!("n{n}");
            let (port, rest) = (free_port()?, free_port()?);
            let data = base.join(&name);
            let config = base.join(format!("{name}.yml"));
            fs::write(
                &config,
                format!(
                    r#"scope: wgtest
name: {name}
restapi:
  listen: 127.0.0.1:{rest}
  connect_address: 127.0.0.1:{rest}
etcd3:
  hosts: 127.0.0.1:{client}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1073741824
    postgresql:
      use_pg_rewind: true
      parameters:
        archive_mode: always
        archive_command: '{walguard} --config {walguard_config} archive %p %f'
        wal_level: replica
        wal_log_hints: 'on'
        max_wal_senders: 10
        wal_keep_size: 0
        wal_receiver_status_interval: 1s
        checkpoint_timeout: 1h
        fsync: 'off'
        shared_buffers: 16MB
  initdb:
  - encoding: UTF8
  pg_hba:
  - local all all trust
  - host replication postgres 127.0.0.1/32 trust
  - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{port}
  connect_address: 127.0.0.1:{port}
  data_dir: {data}
  bin_dir: {BINDIR}
  pgpass: {base}/pgpass-{name}
  authentication:
    replication:
      username: postgres
    superuser:
      username: postgres
    rewind:
      username: postgres
  parameters:
    unix_socket_directories: '{base}'
"#,
                    walguard = walguard.display(),
                    walguard_config = walguard_config.display(),
                    data = data.display(),
                    base = base.display(),
                ),
            )?;
            estate.members.push(Member {
                log: base.join(format!("{name}.log")),
                name,
                config,
                data,
                port,
                patroni: None,
            });
        }
        chown(&base)?;
        // The first member bootstraps the cluster; then the others clone it.
        estate.run(0)?;
        estate.wait_role(0, "f")?;
        estate.run(1)?;
        estate.run(2)?;
        estate.wait_streaming(0, &["n2", "n3"])?;
        Ok(estate)
    }

    /// Starts member `i`'s Patroni as postgres, with `WALGUARD_SELF` naming its line: the
    /// files stay identical, the environment says which node this is.
    fn run(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)?;
        let child = postgres_user(Path::new("/usr/bin/patroni"))
            .arg(&m.config)
            .env("WALGUARD_SELF", format!("app:{}", m.name))
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.base)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting patroni")?;
        m.patroni = Some(child);
        Ok(())
    }

    fn query(&self, i: usize, sql: &str) -> Result<Option<String>> {
        let m = &self.members[i];
        let mut client = postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=3",
                m.port
            ),
            postgres::NoTls,
        )?;
        let rows = client.simple_query(sql)?;
        Ok(rows
            .iter()
            .find_map(|r| match r {
                postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
                _ => None,
            })
            .flatten())
    }

    /// Waits until member `i` answers `pg_is_in_recovery()` with `want` (`f`: primary).
    fn wait_role(&self, i: usize, want: &str) -> Result<()> {
        wait_for(
            &format!(
                "{} to answer pg_is_in_recovery = {want}",
                self.members[i].name
            ),
            FAILOVER,
            || {
                Ok((self
                    .query(i, "SELECT pg_is_in_recovery()")
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some(want))
                .then_some(()))
            },
        )
        .with_context(|| self.tail(i))
    }

    fn wait_streaming(&self, leader: usize, names: &[&str]) -> Result<()> {
        let list = names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(",");
        wait_for(
            &format!("{names:?} streaming from {}", self.members[leader].name),
            FAILOVER,
            || {
                let n = self
                    .query(
                        leader,
                        &format!(
                            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' \
                             AND replay_lsn IS NOT NULL AND application_name IN ({list})"
                        ),
                    )
                    .ok()
                    .flatten();
                Ok((n.as_deref() == Some(&names.len().to_string())).then_some(()))
            },
        )
        .with_context(|| self.tail(leader))
    }

    /// The member that is primary now.
    fn leader(&self) -> Result<usize> {
        wait_for("a leader", FAILOVER, || {
            Ok((0..self.members.len()).find(|&i| {
                self.query(i, "SELECT pg_is_in_recovery()")
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some("f")
            }))
        })
    }

    /// Some WAL on the leader, then a switch; the finished segment's name.
    fn switch(&self, leader: usize) -> Result<String> {
        self.query(
            leader,
            "CREATE TABLE IF NOT EXISTS marks (n int); INSERT INTO marks VALUES (1)",
        )?;
        self.query(leader, "SELECT pg_walfile_name(pg_switch_wal())")?
            .context("pg_switch_wal returned nothing")
    }

    /// Waits until `name` is in the archive (archived, or archived ahead).
    fn wait_in_archive(&self, name: &str) -> Result<()> {
        wait_for(&format!("{name} in the archive"), FAILOVER, || {
            Ok(self.archive.join(name).exists().then_some(()))
        })
        .with_context(|| fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn tail(&self, i: usize) -> String {
        let text = fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kills member `i` the way a crashed host dies: Patroni and its postgres, at once.
    fn kill(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        if let Some(mut p) = m.patroni.take() {
            p.kill()?;
            p.wait()?;
        }
        postgres_user(&Path::new(BINDIR).join("pg_ctl"))
            .arg("-D")
            .arg(&m.data)
            .args(["-m", "immediate", "stop"])
            .output()?;
        Ok(())
    }

    /// Stops member `i` cleanly (Patroni stops its postgres).
    fn stop(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        if let Some(mut p) = m.patroni.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
            p.wait()?;
        }
        Ok(())
    }

    fn walguard(&self, i: usize, args: &[&str]) -> std::process::Output {
        let mut cmd = postgres_user(&self.base.join("walguard"));
        cmd.current_dir(&self.members[i].data)
            .env("WALGUARD_SELF", format!("app:{}", self.members[i].name))
            .arg("--config")
            .arg(&self.walguard_config)
            .args(args);
        cmd.output().expect("running walguard")
    }
}

#[test]
fn patroni_failover_and_switchover_leave_no_gap() -> Result<()> {
    if !available()? {
        return Ok(());
    }
    let mut e = Estate::start()?;
    let first = e.leader()?;
    assert_eq!(first, 0);
    // Healthy: the leader archives (its own line skipped: replicas=2/2, n2 and n3).
    let mut last = String::new();
    for _ in 0..2 {
        last = e.switch(first)?;
    }
    e.wait_in_archive(&last)?;
    let line = wait_for("the leader's release", FAILOVER, || {
        Ok(fs::read_to_string(&e.log)?
            .lines()
            .find(|l| l.contains(&format!("wal={last} decision=")) && l.contains("replicas=2/2"))
            .map(str::to_string))
    })?;
    assert!(
        !line.contains("app:n1"),
        "the leader held for itself: {line}"
    );
    let check = e.walguard(first, &["check", &last]);
    assert!(
        output_text(&check).contains("this server is app:n1 (self = app:n1)"),
        "{}",
        output_text(&check)
    );

    // Failover: the leader dies. Another takes over; what it writes reaches the archive
    // (ahead of the acknowledgement, as the old leader is not there to replay it).
    e.kill(first)?;
    let second = wait_for("a new leader", FAILOVER, || {
        Ok((1..3).find(|&i| {
            e.query(i, "SELECT pg_is_in_recovery()")
                .ok()
                .flatten()
                .as_deref()
                == Some("f")
        }))
    })?;
    let after_failover = e.switch(second)?;
    assert!(after_failover.starts_with("00000002"), "{after_failover}");
    e.wait_in_archive(&after_failover)?;
    // The old leader rejoins (Patroni rewinds it if needed) and streams.
    e.run(first)?;
    let others: Vec<String> = (0..3)
        .filter(|&i| i != second)
        .map(|i| e.members[i].name.clone())
        .collect();
    let names: Vec<&str> = others.iter().map(String::as_str).collect();
    e.wait_streaming(second, &names)?;

    // Switchover to the third member.
    let third = (0..3).find(|&i| i != first && i != second).unwrap_or(0);
    let switched = Command::new("patronictl")
        .arg("-c")
        .arg(&e.members[second].config)
        .args([
            "switchover",
            "--leader",
            &e.members[second].name,
            "--candidate",
            &e.members[third].name,
            "--force",
            "wgtest",
        ])
        .output()?;
    assert!(switched.status.success(), "{}", output_text(&switched));
    e.wait_role(third, "f")?;
    let others: Vec<String> = (0..3)
        .filter(|&i| i != third)
        .map(|i| e.members[i].name.clone())
        .collect();
    let names: Vec<&str> = others.iter().map(String::as_str).collect();
    e.wait_streaming(third, &names)?;
    let after_switchover = e.switch(third)?;
    assert!(
        after_switchover.starts_with("00000003"),
        "{after_switchover}"
    );
    e.wait_in_archive(&after_switchover)?;

    // A replica stops for a while and rejoins by streaming.
    let away = first;
    e.stop(away)?;
    for _ in 0..3 {
        last = e.switch(third)?;
    }
    e.wait_in_archive(&last)?;
    e.run(away)?;
    e.wait_streaming(third, &names)?;
    last = e.switch(third)?;
    e.wait_in_archive(&last)?;

    // No gap on any timeline, no member rebuilt.
    let verify = e.walguard(third, &["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", output_text(&verify));
    for i in 0..3 {
        let log = e.tail(i) + &fs::read_to_string(&e.members[i].log).unwrap_or_default();
        assert!(
            !log.contains("has already been removed"),
            "{}",
            e.members[i].name
        );
    }
    Ok(())
}

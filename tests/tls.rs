//! conninfo the way libpq reads it, against a real server that only takes TLS on TCP:
//! a certificate made here, `sslmode=verify-full` with `sslrootcert`, what verify-ca and
//! require accept and what they refuse, a service file, a passfile with a password role,
//! and the very `primary_conninfo` that `pg_basebackup -R` writes.

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use anyhow::Result;
use cluster::{ARCHIVE_WAIT, Cluster, Options, output_text};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

/// A CA, and a server certificate it signed for `localhost` only.
fn certificates() -> Result<(String, String, String)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "walguard test CA");
    let ca = ca.self_signed(&ca_key)?;
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_string()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server.signed_by(&server_key, &ca, &ca_key)?;
    Ok((ca.pem(), server.pem(), server_key.serialize_pem()))
}

fn write_private(c: &Cluster, path: &Path, text: &str) -> Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    c.chown(path)?;
    Ok(())
}

#[test]
fn tls_service_files_passfiles_and_what_pg_basebackup_writes() -> Result<()> {
    let c = Cluster::start(
        WALGUARD.as_ref(),
        Options {
            replicas: 1,
            ..Options::default()
        },
    )?;
    let seg = c.switch_wal()?;
    c.wait_archived(&seg, ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1"])?;
    let (ca, cert, key) = certificates()?;
    write_private(&c, &c.primary.data.join("server.crt"), &cert)?;
    write_private(&c, &c.primary.data.join("server.key"), &key)?;
    let ca_file = c.base.join("ca.crt");
    fs::write(&ca_file, &ca)?;
    let (other_ca, _, _) = certificates()?;
    let other_ca_file = c.base.join("other-ca.crt");
    fs::write(&other_ca_file, &other_ca)?;
    // TCP only with TLS; the password role only with scram.
    let hba = c.primary.data.join("pg_hba.conf");
    let old = fs::read_to_string(&hba)?;
    fs::write(
        &hba,
        format!(
            "hostnossl all all 127.0.0.1/32 reject\nhostssl all pwuser 127.0.0.1/32 scram-sha-256\n{old}"
        ),
    )?;
    c.configure(
        &c.primary,
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'",
    )?;
    c.query("CREATE ROLE pwuser LOGIN PASSWORD 'hunter2'; GRANT pg_monitor TO pwuser")?;

    let port = c.primary.port;
    let check = |conninfo: &str, env: &[(&str, &str)]| -> Output {
        c.as_server_user(&c.walguard)
            .arg("--config")
            .arg(&c.config)
            .args(["--conninfo", conninfo, "check", &seg])
            .envs(env.iter().copied())
            .env_remove("PGPASSWORD")
            .output()
            .expect("running walguard")
    };
    let verify_full = format!(
        "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        ca_file.display()
    );
    let ok = check(&verify_full, &[]);
    assert_eq!(ok.status.code(), Some(0), "{}", output_text(&ok));

    // (conninfo, exit, what the output must say)
    let cases = [
        (
            format!("host=localhost port={port} user=postgres dbname=postgres sslmode=disable"),
            2,
            "pg_hba.conf rejects connection",
        ),
        (
            format!(
                "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
                other_ca_file.display()
            ),
            2,
            "invalid peer certificate",
        ),
        (
            format!(
                "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
                ca_file.display()
            ),
            2,
            "certificate not valid for name \"127.0.0.1\"",
        ),
        (
            format!(
                "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-ca sslrootcert={}",
                ca_file.display()
            ),
            0,
            "verdict: ARCHIVE",
        ),
        (
            format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require"),
            0,
            "verdict: ARCHIVE",
        ),
        (
            format!(
                "postgresql://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
                ca_file.display()
            ),
            0,
            "verdict: ARCHIVE",
        ),
    ];
    for (conninfo, exit, says) in &cases {
        let out = check(conninfo, &[]);
        assert_eq!(
            out.status.code(),
            Some(*exit),
            "{conninfo}: {}",
            output_text(&out)
        );
        assert!(
            output_text(&out).contains(says),
            "{conninfo}: wanted {says:?} in {}",
            output_text(&out)
        );
    }

    // A service file, as PGSERVICEFILE names it.
    let services = c.base.join("pg_service.conf");
    fs::write(
        &services,
        format!(
            "[walguard]\nhost=localhost\nport={port}\nuser=postgres\ndbname=postgres\nsslmode=verify-full\nsslrootcert={}\n",
            ca_file.display()
        ),
    )?;
    let out = check(
        "service=walguard",
        &[("PGSERVICEFILE", services.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    // A password role: the passfile in the conninfo, and without it a refusal.
    let passfile = c.base.join("walguard.pgpass");
    write_private(
        &c,
        &passfile,
        &format!("localhost:{port}:*:pwuser:hunter2\n"),
    )?;
    let as_pwuser = format!(
        "host=localhost port={port} user=pwuser dbname=postgres sslmode=verify-full sslrootcert={}",
        ca_file.display()
    );
    let out = check(&format!("{as_pwuser} passfile={}", passfile.display()), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let out = check(&as_pwuser, &[("HOME", "/nonexistent")]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(!output_text(&out).contains("hunter2"));

    // What pg_basebackup -R writes, pasted as it is (its notes say what is ignored).
    let copy = c.base.join("basebackup");
    let out = c
        .as_server_user(&c.bindir.join("pg_basebackup"))
        .args([
            "-D",
            copy.to_str().unwrap(),
            "-R",
            "-X",
            "none",
            "-c",
            "fast",
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
        ])
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca_file)
        .output()?;
    assert!(out.status.success(), "{}", output_text(&out));
    let auto = fs::read_to_string(copy.join("postgresql.auto.conf"))?;
    let line = auto
        .lines()
        .find(|l| l.starts_with("primary_conninfo"))
        .unwrap();
    let written = line
        .split_once(" = '")
        .unwrap()
        .1
        .trim_end_matches('\'')
        .replace("''", "'");
    let out = check(&format!("{written} dbname=postgres"), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{written}: {}",
        output_text(&out)
    );
    assert!(
        output_text(&out).contains("note: conninfo: "),
        "{}",
        output_text(&out)
    );
    Ok(())
}

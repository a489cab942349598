//! The real binary against bad input, in a temporary directory, with no server: every
//! mistake is exit 2, a message that says what to fix, and nothing written.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");
const SEG: &str = "000000010000000000000003";

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A config naming an archive dir, a list, and a server that is not there (port 1).
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::create_dir(p.join("archive")).unwrap();
        fs::create_dir(p.join("pg_wal")).unwrap();
        fs::write(p.join("pg_wal").join(SEG), vec![7u8; 16 << 20]).unwrap();
        fs::write(
            p.join("pg_wal/00000002.history"),
            "1\t0/3000000\tno recovery target specified\n",
        )
        .unwrap();
        fs::write(p.join("slaves.list"), "app:r1\n").unwrap();
        fs::write(
            p.join("walguard.toml"),
            format!(
                "archive_dir = \"{0}/archive\"\nreplicas = \"{0}/slaves.list\"\nlog_file = \"{0}/watchdog.log\"\n\
                 conninfo = \"host=127.0.0.1 port=1 user=nobody password=s3cret connect_timeout=2\"\ntimeout = \"5s\"\n",
                p.display()
            ),
        )
        .unwrap();
        Sandbox { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(WALGUARD)
            .args(args)
            .current_dir(self.path())
            .env("WALGUARD_CONFIG", self.path().join("walguard.toml"))
            .env_remove("PGPASSWORD")
            .output()
            .unwrap()
    }

    fn archived(&self) -> Vec<PathBuf> {
        fs::read_dir(self.path().join("archive"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.ends_with(".walguard-tmp"))
            .collect()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path().join("watchdog.log")).unwrap_or_default()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2, a message containing `needle`, nothing archived, no password anywhere.
fn assert_refused(s: &Sandbox, out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "wanted {needle:?} in: {err}");
    assert!(s.archived().is_empty(), "wrote {:?}", s.archived());
    assert!(
        !err.contains("s3cret") && !s.log().contains("s3cret"),
        "password leaked"
    );
}

#[test]
fn malformed_and_path_like_names_are_refused() {
    let s = Sandbox::new();
    for name in [
        "../000000010000000000000003",
        "000000010000000000000003/../../x",
        "/etc/passwd",
        "00000001000000000000000a",
        "0000000100000000000000031",
        "",
        "000000010000000000000003.partial.backup",
        "00000002.HISTORY",
    ] {
        let out = s.run(&["archive", &format!("pg_wal/{SEG}"), name]);
        assert_refused(&s, &out, "is not a WAL file name");
        let out = s.run(&["check", name]);
        assert_refused(&s, &out, "is not a WAL file name");
    }
    assert!(
        s.log().lines().all(|l| l.contains("decision=error")),
        "{}",
        s.log()
    );
}

#[test]
fn missing_wal_path_is_refused() {
    let s = Sandbox::new();
    let out = s.run(&[
        "archive",
        "pg_wal/000000010000000000000009",
        "000000010000000000000009",
    ]);
    assert_refused(
        &s,
        &out,
        "cannot read WAL_PATH pg_wal/000000010000000000000009",
    );
}

#[test]
fn unreachable_database_is_exit_2_without_the_password() {
    let s = Sandbox::new();
    let out = s.run(&["archive", &format!("pg_wal/{SEG}"), SEG]);
    assert_refused(
        &s,
        &out,
        "cannot connect to the primary (host=127.0.0.1 port=1 user=nobody dbname=nobody)",
    );
    assert!(
        s.log().contains("level=error") && s.log().contains("decision=error"),
        "{}",
        s.log()
    );
    let out = s.run(&["check", SEG]);
    assert_refused(&s, &out, "cannot connect to the primary");
}

#[test]
fn history_files_are_archived_at_once_without_asking_the_server() {
    let s = Sandbox::new();
    let name = "00000002.history";
    let out = s.run(&["archive", &format!("pg_wal/{name}"), name]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read(s.path().join("archive").join(name)).unwrap(),
        fs::read(s.path().join("pg_wal").join(name)).unwrap()
    );
    assert!(
        s.log().contains(&format!("wal={name} decision=archived")),
        "{}",
        s.log()
    );
    let out = s.run(&["check", name]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn broken_list_lines_name_file_and_line() {
    let s = Sandbox::new();
    fs::write(
        s.path().join("slaves.list"),
        "app:r1\n\n10.0.0.1 10.0.0.2\n",
    )
    .unwrap();
    let out = s.run(&["archive", &format!("pg_wal/{SEG}"), SEG]);
    assert_refused(&s, &out, &format!("{}/slaves.list:3: ", s.path().display()));
    fs::remove_file(s.path().join("slaves.list")).unwrap();
    let out = s.run(&["check", SEG]);
    assert_refused(&s, &out, "cannot read the replicas list");
}

#[test]
fn bad_config_values_are_refused() {
    let s = Sandbox::new();
    let cases: [(&[&str], &str); 6] = [
        (&["--timeout", "soon"], "not a duration"),
        (&["--position", "sent"], "invalid value 'sent'"),
        (&["--keep-segments=-1"], "--keep-segments"),
        (&["--resolve", "maybe"], "invalid value 'maybe'"),
        (
            &["--conninfo", "host='unterminated"],
            "conninfo is not a valid",
        ),
        (
            &["--config", "/nonexistent/walguard.toml"],
            "cannot read the config file /nonexistent/walguard.toml",
        ),
    ];
    for (flags, needle) in cases {
        let mut args = flags.to_vec();
        args.extend(["archive", "pg_wal/000000010000000000000003", SEG]);
        let out = s.run(&args);
        assert_refused(&s, &out, needle);
    }
    fs::write(
        s.path().join("walguard.toml"),
        "replicas = \"x\"\nunlisted = \"warn\"\n",
    )
    .unwrap();
    let out = s.run(&["check", SEG]);
    assert_refused(&s, &out, "unlisted");
    fs::write(s.path().join("walguard.toml"), "replicas = \"x\"\n").unwrap();
    let out = s.run(&["archive", "pg_wal/000000010000000000000003", SEG]);
    assert_refused(&s, &out, "no archive directory");
}

#[test]
fn settings_come_from_flags_env_and_file_in_that_order() {
    let s = Sandbox::new();
    // --config after the subcommand works too; the environment's replicas list beats the file's.
    let out = Command::new(WALGUARD)
        .args(["check", "00000002.history", "--config"])
        .arg(s.path().join("walguard.toml"))
        .env("WALGUARD_REPLICAS", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "history files need no list: {}",
        stderr(&out)
    );
    let out = Command::new(WALGUARD)
        .args(["check", SEG, "--config"])
        .arg(s.path().join("walguard.toml"))
        .env("WALGUARD_REPLICAS", "/nonexistent")
        .output()
        .unwrap();
    assert_refused(&s, &out, "cannot read the replicas list /nonexistent");
    let out = Command::new(WALGUARD)
        .args(["check", SEG, "--replicas", "/from-flag", "--config"])
        .arg(s.path().join("walguard.toml"))
        .env("WALGUARD_REPLICAS", "/nonexistent")
        .output()
        .unwrap();
    assert_refused(&s, &out, "cannot read the replicas list /from-flag");
}

#[test]
fn help_and_version() {
    let out = Command::new(WALGUARD).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "archive",
        "check",
        "--archive-dir",
        "WALGUARD_REPLICAS",
        "archive_command",
    ] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
    let out = Command::new(WALGUARD)
        .args(["archive", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("archive_command = 'walguard --config"));
    let out = Command::new(WALGUARD).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = Command::new(WALGUARD).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

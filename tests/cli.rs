//! The real binary against bad input, in a temporary directory, with no server: every
//! mistake is exit 2, a message that says what to fix, and nothing written.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");
const SEG: &str = "000000010000000000000003";

/// 16 MiB whose first page says what segment `seg` of timeline 1 must say (PostgreSQL
/// 15's magic, no system identifier to compare: the sandbox has no pg_control).
fn segment_bytes(seg: u64) -> Vec<u8> {
    let mut b = vec![7u8; 16 << 20];
    b[0..2].copy_from_slice(&0xD110u16.to_ne_bytes());
    b[2..4].copy_from_slice(&2u16.to_ne_bytes());
    b[4..8].copy_from_slice(&1u32.to_ne_bytes());
    b[8..16].copy_from_slice(&(seg << 24).to_ne_bytes());
    b[32..36].copy_from_slice(&(16u32 << 20).to_ne_bytes());
    b
}

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
        fs::write(p.join("pg_wal").join(SEG), segment_bytes(3)).unwrap();
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
    // One error line per refused archive (check writes none), and nothing else.
    let log = s.log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 8, "{}", s.log());
    assert!(
        lines
            .iter()
            .all(|l| l.contains("decision=error") && l.contains("is not a WAL file name")),
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
            "conninfo: the value of \"host\" has no closing quote",
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

/// A listener that accepts connections and never answers: a hung database.
fn hung_database() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    port
}

/// A pipe whose reader is gone: every write to it fails with EPIPE.
fn closed_pipe() -> std::os::fd::OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills both descriptors; each is owned by exactly one OwnedFd below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (reader, writer) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(reader);
    writer
}

/// Runs walguard with stderr a closed pipe; its exit status, or a panic after 30 s.
fn run_with_closed_stderr(s: &Sandbox, args: &[&str]) -> std::process::ExitStatus {
    // No world-readable password warning: the first write to stderr is the one tested.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        s.path().join("walguard.toml"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut child = Command::new(WALGUARD)
        .args(args)
        .current_dir(s.path())
        .env("WALGUARD_CONFIG", s.path().join("walguard.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(closed_pipe()))
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("walguard did not exit 30 s after a 2 s timeout: {args:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_timeout_is_hard_with_a_hung_database_and_a_closed_stderr() {
    let s = Sandbox::new();
    let port = hung_database();
    // The server accepts and never answers: the query is abandoned at half the budget.
    let conninfo = format!("host=127.0.0.1 port={port} user=x connect_timeout=60");
    let status = run_with_closed_stderr(
        &s,
        &[
            "--timeout",
            "2s",
            "--conninfo",
            &conninfo,
            "archive",
            &format!("pg_wal/{SEG}"),
            SEG,
        ],
    );
    assert_eq!(status.code(), Some(2), "{status:?}");
    assert!(s.log().contains("did not answer within 1s"), "{}", s.log());
    // Something that no deadline of its own covers (a copy from a FIFO nobody writes):
    // the watchdog ends it, and its own writes to the closed stderr cannot stop it.
    let fifo = s.path().join("pg_wal/00000003.history");
    let made = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(made.as_ptr(), 0o600) }, 0);
    let status = run_with_closed_stderr(
        &s,
        &[
            "--timeout",
            "2s",
            "archive",
            "pg_wal/00000003.history",
            "00000003.history",
        ],
    );
    assert_eq!(status.code(), Some(2), "{status:?}");
    assert!(
        s.log()
            .contains("decision=error reason=\"timed out after 2s; nothing was archived\""),
        "{}",
        s.log()
    );
    assert!(s.archived().is_empty());
}

#[test]
fn a_symlinked_temp_area_is_refused_and_its_target_untouched() {
    let s = Sandbox::new();
    let victim = s.path().join("victim");
    fs::create_dir(&victim).unwrap();
    for name in [SEG, "README"] {
        fs::write(victim.join(name), "keep me").unwrap();
    }
    std::os::unix::fs::symlink(&victim, s.path().join("archive/.walguard-tmp")).unwrap();
    let out = s.run(&["archive", "pg_wal/00000002.history", "00000002.history"]);
    assert_refused(&s, &out, ".walguard-tmp is not a real directory");
    for name in [SEG, "README"] {
        assert_eq!(
            fs::read_to_string(victim.join(name)).unwrap(),
            "keep me",
            "{name} was touched"
        );
    }
    // A real temp area: a file walguard never creates stays, whatever its name.
    fs::remove_file(s.path().join("archive/.walguard-tmp")).unwrap();
    let out = s.run(&["archive", "pg_wal/00000002.history", "00000002.history"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tmp = s.path().join("archive/.walguard-tmp");
    fs::write(tmp.join(SEG), "not ours").unwrap();
    fs::write(
        tmp.join(format!("{SEG}.1")),
        "the old pattern: not ours either",
    )
    .unwrap();
    fs::remove_file(s.path().join("archive/00000002.history")).unwrap();
    let out = s.run(&["archive", "pg_wal/00000002.history", "00000002.history"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(tmp.join(SEG).exists() && tmp.join(format!("{SEG}.1")).exists());
}

#[test]
fn a_password_in_a_uri_gets_the_warning() {
    let s = Sandbox::new();
    let config = s.path().join("walguard.toml");
    fs::write(
        &config,
        format!(
            "archive_dir = \"{0}/archive\"\nreplicas = \"{0}/slaves.list\"\nconninfo = \"postgresql://mon:s3cret@127.0.0.1:1/db\"\n",
            s.path().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.run(&["check", "00000002.history"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds a password and every user can read it"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("s3cret"));
}

#[test]
fn a_segment_of_no_segment_size_is_called_truncated() {
    let s = Sandbox::new();
    fs::write(s.path().join("pg_wal").join(SEG), vec![7u8; 3 << 20]).unwrap();
    let out = s.run(&["archive", &format!("pg_wal/{SEG}"), SEG]);
    assert_refused(&s, &out, "has 3145728 bytes, which is no WAL segment size");
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("conninfo"), "{}", stderr(&out));
}

#[test]
fn min_free_still_protects_the_disk_when_the_database_is_unreachable() {
    let s = Sandbox::new();
    // port 1 refuses: walguard cannot decide. pg_wal's file system is "full" by min_free.
    let out = s.run(&[
        "--min-free",
        "100%",
        "archive",
        &format!("pg_wal/{SEG}"),
        SEG,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read(s.path().join("archive").join(SEG)).unwrap().len(),
        16 << 20
    );
    let line = s.log();
    assert!(
        line.contains("decision=valve valve=min_free")
            && line.contains("walguard could not decide: cannot connect to the primary"),
        "{line}"
    );
    assert!(!line.contains("s3cret"));
    // Without the valve, the same failure keeps the segment in pg_wal (exit 2).
    fs::remove_file(s.path().join("archive").join(SEG)).unwrap();
    let out = s.run(&["--min-free", "0", "archive", &format!("pg_wal/{SEG}"), SEG]);
    assert_refused(&s, &out, "cannot connect to the primary");
}

#[test]
fn config_errors_keep_their_caret_and_paths_get_the_name_hint() {
    let s = Sandbox::new();
    fs::write(s.path().join("bad.toml"), "replicas = \"x\"\ntimeout = \n").unwrap();
    let out = s.run(&[
        "--config",
        s.path().join("bad.toml").to_str().unwrap(),
        "check",
        SEG,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("\n  |\n") && err.contains("^"),
        "the caret has its own line: {err}"
    );
    let out = s.run(&["check", &format!("pg_wal/{SEG}")]);
    assert_refused(
        &s,
        &out,
        &format!("pass the file name only: walguard check {SEG}"),
    );
}

#[test]
fn each_subcommand_help_shows_the_settings_it_reads() {
    let help = |sub: &str| {
        let out = Command::new(WALGUARD)
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let log = help("log");
    assert!(
        log.contains("--log-file") && !log.contains("--archive-dir") && !log.contains("--min-free"),
        "{log}"
    );
    let check = help("check");
    assert!(
        check.contains("--replicas")
            && !check.contains("--metrics-file")
            && !check.contains("--on-event"),
        "{check}"
    );
    let archive = help("archive");
    assert!(
        archive.contains("--archive-dir") && archive.contains("--on-event"),
        "{archive}"
    );
    // Hidden is not refused: one environment serves every command.
    let out = Command::new(WALGUARD)
        .args(["log", "--min-free", "5%", "/nonexistent.log"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("cannot read the decision log /nonexistent.log"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_manual_page_documents_settings_and_references_nothing_missing() {
    let out = Command::new(WALGUARD).arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8_lossy(&out.stdout);
    for section in [
        ".SH COMMANDS",
        ".SH SETTINGS",
        ".SH REPLICAS LIST",
        ".SH EXIT STATUS",
        ".SH ENVIRONMENT",
        ".SH FILES",
    ] {
        assert!(page.contains(section), "no {section}");
    }
    assert!(page.contains("WALGUARD_MIN_FREE") && page.contains("min_free"));
    assert!(
        !page.contains("walguard\\-archive(1)") && !page.contains("walguard-archive(1)"),
        "a reference to a page that does not exist"
    );
}

#[test]
fn the_header_is_checked_before_a_segment_leaves_pg_wal() {
    let s = Sandbox::new();
    // A valve releases it (the database is unreachable), but the header still decides.
    let valve = [
        "--min-free",
        "100%",
        "archive",
        "pg_wal/000000010000000000000003",
        SEG,
    ];
    let out = s.run(&valve);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    fs::remove_file(s.path().join("archive").join(SEG)).unwrap();
    // The same file under another segment's name: its page address gives it away.
    let other = "000000010000000000000009";
    fs::copy(
        s.path().join("pg_wal").join(SEG),
        s.path().join("pg_wal").join(other),
    )
    .unwrap();
    let out = s.run(&[
        "--min-free",
        "100%",
        "archive",
        &format!("pg_wal/{other}"),
        other,
    ]);
    assert_refused(
        &s,
        &out,
        "WAL header field xlp_pageaddr: expected 0/9000000, found 0/3000000",
    );
    // A zeroed (recycled) file.
    fs::write(s.path().join("pg_wal").join(SEG), vec![0u8; 16 << 20]).unwrap();
    let out = s.run(&valve);
    assert_refused(&s, &out, "WAL header field xlp_magic");
    assert!(
        s.log().lines().last().unwrap().contains("xlp_magic"),
        "{}",
        s.log()
    );
    // header_check = false lets it through (for those who must).
    let out = s.run(&[
        "--header-check",
        "false",
        "--min-free",
        "100%",
        "archive",
        &format!("pg_wal/{SEG}"),
        SEG,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn archive_via_hands_over_and_reports_failures_and_hangs() {
    let s = Sandbox::new();
    let history = "00000002.history";
    let wal_path = format!("pg_wal/{history}");
    let dest = s.path().join("elsewhere");
    fs::create_dir(&dest).unwrap();
    // A history file needs no decision: the hand-off runs at once, with %p and %f quoted.
    let via = format!("cp %p {}/%f.copied", dest.display());
    let out = s.run(&["--archive-via", &via, "archive", &wal_path, history]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read(dest.join(format!("{history}.copied"))).unwrap(),
        fs::read(s.path().join(&wal_path)).unwrap()
    );
    assert!(
        s.archived().is_empty(),
        "archive_dir is not written when archive_via is set"
    );
    let line = s.log().lines().last().unwrap().to_string();
    assert!(
        line.contains("decision=archived") && line.contains(" via=cp "),
        "{line}"
    );

    // It fails: exit 2, its status and last stderr line in the log.
    let out = s.run(&[
        "--archive-via",
        "echo progress %p >&2; echo 'stanza main does not exist' >&2; exit 42",
        "archive",
        &wal_path,
        history,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = s.log().lines().last().unwrap().to_string();
    assert!(
        line.contains("decision=error")
            && line.contains("exit status 42: stanza main does not exist")
            && line.contains(" via=echo "),
        "{line}"
    );
    // It is not found, or dies by a signal: still exit 2, never above.
    for (via, says) in [
        ("/nonexistent/archiver %p", "exit status 127"),
        ("kill -KILL $$ # %p", "killed by signal 9"),
    ] {
        let out = s.run(&["--archive-via", via, "archive", &wal_path, history]);
        assert_eq!(out.status.code(), Some(2), "{via}: {}", stderr(&out));
        assert!(
            s.log().lines().last().unwrap().contains(says),
            "{}",
            s.log()
        );
    }
    // It hangs: killed with its whole process group at the timeout.
    let marker = s.path().join("grandchild-alive");
    let hang = format!("(sleep 5; touch {}) & sleep 60 # %f", marker.display());
    let started = std::time::Instant::now();
    let out = s.run(&[
        "--timeout",
        "3s",
        "--archive-via",
        &hang,
        "archive",
        &wal_path,
        history,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The hand-off gets what is left of the timeout, less a second for the log line.
    assert!(
        s.log().lines().last().unwrap().contains("killed after 1s"),
        "{}",
        s.log()
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(!marker.exists(), "a grandchild of the hand-off survived");
}

#[test]
fn archive_via_values_read_back_as_themselves_in_every_quoting() {
    let s = Sandbox::new();
    let history = "00000002.history";
    let wal_path = format!("pg_wal/{history}");
    let dest = s.path().join("bucket");
    fs::create_dir(&dest).unwrap();
    // The operator's own quotes around %f and %p: the file lands under its own name.
    let seen = s.path().join("env-seen");
    for (n, via) in [
        format!("cp %p \"{}/double-%f\"", dest.display()),
        format!("cp '%p' '{}/single-%f'", dest.display()),
        format!("cp %p {}/bare-%f", dest.display()),
    ]
    .iter()
    .enumerate()
    {
        let out = s.run(&["--archive-via", via, "archive", &wal_path, history]);
        assert_eq!(out.status.code(), Some(0), "{via}: {}", stderr(&out));
        let want = ["double", "single", "bare"][n];
        assert!(
            dest.join(format!("{want}-{history}")).exists(),
            "{via}: {:?}",
            fs::read_dir(&dest)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect::<Vec<_>>()
        );
    }
    // A template whose quote does not close is refused at start, naming it.
    let out = s.run(&[
        "--archive-via",
        "aws s3 cp %p 's3://b/wal/%f",
        "archive",
        &wal_path,
        history,
    ]);
    assert_refused(&s, &out, "archive_via: the command template");
    assert!(
        stderr(&out).contains("a quote is not closed"),
        "{}",
        stderr(&out)
    );
    // An inline secret never reaches the log's via=, and the hand-off gets the
    // operator's environment (a backup tool needs its PG* and credentials), but not
    // walguard's conninfo.
    let via = format!(
        "AWS_SECRET_ACCESS_KEY=topsecret sh -c 'echo \"$AWS_SECRET_ACCESS_KEY ${{PGPASSWORD-unset}} ${{WALGUARD_CONNINFO-unset}}\" > {}' %p",
        seen.display()
    );
    let out = Command::new(WALGUARD)
        .args(["--archive-via", &via, "archive", &wal_path, history])
        .current_dir(s.path())
        .env("WALGUARD_CONFIG", s.path().join("walguard.toml"))
        .env("PGPASSWORD", "for-the-backup-tool")
        .env(
            "WALGUARD_CONNINFO",
            "host=127.0.0.1 port=1 password=hunter3",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(&seen).unwrap(),
        "topsecret for-the-backup-tool unset\n"
    );
    let line = s.log().lines().last().unwrap().to_string();
    assert!(
        line.contains(" via=sh ") && !line.contains("topsecret"),
        "{line}"
    );
}

/// A failed restore reads as "not in the archive" to PostgreSQL (any status from 1 to
/// 125): in an archive recovery it must stop recovery instead (exit above 125), on a
/// standby it stays a loud exit 2 that PostgreSQL retries while it streams. Only a file
/// that is simply not there is a quiet exit 1, in every mode.
#[test]
fn restore_failures_stop_an_archive_recovery_and_are_retries_on_a_standby() {
    let s = Sandbox::new();
    let config = s.path().join("walguard.toml");
    fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    fs::write(s.path().join("broken.toml"), "compress_level = 99\n").unwrap();
    let archive = s.path().join("archive");
    // A damaged .zst, a FIFO that never delivers (a hung network file system).
    fs::write(
        archive.join(format!("{SEG}.zst")),
        b"\x28\xb5\x2f\xfd garbage",
    )
    .unwrap();
    let hung = "000000010000000000000004";
    let status = Command::new("mkfifo")
        .arg(archive.join(hung))
        .status()
        .unwrap();
    assert!(status.success());
    let restore = |args: &[&str]| {
        let mut all = vec!["--restore-timeout", "2s"];
        all.extend_from_slice(args);
        s.run(&all)
    };
    for (signal, code) in [("recovery.signal", 200), ("standby.signal", 2)] {
        let _ = fs::remove_file(s.path().join("recovery.signal"));
        let _ = fs::remove_file(s.path().join("standby.signal"));
        fs::write(s.path().join(signal), "").unwrap();
        // Not there at all: quiet, whatever the mode.
        let out = restore(&["restore", "00000009.history", "pg_wal/RECOVERYHISTORY"]);
        assert_eq!(out.status.code(), Some(1), "{signal}: {}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{}", stderr(&out));
        // Damaged, the archive directory missing (an unmounted NFS), hung past the
        // time bound, a broken config: loud, and never 1.
        let missing = s.path().join("unmounted");
        let cases: [(Vec<&str>, &str); 4] = [
            (
                vec!["restore", SEG, "pg_wal/RECOVERYXLOG"],
                "cannot be read (",
            ),
            (
                vec![
                    "--archive-dir",
                    missing.to_str().unwrap(),
                    "restore",
                    SEG,
                    "pg_wal/RECOVERYXLOG",
                ],
                "cannot reach the archive directory",
            ),
            (
                vec!["restore", hung, "pg_wal/RECOVERYXLOG"],
                "timed out after 2s",
            ),
            (
                vec![
                    "--config",
                    "broken.toml",
                    "restore",
                    SEG,
                    "pg_wal/RECOVERYXLOG",
                ],
                "compress_level 99",
            ),
        ];
        for (args, says) in cases {
            let out = restore(&args);
            assert_eq!(
                out.status.code(),
                Some(code),
                "{signal} {args:?}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains(says),
                "{signal} {args:?}: {}",
                stderr(&out)
            );
            assert!(!s.path().join("pg_wal/RECOVERYXLOG").exists());
        }
        // Interrupted (SIGINT, as a person's Ctrl-C or system()'s caller): the same.
        let mut child = Command::new(WALGUARD)
            .args(["restore", hung, "pg_wal/RECOVERYXLOG"])
            .current_dir(s.path())
            .env("WALGUARD_CONFIG", s.path().join("walguard.toml"))
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        // SAFETY: kill(2) on the child we started.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{signal}: SIGINT");
    }
    // Nothing of walguard's is left in pg_wal.
    let left: Vec<_> = fs::read_dir(s.path().join("pg_wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("walguard"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_hook_never_sees_walguards_secrets() {
    let s = Sandbox::new();
    let seen = s.path().join("seen");
    let hook = format!(
        "echo \"${{PGPASSWORD-unset}} ${{WALGUARD_CONNINFO-unset}} $WALGUARD_EVENT\" > {}",
        seen.display()
    );
    let out = Command::new(WALGUARD)
        .args([
            "--min-free",
            "100%",
            "--on-event",
            &hook,
            "archive",
            &format!("pg_wal/{SEG}"),
            SEG,
        ])
        .current_dir(s.path())
        .env("WALGUARD_CONFIG", s.path().join("walguard.toml"))
        .env("PGPASSWORD", "hunter2")
        .env(
            "WALGUARD_CONNINFO",
            "host=127.0.0.1 port=1 user=x password=hunter3 connect_timeout=2",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&seen).unwrap(), "unset unset valve\n");
}

#[test]
fn termination_signals_end_with_exit_2() {
    let s = Sandbox::new();
    let port = hung_database();
    for (signal, name) in [
        (libc::SIGTERM, "TERM"),
        (libc::SIGINT, "INT"),
        (libc::SIGHUP, "HUP"),
    ] {
        let mut child = Command::new(WALGUARD)
            .args([
                "--timeout",
                "30s",
                "--conninfo",
                &format!("host=127.0.0.1 port={port} user=x"),
            ])
            .args(["archive", &format!("pg_wal/{SEG}"), SEG])
            .current_dir(s.path())
            .env("WALGUARD_CONFIG", s.path().join("walguard.toml"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(2), "SIG{name}: {status:?}");
    }
    assert!(s.archived().is_empty());
}

/// Runs walguard under strace with `strace_args`; the status and strace's output.
fn under_strace(
    s: &Sandbox,
    strace_args: &[&str],
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let trace = s.path().join("strace.out");
    let out = Command::new("strace")
        .args(["-f", "-o"])
        .arg(&trace)
        .args(strace_args)
        .arg(WALGUARD)
        .args(args)
        .current_dir(s.path())
        .env("WALGUARD_CONFIG", s.path().join("walguard.toml"))
        .output()
        .expect("strace (Debian package strace; .ci/run installs it)");
    (out.status, fs::read_to_string(trace).unwrap_or_default())
}

#[test]
fn an_already_archived_file_is_made_durable_before_exit_0() {
    let s = Sandbox::new();
    let args = ["archive", "pg_wal/00000002.history", "00000002.history"];
    assert_eq!(s.run(&args).status.code(), Some(0));
    // The second run finds identical bytes: it must fsync the file and the directory
    // (the run that wrote them may have crashed before its own fsyncs).
    let (status, trace) = under_strace(&s, &["-e", "trace=fsync"], &args);
    assert_eq!(status.code(), Some(0), "{trace}");
    let fsyncs = trace.lines().filter(|l| l.contains("fsync(")).count();
    assert!(
        fsyncs >= 2,
        "{fsyncs} fsync calls on the exists path:\n{trace}"
    );
    assert!(
        s.log().lines().last().unwrap().contains("decision=exists"),
        "{}",
        s.log()
    );
}

#[test]
fn a_timeout_during_the_commit_waits_for_it_and_says_what_happened() {
    let s = Sandbox::new();
    // The second fsync of a fresh copy is the archive directory's, after the link: it is
    // held for 3 s, past the 1 s timeout.
    let (status, trace) = under_strace(
        &s,
        &[
            "-e",
            "trace=fsync",
            "-e",
            "inject=fsync:delay_exit=3000000:when=2",
        ],
        &[
            "--timeout",
            "1s",
            "archive",
            "pg_wal/00000002.history",
            "00000002.history",
        ],
    );
    let archived = s.path().join("archive/00000002.history");
    assert!(archived.exists(), "{trace}");
    assert_eq!(
        fs::read(&archived).unwrap(),
        fs::read(s.path().join("pg_wal/00000002.history")).unwrap()
    );
    // The file is in place, so the exit is 0 and no line says otherwise.
    assert_eq!(status.code(), Some(0), "{}\n{trace}", s.log());
    assert!(!s.log().contains("nothing was archived"), "{}", s.log());
}

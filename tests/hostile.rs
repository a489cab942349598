//! Hostile input, fuzzed with proptest (cargo-fuzz needs a nightly toolchain, which this
//! project's machines do not have): WAL names, LSN text, the replicas list, the config
//! loader, process titles and decision-log lines never panic; the binary never exits
//! above 2 on any argument vector. `WALGUARD_FUZZ_CASES` sets the cases per target
//! (default 5000; docs/RELIABILITY.md records a longer run).

use std::process::Command;

use proptest::prelude::*;
use walguard::observe::titles::parse_title;
use walguard::settings::{self, Layer};
use walguard_core::list as replicas;
use walguard_core::logfmt::parse_logfmt;
use walguard_core::wal::{Lsn, WalFile};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

fn cases(default: u32) -> u32 {
    std::env::var("WALGUARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Inputs that broke (or nearly broke) parsers of this kind elsewhere: the seed corpus.
const SEEDS: &[&str] = &[
    "",
    "\0",
    "../../../../etc/passwd",
    "000000010000000000000001/../../x",
    "000000010000000000000001\n",
    "00000001000000000000000\u{0}1",
    "ＡＡＡＡＡＡＡＡ.history",
    "00000001.history.history",
    ".partial",
    "000000010000000000000001..backup",
    "FFFFFFFF/FFFFFFFF0",
    "/",
    "app:",
    "app:\u{202e}evil",
    "[::1",
    "::ffff:999.1.1.1",
    "#\n#\n\u{feff}10.0.0.1",
    "a=\"\\",
    "ts=\"\\u{110000}\"",
    "ts=\"\\u{d800}\"",
    "postgres: walsender x 1.2.3.4(99999) streaming 0/1",
    "postgres: : walsender x [local] streaming 1/",
    "replicas = \"x\"\ntimeout = \"18446744073709551615s\"",
    "replicas = \"x\"\nkeep_segments = 18446744073709551615",
    "min_free = \"nan%\"",
    "min_free = \"-0%\"",
    "max_retained = \"99999999999999999999GB\"",
];

/// What a WAL file name is, written independently of the parser.
fn oracle(name: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    };
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        [seg] => hex(seg, 24),
        [tli, "history"] => hex(tli, 8),
        [seg, "partial"] => hex(seg, 24),
        [seg, off, "backup"] => hex(seg, 24) && hex(off, 8),
        _ => false,
    }
}

fn exercise(s: &str) {
    let _ = s.parse::<WalFile>();
    let _ = s.parse::<Lsn>();
    let _ = replicas::parse(s, "fuzz");
    let _ = parse_title(s);
    let _ = parse_logfmt(s);
    let _ = toml::from_str::<Layer>(s);
    let _ = walguard_core::header::LongHeader::parse(s.as_bytes());
}

/// A valid name of each form, then up to two near-miss edits (lower case, a slash, a
/// `..`, a character dropped or added): the parser accepts exactly what the independent
/// oracle calls a WAL name, and both outcomes are common (so both sides are exercised).
#[test]
fn near_miss_names_never_pass() {
    use proptest::test_runner::{Config, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let strategy = (
        "[0-9A-F]{24}|[0-9A-F]{8}\\.history|[0-9A-F]{24}\\.[0-9A-F]{8}\\.backup|[0-9A-F]{24}\\.partial",
        proptest::collection::vec(
            (0usize..5, any::<prop::sample::Index>(), "[a-f0-9A-F./]"),
            0..3,
        ),
    );
    let (accepted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(Config::with_cases(cases(5000)));
    runner
        .run(&strategy, |(mut name, edits)| {
            for (kind, at, c) in &edits {
                let i = at.index(name.len() + 1).min(name.len());
                match kind {
                    0 => name = name.to_lowercase(),
                    1 => name.insert(i, '/'),
                    2 => name.insert_str(i, ".."),
                    3 if !name.is_empty() => {
                        name.remove(i.min(name.len() - 1));
                    }
                    _ => name.insert_str(i, c),
                }
            }
            let parsed = name.parse::<WalFile>();
            prop_assert_eq!(parsed.is_ok(), oracle(&name), "{:?}", name);
            if let Ok(file) = parsed {
                prop_assert_eq!(file.to_string(), name.clone());
                prop_assert!(!name.contains('/') && !name.contains(".."));
                accepted.fetch_add(1, Ordering::Relaxed);
            } else {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    let (ok, no) = (
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    assert!(
        ok * 5 > ok + no && no * 5 > ok + no,
        "accepted {ok}, refused {no}"
    );
}

#[test]
fn seed_corpus() {
    for s in SEEDS {
        exercise(s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(5000)))]

    #[test]
    fn parsers_never_panic(s in "\\PC{0,64}") {
        exercise(&s);
    }

    #[test]
    fn parsers_never_panic_on_raw_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        exercise(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn config_loader_never_panics(key in "(archive_dir|replicas|conninfo|log_file|position|keep_segments|unlisted|resolve|min_free|max_retained|max_hold|on_event|source|timeout|pgdata|x)",
                                  value in "(\"[^\"\\\\]{0,20}\"|-?[0-9]{1,25}|true|false|\\[\\]|\\{\\})") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("walguard.toml");
        std::fs::write(&file, format!("replicas = \"/x\"\n{key} = {value}\n")).unwrap();
        let _ = settings::load(Some(&file), Layer::default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(5000) / 20))]

    /// The real binary, any argument vector: 0, 1 or 2, never a signal, never above 2.
    #[test]
    fn binary_never_exits_above_2(args in proptest::collection::vec("(archive|check|status|log|--config|--timeout|--min-free|--json|-h|--version|/dev/null|000000010000000000000001|\\PC{0,12})", 0..5)) {
        let out = Command::new(WALGUARD)
            .args(&args)
            .env("WALGUARD_CONNINFO", "host=127.0.0.1 port=1 connect_timeout=1")
            .env("WALGUARD_REPLICAS", "/nonexistent")
            .env("WALGUARD_TIMEOUT", "3s")
            .env_remove("WALGUARD_CONFIG")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        let code = out.status.code();
        prop_assert!(matches!(code, Some(0..=2)), "{args:?} -> {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
}

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

fn exercise(s: &str) {
    let _ = s.parse::<WalFile>();
    let _ = s.parse::<Lsn>();
    let _ = replicas::parse(s, "fuzz");
    let _ = parse_title(s);
    let _ = parse_logfmt(s);
    let _ = toml::from_str::<Layer>(s);
    let _ = walguard_core::header::LongHeader::parse(s.as_bytes());
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
    fn near_miss_names_never_pass(prefix in "[0-9A-Fa-f./]{0,30}", suffix in "(\\.history|\\.partial|\\.backup|/|\\.\\.)?") {
        let name = format!("{prefix}{suffix}");
        if let Ok(file) = name.parse::<WalFile>() {
            // Whatever parses is a clean name that prints back to itself: no path in it.
            prop_assert_eq!(file.to_string(), name.clone());
            prop_assert!(!name.contains('/') && !name.contains(".."));
        }
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

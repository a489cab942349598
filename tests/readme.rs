//! Every command and file in the README's setup section is accepted by the real binary:
//! the config by the real config loader, the list by the real list parser, and each
//! `walguard ...` line and the archive_command by the real command-line parser. The same
//! for the HA setup in docs/setup.md, the list format in docs/reference.md, and the help
//! there.

use std::process::Command;

use clap::Parser;
use walguard::cli::Cli;

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

/// The section of `text` under `heading`, up to the next heading of its level.
fn section(text: &str, heading: &str) -> String {
    let start = text.find(heading).expect(heading);
    let end = text[start + 1..]
        .find("\n## ")
        .map_or(text.len(), |i| start + 1 + i);
    text[start..end].to_string()
}

fn setup_section() -> String {
    section(include_str!("../README.md"), "## Set up a real primary")
}

/// The fenced blocks of `text`, with their info strings.
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            out.push((info.to_string(), body.join("\n") + "\n"));
        }
    }
    out
}

/// Splits a command line the way sh would for these simple lines (single and double quotes).
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote) = (Vec::new(), String::new(), None);
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ' ') if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            (None, ' ') => {}
            (_, c) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[test]
fn setup_section_is_accepted_by_the_binary() {
    let section = setup_section();
    let blocks = blocks(&section);
    let dir = tempfile::tempdir().unwrap();

    // walguard.toml: loaded by the real loader (a history file needs neither list nor server).
    let (_, toml) = blocks
        .iter()
        .find(|(info, _)| info == "toml")
        .expect("a toml block");
    let config = dir.path().join("walguard.toml");
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(WALGUARD)
        .arg("--config")
        .arg(&config)
        .args(["check", "00000002.history"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // slaves.list: the block that follows it, by the real parser.
    let list = &blocks
        .iter()
        .find(|(_, body)| body.starts_with("# one replica per line"))
        .expect("the list block")
        .1;
    let entries = walguard_core::list::parse(list, "README slaves.list").unwrap();
    assert_eq!(entries.len(), 3);

    // postgresql.conf: the archive_command, and every `walguard ...` line, by clap.
    let mut commands = Vec::new();
    for (_, body) in &blocks {
        for line in body.lines() {
            if let Some(cmd) = line.strip_prefix("archive_command = '") {
                commands.push(
                    cmd.trim_end_matches('\'')
                        .replace("%p", "pg_wal/000000010000000000000003")
                        .replace("%f", "000000010000000000000003"),
                );
            } else if line.starts_with("walguard ") {
                commands.push(line.split(" >").next().unwrap().to_string());
            }
        }
    }
    assert!(commands.len() >= 3, "{commands:?}");
    for cmd in &commands {
        if let Err(e) = Cli::try_parse_from(words(cmd)) {
            panic!("README command {cmd:?} is rejected: {e}");
        }
    }
}

#[test]
fn slaves_list_example_parses() {
    let text = include_str!("../slaves.list.example");
    let entries = walguard_core::list::parse(text, "slaves.list.example").unwrap();
    assert!(entries.len() >= 5);
}

#[test]
fn the_ha_setup_and_the_list_format_are_accepted() {
    let setup = section(
        include_str!("../docs/setup.md"),
        "## Every node of an HA cluster",
    );
    let ha = blocks(&setup);
    let dir = tempfile::tempdir().unwrap();
    let (_, toml) = ha
        .iter()
        .find(|(info, _)| info == "toml")
        .expect("a toml block");
    let config = dir.path().join("walguard.toml");
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(WALGUARD)
        .arg("--config")
        .arg(&config)
        .args(["check", "00000002.history"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = &ha
        .iter()
        .find(|(_, body)| body.starts_with("# /etc/walguard/slaves.list"))
        .expect("the HA list")
        .1;
    let entries = walguard_core::list::parse(list, "docs/setup.md").unwrap();
    assert_eq!(entries[3].options.upstream.as_deref(), Some("app:db2"));
    let (_, yaml) = ha
        .iter()
        .find(|(info, _)| info == "yaml")
        .expect("Patroni's");
    let cmd = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("archive_command: '"))
        .expect("archive_command")
        .trim_end_matches('\'')
        .replace("%p", "pg_wal/000000010000000000000003")
        .replace("%f", "000000010000000000000003");
    Cli::try_parse_from(words(&cmd)).unwrap();
    let reference = section(include_str!("../docs/reference.md"), "## The replicas list");
    let (_, example) = &blocks(&reference)[0];
    assert_eq!(
        walguard_core::list::parse(example, "docs/reference.md")
            .unwrap()
            .len(),
        7
    );
}

#[test]
fn help_in_the_reference_is_the_binarys() {
    let readme = include_str!("../docs/reference.md");
    let start =
        readme.find("## Commands\n\n```\n").expect("commands block") + "## Commands\n\n```\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let out = Command::new(WALGUARD).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let ours: Vec<&str> = help
        .lines()
        .take_while(|l| !l.starts_with("Options:"))
        .map(str::trim_end)
        .collect();
    let theirs: Vec<&str> = readme[start..end].lines().map(str::trim_end).collect();
    assert_eq!(
        ours.join("\n").trim(),
        theirs.join("\n").trim(),
        "docs/reference.md's help is stale: paste `walguard --help` again"
    );
}

/// The README's package install names the packages pkg/build-debs makes of this version:
/// debian/changelog's version is Cargo's, and CI runs that very block (.ci/packages).
#[test]
fn the_package_install_names_this_versions_packages() {
    let version = env!("CARGO_PKG_VERSION");
    let changelog = include_str!("../debian/changelog");
    assert!(
        changelog.starts_with(&format!("walguard ({version}) ")),
        "debian/changelog's first entry is not {version}"
    );
    let install = section(include_str!("../README.md"), "### Debian packages");
    for package in ["walguard", "postgresql-15-walguard"] {
        let deb = format!("./target/debian/{package}_{version}_amd64.deb");
        assert!(install.contains(&deb), "the README does not install {deb}");
    }
}

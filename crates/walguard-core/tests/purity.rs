//! The core stays pure: no I/O crate among its dependencies, and no file system, network,
//! process, environment or clock access in its source. Fails the build's tests the moment
//! someone adds one, naming the file and line.

use std::fs;
use std::path::Path;

const ALLOWED_DEPENDENCIES: &[&str] = &["humantime", "memchr", "serde", "thiserror"];

/// Paths that reach outside the process's memory. `core::net` (addresses as values) is
/// fine; `std::net` (sockets, name resolution) is not.
const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::os",
    "std::thread",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    "SystemTime::now",
    "Instant::now",
    "libc",
    "unsafe {",
    "unsafe fn",
    "unsafe impl",
    "println!",
    "eprintln!",
    "print!",
    "eprint!",
];

#[test]
fn dependencies_are_pure() {
    let manifest = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .expect("reading Cargo.toml");
    let mut in_deps = false;
    let mut found = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]"
                || (line.starts_with("[target.") && line.ends_with(".dependencies]"));
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once('=') {
            found.push(name.trim().to_string());
        }
    }
    assert!(
        found.len() >= ALLOWED_DEPENDENCIES.len(),
        "parsed too few dependencies: {found:?}"
    );
    for dep in &found {
        assert!(
            ALLOWED_DEPENDENCIES.contains(&dep.as_str()),
            "walguard-core gained the dependency {dep:?}: the core must do no I/O; put the code that needs it in src/ (an adapter) instead"
        );
    }
}

#[test]
fn source_touches_nothing_outside() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = 0;
    for entry in fs::read_dir(&src).expect("listing src") {
        let path = entry.expect("dir entry").path();
        let text = fs::read_to_string(&path).expect("reading a source file");
        files += 1;
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                assert!(
                    !code.contains(word),
                    "{}:{}: `{word}` in walguard-core: the core does no I/O; pass the fact in from an adapter",
                    path.display(),
                    n + 1
                );
            }
        }
    }
    assert!(
        files >= 5,
        "found only {files} source files in {}",
        src.display()
    );
}

//! `cargo run --example demo`: a throwaway primary with two streaming replicas, walguard
//! as its archive_command, and a narrated outage: one replica stops, walguard holds the
//! segments it needs (archiving them ahead, so the archive stays current, but withholding
//! PostgreSQL's acknowledgement), the replica comes back and catches up by streaming, and
//! the archive ends complete with no gap. Everything it started is stopped and removed at the end,
//! also on failure or Ctrl-C.
//!
//! This program is also walguard itself: the cluster runs a copy of it named `walguard`
//! as archive_command, and under that name it runs `walguard::main` (the very code of the
//! `walguard` binary), so the demo never runs a stale build.

#[path = "../tests/support/cluster.rs"]
mod cluster;

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use cluster::{ARCHIVE_WAIT, Cluster, INTERRUPTED, Options, find_bindir, is_contiguous};

fn step(n: u32, title: &str) {
    println!("\n=== Step {n}: {title}");
}

fn show(label: &str, text: &str) {
    println!("--- {label}");
    for line in text.lines() {
        println!("    {line}");
    }
}

fn log_tail(c: &Cluster, n: usize) -> String {
    let text = c.log_text();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn walguard_shown(c: &Cluster, args: &[&str]) -> i32 {
    let out = c.walguard(args);
    let code = out.status.code().unwrap_or(-1);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    show(
        &format!("$ walguard {}   (exit {code})", args.join(" ")),
        &text,
    );
    code
}

fn demo(exe: &std::path::Path) -> Result<()> {
    step(
        1,
        "a primary with two streaming replicas, walguard as archive_command",
    );
    let c = Cluster::start(exe, Options::default())?;
    println!(
        "PostgreSQL from {}; everything lives in {}",
        c.bindir.display(),
        c.base.display()
    );
    show(
        "primary postgresql.conf",
        &format!(
            "archive_mode = on\narchive_command = 'walguard --config {} archive %p %f'",
            c.config.display()
        ),
    );
    show(
        &format!("{}", c.config.display()),
        &std::fs::read_to_string(&c.config)?,
    );
    show(
        &format!("{}", c.list.display()),
        &std::fs::read_to_string(&c.list)?,
    );

    step(2, "healthy: every finished segment is archived");
    let mut last = String::new();
    for _ in 0..3 {
        last = c.switch_wal()?;
    }
    c.wait_archived(&last, ARCHIVE_WAIT)?;
    show("archive", &c.archived()?.join("\n"));
    show("watchdog.log (last lines)", &log_tail(&c, 2));

    step(
        3,
        "replica r2 stops; walguard holds the segments it has not replayed",
    );
    let r2 = c.replica("r2");
    c.stop(r2)?;
    println!("stopped r2 (pg_ctl stop -m fast)");
    let held: Vec<String> = (0..3).map(|_| c.switch_wal()).collect::<Result<_>>()?;
    println!("the primary finished segments {}", held.join(", "));
    c.wait_log_line(&format!("wal={} decision=held", held[0]))?;
    show("watchdog.log (last lines)", &log_tail(&c, 2));
    walguard_shown(&c, &["check", &held[0]]);
    walguard_shown(&c, &["status"]);
    // Each retry puts what it can into the archive ahead; the next one the rest.
    cluster::wait_for("the held segments in the archive", ARCHIVE_WAIT, || {
        let archived = c.archived()?;
        Ok(held.iter().all(|h| archived.contains(h)).then_some(()))
    })?;
    c.query("CHECKPOINT")?;
    show(
        "after a CHECKPOINT, still waiting in pg_wal/archive_status (.ready)",
        &c.ready()?.join("\n"),
    );
    show(
        "archive: the held segments are in it already (archived ahead); PostgreSQL keeps them until r2 has them",
        &c.archived()?.join("\n"),
    );

    step(
        4,
        "r2 comes back and catches up by streaming (it has no restore_command)",
    );
    c.start_node(r2)?;
    c.wait_streaming(2)?;
    let after = c.switch_wal()?;
    c.wait_archived(&after, ARCHIVE_WAIT)?;
    c.wait_caught_up(&["r1", "r2"])?;
    println!("r2 is streaming again and has replayed everything the primary wrote");
    show("watchdog.log (last lines)", &log_tail(&c, 3));

    step(5, "the archive is complete, with no gap");
    let archived = c.archived()?;
    let contiguous = is_contiguous(&archived);
    show("archive", &archived.join("\n"));
    anyhow::ensure!(contiguous, "the archive has a gap: {archived:?}");
    anyhow::ensure!(
        held.iter().all(|h| archived.contains(h)),
        "a held segment is missing"
    );
    println!(
        "{} segments, {} to {}, none missing; {} still .ready",
        archived.len(),
        archived.first().context("empty archive")?,
        archived.last().context("empty archive")?,
        c.ready()?.len()
    );
    walguard_shown(&c, &["status"]);
    walguard_shown(&c, &["log"]);
    println!(
        "\n=== Cleaning up: stopping the servers and removing {}",
        c.base.display()
    );
    Ok(())
}

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    let exe = std::env::current_exe().expect("the demo's own path");
    if std::env::args_os()
        .next()
        .is_some_and(|a| a.to_string_lossy().ends_with("walguard"))
    {
        return walguard::main();
    }
    if find_bindir().is_none() {
        eprintln!(
            "demo: PostgreSQL's server programs (initdb, pg_ctl) were not found.\n\
             Install them: apt-get install postgresql-15 (Debian/Ubuntu), \
             or point WALGUARD_PG_BINDIR at the directory that holds initdb."
        );
        return ExitCode::from(2);
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
    match demo(&exe) {
        Ok(()) => {
            println!("done.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

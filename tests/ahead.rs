//! A hold that costs the archive nothing (`archive_ahead`, on by default), on a real
//! primary with two streaming replicas: while r2 is away every finished segment is in the
//! archive, byte-identical, and still `.ready` in pg_wal; the primary is then lost and a
//! new server recovered from a base backup and the archive alone (`walguard restore`)
//! has every row written before the primary's last finished segment; the primary comes
//! back, r2 returns and catches up by streaming; `archive_ahead = false` archives nothing
//! held. Plain and compressed; the shutdown segment (tried while the server accepts no
//! connections) goes ahead too. (`archive_via` pgBackRest: tests/handoff.rs.)

#[path = "support/cluster.rs"]
mod cluster;

use std::fs;

use anyhow::Result;
use cluster::{ARCHIVE_WAIT, Cluster, Options, output_text, wait_for};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

/// Reads an archived segment back, decompressed.
fn archived_bytes(c: &Cluster, name: &str) -> Result<Vec<u8>> {
    let plain = c.archive.join(name);
    if plain.exists() {
        return Ok(fs::read(plain)?);
    }
    Ok(zstd::decode_all(fs::File::open(
        c.archive.join(format!("{name}.zst")),
    )?)?)
}

fn in_archive(c: &Cluster, name: &str) -> bool {
    c.archive.join(name).exists() || c.archive.join(format!("{name}.zst")).exists()
}

/// How the primary is lost while r2 is away.
#[derive(Clone, Copy, PartialEq)]
enum Loss {
    /// `pg_ctl stop -m immediate`: only finished segments can be in the archive.
    Crash,
    /// A clean (fast) shutdown: it finishes the current segment too, and the archiver's
    /// last attempt comes while the server accepts no connections.
    CleanStop,
}

fn scenario(extra_config: &str, loss: Loss) -> Result<()> {
    let c = Cluster::start(
        WALGUARD.as_ref(),
        Options {
            extra_config: extra_config.into(),
            ..Options::default()
        },
    )?;
    c.archive_everything()?;
    let backup = c.base_backup("backup")?;
    c.query("CREATE TABLE marks (n int)")?;
    c.archive_everything()?;

    // r2 goes away: from here on every segment is held, and archived ahead.
    let r2 = c.replica("r2");
    c.stop(r2)?;
    let mut held = Vec::new();
    for n in 1..=3 {
        c.query(&format!("INSERT INTO marks VALUES ({n})"))?;
        held.push(c.switch_wal()?);
    }
    let line = c.wait_log_line(&format!("wal={} decision=held", held[0]))?;
    assert!(line.contains(" ahead="), "{line}");
    wait_for("the held segments in the archive", ARCHIVE_WAIT, || {
        Ok(held.iter().all(|h| in_archive(&c, h)).then_some(()))
    })?;
    let ready = c.ready()?;
    for name in &held {
        assert!(ready.contains(name), "{name} was acknowledged while held");
        assert!(
            archived_bytes(&c, name)? == fs::read(c.primary.data.join("pg_wal").join(name))?,
            "{name} differs from pg_wal"
        );
    }
    // status shows the hold and how current the archive is.
    let status = c.walguard(&["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", output_text(&status));
    let text = output_text(&status);
    assert!(
        text.contains("held by app:r2")
            && text.contains(&format!("newest in the archive: {}", held[2])),
        "{text}"
    );
    let j: serde_json::Value = serde_json::from_slice(&c.walguard(&["status", "--json"]).stdout)?;
    assert_eq!(j["archive"]["newest"], held[2].as_str(), "{j}");
    // check says what an archive would copy ahead.
    let check = c.walguard(&["check", &held[0]]);
    assert!(
        output_text(&check).contains("archived ahead"),
        "{}",
        output_text(&check)
    );

    // One more row, then the primary is lost.
    c.query("INSERT INTO marks VALUES (4)")?;
    let rows = match loss {
        Loss::Crash => {
            // The last finished segment holds row 4; what is written after it is lost.
            let last = c.switch_wal()?;
            wait_for(
                "the last finished segment in the archive",
                ARCHIVE_WAIT,
                || Ok(in_archive(&c, &last).then_some(())),
            )?;
            c.query("INSERT INTO marks VALUES (5)")?;
            c.stop_immediately(&c.primary)?;
            "4"
        }
        Loss::CleanStop => {
            // The shutdown finishes the segment holding row 4 and tries it once more while
            // the server accepts no connections: walguard cannot ask, but copies it ahead.
            c.stop(&c.primary)?;
            let line = c.wait_log_line("does not accept connections")?;
            assert!(
                line.contains("decision=held") && line.contains(" ahead="),
                "{line}"
            );
            "4"
        }
    };
    let recovered = c.recovering_server("recovered", &backup, "", false)?;
    c.start_node(&recovered)?;
    c.wait_promoted(&recovered, "the recovered server to promote")?;
    assert_eq!(
        c.query_on(&recovered, "SELECT max(n) FROM marks")?
            .as_deref(),
        Some(rows),
        "the archive alone does not reach the primary's last finished segment"
    );
    c.stop(&recovered)?;

    // The primary back, r2 back: it streams what it missed (still in pg_wal), and each
    // held segment is released as the identical file already archived.
    c.start_node(&c.primary)?;
    c.start_node(r2)?;
    c.wait_streaming(2)?;
    let after = c.switch_wal()?;
    c.wait_released(&after)?;
    c.wait_caught_up(&["r1", "r2"])?;
    for name in &held {
        c.wait_log_line(&format!("wal={name} decision=exists"))?;
    }
    let r2_log = c.server_log(r2);
    assert!(!r2_log.contains("has already been removed"), "{r2_log}");

    // archive_ahead = false: nothing held leaves pg_wal.
    c.write_config(&format!("{extra_config}archive_ahead = false\n"))?;
    c.stop(r2)?;
    let behind = c.switch_wal()?;
    let line = c.wait_log_line(&format!("wal={behind} decision=held"))?;
    assert!(!line.contains(" ahead="), "{line}");
    assert!(
        !in_archive(&c, &behind),
        "archived ahead with archive_ahead = false"
    );
    Ok(())
}

#[test]
fn a_hold_costs_the_archive_nothing_when_the_primary_crashes() -> Result<()> {
    scenario("", Loss::Crash)
}

#[test]
fn compressed_and_a_clean_stop_the_shutdown_segment_goes_ahead() -> Result<()> {
    scenario("compress = \"zstd\"\n", Loss::CleanStop)
}

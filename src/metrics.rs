//! Prometheus text exposition (format 0.0.4): what `status --format prometheus` prints
//! and what `archive` writes to `metrics_file` for node_exporter's textfile collector.
//! Names are the contract in docs/design.md ("Monitoring").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// One replica's gauges; `name` is its list entry (or `unlisted:PID`).
pub struct ReplicaMetric {
    pub name: String,
    pub connected: bool,
    pub lag_bytes: Option<u64>,
    /// For a line with a slot: whether the slot is lost.
    pub slot_lost: Option<bool>,
}

/// Everything one exposition says; the default knows nothing (walguard not up).
#[derive(Default)]
pub struct Snapshot {
    /// walguard could observe the server and decide.
    pub up: bool,
    /// Archiving is held now (or the segment being written will be).
    pub held: bool,
    /// Archiving (the command or the module) fails though walguard would archive.
    pub failing: bool,
    pub waiting_segments: Option<u64>,
    pub waiting_bytes: Option<u64>,
    pub oldest_waiting_seconds: Option<f64>,
    /// How far the newest segment in the archive trails the server's position.
    pub archive_behind_bytes: Option<u64>,
    pub replicas: Vec<ReplicaMetric>,
    /// The last time of each decision (`archived`, `held`, ...), in Unix seconds.
    pub last_decisions: BTreeMap<String, f64>,
    /// Each valve and whether it tripped.
    pub valves: Vec<(&'static str, bool)>,
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, help: &str, samples: &[(String, String)]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn flag(b: bool) -> String {
    u8::from(b).to_string()
}

/// One unlabelled sample, when the value is known.
fn one<T: ToString>(value: Option<T>) -> Vec<(String, String)> {
    value
        .map(|v| vec![(String::new(), v.to_string())])
        .unwrap_or_default()
}

pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "walguard_up",
        "1 when walguard could observe the server and decide",
        &one(Some(flag(s.up))),
    );
    family(
        &mut out,
        "walguard_held",
        "1 when archiving is held for a replica (now, or for the segment being written)",
        &one(Some(flag(s.held))),
    );
    family(
        &mut out,
        "walguard_failing",
        "1 when archiving fails although walguard would archive",
        &one(Some(flag(s.failing))),
    );
    family(
        &mut out,
        "walguard_waiting_segments",
        "WAL segments finished and not yet archived",
        &one(s.waiting_segments),
    );
    family(
        &mut out,
        "walguard_waiting_bytes",
        "bytes of WAL finished and not yet archived",
        &one(s.waiting_bytes),
    );
    family(
        &mut out,
        "walguard_oldest_waiting_seconds",
        "how long the oldest waiting segment has waited",
        &one(s.oldest_waiting_seconds.map(|v| format!("{v:.3}"))),
    );
    family(
        &mut out,
        "walguard_archive_behind_bytes",
        "bytes of WAL the server has written beyond the end of the newest segment in the archive (held segments archived ahead included)",
        &one(s.archive_behind_bytes),
    );
    let per = |f: &dyn Fn(&ReplicaMetric) -> Option<String>| -> Vec<(String, String)> {
        s.replicas
            .iter()
            .filter_map(|r| Some((format!("{{replica=\"{}\"}}", label(&r.name)), f(r)?)))
            .collect()
    };
    family(
        &mut out,
        "walguard_replica_connected",
        "1 when the listed replica has a connected walsender",
        &per(&|r| Some(flag(r.connected))),
    );
    family(
        &mut out,
        "walguard_replica_lag_bytes",
        "how far the replica's position that counts trails the primary",
        &per(&|r| r.lag_bytes.map(|b| b.to_string())),
    );
    family(
        &mut out,
        "walguard_replica_slot_lost",
        "1 when the listed replica's replication slot is lost: it must be rebuilt",
        &per(&|r| r.slot_lost.map(flag)),
    );
    let decisions: Vec<(String, String)> = s
        .last_decisions
        .iter()
        .map(|(d, t)| (format!("{{decision=\"{}\"}}", label(d)), format!("{t:.3}")))
        .collect();
    family(
        &mut out,
        "walguard_last_decision_timestamp_seconds",
        "when walguard last made each decision (Unix time)",
        &decisions,
    );
    let valves: Vec<(String, String)> = s
        .valves
        .iter()
        .map(|(v, tripped)| (format!("{{valve=\"{v}\"}}"), flag(*tripped)))
        .collect();
    family(
        &mut out,
        "walguard_valve_tripped",
        "1 when the safety valve is tripped",
        &valves,
    );
    out
}

/// The `walguard_last_decision_timestamp_seconds` samples of an earlier exposition, so
/// that each run keeps the other decisions' times.
pub fn last_decisions(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("walguard_last_decision_timestamp_seconds{decision=\""))
        .filter_map(|rest| {
            let (decision, value) = rest.split_once("\"} ")?;
            Some((decision.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Everything of an earlier exposition but the last-decision family, then `last`: what
/// a file that is not a segment (history, backup label, `.partial`) changes, since
/// deciding about it observes nothing else.
pub fn carry_over(previous: &str, last: &BTreeMap<String, f64>) -> String {
    const FAMILY: &str = "walguard_last_decision_timestamp_seconds";
    let mut out: String = previous
        .lines()
        .filter(|l| {
            let name = l
                .trim_start_matches("# HELP ")
                .trim_start_matches("# TYPE ");
            !name.starts_with(FAMILY)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if out.is_empty() {
        // Nothing known before: what an exposition that knows nothing says.
        out = render(&Snapshot::default())
            .lines()
            .filter(|l| !l.contains(FAMILY))
            .map(|l| format!("{l}\n"))
            .collect();
    }
    out.push_str(
        &render(&Snapshot {
            last_decisions: last.clone(),
            ..Snapshot::default()
        })
        .split_inclusive('\n')
        .skip_while(|l| !l.contains(FAMILY))
        .take_while(|l| l.contains(FAMILY))
        .collect::<String>(),
    );
    out
}

/// How long a writer waits for another to finish its update before writing anyway.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Rewrites `path` with `next(previous text)`, atomically (walguard's temporary file,
/// then a rename: node_exporter never reads half a file) and under an exclusive lock on
/// its directory, so that two runs at once (PostgreSQL's and a manual one) never lose
/// each other's update. Mode 0644 whatever the umask (PostgreSQL gives its children
/// 077): metrics hold no secret, and node_exporter runs as another user.
pub fn update(path: &Path, next: impl FnOnce(&str) -> String) -> std::io::Result<()> {
    use crate::store::atomic::Dir;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| std::io::Error::other("metrics_file names no file"))?;
    let dir = Dir::open(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    let start = std::time::Instant::now();
    while rustix::fs::flock(
        &*dir.fd,
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .is_err()
        && start.elapsed() < LOCK_WAIT
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    dir.clean_stale(true, |_| true, LOCK_WAIT * 30);
    let previous = match dir.open_file(&name) {
        Ok(mut f) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text).map(|_| text)?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut tmp = dir.temp(&name, true)?;
    tmp.set_mode(0o644)?;
    tmp.file().write_all(next(&previous).as_bytes())?;
    tmp.rename(&dir, &name)
    // The lock goes with the directory descriptor.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            up: true,
            held: true,
            failing: false,
            waiting_segments: Some(3),
            waiting_bytes: Some(48 << 20),
            oldest_waiting_seconds: Some(12.5),
            archive_behind_bytes: Some(4096),
            replicas: vec![
                ReplicaMetric {
                    name: "app:r1".into(),
                    connected: true,
                    lag_bytes: Some(0),
                    slot_lost: None,
                },
                ReplicaMetric {
                    name: "app:\"odd\\name".into(),
                    connected: false,
                    lag_bytes: None,
                    slot_lost: Some(true),
                },
            ],
            last_decisions: BTreeMap::from([("archived".into(), 1.5), ("held".into(), 2.25)]),
            valves: vec![("min_free", false), ("max_hold", true)],
        }
    }

    #[test]
    fn exposition_and_round_trip() {
        let text = render(&snapshot());
        for want in [
            "# TYPE walguard_up gauge\nwalguard_up 1\n",
            "walguard_waiting_bytes 50331648\n",
            "walguard_replica_connected{replica=\"app:r1\"} 1\n",
            "walguard_replica_connected{replica=\"app:\\\"odd\\\\name\"} 0\n",
            "walguard_replica_lag_bytes{replica=\"app:r1\"} 0\n",
            "walguard_last_decision_timestamp_seconds{decision=\"held\"} 2.250\n",
            "walguard_valve_tripped{valve=\"max_hold\"} 1\n",
            "walguard_replica_slot_lost{replica=\"app:\\\"odd\\\\name\"} 1\n",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
        assert!(
            !text.contains("walguard_replica_lag_bytes{replica=\"app:\\\"odd"),
            "no sample for an unknown lag"
        );
        assert_eq!(
            last_decisions(&text),
            BTreeMap::from([("archived".into(), 1.5), ("held".into(), 2.25)])
        );
    }

    #[test]
    fn the_file_is_replaced_whole_and_readable_by_all() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("walguard.prom");
        update(&path, |_| "a 1\n".into()).unwrap();
        update(&path, |previous| format!("{previous}b 2\n")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 1\nb 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn a_file_that_is_no_segment_changes_only_the_decision_times() {
        let before = render(&snapshot());
        let last = BTreeMap::from([("archived".into(), 9.0), ("held".into(), 2.25)]);
        let after = carry_over(&before, &last);
        assert!(after.contains("walguard_up 1\n"), "{after}");
        assert!(after.contains("walguard_replica_connected{replica=\"app:r1\"} 1\n"));
        assert!(
            after.contains(
                "walguard_last_decision_timestamp_seconds{decision=\"archived\"} 9.000\n"
            )
        );
        assert_eq!(
            after
                .matches("# TYPE walguard_last_decision_timestamp_seconds")
                .count(),
            1
        );
        assert_eq!(last_decisions(&after), last);
    }
}

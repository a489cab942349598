//! Prometheus text exposition (format 0.0.4): what `status --format prometheus` prints
//! and what `archive` writes to `metrics_file` for node_exporter's textfile collector.
//! Names are the contract in DESIGN.md ("Monitoring").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// One replica's gauges; `name` is its list entry (or `unlisted:PID`).
pub struct ReplicaMetric {
    pub name: String,
    pub connected: bool,
    pub lag_bytes: Option<u64>,
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

/// Replaces `path` with `text` atomically (a temporary file in the same directory, then
/// a rename): node_exporter never reads half a file. Readable by all: metrics hold no
/// secret, and the exporter usually runs as another user.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
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
            replicas: vec![
                ReplicaMetric {
                    name: "app:r1".into(),
                    connected: true,
                    lag_bytes: Some(0),
                },
                ReplicaMetric {
                    name: "app:\"odd\\name".into(),
                    connected: false,
                    lag_bytes: None,
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
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("walguard.prom");
        write_file(&path, "a 1\n").unwrap();
        write_file(&path, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}

//! The monitoring kit in monitoring/: the alert rules pass promtool's checks and their
//! unit tests; every query of the Grafana dashboard is valid PromQL (promtool checks it as
//! a recording rule); and both are tied to what walguard really exports: a real primary
//! holds for a stopped replica, and its `status --format prometheus` must carry every
//! metric the rules and the dashboard name, the dashboard must show every metric it
//! carries, and the rules, fed that very exposition for 30 minutes, must page for the
//! away replica and for nothing else.

#[path = "support/cluster.rs"]
mod cluster;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use cluster::{Cluster, Options, output_text};

const WALGUARD: &str = env!("CARGO_BIN_EXE_walguard");

fn kit(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("monitoring")
        .join(file)
}

/// Runs promtool (Debian package prometheus) and fails with its output unless it succeeds.
fn promtool(args: &[&str], dir: &Path) -> Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .context("promtool not found: install the Debian package prometheus (.ci/run does)")?;
    let text = output_text(&out);
    anyhow::ensure!(out.status.success(), "promtool {args:?}:\n{text}");
    Ok(text)
}

/// The `walguard_*` metric names in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("walguard_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// Every PromQL query of the dashboard, with Grafana's variables given values.
fn dashboard_queries() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(kit("walguard-dashboard.json"))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().context("no panels")? {
        let targets = panel["targets"]
            .as_array()
            .context("a panel without targets")?;
        anyhow::ensure!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().context("a target without expr")?;
            queries.push(expr.replace("$instance", ".*"));
        }
    }
    Ok(queries)
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() -> Result<()> {
    let dir = kit("");
    promtool(&["check", "rules", "walguard-alerts.yml"], &dir)?;
    let tested = promtool(&["test", "rules", "walguard-alerts.test.yml"], &dir)?;
    assert!(tested.contains("SUCCESS"), "{tested}");
    Ok(())
}

#[test]
fn every_dashboard_query_is_valid_promql() -> Result<()> {
    let queries = dashboard_queries()?;
    assert!(queries.len() >= 10, "{queries:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        let _ = writeln!(
            rules,
            "      - record: walguard_dashboard_query_{i}\n        expr: {}",
            serde_json::to_string(query)?
        );
    }
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("dashboard.rules.yml"), rules)?;
    let checked = promtool(&["check", "rules", "dashboard.rules.yml"], dir.path())?;
    assert!(
        checked.contains(&format!("{} rules found", queries.len())),
        "{checked}"
    );
    Ok(())
}

#[test]
fn the_kit_matches_a_real_exposition_and_pages_for_the_replica_away() -> Result<()> {
    let c = Cluster::start(WALGUARD.as_ref(), Options::default())?;
    c.archive_everything()?;
    // r2 is listed with a slot, so that the exposition carries the slot metric too.
    c.query("SELECT pg_create_physical_replication_slot('r2', true)")?;
    c.write_list("app:r1\napp:r2 slot=r2\n")?;
    c.stop(c.replica("r2"))?;
    let held = c.switch_wal()?;
    c.wait_log_line(&format!("wal={held} decision=held"))?;
    let status = c.walguard(&["status", "--format", "prometheus"]);
    assert_eq!(status.status.code(), Some(1), "{}", output_text(&status));
    let exposition = String::from_utf8_lossy(&status.stdout).into_owned();
    let exported = metric_names(&exposition);

    let rules = std::fs::read_to_string(kit("walguard-alerts.yml"))?;
    let shown = metric_names(&dashboard_queries()?.join("\n"));
    for name in metric_names(&rules).union(&shown) {
        assert!(
            exported.contains(name),
            "{name} is not exported:\n{exposition}"
        );
    }
    for name in &exported {
        assert!(shown.contains(name), "the dashboard does not show {name}");
    }

    // The exposition as promtool's input series, unchanged for 30 minutes.
    let mut series = String::new();
    for sample in exposition.lines().filter(|l| !l.starts_with('#')) {
        let (metric, value) = sample.rsplit_once(' ').context("a sample without value")?;
        let metric = match metric.split_once('{') {
            Some((name, labels)) => format!("{name}{{instance=\"db1\",{labels}"),
            None => format!("{metric}{{instance=\"db1\"}}"),
        };
        let _ = writeln!(
            series,
            "      - series: {}\n        values: '{value}x30'",
            serde_json::to_string(&metric)?
        );
    }
    let quiet = [
        "WalguardDown",
        "WalguardFailing",
        "WalguardHeldTooLong",
        "WalguardValveTripped",
        "WalguardReplicaSlotLost",
        "WalguardArchiveBehind",
    ];
    let mut expect = String::from(
        "      - eval_time: 20m\n        alertname: WalguardReplicaDisconnected\n        exp_alerts:\n          - exp_labels: {severity: warning, instance: db1, replica: 'app:r2'}\n            exp_annotations:\n              summary: a listed replica has not been connected for 15 minutes\n              description: walguard holds WAL for it; bring it back, or remove it from the list.\n",
    );
    for alert in quiet {
        let _ = writeln!(
            expect,
            "      - eval_time: 20m\n        alertname: {alert}\n        exp_alerts: []"
        );
    }
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        kit("walguard-alerts.yml"),
        dir.path().join("walguard-alerts.yml"),
    )?;
    let test = format!(
        "rule_files:\n  - walguard-alerts.yml\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{series}    alert_rule_test:\n{expect}"
    );
    std::fs::write(dir.path().join("real.test.yml"), &test)?;
    promtool(&["test", "rules", "real.test.yml"], dir.path()).with_context(|| test.clone())?;
    Ok(())
}

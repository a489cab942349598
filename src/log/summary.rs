//! What the decision log says, summarised (for `walguard log`). Streams the file line by line
//! (a million lines is a normal month), keeping only the holds still open and the totals.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::BufRead;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use walguard_core::logfmt::parse_logfmt;

use crate::render::table;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Hold {
    pub wal: String,
    pub first_held: String,
    /// When it left pg_wal; `None` while still held.
    pub released: Option<String>,
    /// How it left: `archived`, `exists` or `valve`.
    pub released_by: Option<String>,
    pub seconds: u64,
    pub blame: Vec<String>,
    /// How many more held it than `blame` names (a log line names 32 at most).
    pub blame_more: u64,
    pub attempts: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReplicaTotals {
    pub holds: u64,
    pub longest_seconds: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub unparsable: u64,
    /// Count of lines per decision (`archived`, `exists`, `held`, `valve`, `error`).
    pub decisions: BTreeMap<String, u64>,
    /// Segments that were held and have since left pg_wal.
    pub holds_completed: u64,
    pub hold_seconds_total: u64,
    /// The longest holds, longest first (at most 10).
    pub longest_holds: Vec<Hold>,
    /// Segments held now (as of the last line), oldest first.
    pub open_holds: Vec<Hold>,
    /// Valve releases per valve.
    pub valves: BTreeMap<String, u64>,
    pub errors: u64,
    pub last_error: Option<String>,
    pub per_replica: BTreeMap<String, ReplicaTotals>,
    /// `flowing`, `held`, `failing` (the last decision was an error) or `unknown` (no
    /// decision yet).
    pub state: String,
    pub last_decision: Option<String>,
}

struct Open {
    first: SystemTime,
    first_text: String,
    blame: Vec<String>,
    blame_more: u64,
    attempts: u64,
}

impl Open {
    /// The hold of `wal` as of `until`; `released` is `(when, how)` once it left pg_wal.
    fn into_hold(self, wal: String, until: SystemTime, released: Option<(&str, &str)>) -> Hold {
        Hold {
            wal,
            first_held: self.first_text,
            released: released.map(|(when, _)| when.to_string()),
            released_by: released.map(|(_, how)| how.to_string()),
            seconds: until
                .duration_since(self.first)
                .unwrap_or(Duration::ZERO)
                .as_secs(),
            blame: self.blame,
            blame_more: self.blame_more,
            attempts: self.attempts,
        }
    }
}

const KEEP_LONGEST: usize = 10;

/// Builds the summary from any line source; `now` only ages the holds still open.
pub fn summarise(mut input: impl BufRead, now: SystemTime) -> std::io::Result<Summary> {
    let mut s = Summary::default();
    let mut open: HashMap<String, Open> = HashMap::new();
    // The last decision line, kept whole and parsed again at the end: cheaper than
    // copying three fields out of every line.
    let mut last_line = String::new();
    let mut last_at = None;
    let mut buf = String::new();
    loop {
        buf.clear();
        if input.read_line(&mut buf)? == 0 {
            break;
        }
        let line = buf.as_str();
        s.lines += 1;
        let Some(pairs) = parse_logfmt(line) else {
            s.unparsable += 1;
            continue;
        };
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.as_ref())
        };
        let (Some(ts_text), Some(decision)) = (get("ts"), get("decision")) else {
            s.unparsable += 1;
            continue;
        };
        // Every line's time is checked, so that garbage in `ts` is counted as unparsable.
        let Ok(ts) = humantime::parse_rfc3339_weak(ts_text) else {
            s.unparsable += 1;
            continue;
        };
        if get("cmd").is_some_and(|c| c != "archive") {
            continue;
        }
        let wal = get("wal").unwrap_or("");
        if let Some(n) = s.decisions.get_mut(decision) {
            *n += 1;
        } else {
            s.decisions.insert(decision.to_string(), 1);
        }
        let blame = get("blame")
            .unwrap_or("")
            .split(',')
            .filter(|x| !x.is_empty());
        match decision {
            "held" => {
                if !open.contains_key(wal) {
                    open.insert(
                        wal.to_string(),
                        Open {
                            first: ts,
                            first_text: ts_text.to_string(),
                            blame: Vec::new(),
                            blame_more: 0,
                            attempts: 0,
                        },
                    );
                }
                if let Some(o) = open.get_mut(wal) {
                    o.attempts += 1;
                    // Who held it is who held it last: a replica that had only not
                    // reported its position yet on the first attempt held nothing.
                    o.blame = blame.map(str::to_string).collect();
                    o.blame_more = get("blame_more").and_then(|n| n.parse().ok()).unwrap_or(0);
                }
            }
            "archived" | "exists" | "valve" => {
                if decision == "valve" {
                    *s.valves
                        .entry(get("valve").unwrap_or("?").to_string())
                        .or_default() += 1;
                }
                if let Some(o) = open.remove(wal) {
                    let hold = o.into_hold(wal.to_string(), ts, Some((ts_text, decision)));
                    let seconds = hold.seconds;
                    s.holds_completed += 1;
                    s.hold_seconds_total += seconds;
                    for b in &hold.blame {
                        let t = s.per_replica.entry(b.clone()).or_default();
                        t.holds += 1;
                        t.longest_seconds = t.longest_seconds.max(seconds);
                    }
                    let at = s.longest_holds.partition_point(|h| h.seconds >= seconds);
                    if at < KEEP_LONGEST {
                        s.longest_holds.insert(at, hold);
                        s.longest_holds.truncate(KEEP_LONGEST);
                    }
                }
            }
            "error" => {
                s.errors += 1;
                s.last_error = Some(format!("{ts_text} {wal}: {}", get("reason").unwrap_or("")));
            }
            _ => {}
        }
        last_line.clear();
        last_line.push_str(line);
        last_at = Some(s.lines);
    }
    let mut still: Vec<Hold> = open
        .into_iter()
        .map(|(wal, o)| o.into_hold(wal, now, None))
        .collect();
    still.sort_by(|a, b| a.wal.cmp(&b.wal));
    s.open_holds = still;
    let last = last_at.and_then(|_| {
        let pairs = parse_logfmt(&last_line)?;
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        };
        Some((get("ts"), get("wal"), get("decision")))
    });
    // An archiver whose last attempt failed is failing, whatever holds are still open.
    s.state = match (&last, s.open_holds.is_empty()) {
        (None, _) => "unknown",
        (Some((_, _, decision)), _) if decision == "error" => "failing",
        (Some(_), false) => "held",
        (Some(_), true) => "flowing",
    }
    .to_string();
    s.last_decision = last.map(|(ts, wal, decision)| format!("{ts} {wal} {decision}"));
    Ok(s)
}

fn secs(n: u64) -> String {
    humantime::format_duration(Duration::from_secs(n)).to_string()
}

pub fn render(file: &str, s: &Summary) -> String {
    let mut out = String::new();
    let decisions: Vec<String> = s
        .decisions
        .iter()
        .map(|(d, n)| format!("{n} {d}"))
        .collect();
    let _ = writeln!(
        out,
        "{file}: {} lines, {} unparsable",
        s.lines, s.unparsable
    );
    let _ = writeln!(
        out,
        "decisions: {}",
        if decisions.is_empty() {
            "none".into()
        } else {
            decisions.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "segments held and since released: {}, {} in all",
        s.holds_completed,
        secs(s.hold_seconds_total)
    );
    let hold_rows = |holds: &[Hold]| -> Vec<Vec<String>> {
        holds
            .iter()
            .map(|h| {
                vec![
                    h.wal.clone(),
                    secs(h.seconds),
                    match (h.blame.is_empty(), h.blame_more) {
                        (true, _) => "-".into(),
                        (false, 0) => h.blame.join(","),
                        (false, more) => format!("{} and {more} more", h.blame.join(",")),
                    },
                    h.first_held.clone(),
                    match (&h.released, &h.released_by) {
                        (Some(t), Some(by)) => format!("{t} ({by})"),
                        _ => "still held".into(),
                    },
                    h.attempts.to_string(),
                ]
            })
            .collect()
    };
    let header = [
        "WAL",
        "HELD FOR",
        "BY",
        "FIRST HELD",
        "RELEASED",
        "ATTEMPTS",
    ];
    if !s.longest_holds.is_empty() {
        out.push_str("longest holds:\n");
        out.push_str(&table(&header, &hold_rows(&s.longest_holds)));
    }
    let valves: Vec<String> = s.valves.iter().map(|(v, n)| format!("{v}: {n}")).collect();
    let _ = writeln!(
        out,
        "valve releases: {}{}",
        s.valves.values().sum::<u64>(),
        if valves.is_empty() {
            String::new()
        } else {
            format!(" ({})", valves.join(", "))
        }
    );
    let _ = writeln!(
        out,
        "errors: {}{}",
        s.errors,
        s.last_error
            .as_ref()
            .map(|e| format!("; last: {e}"))
            .unwrap_or_default()
    );
    if !s.per_replica.is_empty() {
        out.push_str("per replica:\n");
        let rows: Vec<Vec<String>> = s
            .per_replica
            .iter()
            .map(|(r, t)| vec![r.clone(), t.holds.to_string(), secs(t.longest_seconds)])
            .collect();
        out.push_str(&table(&["REPLICA", "HOLDS CAUSED", "LONGEST"], &rows));
    }
    let _ = writeln!(
        out,
        "current state: {}{}",
        s.state,
        s.last_decision
            .as_ref()
            .map(|d| format!(" (last decision: {d})"))
            .unwrap_or_default()
    );
    if !s.open_holds.is_empty() {
        out.push_str("held now:\n");
        out.push_str(&table(&header, &hold_rows(&s.open_holds)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(text: &str) -> &[u8] {
        text.as_bytes()
    }

    #[test]
    fn holds_durations_blame_and_state() {
        let log = "\
ts=2026-11-22T00:00:00.000Z level=info pid=1 cmd=archive wal=A decision=archived
ts=2026-11-22T00:01:00.000Z level=info pid=2 cmd=archive wal=B decision=held reason=\"replica app:r2 not connected\" blame=app:r2,app:r1
this line is garbage
ts=2026-11-22T00:01:01.000Z level=info pid=3 cmd=archive wal=B decision=held blame=app:r2
ts=2026-11-22T00:03:00.000Z level=info pid=4 cmd=archive wal=B decision=archived
ts=2026-11-22T00:04:00.000Z level=info pid=5 cmd=archive wal=C decision=held blame=app:r2,app:r3
ts=2026-11-22T00:14:00.000Z level=warn pid=6 cmd=archive wal=C decision=valve valve=max_hold blame=app:r2,app:r3
ts=2026-11-22T00:15:00.000Z level=error pid=7 cmd=archive wal=D decision=error reason=\"disk full\"
ts=2026-11-22T00:16:00.000Z level=info pid=8 cmd=archive wal=D decision=held blame=app:r3
ts=2026-11-22T00:16:30.000Z level=info pid=9 cmd=check wal=D decision=held
";
        let now = humantime::parse_rfc3339("2026-11-22T01:16:00Z").unwrap();
        let s = summarise(lines(log), now).unwrap();
        assert_eq!(s.lines, 10);
        assert_eq!(s.unparsable, 1);
        assert_eq!(s.decisions.get("held"), Some(&4));
        assert_eq!(s.holds_completed, 2);
        assert_eq!(
            s.longest_holds
                .iter()
                .map(|h| (h.wal.as_str(), h.seconds))
                .collect::<Vec<_>>(),
            vec![("C", 600), ("B", 120)]
        );
        assert_eq!(s.longest_holds[1].attempts, 2);
        assert_eq!(s.longest_holds[0].released_by.as_deref(), Some("valve"));
        assert_eq!(s.valves.get("max_hold"), Some(&1));
        assert_eq!(s.errors, 1);
        assert!(s.last_error.as_deref().unwrap().contains("disk full"));
        assert_eq!(
            s.per_replica["app:r2"],
            ReplicaTotals {
                holds: 2,
                longest_seconds: 600
            }
        );
        assert!(
            !s.per_replica.contains_key("app:r1"),
            "r1 only had not reported on the first attempt"
        );
        assert_eq!(
            s.per_replica["app:r3"],
            ReplicaTotals {
                holds: 1,
                longest_seconds: 600
            }
        );
        assert_eq!(s.state, "held");
        assert_eq!(s.open_holds.len(), 1);
        assert_eq!(
            (s.open_holds[0].wal.as_str(), s.open_holds[0].seconds),
            ("D", 3600)
        );
        let text = render("watchdog.log", &s);
        assert!(text.contains("current state: held"), "{text}");

        let failing = format!(
            "{log}ts=2026-11-22T00:17:00.000Z level=error pid=10 cmd=archive wal=D decision=error reason=\"disk full\"\n"
        );
        let s = summarise(lines(&failing), now).unwrap();
        assert_eq!(s.state, "failing");
        assert!(render("watchdog.log", &s).contains("current state: failing"));
    }

    proptest! {
        #[test]
        fn never_panics(text in "(\\PC{0,60}\n){0,20}") {
            let s = summarise(lines(&text), SystemTime::now()).unwrap();
            prop_assert!(s.unparsable <= s.lines);
        }

        /// Decision lines as the writer writes them, with garbage between: every one is
        /// read, every decision counted, every garbage line counted as unparsable.
        #[test]
        fn written_lines_are_all_read_back(
            entries in proptest::collection::vec((0usize..5, 0u32..4, proptest::option::of("[a-z:0-9]{1,8}"), "\\PC{0,20}"), 1..40),
            garbage in proptest::collection::vec("[a-z ]{0,20}", 0..10),
        ) {
            use walguard_core::logfmt::{Level, format_line};
            const DECISIONS: [&str; 5] = ["archived", "exists", "held", "valve", "error"];
            let mut text = String::new();
            let mut want: BTreeMap<String, u64> = BTreeMap::new();
            let mut junk = 0;
            for (i, (d, wal, blame, reason)) in entries.iter().enumerate() {
                let mut fields = vec![
                    ("cmd", "archive".to_string()),
                    ("wal", format!("W{wal}")),
                    ("decision", DECISIONS[*d].to_string()),
                    ("reason", reason.clone()),
                ];
                if let Some(b) = blame {
                    fields.push(("blame", b.clone()));
                }
                let ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + i as u64);
                text.push_str(&format_line(ts, Level::Info, 1, &fields));
                *want.entry(DECISIONS[*d].to_string()).or_default() += 1;
                if let Some(g) = garbage.get(i).filter(|g| !g.contains('=')) {
                    junk += 1;
                    text.push_str(g);
                    text.push('\n');
                }
            }
            let s = summarise(lines(&text), SystemTime::now()).unwrap();
            prop_assert_eq!(s.lines, entries.len() as u64 + junk);
            prop_assert_eq!(s.unparsable, junk);
            prop_assert_eq!(&s.decisions, &want);
            prop_assert_eq!(s.errors, want.get("error").copied().unwrap_or(0));
        }
    }
}

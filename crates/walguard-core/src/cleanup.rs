//! What `walguard cleanup` may delete from the archive: only what nobody can still need.
//! Slony-I's rule: a file goes only once every party that could need it has confirmed it
//! is past it. The parties are the N newest base backups (their `.backup` labels say
//! where each starts), every listed replica (its position), and the operator's
//! `--before`. A file goes only when it lies on the history of every party's timeline and
//! ends before every party's point; history files and the labels of kept backups never go.
//! With a label pattern, only the backups whose `LABEL:` matches count among the N kept:
//! a replica rebuilt with `pg_basebackup` must not push the nightly backup out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::wal::{Lsn, SegmentId, SegmentSize, WalFile};

/// A place in the WAL that someone needs from on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    pub timeline: u32,
    pub lsn: Lsn,
    /// Who needs it, for the report: `backup 0000...0028.backup`, `app:r2 at 0/5A000000`.
    pub who: String,
}

/// A file in the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archived {
    /// Its name in the archive (`NAME` or `NAME.zst`).
    pub stored: String,
    pub file: WalFile,
    /// For a backup label file: what it says (`None` when it could not be read).
    pub backup: Option<BackupInfo>,
}

/// What a `.backup` file says of its backup, for choosing and showing the kept ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupInfo {
    /// `LABEL:` (pg_basebackup's `-l`, or `pg_backup_start`'s label).
    pub label: Option<String>,
    /// `START TIME:`, as the server wrote it.
    pub start_time: Option<String>,
}

/// The label and start time from a `.backup` file's text.
pub fn backup_info(text: &str) -> BackupInfo {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    BackupInfo {
        label: field("LABEL:"),
        start_time: field("START TIME:"),
    }
}

/// `text` matches the shell-style `pattern`: `*` any run of characters, `?` any one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Greedy with one backtrack point: the last `*` and where it started matching.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Which base backups to keep: the `count` newest, among those whose label matches
/// `label` when given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep<'a> {
    pub count: usize,
    pub label: Option<&'a str>,
}

/// A base backup kept, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptBackup {
    pub stored: String,
    pub timeline: u32,
    pub start: Lsn,
    pub info: BackupInfo,
}

/// A listed replica, as the server reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replica {
    At(Point),
    /// Not connected, or no position: it may need the archive to come back.
    Unknown {
        entry: String,
        why: String,
    },
}

/// Why nothing may be deleted now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Neither `--keep-backups` nor `--before`: nothing says what is old enough.
    NoBound,
    /// `--keep-backups` with no backup label in the archive (matching `--label`, when
    /// given): no backup is known.
    NoBackups {
        label: Option<String>,
    },
    Replica {
        entry: String,
        why: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoBound => f.write_str(
                "nothing to delete: give --keep-backups N (keep what the N newest base backups need) or --before WAL_NAME",
            ),
            Refusal::NoBackups { label: None } => f.write_str(
                "no base backup label (.backup file) is in the archive: with --keep-backups, walguard keeps everything until it sees a backup",
            ),
            Refusal::NoBackups { label: Some(glob) } => write!(
                f,
                "no base backup label (.backup file) in the archive has a LABEL matching {glob:?}: with --keep-backups, walguard keeps everything until it sees such a backup",
            ),
            Refusal::Replica { entry, why } => write!(
                f,
                "replica {entry} {why}: it may need the archive to come back, so nothing is deleted"
            ),
        }
    }
}

/// What would go, and why the rest stays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Stored names to delete, oldest first.
    pub delete: Vec<String>,
    pub kept: usize,
    /// The party whose point the oldest kept segment is needed by (the bound that binds).
    pub bound: Option<Point>,
    /// The base backups kept, newest first.
    pub kept_backups: Vec<KeptBackup>,
}

/// The timelines a timeline descends from, from the history files' text (`parent switch
/// reason` per line); a timeline whose history file is missing or unreadable has none
/// known (its files are then kept for the parties on other timelines).
pub fn ancestors(histories: &BTreeMap<u32, String>) -> BTreeMap<u32, BTreeSet<u32>> {
    histories
        .iter()
        .filter_map(|(&tli, text)| {
            let lines = crate::wal::parse_history(text).ok()?;
            Some((tli, lines.into_iter().map(|(parent, _)| parent).collect()))
        })
        .collect()
}

/// Where a base backup starts, from its label's name: `<segment>.<offset>.backup`.
pub fn backup_start(file: &WalFile, size: SegmentSize) -> Option<(u32, Lsn)> {
    match file {
        WalFile::Backup(id, offset) => {
            let start = id.start(size).ok()?;
            Some((id.timeline, Lsn(start.0 + u64::from(*offset))))
        }
        _ => None,
    }
}

/// The plan over `listing`: `keep` newest backups, `before`, and the replicas'
/// positions are the parties; every one must be past a file for it to go.
pub fn plan(
    listing: &[Archived],
    histories: &BTreeMap<u32, BTreeSet<u32>>,
    size: SegmentSize,
    keep: Option<Keep>,
    before: Option<Point>,
    replicas: &[Replica],
) -> Result<Plan, Refusal> {
    if keep.is_none() && before.is_none() {
        return Err(Refusal::NoBound);
    }
    let mut parties: Vec<Point> = Vec::new();
    for r in replicas {
        match r {
            Replica::At(p) => parties.push(p.clone()),
            Replica::Unknown { entry, why } => {
                return Err(Refusal::Replica {
                    entry: entry.clone(),
                    why: why.clone(),
                });
            }
        }
    }
    parties.extend(before);
    let mut plan = Plan::default();
    // The N newest backups (whose label matches), by where they start.
    let kept_labels: BTreeSet<&str> = match keep {
        Some(Keep { count, label }) => {
            let matches = |a: &Archived| match label {
                None => true,
                Some(glob) => a
                    .backup
                    .as_ref()
                    .and_then(|b| b.label.as_deref())
                    .is_some_and(|l| glob_match(glob, l)),
            };
            let mut backups: Vec<(Lsn, u32, &Archived)> = listing
                .iter()
                .filter(|a| matches(a))
                .filter_map(|a| backup_start(&a.file, size).map(|(tli, lsn)| (lsn, tli, a)))
                .collect();
            if backups.is_empty() {
                return Err(Refusal::NoBackups {
                    label: label.map(str::to_string),
                });
            }
            backups.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
            backups.truncate(count);
            parties.extend(backups.iter().map(|(lsn, tli, a)| Point {
                timeline: *tli,
                lsn: *lsn,
                who: format!("backup {}", a.stored),
            }));
            plan.kept_backups = backups
                .iter()
                .map(|(lsn, tli, a)| KeptBackup {
                    stored: a.stored.clone(),
                    timeline: *tli,
                    start: *lsn,
                    info: a.backup.clone().unwrap_or_default(),
                })
                .collect();
            backups.iter().map(|(_, _, a)| a.stored.as_str()).collect()
        }
        None => BTreeSet::new(),
    };
    let on_path = |file_tli: u32, party: &Point| {
        file_tli == party.timeline
            || histories
                .get(&party.timeline)
                .is_some_and(|a| a.contains(&file_tli))
    };
    // A file ends before a party's point when its last byte is below the point; a file
    // at a given position is the segment that holds that position.
    let before_all = |tli: u32, end: Lsn| parties.iter().all(|p| on_path(tli, p) && end <= p.lsn);
    let mut doomed: Vec<(Lsn, u32, &str)> = Vec::new();
    for a in listing {
        let gone = match &a.file {
            WalFile::History(_) => false,
            WalFile::Backup(..) if kept_labels.contains(a.stored.as_str()) => false,
            // A label goes with the WAL before its backup's start: it says nothing more.
            WalFile::Backup(..) => {
                backup_start(&a.file, size).is_some_and(|(tli, lsn)| before_all(tli, lsn))
            }
            WalFile::Segment(id) | WalFile::Partial(id) => {
                id.end(size).is_ok_and(|end| before_all(id.timeline, end))
            }
        };
        if gone {
            // WAL order: by position, then timeline.
            let at = match &a.file {
                WalFile::Backup(..) => backup_start(&a.file, size).map(|(tli, lsn)| (lsn, tli)),
                WalFile::Segment(id) | WalFile::Partial(id) => {
                    id.start(size).ok().map(|lsn| (lsn, id.timeline))
                }
                WalFile::History(_) => None,
            }
            .unwrap_or((Lsn(0), 0));
            doomed.push((at.0, at.1, &a.stored));
        } else {
            plan.kept += 1;
        }
    }
    doomed.sort();
    plan.delete = doomed.into_iter().map(|(_, _, s)| s.to_string()).collect();
    // The party with the lowest point is the one that keeps the oldest kept segment.
    plan.bound = parties.into_iter().min_by_key(|p| (p.lsn, p.timeline));
    Ok(plan)
}

/// The point `--before NAME` stands for: the start of that segment.
pub fn before_point(id: SegmentId, size: SegmentSize) -> Option<Point> {
    Some(Point {
        timeline: id.timeline,
        lsn: id.start(size).ok()?,
        who: format!("--before {id}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mib16() -> SegmentSize {
        SegmentSize::new(16 << 20).unwrap()
    }

    fn seg(tli: u32, n: u32) -> Archived {
        let id = SegmentId {
            timeline: tli,
            log: 0,
            seg: n,
        };
        Archived {
            stored: format!("{id}.zst"),
            file: WalFile::Segment(id),
            backup: None,
        }
    }

    fn label(tli: u32, n: u32, offset: u32) -> Archived {
        labelled(tli, n, offset, "nightly")
    }

    fn labelled(tli: u32, n: u32, offset: u32, text: &str) -> Archived {
        let id = SegmentId {
            timeline: tli,
            log: 0,
            seg: n,
        };
        Archived {
            stored: format!("{id}.{offset:08X}.backup"),
            file: WalFile::Backup(id, offset),
            backup: Some(BackupInfo {
                label: Some(text.to_string()),
                start_time: Some(format!("2026-12-0{} 03:00:00 UTC", n % 9 + 1)),
            }),
        }
    }

    fn keep(count: usize) -> Option<Keep<'static>> {
        Some(Keep { count, label: None })
    }

    fn history(tli: u32) -> Archived {
        Archived {
            stored: format!("{tli:08X}.history"),
            file: WalFile::History(tli),
            backup: None,
        }
    }

    fn at(tli: u32, lsn: u64, who: &str) -> Replica {
        Replica::At(Point {
            timeline: tli,
            lsn: Lsn(lsn),
            who: who.into(),
        })
    }

    fn listing() -> Vec<Archived> {
        let mut l: Vec<Archived> = (1..=12).map(|n| seg(1, n)).collect();
        l.push(label(1, 3, 0x28));
        l.push(label(1, 8, 0x60));
        l
    }

    #[test]
    fn keeps_what_the_newest_backups_and_the_replicas_need() {
        let none = BTreeMap::new();
        // One backup kept (starts in segment 8), replicas far ahead: 1 to 7 go, and the
        // older backup's label with them.
        let p = plan(
            &listing(),
            &none,
            mib16(),
            keep(1),
            None,
            &[at(1, 0xC00_0000, "app:r1")],
        )
        .unwrap();
        let mut want: Vec<String> = (1..=7).map(|n| seg(1, n).stored).collect();
        want.insert(3, "000000010000000000000003.00000028.backup".into());
        assert_eq!(p.delete, want);
        assert_eq!(
            p.bound.unwrap().who,
            "backup 000000010000000000000008.00000060.backup"
        );
        // Two kept: only 1 and 2 go.
        let p = plan(&listing(), &none, mib16(), keep(2), None, &[]).unwrap();
        assert_eq!(p.delete, vec![seg(1, 1).stored, seg(1, 2).stored]);
        // A replica behind the backup binds instead, and says where it is.
        let p = plan(
            &listing(),
            &none,
            mib16(),
            keep(1),
            None,
            &[at(1, 0x5A0_0000, "app:r2 at 0/5A00000")],
        )
        .unwrap();
        assert_eq!(p.delete.last().unwrap(), &seg(1, 4).stored);
        assert_eq!(p.bound.unwrap().who, "app:r2 at 0/5A00000");
        // --before binds too; all parties must agree.
        let before = before_point(
            SegmentId {
                timeline: 1,
                log: 0,
                seg: 2,
            },
            mib16(),
        );
        let p = plan(&listing(), &none, mib16(), keep(1), before, &[]).unwrap();
        assert_eq!(p.delete, vec![seg(1, 1).stored]);
    }

    #[test]
    fn refusals_say_why() {
        let none = BTreeMap::new();
        assert_eq!(
            plan(&listing(), &none, mib16(), None, None, &[]),
            Err(Refusal::NoBound)
        );
        let no_labels: Vec<Archived> = (1..=3).map(|n| seg(1, n)).collect();
        assert_eq!(
            plan(&no_labels, &none, mib16(), keep(1), None, &[]),
            Err(Refusal::NoBackups { label: None })
        );
        let down = Replica::Unknown {
            entry: "app:r2".into(),
            why: "is not connected".into(),
        };
        let err = plan(&listing(), &none, mib16(), keep(1), None, &[down]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "replica app:r2 is not connected: it may need the archive to come back, so nothing is deleted"
        );
    }

    #[test]
    fn timelines_go_only_on_the_path_of_every_party() {
        let mut l: Vec<Archived> = (1..=6).map(|n| seg(1, n)).collect();
        l.extend((5..=9).map(|n| seg(2, n)));
        l.extend((7..=8).map(|n| seg(3, n))); // an abandoned branch from timeline 1
        l.extend([history(2), history(3), label(2, 7, 0x28)]);
        let histories = ancestors(&BTreeMap::from([
            (2, "1\t0/5000060\tpromoted\n".to_string()),
            (3, "1\t0/7000000\tpromoted\n".to_string()),
        ]));
        let p = plan(
            &l,
            &histories,
            mib16(),
            keep(1),
            None,
            &[at(2, 0x900_0000, "app:r1")],
        )
        .unwrap();
        // Timeline 1 up to the backup's start (timeline 2, segment 7) goes; timeline 2's
        // 5 and 6 too; the abandoned branch (3) descends from neither party: it stays.
        let want: Vec<String> = [
            seg(1, 1),
            seg(1, 2),
            seg(1, 3),
            seg(1, 4),
            seg(1, 5),
            seg(2, 5),
            seg(1, 6),
            seg(2, 6),
        ]
        .iter()
        .map(|a| a.stored.clone())
        .collect();
        assert_eq!(p.delete, want);
        // History files never go.
        assert!(!p.delete.iter().any(|d| d.ends_with(".history")));
        // Without timeline 2's history, timeline 1 is not known to be on its path: kept.
        let p = plan(
            &l,
            &BTreeMap::new(),
            mib16(),
            keep(1),
            None,
            &[at(2, 0x900_0000, "app:r1")],
        )
        .unwrap();
        assert!(
            p.delete.iter().all(|d| d.starts_with("00000002")),
            "{:?}",
            p.delete
        );
    }

    #[test]
    fn labels_choose_the_backups_that_count() {
        let none = BTreeMap::new();
        // The nightly backup (segment 3), then two replica rebuilds (6 and 9).
        let mut l: Vec<Archived> = (1..=12).map(|n| seg(1, n)).collect();
        l.push(labelled(1, 3, 0x28, "nightly 2026-12-05"));
        l.push(labelled(1, 6, 0x28, "pg_basebackup base backup"));
        l.push(labelled(1, 9, 0x28, "pg_basebackup base backup"));
        let nightly = Some(Keep {
            count: 1,
            label: Some("nightly*"),
        });
        let p = plan(&l, &none, mib16(), nightly, None, &[]).unwrap();
        assert_eq!(p.delete, vec![seg(1, 1).stored, seg(1, 2).stored]);
        assert_eq!(p.kept_backups.len(), 1);
        assert_eq!(
            p.kept_backups[0].info.label.as_deref(),
            Some("nightly 2026-12-05")
        );
        // Without the label, the rebuilds push it out.
        let p = plan(&l, &none, mib16(), keep(1), None, &[]).unwrap();
        assert!(p.delete.contains(&seg(1, 3).stored));
        // A pattern nothing matches refuses, naming it.
        let err = plan(
            &l,
            &none,
            mib16(),
            Some(Keep {
                count: 1,
                label: Some("weekly*"),
            }),
            None,
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"weekly*\""), "{err}");
        assert_eq!(
            backup_info(
                "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIME: 2026-12-06 03:00:00 UTC\nLABEL: nightly x\n"
            ),
            BackupInfo {
                label: Some("nightly x".into()),
                start_time: Some("2026-12-06 03:00:00 UTC".into())
            }
        );
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("nightly*", "nightly 2026", true),
            ("*nightly*", "pre nightly post", true),
            ("n?ght*", "night", true),
            ("nightly", "nightly x", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "x", false),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} {t}");
        }
    }

    proptest! {
        /// For any archive over two timelines, labelled backups and replica positions,
        /// nothing a kept backup or a listed replica needs is selected, a kept backup's own
        /// label file never is, and everything older than all of them is.
        #[test]
        fn nothing_needed_is_ever_selected(
            segs in proptest::collection::btree_set(1u32..120, 1..80),
            labels in proptest::collection::vec((1u32..120, 0u32..0x100_0000, any::<bool>()), 0..6),
            keep_n in 1usize..4,
            by_label in any::<bool>(),
            replicas in proptest::collection::vec(0u64..(130 << 24), 0..4),
            before in proptest::option::of(1u32..130),
            switch in 40u32..80,
        ) {
            let size = mib16();
            // Timeline 1 up to the switch, timeline 2 from it on (its history says so).
            let tli = |n: u32| if n < switch { 1 } else { 2 };
            let mut l: Vec<Archived> = segs.iter().map(|&n| seg(tli(n), n)).collect();
            l.push(history(2));
            l.extend(labels.iter().map(|&(n, off, nightly)| {
                labelled(tli(n), n, off & !7, if nightly { "nightly" } else { "pg_basebackup base backup" })
            }));
            let histories = ancestors(&BTreeMap::from([(2, format!("1\t0/{:X}\tpromoted\n", u64::from(switch) << 24))]));
            let reps: Vec<Replica> = replicas.iter().map(|&p| at(2, p.max(u64::from(switch) << 24), "r")).collect();
            let before = before.and_then(|n| before_point(SegmentId { timeline: tli(n), log: 0, seg: n }, size));
            let label = by_label.then_some("nightly*");
            let counted: Vec<&(u32, u32, bool)> = labels.iter().filter(|l| !by_label || l.2).collect();
            let Ok(p) = plan(&l, &histories, size, Some(Keep { count: keep_n, label }), before.clone(), &reps) else {
                prop_assert!(counted.is_empty());
                return Ok(());
            };
            // The points every party needs from: the kept backups' own, exact names too.
            let mut starts: Vec<(u64, String)> = counted
                .iter()
                .map(|&&(n, off, nightly)| {
                    let a = labelled(tli(n), n, off & !7, if nightly { "nightly" } else { "x" });
                    ((u64::from(n) << 24) + u64::from(off & !7), a.stored)
                })
                .collect();
            starts.sort_by(|a, b| b.cmp(a));
            starts.truncate(keep_n);
            let mut needs: Vec<u64> = starts.iter().map(|s| s.0).collect();
            needs.extend(reps.iter().filter_map(|r| match r { Replica::At(p) => Some(p.lsn.0), _ => None }));
            needs.extend(before.iter().map(|b| b.lsn.0));
            for (_, kept) in &starts {
                prop_assert!(!p.delete.contains(kept), "a kept backup's label went: {}", kept);
            }
            for d in &p.delete {
                prop_assert!(!d.ends_with(".history"));
                let n = u64::from(u32::from_str_radix(&d[16..24], 16).unwrap());
                if d.ends_with(".backup") {
                    let off = u64::from_str_radix(&d[25..33], 16).unwrap();
                    prop_assert!(needs.iter().all(|&x| (n << 24) + off <= x), "{} deleted, needed: {:?}", d, needs);
                } else {
                    prop_assert!(needs.iter().all(|&x| (n + 1) << 24 <= x), "{} deleted, needed: {:?}", d, needs);
                }
            }
            // Everything older than all of them is selected, on either timeline (timeline 1
            // is on the history of every party, which all stand on 1 or 2).
            let bound = needs.iter().copied().min().unwrap();
            for &n in &segs {
                let selected = p.delete.contains(&seg(tli(n), n).stored);
                prop_assert_eq!(selected, (u64::from(n) + 1) << 24 <= bound, "segment {}, bound {:X}", n, bound);
            }
        }
    }
}

//! What `walguard verify` concludes from the facts about each archived file: per timeline
//! the ranges held and the gaps, files of the wrong size, bad headers, damaged compressed
//! files, the history chain, files kept twice; and whether the archive plus `pg_wal`
//! cover everything a replica would need from its position on. Files are fed one at a
//! time; only segment numbers are kept (8 bytes a segment), never contents.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::header::{self, Expected, LongHeader};
use crate::wal::{Lsn, SegmentId, SegmentSize, WalFile};

/// What the adapter learnt about one file of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileFacts {
    /// The name in the archive (`NAME` or `NAME.zst`).
    pub stored: String,
    pub file: WalFile,
    pub compressed: bool,
    /// Its (decompressed) length, when it could be read to the end.
    pub bytes: Option<u64>,
    /// Why it could not be read to the end (a damaged `.zst`, an I/O error).
    pub damage: Option<String>,
    /// The first bytes (a segment's long page header).
    pub head: Vec<u8>,
    /// A history file's text.
    pub history: Option<String>,
    /// The first page after the first whose header is wrong, for a segment read whole.
    pub bad_page: Option<String>,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Gap {
        timeline: u32,
        first: String,
        last: String,
    },
    WrongSize {
        name: String,
        bytes: u64,
        expected: u64,
    },
    BadHeader {
        name: String,
        mismatch: String,
    },
    Damaged {
        name: String,
        cause: String,
    },
    BothForms {
        name: String,
    },
    MissingHistory {
        timeline: u32,
    },
    BadHistory {
        name: String,
        problem: String,
    },
    ParentShort {
        timeline: u32,
        parent: u32,
        switch: Lsn,
        last: String,
    },
    BadPage {
        name: String,
        problem: String,
    },
    /// A timeline's first archived segment comes after the one holding its switch point.
    ChildLate {
        timeline: u32,
        switch: Lsn,
        needed: String,
        first: String,
    },
    /// A timeline that is neither the server's nor on its history: no server follows it.
    Orphan {
        timeline: u32,
        server: u32,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Gap {
                timeline,
                first,
                last,
            } if first == last => {
                write!(f, "timeline {timeline}: gap: {first} is missing")
            }
            Problem::Gap {
                timeline,
                first,
                last,
            } => {
                write!(f, "timeline {timeline}: gap: {first} to {last} are missing")
            }
            Problem::WrongSize {
                name,
                bytes,
                expected,
            } => {
                write!(
                    f,
                    "{name}: {bytes} bytes, a segment is {expected}: truncated or not a segment"
                )
            }
            Problem::BadHeader { name, mismatch } => write!(f, "{name}: {mismatch}"),
            Problem::Damaged { name, cause } => write!(f, "{name}: cannot be read back: {cause}"),
            Problem::BothForms { name } => {
                write!(f, "{name} and {name}.zst are both in the archive: keep one")
            }
            Problem::MissingHistory { timeline } => write!(
                f,
                "timeline {timeline} has segments but no {timeline:08X}.history: a server cannot follow it there"
            ),
            Problem::BadHistory { name, problem } => write!(f, "{name}: {problem}"),
            Problem::ParentShort {
                timeline,
                parent,
                switch,
                last,
            } => write!(
                f,
                "timeline {timeline} starts at {switch} on timeline {parent}, whose segments stop at {last}: the switch point is not covered"
            ),
            Problem::BadPage { name, problem } => write!(f, "{name}: {problem}"),
            Problem::ChildLate {
                timeline,
                switch,
                needed,
                first,
            } => write!(
                f,
                "timeline {timeline} starts at {switch}, in {needed}, but its first archived segment is {first}: a server cannot follow the switch"
            ),
            Problem::Orphan { timeline, server } => write!(
                f,
                "timeline {timeline} is neither the server's timeline {server} nor on its history: no server follows it (a restored copy that was promoted, or an abandoned failover, archived it here)"
            ),
        }
    }
}

/// The segments of one timeline, as ranges of segment numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    segnos: Vec<u64>,
}

impl Timeline {
    /// Sorted, deduplicated `(first, last)` runs.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &n in &self.segnos {
            match out.last_mut() {
                Some((_, last)) if n <= *last + 1 => *last = (*last).max(n),
                _ => out.push((n, n)),
            }
        }
        out
    }

    pub fn contains(&self, segno: u64) -> bool {
        self.segnos.binary_search(&segno).is_ok()
    }
}

/// The verdict on an archive, built one file at a time.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub files: u64,
    pub bytes: u64,
    pub segments: u64,
    pub compressed: u64,
    pub timelines: BTreeMap<u32, Timeline>,
    pub problems: Vec<Problem>,
    /// Timeline -> its history (parent, switch point), when the history file was read.
    histories: BTreeMap<u32, Vec<(u32, Lsn)>>,
    /// Every stored name seen, to find a file kept both plain and compressed.
    seen: BTreeSet<String>,
    /// `.partial` segments (timeline, segment id): the last of a timeline a promotion
    /// left, which covers its switch point.
    partials: Vec<SegmentId>,
    /// Segments that are there but unusable (damaged, wrong size, bad header or page):
    /// counted as missing when a replica's recovery is judged.
    bad: BTreeSet<(u32, u64)>,
    /// The segment size (from the first valid header, or given).
    pub segment_size: Option<SegmentSize>,
    sysid: Option<u64>,
}

impl Report {
    /// `segment_size` and `sysid` when the caller knows them (the server, pg_control);
    /// otherwise the first valid segment header sets them.
    pub fn new(segment_size: Option<SegmentSize>, sysid: Option<u64>) -> Report {
        Report {
            segment_size,
            sysid,
            ..Report::default()
        }
    }

    pub fn add(&mut self, f: FileFacts) {
        self.files += 1;
        self.bytes += f.bytes.unwrap_or(0);
        self.compressed += u64::from(f.compressed);
        let name = f.file.to_string();
        if !self.seen.insert(name.clone()) {
            self.problems
                .push(Problem::BothForms { name: name.clone() });
        }
        if let Some(cause) = &f.damage {
            self.problems.push(Problem::Damaged {
                name: f.stored.clone(),
                cause: cause.clone(),
            });
        }
        if let Some(problem) = &f.bad_page {
            self.problems.push(Problem::BadPage {
                name: f.stored.clone(),
                problem: problem.clone(),
            });
        }
        match &f.file {
            WalFile::Segment(id) => self.add_segment(*id, &f),
            WalFile::History(tli) => match f.history.as_deref().map(crate::wal::parse_history) {
                Some(Ok(lines)) => {
                    self.histories.insert(*tli, lines);
                }
                Some(Err(problem)) => self.problems.push(Problem::BadHistory {
                    name: f.stored.clone(),
                    problem,
                }),
                None => {}
            },
            WalFile::Partial(id) => self.partials.push(*id),
            WalFile::Backup(..) => {}
        }
    }

    fn add_segment(&mut self, id: SegmentId, f: &FileFacts) {
        self.segments += 1;
        let parsed = LongHeader::parse(&f.head);
        if self.segment_size.is_none() {
            self.segment_size = parsed
                .filter(|h| header::major_of_magic(h.magic).is_some())
                .and_then(|h| SegmentSize::new(u64::from(h.seg_size)).ok());
        }
        if self.sysid.is_none() {
            self.sysid = parsed
                .filter(|h| header::major_of_magic(h.magic).is_some())
                .map(|h| h.sysid);
        }
        let Some(size) = self.segment_size else {
            self.problems.push(Problem::BadHeader {
                name: f.stored.clone(),
                mismatch: "no valid WAL header: the segment size cannot be told".into(),
            });
            return;
        };
        let mut bad = f.damage.is_some() || f.bad_page.is_some();
        if f.damage.is_none() {
            if let Some(bytes) = f.bytes.filter(|b| *b != size.bytes()) {
                bad = true;
                self.problems.push(Problem::WrongSize {
                    name: f.stored.clone(),
                    bytes,
                    expected: size.bytes(),
                });
            }
            let expected = Expected {
                segment: id,
                size,
                sysid: self.sysid,
            };
            if let Err(m) = header::check(&f.head, &expected) {
                bad = true;
                self.problems.push(Problem::BadHeader {
                    name: f.stored.clone(),
                    mismatch: m.to_string(),
                });
            }
        }
        if let Ok(segno) = id.segno(size) {
            self.timelines
                .entry(id.timeline)
                .or_default()
                .segnos
                .push(segno);
            if bad {
                self.bad.insert((id.timeline, segno));
            }
        }
    }

    /// Sorts what was fed and adds the problems only the whole listing shows: gaps (a
    /// `.partial` counts as its timeline's last segment, so a segment missing just
    /// before it is one), the history chain, each timeline's start at its switch point,
    /// and, when the server's timeline is known, timelines no server follows.
    pub fn finish(mut self, server_timeline: Option<u32>) -> Report {
        let Some(size) = self.segment_size else {
            for t in self.timelines.values_mut() {
                t.segnos.sort_unstable();
                t.segnos.dedup();
            }
            return self;
        };
        for id in &self.partials {
            if let Ok(segno) = id.segno(size) {
                self.timelines
                    .entry(id.timeline)
                    .or_default()
                    .segnos
                    .push(segno);
            }
        }
        for t in self.timelines.values_mut() {
            t.segnos.sort_unstable();
            t.segnos.dedup();
        }
        let name = |tli: u32, segno: u64| {
            SegmentId::containing(tli, Lsn(segno * size.bytes()), size).to_string()
        };
        for (&tli, t) in &self.timelines {
            for pair in t.ranges().windows(2) {
                self.problems.push(Problem::Gap {
                    timeline: tli,
                    first: name(tli, pair[0].1 + 1),
                    last: name(tli, pair[1].0 - 1),
                });
            }
            if tli > 1 && !self.histories.contains_key(&tli) {
                self.problems
                    .push(Problem::MissingHistory { timeline: tli });
            }
        }
        for (&tli, lines) in &self.histories {
            // The last line names the direct parent and where this timeline branched off.
            let Some(&(parent, switch)) = lines.last() else {
                continue;
            };
            // The child's first segment is the one holding the switch point.
            let switch_segno = switch.0 / size.bytes();
            let child_first = self
                .timelines
                .get(&tli)
                .and_then(|t| t.ranges().first().map(|r| r.0));
            if let Some(first) = child_first
                && first > switch_segno
            {
                self.problems.push(Problem::ChildLate {
                    timeline: tli,
                    switch,
                    needed: name(tli, switch_segno),
                    first: name(tli, first),
                });
            }
            let Some(parent_segments) = self.timelines.get(&parent) else {
                continue;
            };
            let needed = switch.0.saturating_sub(1) / size.bytes();
            if let Some(&(_, last)) = parent_segments.ranges().last()
                && last < needed
            {
                self.problems.push(Problem::ParentShort {
                    timeline: tli,
                    parent,
                    switch,
                    last: name(parent, last),
                });
            }
        }
        if let Some(server) = server_timeline {
            // The server's own history must be known to tell (a missing one is a finding
            // of its own).
            let ancestors: Option<BTreeSet<u32>> = if server == 1 {
                Some(BTreeSet::new())
            } else {
                self.histories
                    .get(&server)
                    .map(|lines| lines.iter().map(|&(parent, _)| parent).collect())
            };
            if let Some(ancestors) = ancestors {
                let seen: BTreeSet<u32> = self
                    .timelines
                    .keys()
                    .chain(self.histories.keys())
                    .copied()
                    .collect();
                for tli in seen {
                    if tli != server && !ancestors.contains(&tli) {
                        self.problems.push(Problem::Orphan {
                            timeline: tli,
                            server,
                        });
                    }
                }
            }
        }
        self
    }

    /// Whether a server at `from` on `timeline` can get all the WAL from there to `to`
    /// (the primary's position, exclusive) from the archive or from `in_pg_wal`; the
    /// first missing segment if not.
    pub fn covers(
        &self,
        timeline: u32,
        from: Lsn,
        to: Lsn,
        in_pg_wal: &BTreeSet<String>,
    ) -> Result<(), String> {
        if from >= to {
            return Ok(());
        }
        let Some(size) = self.segment_size else {
            return Err("the segment size is unknown".into());
        };
        let empty = Timeline::default();
        let archived = self.timelines.get(&timeline).unwrap_or(&empty);
        for segno in from.0 / size.bytes()..=(to.0 - 1) / size.bytes() {
            let name = SegmentId::containing(timeline, Lsn(segno * size.bytes()), size).to_string();
            let usable = archived.contains(segno) && !self.bad.contains(&(timeline, segno));
            if !usable && !in_pg_wal.contains(&name) {
                return Err(name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SYSID: u64 = 42;

    fn mib16() -> SegmentSize {
        SegmentSize::new(16 << 20).unwrap()
    }

    fn head(id: SegmentId, size: SegmentSize, sysid: u64) -> Vec<u8> {
        crate::header::tests::page_for(id, size, sysid, 0xD110)
    }

    fn segment(tli: u32, segno: u32) -> FileFacts {
        let id = SegmentId {
            timeline: tli,
            log: 0,
            seg: segno,
        };
        FileFacts {
            stored: id.to_string(),
            file: WalFile::Segment(id),
            compressed: false,
            bytes: Some(16 << 20),
            damage: None,
            head: head(id, mib16(), SYSID),
            history: None,
            bad_page: None,
        }
    }

    fn history(tli: u32, text: &str) -> FileFacts {
        FileFacts {
            stored: format!("{tli:08X}.history"),
            file: WalFile::History(tli),
            compressed: false,
            bytes: Some(text.len() as u64),
            damage: None,
            head: Vec::new(),
            history: Some(text.to_string()),
            bad_page: None,
        }
    }

    fn report(files: Vec<FileFacts>) -> Report {
        report_for(files, None)
    }

    /// The report when the server is on `server` (a timeline), as `verify` asks it.
    fn report_for(files: Vec<FileFacts>, server: Option<u32>) -> Report {
        let mut r = Report::new(None, Some(SYSID));
        for f in files {
            r.add(f);
        }
        r.finish(server)
    }

    fn partial(tli: u32, segno: u32) -> FileFacts {
        let mut f = segment(tli, segno);
        let id = SegmentId {
            timeline: tli,
            log: 0,
            seg: segno,
        };
        f.stored = format!("{id}.partial");
        f.file = WalFile::Partial(id);
        f
    }

    fn texts(r: &Report) -> Vec<String> {
        r.problems.iter().map(Problem::to_string).collect()
    }

    #[test]
    fn a_clean_archive_with_a_failover() {
        let mut files: Vec<FileFacts> = (1..=5).map(|n| segment(1, n)).collect();
        files.extend((5..=7).map(|n| segment(2, n)));
        files.push(history(2, "1\t0/5000060\tno recovery target specified\n"));
        let r = report(files);
        assert_eq!(texts(&r), Vec::<String>::new());
        assert_eq!(r.timelines[&1].ranges(), vec![(1, 5)]);
        assert_eq!(r.timelines[&2].ranges(), vec![(5, 7)]);
        assert_eq!(r.segment_size, Some(mib16()));
    }

    #[test]
    fn every_kind_of_damage_is_named() {
        let mut truncated = segment(1, 3);
        truncated.bytes = Some(8 << 20);
        let mut other_cluster = segment(1, 4);
        other_cluster.head = head(
            SegmentId {
                timeline: 1,
                log: 0,
                seg: 4,
            },
            mib16(),
            SYSID + 1,
        );
        let mut damaged = segment(1, 5);
        damaged.stored.push_str(".zst");
        damaged.compressed = true;
        damaged.bytes = None;
        damaged.damage = Some("Unknown frame descriptor".into());
        let mut twice = segment(1, 6);
        twice.stored.push_str(".zst");
        let files = vec![
            segment(1, 1),
            truncated,
            other_cluster,
            damaged,
            segment(1, 6),
            twice,
            segment(1, 9),
            segment(3, 9),
        ];
        let r = report(files);
        let t = texts(&r);
        let want = [
            "000000010000000000000003: 8388608 bytes, a segment is 16777216: truncated or not a segment",
            "000000010000000000000004: WAL header field xlp_sysid: expected 42, found 43",
            "000000010000000000000005.zst: cannot be read back: Unknown frame descriptor",
            "000000010000000000000006 and 000000010000000000000006.zst are both in the archive: keep one",
            "timeline 1: gap: 000000010000000000000002 is missing",
            "timeline 1: gap: 000000010000000000000007 to 000000010000000000000008 are missing",
            "timeline 3 has segments but no 00000003.history: a server cannot follow it there",
        ];
        for w in want {
            assert!(t.iter().any(|p| p == w), "no {w:?} in {t:#?}");
        }
        assert_eq!(t.len(), want.len(), "{t:#?}");
    }

    #[test]
    fn the_history_chain_must_reach_the_switch_point() {
        let files = vec![
            segment(1, 1),
            segment(1, 2),
            segment(2, 5),
            history(2, "1\t0/5000060\tno recovery target specified\n"),
        ];
        let t = texts(&report(files));
        assert_eq!(
            t,
            vec![
                "timeline 2 starts at 0/5000060 on timeline 1, whose segments stop at 000000010000000000000002: the switch point is not covered"
            ]
        );
        let t = texts(&report(vec![segment(1, 1), history(2, "one\ttwo\n")]));
        assert_eq!(
            t,
            vec!["00000002.history: line 1: \"one\" is not a timeline"]
        );
    }

    #[test]
    fn archives_that_do_not_restore_are_never_clean() {
        let history2 = "1\t0/5000060\tno recovery target specified\n";
        // The child's first segment (the one holding the switch point) is missing.
        let mut files: Vec<FileFacts> = (1..=5).map(|n| segment(1, n)).collect();
        files.extend((6..=7).map(|n| segment(2, n)));
        files.push(history(2, history2));
        assert_eq!(
            texts(&report(files)),
            vec![
                "timeline 2 starts at 0/5000060, in 000000020000000000000005, but its first archived segment is 000000020000000000000006: a server cannot follow the switch"
            ]
        );
        // The parent's segment just before its .partial is missing.
        let mut files: Vec<FileFacts> = (1..=3).map(|n| segment(1, n)).collect();
        files.push(partial(1, 5));
        files.extend((5..=6).map(|n| segment(2, n)));
        files.push(history(2, history2));
        assert_eq!(
            texts(&report(files)),
            vec!["timeline 1: gap: 000000010000000000000004 is missing"]
        );
        // A timeline that no server follows: the server is on 2, timeline 3 branched
        // from 1 (a restored copy, promoted).
        let mut files: Vec<FileFacts> = (1..=5).map(|n| segment(1, n)).collect();
        files.extend((5..=6).map(|n| segment(2, n)));
        files.extend((4..=5).map(|n| segment(3, n)));
        files.push(history(2, history2));
        files.push(history(3, "1\t0/4000100\tno recovery target specified\n"));
        assert_eq!(
            texts(&report_for(files.clone(), Some(2))),
            vec![
                "timeline 3 is neither the server's timeline 2 nor on its history: no server follows it (a restored copy that was promoted, or an abandoned failover, archived it here)"
            ]
        );
        assert!(
            texts(&report_for(files, None)).is_empty(),
            "no server, no verdict on it"
        );
        // A page inside a segment with a wrong header.
        let mut bad = segment(1, 2);
        bad.bad_page = Some(
            "page at byte 16384: WAL header field xlp_pageaddr: expected 0/2004000, found 0/0"
                .into(),
        );
        let t = texts(&report(vec![segment(1, 1), bad, segment(1, 3)]));
        assert_eq!(
            t,
            vec![
                "000000010000000000000002: page at byte 16384: WAL header field xlp_pageaddr: expected 0/2004000, found 0/0"
            ]
        );
    }

    #[test]
    fn a_damaged_segment_is_no_help_to_a_replica() {
        let mut truncated = segment(1, 2);
        truncated.bytes = Some(1 << 20);
        let mut paged = segment(1, 3);
        paged.bad_page = Some("page".into());
        let r = report(vec![segment(1, 1), truncated, paged]);
        assert_eq!(
            r.covers(1, Lsn(0x100_0000), Lsn(0x400_0000), &BTreeSet::new()),
            Err("000000010000000000000002".to_string())
        );
        let in_pg_wal: BTreeSet<String> = ["000000010000000000000002".to_string()].into();
        assert_eq!(
            r.covers(1, Lsn(0x100_0000), Lsn(0x400_0000), &in_pg_wal),
            Err("000000010000000000000003".to_string())
        );
    }

    #[test]
    fn coverage_from_a_replica_position() {
        let r = report(vec![segment(1, 1), segment(1, 2), segment(1, 4)]);
        let in_pg_wal: BTreeSet<String> = ["000000010000000000000005".to_string()].into();
        assert_eq!(
            r.covers(1, Lsn(0x100_0000), Lsn(0x200_0010), &in_pg_wal),
            Ok(())
        );
        // Nothing is needed of a segment the primary has not written into yet.
        assert_eq!(
            r.covers(1, Lsn(0x300_0000), Lsn(0x300_0000), &BTreeSet::new()),
            Ok(())
        );
        assert_eq!(
            r.covers(1, Lsn(0x100_0000), Lsn(0x300_0000), &BTreeSet::new()),
            Ok(())
        );
        assert_eq!(
            r.covers(1, Lsn(0x100_0000), Lsn(0x500_0000), &in_pg_wal),
            Err("000000010000000000000003".to_string())
        );
        let with_3: BTreeSet<String> = [
            "000000010000000000000003".to_string(),
            "000000010000000000000005".to_string(),
        ]
        .into();
        assert_eq!(
            r.covers(1, Lsn(0x100_0000), Lsn(0x500_0000), &with_3),
            Ok(())
        );
    }

    proptest! {
        /// For any set of segments, the gaps reported are exactly the missing numbers
        /// between the first and the last, and the ranges cover exactly what is there.
        #[test]
        fn gaps_are_exactly_what_is_missing(present in proptest::collection::btree_set(0u32..200, 1..60)) {
            let r = report(present.iter().map(|&n| segment(1, n)).collect());
            let ranges = r.timelines[&1].ranges();
            let covered: BTreeSet<u32> = ranges.iter().flat_map(|&(a, b)| (a as u32)..=(b as u32)).collect();
            prop_assert_eq!(&covered, &present);
            let (lo, hi) = (*present.iter().next().unwrap(), *present.iter().last().unwrap());
            let missing = (lo..=hi).filter(|n| !present.contains(n)).count();
            let mut reported = 0;
            for p in &r.problems {
                match p {
                    Problem::Gap { first, last, .. } => {
                        let a = u32::from_str_radix(&first[16..], 16).unwrap();
                        let b = u32::from_str_radix(&last[16..], 16).unwrap();
                        reported += (b - a + 1) as usize;
                    }
                    other => prop_assert!(false, "unexpected {other}"),
                }
            }
            prop_assert_eq!(reported, missing);
        }
    }
}

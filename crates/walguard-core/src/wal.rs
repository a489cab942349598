//! WAL file names and positions (LSNs), as PostgreSQL defines them in
//! `src/include/access/xlog_internal.h`.
//!
//! A segment name is `TTTTTTTTLLLLLLLLSSSSSSSS`: timeline, "log" (high 32 bits of the
//! position) and the segment within that log, each eight upper-case hex digits. How
//! many segments a log holds depends on `wal_segment_size`, which is why the size is
//! an input of every position computation here.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Smallest and largest `wal_segment_size` PostgreSQL accepts (initdb `--wal-segsize`).
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// A WAL position ("log sequence number"): a byte offset into the WAL stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid WAL position {0:?}: expected two hex numbers of up to 8 digits, like 0/3000148")]
pub struct LsnError(String);

impl FromStr for Lsn {
    type Err = LsnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LsnError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let half = |h: &str| {
            if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                None
            } else {
                u32::from_str_radix(h, 16).ok()
            }
        };
        let (hi, lo) = (half(hi).ok_or_else(bad)?, half(lo).ok_or_else(bad)?);
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A validated `wal_segment_size`: a power of two from 1 MiB to 1 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSize(u64);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("wal_segment_size {0} is not a power of two between 1 MiB and 1 GiB")]
pub struct SegmentSizeError(pub u64);

impl SegmentSize {
    pub fn new(bytes: u64) -> Result<Self, SegmentSizeError> {
        if bytes.is_power_of_two() && (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&bytes) {
            Ok(SegmentSize(bytes))
        } else {
            Err(SegmentSizeError(bytes))
        }
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Segments per "log" (4 GiB of WAL): the range of the last eight digits of a name.
    fn per_log(self) -> u64 {
        (1u64 << 32) / self.0
    }
}

/// The timeline, log and segment fields of a segment name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentId {
    pub timeline: u32,
    pub log: u32,
    pub seg: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error(
        "segment {name} does not exist with wal_segment_size {size}: its last 8 digits must be below {limit:X}"
    )]
    OutOfRange { name: String, size: u64, limit: u64 },
    #[error("segment {0} ends beyond the largest possible WAL position")]
    PastEnd(String),
}

impl SegmentId {
    /// The segment number counted from the start of WAL (PostgreSQL's `XLogSegNo`).
    pub fn segno(self, size: SegmentSize) -> Result<u64, SegmentError> {
        let per_log = size.per_log();
        if u64::from(self.seg) >= per_log {
            return Err(SegmentError::OutOfRange {
                name: self.to_string(),
                size: size.bytes(),
                limit: per_log,
            });
        }
        Ok(u64::from(self.log) * per_log + u64::from(self.seg))
    }

    /// First byte position of this segment.
    pub fn start(self, size: SegmentSize) -> Result<Lsn, SegmentError> {
        Ok(Lsn(self.segno(size)? * size.bytes()))
    }

    /// The position just past this segment: a replica at or past it no longer needs it.
    pub fn end(self, size: SegmentSize) -> Result<Lsn, SegmentError> {
        (self.segno(size)? + 1)
            .checked_mul(size.bytes())
            .map(Lsn)
            .ok_or_else(|| SegmentError::PastEnd(self.to_string()))
    }

    /// The segment after this one on its timeline; `None` past the end of WAL.
    pub fn next(self, size: SegmentSize) -> Option<SegmentId> {
        Some(SegmentId::containing(
            self.timeline,
            self.end(size).ok()?,
            size,
        ))
    }

    /// The segment on `timeline` that holds position `lsn`.
    pub fn containing(timeline: u32, lsn: Lsn, size: SegmentSize) -> SegmentId {
        let segno = lsn.0 / size.bytes();
        let per_log = size.per_log();
        // segno / per_log < 2^32 because lsn < 2^64 and per_log * size = 2^32.
        SegmentId {
            timeline,
            log: (segno / per_log) as u32,
            seg: (segno % per_log) as u32,
        }
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

/// The four kinds of file PostgreSQL hands to archive_command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalFile {
    /// A WAL segment: held until every listed replica has passed it.
    Segment(SegmentId),
    /// `XXXXXXXX.history`: a timeline history file, written at promotion.
    History(u32),
    /// `<segment>.XXXXXXXX.backup`: a backup history file written by `pg_backup_stop`.
    Backup(SegmentId, u32),
    /// `<segment>.partial`: the last, incomplete segment of an old timeline.
    Partial(SegmentId),
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a WAL file name: expected 24 upper-case hex digits (a segment), \
     XXXXXXXX.history, <segment>.XXXXXXXX.backup or <segment>.partial"
)]
pub struct WalNameError(pub String);

fn hex8(s: &str) -> Option<u32> {
    // Upper case only: PostgreSQL never writes lower-case names, so one is a typo or an attack.
    if s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn segment_id(s: &str) -> Option<SegmentId> {
    if s.len() != 24 || !s.is_ascii() {
        return None;
    }
    Some(SegmentId {
        timeline: hex8(&s[0..8])?,
        log: hex8(&s[8..16])?,
        seg: hex8(&s[16..24])?,
    })
}

impl FromStr for WalFile {
    type Err = WalNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = if let Some(tli) = s.strip_suffix(".history") {
            hex8(tli).map(WalFile::History)
        } else if let Some(seg) = s.strip_suffix(".partial") {
            segment_id(seg).map(WalFile::Partial)
        } else if let Some(rest) = s.strip_suffix(".backup") {
            rest.split_once('.')
                .and_then(|(seg, offset)| Some(WalFile::Backup(segment_id(seg)?, hex8(offset)?)))
        } else {
            segment_id(s).map(WalFile::Segment)
        };
        parsed.ok_or_else(|| WalNameError(s.to_string()))
    }
}

impl fmt::Display for WalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFile::Segment(id) => write!(f, "{id}"),
            WalFile::History(tli) => write!(f, "{tli:08X}.history"),
            WalFile::Backup(id, offset) => write!(f, "{id}.{offset:08X}.backup"),
            WalFile::Partial(id) => write!(f, "{id}.partial"),
        }
    }
}

impl WalFile {
    /// What kind of file this is, in words, for logs and `check`.
    pub fn kind(&self) -> &'static str {
        match self {
            WalFile::Segment(_) => "segment",
            WalFile::History(_) => "history",
            WalFile::Backup(..) => "backup",
            WalFile::Partial(_) => "partial",
        }
    }
}

/// A timeline history file (`NNNNNNNN.history`): each line is `parent-timeline
/// switch-point reason`, oldest first; the last names the direct parent. Strict: a line
/// that is not of that form is an error, never skipped.
pub fn parse_history(text: &str) -> Result<Vec<(u32, Lsn)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(tli), Some(lsn)) = (words.next(), words.next()) else {
            return Err(format!(
                "line {} is not `timeline switch-point reason`",
                n + 1
            ));
        };
        let tli: u32 = tli
            .parse()
            .map_err(|_| format!("line {}: {tli:?} is not a timeline", n + 1))?;
        let lsn: Lsn = lsn
            .parse()
            .map_err(|_| format!("line {}: {lsn:?} is not a WAL position", n + 1))?;
        out.push((tli, lsn));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_sizes() -> impl Iterator<Item = SegmentSize> {
        (20..=30).map(|shift| SegmentSize::new(1 << shift).unwrap())
    }

    #[test]
    fn next_segment() {
        let mib16 = SegmentSize::new(16 << 20).unwrap();
        let gib1 = SegmentSize::new(1 << 30).unwrap();
        let cases = [
            (
                "000000010000000000000003",
                mib16,
                Some("000000010000000000000004"),
            ),
            (
                "0000000200000000000000FF",
                mib16,
                Some("000000020000000100000000"),
            ),
            (
                "000000010000000100000003",
                gib1,
                Some("000000010000000200000000"),
            ),
            ("00000001FFFFFFFF000000FF", mib16, None),
            ("000000010000000000000100", mib16, None), // not a segment of this size
        ];
        for (name, size, want) in cases {
            let id: SegmentId = match name.parse::<WalFile>().unwrap() {
                WalFile::Segment(id) => id,
                other => panic!("{other:?}"),
            };
            assert_eq!(
                id.next(size).map(|n| n.to_string()).as_deref(),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn lsn_text() {
        let cases = [
            ("0/0", Some(0)),
            ("0/3000148", Some(0x3000148)),
            ("16/B374D848", Some(0x16_B374_D848)),
            ("0/03000000", Some(0x3000000)), // zero-padded low half
            ("FFFFFFFF/FFFFFFFF", Some(u64::MAX)),
            ("ffffffff/ffffffff", Some(u64::MAX)), // lower case: PostgreSQL's input accepts it
            ("", None),
            ("0", None),
            ("/0", None),
            ("0/", None),
            ("1/2/3", None),
            ("100000000/0", None),
            ("0/G", None),
            ("+1/0", None),
            (" 0/1", None),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Lsn>().ok().map(|l| l.0), want, "{text:?}");
        }
        assert_eq!(Lsn(0x3000000).to_string(), "0/3000000");
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
    }

    #[test]
    fn segment_sizes() {
        for bytes in [0, 1, 1 << 19, 3 << 20, (1 << 30) + 1, 1 << 31, u64::MAX] {
            assert!(SegmentSize::new(bytes).is_err(), "{bytes}");
        }
        assert_eq!(all_sizes().count(), 11);
    }

    #[test]
    fn names() {
        let seg = SegmentId {
            timeline: 1,
            log: 0,
            seg: 3,
        };
        let cases: [(&str, Option<WalFile>); 16] = [
            ("000000010000000000000003", Some(WalFile::Segment(seg))),
            ("00000002.history", Some(WalFile::History(2))),
            (
                "000000010000000000000003.00000028.backup",
                Some(WalFile::Backup(seg, 0x28)),
            ),
            (
                "000000010000000000000003.partial",
                Some(WalFile::Partial(seg)),
            ),
            ("00000001000000000000000a", None),
            ("00000001000000000000003", None),
            ("0000000100000000000000033", None),
            ("../00000010000000000003", None),
            ("000000010000000000000003/", None),
            ("/000000010000000000000003", None),
            ("0000000G.history", None),
            ("1.history", None),
            ("000000010000000000000003.backup", None),
            ("000000010000000000000003.0000028.backup", None),
            ("", None),
            ("ÄÄÄÄÄÄÄÄÄÄÄÄ", None),
        ];
        for (name, want) in cases {
            let got = name.parse::<WalFile>().ok();
            assert_eq!(got, want, "{name:?}");
            if let Some(file) = got {
                assert_eq!(file.to_string(), name);
            }
        }
    }

    #[test]
    fn segment_end_table() {
        let mib16 = SegmentSize::new(16 << 20).unwrap();
        let mib1 = SegmentSize::new(1 << 20).unwrap();
        let gib1 = SegmentSize::new(1 << 30).unwrap();
        let id = |log, seg| SegmentId {
            timeline: 7,
            log,
            seg,
        };
        assert_eq!(id(0, 3).end(mib16).unwrap(), "0/4000000".parse().unwrap());
        assert_eq!(id(0, 0xFF).end(mib16).unwrap(), "1/0".parse().unwrap());
        assert_eq!(
            id(0x16, 0xB3).end(mib16).unwrap(),
            "16/B4000000".parse().unwrap()
        );
        assert!(id(0, 0x100).end(mib16).is_err());
        assert_eq!(id(0, 0xFFF).end(mib1).unwrap(), "1/0".parse().unwrap());
        assert!(id(0, 0x1000).end(mib1).is_err());
        assert_eq!(id(2, 3).end(gib1).unwrap(), "3/0".parse().unwrap());
        assert!(id(2, 4).end(gib1).is_err());
        assert!(
            id(u32::MAX, 0xFF).end(mib16).is_err(),
            "end of WAL space overflows"
        );
        assert_eq!(
            id(u32::MAX, 0xFE).end(mib16).unwrap(),
            "FFFFFFFF/FF000000".parse().unwrap()
        );
    }

    proptest! {
        #[test]
        fn lsn_round_trip(v: u64) {
            let text = Lsn(v).to_string();
            prop_assert_eq!(text.parse::<Lsn>(), Ok(Lsn(v)));
            // zero-padding the low half (as some tools print it) reads the same
            let (hi, lo) = text.split_once('/').unwrap();
            prop_assert_eq!(format!("{hi}/{lo:0>8}").parse::<Lsn>(), Ok(Lsn(v)));
        }

        #[test]
        fn lsn_parse_never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<Lsn>();
        }

        #[test]
        fn name_parse_never_panics(s in "\\PC{0,48}") {
            if let Ok(file) = s.parse::<WalFile>() {
                prop_assert_eq!(file.to_string(), s);
            }
        }

        /// Every name of the four forms parses, to the kind it is, and prints back as it was.
        #[test]
        fn every_valid_name_round_trips(s in "[0-9A-F]{24}|[0-9A-F]{8}\\.history|[0-9A-F]{24}\\.[0-9A-F]{8}\\.backup|[0-9A-F]{24}\\.partial") {
            let file = s.parse::<WalFile>();
            prop_assert!(file.is_ok(), "{} did not parse", s);
            let file = file.unwrap();
            let kind = if s.ends_with(".history") { "history" } else if s.ends_with(".backup") { "backup" } else if s.ends_with(".partial") { "partial" } else { "segment" };
            prop_assert_eq!(file.kind(), kind);
            prop_assert_eq!(file.to_string(), s);
        }

        #[test]
        fn containing_segment_round_trips(lsn in 0u64..u64::MAX - (1 << 30), tli: u32, shift in 20u32..=30) {
            let size = SegmentSize::new(1 << shift).unwrap();
            let id = SegmentId::containing(tli, Lsn(lsn), size);
            let name = id.to_string();
            prop_assert_eq!(name.parse::<WalFile>(), Ok(WalFile::Segment(id)));
            let (start, end) = (id.start(size).unwrap(), id.end(size).unwrap());
            prop_assert!(start.0 <= lsn && lsn < end.0);
            prop_assert_eq!(end.0 - start.0, size.bytes());
        }
    }
}

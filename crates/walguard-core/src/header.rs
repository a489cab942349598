//! What a cluster's files say about it: the long header on the first page of every WAL
//! segment (`XLogLongPageHeaderData`, `src/include/access/xlog_internal.h`), and the
//! system identifier in `global/pg_control`. Both are in the server's byte order, which
//! is this machine's: they are read on a host of the server's architecture.

use std::fmt;

use crate::wal::{Lsn, SegmentId, SegmentSize};

/// Bytes of the long page header: the 20 of the standard header padded to 24, then
/// `xlp_sysid` (8), `xlp_seg_size` (4), `xlp_xlog_blcksz` (4).
pub const LONG_HEADER_LEN: usize = 40;

/// `xlp_info` flag: this page starts with the long header (the first page of a segment).
const XLP_LONG_HEADER: u16 = 0x0002;

/// `XLOG_PAGE_MAGIC` of each PostgreSQL major walguard supports.
pub const MAGICS: [(u16, u32); 9] = [
    (0xD097, 10),
    (0xD098, 11),
    (0xD101, 12),
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
    (0xD118, 18),
];

/// The PostgreSQL major whose WAL carries `magic`.
pub fn major_of_magic(magic: u16) -> Option<u32> {
    MAGICS.iter().find(|(m, _)| *m == magic).map(|(_, v)| *v)
}

/// The fields of a segment's first page that walguard checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongHeader {
    pub magic: u16,
    pub info: u16,
    pub timeline: u32,
    pub pageaddr: Lsn,
    pub sysid: u64,
    pub seg_size: u32,
    pub block_size: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(w)
}

impl LongHeader {
    /// Reads the header from the first bytes of a segment; `None` when there are fewer
    /// than [`LONG_HEADER_LEN`] (a file that short is no segment).
    pub fn parse(page: &[u8]) -> Option<LongHeader> {
        let b = page.get(..LONG_HEADER_LEN)?;
        Some(LongHeader {
            magic: u16_at(b, 0),
            info: u16_at(b, 2),
            timeline: u32_at(b, 4),
            pageaddr: Lsn(u64_at(b, 8)),
            sysid: u64_at(b, 24),
            seg_size: u32_at(b, 32),
            block_size: u32_at(b, 36),
        })
    }
}

/// A header field that is not what the segment's name and the cluster say it must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub field: &'static str,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WAL header field {}: expected {}, found {}",
            self.field, self.expected, self.found
        )
    }
}

/// What the header must say for the segment `id`: its start position from its name, the
/// segment size, and (when known) the cluster's system identifier.
#[derive(Clone, Copy, Debug)]
pub struct Expected {
    pub segment: SegmentId,
    pub size: SegmentSize,
    pub sysid: Option<u64>,
}

/// Checks, in this order, the magic (a known PostgreSQL WAL format), the long-header flag,
/// `xlp_pageaddr` (the segment's start, from its name: catches a renamed, recycled or
/// misplaced file), `xlp_seg_size` and `xlp_sysid` (another cluster's file). The
/// timeline is not checked: a new timeline's first segment starts as a copy of the old
/// timeline's, page headers included.
pub fn check(page: &[u8], expected: &Expected) -> Result<LongHeader, Mismatch> {
    let mismatch = |field, expected: String, found: String| Mismatch {
        field,
        expected,
        found,
    };
    let h = LongHeader::parse(page).ok_or_else(|| {
        mismatch(
            "length",
            format!("at least {LONG_HEADER_LEN} bytes"),
            format!("{} bytes", page.len()),
        )
    })?;
    if major_of_magic(h.magic).is_none() {
        return Err(mismatch(
            "xlp_magic",
            "a PostgreSQL 10 to 18 WAL magic (0xD097 to 0xD118)".into(),
            format!("0x{:04X}", h.magic),
        ));
    }
    if h.info & XLP_LONG_HEADER == 0 {
        return Err(mismatch(
            "xlp_info",
            "the long-header flag (0x0002)".into(),
            format!("0x{:04X}", h.info),
        ));
    }
    // A name impossible for this size was refused by the decision already.
    let start = expected
        .segment
        .start(expected.size)
        .map_err(|e| mismatch("name", "a segment of this size".into(), e.to_string()))?;
    if h.pageaddr != start {
        return Err(mismatch(
            "xlp_pageaddr",
            start.to_string(),
            h.pageaddr.to_string(),
        ));
    }
    if u64::from(h.seg_size) != expected.size.bytes() {
        return Err(mismatch(
            "xlp_seg_size",
            expected.size.bytes().to_string(),
            h.seg_size.to_string(),
        ));
    }
    if let Some(sysid) = expected.sysid
        && h.sysid != sysid
    {
        return Err(mismatch(
            "xlp_sysid",
            sysid.to_string(),
            h.sysid.to_string(),
        ));
    }
    Ok(h)
}

/// Where `ControlFileData.time` (when pg_control was last written, in Unix seconds) and
/// `checkPoint` (the last checkpoint's position) sit in `global/pg_control`: after the
/// system identifier, two version words and the state, 8-byte aligned, in every version
/// from 10 to 18.
const CONTROL_TIME_AT: usize = 24;
const CONTROL_CHECKPOINT_AT: usize = 32;

/// What tells one server's `global/pg_control` from another's of the same cluster: the
/// last checkpoint (or restartpoint) and when the file was last written. A replica's
/// restartpoint can sit at its primary's checkpoint position, never at the same moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlStamp {
    pub checkpoint: Lsn,
    pub modified: i64,
}

impl fmt::Display for ControlStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint {} written at {}",
            self.checkpoint, self.modified
        )
    }
}

/// Where `ControlFileData.state` (a `DBState`) sits in `global/pg_control`.
const CONTROL_STATE_AT: usize = 16;

/// Whether the server of a `global/pg_control` is in archive recovery (a standby, or
/// recovering from an archive) or in production (a primary); `None` for the other states
/// (starting, shut down, in crash recovery), which no server that answers is in.
pub fn control_in_recovery(pg_control: &[u8]) -> Option<bool> {
    let state = u32::from_ne_bytes(
        pg_control
            .get(CONTROL_STATE_AT..CONTROL_STATE_AT + 4)?
            .try_into()
            .ok()?,
    );
    // DB_IN_ARCHIVE_RECOVERY = 5, DB_IN_PRODUCTION = 6, in every version from 10 to 18.
    match state {
        5 => Some(true),
        6 => Some(false),
        _ => None,
    }
}

/// The stamp of a `global/pg_control` (its first 40 bytes or more).
pub fn control_stamp(pg_control: &[u8]) -> Option<ControlStamp> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(
            pg_control.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    let checkpoint = Lsn(word(CONTROL_CHECKPOINT_AT)?);
    (checkpoint.0 != 0).then_some(ControlStamp {
        checkpoint,
        modified: word(CONTROL_TIME_AT)? as i64,
    })
}

/// Bytes of the short page header every later page of a segment starts with
/// (`XLogPageHeaderData`, MAXALIGNed).
pub const SHORT_HEADER_LEN: usize = 24;

/// The `xlp_info` bits PostgreSQL 10 to 18 define (`XLP_ALL_FLAGS`).
const XLP_ALL_FLAGS: u16 = 0x000F;

/// What a later page of a segment must say: the segment's magic, its own position, and
/// a timeline no newer than the segment's (the first segment of a new timeline starts as
/// a copy of the old one's pages).
#[derive(Clone, Copy, Debug)]
pub struct PageExpected {
    pub magic: u16,
    pub pageaddr: Lsn,
    pub max_timeline: u32,
}

/// Checks the short header at the start of `page` (a page after a segment's first).
pub fn check_page(page: &[u8], expected: &PageExpected) -> Result<(), Mismatch> {
    let mismatch = |field, expected: String, found: String| Mismatch {
        field,
        expected,
        found,
    };
    let b = page.get(..SHORT_HEADER_LEN).ok_or_else(|| {
        mismatch(
            "length",
            format!("at least {SHORT_HEADER_LEN} bytes"),
            format!("{} bytes", page.len()),
        )
    })?;
    let (magic, info, timeline) = (u16_at(b, 0), u16_at(b, 2), u32_at(b, 4));
    let pageaddr = Lsn(u64_at(b, 8));
    if magic != expected.magic {
        return Err(mismatch(
            "xlp_magic",
            format!("0x{:04X} (the segment's)", expected.magic),
            format!("0x{magic:04X}"),
        ));
    }
    if info & XLP_LONG_HEADER != 0 || info & !XLP_ALL_FLAGS != 0 {
        return Err(mismatch(
            "xlp_info",
            "page flags without the long-header one".into(),
            format!("0x{info:04X}"),
        ));
    }
    if pageaddr != expected.pageaddr {
        return Err(mismatch(
            "xlp_pageaddr",
            expected.pageaddr.to_string(),
            pageaddr.to_string(),
        ));
    }
    if timeline == 0 || timeline > expected.max_timeline {
        return Err(mismatch(
            "xlp_tli",
            format!("1 to {}", expected.max_timeline),
            timeline.to_string(),
        ));
    }
    Ok(())
}

/// The cluster's system identifier: the first field of `global/pg_control`
/// (`ControlFileData.system_identifier`).
pub fn control_system_identifier(pg_control: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = pg_control.get(..8)?.try_into().ok()?;
    Some(u64::from_ne_bytes(bytes)).filter(|&id| id != 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    const SYSID: u64 = 7_714_300_046_324_700_898;

    /// The first 48 bytes of a real PostgreSQL 15 segment 000000010000000000000001
    /// (16 MiB, as `xxd` showed them), with this test's system identifier.
    fn real_page() -> Vec<u8> {
        let mut b = vec![
            0x10, 0xd1, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
            0x00, 0x00, 0x00, 0x01, 0x00, 0x20, 0x00, 0x00, 0x72, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00,
        ];
        b[24..32].copy_from_slice(&SYSID.to_ne_bytes());
        b
    }

    fn seg(n: u32) -> SegmentId {
        SegmentId {
            timeline: 1,
            log: 0,
            seg: n,
        }
    }

    fn mib16() -> SegmentSize {
        SegmentSize::new(16 << 20).unwrap()
    }

    /// A page that says what `segment` of `size` in cluster `sysid` must say (verify's
    /// tests use it too).
    pub(crate) fn page_for(
        segment: SegmentId,
        size: SegmentSize,
        sysid: u64,
        magic: u16,
    ) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[0..2].copy_from_slice(&magic.to_ne_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_ne_bytes());
        b[4..8].copy_from_slice(&segment.timeline.to_ne_bytes());
        b[8..16].copy_from_slice(&segment.start(size).unwrap().0.to_ne_bytes());
        b[24..32].copy_from_slice(&sysid.to_ne_bytes());
        b[32..36].copy_from_slice(&(size.bytes() as u32).to_ne_bytes());
        b[36..40].copy_from_slice(&8192u32.to_ne_bytes());
        b
    }

    #[test]
    fn later_pages_are_checked_against_the_first() {
        let short = |magic: u16, info: u16, tli: u32, addr: u64| {
            let mut b = vec![0u8; SHORT_HEADER_LEN];
            b[0..2].copy_from_slice(&magic.to_ne_bytes());
            b[2..4].copy_from_slice(&info.to_ne_bytes());
            b[4..8].copy_from_slice(&tli.to_ne_bytes());
            b[8..16].copy_from_slice(&addr.to_ne_bytes());
            b
        };
        let want = PageExpected {
            magic: 0xD110,
            pageaddr: Lsn(0x100_2000),
            max_timeline: 2,
        };
        let cases = [
            (short(0xD110, 0, 2, 0x100_2000), None),
            (short(0xD110, 0x0001, 1, 0x100_2000), None), // a continuation, an older timeline
            (short(0xD10D, 0, 2, 0x100_2000), Some("xlp_magic")),
            (
                short(0xD110, XLP_LONG_HEADER, 2, 0x100_2000),
                Some("xlp_info"),
            ),
            (short(0xD110, 0x0100, 2, 0x100_2000), Some("xlp_info")),
            (short(0xD110, 0, 2, 0x100_4000), Some("xlp_pageaddr")),
            (short(0xD110, 0, 3, 0x100_2000), Some("xlp_tli")),
            (short(0xD110, 0, 0, 0x100_2000), Some("xlp_tli")),
            (vec![0u8; 10], Some("length")),
        ];
        for (page, field) in cases {
            assert_eq!(
                check_page(&page, &want).err().map(|m| m.field),
                field,
                "{page:?}"
            );
        }
    }

    #[test]
    fn a_real_header_parses_and_passes() {
        let h = LongHeader::parse(&real_page()).unwrap();
        assert_eq!(major_of_magic(h.magic), Some(15));
        assert_eq!(
            (h.timeline, h.pageaddr, h.seg_size, h.block_size),
            (1, Lsn(0x100_0000), 16 << 20, 8192)
        );
        let want = Expected {
            segment: seg(1),
            size: mib16(),
            sysid: Some(SYSID),
        };
        assert_eq!(check(&real_page(), &want), Ok(h));
    }

    #[test]
    fn each_wrong_field_is_named_with_both_values() {
        let want = Expected {
            segment: seg(1),
            size: mib16(),
            sysid: Some(SYSID),
        };
        let mut zeroed = real_page();
        zeroed.fill(0);
        let mut short = real_page();
        short[2] = 0;
        let other_cluster = page_for(seg(1), mib16(), SYSID + 1, 0xD110);
        let cases: [(&str, Vec<u8>, &str, &str, &str); 6] = [
            (
                "zeroed (a recycled file)",
                zeroed,
                "xlp_magic",
                "a PostgreSQL 10 to 18 WAL magic (0xD097 to 0xD118)",
                "0x0000",
            ),
            (
                "not the first page",
                short,
                "xlp_info",
                "the long-header flag (0x0002)",
                "0x0000",
            ),
            (
                "another segment",
                page_for(seg(7), mib16(), SYSID, 0xD110),
                "xlp_pageaddr",
                "0/1000000",
                "0/7000000",
            ),
            (
                "another size",
                page_for(seg(16), SegmentSize::new(1 << 20).unwrap(), SYSID, 0xD110),
                "xlp_seg_size",
                "16777216",
                "1048576",
            ),
            (
                "another cluster",
                other_cluster,
                "xlp_sysid",
                "7714300046324700898",
                "7714300046324700899",
            ),
            (
                "too short",
                real_page()[..39].to_vec(),
                "length",
                "at least 40 bytes",
                "39 bytes",
            ),
        ];
        for (case, page, field, expected, found) in cases {
            let got = check(&page, &want).unwrap_err();
            assert_eq!(
                (got.field, got.expected.as_str(), got.found.as_str()),
                (field, expected, found),
                "{case}"
            );
        }
        // An unknown cluster identifier checks everything else.
        let anyone = Expected {
            sysid: None,
            ..want
        };
        assert!(check(&page_for(seg(1), mib16(), 42, 0xD110), &anyone).is_ok());
    }

    #[test]
    fn every_supported_magic_is_accepted() {
        for (magic, major) in MAGICS {
            let page = page_for(seg(3), mib16(), SYSID, magic);
            let want = Expected {
                segment: seg(3),
                size: mib16(),
                sysid: Some(SYSID),
            };
            assert_eq!(
                major_of_magic(check(&page, &want).unwrap().magic),
                Some(major)
            );
        }
        assert_eq!(major_of_magic(0xD093), None, "9.6 is not supported");
    }

    #[test]
    fn system_identifier_is_the_first_word() {
        let mut file = SYSID.to_ne_bytes().to_vec();
        file.extend([0u8; 100]);
        assert_eq!(control_system_identifier(&file), Some(SYSID));
        assert_eq!(control_system_identifier(&file[..7]), None);
        assert_eq!(control_system_identifier(&[0u8; 16]), None);
    }

    proptest! {
        /// A header written for any segment, size, cluster and supported major passes,
        /// and changing any one checked field makes it fail naming that field.
        #[test]
        fn generated_headers_pass_and_any_change_is_caught(
            log in 0u32..4, seg_no in 0u32..4096, shift in 20u32..=30, sysid in 1u64.., m in 0usize..9, tli in 1u32..100,
            field in 0usize..4,
        ) {
            let size = SegmentSize::new(1 << shift).unwrap();
            let segment = SegmentId { timeline: tli, log, seg: seg_no % (1u32 << (32 - shift)) };
            let mut page = page_for(segment, size, sysid, MAGICS[m].0);
            let want = Expected { segment, size, sysid: Some(sysid) };
            prop_assert!(check(&page, &want).is_ok());
            let (at, name) = [(0, "xlp_magic"), (8, "xlp_pageaddr"), (32, "xlp_seg_size"), (24, "xlp_sysid")][field];
            page[at + 1] ^= 0x40;
            prop_assert_eq!(check(&page, &want).map_err(|e| e.field), Err(name));
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LongHeader::parse(&bytes);
            let want = Expected { segment: seg(1), size: mib16(), sysid: None };
            let _ = check(&bytes, &want);
        }
    }
}

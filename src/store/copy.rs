//! The durable, never-overwriting copy into the archive directory.
//!
//! The file is written under a temporary name in the temp area, fsynced, then
//! hard-linked to its final name. `link(2)` fails if the final name exists, so no
//! existing file is ever replaced, and a crash leaves either no final file or the whole
//! one. The archive directory is then fsynced so that the new name survives a crash.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::fs::FileType;

use super::area::ArchiveDir;
use super::atomic::Temp;
use super::{StoreError, commit};

#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// Copied now: `bytes` read, `stored` bytes written (less when compressed).
    Copied { bytes: u64, stored: u64 },
    /// Already archived with identical (decompressed) bytes: PostgreSQL retried after a
    /// crash.
    Exists { bytes: u64 },
}

/// How a file is kept in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd { level: i32 },
}

/// Whether a compressed copy may use worker threads: yes in a walguard process, no in
/// PostgreSQL's archiver (the module calls [`no_threads`] when it is loaded).
static THREADS: AtomicBool = AtomicBool::new(true);

/// Compress on the calling thread only: inside a server process, walguard starts no
/// threads of its own.
pub fn no_threads() {
    THREADS.store(false, Ordering::Relaxed);
}

/// zstd's workers for one segment: one per core (capped: a segment is split in jobs of
/// [`JOB_SIZE`]), or none (compress on the calling thread).
fn zstd_workers() -> u32 {
    if !THREADS.load(Ordering::Relaxed) {
        return 0;
    }
    match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        1 => 0,
        n => n.min(4) as u32,
    }
}

/// The input each zstd worker compresses at a time: a 16 MiB segment gives every
/// worker of a small machine a job, and the buffers stay small.
const JOB_SIZE: u32 = 2 << 20;

/// The suffix of a compressed file in the archive.
pub const ZSTD_SUFFIX: &str = ".zst";

/// The name `name` is stored under with `compression`.
pub fn stored_name(name: &str, compression: Compression) -> String {
    match compression {
        Compression::None => name.to_string(),
        Compression::Zstd { .. } => format!("{name}{ZSTD_SUFFIX}"),
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// An archived file's content, decompressed if it is a `.zst`.
pub fn reader(file: File, stored_name: &str) -> io::Result<Box<dyn Read>> {
    Ok(if stored_name.ends_with(ZSTD_SUFFIX) {
        Box::new(zstd::stream::read::Decoder::new(file)?)
    } else {
        Box::new(file)
    })
}

/// True when both readers yield the same bytes. Reads in large blocks: a segment is
/// 16 MiB or more.
fn same_content(a: &mut dyn Read, b: &mut dyn Read) -> io::Result<bool> {
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(a, &mut ba)?;
        let m = read_full(b, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

pub fn read_full(f: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A copy under a temporary name: neither durable nor visible until [`Staged::commit`].
/// Dropping it removes the temporary file, so a held segment leaves nothing behind.
pub struct Staged {
    dir: ArchiveDir,
    src: PathBuf,
    /// The WAL file name, and the name it is stored under (`NAME` or `NAME.zst`).
    name: String,
    stored: String,
    /// The temporary file (removed when dropped); `None` when the file was already in
    /// the archive.
    tmp: Option<Temp>,
    bytes: u64,
}

/// The names `name` may be archived under, plain first.
fn forms(name: &str) -> [String; 2] {
    [name.to_string(), format!("{name}{ZSTD_SUFFIX}")]
}

/// Counts the bytes read through it: the input of a compressed copy.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Copies `src` into a temporary file in `dir`'s temp area (no fsync yet), compressed
/// as asked, unless `dir` holds `name` already in either form. `name` must be a
/// validated WAL file name (no `/`, no `..`).
pub fn stage(
    src: &Path,
    dir: &Path,
    name: &str,
    stale_after: Duration,
    compression: Compression,
) -> Result<Staged, StoreError> {
    let dir = ArchiveDir::open(dir)?;
    let mut staged = Staged {
        src: src.to_path_buf(),
        name: name.to_string(),
        stored: stored_name(name, compression),
        tmp: None,
        bytes: 0,
        dir,
    };
    for form in forms(name) {
        let dest = staged.dir.dir.path.join(&form);
        if staged
            .dir
            .dir
            .entry_type(&form)
            .map_err(io_err("cannot stat", &dest))?
            .is_some()
        {
            return Ok(staged);
        }
    }
    staged.dir.clean_stale(stale_after);
    let mut input = File::open(src).map_err(io_err("cannot open", src))?;
    let temp = staged.dir.tmp.temp(&staged.stored, false).map_err(io_err(
        "cannot create a temporary file in",
        &staged.dir.tmp.path,
    ))?;
    let tmp_path = temp.path();
    // Dropping `staged` removes it.
    let mut output: &File = staged.tmp.insert(temp).file();
    let write_err = io_err("cannot write", &tmp_path);
    staged.bytes = match compression {
        // std::io::copy uses copy_file_range(2) between files: no user-space buffer.
        Compression::None => io::copy(&mut input, &mut output).map_err(write_err)?,
        Compression::Zstd { level } => {
            let len = input.metadata().map_err(io_err("cannot stat", src))?.len();
            let mut counted = Counted {
                inner: io::BufReader::with_capacity(1 << 20, input),
                count: 0,
            };
            let encoded = (|| {
                let mut encoder = zstd::stream::write::Encoder::new(
                    io::BufWriter::with_capacity(1 << 20, output),
                    level,
                )?;
                encoder.include_checksum(true)?;
                let workers = zstd_workers();
                if workers > 0 {
                    encoder.multithread(workers)?;
                    encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
                }
                // The size in the frame header: a file that shrinks while read fails here.
                encoder.set_pledged_src_size(Some(len))?;
                io::copy(&mut counted, &mut encoder)?;
                encoder
                    .finish()?
                    .into_inner()
                    .map_err(io::IntoInnerError::into_error)?
                    .flush()
            })();
            encoded.map_err(write_err)?;
            counted.count
        }
    };
    Ok(staged)
}

impl Staged {
    /// Makes the copy durable and visible: check it is exactly `expected` bytes (the
    /// segment size the decision validated; `None` for files of any size), fsync it,
    /// link it to its final name (failing if that name exists: nothing is ever
    /// replaced), fsync the directory.
    pub fn commit(mut self, expected: Option<u64>) -> Result<Stored, StoreError> {
        let Some(tmp) = self.tmp.take() else {
            return self.existing(expected);
        };
        self.link(tmp, expected)
    }

    fn link(&self, mut tmp: Temp, expected: Option<u64>) -> Result<Stored, StoreError> {
        let dest = self.dir.dir.path.join(&self.stored);
        if let Some(expected) = expected
            && self.bytes != expected
        {
            return Err(StoreError::Short {
                src: self.src.clone(),
                copied: self.bytes,
                expected,
            });
        }
        tmp.file()
            .sync_all()
            .map_err(io_err("cannot fsync", &dest))?;
        let stored = tmp
            .file()
            .metadata()
            .map_err(io_err("cannot stat", &dest))?
            .len();
        let guard = commit::begin().map_err(|_| StoreError::Aborted)?;
        match tmp.link(&self.dir.dir, &self.stored) {
            Ok(()) => {}
            // Another run (PostgreSQL's retry racing a manual one) got there first.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                drop(guard);
                return self.existing(expected);
            }
            Err(e) => return Err(io_err("cannot link into place", &dest)(e)),
        }
        self.dir.sync().map_err(|e| StoreError::Undurable {
            dest: dest.clone(),
            cause: e.to_string(),
        })?;
        guard.done();
        Ok(Stored::Copied {
            bytes: self.bytes,
            stored,
        })
    }

    /// The file is in the archive already, plain or compressed: identical bytes are
    /// success, made durable first (the earlier run may have crashed before its fsyncs);
    /// anything else is refused and left alone.
    fn existing(&self, expected: Option<u64>) -> Result<Stored, StoreError> {
        for form in forms(&self.name) {
            let dest = self.dir.dir.path.join(&form);
            match self
                .dir
                .dir
                .entry_type(&form)
                .map_err(io_err("cannot stat", &dest))?
            {
                None => continue,
                Some(FileType::RegularFile) => {}
                Some(_) => return Err(StoreError::NotRegular { dest }),
            }
            let archived = self
                .dir
                .dir
                .open_file(&form)
                .map_err(io_err("cannot read", &dest))?;
            let mut src = File::open(&self.src).map_err(io_err("cannot read", &self.src))?;
            let bytes = src
                .metadata()
                .map_err(io_err("cannot stat", &self.src))?
                .len();
            let same = reader(
                archived.try_clone().map_err(io_err("cannot read", &dest))?,
                &form,
            )
            .and_then(|mut r| same_content(&mut src, &mut r))
            .map_err(|e| StoreError::Damaged {
                dest: dest.clone(),
                cause: e.to_string(),
            })?;
            if !same || expected.is_some_and(|e| e != bytes) {
                // A compressed file that differs may be merely damaged: say which.
                let damage = form.ends_with(ZSTD_SUFFIX).then(|| {
                    let mut file = archived;
                    io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
                    reader(file, &form).and_then(|mut r| io::copy(&mut r, &mut io::sink()))
                });
                return Err(match damage {
                    Some(Err(e)) => StoreError::Damaged {
                        dest,
                        cause: e.to_string(),
                    },
                    _ => StoreError::Conflict { dest },
                });
            }
            archived.sync_all().map_err(io_err("cannot fsync", &dest))?;
            self.dir.sync()?;
            return Ok(Stored::Exists { bytes });
        }
        // Both gone since they were seen: another tool removed it. Nothing was archived.
        Err(StoreError::Io {
            what: "vanished while being compared:",
            path: self.dir.dir.path.join(&self.stored),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::area::TMP_DIR;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn tempdir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("wg-copy-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("archive")).unwrap();
        Dir(d)
    }
    const NAME: &str = "000000010000000000000001";
    const STALE: Duration = Duration::from_secs(30);

    /// Both phases at once, as `archive` does once the verdict is "archive".
    fn store(
        src: &Path,
        dir: &Path,
        name: &str,
        stale_after: Duration,
    ) -> Result<Stored, StoreError> {
        stage(src, dir, name, stale_after, Compression::None)?.commit(None)
    }

    #[test]
    fn copies_then_reports_exists_then_refuses_conflict() {
        let d = tempdir("basic");
        let src = d.0.join("seg");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &data).unwrap();
        let archive = d.0.join("archive");
        assert_eq!(
            store(&src, &archive, NAME, STALE).unwrap(),
            Stored::Copied {
                bytes: 3_000_000,
                stored: 3_000_000
            }
        );
        let dest = archive.join(NAME);
        assert_eq!(fs::read(&dest).unwrap(), data);
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(archive.join(TMP_DIR)).unwrap().count(), 0);

        assert_eq!(
            store(&src, &archive, NAME, STALE).unwrap(),
            Stored::Exists { bytes: 3_000_000 }
        );

        let mut other = data.clone();
        other[2_999_999] ^= 1;
        fs::write(&src, &other).unwrap();
        let err = store(&src, &archive, NAME, STALE).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        assert_eq!(fs::read(&dest).unwrap(), data, "never overwritten");
    }

    #[test]
    fn a_copy_of_the_wrong_size_is_never_committed() {
        let d = tempdir("short");
        let src = d.0.join("seg");
        fs::write(&src, vec![1u8; 8 << 20]).unwrap();
        let archive = d.0.join("archive");
        let err = stage(&src, &archive, NAME, STALE, Compression::None)
            .unwrap()
            .commit(Some(16 << 20))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("copied 8388608 bytes of a 16777216-byte segment"),
            "{err}"
        );
        assert!(!archive.join(NAME).exists());
        assert_eq!(fs::read_dir(archive.join(TMP_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn symlinked_entry_is_refused() {
        let d = tempdir("link");
        let src = d.0.join("seg");
        fs::write(&src, b"x").unwrap();
        let archive = d.0.join("archive");
        std::os::unix::fs::symlink(d.0.join("elsewhere"), archive.join(NAME)).unwrap();
        let err = store(&src, &archive, NAME, STALE).unwrap_err();
        assert!(matches!(err, StoreError::NotRegular { .. }), "{err}");
        assert!(!d.0.join("elsewhere").exists());
    }

    #[test]
    fn stale_temp_files_are_cleaned_and_fresh_live_ones_kept() {
        let d = tempdir("stale");
        let archive = d.0.join("archive");
        let tmp = archive.join(TMP_DIR);
        fs::create_dir(&tmp).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).unwrap();
        let host = crate::sys::host_tag();
        // pid 1 is alive (init) and its file is fresh: kept. A dead pid's file goes.
        let live = tmp.join(format!("{NAME}.{host}.1.tmp"));
        let dead = tmp.join(format!("{NAME}.{host}.{}.tmp", i32::MAX));
        let elsewhere = tmp.join(format!("{NAME}.another-host.{}.tmp", i32::MAX));
        let foreign = tmp.join("README");
        for f in [&live, &dead, &elsewhere, &foreign] {
            fs::write(f, b"partial").unwrap();
        }
        let src = d.0.join("seg");
        fs::write(&src, b"whole").unwrap();
        store(&src, &archive, "000000010000000000000002", STALE).unwrap();
        assert!(live.exists());
        assert!(!dead.exists());
        assert!(elsewhere.exists(), "another host's file goes by age only");
        store(&src, &archive, "000000010000000000000003", Duration::ZERO).unwrap();
        assert!(
            !live.exists(),
            "older than the limit: stale whoever wrote it"
        );
        assert!(
            foreign.exists(),
            "a name walguard never creates is never deleted"
        );
    }

    #[test]
    fn a_symlinked_temp_area_is_refused_and_its_target_untouched() {
        let d = tempdir("tmplink");
        let archive = d.0.join("archive");
        let victim = d.0.join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join(NAME), b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, archive.join(TMP_DIR)).unwrap();
        let src = d.0.join("seg");
        fs::write(&src, b"whole").unwrap();
        let err = store(&src, &archive, "000000010000000000000002", Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("is not a real directory"), "{err}");
        assert_eq!(fs::read(victim.join(NAME)).unwrap(), b"precious");
    }

    #[test]
    fn compressed_copies_read_back_identical_and_count_as_existing() {
        let d = tempdir("zstd");
        let src = d.0.join("seg");
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i / 1000 % 7) as u8).collect();
        fs::write(&src, &data).unwrap();
        let archive = d.0.join("archive");
        let zstd = Compression::Zstd { level: 3 };
        let stored = stage(&src, &archive, NAME, STALE, zstd)
            .unwrap()
            .commit(Some(4_000_000))
            .unwrap();
        let Stored::Copied { bytes, stored } = stored else {
            panic!("{stored:?}")
        };
        assert_eq!(bytes, 4_000_000);
        assert!(stored < bytes / 10, "compressed to {stored}");
        let on_disk = archive.join(format!("{NAME}.zst"));
        assert_eq!(
            zstd::decode_all(fs::File::open(&on_disk).unwrap()).unwrap(),
            data
        );
        assert!(!archive.join(NAME).exists());
        // Identical decompressed bytes are "exists", whichever form is asked for now.
        for again in [zstd, Compression::None] {
            assert_eq!(
                stage(&src, &archive, NAME, STALE, again)
                    .unwrap()
                    .commit(Some(4_000_000))
                    .unwrap(),
                Stored::Exists { bytes: 4_000_000 }
            );
        }
        assert!(!archive.join(NAME).exists(), "no second form was written");
        // Different bytes: refused, and the archived file is left alone.
        let mut other = data.clone();
        other[123] ^= 1;
        fs::write(&src, &other).unwrap();
        let err = stage(&src, &archive, NAME, STALE, zstd)
            .unwrap()
            .commit(None)
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        // A damaged .zst under the name: refused as damaged, never overwritten.
        let mut bytes = fs::read(&on_disk).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0xFF;
        fs::write(&on_disk, &bytes).unwrap();
        fs::write(&src, &data).unwrap();
        let err = stage(&src, &archive, NAME, STALE, zstd)
            .unwrap()
            .commit(None)
            .unwrap_err();
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
        assert_eq!(fs::read(&on_disk).unwrap(), bytes);
    }

    #[test]
    fn missing_source_leaves_nothing() {
        let d = tempdir("missing");
        let archive = d.0.join("archive");
        let err = store(&d.0.join("nope"), &archive, NAME, STALE).unwrap_err();
        assert!(err.to_string().starts_with("cannot open"), "{err}");
        assert!(!archive.join(NAME).exists());
    }
}

//! The durable, never-overwriting copy into the archive directory.
//!
//! The file is written under a temporary name in the temp area, fsynced, then
//! hard-linked to its final name. `link(2)` fails if the final name exists, so no
//! existing file is ever replaced, and a crash leaves either no final file or the whole
//! one. The archive directory is then fsynced so that the new name survives a crash.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, linkat, openat, unlinkat};

use super::area::ArchiveDir;
use super::{StoreError, commit};

#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// Copied now.
    Copied { bytes: u64 },
    /// Already archived with identical bytes (PostgreSQL retried after a crash).
    Exists { bytes: u64 },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// True when both files hold the same bytes. Reads in large blocks: a segment is 16 MiB+.
fn same_content(a: &mut File, b: &mut File) -> io::Result<bool> {
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
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

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
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
    name: String,
    /// The temporary name and file; `None` when the final name was already taken.
    tmp: Option<(String, File)>,
    bytes: u64,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some((tmp, _)) = &self.tmp {
            let _ = unlinkat(&self.dir.tmp, tmp, AtFlags::empty());
        }
    }
}

/// Copies `src` into a temporary file in `dir`'s temp area (no fsync yet), unless
/// `dir/name` exists already. `name` must be a validated WAL file name (no `/`, no `..`).
pub fn stage(
    src: &Path,
    dir: &Path,
    name: &str,
    stale_after: Duration,
) -> Result<Staged, StoreError> {
    let dir = ArchiveDir::open(dir)?;
    let mut staged = Staged {
        src: src.to_path_buf(),
        name: name.to_string(),
        tmp: None,
        bytes: 0,
        dir,
    };
    let dest = staged.dir.path.join(name);
    if staged
        .dir
        .entry_type(name)
        .map_err(io_err("cannot stat", &dest))?
        .is_some()
    {
        return Ok(staged);
    }
    staged.dir.clean_stale(stale_after);
    let tmp_name = staged.dir.temp_name(name);
    let tmp_path = staged.dir.path.join(super::area::TMP_DIR).join(&tmp_name);
    let mut input = File::open(src).map_err(io_err("cannot open", src))?;
    let output = openat(
        &staged.dir.tmp,
        &tmp_name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR, // WAL holds every row of the database
    )
    .map(File::from)
    .map_err(|e| io_err("cannot create", &tmp_path)(e.into()))?;
    let mut output = &staged.tmp.insert((tmp_name, output)).1; // dropping `staged` removes it
    // std::io::copy uses copy_file_range(2) between files: no user-space buffer.
    staged.bytes = io::copy(&mut input, &mut output).map_err(io_err("cannot write", &tmp_path))?;
    Ok(staged)
}

impl Staged {
    /// Makes the copy durable and visible: check it is exactly `expected` bytes (the
    /// segment size the decision validated; `None` for files of any size), fsync it,
    /// link it to its final name (failing if that name exists: nothing is ever
    /// replaced), fsync the directory.
    pub fn commit(mut self, expected: Option<u64>) -> Result<Stored, StoreError> {
        let Some((tmp, output)) = self.tmp.take() else {
            return self.existing(expected);
        };
        let result = self.link(&tmp, output, expected);
        let _ = unlinkat(&self.dir.tmp, &tmp, AtFlags::empty());
        result
    }

    fn link(&self, tmp: &str, output: File, expected: Option<u64>) -> Result<Stored, StoreError> {
        let dest = self.dir.path.join(&self.name);
        if let Some(expected) = expected
            && self.bytes != expected
        {
            return Err(StoreError::Short {
                src: self.src.clone(),
                copied: self.bytes,
                expected,
            });
        }
        output.sync_all().map_err(io_err("cannot fsync", &dest))?;
        drop(output);
        let guard = commit::begin().map_err(|_| StoreError::Aborted)?;
        match linkat(
            &self.dir.tmp,
            tmp,
            &self.dir.fd,
            &self.name,
            AtFlags::empty(),
        ) {
            Ok(()) => {}
            // Another run (PostgreSQL's retry racing a manual one) got there first.
            Err(rustix::io::Errno::EXIST) => {
                drop(guard);
                return self.existing(expected);
            }
            Err(e) => return Err(io_err("cannot link into place", &dest)(e.into())),
        }
        self.dir.sync().map_err(|e| StoreError::Undurable {
            dest: dest.clone(),
            cause: e.to_string(),
        })?;
        guard.done();
        Ok(Stored::Copied { bytes: self.bytes })
    }

    /// The final name is taken: identical bytes are success, made durable first (the
    /// earlier run may have crashed before its fsyncs); anything else is refused.
    fn existing(&self, expected: Option<u64>) -> Result<Stored, StoreError> {
        let dest = self.dir.path.join(&self.name);
        if self
            .dir
            .entry_type(&self.name)
            .map_err(io_err("cannot stat", &dest))?
            != Some(FileType::RegularFile)
        {
            return Err(StoreError::NotRegular { dest });
        }
        let mut archived = self
            .dir
            .open_file(&self.name)
            .map_err(io_err("cannot read", &dest))?;
        let mut src = File::open(&self.src).map_err(io_err("cannot read", &self.src))?;
        let bytes = archived
            .metadata()
            .map_err(io_err("cannot stat", &dest))?
            .len();
        let same =
            same_content(&mut src, &mut archived).map_err(io_err("cannot compare with", &dest))?;
        if !same || expected.is_some_and(|e| e != bytes) {
            return Err(StoreError::Conflict { dest });
        }
        archived.sync_all().map_err(io_err("cannot fsync", &dest))?;
        self.dir.sync()?;
        Ok(Stored::Exists { bytes })
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
        stage(src, dir, name, stale_after)?.commit(None)
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
            Stored::Copied { bytes: 3_000_000 }
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
        let err = stage(&src, &archive, NAME, STALE)
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
    fn missing_source_leaves_nothing() {
        let d = tempdir("missing");
        let archive = d.0.join("archive");
        let err = store(&d.0.join("nope"), &archive, NAME, STALE).unwrap_err();
        assert!(err.to_string().starts_with("cannot open"), "{err}");
        assert!(!archive.join(NAME).exists());
    }
}

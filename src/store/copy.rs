//! The durable, never-overwriting copy into the archive directory.
//!
//! The file is written under a temporary name in `ARCHIVE_DIR/.walguard-tmp/`, fsynced,
//! then hard-linked to its final name. `link(2)` fails if the final name exists, so no
//! existing file is ever replaced, and a crash leaves either no final file or the whole
//! one. The archive directory is then fsynced so that the new name survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use thiserror::Error;

/// Where temporary files live, inside the archive directory (same file system, so the
/// final link is atomic).
pub const TMP_DIR: &str = ".walguard-tmp";

#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// Copied now.
    Copied { bytes: u64 },
    /// Already archived with identical bytes (PostgreSQL retried after a crash).
    Exists { bytes: u64 },
}

#[derive(Debug, Error)]
pub enum CopyError {
    #[error(
        "{dest} already exists with different content: refusing to overwrite it; \
         find out which server wrote it (two primaries archiving to one directory?) before moving it away"
    )]
    Conflict { dest: PathBuf },
    #[error("{dest} is not a regular file: refusing to write through it")]
    NotRegular { dest: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CopyError + 'a {
    move |source| CopyError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Removes the temporary file unless the copy got far enough to not need it.
struct TempFile<'a>(&'a Path);

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

/// True when both files hold the same bytes. Reads in large blocks: a segment is 16 MiB+.
fn same_content(a: &Path, b: &Path) -> Result<bool, CopyError> {
    let mut fa = File::open(a).map_err(io_err("cannot read", a))?;
    let mut fb = File::open(b).map_err(io_err("cannot read", b))?;
    let la = fa.metadata().map_err(io_err("cannot stat", a))?.len();
    let lb = fb.metadata().map_err(io_err("cannot stat", b))?.len();
    if la != lb {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba).map_err(io_err("cannot read", a))?;
        let m = read_full(&mut fb, &mut bb).map_err(io_err("cannot read", b))?;
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

/// What to do when the final name is already taken.
fn existing(src: &Path, dest: &Path) -> Result<Stored, CopyError> {
    let meta = fs::symlink_metadata(dest).map_err(io_err("cannot stat", dest))?;
    if !meta.file_type().is_file() {
        return Err(CopyError::NotRegular {
            dest: dest.to_path_buf(),
        });
    }
    if same_content(src, dest)? {
        Ok(Stored::Exists { bytes: meta.len() })
    } else {
        Err(CopyError::Conflict {
            dest: dest.to_path_buf(),
        })
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes temporary files left by runs that died (kill -9, power loss): their writer is
/// gone, or they are older than `stale_after` (no live run lasts longer than its timeout).
fn clean_stale(tmp_dir: &Path, stale_after: Duration) {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.rsplit_once('.'))
            .and_then(|(_, pid)| pid.parse::<i32>().ok());
        let old = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > stale_after);
        let orphan = pid.is_none_or(|pid| pid != std::process::id() as i32 && !process_alive(pid));
        if old || orphan {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), CopyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot fsync directory", dir))
}

/// A copy under a temporary name: neither durable nor visible until [`Staged::commit`].
/// Dropping it removes the temporary file, so a held segment leaves nothing behind.
pub struct Staged {
    src: PathBuf,
    dir: PathBuf,
    dest: PathBuf,
    /// `None` when the final name was already taken at staging time.
    tmp: Option<(PathBuf, File)>,
    bytes: u64,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some((tmp, _)) = &self.tmp {
            let _ = fs::remove_file(tmp);
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
) -> Result<Staged, CopyError> {
    let mut staged = Staged {
        src: src.to_path_buf(),
        dir: dir.to_path_buf(),
        dest: dir.join(name),
        tmp: None,
        bytes: 0,
    };
    if fs::symlink_metadata(&staged.dest).is_ok() {
        return Ok(staged);
    }
    let tmp_dir = dir.join(TMP_DIR);
    match fs::DirBuilder::new().mode(0o700).create(&tmp_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => clean_stale(&tmp_dir, stale_after),
        Err(e) => return Err(io_err("cannot create", &tmp_dir)(e)),
    }
    let tmp = tmp_dir.join(format!("{name}.{}", std::process::id()));
    let mut input = File::open(src).map_err(io_err("cannot open", src))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600) // WAL holds every row of the database
        .open(&tmp)
        .map_err(io_err("cannot create", &tmp))?;
    let copied = copy_all(src, &mut input, &mut output, &tmp);
    staged.tmp = Some((tmp, output)); // from here on, dropping `staged` removes it
    staged.bytes = copied?;
    Ok(staged)
}

fn copy_all(src: &Path, input: &mut File, output: &mut File, tmp: &Path) -> Result<u64, CopyError> {
    // std::io::copy uses copy_file_range(2) between files: no user-space buffer.
    let bytes = io::copy(input, output).map_err(io_err("cannot write", tmp))?;
    let expected = input.metadata().map_err(io_err("cannot stat", src))?.size();
    if bytes != expected {
        return Err(io_err("short copy of", src)(io::Error::other(format!(
            "copied {bytes} of {expected} bytes"
        ))));
    }
    Ok(bytes)
}

impl Staged {
    /// Makes the copy durable and visible: fsync the file, link it to its final name
    /// (failing if that name exists: nothing is ever replaced), fsync the directory.
    pub fn commit(mut self) -> Result<Stored, CopyError> {
        let Some((tmp, output)) = self.tmp.take() else {
            return existing(&self.src, &self.dest);
        };
        let _guard = TempFile(&tmp);
        output.sync_all().map_err(io_err("cannot fsync", &tmp))?;
        drop(output);
        match fs::hard_link(&tmp, &self.dest) {
            Ok(()) => {}
            // Another run (PostgreSQL's retry racing a manual one) got there first.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return existing(&self.src, &self.dest);
            }
            Err(e) => return Err(io_err("cannot link into place", &self.dest)(e)),
        }
        sync_dir(&self.dir)?;
        Ok(Stored::Copied { bytes: self.bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    ) -> Result<Stored, CopyError> {
        stage(src, dir, name, stale_after)?.commit()
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
        assert!(matches!(err, CopyError::Conflict { .. }), "{err}");
        assert_eq!(fs::read(&dest).unwrap(), data, "never overwritten");
    }

    #[test]
    fn symlinked_entry_is_refused() {
        let d = tempdir("link");
        let src = d.0.join("seg");
        fs::write(&src, b"x").unwrap();
        let archive = d.0.join("archive");
        std::os::unix::fs::symlink(d.0.join("elsewhere"), archive.join(NAME)).unwrap();
        let err = store(&src, &archive, NAME, STALE).unwrap_err();
        assert!(matches!(err, CopyError::NotRegular { .. }), "{err}");
        assert!(!d.0.join("elsewhere").exists());
    }

    #[test]
    fn stale_temp_files_are_cleaned_and_fresh_live_ones_kept() {
        let d = tempdir("stale");
        let archive = d.0.join("archive");
        let tmp = archive.join(TMP_DIR);
        fs::create_dir(&tmp).unwrap();
        // pid 1 is alive (init) and its file is fresh: kept. A dead pid's file goes.
        let live = tmp.join(format!("{NAME}.1"));
        let dead = tmp.join(format!("{NAME}.{}", i32::MAX));
        fs::write(&live, b"partial").unwrap();
        fs::write(&dead, b"partial").unwrap();
        let src = d.0.join("seg");
        fs::write(&src, b"whole").unwrap();
        store(&src, &archive, "000000010000000000000002", STALE).unwrap();
        assert!(live.exists());
        assert!(!dead.exists());
        store(&src, &archive, "000000010000000000000003", Duration::ZERO).unwrap();
        assert!(
            !live.exists(),
            "older than the limit: stale whoever wrote it"
        );
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

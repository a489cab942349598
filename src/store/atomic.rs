//! The one way walguard writes a file that others read whole: under an unpredictable
//! temporary name, created exclusively (`O_EXCL`) and never through a symlink
//! (`O_NOFOLLOW`), relative to a directory descriptor, then linked (never replacing) or
//! renamed into place. The archive copy, `restore` and `metrics_file` all use it; a
//! temporary file that is not put in place is removed when dropped, and one left by a
//! run that died is removed by a later run ([`clean_stale`]).

use std::ffi::OsStr;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::{
    AtFlags, CWD, Dir as DirIter, FileType, Mode, OFlags, fchmod, linkat, openat, renameat, statat,
    unlinkat,
};

use crate::sys;

/// Temporary names end like this: `[.walguard-]FINAL.HOST.PID.RANDOM.tmp`.
const SUFFIX: &str = ".tmp";
/// The prefix of a temporary name in a directory that is not walguard's own (`pg_wal`,
/// the metrics directory): hidden, and never mistaken for anyone else's file.
const HIDDEN: &str = ".walguard-";
/// Hex digits of the random part.
const RANDOM_LEN: usize = 16;
/// Another host's temporary file is only removed once it is surely abandoned: no run
/// lasts this long, whatever that host's `timeout`.
const OTHER_HOST_STALE: Duration = Duration::from_secs(3600);

/// A directory held open: every create, link, rename and delete in it is relative to
/// this descriptor, so a symlink swapped in for the path later redirects nothing.
#[derive(Clone)]
pub struct Dir {
    pub path: PathBuf,
    pub fd: Arc<OwnedFd>,
}

impl Dir {
    /// Opens `path` as a directory (a symlink at `path` itself is the operator's choice).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            path: path.to_path_buf(),
            fd: Arc::new(fd),
        })
    }

    /// Opens `name` inside this directory, refusing a symlink there.
    pub fn open_subdir(&self, name: &str) -> io::Result<Dir> {
        let fd = openat(
            &*self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            path: self.path.join(name),
            fd: Arc::new(fd),
        })
    }

    /// Makes the directory's entries durable.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&*self.fd)?)
    }

    /// What `name` is here, without following a symlink; `None` if there is no entry.
    pub fn entry_type(&self, name: &str) -> io::Result<Option<FileType>> {
        match statat(&*self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens `name` here for reading, never through a symlink.
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        Ok(openat(
            &*self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)?)
    }

    /// A new temporary file here for `final_name`, readable and writable by its owner
    /// only; `hidden` prefixes `.walguard-` (in a directory walguard shares).
    pub fn temp(&self, final_name: &str, hidden: bool) -> io::Result<Temp> {
        let name = temp_name(final_name, hidden);
        let file = openat(
            &*self.fd,
            &name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .map(File::from)?;
        Ok(Temp {
            dir: self.clone(),
            name,
            file,
        })
    }

    /// Removes temporary files left by runs that died (kill -9, power loss), and nothing
    /// else: only names of walguard's own pattern (`hidden` or not, as this directory's
    /// are) for which `ours` accepts the final name, whose writer is gone (this host: its
    /// pid is dead, or the file is older than `stale_after`, which no live run outlasts;
    /// another host sharing the directory: by age alone).
    pub fn clean_stale(&self, hidden: bool, ours: fn(&str) -> bool, stale_after: Duration) {
        let Ok(listing) = DirIter::read_from(&*self.fd) else {
            return;
        };
        let host = sys::host_tag();
        let now = SystemTime::now();
        for entry in listing.flatten() {
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
            let Some(temp) = name.to_str().and_then(parse_temp_name) else {
                continue;
            };
            if temp.hidden != hidden || !ours(temp.final_name) {
                continue;
            }
            let Ok(st) = statat(&*self.fd, &name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                continue;
            }
            let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
            let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
            let stale = if temp.host == host {
                (temp.pid != std::process::id() as i32 && !sys::process_alive(temp.pid))
                    || age > stale_after
            } else {
                age > OTHER_HOST_STALE.max(stale_after)
            };
            if stale {
                let _ = unlinkat(&*self.fd, &name, AtFlags::empty());
            }
        }
    }
}

/// A temporary file not yet in place; dropping it removes it.
pub struct Temp {
    dir: Dir,
    name: String,
    file: File,
}

impl Temp {
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Where it is, for messages.
    pub fn path(&self) -> PathBuf {
        self.dir.path.join(&self.name)
    }

    /// Sets its permission bits exactly (the umask PostgreSQL gives its children, 077,
    /// would otherwise decide them).
    pub fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        Ok(fchmod(self.file().as_fd(), Mode::from_raw_mode(mode))?)
    }

    /// Links it to `dest` in `into`, failing with `AlreadyExists` if that name exists:
    /// nothing is ever replaced. The temporary name is removed either way.
    pub fn link(self, into: &Dir, dest: &str) -> io::Result<()> {
        Ok(linkat(
            &*self.dir.fd,
            &self.name,
            &*into.fd,
            dest,
            AtFlags::empty(),
        )?)
    }

    /// Renames it to `dest` in `into`, replacing what is there (atomically: a reader
    /// sees the old file or the new one, never part of one).
    pub fn rename(mut self, into: &Dir, dest: &str) -> io::Result<()> {
        renameat(&*self.dir.fd, &self.name, &*into.fd, dest)?;
        // Nothing left to remove.
        self.name.clear();
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = unlinkat(&*self.dir.fd, &self.name, AtFlags::empty());
        }
    }
}

/// 64 unpredictable bits: std's `RandomState` is seeded from the operating system's
/// random source, and the time and pid mixed in keep two calls apart.
fn random() -> u64 {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// A fresh temporary name for `final_name`.
pub fn temp_name(final_name: &str, hidden: bool) -> String {
    format!(
        "{}{final_name}.{}.{}.{:016x}{SUFFIX}",
        if hidden { HIDDEN } else { "" },
        sys::host_tag(),
        std::process::id(),
        random()
    )
}

/// What a temporary name of walguard's says.
#[derive(Debug, PartialEq, Eq)]
pub struct TempName<'a> {
    pub hidden: bool,
    pub final_name: &'a str,
    pub host: &'a str,
    pub pid: i32,
}

/// Parses `[.walguard-]FINAL.HOST.PID.RANDOM.tmp`, and the `FINAL.HOST.PID.tmp` of
/// walguard 0.1's archive temp area (so that an upgrade's leftovers are cleaned too);
/// `None` for anything else.
pub fn parse_temp_name(name: &str) -> Option<TempName<'_>> {
    let (hidden, rest) = match name.strip_prefix(HIDDEN) {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let rest = rest.strip_suffix(SUFFIX)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let rest = match rest.rsplit_once('.') {
        Some((before, random))
            if random.len() == RANDOM_LEN && random.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            before
        }
        _ => rest,
    };
    let (rest, pid) = rest.rsplit_once('.')?;
    if !digits(pid) {
        return None;
    }
    let (final_name, host) = rest.rsplit_once('.')?;
    if final_name.is_empty()
        || host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    Some(TempName {
        hidden,
        final_name,
        host,
        pid: pid.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn temp_names_parse_back_and_differ() {
        let a = temp_name("000000010000000000000001", false);
        let b = temp_name("000000010000000000000001", false);
        assert_ne!(a, b, "unpredictable: two names for one file differ");
        let parsed = parse_temp_name(&a).unwrap();
        assert_eq!(parsed.final_name, "000000010000000000000001");
        assert_eq!(parsed.pid, std::process::id() as i32);
        assert!(!parsed.hidden);
        let hidden = temp_name("walguard.prom", true);
        let parsed = parse_temp_name(&hidden).unwrap();
        assert!(parsed.hidden);
        assert_eq!(parsed.final_name, "walguard.prom");
        let cases = [
            (
                "000000010000000000000001.db1.4242.tmp",
                Some(("000000010000000000000001", "db1", 4242)),
            ),
            (
                "000000010000000000000001.zst.db-1_x.7.0123456789abcdef.tmp",
                Some(("000000010000000000000001.zst", "db-1_x", 7)),
            ),
            (
                ".walguard-RECOVERYXLOG.h.1.fedcba9876543210.tmp",
                Some(("RECOVERYXLOG", "h", 1)),
            ),
            ("000000010000000000000001", None),
            ("README", None),
            ("x.h.x1.tmp", None),
            ("x..1.tmp", None),
            (".h.1.tmp", None),
            (".tmp", None),
        ];
        for (name, want) in cases {
            let got = parse_temp_name(name).map(|t| (t.final_name, t.host, t.pid));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn written_renamed_linked_and_never_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let mut t = dir.temp("out", true).unwrap();
        t.file().write_all(b"one").unwrap();
        t.set_mode(0o644).unwrap();
        t.rename(&dir, "out").unwrap();
        let meta = std::fs::metadata(tmp.path().join("out")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        let mut t = dir.temp("out", true).unwrap();
        t.file().write_all(b"two").unwrap();
        let err = t.link(&dir, "out").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let mut text = String::new();
        dir.open_file("out")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "one", "link never replaces");
        // A dropped temp leaves nothing; only "out" remains.
        drop(dir.temp("x", true).unwrap());
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("link")).unwrap();
        assert!(
            dir.open_file("link").is_err(),
            "no reading through a symlink"
        );
    }

    #[test]
    fn only_dead_writers_files_are_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let host = sys::host_tag();
        let live = format!(".walguard-RECOVERYXLOG.{host}.1.0000000000000000.tmp");
        let dead = format!(
            ".walguard-RECOVERYXLOG.{host}.{}.0000000000000000.tmp",
            i32::MAX
        );
        let other = format!(
            ".walguard-something.{host}.{}.0000000000000000.tmp",
            i32::MAX
        );
        for f in [
            &live,
            &dead,
            &other,
            &"000000010000000000000001".to_string(),
        ] {
            std::fs::write(tmp.path().join(f), b"x").unwrap();
        }
        dir.clean_stale(true, |n| n == "RECOVERYXLOG", Duration::from_secs(60));
        assert!(tmp.path().join(&live).exists(), "pid 1 is alive");
        assert!(!tmp.path().join(&dead).exists());
        assert!(tmp.path().join(&other).exists(), "not a name it accepts");
        assert!(tmp.path().join("000000010000000000000001").exists());
    }
}

//! `restore_prefetch`: after a `restore`, a background worker (the hidden `walguard
//! prefetch`, one per server) decompresses the next segments into the staging area
//! while PostgreSQL replays, so that the next `restore` is a rename instead of a
//! decompression on the startup process's critical path. PostgreSQL never waits for the
//! worker: a segment it has not staged yet is restored as without it. It stops, and
//! removes the area, when recovery ends, when the server stops or restarts, or after a
//! minute without a new request (a standby that streams).

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use walguard_core::wal::{SegmentSize, WalFile};

pub use crate::cli::PrefetchJob as Job;
use crate::exit::Exit;
use crate::observe::local::{self, Recovery};
use crate::store::prefetch::{Staging, staged_name};
use crate::store::restore::{self, SegmentCheck};

/// How long the worker stays without a new request.
const IDLE: Duration = Duration::from_secs(60);
/// How often it looks for a new request while its window is full.
const POLL: Duration = Duration::from_millis(20);

/// The staging area `restore` may serve from and feed: `None` when prefetching is off,
/// for anything but a segment, or when no server in recovery runs in `pgdata` (walguard
/// run by hand).
pub fn area(
    window: u32,
    recovery: Recovery,
    pgdata: &Path,
    wal: &WalFile,
    dest: &Path,
) -> Option<Staging> {
    if window == 0 || !matches!(wal, WalFile::Segment(_)) || recovery == Recovery::None {
        return None;
    }
    let owner = local::postmaster_stamp(pgdata)?;
    let staging = Staging::beside(dest);
    staging.adopt(&owner).ok().map(|()| staging)
}

/// After `restore` wrote `segment`: records it as the newest asked for, and starts the
/// worker unless one runs. Failing to is no failure of the restore: PostgreSQL then
/// simply waits for each decompression, as without prefetching.
pub fn after_restore(staging: &Staging, job: &Job, pgdata: &Path, segment: &str) {
    if staging.set_want(segment).is_err() {
        return;
    }
    if !matches!(staging.lock(), Ok(Some(_))) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--pgdata")
        .arg(pgdata)
        .arg("prefetch")
        .arg(&job.archive)
        .arg(&job.dest_path)
        .arg(job.segment_bytes.to_string())
        .arg(job.window.to_string())
        .arg("--stale-after")
        .arg(job.stale_after.to_string());
    if job.check_headers {
        cmd.arg("--check-headers");
    }
    if let Some(sysid) = job.sysid {
        cmd.arg("--sysid").arg(sysid.to_string());
    }
    // Its own process group: the signals PostgreSQL sends the startup process's group
    // are not for it (it watches the server itself), and nobody waits for it.
    let _ = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

/// The segments after `want`, `window` of them, on its timeline.
fn following(want: &str, size: SegmentSize, window: u32) -> Vec<String> {
    let Ok(WalFile::Segment(mut id)) = want.parse::<WalFile>() else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for _ in 0..window {
        let Some(next) = id.next(size) else { break };
        names.push(next.to_string());
        id = next;
    }
    names
}

/// The worker: keeps the `window` segments after the newest asked for staged, oldest
/// first, until recovery ends, the server it belongs to is gone, or no request came
/// for [`IDLE`]; then removes the area. Always exit 0: nobody reads it.
pub fn run(job: &Job, pgdata: &Path) -> Exit {
    let staging = Staging::beside(&job.dest_path);
    let (Some(owner), Ok(size)) = (
        local::postmaster_stamp(pgdata),
        SegmentSize::new(job.segment_bytes),
    ) else {
        return Exit::Ok;
    };
    if !staging.owned_by(&owner) {
        return Exit::Ok;
    }
    let Ok(Some(_lock)) = staging.lock() else {
        return Exit::Ok;
    };
    let stale_after = Duration::from_secs(job.stale_after);
    let (mut last_want, mut since) = (None, Instant::now());
    // A file that failed to stage is not tried again until the next request: `restore`
    // meets it itself, and says what is wrong as the restore rules say.
    let mut failed = BTreeSet::new();
    loop {
        // A server killed with -9 leaves its postmaster.pid: its pid tells.
        let current = local::postmaster_stamp(pgdata);
        if current.as_deref() != Some(owner.as_str())
            || !local::postmaster_alive(&owner)
            || local::recovery(pgdata) == Recovery::None
            || !staging.owned_by(&owner)
        {
            break;
        }
        let want = staging.want();
        if want != last_want {
            (last_want, since) = (want.clone(), Instant::now());
            failed.clear();
        }
        let window = want
            .as_deref()
            .map(|w| following(w, size, job.window))
            .unwrap_or_default();
        let mut staged = BTreeSet::new();
        for entry in staging.entries() {
            match staged_name(&entry).filter(|n| window.iter().any(|w| w == n)) {
                Some(name) => {
                    staged.insert(name.to_string());
                }
                None => staging.remove(&entry),
            }
        }
        let next = window
            .iter()
            .find(|n| !staged.contains(*n) && !failed.contains(*n));
        let progressed =
            next.is_some_and(|name| stage(job, &staging, name, stale_after, &mut failed));
        if !progressed {
            if since.elapsed() > IDLE {
                break;
            }
            std::thread::sleep(POLL);
        }
    }
    staging.remove_all();
    Exit::Ok
}

/// Stages `name` when the archive holds it: true when it did.
fn stage(
    job: &Job,
    staging: &Staging,
    name: &str,
    stale_after: Duration,
    failed: &mut BTreeSet<String>,
) -> bool {
    let Ok(Some(found)) = restore::find(&job.archive, name) else {
        return false;
    };
    let check = name
        .parse::<WalFile>()
        .ok()
        .and_then(|wal| SegmentCheck::of(&wal, job.check_headers, job.sysid));
    let dest = staging.dir.join(found.key());
    if restore::write(found, &dest, check.as_ref(), stale_after).is_err() {
        failed.insert(name.to_string());
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_follows_the_request_on_its_timeline() {
        let size = SegmentSize::new(16 << 20).unwrap();
        assert_eq!(
            following("0000000200000000000000FE", size, 3),
            [
                "0000000200000000000000FF",
                "000000020000000100000000",
                "000000020000000100000001"
            ]
        );
        assert!(following("00000002.history", size, 3).is_empty());
        assert!(following("00000001FFFFFFFF000000FF", size, 3).is_empty());
    }
}

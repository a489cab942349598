//! The commit phase (link into place, fsync the directory) as one step that a timeout or
//! a signal can neither interrupt nor misreport: either it never starts, and then nothing
//! was archived, or it finishes, and then the file is durably in the archive. The
//! watchdog and the signal handler ask this module before they end the process.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Commits under way (one per process in practice; tests run several).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// A commit finished: a file is durably in the archive.
static DONE: AtomicBool = AtomicBool::new(false);
/// The process is ending (timeout or signal): no commit may start.
static ENDING: AtomicBool = AtomicBool::new(false);
/// A termination signal arrived while committing; honoured once the commit is done.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Where the commit stands when the process is asked to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No commit started, and none will: nothing was archived.
    NotStarted,
    /// A commit is under way.
    Committing,
    /// The file is durably in the archive.
    Committed,
}

/// A commit under way, until dropped; [`Guard::done`] first records that it succeeded.
pub struct Guard(());

/// The process is ending: the commit may not start.
#[derive(Debug)]
pub struct Aborted;

/// Enters the commit phase, unless the process has begun to end. (`begin` raises ACTIVE
/// then looks at ENDING; `stop` raises ENDING then looks at ACTIVE: with sequential
/// consistency one of them always sees the other.)
pub fn begin() -> Result<Guard, Aborted> {
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    if ENDING.load(Ordering::SeqCst) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
        return Err(Aborted);
    }
    Ok(Guard(()))
}

impl Guard {
    /// The file is durable under its final name.
    pub fn done(self) {
        DONE.store(true, Ordering::SeqCst);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// For whoever wants to end the process: bars a commit from starting and says where it
/// stands. Only atomics: safe in a signal handler.
pub fn stop() -> Phase {
    ENDING.store(true, Ordering::SeqCst);
    if ACTIVE.load(Ordering::SeqCst) > 0 {
        Phase::Committing
    } else if DONE.load(Ordering::SeqCst) {
        Phase::Committed
    } else {
        Phase::NotStarted
    }
}

/// Waits up to `limit` for a commit under way to finish; where it stands then.
pub fn settle(limit: Duration) -> Phase {
    let start = Instant::now();
    loop {
        match stop() {
            Phase::Committing if start.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(5))
            }
            phase => return phase,
        }
    }
}

/// Records a termination signal that arrived during a commit (signal-handler safe).
pub fn note_signal() {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// True when a termination signal arrived while committing.
pub fn signalled() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}

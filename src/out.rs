//! What walguard prints, without ever panicking: `println!` and `eprintln!` panic when
//! the pipe is closed, and on the archive path a panic (in the watchdog thread, once)
//! can keep walguard from exiting while PostgreSQL's archiver waits.

use std::io::Write as _;

/// One line to stderr; a failed write is ignored (the decision log has the facts).
pub fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// A report to stdout; a failed write (a closed pipe) is an error, not a panic.
pub fn show(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Bytes from a command walguard runs, passed on to its own stderr (PostgreSQL's log).
pub fn pass_on(bytes: &[u8]) {
    let _ = std::io::stderr().write_all(bytes);
}

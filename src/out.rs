//! What walguard prints, without ever panicking: `println!` and `eprintln!` panic when
//! the pipe is closed, and on the archive path a panic (in the watchdog thread, once)
//! can keep walguard from exiting while PostgreSQL's archiver waits.

use std::io::Write as _;
use std::sync::OnceLock;

/// Where [`say`] goes instead of stderr, when set.
static SINK: OnceLock<fn(&str)> = OnceLock::new();

/// Sends every later [`say`] to `sink`: the archive module makes them server log
/// messages (with the server's log_line_prefix). Only the first call counts.
pub fn set_sink(sink: fn(&str)) {
    let _ = SINK.set(sink);
}

/// One line to stderr; a failed write is ignored (the decision log has the facts).
pub fn say(text: &str) {
    match SINK.get() {
        Some(sink) => sink(text),
        None => {
            let _ = writeln!(std::io::stderr(), "{text}");
        }
    }
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

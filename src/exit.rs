//! Exit codes, in one place, and how errors become the messages behind exit 2.

use anyhow::{Result, anyhow};

/// The process exit status; the numbers are part of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Archived (or would be; or already there with identical bytes).
    Ok = 0,
    /// Held: a listed replica still needs the segment.
    Held = 1,
    /// Error: nothing was archived.
    Error = 2,
}

/// The whole error chain on one line, outermost first, skipping a cause whose text its
/// parent already printed (the postgres crate repeats its cause in its own message).
pub fn describe_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Adds "what to do" after an error's "what failed: why".
pub trait Hint<T> {
    fn hint(self, what_to_do: &str) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> Hint<T> for std::result::Result<T, E> {
    fn hint(self, what_to_do: &str) -> Result<T> {
        self.map_err(|e| anyhow!("{}; {what_to_do}", describe_error(&e.into())))
    }
}

//! The `on_event` events, and which one a decision is.

use crate::decision::Verdict;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The first hold of a segment (not every retry).
    Held,
    /// The first archive of a segment after it was held.
    Released,
    /// A safety valve archived a held segment.
    Valve,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Held => "held",
            Event::Released => "released",
            Event::Valve => "valve",
        }
    }
}

/// Which event `verdict` is. `failed_before` says whether the previous attempt at this
/// file failed (PostgreSQL's `last_failed_wal` names it), `None` when unknown: then
/// every hold counts as a first one.
pub fn of(verdict: &Verdict, failed_before: Option<bool>) -> Option<Event> {
    match (verdict, failed_before) {
        (v, _) if v.valve.is_some() => Some(Event::Valve),
        (v, Some(true)) if v.archive => Some(Event::Released),
        (v, Some(false) | None) if !v.archive => Some(Event::Held),
        _ => None,
    }
}

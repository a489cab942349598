//! walguard's functional core: everything that decides, and nothing that touches the world.
//!
//! WAL names, positions and segment sizes ([`wal`]), the replicas list format ([`list`]),
//! sizes ([`units`]), what was observed ([`observation`]), the decision with its policy and
//! safety valves ([`decision`]), the `on_event` events ([`event`]) and the decision-log
//! line format ([`logfmt`]). No file system, network, process or clock access: callers pass
//! every fact in, which keeps this table- and property-testable and lets a PostgreSQL
//! archive module link it. `tests/purity.rs` keeps it that way.

#![forbid(unsafe_code)]

pub mod cleanup;
pub mod decision;
pub mod event;
pub mod header;
pub mod list;
pub mod logfmt;
pub mod observation;
pub mod template;
pub mod units;
pub mod verify;
pub mod wal;

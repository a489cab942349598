//! walguard: a WAL-aware `archive_command` guard for PostgreSQL.
//!
//! The binary (`src/main.rs`) is a thin wrapper around [`commands::run`]. The pure
//! core is [`wal`], [`replicas`] and [`decision`]; the adapters around it are
//! [`observation`] (the database), [`archive_copy`] (the file system) and
//! [`decision_log`] (the log). See ARCHITECTURE.md.

pub mod archive_copy;
pub mod cli;
pub mod commands;
pub mod conninfo;
pub mod decision;
pub mod decision_log;
pub mod observation;
pub mod replicas;
pub mod settings;
pub mod wal;

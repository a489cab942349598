//! The archive store: the durable, never-overwriting copy into the archive directory.

pub mod copy;

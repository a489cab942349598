//! Observing the server: one SQL round trip ([`sql`]) with libpq's conventions
//! ([`conninfo`]), walsender process titles as a fallback ([`titles`]), and local facts
//! about the data directory ([`local`]).

pub mod conninfo;
pub mod local;
pub mod sql;
pub mod titles;
pub mod tls;

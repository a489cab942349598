//! The replicas list file: read (refusing one that every user may write), parsed by the
//! core, and its host names resolved (DNS, /etc/hosts) when `resolve = true`.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

use thiserror::Error;
use walguard_core::list::{self, Entry, ListError, Lookup, Selector};

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read the replicas list {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    List(#[from] ListError),
}

/// Looks every host name up. Only costs anything when the list has host names. A name
/// that does not resolve is recorded, not fatal: that replica is simply not there (it
/// holds, and the safety valves still apply), while a DNS outage must never stop all
/// archiving.
pub fn resolve(entries: &mut [Entry]) {
    for entry in entries.iter_mut() {
        if let Selector::Host { name, lookup } = &mut entry.selector {
            *lookup = match (name.as_str(), 0).to_socket_addrs() {
                Ok(found) => {
                    let mut list: Vec<IpAddr> = found.map(|sa| sa.ip().to_canonical()).collect();
                    list.sort();
                    list.dedup();
                    Lookup::Found(list)
                }
                Err(e) => Lookup::Failed(e.to_string()),
            };
        }
    }
}

/// Reads, parses and (when asked) resolves the list file.
pub fn load(path: &Path, resolve_names: bool) -> Result<Vec<Entry>, LoadError> {
    let file = path.display().to_string();
    let (text, _) = super::files::read_protected(path).map_err(|source| LoadError::Read {
        file: file.clone(),
        source,
    })?;
    let mut entries = list::parse(&text, &file)?;
    if resolve_names {
        resolve(&mut entries);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use walguard_core::list::parse;

    #[test]
    fn resolves_localhost_and_records_unknown_names() {
        let mut entries = parse("localhost\nno-such-host.invalid", "l").unwrap();
        resolve(&mut entries);
        match &entries[0].selector {
            Selector::Host {
                lookup: Lookup::Found(a),
                ..
            } => assert!(a.iter().any(|ip| ip.is_loopback()), "{a:?}"),
            other => panic!("{other:?}"),
        }
        match &entries[1].selector {
            Selector::Host {
                lookup: Lookup::Failed(e),
                ..
            } => assert!(!e.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}

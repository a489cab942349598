//! The replicas list file: read (refusing one that every user may write), parsed by the
//! core, and its host names resolved (DNS, /etc/hosts) when `resolve = true`.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

use thiserror::Error;
use walguard_core::list::{self, Entry, ListError, Selector};

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

/// Looks every host name up. Only costs anything when the list has host names.
pub fn resolve(entries: &mut [Entry], file: &str) -> Result<(), ListError> {
    for entry in entries.iter_mut() {
        if let Selector::Host { name, addrs } = &mut entry.selector {
            let found = (name.as_str(), 0)
                .to_socket_addrs()
                .map_err(|e| ListError::Line {
                    file: file.to_string(),
                    line: entry.line,
                    problem: format!(
                        "host name {name:?} does not resolve ({e}): fix the name, add it to /etc/hosts, or use its IP address"
                    ),
                })?;
            let mut list: Vec<IpAddr> = found.map(|sa| sa.ip().to_canonical()).collect();
            list.sort();
            list.dedup();
            *addrs = Some(list);
        }
    }
    Ok(())
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
        resolve(&mut entries, &file)?;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use walguard_core::list::parse;

    #[test]
    fn resolves_localhost_and_reports_unknown_names() {
        let mut ok = parse("localhost", "l").unwrap();
        resolve(&mut ok, "l").unwrap();
        match &ok[0].selector {
            Selector::Host { addrs: Some(a), .. } => {
                assert!(a.iter().any(|ip| ip.is_loopback()), "{a:?}")
            }
            other => panic!("{other:?}"),
        }
        let mut bad = parse("\nno-such-host.invalid", "l").unwrap();
        let err = resolve(&mut bad, "l").unwrap_err().to_string();
        assert!(
            err.starts_with("l:2: host name \"no-such-host.invalid\" does not resolve"),
            "{err}"
        );
    }
}

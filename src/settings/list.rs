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

/// Looks every host name up, all at once, waiting at most `limit` for the resolver. Only
/// costs anything when the list has host names. A name that does not resolve (or not in
/// time) is recorded, not fatal: that replica is simply not there (it holds, and the
/// safety valves still apply), while a DNS outage must never stop all archiving, nor
/// hold PostgreSQL's archiver (the archive module runs in it) longer than `limit`.
pub fn resolve(entries: &mut [Entry], limit: std::time::Duration) {
    resolve_with(entries, limit, |name| {
        (name, 0)
            .to_socket_addrs()
            .map(|found| found.map(|sa| sa.ip()).collect())
    });
}

/// [`resolve`] with `lookup` as the resolver.
fn resolve_with(
    entries: &mut [Entry],
    limit: std::time::Duration,
    lookup: fn(&str) -> std::io::Result<Vec<IpAddr>>,
) {
    let names: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.selector {
            Selector::Host { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    for name in names {
        let tx = tx.clone();
        // A lookup that never answers leaves its thread behind: it ends with the
        // resolver's own timeout, or with the process.
        std::thread::spawn(move || {
            let found = lookup(&name).map(|found| {
                let mut list: Vec<IpAddr> = found.into_iter().map(|ip| ip.to_canonical()).collect();
                list.sort();
                list.dedup();
                list
            });
            let _ = tx.send((name, found.map_err(|e| e.to_string())));
        });
    }
    drop(tx);
    let deadline = std::time::Instant::now() + limit;
    let mut answers = std::collections::HashMap::new();
    while let Ok((name, found)) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        answers.insert(name, found);
    }
    for entry in entries.iter_mut() {
        if let Selector::Host { name, lookup } = &mut entry.selector {
            *lookup = match answers.get(name.as_str()) {
                Some(Ok(list)) => Lookup::Found(list.clone()),
                Some(Err(e)) => Lookup::Failed(e.clone()),
                None => Lookup::Failed(format!(
                    "no answer from the resolver within {}",
                    humantime::format_duration(limit)
                )),
            };
        }
    }
}

/// Reads, parses and (when asked) resolves the list file, waiting at most `limit` for
/// the resolver.
pub fn load(
    path: &Path,
    resolve_names: bool,
    limit: std::time::Duration,
) -> Result<Vec<Entry>, LoadError> {
    let file = path.display().to_string();
    let (text, _) = super::files::read_protected(path).map_err(|source| LoadError::Read {
        file: file.clone(),
        source,
    })?;
    let mut entries = list::parse(&text, &file)?;
    if resolve_names {
        resolve(&mut entries, limit);
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
        resolve(&mut entries, std::time::Duration::from_secs(10));
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

    #[test]
    fn a_resolver_that_hangs_costs_the_limit_and_no_more() {
        let mut entries = parse("hangs.example\nfast.example", "l").unwrap();
        let start = std::time::Instant::now();
        resolve_with(
            &mut entries,
            std::time::Duration::from_millis(300),
            |name| {
                if name == "hangs.example" {
                    std::thread::sleep(std::time::Duration::from_secs(30));
                }
                Ok(vec!["10.0.0.9".parse().unwrap()])
            },
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        match &entries[0].selector {
            Selector::Host {
                lookup: Lookup::Failed(e),
                ..
            } => assert!(
                e.contains("no answer from the resolver within 300ms"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &entries[1].selector,
            Selector::Host {
                lookup: Lookup::Found(a),
                ..
            } if a == &vec!["10.0.0.9".parse::<IpAddr>().unwrap()]
        ));
    }
}

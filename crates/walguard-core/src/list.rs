//! The replicas list format (`slaves.list`): one replica per line, each an IP address, a
//! host name, or `app:NAME` (an `application_name`). Resolving host names is I/O and
//! happens outside the core.

use core::net::IpAddr;
use std::fmt;

use thiserror::Error;

/// How one list line identifies a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Matches `pg_stat_replication.client_addr`.
    Addr(IpAddr),
    /// With `resolve = true`, matches any address the name resolved to; with
    /// `resolve = false`, matches `client_hostname` (which the server fills only with
    /// `log_hostname`).
    Host { name: String, lookup: Lookup },
    /// Matches `application_name`.
    App(String),
}

/// What resolving a host name found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not resolved (`resolve = false`): the name is compared with `client_hostname`.
    NotAsked,
    Found(Vec<IpAddr>),
    /// The resolver's error: the replica counts as not connected (it holds, and the
    /// valves still apply), never as a broken list.
    Failed(String),
}

/// One line of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub selector: Selector,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Addr(addr) => write!(f, "{addr}"),
            Selector::Host { name, .. } => write!(f, "{name}"),
            Selector::App(name) => write!(f, "app:{name}"),
        }
    }
}

#[derive(Debug, Error)]
pub enum ListError {
    #[error("{file}:{line}: {problem}")]
    Line {
        file: String,
        line: usize,
        problem: String,
    },
}

/// Host names as RFC 1123 allows them (letters, digits, `-`, dots), plus `_` which
/// /etc/hosts files use in practice.
fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses the list text without touching the network: host names come back unresolved.
/// `file` only names the source in error messages.
pub fn parse(text: &str, file: &str) -> Result<Vec<Entry>, ListError> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fail = |problem: String| ListError::Line {
            file: file.to_string(),
            line,
            problem,
        };
        if content.split_whitespace().nth(1).is_some() {
            return Err(fail(format!(
                "{content:?} has more than one word: put one replica per line"
            )));
        }
        let selector = if let Some(app) = content.strip_prefix("app:") {
            if app.is_empty() || !app.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(fail(format!(
                    "{content:?}: app: needs the replica's application_name, like app:standby1"
                )));
            }
            Selector::App(app.to_string())
        } else if let Ok(addr) = content.trim_matches(['[', ']']).parse::<IpAddr>() {
            Selector::Addr(addr.to_canonical())
        } else if is_host_name(content) && !content.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        {
            Selector::Host {
                name: content.to_ascii_lowercase(),
                lookup: Lookup::NotAsked,
            }
        } else {
            return Err(fail(format!(
                "{content:?} is not an IP address, a host name or app:NAME"
            )));
        };
        entries.push(Entry { line, selector });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms_and_comments() {
        let text = "# slaves.list\n\n10.0.0.12   # primary's neighbour\n::1\n[fe80::1]\n::ffff:10.0.0.9\nReplica-B.internal\napp:standby3\n   \t\n10.0.0.12\n";
        let got = parse(text, "slaves.list").unwrap();
        let sel: Vec<_> = got.iter().map(|e| (e.line, e.selector.clone())).collect();
        assert_eq!(
            sel,
            vec![
                (3, Selector::Addr("10.0.0.12".parse().unwrap())),
                (4, Selector::Addr("::1".parse().unwrap())),
                (5, Selector::Addr("fe80::1".parse().unwrap())),
                (6, Selector::Addr("10.0.0.9".parse().unwrap())),
                (
                    7,
                    Selector::Host {
                        name: "replica-b.internal".into(),
                        lookup: Lookup::NotAsked
                    }
                ),
                (8, Selector::App("standby3".into())),
                (10, Selector::Addr("10.0.0.12".parse().unwrap())),
            ]
        );
        assert_eq!(got[5].to_string(), "app:standby3");
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [
            ("10.0.0.1 10.0.0.2", 1),
            ("ok.host\napp:", 2),
            ("\n\n10.0.0.300", 3),
            ("a..b", 1),
            ("host/name", 1),
            ("-bad.example", 1),
            ("app:two words", 1),
            ("1.2.3", 1),
        ];
        for (text, line) in cases {
            let err = parse(text, "/etc/walguard/slaves.list")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("/etc/walguard/slaves.list:{line}: ")),
                "{text:?} -> {err}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text, "f");
        }

        #[test]
        fn every_address_round_trips(addr: IpAddr, comment in "[ -~]{0,20}") {
            let text = format!("{addr} #{comment}\n");
            let got = parse(&text, "f").unwrap();
            prop_assert_eq!(&got[0].selector, &Selector::Addr(addr.to_canonical()));
        }
    }
}

//! The replicas list format (`slaves.list`): one replica per line, each an IP address, a
//! host name, or `app:NAME` (an `application_name`), then options that apply to that
//! replica alone: `upstream=LINE` (it streams from that node, not the primary),
//! `slot=NAME` (its physical replication slot), `position=flush|replay` and
//! `keep_segments=N`. Resolving host names is I/O and happens outside the core.

use core::net::IpAddr;
use std::fmt;

use thiserror::Error;

use crate::observation::Position;

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
    pub options: Options,
}

/// What a line says of its replica beyond who it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The node it streams from, as that node's own line reads (`app:r1`): the line is
    /// checked there, not on the primary.
    pub upstream: Option<String>,
    /// Its physical replication slot on the server it streams from.
    pub slot: Option<String>,
    /// Which of its positions must pass a segment, instead of the setting `position`.
    pub position: Option<Position>,
    /// Extra segments it must be past, instead of the setting `keep_segments`.
    pub keep_segments: Option<u64>,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display(&self.selector))
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

/// How one word names a replica: `app:NAME`, an address, or a host name.
fn parse_selector(word: &str) -> Result<Selector, String> {
    if let Some(app) = word.strip_prefix("app:") {
        if app.is_empty() || !app.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{word:?}: app: needs the replica's application_name, like app:standby1"
            ));
        }
        Ok(Selector::App(app.to_string()))
    } else if let Ok(addr) = word.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(Selector::Addr(addr.to_canonical()))
    } else if is_host_name(word) && !word.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        Ok(Selector::Host {
            name: word.to_ascii_lowercase(),
            lookup: Lookup::NotAsked,
        })
    } else {
        Err(format!(
            "{word:?} is not an IP address, a host name or app:NAME"
        ))
    }
}

/// A selector as a line writes it (`app:r1`, `10.0.0.12`, `replica-b.internal`): how an
/// `upstream=` names a line, and how `self` does.
pub fn display(selector: &Selector) -> String {
    match selector {
        Selector::Addr(addr) => addr.to_string(),
        Selector::Host { name, .. } => name.clone(),
        Selector::App(name) => format!("app:{name}"),
    }
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
        let mut words = content.split_whitespace();
        let first = words.next().unwrap_or("");
        let selector = parse_selector(first).map_err(fail)?;
        let mut options = Options::default();
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                return Err(fail(format!(
                    "{word:?} is not an option (key=value): put one replica per line, options after it, like app:r3 upstream=app:r1"
                )));
            };
            let twice = || fail(format!("{key} is given twice"));
            match key {
                "upstream" => {
                    let up = parse_selector(value)
                        .map_err(|p| fail(format!("upstream={value}: {p}")))?;
                    if options.upstream.replace(display(&up)).is_some() {
                        return Err(twice());
                    }
                }
                "slot" => {
                    if value.is_empty()
                        || value.len() > 63
                        || !value
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    {
                        return Err(fail(format!(
                            "slot={value:?}: a replication slot name is lower-case letters, digits and _ (at most 63)"
                        )));
                    }
                    if options.slot.replace(value.to_string()).is_some() {
                        return Err(twice());
                    }
                }
                "position" => {
                    let p = value.parse::<Position>().map_err(fail)?;
                    if options.position.replace(p).is_some() {
                        return Err(twice());
                    }
                }
                "keep_segments" => {
                    let n = value.parse::<u64>().map_err(|_| {
                        fail(format!(
                            "keep_segments={value:?} is not a whole number of segments"
                        ))
                    })?;
                    if options.keep_segments.replace(n).is_some() {
                        return Err(twice());
                    }
                }
                _ => {
                    return Err(fail(format!(
                        "unknown option {key:?}: a line takes upstream=, slot=, position= and keep_segments="
                    )));
                }
            }
        }
        entries.push(Entry {
            line,
            selector,
            options,
        });
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

    #[test]
    fn options_per_line() {
        let got = parse(
            "app:r1\napp:r3 upstream=app:r1 slot=r3_slot # cascaded\nreplica-b position=flush keep_segments=4\n",
            "l",
        )
        .unwrap();
        assert_eq!(got[0].options, Options::default());
        assert_eq!(
            got[1].options,
            Options {
                upstream: Some("app:r1".into()),
                slot: Some("r3_slot".into()),
                ..Options::default()
            }
        );
        assert_eq!(got[2].options.position, Some(Position::Flush));
        assert_eq!(got[2].options.keep_segments, Some(4));
        assert_eq!(got[1].to_string(), "app:r3", "a line shows as its replica");
        let cases = [
            ("app:r1 upstream=", "upstream="),
            ("app:r1 upstream=a/b", "upstream=a/b"),
            ("app:r1 slot=Bad-Name", "replication slot name"),
            ("app:r1 position=sent", "not a position"),
            ("app:r1 keep_segments=-1", "whole number"),
            ("app:r1 colour=blue", "unknown option \"colour\""),
            ("app:r1 slot=a slot=b", "slot is given twice"),
            ("app:r1 r2", "is not an option"),
        ];
        for (text, needle) in cases {
            let err = parse(text, "l").unwrap_err().to_string();
            assert!(
                err.starts_with("l:1: ") && err.contains(needle),
                "{text}: {err}"
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

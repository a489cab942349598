//! The decision log's line format (logfmt: `key=value`, values with spaces quoted): one
//! writer for the command and the archive module, and the borrowing parser `walguard log`
//! streams a big log with.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::SystemTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Appends `value` to `out`, quoted when logfmt needs it.
fn push_value(out: &mut String, value: &str) {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One line: `ts=... level=... pid=...` then `fields` in order, newline-terminated.
pub fn format_line(ts: SystemTime, level: Level, pid: u32, fields: &[(&str, String)]) -> String {
    let mut out = format!(
        "ts={} level={} pid={pid}",
        humantime::format_rfc3339_millis(ts),
        level.as_str(),
    );
    for (key, value) in fields {
        out.push(' ');
        out.push_str(key);
        out.push('=');
        push_value(&mut out, value);
    }
    out.push('\n');
    out
}

/// Splits one logfmt line into key/value pairs; `None` if it is not logfmt. Borrows
/// from the line unless a value has escapes: this runs a million times on a big log.
pub fn parse_logfmt(line: &str) -> Option<Vec<(&str, Cow<'_, str>)>> {
    let line = line.trim_end();
    let bytes = line.as_bytes();
    let mut pairs = Vec::with_capacity(16);
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i == bytes.len() {
            return (!pairs.is_empty()).then_some(pairs);
        }
        let key_end = i + memchr::memchr(b'=', &bytes[i..])?;
        let key = &line[i..key_end];
        if key.is_empty() || key.bytes().any(|b| b.is_ascii_whitespace() || b == b'"') {
            return None;
        }
        i = key_end + 1;
        if bytes.get(i) == Some(&b'"') {
            let value_start = i + 1;
            let mut escaped = false;
            i = value_start;
            loop {
                i += memchr::memchr2(b'"', b'\\', &bytes[i..])?;
                if bytes[i] == b'"' {
                    break;
                }
                escaped = true;
                i += 2;
                if i > bytes.len() {
                    return None;
                }
            }
            let raw = &line[value_start..i];
            i += 1; // closing quote
            if i < bytes.len() && bytes[i] != b' ' {
                return None;
            }
            pairs.push((
                key,
                if escaped {
                    Cow::Owned(unescape(raw)?)
                } else {
                    Cow::Borrowed(raw)
                },
            ));
        } else {
            let value_end = memchr::memchr(b' ', &bytes[i..]).map_or(bytes.len(), |n| i + n);
            pairs.push((key, Cow::Borrowed(&line[i..value_end])));
            i = value_end;
        }
    }
}

/// Undoes the escapes the decision log writes: `\"`, `\\`, `\n`, `\u{hex}`.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|c| *c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn logfmt_line() {
        let ts = UNIX_EPOCH + Duration::from_millis(1_795_307_985_825);
        let line = format_line(
            ts,
            Level::Info,
            8312,
            &[
                ("cmd", "archive".into()),
                ("reason", "replica app:r2 not connected".into()),
                ("q", "say \"hi\"\\".into()),
                ("empty", String::new()),
                ("nl", "a\nb\tc".into()),
            ],
        );
        let want = "ts=2026-11-22T00:39:45.825Z level=info pid=8312 cmd=archive reason=\"replica app:r2 not connected\" q=\"say \\\"hi\\\"\\\\\" empty=\"\" nl=\"a\\nb\\u{9}c\"\n";
        assert_eq!(line, want);
    }

    #[test]
    fn logfmt_round_trip_with_the_writer() {
        let fields = vec![
            ("cmd", "archive".to_string()),
            (
                "reason",
                "replica \"app:r2\" not connected\nx\\y\u{1}".to_string(),
            ),
            ("empty", String::new()),
        ];
        let line = format_line(SystemTime::UNIX_EPOCH, Level::Warn, 1, &fields);
        let pairs = parse_logfmt(&line).unwrap();
        assert_eq!((pairs[1].0, pairs[1].1.as_ref()), ("level", "warn"));
        let got: Vec<(&str, &str)> = pairs[3..].iter().map(|(k, v)| (*k, v.as_ref())).collect();
        let want: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn garbage_is_not_logfmt() {
        for bad in [
            "",
            "   ",
            "hello world",
            "a=\"unterminated",
            "=x",
            "a=\"q\"junk",
            "k\"=v",
        ] {
            assert_eq!(parse_logfmt(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_written_value_reads_back(value in "\\PC{0,40}") {
            let line = format_line(SystemTime::UNIX_EPOCH, Level::Info, 1, &[("reason", value.clone())]);
            let pairs = parse_logfmt(&line).unwrap();
            prop_assert_eq!(pairs[3].1.as_ref(), value.as_str());
        }
    }
}

//! Command templates (`archive_via`, `archive_check_via`): `%p` and `%f` replaced by the
//! path and the name so that the shell reads each as exactly that value, wherever the
//! operator put it: bare (`%p`), inside single quotes (`'%p'`) or inside double quotes
//! (`"s3://b/wal/%f"`). A value that cannot be written safely where it stands, or a
//! template whose quotes do not close, is refused; it never reaches the shell as
//! something else (a file stored under another name is a gap in the archive).

use std::fmt;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("the command template {template:?} {problem}")]
pub struct TemplateError {
    pub template: String,
    pub problem: String,
}

/// Where the shell is, at a point of the template.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoting {
    Bare,
    Single,
    Double,
}

impl fmt::Display for Quoting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quoting::Bare => "unquoted",
            Quoting::Single => "inside single quotes",
            Quoting::Double => "inside double quotes",
        })
    }
}

/// `value` as one shell word: single-quoted, with embedded quotes closed and escaped.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// `value` written at a point quoted as `quoting`, reading back as itself; `None` when it
/// cannot be (a `'` inside single quotes; `"`, `\`, `$` or a backquote inside double).
fn place(value: &str, quoting: Quoting) -> Option<String> {
    match quoting {
        Quoting::Bare => Some(shell_quote(value)),
        Quoting::Single => (!value.contains('\'')).then(|| value.to_string()),
        Quoting::Double => (!value.contains(['"', '\\', '$', '`'])).then(|| value.to_string()),
    }
}

/// The template with `%p` and `%f` replaced by `path` and `name` (each reading back as
/// itself wherever it stands), `%%` by `%`; any other `%x` is left as written.
pub fn expand(template: &str, path: &str, name: &str) -> Result<String, TemplateError> {
    expand_noting(template, path, name).map(|(out, _)| out)
}

/// [`expand`], and whether the template named the file at all (`%p` or `%f`).
fn expand_noting(template: &str, path: &str, name: &str) -> Result<(String, bool), TemplateError> {
    let fail = |problem: String| TemplateError {
        template: template.to_string(),
        problem,
    };
    let mut out = String::with_capacity(template.len() + path.len() + name.len());
    let mut named = false;
    let mut quoting = Quoting::Bare;
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoting) {
            ('%', _) => {
                let (what, value) = match chars.peek() {
                    Some('p') => ("%p", path),
                    Some('f') => ("%f", name),
                    Some('%') => {
                        chars.next();
                        out.push('%');
                        continue;
                    }
                    _ => {
                        out.push('%');
                        continue;
                    }
                };
                chars.next();
                let placed = place(value, quoting).ok_or_else(|| {
                    fail(format!(
                        "has {what} {quoting}, where its value {value:?} cannot be written as itself: put {what} outside quotes"
                    ))
                })?;
                out.push_str(&placed);
                named = true;
            }
            ('\\', Quoting::Bare | Quoting::Double) => {
                out.push(c);
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            ('\'', Quoting::Bare) => {
                quoting = Quoting::Single;
                out.push(c);
            }
            ('\'', Quoting::Single) | ('"', Quoting::Double) => {
                quoting = Quoting::Bare;
                out.push(c);
            }
            ('"', Quoting::Bare) => {
                quoting = Quoting::Double;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    if quoting != Quoting::Bare {
        return Err(fail(format!("ends {quoting}: a quote is not closed")));
    }
    Ok((out, named))
}

/// Checks a template once, at start: with any real path and name the only failures left
/// are values no PostgreSQL path or WAL name has. A template that names no file (no `%p`
/// or `%f`) is refused: it would archive the same thing whatever the file, and inside an
/// archive_command PostgreSQL has already replaced a bare `%p` (write `%%p` there).
pub fn check(template: &str) -> Result<(), TemplateError> {
    let (_, named) = expand_noting(
        template,
        "pg_wal/000000010000000000000001",
        "000000010000000000000001",
    )?;
    if !named {
        return Err(TemplateError {
            template: template.to_string(),
            problem: "names no file: it needs %p (the path) or %f (the name); inside an \
                      archive_command, where PostgreSQL replaces %p itself, write %%p"
                .into(),
        });
    }
    Ok(())
}

/// The program a command runs, for the log (`via=pgbackrest`): the first word that is
/// neither a `NAME=VALUE` assignment nor `env` and its options, without its directory.
/// An assignment may carry a secret (`AWS_SECRET_ACCESS_KEY=...`): it is never shown.
pub fn program(command: &str) -> &str {
    let is_assignment = |w: &str| {
        w.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit()
        })
    };
    let mut words = command.split_whitespace();
    let mut after_env = false;
    while let Some(word) = words.next() {
        if is_assignment(word) {
            continue;
        }
        if word == "env" || word.ends_with("/env") {
            after_env = true;
            continue;
        }
        if after_env && word.starts_with('-') {
            // env's options that take a value: -u NAME, -C DIR, -S STRING.
            if matches!(
                word,
                "-u" | "--unset" | "-C" | "--chdir" | "-S" | "--split-string"
            ) {
                words.next();
            }
            continue;
        }
        return word.rsplit('/').next().unwrap_or(word);
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PATH: &str = "pg_wal/000000010000000000000003";
    const NAME: &str = "000000010000000000000003";

    #[test]
    fn every_quoting_gives_the_value_itself() {
        let cases = [
            (
                "pgbackrest --stanza=main archive-push %p",
                "pgbackrest --stanza=main archive-push 'pg_wal/000000010000000000000003'",
            ),
            (
                "aws s3 cp %p \"s3://b/wal/%f\"",
                "aws s3 cp 'pg_wal/000000010000000000000003' \"s3://b/wal/000000010000000000000003\"",
            ),
            (
                "cp '%p' '/archive/%f'",
                "cp 'pg_wal/000000010000000000000003' '/archive/000000010000000000000003'",
            ),
            ("echo 100%% %x %", "echo 100% %x %"),
            ("echo \\\"%f", "echo \\\"'000000010000000000000003'"),
            ("echo \"a\\\"%f\"", "echo \"a\\\"000000010000000000000003\""),
        ];
        for (template, want) in cases {
            assert_eq!(expand(template, PATH, NAME).unwrap(), want, "{template}");
        }
    }

    #[test]
    fn what_cannot_be_written_safely_is_refused() {
        let err = expand("cp %p '/archive/%f'", "it's", NAME);
        assert!(err.is_ok(), "the bare %p is quoted: {err:?}");
        let err = expand("cp '%p' /a", "it's", NAME).unwrap_err();
        assert!(err.to_string().contains("%p inside single quotes"), "{err}");
        let err = expand("cp \"%p\" /a", "$(id)", NAME).unwrap_err();
        assert!(err.to_string().contains("inside double quotes"), "{err}");
        for unbalanced in ["cp %p 's3://x/%f", "cp \"%p /a", "echo '"] {
            let err = check(unbalanced).unwrap_err();
            assert!(
                err.to_string().contains("not closed"),
                "{unbalanced}: {err}"
            );
            assert!(
                err.to_string().contains(&format!("{unbalanced:?}")),
                "names the template"
            );
        }
        assert!(check("pgbackrest --stanza=main archive-push %p").is_ok());
        let err = check("pgbackrest --stanza=main archive-push pg_wal/000000010000000000000003")
            .unwrap_err();
        assert!(err.to_string().contains("names no file"), "{err}");
    }

    #[test]
    fn the_program_never_shows_an_assignment() {
        let cases = [
            (
                "/usr/bin/pgbackrest --stanza=main archive-push %p",
                "pgbackrest",
            ),
            ("AWS_SECRET_ACCESS_KEY=abc aws s3 cp %p s3://b/%f", "aws"),
            ("env -u HOME A=1 B=2 /opt/wal-g/wal-g wal-push %p", "wal-g"),
            (
                "/usr/bin/env AWS_SECRET_ACCESS_KEY=s3cret wal-g wal-push %p",
                "wal-g",
            ),
            ("A=1", ""),
            ("", ""),
        ];
        for (command, want) in cases {
            assert_eq!(program(command), want, "{command}");
        }
    }

    proptest! {
        /// Whatever the template, expansion never panics, and a value containing no quote
        /// or shell character is always accepted where a template is balanced.
        #[test]
        fn expansion_never_panics(template in "[ -~]{0,40}", value in "[ -~]{0,20}") {
            let _ = expand(&template, &value, &value);
            let _ = program(&template);
            if check(&template).is_ok() {
                prop_assert!(expand(&template, PATH, NAME).is_ok());
            }
        }
    }
}

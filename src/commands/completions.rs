//! `walguard completions SHELL` and `walguard man`: generated from the clap definitions.

use std::fmt::Write as _;

use clap::Args;

use crate::cli;
use crate::exit::Exit;
use crate::out::{say, show};
use crate::settings::Layer;

pub fn completions(shell: clap_complete::Shell) -> Exit {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli::command(), "walguard", &mut script);
    match show(&String::from_utf8_lossy(&script)) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            say(&format!(
                "walguard: error: cannot write the completion script: {e}"
            ));
            Exit::Error
        }
    }
}

/// Text for a roff paragraph: backslashes and hyphens escaped, no line starting a request.
fn roff(text: &str) -> String {
    text.replace('\\', "\\e")
        .replace('-', "\\-")
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const LIST: &str = "One replica per line; blank lines and # comments are ignored. A line is an IP \
address (matches pg_stat_replication.client_addr), a host name (resolved to its addresses, or \
with resolve = false compared with client_hostname), or app:NAME (an application_name, for \
replicas on one host or on the Unix socket). Each line needs its own connected walsender: two \
lines with one address mean two replicas from that address. A connected replica that no line \
names holds the archive too, unless unlisted = \"ignore\".";

const EXIT: &str = "0: archive: the file is durably in the archive; check: it would be archived; \
status: archiving flows. 1: held: a listed replica still needs the segment, and PostgreSQL keeps \
it and retries (for status: held now, or the segment being written will be). 2: error: bad \
input or configuration, the database unreachable, an I/O failure; for status: archiving \
is failing. walguard never exits above 2 and never dies by a signal it can handle.";

const FILES: &str = "/etc/walguard/walguard.toml: the settings, in TOML, as in SETTINGS below \
(refused when every user may write it). /etc/walguard/slaves.list: the replicas list (refused \
when every user may write it). The decision log (log_file): one logfmt line per decision, mode \
0600. ARCHIVE_DIR/.walguard-tmp: walguard's temporary files; a real directory owned by the \
server's user, mode 0700.";

const ENVIRONMENT: &str = "WALGUARD_CONFIG names the config file. Every setting also has a \
WALGUARD_ variable (WALGUARD_ARCHIVE_DIR, WALGUARD_REPLICAS, ...; listed with each setting \
below); a flag beats the variable, which beats the file. Without conninfo, libpq's PGHOST, \
PGPORT, PGUSER, PGDATABASE, PGPASSWORD and PGPASSFILE (or ~/.pgpass) are used; the host \
defaults to the socket directory /var/run/postgresql.";

/// The manual page: clap's title, synopsis, description and options, then the commands,
/// settings, list format, exit status, environment and files, with no reference to a page
/// that does not exist.
fn manual() -> std::io::Result<String> {
    let cmd = cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut head = Vec::new();
    man.render_title(&mut head)?;
    man.render_name_section(&mut head)?;
    man.render_synopsis_section(&mut head)?;
    man.render_description_section(&mut head)?;
    let mut out = String::from_utf8_lossy(&head).into_owned();
    out.push_str(".SH COMMANDS\n");
    for sub in cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set())
    {
        let args: Vec<String> = sub
            .get_positionals()
            .map(|a| a.get_id().to_string().to_uppercase())
            .collect();
        let _ = writeln!(
            out,
            ".TP\n\\fBwalguard {}\\fR {}\n{}",
            sub.get_name(),
            roff(&args.join(" ")),
            roff(&sub.get_about().map(|a| a.to_string()).unwrap_or_default())
        );
    }
    out.push_str(".SH SETTINGS\nEach setting is a key in the config file, a long flag, and a WALGUARD_ variable.\n");
    for arg in Layer::augment_args(clap::Command::new("settings")).get_arguments() {
        let long = arg.get_long().unwrap_or_default();
        let env = arg
            .get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            ".TP\n\\fB{}\\fR (\\fB\\-\\-{}\\fR, \\fB{}\\fR)\n{}",
            roff(&long.replace('-', "_")),
            roff(long),
            roff(&env),
            roff(&arg.get_help().map(|h| h.to_string()).unwrap_or_default())
        );
    }
    for (title, text) in [
        ("REPLICAS LIST", LIST),
        ("EXIT STATUS", EXIT),
        ("ENVIRONMENT", ENVIRONMENT),
        ("FILES", FILES),
    ] {
        let _ = writeln!(out, ".SH {title}\n{}", roff(text));
    }
    let mut tail = Vec::new();
    man.render_version_section(&mut tail)?;
    out.push_str(&String::from_utf8_lossy(&tail));
    Ok(out)
}

pub fn man() -> Exit {
    match manual().and_then(|page| show(&page)) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            say(&format!(
                "walguard: error: cannot write the manual page: {e}"
            ));
            Exit::Error
        }
    }
}

//! Whether the server walguard asks is the one running it: a copy restored from a base
//! backup inherits archive_command, and with it a conninfo pointing at production.

use anyhow::{Result, bail};
use walguard_core::header::ControlStamp;
use walguard_core::observation::Observation;
use walguard_core::wal::WalFile;

use crate::observe::{local, sql};
use crate::settings::{Settings, Source};

/// How long a history file or backup label waits to learn whether the server asked is
/// the one running walguard: such a file is archived at once, and an unreachable
/// server must not delay a failover.
const IDENTITY_PROBE: std::time::Duration = std::time::Duration::from_secs(3);
/// What was archived from a server that is not the one asked goes wrong quietly and
/// for good: a copy restored from a base backup inherits archive_command and a conninfo
/// pointing at the production primary, promotes to a timeline of its own, and its files
/// land in the production archive decided by production's positions (the system
/// identifier is the same). The server asked must be the one whose data directory this
/// is: the same last checkpoint in `global/pg_control` (read before and after asking,
/// as a checkpoint may fall in between), and no file of a timeline newer than its own.
pub fn same_server(
    settings: &Settings,
    obs: &Observation,
    wal: &WalFile,
    control_before: Option<ControlStamp>,
) -> Result<()> {
    let what_to_do = "nothing was archived. If this server was restored from a backup (or is a \
                      copy for tests), switch archiving off on it: ALTER SYSTEM SET archive_mode = off, \
                      then restart; otherwise point conninfo at this server (or leave host and port unset)";
    let timeline = match wal {
        WalFile::Segment(id) | WalFile::Partial(id) | WalFile::Backup(id, _) => id.timeline,
        WalFile::History(tli) => *tli,
    };
    if let Some(theirs) = obs.timeline.filter(|&t| !obs.in_recovery && timeline > t) {
        bail!(
            "{wal} is of timeline {timeline}, but the server at conninfo writes timeline {theirs}: \
             it is not the one running this archive_command; {what_to_do}"
        );
    }
    // A standby asking its primary (or the other way round): the same checkpoint and
    // even the same second can be copied, the state cannot.
    if let Some(ours) = local::control_in_recovery(&settings.pgdata)
        && ours != obs.in_recovery
    {
        bail!(
            "the server at conninfo is {}, but this data directory's server is {}: \
             it is not the one running this archive_command; {what_to_do}",
            if obs.in_recovery {
                "in recovery"
            } else {
                "a primary"
            },
            if ours { "in recovery" } else { "a primary" },
        );
    }
    let Some(theirs) = obs.control else {
        return Ok(());
    };
    let after = local::control_stamp(&settings.pgdata);
    match (control_before, after) {
        (None, None) => Ok(()),
        (before, after) if before == Some(theirs) || after == Some(theirs) => Ok(()),
        (before, after) => bail!(
            "the server at conninfo is not the one running this archive_command: its pg_control \
             says {theirs}, but this data directory's ({}/global/pg_control) says {}; {what_to_do}",
            settings.pgdata.display(),
            after
                .or(before)
                .map_or_else(|| "?".to_string(), |l| l.to_string()),
        ),
    }
}

/// The server's facts for [`same_server`] when a file needs no decision: asked briefly,
/// and only over SQL; `None` when it cannot be asked (the file then goes as always).
pub fn probe(settings: &Settings) -> Option<Observation> {
    if settings.source == Source::Ps {
        return None;
    }
    let target = super::gather::target(settings).ok()?;
    sql::observe_within(&target, IDENTITY_PROBE.min(settings.timeout / 2), false).ok()
}

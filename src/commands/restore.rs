//! `walguard restore WAL_NAME DEST_PATH`: PostgreSQL's restore_command.

use std::path::Path;

use anyhow::{Result, anyhow};
use walguard_core::logfmt::Level;
use walguard_core::wal::WalFile;

use super::invocation::Invocation;
use super::prefetch;
use crate::exit::{Exit, Hint};
use crate::observe::local::{self, Recovery};
use crate::settings::Settings;
use crate::store::restore::{self, Restored, SegmentCheck};

/// What a failed restore means for the server that asked, for the message.
fn consequence(recovery: Recovery) -> &'static str {
    match recovery {
        Recovery::Archive => {
            "nothing was restored; recovery STOPS here (exit 200) instead of taking this for the end \
             of the archive and promoting early: fix the archive (remount it, restore the file from a \
             copy) and start the server again, or set a recovery target before this file to end \
             recovery there on purpose"
        }
        Recovery::Standby => {
            "nothing was restored; the standby retries and streams from its primary meanwhile: fix the archive"
        }
        Recovery::None => "nothing was restored",
    }
}

/// Exit 0 restored, 1 not in the archive (PostgreSQL asks for files that do not exist,
/// such as the next timeline's history: quietly, no message and no log line). Any
/// failure is loud and, in an archive recovery, stops it (see `exit::StopRecovery`):
/// the dispatcher has set that up from [`recovery`] before anything could fail.
pub fn run(run: &Invocation, settings: &Settings, wal: &WalFile, dest: &Path) -> Result<Exit> {
    let recovery = local::recovery(&settings.pgdata);
    let archive = settings.archive_dir.as_deref().ok_or_else(|| {
        anyhow!("no archive directory: set archive_dir in the config file, --archive-dir, or WALGUARD_ARCHIVE_DIR")
    })?;
    let check = SegmentCheck::of(wal, settings.header_check, run.sysid);
    let staging = prefetch::area(
        settings.restore_prefetch,
        recovery,
        &settings.pgdata,
        wal,
        dest,
    );
    match restore::restore(
        archive,
        &run.wal,
        dest,
        check.as_ref(),
        settings.restore_timeout,
        staging.as_ref(),
    )
    .hint(consequence(recovery))?
    {
        Restored::Missing => Ok(Exit::NotFound),
        Restored::Written {
            bytes,
            from,
            prefetched,
        } => {
            let mut fields = vec![("from", from), ("bytes", bytes.to_string())];
            if prefetched {
                fields.push(("prefetched", "true".to_string()));
            }
            run.write(Level::Info, "restored", fields);
            if let Some(staging) = &staging {
                let job = prefetch::Job {
                    archive: archive.to_path_buf(),
                    dest_path: dest.to_path_buf(),
                    segment_bytes: bytes,
                    window: settings.restore_prefetch,
                    check_headers: check.is_some(),
                    sysid: run.sysid,
                    stale_after: settings.restore_timeout.as_secs().max(1),
                };
                prefetch::after_restore(staging, &job, &settings.pgdata, &run.wal);
            }
            Ok(Exit::Ok)
        }
    }
}

/// Sets up how this process fails before anything can: in an archive recovery every
/// failure (an error, the watchdog, a signal) must stop recovery.
pub fn prepare(pgdata: &Path) {
    if local::recovery(pgdata) == Recovery::Archive {
        crate::exit::stop_recovery_on_failure();
    }
}

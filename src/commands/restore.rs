//! `walguard restore WAL_NAME DEST_PATH`: PostgreSQL's restore_command.

use std::path::Path;

use anyhow::{Result, anyhow};
use walguard_core::logfmt::Level;
use walguard_core::wal::WalFile;

use super::invocation::Invocation;
use crate::exit::{Exit, Hint};
use crate::settings::Settings;
use crate::store::restore::{self, Restored, SegmentCheck};

/// Exit 0 restored, 1 not in the archive (PostgreSQL asks for files that do not exist,
/// such as the next timeline's history: quietly, no message and no log line), 2 damaged
/// or unreadable (loudly, naming the file).
pub fn run(run: &Invocation, settings: &Settings, wal: &WalFile, dest: &Path) -> Result<Exit> {
    let archive = settings.archive_dir.as_deref().ok_or_else(|| {
        anyhow!("no archive directory: set archive_dir in the config file, --archive-dir, or WALGUARD_ARCHIVE_DIR")
    })?;
    let check = match wal {
        WalFile::Segment(segment) if settings.header_check => Some(SegmentCheck {
            segment: *segment,
            sysid: run.sysid,
        }),
        _ => None,
    };
    match restore::restore(archive, &run.wal, dest, check.as_ref())
        .hint("nothing was restored; PostgreSQL will ask again or stop recovery")?
    {
        Restored::Missing => Ok(Exit::Held),
        Restored::Written { bytes, from } => {
            run.write(
                Level::Info,
                "restored",
                vec![("from", from), ("bytes", bytes.to_string())],
            );
            Ok(Exit::Ok)
        }
    }
}

//! `walguard log [FILE] [--json]`: summarise the decision log.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow};

use crate::exit::{Exit, Hint};
use crate::log::summary::{render, summarise};
use crate::out::show;

pub fn run(file: Option<&Path>, json: bool) -> Result<Exit> {
    let file = file.ok_or_else(|| {
        anyhow!("no log file: give one (walguard log FILE) or set log_file in the config file")
    })?;
    let f = std::fs::File::open(file)
        .with_context(|| format!("cannot read the decision log {}", file.display()))
        .hint("check the path and that you may read it")?;
    let reader = std::io::BufReader::with_capacity(1 << 16, f);
    let summary = summarise(reader, SystemTime::now())
        .with_context(|| format!("reading {}", file.display()))?;
    if json {
        show(&format!("{}\n", serde_json::to_string_pretty(&summary)?))?;
    } else {
        show(&render(&file.display().to_string(), &summary))?;
    }
    Ok(Exit::Ok)
}

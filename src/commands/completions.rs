//! `walguard completions SHELL` and `walguard man`: generated from the clap definitions.

use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::Exit;

pub fn completions(shell: clap_complete::Shell) -> Exit {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "walguard",
        &mut std::io::stdout(),
    );
    Exit::Ok
}

pub fn man() -> Exit {
    match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("walguard: error: cannot write the manual page: {e}");
            Exit::Error
        }
    }
}

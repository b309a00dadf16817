//! `aca-reconciler`: parse the command line, run the command, map the outcome to an exit code.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use aca_reconciler::{cli::Cli, commands};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = commands::run(cli, &mut out).and_then(|code| out.flush().map(|()| code));
    match result {
        Ok(code) => code,
        // `aca-reconciler schema | head` is not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aca-reconciler: {e:#}");
            ExitCode::from(1)
        }
    }
}

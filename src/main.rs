//! `aca-reconciler`: parse the command line, run the command, print its error once and map the
//! outcome to the exit code (0 success, 2 changes pending or drift, 1 failure; 130 on a second
//! signal). Nothing else in the program exits or chooses a code.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use aca_reconciler::cli::Cli;
use aca_reconciler::cmd;

/// jemalloc, configured in `.cargo/config.toml` to return freed memory to the OS at once
/// (glibc's malloc kept a convergence's peak resident for good: 56 MiB at rest for 1,000 apps,
/// about 30 MiB with jemalloc at the same code).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = cmd::name(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aca-reconciler: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = io::stdout();
    let result = runtime.block_on(async {
        tokio::select! {
            result = cmd::run(cli, &mut out) => Some(result),
            () = aca_reconciler::shutdown::forced() => None,
        }
    });
    let Some(result) = result else {
        return ExitCode::from(130);
    };
    let result = result.and_then(|exit| out.flush().map(|()| exit).map_err(cmd::Error::from));
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        // `aca-reconciler schema | head` is not a failure.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aca-reconciler {name}: {e:#}");
            ExitCode::from(1)
        }
    }
}

//! `aca-reconciler`: parse the command line, run the command, map the outcome to an exit code.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use aca_reconciler::{cli::Cli, commands};

/// jemalloc, configured in `.cargo/config.toml` to return freed memory to the OS at once
/// (glibc's malloc kept a convergence's peak resident for good: 56 MiB at rest for 1,000 apps,
/// now about 30 MiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        let code = commands::run(cli, &mut out).await?;
        out.flush().map(|()| code)
    });
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

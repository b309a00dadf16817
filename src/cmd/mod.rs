//! The commands: what each subcommand does, given parsed options.
//!
//! Every command returns [`Exit`] (how it ended, as the exit-code contract says) or an
//! [`Error`] (it could not do its job). `main` prints the error, once, and maps both to the
//! process's exit code: nothing here exits the process or chooses a code.
//!
//! | command | module |
//! | --- | --- |
//! | `validate`, `schema`, `permissions` | [`desired`] (no Azure access) |
//! | `plan` | [`plan`] |
//! | `apply` | [`apply`] |
//! | `run` | [`mod@run`] |
//! | `status` | [`status`] |
//! | `events` | [`events`] |
//! | `simulate` | [`simulate`] |
//! | `rollout status\|promote\|abort\|retry` | [`rollout`] |

pub mod apply;
pub mod desired;
pub mod events;
pub mod plan;
pub mod rollout;
pub mod run;
pub mod simulate;
pub mod status;

use std::io::Write;

use crate::cli::{Cli, Command, Common, RolloutCommand};
use crate::spec::{self, DesiredState, LoadOptions};

/// How a command ended (contract section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It did what it should: valid, in sync, converged, a clean shutdown.
    Success,
    /// `plan`: changes are pending; `status`: an app has drifted or is unhealthy.
    Changes,
    /// Something it checked or did failed, and it said what (invalid desired state, an app
    /// that failed or is missing).
    Failed,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Changes => 2,
            Exit::Failed => 1,
        }
    }
}

/// A command that could not do its job. `main` prints it once, as `aca-reconciler COMMAND:
/// message`, and exits 1 (0 for a closed stdout, as in `aca-reconciler schema | head`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The desired state has problems (printed already, one per line).
    #[error(
        "the desired state is invalid ({0} problems); nothing was read from or written to Azure"
    )]
    Invalid(usize),
    /// Azure, the simulator or the endpoints cannot be used as configured: what and what to do.
    #[error("{0}")]
    Setup(String),
    /// The command was understood but does not apply as asked: an app the desired state does
    /// not manage (or a name that fits several), a rollout in a phase the verb does not fit,
    /// a command already waiting. Says what is the case and what would make sense.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    /// Whether the error is only that stdout went away (a reader like `head` quit).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// The name of a command, for messages.
pub fn name(command: &Command) -> &'static str {
    match command {
        Command::Validate { .. } => "validate",
        Command::Schema => "schema",
        Command::Permissions => "permissions",
        Command::Plan(_) => "plan",
        Command::Apply(_) => "apply",
        Command::Run(_) => "run",
        Command::Status(_) => "status",
        Command::Events(_) => "events",
        Command::Simulate(_) => "simulate",
        Command::Rollout(RolloutCommand::Status(_)) => "rollout status",
        Command::Rollout(RolloutCommand::Promote(_)) => "rollout promote",
        Command::Rollout(RolloutCommand::Abort(_)) => "rollout abort",
        Command::Rollout(RolloutCommand::Retry(_)) => "rollout retry",
    }
}

/// Runs the command.
///
/// # Errors
/// The command could not do its job; see [`Error`].
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<Exit, Error> {
    let common = &cli.common;
    match cli.command {
        Command::Simulate(args) => simulate::simulate(args, common, out).await,
        Command::Plan(args) => plan::plan(common, &args, out).await,
        Command::Apply(args) => apply::apply(common, &args, out).await,
        Command::Run(args) => run::run(common, &args, out).await,
        Command::Status(args) => status::status(common, &args, out).await,
        Command::Events(args) => events::events(common, &args, out).await,
        Command::Rollout(command) => rollout::rollout(common, &command, out).await,
        Command::Permissions => desired::permissions(common, out),
        Command::Schema => desired::schema(out),
        Command::Validate { paths } => desired::validate(common, paths, out),
    }
}

/// Loads the desired state for a command that goes to Azure: its problems are printed one per
/// line, and then it is an [`Error::Invalid`] (nothing is read from or written to Azure).
///
/// # Errors
/// The desired state has problems.
pub fn load(common: &Common, out: &mut (dyn Write + Send)) -> Result<DesiredState, Error> {
    let loaded = spec::load(
        std::slice::from_ref(&common.desired_state),
        &LoadOptions {
            subscription: common.subscription.clone(),
        },
    );
    if loaded.diagnostics.is_empty() {
        return Ok(loaded.state);
    }
    for d in &loaded.diagnostics {
        writeln!(out, "{d}")?;
    }
    Err(Error::Invalid(loaded.diagnostics.len()))
}

/// `n one` or `n many`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

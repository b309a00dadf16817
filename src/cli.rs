//! The command line (contract section 2). Every option also reads an environment variable;
//! the flag wins.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keeps Azure Container Apps where your desired-state YAML says they should be.
#[derive(Debug, Parser)]
#[command(name = "aca-reconciler", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct Common {
    /// The desired-state directory.
    #[arg(
        long,
        env = "ACAR_DESIRED_STATE",
        default_value = "./desired-state",
        global = true
    )]
    pub desired_state: PathBuf,

    /// Subscription for apps whose documents and Defaults name none.
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID", global = true)]
    pub subscription: Option<String>,

    /// Output format of plan, status and validate.
    #[arg(long, env = "ACAR_OUTPUT", value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
}

/// Human or machine output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Lines for people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and validate the desired state; no Azure access. Exit 0 valid, 1 invalid.
    Validate {
        /// Files or directories to check (default: --desired-state).
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema (draft 2020-12) of every document kind.
    Schema,
}

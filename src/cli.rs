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

    /// Log format (logs go to stderr).
    #[arg(long, env = "ACAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One compact line per event.
    Text,
    /// One JSON object per event.
    Json,
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
    /// Serve the built-in Azure simulator (ARM Container Apps, ACR, managed identity) over HTTP.
    Simulate(SimulateArgs),
}

/// Options of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to serve on. Anything but loopback is an explicit choice.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,

    /// Seed from a desired-state directory (drifted copies of its apps) or a state dump
    /// (`.json`, as `GET /_sim/state` returns it). Without it the simulator starts empty.
    #[arg(long)]
    pub seed: Option<PathBuf>,

    /// Serve HTTPS with a self-signed certificate for 127.0.0.1, ::1 and localhost.
    #[arg(long)]
    pub tls: bool,

    /// Where `--tls` writes the certificate's PEM, for clients to trust.
    #[arg(long, default_value = "./simulator-cert.pem")]
    pub tls_cert: PathBuf,

    /// The value `/msi/token` expects in `X-IDENTITY-HEADER` (give it to clients as
    /// `IDENTITY_HEADER`).
    #[arg(long, default_value = "simulator")]
    pub identity_header: String,

    /// Items per page of list responses.
    #[arg(long)]
    pub page_size: Option<usize>,

    /// How writes answer: `sync` (200), `async` (202 with Azure-AsyncOperation and Location),
    /// `location` (202 with Location only).
    #[arg(long, value_parser = ["sync", "async", "location"])]
    pub lro: Option<String>,

    /// How long a new revision takes to become ready, e.g. `2s`.
    #[arg(long, value_parser = parse_duration)]
    pub revision_ready: Option<std::time::Duration>,

    /// Turn off ARM's per-subscription throttling buckets.
    #[arg(long)]
    pub no_throttling: bool,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

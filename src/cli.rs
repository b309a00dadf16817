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

    /// Output format of plan, status, validate and rollout.
    #[arg(long, env = "ACAR_OUTPUT", value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,

    /// Azure Resource Manager endpoint (default: the --cloud's). Plain http only for loopback.
    #[arg(long, env = "ACAR_ARM_ENDPOINT", global = true)]
    pub arm_endpoint: Option<String>,

    /// Azure cloud: sets the ARM endpoint and the Entra authority.
    #[arg(long, env = "ACAR_CLOUD", value_enum, default_value_t = crate::auth::Cloud::Public, global = true)]
    pub cloud: crate::auth::Cloud,

    /// Credential to use (default: the first of the contract's chain the environment supports).
    #[arg(long, env = "ACAR_CREDENTIAL", value_enum, default_value_t = crate::auth::CredentialChoice::Auto, global = true)]
    pub credential: crate::auth::CredentialChoice,

    /// Talk to an in-process Azure simulator seeded with drifted copies of the desired apps,
    /// instead of Azure (no account needed).
    #[arg(long, env = "ACAR_SIMULATE", global = true)]
    pub simulate: bool,

    /// Send one registry's data-plane calls elsewhere, `LOGIN_SERVER=URL` (repeatable), e.g.
    /// to a simulator, without editing the documents.
    #[arg(long = "registry-endpoint", value_parser = parse_registry_endpoint, global = true)]
    pub registry_endpoints: Vec<(String, String)>,

    /// Reach an environment's app, revision and label URLs (`DOMAIN` and every host under it)
    /// at URL instead, `DOMAIN=URL` (repeatable), e.g. the simulator's ingress; the app's host
    /// goes in `Host`. Plain http only for loopback.
    #[arg(long = "ingress-endpoint", value_parser = crate::ingress::parse_endpoint, global = true)]
    pub ingress_endpoints: Vec<(String, String)>,

    /// Pace ARM calls with a client-side copy of ARM's per-subscription buckets (90% of them),
    /// so Azure never has to throttle. `off` is for benchmarks against an endpoint without
    /// buckets (`simulate --no-throttling`); against Azure it only trades pacing for 429s.
    #[arg(long, env = "ACAR_CLIENT_THROTTLE", default_value = "on", value_parser = ["on", "off"], global = true)]
    pub client_throttle: String,

    /// How far behind Azure Monitor's metrics are: a rollout check reads the window that ends
    /// this long ago (Azure: "under a minute", late aggregates for a few more). With
    /// --simulate: the embedded simulator's delay.
    #[arg(long, env = "ACAR_METRICS_LAG", value_parser = parse_duration, global = true)]
    pub metrics_lag: Option<std::time::Duration>,

    /// Registry tags deleted per pass at most (RegistryRetention).
    #[arg(long, env = "ACAR_MAX_TAG_DELETIONS", default_value_t = crate::retention::DEFAULT_CAP, global = true)]
    pub max_tag_deletions: usize,

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
    /// Markdown, for a pull-request comment (`plan`; other commands print text).
    Markdown,
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
    /// Print the least-privilege Azure custom roles for the desired state, with the scopes to
    /// assign them at (JSON; `az role definition create --role-definition` takes each role).
    Permissions,
    /// Read live state and print the actions `apply` would take; writes nothing.
    /// Exit 0 in sync, 2 changes pending, 1 error.
    Plan(PassArgs),
    /// One full reconcile pass: plan and carry it out, waiting for new revisions to run.
    /// Exit 0 converged, 1 some action or app failed.
    Apply(PassArgs),
    /// The controller: reconcile continuously until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Every managed app: desired vs live, in sync or drifted, health, last action and error.
    /// Exit 0, or 2 if any app has drifted or is unhealthy.
    Status(StatusArgs),
    /// What a running controller decided lately (the last 100 events of its /status: changes
    /// applied, failures and recoveries, rollout steps, rejected files), like `kubectl get events`.
    Events(EventsArgs),
    /// Serve the built-in Azure simulator (ARM Container Apps, ACR, managed identity) over HTTP.
    Simulate(SimulateArgs),
    /// Progressive delivery at run time: show an app's rollout, or leave a command (promote,
    /// abort, retry) for whichever controller leads to carry out.
    #[command(subcommand)]
    Rollout(RolloutCommand),
}

/// `rollout status|promote|abort|retry APP`.
///
/// APP is `NAME`, `RESOURCE_GROUP/NAME` or `SUBSCRIPTION/RESOURCE_GROUP/NAME` of an app in the
/// desired state. A command waits in the app's `aca-reconciler-rollout-command` Azure tag,
/// names the rollout's new revision (so it never applies to a later rollout), and is removed
/// by the controller's PATCH that carries it out. `--simulate` is refused: no controller
/// watches an in-process simulator.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Phase, step and weight, the stable and new revisions with their live traffic, failed
    /// checks, the reason and any waiting command. Exit 0, 2 if the last rollout rolled back.
    Status(RolloutStatusArgs),
    /// Skip to 100% on the new revision now (also approves a manual rollout). Only while
    /// progressing. Exit 0 done, 2 still waiting when --wait ended, 1 refused or failed.
    Promote(RolloutVerbArgs),
    /// Roll back to the stable revision now. Only while progressing. Exit codes as promote.
    Abort(RolloutVerbArgs),
    /// Run a rolled-back revision's rollout again. Only after a rollback. Exit codes as
    /// promote.
    Retry(RolloutVerbArgs),
}

/// Options of `rollout status`.
#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// The app: NAME, RESOURCE_GROUP/NAME or SUBSCRIPTION/RESOURCE_GROUP/NAME.
    pub app: String,

    /// Also ask a running controller (`http://127.0.0.1:9090`) for the app's last analysis
    /// check.
    #[arg(long, env = "ACAR_STATUS_SERVER")]
    pub server: Option<String>,
}

/// Options of `rollout promote|abort|retry`.
#[derive(Debug, Args)]
pub struct RolloutVerbArgs {
    /// The app: NAME, RESOURCE_GROUP/NAME or SUBSCRIPTION/RESOURCE_GROUP/NAME.
    pub app: String,

    /// How long to wait for the controller to carry the command out (polling every 2 s); `0`
    /// writes the command and returns.
    #[arg(long, default_value = "60s", value_parser = parse_wait)]
    pub wait: std::time::Duration,

    /// Replace a command that is already waiting.
    #[arg(long)]
    pub force: bool,
}

/// Options of `plan` and `apply`.
#[derive(Debug, Args)]
pub struct PassArgs {
    /// Apps worked on at once.
    #[arg(long, env = "ACAR_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,

    /// Writes allowed in this pass; the rest waits for the next (apply only).
    #[arg(long, env = "ACAR_MAX_ACTIONS")]
    pub max_actions: Option<usize>,

    /// How long a new revision may take to become ready (apply only).
    #[arg(long, env = "ACAR_REVISION_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub revision_timeout: std::time::Duration,
}

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Full resync period (each app's next time is jittered by ±10%).
    #[arg(long, env = "ACAR_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub interval: std::time::Duration,

    /// HTTP endpoints (/ the dashboard, /healthz, /readyz, /metrics, /status, /reconcile). Anything but
    /// loopback is an explicit choice.
    #[arg(long, env = "ACAR_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: std::net::SocketAddr,

    /// An app verified in sync is read in full (with its revisions) again after this many
    /// resyncs without a change to its live summary or spec; this is how a revision activated
    /// or deactivated by hand is caught. 1 reads every app in full at every resync.
    #[arg(long, env = "ACAR_REVERIFY_AFTER", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    pub reverify_after: u32,

    /// Leader election: the blob whose lease the replicas contend for; only the holder acts.
    /// A URL with a SAS token uses it; a plain https URL uses the Azure credential (role
    /// Storage Blob Data Contributor on its container). The blob is created if missing.
    #[arg(long, env = "ACAR_LEASE_BLOB", hide_env_values = true)]
    pub lease_blob: Option<String>,

    /// How long the lease lasts (15s to 60s). It is renewed every third of it; a leader that
    /// cannot renew stops acting before it lapses, and a follower takes over within about
    /// this long after a leader dies (at once after a clean shutdown).
    #[arg(long, env = "ACAR_LEASE_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub lease_duration: std::time::Duration,

    /// The desired-state commit that events and GitHub commit statuses name, when the
    /// directory is not a git checkout of it (e.g. `main@sha1:<hash>` or a bare hash from the
    /// CI that copied the files). Default: read from the checkout's `.git` at each load.
    #[arg(long, env = "ACAR_DESIRED_REVISION")]
    pub revision: Option<String>,

    /// GitHub's REST API, for `type: github` Notifications without their own `apiUrl`
    /// (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[arg(
        long,
        env = "ACAR_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,

    /// The dashboard's address as people reach it (e.g. through a port-forward or an ingress):
    /// GitHub commit statuses link to it.
    #[arg(long, env = "ACAR_DASHBOARD_URL")]
    pub dashboard_url: Option<String>,

    #[command(flatten)]
    pub pass: PassArgs,
}

/// Options of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The running controller to ask.
    #[arg(
        long,
        env = "ACAR_STATUS_SERVER",
        default_value = "http://127.0.0.1:9090"
    )]
    pub server: String,

    /// Only events about this app (its name).
    #[arg(long)]
    pub app: Option<String>,
}

/// Options of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Ask a running controller (`http://127.0.0.1:9090`) instead of computing the status live.
    #[arg(long, env = "ACAR_STATUS_SERVER")]
    pub server: Option<String>,

    #[command(flatten)]
    pub pass: PassArgs,
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

    /// How long served requests take to show in the metrics API, e.g. `5s` (Azure Monitor's
    /// ingestion delay; default 60s).
    #[arg(long, value_parser = parse_duration)]
    pub metrics_delay: Option<std::time::Duration>,

    /// Also serve the apps' own URLs (routed by `Host`) on this address, and nothing else.
    #[arg(long)]
    pub ingress_listen: Option<std::net::SocketAddr>,
}

fn parse_registry_endpoint(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((login, url)) if !login.is_empty() && !url.is_empty() => {
            Ok((login.to_ascii_lowercase(), url.to_owned()))
        }
        _ => Err(format!(
            "`{s}`: write LOGIN_SERVER=URL, e.g. crxshopaidev.azurecr.io=http://127.0.0.1:8080/registries/crxshopaidev.azurecr.io"
        )),
    }
}

/// A duration, or `0` for none.
fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    parse_duration(s)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

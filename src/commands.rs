//! What each subcommand does, given parsed options. `main` maps the result to an exit code.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{Cli, Command, Common, Output, SimulateArgs};
use crate::simulator::{
    self, ServeOptions, Sim,
    store::{Config, LroMode, World},
};
use crate::spec::{self, LoadOptions};

/// Runs the command and returns its exit code.
///
/// # Errors
/// Only I/O errors writing the output; everything about the input is reported and mapped to
/// the command's exit code.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> std::io::Result<ExitCode> {
    match cli.command {
        Command::Simulate(args) => simulate(args, &cli.common, out).await,
        Command::Plan(args) => crate::pass::plan_command(&cli.common, &args, out).await,
        Command::Apply(args) => crate::pass::apply_command(&cli.common, &args, out).await,
        Command::Run(args) => crate::pass::run_command(&cli.common, &args, out).await,
        Command::Status(args) => crate::pass::status_command(&cli.common, &args, out).await,
        Command::Permissions => {
            let options = LoadOptions {
                subscription: cli.common.subscription.clone(),
            };
            let loaded = spec::load(std::slice::from_ref(&cli.common.desired_state), &options);
            if !loaded.diagnostics.is_empty() {
                for d in &loaded.diagnostics {
                    eprintln!("{d}");
                }
                eprintln!(
                    "aca-reconciler permissions: the desired state is invalid; fix it first (roles for half a tree would be wrong)"
                );
                return Ok(ExitCode::from(1));
            }
            let roles = crate::permissions::permissions(&loaded.state);
            let text = serde_json::to_string_pretty(&roles).map_err(std::io::Error::other)?;
            writeln!(out, "{text}")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            out.write_all(spec::schema::render().as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { paths } => {
            let paths = if paths.is_empty() {
                vec![cli.common.desired_state]
            } else {
                paths
            };
            let options = LoadOptions {
                subscription: cli.common.subscription,
            };
            let loaded = spec::load(&paths, &options);
            match cli.common.output {
                Output::Text | Output::Markdown => write_validate_text(&loaded, out)?,
                Output::Json => write_validate_json(&loaded, out)?,
            }
            Ok(if loaded.diagnostics.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// `simulate`: serve the simulator until SIGINT/SIGTERM.
async fn simulate(
    args: SimulateArgs,
    common: &Common,
    out: &mut (dyn Write + Send),
) -> std::io::Result<ExitCode> {
    crate::telemetry::init(common.log_format, "info");
    let world = match seed_world(&args, common) {
        Ok(world) => world,
        Err(message) => {
            eprintln!("aca-reconciler simulate: {message}");
            return Ok(ExitCode::from(1));
        }
    };
    let summary = format!(
        "{} in {}, {}",
        plural(world.apps.len(), "app", "apps"),
        plural(world.subscriptions.len(), "subscription", "subscriptions"),
        plural(world.registries.len(), "registry", "registries"),
    );
    let registries: Vec<String> = world.registries.keys().cloned().collect();
    let domains = world.ingress_domains();
    let sim = if args.tls {
        Sim::new_tls(world, &args.identity_header)
    } else {
        Sim::new(world, &args.identity_header)
    };
    let options = ServeOptions {
        listen: args.listen,
        tls: args.tls,
        tls_cert: args.tls_cert.clone(),
    };
    let mut handle = match simulator::serve(sim, &options).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("aca-reconciler simulate: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(addr) = args.ingress_listen
        && let Err(e) = handle.serve_ingress(addr)
    {
        eprintln!("aca-reconciler simulate: --ingress-listen: {e}");
        return Ok(ExitCode::from(1));
    }
    let base = &handle.base_url;
    // The banner is for people: a closed stdout (`simulate | head -1`) must not stop the server.
    // Listen before the banner: a script may send SIGTERM as soon as it reads it.
    let stop = crate::shutdown::signalled();
    let _ = writeln!(out, "aca-reconciler simulator on {base}: {summary}");
    let _ = writeln!(out, "  ARM:       --arm-endpoint {base}");
    let _ = writeln!(
        out,
        "  identity:  IDENTITY_ENDPOINT={base}/msi/token IDENTITY_HEADER={}",
        args.identity_header
    );
    for r in &registries {
        let _ = writeln!(
            out,
            "  registry:  --registry-endpoint {r}={base}/registries/{r}"
        );
    }
    let ingress = handle.ingress_url.as_ref().unwrap_or(base);
    for d in &domains {
        let _ = writeln!(out, "  ingress:   --ingress-endpoint {d}={ingress}");
    }
    if args.tls {
        let _ = writeln!(
            out,
            "  TLS:       certificate written to {} (trust it with REQUESTS_CA_BUNDLE or --cacert)",
            args.tls_cert.display()
        );
    }
    let _ = writeln!(
        out,
        "  control:   {base}/_sim/state, /_sim/requests, /_sim/faults, /_sim/outages"
    );
    let _ = writeln!(out, "Serving until Ctrl-C.");
    let _ = out.flush();
    stop.await;
    tracing::info!("stopping the simulator");
    handle.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// The simulator's starting world, from `--seed` and the tuning flags.
fn seed_world(args: &SimulateArgs, common: &Common) -> Result<World, String> {
    let mut world = match &args.seed {
        None => World::new(Config::default()),
        Some(path) if path.extension().is_some_and(|e| e == "json") => {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            serde_json::from_slice::<World>(&bytes)
                .map_err(|e| format!("{} is not a simulator state dump: {e}", path.display()))?
        }
        Some(path) => {
            let loaded = spec::load(
                std::slice::from_ref(path),
                &LoadOptions {
                    subscription: common.subscription.clone(),
                },
            );
            if !loaded.diagnostics.is_empty() {
                let lines: Vec<String> =
                    loaded.diagnostics.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "the seed's desired state is invalid (run `aca-reconciler validate {}`):\n{}",
                    path.display(),
                    lines.join("\n")
                ));
            }
            let now = crate::time::Clock::new().now();
            let mut world = simulator::seed::from_desired(&loaded.state, Config::default(), now);
            simulator::seed::apply_sidecar(&mut world, path, now)?;
            world
        }
    };
    let c = &mut world.config;
    if let Some(n) = args.page_size {
        c.page_size = n.max(1);
    }
    if let Some(mode) = &args.lro {
        c.lro_mode = match mode.as_str() {
            "sync" => LroMode::Sync,
            "location" => LroMode::LocationOnly,
            _ => LroMode::Async,
        };
    }
    if let Some(d) = args.revision_ready {
        c.revision_ready_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    }
    if args.no_throttling {
        c.throttling.enabled = false;
    }
    if let Some(d) = args.metrics_delay {
        c.metrics_delay_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    }
    Ok(world)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn write_validate_text(loaded: &spec::load::Loaded, out: &mut dyn Write) -> std::io::Result<()> {
    for d in &loaded.diagnostics {
        writeln!(out, "{d}")?;
    }
    let summary = format!(
        "{} in {} ({}, {})",
        plural(loaded.documents, "document", "documents"),
        plural(loaded.files, "file", "files"),
        plural(loaded.state.apps.len(), "app", "apps"),
        plural(
            loaded.state.registries.len(),
            "registry policy",
            "registry policies"
        ),
    );
    if loaded.diagnostics.is_empty() {
        writeln!(out, "valid: {summary}")
    } else {
        writeln!(
            out,
            "invalid: {} in {summary}",
            plural(loaded.diagnostics.len(), "problem", "problems")
        )
    }
}

fn write_validate_json(loaded: &spec::load::Loaded, out: &mut dyn Write) -> std::io::Result<()> {
    let apps: Vec<_> = loaded.state.apps.keys().collect();
    let registries: Vec<_> = loaded.state.registries.iter().map(|r| &r.name).collect();
    let report = serde_json::json!({
        "valid": loaded.diagnostics.is_empty(),
        "files": loaded.files,
        "documents": loaded.documents,
        "apps": apps,
        "registryRetentions": registries,
        "diagnostics": loaded.diagnostics,
    });
    serde_json::to_writer_pretty(&mut *out, &report)?;
    writeln!(out)
}

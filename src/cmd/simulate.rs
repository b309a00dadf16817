//! `simulate`: the built-in Azure simulator, served over HTTP or HTTPS until a signal.

use std::io::Write;

use super::{Error, Exit, plural};
use crate::cli::{Common, SimulateArgs};
use crate::simulator::{
    self, ServeOptions, Sim,
    store::{Config, LroMode, World},
};
use crate::spec::{self, LoadOptions};

/// `simulate`: serve the simulator until SIGINT/SIGTERM.
///
/// # Errors
/// The seed is unusable, or the simulator cannot listen.
pub async fn simulate(
    args: SimulateArgs,
    common: &Common,
    out: &mut (dyn Write + Send),
) -> Result<Exit, Error> {
    crate::telemetry::init(common.log_format, "info");
    let world = seed_world(&args, common).map_err(Error::Setup)?;
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
    let mut handle = simulator::serve(sim, &options)
        .await
        .map_err(|e| Error::Setup(e.to_string()))?;
    if let Some(addr) = args.ingress_listen {
        handle
            .serve_ingress(addr)
            .map_err(|e| Error::Setup(format!("--ingress-listen: {e}")))?;
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
    Ok(Exit::Success)
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

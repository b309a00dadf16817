//! A connection to Azure (or to an embedded simulator): the ARM and ACR clients the commands
//! and the controller share.

use std::sync::Arc;
use std::time::Duration;

use crate::acr::AcrClient;
use crate::arm::{ArmClient, ArmConfig};
use crate::auth::TokenSource;
use crate::cli::Common;
use crate::simulator::{self, Sim};
use crate::spec::DesiredState;
use crate::time::Clock;

/// A connection to Azure, or to a simulator that lives as long as it.
#[derive(Debug)]
pub struct Connection {
    /// The client.
    pub client: ArmClient,
    /// The registry client.
    pub acr: AcrClient,
    /// Poll interval suited to the target.
    pub poll_interval: Duration,
    /// The in-process simulator, when `--simulate`.
    pub simulator: Option<simulator::Handle>,
    /// Where apps', revisions' and labels' URLs are reached (`--ingress-endpoint`, plus the
    /// embedded simulator's domains).
    pub ingress_endpoints: Vec<(String, String)>,
    /// How far behind Azure Monitor's metrics are (`--metrics-lag`; the embedded simulator's
    /// delay with `--simulate`).
    pub metrics_lag: Duration,
    /// What rollouts' analysis checks need besides the client (probes' HTTP, ingress).
    pub analysis: crate::apply::AnalysisSetup,
}

/// The probes' client and the ingress mappings.
fn analysis_setup(endpoints: &[(String, String)]) -> Result<crate::apply::AnalysisSetup, String> {
    Ok(crate::apply::AnalysisSetup {
        http: crate::analysis::probe_client()?,
        ingress: crate::ingress::IngressEndpoints::new(endpoints)
            .map_err(|e| format!("--ingress-endpoint {e}"))?,
    })
}

/// Azure Monitor's lag when `--metrics-lag` is not given: platform metrics arrive "in under a
/// minute" and late aggregates complete the newest minutes after [doc: learn.microsoft.com
/// azure-monitor/logs/data-ingestion-time; research: evaluate with a lag of 2-3 minutes].
pub const DEFAULT_METRICS_LAG: Duration = Duration::from_secs(180);

/// The embedded simulator's metrics delay: short, so a rollout can be watched in minutes.
const SIMULATED_METRICS_DELAY: Duration = Duration::from_secs(5);

/// Connects to Azure as the options say, or starts a simulator seeded from `desired`.
///
/// # Errors
/// The endpoint or credential is not usable, or the simulator cannot start.
pub async fn connect(common: &Common, desired: &DesiredState) -> Result<Connection, String> {
    if common.simulate {
        let config = simulator::store::Config {
            lro_ms: 500,
            lro_retry_after_s: 0,
            revision_ready_ms: 1_500,
            metrics_delay_ms: u64::try_from(SIMULATED_METRICS_DELAY.as_millis()).unwrap_or(5_000),
            ..simulator::store::Config::default()
        };
        let now = Clock::new().now();
        let mut world = simulator::seed::from_desired(desired, config, now);
        // What the apps' users do (request rates, a bad image), as `simulate --seed` reads it.
        simulator::seed::apply_sidecar(&mut world, &common.desired_state, now)?;
        let domains = world.ingress_domains();
        let options = simulator::ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            tls: false,
            tls_cert: Default::default(),
        };
        let handle = simulator::serve(Sim::new(world, "simulator"), &options)
            .await
            .map_err(|e| e.to_string())?;
        eprintln!(
            "--simulate: talking to an in-process Azure simulator at {} seeded with drifted copies of {} apps (no Azure account is used)",
            handle.base_url,
            desired.apps.len()
        );
        // Tokens come from the simulator's managed-identity endpoint, as a process in
        // Container Apps gets them from its own.
        let tokens = Arc::new(
            TokenSource::identity_endpoint(
                &format!("{}/msi/token", handle.base_url),
                "simulator",
                &handle.base_url,
            )
            .map_err(|e| e.to_string())?,
        );
        let mut config = ArmConfig::new(&handle.base_url);
        config.poll_interval = Duration::from_millis(250);
        let client = ArmClient::new(config, tokens.clone()).map_err(|e| e.to_string())?;
        let mut endpoints = common.registry_endpoints.clone();
        for login in handle.sim.world().registries.keys() {
            endpoints.push((
                login.clone(),
                format!("{}/registries/{login}", handle.base_url),
            ));
        }
        let acr = AcrClient::new(tokens, &endpoints).map_err(|e| e.to_string())?;
        let mut ingress_endpoints = common.ingress_endpoints.clone();
        ingress_endpoints.extend(domains.into_iter().map(|d| (d, handle.base_url.clone())));
        let analysis = analysis_setup(&ingress_endpoints)?;
        return Ok(Connection {
            client,
            acr,
            poll_interval: Duration::from_millis(250),
            simulator: Some(handle),
            analysis,
            ingress_endpoints,
            metrics_lag: common.metrics_lag.unwrap_or(SIMULATED_METRICS_DELAY),
        });
    }
    let endpoint = common
        .arm_endpoint
        .clone()
        .unwrap_or_else(|| common.cloud.arm_endpoint().to_owned());
    let tokens = Arc::new(
        TokenSource::from_env(common.credential, common.cloud, &endpoint)
            .map_err(|e| e.to_string())?,
    );
    let mut config = ArmConfig::new(&endpoint);
    if common.client_throttle == "off" {
        config.limits = crate::arm::limiter::Limits::unlimited();
    }
    let client = ArmClient::new(config, tokens.clone()).map_err(|e| e.to_string())?;
    let acr = AcrClient::new(tokens, &common.registry_endpoints).map_err(|e| e.to_string())?;
    Ok(Connection {
        client,
        acr,
        poll_interval: Duration::from_secs(2),
        simulator: None,
        analysis: analysis_setup(&common.ingress_endpoints)?,
        ingress_endpoints: common.ingress_endpoints.clone(),
        metrics_lag: common.metrics_lag.unwrap_or(DEFAULT_METRICS_LAG),
    })
}

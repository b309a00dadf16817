//! `plan` and `apply`: load the desired state, connect (to Azure or the in-process simulator),
//! observe, plan, and for `apply` carry it out. Output and exit codes (contract section 2):
//! `plan` 0 in sync, 2 changes pending, 1 error; `apply` 0 converged, 1 something failed.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::acr::AcrClient;
use crate::apply::{AppResult, ApplyOptions};
use crate::arm::{ArmClient, ArmConfig};
use crate::auth::TokenSource;
use crate::cli::{Common, Output, PassArgs};
use crate::live::{self, Observed};
use crate::plan::{self, Outcome, render};
use crate::simulator::{self, Sim};
use crate::spec::{self, DesiredState, LoadOptions};
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
}

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
            ..simulator::store::Config::default()
        };
        let world = simulator::seed::from_desired(desired, config, Clock::new().now());
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
        let tokens = Arc::new(TokenSource::simulator(handle.sim.clone(), &handle.base_url));
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
        return Ok(Connection {
            client,
            acr,
            poll_interval: Duration::from_millis(250),
            simulator: Some(handle),
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
    let client =
        ArmClient::new(ArmConfig::new(&endpoint), tokens.clone()).map_err(|e| e.to_string())?;
    let acr = AcrClient::new(tokens, &common.registry_endpoints).map_err(|e| e.to_string())?;
    Ok(Connection {
        client,
        acr,
        poll_interval: Duration::from_secs(2),
        simulator: None,
    })
}

/// Loads the desired state; prints its problems and returns `None` when it is invalid.
fn load(common: &Common, out: &mut (dyn Write + Send)) -> std::io::Result<Option<DesiredState>> {
    let loaded = spec::load(
        std::slice::from_ref(&common.desired_state),
        &LoadOptions {
            subscription: common.subscription.clone(),
        },
    );
    if loaded.diagnostics.is_empty() {
        return Ok(Some(loaded.state));
    }
    for d in &loaded.diagnostics {
        writeln!(out, "{d}")?;
    }
    writeln!(
        out,
        "the desired state is invalid ({} problems); nothing was read from or written to Azure",
        loaded.diagnostics.len()
    )?;
    Ok(None)
}

fn status_of(
    observed: &Observed,
    planned: Option<&plan::AppPlan>,
) -> (&'static str, Option<String>) {
    match (observed, planned) {
        (Observed::Missing, _) => ("missing", Some("the app does not exist in Azure; aca-reconciler never creates apps: check its name, resourceGroup and subscription".to_owned())),
        (Observed::Unreadable(e), _) => ("unreadable", Some(e.clone())),
        (_, Some(p)) => match &p.outcome {
            Outcome::InSync => ("inSync", None),
            Outcome::Changes => ("changes", None),
            Outcome::Suspended => ("suspended", None),
            Outcome::Busy => ("busy", Some("another operation is in progress on the app; plan again once it ends".to_owned())),
            Outcome::Blocked { reason } => ("blocked", Some(reason.clone())),
        },
        (_, None) => ("unreadable", None),
    }
}

/// `plan`.
pub async fn plan_command(
    common: &Common,
    args: &PassArgs,
    out: &mut (dyn Write + Send),
) -> std::io::Result<ExitCode> {
    let Some(desired) = load(common, out)? else {
        return Ok(ExitCode::from(1));
    };
    let connection = match connect(common, &desired).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aca-reconciler plan: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let live = live::snapshot(&connection.client, &desired, args.concurrency).await;
    let now = Clock::new().now();
    let mut apps = Vec::new();
    let (mut changes, mut errors, mut in_sync, mut suspended, mut actions, mut revisions) =
        (0, 0, 0, 0, 0, 0);
    for (key, spec) in &desired.apps {
        let observed = live
            .apps
            .get(key)
            .cloned()
            .unwrap_or(Observed::Unreadable("not observed".to_owned()));
        let planned = match &observed {
            Observed::Found { app, revisions } => Some(plan::plan_app(
                spec,
                plan::Observed {
                    app,
                    revisions: revisions.as_deref(),
                },
                now,
            )),
            _ => None,
        };
        let (status, reason) = status_of(&observed, planned.as_ref());
        let list = planned.map(|p| p.actions).unwrap_or_default();
        match status {
            "inSync" => in_sync += 1,
            "suspended" => suspended += 1,
            "changes" | "busy" => changes += 1,
            _ => errors += 1,
        }
        if status == "changes" {
            actions += list.iter().filter(|a| a.is_write()).count();
            revisions += list.iter().filter(|a| a.creates_revision()).count();
        }
        apps.push((key, spec, status, reason, list));
    }
    let retention = crate::retention::plan(
        &connection.client,
        &connection.acr,
        &desired,
        now,
        common.max_tag_deletions,
        args.concurrency,
    )
    .await;
    let deletions = retention.deletions();
    match common.output {
        Output::Json => {
            let items: Vec<Value> = apps
                .iter()
                .map(|(key, spec, status, reason, list)| {
                    json!({
                        "subscription": key.subscription, "resourceGroup": key.resource_group, "name": key.name,
                        "source": spec.source.to_string(), "status": status, "reason": reason,
                        "actions": list.iter().map(render::action_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let doc = json!({
                "apps": items,
                "registries": retention,
                "summary": {"changes": changes, "inSync": in_sync, "suspended": suspended, "errors": errors, "writes": actions, "newRevisions": revisions, "registryDeletions": deletions, "registryHeldBack": retention.held_back()},
            });
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out)?;
        }
        Output::Text => {
            for (key, spec, status, reason, list) in &apps {
                match *status {
                    "inSync" => writeln!(out, "= {key}: in sync")?,
                    "changes" | "suspended" => {
                        let tag = if *status == "suspended" {
                            "  (suspended: nothing will be done)"
                        } else {
                            ""
                        };
                        writeln!(out, "~ {key}  ({}){tag}", spec.source)?;
                        for a in list {
                            writeln!(out, "    {}", render::describe(a))?;
                        }
                    }
                    _ => writeln!(
                        out,
                        "! {key}  ({}): {status}: {}",
                        spec.source,
                        reason.clone().unwrap_or_default()
                    )?,
                }
            }
            for l in crate::retention::describe(&retention, &desired.registries) {
                writeln!(out, "{l}")?;
            }
            writeln!(
                out,
                "Plan: {changes} apps to change ({actions} writes, {revisions} new revisions), {in_sync} in sync, {suspended} suspended, {errors} with errors; {deletions} registry deletions ({} held back by the cap).",
                retention.held_back()
            )?;
        }
    }
    drop(connection);
    let errors = errors + retention.errors.len();
    Ok(ExitCode::from(if errors > 0 {
        1
    } else if changes > 0 || deletions > 0 {
        2
    } else {
        0
    }))
}

/// `apply`.
pub async fn apply_command(
    common: &Common,
    args: &PassArgs,
    out: &mut (dyn Write + Send),
) -> std::io::Result<ExitCode> {
    crate::telemetry::init(common.log_format, "info");
    let Some(desired) = load(common, out)? else {
        return Ok(ExitCode::from(1));
    };
    let connection = match connect(common, &desired).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aca-reconciler apply: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let live = live::snapshot(&connection.client, &desired, args.concurrency).await;
    let options = ApplyOptions {
        concurrency: args.concurrency,
        max_actions: args.max_actions,
        revision_timeout: args.revision_timeout,
        poll_interval: connection.poll_interval,
        ..ApplyOptions::default()
    };
    let started = std::time::Instant::now();
    let reports =
        crate::apply::apply(&connection.client, &desired, live, &options, Clock::new()).await;
    let failed = reports.iter().filter(|r| !r.result.is_ok()).count();
    match common.output {
        Output::Json => {
            serde_json::to_writer_pretty(
                &mut *out,
                &json!({"apps": reports, "failed": failed, "seconds": started.elapsed().as_secs_f64()}),
            )?;
            writeln!(out)?;
        }
        Output::Text => {
            for r in &reports {
                let head = match &r.result {
                    AppResult::InSync => "= in sync".to_owned(),
                    AppResult::Converged => format!("✓ converged ({} actions)", r.actions.len()),
                    AppResult::Suspended => "◌ suspended: drift reported, nothing done".to_owned(),
                    AppResult::Deferred => "… deferred: the --max-actions budget of this pass is spent".to_owned(),
                    AppResult::Missing => "! missing: the app does not exist in Azure (aca-reconciler never creates apps)".to_owned(),
                    AppResult::Failed { error } => format!("✗ failed: {error}"),
                };
                writeln!(out, "{}: {head}", r.app)?;
                for d in &r.actions {
                    match &d.error {
                        None => writeln!(out, "    {}  [{} ms]", d.description, d.ms)?,
                        Some(e) => writeln!(out, "    {}  FAILED: {e}", d.description)?,
                    }
                }
            }
            let writes: usize = reports
                .iter()
                .map(|r| r.actions.iter().filter(|d| d.action.is_write()).count())
                .sum();
            writeln!(
                out,
                "Apply: {} apps, {writes} writes, {failed} failed, {:.1} s.",
                reports.len(),
                started.elapsed().as_secs_f64()
            )?;
        }
    }
    drop(connection);
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

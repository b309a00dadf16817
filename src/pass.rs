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
            Outcome::Blocked { reason } => ("blocked", Some(reason.to_string())),
        },
        (_, None) => ("unreadable", None),
    }
}

/// The common start of `plan`, `apply` and `status`: load the desired state, connect, and take
/// the snapshot. `None` when something was already reported (exit 1).
async fn observe(
    command: &str,
    common: &Common,
    concurrency: usize,
    out: &mut (dyn Write + Send),
) -> std::io::Result<Option<(DesiredState, Connection, live::LiveState)>> {
    let Some(desired) = load(common, out)? else {
        return Ok(None);
    };
    let connection = match connect(common, &desired).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aca-reconciler {command}: {e}");
            return Ok(None);
        }
    };
    let live = live::snapshot(&connection.client, &desired, concurrency).await;
    Ok(Some((desired, connection, live)))
}

/// `plan`.
pub async fn plan_command(
    common: &Common,
    args: &PassArgs,
    out: &mut (dyn Write + Send),
) -> std::io::Result<ExitCode> {
    let Some((desired, connection, live)) = observe("plan", common, args.concurrency, out).await?
    else {
        return Ok(ExitCode::from(1));
    };
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
        Output::Markdown => {
            let retention_lines = crate::retention::describe(&retention, &desired.registries);
            write_plan_markdown(
                out,
                &apps,
                &retention_lines,
                format!(
                    "{changes} apps to change ({actions} writes, {revisions} new revisions), {in_sync} in sync, {suspended} suspended, {errors} with errors; {deletions} registry deletions ({} held back by the cap)",
                    retention.held_back()
                ),
            )?;
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

/// One app of a plan: key, spec, status, reason, actions.
type PlannedApp<'a> = (
    &'a crate::spec::AppKey,
    &'a crate::spec::AppSpec,
    &'static str,
    Option<String>,
    Vec<crate::plan::Action>,
);

/// The plan as a pull-request comment: a summary table, then each app's actions folded.
fn write_plan_markdown(
    out: &mut (dyn Write + Send),
    apps: &[PlannedApp<'_>],
    retention: &[String],
    summary: String,
) -> std::io::Result<()> {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    writeln!(out, "### aca-reconciler plan\n\n{summary}.\n")?;
    let changed: Vec<_> = apps.iter().filter(|a| a.2 != "inSync").collect();
    if !changed.is_empty() {
        writeln!(out, "| | app | what |\n|---|---|---|")?;
        for (key, _, status, reason, list) in &changed {
            let (mark, what) = match *status {
                "changes" => ("~", {
                    let n = |k: usize, one: &str, many: &str| {
                        format!("{k} {}", if k == 1 { one } else { many })
                    };
                    format!(
                        "{}, {}",
                        n(
                            list.iter().filter(|a| a.is_write()).count(),
                            "write",
                            "writes"
                        ),
                        n(
                            list.iter().filter(|a| a.creates_revision()).count(),
                            "new revision",
                            "new revisions"
                        )
                    )
                }),
                "suspended" => ("◌", "suspended: nothing will be done".to_owned()),
                other => ("!", format!("{other}: {}", reason.as_deref().unwrap_or(""))),
            };
            writeln!(out, "| {mark} | `{key}` | {} |", cell(&what))?;
        }
        writeln!(out)?;
        for (key, spec, _, _, list) in changed.iter().filter(|a| !a.4.is_empty()) {
            writeln!(
                out,
                "<details><summary><code>{key}</code> ({})</summary>\n\n```text",
                spec.source
            )?;
            for a in list {
                writeln!(out, "{}", render::describe(a))?;
            }
            writeln!(out, "```\n</details>\n")?;
        }
    }
    if !retention.is_empty() {
        writeln!(
            out,
            "<details><summary>registry retention</summary>\n\n```text"
        )?;
        for l in retention {
            writeln!(out, "{l}")?;
        }
        writeln!(out, "```\n</details>")?;
    }
    Ok(())
}

/// `apply`.
pub async fn apply_command(
    common: &Common,
    args: &PassArgs,
    out: &mut (dyn Write + Send),
) -> std::io::Result<ExitCode> {
    crate::telemetry::init(common.log_format, "info");
    let Some((desired, connection, live)) = observe("apply", common, args.concurrency, out).await?
    else {
        return Ok(ExitCode::from(1));
    };
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
        Output::Text | Output::Markdown => {
            for r in &reports {
                let head = match &r.result {
                    AppResult::InSync => "= in sync".to_owned(),
                    AppResult::Converged => format!("✓ converged ({} actions)", r.actions.len()),
                    AppResult::Suspended => "◌ suspended: drift reported, nothing done".to_owned(),
                    AppResult::Deferred => "… deferred: the --max-actions budget of this pass is spent".to_owned(),
                    AppResult::Standby => "… stopped: this replica is not the leader (any more)".to_owned(),
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

/// `run`: the controller, with its HTTP endpoints, until SIGTERM/SIGINT.
pub async fn run_command(
    common: &Common,
    args: &crate::cli::RunArgs,
    out: &mut (dyn Write + Send),
) -> std::io::Result<ExitCode> {
    crate::telemetry::init(common.log_format, "info");
    let options = LoadOptions {
        subscription: common.subscription.clone(),
    };
    let first = spec::load(std::slice::from_ref(&common.desired_state), &options);
    for d in &first.diagnostics {
        tracing::warn!(problem = %d, "desired state");
    }
    let connection = match connect(common, &first.state).await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("aca-reconciler run: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "aca-reconciler run: cannot listen on {}: {e} (choose another --listen)",
                args.listen
            );
            return Ok(ExitCode::from(1));
        }
    };
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "the HTTP endpoints listen beyond loopback, as --listen asked");
    }
    let shared = Arc::new(crate::reconcile::Shared::default());
    connection.client.set_metrics(shared.metrics.arm.clone());
    // Leader election (contract section 5): writes are fenced by the lease from here on.
    let lease_stop = tokio_util::sync::CancellationToken::new();
    let (fence, elector) = match &args.lease_blob {
        None => (crate::lease::Fence::unfenced(), None),
        Some(url) => {
            let started = crate::lease::LeaseConfig::new(url, args.lease_duration).and_then(|c| {
                crate::lease::Elector::new(c, connection.client.tokens().azure_credential())
            });
            match started {
                Ok((elector, fence)) => {
                    let stop = lease_stop.clone();
                    (fence, Some(tokio::spawn(elector.run(stop))))
                }
                Err(e) => {
                    eprintln!("aca-reconciler run: {e}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
    };
    connection.client.set_fence(fence.clone());
    connection.acr.set_fence(fence.clone());
    let token = tokio_util::sync::CancellationToken::new();
    let app = crate::http::router(shared.clone(), std::env::var("ACAR_TRIGGER_TOKEN").ok());
    let server_token = token.clone();
    let server = tokio::spawn(crate::http::serve(listener, app, server_token));
    // First signal: stop taking work and drain; second: exit at once.
    let signal_token = token.clone();
    let first_signal = crate::shutdown::signalled();
    tokio::spawn(async move {
        first_signal.await;
        tracing::info!("signal received: finishing running passes (a second signal exits at once)");
        signal_token.cancel();
        crate::shutdown::signalled().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    writeln!(
        out,
        "aca-reconciler run: reconciling {} apps every {:?} (endpoints on http://{})",
        first.state.apps.len(),
        args.interval,
        args.listen
    )?;
    out.flush()?;
    let config = crate::reconcile::RunConfig {
        interval: args.interval,
        concurrency: args.pass.concurrency,
        max_actions: args.pass.max_actions,
        revision_timeout: args.pass.revision_timeout,
        poll_interval: connection.poll_interval,
        max_tag_deletions: common.max_tag_deletions,
        reverify_after: args.reverify_after,
        ..crate::reconcile::RunConfig::default()
    };
    let store = crate::reconcile::desired::DesiredStore::new(common.desired_state.clone(), options);
    crate::reconcile::run(store, connection, config, shared, fence, token.clone()).await;
    token.cancel();
    // Only now, with no pass running, is the lease given up.
    lease_stop.cancel();
    if let Some(elector) = elector {
        let _ = elector.await;
    }
    let _ = server.await;
    Ok(ExitCode::SUCCESS)
}

/// `status`: from a running controller (`--server`), or computed live.
pub async fn status_command(
    common: &Common,
    args: &crate::cli::StatusArgs,
    out: &mut (dyn Write + Send),
) -> std::io::Result<ExitCode> {
    if let Some(server) = &args.server {
        let url = format!("{}/status", server.trim_end_matches('/'));
        let body = match reqwest::get(&url).await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            Ok(r) => {
                eprintln!("aca-reconciler status: {url} answered {}", r.status());
                return Ok(ExitCode::from(1));
            }
            Err(e) => {
                eprintln!(
                    "aca-reconciler status: cannot reach {url}: {e} (is `aca-reconciler run` listening there?)"
                );
                return Ok(ExitCode::from(1));
            }
        };
        let Some(body) = body else {
            eprintln!("aca-reconciler status: {url} did not answer JSON");
            return Ok(ExitCode::from(1));
        };
        let apps: Vec<Value> = body["apps"]
            .as_object()
            .map(|m| m.values().cloned().collect())
            .or_else(|| body["apps"].as_array().cloned())
            .unwrap_or_default();
        let unhealthy = apps
            .iter()
            .filter(|a| !matches!(a["state"].as_str(), Some("inSync" | "suspended")))
            .count();
        if common.output == Output::Json {
            serde_json::to_writer_pretty(&mut *out, &body)?;
            writeln!(out)?;
        } else {
            if body["leadership"] == "standby" {
                writeln!(
                    out,
                    "# {server} is a standby replica: another replica holds the lease and acts; ask the leader (its /metrics has acar_leader 1) for the live picture"
                )?;
            }
            writeln!(
                out,
                "{:<40} {:<10} {:<8} {:<60} LAST ERROR",
                "APP", "STATE", "FAILURES", "LAST ACTION"
            )?;
            for a in &apps {
                let app = format!(
                    "{}/{}",
                    a["resourceGroup"].as_str().unwrap_or(""),
                    a["name"].as_str().unwrap_or("")
                );
                writeln!(
                    out,
                    "{:<40} {:<10} {:<8} {:<60} {}",
                    app,
                    a["state"].as_str().unwrap_or(""),
                    a["failures"].as_u64().unwrap_or(0),
                    a["lastAction"].as_str().unwrap_or("-"),
                    a["lastError"].as_str().unwrap_or("-")
                )?;
            }
            for e in body["desiredStateErrors"].as_array().into_iter().flatten() {
                writeln!(out, "! {}", e.as_str().unwrap_or(""))?;
            }
        }
        return Ok(if unhealthy > 0 {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    let Some((desired, connection, live)) =
        observe("status", common, args.pass.concurrency, out).await?
    else {
        return Ok(ExitCode::from(1));
    };
    let now = Clock::new().now();
    let mut rows = Vec::new();
    let mut unhealthy = 0;
    for (key, spec) in &desired.apps {
        let observed = live
            .apps
            .get(key)
            .cloned()
            .unwrap_or(Observed::Unreadable("not observed".to_owned()));
        let (row, ok) = status_row(key, spec, &observed, now);
        if !ok {
            unhealthy += 1;
        }
        rows.push(row);
    }
    if common.output == Output::Json {
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<36} {:<8} {:<28} {:<14} {:<6} {:<34} {:<9} STATE",
            "APP", "MODE", "IMAGE", "REPLICAS", "ACTIVE", "TRAFFIC", "RUNNING"
        )?;
        for r in &rows {
            writeln!(
                out,
                "{:<36} {:<8} {:<28} {:<14} {:<6} {:<34} {:<9} {}",
                r["app"].as_str().unwrap_or(""),
                r["mode"].as_str().unwrap_or("-"),
                r["image"].as_str().unwrap_or("-"),
                r["replicas"].as_str().unwrap_or("-"),
                r["active"].as_str().unwrap_or("-"),
                r["traffic"].as_str().unwrap_or("-"),
                r["running"].as_str().unwrap_or("-"),
                r["state"].as_str().unwrap_or("")
            )?;
        }
    }
    drop(connection);
    Ok(if unhealthy > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// One line of the live status table (and whether the app is in sync and healthy).
fn status_row(
    key: &crate::spec::AppKey,
    spec: &crate::spec::AppSpec,
    observed: &Observed,
    now: crate::time::Millis,
) -> (Value, bool) {
    let Observed::Found { app, revisions } = observed else {
        let state = if matches!(observed, Observed::Missing) {
            "missing in Azure".to_owned()
        } else {
            "unreadable".to_owned()
        };
        return (json!({"app": key.to_string(), "state": state}), false);
    };
    let planned = plan::plan_app(
        spec,
        plan::Observed {
            app,
            revisions: revisions.as_deref(),
        },
        now,
    );
    let image = app
        .properties
        .template
        .containers
        .iter()
        .filter_map(|c| c.image.as_deref())
        .map(|i| i.rsplit('/').next().unwrap_or(i))
        .collect::<Vec<_>>()
        .join(",");
    let scale = &app.properties.template.scale;
    let live_bounds = format!(
        "{}..{}",
        scale.min_replicas.map_or("?".into(), |v| v.to_string()),
        scale.max_replicas.map_or("?".into(), |v| v.to_string())
    );
    let replicas = match spec.replicas {
        Some(r) => format!("{live_bounds}/{}..{}", r.min, r.max),
        None => live_bounds,
    };
    let active = revisions
        .as_ref()
        .map(|r| r.iter().filter(|r| r.properties.active).count().to_string())
        .unwrap_or_else(|| "-".into());
    let traffic = app
        .traffic()
        .iter()
        .map(|t| {
            format!(
                "{} {}%",
                if t.latest_revision {
                    "latest".to_owned()
                } else {
                    t.revision_name
                        .clone()
                        .unwrap_or_default()
                        .rsplit("--")
                        .next()
                        .unwrap_or("")
                        .to_owned()
                },
                t.weight
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let (state, ok) = match &planned.outcome {
        Outcome::InSync => ("in sync".to_owned(), true),
        Outcome::Suspended => (
            format!("suspended ({} drifted)", planned.actions.len()),
            true,
        ),
        Outcome::Changes => (
            format!(
                "drifted ({} actions)",
                planned.actions.iter().filter(|a| a.is_write()).count()
            ),
            false,
        ),
        Outcome::Busy => ("busy".to_owned(), false),
        Outcome::Blocked { reason } => (format!("blocked: {reason}"), false),
    };
    let running = app.properties.running_status.clone().unwrap_or_default();
    let healthy = running.eq_ignore_ascii_case("running");
    (
        json!({
            "app": key.to_string(), "mode": if app.is_multiple_mode() { "Multiple" } else { "Single" }, "image": image,
            "replicas": replicas, "active": active, "traffic": traffic, "running": running, "state": state,
        }),
        ok && healthy,
    )
}

//! `run`: the controller, with its HTTP endpoints, until SIGTERM/SIGINT (contract sections 4
//! and 5). The command wires the pieces; [`crate::controller`] schedules.

use std::io::Write;
use std::sync::Arc;

use super::{Error, Exit};
use crate::cli::{Common, RunArgs};
use crate::controller::desired::DesiredStore;
use crate::controller::{RunConfig, StatusBoard};
use crate::spec::{self, LoadOptions};

/// `run`: the controller, with its HTTP endpoints, until SIGTERM/SIGINT.
///
/// # Errors
/// Azure cannot be reached as configured, the listener cannot bind, the lease is unusable, or
/// writing the banner failed.
pub async fn run(
    common: &Common,
    args: &RunArgs,
    out: &mut (dyn Write + Send),
) -> Result<Exit, Error> {
    crate::telemetry::init(common.log_format, "info");
    if let Some(r) = args
        .revision
        .as_deref()
        .filter(|r| crate::controller::status::revision_commit(r).is_none())
    {
        return Err(Error::Setup(format!(
            "--revision {r:?} holds no full commit hash (40 or 64 hex digits), which GitHub commit statuses need: pass `git rev-parse HEAD`, or Flux's main@sha1:<hash>"
        )));
    }
    let options = LoadOptions {
        subscription: common.subscription.clone(),
    };
    let first = spec::load(std::slice::from_ref(&common.desired_state), &options);
    for d in &first.diagnostics {
        tracing::warn!(problem = %d, "desired state");
    }
    let connection = Arc::new(
        crate::connect::connect(common, &first.state)
            .await
            .map_err(Error::Setup)?,
    );
    // The controller loads the tree again and keeps that; this first load, a second copy of
    // every app's spec (2.8 MB at 1,000 apps), is not kept for the life of the process.
    let apps = first.state.apps.len();
    drop(first);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            Error::Setup(format!(
                "cannot listen on {}: {e} (choose another --listen)",
                args.listen
            ))
        })?;
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "the HTTP endpoints listen beyond loopback, as --listen asked");
    }
    let board = Arc::new(StatusBoard::default());
    connection.client.set_metrics(board.metrics.arm.clone());
    // Leader election (contract section 5): writes are fenced by the lease from here on.
    let lease_stop = tokio_util::sync::CancellationToken::new();
    let (fence, elector) = match &args.lease_blob {
        None => (crate::lease::Fence::unfenced(), None),
        Some(url) => {
            let started = crate::lease::LeaseConfig::new(url, args.lease_duration).and_then(|c| {
                crate::lease::Elector::new(c, connection.client.tokens().azure_credential())
            });
            let (elector, fence) = started.map_err(Error::Setup)?;
            let stop = lease_stop.clone();
            (fence, Some(tokio::spawn(elector.run(stop))))
        }
    };
    connection.client.set_fence(fence.clone());
    connection.acr.set_fence(fence.clone());
    let token = tokio_util::sync::CancellationToken::new();
    let app = crate::http::router(board.clone(), std::env::var("ACAR_TRIGGER_TOKEN").ok());
    let server_token = token.clone();
    let server = tokio::spawn(crate::http::serve(listener, app, server_token));
    // First signal: stop taking work and drain; second: `main` exits at once.
    crate::shutdown::two_tier(token.clone());
    writeln!(
        out,
        "aca-reconciler run: reconciling {} apps every {:?} (endpoints on http://{})",
        apps, args.interval, args.listen
    )?;
    out.flush()?;
    // Notifications (`kind: Notification`): sent by the leader only, never holding up a pass.
    let notifier = Arc::new(crate::notify::deliver::Notifier::new(
        crate::notify::deliver::NotifierOptions {
            github_api_url: args.github_api_url.trim_end_matches('/').to_owned(),
            status_url: args.dashboard_url.clone(),
            ..crate::notify::deliver::NotifierOptions::default()
        },
        board.metrics.notifications.clone(),
    ));
    let config = RunConfig {
        interval: args.interval,
        concurrency: args.pass.concurrency,
        max_actions: args.pass.max_actions,
        revision_timeout: args.pass.revision_timeout,
        poll_interval: connection.poll_interval,
        max_tag_deletions: common.max_tag_deletions,
        reverify_after: args.reverify_after,
        notifier: Some(notifier.clone()),
        revision: args.revision.clone(),
        ..RunConfig::default()
    };
    let store = DesiredStore::new(common.desired_state.clone(), options);
    crate::controller::run(store, connection, config, board, fence, token.clone()).await;
    // What is queued goes out now, for at most 5 s (a leader being replaced tells its last).
    notifier.shutdown(std::time::Duration::from_secs(5)).await;
    token.cancel();
    // Only now, with no pass running, is the lease given up.
    lease_stop.cancel();
    if let Some(elector) = elector {
        let _ = elector.await;
    }
    let _ = server.await;
    Ok(Exit::Success)
}

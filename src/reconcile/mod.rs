//! The controller: `run`. It only schedules; observing, planning and acting are
//! [`crate::live`], [`crate::plan`] and [`crate::apply`].
//!
//! # How work is scheduled
//! - A keyed queue holds one due time per app; the earliest wins. Every due app that is not
//!   already being worked on goes into the next pass; an app is never in two passes at once.
//! - Triggers: the full resync every `--interval`; a change of the desired-state files (polled,
//!   debounced until the tree is quiet); `POST /reconcile`; and per-app retries after a
//!   failure, with exponential backoff and jitter, capped, reset by a success.
//! - The unit of cost is the resource group: observing any of its apps costs one list of all
//!   of them. So the resync is jittered (±10%) per resource group, not per app (a fleet of
//!   groups does not fire at once, and a group's apps stay together), and when one app of a
//!   group comes due, its siblings due within the jitter window ride along on the same list.
//! - Revisions are read only for apps whose live summary or spec changed since they were last
//!   verified in sync, or whose last full verification is `reverify_after` passes old
//!   ([`crate::live::snapshot_since`]). `POST /reconcile` verifies everything in full.
//! - Registry retention runs every `reverify_after` resyncs (and on `POST /reconcile`); it
//!   lists the revisions only of apps with a new latest revision since its last run.
//! - With leader election ([`crate::lease`]), passes and retention start only while this
//!   replica leads; gaining the lease makes every app due at once. The clients refuse writes
//!   the moment the lease is no longer certain, so a pass that loses it stops before its next
//!   write and its apps wait for whoever leads.
//!
//! # Shutdown
//! The first SIGTERM/SIGINT stops new passes and lets running ones finish (they end at safe
//! points: an executor never stops in the middle of an action); a second one exits at once.

pub mod desired;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::apply::{AppReport, AppResult, ApplyOptions, Verification};
use crate::lease::Fence;
use crate::pass::Connection;
use crate::spec::{AppKey, DesiredState};
use crate::time::{self, Clock};
use desired::DesiredStore;
use status::{Metrics, ResultLabels, Status};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Full resync period.
    pub interval: Duration,
    /// Apps worked on at once.
    pub concurrency: usize,
    /// Writes per pass.
    pub max_actions: Option<usize>,
    /// How long a new revision may take to run.
    pub revision_timeout: Duration,
    /// Poll interval while waiting on Azure.
    pub poll_interval: Duration,
    /// How often the desired-state tree is checked for changes.
    pub file_poll: Duration,
    /// First retry delay after a failure (doubled per failure).
    pub backoff_base: Duration,
    /// Largest retry delay.
    pub backoff_cap: Duration,
    /// Registry tag deletions per pass.
    pub max_tag_deletions: usize,
    /// How long running passes may take to finish after the first signal.
    pub drain: Duration,
    /// An app verified in sync is read in full again after this many passes without change.
    pub reverify_after: u32,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            concurrency: 8,
            max_actions: None,
            revision_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
            file_poll: Duration::from_millis(250),
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(600),
            max_tag_deletions: crate::retention::DEFAULT_CAP,
            drain: Duration::from_secs(120),
            reverify_after: 6,
        }
    }
}

/// State shared with the HTTP endpoints.
#[derive(Debug, Default)]
pub struct Shared {
    /// What `/status` shows.
    pub status: Mutex<Status>,
    /// What `/metrics` shows.
    pub metrics: Metrics,
    /// `POST /reconcile` pokes this.
    pub trigger: Notify,
}

impl Shared {
    /// The status, locked.
    pub fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn group_of(k: &AppKey) -> (&str, &str) {
    (&k.subscription, &k.resource_group)
}

/// ±10% of `d`, from a cheap per-call random number (jitter needs no cryptography).
fn jittered(d: Duration) -> Duration {
    let r = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
    let factor = 0.9 + (r % 2001) as f64 / 10_000.0;
    d.mul_f64(factor)
}

/// Backoff after `failures` failures in a row: base * 2^(n-1), jittered, capped.
pub fn backoff(config: &RunConfig, failures: u32) -> Duration {
    let exp = config
        .backoff_base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    jittered(exp.min(config.backoff_cap))
}

fn wall(at: Instant, clock: &Clock) -> String {
    let ahead = at.saturating_duration_since(Instant::now());
    time::format_arm(clock.now() + ahead.as_millis() as i64)
}

/// Runs until `token` is cancelled; then lets running passes finish (up to `config.drain`).
pub async fn run(
    mut store: DesiredStore,
    connection: Arc<Connection>,
    config: RunConfig,
    shared: Arc<Shared>,
    mut fence: Fence,
    token: CancellationToken,
) {
    let clock = Clock::new();
    store.reload();
    refresh_desired(&store, &shared);
    let mut leading = fence.is_leader();
    publish_leadership(&fence, leading, &shared);
    let mut due: BTreeMap<AppKey, Instant> = store
        .state
        .apps
        .keys()
        .map(|k| (k.clone(), Instant::now()))
        .collect();
    let mut failures: BTreeMap<AppKey, u32> = BTreeMap::new();
    // App -> (fingerprint when last verified in sync, passes since).
    let mut verified: BTreeMap<AppKey, (u64, u32)> = BTreeMap::new();
    let mut in_flight: BTreeSet<AppKey> = BTreeSet::new();
    let mut passes: JoinSet<Vec<AppReport>> = JoinSet::new();
    let mut next_retention = Instant::now();
    let revision_images = Arc::new(crate::retention::RevisionImages::default());
    let mut retention_running = false;
    let mut retention_task: JoinSet<crate::retention::RetentionReport> = JoinSet::new();
    let mut pending_change: Option<(Instant, desired::Fingerprint)> = None;
    let mut first_pass_done = false;
    tracing::info!(
        apps = store.state.apps.len(),
        interval_s = config.interval.as_secs(),
        "controller started"
    );

    loop {
        // Start a pass over every due app that is not being worked on.
        let now = Instant::now();
        let mut ready: Vec<AppKey> = due
            .iter()
            .filter(|(k, at)| **at <= now && !in_flight.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        // Siblings in the same resource groups, due soon and not backing off, ride along.
        let groups: BTreeSet<(&str, &str)> = ready.iter().map(group_of).collect();
        let window = now + config.interval / 10;
        let riders: Vec<AppKey> = due
            .iter()
            .filter(|(k, at)| {
                **at > now
                    && **at <= window
                    && !in_flight.contains(*k)
                    && !failures.contains_key(*k)
                    && groups.contains(&group_of(k))
            })
            .map(|(k, _)| k.clone())
            .collect();
        ready.extend(riders);
        if !ready.is_empty() && leading && !token.is_cancelled() {
            let subset = DesiredState {
                apps: ready
                    .iter()
                    .filter_map(|k| store.state.apps.get(k).map(|s| (k.clone(), s.clone())))
                    .collect(),
                registries: Vec::new(),
                subscriptions: store.state.subscriptions.clone(),
            };
            for k in &ready {
                due.remove(k);
                in_flight.insert(k.clone());
            }
            let connection = connection.clone();
            let options = ApplyOptions {
                concurrency: config.concurrency,
                max_actions: config.max_actions,
                revision_timeout: config.revision_timeout,
                poll_interval: config.poll_interval,
                ..ApplyOptions::default()
            };
            let fresh: BTreeMap<AppKey, u64> = subset
                .apps
                .keys()
                .filter_map(|k| {
                    verified
                        .get(k)
                        .filter(|(_, age)| *age < config.reverify_after)
                        .map(|(fp, _)| (k.clone(), *fp))
                })
                .collect();
            let span = tracing::info_span!("pass", apps = subset.apps.len());
            passes.spawn(tracing::Instrument::instrument(
                async move { pass_by_group(&connection, subset, &fresh, &options).await },
                span,
            ));
        }
        // Registry retention after full resyncs, when no pass is running.
        if !retention_running
            && passes.is_empty()
            && Instant::now() >= next_retention
            && !store.state.registries.is_empty()
            && leading
            && !token.is_cancelled()
        {
            retention_running = true;
            let connection = connection.clone();
            let state = store.state.clone();
            let cap = config.max_tag_deletions;
            let concurrency = config.concurrency;
            let cache = revision_images.clone();
            retention_task.spawn(async move {
                let plan = crate::retention::plan_with(
                    &connection.client,
                    &connection.acr,
                    &state,
                    Clock::new().now(),
                    cap,
                    concurrency,
                    &cache,
                )
                .await;
                crate::retention::apply(&connection.acr, &plan).await
            });
        }
        shared.metrics.queue_depth.set(due.len() as i64);

        let next_due = due
            .values()
            .min()
            .copied()
            .unwrap_or_else(|| Instant::now() + config.interval);
        let wake = next_due.min(Instant::now() + config.file_poll);
        tokio::select! {
            () = token.cancelled(), if !token.is_cancelled() => {
                tracing::info!(running = in_flight.len(), "stopping: no new passes; letting running ones finish");
            }
            () = fence.changed() => {
                let now_leading = fence.is_leader();
                if now_leading && !leading {
                    // Whatever the last leader left is ours now: look at everything.
                    for k in store.state.apps.keys() {
                        due.insert(k.clone(), Instant::now());
                    }
                    next_retention = Instant::now();
                }
                leading = now_leading;
                publish_leadership(&fence, leading, &shared);
            }
            () = shared.trigger.notified() => {
                tracing::info!("reconcile requested over HTTP: verifying every app in full");
                verified.clear();
                for k in store.state.apps.keys() {
                    due.insert(k.clone(), Instant::now());
                }
                next_retention = Instant::now();
            }
            Some(done) = passes.join_next() => {
                let reports = done.unwrap_or_default();
                let mut status = shared.status();
                let now_text = time::format_arm(clock.now());
                let mut any_failed = false;
                // One resync time per resource group of this pass (see the module docs).
                let mut group_next: BTreeMap<(String, String), Instant> = BTreeMap::new();
                for report in &reports {
                    match report.verified {
                        Verification::Full(fp) => {
                            verified.insert(report.app.clone(), (fp, 0));
                        }
                        Verification::Unchanged => {
                            if let Some(v) = verified.get_mut(&report.app) {
                                v.1 += 1;
                            }
                        }
                        Verification::No => {
                            verified.remove(&report.app);
                        }
                    }
                    in_flight.remove(&report.app);
                    if report.result == AppResult::Standby {
                        // Not a failure of the app: it waits for this replica to lead again.
                        if store.state.apps.contains_key(&report.app) {
                            due.insert(report.app.clone(), Instant::now());
                        }
                        continue;
                    }
                    let next = if report.result.is_ok() {
                        failures.remove(&report.app);
                        let (sub, rg) = group_of(&report.app);
                        *group_next
                            .entry((sub.to_owned(), rg.to_owned()))
                            .or_insert_with(|| Instant::now() + jittered(config.interval))
                    } else {
                        any_failed = true;
                        let n = failures.entry(report.app.clone()).or_insert(0);
                        *n += 1;
                        Instant::now() + backoff(&config, *n)
                    };
                    if store.state.apps.contains_key(&report.app) {
                        due.entry(report.app.clone()).and_modify(|d| *d = (*d).min(next)).or_insert(next);
                    }
                    status.record(report, &shared.metrics, Some(wall(next, &clock)), &now_text);
                    if let AppResult::Failed { error } = &report.result {
                        tracing::warn!(app = %report.app, %error, "app failed; retrying with backoff");
                    }
                }
                status.passes += 1;
                status.last_pass_at = Some(now_text);
                let result = if any_failed { "failed" } else { "ok" };
                shared.metrics.passes.get_or_create(&ResultLabels { result: result.to_owned() }).inc();
                if !any_failed {
                    shared.metrics.last_success.set(clock.now() as f64 / 1000.0);
                }
                if !first_pass_done {
                    first_pass_done = true;
                    status.ready = true;
                }
                status.export(&shared.metrics);
                tracing::info!(apps = reports.len(), failed = reports.iter().filter(|r| !r.result.is_ok()).count(), "pass done");
            }
            Some(done) = retention_task.join_next() => {
                retention_running = false;
                // Tags age in days: every `reverify_after` resyncs is soon enough.
                next_retention = Instant::now() + jittered(config.interval * config.reverify_after);
                if let Ok(report) = done {
                    shared.metrics.tags_deleted.inc_by(report.tags_deleted as u64);
                    for e in &report.errors {
                        tracing::warn!(error = %e, "registry retention");
                    }
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        if token.is_cancelled() {
            break;
        }
        // The desired-state tree: reload once it is quiet (a git pull is one change).
        if store.has_changed() {
            let fp = store.fingerprint();
            match &pending_change {
                Some((since, seen)) if *seen == fp && since.elapsed() >= config.file_poll => {
                    pending_change = None;
                    let reload = store.reload();
                    refresh_desired(&store, &shared);
                    tracing::info!(
                        changed_apps = reload.apps.len(),
                        problems = store.problems.len(),
                        "desired state reloaded"
                    );
                    for k in reload.apps {
                        if store.state.apps.contains_key(&k) {
                            due.insert(k, Instant::now());
                        } else {
                            due.remove(&k);
                            verified.remove(&k);
                            shared.status().apps.remove(&k);
                        }
                    }
                }
                Some((_, seen)) if *seen == fp => {}
                _ => pending_change = Some((Instant::now(), fp)),
            }
        }
    }

    // Drain: running passes end at safe points.
    let deadline = Instant::now() + config.drain;
    while !passes.is_empty() || !retention_task.is_empty() {
        tokio::select! {
            Some(_) = passes.join_next() => {}
            Some(_) = retention_task.join_next() => {}
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!("drain deadline reached; stopping with work in flight (the next start converges it)");
                break;
            }
        }
    }
    tracing::info!("controller stopped");
}

/// One pass: each resource group is observed (one list) and converged, two groups at a time,
/// so a pass over a whole fleet holds the live state of two groups, not of every app.
async fn pass_by_group(
    connection: &Connection,
    desired: DesiredState,
    fresh: &BTreeMap<AppKey, u64>,
    options: &ApplyOptions,
) -> Vec<AppReport> {
    let mut groups: BTreeMap<(String, String), DesiredState> = BTreeMap::new();
    for (key, spec) in desired.apps {
        groups
            .entry((key.subscription.clone(), key.resource_group.clone()))
            .or_insert_with(|| DesiredState {
                subscriptions: desired.subscriptions.clone(),
                ..DesiredState::default()
            })
            .apps
            .insert(key, spec);
    }
    let client = &connection.client;
    // One `--max-actions` budget for the whole pass.
    let options = &ApplyOptions {
        budget: Some(Arc::new(std::sync::atomic::AtomicUsize::new(
            options.max_actions.unwrap_or(usize::MAX),
        ))),
        ..options.clone()
    };
    // Boxed first, as in live::snapshot (rustc's lifetime inference inside a spawned pass).
    let futures: Vec<BoxFuture<'_, Vec<AppReport>>> = groups
        .into_values()
        .map(|group| -> BoxFuture<'_, Vec<AppReport>> {
            Box::pin(async move {
                let live =
                    crate::live::snapshot_since(client, &group, options.concurrency, fresh).await;
                crate::apply::apply(client, &group, live, options, Clock::new()).await
            })
        })
        .collect();
    let done: Vec<Vec<AppReport>> = futures_util::stream::iter(futures)
        .buffer_unordered(2)
        .collect()
        .await;
    done.into_iter().flatten().collect()
}

/// Publishes whether this replica acts to `/status` and `/metrics`. A standby replica is ready:
/// it has nothing to do until it leads.
fn publish_leadership(fence: &Fence, leading: bool, shared: &Shared) {
    shared.metrics.leader.set(i64::from(leading));
    if fence.is_elected() {
        let mut status = shared.status();
        status.leadership = Some(if leading { "leader" } else { "standby" });
        if !leading {
            status.ready = true;
        }
    }
}

/// Publishes the desired state's problems and apps to `/status`.
fn refresh_desired(store: &DesiredStore, shared: &Shared) {
    let mut status = shared.status();
    status.desired_state_errors = store.problems.iter().map(ToString::to_string).collect();
    for (k, spec) in &store.state.apps {
        let entry = status
            .apps
            .entry(k.clone())
            .or_insert_with(|| status::AppStatus::pending(k.clone()));
        entry.source = spec.source.to_string();
        entry.desired_stale = store.stale_files.contains(&spec.source.file);
    }
    status.export(&shared.metrics);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let c = RunConfig {
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(60),
            ..RunConfig::default()
        };
        let b1 = backoff(&c, 1).as_secs_f64();
        let b3 = backoff(&c, 3).as_secs_f64();
        assert!((4.5..=5.5).contains(&b1), "{b1}");
        assert!((18.0..=22.0).contains(&b3), "{b3}");
        assert!(backoff(&c, 30).as_secs_f64() <= 66.0);
    }
}

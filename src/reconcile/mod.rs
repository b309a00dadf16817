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
    let factor = 0.9 + (random() % 2001) as f64 / 10_000.0;
    d.mul_f64(factor)
}

/// A random age in `0..limit`.
fn stagger(limit: u32) -> u32 {
    u32::try_from(random() % u64::from(limit.max(1))).unwrap_or(0)
}

/// A random number from std's per-instance hash keys: enough for jitter, no dependency.
fn random() -> u64 {
    std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8)
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
    let mut book = AppBook {
        due: store
            .state
            .apps
            .keys()
            .map(|k| (k.clone(), Instant::now()))
            .collect(),
        ..AppBook::default()
    };
    let mut passes: JoinSet<PassSummary> = JoinSet::new();
    // The apps each running pass holds, to free them should it end without reporting them.
    let mut holding: BTreeMap<tokio::task::Id, Vec<AppKey>> = BTreeMap::new();
    // Each app's report as soon as it is finished: an app is free for its next pass (a file
    // change, say) without waiting for the slowest app of the pass it was in.
    let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel::<AppReport>();
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
        let mut ready: Vec<AppKey> = book
            .due
            .iter()
            .filter(|(k, at)| **at <= now && !book.in_flight.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        // Siblings in the same resource groups, due soon and not backing off, ride along.
        let groups: BTreeSet<(&str, &str)> = ready.iter().map(group_of).collect();
        let window = now + config.interval / 10;
        let riders: Vec<AppKey> = book
            .due
            .iter()
            .filter(|(k, at)| {
                **at > now
                    && **at <= window
                    && !book.in_flight.contains(*k)
                    && !book.failures.contains_key(*k)
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
                book.due.remove(k);
                book.in_flight.insert(k.clone());
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
                    book.verified
                        .get(k)
                        .filter(|(_, age)| *age < config.reverify_after)
                        .map(|(fp, _)| (k.clone(), *fp))
                })
                .collect();
            let span = tracing::info_span!("pass", apps = subset.apps.len());
            let reports = report_tx.clone();
            let held = ready.clone();
            let task = passes.spawn(tracing::Instrument::instrument(
                async move { pass_by_group(&connection, subset, &fresh, &options, &reports).await },
                span,
            ));
            holding.insert(task.id(), held);
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
        shared.metrics.queue_depth.set(book.due.len() as i64);

        let next_due = book
            .due
            .values()
            .min()
            .copied()
            .unwrap_or_else(|| Instant::now() + config.interval);
        let wake = next_due.min(Instant::now() + config.file_poll);
        tokio::select! {
            () = token.cancelled(), if !token.is_cancelled() => {
                tracing::info!(running = book.in_flight.len(), "stopping: no new passes; letting running ones finish");
            }
            () = fence.changed() => {
                let now_leading = fence.is_leader();
                if now_leading && !leading {
                    // Whatever the last leader left is ours now: look at everything.
                    for k in store.state.apps.keys() {
                        book.due.insert(k.clone(), Instant::now());
                    }
                    next_retention = Instant::now();
                }
                leading = now_leading;
                publish_leadership(&fence, leading, &shared);
            }
            () = shared.trigger.notified() => {
                tracing::info!("reconcile requested over HTTP: verifying every app in full");
                book.verified.clear();
                for k in store.state.apps.keys() {
                    book.due.insert(k.clone(), Instant::now());
                }
                next_retention = Instant::now();
            }
            Some(report) = report_rx.recv() => {
                book.record(&report, &store, &config, &shared, &clock);
            }
            Some(done) = passes.join_next_with_id() => {
                // Its reports were sent before it ended; take any still queued first.
                while let Ok(report) = report_rx.try_recv() {
                    book.record(&report, &store, &config, &shared, &clock);
                }
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                // A pass that panicked frees its unreported apps as failed, or they would wait
                // for it forever.
                let held = holding.remove(&id).unwrap_or_default();
                if done.is_err() {
                    let unreported: Vec<AppKey> =
                        held.into_iter().filter(|a| book.in_flight.contains(a)).collect();
                    for app in unreported {
                        let report = AppReport {
                            app,
                            result: AppResult::Failed {
                                error: "internal error: the pass working on this app ended without finishing it; retrying".to_owned(),
                            },
                            actions: Vec::new(),
                            verified: Verification::No,
                        };
                        book.record(&report, &store, &config, &shared, &clock);
                    }
                }
                let summary = done.map(|(_, s)| s).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "a pass ended abnormally");
                    PassSummary { apps: 0, failed: 1 }
                });
                let mut status = shared.status();
                status.passes += 1;
                status.last_pass_at = Some(time::format_arm(clock.now()));
                let result = if summary.failed > 0 { "failed" } else { "ok" };
                shared.metrics.passes.get_or_create(&ResultLabels { result: result.to_owned() }).inc();
                if summary.failed == 0 {
                    shared.metrics.last_success.set(clock.now() as f64 / 1000.0);
                }
                if !first_pass_done {
                    first_pass_done = true;
                    status.ready = true;
                }
                status.export(&shared.metrics);
                book.group_next.retain(|_, at| *at > Instant::now());
                tracing::info!(apps = summary.apps, failed = summary.failed, "pass done");
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
                            book.due.insert(k, Instant::now());
                        } else {
                            book.due.remove(&k);
                            book.verified.remove(&k);
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

/// The scheduler's books on each app, updated as each app's report comes in.
#[derive(Default)]
struct AppBook {
    /// When each app is due; the earliest wins.
    due: BTreeMap<AppKey, Instant>,
    /// Failures in a row, for the backoff.
    failures: BTreeMap<AppKey, u32>,
    /// App -> (fingerprint when last verified in sync, passes since).
    verified: BTreeMap<AppKey, (u64, u32)>,
    /// Apps held by a running pass.
    in_flight: BTreeSet<AppKey>,
    /// Resource group -> its next resync; see the module docs.
    group_next: BTreeMap<(String, String), Instant>,
}

impl AppBook {
    /// Frees the app for its next pass and schedules it: the group's resync after a success,
    /// a backoff after a failure, at once for a standby replica that leads again.
    fn record(
        &mut self,
        report: &AppReport,
        store: &DesiredStore,
        config: &RunConfig,
        shared: &Shared,
        clock: &Clock,
    ) {
        match report.verified {
            Verification::Full(fp) => {
                // An app verified for the first time starts at a random age, so that a fleet
                // verified together (at start, or after POST /reconcile) is re-verified a slice
                // at each resync instead of all at once every `reverify_after` resyncs. Never
                // later than the limit: the age only starts higher.
                let age = if self.verified.contains_key(&report.app) {
                    0
                } else {
                    stagger(config.reverify_after)
                };
                self.verified.insert(report.app.clone(), (fp, age));
            }
            Verification::Unchanged => {
                if let Some(v) = self.verified.get_mut(&report.app) {
                    v.1 += 1;
                }
            }
            Verification::No => {
                self.verified.remove(&report.app);
            }
        }
        self.in_flight.remove(&report.app);
        let managed = store.state.apps.contains_key(&report.app);
        if report.result == AppResult::Standby {
            // Not a failure of the app: it waits for this replica to lead again.
            if managed {
                self.due.insert(report.app.clone(), Instant::now());
            }
            return;
        }
        let next = if report.result.is_ok() {
            self.failures.remove(&report.app);
            // One resync time per resource group: every app of the group finishing in this
            // cycle shares it, however far apart they finish, so they come due, and are
            // listed, together. A time less than half an interval away is the last cycle's.
            let (sub, rg) = group_of(&report.app);
            let now = Instant::now();
            let entry = self
                .group_next
                .entry((sub.to_owned(), rg.to_owned()))
                .or_insert(now);
            if *entry <= now + config.interval / 2 {
                *entry = now + jittered(config.interval);
            }
            *entry
        } else {
            let n = self.failures.entry(report.app.clone()).or_insert(0);
            *n += 1;
            Instant::now() + backoff(config, *n)
        };
        if managed {
            self.due
                .entry(report.app.clone())
                .and_modify(|d| *d = (*d).min(next))
                .or_insert(next);
        }
        let now_text = time::format_arm(clock.now());
        shared
            .status()
            .record(report, &shared.metrics, Some(wall(next, clock)), &now_text);
        if let AppResult::Failed { error } = &report.result {
            tracing::warn!(app = %report.app, %error, "app failed; retrying with backoff");
        }
    }
}

/// How a pass went, for the pass counters; its apps' reports went out as each finished.
#[derive(Debug, Default)]
struct PassSummary {
    apps: usize,
    failed: usize,
}

/// One pass, as a pipeline: resource groups are observed (one list each), two at a time, and
/// their apps queued; up to `--concurrency` apps are converged at once, from whichever groups.
/// The queue holds at most `--concurrency` apps, so a group is read only when its apps would
/// soon be worked on: a pass holds the live state of about two groups plus the apps being
/// worked on, not of the whole fleet, and an app waiting for its revision holds up only itself,
/// not the groups behind it. Each app's report goes to `reports` when that app is finished.
async fn pass_by_group(
    connection: &Connection,
    desired: DesiredState,
    fresh: &BTreeMap<AppKey, u64>,
    options: &ApplyOptions,
    reports: &tokio::sync::mpsc::UnboundedSender<AppReport>,
) -> PassSummary {
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
    let concurrency = options.concurrency.max(1);
    // One `--max-actions` budget for the whole pass.
    let budget = crate::apply::budget(options);
    let (queue, queued) = tokio::sync::mpsc::channel::<crate::apply::Work>(concurrency);
    // The receiver is gone only when the controller is stopping.
    let send = |r: AppReport| drop(reports.send(r));

    // Built first and boxed, as in live::snapshot (rustc's lifetime inference inside a spawned
    // pass). Each holds a sender: the queue ends when every group is read and queued. Each
    // yields how many of its apps were in sync as listed (reported at once, never queued).
    let observers: Vec<BoxFuture<'_, usize>> = groups
        .into_values()
        .map(|group| -> BoxFuture<'_, usize> {
            let queue = queue.clone();
            Box::pin(async move {
                let live = crate::live::snapshot_since(client, &group, concurrency, fresh).await;
                let (ready, work) = crate::apply::split(&group, live);
                let in_sync = ready.len();
                ready.into_iter().for_each(send);
                for w in work {
                    if queue.send(w).await.is_err() {
                        break;
                    }
                }
                in_sync
            })
        })
        .collect();
    drop(queue);
    let observe = futures_util::stream::iter(observers)
        .buffer_unordered(2)
        .fold(0, |sum, n| std::future::ready(sum + n));
    let budget = &budget;
    let work =
        futures_util::stream::unfold(
            queued,
            |mut q| async move { q.recv().await.map(|w| (w, q)) },
        )
        .map(|w| -> BoxFuture<'_, AppReport> {
            // Boxed, as in live::snapshot (rustc's lifetime inference inside a spawned pass).
            Box::pin(crate::apply::converge_one(
                client,
                w,
                options,
                budget,
                Clock::new(),
            ))
        })
        .buffer_unordered(concurrency)
        .fold(PassSummary::default(), |mut summary, r| {
            summary.apps += 1;
            summary.failed += usize::from(!r.result.is_ok());
            send(r);
            std::future::ready(summary)
        });
    let (in_sync, mut summary) = tokio::join!(observe, work);
    summary.apps += in_sync;
    summary
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
    fn first_verifications_are_staggered_over_the_reverify_period() {
        let ages: BTreeSet<u32> = (0..200).map(|_| stagger(6)).collect();
        assert!(ages.iter().all(|a| *a < 6), "{ages:?}");
        assert!(ages.len() >= 4, "spread over the period: {ages:?}");
        assert_eq!(stagger(0), 0);
    }

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

//! The controller: `run`. It only schedules: the loop turns inputs (timers, file changes,
//! `POST /reconcile`, leadership, each app's report) into calls on the [`schedule::Schedule`],
//! and hands what it says is due to a pass ([`crate::pass::reconcile_apps`]). Observing,
//! planning and acting are [`crate::live`], [`crate::plan`] and [`crate::apply`].
//!
//! # How work is scheduled ([`schedule`])
//! - One due time per app; the earliest wins; an app is never in two passes at once.
//! - Triggers: the full resync every `--interval`; a change of the desired-state files (polled,
//!   debounced until the tree is quiet); `POST /reconcile`; an app's own "look again at"
//!   (waiting for its operation, its new revision, someone else's write: it resumes without
//!   holding a slot in between); and per-app retries after a failure, with exponential backoff
//!   and jitter, capped, reset by a success. A blocked app waits for its spec or the live app
//!   to change.
//! - The unit of cost is the resource group: one list sees all its apps, so the resync is
//!   jittered per group and siblings due soon ride along.
//! - Revisions are read only for apps whose live summary or spec changed since their last
//!   verdict, or whose last full verification is `reverify_after` resyncs old
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
pub mod notices;
pub mod schedule;
pub mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::apply::{AppReport, ApplyOptions};
use crate::connect::Connection;
use crate::lease::Fence;
use crate::pass::{self, Item, PassSummary};
use crate::spec::AppKey;
use crate::time::{self, Clock};
use desired::DesiredStore;
use schedule::{Schedule, ScheduleConfig, jittered};
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
    /// Where events go (`kind: Notification`); `None`: kept in `/status` only.
    pub notifier: Option<Arc<crate::notify::deliver::Notifier>>,
    /// `--revision`: the desired-state commit events carry, instead of the checkout's.
    pub revision: Option<String>,
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
            notifier: None,
            revision: None,
        }
    }
}

/// What the controller posts for the HTTP endpoints, and the trigger they pull.
#[derive(Debug, Default)]
pub struct StatusBoard {
    /// What `/status` shows.
    pub status: Mutex<Status>,
    /// What `/metrics` shows.
    pub metrics: Metrics,
    /// `POST /reconcile` pokes this.
    pub trigger: Notify,
}

impl StatusBoard {
    /// The status, locked.
    pub fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
    board: Arc<StatusBoard>,
    mut fence: Fence,
    token: CancellationToken,
) {
    let clock = Clock::new();
    store.reload();
    let mut notices = notices::Notices::new(config.notifier.clone(), config.revision.clone());
    let mut leading = fence.is_leader();
    notices.set_leading(leading);
    refresh_desired(&store, &board, &clock);
    notices.on_desired(&store, None, &board, &time::format_arm(clock.now()));
    publish_leadership(&fence, leading, &board);
    let mut schedule = Schedule::new(ScheduleConfig {
        interval: config.interval,
        backoff_base: config.backoff_base,
        backoff_cap: config.backoff_cap,
        reverify_after: config.reverify_after,
        wait_tick: config.poll_interval,
    });
    let start = Instant::now();
    // Nothing to look at: ready at once.
    board.status().ready |= store.state.apps.is_empty();
    for k in store.state.apps.keys() {
        schedule.due_at(k, start);
    }
    schedule.spread(store.state.apps.keys().cloned());
    let mut passes: JoinSet<(PassSummary, Duration)> = JoinSet::new();
    // The apps each running pass holds, to free them should it end without reporting them.
    let mut holding: BTreeMap<tokio::task::Id, Vec<AppKey>> = BTreeMap::new();
    // Each app's report as soon as it is finished: an app is free for its next pass (a file
    // change, say) without waiting for the slowest app of the pass it was in.
    let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel::<AppReport>();
    let mut next_retention = Instant::now();
    // The first retention after start waits until the reconciles have read every managed
    // app's revisions (feeding its cache), or `reverify_after` + 1 resyncs, whichever comes
    // first: first verifications are spread over the resyncs (`Schedule::spread`), and
    // retention reading every app at once would undo that.
    let mut first_retention = Some(start + config.interval * (config.reverify_after + 1));
    let revision_images = Arc::new(crate::retention::RevisionImages::default());
    let mut retention_task: JoinSet<pass::RetentionOutcome> = JoinSet::new();
    let mut pending_change: Option<(Instant, desired::Fingerprint)> = None;
    // `--concurrency` reconciles at once across every running pass.
    let slots = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    tracing::info!(
        apps = store.state.apps.len(),
        interval_s = config.interval.as_secs(),
        "controller started"
    );

    loop {
        // The lease can lapse without a change on its channel (time passed): look every turn.
        if fence.is_leader() != leading {
            leading = on_leadership(&fence, leading, &store, &mut schedule, &board);
            notices.on_leadership(
                leading,
                fence.is_elected(),
                &board,
                &time::format_arm(clock.now()),
            );
            if leading {
                next_retention = Instant::now();
            }
        }
        // Start a pass over every app the schedule says is due.
        if leading && !token.is_cancelled() {
            let batch = schedule.take_ready(Instant::now());
            if !batch.is_empty() {
                let held: Vec<AppKey> = batch.apps().cloned().collect();
                let mut items = Vec::new();
                for key in batch.observe {
                    match store.state.apps.get(&key) {
                        Some(spec) if batch.spread.contains(&key) => {
                            items.push(Item::Spread(spec.clone()));
                        }
                        Some(spec) => items.push(Item::Observe(spec.clone())),
                        None => drop(schedule.record(
                            &AppReport::new(key, crate::state::AppState::Pending),
                            false,
                            Instant::now(),
                        )),
                    }
                }
                for (key, wait) in batch.resume {
                    match store.state.apps.get(&key) {
                        Some(spec) => items.push(Item::Resume(spec.clone(), wait)),
                        None => drop(schedule.record(
                            &AppReport::new(key, crate::state::AppState::Pending),
                            false,
                            Instant::now(),
                        )),
                    }
                }
                let verdicts = batch.verdicts;
                let subscriptions = store.state.subscriptions.clone();
                let connection = connection.clone();
                let options = ApplyOptions {
                    concurrency: config.concurrency,
                    max_actions: config.max_actions,
                    revision_timeout: config.revision_timeout,
                    poll_interval: config.poll_interval,
                    slots: Some(slots.clone()),
                    analysis: Some(connection.analysis.clone()),
                    metrics_lag: connection.metrics_lag,
                    images: Some(revision_images.clone()),
                    ..ApplyOptions::default()
                };
                let span = tracing::info_span!("pass", apps = items.len());
                let reports = report_tx.clone();
                let task = passes.spawn(tracing::Instrument::instrument(
                    async move {
                        let started = Instant::now();
                        let budget = crate::apply::budget(&options);
                        let summary = pass::reconcile_apps(
                            &connection.client,
                            items,
                            &subscriptions,
                            &verdicts,
                            &options,
                            &budget,
                            |r| drop(reports.send(r)),
                        )
                        .await;
                        (summary, started.elapsed())
                    },
                    span,
                ));
                holding.insert(task.id(), held);
            }
        }
        // Registry retention every `reverify_after` resyncs, while no app is being converged
        // (none waits on Azure), so that it does not take ARM's read bucket from them: between
        // passes, or, as resyncs of many groups overlap, an interval after it was due. Work that
        // never stops (long rollouts) cannot starve it: three intervals overdue, it runs anyway.
        let now = Instant::now();
        let converging = schedule.waiting() > 0;
        let first_ready = first_retention.is_none_or(|deadline| {
            now >= deadline || revision_images.covers(store.state.apps.keys())
        });
        if retention_task.is_empty()
            && now >= next_retention
            && first_ready
            && ((!converging && (passes.is_empty() || now >= next_retention + config.interval))
                || now >= next_retention + config.interval * 3)
            && !store.state.registries.is_empty()
            && leading
            && !token.is_cancelled()
        {
            let connection = connection.clone();
            let state = store.state.clone();
            let cap = config.max_tag_deletions;
            let concurrency = config.concurrency;
            let cache = revision_images.clone();
            retention_task.spawn(async move {
                pass::retention(
                    &connection,
                    &state,
                    Clock::new().now(),
                    cap,
                    concurrency,
                    &cache,
                    true,
                )
                .await
            });
        }
        board.metrics.queue_depth.set(schedule.queue_depth() as i64);

        let now = Instant::now();
        // A standby has nothing due: it watches the files and the lease.
        let next_due = match schedule.next_due() {
            Some(at) if leading => at,
            _ => now + config.interval,
        };
        let wake = next_due.min(now + config.file_poll);
        tokio::select! {
            () = token.cancelled(), if !token.is_cancelled() => {
                tracing::info!(running = schedule.in_flight(), "stopping: no new passes; letting running ones finish");
            }
            () = fence.changed() => {
                let was = leading;
                leading = on_leadership(&fence, leading, &store, &mut schedule, &board);
                notices.on_leadership(leading, fence.is_elected(), &board, &time::format_arm(clock.now()));
                if leading && !was {
                    next_retention = Instant::now();
                }
            }
            () = board.trigger.notified() => {
                tracing::info!("reconcile requested over HTTP: verifying every app in full");
                schedule.clear_verdicts();
                let now = Instant::now();
                for k in store.state.apps.keys() {
                    schedule.due_at(k, now);
                }
                next_retention = now;
                first_retention = None;
            }
            Some(report) = report_rx.recv() => {
                release(&mut holding, &report.app);
                on_report(&report, &mut schedule, &store, &board, &clock, &mut notices);
            }
            Some(done) = passes.join_next_with_id() => {
                // Its reports were sent before it ended; take any still queued first.
                while let Ok(report) = report_rx.try_recv() {
                    release(&mut holding, &report.app);
                    on_report(&report, &mut schedule, &store, &board, &clock, &mut notices);
                }
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                let held = holding.remove(&id).unwrap_or_default();
                if done.is_err() {
                    for report in schedule.abandon(&held, Instant::now()) {
                        board.status().record(&report, &board.metrics, None, &time::format_arm(clock.now()), schedule.failures(&report.app));
                    }
                }
                let (summary, took) = done.map(|(_, s)| s).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "a pass ended abnormally");
                    (PassSummary { apps: 0, failed: 1 }, Duration::ZERO)
                });
                end_of_pass(summary, took, &board, &clock);
                schedule.tidy(Instant::now());
            }
            Some(done) = retention_task.join_next() => {
                first_retention = None;
                // Tags age in days: every `reverify_after` resyncs is soon enough.
                next_retention = Instant::now() + jittered(config.interval * config.reverify_after);
                if let Ok(outcome) = done {
                    if let Some(report) = &outcome.done {
                        board.metrics.tags_deleted.inc_by(report.tags_deleted as u64);
                        for e in &report.errors {
                            tracing::warn!(error = %e, "registry retention");
                        }
                        notices.on_retention(report, &board, &time::format_arm(clock.now()));
                    }
                    board.status().retention =
                        Some(status::RetentionView::of(&outcome, time::format_arm(clock.now())));
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
                    refresh_desired(&store, &board, &clock);
                    notices.on_desired(
                        &store,
                        Some(&reload.apps),
                        &board,
                        &time::format_arm(clock.now()),
                    );
                    tracing::info!(
                        changed_apps = reload.apps.len(),
                        problems = store.problems.len(),
                        "desired state reloaded"
                    );
                    let now = Instant::now();
                    for k in reload.apps {
                        if store.state.apps.contains_key(&k) {
                            schedule.due_at(&k, now);
                        } else {
                            schedule.forget(&k);
                            notices.forget(&k);
                            board.status().apps.remove(&k);
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

/// A reported app is no longer its pass's to free, should that pass end abnormally (another
/// pass may take it on next).
fn release(holding: &mut BTreeMap<tokio::task::Id, Vec<AppKey>>, app: &AppKey) {
    for held in holding.values_mut() {
        held.retain(|k| k != app);
    }
}

/// This replica's leadership is now `fence.is_leader()`: publish it, and, on gaining it, make
/// every app due at once (whatever the last leader left is ours now). Returns it.
fn on_leadership(
    fence: &Fence,
    was: bool,
    store: &DesiredStore,
    schedule: &mut Schedule,
    board: &StatusBoard,
) -> bool {
    let now_leading = fence.is_leader();
    if now_leading && !was {
        let now = Instant::now();
        for k in store.state.apps.keys() {
            schedule.due_at(k, now);
        }
    }
    publish_leadership(fence, now_leading, board);
    now_leading
}

/// An app's report: the schedule frees and reschedules it, `/status` and `/metrics` show it.
fn on_report(
    report: &AppReport,
    schedule: &mut Schedule,
    store: &DesiredStore,
    board: &StatusBoard,
    clock: &Clock,
    notices: &mut notices::Notices,
) {
    let managed = store.state.apps.get(&report.app);
    let next = schedule.record(report, managed.is_some(), Instant::now());
    let Some(spec) = managed else {
        return;
    };
    if !report.standby {
        let source = spec.source.to_string();
        notices.on_report(report, &source, board, &time::format_arm(clock.now()));
    }
    let mut status = board.status();
    status.record(
        report,
        &board.metrics,
        next.map(|at| wall(at, clock)),
        &time::format_arm(clock.now()),
        schedule.failures(&report.app),
    );
    status.ready |= status.first_look_done();
    drop(status);
    if let Some(error) = report
        .error
        .as_ref()
        .filter(|_| report.state == crate::state::AppState::Failing)
    {
        tracing::warn!(app = %report.app, %error, "app failed; retrying with backoff");
    }
}

/// A pass ended: its counters and its duration.
fn end_of_pass(summary: PassSummary, took: Duration, board: &StatusBoard, clock: &Clock) {
    let mut status = board.status();
    status.passes += 1;
    status.last_pass_at = Some(time::format_arm(clock.now()));
    let result = if summary.failed > 0 { "failed" } else { "ok" };
    board
        .metrics
        .passes
        .get_or_create(&ResultLabels {
            result: result.to_owned(),
        })
        .inc();
    board.metrics.pass_seconds.observe(took.as_secs_f64());
    if summary.failed == 0 {
        board.metrics.last_success.set(clock.now() as f64 / 1000.0);
    }
    status.ready |= status.first_look_done();
    status.export(&board.metrics);
    tracing::info!(
        apps = summary.apps,
        failed = summary.failed,
        seconds = took.as_secs_f64(),
        "pass done"
    );
}

/// Publishes whether this replica acts to `/status` and `/metrics`. A standby replica is ready:
/// it has nothing to do until it leads.
fn publish_leadership(fence: &Fence, leading: bool, board: &StatusBoard) {
    board.metrics.leader.set(i64::from(leading));
    if fence.is_elected() {
        let mut status = board.status();
        status.leadership = Some(if leading { "leader" } else { "standby" });
        if !leading {
            status.ready = true;
        }
    }
}

/// Publishes the desired state's problems and apps to `/status`.
fn refresh_desired(store: &DesiredStore, board: &StatusBoard, clock: &Clock) {
    let mut status = board.status();
    status.desired_state_errors = store.problems.iter().map(ToString::to_string).collect();
    status.desired_loaded_at = Some(time::format_arm(clock.now()));
    for (k, spec) in &store.state.apps {
        let entry = status
            .apps
            .entry(k.clone())
            .or_insert_with(|| status::AppStatus::pending(k.clone()));
        entry.source = spec.source.to_string();
        entry.desired_stale = store.stale_files.contains(&spec.source.file);
        entry.replicas_desired = spec
            .replicas
            .as_ref()
            .map(|r| status::Shared::new(&format!("{}-{}", r.min, r.max)));
        entry.success_rate_min = spec
            .rollout
            .as_ref()
            .and_then(|r| r.analysis.as_ref())
            .and_then(|a| a.success_rate_min);
    }
    status.export(&board.metrics);
}

//! A pass, composed once for every command: observe the apps, reconcile (or only plan) each,
//! then registry retention, after the apps so that the images of revisions the pass just
//! created are protected.
//!
//! | command | calls |
//! | --- | --- |
//! | `plan`, `status` | [`plan_pass`] (`status` without retention) |
//! | `apply` | [`apply_pass`]: [`reconcile_apps`] until every app is settled, then [`retention`] |
//! | `run` | [`reconcile_apps`] for the apps its schedule says are due, and [`retention`] every `--reverify-after` resyncs |
//!
//! [`reconcile_apps`] is a pipeline: resource groups are observed (one list each) two at a
//! time, and their apps queued; up to `--concurrency` apps are reconciled at once, from
//! whichever groups. Apps that resume a wait ([`crate::apply::Start::Resume`]) skip the list
//! and go straight to the queue. The queue holds at most `--concurrency` apps, so a group is read
//! only when its apps would soon be worked on: a pass holds the live state of about two groups
//! plus the apps being worked on, not of the whole fleet. Each app's report goes to the caller
//! the moment that app is finished.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::time::Instant;

use crate::apply::{self, AppReport, ApplyOptions, Reconcile, Start, Verification, Wait};
use crate::arm::ArmClient;
use crate::connect::Connection;
use crate::live::{self, LiveState, Observation};
use crate::plan::{self, AppPlan};
use crate::retention::{RetentionPlan, RetentionReport, RevisionImages};
use crate::spec::{AppKey, AppSpec, DesiredState};
use crate::state::AppState;
use crate::time::{Clock, Millis};

/// What a full verification found an app to be, remembered by `run` so that, while the app's
/// [`live::fingerprint`] holds, the verdict holds without reading its revisions again.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The fingerprint it was verified with.
    pub fingerprint: u64,
    /// In sync, or blocked.
    pub state: AppState,
    /// Why, for a blocked app.
    pub error: Option<apply::Failure>,
}

/// One app a pass takes on.
#[derive(Debug)]
pub enum Item {
    /// Observe it (through its group's list) and reconcile it.
    Observe(AppSpec),
    /// The same, for an app not verified since the controller started: its first full
    /// verification may wait ([`Reconcile::spread`]).
    Spread(AppSpec),
    /// Resume its wait.
    Resume(AppSpec, Wait),
}

/// How a pass went, for the pass metrics; its apps' reports went out as each finished.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassSummary {
    /// Apps reported.
    pub apps: usize,
    /// Apps that failed.
    pub failed: usize,
}

/// Splits a snapshot of `desired`'s apps into the reports of those it shows unchanged since a
/// full verification (with that verification's verdict), and the reconciles of the others.
pub fn split(
    desired: &DesiredState,
    live: LiveState,
    verdicts: &BTreeMap<AppKey, Verdict>,
) -> (Vec<AppReport>, Vec<Reconcile>) {
    let mut ready = Vec::new();
    let mut work = Vec::new();
    let mut observed = live.apps;
    for (key, spec) in &desired.apps {
        if live.unchanged.contains(key) {
            let (state, error) = verdicts
                .get(key)
                .map_or((AppState::InSync, None), |v| (v.state, v.error.clone()));
            let mut report = AppReport::new(key.clone(), state);
            report.error = error;
            report.verified = Verification::Unchanged;
            ready.push(report);
            continue;
        }
        work.push(Reconcile {
            spec: spec.clone(),
            start: Start::Observed(
                observed
                    .remove(key)
                    .unwrap_or_else(|| Observation::Unreadable("not observed".to_owned())),
            ),
            fingerprint: live.fingerprints.get(key).copied(),
            spread: false,
        });
    }
    (ready, work)
}

/// Reconciles `items` as one pipelined pass, handing each app's report to `done` the moment
/// that app is finished (see the module docs). `verdicts` lets apps unchanged since a full
/// verification skip their revision reads.
pub async fn reconcile_apps(
    client: &ArmClient,
    items: Vec<Item>,
    subscriptions: &std::collections::BTreeSet<String>,
    verdicts: &BTreeMap<AppKey, Verdict>,
    options: &ApplyOptions,
    budget: &AtomicUsize,
    mut done: impl FnMut(AppReport),
) -> PassSummary {
    let mut groups: BTreeMap<(String, String), DesiredState> = BTreeMap::new();
    let mut resumed: BTreeMap<(String, String), Vec<(AppSpec, Wait)>> = BTreeMap::new();
    let mut spread = std::collections::BTreeSet::new();
    for item in items {
        let item = match item {
            Item::Spread(spec) => {
                spread.insert(spec.key.clone());
                Item::Observe(spec)
            }
            other => other,
        };
        match item {
            Item::Spread(_) => {}
            Item::Observe(spec) => {
                let key = spec.key.clone();
                groups
                    .entry((key.subscription.clone(), key.resource_group.clone()))
                    .or_insert_with(|| DesiredState {
                        subscriptions: subscriptions.clone(),
                        ..DesiredState::default()
                    })
                    .apps
                    .insert(key, spec);
            }
            Item::Resume(spec, wait) => resumed
                .entry((
                    spec.key.subscription.clone(),
                    spec.key.resource_group.clone(),
                ))
                .or_default()
                .push((spec, wait)),
        }
    }
    let fingerprints: BTreeMap<AppKey, u64> = verdicts
        .iter()
        .map(|(k, v)| (k.clone(), v.fingerprint))
        .collect();
    let concurrency = options.concurrency.max(1);
    let (queue, queued) = tokio::sync::mpsc::channel::<Reconcile>(concurrency);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<AppReport>();
    let (fingerprints, spread) = (&fingerprints, &spread);
    // Built first and boxed: a closure inside `map` trips rustc's higher-ranked lifetime
    // inference once the whole pass is spawned on a runtime. Each holds a sender: the queue
    // ends when every group is read and queued.
    let mut observers: Vec<BoxFuture<'_, ()>> = groups
        .into_values()
        .map(|group| -> BoxFuture<'_, ()> {
            let queue = queue.clone();
            let ready_tx = ready_tx.clone();
            Box::pin(async move {
                let live =
                    live::lists_since(client, &group, concurrency, fingerprints, spread).await;
                let (ready, mut work) = split(&group, live, verdicts);
                for w in &mut work {
                    w.spread = spread.contains(&w.spec.key);
                }
                for r in ready {
                    let _ = ready_tx.send(r);
                }
                for w in work {
                    if queue.send(w).await.is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    // Resumed apps go into the queue ahead of the groups; where several of a group wait,
    // one list of the group looks at all their waits (`apply::bulk`).
    observers.insert(
        0,
        Box::pin({
            let queue = queue.clone();
            async move {
                for ((sub, rg), waits) in resumed {
                    for w in resume_group(client, &sub, &rg, waits).await {
                        if queue.send(w).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }),
    );
    drop(queue);
    drop(ready_tx);
    let observe = futures_util::stream::iter(observers)
        .buffer_unordered(3)
        .for_each(|()| std::future::ready(()));
    let work =
        futures_util::stream::unfold(
            queued,
            |mut q| async move { q.recv().await.map(|w| (w, q)) },
        )
        .map(|w| -> BoxFuture<'_, AppReport> {
            Box::pin(async move {
                // Held while the app is reconciled (never while it waits: that is a requeue).
                let _slot = match &options.slots {
                    Some(slots) => slots.acquire().await.ok(),
                    None => None,
                };
                apply::reconcile(client, w, options, budget, Clock::new()).await
            })
        })
        .buffer_unordered(concurrency);
    let mut summary = PassSummary::default();
    let mut count = |r: &AppReport| {
        summary.apps += 1;
        summary.failed += usize::from(r.state == AppState::Failing);
    };
    tokio::pin!(observe);
    tokio::pin!(work);
    let (mut observing, mut working, mut readying) = (true, true, true);
    while observing || working || readying {
        tokio::select! {
            () = &mut observe, if observing => observing = false,
            r = work.next(), if working => match r {
                Some(r) => { count(&r); done(r); }
                None => working = false,
            },
            r = ready_rx.recv(), if readying => match r {
                Some(r) => { count(&r); done(r); }
                None => readying = false,
            },
        }
    }
    summary
}

/// The reconciles that resume `waits`, all of resource group `rg`. Two or more share one list
/// of the group, which answers each wait where it can ([`Start::Listed`]); one alone, an app
/// the list does not show, or a list that failed, resumes with its own reads.
pub async fn resume_group(
    client: &ArmClient,
    sub: &str,
    rg: &str,
    waits: Vec<(AppSpec, Wait)>,
) -> Vec<Reconcile> {
    let mut listed: BTreeMap<String, crate::arm::ContainerApp> = BTreeMap::new();
    if waits.len() >= BULK_WAITS {
        match client.list_apps(sub, Some(rg)).await {
            Ok(apps) => {
                listed = apps
                    .into_iter()
                    .map(|a| (a.name.to_ascii_lowercase(), a))
                    .collect();
            }
            Err(e) => {
                tracing::warn!(resource_group = rg, error = %e, "cannot list the group for its waits; each app looks at its own")
            }
        }
    }
    waits
        .into_iter()
        .map(|(spec, wait)| {
            let start = match listed.remove(&spec.key.name) {
                Some(app) => Start::Listed(wait, Box::new(app)),
                None => Start::Resume(wait),
            };
            Reconcile {
                spec,
                start,
                fingerprint: None,
                spread: false,
            }
        })
        .collect()
}

/// Waits of one resource group resumed together that are looked at through one list of the
/// group rather than each on its own: one page of a list holds many apps, so two waits already
/// cost no more than their own reads (a group larger than a page costs a read per page).
pub const BULK_WAITS: usize = 2;

/// Reconciles every app of `desired` from the snapshot `live` until each is settled: apps that
/// wait on Azure are looked at again when due, up to `--revision-timeout` each. The reports,
/// one per app (the last of each), sorted by app.
pub async fn converge(
    client: &ArmClient,
    desired: &DesiredState,
    live: LiveState,
    options: &ApplyOptions,
) -> Vec<AppReport> {
    let budget = apply::budget(options);
    let slots = tokio::sync::Semaphore::new(options.concurrency.max(1));
    let (budget, slots) = (&*budget, &slots);
    // One reconcile of one app, once it is due, in one of the `--concurrency` slots.
    let task = |work: Reconcile, at: Instant| -> BoxFuture<'_, AppReport> {
        Box::pin(async move {
            tokio::time::sleep_until(at).await;
            let _slot = slots.acquire().await;
            apply::reconcile(client, work, options, budget, Clock::new()).await
        })
    };
    let mut last: BTreeMap<AppKey, AppReport> = BTreeMap::new();
    let mut first: BTreeMap<AppKey, Instant> = BTreeMap::new();
    let (ready, work) = split(desired, live, &BTreeMap::new());
    for r in ready {
        last.insert(r.app.clone(), r);
    }
    let now = Instant::now();
    let mut running: futures_util::stream::FuturesUnordered<_> =
        work.into_iter().map(|w| task(w, now)).collect();
    while let Some(mut r) = running.next().await {
        if let Some(before) = last.remove(&r.app) {
            // Keep every action the app took in this command, across its waits.
            let mut actions = before.actions;
            actions.append(&mut r.actions);
            r.actions = actions;
        }
        if r.requeue
            .as_ref()
            .is_some_and(|q| matches!(q.wait.on, apply::Awaited::Rollout))
        {
            // A rollout holds a step for minutes: `apply` reports where it stands and leaves
            // the walk to `run` (or to `apply` again), whose state is in the app's tag.
            r.requeue = None;
        }
        if let (Some(q), Some(spec)) = (r.requeue.clone(), desired.apps.get(&r.app)) {
            let now = Instant::now();
            let since = *first.entry(r.app.clone()).or_insert(now);
            // Each wait is bounded by --revision-timeout; an app that keeps finding new work
            // (someone else writing to it as fast as it converges) is bounded here.
            if now.duration_since(since) > options.revision_timeout * 3 {
                r.state = AppState::Failing;
                r.requeue = None;
                r.error = Some(apply::Failure::Unsettled(options.revision_timeout * 3));
            } else {
                let work = Reconcile {
                    spec: spec.clone(),
                    start: Start::Resume(q.wait),
                    fingerprint: None,
                    spread: false,
                };
                running.push(task(work, now + q.after));
            }
        }
        last.insert(r.app.clone(), r);
    }
    last.into_values().collect()
}

/// Registry retention after the apps: what it plans and, when asked to act, what deleting did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionOutcome {
    /// What was planned (every deletion and every hold-back, with why).
    pub plan: RetentionPlan,
    /// What carrying it out did (`None`: only planned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<RetentionReport>,
}

impl RetentionOutcome {
    /// Problems: planning errors, and deletions that failed.
    pub fn errors(&self) -> usize {
        match &self.done {
            Some(done) => done.errors.len(),
            None => self.plan.errors.len(),
        }
    }
}

/// Registry retention for `desired`: planned from a complete read of what every app runs
/// (reusing `cache`), and carried out when `act`.
pub async fn retention(
    connection: &Connection,
    desired: &DesiredState,
    now: Millis,
    cap: usize,
    concurrency: usize,
    cache: &RevisionImages,
    act: bool,
) -> RetentionOutcome {
    let plan = crate::retention::plan_with(
        &connection.client,
        &connection.acr,
        desired,
        now,
        cap,
        concurrency,
        cache,
    )
    .await;
    let done = if act {
        Some(crate::retention::apply(&connection.acr, &plan).await)
    } else {
        None
    };
    RetentionOutcome { plan, done }
}

/// What `apply` did: every app's report, then retention.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    /// One per app, sorted.
    pub apps: Vec<AppReport>,
    /// Registry retention (absent without `RegistryRetention` documents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registries: Option<RetentionOutcome>,
    /// How long it took.
    pub seconds: f64,
}

impl ApplyReport {
    /// Apps that did not end in sync (or suspended), plus retention failures.
    pub fn failed(&self) -> usize {
        self.apps.iter().filter(|r| !r.is_ok()).count()
            + self.registries.as_ref().map_or(0, RetentionOutcome::errors)
    }
}

/// `apply`: observe, reconcile every app until it is settled, then registry retention.
pub async fn apply_pass(
    connection: &Connection,
    desired: &DesiredState,
    options: &ApplyOptions,
    tag_deletion_cap: usize,
) -> ApplyReport {
    let started = std::time::Instant::now();
    let live = live::lists_since(
        &connection.client,
        desired,
        options.concurrency,
        &BTreeMap::new(),
        &std::collections::BTreeSet::new(),
    )
    .await;
    let apps = converge(&connection.client, desired, live, options).await;
    let registries = if desired.registries.is_empty() {
        None
    } else {
        Some(
            retention(
                connection,
                desired,
                Clock::new().now(),
                tag_deletion_cap,
                options.concurrency,
                &RevisionImages::default(),
                true,
            )
            .await,
        )
    };
    ApplyReport {
        apps,
        registries,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// One app of a plan.
#[derive(Debug)]
pub struct PlannedApp<'a> {
    /// Its desired state.
    pub spec: &'a AppSpec,
    /// What was read of it.
    pub observed: Observation,
    /// Its plan, when it was read.
    pub plan: Option<AppPlan>,
    /// Where it stands.
    pub state: AppState,
    /// Why, when it is not simply in sync or drifted.
    pub reason: Option<String>,
}

/// What `plan` would have `apply` do.
#[derive(Debug)]
pub struct PassPlan<'a> {
    /// Every app, in key order.
    pub apps: Vec<PlannedApp<'a>>,
    /// Registry retention (absent when not asked for, or no `RegistryRetention` documents).
    pub registries: Option<RetentionPlan>,
}

/// `plan` and `status`: observe every app and plan it; then plan registry retention when
/// `tag_deletion_cap` is given. Writes nothing.
pub async fn plan_pass<'a>(
    connection: &Connection,
    desired: &'a DesiredState,
    concurrency: usize,
    tag_deletion_cap: Option<usize>,
) -> PassPlan<'a> {
    let live = live::snapshot(&connection.client, desired, concurrency).await;
    let now = Clock::new().now();
    let mut observed = live.apps;
    let apps = desired
        .apps
        .iter()
        .map(|(key, spec)| {
            let observed = observed
                .remove(key)
                .unwrap_or_else(|| Observation::Unreadable("not observed".to_owned()));
            let (plan, state, reason) = match &observed {
                Observation::Found { app, revisions } => {
                    let p = plan::plan_app(
                        spec,
                        plan::LiveApp {
                            app,
                            revisions: revisions.as_deref(),
                        },
                        now,
                    );
                    let reason = match &p.outcome {
                        plan::Outcome::Busy => Some(
                            "another operation is in progress on the app; plan again once it ends"
                                .to_owned(),
                        ),
                        plan::Outcome::Blocked { reason } => Some(reason.to_string()),
                        plan::Outcome::RolledBack { reason } => Some(format!(
                            "the last rollout rolled back ({reason}); traffic is on the stable revision until the spec changes or `aca-reconciler rollout retry` runs it again"
                        )),
                        _ => None,
                    };
                    let state = p.outcome.state();
                    (Some(p), state, reason)
                }
                Observation::Missing => (
                    None,
                    AppState::Missing,
                    Some("the app does not exist in Azure; aca-reconciler never creates apps: check its name, resourceGroup and subscription".to_owned()),
                ),
                Observation::Unreadable(e) => (None, AppState::Failing, Some(e.clone())),
            };
            PlannedApp {
                spec,
                observed,
                plan,
                state,
                reason,
            }
        })
        .collect();
    let registries = match tag_deletion_cap {
        Some(cap) if !desired.registries.is_empty() => Some(
            retention(
                connection,
                desired,
                now,
                cap,
                concurrency,
                &RevisionImages::default(),
                false,
            )
            .await
            .plan,
        ),
        _ => None,
    };
    PassPlan { apps, registries }
}

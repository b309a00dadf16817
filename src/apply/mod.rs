//! The executor: reconciles one app, and says where it stands.
//!
//! It repeats: plan from what Azure says now, carry out the first step of the plan, read the
//! app again. So there is never more than one write in flight per app, every decision is taken
//! on a fresh read (Container Apps has no ETags, N§6), and a multi-step change (activate, move
//! traffic, deactivate) converges in one reconcile without trusting a model of Azure.
//!
//! It never sleeps waiting on Azure. When the next step is to wait (for the operation a write
//! started, for a new revision to run, for someone else's operation on the app), the report
//! carries a [`Requeue`]: what is awaited and when to look again, like kube-runtime's
//! `Action::requeue`. The app frees its slot, and whoever schedules (the controller's
//! [`crate::controller::schedule::Schedule`], or `apply`'s loop in [`crate::pass`]) brings it
//! back with [`Start::Resume`], which looks at just that one thing first (one read) before
//! reading the app again.
//!
//! A revision that fails or never becomes ready stops that app's plan with traffic where it
//! was. `--max-actions` caps the writes of a pass; what it holds back waits for the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::arm::{
    ArmClient, ContainerApp, Error, Landed, Operation, Progress, Revision, RevisionAction, Written,
};
use crate::live::{Observation, observe_app, read_revisions};

pub mod bulk;
use crate::plan::{self, Action, Outcome, render};
use crate::spec::{AppKey, AppSpec};
use crate::state::AppState;
use crate::time::Clock;

/// Why an app did not come to rest in sync: the executor's error, above the Azure layer's.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// Azure refused, failed or timed out (retryable or not, as [`Error::is_retryable`] says;
    /// the schedule retries with backoff either way, since Azure's state may change).
    #[error(transparent)]
    Azure(Arc<Error>),
    /// The spec cannot be reached as written; nothing was done. Not retried: it waits for the
    /// spec or the live app to change.
    #[error(transparent)]
    Blocked(#[from] plan::Blocked),
    /// The app does not exist in Azure.
    #[error(
        "the app does not exist in Azure (aca-reconciler never creates apps): check its name, resourceGroup and subscription"
    )]
    Missing,
    /// The app could not be read (its group's list failed).
    #[error("cannot read the app: {0}")]
    Unreadable(String),
    /// The `--max-actions` budget of the pass ran out before this app's next write.
    #[error("the --max-actions budget of this pass is spent; the rest waits for the next pass")]
    Deferred,
    /// The plan kept changing under the executor (someone else writes to the app).
    #[error(
        "did not converge within {0} steps; the plan keeps changing (is someone else writing to this app?)"
    )]
    Endless(usize),
    /// `apply` looked again and again, and the app never came to rest.
    #[error("still not settled after {0:?}; is someone else writing to this app?")]
    Unsettled(Duration),
    /// The last rollout rolled back (its reason in numbers). Not retried: the same revision is
    /// not tried again until the spec changes or a person runs `rollout retry`.
    #[error(
        "the rollout rolled back: {0}; traffic is on the stable revision. Fix the image and change the spec, or run `aca-reconciler rollout retry APP`"
    )]
    RolledBack(String),
    /// The pass that held the app ended without reporting it (a defect).
    #[error("internal error: the pass working on this app ended without finishing it; retrying")]
    Abandoned,
}

impl Failure {
    /// Whether trying again, unchanged, may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Failure::Azure(e) => e.is_retryable(),
            Failure::Blocked(_) | Failure::Missing | Failure::RolledBack(_) => false,
            Failure::Unreadable(_)
            | Failure::Deferred
            | Failure::Endless(_)
            | Failure::Unsettled(_)
            | Failure::Abandoned => true,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Azure(Arc::new(e))
    }
}

/// Serializes a value by its `Display`.
fn display<T: std::fmt::Display, S: serde::Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => serializer.collect_str(v),
        None => serializer.serialize_none(),
    }
}

fn landed_yes(landed: &Landed) -> bool {
    *landed == Landed::Yes
}

/// How apps are reconciled.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Apps worked on at once.
    pub concurrency: usize,
    /// Writes allowed in this pass (`None`: no cap).
    pub max_actions: Option<usize>,
    /// How long a write's operation, a new or re-activated revision, or someone else's
    /// operation on the app may take before the app is reported failing.
    pub revision_timeout: Duration,
    /// How long to wait between looks when Azure gives no `Retry-After`.
    pub poll_interval: Duration,
    /// Plan-act-read rounds per reconcile before giving up (a guard against a plan that never
    /// ends).
    pub max_steps: usize,
    /// Writes left, shared by the reconciles of one pass (`None`: from `max_actions`).
    pub budget: Option<Arc<AtomicUsize>>,
    /// Slots shared by every pass of a process (`run` starts a pass while others still run):
    /// `concurrency` reconciles at once in all. `None`: each pass has its own `concurrency`.
    pub slots: Option<Arc<tokio::sync::Semaphore>>,
    /// What rollouts' analysis checks need besides the ARM client (`None`: a check is an
    /// error, and the step holds).
    pub analysis: Option<AnalysisSetup>,
    /// How far behind Azure Monitor's data is: a check's window ends this long before now.
    pub metrics_lag: Duration,
    /// Registry retention's cache of the images of each app's revisions, fed by the revision
    /// reads of reconciles (`run`: retention then reads again only what changed).
    pub images: Option<Arc<crate::retention::RevisionImages>>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_actions: None,
            revision_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
            max_steps: 64,
            budget: None,
            slots: None,
            analysis: None,
            metrics_lag: Duration::from_secs(180),
            images: None,
        }
    }
}

/// What a rollout's analysis checks need besides the ARM client: the probes' HTTP client and
/// where apps' URLs are reached (`--ingress-endpoint`).
#[derive(Debug, Clone)]
pub struct AnalysisSetup {
    /// The probes' client ([`crate::analysis::probe_client`]).
    pub http: reqwest::Client,
    /// Where apps', revisions' and labels' hosts are reached.
    pub ingress: crate::ingress::IngressEndpoints,
}

/// One action carried out.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// What was done, for people.
    pub description: String,
    /// The action.
    pub action: Action,
    /// Its error, if it failed.
    pub error: Option<String>,
    /// Azure's `x-ms-request-id` of the write, to quote to Azure support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Whether the write landed: `unknown` when its answer was lost, `no` when another
    /// operation held the app; either way the app was read again and the plan made anew.
    #[serde(skip_serializing_if = "landed_yes")]
    pub landed: Landed,
    /// How long it took.
    pub ms: u64,
}

/// What an app waits for between two reconciles.
#[derive(Debug, Clone)]
pub enum Awaited {
    /// The long-running operation of a write of ours; then, if named, the revision it creates.
    Operation {
        /// Where to look.
        operation: Operation,
        /// The revision to wait for once it ends.
        then: Option<String>,
    },
    /// A revision to run.
    Revision(String),
    /// Someone else's operation on the app (`provisioningState` is `InProgress`).
    Busy,
    /// A rollout holds a step until its next check or the end of its pause: then read the
    /// app and plan, with the last check taken ([`Wait::check`]).
    Rollout,
}

/// A wait carried from one reconcile to the next.
#[derive(Debug, Clone)]
pub struct Wait {
    /// What is awaited.
    pub on: Awaited,
    /// Since when (the wait fails once it outlasts [`ApplyOptions::revision_timeout`]).
    pub since: Instant,
    /// Whether this controller's own change is what it waits on (reported `applying`, not
    /// `waiting`).
    pub ours: bool,
    /// The app's last rollout check, carried to the next plan through every wait (its writes'
    /// included), so that checks keep their interval.
    pub check: Option<Box<crate::rollout::Check>>,
}

/// "Look again at": what the app waits for, and when to look.
#[derive(Debug, Clone)]
pub struct Requeue {
    /// Look again after this long.
    pub after: Duration,
    /// What to look at first.
    pub wait: Wait,
}

/// How to begin reconciling an app.
#[derive(Debug)]
pub enum Start {
    /// From what a pass read (a group list, and its revisions where needed).
    Observed(Observation),
    /// From a wait: look at what is awaited first.
    Resume(Wait),
    /// From a wait, with the app as its group's list showed it after the wait began: the
    /// list answers the wait where it can ([`crate::apply::bulk::judge`]), else the wait is
    /// resumed as [`Start::Resume`] would.
    Listed(Wait, Box<ContainerApp>),
}

/// One app to reconcile.
#[derive(Debug)]
pub struct Reconcile {
    /// Its desired state.
    pub spec: AppSpec,
    /// How to begin.
    pub start: Start,
    /// Its [`crate::live::fingerprint`], if its revisions were read.
    pub fingerprint: Option<u64>,
    /// Its first full verification may wait: if its group's list shows it in sync
    /// ([`plan::in_sync_as_listed`]), it is reported in sync without reading its revisions,
    /// and `run`'s schedule verifies it in full within `--reverify-after` resyncs
    /// ([`Verification::Listed`]). So a controller that starts on a fleet in sync spreads the
    /// first verifications over the resyncs instead of reading every app at the first.
    pub spread: bool,
}

/// Where one app stands after a reconcile.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppReport {
    /// Which app.
    pub app: AppKey,
    /// Where it stands.
    pub state: AppState,
    /// Why, when it is failing, blocked, missing or deferred: what went wrong and what to do.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display")]
    pub error: Option<Failure>,
    /// The actions carried out, in order.
    pub actions: Vec<ActionRecord>,
    /// When to look again, and at what (`None`: at the next resync).
    #[serde(skip)]
    pub requeue: Option<Requeue>,
    /// This replica lost the lease: the reconcile stopped before its next write, and the app
    /// waits for whoever leads.
    #[serde(skip)]
    pub standby: bool,
    /// How this reconcile verified the app (for `run`'s skipping of revision reads).
    #[serde(skip)]
    pub verified: Verification,
    /// Where the app's rollout stands, if its spec has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::decide::RolloutView>,
    /// The analysis checks this reconcile took.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::rollout::Check>,
    /// What this reconcile last read of the app (for `/status` and the dashboard; `None`: not
    /// read).
    #[serde(skip)]
    pub live: Option<Box<crate::controller::status::LiveView>>,
}

impl AppReport {
    /// A report with no actions.
    pub fn new(app: AppKey, state: AppState) -> Self {
        Self {
            app,
            state,
            error: None,
            actions: Vec::new(),
            requeue: None,
            standby: false,
            verified: Verification::No,
            rollout: None,
            checks: Vec::new(),
            live: None,
        }
    }

    /// The same, with a reason.
    pub fn because(mut self, error: impl Into<Failure>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// Whether this reconcile changed the app and left it in sync.
    pub fn converged(&self) -> bool {
        self.state == AppState::InSync && !self.actions.is_empty()
    }

    /// Whether it was in sync and nothing was done.
    pub fn untouched(&self) -> bool {
        self.state == AppState::InSync && self.actions.is_empty()
    }

    /// Whether it ended where it should: in sync (changed or not), or suspended on purpose.
    pub fn is_ok(&self) -> bool {
        self.state.is_settled()
    }
}

/// How a reconcile verified an app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verification {
    /// Not verified (changed, failed, waiting, or no revisions needed).
    #[default]
    No,
    /// Read in full and found in this state (in sync, or blocked), with this
    /// [`crate::live::fingerprint`]: while the fingerprint holds, the state holds.
    Full(u64),
    /// Unchanged since its last full verification; its revisions were not read.
    Unchanged,
    /// Not verified yet, and in sync as far as its group's list shows, with this
    /// [`crate::live::fingerprint`]; its revisions were not read ([`Reconcile::spread`]).
    Listed(u64),
}

/// The `--max-actions` budget of a pass: the one in `options`, or a new one.
pub fn budget(options: &ApplyOptions) -> Arc<AtomicUsize> {
    options
        .budget
        .clone()
        .unwrap_or_else(|| Arc::new(AtomicUsize::new(options.max_actions.unwrap_or(usize::MAX))))
}

fn take_budget_n(budget: &AtomicUsize, n: usize) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(n)
        })
        .is_ok()
}

/// The actions carried out before the app is read again: the first one, with these exceptions.
/// - A template change goes with the wait for its revision (a revision-mode change rides in
///   the template's PATCH already, [`plan::Change::RevisionMode`]).
/// - A set of restarts goes with the tag that records it after: re-planning between them would
///   restart the same revisions again, since the generation is recorded only after the last
///   restart.
/// - Consecutive deactivations go together: each is of a revision with no traffic that the spec
///   does not keep, so none changes whether the others are right, and re-reading between them
///   would cost two reads each for the same plan.
fn step_of(actions: Vec<Action>) -> Vec<Action> {
    let run_of = |f: fn(&Action) -> bool| actions.iter().take_while(|a| f(a)).count();
    let restarts = run_of(|a| {
        matches!(
            a,
            Action::MarkRestartPending { .. }
                | Action::Restart { .. }
                | Action::RecordRestartGeneration { .. }
        )
    });
    let deactivations = run_of(|a| matches!(a, Action::Deactivate { .. }));
    let template_at = |i: usize| match (actions.get(i), actions.get(i + 1)) {
        (
            Some(Action::UpdateTemplate { revision, .. }),
            Some(Action::WaitUntilRunning { revision: waited }),
        ) if revision == waited => 2,
        (Some(Action::UpdateTemplate { .. }), _) => 1,
        _ => 0,
    };
    let first_with_wait = template_at(0).max(1);
    let n = if restarts > 0 {
        restarts
    } else if deactivations > 0 {
        deactivations
    } else {
        first_with_wait
    };
    actions.into_iter().take(n).collect()
}

/// Reconciles one app as far as it can go now, and says where it stands.
pub async fn reconcile(
    client: &ArmClient,
    work: Reconcile,
    options: &ApplyOptions,
    budget: &AtomicUsize,
    clock: Clock,
) -> AppReport {
    let span = tracing::info_span!("app", app = %work.spec.key);
    if work.spread
        && let (
            Start::Observed(Observation::Found {
                app,
                revisions: None,
            }),
            Some(fp),
        ) = (&work.start, work.fingerprint)
        && plan::needs_revisions(&work.spec)
        && plan::in_sync_as_listed(&work.spec, app)
    {
        let mut report = AppReport::new(work.spec.key.clone(), AppState::InSync);
        report.verified = Verification::Listed(fp);
        return report;
    }
    let first_look = matches!(work.start, Start::Observed(_));
    let mut report = Run::new(client, &work.spec, options, budget, clock)
        .go(work.start)
        .instrument(span)
        .await;
    // Read in full at the start and found in sync, or blocked: while the fingerprint holds,
    // so does the verdict.
    if first_look
        && report.actions.is_empty()
        && matches!(report.state, AppState::InSync | AppState::Blocked)
        && let Some(fp) = work.fingerprint
    {
        report.verified = Verification::Full(fp);
    }
    report
}

/// What one step of the executor ends in.
enum Next {
    /// Read the app again and plan anew.
    Reread,
    /// Plan anew from this reading (an analysis check was taken: it changes nothing in
    /// Azure).
    Replan(Box<Observation>),
    /// Only revisions were written to (activated, deactivated, restarted), which leaves the
    /// app resource as it was: read the revisions again, keep this app, and plan anew.
    RereadRevisions(Box<ContainerApp>),
    /// Look again later.
    Requeue(Requeue),
    /// Stop here with this report.
    Stop(AppState, Option<Failure>),
}

/// One reconcile of one app.
struct Run<'a> {
    client: &'a ArmClient,
    spec: &'a AppSpec,
    options: &'a ApplyOptions,
    budget: &'a AtomicUsize,
    clock: Clock,
    done: Vec<ActionRecord>,
    standby: bool,
    /// The last analysis check (carried by a rollout's wait, or taken now).
    check: Option<crate::rollout::Check>,
    /// The checks taken in this reconcile.
    checks: Vec<crate::rollout::Check>,
    /// The rollout as last planned.
    rollout: Option<crate::rollout::decide::RolloutView>,
    /// What was last read of the app.
    live: Option<Box<crate::controller::status::LiveView>>,
}

impl<'a> Run<'a> {
    fn new(
        client: &'a ArmClient,
        spec: &'a AppSpec,
        options: &'a ApplyOptions,
        budget: &'a AtomicUsize,
        clock: Clock,
    ) -> Self {
        Self {
            client,
            spec,
            options,
            budget,
            clock,
            done: Vec::new(),
            standby: false,
            check: None,
            checks: Vec::new(),
            rollout: None,
            live: None,
        }
    }

    fn key(&self) -> &AppKey {
        &self.spec.key
    }

    fn report(
        self,
        state: AppState,
        error: Option<Failure>,
        requeue: Option<Requeue>,
    ) -> AppReport {
        AppReport {
            app: self.spec.key.clone(),
            state,
            error,
            actions: self.done,
            requeue,
            standby: self.standby,
            verified: Verification::No,
            rollout: self.rollout,
            checks: self.checks,
            live: self.live,
        }
    }

    fn requeue(&self, on: Awaited, since: Instant, ours: bool, after: Duration) -> Next {
        Next::Requeue(Requeue {
            after,
            wait: Wait {
                on,
                since,
                ours,
                check: self.check.clone().map(Box::new),
            },
        })
    }

    /// Reads the revisions of `app` (read just before), and tells retention's cache.
    async fn read_revisions(&self, app: &ContainerApp) -> Result<Vec<Revision>, Error> {
        let revisions = read_revisions(self.client, self.key(), app).await?;
        if let Some(images) = &self.options.images {
            images.learn(app, &revisions);
        }
        Ok(revisions)
    }

    /// Reads the app again; its revisions are read when the plan needs them ([`Run::step`]).
    async fn observe(&mut self) -> Result<Observation, Error> {
        let o = observe_app(self.client, self.key(), false).await?;
        self.seen(&o);
        Ok(o)
    }

    /// Keeps what the app looked like (for `/status` and the dashboard).
    fn seen(&mut self, o: &Observation) {
        if let Some(v) = crate::controller::status::LiveView::of(o) {
            self.live = Some(Box::new(v));
        }
    }

    async fn go(mut self, start: Start) -> AppReport {
        let resumed = match start {
            Start::Observed(o) => Ok(Some(o)),
            Start::Resume(wait) => self.resume_wait(wait).await,
            Start::Listed(wait, app) => self.resume_listed(wait, app).await,
        };
        let mut observed = match resumed {
            Ok(Some(o)) => {
                self.seen(&o);
                o
            }
            Ok(None) => match self.observe().await {
                Ok(o) => o,
                Err(e) => return self.failed(e),
            },
            Err(Ok(next)) => return self.finish(next),
            Err(Err(e)) => return self.failed(e),
        };
        for _ in 0..self.options.max_steps {
            let next = match self.step(&observed).await {
                Ok(next) => next,
                Err(e) => return self.failed(e),
            };
            observed = match next {
                Next::Reread => match self.observe().await {
                    Ok(o) => o,
                    Err(e) => return self.failed(e),
                },
                // Only revisions were written to: the app resource is as it was read.
                Next::RereadRevisions(app) => Observation::Found {
                    app,
                    revisions: None,
                },
                Next::Replan(o) => *o,
                next => return self.finish(next),
            };
        }
        let steps = self.options.max_steps;
        self.report(AppState::Failing, Some(Failure::Endless(steps)), None)
    }

    fn finish(self, next: Next) -> AppReport {
        match next {
            Next::Stop(state, error) => self.report(state, error, None),
            Next::Requeue(r) => {
                let state = if matches!(r.wait.on, Awaited::Rollout) {
                    AppState::Progressing
                } else if r.wait.ours || !self.done.is_empty() {
                    AppState::Applying
                } else {
                    AppState::Waiting
                };
                self.report(state, None, Some(r))
            }
            Next::Reread | Next::RereadRevisions(_) | Next::Replan(_) => {
                self.report(AppState::Failing, None, None)
            }
        }
    }

    /// [`Run::resume`], in the shape of [`Run::resume_listed`].
    async fn resume_wait(
        &mut self,
        wait: Wait,
    ) -> Result<Option<Observation>, Result<Next, Error>> {
        match self.resume(wait).await {
            Ok(None) => Ok(None),
            Ok(Some(next)) => Err(Ok(next)),
            Err(e) => Err(Err(e)),
        }
    }

    /// Resumes `wait` from what its group's list showed of the app ([`bulk::judge`]): the
    /// observation to plan from once the wait is over, or how to go on (`Err(Ok(next))`).
    /// Where the list cannot tell, the wait is resumed with the per-app reads.
    async fn resume_listed(
        &mut self,
        wait: Wait,
        app: Box<ContainerApp>,
    ) -> Result<Option<Observation>, Result<Next, Error>> {
        self.check = wait.check.clone().map(|c| *c);
        if !matches!(wait.on, Awaited::Rollout)
            && wait.since.elapsed() > self.options.revision_timeout
        {
            return Err(Err(timed_out(
                self.key(),
                &wait.on,
                self.options.revision_timeout,
            )));
        }
        match bulk::judge(&wait, &app, self.options.poll_interval) {
            bulk::Judgement::Waiting(on) => {
                let since = if matches!(
                    (&wait.on, &on),
                    (Awaited::Operation { .. }, Awaited::Revision(_))
                ) {
                    Instant::now()
                } else {
                    wait.since
                };
                let ours = wait.ours;
                Err(Ok(self.requeue(
                    on,
                    since,
                    ours,
                    self.options.poll_interval,
                )))
            }
            bulk::Judgement::Over => Ok(Some(Observation::Found {
                app,
                revisions: None,
            })),
            bulk::Judgement::Ready(revision) => {
                // The list says it is ready; whether it runs is in the revisions, which the
                // plan reads anyway: one read for both.
                let revisions = self.read_revisions(&app).await.map_err(Err)?;
                let since = if matches!(wait.on, Awaited::Operation { .. }) {
                    Instant::now()
                } else {
                    wait.since
                };
                match revisions.iter().find(|r| r.name == revision) {
                    Some(r) => match self.judge_revision(r, since, wait.ours) {
                        Ok(None) => Ok(Some(Observation::Found {
                            app,
                            revisions: Some(revisions),
                        })),
                        Ok(Some(next)) => Err(Ok(next)),
                        Err(e) => Err(Err(e)),
                    },
                    None => self.resume_wait(wait).await,
                }
            }
            bulk::Judgement::CannotTell => self.resume_wait(wait).await,
        }
    }

    fn failed(mut self, e: Error) -> AppReport {
        if matches!(e, Error::NotLeader(_)) {
            self.standby = true;
            return self.report(AppState::Pending, None, None);
        }
        self.report(AppState::Failing, Some(e.into()), None)
    }

    /// Looks once at what `wait` awaits: `None` when it is over (read the app and go on),
    /// else how to go on.
    async fn resume(&mut self, wait: Wait) -> Result<Option<Next>, Error> {
        self.check = wait.check.map(|c| *c);
        if let Awaited::Rollout = wait.on {
            // A step's time is the rollout's own (its pause, its progress deadline).
            return Ok(None);
        }
        if wait.since.elapsed() > self.options.revision_timeout {
            return Err(timed_out(
                self.key(),
                &wait.on,
                self.options.revision_timeout,
            ));
        }
        match wait.on {
            Awaited::Operation {
                mut operation,
                then,
            } => match self
                .client
                .poll_operation(self.key(), &mut operation)
                .await?
            {
                Progress::Running(after) => Ok(Some(self.requeue(
                    Awaited::Operation { operation, then },
                    wait.since,
                    true,
                    after,
                ))),
                Progress::Done => match then {
                    Some(revision) => self.check_revision(revision, Instant::now(), true).await,
                    None => Ok(None),
                },
            },
            Awaited::Revision(revision) => {
                self.check_revision(revision, wait.since, wait.ours).await
            }
            Awaited::Rollout => Ok(None),
            Awaited::Busy => {
                if self.client.get_app(self.key()).await?.is_busy() {
                    Ok(Some(self.requeue(
                        Awaited::Busy,
                        wait.since,
                        false,
                        self.options.poll_interval,
                    )))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// One look at a revision: running (go on), failed (an error naming it), or not yet (look
    /// again later).
    async fn check_revision(
        &self,
        revision: String,
        since: Instant,
        ours: bool,
    ) -> Result<Option<Next>, Error> {
        let r = self.client.get_revision(self.key(), &revision).await?;
        self.judge_revision(&r, since, ours)
    }

    /// Where a revision as read leaves its wait: running (go on), failed (an error naming
    /// it), or not yet (look again later).
    fn judge_revision(
        &self,
        r: &Revision,
        since: Instant,
        ours: bool,
    ) -> Result<Option<Next>, Error> {
        let revision = r.name.clone();
        if r.is_running() {
            return Ok(None);
        }
        if r.has_failed() {
            let why = r.properties.provisioning_error.clone().unwrap_or_else(|| {
                format!(
                    "runningState {}",
                    r.properties.running_state.as_deref().unwrap_or("Failed")
                )
            });
            return Err(Error::OperationFailed {
                resource: format!("{}/revisions/{revision}", self.key().resource_id()),
                status: "Failed".to_owned(),
                message: format!(
                    "the revision did not start: {why}; traffic stays where it was (check the image and the revision's logs: az containerapp logs show --revision {revision})"
                ),
            });
        }
        if since.elapsed() + self.options.poll_interval > self.options.revision_timeout {
            return Err(timed_out(
                self.key(),
                &Awaited::Revision(revision),
                self.options.revision_timeout,
            ));
        }
        Ok(Some(self.requeue(
            Awaited::Revision(revision),
            since,
            ours,
            self.options.poll_interval,
        )))
    }

    /// Plans from `observed` and carries out the first step of the plan.
    async fn step(&mut self, observed: &Observation) -> Result<Next, Error> {
        let (app, revisions) = match observed {
            Observation::Found { app, revisions } => (app, revisions),
            Observation::Missing => {
                return Ok(Next::Stop(AppState::Missing, Some(Failure::Missing)));
            }
            Observation::Unreadable(e) => {
                return Ok(Next::Stop(
                    AppState::Failing,
                    Some(Failure::Unreadable(e.clone())),
                ));
            }
        };
        let now = self.clock.now();
        let first = match revisions {
            None if plan::needs_revisions(self.spec) => plan::plan_first_step(self.spec, app, now),
            _ => None,
        };
        let planned = match first {
            // The first step needs no revisions: they are read after it, when they show what
            // it did.
            Some(first) => first,
            None => {
                let read = match revisions {
                    None if plan::needs_revisions(self.spec) => {
                        Some(self.read_revisions(app).await?)
                    }
                    _ => None,
                };
                if let Some(read) = &read {
                    self.live = Some(Box::new(crate::controller::status::LiveView::from_parts(
                        app,
                        Some(read),
                    )));
                }
                let revisions = read.as_deref().or(revisions.as_deref());
                let planned = plan::plan_app_with(
                    self.spec,
                    plan::LiveApp { app, revisions },
                    now,
                    &crate::rollout::decide::Input {
                        check: self.check.as_ref(),
                        metrics_lag_ms: u64::try_from(self.options.metrics_lag.as_millis())
                            .unwrap_or(u64::MAX),
                    },
                );
                if let Some(Action::Analyze {
                    canary,
                    stable,
                    step,
                    weight,
                    window,
                    probe_base,
                }) = planned.actions.first().cloned()
                    && !self.spec.suspend
                {
                    let target = crate::analysis::CheckTarget {
                        at: now,
                        step,
                        weight,
                        stable,
                        canary,
                        window,
                        probe_base,
                    };
                    let check = self.analyze(&target).await;
                    tracing::info!(
                        canary = %check.canary,
                        step = check.step.saturating_add(1),
                        verdict = check.verdict.as_str(),
                        reason = %check.reason,
                        "rollout check"
                    );
                    self.checks.push(check.clone());
                    self.check = Some(check);
                    self.rollout = planned.rollout;
                    // The same reading, with the revisions it needed: nothing changed in Azure.
                    return Ok(Next::Replan(Box::new(Observation::Found {
                        app: app.clone(),
                        revisions: revisions.map(<[_]>::to_vec),
                    })));
                }
                planned
            }
        };
        if planned.rollout.is_some() {
            self.rollout.clone_from(&planned.rollout);
        }
        let step = match planned.outcome {
            Outcome::Progressing { until } => {
                let after = Duration::from_millis(u64::try_from(until - now).unwrap_or(0));
                return Ok(self.requeue(Awaited::Rollout, Instant::now(), true, after));
            }
            Outcome::RolledBack { reason } => {
                return Ok(Next::Stop(
                    AppState::RolledBack,
                    Some(Failure::RolledBack(reason)),
                ));
            }
            Outcome::InSync => return Ok(Next::Stop(AppState::InSync, None)),
            Outcome::Suspended => return Ok(Next::Stop(AppState::Suspended, None)),
            Outcome::Blocked { reason } => {
                return Ok(Next::Stop(AppState::Blocked, Some(reason.into())));
            }
            Outcome::Busy => {
                // Another write (someone's) is in flight: look again once it may have ended.
                return Ok(self.requeue(
                    Awaited::Busy,
                    Instant::now(),
                    false,
                    self.options.poll_interval,
                ));
            }
            Outcome::Changes => step_of(planned.actions),
        };
        let writes = step.iter().filter(|a| a.is_write()).count();
        if writes > 0 && !take_budget_n(self.budget, writes) {
            return Ok(Next::Stop(AppState::Drifted, Some(Failure::Deferred)));
        }
        // Nothing after the pending-restart tag before its time: only what is created from
        // then on (replicas of the restarts, the revision of a template change) may show a
        // later time (plan::pending_restart).
        if let Some((_, since)) = plan::pending_restart(app) {
            let early = since - self.clock.now();
            if early > 0 {
                return Ok(self.requeue(
                    Awaited::Busy,
                    Instant::now(),
                    true,
                    Duration::from_millis(u64::try_from(early).unwrap_or(0)),
                ));
            }
        }
        let written_from = self.done.len();
        let mut step = step.into_iter().peekable();
        while let Some(action) = step.next() {
            if let Action::WaitUntilRunning { revision } = &action {
                let ours = !self.done.is_empty();
                match self
                    .check_revision(revision.clone(), Instant::now(), ours)
                    .await?
                {
                    None => continue,
                    Some(next) => return Ok(next),
                }
            }
            let then = match step.peek() {
                Some(Action::WaitUntilRunning { revision }) => Some(revision.clone()),
                _ => None,
            };
            let restart = matches!(action, Action::Restart { .. });
            match self.execute(action).await? {
                Executed::Done => {}
                Executed::NotLanded(landed) => {
                    // Read again, and plan anew, once any operation it may have started ended.
                    // A restart whose answer was lost is given time to show in its replicas
                    // before the plan can judge whether it happened.
                    let after = if restart && landed == Landed::Unknown {
                        self.options.poll_interval * 10
                    } else {
                        self.options.poll_interval
                    };
                    return Ok(self.requeue(Awaited::Busy, Instant::now(), true, after));
                }
                Executed::Started(operation) => {
                    let after = operation.first_look();
                    return Ok(self.requeue(
                        Awaited::Operation { operation, then },
                        Instant::now(),
                        true,
                        after,
                    ));
                }
            }
        }
        // A revision action changes that revision, not the app resource (its template,
        // configuration and tags; docs/azure-notes.md 4.3): the app as read is still current.
        let revisions_only = self.done[written_from..].iter().all(|a| {
            matches!(
                a.action,
                Action::Activate { .. } | Action::Deactivate { .. } | Action::Restart { .. }
            )
        });
        if revisions_only && self.done.len() > written_from {
            return Ok(Next::RereadRevisions(app.clone()));
        }
        Ok(Next::Reread)
    }

    /// Carries out one write, logs it and records it.
    async fn execute(&mut self, action: Action) -> Result<Executed, Error> {
        let description = render::describe(&action);
        let started = Instant::now();
        let result = self.send(&action).await;
        let ms = started.elapsed().as_millis() as u64;
        let (written, executed) = match &result {
            Ok((w, operation)) => {
                tracing::info!(
                    action = %description,
                    ms,
                    arm_request_id = w.request_id.as_deref().unwrap_or("-"),
                    arm_correlation_id = w.correlation_id.as_deref().unwrap_or("-"),
                    "done"
                );
                let executed = match operation {
                    // It may not have landed: the rest of the step was planned assuming it
                    // did, so decide again from what Azure shows.
                    _ if w.landed != Landed::Yes => Executed::NotLanded(w.landed),
                    Some(op) => Executed::Started(op.clone()),
                    None => Executed::Done,
                };
                (w.clone(), executed)
            }
            Err(e) => {
                tracing::error!(action = %description, error = %e, "failed");
                (Written::default(), Executed::Done)
            }
        };
        let mut action = action;
        action.drop_body();
        self.done.push(ActionRecord {
            description,
            action,
            error: result.as_ref().err().map(ToString::to_string),
            request_id: written.request_id,
            landed: written.landed,
            ms,
        });
        result.map(|_| executed)
    }

    /// Takes one analysis check of the app's rollout.
    async fn analyze(&self, target: &crate::analysis::CheckTarget) -> crate::rollout::Check {
        let spec = self.spec.rollout.as_ref().and_then(|r| r.analysis.as_ref());
        match (&self.options.analysis, spec) {
            (Some(setup), Some(spec)) => {
                crate::analysis::Analyzer::new(
                    self.client,
                    setup.http.clone(),
                    setup.ingress.clone(),
                )
                .check(self.key(), spec, target)
                .await
            }
            _ => crate::rollout::Check {
                at: target.at,
                canary: target.canary.clone(),
                step: target.step,
                window: target.window,
                stable: None,
                canary_counts: None,
                probes: Vec::new(),
                verdict: crate::rollout::Verdict::Error,
                reason: "no analysis is configured in this process (a defect)".to_owned(),
            },
        }
    }

    /// Sends one write: what Azure said, and the operation it started, if any.
    async fn send(&self, action: &Action) -> Result<(Written, Option<Operation>), Error> {
        let (client, key) = (self.client, self.key());
        match action {
            Action::SetRevisionMode { to, .. } => {
                client.start_patch(key, &plan::mode_body(to)).await
            }
            Action::UpdateTemplate { body, .. }
            | Action::SetTraffic { body, .. }
            | Action::MarkRestartPending { body, .. }
            | Action::RecordRestartGeneration { body, .. }
            | Action::Rollout { body, .. }
            | Action::ClearRestartPending { body, .. } => client.start_patch(key, body).await,
            Action::Activate { revision } => client
                .revision_action(key, revision, RevisionAction::Activate)
                .await
                .map(|w| (w, None)),
            Action::Deactivate { revision, .. } => client
                .revision_action(key, revision, RevisionAction::Deactivate)
                .await
                .map(|w| (w, None)),
            Action::Restart { revision, .. } => client
                .revision_action(key, revision, RevisionAction::Restart)
                .await
                .map(|w| (w, None)),
            Action::WaitUntilRunning { .. } | Action::Analyze { .. } => {
                Ok((Written::default(), None))
            }
        }
    }
}

/// What carrying out one write led to.
enum Executed {
    /// Azure did it.
    Done,
    /// Azure accepted it and works on it: look at this operation later.
    Started(Operation),
    /// It may not have landed: read again, once no operation runs, and re-plan.
    NotLanded(Landed),
}

fn timed_out(key: &AppKey, on: &Awaited, after: Duration) -> Error {
    let (resource, what) = match on {
        Awaited::Operation { operation, .. } => return operation.timed_out(key, after),
        Awaited::Revision(r) => (
            format!("{}/revisions/{r}", key.resource_id()),
            "the revision becoming ready (traffic stays where it was)".to_owned(),
        ),
        Awaited::Busy => (
            key.resource_id(),
            "another client's operation on the app (it stayed InProgress)".to_owned(),
        ),
        Awaited::Rollout => (
            key.resource_id(),
            "the rollout's step (its progressDeadline decides)".to_owned(),
        ),
    };
    Error::Timeout {
        resource,
        what,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(rev: &str) -> Action {
        Action::UpdateTemplate {
            changes: Vec::new(),
            revision: rev.to_owned(),
            body: json!({}),
        }
    }
    fn wait(rev: &str) -> Action {
        Action::WaitUntilRunning {
            revision: rev.to_owned(),
        }
    }
    fn deactivate(rev: &str) -> Action {
        Action::Deactivate {
            revision: rev.to_owned(),
            keep_active: 2,
        }
    }
    fn kinds(step: &[Action]) -> Vec<String> {
        step.iter()
            .map(|a| {
                serde_json::to_value(a).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn steps_group_only_what_needs_no_read_in_between() {
        let mode = Action::SetRevisionMode {
            from: "Single".into(),
            to: "Multiple".into(),
        };
        let traffic = Action::SetTraffic {
            from: Vec::new(),
            to: Vec::new(),
            body: json!({}),
        };
        // A template and its wait go together; what follows waits for a fresh read.
        assert_eq!(
            kinds(&step_of(vec![mode.clone(), traffic.clone()])),
            ["setRevisionMode"]
        );
        assert_eq!(
            kinds(&step_of(vec![
                template("a--1"),
                wait("a--1"),
                deactivate("a--0")
            ])),
            ["updateTemplate", "waitUntilRunning"]
        );
        // A wait for another revision is not the template's.
        assert_eq!(
            kinds(&step_of(vec![template("a--1"), wait("a--0")])),
            ["updateTemplate"]
        );
        // Deactivations go together, and nothing after them.
        assert_eq!(
            kinds(&step_of(vec![
                deactivate("a--0"),
                deactivate("a--1"),
                traffic.clone()
            ])),
            ["deactivate", "deactivate"]
        );
        assert_eq!(
            kinds(&step_of(vec![traffic, deactivate("a--0")])),
            ["setTraffic"]
        );
    }
}

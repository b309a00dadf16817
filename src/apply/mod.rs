//! The executor: carries out plans, one app at a time per app, apps in parallel.
//!
//! For each app it repeats: plan from what Azure says now, carry out the *first* action, read
//! the app again. So there is never more than one write in flight per app, every decision is
//! taken on a fresh read (Container Apps has no ETags, N§6), and a multi-step change (activate,
//! wait, move traffic, deactivate) converges in one pass without trusting a model of Azure.
//! A revision that fails or never becomes ready stops that app's plan with traffic where it
//! was. `--max-actions` caps the writes of a pass; what it holds back waits for the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::arm::{ArmClient, Error, RevisionAction, Written};
use crate::live::{LiveState, Observed, observe_app};
use crate::plan::{self, Action, Outcome, render};
use crate::spec::{AppKey, AppSpec, DesiredState};
use crate::time::Clock;

/// How a pass runs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Apps worked on at once.
    pub concurrency: usize,
    /// Writes allowed in this pass (`None`: no cap).
    pub max_actions: Option<usize>,
    /// How long a new or re-activated revision may take to run.
    pub revision_timeout: Duration,
    /// Poll interval while waiting for a revision.
    pub poll_interval: Duration,
    /// Plan-act-read rounds per app before giving up (a guard against a plan that never ends).
    pub max_steps: usize,
    /// Writes left, shared by several [`apply`] calls of one pass (`None`: from `max_actions`).
    pub budget: Option<Arc<AtomicUsize>>,
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
        }
    }
}

/// How an app ended up.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum AppResult {
    /// Nothing was needed.
    InSync,
    /// Changes were made and the app now matches.
    Converged,
    /// Suspended: nothing was done (the plan shows what would be).
    Suspended,
    /// Left for the next pass: the `--max-actions` budget ran out.
    Deferred,
    /// The app does not exist in Azure.
    Missing,
    /// Leader election is on and this replica lost the lease: it stopped before its next
    /// write; the leader carries on.
    Standby,
    /// It could not be converged.
    #[serde(rename_all = "camelCase")]
    Failed {
        /// What went wrong and what to do.
        error: String,
    },
}

impl AppResult {
    /// Whether the pass did what it should for this app.
    pub fn is_ok(&self) -> bool {
        matches!(
            self,
            AppResult::InSync | AppResult::Converged | AppResult::Suspended
        )
    }
}

/// One action carried out.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Done {
    /// What was done, for people.
    pub description: String,
    /// The action.
    pub action: Action,
    /// Its error, if it failed.
    pub error: Option<String>,
    /// Azure's `x-ms-request-id` of the write, to quote to Azure support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The write's answer was lost: the app was read again to see whether it landed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lost_answer: bool,
    /// How long it took.
    pub ms: u64,
}

/// What happened to one app.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppReport {
    /// Which app.
    pub app: AppKey,
    /// How it ended.
    #[serde(flatten)]
    pub result: AppResult,
    /// The actions carried out, in order.
    pub actions: Vec<Done>,
    /// How this pass verified the app (for `run`'s skipping of revision reads).
    #[serde(skip)]
    pub verified: Verification,
}

/// How a pass verified an app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verification {
    /// Not verified in sync (changed, failed, or no revisions needed).
    #[default]
    No,
    /// Read in full and found in sync, with this [`crate::live::fingerprint`].
    Full(u64),
    /// Unchanged since its last full verification; its revisions were not read.
    Unchanged,
}

/// Runs a pass over every app of `desired`, starting from the snapshot `live`.
pub async fn apply(
    client: &ArmClient,
    desired: &DesiredState,
    live: LiveState,
    options: &ApplyOptions,
    clock: Clock,
) -> Vec<AppReport> {
    let mut reports = Vec::new();
    apply_each(client, desired, live, options, clock, |r| reports.push(r)).await;
    reports.sort_by(|a, b| a.app.cmp(&b.app));
    reports
}

/// [`apply`], handing each app's report to `done` the moment that app is finished, so that a
/// caller can schedule it again without waiting for the slowest app of the pass.
pub async fn apply_each(
    client: &ArmClient,
    desired: &DesiredState,
    live: LiveState,
    options: &ApplyOptions,
    clock: Clock,
    mut done: impl FnMut(AppReport),
) {
    let budget = budget(options);
    let (ready, work) = split(desired, live);
    ready.into_iter().for_each(&mut done);
    // Boxed (see live::snapshot for why).
    let futures = work.into_iter().map(|w| -> BoxFuture<'_, AppReport> {
        Box::pin(converge_one(client, w, options, &budget, clock))
    });
    let mut worked =
        futures_util::stream::iter(futures).buffer_unordered(options.concurrency.max(1));
    while let Some(report) = worked.next().await {
        done(report);
    }
}

/// One app's work in a pass: what it should be, and what was read of it.
#[derive(Debug)]
pub struct Work {
    /// Its desired state.
    pub spec: AppSpec,
    /// What was read.
    pub observed: Observed,
    /// Its [`crate::live::fingerprint`], if its revisions were read.
    pub fingerprint: Option<u64>,
}

/// Splits a snapshot of `desired`'s apps into the reports of those it shows unchanged since they
/// were verified in sync, and the work on the others.
pub fn split(desired: &DesiredState, live: LiveState) -> (Vec<AppReport>, Vec<Work>) {
    let mut ready = Vec::new();
    let mut work = Vec::new();
    let mut observed = live.apps;
    for (key, spec) in &desired.apps {
        if live.unchanged.contains(key) {
            ready.push(AppReport {
                app: key.clone(),
                result: AppResult::InSync,
                actions: Vec::new(),
                verified: Verification::Unchanged,
            });
            continue;
        }
        work.push(Work {
            spec: spec.clone(),
            observed: observed
                .remove(key)
                .unwrap_or_else(|| Observed::Unreadable("not observed".to_owned())),
            fingerprint: live.fingerprints.get(key).copied(),
        });
    }
    (ready, work)
}

/// The `--max-actions` budget of a pass: the one in `options`, or a new one.
pub fn budget(options: &ApplyOptions) -> Arc<AtomicUsize> {
    options
        .budget
        .clone()
        .unwrap_or_else(|| Arc::new(AtomicUsize::new(options.max_actions.unwrap_or(usize::MAX))))
}

/// Converges one app, and says how.
pub async fn converge_one(
    client: &ArmClient,
    work: Work,
    options: &ApplyOptions,
    budget: &AtomicUsize,
    clock: Clock,
) -> AppReport {
    let span = tracing::info_span!("app", app = %work.spec.key);
    let mut report = converge(client, &work.spec, work.observed, options, budget, clock)
        .instrument(span)
        .await;
    // In sync as read, with its revisions: remember what it looked like.
    if report.result == AppResult::InSync
        && let Some(fp) = work.fingerprint
    {
        report.verified = Verification::Full(fp);
    }
    report
}

fn take_budget_n(budget: &AtomicUsize, n: usize) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(n)
        })
        .is_ok()
}

/// The actions carried out before the app is read again: the first one, with these exceptions.
/// - A template change goes with the wait for its revision, and a revision-mode change with the
///   template change that follows it (the template does not depend on the mode, so re-reading
///   in between would cost two reads for the same plan).
/// - A set of restarts goes with the pending tag before it and the tag that records it after:
///   re-planning between them would restart the same revisions again, since the generation is
///   recorded only after the last restart.
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
    let first_with_wait = match actions.first() {
        Some(Action::SetRevisionMode { .. }) => 1 + template_at(1),
        _ => template_at(0).max(1),
    };
    let n = if restarts > 0 {
        restarts
    } else if deactivations > 0 {
        deactivations
    } else {
        first_with_wait
    };
    actions.into_iter().take(n).collect()
}

/// Plans, acts, reads again, until the app matches or cannot.
async fn converge(
    client: &ArmClient,
    spec: &AppSpec,
    mut observed: Observed,
    options: &ApplyOptions,
    budget: &AtomicUsize,
    clock: Clock,
) -> AppReport {
    let key = spec.key.clone();
    let mut done: Vec<Done> = Vec::new();
    let finish = |result: AppResult, done: Vec<Done>| AppReport {
        app: key.clone(),
        result,
        actions: done,
        verified: Verification::No,
    };
    let with_revisions = plan::needs_revisions(spec);
    let mut busy_since: Option<Instant> = None;
    for _ in 0..options.max_steps {
        let (app, revisions) = match &observed {
            Observed::Found { app, revisions } => (app, revisions),
            Observed::Missing => return finish(AppResult::Missing, done),
            Observed::Unreadable(e) => {
                return finish(
                    AppResult::Failed {
                        error: format!("cannot read the app: {e}"),
                    },
                    done,
                );
            }
        };
        let planned = plan::plan_app(
            spec,
            plan::Observed {
                app,
                revisions: revisions.as_deref(),
            },
            clock.now(),
        );
        let step = match planned.outcome {
            Outcome::InSync => {
                return finish(
                    if done.is_empty() {
                        AppResult::InSync
                    } else {
                        AppResult::Converged
                    },
                    done,
                );
            }
            Outcome::Suspended => return finish(AppResult::Suspended, done),
            Outcome::Blocked { reason } => {
                return finish(
                    AppResult::Failed {
                        error: reason.to_string(),
                    },
                    done,
                );
            }
            Outcome::Busy => {
                // Another write (ours or someone's) is in flight: wait for it to end.
                let since = *busy_since.get_or_insert_with(Instant::now);
                if since.elapsed() > options.revision_timeout {
                    return finish(
                        AppResult::Failed {
                            error: "the app stayed InProgress (another operation) for too long"
                                .to_owned(),
                        },
                        done,
                    );
                }
                tokio::time::sleep(options.poll_interval).await;
                observed = match observe_app(client, &key, with_revisions).await {
                    Ok(o) => o,
                    Err(e) => {
                        return finish(
                            AppResult::Failed {
                                error: e.to_string(),
                            },
                            done,
                        );
                    }
                };
                continue;
            }
            Outcome::Changes => step_of(planned.actions),
        };
        busy_since = None;
        let writes = step.iter().filter(|a| a.is_write()).count();
        if writes > 0 && !take_budget_n(budget, writes) {
            return finish(AppResult::Deferred, done);
        }
        for action in step {
            let description = render::describe(&action);
            let started = Instant::now();
            let result = execute(client, &key, &action, options, clock).await;
            let ms = started.elapsed().as_millis() as u64;
            let written = result.as_ref().ok().cloned().unwrap_or_default();
            match &result {
                Ok(w) => tracing::info!(
                    action = %description,
                    ms,
                    arm_request_id = w.request_id.as_deref().unwrap_or("-"),
                    arm_correlation_id = w.correlation_id.as_deref().unwrap_or("-"),
                    "done"
                ),
                Err(e) => tracing::error!(action = %description, error = %e, "failed"),
            }
            let mut action = action;
            action.drop_body();
            done.push(Done {
                description,
                action,
                error: result.as_ref().err().map(ToString::to_string),
                request_id: written.request_id,
                lost_answer: written.lost_answer,
                ms,
            });
            if written.lost_answer {
                // It may or may not have landed: the rest of the step was planned assuming it
                // did, so decide again from what Azure shows now.
                tracing::warn!(action = %done.last().map_or("", |d| d.description.as_str()), "the answer was lost; re-reading the app before anything else");
                break;
            }
            if let Err(e) = result {
                if matches!(e, Error::NotLeader(_)) {
                    return finish(AppResult::Standby, done);
                }
                return finish(
                    AppResult::Failed {
                        error: e.to_string(),
                    },
                    done,
                );
            }
        }
        observed = match observe_app(client, &key, with_revisions).await {
            Ok(o) => o,
            Err(e) => {
                return finish(
                    AppResult::Failed {
                        error: e.to_string(),
                    },
                    done,
                );
            }
        };
    }
    finish(
        AppResult::Failed {
            error: format!(
                "did not converge within {} steps; the plan keeps changing (is someone else writing to this app?)",
                options.max_steps
            ),
        },
        done,
    )
}

/// Carries out one action (a wait has no request id).
async fn execute(
    client: &ArmClient,
    key: &AppKey,
    action: &Action,
    options: &ApplyOptions,
    clock: Clock,
) -> Result<Written, Error> {
    match action {
        Action::SetRevisionMode { to, .. } => client.patch_app(key, &plan::mode_body(to)).await,
        Action::UpdateTemplate { body, .. }
        | Action::SetTraffic { body, .. }
        | Action::RecordRestartGeneration { body, .. }
        | Action::ClearRestartPending { body, .. } => client.patch_app(key, body).await,
        Action::MarkRestartPending { body, since, .. } => {
            let written = client.patch_app(key, body).await?;
            if written.lost_answer {
                return Ok(written);
            }
            // No restart before `since`, so that only replicas of the restarts show a later
            // time (plan::pending_restart).
            let since = crate::time::parse(since).unwrap_or(0);
            let wait = u64::try_from(since - clock.now()).unwrap_or(0).min(2_000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok(written)
        }
        Action::Activate { revision } => {
            client
                .revision_action(key, revision, RevisionAction::Activate)
                .await
        }
        Action::Deactivate { revision, .. } => {
            client
                .revision_action(key, revision, RevisionAction::Deactivate)
                .await
        }
        Action::Restart { revision, .. } => {
            client
                .revision_action(key, revision, RevisionAction::Restart)
                .await
        }
        Action::WaitUntilRunning { revision } => wait_until_running(client, key, revision, options)
            .await
            .map(|()| Written::default()),
    }
}

/// Polls a revision until it runs; a failure or the deadline is an error naming it.
async fn wait_until_running(
    client: &ArmClient,
    key: &AppKey,
    revision: &str,
    options: &ApplyOptions,
) -> Result<(), Error> {
    let started = Instant::now();
    loop {
        let r = client.get_revision(key, revision).await?;
        if r.is_running() {
            return Ok(());
        }
        if r.has_failed() {
            let why = r.properties.provisioning_error.clone().unwrap_or_else(|| {
                format!(
                    "runningState {}",
                    r.properties.running_state.as_deref().unwrap_or("Failed")
                )
            });
            return Err(Error::OperationFailed {
                resource: format!("{}/revisions/{revision}", key.resource_id()),
                status: "Failed".to_owned(),
                message: format!(
                    "the revision did not start: {why}; traffic stays where it was (check the image and the revision's logs: az containerapp logs show --revision {revision})"
                ),
            });
        }
        if started.elapsed() + options.poll_interval > options.revision_timeout {
            return Err(Error::Timeout {
                resource: format!("{}/revisions/{revision}", key.resource_id()),
                what: "the revision becoming ready (traffic stays where it was)".to_owned(),
                after: options.revision_timeout,
            });
        }
        tokio::time::sleep(options.poll_interval).await;
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
        // Mode, template and its wait go together; what follows waits for a fresh read.
        let step = step_of(vec![
            mode.clone(),
            template("a--1"),
            wait("a--1"),
            traffic.clone(),
            deactivate("a--0"),
        ]);
        assert_eq!(
            kinds(&step),
            ["setRevisionMode", "updateTemplate", "waitUntilRunning"]
        );
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

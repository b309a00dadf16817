//! The planner: desired state + observed state -> the actions that make them agree, in a safe
//! order. A pure function: no I/O, no clock (time is passed in), the same inputs always give
//! the same plan.
//!
//! # The order of safety (contract section 3, N§4.3)
//! 1. revision mode;
//! 2. one template PATCH for every image and replica change, with a revision suffix derived
//!    from the change (a retried change cannot mint a second revision);
//! 3. wait for that new revision to run;
//! 4. activate every revision that is to get traffic, and wait until each runs;
//! 5. set the whole traffic list;
//! 6. deactivate surplus revisions, oldest first, never the latest, one with traffic, or one
//!    the spec names;
//! 7. for a raised `restartGeneration`: mark the restart pending in a tag *first* (so that a
//!    revision the pass creates, which runs with the rotated secrets already, is known as
//!    new), restart the revisions that were active before it, then record the generation and
//!    remove the pending tag in one PATCH.
//!
//! # Sections
//! [`plan_app`] is a composition: each step above is one function of [`sections`] over a
//! read-only [`sections::Ctx`] (the spec and what Azure shows) and a [`sections::Draft`] (the
//! actions so far and what they will have changed). The traffic a spec asks for is
//! [`sections::desired_rules`]: the one place that decides weights (a rollout step will put
//! its weights there). The tags the controller owns are read and written through
//! [`tags::OwnedTags`].
//!
//! The executor carries out only the first action, reads the app again and plans anew, so a
//! plan is always computed from what Azure says now. Before it returns, the planner checks its
//! own invariants ([`check_invariants`]); a plan that breaks one is refused, not executed.

pub mod render;
pub mod sections;
pub mod tags;

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use crate::arm::models::{ContainerApp, Revision, TrafficWeight};
use crate::spec::AppSpec;
use crate::state::AppState;
use crate::time::Millis;
pub use tags::{OwnedTags, RESTART_PENDING_TAG, RESTART_TAG};

/// One step towards the desired state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Action {
    /// PATCH `configuration.activeRevisionsMode`.
    #[serde(rename_all = "camelCase")]
    SetRevisionMode {
        /// Live mode.
        from: String,
        /// Desired mode.
        to: String,
    },
    /// One PATCH of the template: creates revision `revision`.
    #[serde(rename_all = "camelCase")]
    UpdateTemplate {
        /// What changes, for people.
        changes: Vec<Change>,
        /// The revision the PATCH creates.
        revision: String,
        /// The merge-patch body (dropped once sent: [`Action::drop_body`]).
        #[serde(skip_serializing_if = "Value::is_null")]
        body: Value,
    },
    /// Wait until a revision runs (or fails, which stops the app's plan).
    #[serde(rename_all = "camelCase")]
    WaitUntilRunning {
        /// The revision.
        revision: String,
    },
    /// Activate a revision that is to get traffic.
    #[serde(rename_all = "camelCase")]
    Activate {
        /// The revision.
        revision: String,
    },
    /// PATCH the whole traffic list.
    #[serde(rename_all = "camelCase")]
    SetTraffic {
        /// Live rules.
        from: Vec<Rule>,
        /// Desired rules.
        to: Vec<Rule>,
        /// The merge-patch body (dropped once sent: [`Action::drop_body`]).
        #[serde(skip_serializing_if = "Value::is_null")]
        body: Value,
    },
    /// Deactivate a surplus revision (it carries no traffic).
    #[serde(rename_all = "camelCase")]
    Deactivate {
        /// The revision.
        revision: String,
        /// The retention that asks for it.
        keep_active: u32,
    },
    /// Record in the app's tag that the restarts of `generation` begin at `since`; the executor
    /// waits until then (at most a second) before the first restart.
    #[serde(rename_all = "camelCase")]
    MarkRestartPending {
        /// The generation about to be applied.
        generation: u64,
        /// RFC 3339, a whole second: replicas created since then run after the restart.
        since: String,
        /// The merge-patch body (dropped once sent: [`Action::drop_body`]).
        #[serde(skip_serializing_if = "Value::is_null")]
        body: Value,
    },
    /// Restart a revision (for a raised `restartGeneration`).
    #[serde(rename_all = "camelCase")]
    Restart {
        /// The revision.
        revision: String,
        /// The generation being applied.
        generation: u64,
    },
    /// Record the applied generation in the app's Azure tag, and remove the pending tag in
    /// the same PATCH.
    #[serde(rename_all = "camelCase")]
    RecordRestartGeneration {
        /// Live (tag) generation.
        from: u64,
        /// Applied generation.
        to: u64,
        /// The merge-patch body (dropped once sent: [`Action::drop_body`]).
        #[serde(skip_serializing_if = "Value::is_null")]
        body: Value,
    },
    /// Move a rollout on: its traffic (when it changes) and its state tag, in one PATCH that
    /// also removes a command it carries out ([`crate::rollout::decide`]).
    #[serde(rename_all = "camelCase")]
    Rollout {
        /// What happens.
        transition: crate::rollout::decide::Transition,
        /// The step the rollout is at after it.
        step: i32,
        /// Live rules.
        from: Vec<Rule>,
        /// The rules after it (`None`: traffic unchanged).
        to: Option<Vec<Rule>>,
        /// Why, in numbers.
        #[serde(skip_serializing_if = "String::is_empty")]
        reason: String,
        /// The state tag it writes.
        #[serde(skip_serializing_if = "String::is_empty")]
        state: String,
        /// The merge-patch body (dropped once sent: [`Action::drop_body`]).
        #[serde(skip_serializing_if = "Value::is_null")]
        body: Value,
    },
    /// Take one analysis check of a rollout step (reads only: Azure Monitor and the probes);
    /// the plan is made again with its result.
    #[serde(rename_all = "camelCase")]
    Analyze {
        /// The new revision.
        canary: String,
        /// The stable revision (`""`: none).
        stable: String,
        /// The step held.
        step: i32,
        /// The new revision's share in that step.
        weight: u32,
        /// The metrics window, epoch ms `[start, end)`.
        window: (Millis, Millis),
        /// Where the probes go (`https://host`).
        probe_base: Option<String>,
    },
    /// Remove a pending-restart tag left behind (its generation is recorded, or it does not
    /// parse): the controller's own litter on a user-visible, limited resource.
    #[serde(rename_all = "camelCase")]
    ClearRestartPending {
        /// The tag's value.
        value: String,
        /// The merge-patch body (dropped once sent: [`Action::drop_body`]).
        #[serde(skip_serializing_if = "Value::is_null")]
        body: Value,
    },
}

impl Action {
    /// Drops the request body (a report keeps what was done, not what was sent: the body of a
    /// template change repeats every container of the app).
    pub fn drop_body(&mut self) {
        if let Action::UpdateTemplate { body, .. }
        | Action::SetTraffic { body, .. }
        | Action::MarkRestartPending { body, .. }
        | Action::RecordRestartGeneration { body, .. }
        | Action::Rollout { body, .. }
        | Action::ClearRestartPending { body, .. } = self
        {
            *body = Value::Null;
        }
    }

    /// Whether the action writes to Azure (waiting does not).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Action::WaitUntilRunning { .. } | Action::Analyze { .. }
        )
    }

    /// Whether it makes Azure create a revision.
    pub fn creates_revision(&self) -> bool {
        matches!(self, Action::UpdateTemplate { .. })
    }
}

/// One owned field that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "field", rename_all = "camelCase")]
pub enum Change {
    /// A container's image.
    #[serde(rename_all = "camelCase")]
    Image {
        /// Container name.
        container: String,
        /// Live image.
        from: String,
        /// Desired image.
        to: String,
    },
    /// Scale bounds.
    #[serde(rename_all = "camelCase")]
    Replicas {
        /// Live (min, max).
        from: (Option<i64>, Option<i64>),
        /// Desired (min, max).
        to: (u32, u32),
    },
    /// The revision mode, changed in the same PATCH as the template (one write, not two).
    #[serde(rename_all = "camelCase")]
    RevisionMode {
        /// Live mode.
        from: String,
        /// Desired mode.
        to: String,
    },
    /// Traffic to `latestRevision` only, in the same PATCH as the template: Azure moves it to
    /// the new revision once that is ready ([`sections::latest_only_traffic`]).
    #[serde(rename_all = "camelCase")]
    Traffic {
        /// Live rules.
        from: Vec<Rule>,
        /// Desired rules.
        to: Vec<Rule>,
    },
}

/// A traffic rule in a form that compares and prints well.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// `None`: the latest ready revision.
    pub revision: Option<String>,
    /// Label, if any.
    pub label: Option<String>,
    /// Percent.
    pub weight: i64,
}

impl Rule {
    /// The rule as Azure lists it.
    pub fn from_arm(t: &TrafficWeight) -> Rule {
        Rule {
            revision: if t.latest_revision {
                None
            } else {
                t.revision_name.clone()
            },
            label: t.label.clone().filter(|l| !l.is_empty()),
            weight: t.weight,
        }
    }

    /// The rule as Azure takes it.
    pub fn to_arm(&self) -> Value {
        let mut v = match &self.revision {
            None => json!({"latestRevision": true, "weight": self.weight}),
            Some(r) => json!({"revisionName": r, "weight": self.weight}),
        };
        if let Some(l) = &self.label {
            v["label"] = json!(l);
        }
        v
    }
}

/// Why a spec cannot be reached as written. Nothing is done for the app until its spec or its
/// live state changes; none of these is cured by trying again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// `traffic` or `activeRevision` on an app that stays in Single mode.
    #[error(
        "traffic and activeRevision need Multiple revision mode, and the app runs in Single mode; add `revisionMode: multiple` to the spec"
    )]
    NeedsMultipleMode,
    /// `images` names a container the app does not have.
    #[error(
        "spec.images names container `{container}`, which the app does not have (its containers: {have}); aca-reconciler does not add containers"
    )]
    UnknownContainer {
        /// The container named.
        container: String,
        /// The app's containers.
        have: String,
    },
    /// The latest revision failed to start.
    #[error(
        "the latest revision {revision} failed to start ({why}); traffic stays on the revisions that run. Fix the image or settings in the spec; the next change creates a new revision"
    )]
    LatestFailed {
        /// The revision.
        revision: String,
        /// Azure's error.
        why: String,
    },
    /// `traffic` names a label that is on no revision.
    #[error(
        "traffic label `{0}` is on no revision of the app; put it on one first (or name the revision)"
    )]
    UnknownLabel(String),
    /// `traffic` or `activeRevision` names a revision that does not exist.
    #[error(
        "traffic names revision `{0}`, which does not exist; list them with `az containerapp revision list --all`"
    )]
    UnknownRevision(String),
    /// `traffic` names a revision that failed.
    #[error(
        "traffic names revision `{revision}`, which has failed ({why}); it cannot take traffic"
    )]
    FailedRevision {
        /// The revision.
        revision: String,
        /// Azure's error.
        why: String,
    },
    /// The app's rollout is in the middle of its steps, and the spec no longer has `rollout`
    /// nor says where traffic goes.
    #[error(
        "a rollout of {canary} is at step {step} with traffic split, and spec.rollout was removed; put rollout back to finish it (or `aca-reconciler rollout abort` first), or write traffic or activeRevision to say where traffic goes"
    )]
    RolloutDropped {
        /// The new revision.
        canary: String,
        /// The step (1-based; 0 while it started).
        step: i32,
    },
    /// A defect of the controller, or an answer from Azure it cannot work with: the plan is
    /// refused rather than risk a wrong write.
    #[error("internal: {0}")]
    Internal(String),
}

/// What the planner concluded about one app.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum Outcome {
    /// Nothing to do.
    InSync,
    /// These actions, in this order.
    Changes,
    /// Suspended: the actions are what would be done; nothing is.
    Suspended,
    /// A write is in flight; plan again once it ends.
    Busy,
    /// A rollout holds a step (or waits for approval): nothing to do before `until`.
    #[serde(rename_all = "camelCase")]
    Progressing {
        /// When to look again (epoch ms).
        #[serde(skip)]
        until: Millis,
    },
    /// The last rollout rolled back; nothing is done until the spec changes or a person
    /// retries.
    #[serde(rename_all = "camelCase")]
    RolledBack {
        /// Why, in numbers.
        reason: String,
    },
    /// The desired state cannot be reached as written; nothing is done.
    #[serde(rename_all = "camelCase")]
    Blocked {
        /// Why, and what to change.
        #[serde(serialize_with = "display")]
        reason: Blocked,
    },
}

/// Serializes a value by its `Display`.
fn display<T: std::fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl Outcome {
    /// The app's state, in the one vocabulary everything reports ([`AppState`]).
    pub fn state(&self) -> AppState {
        match self {
            Outcome::InSync => AppState::InSync,
            Outcome::Changes => AppState::Drifted,
            Outcome::Suspended => AppState::Suspended,
            Outcome::Busy => AppState::Waiting,
            Outcome::Progressing { .. } => AppState::Progressing,
            Outcome::RolledBack { .. } => AppState::RolledBack,
            Outcome::Blocked { .. } => AppState::Blocked,
        }
    }
}

/// The plan for one app.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPlan {
    /// The outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The actions (empty unless `Changes` or `Suspended`).
    pub actions: Vec<Action>,
    /// Where the app's rollout stands, if its spec has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::decide::RolloutView>,
}

/// What the planner needs to know about the live app.
#[derive(Debug, Clone, Copy)]
pub struct LiveApp<'a> {
    /// The app.
    pub app: &'a ContainerApp,
    /// Its revisions, when read (only apps whose spec needs them are read).
    pub revisions: Option<&'a [Revision]>,
}

/// Whether planning `spec` needs the app's revisions (traffic, retention or restarts do; images
/// and replicas alone do not).
pub fn needs_revisions(spec: &AppSpec) -> bool {
    spec.traffic.is_some()
        || spec.keep_active.is_some()
        || spec.restart_generation.is_some()
        || spec.rollout.is_some()
}

/// The restart begun but maybe not finished: the pending tag's generation and time, if it
/// names a generation above the recorded one ([`OwnedTags::unfinished_restart`]).
pub fn pending_restart(app: &ContainerApp) -> Option<(u64, Millis)> {
    OwnedTags::of(app).unfinished_restart()
}

/// Plans one app: each section in the order of safety, then the invariants. `now` stamps the
/// pending-restart tag and times a rollout's steps.
pub fn plan_app(spec: &AppSpec, observed: LiveApp<'_>, now: Millis) -> AppPlan {
    plan_app_with(
        spec,
        observed,
        now,
        &crate::rollout::decide::Input::default(),
    )
}

/// [`plan_app`], with what a rollout needs besides: the last check, and Azure Monitor's lag.
pub fn plan_app_with(
    spec: &AppSpec,
    observed: LiveApp<'_>,
    now: Millis,
    rollout: &crate::rollout::decide::Input<'_>,
) -> AppPlan {
    let blocked = |reason: Blocked| AppPlan {
        outcome: Outcome::Blocked { reason },
        actions: Vec::new(),
        rollout: None,
    };
    if observed.app.is_busy() {
        return AppPlan {
            outcome: Outcome::Busy,
            actions: Vec::new(),
            rollout: None,
        };
    }
    let ctx = match sections::Ctx::new(spec, observed, now) {
        Ok(ctx) => ctx,
        Err(b) => return blocked(b),
    };
    let mut draft = sections::Draft::default();
    let mut decision = crate::rollout::decide::Decision::default();
    let planned = sections::restart_mark(&ctx, &mut draft)
        .and_then(|()| sections::mode_and_template(&ctx, &mut draft))
        .and_then(|()| match &spec.rollout {
            // The rollout owns traffic and the wait for its new revision.
            Some(r) => {
                crate::rollout::decide::section(&ctx, &mut draft, r, rollout).map(|d| decision = d)
            }
            None => sections::abandoned_rollout(&ctx)
                .and_then(|()| sections::wait_for_latest(&ctx, &mut draft))
                .and_then(|()| sections::traffic(&ctx, &mut draft)),
        });
    if let Err(b) = planned {
        return blocked(b);
    }
    sections::retention(&ctx, &mut draft);
    sections::restarts(&ctx, &mut draft);
    let actions = draft.actions;
    if let Err(broken) = check_invariants(spec, observed.app, ctx.revisions, &actions) {
        return blocked(Blocked::Internal(format!(
            "the plan broke an invariant and was refused: {broken}"
        )));
    }
    let only_checks =
        !actions.is_empty() && actions.iter().all(|a| matches!(a, Action::Analyze { .. }));
    let outcome = if spec.suspend && !actions.is_empty() {
        // Suspended: the actions (a check included) are what would be done; nothing is.
        Outcome::Suspended
    } else if only_checks {
        // A check is a read: the rollout progresses; nothing changes in Azure.
        Outcome::Progressing { until: now }
    } else if !actions.is_empty() {
        if spec.suspend {
            Outcome::Suspended
        } else {
            Outcome::Changes
        }
    } else if let Some(reason) = decision.rolled_back {
        Outcome::RolledBack { reason }
    } else if decision.awaiting_approval {
        // A person's command is looked for this often.
        Outcome::Progressing {
            until: now + APPROVAL_LOOK_MS,
        }
    } else if let Some(until) = decision.hold_until {
        Outcome::Progressing { until }
    } else {
        Outcome::InSync
    };
    AppPlan {
        outcome,
        actions,
        rollout: decision.view,
    }
}

/// How often an app whose rollout holds a step, or waits for `rollout promote`, is looked at
/// for a person's command (two reads each time; the command waits in its tag meanwhile).
pub const APPROVAL_LOOK_MS: Millis = 10_000;

/// The first step of `spec`'s plan, from the listed app alone, when its revisions cannot
/// change it: a template change (and the revision mode, and `latestRevision`-only traffic,
/// riding in its PATCH) with the wait for its revision, the first step [`plan_app`] would take
/// too. Everything after it is planned from a fresh read once the revision runs, so reading
/// the revisions before the PATCH would cost a read that decides nothing. `None` when the
/// revisions are needed: a restart generation raised or pending, traffic that names a
/// revision or a label, no template change, a suspended app, or anything blocked (the full
/// plan says why).
///
/// The one difference from [`plan_app`]: the revision suffix is chosen without the list of
/// existing revisions. It is derived from the change and the latest revision, so it can
/// collide only with a revision made from the same change on the same base, which would be
/// the latest one (or a 36-bit hash collision); Azure refuses a taken suffix
/// (docs/azure-notes.md 4.2), and nothing is minted twice.
pub fn plan_first_step(spec: &AppSpec, app: &ContainerApp, now: Millis) -> Option<AppPlan> {
    // A rollout's first step depends on the revisions (which one is stable, and runs).
    if spec.suspend || app.is_busy() || spec.rollout.is_some() {
        return None;
    }
    let tags = OwnedTags::of(app);
    if tags.restart_pending.is_some()
        || spec
            .restart_generation
            .is_some_and(|g| g > tags.restart_generation)
    {
        return None;
    }
    let ctx = sections::Ctx::new(
        spec,
        LiveApp {
            app,
            revisions: Some(&[]),
        },
        now,
    )
    .ok()?;
    let traffic = sections::desired_rules(&ctx).ok()?;
    if traffic.as_ref().is_some_and(|rules| {
        *rules != ctx.live_rules
            && !rules
                .iter()
                .all(|r| r.revision.is_none() && r.label.is_none())
    }) {
        return None;
    }
    let mut draft = sections::Draft::default();
    sections::mode_and_template(&ctx, &mut draft).ok()?;
    draft.new_revision.as_ref()?;
    check_invariants(spec, app, &[], &draft.actions).ok()?;
    Some(AppPlan {
        outcome: Outcome::Changes,
        actions: draft.actions,
        rollout: None,
    })
}

/// Whether `app`, as its group's list shows it, is in sync with `spec` in everything the list
/// can show: no operation running, no restart generation raised or pending, the latest
/// revision ready, the revision mode, template and traffic rules as the spec asks. What the
/// list cannot show (which revisions are active, and whether they run) only a full read with
/// the revisions can verify.
pub fn in_sync_as_listed(spec: &AppSpec, app: &ContainerApp) -> bool {
    // A rollout's state and its revisions are what decide; the list cannot show them.
    if app.is_busy() || spec.rollout.is_some() {
        return false;
    }
    let props = &app.properties;
    if props.latest_revision_name.is_none()
        || props.latest_revision_name != props.latest_ready_revision_name
    {
        return false;
    }
    let tags = OwnedTags::of(app);
    if tags.restart_pending.is_some()
        || spec
            .restart_generation
            .is_some_and(|g| g > tags.restart_generation)
    {
        return false;
    }
    let Ok(ctx) = sections::Ctx::new(
        spec,
        LiveApp {
            app,
            revisions: Some(&[]),
        },
        0,
    ) else {
        return false;
    };
    let mut draft = sections::Draft::default();
    if sections::mode_and_template(&ctx, &mut draft).is_err() || !draft.actions.is_empty() {
        return false;
    }
    matches!(sections::desired_rules(&ctx), Ok(rules) if rules.as_ref().is_none_or(|r| *r == ctx.live_rules))
}

/// A revision suffix derived from the change: a retry of the same change from the same live
/// revision gives the same suffix (so Azure refuses a second revision instead of minting one),
/// while a change back and forth gets a new one. It starts with a letter and keeps the revision
/// name within Azure's 54 characters.
pub fn revision_suffix(
    app: &str,
    base_revision: &str,
    changes: &[Change],
    taken: &BTreeSet<String>,
) -> String {
    let mut text = format!("{app}|{base_revision}");
    for c in changes {
        text.push('|');
        text.push_str(&serde_json::to_string(c).unwrap_or_default());
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = crate::hash::splitmix(h ^ u64::from(b));
    }
    let room = 54usize.saturating_sub(app.len() + 2).clamp(2, 10);
    let mut attempt = 0u64;
    loop {
        let x = crate::hash::splitmix(h ^ attempt);
        let hex = format!("{x:016x}");
        let suffix = format!("r{}", &hex[..room - 1]);
        if !taken.contains(&format!("{app}--{suffix}")) {
            return suffix;
        }
        attempt += 1;
    }
}

/// The rules no plan may break, checked on every plan before it is returned:
/// weights sum to 100; weight goes only to revisions that are (or were first made) active and
/// running; no deactivation of the latest revision, a revision with weight, or one the spec
/// names; bodies touch owned fields only, and never secrets.
///
/// # Errors
/// The first rule broken.
pub fn check_invariants(
    spec: &AppSpec,
    app: &ContainerApp,
    revisions: &[Revision],
    actions: &[Action],
) -> Result<(), String> {
    let mut running: BTreeSet<&str> = revisions
        .iter()
        .filter(|r| r.is_running())
        .map(|r| r.name.as_str())
        .collect();
    let mut weighted: BTreeSet<String> = revisions
        .iter()
        .filter(|r| r.properties.traffic_weight.unwrap_or(0) > 0)
        .map(|r| r.name.clone())
        .collect();
    let named: BTreeSet<&str> = spec
        .traffic
        .iter()
        .flat_map(|t| t.named_revisions())
        .collect();
    let latest = app.properties.latest_revision_name.as_deref();
    for a in actions {
        match a {
            Action::WaitUntilRunning { revision } => {
                running.insert(revision);
            }
            Action::SetTraffic { to, body, .. } => {
                let sum: i64 = to.iter().map(|r| r.weight).sum();
                if sum != 100 {
                    return Err(format!("traffic weights sum to {sum}"));
                }
                for r in to.iter().filter(|r| r.weight > 0) {
                    if let Some(n) = &r.revision {
                        if !running.contains(n.as_str()) {
                            return Err(format!(
                                "traffic to {n}, which is not running at that point"
                            ));
                        }
                        weighted.insert(n.clone());
                    }
                }
                owned_only(body)?;
            }
            Action::Deactivate { revision, .. } => {
                if Some(revision.as_str()) == latest {
                    return Err(format!("deactivates the latest revision {revision}"));
                }
                if weighted.contains(revision) {
                    return Err(format!("deactivates {revision}, which carries traffic"));
                }
                if named.contains(revision.as_str()) {
                    return Err(format!("deactivates {revision}, which the spec names"));
                }
            }
            Action::Rollout { to, body, .. } => {
                if let Some(to) = to {
                    check_rules(to, &running, &mut weighted)?;
                }
                owned_only(body)?;
            }
            Action::UpdateTemplate { body, .. } => {
                template_traffic(body, &running, &mut weighted)?;
                owned_only(body)?;
            }
            Action::Analyze { .. } => {}
            Action::MarkRestartPending { body, .. }
            | Action::RecordRestartGeneration { body, .. }
            | Action::ClearRestartPending { body, .. } => owned_only(body)?,
            Action::SetRevisionMode { .. } | Action::Activate { .. } | Action::Restart { .. } => {}
        }
    }
    Ok(())
}

/// Traffic rules sum to 100 and give weight only to revisions running at that point.
fn check_rules(
    to: &[Rule],
    running: &BTreeSet<&str>,
    weighted: &mut BTreeSet<String>,
) -> Result<(), String> {
    let sum: i64 = to.iter().map(|r| r.weight).sum();
    if sum != 100 {
        return Err(format!("traffic weights sum to {sum}"));
    }
    for r in to.iter().filter(|r| r.weight > 0) {
        if let Some(n) = &r.revision {
            if !running.contains(n.as_str()) {
                return Err(format!(
                    "traffic to {n}, which is not running at that point"
                ));
            }
            weighted.insert(n.clone());
        }
    }
    Ok(())
}

/// Traffic in a template's PATCH gives weight only where nothing can get it before it runs:
/// to `latestRevision`, which Azure moves to the new revision only once it is ready
/// (docs/azure-notes.md 4.3), or to a revision by name that runs at that point (a rollout pins
/// its stable revision there). The weights sum to 100.
fn template_traffic(
    body: &Value,
    running: &BTreeSet<&str>,
    weighted: &mut BTreeSet<String>,
) -> Result<(), String> {
    let Some(rules) = body
        .pointer("/properties/configuration/ingress/traffic")
        .map(|t| t.as_array().cloned().unwrap_or_default())
    else {
        return Ok(());
    };
    let mut sum = 0;
    for r in &rules {
        let weight = r.get("weight").and_then(Value::as_i64).unwrap_or(0);
        sum += weight;
        if weight <= 0 {
            continue;
        }
        let latest = r.get("latestRevision").and_then(Value::as_bool) == Some(true);
        match r.get("revisionName").and_then(Value::as_str) {
            None if latest => {}
            Some(name) if !latest && running.contains(name) => {
                weighted.insert(name.to_owned());
            }
            _ => {
                return Err(format!(
                    "the template's PATCH gives weight to {r}, which is neither latestRevision nor a revision that runs"
                ));
            }
        }
    }
    if sum != 100 {
        return Err(format!("traffic weights sum to {sum}"));
    }
    Ok(())
}

/// A body may touch only the owned paths ([`tags::OWNED_PATHS`]).
fn owned_only(body: &Value) -> Result<(), String> {
    for p in crate::arm::models::leaf_paths(body) {
        if p.contains("secret") {
            return Err(format!("the body touches {p}, a secret"));
        }
        if !tags::OWNED_PATHS.iter().any(|a| p == *a) {
            return Err(format!(
                "the body touches {p}, which the controller does not own"
            ));
        }
    }
    Ok(())
}

/// The body of a mode change.
pub fn mode_body(to: &str) -> Value {
    json!({"properties": {"configuration": {"activeRevisionsMode": to}}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AppKey, RevisionMode, Source, TrafficSpec};

    fn spec() -> AppSpec {
        AppSpec {
            key: AppKey::new("00000000-0000-0000-0000-000000000000", "rg", "ca-x"),
            source: Source {
                file: "x.yaml".into(),
                pos: crate::spec::Pos::START,
            },
            suspend: false,
            revision_mode: Some(RevisionMode::Multiple),
            images: Default::default(),
            replicas: None,
            traffic: Some(TrafficSpec::Pin("ca-x--b".into())),
            keep_active: None,
            restart_generation: None,
            rollout: None,
        }
    }

    fn app() -> ContainerApp {
        ContainerApp::from_value(json!({"name": "ca-x", "properties": {"latestRevisionName": "ca-x--c", "latestReadyRevisionName": "ca-x--c", "configuration": {"activeRevisionsMode": "Multiple"}}})).unwrap()
    }

    fn revision(name: &str, active: bool, weight: i64) -> Revision {
        serde_json::from_value(json!({"name": name, "properties": {"active": active, "runningState": if active { "Running" } else { "Stopped" }, "trafficWeight": weight}})).unwrap()
    }

    #[test]
    fn invariants_refuse_unsafe_plans() {
        let revisions = [
            revision("ca-x--a", false, 0),
            revision("ca-x--b", true, 0),
            revision("ca-x--c", true, 100),
        ];
        let to = |rev: &str, w: i64| Rule {
            revision: Some(rev.into()),
            label: None,
            weight: w,
        };
        let traffic = |rules: Vec<Rule>| Action::SetTraffic {
            from: vec![],
            body: json!({"properties": {"configuration": {"ingress": {"traffic": []}}}}),
            to: rules,
        };
        let check = |actions: Vec<Action>| check_invariants(&spec(), &app(), &revisions, &actions);
        assert!(check(vec![traffic(vec![to("ca-x--b", 100)])]).is_ok());
        assert!(
            check(vec![traffic(vec![to("ca-x--b", 90)])])
                .unwrap_err()
                .contains("sum to 90")
        );
        assert!(
            check(vec![traffic(vec![to("ca-x--a", 100)])])
                .unwrap_err()
                .contains("not running")
        );
        assert!(
            check(vec![
                Action::WaitUntilRunning {
                    revision: "ca-x--a".into()
                },
                traffic(vec![to("ca-x--a", 100)])
            ])
            .is_ok()
        );
        assert!(
            check(vec![Action::Deactivate {
                revision: "ca-x--c".into(),
                keep_active: 1
            }])
            .unwrap_err()
            .contains("latest")
        );
        assert!(
            check(vec![Action::Deactivate {
                revision: "ca-x--b".into(),
                keep_active: 1
            }])
            .unwrap_err()
            .contains("names")
        );
        let secret = Action::UpdateTemplate {
            changes: vec![],
            revision: "ca-x--d".into(),
            body: json!({"properties": {"configuration": {"secrets": [{"name": "s"}]}}}),
        };
        assert!(check(vec![secret]).unwrap_err().contains("secret"));
        let unowned = Action::UpdateTemplate {
            changes: vec![],
            revision: "ca-x--d".into(),
            body: json!({"properties": {"template": {"scale": {"rules": []}}}}),
        };
        assert!(check(vec![unowned]).unwrap_err().contains("does not own"));
        // Traffic in a template's PATCH: latestRevision (Azure moves it once the new revision
        // is ready) or a revision that runs (a rollout's stable pin); the new revision by
        // name would get weight before it runs.
        let with_traffic = |traffic: Value| Action::UpdateTemplate {
            changes: vec![],
            revision: "ca-x--d".into(),
            body: json!({"properties": {"template": {"revisionSuffix": "d"}, "configuration": {"ingress": {"traffic": traffic}}}}),
        };
        assert!(
            check(vec![with_traffic(
                json!([{"latestRevision": true, "weight": 100}])
            )])
            .is_ok()
        );
        assert!(
            check(vec![with_traffic(
                json!([{"revisionName": "ca-x--d", "weight": 100}])
            )])
            .unwrap_err()
            .contains("neither latestRevision nor a revision that runs")
        );
        assert!(
            check(vec![with_traffic(
                json!([{"latestRevision": true, "weight": 90}])
            )])
            .unwrap_err()
            .contains("sum to 90")
        );
    }

    #[test]
    fn latest_revision_traffic_rides_in_the_template_patch_and_nothing_else_does() {
        let mut s = spec();
        s.images = crate::spec::Images::from([(
            "api".to_owned(),
            crate::spec::validate::parse_image("cr.io/api:v2").unwrap(),
        )]);
        s.traffic = Some(TrafficSpec::Split(vec![crate::spec::TrafficTarget {
            to: crate::spec::TrafficTo::Latest,
            weight: 100,
        }]));
        let live = ContainerApp::from_value(json!({"name": "ca-x", "properties": {"latestRevisionName": "ca-x--c", "latestReadyRevisionName": "ca-x--c", "configuration": {"activeRevisionsMode": "Multiple", "ingress": {"traffic": [{"revisionName": "ca-x--c", "weight": 100}]}}, "template": {"containers": [{"name": "api", "image": "cr.io/api:v1"}]}}})).unwrap();
        let revisions = [revision("ca-x--c", true, 100)];
        let full = plan_app(
            &s,
            LiveApp {
                app: &live,
                revisions: Some(&revisions),
            },
            0,
        );
        let kinds: Vec<&str> = full
            .actions
            .iter()
            .map(|a| match a {
                Action::UpdateTemplate { .. } => "template",
                Action::WaitUntilRunning { .. } => "wait",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["template", "wait"], "one write: {:?}", full.actions);
        let Action::UpdateTemplate { body, .. } = &full.actions[0] else {
            panic!()
        };
        assert_eq!(
            body["properties"]["configuration"]["ingress"]["traffic"],
            json!([{"latestRevision": true, "weight": 100}])
        );
        // The same first step from the list alone.
        assert_eq!(plan_first_step(&s, &live, 0).unwrap().actions, full.actions);
        // A split naming a revision needs the revisions, and is a step of its own.
        s.traffic = Some(TrafficSpec::Split(vec![
            crate::spec::TrafficTarget {
                to: crate::spec::TrafficTo::Latest,
                weight: 90,
            },
            crate::spec::TrafficTarget {
                to: crate::spec::TrafficTo::Revision("ca-x--c".into()),
                weight: 10,
            },
        ]));
        assert!(plan_first_step(&s, &live, 0).is_none());
        let full = plan_app(
            &s,
            LiveApp {
                app: &live,
                revisions: Some(&revisions),
            },
            0,
        );
        assert!(matches!(
            full.actions.last(),
            Some(Action::SetTraffic { .. })
        ));
    }

    #[test]
    fn revision_suffixes_are_deterministic_valid_and_free() {
        let changes = vec![Change::Replicas {
            from: (Some(1), Some(5)),
            to: (2, 10),
        }];
        let a = revision_suffix(
            "ca-user-service",
            "ca-user-service--v119",
            &changes,
            &BTreeSet::new(),
        );
        assert_eq!(
            a,
            revision_suffix(
                "ca-user-service",
                "ca-user-service--v119",
                &changes,
                &BTreeSet::new()
            ),
            "a retry gets the same suffix"
        );
        assert_ne!(
            a,
            revision_suffix(
                "ca-user-service",
                "ca-user-service--v120",
                &changes,
                &BTreeSet::new()
            ),
            "another base, another suffix"
        );
        assert!(
            a.starts_with('r')
                && a.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        let taken = BTreeSet::from([format!("ca-user-service--{a}")]);
        assert_ne!(
            a,
            revision_suffix("ca-user-service", "ca-user-service--v119", &changes, &taken),
            "a taken name is skipped"
        );
        let long = "ca-".to_owned() + &"x".repeat(29);
        let s = revision_suffix(&long, "b", &changes, &BTreeSet::new());
        assert!(
            long.len() + 2 + s.len() <= 54,
            "{}",
            long.len() + 2 + s.len()
        );
    }

    #[test]
    fn a_busy_app_is_left_alone_and_a_suspended_one_only_reported() {
        let mut busy = app();
        busy.properties.provisioning_state = Some("InProgress".into());
        let revisions = [revision("ca-x--b", true, 0), revision("ca-x--c", true, 100)];
        assert_eq!(
            plan_app(
                &spec(),
                LiveApp {
                    app: &busy,
                    revisions: Some(&revisions)
                },
                0
            )
            .outcome,
            Outcome::Busy
        );
        let mut suspended = spec();
        suspended.suspend = true;
        let p = plan_app(
            &suspended,
            LiveApp {
                app: &app(),
                revisions: Some(&revisions),
            },
            0,
        );
        assert_eq!(p.outcome, Outcome::Suspended);
        assert!(matches!(p.actions[0], Action::SetTraffic { .. }));
    }
}

//! The rollout section of the planner: a pure function of the spec, the live app (its traffic,
//! its revisions, the rollout's state and command tags), the last check, and now.
//!
//! Every transition is one PATCH that writes the traffic (when it changes) and the state tag
//! together, and removes a command it carries out: a crash before it changes nothing, a crash
//! after it leaves Azure saying exactly where the rollout is. The time a step began is in the
//! tag, so a restarted controller holds the step for what is left of its pause, not again.
//!
//! The walk, for a new revision `C` replacing the stable `S`:
//! 1. **start**: the template PATCH that creates `C` also pins 100% on `S` by name and writes
//!    the state (step -1), so `C` gets no traffic when it becomes ready;
//! 2. **step i**: once `C` runs, `[S: 100-w_i, C: w_i]` and the state (step i, since now);
//!    the step is checked every `analysis.interval` and advances once its pause is over and
//!    its latest check passed (approval, if manual, before the switch to 100%);
//! 3. **promote**: `[C: 100]`, `C` is the stable revision (retention treats `S` as usual);
//! 4. **roll back** (failed checks reach `maxFailedChecks`, `C` fails, the deadline passes, or
//!    `rollout abort`): `[S: 100]`, `C` left active at 0% for inspection; not tried again
//!    until the spec changes or `rollout retry`.
//!
//! A revision that runs the same images as the stable one (a change of replica bounds alone,
//! or the spec put back to the stable image) skips the steps: its code already serves all
//! traffic, and a scale change is often the urgent fix for an overloaded app, so waiting
//! through canary steps would only delay it. It still gets traffic only once it runs.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{
    Approval, COMMAND_TAG, Check, Command, NoData, Phase, RolloutSpec, RolloutState, STATE_TAG,
    Step, Strategy, Verb, Verdict,
};
use crate::arm::models::Revision;
use crate::plan::sections::{Ctx, Draft};
use crate::plan::{Action, Blocked, Rule};
use crate::time::Millis;

/// What the rollout section needs besides the plan's context.
#[derive(Debug, Clone, Copy, Default)]
pub struct Input<'a> {
    /// The last check taken of this app (carried by the executor's wait; `None` after a
    /// restart, when a check is then due at once).
    pub check: Option<&'a Check>,
    /// How far behind Azure Monitor's data is: a check's window ends this long before now.
    pub metrics_lag_ms: u64,
}

/// What a rollout transition does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Transition {
    /// A new revision's rollout begins (with the template PATCH that creates it, or for a
    /// revision someone else created).
    Start,
    /// The new revision gets the next step's share.
    Step,
    /// The new revision gets 100% and becomes the stable one.
    Promote,
    /// All traffic back on the stable revision.
    RollBack,
    /// A failed check is counted.
    FailedCheck,
    /// A rolled-back revision's rollout runs again (`rollout retry`).
    Retry,
    /// 100% back on the stable revision outside a rollout (traffic moved out of band).
    Steady,
    /// A command that applies to no rollout in progress is removed.
    DropCommand,
}

/// Where a rollout stands, for `plan`, `status`, `/status` and `apply`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// Canary or blue/green.
    pub strategy: Strategy,
    /// `starting`, `progressing`, `waitingForApproval`, `promoted` or `rolledBack`.
    pub phase: String,
    /// The step held (`-1`: the new revision is starting).
    pub step: i32,
    /// The steps of the walk.
    pub steps: Vec<Step>,
    /// The new revision's share of traffic now.
    pub weight: u32,
    /// The revision traffic returns to.
    pub stable: String,
    /// The new revision.
    pub canary: String,
    /// Failed checks so far.
    pub failed_checks: u32,
    /// Failed checks that roll back (`None`: no analysis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failed_checks: Option<u32>,
    /// When the step began (RFC 3339).
    pub since: String,
    /// Why it holds, or why it rolled back, in numbers.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The last check of this step, if one was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<Check>,
    /// A person's command waiting to be carried out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
}

/// What the section concluded.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// Where the rollout stands.
    pub view: Option<RolloutView>,
    /// Nothing to do before then (a step held, a check not yet due).
    pub hold_until: Option<Millis>,
    /// The last rollout rolled back, and why: nothing is done until the spec changes.
    pub rolled_back: Option<String>,
    /// Waiting for `rollout promote`: nothing is done until a person acts.
    pub awaiting_approval: bool,
}

/// The rollout section: appends the rollout's next action (or nothing) to `draft`, after
/// `mode_and_template` has planned any template change.
///
/// # Errors
/// The new revision cannot be served (it does not exist any more).
pub fn section(
    ctx: &Ctx<'_>,
    draft: &mut Draft,
    spec: &RolloutSpec,
    input: &Input<'_>,
) -> Result<Decision, Blocked> {
    let tags = &ctx.app.tags;
    let state = RolloutState::of(ctx.app);
    let command = tags.get(COMMAND_TAG).map(|v| Command::decode(v));
    let r = Rollout {
        ctx,
        spec,
        input,
        command: command.clone().flatten(),
        command_tag: command.is_some(),
    };
    // A template change planned now: its PATCH starts the rollout of the revision it creates.
    if let Some(canary) = draft.new_revision.clone() {
        let stable = match &state {
            // A new image mid-rollout: traffic goes back to the stable revision, and the
            // newer revision starts over.
            Some(s)
                if s.phase == Phase::Progressing && ctx.by_name.contains_key(s.stable.as_str()) =>
            {
                s.stable.clone()
            }
            _ => r.live_stable(),
        };
        // A stable revision that does not run is nothing to hold traffic on.
        let stable = if ctx
            .by_name
            .get(stable.as_str())
            .is_some_and(|s| s.is_running())
        {
            stable
        } else {
            String::new()
        };
        let view = r.view("starting", -1, 0, &stable, &canary, 0, "");
        r.start_with_template(draft, stable, canary);
        return Ok(Decision {
            view: Some(view),
            ..Decision::default()
        });
    }
    let latest = ctx
        .app
        .properties
        .latest_revision_name
        .clone()
        .unwrap_or_default();
    let state = match state {
        Some(s) if s.canary == latest => s,
        other => return Ok(r.without_rollout(draft, &latest, other.as_ref())),
    };
    match state.phase {
        Phase::Promoted => Ok(r.promoted(draft, &state)),
        Phase::RolledBack => Ok(r.rolled_back(draft, &state)),
        Phase::Progressing => r.progressing(draft, &state),
    }
}

/// The section's reading of one plan.
struct Rollout<'a, 'b> {
    ctx: &'b Ctx<'a>,
    spec: &'b RolloutSpec,
    input: &'b Input<'b>,
    /// A command that parses.
    command: Option<Command>,
    /// Whether the command tag is there at all: the next transition removes it, carried out
    /// or stale.
    command_tag: bool,
}

impl Rollout<'_, '_> {
    fn now(&self) -> Millis {
        self.ctx.now
    }

    fn revision(&self, name: &str) -> Option<&Revision> {
        self.ctx.by_name.get(name).copied()
    }

    /// The revision that carries most of the live traffic (a `latestRevision` rule's is the
    /// latest ready one); the latest ready revision when no rule names one.
    /// When traffic is split, the latest revision is never taken as the stable one: a split
    /// found without a rollout's state (its tag lost) is a walk to finish, not a verdict.
    fn live_stable(&self) -> String {
        let props = &self.ctx.app.properties;
        let ready = props.latest_ready_revision_name.clone().unwrap_or_default();
        let latest = props.latest_revision_name.as_deref();
        let weighted: Vec<(String, i64)> = self
            .ctx
            .live_rules
            .iter()
            .filter(|r| r.weight > 0)
            .map(|r| {
                (
                    r.revision.clone().unwrap_or_else(|| ready.clone()),
                    r.weight,
                )
            })
            .collect();
        let split = weighted.len() > 1;
        weighted
            .into_iter()
            .filter(|(name, _)| !(split && Some(name.as_str()) == latest))
            .fold(None::<(String, i64)>, |best, (name, w)| match best {
                Some((_, bw)) if bw >= w => best,
                _ => Some((name, w)),
            })
            .map_or(ready, |(name, _)| name)
    }

    /// The live rules as names: a `latestRevision` rule is the latest ready revision's when
    /// Azure routes it there (the latest is ready), and a 0% rule without a label is dropped
    /// (it routes nothing).
    fn live_named(&self) -> Vec<Rule> {
        let props = &self.ctx.app.properties;
        let ready = props.latest_ready_revision_name.as_deref();
        let settled = props.latest_revision_name.as_deref() == ready;
        let mut out: Vec<Rule> = self
            .ctx
            .live_rules
            .iter()
            .filter(|r| r.weight > 0 || r.label.is_some())
            .map(|r| match (&r.revision, ready) {
                (None, Some(ready)) if settled => Rule {
                    revision: Some(ready.to_owned()),
                    ..r.clone()
                },
                _ => r.clone(),
            })
            .collect();
        out.sort();
        out
    }

    fn is_live(&self, rules: &[Rule]) -> bool {
        self.live_named() == rules
    }

    fn label(&self) -> Option<String> {
        (self.spec.strategy == Strategy::BlueGreen).then(|| self.spec.preview_label.clone())
    }

    /// `[stable: 100-w, canary: w]` (blue/green: the canary with the preview label).
    fn step_rules(&self, stable: &str, canary: &str, weight: u32) -> Vec<Rule> {
        let mut rules = Vec::new();
        let w = i64::from(weight.min(100));
        if w < 100 && !stable.is_empty() {
            rules.push(Rule {
                revision: Some(stable.to_owned()),
                label: None,
                weight: 100 - w,
            });
        }
        let label = self.label();
        if w > 0 || label.is_some() {
            rules.push(Rule {
                revision: Some(canary.to_owned()),
                label,
                weight: if stable.is_empty() { 100 } else { w },
            });
        }
        rules.sort();
        rules
    }

    /// All on `stable`; blue/green keeps the preview label on the new revision at 0% for
    /// inspection.
    fn rollback_rules(&self, stable: &str, canary: &str) -> Vec<Rule> {
        self.step_rules(stable, canary, 0)
    }

    fn promoted_rules(canary: &str) -> Vec<Rule> {
        vec![Rule {
            revision: Some(canary.to_owned()),
            label: None,
            weight: 100,
        }]
    }

    /// The PATCH body of a transition: the traffic (if it changes), the state tag, and the
    /// removal of a command tag (carried out, or stale).
    fn body(&self, traffic: Option<&[Rule]>, state: &RolloutState) -> Value {
        let mut tags = Map::new();
        tags.insert(STATE_TAG.to_owned(), Value::String(state.encode()));
        if self.command_tag {
            tags.insert(COMMAND_TAG.to_owned(), Value::Null);
        }
        let mut body = Map::new();
        body.insert("tags".to_owned(), Value::Object(tags));
        if let Some(rules) = traffic {
            body.insert(
                "properties".to_owned(),
                json!({"configuration": {"ingress": {"traffic": rules.iter().map(Rule::to_arm).collect::<Vec<_>>()}}}),
            );
        }
        Value::Object(body)
    }

    /// A transition whose traffic is sent whenever given (not compared with the live rules
    /// as names: a `latestRevision` rule must become a name).
    fn transition_as_written(
        &self,
        draft: &mut Draft,
        transition: Transition,
        to: Option<Vec<Rule>>,
        state: &RolloutState,
    ) {
        let body = self.body(to.as_deref(), state);
        if to.is_some() {
            draft.end_rules.clone_from(&to);
        }
        draft.actions.push(Action::Rollout {
            transition,
            step: state.step,
            from: self.ctx.live_rules.clone(),
            to,
            reason: state.reason.clone(),
            state: state.encode(),
            body,
        });
    }

    fn transition(
        &self,
        draft: &mut Draft,
        transition: Transition,
        to: Option<Vec<Rule>>,
        state: &RolloutState,
    ) {
        let to = to.filter(|rules| !self.is_live(rules));
        self.transition_as_written(draft, transition, to, state);
    }

    /// The template PATCH (planned by `mode_and_template`) pins 100% on `stable` and writes
    /// the state of the new revision's rollout, in the same body.
    fn start_with_template(&self, draft: &mut Draft, stable: String, canary: String) {
        let state = RolloutState {
            phase: Phase::Progressing,
            step: -1,
            since: self.now(),
            failed_checks: 0,
            last_failed_at: 0,
            stable: stable.clone(),
            canary,
            reason: String::new(),
        };
        // By name, compared as written: a `latestRevision` rule would hand the new revision
        // all traffic once it is ready (N§4.3).
        let pin = (!stable.is_empty())
            .then(|| Self::promoted_rules(&stable))
            .filter(|rules| self.ctx.live_rules != *rules);
        let extra = self.body(pin.as_deref(), &state);
        for action in &mut draft.actions {
            if let Action::UpdateTemplate { body, .. } = action {
                merge(body, extra.clone());
            }
        }
        if pin.is_some() {
            draft.end_rules = pin;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn view(
        &self,
        phase: &str,
        step: i32,
        since: Millis,
        stable: &str,
        canary: &str,
        failed: u32,
        reason: &str,
    ) -> RolloutView {
        let weight = self
            .ctx
            .live_rules
            .iter()
            .filter(|r| {
                r.revision.as_deref() == Some(canary)
                    || (r.revision.is_none()
                        && self
                            .ctx
                            .app
                            .properties
                            .latest_ready_revision_name
                            .as_deref()
                            == Some(canary))
            })
            .map(|r| r.weight)
            .sum::<i64>();
        RolloutView {
            strategy: self.spec.strategy,
            phase: phase.to_owned(),
            step,
            steps: self.spec.steps.clone(),
            weight: u32::try_from(weight.clamp(0, 100)).unwrap_or(0),
            stable: stable.to_owned(),
            canary: canary.to_owned(),
            failed_checks: failed,
            max_failed_checks: self.spec.analysis.as_ref().map(|a| a.max_failed_checks),
            since: if since > 0 {
                crate::time::format_arm(since)
            } else {
                String::new()
            },
            reason: reason.to_owned(),
            last_check: self
                .input
                .check
                .filter(|c| c.canary == canary && c.step == step)
                .cloned(),
            command: self.command.clone(),
        }
    }

    /// No rollout is known for the latest revision: at rest (100% on it), or it was created
    /// by someone else (a rollout starts for it, by a tag PATCH).
    fn without_rollout(
        &self,
        draft: &mut Draft,
        latest: &str,
        prior: Option<&RolloutState>,
    ) -> Decision {
        // A revision someone else created in the middle of a walk: the walk's stable revision
        // stays the one traffic returns to.
        let stable = prior
            .filter(|p| p.phase == Phase::Progressing)
            .filter(|p| self.revision(&p.stable).is_some_and(Revision::is_running))
            .map_or_else(|| self.live_stable(), |p| p.stable.clone());
        if latest.is_empty() || latest == stable {
            // At rest. Only the new revision of a rollout ever holds less than 100%.
            let rules = Self::promoted_rules(&stable);
            if !stable.is_empty() && !self.is_live(&rules) {
                if ensure_serving(self.ctx, draft, &stable) {
                    return Decision::default();
                }
                let state = RolloutState {
                    phase: Phase::Promoted,
                    step: i32::try_from(self.spec.steps.len()).unwrap_or(i32::MAX),
                    since: self.now(),
                    failed_checks: 0,
                    last_failed_at: 0,
                    stable: stable.clone(),
                    canary: stable.clone(),
                    reason: "traffic set back to 100% on the stable revision".to_owned(),
                };
                self.transition(draft, Transition::Steady, Some(rules), &state);
            } else if self.command_tag {
                self.drop_command(draft);
            }
            return Decision::default();
        }
        let state = RolloutState {
            phase: Phase::Progressing,
            step: -1,
            since: self.now(),
            failed_checks: 0,
            last_failed_at: 0,
            stable: stable.clone(),
            canary: latest.to_owned(),
            reason: String::new(),
        };
        let pin = (!stable.is_empty()).then(|| Self::promoted_rules(&stable));
        let state_only = pin.as_ref().is_some_and(|p| self.ctx.live_rules == *p);
        self.transition_as_written(
            draft,
            Transition::Start,
            pin.filter(|_| !state_only),
            &state,
        );
        Decision {
            view: Some(self.view("starting", -1, 0, &stable, latest, 0, "")),
            ..Decision::default()
        }
    }

    /// Whether traffic can go back to `stable` now: it runs; it is inactive and is activated
    /// (the actions are added to `draft`); or it cannot (none, failed, or active but not
    /// running), with why.
    fn stable_serves(&self, draft: &mut Draft, stable: &str) -> Serves {
        match self.revision(stable) {
            Some(r) if r.is_running() => Serves::Yes,
            Some(r) if !r.properties.active && !r.has_failed() => {
                ensure_serving(self.ctx, draft, stable);
                Serves::Soon
            }
            Some(r) => Serves::No(format!(
                "the stable revision {stable} does not run (runningState {})",
                r.properties.running_state.as_deref().unwrap_or("unknown")
            )),
            None => Serves::No("there is no stable revision to go back to".to_owned()),
        }
    }

    fn drop_command(&self, draft: &mut Draft) {
        let value = self
            .ctx
            .app
            .tags
            .get(COMMAND_TAG)
            .cloned()
            .unwrap_or_default();
        draft.actions.push(Action::Rollout {
            transition: Transition::DropCommand,
            step: -1,
            from: Vec::new(),
            to: None,
            reason: format!("`{value}` applies to no rollout in progress"),
            state: String::new(),
            body: json!({"tags": {COMMAND_TAG: null}}),
        });
    }

    fn promoted(&self, draft: &mut Draft, state: &RolloutState) -> Decision {
        let rules = Self::promoted_rules(&state.canary);
        if !self.is_live(&rules) && !ensure_serving(self.ctx, draft, &state.canary) {
            let again = RolloutState {
                reason: "traffic set back to 100% on the stable revision".to_owned(),
                ..state.clone()
            };
            self.transition(draft, Transition::Steady, Some(rules), &again);
        } else if self.command_tag && draft.actions.is_empty() {
            self.drop_command(draft);
        }
        Decision {
            view: Some(self.view(
                "promoted",
                state.step,
                state.since,
                &state.canary,
                &state.canary,
                state.failed_checks,
                &state.reason,
            )),
            ..Decision::default()
        }
    }

    fn rolled_back(&self, draft: &mut Draft, state: &RolloutState) -> Decision {
        let retry = self
            .command
            .as_ref()
            .is_some_and(|c| c.verb == Verb::Retry && c.canary == state.canary);
        if retry {
            let again = RolloutState {
                phase: Phase::Progressing,
                step: -1,
                since: self.now(),
                failed_checks: 0,
                last_failed_at: 0,
                reason: String::new(),
                ..state.clone()
            };
            self.transition(draft, Transition::Retry, None, &again);
            return Decision {
                view: Some(self.view("starting", -1, 0, &state.stable, &state.canary, 0, "")),
                ..Decision::default()
            };
        }
        // Traffic stays on the stable revision (put back if someone moved it).
        let rules = self.rollback_rules(&state.stable, &state.canary);
        if !self.is_live(&rules) && matches!(self.stable_serves(draft, &state.stable), Serves::Yes)
        {
            self.transition(draft, Transition::RollBack, Some(rules), state);
        } else if self.command_tag && draft.actions.is_empty() {
            self.drop_command(draft);
        }
        Decision {
            view: Some(self.view(
                "rolledBack",
                state.step,
                state.since,
                &state.stable,
                &state.canary,
                state.failed_checks,
                &state.reason,
            )),
            rolled_back: Some(state.reason.clone()),
            ..Decision::default()
        }
    }

    fn roll_back(&self, draft: &mut Draft, state: &RolloutState, reason: String) -> Decision {
        let serves = self.stable_serves(draft, &state.stable);
        let reason = match &serves {
            Serves::No(why) => format!("{reason}; {why}, so traffic stays where it is"),
            Serves::Yes | Serves::Soon => reason,
        };
        let back = RolloutState {
            phase: Phase::RolledBack,
            since: self.now(),
            reason: reason.clone(),
            ..state.clone()
        };
        match serves {
            Serves::Yes => {
                let rules = self.rollback_rules(&state.stable, &state.canary);
                self.transition(draft, Transition::RollBack, Some(rules), &back);
            }
            // Being activated (by `stable_serves`); the rollback follows its wait.
            Serves::Soon => {}
            Serves::No(_) => self.transition(draft, Transition::RollBack, None, &back),
        }
        Decision {
            view: Some(self.view(
                "rolledBack",
                state.step,
                back.since,
                &state.stable,
                &state.canary,
                state.failed_checks,
                &reason,
            )),
            rolled_back: Some(reason),
            ..Decision::default()
        }
    }

    fn promote(&self, draft: &mut Draft, state: &RolloutState, reason: String) -> Decision {
        let done = RolloutState {
            phase: Phase::Promoted,
            step: i32::try_from(self.spec.steps.len()).unwrap_or(i32::MAX),
            since: self.now(),
            reason,
            ..state.clone()
        };
        self.transition(
            draft,
            Transition::Promote,
            Some(Self::promoted_rules(&state.canary)),
            &done,
        );
        Decision {
            view: Some(self.view(
                "progressing",
                state.step,
                state.since,
                &state.stable,
                &state.canary,
                state.failed_checks,
                &done.reason,
            )),
            ..Decision::default()
        }
    }

    fn progressing(&self, draft: &mut Draft, state: &RolloutState) -> Result<Decision, Blocked> {
        let now = self.now();
        let canary_name = state.canary.as_str();
        let command = self
            .command
            .as_ref()
            .filter(|c| c.canary == state.canary)
            .map(|c| c.verb);
        if command == Some(Verb::Abort) {
            let reason = format!(
                "aborted by `aca-reconciler rollout abort` at step {}",
                self.step_text(state.step)
            );
            return Ok(self.roll_back(draft, state, reason));
        }
        let Some(canary) = self.revision(canary_name) else {
            return Err(Blocked::UnknownRevision(canary_name.to_owned()));
        };
        if canary.has_failed() {
            let why = canary
                .properties
                .provisioning_error
                .clone()
                .unwrap_or_else(|| "no details from Azure".to_owned());
            return Ok(self.roll_back(
                draft,
                state,
                format!("the new revision failed to start: {why}"),
            ));
        }
        let deadline = state
            .since
            .saturating_add(ms(self.spec.progress_deadline_ms));
        if !canary.is_running() && state.step >= 0 && canary.properties.active {
            // It holds a share of the users' traffic and does not serve it.
            let how = canary
                .properties
                .running_state
                .clone()
                .unwrap_or_else(|| "unknown".to_owned());
            let health = canary
                .properties
                .health_state
                .clone()
                .unwrap_or_else(|| "unknown".to_owned());
            return Ok(self.roll_back(
                draft,
                state,
                format!(
                    "the new revision stopped running at step {} (runningState {how}, healthState {health})",
                    self.step_text(state.step)
                ),
            ));
        }
        if !canary.is_running() {
            if now >= deadline {
                return Ok(self.roll_back(
                    draft,
                    state,
                    format!(
                        "the new revision did not run within progressDeadline {}",
                        human(self.spec.progress_deadline_ms)
                    ),
                ));
            }
            ensure_serving(self.ctx, draft, canary_name);
            return Ok(Decision {
                view: Some(self.view(
                    "starting",
                    state.step,
                    state.since,
                    &state.stable,
                    canary_name,
                    state.failed_checks,
                    "waiting for the new revision to run",
                )),
                ..Decision::default()
            });
        }
        let stable = (!state.stable.is_empty())
            .then(|| self.revision(&state.stable))
            .flatten();
        match stable {
            // Deactivated by someone: brought back first (it is where traffic returns to).
            Some(r) if !r.properties.active && !r.has_failed() => {
                ensure_serving(self.ctx, draft, &state.stable);
                return Ok(Decision {
                    view: Some(self.view_of(
                        state,
                        "progressing",
                        "activating the stable revision",
                    )),
                    ..Decision::default()
                });
            }
            Some(r) if r.is_running() => {}
            other => {
                // Nothing runs to go back to (none, failed, or not running: often the very
                // reason for the new image): the new revision, which runs, takes all traffic.
                let why = match other {
                    None => "no stable revision to go back to".to_owned(),
                    Some(r) => format!(
                        "the stable revision {} does not run (runningState {})",
                        r.name,
                        r.properties.running_state.as_deref().unwrap_or("unknown")
                    ),
                };
                return Ok(self.promote(
                    draft,
                    state,
                    format!("{why}: the new revision, which runs, takes all traffic"),
                ));
            }
        }
        let steps = &self.spec.steps;
        let gate = self.spec.gate();
        let at_gate = usize::try_from(state.step.saturating_add(1)).ok() == Some(gate);
        if command == Some(Verb::Promote) && at_gate && gate < steps.len() {
            // Approval of a switch that has its own watch (blue/green's post-switch window):
            // switch now, and let that window's checks switch back if they fail.
            return Ok(self.advance(draft, state, gate));
        }
        if command == Some(Verb::Promote) {
            return Ok(self.promote(
                draft,
                state,
                format!(
                    "promoted by `aca-reconciler rollout promote` at step {}",
                    self.step_text(state.step)
                ),
            ));
        }
        if same_images(canary, self.revision(&state.stable)) {
            return Ok(self.promote(
                draft,
                state,
                "the new revision runs the stable revision's images (a change of replica bounds or settings): no steps".to_owned(),
            ));
        }
        if state.step < 0 {
            return Ok(self.advance(draft, state, 0));
        }
        let i = usize::try_from(state.step)
            .unwrap_or(0)
            .min(steps.len().saturating_sub(1));
        let step = steps.get(i).copied().unwrap_or(Step {
            weight: 100,
            pause_ms: 0,
        });
        // The traffic of the step, put back if someone moved it.
        let rules = self.step_rules(&state.stable, canary_name, step.weight);
        if !self.is_live(&rules) {
            self.transition(draft, Transition::Step, Some(rules), state);
            return Ok(Decision {
                view: Some(self.view_of(state, "progressing", "")),
                ..Decision::default()
            });
        }
        let pause_over = now >= state.since.saturating_add(ms(step.pause_ms));
        let (passed, hold_reason, next_check) = match &self.spec.analysis {
            None => (true, String::new(), None),
            Some(a) => {
                let lag = if a.reads_metrics() {
                    self.input.metrics_lag_ms
                } else {
                    0
                };
                let fresh = self.input.check.filter(|c| {
                    c.canary == state.canary && c.step == state.step && c.at >= state.since
                });
                let due = match fresh {
                    Some(c) => c.at.saturating_add(ms(a.interval_ms)),
                    // None in memory (a restart, a new leader): not before an interval after
                    // the last failure counted, so no window is judged twice.
                    None => state
                        .since
                        .saturating_add(ms(lag))
                        .max(state.last_failed_at)
                        .saturating_add(ms(a.interval_ms)),
                };
                if let Some(c) = fresh {
                    let failed = c.verdict == Verdict::Fail
                        || (c.verdict == Verdict::NoData && a.no_data == NoData::Fail);
                    if failed && c.at > state.last_failed_at {
                        let n = state.failed_checks.saturating_add(1);
                        let reason = format!("{}; checks {n}/{}", c.reason, a.max_failed_checks);
                        if n >= a.max_failed_checks {
                            let counted = RolloutState {
                                failed_checks: n,
                                last_failed_at: c.at,
                                ..state.clone()
                            };
                            return Ok(self.roll_back(draft, &counted, reason));
                        }
                        let counted = RolloutState {
                            failed_checks: n,
                            last_failed_at: c.at,
                            reason,
                            ..state.clone()
                        };
                        self.transition(draft, Transition::FailedCheck, None, &counted);
                        return Ok(Decision {
                            view: Some(self.view_of(&counted, "progressing", &counted.reason)),
                            ..Decision::default()
                        });
                    }
                }
                if now >= due {
                    let mut end = now.saturating_sub(ms(lag));
                    if a.interval_ms % 60_000 == 0 {
                        // Azure Monitor keeps `Requests` per minute: whole minutes, so that
                        // consecutive checks read consecutive buckets, none twice.
                        end -= end.rem_euclid(60_000);
                    }
                    let start = state
                        .since
                        .max(end.saturating_sub(ms(a.interval_ms)))
                        .max(state.last_failed_at.saturating_sub(ms(lag)))
                        .min(end);
                    draft.actions.push(Action::Analyze {
                        canary: state.canary.clone(),
                        stable: state.stable.clone(),
                        step: state.step,
                        weight: step.weight,
                        window: (start, end),
                        probe_base: self.probe_base(canary),
                    });
                    return Ok(Decision {
                        view: Some(self.view_of(state, "progressing", "")),
                        ..Decision::default()
                    });
                }
                match fresh {
                    Some(c) if c.verdict == Verdict::Pass => (true, String::new(), Some(due)),
                    Some(c) => (
                        false,
                        format!("{} ({})", c.reason, c.verdict.as_str()),
                        Some(due),
                    ),
                    None => (false, String::new(), Some(due)),
                }
            }
        };
        if pause_over && passed {
            let next = i + 1;
            if next == gate && self.spec.approval == Approval::Manual {
                return Ok(Decision {
                    view: Some(self.view_of(
                        state,
                        "waitingForApproval",
                        "waiting for approval: run `aca-reconciler rollout promote APP`",
                    )),
                    awaiting_approval: true,
                    ..Decision::default()
                });
            }
            return Ok(self.advance(draft, state, next));
        }
        let held_without_data = self.spec.analysis.as_ref().is_some_and(|a| {
            a.no_data == NoData::Hold
                && self.input.check.is_some_and(|c| {
                    c.canary == state.canary
                        && matches!(c.verdict, Verdict::NoData | Verdict::Error)
                })
        });
        let awaiting_person = self.spec.approval == Approval::Manual && pause_over && i + 1 == gate;
        if now >= deadline && !held_without_data && !awaiting_person {
            let why = if hold_reason.is_empty() {
                String::new()
            } else {
                format!("; last: {hold_reason}")
            };
            return Ok(self.roll_back(
                draft,
                state,
                format!(
                    "no progress within progressDeadline {} at step {}{why}",
                    human(self.spec.progress_deadline_ms),
                    self.step_text(state.step)
                ),
            ));
        }
        let pause_end = state.since.saturating_add(ms(step.pause_ms));
        let wake = [
            (!pause_over).then_some(pause_end),
            next_check,
            (now < deadline).then_some(deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        let reason = if held_without_data && now >= deadline {
            format!("held past progressDeadline for want of data: {hold_reason}")
        } else if !pause_over {
            let last = if hold_reason.is_empty() {
                String::new()
            } else {
                format!("; last check: {hold_reason}")
            };
            format!("held until {}{last}", crate::time::format_arm(pause_end))
        } else if hold_reason.is_empty() {
            "waiting for the step's first check".to_owned()
        } else {
            hold_reason
        };
        // A person's command (`rollout promote|abort`) is looked for this often meanwhile.
        let wake = wake.map_or(now + crate::plan::APPROVAL_LOOK_MS, |w| {
            w.min(now + crate::plan::APPROVAL_LOOK_MS)
        });
        Ok(Decision {
            view: Some(self.view_of(state, "progressing", &reason)),
            hold_until: Some(wake.max(now + 1)),
            ..Decision::default()
        })
    }

    fn view_of(&self, state: &RolloutState, phase: &str, reason: &str) -> RolloutView {
        self.view(
            phase,
            state.step,
            state.since,
            &state.stable,
            &state.canary,
            state.failed_checks,
            reason,
        )
    }

    fn step_text(&self, step: i32) -> String {
        let n = self.spec.steps.len();
        match usize::try_from(step)
            .ok()
            .and_then(|i| self.spec.steps.get(i))
        {
            Some(s) => format!("{}/{n} ({}%)", step + 1, s.weight),
            None => format!("0/{n} (starting)"),
        }
    }

    /// To step `next` (or promote after the last).
    fn advance(&self, draft: &mut Draft, state: &RolloutState, next: usize) -> Decision {
        let Some(step) = self.spec.steps.get(next) else {
            return self.promote(
                draft,
                state,
                format!("every step passed ({} steps)", self.spec.steps.len()),
            );
        };
        let moved = RolloutState {
            step: i32::try_from(next).unwrap_or(i32::MAX),
            since: self.now(),
            reason: String::new(),
            ..state.clone()
        };
        let rules = self.step_rules(&state.stable, &state.canary, step.weight);
        self.transition(draft, Transition::Step, Some(rules), &moved);
        Decision {
            view: Some(self.view_of(state, "progressing", "")),
            ..Decision::default()
        }
    }

    /// Where the probes go: the new revision's own URL, or (blue/green) its preview label's.
    fn probe_base(&self, canary: &Revision) -> Option<String> {
        if let Some(label) = self.label() {
            let app = &self.ctx.app.name;
            let host = self
                .ctx
                .app
                .properties
                .configuration
                .ingress
                .as_ref()
                .and_then(|i| i.fqdn.as_deref())?;
            let domain = host.strip_prefix(&format!("{app}."))?;
            return Some(format!("https://{app}---{label}.{domain}"));
        }
        canary
            .properties
            .fqdn
            .as_deref()
            .map(|f| format!("https://{f}"))
    }
}

/// Whether traffic can go back to the stable revision.
enum Serves {
    /// It runs.
    Yes,
    /// It is being activated.
    Soon,
    /// It cannot, and why.
    No(String),
}

/// Activates `name` and waits for it to run, if it does not run now: whether anything was
/// added (then the transition waits for the next plan).
fn ensure_serving(ctx: &Ctx<'_>, draft: &mut Draft, name: &str) -> bool {
    match ctx.by_name.get(name) {
        Some(r) if !r.properties.active => {
            draft.actions.push(Action::Activate {
                revision: name.to_owned(),
            });
            draft.actions.push(Action::WaitUntilRunning {
                revision: name.to_owned(),
            });
            draft.activated.insert(name.to_owned());
            true
        }
        Some(r) if !r.is_running() && !r.has_failed() => {
            draft.actions.push(Action::WaitUntilRunning {
                revision: name.to_owned(),
            });
            true
        }
        _ => false,
    }
}

/// Whether two revisions run the same images.
fn same_images(a: &Revision, b: Option<&Revision>) -> bool {
    let images = |r: &Revision| -> BTreeSet<(String, Option<String>)> {
        r.properties
            .template
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect()
    };
    b.is_some_and(|b| {
        let (x, y) = (images(a), images(b));
        !x.is_empty() && x == y
    })
}

/// Adds `extra`'s members to `body` (objects merged, the rest replaced).
fn merge(body: &mut Value, extra: Value) {
    match (body, extra) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                match into.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        into.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn ms(v: u64) -> Millis {
    Millis::try_from(v).unwrap_or(Millis::MAX / 4)
}

fn human(v: u64) -> String {
    crate::duration::Human(std::time::Duration::from_millis(v)).to_string()
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;
    use crate::arm::models::ContainerApp;
    use crate::plan::{LiveApp, Outcome, plan_app_with};
    use crate::rollout::{AnalysisSpec, Counts, Probe};
    use crate::spec::{AppKey, AppSpec, ImageRef, RevisionMode, Source};

    const S: &str = "ca-x--stable";
    const C: &str = "ca-x--canary";
    const T0: Millis = 1_780_000_000_000;

    fn analysis() -> AnalysisSpec {
        AnalysisSpec {
            interval_ms: 10_000,
            max_failed_checks: 2,
            no_data: NoData::Hold,
            min_requests: 50,
            success_rate_min: Some(99.0),
            max_drop_vs_stable: None,
            probes: vec![Probe {
                path: "/health".into(),
                expect_status: 200,
            }],
        }
    }

    fn rollout(strategy: Strategy, approval: Approval) -> RolloutSpec {
        let steps = match strategy {
            Strategy::Canary => vec![
                Step {
                    weight: 10,
                    pause_ms: 30_000,
                },
                Step {
                    weight: 50,
                    pause_ms: 30_000,
                },
            ],
            Strategy::BlueGreen => vec![
                Step {
                    weight: 0,
                    pause_ms: 0,
                },
                Step {
                    weight: 100,
                    pause_ms: 20_000,
                },
            ],
        };
        RolloutSpec {
            strategy,
            steps,
            approval,
            analysis: Some(analysis()),
            progress_deadline_ms: 300_000,
            preview_label: "preview".into(),
        }
    }

    fn spec(image: &str, r: RolloutSpec) -> AppSpec {
        let images = crate::spec::Images::from([(
            "app".to_owned(),
            ImageRef {
                full: image.to_owned(),
                ..crate::spec::validate::parse_image(image).unwrap_or_else(|e| panic!("{e}"))
            },
        )]);
        AppSpec {
            key: AppKey::new("00000000-0000-0000-0000-000000000000", "rg", "ca-x"),
            source: Source {
                file: "x.yaml".into(),
                pos: crate::spec::Pos::START,
            },
            suspend: false,
            revision_mode: Some(RevisionMode::Multiple),
            images,
            replicas: None,
            traffic: None,
            keep_active: None,
            restart_generation: None,
            rollout: Some(r),
        }
    }

    /// The app with `latest` its latest (and ready) revision, running `image`, traffic as given
    /// and tags as given.
    fn app(
        latest: &str,
        image: &str,
        traffic: serde_json::Value,
        tags: serde_json::Value,
    ) -> ContainerApp {
        ContainerApp::from_value(json!({
            "name": "ca-x",
            "tags": tags,
            "properties": {
                "provisioningState": "Succeeded",
                "latestRevisionName": latest,
                "latestReadyRevisionName": latest,
                "configuration": {"activeRevisionsMode": "Multiple", "ingress": {"fqdn": "ca-x.env.uksouth.azurecontainerapps.io", "traffic": traffic}},
                "template": {"containers": [{"name": "app", "image": image}]}
            }
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn revision(name: &str, image: &str, running: bool) -> Revision {
        serde_json::from_value(json!({"name": name, "properties": {
            "active": true, "runningState": if running { "Running" } else { "Activating" },
            "provisioningState": if running { "Provisioned" } else { "Provisioning" },
            "healthState": "Healthy",
            "createdTime": "2026-12-01T00:00:00Z",
            "fqdn": format!("{name}.env.uksouth.azurecontainerapps.io"),
            "template": {"containers": [{"name": "app", "image": image}]}
        }}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn state(step: i32, since: Millis, failed: u32) -> RolloutState {
        RolloutState {
            phase: Phase::Progressing,
            step,
            since,
            failed_checks: failed,
            last_failed_at: 0,
            stable: S.into(),
            canary: C.into(),
            reason: String::new(),
        }
    }

    fn tags(state: &RolloutState) -> serde_json::Value {
        json!({STATE_TAG: state.encode()})
    }

    fn split(stable: i64, canary: i64) -> serde_json::Value {
        json!([{"revisionName": S, "weight": stable}, {"revisionName": C, "weight": canary}])
    }

    const OLD: &str = "cr.azurecr.io/app:v1";
    const NEW: &str = "cr.azurecr.io/app:v2";

    fn check(step: i32, at: Millis, verdict: Verdict) -> Check {
        Check {
            at,
            canary: C.into(),
            step,
            window: (at - 10_000, at),
            stable: Some(Counts {
                requests: 900,
                errors: 0,
            }),
            canary_counts: Some(Counts {
                requests: 100,
                errors: if verdict == Verdict::Fail { 20 } else { 0 },
            }),
            probes: Vec::new(),
            verdict,
            reason: format!(
                "success rate {}% over 100 requests",
                if verdict == Verdict::Fail { 80 } else { 100 }
            ),
        }
    }

    fn plan(
        spec: &AppSpec,
        app: &ContainerApp,
        revisions: &[Revision],
        now: Millis,
        check: Option<&Check>,
    ) -> crate::plan::AppPlan {
        plan_app_with(
            spec,
            LiveApp {
                app,
                revisions: Some(revisions),
            },
            now,
            &Input {
                check,
                metrics_lag_ms: 5_000,
            },
        )
    }

    fn only_rollout(
        p: &crate::plan::AppPlan,
    ) -> (Transition, Option<Vec<Rule>>, RolloutState, Value) {
        match p.actions.as_slice() {
            [
                Action::Rollout {
                    transition,
                    to,
                    state,
                    body,
                    ..
                },
            ] => (
                *transition,
                to.clone(),
                RolloutState::decode(state).unwrap_or_else(|| panic!("{state}")),
                body.clone(),
            ),
            other => panic!(
                "expected one rollout transition, got {other:#?} ({:?})",
                p.outcome
            ),
        }
    }

    fn rules(pairs: &[(&str, i64)]) -> Vec<Rule> {
        let mut v: Vec<Rule> = pairs
            .iter()
            .map(|(r, w)| Rule {
                revision: Some((*r).to_owned()),
                label: None,
                weight: *w,
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_new_image_pins_the_stable_revision_by_name_in_the_template_patch() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let live = app(
            S,
            OLD,
            json!([{"latestRevision": true, "weight": 100}]),
            json!({}),
        );
        let p = plan(&spec, &live, &[revision(S, OLD, true)], T0, None);
        let Some(Action::UpdateTemplate { body, revision, .. }) = p.actions.first() else {
            panic!("{:#?}", p.actions);
        };
        assert_eq!(
            body.pointer("/properties/configuration/ingress/traffic"),
            Some(&json!([{"revisionName": S, "weight": 100}])),
            "a latestRevision rule would hand the new revision all traffic once ready"
        );
        let st = body
            .pointer(&format!("/tags/{STATE_TAG}"))
            .and_then(Value::as_str)
            .and_then(RolloutState::decode)
            .unwrap_or_else(|| panic!("{body}"));
        assert_eq!((st.step, st.stable.as_str(), &st.canary), (-1, S, revision));
        assert_eq!(p.rollout.map(|v| v.phase).as_deref(), Some("starting"));
    }

    #[test]
    fn a_rollout_switches_a_single_mode_app_to_multiple_in_the_same_patch() {
        let mut spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        spec.revision_mode = None;
        let live = ContainerApp::from_value(json!({
            "name": "ca-x",
            "properties": {
                "provisioningState": "Succeeded",
                "latestRevisionName": S, "latestReadyRevisionName": S,
                "configuration": {"activeRevisionsMode": "Single", "ingress": {"traffic": [{"latestRevision": true, "weight": 100}]}},
                "template": {"containers": [{"name": "app", "image": OLD}]}
            }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let p = plan(&spec, &live, &[revision(S, OLD, true)], T0, None);
        let Some(Action::UpdateTemplate { body, .. }) = p.actions.first() else {
            panic!("{:#?}", p.actions);
        };
        assert_eq!(
            body.pointer("/properties/configuration/activeRevisionsMode"),
            Some(&json!("Multiple"))
        );
        assert!(
            body.pointer("/properties/configuration/ingress/traffic")
                .is_some()
        );
    }

    #[test]
    fn a_running_new_revision_gets_the_first_step() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let live = app(
            C,
            NEW,
            json!([{"revisionName": S, "weight": 100}]),
            tags(&state(-1, T0, 0)),
        );
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let (t, to, st, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 3_000, None));
        assert_eq!(t, Transition::Step);
        assert_eq!(to, Some(rules(&[(S, 90), (C, 10)])));
        assert_eq!((st.step, st.since), (0, T0 + 3_000));
        // Not running yet: wait for it, no traffic.
        let starting = [revision(S, OLD, true), revision(C, NEW, false)];
        let p = plan(&spec, &live, &starting, T0 + 1_000, None);
        assert!(
            matches!(p.actions.as_slice(), [Action::WaitUntilRunning { revision }] if revision == C),
            "{:#?}",
            p.actions
        );
    }

    #[test]
    fn a_held_step_waits_for_its_first_check_then_takes_it() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let live = app(C, NEW, split(90, 10), tags(&state(0, T0, 0)));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        // First check: after the lag (5 s) and one interval (10 s).
        let p = plan(&spec, &live, &revs, T0 + 14_000, None);
        assert_eq!(p.outcome, Outcome::Progressing { until: T0 + 15_000 });
        assert!(p.actions.is_empty());
        let p = plan(&spec, &live, &revs, T0 + 15_000, None);
        match p.actions.as_slice() {
            [
                Action::Analyze {
                    canary,
                    window,
                    weight,
                    probe_base,
                    ..
                },
            ] => {
                assert_eq!((canary.as_str(), *weight), (C, 10));
                assert_eq!(
                    *window,
                    (T0, T0 + 10_000),
                    "the newest lag is skipped, never before the step"
                );
                assert_eq!(
                    probe_base.as_deref(),
                    Some("https://ca-x--canary.env.uksouth.azurecontainerapps.io")
                );
            }
            other => panic!("{other:#?}"),
        }
    }

    #[test]
    fn failed_checks_are_counted_once_then_roll_back_with_the_numbers() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let live = app(C, NEW, split(90, 10), tags(&state(0, T0, 0)));
        let bad = check(0, T0 + 15_000, Verdict::Fail);
        let (t, to, st, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 15_000, Some(&bad)));
        assert_eq!(
            (t, to, st.failed_checks),
            (Transition::FailedCheck, None, 1)
        );
        // The count landed: the same check is not counted again.
        let live = app(C, NEW, split(90, 10), tags(&st));
        let p = plan(&spec, &live, &revs, T0 + 16_000, Some(&bad));
        assert!(p.actions.is_empty(), "{:#?}", p.actions);
        assert_eq!(p.outcome, Outcome::Progressing { until: T0 + 25_000 });
        // The second failure rolls back: all traffic to the stable revision, in one PATCH.
        let worse = check(0, T0 + 25_000, Verdict::Fail);
        let p = plan(&spec, &live, &revs, T0 + 25_000, Some(&worse));
        let (t, to, st, body) = only_rollout(&p);
        assert_eq!(t, Transition::RollBack);
        assert_eq!(to, Some(rules(&[(S, 100)])));
        assert_eq!(st.phase, Phase::RolledBack);
        assert!(
            st.reason.contains("success rate 80%") && st.reason.contains("checks 2/2"),
            "{}",
            st.reason
        );
        assert!(
            body.pointer("/properties/configuration/ingress/traffic")
                .is_some()
                && body.get("tags").is_some()
        );
        // Rolled back: reported, not tried again.
        let live = app(
            C,
            NEW,
            json!([{"revisionName": S, "weight": 100}]),
            tags(&st),
        );
        let p = plan(&spec, &live, &revs, T0 + 600_000, None);
        assert!(p.actions.is_empty(), "{:#?}", p.actions);
        assert!(
            matches!(&p.outcome, Outcome::RolledBack { reason } if reason.contains("checks 2/2"))
        );
    }

    #[test]
    fn retry_runs_a_rolled_back_revision_again_and_removes_the_command() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let back = RolloutState {
            phase: Phase::RolledBack,
            reason: "bad".into(),
            ..state(0, T0, 2)
        };
        let cmd = Command {
            verb: Verb::Retry,
            canary: C.into(),
            at: T0,
        };
        let live = app(
            C,
            NEW,
            json!([{"revisionName": S, "weight": 100}]),
            json!({STATE_TAG: back.encode(), COMMAND_TAG: cmd.encode()}),
        );
        let (t, _, st, body) = only_rollout(&plan(&spec, &live, &revs, T0 + 60_000, None));
        assert_eq!(
            (t, st.phase, st.step, st.failed_checks),
            (Transition::Retry, Phase::Progressing, -1, 0)
        );
        assert_eq!(
            body.pointer(&format!("/tags/{COMMAND_TAG}")),
            Some(&Value::Null)
        );
    }

    #[test]
    fn passing_checks_walk_every_step_then_promote() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let live = app(C, NEW, split(90, 10), tags(&state(0, T0, 0)));
        // The pause (30 s) is not over: a passing check does not advance.
        let good = check(0, T0 + 25_000, Verdict::Pass);
        let p = plan(&spec, &live, &revs, T0 + 25_000, Some(&good));
        assert_eq!(p.outcome, Outcome::Progressing { until: T0 + 30_000 });
        // Over, and the latest check passed: the next step.
        let good = check(0, T0 + 30_000, Verdict::Pass);
        let (t, to, st, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 30_000, Some(&good)));
        assert_eq!(
            (t, to, st.step),
            (Transition::Step, Some(rules(&[(S, 50), (C, 50)])), 1)
        );
        // After the last step: promoted, by name.
        let live = app(C, NEW, split(50, 50), tags(&state(1, T0 + 30_000, 0)));
        let good = check(1, T0 + 60_000, Verdict::Pass);
        let (t, to, st, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 60_000, Some(&good)));
        assert_eq!(
            (t, to, st.phase),
            (
                Transition::Promote,
                Some(rules(&[(C, 100)])),
                Phase::Promoted
            )
        );
        // Promoted is at rest.
        let live = app(
            C,
            NEW,
            json!([{"revisionName": C, "weight": 100}]),
            tags(&st),
        );
        let p = plan(&spec, &live, &revs, T0 + 61_000, None);
        assert_eq!((p.outcome, p.actions.len()), (Outcome::InSync, 0));
    }

    #[test]
    fn retention_keeps_both_revisions_during_a_rollout_and_frees_the_old_one_once_promoted() {
        let mut spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        spec.keep_active = Some(1);
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let live = app(C, NEW, split(90, 10), tags(&state(0, T0, 0)));
        let p = plan(&spec, &live, &revs, T0 + 1_000, None);
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::Deactivate { .. })),
            "{:#?}",
            p.actions
        );
        let back = RolloutState {
            phase: Phase::RolledBack,
            ..state(0, T0, 2)
        };
        let live = app(
            C,
            NEW,
            json!([{"revisionName": S, "weight": 100}]),
            tags(&back),
        );
        let p = plan(&spec, &live, &revs, T0 + 1_000, None);
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::Deactivate { .. })),
            "{:#?}",
            p.actions
        );
        let done = RolloutState {
            phase: Phase::Promoted,
            ..state(2, T0, 0)
        };
        let live = app(
            C,
            NEW,
            json!([{"revisionName": C, "weight": 100}]),
            tags(&done),
        );
        let p = plan(&spec, &live, &revs, T0 + 1_000, None);
        assert!(
            matches!(p.actions.as_slice(), [Action::Deactivate { revision, .. }] if revision == S),
            "{:#?}",
            p.actions
        );
    }

    #[test]
    fn manual_approval_waits_before_full_traffic_and_promote_carries_it() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Manual));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let live = app(C, NEW, split(50, 50), tags(&state(1, T0, 0)));
        let good = check(1, T0 + 40_000, Verdict::Pass);
        let p = plan(&spec, &live, &revs, T0 + 40_000, Some(&good));
        assert!(p.actions.is_empty());
        assert_eq!(
            p.rollout.map(|v| v.phase).as_deref(),
            Some("waitingForApproval")
        );
        let cmd = Command {
            verb: Verb::Promote,
            canary: C.into(),
            at: T0,
        };
        let live = app(
            C,
            NEW,
            split(50, 50),
            json!({STATE_TAG: state(1, T0, 0).encode(), COMMAND_TAG: cmd.encode()}),
        );
        let (t, to, _, body) = only_rollout(&plan(&spec, &live, &revs, T0 + 41_000, None));
        assert_eq!((t, to), (Transition::Promote, Some(rules(&[(C, 100)]))));
        assert_eq!(
            body.pointer(&format!("/tags/{COMMAND_TAG}")),
            Some(&Value::Null)
        );
        // A command for another rollout is dropped, never applied.
        let stale = Command {
            verb: Verb::Promote,
            canary: "ca-x--older".into(),
            at: T0,
        };
        let live = app(
            C,
            NEW,
            split(50, 50),
            json!({STATE_TAG: state(1, T0, 0).encode(), COMMAND_TAG: stale.encode()}),
        );
        let p = plan(
            &spec,
            &live,
            &revs,
            T0 + 5_000,
            Some(&check(1, T0 + 5_000, Verdict::Pass)),
        );
        assert!(p.actions.iter().all(|a| !matches!(
            a,
            Action::Rollout {
                transition: Transition::Promote,
                ..
            }
        )));
    }

    #[test]
    fn abort_rolls_back_now() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let cmd = Command {
            verb: Verb::Abort,
            canary: C.into(),
            at: T0,
        };
        let live = app(
            C,
            NEW,
            split(90, 10),
            json!({STATE_TAG: state(0, T0, 0).encode(), COMMAND_TAG: cmd.encode()}),
        );
        let (t, to, st, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 1_000, None));
        assert_eq!(
            (t, to, st.phase),
            (
                Transition::RollBack,
                Some(rules(&[(S, 100)])),
                Phase::RolledBack
            )
        );
        assert!(st.reason.contains("rollout abort"), "{}", st.reason);
    }

    #[test]
    fn same_images_as_stable_skip_the_steps() {
        let spec = spec(OLD, rollout(Strategy::Canary, Approval::Auto));
        let revs = [revision(S, OLD, true), revision(C, OLD, true)];
        let live = app(
            C,
            OLD,
            json!([{"revisionName": S, "weight": 100}]),
            tags(&state(-1, T0, 0)),
        );
        let (t, to, _, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 1_000, None));
        assert_eq!((t, to), (Transition::Promote, Some(rules(&[(C, 100)]))));
    }

    #[test]
    fn a_newer_image_mid_rollout_goes_back_to_stable_and_starts_over() {
        let spec = spec(
            "cr.azurecr.io/app:v3",
            rollout(Strategy::Canary, Approval::Auto),
        );
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let live = app(C, NEW, split(50, 50), tags(&state(1, T0, 0)));
        let p = plan(&spec, &live, &revs, T0 + 1_000, None);
        let Some(Action::UpdateTemplate { body, revision, .. }) = p.actions.first() else {
            panic!("{:#?}", p.actions);
        };
        assert_eq!(
            body.pointer("/properties/configuration/ingress/traffic"),
            Some(&json!([{"revisionName": S, "weight": 100}]))
        );
        let st = body
            .pointer(&format!("/tags/{STATE_TAG}"))
            .and_then(Value::as_str)
            .and_then(RolloutState::decode)
            .unwrap_or_else(|| panic!("{body}"));
        assert_eq!((st.stable.as_str(), &st.canary, st.step), (S, revision, -1));
    }

    #[test]
    fn blue_green_previews_on_its_label_then_switches_and_can_switch_back() {
        let spec = spec(NEW, rollout(Strategy::BlueGreen, Approval::Auto));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let live = app(
            C,
            NEW,
            json!([{"revisionName": S, "weight": 100}]),
            tags(&state(-1, T0, 0)),
        );
        let (_, to, _, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 1_000, None));
        let preview = vec![
            Rule {
                revision: Some(C.into()),
                label: Some("preview".into()),
                weight: 0,
            },
            Rule {
                revision: Some(S.into()),
                label: None,
                weight: 100,
            },
        ];
        let mut sorted = preview.clone();
        sorted.sort();
        assert_eq!(to, Some(sorted));
        let on_preview = json!([{"revisionName": S, "weight": 100}, {"revisionName": C, "weight": 0, "label": "preview"}]);
        let live = app(C, NEW, on_preview, tags(&state(0, T0, 0)));
        // On the label's URL (the success-rate gate applies only if the preview got requests).
        let p = plan(&spec, &live, &revs, T0 + 15_000, None);
        match p.actions.as_slice() {
            [Action::Analyze { probe_base, .. }] => assert_eq!(
                probe_base.as_deref(),
                Some("https://ca-x---preview.env.uksouth.azurecontainerapps.io")
            ),
            other => panic!("{other:#?}"),
        }
        let good = check(0, T0 + 15_000, Verdict::Pass);
        let (t, to, st, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 15_000, Some(&good)));
        assert_eq!((t, st.step), (Transition::Step, 1));
        assert!(to.is_some_and(|r| {
            r.iter()
                .any(|r| r.revision.as_deref() == Some(C) && r.weight == 100)
        }));
        // A failure after the switch switches back, preview label kept for inspection.
        let switched = json!([{"revisionName": C, "weight": 100, "label": "preview"}]);
        let live = app(C, NEW, switched, tags(&state(1, T0 + 15_000, 1)));
        let bad = check(1, T0 + 30_000, Verdict::Fail);
        let (t, to, _, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 30_000, Some(&bad)));
        let mut back = preview;
        back.sort();
        assert_eq!((t, to), (Transition::RollBack, Some(back)));
    }

    #[test]
    fn no_data_holds_past_the_deadline_but_fail_counts_it() {
        let mut r = rollout(Strategy::Canary, Approval::Auto);
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let live = app(C, NEW, split(90, 10), tags(&state(0, T0, 0)));
        let late = T0 + 400_000;
        let quiet = check(0, late, Verdict::NoData);
        let p = plan(&spec(NEW, r.clone()), &live, &revs, late, Some(&quiet));
        assert!(p.actions.is_empty(), "{:#?}", p.actions);
        assert!(matches!(p.outcome, Outcome::Progressing { .. }));
        assert!(p.rollout.is_some_and(|v| v.reason.contains("want of data")));
        if let Some(a) = r.analysis.as_mut() {
            a.no_data = NoData::Fail;
        }
        let (t, _, st, _) = only_rollout(&plan(
            &spec(NEW, r),
            &live,
            &revs,
            T0 + 15_000,
            Some(&check(0, T0 + 15_000, Verdict::NoData)),
        ));
        assert_eq!((t, st.failed_checks), (Transition::FailedCheck, 1));
    }

    #[test]
    fn a_step_with_no_progress_past_the_deadline_rolls_back() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let live = app(C, NEW, split(90, 10), tags(&state(0, T0, 0)));
        let err = check(0, T0 + 299_000, Verdict::Error);
        // Error is not data: with noData hold it holds too ...
        let p = plan(&spec, &live, &revs, T0 + 300_000, Some(&err));
        assert!(
            matches!(p.outcome, Outcome::Progressing { .. }),
            "{:?}",
            p.outcome
        );
        // ... but a step whose checks fail, still short of maxFailedChecks, rolls back once
        // the deadline passes.
        let failing = check(0, T0 + 299_000, Verdict::Fail);
        let st = RolloutState {
            last_failed_at: T0 + 299_000,
            failed_checks: 1,
            ..state(0, T0, 1)
        };
        let live = app(C, NEW, split(90, 10), tags(&st));
        let (t, _, st, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 300_000, Some(&failing)));
        assert_eq!(t, Transition::RollBack);
        assert!(st.reason.contains("progressDeadline"), "{}", st.reason);
    }

    fn degraded(name: &str, image: &str) -> Revision {
        serde_json::from_value(json!({"name": name, "properties": {
            "active": true, "runningState": "Degraded", "healthState": "Unhealthy",
            "provisioningState": "Provisioned", "createdTime": "2026-12-01T00:00:00Z",
            "template": {"containers": [{"name": "app", "image": image}]}
        }}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_suspended_app_does_not_spin_on_a_due_check() {
        let mut spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        spec.suspend = true;
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let live = app(C, NEW, split(90, 10), tags(&state(0, T0, 0)));
        let p = plan(&spec, &live, &revs, T0 + 60_000, None);
        assert_eq!(p.outcome, Outcome::Suspended, "{:#?}", p.actions);
    }

    #[test]
    fn a_stable_revision_that_does_not_run_never_wedges_the_rollout() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let live = app(C, NEW, split(90, 10), tags(&state(0, T0, 0)));
        let revs = [degraded(S, OLD), revision(C, NEW, true)];
        let (t, to, _, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 1_000, None));
        assert_eq!((t, to), (Transition::Promote, Some(rules(&[(C, 100)]))));
        // An abort with nothing to go back to: rolled back in the tag, traffic left as it is.
        let cmd = Command {
            verb: Verb::Abort,
            canary: C.into(),
            at: T0,
        };
        let live = app(
            C,
            NEW,
            split(90, 10),
            json!({STATE_TAG: state(0, T0, 0).encode(), COMMAND_TAG: cmd.encode()}),
        );
        let (t, to, st, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 1_000, None));
        assert_eq!(
            (t, to, st.phase),
            (Transition::RollBack, None, Phase::RolledBack)
        );
        assert!(
            st.reason.contains("traffic stays where it is"),
            "{}",
            st.reason
        );
        // A new image does not pin a stable revision that does not run.
        let live = app(
            S,
            OLD,
            json!([{"latestRevision": true, "weight": 100}]),
            json!({}),
        );
        let p = plan(&spec, &live, &[degraded(S, OLD)], T0, None);
        let Some(Action::UpdateTemplate { body, .. }) = p.actions.first() else {
            panic!("{:#?}", p.actions);
        };
        assert!(
            body.pointer("/properties/configuration/ingress/traffic")
                .is_none(),
            "{body}"
        );
    }

    #[test]
    fn a_new_revision_that_stops_running_mid_step_is_rolled_back() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let live = app(C, NEW, split(90, 10), tags(&state(0, T0, 0)));
        let revs = [revision(S, OLD, true), degraded(C, NEW)];
        let (t, to, st, _) = only_rollout(&plan(&spec, &live, &revs, T0 + 1_000, None));
        assert_eq!((t, to), (Transition::RollBack, Some(rules(&[(S, 100)]))));
        assert!(st.reason.contains("stopped running"), "{}", st.reason);
    }

    #[test]
    fn waiting_for_approval_is_not_a_lack_of_progress() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Manual));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        // At the gate, an hour late, one check failed (below maxFailedChecks): it waits.
        let st = RolloutState {
            failed_checks: 1,
            last_failed_at: T0 + 3_590_000,
            ..state(1, T0, 1)
        };
        let live = app(C, NEW, split(50, 50), tags(&st));
        let bad = check(1, T0 + 3_590_000, Verdict::Fail);
        let p = plan(&spec, &live, &revs, T0 + 3_595_000, Some(&bad));
        assert!(p.actions.is_empty(), "{:#?}", p.actions);
        assert!(
            matches!(p.outcome, Outcome::Progressing { .. }),
            "{:?}",
            p.outcome
        );
    }

    #[test]
    fn without_the_last_check_in_memory_no_window_is_judged_twice() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let st = RolloutState {
            failed_checks: 1,
            last_failed_at: T0 + 20_000,
            ..state(0, T0, 1)
        };
        let live = app(C, NEW, split(90, 10), tags(&st));
        // A restarted controller: no check in memory. Not due before the last failure + interval.
        let p = plan(&spec, &live, &revs, T0 + 25_000, None);
        assert_eq!(p.outcome, Outcome::Progressing { until: T0 + 30_000 });
        let p = plan(&spec, &live, &revs, T0 + 30_000, None);
        match p.actions.as_slice() {
            [Action::Analyze { window, .. }] => assert_eq!(
                window.0,
                T0 + 20_000 - 5_000,
                "starts where the failed one ended"
            ),
            other => panic!("{other:#?}"),
        }
    }

    #[test]
    fn approving_a_blue_green_switch_keeps_its_post_switch_watch() {
        let spec = spec(NEW, rollout(Strategy::BlueGreen, Approval::Manual));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let cmd = Command {
            verb: Verb::Promote,
            canary: C.into(),
            at: T0,
        };
        let preview = json!([{"revisionName": S, "weight": 100}, {"revisionName": C, "weight": 0, "label": "preview"}]);
        let live = app(
            C,
            NEW,
            preview,
            json!({STATE_TAG: state(0, T0, 0).encode(), COMMAND_TAG: cmd.encode()}),
        );
        let (t, _, st, body) = only_rollout(&plan(&spec, &live, &revs, T0 + 1_000, None));
        assert_eq!(
            (t, st.step, st.phase),
            (Transition::Step, 1, Phase::Progressing)
        );
        assert_eq!(
            body.pointer(&format!("/tags/{COMMAND_TAG}")),
            Some(&Value::Null)
        );
    }

    #[test]
    fn a_split_without_state_or_a_foreign_revision_never_promotes_the_unverified_one() {
        let spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        // The tags were wiped mid-walk at 50/50: the latest revision is not taken as stable.
        let live = app(C, NEW, split(50, 50), json!({}));
        let (t, _, st, _) = only_rollout(&plan(&spec, &live, &revs, T0, None));
        assert_eq!(
            (t, st.stable.as_str(), st.canary.as_str()),
            (Transition::Start, S, C)
        );
        // Someone created a revision mid-walk: the walk's stable revision stays the stable one.
        let other = "ca-x--other";
        let revs = [
            revision(S, OLD, true),
            revision(C, NEW, true),
            revision(other, NEW, true),
        ];
        let live = app(other, NEW, split(50, 50), tags(&state(1, T0, 0)));
        let (t, to, st, _) = only_rollout(&plan(&spec, &live, &revs, T0, None));
        assert_eq!(
            (t, st.stable.as_str(), st.canary.as_str()),
            (Transition::Start, S, other)
        );
        assert_eq!(to, Some(rules(&[(S, 100)])));
    }

    #[test]
    fn dropping_rollout_mid_walk_is_blocked_with_what_to_do() {
        let mut spec = spec(NEW, rollout(Strategy::Canary, Approval::Auto));
        spec.rollout = None;
        let revs = [revision(S, OLD, true), revision(C, NEW, true)];
        let live = app(C, NEW, split(90, 10), tags(&state(0, T0, 0)));
        let p = plan(&spec, &live, &revs, T0, None);
        assert!(
            matches!(
                &p.outcome,
                Outcome::Blocked {
                    reason: Blocked::RolloutDropped { .. }
                }
            ),
            "{:?}",
            p.outcome
        );
    }
}

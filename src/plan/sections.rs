//! The sections of a plan, one function per step of the order of safety (see [`super`]). Each
//! reads the [`Ctx`] and appends to the [`Draft`]; a section that finds the spec unreachable
//! returns [`Blocked`], and the plan stops there with nothing done.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::tags::OwnedTags;
use super::{Action, Blocked, Change, Rule, needs_revisions, revision_suffix};
use crate::arm::models::{ContainerApp, Revision};
use crate::spec::{AppSpec, RevisionMode, TrafficSpec, TrafficTo};
use crate::time::Millis;

/// What every section reads: the spec, and what Azure shows of the app.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The desired state of the app.
    pub spec: &'a AppSpec,
    /// The app as read.
    pub app: &'a ContainerApp,
    /// Its revisions (empty when the spec needs none: then they were not read).
    pub revisions: &'a [Revision],
    /// The revisions by name.
    pub by_name: BTreeMap<&'a str, &'a Revision>,
    /// The controller's tags on the app.
    pub tags: OwnedTags,
    /// Whether the app is to run in Multiple mode (the spec's, else the live mode).
    pub multiple: bool,
    /// The live traffic rules, sorted.
    pub live_rules: Vec<Rule>,
    /// Now (stamps the pending-restart tag).
    pub now: Millis,
}

impl<'a> Ctx<'a> {
    /// The context of one plan.
    ///
    /// # Errors
    /// The spec needs the app's revisions and they were not read.
    pub fn new(
        spec: &'a AppSpec,
        observed: super::LiveApp<'a>,
        now: Millis,
    ) -> Result<Self, Blocked> {
        if needs_revisions(spec) && observed.revisions.is_none() {
            return Err(Blocked::Internal(
                "the app's revisions were not read".to_owned(),
            ));
        }
        let app = observed.app;
        let revisions = observed.revisions.unwrap_or(&[]);
        let multiple = match spec.revision_mode {
            Some(RevisionMode::Multiple) => true,
            Some(RevisionMode::Single) => false,
            // A rollout shares traffic between two revisions: Multiple mode, set for the user.
            None => app.is_multiple_mode() || spec.rollout.is_some(),
        };
        let mut live_rules: Vec<Rule> = app.traffic().iter().map(Rule::from_arm).collect();
        live_rules.sort();
        Ok(Self {
            spec,
            app,
            revisions,
            by_name: revisions.iter().map(|r| (r.name.as_str(), r)).collect(),
            tags: OwnedTags::of(app),
            multiple,
            live_rules,
            now,
        })
    }

    fn image_of(&self, container: &str) -> Option<&str> {
        self.app
            .properties
            .template
            .containers
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| c.image.as_deref())
    }

    /// The restart generation this plan applies, if the spec raised it above the recorded one.
    fn raised_generation(&self) -> Option<u64> {
        self.spec
            .restart_generation
            .filter(|g| *g > self.tags.restart_generation)
    }

    /// When the restarts of `generation` began, if the app's pending tag says they did.
    fn restart_since(&self, generation: u64) -> Option<Millis> {
        self.tags
            .unfinished_restart()
            .filter(|(g, _)| *g == generation)
            .map(|(_, since)| since)
    }
}

/// The plan so far, and what it will have changed once carried out.
#[derive(Debug, Default)]
pub struct Draft {
    /// The actions, in order.
    pub actions: Vec<Action>,
    /// The revision the template's PATCH creates.
    pub new_revision: Option<String>,
    /// Revisions the traffic section activates.
    pub activated: BTreeSet<String>,
    /// The traffic rules once the traffic section is done (the live ones if it changes none).
    pub end_rules: Option<Vec<Rule>>,
    /// When the restarts of the raised generation count from: the pending tag's time, or the
    /// time this plan marks.
    pub restart_since: Option<Millis>,
}

/// 0. A raised `restartGeneration` is marked as begun, before anything else: every revision
///    created from then on (the template's, below) runs with the rotated secrets already, and
///    a restart interrupted by a crash is finished, not repeated, by the next pass.
pub fn restart_mark(ctx: &Ctx<'_>, draft: &mut Draft) -> Result<(), Blocked> {
    let Some(generation) = ctx.raised_generation() else {
        return Ok(());
    };
    if let Some(since) = ctx.restart_since(generation) {
        draft.restart_since = Some(since);
        return Ok(());
    }
    // The next whole second: ARM's times have whole seconds, so every replica and revision
    // that exists now shows a time before it, and the executor restarts only once it has
    // passed (assumes the controller's clock within a second of Azure's, by NTP).
    let since_ms = (ctx.now.div_euclid(1_000) + 1) * 1_000;
    let since = crate::time::format_arm(since_ms);
    draft.actions.push(Action::MarkRestartPending {
        generation,
        body: OwnedTags::mark_pending_body(generation, &since),
        since,
    });
    draft.restart_since = Some(since_ms);
    Ok(())
}

/// 1 and 2. The revision mode, and one template PATCH for every image and replica change (the
///    mode rides in it when there is one), then the wait for the revision it creates.
pub fn mode_and_template(ctx: &Ctx<'_>, draft: &mut Draft) -> Result<(), Blocked> {
    let app = ctx.app;
    let spec = ctx.spec;
    let live_multiple = app.is_multiple_mode();
    let mode_change = (ctx.multiple != live_multiple).then(|| {
        (
            app.properties
                .configuration
                .active_revisions_mode
                .clone()
                .unwrap_or_else(|| "Single".to_owned()),
            if ctx.multiple { "Multiple" } else { "Single" }.to_owned(),
        )
    });
    if spec.traffic.is_some() && !ctx.multiple {
        return Err(Blocked::NeedsMultipleMode);
    }
    let mut changes = Vec::new();
    for (container, image) in &spec.images {
        match ctx.image_of(container) {
            None => {
                let have: Vec<&str> = app
                    .properties
                    .template
                    .containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(Blocked::UnknownContainer {
                    container: container.clone(),
                    have: have.join(", "),
                });
            }
            Some(live) if live != image.full => changes.push(Change::Image {
                container: container.clone(),
                from: live.to_owned(),
                to: image.full.clone(),
            }),
            Some(_) => {}
        }
    }
    if let Some(r) = spec.replicas {
        let scale = &app.properties.template.scale;
        let live = (scale.min_replicas, scale.max_replicas);
        if live != (Some(i64::from(r.min)), Some(i64::from(r.max))) {
            changes.push(Change::Replicas {
                from: live,
                to: (r.min, r.max),
            });
        }
    }
    if changes.is_empty() {
        if let Some((from, to)) = mode_change {
            draft.actions.push(Action::SetRevisionMode { from, to });
        }
        return Ok(());
    }
    if let Some((from, to)) = &mode_change {
        changes.insert(
            0,
            Change::RevisionMode {
                from: from.clone(),
                to: to.clone(),
            },
        );
    }
    let traffic = latest_only_traffic(ctx)?;
    if let Some(to) = &traffic {
        changes.push(Change::Traffic {
            from: ctx.live_rules.clone(),
            to: to.clone(),
        });
    }
    let base = app
        .properties
        .latest_revision_name
        .clone()
        .unwrap_or_default();
    let taken: BTreeSet<String> = ctx.revisions.iter().map(|r| r.name.clone()).collect();
    let suffix = revision_suffix(&spec.key.name, &base, &changes, &taken);
    let revision = format!("{}--{suffix}", spec.key.name);
    // Built by moving values, not through `json!`, which would copy every container again.
    let mut template = serde_json::Map::new();
    template.insert("revisionSuffix".to_owned(), Value::String(suffix));
    if changes.iter().any(|c| matches!(c, Change::Image { .. })) {
        template.insert("containers".to_owned(), Value::Array(containers(ctx)?));
    }
    if let Some(r) = spec.replicas {
        // `scale` is an object: merge patch keeps its rules and other fields.
        template.insert(
            "scale".to_owned(),
            json!({"minReplicas": r.min, "maxReplicas": r.max}),
        );
    }
    let mut properties = serde_json::Map::new();
    properties.insert("template".to_owned(), Value::Object(template));
    let mut configuration = serde_json::Map::new();
    if let Some((_, to)) = mode_change {
        configuration.insert("activeRevisionsMode".to_owned(), Value::String(to));
    }
    if let Some(rules) = &traffic {
        configuration.insert(
            "ingress".to_owned(),
            json!({"traffic": rules.iter().map(Rule::to_arm).collect::<Vec<_>>()}),
        );
        draft.end_rules = Some(rules.clone());
    }
    if !configuration.is_empty() {
        properties.insert("configuration".to_owned(), Value::Object(configuration));
    }
    let mut body = serde_json::Map::new();
    body.insert("properties".to_owned(), Value::Object(properties));
    draft.actions.push(Action::UpdateTemplate {
        changes,
        revision: revision.clone(),
        body: Value::Object(body),
    });
    draft.actions.push(Action::WaitUntilRunning {
        revision: revision.clone(),
    });
    draft.new_revision = Some(revision);
    Ok(())
}

/// The traffic rules a template's PATCH carries: the spec's, when they differ from the live
/// ones and only `latestRevision` takes weight. Azure moves `latestRevision` traffic to a new
/// revision only once it is ready ("traffic doesn't switch to the latest revision until it's
/// ready", docs/azure-notes.md 4.3), so the rule needs no wait before it, and the change costs
/// one write instead of two. A rule that names a revision or a label stays a step of its own
/// ([`traffic`]): that revision must be active and running first.
///
/// # Errors
/// As [`desired_rules`].
pub fn latest_only_traffic(ctx: &Ctx<'_>) -> Result<Option<Vec<Rule>>, Blocked> {
    Ok(desired_rules(ctx)?.filter(|desired| {
        *desired != ctx.live_rules
            && desired
                .iter()
                .all(|r| r.revision.is_none() && r.label.is_none())
    }))
}

/// Every container as read, only `image` changed where the spec names one. Arrays are
/// replaced whole by a merge patch (N§4.1), so the whole list is sent.
fn containers(ctx: &Ctx<'_>) -> Result<Vec<Value>, Blocked> {
    let live = ctx.app.raw.template_containers();
    if live.is_empty() {
        // Never send `containers: []`: that would remove every container.
        return Err(Blocked::Internal(
            "the app's containers could not be read back from Azure's JSON".to_owned(),
        ));
    }
    Ok(live
        .into_iter()
        .map(|mut c| {
            let image = c
                .get("name")
                .and_then(Value::as_str)
                .and_then(|name| ctx.spec.images.get(name));
            if let (Some(image), Some(fields)) = (image, c.as_object_mut()) {
                fields.insert("image".to_owned(), Value::String(image.full.clone()));
            }
            c
        })
        .collect())
}

/// A spec without `rollout` and without `traffic` on an app whose rollout is mid-walk: traffic
/// would stay split, and the stale state would mislead; the operator decides.
pub fn abandoned_rollout(ctx: &Ctx<'_>) -> Result<(), Blocked> {
    if ctx.spec.traffic.is_some() {
        return Ok(());
    }
    let walking = crate::rollout::RolloutState::of(ctx.app)
        .filter(|s| s.phase == crate::rollout::Phase::Progressing)
        .filter(|_| ctx.live_rules.len() > 1);
    match walking {
        Some(s) => Err(Blocked::RolloutDropped {
            canary: s.canary,
            step: s.step.saturating_add(1),
        }),
        None => Ok(()),
    }
}

/// A revision that Azure is still starting (a previous write's) is waited for; one that failed
/// stops the plan, with traffic where it is.
pub fn wait_for_latest(ctx: &Ctx<'_>, draft: &mut Draft) -> Result<(), Blocked> {
    let props = &ctx.app.properties;
    if draft.new_revision.is_some() {
        return Ok(());
    }
    let Some(latest) = props
        .latest_revision_name
        .as_deref()
        .filter(|l| Some(*l) != props.latest_ready_revision_name.as_deref())
    else {
        return Ok(());
    };
    match ctx.by_name.get(latest) {
        Some(r) if r.has_failed() => Err(Blocked::LatestFailed {
            revision: latest.to_owned(),
            why: r
                .properties
                .provisioning_error
                .clone()
                .unwrap_or_else(|| "no details from Azure".to_owned()),
        }),
        Some(r) if r.is_running() => Ok(()),
        _ => {
            draft.actions.push(Action::WaitUntilRunning {
                revision: latest.to_owned(),
            });
            Ok(())
        }
    }
}

/// The traffic rules the spec asks for, sorted, or `None` when the spec does not own traffic.
/// The one place that decides weights: a rollout step will put its weights here.
///
/// # Errors
/// A label the spec names is on no revision.
pub fn desired_rules(ctx: &Ctx<'_>) -> Result<Option<Vec<Rule>>, Blocked> {
    let Some(traffic) = &ctx.spec.traffic else {
        return Ok(None);
    };
    let mut desired: Vec<Rule> = match traffic {
        TrafficSpec::Pin(revision) => vec![Rule {
            revision: Some(revision.clone()),
            label: None,
            weight: 100,
        }],
        TrafficSpec::Split(targets) => {
            let mut out = Vec::new();
            for t in targets {
                let weight = i64::from(t.weight);
                out.push(match &t.to {
                    TrafficTo::Latest => Rule {
                        revision: None,
                        label: None,
                        weight,
                    },
                    TrafficTo::Revision(r) => Rule {
                        revision: Some(r.clone()),
                        label: None,
                        weight,
                    },
                    TrafficTo::Label(l) => {
                        let live = ctx
                            .live_rules
                            .iter()
                            .find(|r| r.label.as_deref() == Some(l.as_str()))
                            .ok_or_else(|| Blocked::UnknownLabel(l.clone()))?;
                        Rule {
                            revision: live.revision.clone(),
                            label: Some(l.clone()),
                            weight,
                        }
                    }
                });
            }
            out
        }
    };
    desired.sort();
    Ok(Some(desired))
}

/// 3 and 4. Every revision that is to carry weight is activated and running first, whether or
///    not the list changes (a revision deactivated out of band while it carries traffic is an
///    outage to repair); then the whole traffic list.
pub fn traffic(ctx: &Ctx<'_>, draft: &mut Draft) -> Result<(), Blocked> {
    let Some(desired) = desired_rules(ctx)? else {
        return Ok(());
    };
    for rule in &desired {
        let Some(name) = rule.revision.as_deref().filter(|_| rule.weight > 0) else {
            continue;
        };
        match ctx.by_name.get(name) {
            None => return Err(Blocked::UnknownRevision(name.to_owned())),
            Some(r) if r.has_failed() => {
                return Err(Blocked::FailedRevision {
                    revision: name.to_owned(),
                    why: r
                        .properties
                        .provisioning_error
                        .clone()
                        .unwrap_or_else(|| "no details".to_owned()),
                });
            }
            Some(r) if !r.properties.active => {
                draft.actions.push(Action::Activate {
                    revision: name.to_owned(),
                });
                draft.actions.push(Action::WaitUntilRunning {
                    revision: name.to_owned(),
                });
                draft.activated.insert(name.to_owned());
            }
            Some(r) if !r.is_running() => draft.actions.push(Action::WaitUntilRunning {
                revision: name.to_owned(),
            }),
            Some(_) => {}
        }
    }
    // Already carried by the template's PATCH ([`latest_only_traffic`]).
    if desired != ctx.live_rules && draft.end_rules.as_ref() != Some(&desired) {
        let body = json!({"properties": {"configuration": {"ingress": {"traffic": desired.iter().map(Rule::to_arm).collect::<Vec<_>>()}}}});
        draft.actions.push(Action::SetTraffic {
            from: ctx.live_rules.clone(),
            to: desired.clone(),
            body,
        });
        draft.end_rules = Some(desired);
    }
    Ok(())
}

/// 5. Deactivate surplus revisions, oldest first, never the latest, one with traffic (now or
///    after the traffic step), or one the spec names. Multiple mode only: Single mode keeps one
///    active by itself.
pub fn retention(ctx: &Ctx<'_>, draft: &mut Draft) {
    let (Some(keep), true) = (ctx.spec.keep_active, ctx.multiple) else {
        return;
    };
    let props = &ctx.app.properties;
    let mut protected: BTreeSet<&str> = BTreeSet::new();
    protected.extend(props.latest_revision_name.as_deref());
    protected.extend(props.latest_ready_revision_name.as_deref());
    protected.extend(draft.new_revision.as_deref());
    protected.extend(ctx.spec.traffic.iter().flat_map(|t| t.named_revisions()));
    // A rollout's two revisions: the stable one traffic returns to, and the new one (kept
    // active at 0% for inspection after a rollback).
    let rollout = crate::rollout::RolloutState::of(ctx.app).filter(|_| ctx.spec.rollout.is_some());
    if let Some(state) = &rollout {
        // Once promoted, the old stable revision is retention's like any other.
        if state.phase != crate::rollout::Phase::Promoted {
            protected.insert(state.stable.as_str());
        }
        protected.insert(state.canary.as_str());
    }
    for r in ctx.revisions {
        if r.properties.traffic_weight.unwrap_or(0) > 0 {
            protected.insert(&r.name);
        }
    }
    let end_rules = draft.end_rules.as_ref().unwrap_or(&ctx.live_rules);
    for rule in end_rules {
        if let Some(n) = rule.revision.as_deref().filter(|_| rule.weight > 0) {
            protected.insert(n);
        }
    }
    let mut active: Vec<&Revision> = ctx
        .revisions
        .iter()
        .filter(|r| r.properties.active || draft.activated.contains(&r.name))
        .collect();
    let total = active.len() + usize::from(draft.new_revision.is_some());
    active.sort_by(|a, b| {
        a.properties
            .created_time
            .cmp(&b.properties.created_time)
            .then(a.name.cmp(&b.name))
    });
    let mut surplus = total.saturating_sub(keep as usize);
    let mut deactivate = Vec::new();
    for r in active {
        if surplus == 0 {
            break;
        }
        if protected.contains(r.name.as_str()) {
            continue;
        }
        deactivate.push(Action::Deactivate {
            revision: r.name.clone(),
            keep_active: keep,
        });
        surplus -= 1;
    }
    draft.actions.extend(deactivate);
}

/// 6. Restart, for a raised generation, every revision active before the restarts began (one
///    created since runs with the rotated secrets already; one whose replicas all started since
///    has restarted already), then record the generation and remove the pending tag in one
///    PATCH. A pending tag that no restart of the spec's is under way for is removed.
pub fn restarts(ctx: &Ctx<'_>, draft: &mut Draft) {
    let (Some(generation), Some(since)) = (ctx.raised_generation(), draft.restart_since) else {
        // No restart is under way for the spec: a pending tag is left over (its generation is
        // recorded, or the spec no longer asks for it, or it does not parse).
        if ctx.tags.restart_pending.is_some() {
            let value = ctx
                .app
                .tags
                .get(super::RESTART_PENDING_TAG)
                .cloned()
                .unwrap_or_default();
            draft.actions.push(Action::ClearRestartPending {
                value,
                body: OwnedTags::clear_pending_body(),
            });
        }
        return;
    };
    let deactivated: BTreeSet<String> = draft
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Deactivate { revision, .. } => Some(revision.clone()),
            _ => None,
        })
        .collect();
    let restarts: Vec<Action> = ctx
        .revisions
        .iter()
        .filter(|r| {
            (r.properties.active || draft.activated.contains(&r.name))
                && !deactivated.contains(&r.name)
                && !created_since(r, since)
                && !restarted_since(r, since)
        })
        .map(|r| Action::Restart {
            revision: r.name.clone(),
            generation,
        })
        .collect();
    draft.actions.extend(restarts);
    draft.actions.push(Action::RecordRestartGeneration {
        from: ctx.tags.restart_generation,
        to: generation,
        body: OwnedTags::record_body(generation),
    });
}

/// Whether the revision was created at or after `since`: it started with the secrets of then.
fn created_since(revision: &Revision, since: Millis) -> bool {
    revision
        .properties
        .created_time
        .as_deref()
        .and_then(crate::time::parse)
        .is_some_and(|t| t >= since)
}

/// Whether every replica of `revision` was created at or after `since`: then it already runs
/// as a restart at `since` would make it. Unknown or no replicas: not shown, so restart.
fn restarted_since(revision: &Revision, since: Millis) -> bool {
    revision
        .replicas_created
        .as_ref()
        .is_some_and(|created| !created.is_empty() && created.iter().all(|t| *t >= since))
}

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
//! 7. for a raised `restartGeneration`: mark the restart pending in a tag, restart the active
//!    revisions, then record the generation in the app's tag.
//!
//! The executor carries out only the first action, reads the app again and plans anew, so a
//! plan is always computed from what Azure says now. Before it returns, the planner checks its
//! own invariants ([`check_invariants`]); a plan that breaks one is refused, not executed.

pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

use crate::arm::models::{ContainerApp, Revision, TrafficWeight};
use crate::spec::{AppSpec, RevisionMode, TrafficSpec, TrafficTo};
use crate::time::Millis;

/// The Azure tag that remembers the restart generation last applied (contract section 3).
pub const RESTART_TAG: &str = "aca-reconciler-restart-generation";

/// The Azure tag written just before the restarts of a generation, `<generation>@<RFC 3339>`:
/// if the controller dies between the restarts and [`RESTART_TAG`], the next pass restarts only
/// the revisions that still run a replica created before that time.
pub const RESTART_PENDING_TAG: &str = "aca-reconciler-restart-pending";

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
    /// Record the applied generation in the app's Azure tag.
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
}

impl Action {
    /// Drops the request body (a report keeps what was done, not what was sent: the body of a
    /// template change repeats every container of the app).
    pub fn drop_body(&mut self) {
        if let Action::UpdateTemplate { body, .. }
        | Action::SetTraffic { body, .. }
        | Action::MarkRestartPending { body, .. }
        | Action::RecordRestartGeneration { body, .. } = self
        {
            *body = Value::Null;
        }
    }

    /// Whether the action writes to Azure (waiting does not).
    pub fn is_write(&self) -> bool {
        !matches!(self, Action::WaitUntilRunning { .. })
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
    fn from_arm(t: &TrafficWeight) -> Rule {
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

    fn to_arm(&self) -> Value {
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
    /// The desired state cannot be reached as written; nothing is done.
    #[serde(rename_all = "camelCase")]
    Blocked {
        /// Why, and what to change.
        reason: String,
    },
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
}

/// What the planner needs to know about the live app.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The app.
    pub app: &'a ContainerApp,
    /// Its revisions, when read (only apps whose spec needs them are read).
    pub revisions: Option<&'a [Revision]>,
}

/// Whether planning `spec` needs the app's revisions (traffic, retention or restarts do; images
/// and replicas alone do not).
pub fn needs_revisions(spec: &AppSpec) -> bool {
    spec.traffic.is_some() || spec.keep_active.is_some() || spec.restart_generation.is_some()
}

/// The restart generation recorded on the app (no tag: 0).
pub fn recorded_generation(app: &ContainerApp) -> u64 {
    app.tags
        .get(RESTART_TAG)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The restart begun but maybe not finished: the pending tag's generation and time, if it
/// names a generation above the recorded one.
pub fn pending_restart(app: &ContainerApp) -> Option<(u64, Millis)> {
    let (generation, since) = app.tags.get(RESTART_PENDING_TAG)?.split_once('@')?;
    let generation: u64 = generation.trim().parse().ok()?;
    let since = crate::time::parse(since.trim())?;
    (generation > recorded_generation(app)).then_some((generation, since))
}

/// Whether every replica of `revision` was created at or after `since`: then it already runs
/// as a restart at `since` would make it. Unknown or no replicas: not shown, so restart.
fn restarted_since(revision: &Revision, since: Millis) -> bool {
    revision
        .replicas_created
        .as_ref()
        .is_some_and(|created| !created.is_empty() && created.iter().all(|t| *t >= since))
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
        h = crate::simulator::store::splitmix(h ^ u64::from(b));
    }
    let room = 54usize.saturating_sub(app.len() + 2).clamp(2, 10);
    let mut attempt = 0u64;
    loop {
        let x = crate::simulator::store::splitmix(h ^ attempt);
        let hex = format!("{x:016x}");
        let suffix = format!("r{}", &hex[..room - 1]);
        if !taken.contains(&format!("{app}--{suffix}")) {
            return suffix;
        }
        attempt += 1;
    }
}

fn image_of(app: &ContainerApp, container: &str) -> Option<String> {
    app.properties
        .template
        .containers
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| c.image.clone())
}

/// Plans one app. `now` stamps the pending-restart tag.
pub fn plan_app(spec: &AppSpec, observed: Observed<'_>, now: Millis) -> AppPlan {
    let app = observed.app;
    let blocked = |reason: String| AppPlan {
        outcome: Outcome::Blocked { reason },
        actions: Vec::new(),
    };
    if app.is_busy() {
        return AppPlan {
            outcome: Outcome::Busy,
            actions: Vec::new(),
        };
    }
    if needs_revisions(spec) && observed.revisions.is_none() {
        return blocked("internal: the app's revisions were not read".to_owned());
    }
    let revisions = observed.revisions.unwrap_or(&[]);
    let by_name: BTreeMap<&str, &Revision> =
        revisions.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut actions = Vec::new();

    // 1. Revision mode.
    let live_multiple = app.is_multiple_mode();
    let multiple = match spec.revision_mode {
        Some(RevisionMode::Multiple) => true,
        Some(RevisionMode::Single) => false,
        None => live_multiple,
    };
    // Pushed below: alone, or folded into the template's PATCH when there is one.
    let mode_change = (multiple != live_multiple).then(|| {
        (
            app.properties
                .configuration
                .active_revisions_mode
                .clone()
                .unwrap_or_else(|| "Single".to_owned()),
            if multiple { "Multiple" } else { "Single" }.to_owned(),
        )
    });
    if spec.traffic.is_some() && !multiple {
        return blocked(
            "traffic and activeRevision need Multiple revision mode, and the app runs in Single mode; add `revisionMode: multiple` to the spec".to_owned(),
        );
    }

    // 2. Template: images and replicas, one PATCH.
    let mut changes = Vec::new();
    for (container, image) in &spec.images {
        match image_of(app, container) {
            None => {
                let names: Vec<&str> = app
                    .properties
                    .template
                    .containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return blocked(format!(
                    "spec.images names container `{container}`, which the app does not have (its containers: {}); aca-reconciler does not add containers",
                    names.join(", ")
                ));
            }
            Some(live) if live != image.full => changes.push(Change::Image {
                container: container.clone(),
                from: live,
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
    let mut new_revision = None;
    if changes.is_empty() {
        if let Some((from, to)) = mode_change {
            actions.push(Action::SetRevisionMode { from, to });
        }
    } else {
        if let Some((from, to)) = &mode_change {
            changes.insert(
                0,
                Change::RevisionMode {
                    from: from.clone(),
                    to: to.clone(),
                },
            );
        }
        let base = app
            .properties
            .latest_revision_name
            .clone()
            .unwrap_or_default();
        let taken: BTreeSet<String> = revisions.iter().map(|r| r.name.clone()).collect();
        let suffix = revision_suffix(&spec.key.name, &base, &changes, &taken);
        let revision = format!("{}--{suffix}", spec.key.name);
        // Built by moving values, not through `json!`, which would copy every container again.
        let mut template = serde_json::Map::new();
        template.insert("revisionSuffix".to_owned(), Value::String(suffix));
        if changes.iter().any(|c| matches!(c, Change::Image { .. })) {
            // Arrays are replaced whole (N§4.1): every container as read, only `image` changed.
            let live = app.raw.template_containers();
            if live.is_empty() {
                // Never send `containers: []`: that would remove every container.
                return blocked(
                    "internal: the app's containers could not be read back from Azure's JSON"
                        .to_owned(),
                );
            }
            let rebuilt: Vec<Value> = live
                .into_iter()
                .map(|mut c| {
                    let image = c
                        .get("name")
                        .and_then(Value::as_str)
                        .and_then(|name| spec.images.get(name));
                    if let (Some(image), Some(fields)) = (image, c.as_object_mut()) {
                        fields.insert("image".to_owned(), Value::String(image.full.clone()));
                    }
                    c
                })
                .collect();
            template.insert("containers".to_owned(), Value::Array(rebuilt));
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
        if let Some((_, to)) = mode_change {
            properties.insert(
                "configuration".to_owned(),
                json!({"activeRevisionsMode": to}),
            );
        }
        let mut body = serde_json::Map::new();
        body.insert("properties".to_owned(), Value::Object(properties));
        actions.push(Action::UpdateTemplate {
            changes,
            revision: revision.clone(),
            body: Value::Object(body),
        });
        actions.push(Action::WaitUntilRunning {
            revision: revision.clone(),
        });
        new_revision = Some(revision);
    }

    // A revision that Azure is still starting (a previous write's, or ours) is waited for; one
    // that failed stops the plan, with traffic where it is.
    let latest = app.properties.latest_revision_name.as_deref();
    if new_revision.is_none()
        && let Some(latest) =
            latest.filter(|l| Some(*l) != app.properties.latest_ready_revision_name.as_deref())
    {
        match by_name.get(latest) {
            Some(r) if r.has_failed() => {
                return blocked(format!(
                    "the latest revision {latest} failed to start ({}); traffic stays on the revisions that run. Fix the image or settings in the spec; the next change creates a new revision",
                    r.properties
                        .provisioning_error
                        .as_deref()
                        .unwrap_or("no details from Azure")
                ));
            }
            Some(r) if r.is_running() => {}
            _ => actions.push(Action::WaitUntilRunning {
                revision: latest.to_owned(),
            }),
        }
    }

    // 3. Traffic.
    let live_rules: Vec<Rule> = {
        let mut r: Vec<Rule> = app.traffic().iter().map(Rule::from_arm).collect();
        r.sort();
        r
    };
    let mut end_rules = live_rules.clone();
    let mut activated: BTreeSet<String> = BTreeSet::new();
    if let Some(traffic) = &spec.traffic {
        let mut desired: Vec<Rule> = match traffic {
            TrafficSpec::Pin(revision) => vec![Rule {
                revision: Some(revision.clone()),
                label: None,
                weight: 100,
            }],
            TrafficSpec::Split(targets) => {
                let mut out = Vec::new();
                for t in targets {
                    let rule = match &t.to {
                        TrafficTo::Latest => Rule {
                            revision: None,
                            label: None,
                            weight: i64::from(t.weight),
                        },
                        TrafficTo::Revision(r) => Rule {
                            revision: Some(r.clone()),
                            label: None,
                            weight: i64::from(t.weight),
                        },
                        TrafficTo::Label(l) => match live_rules
                            .iter()
                            .find(|r| r.label.as_deref() == Some(l.as_str()))
                        {
                            Some(live) => Rule {
                                revision: live.revision.clone(),
                                label: Some(l.clone()),
                                weight: i64::from(t.weight),
                            },
                            None => {
                                return blocked(format!(
                                    "traffic label `{l}` is on no revision of the app; put it on one first (or name the revision)"
                                ));
                            }
                        },
                    };
                    out.push(rule);
                }
                out
            }
        };
        desired.sort();
        // Every revision that is to carry weight must be active and running first, whether or
        // not the list changes: a revision deactivated out of band while it carries traffic
        // is an outage to repair.
        for rule in &desired {
            let Some(name) = rule.revision.as_deref().filter(|_| rule.weight > 0) else {
                continue;
            };
            match by_name.get(name) {
                None => {
                    return blocked(format!(
                        "traffic names revision `{name}`, which does not exist; list them with `az containerapp revision list --all`"
                    ));
                }
                Some(r) if r.has_failed() => {
                    return blocked(format!(
                        "traffic names revision `{name}`, which has failed ({}); it cannot take traffic",
                        r.properties
                            .provisioning_error
                            .as_deref()
                            .unwrap_or("no details")
                    ));
                }
                Some(r) if !r.properties.active => {
                    actions.push(Action::Activate {
                        revision: name.to_owned(),
                    });
                    actions.push(Action::WaitUntilRunning {
                        revision: name.to_owned(),
                    });
                    activated.insert(name.to_owned());
                }
                Some(r) if !r.is_running() => actions.push(Action::WaitUntilRunning {
                    revision: name.to_owned(),
                }),
                Some(_) => {}
            }
        }
        if desired != live_rules {
            let body = json!({"properties": {"configuration": {"ingress": {"traffic": desired.iter().map(Rule::to_arm).collect::<Vec<_>>()}}}});
            actions.push(Action::SetTraffic {
                from: live_rules.clone(),
                to: desired.clone(),
                body,
            });
            end_rules = desired;
        }
    }

    // 4. Retention (Multiple mode; Single mode keeps one active by itself).
    if let (Some(keep), true) = (spec.keep_active, multiple) {
        let latest = app.properties.latest_revision_name.as_deref();
        let latest_ready = app.properties.latest_ready_revision_name.as_deref();
        let mut protected: BTreeSet<&str> = BTreeSet::new();
        protected.extend(latest);
        protected.extend(latest_ready);
        protected.extend(new_revision.as_deref());
        protected.extend(spec.traffic.iter().flat_map(|t| t.named_revisions()));
        // Weight now (Azure's view) and after the traffic step.
        for r in revisions {
            if r.properties.traffic_weight.unwrap_or(0) > 0 {
                protected.insert(&r.name);
            }
        }
        for rule in &end_rules {
            if let Some(n) = rule.revision.as_deref().filter(|_| rule.weight > 0) {
                protected.insert(n);
            }
        }
        let mut active: Vec<&Revision> = revisions
            .iter()
            .filter(|r| r.properties.active || activated.contains(&r.name))
            .collect();
        let total = active.len() + usize::from(new_revision.is_some());
        active.sort_by(|a, b| {
            a.properties
                .created_time
                .cmp(&b.properties.created_time)
                .then(a.name.cmp(&b.name))
        });
        let mut surplus = total.saturating_sub(keep as usize);
        for r in active {
            if surplus == 0 {
                break;
            }
            if protected.contains(r.name.as_str()) {
                continue;
            }
            actions.push(Action::Deactivate {
                revision: r.name.clone(),
                keep_active: keep,
            });
            surplus -= 1;
        }
    }

    // 5. Restart for a raised generation, then record it. The pending tag goes first, so a
    //    restart interrupted after some revisions is finished, not repeated, on the next pass.
    if let Some(generation) = spec.restart_generation {
        let recorded = recorded_generation(app);
        if generation > recorded {
            let pending = pending_restart(app)
                .filter(|(g, _)| *g == generation)
                .map(|(_, since)| since);
            if pending.is_none() {
                // The next whole second: ARM's times have whole seconds, so every replica that
                // exists now shows a time before it, and the executor restarts only once it has
                // passed (assumes the controller's clock within a second of Azure's, by NTP).
                let since = crate::time::format_arm((now.div_euclid(1_000) + 1) * 1_000);
                let body = json!({"tags": {RESTART_PENDING_TAG: format!("{generation}@{since}")}});
                actions.push(Action::MarkRestartPending {
                    generation,
                    since,
                    body,
                });
            }
            let deactivated: BTreeSet<String> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::Deactivate { revision, .. } => Some(revision.clone()),
                    _ => None,
                })
                .collect();
            for r in revisions.iter().filter(|r| {
                (r.properties.active || activated.contains(&r.name))
                    && !deactivated.contains(&r.name)
                    && !pending.is_some_and(|since| restarted_since(r, since))
            }) {
                actions.push(Action::Restart {
                    revision: r.name.clone(),
                    generation,
                });
            }
            let body = json!({"tags": {RESTART_TAG: generation.to_string()}});
            actions.push(Action::RecordRestartGeneration {
                from: recorded,
                to: generation,
                body,
            });
        }
    }

    if let Err(broken) = check_invariants(spec, app, revisions, &actions) {
        return blocked(format!(
            "internal: the plan broke an invariant and was refused: {broken}"
        ));
    }
    let outcome = if actions.is_empty() {
        Outcome::InSync
    } else if spec.suspend {
        Outcome::Suspended
    } else {
        Outcome::Changes
    };
    AppPlan { outcome, actions }
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
            Action::UpdateTemplate { body, .. }
            | Action::MarkRestartPending { body, .. }
            | Action::RecordRestartGeneration { body, .. } => owned_only(body)?,
            Action::SetRevisionMode { .. } | Action::Activate { .. } | Action::Restart { .. } => {}
        }
    }
    Ok(())
}

/// A body may touch only the owned paths.
fn owned_only(body: &Value) -> Result<(), String> {
    const ALLOWED: &[&str] = &[
        "/properties/template/revisionSuffix",
        "/properties/template/containers",
        "/properties/template/scale/minReplicas",
        "/properties/template/scale/maxReplicas",
        "/properties/configuration/activeRevisionsMode",
        "/properties/configuration/ingress/traffic",
        "/tags/aca-reconciler-restart-generation",
        "/tags/aca-reconciler-restart-pending",
    ];
    for p in crate::arm::models::leaf_paths(body) {
        if p.contains("secret") {
            return Err(format!("the body touches {p}, a secret"));
        }
        if !ALLOWED.iter().any(|a| p == *a) {
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
    use crate::spec::{AppKey, Source};

    fn spec() -> AppSpec {
        AppSpec {
            key: AppKey::new("00000000-0000-0000-0000-000000000000", "rg", "ca-x"),
            source: Source {
                file: "x.yaml".into(),
                pos: crate::spec::Pos::START,
            },
            suspend: false,
            revision_mode: Some(RevisionMode::Multiple),
            images: BTreeMap::new(),
            replicas: None,
            traffic: Some(TrafficSpec::Pin("ca-x--b".into())),
            keep_active: None,
            restart_generation: None,
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
                Observed {
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
            Observed {
                app: &app(),
                revisions: Some(&revisions),
            },
            0,
        );
        assert_eq!(p.outcome, Outcome::Suspended);
        assert!(matches!(p.actions[0], Action::SetTraffic { .. }));
    }
}

//! What the controller knows about each app and each pass: served as `/status`, printed by
//! `status`, and exported as Prometheus metrics. One store, so the three always agree.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::apply::AppReport;
use crate::spec::AppKey;
use crate::state::AppState;

/// The state of one managed app.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// Which app.
    #[serde(flatten)]
    pub app: AppKey,
    /// Where its desired state is written.
    pub source: String,
    /// Where it stands ([`AppState`]).
    pub state: AppState,
    /// Its file has problems: the last good version is in force.
    pub desired_stale: bool,
    /// The last action carried out, with its time.
    pub last_action: Option<String>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Failures in a row (the backoff grows with them; a success resets it).
    pub failures: u32,
    /// When the app is reconciled next (RFC 3339).
    pub next_at: Option<String>,
    /// When it was last reconciled (RFC 3339).
    pub last_at: Option<String>,
    /// How many reconciles of it came to rest since this process started (waits on Azure in
    /// the middle of one do not count apart; a count that climbs by more than one per
    /// `--interval` means the app keeps needing work).
    pub reconciles: u64,
    /// Its rollout (spec with `rollout`): phase, step, weight, stable and new revision,
    /// failed checks, and the last check's numbers.
    /// Boxed: most apps have none, and inline it would cost every app its 360 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Box<crate::rollout::decide::RolloutView>>,
    /// The spec's replicas, `min-max` (absent: the spec leaves them to Azure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas_desired: Option<Shared>,
    /// Its rollout's `analysis.successRate.min`, percent (the dashboard draws it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate_min: Option<f64>,
    /// What the last reconcile read of it in Azure (absent until one read it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<Box<LiveView>>,
    /// Its last [`RECENT_ACTIONS`] actions, oldest first.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub recent_actions: Box<[ActionView]>,
    /// The analysis checks of its current (or last) rollout, oldest first, at most
    /// [`RECENT_CHECKS`].
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub checks: Box<[CheckPoint]>,
}

/// Actions kept per app in `/status` (the dashboard's app page).
pub const RECENT_ACTIONS: usize = 10;
/// Rollout checks kept per app in `/status` (the dashboard's plot).
pub const RECENT_CHECKS: usize = 24;
/// Revisions kept per app in `/status`: the active ones and any with traffic, newest first
/// (Azure keeps up to 100 inactive ones; 1,000 apps' worth of those would show in RSS).
pub const LIVE_REVISIONS: usize = 8;

// What `/status` keeps of each app stays for as long as the process runs, once per app: the
// fleet benchmark's RSS at rest sees each byte of it a thousand times. So it is kept compactly:
// lists and strings sized exactly (`Box<[T]>`, `Box<str>`: no spare capacity), the strings that
// many apps repeat (images, running states, `2-6`) held once ([`Shared`]), and a view read again
// unchanged is not replaced ([`Status::record`]). The JSON is the same as plain `String`s and
// `Vec`s would give.

/// A string that many apps repeat (an image, a running state, `2-6`): one copy for all of them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shared(Arc<str>);

/// The copies [`Shared`] hands out. Those no app holds any more are dropped whenever the table
/// has doubled since it was last tidied, so it stays within twice what is in use.
struct Interned {
    strings: BTreeSet<Arc<str>>,
    tidied: usize,
}

static INTERNED: Mutex<Interned> = Mutex::new(Interned {
    strings: BTreeSet::new(),
    tidied: 0,
});

impl Shared {
    /// The shared copy of `text`.
    pub fn new(text: &str) -> Self {
        // Nothing can be left half-done under this lock: a poisoned table is still sound.
        let mut table = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = table.strings.get(text) {
            return Self(Arc::clone(s));
        }
        if table.strings.len() >= 2 * table.tidied.max(64) {
            table.strings.retain(|s| Arc::strong_count(s) > 1);
            table.tidied = table.strings.len();
        }
        let s: Arc<str> = Arc::from(text);
        table.strings.insert(Arc::clone(&s));
        Self(s)
    }
}

impl std::ops::Deref for Shared {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// `items` with `item` after them, the oldest dropped to keep at most `cap`; sized exactly.
fn push_bounded<T>(items: &mut Box<[T]>, item: T, cap: usize) {
    let mut v = std::mem::take(items).into_vec();
    while !v.is_empty() && v.len() >= cap {
        v.remove(0);
    }
    v.push(item);
    *items = v.into_boxed_slice();
}

/// One action, for the dashboard: when, what, how it ended, and Azure's request id.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionView {
    /// When it was recorded (RFC 3339).
    pub at: Box<str>,
    /// What was done.
    pub description: Box<str>,
    /// `ok`, `error`, `unknown` (the answer was lost) or `conflict`.
    pub result: &'static str,
    /// Its error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<str>>,
    /// Azure's `x-ms-request-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Box<str>>,
}

/// One rollout analysis check, in numbers, for the dashboard's plot.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckPoint {
    /// When it was taken (epoch ms).
    pub at: i64,
    /// The new revision it judged.
    pub canary: Box<str>,
    /// The step (0-based).
    pub step: i32,
    /// `pass`, `fail`, `noData` or `error`.
    pub verdict: &'static str,
    /// The stable revision's success rate, percent (absent: no requests or not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_rate: Option<f64>,
    /// The new revision's success rate, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_rate: Option<f64>,
    /// The stable revision's requests in the window.
    pub stable_requests: u64,
    /// The new revision's requests in the window.
    pub canary_requests: u64,
    /// The conclusion in words.
    pub reason: Box<str>,
}

impl CheckPoint {
    fn of(c: &crate::rollout::Check) -> Self {
        Self {
            at: c.at,
            canary: c.canary.as_str().into(),
            step: c.step,
            verdict: c.verdict.as_str(),
            stable_rate: c.stable.and_then(|n| n.success_rate()),
            canary_rate: c.canary_counts.and_then(|n| n.success_rate()),
            stable_requests: c.stable.map_or(0, |n| n.requests),
            canary_requests: c.canary_counts.map_or(0, |n| n.requests),
            reason: c.reason.as_str().into(),
        }
    }
}

/// What a reconcile last read of an app in Azure.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveView {
    /// Each container's image, `container=image`, in the app's template.
    pub images: Box<[Shared]>,
    /// The template's replicas, `min-max` (`?` for a bound Azure leaves out).
    pub replicas: Shared,
    /// Running replicas over the active revisions (absent: revisions not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_replicas: Option<i64>,
    /// The traffic rules: each revision's (or the latest's, or a label's) share.
    pub traffic: Box<[TrafficShare]>,
    /// Its active revisions and any with traffic, newest first, at most [`LIVE_REVISIONS`]
    /// (empty: not read; the spec does not need them).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub revisions: Box<[RevisionView]>,
    /// Revisions read but not kept (inactive, or past [`LIVE_REVISIONS`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub revisions_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One traffic rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficShare {
    /// The revision (for a `latestRevision` rule, the latest one's name when known).
    pub revision: Box<str>,
    /// Percent.
    pub weight: i64,
    /// A `latestRevision: true` rule.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub latest: bool,
    /// Its label, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<Shared>,
    /// The revision's running state (absent: revisions not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_state: Option<Shared>,
}

/// One revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    /// `<app>--<suffix>`.
    pub name: Box<str>,
    /// Whether it is active.
    pub active: bool,
    /// `Running`, `Failed`, ... as Azure says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_state: Option<Shared>,
    /// When it was created (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<Box<str>>,
    /// Its first container's image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Shared>,
    /// Its traffic share, percent.
    pub weight: i64,
    /// Running replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
}

impl LiveView {
    /// The summary of one observation (`None`: the app was not found or not read).
    pub fn of(observed: &crate::live::Observation) -> Option<Self> {
        let crate::live::Observation::Found { app, revisions } = observed else {
            return None;
        };
        Some(Self::from_parts(app, revisions.as_deref()))
    }

    /// The summary of an app and, if read, its revisions.
    pub fn from_parts(
        app: &crate::arm::models::ContainerApp,
        revisions: Option<&[crate::arm::models::Revision]>,
    ) -> Self {
        let p = &app.properties;
        let bound = |b: Option<i64>| b.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let state_of = |name: &str| {
            revisions.and_then(|rs| {
                rs.iter()
                    .find(|r| r.name == name)
                    .and_then(|r| r.properties.running_state.as_deref())
                    .map(Shared::new)
            })
        };
        let latest = p
            .latest_ready_revision_name
            .as_deref()
            .or(p.latest_revision_name.as_deref());
        let traffic = p
            .configuration
            .ingress
            .as_ref()
            .map(|i| {
                i.traffic
                    .iter()
                    .map(|t| {
                        let revision = t
                            .revision_name
                            .as_deref()
                            .or_else(|| t.latest_revision.then_some(latest).flatten())
                            .unwrap_or_default();
                        TrafficShare {
                            running_state: state_of(revision),
                            revision: revision.into(),
                            weight: t.weight,
                            latest: t.latest_revision,
                            label: t.label.as_deref().map(Shared::new),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let all = revisions.map_or(0, <[_]>::len);
        let mut listed: Vec<&crate::arm::models::Revision> = revisions
            .unwrap_or_default()
            .iter()
            .filter(|r| r.properties.active || r.properties.traffic_weight.unwrap_or(0) > 0)
            .collect();
        // RFC 3339 in one zone sorts as text.
        listed.sort_by(|a, b| {
            b.properties
                .created_time
                .cmp(&a.properties.created_time)
                .then(b.name.cmp(&a.name))
        });
        listed.truncate(LIVE_REVISIONS);
        Self {
            images: p
                .template
                .containers
                .iter()
                .map(|c| Shared::new(&format!("{}={}", c.name, c.image.as_deref().unwrap_or("?"))))
                .collect(),
            replicas: Shared::new(&format!(
                "{}-{}",
                bound(p.template.scale.min_replicas),
                bound(p.template.scale.max_replicas)
            )),
            running_replicas: revisions.map(|rs| {
                rs.iter()
                    .filter(|r| r.properties.active)
                    .filter_map(|r| r.properties.replicas)
                    .sum()
            }),
            traffic,
            revisions_omitted: all - listed.len(),
            revisions: listed
                .into_iter()
                .map(|r| RevisionView {
                    name: r.name.as_str().into(),
                    active: r.properties.active,
                    running_state: r.properties.running_state.as_deref().map(Shared::new),
                    created: r.properties.created_time.as_deref().map(Into::into),
                    image: r
                        .properties
                        .template
                        .containers
                        .first()
                        .and_then(|c| c.image.as_deref())
                        .map(Shared::new),
                    weight: r.properties.traffic_weight.unwrap_or(0),
                    replicas: r.properties.replicas,
                })
                .collect(),
        }
    }
}

impl AppStatus {
    /// An app not reconciled yet.
    pub fn pending(app: AppKey) -> Self {
        Self {
            app,
            source: String::new(),
            state: AppState::Pending,
            desired_stale: false,
            last_action: None,
            last_error: None,
            failures: 0,
            next_at: None,
            last_at: None,
            reconciles: 0,
            rollout: None,
            replicas_desired: None,
            success_rate_min: None,
            live: None,
            recent_actions: Box::default(),
            checks: Box::default(),
        }
    }
}

/// Labels of `acar_actions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// Action kind (`updateTemplate`, ...).
    pub kind: String,
    /// `ok`, `error`, `unknown` (the answer was lost) or `conflict` (another operation held the
    /// app; planned again).
    pub result: String,
}

/// Labels with a `state`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The state.
    pub state: String,
}

/// Labels of the rollout gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// `resourceGroup/name` of the app.
    pub app: String,
    /// The phase.
    pub phase: String,
}

/// Labels with an `app`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    /// `resourceGroup/name` of the app.
    pub app: String,
}

/// The rollout phases `acar_rollout_phase` reports (1 for the app's, 0 for the others).
pub const ROLLOUT_PHASES: [&str; 5] = [
    "starting",
    "progressing",
    "waitingForApproval",
    "promoted",
    "rolledBack",
];

/// Labels with a `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The result.
    pub result: String,
}

/// The metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Passes by result.
    pub passes: Family<ResultLabels, Counter>,
    /// Pass duration.
    pub pass_seconds: Histogram,
    /// Actions by kind and result.
    pub actions: Family<ActionLabels, Counter>,
    /// Apps by state.
    pub apps: Family<StateLabels, Gauge>,
    /// Apps waiting in the queue.
    pub queue_depth: Gauge,
    /// Unix time of the last pass in which nothing failed.
    pub last_success: Gauge<f64, AtomicU64>,
    /// Problems in the desired-state files.
    pub desired_errors: Gauge,
    /// Registry tags deleted.
    pub tags_deleted: Counter,
    /// 1 while this replica may act (always, without leader election).
    pub leader: Gauge,
    /// Azure requests by route and status, and ARM's throttling headroom.
    pub arm: std::sync::Arc<crate::arm::metrics::ArmMetrics>,
    /// 1 for each app's rollout phase.
    pub rollout_phase: Family<RolloutLabels, Gauge>,
    /// Each app's rollout step (1-based; 0 while the new revision starts).
    pub rollout_step: Family<AppLabels, Gauge>,
    /// Analysis checks by result (pass, fail, noData, error).
    pub analysis_checks: Family<ResultLabels, Counter>,
    /// Notifications by target (the Notification's name) and result; the notifier counts.
    pub notifications: crate::notify::deliver::NotificationMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("acar");
        let passes = Family::<ResultLabels, Counter>::default();
        let pass_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        let actions = Family::<ActionLabels, Counter>::default();
        let apps = Family::<StateLabels, Gauge>::default();
        let queue_depth = Gauge::default();
        let last_success = Gauge::<f64, AtomicU64>::default();
        let desired_errors = Gauge::default();
        let tags_deleted = Counter::default();
        let leader = Gauge::default();
        registry.register(
            "passes",
            "Reconcile passes by result (ok, failed)",
            passes.clone(),
        );
        registry.register(
            "pass_duration_seconds",
            "Duration of reconcile passes",
            pass_seconds.clone(),
        );
        registry.register(
            "actions",
            "Actions carried out, by kind and result",
            actions.clone(),
        );
        registry.register(
            "apps",
            "Managed apps by state (pending, inSync, drifted, applying, waiting, failing, blocked, suspended, missing)",
            apps.clone(),
        );
        registry.register(
            "queue_depth",
            "Apps waiting to be reconciled",
            queue_depth.clone(),
        );
        registry.register(
            "last_successful_pass_timestamp_seconds",
            "Unix time of the last pass in which nothing failed",
            last_success.clone(),
        );
        registry.register(
            "desired_state_errors",
            "Problems in the desired-state files (their last good versions are in force)",
            desired_errors.clone(),
        );
        registry.register(
            "registry_tags_deleted",
            "Registry tags deleted by RegistryRetention",
            tags_deleted.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the lease and acts (always 1 without leader election)",
            leader.clone(),
        );
        let rollout_phase = Family::<RolloutLabels, Gauge>::default();
        let rollout_step = Family::<AppLabels, Gauge>::default();
        let analysis_checks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "rollout_phase",
            "1 for the phase each app's rollout is in (starting, progressing, waitingForApproval, promoted, rolledBack)",
            rollout_phase.clone(),
        );
        registry.register(
            "rollout_step",
            "The step each app's rollout holds (1-based; 0 while the new revision starts)",
            rollout_step.clone(),
        );
        registry.register(
            "analysis_checks",
            "Rollout analysis checks by result (pass, fail, noData, error)",
            analysis_checks.clone(),
        );
        let notifications = crate::notify::deliver::NotificationMetrics::default();
        registry.register(
            "notifications",
            "Events routed to each Notification target, by result (sent, failed, dropped, deduplicated)",
            notifications.clone(),
        );
        let arm = std::sync::Arc::new(crate::arm::metrics::ArmMetrics::default());
        arm.register(&mut registry);
        Self {
            registry,
            passes,
            pass_seconds,
            actions,
            apps,
            queue_depth,
            last_success,
            desired_errors,
            tags_deleted,
            leader,
            arm,
            rollout_phase,
            rollout_step,
            analysis_checks,
            notifications,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Everything `/status` shows.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Apps, by key (a list in JSON: a map keyed by a struct has no JSON form).
    #[serde(serialize_with = "values_only")]
    pub apps: BTreeMap<AppKey, AppStatus>,
    /// Problems in the desired-state files, as `FILE:LINE:COLUMN: message`.
    pub desired_state_errors: Vec<String>,
    /// Whether the desired state is loaded and every app has been looked at and come to rest
    /// once (in sync, or failing, blocked, ...; not still being changed).
    pub ready: bool,
    /// Passes run.
    pub passes: u64,
    /// When the last pass ended.
    pub last_pass_at: Option<String>,
    /// With leader election: `leader` or `standby` (another replica acts). Absent without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leadership: Option<&'static str>,
    /// When the desired state in force was last (re)loaded (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_loaded_at: Option<String>,
    /// The git commit of the desired-state tree, if it is in a git checkout (read from
    /// `.git/HEAD` at each load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_commit: Option<String>,
    /// The last registry retention run: when, and per repository what it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionView>,
    /// The full hash of the desired-state commit that events carry (from `--revision`, or the
    /// checkout's `.git`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_revision: Option<String>,
    /// The last [`EVENTS_KEPT`] events, oldest first.
    pub events: std::collections::VecDeque<crate::notify::Event>,
}

/// Events `/status` keeps.
pub const EVENTS_KEPT: usize = 100;

impl Status {
    /// Keeps `events` (the oldest go past [`EVENTS_KEPT`]).
    pub fn push_events(&mut self, events: &[crate::notify::Event]) {
        for e in events {
            if self.events.len() == EVENTS_KEPT {
                self.events.pop_front();
            }
            self.events.push_back(e.clone());
        }
    }
}

/// The last registry retention run, per repository.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionView {
    /// When it ended (RFC 3339).
    pub at: String,
    /// Per repository.
    pub repositories: Vec<RetentionRepo>,
    /// Its problems, one line each.
    pub errors: Vec<String>,
}

/// What one retention run did to one repository.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionRepo {
    /// Registry login server.
    pub registry: String,
    /// Repository.
    pub repository: String,
    /// Tags it deleted (planned; `errors` names any that failed).
    pub deleted: usize,
    /// Tags old enough to go that stay: in use or locked.
    pub protected: usize,
    /// Tags the deletion cap held back for a later run.
    pub held_back: usize,
    /// Tags that stay (planned, like `deleted`): the newest, the too young, the protected and
    /// the held back.
    pub kept: usize,
}

impl RetentionView {
    /// The view of one run.
    pub fn of(outcome: &crate::pass::RetentionOutcome, at: String) -> Self {
        Self {
            at,
            repositories: outcome
                .plan
                .repositories
                .iter()
                .map(|r| RetentionRepo {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                    deleted: r.delete.len(),
                    protected: r.protected.len(),
                    held_back: r.held_back,
                    kept: r.kept,
                })
                .collect(),
            errors: outcome
                .done
                .as_ref()
                .map_or_else(|| outcome.plan.errors.clone(), |d| d.errors.clone()),
        }
    }
}

/// The commit checked out in the git repository holding `dir`, as `/status` shows it:
/// `0123456789ab (main)`; `None` outside a git checkout.
pub fn git_commit(dir: &std::path::Path) -> Option<String> {
    git_head(dir).map(|h| h.display())
}

/// A checked-out commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHead {
    /// The full hash (40 hex digits; 64 in a SHA-256 repository).
    pub commit: String,
    /// The branch, unless HEAD is detached (git-sync checks out a detached worktree).
    pub branch: Option<String>,
}

impl GitHead {
    /// As `/status` shows it: `0123456789ab (main)`.
    pub fn display(&self) -> String {
        let short: String = self.commit.chars().take(12).collect();
        match &self.branch {
            Some(branch) => format!("{short} ({branch})"),
            None => short,
        }
    }
}

/// The commit checked out in the git repository holding `dir` (its `.git/HEAD`, following one
/// symbolic ref through the loose ref or `packed-refs`; a `.git` file, as in git-sync's
/// worktrees, names the real git directory); `None` outside a git checkout. Reads at most
/// four small files: no git process.
pub fn git_head(dir: &std::path::Path) -> Option<GitHead> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let git = dir
        .ancestors()
        .map(|d| d.join(".git"))
        .find(|g| g.exists())?;
    // A worktree or submodule: `.git` is a file naming the real git directory.
    let git = if git.is_file() {
        let text = std::fs::read_to_string(&git).ok()?;
        let target = text.trim().strip_prefix("gitdir:")?.trim();
        git.parent()?.join(target)
    } else {
        git
    };
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref:").map(str::trim) else {
        return is_commit(head).then(|| GitHead {
            commit: head.to_owned(),
            branch: None,
        });
    };
    // Refs of a linked worktree live in the common directory.
    let common = std::fs::read_to_string(git.join("commondir"))
        .ok()
        .map_or_else(|| git.clone(), |c| git.join(c.trim()));
    let loose = std::fs::read_to_string(common.join(reference))
        .or_else(|_| std::fs::read_to_string(git.join(reference)))
        .ok();
    let full = loose.map(|t| t.trim().to_owned()).or_else(|| {
        std::fs::read_to_string(common.join("packed-refs"))
            .ok()?
            .lines()
            .find_map(|l| {
                let (hash, name) = l.split_once(' ')?;
                (name == reference).then(|| hash.to_owned())
            })
    })?;
    let branch = reference.strip_prefix("refs/heads/").unwrap_or(reference);
    is_commit(&full).then(|| GitHead {
        commit: full,
        branch: Some(branch.to_owned()),
    })
}

/// Whether `s` is a full commit hash (SHA-1 or SHA-256), lower-case hex.
pub fn is_commit(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The commit in a `--revision` value: a bare hash, or Flux's `main@sha1:<hash>` /
/// `main/<hash>` forms; `None` when it holds none.
pub fn revision_commit(revision: &str) -> Option<String> {
    let revision = revision.trim().to_ascii_lowercase();
    revision
        .rsplit(|c: char| !c.is_ascii_hexdigit())
        .next()
        .filter(|h| is_commit(h))
        .map(str::to_owned)
}

fn values_only<S: serde::Serializer>(
    apps: &BTreeMap<AppKey, AppStatus>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(apps.values())
}

impl Status {
    /// Records one app's reconcile; `failures` is its failures in a row.
    pub fn record(
        &mut self,
        report: &AppReport,
        metrics: &Metrics,
        next_at: Option<String>,
        now: &str,
        failures: u32,
    ) {
        let entry = self
            .apps
            .entry(report.app.clone())
            .or_insert_with(|| AppStatus::pending(report.app.clone()));
        for d in &report.actions {
            let kind = serde_json::to_value(&d.action)
                .ok()
                .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
                .unwrap_or_default();
            let result = match (&d.error, d.landed) {
                (Some(_), _) => "error",
                (None, crate::arm::Landed::Unknown) => "unknown",
                (None, crate::arm::Landed::No) => "conflict",
                (None, crate::arm::Landed::Yes) => "ok",
            };
            metrics
                .actions
                .get_or_create(&ActionLabels {
                    kind,
                    result: result.to_owned(),
                })
                .inc();
            entry.last_action = Some(format!("{now} {}", d.description));
            push_bounded(
                &mut entry.recent_actions,
                ActionView {
                    at: now.into(),
                    description: d.description.as_str().into(),
                    result,
                    error: d.error.as_deref().map(Into::into),
                    request_id: d.request_id.as_deref().map(Into::into),
                },
                RECENT_ACTIONS,
            );
        }
        // Read again unchanged (most reconciles at rest): the stored view stays where it is,
        // rather than a copy of the same taking its place.
        if let Some(live) = &report.live
            && entry.live.as_ref() != Some(live)
        {
            entry.live = Some(live.clone());
        }
        for c in &report.checks {
            // A new revision's rollout starts a new plot.
            if entry.checks.last().is_some_and(|p| *p.canary != *c.canary) {
                entry.checks = Box::default();
            }
            push_bounded(&mut entry.checks, CheckPoint::of(c), RECENT_CHECKS);
            metrics
                .analysis_checks
                .get_or_create(&ResultLabels {
                    result: c.verdict.as_str().to_owned(),
                })
                .inc();
        }
        if let Some(view) = &report.rollout {
            let app = format!("{}/{}", report.app.resource_group, report.app.name);
            for phase in ROLLOUT_PHASES {
                metrics
                    .rollout_phase
                    .get_or_create(&RolloutLabels {
                        app: app.clone(),
                        phase: phase.to_owned(),
                    })
                    .set(i64::from(view.phase == phase));
            }
            metrics
                .rollout_step
                .get_or_create(&AppLabels { app })
                .set(i64::from(view.step + 1));
            entry.rollout = Some(Box::new(view.clone()));
        }
        entry.state = report.state;
        entry.failures = failures;
        entry.last_error = match report.state {
            AppState::Failing | AppState::Blocked | AppState::Missing | AppState::RolledBack => {
                report.error.as_ref().map(ToString::to_string)
            }
            _ => None,
        };
        entry.next_at = next_at;
        entry.last_at = Some(now.to_owned());
        // A reconcile that waits on Azure and resumes later is one reconcile, counted when
        // it comes to rest.
        if report.requeue.is_none() {
            entry.reconciles += 1;
        }
    }

    /// Whether every app has been looked at and has come to rest since this process started:
    /// none is pending or still being changed. `/readyz` turns 200 then (and stays so).
    pub fn first_look_done(&self) -> bool {
        self.apps.values().all(|a| {
            !matches!(
                a.state,
                AppState::Pending | AppState::Applying | AppState::Waiting
            )
        })
    }

    /// Refreshes the per-state gauges.
    pub fn export(&self, metrics: &Metrics) {
        for state in AppState::ALL {
            let n = self.apps.values().filter(|a| a.state == state).count();
            metrics
                .apps
                .get_or_create(&StateLabels {
                    state: state.as_str().to_owned(),
                })
                .set(n as i64);
        }
        metrics
            .desired_errors
            .set(self.desired_state_errors.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::ActionRecord;
    use crate::arm::models::{ContainerApp, Revision};
    use crate::plan::Action;

    #[test]
    fn an_app_status_is_small_inline() {
        // The map of apps holds each AppStatus inline, in nodes about half full: every inline
        // byte costs about two per app for the life of the process (a rollout view held
        // inline, 360 bytes that most apps leave empty, cost 0.65 MB at 1,000 apps).
        let size = std::mem::size_of::<AppStatus>();
        assert!(
            size <= 320,
            "AppStatus is {size} bytes inline; box what most apps leave empty"
        );
    }

    #[test]
    fn the_dashboards_history_is_bounded() {
        let key = AppKey::new("s", "rg", "ca");
        let mut status = Status::default();
        let metrics = Metrics::default();
        for i in 0..3 * RECENT_ACTIONS {
            let mut report = AppReport::new(key.clone(), AppState::InSync);
            report.actions.push(ActionRecord {
                description: format!("action {i}"),
                action: Action::Deactivate {
                    revision: format!("ca--r{i}"),
                    keep_active: 1,
                },
                error: None,
                request_id: Some(format!("req-{i}")),
                landed: crate::arm::Landed::Yes,
                ms: 1,
            });
            status.record(&report, &metrics, None, "2026-12-05T00:00:00Z", 0);
        }
        let app = &status.apps[&key];
        assert_eq!(app.recent_actions.len(), RECENT_ACTIONS);
        let last = format!("action {}", 3 * RECENT_ACTIONS - 1);
        assert_eq!(
            app.recent_actions.last().map(|a| &*a.description),
            Some(last.as_str())
        );
    }

    /// An app as the fleet benchmark's look after converging: one container, traffic on the
    /// latest revision, `n` revisions of which the first two are active.
    fn fleet_app(name: &str, n: usize) -> (ContainerApp, Vec<Revision>) {
        let app = serde_json::from_value(serde_json::json!({
            "id": format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/{name}"),
            "name": name,
            "properties": {
                "latestRevisionName": format!("{name}--r2"),
                "latestReadyRevisionName": format!("{name}--r2"),
                "configuration": {"ingress": {"traffic": [{"latestRevision": true, "weight": 100}]}},
                "template": {
                    "containers": [{"name": "api", "image": "crfleet.azurecr.io/fleet/api:v2.0.0"}],
                    "scale": {"minReplicas": 2, "maxReplicas": 6}
                }
            }
        }))
        .unwrap();
        let revisions = (0..n)
            .map(|i| {
                serde_json::from_value(serde_json::json!({
                    "name": format!("{name}--r{}", 2 - i as i64),
                    "properties": {
                        "active": i < 2,
                        "createdTime": format!("2026-12-0{}T05:57:11+00:00", 5 - i),
                        "runningState": if i < 2 { "Running" } else { "Stopped" },
                        "replicas": if i < 2 { 2 } else { 0 },
                        "trafficWeight": if i == 0 { 100 } else { 0 },
                        "template": {"containers": [{"name": "api", "image": format!("crfleet.azurecr.io/fleet/api:v2.0.{i}")}]}
                    }
                }))
                .unwrap()
            })
            .collect();
        (app, revisions)
    }

    #[test]
    fn the_live_view_keeps_its_json() {
        let (app, revisions) = fleet_app("ca-1", 3);
        let view = LiveView::from_parts(&app, Some(&revisions));
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            serde_json::json!({
                "images": ["api=crfleet.azurecr.io/fleet/api:v2.0.0"],
                "replicas": "2-6",
                "runningReplicas": 4,
                "traffic": [{"revision": "ca-1--r2", "weight": 100, "latest": true, "runningState": "Running"}],
                "revisions": [
                    {"name": "ca-1--r2", "active": true, "runningState": "Running", "created": "2026-12-05T05:57:11+00:00",
                     "image": "crfleet.azurecr.io/fleet/api:v2.0.0", "weight": 100, "replicas": 2},
                    {"name": "ca-1--r1", "active": true, "runningState": "Running", "created": "2026-12-04T05:57:11+00:00",
                     "image": "crfleet.azurecr.io/fleet/api:v2.0.1", "weight": 0, "replicas": 2}
                ],
                "revisionsOmitted": 1
            })
        );
    }

    #[test]
    fn what_many_apps_repeat_is_held_once_and_an_unchanged_view_stays_put() {
        let metrics = Metrics::default();
        let mut status = Status::default();
        let keys: Vec<AppKey> = (0..3)
            .map(|i| AppKey::new("s", "rg", &format!("ca-{i}")))
            .collect();
        for key in &keys {
            let (app, revisions) = fleet_app(&key.name, 2);
            let mut report = AppReport::new(key.clone(), AppState::InSync);
            report.live = Some(Box::new(LiveView::from_parts(&app, Some(&revisions))));
            status.record(&report, &metrics, None, "2026-12-05T00:00:00Z", 0);
        }
        fn live<'a>(status: &'a Status, k: &AppKey) -> &'a LiveView {
            status.apps[k].live.as_deref().unwrap()
        }
        // The image, the replicas and the running state: one copy for every app.
        let (a, b) = (live(&status, &keys[0]), live(&status, &keys[2]));
        assert!(Arc::ptr_eq(&a.images[0].0, &b.images[0].0));
        assert!(Arc::ptr_eq(&a.replicas.0, &b.replicas.0));
        let running = |v: &LiveView| v.revisions[0].running_state.clone().unwrap().0;
        assert!(Arc::ptr_eq(&running(a), &running(b)));

        // Read again, unchanged: the stored view is the one stored before, not a new copy.
        let before: *const LiveView = live(&status, &keys[1]);
        let (app, revisions) = fleet_app(&keys[1].name, 2);
        let mut report = AppReport::new(keys[1].clone(), AppState::InSync);
        report.live = Some(Box::new(LiveView::from_parts(&app, Some(&revisions))));
        status.record(&report, &metrics, None, "2026-12-05T00:00:05Z", 0);
        assert!(std::ptr::eq(before, live(&status, &keys[1])));
        // Changed: replaced.
        let mut app = app;
        app.properties.template.scale.max_replicas = Some(9);
        report.live = Some(Box::new(LiveView::from_parts(&app, Some(&revisions))));
        status.record(&report, &metrics, None, "2026-12-05T00:00:10Z", 0);
        assert_eq!(&*live(&status, &keys[1]).replicas, "2-9");
    }

    #[test]
    fn strings_no_app_holds_any_more_are_forgotten() {
        let unique = |i: usize| format!("forgotten-{}-{i}", std::process::id());
        for i in 0..1_000 {
            drop(Shared::new(&unique(i)));
        }
        let table = INTERNED.lock().unwrap();
        let left = (0..1_000)
            .filter(|i| table.strings.contains(unique(*i).as_str()))
            .count();
        // Tidied whenever the table doubles: what is left is what came after the last tidy.
        assert!(
            left < 600,
            "{left} of 1,000 dropped strings are still interned"
        );
    }

    #[test]
    fn the_commit_of_a_checkout_a_worktree_and_packed_refs() {
        let root = std::env::temp_dir().join(format!("acar-git-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let repo = root.join("repo");
        std::fs::create_dir_all(repo.join(".git/refs/heads")).unwrap_or_default();
        std::fs::create_dir_all(repo.join("desired/prod")).unwrap_or_default();
        let write = |p: std::path::PathBuf, t: &str| std::fs::write(p, t).unwrap_or_default();
        write(repo.join(".git/HEAD"), "ref: refs/heads/main\n");
        write(
            repo.join(".git/refs/heads/main"),
            "0123456789abcdef0123456789abcdef01234567\n",
        );
        assert_eq!(
            git_commit(&repo.join("desired/prod")).as_deref(),
            Some("0123456789ab (main)")
        );
        // Packed: no loose ref.
        let _ = std::fs::remove_file(repo.join(".git/refs/heads/main"));
        write(
            repo.join(".git/packed-refs"),
            "# pack-refs with: peeled\nfedcba9876543210fedcba9876543210fedcba98 refs/heads/main\n",
        );
        assert_eq!(git_commit(&repo).as_deref(), Some("fedcba987654 (main)"));
        // A linked worktree: `.git` is a file; HEAD in its git dir, refs in the common one.
        let wt = root.join("wt");
        let wt_git = repo.join(".git/worktrees/wt");
        std::fs::create_dir_all(&wt).unwrap_or_default();
        std::fs::create_dir_all(&wt_git).unwrap_or_default();
        write(wt.join(".git"), &format!("gitdir: {}\n", wt_git.display()));
        write(wt_git.join("HEAD"), "ref: refs/heads/main\n");
        write(wt_git.join("commondir"), "../..\n");
        assert_eq!(git_commit(&wt).as_deref(), Some("fedcba987654 (main)"));
        // Outside any checkout (the temp dir's ancestors have no .git, presumably): absent.
        let bare = root.join("plain");
        std::fs::create_dir_all(&bare).unwrap_or_default();
        if !std::path::Path::new("/tmp/.git").exists() && !std::path::Path::new("/.git").exists() {
            assert_eq!(git_commit(&bare), None);
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

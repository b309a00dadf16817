//! What the controller knows about each app and each pass: served as `/status`, printed by
//! `status`, and exported as Prometheus metrics. One store, so the three always agree.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::decide::RolloutView>,
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
        }
        for c in &report.checks {
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
            entry.rollout = Some(view.clone());
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

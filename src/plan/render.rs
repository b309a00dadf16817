//! Plans and results for people (a diff) and for scripts (JSON, a stable schema).
//!
//! Text, one app per block:
//!
//! ```text
//! ~ rg-xshopai-prod/ca-user-service  (desired-state/prod/ca-user-service.yaml:5:9)
//!     ~ image user-service: ...:v1.1.9 -> ...:v1.2.0  (new revision ca-user-service--r1a2b3c4)
//!     ~ traffic: ca-user-service--v119 100% -> latest 100%
//!     - deactivate ca-user-service--v113 (keep 5 active)
//! ```
//!
//! JSON (`--output json`): `{"apps": [{"subscription", "resourceGroup", "name", "source",
//! "status", "reason"?, "actions": [{"kind", ..., "description", "createsRevision"}]}],
//! "summary": {...}}`. `status` is one of `inSync`, `changes`, `suspended`, `busy`, `blocked`,
//! `missing`, `unreadable`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{Action, Change, Rule};

fn short_rule(r: &Rule) -> String {
    let target = r.revision.clone().unwrap_or_else(|| "latest".to_owned());
    match &r.label {
        Some(l) => format!("{target} [{l}] {}%", r.weight),
        None => format!("{target} {}%", r.weight),
    }
}

fn rules(list: &[Rule]) -> String {
    if list.is_empty() {
        return "(none)".to_owned();
    }
    list.iter().map(short_rule).collect::<Vec<_>>().join(", ")
}

fn bounds(b: (Option<i64>, Option<i64>)) -> String {
    let s = |v: Option<i64>| v.map_or("?".to_owned(), |n| n.to_string());
    format!("{}..{}", s(b.0), s(b.1))
}

/// One line for one action.
pub fn describe(action: &Action) -> String {
    match action {
        Action::SetRevisionMode { from, to } => format!("~ revision mode: {from} -> {to}"),
        Action::UpdateTemplate {
            changes, revision, ..
        } => {
            let parts: Vec<String> = changes
                .iter()
                .map(|c| match c {
                    Change::Image {
                        container,
                        from,
                        to,
                    } => format!("image {container}: {from} -> {to}"),
                    Change::Replicas { from, to } => {
                        format!("replicas: {} -> {}..{}", bounds(*from), to.0, to.1)
                    }
                    Change::RevisionMode { from, to } => format!("revision mode: {from} -> {to}"),
                    Change::Traffic { from, to } => format!(
                        "traffic: {} -> {} (once the new revision is ready)",
                        rules(from),
                        rules(to)
                    ),
                })
                .collect();
            format!("~ {}  (new revision {revision})", parts.join("; "))
        }
        Action::WaitUntilRunning { revision } => format!("… wait until {revision} runs"),
        Action::Activate { revision } => format!("+ activate {revision}"),
        Action::SetTraffic { from, to, .. } => {
            format!("~ traffic: {} -> {}", rules(from), rules(to))
        }
        Action::Deactivate {
            revision,
            keep_active,
        } => format!("- deactivate {revision} (keep {keep_active} active)"),
        Action::MarkRestartPending {
            generation, since, ..
        } => format!(
            "~ tag {}: {generation}@{since} (restarts of generation {generation} begin)",
            super::RESTART_PENDING_TAG
        ),
        Action::Restart {
            revision,
            generation,
        } => format!("↻ restart {revision} (restartGeneration {generation})"),
        Action::RecordRestartGeneration { from, to, .. } => format!(
            "~ tag {}: {from} -> {to}; remove tag {}",
            super::RESTART_TAG,
            super::RESTART_PENDING_TAG
        ),
        Action::ClearRestartPending { value, .. } => format!(
            "- tag {}: {value} (left over; its generation is recorded)",
            super::RESTART_PENDING_TAG
        ),
        Action::Rollout {
            transition,
            step,
            from,
            to,
            reason,
            ..
        } => {
            use crate::rollout::decide::Transition as T;
            let what = match transition {
                T::Start => "rollout starts".to_owned(),
                T::Step => format!("rollout step {}", step.saturating_add(1)),
                T::Promote => "rollout promotes the new revision".to_owned(),
                T::RollBack => "rollout rolls back".to_owned(),
                T::FailedCheck => "rollout counts a failed check".to_owned(),
                T::Retry => "rollout retried".to_owned(),
                T::Steady => "100% back on the stable revision".to_owned(),
                T::DropCommand => "rollout command dropped".to_owned(),
            };
            let traffic = to
                .as_ref()
                .map(|to| format!(": traffic {} -> {}", rules(from), rules(to)))
                .unwrap_or_default();
            let why = if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            };
            format!("~ {what}{traffic}{why}")
        }
        Action::Analyze {
            canary,
            step,
            weight,
            window,
            ..
        } => format!(
            "? check {canary} at step {} ({weight}%): requests {} .. {}, probes",
            step.saturating_add(1),
            crate::time::format_arm(window.0),
            crate::time::format_arm(window.1)
        ),
    }
}

/// An action as JSON: its fields, plus `description` and `createsRevision`.
pub fn action_json(action: &Action) -> Value {
    let mut v = serde_json::to_value(action).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("body");
        m.insert("description".to_owned(), json!(describe(action)));
        m.insert(
            "createsRevision".to_owned(),
            json!(action.creates_revision()),
        );
    }
    v
}

/// Appends `text` with a newline.
pub fn line(out: &mut String, text: impl AsRef<str>) {
    let _ = writeln!(out, "{}", text.as_ref());
}

/// The walk a rollout takes (or is taking), for `plan`: its steps, checks and limits.
pub fn rollout_walk(spec: &crate::rollout::RolloutSpec) -> String {
    use crate::rollout::{Approval, Strategy};
    let human = |ms: u64| crate::duration::Human(std::time::Duration::from_millis(ms)).to_string();
    let mut steps: Vec<String> = match spec.strategy {
        Strategy::Canary => spec
            .steps
            .iter()
            .map(|s| format!("{}% for {}", s.weight, human(s.pause_ms)))
            .collect(),
        Strategy::BlueGreen => spec
            .steps
            .iter()
            .map(|s| {
                if s.weight == 0 {
                    format!(
                        "0% on label `{}` for {}",
                        spec.preview_label,
                        human(s.pause_ms)
                    )
                } else {
                    format!("switch to 100%, watched for {}", human(s.pause_ms))
                }
            })
            .collect(),
    };
    if spec.approval == Approval::Manual {
        steps.insert(spec.gate(), "wait for `rollout promote`".to_owned());
    }
    if spec.steps.last().is_none_or(|s| s.weight < 100) || spec.strategy == Strategy::BlueGreen {
        steps.push("100%".to_owned());
    }
    let strategy = match spec.strategy {
        Strategy::Canary => "canary",
        Strategy::BlueGreen => "blue/green",
    };
    let mut text = format!("↻ rollout ({strategy}): {}", steps.join(", then "));
    if let Some(a) = &spec.analysis {
        let mut gates = Vec::new();
        if let Some(min) = a.success_rate_min {
            gates.push(format!("success rate >= {min}%"));
        }
        if let Some(drop) = a.max_drop_vs_stable {
            gates.push(format!("at most {drop} points below the stable revision"));
        }
        for p in &a.probes {
            gates.push(format!("GET {} = {}", p.path, p.expect_status));
        }
        text.push_str(&format!(
            "; checks every {}: {} (at least {} requests); rolls back after {} failed checks",
            human(a.interval_ms),
            gates.join(", "),
            a.min_requests,
            a.max_failed_checks
        ));
    }
    text.push_str(&format!(
        " or {} without progress",
        human(spec.progress_deadline_ms)
    ));
    text
}

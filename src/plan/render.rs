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

//! The one vocabulary for where an app stands: what `plan` prints, what `apply` reports, what
//! `/status` and `status` show, and the `state` label of the `acar_apps` gauge.

use serde::Serialize;

/// Where one managed app stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AppState {
    /// Not reconciled yet since this process started (or this replica stands by).
    Pending,
    /// Live matches desired.
    InSync,
    /// Live differs from desired and nothing is being done about it yet (`plan`; or a pass's
    /// `--max-actions` budget ran out first).
    Drifted,
    /// Changes are being made: a write was sent and the app is looked at again when Azure is
    /// expected to be done (its operation, its new revision).
    Applying,
    /// Waiting on Azure for something this reconcile did not start: another client's
    /// operation on the app, or a revision a previous pass created.
    Waiting,
    /// The last attempt failed (Azure refused, timed out, could not be read); it is retried
    /// with backoff.
    Failing,
    /// The spec cannot be reached as written (a container the app lacks, a revision that does
    /// not exist, a latest revision that failed to start, ...). Nothing is done, and nothing
    /// is retried, until the spec or the live app changes.
    Blocked,
    /// `suspend: true`: drift is reported, nothing is changed.
    Suspended,
    /// The app does not exist in Azure (aca-reconciler never creates apps).
    Missing,
    /// A rollout walks its steps: a new revision holds a share of traffic while it is
    /// checked, or waits for a person's `rollout promote`. Healthy; it moves on by itself.
    Progressing,
    /// The last rollout rolled back: all traffic is on the stable revision, and the new one
    /// is not tried again until the spec changes or a person runs `rollout retry`.
    RolledBack,
}

impl AppState {
    /// Every state, in a fixed order (the gauge reports each, zeros included).
    pub const ALL: [AppState; 11] = [
        AppState::Pending,
        AppState::InSync,
        AppState::Drifted,
        AppState::Applying,
        AppState::Waiting,
        AppState::Failing,
        AppState::Blocked,
        AppState::Suspended,
        AppState::Missing,
        AppState::Progressing,
        AppState::RolledBack,
    ];

    /// The camelCase name (as JSON spells it).
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Pending => "pending",
            AppState::InSync => "inSync",
            AppState::Drifted => "drifted",
            AppState::Applying => "applying",
            AppState::Waiting => "waiting",
            AppState::Failing => "failing",
            AppState::Blocked => "blocked",
            AppState::Suspended => "suspended",
            AppState::Missing => "missing",
            AppState::Progressing => "progressing",
            AppState::RolledBack => "rolledBack",
        }
    }

    /// Whether the app needs no one's attention: in sync, or suspended on purpose. `status`
    /// exits 2 when any app is not.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            AppState::InSync | AppState::Suspended | AppState::Progressing
        )
    }

    /// `plan --output json`'s older `status` word for this state (kept for scripts written
    /// against it; `state` is the field to use).
    pub fn plan_status(self) -> &'static str {
        match self {
            AppState::Drifted | AppState::Applying => "changes",
            AppState::Waiting => "busy",
            AppState::Failing | AppState::Pending => "unreadable",
            other => other.as_str(),
        }
    }
}

impl std::fmt::Display for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_per_state_as_json_spells_it() {
        for s in AppState::ALL {
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::Value::String(s.as_str().to_owned()))
            );
        }
        assert_eq!(AppState::Drifted.plan_status(), "changes");
        assert!(AppState::Suspended.is_settled());
        assert!(!AppState::Blocked.is_settled());
    }
}

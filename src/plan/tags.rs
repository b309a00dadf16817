//! The fields of a live app that the controller owns, in one place: the paths a planned body
//! may touch ([`OWNED_PATHS`]), and the Azure tags the controller keeps on an app to remember
//! what it did ([`OwnedTags`]), read and written through one codec.
//!
//! Azure is the controller's only state store: a tag survives a restart of the controller, a
//! crash and a change of leader. Tags are user-visible and limited (50 per resource, values of
//! at most 256 characters), so the controller keeps as few as it can and removes what it no
//! longer needs.

use serde_json::{Value, json};

use crate::arm::ContainerApp;
use crate::time::Millis;

/// The Azure tag that remembers the restart generation last applied (contract section 3).
pub const RESTART_TAG: &str = "aca-reconciler-restart-generation";

/// The Azure tag written just before the restarts of a generation, `<generation>@<RFC 3339>`:
/// if the controller dies before the restarts are recorded in [`RESTART_TAG`], the next pass
/// restarts only the revisions that still run a replica created before that time. It is
/// removed in the same PATCH that records the generation.
pub const RESTART_PENDING_TAG: &str = "aca-reconciler-restart-pending";

/// Every path a planned body may write (JSON pointer of a leaf; arrays are leaves). Anything
/// else is refused by [`crate::plan::check_invariants`] before it can reach Azure.
pub const OWNED_PATHS: &[&str] = &[
    "/properties/template/revisionSuffix",
    "/properties/template/containers",
    "/properties/template/scale/minReplicas",
    "/properties/template/scale/maxReplicas",
    "/properties/configuration/activeRevisionsMode",
    "/properties/configuration/ingress/traffic",
    "/tags/aca-reconciler-restart-generation",
    "/tags/aca-reconciler-restart-pending",
    "/tags/aca-reconciler-rollout",
    "/tags/aca-reconciler-rollout-command",
];

/// What the controller's tags on one app say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnedTags {
    /// The restart generation last applied (no tag: 0).
    pub restart_generation: u64,
    /// The pending-restart tag, if the app carries one: its generation and time, or `None`
    /// inside when the value does not parse (it is ours, and stale: it is removed).
    pub restart_pending: Option<Option<(u64, Millis)>>,
}

impl OwnedTags {
    /// Reads the tags of `app`.
    pub fn of(app: &ContainerApp) -> Self {
        let restart_generation = app
            .tags
            .get(RESTART_TAG)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let restart_pending = app.tags.get(RESTART_PENDING_TAG).map(|v| {
            let (generation, since) = v.split_once('@')?;
            Some((
                generation.trim().parse().ok()?,
                crate::time::parse(since.trim())?,
            ))
        });
        Self {
            restart_generation,
            restart_pending,
        }
    }

    /// The restart begun but not recorded: the pending tag's generation and time, if it names
    /// a generation above the recorded one.
    pub fn unfinished_restart(&self) -> Option<(u64, Millis)> {
        self.restart_pending
            .flatten()
            .filter(|(generation, _)| *generation > self.restart_generation)
    }

    /// The body that marks the restarts of `generation` as begun at `since` (RFC 3339).
    pub fn mark_pending_body(generation: u64, since: &str) -> Value {
        json!({"tags": {RESTART_PENDING_TAG: format!("{generation}@{since}")}})
    }

    /// The body that records `generation` and removes the pending tag (JSON merge patch: a
    /// `null` removes a key), in one PATCH.
    pub fn record_body(generation: u64) -> Value {
        json!({"tags": {RESTART_TAG: generation.to_string(), RESTART_PENDING_TAG: null}})
    }

    /// The body that removes a stale pending tag.
    pub fn clear_pending_body() -> Value {
        json!({"tags": {RESTART_PENDING_TAG: null}})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(tags: Value) -> ContainerApp {
        ContainerApp::from_value(json!({"name": "ca-x", "tags": tags, "properties": {}}))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn tags_read_and_judged() {
        let none = OwnedTags::of(&app(json!({})));
        assert_eq!(none, OwnedTags::default());

        let begun = OwnedTags::of(&app(json!({
            RESTART_TAG: "2",
            RESTART_PENDING_TAG: "3@2026-11-27T06:10:01Z",
        })));
        assert_eq!(begun.restart_generation, 2);
        assert!(begun.unfinished_restart().is_some_and(|(g, _)| g == 3));

        let done = OwnedTags::of(&app(json!({
            RESTART_TAG: "3",
            RESTART_PENDING_TAG: "3@2026-11-27T06:10:01Z",
        })));
        assert!(done.unfinished_restart().is_none());
        assert!(done.restart_pending.is_some(), "recorded already: litter");

        let garbage = OwnedTags::of(&app(json!({RESTART_PENDING_TAG: "soon"})));
        assert_eq!(garbage.restart_pending, Some(None));
        assert!(garbage.unfinished_restart().is_none());
    }

    #[test]
    fn recording_removes_the_pending_tag_in_the_same_body() {
        assert_eq!(
            OwnedTags::record_body(4),
            json!({"tags": {RESTART_TAG: "4", RESTART_PENDING_TAG: null}})
        );
    }
}

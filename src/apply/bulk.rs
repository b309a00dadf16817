//! Waiting in bulk: what one list of a resource group says about the waits of its apps.
//!
//! Many apps of a group wait at once: for the operation of a write, then for the revision it
//! created. The group's list shows every app's `provisioningState`, `latestRevisionName` and
//! `latestReadyRevisionName`, so one list per poll tick can answer all of them, where each
//! would otherwise read its operation and its revision. Where the list cannot tell (an
//! operation that failed, whose error is in the operation; a revision that is not the latest;
//! one that is not ready after a few looks, which may have failed), the wait is resumed with
//! the per-app reads, so it ends on the same answer from Azure either way
//! (`tests/bulk_wait.rs`).

use std::time::Duration;

use super::{Awaited, Wait};
use crate::arm::ContainerApp;

/// After this many poll intervals of a revision not ready in the list, the per-app read looks
/// at it, and again every this many intervals (the list cannot tell a failed revision from one
/// still starting, and real revisions take tens of seconds to start).
pub const PER_APP_AFTER_LOOKS: u32 = 3;

/// What a group's list says of one wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Still waiting, now on this.
    Waiting(Awaited),
    /// The wait is over: plan from the listed app.
    Over,
    /// The awaited revision is the latest and ready: read the revisions to see it runs, and
    /// plan from them and the listed app.
    Ready(String),
    /// The list cannot tell: look with the per-app reads.
    CannotTell,
}

impl PartialEq for Awaited {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Awaited::Busy, Awaited::Busy) => true,
            (Awaited::Revision(a), Awaited::Revision(b)) => a == b,
            (
                Awaited::Operation {
                    operation: a,
                    then: x,
                },
                Awaited::Operation {
                    operation: b,
                    then: y,
                },
            ) => a == b && x == y,
            _ => false,
        }
    }
}

impl Eq for Awaited {}

fn state_is(app: &ContainerApp, s: &str) -> bool {
    app.properties
        .provisioning_state
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case(s))
}

/// Judges `wait` by `app` as its group's list showed it (listed after the wait began). A
/// revision not ready in the list is looked at with the per-app read once it has waited
/// [`PER_APP_AFTER_LOOKS`] poll intervals, and every that many intervals after.
///
/// Assumed from ARM's asynchronous operations (docs/azure-notes.md 1.2): once a PATCH is
/// accepted (201/202), the resource shows `provisioningState: InProgress` until its operation
/// ends, so a list taken after the answer shows `InProgress` while the operation runs.
pub fn judge(wait: &Wait, app: &ContainerApp, poll: Duration) -> Judgement {
    let looks = (wait.since.elapsed().as_millis() / poll.as_millis().max(1)) as u64;
    let per_app = u64::from(PER_APP_AFTER_LOOKS);
    let list_will_do = looks < per_app || !looks.is_multiple_of(per_app);
    let latest = app.properties.latest_revision_name.as_deref();
    let ready = app.properties.latest_ready_revision_name.as_deref();
    let revision = |name: &str, since_ok: bool| match (latest == Some(name), ready == Some(name)) {
        (true, true) => Judgement::Ready(name.to_owned()),
        (true, false) if since_ok => Judgement::Waiting(Awaited::Revision(name.to_owned())),
        _ => Judgement::CannotTell,
    };
    match &wait.on {
        Awaited::Busy if app.is_busy() => Judgement::Waiting(Awaited::Busy),
        Awaited::Busy => Judgement::Over,
        Awaited::Operation { .. } if app.is_busy() => Judgement::Waiting(wait.on.clone()),
        // Its error is in the operation: the per-app look reads it.
        Awaited::Operation { .. } if state_is(app, "failed") || state_is(app, "canceled") => {
            Judgement::CannotTell
        }
        Awaited::Operation { then: None, .. } => Judgement::Over,
        Awaited::Operation {
            then: Some(name), ..
        } => revision(name, true),
        Awaited::Revision(name) => revision(name, list_will_do),
        // A rollout's hold is over when it is due: the listed app is the fresh read.
        Awaited::Rollout => Judgement::Over,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::time::Instant;

    fn app(state: &str, latest: &str, ready: &str) -> ContainerApp {
        ContainerApp::from_value(json!({"name": "a", "properties": {"provisioningState": state, "latestRevisionName": latest, "latestReadyRevisionName": ready}})).unwrap()
    }

    fn wait(on: Awaited) -> Wait {
        Wait {
            on,
            since: Instant::now(),
            ours: true,
            check: None,
        }
    }

    #[test]
    fn the_list_answers_what_it_shows_and_only_that() {
        let slow = Duration::from_secs(2);
        let rev = |n: &str| Awaited::Revision(n.to_owned());
        assert_eq!(
            judge(
                &wait(Awaited::Busy),
                &app("InProgress", "a--1", "a--1"),
                slow
            ),
            Judgement::Waiting(Awaited::Busy)
        );
        assert_eq!(
            judge(
                &wait(Awaited::Busy),
                &app("Succeeded", "a--1", "a--1"),
                slow
            ),
            Judgement::Over
        );
        assert_eq!(
            judge(&wait(rev("a--2")), &app("Succeeded", "a--2", "a--2"), slow),
            Judgement::Ready("a--2".into())
        );
        assert_eq!(
            judge(&wait(rev("a--2")), &app("Succeeded", "a--2", "a--1"), slow),
            Judgement::Waiting(rev("a--2"))
        );
        let mut long = wait(rev("a--2"));
        long.since = Instant::now() - Duration::from_millis(6_100);
        assert_eq!(
            judge(&long, &app("Succeeded", "a--2", "a--1"), slow),
            Judgement::CannotTell,
            "not ready for three polls: it may have failed, which only the revision says"
        );
        long.since = Instant::now() - Duration::from_millis(8_100);
        assert_eq!(
            judge(&long, &app("Succeeded", "a--2", "a--1"), slow),
            Judgement::Waiting(rev("a--2")),
            "and the list again in between"
        );
        assert_eq!(
            judge(&wait(rev("a--1")), &app("Succeeded", "a--2", "a--2"), slow),
            Judgement::CannotTell,
            "not the latest: the list says nothing of it"
        );
    }
}

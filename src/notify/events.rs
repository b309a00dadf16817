//! From what the controller did to events: pure, so each rule is a unit test.
//!
//! The [`Tracker`] remembers, per app, what was last *announced* (healthy, failing with which
//! problem, which rollout step), and the writes made since the app was last at rest. A report
//! becomes an event only when it changes that: the steady state says nothing, a failure that
//! repeats on every retry is told once, and the writes of one change are told once, when the
//! app comes to rest (or fails).
//!
//! | the app's report | event |
//! | --- | --- |
//! | writes sent, waiting on Azure (first time for this change) | `Progressing` (info) |
//! | at rest in sync after writes | `Applied` (info), its writes and request ids |
//! | at rest in sync after an announced failure | `Recovered` (info), with any writes |
//! | failing, blocked or missing, with a problem not announced yet | `Failed` (error) |
//! | a rollout starts / steps / waits for approval / promotes / rolls back | `Progressing` / `RolloutStep` / `RolloutPromoted` / `RolledBack` (error) |
//!
//! A replica that starts, or takes over leadership, tells what it does and what changes while
//! it watches, never what it finds on its first look: that was announced by whoever watched
//! it happen (so a new leader does not repeat the old one's messages). Its own write that
//! fails is announced, first look or not.

use std::collections::BTreeMap;

use super::{Event, Reason};
use crate::apply::{AppReport, Failure};
use crate::arm::Landed;
use crate::spec::AppKey;
use crate::state::AppState;

/// What was last announced about an app.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Condition {
    /// Nothing announced yet by this replica.
    #[default]
    Unknown,
    /// In sync (or suspended, or a rollout walking).
    Healthy,
    /// Failing with this problem (its stable text).
    Failing(String),
    /// The last rollout rolled back.
    RolledBack,
}

/// One app's memory.
#[derive(Debug, Default)]
struct Memory {
    condition: Condition,
    /// The writes since the app was last at rest: (what, Azure's request id), at most
    /// [`WRITES_KEPT`].
    writes: Vec<(String, Option<String>)>,
    /// Writes past [`WRITES_KEPT`] (an app that never comes to rest), counted only.
    more_writes: usize,
    /// `Progressing` was announced for the change under way.
    progressing: bool,
    /// The rollout position last announced: (new revision, phase, step).
    rollout: Option<(String, String, i32)>,
}

/// Writes remembered per app until it comes to rest.
pub const WRITES_KEPT: usize = 20;

impl Memory {
    fn clear_writes(&mut self) {
        // A new Vec, not clear(): an app at rest keeps no spare capacity for its next change.
        self.writes = Vec::new();
        self.more_writes = 0;
    }

    /// The writes, for a message: "a; b; c", without timestamps (a message is stable).
    fn list(&self) -> String {
        let mut text = list(&self.writes);
        if self.more_writes > 0 {
            text.push_str(&format!("; and {} more writes", self.more_writes));
        }
        text
    }
}

/// Turns reports into events by comparing with what was announced.
#[derive(Debug, Default)]
pub struct Tracker {
    apps: BTreeMap<AppKey, Memory>,
}

/// What an event about an app is stamped with.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// Now (RFC 3339).
    pub at: &'a str,
    /// Where the app is written (`FILE:LINE:COLUMN`).
    pub source: &'a str,
    /// The desired-state commit (full hash), when known.
    pub commit: Option<&'a str>,
}

impl Tracker {
    /// A tracker that has announced nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets an app (no longer managed).
    pub fn forget(&mut self, app: &AppKey) {
        self.apps.remove(app);
    }

    /// Forgets everything (this replica stopped leading: whoever leads next announces).
    pub fn clear(&mut self) {
        self.apps.clear();
    }

    /// The events one reconcile's report makes.
    pub fn on_report(&mut self, report: &AppReport, stamp: Stamp<'_>) -> Vec<Event> {
        let memory = self.apps.entry(report.app.clone()).or_default();
        let event = |reason: Reason, message: String| Event {
            at: stamp.at.to_owned(),
            severity: reason.severity(),
            reason,
            app: Some(report.app.clone()),
            source: Some(stamp.source.to_owned()),
            message,
            details: BTreeMap::new(),
            commit: stamp.commit.map(str::to_owned),
        };
        let mut wrote_now = false;
        for a in &report.actions {
            if a.error.is_none() && a.landed != Landed::No {
                if memory.writes.len() < WRITES_KEPT {
                    memory
                        .writes
                        .push((a.description.clone(), a.request_id.clone()));
                } else {
                    memory.more_writes += 1;
                }
                wrote_now = true;
            }
        }
        let mut out = Vec::new();
        // A rollout's moves are its own events; while it walks, its writes are its steps.
        let mut walking = false;
        if let Some(view) = report.rollout.as_ref().filter(|v| !v.canary.is_empty()) {
            walking = matches!(
                view.phase.as_str(),
                "starting" | "progressing" | "waitingForApproval"
            );
            let now = (view.canary.clone(), view.phase.clone(), view.step);
            let before = memory.rollout.replace(now.clone());
            if let Some(mut e) =
                rollout_event(before.as_ref(), &now, view, wrote_now, &report.app.name)
                    .map(|(reason, message)| event(reason, message))
            {
                if e.reason == Reason::RolledBack && !view.reason.is_empty() {
                    e.details.insert("analysis".to_owned(), view.reason.clone());
                }
                if let Some(json) = view
                    .last_check
                    .as_ref()
                    .and_then(|c| serde_json::to_string(c).ok())
                {
                    e.details.insert("lastCheck".to_owned(), json);
                }
                add_ids(&mut e, &memory.writes);
                match e.reason {
                    Reason::RolledBack => memory.condition = Condition::RolledBack,
                    Reason::RolloutPromoted => memory.condition = Condition::Healthy,
                    _ => {}
                }
                memory.clear_writes();
                memory.progressing = true;
                walking = true;
                out.push(e);
            }
        }
        match report.state {
            AppState::Applying | AppState::Waiting
                if wrote_now && !memory.progressing && !walking =>
            {
                memory.progressing = true;
                let mut e = event(Reason::Progressing, format!("applying: {}", memory.list()));
                add_ids(&mut e, &memory.writes);
                out.push(e);
            }
            AppState::Failing | AppState::Blocked | AppState::Missing => {
                let problem = report
                    .error
                    .as_ref()
                    .map_or_else(|| report.state.as_str().to_owned(), stable_text);
                // A first look at a failing app tells nothing unless this replica's own write
                // failed: the failure was announced by whoever watched it begin.
                let first_look = memory.condition == Condition::Unknown
                    && memory.writes.is_empty()
                    && report.actions.is_empty();
                if memory.condition != Condition::Failing(problem.clone()) && !first_look {
                    let mut e = event(Reason::Failed, problem.clone());
                    add_ids(&mut e, &memory.writes);
                    if let Some(id) = report.error.as_ref().and_then(request_id) {
                        e.details.insert("failedRequestId".to_owned(), id);
                    }
                    out.push(e);
                }
                memory.condition = Condition::Failing(problem);
                memory.clear_writes();
                memory.progressing = false;
            }
            // Suspended on purpose: nothing to tell (a failure before it stands until the app is
            // handed back and found well).
            AppState::Suspended => memory.clear_writes(),
            AppState::InSync | AppState::Progressing if report.requeue.is_none() => {
                if memory.condition == Condition::Unknown
                    && memory.writes.is_empty()
                    && !walking
                    && report.state == AppState::InSync
                {
                    // A first look: in sync. Told to GitHub only where the commit's status is
                    // still pending or failed (a leader that died before telling the end).
                    out.push(event(Reason::Synced, "in sync".to_owned()));
                } else if matches!(memory.condition, Condition::Failing(_)) {
                    let mut e = event(
                        Reason::Recovered,
                        if memory.writes.is_empty() {
                            "in sync again".to_owned()
                        } else {
                            format!("in sync again: {}", memory.list())
                        },
                    );
                    add_ids(&mut e, &memory.writes);
                    out.push(e);
                } else if !memory.writes.is_empty() && !walking {
                    let mut e = event(Reason::Applied, memory.list());
                    add_ids(&mut e, &memory.writes);
                    out.push(e);
                }
                memory.condition = Condition::Healthy;
                memory.clear_writes();
                if !walking {
                    memory.progressing = false;
                }
            }
            AppState::RolledBack if report.requeue.is_none() => {
                memory.clear_writes();
                memory.progressing = false;
            }
            _ => {}
        }
        out
    }
}

/// The event a rollout's move from `before` to `now` (new revision, phase, step) makes, if
/// any.
fn rollout_event(
    before: Option<&(String, String, i32)>,
    now: &(String, String, i32),
    view: &crate::rollout::decide::RolloutView,
    wrote: bool,
    app: &str,
) -> Option<(Reason, String)> {
    // A first look tells only what this replica itself did.
    if before == Some(now) || (before.is_none() && !wrote) {
        return None;
    }
    let same_revision = before.is_some_and(|b| b.0 == now.0);
    let step = |what: &str| {
        format!(
            "rollout of {}: {what} step {} of {}, {}% of traffic",
            view.canary,
            view.step + 1,
            view.steps.len(),
            view.weight
        )
    };
    match view.phase.as_str() {
        "starting" if !same_revision => Some((
            Reason::Progressing,
            format!("rollout of {} started", view.canary),
        )),
        // Step -1: the new revision is starting, not a step yet.
        "progressing" if view.step >= 0 => Some((Reason::RolloutStep, step("at"))),
        "waitingForApproval" => Some((
            Reason::RolloutStep,
            format!(
                "{}; approve with `aca-reconciler rollout promote {app}`",
                step("waiting for approval at")
            ),
        )),
        "promoted" if same_revision => Some((
            Reason::RolloutPromoted,
            format!("rollout promoted {} to all traffic", view.canary),
        )),
        "rolledBack" => Some((
            Reason::RolledBack,
            format!(
                "rollout of {} rolled back: all traffic is on {} again",
                view.canary, view.stable
            ),
        )),
        _ => None,
    }
}

/// The writes, for a message: "a; b; c", without timestamps (a message is stable).
fn list(writes: &[(String, Option<String>)]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for (w, _) in writes {
        let w = without_times(w);
        if !seen.contains(&w) {
            seen.push(w);
        }
    }
    seen.join("; ")
}

/// `text` with each RFC 3339 time (`2026-12-05T06:11:45+00:00`, `...Z`, fractions) taken out:
/// a tag like `3@2026-12-05T06:11:45+00:00` reads `3@…`.
pub fn without_times(text: &str) -> String {
    let b = text.as_bytes();
    let digits = |at: usize, n: usize| {
        b.get(at..at + n)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        let is_time = digits(i, 4)
            && b.get(i + 4) == Some(&b'-')
            && digits(i + 5, 2)
            && b.get(i + 7) == Some(&b'-')
            && digits(i + 8, 2)
            && b.get(i + 10) == Some(&b'T')
            && digits(i + 11, 2)
            && b.get(i + 13) == Some(&b':')
            && digits(i + 14, 2);
        if !is_time {
            i += 1;
            continue;
        }
        let mut end = i + 16;
        while end < b.len() && (b[end].is_ascii_digit() || matches!(b[end], b':' | b'.')) {
            end += 1;
        }
        if b.get(end) == Some(&b'Z') {
            end += 1;
        } else if matches!(b.get(end), Some(b'+' | b'-')) && digits(end + 1, 2) {
            end += 3;
            if b.get(end) == Some(&b':') && digits(end + 1, 2) {
                end += 3;
            }
        }
        out.push_str(&text[copied..i]);
        out.push('…');
        copied = end;
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Azure's request ids of the writes, in `details`.
fn add_ids(e: &mut Event, writes: &[(String, Option<String>)]) {
    let ids: Vec<&str> = writes.iter().filter_map(|(_, id)| id.as_deref()).collect();
    if !ids.is_empty() {
        e.details.insert("requestIds".to_owned(), ids.join(" "));
    }
}

/// Azure's request id of a failure, if it has one.
fn request_id(f: &Failure) -> Option<String> {
    match f {
        Failure::Azure(e) => e.request_id().map(str::to_owned),
        _ => None,
    }
}

/// A failure's text without what changes from one try to the next (Azure's request ids,
/// times), so a failure repeated on every retry is one problem.
pub fn stable_text(f: &Failure) -> String {
    stable(&f.to_string())
}

/// [`stable_text`] of any text.
pub fn stable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(" (x-ms-") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find(')').map_or("", |j| &rest[i + j + 1..]);
    }
    out.push_str(rest);
    without_ids(&without_times(&short_paths(&out)))
}

/// `text` without what identifies one attempt: GUIDs (Entra's `Trace ID:` and `Correlation ID:`,
/// Azure's request ids) read `…`, and Entra's `Timestamp: 2026-12-05 06:58:00Z` is dropped.
pub fn without_ids(text: &str) -> String {
    let is_hex = |b: &[u8]| b.iter().all(u8::is_ascii_hexdigit);
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        let guid = b.get(i..i + 36).is_some_and(|g| {
            is_hex(&g[..8])
                && g[8] == b'-'
                && is_hex(&g[9..13])
                && g[13] == b'-'
                && is_hex(&g[14..18])
                && g[18] == b'-'
                && is_hex(&g[19..23])
                && g[23] == b'-'
                && is_hex(&g[24..])
        }) && (i == 0 || !b[i - 1].is_ascii_hexdigit());
        if guid {
            out.push_str(&text[copied..i]);
            out.push('…');
            i += 36;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    match out.find("Timestamp: ") {
        Some(at) => {
            let from = at + "Timestamp: ".len();
            let end = out[from..]
                .find(|c: char| {
                    !(c.is_ascii_digit() || matches!(c, ' ' | ':' | '-' | '.' | 'T' | 'Z'))
                })
                .map_or(out.len(), |n| from + n);
            format!("{}{}", out[..at].trim_end(), &out[end..])
        }
        None => out,
    }
}

/// `text` with each ARM resource id cut to what a person needs: `revision NAME`, `app NAME`
/// (the app and its group are in the event already).
pub fn short_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/subscriptions/") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | ';' | ')'))
            .unwrap_or(tail.len());
        let segments: Vec<&str> = tail[..end].split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            [.., kind, name] if segments.len() >= 4 => {
                let kind = match *kind {
                    "revisions" => "revision",
                    "containerApps" => "app",
                    other => other,
                };
                out.push_str(&format!("{kind} {name}"));
            }
            _ => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::apply::{ActionRecord, Awaited, Requeue, Wait};
    use crate::plan::{Action, Blocked};
    use crate::rollout::decide::RolloutView;
    use crate::rollout::{Step, Strategy};

    fn key() -> AppKey {
        AppKey::new("00000000-0000-0000-0000-000000000001", "rg-shop", "ca-user")
    }

    const STAMP: Stamp<'static> = Stamp {
        at: "2026-12-05T06:00:00Z",
        source: "apps/user.yaml:4:9",
        commit: Some("0123456789abcdef0123456789abcdef01234567"),
    };

    fn report(state: AppState) -> AppReport {
        AppReport::new(key(), state)
    }

    fn wrote(mut r: AppReport, what: &str, id: &str) -> AppReport {
        r.actions.push(ActionRecord {
            description: what.to_owned(),
            action: Action::Activate {
                revision: "ca-user--r2".to_owned(),
            },
            error: None,
            request_id: Some(id.to_owned()),
            landed: Landed::Yes,
            ms: 12,
        });
        r
    }

    fn waiting(mut r: AppReport) -> AppReport {
        r.requeue = Some(Requeue {
            after: Duration::from_secs(2),
            wait: Wait {
                on: Awaited::Revision("ca-user--r2".to_owned()),
                since: tokio::time::Instant::now(),
                ours: true,
                check: None,
            },
        });
        r
    }

    fn reasons(events: &[Event]) -> Vec<Reason> {
        events.iter().map(|e| e.reason).collect()
    }

    fn latest_failed(r: &str) -> Failure {
        Failure::Blocked(Blocked::LatestFailed {
            revision: r.to_owned(),
            why: "ImagePullBackOff".to_owned(),
        })
    }

    #[test]
    fn an_entra_error_retried_is_one_problem() {
        // What Entra's error_description looks like (AADSTS700024), twice, a minute apart.
        let entra = |trace: &str, at: &str| {
            Failure::Unreadable(format!(
                "cannot get a token for https://management.azure.com/.default with the workload credential: AADSTS700024: Client assertion is not within its valid time range. Trace ID: {trace} Correlation ID: 9f1c2a8e-3b4d-4e5f-9a7b-{trace_tail} Timestamp: {at}",
                trace_tail = &trace[24..]
            ))
        };
        let a = stable_text(&entra(
            "0b3c6f2e-1d4a-4b8e-9c7f-2a1b3c4d5e6f",
            "2026-12-05 06:58:00Z",
        ));
        let b = stable_text(&entra(
            "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
            "2026-12-05 06:59:12Z",
        ));
        assert_eq!(a, b);
        assert!(
            a.ends_with("valid time range. Trace ID: … Correlation ID: …"),
            "{a}"
        );
    }

    #[test]
    fn resource_ids_read_as_names() {
        let text = "/subscriptions/6f1c/resourceGroups/rg-x/providers/Microsoft.App/containerApps/ca-cart/revisions/ca-cart--r12: the operation ended Failed";
        assert_eq!(
            short_paths(text),
            "revision ca-cart--r12: the operation ended Failed"
        );
        assert_eq!(
            short_paths(
                "PATCH /subscriptions/s/resourceGroups/g/providers/Microsoft.App/containerApps/web: HTTP 500"
            ),
            "PATCH app web: HTTP 500"
        );
        assert_eq!(short_paths("no ids here"), "no ids here");
    }

    #[test]
    fn messages_carry_no_times() {
        assert_eq!(
            without_times(
                "~ tag aca-reconciler-restart-pending: 3@2026-12-05T06:11:45+00:00 (restarts)"
            ),
            "~ tag aca-reconciler-restart-pending: 3@… (restarts)"
        );
        assert_eq!(without_times("at 2026-12-05T06:11:45.123Z."), "at ….");
        assert_eq!(without_times("v1.2.0 -> v1.3.0"), "v1.2.0 -> v1.3.0");
        assert_eq!(without_times("2026-12-05"), "2026-12-05");
    }

    #[test]
    fn the_steady_state_says_nothing() {
        let mut t = Tracker::new();
        // A first look in sync is `Synced` (GitHub takes it only to mend a stuck status).
        let first = t.on_report(&report(AppState::InSync), STAMP);
        assert_eq!(reasons(&first), [Reason::Synced]);
        for _ in 0..3 {
            assert!(t.on_report(&report(AppState::InSync), STAMP).is_empty());
        }
    }

    #[test]
    fn a_suspended_app_is_not_announced_as_recovered() {
        let mut t = Tracker::new();
        let mut own = wrote(report(AppState::Failing), "w", "r1");
        own.error = Some(Failure::Unreadable("HTTP 500".to_owned()));
        t.on_report(&own, STAMP);
        assert!(t.on_report(&report(AppState::Suspended), STAMP).is_empty());
    }

    #[test]
    fn an_app_that_never_rests_keeps_a_bounded_list_of_writes() {
        let mut t = Tracker::new();
        for i in 0..(WRITES_KEPT + 5) {
            t.on_report(
                &waiting(wrote(report(AppState::Applying), &format!("w{i}"), "r")),
                STAMP,
            );
        }
        let e = t.on_report(&report(AppState::InSync), STAMP);
        assert!(
            e[0].message.ends_with("; and 5 more writes"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn a_change_is_progressing_then_applied_once_with_its_request_ids() {
        let mut t = Tracker::new();
        let e = t.on_report(
            &waiting(wrote(report(AppState::Applying), "image v1 -> v2", "req-1")),
            STAMP,
        );
        assert_eq!(reasons(&e), [Reason::Progressing]);
        assert_eq!(e[0].message, "applying: image v1 -> v2");
        // Still waiting: nothing more.
        assert!(
            t.on_report(&waiting(report(AppState::Applying)), STAMP)
                .is_empty()
        );
        let e = t.on_report(
            &wrote(report(AppState::InSync), "traffic 0 -> 100", "req-2"),
            STAMP,
        );
        assert_eq!(reasons(&e), [Reason::Applied]);
        assert_eq!(e[0].message, "image v1 -> v2; traffic 0 -> 100");
        assert_eq!(e[0].details["requestIds"], "req-1 req-2");
        assert_eq!(e[0].severity, crate::notify::Severity::Info);
        assert_eq!(e[0].commit.as_deref(), STAMP.commit);
        assert!(t.on_report(&report(AppState::InSync), STAMP).is_empty());
    }

    #[test]
    fn a_bad_image_is_one_failure_and_one_recovery() {
        let mut t = Tracker::new();
        t.on_report(
            &waiting(wrote(
                report(AppState::Applying),
                "image v1 -> bad",
                "req-1",
            )),
            STAMP,
        );
        let mut failed = report(AppState::Blocked);
        failed.error = Some(latest_failed("ca-user--bad"));
        let e = t.on_report(&failed, STAMP);
        assert_eq!(reasons(&e), [Reason::Failed]);
        assert_eq!(e[0].severity, crate::notify::Severity::Error);
        assert!(
            e[0].message.contains("ca-user--bad failed to start"),
            "{}",
            e[0].message
        );
        // Re-planned at the next resync: the same problem is not told again.
        assert!(t.on_report(&failed, STAMP).is_empty());
        // The fix: one Progressing, then Recovered (not Applied as well).
        let e = t.on_report(
            &waiting(wrote(
                report(AppState::Applying),
                "image bad -> v3",
                "req-3",
            )),
            STAMP,
        );
        assert_eq!(reasons(&e), [Reason::Progressing]);
        let e = t.on_report(&report(AppState::InSync), STAMP);
        assert_eq!(reasons(&e), [Reason::Recovered]);
        assert_eq!(e[0].message, "in sync again: image bad -> v3");
        assert!(t.on_report(&report(AppState::InSync), STAMP).is_empty());
    }

    #[test]
    fn a_first_look_tells_only_what_this_replica_did() {
        let mut t = Tracker::new();
        let mut failed = report(AppState::Blocked);
        failed.error = Some(latest_failed("ca-user--bad"));
        assert!(t.on_report(&failed, STAMP).is_empty());
        // Its recovery is news.
        let e = t.on_report(&report(AppState::InSync), STAMP);
        assert_eq!(reasons(&e), [Reason::Recovered]);
        // A replica whose own first write fails says so.
        let mut t = Tracker::new();
        let mut own = wrote(report(AppState::Failing), "replicas 1-3 -> 2-5", "req-9");
        own.error = Some(Failure::Unreadable("HTTP 500".to_owned()));
        assert_eq!(reasons(&t.on_report(&own, STAMP)), [Reason::Failed]);
    }

    #[test]
    fn a_failure_repeated_with_new_request_ids_is_one_problem() {
        let text = "PATCH /x: HTTP 500 InternalError: boom (x-ms-request-id abc-123)";
        let f = Failure::Unreadable(text.to_owned());
        assert_eq!(
            stable_text(&f),
            "cannot read the app: PATCH /x: HTTP 500 InternalError: boom"
        );
        let mut t = Tracker::new();
        let mut a = wrote(report(AppState::Failing), "w", "r1");
        a.error = Some(f);
        let mut b = report(AppState::Failing);
        b.error = Some(Failure::Unreadable(text.replace("abc-123", "def-456")));
        assert_eq!(t.on_report(&a, STAMP).len(), 1);
        assert!(t.on_report(&b, STAMP).is_empty());
    }

    fn rollout(phase: &str, step: i32, weight: u32) -> RolloutView {
        RolloutView {
            strategy: Strategy::Canary,
            phase: phase.to_owned(),
            step,
            steps: vec![
                Step {
                    weight: 20,
                    pause_ms: 60_000,
                },
                Step {
                    weight: 50,
                    pause_ms: 60_000,
                },
            ],
            weight,
            stable: "ca-user--v1".to_owned(),
            canary: "ca-user--v2".to_owned(),
            failed_checks: 0,
            max_failed_checks: Some(2),
            since: STAMP.at.to_owned(),
            reason: String::new(),
            last_check: None,
            command: None,
        }
    }

    fn in_rollout(state: AppState, view: RolloutView) -> AppReport {
        let mut r = report(state);
        r.rollout = Some(view);
        r
    }

    #[test]
    fn a_rollout_tells_its_start_steps_and_promotion_and_nothing_while_it_holds() {
        let mut t = Tracker::new();
        let idle = |t: &mut Tracker| {
            t.on_report(
                &in_rollout(AppState::InSync, rollout("promoted", 1, 100)),
                STAMP,
            )
        };
        let start = waiting(wrote(
            in_rollout(AppState::Applying, rollout("starting", -1, 0)),
            "image v1 -> v2",
            "req-1",
        ));
        assert_eq!(reasons(&t.on_report(&start, STAMP)), [Reason::Progressing]);
        let step0 = wrote(
            in_rollout(AppState::Progressing, rollout("progressing", 0, 20)),
            "traffic 0 -> 20",
            "req-2",
        );
        let e = t.on_report(&step0, STAMP);
        assert_eq!(reasons(&e), [Reason::RolloutStep]);
        assert_eq!(
            e[0].message,
            "rollout of ca-user--v2: at step 1 of 2, 20% of traffic"
        );
        // Holding the step: nothing.
        let hold = in_rollout(AppState::Progressing, rollout("progressing", 0, 20));
        assert!(t.on_report(&hold, STAMP).is_empty());
        let e = t.on_report(
            &wrote(
                in_rollout(AppState::InSync, rollout("promoted", 1, 100)),
                "traffic 20 -> 100",
                "req-3",
            ),
            STAMP,
        );
        assert_eq!(reasons(&e), [Reason::RolloutPromoted]);
        assert!(idle(&mut t).is_empty());
    }

    #[test]
    fn a_rollback_is_an_error_with_its_numbers_and_not_repeated() {
        let mut t = Tracker::new();
        t.on_report(
            &in_rollout(AppState::Progressing, rollout("progressing", 0, 20)),
            STAMP,
        );
        let mut back = rollout("rolledBack", 0, 0);
        back.reason = "success rate 80.0% < 99% (2 failed checks)".to_owned();
        let r = wrote(
            in_rollout(AppState::RolledBack, back),
            "traffic 20 -> 0",
            "req-4",
        );
        let e = t.on_report(&r, STAMP);
        assert_eq!(reasons(&e), [Reason::RolledBack]);
        assert_eq!(e[0].severity, crate::notify::Severity::Error);
        assert_eq!(
            e[0].details["analysis"],
            "success rate 80.0% < 99% (2 failed checks)"
        );
        let mut again = in_rollout(AppState::RolledBack, rollout("rolledBack", 0, 0));
        again.actions.clear();
        assert!(t.on_report(&again, STAMP).is_empty());
    }
}

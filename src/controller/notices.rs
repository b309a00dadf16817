//! The controller's side of notifications: what happened becomes [`Event`]s (apps through the
//! pure [`Tracker`], desired-state files, retention, leadership), kept in `/status` and handed
//! to the [`Notifier`] while this replica leads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::apply::AppReport;
use crate::notify::deliver::Notifier;
use crate::notify::events::{Stamp, Tracker};
use crate::notify::{Event, Reason};
use crate::spec::{AppKey, Diagnostic};

use super::StatusBoard;
use super::desired::DesiredStore;
use super::status;

/// What the controller has announced, and where it sends.
#[derive(Debug)]
pub struct Notices {
    tracker: Tracker,
    /// Each rejected file's first problem, as last announced.
    rejected: BTreeMap<PathBuf, String>,
    notifier: Option<Arc<Notifier>>,
    /// `--revision`: the commit events carry, whatever `.git` says.
    revision: Option<String>,
    /// The commit events carry now (full hash).
    commit: Option<String>,
    /// Per app, the commit at which its spec last changed: its events name that one, not a
    /// later commit that did not touch it (a rollout outlives many merges).
    app_commits: BTreeMap<AppKey, Option<String>>,
    /// The retention errors last told (their stable text), to tell them once until they change.
    retention_errors: Option<String>,
    /// Whether the desired state was loaded before (the first load tells nothing about files:
    /// whoever ran before told it).
    loaded: bool,
    leading: bool,
}

impl Notices {
    /// Nothing announced yet. `revision` is `--revision` (`ACAR_DESIRED_REVISION`).
    pub fn new(notifier: Option<Arc<Notifier>>, revision: Option<String>) -> Self {
        Self {
            tracker: Tracker::new(),
            rejected: BTreeMap::new(),
            notifier,
            revision,
            commit: None,
            app_commits: BTreeMap::new(),
            retention_errors: None,
            loaded: false,
            leading: false,
        }
    }

    /// The desired state was (re)loaded, changing `changed` apps (`None`: the first load, every
    /// app): the commit, the targets, and files rejected or fixed.
    pub fn on_desired(
        &mut self,
        store: &DesiredStore,
        changed: Option<&std::collections::BTreeSet<AppKey>>,
        board: &StatusBoard,
        now: &str,
    ) {
        // The checkout's HEAD, read once per load for both `/status` fields.
        let head = status::git_head(store.root());
        self.commit = match &self.revision {
            Some(r) => status::revision_commit(r),
            None => head.as_ref().map(|h| h.commit.clone()),
        };
        {
            let mut s = board.status();
            s.desired_commit = head.as_ref().map(status::GitHead::display);
            s.desired_revision = self.commit.clone();
        }
        match changed {
            None => {
                for k in store.state.apps.keys() {
                    self.app_commits.insert(k.clone(), self.commit.clone());
                }
            }
            Some(apps) => {
                for k in apps {
                    if store.state.apps.contains_key(k) {
                        self.app_commits.insert(k.clone(), self.commit.clone());
                    } else {
                        self.app_commits.remove(k);
                    }
                }
            }
        }
        if let Some(n) = &self.notifier {
            n.configure(&store.state.notifications, store.root());
            let github = store
                .state
                .notifications
                .iter()
                .any(|n| matches!(n.target, crate::notify::Target::GitHub { .. }));
            if github && self.commit.is_none() && !self.loaded {
                tracing::warn!(
                    "a github Notification is declared, but the desired state's commit is unknown (no .git above {}, no --revision): no commit status can be posted",
                    store.root().display()
                );
            }
        }
        let first_load = !self.loaded;
        self.loaded = true;
        let mut first: BTreeMap<PathBuf, (&Diagnostic, usize)> = BTreeMap::new();
        for d in &store.problems {
            first
                .entry(d.file.clone())
                .and_modify(|(_, n)| *n += 1)
                .or_insert((d, 1));
        }
        let mut events = Vec::new();
        for (file, (d, n)) in &first {
            let text = d.to_string();
            if self.rejected.get(file) == Some(&text) {
                continue;
            }
            self.rejected.insert(file.clone(), text.clone());
            if first_load {
                continue;
            }
            let mut e = self.event(
                Reason::DesiredStateRejected,
                now,
                format!(
                    "{} is rejected, its apps keep their last good spec: {text}",
                    file.display()
                ),
            );
            e.source = Some(file.display().to_string());
            e.details.insert("problems".to_owned(), n.to_string());
            events.push(e);
        }
        let fixed: Vec<PathBuf> = self
            .rejected
            .keys()
            .filter(|f| !first.contains_key(*f))
            .cloned()
            .collect();
        for file in fixed {
            self.rejected.remove(&file);
            let mut e = self.event(
                Reason::DesiredStateFixed,
                now,
                format!("{} is valid again", file.display()),
            );
            e.source = Some(file.display().to_string());
            events.push(e);
        }
        self.emit(events, board);
    }

    /// One app's report.
    pub fn on_report(&mut self, report: &AppReport, source: &str, board: &StatusBoard, now: &str) {
        let commit = self
            .app_commits
            .get(&report.app)
            .map_or(self.commit.as_deref(), Option::as_deref);
        let events = self.tracker.on_report(
            report,
            Stamp {
                at: now,
                source,
                commit,
            },
        );
        self.emit(events, board);
    }

    /// An app is no longer managed.
    pub fn forget(&mut self, app: &AppKey) {
        self.tracker.forget(app);
        self.app_commits.remove(app);
    }

    /// Leadership changed (only with leader election).
    pub fn on_leadership(&mut self, leading: bool, elected: bool, board: &StatusBoard, now: &str) {
        let was = self.leading;
        self.leading = leading;
        if !elected || was == leading {
            return;
        }
        // Whoever leads next announces from its own first look; GitHub's statuses are read
        // again from GitHub, and a former leader's queued statuses are dropped.
        self.tracker.clear();
        if let Some(n) = &self.notifier {
            n.on_leadership(leading);
        }
        let (reason, message) = if leading {
            (
                Reason::LeadershipGained,
                "this replica leads: it acts and notifies",
            )
        } else {
            (
                Reason::LeadershipLost,
                "this replica stopped leading: another replica acts",
            )
        };
        let e = self.event(reason, now, message.to_owned());
        self.emit(vec![e], board);
    }

    /// Whether this replica leads (or leader election is off).
    pub fn set_leading(&mut self, leading: bool) {
        self.leading = leading;
    }

    /// A registry retention run ended: told when it deleted tags, and its errors once until
    /// they change.
    pub fn on_retention(
        &mut self,
        report: &crate::retention::RetentionReport,
        board: &StatusBoard,
        now: &str,
    ) {
        let mut events = Vec::new();
        if report.tags_deleted > 0 {
            events.push(self.event(
                Reason::RetentionDone,
                now,
                format!("registry retention deleted {} tags", report.tags_deleted),
            ));
        }
        let errors = report.errors.first().map(|first| {
            let first = crate::notify::events::stable(first);
            format!(
                "registry retention met {} errors; the first: {first}",
                report.errors.len()
            )
        });
        if let Some(message) = errors.as_ref().filter(|_| errors != self.retention_errors) {
            events.push(self.event(Reason::RetentionFailed, now, message.clone()));
        }
        self.retention_errors = errors;
        self.emit(events, board);
    }

    fn event(&self, reason: Reason, at: &str, message: String) -> Event {
        Event {
            at: at.to_owned(),
            severity: reason.severity(),
            reason,
            app: None,
            source: None,
            message,
            details: BTreeMap::new(),
            commit: self.commit.clone(),
        }
    }

    /// Keeps `events` in `/status`; sends them while leading (a lost leadership is only kept).
    /// `Synced` (a first look in sync) is for GitHub's statuses only: not kept, not logged.
    fn emit(&self, events: Vec<Event>, board: &StatusBoard) {
        if events.is_empty() {
            return;
        }
        let told: Vec<Event> = events
            .iter()
            .filter(|e| e.reason != Reason::Synced)
            .cloned()
            .collect();
        board.status().push_events(&told);
        for e in &told {
            tracing::info!(
                reason = e.reason.as_str(),
                app = e.app.as_ref().map(ToString::to_string).unwrap_or_default(),
                message = %e.message,
                "event"
            );
        }
        if let Some(n) = self.notifier.as_ref().filter(|_| self.leading) {
            let sent: Vec<Event> = events
                .into_iter()
                .filter(|e| e.reason != Reason::LeadershipLost)
                .collect();
            n.send(&sent);
        }
    }
}

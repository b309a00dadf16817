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
            leading: false,
        }
    }

    /// The desired state was (re)loaded: the commit, the targets, and files rejected or fixed.
    pub fn on_desired(&mut self, store: &DesiredStore, board: &StatusBoard, now: &str) {
        self.commit = match &self.revision {
            Some(r) => status::revision_commit(r),
            None => status::git_head(store.root()).map(|h| h.commit),
        };
        board.status().desired_revision = self.commit.clone();
        if let Some(n) = &self.notifier {
            n.configure(&store.state.notifications, store.root());
        }
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
            self.rejected.insert(file.clone(), text);
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
        let events = self.tracker.on_report(
            report,
            Stamp {
                at: now,
                source,
                commit: self.commit.as_deref(),
            },
        );
        self.emit(events, board);
    }

    /// An app is no longer managed.
    pub fn forget(&mut self, app: &AppKey) {
        self.tracker.forget(app);
    }

    /// Leadership changed (only with leader election).
    pub fn on_leadership(&mut self, leading: bool, elected: bool, board: &StatusBoard, now: &str) {
        let was = self.leading;
        self.leading = leading;
        if !elected || was == leading {
            return;
        }
        // Whoever leads next announces from its own first look.
        self.tracker.clear();
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

    /// A registry retention run ended: told when it deleted tags or met errors.
    pub fn on_retention(
        &mut self,
        report: &crate::retention::RetentionReport,
        board: &StatusBoard,
        now: &str,
    ) {
        if report.tags_deleted == 0 && report.errors.is_empty() {
            return;
        }
        let message = if report.errors.is_empty() {
            format!("registry retention deleted {} tags", report.tags_deleted)
        } else {
            format!(
                "registry retention deleted {} tags and met {} errors; the first: {}",
                report.tags_deleted,
                report.errors.len(),
                report.errors[0]
            )
        };
        let e = self.event(Reason::RetentionDone, now, message);
        self.emit(vec![e], board);
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
    fn emit(&self, events: Vec<Event>, board: &StatusBoard) {
        if events.is_empty() {
            return;
        }
        board.status().push_events(&events);
        for e in &events {
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

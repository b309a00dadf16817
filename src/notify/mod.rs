//! Notifications: what the controller decided, told to people.
//!
//! Three parts, data flowing one way:
//!
//! 1. [`Event`]: one model for everything worth telling (an app changed, failed, recovered; a
//!    rollout stepped, promoted, rolled back; a desired-state file rejected or fixed; retention
//!    done; leadership). Each carries a severity, a [`Reason`], a **stable** message (no
//!    durations, timestamps or request ids: those go in `details`), the app and the
//!    desired-state commit. [`Event::key`] is built from the stable parts only, so identical
//!    events are recognised as such (Flux's dedup broke on "finished in 2.08s",
//!    fluxcd/notification-controller#509).
//! 2. [`events::Tracker`] (pure): turns each app's reports into events by comparing with what
//!    was last announced for it, so the steady state says nothing.
//! 3. [`deliver::Notifier`]: routes events to the targets declared by `kind: Notification`
//!    documents ([`NotificationSpec`]), each with a bounded queue, grouping, a dedup window,
//!    retries that honour `Retry-After`, and a drop counter. Sending never blocks a pass.
//!
//! Only the leader sends.

pub mod deliver;
pub mod events;
pub mod render;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::spec::{AppKey, Source};

/// How bad an event is. Flux's two levels: `info` forwards everything, `error` only errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// Something was done or became well.
    Info,
    /// Something needs a person.
    Error,
}

impl Severity {
    /// As JSON and YAML spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Error => "error",
        }
    }
}

/// Why an event happened: the vocabulary of `Notification` filters (`reasons:`) and of the
/// `events` command. Names are PascalCase, like Kubernetes event reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Reason {
    /// A change is under way for an app (a write sent, a new revision awaited, a rollout
    /// started). Commit status `pending`; chat targets leave it out unless asked for.
    Progressing,
    /// Drift corrected or a desired change made: the app came to rest in sync after writes.
    Applied,
    /// The app failed (Azure refused, a revision did not start, the spec cannot be reached,
    /// the app is missing).
    Failed,
    /// A failed app is in sync again.
    Recovered,
    /// A replica's first look (after it started or took over) found the app in sync. Told to
    /// GitHub only, and only where the commit's status for the app is still `pending` or
    /// `failure` (a leader that died before telling the end of a change); chat targets leave it
    /// out unless `reasons:` names it.
    Synced,
    /// A rollout moved to its next step, or waits for approval.
    RolloutStep,
    /// A rollout promoted its new revision to all traffic.
    RolloutPromoted,
    /// A rollout rolled back to its stable revision (with the analysis numbers).
    RolledBack,
    /// A desired-state file has problems; its apps keep their last good spec.
    DesiredStateRejected,
    /// A rejected desired-state file is clean again.
    DesiredStateFixed,
    /// Registry retention deleted tags.
    RetentionDone,
    /// Registry retention met errors (told once until they change).
    RetentionFailed,
    /// This replica became the leader.
    LeadershipGained,
    /// This replica stopped leading (recorded, never sent: only the leader sends).
    LeadershipLost,
}

impl Reason {
    /// Every reason, in a fixed order (for the schema and messages).
    pub const ALL: [Reason; 14] = [
        Reason::Progressing,
        Reason::Applied,
        Reason::Failed,
        Reason::Recovered,
        Reason::Synced,
        Reason::RolloutStep,
        Reason::RolloutPromoted,
        Reason::RolledBack,
        Reason::DesiredStateRejected,
        Reason::DesiredStateFixed,
        Reason::RetentionDone,
        Reason::RetentionFailed,
        Reason::LeadershipGained,
        Reason::LeadershipLost,
    ];

    /// As YAML and JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Progressing => "Progressing",
            Reason::Applied => "Applied",
            Reason::Failed => "Failed",
            Reason::Recovered => "Recovered",
            Reason::Synced => "Synced",
            Reason::RolloutStep => "RolloutStep",
            Reason::RolloutPromoted => "RolloutPromoted",
            Reason::RolledBack => "RolledBack",
            Reason::DesiredStateRejected => "DesiredStateRejected",
            Reason::DesiredStateFixed => "DesiredStateFixed",
            Reason::RetentionDone => "RetentionDone",
            Reason::RetentionFailed => "RetentionFailed",
            Reason::LeadershipGained => "LeadershipGained",
            Reason::LeadershipLost => "LeadershipLost",
        }
    }

    /// The reason spelled `s`, if any.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The severity events of this reason carry.
    pub fn severity(self) -> Severity {
        match self {
            Reason::Failed
            | Reason::RolledBack
            | Reason::DesiredStateRejected
            | Reason::RetentionFailed => Severity::Error,
            _ => Severity::Info,
        }
    }
}

/// One thing the controller decided or saw, worth telling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When (RFC 3339). Not part of [`Event::key`].
    pub at: String,
    /// `info` or `error`.
    pub severity: Severity,
    /// Why.
    pub reason: Reason,
    /// The app it is about (`None`: the controller, a file, the registry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppKey>,
    /// Where the app (or the rejected file) is written: `FILE` or `FILE:LINE:COLUMN`. Filters
    /// by directory match on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// What happened, for people, stable: the same facts give the same text.
    pub message: String,
    /// The volatile facts: Azure's request ids, before -> after per action, analysis numbers,
    /// counts. Shown by the targets, never part of [`Event::key`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    /// The full desired-state commit the controller was applying (40 hex digits), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl Event {
    /// The identity of this event for deduplication: reason, app, stable message and commit;
    /// never the time or the details.
    pub fn key(&self) -> String {
        let app = self.app.as_ref().map(|a| {
            format!(
                "{}/{}/{}",
                a.subscription.as_str(),
                a.resource_group.as_str(),
                a.name.as_str()
            )
        });
        format!(
            "{}|{}|{}|{}",
            self.reason.as_str(),
            app.as_deref().unwrap_or("-"),
            self.commit.as_deref().unwrap_or("-"),
            self.message
        )
    }
}

/// A secret named, never written: the environment variable or the file (a mounted Key Vault
/// secret, a Kubernetes secret volume) that holds it. Read when a message is sent, so a
/// rotated secret is picked up without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `fromEnv: NAME`.
    Env(String),
    /// `fromFile: /path`.
    File(PathBuf),
}

/// A URL: written inline (only one without a query string or a token in it), or named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlRef {
    /// Written in the YAML (no secret in it: `validate` refuses query strings and tokens).
    Inline(String),
    /// Named: read from the environment or a file when sending.
    Secret(SecretRef),
}

/// Where a `Notification` sends, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Microsoft Teams through a Workflows webhook ("When a Teams webhook request is received"):
    /// an Adaptive Card. Office 365 connectors are retired.
    Teams {
        /// The workflow's URL (it carries a signature: always named, never inline).
        url: UrlRef,
    },
    /// A Slack incoming webhook (`https://hooks.slack.com/services/...`).
    Slack {
        /// The webhook's URL (the path is the secret: always named).
        url: UrlRef,
    },
    /// A generic JSON webhook: the events as JSON, signed `X-Signature: sha256=<hex HMAC of the
    /// body>` when a secret is given (Flux's `generic-hmac` convention).
    Webhook {
        /// Where to POST.
        url: UrlRef,
        /// The HMAC key.
        secret: Option<SecretRef>,
    },
    /// GitHub commit status on the desired-state commit, context `aca-reconciler/<resource group>/<app>`:
    /// `pending` while applying or rolling out, `success` in sync, `failure` failed or rolled
    /// back.
    GitHub {
        /// `owner/repo` of the desired-state repository.
        repository: String,
        /// A token with `statuses:write` (fine-grained) or `repo:status`.
        token: SecretRef,
        /// The API's base URL (GitHub Enterprise: `https://HOST/api/v3`); `None`: the
        /// `--github-api-url` flag, by default `https://api.github.com`.
        api_url: Option<String>,
    },
}

impl Target {
    /// The `type:` value.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Teams { .. } => "teams",
            Target::Slack { .. } => "slack",
            Target::Webhook { .. } => "webhook",
            Target::GitHub { .. } => "github",
        }
    }
}

/// Which events a target gets. Every condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// `info`: everything; `error`: errors only.
    pub severity: Severity,
    /// Only these reasons. `None`: every reason but `Progressing` (commit status targets take
    /// every reason they have a state for).
    pub reasons: Option<Vec<Reason>>,
    /// App name globs (`*`, `?`); empty: any app. An event with no app passes.
    pub apps: Vec<String>,
    /// Resource groups (compared without case); empty: any.
    pub resource_groups: Vec<String>,
    /// Directories of the desired-state tree, relative to its root; an app passes when its
    /// file is under one. Empty: any.
    pub directories: Vec<PathBuf>,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            severity: Severity::Info,
            reasons: None,
            apps: Vec::new(),
            resource_groups: Vec::new(),
            directories: Vec::new(),
        }
    }
}

/// A checked `kind: Notification` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationSpec {
    /// `metadata.name`: names the target in logs, metrics (`target` label) and `/status`.
    /// Never the URL.
    pub name: String,
    /// Where it is written.
    pub source: Source,
    /// Where to send.
    pub target: Target,
    /// What to send.
    pub filter: Filter,
    /// Identical events (same [`Event::key`]) are sent once per window (default 5 minutes).
    pub window: Duration,
}

/// The default dedup window, Flux's `--rate-limit-interval`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

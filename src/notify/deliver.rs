//! Delivery: events to the targets `kind: Notification` documents declare.
//!
//! ```text
//!  send(&[Event])            (the controller's loop; never waits)
//!    │  per target: filter -> dedup window -> try_send on a bounded queue (full: dropped)
//!    ▼
//!  worker task per target    (spawned by configure)
//!    │  first event, then collect for the grouping delay -> one message (GitHub: one status
//!    │  per event, the last per commit and context)
//!    ▼
//!  HTTP POST with retries    (network errors, 5xx, 429, GitHub's rate limit: backoff,
//!                             Retry-After / x-ratelimit-reset a floor that also holds back the
//!                             next message; other 4xx: dropped at once with a hint), then
//!                             dropped with a counter
//! ```
//!
//! How the controller uses it:
//!
//! ```text
//! let notifier = Notifier::new(NotifierOptions { github_api_url, ..Default::default() },
//!                              metrics.notifications.clone());
//! notifier.configure(&desired.notifications, &root);  // each (re)load, inside the runtime
//! notifier.send(&events);                              // while leading only
//! notifier.shutdown(Duration::from_secs(5)).await;     // on stop
//! ```
//!
//! # Guarantees
//! - [`Notifier::send`] takes a lock, filters and enqueues: it never awaits the network. A slow
//!   or hanging target fills its own queue, whose overflow is counted and logged once per burst.
//! - While a worker waits (a `Retry-After`, a backoff), later events wait in its queue and go
//!   out grouped in the next message: there is never more than one request in flight per
//!   target, so a throttled target gets no storm.
//! - Every event routed to a target ends as exactly one of `sent`, `failed`, `dropped` or
//!   `deduplicated` in `acar_notifications_total{target,result}`.
//! - URLs, tokens and HMAC keys are read when a message is sent and never written to a log, an
//!   error or a metric: targets are named by their Notification's `name` only, and HTTP errors
//!   are reported without their URL.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::render::{self, CommitStatus};
use super::{Event, NotificationSpec, Reason, SecretRef, Severity, Target, UrlRef};

/// Labels of `acar_notifications_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// The Notification's `metadata.name` (never its URL).
    pub target: String,
    /// `sent`, `failed` (refused, or retries spent), `dropped` (queue full, target removed or
    /// stopping) or `deduplicated` (repeats the app's last event within the window).
    pub result: String,
}

/// `acar_notifications_total`: events by target and result.
pub type NotificationMetrics = Family<NotificationLabels, Counter>;

/// What became of an event routed to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (a 2xx answer).
    Sent,
    /// The target refused it, could not be reached within the retries, or its secret could not
    /// be read.
    Failed,
    /// Never tried: the queue was full, the target was removed, or the process was stopping.
    Dropped,
    /// Within the target's window, the event repeats the last one sent for its app (same
    /// [`Event::key`]), or, for an event without an app, one sent already.
    Deduplicated,
}

impl Outcome {
    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
            Outcome::Deduplicated => "deduplicated",
        }
    }
}

/// How the notifier reaches targets. The defaults are for production; tests shorten the
/// delays.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// GitHub's API for `type: github` targets without their own `apiUrl`.
    pub github_api_url: String,
    /// Events waiting per target; more are dropped (and counted).
    pub queue_capacity: usize,
    /// How long a worker collects events after the first before sending them as one message.
    pub grouping_delay: Duration,
    /// Events shown in one chat message; the rest are summed up as "and K more".
    pub max_shown: usize,
    /// Events in one message at most (a generic webhook gets them all).
    pub max_batch: usize,
    /// Timeout of one HTTP exchange (connecting included).
    pub timeout: Duration,
    /// Tries per message, the first included.
    pub tries: usize,
    /// The first backoff delay.
    pub retry_min: Duration,
    /// The longest backoff delay.
    pub retry_max: Duration,
    /// The longest `Retry-After` obeyed; a longer one is cut to this.
    pub max_retry_after: Duration,
    /// `target_url` of GitHub commit statuses (e.g. the dashboard), if any.
    pub status_url: Option<String>,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        Self {
            github_api_url: "https://api.github.com".to_owned(),
            queue_capacity: 256,
            grouping_delay: Duration::from_secs(2),
            max_shown: 50,
            max_batch: 1000,
            timeout: Duration::from_secs(10),
            // Flux: go-retryablehttp with RetryMax 4 and waits of 2 s to 30 s.
            tries: 4,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(600),
            status_url: None,
        }
    }
}

/// Teams drops Workflows messages over about 28 KB (the incoming-webhook limit; assumed to hold
/// for Workflows, research A3).
const TEAMS_BODY_MAX: usize = 24 * 1024;
/// Slack refuses very large payloads; stay well under its 40,000-character message limit.
const SLACK_BODY_MAX: usize = 32 * 1024;
/// Apps whose last event a target remembers for dedup; beyond, entries older than the window
/// go, then all.
const DEDUP_APPS_MAX: usize = 10_000;
/// Pages of a commit's combined status read at most (100 contexts each).
const GITHUB_STATUS_PAGES: usize = 20;
/// GitHub statuses remembered (per process) before the memory is cleared.
const GITHUB_MEMORY_MAX: usize = 10_000;

/// Routes events to targets. Cheap to call from the controller's loop: [`Notifier::send`]
/// never blocks and never fails.
#[derive(Debug)]
pub struct Notifier {
    options: Arc<NotifierOptions>,
    http: Result<reqwest::Client, String>,
    metrics: NotificationMetrics,
    /// Events enqueued and not yet accounted for, for [`Notifier::flush`].
    pending: Arc<watch::Sender<usize>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    root: PathBuf,
    routes: Vec<Route>,
    stopped: bool,
}

/// One target: its spec, its queue and its dedup memory.
#[derive(Debug)]
struct Route {
    spec: NotificationSpec,
    tx: Option<mpsc::Sender<Event>>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    /// Keys of events without an app sent within the window, with when.
    seen: HashMap<String, Instant>,
    /// Per app: the key of the last event sent for it, with when. An app's event is a
    /// duplicate only if it repeats that last one (within the window): Failed, Recovered,
    /// Failed again all go out, so the receiver never believes a failing app recovered.
    last: HashMap<String, (String, Instant)>,
    /// The queue overflowed and has not taken an event since (one log line per burst).
    overflowing: bool,
    /// Set to make the worker forget what it knows of GitHub's statuses before its next batch.
    forget: Arc<AtomicBool>,
}

impl Notifier {
    /// A notifier with no targets yet, counting into `metrics` (the controller passes
    /// `Metrics::notifications`).
    pub fn new(options: NotifierOptions, metrics: NotificationMetrics) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(render::CONTROLLER)
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            // A redirect is answered as a refusal: the body is not sent on to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"));
        Self {
            options: Arc::new(options),
            http,
            metrics,
            pending: Arc::new(watch::Sender::new(0)),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The targets now: on every desired-state reload. `root` is the desired-state root that
    /// `directories:` filters are relative to. A target whose `name`, `type`, destination and
    /// window are unchanged keeps its queue and dedup memory (its filter is replaced); a removed
    /// one stops, dropping what it had queued. Must be called within a tokio runtime.
    pub fn configure(&self, specs: &[NotificationSpec], root: &Path) {
        let mut state = self.lock();
        state.root = root.to_path_buf();
        if state.stopped {
            return;
        }
        let mut old = std::mem::take(&mut state.routes);
        let mut routes = Vec::with_capacity(specs.len());
        for spec in specs {
            if routes.iter().any(|r: &Route| r.spec.name == spec.name) {
                continue;
            }
            let same = old.iter().position(|r| {
                r.spec.name == spec.name
                    && r.spec.target == spec.target
                    && r.spec.window == spec.window
            });
            match same {
                Some(i) => {
                    let mut route = old.swap_remove(i);
                    route.spec = spec.clone();
                    self.revive(&mut route);
                    routes.push(route);
                }
                None => routes.push(self.start(spec)),
            }
        }
        for gone in old {
            tracing::info!(notification = %gone.spec.name, "notification target removed or changed; its queue is dropped");
            gone.cancel.cancel();
        }
        state.routes = routes;
    }

    fn start(&self, spec: &NotificationSpec) -> Route {
        let cancel = CancellationToken::new();
        let mut route = Route {
            spec: spec.clone(),
            tx: None,
            cancel: cancel.clone(),
            task: None,
            seen: HashMap::new(),
            last: HashMap::new(),
            overflowing: false,
            forget: Arc::new(AtomicBool::new(false)),
        };
        let http = match &self.http {
            Ok(http) => http.clone(),
            Err(why) => {
                tracing::error!(notification = %spec.name, "notifications cannot be sent: {why}");
                return route;
            }
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(notification = %spec.name, "notifications cannot be sent: configured outside the async runtime");
            return route;
        };
        let (tx, rx) = mpsc::channel(self.options.queue_capacity.max(1));
        let worker = Worker {
            name: spec.name.clone(),
            target: spec.target.clone(),
            options: Arc::clone(&self.options),
            http,
            metrics: self.metrics.clone(),
            pending: Arc::clone(&self.pending),
            github_memory: HashMap::new(),
            github_listed: HashMap::new(),
            forget: Arc::clone(&route.forget),
            not_before: Mutex::new(None),
        };
        route.task = Some(runtime.spawn(worker.run(rx, cancel)));
        route.tx = Some(tx);
        route
    }

    /// A worker that ended while its route lives has panicked: logged (once, naming the
    /// target) and started again, keeping the route's dedup memory. What it held is lost.
    fn revive(&self, route: &mut Route) {
        let dead = route
            .task
            .as_ref()
            .is_some_and(|t| t.is_finished() && !route.cancel.is_cancelled());
        if !dead {
            return;
        }
        tracing::error!(notification = %route.spec.name, "the notification worker of this target stopped unexpectedly (a bug: please report it); the events it held are lost; starting it again");
        let fresh = self.start(&route.spec);
        route.tx = fresh.tx;
        route.cancel = fresh.cancel;
        route.task = fresh.task;
        route.forget = fresh.forget;
    }

    /// Hands `events` to every target whose filter takes them. Returns at once: each target's
    /// worker sends later.
    pub fn send(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut state = self.lock();
        let State { root, routes, .. } = &mut *state;
        for route in routes.iter_mut() {
            self.revive(route);
            let window = route.spec.window;
            route
                .seen
                .retain(|_, at| now.saturating_duration_since(*at) < window);
            if route.last.len() >= DEDUP_APPS_MAX {
                route
                    .last
                    .retain(|_, (_, at)| now.saturating_duration_since(*at) < window);
                if route.last.len() >= DEDUP_APPS_MAX {
                    route.last.clear();
                }
            }
            let mut dropped = 0_u64;
            for e in events {
                if !takes(&route.spec, root, e) {
                    continue;
                }
                let key = e.key();
                let app = e.app.as_ref().map(app_id);
                let duplicate = match &app {
                    Some(app) => route.last.get(app).is_some_and(|(last, at)| {
                        *last == key && now.saturating_duration_since(*at) < window
                    }),
                    None => route.seen.contains_key(&key),
                };
                if duplicate {
                    self.count(&route.spec.name, Outcome::Deduplicated, 1);
                    continue;
                }
                let Some(tx) = &route.tx else {
                    dropped += 1;
                    continue;
                };
                self.pending.send_modify(|n| *n += 1);
                match tx.try_send(e.clone()) {
                    Ok(()) => {
                        match app {
                            Some(app) => {
                                route.last.insert(app, (key, now));
                            }
                            None => {
                                route.seen.insert(key, now);
                            }
                        }
                        route.overflowing = false;
                    }
                    Err(_) => {
                        self.pending.send_modify(|n| *n = n.saturating_sub(1));
                        dropped += 1;
                        if !route.overflowing {
                            route.overflowing = true;
                            tracing::warn!(
                                notification = %route.spec.name,
                                "notification queue full ({} events): the target is slow or throttling; events are dropped until it drains (acar_notifications_total{{result=\"dropped\"}})",
                                self.options.queue_capacity
                            );
                        }
                    }
                }
            }
            if dropped > 0 {
                self.count(&route.spec.name, Outcome::Dropped, dropped);
            }
        }
    }

    fn count(&self, target: &str, outcome: Outcome, n: u64) {
        count(&self.metrics, target, outcome, n);
    }

    /// This replica gained (`leading`) or lost leadership. GitHub targets forget what they
    /// knew of GitHub's statuses and their dedup memory, so that statuses are read from GitHub
    /// again when this replica leads (another leader may have posted since). On losing it,
    /// what GitHub targets have queued or are retrying is dropped (counted as `dropped`), so
    /// that a former leader's stale statuses do not land after the new leader's. Chat and
    /// webhook targets are left alone. The controller calls it on every leadership change,
    /// before sending the new term's events.
    pub fn on_leadership(&self, leading: bool) {
        let mut state = self.lock();
        if state.stopped {
            return;
        }
        let routes = std::mem::take(&mut state.routes);
        let mut kept = Vec::with_capacity(routes.len());
        for mut route in routes {
            if !matches!(route.spec.target, Target::GitHub { .. }) {
                kept.push(route);
                continue;
            }
            if leading {
                route.seen.clear();
                route.last.clear();
                route.forget.store(true, Ordering::Relaxed);
                kept.push(route);
            } else {
                // A fresh worker: the old one drops its queue and its memory with it.
                route.cancel.cancel();
                kept.push(self.start(&route.spec));
            }
        }
        state.routes = kept;
    }

    /// Waits until every event handed to [`Notifier::send`] so far is sent, failed or dropped,
    /// at most `within`. True if all were.
    pub async fn flush(&self, within: Duration) -> bool {
        let mut rx = self.pending.subscribe();
        tokio::time::timeout(within, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops: no more events are taken, queued ones are sent without waiting for the grouping
    /// delay, for at most `within`; what is still unsent then is dropped.
    pub async fn shutdown(&self, within: Duration) {
        let routes = {
            let mut state = self.lock();
            state.stopped = true;
            std::mem::take(&mut state.routes)
        };
        let mut tasks = Vec::new();
        let mut cancels = Vec::new();
        for mut route in routes {
            route.tx = None;
            cancels.push(route.cancel.clone());
            if let Some(task) = route.task.take() {
                tasks.push(task);
            }
        }
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!(
                "notifications still unsent after {}s at shutdown are dropped",
                within.as_secs()
            );
        }
        for cancel in cancels {
            cancel.cancel();
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for route in &self.lock().routes {
            route.cancel.cancel();
        }
    }
}

/// An app's identity in the dedup memory.
fn app_id(a: &crate::spec::AppKey) -> String {
    format!(
        "{}/{}/{}",
        a.subscription.as_str(),
        a.resource_group.as_str(),
        a.name.as_str()
    )
}

fn count(metrics: &NotificationMetrics, target: &str, outcome: Outcome, n: u64) {
    metrics
        .get_or_create(&NotificationLabels {
            target: target.to_owned(),
            result: outcome.as_str().to_owned(),
        })
        .inc_by(n);
}

/// Whether `spec`'s filter takes `e`.
fn takes(spec: &NotificationSpec, root: &Path, e: &Event) -> bool {
    let f = &spec.filter;
    if f.severity == Severity::Error && e.severity != Severity::Error {
        return false;
    }
    let github = matches!(spec.target, Target::GitHub { .. });
    let reason = match &f.reasons {
        Some(reasons) => reasons.contains(&e.reason),
        None if github => true,
        None => !matches!(
            e.reason,
            Reason::Progressing | Reason::Synced | Reason::LeadershipLost
        ),
    };
    if !reason || (github && CommitStatus::of(e).is_none()) {
        return false;
    }
    if let Some(app) = &e.app {
        if !f.apps.is_empty() && !f.apps.iter().any(|g| glob(g, &app.name)) {
            return false;
        }
        if !f.resource_groups.is_empty()
            && !f
                .resource_groups
                .iter()
                .any(|g| g.to_lowercase() == app.resource_group.to_lowercase())
        {
            return false;
        }
    }
    if !f.directories.is_empty() {
        return match &e.source {
            Some(source) => {
                let file = normal(Path::new(file_of(source)));
                let root = normal(root);
                let rel = file.strip_prefix(&root).unwrap_or(&file);
                f.directories.iter().any(|d| rel.starts_with(normal(d)))
            }
            // An event about no app (and no file) passes app filters; an app whose file is not
            // known cannot be placed under a directory.
            None => e.app.is_none(),
        };
    }
    true
}

/// `FILE` of `FILE`, `FILE:LINE` or `FILE:LINE:COLUMN`.
fn file_of(source: &str) -> &str {
    let mut file = source;
    for _ in 0..2 {
        match file.rsplit_once(':') {
            Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => {
                file = head;
            }
            _ => break,
        }
    }
    file
}

/// `p` without `.` components, so `./desired-state/a` is under `desired-state`.
fn normal(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Whether `name` matches `pattern` (`*`: any run, `?`: any one character).
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// One target's sender, run as a task.
struct Worker {
    name: String,
    target: Target,
    options: Arc<NotifierOptions>,
    http: reqwest::Client,
    metrics: NotificationMetrics,
    pending: Arc<watch::Sender<usize>>,
    /// GitHub: (sha, context) -> (state, description) last posted there, by this process or
    /// (read from GitHub once per commit) by an earlier leader.
    github_memory: HashMap<(String, String), (&'static str, String)>,
    /// GitHub: the commits whose statuses were read, and whether reading them succeeded.
    github_listed: HashMap<String, bool>,
    /// Set by [`Notifier::on_leadership`]: clear the two above before the next batch.
    forget: Arc<AtomicBool>,
    /// No request before this: the last `Retry-After` or rate-limit reset, which outlives the
    /// message that was told (its tries may have run out).
    not_before: Mutex<Option<Instant>>,
}

impl Worker {
    fn account(&self, outcome: Outcome, n: usize) {
        if n == 0 {
            return;
        }
        count(&self.metrics, &self.name, outcome, n as u64);
        self.pending.send_modify(|p| *p = p.saturating_sub(n));
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Event>, cancel: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                e = rx.recv() => match e {
                    Some(e) => e,
                    None => break,
                },
            };
            let mut batch = vec![first];
            let until = Instant::now() + self.options.grouping_delay;
            while batch.len() < self.options.max_batch.max(1) {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    r = tokio::time::timeout_at(until, rx.recv()) => match r {
                        Ok(Some(e)) => batch.push(e),
                        // Closed (stopping: send now) or the delay is over.
                        _ => break,
                    },
                }
            }
            let n = batch.len();
            let done = AtomicUsize::new(0);
            let cancelled = tokio::select! {
                biased;
                () = cancel.cancelled() => true,
                () = self.deliver(batch, &done) => false,
            };
            if cancelled {
                self.account(Outcome::Dropped, n.saturating_sub(done.into_inner()));
                break;
            }
        }
        rx.close();
        let mut left = 0;
        while rx.try_recv().is_ok() {
            left += 1;
        }
        self.account(Outcome::Dropped, left);
    }

    /// Sends one batch; accounts for each event as it ends (`done` counts them, so a cancelled
    /// delivery knows what is left).
    async fn deliver(&mut self, batch: Vec<Event>, done: &AtomicUsize) {
        let n = batch.len();
        let finish = |w: &Self, outcome: Outcome, k: usize| {
            w.account(outcome, k);
            done.fetch_add(k, Ordering::Relaxed);
        };
        let result = match &self.target {
            Target::Teams { url } => {
                let body = fit(
                    &batch,
                    self.options.max_shown,
                    TEAMS_BODY_MAX,
                    render::teams,
                );
                self.post_to(url, body, None).await
            }
            Target::Slack { url } => {
                let body = fit(
                    &batch,
                    self.options.max_shown,
                    SLACK_BODY_MAX,
                    render::slack,
                );
                self.post_to(url, body, None).await
            }
            Target::Webhook { url, secret } => {
                let body = render::webhook(&self.name, &batch).to_string();
                self.post_to(url, body, secret.as_ref()).await
            }
            Target::GitHub { .. } => {
                self.github(&batch, done).await;
                return;
            }
        };
        finish(
            self,
            if result.is_ok() {
                Outcome::Sent
            } else {
                Outcome::Failed
            },
            n,
        );
    }

    /// POSTs `body` to the URL `url` names, signed with `secret` if given.
    async fn post_to(
        &self,
        url: &UrlRef,
        body: String,
        secret: Option<&SecretRef>,
    ) -> Result<(), ()> {
        let url = match resolve_url(url).await {
            Ok(url) => url,
            Err(why) => {
                tracing::warn!(notification = %self.name, "notification not sent: {why}");
                return Err(());
            }
        };
        let signature = match secret {
            None => None,
            Some(s) => match read_secret(s)
                .await
                .and_then(|key| sign(&key, body.as_bytes()))
            {
                Ok(sig) => Some(sig),
                Err(why) => {
                    tracing::warn!(notification = %self.name, "notification not sent: the HMAC key: {why}");
                    return Err(());
                }
            },
        };
        self.post_with_retries("the message", || {
            let mut req = self
                .http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(sig) = &signature {
                req = req.header("X-Signature", format!("sha256={sig}"));
            }
            req
        })
        .await
    }

    /// Commit statuses: the last per (commit, context) in the batch, skipped when this process
    /// already posted the same state and description there.
    async fn github(&mut self, batch: &[Event], done: &AtomicUsize) {
        let Target::GitHub {
            repository,
            token,
            api_url,
        } = self.target.clone()
        else {
            return;
        };
        let finish = |w: &Self, outcome: Outcome, k: usize| {
            w.account(outcome, k);
            done.fetch_add(k, Ordering::Relaxed);
        };
        if self.forget.swap(false, Ordering::Relaxed) {
            self.github_memory.clear();
            self.github_listed.clear();
        }
        // Each with whether it is a `Synced` (posted only to repair what GitHub shows).
        let mut statuses: Vec<(CommitStatus, bool)> = Vec::new();
        let mut superseded = 0;
        for e in batch {
            let Some(s) = CommitStatus::of(e) else {
                superseded += 1;
                continue;
            };
            if let Some(i) = statuses
                .iter()
                .position(|(o, _)| o.sha == s.sha && o.context == s.context)
            {
                statuses.remove(i);
                superseded += 1;
            }
            statuses.push((s, e.reason == Reason::Synced));
        }
        finish(self, Outcome::Deduplicated, superseded);
        let api = api_url
            .as_deref()
            .unwrap_or(&self.options.github_api_url)
            .trim_end_matches('/')
            .to_owned();
        let prepared = check_url(&api)
            .map_err(|why| format!("the GitHub API URL {why}"))
            .and_then(|_| {
                valid_repository(&repository)
                    .then_some(())
                    .ok_or_else(|| "the repository must be written OWNER/REPO".to_owned())
            });
        let token = match prepared {
            Ok(()) => read_secret(&token)
                .await
                .map_err(|w| format!("the token: {w}")),
            Err(why) => Err(why),
        };
        let token = match token {
            Ok(t) => t,
            Err(why) => {
                tracing::warn!(notification = %self.name, "commit statuses not sent: {why}");
                finish(self, Outcome::Failed, statuses.len());
                return;
            }
        };
        let mut unknown = 0;
        for (s, synced) in statuses {
            let key = (s.sha.clone(), s.context.clone());
            if !self.github_memory.contains_key(&key) && !self.github_listed.contains_key(&s.sha) {
                self.list_statuses(&api, &repository, &s.sha, &token).await;
            }
            let shown = self.github_memory.get(&key);
            if synced {
                // A first look found the app in sync: post only over a pending or failure
                // that a leader which died left there.
                let repair = shown.is_some_and(|(state, _)| *state != "success");
                if !repair {
                    if shown.is_none() && self.github_listed.get(&s.sha) != Some(&true) {
                        // GitHub's statuses could not be read: not posted rather than a burst
                        // of posts at start-up to an API that may be throttling.
                        unknown += 1;
                        finish(self, Outcome::Failed, 1);
                    } else {
                        finish(self, Outcome::Deduplicated, 1);
                    }
                    continue;
                }
            }
            if self
                .github_memory
                .get(&key)
                .is_some_and(|(state, d)| *state == s.state && *d == s.description)
            {
                finish(self, Outcome::Deduplicated, 1);
                continue;
            }
            let url = format!("{api}/repos/{repository}/statuses/{}", s.sha);
            let body = s.body(self.options.status_url.as_deref()).to_string();
            let r = self
                .post_with_retries(&format!("the commit status {}", s.context), || {
                    self.http
                        .post(&url)
                        .bearer_auth(&token)
                        .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                        .header("X-GitHub-Api-Version", "2022-11-28")
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                })
                .await;
            if r.is_ok() {
                if self.github_memory.len() >= GITHUB_MEMORY_MAX {
                    self.github_memory.clear();
                }
                self.github_memory.insert(key, (s.state, s.description));
                finish(self, Outcome::Sent, 1);
            } else {
                finish(self, Outcome::Failed, 1);
            }
        }
        if unknown > 0 {
            tracing::warn!(notification = %self.name, "{unknown} in-sync commit statuses not posted: GitHub's statuses of the commit could not be read, so whether it still shows them pending or failed is unknown");
        }
    }

    /// Reads the latest status of each context GitHub holds for `sha` (the combined status,
    /// page by page, one try each) into the memory, so that a new leader does not post again
    /// what the old one posted (Flux lists them before each post,
    /// `internal/notifier/github.go`), and knows what a dead leader left pending. Any failure
    /// just means posting (a `Synced`: not posting). Returns whether every page was read.
    async fn list_statuses(&mut self, api: &str, repository: &str, sha: &str, token: &str) -> bool {
        if self.github_listed.len() >= GITHUB_MEMORY_MAX {
            self.github_listed.clear();
        }
        let read = self.read_statuses(api, repository, sha, token).await;
        self.github_listed.insert(sha.to_owned(), read);
        read
    }

    async fn read_statuses(&mut self, api: &str, repository: &str, sha: &str, token: &str) -> bool {
        let prefix = format!("{}/", render::CONTROLLER);
        let mut seen = 0_u64;
        for page in 1..=GITHUB_STATUS_PAGES {
            // GitHub: "GET /repos/{owner}/{repo}/commits/{ref}/status" returns the most recent
            // status per context, `statuses` paginated (per_page at most 100), with
            // `total_count` contexts (docs.github.com/en/rest/commits/statuses).
            let url =
                format!("{api}/repos/{repository}/commits/{sha}/status?per_page=100&page={page}");
            let not_before = *self
                .not_before
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(at) = not_before {
                tokio::time::sleep_until(at).await;
            }
            let resp = self
                .http
                .get(&url)
                .bearer_auth(token)
                .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .send()
                .await;
            let combined: serde_json::Value = match resp {
                Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
                Ok(r) => {
                    let code = r.status().as_u16();
                    let wait = github_rate_limited(code, r.headers())
                        .then(|| github_rate_limit_wait(r.headers(), self.options.max_retry_after))
                        .flatten();
                    if let Some(wait) = wait {
                        self.hold_until(Instant::now() + wait);
                    }
                    tracing::debug!(notification = %self.name, "reading the statuses of a commit answered HTTP {code}; posting anyway");
                    return false;
                }
                Err(e) => {
                    tracing::debug!(notification = %self.name, "reading the statuses of a commit failed ({}); posting anyway", crate::arm::without_url(&e));
                    return false;
                }
            };
            let Some(listed) = combined["statuses"].as_array() else {
                tracing::debug!(notification = %self.name, "the statuses of a commit were not GitHub's combined status; posting anyway");
                return false;
            };
            let total = combined["total_count"].as_u64().unwrap_or(0);
            seen += listed.len() as u64;
            for item in listed {
                let (Some(context), Some(state)) =
                    (item["context"].as_str(), item["state"].as_str())
                else {
                    continue;
                };
                let state = match state {
                    "pending" => "pending",
                    "success" => "success",
                    "failure" => "failure",
                    "error" => "error",
                    _ => continue,
                };
                let key = (sha.to_owned(), context.to_owned());
                if !context.starts_with(&prefix) || self.github_memory.contains_key(&key) {
                    continue;
                }
                let description = item["description"].as_str().unwrap_or("").to_owned();
                self.github_memory.insert(key, (state, description));
            }
            if listed.is_empty() || seen >= total {
                return true;
            }
        }
        tracing::debug!(notification = %self.name, "a commit has more than {} statuses; the rest were not read", GITHUB_STATUS_PAGES * 100);
        true
    }

    /// Sends the request `make` builds until a 2xx, a refusal that retrying cannot fix, or the
    /// tries are spent. Network errors, 5xx and 429 are retried with backoff; a `Retry-After`
    /// (429, 503) is a floor under the wait, and so is GitHub's rate limit (a 403 or 429 with
    /// `Retry-After` or `x-ratelimit-remaining: 0`, until `x-ratelimit-reset`). Such a wait
    /// also holds back the worker's next message. Logs once when it gives up, never the URL.
    async fn post_with_retries(
        &self,
        what: &str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(), ()> {
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(self.options.retry_min)
            .with_max_delay(self.options.retry_max)
            .with_max_times(self.options.tries.saturating_sub(1))
            .with_jitter()
            .build();
        let mut tries = 0;
        loop {
            let not_before = *self
                .not_before
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(at) = not_before {
                tokio::time::sleep_until(at).await;
            }
            tries += 1;
            let (why, floor) = match make().send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        tracing::debug!(notification = %self.name, "{what} sent");
                        return Ok(());
                    }
                    let code = status.as_u16();
                    let limited = matches!(self.target, Target::GitHub { .. })
                        && github_rate_limited(code, resp.headers());
                    let floor = if limited {
                        github_rate_limit_wait(resp.headers(), self.options.max_retry_after)
                    } else if matches!(code, 429 | 503) {
                        retry_after(resp.headers(), self.options.max_retry_after)
                    } else {
                        None
                    };
                    if let Some(f) = floor {
                        self.hold_until(Instant::now() + f);
                    }
                    if !limited && code != 429 && !status.is_server_error() {
                        let said = short_answer(resp).await;
                        tracing::warn!(
                            notification = %self.name,
                            "{what} was refused with HTTP {code}{said}; dropped without retrying: {}",
                            hint(code, &self.target)
                        );
                        return Err(());
                    }
                    if limited {
                        (
                            format!(
                                "HTTP {code}, GitHub rate limit: the token posts too many statuses too fast; they resume when the limit resets"
                            ),
                            floor,
                        )
                    } else {
                        (format!("HTTP {code}"), floor)
                    }
                }
                Err(e) => (crate::arm::without_url(&e), None),
            };
            let Some(delay) = delays.next() else {
                tracing::warn!(
                    notification = %self.name,
                    "{what} was not delivered after {tries} tries (last: {why}); dropped"
                );
                return Err(());
            };
            let wait = floor.map_or(delay, |f| f.max(delay));
            tracing::debug!(notification = %self.name, "{what}: {why}; trying again in {}ms", wait.as_millis());
            tokio::time::sleep(wait).await;
        }
    }

    /// No request to this target before `at` (a later one of two wins).
    fn hold_until(&self, at: Instant) {
        let mut not_before = self
            .not_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if not_before.is_none_or(|t| t < at) {
            *not_before = Some(at);
        }
    }
}

/// GitHub's secondary (or primary) rate limit: a 403 or 429 with `Retry-After` or
/// `x-ratelimit-remaining: 0` (docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api).
fn github_rate_limited(code: u16, headers: &reqwest::header::HeaderMap) -> bool {
    matches!(code, 403 | 429)
        && (headers.contains_key(reqwest::header::RETRY_AFTER)
            || headers
                .get("x-ratelimit-remaining")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == "0"))
}

/// How long GitHub asks to wait: `Retry-After`, else until `x-ratelimit-reset` (epoch
/// seconds), at most `max`.
fn github_rate_limit_wait(headers: &reqwest::header::HeaderMap, max: Duration) -> Option<Duration> {
    if let Some(wait) = retry_after(headers, max) {
        return Some(wait);
    }
    let reset: u64 = headers
        .get("x-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Some(Duration::from_secs(reset.saturating_sub(now)).min(max))
}

/// Renders with as many events shown as fit in `max` bytes.
fn fit(
    batch: &[Event],
    shown: usize,
    max: usize,
    render: fn(&[Event], usize) -> serde_json::Value,
) -> String {
    let mut shown = shown.max(1);
    loop {
        let body = render(batch, shown).to_string();
        if body.len() <= max || shown == 1 {
            return body;
        }
        shown /= 2;
    }
}

/// What to check after a refusal.
fn hint(code: u16, target: &Target) -> &'static str {
    match (code, target) {
        (401 | 403, Target::GitHub { .. }) => {
            "check the token: it must be valid and have statuses:write (fine-grained) or repo:status on the repository"
        }
        (404 | 422, Target::GitHub { .. }) => {
            "check the repository name, that the token can see it, and that the commit was pushed there"
        }
        (401 | 403 | 404 | 410, _) => {
            "check the webhook URL: it may have been deleted, disabled or rotated (and for a signed webhook, the HMAC key)"
        }
        (413, _) => "the target finds the message too large",
        (300..=399, _) => "the URL redirects; use the final URL",
        _ => "the target refused the message; check its URL and settings",
    }
}

/// The answer's text when it is a short code like Slack's `invalid_payload` (nothing longer
/// or richer is logged: an answer might echo what was sent).
async fn short_answer(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let text = text.trim();
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " _-.,:".contains(c));
    if !text.is_empty() && text.len() <= 100 && plain {
        format!(" ({text})")
    } else {
        String::new()
    }
}

/// `Retry-After` as seconds or an HTTP date, at most `max`.
fn retry_after(headers: &reqwest::header::HeaderMap, max: Duration) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs.min(max.as_secs())),
        Err(_) => {
            let at = crate::time::parse_http_date(v)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
        }
    };
    Some(wait.min(max))
}

/// Where a secret is, for messages (never its value).
fn place(s: &SecretRef) -> String {
    match s {
        SecretRef::Env(name) => format!("environment variable {name}"),
        SecretRef::File(path) => format!("file {}", path.display()),
    }
}

/// The secret's value, trimmed.
async fn read_secret(s: &SecretRef) -> Result<String, String> {
    let value = match s {
        SecretRef::Env(name) => {
            std::env::var(name).map_err(|_| format!("{} is not set", place(s)))?
        }
        SecretRef::File(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("cannot read {}: {}", place(s), e.kind()))?,
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{} is empty", place(s)));
    }
    Ok(value.to_owned())
}

/// The URL, read now if named, checked (https, or http to loopback only).
async fn resolve_url(url: &UrlRef) -> Result<reqwest::Url, String> {
    match url {
        UrlRef::Inline(u) => check_url(u).map_err(|why| format!("the URL {why}")),
        UrlRef::Secret(s) => {
            let u = read_secret(s).await.map_err(|w| format!("the URL: {w}"))?;
            check_url(&u).map_err(|why| format!("the URL in {} {why}", place(s)))
        }
    }
}

/// Whether `url` may be sent to; the error never repeats the URL.
fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if crate::arm::is_loopback_host(parsed.host_str().unwrap_or("")) => Ok(parsed),
        "http" => Err(
            "uses plain http to a non-loopback host; use https (plain http only for 127.0.0.0/8, ::1 and localhost)"
                .to_owned(),
        ),
        other => Err(format!("has the unsupported scheme `{other}`; use https")),
    }
}

/// `OWNER/REPO` in GitHub's alphabet (so it cannot change the request's path).
fn valid_repository(r: &str) -> bool {
    let mut parts = r.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Hex HMAC-SHA256 of `body` under `key` (Flux's `generic-hmac`).
fn sign(key: &str, body: &[u8]) -> Result<String, String> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
        .map_err(|_| "cannot be used as an HMAC key".to_owned())?;
    mac.update(body);
    Ok(mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notifier_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<Notifier>();
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("web-*", "web-api"));
        assert!(!glob("web-*", "api-web"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*-api-*", "orders-api-eu"));
        assert!(glob("", "") && !glob("", "a"));
    }

    #[test]
    fn source_positions_are_cut() {
        assert_eq!(file_of("apps/a.yaml:3:5"), "apps/a.yaml");
        assert_eq!(file_of("apps/a.yaml:3"), "apps/a.yaml");
        assert_eq!(file_of("apps/a.yaml"), "apps/a.yaml");
        assert_eq!(file_of("C:/x/a.yaml:1:1"), "C:/x/a.yaml");
    }

    #[test]
    fn repositories_are_checked() {
        assert!(valid_repository("octo-org/desired.state"));
        assert!(!valid_repository("octo/../x"));
        assert!(!valid_repository("octo"));
        assert!(!valid_repository("octo/x?y"));
    }

    #[tokio::test]
    async fn a_dead_worker_is_started_again() {
        let notifier = Notifier::new(NotifierOptions::default(), NotificationMetrics::default());
        let spec = NotificationSpec {
            name: "hook".to_owned(),
            source: crate::spec::Source {
                file: PathBuf::from("n.yaml"),
                pos: crate::spec::Pos { line: 1, column: 1 },
            },
            target: Target::Webhook {
                url: UrlRef::Inline("http://127.0.0.1:9/hook".to_owned()),
                secret: None,
            },
            filter: super::super::Filter::default(),
            window: Duration::from_secs(60),
        };
        notifier.configure(std::slice::from_ref(&spec), Path::new("/"));
        let task = |n: &Notifier| n.lock().routes[0].task.as_ref().map(|t| t.id());
        let before = task(&notifier);
        // As a panic would end it.
        if let Some(t) = &notifier.lock().routes[0].task {
            t.abort();
        }
        while !notifier.lock().routes[0]
            .task
            .as_ref()
            .is_some_and(JoinHandle::is_finished)
        {
            tokio::task::yield_now().await;
        }
        notifier.send(&[]);
        assert_eq!(task(&notifier), before, "no events: nothing looked at");
        let e = Event {
            at: "2026-12-05T06:00:00Z".to_owned(),
            severity: Severity::Info,
            reason: Reason::LeadershipGained,
            app: None,
            source: None,
            message: "leading".to_owned(),
            details: std::collections::BTreeMap::new(),
            commit: None,
        };
        notifier.send(&[e]);
        let route = &notifier.lock().routes[0];
        assert_ne!(route.task.as_ref().map(|t| t.id()), before);
        assert!(route.task.as_ref().is_some_and(|t| !t.is_finished()));
    }

    #[test]
    fn retry_after_is_capped() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::RETRY_AFTER,
            "7".parse().unwrap_or_else(|_| unreachable!()),
        );
        let max = Duration::from_secs(600);
        assert_eq!(retry_after(&h, max), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "99999999".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(retry_after(&h, max), Some(max));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(retry_after(&h, max), Some(Duration::ZERO));
    }
}

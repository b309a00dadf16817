//! The ARM client: every Container Apps call the controller makes, and nothing else.
//!
//! # Guarantees
//! - One function, `ArmClient::send`, sends every request. It waits for the client-side
//!   bucket ([`limiter`]), adds the token, `User-Agent` and a fresh `x-ms-client-request-id`,
//!   reads the whole body, and retries what is safe to retry: for reads 408, 429, 5xx,
//!   write-lock 409s and broken connections; for writes only 429s. Backoff is exponential with
//!   jitter and a cap (backon); `Retry-After` is a floor, never shortened, and closes the
//!   subscription to that kind of request for everyone ([`limiter`]).
//! - A write is never sent again blindly. One whose answer was lost may have landed, and one
//!   refused by a lock conflict was planned before the operation that holds the app: both come
//!   back as [`Landed`], and the caller reads the app (once its operation ends) and plans anew.
//! - Lists follow `nextLink` to the end and return everything, or an error: never a part.
//! - Writes wait for their long-running operation: `Azure-AsyncOperation`, else `Location`,
//!   else (or when the operation URL is forbidden, as for identities scoped to one resource
//!   group) the app's `provisioningState`; then the app is read again.
//! - Tokens never reach a log line or an error message.

pub mod error;
pub mod limiter;
pub mod metrics;
pub mod models;
pub mod monitor;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use backon::BackoffBuilder;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::time::Instant;

pub use error::Error;
use limiter::{Kind, Limiter, Limits};
pub use models::{ContainerApp, Revision};

use crate::auth::TokenSource;
use crate::spec::AppKey;

/// The api-version of Microsoft.App this client speaks (N§1).
pub const API_VERSION: &str = "2026-01-01";

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("aca-reconciler/", env!("CARGO_PKG_VERSION"));

/// How failed requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First backoff.
    pub min_delay: Duration,
    /// Largest backoff.
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retries: 6,
        }
    }
}

impl RetryPolicy {
    fn delays(&self) -> impl Iterator<Item = Duration> {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
            .build()
    }
}

/// Settings of an [`ArmClient`].
#[derive(Debug, Clone)]
pub struct ArmConfig {
    /// `https://management.azure.com` (plain http only for loopback hosts).
    pub endpoint: String,
    /// Microsoft.App api-version.
    pub api_version: String,
    /// Client-side buckets.
    pub limits: Limits,
    /// Retries.
    pub retry: RetryPolicy,
    /// Timeout of one HTTP exchange.
    pub request_timeout: Duration,
    /// How long a write may take before it is reported as timed out.
    pub operation_timeout: Duration,
    /// Poll interval when Azure sends no `Retry-After`.
    pub poll_interval: Duration,
}

impl ArmConfig {
    /// Defaults for `endpoint`.
    pub fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            api_version: API_VERSION.to_owned(),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            operation_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// Whether two URLs share scheme, host and port (unparseable: no).
pub fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// `scheme://host:port` of a URL (never its path or query); `(not a URL)` if it is not one.
fn origin_of(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(
        |_| "(not a URL)".to_owned(),
        |u| u.origin().ascii_serialization(),
    )
}

/// Whether `host` is a loopback host (127.0.0.0/8, ::1, localhost).
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Accepts `https://...`, and `http://...` only for loopback hosts (contract section 2).
///
/// # Errors
/// Anything else, saying why.
pub fn check_endpoint(url: &str, what: &str) -> Result<reqwest::Url, Error> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::Config(format!("{what} `{url}` is not a URL: {e}")))?;
    let host = parsed.host_str().unwrap_or("");
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback_host(host) => Ok(parsed),
        "http" => Err(Error::Config(format!(
            "{what} `{url}` uses plain http to a non-loopback host; tokens must travel over https (plain http is accepted for 127.0.0.0/8, ::1 and localhost only)"
        ))),
        other => Err(Error::Config(format!(
            "{what} `{url}`: unsupported scheme `{other}`, use https"
        ))),
    }
}

/// Runs `op` until it succeeds, or fails in a way that `may_retry` says retrying cannot fix,
/// or the policy's budget is spent. `Retry-After` is a floor under the backoff, never shortened.
///
/// # Errors
/// The last error.
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    may_retry: fn(&Error) -> bool,
    what: &str,
    mut op: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut delays = policy.delays();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let err = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some(backoff) = delays.next().filter(|_| may_retry(&err)) else {
            return Err(err);
        };
        let delay = err.retry_after().map_or(backoff, |ra| ra.max(backoff));
        tracing::warn!(call = %what, attempt, retry_in_ms = delay.as_millis() as u64, error = %err, "retrying");
        tokio::time::sleep(delay).await;
    }
}

/// A fresh `x-ms-client-request-id` (GUID-shaped).
pub fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
    );
    let h = crate::hash::splitmix(seed);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (seed >> 20) & 0xfff,
        seed & 0xffff_ffff_ffff
    )
}

/// A request to send.
#[derive(Debug)]
struct Call<'a> {
    method: Method,
    url: String,
    body: Option<&'a Value>,
    subscription: Option<&'a str>,
    /// What `send` may repeat by itself.
    repeat: Repeat,
}

/// What [`ArmClient::send`] may send again by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// A read: anything retryable (a lost answer, a 5xx, a 429).
    Read,
    /// A write: only a 429, which Azure did not process. A lost answer (the write may have
    /// landed) and a lock conflict (the app's operation is still running) are resolved by
    /// [`ArmClient::write`] with a read of the app, never by sending the write again at once.
    Write,
}

impl Repeat {
    fn allows(self) -> fn(&Error) -> bool {
        match self {
            Repeat::Read => Error::is_retryable,
            Repeat::Write => |e| e.status() == Some(429),
        }
    }
}

/// A complete response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// `Retry-After` in seconds (ARM's form) or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    v.parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(MAX_RETRY_AFTER_S)))
}

/// How long to wait before looking at an operation again: its `Retry-After`, else the poll
/// interval, and never under [`MIN_OPERATION_POLL`] (a `Retry-After: 0` would make every
/// operation a loop of back-to-back reads).
fn operation_wait(headers: &HeaderMap, poll_interval: Duration) -> Duration {
    retry_after(headers)
        .unwrap_or(poll_interval)
        .max(MIN_OPERATION_POLL)
}

/// The shortest wait between two looks at one operation.
pub const MIN_OPERATION_POLL: Duration = Duration::from_millis(100);

/// The wait after a 429 that names none (ARM always does; assumed from ARM's throttling
/// documentation, N§7, which describes `Retry-After` on every 429).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The longest `Retry-After` believed, in seconds: a larger one (hostile or broken) is taken as
/// an hour, so no wait can overflow a clock.
pub const MAX_RETRY_AFTER_S: u64 = 3_600;

pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// One page of an ARM list: its items, still unparsed text, and its `nextLink` (absent or
/// empty: the last page).
///
/// # Errors
/// The body is not a list page.
pub fn parse_page(
    path: &str,
    body: &[u8],
) -> Result<(Vec<Box<serde_json::value::RawValue>>, Option<String>), Error> {
    #[derive(serde::Deserialize)]
    struct Page {
        #[serde(default)]
        value: Option<Vec<Box<serde_json::value::RawValue>>>,
        #[serde(default, rename = "nextLink")]
        next_link: Option<String>,
    }
    let page: Page = ArmClient::decode(path, body)?;
    Ok((
        page.value.unwrap_or_default(),
        page.next_link.filter(|s| !s.is_empty()),
    ))
}

/// When each replica of a list was created. A replica without a readable `createdTime` counts
/// as created at 0 (the oldest).
///
/// # Errors
/// The body is not a replica list.
pub fn parse_replicas(path: &str, body: &[u8]) -> Result<Vec<crate::time::Millis>, Error> {
    #[derive(serde::Deserialize)]
    struct Replicas {
        #[serde(default)]
        value: Vec<Replica>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Replica {
        properties: ReplicaProperties,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct ReplicaProperties {
        created_time: Option<String>,
    }
    let list: Replicas = ArmClient::decode(path, body)?;
    Ok(list
        .value
        .iter()
        .map(|r| {
            r.properties
                .created_time
                .as_deref()
                .and_then(crate::time::parse)
                .unwrap_or(0)
        })
        .collect())
}

/// Where a long-running operation stands, by its `Azure-AsyncOperation` status document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationState {
    /// Not finished (any status but the three terminal ones, or none).
    Running,
    /// `Succeeded`.
    Succeeded,
    /// `Failed` or `Canceled`, with the error's message.
    Failed {
        /// The status as Azure spelled it.
        status: String,
        /// The error message.
        message: String,
    },
}

/// Reads an operation status document.
///
/// # Errors
/// The body is not JSON.
pub fn parse_operation(path: &str, body: &[u8]) -> Result<OperationState, Error> {
    let doc: Value = ArmClient::decode(path, body)?;
    let status = doc
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("InProgress");
    Ok(match status {
        s if s.eq_ignore_ascii_case("succeeded") => OperationState::Succeeded,
        s if s.eq_ignore_ascii_case("failed") || s.eq_ignore_ascii_case("canceled") => {
            OperationState::Failed {
                status: s.to_owned(),
                message: parse_error_body(body).1,
            }
        }
        _ => OperationState::Running,
    })
}

/// `(code, message)` from ARM's envelope, a bare `{code, message}`, or ACR's `{"errors": [...]}`.
pub fn parse_error_body(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v
        .get("error")
        .or_else(|| v.get("errors").and_then(|e| e.get(0)))
        .unwrap_or(&v);
    let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
    let fallback = String::from_utf8_lossy(&body[..body.len().min(300)])
        .trim()
        .to_owned();
    (
        text("code").unwrap_or_else(|| "Unknown".to_owned()),
        text("message").unwrap_or(fallback),
    )
}

/// The path of a URL, for messages and spans (no query: it may carry tokens elsewhere).
pub(crate) fn path_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "(invalid url)".to_owned())
}

/// What a revision action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionAction {
    /// Start serving (no traffic by itself).
    Activate,
    /// Stop; it must carry no traffic first.
    Deactivate,
    /// Restart its replicas (picks up rotated secrets).
    Restart,
}

impl RevisionAction {
    fn verb(self) -> &'static str {
        match self {
            RevisionAction::Activate => "activate",
            RevisionAction::Deactivate => "deactivate",
            RevisionAction::Restart => "restart",
        }
    }
}

/// The ARM client.
#[derive(Debug)]
pub struct ArmClient {
    http: reqwest::Client,
    config: ArmConfig,
    tokens: Arc<TokenSource>,
    limiter: Limiter,
    metrics: std::sync::OnceLock<Arc<metrics::ArmMetrics>>,
    fence: std::sync::OnceLock<crate::lease::Fence>,
    /// `scheme://host:port` of the endpoint: the only place the token may go.
    origin: String,
}

impl ArmClient {
    /// A client for `config.endpoint` with tokens from `tokens`.
    ///
    /// # Errors
    /// The endpoint is not acceptable, or the HTTP client cannot be built.
    pub fn new(config: ArmConfig, tokens: Arc<TokenSource>) -> Result<Self, Error> {
        check_endpoint(&config.endpoint, "the ARM endpoint")?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            limiter: Limiter::new(config.limits),
            origin: origin_of(&config.endpoint),
            config,
            tokens,
            metrics: std::sync::OnceLock::new(),
            fence: std::sync::OnceLock::new(),
        })
    }

    /// Sends writes only while `fence` allows, each with a timeout that ends before the lease
    /// can lapse (the first call wins; without one, writes are not fenced).
    pub fn set_fence(&self, fence: crate::lease::Fence) {
        let _ = self.fence.set(fence);
    }

    /// Reports every request to `metrics` from now on (the first call wins).
    pub fn set_metrics(&self, metrics: Arc<metrics::ArmMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The token source (the ACR client exchanges the same ARM token).
    pub fn tokens(&self) -> &Arc<TokenSource> {
        &self.tokens
    }

    /// The endpoint, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}{path}?api-version={}",
            self.config.endpoint, self.config.api_version
        )
    }

    /// Sends one request with retries (see the module docs).
    async fn send(&self, call: &Call<'_>) -> Result<Reply, Error> {
        // The token goes only where the ARM endpoint is: a `nextLink` or an operation URL
        // naming another host (a hostile or broken answer) would otherwise receive it.
        if origin_of(&call.url) != self.origin {
            return Err(Error::Config(format!(
                "refusing to send the ARM token to `{}`: an ARM answer named a host other than the ARM endpoint `{}`",
                origin_of(&call.url),
                self.config.endpoint
            )));
        }
        let path = path_of(&call.url);
        let kind = if call.method == Method::GET {
            Kind::Read
        } else {
            Kind::Write
        };
        let what = format!("{} {path}", call.method);
        with_retries(&self.config.retry, call.repeat.allows(), &what, || async {
            if let Some(sub) = call.subscription {
                self.limiter.acquire(sub, kind).await;
                self.limiter.sent(sub, kind);
            }
            let result = self.attempt(call, &path, kind).await;
            if let Some(sub) = call.subscription {
                self.limiter.answered(sub, kind);
            }
            if let (Err(e), Some(sub)) = (&result, call.subscription)
                && e.status() == Some(429)
            {
                let wait = e.retry_after().unwrap_or(DEFAULT_RETRY_AFTER);
                self.limiter.observe_throttled(sub, kind, wait);
            }
            result
        })
        .await
    }

    async fn attempt(&self, call: &Call<'_>, path: &str, kind: Kind) -> Result<Reply, Error> {
        let token = self.tokens.token().await?;
        // A 429 answered to another request since this one took its bucket token closes the
        // subscription to it too (contract section 3, "Throttling").
        if let Some(sub) = call.subscription {
            self.limiter.wait_open(sub, kind).await;
        }
        // Checked after the token and the bucket, right before the write leaves.
        let timeout = match kind {
            Kind::Write => {
                crate::lease::write_timeout(self.fence.get(), self.config.request_timeout)?
            }
            Kind::Read => self.config.request_timeout,
        };
        let request_id = new_request_id();
        let started = Instant::now();
        let mut req = self
            .http
            .request(call.method.clone(), &call.url)
            .bearer_auth(token.expose())
            .header("x-ms-client-request-id", &request_id)
            .header("x-ms-return-client-request-id", "true")
            .timeout(timeout);
        if let Some(body) = call.body {
            req = req.json(body);
        }
        let transport = |e: reqwest::Error| Error::Transport {
            method: call.method.to_string(),
            resource: path.to_owned(),
            message: without_url(&e),
        };
        let sent = req.send().await;
        let method = call.method.as_str();
        let record = |status: Option<u16>| {
            if let Some(m) = self.metrics.get() {
                m.record(method, path, status);
            }
        };
        let resp = sent.map_err(|e| {
            record(None);
            transport(e)
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| {
            record(None);
            transport(e)
        })?;
        record(Some(status));
        let ms = started.elapsed().as_millis() as u64;
        tracing::debug!(method = %call.method, path, status, ms, client_request_id = %request_id, "ARM");
        if let Some(sub) = call.subscription {
            let name = match kind {
                Kind::Read => "x-ms-ratelimit-remaining-subscription-reads",
                Kind::Write => "x-ms-ratelimit-remaining-subscription-writes",
            };
            if let Some(left) = header(&headers, name).and_then(|v| v.parse::<u64>().ok()) {
                self.limiter.observe_remaining(sub, kind, left);
                if let Some(m) = self.metrics.get() {
                    let kind = if matches!(kind, Kind::Read) {
                        "reads"
                    } else {
                        "writes"
                    };
                    m.remaining
                        .get_or_create(&metrics::KindLabels {
                            kind: kind.to_owned(),
                        })
                        .set(i64::try_from(left).unwrap_or(i64::MAX));
                }
            }
        }
        if status >= 400 {
            let (code, message) = parse_error_body(&body);
            let method = call.method.to_string();
            return Err(Error::Status {
                hint: error::hint_for(status, &code, &method, path, self.tokens.credential_name()),
                method,
                resource: path.to_owned(),
                status,
                code,
                message,
                request_id: header(&headers, "x-ms-request-id"),
                correlation_id: header(&headers, "x-ms-correlation-request-id"),
                retry_after: retry_after(&headers),
            });
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(body).map_err(|e| Error::Decode {
            resource: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// GET one resource of `key`'s subscription, at `path` under the ARM endpoint.
    async fn get(&self, key: &AppKey, path: &str) -> Result<Reply, Error> {
        let call = Call {
            method: Method::GET,
            url: self.url(path),
            body: None,
            subscription: Some(&key.subscription),
            repeat: Repeat::Read,
        };
        self.send(&call).await
    }

    /// GET a list, following `nextLink` to the end.
    async fn list_all(
        &self,
        first: String,
        subscription: &str,
    ) -> Result<Vec<Box<serde_json::value::RawValue>>, Error> {
        let mut items = Vec::new();
        let mut next = Some(first);
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = next {
            if !seen.insert(url.clone()) {
                return Err(Error::Decode {
                    resource: path_of(&url),
                    message: "nextLink points back at a page already read".to_owned(),
                });
            }
            let call = Call {
                method: Method::GET,
                url,
                body: None,
                subscription: Some(subscription),
                repeat: Repeat::Read,
            };
            let reply = self.send(&call).await?;
            let (page, next_link) = parse_page(&path_of(&call.url), &reply.body)?;
            items.extend(page);
            next = next_link.map(|s| {
                if s.contains("api-version=") {
                    s.to_owned()
                } else {
                    format!(
                        "{s}{}api-version={}",
                        if s.contains('?') { '&' } else { '?' },
                        self.config.api_version
                    )
                }
            });
        }
        Ok(items)
    }

    /// Every container app of a resource group (or of the whole subscription), all pages.
    ///
    /// # Errors
    /// Any page failed; then nothing is returned.
    pub async fn list_apps(
        &self,
        subscription: &str,
        resource_group: Option<&str>,
    ) -> Result<Vec<ContainerApp>, Error> {
        let path = match resource_group {
            Some(rg) => format!(
                "/subscriptions/{subscription}/resourceGroups/{rg}/providers/Microsoft.App/containerApps"
            ),
            None => format!("/subscriptions/{subscription}/providers/Microsoft.App/containerApps"),
        };
        let values = self.list_all(self.url(&path), subscription).await?;
        values
            .into_iter()
            .map(|v| {
                ContainerApp::from_raw(v).map_err(|e| Error::Decode {
                    resource: path.clone(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// One app.
    ///
    /// # Errors
    /// 404 if it does not exist, or any other failure.
    pub async fn get_app(&self, key: &AppKey) -> Result<ContainerApp, Error> {
        let path = key.resource_id();
        let reply = self.get(key, &path).await?;
        let raw: Box<serde_json::value::RawValue> = Self::decode(&path, &reply.body)?;
        ContainerApp::from_raw(raw).map_err(|e| Error::Decode {
            resource: path,
            message: e.to_string(),
        })
    }

    /// PATCH an app (JSON merge patch) and wait for the operation (a convenience for callers
    /// that can hold a task while Azure works; the executor uses [`ArmClient::start_patch`]).
    ///
    /// A PATCH that may not have landed ([`Landed::Unknown`], [`Landed::No`]) is not sent
    /// again: the app is read until no operation runs on it, and the result says so, so that
    /// the caller decides again from what Azure now shows.
    ///
    /// # Errors
    /// The write or its operation failed or timed out.
    pub async fn patch_app(&self, key: &AppKey, body: &Value) -> Result<Written, Error> {
        let (written, operation) = self.start_patch(key, body).await?;
        if written.landed != Landed::Yes {
            self.settle(key).await?;
        }
        if let Some(mut operation) = operation {
            let started = Instant::now();
            let mut wait = operation.first_look();
            loop {
                if started.elapsed() + wait > self.config.operation_timeout {
                    return Err(operation.timed_out(key, self.config.operation_timeout));
                }
                tokio::time::sleep(wait).await;
                match self.poll_operation(key, &mut operation).await? {
                    Progress::Running(next) => wait = next,
                    Progress::Done => break,
                }
            }
        }
        Ok(written)
    }

    /// PATCH an app (JSON merge patch) without waiting: the operation it started, if any, is
    /// returned to be polled with [`ArmClient::poll_operation`] (the executor requeues the app
    /// instead of holding a slot while Azure works). See [`Landed`] for a write that may not
    /// have landed.
    ///
    /// # Errors
    /// The write failed.
    pub async fn start_patch(
        &self,
        key: &AppKey,
        body: &Value,
    ) -> Result<(Written, Option<Operation>), Error> {
        let path = key.resource_id();
        let call = Call {
            method: Method::PATCH,
            url: self.url(&path),
            body: Some(body),
            subscription: Some(&key.subscription),
            repeat: Repeat::Write,
        };
        let reply = match self.write(key, &call).await? {
            Ok(reply) => reply,
            Err(landed) => return Ok((Written::not_answered(landed), None)),
        };
        let operation = if matches!(reply.status, 201 | 202) {
            Some(Operation::from_headers(
                &reply.headers,
                self.config.poll_interval,
            )?)
        } else {
            None
        };
        Ok((Written::from(&reply), operation))
    }

    /// Sends a write once (a 429 is retried by `send` after its `Retry-After`). What a retry
    /// cannot settle comes back as `Err(landed)`, for the caller to decide again from a fresh
    /// read, never by sending the same write into a state it was not planned for (contract
    /// section 3: "a write whose answer was lost is followed by a read, not by the same write
    /// again"):
    ///
    /// - a lost answer (connection dropped, timeout): the write may have landed and started an
    ///   operation ([`Landed::Unknown`]);
    /// - a lock conflict (409, another operation holds the app): nothing landed, and the body,
    ///   planned before that other operation, may undo what it changes ([`Landed::No`]).
    async fn write(&self, key: &AppKey, call: &Call<'_>) -> Result<Result<Reply, Landed>, Error> {
        match self.send(call).await {
            Ok(reply) => Ok(Ok(reply)),
            Err(e @ Error::Transport { .. }) => {
                tracing::warn!(app = %key, error = %e, "the answer to a write was lost: the app is read again before anything else, the write is not sent again");
                Ok(Err(Landed::Unknown))
            }
            Err(e) if e.is_lock_conflict() => {
                tracing::info!(app = %key, error = %e, "another operation holds the app: the app is read again once it ends, and the write planned anew");
                Ok(Err(Landed::No))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the app until no operation runs on it (`provisioningState` is not `InProgress`).
    ///
    /// # Errors
    /// A read failed, or the operation outlasted the operation timeout.
    async fn settle(&self, key: &AppKey) -> Result<(), Error> {
        let mut operation = Operation::app_state(self.config.poll_interval);
        let started = Instant::now();
        loop {
            match self.poll_operation(key, &mut operation).await {
                Ok(Progress::Done) | Err(Error::OperationFailed { .. }) => return Ok(()),
                Ok(Progress::Running(wait)) => {
                    if started.elapsed() + wait > self.config.operation_timeout {
                        return Err(operation.timed_out(key, self.config.operation_timeout));
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Looks once at where `operation` stands (N§1.2): by its `Azure-AsyncOperation` status,
    /// else its `Location`, else (or when the operation URL is forbidden, as for identities
    /// scoped to one resource group) the app's `provisioningState`.
    ///
    /// # Errors
    /// The operation ended `Failed` or `Canceled`, or a read failed.
    pub async fn poll_operation(
        &self,
        key: &AppKey,
        operation: &mut Operation,
    ) -> Result<Progress, Error> {
        let resource = key.resource_id();
        let running = Progress::Running(self.config.poll_interval);
        if operation.protocol == OperationProtocol::AppState {
            let app = self.get_app(key).await?;
            return match app.properties.provisioning_state.as_deref() {
                Some(s) if s.eq_ignore_ascii_case("inprogress") => Ok(running),
                Some(s)
                    if s.eq_ignore_ascii_case("failed") || s.eq_ignore_ascii_case("canceled") =>
                {
                    Err(Error::OperationFailed {
                        resource,
                        status: s.to_owned(),
                        message: "the app's provisioningState says so".to_owned(),
                    })
                }
                _ => Ok(Progress::Done),
            };
        }
        let call = Call {
            method: Method::GET,
            url: operation.url.clone(),
            body: None,
            subscription: Some(&key.subscription),
            repeat: Repeat::Read,
        };
        let reply = match self.send(&call).await {
            Ok(r) => r,
            // Identities scoped to one resource group cannot read the subscription-scoped
            // operation (N§1.2): follow the app's provisioningState instead.
            Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => {
                tracing::warn!(app = %key, error = %e, "cannot read the operation's status; following the app's provisioningState instead");
                operation.protocol = OperationProtocol::AppState;
                return Ok(running);
            }
            Err(e) => return Err(e),
        };
        let next = operation_wait(&reply.headers, self.config.poll_interval);
        match operation.protocol {
            OperationProtocol::AsyncOperation => {
                match parse_operation(&path_of(&operation.url), &reply.body)? {
                    OperationState::Running => Ok(Progress::Running(next)),
                    OperationState::Succeeded => Ok(Progress::Done),
                    OperationState::Failed { status, message } => Err(Error::OperationFailed {
                        resource,
                        status,
                        message,
                    }),
                }
            }
            _ if reply.status == 202 => Ok(Progress::Running(next)),
            _ => Ok(Progress::Done),
        }
    }

    /// Every revision of an app, all pages.
    ///
    /// # Errors
    /// Any page failed.
    pub async fn list_revisions(&self, key: &AppKey) -> Result<Vec<Revision>, Error> {
        let path = format!("{}/revisions", key.resource_id());
        let values = self.list_all(self.url(&path), &key.subscription).await?;
        values
            .into_iter()
            .map(|v| {
                serde_json::from_str(v.get()).map_err(|e| Error::Decode {
                    resource: path.clone(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// When each replica of a revision was created (replicas are not paged, N§1.1). A
    /// replica without a readable `createdTime` counts as created at 0 (the oldest).
    ///
    /// # Errors
    /// The read failed.
    pub async fn list_replicas(
        &self,
        key: &AppKey,
        revision: &str,
    ) -> Result<Vec<crate::time::Millis>, Error> {
        let path = format!("{}/revisions/{revision}/replicas", key.resource_id());
        let reply = self.get(key, &path).await?;
        parse_replicas(&path, &reply.body)
    }

    /// One revision.
    ///
    /// # Errors
    /// 404 if it does not exist, or any other failure.
    pub async fn get_revision(&self, key: &AppKey, revision: &str) -> Result<Revision, Error> {
        let path = format!("{}/revisions/{revision}", key.resource_id());
        let reply = self.get(key, &path).await?;
        Self::decode(&path, &reply.body)
    }

    /// The requests each of `revisions` served in `window` (epoch ms, `[start, end)`), from
    /// Azure Monitor's `Requests` metric, in **one** read for all of them (N§11). A revision
    /// with no data in the window has zero requests. The read goes through the same read
    /// bucket, `Retry-After` gate, retries and request metrics (`metrics.list`) as every
    /// other read.
    ///
    /// # Errors
    /// The read failed, or its answer is not the metrics response (with the request id).
    pub async fn request_counts(
        &self,
        key: &AppKey,
        revisions: &[&str],
        window: (crate::time::Millis, crate::time::Millis),
    ) -> Result<std::collections::BTreeMap<String, crate::rollout::Counts>, Error> {
        if revisions.is_empty() {
            return Ok(std::collections::BTreeMap::new());
        }
        let path = monitor::path(&key.resource_id());
        let call = Call {
            method: Method::GET,
            url: format!(
                "{}{path}?{}",
                self.config.endpoint,
                monitor::query(revisions, window)
            ),
            body: None,
            subscription: Some(&key.subscription),
            repeat: Repeat::Read,
        };
        let reply = self.send(&call).await?;
        monitor::parse(
            &path,
            &reply.body,
            header(&reply.headers, "x-ms-request-id").as_deref(),
            revisions,
        )
    }

    /// Activate, deactivate or restart a revision. None is sent again when it may not have
    /// landed (see [`Landed`]): the result says so, and the caller decides again from a fresh
    /// read (a restart that happened shows in its replicas).
    ///
    /// # Errors
    /// The call failed.
    pub async fn revision_action(
        &self,
        key: &AppKey,
        revision: &str,
        action: RevisionAction,
    ) -> Result<Written, Error> {
        let path = format!(
            "{}/revisions/{revision}/{}",
            key.resource_id(),
            action.verb()
        );
        let call = Call {
            method: Method::POST,
            url: self.url(&path),
            body: None,
            subscription: Some(&key.subscription),
            repeat: Repeat::Write,
        };
        Ok(match self.write(key, &call).await? {
            Ok(reply) => Written::from(&reply),
            Err(landed) => Written::not_answered(landed),
        })
    }
}

/// How a long-running operation is followed (N§1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperationProtocol {
    AsyncOperation,
    Location,
    AppState,
}

/// A long-running operation a write started: where to look, and when first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    protocol: OperationProtocol,
    url: String,
    first: Duration,
}

impl Operation {
    /// Following the app's `provisioningState` alone (no operation URL).
    fn app_state(poll_interval: Duration) -> Self {
        Self {
            protocol: OperationProtocol::AppState,
            url: String::new(),
            first: poll_interval,
        }
    }

    fn from_headers(headers: &HeaderMap, poll_interval: Duration) -> Result<Self, Error> {
        let (protocol, url) = match (
            header(headers, "azure-asyncoperation"),
            header(headers, "location"),
        ) {
            (Some(u), _) => (OperationProtocol::AsyncOperation, u),
            (None, Some(u)) => (OperationProtocol::Location, u),
            (None, None) => (OperationProtocol::AppState, String::new()),
        };
        if protocol != OperationProtocol::AppState {
            check_endpoint(&url, "the operation URL")?;
        }
        Ok(Self {
            protocol,
            url,
            first: operation_wait(headers, poll_interval),
        })
    }

    /// How long to wait before the first look (the write's `Retry-After`, else the poll
    /// interval).
    pub fn first_look(&self) -> Duration {
        self.first
    }

    /// The error of an operation that outlasted `after`.
    pub fn timed_out(&self, key: &AppKey, after: Duration) -> Error {
        Error::Timeout {
            resource: key.resource_id(),
            what: "the write's long-running operation".to_owned(),
            after,
        }
    }
}

/// Where an operation stands after one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Still running: look again after this long.
    Running(Duration),
    /// It ended well.
    Done,
}

/// Whether a write landed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Landed {
    /// Azure answered and took it.
    #[default]
    Yes,
    /// Its answer was lost: it may or may not have landed (and started an operation).
    Unknown,
    /// Another operation held the app (409): it did not land.
    No,
}

/// What Azure says of a write: the ids to quote to Azure support, and whether it landed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// `x-ms-request-id`.
    pub request_id: Option<String>,
    /// `x-ms-correlation-request-id`.
    pub correlation_id: Option<String>,
    /// Whether it landed; anything but [`Landed::Yes`] means: read again and decide anew.
    pub landed: Landed,
}

impl Written {
    fn not_answered(landed: Landed) -> Self {
        Self {
            landed,
            ..Self::default()
        }
    }
}

impl From<&Reply> for Written {
    fn from(reply: &Reply) -> Self {
        Self {
            request_id: header(&reply.headers, "x-ms-request-id"),
            correlation_id: header(&reply.headers, "x-ms-correlation-request-id"),
            landed: Landed::Yes,
        }
    }
}

/// reqwest's error text without the URL (which is in the message already, and may carry a
/// query string).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    if e.is_timeout() {
        parts.push("timed out".to_owned());
    } else if e.is_connect() {
        parts.push("cannot connect".to_owned());
    } else if e.is_body() || e.is_decode() {
        parts.push("the connection broke while reading the response".to_owned());
    } else if e.is_request() {
        parts.push("the request could not be sent".to_owned());
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        parts.push("request failed".to_owned());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_unless_loopback() {
        assert!(check_endpoint("https://management.azure.com", "x").is_ok());
        assert!(check_endpoint("http://127.0.0.1:8080", "x").is_ok());
        assert!(check_endpoint("http://127.5.6.7", "x").is_ok());
        assert!(check_endpoint("http://[::1]:9000", "x").is_ok());
        assert!(check_endpoint("http://localhost:1", "x").is_ok());
        let e = check_endpoint("http://management.azure.com", "the ARM endpoint")
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain http to a non-loopback host"), "{e}");
        assert!(check_endpoint("http://10.0.0.1", "x").is_err());
        assert!(check_endpoint("ftp://x", "x").is_err());
        assert!(check_endpoint("not a url", "x").is_err());
    }

    #[test]
    fn error_bodies_of_every_shape() {
        assert_eq!(
            parse_error_body(br#"{"error":{"code":"ResourceNotFound","message":"gone"}}"#),
            ("ResourceNotFound".into(), "gone".into())
        );
        assert_eq!(
            parse_error_body(br#"{"code":"Nested","message":"bare"}"#),
            ("Nested".into(), "bare".into())
        );
        assert_eq!(
            parse_error_body(br#"{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}"#),
            ("UNAUTHORIZED".into(), "auth".into())
        );
        assert_eq!(
            parse_error_body(b"<html>bad gateway</html>"),
            ("Unknown".into(), "<html>bad gateway</html>".into())
        );
    }

    #[test]
    fn request_ids_are_fresh() {
        let a = new_request_id();
        assert_ne!(a, new_request_id());
        assert_eq!(a.len(), 36);
    }
}

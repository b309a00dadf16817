//! Leader election over an Azure Blob Storage lease (contract section 5).
//!
//! Every replica runs an [`Elector`] on the same blob. The one that holds the blob's lease is the
//! leader and may write to Azure; the others try to take the lease every `duration / 6` and
//! write nothing. The leader renews every `duration / 3`, so two renewals may fail before it is in
//! danger, and releases the lease when it shuts down, so a follower takes over at its next try.
//!
//! **Fencing by time.** The leader's right to write ends at `sent + duration - margin`, where
//! `sent` is when the acquire or renew that succeeded was *sent*: Azure starts the lease later
//! than that, so Azure's expiry is later still, and only this process's monotonic clock is used
//! (no wall clocks are compared across machines). Every write request checks the [`Fence`]
//! before it is sent and gets a timeout that ends before the fence's deadline
//! ([`Fence::write_window`]), so no write of this replica can be in flight once another replica
//! can hold the lease. A leader whose renewals fail steps down at its deadline, before the lease
//! can expire at Azure.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{StatusCode, Url};
use azure_storage_blob::BlobClient;
use azure_storage_blob::models::{BlobClientAcquireLeaseOptions, BlobClientUploadOptions};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A write is started only if the lease is certain for at least this long.
pub const MIN_WRITE_WINDOW: Duration = Duration::from_secs(3);

/// Whether this replica may write to Azure now, and for how long.
///
/// Cloned into every client that writes. Without leader election ([`Fence::unfenced`]) it
/// always allows.
#[derive(Debug, Clone)]
pub struct Fence {
    /// `Some(deadline)` while this replica leads; `None` without a lease.
    rx: Option<watch::Receiver<Option<Instant>>>,
}

/// Refused: this replica does not hold the lease (or not for long enough).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "not the leader: another replica holds the lease, or it could not be renewed in time; no write was sent"
)]
pub struct NotLeader;

impl Fence {
    /// A single replica: every write is allowed.
    pub fn unfenced() -> Self {
        Self { rx: None }
    }

    /// A fence driven by hand: `Some(deadline)` lets writes start until shortly before the
    /// deadline, `None` refuses them. [`Elector`] drives one; tests drive their own.
    pub fn channel() -> (watch::Sender<Option<Instant>>, Self) {
        let (tx, rx) = watch::channel(None);
        (tx, Self { rx: Some(rx) })
    }

    /// Whether leader election is on.
    pub fn is_elected(&self) -> bool {
        self.rx.is_some()
    }

    /// Whether this replica may start a write now.
    pub fn is_leader(&self) -> bool {
        self.write_window().is_ok()
    }

    /// How long a write sent now may take: `None` without leader election (no limit).
    ///
    /// # Errors
    /// [`NotLeader`] when the lease is not held for at least [`MIN_WRITE_WINDOW`].
    pub fn write_window(&self) -> Result<Option<Duration>, NotLeader> {
        let Some(rx) = &self.rx else {
            return Ok(None);
        };
        let deadline = (*rx.borrow()).ok_or(NotLeader)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MIN_WRITE_WINDOW {
            return Err(NotLeader);
        }
        Ok(Some(left))
    }

    /// Waits until leadership changes (gained, renewed or lost). Never returns when unfenced.
    pub async fn changed(&mut self) {
        match &mut self.rx {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    // The elector has ended: nothing will change any more.
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}

/// The timeout for a write sent now: `normal` without a fence, else the time left on the
/// lease when that is shorter. One rule for every client that writes.
///
/// # Errors
/// [`NotLeader`] when the fence does not allow a write now.
pub fn write_timeout(fence: Option<&Fence>, normal: Duration) -> Result<Duration, NotLeader> {
    match fence.map(Fence::write_window).transpose()?.flatten() {
        Some(window) => Ok(window.min(normal)),
        None => Ok(normal),
    }
}

/// How the lease is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The blob, with or without a SAS query string.
    pub url: Url,
    /// Lease duration: Azure accepts 15 to 60 seconds.
    pub duration: Duration,
}

impl LeaseConfig {
    /// Checks the URL and the duration.
    ///
    /// # Errors
    /// What is wrong, for the operator.
    pub fn new(url: &str, duration: Duration) -> Result<Self, String> {
        let parsed =
            crate::arm::check_endpoint(url, "the lease blob URL").map_err(|e| e.to_string())?;
        let segments = parsed
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).count());
        let min = if crate::arm::is_loopback_host(parsed.host_str().unwrap_or("")) {
            // Azurite puts the account name first: http://127.0.0.1:10000/devstoreaccount1/c/b.
            3
        } else {
            2
        };
        if segments.unwrap_or(0) < min {
            return Err(format!(
                "the lease blob URL `{}` names no blob: write https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB",
                redact(&parsed)
            ));
        }
        if !(15..=60).contains(&duration.as_secs()) {
            return Err(format!(
                "--lease-duration {}s: Azure Blob leases last 15 to 60 seconds",
                duration.as_secs()
            ));
        }
        Ok(Self {
            url: parsed,
            duration,
        })
    }

    /// Whether the URL carries a SAS token (then no credential is used).
    pub fn has_sas(&self) -> bool {
        self.url.query_pairs().any(|(k, _)| k == "sig")
    }

    /// The URL without its query string (a SAS must never reach a log).
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    fn retry_every(&self) -> Duration {
        self.duration / 6
    }

    /// Time kept between the end of our right to write and the earliest expiry at Azure.
    fn margin(&self) -> Duration {
        (self.duration / 10).max(Duration::from_secs(2))
    }
}

fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// Contends for the lease and holds it; see the module docs.
pub struct Elector {
    blob: BlobClient,
    config: LeaseConfig,
    lease_id: String,
    tx: watch::Sender<Option<Instant>>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("blob", &self.config.display_url())
            .field("lease_id", &self.lease_id)
            .finish()
    }
}

impl Elector {
    /// An elector and the fence it drives. A URL with a SAS uses it; a plain URL uses
    /// `credential` (which needs https and the role Storage Blob Data Contributor).
    ///
    /// # Errors
    /// A plain URL without a credential, or a URL the storage client refuses.
    pub fn new(
        config: LeaseConfig,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<(Self, Fence), String> {
        let credential = if config.has_sas() {
            None
        } else {
            match credential {
                Some(c) => Some(c),
                None => {
                    return Err(format!(
                        "the lease blob `{}` has no SAS token and there is no Azure credential to use for it (with --simulate, give a SAS URL)",
                        config.display_url()
                    ));
                }
            }
        };
        let blob = BlobClient::new(config.url.clone(), credential, None).map_err(|e| {
            format!(
                "the lease blob `{}` cannot be used: {e}",
                config.display_url()
            )
        })?;
        let (tx, fence) = Fence::channel();
        Ok((
            Self {
                blob,
                config,
                lease_id: crate::arm::new_request_id(),
                tx,
            },
            fence,
        ))
    }

    fn lead_until(&self, sent: Instant) -> Instant {
        sent + self.config.duration - self.config.margin()
    }

    /// Contends for the lease until `stop` is cancelled, then releases it if held.
    pub async fn run(self, stop: CancellationToken) {
        let blob = self.config.display_url();
        tracing::info!(%blob, lease_duration_s = self.config.duration.as_secs(), lease_id = %self.lease_id, "leader election: contending for the lease");
        let mut deadline: Option<Instant> = None;
        // The last refusal, so that a repeated one is logged once.
        let mut last_refusal: Option<Refused> = None;
        loop {
            let wake = match deadline {
                // While renewals fail, step down at the deadline even if a try is still waiting.
                Some(d) => (Instant::now() + self.config.renew_every()).min(d),
                None => Instant::now() + self.config.retry_every(),
            };
            if deadline.is_some() || last_refusal.is_some() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep_until(wake) => {}
                }
            }
            if let Some(d) = deadline
                && Instant::now() >= d
            {
                deadline = None;
                self.tx.send_replace(None);
                tracing::warn!(%blob, "leader election: the lease could not be renewed in time; stopped acting (another replica may take over)");
                continue;
            }
            let sent = Instant::now();
            let result = tokio::select! {
                () = stop.cancelled() => break,
                r = self.try_hold(deadline.is_some()) => r,
            };
            match result {
                Ok(()) => {
                    let until = self.lead_until(sent);
                    if deadline.is_none() {
                        tracing::info!(%blob, "leader election: this replica is the leader");
                    }
                    deadline = Some(until);
                    last_refusal = None;
                    self.tx.send_replace(Some(until));
                }
                Err(refused) => {
                    let again = last_refusal.as_ref() == Some(&refused);
                    match &refused {
                        Refused::Held if deadline.take().is_some() => {
                            self.tx.send_replace(None);
                            tracing::warn!(%blob, "leader election: the lease was lost (broken or taken); stopped acting");
                        }
                        Refused::Held if !again => {
                            tracing::info!(%blob, "leader election: another replica leads; standing by");
                        }
                        Refused::Failed(e) if !again => {
                            tracing::warn!(%blob, error = %e, leading = deadline.is_some(), "leader election: the lease call failed; trying again");
                        }
                        _ => {}
                    }
                    last_refusal = Some(refused);
                }
            }
        }
        if deadline.is_some() {
            self.tx.send_replace(None);
            match self.blob.release_lease(self.lease_id.clone(), None).await {
                Ok(_) => tracing::info!(%blob, "leader election: lease released"),
                Err(e) => {
                    tracing::warn!(%blob, error = %e, "leader election: could not release the lease; it expires by itself")
                }
            }
        }
    }

    /// Acquires (or, when `renew`, renews) the lease; creates the blob when it does not exist.
    async fn try_hold(&self, renew: bool) -> Result<(), Refused> {
        if renew {
            return match self.blob.renew_lease(self.lease_id.clone(), None).await {
                Ok(_) => Ok(()),
                Err(e) => Err(classify(&e)),
            };
        }
        let duration = i32::try_from(self.config.duration.as_secs()).unwrap_or(60);
        let acquire = || {
            self.blob.acquire_lease(
                duration,
                Some(BlobClientAcquireLeaseOptions {
                    proposed_lease_id: Some(self.lease_id.clone()),
                    ..Default::default()
                }),
            )
        };
        match acquire().await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => {
                // The first replica ever: make the (empty) blob; If-None-Match: * so a blob
                // another replica created meanwhile is kept.
                let options = BlobClientUploadOptions {
                    if_none_match: Some(azure_core::http::Etag::from("*")),
                    ..Default::default()
                };
                match self
                    .blob
                    .upload(azure_core::Bytes::new().into(), Some(options))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.http_status() == Some(StatusCode::Conflict) => {}
                    Err(e) if e.http_status() == Some(StatusCode::PreconditionFailed) => {}
                    Err(e) => return Err(classify(&e)),
                }
                tracing::info!(blob = %self.config.display_url(), "leader election: created the lease blob");
                acquire().await.map(|_| ()).map_err(|e| classify(&e))
            }
            Err(e) => Err(classify(&e)),
        }
    }
}

/// Why the lease was not held.
#[derive(Debug, PartialEq)]
enum Refused {
    /// Another replica holds it (409 LeaseAlreadyPresent), or ours is gone (409 LeaseIdMismatch...).
    Held,
    /// Anything else: network, auth, throttling. Tried again.
    Failed(String),
}

fn classify(e: &azure_core::Error) -> Refused {
    let what = describe(e);
    match e.http_status() {
        Some(StatusCode::Conflict | StatusCode::PreconditionFailed) => Refused::Held,
        Some(StatusCode::Forbidden | StatusCode::Unauthorized) => Refused::Failed(format!(
            "{what} (the identity needs Storage Blob Data Contributor on the container; a SAS needs read, write and create permissions and must not have expired)"
        )),
        Some(StatusCode::NotFound) => Refused::Failed(format!(
            "{what} (create the container of the lease blob; the blob itself is created when missing)"
        )),
        _ => Refused::Failed(what),
    }
}

/// One line for a storage error: status, `<Code>` and the first line of `<Message>` (the rest
/// of Azure's XML body, request id and time, changes every call).
fn describe(e: &azure_core::Error) -> String {
    let text = e.to_string();
    let between = |open: &str, close: &str| {
        let start = text.find(open)? + open.len();
        let end = text[start..].find(close)? + start;
        Some(
            text[start..end]
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
        )
    };
    match (e.http_status(), between("<Code>", "</Code>")) {
        (Some(status), Some(code)) => {
            let message = between("<Message>", "</Message>").unwrap_or_default();
            format!("HTTP {} {code}: {message}", u16::from(status))
        }
        _ => text.lines().next().unwrap_or("").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_are_one_stable_line() {
        let body = "<?xml version=\"1.0\"?>\n<Error>\n  <Code>AuthorizationFailure</Code>\n  <Message>Server failed to authenticate the request.\nRequestId:9413d107\nTime:2026-11-27T03:25:18.929Z</Message>\n</Error>";
        let e = azure_core::Error::with_message(
            azure_core::error::ErrorKind::HttpResponse {
                status: StatusCode::Forbidden,
                error_code: None,
                raw_response: None,
            },
            format!("403: {body}"),
        );
        assert_eq!(
            describe(&e),
            "HTTP 403 AuthorizationFailure: Server failed to authenticate the request."
        );
        assert!(
            matches!(classify(&e), Refused::Failed(m) if m.contains("Storage Blob Data Contributor"))
        );
    }

    #[test]
    fn config_checks_url_and_duration() {
        let ok = LeaseConfig::new(
            "https://acct.blob.core.windows.net/leases/aca-reconciler?sv=2024&sig=abc",
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(ok.has_sas());
        assert_eq!(
            ok.display_url(),
            "https://acct.blob.core.windows.net/leases/aca-reconciler"
        );
        assert!(
            !LeaseConfig::new(
                "https://acct.blob.core.windows.net/leases/x",
                Duration::from_secs(30)
            )
            .unwrap()
            .has_sas()
        );
        let e = LeaseConfig::new(
            "https://acct.blob.core.windows.net/leases",
            Duration::from_secs(30),
        )
        .unwrap_err();
        assert!(e.contains("names no blob"), "{e}");
        let e = LeaseConfig::new(
            "http://acct.blob.core.windows.net/c/b",
            Duration::from_secs(30),
        )
        .unwrap_err();
        assert!(e.contains("plain http"), "{e}");
        let e = LeaseConfig::new(
            "https://a.blob.core.windows.net/c/b",
            Duration::from_secs(90),
        )
        .unwrap_err();
        assert!(e.contains("15 to 60"), "{e}");
        let e = LeaseConfig::new(
            "http://127.0.0.1:10000/devstoreaccount1/c",
            Duration::from_secs(15),
        )
        .unwrap_err();
        assert!(e.contains("names no blob"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn fence_allows_until_the_deadline_minus_the_window() {
        assert!(Fence::unfenced().is_leader());
        assert_eq!(Fence::unfenced().write_window().unwrap(), None);
        let (tx, fence) = Fence::channel();
        assert!(!fence.is_leader());
        tx.send_replace(Some(Instant::now() + Duration::from_secs(10)));
        let w = fence.write_window().unwrap().unwrap();
        assert!(
            w <= Duration::from_secs(10) && w > Duration::from_secs(9),
            "{w:?}"
        );
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(
            fence.write_window().is_err(),
            "2 s left is less than the minimum window"
        );
        tx.send_replace(None);
        assert!(!fence.is_leader());
    }
}

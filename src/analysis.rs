//! One analysis check of a rollout step: the I/O around [`crate::rollout::judge`].
//!
//! A check reads the stable and new revisions' `Requests` from Azure Monitor in **one** call
//! ([`ArmClient::request_counts`], only when the spec's gates need metrics), runs the probes
//! (`GET` on the new revision's own URL, or the preview label's) at the same time, and judges
//! the numbers. It never fails: a metrics read that fails is a [`Verdict::Error`] (the step
//! holds, nothing is counted) with Azure's error in the reason; a probe that gets no answer is
//! a failed probe with the transport's error.
//!
//! # Windows
//!
//! Azure Monitor shows a minute's requests only once they are ingested (about a minute for
//! platform metrics, with late aggregations after that), so the window a check reads ends a
//! lag before now ([`window_before`]); Azure stores `Requests` per minute, so against Azure
//! give windows of whole minutes. The simulator counts by the second (`--metrics-delay` is its
//! lag).

use std::time::Duration;

use crate::arm::ArmClient;
use crate::ingress::IngressEndpoints;
use crate::rollout::judge::judge;
use crate::rollout::{AnalysisSpec, Check, Counts, ProbeResult, Verdict};
use crate::spec::AppKey;
use crate::time::{self, Millis};

/// How long a probe may take before it counts as unanswered.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The lag to leave before now against Azure: "Azure platform metrics are available in under
/// a minute", and late aggregations make the newest buckets incomplete, so three minutes
/// (learn.microsoft.com azure-monitor/logs/data-ingestion-time; N§11).
pub const AZURE_METRICS_LAG_MS: u64 = 180_000;

/// What one check looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTarget {
    /// When the check is taken (epoch ms); recorded in the [`Check`].
    pub at: Millis,
    /// The step it is taken in.
    pub step: i32,
    /// The new revision's weight now (0: a blue/green preview, no user traffic by design).
    pub weight: u32,
    /// The stable revision (`""`: none ran before).
    pub stable: String,
    /// The new revision.
    pub canary: String,
    /// The metrics window, epoch ms `[start, end)` (see the module docs and
    /// [`window_before`]).
    pub window: (Millis, Millis),
    /// Where the probes go: `https://<revision fqdn>` or the label's URL
    /// `https://<app>---<label>.<domain>` (`None`: the revision has no URL; every probe then
    /// fails, saying so).
    pub probe_base: Option<String>,
}

/// The window of `length_ms` that ends `lag_ms` before `now`, in whole seconds (the
/// timespan Azure Monitor reads has whole seconds): `[end - length, end)`.
pub fn window_before(now: Millis, lag_ms: u64, length_ms: u64) -> (Millis, Millis) {
    let lag = i64::try_from(lag_ms).unwrap_or(i64::MAX / 4);
    let length = i64::try_from(length_ms).unwrap_or(i64::MAX / 4);
    let end = (now - lag).div_euclid(1000) * 1000;
    (end - length.max(1000), end)
}

/// A client for probes: the timeout of [`PROBE_TIMEOUT`], no redirects followed (the status
/// answered is the one judged), no proxy from the environment to the app's own URL.
///
/// # Errors
/// The HTTP client cannot be built (no TLS roots).
pub fn probe_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(crate::arm::USER_AGENT)
        .timeout(PROBE_TIMEOUT)
        .connect_timeout(PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the probes' HTTP client: {e}"))
}

/// Takes analysis checks for the apps of one ARM client.
#[derive(Debug, Clone)]
pub struct Analyzer<'a> {
    arm: &'a ArmClient,
    http: reqwest::Client,
    ingress: IngressEndpoints,
}

impl<'a> Analyzer<'a> {
    /// An analyzer whose metrics reads go through `arm` (its buckets, gates and retries) and
    /// whose probes go through `http` (see [`probe_client`]; cheap to clone) and the
    /// `--ingress-endpoint` mappings.
    pub fn new(arm: &'a ArmClient, http: reqwest::Client, ingress: IngressEndpoints) -> Self {
        Self { arm, http, ingress }
    }

    /// Takes one check of `key`'s rollout step (see the module docs). Never fails.
    pub async fn check(&self, key: &AppKey, spec: &AnalysisSpec, target: &CheckTarget) -> Check {
        let metrics = async {
            if spec.reads_metrics() {
                Some(self.counts(key, target).await)
            } else {
                None
            }
        };
        let probes = futures_util::future::join_all(
            spec.probes
                .iter()
                .map(|p| self.probe(target.probe_base.as_deref(), &p.path, p.expect_status)),
        );
        let (metrics, probes) = tokio::join!(metrics, probes);
        let (stable, canary, read_error) = match metrics {
            None => (None, None, None),
            Some(Ok((stable, canary))) => (stable, Some(canary), None),
            Some(Err(e)) => (None, None, Some(e)),
        };
        let (verdict, mut reason) = judge(spec, target.weight, stable, canary, &probes);
        match (read_error, verdict) {
            (Some(e), Verdict::Error) => reason = format!("the metrics could not be read: {e}"),
            (Some(e), _) => reason = format!("{reason}; the metrics could not be read: {e}"),
            (None, Verdict::NoData) => {
                reason = format!(
                    "{reason} between {} and {} UTC",
                    clock(target.window.0),
                    clock(target.window.1)
                );
            }
            (None, _) => {}
        }
        tracing::debug!(app = %key, step = target.step, canary = %target.canary, verdict = verdict.as_str(), %reason, "analysis check");
        Check {
            at: target.at,
            canary: target.canary.clone(),
            step: target.step,
            window: target.window,
            stable,
            canary_counts: canary,
            probes,
            verdict,
            reason,
        }
    }

    /// The stable revision's counts (`None`: no stable revision) and the canary's.
    async fn counts(
        &self,
        key: &AppKey,
        target: &CheckTarget,
    ) -> Result<(Option<Counts>, Counts), crate::arm::Error> {
        let mut revisions = vec![target.canary.as_str()];
        if !target.stable.is_empty() && !target.stable.eq_ignore_ascii_case(&target.canary) {
            revisions.push(target.stable.as_str());
        }
        let counts = self
            .arm
            .request_counts(key, &revisions, target.window)
            .await?;
        let of = |name: &str| counts.get(name).copied().unwrap_or_default();
        let stable = (!target.stable.is_empty()).then(|| of(&target.stable));
        Ok((stable, of(&target.canary)))
    }

    /// `GET {base}{path}`, through the ingress mappings: the status, or why none came.
    async fn probe(&self, base: Option<&str>, path: &str, expected: u16) -> ProbeResult {
        let Some(base) = base else {
            return ProbeResult {
                url: path.to_owned(),
                expected,
                status: None,
                error: Some(
                    "the revision has no URL to probe (is ingress enabled on the app?)".to_owned(),
                ),
            };
        };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let failed = |error: String| ProbeResult {
            url: url.clone(),
            expected,
            status: None,
            error: Some(error),
        };
        let (target, host) = match self.ingress.resolve(&url) {
            Ok(resolved) => resolved,
            Err(e) => return failed(e),
        };
        let mut request = self.http.get(target.clone());
        if let Some(h) = host {
            request = request.header(reqwest::header::HOST, h);
        }
        match request.send().await {
            Ok(response) => ProbeResult {
                url: url.clone(),
                expected,
                status: Some(response.status().as_u16()),
                error: None,
            },
            Err(e) => {
                let why = crate::arm::without_url(&e);
                if target.as_str() == url {
                    failed(why)
                } else {
                    failed(format!("{why} (at {target})"))
                }
            }
        }
    }
}

/// `10:01:00`.
fn clock(ms: Millis) -> String {
    time::format_arm(ms)
        .get(11..19)
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_end_a_lag_before_now_in_whole_seconds() {
        assert_eq!(
            window_before(1_733_392_925_500, 5_000, 60_000),
            (1_733_392_860_000, 1_733_392_920_000)
        );
        assert_eq!(clock(1_733_392_860_000), "10:01:00");
    }
}

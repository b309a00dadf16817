//! Rollout analysis checks over real HTTP: the `simulate` binary (seeded from
//! `desired-state/` with a `.simulator.yaml` beside it, `--metrics-delay` and
//! `--ingress-listen`) serves users' traffic split over a stable revision, a canary whose image
//! fails a fifth of its requests and a good one; `Analyzer::check` reads Azure Monitor through
//! the ARM client and probes the revisions' own URLs through the ingress mapping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aca_reconciler::analysis::{self, Analyzer, CheckTarget};
use aca_reconciler::arm::metrics::{ArmMetrics, RequestLabels};
use aca_reconciler::arm::{ArmClient, ArmConfig, RetryPolicy};
use aca_reconciler::ingress::IngressEndpoints;
use aca_reconciler::rollout::{AnalysisSpec, Counts, NoData, Probe, Verdict};
use aca_reconciler::spec::AppKey;
use aca_reconciler::time::{self, Clock, Millis};
use common::{PROD_RG, PROD_SUB, Proc, Scratch};
use serde_json::{Value, json};

const APP: &str = "ca-user-service";
const BAD: &str = "ca-user-service--bad";
const GOOD: &str = "ca-user-service--good";
const BAD_IMAGE: &str = "crxshopaiprod.azurecr.io/user-service:v1.2.0";
const DOMAIN: &str = "xshopaiprod.uksouth.azurecontainerapps.io";
/// The simulator's ingestion delay (`--metrics-delay`).
const DELAY_MS: u64 = 2_000;
/// Users' requests per second to the app.
const RATE: u64 = 200;

/// A running `simulate` and what a client needs of it.
struct Sim {
    _proc: Proc,
    _scratch: Scratch,
    base: String,
    ingress: String,
    http: reqwest::Client,
    token: String,
}

/// `simulate` as the README runs it, seeded from `desired-state/` with `sidecar` as its
/// `.simulator.yaml`.
async fn simulate(sidecar: &str) -> Sim {
    let scratch = Scratch::new();
    let tree = scratch.path().join("seed");
    std::fs::create_dir_all(&tree).unwrap();
    common::copy_tree(&common::root().join("desired-state"), &tree);
    scratch.write("seed/.simulator.yaml", sidecar);
    let mut child = common::bin(scratch.path())
        .args(["simulate", "--listen", "127.0.0.1:0", "--seed", "seed"])
        .args(["--identity-header", common::IDENTITY_HEADER])
        .args(["--metrics-delay", &format!("{}s", DELAY_MS / 1000)])
        .args(["--lro", "sync", "--revision-ready", "0s"])
        .args(["--ingress-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .take_while(|l| !l.starts_with("Serving"))
        .collect();
    let proc = Proc(child);
    let base = common::banner_base(&banner[0]);
    let mapping = format!("--ingress-endpoint {DOMAIN}=");
    let ingress = banner
        .iter()
        .find_map(|l| l.split_once(&mapping).map(|(_, url)| url.to_owned()))
        .unwrap_or_else(|| panic!("no ingress line for {DOMAIN}: {banner:?}"));
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{base}/_sim/token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Sim {
        _proc: proc,
        _scratch: scratch,
        base,
        ingress,
        http,
        token: token["access_token"].as_str().unwrap().to_owned(),
    }
}

impl Sim {
    fn app_url(&self) -> String {
        format!(
            "{}/subscriptions/{PROD_SUB}/resourceGroups/{PROD_RG}/providers/Microsoft.App/containerApps/{APP}",
            self.base
        )
    }

    async fn app(&self) -> Value {
        let r = self
            .http
            .get(format!("{}?api-version=2026-01-01", self.app_url()))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn patch(&self, body: Value) {
        let r = self
            .http
            .patch(format!("{}?api-version=2026-01-01", self.app_url()))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(status, 200, "{}", r.text().await.unwrap());
    }

    async fn sim_post(&self, path: &str, body: Value) -> u16 {
        self.http
            .post(format!("{}/_sim/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Two new revisions beside the serving one (the stable): `BAD` runs `BAD_IMAGE`, `GOOD`
    /// the stable's image; traffic 40/30/30. Returns the stable revision's name and when the
    /// split began.
    async fn split(&self) -> (String, Millis) {
        let app = self.app().await;
        let stable = app["properties"]["latestRevisionName"]
            .as_str()
            .unwrap()
            .to_owned();
        let container = &app["properties"]["template"]["containers"][0];
        let (name, image) = (container["name"].clone(), container["image"].clone());
        assert_ne!(
            image, BAD_IMAGE,
            "the stable revision must not run the bad image"
        );
        self.patch(json!({"properties": {
            "template": {"revisionSuffix": "bad", "containers": [{"name": name, "image": BAD_IMAGE}]},
            "configuration": {"ingress": {"traffic": [{"revisionName": stable, "weight": 100}]}},
        }}))
        .await;
        self.patch(json!({"properties": {
            "template": {"revisionSuffix": "good", "containers": [{"name": name, "image": image}]},
            "configuration": {"ingress": {"traffic": [
                {"revisionName": stable, "weight": 40},
                {"revisionName": BAD, "weight": 30},
                {"revisionName": GOOD, "weight": 30, "label": "preview"},
            ]}},
        }}))
        .await;
        (stable, Clock::new().now())
    }

    /// The simulator's own split of `window`, read independently of the client under test
    /// (every revision, `'*'`): revision -> counts.
    async fn raw_counts(
        &self,
        window: (Millis, Millis),
    ) -> std::collections::BTreeMap<String, Counts> {
        let span = |ms| time::format_arm(ms).replace("+00:00", "Z");
        let body: Value = self
            .http
            .get(format!(
                "{}/providers/Microsoft.Insights/metrics",
                self.app_url()
            ))
            .query(&[
                ("api-version", "2023-10-01"),
                ("metricnames", "Requests"),
                ("aggregation", "Total"),
                ("interval", "PT1M"),
                (
                    "timespan",
                    &format!("{}/{}", span(window.0), span(window.1)),
                ),
                (
                    "$filter",
                    "revisionName eq '*' and statusCodeCategory eq '*'",
                ),
            ])
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut out = std::collections::BTreeMap::<String, Counts>::new();
        for s in body["value"][0]["timeseries"].as_array().unwrap() {
            let dim = |n: &str| {
                s["metadatavalues"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["name"]["value"] == n)
                    .map(|m| m["value"].as_str().unwrap().to_owned())
                    .unwrap()
            };
            let total: f64 = s["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["total"].as_f64())
                .sum();
            let c = out.entry(dim("revisionname")).or_default();
            c.requests += total as u64;
            if dim("statuscodecategory") == "5xx" {
                c.errors += total as u64;
            }
        }
        out
    }

    fn arm(&self, retry: RetryPolicy) -> (ArmClient, Arc<ArmMetrics>) {
        let mut config = ArmConfig::new(&self.base);
        config.retry = retry;
        let arm = ArmClient::new(config, Arc::new(common::tokens(&self.base))).unwrap();
        let metrics = Arc::new(ArmMetrics::default());
        arm.set_metrics(metrics.clone());
        (arm, metrics)
    }

    fn ingress(&self) -> IngressEndpoints {
        IngressEndpoints::new(&[(DOMAIN.to_owned(), self.ingress.clone())]).unwrap()
    }
}

fn key() -> AppKey {
    AppKey::new(PROD_SUB, PROD_RG, APP)
}

fn spec() -> AnalysisSpec {
    AnalysisSpec {
        interval_ms: 3_000,
        max_failed_checks: 2,
        no_data: NoData::Hold,
        min_requests: 50,
        success_rate_min: Some(99.0),
        max_drop_vs_stable: Some(1.0),
        probes: vec![Probe {
            path: "/health".to_owned(),
            expect_status: 200,
        }],
    }
}

fn target(stable: &str, canary: &str, weight: u32, window: (Millis, Millis)) -> CheckTarget {
    CheckTarget {
        at: Clock::new().now(),
        step: 0,
        weight,
        stable: stable.to_owned(),
        canary: canary.to_owned(),
        window,
        probe_base: Some(format!("https://{canary}.{DOMAIN}")),
    }
}

fn requests(m: &ArmMetrics, status: &str) -> u64 {
    m.requests
        .get_or_create(&RequestLabels {
            route: "metrics.list".to_owned(),
            status: status.to_owned(),
        })
        .get()
}

/// Sleeps until `at` (epoch ms) has passed by `margin_ms`.
async fn sleep_past(at: Millis, margin_ms: i64) {
    let wait = at + margin_ms - Clock::new().now();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

const SIDECAR: &str = "apps:\n  ca-user-service: {requestsPerSecond: 200}\nimages:\n  \"crxshopaiprod.azurecr.io/user-service:v1.2.0\": {errorRate: 0.2}\n";

/// The canary: a revision whose image fails 20% of requests fails the check with the
/// numbers, a good one passes, both from one metrics read each that counts exactly what the
/// simulator served in the window (its ingestion delay left out), and the probes reach the
/// revisions' own URLs through the ingress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_a_fifth_of_requests_fails_with_its_numbers_and_a_good_one_passes() {
    let sim = simulate(SIDECAR).await;
    let (stable, split_at) = sim.split().await;
    // Three whole seconds after the split, visible once the ingestion delay has passed.
    let start = (split_at / 1000 + 1) * 1000;
    let window = (start, start + 3_000);
    // Long enough after it that what came after the window is visible too (and must not be
    // counted).
    sleep_past(window.1 + DELAY_MS as i64, 1_500).await;
    assert!(
        analysis::window_before(Clock::new().now(), DELAY_MS, 3_000).1 >= window.1,
        "the lag leaves the window readable"
    );

    let (arm, metrics) = sim.arm(RetryPolicy::default());
    let probes = analysis::probe_client().unwrap();
    let analyzer = Analyzer::new(&arm, probes, sim.ingress());

    let bad = analyzer
        .check(&key(), &spec(), &target(&stable, BAD, 30, window))
        .await;
    let raw = sim.raw_counts(window).await;
    // 30% of 200 requests a second for 3 s, a fifth of them failed.
    let canary = bad.canary_counts.unwrap();
    assert!(
        canary.requests.abs_diff(3 * RATE * 30 / 100) <= 1,
        "{bad:?}"
    );
    assert!(canary.errors.abs_diff(canary.requests / 5) <= 1, "{bad:?}");
    assert_eq!(Some(&canary), raw.get(BAD), "{raw:?}");
    let stable_counts = bad.stable.unwrap();
    assert_eq!(Some(&stable_counts), raw.get(&stable), "{raw:?}");
    assert_eq!(stable_counts.errors, 0);
    assert_eq!(bad.verdict, Verdict::Fail, "{bad:?}");
    let rate = 100.0 * (canary.requests - canary.errors) as f64 / canary.requests as f64;
    assert!(
        bad.reason.starts_with(&format!(
            "success rate {rate:.1}% < 99% over {} requests; success rate {rate:.1}% is ",
            canary.requests
        )),
        "{}",
        bad.reason
    );
    assert!(
        bad.reason
            .contains("below the stable revision's 100.0% (maxDrop 1)"),
        "{}",
        bad.reason
    );
    assert_eq!(bad.probes.len(), 1);
    assert_eq!(bad.probes[0].url, format!("https://{BAD}.{DOMAIN}/health"));
    assert_eq!(bad.probes[0].status, Some(200), "{:?}", bad.probes);
    assert_eq!((bad.window, bad.canary.as_str()), (window, BAD));

    let good = analyzer
        .check(&key(), &spec(), &target(&stable, GOOD, 30, window))
        .await;
    assert_eq!(good.verdict, Verdict::Pass, "{good:?}");
    assert_eq!(Some(&good.canary_counts.unwrap()), raw.get(GOOD));
    assert_eq!(
        good.reason,
        format!(
            "success rate 100.0% over {} requests (stable 100.0%); probes 1/1",
            good.canary_counts.unwrap().requests
        )
    );
    // One read per check, counted under its own route.
    assert_eq!(requests(&metrics, "200"), 2);

    // A window that ignores the delay sees only part of what was served.
    let now = Clock::new().now() / 1000 * 1000;
    let unlagged = analyzer
        .check(
            &key(),
            &spec(),
            &target(&stable, GOOD, 30, (now - 3_000, now)),
        )
        .await;
    let seen = unlagged.canary_counts.unwrap().requests;
    assert!(seen < 3 * RATE * 30 / 100 / 2, "{unlagged:?}");
}

/// No users: no data, with the count, the threshold and the window; at weight 0 (a preview)
/// the probes decide; a probe answering the wrong status or not at all fails the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_traffic_is_no_data_and_at_weight_0_the_probes_decide() {
    let sim = simulate(
        "apps:\n  ca-user-service: {requestsPerSecond: 0}\nrevisions:\n  ca-user-service--bad: {healthStatus: 503}\n",
    )
    .await;
    let (stable, split_at) = sim.split().await;
    let start = (split_at / 1000 + 1) * 1000;
    let window = (start, start + 2_000);
    sleep_past(window.1 + DELAY_MS as i64, 300).await;
    let (arm, _) = sim.arm(RetryPolicy::default());
    let analyzer = Analyzer::new(&arm, analysis::probe_client().unwrap(), sim.ingress());

    let idle = analyzer
        .check(&key(), &spec(), &target(&stable, GOOD, 30, window))
        .await;
    assert_eq!(idle.verdict, Verdict::NoData, "{idle:?}");
    let clock = |ms: Millis| time::format_arm(ms)[11..19].to_owned();
    assert_eq!(
        idle.reason,
        format!(
            "0 requests < minRequests 50 between {} and {} UTC",
            clock(window.0),
            clock(window.1)
        )
    );
    assert_eq!(idle.canary_counts, Some(Counts::default()));

    // The preview at weight 0, on its label's URL: the probes decide.
    let preview = CheckTarget {
        probe_base: Some(format!("https://{APP}---preview.{DOMAIN}")),
        ..target(&stable, GOOD, 0, window)
    };
    let check = analyzer.check(&key(), &spec(), &preview).await;
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
    assert_eq!(
        check.probes[0].url,
        format!("https://{APP}---preview.{DOMAIN}/health")
    );
    assert!(check.reason.ends_with("probes 1/1"), "{}", check.reason);

    // The bad revision's health path answers 503.
    let check = analyzer
        .check(&key(), &spec(), &target(&stable, BAD, 0, window))
        .await;
    assert_eq!(check.verdict, Verdict::Fail, "{check:?}");
    assert_eq!(
        check.reason,
        format!("probe GET https://{BAD}.{DOMAIN}/health answered 503, expected 200")
    );

    // Nothing listening: no answer, with the transport's reason and where it went.
    let gone = IngressEndpoints::new(&[(
        DOMAIN.to_owned(),
        format!("http://127.0.0.1:{}", common::free_port()),
    )])
    .unwrap();
    let analyzer = Analyzer::new(&arm, analysis::probe_client().unwrap(), gone);
    let check = analyzer
        .check(&key(), &spec(), &target(&stable, GOOD, 0, window))
        .await;
    assert_eq!(check.verdict, Verdict::Fail, "{check:?}");
    assert_eq!(check.probes[0].status, None);
    assert!(
        check.reason.contains("/health gave no answer: ")
            && check.reason.contains("(at http://127.0.0.1:"),
        "{}",
        check.reason
    );
}

/// A metrics read that fails is an Error verdict (the step holds, nothing counted) with
/// Azure's answer in the reason: a permission missing (not retried) and an outage (retried
/// as every read, then given up); the next read after the fault passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_metrics_read_is_an_error_verdict_with_azures_answer() {
    let sim = simulate(SIDECAR).await;
    let (stable, split_at) = sim.split().await;
    let start = (split_at / 1000 + 1) * 1000;
    let window = (start, start + 2_000);
    sleep_past(window.1 + DELAY_MS as i64, 300).await;
    let retry = RetryPolicy {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        max_retries: 2,
    };
    let (arm, metrics) = sim.arm(retry);
    let analyzer = Analyzer::new(&arm, analysis::probe_client().unwrap(), sim.ingress());

    let fault = |status: u16, code: &str| json!({"operation": "Metrics_List", "fault": {"kind": "status", "status": status, "code": code}});
    assert_eq!(
        sim.sim_post("faults", fault(403, "AuthorizationFailed"))
            .await,
        201
    );
    let check = analyzer
        .check(&key(), &spec(), &target(&stable, GOOD, 30, window))
        .await;
    assert_eq!(check.verdict, Verdict::Error, "{check:?}");
    assert!(
        check
            .reason
            .starts_with("the metrics could not be read: GET ")
            && check
                .reason
                .contains("/providers/Microsoft.Insights/metrics: HTTP 403 AuthorizationFailed"),
        "{}",
        check.reason
    );
    assert_eq!((check.stable, check.canary_counts), (None, None));
    assert_eq!(check.probes[0].status, Some(200), "the probes still ran");
    assert_eq!(requests(&metrics, "403"), 1, "a 403 is not retried");

    let r = sim
        .http
        .delete(format!("{}/_sim/faults", sim.base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        sim.sim_post("faults", fault(503, "ServiceUnavailable"))
            .await,
        201
    );
    let check = analyzer
        .check(&key(), &spec(), &target(&stable, GOOD, 30, window))
        .await;
    assert_eq!(check.verdict, Verdict::Error, "{check:?}");
    assert!(check.reason.contains("HTTP 503"), "{}", check.reason);
    assert_eq!(requests(&metrics, "503"), 3, "retried as every read");

    let r = sim
        .http
        .delete(format!("{}/_sim/faults", sim.base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let check = analyzer
        .check(&key(), &spec(), &target(&stable, GOOD, 30, window))
        .await;
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
}

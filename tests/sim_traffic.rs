//! The simulator's traffic model over real HTTP on loopback: requests split by the traffic
//! rules at each moment, per-revision behaviour, the Azure Monitor metrics API over what was
//! served, and the apps', revisions' and labels' own URLs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aca_reconciler::ingress::IngressEndpoints;
use aca_reconciler::simulator::seed;
use aca_reconciler::simulator::store::{Config, LroMode, World};
use aca_reconciler::time::{self, Clock, Millis};
use common::{ArmTestClient, PROD_RG, PROD_SUB, example_state, start_sim};
use serde_json::{Value, json};

const APP: &str = "ca-user-service";
const STABLE: &str = "ca-user-service--v119";
const IDLE: &str = "ca-user-service--v118";
const CANARY: &str = "ca-user-service--canary";
const CANARY_IMAGE: &str = "crxshopaiprod.azurecr.io/user-service:v1.2.0";
const DOMAIN: &str = "xshopaiprod.uksouth.azurecontainerapps.io";

/// The example platform, writes answering at once and new revisions ready at once.
fn world(metrics_delay_ms: u64) -> World {
    seed::from_desired(
        &example_state(),
        Config {
            lro_mode: LroMode::Sync,
            revision_ready_ms: 0,
            metrics_delay_ms,
            ..Config::default()
        },
        Clock::new().now(),
    )
}

async fn sim_post(c: &ArmTestClient, path: &str, body: Value) -> Value {
    let r = c
        .http
        .post(format!("{}/_sim/{path}", c.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "POST /_sim/{path} {body}: {v}");
    v
}

/// `GET .../providers/Microsoft.Insights/metrics` with `params` (api-version 2023-10-01
/// unless given): status and body.
async fn metrics(c: &ArmTestClient, params: &[(&str, String)]) -> (u16, Value) {
    let url = format!(
        "{}/providers/Microsoft.Insights/metrics",
        c.app_url(PROD_SUB, PROD_RG, APP)
    );
    let mut query: Vec<(&str, String)> = params.to_vec();
    if !params.iter().any(|(k, _)| *k == "api-version") {
        query.push(("api-version", "2023-10-01".into()));
    }
    let r = c
        .http
        .get(url)
        .query(&query)
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn span(from: Millis, to: Millis) -> String {
    format!("{}/{}", time::format_arm(from), time::format_arm(to)).replace("+00:00", "Z")
}

/// Requests split by revision and status code category: (revision, category) -> total.
fn by_revision_and_category(body: &Value) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for series in body["value"][0]["timeseries"].as_array().unwrap() {
        let dim = |name: &str| {
            series["metadatavalues"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"]["value"] == name)
                .map(|m| m["value"].as_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let total: f64 = series["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["total"].as_f64())
            .sum();
        *out.entry((dim("revisionname"), dim("statuscodecategory")))
            .or_insert(0.0) += total;
    }
    out
}

fn split_query(from: Millis, to: Millis) -> Vec<(&'static str, String)> {
    vec![
        ("timespan", span(from, to)),
        ("interval", "PT1M".into()),
        ("aggregation", "Total".into()),
        ("metricnames", "Requests".into()),
        ("metricnamespace", "Microsoft.App/containerApps".into()),
        (
            "$filter",
            "revisionName eq '*' and statusCodeCategory eq '*'".into(),
        ),
    ]
}

/// The canary case of progressive delivery: 90% to the stable revision, 10% to a new one
/// whose image fails a fifth of its requests, and a labelled revision with weight 0. Time is
/// tokio's paused clock, so the counts are exact.
#[tokio::test(start_paused = true)]
async fn a_90_10_split_reports_the_canarys_5xx_share_nothing_for_weight_0_and_nothing_newer_than_the_delay()
 {
    let h = start_sim(world(10_000)).await;
    let c = ArmTestClient::new(&h);
    let app_url = c.app_url(PROD_SUB, PROD_RG, APP);

    // The behaviour is declared for the image before any revision runs it.
    sim_post(
        &c,
        "behaviours",
        json!({"image": CANARY_IMAGE, "errorRate": 0.2}),
    )
    .await;
    let r = c
        .patch(
            &app_url,
            json!({"properties": {
                "template": {"revisionSuffix": "canary", "containers": [{"name": "user-service", "image": CANARY_IMAGE}]},
                "configuration": {"ingress": {"traffic": [
                    {"revisionName": STABLE, "weight": 90},
                    {"revisionName": CANARY, "weight": 10},
                    {"revisionName": IDLE, "weight": 0, "label": "blue"},
                ]}}
            }}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let canary = c.get_json(&format!("{app_url}/revisions/{CANARY}")).await;
    assert_eq!(canary["properties"]["runningState"], "Running");

    // Users send 100 requests per second from a whole second on.
    let now = h.sim.clock.now();
    tokio::time::advance(Duration::from_millis((1000 - now.rem_euclid(1000)) as u64)).await;
    let set = sim_post(
        &c,
        "traffic",
        json!({"subscription": PROD_SUB, "resourceGroup": PROD_RG, "app": APP, "requestsPerSecond": 100}),
    )
    .await;
    let t0 = time::parse(set["since"].as_str().unwrap()).unwrap();
    assert_eq!(t0 % 1000, 0, "the rate starts on a whole second");

    // After 30 s, with a 10 s ingestion delay, 20 s of requests are visible.
    tokio::time::advance(Duration::from_secs(30)).await;
    let (status, body) = metrics(&c, &split_query(t0, t0 + 30_000)).await;
    assert_eq!(status, 200, "{body}");
    let seen = by_revision_and_category(&body);
    assert_eq!(
        seen.values().sum::<f64>(),
        2_000.0,
        "nothing newer than the delay: {seen:?}"
    );
    for point in body["value"][0]["timeseries"][0]["data"]
        .as_array()
        .unwrap()
    {
        let at = time::parse(point["timeStamp"].as_str().unwrap()).unwrap();
        assert!(
            point.get("total").is_none() || at < t0 + 20_000,
            "a point after the ingestion cut has data: {point}"
        );
    }

    // Once the delay has passed, all 30 s: 2,700 to the stable revision, 300 to the canary,
    // 60 of which (20%) failed, and none to the revision with weight 0.
    tokio::time::advance(Duration::from_secs(10)).await;
    let (status, body) = metrics(&c, &split_query(t0, t0 + 30_000)).await;
    assert_eq!(status, 200, "{body}");
    let seen = by_revision_and_category(&body);
    let get = |rev: &str, cat: &str| {
        seen.get(&(rev.to_owned(), cat.to_owned()))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(get(STABLE, "2xx"), 2_700.0, "{seen:?}");
    assert_eq!(get(STABLE, "5xx"), 0.0, "{seen:?}");
    let canary_total = get(CANARY, "2xx") + get(CANARY, "5xx");
    assert_eq!(canary_total, 300.0, "{seen:?}");
    let share = get(CANARY, "5xx") / canary_total;
    assert!((share - 0.2).abs() <= 0.02, "canary 5xx share {share}");
    assert!(
        !seen.keys().any(|(rev, _)| rev == IDLE),
        "the revision with weight 0 served nothing: {seen:?}"
    );
    assert_eq!(seen.len(), 3, "{seen:?}");

    // The shape: dimension names lower-cased, one point per minute of the timespan.
    let series = &body["value"][0]["timeseries"][0];
    let names: Vec<&str> = series["metadatavalues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["revisionname", "statuscodecategory"]);
    assert_eq!(body["value"][0]["errorCode"], "Success");
    assert_eq!(body["namespace"], "microsoft.app/containerapps");
    assert_eq!(body["resourceregion"], "uksouth");

    // The split changes at the moment the rules change, however long since anyone asked:
    // 5 s more at 90/10 with no request, then 50/50 for 10 s.
    tokio::time::advance(Duration::from_secs(5)).await;
    let r = c
        .patch(
            &app_url,
            json!({"properties": {"configuration": {"ingress": {"traffic": [
                {"revisionName": STABLE, "weight": 50},
                {"revisionName": CANARY, "weight": 50},
            ]}}}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let t1 = h.sim.clock.now();
    assert_eq!(t1, t0 + 45_000);
    tokio::time::advance(Duration::from_secs(20)).await;
    let (_, body) = metrics(&c, &split_query(t0, t1 + 10_000)).await;
    let seen = by_revision_and_category(&body);
    let get = |rev: &str, cat: &str| {
        seen.get(&(rev.to_owned(), cat.to_owned()))
            .copied()
            .unwrap_or(0.0)
    };
    // 45 s at 90/10, then 10 s at 50/50.
    assert_eq!(get(STABLE, "2xx"), 4_050.0 + 500.0, "{seen:?}");
    assert_eq!(
        get(CANARY, "2xx") + get(CANARY, "5xx"),
        450.0 + 500.0,
        "{seen:?}"
    );
    assert_eq!(get(CANARY, "5xx"), 190.0, "a fifth of 950: {seen:?}");
    assert_eq!(
        c.sim_json("outages").await,
        json!([]),
        "the canary was ready when it got weight"
    );
}

/// A revision that is not running answers 503: traffic sent to a deactivated revision is
/// counted as such, from the moment it stopped.
#[tokio::test(start_paused = true)]
async fn requests_to_a_revision_that_is_not_running_fail_with_503() {
    let h = start_sim(world(0)).await;
    let c = ArmTestClient::new(&h);
    let app_url = c.app_url(PROD_SUB, PROD_RG, APP);
    sim_post(
        &c,
        "traffic",
        json!({"subscription": PROD_SUB, "resourceGroup": PROD_RG, "app": APP, "requestsPerSecond": 10}),
    )
    .await;
    let t0 = h.sim.clock.now();
    tokio::time::advance(Duration::from_secs(5)).await;
    let r = c
        .post(&format!("{app_url}/revisions/{STABLE}/deactivate"))
        .await;
    assert_eq!(r.status(), 200);
    tokio::time::advance(Duration::from_secs(5)).await;
    sim_post(
        &c,
        "traffic",
        json!({"subscription": PROD_SUB, "resourceGroup": PROD_RG, "app": APP, "requestsPerSecond": 0}),
    )
    .await;
    // The last second becomes visible once it has passed.
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut q = split_query(t0 - 1_000, t0 + 12_000);
    q.push(("ValidateDimensions", "false".into()));
    let (_, body) = metrics(&c, &q).await;
    let seen = by_revision_and_category(&body);
    let get = |cat: &str| seen.get(&(STABLE.to_owned(), cat.to_owned())).copied();
    assert_eq!(get("2xx"), Some(50.0), "{seen:?}");
    assert_eq!(get("5xx"), Some(50.0), "{seen:?}");
    assert_eq!(c.sim_json("outages").await[0]["revision"], STABLE);
}

/// `latestRevision` follows the latest *ready* revision from the moment it is ready, even when
/// no client asks anything in between: the world advances the traffic to that moment first.
#[tokio::test(start_paused = true)]
async fn latest_revision_traffic_moves_at_the_moment_the_new_revision_becomes_ready() {
    let mut w = world(0);
    w.config.revision_ready_ms = 2_000;
    let h = start_sim(w).await;
    let c = ArmTestClient::new(&h);
    let app_url = c.app_url(PROD_SUB, PROD_RG, APP);
    let r = c
        .patch(
            &app_url,
            json!({"properties": {"configuration": {"ingress": {"traffic": [
                {"latestRevision": true, "weight": 100},
            ]}}}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let now = h.sim.clock.now();
    tokio::time::advance(Duration::from_millis((1000 - now.rem_euclid(1000)) as u64)).await;
    let set = sim_post(
        &c,
        "traffic",
        json!({"subscription": PROD_SUB, "resourceGroup": PROD_RG, "app": APP, "requestsPerSecond": 10}),
    )
    .await;
    let t0 = time::parse(set["since"].as_str().unwrap()).unwrap();
    let r = c
        .patch(
            &app_url,
            json!({"properties": {"template": {"revisionSuffix": "next", "containers": [{"name": "user-service", "image": CANARY_IMAGE}]}}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    // Nobody calls for 10 s; the new revision became ready 2 s in.
    tokio::time::advance(Duration::from_secs(11)).await;
    let (_, body) = metrics(&c, &split_query(t0, t0 + 10_000)).await;
    let seen = by_revision_and_category(&body);
    let next = "ca-user-service--next".to_owned();
    assert_eq!(
        seen.get(&(STABLE.to_owned(), "2xx".to_owned())),
        Some(&20.0),
        "{seen:?}"
    );
    assert_eq!(seen.get(&(next, "2xx".to_owned())), Some(&80.0), "{seen:?}");
}

async fn host_get(c: &ArmTestClient, base: &str, host: &str, path: &str) -> (u16, Value) {
    let r = c
        .http
        .get(format!("{base}{path}"))
        .header("host", host)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_label_with_weight_0_answers_on_its_url_and_moving_the_label_moves_the_answer() {
    let mut h = start_sim(world(0)).await;
    let c = ArmTestClient::new(&h);
    let app_url = c.app_url(PROD_SUB, PROD_RG, APP);
    // The idle revision's health path fails; the serving one's is fine.
    sim_post(
        &c,
        "behaviours",
        json!({"revision": IDLE, "healthStatus": 503}),
    )
    .await;
    let r = c
        .patch(
            &app_url,
            json!({"properties": {"configuration": {"ingress": {"traffic": [
                {"revisionName": STABLE, "weight": 100},
                {"revisionName": IDLE, "weight": 0, "label": "blue"},
            ]}}}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let label_host = format!("{APP}---blue.{DOMAIN}");

    // On the simulator's own port, by Host.
    let (status, body) = host_get(&c, &c.base, &label_host, "/health").await;
    assert_eq!(
        (status, body["revision"].as_str()),
        (503, Some(IDLE)),
        "{body}"
    );
    assert_eq!(body["label"], "blue");

    // Moving the label moves the answer.
    let r = c
        .patch(
            &app_url,
            json!({"properties": {"configuration": {"ingress": {"traffic": [
                {"revisionName": STABLE, "weight": 100, "label": "blue"},
                {"revisionName": IDLE, "weight": 0},
            ]}}}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (status, body) = host_get(&c, &c.base, &label_host, "/health").await;
    assert_eq!(
        (status, body["revision"].as_str()),
        (200, Some(STABLE)),
        "{body}"
    );

    // A revision's own URL (properties.fqdn) reaches it whatever its weight; the app's URL
    // follows the split; an unknown host under the domain is Container Apps' 404.
    let idle = c.get_json(&format!("{app_url}/revisions/{IDLE}")).await;
    let idle_fqdn = idle["properties"]["fqdn"].as_str().unwrap().to_owned();
    assert_eq!(idle_fqdn, format!("{IDLE}.{DOMAIN}"));
    let (status, body) = host_get(&c, &c.base, &idle_fqdn, "/health").await;
    assert_eq!((status, body["revision"].as_str()), (503, Some(IDLE)));
    let app = c.get_json(&app_url).await;
    let app_fqdn = app["properties"]["configuration"]["ingress"]["fqdn"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = host_get(&c, &c.base, &app_fqdn, "/orders").await;
    assert_eq!((status, body["revision"].as_str()), (200, Some(STABLE)));
    let (status, _) = host_get(&c, &c.base, &format!("ca-nope.{DOMAIN}"), "/").await;
    assert_eq!(status, 404);

    // On --ingress-listen, through the mapping a client is given (--ingress-endpoint).
    let ingress = h.serve_ingress("127.0.0.1:0".parse().unwrap()).unwrap();
    let endpoints = IngressEndpoints::new(&[(DOMAIN.to_owned(), ingress.clone())]).unwrap();
    let (status, text) = endpoints
        .get(&c.http, &format!("https://{label_host}/health"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(STABLE), "{text}");
    let (status, _) = host_get(&c, &ingress, "127.0.0.1", "/subscriptions").await;
    assert_eq!(status, 404, "the ingress port serves apps only");

    // Every answer was counted, on the revision that gave it.
    // (The timespan is in whole seconds: its end is past the second of the last request.)
    let q = split_query(h.sim.clock.now() - 120_000, h.sim.clock.now() + 2_000);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, body) = metrics(&c, &q).await;
    assert_eq!(status, 200, "{body}");
    let seen = by_revision_and_category(&body);
    let get = |rev: &str, cat: &str| seen.get(&(rev.to_owned(), cat.to_owned())).copied();
    assert_eq!(get(IDLE, "5xx"), Some(2.0), "{body}");
    assert_eq!(get(STABLE, "2xx"), Some(3.0), "{body}");
}

#[tokio::test]
async fn repeated_slashes_reach_the_same_routes() {
    let h = start_sim(world(0)).await;
    let c = ArmTestClient::new(&h);
    let r = c
        .http
        .get(format!(
            "{}//metadata/endpoints?api-version=2022-09-01",
            c.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["resourceManager"].is_string());
    let url = format!(
        "{}//subscriptions/{PROD_SUB}//resourceGroups/{PROD_RG}/providers/Microsoft.App/containerApps///{APP}",
        c.base
    );
    assert_eq!(c.get(&url).await.status(), 200);
    let r = c
        .http
        .get(format!("{}//_sim//health", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_metrics_route_checks_its_parameters_counts_as_a_read_and_can_be_faulted() {
    let h = start_sim(world(0)).await;
    let c = ArmTestClient::new(&h);
    let now = h.sim.clock.now();
    let window = span(now - 600_000, now + 60_000);

    // An unknown metric fails in its own item, beside one that works, with HTTP 200.
    let (status, body) = metrics(
        &c,
        &[
            ("metricnames", "Nonexistent,Replicas".into()),
            ("timespan", window.clone()),
            ("interval", "FULL".into()),
            ("$filter", "revisionName eq '*'".into()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"][0]["errorCode"], "MetricNotFound");
    assert_eq!(body["value"][0]["timeseries"], json!([]));
    assert!(
        body["value"][0]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("Requests")
    );
    assert_eq!(body["value"][1]["errorCode"], "Success");
    assert_eq!(body["interval"], "PT11M", "FULL is the timespan's length");
    // Replicas per running revision: seven active revisions of 1 replica each.
    let replicas = body["value"][1]["timeseries"].as_array().unwrap();
    assert_eq!(replicas.len(), 7, "{body}");
    assert_eq!(replicas[0]["data"][0]["maximum"], 1.0);

    // Parameters Azure refuses.
    for (param, value, needle) in [
        (
            "api-version",
            "2017-05-01-preview",
            "NoRegisteredProviderFound",
        ),
        ("interval", "PT2M", "interval"),
        ("timespan", "yesterday", "timespan"),
        ("aggregation", "median", "aggregation"),
        ("metricnamespace", "Microsoft.Web/sites", "namespace"),
        (
            "$filter",
            "revisionName eq 'a' or statusCode eq '500'",
            "or operator",
        ),
        ("$filter", "podName eq '*'", "does not support"),
        ("top", "0", "top"),
    ] {
        let (status, body) = metrics(&c, &[(param, value.into())]).await;
        assert_eq!(status, 400, "{param}={value}: {body}");
        assert!(body.to_string().contains(needle), "{param}={value}: {body}");
    }
    // With ValidateDimensions (the default), a revision without data is refused; without it,
    // it simply has no series.
    let filter = ("$filter", format!("revisionName eq '{CANARY}'"));
    let (status, body) = metrics(&c, std::slice::from_ref(&filter)).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = metrics(&c, &[filter, ("ValidateDimensions", "false".into())]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"][0]["timeseries"], json!([]));
    // Old api-versions with dimensions are answered.
    let (status, _) = metrics(&c, &[("api-version", "2018-01-01".into())]).await;
    assert_eq!(status, 200);

    // A read in ARM's read bucket, and a route fault rules can match.
    let r = c
        .http
        .get(format!(
            "{}/providers/Microsoft.Insights/metrics?api-version=2023-10-01",
            c.app_url(PROD_SUB, PROD_RG, APP)
        ))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()
            .contains_key("x-ms-ratelimit-remaining-subscription-reads")
    );
    assert!(r.headers().contains_key("x-ms-request-id"));
    let counts = c.sim_json("requests").await;
    assert!(
        counts["byOperation"]["Metrics_List"].as_u64().unwrap() >= 10,
        "{counts}"
    );
    let r = c
        .http
        .post(format!("{}/_sim/faults", c.base))
        .json(&json!({"operation": "Metrics_List", "fault": {"kind": "status", "status": 503}, "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (status, _) = metrics(&c, &[]).await;
    assert_eq!(status, 503);
    let (status, _) = metrics(&c, &[]).await;
    assert_eq!(status, 200);
    // A missing app is ARM's 404.
    let r = c
        .http
        .get(format!(
            "{}/providers/Microsoft.Insights/metrics?api-version=2023-10-01",
            c.app_url(PROD_SUB, PROD_RG, "ca-nope")
        ))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn behaviours_and_traffic_are_checked_and_kept_in_the_state_dump() {
    let h = start_sim(world(0)).await;
    let c = ArmTestClient::new(&h);
    for bad in [
        json!({"image": "x", "errorRate": 1.5}),
        json!({"image": "x", "errorStatus": 200}),
        json!({"image": "x", "healthPath": "health"}),
        json!({"image": "x", "revision": "y", "errorRate": 0.1}),
        json!({"errorRate": 0.1}),
        json!({"image": "x", "errorRatio": 0.1}),
    ] {
        let r = c
            .http
            .post(format!("{}/_sim/behaviours", c.base))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    for bad in [
        json!({"subscription": PROD_SUB, "resourceGroup": PROD_RG, "app": "ca-nope", "requestsPerSecond": 1}),
        json!({"subscription": PROD_SUB, "resourceGroup": PROD_RG, "app": APP, "requestsPerSecond": -1}),
    ] {
        let r = c
            .http
            .post(format!("{}/_sim/traffic", c.base))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    sim_post(
        &c,
        "behaviours",
        json!({"image": CANARY_IMAGE, "errorRate": 0.5, "latencyMs": 5}),
    )
    .await;
    sim_post(
        &c,
        "traffic",
        json!({"subscription": PROD_SUB, "resourceGroup": PROD_RG, "app": APP, "requestsPerSecond": 20}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let traffic = c.sim_json("traffic").await;
    assert_eq!(traffic.as_array().unwrap().len(), 1, "{traffic}");
    assert_eq!(traffic[0]["requestsPerSecond"], 20.0);
    let served: u64 = traffic[0]["served"][STABLE]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!((4..=8).contains(&served), "{traffic}");
    let dump = c.sim_json("state").await;
    assert_eq!(dump["behaviours"]["images"][CANARY_IMAGE]["errorRate"], 0.5);
    let record = dump["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"]["name"] == APP && a["resourceGroup"] == PROD_RG)
        .unwrap();
    assert_eq!(record["traffic"]["requestsPerSecond"], 20.0);
    assert_eq!(
        c.http
            .delete(format!("{}/_sim/behaviours", c.base))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        c.sim_json("behaviours").await,
        json!({"images": {}, "revisions": {}})
    );
}

/// The `simulate` binary as the docs run it: a seed tree with `.simulator.yaml` beside it
/// (users on one app, an image that fails a fifth of its requests, a revision whose health
/// path fails), `--metrics-delay 0s` and `--ingress-listen`.
#[test]
fn simulate_serves_the_seeds_traffic_its_metrics_and_its_urls() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    // The seed is deterministic: the same tree gives the same revisions and images.
    let seeded = seed::from_desired(&example_state(), Config::default(), 0);
    let record = seeded
        .apps
        .values()
        .find(|r| r.app["name"] == APP && r.resource_group == PROD_RG)
        .unwrap();
    let serving = record.app["properties"]["latestRevisionName"]
        .as_str()
        .unwrap()
        .to_owned();
    let image = record.app["properties"]["template"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = record
        .revisions
        .iter()
        .rev()
        .nth(1)
        .map(|r| r.name.clone())
        .unwrap();

    let s = common::Scratch::new();
    let tree = s.path().join("seed");
    std::fs::create_dir_all(&tree).unwrap();
    common::copy_tree(&common::root().join("desired-state"), &tree);
    s.write(
        "seed/.simulator.yaml",
        &format!(
            "apps:\n  {APP}: {{requestsPerSecond: 200}}\nimages:\n  \"{image}\": {{errorRate: 0.2}}\nrevisions:\n  {other}: {{healthStatus: 503}}\n"
        ),
    );
    let mut child = common::bin(s.path())
        .args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "seed",
            "--metrics-delay",
            "0s",
            "--ingress-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let banner: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .take_while(|l| !l.starts_with("Serving"))
        .collect();
    let mut sim = common::Proc(child);
    let base = common::banner_base(&banner[0]);
    let mapping = format!("--ingress-endpoint {DOMAIN}=");
    let ingress = banner
        .iter()
        .find_map(|l| l.split_once(&mapping).map(|(_, url)| url.to_owned()))
        .unwrap_or_else(|| panic!("no ingress line for {DOMAIN}: {banner:?}"));
    assert_ne!(ingress, base, "the ingress has its own listener");

    let http = reqwest::blocking::Client::new();
    let token: Value = http
        .post(format!("{base}/_sim/token"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(2_500));

    // Metrics at Azure's URL: the image's revision fails a fifth of its requests.
    let app_id = record.app["id"].as_str().unwrap();
    let body: Value = http
        .get(format!(
            "{base}{app_id}/providers/Microsoft.Insights/metrics"
        ))
        .query(&[
            ("api-version", "2023-10-01"),
            ("metricnames", "Requests"),
            ("aggregation", "Total"),
            ("interval", "FULL"),
            (
                "$filter",
                &format!("revisionName eq '{serving}' and statusCodeCategory eq '*'"),
            ),
        ])
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let seen = by_revision_and_category(&body);
    let ok = seen
        .get(&(serving.clone(), "2xx".to_owned()))
        .copied()
        .unwrap_or(0.0);
    let failed = seen
        .get(&(serving.clone(), "5xx".to_owned()))
        .copied()
        .unwrap_or(0.0);
    assert!(ok + failed >= 300.0, "{body}");
    let share = failed / (ok + failed);
    assert!((share - 0.2).abs() <= 0.02, "5xx share {share}: {body}");

    // In real time, within one request of rate x time.
    let traffic: Value = http
        .get(format!("{base}/_sim/traffic"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let entry = traffic
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["app"] == APP && t["resourceGroup"] == PROD_RG)
        .unwrap();
    let since = time::parse(entry["since"].as_str().unwrap()).unwrap();
    let until = time::parse(entry["servedUntil"].as_str().unwrap()).unwrap();
    let served: f64 = entry["served"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|by_status| by_status.as_object().unwrap().values())
        .map(|n| n.as_f64().unwrap())
        .sum();
    let ideal = 200.0 * (until - since) as f64 / 1000.0;
    assert!(
        (served - ideal).abs() <= 1.0,
        "{served} vs {ideal}: {entry}"
    );

    // The revisions' own URLs on --ingress-listen, reached the way a client is told to.
    let endpoints = IngressEndpoints::new(&[(DOMAIN.to_owned(), ingress)]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let (status, text) = rt
        .block_on(endpoints.get(&client, &format!("https://{other}.{DOMAIN}/health")))
        .unwrap();
    assert_eq!(status, 503, "{text}");
    let (status, text) = rt
        .block_on(endpoints.get(&client, &format!("https://{serving}.{DOMAIN}/health")))
        .unwrap();
    assert_eq!(status, 200, "{text}");
    sim.stop();
    assert_eq!(sim.0.try_wait().unwrap().and_then(|s| s.code()), Some(0));
}

/// `--ingress-endpoint` is a common option: checked like `--arm-endpoint` (plain http only to
/// loopback), with a message that says what to write.
#[test]
fn ingress_endpoint_is_checked_on_every_command() {
    let root = common::root();
    let out = common::run(
        common::bin(&root).args([
            "--ingress-endpoint",
            "xshopaiprod.uksouth.azurecontainerapps.io=http://10.1.2.3:8081",
            "validate",
        ]),
        2,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain http to a non-loopback host"), "{err}");
    let out = common::run(
        common::bin(&root).args(["--ingress-endpoint", "http://127.0.0.1:8081", "validate"]),
        2,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DOMAIN=URL"), "{err}");
    common::run(
        common::bin(&root).args([
            "validate",
            "--ingress-endpoint",
            "xshopaiprod.uksouth.azurecontainerapps.io=http://127.0.0.1:8081",
        ]),
        0,
    );
}

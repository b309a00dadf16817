//! Fidelity: the simulator's responses have the shapes of Azure's own examples
//! (`tests/fixtures/azure-specs/`): every key an example shows is there, with the same JSON type,
//! recursively. The app is created from the CreateOrUpdate example's own request body, so the
//! comparison covers what the simulator computes (read-only fields, revisions, replicas,
//! operations, registry responses), not only what it stores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::path::PathBuf;

use aca_reconciler::simulator::store::{Config, LroMode, Registry, Repository, Tag, World};
use common::{ArmTestClient, start_sim};
use serde_json::{Value, json};

/// Azure's examples, vendored as test fixtures (their source and licence are noted there).
fn specs() -> PathBuf {
    common::root().join("tests/fixtures/azure-specs")
}

fn example(name: &str) -> Value {
    let text = std::fs::read_to_string(specs().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key of `expected` is in `actual` with the same JSON type, recursively. Arrays of the
/// same length compare item by item; otherwise the example's first item is compared with each
/// of ours. A null in the example says nothing of the type.
fn shape_diff(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Null, _) => {}
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                match a.get(k) {
                    None => out.push(format!("{path}.{k}: missing (example has {})", type_of(ev))),
                    Some(av) => shape_diff(ev, av, &format!("{path}.{k}"), out),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() == a.len() {
                for (i, (ei, ai)) in e.iter().zip(a).enumerate() {
                    shape_diff(ei, ai, &format!("{path}[{i}]"), out);
                }
            } else if let Some(first) = e.first() {
                if a.is_empty() {
                    out.push(format!("{path}: empty, the example has items"));
                }
                for (i, item) in a.iter().enumerate() {
                    shape_diff(first, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        (e, a) if type_of(e) != type_of(a) => out.push(format!(
            "{path}: {} where the example has {}",
            type_of(a),
            type_of(e)
        )),
        _ => {}
    }
}

/// Differences no faithful simulator can avoid, each with why.
fn excused(diff: &str) -> bool {
    // A scale rule is a union: exactly one of azureQueue, custom, http, tcp. Comparing the
    // example's rules with others of another kind reports the other branch as missing. (The
    // CreateOrUpdate example itself sends `httpscalingrule` as `custom` and shows it as `http`.)
    let union_branch = [
        ".http: missing",
        ".custom: missing",
        ".azureQueue: missing",
        ".tcp: missing",
    ];
    diff.contains("scale.rules[") && union_branch.iter().any(|b| diff.contains(b))
}

fn assert_shape(example_name: &str, expected: &Value, actual: &Value) {
    let mut diffs = Vec::new();
    shape_diff(expected, actual, "", &mut diffs);
    diffs.retain(|d| !excused(d));
    assert!(
        diffs.is_empty(),
        "{example_name}: the simulator differs from Azure's example:\n{}",
        diffs.join("\n")
    );
}

const SUB: &str = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345";

/// A simulator holding the app of Azure's CreateOrUpdate example, created through PUT.
async fn with_example_app(lro: LroMode) -> (common::Handle, ArmTestClient, String) {
    let mut world = World::new(Config {
        lro_mode: LroMode::Sync,
        revision_ready_ms: 0,
        ..Config::default()
    });
    let mut repo = Repository::default();
    for (i, name) in [
        "4.7.2-20180905-nanoserver-1803",
        "4.7.2-20180906-nanoserver-1803",
    ]
    .iter()
    .enumerate()
    {
        let digest = format!("sha256:{:064x}", i + 1);
        repo.manifests.insert(digest.clone());
        repo.tags.push(Tag {
            name: (*name).into(),
            digest,
            created: 1_536_000_000_000 + i as i64,
            last_update: 1_536_000_000_000 + i as i64,
            delete_enabled: true,
            write_enabled: true,
        });
    }
    world.registries.insert(
        "acrapi.azurecr.io".into(),
        Registry {
            repositories: [("nanoserver".to_owned(), repo)].into(),
        },
    );
    let h = start_sim(world).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(SUB, "rg", "testcontainerapp0");
    let mut envelope =
        example("ContainerApps_CreateOrUpdate.json")["parameters"]["containerAppEnvelope"].clone();
    // The example routes traffic to `testcontainerapp0-ab1234`, a revision that does not exist
    // (and could not: no `--`), which the simulator refuses as Azure would. Point it at the
    // revision this PUT creates; the shape stays the same.
    envelope["properties"]["template"]["revisionSuffix"] = json!("ab1234");
    envelope["properties"]["configuration"]["ingress"]["traffic"][0]["revisionName"] =
        json!("testcontainerapp0--ab1234");
    let r = c
        .http
        .put(ArmTestClient::v(&url))
        .bearer_auth(&c.token)
        .json(&envelope)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let created: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{created}");
    assert_shape(
        "ContainerApps_CreateOrUpdate 201",
        &example("ContainerApps_CreateOrUpdate.json")["responses"]["201"]["body"],
        &created,
    );
    h.sim.world().config.lro_mode = lro;
    (h, c, url)
}

#[tokio::test]
async fn container_app_get_and_lists_match_the_examples() {
    let (_h, c, url) = with_example_app(LroMode::Sync).await;
    let got = c.get_json(&url).await;
    assert_shape(
        "ContainerApps_Get",
        &example("ContainerApps_Get.json")["responses"]["200"]["body"],
        &got,
    );

    let by_rg = c
        .get_json(&format!(
            "{}/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.App/containerApps",
            c.base
        ))
        .await;
    assert_shape(
        "ContainerApps_ListByResourceGroup",
        &example("ContainerApps_ListByResourceGroup.json")["responses"]["200"]["body"],
        &by_rg,
    );
    let by_sub = c
        .get_json(&format!(
            "{}/subscriptions/{SUB}/providers/Microsoft.App/containerApps",
            c.base
        ))
        .await;
    assert_shape(
        "ContainerApps_ListBySubscription",
        &example("ContainerApps_ListBySubscription.json")["responses"]["200"]["body"],
        &by_sub,
    );
}

#[tokio::test]
async fn container_app_patch_matches_the_example_in_both_flows() {
    let patch_example = example("ContainerApps_Patch.json");
    let mut body = patch_example["parameters"]["containerAppEnvelope"].clone();
    // As above: the example's traffic names a revision that does not exist.
    body["properties"]["configuration"]["ingress"]["traffic"][0]["revisionName"] =
        json!("testcontainerapp0--ab1234");

    let (_h, c, url) = with_example_app(LroMode::Sync).await;
    let r = c.patch(&url, body.clone()).await;
    assert_eq!(r.status(), 200);
    assert_shape(
        "ContainerApps_Patch 200",
        &patch_example["responses"]["200"]["body"],
        &r.json().await.unwrap(),
    );

    let (_h, c, url) = with_example_app(LroMode::Async).await;
    body["properties"]["template"]["revisionSuffix"] = json!("async1");
    let r = c.patch(&url, body).await;
    assert_eq!(r.status(), 202);
    for header in patch_example["responses"]["202"]["headers"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(
            r.headers().contains_key(header.as_str()),
            "ContainerApps_Patch 202: missing header {header}"
        );
    }
}

#[tokio::test]
async fn revisions_and_replicas_match_the_examples() {
    let (_h, c, url) = with_example_app(LroMode::Sync).await;
    let list = c.get_json(&format!("{url}/revisions")).await;
    assert_shape(
        "Revisions_List",
        &example("Revisions_List.json")["responses"]["200"]["body"],
        &list,
    );
    let name = list["value"][0]["name"].as_str().unwrap().to_owned();
    let one = c.get_json(&format!("{url}/revisions/{name}")).await;
    assert_shape(
        "Revisions_Get",
        &example("Revisions_Get.json")["responses"]["200"]["body"],
        &one,
    );
    let replicas = c
        .get_json(&format!("{url}/revisions/{name}/replicas"))
        .await;
    assert_shape(
        "Replicas_List",
        &example("Replicas_List.json")["responses"]["200"]["body"],
        &replicas,
    );
    let replica_name = replicas["value"][0]["name"].as_str().unwrap().to_owned();
    let replica = c
        .get_json(&format!("{url}/revisions/{name}/replicas/{replica_name}"))
        .await;
    assert_shape(
        "Replicas_Get",
        &example("Replicas_Get.json")["responses"]["200"]["body"],
        &replica,
    );
    for (action, file) in [
        ("restart", "Revisions_Restart.json"),
        ("deactivate", "Revisions_Deactivate.json"),
        ("activate", "Revisions_Activate.json"),
    ] {
        let r = c.post(&format!("{url}/revisions/{name}/{action}")).await;
        let expected: u16 = example(file)["responses"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(r.status().as_u16(), expected, "{file}");
    }
}

#[tokio::test]
async fn registry_data_plane_matches_the_examples() {
    let (_h, c, _) = with_example_app(LroMode::Sync).await;
    let base = format!("{}/registries/acrapi.azurecr.io", c.base);
    let form = [
        ("grant_type", "access_token"),
        ("service", "acrapi.azurecr.io"),
        ("tenant", "t"),
        ("access_token", c.token.as_str()),
    ];
    let refresh: Value = c
        .http
        .post(format!("{base}/oauth2/exchange"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_shape(
        "PostRefreshToken",
        &example("acr/PostRefreshToken.json")["responses"]["200"]["body"],
        &refresh,
    );
    let form = [
        ("grant_type", "refresh_token"),
        ("service", "acrapi.azurecr.io"),
        ("scope", "repository:nanoserver:metadata_read,delete"),
        ("refresh_token", refresh["refresh_token"].as_str().unwrap()),
    ];
    let access: Value = c
        .http
        .post(format!("{base}/oauth2/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_shape(
        "PostAccessToken",
        &example("acr/PostAccessToken.json")["responses"]["200"]["body"],
        &access,
    );
    let token = access["access_token"].as_str().unwrap();

    let list: Value = c
        .http
        .get(format!("{base}/acr/v1/nanoserver/_tags"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_shape(
        "GetTagList",
        &example("acr/GetTagList.json")["responses"]["200"]["body"],
        &list,
    );
    let tag = "4.7.2-20180905-nanoserver-1803";
    let one: Value = c
        .http
        .get(format!("{base}/acr/v1/nanoserver/_tags/{tag}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_shape(
        "GetTagAttributes",
        &example("acr/GetTagAttributes.json")["responses"]["200"]["body"],
        &one,
    );
    let r = c
        .http
        .delete(format!("{base}/acr/v1/nanoserver/_tags/{tag}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(
        example("acr/DeleteTag.json")["responses"]
            .get(r.status().as_str())
            .is_some(),
        "DeleteTag: {}",
        r.status()
    );
    let digest = one["tag"]["digest"].as_str().unwrap();
    let r = c
        .http
        .delete(format!("{base}/v2/nanoserver/manifests/{digest}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(
        example("acr/DeleteManifest.json")["responses"]
            .get(r.status().as_str())
            .is_some(),
        "DeleteManifest: {}",
        r.status()
    );
}

/// One of the Azure Monitor examples this repository keeps (`tests/fixtures/azure-specs/monitor/`).
fn monitor_example(name: &str) -> Value {
    let path = common::root()
        .join("tests/fixtures/azure-specs/monitor")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn metrics_match_the_examples() {
    let (h, c, url) = with_example_app(LroMode::Sync).await;
    h.sim.world().config.metrics_delay_ms = 0;
    let r = c
        .http
        .post(format!("{}/_sim/traffic", c.base))
        .json(&json!({"subscription": SUB, "resourceGroup": "rg", "app": "testcontainerapp0", "requestsPerSecond": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let from = h.sim.clock.now() - 1_000;
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let to = h.sim.clock.now() + 2_000;
    let timespan = format!(
        "{}/{}",
        aca_reconciler::time::format_arm(from),
        aca_reconciler::time::format_arm(to)
    );
    let get = |params: Vec<(&'static str, &'static str)>| {
        let c = &c;
        let url = format!("{url}/providers/Microsoft.Insights/metrics");
        let timespan = timespan.clone();
        async move {
            let r = c
                .http
                .get(url)
                .query(&params)
                .query(&[("timespan", timespan), ("api-version", "2023-10-01".into())])
                .bearer_auth(&c.token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    // Data split by a dimension, two metrics, three aggregations (GetMetric: FULL here, so
    // that every point has data).
    let body = get(vec![
        ("metricnames", "Requests,Replicas"),
        ("aggregation", "average,minimum,maximum"),
        ("interval", "FULL"),
        ("$filter", "revisionName eq '*'"),
        ("top", "5"),
        ("orderby", "average asc"),
        ("metricnamespace", "Microsoft.App/containerApps"),
    ])
    .await;
    assert_shape(
        "GetMetric",
        &monitor_example("GetMetric.json")["responses"]["200"]["body"],
        &body,
    );
    // A metric that cannot be read beside one that can.
    let body = get(vec![
        ("metricnames", "Nonexistent,Requests"),
        ("aggregation", "average"),
        ("interval", "FULL"),
        ("AutoAdjustTimegrain", "true"),
        ("ValidateDimensions", "false"),
    ])
    .await;
    assert_shape(
        "GetMetricError",
        &monitor_example("GetMetricError.json")["responses"]["200"]["body"],
        &body,
    );
    // Dimension values only.
    let body = get(vec![
        ("metricnames", "Requests"),
        ("$filter", "revisionName eq '*'"),
        ("resultType", "metadata"),
    ])
    .await;
    let expected = &monitor_example("GetMetricMetadata.json")["responses"]["200"]["body"];
    assert_shape("GetMetricMetadata", expected, &body);
    assert!(
        body["value"][0]["timeseries"][0].get("data").is_none(),
        "metadata has no data: {body}"
    );
}

#[test]
fn the_shape_check_itself_catches_differences() {
    let mut d = Vec::new();
    shape_diff(
        &json!({"a": 1, "b": {"c": "x"}, "l": [{"k": true}]}),
        &json!({"a": "1", "b": {}, "l": [{"k": 1}]}),
        "",
        &mut d,
    );
    assert_eq!(
        d,
        [
            ".a: string where the example has number",
            ".b.c: missing (example has string)",
            ".l[0].k: number where the example has boolean"
        ]
    );
}

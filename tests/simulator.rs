//! The simulator over real HTTP on loopback: every endpoint and behaviour, error paths included.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::time::Duration;

use aca_reconciler::simulator::seed;
use aca_reconciler::simulator::store::{Config, LroMode, World};
use common::{ArmTestClient, PROD_RG, PROD_SUB, example_state, start_sim};
use serde_json::{Value, json};

fn world(config: Config) -> World {
    seed::from_desired(
        &example_state(),
        config,
        aca_reconciler::time::Clock::new().now(),
    )
}

fn fast(lro_mode: LroMode) -> Config {
    Config {
        lro_mode,
        lro_ms: 150,
        revision_ready_ms: 150,
        ..Config::default()
    }
}

async fn revisions(c: &ArmTestClient, app_url: &str) -> Vec<Value> {
    c.get_json(&format!("{app_url}/revisions")).await["value"]
        .as_array()
        .unwrap()
        .clone()
}

// ---- Authentication and api-version ---------------------------------------------------------

#[tokio::test]
async fn arm_refuses_missing_forged_and_wrong_audience_tokens() {
    let h = start_sim(world(Config::default())).await;
    let c = ArmTestClient::new(&h);
    let url = ArmTestClient::v(&c.app_url(PROD_SUB, PROD_RG, "ca-user-service"));

    let r = c.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer authorization_uri=")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "AuthenticationFailed");

    let r = c
        .http
        .get(&url)
        .bearer_auth("eyJ0eXAi.forged.sig")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "InvalidAuthenticationToken"
    );

    let vault = h.sim.issue_token("https://vault.azure.net");
    let r = c.http.get(&url).bearer_auth(vault).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "InvalidAuthenticationTokenAudience"
    );

    // A token for the simulator's own URL is an ARM token too (what `--arm-endpoint` asks for).
    let own = h.sim.issue_token(&format!("{}/", h.base_url));
    assert_eq!(
        c.http
            .get(&url)
            .bearer_auth(own)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn managed_identity_endpoint_speaks_the_container_apps_protocol() {
    let h = start_sim(world(Config::default())).await;
    let http = reqwest::Client::new();
    let msi = format!(
        "{}/msi/token?resource=https://management.azure.com/&api-version=2019-08-01",
        h.base_url
    );

    assert_eq!(http.get(&msi).send().await.unwrap().status(), 401);
    let r = http
        .get(&msi)
        .header("X-IDENTITY-HEADER", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let bad_version = msi.replace("2019-08-01", "2018-02-01");
    let r = http
        .get(&bad_version)
        .header("X-IDENTITY-HEADER", "test-identity-header")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let body: Value = http
        .get(&msi)
        .header("X-IDENTITY-HEADER", "test-identity-header")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://management.azure.com/");
    let expires_on = body["expires_on"].as_str().expect("expires_on is a string");
    assert!(expires_on.parse::<i64>().unwrap() > 1_700_000_000);
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped");

    let url = ArmTestClient::v(&format!(
        "{}/subscriptions/{PROD_SUB}/providers/Microsoft.App/containerApps",
        h.base_url
    ));
    assert_eq!(
        http.get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn entra_client_credentials_token_works_on_arm() {
    let h = start_sim(world(Config::default())).await;
    let http = reqwest::Client::new();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "x"),
        ("client_secret", "y"),
        ("scope", "https://management.azure.com/.default"),
    ];
    let body: Value = http
        .post(format!("{}/tenant-1/oauth2/v2.0/token", h.base_url))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap();
    let url = ArmTestClient::v(&format!(
        "{}/subscriptions/{PROD_SUB}/providers/Microsoft.App/containerApps",
        h.base_url
    ));
    assert_eq!(
        http.get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http
        .post(format!("{}/t/oauth2/v2.0/token", h.base_url))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn api_version_is_required_and_checked() {
    let h = start_sim(world(Config::default())).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-user-service");
    let r = c.http.get(&url).bearer_auth(&c.token).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "MissingApiVersionParameter"
    );
    let r = c
        .http
        .get(format!("{url}?api-version=2019-01-01"))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "NoRegisteredProviderFound"
    );
    let r = c
        .http
        .get(format!("{url}?api-version=2025-07-01"))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// ---- Reads ----------------------------------------------------------------------------------

#[tokio::test]
async fn lists_page_with_next_link_and_return_every_app_once() {
    let config = Config {
        page_size: 2,
        ..Config::default()
    };
    let h = start_sim(world(config)).await;
    let c = ArmTestClient::new(&h);
    let mut url = format!(
        "{}/subscriptions/{PROD_SUB}/resourceGroups/{PROD_RG}/providers/Microsoft.App/containerApps",
        c.base
    );
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let r = c
            .http
            .get(if pages == 0 {
                ArmTestClient::v(&url)
            } else {
                url.clone()
            })
            .bearer_auth(&c.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        pages += 1;
        names.extend(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap().to_owned()),
        );
        match page["nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => {
                assert!(page["nextLink"].is_null());
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        names,
        [
            "ca-auth-service",
            "ca-cart-service",
            "ca-order-service",
            "ca-user-service",
            "ca-web-bff"
        ]
    );

    let all = c
        .get_json(&format!(
            "{}/subscriptions/{PROD_SUB}/providers/Microsoft.App/containerApps",
            c.base
        ))
        .await;
    assert_eq!(
        all["value"].as_array().unwrap().len(),
        2,
        "page size 2 holds for the subscription list too"
    );
}

#[tokio::test]
async fn a_missing_app_is_404_with_the_arm_envelope() {
    let h = start_sim(world(Config::default())).await;
    let c = ArmTestClient::new(&h);
    let r = c.get(&c.app_url(PROD_SUB, PROD_RG, "ca-nope")).await;
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-ms-request-id"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ResourceNotFound");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ca-nope")
    );
    let r = c
        .get(&format!(
            "{}/revisions/ca-user-service--nope",
            c.app_url(PROD_SUB, PROD_RG, "ca-user-service")
        ))
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn subscriptions_provider_and_resource_group_reads_for_the_az_cli() {
    let h = start_sim(world(Config::default())).await;
    let c = ArmTestClient::new(&h);
    let subs = c.get_json(&format!("{}/subscriptions", c.base)).await;
    let ids: Vec<&str> = subs["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscriptionId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&PROD_SUB));
    assert_eq!(subs["value"][0]["state"], "Enabled");
    let provider = c
        .get_json(&format!(
            "{}/subscriptions/{PROD_SUB}/providers/Microsoft.App",
            c.base
        ))
        .await;
    assert_eq!(provider["registrationState"], "Registered");
    let rg = c
        .get_json(&format!(
            "{}/subscriptions/{PROD_SUB}/resourceGroups/{PROD_RG}",
            c.base
        ))
        .await;
    assert_eq!(rg["name"], PROD_RG);
}

// ---- Writes ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_synchronous_patch_merges_keeps_arm_types_and_mints_one_revision() {
    let h = start_sim(world(fast(LroMode::Sync))).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-user-service");
    let before = c.get_json(&url).await;
    let revs_before = revisions(&c, &url).await.len();

    let r = c.patch(&url, json!({"properties": {"template": {"scale": {"minReplicas": "3", "maxReplicas": 10}, "revisionSuffix": "scale3"}}})).await;
    assert_eq!(r.status(), 200);
    let after: Value = r.json().await.unwrap();
    assert_eq!(
        after["properties"]["template"]["scale"]["minReplicas"],
        json!(3),
        "string coerced to integer"
    );
    assert_eq!(
        after["properties"]["latestRevisionName"],
        "ca-user-service--scale3"
    );
    // Unowned fields survive byte for byte.
    for pointer in [
        "/properties/template/containers",
        "/properties/template/scale/rules",
        "/properties/configuration/ingress/ipSecurityRestrictions",
        "/properties/configuration/dapr",
        "/tags",
        "/identity",
    ] {
        assert_eq!(after.pointer(pointer), before.pointer(pointer), "{pointer}");
    }
    assert_eq!(revisions(&c, &url).await.len(), revs_before + 1);

    // A configuration-only change creates no revision.
    let r = c
        .patch(
            &url,
            json!({"properties": {"configuration": {"maxInactiveRevisions": "50"}}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["properties"]["configuration"]["maxInactiveRevisions"],
        json!(50)
    );
    assert_eq!(revisions(&c, &url).await.len(), revs_before + 1);

    // A reused suffix is refused with ARM's message.
    let r = c.patch(&url, json!({"properties": {"template": {"scale": {"minReplicas": 4}, "revisionSuffix": "scale3"}}})).await;
    let r = if r.status() == 200 {
        c.patch(&url, json!({"properties": {"template": {"scale": {"minReplicas": 5}, "revisionSuffix": "scale3"}}})).await
    } else {
        r
    };
    assert_eq!(
        r.status(),
        200,
        "the stored suffix is unchanged, so a new one is generated"
    );
    let r = c.patch(&url, json!({"properties": {"template": {"scale": {"minReplicas": 6}, "revisionSuffix": "v118"}}})).await;
    assert_eq!(r.status(), 400);
    let msg = r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.contains("revision with suffix already exists"), "{msg}");

    // Invalid: min above max, and a suffix that starts with a digit.
    let r = c
        .patch(
            &url,
            json!({"properties": {"template": {"scale": {"minReplicas": 20, "maxReplicas": 10}}}}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = c
        .patch(
            &url,
            json!({"properties": {"template": {"revisionSuffix": "1abc"}}}),
        )
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "ContainerAppInvalidRevisionName"
    );
    // Malformed JSON.
    let r = c
        .http
        .patch(ArmTestClient::v(&url))
        .bearer_auth(&c.token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "InvalidRequestContent"
    );
}

#[tokio::test]
async fn an_asynchronous_patch_is_a_long_running_operation_with_a_write_lock() {
    let h = start_sim(world(fast(LroMode::Async))).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-cart-service");
    let r = c
        .patch(
            &url,
            json!({"properties": {"template": {"scale": {"minReplicas": 2, "maxReplicas": 10}}}}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let status_url = r.headers()["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_owned();
    let result_url = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(
        status_url
            .contains("/providers/Microsoft.App/locations/uksouth/containerappOperationStatuses/")
    );

    // While it runs: InProgress everywhere, and a second write is refused.
    let app = c.get_json(&url).await;
    assert_eq!(app["properties"]["provisioningState"], "InProgress");
    let conflict = c
        .patch(
            &url,
            json!({"properties": {"configuration": {"maxInactiveRevisions": 5}}}),
        )
        .await;
    assert_eq!(conflict.status(), 409);
    assert_eq!(
        conflict.json::<Value>().await.unwrap()["error"]["code"],
        "ContainerAppOperationInProgress"
    );
    let poll = c
        .http
        .get(&status_url)
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 200);
    assert!(poll.headers().contains_key("retry-after"));
    assert_eq!(poll.json::<Value>().await.unwrap()["status"], "InProgress");
    assert_eq!(
        c.http
            .get(&result_url)
            .bearer_auth(&c.token)
            .send()
            .await
            .unwrap()
            .status(),
        202
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    let done: Value = c
        .http
        .get(&status_url)
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "Succeeded");
    assert!(done["endTime"].is_string());
    let result = c
        .http
        .get(&result_url)
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(result.status(), 200);
    assert_eq!(
        result.json::<Value>().await.unwrap()["properties"]["provisioningState"],
        "Succeeded"
    );
}

#[tokio::test]
async fn location_only_mode_sends_no_async_operation_header() {
    let h = start_sim(world(fast(LroMode::LocationOnly))).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-cart-service");
    let r = c
        .patch(
            &url,
            json!({"properties": {"configuration": {"maxInactiveRevisions": 7}}}),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert!(!r.headers().contains_key("azure-asyncoperation"));
    assert!(r.headers().contains_key("location"));
}

#[tokio::test]
async fn traffic_must_sum_to_100_and_name_existing_revisions() {
    let h = start_sim(world(fast(LroMode::Sync))).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-user-service");
    let traffic = |t: Value| json!({"properties": {"configuration": {"ingress": {"traffic": t}}}});
    let cases = [
        json!([{"revisionName": "ca-user-service--v119", "weight": 60}]),
        json!([{"revisionName": "ca-user-service--nope", "weight": 100}]),
        json!([{"latestRevision": true, "weight": 50}, {"latestRevision": true, "weight": 50}]),
        json!([{"revisionName": "ca-user-service--v119", "weight": 101}, {"latestRevision": true, "weight": -1}]),
        json!([{"weight": 100}]),
    ];
    for t in cases {
        let r = c.patch(&url, traffic(t.clone())).await;
        assert_eq!(r.status(), 400, "{t}");
        assert!(r.json::<Value>().await.unwrap()["error"]["code"].is_string());
    }
    // Weights sent as strings are stored as integers.
    let r = c.patch(&url, traffic(json!([{"revisionName": "ca-user-service--v119", "weight": "80"}, {"revisionName": "ca-user-service--v118", "weight": "20", "label": "canary"}]))).await;
    assert_eq!(r.status(), 200);
    let app: Value = r.json().await.unwrap();
    assert_eq!(
        app["properties"]["configuration"]["ingress"]["traffic"][0]["weight"],
        json!(80)
    );
    let revs = revisions(&c, &url).await;
    let weight = |n: &str| {
        revs.iter().find(|r| r["name"] == n).unwrap()["properties"]["trafficWeight"].clone()
    };
    assert_eq!(weight("ca-user-service--v119"), json!(80));
    assert_eq!(weight("ca-user-service--v118"), json!(20));
}

#[tokio::test]
async fn secrets_need_values_and_get_never_returns_them() {
    let h = start_sim(world(fast(LroMode::Sync))).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-user-service");
    let r = c
        .patch(
            &url,
            json!({"properties": {"configuration": {"secrets": [{"name": "jwt-secret"}]}}}),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "ContainerAppSecretInvalid"
    );
    let r = c.patch(&url, json!({"properties": {"configuration": {"secrets": [{"name": "jwt-secret", "value": "rotated-42"}]}}})).await;
    assert_eq!(r.status(), 200);
    let app = c.get_json(&url).await;
    assert!(!app.to_string().contains("rotated-42"));
    let listed: Value = c
        .post(&format!("{url}/listSecrets"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["value"][0],
        json!({"name": "jwt-secret", "value": "rotated-42"})
    );
}

#[tokio::test]
async fn put_replaces_an_app_and_creates_a_new_one() {
    let h = start_sim(world(fast(LroMode::Sync))).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-user-service");
    let mut app = c.get_json(&url).await;
    app["properties"]["configuration"]["secrets"] =
        json!([{"name": "jwt-secret", "value": "a"}, {"name": "db-connection", "value": "b"}]);
    app["properties"]["template"]["scale"]["maxReplicas"] = json!(12);
    let r = c
        .http
        .put(ArmTestClient::v(&url))
        .bearer_auth(&c.token)
        .json(&app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["properties"]["template"]["scale"]["maxReplicas"],
        json!(12)
    );

    let new_url = c.app_url(PROD_SUB, PROD_RG, "ca-new-service");
    let body = json!({"location": "UK South", "properties": {"configuration": {"activeRevisionsMode": "multiple"}, "template": {"containers": [{"name": "new", "image": "mcr.microsoft.com/k8se/quickstart:latest"}]}}});
    let r = c
        .http
        .put(ArmTestClient::v(&new_url))
        .bearer_auth(&c.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(
        created["properties"]["configuration"]["activeRevisionsMode"], "Multiple",
        "mode stored in the spec's casing"
    );
    assert!(
        created["properties"]["latestRevisionName"]
            .as_str()
            .unwrap()
            .starts_with("ca-new-service--")
    );
}

// ---- Revisions ------------------------------------------------------------------------------

#[tokio::test]
async fn a_new_revision_becomes_ready_after_a_delay_and_latest_traffic_follows_it() {
    let h = start_sim(world(fast(LroMode::Sync))).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-user-service");
    let r = c.patch(&url, json!({"properties": {
        "configuration": {"ingress": {"traffic": [{"latestRevision": true, "weight": 100}]}},
        "template": {"containers": [{"name": "user-service", "image": "crxshopaiprod.azurecr.io/user-service:v1.2.0"}], "revisionSuffix": "v120"}
    }})).await;
    assert_eq!(r.status(), 200);
    let new = format!("{url}/revisions/ca-user-service--v120");
    let rev = c.get_json(&new).await;
    assert_eq!(rev["properties"]["runningState"], "Processing");
    assert_eq!(
        rev["properties"]["trafficWeight"],
        json!(0),
        "latestRevision waits for the new revision to be ready"
    );
    assert_eq!(
        c.get_json(&url).await["properties"]["latestReadyRevisionName"],
        "ca-user-service--v119"
    );

    tokio::time::sleep(Duration::from_millis(250)).await;
    let rev = c.get_json(&new).await;
    assert_eq!(rev["properties"]["runningState"], "Running");
    assert_eq!(rev["properties"]["healthState"], "Healthy");
    assert_eq!(rev["properties"]["provisioningState"], "Provisioned");
    assert_eq!(rev["properties"]["trafficWeight"], json!(100));
    assert!(rev["properties"]["replicas"].as_u64().unwrap() >= 1);
    let replicas = c.get_json(&format!("{new}/replicas")).await;
    assert_eq!(
        replicas["value"].as_array().unwrap().len() as u64,
        rev["properties"]["replicas"].as_u64().unwrap()
    );
    assert_eq!(
        c.sim_json("outages").await,
        json!([]),
        "no traffic ever went to a revision that was not running"
    );
}

#[tokio::test]
async fn an_image_the_registry_lacks_gives_a_failed_unhealthy_revision() {
    let h = start_sim(world(fast(LroMode::Sync))).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-user-service");
    let r = c.patch(&url, json!({"properties": {"template": {"containers": [{"name": "user-service", "image": "crxshopaiprod.azurecr.io/user-service:v9.9.9"}], "revisionSuffix": "broken"}}})).await;
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let rev = c
        .get_json(&format!("{url}/revisions/ca-user-service--broken"))
        .await;
    assert_eq!(rev["properties"]["runningState"], "Failed");
    assert_eq!(rev["properties"]["healthState"], "Unhealthy");
    assert!(rev["properties"]["provisioningError"].is_string());
    let app = c.get_json(&url).await;
    assert_eq!(
        app["properties"]["latestRevisionName"],
        "ca-user-service--broken"
    );
    assert_ne!(
        app["properties"]["latestReadyRevisionName"],
        "ca-user-service--broken"
    );
}

#[tokio::test]
async fn single_mode_moves_traffic_to_the_new_revision_once_ready_and_deactivates_the_old() {
    let h = start_sim(world(fast(LroMode::Sync))).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-web-bff");
    let r = c.patch(&url, json!({"properties": {"configuration": {"activeRevisionsMode": "Single", "ingress": {"traffic": [{"latestRevision": true, "weight": 100}]}}}})).await;
    assert_eq!(r.status(), 200);
    let r = c.patch(&url, json!({"properties": {"template": {"scale": {"minReplicas": 2}, "revisionSuffix": "single2"}}})).await;
    assert_eq!(r.status(), 200);
    let before = revisions(&c, &url).await;
    assert!(
        before
            .iter()
            .filter(|r| r["properties"]["active"] == true)
            .count()
            >= 2,
        "old stays active until the new is ready"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let after = revisions(&c, &url).await;
    let active: Vec<&str> = after
        .iter()
        .filter(|r| r["properties"]["active"] == true)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(active, ["ca-web-bff--single2"]);
    assert_eq!(c.sim_json("outages").await, json!([]));
}

#[tokio::test]
async fn a_failed_write_in_single_mode_leaves_the_serving_revision_active() {
    // Found by the chaos soak: the revision of a write whose operation later failed became
    // ready first, deactivated the serving revision (Single mode), and was then removed with
    // the rollback, leaving no revision to serve.
    let h = start_sim(world(Config {
        lro_mode: LroMode::Async,
        lro_ms: 300,
        revision_ready_ms: 50,
        ..Config::default()
    }))
    .await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-web-bff");
    let r = c.patch(&url, json!({"properties": {"configuration": {"activeRevisionsMode": "Single", "ingress": {"traffic": [{"latestRevision": true, "weight": 100}]}}}})).await;
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let serving = c.get_json(&url).await["properties"]["latestReadyRevisionName"]
        .as_str()
        .unwrap()
        .to_owned();
    c.inject("operationFails", PROD_SUB, PROD_RG, "ca-web-bff")
        .await;
    let r = c.patch(&url, json!({"properties": {"template": {"scale": {"minReplicas": 2}, "revisionSuffix": "doomed"}}})).await;
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let app = c.get_json(&url).await;
    assert_eq!(app["properties"]["provisioningState"], "Failed");
    assert_eq!(
        app["properties"]["latestReadyRevisionName"],
        serving.as_str()
    );
    let active: Vec<String> = revisions(&c, &url)
        .await
        .iter()
        .filter(|r| r["properties"]["active"] == true)
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(active, [serving]);
    assert_eq!(c.sim_json("outages").await, json!([]));
}

#[tokio::test]
async fn activate_deactivate_restart_and_the_outage_log() {
    let h = start_sim(world(fast(LroMode::Sync))).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-user-service");
    let revs = revisions(&c, &url).await;
    let oldest = revs[0]["name"].as_str().unwrap().to_owned();
    assert_eq!(revs[0]["properties"]["active"], false);

    assert_eq!(
        c.post(&format!("{url}/revisions/{oldest}/restart"))
            .await
            .status(),
        400,
        "an inactive revision cannot restart"
    );
    assert_eq!(
        c.post(&format!("{url}/revisions/{oldest}/activate"))
            .await
            .status(),
        200
    );
    let rev = c.get_json(&format!("{url}/revisions/{oldest}")).await;
    assert_eq!(
        (
            rev["properties"]["active"].clone(),
            rev["properties"]["runningState"].clone()
        ),
        (json!(true), json!("Processing"))
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        c.get_json(&format!("{url}/revisions/{oldest}")).await["properties"]["runningState"],
        "Running"
    );
    assert_eq!(
        c.post(&format!("{url}/revisions/{oldest}/restart"))
            .await
            .status(),
        200
    );
    let restarts = c.sim_json("restarts").await;
    assert_eq!(restarts.as_array().unwrap().len(), 1);
    assert_eq!(restarts[0]["revision"], oldest.as_str());
    assert_eq!(
        c.post(&format!("{url}/revisions/{oldest}/deactivate"))
            .await
            .status(),
        200
    );
    assert_eq!(
        c.sim_json("outages").await,
        json!([]),
        "it carried no traffic"
    );

    // Azure lets a client deactivate the revision that carries all traffic; so does the
    // simulator, and it records the outage.
    let serving = c.get_json(&url).await["properties"]["configuration"]["ingress"]["traffic"][0]["revisionName"].as_str().unwrap().to_owned();
    assert_eq!(
        c.post(&format!("{url}/revisions/{serving}/deactivate"))
            .await
            .status(),
        200
    );
    let outages = c.sim_json("outages").await;
    assert_eq!(outages.as_array().unwrap().len(), 1);
    assert_eq!(outages[0]["revision"], serving.as_str());
    assert_eq!(outages[0]["reason"], "traffic to an inactive revision");
    // Weight on a revision that is not running is an outage too.
    let r = c.patch(&url, json!({"properties": {"configuration": {"ingress": {"traffic": [{"revisionName": oldest, "weight": 100}]}}}})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(c.sim_json("outages").await.as_array().unwrap().len(), 2);
}

// ---- Faults and throttling ------------------------------------------------------------------

#[tokio::test]
async fn fault_rules_inject_throttling_errors_lock_conflicts_drops_and_latency() {
    let h = start_sim(world(fast(LroMode::Sync))).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-user-service");
    let add = |rule: Value| {
        let http = c.http.clone();
        let base = c.base.clone();
        async move {
            assert_eq!(
                http.post(format!("{base}/_sim/faults"))
                    .json(&rule)
                    .send()
                    .await
                    .unwrap()
                    .status(),
                201
            )
        }
    };
    add(json!({"operation": "ContainerApps_Get", "fault": {"kind": "throttle", "retryAfter": 7}, "count": 1})).await;
    let r = c.get(&url).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(
        c.get(&url).await.status(),
        200,
        "count 1: the next request passes"
    );

    add(json!({"path": "/subscriptions/*/resourceGroups/*/providers/Microsoft.App/containerApps/*", "method": "GET", "fault": {"kind": "status", "status": 503}, "count": 2})).await;
    assert_eq!(c.get(&url).await.status(), 503);
    assert_eq!(c.get(&url).await.status(), 503);
    assert_eq!(c.get(&url).await.status(), 200);

    add(
        json!({"operation": "ContainerApps_Update", "fault": {"kind": "lockConflict"}, "count": 1}),
    )
    .await;
    let r = c.patch(&url, json!({"properties": {}})).await;
    assert_eq!(r.status(), 409);

    add(json!({"operation": "ContainerApps_Get", "fault": {"kind": "drop"}, "count": 1})).await;
    let sent = c
        .http
        .get(ArmTestClient::v(&url))
        .bearer_auth(&c.token)
        .send()
        .await;
    let dropped = match sent {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(
        dropped,
        "the connection breaks before a whole response arrives"
    );

    add(json!({"operation": "ContainerApps_Get", "fault": {"kind": "latency", "ms": 300}, "count": 1})).await;
    let started = std::time::Instant::now();
    assert_eq!(c.get(&url).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    add(json!({"operation": "ContainerApps_Get", "fault": {"kind": "status", "status": 500}, "probability": 0.5})).await;
    let mut failures = 0;
    for _ in 0..200 {
        if c.get(&url).await.status() == 500 {
            failures += 1;
        }
    }
    assert!(
        (60..140).contains(&failures),
        "about half of 200 fail: {failures}"
    );
    assert_eq!(
        c.http
            .delete(format!("{}/_sim/faults", c.base))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(c.get(&url).await.status(), 200);

    let bad = c
        .http
        .post(format!("{}/_sim/faults", c.base))
        .json(&json!({"fault": {"kind": "explode"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn arm_buckets_throttle_per_subscription_with_retry_after() {
    let mut config = fast(LroMode::Sync);
    config.throttling.read_burst = 5.0;
    config.throttling.read_per_second = 1.0;
    let h = start_sim(world(config)).await;
    let c = ArmTestClient::new(&h);
    let url = c.app_url(PROD_SUB, PROD_RG, "ca-user-service");
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let r = c.get(&url).await;
        assert_eq!(r.status(), 200);
        remaining.push(
            r.headers()["x-ms-ratelimit-remaining-subscription-reads"]
                .to_str()
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let r = c.get(&url).await;
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "SubscriptionRequestsThrottled"
    );
    // Another subscription has its own bucket; writes have theirs.
    let dev = c.app_url(
        "2b7d9e14-5c3a-4f8b-a6d1-0e9f8c7b6a54",
        "rg-xshopai-dev",
        "ca-user-service",
    );
    assert_eq!(c.get(&dev).await.status(), 200);
    assert_eq!(c.patch(&url, json!({"properties": {}})).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(c.get(&url).await.status(), 200, "refilled at 1 per second");
}

// ---- ACR data plane -------------------------------------------------------------------------

async fn acr_token(c: &ArmTestClient, registry: &str, scope: &str) -> String {
    let base = format!("{}/registries/{registry}", c.base);
    let refresh: Value = c
        .http
        .post(format!("{base}/oauth2/exchange"))
        .form(&[
            ("grant_type", "access_token"),
            ("service", registry),
            ("tenant", "t"),
            ("access_token", c.token.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = refresh["refresh_token"].as_str().unwrap().to_owned();
    let access: Value = c
        .http
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("service", registry),
            ("scope", scope),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    access["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn acr_lists_tags_newest_first_across_link_pages() {
    let h = start_sim(world(Config::default())).await;
    let c = ArmTestClient::new(&h);
    let reg = "crxshopaidev.azurecr.io";
    let token = acr_token(&c, reg, "repository:user-service:metadata_read").await;
    let base = format!("{}/registries/{reg}", c.base);
    let mut url = format!("{base}/acr/v1/user-service/_tags?orderby=timedesc&n=7");
    let mut tags: Vec<(String, String)> = Vec::new();
    let mut pages = 0;
    loop {
        let r = c.http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let link = r
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["registry"], reg);
        assert_eq!(body["imageName"], "user-service");
        for t in body["tags"].as_array().unwrap() {
            assert!(t["changeableAttributes"]["deleteEnabled"].is_boolean());
            tags.push((
                t["name"].as_str().unwrap().to_owned(),
                t["lastUpdateTime"].as_str().unwrap().to_owned(),
            ));
        }
        pages += 1;
        match link {
            // Followed verbatim, resolved against the request URL (N§1.3).
            Some(l) => {
                let target = l.trim_start_matches('<').split('>').next().unwrap();
                assert!(l.ends_with("rel=\"next\""));
                url = reqwest::Url::parse(&url)
                    .unwrap()
                    .join(target)
                    .unwrap()
                    .to_string();
            }
            None => break,
        }
    }
    assert!(pages >= 3, "{pages} pages");
    let mut sorted = tags.clone();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    assert_eq!(tags, sorted, "newest first by lastUpdateTime");
    let mut names: Vec<&String> = tags.iter().map(|t| &t.0).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), tags.len(), "no tag twice");
}

#[tokio::test]
async fn acr_untag_delete_manifest_locks_and_scopes() {
    let h = start_sim(world(Config::default())).await;
    let c = ArmTestClient::new(&h);
    let reg = "crxshopaidev.azurecr.io";
    let base = format!("{}/registries/{reg}", c.base);
    let read = acr_token(&c, reg, "repository:auth-service:metadata_read").await;

    // Without the delete scope: 401 with a challenge naming the scope needed.
    let r = c
        .http
        .delete(format!("{base}/acr/v1/auth-service/_tags/build-1001"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("scope=\"repository:auth-service:delete\""),
        "{challenge}"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["errors"][0]["code"],
        "UNAUTHORIZED"
    );

    let del = acr_token(&c, reg, "repository:auth-service:metadata_read,delete").await;
    let tags_url = format!("{base}/acr/v1/auth-service/_tags?n=1000");
    let all: Value = c
        .http
        .get(&tags_url)
        .bearer_auth(&del)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tags = all["tags"].as_array().unwrap().clone();
    let locked = tags
        .iter()
        .find(|t| t["changeableAttributes"]["deleteEnabled"] == false)
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let victim = tags
        .iter()
        .find(|t| t["changeableAttributes"]["deleteEnabled"] == true)
        .unwrap()
        .clone();
    let victim_name = victim["name"].as_str().unwrap();

    let r = c
        .http
        .delete(format!("{base}/acr/v1/auth-service/_tags/{victim_name}"))
        .bearer_auth(&del)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .http
        .delete(format!("{base}/acr/v1/auth-service/_tags/{victim_name}"))
        .bearer_auth(&del)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["errors"][0]["code"],
        "TAG_UNKNOWN"
    );
    let r = c
        .http
        .delete(format!("{base}/acr/v1/auth-service/_tags/{locked}"))
        .bearer_auth(&del)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // The untagged manifest is still there; deleting it by digest works once.
    let digest = victim["digest"].as_str().unwrap();
    let r = c
        .http
        .delete(format!("{base}/v2/auth-service/manifests/{digest}"))
        .bearer_auth(&del)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .http
        .delete(format!("{base}/v2/auth-service/manifests/{digest}"))
        .bearer_auth(&del)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A manifest with a locked tag cannot go.
    let locked_digest = tags.iter().find(|t| t["name"] == locked.as_str()).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .http
        .delete(format!("{base}/v2/auth-service/manifests/{locked_digest}"))
        .bearer_auth(&del)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    let after: Value = c
        .http
        .get(&tags_url)
        .bearer_auth(&del)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after["tags"].as_array().unwrap().len(), tags.len() - 1);
    let r = c
        .http
        .get(format!("{base}/acr/v1/nope/_tags"))
        .bearer_auth(&del)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "a token for auth-service does not open another repository"
    );
}

#[tokio::test]
async fn acr_exchange_refuses_tokens_it_did_not_issue() {
    let h = start_sim(world(Config::default())).await;
    let c = ArmTestClient::new(&h);
    let reg = "crxshopaidev.azurecr.io";
    let r = c
        .http
        .post(format!("{}/registries/{reg}/oauth2/exchange", c.base))
        .form(&[
            ("grant_type", "access_token"),
            ("service", reg),
            ("access_token", "eyJ.forged.x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .http
        .get(format!(
            "{}/registries/cr.unknown.io/acr/v1/x/_tags",
            c.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

// ---- /_sim/ ---------------------------------------------------------------------------------

#[tokio::test]
async fn state_dump_round_trips_and_injections_fail_what_they_say() {
    let h = start_sim(world(fast(LroMode::Async))).await;
    let c = ArmTestClient::new(&h);
    let dump = c.sim_json("state").await;
    assert_eq!(dump["apps"].as_array().unwrap().len(), 10);
    let h2 = start_sim(World::default()).await;
    let c2 = ArmTestClient::new(&h2);
    assert_eq!(
        c2.http
            .put(format!("{}/_sim/state", c2.base))
            .json(&dump)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let a = c
        .get_json(&c.app_url(PROD_SUB, PROD_RG, "ca-user-service"))
        .await;
    let b = c2
        .get_json(&c2.app_url(PROD_SUB, PROD_RG, "ca-user-service"))
        .await;
    assert_eq!(a, b);

    let url = c.app_url(PROD_SUB, PROD_RG, "ca-cart-service");
    c.inject("operationFails", PROD_SUB, PROD_RG, "ca-cart-service")
        .await;
    let before = c.get_json(&url).await;
    let r = c
        .patch(
            &url,
            json!({"properties": {"template": {"scale": {"maxReplicas": 9}}}}),
        )
        .await;
    let status_url = r.headers()["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status: Value = c
        .http
        .get(&status_url)
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "Failed");
    assert!(status["error"]["message"].is_string());
    let after = c.get_json(&url).await;
    assert_eq!(after["properties"]["provisioningState"], "Failed");
    assert_eq!(
        after["properties"]["template"], before["properties"]["template"],
        "the failed write was undone"
    );

    c.inject("revisionFails", PROD_SUB, PROD_RG, "ca-cart-service")
        .await;
    let r = c.patch(&url, json!({"properties": {"template": {"scale": {"maxReplicas": 8}, "revisionSuffix": "willfail"}}})).await;
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let rev = c
        .get_json(&format!("{url}/revisions/ca-cart-service--willfail"))
        .await;
    assert_eq!(rev["properties"]["runningState"], "Failed");

    let config: Value = c
        .http
        .patch(format!("{}/_sim/config", c.base))
        .json(&json!({"pageSize": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["pageSize"], 3);
    assert_eq!(config["lroMode"], "async", "the rest is kept");
    let counts = c.sim_json("requests").await;
    assert!(
        counts["byOperation"]["ContainerApps_Update"]
            .as_u64()
            .unwrap()
            >= 2
    );
    assert!(counts["armReads"].as_u64().unwrap() >= 3);
    assert_eq!(
        c.http
            .post(format!("{}/_sim/reset", c.base))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(c.get(&url).await.status(), 404);
}

#[tokio::test]
async fn tls_serves_https_with_a_certificate_clients_can_trust() {
    let dir = common::Scratch::new();
    let cert = dir.path().join("sim.pem");
    let sim = aca_reconciler::simulator::Sim::new_tls(world(Config::default()), "h");
    let options = aca_reconciler::simulator::ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: true,
        tls_cert: cert.clone(),
    };
    let h = aca_reconciler::simulator::serve(sim, &options)
        .await
        .unwrap();
    assert!(h.base_url.starts_with("https://127.0.0.1:"));
    let pem = std::fs::read(&cert).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let token = h.sim.issue_token("https://management.azure.com/");
    let url = format!(
        "{}/subscriptions/{PROD_SUB}/providers/Microsoft.App/containerApps?api-version=2026-01-01",
        h.base_url
    );
    let r = trusting.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    assert!(
        page["value"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("/subscriptions/")
    );
    // A client that does not trust it refuses to talk.
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
}

// ---- Seeding --------------------------------------------------------------------------------

#[tokio::test]
async fn the_seed_has_drifted_from_the_desired_state_in_every_owned_field() {
    let desired = example_state();
    let h = start_sim(world(Config::default())).await;
    let c = ArmTestClient::new(&h);
    let mut drifted_mode = 0;
    for spec in desired.apps.values() {
        let k = &spec.key;
        let url = c.app_url(&k.subscription, &k.resource_group, &k.name);
        let app = c.get_json(&url).await;
        let p = &app["properties"];
        for (container, image) in &spec.images {
            let live = p["template"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == container.as_str())
                .unwrap();
            assert_ne!(
                live["image"],
                image.full.as_str(),
                "{k}: an older image runs"
            );
        }
        let r = spec.replicas.unwrap();
        let live = (
            p["template"]["scale"]["minReplicas"].as_u64().unwrap(),
            p["template"]["scale"]["maxReplicas"].as_u64().unwrap(),
        );
        assert_ne!(
            live,
            (u64::from(r.min), u64::from(r.max)),
            "{k}: other replica bounds"
        );
        let revs = revisions(&c, &url).await;
        if p["configuration"]["activeRevisionsMode"] == "Multiple" {
            let active = revs
                .iter()
                .filter(|r| r["properties"]["active"] == true)
                .count();
            assert!(
                active > spec.keep_active.unwrap() as usize,
                "{k}: {active} active, retention has work"
            );
        } else {
            drifted_mode += 1;
        }
        for named in spec.traffic.iter().flat_map(|t| t.named_revisions()) {
            assert!(
                revs.iter().any(|r| r["name"] == named),
                "{k}: {named} exists"
            );
        }
        assert!(
            app["tags"]
                .get("aca-reconciler-restart-generation")
                .is_none(),
            "generation 0"
        );
        assert_eq!(p["configuration"]["secrets"][0].get("value"), None);
    }
    assert!(
        drifted_mode >= 1,
        "some app runs in the other revision mode"
    );

    let reg = "crxshopaidev.azurecr.io";
    let token = acr_token(&c, reg, "repository:user-service:metadata_read").await;
    let tags: Value = c
        .http
        .get(format!(
            "{}/registries/{reg}/acr/v1/user-service/_tags?n=1000",
            c.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tags = tags["tags"].as_array().unwrap();
    assert!(
        tags.len() > 10 + 5,
        "more tags than keepLast: {}",
        tags.len()
    );
    assert!(
        tags.iter()
            .any(|t| t["changeableAttributes"]["deleteEnabled"] == false),
        "one is locked"
    );
    assert_eq!(
        c.sim_json("outages").await,
        json!([]),
        "the seed itself is healthy"
    );
}

#[tokio::test]
async fn seeding_from_desired_state_yaml_over_the_control_plane() {
    let h = start_sim(World::default()).await;
    let c = ArmTestClient::new(&h);
    let yaml = "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: ca-one, resourceGroup: rg-x, subscription: 00000000-0000-0000-0000-0000000000aa}\nspec:\n  revisionMode: multiple\n  images: {one: cr.example.io/one:v2.0.0}\n  replicas: {min: 1, max: 4}\n";
    let r = c
        .http
        .post(format!("{}/_sim/seed", c.base))
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["apps"], 1);
    let app = c
        .get_json(&c.app_url("00000000-0000-0000-0000-0000000000aa", "rg-x", "ca-one"))
        .await;
    assert_eq!(
        app["properties"]["template"]["containers"][0]["image"],
        "cr.example.io/one:v1.9.9"
    );
    let r = c
        .http
        .post(format!("{}/_sim/seed", c.base))
        .body("kind: Nope\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("seed.yaml:1:1"));
}

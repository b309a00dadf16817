//! The ARM and ACR clients against the simulator over loopback, with injected faults.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aca_reconciler::acr::AcrClient;
use aca_reconciler::arm::limiter::Limits;
use aca_reconciler::arm::{ArmClient, ArmConfig, Landed, RetryPolicy, RevisionAction};
use aca_reconciler::auth::TokenSource;
use aca_reconciler::simulator::seed;
use aca_reconciler::simulator::store::{Config, LroMode, Registry, Repository, Tag, World};
use aca_reconciler::spec::AppKey;
use common::{Handle, PROD_RG, PROD_SUB, example_state, start_sim};
use serde_json::{Value, json};

fn world(config: Config) -> World {
    seed::from_desired(
        &example_state(),
        config,
        aca_reconciler::time::Clock::new().now(),
    )
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retries: 3,
    }
}

fn client(h: &Handle, tweak: impl FnOnce(&mut ArmConfig)) -> ArmClient {
    let mut config = ArmConfig::new(&h.base_url);
    config.retry = fast_retries();
    config.poll_interval = Duration::from_millis(50);
    tweak(&mut config);
    ArmClient::new(config, Arc::new(common::tokens(&h.base_url))).unwrap()
}

fn key(app: &str) -> AppKey {
    AppKey::new(PROD_SUB, PROD_RG, app)
}

async fn fault(h: &Handle, rule: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/faults", h.base_url))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn count(h: &Handle, operation: &str) -> u64 {
    let v: Value = reqwest::get(format!("{}/_sim/requests", h.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["byOperation"][operation].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn lists_follow_next_link_and_return_every_app() {
    let h = start_sim(world(Config {
        page_size: 2,
        ..Config::default()
    }))
    .await;
    let c = client(&h, |_| {});
    let apps = c.list_apps(PROD_SUB, Some(PROD_RG)).await.unwrap();
    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
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
    assert_eq!(count(&h, "ContainerApps_ListByResourceGroup").await, 3);
    assert!(
        apps[0].raw.value()["properties"]["configuration"]["dapr"].is_object(),
        "the raw JSON is kept"
    );
    assert_eq!(c.list_apps(PROD_SUB, None).await.unwrap().len(), 5);
    let revisions = c.list_revisions(&key("ca-user-service")).await.unwrap();
    assert!(revisions.len() >= 8);
}

#[tokio::test]
async fn a_failed_page_fails_the_whole_list() {
    let h = start_sim(world(Config {
        page_size: 2,
        ..Config::default()
    }))
    .await;
    let c = client(&h, |_| {});
    fault(&h, json!({"path": "/subscriptions/*/resourceGroups/*/providers/Microsoft.App/containerApps", "fault": {"kind": "status", "status": 500}, "count": 20})).await;
    let first_page_ok = c.list_apps(PROD_SUB, Some(PROD_RG)).await;
    assert!(
        first_page_ok.is_err(),
        "a partial listing is never returned"
    );
}

#[tokio::test]
async fn a_404_is_not_retried_and_says_what_to_check() {
    let h = start_sim(world(Config::default())).await;
    let c = client(&h, |_| {});
    let err = c.get_app(&key("ca-missing")).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(err.request_id().is_some());
    let msg = err.to_string();
    assert!(
        msg.contains("ca-missing")
            && msg.contains("check the app's name, resourceGroup and subscription"),
        "{msg}"
    );
    assert_eq!(count(&h, "ContainerApps_Get").await, 1);
}

#[tokio::test]
async fn a_202_patch_is_polled_to_the_end_through_azure_async_operation() {
    let h = start_sim(world(Config {
        lro_mode: LroMode::Async,
        lro_ms: 1_500,
        lro_retry_after_s: 1,
        revision_ready_ms: 100,
        ..Config::default()
    }))
    .await;
    let c = client(&h, |_| {});
    let started = Instant::now();
    let written = c.patch_app(&key("ca-cart-service"), &json!({"properties": {"template": {"scale": {"minReplicas": 2, "maxReplicas": 10}, "revisionSuffix": "lro1"}}})).await.unwrap();
    let took = started.elapsed();
    assert!(
        written.request_id.is_some(),
        "the simulator sends x-ms-request-id"
    );
    let app = c.get_app(&key("ca-cart-service")).await.unwrap();
    assert!(
        took >= Duration::from_millis(1_500),
        "waited for the operation: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        app.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(app.properties.template.scale.min_replicas, Some(2));
    assert_eq!(
        app.properties.latest_revision_name.as_deref(),
        Some("ca-cart-service--lro1")
    );
    let polls = count(&h, "ContainerAppOperationStatuses_Get").await;
    assert!(
        (1..=3).contains(&polls),
        "polled once per Retry-After second: {polls}"
    );
}

#[tokio::test]
async fn a_location_only_operation_and_a_forbidden_one_are_followed_too() {
    let h = start_sim(world(Config {
        lro_mode: LroMode::LocationOnly,
        lro_ms: 300,
        lro_retry_after_s: 0,
        ..Config::default()
    }))
    .await;
    let c = client(&h, |_| {});
    c.patch_app(
        &key("ca-cart-service"),
        &json!({"properties": {"configuration": {"maxInactiveRevisions": 20}}}),
    )
    .await
    .unwrap();
    let app = c.get_app(&key("ca-cart-service")).await.unwrap();
    assert_eq!(
        app.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    assert!(count(&h, "ContainerAppOperationResults_Get").await >= 1);

    // An identity scoped to the resource group cannot read the operation: follow the app.
    h.sim.world().config.lro_mode = LroMode::Async;
    fault(&h, json!({"operation": "ContainerAppOperationStatuses_Get", "fault": {"kind": "status", "status": 403, "code": "AuthorizationFailed"}})).await;
    let before = count(&h, "ContainerApps_Get").await;
    c.patch_app(
        &key("ca-cart-service"),
        &json!({"properties": {"configuration": {"maxInactiveRevisions": 30}}}),
    )
    .await
    .unwrap();
    let app = c.get_app(&key("ca-cart-service")).await.unwrap();
    assert_eq!(
        app.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    assert!(
        count(&h, "ContainerApps_Get").await > before + 1,
        "polled the app's provisioningState"
    );
}

#[tokio::test]
async fn an_operation_that_fails_is_an_error_naming_it() {
    let h = start_sim(world(Config {
        lro_mode: LroMode::Async,
        lro_ms: 200,
        lro_retry_after_s: 0,
        ..Config::default()
    }))
    .await;
    let c = client(&h, |_| {});
    let inject = json!({"kind": "operationFails", "subscription": PROD_SUB, "resourceGroup": PROD_RG, "app": "ca-cart-service"});
    reqwest::Client::new()
        .post(format!("{}/_sim/inject", h.base_url))
        .json(&inject)
        .send()
        .await
        .unwrap();
    let err = c
        .patch_app(
            &key("ca-cart-service"),
            &json!({"properties": {"template": {"scale": {"maxReplicas": 9}}}}),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ca-cart-service") && msg.contains("ended Failed"),
        "{msg}"
    );
}

#[tokio::test]
async fn retry_after_is_a_floor_on_the_next_request() {
    let h = start_sim(world(Config::default())).await;
    let c = client(&h, |_| {});
    fault(&h, json!({"operation": "ContainerApps_Get", "fault": {"kind": "throttle", "retryAfter": 2}, "count": 1})).await;
    let started = Instant::now();
    let app = c.get_app(&key("ca-user-service")).await.unwrap();
    assert_eq!(app.name, "ca-user-service");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(count(&h, "ContainerApps_Get").await, 2);
}

#[tokio::test]
async fn server_errors_are_retried_then_surface_with_the_request_id() {
    let h = start_sim(world(Config::default())).await;
    let c = client(&h, |_| {});
    fault(&h, json!({"operation": "ContainerApps_Get", "fault": {"kind": "status", "status": 503}, "count": 2})).await;
    c.get_app(&key("ca-user-service")).await.unwrap();
    assert_eq!(
        count(&h, "ContainerApps_Get").await,
        3,
        "two 503s, then success"
    );

    fault(&h, json!({"operation": "ContainerAppsRevisions_GetRevision", "fault": {"kind": "status", "status": 500}})).await;
    let err = c
        .get_revision(&key("ca-user-service"), "ca-user-service--v119")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(err.request_id().is_some(), "{err}");
    assert!(err.to_string().contains("x-ms-request-id"), "{err}");
    assert_eq!(
        count(&h, "ContainerAppsRevisions_GetRevision").await,
        4,
        "1 + 3 retries"
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let h = start_sim(world(Config {
        lro_mode: LroMode::Sync,
        ..Config::default()
    }))
    .await;
    let c = client(&h, |_| {});
    let bad = json!({"properties": {"configuration": {"ingress": {"traffic": [{"latestRevision": true, "weight": 60}]}}}});
    let err = c
        .patch_app(&key("ca-user-service"), &bad)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.code(), Some("ContainerAppInvalidTrafficWeight"));
    assert_eq!(count(&h, "ContainerApps_Update").await, 1);
}

#[tokio::test]
async fn a_dropped_connection_on_a_read_is_retried() {
    let h = start_sim(world(Config::default())).await;
    let c = client(&h, |_| {});
    fault(&h, json!({"operation": "ContainerAppsRevisions_ListRevisions", "fault": {"kind": "drop"}, "count": 1})).await;
    let revisions = c.list_revisions(&key("ca-user-service")).await.unwrap();
    assert!(!revisions.is_empty());
    assert_eq!(count(&h, "ContainerAppsRevisions_ListRevisions").await, 2);
}

#[tokio::test]
async fn a_lock_conflict_waits_and_a_restart_is_never_repeated_blindly() {
    let h = start_sim(world(Config {
        lro_mode: LroMode::Sync,
        ..Config::default()
    }))
    .await;
    let c = client(&h, |_| {});
    fault(&h, json!({"operation": "ContainerAppsRevisions_RestartRevision", "fault": {"kind": "lockConflict"}, "count": 1})).await;
    let user = key("ca-user-service");
    let restart = || c.revision_action(&user, "ca-user-service--v119", RevisionAction::Restart);
    let refused = restart().await.unwrap();
    assert_eq!(refused.landed, Landed::No, "409 lock: not processed");
    assert_eq!(
        count(&h, "ContainerAppsRevisions_RestartRevision").await,
        1,
        "and not sent again by the client: the caller decides from a fresh read"
    );
    assert_eq!(restart().await.unwrap().landed, Landed::Yes);
    assert_eq!(count(&h, "ContainerAppsRevisions_RestartRevision").await, 2);

    fault(&h, json!({"operation": "ContainerAppsRevisions_RestartRevision", "fault": {"kind": "status", "status": 503}, "count": 1})).await;
    let err = c
        .revision_action(
            &key("ca-user-service"),
            "ca-user-service--v119",
            RevisionAction::Restart,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(
        count(&h, "ContainerAppsRevisions_RestartRevision").await,
        3,
        "a 503 might have restarted it: not repeated"
    );
    let restarts: Value = reqwest::get(format!("{}/_sim/restarts", h.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(restarts.as_array().unwrap().len(), 1);

    c.revision_action(
        &key("ca-user-service"),
        "ca-user-service--v112",
        RevisionAction::Activate,
    )
    .await
    .unwrap();
    c.revision_action(
        &key("ca-user-service"),
        "ca-user-service--v112",
        RevisionAction::Deactivate,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_lost_answer_is_followed_by_a_read_and_never_by_the_same_write() {
    let h = start_sim(world(Config {
        lro_mode: LroMode::Async,
        lro_ms: 1_000,
        lro_retry_after_s: 1,
        revision_ready_ms: 100,
        ..Config::default()
    }))
    .await;
    let c = client(&h, |_| {});
    // Azure accepts the PATCH (202, its operation runs for a second), then the answer is lost.
    fault(
        &h,
        json!({"operation": "ContainerApps_Update", "fault": {"kind": "lostAnswer"}, "count": 1}),
    )
    .await;
    let body = json!({"properties": {"template": {"scale": {"minReplicas": 3, "maxReplicas": 9}, "revisionSuffix": "lost1"}}});
    let written = c.patch_app(&key("ca-cart-service"), &body).await.unwrap();
    assert_eq!(
        written.landed,
        Landed::Unknown,
        "the caller is told: {written:?}"
    );
    assert_eq!(
        count(&h, "ContainerApps_Update").await,
        1,
        "the write was not sent again"
    );
    let app = c.get_app(&key("ca-cart-service")).await.unwrap();
    assert_eq!(
        app.properties.provisioning_state.as_deref(),
        Some("Succeeded"),
        "it returned only once the operation it may have started had ended"
    );
    assert_eq!(
        app.properties.latest_revision_name.as_deref(),
        Some("ca-cart-service--lost1"),
        "the write had landed"
    );
    assert!(
        h.sim.audit().into_operation().is_empty(),
        "{:?}",
        h.sim.audit().into_operation()
    );

    // A lock conflict: the write is not sent again (it was planned before that operation,
    // whose changes it could undo); the caller is told, once the operation has ended.
    let hand = common::ArmTestClient::new(&h);
    let url = hand.app_url(PROD_SUB, PROD_RG, "ca-cart-service");
    let r = hand
        .patch(
            &url,
            json!({"properties": {"template": {"scale": {"minReplicas": 4, "maxReplicas": 9}}}}),
        )
        .await;
    assert_eq!(r.status(), 202, "someone else's operation now runs");
    let body = json!({"properties": {"template": {"scale": {"minReplicas": 5, "maxReplicas": 9}, "revisionSuffix": "lock1"}}});
    let written = c.patch_app(&key("ca-cart-service"), &body).await.unwrap();
    assert_eq!(written.landed, Landed::No);
    let app = c.get_app(&key("ca-cart-service")).await.unwrap();
    assert_eq!(
        app.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(
        app.properties.template.scale.min_replicas,
        Some(4),
        "theirs stands"
    );
    let audit = h.sim.audit().to_json();
    assert!(
        audit["intoOperation"].as_array().unwrap().is_empty(),
        "no write sent into the operation it was told of: {audit}"
    );
    assert_eq!(
        count(&h, "ContainerApps_Update").await,
        3,
        "ours, the hand edit's, ours refused with 409 and not sent again"
    );
}

#[tokio::test]
async fn a_revision_action_whose_answer_was_lost_is_not_sent_again() {
    let h = start_sim(world(Config {
        lro_mode: LroMode::Sync,
        ..Config::default()
    }))
    .await;
    let c = client(&h, |_| {});
    for (operation, revision, action) in [
        (
            "ContainerAppsRevisions_ActivateRevision",
            "ca-user-service--v112",
            RevisionAction::Activate,
        ),
        (
            "ContainerAppsRevisions_DeactivateRevision",
            "ca-user-service--v112",
            RevisionAction::Deactivate,
        ),
        (
            "ContainerAppsRevisions_RestartRevision",
            "ca-user-service--v119",
            RevisionAction::Restart,
        ),
    ] {
        fault(
            &h,
            json!({"operation": operation, "fault": {"kind": "lostAnswer"}, "count": 1}),
        )
        .await;
        let written = c
            .revision_action(&key("ca-user-service"), revision, action)
            .await
            .unwrap();
        assert_eq!(written.landed, Landed::Unknown, "{operation}");
        assert_eq!(
            count(&h, operation).await,
            1,
            "{operation} was not sent again"
        );
    }
    let restarts: Value = reqwest::get(format!("{}/_sim/restarts", h.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(restarts.as_array().unwrap().len(), 1, "it had landed, once");
}

#[tokio::test]
async fn after_a_429_no_request_of_that_kind_leaves_until_retry_after() {
    // A registry: one listing is throttled for 2 s; a second listing asked for meanwhile (of
    // another repository) waits too, and reads of the ARM subscription are not held up.
    let mut w = registry_world();
    w.registries
        .get_mut("cr.example.io")
        .unwrap()
        .repositories
        .insert("team/web".into(), Repository::default());
    let h = start_sim(w).await;
    let tokens = Arc::new(common::tokens(&h.base_url));
    let acr = Arc::new(
        AcrClient::new(
            tokens,
            &[(
                "cr.example.io".into(),
                format!("{}/registries/cr.example.io", h.base_url),
            )],
        )
        .unwrap(),
    );
    // Warm the token cache, so that the listings below are the only registry requests.
    acr.list_tags("cr.example.io", "team/web").await.unwrap();
    fault(&h, json!({"operation": "ACR_GetTags", "fault": {"kind": "throttle", "retryAfter": 2}, "count": 1})).await;
    let started = Instant::now();
    let first = tokio::spawn({
        let acr = acr.clone();
        async move { acr.list_tags("cr.example.io", "team/api").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = acr.list_tags("cr.example.io", "team/web").await.unwrap();
    assert!(second.is_empty());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the second listing waited for the registry's Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(first.await.unwrap().unwrap().len(), 250);
    let early = h.sim.audit().early().to_vec();
    assert!(early.is_empty(), "requests inside the wait: {early:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_bucket_keeps_a_burst_from_being_throttled() {
    // ARM's read bucket (250) with its refill sped up 10x so the test is short; the client keeps
    // its usual headroom below the server's bucket. A burst of 1,000 reads never meets a 429.
    // The headroom is what absorbs jitter between the client admitting a request and the server
    // counting it: 10% of the burst over the client's rate is 111 ms here (1.1 s at ARM's real
    // refill). A 20x speed-up with a burst of 50 left 11 ms, and a loaded CI machine exceeded it.
    let server = Limits {
        read_burst: 250.0,
        read_per_second: 250.0,
        write_burst: 40.0,
        write_per_second: 200.0,
    };
    let limits = server.scaled(aca_reconciler::arm::limiter::HEADROOM);
    let mut config = Config::default();
    config.throttling.read_burst = server.read_burst;
    config.throttling.read_per_second = server.read_per_second;
    let h = common::start_sim_apart(world(config));
    let c = Arc::new(client(&h, |cfg| {
        cfg.limits = limits;
        cfg.retry.max_retries = 0;
    }));
    // 32 workers, as `--concurrency 32` runs them, issue 1,000 reads as fast as they may.
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (worker..1_000).step_by(32) {
                c.get_app(&key("ca-user-service")).await?;
            }
            Ok::<(), aca_reconciler::arm::Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        count(&h, "ContainerApps_Get").await,
        1_000,
        "no 429, no retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_arms_own_shape_the_client_paces_on_arms_headers() {
    // The same burst with the client's bucket an exact copy of the server's: what keeps it
    // under is `x-ms-ratelimit-remaining-subscription-reads` less the requests in flight.
    let server = Limits {
        read_burst: 250.0,
        read_per_second: 250.0,
        write_burst: 40.0,
        write_per_second: 200.0,
    };
    let mut config = Config::default();
    config.throttling.read_burst = server.read_burst;
    config.throttling.read_per_second = server.read_per_second;
    let h = common::start_sim_apart(world(config));
    let c = Arc::new(client(&h, |cfg| {
        cfg.limits = server;
        cfg.retry.max_retries = 0;
    }));
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (worker..1_000).step_by(32) {
                c.get_app(&key("ca-user-service")).await?;
            }
            Ok::<(), aca_reconciler::arm::Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        count(&h, "ContainerApps_Get").await,
        1_000,
        "no 429, no retry"
    );
}

#[tokio::test]
async fn plain_http_is_refused_for_non_loopback_endpoints() {
    let h = start_sim(World::default()).await;
    let tokens = Arc::new(common::tokens(&h.base_url));
    let err = ArmClient::new(
        ArmConfig::new("http://management.example.com"),
        tokens.clone(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("plain http to a non-loopback host")
    );
    let err = AcrClient::new(
        tokens,
        &[("cr.example.io".into(), "http://10.1.2.3:5000".into())],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("--registry-endpoint for cr.example.io")
    );
}

// ---- ACR ------------------------------------------------------------------------------------

fn registry_world() -> World {
    let mut repo = Repository::default();
    for i in 0..250i64 {
        let digest = format!("sha256:{:064x}", i % 200);
        repo.manifests.insert(digest.clone());
        repo.tags.push(Tag {
            name: format!("v{i}"),
            digest,
            created: 1_700_000_000_000 + i * 60_000,
            last_update: 1_700_000_000_000 + i * 60_000,
            delete_enabled: i != 7,
            write_enabled: true,
        });
    }
    let mut w = World::new(Config::default());
    w.registries.insert(
        "cr.example.io".into(),
        Registry {
            repositories: [("team/api".to_owned(), repo)].into(),
        },
    );
    w
}

#[tokio::test]
async fn acr_lists_every_tag_newest_first_and_deletes() {
    let h = start_sim(registry_world()).await;
    let tokens = Arc::new(common::tokens(&h.base_url));
    let acr = AcrClient::new(
        tokens,
        &[(
            "cr.example.io".into(),
            format!("{}/registries/cr.example.io", h.base_url),
        )],
    )
    .unwrap();
    let tags = acr.list_tags("cr.example.io", "team/api").await.unwrap();
    assert_eq!(tags.len(), 250);
    assert_eq!(tags[0].name, "v249");
    assert_eq!(tags[249].name, "v0");
    assert!(
        tags.windows(2)
            .all(|w| w[0].last_update >= w[1].last_update)
    );
    assert_eq!(count(&h, "ACR_GetTags").await, 3, "three pages of 100");
    assert_eq!(
        count(&h, "ACR_ExchangeAadToken").await,
        1,
        "the refresh token is cached"
    );
    assert_eq!(
        acr.list_repositories("cr.example.io").await.unwrap(),
        ["team/api"]
    );

    assert!(
        acr.delete_tag("cr.example.io", "team/api", "v3")
            .await
            .unwrap()
    );
    assert!(
        !acr.delete_tag("cr.example.io", "team/api", "v3")
            .await
            .unwrap(),
        "already gone"
    );
    let locked = acr
        .delete_tag("cr.example.io", "team/api", "v7")
        .await
        .unwrap_err();
    assert_eq!(locked.status(), Some(405));
    assert!(locked.to_string().contains("locked"), "{locked}");
    let digest = tags.iter().find(|t| t.name == "v3").unwrap().digest.clone();
    assert!(
        acr.delete_manifest("cr.example.io", "team/api", &digest)
            .await
            .unwrap()
    );
    // v203 shared v3's digest: deleting the image removed that tag too (N§1.3).
    let left = acr.list_tags("cr.example.io", "team/api").await.unwrap();
    assert_eq!(left.len(), 248);
    assert!(!left.iter().any(|t| t.name == "v203"));
    let missing = acr.list_tags("cr.example.io", "nope").await.unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("check the repository name `nope`"),
        "{missing}"
    );
}

// ---- The real managed-identity credential, end to end ----------------------------------------

/// Runs in a child process with IDENTITY_ENDPOINT/IDENTITY_HEADER set (the parent sets them:
/// this crate forbids the unsafe `set_var`), with trace logging on stderr.
#[tokio::test]
#[ignore = "run by managed_identity_credential_end_to_end in a child process"]
async fn child_uses_the_managed_identity_credential() {
    let base = std::env::var("SIM_BASE").expect("run by the parent test");
    aca_reconciler::telemetry::init(aca_reconciler::cli::LogFormat::Json, "trace");
    let tokens = Arc::new(
        TokenSource::from_env(
            aca_reconciler::auth::CredentialChoice::Auto,
            aca_reconciler::auth::Cloud::Public,
            &base,
        )
        .unwrap(),
    );
    assert_eq!(
        tokens.credential_name(),
        "managed identity (IDENTITY_ENDPOINT)"
    );
    let mut config = ArmConfig::new(&base);
    config.retry = fast_retries();
    let c = ArmClient::new(config, tokens.clone()).unwrap();
    let apps = c.list_apps(PROD_SUB, Some(PROD_RG)).await.unwrap();
    assert_eq!(apps.len(), 5);
    let err = c.get_app(&key("ca-missing")).await.unwrap_err();
    tracing::error!(error = %err, "an error, logged as the controller would");
    tracing::debug!(?tokens, "the token source, debug-printed");
    println!("TOKEN={}", tokens.token().await.unwrap().expose());
}

#[tokio::test]
async fn managed_identity_credential_end_to_end_and_no_token_in_any_log() {
    let h = start_sim(world(Config::default())).await;
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_uses_the_managed_identity_credential",
            "--nocapture",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SIM_BASE", &h.base_url)
        .env("IDENTITY_ENDPOINT", format!("{}/msi/token", h.base_url))
        .env("IDENTITY_HEADER", "test-identity-header")
        .env("RUST_LOG", "trace")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN="))
        .expect("the child printed its token")
        .trim()
        .to_owned();
    assert!(token.len() > 40);
    assert!(
        stderr.contains("\"ARM\""),
        "trace logs were written:\n{stderr}"
    );
    assert!(stderr.contains("ca-missing"), "the error was logged");
    // The token, or any distinctive part of it, appears in no log line.
    for needle in [
        token.as_str(),
        token.split('.').nth(1).unwrap_or("x"),
        token.split('.').nth(2).unwrap_or("x"),
    ] {
        assert!(
            !stderr.contains(needle),
            "a token part leaked into the logs"
        );
    }
    assert!(
        count(&h, "ManagedIdentity_GetToken").await >= 1,
        "the token came from the identity endpoint"
    );
}

#[tokio::test]
async fn a_fenced_client_sends_no_write_without_the_lease_and_ends_each_write_before_it_lapses() {
    use aca_reconciler::arm::Error;
    use aca_reconciler::lease::Fence;
    let h = start_sim(world(Config {
        lro_mode: LroMode::Sync,
        ..Config::default()
    }))
    .await;
    let (lease, fence) = Fence::channel();
    let c = client(&h, |_| {});
    c.set_fence(fence);
    let app = key("ca-cart-service");
    let body =
        json!({"properties": {"template": {"scale": {"minReplicas": 3, "maxReplicas": 10}}}});

    let refused = c.patch_app(&app, &body).await.unwrap_err();
    assert!(matches!(refused, Error::NotLeader(_)), "{refused}");
    let refused = c
        .revision_action(&app, "ca-cart-service--v41", RevisionAction::Restart)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::NotLeader(_)), "{refused}");
    // Two seconds of lease left is too little to start a write.
    lease.send_replace(Some(tokio::time::Instant::now() + Duration::from_secs(2)));
    assert!(matches!(
        c.patch_app(&app, &body).await,
        Err(Error::NotLeader(_))
    ));
    assert_eq!(
        count(&h, "ContainerApps_Update").await,
        0,
        "nothing was sent"
    );
    assert_eq!(
        count(&h, "ContainerAppsRevisions_RestartRevision").await,
        0,
        "nothing was sent"
    );
    c.get_app(&app).await.expect("reads need no lease");

    // A slow Azure: the write is abandoned before the lease (5 s here) could lapse.
    lease.send_replace(Some(tokio::time::Instant::now() + Duration::from_secs(5)));
    fault(&h, json!({"operation": "ContainerApps_Update", "fault": {"kind": "latency", "ms": 20_000}, "count": 1})).await;
    let started = Instant::now();
    // Its answer never came: the app is read instead of the write being sent again.
    let timed_out = c.patch_app(&app, &body).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "gave up after {took:?}: {timed_out:?}"
    );
    assert!(
        timed_out
            .as_ref()
            .is_ok_and(|w| w.landed == Landed::Unknown),
        "{timed_out:?}"
    );
    assert_eq!(count(&h, "ContainerApps_Update").await, 1, "not sent again");

    // Leading: writes go through.
    lease.send_replace(Some(tokio::time::Instant::now() + Duration::from_secs(60)));
    c.patch_app(&app, &body).await.unwrap();
    let written = c.get_app(&app).await.unwrap();
    assert_eq!(written.properties.template.scale.min_replicas, Some(3));
}

#[tokio::test]
async fn the_arm_token_never_follows_a_link_to_another_host() {
    // A fake ARM whose list page names another host as its nextLink, and that other host,
    // which records any request it gets.
    let stolen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let thief = {
        let stolen = stolen.clone();
        axum::Router::new().fallback(move || {
            let stolen = stolen.clone();
            async move {
                stolen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(json!({"value": []}))
            }
        })
    };
    let thief_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let thief_url = format!("http://{}", thief_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(thief_listener, thief).await });
    let page = json!({"value": [], "nextLink": format!("{thief_url}/steal")});
    let arm = axum::Router::new().fallback(move || {
        let page = page.clone();
        async move { axum::Json(page) }
    });
    let arm_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let arm_url = format!("http://{}", arm_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(arm_listener, arm).await });

    let tokens = start_sim(World::default()).await;
    let mut config = ArmConfig::new(&arm_url);
    config.retry = fast_retries();
    let c = ArmClient::new(config, Arc::new(common::tokens(&tokens.base_url))).unwrap();
    let err = c.list_apps(PROD_SUB, Some(PROD_RG)).await.unwrap_err();
    assert!(
        err.to_string().contains("refusing to send the ARM token"),
        "{err}"
    );
    assert_eq!(stolen.load(std::sync::atomic::Ordering::SeqCst), 0);
}

//! `permissions`: the committed roles for `desired-state/` are current, and every Azure call the
//! controller really makes has its action in them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aca_reconciler::arm::metrics::ArmMetrics;
use aca_reconciler::arm::{ArmClient, ArmConfig};
use aca_reconciler::simulator::seed;
use aca_reconciler::time::Clock;
use aca_reconciler::{apply, live, permissions, retention};
use common::{bin, example_state, root, run, start_sim, stdout};
use serde_json::Value;

#[test]
fn the_committed_roles_are_what_permissions_prints() {
    let out = run(
        bin(&root()).args(["permissions", "--desired-state", "desired-state"]),
        0,
    );
    let committed = std::fs::read_to_string(root().join("deploy/permissions.json")).unwrap();
    assert_eq!(
        stdout(&out),
        committed,
        "deploy/permissions.json is stale: run `cargo run -- permissions > deploy/permissions.json` and review the diff"
    );
}

#[tokio::test]
async fn every_call_of_a_full_pass_has_its_action_in_the_roles() {
    let d = example_state();
    let config = common::fast_config(100, 200);
    let h = start_sim(seed::from_desired(&d, config, Clock::new().now())).await;
    let tokens = Arc::new(common::tokens(&h.base_url));
    let mut arm_config = ArmConfig::new(&h.base_url);
    arm_config.poll_interval = Duration::from_millis(50);
    let client = ArmClient::new(arm_config, tokens.clone()).unwrap();
    let metrics = Arc::new(ArmMetrics::default());
    client.set_metrics(metrics.clone());
    let endpoints: Vec<(String, String)> = h
        .sim
        .world()
        .registries
        .keys()
        .map(|l| (l.clone(), format!("{}/registries/{l}", h.base_url)))
        .collect();
    let acr = aca_reconciler::acr::AcrClient::new(tokens, &endpoints).unwrap();

    let snapshot = live::snapshot(&client, &d, 8).await;
    let options = apply::ApplyOptions {
        poll_interval: Duration::from_millis(50),
        revision_timeout: Duration::from_secs(10),
        ..apply::ApplyOptions::default()
    };
    let reports = aca_reconciler::pass::converge(&client, &d, snapshot, &options).await;
    assert!(reports.iter().all(|r| r.is_ok()), "{reports:#?}");
    let plan = retention::plan(&client, &acr, &d, Clock::new().now(), 100, 4).await;
    retention::apply(&acr, &plan).await;

    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let routes: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.split("route=\"").nth(1))
        .filter_map(|r| r.split('"').next())
        .map(str::to_owned)
        .collect();
    // A full pass writes, follows operations and reads revisions.
    for expected in [
        "containerApps.update",
        "revisions.deactivate",
        "revisions.restart",
        "operations.get",
    ] {
        assert!(
            routes.contains(expected),
            "{expected} not called: {routes:?}"
        );
    }

    let roles = permissions::permissions(&d);
    let granted: BTreeSet<&str> = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["Actions"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
        })
        .collect();
    for route in &routes {
        let actions = permissions::action_of(route)
            .unwrap_or_else(|| panic!("the client called {route}, which maps to no action"));
        for a in actions {
            assert!(
                granted.contains(a),
                "{route} needs {a}, which no role grants"
            );
        }
    }
}

#[test]
fn a_rollout_that_reads_metrics_adds_the_metrics_role_and_only_then() {
    let s = common::Scratch::new();
    let app = |name: &str, analysis: &str| {
        format!(
            "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {{name: {name}, resourceGroup: rg-a, subscription: 00000000-0000-0000-0000-000000000000}}\nspec:\n  images: {{app: cr.azurecr.io/app:v2}}\n  rollout:\n    steps: [{{weight: 10, pause: 1m}}]\n{analysis}"
        )
    };
    s.write(
        "d/probes.yaml",
        &app("ca-probes", "    analysis: {probes: [{path: /health}]}\n"),
    );
    let out = run(
        bin(s.path()).args(["permissions", "--desired-state", "d"]),
        0,
    );
    assert!(
        !stdout(&out).contains("Microsoft.Insights/metrics/read"),
        "probes alone read no metrics: {}",
        stdout(&out)
    );
    s.write(
        "d/rate.yaml",
        &app("ca-rate", "    analysis: {successRate: {min: 99}}\n"),
    );
    let out = run(
        bin(s.path()).args(["permissions", "--desired-state", "d"]),
        0,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("Microsoft.Insights/metrics/read"), "{text}");
    assert!(
        text.contains("/containerApps/ca-rate") && !text.contains("/containerApps/ca-probes\""),
        "the metrics role is assigned on the app whose rollout reads metrics: {text}"
    );
}

//! Planner and executor against the simulator over loopback: convergence in one pass, safety
//! (no outage, unowned fields untouched), the steady-state read budget, and the runbook's
//! scenarios.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aca_reconciler::apply::{AppReport, ApplyOptions};
use aca_reconciler::arm::{ArmClient, ArmConfig, RevisionAction};
use aca_reconciler::live::{self, Observation};
use aca_reconciler::pass;
use aca_reconciler::plan::{self, Action, Outcome};
use aca_reconciler::simulator::seed;
use aca_reconciler::simulator::store::{Config, LroMode, World};
use aca_reconciler::spec::{self, AppKey, DesiredState, LoadOptions};
use aca_reconciler::state::AppState;
use aca_reconciler::time::Clock;
use common::{Handle, start_sim, unowned};
use serde_json::{Value, json};

const SUB: &str = "00000000-0000-0000-0000-0000000000ab";

struct Env {
    h: Handle,
    client: ArmClient,
}

fn fast() -> Config {
    common::fast_config(100, 200)
}

async fn env(world: World) -> Env {
    let h = start_sim(world).await;
    let mut config = ArmConfig::new(&h.base_url);
    config.poll_interval = Duration::from_millis(50);
    let client = ArmClient::new(config, Arc::new(common::tokens(&h.base_url))).unwrap();
    Env { h, client }
}

fn options() -> ApplyOptions {
    ApplyOptions {
        poll_interval: Duration::from_millis(50),
        revision_timeout: Duration::from_secs(5),
        ..ApplyOptions::default()
    }
}

fn desired(yaml: &str) -> DesiredState {
    let file = spec::load::parse_bytes(Path::new("t.yaml"), Path::new(""), yaml.as_bytes());
    let loaded = spec::validate::assemble(&[file], &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    loaded.state
}

fn app_yaml(name: &str, spec_lines: &str) -> String {
    format!(
        "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {{name: {name}, resourceGroup: rg-t, subscription: {SUB}}}\nspec:\n{spec_lines}"
    )
}

async fn pass(e: &Env, d: &DesiredState) -> Vec<AppReport> {
    let live = live::snapshot(&e.client, d, 8).await;
    pass::converge(&e.client, d, live, &options()).await
}

async fn plans(e: &Env, d: &DesiredState) -> Vec<(AppKey, Option<plan::AppPlan>)> {
    let live = live::snapshot(&e.client, d, 8).await;
    d.apps
        .iter()
        .map(|(k, s)| {
            let p = match live.apps.get(k) {
                Some(Observation::Found { app, revisions }) => Some(plan::plan_app(
                    s,
                    plan::LiveApp {
                        app,
                        revisions: revisions.as_deref(),
                    },
                    0,
                )),
                _ => None,
            };
            (k.clone(), p)
        })
        .collect()
}

async fn sim(e: &Env, path: &str) -> Value {
    reqwest::get(format!("{}/_sim/{path}", e.h.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn key(name: &str) -> AppKey {
    AppKey::new(SUB, "rg-t", name)
}

#[tokio::test]
async fn the_example_platform_converges_in_one_pass_safely() {
    let d = common::example_state();
    let e = env(seed::from_desired(&d, fast(), Clock::new().now())).await;
    let before: Vec<Value> = {
        let w = e.h.sim.world();
        w.apps.values().map(|r| r.app.clone()).collect()
    };
    let reports = pass(&e, &d).await;
    for r in &reports {
        assert!(r.converged(), "{}: {:?}", r.app, r.actions);
    }
    // A second plan is empty.
    for (k, p) in plans(&e, &d).await {
        let p = p.unwrap();
        assert_eq!(p.outcome, Outcome::InSync, "{k}: {:?}", p.actions);
    }
    assert_eq!(
        sim(&e, "outages").await,
        json!([]),
        "no revision with traffic was deactivated, no traffic to one not running"
    );
    // Every field outside the owned ones is byte-identical.
    let after: Vec<Value> = {
        let w = e.h.sim.world();
        w.apps.values().map(|r| r.app.clone()).collect()
    };
    for (b, a) in before.into_iter().zip(after) {
        assert_eq!(unowned(b), unowned(a));
    }
    // Secrets were never sent (the simulator refuses a secret without a value, so any PATCH
    // carrying `secrets` would have failed the pass).
    let restarts = sim(&e, "restarts").await;
    assert!(
        !restarts.as_array().unwrap().is_empty(),
        "auth-service's restartGeneration 3 restarted it"
    );
}

#[tokio::test]
async fn steady_state_costs_one_list_per_resource_group_and_no_write() {
    let d = common::example_state();
    let e = env(seed::from_desired(&d, fast(), Clock::new().now())).await;
    pass(&e, &d).await;
    reqwest::Client::new()
        .delete(format!("{}/_sim/requests", e.h.base_url))
        .send()
        .await
        .unwrap();
    for (k, p) in plans(&e, &d).await {
        assert_eq!(p.unwrap().outcome, Outcome::InSync, "{k}");
    }
    let counts = sim(&e, "requests").await;
    assert_eq!(counts["armWrites"], 0);
    assert_eq!(
        counts["byOperation"]["ContainerApps_ListByResourceGroup"], 2,
        "one list per resource group"
    );
    // Every example app has traffic or retention, so each needs its revisions once.
    let needing = d.apps.values().filter(|s| plan::needs_revisions(s)).count() as u64;
    assert_eq!(
        counts["byOperation"]["ContainerAppsRevisions_ListRevisions"]
            .as_u64()
            .unwrap(),
        needing
    );
    assert_eq!(counts["armReads"].as_u64().unwrap(), 2 + needing);
}

#[tokio::test]
async fn an_app_verified_in_sync_is_not_read_again_until_it_or_its_spec_changes() {
    use aca_reconciler::apply::Verification;
    let d = common::example_state();
    let e = env(seed::from_desired(&d, fast(), Clock::new().now())).await;
    pass(&e, &d).await;
    // A full pass: every app needing revisions is verified, with its fingerprint.
    let reports = pass(&e, &d).await;
    let verified: std::collections::BTreeMap<AppKey, u64> = reports
        .iter()
        .filter_map(|r| match r.verified {
            Verification::Full(fp) => Some((r.app.clone(), fp)),
            _ => None,
        })
        .collect();
    let needing = d.apps.values().filter(|s| plan::needs_revisions(s)).count();
    assert_eq!(verified.len(), needing, "{reports:#?}");
    let reset = || async {
        reqwest::Client::new()
            .delete(format!("{}/_sim/requests", e.h.base_url))
            .send()
            .await
            .unwrap();
    };
    let revision_lists = |counts: &Value| {
        counts["byOperation"]["ContainerAppsRevisions_ListRevisions"]
            .as_u64()
            .unwrap_or(0)
    };

    // Nothing changed: the lists only.
    reset().await;
    let live = live::snapshot_since(&e.client, &d, 8, &verified).await;
    assert_eq!(live.unchanged.len(), needing);
    let reports = pass::converge(&e.client, &d, live, &options()).await;
    assert!(reports.iter().all(AppReport::untouched));
    let counts = sim(&e, "requests").await;
    assert_eq!(revision_lists(&counts), 0, "{counts}");
    assert_eq!(counts["armReads"], 2, "two resource groups, one list each");

    // Someone scales one app by hand: only that app is read in full, and fixed.
    let prod = |name: &str| AppKey::new(common::PROD_SUB, common::PROD_RG, name);
    let cart = prod("ca-cart-service");
    let t = common::ArmTestClient::new(&e.h);
    let r = t
        .patch(
            &t.app_url(&cart.subscription, &cart.resource_group, &cart.name),
            json!({"properties": {"template": {"scale": {"minReplicas": 7, "maxReplicas": 10}}}}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    reset().await;
    let live = live::snapshot_since(&e.client, &d, 8, &verified).await;
    assert_eq!(live.unchanged.len(), needing - 1);
    assert!(!live.unchanged.contains(&cart));
    let reports = pass::converge(&e.client, &d, live, &options()).await;
    let cart_report = reports.iter().find(|r| r.app == cart).unwrap();
    assert!(cart_report.converged(), "{cart_report:?}");

    // A changed spec is verified in full too, even though the app did not change.
    let mut edited = d.clone();
    let user = prod("ca-user-service");
    edited.apps.get_mut(&user).unwrap().keep_active = Some(4);
    let live = live::snapshot_since(&e.client, &edited, 8, &verified).await;
    assert!(!live.unchanged.contains(&user));
}

#[tokio::test]
async fn scale_up_and_down_reads_no_revisions_and_makes_one_revision_each() {
    let up = desired(&app_yaml("ca-scale", "  replicas: {min: 5, max: 20}\n"));
    let e = env(seed::from_desired(&up, fast(), Clock::new().now())).await;
    let reports = pass(&e, &up).await;
    assert!(reports[0].converged());
    let writes: Vec<&Action> = reports[0]
        .actions
        .iter()
        .map(|d| &d.action)
        .filter(|a| a.is_write())
        .collect();
    assert_eq!(writes.len(), 1, "one PATCH: {writes:?}");
    let app = e.client.get_app(&key("ca-scale")).await.unwrap();
    assert_eq!(
        (
            app.properties.template.scale.min_replicas,
            app.properties.template.scale.max_replicas
        ),
        (Some(5), Some(20))
    );
    assert_eq!(
        sim(&e, "requests").await["byOperation"]["ContainerAppsRevisions_ListRevisions"],
        Value::Null
    );

    let down = desired(&app_yaml("ca-scale", "  replicas: {min: 2, max: 10}\n"));
    assert!(pass(&e, &down).await[0].converged());
    let app = e.client.get_app(&key("ca-scale")).await.unwrap();
    assert_eq!(
        (
            app.properties.template.scale.min_replicas,
            app.properties.template.scale.max_replicas
        ),
        (Some(2), Some(10))
    );
}

#[tokio::test]
async fn a_new_image_reaches_100_percent_through_latest_revision() {
    let d = desired(&app_yaml(
        "ca-web",
        "  revisionMode: multiple\n  images: {web: mcr.microsoft.com/k8se/web:2.0.0}\n  traffic:\n    - {latestRevision: true, weight: 100}\n",
    ));
    let e = env(seed::from_desired(&d, fast(), Clock::new().now())).await;
    assert!(pass(&e, &d).await[0].converged());
    let app = e.client.get_app(&key("ca-web")).await.unwrap();
    let latest = app.properties.latest_revision_name.clone().unwrap();
    assert_eq!(
        app.properties.latest_ready_revision_name.as_deref(),
        Some(latest.as_str())
    );
    let rev = e
        .client
        .get_revision(&key("ca-web"), &latest)
        .await
        .unwrap();
    assert_eq!(rev.properties.traffic_weight, Some(100));
    assert_eq!(
        rev.properties.template.containers[0].image.as_deref(),
        Some("mcr.microsoft.com/k8se/web:2.0.0")
    );
    assert_eq!(sim(&e, "outages").await, json!([]));
}

#[tokio::test]
async fn a_rollback_pins_an_inactive_revision_safely() {
    // Live: several active revisions and an old inactive one; the rollback pins that one.
    let seeded = desired(&app_yaml(
        "ca-api",
        "  revisionMode: multiple\n  revisionRetention: {keepActive: 2}\n",
    ));
    let world = seed::from_desired(&seeded, fast(), Clock::new().now());
    let oldest = world.apps.values().next().unwrap().revisions[0].clone();
    assert!(!oldest.active);
    let d = desired(&app_yaml(
        "ca-api",
        &format!(
            "  revisionMode: multiple\n  activeRevision: {}\n  revisionRetention: {{keepActive: 2}}\n",
            oldest.name
        ),
    ));
    let e = env(world).await;
    let planned = plans(&e, &d).await.remove(0).1.unwrap();
    let kinds: Vec<&str> = planned
        .actions
        .iter()
        .map(|a| match a {
            Action::Activate { .. } => "activate",
            Action::WaitUntilRunning { .. } => "wait",
            Action::SetTraffic { .. } => "traffic",
            Action::Deactivate { .. } => "deactivate",
            _ => "other",
        })
        .collect();
    assert_eq!(
        &kinds[..3],
        ["activate", "wait", "traffic"],
        "activate and wait before any weight moves: {kinds:?}"
    );
    assert!(
        kinds.len() > 3 && kinds[3..].iter().all(|k| *k == "deactivate"),
        "{kinds:?}"
    );

    let report = pass(&e, &d).await.remove(0);
    assert!(report.converged(), "{:?}", report.actions);
    let revisions = e.client.list_revisions(&key("ca-api")).await.unwrap();
    let pinned = revisions.iter().find(|r| r.name == oldest.name).unwrap();
    assert!(pinned.is_running());
    assert_eq!(pinned.properties.traffic_weight, Some(100));
    assert!(
        revisions.iter().filter(|r| r.properties.active).count() <= 2,
        "retention kept 2 active"
    );
    assert_eq!(sim(&e, "outages").await, json!([]));
}

#[tokio::test]
async fn a_serving_revision_deactivated_out_of_band_is_brought_back() {
    let d = desired(&app_yaml(
        "ca-api",
        "  revisionMode: multiple\n  activeRevision: ca-api--v112\n",
    ));
    let e = env(seed::from_desired(&d, fast(), Clock::new().now())).await;
    assert!(
        pass(&e, &d).await[0].untouched(),
        "the seed already pins it"
    );
    // Someone runs `az containerapp revision deactivate` on the revision with all traffic.
    e.client
        .revision_action(&key("ca-api"), "ca-api--v112", RevisionAction::Deactivate)
        .await
        .unwrap();
    assert_eq!(
        sim(&e, "outages").await.as_array().unwrap().len(),
        1,
        "the operator's outage"
    );
    let report = pass(&e, &d).await.remove(0);
    assert!(report.converged(), "{:?}", report.actions);
    assert!(matches!(report.actions[0].action, Action::Activate { .. }));
    let r = e
        .client
        .get_revision(&key("ca-api"), "ca-api--v112")
        .await
        .unwrap();
    assert!(r.is_running() && r.properties.traffic_weight == Some(100));
}

#[tokio::test]
async fn a_canary_split_of_90_10() {
    let d = desired(&app_yaml(
        "ca-shop",
        "  revisionMode: multiple\n  images: {shop: mcr.microsoft.com/k8se/shop:1.1.0}\n  traffic:\n    - {revision: ca-shop--r100, weight: 90}\n    - {latestRevision: true, weight: 10}\n",
    ));
    let mut world = seed::from_desired(&d, fast(), Clock::new().now());
    // The seed names the canary's stable revision after the spec.
    assert!(
        world
            .apps
            .values()
            .next()
            .unwrap()
            .revisions
            .iter()
            .any(|r| r.name == "ca-shop--r100")
    );
    world.config.lro_mode = LroMode::Sync;
    let e = env(world).await;
    assert!(pass(&e, &d).await[0].converged());
    let revisions = e.client.list_revisions(&key("ca-shop")).await.unwrap();
    let weight = |n: &str| {
        revisions
            .iter()
            .find(|r| r.name == n)
            .and_then(|r| r.properties.traffic_weight)
    };
    let latest = e
        .client
        .get_app(&key("ca-shop"))
        .await
        .unwrap()
        .properties
        .latest_revision_name
        .unwrap();
    assert_eq!(weight("ca-shop--r100"), Some(90));
    assert_eq!(weight(&latest), Some(10));
}

#[tokio::test]
async fn retention_keeps_the_last_5_active_and_never_the_protected() {
    let d = desired(&app_yaml(
        "ca-keep",
        "  revisionMode: multiple\n  revisionRetention: {keepActive: 5}\n",
    ));
    let e = env(seed::from_desired(&d, fast(), Clock::new().now())).await;
    let before = e.client.list_revisions(&key("ca-keep")).await.unwrap();
    assert!(before.iter().filter(|r| r.properties.active).count() > 5);
    assert!(pass(&e, &d).await[0].converged());
    let after = e.client.list_revisions(&key("ca-keep")).await.unwrap();
    let active: Vec<&str> = after
        .iter()
        .filter(|r| r.properties.active)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(active.len(), 5);
    // The newest five stayed (oldest first went), the one with traffic among them.
    let mut newest: Vec<&str> = before
        .iter()
        .filter(|r| r.properties.active)
        .map(|r| r.name.as_str())
        .collect();
    newest = newest.split_off(newest.len() - 5);
    assert_eq!(active, newest);
    assert_eq!(sim(&e, "outages").await, json!([]));
}

#[tokio::test]
async fn a_restart_after_secret_rotation_happens_once() {
    let d = desired(&app_yaml("ca-auth", "  restartGeneration: 3\n"));
    let e = env(seed::from_desired(&d, fast(), Clock::new().now())).await;
    assert!(pass(&e, &d).await[0].converged());
    let restarts = sim(&e, "restarts").await.as_array().unwrap().len();
    assert!(restarts >= 1);
    let app = e.client.get_app(&key("ca-auth")).await.unwrap();
    assert_eq!(
        app.tags.get(plan::RESTART_TAG).map(String::as_str),
        Some("3")
    );
    assert_eq!(
        app.tags.get(plan::RESTART_PENDING_TAG),
        None,
        "only the generation is left behind"
    );
    // A controller restart (a new pass from scratch) does not restart again.
    assert!(pass(&e, &d).await[0].untouched());
    assert_eq!(
        sim(&e, "restarts").await.as_array().unwrap().len(),
        restarts
    );
}

#[tokio::test]
async fn a_restart_with_a_new_image_restarts_only_the_revisions_from_before() {
    // Single mode: the new image's revision replaces the serving one, and it already runs with
    // the rotated secrets, so nothing is restarted; in Multiple mode the old active revisions
    // are restarted and the new one is not.
    for mode in ["single", "multiple"] {
        let name = format!("ca-rot-{mode}");
        let d = desired(&app_yaml(
            &name,
            &format!(
                "  revisionMode: {mode}\n  images: {{app: cr.example.io/app:v2}}\n  restartGeneration: 1\n"
            ),
        ));
        let e = env(seed::from_desired(&d, fast(), Clock::new().now())).await;
        let k = key(&name);
        let report = pass(&e, &d).await.remove(0);
        assert!(report.converged(), "{report:?}");
        let app = e.client.get_app(&k).await.unwrap();
        let created = app.properties.latest_revision_name.clone().unwrap();
        let log = sim(&e, "restarts").await;
        let restarted: Vec<&str> = log
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["revision"].as_str())
            .collect();
        assert!(
            !restarted.contains(&created.as_str()),
            "{mode}: the revision this pass created was restarted: {log}"
        );
        if mode == "multiple" {
            assert!(!restarted.is_empty(), "the older revisions were restarted");
        }
        assert_eq!(
            app.tags.get(plan::RESTART_TAG).map(String::as_str),
            Some("1")
        );
        assert_eq!(app.tags.get(plan::RESTART_PENDING_TAG), None);
    }
}

#[tokio::test]
async fn a_pending_tag_left_over_from_a_recorded_generation_is_removed() {
    let d = desired(&app_yaml("ca-litter", "  restartGeneration: 2\n"));
    let mut world = seed::from_desired(&d, fast(), Clock::new().now());
    for rec in world.apps.values_mut() {
        rec.app["tags"] = json!({
            plan::RESTART_TAG: "2",
            plan::RESTART_PENDING_TAG: "2@2026-11-27T06:10:01Z",
        });
    }
    let e = env(world).await;
    let report = pass(&e, &d).await.remove(0);
    assert!(report.converged(), "{report:?}");
    let app = e.client.get_app(&key("ca-litter")).await.unwrap();
    assert_eq!(app.tags.get(plan::RESTART_PENDING_TAG), None);
    assert_eq!(
        app.tags.get(plan::RESTART_TAG).map(String::as_str),
        Some("2")
    );
    assert_eq!(sim(&e, "restarts").await, json!([]), "nothing restarted");
}

#[tokio::test]
async fn a_restart_cut_short_is_finished_not_repeated() {
    // Live: a Multiple-mode app with several active revisions, in sync.
    let base = "  revisionMode: multiple\n  revisionRetention: {keepActive: 3}\n";
    let d0 = desired(&app_yaml("ca-auth", base));
    let e = env(seed::from_desired(&d0, fast(), Clock::new().now())).await;
    assert!(pass(&e, &d0).await[0].converged());
    let d = desired(&app_yaml(
        "ca-auth",
        &format!("{base}  restartGeneration: 4\n"),
    ));
    let k = key("ca-auth");
    let app = e.client.get_app(&k).await.unwrap();
    let revisions = e.client.list_revisions(&k).await.unwrap();
    let planned = plan::plan_app(
        &d.apps[&k],
        plan::LiveApp {
            app: &app,
            revisions: Some(&revisions),
        },
        Clock::new().now(),
    );
    let restarts: Vec<&str> = planned
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Restart { revision, .. } => Some(revision.as_str()),
            _ => None,
        })
        .collect();
    assert!(restarts.len() >= 2, "two or more active revisions");
    let Action::MarkRestartPending { body, .. } = &planned.actions[0] else {
        panic!("the pending tag comes first: {:?}", planned.actions)
    };
    // The controller marks the restart, restarts the first revision, and dies.
    e.client.patch_app(&k, body).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await; // as the executor does
    e.client
        .revision_action(&k, restarts[0], RevisionAction::Restart)
        .await
        .unwrap();
    // Back up: the next pass restarts the others, not the first again, and records it.
    assert!(pass(&e, &d).await[0].converged());
    let log = sim(&e, "restarts").await;
    for r in &restarts {
        let n = log
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["revision"] == *r)
            .count();
        assert_eq!(n, 1, "{r} restarted once for generation 4: {log}");
    }
    let app = e.client.get_app(&k).await.unwrap();
    assert_eq!(
        app.tags.get(plan::RESTART_TAG).map(String::as_str),
        Some("4")
    );
    assert_eq!(
        plan::pending_restart(&app),
        None,
        "recorded: nothing pending"
    );
    assert!(pass(&e, &d).await[0].untouched());
}

#[tokio::test]
async fn a_failing_image_leaves_traffic_where_it_was_and_is_reported() {
    let d = desired(&app_yaml(
        "ca-bad",
        "  revisionMode: multiple\n  images: {bad: cr.example.io/bad:v9.9.9}\n  traffic:\n    - {latestRevision: true, weight: 100}\n",
    ));
    let mut world = seed::from_desired(&d, fast(), Clock::new().now());
    world
        .registries
        .get_mut("cr.example.io")
        .unwrap()
        .repositories
        .get_mut("bad")
        .unwrap()
        .tags
        .retain(|t| t.name != "v9.9.9");
    let e = env(world).await;
    let before = e.client.get_app(&key("ca-bad")).await.unwrap();
    let serving = before
        .properties
        .latest_ready_revision_name
        .clone()
        .unwrap();
    let report = pass(&e, &d).await.remove(0);
    let (AppState::Failing, Some(error)) =
        (report.state, report.error.as_ref().map(ToString::to_string))
    else {
        panic!("{report:?}")
    };
    assert!(
        error.contains("did not start") && error.contains("traffic stays"),
        "{error}"
    );
    let revisions = e.client.list_revisions(&key("ca-bad")).await.unwrap();
    let live_weight: i64 = revisions
        .iter()
        .filter(|r| r.is_running())
        .map(|r| r.properties.traffic_weight.unwrap_or(0))
        .sum();
    assert_eq!(live_weight, 100, "all traffic is on running revisions");
    assert!(
        revisions
            .iter()
            .any(|r| r.name == serving && r.properties.traffic_weight == Some(100))
    );
    assert_eq!(sim(&e, "outages").await, json!([]));
    // The next plan says what is wrong instead of trying again blindly.
    let p = plans(&e, &d).await.remove(0).1.unwrap();
    let Outcome::Blocked { reason } = p.outcome else {
        panic!("{p:?}")
    };
    assert!(reason.to_string().contains("failed to start"), "{reason}");
}

#[tokio::test]
async fn a_missing_app_and_a_suspended_one() {
    let d = desired(&format!(
        "{}---\n{}",
        app_yaml("ca-here", "  suspend: true\n  replicas: {min: 3, max: 4}\n"),
        app_yaml("ca-gone", "  replicas: {min: 1, max: 2}\n")
    ));
    let mut world = seed::from_desired(&d, fast(), Clock::new().now());
    world.apps.retain(|id, _| id.name == "ca-here");
    let e = env(world).await;
    let planned = plans(&e, &d).await;
    let here = planned
        .iter()
        .find(|(k, _)| k.name == "ca-here")
        .unwrap()
        .1
        .clone()
        .unwrap();
    assert_eq!(here.outcome, Outcome::Suspended);
    assert!(!here.actions.is_empty(), "the drift is reported");
    let reports = pass(&e, &d).await;
    let result = |n: &str| reports.iter().find(|r| r.app.name == n).unwrap().state;
    assert_eq!(result("ca-gone"), AppState::Missing);
    assert_eq!(result("ca-here"), AppState::Suspended);
    assert_eq!(sim(&e, "requests").await["armWrites"], 0, "nothing written");
}

#[tokio::test]
async fn a_mode_change_rides_in_the_template_patch_one_write_not_two() {
    let seeded = desired(&app_yaml(
        "ca-mode",
        "  revisionMode: single\n  images: {api: cr.example.io/api:v2.0.0}\n",
    ));
    let e = env(seed::from_desired(&seeded, fast(), Clock::new().now())).await;
    let d = desired(&app_yaml(
        "ca-mode",
        "  revisionMode: multiple\n  images: {api: cr.example.io/api:v2.0.0}\n  traffic: [{latestRevision: true, weight: 100}]\n",
    ));
    // The seed runs an older image, in Single mode; the desired state wants v2.0.0 in Multiple.
    let planned = plans(&e, &d).await.remove(0).1.unwrap();
    let writes: Vec<&Action> = planned.actions.iter().filter(|a| a.is_write()).collect();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    let Action::UpdateTemplate { body, .. } = writes[0] else {
        panic!("{writes:?}");
    };
    assert_eq!(
        body["properties"]["configuration"]["activeRevisionsMode"],
        "Multiple"
    );
    let reports = pass(&e, &d).await;
    assert!(reports[0].converged(), "{reports:?}");
    assert_eq!(sim(&e, "requests").await["armWrites"], 1, "one PATCH");
    let app = e.client.get_app(&key("ca-mode")).await.unwrap();
    assert!(app.is_multiple_mode());
    assert_eq!(sim(&e, "outages").await, json!([]));
    for (k, p) in plans(&e, &d).await {
        assert_eq!(p.unwrap().outcome, Outcome::InSync, "{k}");
    }
}

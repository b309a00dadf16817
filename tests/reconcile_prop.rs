//! Property: for random live apps (modes, revision histories, traffic pins, replicas, images)
//! and random valid desired specs, one pass of plan + execute against the simulator
//! - converges: a second plan is empty;
//! - causes no outage: the simulator's outage log stays empty;
//! - leaves every field outside the owned ones byte-identical;
//! - when the new image's revision never starts (one case in four), no traffic ever reaches it:
//!   `latestRevision` traffic that rides in the template's PATCH moves only to a ready
//!   revision, and everything else waits for it to run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aca_reconciler::apply::ApplyOptions;
use aca_reconciler::arm::{ArmClient, ArmConfig};
use aca_reconciler::live::{self, Observation};
use aca_reconciler::pass;
use aca_reconciler::plan::{self, Outcome};
use aca_reconciler::simulator::seed;
use aca_reconciler::simulator::store::{Config, LroMode};
use aca_reconciler::spec::{self, DesiredState, LoadOptions};
use aca_reconciler::state::AppState;
use aca_reconciler::time::Clock;
use common::unowned;
use proptest::prelude::*;
use serde_json::{Value, json};

const SUB: &str = "00000000-0000-0000-0000-0000000000cd";

fn desired(yaml: &str) -> DesiredState {
    let file = spec::load::parse_bytes(Path::new("p.yaml"), Path::new(""), yaml.as_bytes());
    let loaded = spec::validate::assemble(&[file], &LoadOptions::default());
    assert!(
        loaded.diagnostics.is_empty(),
        "{yaml}\n{:?}",
        loaded.diagnostics
    );
    loaded.state
}

/// What the seed (the live app) looks like.
#[derive(Debug, Clone)]
struct Live {
    multiple: bool,
    keep: u32,
    tag: (u32, u32, u32),
    replicas: (u32, u32),
}

/// The desired spec the pass is asked to reach.
#[derive(Debug, Clone)]
struct Target {
    mode: Option<bool>,
    new_image: bool,
    replicas: Option<(u32, u32)>,
    traffic: u8, // 0 none, 1 latest 100, 2 pin revision k, 3 split revision k / latest
    revision_index: usize,
    split: u32,
    keep: Option<u32>,
    restart: Option<u64>,
    /// The new image's revision never becomes healthy.
    fails: bool,
}

fn live() -> impl Strategy<Value = Live> {
    (
        any::<bool>(),
        1u32..7,
        (1u32..4, 0u32..10, 0u32..10),
        (0u32..4, 1u32..12),
    )
        .prop_map(|(multiple, keep, tag, (min, extra))| Live {
            multiple,
            keep,
            tag,
            replicas: (min, min + extra),
        })
}

fn target() -> impl Strategy<Value = Target> {
    (
        prop::option::of(any::<bool>()),
        any::<bool>(),
        prop::option::of((0u32..5, 1u32..20)),
        0u8..4,
        0usize..12,
        1u32..100,
        prop::option::of(1u32..7),
        prop::option::of(0u64..3),
        prop::bool::weighted(0.25),
    )
        .prop_map(
            |(mode, new_image, replicas, traffic, revision_index, split, keep, restart, fails)| {
                Target {
                    mode,
                    new_image,
                    replicas: replicas.map(|(min, extra)| (min, (min + extra).min(1000))),
                    traffic,
                    revision_index,
                    split,
                    keep,
                    restart,
                    fails,
                }
            },
        )
}

async fn case(l: Live, t: Target) -> Result<(), TestCaseError> {
    let (a, b, c) = l.tag;
    let image = |tag: &str| format!("cr.example.io/api:{tag}");
    let live_yaml = format!(
        "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {{name: ca-prop, resourceGroup: rg-p, subscription: {SUB}}}\nspec:\n  revisionMode: {}\n  images: {{api: {}}}\n  replicas: {{min: {}, max: {}}}\n  revisionRetention: {{keepActive: {}}}\n",
        if l.multiple { "multiple" } else { "single" },
        image(&format!("v{a}.{b}.{c}")),
        l.replicas.0,
        l.replicas.1,
        l.keep
    );
    let mut world = seed::from_desired(
        &desired(&live_yaml),
        Config {
            lro_mode: LroMode::Async,
            lro_ms: 50,
            lro_retry_after_s: 0,
            revision_ready_ms: 100,
            ..Config::default()
        },
        Clock::new().now(),
    );
    let fails = t.fails && t.new_image;
    if fails {
        world.apps.values_mut().next().unwrap().fail_next_revisions = 1;
    }
    let record = world.apps.values().next().unwrap().clone();
    let live_multiple =
        record.app["properties"]["configuration"]["activeRevisionsMode"] == "Multiple";
    let names: Vec<String> = record.revisions.iter().map(|r| r.name.clone()).collect();
    // The new image exists in the registry, so the new revision starts.
    let new_tag = format!("v{}.0.0", a + 1);
    if let Some(repo) = world
        .registries
        .get_mut("cr.example.io")
        .and_then(|r| r.repositories.get_mut("api"))
    {
        let digest = format!("sha256:{:064x}", 7);
        repo.manifests.insert(digest.clone());
        repo.tags.push(aca_reconciler::simulator::store::Tag {
            name: new_tag.clone(),
            digest,
            created: 0,
            last_update: 0,
            delete_enabled: true,
            write_enabled: true,
        });
    }

    let multiple = t.mode.unwrap_or(live_multiple);
    let mut lines = String::new();
    if let Some(m) = t.mode {
        lines += &format!(
            "  revisionMode: {}\n",
            if m { "multiple" } else { "single" }
        );
    }
    let current = record.app["properties"]["template"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    lines += &format!(
        "  images: {{api: {}}}\n",
        if t.new_image {
            image(&new_tag)
        } else {
            current
        }
    );
    if let Some((min, max)) = t.replicas {
        lines += &format!("  replicas: {{min: {min}, max: {max}}}\n");
    }
    let pick = &names[t.revision_index % names.len()];
    let traffic_ok = multiple;
    match (t.traffic, traffic_ok) {
        (1, true) => lines += "  traffic:\n    - {latestRevision: true, weight: 100}\n",
        (2, true) => lines += &format!("  activeRevision: {pick}\n"),
        (3, true) => {
            lines += &format!(
                "  traffic:\n    - {{revision: {pick}, weight: {}}}\n    - {{latestRevision: true, weight: {}}}\n",
                t.split,
                100 - t.split
            )
        }
        _ => {}
    }
    if let Some(k) = t.keep {
        lines += &format!("  revisionRetention: {{keepActive: {k}}}\n");
    }
    if let Some(g) = t.restart {
        lines += &format!("  restartGeneration: {g}\n");
    }
    let target_yaml = format!(
        "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {{name: ca-prop, resourceGroup: rg-p, subscription: {SUB}}}\nspec:\n{lines}"
    );
    let d = desired(&target_yaml);

    let h = common::start_sim(world).await;
    let mut config = ArmConfig::new(&h.base_url);
    config.poll_interval = Duration::from_millis(30);
    let client = ArmClient::new(config, Arc::new(common::tokens(&h.base_url))).unwrap();
    let before = h.sim.world().apps.values().next().unwrap().app.clone();
    let options = ApplyOptions {
        poll_interval: Duration::from_millis(30),
        revision_timeout: Duration::from_secs(5),
        ..ApplyOptions::default()
    };
    let snapshot = live::snapshot(&client, &d, 4).await;
    let report = pass::converge(&client, &d, snapshot, &options)
        .await
        .remove(0);
    if std::env::var_os("PROP_DEBUG").is_some() {
        eprintln!("{target_yaml}\nnames {names:?}\n{report:#?}");
    }
    if fails {
        prop_assert!(
            report.state == AppState::Failing,
            "{target_yaml}\n{report:?}"
        );
    } else {
        prop_assert!(
            report.state == AppState::InSync,
            "{target_yaml}\n{report:?}"
        );
    }

    let again = live::snapshot(&client, &d, 4).await;
    let Some(Observation::Found { app, revisions }) = again.apps.values().next() else {
        panic!()
    };
    let spec = d.apps.values().next().unwrap();
    if fails {
        // Its latest revision failed: the plan stops there, traffic where it was.
        let outages: Value = reqwest::get(format!("{}/_sim/outages", h.base_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        prop_assert_eq!(&outages, &json!([]), "{}", target_yaml);
        return Ok(());
    }
    let replan = plan::plan_app(
        spec,
        plan::LiveApp {
            app,
            revisions: revisions.as_deref(),
        },
        0,
    );
    prop_assert_eq!(
        &replan.outcome,
        &Outcome::InSync,
        "{}\nsecond plan: {:?}",
        target_yaml,
        replan.actions
    );

    let outages: Value = reqwest::get(format!("{}/_sim/outages", h.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    prop_assert_eq!(&outages, &json!([]), "{}", target_yaml);
    let after = h.sim.world().apps.values().next().unwrap().app.clone();
    prop_assert_eq!(unowned(before), unowned(after), "{}", target_yaml);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn one_pass_converges_safely_for_any_live_app_and_spec(l in live(), t in target()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(case(l, t))?;
    }
}

/// The case the property must never miss: weight for a revision that is not active.
#[test]
fn pinning_an_inactive_revision_from_single_mode() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let l = Live {
        multiple: false,
        keep: 2,
        tag: (1, 2, 3),
        replicas: (1, 3),
    };
    let t = Target {
        mode: Some(true),
        new_image: false,
        replicas: None,
        traffic: 2,
        revision_index: 0,
        split: 50,
        keep: Some(2),
        restart: None,
        fails: false,
    };
    rt.block_on(case(l, t)).unwrap();
}

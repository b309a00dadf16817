//! Waiting in bulk costs no correctness: one list of a resource group answers the waits of its
//! apps (`apply::bulk`), and each wait ends on the same outcome as when every app looks at its
//! own operation and revision. Three apps of one group, each with a template change (and
//! `latestRevision` traffic riding in its PATCH): one whose revision becomes ready, two whose
//! revisions fail, one whose operation fails. Run twice on fresh simulators over real HTTP,
//! once resuming each wait on its own and once through the group's list.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use aca_reconciler::apply::{self, ApplyOptions, Reconcile, Start};
use aca_reconciler::arm::{ArmClient, ArmConfig};
use aca_reconciler::live;
use aca_reconciler::pass;
use aca_reconciler::simulator::seed;
use aca_reconciler::spec::{self, DesiredState, LoadOptions};
use aca_reconciler::time::Clock;
use common::{ArmTestClient, start_sim};
use serde_json::Value;

const SUB: &str = "00000000-0000-0000-0000-0000000000bb";
const RG: &str = "rg-bulk";

fn desired() -> DesiredState {
    let mut yaml = String::new();
    for name in [
        "ca-ready",
        "ca-revision-fails",
        "ca-revision-fails-too",
        "ca-operation-fails",
    ] {
        yaml.push_str(&format!(
            "---\napiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {{name: {name}, resourceGroup: {RG}, subscription: {SUB}}}\nspec:\n  revisionMode: multiple\n  images: {{api: crbulk.azurecr.io/api:v2.0.0}}\n  replicas: {{min: 2, max: 6}}\n  traffic: [{{latestRevision: true, weight: 100}}]\n  revisionRetention: {{keepActive: 5}}\n"
        ));
    }
    let file = spec::load::parse_bytes(Path::new("t.yaml"), Path::new(""), yaml.as_bytes());
    let loaded = spec::validate::assemble(&[file], &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    loaded.state
}

fn options() -> ApplyOptions {
    ApplyOptions {
        poll_interval: Duration::from_millis(50),
        revision_timeout: Duration::from_secs(10),
        ..ApplyOptions::default()
    }
}

/// Each app's outcome (state, error), and the simulator's read counts by operation.
async fn converge(bulk: bool) -> (BTreeMap<String, (String, String)>, Value) {
    let d = desired();
    let world = seed::from_desired(&d, common::fast_config(100, 200), Clock::new().now());
    let h = start_sim(world).await;
    let sim = ArmTestClient::new(&h);
    // Two whose revisions fail, so that the group still has two waits when they end: one wait
    // alone is resumed with its own reads.
    sim.inject("revisionFails", SUB, RG, "ca-revision-fails")
        .await;
    sim.inject("revisionFails", SUB, RG, "ca-revision-fails-too")
        .await;
    sim.inject("operationFails", SUB, RG, "ca-operation-fails")
        .await;
    let mut config = ArmConfig::new(&h.base_url);
    config.poll_interval = Duration::from_millis(50);
    let client = ArmClient::new(config, Arc::new(common::tokens(&h.base_url))).unwrap();
    let options = options();
    let budget = AtomicUsize::new(usize::MAX);

    let live = live::lists_since(
        &client,
        &d,
        8,
        &BTreeMap::new(),
        &std::collections::BTreeSet::new(),
    )
    .await;
    let (_, mut work) = pass::split(&d, live, &BTreeMap::new());
    let mut outcome = BTreeMap::new();
    for _round in 0..200 {
        let mut waits = Vec::new();
        let mut after = Duration::ZERO;
        for w in work {
            let spec = w.spec.clone();
            let r = apply::reconcile(&client, w, &options, &budget, Clock::new()).await;
            match r.requeue {
                Some(q) => {
                    after = after.max(q.after);
                    waits.push((spec, q.wait));
                }
                None => {
                    let error = r.error.map(|e| e.to_string()).unwrap_or_default();
                    outcome.insert(r.app.name.clone(), (format!("{:?}", r.state), error));
                }
            }
        }
        if waits.is_empty() {
            let c = sim.sim_json("requests").await;
            return (outcome, c["byOperation"].clone());
        }
        tokio::time::sleep(after).await;
        work = if bulk {
            pass::resume_group(&client, SUB, RG, waits).await
        } else {
            waits
                .into_iter()
                .map(|(spec, wait)| Reconcile {
                    spec,
                    start: Start::Resume(wait),
                    fingerprint: None,
                    spread: false,
                })
                .collect()
        };
    }
    panic!("the waits never ended");
}

fn n(c: &Value, op: &str) -> u64 {
    c[op].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn a_group_list_wait_and_a_per_app_wait_reach_the_same_outcome() {
    let (per_app, per_app_reads) = converge(false).await;
    let (listed, listed_reads) = converge(true).await;
    eprintln!("per app: {per_app:#?}\n{per_app_reads:#}\nlisted: {listed:#?}\n{listed_reads:#}");
    assert_eq!(per_app, listed, "the same outcome either way");
    assert_eq!(per_app["ca-ready"].0, "InSync", "{per_app:?}");
    assert!(
        per_app["ca-revision-fails"].1.contains("did not start"),
        "{per_app:?}"
    );
    assert!(
        per_app["ca-operation-fails"].1.contains("operation failed"),
        "{per_app:?}"
    );
    // The group's list answered waits that the per-app looks answer one read each.
    let lists = "ContainerApps_ListByResourceGroup";
    let revision = "ContainerAppsRevisions_GetRevision";
    assert!(
        n(&listed_reads, lists) > n(&per_app_reads, lists),
        "the listed run used the group's list"
    );
    assert!(
        n(&listed_reads, revision) < n(&per_app_reads, revision),
        "and read fewer single revisions: {} vs {}",
        n(&listed_reads, revision),
        n(&per_app_reads, revision)
    );
}

//! Registry retention against the simulator: what is deleted, and above all what never is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use aca_reconciler::acr::AcrClient;
use aca_reconciler::arm::{ArmClient, ArmConfig};
use aca_reconciler::retention;
use aca_reconciler::simulator::seed;
use aca_reconciler::simulator::store::{Config, LroMode, Tag, World};
use aca_reconciler::spec::{self, DesiredState, LoadOptions};
use aca_reconciler::time::Clock;
use common::{Handle, start_sim};
use serde_json::json;

const SUB: &str = "00000000-0000-0000-0000-0000000000ef";
const REG: &str = "cr.example.io";
const DAY: i64 = 86_400_000;

fn desired(yaml: &str) -> DesiredState {
    let file = spec::load::parse_bytes(Path::new("r.yaml"), Path::new(""), yaml.as_bytes());
    let loaded = spec::validate::assemble(&[file], &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    loaded.state
}

fn yaml(keep_last: u32, extra: &str) -> String {
    format!(
        "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {{name: ca-api, resourceGroup: rg-r, subscription: {SUB}}}\nspec:\n  revisionMode: multiple\n  images: {{api: {REG}/api:v2.0.0}}\n  revisionRetention: {{keepActive: 3}}\n---\napiVersion: aca-reconciler/v1\nkind: RegistryRetention\nmetadata: {{name: r}}\nspec:\n  registry: {REG}\n  repositories: [api]\n  keepLast: {keep_last}\n{extra}"
    )
}

struct Env {
    h: Handle,
    arm: ArmClient,
    acr: AcrClient,
}

async fn env(world: World) -> Env {
    let h = start_sim(world).await;
    let tokens = Arc::new(common::tokens(&h.base_url));
    let arm = ArmClient::new(ArmConfig::new(&h.base_url), tokens.clone()).unwrap();
    let acr = AcrClient::new(
        tokens,
        &[(REG.into(), format!("{}/registries/{REG}", h.base_url))],
    )
    .unwrap();
    Env { h, arm, acr }
}

fn seeded(d: &DesiredState) -> World {
    seed::from_desired(
        d,
        Config {
            lro_mode: LroMode::Sync,
            ..Config::default()
        },
        Clock::new().now(),
    )
}

/// Every image reference that any revision of any app runs.
fn images_in_use(w: &World) -> BTreeSet<String> {
    w.apps
        .values()
        .flat_map(|a| a.revisions.iter())
        .flat_map(|r| {
            r.template["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["image"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn tags_left(e: &Env) -> BTreeSet<String> {
    e.h.sim.world().registries[REG].repositories["api"]
        .tags
        .iter()
        .map(|t| t.name.clone())
        .collect()
}

#[tokio::test]
async fn keeps_the_last_n_across_pages_and_every_tag_a_revision_runs_even_inactive() {
    let d = desired(&yaml(3, ""));
    let mut world = seeded(&d);
    // 300 old builds: three pages of 100.
    let repo = world
        .registries
        .get_mut(REG)
        .unwrap()
        .repositories
        .get_mut("api")
        .unwrap();
    for i in 0..300 {
        let digest = format!("sha256:{:064x}", 10_000 + i);
        repo.manifests.insert(digest.clone());
        repo.tags.push(Tag {
            name: format!("ci-{i}"),
            digest,
            created: i * 1000,
            last_update: i * 1000,
            delete_enabled: true,
            write_enabled: true,
        });
    }
    let in_use = images_in_use(&world);
    let oldest_revision = &world.apps.values().next().unwrap().revisions[0];
    assert!(!oldest_revision.active, "the oldest revision is inactive");
    let e = env(world).await;
    let plan = retention::plan(&e.arm, &e.acr, &d, Clock::new().now(), 10_000, 4).await;
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let before = tags_left(&e);
    let report = retention::apply(&e.acr, &plan).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.tags_deleted >= 300);
    let after = tags_left(&e);
    for image in &in_use {
        let tag = image.rsplit(':').next().unwrap();
        assert!(
            after.contains(tag),
            "{image} is run by a revision and must survive"
        );
    }
    // The 3 newest by last update stay, and the desired image.
    assert!(after.contains("v2.0.0"));
    let locked: Vec<String> = e.h.sim.world().registries[REG].repositories["api"]
        .tags
        .iter()
        .filter(|t| !t.delete_enabled)
        .map(|t| t.name.clone())
        .collect();
    assert!(
        !locked.is_empty() && locked.iter().all(|l| after.contains(l)),
        "locked tags survive"
    );
    assert_eq!(after.len(), before.len() - report.tags_deleted);
    let pages = reqwest::get(format!("{}/_sim/requests", e.h.base_url))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert!(
        pages["byOperation"]["ACR_GetTags"].as_u64().unwrap() >= 4,
        "several Link pages were followed"
    );
}

#[tokio::test]
async fn a_digest_pinned_image_survives_under_every_tag() {
    let d = desired(&yaml(1, ""));
    let mut world = seeded(&d);
    // Two old tags point at one image; an app's revision runs that image by digest.
    let repo = world
        .registries
        .get_mut(REG)
        .unwrap()
        .repositories
        .get_mut("api")
        .unwrap();
    let digest = format!("sha256:{:064x}", 4242);
    repo.manifests.insert(digest.clone());
    for name in ["pinned-a", "pinned-b"] {
        repo.tags.push(Tag {
            name: name.into(),
            digest: digest.clone(),
            created: 0,
            last_update: 0,
            delete_enabled: true,
            write_enabled: true,
        });
    }
    let app = world.apps.values_mut().next().unwrap();
    app.revisions[0].template["containers"][0]["image"] = json!(format!("{REG}/api@{digest}"));
    let e = env(world).await;
    let plan = retention::plan(&e.arm, &e.acr, &d, Clock::new().now(), 10_000, 4).await;
    retention::apply(&e.acr, &plan).await;
    let after = tags_left(&e);
    assert!(after.contains("pinned-a") && after.contains("pinned-b"));
    let why: Vec<String> = plan.repositories[0]
        .protected
        .iter()
        .map(|(t, k)| format!("{t} {k:?}"))
        .collect();
    assert!(
        why.iter().any(|w| w.starts_with("pinned-a DigestInUse")),
        "{why:?}"
    );
}

#[tokio::test]
async fn a_failed_read_of_one_apps_revisions_deletes_nothing() {
    let d = desired(&yaml(1, ""));
    let e = env(seeded(&d)).await;
    let rule = json!({"operation": "ContainerAppsRevisions_ListRevisions", "fault": {"kind": "status", "status": 403, "code": "AuthorizationFailed"}});
    reqwest::Client::new()
        .post(format!("{}/_sim/faults", e.h.base_url))
        .json(&rule)
        .send()
        .await
        .unwrap();
    let before = tags_left(&e);
    let plan = retention::plan(&e.arm, &e.acr, &d, Clock::new().now(), 10_000, 4).await;
    assert_eq!(plan.deletions(), 0);
    assert!(
        plan.errors[0].contains("cannot list the revisions of ca-api")
            && plan.errors[0].contains("no tag is deleted"),
        "{:?}",
        plan.errors
    );
    let report = retention::apply(&e.acr, &plan).await;
    assert_eq!(report.tags_deleted, 0);
    assert_eq!(tags_left(&e), before);
}

#[tokio::test]
async fn delete_images_removes_a_manifest_only_when_no_kept_tag_shares_it() {
    let d = desired(&yaml(2, "  deleteImages: true\n"));
    let mut world = seeded(&d);
    let repo = world
        .registries
        .get_mut(REG)
        .unwrap()
        .repositories
        .get_mut("api")
        .unwrap();
    repo.tags.retain(|t| !t.name.starts_with("build-"));
    let shared = format!("sha256:{:064x}", 1);
    let alone = format!("sha256:{:064x}", 2);
    repo.manifests.extend([shared.clone(), alone.clone()]);
    let newest = repo.tags.iter().map(|t| t.last_update).max().unwrap();
    // "old-shared" shares its image with "new-shared", which is kept as one of the newest.
    for (name, digest, at) in [
        ("new-shared", &shared, newest + DAY),
        ("old-shared", &shared, 0),
        ("old-alone", &alone, 1),
    ] {
        repo.tags.push(Tag {
            name: name.into(),
            digest: digest.clone(),
            created: at,
            last_update: at,
            delete_enabled: true,
            write_enabled: true,
        });
    }
    let e = env(world).await;
    let plan = retention::plan(&e.arm, &e.acr, &d, Clock::new().now(), 10_000, 4).await;
    let r = &plan.repositories[0];
    assert!(
        r.delete.iter().any(|t| t.name == "old-shared")
            && r.delete.iter().any(|t| t.name == "old-alone")
    );
    assert!(
        r.delete_manifests.contains(&alone),
        "{:?}",
        r.delete_manifests
    );
    assert!(
        !r.delete_manifests.contains(&shared),
        "a kept tag still points at it"
    );
    retention::apply(&e.acr, &plan).await;
    assert_eq!(
        r.kept,
        tags_left(&e).len(),
        "what the plan says it keeps is what is left"
    );
    let w = e.h.sim.world();
    let manifests = &w.registries[REG].repositories["api"].manifests;
    assert!(manifests.contains(&shared) && !manifests.contains(&alone));
}

#[tokio::test]
async fn the_deletion_cap_holds_across_passes() {
    let d = desired(&yaml(1, ""));
    let e = env(seeded(&d)).await;
    let before = tags_left(&e).len();
    let plan = retention::plan(&e.arm, &e.acr, &d, Clock::new().now(), 5, 4).await;
    assert_eq!(plan.deletions(), 5);
    assert!(plan.held_back() > 0);
    let report = retention::apply(&e.acr, &plan).await;
    assert_eq!(report.tags_deleted, 5);
    assert_eq!(tags_left(&e).len(), before - 5);
    assert_eq!(
        plan.repositories[0].kept,
        before - 5,
        "the held-back tags are kept"
    );
    let lines = retention::describe(&plan, &d.registries).join("\n");
    assert!(
        lines.contains("held back by the per-pass deletion cap"),
        "{lines}"
    );
}

#[tokio::test]
async fn a_run_reuses_what_it_read_of_revisions_until_an_app_has_a_new_one() {
    let d = desired(&yaml(2, ""));
    let e = env(seeded(&d)).await;
    let cache = retention::RevisionImages::default();
    let revision_lists = || async {
        let v: serde_json::Value = reqwest::get(format!("{}/_sim/requests", e.h.base_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["byOperation"]["ContainerAppsRevisions_ListRevisions"]
            .as_u64()
            .unwrap_or(0)
    };
    let now = Clock::new().now();
    let first = retention::plan_with(&e.arm, &e.acr, &d, now, 10_000, 4, &cache).await;
    assert_eq!(revision_lists().await, 1);
    let again = retention::plan_with(&e.arm, &e.acr, &d, now, 10_000, 4, &cache).await;
    assert_eq!(revision_lists().await, 1, "nothing new: no revision read");
    let names = |p: &retention::RetentionPlan| {
        p.repositories[0]
            .delete
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&first), names(&again), "the same protected set");
    assert!(!names(&first).is_empty());

    // A new revision (someone deploys an old tag by hand): read again, and that tag is kept.
    let old = names(&first)[0].clone();
    let t = common::ArmTestClient::new(&e.h);
    let r = t
        .patch(
            &t.app_url(SUB, "rg-r", "ca-api"),
            json!({"properties": {"template": {"containers": [{"name": "api", "image": format!("{REG}/api:{old}")}]}}}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let after = retention::plan_with(&e.arm, &e.acr, &d, now, 10_000, 4, &cache).await;
    assert_eq!(revision_lists().await, 2);
    assert!(!names(&after).contains(&old), "{:?}", names(&after));
}

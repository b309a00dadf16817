//! Entry points for fuzzing: each hands arbitrary bytes to the code that reads untrusted input,
//! the same functions the controller calls, and goes on to the decisions made from what they
//! return. None may panic, whatever the bytes; that is the whole check (the planner also
//! checks its own invariants, and refuses a plan that breaks one).
//!
//! Used by the cargo-fuzz targets under `fuzz/` (libFuzzer, nightly) and by
//! `tests/parser_fuzz.rs` (proptest, on stable, in every `cargo test`).

use std::path::Path;
use std::sync::OnceLock;

use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::arm::models::{ContainerApp, Revision};
use crate::plan::{self, render};
use crate::spec::{AppSpec, LoadOptions, RegistryRetention};

const APP_PATH: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca-fuzz";
const TAGS_URL: &str = "https://cr.example.io/acr/v1/web/_tags?orderby=timedesc&n=100";
const NOW: i64 = 1_795_000_000_000;

/// A desired-state file: read, validated, and (if valid) planned against the example app.
pub fn desired_state(data: &[u8]) {
    let file = crate::spec::load::parse_bytes(Path::new("fuzz.yaml"), Path::new(""), data);
    let loaded = crate::spec::validate::assemble(&[file], &LoadOptions::default());
    for d in &loaded.diagnostics {
        let _ = d.to_string();
    }
    let (app, revisions) = example_live();
    for spec in loaded.state.apps.values() {
        plan_all(spec, app, Some(revisions));
    }
}

/// An ARM response body, read as every kind of ARM answer the controller parses; an app or an
/// `{"app": ..., "revisions": [...]}` pair is also planned against several specs.
pub fn arm_response(data: &[u8]) {
    if let Ok((items, _next)) = crate::arm::parse_page(APP_PATH, data) {
        for item in items {
            let _ = serde_json::from_str::<Revision>(item.get());
            if let Ok(app) = ContainerApp::from_raw(item) {
                for spec in specs() {
                    plan_all(spec, &app, None);
                }
            }
        }
    }
    let _ = crate::arm::parse_replicas(APP_PATH, data);
    let _ = crate::arm::parse_operation(APP_PATH, data);
    let _ = crate::arm::parse_error_body(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::time::parse(text);
        if let Ok(v) = HeaderValue::from_str(text) {
            let mut headers = HeaderMap::new();
            headers.insert("retry-after", v);
            let _ = crate::arm::retry_after(&headers);
        }
        if let Ok(raw) = RawValue::from_string(text.to_owned())
            && let Ok(app) = ContainerApp::from_raw(raw)
        {
            for spec in specs() {
                plan_all(spec, &app, Some(&[]));
            }
        }
    }
    #[derive(Deserialize)]
    struct Live {
        app: Box<RawValue>,
        #[serde(default)]
        revisions: Vec<Revision>,
    }
    if let Ok(live) = serde_json::from_slice::<Live>(data)
        && let Ok(app) = ContainerApp::from_raw(live.app)
    {
        for spec in specs() {
            plan_all(spec, &app, Some(&live.revisions));
        }
    }
}

/// An ACR response body (tags, catalog, token exchange), and the same bytes as a `Link`
/// header; a tag list is also put through retention's decision.
pub fn acr_response(data: &[u8]) {
    if let Ok(tags) = crate::acr::parse_tags(TAGS_URL, data) {
        let protected = crate::retention::Protected::default();
        for policy in retention_policies() {
            let mut cap = 100;
            let _ =
                crate::retention::plan_repository(policy, "web", &tags, &protected, NOW, &mut cap);
        }
    }
    let _ = crate::acr::parse_catalog(TAGS_URL, data);
    let _ = crate::acr::parse_token("/oauth2/token", data, "access_token");
    let _ = crate::arm::parse_error_body(data);
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert("link", v);
        let _ = crate::acr::next_page(TAGS_URL, &headers);
    }
}

fn plan_all(spec: &AppSpec, app: &ContainerApp, revisions: Option<&[Revision]>) {
    let planned = plan::plan_app(spec, plan::LiveApp { app, revisions }, NOW);
    for action in &planned.actions {
        let _ = render::action_json(action);
    }
}

/// Specs that between them reach every step of the planner.
fn specs() -> &'static [AppSpec] {
    static SPECS: OnceLock<Vec<AppSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let docs = [
            "spec:\n  revisionMode: single\n  images: {app: cr.example.io/app:1.2.3}\n  replicas: {min: 1, max: 3}\n  restartGeneration: 2\n",
            "spec:\n  revisionMode: multiple\n  images: {app: cr.example.io/app:1.2.4, sidecar: cr.example.io/side@sha256:0000000000000000000000000000000000000000000000000000000000000000}\n  traffic:\n    - {latestRevision: true, weight: 10}\n    - {revision: ca-fuzz--v1, weight: 90}\n  revisionRetention: {keepActive: 2}\n  restartGeneration: 5\n",
            "spec:\n  revisionMode: multiple\n  activeRevision: ca-fuzz--v1\n  revisionRetention: {keepActive: 1}\n",
            "spec:\n  suspend: true\n  replicas: {min: 0, max: 1}\n",
        ];
        docs.iter()
            .filter_map(|spec| {
                let text = format!(
                    "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {{name: ca-fuzz, resourceGroup: rg, subscription: 00000000-0000-0000-0000-00000000f022}}\n{spec}"
                );
                let file = crate::spec::load::parse_bytes(
                    Path::new("f.yaml"),
                    Path::new(""),
                    text.as_bytes(),
                );
                let loaded = crate::spec::validate::assemble(&[file], &LoadOptions::default());
                loaded.state.apps.into_values().next()
            })
            .collect()
    })
}

fn retention_policies() -> &'static [RegistryRetention] {
    static POLICIES: OnceLock<Vec<RegistryRetention>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let text = "apiVersion: aca-reconciler/v1\nkind: RegistryRetention\nmetadata: {name: r}\nspec:\n  registry: cr.example.io\n  repositories: [web]\n  keepLast: 2\n  olderThan: 7d\n  deleteImages: true\n";
        let file =
            crate::spec::load::parse_bytes(Path::new("r.yaml"), Path::new(""), text.as_bytes());
        crate::spec::validate::assemble(&[file], &LoadOptions::default())
            .state
            .registries
    })
}

/// A live app with two revisions, for desired-state inputs.
fn example_live() -> (&'static ContainerApp, &'static [Revision]) {
    static LIVE: OnceLock<(ContainerApp, Vec<Revision>)> = OnceLock::new();
    let (app, revisions) = LIVE.get_or_init(|| {
        let app = serde_json::json!({
            "name": "ca-fuzz",
            "tags": {"aca-reconciler-restart-generation": "1"},
            "properties": {
                "provisioningState": "Succeeded",
                "latestRevisionName": "ca-fuzz--v2",
                "latestReadyRevisionName": "ca-fuzz--v2",
                "configuration": {"activeRevisionsMode": "Multiple", "ingress": {"traffic": [{"latestRevision": true, "weight": 100}]}},
                "template": {"containers": [{"name": "app", "image": "cr.example.io/app:1.0.0"}], "scale": {"minReplicas": 1, "maxReplicas": 2}}
            }
        });
        let revision = |name: &str, active: bool| {
            serde_json::from_value::<Revision>(serde_json::json!({
                "name": name,
                "properties": {"active": active, "runningState": "Running", "provisioningState": "Provisioned", "healthState": "Healthy", "createdTime": "2026-01-01T00:00:00+00:00", "trafficWeight": if active { 100 } else { 0 }}
            }))
            .unwrap_or_default()
        };
        (
            ContainerApp::from_value(app).unwrap_or_default(),
            vec![revision("ca-fuzz--v1", false), revision("ca-fuzz--v2", true)],
        )
    });
    (app, revisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_inputs_are_what_they_claim() {
        assert_eq!(specs().len(), 4, "every spec of the fuzz set is valid");
        assert_eq!(retention_policies().len(), 1);
        let (app, revisions) = example_live();
        assert_eq!(app.name, "ca-fuzz");
        assert_eq!(revisions.len(), 2);
        assert!(revisions[1].properties.active);
    }
}

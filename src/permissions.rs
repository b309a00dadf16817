//! `permissions`: the least-privilege Azure roles for what the desired state asks of the
//! controller, as Azure role-definition JSON with the scopes to assign them at.
//!
//! The actions are exactly those of the calls the clients make ([`action_of`] maps every route
//! of [`crate::arm::metrics::route`]); the scopes come from the documents:
//! - **apps**: read, update, revision activate/deactivate/restart, on each managed resource group;
//! - **reader**: read apps and revisions, and follow long-running operations, on each
//!   subscription: operation-status URLs are subscription-scoped (N§1.2; without this the
//!   controller falls back to polling the app), and registry retention reads every app's
//!   revisions in the subscriptions the documents name;
//! - **metrics**: read Azure Monitor metrics, only on the apps whose rollout analysis reads
//!   them ([`crate::rollout::AnalysisSpec::reads_metrics`]; probes alone need nothing);
//! - **registry**: read and delete tags, on each registry that a `RegistryRetention` names. Both
//!   the RBAC-mode actions (what `AcrPull` and `AcrDelete` hold) and the ABAC-mode data actions
//!   are listed: ABAC-mode registries honour only the latter.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::spec::DesiredState;

const APPS_READ: &str = "Microsoft.App/containerApps/read";
const APPS_WRITE: &str = "Microsoft.App/containerApps/write";
const REVISIONS_READ: &str = "Microsoft.App/containerApps/revisions/read";
const REPLICAS_READ: &str = "Microsoft.App/containerApps/revisions/replicas/read";
const ACTIVATE: &str = "Microsoft.App/containerApps/revisions/activate/action";
const DEACTIVATE: &str = "Microsoft.App/containerApps/revisions/deactivate/action";
const RESTART: &str = "Microsoft.App/containerApps/revisions/restart/action";
const OPERATION_RESULTS: &str = "Microsoft.App/locations/containerAppOperationResults/read";
const OPERATION_STATUSES: &str = "Microsoft.App/locations/containerAppOperationStatuses/read";
// What the Monitoring Reader role grants for `Metrics - List` (learn.microsoft.com
// azure-monitor/essentials/rest-api-walkthrough: "Monitoring Reader"; the operation's action).
const METRICS_READ: &str = "Microsoft.Insights/metrics/read";
// RBAC-mode registries: AcrPull's and AcrDelete's actions (learn.microsoft.com built-in roles).
const ACR_PULL: &str = "Microsoft.ContainerRegistry/registries/pull/read";
const ACR_DELETE: &str = "Microsoft.ContainerRegistry/registries/artifacts/delete";
// ABAC-mode registries: repository data actions (assumed from the "Container Registry
// Repository Reader/Contributor" roles of learn.microsoft.com container-registry-rbac-abac).
const ACR_CATALOG: &str = "Microsoft.ContainerRegistry/registries/catalog/read";
const ACR_METADATA_READ: &str = "Microsoft.ContainerRegistry/registries/repositories/metadata/read";
const ACR_CONTENT_READ: &str = "Microsoft.ContainerRegistry/registries/repositories/content/read";
const ACR_METADATA_DELETE: &str =
    "Microsoft.ContainerRegistry/registries/repositories/metadata/delete";
const ACR_CONTENT_DELETE: &str =
    "Microsoft.ContainerRegistry/registries/repositories/content/delete";

/// The Azure actions one route of the clients needs (`None`: a route this module does not know,
/// which the tests forbid).
pub fn action_of(route: &str) -> Option<&'static [&'static str]> {
    Some(match route {
        "containerApps.list" | "containerApps.get" => &[APPS_READ],
        "containerApps.update" => &[APPS_WRITE],
        "revisions.list" | "revisions.get" => &[REVISIONS_READ],
        "replicas.list" => &[REPLICAS_READ],
        "revisions.activate" => &[ACTIVATE],
        "revisions.deactivate" => &[DEACTIVATE],
        "revisions.restart" => &[RESTART],
        "operations.get" => &[OPERATION_RESULTS, OPERATION_STATUSES],
        "metrics.list" => &[METRICS_READ],
        "acr.token" | "acr.listTags" | "acr.listRepositories" => &[ACR_PULL],
        "acr.deleteTag" | "acr.deleteManifest" => &[ACR_DELETE],
        _ => return None,
    })
}

/// The roles and their assignments for `desired` (see the module docs).
pub fn permissions(desired: &DesiredState) -> Value {
    let groups: BTreeSet<String> = desired
        .apps
        .keys()
        .map(|k| {
            format!(
                "/subscriptions/{}/resourceGroups/{}",
                k.subscription, k.resource_group
            )
        })
        .collect();
    let mut subscriptions: BTreeSet<String> = desired
        .apps
        .keys()
        .map(|k| k.subscription.clone())
        .collect();
    if !desired.registries.is_empty() {
        subscriptions.extend(desired.subscriptions.iter().cloned());
    }
    let subscription_scopes: Vec<String> = subscriptions
        .iter()
        .map(|s| format!("/subscriptions/{s}"))
        .collect();
    let registries: BTreeSet<&str> = desired
        .registries
        .iter()
        .map(|r| r.registry.as_str())
        .collect();

    let role =
        |name: &str, description: &str, actions: &[&str], data: &[&str], scopes: &[String]| {
            json!({
                "Name": name,
                "IsCustom": true,
                "Description": description,
                "Actions": actions,
                "NotActions": [],
                "DataActions": data,
                "NotDataActions": [],
                "AssignableScopes": scopes,
            })
        };
    let group_scopes: Vec<String> = groups.iter().cloned().collect();
    let mut roles = vec![
        role(
            "aca-reconciler apps",
            "Reconcile the Container Apps of the desired state: read and update them, activate, deactivate and restart their revisions.",
            &[
                APPS_READ,
                APPS_WRITE,
                REVISIONS_READ,
                REPLICAS_READ,
                ACTIVATE,
                DEACTIVATE,
                RESTART,
            ],
            &[],
            &group_scopes,
        ),
        role(
            "aca-reconciler reader",
            "Follow aca-reconciler's own long-running operations (subscription-scoped status URLs) and read every app's revisions for registry retention.",
            &[
                APPS_READ,
                REVISIONS_READ,
                OPERATION_RESULTS,
                OPERATION_STATUSES,
            ],
            &[],
            &subscription_scopes,
        ),
    ];
    let mut assignments: Vec<Value> = groups
        .iter()
        .map(|g| json!({"role": "aca-reconciler apps", "scope": g, "why": "apps under management in this resource group"}))
        .collect();
    assignments.extend(subscription_scopes.iter().map(|s| {
        json!({"role": "aca-reconciler reader", "scope": s, "why": if desired.registries.is_empty() {
            "long-running operation status (else the controller polls each app instead)"
        } else {
            "long-running operation status; registry retention reads every app's revisions here"
        }})
    }));
    // Rollout analysis reads each such app's metrics: the role is assignable in those apps'
    // resource groups, and assigned on each app alone.
    let metric_apps: Vec<&crate::spec::AppKey> = desired
        .apps
        .iter()
        .filter(|(_, app)| {
            app.rollout
                .as_ref()
                .and_then(|r| r.analysis.as_ref())
                .is_some_and(crate::rollout::AnalysisSpec::reads_metrics)
        })
        .map(|(k, _)| k)
        .collect();
    if !metric_apps.is_empty() {
        let scopes: BTreeSet<String> = metric_apps
            .iter()
            .map(|k| {
                format!(
                    "/subscriptions/{}/resourceGroups/{}",
                    k.subscription, k.resource_group
                )
            })
            .collect();
        roles.push(role(
            "aca-reconciler metrics",
            "Read the Requests metric (Azure Monitor) of the apps whose rollout analysis judges success rates.",
            &[METRICS_READ],
            &[],
            &scopes.into_iter().collect::<Vec<_>>(),
        ));
        assignments.extend(metric_apps.iter().map(|k| {
            json!({"role": "aca-reconciler metrics", "scope": k.resource_id(), "why": "rollout analysis reads this app's Requests metric"})
        }));
    }
    if !registries.is_empty() {
        roles.push(role(
            "aca-reconciler registry",
            "Read and delete the registry tags that RegistryRetention allows (RBAC-mode actions and ABAC-mode data actions).",
            &[ACR_PULL, ACR_DELETE],
            &[
                ACR_CATALOG,
                ACR_METADATA_READ,
                ACR_CONTENT_READ,
                ACR_METADATA_DELETE,
                ACR_CONTENT_DELETE,
            ],
            &subscription_scopes,
        ));
        for login in &registries {
            let name = login.split('.').next().unwrap_or(login);
            assignments.push(json!({
                "role": "aca-reconciler registry",
                "scope": format!("<the resource id of registry {login}: az acr show --name {name} --query id -o tsv>"),
                "why": "registry retention lists and deletes tags here",
            }));
        }
    }
    json!({"roles": roles, "assignments": assignments})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AppKey, AppSpec};

    #[test]
    fn every_route_the_clients_name_has_its_actions_in_a_role() {
        let state = crate::spec::DesiredState::default();
        let out = permissions(&state);
        assert_eq!(
            out["roles"].as_array().map(Vec::len),
            Some(2),
            "no registry role without retention"
        );
        // The route names `route` can return, from the paths the clients build.
        let calls = [
            (
                "GET",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps",
            ),
            (
                "GET",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca",
            ),
            (
                "PATCH",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca",
            ),
            (
                "GET",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca/revisions",
            ),
            (
                "GET",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca/revisions/r",
            ),
            (
                "GET",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca/revisions/r/replicas",
            ),
            (
                "POST",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca/revisions/r/activate",
            ),
            (
                "POST",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca/revisions/r/deactivate",
            ),
            (
                "POST",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca/revisions/r/restart",
            ),
            (
                "GET",
                "/subscriptions/s/providers/Microsoft.App/locations/uksouth/containerappOperationStatuses/x",
            ),
            (
                "GET",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca/providers/Microsoft.Insights/metrics",
            ),
            ("POST", "/oauth2/exchange"),
            ("GET", "/acr/v1/repo/_tags"),
            ("GET", "/acr/v1/_catalog"),
            ("DELETE", "/acr/v1/repo/_tags/t"),
            ("DELETE", "/v2/repo/manifests/sha256:x"),
        ];
        for (method, path) in calls {
            let route = crate::arm::metrics::route(method, path);
            let actions = action_of(route).unwrap_or_else(|| panic!("{route} maps to no action"));
            assert!(!actions.is_empty());
        }
        assert_eq!(action_of("other"), None);
    }

    fn app(name: &str, group: &str, analysis: Option<crate::rollout::AnalysisSpec>) -> AppSpec {
        use crate::rollout::{Approval, RolloutSpec, Step, Strategy};
        let key = AppKey::new("6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b", group, name);
        AppSpec {
            key,
            source: crate::spec::Source {
                file: "apps.yaml".into(),
                pos: Default::default(),
            },
            suspend: false,
            revision_mode: None,
            images: Default::default(),
            replicas: None,
            traffic: None,
            keep_active: None,
            restart_generation: None,
            rollout: Some(RolloutSpec {
                strategy: Strategy::Canary,
                steps: vec![Step {
                    weight: 10,
                    pause_ms: 60_000,
                }],
                approval: Approval::Auto,
                analysis,
                progress_deadline_ms: 1_800_000,
                preview_label: "preview".to_owned(),
            }),
        }
    }

    fn analysis(success_rate_min: Option<f64>) -> crate::rollout::AnalysisSpec {
        crate::rollout::AnalysisSpec {
            interval_ms: 60_000,
            max_failed_checks: 2,
            no_data: crate::rollout::NoData::Hold,
            min_requests: 50,
            success_rate_min,
            max_drop_vs_stable: None,
            probes: vec![crate::rollout::Probe {
                path: "/health".to_owned(),
                expect_status: 200,
            }],
        }
    }

    #[test]
    fn metrics_are_readable_only_on_apps_whose_rollout_reads_them() {
        let mut state = DesiredState::default();
        for spec in [
            app("ca-metrics", "rg-a", Some(analysis(Some(99.0)))),
            app("ca-probes", "rg-b", Some(analysis(None))),
            app("ca-timed", "rg-b", None),
        ] {
            state.apps.insert(spec.key.clone(), spec);
        }
        let out = permissions(&state);
        let role = out["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["Name"] == "aca-reconciler metrics")
            .unwrap_or_else(|| panic!("no metrics role: {out}"));
        assert_eq!(role["Actions"], json!([METRICS_READ]));
        assert_eq!(
            role["AssignableScopes"],
            json!(["/subscriptions/6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b/resourceGroups/rg-a"])
        );
        let scopes: Vec<&Value> = out["assignments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["role"] == "aca-reconciler metrics")
            .map(|a| &a["scope"])
            .collect();
        assert_eq!(
            scopes,
            [&json!(
                "/subscriptions/6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b/resourceGroups/rg-a/providers/Microsoft.App/containerApps/ca-metrics"
            )]
        );
        // Probes alone, or no analysis: no metrics role at all.
        state.apps.retain(|k, _| k.name != "ca-metrics");
        let out = permissions(&state);
        assert!(
            !out.to_string().contains(METRICS_READ),
            "probes need no metrics: {out}"
        );
    }
}

//! The deployment files parse and agree with their documentation: the GitHub workflow (YAML),
//! the Bicep module's parameters (no Bicep compiler on this machine: every parameter must be
//! documented in docs/operations.md, and every documented one must exist), the Dockerfile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::collections::BTreeSet;

use common::root;

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_workflow_plans_pull_requests_only_with_keyless_azure_access() {
    let text = read("deploy/github-actions/aca-reconciler-plan.yml");
    let doc: serde_json::Value = serde_yaml::from_str(&text).expect("the workflow is YAML");
    let on = &doc["on"];
    assert!(on["pull_request"].is_object(), "{on}");
    assert_eq!(
        on.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["pull_request"],
        "nothing runs on main: the controller applies"
    );
    assert_eq!(
        doc["permissions"]["id-token"], "write",
        "OIDC workload identity"
    );
    assert_eq!(doc["permissions"]["contents"], "read");
    let steps = doc["jobs"]["plan"]["steps"].as_array().unwrap();
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(runs.iter().any(|r| r.contains(" validate ")), "{runs:?}");
    assert!(
        runs.iter().any(|r| r.contains("plan --output markdown")),
        "{runs:?}"
    );
    assert!(
        runs.iter()
            .any(|r| r.contains("AZURE_FEDERATED_TOKEN_FILE")),
        "{runs:?}"
    );
    assert!(
        !text.contains("secrets."),
        "no stored secret: the Azure login is keyless"
    );
}

#[test]
fn every_bicep_parameter_is_documented_and_every_documented_one_exists() {
    let bicep = read("deploy/bicep/main.bicep");
    let params: BTreeSet<String> = bicep
        .lines()
        .filter_map(|l| l.strip_prefix("param "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(params.len() >= 10, "{params:?}");
    let ops = read("docs/operations.md");
    let table = ops
        .split("<!-- bicep parameters -->")
        .nth(1)
        .expect("docs/operations.md has the Bicep parameter table after <!-- bicep parameters -->");
    let documented: BTreeSet<String> = table
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        params, documented,
        "main.bicep's parameters vs docs/operations.md"
    );
    // The probes and the module that scopes role assignments to resource groups.
    assert!(bicep.contains("path: '/healthz'") && bicep.contains("path: '/readyz'"));
    assert!(
        read("deploy/bicep/role-assignment.bicep")
            .contains("Microsoft.Authorization/roleAssignments")
    );
}

#[test]
fn the_image_is_multi_stage_non_root_and_probe_free() {
    let docker = read("deploy/Dockerfile");
    assert_eq!(docker.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    let user = docker
        .lines()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(
        !docker
            .lines()
            .any(|l| l.trim_start().starts_with("HEALTHCHECK")),
        "Container Apps probes /healthz and /readyz"
    );
    assert!(docker.contains("--locked"));
}

//! `spec.rollout` as an operator writes it: `validate` through the binary, every problem at
//! the key to edit, and `Defaults` inherited field by field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Scratch, bin};

const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn app(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {{name: {name}, resourceGroup: rg, subscription: {SUB}}}\nspec:\n{spec}"
    )
}

fn validate(dir: &Scratch) -> (i32, String) {
    let out = bin(dir.path())
        .args(["validate", "desired"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_canary_with_analysis_validates() {
    let dir = Scratch::new();
    dir.write(
        "desired/a.yaml",
        &app(
            "ca-a",
            "  images: {app: cr.azurecr.io/app:v2}\n  rollout:\n    steps:\n      - {weight: 10, pause: 5m}\n      - {weight: 50, pause: 10m}\n    approval: manual\n    analysis:\n      interval: 1m\n      maxFailedChecks: 2\n      noData: hold\n      minRequests: 50\n      successRate: {min: 99}\n      comparedToStable: {maxDrop: 1}\n      probes:\n        - {path: /health, expectStatus: 200}\n    progressDeadline: 30m\n",
        ),
    );
    let (code, text) = validate(&dir);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn a_rollout_with_traffic_says_which_to_remove_where() {
    let dir = Scratch::new();
    dir.write(
        "desired/a.yaml",
        &app(
            "ca-a",
            "  revisionMode: single\n  traffic:\n    - {latestRevision: true, weight: 100}\n  rollout:\n    steps:\n      - {weight: 50, pause: 5m}\n      - {weight: 20, pause: 40m}\n    analysis: {interval: 1m}\n",
        ),
    );
    let (code, text) = validate(&dir);
    assert_eq!(code, 1, "{text}");
    for expected in [
        "a.yaml:6:3: spec.traffic: remove traffic: a rollout owns traffic",
        "a.yaml:5:3: spec.revisionMode: a rollout needs revisionMode: multiple",
        "spec.rollout.steps[1].weight: 20 is not above the step before (50)",
        "spec.rollout.progressDeadline: 30m is not longer than the longest pause (40m)",
        "spec.rollout.analysis: checks nothing",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[test]
fn defaults_give_a_rollout_field_by_field_and_the_document_wins() {
    let dir = Scratch::new();
    dir.write(
        "desired/_defaults.yaml",
        "apiVersion: aca-reconciler/v1\nkind: Defaults\nmetadata: {name: d}\nspec:\n  rollout:\n    steps: [{weight: 10, pause: 1m}]\n    analysis: {interval: 30s, successRate: {min: 99}}\n",
    );
    // Inherits steps and analysis, adds its own deadline: valid.
    dir.write(
        "desired/a.yaml",
        &app(
            "ca-a",
            "  images: {app: cr.azurecr.io/app:v2}\n  rollout: {progressDeadline: 20m}\n",
        ),
    );
    // Inherits the rollout and writes traffic: located at its own traffic, naming Defaults.
    dir.write(
        "desired/b.yaml",
        &app(
            "ca-b",
            "  traffic:\n    - {latestRevision: true, weight: 100}\n",
        ),
    );
    let (code, text) = validate(&dir);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("b.yaml:5:3: spec.traffic: remove traffic: a rollout owns traffic (the rollout is inherited from a Defaults document)"),
        "{text}"
    );
    assert!(!text.contains("a.yaml"), "{text}");
}

//! The JSON Schema: committed copy up to date, accepts every valid document, rejects the
//! invalid ones that a schema can express.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::fs;
use std::path::Path;

use aca_reconciler::spec::schema;
use serde::Deserialize;

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema::document_schema()).unwrap()
}

/// Every non-empty document of a YAML file, as JSON.
fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|de| serde_yaml::Value::deserialize(de).unwrap())
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn committed_schema_is_up_to_date() {
    let committed = fs::read_to_string(common::root().join("desired-state/schema.json")).unwrap();
    assert!(
        committed == schema::render(),
        "desired-state/schema.json is stale: run `cargo run -- schema > desired-state/schema.json` and commit it"
    );
}

#[test]
fn every_example_starts_with_the_editor_schema_line() {
    let mut files = Vec::new();
    yaml_files(&common::root().join("desired-state"), &mut files);
    assert!(files.len() >= 9);
    for f in files {
        let first = fs::read_to_string(&f)
            .unwrap()
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        assert_eq!(
            first,
            "# yaml-language-server: $schema=../schema.json",
            "{}",
            f.display()
        );
    }
}

#[test]
fn schema_accepts_every_example_document() {
    let v = validator();
    let mut files = Vec::new();
    yaml_files(&common::root().join("desired-state"), &mut files);
    let mut n = 0;
    for f in files {
        for doc in documents(&f) {
            n += 1;
            let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
        }
    }
    assert_eq!(n, 13);
}

/// The invalid fixtures whose problem is a matter of shape, which a schema can express.
const SCHEMA_REJECTS: &[&str] = &[
    "replicas-max-zero",
    "replicas-max-over-1000",
    "replicas-wrong-type",
    "replicas-missing-max",
    "replicas-negative",
    "traffic-entry-names-two-targets",
    "traffic-entry-names-no-target",
    "traffic-weight-over-100",
    "traffic-weight-negative",
    "traffic-weight-fraction",
    "traffic-latest-revision-false",
    "traffic-empty-list",
    "traffic-missing-weight",
    "unknown-field-in-spec",
    "unknown-field-at-top",
    "unknown-field-in-metadata",
    "unknown-kind",
    "kind-wrong-case",
    "missing-kind",
    "wrong-api-version",
    "missing-api-version",
    "missing-spec",
    "missing-metadata-name",
    "app-name-uppercase",
    "subscription-not-a-guid",
    "revision-mode-typo",
    "keep-active-zero",
    "restart-generation-negative",
    "suspend-yes-is-not-a-boolean",
    "registry-keep-last-zero",
    "registry-older-than-weeks",
    "registry-missing-keep-last",
    "defaults-bad-subscription",
    "defaults-unknown-field",
    "document-is-a-list",
    "document-is-a-scalar",
    "notification-teams-inline-url",
    "notification-github-missing-token",
    "notification-unknown-reason",
];

#[test]
fn schema_rejects_the_invalid_shapes() {
    let v = validator();
    for name in SCHEMA_REJECTS {
        let path = common::root().join(format!("tests/fixtures/invalid/{name}.yaml"));
        let docs = documents(&path);
        assert!(!docs.is_empty(), "{name}");
        assert!(
            docs.iter().any(|d| !v.is_valid(d)),
            "the schema accepts {name}"
        );
    }
}

/// Azure compares enum values without regard to case and writes `Single` / `Multiple` itself;
/// the schema accepts what `validate` accepts, so editors do not flag it.
#[test]
fn schema_accepts_revision_mode_in_any_case_and_rejects_a_typo() {
    let v = validator();
    let doc = |mode: &str| {
        serde_json::json!({
            "apiVersion": "aca-reconciler/v1",
            "kind": "ContainerApp",
            "metadata": {"name": "ca-demo"},
            "spec": {"revisionMode": mode}
        })
    };
    for mode in ["single", "multiple", "Single", "Multiple", "MULTIPLE"] {
        assert!(v.is_valid(&doc(mode)), "{mode} is refused");
    }
    for mode in ["multi", "Multiples", ""] {
        assert!(!v.is_valid(&doc(mode)), "{mode} is accepted");
    }
}

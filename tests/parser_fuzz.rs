//! Hostile responses: Azure's own example bodies (`tests/fixtures/azure-specs/`), mutated at random in
//! their JSON structure and in their bytes, and plain random bytes, through every parser of
//! ARM and ACR answers and on into the planner and retention ([`aca_reconciler::fuzz`]).
//! Nothing may panic. The same entry points are the cargo-fuzz targets under `fuzz/`, which
//! run far longer (see the README).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use aca_reconciler::fuzz;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Azure's examples, vendored as test fixtures (their source and licence are noted there).
fn specs() -> PathBuf {
    common::root().join("tests/fixtures/azure-specs")
}

/// Every response body of every example, ARM's and ACR's apart.
fn seeds() -> &'static (Vec<Value>, Vec<Value>) {
    static SEEDS: OnceLock<(Vec<Value>, Vec<Value>)> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut arm = Vec::new();
        let mut acr = Vec::new();
        for (dir, out) in [(specs(), &mut arm), (specs().join("acr"), &mut acr)] {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    let doc: Value =
                        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                    for r in doc["responses"].as_object().into_iter().flatten() {
                        if !r.1["body"].is_null() {
                            out.push(r.1["body"].clone());
                        }
                    }
                }
            }
        }
        // The planner's own input shape: an app with its revisions.
        let app = arm
            .iter()
            .find(|b| b["type"] == "Microsoft.App/containerApps")
            .cloned();
        let revisions = arm
            .iter()
            .find(|b| b["value"][0]["type"] == "Microsoft.App/containerApps/revisions")
            .map(|b| b["value"].clone());
        if let (Some(app), Some(revisions)) = (app, revisions) {
            arm.push(json!({"app": app, "revisions": revisions}));
        }
        assert!(arm.len() >= 10 && acr.len() >= 4, "the examples are there");
        (arm, acr)
    })
}

/// A random JSON value, small.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::String),
        Just(json!("2026-11-27T06:00:00+00:00")),
        Just(json!("Running")),
        Just(json!("Failed")),
        Just(json!([])),
        Just(json!({})),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    /// Replace the n-th node (in walk order) with a value.
    Replace(usize, Value),
    /// Remove the n-th object key or array item.
    Remove(usize),
    /// Put the n-th node in place of the m-th (deep shapes where they do not belong).
    Graft(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), leaf()).prop_map(|(n, v)| Edit::Replace(n, v)),
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), any::<usize>()).prop_map(|(n, m)| Edit::Graft(n, m)),
    ]
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(m) => m.values().map(count).sum(),
        _ => 0,
    }
}

/// The n-th node in walk order (n is taken modulo the node count).
fn node(v: &mut Value, n: usize) -> &mut Value {
    fn go<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
        if *n == 0 {
            return Some(v);
        }
        *n -= 1;
        match v {
            Value::Array(a) => a.iter_mut().find_map(|c| go(c, n)),
            Value::Object(m) => m.values_mut().find_map(|c| go(c, n)),
            _ => None,
        }
    }
    let mut i = n % count(v);
    go(v, &mut i).unwrap()
}

fn apply(mut v: Value, edits: &[Edit]) -> Value {
    for e in edits {
        match e {
            Edit::Replace(n, with) => *node(&mut v, *n) = with.clone(),
            Edit::Remove(n) => match node(&mut v, *n) {
                Value::Object(m) if !m.is_empty() => {
                    let k = m.keys().nth(n % m.len()).cloned().unwrap();
                    m.remove(&k);
                }
                Value::Array(a) if !a.is_empty() => {
                    a.remove(n % a.len());
                }
                _ => {}
            },
            Edit::Graft(n, m) => {
                let from = node(&mut v, *n).clone();
                *node(&mut v, *m) = from;
            }
        }
    }
    v
}

fn bytes_mutated(text: &[u8], flips: &[(usize, u8)]) -> Vec<u8> {
    let mut b = text.to_vec();
    for (at, byte) in flips {
        if !b.is_empty() {
            let at = at % b.len();
            b[at] = *byte;
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arm_bodies_mutated_in_structure(seed in any::<usize>(), edits in prop::collection::vec(edit(), 1..6)) {
        let (arm, _) = seeds();
        let v = apply(arm[seed % arm.len()].clone(), &edits);
        fuzz::arm_response(v.to_string().as_bytes());
    }

    #[test]
    fn arm_bodies_mutated_in_bytes(seed in any::<usize>(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let (arm, _) = seeds();
        fuzz::arm_response(&bytes_mutated(arm[seed % arm.len()].to_string().as_bytes(), &flips));
    }

    #[test]
    fn acr_bodies_mutated(seed in any::<usize>(), edits in prop::collection::vec(edit(), 1..6), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..3)) {
        let (_, acr) = seeds();
        let v = apply(acr[seed % acr.len()].clone(), &edits);
        fuzz::acr_response(&bytes_mutated(v.to_string().as_bytes(), &flips));
    }

    #[test]
    fn random_bytes_everywhere(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz::arm_response(&bytes);
        fuzz::acr_response(&bytes);
        fuzz::desired_state(&bytes);
    }
}

#[test]
fn the_seeds_reach_the_planner() {
    // An unmutated app-with-revisions seed parses and plans: the fuzzing above starts from
    // inputs that go deep, not from ones every parser refuses at the first byte.
    let (arm, _) = seeds();
    let pair = arm.iter().find(|v| v.get("app").is_some()).unwrap();
    let app = aca_reconciler::arm::models::ContainerApp::from_value(pair["app"].clone()).unwrap();
    assert!(!app.name.is_empty());
    assert!(!app.properties.template.containers.is_empty());
}

//! The real binary: exit codes and output of `validate` and `schema`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use common::{Scratch, bin, root, run, stdout};

#[test]
fn validate_the_example_tree_exits_0() {
    let out = run(bin(&root()).args(["validate", "desired-state"]), 0);
    assert_eq!(
        stdout(&out),
        "valid: 13 documents in 9 files (10 apps, 1 registry policy)\n"
    );
}

#[test]
fn validate_defaults_to_the_desired_state_option_and_env() {
    let s = Scratch::new();
    let out = run(
        bin(s.path())
            .env("ACAR_DESIRED_STATE", root().join("desired-state"))
            .arg("validate"),
        0,
    );
    assert!(stdout(&out).starts_with("valid: 13 documents"));
    // The flag wins over the environment variable.
    let out = run(
        bin(s.path())
            .env("ACAR_DESIRED_STATE", root().join("desired-state"))
            .args(["--desired-state", "nowhere", "validate"]),
        1,
    );
    assert!(
        stdout(&out).starts_with("nowhere: cannot read"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn validate_reports_every_problem_of_every_file_and_exits_1() {
    let s = Scratch::new();
    s.write("a.yaml", "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: ca-a, resourceGroup: rg, subscription: 00000000-0000-0000-0000-000000000000}\nspec:\n  replicas: {min: 5, max: 2}\n  traffic:\n    - {latestRevision: true, weight: 60}\n");
    s.write("sub/b.yaml", "kind: Gadget\n");
    let out = run(bin(s.path()).args(["validate", "."]), 1);
    assert_eq!(
        stdout(&out),
        "./a.yaml:5:3: spec.replicas: min (5) is greater than max (2); min must not exceed max\n\
         ./a.yaml:6:3: spec.traffic: weights sum to 60; they must sum to 100\n\
         ./sub/b.yaml:1:1: apiVersion is missing; write `apiVersion: aca-reconciler/v1`\n\
         ./sub/b.yaml:1:1: kind: `Gadget` is unknown; expected one of Defaults, ContainerApp, RegistryRetention, Notification\n\
         invalid: 4 problems in 2 documents in 2 files (0 apps, 0 registry policies)\n"
    );
}

#[test]
fn validate_json_output_is_one_document() {
    let out = run(
        bin(&root()).args([
            "validate",
            "--output",
            "json",
            "tests/fixtures/invalid/replicas-min-greater-than-max.yaml",
        ]),
        1,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let d = &v["diagnostics"][0];
    assert_eq!(
        d["file"],
        "tests/fixtures/invalid/replicas-min-greater-than-max.yaml"
    );
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(8), Some(3))
    );
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.replicas: min (12)")
    );

    let out = run(
        bin(&root())
            .args(["validate", "-o", "json"])
            .env("ACAR_OUTPUT", "json")
            .arg("desired-state"),
        2,
    );
    // `-o` is not an option: clap's usage error is exit 2, and says what is wrong.
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument"));
}

#[test]
fn schema_prints_the_committed_schema() {
    let out = run(bin(&root()).arg("schema"), 0);
    let committed = std::fs::read_to_string(root().join("desired-state/schema.json")).unwrap();
    assert!(stdout(&out) == committed);
    let v: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
}

#[cfg(unix)]
#[test]
fn a_closed_pipe_is_not_an_error() {
    use std::process::Stdio;
    let mut child = bin(&root())
        .arg("schema")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once, like `| head -0`
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(unix)]
#[test]
fn simulate_serves_the_seed_and_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let s = Scratch::new();
    let mut child = bin(&root())
        .args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "desired-state",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("aca-reconciler simulator on http://127.0.0.1:"),
        "{first}"
    );
    assert!(
        first.ends_with("10 apps in 2 subscriptions, 2 registries"),
        "{first}"
    );
    let rest: Vec<String> = lines
        .by_ref()
        .take_while(|l| l.as_ref().is_ok_and(|l| !l.starts_with("Serving")))
        .map(Result::unwrap)
        .collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("IDENTITY_ENDPOINT=http://127.0.0.1:")
                && l.ends_with("IDENTITY_HEADER=simulator")),
        "{rest:?}"
    );
    let base = common::banner_base(&first);

    // Dump its state to a file, and serve that dump from a second simulator.
    let dump = s.path().join("state.json");
    let status = std::process::Command::new("curl")
        .args(["-sf", "-o"])
        .arg(&dump)
        .arg(format!("{base}/_sim/state"))
        .status();
    if status.is_ok_and(|st| st.success()) {
        let mut second = bin(&root())
            .args(["simulate", "--listen", "127.0.0.1:0", "--seed"])
            .arg(&dump)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut l2 = BufReader::new(second.stdout.take().unwrap()).lines();
        let line = l2.next().unwrap().unwrap();
        assert!(
            line.ends_with("10 apps in 2 subscriptions, 2 registries"),
            "{line}"
        );
        unsafe_kill(second.id(), "TERM");
        assert_eq!(second.wait().unwrap().code(), Some(0));
    }

    unsafe_kill(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
}

#[test]
fn simulate_refuses_an_invalid_seed_with_the_validate_hint() {
    let s = Scratch::new();
    s.write("bad.yaml", "kind: Nope\n");
    let out = run(
        bin(s.path()).args(["simulate", "--listen", "127.0.0.1:0", "--seed", "."]),
        1,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("run `aca-reconciler validate .`") && err.contains("./bad.yaml:1:1"),
        "{err}"
    );
}

/// Sends a signal with the system's `kill` (the test crate forbids unsafe code).
#[cfg(unix)]
fn unsafe_kill(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn plan_simulate_shows_changes_and_exits_2() {
    let out = run(bin(&root()).args(["plan", "--simulate"]), 2);
    let text = stdout(&out);
    assert!(text.contains("~ rg-xshopai-prod/ca-user-service"), "{text}");
    assert!(
        text.contains("-> crxshopaiprod.azurecr.io/user-service:v1.2.0"),
        "{text}"
    );
    assert!(text.contains("(new revision ca-user-service--r"), "{text}");
    assert!(
        text.contains("- deactivate ca-user-service--v113 (keep 5 active)"),
        "{text}"
    );
    assert!(text.contains("↻ restart ca-auth-service--"), "{text}");
    assert!(
        text.contains("0 in sync, 0 suspended, 0 with errors; 100 registry deletions (80 held back by the cap)."),
        "{text}"
    );
    assert!(
        text.contains("- tag auth-service:build-1037 (keep last 10)"),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--simulate: talking to an in-process Azure simulator")
    );
}

#[test]
fn plan_markdown_is_a_compact_pull_request_comment() {
    let out = run(
        bin(&root()).args(["plan", "--simulate", "--output", "markdown"]),
        2,
    );
    let md = stdout(&out);
    assert!(
        md.starts_with("### aca-reconciler plan\n\n10 apps to change"),
        "{md}"
    );
    assert!(
        md.contains("| ~ | `rg-xshopai-dev/ca-cart-service` | 1 write, 1 new revision |"),
        "{md}"
    );
    // Every changed app's actions, folded, in a fenced block.
    assert_eq!(md.matches("<details><summary><code>").count(), 10, "{md}");
    assert_eq!(
        md.matches("```text").count(),
        md.matches("</details>").count(),
        "{md}"
    );
    assert!(
        md.contains("- deactivate ca-user-service--v113 (keep 5 active)"),
        "{md}"
    );
    assert!(md.contains("<summary>registry retention</summary>"), "{md}");
}

#[test]
fn plan_json_has_a_stable_shape() {
    let out = run(
        bin(&root()).args(["plan", "--simulate", "--output", "json"]),
        2,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["changes"], 10);
    let app = v["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "ca-order-service" && a["resourceGroup"] == "rg-xshopai-prod")
        .unwrap();
    assert_eq!(app["status"], "changes");
    assert_eq!(app["subscription"], "6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b");
    let first = &app["actions"][0];
    assert_eq!(first["kind"], "updateTemplate");
    assert_eq!(first["createsRevision"], true);
    assert!(
        first["description"]
            .as_str()
            .unwrap()
            .starts_with("~ image order-service")
    );
    assert!(
        first.get("body").is_none(),
        "request bodies stay out of the plan"
    );
}

#[test]
fn apply_simulate_converges_and_exits_0() {
    let out = run(bin(&root()).args(["apply", "--simulate"]), 0);
    let text = stdout(&out);
    assert_eq!(text.matches("✓ converged").count(), 10, "{text}");
    assert!(
        text.contains("Apply: 10 apps,") && text.contains(" 0 failed"),
        "{text}"
    );
}

#[test]
fn apply_with_a_spent_action_budget_defers_and_exits_1() {
    let out = run(
        bin(&root()).args([
            "apply",
            "--simulate",
            "--max-actions",
            "3",
            "--concurrency",
            "1",
        ]),
        1,
    );
    let text = stdout(&out);
    assert!(
        text.contains("deferred: the --max-actions budget"),
        "{text}"
    );
}

#[test]
fn plan_refuses_an_invalid_desired_state_before_touching_azure() {
    let s = Scratch::new();
    s.write("bad.yaml", "kind: Nope\n");
    let out = run(
        bin(s.path()).args(["plan", "--simulate", "--desired-state", "."]),
        1,
    );
    let text = stdout(&out) + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("./bad.yaml:1:1")
            && text.contains("nothing was read from or written to Azure"),
        "{text}"
    );
}

#[test]
fn plan_refuses_plain_http_to_a_remote_arm_endpoint() {
    let out = run(
        bin(&root())
            .args(["plan", "--arm-endpoint", "http://management.example.com"])
            .env("AZURE_CLIENT_ID", "x"),
        1,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain http to a non-loopback host"), "{err}");
}

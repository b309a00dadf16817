//! `plan`, `apply` and `status`, the real binary, as a user runs them against Azure: here a
//! separate `simulate` process (so that Azure outlives each command), reached with the real
//! managed-identity credential and `--registry-endpoint`, and judged by the simulator's own
//! logs (`/_sim/audit`, `/_sim/restarts`, `/_sim/state`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::path::Path;
use std::process::Command;

use common::{Proc, Scratch, bin, copy_tree, get, root, run, spawn_simulator};
use serde_json::{Value, json};

const HEADER: &str = "cmd-test";

/// The README's example platform in a scratch directory, and a simulator seeded from it.
fn platform() -> (Scratch, Proc, String) {
    let s = Scratch::new();
    copy_tree(&root().join("desired-state"), s.path());
    let (sim, base) = spawn_simulator(
        s.path(),
        HEADER,
        &["--revision-ready", "1s", "--lro", "async"],
    );
    (s, sim, base)
}

/// The binary, pointed at the simulator at `base` as a user points it at Azure.
fn cmd(dir: &Path, base: &str, args: &[&str]) -> Command {
    let mut c = bin(dir);
    c.args(args)
        .args(["--desired-state", ".", "--arm-endpoint", base])
        .args(["--credential", "managed"])
        .args([
            "--registry-endpoint",
            &format!("crxshopaidev.azurecr.io={base}/registries/crxshopaidev.azurecr.io"),
            "--registry-endpoint",
            &format!("crxshopaiprod.azurecr.io={base}/registries/crxshopaiprod.azurecr.io"),
        ])
        .env("IDENTITY_ENDPOINT", format!("{base}/msi/token"))
        .env("IDENTITY_HEADER", HEADER);
    c
}

fn sim(base: &str, path: &str) -> Value {
    serde_json::from_str(&get(&format!("{base}/_sim/{path}")).1).unwrap()
}

fn fault(base: &str, rule: &Value) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "content-type: application/json", "-d"])
        .arg(rule.to_string())
        .arg(format!("{base}/_sim/faults"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201");
}

#[test]
fn apply_converges_the_apps_then_carries_out_registry_retention_and_the_next_plan_is_empty() {
    let (s, _sim, base) = platform();
    let no_cap = ["--max-tag-deletions", "1000"];

    // What plan lists.
    let planned = run(
        cmd(s.path(), &base, &["plan", "--output", "json"]).args(no_cap),
        2,
    );
    let planned: Value = serde_json::from_slice(&planned.stdout).unwrap();
    let listed = planned["summary"]["registryDeletions"].as_u64().unwrap();
    assert!(listed > 100, "{}", planned["summary"]);
    assert_eq!(planned["apps"][0]["state"], "drifted");

    // Azure throttles the subscription's reads and the registry once each, and loses the
    // answers to two writes it carried out.
    fault(
        &base,
        &json!({"operation": "ContainerAppsRevisions_GetRevision", "fault": {"kind": "throttle", "retryAfter": 2}, "count": 1}),
    );
    fault(
        &base,
        &json!({"operation": "ACR_GetTags", "fault": {"kind": "throttle", "retryAfter": 2}, "count": 1}),
    );
    fault(
        &base,
        &json!({"operation": "ContainerApps_Update", "fault": {"kind": "lostAnswer"}, "count": 2}),
    );

    let applied = run(
        cmd(s.path(), &base, &["apply", "--output", "json"]).args(no_cap),
        0,
    );
    let report: Value = serde_json::from_slice(&applied.stdout).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    let done = &report["registries"]["done"];
    assert_eq!(
        done["tagsDeleted"].as_u64().unwrap() + done["manifestsDeleted"].as_u64().unwrap(),
        listed,
        "apply deleted what plan listed: {done}"
    );
    assert!(
        report["registries"]["plan"]["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| !r["protected"].as_array().unwrap().is_empty()),
        "and says what it held back"
    );
    assert!(
        report["apps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "inSync"),
        "{report}"
    );

    // Judged by Azure's side.
    let audit = sim(&base, "audit");
    let early: Vec<&Value> = audit["early"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["client"] == "aca-reconciler" && e["after429Ms"].as_i64() > Some(50))
        .collect();
    assert!(
        early.is_empty(),
        "sent inside a Retry-After wait: {early:?}"
    );
    assert!(audit["throttled"].as_u64() >= Some(2), "the 429s happened");
    assert_eq!(
        audit["intoOperation"],
        json!([]),
        "no write into an operation the client knew was running (lost answers included)"
    );
    let state = sim(&base, "state");
    let mut restarted_new = Vec::new();
    let restarts = sim(&base, "restarts");
    for rec in state["apps"].as_array().unwrap() {
        let tags = &rec["app"]["tags"];
        assert!(
            tags.get(aca_reconciler::plan::RESTART_PENDING_TAG)
                .is_none(),
            "a pending-restart tag left behind: {tags}"
        );
        // The revision this apply created runs with the rotated secrets: never restarted.
        let latest = &rec["app"]["properties"]["latestRevisionName"];
        if restarts
            .as_array()
            .unwrap()
            .iter()
            .any(|r| &r["revision"] == latest)
        {
            restarted_new.push(latest.clone());
        }
    }
    assert!(
        restarted_new.is_empty(),
        "restarted the revisions it had just created: {restarted_new:?}"
    );
    assert!(
        !restarts.as_array().unwrap().is_empty(),
        "the example raises a restartGeneration"
    );

    // Nothing left to do.
    let again = run(cmd(s.path(), &base, &["plan"]).args(no_cap), 0);
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("0 registry deletions"), "{text}");

    // `status`, computed live, agrees.
    let status = run(
        &mut cmd(s.path(), &base, &["status", "--output", "json"]),
        0,
    );
    let rows: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "inSync" && r["detail"] == "in sync"),
        "{rows}"
    );
}

#[test]
fn apply_prints_each_deletion_and_hold_back_and_counts_retention_failures_in_its_exit_code() {
    let (s, _sim, base) = platform();
    // Every tag deletion of one repository fails: apply reports it and exits 1.
    fault(
        &base,
        &json!({"operation": "ACR_DeleteTag", "path": "**/auth-service/**", "fault": {"kind": "status", "status": 403, "code": "DENIED"}}),
    );
    let out = run(&mut cmd(s.path(), &base, &["apply"]), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("    - tag order-service:build-"),
        "each deletion: {text}"
    );
    assert!(
        text.contains("= keep web-bff:build-1004: locked"),
        "each hold-back: {text}"
    );
    assert!(text.contains("auth-service:build-"), "{text}");
    assert!(
        text.contains("! crxshopaidev.azurecr.io/auth-service:build-"),
        "the failed deletions: {text}"
    );
    let summary = text.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("Apply: 10 apps") && !summary.contains(" 0 failed"),
        "{summary}"
    );
}

#[test]
fn status_is_computed_live_or_asked_of_a_running_controller() {
    let (s, _sim, base) = platform();
    // Live: every app has drifted (the seed), so it exits 2 and says so per app.
    let out = run(&mut cmd(s.path(), &base, &["status"]), 2);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("APP"), "{text}");
    assert!(
        text.contains("rg-xshopai-prod/ca-user-service") && text.contains("drifted ("),
        "{text}"
    );
    // From a controller (`--server`): in sync once it has converged, exit 0.
    let port = common::free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let _ctl = Proc(
        cmd(
            s.path(),
            &base,
            &[
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--interval",
                "1h",
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    common::wait_for("readyz", std::time::Duration::from_secs(60), || {
        get(&format!("{ep}/readyz")).0 == 200
    });
    let out = run(bin(s.path()).args(["status", "--server", &ep]), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(" inSync ").count(), 10, "{text}");
    let out = run(
        bin(s.path()).args(["status", "--server", &ep, "--output", "json"]),
        0,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ready"], true);
    // A controller that is not there: a clear error, exit 1.
    let out = run(
        bin(s.path()).args(["status", "--server", "http://127.0.0.1:9"]),
        1,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("aca-reconciler status: cannot reach")
            && err.contains("is `aca-reconciler run` listening there?"),
        "{err}"
    );
}

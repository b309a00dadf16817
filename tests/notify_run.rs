//! Events and notifications through the binary: `run` against a separate `simulate` process,
//! its `/status` events, the `events` command, and (below) what loopback receivers get.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Proc, Scratch, bin, copy_tree, free_port, get, root, wait_for};
use serde_json::Value;

/// `run` against the simulator at `base` (managed identity), with `extra` options and env.
fn controller(dir: &Path, base: &str, port: u16, extra: &[&str], env: &[(&str, String)]) -> Proc {
    let mut cmd = bin(dir);
    cmd.args([
        "run",
        "--desired-state",
        ".",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--arm-endpoint",
        base,
        "--credential",
        "managed",
    ])
    .args([
        "--registry-endpoint",
        &format!("crxshopaidev.azurecr.io={base}/registries/crxshopaidev.azurecr.io"),
    ])
    .args([
        "--registry-endpoint",
        &format!("crxshopaiprod.azurecr.io={base}/registries/crxshopaiprod.azurecr.io"),
    ])
    .env("IDENTITY_ENDPOINT", format!("{base}/msi/token"))
    .env("IDENTITY_HEADER", "notify-test")
    .env("ACAR_LOG_FORMAT", "json")
    .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn status(ep: &str) -> Value {
    serde_json::from_str(&get(&format!("{ep}/status")).1).unwrap()
}

fn events(ep: &str) -> Vec<Value> {
    status(ep)["events"].as_array().cloned().unwrap_or_default()
}

/// The events about `app` (in prod) with `reason`.
fn count(events: &[Value], app: &str, reason: &str) -> usize {
    events
        .iter()
        .filter(|e| {
            e["app"]["name"] == app
                && e["app"]["resourceGroup"] == "rg-xshopai-prod"
                && e["reason"] == reason
        })
        .count()
}

fn app_state(ep: &str, app: &str) -> String {
    status(ep)["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == app && a["resourceGroup"] == "rg-xshopai-prod")
        .map(|a| a["state"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

fn edit(dir: &Path, rel: &str, from: &str, to: &str) {
    let file = dir.join(rel);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&file, text.replace(from, to)).unwrap();
}

const COMMIT: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

#[test]
fn events_tell_each_change_once_a_bad_image_once_and_its_recovery_and_nothing_at_rest() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let s = Scratch::new();
    copy_tree(&root().join("desired-state"), s.path());
    let (_sim, base) = common::spawn_simulator(
        s.path(),
        "notify-test",
        &["--revision-ready", "1s", "--lro", "sync"],
    );
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    // Resyncs every 2 s, each reading every app in full: a steady state that is looked at often.
    let _ctl = controller(
        s.path(),
        &base,
        port,
        &[
            "--interval",
            "2s",
            "--reverify-after",
            "1",
            "--revision",
            &format!("main@sha1:{COMMIT}"),
        ],
        &[],
    );
    wait_for("readyz", Duration::from_secs(90), || {
        get(&format!("{ep}/readyz")).0 == 200
    });
    // The seed drifted every app: each change is told once, as Applied, with the commit.
    let first = events(&ep);
    let applied: Vec<&Value> = first.iter().filter(|e| e["reason"] == "Applied").collect();
    assert!(!applied.is_empty(), "{first:#?}");
    for e in &applied {
        let same = first
            .iter()
            .filter(|o| o["reason"] == "Applied" && o["app"] == e["app"])
            .count();
        assert_eq!(same, 1, "{first:#?}");
        assert_eq!(e["commit"], COMMIT, "{e}");
        assert_eq!(e["severity"], "info");
        assert!(
            e["message"].as_str().unwrap().starts_with("applied: "),
            "{e}"
        );
        assert!(e["details"]["requestIds"].is_string(), "{e}");
    }
    assert!(first.iter().all(|e| e["severity"] == "info"), "{first:#?}");
    // Four resyncs later: nothing more about the apps (registry retention, which deletes the
    // seed's old tags 100 per run, tells each run that deleted some).
    std::thread::sleep(Duration::from_secs(8));
    let about_apps = |events: &[Value]| events.iter().filter(|e| e["app"].is_object()).count();
    let later = events(&ep);
    assert_eq!(about_apps(&later), about_apps(&first), "{later:#?}");
    for e in later.iter().filter(|e| e["reason"] == "RetentionDone") {
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("registry retention deleted "),
            "{e}"
        );
    }

    // A bad image: its revision fails to start. One failure, though every resync looks again.
    edit(
        s.path(),
        "prod/ca-cart-service.yaml",
        "cart-service:v1.9.3",
        "cart-service:v9.9.9-missing",
    );
    wait_for("failing", Duration::from_secs(30), || {
        app_state(&ep, "ca-cart-service") == "failing"
    });
    // Retried with backoff (5 s, 10 s, ...): still one failure.
    std::thread::sleep(Duration::from_secs(12));
    let now = events(&ep);
    assert_eq!(count(&now, "ca-cart-service", "Failed"), 1, "{now:#?}");
    let failed = now.iter().find(|e| e["reason"] == "Failed").unwrap();
    assert_eq!(failed["severity"], "error");
    assert!(
        failed["source"]
            .as_str()
            .unwrap()
            .contains("ca-cart-service.yaml"),
        "{failed}"
    );
    // The fix: one recovery, and no Applied besides it.
    edit(
        s.path(),
        "prod/ca-cart-service.yaml",
        "cart-service:v9.9.9-missing",
        "cart-service:v1.9.3",
    );
    wait_for("recovered", Duration::from_secs(30), || {
        count(&events(&ep), "ca-cart-service", "Recovered") == 1
    });
    std::thread::sleep(Duration::from_secs(4));
    let now = events(&ep);
    assert_eq!(count(&now, "ca-cart-service", "Recovered"), 1, "{now:#?}");
    assert_eq!(count(&now, "ca-cart-service", "Applied"), 1, "{now:#?}");
    assert_eq!(count(&now, "ca-cart-service", "Failed"), 1, "{now:#?}");

    // A broken file is told, and so is its fix.
    edit(
        s.path(),
        "prod/ca-web-bff.yaml",
        "kind: ContainerApp",
        "kind: ContainerAp",
    );
    wait_for("rejected", Duration::from_secs(10), || {
        events(&ep)
            .iter()
            .any(|e| e["reason"] == "DesiredStateRejected")
    });
    edit(
        s.path(),
        "prod/ca-web-bff.yaml",
        "kind: ContainerAp",
        "kind: ContainerApp",
    );
    wait_for("fixed", Duration::from_secs(10), || {
        events(&ep)
            .iter()
            .any(|e| e["reason"] == "DesiredStateFixed")
    });

    // `events` prints them like kubectl; `--app` keeps one app's.
    let out = common::run(
        bin(s.path()).args(["events", "--server", &ep, "--app", "ca-cart-service"]),
        0,
    );
    let text = common::stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("LAST SEEN"), "{text}");
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| l.contains("/ca-cart-service ")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Failed") && l.contains("error")),
        "{text}"
    );
    assert!(lines.iter().any(|l| l.contains("Recovered")), "{text}");
}

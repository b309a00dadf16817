//! `aca-reconciler run`, the real binary, against a separate `simulate` process (so that Azure
//! outlives the controller), authenticating with the real managed-identity credential.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, Scratch, copy_tree, free_port, get, post, root, send, wait_for};
use serde_json::Value;

/// `simulate` seeded from `desired`, returning its base URL.
fn simulator(desired: &Path, extra: &[&str]) -> (Proc, String) {
    common::spawn_simulator(desired, "ctl-test", extra)
}

/// `run` against the simulator at `base`, with the managed-identity credential.
fn controller(dir: &Path, base: &str, port: u16, interval: &str) -> Proc {
    controller_with(dir, base, port, interval, &[], Stdio::piped())
}

/// [`controller`] with more options, its stderr going to `stderr`.
fn controller_with(
    dir: &Path,
    base: &str,
    port: u16,
    interval: &str,
    extra: &[&str],
    stderr: Stdio,
) -> Proc {
    let mut args = vec!["--interval", interval];
    args.extend(extra);
    common::run_against(
        dir,
        base,
        port,
        "ctl-test",
        &args,
        &[("ACAR_TRIGGER_TOKEN", "hook-secret".to_owned())],
        stderr,
    )
}

fn sim_json(base: &str, path: &str) -> Value {
    serde_json::from_str(&get(&format!("{base}/_sim/{path}")).1).unwrap()
}

fn writes(base: &str) -> u64 {
    sim_json(base, "requests")["armWrites"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn converges_then_idles_reacts_to_edits_keeps_the_last_good_state_and_serves_its_endpoints() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is needed by this test");
    }
    let s = Scratch::new();
    copy_tree(&root().join("desired-state"), s.path());
    let (_sim, base) = simulator(s.path(), &["--revision-ready", "1s", "--lro", "sync"]);
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let _ctl = controller(s.path(), &base, port, "1h");

    wait_for("readyz", Duration::from_secs(60), || {
        get(&format!("{ep}/readyz")).0 == 200
    });
    let (_, status) = get(&format!("{ep}/status"));
    let status: Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["apps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "inSync"),
        "{status}"
    );
    assert_eq!(sim_json(&base, "outages"), serde_json::json!([]));

    // Registry retention's counts in /status (the dashboard's table) match the registry:
    // what it says it kept is what is left.
    let mut retention = Value::Null;
    wait_for(
        "a retention run in /status",
        Duration::from_secs(30),
        || {
            let (_, status) = get(&format!("{ep}/status"));
            retention = serde_json::from_str::<Value>(&status).unwrap()["retention"].clone();
            !retention.is_null()
        },
    );
    assert_eq!(retention["errors"], serde_json::json!([]), "{retention}");
    let world = sim_json(&base, "state");
    let repositories = retention["repositories"].as_array().unwrap();
    assert!(!repositories.is_empty(), "{retention}");
    assert!(
        repositories.iter().any(|r| r["deleted"].as_u64() > Some(0)),
        "the example deletes tags: {retention}"
    );
    for r in repositories {
        let left = world["registries"][r["registry"].as_str().unwrap()]["repositories"]
            [r["repository"].as_str().unwrap()]["tags"]
            .as_array()
            .map_or(0, Vec::len) as u64;
        assert_eq!(r["kept"].as_u64(), Some(left), "{r}");
    }

    // Converged: no more writes while nothing changes.
    let settled = writes(&base);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(writes(&base), settled, "no write without a reason");

    // A file edit reaches Azure within 2 s.
    let file = s.path().join("prod/ca-cart-service.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("min: 2, max: 10", "min: 3, max: 10")).unwrap();
    let edited = Instant::now();
    wait_for("a write after the edit", Duration::from_secs(5), || {
        writes(&base) > settled
    });
    assert!(
        edited.elapsed() < Duration::from_secs(2),
        "first write {:?} after the edit",
        edited.elapsed()
    );

    // A broken edit keeps the old state and is reported in /status and /metrics.
    std::fs::write(&file, text.replace("min: 2, max: 10", "min: 30, max: 10")).unwrap();
    wait_for("the problem in /status", Duration::from_secs(5), || {
        get(&format!("{ep}/status"))
            .1
            .contains("min (30) is greater than max (10)")
    });
    let (code, metrics) = get(&format!("{ep}/metrics"));
    assert_eq!(code, 200);
    let lines: Vec<std::io::Result<String>> = metrics.lines().map(|l| Ok(l.to_owned())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter())
        .expect("/metrics parses as Prometheus text");
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| s.value.clone())
    };
    assert!(
        matches!(value("acar_desired_state_errors"), Some(prometheus_parse::Value::Gauge(v)) if v == 1.0),
        "{metrics}"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "acar_passes_total"),
        "{metrics}"
    );
    let listed = scrape.samples.iter().find(|s| {
        s.metric == "acar_arm_requests_total"
            && s.labels.get("route") == Some("containerApps.list")
            && s.labels.get("status") == Some("200")
    });
    // prometheus-parse types a sample by its `# TYPE` name, which lacks OpenMetrics' `_total`.
    let count = match listed.map(|s| &s.value) {
        Some(prometheus_parse::Value::Counter(n) | prometheus_parse::Value::Untyped(n)) => *n,
        _ => 0.0,
    };
    assert!(count >= 1.0, "{metrics}");
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "acar_arm_ratelimit_remaining"
                && s.labels.get("kind") == Some("reads")),
        "{metrics}"
    );
    let before_broken = writes(&base);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        writes(&base),
        before_broken,
        "the broken edit never reached Azure"
    );
    let app = serde_json::from_str::<Value>(&get(&format!("{base}/_sim/state")).1).unwrap();
    let cart = app["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"]["name"] == "ca-cart-service" && a["resourceGroup"] == "rg-xshopai-prod")
        .unwrap();
    assert_eq!(
        cart["app"]["properties"]["template"]["scale"]["minReplicas"], 3,
        "the last good version is in force"
    );

    // POST /reconcile needs the token.
    assert_eq!(post(&format!("{ep}/reconcile"), None), 401);
    assert_eq!(post(&format!("{ep}/reconcile"), Some("wrong")), 401);
    assert_eq!(post(&format!("{ep}/reconcile"), Some("hook-secret")), 202);
    assert_eq!(get(&format!("{ep}/healthz")).0, 200);
    assert_eq!(sim_json(&base, "outages"), serde_json::json!([]));
}

#[cfg(unix)]
#[test]
fn sigterm_mid_apply_exits_0_and_the_next_start_converges_without_an_outage() {
    let s = Scratch::new();
    copy_tree(&root().join("desired-state"), s.path());
    let (_sim, base) = simulator(s.path(), &["--revision-ready", "3s"]);
    let port = free_port();
    let mut ctl = controller(s.path(), &base, port, "1h");
    // Mid-apply: writes have started, revisions are not ready yet.
    wait_for("the first writes", Duration::from_secs(30), || {
        writes(&base) > 0
    });
    let ok = Command::new("kill")
        .args(["-TERM", &ctl.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let started = Instant::now();
    let status = loop {
        if let Some(st) = ctl.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0), "a clean stop");
    let stderr = std::io::read_to_string(ctl.0.stderr.take().unwrap()).unwrap_or_default();
    assert!(stderr.contains("controller stopped"), "{stderr}");

    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let _again = controller(s.path(), &base, port, "1h");
    wait_for("readyz after the restart", Duration::from_secs(90), || {
        get(&format!("{ep}/readyz")).0 == 200
    });
    let status: Value = serde_json::from_str(&get(&format!("{ep}/status")).1).unwrap();
    assert!(
        status["apps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "inSync"),
        "{status}"
    );
    assert_eq!(
        sim_json(&base, "outages"),
        serde_json::json!([]),
        "no outage across the restart"
    );
    let restarts = sim_json(&base, "restarts");
    let prod_auth = restarts
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["app"] == "ca-auth-service")
        .count();
    assert!(prod_auth >= 1, "{restarts}");
}

fn leadership(ep: &str) -> String {
    let (code, body) = get(&format!("{ep}/status"));
    if code != 200 {
        return String::new();
    }
    serde_json::from_str::<Value>(&body).unwrap()["leadership"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Azure requests a controller says it sent, all of them or only the writes.
fn requests_sent(ep: &str, writes_only: bool) -> f64 {
    const WRITES: &[&str] = &[
        "containerApps.update",
        "revisions.activate",
        "revisions.deactivate",
        "revisions.restart",
        "acr.deleteTag",
        "acr.deleteManifest",
    ];
    let (_, metrics) = get(&format!("{ep}/metrics"));
    let lines: Vec<std::io::Result<String>> = metrics.lines().map(|l| Ok(l.to_owned())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "acar_arm_requests_total")
        .filter(|s| !writes_only || s.labels.get("route").is_some_and(|r| WRITES.contains(&r)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
#[ignore = "needs Azurite: `bash tests/azurite/run.sh` installs it and runs this test"]
fn two_replicas_one_leader_and_the_other_takes_over_when_it_dies() {
    let s = Scratch::new();
    let desired = s.path().join("desired");
    std::fs::create_dir_all(&desired).unwrap();
    copy_tree(&root().join("desired-state"), &desired);
    let storage = s.path().join("azurite");
    std::fs::create_dir_all(&storage).unwrap();
    let (_azurite, account) = common::azurite(&storage);
    let sas = common::azurite_sas();
    let made = send(
        "PUT",
        &format!("{account}/leases?restype=container&{sas}"),
        None,
    );
    assert_eq!(made, 201, "creating the container");
    let lease = format!("{account}/leases/aca-reconciler?{sas}");
    let (_sim, base) = simulator(&desired, &["--revision-ready", "1s", "--lro", "sync"]);
    let log = |name: &str| Stdio::from(std::fs::File::create(s.path().join(name)).unwrap());
    let replica = |port: u16, name: &str| {
        controller_with(
            &desired,
            &base,
            port,
            "1h",
            &["--lease-blob", &lease, "--lease-duration", "15s"],
            log(name),
        )
    };
    let show = |name: &str| std::fs::read_to_string(s.path().join(name)).unwrap_or_default();

    // A starts first and leads (it creates the blob); B stands by.
    let (pa, pb) = (free_port(), free_port());
    let (ea, eb) = (
        format!("http://127.0.0.1:{pa}"),
        format!("http://127.0.0.1:{pb}"),
    );
    let mut a = replica(pa, "a.log");
    wait_for("A to lead", Duration::from_secs(30), || {
        leadership(&ea) == "leader"
    });
    let b = replica(pb, "b.log");
    wait_for("B to stand by", Duration::from_secs(30), || {
        leadership(&eb) == "standby"
    });
    assert_eq!(
        get(&format!("{eb}/readyz")).0,
        200,
        "a standby replica is ready"
    );
    wait_for(
        "A to converge the platform",
        Duration::from_secs(90),
        || get(&format!("{ea}/readyz")).0 == 200,
    );

    // Both see an edit; only A acts on it.
    let file = desired.join("prod/ca-cart-service.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let before = writes(&base);
    std::fs::write(&file, text.replace("min: 2, max: 10", "min: 3, max: 10")).unwrap();
    wait_for("A's write after the edit", Duration::from_secs(10), || {
        writes(&base) > before
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(requests_sent(&ea, true) > 0.0, "A wrote");
    assert_eq!(
        requests_sent(&eb, false),
        0.0,
        "B, the standby, sent no request to Azure at all:\n{}",
        show("b.log")
    );

    // Each action is logged once, with Azure's request id.
    let logged = show("a.log");
    let action = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "done" || l["message"] == "done")
        .unwrap_or_else(|| panic!("no action in A's log:\n{logged}"));
    let id = action.to_string();
    assert!(
        id.contains("arm_request_id") && !id.contains(r#""arm_request_id":"-""#),
        "{action}"
    );

    // kill -9 the leader: B takes over once the lease lapses (15 s) and acts.
    let told_by_a = app_events(&ea);
    assert!(!told_by_a.is_empty(), "A told what it did");
    a.0.kill().unwrap();
    let killed = Instant::now();
    wait_for("B to lead after A died", Duration::from_secs(30), || {
        leadership(&eb) == "leader"
    });
    let takeover = killed.elapsed();
    // The lease outlives A by at most 15 s; B tries every 2.5 s.
    assert!(
        takeover < Duration::from_secs(20),
        "B took over {takeover:?} after A died"
    );
    let before = writes(&base);
    std::fs::write(&file, text.replace("min: 2, max: 10", "min: 4, max: 10")).unwrap();
    wait_for("B's write after the edit", Duration::from_secs(10), || {
        writes(&base) > before
    });
    assert!(requests_sent(&eb, true) > 0.0, "B acts now");
    // B tells that it leads and what it did, never what it found A had done: A told that.
    wait_for("B's event about its write", Duration::from_secs(10), || {
        app_events(&eb).iter().any(|e| e["reason"] == "Applied")
    });
    let told = app_events(&eb);
    let same = |x: &Value, y: &Value| {
        x["reason"] == y["reason"] && x["app"] == y["app"] && x["message"] == y["message"]
    };
    for e in &told {
        assert!(
            e["details"]["requestIds"].is_string(),
            "B told of something it did not do: {e}"
        );
        assert!(
            !told_by_a.iter().any(|a| same(a, e)),
            "B repeated A's event: {e}"
        );
    }
    let all: Value = serde_json::from_str(&get(&format!("{eb}/status")).1).unwrap();
    assert!(
        all["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "LeadershipGained"),
        "{all}"
    );

    // A clean stop releases the lease: a restarted A takes over at its next try, not 15 s later.
    drop(a);
    let pa = free_port();
    let ea = format!("http://127.0.0.1:{pa}");
    let _a = replica(pa, "a2.log");
    wait_for("the new A to stand by", Duration::from_secs(30), || {
        leadership(&ea) == "standby"
    });
    let mut b = b;
    Command::new("kill")
        .args(["-TERM", &b.0.id().to_string()])
        .status()
        .unwrap();
    let stopped = Instant::now();
    wait_for("A to lead after B stopped", Duration::from_secs(30), || {
        leadership(&ea) == "leader"
    });
    let handover = stopped.elapsed();
    assert!(
        handover < Duration::from_secs(8),
        "A took over {handover:?} after B's clean stop:\n{}",
        show("b.log")
    );
    assert_eq!(b.0.wait().unwrap().code(), Some(0));
    assert!(
        show("b.log").contains("lease released"),
        "{}",
        show("b.log")
    );
    assert_eq!(
        sim_json(&base, "outages"),
        serde_json::json!([]),
        "no outage across the changes of leader"
    );
    println!(
        "leader election: takeover {takeover:?} after kill -9 of the leader (lease 15 s), {handover:?} after a clean stop"
    );
}

/// The events in a replica's `/status` that are about an app.
fn app_events(ep: &str) -> Vec<Value> {
    let status: Value = serde_json::from_str(&get(&format!("{ep}/status")).1).unwrap();
    status["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["app"].is_object())
        .cloned()
        .collect()
}

/// An ARM call to the simulator as an operator would make it (`az containerapp ...`): the
/// HTTP status (a 409 while the controller writes is normal) and the JSON body.
fn arm_call(base: &str, method: &str, path: &str) -> (u16, Value) {
    let token: Value = serde_json::from_slice(
        &Command::new("curl")
            .args(["-s", "-X", "POST", &format!("{base}/_sim/token")])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", method])
        .args(["-H", "Content-Length: 0", "-H"])
        .arg(format!(
            "Authorization: Bearer {}",
            token["access_token"].as_str().unwrap()
        ))
        .arg(format!("{base}{path}?api-version=2026-01-01"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn arm(base: &str, method: &str, path: &str) -> Value {
    arm_call(base, method, path).1
}

#[test]
fn the_steady_state_skips_unchanged_apps_yet_catches_a_revision_activated_by_hand() {
    let s = Scratch::new();
    copy_tree(&root().join("desired-state"), s.path());
    let (_sim, base) = simulator(s.path(), &["--revision-ready", "1s", "--lro", "sync"]);
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let _ctl = controller_with(
        s.path(),
        &base,
        port,
        "1s",
        &["--reverify-after", "3"],
        Stdio::null(),
    );
    wait_for("readyz", Duration::from_secs(60), || {
        get(&format!("{ep}/readyz")).0 == 200
    });
    // Let the resyncs settle into the steady state, then count for a few seconds.
    std::thread::sleep(Duration::from_secs(3));
    let before = sim_json(&base, "requests");
    let passes_before =
        serde_json::from_str::<Value>(&get(&format!("{ep}/status")).1).unwrap()["passes"]
            .as_u64()
            .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let after = sim_json(&base, "requests");
    let lists = |v: &Value, op: &str| v["byOperation"][op].as_u64().unwrap_or(0);
    let resyncs = (lists(&after, "ContainerApps_ListByResourceGroup")
        - lists(&before, "ContainerApps_ListByResourceGroup"))
        / 2;
    let revision_lists = lists(&after, "ContainerAppsRevisions_ListRevisions")
        - lists(&before, "ContainerAppsRevisions_ListRevisions");
    assert!(resyncs >= 4, "about one resync a second: {resyncs}");
    // 10 apps need revisions; each is read in full every third resync at most (+1 for the
    // window's edges), not at every one.
    assert!(
        revision_lists <= 10 * (resyncs / 3 + 1),
        "{revision_lists} revision lists in {resyncs} resyncs"
    );
    assert_eq!(
        after["armWrites"], before["armWrites"],
        "no writes in the steady state"
    );
    let passes = serde_json::from_str::<Value>(&get(&format!("{ep}/status")).1).unwrap()["passes"]
        .as_u64()
        .unwrap()
        - passes_before;
    assert!(
        passes <= resyncs * 2 + 2,
        "a pass per resource group per resync, not per app: {passes} passes for {resyncs} resyncs"
    );

    // Someone activates every inactive revision of an app by hand (keepActive: 5). Nothing in
    // the app's own listing changes; the periodic full verification catches it.
    let app = "/subscriptions/6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b/resourceGroups/rg-xshopai-prod/providers/Microsoft.App/containerApps/ca-cart-service";
    let active = |base: &str| {
        arm(base, "GET", &format!("{app}/revisions"))["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["properties"]["active"] == true)
            .count()
    };
    let revisions = arm(&base, "GET", &format!("{app}/revisions"));
    let inactive: Vec<String> = revisions["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["properties"]["active"] == false)
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(!inactive.is_empty(), "{revisions}");
    for name in &inactive {
        let path = format!("{app}/revisions/{name}/activate");
        wait_for("an activation by hand", Duration::from_secs(10), || {
            arm_call(&base, "POST", &path).0 == 200
        });
    }
    let started = Instant::now();
    wait_for(
        "the extra revisions deactivated",
        Duration::from_secs(15),
        || active(&base) <= 5,
    );
    println!(
        "steady state: {revision_lists} revision lists in {resyncs} resyncs of 10 apps; a revision activated by hand was deactivated after {:?}",
        started.elapsed()
    );
    assert_eq!(sim_json(&base, "outages"), serde_json::json!([]));
}

/// The controller's successful writes to `app` so far, from the simulator's audit log.
fn writes_to(base: &str, app: &str) -> usize {
    sim_json(base, "audit")["writes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            w["client"] == "aca-reconciler"
                && w["status"].as_u64().is_some_and(|s| s < 300)
                && w["app"]
                    .as_str()
                    .is_some_and(|a| a.ends_with(&format!("/{app}")))
        })
        .count()
}

/// An app's `reconciles` in `/status` (prod).
fn reconciles(ep: &str, app: &str) -> u64 {
    let status: Value = serde_json::from_str(&get(&format!("{ep}/status")).1).unwrap();
    status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == app && a["resourceGroup"] == "rg-xshopai-prod")
        .and_then(|a| a["reconciles"].as_u64())
        .unwrap_or(0)
}

#[test]
fn an_app_waiting_on_azure_holds_up_only_itself() {
    let s = Scratch::new();
    copy_tree(&root().join("desired-state"), s.path());
    let (_sim, base) = simulator(s.path(), &["--revision-ready", "1s", "--lro", "sync"]);
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let _ctl = controller_with(s.path(), &base, port, "1h", &[], Stdio::null());
    wait_for("readyz", Duration::from_secs(60), || {
        get(&format!("{ep}/readyz")).0 == 200
    });
    // From now on every read of one of ca-user-service's revisions answers 12 s late, so its
    // next change waits a long time for its new revision.
    let rule = serde_json::json!({"method": "GET", "path": "**/containerApps/ca-user-service/revisions/*", "fault": {"kind": "latency", "ms": 12_000}});
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &rule.to_string(),
        ])
        .arg(format!("{base}/_sim/faults"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201");
    let edit = |name: &str, from: &str, to: &str| {
        let file = s.path().join(format!("prod/{name}.yaml"));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&file, text.replace(from, to)).unwrap();
    };
    let user_before = reconciles(&ep, "ca-user-service");
    let cart_before = reconciles(&ep, "ca-cart-service");
    // One git pull changes both: they go into the same pass.
    edit("ca-user-service", "min: 2, max: 10", "min: 3, max: 10");
    edit("ca-cart-service", "min: 2, max: 10", "min: 3, max: 10");
    let pulled = Instant::now();
    wait_for("ca-cart-service reported", Duration::from_secs(30), || {
        reconciles(&ep, "ca-cart-service") > cart_before
    });
    assert!(
        writes_to(&base, "ca-user-service") >= 1,
        "its change is on its way"
    );
    assert_eq!(
        reconciles(&ep, "ca-user-service"),
        user_before,
        "still waiting for its revision {:?} after the pull, so ca-cart-service was reported without waiting for it",
        pulled.elapsed()
    );

    // The next change to ca-cart-service goes out at once, not when ca-user-service is done.
    let cart_writes = writes_to(&base, "ca-cart-service");
    edit("ca-cart-service", "min: 3, max: 10", "min: 4, max: 10");
    let edited = Instant::now();
    wait_for(
        "the second write to ca-cart-service",
        Duration::from_secs(30),
        || writes_to(&base, "ca-cart-service") > cart_writes,
    );
    let took = edited.elapsed();
    assert_eq!(
        reconciles(&ep, "ca-user-service"),
        user_before,
        "ca-user-service was still waiting"
    );
    assert!(
        took < Duration::from_secs(3),
        "first write {took:?} after the edit"
    );
    assert_eq!(sim_json(&base, "outages"), serde_json::json!([]));
}

/// The example platform in a scratch tree, its simulator, and a controller (`--interval 1h`,
/// with `extra`) that has converged it.
struct Converged {
    s: Scratch,
    base: String,
    ep: String,
    _sim: Proc,
    _ctl: Proc,
}

fn converged(extra: &[&str]) -> Converged {
    let s = Scratch::new();
    copy_tree(&root().join("desired-state"), s.path());
    let (sim, base) = simulator(s.path(), &["--revision-ready", "1s", "--lro", "sync"]);
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let ctl = controller_with(s.path(), &base, port, "1h", extra, Stdio::null());
    wait_for("readyz", Duration::from_secs(90), || {
        get(&format!("{ep}/readyz")).0 == 200
    });
    Converged {
        s,
        base,
        ep,
        _sim: sim,
        _ctl: ctl,
    }
}

/// Changes `from` to `to` in `prod/NAME.yaml` of the scratch tree.
fn edit_prod(dir: &Path, name: &str, from: &str, to: &str) {
    let file = dir.join(format!("prod/{name}.yaml"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&file, text.replace(from, to)).unwrap();
}

/// An app's entry in `/status` (prod).
fn app_status(ep: &str, app: &str) -> Value {
    let status: Value = serde_json::from_str(&get(&format!("{ep}/status")).1).unwrap();
    status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == app && a["resourceGroup"] == "rg-xshopai-prod")
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn an_app_waiting_for_its_revision_frees_its_slot_even_at_concurrency_1() {
    let Converged {
        s,
        base,
        ep,
        _sim,
        _ctl,
    } = converged(&["--concurrency", "1"]);
    // From now on a new revision takes 20 s to run.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PATCH"])
        .args(["-d", r#"{"revisionReadyMs": 20000}"#])
        .arg(format!("{base}/_sim/config"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // One git pull changes two apps of one group: they go into one pass, ca-user-service
    // first (the queue is in name order), and its new revision takes 20 s.
    let user_writes = writes_to(&base, "ca-user-service");
    let bff_writes = writes_to(&base, "ca-web-bff");
    edit_prod(
        s.path(),
        "ca-user-service",
        "min: 2, max: 10",
        "min: 4, max: 10",
    );
    edit_prod(s.path(), "ca-web-bff", "min: 2, max: 10", "min: 3, max: 10");
    let edited = Instant::now();
    wait_for(
        "ca-user-service's new revision",
        Duration::from_secs(10),
        || writes_to(&base, "ca-user-service") > user_writes,
    );
    // With the only slot, the other app's write still goes out at once.
    wait_for("the write to ca-web-bff", Duration::from_secs(30), || {
        writes_to(&base, "ca-web-bff") > bff_writes
    });
    let took = edited.elapsed();
    assert_eq!(
        app_status(&ep, "ca-user-service")["state"],
        "applying",
        "ca-user-service was still waiting for its revision"
    );
    assert!(
        took < Duration::from_secs(5),
        "ca-web-bff's first write {took:?} after the edit"
    );
    wait_for("ca-user-service in sync", Duration::from_secs(60), || {
        app_status(&ep, "ca-user-service")["state"] == "inSync"
    });
    assert_eq!(sim_json(&base, "outages"), serde_json::json!([]));
}

#[test]
fn a_blocked_spec_waits_for_a_change_instead_of_backing_off() {
    let Converged {
        s, ep, _sim, _ctl, ..
    } = converged(&[]);
    // A container the app does not have: valid YAML, unreachable in Azure.
    edit_prod(
        s.path(),
        "ca-cart-service",
        "cart-service: crxshopaiprod",
        "cart-sidecar: crxshopaiprod",
    );
    wait_for("blocked", Duration::from_secs(10), || {
        app_status(&ep, "ca-cart-service")["state"] == "blocked"
    });
    let blocked = app_status(&ep, "ca-cart-service");
    assert!(
        blocked["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("`cart-sidecar`, which the app does not have")),
        "{blocked}"
    );
    // A failure would be retried in 5 s, 10 s, ...: a blocked spec is not retried at all.
    std::thread::sleep(Duration::from_secs(8));
    let later = app_status(&ep, "ca-cart-service");
    assert_eq!(later["failures"], 0, "{later}");
    assert_eq!(later["reconciles"], blocked["reconciles"], "{later}");
    // The fix is picked up at once.
    edit_prod(
        s.path(),
        "ca-cart-service",
        "cart-sidecar: crxshopaiprod",
        "cart-service: crxshopaiprod",
    );
    wait_for("in sync again", Duration::from_secs(10), || {
        app_status(&ep, "ca-cart-service")["state"] == "inSync"
    });
}

/// The metrics the README documents, by family name.
const DOCUMENTED_METRICS: &[&str] = &[
    "acar_passes",
    "acar_pass_duration_seconds",
    "acar_actions",
    "acar_apps",
    "acar_queue_depth",
    "acar_last_successful_pass_timestamp_seconds",
    "acar_desired_state_errors",
    "acar_registry_tags_deleted",
    "acar_arm_requests",
    "acar_arm_ratelimit_remaining",
    "acar_leader",
    "acar_notifications",
];

#[test]
fn every_documented_metric_moves_when_its_event_happens() {
    // The README's list and this one are the same.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `GET /metrics`"))
        .unwrap();
    let documented: Vec<String> = row
        .split('`')
        .filter(|t| t.starts_with("acar_"))
        .map(|t| {
            let name = t.split('{').next().unwrap_or(t);
            name.strip_suffix("_total").unwrap_or(name).to_owned()
        })
        .collect();
    assert_eq!(documented, DOCUMENTED_METRICS, "{row}");

    let Converged {
        s, ep, _sim, _ctl, ..
    } = converged(&[]);
    // A webhook target, which the broken edit below is told to.
    let receiver = common::receiver::Receiver::start();
    std::fs::write(
        s.path().join("notify.yaml"),
        format!(
            "apiVersion: aca-reconciler/v1\nkind: Notification\nmetadata: {{name: ops}}\nspec:\n  type: webhook\n  url: {}\n",
            receiver.url("/hook")
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    // A broken edit, for the desired-state gauge.
    edit_prod(
        s.path(),
        "ca-cart-service",
        "min: 2, max: 10",
        "min: 30, max: 10",
    );
    let scrape = || {
        let (_, text) = get(&format!("{ep}/metrics"));
        let lines: Vec<std::io::Result<String>> = text.lines().map(|l| Ok(l.to_owned())).collect();
        prometheus_parse::Scrape::parse(lines.into_iter()).unwrap()
    };
    // Each family's largest sample (a histogram: its count).
    let moved = |scrape: &prometheus_parse::Scrape, family: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == family
                    || s.metric == format!("{family}_total")
                    || s.metric == format!("{family}_count")
            })
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => 0.0,
            })
            .fold(0.0, f64::max)
    };
    let mut last = scrape();
    wait_for(
        "every documented metric to move",
        Duration::from_secs(60),
        || {
            last = scrape();
            DOCUMENTED_METRICS.iter().all(|f| moved(&last, f) > 0.0)
        },
    );
    for f in DOCUMENTED_METRICS {
        assert!(moved(&last, f) > 0.0, "{f} never moved");
    }
}

#[test]
fn a_restarted_controller_spreads_its_first_verifications_over_the_resyncs() {
    // A controller converges the platform and stops; a new one starts on the platform in sync.
    let s = Scratch::new();
    copy_tree(&root().join("desired-state"), s.path());
    let (_sim, base) = simulator(s.path(), &["--revision-ready", "1s", "--lro", "sync"]);
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let mut first = controller_with(s.path(), &base, port, "1h", &[], Stdio::null());
    wait_for("readyz", Duration::from_secs(90), || {
        get(&format!("{ep}/readyz")).0 == 200
    });
    first.stop();
    let revision_lists = || {
        sim_json(&base, "requests")["byOperation"]["ContainerAppsRevisions_ListRevisions"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = revision_lists();
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let _second = controller_with(
        s.path(),
        &base,
        port,
        "1s",
        &["--reverify-after", "3"],
        Stdio::null(),
    );
    wait_for("readyz", Duration::from_secs(60), || {
        get(&format!("{ep}/readyz")).0 == 200
    });
    // Its first resync lists the groups and trusts what they show: every app in sync, and no
    // revision read (the old loop read all 10 apps' revisions here, and retention all again).
    let status: Value = serde_json::from_str(&get(&format!("{ep}/status")).1).unwrap();
    let apps = status["apps"].as_array().unwrap();
    assert!(
        apps.iter()
            .filter(|a| a["resourceGroup"] == "rg-xshopai-prod")
            .all(|a| a["state"] == "inSync"),
        "{status:#}"
    );
    let at_first = revision_lists() - before;
    assert!(
        at_first < 10,
        "{at_first} revision lists at the first resync of 10 apps"
    );
    // Within --reverify-after resyncs (and a spare), every app has been read in full once.
    std::thread::sleep(Duration::from_secs(5));
    let later = revision_lists() - before;
    assert!(
        later >= 10,
        "every app verified in full within the limit: {later} revision lists"
    );
    println!(
        "first verifications: {at_first} revision lists at the first resync, {later} after 5 s"
    );
}

//! Progressive delivery as an operator sees it: `run` (the real binary) against a `simulate`
//! process whose apps have users (`.simulator.yaml`), metrics and ingress, with short pauses
//! and intervals. Judged by what Azure saw (`/_sim/audit`: every traffic write, in order) and
//! by what the controller says (`/status`, `status`, `rollout status`). The resilience tests kill
//! `run` with SIGKILL at random moments of a walk, and (with Azurite, ignored: run by
//! `tests/azurite/run.sh`) kill the leader of two replicas mid-walk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Proc, Scratch, bin, get, root, run, wait_for};
use serde_json::Value;

const HEADER: &str = "rollout-test";
const SUB: &str = "6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b";
const RG: &str = "rg-rollout";
const GOOD: &str = "crxshopaiprod.azurecr.io/demo:v2.0.0";
const BAD: &str = "crxshopaiprod.azurecr.io/demo:v2.0.1-bad";

/// A desired-state tree, a `simulate` process seeded from it, and how to reach its ingress.
struct Platform {
    dir: Scratch,
    _sim: Proc,
    base: String,
    ingress: Vec<String>,
}

/// One app document: `rollout` is the YAML of `spec.rollout`, indented by four.
fn app(name: &str, image: &str, rollout: &str) -> String {
    format!(
        "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {{name: {name}}}\nspec:\n  revisionMode: multiple\n  images: {{demo: {image}}}\n  rollout:\n{rollout}"
    )
}

fn platform(apps: &[String], sidecar: &str) -> Platform {
    let dir = Scratch::new();
    dir.write(
        "desired/_defaults.yaml",
        &format!(
            "apiVersion: aca-reconciler/v1\nkind: Defaults\nmetadata: {{name: d}}\nspec: {{subscription: {SUB}, resourceGroup: {RG}}}\n"
        ),
    );
    for (i, a) in apps.iter().enumerate() {
        dir.write(&format!("desired/app{i}.yaml"), a);
    }
    dir.write("desired/.simulator.yaml", sidecar);
    let mut child = bin(&root())
        .args(["simulate", "--listen", "127.0.0.1:0"])
        .args(["--identity-header", HEADER, "--seed"])
        .arg(dir.path().join("desired"))
        .args(["--revision-ready", "1s", "--lro", "async"])
        .args(["--metrics-delay", "0s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = common::banner_base(&lines.next().unwrap().unwrap());
    let mut ingress = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(v) = line.split("--ingress-endpoint ").nth(1) {
            ingress.push(v.trim().to_owned());
        }
        if line.starts_with("Serving") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    assert!(!ingress.is_empty(), "simulate printed no ingress mapping");
    Platform {
        dir,
        _sim: Proc(child),
        base,
        ingress,
    }
}

impl Platform {
    /// The binary, pointed at the simulator as a user points it at Azure.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bin(self.dir.path());
        c.args(args)
            .args(["--desired-state", "desired", "--arm-endpoint", &self.base])
            .args(["--credential", "managed", "--metrics-lag", "0s"])
            .env("IDENTITY_ENDPOINT", format!("{}/msi/token", self.base))
            .env("IDENTITY_HEADER", HEADER);
        for i in &self.ingress {
            c.args(["--ingress-endpoint", i]);
        }
        c
    }

    /// `run` on a free port; its `/status` URL.
    fn controller(&self, extra: &[&str]) -> (Proc, String) {
        let port = common::free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["run", "--listen", &listen];
        if !extra.contains(&"--interval") {
            args.extend_from_slice(&["--interval", "1h"]);
        }
        args.extend_from_slice(extra);
        let child = self
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (Proc(child), format!("http://127.0.0.1:{port}"))
    }

    /// Every write the simulator saw to `app`, in order.
    fn writes(&self, app: &str) -> Vec<Value> {
        let audit: Value =
            serde_json::from_str(&get(&format!("{}/_sim/audit", self.base)).1).unwrap();
        let key = format!("{SUB}/{RG}/{app}").to_ascii_lowercase();
        audit["writes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["app"].as_str() == Some(key.as_str()))
            .cloned()
            .collect()
    }

    /// The new revision's weight in each traffic write that names it, in order; and checks
    /// that every traffic write sums to 100.
    fn canary_weights(&self, app: &str, canary: &str) -> Vec<i64> {
        let mut out = Vec::new();
        for w in self.writes(app) {
            let Some(rules) = w["traffic"].as_array() else {
                continue;
            };
            let sum: i64 = rules.iter().map(|r| r["weight"].as_i64().unwrap()).sum();
            assert_eq!(sum, 100, "a traffic write that does not sum to 100: {w}");
            if let Some(r) = rules.iter().find(|r| r["revisionName"] == canary) {
                out.push(r["weight"].as_i64().unwrap());
            }
        }
        out
    }
}

/// The app's entry of the controller's `/status` (Null until it is there).
fn app_status(ep: &str, app: &str) -> Value {
    let (code, body) = get(&format!("{ep}/status"));
    if code != 200 {
        return Value::Null;
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == app).cloned())
        .unwrap_or(Value::Null)
}

fn wait_state(ep: &str, app: &str, state: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let started = std::time::Instant::now();
    while started.elapsed() < timeout {
        last = app_status(ep, app);
        if last["state"] == state {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{app} did not reach {state} within {timeout:?}; last /status entry: {last:#}");
}

const STEPS: &str =
    "    steps:\n      - {weight: 20, pause: 2s}\n      - {weight: 60, pause: 2s}\n";

fn analysis(interval: &str) -> String {
    format!(
        "    analysis:\n      interval: {interval}\n      maxFailedChecks: 2\n      minRequests: 5\n      successRate: {{min: 99}}\n      probes:\n        - {{path: /health, expectStatus: 200}}\n    progressDeadline: 2m\n"
    )
}

#[test]
fn a_good_image_walks_every_step_and_is_promoted() {
    let p = platform(
        &[app("ca-good", GOOD, &format!("{STEPS}{}", analysis("1s")))],
        "requestsPerSecond: 100\n",
    );
    let (_ctl, ep) = p.controller(&[]);
    let done = wait_state(&ep, "ca-good", "inSync", Duration::from_secs(120));
    let rollout = &done["rollout"];
    assert_eq!(rollout["phase"], "promoted", "{done:#}");
    let canary = rollout["canary"].as_str().unwrap();
    assert_eq!(
        p.canary_weights("ca-good", canary),
        [20, 60, 100],
        "the weights over time are exactly the steps, then 100%"
    );
    // The checks are counted in /metrics, and the phase is promoted.
    let (_, metrics) = get(&format!("{ep}/metrics"));
    assert!(
        metrics.lines().any(
            |l| l.starts_with("acar_analysis_checks_total{result=\"pass\"}") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "acar_rollout_phase{{app=\"{RG}/ca-good\",phase=\"promoted\"}} 1"
        )),
        "{metrics}"
    );
    // Each step was held at least its pause: the writes that moved traffic are >= 2 s apart.
    let times: Vec<i64> = p
        .writes("ca-good")
        .iter()
        .filter(|w| {
            w["traffic"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["revisionName"] == canary))
        })
        .map(|w| w["at"].as_i64().unwrap())
        .collect();
    for pair in times.windows(2) {
        // (Counted from when the step was planned, a few ms before its write arrived.)
        assert!(
            pair[1] - pair[0] >= 1_900,
            "a step held less than its pause: {times:?}"
        );
    }
}

#[test]
fn a_bad_image_rolls_back_with_its_numbers_and_is_not_retried_until_asked() {
    let p = platform(
        &[app(
            "ca-bad",
            BAD,
            &format!(
                "    steps:\n      - {{weight: 50, pause: 30s}}\n{}",
                analysis("2s")
            ),
        )],
        &format!("requestsPerSecond: 100\nimages:\n  {BAD}: {{errorRate: 0.2}}\n"),
    );
    let (_ctl, ep) = p.controller(&["--interval", "2s"]);
    let back = wait_state(&ep, "ca-bad", "rolledBack", Duration::from_secs(120));
    let r = &back["rollout"];
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("success rate") && reason.contains("< 99") && reason.contains("checks 2/2"),
        "{back:#}"
    );
    let (stable, canary) = (r["stable"].as_str().unwrap(), r["canary"].as_str().unwrap());
    assert_eq!(p.canary_weights("ca-bad", canary), [50], "{back:#}");
    let last = p
        .writes("ca-bad")
        .into_iter()
        .rev()
        .find(|w| w["traffic"].is_array())
        .unwrap();
    assert_eq!(
        last["traffic"],
        serde_json::json!([{"revisionName": stable, "weight": 100}]),
        "all traffic back on the stable revision"
    );
    // One check per interval: the failed check counted (a tags-only write) and the rollback
    // that the next one brought are an interval (2 s) apart.
    let writes = p.writes("ca-bad");
    let counted = writes
        .iter()
        .find(|w| w["traffic"].is_null() && w["fields"].as_array().is_some_and(|f| f.len() == 1))
        .unwrap_or_else(|| panic!("no failed check was counted: {writes:#?}"));
    assert!(
        last["at"].as_i64().unwrap() - counted["at"].as_i64().unwrap() >= 1_900,
        "two checks less than an interval apart: {counted} then {last}"
    );
    // Later resyncs (every 2 s) do not try the same revision again.
    let writes = p.writes("ca-bad").len();
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        p.writes("ca-bad").len(),
        writes,
        "a rolled-back spec was retried"
    );
    // `status` exits 2 (the app needs attention); `rollout status` too.
    run(&mut p.cmd(&["status", "--server", &ep]), 2);
    // `plan` shows it, with the reason (exit 1, as for a blocked app).
    let out = run(&mut p.cmd(&["plan"]), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rolledBack: the last rollout rolled back (success rate"),
        "{text}"
    );
    // A person retries: the same revision walks again (and, being bad, rolls back again).
    run(
        &mut p.cmd(&["rollout", "retry", "ca-bad", "--wait", "30s"]),
        0,
    );
    wait_for(
        "the retried canary's first step",
        Duration::from_secs(60),
        || p.canary_weights("ca-bad", canary) == [50, 50],
    );
}

#[test]
fn no_traffic_holds_the_step_and_says_why() {
    let p = platform(
        &[app("ca-quiet", GOOD, &format!("{STEPS}{}", analysis("1s")))],
        "requestsPerSecond: 0\n",
    );
    let (_ctl, ep) = p.controller(&[]);
    wait_for("a noData check in /status", Duration::from_secs(60), || {
        app_status(&ep, "ca-quiet")["rollout"]["lastCheck"]["verdict"] == "noData"
    });
    std::thread::sleep(Duration::from_secs(4));
    let s = app_status(&ep, "ca-quiet");
    assert_eq!(s["state"], "progressing", "{s:#}");
    assert_eq!(s["rollout"]["step"], 0, "held at the first step: {s:#}");
    let why = s["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(why.contains("minRequests"), "{s:#}");
}

#[test]
fn abort_and_promote_from_the_cli_act_on_a_running_controllers_rollout() {
    let long = "    steps:\n      - {weight: 10, pause: 10m}\n    progressDeadline: 20m\n";
    let p = platform(
        &[app("ca-one", GOOD, long), app("ca-two", GOOD, long)],
        "requestsPerSecond: 10\n",
    );
    let (_ctl, ep) = p.controller(&[]);
    for a in ["ca-one", "ca-two"] {
        wait_for("the first step", Duration::from_secs(60), || {
            app_status(&ep, a)["rollout"]["step"] == 0
                && app_status(&ep, a)["rollout"]["weight"] == 10
        });
    }
    run(
        &mut p.cmd(&["rollout", "abort", "ca-one", "--wait", "30s"]),
        0,
    );
    let s = wait_state(&ep, "ca-one", "rolledBack", Duration::from_secs(30));
    assert!(
        s["rollout"]["reason"]
            .as_str()
            .unwrap()
            .contains("rollout abort"),
        "{s:#}"
    );
    run(
        &mut p.cmd(&["rollout", "promote", "ca-two", "--wait", "30s"]),
        0,
    );
    let s = wait_state(&ep, "ca-two", "inSync", Duration::from_secs(30));
    let canary = s["rollout"]["canary"].as_str().unwrap();
    assert_eq!(p.canary_weights("ca-two", canary), [10, 100], "{s:#}");
}

#[test]
fn blue_green_previews_on_its_label_switches_on_approval_and_switches_back_on_failure() {
    let manual = "    strategy: blueGreen\n    approval: manual\n    analysis:\n      interval: 1s\n      probes:\n        - {path: /health}\n";
    let auto = format!(
        "    strategy: blueGreen\n    postSwitchPause: 30s\n{}",
        analysis("1s")
    );
    let p = platform(
        &[app("ca-blue", GOOD, manual), app("ca-green", BAD, &auto)],
        &format!("requestsPerSecond: 50\nimages:\n  {BAD}: {{errorRate: 0.2}}\n"),
    );
    let (_ctl, ep) = p.controller(&[]);
    // Manual: the preview label serves the new revision at 0%, and it waits for a person.
    wait_for("approval to be awaited", Duration::from_secs(60), || {
        app_status(&ep, "ca-blue")["rollout"]["phase"] == "waitingForApproval"
    });
    let s = app_status(&ep, "ca-blue");
    let canary = s["rollout"]["canary"].as_str().unwrap().to_owned();
    let preview = p
        .writes("ca-blue")
        .into_iter()
        .filter_map(|w| w["traffic"].as_array().cloned())
        .flatten()
        .find(|r| r["revisionName"] == canary.as_str())
        .unwrap();
    assert_eq!(
        (preview["weight"].as_i64(), preview["label"].as_str()),
        (Some(0), Some("preview"))
    );
    run(
        &mut p.cmd(&["rollout", "promote", "ca-blue", "--wait", "30s"]),
        0,
    );
    wait_state(&ep, "ca-blue", "inSync", Duration::from_secs(30));
    // The approval switches (100% with the label) and the post-switch check promotes (100%).
    assert_eq!(p.canary_weights("ca-blue", &canary), [0, 100, 100]);
    // Auto: the probes pass on the preview, 100% switches at once, the failures after the
    // switch switch back.
    let s = wait_state(&ep, "ca-green", "rolledBack", Duration::from_secs(90));
    let canary = s["rollout"]["canary"].as_str().unwrap();
    assert_eq!(p.canary_weights("ca-green", canary), [0, 100, 0], "{s:#}");
}

#[test]
fn plan_shows_the_walk_and_status_the_step() {
    let p = platform(
        &[app(
            "ca-slow",
            GOOD,
            "    steps:\n      - {weight: 10, pause: 10m}\n    progressDeadline: 20m\n",
        )],
        "requestsPerSecond: 10\n",
    );
    // Before anything runs: `plan` says which steps the new image will walk.
    let out = run(&mut p.cmd(&["plan"]), 2);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("↻ rollout (canary): 10% for 10m, then 100% or 20m without progress"),
        "{text}"
    );
    let out = p.cmd(&["plan", "--output", "json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apps"][0]["rollout"]["phase"], "starting", "{v:#}");
    assert_eq!(v["apps"][0]["rollout"]["steps"][0]["weight"], 10, "{v:#}");
    // During the step: healthy, so `status` exits 0, and says where the rollout is.
    let (_ctl, ep) = p.controller(&[]);
    wait_state(&ep, "ca-slow", "progressing", Duration::from_secs(60));
    wait_for("the first step", Duration::from_secs(60), || {
        app_status(&ep, "ca-slow")["rollout"]["weight"] == 10
    });
    run(&mut p.cmd(&["status", "--server", &ep]), 0);
    let out = run(&mut p.cmd(&["status"]), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rollout progressing step 1/1 (10%)"),
        "{text}"
    );
    let (_, metrics) = get(&format!("{ep}/metrics"));
    assert!(
        metrics.contains(&format!("acar_rollout_step{{app=\"{RG}/ca-slow\"}} 1")),
        "{metrics}"
    );
}

/// A small deterministic generator (SplitMix64), seeded from `ACAR_CHAOS_SEED` or the clock.
struct Rng(u64);

impl Rng {
    fn new() -> (Self, u64) {
        let seed = std::env::var("ACAR_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| aca_reconciler::time::Clock::new().now().unsigned_abs());
        (Self(seed), seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// The controller's successful traffic writes to `app`, in order: (when, rules).
fn traffic_writes(p: &Platform, app: &str) -> Vec<(i64, Vec<Value>)> {
    p.writes(app)
        .into_iter()
        .filter(|w| w["client"] == "aca-reconciler" && w["status"].as_u64() < Some(300))
        .filter_map(|w| Some((w["at"].as_i64()?, w["traffic"].as_array()?.clone())))
        .collect()
}

/// The new revision of a canary walk seen in the audit (the one a two-rule write gives less
/// than 100%), and whether a later write gave it 100% (promoted).
fn walk_in_audit(p: &Platform, app: &str) -> (Option<String>, bool) {
    let mut canary: Option<String> = None;
    let mut promoted = false;
    for (_, rules) in traffic_writes(p, app) {
        if rules.len() == 2 && canary.is_none() {
            // The first step gives the new revision the smaller share (20%).
            let min = rules.iter().min_by_key(|r| r["weight"].as_i64()).unwrap();
            canary = min["revisionName"].as_str().map(str::to_owned);
        } else if let (Some(c), [only]) = (&canary, rules.as_slice()) {
            promoted |= only["revisionName"] == c.as_str() && only["weight"] == 100;
        }
    }
    (canary, promoted)
}

/// What the resilience tests assert of a canary walk `[20, 50, 80]` of `pause_ms` each, from
/// Azure's side (the audit): every traffic write sums to 100 and carries the rollout's state
/// tag (one PATCH); after the pin of 100% on the stable revision, the new revision's weights
/// are exactly the steps, then 100 (no step repeated, none skipped, no traffic moved twice);
/// and each step was held at least its pause.
fn assert_exact_walk(p: &Platform, app: &str, canary: &str, pause_ms: i64) -> Vec<i64> {
    let writes: Vec<Value> = p
        .writes(app)
        .into_iter()
        .filter(|w| w["client"] == "aca-reconciler" && w["traffic"].is_array())
        .collect();
    for w in &writes {
        let fields: Vec<&str> = w["fields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            fields.contains(&"/tags/aca-reconciler-rollout"),
            "a traffic write without the rollout's state tag (not one PATCH): {w}"
        );
    }
    let weights = p.canary_weights(app, canary);
    let moved: Vec<(i64, Vec<Value>)> = traffic_writes(p, app);
    let rules_of = |rules: &[Value]| -> Vec<(String, i64)> {
        rules
            .iter()
            .map(|r| {
                (
                    r["revisionName"].as_str().unwrap_or("?").to_owned(),
                    r["weight"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let history: Vec<_> = moved.iter().map(|(at, r)| (at, rules_of(r))).collect();
    assert_eq!(
        weights,
        [20, 50, 80, 100],
        "the new revision's weights over time are exactly the steps, then 100; traffic writes: {history:#?}"
    );
    // Before the walk, at most the pin of 100% on the stable revision by name (once).
    let first_step = moved
        .iter()
        .position(|(_, r)| r.iter().any(|r| r["revisionName"] == canary))
        .unwrap();
    assert!(
        first_step <= 1 && moved.len() == first_step + 4,
        "traffic moved other than pin + 3 steps + promotion: {history:#?}"
    );
    let times: Vec<i64> = moved[first_step..].iter().map(|(at, _)| *at).collect();
    for (i, pair) in times.windows(2).enumerate() {
        assert!(
            pair[1] - pair[0] >= pause_ms - 100,
            "step {} held {} ms, less than its pause {pause_ms} ms: {history:#?}",
            i + 1,
            pair[1] - pair[0]
        );
    }
    times.windows(2).map(|p| p[1] - p[0]).collect()
}

const WALK: &str = "    steps:\n      - {weight: 20, pause: 4s}\n      - {weight: 50, pause: 4s}\n      - {weight: 80, pause: 4s}\n";

/// kill -9 of `run` at random moments of a canary walk, restarted at once each time: Azure
/// sees the walk exactly as without the kills. The seed is printed; `ACAR_CHAOS_SEED` replays
/// the kill moments.
#[test]
fn kill_9_at_random_moments_of_a_rollout_resumes_the_same_step_at_the_same_point() {
    let (mut rng, seed) = Rng::new();
    println!("rollout kill -9: seed {seed} (ACAR_CHAOS_SEED={seed} replays the kill moments)");
    let p = platform(
        &[app("ca-crash", GOOD, &format!("{WALK}{}", analysis("1s")))],
        "requestsPerSecond: 100\n",
    );
    let started = std::time::Instant::now();
    let (mut during, mut kills) = (0, 0);
    let mut moments = Vec::new();
    // Each life is shorter than a step's pause (4 s): a controller that held a step for its
    // pause from its own start, not from the step's, would never finish while the kills go on.
    loop {
        let (mut ctl, _) = p.controller(&[]);
        let life = 100 + rng.below(1_400);
        std::thread::sleep(Duration::from_millis(life));
        ctl.kill_9();
        kills += 1;
        moments.push(life);
        let (_, promoted) = walk_in_audit(&p, "ca-crash");
        if promoted {
            break;
        }
        // Mid-rollout: after the template PATCH that started it.
        if !p.writes("ca-crash").is_empty() {
            during += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the rollout did not finish within 60 s of kills every 0.1-1.5 s (seed {seed}; {kills} kills); traffic writes: {:#?}",
            traffic_writes(&p, "ca-crash")
        );
    }
    // Once more after the walk: the promoted rollout stays as it is.
    let (_ctl, ep) = p.controller(&[]);
    let done = wait_state(&ep, "ca-crash", "inSync", Duration::from_secs(60));
    assert_eq!(done["rollout"]["phase"], "promoted", "{done:#}");
    let canary = done["rollout"]["canary"].as_str().unwrap();
    let held = assert_exact_walk(&p, "ca-crash", canary, 4_000);
    println!(
        "rollout kill -9: {kills} kills ({during} mid-walk) after {moments:?} ms of life; steps held {held:?} ms; walked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        during >= 10,
        "only {during} kills landed mid-walk (seed {seed}): the kill moments need to be denser"
    );
}

/// `leader` or `standby` (with `--lease-blob`), from the controller's `/status`.
fn leadership(ep: &str) -> String {
    let (code, body) = get(&format!("{ep}/status"));
    if code != 200 {
        return String::new();
    }
    serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["leadership"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Two `run` replicas on one blob lease (Azurite); the leader is killed (SIGKILL) in the
/// middle of a canary walk; the standby takes over once the lease lapses and finishes the
/// walk exactly where the leader left it.
#[test]
#[ignore = "needs Azurite: `bash tests/azurite/run.sh` installs it and runs this test"]
fn the_standby_takes_over_a_rollout_when_the_leader_dies_and_finishes_it() {
    let (mut rng, seed) = Rng::new();
    println!(
        "rollout leader takeover: seed {seed} (ACAR_CHAOS_SEED={seed} replays the kill moment)"
    );
    let p = platform(
        &[app("ca-lead", GOOD, &format!("{WALK}{}", analysis("1s")))],
        "requestsPerSecond: 100\n",
    );
    let storage = p.dir.path().join("azurite");
    std::fs::create_dir_all(&storage).unwrap();
    let (_azurite, account) = common::azurite(&storage);
    let sas = common::azurite_sas();
    let made = common::send(
        "PUT",
        &format!("{account}/leases?restype=container&{sas}"),
        None,
    );
    assert_eq!(made, 201, "creating the container");
    let lease = format!("{account}/leases/aca-reconciler?{sas}");
    let election = ["--lease-blob", lease.as_str(), "--lease-duration", "15s"];
    let (mut a, ea) = p.controller(&election);
    wait_for("A to lead", Duration::from_secs(30), || {
        leadership(&ea) == "leader"
    });
    let (_b, eb) = p.controller(&election);
    wait_for("B to stand by", Duration::from_secs(30), || {
        leadership(&eb) == "standby"
    });
    // Mid-walk: at a random moment of the second step (50%, held 4 s).
    wait_for(
        "A to reach the second step",
        Duration::from_secs(60),
        || app_status(&ea, "ca-lead")["rollout"]["weight"] == 50,
    );
    let at = rng.below(3_500);
    std::thread::sleep(Duration::from_millis(at));
    let before = app_status(&ea, "ca-lead");
    a.kill_9();
    let killed = std::time::Instant::now();
    assert_eq!(
        before["rollout"]["phase"], "progressing",
        "the leader died mid-walk: {before:#}"
    );
    wait_for("B to lead after A died", Duration::from_secs(30), || {
        leadership(&eb) == "leader"
    });
    let takeover = killed.elapsed();
    let done = wait_state(&eb, "ca-lead", "inSync", Duration::from_secs(60));
    assert_eq!(done["rollout"]["phase"], "promoted", "{done:#}");
    let canary = done["rollout"]["canary"].as_str().unwrap();
    let held = assert_exact_walk(&p, "ca-lead", canary, 4_000);
    println!(
        "rollout leader takeover: A killed {at} ms into the 50% step; B led {:.1} s later and finished the walk; steps held {held:?} ms",
        takeover.as_secs_f64()
    );
}

/// kill -9 at random moments of a bad image's rollout, and for a few lives after it rolled
/// back: it rolls back once, after `maxFailedChecks` failed checks, and no restart walks it
/// again.
#[test]
fn kill_9_during_a_bad_images_rollout_rolls_back_once_and_never_retries() {
    let (mut rng, seed) = Rng::new();
    println!("rollout kill -9, bad image: seed {seed} (ACAR_CHAOS_SEED={seed} replays it)");
    let spec = "    steps:\n      - {weight: 50, pause: 60s}\n    analysis:\n      interval: 1s\n      maxFailedChecks: 4\n      minRequests: 5\n      successRate: {min: 99}\n    progressDeadline: 5m\n";
    let p = platform(
        &[app("ca-worse", BAD, spec)],
        &format!("requestsPerSecond: 100\nimages:\n  {BAD}: {{errorRate: 0.2}}\n"),
    );
    let rolled_back = |p: &Platform| {
        let moved = traffic_writes(p, "ca-worse");
        let step = moved.iter().position(|(_, r)| r.len() == 2);
        step.is_some_and(|i| moved[i + 1..].iter().any(|(_, r)| r.len() == 1))
    };
    let (mut kills, mut after) = (0, 0);
    let started = std::time::Instant::now();
    // Kills go on for a few lives after the rollback: a restart must not walk it again.
    while after < 4 {
        let (mut ctl, _) = p.controller(&[]);
        std::thread::sleep(Duration::from_millis(100 + rng.below(1_400)));
        ctl.kill_9();
        kills += 1;
        if rolled_back(&p) {
            after += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no rollback within 90 s of kills (seed {seed}): {:#?}",
            traffic_writes(&p, "ca-worse")
        );
    }
    let (_ctl, ep) = p.controller(&[]);
    let s = wait_state(&ep, "ca-worse", "rolledBack", Duration::from_secs(60));
    let (stable, canary) = (
        s["rollout"]["stable"].as_str().unwrap(),
        s["rollout"]["canary"].as_str().unwrap(),
    );
    let reason = s["rollout"]["reason"].as_str().unwrap();
    assert!(reason.contains("checks 4/4"), "{s:#}");
    assert_eq!(p.canary_weights("ca-worse", canary), [50], "{s:#}");
    let moved = traffic_writes(&p, "ca-worse");
    let last: Vec<&Value> = moved
        .iter()
        .skip_while(|(_, r)| r.len() != 2)
        .skip(1)
        .map(|(_, r)| &r[0])
        .collect();
    assert_eq!(
        last,
        [&serde_json::json!({"revisionName": stable, "weight": 100})],
        "traffic back on the stable revision once, and never moved again: {moved:#?}"
    );
    println!(
        "rollout kill -9, bad image: {kills} kills, rolled back ({reason}) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn apply_starts_a_rollout_and_returns_while_its_step_holds() {
    let p = platform(
        &[app(
            "ca-once",
            GOOD,
            "    steps:\n      - {weight: 10, pause: 10m}\n    progressDeadline: 20m\n",
        )],
        "requestsPerSecond: 10\n",
    );
    let out = run(&mut p.cmd(&["apply"]), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ca-once: ↻ rollout progressing step 1/1 (10%)")
            && text.contains("`run` carries it on"),
        "{text}"
    );
}

#[test]
fn the_readmes_demo_rolls_back_the_bad_canary_on_the_embedded_simulator() {
    let dir = Scratch::new();
    std::fs::create_dir_all(dir.path().join("rollout")).unwrap();
    common::copy_tree(
        &root().join("examples/rollout"),
        &dir.path().join("rollout"),
    );
    let port = common::free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let _ctl = Proc(
        bin(dir.path())
            .args(["run", "--simulate", "--desired-state", "rollout"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let s = wait_state(
        &ep,
        "ca-user-service",
        "rolledBack",
        Duration::from_secs(150),
    );
    let reason = s["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("checks 2/2"), "{s:#}");
    let good = app_status(&ep, "ca-cart-service");
    assert_ne!(good["state"], "rolledBack", "{good:#}");
}

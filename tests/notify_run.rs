//! Events and notifications through the binary: `run` against a separate `simulate` process,
//! its `/status` events, the `events` command, and (below) what loopback receivers get.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Proc, Scratch, bin, copy_tree, free_port, get, root, wait_for};
use serde_json::Value;

/// `run` against the simulator at `base`, with `extra` options and env, its logs to `stderr`.
fn controller(
    dir: &Path,
    base: &str,
    port: u16,
    extra: &[&str],
    env: &[(&str, String)],
    stderr: Stdio,
) -> Proc {
    common::run_against(dir, base, port, "notify-test", extra, env, stderr)
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
        Stdio::null(),
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
        // What changed, before -> after.
        assert!(e["message"].as_str().unwrap().contains(" -> "), "{e}");
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

// ---- What loopback receivers get from `run` ------------------------------------------------

use common::receiver::{Answer, Receiver, Request};

const SLACK_PATH: &str = "/services/T0ACME/B0OPS/slackPathSecret7f3a9c2e";
const TEAMS_SIG: &str = "teamsSig0a1b2c3d4e5f6a7b8c9d";
const HMAC_KEY: &str = "hmac-key-5e3c9a71d2";
const GH_TOKEN: &str = "ghp_notifyTestToken0123456789abcdefAB";

/// The four targets, each on its own receiver.
struct Targets {
    teams: Receiver,
    slack: Receiver,
    hook: Receiver,
    github: Receiver,
}

impl Targets {
    fn start() -> Self {
        let github = Receiver::start();
        // GitHub's list of a commit's statuses (read once before the first post) is empty.
        github.answer(Answer::Json(200, "[]".to_owned()));
        Self {
            teams: Receiver::start(),
            slack: Receiver::start(),
            hook: Receiver::start(),
            github,
        }
    }

    /// Writes `notifications.yaml` into `dir` (the HMAC key into `key_file`), and returns the
    /// options and environment `run` needs to reach them.
    fn declare(&self, dir: &Path, key_file: &Path) -> (Vec<String>, Vec<(&'static str, String)>) {
        std::fs::write(key_file, format!("{HMAC_KEY}\n")).unwrap();
        let docs = format!(
            r#"apiVersion: aca-reconciler/v1
kind: Notification
metadata: {{name: ops-teams}}
spec:
  type: teams
  url: {{fromEnv: TEAMS_URL}}
---
apiVersion: aca-reconciler/v1
kind: Notification
metadata: {{name: ops-slack}}
spec:
  type: slack
  url: {{fromEnv: SLACK_URL}}
  apps: {{resourceGroups: [rg-xshopai-prod]}}
---
apiVersion: aca-reconciler/v1
kind: Notification
metadata: {{name: audit}}
spec:
  type: webhook
  url: {hook}
  secret: {{fromFile: {key}}}
---
apiVersion: aca-reconciler/v1
kind: Notification
metadata: {{name: commits}}
spec:
  type: github
  repository: contoso/platform-desired-state
  secret: {{fromEnv: GH_TOKEN}}
"#,
            hook = self.hook.url("/events"),
            key = key_file.display(),
        );
        std::fs::write(dir.join("notifications.yaml"), docs).unwrap();
        (
            vec!["--github-api-url".to_owned(), self.github.url("/api")],
            vec![
                (
                    "TEAMS_URL",
                    self.teams
                        .url(&format!("/workflows/run?api-version=1&sig={TEAMS_SIG}")),
                ),
                ("SLACK_URL", self.slack.url(SLACK_PATH)),
                ("GH_TOKEN", GH_TOKEN.to_owned()),
            ],
        )
    }

    fn clear(&self) {
        for r in [&self.teams, &self.slack, &self.hook, &self.github] {
            r.clear();
        }
    }
}

/// Every event the webhook received, across its messages.
fn hooked(rx: &Receiver) -> Vec<Value> {
    rx.requests()
        .iter()
        .flat_map(|r| r.json()["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The webhook's events about the prod app `app` with `reason`.
fn hooked_count(rx: &Receiver, app: &str, reason: &str) -> usize {
    count(&hooked(rx), app, reason)
}

/// The last commit status posted for `context`, if any.
fn last_status(rx: &Receiver, context: &str) -> Option<Value> {
    rx.requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(Request::json)
        .rfind(|b| b["context"] == context)
}

fn hmac_hex(key: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `run` against a simulator of the example platform, with the targets declared; returns the
/// pieces and where its log goes.
struct Running {
    s: Scratch,
    base: String,
    ep: String,
    log: std::path::PathBuf,
    _sim: Proc,
    _ctl: Proc,
}

fn run_with(targets: &Targets, extra: &[&str]) -> Running {
    let s = Scratch::new();
    let desired = s.path().join("desired");
    std::fs::create_dir_all(&desired).unwrap();
    copy_tree(&root().join("desired-state"), &desired);
    let (opts, env) = targets.declare(&desired, &s.path().join("hmac.key"));
    let (sim, base) = common::spawn_simulator(
        &desired,
        "notify-test",
        &["--revision-ready", "1s", "--lro", "sync"],
    );
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let log = s.path().join("run.log");
    let mut args: Vec<&str> = vec!["--revision", COMMIT];
    args.extend(opts.iter().map(String::as_str));
    args.extend(extra);
    let mut env = env;
    env.push(("RUST_LOG", "debug".to_owned()));
    let stderr = Stdio::from(std::fs::File::create(&log).unwrap());
    let ctl = controller(&desired, &base, port, &args, &env, stderr);
    Running {
        s,
        base,
        ep,
        log,
        _sim: sim,
        _ctl: ctl,
    }
}

fn arm_writes(base: &str) -> u64 {
    let v: Value = serde_json::from_str(&get(&format!("{base}/_sim/requests")).1).unwrap();
    v["armWrites"].as_u64().unwrap_or(0)
}

/// Edits `prod/ca-cart-service.yaml` and returns how long until the controller's first write.
fn edit_to_first_write(r: &Running, from: &str, to: &str) -> Duration {
    let before = arm_writes(&r.base);
    let started = std::time::Instant::now();
    edit(
        &r.s.path().join("desired"),
        "prod/ca-cart-service.yaml",
        from,
        to,
    );
    wait_for("the write after the edit", Duration::from_secs(20), || {
        arm_writes(&r.base) > before
    });
    started.elapsed()
}

#[test]
fn each_target_gets_each_change_once_nothing_at_rest_a_failure_and_its_recovery_signed_and_on_the_commit()
 {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let t = Targets::start();
    let r = run_with(
        &t,
        &[
            "--interval",
            "2s",
            "--reverify-after",
            "1",
            "--dashboard-url",
            "https://aca-reconciler.ops.example/",
        ],
    );
    wait_for("readyz", Duration::from_secs(90), || {
        get(&format!("{}/readyz", r.ep)).0 == 200
    });
    // Every change the controller made (the seed drifted every app) reaches the webhook once.
    let applied: Vec<Value> = events(&r.ep)
        .into_iter()
        .filter(|e| e["reason"] == "Applied")
        .collect();
    assert!(applied.len() >= 10, "{applied:#?}");
    wait_for(
        "the webhook to get every change",
        Duration::from_secs(20),
        || {
            hooked(&t.hook)
                .iter()
                .filter(|e| e["reason"] == "Applied")
                .count()
                >= applied.len()
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let got = hooked(&t.hook);
    for a in &applied {
        let n = got
            .iter()
            .filter(|e| e["reason"] == "Applied" && e["app"] == a["app"])
            .count();
        assert_eq!(n, 1, "{a} reached the webhook {n} times");
    }
    // Signed with the key from the file: X-Signature is the HMAC of the body as sent.
    for req in t.hook.requests() {
        assert_eq!(
            req.header("x-signature"),
            Some(format!("sha256={}", hmac_hex(HMAC_KEY, &req.body)).as_str()),
        );
    }
    // Grouped: fewer chat messages than changes; Slack only about prod (its filter).
    let teams = t.teams.requests();
    assert!(
        !teams.is_empty() && teams.len() < applied.len(),
        "{} Teams messages",
        teams.len()
    );
    assert_eq!(
        teams[0].json()["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let slack_text: String = t.slack.requests().iter().map(Request::text).collect();
    assert!(slack_text.contains("rg-xshopai-prod"), "{slack_text}");
    assert!(!slack_text.contains("rg-xshopai-dev"), "{slack_text}");
    // GitHub: each changed app's status on the commit ends as success.
    for req in t.github.requests().iter().filter(|r| r.method == "POST") {
        assert_eq!(
            req.path,
            format!("/api/repos/contoso/platform-desired-state/statuses/{COMMIT}")
        );
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {GH_TOKEN}").as_str())
        );
        // Each status links to the dashboard (--dashboard-url).
        assert_eq!(
            req.json()["target_url"],
            "https://aca-reconciler.ops.example/"
        );
    }
    for a in &applied {
        let context = format!(
            "aca-reconciler/{}/{}",
            a["app"]["resourceGroup"].as_str().unwrap(),
            a["app"]["name"].as_str().unwrap()
        );
        let last =
            last_status(&t.github, &context).unwrap_or_else(|| panic!("no status for {context}"));
        assert_eq!(last["state"], "success", "{last}");
    }

    // At rest, four resyncs: nothing is sent (registry retention tells only the webhook, which
    // takes every reason; the seed's old tags go 100 per run).
    t.clear();
    std::thread::sleep(Duration::from_secs(8));
    for (name, rx) in [
        ("Teams", &t.teams),
        ("Slack", &t.slack),
        ("GitHub", &t.github),
    ] {
        let got = rx.requests();
        let about_apps = got
            .iter()
            .filter(|r| !r.text().contains("registry retention"))
            .count();
        assert_eq!(about_apps, 0, "{name} got messages at rest: {got:#?}");
    }
    assert!(
        hooked(&t.hook)
            .iter()
            .all(|e| e["reason"] == "RetentionDone"),
        "{:#?}",
        hooked(&t.hook)
    );

    // A bad image: one failure everywhere, however often it is retried; then its recovery.
    t.clear();
    let took = edit_to_first_write(&r, "cart-service:v1.9.3", "cart-service:v9.9.9-missing");
    wait_for(
        "the failure to reach the webhook",
        Duration::from_secs(30),
        || hooked_count(&t.hook, "ca-cart-service", "Failed") == 1,
    );
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(hooked_count(&t.hook, "ca-cart-service", "Failed"), 1);
    let context = "aca-reconciler/rg-xshopai-prod/ca-cart-service";
    assert_eq!(last_status(&t.github, context).unwrap()["state"], "failure");
    let failed_in = |rx: &Receiver| {
        rx.requests()
            .iter()
            .filter(|r| r.text().contains("Failed") && r.text().contains("ca-cart-service"))
            .count()
    };
    assert_eq!(failed_in(&t.teams), 1);
    assert_eq!(failed_in(&t.slack), 1);
    edit(
        &r.s.path().join("desired"),
        "prod/ca-cart-service.yaml",
        "cart-service:v9.9.9-missing",
        "cart-service:v1.9.3",
    );
    wait_for(
        "the recovery to reach the webhook",
        Duration::from_secs(30),
        || hooked_count(&t.hook, "ca-cart-service", "Recovered") == 1,
    );
    wait_for(
        "the commit status to recover",
        Duration::from_secs(10),
        || last_status(&t.github, context).is_some_and(|s| s["state"] == "success"),
    );
    println!("notifications: edit -> first write {took:?} with healthy receivers");

    // No secret anywhere the controller writes or serves.
    let outputs = [
        ("/status", get(&format!("{}/status", r.ep)).1),
        ("/metrics", get(&format!("{}/metrics", r.ep)).1),
        ("log", std::fs::read_to_string(&r.log).unwrap()),
        (
            "events",
            common::stdout(&common::run(
                bin(r.s.path()).args(["events", "--server", &r.ep, "--output", "json"]),
                0,
            )),
        ),
    ];
    assert!(
        outputs[1]
            .1
            .contains("acar_notifications_total{target=\"audit\",result=\"sent\"}")
    );
    for (name, text) in &outputs {
        for secret in [SLACK_PATH, TEAMS_SIG, HMAC_KEY, GH_TOKEN, "slackPathSecret"] {
            assert!(!text.contains(secret), "{name} shows a secret ({secret})");
        }
    }
}

#[test]
fn receivers_that_throttle_fail_or_hang_cost_the_passes_nothing_and_get_no_storm() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let t = Targets::start();
    // Teams throttles (Retry-After 2 s, every time), Slack fails, the webhook never answers.
    t.teams.answer(Answer::TooMany {
        retry_after: "2".to_owned(),
    });
    t.slack.answer(Answer::Status(500));
    t.hook.answer(Answer::Hang);
    let r = run_with(&t, &["--interval", "1h"]);
    wait_for("readyz", Duration::from_secs(90), || {
        get(&format!("{}/readyz", r.ep)).0 == 200
    });
    // An edit is carried out at once, whatever the targets are doing.
    let took = edit_to_first_write(&r, "min: 2, max: 10", "min: 3, max: 10");
    assert!(
        took < Duration::from_secs(10),
        "edit -> first write took {took:?}"
    );
    wait_for("the edit to converge", Duration::from_secs(30), || {
        count(&events(&r.ep), "ca-cart-service", "Applied") == 2
    });
    // Slack's tries (backoff 1 s, 2 s, 4 s, ... with jitter) run out: the message is dropped
    // and counted.
    let failed = "acar_notifications_total{target=\"ops-slack\",result=\"failed\"}";
    wait_for(
        "Slack's message to be given up",
        Duration::from_secs(90),
        || get(&format!("{}/metrics", r.ep)).1.contains(failed),
    );
    // No storm: Teams was asked again only after its Retry-After, Slack at most 4 times a
    // message, the hanging webhook one request at a time (each given up after 10 s).
    let teams = t.teams.requests();
    assert!(teams.len() >= 2, "Teams was asked {} times", teams.len());
    for pair in teams.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(1900),
            "Teams asked again after {gap:?}"
        );
    }
    for pair in t.hook.requests().windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(9500),
            "the webhook was asked again after {gap:?}"
        );
    }
    let slack = t.slack.requests().len();
    let slack_messages_at_most = 3;
    assert!(
        slack <= 4 * slack_messages_at_most,
        "Slack got {slack} requests"
    );

    println!(
        "notifications: edit -> first write {took:?} with Teams throttling (Retry-After 2), Slack failing (500) and the webhook hanging; Teams {} requests, Slack {slack}, webhook {}",
        teams.len(),
        t.hook.requests().len()
    );
}

#[test]
fn a_rolled_back_commit_fails_its_status_and_a_promoted_one_succeeds() {
    let t = Targets::start();
    let s = Scratch::new();
    let desired = s.path().join("rollout");
    std::fs::create_dir_all(&desired).unwrap();
    copy_tree(&root().join("examples/rollout"), &desired);
    let (opts, env) = t.declare(&desired, &s.path().join("hmac.key"));
    // The tree is a checkout (a detached HEAD, as git-sync's worktrees have): the commit is
    // read from its .git, without git.
    std::fs::create_dir_all(desired.join(".git")).unwrap();
    std::fs::write(desired.join(".git/HEAD"), format!("{COMMIT}\n")).unwrap();
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let mut cmd = bin(s.path());
    cmd.args(["run", "--simulate", "--desired-state", "rollout"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(&opts)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let _ctl = Proc(cmd.spawn().unwrap());
    let user = "aca-reconciler/rg-xshopai-prod/ca-user-service";
    let cart = "aca-reconciler/rg-xshopai-prod/ca-cart-service";
    // Mid-rollout, a commit that changes neither app (a comment) is checked out: the rollouts'
    // statuses stay on the commit that started them.
    wait_for("the rollouts to start", Duration::from_secs(60), || {
        last_status(&t.github, user).is_some()
    });
    let later = "0123456789abcdef0123456789abcdef01234567";
    std::fs::write(desired.join(".git/HEAD"), format!("{later}\n")).unwrap();
    let cart_file = desired.join("ca-cart-service.yaml");
    let text = std::fs::read_to_string(&cart_file).unwrap();
    std::fs::write(&cart_file, format!("{text}\n# reviewed\n")).unwrap();
    wait_for("the new commit to be read", Duration::from_secs(10), || {
        status(&ep)["desiredRevision"] == later
    });
    wait_for("both rollouts to end", Duration::from_secs(150), || {
        last_status(&t.github, user).is_some_and(|s| s["state"] == "failure")
            && last_status(&t.github, cart).is_some_and(|s| s["state"] == "success")
    });
    // While they walked, their statuses were pending.
    let pending = |context: &str| {
        t.github
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .map(Request::json)
            .any(|b| b["context"] == context && b["state"] == "pending")
    };
    assert!(pending(user) && pending(cart));
    for req in t.github.requests().iter().filter(|r| r.method == "POST") {
        assert!(
            req.path.ends_with(COMMIT),
            "a status on another commit: {}",
            req.path
        );
    }
    let got = hooked(&t.hook);
    let back = got
        .iter()
        .find(|e| e["reason"] == "RolledBack")
        .unwrap_or_else(|| panic!("{got:#?}"));
    assert_eq!(back["app"]["name"], "ca-user-service");
    assert_eq!(back["severity"], "error");
    assert!(
        back["details"]["analysis"]
            .as_str()
            .unwrap()
            .contains("success rate"),
        "{back}"
    );
    assert_eq!(
        count(&got, "ca-cart-service", "RolloutPromoted"),
        1,
        "{got:#?}"
    );
    assert!(
        count(&got, "ca-cart-service", "RolloutStep") >= 2,
        "{got:#?}"
    );
    assert_eq!(count(&got, "ca-user-service", "RolledBack"), 1, "{got:#?}");
    assert!(events(&ep).iter().any(|e| e["reason"] == "RolledBack"));
}

#[test]
fn a_revision_without_a_full_commit_hash_is_refused_at_start() {
    let out = common::run(
        bin(&root()).args([
            "run",
            "--simulate",
            "--revision",
            "abc123",
            "--listen",
            "127.0.0.1:0",
        ]),
        1,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--revision \"abc123\" holds no full commit hash"),
        "{err}"
    );
}

//! `rollout status|promote|abort|retry`, the real binary, as the README tells users to run it:
//! against Azure (here a separate `simulate` process) with the managed-identity credential.
//! The rollout's state is put on the app the way the controller leaves it (its state tag,
//! and the traffic split), written through the simulator's ARM endpoint; what the CLI wrote
//! is judged by the simulator's `/_sim/audit`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aca_reconciler::rollout::{COMMAND_TAG, Phase, RolloutState, STATE_TAG};
use common::{IDENTITY_HEADER, Proc, Scratch, bin, get, run, spawn_simulator, stdout};
use serde_json::{Value, json};

const PROD_SUB: &str = "6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b";
const PROD_RG: &str = "rg-shop-prod";
const APP: &str = "ca-cart";

/// Two groups: `ca-web` is in both (ambiguous by name alone), `ca-cart` only in prod.
fn desired(s: &Scratch) {
    s.write(
        "prod/_defaults.yaml",
        "apiVersion: aca-reconciler/v1\nkind: Defaults\nmetadata: {name: prod}\nspec:\n  subscription: 6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b\n  resourceGroup: rg-shop-prod\n",
    );
    s.write(
        "prod/apps.yaml",
        "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: ca-cart}\nspec:\n  revisionMode: multiple\n  images: {cart: crshop.azurecr.io/cart:v2}\n  replicas: {min: 1, max: 3}\n---\napiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: ca-web}\nspec:\n  images: {web: crshop.azurecr.io/web:v1}\n",
    );
    s.write(
        "dev/_defaults.yaml",
        "apiVersion: aca-reconciler/v1\nkind: Defaults\nmetadata: {name: dev}\nspec:\n  subscription: 2b7d9e14-5c3a-4f8b-a6d1-0e9f8c7b6a54\n  resourceGroup: rg-shop-dev\n",
    );
    s.write(
        "dev/apps.yaml",
        "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: ca-web}\nspec:\n  images: {web: crshop.azurecr.io/web:main}\n",
    );
}

/// The simulator's ARM endpoint, reached as the test's own client (not `aca-reconciler`, so
/// the audit tells its writes apart from the CLI's).
struct Azure {
    base: String,
    http: reqwest::blocking::Client,
    token: String,
}

impl Azure {
    fn new(base: &str) -> Self {
        let http = reqwest::blocking::Client::builder()
            .user_agent("rollout-test")
            .build()
            .unwrap();
        let token: Value = http
            .get(format!(
                "{base}/msi/token?resource=https://management.azure.com/&api-version=2019-08-01"
            ))
            .header("X-IDENTITY-HEADER", IDENTITY_HEADER)
            .send()
            .unwrap()
            .json()
            .unwrap();
        Self {
            base: base.to_owned(),
            http,
            token: token["access_token"].as_str().unwrap().to_owned(),
        }
    }

    fn url(&self, suffix: &str) -> String {
        format!(
            "{}/subscriptions/{PROD_SUB}/resourceGroups/{PROD_RG}/providers/Microsoft.App/containerApps/{APP}{suffix}?api-version=2026-01-01",
            self.base
        )
    }

    fn app(&self) -> Value {
        let r = self
            .http
            .get(self.url(""))
            .bearer_auth(&self.token)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.json().unwrap()
    }

    fn tag(&self, name: &str) -> Option<String> {
        self.app()["tags"][name].as_str().map(str::to_owned)
    }

    /// A merge PATCH once the app is not `InProgress` (again after a 409: another write
    /// began in between), then waits until it is done.
    fn patch(&self, body: &Value) {
        for _ in 0..20 {
            self.settle();
            let r = self
                .http
                .patch(self.url(""))
                .bearer_auth(&self.token)
                .json(body)
                .send()
                .unwrap();
            if r.status() == 409 {
                continue;
            }
            assert!(r.status().is_success(), "PATCH {body}: {}", r.status());
            self.settle();
            return;
        }
        panic!("PATCH {body}: the app stayed busy");
    }

    fn settle(&self) {
        let started = Instant::now();
        while self.app()["properties"]["provisioningState"] == "InProgress" {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "app stays busy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The app's revisions, newest last: (the one carrying traffic, an older one).
    fn two_revisions(&self) -> (String, String) {
        let list: Value = self
            .http
            .get(self.url("/revisions"))
            .bearer_auth(&self.token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let names: Vec<&Value> = list["value"].as_array().unwrap().iter().collect();
        let live = names
            .iter()
            .find(|r| r["properties"]["active"] == true)
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let older = names
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .find(|n| *n != live)
            .unwrap()
            .to_owned();
        (live, older)
    }

    /// What the controller leaves during a canary step: the older revision is stable at 80%,
    /// the new one carries 20%, and the state tag says so.
    fn seed_rollout(&self, phase: Phase, reason: &str) -> RolloutState {
        let (canary, stable) = self.two_revisions();
        let r = self
            .http
            .post(self.url(&format!("/revisions/{stable}/activate")))
            .bearer_auth(&self.token)
            .header("content-length", "0")
            .send()
            .unwrap();
        assert!(r.status().is_success(), "activate: {}", r.status());
        self.settle();
        let state = RolloutState {
            phase,
            step: 1,
            since: 1_764_900_000_000,
            failed_checks: 1,
            last_failed_at: 1_764_900_060_000,
            stable: stable.clone(),
            canary: canary.clone(),
            reason: reason.to_owned(),
        };
        self.patch(&json!({
            "tags": {STATE_TAG: state.encode()},
            "properties": {"configuration": {
                "activeRevisionsMode": "Multiple",
                "ingress": {"traffic": [
                    {"revisionName": stable, "weight": 80},
                    {"revisionName": canary, "weight": 20},
                ]},
            }},
        }));
        state
    }

    /// The CLI's writes, as the simulator saw them.
    fn cli_writes(&self) -> Vec<Value> {
        let audit: Value =
            serde_json::from_str(&get(&format!("{}/_sim/audit", self.base)).1).unwrap();
        audit["writes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["client"] == "aca-reconciler")
            .cloned()
            .collect()
    }
}

/// A scratch desired state, a simulator seeded from it, and a client for it.
fn setup() -> (Scratch, Proc, Azure) {
    let s = Scratch::new();
    desired(&s);
    let (sim, base) = spawn_simulator(s.path(), IDENTITY_HEADER, &[]);
    let azure = Azure::new(&base);
    (s, sim, azure)
}

/// The binary, pointed at the simulator as a user points it at Azure.
fn cli(dir: &Path, base: &str, args: &[&str]) -> Command {
    let mut c = bin(dir);
    c.args(["rollout"])
        .args(args)
        .args(["--desired-state", ".", "--arm-endpoint", base])
        .args(["--credential", "managed"])
        .env("IDENTITY_ENDPOINT", format!("{base}/msi/token"))
        .env("IDENTITY_HEADER", IDENTITY_HEADER);
    c
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn status_shows_the_step_the_revisions_with_their_live_weights_and_the_reason() {
    let (s, _sim, azure) = setup();
    let state = azure.seed_rollout(Phase::Progressing, "checks pass so far");

    let text = stdout(&run(&mut cli(s.path(), &azure.base, &["status", APP]), 0));
    assert!(
        text.contains("phase        progressing: step 2, 20% live on the new revision"),
        "{text}"
    );
    let line = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` line in\n{text}"))
            .to_owned()
    };
    let new = line("new ");
    assert!(
        new.contains(&state.canary) && new.contains(" 20% live"),
        "{new}"
    );
    let stable = line("stable ");
    assert!(
        stable.contains(&state.stable) && stable.contains(" 80% live"),
        "{stable}"
    );
    assert!(line("checks ").contains("1 failed"), "{text}");
    assert!(line("reason ").contains("checks pass so far"), "{text}");
    assert!(line("command ").contains("none waiting"), "{text}");
    assert!(
        line("phase ").contains("2025-12-05T02:00:00+00:00"),
        "{text}"
    );

    let json_out = run(
        &mut cli(
            s.path(),
            &azure.base,
            &["status", &format!("{PROD_RG}/{APP}"), "--output", "json"],
        ),
        0,
    );
    let v: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(v["name"], APP);
    assert_eq!(v["rollout"]["phase"], "progressing");
    assert_eq!(v["rollout"]["step"], 1);
    assert_eq!(v["rollout"]["canary"]["revision"], state.canary.as_str());
    assert_eq!(v["rollout"]["canary"]["weight"], 20);
    assert_eq!(v["rollout"]["stable"]["weight"], 80);
    assert!(
        matches!(
            v["rollout"]["stable"]["runningState"].as_str(),
            Some("Running" | "Processing")
        ),
        "{v}"
    );
    assert_eq!(v["rollout"]["failedChecks"], 1);
    assert_eq!(v["command"], Value::Null);
    assert!(azure.cli_writes().is_empty(), "status writes nothing");
}

#[test]
fn status_of_a_rolled_back_rollout_exits_2() {
    let (s, _sim, azure) = setup();
    azure.seed_rollout(
        Phase::RolledBack,
        "success rate 81.2% < 99% over 1,204 requests",
    );
    let text = stdout(&run(&mut cli(s.path(), &azure.base, &["status", APP]), 2));
    assert!(text.contains("phase        rolledBack"), "{text}");
    assert!(text.contains("success rate 81.2% < 99%"), "{text}");
}

#[test]
fn promote_leaves_the_command_in_its_tag_and_writes_nothing_else() {
    let (s, _sim, azure) = setup();
    let state = azure.seed_rollout(Phase::Progressing, "");
    let before = azure.app();

    let out = run(
        &mut cli(s.path(), &azure.base, &["promote", APP, "--wait", "0"]),
        0,
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!("promote for {}", state.canary)),
        "{text}"
    );
    assert!(text.contains("rollout status"), "says how to check: {text}");

    let value = azure.tag(COMMAND_TAG).expect("the command tag");
    let command = aca_reconciler::rollout::Command::decode(&value).unwrap();
    assert_eq!(command.verb, aca_reconciler::rollout::Verb::Promote);
    assert_eq!(command.canary, state.canary);
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - command.at;
    assert!((0..60_000).contains(&age), "asked just now: {age} ms ago");

    let writes = azure.cli_writes();
    assert_eq!(writes.len(), 1, "one write: {writes:?}");
    assert_eq!(writes[0]["method"], "PATCH");
    assert_eq!(
        writes[0]["fields"],
        json!([format!("/tags/{COMMAND_TAG}")]),
        "only the command tag: {writes:?}"
    );
    let after = azure.app();
    let mut tags = after["tags"].clone();
    tags.as_object_mut().unwrap().remove(COMMAND_TAG);
    assert_eq!(tags, before["tags"], "every other tag as it was");
    assert_eq!(
        after["properties"]["configuration"]["ingress"]["traffic"],
        before["properties"]["configuration"]["ingress"]["traffic"]
    );

    // And `status` shows it waiting.
    let text = stdout(&run(&mut cli(s.path(), &azure.base, &["status", APP]), 0));
    assert!(
        text.contains(&format!(
            "command      promote for {}, waiting since",
            state.canary
        )),
        "{text}"
    );

    // A second command is refused while one waits, naming it; --force replaces it.
    let out = run(
        &mut cli(s.path(), &azure.base, &["abort", APP, "--wait", "0"]),
        1,
    );
    let err = stderr(&out);
    assert!(
        err.contains("a promote command for") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        azure.tag(COMMAND_TAG).as_deref(),
        Some(value.as_str()),
        "not replaced"
    );
    run(
        &mut cli(
            s.path(),
            &azure.base,
            &["abort", APP, "--wait", "0", "--force"],
        ),
        0,
    );
    assert!(azure.tag(COMMAND_TAG).unwrap().starts_with("abort;"));
}

#[test]
fn verbs_that_do_not_fit_the_phase_are_refused_and_say_what_would() {
    let (s, _sim, azure) = setup();
    azure.seed_rollout(Phase::Promoted, "");
    let out = run(
        &mut cli(s.path(), &azure.base, &["promote", APP, "--wait", "0"]),
        1,
    );
    let err = stderr(&out);
    assert!(err.contains("already promoted"), "{err}");
    let out = run(
        &mut cli(s.path(), &azure.base, &["retry", APP, "--wait", "0"]),
        1,
    );
    assert!(
        stderr(&out).contains("nothing to retry"),
        "{}",
        stderr(&out)
    );
    assert_eq!(azure.tag(COMMAND_TAG), None);
    assert!(azure.cli_writes().is_empty(), "nothing written");
}

#[test]
fn retry_is_for_a_rolled_back_rollout() {
    let (s, _sim, azure) = setup();
    let state = azure.seed_rollout(Phase::RolledBack, "success rate 81.2% < 99%");
    let out = run(
        &mut cli(s.path(), &azure.base, &["abort", APP, "--wait", "0"]),
        1,
    );
    assert!(stderr(&out).contains("rollout retry"), "{}", stderr(&out));
    let out = run(
        &mut cli(
            s.path(),
            &azure.base,
            &["retry", APP, "--wait", "0", "--output", "json"],
        ),
        0,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "waiting", "{v}");
    assert_eq!(v["command"]["verb"], "retry", "{v}");
    assert_eq!(
        v["command"]["value"].as_str(),
        azure.tag(COMMAND_TAG).as_deref(),
        "{v}"
    );
    assert_eq!(
        azure.tag(COMMAND_TAG).unwrap(),
        format!(
            "retry;{};{}",
            state.canary,
            aca_reconciler::rollout::Command::decode(&azure.tag(COMMAND_TAG).unwrap())
                .unwrap()
                .at
                / 1000
        )
    );
}

#[test]
fn an_unknown_or_ambiguous_app_is_an_error_listing_the_candidates() {
    let (s, _sim, azure) = setup();
    let out = run(&mut cli(s.path(), &azure.base, &["status", "ca-nope"]), 1);
    let err = stderr(&out);
    assert!(err.contains("not a managed app"), "{err}");
    for app in [
        "6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b/rg-shop-prod/ca-cart",
        "2b7d9e14-5c3a-4f8b-a6d1-0e9f8c7b6a54/rg-shop-dev/ca-web",
    ] {
        assert!(err.contains(app), "lists {app}: {err}");
    }
    let out = run(
        &mut cli(s.path(), &azure.base, &["promote", "ca-web", "--wait", "0"]),
        1,
    );
    let err = stderr(&out);
    assert!(
        err.contains("names 2 managed apps") && err.contains("rg-shop-dev/ca-web"),
        "{err}"
    );
    assert!(azure.cli_writes().is_empty(), "nothing written");
}

#[test]
fn a_command_no_controller_carries_out_waits_and_exits_2() {
    let (s, _sim, azure) = setup();
    let state = azure.seed_rollout(Phase::Progressing, "");
    let started = Instant::now();
    let out = run(
        &mut cli(s.path(), &azure.base, &["abort", APP, "--wait", "3s"]),
        2,
    );
    assert!(started.elapsed() >= Duration::from_secs(3), "it waited");
    let text = stdout(&out);
    assert!(text.contains("still waits there after 3s"), "{text}");
    assert!(text.contains("whichever controller leads"), "{text}");
    assert!(
        azure
            .tag(COMMAND_TAG)
            .unwrap()
            .starts_with(&format!("abort;{};", state.canary))
    );
}

#[test]
fn a_command_the_controller_carries_out_is_reported_with_the_new_state() {
    let (s, _sim, azure) = setup();
    let mut state = azure.seed_rollout(Phase::Progressing, "");
    let child = cli(s.path(), &azure.base, &["promote", APP, "--wait", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Play the leading controller: see the command, then carry it out in one PATCH that moves
    // the traffic, rewrites the state and removes the command.
    let started = Instant::now();
    while azure.tag(COMMAND_TAG).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no command came"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    state.phase = Phase::Promoted;
    state.reason = "promoted by a person".to_owned();
    azure.patch(&json!({
        "tags": {STATE_TAG: state.encode(), COMMAND_TAG: null},
        "properties": {"configuration": {"ingress": {"traffic": [
            {"revisionName": state.canary, "weight": 100},
        ]}}},
    }));
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("carried out: the rollout is promoted now"),
        "{text}"
    );
    assert!(text.contains(" 100% live"), "{text}");
}

/// A stand-in for a running controller's `GET /status`: answers `body` to every request.
fn controller_status(body: Value) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let text = body.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    url
}

#[test]
fn status_with_server_adds_the_controllers_last_check_and_tolerates_its_absence() {
    let (s, _sim, azure) = setup();
    azure.seed_rollout(Phase::Progressing, "");
    let app =
        json!({"subscription": PROD_SUB, "resourceGroup": PROD_RG, "name": APP, "state": "inSync"});
    let mut with_check = app.clone();
    with_check["rollout"] = json!({"lastCheck": {"verdict": "fail", "reason": "success rate 81.2% < 99% over 1,204 requests"}});
    let server = controller_status(json!({"apps": [with_check]}));
    let text = stdout(&run(
        &mut cli(s.path(), &azure.base, &["status", APP, "--server", &server]),
        0,
    ));
    let line = text
        .lines()
        .find(|l| l.starts_with("last check"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("success rate 81.2% < 99% over 1,204 requests"),
        "{text}"
    );
    let v: Value = serde_json::from_slice(
        &run(
            &mut cli(
                s.path(),
                &azure.base,
                &["status", APP, "--server", &server, "--output", "json"],
            ),
            0,
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(v["lastCheck"]["verdict"], "fail", "{v}");

    // A controller that does not report rollouts (yet): said, and not an error.
    let server = controller_status(json!({"apps": [app]}));
    let text = stdout(&run(
        &mut cli(s.path(), &azure.base, &["status", APP, "--server", &server]),
        0,
    ));
    assert!(
        text.contains("last check   none reported by the controller"),
        "{text}"
    );
}

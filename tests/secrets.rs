//! No credential leaks: `plan --output json` and a `run` with trace-level JSON logs, `/status`,
//! `/metrics` and a `POST /reconcile`, against the simulator with the real managed-identity
//! credential, and then every token the simulator issued (ARM and ACR), the identity header
//! and the trigger token are looked for in everything the binary printed or served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use aca_reconciler::simulator::seed;
use aca_reconciler::time::Clock;
use common::{Scratch, bin, example_state, free_port, get, post, root, start_sim, wait_for};

const TRIGGER: &str = "trigger-canary-7f3a9c";
const IDENTITY_HEADER: &str = "test-identity-header";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_reaches_logs_status_metrics_or_plans() {
    let config = common::fast_config(100, 300);
    let h = start_sim(seed::from_desired(
        &example_state(),
        config,
        Clock::new().now(),
    ))
    .await;
    let base = h.base_url.clone();
    let s = Scratch::new();
    let registries: Vec<String> = h
        .sim
        .world()
        .registries
        .keys()
        .map(|l| format!("{l}={base}/registries/{l}"))
        .collect();
    // plan --output json, with trace logs.
    let outputs = tokio::task::spawn_blocking({
        let root = root();
        let s_path = s.path().to_owned();
        let base = base.clone();
        let registries = registries.clone();
        move || {
            let with_azure = |cmd: &mut Command| {
                cmd.args(["--arm-endpoint", &base, "--credential", "managed"])
                    .env("IDENTITY_ENDPOINT", format!("{base}/msi/token"))
                    .env("IDENTITY_HEADER", IDENTITY_HEADER)
                    .env("RUST_LOG", "trace")
                    .env("ACAR_LOG_FORMAT", "json");
                for r in &registries {
                    cmd.args(["--registry-endpoint", r]);
                }
            };
            let mut plan = bin(&root);
            plan.args([
                "plan",
                "--output",
                "json",
                "--desired-state",
                "desired-state",
            ]);
            with_azure(&mut plan);
            let out = plan.output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(2),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut captured = vec![
                (
                    "plan stdout",
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                ),
                (
                    "plan log",
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                ),
            ];

            // run: converge, serve the endpoints, take a webhook, stop.
            let port = free_port();
            let ep = format!("http://127.0.0.1:{port}");
            let log_path = s_path.join("run.log");
            let mut run = bin(&root);
            run.args([
                "run",
                "--desired-state",
                "desired-state",
                "--interval",
                "1h",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("ACAR_TRIGGER_TOKEN", TRIGGER)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap());
            with_azure(&mut run);
            let mut child = run.spawn().unwrap();
            wait_for("run to be ready", Duration::from_secs(60), || {
                get(&format!("{ep}/readyz")).0 == 200
            });
            let webhook = post(&format!("{ep}/reconcile"), Some(TRIGGER));
            assert_eq!(webhook, 202);
            std::thread::sleep(Duration::from_secs(1));
            captured.push(("/status", get(&format!("{ep}/status")).1));
            captured.push(("/metrics", get(&format!("{ep}/metrics")).1));
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert_eq!(child.wait().unwrap().code(), Some(0));
            captured.push(("run log", std::fs::read_to_string(&log_path).unwrap()));
            captured
        }
    })
    .await
    .unwrap();

    // The outputs are real: a trace log of Azure calls, a status, metrics, a plan.
    let find = |name: &str| &outputs.iter().find(|(n, _)| *n == name).unwrap().1;
    assert!(
        find("run log").contains("\"message\":\"ARM\""),
        "trace logs of the calls"
    );
    assert!(find("run log").contains("arm_request_id"));
    assert!(
        find("/status").contains("\"inSync\""),
        "{}",
        find("/status")
    );
    assert!(find("/metrics").contains("acar_arm_requests_total"));
    assert!(find("plan stdout").contains("\"summary\""));

    let tokens = h.sim.issued_tokens();
    assert!(
        tokens.len() >= 3,
        "ARM and ACR tokens were issued: {}",
        tokens.len()
    );
    let mut secrets: Vec<String> = vec![TRIGGER.to_owned(), IDENTITY_HEADER.to_owned()];
    for t in &tokens {
        secrets.push(t.clone());
        // The signature alone is enough to replay nothing, but must not show either.
        if let Some(sig) = t.rsplit('.').next().filter(|s| s.len() >= 16) {
            secrets.push(sig.to_owned());
        }
    }
    for (name, text) in &outputs {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{name} contains a secret ({}...)",
                &secret[..secret.len().min(12)]
            );
        }
    }
    println!(
        "secrets: {} tokens and 2 configured secrets looked for in {} outputs ({} bytes); none found",
        tokens.len(),
        outputs.len(),
        outputs.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
}

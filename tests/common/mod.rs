//! Helpers shared by the integration tests: scratch directories and the real binary.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod receiver;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A fresh directory under the target dir, removed when dropped (kept if the test panicked,
/// so it can be inspected).
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "scratch-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The binary under test, in `dir`, with an environment cleaned of everything that could
/// change its behaviour (ACAR_*, AZURE_*, IDENTITY_*).
pub fn bin(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aca-reconciler"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("ACAR_") || k.starts_with("AZURE_") || k.starts_with("IDENTITY_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs a command and returns its output, printing everything if `expected_code` differs.
pub fn run(cmd: &mut Command, expected_code: i32) -> Output {
    let out = cmd.output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert_eq!(
        code,
        expected_code,
        "\ncommand: {cmd:?}\nexit: {code}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The crate root (tests run there, but the binary may run in a scratch dir).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---- Simulator helpers ----------------------------------------------------------------------

pub use aca_reconciler::simulator::Handle;
use aca_reconciler::simulator::{self, ServeOptions, Sim, store::World};

/// The example desired state, loaded (tests seed the simulator from it).
pub fn example_state() -> aca_reconciler::spec::DesiredState {
    let loaded = aca_reconciler::spec::load(
        &[root().join("desired-state")],
        &aca_reconciler::spec::LoadOptions::default(),
    );
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    loaded.state
}

/// The identity header of the test simulators.
pub const IDENTITY_HEADER: &str = "test-identity-header";

/// A simulator on 127.0.0.1:0 holding `world`.
pub async fn start_sim(world: World) -> Handle {
    let sim = Sim::new(world, IDENTITY_HEADER);
    let options = ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: false,
        tls_cert: PathBuf::new(),
    };
    simulator::serve(sim, &options).await.unwrap()
}

/// A client with a valid ARM token for the simulator.
pub struct ArmTestClient {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

pub const PROD_SUB: &str = "6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b";
pub const PROD_RG: &str = "rg-xshopai-prod";

impl ArmTestClient {
    pub fn new(handle: &Handle) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: handle.base_url.clone(),
            token: handle.sim.issue_token("https://management.azure.com/"),
        }
    }

    pub fn app_url(&self, sub: &str, rg: &str, app: &str) -> String {
        format!(
            "{}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.App/containerApps/{app}",
            self.base
        )
    }

    /// `url` with `?api-version=2026-01-01` (or `&...`).
    pub fn v(url: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}api-version=2026-01-01")
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.http
            .get(Self::v(url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, url: &str) -> serde_json::Value {
        let r = self.get(url).await;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(status.is_success(), "GET {url}: {status} {body}");
        body
    }

    pub async fn patch(&self, url: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .patch(Self::v(url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, url: &str) -> reqwest::Response {
        self.http
            .post(Self::v(url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    /// `POST /_sim/inject` of `kind` on one app; asserts it was taken (204).
    pub async fn inject(&self, kind: &str, subscription: &str, group: &str, app: &str) {
        let body = serde_json::json!({"kind": kind, "subscription": subscription, "resourceGroup": group, "app": app});
        let r = self
            .http
            .post(format!("{}/_sim/inject", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "injection {body}");
    }

    pub async fn sim_json(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}/_sim/{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A simulator on its own runtime and threads, so that a test's load does not share a thread
/// with the server (a `#[tokio::test]` runs on one thread). Stops when the test ends.
pub fn start_sim_apart(world: World) -> Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let handle = start_sim(world).await;
            let stop = handle.shutdown.clone();
            tx.send(handle).unwrap();
            stop.cancelled().await;
        });
    });
    rx.recv().unwrap()
}

/// Removes what the controller owns, and what Azure changes by itself, from an app's JSON.
pub fn unowned(mut app: serde_json::Value) -> serde_json::Value {
    let p = &mut app["properties"];
    for k in [
        "provisioningState",
        "latestRevisionName",
        "latestReadyRevisionName",
        "latestRevisionFqdn",
    ] {
        p.as_object_mut().unwrap().remove(k);
    }
    p["template"]
        .as_object_mut()
        .unwrap()
        .remove("revisionSuffix");
    for c in p["template"]["containers"].as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("image");
    }
    let scale = p["template"]["scale"].as_object_mut().unwrap();
    scale.remove("minReplicas");
    scale.remove("maxReplicas");
    p["configuration"]
        .as_object_mut()
        .unwrap()
        .remove("activeRevisionsMode");
    p["configuration"]["ingress"]
        .as_object_mut()
        .unwrap()
        .remove("traffic");
    let tags = app["tags"].as_object_mut().unwrap();
    tags.remove(aca_reconciler::plan::RESTART_TAG);
    tags.remove(aca_reconciler::plan::RESTART_PENDING_TAG);
    app.as_object_mut().unwrap().remove("systemData");
    app
}

/// A free loopback port (bound and released: good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET with curl: (status, body); status 0 if nothing answered.
pub fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// POST with curl, with an optional bearer token: the status.
pub fn post(url: &str, auth: Option<&str>) -> u16 {
    send("POST", url, auth)
}

/// A bodiless request with curl, with an optional bearer token: the status (0 if nothing
/// answered).
pub fn send(method: &str, url: &str, auth: Option<&str>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .args(["-H", "Content-Length: 0", url]);
    if let Some(a) = auth {
        cmd.args(["-H", &format!("Authorization: Bearer {a}")]);
    }
    String::from_utf8_lossy(&cmd.output().unwrap().stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Polls `ok` every 100 ms; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// A child process, SIGKILLed when dropped.
pub struct Proc(pub std::process::Child);

impl Proc {
    /// SIGKILL, and reap it.
    pub fn kill_9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, and wait for it to exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Simulator timings for tests: asynchronous writes that finish after `lro_ms`, polled without
/// `Retry-After`, and new revisions that start after `revision_ready_ms`.
pub fn fast_config(
    lro_ms: u64,
    revision_ready_ms: u64,
) -> aca_reconciler::simulator::store::Config {
    aca_reconciler::simulator::store::Config {
        lro_mode: aca_reconciler::simulator::store::LroMode::Async,
        lro_ms,
        lro_retry_after_s: 0,
        revision_ready_ms,
        ..Default::default()
    }
}

/// Tokens from a simulator's managed-identity endpoint, as `--simulate` gets them.
pub fn tokens(base_url: &str) -> aca_reconciler::auth::TokenSource {
    aca_reconciler::auth::TokenSource::identity_endpoint(
        &format!("{base_url}/msi/token"),
        IDENTITY_HEADER,
        base_url,
    )
    .expect("a loopback identity endpoint")
}

/// `aca-reconciler simulate` as its own process, seeded from `desired` and answering tokens for
/// `identity_header`; returns it and its base URL.
pub fn spawn_simulator(desired: &Path, identity_header: &str, extra: &[&str]) -> (Proc, String) {
    use std::io::{BufRead, BufReader};
    let mut child = bin(&root())
        .args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--identity-header",
            identity_header,
            "--seed",
        ])
        .arg(desired)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = banner_base(&lines.next().unwrap().unwrap());
    std::thread::spawn(move || lines.for_each(drop));
    (Proc(child), base)
}

/// `run` in `dir` against the simulator at `base` (managed identity answered with
/// `identity_header`, the example's two registries sent to the simulator, JSON logs), with
/// `extra` options and `env`, its logs to `stderr`.
pub fn run_against(
    dir: &Path,
    base: &str,
    port: u16,
    identity_header: &str,
    extra: &[&str],
    env: &[(&str, String)],
    stderr: std::process::Stdio,
) -> Proc {
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
    ]);
    for registry in ["crxshopaidev.azurecr.io", "crxshopaiprod.azurecr.io"] {
        cmd.args([
            "--registry-endpoint",
            &format!("{registry}={base}/registries/{registry}"),
        ]);
    }
    cmd.env("IDENTITY_ENDPOINT", format!("{base}/msi/token"))
        .env("IDENTITY_HEADER", identity_header)
        .env("ACAR_LOG_FORMAT", "json")
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(
        cmd.stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

/// The base URL in `simulate`'s first banner line (`aca-reconciler simulator on URL: ...`).
pub fn banner_base(first: &str) -> String {
    first
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(':')
        .to_owned()
}

// ---- Azurite (leader election) ----------------------------------------------------------------

/// Azurite's blob service on a free loopback port, telemetry off, its data in `dir`.
/// Returns the process and the account's base URL.
pub fn azurite(dir: &Path) -> (Proc, String) {
    let exe = std::env::var("ACAR_AZURITE").expect(
        "ACAR_AZURITE must name the azurite-blob executable (tests/azurite/run.sh installs Azurite and sets it)",
    );
    let mut child = Command::new(exe)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            "0",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--location",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let url = loop {
        let line = lines
            .next()
            .expect("Azurite ended before it listened")
            .unwrap();
        if let Some(at) = line.find("listens on ") {
            break line[at + "listens on ".len()..].trim().to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (Proc(child), format!("{url}/devstoreaccount1"))
}

/// An account SAS for Azurite's development account (`devstoreaccount1`, whose key Azure
/// publishes for the emulator): blob service, read/write/delete/list/add/create, until 2099.
pub fn azurite_sas() -> String {
    use base64::Engine as _;
    use hmac::{Hmac, KeyInit, Mac};
    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let b64 = base64::engine::general_purpose::STANDARD;
    let (sp, ss, srt, se, spr, sv) = (
        "rwdlac",
        "b",
        "sco",
        "2099-01-01T00:00:00Z",
        "https,http",
        "2021-08-06",
    );
    // Account SAS string-to-sign, version 2020-12-06 and later (the last line is the encryption scope).
    let to_sign = format!("devstoreaccount1\n{sp}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n\n");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&b64.decode(KEY).unwrap()).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    let enc = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={}&spr={}&sig={}",
        enc(se),
        enc(spr),
        enc(&sig)
    )
}

//! Chaos and crashes: `aca-reconciler run`, the real binary, against the simulator while a
//! driver breaks things, with the invariants checked all along through the simulator's outage
//! log and audit log (`/_sim/outages`, `/_sim/audit`). In the soak a third of the apps walk
//! canary rollouts (with analysis: metrics and probes) for their new images, good and bad, while
//! the faults fall, Azure Monitor's metrics reads included.
//!
//! Both tests are long, so they are ignored by a plain `cargo test`; `.ci/run` runs them with
//! their summaries printed:
//!
//! ```text
//! cargo test --test chaos -- --ignored --nocapture
//! ACAR_SOAK_SECS=600 ACAR_CHAOS_SEED=7 cargo test --test chaos soak -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aca_reconciler::simulator::audit::{Early, Write};
use aca_reconciler::simulator::seed;
use aca_reconciler::simulator::store::{AppId, Config, World};
use aca_reconciler::spec::{self, DesiredState, LoadOptions};
use aca_reconciler::time::Clock;
use common::{Handle, Proc, Scratch, bin, free_port, start_sim};
use serde_json::{Value, json};

const SUB: &str = "00000000-0000-0000-0000-00000000c4a5";
const GROUPS: &[&str] = &["rg-chaos-a", "rg-chaos-b", "rg-chaos-c"];
const IMAGE: &str = "mcr.microsoft.com/k8se/chaos";
/// What the controller may write (contract section 3), as leaf paths of a PATCH body.
const OWNED: &[&str] = &[
    "/properties/template/revisionSuffix",
    "/properties/template/containers",
    "/properties/template/scale/minReplicas",
    "/properties/template/scale/maxReplicas",
    "/properties/configuration/activeRevisionsMode",
    "/properties/configuration/ingress/traffic",
    "/tags/aca-reconciler-restart-generation",
    "/tags/aca-reconciler-restart-pending",
    "/tags/aca-reconciler-rollout",
    "/tags/aca-reconciler-rollout-command",
];
/// The rollout of the apps that have one: short steps, a check every second (metrics and a
/// probe), rolled back after two failed checks.
const ROLLOUT: &str = "  rollout:\n    steps:\n      - {weight: 30, pause: 2s}\n      - {weight: 60, pause: 2s}\n    analysis:\n      interval: 1s\n      maxFailedChecks: 2\n      minRequests: 5\n      successRate: {min: 95}\n      probes:\n        - {path: /health, expectStatus: 200}\n    progressDeadline: 2m\n";
/// The tag suffix of images that answer 30% of requests with 500.
const BAD_SUFFIX: &str = "-bad";
/// A request this soon after a 429 may have been sent before the client saw it (the client
/// checks the gate just before each request leaves; what remains is loopback and scheduling).
const IN_FLIGHT_MS: i64 = 50;

/// A small deterministic generator (SplitMix64), seeded from `ACAR_CHAOS_SEED` or the clock.
struct Rng(u64);

impl Rng {
    fn new() -> (Self, u64) {
        let seed = std::env::var("ACAR_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| Clock::new().now().unsigned_abs());
        (Self(seed), seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

/// One managed app and what its file asks for now.
#[derive(Debug, Clone)]
struct App {
    name: String,
    group: &'static str,
    multiple: bool,
    tag: u32,
    min: u32,
    max: u32,
    keep: u32,
    canary: bool,
    /// Whether its file has a `rollout` (canary steps with analysis) instead of `traffic`.
    rollout: bool,
    /// Whether its image answers 30% of requests with 500 (a rollout must roll it back).
    bad: bool,
    /// The revision a canary keeps 80% on (the one live when the world was seeded).
    stable: String,
    generation: u64,
}

impl App {
    fn image(&self) -> String {
        format!(
            "{IMAGE}:1.0.{}{}",
            self.tag,
            if self.bad { BAD_SUFFIX } else { "" }
        )
    }

    fn yaml(&self) -> String {
        let mut spec = format!(
            "  revisionMode: {}\n  images: {{app: {}}}\n  replicas: {{min: {}, max: {}}}\n  restartGeneration: {}\n",
            if self.multiple { "multiple" } else { "single" },
            self.image(),
            self.min,
            self.max,
            self.generation,
        );
        if self.multiple {
            spec.push_str(&format!(
                "  revisionRetention: {{keepActive: {}}}\n",
                self.keep
            ));
            if self.rollout {
                spec.push_str(ROLLOUT);
            } else if self.canary {
                spec.push_str(&format!(
                    "  traffic:\n    - {{latestRevision: true, weight: 20}}\n    - {{revision: {}, weight: 80}}\n",
                    self.stable
                ));
            } else {
                spec.push_str("  traffic:\n    - {latestRevision: true, weight: 100}\n");
            }
        }
        format!(
            "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {{name: {}, resourceGroup: {}, subscription: {SUB}}}\nspec:\n{spec}",
            self.name, self.group
        )
    }

    fn file(&self) -> String {
        format!("{}.yaml", self.name)
    }

    fn id(&self) -> AppId {
        AppId::new(SUB, self.group, &self.name)
    }
}

fn fleet(n: usize) -> Vec<App> {
    (0..n)
        .map(|i| App {
            name: format!("ca-chaos-{i:02}"),
            group: GROUPS[i % GROUPS.len()],
            multiple: i % 3 != 0,
            tag: 1,
            min: 1,
            max: 5,
            keep: 3,
            canary: false,
            rollout: false,
            bad: false,
            stable: String::new(),
            generation: 1,
        })
        .collect()
}

fn load(dir: &Path) -> DesiredState {
    let loaded = spec::load(&[dir.to_path_buf()], &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    loaded.state
}

fn write_all(dir: &Path, apps: &[App]) {
    for a in apps {
        std::fs::write(dir.join(a.file()), a.yaml()).unwrap();
    }
}

/// A world seeded from the apps (drifted), plus unmanaged apps beside them that the
/// controller must never write to. Each app learns its `stable` revision.
fn world(dir: &Path, apps: &mut [App], config: Config) -> (World, BTreeSet<String>) {
    let mut world = seed::from_desired(&load(dir), config, Clock::new().now());
    for a in apps.iter_mut() {
        a.stable = world.apps[&a.id()].app["properties"]["latestRevisionName"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    world.registries.remove("mcr.microsoft.com"); // any tag exists: images never fail by name
    // Users on the apps with a rollout (their checks need requests), and the bad images.
    let now = Clock::new().now();
    for a in apps.iter().filter(|a| a.rollout) {
        world.set_request_rate(&a.id(), 50.0, now).unwrap();
    }
    for tag in 1..1_000 {
        world.behaviours.images.insert(
            format!("{IMAGE}:1.0.{tag}{BAD_SUFFIX}"),
            serde_json::from_value(json!({"errorRate": 0.3})).unwrap(),
        );
    }
    let mut unmanaged = BTreeSet::new();
    for a in apps.iter().step_by(4) {
        let mut rec = world.apps[&a.id()].clone();
        let name = format!("{}-unmanaged", a.name);
        let id = AppId::new(SUB, a.group, &name);
        rec.app["name"] = json!(name);
        rec.app["id"] = json!(format!(
            "/subscriptions/{SUB}/resourceGroups/{}/providers/Microsoft.App/containerApps/{name}",
            a.group
        ));
        unmanaged.insert(format!("{SUB}/{}/{name}", a.group).to_ascii_lowercase());
        world.apps.insert(id, rec);
    }
    (world, unmanaged)
}

/// `run` against the simulator at `base`; `ingress`: the domains whose apps' URLs (the rollout
/// probes) the simulator serves.
fn controller(dir: &Path, base: &str, port: u16, log: &Path, ingress: &[String]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = bin(dir)
        .args(["run", "--desired-state", ".", "--interval", "4s"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--arm-endpoint", base, "--credential", "managed"])
        .args(["--reverify-after", "2", "--concurrency", "8"])
        .args(["--metrics-lag", "0s"])
        .args(
            ingress
                .iter()
                .flat_map(|d| ["--ingress-endpoint".to_owned(), format!("{d}={base}")]),
        )
        .env("IDENTITY_ENDPOINT", format!("{base}/msi/token"))
        .env("IDENTITY_HEADER", "test-identity-header")
        .env("ACAR_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc(child)
}

/// Everything the invariants forbid, found so far.
#[derive(Default)]
struct Violations(Vec<String>, BTreeSet<String>);

impl Violations {
    /// Checks the outage log and the controller's writes since `from` (an index into the audit
    /// log); returns the new index.
    fn check(&mut self, h: &Handle, unmanaged: &BTreeSet<String>, from: usize) -> usize {
        let outages = h.sim.world().outages.clone();
        let writes = h.sim.audit().writes().to_vec();
        for o in &outages {
            let line = format!("outage: {o:?}");
            if !self.0.contains(&line) {
                self.0.push(line);
                println!("{}", outage_history(h, &o.app, &writes));
            }
        }
        for w in writes
            .iter()
            .skip(from)
            .filter(|w| w.client == "aca-reconciler")
        {
            if w.app.as_ref().is_some_and(|a| unmanaged.contains(a)) {
                self.0.push(format!(
                    "write to an unmanaged app: {} {}",
                    w.method, w.path
                ));
            }
            for f in w.fields.iter().filter(|f| !OWNED.contains(&f.as_str())) {
                self.0
                    .push(format!("write to an unowned field {f}: {}", w.path));
            }
            if let Some(rules) = w.traffic.as_ref().and_then(Value::as_array) {
                let sum: i64 = rules.iter().filter_map(|r| r["weight"].as_i64()).sum();
                if sum != 100 {
                    self.0
                        .push(format!("traffic that does not sum to 100: {w:?}"));
                }
                // A rollout moves traffic and its state in one PATCH, never one without the other.
                let rollout = w.app.as_ref().is_some_and(|a| self.1.contains(a));
                if rollout && !w.fields.iter().any(|f| f == "/tags/aca-reconciler-rollout") {
                    self.0.push(format!(
                        "a rollout's traffic written without its state tag: {w:?}"
                    ));
                }
            }
        }
        for w in h.sim.audit().into_operation() {
            if w.client == "aca-reconciler" {
                let line = format!("write sent into an operation it knew was running: {w:?}");
                if !self.0.contains(&line) {
                    self.0.push(line);
                }
            }
        }
        for e in h.sim.audit().early() {
            if e.client == "aca-reconciler" && e.after_429_ms > IN_FLIGHT_MS {
                let line = format!("sent before Retry-After allowed: {e:?}");
                if !self.0.contains(&line) {
                    self.0.push(line);
                }
            }
        }
        writes.len()
    }

    fn assert_none(&self) {
        assert!(
            self.0.is_empty(),
            "invariants broken:\n{}",
            self.0.join("\n")
        );
    }
}

/// What an operator needs to find who caused an outage: every write to the app, by any client,
/// and the state of its revisions now.
fn outage_history(h: &Handle, app: &str, writes: &[Write]) -> String {
    let suffix = format!("/{}", app.to_ascii_lowercase());
    let mut out = format!("history of {app}:\n");
    for w in writes
        .iter()
        .filter(|w| w.app.as_ref().is_some_and(|a| a.ends_with(&suffix)))
    {
        out.push_str(&format!(
            "  {} ({}) {} {} {} -> {} {:?}\n",
            aca_reconciler::time::format_arm(w.at),
            w.at % 100_000,
            w.client,
            w.method,
            w.path.rsplit("/containerApps/").next().unwrap_or_default(),
            w.status,
            w.fields
        ));
    }
    let world = h.sim.world();
    if let Some((_, rec)) = world
        .apps
        .iter()
        .find(|(_, r)| r.app["name"].as_str() == Some(app))
    {
        out.push_str(&format!(
            "  now: latest {} ready {} mode {} traffic {}\n",
            rec.app["properties"]["latestRevisionName"],
            rec.app["properties"]["latestReadyRevisionName"],
            rec.app["properties"]["configuration"]["activeRevisionsMode"],
            rec.app["properties"]["configuration"]["ingress"]["traffic"]
        ));
        for r in &rec.revisions {
            out.push_str(&format!(
                "  revision {} active {} {} {} fails {}\n",
                r.name, r.active, r.provisioning_state, r.running_state, r.fails
            ));
        }
    }
    out
}

fn controller_writes(h: &Handle) -> Vec<Write> {
    h.sim
        .audit()
        .writes()
        .iter()
        .filter(|w| w.client == "aca-reconciler")
        .cloned()
        .collect()
}

async fn status(ep: &str) -> Option<Value> {
    reqwest::get(format!("{ep}/status"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Whether Azure (the simulator) shows the app as its file asks.
fn in_azure(h: &Handle, a: &App) -> bool {
    let w = h.sim.world();
    let Some(rec) = w.apps.get(&a.id()) else {
        return false;
    };
    let t = &rec.app["properties"]["template"];
    if t["containers"][0]["image"] != json!(a.image())
        || t["scale"]["minReplicas"] != json!(a.min)
        || t["scale"]["maxReplicas"] != json!(a.max)
        || rec.app["tags"][aca_reconciler::plan::RESTART_TAG] != json!(a.generation.to_string())
        // Once a restart is recorded, nothing else of it stays behind on the app.
        || rec.app["tags"].get(aca_reconciler::plan::RESTART_PENDING_TAG).is_some()
    {
        return false;
    }
    let latest = rec.app["properties"]["latestRevisionName"].as_str();
    let running = rec
        .revisions
        .iter()
        .any(|r| Some(r.name.as_str()) == latest && r.active && r.running_state == "Running");
    let active = rec.revisions.iter().filter(|r| r.active).count();
    running && !(a.multiple && active > a.keep as usize + 1)
}

/// Whether Azure shows every app as its file asks, and the controller agrees.
async fn converged(h: &Handle, ep: &str, apps: &[App]) -> bool {
    let Some(now) = status(ep).await.map(|s| by_name(&s)) else {
        return false;
    };
    apps.iter()
        .all(|a| now.get(&a.name).is_some_and(|s| s["state"] == settled(a)) && in_azure(h, a))
}

/// The state `/status` shows for an app at rest: a bad image's rollout ends rolled back.
fn settled(a: &App) -> &'static str {
    if a.rollout && a.bad {
        "rolledBack"
    } else {
        "inSync"
    }
}

/// Each app's entry in `/status`, by name.
fn by_name(status: &Value) -> BTreeMap<String, Value> {
    status["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["name"].as_str()?.to_owned(), a.clone())))
        .collect()
}

/// Waits up to `secs` until Azure (the simulator) shows every app as its file asks and the
/// controller agrees, checking the invariants all along. Returns, if it got there, how many
/// times each app was reconciled from the start of the wait until it was first seen so.
async fn wait_converged(
    h: &Handle,
    ep: &str,
    apps: &[App],
    violations: &mut Violations,
    unmanaged: &BTreeSet<String>,
    audited: &mut usize,
    secs: u64,
) -> Option<BTreeMap<String, u64>> {
    let reconciles = |s: &Value| s["reconciles"].as_u64().unwrap_or(0);
    let start = by_name(&status(ep).await.unwrap_or_default());
    let mut took: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        *audited = violations.check(h, unmanaged, *audited);
        let Some(now) = status(ep).await.map(|s| by_name(&s)) else {
            continue;
        };
        let mut all = true;
        for a in apps {
            let seen = now.get(&a.name);
            let before = start.get(&a.name).map_or(0, reconciles);
            let count = seen.map_or(0, reconciles).saturating_sub(before);
            // Reported in sync since the wait began: a report from before it says nothing of
            // the new file, even while Azure already shows it (the reconcile that wrote it may
            // still be running).
            let synced =
                seen.is_some_and(|s| s["state"] == settled(a)) && count > 0 && in_azure(h, a);
            if synced && !took.contains_key(&a.name) {
                took.insert(a.name.clone(), count);
            }
            all &= synced;
        }
        if all {
            return Some(took);
        }
    }
    None
}

/// The driver's own ARM client: what an operator running `az containerapp ...` sends.
struct Az {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Az {
    async fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .user_agent("AZURECLI/2.67.0 (chaos-driver)")
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let token: Value = http
            .post(format!("{base}/_sim/token"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            http,
            base: base.to_owned(),
            token: token["access_token"].as_str().unwrap().to_owned(),
        }
    }

    fn url(&self, a: &App, rest: &str) -> String {
        format!(
            "{}/subscriptions/{SUB}/resourceGroups/{}/providers/Microsoft.App/containerApps/{}{rest}?api-version=2026-01-01",
            self.base, a.group, a.name
        )
    }

    /// `az containerapp revision <verb> --revision <r>`; returns that command line.
    async fn revision(&self, a: &App, r: &str, verb: &str) -> String {
        self.send(
            reqwest::Method::POST,
            self.url(a, &format!("/revisions/{r}/{verb}")),
            None,
        )
        .await;
        format!("az containerapp revision {verb} --revision {r}")
    }

    async fn send(&self, method: reqwest::Method, url: String, body: Option<Value>) -> u16 {
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.map_or(0, |r| r.status().as_u16())
    }
}

/// One random out-of-band change, as an operator would make it by hand. Deactivations only
/// touch a revision that carries no traffic and that the spec does not name, so that any outage
/// is the controller's.
async fn out_of_band(az: &Az, h: &Handle, rng: &mut Rng, a: &App) -> String {
    match rng.below(3) {
        0 => {
            let min = rng.below(3);
            az.send(
                reqwest::Method::PATCH,
                az.url(a, ""),
                Some(json!({"properties": {"template": {"scale": {"minReplicas": min}}}})),
            )
            .await;
            format!("az containerapp update -n {} --min-replicas {min}", a.name)
        }
        1 => {
            let inactive: Vec<String> = h.sim.world().apps[&a.id()]
                .revisions
                .iter()
                .filter(|r| !r.active)
                .map(|r| r.name.clone())
                .collect();
            if inactive.is_empty() {
                return String::new();
            }
            let r = rng.pick(&inactive).clone();
            az.revision(a, &r, "activate").await
        }
        _ => {
            let candidates: Vec<String> = {
                let w = h.sim.world();
                let rec = &w.apps[&a.id()];
                let latest = rec.app["properties"]["latestRevisionName"].as_str();
                let ready = rec.app["properties"]["latestReadyRevisionName"].as_str();
                let weighted: BTreeSet<&str> =
                    rec.app["properties"]["configuration"]["ingress"]["traffic"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t["revisionName"].as_str())
                        .collect();
                rec.revisions
                    .iter()
                    .filter(|r| {
                        r.active
                            && Some(r.name.as_str()) != latest
                            && Some(r.name.as_str()) != ready
                            && !weighted.contains(r.name.as_str())
                    })
                    .map(|r| r.name.clone())
                    .collect()
            };
            // A canary spec names the latest ready revision; the others are free to go.
            if candidates.is_empty() || a.canary {
                return String::new();
            }
            let r = rng.pick(&candidates).clone();
            az.revision(a, &r, "deactivate").await
        }
    }
}

/// A random fault rule on the calls the controller makes.
fn fault(rng: &mut Rng) -> (Value, &'static str) {
    // The frequent calls appear twice, so that faults land often.
    const OPERATIONS: &[&str] = &[
        "ContainerApps_ListByResourceGroup",
        "ContainerApps_ListByResourceGroup",
        "ContainerApps_Get",
        "ContainerApps_Get",
        "ContainerApps_Update",
        "ContainerApps_Update",
        "ContainerAppsRevisions_ListRevisions",
        "ContainerAppsRevisions_ListRevisions",
        "ContainerAppsRevisions_GetRevision",
        "ContainerAppsRevisions_ActivateRevision",
        "ContainerAppsRevisions_DeactivateRevision",
        "ContainerAppsRevisions_RestartRevision",
        "ContainerAppsRevisionReplicas_ListReplicas",
        "ContainerAppOperationStatuses_Get",
        "Metrics_List",
    ];
    let (fault, name) = match rng.below(8) {
        0 | 1 => (
            json!({"kind": "throttle", "retryAfter": 1 + rng.below(3)}),
            "429 + Retry-After",
        ),
        2 => (json!({"kind": "status", "status": 500}), "500"),
        3 => (json!({"kind": "status", "status": 503}), "503"),
        4 => (json!({"kind": "lockConflict"}), "409 lock"),
        5 => (json!({"kind": "drop"}), "dropped connection"),
        6 => (
            json!({"kind": "lostAnswer"}),
            "lost answer (processed, then dropped)",
        ),
        _ => (
            json!({"kind": "latency", "ms": 200 + rng.below(1_500)}),
            "slow response",
        ),
    };
    (
        json!({
            "operation": rng.pick(OPERATIONS),
            "fault": fault,
            "count": 1 + rng.below(6),
            "probability": 0.5,
        }),
        name,
    )
}

/// A random desired-state edit; sometimes one that must be refused (the last good file stays
/// in force until it is fixed).
fn edit(rng: &mut Rng, a: &mut App, next_tag: &mut u32) -> Option<&'static str> {
    match rng.below(7) {
        0 => {
            *next_tag += 1;
            a.tag = *next_tag;
            // A rollout app sometimes gets an image that fails 30% of requests.
            a.bad = a.rollout && rng.chance(0.3);
        }
        1 => {
            a.min = rng.below(3) as u32;
            a.max = a.min + 1 + rng.below(8) as u32;
        }
        2 => a.canary = a.multiple && !a.rollout && !a.canary,
        3 => a.keep = 2 + rng.below(3) as u32,
        4 => a.generation += 1,
        5 => return Some("not YAML"),
        _ => return Some("min above max"),
    }
    None
}

/// Azure Monitor's metrics failing for a period: the next N reads (about a second's worth per
/// app with a rollout in progress).
fn metrics_outage(rng: &mut Rng) -> (Value, &'static str) {
    let status = *rng.pick(&[500, 503, 504]);
    (
        json!({
            "operation": "Metrics_List",
            "fault": {"kind": "status", "status": status},
            "count": 5 + rng.below(40),
        }),
        "metrics read fails (a run)",
    )
}

fn broken_yaml(a: &App, how: &str) -> String {
    match how {
        "not YAML" => format!("{}\n  images: {{app: [unclosed\n", a.yaml()),
        _ => a
            .yaml()
            .replace(&format!("min: {}, max: {}", a.min, a.max), "min: 9, max: 2"),
    }
}

fn sim_config() -> Config {
    // ARM's buckets stay on (the default): the client must pace itself under them too. Served
    // requests show in the metrics at once (the rollouts' checks run with `--metrics-lag 0s`).
    Config {
        metrics_delay_ms: 0,
        ..common::fast_config(400, 600)
    }
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of minutes: run by .ci/run (cargo test --test chaos -- --ignored --nocapture)"]
async fn soak_under_faults_and_hand_edits_keeps_every_invariant() {
    let (mut rng, seed) = Rng::new();
    let soak = env_secs("ACAR_SOAK_SECS", 90);
    println!("chaos soak: seed {seed} (ACAR_CHAOS_SEED={seed} replays its driver)");
    let s = Scratch::new();
    let mut apps = fleet(12);
    // A third of the apps walk a canary rollout for each new image.
    for a in apps.iter_mut().skip(2).step_by(3) {
        a.rollout = true;
    }
    write_all(s.path(), &apps);
    let (world, unmanaged) = world(s.path(), &mut apps, sim_config());
    let ingress: Vec<String> = world.ingress_domains().into_iter().collect();
    let h = start_sim(world).await;
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let log = s.path().join("controller.log");
    let mut ctl = controller(s.path(), &h.base_url, port, &log, &ingress);
    let az = Az::new(&h.base_url).await;
    let http = reqwest::Client::new();

    let mut violations = Violations(
        Vec::new(),
        apps.iter()
            .filter(|a| a.rollout)
            .map(|a| format!("{SUB}/{}/{}", a.group, a.name).to_ascii_lowercase())
            .collect(),
    );
    let mut audited = 0;
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    let mut broken: BTreeMap<usize, &'static str> = BTreeMap::new();
    let mut rules: BTreeMap<u64, &'static str> = BTreeMap::new();
    let mut next_tag = 1;
    let started = Instant::now();
    while started.elapsed() < soak {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        let i = rng.below(apps.len() as u64) as usize;
        match rng.below(10) {
            0..=2 => {
                let (rule, name) = if rng.below(4) == 0 {
                    metrics_outage(&mut rng)
                } else {
                    fault(&mut rng)
                };
                let added: Value = http
                    .post(format!("{}/_sim/faults", h.base_url))
                    .json(&rule)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                rules.insert(added[0]["id"].as_u64().unwrap(), name);
            }
            3 => {
                let kind = if rng.chance(0.5) {
                    "revisionFails"
                } else {
                    "operationFails"
                };
                let a = &apps[i];
                http.post(format!("{}/_sim/inject", h.base_url))
                    .json(&json!({"kind": kind, "subscription": SUB, "resourceGroup": a.group, "app": a.name}))
                    .send()
                    .await
                    .unwrap();
                *counts
                    .entry(if kind == "revisionFails" {
                        "revision never healthy"
                    } else {
                        "operation fails"
                    })
                    .or_default() += 1;
            }
            4..=5 => {
                if !out_of_band(&az, &h, &mut rng, &apps[i]).await.is_empty() {
                    *counts.entry("out-of-band edit").or_default() += 1;
                }
            }
            _ => {
                let a = &mut apps[i];
                match edit(&mut rng, a, &mut next_tag) {
                    Some(how) => {
                        std::fs::write(s.path().join(a.file()), broken_yaml(a, how)).unwrap();
                        broken.insert(i, how);
                        *counts.entry("broken desired edit").or_default() += 1;
                    }
                    None => {
                        std::fs::write(s.path().join(a.file()), a.yaml()).unwrap();
                        broken.remove(&i);
                        *counts.entry("desired edit").or_default() += 1;
                        if a.rollout && a.bad {
                            *counts.entry("rollout of a bad image").or_default() += 1;
                        }
                    }
                }
            }
        }
        audited = violations.check(&h, &unmanaged, audited);
        assert!(
            ctl.0.try_wait().unwrap().is_none(),
            "the controller exited under chaos; its log: {}",
            log.display()
        );
    }

    // The faults stop; every file is fixed, with a new image for every app (a revision made
    // unhealthy on purpose stays so, as in Azure: only a new revision moves on).
    let fired: Value = http
        .get(format!("{}/_sim/faults", h.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for r in fired.as_array().into_iter().flatten() {
        let name = rules[&r["id"].as_u64().unwrap()];
        *counts.entry(name).or_default() += u32::try_from(r["hits"].as_u64().unwrap()).unwrap();
    }
    let rollout_moves = controller_writes(&h)
        .iter()
        .filter(|w| w.traffic.is_some() && w.app.as_ref().is_some_and(|a| violations.1.contains(a)))
        .count();
    http.delete(format!("{}/_sim/faults", h.base_url))
        .send()
        .await
        .unwrap();
    http.delete(format!("{}/_sim/inject", h.base_url))
        .send()
        .await
        .unwrap();
    // The first app with a rollout gets a bad image: it must end rolled back; the others
    // promoted.
    next_tag += 1;
    let mut first_rollout = true;
    for a in &mut apps {
        a.tag = next_tag;
        a.bad = a.rollout && std::mem::take(&mut first_rollout);
    }
    write_all(s.path(), &apps);
    let calm = Instant::now();
    let done = wait_converged(
        &h,
        &ep,
        &apps,
        &mut violations,
        &unmanaged,
        &mut audited,
        90,
    )
    .await;
    let to_converge = calm.elapsed();
    let writes = controller_writes(&h);
    println!("\n== chaos soak (seed {seed}, {} s) ==", soak.as_secs());
    println!(
        "apps: {} managed, {} unmanaged beside them",
        apps.len(),
        unmanaged.len()
    );
    println!(
        "faults and edits ({} fault rules; a rule fires on some of its calls):",
        rules.len()
    );
    for (what, n) in &counts {
        println!("  {what:<26} {n}");
    }
    println!(
        "controller writes: {} ({} refused by a fault or Azure)",
        writes.len(),
        writes.iter().filter(|w| w.status >= 400).count()
    );
    // (A rollout's walk is reconciles of its own: one per step and check.)
    let most = done
        .as_ref()
        .and_then(|took| {
            took.iter()
                .filter(|(name, _)| apps.iter().any(|a| &a.name == *name && !a.rollout))
                .max_by_key(|(_, n)| **n)
        })
        .map(|(name, n)| (name.clone(), *n));
    println!(
        "after the faults stopped: converged in {:.1} s; reconciles per app until in sync: {}",
        to_converge.as_secs_f64(),
        done.as_ref().map_or("-".to_owned(), |took| {
            let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
            for n in took.values() {
                *counts.entry(*n).or_default() += 1;
            }
            counts
                .iter()
                .map(|(n, apps)| format!("{n}: {apps} apps"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    );
    let inside: Vec<Early> = h
        .sim
        .audit()
        .early()
        .iter()
        .filter(|x| x.client == "aca-reconciler")
        .cloned()
        .collect();
    println!(
        "requests inside a Retry-After wait: {} ({} sent more than {IN_FLIGHT_MS} ms after the 429; the rest were in flight)",
        inside.len(),
        inside
            .iter()
            .filter(|x| x.after_429_ms > IN_FLIGHT_MS)
            .count()
    );
    let phases = {
        let world = h.sim.world();
        apps.iter()
            .filter(|a| a.rollout)
            .map(|a| {
                let tag = world.apps[&a.id()].app["tags"][aca_reconciler::rollout::STATE_TAG]
                    .as_str()
                    .and_then(aca_reconciler::rollout::RolloutState::decode);
                format!("{} {}", a.name, tag.map_or("-", |s| s.phase.as_str()))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "rollouts: {rollout_moves} traffic moves of rollout apps under the faults; at the end: {phases}"
    );
    println!("invariants broken: {}", violations.0.len());
    ctl.stop();
    violations.assert_none();
    assert!(
        done.is_some(),
        "not converged 90 s after the faults stopped; the controller log: {}\n{}",
        log.display(),
        serde_json::to_string_pretty(&status(&ep).await.unwrap_or_default()).unwrap_or_default()
    );
    // No rollout stuck: each ends promoted (all traffic on its new revision) or, for the bad
    // image, rolled back (all traffic on the revision it replaced), as its state tag says.
    let world = h.sim.world();
    for a in apps.iter().filter(|a| a.rollout) {
        let app = &world.apps[&a.id()].app;
        let tag = app["tags"][aca_reconciler::rollout::STATE_TAG]
            .as_str()
            .unwrap_or_default();
        let state = aca_reconciler::rollout::RolloutState::decode(tag)
            .unwrap_or_else(|| panic!("{}: no rollout state tag: {tag:?}", a.name));
        let latest = app["properties"]["latestRevisionName"].as_str().unwrap();
        let traffic = &app["properties"]["configuration"]["ingress"]["traffic"];
        let (phase, on) = if a.bad {
            (aca_reconciler::rollout::Phase::RolledBack, &state.stable)
        } else {
            (aca_reconciler::rollout::Phase::Promoted, &state.canary)
        };
        assert!(
            state.phase == phase && state.canary == latest,
            "{}: the rollout of {} ended {state:?}",
            a.name,
            a.image()
        );
        let weighted: Vec<(&str, i64)> = traffic
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["weight"].as_i64() > Some(0))
            .map(|r| {
                (
                    r["revisionName"].as_str().unwrap_or("?"),
                    r["weight"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(weighted, [(on.as_str(), 100)], "{}: {traffic}", a.name);
    }
    drop(world);
    // The final edit reaches an app in at most 3 reconciles: one that may have begun with the
    // old file, one that applies the new, and one spare for a write refused on its way in.
    if let Some((name, n)) = most {
        assert!(
            n <= 3,
            "{name} took {n} reconciles to converge after the faults stopped"
        );
    }
}

/// Where in an apply to kill the controller: the write that, once answered, triggers it.
type KillPoint = (&'static str, fn(&Write) -> bool);

const KILL_POINTS: &[KillPoint] = &[
    ("mid-LRO of a template change", |w| {
        w.method == "PATCH" && w.fields.iter().any(|f| f.ends_with("/containers"))
    }),
    ("between activate and traffic move", |w| {
        w.path.ends_with("/activate")
    }),
    ("between traffic move and deactivate", |w| {
        w.method == "PATCH" && w.fields.iter().any(|f| f.ends_with("/traffic"))
    }),
    ("between two restarts", |w| w.path.ends_with("/restart")),
    ("after a deactivation", |w| w.path.ends_with("/deactivate")),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about a minute: run by .ci/run (cargo test --test chaos -- --ignored --nocapture)"]
async fn kill_9_mid_apply_leaves_no_outage_and_no_double_restart() {
    let s = Scratch::new();
    let mut apps: Vec<App> = fleet(4)
        .into_iter()
        .map(|a| App {
            multiple: true,
            keep: 2,
            ..a
        })
        .collect();
    write_all(s.path(), &apps);
    let (world, unmanaged) = world(s.path(), &mut apps, sim_config());
    let h = start_sim(world).await;
    // Restarts answer slowly, so that a kill lands between two of them.
    reqwest::Client::new()
        .post(format!("{}/_sim/faults", h.base_url))
        .json(&json!({"operation": "ContainerAppsRevisions_RestartRevision", "fault": {"kind": "latency", "ms": 400}}))
        .send()
        .await
        .unwrap();
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let log = s.path().join("controller.log");
    let mut violations = Violations::default();
    let mut audited = 0;
    let mut hit = BTreeSet::new();
    println!("\n== crash test: kill -9 mid-apply, then restart ==");
    for (round, (point, trigger)) in KILL_POINTS.iter().cycle().take(10).enumerate() {
        // New work for every app: an image, a canary split, a restart, retention.
        for a in &mut apps {
            a.tag = round as u32 + 2;
            a.canary = round % 2 == 0;
            a.generation = round as u64 + 2;
        }
        write_all(s.path(), &apps);
        let restarts_before = h.sim.world().restarts.len();
        let writes_before = h.sim.audit().writes().len();
        let mut ctl = controller(s.path(), &h.base_url, port, &log, &[]);
        let waited = Instant::now();
        let mut killed = false;
        while waited.elapsed() < Duration::from_secs(30) {
            let hit = h.sim.audit().writes()[writes_before..]
                .iter()
                .any(|w| w.client == "aca-reconciler" && w.status < 300 && trigger(w));
            if hit {
                ctl.kill_9();
                killed = true;
                break;
            }
            if converged(&h, &ep, &apps).await {
                break; // this round's work had no such point
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        audited = violations.check(&h, &unmanaged, audited);
        // Back up: it finishes the work.
        let mut ctl = controller(s.path(), &h.base_url, port, &log, &[]);
        let back = Instant::now();
        let done = wait_converged(
            &h,
            &ep,
            &apps,
            &mut violations,
            &unmanaged,
            &mut audited,
            60,
        )
        .await;
        ctl.stop();
        let w = h.sim.world();
        let mut per_revision: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        for r in &w.restarts[restarts_before..] {
            *per_revision.entry((&r.app, &r.revision)).or_default() += 1;
        }
        let twice: Vec<_> = per_revision.iter().filter(|(_, n)| **n > 1).collect();
        println!(
            "round {:>2}: killed {} ({point}); converged after restart in {:.1} s; {} restarts, none twice: {}",
            round + 1,
            if killed {
                "yes"
            } else {
                "no (the point never came)"
            },
            back.elapsed().as_secs_f64(),
            per_revision.len(),
            twice.is_empty()
        );
        assert!(
            twice.is_empty(),
            "round {}: revisions restarted twice for restartGeneration {}: {twice:?}",
            round + 1,
            round + 2
        );
        assert!(
            done.is_some(),
            "round {}: not converged; log {}",
            round + 1,
            log.display()
        );
        if killed {
            hit.insert(*point);
        }
    }
    violations.assert_none();
    let missed: Vec<_> = KILL_POINTS
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !hit.contains(p))
        .collect();
    assert!(missed.is_empty(), "never killed at: {missed:?}");
    println!("invariants broken: 0");
}

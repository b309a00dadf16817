//! The fleet benchmark: what aca-reconciler costs on a fleet of apps (issue 9).
//!
//! ```sh
//! cargo build --release && cargo run --release --example fleet -- --apps 1000 --groups 10
//! ```
//!
//! It writes a desired-state tree for `--apps` apps in `--groups` resource groups across
//! `--subscriptions` subscriptions, starts the simulator (`aca-reconciler simulate`, its own
//! process) seeded with drifted copies of them and `--latency-ms` added to every request, and
//! the controller (`aca-reconciler run`, its own process, so its memory is its own). Then:
//!
//! 1. **converge**: time from start until every app is in sync, the writes it took, and the
//!    429s (with ARM's buckets on, `--buckets on`, or off); the floor the buckets set;
//! 2. **steady state**: the controller again, with `--steady-interval`; after its first full
//!    pass, the ARM reads per resync over `--steady-resyncs` resyncs, per app and per group;
//! 3. **memory**: the controller's peak RSS while converging, and its RSS at rest (sampled
//!    every 250 ms over the steady-state window: median, min and max);
//! 4. **reaction**: from a desired-state file edit to the first write, 5 times;
//! 5. **planner**: `plan_app` CPU time per app over 10,000 apps, in this process.
//!
//! `--drifted F` drifts only a fraction: the rest is converged first, unmeasured, with the
//! buckets and the latency off.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aca_reconciler::arm::{ContainerApp, Revision};
use aca_reconciler::plan;
use aca_reconciler::simulator::{seed, store};
use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Benchmark aca-reconciler on a simulated fleet (see the module docs)")]
struct Args {
    /// Apps in the fleet.
    #[arg(long, default_value_t = 1000)]
    apps: usize,
    /// Resource groups they are spread over.
    #[arg(long, default_value_t = 10)]
    groups: usize,
    /// Subscriptions the groups are spread over.
    #[arg(long, default_value_t = 1)]
    subscriptions: usize,
    /// Fraction of the apps that start drifted (image, replicas, an extra active revision; every
    /// fourth also the revision mode).
    #[arg(long, default_value_t = 1.0)]
    drifted: f64,
    /// Latency the simulator adds to every request.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// ARM's per-subscription buckets in the simulator: `on`, `off`, or `both` (two runs).
    #[arg(long, default_value = "both", value_parser = ["on", "off", "both"])]
    buckets: String,
    /// The controller's --concurrency.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Resync interval of the steady-state phase.
    #[arg(long, default_value = "5s")]
    steady_interval: String,
    /// Resyncs counted in the steady-state phase.
    #[arg(long, default_value_t = 12)]
    steady_resyncs: u32,
    /// Apps in the planner micro-benchmark.
    #[arg(long, default_value_t = 10_000)]
    planner_apps: usize,
    /// Give up on convergence after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
    /// `text` or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Rounds of the planner micro-benchmark (the best is reported).
    #[arg(long, default_value_t = 5)]
    planner_rounds: usize,
    /// Skip the fleet runs; only the planner micro-benchmark.
    #[arg(long)]
    planner_only: bool,
    /// The aca-reconciler binary to measure (default: the release build beside this example),
    /// e.g. an older build for a before/after comparison.
    #[arg(long)]
    binary: Option<PathBuf>,
}

const REGISTRY: &str = "crfleet.azurecr.io";

fn main() -> Result<()> {
    let args = Args::parse();
    let mut report = json!({
        "machine": machine(),
        "fleet": {"apps": args.apps, "groups": args.groups, "subscriptions": args.subscriptions,
                  "drifted": args.drifted, "latencyMs": args.latency_ms, "concurrency": args.concurrency},
    });
    if !args.planner_only {
        let exe = match &args.binary {
            Some(b) => b.clone(),
            None => binary()?,
        };
        let runs: Vec<bool> = match args.buckets.as_str() {
            "on" => vec![true],
            "off" => vec![false],
            _ => vec![true, false],
        };
        let mut converge = Vec::new();
        for (i, buckets) in runs.iter().enumerate() {
            eprintln!(
                "== converge, buckets {}",
                if *buckets { "on" } else { "off" }
            );
            let run = fleet_run(&exe, &args, *buckets, i + 1 == runs.len())?;
            converge.push(run);
        }
        report["runs"] = Value::Array(converge);
    }
    eprintln!("== planner, {} apps", args.planner_apps);
    report["planner"] = planner(args.planner_apps, args.planner_rounds)?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The release binary next to this example (`cargo build --release` builds it).
fn binary() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me
        .parent()
        .and_then(Path::parent)
        .context("cannot find target/<profile>")?;
    let exe = dir.join("aca-reconciler");
    if !exe.is_file() {
        bail!(
            "{} is missing: run `cargo build --release` first (an example does not build the binary)",
            exe.display()
        );
    }
    Ok(exe)
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    json!({"cpus": cpus, "cpu": model})
}

fn sub_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{:012x}", 0xf1ee7 + i)
}

/// How many apps, spread over how many resource groups and subscriptions.
#[derive(Clone, Copy)]
struct Fleet {
    apps: usize,
    groups: usize,
    subscriptions: usize,
}

impl From<&Args> for Fleet {
    fn from(a: &Args) -> Self {
        Self {
            apps: a.apps,
            groups: a.groups,
            subscriptions: a.subscriptions,
        }
    }
}

/// How the apps are written.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// What the platform team wants: multiple mode, traffic on the latest revision, five
    /// revisions kept active, and registry retention.
    Desired,
    /// What the simulator is seeded from (it drifts image and replicas): single mode. The
    /// seed runs every fourth app in the other mode, with all but its oldest revision active.
    Seed,
}

/// Writes the fleet: one file per resource group (and, for [`Shape::Desired`], a retention
/// policy), only the apps `only` accepts.
fn write_fleet(
    dir: &Path,
    fleet: Fleet,
    shape: Shape,
    only: Option<&dyn Fn(usize) -> bool>,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut files: Vec<String> = vec![String::new(); fleet.groups];
    for i in 0..fleet.apps {
        if only.is_some_and(|f| !f(i)) {
            continue;
        }
        let g = i % fleet.groups;
        let sub = sub_id(g % fleet.subscriptions);
        let spec = match shape {
            Shape::Desired => {
                "  revisionMode: multiple\n  traffic: [{latestRevision: true, weight: 100}]\n  revisionRetention: {keepActive: 5}\n"
            }
            Shape::Seed => "  revisionMode: single\n",
        };
        files[g].push_str(&format!(
            "---\napiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {{name: ca-fleet-{i:05}, resourceGroup: rg-fleet-{g:03}, subscription: {sub}}}\nspec:\n  images: {{api: {REGISTRY}/fleet/api:v2.0.0}}\n  replicas: {{min: 2, max: 6}}\n{spec}"
        ));
    }
    for (g, text) in files.iter().enumerate() {
        if !text.is_empty() {
            std::fs::write(dir.join(format!("rg-fleet-{g:03}.yaml")), text)?;
        }
    }
    if shape == Shape::Seed {
        return Ok(());
    }
    std::fs::write(
        dir.join("registry-retention.yaml"),
        format!(
            "apiVersion: aca-reconciler/v1\nkind: RegistryRetention\nmetadata: {{name: fleet}}\nspec:\n  registry: {REGISTRY}\n  repositories: [fleet/api]\n  keepLast: 10\n"
        ),
    )?;
    Ok(())
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|_| reqwest::blocking::Client::new())
}

fn get_json(url: &str) -> Result<Value> {
    Ok(http().get(url).send()?.json()?)
}

fn simulator(exe: &Path, dir: &Path, buckets: bool) -> Result<(Proc, String)> {
    let mut cmd = Command::new(exe);
    cmd.args([
        "simulate",
        "--listen",
        "127.0.0.1:0",
        "--identity-header",
        "fleet",
    ])
    .args([
        "--page-size",
        "100",
        "--lro",
        "async",
        "--revision-ready",
        "2s",
    ])
    .arg("--seed")
    .arg(dir)
    .stdout(Stdio::piped())
    .stderr(std::fs::File::create(dir.with_file_name("simulate.err"))?);
    if !buckets {
        cmd.arg("--no-throttling");
    }
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().with_context(|| {
        format!(
            "the simulator did not start: {}",
            std::fs::read_to_string(dir.with_file_name("simulate.err")).unwrap_or_default()
        )
    })??;
    let base = first
        .split_whitespace()
        .nth(3)
        .context("unexpected simulator banner")?
        .trim_end_matches(':')
        .to_owned();
    std::thread::spawn(move || lines.for_each(drop));
    Ok((Proc(child), base))
}

fn latency(base: &str, ms: u64) -> Result<()> {
    let _ = http().delete(format!("{base}/_sim/faults")).send()?;
    if ms > 0 {
        let r = http()
            .post(format!("{base}/_sim/faults"))
            .json(&json!({"fault": {"kind": "latency", "ms": ms}}))
            .send()?;
        if !r.status().is_success() {
            bail!("cannot set the latency: {}", r.status());
        }
    }
    Ok(())
}

fn controller(
    exe: &Path,
    dir: &Path,
    base: &str,
    port: u16,
    interval: &str,
    concurrency: usize,
    buckets: bool,
) -> Result<Proc> {
    let child = Command::new(exe)
        // Without ARM's buckets, the controller's own copy of them is off too.
        .args(["--client-throttle", if buckets { "on" } else { "off" }])
        .args(["run", "--interval", interval, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--desired-state")
        .arg(dir)
        .args(["--arm-endpoint", base, "--credential", "managed"])
        .args(["--concurrency", &concurrency.to_string()])
        .arg("--registry-endpoint")
        .arg(format!("{REGISTRY}={base}/registries/{REGISTRY}"))
        .env("IDENTITY_ENDPOINT", format!("{base}/msi/token"))
        .env("IDENTITY_HEADER", "fleet")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}

/// (VmHWM, VmRSS) in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// (apps in sync, apps, passes) from a controller's /status.
fn progress(ep: &str) -> (usize, usize, u64) {
    let Ok(status) = get_json(&format!("{ep}/status")) else {
        return (0, 0, 0);
    };
    let apps = status["apps"].as_array().cloned().unwrap_or_default();
    let in_sync = apps.iter().filter(|a| a["state"] == "inSync").count();
    (in_sync, apps.len(), status["passes"].as_u64().unwrap_or(0))
}

fn counts(base: &str) -> Result<Value> {
    get_json(&format!("{base}/_sim/requests"))
}

fn op(c: &Value, name: &str) -> u64 {
    c["byOperation"][name].as_u64().unwrap_or(0)
}

fn stop(mut p: Proc) {
    let _ = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = p.0.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fleet_run(exe: &Path, args: &Args, buckets: bool, with_steady: bool) -> Result<Value> {
    let work = std::env::temp_dir().join(format!("acar-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let dir = work.join("desired");
    write_fleet(&dir, args.into(), Shape::Desired, None)?;
    let seed_dir = work.join("seed");
    write_fleet(&seed_dir, args.into(), Shape::Seed, None)?;
    let (_sim, base) = simulator(exe, &seed_dir, buckets)?;

    // The apps that start in sync: converged first, unmeasured.
    let drifted = (args.apps as f64 * args.drifted).round() as usize;
    if drifted < args.apps {
        let calm = work.join("in-sync");
        let keep = |i: usize| i >= drifted;
        write_fleet(&calm, args.into(), Shape::Desired, Some(&keep))?;
        let _ = http()
            .patch(format!("{base}/_sim/config"))
            .json(&json!({"throttling": {"enabled": false}, "revisionReadyMs": 50, "lroMs": 50}))
            .send()?;
        let status = Command::new(exe)
            .args(["apply", "--concurrency", "64", "--desired-state"])
            .arg(&calm)
            .args(["--arm-endpoint", &base, "--credential", "managed"])
            .arg("--registry-endpoint")
            .arg(format!("{REGISTRY}={base}/registries/{REGISTRY}"))
            .env("IDENTITY_ENDPOINT", format!("{base}/msi/token"))
            .env("IDENTITY_HEADER", "fleet")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("could not converge the in-sync part first");
        }
        let _ = http()
            .patch(format!("{base}/_sim/config"))
            .json(&json!({"throttling": {"enabled": buckets}, "revisionReadyMs": 2000, "lroMs": 1000}))
            .send()?;
    }
    latency(&base, args.latency_ms)?;
    let _ = http().delete(format!("{base}/_sim/requests")).send()?;

    // 1. Converge, with the production interval (nothing resyncs meanwhile).
    let port = free_port()?;
    let ep = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let ctl = controller(exe, &dir, &base, port, "5m", args.concurrency, buckets)?;
    let pid = ctl.0.id();
    let mut peak = 0;
    let converged = loop {
        let (in_sync, total, _) = progress(&ep);
        peak = peak.max(rss(pid).0);
        if total == args.apps && in_sync == total {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(args.timeout_s) {
            bail!(
                "not converged after {} s: {in_sync}/{total} in sync",
                args.timeout_s
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // What converging the apps cost, by route (retention comes after).
    let at_converge = counts(&base)?;
    // Registry retention runs once no pass is running: wait for its deletions.
    let apps_done = converged;
    let retention_done = loop {
        let deleted = op(&counts(&base)?, "ACR_DeleteTag");
        peak = peak.max(rss(pid).0);
        if deleted > 0 {
            std::thread::sleep(Duration::from_secs(2));
            if op(&counts(&base)?, "ACR_DeleteTag") == deleted {
                break started.elapsed();
            }
            continue;
        }
        if started.elapsed() > Duration::from_secs(args.timeout_s) {
            bail!(
                "registry retention deleted nothing within {} s",
                args.timeout_s
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let c = counts(&base)?;
    let writes = c["armWrites"].as_u64().unwrap_or(0);
    let reads = c["armReads"].as_u64().unwrap_or(0);
    let throttled = c["byStatus"]["429"].as_u64().unwrap_or(0);
    peak = peak.max(rss(pid).0);
    stop(ctl);
    eprintln!(
        "   converged in {:.1} s, {writes} writes, {reads} reads, {throttled} 429s",
        converged.as_secs_f64()
    );
    let t = store::Throttling::default();
    // ARM's buckets are per subscription; the fleet spreads evenly over them.
    let subs = args.subscriptions.max(1) as f64;
    let floor = |n: u64, burst: f64, rate: f64| (n as f64 / subs - burst).max(0.0) / rate;
    let conv_reads = at_converge["armReads"].as_u64().unwrap_or(0);
    let conv_writes = at_converge["armWrites"].as_u64().unwrap_or(0);
    let mut by_route = serde_json::Map::new();
    for (route, name) in [
        ("groupList", "ContainerApps_ListByResourceGroup"),
        ("operationPoll", "ContainerAppOperationStatuses_Get"),
        ("appGet", "ContainerApps_Get"),
        ("revisionList", "ContainerAppsRevisions_ListRevisions"),
        ("revisionGet", "ContainerAppsRevisions_GetRevision"),
        ("replicaList", "ContainerAppsRevisionReplicas_ListReplicas"),
    ] {
        by_route.insert(
            route.to_owned(),
            json!(op(&at_converge, name) as f64 / drifted.max(1) as f64),
        );
    }
    let (write_floor, read_floor) = if buckets {
        (
            floor(conv_writes, t.write_burst, t.write_per_second),
            floor(conv_reads, t.read_burst, t.read_per_second),
        )
    } else {
        (0.0, 0.0)
    };
    let binding = write_floor.max(read_floor);
    let mut run = json!({
        "buckets": buckets,
        "apps": {
            "readsPerDriftedApp": conv_reads as f64 / drifted.max(1) as f64,
            "writesPerDriftedApp": conv_writes as f64 / drifted.max(1) as f64,
            "readsByRoutePerDriftedApp": by_route,
            "writeFloorSeconds": write_floor,
            "readFloorSeconds": read_floor,
            "overBindingFloor": if binding > 0.0 { apps_done.as_secs_f64() / binding - 1.0 } else { 0.0 },
        },
        "converge": {
            "seconds": apps_done.as_secs_f64(),
            "withRetentionSeconds": retention_done.as_secs_f64(),
            "writes": writes,
            "writesPerDriftedApp": writes as f64 / drifted.max(1) as f64,
            "reads": reads,
            "throttled429": throttled,
            "writeFloorSeconds": if buckets { floor(writes, t.write_burst, t.write_per_second) } else { 0.0 },
            "readFloorSeconds": if buckets { floor(reads, t.read_burst, t.read_per_second) } else { 0.0 },
            "tagDeletes": op(&c, "ACR_DeleteTag"),
        },
        "peakRssKiB": peak,
    });
    if !with_steady {
        return Ok(run);
    }

    // 2. Steady state: a short interval; counted after the first full pass.
    eprintln!("== steady state, resync every {}", args.steady_interval);
    let tags_before = op(&counts(&base)?, "ACR_GetTags");
    let port = free_port()?;
    let ep = format!("http://127.0.0.1:{port}");
    let ctl = controller(
        exe,
        &dir,
        &base,
        port,
        &args.steady_interval,
        args.concurrency,
        buckets,
    )?;
    let pid = ctl.0.id();
    let started = Instant::now();
    let interval = aca_reconciler::duration::parse(&args.steady_interval)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The first minutes: a controller started on a converged fleet, from its first resync,
    // over `--steady-resyncs` resyncs (registry retention's first run included).
    let start_counts = counts(&base)?;
    std::thread::sleep(interval * args.steady_resyncs);
    let first = counts(&base)?;
    let first_lists = op(&first, "ContainerApps_ListByResourceGroup")
        - op(&start_counts, "ContainerApps_ListByResourceGroup");
    let first_resyncs = (first_lists as f64 / args.groups as f64).max(1.0);
    let first_reads =
        first["armReads"].as_u64().unwrap_or(0) - start_counts["armReads"].as_u64().unwrap_or(0);
    let first_minutes = json!({
        "seconds": (interval * args.steady_resyncs).as_secs_f64(),
        "resyncs": first_resyncs,
        "reads": first_reads,
        "revisionLists": op(&first, "ContainerAppsRevisions_ListRevisions") - op(&start_counts, "ContainerAppsRevisions_ListRevisions"),
        "readsPerAppPerResync": first_reads as f64 / first_resyncs / args.apps as f64,
    });
    loop {
        let (in_sync, total, passes) = progress(&ep);
        if total == args.apps && in_sync == total && passes >= args.groups as u64 {
            break;
        }
        if started.elapsed() > Duration::from_secs(args.timeout_s) {
            bail!("the steady-state controller never settled");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // A new controller runs registry retention once at start (every app's revisions listed):
    // part of its first minutes, not of the steady state. Wait until it has listed the tags.
    let listed = Instant::now();
    loop {
        let tags = op(&counts(&base)?, "ACR_GetTags");
        std::thread::sleep(Duration::from_secs(2));
        if tags > tags_before && op(&counts(&base)?, "ACR_GetTags") == tags {
            break;
        }
        if listed.elapsed() > Duration::from_secs(args.timeout_s) {
            bail!("the steady-state controller never ran registry retention");
        }
    }
    // The restart verifies every app in full once (a revision list each, paced by the read
    // bucket): wait until a resync reads the revisions of at most a third of the apps.
    let settle = Instant::now();
    loop {
        let a = op(&counts(&base)?, "ContainerAppsRevisions_ListRevisions");
        std::thread::sleep(interval);
        let b = op(&counts(&base)?, "ContainerAppsRevisions_ListRevisions");
        if b - a <= args.apps as u64 / 3 {
            break;
        }
        if settle.elapsed() > Duration::from_secs(args.timeout_s) {
            bail!("the steady state never settled");
        }
    }
    eprintln!("   settled after {:.0} s", settle.elapsed().as_secs_f64());
    let before = counts(&base)?;
    // RSS at rest: sampled every 250 ms over the whole steady window (resyncs and retention
    // included), so one sample landing on a pass does not decide the figure.
    let window = Instant::now();
    let mut samples = Vec::new();
    while window.elapsed() < interval * args.steady_resyncs {
        samples.push(rss(pid).1);
        std::thread::sleep(Duration::from_millis(250));
    }
    samples.sort_unstable();
    let after = counts(&base)?;
    let d = |name: &str| op(&after, name) - op(&before, name);
    let lists = d("ContainerApps_ListByResourceGroup");
    let resyncs = lists as f64 / args.groups as f64;
    let steady_reads =
        after["armReads"].as_u64().unwrap_or(0) - before["armReads"].as_u64().unwrap_or(0);
    let steady_writes =
        after["armWrites"].as_u64().unwrap_or(0) - before["armWrites"].as_u64().unwrap_or(0);
    let revision_lists = d("ContainerAppsRevisions_ListRevisions");
    let at_rest = json!({
        "median": samples.get(samples.len() / 2).copied().unwrap_or(0),
        "min": samples.first().copied().unwrap_or(0),
        "max": samples.last().copied().unwrap_or(0),
        "samples": samples.len(),
    });

    // 3. Reaction: a file edit to the first write, 5 times.
    let mut reactions = Vec::new();
    let file = dir.join("rg-fleet-000.yaml");
    let text = std::fs::read_to_string(&file)?;
    for k in 0..5u32 {
        let w0 = counts(&base)?["armWrites"].as_u64().unwrap_or(0);
        let edited = text.replacen(
            "replicas: {min: 2, max: 6}",
            &format!("replicas: {{min: 2, max: {}}}", 7 + k),
            1,
        );
        std::fs::write(&file, edited)?;
        let t0 = Instant::now();
        loop {
            if counts(&base)?["armWrites"].as_u64().unwrap_or(0) > w0 {
                reactions.push(t0.elapsed().as_secs_f64());
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("no write within 30 s of an edit");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    stop(ctl);
    reactions.sort_by(f64::total_cmp);
    run["steady"] = json!({
        "resyncs": resyncs,
        "readsPerResync": steady_reads as f64 / resyncs.max(1.0),
        "listPagesPerResync": lists as f64 / resyncs.max(1.0),
        "revisionListsPerResync": revision_lists as f64 / resyncs.max(1.0),
        "readsPerAppPerResync": steady_reads as f64 / resyncs.max(1.0) / args.apps as f64,
        "readsPerGroupPerResync": steady_reads as f64 / resyncs.max(1.0) / args.groups as f64,
        "writes": steady_writes,
    });
    run["firstMinutes"] = first_minutes;
    run["restRssKiB"] = json!(at_rest);
    run["reactionSeconds"] = json!({"min": reactions[0], "median": reactions[reactions.len() / 2], "max": reactions[reactions.len() - 1]});
    let _ = std::fs::remove_dir_all(&work);
    Ok(run)
}

/// `plan_app` over `n` drifted apps, CPU time per app (best of `rounds`).
fn planner(n: usize, rounds: usize) -> Result<Value> {
    let work = std::env::temp_dir().join(format!("acar-planner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let fleet = Fleet {
        apps: n,
        groups: 10,
        subscriptions: 1,
    };
    write_fleet(&work, fleet, Shape::Desired, None)?;
    let loaded = aca_reconciler::spec::load(std::slice::from_ref(&work), &Default::default());
    let _ = std::fs::remove_dir_all(&work);
    if !loaded.diagnostics.is_empty() {
        bail!("the generated fleet is invalid: {:?}", loaded.diagnostics);
    }
    let now = aca_reconciler::time::Clock::new().now();
    // Plans for drifted apps: seeded from the seed shape, planned against the desired one.
    let seed_dir = work.with_extension("seed");
    write_fleet(&seed_dir, fleet, Shape::Seed, None)?;
    let seeded = aca_reconciler::spec::load(std::slice::from_ref(&seed_dir), &Default::default());
    let _ = std::fs::remove_dir_all(&seed_dir);
    let world = seed::from_desired(&seeded.state, store::Config::default(), now);
    let mut cases: Vec<(&aca_reconciler::spec::AppSpec, ContainerApp, Vec<Revision>)> = Vec::new();
    for (key, spec) in &loaded.state.apps {
        let id = store::AppId::new(&key.subscription, &key.resource_group, &key.name);
        let app =
            ContainerApp::from_value(world.get_app(&id).map_err(|e| anyhow::anyhow!("{e:?}"))?)?;
        let revisions = world
            .list_revisions(&id)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<Vec<Revision>, _>>()?;
        cases.push((spec, app, revisions));
    }
    let mut best = f64::MAX;
    let mut actions = 0;
    for _ in 0..rounds.max(1) {
        let t0 = Instant::now();
        actions = 0;
        for (spec, app, revisions) in &cases {
            let p = plan::plan_app(
                spec,
                plan::LiveApp {
                    app,
                    revisions: Some(revisions),
                },
                now,
            );
            actions += std::hint::black_box(p).actions.len();
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(
        json!({"apps": cases.len(), "rounds": rounds.max(1), "microsPerApp": best * 1e6 / cases.len() as f64, "actionsPlanned": actions}),
    )
}

fn print_table(r: &Value) {
    let f = &r["fleet"];
    println!(
        "fleet: {} apps in {} resource groups, {} subscription(s), {}% drifted, {} ms latency, concurrency {}",
        f["apps"],
        f["groups"],
        f["subscriptions"],
        f["drifted"].as_f64().unwrap_or(0.0) * 100.0,
        f["latencyMs"],
        f["concurrency"]
    );
    println!(
        "machine: {} x {}",
        r["machine"]["cpus"],
        r["machine"]["cpu"].as_str().unwrap_or("")
    );
    println!();
    println!("{:<58} {:>14}", "measure", "value");
    for run in r["runs"].as_array().into_iter().flatten() {
        let b = if run["buckets"] == true { "on" } else { "off" };
        let c = &run["converge"];
        println!(
            "{:<58} {:>12.1} s",
            format!("converge: every app in sync (buckets {b})"),
            c["seconds"].as_f64().unwrap_or(0.0)
        );
        println!(
            "{:<58} {:>12.1} s",
            "  and registry retention done",
            c["withRetentionSeconds"].as_f64().unwrap_or(0.0)
        );
        println!(
            "{:<58} {:>14}",
            format!("  writes (buckets {b})"),
            format!(
                "{} ({:.2}/app)",
                c["writes"],
                c["writesPerDriftedApp"].as_f64().unwrap_or(0.0)
            )
        );
        println!(
            "{:<58} {:>14}",
            format!("  reads (buckets {b})"),
            c["reads"].to_string()
        );
        println!(
            "{:<58} {:>14}",
            format!("  429s (buckets {b})"),
            c["throttled429"].to_string()
        );
        let a = &run["apps"];
        println!(
            "{:<58} {:>14.2}",
            "  reads per drifted app, apps converged",
            a["readsPerDriftedApp"].as_f64().unwrap_or(0.0)
        );
        for (route, per) in a["readsByRoutePerDriftedApp"]
            .as_object()
            .into_iter()
            .flatten()
        {
            println!(
                "{:<58} {:>14.3}",
                format!("    {route}"),
                per.as_f64().unwrap_or(0.0)
            );
        }
        println!(
            "{:<58} {:>14.2}",
            "  writes per drifted app, apps converged",
            a["writesPerDriftedApp"].as_f64().unwrap_or(0.0)
        );
        if run["buckets"] == true {
            println!(
                "{:<58} {:>12.1} s",
                "  apps: write floor / read floor",
                a["writeFloorSeconds"].as_f64().unwrap_or(0.0)
            );
            println!(
                "{:<58} {:>12.1} s",
                "",
                a["readFloorSeconds"].as_f64().unwrap_or(0.0)
            );
            println!(
                "{:<58} {:>12.1} %",
                "  apps converged over the binding floor",
                a["overBindingFloor"].as_f64().unwrap_or(0.0) * 100.0
            );
            println!(
                "{:<58} {:>12.1} s",
                "  floor set by the write bucket ((writes-200)/10)",
                c["writeFloorSeconds"].as_f64().unwrap_or(0.0)
            );
            println!(
                "{:<58} {:>12.1} s",
                "  floor set by the read bucket ((reads-250)/25)",
                c["readFloorSeconds"].as_f64().unwrap_or(0.0)
            );
        }
        println!(
            "{:<58} {:>14}",
            format!("  registry tags deleted (buckets {b})"),
            c["tagDeletes"].to_string()
        );
        println!(
            "{:<58} {:>10.1} MiB",
            format!("  controller peak RSS (buckets {b})"),
            run["peakRssKiB"].as_f64().unwrap_or(0.0) / 1024.0
        );
        if let Some(s) = run.get("steady") {
            println!(
                "{:<58} {:>14.1}",
                "steady state: resyncs counted",
                s["resyncs"].as_f64().unwrap_or(0.0)
            );
            println!(
                "{:<58} {:>14.1}",
                "  ARM reads per resync",
                s["readsPerResync"].as_f64().unwrap_or(0.0)
            );
            println!(
                "{:<58} {:>14.1}",
                "  list pages per resync",
                s["listPagesPerResync"].as_f64().unwrap_or(0.0)
            );
            println!(
                "{:<58} {:>14.1}",
                "  revision lists per resync",
                s["revisionListsPerResync"].as_f64().unwrap_or(0.0)
            );
            println!(
                "{:<58} {:>14.3}",
                "  reads per app per resync (amortized)",
                s["readsPerAppPerResync"].as_f64().unwrap_or(0.0)
            );
            println!(
                "{:<58} {:>14.2}",
                "  reads per resource group per resync",
                s["readsPerGroupPerResync"].as_f64().unwrap_or(0.0)
            );
            println!("{:<58} {:>14}", "  writes", s["writes"].to_string());
            let f = &run["firstMinutes"];
            println!(
                "{:<58} {:>14.3}",
                format!(
                    "first {:.0} s after start: reads per app per resync",
                    f["seconds"].as_f64().unwrap_or(0.0)
                ),
                f["readsPerAppPerResync"].as_f64().unwrap_or(0.0)
            );
            println!(
                "{:<58} {:>14}",
                "  reads (revision lists) / resyncs",
                format!(
                    "{} ({}) / {:.1}",
                    f["reads"],
                    f["revisionLists"],
                    f["resyncs"].as_f64().unwrap_or(0.0)
                )
            );
            let rest = &run["restRssKiB"];
            let mib = |k: &str| rest[k].as_f64().unwrap_or(0.0) / 1024.0;
            println!(
                "{:<58} {:>14}",
                "controller RSS at rest, median (min - max)",
                format!(
                    "{:.1} ({:.1} - {:.1}) MiB",
                    mib("median"),
                    mib("min"),
                    mib("max")
                )
            );
            let re = &run["reactionSeconds"];
            println!(
                "{:<58} {:>14}",
                "file edit -> first write (min / median / max)",
                format!(
                    "{:.2} / {:.2} / {:.2} s",
                    re["min"].as_f64().unwrap_or(0.0),
                    re["median"].as_f64().unwrap_or(0.0),
                    re["max"].as_f64().unwrap_or(0.0)
                )
            );
        }
    }
    let p = &r["planner"];
    println!(
        "{:<58} {:>11.2} µs",
        format!(
            "planner CPU per app ({} apps, best of {})",
            p["apps"], p["rounds"]
        ),
        p["microsPerApp"].as_f64().unwrap_or(0.0)
    );
}

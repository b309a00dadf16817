//! The simulated world: container apps with their revisions, registries with their tags, and
//! the long-running operations in flight. Pure state and behaviour: no I/O, and the time is
//! always passed in, so every behaviour is testable without a server.
//!
//! Behaviour follows `docs/azure-notes.md` (section numbers cited as N§x). Where Azure's
//! behaviour is undocumented, the line that implements the assumption says so, with its source.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::traffic::{Answer, Behaviour, Behaviours, Gauge, Routing, Target, Traffic};
use crate::time::{self, Millis};

/// The api-version this simulator speaks (N§1.1).
pub const API_VERSION: &str = "2026-01-01";

/// How a write answers (N§1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LroMode {
    /// 200 with the resource at once.
    Sync,
    /// 202 with `Azure-AsyncOperation` and `Location`.
    Async,
    /// 202 with `Location` only (what the PATCH spec declares).
    LocationOnly,
}

/// Tunables of the simulated behaviour; `GET/PUT /_sim/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Items per page of list responses.
    pub page_size: usize,
    /// How writes answer.
    pub lro_mode: LroMode,
    /// How long an asynchronous write stays `InProgress`.
    pub lro_ms: u64,
    /// `Retry-After` (seconds) on 202 responses and operation polls.
    pub lro_retry_after_s: u64,
    /// How long a new or re-activated revision takes to become ready.
    pub revision_ready_ms: u64,
    /// ARM's per-subscription token buckets (N§7); `enabled: false` turns them off.
    pub throttling: Throttling,
    /// How long served requests take to show in the metrics API: Azure Monitor's ingestion
    /// delay ("platform metrics are available in under a minute" [doc: learn.microsoft.com
    /// azure-monitor/logs/data-ingestion-time]).
    pub metrics_delay_ms: u64,
}

/// ARM's token buckets: one for reads and one for writes per subscription (N§7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Throttling {
    /// Whether requests are throttled at all.
    pub enabled: bool,
    /// Read bucket size.
    pub read_burst: f64,
    /// Read tokens refilled per second.
    pub read_per_second: f64,
    /// Write bucket size.
    pub write_burst: f64,
    /// Write tokens refilled per second.
    pub write_per_second: f64,
}

impl Default for Throttling {
    fn default() -> Self {
        Self {
            enabled: true,
            read_burst: 250.0,
            read_per_second: 25.0,
            write_burst: 200.0,
            write_per_second: 10.0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            page_size: 50,
            lro_mode: LroMode::Async,
            lro_ms: 1_000,
            lro_retry_after_s: 1,
            revision_ready_ms: 2_000,
            throttling: Throttling::default(),
            metrics_delay_ms: 60_000,
        }
    }
}

/// An ARM error: HTTP status, ARM code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmError {
    /// HTTP status.
    pub status: u16,
    /// `error.code`.
    pub code: String,
    /// `error.message`.
    pub message: String,
}

impl ArmError {
    /// Builds an error.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    // Field-validation errors carry this text (N§5); the code is not in any source we have,
    // so this one is an assumption.
    fn invalid_field(field: &str, details: impl std::fmt::Display) -> Self {
        Self::bad_request(
            "ContainerAppInvalidPropertyValue",
            format!(
                "The following field(s) are either invalid or missing. Field '{field}' is invalid with details: '{details}'."
            ),
        )
    }
}

/// Identifies an app; compared lower-case as ARM does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AppId {
    /// Subscription id, lower case.
    pub subscription: String,
    /// Resource group, lower case.
    pub resource_group: String,
    /// App name, lower case.
    pub name: String,
}

impl AppId {
    /// Builds an id, lower-casing every part.
    pub fn new(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self {
            subscription: subscription.to_lowercase(),
            resource_group: resource_group.to_lowercase(),
            name: name.to_lowercase(),
        }
    }
}

impl std::fmt::Display for AppId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

/// One revision as the simulator keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// `<app>--<suffix>`.
    pub name: String,
    /// Creation time.
    pub created: Millis,
    /// Last time it was active.
    pub last_active: Millis,
    /// Whether it is active.
    pub active: bool,
    /// Snapshot of the app's template when the revision was created.
    pub template: Value,
    /// `Provisioning | Provisioned | Failed | Deprovisioning | Deprovisioned`.
    pub provisioning_state: String,
    /// `Running | Processing | Stopped | Degraded | Failed | Unknown`.
    pub running_state: String,
    /// `Healthy | Unhealthy | None`.
    pub health_state: String,
    /// When a starting revision becomes ready (or fails).
    #[serde(default)]
    pub ready_at: Option<Millis>,
    /// Its containers cannot start (an image the registry does not have, or an injected fault).
    #[serde(default)]
    pub fails: bool,
    /// Restarts so far.
    #[serde(default)]
    pub restarts: u32,
    /// When its current replicas were created, if not when it last became active: a restart
    /// replaces every replica [assumption: learn.microsoft.com "revisions" says a restart
    /// restarts the revision's replicas; the simulator recreates them].
    #[serde(default)]
    pub replicas_since: Option<Millis>,
}

impl Revision {
    fn is_running(&self) -> bool {
        self.active && self.running_state == "Running"
    }
}

/// One app: its ARM JSON (secrets without values) and its revisions, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppRecord {
    /// Subscription id as first written.
    pub subscription: String,
    /// Resource group as first written.
    pub resource_group: String,
    /// The app's ARM representation.
    pub app: Value,
    /// Revisions, oldest first.
    pub revisions: Vec<Revision>,
    /// Secret values by name (never returned by GET, N§4.1).
    #[serde(default)]
    pub secret_values: BTreeMap<String, String>,
    /// The operation holding the app's write lock.
    #[serde(default)]
    pub lock: Option<String>,
    /// Revisions whose containers should fail to start (fault injection), counted down.
    #[serde(default)]
    pub fail_next_revisions: u32,
    /// Asynchronous writes that should end `Failed` (fault injection), counted down.
    #[serde(default)]
    pub fail_next_operations: u32,
    /// Its users' requests and what they got (the traffic model; empty at rate 0).
    #[serde(default, skip_serializing_if = "Traffic::is_empty")]
    pub traffic: Traffic,
}

/// A tag in a registry repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    /// Tag name.
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    /// Creation time.
    pub created: Millis,
    /// Last update time (ACR sorts by this, N§1.3).
    pub last_update: Millis,
    /// `changeableAttributes.deleteEnabled`.
    #[serde(default = "yes")]
    pub delete_enabled: bool,
    /// `changeableAttributes.writeEnabled`.
    #[serde(default = "yes")]
    pub write_enabled: bool,
}

fn yes() -> bool {
    true
}

/// A repository: its tags and the manifests (digests) it stores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Repository {
    /// Tags, in no particular order.
    pub tags: Vec<Tag>,
    /// Digests of the stored manifests (tagged or not).
    pub manifests: BTreeSet<String>,
}

/// A registry by login server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Repositories by name.
    pub repositories: BTreeMap<String, Repository>,
}

/// A long-running operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// The app it writes.
    pub app: AppId,
    /// Start time.
    pub started: Millis,
    /// When it ends.
    pub done_at: Millis,
    /// `Some(message)`: it ends `Failed` and the write is undone.
    pub fails_with: Option<String>,
    /// The app as it was before the write, restored if the operation fails.
    #[serde(default)]
    pub rollback: Option<Value>,
    /// The revision the write created, removed if the operation fails.
    #[serde(default)]
    pub created_revision: Option<String>,
    /// Whether it has ended (and released the lock).
    pub finished: bool,
}

/// Something that took traffic away from users: the simulator records it, tests assert none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outage {
    /// When.
    pub at: String,
    /// Which app.
    pub app: String,
    /// Which revision.
    pub revision: String,
    /// What happened.
    pub reason: String,
}

/// A restart, for tests that count them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Restart {
    /// When.
    pub at: String,
    /// Which app.
    pub app: String,
    /// Which revision.
    pub revision: String,
}

/// A subscription the simulator knows (for `GET /subscriptions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Display name.
    pub display_name: String,
}

/// Everything the simulator holds. `GET /_sim/state` returns it; `--seed FILE.json` reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct World {
    /// Tunables.
    pub config: Config,
    /// Known subscriptions (apps' subscriptions are added automatically).
    pub subscriptions: BTreeMap<String, Subscription>,
    /// Apps (a list of records in JSON: a map keyed by a struct has no JSON form).
    #[serde(with = "apps_as_list")]
    pub apps: BTreeMap<AppId, AppRecord>,
    /// Registries by login server (lower case).
    pub registries: BTreeMap<String, Registry>,
    /// Operations by id.
    pub operations: BTreeMap<String, Operation>,
    /// The outage log.
    pub outages: Vec<Outage>,
    /// The restart log.
    pub restarts: Vec<Restart>,
    /// How revisions answer requests, by image and by revision (`/_sim/behaviours`).
    #[serde(skip_serializing_if = "Behaviours::is_empty")]
    pub behaviours: Behaviours,
    /// Counter for ids and generated names.
    pub counter: u64,
    /// Mixed into generated ids so that two simulator runs do not hand out the same ones.
    #[serde(default)]
    pub salt: u64,
    /// Traffic problems currently in force, so each is logged once when it starts.
    #[serde(skip)]
    current_violations: BTreeSet<(AppId, String, String)>,
}

mod apps_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{AppId, AppRecord};

    pub fn serialize<S: Serializer>(
        apps: &BTreeMap<AppId, AppRecord>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        apps.values().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<AppId, AppRecord>, D::Error> {
        let records = Vec::<AppRecord>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for r in records {
            let name = r
                .app
                .get("name")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| serde::de::Error::custom("an app record's app has no name"))?;
            out.insert(AppId::new(&r.subscription, &r.resource_group, name), r);
        }
        Ok(out)
    }
}

/// The tenant every simulated subscription belongs to.
pub const TENANT_ID: &str = "72f988bf-0000-4000-8000-000000000001";

/// What a write produced: the app and, for an asynchronous write, the operation id.
#[derive(Debug, Clone)]
pub struct WriteResult {
    /// The app after the write.
    pub app: Value,
    /// Operation id when the write runs asynchronously.
    pub operation: Option<String>,
    /// Whether the resource was created (PUT).
    pub created: bool,
}

impl World {
    /// An empty world with `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    fn next_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// A GUID-shaped id, unique within this world.
    pub fn new_guid(&mut self) -> String {
        let n = self.next_id();
        let h = splitmix(n ^ self.salt ^ 0x5eed);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (h >> 32) as u32,
            (h >> 16) & 0xffff,
            h & 0xfff,
            (h >> 52) & 0xfff,
            splitmix(h) & 0xffff_ffff_ffff
        )
    }

    /// A lower-case suffix of 7 characters starting with a letter, as Azure generates them.
    fn generated_suffix(&mut self) -> String {
        let mut h = splitmix(self.next_id() ^ self.salt ^ 0xabcdef);
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut s = String::new();
        for i in 0..7 {
            let range = if i == 0 { 26 } else { 36 };
            s.push(char::from(alphabet[(h % range) as usize]));
            h /= 36;
        }
        s
    }

    /// Brings every time-driven state up to `now`: revisions that become ready or fail,
    /// operations that end, Single mode's traffic switch, and the requests users sent. Events
    /// apply in time order, each app's traffic advanced to each event's moment first, so every
    /// request is routed by the rules in force when it arrived. Idempotent.
    pub fn tick(&mut self, now: Millis) {
        // (when, revisions before operations, app, operation)
        let mut events: Vec<(Millis, u8, AppId, Option<String>)> = Vec::new();
        for (id, rec) in &self.apps {
            for r in &rec.revisions {
                if let Some(at) = r.ready_at
                    && at <= now
                {
                    events.push((at, 0, id.clone(), None));
                }
            }
        }
        for (op_id, op) in &self.operations {
            if !op.finished && op.done_at <= now {
                events.push((op.done_at, 1, op.app.clone(), Some(op_id.clone())));
            }
        }
        events.sort();
        for (at, _, id, operation) in events {
            self.advance_traffic(&id, at);
            match operation {
                None => self.tick_app(&id, at),
                Some(op_id) => self.finish_operation(&op_id),
            }
            self.log_gauges(&id, at);
        }
        let ids: Vec<AppId> = self.apps.keys().cloned().collect();
        for id in ids {
            self.advance_traffic(&id, now);
            self.check_traffic(&id, now);
        }
    }

    fn finish_operation(&mut self, op_id: &str) {
        let Some(op) = self.operations.get_mut(op_id) else {
            return;
        };
        op.finished = true;
        let state = if op.fails_with.is_some() {
            "Failed"
        } else {
            "Succeeded"
        };
        let app_id = op.app.clone();
        let rollback = op.rollback.take().filter(|_| op.fails_with.is_some());
        let created = op
            .created_revision
            .take()
            .filter(|_| op.fails_with.is_some());
        if let Some(rec) = self.apps.get_mut(&app_id) {
            if rec.lock.as_deref() == Some(op_id) {
                rec.lock = None;
            }
            // A failed write leaves the app as it was, marked Failed [assumption: ARM
            // reports the failure and the RP keeps the last good configuration].
            if let Some(before) = rollback {
                rec.app = before;
            }
            if let Some(name) = created {
                rec.revisions.retain(|r| r.name != name);
            }
            set_path(
                &mut rec.app,
                &["properties", "provisioningState"],
                json!(state),
            );
        }
    }

    /// Serves the requests the app's users sent up to `to`, by the routing in force now.
    fn advance_traffic(&mut self, id: &AppId, to: Millis) {
        let detail_until =
            to - self.config.metrics_delay_ms as i64 - super::traffic::SECOND_DETAIL_MS;
        let Some(rec) = self.apps.get_mut(id) else {
            return;
        };
        if !rec.traffic.has_gauges() {
            // First sight of the app: its running revisions have run since they became
            // active, as far as the metrics can tell.
            let gauges = gauges_of(rec);
            let since = rec
                .revisions
                .iter()
                .filter(|r| r.is_running())
                .map(|r| r.last_active)
                .min()
                .map_or(to, |t| t.min(to));
            rec.traffic.log_gauges(since, gauges);
        }
        if !rec.traffic.is_sending() {
            rec.traffic.skip_to(to);
            return;
        }
        let routing = routing_of(rec, &self.behaviours);
        rec.traffic.advance(&routing, to, detail_until);
    }

    /// Records the app's running revisions' replicas and restarts from `at` on.
    fn log_gauges(&mut self, id: &AppId, at: Millis) {
        if let Some(rec) = self.apps.get_mut(id) {
            let gauges = gauges_of(rec);
            rec.traffic.log_gauges(at, gauges);
        }
    }

    /// Sets how many requests per second the app's users send, from `now` on.
    ///
    /// # Errors
    /// The app does not exist.
    pub fn set_request_rate(
        &mut self,
        id: &AppId,
        requests_per_second: f64,
        now: Millis,
    ) -> Result<(), ArmError> {
        self.tick(now);
        let rec = self.apps.get_mut(id).ok_or_else(|| not_found_app(id))?;
        rec.traffic.set_rate(requests_per_second, now);
        Ok(())
    }

    /// Declares how the revisions running `image` behave from `now` on (`None` forgets it).
    pub fn set_image_behaviour(&mut self, image: &str, b: Option<Behaviour>, now: Millis) {
        self.tick(now);
        match b {
            Some(b) => self.behaviours.images.insert(image.to_owned(), b),
            None => self.behaviours.images.remove(image),
        };
    }

    /// Declares how the revision `name` behaves from `now` on (`None` forgets it).
    pub fn set_revision_behaviour(&mut self, name: &str, b: Option<Behaviour>, now: Millis) {
        self.tick(now);
        let key = name.to_ascii_lowercase();
        match b {
            Some(b) => self.behaviours.revisions.insert(key, b),
            None => self.behaviours.revisions.remove(&key),
        };
    }

    /// Forgets every declared behaviour, from `now` on.
    pub fn clear_behaviours(&mut self, now: Millis) {
        self.tick(now);
        self.behaviours = Behaviours::default();
    }

    /// Answers an HTTP request for `host` (an app's, revision's or label's URL) at `now`, and
    /// counts it; `None` when no app has that host.
    pub fn serve_ingress(&mut self, host: &str, path: &str, now: Millis) -> Option<IngressAnswer> {
        self.tick(now);
        let (id, target) = find_host(self, host)?;
        let behaviours = &self.behaviours;
        let rec = self.apps.get_mut(&id)?;
        let routing = routing_of(rec, behaviours);
        let revision = match &target {
            HostTarget::App => match rec.traffic.pick(&routing) {
                Some(t) => t.revision.clone(),
                None => latest_revision_name(&rec.app)?,
            },
            HostTarget::Revision(name) => name.clone(),
            HostTarget::Label(label) => label_revision(rec, label)?,
        };
        let serving = rec
            .revisions
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(&revision))
            .filter(|r| r.is_running())
            .map(|r| behaviours.resolve(&r.name, &r.template));
        let answer = rec
            .traffic
            .answer_one(now, &revision, serving.as_ref(), path);
        let image = rec
            .revisions
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(&revision))
            .and_then(|r| r.template.pointer("/containers/0/image"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(IngressAnswer {
            app: id.name,
            host: target,
            image,
            answer,
        })
    }

    /// The environment default domains of the apps with ingress (`<app>.<domain>` is an app's
    /// URL), for clients to map with `--ingress-endpoint`.
    pub fn ingress_domains(&self) -> BTreeSet<String> {
        self.apps
            .values()
            .filter_map(|r| app_domain(&r.app))
            .map(|(_, d)| d.to_owned())
            .collect()
    }

    fn tick_app(&mut self, id: &AppId, now: Millis) {
        let Some(rec) = self.apps.get_mut(id) else {
            return;
        };
        let latest = latest_revision_name(&rec.app);
        let single = is_single_mode(&rec.app);
        let mut became_ready_latest = false;
        for r in &mut rec.revisions {
            let Some(at) = r.ready_at else { continue };
            if at > now {
                continue;
            }
            r.ready_at = None;
            if r.fails {
                r.provisioning_state = "Failed".into();
                r.running_state = "Failed".into();
                r.health_state = "Unhealthy".into();
            } else {
                r.provisioning_state = "Provisioned".into();
                r.running_state = "Running".into();
                r.health_state = "Healthy".into();
                if Some(r.name.as_str()) == latest.as_deref() {
                    became_ready_latest = true;
                }
            }
        }
        if became_ready_latest {
            if let Some(name) = latest.clone() {
                set_path(
                    &mut rec.app,
                    &["properties", "latestReadyRevisionName"],
                    json!(name),
                );
            }
            // Single mode: the old revision keeps 100% until the new one is ready, then is
            // deactivated (N§4.3). The traffic configuration is left as written: weights do
            // not apply in this mode, all traffic goes to the one active revision.
            if single {
                for r in &mut rec.revisions {
                    if Some(r.name.as_str()) != latest.as_deref() && r.active {
                        r.active = false;
                        r.running_state = "Stopped".into();
                        r.last_active = now;
                    }
                }
            }
        }
    }

    /// Records an outage for each traffic problem that has just begun: weight on a revision
    /// that is inactive or not running, or `latestRevision` with no ready revision.
    fn check_traffic(&mut self, id: &AppId, now: Millis) {
        let Some(rec) = self.apps.get(id) else { return };
        let mut found = BTreeSet::new();
        for (revision, weight) in effective_weights(rec) {
            if weight == 0 {
                continue;
            }
            let reason = match rec
                .revisions
                .iter()
                .find(|r| r.name.eq_ignore_ascii_case(&revision))
            {
                None => Some("traffic to a revision that does not exist"),
                Some(r) if !r.active => Some("traffic to an inactive revision"),
                Some(r) if r.running_state == "Failed" => Some("traffic to a failed revision"),
                Some(r) if !r.is_running() => Some("traffic to a revision that is not running yet"),
                Some(_) => None,
            };
            if let Some(reason) = reason {
                found.insert((id.clone(), revision, reason.to_owned()));
            }
        }
        let app_name = rec.app["name"].as_str().unwrap_or_default().to_owned();
        for v in &found {
            if !self.current_violations.contains(v) {
                self.outages.push(Outage {
                    at: time::format_arm(now),
                    app: app_name.clone(),
                    revision: v.1.clone(),
                    reason: v.2.clone(),
                });
            }
        }
        self.current_violations.retain(|v| &v.0 != id);
        self.current_violations.extend(found);
    }

    /// The operation holding the lock of the app at `app` (`subscription/resourcegroup/name`,
    /// as [`super::audit::scope_of`] gives it), after the world has caught up with `now`.
    pub fn operation_on(&mut self, app: &str, now: Millis) -> Option<String> {
        self.tick(now);
        let mut parts = app.split('/');
        let id = AppId::new(parts.next()?, parts.next()?, parts.next()?);
        self.apps.get(&id)?.lock.clone()
    }

    /// The app, as GET returns it.
    pub fn get_app(&self, id: &AppId) -> Result<Value, ArmError> {
        self.apps
            .get(id)
            .map(|r| r.app.clone())
            .ok_or_else(|| not_found_app(id))
    }

    /// Apps of a subscription (and resource group), in a stable order.
    pub fn list_apps(&self, subscription: &str, resource_group: Option<&str>) -> Vec<Value> {
        self.apps
            .iter()
            .filter(|(id, _)| id.subscription == subscription.to_lowercase())
            .filter(|(id, _)| {
                resource_group.is_none_or(|rg| id.resource_group == rg.to_lowercase())
            })
            .map(|(_, r)| r.app.clone())
            .collect()
    }

    fn writable(&self, id: &AppId) -> Result<&AppRecord, ArmError> {
        let rec = self.apps.get(id).ok_or_else(|| not_found_app(id))?;
        if rec.lock.is_some() {
            return Err(ArmError::new(
                409,
                "ContainerAppOperationInProgress",
                format!(
                    "Cannot modify container app '{}' because another operation is in progress. Please retry the operation after the in-progress operation completes.",
                    rec.app["name"].as_str().unwrap_or_default()
                ),
            ));
        }
        Ok(rec)
    }

    /// PATCH (JSON merge patch, N§4.1) or PUT (replace) of an app. PUT creates the app if it
    /// does not exist.
    pub fn write_app(
        &mut self,
        id: &AppId,
        body: &Value,
        replace: bool,
        now: Millis,
    ) -> Result<WriteResult, ArmError> {
        self.tick(now);
        let Value::Object(_) = body else {
            return Err(ArmError::bad_request(
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: expected a JSON object.",
            ));
        };
        let exists = self.apps.contains_key(id);
        if !exists && !replace {
            return Err(not_found_app(id));
        }
        if exists {
            self.writable(id)?;
        }
        let mut patch = body.clone();
        strip_read_only(&mut patch);
        let new_secret_values = take_secret_values(&mut patch)?;

        let (before, mut app) = match self.apps.get(id) {
            Some(rec) => {
                let before = rec.app.clone();
                let app = if replace {
                    let mut fresh = patch.clone();
                    for key in ["id", "name", "type"] {
                        fresh[key] = before[key].clone();
                    }
                    carry_read_only(&before, &mut fresh);
                    fresh
                } else {
                    let mut merged = before.clone();
                    merge_patch(&mut merged, &patch);
                    merged
                };
                (Some(before), app)
            }
            None => {
                let mut fresh = patch.clone();
                fresh["id"] = json!(format!(
                    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.App/containerApps/{}",
                    id.subscription, id.resource_group, id.name
                ));
                fresh["name"] = json!(id.name);
                fresh["type"] = json!("Microsoft.App/containerApps");
                if fresh.get("location").is_none() {
                    return Err(ArmError::bad_request(
                        "LocationRequired",
                        "The location property is required for this definition.",
                    ));
                }
                let salt = self.next_id();
                fill_created_read_only(&mut fresh, id, salt);
                (None, fresh)
            }
        };
        normalize(&mut app)?;
        let rec_revisions: Vec<Revision> = self
            .apps
            .get(id)
            .map(|r| r.revisions.clone())
            .unwrap_or_default();
        let old_template = before
            .as_ref()
            .and_then(|b| b.pointer("/properties/template").cloned());
        let new_template = app
            .pointer("/properties/template")
            .cloned()
            .unwrap_or(Value::Null);
        let template_changed = old_template.as_ref() != Some(&new_template);

        // A write on a template change mints a revision (N§4.2).
        let mut new_revision = None;
        if template_changed {
            let old_suffix = old_template
                .as_ref()
                .and_then(|t| t.get("revisionSuffix"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let asked = new_template
                .get("revisionSuffix")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            let suffix = match asked {
                // Omitted, or the stored one unchanged: Azure generates one [unverified, N§10.2].
                Some(s) if Some(&s) != old_suffix.as_ref() || before.is_none() => s,
                _ => self.generated_suffix(),
            };
            let name = format!("{}--{suffix}", id.name);
            check_revision_name(&id.name, &suffix)?;
            if rec_revisions
                .iter()
                .any(|r| r.name.eq_ignore_ascii_case(&name))
            {
                return Err(ArmError::invalid_field(
                    "template.revisionsuffix",
                    "Invalid value:  revision with suffix already exists",
                ));
            }
            new_revision = Some(name);
        }
        // Traffic may name the revision this very write creates (blue-green in one request).
        validate_app(&app, &rec_revisions, new_revision.as_deref())?;

        // All checks passed: from here on the write happens.
        let rec = self.apps.entry(id.clone()).or_insert_with(|| AppRecord {
            subscription: id.subscription.clone(),
            resource_group: id.resource_group.clone(),
            app: Value::Null,
            revisions: Vec::new(),
            secret_values: BTreeMap::new(),
            lock: None,
            fail_next_revisions: 0,
            fail_next_operations: 0,
            traffic: Traffic::default(),
        });
        rec.secret_values.extend(new_secret_values);
        let asynchronous = self.config.lro_mode != LroMode::Sync && self.config.lro_ms > 0;
        let operation_fails = asynchronous && rec.fail_next_operations > 0;
        if let Some(name) = &new_revision {
            // The revision of a write whose operation fails never becomes ready: were it to, in
            // Single mode it would deactivate the serving revision just before the rollback
            // removed it, leaving no revision to serve (found by the chaos soak).
            let injected = !operation_fails && rec.fail_next_revisions > 0;
            if injected {
                rec.fail_next_revisions -= 1;
            }
            let fails =
                images_missing(&new_template, &self.registries) || injected || operation_fails;
            rec.revisions.push(Revision {
                name: name.clone(),
                created: now,
                last_active: now,
                active: true,
                template: new_template.clone(),
                provisioning_state: "Provisioning".into(),
                running_state: "Processing".into(),
                health_state: "None".into(),
                ready_at: Some(now + self.config.revision_ready_ms as i64),
                fails,
                restarts: 0,
                replicas_since: None,
            });
            set_path(&mut app, &["properties", "latestRevisionName"], json!(name));
            let fqdn_base = app
                .pointer("/properties/configuration/ingress/fqdn")
                .and_then(Value::as_str)
                .map(|f| f.split_once('.').map_or(f, |(_, rest)| rest).to_owned());
            if let Some(base) = fqdn_base {
                set_path(
                    &mut app,
                    &["properties", "latestRevisionFqdn"],
                    json!(format!("{name}.{base}")),
                );
            }
        }
        let state = if asynchronous {
            "InProgress"
        } else {
            "Succeeded"
        };
        set_path(&mut app, &["properties", "provisioningState"], json!(state));
        set_path(&mut app, &["properties", "runningStatus"], json!("Running"));
        touch_system_data(&mut app, now, before.is_none());
        rec.app = app.clone();

        let operation = if asynchronous {
            let op_id = self.new_guid();
            let done_at = now + self.config.lro_ms as i64;
            let mut op = Operation {
                app: id.clone(),
                started: now,
                done_at,
                fails_with: None,
                rollback: None,
                created_revision: None,
                finished: false,
            };
            if let Some(rec) = self.apps.get_mut(id) {
                rec.lock = Some(op_id.clone());
                if operation_fails {
                    rec.fail_next_operations -= 1;
                    op.fails_with = Some("The operation failed: an internal error occurred while updating the container app.".to_owned());
                    op.rollback = before.clone().map(|mut b| {
                        set_path(
                            &mut b,
                            &["properties", "provisioningState"],
                            json!("Failed"),
                        );
                        b
                    });
                    op.created_revision = new_revision.clone();
                }
            }
            self.operations.insert(op_id.clone(), op);
            Some(op_id)
        } else {
            None
        };
        self.subscriptions
            .entry(id.subscription.clone())
            .or_insert_with(|| Subscription {
                display_name: format!(
                    "Simulated {}",
                    &id.subscription[..8.min(id.subscription.len())]
                ),
            });
        self.tick(now);
        self.log_gauges(id, now);
        let app = self.apps.get(id).map(|r| r.app.clone()).unwrap_or(app);
        Ok(WriteResult {
            app,
            operation,
            created: before.is_none(),
        })
    }

    /// Revisions of an app, oldest first, as ARM returns them.
    pub fn list_revisions(&self, id: &AppId) -> Result<Vec<Value>, ArmError> {
        let rec = self.apps.get(id).ok_or_else(|| not_found_app(id))?;
        let weights = effective_weights(rec);
        Ok(rec
            .revisions
            .iter()
            .map(|r| revision_json(rec, r, &weights))
            .collect())
    }

    /// One revision.
    pub fn get_revision(&self, id: &AppId, revision: &str) -> Result<Value, ArmError> {
        let rec = self.apps.get(id).ok_or_else(|| not_found_app(id))?;
        let r = find_revision(rec, revision)?;
        Ok(revision_json(rec, r, &effective_weights(rec)))
    }

    /// Replicas of a revision (not paged, N§1.1).
    pub fn list_replicas(&self, id: &AppId, revision: &str) -> Result<Vec<Value>, ArmError> {
        let rec = self.apps.get(id).ok_or_else(|| not_found_app(id))?;
        let r = find_revision(rec, revision)?;
        Ok((0..replica_count(rec, r))
            .map(|i| replica_json(rec, r, i))
            .collect())
    }

    /// activate / deactivate / restart. Azure does not protect traffic here (N§4.3, ACA#1345):
    /// neither does the simulator; it records the outage instead.
    pub fn revision_action(
        &mut self,
        id: &AppId,
        revision: &str,
        action: &str,
        now: Millis,
    ) -> Result<(), ArmError> {
        self.tick(now);
        self.writable(id)?;
        let ready_ms = self.config.revision_ready_ms as i64;
        let registries = &self.registries;
        let rec = self.apps.get_mut(id).ok_or_else(|| not_found_app(id))?;
        let app_name = rec.app["name"].as_str().unwrap_or_default().to_owned();
        let idx = rec
            .revisions
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(revision))
            .ok_or_else(|| not_found_revision(&app_name, revision))?;
        let r = &mut rec.revisions[idx];
        match action {
            "activate" => {
                if !r.active {
                    r.active = true;
                    r.last_active = now;
                    r.provisioning_state = "Provisioning".into();
                    r.running_state = "Processing".into();
                    r.ready_at = Some(now + ready_ms);
                    r.fails = r.fails || images_missing(&r.template, registries);
                }
            }
            "deactivate" => {
                if r.active {
                    r.active = false;
                    r.running_state = "Stopped".into();
                    r.ready_at = None;
                    r.last_active = now;
                }
            }
            "restart" => {
                // Restarting an inactive revision fails [assumption: the portal offers restart
                // only for active revisions].
                if !r.active {
                    return Err(ArmError::bad_request(
                        "ContainerAppRevisionNotActive",
                        format!(
                            "Revision '{}' is not active and cannot be restarted.",
                            r.name
                        ),
                    ));
                }
                r.restarts += 1;
                r.replicas_since = Some(now);
                let name = r.name.clone();
                self.restarts.push(Restart {
                    at: time::format_arm(now),
                    app: app_name,
                    revision: name,
                });
            }
            _ => {
                return Err(ArmError::new(
                    404,
                    "NotFound",
                    format!("No action '{action}' on revisions."),
                ));
            }
        }
        self.tick(now);
        self.log_gauges(id, now);
        Ok(())
    }

    /// The secrets of an app (`listSecrets`).
    pub fn list_secrets(&self, id: &AppId) -> Result<Vec<Value>, ArmError> {
        let rec = self.apps.get(id).ok_or_else(|| not_found_app(id))?;
        let names = rec
            .app
            .pointer("/properties/configuration/secrets")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(names
            .iter()
            .filter_map(|s| s.get("name").and_then(Value::as_str))
            .map(|n| json!({"name": n, "value": rec.secret_values.get(n).cloned().unwrap_or_default()}))
            .collect())
    }

    /// The state of an operation: `(status, app id)`.
    pub fn operation(&mut self, op_id: &str, now: Millis) -> Option<(String, Operation)> {
        self.tick(now);
        let op = self.operations.get(op_id)?.clone();
        let status = match (&op.fails_with, op.finished) {
            (_, false) => "InProgress",
            (Some(_), true) => "Failed",
            (None, true) => "Succeeded",
        };
        Some((status.to_owned(), op))
    }
}

// ---- JSON helpers ---------------------------------------------------------------------------

/// RFC 7396: objects merge, anything else replaces, null deletes.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Sets `path` in `value`, creating objects on the way.
pub fn set_path(value: &mut Value, path: &[&str], new: Value) {
    let mut cur = value;
    for key in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m.entry((*key).to_owned()).or_insert(Value::Null);
    }
    *cur = new;
}

const READ_ONLY: &[&str] = &[
    "/properties/provisioningState",
    "/properties/runningStatus",
    "/properties/latestRevisionName",
    "/properties/latestReadyRevisionName",
    "/properties/latestRevisionFqdn",
    "/properties/customDomainVerificationId",
    "/properties/outboundIpAddresses",
    "/properties/eventStreamEndpoint",
    "/properties/configuration/ingress/fqdn",
];

/// ARM ignores read-only properties in a request body.
fn strip_read_only(patch: &mut Value) {
    if let Value::Object(m) = patch {
        for key in ["id", "name", "type", "systemData"] {
            m.remove(key);
        }
    }
    for pointer in READ_ONLY {
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        if let Some(Value::Object(m)) = patch.pointer_mut(parent) {
            m.remove(key);
        }
    }
}

fn carry_read_only(before: &Value, after: &mut Value) {
    for pointer in READ_ONLY {
        if let Some(v) = before.pointer(pointer) {
            let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
            set_path(after, &parts, v.clone());
        }
    }
    if let Some(sd) = before.get("systemData") {
        after["systemData"] = sd.clone();
    }
}

/// Secrets must carry a value or a Key Vault reference; values are kept aside (N§4.1).
fn take_secret_values(patch: &mut Value) -> Result<BTreeMap<String, String>, ArmError> {
    let mut values = BTreeMap::new();
    let Some(Value::Array(secrets)) = patch.pointer_mut("/properties/configuration/secrets") else {
        return Ok(values);
    };
    for s in secrets.iter_mut() {
        let name = s
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let has_kv = s.get("keyVaultUrl").is_some_and(|v| v.is_string())
            && s.get("identity").is_some_and(|v| v.is_string());
        match s.get("value").and_then(Value::as_str) {
            Some(v) => {
                values.insert(name, v.to_owned());
            }
            None if has_kv => {}
            None => {
                return Err(ArmError::bad_request(
                    "ContainerAppSecretInvalid",
                    format!(
                        "Secret '{name}' is invalid: value or keyVaultUrl and identity should be provided."
                    ),
                ));
            }
        }
        if let Value::Object(m) = s {
            m.remove("value");
        }
    }
    Ok(values)
}

fn coerce_int(v: &mut Value, field: &str) -> Result<(), ArmError> {
    let n = match &*v {
        Value::Number(n) if n.is_i64() || n.is_u64() => return Ok(()),
        Value::Number(n) => n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        Value::Null => return Ok(()),
        _ => None,
    };
    match n {
        Some(n) => {
            *v = json!(n);
            Ok(())
        }
        None => Err(ArmError::invalid_field(
            field,
            format!("Invalid value: {v}: expected an integer"),
        )),
    }
}

fn coerce_bool(v: &mut Value, field: &str) -> Result<(), ArmError> {
    let b = match &*v {
        Value::Bool(_) | Value::Null => return Ok(()),
        Value::String(s) if s.eq_ignore_ascii_case("true") => true,
        Value::String(s) if s.eq_ignore_ascii_case("false") => false,
        _ => {
            return Err(ArmError::invalid_field(
                field,
                format!("Invalid value: {v}: expected a boolean"),
            ));
        }
    };
    *v = json!(b);
    Ok(())
}

/// Stored values keep ARM's types whatever a client sent (`"80"` -> 80), and the defaults ARM
/// fills in are there (spec CA/CD `default`s: Single mode, transport auto, 10 max replicas;
/// 0.5 CPU / 1Gi per container as the portal and the az CLI create them).
fn normalize(app: &mut Value) -> Result<(), ArmError> {
    if app
        .pointer("/properties/configuration/activeRevisionsMode")
        .is_none()
    {
        set_path(
            app,
            &["properties", "configuration", "activeRevisionsMode"],
            json!("Single"),
        );
    }
    if let Some(Value::Object(ingress)) = app.pointer_mut("/properties/configuration/ingress") {
        ingress.entry("transport").or_insert(json!("auto"));
        ingress.entry("allowInsecure").or_insert(json!(false));
        ingress.entry("external").or_insert(json!(false));
    }
    if let Some(Value::Array(containers)) = app.pointer_mut("/properties/template/containers") {
        for c in containers.iter_mut().filter(|c| c.is_object()) {
            if c.get("resources").is_none() {
                c["resources"] = json!({"cpu": 0.5, "memory": "1Gi"});
            }
        }
    }
    if let Some(Value::Object(scale)) = app.pointer_mut("/properties/template/scale") {
        scale.entry("maxReplicas").or_insert(json!(10));
    }
    if let Some(Value::Array(traffic)) =
        app.pointer_mut("/properties/configuration/ingress/traffic")
    {
        for t in traffic.iter_mut() {
            if let Some(w) = t.get_mut("weight") {
                coerce_int(w, "configuration.ingress.traffic.weight")?;
            }
            if let Some(l) = t.get_mut("latestRevision") {
                coerce_bool(l, "configuration.ingress.traffic.latestRevision")?;
            }
        }
    }
    for (pointer, field) in [
        (
            "/properties/template/scale/minReplicas",
            "template.scale.minReplicas",
        ),
        (
            "/properties/template/scale/maxReplicas",
            "template.scale.maxReplicas",
        ),
        (
            "/properties/configuration/ingress/targetPort",
            "configuration.ingress.targetPort",
        ),
        (
            "/properties/configuration/maxInactiveRevisions",
            "configuration.maxInactiveRevisions",
        ),
    ] {
        if let Some(v) = app.pointer_mut(pointer) {
            coerce_int(v, field)?;
        }
    }
    if let Some(Value::String(mode)) =
        app.pointer_mut("/properties/configuration/activeRevisionsMode")
    {
        // Compared case-insensitively, stored in the spec's casing (N§2).
        let canonical = if mode.eq_ignore_ascii_case("multiple") {
            "Multiple"
        } else if mode.eq_ignore_ascii_case("single") {
            "Single"
        } else {
            return Err(ArmError::invalid_field(
                "configuration.activeRevisionsMode",
                format!("Invalid value: {mode}: expected Single or Multiple"),
            ));
        };
        *mode = canonical.to_owned();
    }
    Ok(())
}

fn validate_app(
    app: &Value,
    revisions: &[Revision],
    creating: Option<&str>,
) -> Result<(), ArmError> {
    let scale = app.pointer("/properties/template/scale");
    let min = scale
        .and_then(|s| s.get("minReplicas"))
        .and_then(Value::as_i64);
    let max = scale
        .and_then(|s| s.get("maxReplicas"))
        .and_then(Value::as_i64);
    if let Some(min) = min
        && !(0..=1000).contains(&min)
    {
        return Err(ArmError::invalid_field(
            "template.scale.minReplicas",
            format!("Invalid value: {min}: must be between 0 and 1000"),
        ));
    }
    if let Some(max) = max
        && !(1..=1000).contains(&max)
    {
        return Err(ArmError::invalid_field(
            "template.scale.maxReplicas",
            format!("Invalid value: {max}: must be between 1 and 1000"),
        ));
    }
    if let (Some(min), Some(max)) = (min, max.or(Some(10)))
        && min > max
    {
        return Err(ArmError::invalid_field(
            "template.scale.minReplicas",
            format!(
                "Invalid value: {min}: minReplicas must be less than or equal to maxReplicas ({max})"
            ),
        ));
    }
    if let Some(Value::Array(containers)) = app.pointer("/properties/template/containers") {
        for c in containers {
            if c.get("image")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ArmError::invalid_field(
                    "template.containers.image",
                    "Invalid value: image is required",
                ));
            }
        }
    }
    let Some(traffic) = app
        .pointer("/properties/configuration/ingress/traffic")
        .and_then(Value::as_array)
    else {
        return Ok(());
    };
    if traffic.is_empty() {
        return Ok(());
    }
    let mut sum = 0i64;
    let mut latest = 0;
    for t in traffic {
        let w = t.get("weight").and_then(Value::as_i64).unwrap_or(0);
        if !(0..=100).contains(&w) {
            return Err(ArmError::bad_request(
                "ContainerAppInvalidTrafficWeight",
                format!("Traffic weight {w} is invalid: a weight must be between 0 and 100."),
            ));
        }
        sum += w;
        if t.get("latestRevision").and_then(Value::as_bool) == Some(true) {
            latest += 1;
            if t.get("revisionName")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                return Err(ArmError::bad_request(
                    "ContainerAppInvalidTrafficWeight",
                    "A traffic weight cannot set both revisionName and latestRevision.",
                ));
            }
        } else if let Some(name) = t.get("revisionName").and_then(Value::as_str) {
            let exists = revisions.iter().any(|r| r.name.eq_ignore_ascii_case(name))
                || creating.is_some_and(|c| c.eq_ignore_ascii_case(name));
            if !exists {
                return Err(ArmError::bad_request(
                    "ContainerAppRevisionNotFound",
                    format!("Revision '{name}' in the traffic weights does not exist."),
                ));
            }
        } else {
            return Err(ArmError::bad_request(
                "ContainerAppInvalidTrafficWeight",
                "Each traffic weight must name a revisionName or set latestRevision.",
            ));
        }
    }
    if latest > 1 {
        return Err(ArmError::bad_request(
            "ContainerAppInvalidTrafficWeight",
            "Only one traffic weight may set latestRevision.",
        ));
    }
    // "The combined weight of all traffic split rules must equal 100%" (N§4.3).
    if sum != 100 {
        return Err(ArmError::bad_request(
            "ContainerAppInvalidTrafficWeight",
            format!("The sum of traffic weights is {sum}; it must be 100."),
        ));
    }
    // "Revision weights can not be used in this mode" (N§2, Single).
    if is_single_mode(app) && traffic.len() > 1 {
        return Err(ArmError::bad_request(
            "ContainerAppInvalidTrafficWeight",
            "Traffic weights can only be split in Multiple revisions mode.",
        ));
    }
    Ok(())
}

// Revision suffix rule and the 54-character limit (ContainerAppInvalidRevisionName, seen in
// Azure/azure-quickstart-templates#14660).
fn check_revision_name(app: &str, suffix: &str) -> Result<(), ArmError> {
    let ok = suffix.starts_with(|c: char| c.is_ascii_lowercase())
        && suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !suffix.ends_with('-')
        && !suffix.contains("--")
        && app.len() + 2 + suffix.len() <= 54;
    if ok {
        Ok(())
    } else {
        Err(ArmError::bad_request(
            "ContainerAppInvalidRevisionName",
            format!(
                "Revision name has an invalid value '{app}--{suffix}'. A revision name must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character. The length of the revision name must not be more than a combined 54 characters with the container app name."
            ),
        ))
    }
}

/// What ARM adds to an app it creates: identity ids, the environment id under its deprecated
/// name, endpoints and the ingress FQDN (the shape of the spec's Get example).
fn fill_created_read_only(app: &mut Value, id: &AppId, salt: u64) {
    let h = splitmix(salt ^ 0x1d);
    let guid = |x: u64| {
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (x >> 32) as u32,
            (x >> 16) & 0xffff,
            x & 0xfff,
            (x >> 52) & 0xfff,
            splitmix(x) & 0xffff_ffff_ffff
        )
    };
    if let Some(identity) = app.get_mut("identity").filter(|i| i.is_object()) {
        let kind = identity
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        if kind.contains("systemassigned") {
            identity["principalId"] = json!(guid(h));
            identity["tenantId"] = json!(TENANT_ID);
        }
        if let Some(Value::Object(users)) = identity.get_mut("userAssignedIdentities") {
            for (i, v) in users.values_mut().enumerate() {
                let x = splitmix(h ^ i as u64);
                *v = json!({"clientId": guid(x), "principalId": guid(splitmix(x))});
            }
        }
    }
    let location = app
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("eastus")
        .to_ascii_lowercase()
        .replace(' ', "");
    let env = app
        .pointer("/properties/environmentId")
        .or_else(|| app.pointer("/properties/managedEnvironmentId"))
        .cloned();
    let env_name = env
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|e| e.rsplit('/').next())
        .unwrap_or("env")
        .to_ascii_lowercase();
    let domain = format!(
        "{env_name}-{:08x}.{location}.azurecontainerapps.io",
        h as u32
    );
    let props = &mut app["properties"];
    if let Some(env) = env {
        props["managedEnvironmentId"] = env.clone();
        props["environmentId"] = env;
    }
    props["outboundIpAddresses"] = json!(["20.1.2.3", "20.1.2.4"]);
    props["customDomainVerificationId"] =
        json!(format!("{:016X}{:016X}", splitmix(h ^ 2), splitmix(h ^ 3)));
    props["eventStreamEndpoint"] = json!(format!(
        "https://{location}.azurecontainerapps.dev/subscriptions/{}/resourceGroups/{}/containerApps/{}/eventstream",
        id.subscription, id.resource_group, id.name
    ));
    if let Some(ingress) = props
        .pointer_mut("/configuration/ingress")
        .filter(|i| i.is_object())
    {
        ingress["fqdn"] = json!(format!("{}.{domain}", id.name));
    }
}

fn touch_system_data(app: &mut Value, now: Millis, created: bool) {
    let stamp = time::format_arm(now);
    if created || app.get("systemData").is_none() {
        app["systemData"] =
            json!({"createdBy": "simulator", "createdByType": "Application", "createdAt": stamp});
    }
    app["systemData"]["lastModifiedBy"] = json!("simulator");
    app["systemData"]["lastModifiedByType"] = json!("Application");
    app["systemData"]["lastModifiedAt"] = json!(stamp);
}

fn not_found_app(id: &AppId) -> ArmError {
    ArmError::new(
        404,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.App/containerApps/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            id.name, id.resource_group
        ),
    )
}

fn not_found_revision(app: &str, revision: &str) -> ArmError {
    ArmError::new(
        404,
        "ContainerAppRevisionNotFound",
        format!("Revision '{revision}' of container app '{app}' was not found."),
    )
}

fn find_revision<'a>(rec: &'a AppRecord, revision: &str) -> Result<&'a Revision, ArmError> {
    rec.revisions
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(revision))
        .ok_or_else(|| not_found_revision(rec.app["name"].as_str().unwrap_or_default(), revision))
}

fn latest_revision_name(app: &Value) -> Option<String> {
    app.pointer("/properties/latestRevisionName")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn is_single_mode(app: &Value) -> bool {
    // activeRevisionsMode defaults to Single (N§2).
    app.pointer("/properties/configuration/activeRevisionsMode")
        .and_then(Value::as_str)
        .is_none_or(|m| m.eq_ignore_ascii_case("single"))
}

fn has_ingress(app: &Value) -> bool {
    app.pointer("/properties/configuration/ingress")
        .is_some_and(Value::is_object)
}

/// The target of `latestRevision` while no revision is ready.
const NO_READY_REVISION: &str = "(no ready revision)";

/// Which revision gets how much traffic, with `latestRevision` resolved to the latest ready
/// revision (N§4.3). With no traffic list (no ingress), every running revision counts as
/// serving: weights are then reported as 0.
fn effective_weights(rec: &AppRecord) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    if is_single_mode(&rec.app) {
        // "Revision weights can not be used in this mode" (N§2): the latest ready revision
        // takes all traffic, whatever the configuration says.
        let ready = rec
            .app
            .pointer("/properties/latestReadyRevisionName")
            .and_then(Value::as_str);
        if let (true, Some(ready)) = (has_ingress(&rec.app), ready) {
            out.insert(ready.to_owned(), 100);
        }
        return out;
    }
    let traffic = rec
        .app
        .pointer("/properties/configuration/ingress/traffic")
        .and_then(Value::as_array);
    let latest_ready = rec
        .app
        .pointer("/properties/latestReadyRevisionName")
        .and_then(Value::as_str);
    for t in traffic.into_iter().flatten() {
        let w = t.get("weight").and_then(Value::as_i64).unwrap_or(0);
        let target = if t.get("latestRevision").and_then(Value::as_bool) == Some(true) {
            latest_ready
                .map(str::to_owned)
                .unwrap_or_else(|| NO_READY_REVISION.to_owned())
        } else {
            match t.get("revisionName").and_then(Value::as_str) {
                Some(n) => n.to_owned(),
                None => continue,
            }
        };
        *out.entry(target).or_insert(0) += w;
    }
    out
}

/// Where the app's requests go now: the effective split, in a fixed order, each target with
/// how it answers (`None`: not running). An app without ingress gets no requests.
fn routing_of(rec: &AppRecord, behaviours: &Behaviours) -> Routing {
    if !has_ingress(&rec.app) {
        return Routing::default();
    }
    let latest = latest_revision_name(&rec.app);
    let targets = effective_weights(rec)
        .into_iter()
        .filter(|(_, w)| *w > 0)
        .filter_map(|(name, weight)| {
            // `latestRevision` with no ready revision: its requests fail at the latest one
            // [assumption: ACA answers 503 until a revision is ready; the docs do not say].
            let name = if name == NO_READY_REVISION {
                latest.clone()?
            } else {
                name
            };
            let revision = rec
                .revisions
                .iter()
                .find(|r| r.name.eq_ignore_ascii_case(&name));
            Some(Target {
                revision: revision.map_or(name, |r| r.name.clone()),
                weight: u64::try_from(weight).unwrap_or(0),
                serving: revision
                    .filter(|r| r.is_running())
                    .map(|r| behaviours.resolve(&r.name, &r.template)),
            })
        })
        .collect();
    Routing { targets }
}

/// The running revisions' replicas and restarts.
fn gauges_of(rec: &AppRecord) -> BTreeMap<String, Gauge> {
    rec.revisions
        .iter()
        .filter(|r| r.is_running())
        .map(|r| {
            (
                r.name.clone(),
                Gauge {
                    replicas: replica_count(rec, r),
                    restarts: r.restarts,
                },
            )
        })
        .collect()
}

/// What a host names: the app (its requests split by the traffic rules), one revision, or the
/// revision a label is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTarget {
    /// `<app>.<domain>`.
    App,
    /// `<revision>.<domain>` (`properties.fqdn`, `latestRevisionFqdn`).
    Revision(String),
    /// `<app>---<label>.<domain>`.
    Label(String),
}

/// An HTTP request answered through ingress.
#[derive(Debug, Clone)]
pub struct IngressAnswer {
    /// The app's name.
    pub app: String,
    /// What the host named.
    pub host: HostTarget,
    /// The first container's image of the revision that answered.
    pub image: Option<String>,
    /// Status, revision, latency.
    pub answer: Answer,
}

/// `(app name, environment default domain)` from the app's ingress FQDN `<app>.<domain>`.
fn app_domain(app: &Value) -> Option<(&str, &str)> {
    app.pointer("/properties/configuration/ingress/fqdn")
        .and_then(Value::as_str)
        .and_then(|f| f.split_once('.'))
}

/// The app and target a host (lower case, no port) names, as Container Apps forms the URLs:
/// `<app>.<domain>`, `<revision>.<domain>`, `<app>---<label>.<domain>` [doc:
/// learn.microsoft.com container-apps/revisions "Labels" and blue-green-deployment].
fn find_host(world: &World, host: &str) -> Option<(AppId, HostTarget)> {
    let host = host.to_ascii_lowercase();
    for (id, rec) in &world.apps {
        let Some((app, domain)) = app_domain(&rec.app) else {
            continue;
        };
        let Some(prefix) = host
            .strip_suffix(&domain.to_ascii_lowercase())
            .and_then(|p| p.strip_suffix('.'))
        else {
            continue;
        };
        if prefix.eq_ignore_ascii_case(app) {
            return Some((id.clone(), HostTarget::App));
        }
        if let Some(label) = prefix.strip_prefix(&format!("{}---", app.to_ascii_lowercase())) {
            return Some((id.clone(), HostTarget::Label(label.to_owned())));
        }
        if let Some(r) = rec
            .revisions
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(prefix))
        {
            return Some((id.clone(), HostTarget::Revision(r.name.clone())));
        }
    }
    None
}

/// Whether some app answers at `host`.
pub fn is_app_host(world: &World, host: &str) -> bool {
    find_host(world, host).is_some()
}

/// The revision a traffic label is on (`latestRevision` resolved to the latest ready one).
fn label_revision(rec: &AppRecord, label: &str) -> Option<String> {
    let traffic = rec
        .app
        .pointer("/properties/configuration/ingress/traffic")
        .and_then(Value::as_array)?;
    let entry = traffic.iter().find(|t| {
        t.get("label")
            .and_then(Value::as_str)
            .is_some_and(|l| l.eq_ignore_ascii_case(label))
    })?;
    if entry.get("latestRevision").and_then(Value::as_bool) == Some(true) {
        return rec
            .app
            .pointer("/properties/latestReadyRevisionName")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    entry
        .get("revisionName")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn images_missing(template: &Value, registries: &BTreeMap<String, Registry>) -> bool {
    let containers = template
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    containers
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .any(|image| image_missing(image, registries))
}

/// An image is missing when its registry is simulated and lacks the tag or digest. Images of
/// registries the simulator does not hold (mcr.microsoft.com, ...) are assumed to exist.
fn image_missing(image: &str, registries: &BTreeMap<String, Registry>) -> bool {
    let Some((host, rest)) = image.split_once('/') else {
        return false;
    };
    let Some(registry) = registries.get(&host.to_lowercase()) else {
        return false;
    };
    let (repo, reference) = match rest.split_once('@') {
        Some((repo, digest)) => (repo, Err(digest)),
        None => match rest.rsplit_once(':') {
            Some((repo, tag)) => (repo, Ok(tag)),
            None => (rest, Ok("latest")),
        },
    };
    let Some(r) = registry.repositories.get(repo) else {
        return true;
    };
    match reference {
        Ok(tag) => !r.tags.iter().any(|t| t.name == tag),
        Err(digest) => !r.manifests.contains(digest),
    }
}

fn replica_count(rec: &AppRecord, r: &Revision) -> u64 {
    if !r.is_running() {
        return 0;
    }
    r.template
        .pointer("/scale/minReplicas")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .max(1)
        .min(
            rec.app
                .pointer("/properties/template/scale/maxReplicas")
                .and_then(Value::as_u64)
                .unwrap_or(10)
                .max(1),
        )
}

fn revision_json(rec: &AppRecord, r: &Revision, weights: &BTreeMap<String, i64>) -> Value {
    let app_id = rec.app["id"].as_str().unwrap_or_default();
    let fqdn_base = rec
        .app
        .pointer("/properties/configuration/ingress/fqdn")
        .and_then(Value::as_str)
        .and_then(|f| f.split_once('.'))
        .map(|(_, b)| b.to_owned());
    let mut props = json!({
        "createdTime": time::format_arm(r.created),
        "lastActiveTime": time::format_arm(r.last_active),
        "template": r.template,
        "active": r.active,
        "replicas": replica_count(rec, r),
        "trafficWeight": weights.get(&r.name).copied().unwrap_or(0),
        "healthState": r.health_state,
        "provisioningState": r.provisioning_state,
        "runningState": r.running_state,
    });
    if let Some(base) = fqdn_base {
        props["fqdn"] = json!(format!("{}.{base}", r.name));
    }
    if r.fails && r.running_state == "Failed" {
        props["provisioningError"] = json!(
            "Container failed to start: ImagePullBackOff: the image could not be pulled from the registry."
        );
    }
    json!({
        "id": format!("{app_id}/revisions/{}", r.name),
        "name": r.name,
        "type": "Microsoft.App/containerApps/revisions",
        "properties": props,
    })
}

fn replica_json(rec: &AppRecord, r: &Revision, i: u64) -> Value {
    let app_id = rec.app["id"].as_str().unwrap_or_default();
    let h = splitmix(r.created as u64 ^ i ^ (u64::from(r.restarts) << 32));
    let name = format!(
        "{}-{:09x}-{:05x}",
        r.name,
        h & 0xf_ffff_ffff,
        (h >> 40) & 0xfffff
    );
    let containers: Vec<Value> = r
        .template
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c.get("name").cloned().unwrap_or(Value::Null),
                "containerId": format!("containerd://{:016x}{:016x}", splitmix(h), splitmix(h ^ 1)),
                "ready": true, "started": true, "restartCount": r.restarts,
                "runningState": "Running", "runningStateDetails": "",
                "logStreamEndpoint": format!("https://uksouth.azurecontainerapps.dev/logstream/{}", r.name),
                "execEndpoint": format!("wss://uksouth.azurecontainerapps.dev/exec/{}", r.name),
            })
        })
        .collect();
    json!({
        "id": format!("{app_id}/revisions/{}/replicas/{name}", r.name),
        "name": name,
        "type": "Microsoft.App/containerApps/revisions/replicas",
        "properties": {
            "createdTime": time::format_arm(r.replicas_since.map_or(r.last_active, |t| t.max(r.last_active))),
            "runningState": "Running",
            "runningStateDetails": "",
            "containers": containers,
            "initContainers": [],
        }
    })
}

pub use crate::hash::splitmix;

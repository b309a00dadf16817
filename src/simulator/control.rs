//! `/_sim/`: the simulator's own control plane. Not an Azure API.
//!
//! | route | does |
//! | --- | --- |
//! | `GET /_sim/state`, `PUT /_sim/state`, `POST /_sim/reset` | dump, replace, empty the world |
//! | `POST /_sim/seed` | replace the world with drifted copies of a desired-state YAML body |
//! | `GET /_sim/config`, `PATCH /_sim/config` | read, change tunables (merge patch) |
//! | `GET /_sim/requests`, `DELETE /_sim/requests` | request counts by operation; reset |
//! | `GET /_sim/outages`, `GET /_sim/restarts` | what tests assert never / exactly happens |
//! | `GET /_sim/audit`, `DELETE /_sim/audit` | every ARM write (client, app, body fields), requests before `Retry-After` |
//! | `GET/POST/DELETE /_sim/faults` | fault rules on HTTP requests |
//! | `POST /_sim/inject`, `DELETE /_sim/inject` | app-level faults: revisions that fail, operations that fail; clear them |
//! | `POST /_sim/token?audience=...` | an ARM token without the identity dance (for curl) |
//! | `GET /_sim/traffic`, `POST /_sim/traffic` | each app's request rate and what it served; set an app's rate |
//! | `GET/POST/DELETE /_sim/behaviours` | how revisions answer, by image or by revision name |

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::store::{AppId, ArmError, Config, Throttling, World, merge_patch, splitmix};
use super::{Sim, json_response};
use crate::time::Millis;

/// What a fault rule does to a matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Fault {
    /// 429 with `Retry-After`.
    #[serde(rename_all = "camelCase")]
    Throttle {
        /// Seconds.
        #[serde(default = "one")]
        retry_after: u64,
    },
    /// Any status, with ARM's error envelope.
    #[serde(rename_all = "camelCase")]
    Status {
        /// HTTP status (500, 503, 403, ...).
        status: u16,
        /// ARM error code.
        #[serde(default)]
        code: Option<String>,
    },
    /// 409 `ContainerAppOperationInProgress`, as while another write runs.
    LockConflict,
    /// The connection breaks after the headers: the body never arrives. The request is not
    /// processed.
    Drop,
    /// The request is processed (a write lands and starts its operation), then the connection
    /// breaks after the headers: the client never learns the outcome.
    LostAnswer,
    /// Answer late.
    Latency {
        /// Milliseconds.
        ms: u64,
    },
}

fn one() -> u64 {
    1
}

/// A fault rule: which requests, what fault, how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// Assigned by the simulator.
    #[serde(default)]
    pub id: u64,
    /// Operation name (`ContainerApps_Update`, `ACR_GetTags`, ...); `*` or absent: any.
    #[serde(default)]
    pub operation: Option<String>,
    /// HTTP method; absent: any.
    #[serde(default)]
    pub method: Option<String>,
    /// Path glob (`*` within a segment, `**` across segments), compared case-insensitively.
    #[serde(default)]
    pub path: Option<String>,
    /// The fault.
    pub fault: Fault,
    /// Apply to the next N matching requests only; absent: every one.
    #[serde(default)]
    pub count: Option<u32>,
    /// Apply to this fraction of matching requests (0..=1); absent: all.
    #[serde(default)]
    pub probability: Option<f64>,
    /// How many times it has fired.
    #[serde(default)]
    pub hits: u32,
}

/// Glob match: `*` is any run within a segment, `**` any run at all.
pub fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p {
            [] => t.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=t.len()).any(|i| go(rest, &t[i..])),
            [b'*', rest @ ..] => (0..=t.len())
                .take_while(|i| *i == 0 || t[i - 1] != b'/')
                .any(|i| go(rest, &t[i..])),
            [c, rest @ ..] => t.first().is_some_and(|x| x == c) && go(rest, &t[1..]),
        }
    }
    go(
        pattern.to_ascii_lowercase().as_bytes(),
        text.to_ascii_lowercase().as_bytes(),
    )
}

/// The fault rules in force.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
    next_id: u64,
    draws: u64,
}

/// What the matching rules ask of one request.
#[derive(Debug, Default)]
pub struct Applied {
    latency_ms: u64,
    terminal: Option<Fault>,
}

impl Applied {
    /// Whether the request is to be processed and its answer then lost.
    pub fn loses_answer(&self) -> bool {
        matches!(self.terminal, Some(Fault::LostAnswer))
    }

    /// Waits out any latency, then returns the fault response, if any.
    pub async fn apply(self) -> Option<Response> {
        if self.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.latency_ms)).await;
        }
        let fault = self.terminal?;
        Some(match fault {
            Fault::Throttle { retry_after } => {
                let mut r = super::arm::error_response(&ArmError::new(
                    429,
                    "TooManyRequests",
                    format!("Injected throttling: retry after {retry_after} s."),
                ));
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from(retry_after));
                r
            }
            Fault::Status { status, code } => super::arm::error_response(&ArmError::new(
                status,
                code.as_deref().unwrap_or(if status >= 500 {
                    "InternalServerError"
                } else {
                    "InjectedFault"
                }),
                format!("Injected fault: status {status}."),
            )),
            Fault::LockConflict => super::arm::error_response(&ArmError::new(
                409,
                "ContainerAppOperationInProgress",
                "Cannot modify container app because another operation is in progress. Please retry the operation after the in-progress operation completes.",
            )),
            Fault::Drop => broken(StatusCode::OK.into_response()),
            Fault::Latency { .. } | Fault::LostAnswer => return None,
        })
    }
}

/// `response` with its body replaced by a stream that fails: the client gets the headers, then
/// the connection breaks.
pub fn broken(response: Response) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let broken = futures_util::stream::iter([Err::<axum::body::Bytes, std::io::Error>(
        std::io::Error::other("connection dropped by fault injection"),
    )]);
    Response::from_parts(parts, Body::from_stream(broken))
}

impl Faults {
    /// Adds a rule, returning it with its id.
    pub fn add(&mut self, mut rule: FaultRule) -> FaultRule {
        self.next_id += 1;
        rule.id = self.next_id;
        rule.hits = 0;
        self.rules.push(rule.clone());
        rule
    }

    /// Consumes the rules that match a request.
    pub fn take(&mut self, method: &Method, path: &str, operation: &str) -> Option<Applied> {
        let mut applied = Applied::default();
        let mut any = false;
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            if rule.count == Some(0) {
                continue; // spent: kept for its hit count
            }
            let op_ok = rule
                .operation
                .as_deref()
                .is_none_or(|o| o == "*" || o.eq_ignore_ascii_case(operation));
            let method_ok = rule
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()));
            let path_ok = rule.path.as_deref().is_none_or(|p| glob(p, path));
            if !(op_ok && method_ok && path_ok) {
                continue;
            }
            if applied.terminal.is_some() && !matches!(rule.fault, Fault::Latency { .. }) {
                continue;
            }
            if let Some(p) = rule.probability {
                self.draws += 1;
                let draw = (splitmix(self.draws ^ 0xfa17) % 1_000_000) as f64 / 1_000_000.0;
                if draw >= p {
                    continue;
                }
            }
            let rule = &mut self.rules[i];
            rule.hits += 1;
            if let Some(c) = rule.count.as_mut() {
                *c = c.saturating_sub(1);
            }
            any = true;
            match &rule.fault {
                Fault::Latency { ms } => applied.latency_ms += ms,
                other => applied.terminal = Some(other.clone()),
            }
        }
        any.then_some(applied)
    }
}

/// Request counts.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    total: u64,
    arm_reads: u64,
    arm_writes: u64,
    by_operation: BTreeMap<String, u64>,
    /// Responses by HTTP status (`"429"`: throttled).
    by_status: BTreeMap<u16, u64>,
}

impl Counts {
    /// Counts one request.
    pub fn record(&mut self, operation: &str, method: &Method, arm: bool) {
        self.total += 1;
        if arm {
            if *method == Method::GET || *method == Method::HEAD {
                self.arm_reads += 1;
            } else {
                self.arm_writes += 1;
            }
        }
        *self.by_operation.entry(operation.to_owned()).or_insert(0) += 1;
    }

    /// Counts one response's status.
    pub fn record_status(&mut self, status: u16) {
        *self.by_status.entry(status).or_insert(0) += 1;
    }
}

/// ARM's token buckets per (subscription, reads|writes).
#[derive(Debug, Default)]
pub struct Buckets {
    buckets: HashMap<(String, bool), (f64, Millis)>,
}

impl Buckets {
    /// Takes a token: `Ok(remaining)` (None when throttling is off), or `Err(retry_after_s)`.
    pub fn take(
        &mut self,
        subscription: &str,
        write: bool,
        config: &Throttling,
        now: Millis,
    ) -> Result<Option<u64>, u64> {
        if !config.enabled {
            return Ok(None);
        }
        let (burst, rate) = if write {
            (config.write_burst, config.write_per_second)
        } else {
            (config.read_burst, config.read_per_second)
        };
        let entry = self
            .buckets
            .entry((subscription.to_lowercase(), write))
            .or_insert((burst, now));
        let elapsed = (now - entry.1).max(0) as f64 / 1000.0;
        entry.0 = (entry.0 + elapsed * rate).min(burst);
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            Ok(Some(entry.0.floor() as u64))
        } else {
            let wait = if rate > 0.0 {
                ((1.0 - entry.0) / rate).ceil() as u64
            } else {
                60
            };
            Err(wait.max(1))
        }
    }
}

/// The `/_sim/` router.
pub fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/state", get(get_state).put(put_state))
        .route("/reset", post(reset))
        .route("/seed", post(seed_yaml))
        .route("/config", get(get_config).patch(patch_config))
        .route("/requests", get(get_requests).delete(delete_requests))
        .route("/outages", get(get_outages))
        .route("/audit", get(get_audit).delete(delete_audit))
        .route("/restarts", get(get_restarts))
        .route(
            "/faults",
            get(get_faults).post(post_faults).delete(delete_faults),
        )
        .route("/inject", post(inject).delete(clear_injections))
        .route("/token", post(token))
        .route("/traffic", get(get_traffic).post(post_traffic))
        .route(
            "/behaviours",
            get(get_behaviours)
                .post(post_behaviour)
                .delete(delete_behaviours),
        )
        .route("/health", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(256 * 1024 * 1024))
}

fn bad(message: impl std::fmt::Display) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": {"code": "BadSimulatorRequest", "message": message.to_string()}}),
    )
}

async fn get_state(State(sim): State<Arc<Sim>>) -> Response {
    let now = sim.clock.now();
    let mut w = sim.world();
    w.tick(now);
    match serde_json::to_value(&*w) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": {"code": "StateNotSerializable", "message": e.to_string()}}),
        ),
    }
}

async fn put_state(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<World>(&body) {
        Ok(world) => {
            *sim.world() = world;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad(format!("not a simulator state: {e}")),
    }
}

/// Seeds from desired-state YAML (one or more documents, Defaults included).
async fn seed_yaml(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    use crate::spec::load::parse_bytes;
    let path = std::path::Path::new("seed.yaml");
    let parsed = parse_bytes(path, std::path::Path::new(""), &body);
    let loaded = crate::spec::validate::assemble(&[parsed], &crate::spec::LoadOptions::default());
    if !loaded.diagnostics.is_empty() {
        let lines: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        return bad(format!(
            "the desired state is invalid:\n{}",
            lines.join("\n")
        ));
    }
    let now = sim.clock.now();
    let mut w = sim.world();
    let config = w.config.clone();
    let salt = w.salt;
    *w = super::seed::from_desired(&loaded.state, config, now);
    w.salt = salt;
    json_response(
        StatusCode::OK,
        &json!({"apps": w.apps.len(), "registries": w.registries.len()}),
    )
}

async fn reset(State(sim): State<Arc<Sim>>) -> Response {
    let mut w = sim.world();
    let config = w.config.clone();
    *w = World::new(config);
    StatusCode::NO_CONTENT.into_response()
}

async fn get_config(State(sim): State<Arc<Sim>>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::to_value(&sim.world().config).unwrap_or(Value::Null),
    )
}

async fn patch_config(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(format!("not JSON: {e}")),
    };
    let mut w = sim.world();
    let mut current = serde_json::to_value(&w.config).unwrap_or(Value::Null);
    merge_patch(&mut current, &patch);
    match serde_json::from_value::<Config>(current) {
        Ok(config) => {
            w.config = config;
            json_response(
                StatusCode::OK,
                &serde_json::to_value(&w.config).unwrap_or(Value::Null),
            )
        }
        Err(e) => bad(format!("invalid config: {e}")),
    }
}

async fn get_requests(State(sim): State<Arc<Sim>>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::to_value(&*sim.counts()).unwrap_or(Value::Null),
    )
}

async fn delete_requests(State(sim): State<Arc<Sim>>) -> Response {
    *sim.counts() = Counts::default();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_outages(State(sim): State<Arc<Sim>>) -> Response {
    let now = sim.clock.now();
    let mut w = sim.world();
    w.tick(now);
    json_response(StatusCode::OK, &json!(w.outages))
}

async fn get_restarts(State(sim): State<Arc<Sim>>) -> Response {
    json_response(StatusCode::OK, &json!(sim.world().restarts))
}

async fn get_audit(State(sim): State<Arc<Sim>>) -> Response {
    let audit = sim.audit().to_json();
    json_response(StatusCode::OK, &audit)
}

async fn delete_audit(State(sim): State<Arc<Sim>>) -> Response {
    *sim.audit() = super::audit::Audit::default();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_faults(State(sim): State<Arc<Sim>>) -> Response {
    json_response(StatusCode::OK, &json!(sim.faults().rules))
}

async fn post_faults(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    let rules: Vec<FaultRule> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => match items.into_iter().map(serde_json::from_value).collect() {
            Ok(rules) => rules,
            Err(e) => return bad(format!("invalid fault rule: {e}")),
        },
        Ok(v) => match serde_json::from_value(v) {
            Ok(rule) => vec![rule],
            Err(e) => return bad(format!("invalid fault rule: {e}")),
        },
        Err(e) => return bad(format!("not JSON: {e}")),
    };
    let mut f = sim.faults();
    let added: Vec<FaultRule> = rules.into_iter().map(|r| f.add(r)).collect();
    json_response(StatusCode::CREATED, &json!(added))
}

async fn delete_faults(State(sim): State<Arc<Sim>>) -> Response {
    *sim.faults() = Faults::default();
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_sim/inject` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Injection {
    kind: InjectionKind,
    subscription: String,
    resource_group: String,
    app: String,
    #[serde(default = "one_u32")]
    count: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum InjectionKind {
    /// The next N revisions of the app never become healthy.
    RevisionFails,
    /// The next N asynchronous writes of the app end `Failed` and are undone.
    OperationFails,
}

fn one_u32() -> u32 {
    1
}

async fn inject(State(sim): State<Arc<Sim>>, Json(i): Json<Injection>) -> Response {
    let mut w = sim.world();
    let id = AppId::new(&i.subscription, &i.resource_group, &i.app);
    let Some(rec) = w.apps.get_mut(&id) else {
        return bad(format!("no app {id}"));
    };
    match i.kind {
        InjectionKind::RevisionFails => rec.fail_next_revisions += i.count,
        InjectionKind::OperationFails => rec.fail_next_operations += i.count,
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_injections(State(sim): State<Arc<Sim>>) -> Response {
    for rec in sim.world().apps.values_mut() {
        rec.fail_next_revisions = 0;
        rec.fail_next_operations = 0;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_sim/traffic` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetTraffic {
    subscription: String,
    resource_group: String,
    app: String,
    requests_per_second: f64,
}

/// One app's traffic; times to the millisecond, so that `served` can be checked against
/// `requestsPerSecond x (servedUntil - since)`.
fn traffic_json(id: &AppId, rec: &super::store::AppRecord, now: Millis) -> Value {
    json!({
        "subscription": rec.subscription,
        "resourceGroup": rec.resource_group,
        "app": id.name,
        "requestsPerSecond": rec.traffic.requests_per_second,
        "since": rec.traffic.since.map(crate::time::format_acr),
        "servedUntil": crate::time::format_acr(now),
        "served": rec.traffic.totals(),
    })
}

/// Every app with users or with requests served: its rate and what it answered, per
/// revision and status (all kept counts, visible in the metrics or not yet).
async fn get_traffic(State(sim): State<Arc<Sim>>) -> Response {
    let now = sim.clock.now();
    let mut w = sim.world();
    w.tick(now);
    let apps: Vec<Value> = w
        .apps
        .iter()
        .filter(|(_, r)| r.traffic.requests_per_second > 0.0 || !r.traffic.requests.is_empty())
        .map(|(id, r)| traffic_json(id, r, now))
        .collect();
    json_response(StatusCode::OK, &json!(apps))
}

async fn post_traffic(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    let t: SetTraffic = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            return bad(format!(
                "invalid traffic: {e} (write {{\"subscription\", \"resourceGroup\", \"app\", \"requestsPerSecond\"}})"
            ));
        }
    };
    if !(t.requests_per_second.is_finite() && (0.0..=1_000_000.0).contains(&t.requests_per_second))
    {
        return bad(format!(
            "requestsPerSecond {} must be between 0 and 1000000",
            t.requests_per_second
        ));
    }
    let id = AppId::new(&t.subscription, &t.resource_group, &t.app);
    let now = sim.clock.now();
    let mut w = sim.world();
    if w.set_request_rate(&id, t.requests_per_second, now).is_err() {
        return bad(format!("no app {id}"));
    }
    match w.apps.get(&id) {
        Some(rec) => json_response(StatusCode::OK, &traffic_json(&id, rec, now)),
        None => bad(format!("no app {id}")),
    }
}

/// `POST /_sim/behaviours` body: `image` or `revision`, and the behaviour's fields (none:
/// forget the key).
fn parse_behaviour(
    body: &[u8],
) -> Result<(Option<String>, Option<String>, super::traffic::Behaviour), String> {
    let hint = "write {\"image\" or \"revision\", \"errorRate\", \"errorStatus\", \"healthPath\", \"healthStatus\", \"latencyMs\"}";
    let mut fields = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(format!("invalid behaviour: not an object ({hint})")),
        Err(e) => return Err(format!("invalid behaviour: {e} ({hint})")),
    };
    let mut key = |name: &str| match fields.remove(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(format!(
            "invalid behaviour: `{name}` must be a non-empty string"
        )),
    };
    let image = key("image")?;
    let revision = key("revision")?;
    let behaviour = serde_json::from_value(Value::Object(fields))
        .map_err(|e| format!("invalid behaviour: {e} ({hint})"))?;
    Ok((image, revision, behaviour))
}

async fn get_behaviours(State(sim): State<Arc<Sim>>) -> Response {
    json_response(StatusCode::OK, &json!(sim.world().behaviours))
}

async fn post_behaviour(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    let (image, revision, behaviour) = match parse_behaviour(&body) {
        Ok(parsed) => parsed,
        Err(e) => return bad(e),
    };
    if let Err(e) = behaviour.check() {
        return bad(e);
    }
    let keep = (behaviour != super::traffic::Behaviour::default()).then_some(behaviour);
    let now = sim.clock.now();
    let mut w = sim.world();
    match (image, revision) {
        (Some(image), None) => w.set_image_behaviour(&image, keep, now),
        (None, Some(revision)) => w.set_revision_behaviour(&revision, keep, now),
        _ => return bad("name exactly one of \"image\" or \"revision\""),
    }
    json_response(StatusCode::OK, &json!(w.behaviours))
}

async fn delete_behaviours(State(sim): State<Arc<Sim>>) -> Response {
    let now = sim.clock.now();
    sim.world().clear_behaviours(now);
    StatusCode::NO_CONTENT.into_response()
}

async fn token(State(sim): State<Arc<Sim>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let audience = q
        .get("audience")
        .cloned()
        .unwrap_or_else(|| "https://management.azure.com/".to_owned());
    json_response(
        StatusCode::OK,
        &json!({"access_token": sim.issue_token(&audience), "token_type": "Bearer"}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(
            "/subscriptions/*/resourceGroups/*/providers/Microsoft.App/containerApps/*",
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.app/containerapps/ca"
        ));
        assert!(!glob(
            "/subscriptions/*/providers",
            "/subscriptions/a/b/providers"
        ));
        assert!(glob(
            "**/revisions/*/deactivate",
            "/subscriptions/s/x/y/revisions/r1/deactivate"
        ));
        assert!(glob("*", ""));
        assert!(!glob("a*", "b"));
    }

    #[test]
    fn counted_rules_expire() {
        let mut f = Faults::default();
        f.add(FaultRule {
            id: 0,
            operation: Some("ContainerApps_Get".into()),
            method: None,
            path: None,
            fault: Fault::LockConflict,
            count: Some(2),
            probability: None,
            hits: 0,
        });
        assert!(f.take(&Method::GET, "/x", "ContainerApps_Get").is_some());
        assert!(f.take(&Method::GET, "/x", "ContainerApps_List").is_none());
        assert!(f.take(&Method::GET, "/x", "containerapps_get").is_some());
        assert!(f.take(&Method::GET, "/x", "ContainerApps_Get").is_none());
    }

    #[test]
    fn buckets_refill_at_their_rate() {
        let cfg = Throttling {
            enabled: true,
            read_burst: 2.0,
            read_per_second: 1.0,
            write_burst: 1.0,
            write_per_second: 0.5,
        };
        let mut b = Buckets::default();
        assert_eq!(b.take("s", false, &cfg, 0), Ok(Some(1)));
        assert_eq!(b.take("s", false, &cfg, 0), Ok(Some(0)));
        assert_eq!(b.take("s", false, &cfg, 0), Err(1));
        assert_eq!(b.take("s", false, &cfg, 1_000), Ok(Some(0)));
        assert_eq!(b.take("s", true, &cfg, 0), Ok(Some(0)));
        assert_eq!(b.take("s", true, &cfg, 0), Err(2));
        assert_eq!(b.take("other", true, &cfg, 0), Ok(Some(0)));
    }
}

//! ARM routes of Microsoft.App/containerApps and what clients read around them.
//!
//! Paths are matched case-insensitively, as ARM matches them (`resourcegroups` and
//! `resourceGroups` are one route). Every response carries `x-ms-request-id` and
//! `x-ms-correlation-request-id`; errors use ARM's envelope `{"error": {"code", "message"}}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::identity::{Grant, bearer, is_arm_audience};
use super::store::{API_VERSION, AppId, ArmError, LroMode, TENANT_ID};
use super::{Sim, base_url, json_response};
use crate::time;

/// Largest request body accepted (ARM's own limit is 4 MB for resource bodies).
pub(crate) const MAX_BODY: usize = 4 * 1024 * 1024;

/// ARM's answer to a body over [`MAX_BODY`].
pub(crate) fn too_large() -> Response {
    error_response(&ArmError::new(
        413,
        "RequestEntityTooLarge",
        "The request body is larger than 4 MB.",
    ))
}

/// An ARM route, parsed from a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/subscriptions`
    Subscriptions,
    /// `/subscriptions/{sub}`
    Subscription { sub: String },
    /// `/subscriptions/{sub}/resourceGroups/{rg}`
    ResourceGroup { sub: String, rg: String },
    /// `/subscriptions/{sub}/providers/Microsoft.App`
    Provider { sub: String },
    /// `/subscriptions/{sub}/providers/Microsoft.App/containerApps`
    AppsBySubscription { sub: String },
    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.App/containerApps`
    AppsByResourceGroup { sub: String, rg: String },
    /// `.../containerApps/{name}`
    App { id: AppId },
    /// `.../containerApps/{name}/listSecrets`
    ListSecrets { id: AppId },
    /// `.../containerApps/{name}/revisions`
    Revisions { id: AppId },
    /// `.../revisions/{rev}`
    Revision { id: AppId, rev: String },
    /// `.../revisions/{rev}/{activate|deactivate|restart}`
    RevisionAction {
        id: AppId,
        rev: String,
        action: String,
    },
    /// `.../revisions/{rev}/replicas`
    Replicas { id: AppId, rev: String },
    /// `.../revisions/{rev}/replicas/{replica}`
    Replica {
        id: AppId,
        rev: String,
        replica: String,
    },
    /// `.../containerApps/{name}/providers/Microsoft.Insights/metrics` (Azure Monitor)
    Metrics { id: AppId },
    /// `/subscriptions/{sub}/providers/Microsoft.App/locations/{loc}/containerappOperationStatuses/{op}`
    OperationStatus { sub: String, op: String },
    /// `.../containerappOperationResults/{op}`
    OperationResult { sub: String, op: String },
}

impl Route {
    /// Parses an ARM path; `None` for anything this simulator does not serve.
    pub fn parse(path: &str) -> Option<Route> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
        let l: Vec<&str> = lower.iter().map(String::as_str).collect();
        let s = |i: usize| segs[i].to_owned();
        let app = |i: usize| AppId::new(segs[1], segs[3], segs[i]);
        Some(match l.as_slice() {
            ["subscriptions"] => Route::Subscriptions,
            ["subscriptions", _] => Route::Subscription { sub: s(1) },
            ["subscriptions", _, "resourcegroups", _] => Route::ResourceGroup {
                sub: s(1),
                rg: s(3),
            },
            ["subscriptions", _, "providers", "microsoft.app"] => Route::Provider { sub: s(1) },
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.app",
                "containerapps",
            ] => Route::AppsBySubscription { sub: s(1) },
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.app",
                "locations",
                _,
                "containerappoperationstatuses",
                _,
            ] => Route::OperationStatus {
                sub: s(1),
                op: s(7),
            },
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.app",
                "locations",
                _,
                "containerappoperationresults",
                _,
            ] => Route::OperationResult {
                sub: s(1),
                op: s(7),
            },
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.app",
                "containerapps",
                rest @ ..,
            ] => match rest {
                [] => Route::AppsByResourceGroup {
                    sub: s(1),
                    rg: s(3),
                },
                [_] => Route::App { id: app(7) },
                [_, "listsecrets"] => Route::ListSecrets { id: app(7) },
                [_, "providers", "microsoft.insights", "metrics"] => Route::Metrics { id: app(7) },
                [_, "revisions"] => Route::Revisions { id: app(7) },
                [_, "revisions", _] => Route::Revision {
                    id: app(7),
                    rev: s(9),
                },
                [_, "revisions", _, "replicas"] => Route::Replicas {
                    id: app(7),
                    rev: s(9),
                },
                [_, "revisions", _, "replicas", _] => Route::Replica {
                    id: app(7),
                    rev: s(9),
                    replica: s(11),
                },
                [
                    _,
                    "revisions",
                    _,
                    action @ ("activate" | "deactivate" | "restart"),
                ] => Route::RevisionAction {
                    id: app(7),
                    rev: s(9),
                    action: (*action).to_owned(),
                },
                _ => return None,
            },
            _ => return None,
        })
    }

    /// The subscription the request is charged to, for throttling.
    pub fn subscription(&self) -> Option<&str> {
        match self {
            Route::Subscriptions => None,
            Route::Subscription { sub }
            | Route::ResourceGroup { sub, .. }
            | Route::Provider { sub }
            | Route::AppsBySubscription { sub }
            | Route::AppsByResourceGroup { sub, .. }
            | Route::OperationStatus { sub, .. }
            | Route::OperationResult { sub, .. } => Some(sub),
            Route::App { id }
            | Route::ListSecrets { id }
            | Route::Revisions { id }
            | Route::Revision { id, .. }
            | Route::RevisionAction { id, .. }
            | Route::Replicas { id, .. }
            | Route::Replica { id, .. }
            | Route::Metrics { id } => Some(&id.subscription),
        }
    }

    /// The operationId of the spec (N§1.1), or a name in its style.
    pub fn operation_name(&self, method: &Method) -> &'static str {
        match (self, method.as_str()) {
            (Route::Subscriptions, _) => "Subscriptions_List",
            (Route::Subscription { .. }, _) => "Subscriptions_Get",
            (Route::ResourceGroup { .. }, _) => "ResourceGroups_Get",
            (Route::Provider { .. }, _) => "Providers_Get",
            (Route::AppsBySubscription { .. }, _) => "ContainerApps_ListBySubscription",
            (Route::AppsByResourceGroup { .. }, _) => "ContainerApps_ListByResourceGroup",
            (Route::App { .. }, "PATCH") => "ContainerApps_Update",
            (Route::App { .. }, "PUT") => "ContainerApps_CreateOrUpdate",
            (Route::App { .. }, "DELETE") => "ContainerApps_Delete",
            (Route::App { .. }, _) => "ContainerApps_Get",
            (Route::ListSecrets { .. }, _) => "ContainerApps_ListSecrets",
            (Route::Revisions { .. }, _) => "ContainerAppsRevisions_ListRevisions",
            (Route::Revision { .. }, _) => "ContainerAppsRevisions_GetRevision",
            (Route::RevisionAction { action, .. }, _) => match action.as_str() {
                "activate" => "ContainerAppsRevisions_ActivateRevision",
                "deactivate" => "ContainerAppsRevisions_DeactivateRevision",
                _ => "ContainerAppsRevisions_RestartRevision",
            },
            (Route::Replicas { .. }, _) => "ContainerAppsRevisionReplicas_ListReplicas",
            (Route::Replica { .. }, _) => "ContainerAppsRevisionReplicas_GetReplica",
            (Route::Metrics { .. }, _) => "Metrics_List",
            (Route::OperationStatus { .. }, _) => "ContainerAppOperationStatuses_Get",
            (Route::OperationResult { .. }, _) => "ContainerAppOperationResults_Get",
        }
    }
}

/// ARM's error envelope with its request-id headers.
pub fn error_response(e: &ArmError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        status,
        &json!({"error": {"code": e.code, "message": e.message}}),
    )
}

/// The 429 ARM sends when a subscription's bucket is empty (N§7).
pub fn throttled(sub: &str, write: bool, retry_after: u64) -> Response {
    // The code and wording follow ARM's throttling documentation [doc request-limits-and-throttling].
    let kind = if write { "write" } else { "read" };
    let mut r = error_response(&ArmError::new(
        429,
        "SubscriptionRequestsThrottled",
        format!(
            "Number of '{kind}' requests for subscription '{sub}' exceeded. Please try again after '{retry_after}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling"
        ),
    ));
    r.headers_mut()
        .insert("retry-after", HeaderValue::from(retry_after));
    let name = if write {
        "x-ms-ratelimit-remaining-subscription-writes"
    } else {
        "x-ms-ratelimit-remaining-subscription-reads"
    };
    r.headers_mut().insert(name, HeaderValue::from_static("0"));
    r
}

fn query_map(request: &Request) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .map(|(k, v)| (decode(k), decode(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// Percent-decoding of a query component (`+` is a space).
pub(crate) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// api-versions the provider lookup advertises. Any well-formed version from Container Apps'
// GA (2022-03-01) on is answered, since SDKs move ahead of any list (azure-mgmt-appcontainers
// 5.1.0 sends 2026-07-01); the resource shapes are the same in all of them (N§1).
const KNOWN_API_VERSIONS: &[&str] = &[
    "2022-03-01",
    "2022-10-01",
    "2023-05-01",
    "2024-03-01",
    "2025-01-01",
    "2025-07-01",
    "2025-10-02-preview",
    "2026-01-01",
    "2026-07-01",
];

/// Whether `v` is `YYYY-MM-DD` or `YYYY-MM-DD-preview`, not before `first`.
fn is_api_version_since(v: &str, first: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let shaped = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    shaped && date >= first
}

/// A Container Apps api-version: well-formed, not before 2022-03-01.
fn is_served_api_version(v: &str) -> bool {
    is_api_version_since(v, "2022-03-01")
}

fn check_api_version(route: &Route, q: &HashMap<String, String>) -> Result<(), ArmError> {
    let Some(v) = q.get("api-version") else {
        return Err(ArmError::new(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let generic = matches!(
        route,
        Route::Subscriptions
            | Route::Subscription { .. }
            | Route::ResourceGroup { .. }
            | Route::Provider { .. }
    );
    if let Route::Metrics { .. } = route {
        return check_metrics_api_version(v);
    }
    if generic || is_served_api_version(v) {
        Ok(())
    } else {
        Err(ArmError::new(
            400,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for location 'eastus' and API version '{v}' for type 'containerApps'. The supported api-versions are '{}'.",
                KNOWN_API_VERSIONS.join(", ")
            ),
        ))
    }
}

// api-versions of microsoft.insights/metrics; any well-formed one from 2018-01-01 (the first
// with dimensions in `$filter`) is answered, as SDKs move ahead of any list (metrics_API.json
// exists for 2018-01-01 through 2023-10-01, the TypeSpec for 2024-02-01).
const METRICS_API_VERSIONS: &[&str] = &[
    "2018-01-01",
    "2019-07-01",
    "2021-05-01",
    "2023-10-01",
    "2024-02-01",
];

fn check_metrics_api_version(v: &str) -> Result<(), ArmError> {
    if is_api_version_since(v, "2018-01-01") {
        return Ok(());
    }
    Err(ArmError::new(
        400,
        "NoRegisteredProviderFound",
        format!(
            "No registered resource provider found for location 'global' and API version '{v}' for type 'metrics'. The supported api-versions are '{}'.",
            METRICS_API_VERSIONS.join(", ")
        ),
    ))
}

fn check_auth(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    let unauthorized = |code: &str, message: &str| {
        let mut r = error_response(&ArmError::new(401, code, message));
        let challenge = format!(
            "Bearer authorization_uri=\"https://login.microsoftonline.com/{TENANT_ID}\", error=\"invalid_token\", error_description=\"{message}\""
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert("www-authenticate", v);
        }
        r
    };
    let Some(token) = bearer(headers) else {
        return Err(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ));
    };
    let now = sim.clock.now();
    match sim.tokens().check(token, now).cloned() {
        None => Err(unauthorized(
            "InvalidAuthenticationToken",
            "The access token is invalid or has expired.",
        )),
        Some(Grant::Aad { audience }) if is_arm_audience(&audience, &base_url(sim, headers)) => {
            Ok(())
        }
        Some(Grant::Aad { audience }) => Err(unauthorized(
            "InvalidAuthenticationTokenAudience",
            &format!(
                "The access token has been obtained for wrong audience or resource '{audience}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.azure.com/'."
            ),
        )),
        Some(_) => Err(unauthorized(
            "InvalidAuthenticationToken",
            "The access token is not an Entra ID token.",
        )),
    }
}

fn page(
    items: Vec<Value>,
    q: &HashMap<String, String>,
    page_size: usize,
    next_base: &str,
    api_version: &str,
) -> Value {
    let skip: usize = q
        .get("$skipToken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let size = page_size.max(1);
    let end = (skip + size).min(items.len());
    let value: Vec<Value> = items
        .get(skip..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let next = (end < items.len())
        .then(|| format!("{next_base}?api-version={api_version}&$skipToken={end}"));
    json!({"value": value, "nextLink": next})
}

fn location_slug(app: &Value) -> String {
    app.get("location")
        .and_then(Value::as_str)
        .unwrap_or("eastus")
        .to_ascii_lowercase()
        .replace(' ', "")
}

/// Serves one ARM request. (The middleware adds `x-ms-request-id` and its companions.)
pub async fn handle(sim: Arc<Sim>, request: Request) -> Response {
    handle_inner(&sim, request).await
}

async fn handle_inner(sim: &Arc<Sim>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some(route) = Route::parse(&path) else {
        return error_response(&ArmError::new(
            404,
            "InvalidResourceType",
            format!(
                "The resource type could not be found for the path '{path}' (the simulator serves Microsoft.App/containerApps)."
            ),
        ));
    };
    if let Err(r) = check_auth(sim, request.headers()) {
        return r;
    }
    let q = query_map(&request);
    if let Err(e) = check_api_version(&route, &q) {
        return error_response(&e);
    }
    // ARM's buckets per subscription and operation type (N§7); only authenticated requests
    // reach them.
    let write = request.method() != Method::GET && request.method() != Method::HEAD;
    let mut remaining = None;
    if let Some(sub) = route.subscription() {
        let config = sim.world().config.throttling.clone();
        match sim.buckets().take(sub, write, &config, sim.clock.now()) {
            Ok(left) => remaining = left,
            Err(retry_after) => return throttled(sub, write, retry_after),
        }
    }
    let api_version = q
        .get("api-version")
        .cloned()
        .unwrap_or_else(|| API_VERSION.to_owned());
    let method = request.method().clone();
    let base = base_url(sim, request.headers());
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let now = sim.clock.now();
    let result = route_request(
        sim,
        &route,
        &method,
        &q,
        &base,
        &path,
        &api_version,
        &body,
        now,
    );
    let mut response = result.unwrap_or_else(|e| error_response(&e));
    if let Some(left) = remaining {
        let name = if write {
            "x-ms-ratelimit-remaining-subscription-writes"
        } else {
            "x-ms-ratelimit-remaining-subscription-reads"
        };
        response.headers_mut().insert(name, HeaderValue::from(left));
    }
    response
}

fn method_not_allowed(method: &Method) -> ArmError {
    ArmError::new(
        405,
        "HttpMethodNotAllowed",
        format!("The HTTP method '{method}' is not supported for this resource."),
    )
}

fn parse_body(body: &Bytes) -> Result<Value, ArmError> {
    serde_json::from_slice(body).map_err(|e| {
        ArmError::new(
            400,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn route_request(
    sim: &Sim,
    route: &Route,
    method: &Method,
    q: &HashMap<String, String>,
    base: &str,
    path: &str,
    api_version: &str,
    body: &Bytes,
    now: crate::time::Millis,
) -> Result<Response, ArmError> {
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    let is_get = *method == Method::GET;
    match route {
        Route::Subscriptions if is_get => {
            let w = sim.world();
            let subs: Vec<Value> = w
                .subscriptions
                .iter()
                .map(|(id, s)| subscription_json(id, &s.display_name))
                .collect();
            ok(json!({"value": subs, "count": {"type": "Total", "value": subs.len()}}))
        }
        Route::Subscription { sub } if is_get => {
            let w = sim.world();
            match w.subscriptions.get(&sub.to_lowercase()) {
                Some(s) => ok(subscription_json(&sub.to_lowercase(), &s.display_name)),
                None => Err(ArmError::new(
                    404,
                    "SubscriptionNotFound",
                    format!("The subscription '{sub}' could not be found."),
                )),
            }
        }
        Route::ResourceGroup { sub, rg } if is_get => {
            let w = sim.world();
            let app = w.apps.iter().find(|(id, _)| {
                id.subscription == sub.to_lowercase() && id.resource_group == rg.to_lowercase()
            });
            match app {
                Some((_, rec)) => ok(json!({
                    "id": format!("/subscriptions/{sub}/resourceGroups/{}", rec.resource_group),
                    "name": rec.resource_group, "type": "Microsoft.Resources/resourceGroups",
                    "location": location_slug(&rec.app), "properties": {"provisioningState": "Succeeded"},
                })),
                None => Err(ArmError::new(
                    404,
                    "ResourceGroupNotFound",
                    format!("Resource group '{rg}' could not be found."),
                )),
            }
        }
        Route::Provider { sub } if is_get => ok(provider_json(sub)),
        Route::AppsBySubscription { sub } if is_get => {
            let mut w = sim.world();
            w.tick(now);
            let page_size = w.config.page_size;
            let items = w.list_apps(sub, None);
            ok(page(
                items,
                q,
                page_size,
                &format!("{base}{path}"),
                api_version,
            ))
        }
        Route::AppsByResourceGroup { sub, rg } if is_get => {
            let mut w = sim.world();
            w.tick(now);
            let page_size = w.config.page_size;
            let items = w.list_apps(sub, Some(rg));
            ok(page(
                items,
                q,
                page_size,
                &format!("{base}{path}"),
                api_version,
            ))
        }
        Route::App { id } => match method.as_str() {
            "GET" => {
                let mut w = sim.world();
                w.tick(now);
                ok(w.get_app(id)?)
            }
            "PATCH" | "PUT" => {
                let patch = parse_body(body)?;
                let replace = *method == Method::PUT;
                let (result, retry_after) = {
                    let mut w = sim.world();
                    let r = w.write_app(id, &patch, replace, now)?;
                    (r, w.config.lro_retry_after_s)
                };
                let mode = sim.world().config.lro_mode;
                write_response(base, id, &result, replace, mode, retry_after, api_version)
            }
            _ => Err(method_not_allowed(method)),
        },
        Route::ListSecrets { id } if *method == Method::POST => {
            ok(json!({"value": sim.world().list_secrets(id)?}))
        }
        Route::Revisions { id } if is_get => {
            let mut w = sim.world();
            w.tick(now);
            let page_size = w.config.page_size;
            let items = w.list_revisions(id)?;
            ok(page(
                items,
                q,
                page_size,
                &format!("{base}{path}"),
                api_version,
            ))
        }
        Route::Revision { id, rev } if is_get => {
            let mut w = sim.world();
            w.tick(now);
            ok(w.get_revision(id, rev)?)
        }
        Route::RevisionAction { id, rev, action } if *method == Method::POST => {
            sim.world().revision_action(id, rev, action, now)?;
            // The spec declares no body, but the az CLI parses one (azure-cli containerapp
            // _clients.py: `return r.json()` after activate/deactivate/restart), so Azure sends
            // JSON; its content is unspecified [assumption: an empty object].
            ok(json!({}))
        }
        Route::Replicas { id, rev } if is_get => {
            let mut w = sim.world();
            w.tick(now);
            ok(json!({"value": w.list_replicas(id, rev)?}))
        }
        Route::Replica { id, rev, replica } if is_get => {
            let mut w = sim.world();
            w.tick(now);
            let found = w
                .list_replicas(id, rev)?
                .into_iter()
                .find(|r| r["name"].as_str() == Some(replica.as_str()));
            found.map_or_else(
                || {
                    Err(ArmError::new(
                        404,
                        "ContainerAppReplicaNotFound",
                        format!("Replica '{replica}' was not found."),
                    ))
                },
                |r| Ok(json_response(StatusCode::OK, &r)),
            )
        }
        Route::Metrics { id } if is_get => {
            let query = super::metrics::parse(q, now)?;
            let mut w = sim.world();
            w.tick(now);
            w.get_app(id)?;
            let delay = w.config.metrics_delay_ms;
            let rec = w.apps.get(id).ok_or_else(|| {
                ArmError::new(
                    404,
                    "ResourceNotFound",
                    format!("The app {id} was not found."),
                )
            })?;
            ok(super::metrics::respond(rec, &query, now, delay)?)
        }
        Route::OperationStatus { sub, op } if is_get => operation_status(sim, sub, op, now),
        Route::OperationResult { op, .. } if is_get => operation_result(sim, base, path, op, now),
        _ => Err(method_not_allowed(method)),
    }
}

fn write_response(
    base: &str,
    id: &AppId,
    result: &super::store::WriteResult,
    replace: bool,
    mode: LroMode,
    retry_after: u64,
    api_version: &str,
) -> Result<Response, ArmError> {
    let Some(op) = &result.operation else {
        let status = if result.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Ok(json_response(status, &result.app));
    };
    let loc = location_slug(&result.app);
    let ops = format!(
        "{base}/subscriptions/{}/providers/Microsoft.App/locations/{loc}",
        id.subscription
    );
    let status_url = format!("{ops}/containerappOperationStatuses/{op}?api-version={api_version}");
    let result_url = format!("{ops}/containerappOperationResults/{op}?api-version={api_version}");
    // Azure-AsyncOperation goes to ...OperationStatuses and Location to ...OperationResults, as
    // ARM's protocol has them (N§1.2). The spec's PATCH example puts an operationResults URL in
    // azure-asyncoperation; one URL cannot answer both polling protocols, so we keep ARM's split.
    // PATCH answers 202 with no body (N§1.2); PUT answers 201 with the resource.
    let mut response = if replace {
        json_response(StatusCode::CREATED, &result.app)
    } else {
        StatusCode::ACCEPTED.into_response()
    };
    let h = response.headers_mut();
    if (mode == LroMode::Async || replace)
        && let Ok(v) = HeaderValue::from_str(&status_url)
    {
        h.insert("azure-asyncoperation", v);
    }
    if let Ok(v) = HeaderValue::from_str(&result_url) {
        h.insert("location", v);
    }
    h.insert("retry-after", HeaderValue::from(retry_after));
    Ok(response)
}

fn operation_status(
    sim: &Sim,
    sub: &str,
    op: &str,
    now: crate::time::Millis,
) -> Result<Response, ArmError> {
    let (status, details, retry_after) = {
        let mut w = sim.world();
        let retry_after = w.config.lro_retry_after_s;
        let found = w.operation(op, now);
        match found {
            Some((status, o)) if o.app.subscription == sub.to_lowercase() => {
                (status, o, retry_after)
            }
            _ => {
                return Err(ArmError::new(
                    404,
                    "OperationNotFound",
                    format!("Operation '{op}' was not found."),
                ));
            }
        }
    };
    let mut body = json!({
        "id": format!("/subscriptions/{sub}/providers/Microsoft.App/locations/eastus/containerappOperationStatuses/{op}"),
        "name": op,
        "status": status,
        "startTime": time::format_arm(details.started),
    });
    if status != "InProgress" {
        body["endTime"] = json!(time::format_arm(details.done_at));
    }
    if let Some(message) = &details.fails_with {
        body["error"] = json!({"code": "ContainerAppOperationFailed", "message": message});
    }
    let mut r = json_response(StatusCode::OK, &body);
    if status == "InProgress" {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(retry_after));
    }
    Ok(r)
}

fn operation_result(
    sim: &Sim,
    base: &str,
    path: &str,
    op: &str,
    now: crate::time::Millis,
) -> Result<Response, ArmError> {
    let mut w = sim.world();
    let retry_after = w.config.lro_retry_after_s;
    let Some((status, details)) = w.operation(op, now) else {
        return Err(ArmError::new(
            404,
            "OperationNotFound",
            format!("Operation '{op}' was not found."),
        ));
    };
    match status.as_str() {
        "InProgress" => {
            let mut r = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{base}{path}?api-version={API_VERSION}"))
            {
                r.headers_mut().insert("location", v);
            }
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            Ok(r)
        }
        "Failed" => Err(ArmError::new(
            500,
            "ContainerAppOperationFailed",
            details
                .fails_with
                .unwrap_or_else(|| "The operation failed.".to_owned()),
        )),
        _ => Ok(json_response(StatusCode::OK, &w.get_app(&details.app)?)),
    }
}

fn subscription_json(id: &str, name: &str) -> Value {
    json!({
        "id": format!("/subscriptions/{id}"),
        "authorizationSource": "RoleBased",
        "subscriptionId": id,
        "tenantId": TENANT_ID,
        "displayName": name,
        "state": "Enabled",
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "PayAsYouGo_2014-09-01", "spendingLimit": "Off"},
    })
}

fn provider_json(sub: &str) -> Value {
    let versions: Vec<&str> = KNOWN_API_VERSIONS.iter().rev().copied().collect();
    let types = [
        "containerApps",
        "containerApps/revisions",
        "containerApps/revisions/replicas",
        "locations",
        "locations/containerappOperationResults",
        "locations/containerappOperationStatuses",
        "managedEnvironments",
    ];
    json!({
        "id": format!("/subscriptions/{sub}/providers/Microsoft.App"),
        "namespace": "Microsoft.App",
        "registrationState": "Registered",
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": types.iter().map(|t| json!({
            "resourceType": t, "locations": ["East US", "UK South", "West Europe"],
            "apiVersions": versions, "defaultApiVersion": API_VERSION,
            "capabilities": "None",
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_case_insensitively() {
        let p = "/subscriptions/S/resourcegroups/RG/providers/microsoft.app/containerapps/CA/revisions/ca--v1/Activate";
        assert_eq!(
            Route::parse(p),
            Some(Route::RevisionAction {
                id: AppId::new("s", "rg", "ca"),
                rev: "ca--v1".into(),
                action: "activate".into()
            })
        );
        assert_eq!(
            Route::parse("/subscriptions/s/providers/Microsoft.App/containerApps"),
            Some(Route::AppsBySubscription { sub: "s".into() })
        );
        assert_eq!(
            Route::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/x"),
            None
        );
        assert_eq!(
            Route::parse(
                "/subscriptions/s/providers/Microsoft.App/locations/eastus/containerappOperationStatuses/op1"
            ),
            Some(Route::OperationStatus {
                sub: "s".into(),
                op: "op1".into()
            })
        );
    }

    #[test]
    fn api_versions() {
        for ok in [
            "2026-01-01",
            "2026-07-01",
            "2025-10-02-preview",
            "2022-03-01",
        ] {
            assert!(is_served_api_version(ok), "{ok}");
        }
        for bad in [
            "2019-01-01",
            "2022-02-28",
            "latest",
            "2026-1-01",
            "2026-01-01-beta",
            "",
        ] {
            assert!(!is_served_api_version(bad), "{bad}");
        }
    }

    #[test]
    fn query_decoding() {
        assert_eq!(decode("a%20b+c"), "a b c");
        assert_eq!(decode("%24skipToken"), "$skipToken");
        assert_eq!(decode("bad%2"), "bad%2");
        assert_eq!(decode("%zz"), "%zz");
    }
}

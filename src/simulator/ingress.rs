//! Container Apps ingress: HTTP requests for an app's URL (`<app>.<domain>`, split by its
//! traffic rules), a revision's URL (`properties.fqdn`, `latestRevisionFqdn`) or a label's URL
//! (`<app>---<label>.<domain>`), routed by the `Host` header and answered as the revision
//! behaves (`/_sim/behaviours`). Every answer is counted in the app's metrics.
//!
//! They arrive on the simulator's own port (a `Host` that names an app) or on the port of
//! `simulate --ingress-listen`, which serves nothing else. A client reaches them through
//! `--ingress-endpoint DOMAIN=URL`: it connects to URL and sends the app's host.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::store::HostTarget;
use super::{Sim, json_response};

/// The `Host` header without its port, lower case.
pub fn host_of(headers: &HeaderMap) -> Option<String> {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())?
        .trim();
    let name = if host.starts_with('[') {
        host.split_once(']').map_or(host, |(h, _)| h)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    Some(name.trim_start_matches('[').to_ascii_lowercase())
}

/// Whether a request on the simulator's own port is for an app rather than for the
/// simulator: its host names an app, or is under Container Apps' domain.
pub fn is_for_an_app(sim: &Sim, headers: &HeaderMap) -> bool {
    let Some(host) = host_of(headers) else {
        return false;
    };
    if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    host.ends_with(".azurecontainerapps.io") || super::store::is_app_host(&sim.world(), &host)
}

/// Answers one request by its host.
pub async fn handle(sim: Arc<Sim>, request: Request) -> Response {
    let host = host_of(request.headers()).unwrap_or_default();
    let path = request.uri().path().to_owned();
    let now = sim.clock.now();
    let answered = sim.world().serve_ingress(&host, &path, now);
    let Some(a) = answered else {
        // The page Container Apps serves for a host no app has [assumption: its text, as
        // seen in the browser, "Error 404 - This Container App is stopped or does not exist"].
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "Error 404 - This Container App is stopped or does not exist.", "host": host}),
        );
    };
    if a.answer.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(a.answer.latency_ms)).await;
    }
    let status = StatusCode::from_u16(a.answer.status).unwrap_or(StatusCode::OK);
    let mut body = json!({
        "app": a.app,
        "revision": a.answer.revision,
        "image": a.image,
        "path": path,
        "status": a.answer.status,
    });
    match &a.host {
        HostTarget::Label(l) => body["label"] = json!(l),
        HostTarget::App | HostTarget::Revision(_) => {}
    }
    if a.answer.status == 503 {
        body["error"] = json!("no healthy upstream: the revision is not running");
    }
    let mut response = json_response(status, &body);
    if let Ok(v) = HeaderValue::from_str(&a.answer.revision) {
        response.headers_mut().insert("x-simulator-revision", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port_and_case() {
        let mut h = HeaderMap::new();
        h.insert(
            "host",
            HeaderValue::from_static("CA-Web.Env.uksouth.azurecontainerapps.io:443"),
        );
        assert_eq!(
            host_of(&h).as_deref(),
            Some("ca-web.env.uksouth.azurecontainerapps.io")
        );
        h.insert("host", HeaderValue::from_static("[::1]:8080"));
        assert_eq!(host_of(&h).as_deref(), Some("::1"));
        h.insert("host", HeaderValue::from_static("127.0.0.1"));
        assert_eq!(host_of(&h).as_deref(), Some("127.0.0.1"));
    }
}

//! The controller's HTTP endpoints (contract section 4), on `--listen`:
//!
//! | route | answers |
//! | --- | --- |
//! | `GET /` | the dashboard ([`crate::dashboard`]): a read-only page drawn from `/status` |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once the desired state is loaded and a first pass is done, else 503 |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /status` | JSON, the same data as `aca-reconciler status` |
//! | `POST /reconcile` | 202: every app is reconciled now (for a git push webhook); with `ACAR_TRIGGER_TOKEN` set, only with `Authorization: Bearer <token>` |
//!
//! Hostile clients are refused without harm ([`serve`]): request bodies are limited to 16 KiB
//! (nothing here needs more; the trigger reads none), headers to 16 KiB and 64 fields (431
//! past either), HTTP/1.1 only, headers must arrive within 10 s (slowloris), a
//! request is answered within 30 s, and at most 64 connections are open at once: more are
//! closed as soon as they are accepted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::controller::StatusBoard;

#[derive(Debug, Clone)]
struct AppState {
    board: Arc<StatusBoard>,
    trigger_token: Option<Arc<String>>,
    /// The length of the last `/status` answer, to size the next one's buffer.
    status_len: Arc<AtomicUsize>,
}

/// The endpoints.
pub fn router(board: Arc<StatusBoard>, trigger_token: Option<String>) -> Router {
    let state = AppState {
        board,
        trigger_token: trigger_token.filter(|t| !t.is_empty()).map(Arc::new),
        status_len: Arc::default(),
    };
    Router::new()
        .route("/", get(crate::dashboard::index))
        .route("/dashboard.js", get(crate::dashboard::script))
        .route("/dashboard.css", get(crate::dashboard::style))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/reconcile", post(reconcile))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(axum::middleware::from_fn(answer_within))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> Response {
    let status = s.board.status();
    if status.ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first pass has not finished\n",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let body = s.board.metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn status(State(s): State<AppState>) -> Response {
    // A fleet's answer is megabytes: a buffer grown by doubling would hold up to three times
    // that at its last growth (the old copy, and a new one twice its size). Sized from the last
    // answer, it is allocated once.
    let mut body = Vec::with_capacity(s.status_len.load(Ordering::Relaxed) * 9 / 8 + 4096);
    match serde_json::to_writer_pretty(&mut body, &*s.board.status()) {
        Ok(()) => {
            s.status_len.store(body.len(), Ordering::Relaxed);
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the status: {e}\n"),
        )
            .into_response(),
    }
}

/// Compares in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

async fn reconcile(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &s.trigger_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid bearer token is required (ACAR_TRIGGER_TOKEN)\n",
            )
                .into_response();
        }
    }
    s.board.trigger.notify_one();
    (StatusCode::ACCEPTED, "reconciling every app now\n").into_response()
}

/// Open connections at most; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this (after which the connection is closed).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection lives at most this long (keep-alive included); clients reconnect.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves `app` on `listener` until `stop`, then lets open requests finish (up to 5 s).
/// `axum::serve` has no header timeout and no connection limit, so this is hyper's own
/// HTTP/1.1 server with both.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: tokio_util::sync::CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "cannot accept a connection on the endpoints");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("endpoint connection refused: {MAX_CONNECTIONS} already open");
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_header_size(16 * 1024)
            .max_headers(64)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Every request is answered within 30 s (503 after that).
async fn answer_within(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    tokio::time::timeout(Duration::from_secs(30), next.run(request))
        .await
        .unwrap_or_else(|_| {
            (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}

//! The dashboard: one read-only page served by `run` at `/` on its listener, for the on-call
//! engineer who wants to know in ten seconds what is in sync, what is healthy and what is
//! moving.
//!
//! Three files embedded in the binary (no build step, no fonts, scripts or CDNs from elsewhere:
//! the ops network may have no internet). The script polls `GET /status` every few seconds
//! and draws from it; it changes nothing: the page has no route that writes, and every string
//! from YAML or Azure reaches the page through `textContent` (never as markup). The
//! `Content-Security-Policy` allows only this origin's script and style, so even a defect
//! that let markup through could not run a script.
//!
//! It costs nothing until requested: the assets are `&'static str` in the binary, and the
//! data is `/status`'s own store.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

/// Only this origin's script, style, data and images; no framing; no forms anywhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /dashboard.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

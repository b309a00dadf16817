//! A loopback HTTP receiver for notification tests: it records every request (method, path,
//! headers, body, arrival time) and answers as told: 200, any status, 429 with `Retry-After`,
//! or never (a hanging target).
//!
//! It runs on its own thread and runtime, so it serves the same from a `#[tokio::test]` (even
//! a current-thread one), a plain `#[test]`, or a spawned binary pointed at [`Receiver::url`].
//!
//! ```ignore
//! let rx = Receiver::start();
//! rx.script([Answer::TooMany { retry_after: "1".into() }]); // the next answer; then 200s
//! // ... point a Notification at rx.url("/slack/T000/B000/XXXX") ...
//! let got = rx.wait_for(1, Duration::from_secs(10));
//! assert_eq!(got[0].json()["text"], "...");
//! ```

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// How the receiver answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 with `ok` (Slack's answer).
    Ok,
    /// This status, with a short body.
    Status(u16),
    /// 429 with this `Retry-After` (seconds or an HTTP date).
    TooMany { retry_after: String },
    /// 503 with this `Retry-After`.
    Unavailable { retry_after: String },
    /// This status with this JSON body (e.g. GitHub's list of commit statuses).
    Json(u16, String),
    /// This status with these headers (e.g. GitHub's `x-ratelimit-*`).
    Headers(u16, Vec<(String, String)>),
    /// Never answers (the connection stays open until the receiver is dropped).
    Hang,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it arrived (after its body was read).
    pub at: Instant,
}

impl Request {
    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics, printing the body, if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.text()))
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: Mutex<Vec<Request>>,
    script: Mutex<VecDeque<Answer>>,
    default: Mutex<Option<Answer>>,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    base: String,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// A receiver on `127.0.0.1:<free port>` answering 200 to everything.
    pub fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::clone(&inner);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the receiver");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                addr_tx
                    .send(listener.local_addr().expect("local addr"))
                    .expect("send the address");
                let app = axum::Router::new().fallback(handle).with_state(state);
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime ends hanging handlers too.
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the receiver started");
        Self {
            base: format!("http://{addr}"),
            inner,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Answers every request (after the script) with `answer` from now on.
    pub fn answer(&self, answer: Answer) {
        *self.inner.default.lock().unwrap() = Some(answer);
    }

    /// The next requests get these answers, in order; then the default.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.script.lock().unwrap().extend(answers);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Forgets the requests so far (the script and the default answer stay).
    pub fn clear(&self) {
        self.inner.requests.lock().unwrap().clear();
    }

    /// The requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    /// Blocks until at least `n` requests came (panics after `timeout`, listing what came).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let start = Instant::now();
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            if start.elapsed() > timeout {
                panic!(
                    "{} requests after {timeout:?}, wanted {n}: {got:#?}",
                    got.len()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Receiver::wait_for`] for async tests (does not block the test's runtime).
    pub async fn until(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let start = Instant::now();
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            if start.elapsed() > timeout {
                panic!(
                    "{} requests after {timeout:?}, wanted {n}: {got:#?}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Request {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
    };
    inner.requests.lock().unwrap().push(request);
    let scripted = inner.script.lock().unwrap().pop_front();
    let answer = scripted
        .or_else(|| inner.default.lock().unwrap().clone())
        .unwrap_or(Answer::Ok);
    match answer {
        Answer::Ok => (StatusCode::OK, "ok").into_response(),
        Answer::Status(code) => {
            let status = StatusCode::from_u16(code).expect("a valid status");
            (status, format!("status {code}")).into_response()
        }
        Answer::TooMany { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after)],
            "rate_limited",
        )
            .into_response(),
        Answer::Unavailable { retry_after } => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", retry_after)],
            "unavailable",
        )
            .into_response(),
        Answer::Json(code, body) => {
            let status = StatusCode::from_u16(code).expect("a valid status");
            (status, [("content-type", "application/json")], body).into_response()
        }
        Answer::Headers(code, headers) => {
            let status = StatusCode::from_u16(code).expect("a valid status");
            let mut response = (status, format!("status {code}")).into_response();
            for (k, v) in headers {
                response.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).expect("a header name"),
                    axum::http::HeaderValue::from_str(&v).expect("a header value"),
                );
            }
            response
        }
        Answer::Hang => std::future::pending().await,
    }
}

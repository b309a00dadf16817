//! An in-memory Azure: the Container Apps ARM API, the ACR data plane, and the token endpoints,
//! served over HTTP as Azure serves them.
//!
//! The controller's tests, `--simulate`, and any ARM client (Azure's SDKs, the az CLI) talk to
//! it instead of Azure. Fidelity is the point: the same URLs, api-versions, JSON shapes, status
//! codes and long-running-operation headers, and ACA's behaviour (a template change mints a
//! revision; Single mode moves traffic itself; Azure's own lack of traffic protection, recorded
//! as outages instead of prevented).
//!
//! # Layout
//! - [`store`]: the world (apps, revisions, registries, operations) and its behaviour; pure.
//! - [`arm`]: ARM routes (`/subscriptions/...`), paging, LRO headers, the error envelope.
//! - [`acr`]: the registry data plane (`/oauth2/...`, `/acr/v1/...`, `/v2/...`).
//! - [`identity`]: the managed-identity and Entra token endpoints, and token checks.
//! - [`control`]: `/_sim/` (not Azure): state, config, faults, request counts, outages,
//!   traffic and behaviours.
//! - [`seed`]: drifted live state built from a desired-state tree.
//! - [`traffic`]: the requests users send, split by the traffic rules, answered as each
//!   revision behaves; [`metrics`]: Azure Monitor's metrics API over them; [`ingress`]: the
//!   apps', revisions' and labels' URLs, routed by `Host`.
//!
//! [`router`] builds the whole thing as one axum `Router`, usable in-process with `oneshot`
//! or served with [`serve`] on a loopback listener.

pub mod acr;
pub mod arm;
pub mod audit;
pub mod control;
pub mod identity;
pub mod ingress;
pub mod metrics;
pub mod seed;
pub mod store;
pub mod traffic;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::time::Clock;
use control::{Counts, Faults};
use identity::Tokens;
use store::World;

/// Shared state behind every route.
#[derive(Debug)]
pub struct Sim {
    world: Mutex<World>,
    tokens: Mutex<Tokens>,
    faults: Mutex<Faults>,
    counts: Mutex<Counts>,
    buckets: Mutex<control::Buckets>,
    audit: Mutex<audit::Audit>,
    /// The clock every timestamp and deadline reads.
    pub clock: Clock,
    /// The value `X-IDENTITY-HEADER` must carry on `/msi/token`.
    pub identity_header: String,
    /// Whether this simulator is served over HTTPS (for the URLs it writes).
    pub tls: bool,
}

impl Sim {
    /// A simulator holding `world`.
    pub fn new(mut world: World, identity_header: impl Into<String>) -> Arc<Self> {
        let clock = Clock::new();
        if world.salt == 0 {
            world.salt = store::splitmix(clock.now().unsigned_abs());
        }
        Arc::new(Self {
            world: Mutex::new(world),
            tokens: Mutex::new(Tokens::default()),
            faults: Mutex::new(Faults::default()),
            counts: Mutex::new(Counts::default()),
            buckets: Mutex::new(control::Buckets::default()),
            audit: Mutex::new(audit::Audit::default()),
            clock,
            identity_header: identity_header.into(),
            tls: false,
        })
    }

    /// The same, marked as served over HTTPS.
    pub fn new_tls(world: World, identity_header: impl Into<String>) -> Arc<Self> {
        let mut sim = Self::new(world, identity_header);
        if let Some(s) = Arc::get_mut(&mut sim) {
            s.tls = true;
        }
        sim
    }

    /// The world, locked. Handlers hold it only while they read or change it, never across
    /// an await.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tokens(&self) -> MutexGuard<'_, Tokens> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The audit log (writes, and requests that came before `Retry-After` allowed).
    pub fn audit(&self) -> MutexGuard<'_, audit::Audit> {
        self.audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn buckets(&self) -> MutexGuard<'_, control::Buckets> {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every token this simulator has issued (ARM, ACR refresh and access), for tests that
    /// look for leaks.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.tokens().issued()
    }

    /// Issues an Entra-style access token for `audience` (what the identity endpoints hand
    /// out; tests use it to call the simulator directly).
    pub fn issue_token(&self, audience: &str) -> String {
        let now = self.clock.now();
        self.tokens().issue_aad(audience, now)
    }
}

/// The base URL a client reached us at, from the `Host` header.
pub(crate) fn base_url(sim: &Sim, headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("{}://{host}", if sim.tls { "https" } else { "http" })
}

/// The whole simulator as one router. A request whose `Host` names an app goes to
/// [`ingress`]; every other one to the simulator's routes, with repeated slashes in its path
/// collapsed (clients send `//metadata/endpoints` when a base URL ends with `/`, and Azure
/// answers them).
pub fn router(sim: Arc<Sim>) -> Router {
    let inner = Router::new()
        .route("/msi/token", get(identity::msi_token))
        .route("/metadata/endpoints", get(cloud_metadata))
        .route("/{tenant}/oauth2/v2.0/token", post(identity::entra_token))
        .nest("/_sim", control::router())
        .fallback(dispatch)
        .layer(middleware::from_fn_with_state(sim.clone(), intercept))
        .with_state(sim.clone());
    Router::new().fallback(move |request: Request| front(sim.clone(), inner.clone(), request))
}

/// Only the apps' URLs, by `Host` (what `simulate --ingress-listen` serves).
pub fn ingress_router(sim: Arc<Sim>) -> Router {
    Router::new().fallback(move |request: Request| ingress::handle(sim.clone(), request))
}

async fn front(sim: Arc<Sim>, inner: Router, request: Request) -> Response {
    use hyper::service::Service as _;
    if ingress::is_for_an_app(&sim, request.headers()) {
        return ingress::handle(sim, request).await;
    }
    let service = hyper_util::service::TowerToHyperService::new(inner);
    match service.call(collapse_slashes(request)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// `//a///b` -> `/a/b`; the query is kept.
fn collapse_slashes(mut request: Request) -> Request {
    let path = request.uri().path();
    if !path.contains("//") {
        return request;
    }
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    if let Some(q) = request.uri().query() {
        collapsed = format!("{collapsed}?{q}");
    }
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = collapsed.parse().ok();
    if let Ok(uri) = axum::http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}

/// Every request that is not a token or `/_sim/` route: ARM, or the ACR data plane.
async fn dispatch(State(sim): State<Arc<Sim>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if acr::is_acr_path(&path) {
        acr::handle(sim, request).await
    } else {
        arm::handle(sim, request).await
    }
}

/// Names the operation a request is, for counts and fault rules: the ARM operationId
/// (`ContainerApps_Update`) or a name in the same style for the other APIs.
pub fn operation_name(method: &Method, path: &str) -> String {
    if path.starts_with("/_sim") {
        return "Simulator_Control".to_owned();
    }
    if path == "/msi/token" {
        return "ManagedIdentity_GetToken".to_owned();
    }
    if path == "/metadata/endpoints" {
        return "Metadata_GetEndpoints".to_owned();
    }
    if path.ends_with("/oauth2/v2.0/token") {
        return "Entra_GetToken".to_owned();
    }
    if acr::is_acr_path(path) {
        return acr::operation_name(method, path);
    }
    arm::Route::parse(path).map_or_else(
        || "Unknown".to_owned(),
        |r| r.operation_name(method).to_owned(),
    )
}

/// Counts the request and applies any fault rule that matches it.
async fn intercept(State(sim): State<Arc<Sim>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let operation = operation_name(&method, &path);
    let control = path.starts_with("/_sim");
    if !control {
        sim.counts()
            .record(&operation, &method, arm::Route::parse(&path).is_some());
    }
    let fault = if control {
        None
    } else {
        sim.faults().take(&method, &path, &operation)
    };
    let is_arm = arm::Route::parse(&path).is_some();
    // The audit sees every ARM request (its body is read here, and handed on, for writes) and
    // every registry data-plane request (for the registry's `Retry-After` waits).
    let scope = if is_arm {
        Some(audit::scope_of(&path))
    } else if !control && acr::is_acr_path(&path) {
        let host = request
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok());
        acr::audit_scope(&path, host).map(|s| (Some(s), None))
    } else {
        None
    };
    let mut operation_before = None;
    let (seen, request, body) = if let Some((subscription, app)) = scope {
        let seen = audit::Seen {
            at: sim.clock.now(),
            client: audit::client_of(
                request
                    .headers()
                    .get(axum::http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
            ),
            method: method.as_str().to_owned(),
            path: path.clone(),
            subscription,
            app,
        };
        sim.audit().arrive(&seen);
        if method == Method::GET || !is_arm {
            (Some(seen), request, None)
        } else {
            if let Some(app) = &seen.app {
                let op = sim.world().operation_on(app, seen.at);
                sim.audit().arrive_write(&seen, op.as_deref());
                operation_before = op;
            }
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, arm::MAX_BODY).await else {
                return arm::too_large();
            };
            let json = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
            (
                Some(seen),
                Request::from_parts(parts, axum::body::Body::from(bytes)),
                json,
            )
        }
    } else {
        (None, request, None)
    };
    let correlation = request
        .headers()
        .get("x-ms-correlation-request-id")
        .cloned();
    let client_request_id = request.headers().get("x-ms-client-request-id").cloned();
    let loses_answer = fault.as_ref().is_some_and(control::Applied::loses_answer);
    let injected = match fault {
        Some(fault) => fault.apply().await,
        None => None,
    };
    let mut response = match injected {
        Some(response) => response,
        None if loses_answer => control::broken(next.run(request).await),
        None => next.run(request).await,
    };
    if !control {
        sim.counts().record_status(response.status().as_u16());
    }
    if let Some(seen) = seen {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let now = sim.clock.now();
        if method != Method::GET
            && let Some(app) = &seen.app
        {
            let op = sim.world().operation_on(app, now);
            sim.audit().answered_write(
                &seen,
                response.status().as_u16(),
                operation_before.as_deref(),
                op.as_deref(),
            );
        }
        sim.audit().answer(
            seen,
            response.status().as_u16(),
            retry_after,
            body.as_ref(),
            now,
        );
    }
    // ARM stamps every response, errors and throttling included, with these ids.
    if is_arm {
        let request_id = sim.world().new_guid();
        let h = response.headers_mut();
        if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
            h.insert(
                "x-ms-correlation-request-id",
                correlation.unwrap_or_else(|| v.clone()),
            );
            h.insert("x-ms-request-id", v);
        }
        if let Some(v) = client_request_id {
            h.insert("x-ms-client-request-id", v);
        }
    }
    response
}

/// ARM's cloud metadata (`GET /metadata/endpoints?api-version=2022-09-01`, unauthenticated),
/// which `az cloud register --endpoint-resource-manager` reads. Every endpoint points back at
/// the simulator, so a client configured from it never reaches Azure.
async fn cloud_metadata(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let base = base_url(&sim, &headers);
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "name": "AcaSimulator",
            "portal": base,
            "resourceManager": format!("{base}/"),
            "authentication": {
                "loginEndpoint": base,
                "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
                "tenant": "common",
                "identityProvider": "AAD"
            },
            "graphAudience": format!("{base}/"),
            "graph": format!("{base}/"),
            "sqlManagement": format!("{base}/"),
            "batch": format!("{base}/"),
            "gallery": format!("{base}/"),
            "media": format!("{base}/"),
            "activeDirectoryDataLake": format!("{base}/"),
            "vmImageAliasDoc": format!("{base}/"),
            "suffixes": {
                "acrLoginServer": "azurecr.io",
                "keyVaultDns": "vault.azure.net",
                "storage": "core.windows.net",
                "sqlServerHostname": "database.windows.net"
            }
        }),
    )
}

/// A JSON response with a status.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// How to serve: address, TLS, where to write the certificate.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Listen address (loopback unless the operator chooses otherwise).
    pub listen: SocketAddr,
    /// Serve HTTPS with a self-signed certificate for 127.0.0.1, ::1 and localhost.
    pub tls: bool,
    /// Where to write the certificate's PEM (for clients to trust).
    pub tls_cert: PathBuf,
}

/// A running simulator.
#[derive(Debug)]
pub struct Handle {
    /// `http://127.0.0.1:PORT` or `https://...`.
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The shared state (for tests that inspect or seed it directly).
    pub sim: Arc<Sim>,
    /// Cancel to stop serving.
    pub shutdown: CancellationToken,
    /// `http://ADDR` (or https) of the ingress listener, once [`Handle::serve_ingress`] ran.
    pub ingress_url: Option<String>,
    tls: Option<Tls>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The listeners' TLS configuration (one certificate for all of them).
#[derive(Clone)]
struct Tls(axum_server::tls_rustls::RustlsConfig);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl Handle {
    /// Stops the server and waits for it.
    pub async fn stop(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        let mut result = Ok(());
        for task in self.tasks {
            let r = task.await.unwrap_or(Ok(()));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Also serves the apps' URLs (and nothing else) on `listen`, over the same scheme and
    /// certificate, until the simulator stops. Returns its URL.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn serve_ingress(&mut self, listen: SocketAddr) -> Result<String, ServeError> {
        let listener = bind(listen)?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
        let app = ingress_router(self.sim.clone()).into_make_service();
        let task = spawn_server(listener, self.tls.clone(), &self.shutdown, app)?;
        self.tasks.push(task);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        self.ingress_url = Some(url.clone());
        Ok(url)
    }
}

/// Errors from starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The self-signed certificate could not be made or written.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// Starts serving `sim` in the background; plain HTTP, or HTTPS with a fresh certificate.
///
/// # Errors
/// The address cannot be bound, or the certificate cannot be made or written.
pub async fn serve(sim: Arc<Sim>, options: &ServeOptions) -> Result<Handle, ServeError> {
    let listener = bind(options.listen)?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: options.listen,
        source,
    })?;
    let shutdown = CancellationToken::new();
    let tls = if options.tls {
        Some(Tls(tls_config(&options.tls_cert).await?))
    } else {
        None
    };
    let app = router(sim.clone()).into_make_service();
    let task = spawn_server(listener, tls.clone(), &shutdown, app)?;
    let scheme = if options.tls { "https" } else { "http" };
    Ok(Handle {
        base_url: format!("{scheme}://{addr}"),
        addr,
        sim,
        shutdown,
        ingress_url: None,
        tls,
        tasks: vec![task],
    })
}

fn bind(listen: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let error = |source| ServeError::Bind {
        addr: listen,
        source,
    };
    let listener = std::net::TcpListener::bind(listen).map_err(error)?;
    listener.set_nonblocking(true).map_err(error)?;
    Ok(listener)
}

/// Serves `app` on `listener` until `shutdown` (then gracefully, for at most 2 s).
fn spawn_server(
    listener: std::net::TcpListener,
    tls: Option<Tls>,
    shutdown: &CancellationToken,
    app: axum::routing::IntoMakeService<Router>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, ServeError> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    let token = shutdown.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(2)));
    });
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    Ok(match tls {
        Some(Tls(config)) => {
            let server = axum_server::from_tcp_rustls(listener, config)
                .map_err(|e| ServeError::Tls(e.to_string()))?;
            tokio::spawn(server.handle(handle).serve(app))
        }
        None => {
            let server = axum_server::from_tcp(listener)
                .map_err(|source| ServeError::Bind { addr, source })?;
            tokio::spawn(server.handle(handle).serve(app))
        }
    })
}

/// A self-signed certificate for the loopback names, its PEM written to `cert_path`.
async fn tls_config(
    cert_path: &std::path::Path,
) -> Result<axum_server::tls_rustls::RustlsConfig, ServeError> {
    let names = vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
    ];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| ServeError::Tls(e.to_string()))?;
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    tokio::fs::write(cert_path, &cert_pem)
        .await
        .map_err(|e| ServeError::Tls(format!("cannot write {}: {e}", cert_path.display())))?;
    axum_server::tls_rustls::RustlsConfig::from_pem(cert_pem.into_bytes(), key_pem.into_bytes())
        .await
        .map_err(|e| ServeError::Tls(e.to_string()))
}

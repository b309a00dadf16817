//! Token endpoints and token checks.
//!
//! Tokens are shaped like Entra's JWTs (`header.claims.signature`, base64url) because some
//! clients read claims from them (the az CLI reads `tid` and `oid` after `az login --identity`).
//! The signature is random: the simulator accepts exactly the tokens it issued, until they
//! expire, so a token from anywhere else gets a 401 as it would from Azure.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::store::{TENANT_ID, splitmix};
use super::{Sim, json_response};
use crate::time::Millis;

/// Token lifetime (Entra issues 60-90 minutes).
pub const TOKEN_LIFETIME_MS: Millis = 3_600_000;

/// The object id of the simulated managed identity.
pub const PRINCIPAL_ID: &str = "5b3c2a1d-0000-4000-8000-00000000c0de";

/// What a token is good for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// An Entra access token for an audience (ARM: `https://management.azure.com/`, ...).
    Aad {
        /// The `aud` claim.
        audience: String,
    },
    /// An ACR refresh token for one registry.
    AcrRefresh {
        /// The registry login server.
        service: String,
    },
    /// An ACR access token for some scopes of one registry.
    AcrAccess {
        /// The registry login server.
        service: String,
        /// Granted scopes (`repository:NAME:ACTION[,ACTION]`).
        scopes: Vec<String>,
    },
}

/// Tokens issued and not yet expired.
#[derive(Debug, Default)]
pub struct Tokens {
    issued: HashMap<String, (Grant, Millis)>,
    counter: u64,
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

impl Tokens {
    fn mint(&mut self, claims: serde_json::Value, grant: Grant, now: Millis) -> String {
        self.counter += 1;
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": "simulator"});
        let sig: Vec<u8> = (0..4u64)
            .flat_map(|i| splitmix(self.counter * 7 + i + now as u64).to_le_bytes())
            .collect();
        let token = format!(
            "{}.{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes()),
            b64url(&sig)
        );
        let expires = now + TOKEN_LIFETIME_MS;
        self.issued.retain(|_, (_, exp)| *exp > now);
        self.issued.insert(token.clone(), (grant, expires));
        token
    }

    /// Issues an Entra access token for `audience`.
    pub fn issue_aad(&mut self, audience: &str, now: Millis) -> String {
        let secs = now / 1000;
        let claims = json!({
            "aud": audience, "iss": format!("https://sts.windows.net/{TENANT_ID}/"),
            "iat": secs, "nbf": secs, "exp": secs + TOKEN_LIFETIME_MS / 1000,
            "tid": TENANT_ID, "oid": PRINCIPAL_ID, "sub": PRINCIPAL_ID,
            "appid": "a1b2c3d4-0000-4000-8000-0000000000a1", "idtyp": "app",
            "xms_mirid": "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-ops/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-aca-reconciler",
        });
        self.mint(
            claims,
            Grant::Aad {
                audience: audience.to_owned(),
            },
            now,
        )
    }

    /// Issues an ACR refresh or access token.
    pub fn issue_acr(&mut self, grant: Grant, now: Millis) -> String {
        let secs = now / 1000;
        let (service, access) = match &grant {
            Grant::AcrRefresh { service } => (service.clone(), json!([])),
            Grant::AcrAccess { service, scopes } => (service.clone(), json!(scopes)),
            Grant::Aad { audience } => (audience.clone(), json!([])),
        };
        let claims = json!({"iss": "Azure Container Registry", "aud": service, "iat": secs, "exp": secs + TOKEN_LIFETIME_MS / 1000, "access": access, "tenant": TENANT_ID});
        self.mint(claims, grant, now)
    }

    /// Every token issued so far (for tests that look for leaks).
    pub fn issued(&self) -> Vec<String> {
        self.issued.keys().cloned().collect()
    }

    /// The grant of a token that this simulator issued and that has not expired.
    pub fn check(&self, token: &str, now: Millis) -> Option<&Grant> {
        self.issued
            .get(token)
            .filter(|(_, exp)| *exp > now)
            .map(|(g, _)| g)
    }
}

/// `Authorization: Bearer TOKEN` -> TOKEN.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Is `audience` one that ARM accepts? Azure's ARM audiences, or the simulator's own URL
/// (a client pointed at `--arm-endpoint http://127.0.0.1:PORT` asks for that audience).
pub fn is_arm_audience(audience: &str, own_base: &str) -> bool {
    let a = audience.trim_end_matches('/').to_ascii_lowercase();
    let own = own_base.trim_end_matches('/').to_ascii_lowercase();
    let localhost_alias = own.replace("127.0.0.1", "localhost");
    matches!(
        a.as_str(),
        "https://management.azure.com" | "https://management.core.windows.net"
    ) || a == own
        || a == localhost_alias
}

fn scope_to_resource(scope: &str) -> String {
    scope
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches("/.default")
        .to_owned()
}

/// Container Apps' managed-identity endpoint (`IDENTITY_ENDPOINT`, api-version 2019-08-01):
/// `GET ?resource=...&api-version=2019-08-01` with `X-IDENTITY-HEADER` (N§9).
pub async fn msi_token(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let header_ok = headers
        .get("x-identity-header")
        .and_then(|h| h.to_str().ok())
        == Some(sim.identity_header.as_str());
    if !header_ok {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"statusCode": 401, "message": "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER."}),
        );
    }
    if q.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"statusCode": 400, "message": "api-version must be 2019-08-01."}),
        );
    }
    let Some(resource) = q.get("resource").filter(|r| !r.is_empty()) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"statusCode": 400, "message": "The resource parameter is required."}),
        );
    };
    let now = sim.clock.now();
    let token = sim.tokens().issue_aad(resource, now);
    let client_id = q
        .get("client_id")
        .cloned()
        .unwrap_or_else(|| "a1b2c3d4-0000-4000-8000-0000000000a1".to_owned());
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            // `expires_on` is a string of epoch seconds (N§9).
            "expires_on": ((now + TOKEN_LIFETIME_MS) / 1000).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }),
    )
}

/// Entra's token endpoint (`POST /{tenant}/oauth2/v2.0/token`) for client credentials: a client
/// secret, or a federated assertion (workload identity). Any client id is accepted.
pub async fn entra_token(
    State(sim): State<Arc<Sim>>,
    Path(_tenant): Path<String>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let error = |code: &str, description: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": code, "error_description": description}),
        )
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return error(
            "unsupported_grant_type",
            "AADSTS70003: only client_credentials is supported by the simulator.",
        );
    }
    if !form.contains_key("client_secret") && !form.contains_key("client_assertion") {
        return error(
            "invalid_client",
            "AADSTS7000216: client_assertion or client_secret is required.",
        );
    }
    let Some(scope) = form.get("scope") else {
        return error("invalid_scope", "AADSTS1002012: the scope is required.");
    };
    let now = sim.clock.now();
    let token = sim.tokens().issue_aad(&scope_to_resource(scope), now);
    json_response(
        StatusCode::OK,
        &json!({"token_type": "Bearer", "expires_in": TOKEN_LIFETIME_MS / 1000, "ext_expires_in": TOKEN_LIFETIME_MS / 1000, "access_token": token}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_the_rfc_vectors() {
        assert_eq!(b64url(b""), "");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(b"foob"), "Zm9vYg");
        assert_eq!(b64url(b"fooba"), "Zm9vYmE");
        assert_eq!(b64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn only_issued_unexpired_tokens_pass() {
        let mut t = Tokens::default();
        let token = t.issue_aad("https://management.azure.com/", 1_000);
        assert!(t.check(&token, 2_000).is_some());
        assert!(t.check(&token, 1_000 + TOKEN_LIFETIME_MS).is_none());
        assert!(t.check("eyJhbGciOi.forged.token", 2_000).is_none());
    }

    #[test]
    fn arm_audiences() {
        assert!(is_arm_audience(
            "https://management.azure.com/",
            "http://127.0.0.1:1"
        ));
        assert!(is_arm_audience(
            "https://management.core.windows.net/",
            "http://127.0.0.1:1"
        ));
        assert!(is_arm_audience(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080"
        ));
        assert!(is_arm_audience(
            "http://localhost:8080/",
            "http://127.0.0.1:8080"
        ));
        assert!(!is_arm_audience(
            "https://vault.azure.net",
            "http://127.0.0.1:8080"
        ));
    }
}

//! The Azure Container Registry data-plane client (N§1.3): the token exchange, tag listing
//! newest first across `Link` pages, untag, and manifest delete.
//!
//! Authentication: the ARM token is exchanged at `/oauth2/exchange` for a refresh token per
//! registry, which buys access tokens per scope (`repository:NAME:metadata_read`,
//! `repository:NAME:delete`) at `/oauth2/token`. Both are cached; a 401 drops the cache once.
//!
//! Registries are reached at their login server: over https, or plain http for a loopback
//! host, or wherever `--registry-endpoint LOGIN=URL` sends them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use tokio::time::Instant;

use crate::arm::limiter::{Kind, Limiter, Limits};
use crate::arm::{
    self, Error, RetryPolicy, USER_AGENT, check_endpoint, is_loopback_host, with_retries,
};
use crate::auth::{SecretToken, TokenSource};
use crate::time::Millis;

/// How long a refresh or access token is reused. ACR's tokens live longer (about an hour and
/// three hours [assumption: ACR documents no lifetime]); a 401 refreshes early anyway.
const TOKEN_REUSE: Duration = Duration::from_secs(20 * 60);

/// Largest page asked for (ACR caps pages at 1000 whatever `n` says, N§1.3).
pub const PAGE_SIZE: usize = 100;

/// A tag, as the controller needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    /// Tag name.
    pub name: String,
    /// Manifest digest it points at.
    pub digest: String,
    /// Creation time.
    pub created: Option<Millis>,
    /// Last update time (what `keepLast` sorts by, N§1.3).
    pub last_update: Option<Millis>,
    /// `changeableAttributes.deleteEnabled`; a locked tag is never deleted.
    pub delete_enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTag {
    name: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    created_time: Option<String>,
    #[serde(default)]
    last_update_time: Option<String>,
    #[serde(default)]
    changeable_attributes: Option<RawAttributes>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAttributes {
    #[serde(default = "yes")]
    delete_enabled: bool,
}

fn yes() -> bool {
    true
}

type Cache = Mutex<HashMap<(String, String), (SecretToken, Instant)>>;

/// Timeout of one data-plane exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The ACR client.
#[derive(Debug)]
pub struct AcrClient {
    http: reqwest::Client,
    tokens: Arc<TokenSource>,
    endpoints: HashMap<String, String>,
    retry: RetryPolicy,
    /// (registry, "" for the refresh token | scope) -> token.
    cache: Cache,
    fence: std::sync::OnceLock<crate::lease::Fence>,
    /// Per login server: the registry's buckets, closed by a 429 until its `Retry-After`.
    limiter: Limiter,
}

impl AcrClient {
    /// A client. `endpoints` are `--registry-endpoint LOGIN=URL` overrides.
    ///
    /// # Errors
    /// An override is not an acceptable URL.
    pub fn new(tokens: Arc<TokenSource>, endpoints: &[(String, String)]) -> Result<Self, Error> {
        let mut map = HashMap::new();
        for (login, url) in endpoints {
            check_endpoint(url, &format!("--registry-endpoint for {login}"))?;
            map.insert(
                login.to_ascii_lowercase(),
                url.trim_end_matches('/').to_owned(),
            );
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            tokens,
            endpoints: map,
            retry: RetryPolicy::default(),
            cache: Mutex::new(HashMap::new()),
            fence: std::sync::OnceLock::new(),
            limiter: Limiter::new(Limits::acr()),
        })
    }

    /// Deletes only while `fence` allows (see [`crate::arm::ArmClient::set_fence`]).
    pub fn set_fence(&self, fence: crate::lease::Fence) {
        let _ = self.fence.set(fence);
    }

    /// Where `login`'s data plane is: an override, or the login server itself.
    pub fn base(&self, login: &str) -> String {
        let login = login.to_ascii_lowercase();
        if let Some(url) = self.endpoints.get(&login) {
            return url.clone();
        }
        let host = login.rsplit_once(':').map_or(login.as_str(), |(h, _)| h);
        let scheme = if is_loopback_host(host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{login}")
    }

    fn cached(&self, login: &str, scope: &str) -> Option<SecretToken> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(&(login.to_owned(), scope.to_owned()))
            .filter(|(_, at)| at.elapsed() < TOKEN_REUSE)
            .map(|(t, _)| t.clone())
    }

    fn remember(&self, login: &str, scope: &str, token: &SecretToken) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.insert(
            (login.to_owned(), scope.to_owned()),
            (token.clone(), Instant::now()),
        );
    }

    fn forget(&self, login: &str) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.retain(|(l, _), _| l != login);
    }

    async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        field: &str,
    ) -> Result<SecretToken, Error> {
        let path = arm::path_of(url);
        let transport = |e: reqwest::Error| Error::Transport {
            method: "POST".to_owned(),
            resource: path.clone(),
            message: arm::without_url(&e),
        };
        let resp = self
            .http
            .post(url)
            .form(form)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport)?;
        if status >= 400 {
            let (code, message) = arm::parse_error_body(&body);
            return Err(Error::Status {
                method: "POST".to_owned(),
                resource: path,
                status,
                code,
                message,
                hint: "; the registry refused the identity's token: assign it a role on the registry (AcrPull to read tags, AcrDelete to delete them)".to_owned(),
                request_id: arm::header(&headers, "x-ms-request-id"),
                correlation_id: arm::header(&headers, "x-ms-correlation-request-id"),
                retry_after: arm::retry_after(&headers),
            });
        }
        parse_token(&path, &body, field)
    }

    /// An access token for `scope` on `login`, cached.
    async fn access_token(&self, login: &str, scope: &str) -> Result<SecretToken, Error> {
        if let Some(t) = self.cached(login, scope) {
            return Ok(t);
        }
        let base = self.base(login);
        let refresh = match self.cached(login, "") {
            Some(t) => t,
            None => {
                let aad = self.tokens.token().await?;
                let form = [
                    ("grant_type", "access_token"),
                    ("service", login),
                    ("access_token", aad.expose()),
                ];
                let t = self
                    .post_form(&format!("{base}/oauth2/exchange"), &form, "refresh_token")
                    .await?;
                self.remember(login, "", &t);
                t
            }
        };
        let form = [
            ("grant_type", "refresh_token"),
            ("service", login),
            ("scope", scope),
            ("refresh_token", refresh.expose()),
        ];
        let access = self
            .post_form(&format!("{base}/oauth2/token"), &form, "access_token")
            .await?;
        self.remember(login, scope, &access);
        Ok(access)
    }

    /// One data-plane request with the token for `scope`, retried; a 401 refreshes tokens once.
    async fn send(
        &self,
        login: &str,
        scope: &str,
        method: Method,
        url: &str,
    ) -> Result<(u16, reqwest::header::HeaderMap, axum::body::Bytes), Error> {
        let path = arm::path_of(url);
        let what = format!("{method} {path}");
        let mut refreshed = false;
        let kind = if method == Method::GET {
            Kind::Read
        } else {
            Kind::Write
        };
        let registry = login.to_ascii_lowercase();
        loop {
            let result = with_retries(&self.retry, Error::is_retryable, &what, || async {
                self.limiter.acquire(&registry, kind).await;
                // The token exchange talks to the registry too: not while it is closed.
                self.limiter.wait_open(&registry, kind).await;
                let token = self.access_token(login, scope).await?;
                // Checked again right before the request leaves (see `arm::limiter`).
                self.limiter.wait_open(&registry, kind).await;
                let transport = |e: reqwest::Error| Error::Transport { method: method.to_string(), resource: path.clone(), message: arm::without_url(&e) };
                let timeout = if method == Method::GET {
                    REQUEST_TIMEOUT
                } else {
                    crate::lease::write_timeout(self.fence.get(), REQUEST_TIMEOUT)?
                };
                let resp = self
                    .http
                    .request(method.clone(), url)
                    .bearer_auth(token.expose())
                    .header("x-ms-client-request-id", arm::new_request_id())
                    .timeout(timeout)
                    .send()
                    .await
                    .map_err(transport)?;
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = resp.bytes().await.map_err(transport)?;
                tracing::debug!(method = %method, path = %path, status, "ACR");
                if status == 429 {
                    let wait = arm::retry_after(&headers).unwrap_or(arm::DEFAULT_RETRY_AFTER);
                    self.limiter.observe_throttled(&registry, kind, wait);
                }
                if status >= 400 && status != 404 {
                    let (code, message) = arm::parse_error_body(&body);
                    let hint = match status {
                        401 | 403 => format!("; the identity needs a role on registry {login} that grants `{scope}` (AcrPull to read tags, AcrDelete to delete)"),
                        405 => "; the tag or image is locked (deleteEnabled: false)".to_owned(),
                        _ => String::new(),
                    };
                    return Err(Error::Status {
                        method: method.to_string(),
                        resource: path.clone(),
                        status,
                        code,
                        message,
                        hint,
                        request_id: arm::header(&headers, "x-ms-request-id"),
                        correlation_id: arm::header(&headers, "x-ms-correlation-request-id"),
                        retry_after: arm::retry_after(&headers),
                    });
                }
                Ok((status, headers, body))
            })
            .await;
            match result {
                Err(e) if e.status() == Some(401) && !refreshed => {
                    refreshed = true;
                    self.forget(login);
                }
                other => return other,
            }
        }
    }

    /// Every tag of `repo`, newest first by last update time, across all `Link` pages.
    ///
    /// # Errors
    /// Any page failed (then nothing is returned); a missing repository is an error too.
    pub async fn list_tags(&self, login: &str, repo: &str) -> Result<Vec<TagInfo>, Error> {
        let scope = format!("repository:{repo}:metadata_read");
        let mut url = format!(
            "{}/acr/v1/{repo}/_tags?orderby=timedesc&n={PAGE_SIZE}",
            self.base(login)
        );
        let mut tags = Vec::new();
        let mut pages = 0;
        loop {
            pages += 1;
            let (status, headers, body) = self.send(login, &scope, Method::GET, &url).await?;
            if status == 404 {
                let (code, message) = arm::parse_error_body(&body);
                return Err(Error::Status {
                    method: "GET".to_owned(),
                    resource: arm::path_of(&url),
                    status,
                    code,
                    message,
                    hint: format!(
                        "; check the repository name `{repo}` in the RegistryRetention document"
                    ),
                    request_id: None,
                    correlation_id: None,
                    retry_after: None,
                });
            }
            tags.extend(parse_tags(&url, &body)?);
            // Follow `Link` verbatim, resolved against this page's URL (N§1.3).
            match next_page(&url, &headers)? {
                Some(_) if pages >= 10_000 => {
                    return Err(Error::Decode {
                        resource: arm::path_of(&url),
                        message: "more than 10,000 pages of tags".to_owned(),
                    });
                }
                Some(next) => url = next,
                None => return Ok(tags),
            }
        }
    }

    /// Every repository of the registry (for `repositories: ["*"]`).
    ///
    /// # Errors
    /// The listing failed.
    pub async fn list_repositories(&self, login: &str) -> Result<Vec<String>, Error> {
        let mut url = format!("{}/acr/v1/_catalog?n=1000", self.base(login));
        let mut repos = Vec::new();
        loop {
            let (_, headers, body) = self
                .send(login, "registry:catalog:*", Method::GET, &url)
                .await?;
            repos.extend(parse_catalog(&url, &body)?);
            match next_page(&url, &headers)? {
                Some(next) => url = next,
                None => return Ok(repos),
            }
        }
    }

    /// Removes a tag (the image stays). `Ok(false)`: it was already gone.
    ///
    /// # Errors
    /// The registry refused (a locked tag is 405).
    pub async fn delete_tag(&self, login: &str, repo: &str, tag: &str) -> Result<bool, Error> {
        let url = format!("{}/acr/v1/{repo}/_tags/{tag}", self.base(login));
        self.delete(login, repo, &url).await
    }

    /// Deletes an image by digest (and every tag on it). `Ok(false)`: it was already gone.
    ///
    /// # Errors
    /// The registry refused.
    pub async fn delete_manifest(
        &self,
        login: &str,
        repo: &str,
        digest: &str,
    ) -> Result<bool, Error> {
        let url = format!("{}/v2/{repo}/manifests/{digest}", self.base(login));
        self.delete(login, repo, &url).await
    }

    /// DELETE with the repository's delete scope; a 404 means it was already gone.
    async fn delete(&self, login: &str, repo: &str, url: &str) -> Result<bool, Error> {
        let scope = format!("repository:{repo}:delete");
        let (status, ..) = self.send(login, &scope, Method::DELETE, url).await?;
        Ok(status != 404)
    }
}

/// One page of `GET /acr/v1/{repo}/_tags` (fetched from `url`).
///
/// # Errors
/// The body is not a tag list.
pub fn parse_tags(url: &str, body: &[u8]) -> Result<Vec<TagInfo>, Error> {
    #[derive(Deserialize)]
    struct Page {
        #[serde(default)]
        tags: Vec<RawTag>,
    }
    let page: Page = serde_json::from_slice(body).map_err(|e| Error::Decode {
        resource: arm::path_of(url),
        message: e.to_string(),
    })?;
    Ok(page
        .tags
        .into_iter()
        .map(|t| TagInfo {
            created: t.created_time.as_deref().and_then(crate::time::parse),
            last_update: t.last_update_time.as_deref().and_then(crate::time::parse),
            delete_enabled: t.changeable_attributes.is_none_or(|a| a.delete_enabled),
            name: t.name,
            digest: t.digest,
        })
        .collect())
}

/// One page of `GET /acr/v1/_catalog` (fetched from `url`).
///
/// # Errors
/// The body is not a catalog.
pub fn parse_catalog(url: &str, body: &[u8]) -> Result<Vec<String>, Error> {
    #[derive(Deserialize)]
    struct Catalog {
        #[serde(default)]
        repositories: Vec<String>,
    }
    serde_json::from_slice::<Catalog>(body)
        .map(|c| c.repositories)
        .map_err(|e| Error::Decode {
            resource: arm::path_of(url),
            message: e.to_string(),
        })
}

/// The token `field` (`refresh_token`, `access_token`) of a token exchange's answer.
///
/// # Errors
/// The body is not JSON, or has no such string field.
pub fn parse_token(path: &str, body: &[u8], field: &str) -> Result<SecretToken, Error> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| Error::Decode {
        resource: path.to_owned(),
        message: e.to_string(),
    })?;
    v.get(field)
        .and_then(serde_json::Value::as_str)
        .map(SecretToken::new)
        .ok_or_else(|| Error::Decode {
            resource: path.to_owned(),
            message: format!("no `{field}` in the answer"),
        })
}

/// The next page from a `Link` header, resolved against this page's URL (N§1.3: follow it
/// verbatim). An unreadable header is an error, never a silently shorter listing.
pub fn next_page(url: &str, headers: &reqwest::header::HeaderMap) -> Result<Option<String>, Error> {
    let Some(target) = arm::header(headers, "link").and_then(|l| next_link(&l)) else {
        return Ok(None);
    };
    let next = reqwest::Url::parse(url)
        .and_then(|u| u.join(&target))
        .map_err(|e| Error::Decode {
            resource: arm::path_of(url),
            message: format!("unreadable Link header: {e}"),
        })?;
    // The registry's token goes with the next request: never to another host.
    if !arm::same_origin(next.as_str(), url) {
        return Err(Error::Decode {
            resource: arm::path_of(url),
            message: format!(
                "the Link header names another host ({}); refusing to send the registry token there",
                next.origin().ascii_serialization()
            ),
        });
    }
    Ok(Some(next.to_string()))
}

/// The target of `<...>; rel="next"` in a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',')
        .find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part[start..].find('>')? + start;
            Some(part[start..end].to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"</acr/v1/web/_tags?last=v1&n=2&orderby=timedesc>; rel="next""#),
            Some("/acr/v1/web/_tags?last=v1&n=2&orderby=timedesc".into())
        );
        assert_eq!(
            next_link(r#"<https://x/a>; rel="prev", </b>; rel="next""#),
            Some("/b".into())
        );
        assert_eq!(next_link(r#"</a>; rel="prev""#), None);
    }

    #[test]
    fn a_link_to_another_host_is_refused() {
        let page = "https://cr.example.io/acr/v1/web/_tags?n=100";
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "link",
            reqwest::header::HeaderValue::from_static(r#"<https://evil.example/x>; rel="next""#),
        );
        let err = next_page(page, &headers).unwrap_err();
        assert!(err.to_string().contains("another host"), "{err}");
        headers.insert(
            "link",
            reqwest::header::HeaderValue::from_static(r#"</acr/v1/web/_tags?last=a>; rel="next""#),
        );
        assert_eq!(
            next_page(page, &headers).unwrap().as_deref(),
            Some("https://cr.example.io/acr/v1/web/_tags?last=a")
        );
    }
}

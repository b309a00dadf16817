//! Reaching Container Apps' own URLs: an app's (`<app>.<domain>`), a revision's
//! (`properties.fqdn`) and a label's (`<app>---<label>.<domain>`), e.g. to probe a canary's
//! `/health` before it gets traffic.
//!
//! `--ingress-endpoint DOMAIN=URL` (repeatable) sends the requests for `DOMAIN` and every host
//! under it to `URL` instead, with the app's host in `Host`, as `--registry-endpoint` does for
//! a registry: this is how a client reaches the simulator's ingress (`simulate` prints the
//! mapping). Without a mapping, the URL is used as it is.

use reqwest::Url;

/// Parses `DOMAIN=URL` (the flag's value): the domain lower-cased, the URL https, or http to a
/// loopback host.
///
/// # Errors
/// Anything else, with what to write instead.
pub fn parse_endpoint(s: &str) -> Result<(String, String), String> {
    let example =
        "write DOMAIN=URL, e.g. xshopaiprod.uksouth.azurecontainerapps.io=http://127.0.0.1:8081";
    let Some((domain, url)) = s.split_once('=') else {
        return Err(format!("`{s}`: {example}"));
    };
    let domain = domain.trim().trim_matches('.').to_ascii_lowercase();
    let shaped = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !shaped {
        return Err(format!(
            "`{s}`: `{domain}` is not a domain (an environment's default domain, no scheme or path); {example}"
        ));
    }
    let checked = crate::arm::check_endpoint(url.trim(), "the ingress endpoint")
        .map_err(|e| format!("`{s}`: {e}"))?;
    Ok((domain, checked.to_string()))
}

/// The `--ingress-endpoint` mappings.
#[derive(Debug, Clone, Default)]
pub struct IngressEndpoints {
    map: Vec<(String, Url)>,
}

impl IngressEndpoints {
    /// From the flag's parsed pairs.
    ///
    /// # Errors
    /// A pair that [`parse_endpoint`] would refuse.
    pub fn new(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut map = Vec::new();
        for (domain, url) in pairs {
            let (domain, url) = parse_endpoint(&format!("{domain}={url}"))?;
            let url = Url::parse(&url).map_err(|e| format!("`{url}`: {e}"))?;
            map.push((domain, url));
        }
        // The longest domain wins when one is under another.
        map.sort_by_key(|(d, _)| std::cmp::Reverse(d.len()));
        Ok(Self { map })
    }

    /// Where a request for `url` goes: the URL to connect to, and the `Host` to send when it
    /// differs from that URL's.
    ///
    /// # Errors
    /// `url` is not a URL.
    pub fn resolve(&self, url: &str) -> Result<(Url, Option<String>), String> {
        let parsed = Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let mapped = self
            .map
            .iter()
            .find(|(d, _)| host == *d || host.ends_with(&format!(".{d}")));
        let Some((_, base)) = mapped else {
            return Ok((parsed, None));
        };
        let mut target = base.clone();
        let base_path = base.path().trim_end_matches('/');
        target.set_path(&format!("{base_path}{}", parsed.path()));
        target.set_query(parsed.query());
        Ok((target, Some(host)))
    }

    /// `GET url`, through its mapping: the status and the body.
    ///
    /// # Errors
    /// `url` is not a URL, or nothing answered.
    pub async fn get(&self, client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
        let (target, host) = self.resolve(url)?;
        let mut request = client.get(target.clone());
        if let Some(h) = host {
            request = request.header(reqwest::header::HOST, h);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("GET {url} (at {target}): {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| format!("GET {url} (at {target}): {e}"))?;
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_map_every_host_under_their_domain() {
        let e = IngressEndpoints::new(&[(
            "Env.uksouth.azurecontainerapps.io".into(),
            "http://127.0.0.1:8081".into(),
        )])
        .unwrap();
        let (url, host) = e
            .resolve("https://ca-web---blue.env.uksouth.azurecontainerapps.io/health?x=1")
            .unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8081/health?x=1");
        assert_eq!(
            host.as_deref(),
            Some("ca-web---blue.env.uksouth.azurecontainerapps.io")
        );
        let (url, host) = e.resolve("https://example.com/health").unwrap();
        assert_eq!(url.as_str(), "https://example.com/health");
        assert_eq!(host, None);
    }

    #[test]
    fn bad_endpoints_say_what_to_write() {
        for bad in [
            "no-equals",
            "=http://127.0.0.1:1",
            "https://env.io=http://127.0.0.1:1",
            "env.io=http://10.0.0.1:80",
            "env.io=ftp://127.0.0.1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_endpoint("ENV.io.=http://localhost:8081").ok(),
            Some(("env.io".into(), "http://localhost:8081/".into()))
        );
    }
}

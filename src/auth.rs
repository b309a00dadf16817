//! Tokens for ARM (and, through ACR's exchange, for registries).
//!
//! The credential is chosen as contract section 2 says, first match wins:
//!
//! 1. `AZURE_FEDERATED_TOKEN_FILE`: workload identity (AKS, GitHub OIDC);
//! 2. `AZURE_CLIENT_SECRET` with `AZURE_TENANT_ID` and `AZURE_CLIENT_ID`: a service principal;
//! 3. `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` (Container Apps, App Service), or
//!    `AZURE_CLIENT_ID` alone (a user-assigned identity through IMDS): managed identity;
//! 4. an `az` on the PATH: the Azure CLI's login;
//! 5. otherwise managed identity through IMDS (an Azure VM).
//!
//! `--credential` names one explicitly instead. The token's scope is `<arm-endpoint>/.default`.
//! azure_identity caches tokens and refreshes them before they expire. A token is a
//! [`SecretToken`], whose `Debug` and `Display` never show it.

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use clap::ValueEnum;

use crate::arm::Error;

/// A sovereign cloud: its ARM endpoint and its Entra authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Cloud {
    /// Azure public cloud.
    #[default]
    Public,
    /// Azure operated by 21Vianet (China).
    China,
    /// Azure Government (US).
    Usgov,
}

impl Cloud {
    /// The ARM endpoint (learn.microsoft.com/azure/azure-government/compare-azure-government-global-azure,
    /// .../china/resources-developer-guide).
    pub fn arm_endpoint(self) -> &'static str {
        match self {
            Cloud::Public => "https://management.azure.com",
            Cloud::China => "https://management.chinacloudapi.cn",
            Cloud::Usgov => "https://management.usgovcloudapi.net",
        }
    }

    fn configuration(self) -> azure_core::cloud::CloudConfiguration {
        use azure_core::cloud::CloudConfiguration;
        match self {
            Cloud::Public => CloudConfiguration::AzurePublic,
            Cloud::China => CloudConfiguration::AzureChina,
            Cloud::Usgov => CloudConfiguration::AzureGovernment,
        }
    }
}

/// Which credential to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum CredentialChoice {
    /// The first of the chain that the environment supports.
    #[default]
    Auto,
    /// Workload identity (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`).
    Workload,
    /// Service principal secret (`AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`).
    Secret,
    /// Managed identity (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, else IMDS; `AZURE_CLIENT_ID`
    /// picks a user-assigned identity).
    Managed,
    /// The Azure CLI's login (`az login`).
    Cli,
}

/// The credential a choice resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// Workload identity federation.
    Workload,
    /// Client secret.
    Secret,
    /// Managed identity through `IDENTITY_ENDPOINT`.
    ManagedEndpoint,
    /// Managed identity through IMDS.
    ManagedImds,
    /// Azure CLI.
    Cli,
}

impl CredentialKind {
    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            CredentialKind::Workload => "workload identity",
            CredentialKind::Secret => "service principal (client secret)",
            CredentialKind::ManagedEndpoint => "managed identity (IDENTITY_ENDPOINT)",
            CredentialKind::ManagedImds => "managed identity (IMDS)",
            CredentialKind::Cli => "Azure CLI",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            CredentialKind::Workload => {
                "; check AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID, AZURE_CLIENT_ID and the federated credential's subject"
            }
            CredentialKind::Secret => {
                "; check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (expired secret?)"
            }
            CredentialKind::ManagedEndpoint => {
                "; is a managed identity assigned to this container app (and AZURE_CLIENT_ID right for a user-assigned one)?"
            }
            CredentialKind::ManagedImds => {
                "; outside Azure, run `az login` or set a service principal's AZURE_* variables"
            }
            CredentialKind::Cli => {
                "; run `az login` (and `az account set`), or set a service principal's AZURE_* variables"
            }
        }
    }
}

/// Picks the credential kind from the environment (`var` reads a variable; `has_az` tells
/// whether `az` is on the PATH). Pure, so that the chain is testable.
///
/// # Errors
/// A choice whose variables are missing, naming them.
pub fn select(
    choice: CredentialChoice,
    var: &dyn Fn(&str) -> Option<String>,
    has_az: bool,
) -> Result<CredentialKind, String> {
    let set = |k: &str| var(k).is_some_and(|v| !v.is_empty());
    let need = |kind: CredentialKind, vars: &[&str]| {
        let missing: Vec<&str> = vars.iter().copied().filter(|v| !set(v)).collect();
        if missing.is_empty() {
            Ok(kind)
        } else {
            Err(format!(
                "the {} credential needs {} to be set",
                kind.name(),
                missing.join(", ")
            ))
        }
    };
    match choice {
        CredentialChoice::Workload => need(
            CredentialKind::Workload,
            &[
                "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_TENANT_ID",
                "AZURE_CLIENT_ID",
            ],
        ),
        CredentialChoice::Secret => need(
            CredentialKind::Secret,
            &["AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_CLIENT_ID"],
        ),
        CredentialChoice::Managed if set("IDENTITY_ENDPOINT") => {
            need(CredentialKind::ManagedEndpoint, &["IDENTITY_HEADER"])
        }
        CredentialChoice::Managed => Ok(CredentialKind::ManagedImds),
        CredentialChoice::Cli => Ok(CredentialKind::Cli),
        CredentialChoice::Auto => {
            if set("AZURE_FEDERATED_TOKEN_FILE") {
                select(CredentialChoice::Workload, var, has_az)
            } else if set("AZURE_CLIENT_SECRET") {
                select(CredentialChoice::Secret, var, has_az)
            } else if set("IDENTITY_ENDPOINT") {
                select(CredentialChoice::Managed, var, has_az)
            } else if set("AZURE_CLIENT_ID") {
                Ok(CredentialKind::ManagedImds)
            } else if has_az {
                Ok(CredentialKind::Cli)
            } else {
                Ok(CredentialKind::ManagedImds)
            }
        }
    }
}

/// An access token. Its `Debug` and `Display` are redacted; only [`SecretToken::expose`]
/// reveals it, to put it in an `Authorization` header.
#[derive(Clone)]
pub struct SecretToken(String);

impl SecretToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for a request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(redacted)")
    }
}

impl fmt::Display for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

enum Source {
    Azure(Arc<dyn TokenCredential>),
    Endpoint(IdentityEndpoint),
}

/// A managed-identity endpoint spoken to directly (Container Apps' and App Service's protocol,
/// api-version 2019-08-01: `GET ?resource=...` with `X-IDENTITY-HEADER`), for an endpoint given
/// explicitly rather than through the environment: the embedded simulator's (`--simulate`).
/// The token is cached until five minutes before it expires.
struct IdentityEndpoint {
    http: reqwest::Client,
    url: String,
    header: SecretToken,
    cached: tokio::sync::Mutex<Option<(SecretToken, i64)>>,
}

impl IdentityEndpoint {
    async fn token(&self, resource: &str) -> Result<SecretToken, String> {
        let mut cached = self.cached.lock().await;
        let now = crate::time::Clock::new().now() / 1000;
        if let Some((token, expires)) = cached.as_ref()
            && *expires - 300 > now
        {
            return Ok(token.clone());
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            access_token: String,
            #[serde(default)]
            expires_on: serde_json::Value,
        }
        let resp = self
            .http
            .get(&self.url)
            .query(&[("resource", resource), ("api-version", "2019-08-01")])
            .header("X-IDENTITY-HEADER", self.header.expose())
            .send()
            .await
            .map_err(|e| crate::arm::without_url(&e))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| crate::arm::without_url(&e))?;
        if !status.is_success() {
            return Err(format!(
                "the identity endpoint answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| format!("the identity endpoint's answer is not a token: {e}"))?;
        // `expires_on` is epoch seconds, as a string (N§9) or a number.
        let expires = match &answer.expires_on {
            serde_json::Value::String(s) => s.parse().unwrap_or(now),
            serde_json::Value::Number(n) => n.as_i64().unwrap_or(now),
            _ => now,
        };
        let token = SecretToken::new(answer.access_token);
        *cached = Some((token.clone(), expires));
        Ok(token)
    }
}

/// Gets ARM tokens for one audience from one credential.
pub struct TokenSource {
    source: Source,
    kind_name: &'static str,
    hint: &'static str,
    scope: String,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("credential", &self.kind_name)
            .field("scope", &self.scope)
            .finish()
    }
}

/// `https://management.azure.com` -> `https://management.azure.com/.default`.
pub fn scope_for(arm_endpoint: &str) -> String {
    format!("{}/.default", arm_endpoint.trim_end_matches('/'))
}

fn is_az_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("az").is_file()))
}

impl TokenSource {
    /// The credential the environment (or `choice`) selects, for `arm_endpoint`'s audience.
    ///
    /// # Errors
    /// The chosen credential's variables are missing or azure_identity refuses its settings.
    pub fn from_env(
        choice: CredentialChoice,
        cloud: Cloud,
        arm_endpoint: &str,
    ) -> Result<Self, Error> {
        let var = |k: &str| std::env::var(k).ok();
        let kind = select(choice, &var, is_az_on_path()).map_err(Error::Config)?;
        let scope = scope_for(arm_endpoint);
        let failed = |e: azure_core::Error| Error::Credential {
            credential: kind.name(),
            scope: scope.clone(),
            message: e.to_string(),
            hint: kind.hint(),
        };
        // The Entra authority of the cloud (AZURE_AUTHORITY_HOST still wins for the public one,
        // as azure_identity reads it when no cloud is configured).
        let client_options = || azure_core::http::ClientOptions {
            cloud: (cloud != Cloud::Public).then(|| Arc::new(cloud.configuration())),
            ..Default::default()
        };
        let credential: Arc<dyn TokenCredential> = match kind {
            CredentialKind::Workload => {
                let mut options = azure_identity::WorkloadIdentityCredentialOptions::default();
                options.credential_options.client_options = client_options();
                azure_identity::WorkloadIdentityCredential::new(Some(options)).map_err(failed)?
            }
            CredentialKind::Secret => {
                let tenant = var("AZURE_TENANT_ID").unwrap_or_default();
                let client = var("AZURE_CLIENT_ID").unwrap_or_default();
                let secret = var("AZURE_CLIENT_SECRET").unwrap_or_default();
                let options = azure_identity::ClientSecretCredentialOptions {
                    client_options: client_options(),
                };
                azure_identity::ClientSecretCredential::new(
                    &tenant,
                    client,
                    secret.into(),
                    Some(options),
                )
                .map_err(failed)?
            }
            CredentialKind::ManagedEndpoint | CredentialKind::ManagedImds => {
                let user_assigned_id = var("AZURE_CLIENT_ID")
                    .filter(|v| !v.is_empty())
                    .map(azure_identity::UserAssignedId::ClientId);
                let options = azure_identity::ManagedIdentityCredentialOptions {
                    user_assigned_id,
                    ..Default::default()
                };
                azure_identity::ManagedIdentityCredential::new(Some(options)).map_err(failed)?
            }
            CredentialKind::Cli => azure_identity::AzureCliCredential::new(None).map_err(failed)?,
        };
        tracing::info!(credential = kind.name(), %scope, "credential selected");
        Ok(Self {
            source: Source::Azure(credential),
            kind_name: kind.name(),
            hint: kind.hint(),
            scope,
        })
    }

    /// Tokens from the managed-identity endpoint at `url` with `header` as its
    /// `X-IDENTITY-HEADER`, for `arm_endpoint`'s audience: how `--simulate` (and tests) get
    /// tokens from a simulator, the way a process in Container Apps gets them.
    ///
    /// # Errors
    /// The endpoint is not acceptable (https, or http to a loopback host), or the HTTP client
    /// cannot be built.
    pub fn identity_endpoint(url: &str, header: &str, arm_endpoint: &str) -> Result<Self, Error> {
        crate::arm::check_endpoint(url, "the identity endpoint")?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            source: Source::Endpoint(IdentityEndpoint {
                http,
                url: url.to_owned(),
                header: SecretToken::new(header),
                cached: tokio::sync::Mutex::new(None),
            }),
            kind_name: "managed identity endpoint",
            hint: "; check the identity endpoint URL and its X-IDENTITY-HEADER",
            scope: scope_for(arm_endpoint),
        })
    }

    /// The azure_identity credential (for other Azure services, like the lease blob); `None`
    /// for the simulator's tokens.
    pub fn azure_credential(&self) -> Option<Arc<dyn TokenCredential>> {
        match &self.source {
            Source::Azure(c) => Some(c.clone()),
            Source::Endpoint(_) => None,
        }
    }

    /// The credential's name, for messages.
    pub fn credential_name(&self) -> &'static str {
        self.kind_name
    }

    /// A valid token (from azure_identity's cache when it has one).
    ///
    /// # Errors
    /// [`Error::Credential`], naming the credential and what to check.
    pub async fn token(&self) -> Result<SecretToken, Error> {
        match &self.source {
            Source::Endpoint(endpoint) => endpoint
                .token(self.scope.trim_end_matches("/.default"))
                .await
                .map_err(|message| Error::Credential {
                    credential: self.kind_name,
                    scope: self.scope.clone(),
                    message,
                    hint: self.hint,
                }),
            Source::Azure(credential) => {
                let token = credential
                    .get_token(&[&self.scope], None)
                    .await
                    .map_err(|e| Error::Credential {
                        credential: self.kind_name,
                        scope: self.scope.clone(),
                        message: e.to_string(),
                        hint: self.hint,
                    })?;
                Ok(SecretToken::new(token.token.secret()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn the_chain_takes_the_first_match() {
        let all = env(&[
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ]);
        assert_eq!(
            select(CredentialChoice::Auto, &all, true),
            Ok(CredentialKind::Workload)
        );
        let sp = env(&[
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("IDENTITY_ENDPOINT", "x"),
            ("IDENTITY_HEADER", "h"),
        ]);
        assert_eq!(
            select(CredentialChoice::Auto, &sp, true),
            Ok(CredentialKind::Secret)
        );
        let mi = env(&[("IDENTITY_ENDPOINT", "x"), ("IDENTITY_HEADER", "h")]);
        assert_eq!(
            select(CredentialChoice::Auto, &mi, true),
            Ok(CredentialKind::ManagedEndpoint)
        );
        let user_assigned = env(&[("AZURE_CLIENT_ID", "c")]);
        assert_eq!(
            select(CredentialChoice::Auto, &user_assigned, true),
            Ok(CredentialKind::ManagedImds)
        );
        let none = env(&[]);
        assert_eq!(
            select(CredentialChoice::Auto, &none, true),
            Ok(CredentialKind::Cli)
        );
        assert_eq!(
            select(CredentialChoice::Auto, &none, false),
            Ok(CredentialKind::ManagedImds)
        );
    }

    #[test]
    fn an_incomplete_choice_names_what_is_missing() {
        let partial = env(&[("AZURE_CLIENT_SECRET", "s")]);
        let err = select(CredentialChoice::Auto, &partial, false).unwrap_err();
        assert!(err.contains("AZURE_TENANT_ID, AZURE_CLIENT_ID"), "{err}");
        let err = select(
            CredentialChoice::Managed,
            &env(&[("IDENTITY_ENDPOINT", "x")]),
            false,
        )
        .unwrap_err();
        assert!(err.contains("IDENTITY_HEADER"), "{err}");
    }

    #[test]
    fn clouds() {
        assert_eq!(
            Cloud::default().arm_endpoint(),
            "https://management.azure.com"
        );
        assert_eq!(
            scope_for(Cloud::China.arm_endpoint()),
            "https://management.chinacloudapi.cn/.default"
        );
        assert_eq!(
            Cloud::Usgov.arm_endpoint(),
            "https://management.usgovcloudapi.net"
        );
    }

    #[test]
    fn tokens_never_print() {
        let t = SecretToken::new("eyJ.super.secret");
        assert_eq!(format!("{t:?} {t}"), "SecretToken(redacted) (redacted)");
        assert_eq!(
            scope_for("https://management.azure.com/"),
            "https://management.azure.com/.default"
        );
    }
}

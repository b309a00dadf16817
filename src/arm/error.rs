//! Errors of the Azure layer (ARM and ACR), each saying what failed, for which resource, and
//! what to do next. Tokens never appear in any of them.

use std::time::Duration;

/// An Azure call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Azure answered with an error status. Retryable for 408, 429, 5xx and write-lock 409s.
    #[error("{method} {resource}: HTTP {status} {code}: {message}{hint}{ids}", ids = ids(request_id.as_deref(), correlation_id.as_deref()))]
    Status {
        /// HTTP method.
        method: String,
        /// The URL path (no query string).
        resource: String,
        /// HTTP status.
        status: u16,
        /// ARM's or ACR's error code (`ResourceNotFound`, `UNAUTHORIZED`, ...).
        code: String,
        /// Azure's message.
        message: String,
        /// What to do about it (starts with "; " when present).
        hint: String,
        /// `x-ms-request-id`, for Azure support.
        request_id: Option<String>,
        /// `x-ms-correlation-request-id`.
        correlation_id: Option<String>,
        /// `Retry-After`, when Azure sent one.
        retry_after: Option<Duration>,
    },
    /// The request did not get a complete answer: connection refused or dropped, timeout.
    /// Retryable when the request is safe to repeat.
    #[error("{method} {resource}: {message} (no complete response from Azure)")]
    Transport {
        /// HTTP method.
        method: String,
        /// The URL path.
        resource: String,
        /// What went wrong, from the HTTP client.
        message: String,
    },
    /// No token could be had. Not retryable by this layer: fix the credential.
    #[error("cannot get a token for {scope} with the {credential} credential: {message}{hint}")]
    Credential {
        /// Which credential of the chain was used.
        credential: &'static str,
        /// The scope asked for.
        scope: String,
        /// Why, from azure_identity.
        message: String,
        /// What to check.
        hint: &'static str,
    },
    /// Azure answered 2xx with a body that is not what ARM/ACR sends. Not retryable.
    #[error("{resource}: unexpected response from Azure: {message}")]
    Decode {
        /// The URL path.
        resource: String,
        /// What did not parse.
        message: String,
    },
    /// A long-running operation ended `Failed` or `Canceled`. Not retryable as such.
    #[error("{resource}: the operation ended {status}: {message}")]
    OperationFailed {
        /// The resource written.
        resource: String,
        /// `Failed` or `Canceled`.
        status: String,
        /// Azure's error message.
        message: String,
    },
    /// Waited longer than allowed for an operation.
    #[error("{resource}: {what} did not finish within {after:?}")]
    Timeout {
        /// The resource.
        resource: String,
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// A configured endpoint is not acceptable.
    #[error("{0}")]
    Config(String),
    /// Leader election is on and this replica does not hold the lease: the write was not sent.
    #[error(transparent)]
    NotLeader(#[from] crate::lease::NotLeader),
}

fn ids(request_id: Option<&str>, correlation_id: Option<&str>) -> String {
    match (request_id, correlation_id) {
        (Some(r), Some(c)) if r != c => {
            format!(" (x-ms-request-id {r}, x-ms-correlation-request-id {c})")
        }
        (Some(r), _) => format!(" (x-ms-request-id {r})"),
        (None, Some(c)) => format!(" (x-ms-correlation-request-id {c})"),
        (None, None) => String::new(),
    }
}

/// ARM codes that mean "another write holds the app's lock; retry once it ends" (N§5).
pub const LOCK_CODES: &[&str] = &[
    "ContainerAppOperationInProgress",
    "ContainerAppLockConflict",
    "RetryableErrorDueToAnotherOperation",
    "ManagedEnvironmentOperationInProgress",
];

impl Error {
    /// Whether repeating the same request may succeed (for a request that is safe to repeat).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status { status, code, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
                    || (*status == 409 && LOCK_CODES.contains(&code.as_str()))
            }
            Error::Transport { .. } => true,
            _ => false,
        }
    }

    /// Whether Azure certainly did not act on the request (throttled or locked out), so even
    /// a request that is not safe to repeat may be sent again.
    pub fn was_not_processed(&self) -> bool {
        match self {
            Error::Status { status, code, .. } => {
                *status == 429 || (*status == 409 && LOCK_CODES.contains(&code.as_str()))
            }
            _ => false,
        }
    }

    /// Whether another operation holds the app's (or its environment's) lock: a 409 with one
    /// of the [`LOCK_CODES`].
    pub fn is_lock_conflict(&self) -> bool {
        matches!(self, Error::Status { status: 409, code, .. } if LOCK_CODES.contains(&code.as_str()))
    }

    /// HTTP status, if Azure answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// ARM's error code, if Azure answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Status { code, .. } => Some(code),
            _ => None,
        }
    }

    /// `Retry-After`, if Azure sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// `x-ms-request-id`, if Azure answered.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Status { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
}

/// The RBAC action an ARM request needs, for 403 messages and the `permissions` command.
pub fn rbac_action(method: &str, path: &str) -> Option<&'static str> {
    let p = path.to_ascii_lowercase();
    let has = |s: &str| p.contains(s);
    Some(match method {
        _ if has("/containerappoperationstatuses/") => {
            "Microsoft.App/locations/containerAppOperationStatuses/read"
        }
        _ if has("/containerappoperationresults/") => {
            "Microsoft.App/locations/containerAppOperationResults/read"
        }
        "POST" if p.ends_with("/activate") => {
            "Microsoft.App/containerApps/revisions/activate/action"
        }
        "POST" if p.ends_with("/deactivate") => {
            "Microsoft.App/containerApps/revisions/deactivate/action"
        }
        "POST" if p.ends_with("/restart") => "Microsoft.App/containerApps/revisions/restart/action",
        "POST" if p.ends_with("/listsecrets") => "Microsoft.App/containerApps/listSecrets/action",
        "GET" if has("/replicas") => "Microsoft.App/containerApps/revisions/replicas/read",
        "GET" if has("/revisions") => "Microsoft.App/containerApps/revisions/read",
        "GET" if has("/containerapps") => "Microsoft.App/containerApps/read",
        "PATCH" | "PUT" if has("/containerapps/") => "Microsoft.App/containerApps/write",
        _ => return None,
    })
}

/// What to do about an error status, in a sentence (empty if there is nothing useful to say).
pub fn hint_for(status: u16, code: &str, method: &str, path: &str, credential: &str) -> String {
    match status {
        401 => format!(
            "; Azure refused the {credential} credential's token: check that the identity exists in this tenant and, for workload identity, that the federated credential matches"
        ),
        403 => match rbac_action(method, path) {
            Some(action) => format!(
                "; the identity lacks `{action}` here: assign a role that grants it (see `aca-reconciler permissions`) on the resource group or subscription"
            ),
            None => "; the identity lacks the RBAC permission for this call".to_owned(),
        },
        404 if code == "ResourceNotFound" || code == "ResourceGroupNotFound" => {
            "; check the app's name, resourceGroup and subscription in the desired state (aca-reconciler never creates apps)".to_owned()
        }
        404 if code == "SubscriptionNotFound" => "; check the subscription id, and that the identity can see it".to_owned(),
        409 if LOCK_CODES.contains(&code) => "; another change to this app is in progress; it is retried once that ends".to_owned(),
        429 => "; Azure is throttling this subscription; requests slow down and retry after Retry-After".to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: &str) -> Error {
        Error::Status {
            method: "GET".into(),
            resource: "/x".into(),
            status,
            code: code.into(),
            message: "m".into(),
            hint: String::new(),
            request_id: Some("rid".into()),
            correlation_id: None,
            retry_after: None,
        }
    }

    #[test]
    fn retryability() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(status(s, "x").is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 412] {
            assert!(!status(s, "Conflict").is_retryable(), "{s}");
        }
        assert!(status(409, "ContainerAppOperationInProgress").is_retryable());
        assert!(status(429, "x").was_not_processed());
        assert!(!status(503, "x").was_not_processed());
        assert!(
            status(500, "x")
                .to_string()
                .ends_with("(x-ms-request-id rid)")
        );
    }

    #[test]
    fn rbac_actions_for_routes() {
        let app = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/a";
        assert_eq!(
            rbac_action("PATCH", app),
            Some("Microsoft.App/containerApps/write")
        );
        assert_eq!(
            rbac_action("GET", &format!("{app}/revisions")),
            Some("Microsoft.App/containerApps/revisions/read")
        );
        assert_eq!(
            rbac_action("POST", &format!("{app}/revisions/a--b/deactivate")),
            Some("Microsoft.App/containerApps/revisions/deactivate/action")
        );
        assert_eq!(
            rbac_action(
                "GET",
                "/subscriptions/s/providers/Microsoft.App/locations/uksouth/containerappOperationStatuses/1"
            ),
            Some("Microsoft.App/locations/containerAppOperationStatuses/read")
        );
        assert!(
            hint_for(403, "AuthorizationFailed", "PATCH", app, "managed identity")
                .contains("Microsoft.App/containerApps/write")
        );
    }
}

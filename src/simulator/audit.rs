//! Who wrote what, and who came back too early: the record the chaos and crash tests check
//! their invariants against (`GET /_sim/audit`).
//!
//! - Every ARM write (any method but GET) is logged with its client (the `User-Agent` product),
//!   its app, its response status and the leaf paths of its JSON body, so a test can tell that
//!   the controller wrote only to managed apps and only owned fields.
//! - A 429 with `Retry-After` blocks its client from the subscription (or, for a registry's data
//!   plane, the registry), for that kind of request (read or write, as ARM's buckets count
//!   them), until the time has passed; a request that arrives before then is logged as early,
//!   with by how much and how long after the 429.
//! - A write that reaches an app while an operation runs on it is logged as a write into an
//!   operation in progress when its client knew of that operation: it started it (a write of
//!   its own answered 201/202, lost answers included), or it was told of it by a 409. Contract
//!   section 3: never a write while the app's `provisioningState` is `InProgress`.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::time::Millis;

/// At most this many writes are kept (a soak of hours stays bounded; the oldest go first).
const MAX_WRITES: usize = 100_000;

/// One ARM write.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Write {
    /// When it arrived (ms since the epoch).
    pub at: Millis,
    /// The `User-Agent` product (`aca-reconciler`, `AZURECLI`, ...).
    pub client: String,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// `subscription/resourcegroup/app`, lower case, if the path is under an app.
    pub app: Option<String>,
    /// The response status.
    pub status: u16,
    /// The leaf paths of the JSON body (`/properties/template/scale/minReplicas`); arrays are
    /// leaves.
    pub fields: Vec<String>,
    /// The traffic rules written, if the body has them (`properties.configuration.ingress.
    /// traffic`): a rollout's steps over time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Value>,
}

/// A request sent before the `Retry-After` of a 429 had passed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Early {
    /// When it arrived.
    pub at: Millis,
    /// Its client.
    pub client: String,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// How long before the end of the wait it came.
    pub early_by_ms: Millis,
    /// How long after the 429 was answered it came (a request this soon may have been sent
    /// before the client saw the 429).
    pub after_429_ms: Millis,
}

/// A write sent into an operation its client knew was still running.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IntoOperation {
    /// When it arrived.
    pub at: Millis,
    /// Its client.
    pub client: String,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// The operation that held the app.
    pub operation: String,
    /// How the client knew: `started` (its own write began it) or `told` (a 409 said so).
    pub knew: &'static str,
}

/// The audit log.
#[derive(Debug, Default)]
pub struct Audit {
    writes: Vec<Write>,
    dropped: u64,
    early: Vec<Early>,
    into_operation: Vec<IntoOperation>,
    /// Operation id -> the client whose write started it.
    started_by: HashMap<String, String>,
    /// (operation id, client) told of it by a 409.
    told: std::collections::HashSet<(String, String)>,
    /// (client, subscription, write) -> (when the 429 was answered, the end of the wait).
    blocked: HashMap<(String, String, bool), (Millis, Millis)>,
    throttled: u64,
}

/// The part of a request the audit looks at.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived.
    pub at: Millis,
    /// Its client.
    pub client: String,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// The throttling scope: the subscription in an ARM path, lower case, or `registry/<login>`
    /// for a registry's data plane.
    pub subscription: Option<String>,
    /// The app in the path.
    pub app: Option<String>,
}

impl Seen {
    fn is_write(&self) -> bool {
        self.method != "GET"
    }

    fn key(&self) -> Option<(String, String, bool)> {
        let sub = self.subscription.clone()?;
        Some((self.client.clone(), sub, self.is_write()))
    }
}

/// The client of a request: the first product of its `User-Agent`, without its version.
pub fn client_of(user_agent: Option<&str>) -> String {
    user_agent
        .and_then(|ua| ua.split_whitespace().next())
        .map(|p| p.split('/').next().unwrap_or(p).to_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `(subscription, subscription/rg/app)` of an ARM path, lower case.
pub fn scope_of(path: &str) -> (Option<String>, Option<String>) {
    let lower = path.to_ascii_lowercase();
    let segments: Vec<&str> = lower.split('/').filter(|s| !s.is_empty()).collect();
    let sub = match segments.as_slice() {
        ["subscriptions", sub, ..] => Some((*sub).to_owned()),
        _ => None,
    };
    let app = match segments.as_slice() {
        [
            "subscriptions",
            sub,
            "resourcegroups",
            rg,
            "providers",
            "microsoft.app",
            "containerapps",
            name,
            ..,
        ] => Some(format!("{sub}/{rg}/{name}")),
        _ => None,
    };
    (sub, app)
}

impl Audit {
    /// A request arrives: logged as early if its client is still told to wait.
    pub fn arrive(&mut self, seen: &Seen) {
        let Some(key) = seen.key() else { return };
        if let Some((answered, until)) = self.blocked.get(&key)
            && seen.at < *until
        {
            self.early.push(Early {
                at: seen.at,
                client: seen.client.clone(),
                method: seen.method.clone(),
                path: seen.path.clone(),
                early_by_ms: until - seen.at,
                after_429_ms: seen.at - answered,
            });
        }
    }

    /// A write arrives while `operation` (if any) holds its app: logged if its client knew.
    pub fn arrive_write(&mut self, seen: &Seen, operation: Option<&str>) {
        let Some(op) = operation else { return };
        let knew = if self.started_by.get(op) == Some(&seen.client) {
            "started"
        } else if self.told.contains(&(op.to_owned(), seen.client.clone())) {
            "told"
        } else {
            return;
        };
        self.into_operation.push(IntoOperation {
            at: seen.at,
            client: seen.client.clone(),
            method: seen.method.clone(),
            path: seen.path.clone(),
            operation: op.to_owned(),
            knew,
        });
    }

    /// A write was answered `status` and `operation` (if any) holds its app now: a new operation
    /// after a 201/202 is its client's; a 409 tells the client of the one in progress.
    pub fn answered_write(
        &mut self,
        seen: &Seen,
        status: u16,
        before: Option<&str>,
        operation: Option<&str>,
    ) {
        let Some(op) = operation else { return };
        match status {
            201 | 202 if before != Some(op) => {
                self.started_by.insert(op.to_owned(), seen.client.clone());
            }
            409 => {
                self.told.insert((op.to_owned(), seen.client.clone()));
            }
            _ => {}
        }
    }

    /// Its response leaves: a write is logged; a 429 with `Retry-After` starts a wait.
    pub fn answer(
        &mut self,
        seen: Seen,
        status: u16,
        retry_after_s: Option<u64>,
        body: Option<&Value>,
        now: Millis,
    ) {
        if let (429, Some(secs), Some(key)) = (status, retry_after_s, seen.key()) {
            self.throttled += 1;
            let until = now + i64::try_from(secs.saturating_mul(1_000)).unwrap_or(i64::MAX / 2);
            let slot = self.blocked.entry(key).or_insert((now, until));
            if until >= slot.1 {
                *slot = (now, until);
            }
        }
        let registry = seen
            .subscription
            .as_deref()
            .is_some_and(|s| s.starts_with("registry/"));
        if seen.is_write() && !registry {
            if self.writes.len() >= MAX_WRITES {
                self.writes.remove(0);
                self.dropped += 1;
            }
            self.writes.push(Write {
                at: seen.at,
                client: seen.client,
                method: seen.method,
                path: seen.path,
                app: seen.app,
                status,
                fields: body.map(crate::arm::models::leaf_paths).unwrap_or_default(),
                traffic: body
                    .and_then(|b| b.pointer("/properties/configuration/ingress/traffic"))
                    .cloned(),
            });
        }
    }

    /// The log as JSON: `{"writes": [...], "early": [...], "intoOperation": [...], "throttled":
    /// n, "dropped": n}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "writes": self.writes,
            "early": self.early,
            "intoOperation": self.into_operation,
            "throttled": self.throttled,
            "dropped": self.dropped,
        })
    }

    /// The writes so far (for tests in the simulator's process).
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// The writes sent into an operation their client knew was running (for tests in the
    /// simulator's process).
    pub fn into_operation(&self) -> &[IntoOperation] {
        &self.into_operation
    }

    /// The requests that came inside a `Retry-After` wait (for tests in the simulator's
    /// process).
    pub fn early(&self) -> &[Early] {
        &self.early
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seen(at: Millis, method: &str) -> Seen {
        let path = "/subscriptions/S/resourceGroups/RG/providers/Microsoft.App/containerApps/CA";
        let (subscription, app) = scope_of(path);
        Seen {
            at,
            client: "aca-reconciler".into(),
            method: method.into(),
            path: path.into(),
            subscription,
            app,
        }
    }

    #[test]
    fn a_request_inside_the_wait_is_early_by_the_rest_of_it() {
        let mut a = Audit::default();
        a.answer(seen(0, "PATCH"), 429, Some(2), None, 100);
        a.arrive(&seen(1_500, "GET"));
        assert!(a.early.is_empty(), "reads are another bucket");
        a.arrive(&seen(1_500, "PATCH"));
        a.arrive(&seen(2_100, "PATCH"));
        assert_eq!(a.early.len(), 1);
        assert_eq!(a.early[0].early_by_ms, 600);
        assert_eq!(a.early[0].after_429_ms, 1_400);
        assert_eq!(a.writes.len(), 1);
        assert_eq!(a.writes[0].app.as_deref(), Some("s/rg/ca"));
    }

    #[test]
    fn bodies_are_logged_as_leaf_paths() {
        let mut a = Audit::default();
        let body = json!({"tags": {"x": "1"}, "properties": {"template": {"containers": [{}]}}});
        a.answer(seen(0, "PATCH"), 200, None, Some(&body), 0);
        assert_eq!(
            a.writes[0].fields,
            ["/properties/template/containers", "/tags/x"]
        );
    }

    #[test]
    fn clients_are_named_by_their_first_product() {
        assert_eq!(client_of(Some("aca-reconciler/0.1.0")), "aca-reconciler");
        assert_eq!(
            client_of(Some("AZURECLI/2.67.0 (DEB) azsdk-python-core/1.31")),
            "AZURECLI"
        );
        assert_eq!(client_of(None), "unknown");
    }
}

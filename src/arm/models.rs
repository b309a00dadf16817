//! What the controller reads from ARM, typed for the few fields it decides on, lenient about
//! everything else: unknown fields are ignored and every field may be missing (Azure adds fields
//! without notice, and examples omit some, N§3). The raw JSON is kept, because a PATCH that
//! sends an array (`containers`, `traffic`) rebuilds it whole from the live app. It is kept as
//! text ([`RawJson`]), parsed only when needed: a parsed `Value` tree is several times the size
//! of its text, and a fleet's worth of them was most of the controller's memory.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// JSON as Azure sent it, unparsed (`null` when empty).
#[derive(Debug, Clone, Default)]
pub struct RawJson(Option<Box<RawValue>>);

impl RawJson {
    /// Wraps text that is already known to be JSON.
    pub fn new(raw: Box<RawValue>) -> Self {
        Self(Some(raw))
    }

    /// Serializes `value`.
    pub fn from_value(value: &Value) -> Self {
        Self(serde_json::value::to_raw_value(value).ok())
    }

    /// The text.
    pub fn text(&self) -> &str {
        self.0.as_deref().map_or("null", RawValue::get)
    }

    /// The whole document, parsed (`null` if it somehow does not parse).
    pub fn value(&self) -> Value {
        serde_json::from_str(self.text()).unwrap_or(Value::Null)
    }

    /// `properties.template.containers`: what a PATCH that changes an image must send back
    /// whole.
    pub fn template_containers(&self) -> Vec<Value> {
        self.template_lists().containers
    }

    /// `properties.template.initContainers` (they run images too).
    pub fn template_init_containers(&self) -> Vec<Value> {
        self.template_lists().init_containers
    }

    /// The template's container lists, parsed alone: the rest of the text is skipped, not built.
    fn template_lists(&self) -> TemplateLists {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct App {
            properties: Properties,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Properties {
            template: TemplateLists,
        }
        serde_json::from_str::<App>(self.text())
            .map(|a| a.properties.template)
            .unwrap_or_default()
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct TemplateLists {
    containers: Vec<Value>,
    init_containers: Vec<Value>,
}

/// `Microsoft.App/containerApps`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerApp {
    /// ARM resource id.
    pub id: String,
    /// App name.
    pub name: String,
    /// Location (`UK South`).
    pub location: Option<String>,
    /// Azure tags.
    pub tags: std::collections::BTreeMap<String, String>,
    /// `properties`.
    pub properties: AppProperties,
    /// The whole app as ARM returned it.
    #[serde(skip)]
    pub raw: RawJson,
}

/// `properties` of an app.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppProperties {
    /// `InProgress | Succeeded | Failed | Canceled | Deleting`.
    pub provisioning_state: Option<String>,
    /// `Running | Stopped | ...`.
    pub running_status: Option<String>,
    /// The newest revision.
    pub latest_revision_name: Option<String>,
    /// The newest revision that became ready.
    pub latest_ready_revision_name: Option<String>,
    /// `configuration`.
    pub configuration: Configuration,
    /// `template`.
    pub template: Template,
}

/// `properties.configuration`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Configuration {
    /// `Single` or `Multiple` (compare case-insensitively, N§2); absent means Single.
    pub active_revisions_mode: Option<String>,
    /// Ingress, if any.
    pub ingress: Option<Ingress>,
}

/// `configuration.ingress`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Ingress {
    /// Traffic rules.
    pub traffic: Vec<TrafficWeight>,
    /// The app's own host, `<app>.<environment default domain>`.
    pub fqdn: Option<String>,
}

/// One traffic rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrafficWeight {
    /// A revision by name.
    pub revision_name: Option<String>,
    /// Percent.
    pub weight: i64,
    /// Follows the latest ready revision.
    pub latest_revision: bool,
    /// A label.
    pub label: Option<String>,
}

/// `properties.template` (of an app or a revision).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Template {
    /// The suffix of the revision this template made.
    pub revision_suffix: Option<String>,
    /// Containers.
    pub containers: Vec<Container>,
    /// Scale bounds.
    pub scale: Scale,
}

/// One container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    /// Name.
    pub name: String,
    /// Image reference.
    pub image: Option<String>,
}

/// `template.scale`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Scale {
    /// `minReplicas`.
    pub min_replicas: Option<i64>,
    /// `maxReplicas`.
    pub max_replicas: Option<i64>,
}

/// `Microsoft.App/containerApps/revisions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Revision {
    /// `<app>--<suffix>`.
    pub name: String,
    /// `properties`.
    pub properties: RevisionProperties,
    /// When each of its replicas was created, if they were read (only to finish an interrupted
    /// restart: [`crate::plan::pending_restart`]).
    #[serde(skip)]
    pub replicas_created: Option<Vec<crate::time::Millis>>,
}

/// `properties` of a revision.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RevisionProperties {
    /// RFC 3339.
    pub created_time: Option<String>,
    /// Whether it is active.
    pub active: bool,
    /// Running replicas.
    pub replicas: Option<i64>,
    /// Its share of traffic.
    pub traffic_weight: Option<i64>,
    /// `Healthy | Unhealthy | None`.
    pub health_state: Option<String>,
    /// `Provisioning | Provisioned | Failed | Deprovisioning | Deprovisioned`.
    pub provisioning_state: Option<String>,
    /// `Running | Processing | Stopped | Degraded | Failed | Unknown` (and more in practice).
    pub running_state: Option<String>,
    /// Why provisioning failed.
    pub provisioning_error: Option<String>,
    /// The revision's own host (reaches it whatever its traffic weight).
    pub fqdn: Option<String>,
    /// The template it runs.
    pub template: Template,
}

impl Revision {
    /// Running and healthy enough to take traffic.
    pub fn is_running(&self) -> bool {
        self.properties.active
            && self
                .properties
                .running_state
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("running") || s.starts_with("Running"))
            && !self
                .properties
                .health_state
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case("unhealthy"))
    }

    /// Will never become ready without a change (failed provisioning or containers).
    pub fn has_failed(&self) -> bool {
        let failed = |s: &Option<String>| {
            s.as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("failed"))
        };
        failed(&self.properties.provisioning_state) || failed(&self.properties.running_state)
    }
}

impl ContainerApp {
    /// Parses an app, keeping its raw JSON.
    ///
    /// # Errors
    /// The JSON is not an object shaped like an app at all.
    pub fn from_value(raw: Value) -> Result<Self, serde_json::Error> {
        let mut app: ContainerApp = serde_json::from_value(raw.clone())?;
        app.raw = RawJson::from_value(&raw);
        Ok(app)
    }

    /// Parses an app from its JSON text, keeping the text.
    ///
    /// # Errors
    /// The JSON is not an object shaped like an app at all.
    pub fn from_raw(raw: Box<RawValue>) -> Result<Self, serde_json::Error> {
        let mut app: ContainerApp = serde_json::from_str(raw.get())?;
        app.raw = RawJson::new(raw);
        Ok(app)
    }

    /// Whether the app is in Multiple revision mode (absent means Single, N§2).
    pub fn is_multiple_mode(&self) -> bool {
        self.properties
            .configuration
            .active_revisions_mode
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("multiple"))
    }

    /// Whether a write is in flight.
    pub fn is_busy(&self) -> bool {
        self.properties
            .provisioning_state
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("inprogress"))
    }

    /// The traffic rules (empty without ingress).
    pub fn traffic(&self) -> &[TrafficWeight] {
        self.properties
            .configuration
            .ingress
            .as_ref()
            .map_or(&[], |i| &i.traffic)
    }
}

/// The leaf paths of a JSON merge-patch body (`/properties/template/scale/minReplicas`). An
/// array is a leaf (a PATCH replaces arrays whole), and so is an empty object.
pub fn leaf_paths(body: &Value) -> Vec<String> {
    fn go(v: &Value, path: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    go(child, format!("{path}/{k}"), out);
                }
            }
            _ => out.push(path),
        }
    }
    let mut out = Vec::new();
    if !body.is_null() {
        go(body, String::new(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tolerates_missing_and_unknown_fields() {
        let app = ContainerApp::from_value(json!({"name": "a", "brandNew": {"x": 1}, "properties": {"configuration": {"ingress": {"traffic": [{"weight": 100, "latestRevision": true}]}}}})).unwrap();
        assert_eq!(app.name, "a");
        assert!(!app.is_multiple_mode());
        assert_eq!(app.traffic()[0].weight, 100);
        assert!(app.properties.template.containers.is_empty());
        let empty = ContainerApp::from_value(json!({})).unwrap();
        assert!(empty.traffic().is_empty());
        assert!(ContainerApp::from_value(json!([1, 2])).is_err());
    }

    #[test]
    fn revision_states() {
        let r: Revision = serde_json::from_value(json!({"name": "a--1", "properties": {"active": true, "runningState": "Running", "healthState": "Healthy"}})).unwrap();
        assert!(r.is_running() && !r.has_failed());
        let r: Revision = serde_json::from_value(
            json!({"name": "a--2", "properties": {"active": true, "runningState": "Failed"}}),
        )
        .unwrap();
        assert!(!r.is_running() && r.has_failed());
        let r: Revision = serde_json::from_value(
            json!({"name": "a--3", "properties": {"active": false, "runningState": "Running"}}),
        )
        .unwrap();
        assert!(!r.is_running());
    }
}

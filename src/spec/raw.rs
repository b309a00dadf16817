//! The documents exactly as written in YAML: serde shapes plus the JSON Schema they generate.
//!
//! These types only say what *shape* a document has (field names, types, ranges that a schema
//! can express). Rules that span fields or documents (weights summing to 100, Defaults
//! inheritance, duplicate apps) live in [`super::validate`], which turns these raw documents
//! into the checked domain types of [`super`]. Every doc comment here becomes a description in
//! `desired-state/schema.json`, which editors show on hover, so write them for the operator.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only `apiVersion` this release reads.
pub const API_VERSION: &str = "aca-reconciler/v1";

/// `apiVersion: aca-reconciler/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// The first and current version of the document format.
    #[serde(rename = "aca-reconciler/v1")]
    V1,
}

/// Settings inherited by every document in this file's directory and below.
///
/// A deeper `Defaults` overrides a shallower one field by field; a value written in a document
/// wins over every `Defaults`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Defaults")]
pub struct DefaultsDocument {
    /// Always `aca-reconciler/v1`.
    pub api_version: ApiVersion,
    /// Always `Defaults`.
    pub kind: DefaultsKind,
    /// Names this set of defaults (for messages only).
    pub metadata: NameOnly,
    /// The inherited values.
    pub spec: DefaultsSpec,
}

/// `kind: Defaults`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
pub enum DefaultsKind {
    /// Inherited settings for a directory tree.
    Defaults,
}

/// Values that documents below this directory inherit unless they set their own.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultsSpec {
    /// Azure subscription id (a GUID) of the apps below this directory.
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub subscription: Option<String>,
    /// Resource group of the apps below this directory.
    #[schemars(length(min = 1, max = 90))]
    pub resource_group: Option<String>,
}

/// `metadata` of a document that only needs a name.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NameOnly {
    /// A name for this document, shown in messages.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// One Azure Container App and the fields of it that aca-reconciler owns.
///
/// The controller changes exactly the fields written in `spec`. Anything the spec leaves out
/// (env, resources, probes, secrets, scale rules, ingress settings, other containers) is never
/// touched. Apps that no document names are never touched either.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "ContainerApp")]
pub struct ContainerAppDocument {
    /// Always `aca-reconciler/v1`.
    pub api_version: ApiVersion,
    /// Always `ContainerApp`.
    pub kind: ContainerAppKind,
    /// Which app: its name, resource group and subscription.
    pub metadata: AppMetadata,
    /// What the app should look like.
    pub spec: ContainerAppSpec,
}

/// `kind: ContainerApp`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
pub enum ContainerAppKind {
    /// A managed Azure Container App.
    ContainerApp,
}

/// Identifies the Azure Container App.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppMetadata {
    /// The Container App's name in Azure: 2-32 lowercase letters, digits and hyphens, starting
    /// with a letter, ending with a letter or digit, no `--`.
    #[schemars(
        length(min = 2, max = 32),
        regex(pattern = r"^[a-z][a-z0-9-]*[a-z0-9]$")
    )]
    pub name: String,
    /// Resource group; may come from a `Defaults` document.
    #[schemars(length(min = 1, max = 90))]
    pub resource_group: Option<String>,
    /// Subscription id (a GUID); may come from `Defaults` or `--subscription`.
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub subscription: Option<String>,
}

/// The owned fields of a Container App. Leave a field out and it is never changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerAppSpec {
    /// `true`: observe and report drift only, change nothing (break-glass). `plan` exits 0 for
    /// a suspended app.
    pub suspend: Option<bool>,
    /// `configuration.activeRevisionsMode`: `single` keeps one revision active and moves
    /// traffic itself; `multiple` lets this spec choose traffic and retention. Compared
    /// without regard to case, as Azure does (Azure's own documents write `Single`/`Multiple`).
    pub revision_mode: Option<RevisionMode>,
    /// Container name -> full image reference with a tag or `@sha256:` digest. Changing one
    /// makes Azure create a new revision; all template changes of an app go out together.
    #[schemars(extend("propertyNames" = {"minLength": 1}))]
    pub images: Option<BTreeMap<String, String>>,
    /// `template.scale` bounds. Changing them creates a new revision.
    pub replicas: Option<Replicas>,
    /// Pin: activate this revision (`<app>--<suffix>`) and route 100% of traffic to it, e.g.
    /// for a rollback. Not together with `traffic`.
    #[schemars(length(min = 4))]
    pub active_revision: Option<String>,
    /// An explicit traffic split; weights are whole numbers summing to 100. Needs
    /// `revisionMode: multiple` (or a live app already in Multiple mode). Not together with
    /// `activeRevision`.
    #[schemars(length(min = 1))]
    pub traffic: Option<Vec<TrafficEntry>>,
    /// How many revisions may stay active (Multiple mode); the oldest surplus ones are
    /// deactivated once they carry no traffic.
    pub revision_retention: Option<RevisionRetention>,
    /// Raise it to restart the active revision(s) once, e.g. after rotating a secret. The
    /// generation last applied is kept in the app's Azure tag
    /// `aca-reconciler-restart-generation`, so a controller restart does not restart apps again.
    pub restart_generation: Option<u64>,
}

/// `configuration.activeRevisionsMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevisionMode {
    /// One revision is active; Azure moves all traffic to a new revision once it is ready.
    Single,
    /// Several revisions may be active; traffic goes where `traffic`/`activeRevision` says.
    Multiple,
}

impl RevisionMode {
    /// The spellings this release writes, in the order messages list them.
    pub const NAMES: [&str; 2] = ["single", "multiple"];
}

impl<'de> Deserialize<'de> for RevisionMode {
    /// Any case: ARM's enums are strings compared without regard to case (the Container Apps
    /// REST spec has `Multiple | Single` with `modelAsString`, its docs write `"multiple"`), and
    /// Bicep and the REST documents spell them `Single` / `Multiple`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RevisionMode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`single` or `multiple`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RevisionMode, E> {
                if v.eq_ignore_ascii_case("single") {
                    Ok(RevisionMode::Single)
                } else if v.eq_ignore_ascii_case("multiple") {
                    Ok(RevisionMode::Multiple)
                } else {
                    Err(E::unknown_variant(v, &RevisionMode::NAMES))
                }
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for RevisionMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RevisionMode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`configuration.activeRevisionsMode`, compared without regard to case as Azure does.",
            "anyOf": [
                {
                    "const": "single",
                    "description": "One revision is active; Azure moves all traffic to a new revision once it is ready."
                },
                {
                    "const": "multiple",
                    "description": "Several revisions may be active; traffic goes where `traffic`/`activeRevision` says."
                },
                {
                    "type": "string",
                    "pattern": "^([Ss][Ii][Nn][Gg][Ll][Ee]|[Mm][Uu][Ll][Tt][Ii][Pp][Ll][Ee])$",
                    "description": "The same in any case, such as Azure's own `Single` and `Multiple`."
                }
            ]
        })
    }
}

/// `template.scale.minReplicas` / `maxReplicas`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replicas {
    /// Fewest replicas (0 lets the app scale to zero).
    #[schemars(range(min = 0, max = 1000))]
    pub min: u32,
    /// Most replicas, 1 to 1000 (Azure applies the subscription's quota on top).
    #[schemars(range(min = 1, max = 1000))]
    pub max: u32,
}

/// One traffic rule: exactly one of `revision`, `latestRevision` or `label`, and a weight.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["revision"]},
    {"required": ["latestRevision"]},
    {"required": ["label"]}
]))]
pub struct TrafficEntry {
    /// A revision by name, `<app>--<suffix>`.
    #[schemars(length(min = 4))]
    pub revision: Option<String>,
    /// `true`: whichever revision is the latest ready one. At most one such entry.
    #[schemars(extend("const" = true))]
    pub latest_revision: Option<bool>,
    /// The revision that carries this traffic label.
    #[schemars(length(min = 1))]
    pub label: Option<String>,
    /// Percent of traffic, 0 to 100.
    #[schemars(range(min = 0, max = 100))]
    pub weight: u32,
}

/// How many revisions stay active.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevisionRetention {
    /// At most this many active revisions. The latest revision, revisions with traffic and
    /// revisions the spec names are never deactivated and count toward this number.
    #[schemars(range(min = 1))]
    pub keep_active: u32,
}

/// Deletes old tags from Azure Container Registry repositories, never one that is in use.
///
/// A tag that any revision of any managed subscription's container apps runs, or that a
/// desired `images` entry names, or that is locked (`deleteEnabled: false`), is always kept.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "RegistryRetention")]
pub struct RegistryRetentionDocument {
    /// Always `aca-reconciler/v1`.
    pub api_version: ApiVersion,
    /// Always `RegistryRetention`.
    pub kind: RegistryRetentionKind,
    /// Names this policy (for messages only).
    pub metadata: NameOnly,
    /// Which tags to keep.
    pub spec: RegistryRetentionSpec,
}

/// `kind: RegistryRetention`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
pub enum RegistryRetentionKind {
    /// A tag retention policy for a container registry.
    RegistryRetention,
}

/// Tag retention for some repositories of one registry.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryRetentionSpec {
    /// The registry's login server, `host[:port]`, e.g. `crxshopaidev.azurecr.io`.
    #[schemars(length(min = 1, max = 253))]
    pub registry: String,
    /// Repository names, or `["*"]` for every repository of the registry.
    #[schemars(length(min = 1))]
    pub repositories: Vec<String>,
    /// Keep the newest this many tags of each repository, by last update time.
    #[schemars(range(min = 1))]
    pub keep_last: u32,
    /// Only delete tags last updated longer ago than this (`30m`, `12h`, `7d`).
    #[schemars(regex(pattern = r"^[0-9]+[smhd]$"))]
    pub older_than: Option<String>,
    /// Also delete the image (manifest) once no kept or protected tag points at its digest.
    pub delete_images: Option<bool>,
}

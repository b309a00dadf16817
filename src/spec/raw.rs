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
    /// A rollout for the apps below this directory; a document's own `rollout` (and a deeper
    /// Defaults') overrides it field by field.
    pub rollout: Option<Box<Rollout>>,
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
    /// Progressive delivery: a new image walks weighted steps (canary) or waits on a preview
    /// label and switches at once (blue/green), with checks between steps and an automatic
    /// rollback to the stable revision. Owns traffic: not together with `traffic` or
    /// `activeRevision`. Needs Multiple revision mode (set for you when `revisionMode` is left
    /// out). May be inherited from `Defaults`, field by field.
    pub rollout: Option<Rollout>,
}

/// `spec.rollout`. Every field may come from `Defaults`; a document's value wins.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollout {
    /// `canary` (default): the new revision walks `steps`. `blueGreen`: it gets the preview
    /// label at 0%, then 100% at once.
    pub strategy: Option<RolloutStrategy>,
    /// Canary: the new revision's share at each step, increasing, each held for `pause` and
    /// checked every `analysis.interval`. After the last step it gets 100% (it is promoted).
    #[schemars(length(min = 1))]
    pub steps: Option<Vec<RolloutStep>>,
    /// `auto` (default), or `manual`: wait for `aca-reconciler rollout promote APP` before
    /// the new revision gets 100% (the last step, or the blue/green switch).
    pub approval: Option<ApprovalMode>,
    /// The checks while a step is held. Left out: steps advance on time alone.
    pub analysis: Option<Analysis>,
    /// No progress for this long (`30m`, default): roll back (with `noData: hold`, a step
    /// held for want of data stays held).
    #[schemars(regex(pattern = r"^[0-9]+[smhd]$"))]
    pub progress_deadline: Option<String>,
    /// Blue/green: the label the new revision is reachable at before the switch, at
    /// `https://<app>---<label>.<environment domain>` (default `preview`).
    #[schemars(length(min = 1, max = 64))]
    pub preview_label: Option<String>,
    /// Blue/green: how long the new revision is checked on its preview label before the
    /// switch (default `0s`: one passing check, if there is analysis).
    #[schemars(regex(pattern = r"^[0-9]+[smhd]$"))]
    pub preview_pause: Option<String>,
    /// Blue/green: how long after the switch a failed check switches back (default `0s`).
    #[schemars(regex(pattern = r"^[0-9]+[smhd]$"))]
    pub post_switch_pause: Option<String>,
}

/// `rollout.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RolloutStrategy {
    /// Stepped weights.
    Canary,
    /// A preview label, then a switch.
    BlueGreen,
}

/// `rollout.approval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ApprovalMode {
    /// Go on when the checks pass.
    Auto,
    /// Wait for `aca-reconciler rollout promote`.
    Manual,
}

/// One canary step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStep {
    /// The new revision's share of traffic, 1 to 100, larger than the step before.
    #[schemars(range(min = 1, max = 100))]
    pub weight: u32,
    /// How long the step is held (`30s`, `5m`); it advances on a passing check after that.
    #[schemars(regex(pattern = r"^[0-9]+[smhd]$"))]
    pub pause: String,
}

/// `rollout.analysis`. Every field may come from `Defaults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Analysis {
    /// One check per interval while a step is held (default `1m`).
    #[schemars(regex(pattern = r"^[0-9]+[smhd]$"))]
    pub interval: Option<String>,
    /// Failed checks in one rollout before it rolls back (default 2).
    #[schemars(range(min = 1))]
    pub max_failed_checks: Option<u32>,
    /// `hold` (default): a check with fewer than `minRequests` requests holds the step and
    /// says so; `fail`: it counts as failed.
    pub no_data: Option<NoDataMode>,
    /// Requests the new revision must serve in a check's window to be judged (default 50).
    pub min_requests: Option<u64>,
    /// The new revision's share of non-5xx requests (Azure Monitor `Requests`).
    pub success_rate: Option<SuccessRate>,
    /// The new revision's success rate against the stable revision's, same window.
    pub compared_to_stable: Option<ComparedToStable>,
    /// HTTP GETs on the new revision's own URL (blue/green: its preview label's URL).
    pub probes: Option<Vec<ProbeSpec>>,
}

/// `analysis.noData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NoDataMode {
    /// Hold the step until there is data.
    Hold,
    /// Count the check as failed.
    Fail,
}

/// `analysis.successRate`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuccessRate {
    /// Lowest share of non-5xx requests, percent (e.g. 99).
    #[schemars(range(min = 0, max = 100))]
    pub min: f64,
}

/// `analysis.comparedToStable`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComparedToStable {
    /// Largest drop below the stable revision's success rate, in percentage points.
    #[schemars(range(min = 0, max = 100))]
    pub max_drop: f64,
}

/// One probe.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeSpec {
    /// Path, starting with `/`.
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
    /// The status that passes (default 200).
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<u16>,
}

impl Rollout {
    /// `self` over `under`, field by field (`analysis` too); `steps` and `probes` as wholes.
    pub fn over(&self, under: &Rollout) -> Rollout {
        let analysis = match (&self.analysis, &under.analysis) {
            (Some(a), Some(b)) => Some(Analysis {
                interval: a.interval.clone().or_else(|| b.interval.clone()),
                max_failed_checks: a.max_failed_checks.or(b.max_failed_checks),
                no_data: a.no_data.or(b.no_data),
                min_requests: a.min_requests.or(b.min_requests),
                success_rate: a.success_rate.or(b.success_rate),
                compared_to_stable: a.compared_to_stable.or(b.compared_to_stable),
                probes: a.probes.clone().or_else(|| b.probes.clone()),
            }),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        Rollout {
            strategy: self.strategy.or(under.strategy),
            steps: self.steps.clone().or_else(|| under.steps.clone()),
            approval: self.approval.or(under.approval),
            analysis,
            progress_deadline: self
                .progress_deadline
                .clone()
                .or_else(|| under.progress_deadline.clone()),
            preview_label: self
                .preview_label
                .clone()
                .or_else(|| under.preview_label.clone()),
            preview_pause: self
                .preview_pause
                .clone()
                .or_else(|| under.preview_pause.clone()),
            post_switch_pause: self
                .post_switch_pause
                .clone()
                .or_else(|| under.post_switch_pause.clone()),
        }
    }
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

/// Where the controller tells people what it did: Microsoft Teams, Slack, a JSON webhook, or
/// commit statuses on GitHub.
///
/// Not per app, so `Defaults` do not apply. Secrets are never written here: a URL that is a
/// secret (Teams, Slack) or a token is named by `fromEnv` or `fromFile` and read when a
/// message is sent; `validate` refuses an inline URL that carries a query string, credentials
/// or a token-looking value.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Notification")]
pub struct NotificationDocument {
    /// Always `aca-reconciler/v1`.
    pub api_version: ApiVersion,
    /// Always `Notification`.
    pub kind: NotificationKind,
    /// Names this target in logs, metrics (`target` label) and `/status`; unique among
    /// Notifications.
    pub metadata: NotificationMetadata,
    /// Where to send, and which events.
    pub spec: NotificationSpec,
}

/// `kind: Notification`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
pub enum NotificationKind {
    /// A target for the controller's events.
    Notification,
}

/// `metadata` of a Notification.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationMetadata {
    /// 1-63 letters, digits, `.`, `_` and `-`, starting with a letter or digit. Shown
    /// wherever the target is named (never its URL).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub name: String,
}

/// `spec` of a Notification.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("allOf" = [
    {
        "if": {"properties": {"type": {"const": "teams"}}},
        "then": {
            "required": ["url"],
            "properties": {"url": {"type": "object"}},
            "not": {"anyOf": [{"required": ["secret"]}, {"required": ["repository"]}, {"required": ["apiUrl"]}]}
        }
    },
    {
        "if": {"properties": {"type": {"const": "slack"}}},
        "then": {
            "required": ["url"],
            "properties": {"url": {"type": "object"}},
            "not": {"anyOf": [{"required": ["secret"]}, {"required": ["repository"]}, {"required": ["apiUrl"]}]}
        }
    },
    {
        "if": {"properties": {"type": {"const": "webhook"}}},
        "then": {
            "required": ["url"],
            "not": {"anyOf": [{"required": ["repository"]}, {"required": ["apiUrl"]}]}
        }
    },
    {
        "if": {"properties": {"type": {"const": "github"}}},
        "then": {
            "required": ["repository", "secret"],
            "not": {"required": ["url"]}
        }
    }
]))]
pub struct NotificationSpec {
    /// `teams` (a Workflows webhook, "When a Teams webhook request is received"), `slack` (an
    /// incoming webhook), `webhook` (JSON, signed with `secret` if given) or `github` (commit
    /// statuses on the desired-state commit).
    #[serde(rename = "type")]
    pub kind: NotificationType,
    /// teams, slack, webhook: where to POST. Teams and Slack URLs are secrets (a signature, a
    /// secret path): name them, `{fromEnv: NAME}` or `{fromFile: /path}`. A webhook URL may be
    /// written inline when it holds no secret (no query string, no `user:pass@`, no token).
    pub url: Option<UrlSource>,
    /// webhook: the HMAC key (optional; signs `X-Signature: sha256=<hex>`). github: the token
    /// (`statuses:write`), required. Only `{fromEnv: NAME}` or `{fromFile: /path}`.
    #[serde(default, deserialize_with = "named_secret")]
    #[schemars(with = "SecretSource", transform = no_default)]
    pub secret: Option<SecretSource>,
    /// github: the desired-state repository, `owner/repo`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$"))]
    pub repository: Option<String>,
    /// github: the API's base URL for GitHub Enterprise Server (`https://HOST/api/v3`); left
    /// out, the `--github-api-url` flag's (by default `https://api.github.com`).
    #[schemars(regex(pattern = r"^https?://[^\s?#@]+$"))]
    pub api_url: Option<String>,
    /// `info` (default): every event; `error`: errors only (Failed, RolledBack,
    /// DesiredStateRejected).
    pub severity: Option<NotificationSeverity>,
    /// Only events of these reasons. Left out: every reason but `Progressing` (a `github`
    /// target uses every reason it has a commit state for).
    #[serde(default)]
    #[schemars(schema_with = "reason_names", transform = no_default)]
    pub reasons: Option<Vec<String>>,
    /// Only events about these apps (every condition given must hold). Events about no app
    /// (a rejected file, leadership) pass.
    pub apps: Option<AppsFilter>,
    /// Identical events are sent once per window (`5m`, default; `30s`, `1h`).
    #[schemars(regex(pattern = r"^[0-9]+[smhd]$"))]
    pub window: Option<String>,
}

/// `spec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotificationType {
    /// Microsoft Teams through a Workflows webhook: an Adaptive Card.
    Teams,
    /// A Slack incoming webhook.
    Slack,
    /// A generic JSON webhook.
    Webhook,
    /// GitHub commit status, context `aca-reconciler/<resource group>/<app>`.
    Github,
}

impl NotificationType {
    /// As `type:` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::Teams => "teams",
            NotificationType::Slack => "slack",
            NotificationType::Webhook => "webhook",
            NotificationType::Github => "github",
        }
    }
}

/// `spec.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotificationSeverity {
    /// Every event.
    Info,
    /// Errors only.
    Error,
}

/// `spec.apps`: every condition given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppsFilter {
    /// App names, with the wildcards `*` (any run of characters) and `?` (one character):
    /// `["user-*", "cart-?"]`.
    #[schemars(length(min = 1), inner(regex(pattern = r"^[a-z0-9*?-]+$")))]
    pub names: Option<Vec<String>>,
    /// Resource groups (compared without regard to case).
    #[schemars(length(min = 1), inner(length(min = 1, max = 90)))]
    pub resource_groups: Option<Vec<String>>,
    /// Directories of the desired-state tree, relative to its root (`prod/eu`): apps written
    /// in a file under one of them.
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub directories: Option<Vec<String>>,
}

/// A URL written inline, or named by an environment variable or a file.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum UrlSource {
    /// `url: https://...` (webhook only, and only without a secret in it).
    Inline(String),
    /// `url: {fromEnv: NAME}` or `url: {fromFile: /path}`.
    Named(SecretSource),
}

/// What a misplaced value is told, without the value (it may be a secret).
const NAMED_HINT: &str = "write {fromEnv: NAME} or {fromFile: /path}";

impl<'de> Deserialize<'de> for UrlSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UrlSource;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a URL, or {NAMED_HINT}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UrlSource, E> {
                Ok(UrlSource::Inline(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<UrlSource, A::Error> {
                SecretSource::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(UrlSource::Named)
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<UrlSource, E> {
                Err(E::custom(format!("expected a URL, or {NAMED_HINT}")))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<UrlSource, E> {
                Err(E::custom(format!("expected a URL, or {NAMED_HINT}")))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<UrlSource, E> {
                Err(E::custom(format!("expected a URL, or {NAMED_HINT}")))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<UrlSource, E> {
                Err(E::custom(format!("expected a URL, or {NAMED_HINT}")))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<UrlSource, E> {
                Err(E::custom(format!("is empty; {NAMED_HINT}")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for UrlSource {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UrlSource".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let named = generator.subschema_for::<SecretSource>();
        schemars::json_schema!({
            "description": "A URL: inline (webhook only; no query string, no `user:pass@`, no token in it), or named by `{fromEnv: NAME}` / `{fromFile: /path}`.",
            "anyOf": [
                {
                    "type": "string",
                    "pattern": "^https?://[^\\s?#@]+$",
                    "description": "An http(s) URL with no secret in it."
                },
                named
            ]
        })
    }
}

/// A secret named, never written: exactly one of `fromEnv` and `fromFile`. It is read when a
/// message is sent, so a rotated secret is used without a restart, and `validate` does not
/// need it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["fromEnv"]},
    {"required": ["fromFile"]}
]))]
pub struct SecretSource {
    /// The environment variable that holds it (`TEAMS_WEBHOOK_URL`).
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub from_env: Option<String>,
    /// The absolute path of the file that holds it (a mounted Key Vault or Kubernetes
    /// secret, `/mnt/secrets/teams-url`).
    #[schemars(regex(pattern = r"^/"))]
    pub from_file: Option<String>,
}

/// `secret:` refuses a value written inline, without repeating it: it is a secret.
fn named_secret<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretSource>, D::Error> {
    struct Visitor;
    const INLINE: &str = "a secret is never written in the desired state (it would be in git); name where it is: {fromEnv: NAME} or {fromFile: /path}";
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = SecretSource;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(NAMED_HINT)
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretSource, E> {
            Err(E::custom(INLINE))
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretSource, E> {
            Err(E::custom(INLINE))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretSource, E> {
            Err(E::custom(INLINE))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretSource, E> {
            Err(E::custom(INLINE))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretSource, E> {
            Err(E::custom(INLINE))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<SecretSource, E> {
            Err(E::custom(format!("is empty; {NAMED_HINT}")))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SecretSource, A::Error> {
            SecretSource::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_any(Visitor).map(Some)
}

/// Left out means what the field's doc says, not `null` (which editors would offer to write).
fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// `reasons`: names of [`crate::notify::Reason`].
fn reason_names(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = crate::notify::Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "items": {"enum": names}
    })
}

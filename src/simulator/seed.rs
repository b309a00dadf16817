//! Live state that has drifted from a desired-state tree, so a first pass has real work to do.
//!
//! For every desired app: the full ARM shape (ingress, Dapr, secrets, probes, scale rules, tags,
//! identity: all the fields the controller must leave alone), a history of revisions running
//! older images, more active revisions than retention allows, traffic pinned to the current
//! revision, other replica bounds, and for some apps the other revision mode. Every revision
//! that the desired traffic names exists. Registries hold every image the revisions and the
//! desired state use, plus a long tail of old tags, one of them locked.
//!
//! Deterministic: the same tree and start time give the same world.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::store::{
    AppId, AppRecord, Config, Registry, Revision, Subscription, Tag, World, splitmix,
};
use super::traffic::Behaviour;
use crate::spec::{AppSpec, DesiredState, ImageRef, Repositories, RevisionMode};
use crate::time::Millis;

const DAY: Millis = 86_400_000;

fn hash(s: &str) -> u64 {
    s.bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| splitmix(h ^ u64::from(b)))
}

/// A digest for an image, stable across runs.
fn digest_of(repo: &str, tag: &str) -> String {
    let h = hash(&format!("{repo}:{tag}"));
    format!(
        "sha256:{:016x}{:016x}{:016x}{:016x}",
        splitmix(h),
        splitmix(h ^ 1),
        splitmix(h ^ 2),
        splitmix(h ^ 3)
    )
}

/// `n` earlier versions of `tag`, newest first: `v1.2.0` -> `v1.1.9`, `v1.1.8`, ...; other
/// tags get a hash-shaped predecessor (`main-3fa2c1d`).
fn older_versions(tag: &str, n: usize) -> Vec<String> {
    let (prefix, rest) = tag.strip_prefix('v').map_or(("", tag), |r| ("v", r));
    let parts: Vec<u32> = rest.split('.').filter_map(|p| p.parse().ok()).collect();
    if parts.len() == 3 && rest.split('.').count() == 3 {
        let (mut major, mut minor, mut patch) = (parts[0], parts[1], parts[2]);
        let mut out = Vec::new();
        while out.len() < n {
            if patch > 0 {
                patch -= 1;
            } else if minor > 0 {
                minor -= 1;
                patch = 9;
            } else if major > 0 {
                major -= 1;
                minor = 9;
                patch = 9;
            } else {
                break;
            }
            out.push(format!("{prefix}{major}.{minor}.{patch}"));
        }
        if out.len() == n {
            return out;
        }
    }
    let stem = tag.rsplit_once('-').map_or(tag, |(s, _)| s);
    (1..=n)
        .map(|k| format!("{stem}-{:07x}", hash(&format!("{tag}{k}")) & 0xfff_ffff))
        .collect()
}

/// A revision suffix from a tag: `v1.7.2` -> `v172`; must start with a letter.
fn suffix_of(tag: &str) -> String {
    let s: String = tag
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let s = s.trim_matches('-').to_owned();
    if s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s
    } else {
        format!("r{s}")
    }
}

fn env_id(key: &crate::spec::AppKey) -> String {
    let short = key.resource_group.trim_start_matches("rg-");
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.App/managedEnvironments/cae-{short}",
        key.subscription, key.resource_group
    )
}

fn container_json(name: &str, image: &str) -> Value {
    json!({
        "name": name,
        "image": image,
        "resources": {"cpu": 0.5, "memory": "1Gi"},
        "env": [
            {"name": "PORT", "value": "8080"},
            {"name": "ASPNETCORE_ENVIRONMENT", "value": "Production"},
            {"name": "JWT_SECRET", "secretRef": "jwt-secret"},
            {"name": "DB_CONNECTION", "secretRef": "db-connection"}
        ],
        "probes": [
            {"type": "Liveness", "httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10, "failureThreshold": 3},
            {"type": "Readiness", "httpGet": {"path": "/ready", "port": 8080}, "initialDelaySeconds": 5}
        ],
        "volumeMounts": [{"volumeName": "config", "mountPath": "/app/config"}]
    })
}

/// The images an app runs: its desired ones, or one made-up container if the spec names none.
fn desired_images(spec: &AppSpec) -> crate::spec::Images {
    if !spec.images.is_empty() {
        return spec.images.clone();
    }
    let name = spec.key.name.trim_start_matches("ca-").to_owned();
    let full = format!("mcr.microsoft.com/k8se/{name}:1.0.0");
    let image = crate::spec::validate::parse_image(&full).ok();
    image
        .map(|i| crate::spec::Images::from([(name, i)]))
        .unwrap_or_default()
}

fn image_with_tag(image: &ImageRef, tag: &str) -> String {
    match &image.registry {
        Some(r) => format!("{r}/{}:{tag}", image.repository),
        None => format!("{}:{tag}", image.repository),
    }
}

/// Builds a drifted world for `desired`, with times around `now`.
pub fn from_desired(desired: &DesiredState, config: Config, now: Millis) -> World {
    let mut world = World::new(config);
    let mut registry_tags: BTreeMap<(String, String), BTreeMap<String, Millis>> = BTreeMap::new();

    for (index, spec) in desired.apps.values().enumerate() {
        let key = &spec.key;
        let h = hash(&key.name);
        let images = desired_images(spec);
        let keep = spec.keep_active.unwrap_or(3) as usize;
        let history = (keep + 3).max(6);
        let multiple = spec.revision_mode != Some(RevisionMode::Single);
        // Every fourth app, from the second on, runs in the other mode, so that a mode change
        // has work (by position, so that any tree of two or more apps has one).
        let live_multiple = if index % 4 == 1 { !multiple } else { multiple };

        // One tag list per container, oldest first; the desired tag itself is not deployed.
        let versions: BTreeMap<&String, Vec<String>> = images
            .iter()
            .map(|(c, img)| {
                let tag = img.tag.clone().unwrap_or_else(|| "1.0.0".to_owned());
                let mut older = older_versions(&tag, history);
                older.reverse();
                (c, older)
            })
            .collect();
        let mut named: Vec<String> = spec
            .traffic
            .iter()
            .flat_map(|t| t.named_revisions().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        named.sort();
        named.dedup();

        let first_container = images.keys().next().cloned().unwrap_or_default();
        let mut used = BTreeSet::new();
        let mut revisions = Vec::new();
        for k in 0..history {
            let tag_k = versions
                .get(&first_container)
                .and_then(|v| v.get(k))
                .cloned()
                .unwrap_or_else(|| format!("r{k}"));
            // Revisions the desired traffic names take the newest slots.
            let from_end = history - 1 - k;
            let name = match named.get(from_end) {
                Some(n) => n.clone(),
                None => {
                    let mut s = format!("{}--{}", key.name, suffix_of(&tag_k));
                    while used.contains(&s) || named.contains(&s) {
                        s.push('x');
                    }
                    s
                }
            };
            used.insert(name.clone());
            let suffix = name.split_once("--").map_or("", |(_, s)| s).to_owned();
            let containers: Vec<Value> = images
                .iter()
                .map(|(c, img)| {
                    let tag = versions
                        .get(c)
                        .and_then(|v| v.get(k))
                        .cloned()
                        .unwrap_or_else(|| "1.0.0".to_owned());
                    if let Some(reg) = &img.registry {
                        registry_tags
                            .entry((reg.clone(), img.repository.clone()))
                            .or_default()
                            .insert(tag.clone(), now - (history - k) as Millis * 3 * DAY);
                    }
                    container_json(c, &image_with_tag(img, &tag))
                })
                .collect();
            let created = now - (history - k) as Millis * 3 * DAY;
            let newest = k + 1 == history;
            let active = if live_multiple { k > 0 } else { newest };
            revisions.push(Revision {
                name,
                created,
                last_active: if active { now } else { created + DAY },
                active,
                template: json!({"revisionSuffix": suffix, "containers": containers, "scale": scale_json(spec)}),
                provisioning_state: "Provisioned".into(),
                running_state: if active { "Running" } else { "Stopped" }.into(),
                health_state: if active { "Healthy" } else { "None" }.into(),
                ready_at: None,
                fails: false,
                restarts: 0,
                replicas_since: None,
            });
        }
        // The desired images exist in their registries, so new revisions can start.
        for img in images.values() {
            if let (Some(reg), Some(tag)) = (&img.registry, &img.tag) {
                registry_tags
                    .entry((reg.clone(), img.repository.clone()))
                    .or_default()
                    .insert(tag.clone(), now - DAY);
            }
        }

        let current = revisions.last().cloned();
        let current_name = current.as_ref().map(|r| r.name.clone()).unwrap_or_default();
        let short = key.resource_group.trim_start_matches("rg-");
        let domain = format!("{}.uksouth.azurecontainerapps.io", short.replace('-', ""));
        let traffic = if live_multiple {
            json!([{"revisionName": current_name, "weight": 100}])
        } else {
            json!([{"latestRevision": true, "weight": 100}])
        };
        let registries: Vec<Value> = images
            .values()
            .filter_map(|i| i.registry.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|r| json!({"server": r, "identity": "system"}))
            .collect();
        let app = json!({
            "id": key.resource_id(),
            "name": key.name,
            "type": "Microsoft.App/containerApps",
            "location": "UK South",
            "tags": {"environment": short, "team": "platform", "cost-center": "xshopai"},
            "identity": {"type": "SystemAssigned", "principalId": format!("{:08x}-0000-4000-8000-{:012x}", h as u32, h & 0xffff_ffff_ffff), "tenantId": super::store::TENANT_ID},
            "systemData": {"createdBy": "platform-team@xshopai.com", "createdByType": "User", "createdAt": crate::time::format_arm(now - 90 * DAY), "lastModifiedBy": "platform-team@xshopai.com", "lastModifiedByType": "User", "lastModifiedAt": crate::time::format_arm(now - 3 * DAY)},
            "properties": {
                "provisioningState": "Succeeded",
                "runningStatus": "Running",
                "managedEnvironmentId": env_id(key),
                "environmentId": env_id(key),
                "workloadProfileName": "Consumption",
                "outboundIpAddresses": ["20.108.1.10", "20.108.1.11"],
                "latestRevisionName": current_name,
                "latestReadyRevisionName": current_name,
                "latestRevisionFqdn": format!("{current_name}.{domain}"),
                "customDomainVerificationId": format!("{:016X}{:016X}", splitmix(h), splitmix(h ^ 9)),
                "eventStreamEndpoint": format!("https://uksouth.azurecontainerapps.dev/subscriptions/{}/resourceGroups/{}/containerApps/{}/eventstream", key.subscription, key.resource_group, key.name),
                "configuration": {
                    "activeRevisionsMode": if live_multiple { "Multiple" } else { "Single" },
                    "maxInactiveRevisions": 100,
                    "ingress": {
                        "fqdn": format!("{}.{domain}", key.name),
                        "external": true,
                        "targetPort": 8080,
                        "transport": "auto",
                        "allowInsecure": false,
                        "traffic": traffic,
                        "stickySessions": {"affinity": "none"},
                        "ipSecurityRestrictions": [{"name": "office", "ipAddressRange": "203.0.113.0/24", "action": "Allow"}]
                    },
                    "secrets": [{"name": "jwt-secret"}, {"name": "db-connection"}],
                    "registries": registries,
                    "dapr": {"enabled": true, "appId": key.name.trim_start_matches("ca-"), "appPort": 8080, "appProtocol": "http", "enableApiLogging": false, "logLevel": "info"}
                },
                "template": current.as_ref().map(|r| {
                    let mut t = r.template.clone();
                    t["volumes"] = json!([{"name": "config", "storageType": "EmptyDir"}]);
                    t
                }).unwrap_or(Value::Null),
            }
        });
        // The revisions' snapshots carry the volumes too.
        for r in &mut revisions {
            r.template["volumes"] = json!([{"name": "config", "storageType": "EmptyDir"}]);
        }
        world
            .subscriptions
            .entry(key.subscription.clone())
            .or_insert_with(|| Subscription {
                display_name: short.to_owned(),
            });
        world.apps.insert(
            AppId::new(&key.subscription, &key.resource_group, &key.name),
            AppRecord {
                subscription: key.subscription.clone(),
                resource_group: key.resource_group.clone(),
                app,
                revisions,
                secret_values: BTreeMap::from([
                    ("jwt-secret".to_owned(), "sim-jwt".to_owned()),
                    ("db-connection".to_owned(), "sim-db".to_owned()),
                ]),
                lock: None,
                fail_next_revisions: 0,
                fail_next_operations: 0,
                traffic: Default::default(),
            },
        );
    }

    // Registries under retention get every named repository, even those no app uses.
    for r in &desired.registries {
        if let Repositories::Named(repos) = &r.repositories {
            for repo in repos {
                registry_tags
                    .entry((r.registry.clone(), repo.clone()))
                    .or_default();
            }
        }
    }
    for ((login, repo), tags) in registry_tags {
        let registry: &mut Registry = world.registries.entry(login).or_default();
        let repository = registry.repositories.entry(repo.clone()).or_default();
        // A long tail of old builds, one a day for 40 days, one of them locked.
        let mut all: BTreeMap<String, Millis> = (1..=40)
            .map(|d| (format!("build-{:04}", 1000 + d), now - (60 - d) * DAY))
            .collect();
        all.extend(tags);
        for (i, (tag, at)) in all.into_iter().enumerate() {
            let digest = digest_of(&repo, &tag);
            repository.manifests.insert(digest.clone());
            repository.tags.push(Tag {
                name: tag,
                digest,
                created: at,
                last_update: at,
                delete_enabled: i != 3,
                write_enabled: true,
            });
        }
    }
    world
}

/// The file beside a seed tree that says what its apps' users do: `DIR/.simulator.yaml`. The
/// desired-state loader skips dot-files, so it never counts as desired state.
pub const SIDECAR: &str = ".simulator.yaml";

/// `.simulator.yaml`: request rates, and how images and revisions answer.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Sidecar {
    /// Requests per second to every app of the seed.
    #[serde(default)]
    requests_per_second: Option<f64>,
    /// Per app name, overriding `requestsPerSecond`.
    #[serde(default)]
    apps: BTreeMap<String, SidecarApp>,
    /// By full image reference.
    #[serde(default)]
    images: BTreeMap<String, Behaviour>,
    /// By revision name.
    #[serde(default)]
    revisions: BTreeMap<String, Behaviour>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SidecarApp {
    requests_per_second: f64,
}

/// Applies `DIR/.simulator.yaml`, if there is one, to a world seeded from `DIR`, as of `now`.
/// Returns whether there was one.
///
/// # Errors
/// The file cannot be read or parsed, or names an app the seed does not have, or a value out
/// of range; the message names the file.
pub fn apply_sidecar(
    world: &mut World,
    dir: &std::path::Path,
    now: Millis,
) -> Result<bool, String> {
    let path = dir.join(SIDECAR);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let here = path.display();
    let sidecar: Sidecar = if text.trim().is_empty() {
        Sidecar::default()
    } else {
        serde_yaml::from_str(&text).map_err(|e| format!("{here}: {e}"))?
    };
    let names: BTreeSet<String> = world.apps.keys().map(|id| id.name.clone()).collect();
    for name in sidecar.apps.keys() {
        if !names.contains(&name.to_ascii_lowercase()) {
            return Err(format!(
                "{here}: apps.{name}: the seed has no app `{name}` (it has {})",
                names.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let rate_ok = |r: f64| r.is_finite() && (0.0..=1_000_000.0).contains(&r);
    if let Some(r) = sidecar.requests_per_second
        && !rate_ok(r)
    {
        return Err(format!(
            "{here}: requestsPerSecond {r} must be between 0 and 1000000"
        ));
    }
    for (name, a) in &sidecar.apps {
        if !rate_ok(a.requests_per_second) {
            return Err(format!(
                "{here}: apps.{name}.requestsPerSecond {} must be between 0 and 1000000",
                a.requests_per_second
            ));
        }
    }
    for (kind, map) in [
        ("images", &sidecar.images),
        ("revisions", &sidecar.revisions),
    ] {
        for (key, b) in map {
            b.check()
                .map_err(|e| format!("{here}: {kind}.{key}: {e}"))?;
        }
    }
    let lower: BTreeMap<String, f64> = sidecar
        .apps
        .iter()
        .map(|(n, a)| (n.to_ascii_lowercase(), a.requests_per_second))
        .collect();
    let ids: Vec<AppId> = world.apps.keys().cloned().collect();
    for id in ids {
        let rate = lower
            .get(&id.name)
            .copied()
            .or(sidecar.requests_per_second)
            .unwrap_or(0.0);
        if rate > 0.0 {
            world
                .set_request_rate(&id, rate, now)
                .map_err(|e| e.message)?;
        }
    }
    world.behaviours.images.extend(sidecar.images);
    world.behaviours.revisions.extend(
        sidecar
            .revisions
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v)),
    );
    Ok(true)
}

fn scale_json(spec: &AppSpec) -> Value {
    let (min, max) = match spec.replicas {
        // Drift: other bounds than desired.
        Some(r) => {
            let max = (r.max / 2).max(1);
            (r.min.saturating_sub(1).min(max), max)
        }
        None => (1, 5),
    };
    json!({
        "minReplicas": min,
        "maxReplicas": max,
        "cooldownPeriod": 300,
        "pollingInterval": 30,
        "rules": [{"name": "http-scaling", "http": {"metadata": {"concurrentRequests": "50"}}}]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_versions_count_down() {
        assert_eq!(older_versions("v1.2.0", 3), ["v1.1.9", "v1.1.8", "v1.1.7"]);
        assert_eq!(older_versions("2.0.1", 2), ["2.0.0", "1.9.9"]);
        let other = older_versions("main-abc1234", 2);
        assert_eq!(other.len(), 2);
        assert!(
            other
                .iter()
                .all(|t| t.starts_with("main-") && t != "main-abc1234")
        );
        assert_eq!(suffix_of("v1.7.2"), "v172");
        assert_eq!(suffix_of("1.0.0"), "r100");
    }
}

//! Registry tag retention: the runbook's "keep the last 10 tags per image", done safely.
//!
//! # Guarantees
//! - A tag is never deleted while any revision (active or not) of any container app in any
//!   subscription the desired state names runs it, by tag or by digest, nor while a desired
//!   `images` entry names it, nor while it is locked (`deleteEnabled: false`).
//! - That protected set comes from a complete read: if any list fails, the pass deletes
//!   nothing at all (an unread app might run any image).
//! - At most `cap` tags are deleted per pass (default 100), so a mistaken `keepLast: 1` cannot
//!   empty a registry at once; what the cap holds back is reported and waits for later passes.
//! - With `deleteImages: true`, an image (manifest) is deleted only when no kept or protected
//!   tag points at its digest.
//!
//! [`plan_repository`] is pure: tags + protected set + now -> what to delete and what is kept.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use serde::Serialize;

use crate::acr::{AcrClient, TagInfo};
use crate::arm::ArmClient;
use crate::spec::{DesiredState, RegistryRetention, Repositories};
use crate::time::Millis;

/// Deletions allowed per pass, across all policies, unless told otherwise.
pub const DEFAULT_CAP: usize = 100;

/// Who uses an image: for "kept because" messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct User(pub String);

/// Images in use, by (registry, repository) -> tag or digest -> who uses it.
#[derive(Debug, Default, Clone)]
pub struct Protected {
    tags: BTreeMap<(String, String), BTreeMap<String, User>>,
    digests: BTreeMap<(String, String), BTreeMap<String, User>>,
}

impl Protected {
    /// Records that `user` runs `image`.
    pub fn add(&mut self, image: &str, user: &str) {
        let Some((registry, repository, tag, digest)) = split_image(image) else {
            return;
        };
        let k = (registry, repository);
        if let Some(t) = tag {
            self.tags
                .entry(k.clone())
                .or_default()
                .entry(t)
                .or_insert_with(|| User(user.to_owned()));
        }
        if let Some(d) = digest {
            self.digests
                .entry(k)
                .or_default()
                .entry(d)
                .or_insert_with(|| User(user.to_owned()));
        }
    }

    fn by_tag(&self, registry: &str, repo: &str, tag: &str) -> Option<&User> {
        self.tags
            .get(&(registry.to_owned(), repo.to_owned()))?
            .get(tag)
    }

    fn by_digest(&self, registry: &str, repo: &str, digest: &str) -> Option<&User> {
        self.digests
            .get(&(registry.to_owned(), repo.to_owned()))?
            .get(digest)
    }
}

/// `registry/repo[:tag][@digest]` -> (registry, repo, tag, digest); no registry: Docker Hub,
/// which no policy can name. A reference without tag or digest means `latest`.
fn split_image(image: &str) -> Option<(String, String, Option<String>, Option<String>)> {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d.to_owned())),
        None => (image, None),
    };
    let (registry, rest) = name.split_once('/')?;
    if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
        return None;
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (
            &rest[..last_slash + i],
            Some(rest[last_slash + i + 1..].to_owned()),
        ),
        None => (
            rest,
            if digest.is_none() {
                Some("latest".to_owned())
            } else {
                None
            },
        ),
    };
    Some((registry.to_ascii_lowercase(), repo.to_owned(), tag, digest))
}

/// Why a tag stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "camelCase")]
pub enum Kept {
    /// Among the newest `keepLast`.
    Newest,
    /// Younger than `olderThan`.
    TooYoung,
    /// A revision or a desired image uses the tag.
    #[serde(rename_all = "camelCase")]
    InUse {
        /// Who.
        by: String,
    },
    /// A revision runs its digest.
    #[serde(rename_all = "camelCase")]
    DigestInUse {
        /// Who.
        by: String,
    },
    /// `deleteEnabled: false`.
    Locked,
}

/// The decision for one repository.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoPlan {
    /// Registry login server.
    pub registry: String,
    /// Repository.
    pub repository: String,
    /// Tags to delete, newest first.
    pub delete: Vec<TagInfo>,
    /// Manifests to delete (`deleteImages`), once their tags are gone.
    pub delete_manifests: Vec<String>,
    /// Tags beyond keepLast and old enough that stay anyway, with why.
    pub protected: Vec<(String, Kept)>,
    /// Tags the cap held back for a later pass.
    pub held_back: usize,
    /// Tags that stay after this run: the newest, the too young, the protected and those
    /// held back.
    pub kept: usize,
}

impl Serialize for TagInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("TagInfo", 2)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("digest", &self.digest)?;
        st.end()
    }
}

/// Decides one repository. Pure. `cap` is what is left of the pass's deletion budget; it is
/// reduced by what this plan deletes.
pub fn plan_repository(
    policy: &RegistryRetention,
    repository: &str,
    tags: &[TagInfo],
    protected: &Protected,
    now: Millis,
    cap: &mut usize,
) -> RepoPlan {
    let registry = policy.registry.as_str();
    let mut sorted: Vec<&TagInfo> = tags.iter().collect();
    sorted.sort_by(|a, b| {
        b.last_update
            .cmp(&a.last_update)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut plan = RepoPlan {
        registry: registry.to_owned(),
        repository: repository.to_owned(),
        ..RepoPlan::default()
    };
    let mut kept_digests: BTreeSet<&str> = BTreeSet::new();
    let mut candidates = Vec::new();
    for (i, t) in sorted.iter().enumerate() {
        let age = t.last_update.map(|u| now - u);
        let keep = if i < policy.keep_last as usize {
            Some(Kept::Newest)
        } else if policy
            .older_than
            .is_some_and(|min| age.is_none_or(|a| a < min.as_millis() as i64))
        {
            Some(Kept::TooYoung)
        } else if let Some(u) = protected.by_tag(registry, repository, &t.name) {
            Some(Kept::InUse { by: u.0.clone() })
        } else if let Some(u) = protected.by_digest(registry, repository, &t.digest) {
            Some(Kept::DigestInUse { by: u.0.clone() })
        } else if !t.delete_enabled {
            Some(Kept::Locked)
        } else {
            None
        };
        match keep {
            Some(k) => {
                kept_digests.insert(&t.digest);
                if !matches!(k, Kept::Newest | Kept::TooYoung) {
                    plan.protected.push((t.name.clone(), k));
                }
            }
            None => candidates.push(*t),
        }
    }
    for t in candidates {
        if *cap == 0 {
            plan.held_back += 1;
            kept_digests.insert(&t.digest);
            continue;
        }
        *cap -= 1;
        plan.delete.push(t.clone());
    }
    plan.kept = tags.len() - plan.delete.len();
    if policy.delete_images {
        let mut seen = BTreeSet::new();
        for t in &plan.delete {
            let in_use = kept_digests.contains(t.digest.as_str())
                || protected
                    .by_digest(registry, repository, &t.digest)
                    .is_some();
            if !in_use && !t.digest.is_empty() && seen.insert(t.digest.clone()) {
                plan.delete_manifests.push(t.digest.clone());
            }
        }
    }
    plan
}

/// The retention plan of a pass.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPlan {
    /// Per repository, in a fixed order.
    pub repositories: Vec<RepoPlan>,
    /// Problems that stopped some or all deletions (nothing is deleted where they apply).
    pub errors: Vec<String>,
}

impl RetentionPlan {
    /// Tags to delete in all.
    pub fn deletions(&self) -> usize {
        self.repositories
            .iter()
            .map(|r| r.delete.len() + r.delete_manifests.len())
            .sum()
    }

    /// Tags the cap held back.
    pub fn held_back(&self) -> usize {
        self.repositories.iter().map(|r| r.held_back).sum()
    }
}

/// Every image that any revision of any app in `desired`'s subscriptions runs, and every
/// desired image. An error if any read failed: then nothing may be deleted.
///
/// # Errors
/// A list failed; the message names it.
/// The images each app's revisions run, remembered with the app's `latestRevisionName`, so
/// `run` lists an app's revisions again only when it has a new one.
///
/// Revisions are immutable and every new one becomes the app's latest (assumed from
/// learn.microsoft.com/azure/container-apps/revisions: "revisions are immutable snapshots";
/// `latestRevisionName` in the 2026-01-01 spec). A revision purged since only leaves its images
/// protected a little longer, which is the safe side.
#[derive(Debug, Default)]
pub struct RevisionImages {
    by_app: std::sync::Mutex<ImagesByApp>,
}

/// App id (lower case) -> (latestRevisionName, (revision, image) pairs).
type ImagesByApp = BTreeMap<String, (String, Vec<(String, String)>)>;

impl RevisionImages {
    fn lock(&self) -> std::sync::MutexGuard<'_, ImagesByApp> {
        self.by_app
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, app: &crate::arm::ContainerApp) -> Option<Vec<(String, String)>> {
        let latest = app.properties.latest_revision_name.as_deref()?;
        self.lock()
            .get(&app.id.to_ascii_lowercase())
            .filter(|(l, _)| l == latest)
            .map(|(_, images)| images.clone())
    }

    /// Whether the images of every one of `apps` are known (from some latest revision).
    pub fn covers<'a>(&self, apps: impl IntoIterator<Item = &'a crate::spec::AppKey>) -> bool {
        let known = self.lock();
        apps.into_iter()
            .all(|k| known.contains_key(&k.resource_id().to_ascii_lowercase()))
    }

    /// Learns the images of `app`'s revisions from a list of them read after `app` (the
    /// executor reads them to plan; retention then needs no read of its own until the app has
    /// a new latest revision).
    pub fn learn(&self, app: &crate::arm::ContainerApp, revisions: &[crate::arm::Revision]) {
        self.put(app, &images_of(revisions));
    }

    fn put(&self, app: &crate::arm::ContainerApp, images: &[(String, String)]) {
        if let Some(latest) = &app.properties.latest_revision_name {
            self.lock().insert(
                app.id.to_ascii_lowercase(),
                (latest.clone(), images.to_vec()),
            );
        }
    }
}

/// Every image in use or desired, from a complete read (see the module docs). Revisions are
/// listed for every app, except those `cache` knows at the same latest revision.
///
/// # Errors
/// Any read failed: nothing may be deleted.
pub async fn protected_images(
    arm: &ArmClient,
    desired: &DesiredState,
    concurrency: usize,
    cache: &RevisionImages,
) -> Result<Protected, String> {
    let mut protected = Protected::default();
    for spec in desired.apps.values() {
        for image in spec.images.values() {
            protected.add(&image.full, &format!("the desired state of {}", spec.key));
        }
    }
    let mut apps = Vec::new();
    for sub in &desired.subscriptions {
        let list = arm
            .list_apps(sub, None)
            .await
            .map_err(|e| format!("cannot list the apps of subscription {sub}: {e}"))?;
        apps.extend(list);
    }
    let results: Vec<_> = futures_util::stream::iter(apps)
        .map(|app| async move {
            if let Some(images) = cache.get(&app) {
                return (app, Ok(images));
            }
            let key = app_key(&app);
            let revisions = match &key {
                Some(k) => arm
                    .list_revisions(k)
                    .await
                    .map(|list| images_of(&list))
                    .map_err(|e| format!("cannot list the revisions of {}: {e}", app.name)),
                None => Err(format!("app {} has no readable id", app.name)),
            };
            if let Ok(images) = &revisions {
                cache.put(&app, images);
            }
            (app, revisions)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for (app, revisions) in results {
        let revisions = revisions?;
        for c in &app.properties.template.containers {
            if let Some(image) = &c.image {
                protected.add(image, &format!("app {}", app.name));
            }
        }
        // Init containers run images too; the typed model reads only `containers`.
        for c in app.raw.template_init_containers() {
            if let Some(image) = c.get("image").and_then(serde_json::Value::as_str) {
                protected.add(image, &format!("app {}", app.name));
            }
        }
        for (revision, image) in &revisions {
            protected.add(image, &format!("revision {revision}"));
        }
    }
    Ok(protected)
}

/// (revision, image) for every container of every revision.
fn images_of(revisions: &[crate::arm::Revision]) -> Vec<(String, String)> {
    revisions
        .iter()
        .flat_map(|r| {
            r.properties
                .template
                .containers
                .iter()
                .filter_map(|c| c.image.clone())
                .map(|i| (r.name.clone(), i))
        })
        .collect()
}

fn app_key(app: &crate::arm::ContainerApp) -> Option<crate::spec::AppKey> {
    let parts: Vec<&str> = app.id.split('/').collect();
    let sub = parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case("subscriptions"))
        .and_then(|i| parts.get(i + 1))?;
    let rg = parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case("resourceGroups"))
        .and_then(|i| parts.get(i + 1))?;
    Some(crate::spec::AppKey::new(sub, rg, &app.name))
}

/// Plans every policy of `desired`: reads the protected set and the tags.
pub async fn plan(
    arm: &ArmClient,
    acr: &AcrClient,
    desired: &DesiredState,
    now: Millis,
    cap: usize,
    concurrency: usize,
) -> RetentionPlan {
    plan_with(
        arm,
        acr,
        desired,
        now,
        cap,
        concurrency,
        &RevisionImages::default(),
    )
    .await
}

/// [`plan`], reusing what `cache` knows of revisions from earlier runs.
pub async fn plan_with(
    arm: &ArmClient,
    acr: &AcrClient,
    desired: &DesiredState,
    now: Millis,
    cap: usize,
    concurrency: usize,
    cache: &RevisionImages,
) -> RetentionPlan {
    let mut out = RetentionPlan::default();
    if desired.registries.is_empty() {
        return out;
    }
    let protected = match protected_images(arm, desired, concurrency, cache).await {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(format!(
                "{e}; no tag is deleted this pass, since an unread app might run any of them"
            ));
            return out;
        }
    };
    let mut budget = cap;
    for policy in &desired.registries {
        let repos = match &policy.repositories {
            Repositories::Named(r) => r.clone(),
            Repositories::All => match acr.list_repositories(&policy.registry).await {
                Ok(r) => r,
                Err(e) => {
                    out.errors.push(format!(
                        "{}: cannot list repositories: {e}",
                        policy.registry
                    ));
                    continue;
                }
            },
        };
        for repo in repos {
            match acr.list_tags(&policy.registry, &repo).await {
                Ok(tags) => out.repositories.push(plan_repository(
                    policy,
                    &repo,
                    &tags,
                    &protected,
                    now,
                    &mut budget,
                )),
                Err(e) => out.errors.push(format!("{}/{repo}: {e}", policy.registry)),
            }
        }
    }
    out
}

/// What carrying out a retention plan did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionReport {
    /// Tags deleted.
    pub tags_deleted: usize,
    /// Manifests deleted.
    pub manifests_deleted: usize,
    /// Failures, one line each.
    pub errors: Vec<String>,
}

/// Deletes what `plan` says, tags first, then orphaned manifests.
pub async fn apply(acr: &AcrClient, plan: &RetentionPlan) -> RetentionReport {
    let mut report = RetentionReport {
        errors: plan.errors.clone(),
        ..RetentionReport::default()
    };
    for repo in &plan.repositories {
        for tag in &repo.delete {
            match acr
                .delete_tag(&repo.registry, &repo.repository, &tag.name)
                .await
            {
                Ok(_) => {
                    report.tags_deleted += 1;
                    tracing::info!(registry = %repo.registry, repository = %repo.repository, tag = %tag.name, "tag deleted");
                }
                Err(e) => report.errors.push(format!(
                    "{}/{}:{}: {e}",
                    repo.registry, repo.repository, tag.name
                )),
            }
        }
        for digest in &repo.delete_manifests {
            match acr
                .delete_manifest(&repo.registry, &repo.repository, digest)
                .await
            {
                Ok(_) => report.manifests_deleted += 1,
                Err(e) => report.errors.push(format!(
                    "{}/{}@{digest}: {e}",
                    repo.registry, repo.repository
                )),
            }
        }
    }
    report
}

/// Plan lines for people.
pub fn describe(plan: &RetentionPlan, policies: &[RegistryRetention]) -> Vec<String> {
    let mut lines = Vec::new();
    for repo in &plan.repositories {
        let keep = policies
            .iter()
            .find(|p| p.registry == repo.registry)
            .map_or(0, |p| p.keep_last);
        if repo.delete.is_empty() && repo.protected.is_empty() && repo.held_back == 0 {
            continue;
        }
        lines.push(format!("~ {}/{}", repo.registry, repo.repository));
        for t in &repo.delete {
            lines.push(format!(
                "    - tag {}:{} (keep last {keep})",
                repo.repository, t.name
            ));
        }
        for d in &repo.delete_manifests {
            lines.push(format!(
                "    - image {}@{d} (no kept tag points at it)",
                repo.repository
            ));
        }
        for (tag, why) in &repo.protected {
            let why = match why {
                Kept::InUse { by } => format!("in use by {by}"),
                Kept::DigestInUse { by } => format!("its image is in use by {by}"),
                Kept::Locked => "locked (deleteEnabled: false)".to_owned(),
                Kept::Newest | Kept::TooYoung => continue,
            };
            lines.push(format!("    = keep {}:{tag}: {why}", repo.repository));
        }
        if repo.held_back > 0 {
            lines.push(format!(
                "    … {} more held back by the per-pass deletion cap",
                repo.held_back
            ));
        }
    }
    for e in &plan.errors {
        lines.push(format!("! {e}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Source;

    fn policy(
        keep_last: u32,
        older_than_days: Option<u64>,
        delete_images: bool,
    ) -> RegistryRetention {
        RegistryRetention {
            name: "p".into(),
            source: Source {
                file: "r.yaml".into(),
                pos: crate::spec::Pos::START,
            },
            registry: "cr.example.io".into(),
            repositories: Repositories::Named(vec!["api".into()]),
            keep_last,
            older_than: older_than_days.map(|d| std::time::Duration::from_secs(d * 86_400)),
            delete_images,
        }
    }

    const DAY: Millis = 86_400_000;

    fn tags(n: usize) -> Vec<TagInfo> {
        (0..n)
            .map(|i| TagInfo {
                name: format!("v{i}"),
                digest: format!("sha256:{i:064x}"),
                created: Some(i as i64 * DAY),
                last_update: Some(i as i64 * DAY),
                delete_enabled: true,
            })
            .collect()
    }

    #[test]
    fn keeps_the_newest_the_young_the_used_and_the_locked() {
        let mut t = tags(20);
        t[3].delete_enabled = false;
        let mut p = Protected::default();
        p.add("cr.example.io/api:v5", "revision ca-a--r5");
        p.add(
            &format!("cr.example.io/api@sha256:{:064x}", 7),
            "revision ca-a--r7",
        );
        let mut cap = 100;
        let plan = plan_repository(
            &policy(5, Some(3), false),
            "api",
            &t,
            &p,
            20 * DAY,
            &mut cap,
        );
        let deleted: Vec<&str> = plan.delete.iter().map(|t| t.name.as_str()).collect();
        // v19..v15 newest; v17.. are young anyway; v5 in use, v7 digest in use, v3 locked.
        assert_eq!(
            deleted,
            [
                "v14", "v13", "v12", "v11", "v10", "v9", "v8", "v6", "v4", "v2", "v1", "v0"
            ]
        );
        assert_eq!(cap, 88);
        let kept: Vec<&str> = plan.protected.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(kept, ["v7", "v5", "v3"]);
        // 20 tags: the 12 deleted go; the 5 newest (the young among them) and 3 protected stay.
        assert_eq!(plan.kept, 8);
    }

    #[test]
    fn the_cap_holds_and_says_so() {
        let mut cap = 4;
        let plan = plan_repository(
            &policy(1, None, false),
            "api",
            &tags(10),
            &Protected::default(),
            10 * DAY,
            &mut cap,
        );
        assert_eq!(plan.delete.len(), 4);
        assert_eq!(plan.held_back, 5);
        assert_eq!(plan.kept, 6, "the newest and the 5 held back stay");
        assert_eq!(cap, 0);
    }

    #[test]
    fn images_go_only_when_no_kept_tag_shares_their_digest() {
        let mut t = tags(6);
        t[0].digest = t[5].digest.clone(); // v0 shares v5's (kept) image
        t[1].digest = t[2].digest.clone(); // v1 and v2 share an image, both deleted
        let mut cap = 100;
        let plan = plan_repository(
            &policy(3, None, true),
            "api",
            &t,
            &Protected::default(),
            6 * DAY,
            &mut cap,
        );
        let deleted: Vec<&str> = plan.delete.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(deleted, ["v2", "v1", "v0"]);
        assert_eq!(
            plan.delete_manifests,
            [format!("sha256:{:064x}", 2)],
            "once, and not v5's"
        );
    }

    #[test]
    fn image_references() {
        assert_eq!(
            split_image("cr.example.io/team/api:v1"),
            Some((
                "cr.example.io".into(),
                "team/api".into(),
                Some("v1".into()),
                None
            ))
        );
        assert_eq!(
            split_image("127.0.0.1:5000/api"),
            Some((
                "127.0.0.1:5000".into(),
                "api".into(),
                Some("latest".into()),
                None
            ))
        );
        let d = format!("sha256:{:064x}", 1);
        assert_eq!(
            split_image(&format!("CR.example.io/api@{d}")),
            Some(("cr.example.io".into(), "api".into(), None, Some(d)))
        );
        assert_eq!(split_image("nginx:1.27"), None);
    }
}

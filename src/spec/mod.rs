//! Desired state: what the platform team committed to git, read and checked.
//!
//! Data flows one way through three steps:
//!
//! 1. [`mod@load`] finds the `*.yaml`/`*.yml` files under each path (sorted, hidden entries
//!    skipped), refuses files that are too large, not UTF-8 or nested too deeply ([`nesting`],
//!    before any YAML parser reads them), splits them into documents and deserializes each
//!    into the [`raw`] types, reporting every problem of each. Positions come from [`index`].
//! 2. [`validate`] applies `Defaults` inheritance and every rule of the contract, collecting
//!    *all* problems as [`Diagnostic`]s (`FILE:LINE:COLUMN: message`), and turns the raw
//!    documents into the checked types below.
//! 3. The result is a [`DesiredState`]: apps keyed by [`AppKey`], registry policies, and
//!    notification targets.
//!
//! A file with any problem contributes nothing: a half-read file never becomes desired state.
//! The per-file result ([`load::ParsedFile`]) is what the controller keeps as "last good" so
//! that a broken edit leaves that file's apps as they were.

pub mod index;
pub mod load;
pub mod nesting;
pub mod raw;
pub mod schema;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use index::Pos;
pub use load::{LoadOptions, load};
pub use raw::RevisionMode;

/// One problem in the desired state, pinned to the place a person would edit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Diagnostic {
    /// The file, as it was reached from the path given on the command line.
    pub file: PathBuf,
    /// Where in the file. A problem with a file as a whole (unreadable, too large) is at
    /// 1:1, so that every line about a file keeps the `FILE:LINE:COLUMN: message` shape; None
    /// only for what has no lines: a directory, a path that does not exist, `--subscription`.
    #[serde(flatten)]
    pub pos: Option<Pos>,
    /// What is wrong, naming the field, and what to do where that helps.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at `pos` in `file`.
    pub fn new(file: impl Into<PathBuf>, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            pos: Some(pos),
            message: message.into(),
        }
    }

    /// A problem with something that has no lines: a directory, a path that does not exist,
    /// a command-line option. (A problem with a whole file is [`Diagnostic::new`] at
    /// [`Pos::START`].)
    pub fn whole(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            pos: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(pos) => write!(f, "{}:{}: {}", self.file.display(), pos, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Where a document came from: for messages, status and "last good" bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file.
    pub file: PathBuf,
    /// The position of the document's `metadata.name`.
    pub pos: Pos,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.pos)
    }
}

/// Identifies one Azure Container App.
///
/// Azure compares subscription ids and resource group names without regard to case, so both
/// are stored lower-cased; app names are lower-case by Azure's own rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppKey {
    /// Subscription id (GUID), lower case.
    pub subscription: String,
    /// Resource group, lower case.
    pub resource_group: String,
    /// The Container App's name.
    pub name: String,
}

impl AppKey {
    /// Builds a key, normalizing case as Azure does.
    pub fn new(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self {
            subscription: subscription.to_ascii_lowercase(),
            resource_group: resource_group.to_lowercase(),
            name: name.to_owned(),
        }
    }

    /// The app's ARM resource id.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.App/containerApps/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

impl fmt::Display for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.resource_group, self.name)
    }
}

/// Everything the controller is asked to maintain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    /// Managed apps. Apps not in here are never touched.
    pub apps: BTreeMap<AppKey, AppSpec>,
    /// Registry tag retention policies.
    pub registries: Vec<RegistryRetention>,
    /// Every subscription that a document or Defaults names (plus `--subscription`): registry
    /// retention protects the images of every app in all of them.
    pub subscriptions: BTreeSet<String>,
    /// Where events are sent (`kind: Notification`).
    pub notifications: Vec<crate::notify::NotificationSpec>,
}

/// The checked desired state of one app. `None` means "not owned: leave as it is".
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    /// Which app.
    pub key: AppKey,
    /// Where it is written.
    pub source: Source,
    /// Observe and report only.
    pub suspend: bool,
    /// `configuration.activeRevisionsMode`.
    pub revision_mode: Option<RevisionMode>,
    /// Container name -> image. Empty when the spec names no images.
    pub images: Images,
    /// `template.scale` bounds.
    pub replicas: Option<Replicas>,
    /// Where traffic goes.
    pub traffic: Option<TrafficSpec>,
    /// `revisionRetention.keepActive`.
    pub keep_active: Option<u32>,
    /// `restartGeneration`.
    pub restart_generation: Option<u64>,
    /// `rollout`: new revisions walk these steps (owns traffic; excludes `traffic` and
    /// `activeRevision`).
    pub rollout: Option<crate::rollout::RolloutSpec>,
}

/// Replica bounds; `min <= max`, `1 <= max <= 1000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    /// `template.scale.minReplicas`.
    pub min: u32,
    /// `template.scale.maxReplicas`.
    pub max: u32,
}

/// Where an app's ingress traffic should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrafficSpec {
    /// `activeRevision`: this revision active and carrying 100%.
    Pin(String),
    /// `traffic`: an explicit split whose weights sum to 100.
    Split(Vec<TrafficTarget>),
}

impl TrafficSpec {
    /// The revisions this spec names by name (protected from retention).
    pub fn named_revisions(&self) -> impl Iterator<Item = &str> {
        let (pin, split): (Option<&str>, &[TrafficTarget]) = match self {
            TrafficSpec::Pin(r) => (Some(r), &[]),
            TrafficSpec::Split(t) => (None, t),
        };
        pin.into_iter()
            .chain(split.iter().filter_map(|t| match &t.to {
                TrafficTo::Revision(r) => Some(r.as_str()),
                _ => None,
            }))
    }
}

/// One traffic rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficTarget {
    /// Which revision.
    pub to: TrafficTo,
    /// Percent, 0..=100.
    pub weight: u8,
}

/// The target of a traffic rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrafficTo {
    /// A revision by name.
    Revision(String),
    /// The latest ready revision (`latestRevision: true`).
    Latest,
    /// The revision carrying this label.
    Label(String),
}

/// An app's images: container name -> image, sorted by container name, one entry per name.
///
/// A sorted slice rather than a `BTreeMap`: an app names one or two containers, and a map's
/// first node has room for eleven, about 1.5 KB an app for as long as the desired state is
/// held (1.5 MB of a 1,000-app controller's RSS at rest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Images(Box<[(String, ImageRef)]>);

impl Images {
    /// The image of `container`.
    pub fn get(&self, container: &str) -> Option<&ImageRef> {
        self.0
            .binary_search_by(|(name, _)| name.as_str().cmp(container))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// (container, image), by container name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ImageRef)> {
        self.0.iter().map(|(name, image)| (name, image))
    }

    /// The container names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(name, _)| name)
    }

    /// The images, by container name.
    pub fn values(&self) -> impl Iterator<Item = &ImageRef> {
        self.0.iter().map(|(_, image)| image)
    }

    /// How many containers are named.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no container is named.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Sorted by container name; a name given twice keeps its last image, as a map would.
impl FromIterator<(String, ImageRef)> for Images {
    fn from_iter<I: IntoIterator<Item = (String, ImageRef)>>(iter: I) -> Self {
        let map: BTreeMap<String, ImageRef> = iter.into_iter().collect();
        Self(map.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, ImageRef); N]> for Images {
    fn from(entries: [(String, ImageRef); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Images {
    type Item = (&'a String, &'a ImageRef);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, ImageRef)>,
        fn(&'a (String, ImageRef)) -> (&'a String, &'a ImageRef),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(name, image)| (name, image))
    }
}

/// A parsed image reference: `[registry/]repository(:tag|@digest)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// The reference exactly as written (what is sent to Azure).
    pub full: String,
    /// The registry host (`crxshopaiprod.azurecr.io`), if the reference names one.
    pub registry: Option<String>,
    /// The repository path within the registry (`user-service`, `team/api`).
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The digest (`sha256:...`), if any.
    pub digest: Option<String>,
}

/// A checked `RegistryRetention` document.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryRetention {
    /// `metadata.name`.
    pub name: String,
    /// Where it is written.
    pub source: Source,
    /// Login server, lower case, `host[:port]`.
    pub registry: String,
    /// Which repositories.
    pub repositories: Repositories,
    /// Newest tags kept per repository.
    pub keep_last: u32,
    /// Only tags older than this are deleted.
    pub older_than: Option<Duration>,
    /// Also delete untagged manifests.
    pub delete_images: bool,
}

/// The repositories a retention policy covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repositories {
    /// `["*"]`: every repository of the registry.
    All,
    /// These, sorted and without duplicates.
    Named(Vec<String>),
}

impl Repositories {
    /// Whether two policies could both cover one repository.
    pub fn overlaps(&self, other: &Repositories) -> Option<String> {
        match (self, other) {
            (Repositories::All, _) | (_, Repositories::All) => Some("*".to_owned()),
            (Repositories::Named(a), Repositories::Named(b)) => {
                a.iter().find(|r| b.contains(r)).cloned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(reference: &str) -> ImageRef {
        validate::parse_image(reference).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn images_read_like_the_map_they_replace() {
        let images: Images = [
            ("web".to_owned(), image("cr.io/web:1")),
            ("api".to_owned(), image("cr.io/api:1")),
            ("web".to_owned(), image("cr.io/web:2")),
        ]
        .into_iter()
        .collect();
        assert_eq!(images.len(), 2);
        assert_eq!(images.keys().collect::<Vec<_>>(), ["api", "web"]);
        assert_eq!(
            images.get("web").map(|i| i.full.as_str()),
            Some("cr.io/web:2")
        );
        assert_eq!(
            images.get("api").map(|i| i.full.as_str()),
            Some("cr.io/api:1")
        );
        assert!(images.get("worker").is_none());
        let pairs: Vec<(&String, &ImageRef)> = (&images).into_iter().collect();
        assert_eq!(pairs.len(), 2);
        assert!(Images::default().is_empty());
        // A reload compares specs to find what changed: the order written must not matter.
        let reordered = Images::from([
            ("web".to_owned(), image("cr.io/web:2")),
            ("api".to_owned(), image("cr.io/api:1")),
        ]);
        assert_eq!(images, reordered);
        assert_ne!(
            images,
            Images::from([("api".to_owned(), image("cr.io/api:1"))])
        );
    }
}

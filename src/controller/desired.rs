//! The controller's view of the desired state: reloaded when the files change, and never
//! worse than the last good version of each file.
//!
//! # Guarantees
//! - A file with any problem (it does not parse, or breaks a rule, alone or together with the
//!   others) contributes its **last good** version instead; a file that never was good
//!   contributes nothing. So a broken edit never reaches Azure, and every other file's apps go
//!   on being reconciled.
//! - The problems are kept for `/status`, `/metrics` and the log until the file is fixed.
//! - Changes are found by a fingerprint of the tree (paths, sizes, modification times), read
//!   every poll; a `git pull` that rewrites many files is one change once the tree is quiet.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::spec::load::{self, ParsedFile};
use crate::spec::validate;
use crate::spec::{DesiredState, Diagnostic, LoadOptions};

/// Paths, sizes and modification times: what "the tree changed" compares.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The desired state in force and what is wrong with the files.
#[derive(Debug, Default)]
pub struct DesiredStore {
    root: PathBuf,
    options: LoadOptions,
    last_good: BTreeMap<PathBuf, GoodFile>,
    /// The state in force (shared: a retention run reads it while passes go on, and a copy
    /// of 1,000 apps' specs is megabytes).
    pub state: std::sync::Arc<DesiredState>,
    /// Problems in the current files (empty when all are good).
    pub problems: Vec<Diagnostic>,
    /// Files whose last good version is in force instead of what is on disk.
    pub stale_files: BTreeSet<PathBuf>,
    fingerprint: Fingerprint,
}

/// A file's last good version, kept as the bytes that parsed and parsed again only when it
/// is needed (the file broke, alone or together with the others). Parsed, with the index of
/// where each key is written, it is several times its text: 3.0 MB at rest for 1,000 apps,
/// against their YAML's 0.36 MB.
#[derive(Debug)]
struct GoodFile {
    root: PathBuf,
    bytes: Box<[u8]>,
}

impl GoodFile {
    fn parse(&self, path: &Path) -> ParsedFile {
        load::parse_bytes(path, &self.root, &self.bytes)
    }
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reload {
    /// Whether the desired state in force changed.
    pub changed: bool,
    /// Apps whose desired spec changed, appeared or disappeared.
    pub apps: BTreeSet<crate::spec::AppKey>,
}

impl DesiredStore {
    /// A store for the tree at `root` (nothing loaded yet).
    pub fn new(root: PathBuf, options: LoadOptions) -> Self {
        Self {
            root,
            options,
            ..Self::default()
        }
    }

    /// Paths, sizes and modification times of every file the loader would read.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut ignored = Vec::new();
        load::discover(std::slice::from_ref(&self.root), &mut ignored)
            .into_iter()
            .map(|(path, _)| {
                let meta = std::fs::metadata(&path).ok();
                let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
                let modified = meta.and_then(|m| m.modified().ok());
                (path, len, modified)
            })
            .collect()
    }

    /// Whether the tree changed since the last reload.
    pub fn has_changed(&self) -> bool {
        self.fingerprint() != self.fingerprint
    }

    /// Reads the tree again, keeping each broken file's last good version.
    pub fn reload(&mut self) -> Reload {
        self.fingerprint = self.fingerprint();
        let mut discovery_problems = Vec::new();
        let files = load::discover(std::slice::from_ref(&self.root), &mut discovery_problems);
        let present: BTreeSet<PathBuf> = files.iter().map(|(path, _)| path.clone()).collect();
        // Use each file as it is now unless it fails to parse; then its last good version.
        let mut chosen: BTreeMap<PathBuf, Chosen> = BTreeMap::new();
        let mut problems = discovery_problems;
        for (path, root) in files {
            let (parsed, bytes) = load::read_and_parse(&path, &root);
            if parsed.diagnostics.is_empty() {
                chosen.insert(path, (parsed, bytes.map(Vec::into_boxed_slice)));
            } else {
                problems.extend(parsed.diagnostics);
                if let Some(good) = self.last_good.get(&path) {
                    let parsed = good.parse(&path);
                    chosen.insert(path, (parsed, None));
                }
            }
        }
        // Rules over several files: a file whose fresh version breaks one falls back too.
        let mut loaded = assemble(&chosen, &self.options);
        for _ in 0..3 {
            let bad: BTreeSet<PathBuf> =
                loaded.diagnostics.iter().map(|d| d.file.clone()).collect();
            let fall_back: Vec<PathBuf> = bad
                .iter()
                .filter(|p| chosen.get(*p).is_some_and(|(_, fresh)| fresh.is_some()))
                .cloned()
                .collect();
            if fall_back.is_empty() {
                break;
            }
            problems.extend(
                loaded
                    .diagnostics
                    .iter()
                    .filter(|d| fall_back.contains(&d.file))
                    .cloned(),
            );
            for p in fall_back {
                match self.last_good.get(&p) {
                    Some(good) => {
                        let parsed = good.parse(&p);
                        chosen.insert(p, (parsed, None));
                    }
                    None => {
                        chosen.remove(&p);
                    }
                }
            }
            loaded = assemble(&chosen, &self.options);
        }
        // Whatever still has problems contributes nothing (assemble already leaves it out).
        problems.extend(loaded.diagnostics.iter().cloned());
        problems.sort();
        problems.dedup();

        self.stale_files = present
            .iter()
            .filter(|p| chosen.get(*p).is_none_or(|(_, fresh)| fresh.is_none()))
            .cloned()
            .collect();
        for (path, (parsed, fresh)) in chosen {
            if let Some(bytes) = fresh
                && !loaded.diagnostics.iter().any(|d| d.file == path)
            {
                let root = parsed.root;
                self.last_good.insert(path, GoodFile { root, bytes });
            }
        }
        // A file that is gone is gone: its apps are no longer managed.
        self.last_good.retain(|p, _| present.contains(p));

        let mut reload = Reload::default();
        for (key, spec) in &loaded.state.apps {
            if self.state.apps.get(key) != Some(spec) {
                reload.apps.insert(key.clone());
            }
        }
        for key in self.state.apps.keys() {
            if !loaded.state.apps.contains_key(key) {
                reload.apps.insert(key.clone());
            }
        }
        reload.changed = loaded.state != *self.state;
        if !problems.is_empty() {
            for p in &problems {
                tracing::warn!(problem = %p, "desired state: keeping the last good version of this file");
            }
        }
        self.problems = problems;
        self.state = std::sync::Arc::new(loaded.state);
        reload
    }

    /// The root of the tree.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// A file as a reload uses it, and its bytes when that is its fresh version (`None`: its last
/// good version, parsed again).
type Chosen = (ParsedFile, Option<Box<[u8]>>);

fn assemble(chosen: &BTreeMap<PathBuf, Chosen>, options: &LoadOptions) -> load::Loaded {
    let files: Vec<ParsedFile> = chosen.values().map(|(f, _)| f.clone()).collect();
    validate::assemble(&files, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: NAME, resourceGroup: rg, subscription: 00000000-0000-0000-0000-000000000000}\nspec:\n  replicas: {min: MIN, max: 5}\n";

    fn app(name: &str, min: u32) -> String {
        APP.replace("NAME", name).replace("MIN", &min.to_string())
    }

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "acar-desired-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn min_of(store: &DesiredStore, name: &str) -> Option<u32> {
        store
            .state
            .apps
            .iter()
            .find(|(k, _)| k.name == name)
            .and_then(|(_, s)| s.replicas.map(|r| r.min))
    }

    #[test]
    fn a_broken_edit_keeps_the_last_good_version_and_others_go_on() {
        let dir = tmp();
        std::fs::write(dir.join("a.yaml"), app("ca-a", 1)).unwrap();
        std::fs::write(dir.join("b.yaml"), app("ca-b", 1)).unwrap();
        let mut store = DesiredStore::new(dir.clone(), LoadOptions::default());
        let r = store.reload();
        assert!(r.changed && store.problems.is_empty());
        assert_eq!(r.apps.len(), 2);

        std::fs::write(dir.join("a.yaml"), "kind: [broken\n").unwrap();
        std::fs::write(dir.join("b.yaml"), app("ca-b", 2)).unwrap();
        let r = store.reload();
        assert_eq!(
            min_of(&store, "ca-a"),
            Some(1),
            "last good version of a.yaml"
        );
        assert_eq!(min_of(&store, "ca-b"), Some(2), "b.yaml goes on");
        assert_eq!(
            r.apps.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            ["ca-b"]
        );
        assert_eq!(store.problems.len(), 1);
        assert!(store.stale_files.contains(&dir.join("a.yaml")));

        // A valid file that breaks a rule together with another one falls back too.
        std::fs::write(dir.join("a.yaml"), app("ca-b", 3)).unwrap();
        store.reload();
        assert_eq!(min_of(&store, "ca-a"), Some(1));
        assert_eq!(min_of(&store, "ca-b"), Some(2));
        assert!(!store.problems.is_empty());

        std::fs::write(dir.join("a.yaml"), app("ca-a", 4)).unwrap();
        store.reload();
        assert!(store.problems.is_empty() && store.stale_files.is_empty());
        assert_eq!(min_of(&store, "ca-a"), Some(4));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_that_never_was_good_contributes_nothing() {
        let dir = tmp();
        std::fs::write(
            dir.join("bad.yaml"),
            app("ca-x", 9).replace("max: 5", "max: 2"),
        )
        .unwrap();
        let mut store = DesiredStore::new(dir.clone(), LoadOptions::default());
        store.reload();
        assert!(store.state.apps.is_empty());
        assert_eq!(store.problems.len(), 1);
        assert!(!store.has_changed());
        std::fs::write(dir.join("new.yaml"), app("ca-y", 1)).unwrap();
        assert!(store.has_changed());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! Raw documents -> checked desired state, collecting every problem.
//!
//! Each rule of contract section 3 is one small check that pushes a [`Diagnostic`] at the key a
//! person would edit. Checks never stop at the first problem; a document with any problem
//! yields no domain value, and a file with any problem contributes nothing to the state.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::index::DocIndex;
use super::load::{LoadOptions, Loaded, ParsedDoc, ParsedFile, RawDocument};
use super::raw::{self, ContainerAppDocument, RegistryRetentionDocument, RevisionMode};
use super::{
    AppKey, AppSpec, DesiredState, Diagnostic, ImageRef, Images, RegistryRetention, Replicas,
    Repositories, Source, TrafficSpec, TrafficTarget, TrafficTo,
};
use crate::duration;
use crate::notify::NotificationSpec;
use crate::rollout::{AnalysisSpec, Approval, NoData, Probe, RolloutSpec, Step, Strategy};

mod notification;

/// Collects diagnostics for one document: `problem(path, message)` locates `path` itself.
struct Checker<'a> {
    file: &'a Path,
    index: &'a DocIndex,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn problem(&mut self, path: &str, message: impl std::fmt::Display) {
        let pos = self.index.locate(path);
        self.out.push(Diagnostic::new(
            self.file,
            pos,
            format!("{path}: {message}"),
        ));
    }
}

/// The Defaults in force for one directory, each field with where it was set.
#[derive(Debug, Clone, Default)]
struct Inherited {
    subscription: Option<String>,
    resource_group: Option<String>,
    rollout: Option<raw::Rollout>,
}

/// Validates every parsed file together and builds the desired state.
pub fn assemble(files: &[ParsedFile], options: &LoadOptions) -> Loaded {
    let mut diagnostics: Vec<Diagnostic> =
        files.iter().flat_map(|f| f.diagnostics.clone()).collect();
    let mut state = DesiredState::default();

    if let Some(sub) = &options.subscription {
        if is_guid(sub) {
            state.subscriptions.insert(sub.to_ascii_lowercase());
        } else {
            diagnostics.push(Diagnostic::whole(
                "--subscription",
                format!("`{sub}` is not a subscription id (a GUID such as 00000000-0000-0000-0000-000000000000)"),
            ));
        }
    }

    let defaults = collect_defaults(files, &mut diagnostics, &mut state);

    let mut apps: Vec<AppSpec> = Vec::new();
    let mut registries: Vec<RegistryRetention> = Vec::new();
    let mut notifications: Vec<NotificationSpec> = Vec::new();
    for file in files {
        for ParsedDoc { doc, index } in &file.docs {
            let mut check = Checker {
                file: &file.path,
                index,
                out: Vec::new(),
            };
            match doc {
                RawDocument::Defaults(_) => {}
                RawDocument::ContainerApp(d) => {
                    let inherited = inherited_for(&file.path, &file.root, &defaults);
                    let app = check_app(d, &inherited, options, &mut check);
                    if let Some(app) = app.filter(|_| check.out.is_empty()) {
                        state.subscriptions.insert(app.key.subscription.clone());
                        apps.push(app);
                    }
                }
                RawDocument::RegistryRetention(d) => {
                    if let Some(r) = check_registry(d, &mut check).filter(|_| check.out.is_empty())
                    {
                        registries.push(r);
                    }
                }
                // Not per app: no Defaults apply.
                RawDocument::Notification(d) => {
                    if let Some(n) =
                        notification::check(d, &mut check).filter(|_| check.out.is_empty())
                    {
                        notifications.push(n);
                    }
                }
            }
            diagnostics.extend(check.out);
        }
    }

    report_duplicate_apps(&apps, &mut diagnostics);
    report_overlapping_registries(&registries, &mut diagnostics);
    notification::report_duplicates(&notifications, &mut diagnostics);

    // A file with any problem contributes nothing, so a half-valid file never reaches Azure.
    let bad_files: BTreeSet<&PathBuf> = diagnostics.iter().map(|d| &d.file).collect();
    for app in apps {
        if !bad_files.contains(&app.source.file) {
            state.apps.insert(app.key.clone(), app);
        }
    }
    state.registries = registries
        .into_iter()
        .filter(|r| !bad_files.contains(&r.source.file))
        .collect();
    state.notifications = notifications
        .into_iter()
        .filter(|n| !bad_files.contains(&n.source.file))
        .collect();

    Loaded {
        documents: files.iter().map(|f| f.documents).sum(),
        files: files.len(),
        state,
        diagnostics,
    }
}

/// Directory -> the Defaults written directly in it (one per directory).
fn collect_defaults(
    files: &[ParsedFile],
    diagnostics: &mut Vec<Diagnostic>,
    state: &mut DesiredState,
) -> HashMap<PathBuf, (Inherited, Source)> {
    let mut by_dir: HashMap<PathBuf, (Inherited, Source)> = HashMap::new();
    for file in files {
        let dir = file
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for ParsedDoc { doc, index } in &file.docs {
            let RawDocument::Defaults(d) = doc else {
                continue;
            };
            let mut check = Checker {
                file: &file.path,
                index,
                out: Vec::new(),
            };
            let source = Source {
                file: file.path.clone(),
                pos: index.locate("metadata.name"),
            };
            if let Some(sub) = &d.spec.subscription {
                check_subscription("spec.subscription", sub, &mut check);
            }
            if let Some(rg) = &d.spec.resource_group {
                check_resource_group("spec.resourceGroup", rg, &mut check);
            }
            if let Some((_, first)) = by_dir.get(&dir) {
                check.problem(
                    "metadata.name",
                    format!(
                        "a second Defaults for directory `{}` (the first is at {first}); merge them into one",
                        dir.display()
                    ),
                );
            }
            if check.out.is_empty() {
                if let Some(sub) = &d.spec.subscription {
                    state.subscriptions.insert(sub.to_ascii_lowercase());
                }
                let inherited = Inherited {
                    subscription: d.spec.subscription.clone(),
                    resource_group: d.spec.resource_group.clone(),
                    rollout: d.spec.rollout.as_deref().cloned(),
                };
                by_dir.entry(dir.clone()).or_insert((inherited, source));
            }
            diagnostics.extend(check.out);
        }
    }
    by_dir
}

/// Merges the Defaults from `root` down to the file's directory, deeper fields winning.
fn inherited_for(
    file: &Path,
    root: &Path,
    defaults: &HashMap<PathBuf, (Inherited, Source)>,
) -> Inherited {
    let mut out = Inherited::default();
    let mut dir = file.parent();
    while let Some(d) = dir {
        if let Some((inherited, _)) = defaults.get(d) {
            out.subscription = out.subscription.or_else(|| inherited.subscription.clone());
            out.resource_group = out
                .resource_group
                .or_else(|| inherited.resource_group.clone());
            out.rollout = match (out.rollout, &inherited.rollout) {
                (Some(deeper), Some(shallower)) => Some(deeper.over(shallower)),
                (deeper, shallower) => deeper.or_else(|| shallower.clone()),
            };
        }
        if d == root {
            break;
        }
        dir = d.parent();
    }
    out
}

fn check_app(
    d: &ContainerAppDocument,
    inherited: &Inherited,
    options: &LoadOptions,
    check: &mut Checker<'_>,
) -> Option<AppSpec> {
    let name = &d.metadata.name;
    check_app_name("metadata.name", name, check);

    let rg = d
        .metadata
        .resource_group
        .as_ref()
        .or(inherited.resource_group.as_ref());
    match (&d.metadata.resource_group, rg) {
        (Some(rg), _) => check_resource_group("metadata.resourceGroup", rg, check),
        (None, None) => check.problem(
            "metadata",
            "no resourceGroup: write metadata.resourceGroup, or a Defaults document with spec.resourceGroup in this directory or above",
        ),
        (None, Some(_)) => {}
    }
    let sub = d
        .metadata
        .subscription
        .as_ref()
        .or(inherited.subscription.as_ref())
        .or(options.subscription.as_ref());
    match (&d.metadata.subscription, sub) {
        (Some(sub), _) => check_subscription("metadata.subscription", sub, check),
        (None, None) => check.problem(
            "metadata",
            "no subscription: write metadata.subscription, a Defaults document with spec.subscription, or pass --subscription / AZURE_SUBSCRIPTION_ID",
        ),
        (None, Some(_)) => {}
    }

    let spec = &d.spec;
    let images = check_images(spec, check);
    let replicas = spec.replicas.and_then(|r| check_replicas(r, check));
    let traffic = check_traffic(name, spec, check);
    let rollout = match (&spec.rollout, &inherited.rollout) {
        (Some(own), Some(under)) => Some((own.over(under), false)),
        (Some(own), None) => Some((own.clone(), false)),
        (None, Some(under)) => Some((under.clone(), true)),
        (None, None) => None,
    }
    .and_then(|(r, inherited)| check_rollout(&r, inherited, spec, check));
    if let Some(r) = spec.revision_retention
        && r.keep_active == 0
    {
        check.problem(
            "spec.revisionRetention.keepActive",
            "must be at least 1 (the latest revision always stays active)",
        );
    }

    Some(AppSpec {
        key: AppKey::new(sub?, rg?, name),
        source: Source {
            file: check.file.to_path_buf(),
            pos: check.index.locate("metadata.name"),
        },
        suspend: spec.suspend.unwrap_or(false),
        revision_mode: spec.revision_mode,
        images,
        replicas,
        traffic,
        keep_active: spec.revision_retention.map(|r| r.keep_active),
        restart_generation: spec.restart_generation,
        rollout,
    })
}

fn check_images(spec: &raw::ContainerAppSpec, check: &mut Checker<'_>) -> Images {
    let mut out = Vec::new();
    let Some(images) = &spec.images else {
        return Images::default();
    };
    if images.is_empty() {
        check.problem(
            "spec.images",
            "is empty; name at least one container, or leave images out",
        );
    }
    for (container, reference) in images {
        let path = format!("spec.images.{container}");
        if container.trim().is_empty() {
            check.problem(&path, "a container name may not be empty");
            continue;
        }
        match parse_image(reference) {
            Ok(image) => out.push((container.clone(), image)),
            Err(why) => check.problem(
                &path,
                format!("`{reference}` is not a usable image reference: {why}"),
            ),
        }
    }
    out.into_iter().collect()
}

fn check_replicas(r: raw::Replicas, check: &mut Checker<'_>) -> Option<Replicas> {
    let before = check.out.len();
    if r.max == 0 || r.max > 1000 {
        check.problem(
            "spec.replicas.max",
            format!("{} is out of range; max must be 1 to 1000", r.max),
        );
    }
    if r.min > 1000 {
        check.problem(
            "spec.replicas.min",
            format!("{} is out of range; min must be 0 to 1000", r.min),
        );
    }
    if r.min > r.max {
        check.problem(
            "spec.replicas",
            format!(
                "min ({}) is greater than max ({}); min must not exceed max",
                r.min, r.max
            ),
        );
    }
    (check.out.len() == before).then_some(Replicas {
        min: r.min,
        max: r.max,
    })
}

/// `spec.rollout` (merged with the Defaults'): its rules, and that it owns traffic.
fn check_rollout(
    r: &raw::Rollout,
    inherited: bool,
    spec: &raw::ContainerAppSpec,
    check: &mut Checker<'_>,
) -> Option<RolloutSpec> {
    let from = if inherited {
        " (the rollout is inherited from a Defaults document)"
    } else {
        ""
    };
    let before = check.out.len();
    for (field, what) in [
        ("traffic", "a traffic split"),
        ("activeRevision", "a pinned revision"),
    ] {
        let written = match field {
            "traffic" => spec.traffic.is_some(),
            _ => spec.active_revision.is_some(),
        };
        if written {
            check.problem(
                &format!("spec.{field}"),
                format!(
                    "remove {field}: a rollout owns traffic{from} (it keeps 100% on the stable revision and moves it step by step to a new one), so {what} would fight it; or remove spec.rollout"
                ),
            );
        }
    }
    if spec.revision_mode == Some(RevisionMode::Single) {
        check.problem(
            "spec.revisionMode",
            format!("a rollout{from} needs revisionMode: multiple (two revisions share traffic during its steps); write multiple, or leave revisionMode out"),
        );
    }
    let deadline = millis(
        check,
        "spec.rollout.progressDeadline",
        r.progress_deadline.as_deref(),
        30 * 60_000,
    );
    let preview_pause = millis(
        check,
        "spec.rollout.previewPause",
        r.preview_pause.as_deref(),
        0,
    );
    let post_switch_pause = millis(
        check,
        "spec.rollout.postSwitchPause",
        r.post_switch_pause.as_deref(),
        0,
    );
    let strategy = match r.strategy.unwrap_or(raw::RolloutStrategy::Canary) {
        raw::RolloutStrategy::Canary => Strategy::Canary,
        raw::RolloutStrategy::BlueGreen => Strategy::BlueGreen,
    };
    let mut steps = Vec::new();
    match strategy {
        Strategy::Canary => {
            for field in ["previewLabel", "previewPause", "postSwitchPause"] {
                let written = match field {
                    "previewLabel" => r.preview_label.is_some(),
                    "previewPause" => r.preview_pause.is_some(),
                    _ => r.post_switch_pause.is_some(),
                };
                if written {
                    check.problem(
                        &format!("spec.rollout.{field}"),
                        "is for strategy: blueGreen; a canary walks `steps`",
                    );
                }
            }
            match &r.steps {
                None => check.problem(
                    "spec.rollout",
                    format!("a canary rollout{from} needs steps, e.g. steps: [{{weight: 10, pause: 5m}}, {{weight: 50, pause: 10m}}]"),
                ),
                Some(list) if list.is_empty() => {
                    check.problem("spec.rollout.steps", "is empty; give at least one step");
                }
                Some(list) => {
                    let mut before_weight = 0;
                    for (i, step) in list.iter().enumerate() {
                        let path = format!("spec.rollout.steps[{i}]");
                        if step.weight == 0 || step.weight > 100 {
                            check.problem(
                                &format!("{path}.weight"),
                                format!("{} is out of range; a step's weight is 1 to 100 (the new revision's share)", step.weight),
                            );
                        } else if step.weight <= before_weight {
                            check.problem(
                                &format!("{path}.weight"),
                                format!("{} is not above the step before ({before_weight}); weights increase step by step", step.weight),
                            );
                        }
                        before_weight = before_weight.max(step.weight);
                        let pause = match duration::parse(&step.pause) {
                            Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                            Err(e) => {
                                check.problem(&format!("{path}.pause"), e);
                                0
                            }
                        };
                        steps.push(Step {
                            weight: step.weight.min(100),
                            pause_ms: pause,
                        });
                    }
                }
            }
        }
        Strategy::BlueGreen => {
            if r.steps.is_some() {
                check.problem(
                    "spec.rollout.steps",
                    "is for strategy: canary; blue/green checks the preview label for previewPause, then switches 100% at once and checks for postSwitchPause",
                );
            }
            steps.push(Step {
                weight: 0,
                pause_ms: preview_pause,
            });
            steps.push(Step {
                weight: 100,
                pause_ms: post_switch_pause,
            });
        }
    }
    let preview_label = r
        .preview_label
        .clone()
        .unwrap_or_else(|| "preview".to_owned());
    check_label("spec.rollout.previewLabel", &preview_label, check);
    if let Some(longest) = steps.iter().map(|s| s.pause_ms).max()
        && longest >= deadline
    {
        check.problem(
            "spec.rollout.progressDeadline",
            format!(
                "{} is not longer than the longest pause ({}); a step would roll back before it could advance",
                duration::Human(std::time::Duration::from_millis(deadline)),
                duration::Human(std::time::Duration::from_millis(longest))
            ),
        );
    }
    let analysis = r.analysis.as_ref().map(|a| {
        let interval = millis(
            check,
            "spec.rollout.analysis.interval",
            a.interval.as_deref(),
            60_000,
        );
        if interval == 0 {
            check.problem("spec.rollout.analysis.interval", "must be above 0s");
        }
        if a.max_failed_checks == Some(0) {
            check.problem(
                "spec.rollout.analysis.maxFailedChecks",
                "must be at least 1",
            );
        }
        for (path, v) in [
            ("spec.rollout.analysis.successRate.min", a.success_rate.map(|s| s.min)),
            ("spec.rollout.analysis.comparedToStable.maxDrop", a.compared_to_stable.map(|c| c.max_drop)),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && (0.0..=100.0).contains(&v))
            {
                check.problem(path, format!("{v} is not a percentage (0 to 100)"));
            }
        }
        let mut probes = Vec::new();
        for (i, p) in a.probes.iter().flatten().enumerate() {
            if !p.path.starts_with('/') {
                check.problem(
                    &format!("spec.rollout.analysis.probes[{i}].path"),
                    format!("`{}` must start with `/`", p.path),
                );
            }
            let status = p.expect_status.unwrap_or(200);
            if !(100..=599).contains(&status) {
                check.problem(
                    &format!("spec.rollout.analysis.probes[{i}].expectStatus"),
                    format!("{status} is not an HTTP status"),
                );
            }
            probes.push(Probe {
                path: p.path.clone(),
                expect_status: status,
            });
        }
        if a.success_rate.is_none() && a.compared_to_stable.is_none() && probes.is_empty() {
            check.problem(
                "spec.rollout.analysis",
                "checks nothing; give successRate, comparedToStable or probes (or leave analysis out to advance on time alone)",
            );
        }
        AnalysisSpec {
            interval_ms: interval,
            max_failed_checks: a.max_failed_checks.unwrap_or(2).max(1),
            no_data: match a.no_data.unwrap_or(raw::NoDataMode::Hold) {
                raw::NoDataMode::Hold => NoData::Hold,
                raw::NoDataMode::Fail => NoData::Fail,
            },
            min_requests: a.min_requests.unwrap_or(50),
            success_rate_min: a.success_rate.map(|s| s.min),
            max_drop_vs_stable: a.compared_to_stable.map(|c| c.max_drop),
            probes,
        }
    });
    (check.out.len() == before).then(|| RolloutSpec {
        strategy,
        steps,
        approval: match r.approval.unwrap_or(raw::ApprovalMode::Auto) {
            raw::ApprovalMode::Auto => Approval::Auto,
            raw::ApprovalMode::Manual => Approval::Manual,
        },
        analysis,
        progress_deadline_ms: deadline,
        preview_label,
    })
}

/// A written duration in milliseconds (`default` when left out, or wrong and reported).
fn millis(check: &mut Checker<'_>, path: &str, text: Option<&str>, default: u64) -> u64 {
    match text.map(duration::parse) {
        None => default,
        Some(Ok(d)) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        Some(Err(e)) => {
            check.problem(path, e);
            default
        }
    }
}

fn check_traffic(
    app: &str,
    spec: &raw::ContainerAppSpec,
    check: &mut Checker<'_>,
) -> Option<TrafficSpec> {
    if let Some(rev) = &spec.active_revision {
        check_revision_name("spec.activeRevision", app, rev, check);
    }
    match (&spec.active_revision, &spec.traffic) {
        (Some(_), Some(_)) => {
            check.problem(
                "spec.traffic",
                "write either traffic or activeRevision, not both (activeRevision means that revision gets 100%)",
            );
            None
        }
        (Some(rev), None) => Some(TrafficSpec::Pin(rev.clone())),
        (None, None) => None,
        (None, Some(entries)) => {
            if spec.revision_mode == Some(RevisionMode::Single) {
                check.problem(
                    "spec.traffic",
                    "a traffic split needs revisionMode: multiple (in single mode Azure sends all traffic to the one active revision)",
                );
            }
            if entries.is_empty() {
                check.problem(
                    "spec.traffic",
                    "is empty; give at least one entry whose weights sum to 100",
                );
            }
            let mut targets = Vec::new();
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut sum: u64 = 0;
            for (i, e) in entries.iter().enumerate() {
                let path = format!("spec.traffic[{i}]");
                sum += u64::from(e.weight);
                if e.weight > 100 {
                    check.problem(
                        &format!("{path}.weight"),
                        format!("{} is out of range; a weight is 0 to 100", e.weight),
                    );
                }
                if e.latest_revision == Some(false) {
                    check.problem(
                        &format!("{path}.latestRevision"),
                        "write `latestRevision: true`, or name a revision or label instead",
                    );
                }
                let named: Vec<(&str, TrafficTo)> = [
                    e.revision
                        .as_ref()
                        .map(|r| ("revision", TrafficTo::Revision(r.clone()))),
                    (e.latest_revision == Some(true))
                        .then_some(("latestRevision", TrafficTo::Latest)),
                    e.label
                        .as_ref()
                        .map(|l| ("label", TrafficTo::Label(l.clone()))),
                ]
                .into_iter()
                .flatten()
                .collect();
                let to = match named.as_slice() {
                    [(_, to)] => to.clone(),
                    [] => {
                        if e.latest_revision != Some(false) {
                            check.problem(&path, "names no target; give exactly one of revision, latestRevision or label");
                        }
                        continue;
                    }
                    many => {
                        let keys: Vec<&str> = many.iter().map(|(k, _)| *k).collect();
                        check.problem(
                            &path,
                            format!(
                                "names {}; give exactly one of revision, latestRevision or label",
                                keys.join(" and ")
                            ),
                        );
                        continue;
                    }
                };
                let (key, field) = match &to {
                    TrafficTo::Revision(r) => {
                        check_revision_name(&format!("{path}.revision"), app, r, check);
                        (format!("revision {r}"), "revision")
                    }
                    TrafficTo::Latest => ("latestRevision".to_owned(), "latestRevision"),
                    TrafficTo::Label(l) => {
                        check_label(&format!("{path}.label"), l, check);
                        (format!("label {l}"), "label")
                    }
                };
                if let Some(first) = seen.get(&key) {
                    let what = if field == "latestRevision" {
                        "a second latestRevision entry; at most one entry may follow the latest revision".to_owned()
                    } else {
                        format!(
                            "{key} already has an entry (spec.traffic[{first}]); merge their weights into one"
                        )
                    };
                    check.problem(&format!("{path}.{field}"), what);
                } else {
                    seen.insert(key, i);
                }
                targets.push(TrafficTarget {
                    to,
                    weight: u8::try_from(e.weight.min(100)).unwrap_or(100),
                });
            }
            if sum != 100 && !entries.is_empty() {
                check.problem(
                    "spec.traffic",
                    format!("weights sum to {sum}; they must sum to 100"),
                );
            }
            Some(TrafficSpec::Split(targets))
        }
    }
}

fn check_registry(
    d: &RegistryRetentionDocument,
    check: &mut Checker<'_>,
) -> Option<RegistryRetention> {
    let spec = &d.spec;
    if let Err(why) = check_login_server(&spec.registry) {
        check.problem(
            "spec.registry",
            format!("`{}` is not a registry login server: {why}", spec.registry),
        );
    }
    let repositories = if spec.repositories.iter().any(|r| r == "*") {
        if spec.repositories.len() > 1 {
            check.problem(
                "spec.repositories",
                "`*` already means every repository; write [\"*\"] alone",
            );
        }
        Repositories::All
    } else {
        if spec.repositories.is_empty() {
            check.problem(
                "spec.repositories",
                "is empty; name repositories, or write [\"*\"] for all",
            );
        }
        for (i, repo) in spec.repositories.iter().enumerate() {
            if let Err(why) = check_repository(repo) {
                check.problem(
                    &format!("spec.repositories[{i}]"),
                    format!("`{repo}` is not a repository name: {why}"),
                );
            }
        }
        let mut named = spec.repositories.clone();
        named.sort();
        named.dedup();
        Repositories::Named(named)
    };
    if spec.keep_last == 0 {
        check.problem("spec.keepLast", "must be at least 1");
    }
    let older_than = match &spec.older_than {
        None => None,
        Some(s) => match duration::parse(s) {
            Ok(d) => Some(d),
            Err(e) => {
                check.problem("spec.olderThan", e);
                None
            }
        },
    };
    Some(RegistryRetention {
        name: d.metadata.name.clone(),
        source: Source {
            file: check.file.to_path_buf(),
            pos: check.index.locate("metadata.name"),
        },
        registry: spec.registry.to_ascii_lowercase(),
        repositories,
        keep_last: spec.keep_last,
        older_than,
        delete_images: spec.delete_images.unwrap_or(false),
    })
}

/// "One app named twice is an error naming both files": one line at each `name:`.
fn report_duplicate_apps(apps: &[AppSpec], diagnostics: &mut Vec<Diagnostic>) {
    let mut first: HashMap<&AppKey, &Source> = HashMap::new();
    for app in apps {
        match first.get(&app.key) {
            Some(earlier) => {
                let what = format!(
                    "metadata.name: app `{}` in resource group `{}` (subscription {})",
                    app.key.name, app.key.resource_group, app.key.subscription
                );
                diagnostics.push(Diagnostic::new(
                    &app.source.file,
                    app.source.pos,
                    format!("{what} is already defined at {earlier}; each app may be defined once"),
                ));
                diagnostics.push(Diagnostic::new(
                    &earlier.file,
                    earlier.pos,
                    format!(
                        "{what} is defined again at {}; each app may be defined once",
                        app.source
                    ),
                ));
            }
            None => {
                first.insert(&app.key, &app.source);
            }
        }
    }
}

/// Two policies for one repository would fight over it: report both.
fn report_overlapping_registries(
    registries: &[RegistryRetention],
    diagnostics: &mut Vec<Diagnostic>,
) {
    for (i, a) in registries.iter().enumerate() {
        for b in &registries[i + 1..] {
            if a.registry != b.registry {
                continue;
            }
            if let Some(repo) = a.repositories.overlaps(&b.repositories) {
                let what = format!("registry `{}` repository `{repo}`", a.registry);
                diagnostics.push(Diagnostic::new(
                    &b.source.file,
                    b.source.pos,
                    format!("metadata.name: {what} is already covered by RegistryRetention `{}` at {}; one policy per repository", a.name, a.source),
                ));
                diagnostics.push(Diagnostic::new(
                    &a.source.file,
                    a.source.pos,
                    format!("metadata.name: {what} is covered again by RegistryRetention `{}` at {}; one policy per repository", b.name, b.source),
                ));
            }
        }
    }
}

// ---- Names and references -------------------------------------------------------------------

/// A subscription id is a GUID.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn check_subscription(path: &str, sub: &str, check: &mut Checker<'_>) {
    if !is_guid(sub) {
        check.problem(
            path,
            format!("`{sub}` is not a subscription id (a GUID such as 00000000-0000-0000-0000-000000000000)"),
        );
    }
}

// Resource group names: 1-90 characters, letters, digits, `_`, `-`, `.`, `(`, `)`, not ending in `.`
// (learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules#microsoftresources).
fn check_resource_group(path: &str, rg: &str, check: &mut Checker<'_>) {
    let ok_chars = rg
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')'));
    if rg.is_empty() || rg.chars().count() > 90 || !ok_chars || rg.ends_with('.') {
        check.problem(
            path,
            format!("`{rg}` is not a resource group name (1-90 letters, digits, _ - . ( ), not ending in .)"),
        );
    }
}

// Container App names: 2-32 characters, lowercase letters, digits and `-`, starting with a letter,
// ending with a letter or digit, no `--` (the az CLI's and the portal's rule; resource-name-rules#microsoftapp).
fn check_app_name(path: &str, name: &str, check: &mut Checker<'_>) {
    let ok = (2..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--");
    if !ok {
        check.problem(
            path,
            format!("`{name}` is not a Container App name (2-32 lowercase letters, digits and -, starting with a letter, ending with a letter or digit, no --)"),
        );
    }
}

// Revision names are `<app>--<suffix>`; suffixes are lowercase letters, digits and `-`
// (learn.microsoft.com/azure/container-apps/revisions#naming).
fn check_revision_name(path: &str, app: &str, rev: &str, check: &mut Checker<'_>) {
    let suffix = rev.strip_prefix(app).and_then(|r| r.strip_prefix("--"));
    match suffix {
        Some(s)
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') => {}
        Some(_) => check.problem(
            path,
            format!("`{rev}`: a revision suffix is lowercase letters, digits and -"),
        ),
        None => check.problem(
            path,
            format!("`{rev}` is not a revision of `{app}`; revision names are `{app}--<suffix>`"),
        ),
    }
}

fn check_label(path: &str, label: &str, check: &mut Checker<'_>) {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && label.starts_with(|c: char| c.is_ascii_lowercase());
    if !ok {
        check.problem(
            path,
            format!("`{label}` is not a traffic label (lowercase letters, digits and -, starting with a letter)"),
        );
    }
}

fn check_login_server(s: &str) -> Result<(), &'static str> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if s.contains("://") || s.contains('/') {
        return Err("write only the host (and :port), without a scheme or path");
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err("the port must be 1 to 65535");
    }
    let labels_ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if labels_ok {
        Ok(())
    } else {
        Err("not a valid host name")
    }
}

/// Repository path components: `[a-z0-9]+([._-][a-z0-9]+)*`, joined by `/` (OCI distribution spec).
fn check_repository(repo: &str) -> Result<(), &'static str> {
    if repo.is_empty() || repo.len() > 255 {
        return Err("1 to 255 characters");
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars().all(|ch| {
                ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
            })
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if repo.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(
            "lowercase letters, digits and . _ - in /-separated parts, each starting and ending with a letter or digit",
        )
    }
}

/// Parses `[registry/]repository(:tag|@digest)`; a tag or a digest is required.
pub fn parse_image(reference: &str) -> Result<ImageRef, String> {
    if reference.is_empty() || reference.chars().any(char::is_whitespace) {
        return Err("it is empty or contains white space".to_owned());
    }
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty()
                && alg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && hex.len() >= 32
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        });
        if !ok {
            return Err(format!(
                "`{d}` is not a digest (write sha256:<64 hex digits>)"
            ));
        }
    }
    // A tag is a `:` after the last `/` (a `:` before it belongs to a registry port).
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(format!(
                "`{t}` is not a tag (up to 128 letters, digits, _ . -)"
            ));
        }
    }
    if tag.is_none() && digest.is_none() {
        return Err("it has no tag or digest; pin a version (`:v1.2.0` or `@sha256:...`) so the controller knows what to run".to_owned());
    }
    let (registry, repository) = match path.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first.to_ascii_lowercase()), rest)
        }
        _ => (None, path),
    };
    check_repository(repository).map_err(|why| format!("repository `{repository}`: {why}"))?;
    Ok(ImageRef {
        full: reference.to_owned(),
        registry,
        repository: repository.to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let i = parse_image("crxshopaiprod.azurecr.io/user-service:v1.2.0").unwrap();
        assert_eq!(i.registry.as_deref(), Some("crxshopaiprod.azurecr.io"));
        assert_eq!(i.repository, "user-service");
        assert_eq!(i.tag.as_deref(), Some("v1.2.0"));
        let d = format!("127.0.0.1:5000/team/api@sha256:{}", "a".repeat(64));
        let i = parse_image(&d).unwrap();
        assert_eq!(i.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(i.repository, "team/api");
        assert_eq!(i.tag, None);
        assert!(i.digest.is_some());
        let i = parse_image("nginx:1.27").unwrap();
        assert_eq!((i.registry, i.repository.as_str()), (None, "nginx"));
        for bad in [
            "",
            "nginx",
            "localhost:5000/app",
            "Repo:v1",
            "app:",
            "app:-x",
            "app@sha256:xyz",
            "a b:v1",
        ] {
            assert!(parse_image(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn guids() {
        assert!(is_guid("00000000-0000-0000-0000-000000000000"));
        assert!(is_guid("34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"));
        assert!(!is_guid("34adfa4f-cedf-4dc0-ba29-b6d1a69ab34"));
        assert!(!is_guid("my-subscription"));
    }
}

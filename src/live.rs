//! The observed state: one complete snapshot per managed app, taken with as few reads as
//! possible.
//!
//! One list per (subscription, resource group) gives every app's template, traffic and latest
//! revision; revisions are listed only for apps whose spec needs them
//! ([`crate::plan::needs_revisions`]). A failed read makes the apps it covers
//! [`Observation::Unreadable`]: a partial read never yields actions for the apps it missed.
//!
//! An app whose restart was begun but not recorded ([`crate::plan::pending_restart`]) also has
//! the replicas of its active revisions read, so the planner restarts only what still needs it.
//!
//! `run` also skips the revision list of an app it verified in sync recently, as long as the
//! app's live summary and its spec are unchanged since ([`fingerprint`],
//! [`snapshot_since`]): the list read shows any write to the app (template, traffic, tags,
//! `systemData.lastModifiedAt`), and the age limit catches what it cannot show (a revision
//! activated by hand).

use std::collections::BTreeMap;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use crate::arm::{ArmClient, ContainerApp, Revision};
use crate::spec::{AppKey, AppSpec, DesiredState};

/// What Azure says about one desired app.
#[derive(Debug, Clone)]
pub enum Observation {
    /// The app, and its revisions when the spec needs them.
    Found {
        /// The app.
        app: Box<ContainerApp>,
        /// Its revisions (`None`: not read, because the spec does not need them).
        revisions: Option<Vec<Revision>>,
    },
    /// No such app in Azure (the controller does not create apps).
    Missing,
    /// It could not be read this time.
    Unreadable(String),
}

/// Every desired app's observed state.
#[derive(Debug, Default)]
pub struct LiveState {
    /// By app.
    pub apps: BTreeMap<AppKey, Observation>,
    /// The [`fingerprint`] of each app whose revisions were read.
    pub fingerprints: BTreeMap<AppKey, u64>,
    /// Apps whose fingerprint matched the one they were verified in sync with: their revisions
    /// were not read, and they are in sync.
    pub unchanged: std::collections::BTreeSet<AppKey>,
}

/// What a verification of `app` against `spec` depends on, as a hash: the spec, and the parts
/// of the listed app that any write changes. Equal fingerprints mean an app verified in sync is
/// still in sync, unless its revisions were changed by hand.
pub fn fingerprint(spec: &AppSpec, app: &ContainerApp) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    format!("{spec:?}").hash(&mut h);
    let raw = app.raw.value();
    let props = &raw["properties"];
    for part in [
        &raw["tags"],
        &raw["systemData"]["lastModifiedAt"],
        &props["provisioningState"],
        &props["latestRevisionName"],
        &props["latestReadyRevisionName"],
        &props["configuration"],
        &props["template"],
    ] {
        part.to_string().hash(&mut h);
    }
    h.finish()
}

/// Reads what the plan needs for every app of `desired`, `concurrency` reads at a time.
pub async fn snapshot(client: &ArmClient, desired: &DesiredState, concurrency: usize) -> LiveState {
    snapshot_since(client, desired, concurrency, &BTreeMap::new()).await
}

/// [`snapshot`], skipping the revisions of each app whose [`fingerprint`] equals its entry in
/// `verified` (the fingerprint it had when last verified in sync).
pub async fn snapshot_since(
    client: &ArmClient,
    desired: &DesiredState,
    concurrency: usize,
    verified: &BTreeMap<AppKey, u64>,
) -> LiveState {
    snapshot_with(client, desired, concurrency, verified, None).await
}

/// [`snapshot_since`], leaving out the revisions that would decide nothing: those of an app
/// whose first step needs none ([`crate::plan::plan_first_step`]: its template, after which
/// the executor reads them, when they show what it did), and those of an app of `spread` that
/// its list shows in sync ([`crate::plan::in_sync_as_listed`]; its first full verification
/// waits, [`crate::apply::Reconcile::spread`]). The other apps' revisions are read here, as
/// [`snapshot_since`] does, outside the executor's `--concurrency` slots, so verifications do
/// not queue ahead of an edit's write for a slot.
pub async fn lists_since(
    client: &ArmClient,
    desired: &DesiredState,
    concurrency: usize,
    verified: &BTreeMap<AppKey, u64>,
    spread: &std::collections::BTreeSet<AppKey>,
) -> LiveState {
    snapshot_with(client, desired, concurrency, verified, Some(spread)).await
}

async fn snapshot_with(
    client: &ArmClient,
    desired: &DesiredState,
    concurrency: usize,
    verified: &BTreeMap<AppKey, u64>,
    lazy: Option<&std::collections::BTreeSet<AppKey>>,
) -> LiveState {
    let now = crate::time::Clock::new().now();
    let mut groups: BTreeMap<(String, String), Vec<&AppKey>> = BTreeMap::new();
    for key in desired.apps.keys() {
        groups
            .entry((key.subscription.clone(), key.resource_group.clone()))
            .or_default()
            .push(key);
    }
    // Futures are built first and boxed: a closure inside `map` trips rustc's higher-ranked
    // lifetime inference once the whole pass is spawned on a runtime.
    type Listing<'a> = (
        Vec<&'a AppKey>,
        Result<Vec<ContainerApp>, crate::arm::Error>,
    );
    let futures: Vec<BoxFuture<'_, Listing<'_>>> = groups
        .into_iter()
        .map(|((sub, rg), keys)| -> BoxFuture<'_, Listing<'_>> {
            Box::pin(async move { (keys, client.list_apps(&sub, Some(&rg)).await) })
        })
        .collect();
    let listings: Vec<_> = futures_util::stream::iter(futures)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut state = LiveState::default();
    let mut need_revisions = Vec::new();
    for (keys, listing) in listings {
        match listing {
            Err(e) => {
                for key in keys {
                    state
                        .apps
                        .insert(key.clone(), Observation::Unreadable(e.to_string()));
                }
            }
            Ok(apps) => {
                let mut by_name: BTreeMap<String, ContainerApp> = apps
                    .into_iter()
                    .map(|a| (a.name.to_ascii_lowercase(), a))
                    .collect();
                for key in keys {
                    match by_name.remove(&key.name) {
                        None => {
                            state.apps.insert(key.clone(), Observation::Missing);
                        }
                        Some(app) => {
                            if let Some(spec) = desired
                                .apps
                                .get(key)
                                .filter(|s| crate::plan::needs_revisions(s))
                            {
                                let fp = fingerprint(spec, &app);
                                if verified.get(key) == Some(&fp) {
                                    state.unchanged.insert(key.clone());
                                } else {
                                    state.fingerprints.insert(key.clone(), fp);
                                    let later = lazy.is_some_and(|spread| {
                                        (spread.contains(key)
                                            && crate::plan::in_sync_as_listed(spec, &app))
                                            || crate::plan::plan_first_step(spec, &app, now)
                                                .is_some()
                                    });
                                    if !later {
                                        need_revisions.push(key.clone());
                                    }
                                }
                            }
                            state.apps.insert(
                                key.clone(),
                                Observation::Found {
                                    app: Box::new(app),
                                    revisions: None,
                                },
                            );
                        }
                    }
                }
            }
        }
    }
    type Listed = (AppKey, Result<Vec<Revision>, crate::arm::Error>);
    let pending: std::collections::BTreeSet<AppKey> = need_revisions
        .iter()
        .filter(|key| match state.apps.get(*key) {
            Some(Observation::Found { app, .. }) => crate::plan::pending_restart(app).is_some(),
            _ => false,
        })
        .cloned()
        .collect();
    let futures: Vec<BoxFuture<'_, Listed>> = need_revisions
        .into_iter()
        .map(|key| -> BoxFuture<'_, Listed> {
            let pending = pending.contains(&key);
            Box::pin(async move {
                let mut r = client.list_revisions(&key).await;
                if let (true, Ok(list)) = (pending, &mut r)
                    && let Err(e) = read_replicas(client, &key, list).await
                {
                    r = Err(e);
                }
                (key, r)
            })
        })
        .collect();
    let revisions: Vec<_> = futures_util::stream::iter(futures)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for (key, result) in revisions {
        match result {
            Ok(list) => {
                if let Some(Observation::Found { revisions, .. }) = state.apps.get_mut(&key) {
                    *revisions = Some(list);
                }
            }
            Err(e) => {
                state.fingerprints.remove(&key);
                state
                    .apps
                    .insert(key, Observation::Unreadable(e.to_string()));
            }
        }
    }
    state
}

/// Reads one app again (after a write), with its revisions if `with_revisions`.
///
/// # Errors
/// A read failed.
pub async fn observe_app(
    client: &ArmClient,
    key: &AppKey,
    with_revisions: bool,
) -> Result<Observation, crate::arm::Error> {
    match client.get_app(key).await {
        Ok(app) => {
            let revisions = if with_revisions {
                let mut list = client.list_revisions(key).await?;
                if crate::plan::pending_restart(&app).is_some() {
                    read_replicas(client, key, &mut list).await?;
                }
                Some(list)
            } else {
                None
            };
            Ok(Observation::Found {
                app: Box::new(app),
                revisions,
            })
        }
        Err(e) if e.status() == Some(404) => Ok(Observation::Missing),
        Err(e) => Err(e),
    }
}

/// Reads the revisions of `app` (and, during a restart generation, the replicas of its active
/// ones, [`crate::plan::pending_restart`]).
///
/// # Errors
/// A read failed.
pub async fn read_revisions(
    client: &ArmClient,
    key: &AppKey,
    app: &ContainerApp,
) -> Result<Vec<Revision>, crate::arm::Error> {
    let mut list = client.list_revisions(key).await?;
    if crate::plan::pending_restart(app).is_some() {
        read_replicas(client, key, &mut list).await?;
    }
    Ok(list)
}

/// Reads the replicas of each active revision, for an app whose restart was begun but maybe not
/// finished ([`crate::plan::pending_restart`]): during a restart generation (the pending tag is
/// written first) and after a controller stopped in the middle of one.
async fn read_replicas(
    client: &ArmClient,
    key: &AppKey,
    revisions: &mut [Revision],
) -> Result<(), crate::arm::Error> {
    for r in revisions.iter_mut().filter(|r| r.properties.active) {
        r.replicas_created = Some(client.list_replicas(key, &r.name).await?);
    }
    Ok(())
}

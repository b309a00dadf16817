//! aca-reconciler keeps Azure Container Apps where a platform team's declarative YAML says they
//! should be: replica bounds, the active revision and traffic split, how many revisions stay
//! active, image tags, registry tag retention and restarts.
//!
//! # Layout
//!
//! Data flows one way:
//!
//! ```text
//!  desired-state/*.yaml --spec--> DesiredState --+
//!                                                +--plan::plan_app--> AppPlan --apply--> ARM / ACR
//!  ARM lists, revisions --live--> Observation ---+      (pure)                   (thin)
//!
//!  pass: composes observe -> reconcile each app -> registry retention, for every command
//!  controller: the schedule (due times, requeues, backoff, group resyncs) drives passes for `run`
//! ```
//!
//! | module | job |
//! | --- | --- |
//! | [`cli`], [`cmd`] | the command line; one module per command, each returning [`cmd::Exit`] or [`cmd::Error`] (`main` prints and picks the exit code) |
//! | [`spec`] | files -> documents -> a checked [`spec::DesiredState`], every problem at its `FILE:LINE:COLUMN` |
//! | [`connect`] | a [`connect::Connection`] to Azure, or to an embedded simulator (`--simulate`) |
//! | [`auth`] | the `azure_identity` credential chain, sovereign clouds, an identity endpoint, redacted tokens |
//! | [`arm`], [`acr`] | the only ways out to Azure: buckets, `Retry-After` gates, retries, paging, operations, lost answers |
//! | [`live`] | one list per resource group, revisions only where needed: an [`live::Observation`] per app |
//! | [`plan`] | the pure planner, in sections ([`plan::sections`]); the tags it owns ([`plan::tags`]); invariants |
//! | [`state`] | [`state::AppState`], the one vocabulary of where an app stands |
//! | [`apply`] | the executor: one step, re-read, re-plan; a wait becomes a [`apply::Requeue`], never a sleep |
//! | [`pass`] | one composition of a pass (apps, then retention) for `plan`, `apply`, `status` and `run` |
//! | [`retention`] | registry tag retention: the protected set from a complete read, a pure plan, a cap |
//! | [`controller`] | `run`: the loop turns inputs into calls on its [`controller::schedule::Schedule`]; status and metrics |
//! | [`lease`], [`http`], [`shutdown`], [`telemetry`] | leader election and the write fence; the endpoints; signals (two tiers); logs |
//! | [`permissions`] | the least-privilege custom roles for a desired state (`permissions`) |
//! | `fuzz` (hidden) | the parsers' entry points shared by the property tests and the cargo-fuzz targets |
//! | [`simulator`] | an in-memory Azure (ARM Container Apps, ACR, identity, Azure Monitor metrics, app ingress) served over HTTP; `/_sim/` faults and audit |
//! | [`ingress`] | reaching apps', revisions' and labels' URLs (`--ingress-endpoint`) |
//! | [`notify`] | notifications: [`notify::Event`], the pure [`notify::events::Tracker`] (reports -> events, each told once), the [`notify::deliver::Notifier`] (filters, queues, grouping, dedup, retries) and the targets' bodies |
//! | [`analysis`] | one rollout check: both revisions' `Requests` from Azure Monitor in one read, probes on the new revision's URL, the verdict from [`rollout::judge`] |
//! | [`duration`], [`time`], [`hash`] | `30s` / `5m` / `7d`; RFC 3339 and the clock; a deterministic mixer |
//!
//! # Where a new capability plugs in
//!
//! Progressive delivery shows the way: [`rollout`] is a planner section
//! ([`rollout::decide::section`]) that decides weights from the spec, the live app, the
//! rollout's state in an owned tag ([`plan::tags`]) and the last analysis check; its waits
//! between steps are [`apply::Awaited::Rollout`], requeued by the executor like any other wait;
//! its reads ([`analysis`]) go through the same client; its states joined [`state::AppState`].
//!
//! # Citations
//!
//! Comments cite the external contract as "contract section N": section N of
//! `docs/reference.md`. They cite Azure's behaviour as `N§x`: section x of
//! `docs/azure-notes.md`, whose example payloads are in `tests/fixtures/azure-specs/`.

pub mod acr;
pub mod analysis;
pub mod apply;
pub mod arm;
pub mod auth;
pub mod cli;
pub mod cmd;
pub mod connect;
pub mod controller;
pub mod dashboard;
pub mod duration;
#[doc(hidden)]
pub mod fuzz;
pub mod hash;
pub mod http;
pub mod ingress;
pub mod lease;
pub mod live;
pub mod notify;
pub mod pass;
pub mod permissions;
pub mod plan;
pub mod retention;
pub mod rollout;
pub mod shutdown;
pub mod simulator;
pub mod spec;
pub mod state;
pub mod telemetry;
pub mod time;

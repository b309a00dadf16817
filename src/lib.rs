//! aca-reconciler keeps Azure Container Apps where a platform team's declarative YAML says they
//! should be: replica bounds, the active revision and traffic split, how many revisions stay
//! active, image tags, registry tag retention and restarts.
//!
//! # Layout
//!
//! Data flows one way:
//!
//! ```text
//!   desired-state/*.yaml --spec--> DesiredState --+
//!                                                 +--plan--> Plan --apply--> Azure
//!   Azure (ARM, ACR) ------live--> LiveState -----+
//! ```
//!
//! | module | role |
//! | --- | --- |
//! | [`spec`] | read the YAML tree, check every rule, build [`spec::DesiredState`] |
//! | [`simulator`] | an in-memory Azure (ARM Container Apps, ACR, identity, Azure Monitor metrics, app ingress) served over HTTP |
//! | [`ingress`] | reaching apps', revisions' and labels' URLs (`--ingress-endpoint`) |
//! | [`duration`], [`time`] | `30s` / `5m` / `1h` / `7d`; RFC 3339 timestamps and the clock |
//! | [`cli`], [`commands`] | the command line and what each subcommand does |
//!
//! Still to come, each in its own module (see the README's architecture section): the ARM/ACR
//! client, the live snapshot, the pure planner, the executor, the
//! controller loop with its HTTP endpoints, and registry retention.

pub mod acr;
pub mod apply;
pub mod arm;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod duration;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod ingress;
pub mod lease;
pub mod live;
pub mod pass;
pub mod permissions;
pub mod plan;
pub mod reconcile;
pub mod retention;
pub mod shutdown;
pub mod simulator;
pub mod spec;
pub mod telemetry;
pub mod time;

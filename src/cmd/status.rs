//! `status`: every managed app, desired against live: computed live, or asked of a running
//! controller with `--server`. Exit 0, or 2 when any app has drifted or is unhealthy.

use std::io::Write;

use serde_json::{Value, json};

use super::{Error, Exit};
use crate::cli::{Common, Output, StatusArgs};
use crate::live::Observation;
use crate::pass::{self, PlannedApp};
use crate::plan::Outcome;
use crate::state::AppState;

/// `status`: from a running controller (`--server`), or computed live.
///
/// # Errors
/// The controller cannot be asked, the desired state is invalid, Azure cannot be reached as
/// configured, or writing failed.
pub async fn status(
    common: &Common,
    args: &StatusArgs,
    out: &mut (dyn Write + Send),
) -> Result<Exit, Error> {
    if let Some(server) = &args.server {
        let url = format!("{}/status", server.trim_end_matches('/'));
        let body = match reqwest::get(&url).await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            Ok(r) => return Err(Error::Setup(format!("{url} answered {}", r.status()))),
            Err(e) => {
                return Err(Error::Setup(format!(
                    "cannot reach {url}: {e} (is `aca-reconciler run` listening there?)"
                )));
            }
        };
        let Some(body) = body else {
            return Err(Error::Setup(format!("{url} did not answer JSON")));
        };
        let apps: Vec<Value> = body["apps"].as_array().cloned().unwrap_or_default();
        let unhealthy = apps
            .iter()
            .filter(|a| {
                !AppState::ALL
                    .iter()
                    .any(|s| s.is_settled() && a["state"].as_str() == Some(s.as_str()))
            })
            .count();
        if common.output == Output::Json {
            serde_json::to_writer_pretty(&mut *out, &body).map_err(std::io::Error::other)?;
            writeln!(out)?;
        } else {
            if body["leadership"] == "standby" {
                writeln!(
                    out,
                    "# {server} is a standby replica: another replica holds the lease and acts; ask the leader (its /metrics has acar_leader 1) for the live picture"
                )?;
            }
            writeln!(
                out,
                "{:<40} {:<12} {:<8} {:<60} LAST ERROR",
                "APP", "STATE", "FAILURES", "LAST ACTION"
            )?;
            for a in &apps {
                let app = format!(
                    "{}/{}",
                    a["resourceGroup"].as_str().unwrap_or(""),
                    a["name"].as_str().unwrap_or("")
                );
                writeln!(
                    out,
                    "{:<40} {:<12} {:<8} {:<60} {}",
                    app,
                    a["state"].as_str().unwrap_or(""),
                    a["failures"].as_u64().unwrap_or(0),
                    a["lastAction"].as_str().unwrap_or("-"),
                    a["lastError"].as_str().unwrap_or("-")
                )?;
            }
            for e in body["desiredStateErrors"].as_array().into_iter().flatten() {
                writeln!(out, "! {}", e.as_str().unwrap_or(""))?;
            }
        }
        return Ok(if unhealthy > 0 {
            Exit::Changes
        } else {
            Exit::Success
        });
    }
    let desired = super::load(common, out)?;
    let connection = crate::connect::connect(common, &desired)
        .await
        .map_err(Error::Setup)?;
    let planned = pass::plan_pass(&connection, &desired, args.pass.concurrency, None).await;
    let mut rows = Vec::new();
    let mut unhealthy = 0;
    for a in &planned.apps {
        let (row, ok) = status_row(a);
        if !ok {
            unhealthy += 1;
        }
        rows.push(row);
    }
    if common.output == Output::Json {
        serde_json::to_writer_pretty(&mut *out, &rows).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<36} {:<8} {:<28} {:<14} {:<6} {:<34} {:<9} STATE",
            "APP", "MODE", "IMAGE", "REPLICAS", "ACTIVE", "TRAFFIC", "RUNNING"
        )?;
        for r in &rows {
            writeln!(
                out,
                "{:<36} {:<8} {:<28} {:<14} {:<6} {:<34} {:<9} {}",
                r["app"].as_str().unwrap_or(""),
                r["mode"].as_str().unwrap_or("-"),
                r["image"].as_str().unwrap_or("-"),
                r["replicas"].as_str().unwrap_or("-"),
                r["active"].as_str().unwrap_or("-"),
                r["traffic"].as_str().unwrap_or("-"),
                r["running"].as_str().unwrap_or("-"),
                r["detail"].as_str().unwrap_or("")
            )?;
        }
    }
    Ok(if unhealthy > 0 {
        Exit::Changes
    } else {
        Exit::Success
    })
}

/// One line of the live status table (and whether the app is in sync and healthy).
fn status_row(a: &PlannedApp<'_>) -> (Value, bool) {
    let key = &a.spec.key;
    let spec = a.spec;
    let (Observation::Found { app, revisions }, Some(planned)) = (&a.observed, &a.plan) else {
        let detail = if a.state == AppState::Missing {
            "missing in Azure".to_owned()
        } else {
            format!(
                "unreadable: {}",
                a.reason.as_deref().unwrap_or("not observed")
            )
        };
        return (
            json!({"app": key.to_string(), "state": a.state, "detail": detail}),
            false,
        );
    };
    let image = app
        .properties
        .template
        .containers
        .iter()
        .filter_map(|c| c.image.as_deref())
        .map(|i| i.rsplit('/').next().unwrap_or(i))
        .collect::<Vec<_>>()
        .join(",");
    let scale = &app.properties.template.scale;
    let live_bounds = format!(
        "{}..{}",
        scale.min_replicas.map_or("?".into(), |v| v.to_string()),
        scale.max_replicas.map_or("?".into(), |v| v.to_string())
    );
    let replicas = match spec.replicas {
        Some(r) => format!("{live_bounds}/{}..{}", r.min, r.max),
        None => live_bounds,
    };
    let active = revisions
        .as_ref()
        .map(|r| r.iter().filter(|r| r.properties.active).count().to_string())
        .unwrap_or_else(|| "-".into());
    let traffic = app
        .traffic()
        .iter()
        .map(|t| {
            format!(
                "{} {}%",
                if t.latest_revision {
                    "latest".to_owned()
                } else {
                    t.revision_name
                        .clone()
                        .unwrap_or_default()
                        .rsplit("--")
                        .next()
                        .unwrap_or("")
                        .to_owned()
                },
                t.weight
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let (detail, ok) = match &planned.outcome {
        Outcome::InSync => ("in sync".to_owned(), true),
        Outcome::Suspended => (
            format!("suspended ({} drifted)", planned.actions.len()),
            true,
        ),
        Outcome::Changes => (
            format!(
                "drifted ({} actions)",
                planned.actions.iter().filter(|a| a.is_write()).count()
            ),
            false,
        ),
        Outcome::Busy => (
            "waiting: another operation is in progress".to_owned(),
            false,
        ),
        Outcome::Blocked { reason } => (format!("blocked: {reason}"), false),
        Outcome::Progressing { .. } => (
            planned
                .rollout
                .as_ref()
                .map_or_else(|| "rollout in progress".to_owned(), rollout_line),
            true,
        ),
        Outcome::RolledBack { reason } => (format!("rolled back: {reason}"), false),
    };
    let running = app.properties.running_status.clone().unwrap_or_default();
    let healthy = running.eq_ignore_ascii_case("running");
    (
        json!({
            "app": key.to_string(), "mode": if app.is_multiple_mode() { "Multiple" } else { "Single" }, "image": image,
            "replicas": replicas, "active": active, "traffic": traffic, "running": running,
            "state": a.state, "detail": detail, "rollout": planned.rollout,
        }),
        ok && healthy,
    )
}

/// A rollout in a few words: `rollout step 2/3 (50%): holding until ...`.
pub fn rollout_line(v: &crate::rollout::decide::RolloutView) -> String {
    let n = v.steps.len();
    let at = match usize::try_from(v.step).ok().and_then(|i| v.steps.get(i)) {
        Some(s) => format!("step {}/{n} ({}%)", v.step.saturating_add(1), s.weight),
        None => "starting".to_owned(),
    };
    let checks = v
        .max_failed_checks
        .map(|m| format!(", failed checks {}/{m}", v.failed_checks))
        .unwrap_or_default();
    let why = if v.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", v.reason)
    };
    format!(
        "rollout {} {at}, {} at {}%{checks}{why}",
        v.phase, v.canary, v.weight
    )
}

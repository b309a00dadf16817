//! `apply`: one full pass, carried out. Every app is reconciled until it is settled (new
//! revisions waited for, up to `--revision-timeout`), then registry retention deletes what
//! `plan` listed. Exit 0 when everything converged, 1 when an app or a deletion failed.

use std::io::Write;

use serde_json::json;

use super::{Error, Exit};
use crate::apply::{AppReport, ApplyOptions};
use crate::arm::Landed;
use crate::cli::{Common, Output, PassArgs};
use crate::pass::{self, RetentionOutcome};
use crate::state::AppState;

/// `apply`.
///
/// # Errors
/// The desired state is invalid, Azure cannot be reached as configured, or writing failed.
pub async fn apply(
    common: &Common,
    args: &PassArgs,
    out: &mut (dyn Write + Send),
) -> Result<Exit, Error> {
    crate::telemetry::init(common.log_format, "info");
    let desired = super::load(common, out)?;
    let connection = crate::connect::connect(common, &desired)
        .await
        .map_err(Error::Setup)?;
    let options = ApplyOptions {
        concurrency: args.concurrency,
        max_actions: args.max_actions,
        revision_timeout: args.revision_timeout,
        poll_interval: connection.poll_interval,
        analysis: Some(connection.analysis.clone()),
        metrics_lag: connection.metrics_lag,
        ..ApplyOptions::default()
    };
    let report = pass::apply_pass(&connection, &desired, &options, common.max_tag_deletions).await;
    let failed = report.failed();
    match common.output {
        Output::Json => {
            let mut doc = serde_json::to_value(&report).map_err(std::io::Error::other)?;
            doc["failed"] = json!(failed);
            serde_json::to_writer_pretty(&mut *out, &doc).map_err(std::io::Error::other)?;
            writeln!(out)?;
        }
        Output::Text | Output::Markdown => {
            for r in &report.apps {
                writeln!(out, "{}: {}", r.app, headline(r))?;
                for d in &r.actions {
                    match (&d.error, d.landed) {
                        (Some(e), _) => writeln!(out, "    {}  FAILED: {e}", d.description)?,
                        (None, Landed::Unknown) => writeln!(
                            out,
                            "    {}  [answer lost: the app was read again]",
                            d.description
                        )?,
                        (None, Landed::No) => writeln!(
                            out,
                            "    {}  [another operation held the app: planned again]",
                            d.description
                        )?,
                        (None, Landed::Yes) => {
                            writeln!(out, "    {}  [{} ms]", d.description, d.ms)?;
                        }
                    }
                }
            }
            if let Some(registries) = &report.registries {
                write_retention(out, registries, &desired.registries)?;
            }
            let writes: usize = report
                .apps
                .iter()
                .map(|r| r.actions.iter().filter(|d| d.action.is_write()).count())
                .sum();
            let deleted = report
                .registries
                .as_ref()
                .and_then(|r| r.done.as_ref())
                .map_or(0, |d| d.tags_deleted + d.manifests_deleted);
            writeln!(
                out,
                "Apply: {} apps, {writes} writes, {deleted} registry deletions, {failed} failed, {:.1} s.",
                report.apps.len(),
                report.seconds
            )?;
        }
    }
    Ok(if failed > 0 {
        Exit::Failed
    } else {
        Exit::Success
    })
}

/// What became of one app, in a few words.
fn headline(r: &AppReport) -> String {
    let why = r
        .error
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    match r.state {
        AppState::InSync if r.actions.is_empty() => "= in sync".to_owned(),
        AppState::InSync => format!("✓ converged ({} actions)", r.actions.len()),
        AppState::Suspended => "◌ suspended: drift reported, nothing done".to_owned(),
        AppState::Drifted => format!("… deferred: {why}"),
        AppState::Pending => "… stopped: this replica is not the leader (any more)".to_owned(),
        AppState::Missing => format!("! missing: {why}"),
        AppState::Blocked => format!("✗ blocked: {why}"),
        AppState::Failing => format!("✗ failed: {why}"),
        AppState::Progressing => format!(
            "↻ {}; `run` carries it on (or `apply` again)",
            r.rollout.as_ref().map_or_else(
                || "rollout in progress".to_owned(),
                super::status::rollout_line
            )
        ),
        AppState::RolledBack => format!("↩ rolled back: {why}"),
        AppState::Applying | AppState::Waiting => {
            format!("… still {}: {why}", r.state)
        }
    }
}

/// Retention's lines: each deletion and each hold-back (as `plan` lists them), then what was
/// deleted and what failed.
fn write_retention(
    out: &mut (dyn Write + Send),
    registries: &RetentionOutcome,
    policies: &[crate::spec::RegistryRetention],
) -> std::io::Result<()> {
    for l in crate::retention::describe(&registries.plan, policies) {
        writeln!(out, "{l}")?;
    }
    if let Some(done) = &registries.done {
        writeln!(
            out,
            "registry retention: {} tags and {} images deleted, {} held back by the cap, {} failed",
            done.tags_deleted,
            done.manifests_deleted,
            registries.plan.held_back(),
            done.errors.len()
        )?;
        // The plan's own problems were listed above; these are the deletions that failed.
        for e in done.errors.iter().skip(registries.plan.errors.len()) {
            writeln!(out, "! {e}")?;
        }
    }
    Ok(())
}

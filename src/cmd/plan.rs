//! `plan`: what `apply` would do, as a diff, JSON, or a pull-request comment. Writes nothing.
//! Exit 0 in sync, 2 changes pending, 1 an error (an app missing, unreadable or blocked).

use std::io::Write;

use serde_json::{Value, json};

use super::{Error, Exit, plural};
use crate::cli::{Common, Output, PassArgs};
use crate::pass::{self, PlannedApp};
use crate::plan::{Action, render};
use crate::state::AppState;

/// The counts of a plan's summary line.
#[derive(Debug, Default)]
struct Summary {
    changes: usize,
    in_sync: usize,
    suspended: usize,
    progressing: usize,
    errors: usize,
    writes: usize,
    new_revisions: usize,
    deletions: usize,
    held_back: usize,
}

impl Summary {
    fn of(apps: &[PlannedApp<'_>], retention: Option<&crate::retention::RetentionPlan>) -> Self {
        let mut s = Summary::default();
        for a in apps {
            match a.state {
                AppState::InSync => s.in_sync += 1,
                AppState::Suspended => s.suspended += 1,
                AppState::Progressing => s.progressing += 1,
                AppState::Drifted | AppState::Waiting => s.changes += 1,
                _ => s.errors += 1,
            }
            if a.state == AppState::Drifted {
                let actions = actions(a);
                s.writes += actions.iter().filter(|a| a.is_write()).count();
                s.new_revisions += actions.iter().filter(|a| a.creates_revision()).count();
            }
        }
        if let Some(r) = retention {
            s.deletions = r.deletions();
            s.held_back = r.held_back();
            s.errors += r.errors.len();
        }
        s
    }

    fn line(&self) -> String {
        let rolling = if self.progressing > 0 {
            format!(", {} rolling out", self.progressing)
        } else {
            String::new()
        };
        format!(
            "{} to change ({} writes, {} new revisions), {} in sync{rolling}, {} suspended, {} with errors; {} registry deletions ({} held back by the cap)",
            plural(self.changes, "app", "apps"),
            self.writes,
            self.new_revisions,
            self.in_sync,
            self.suspended,
            self.errors,
            self.deletions,
            self.held_back
        )
    }

    fn exit(&self) -> Exit {
        if self.errors > 0 {
            Exit::Failed
        } else if self.changes > 0 || self.deletions > 0 {
            Exit::Changes
        } else {
            Exit::Success
        }
    }
}

/// The walk a new revision of `a` will take, when its plan starts (or restarts) a rollout.
fn rollout_lines(a: &PlannedApp<'_>) -> Vec<String> {
    let starting = a
        .plan
        .as_ref()
        .and_then(|p| p.rollout.as_ref())
        .is_some_and(|v| v.phase == "starting");
    match (&a.spec.rollout, starting) {
        (Some(r), true) => vec![render::rollout_walk(r)],
        _ => Vec::new(),
    }
}

fn actions<'a>(a: &'a PlannedApp<'_>) -> &'a [Action] {
    a.plan.as_ref().map_or(&[], |p| p.actions.as_slice())
}

/// `plan`.
///
/// # Errors
/// The desired state is invalid, Azure cannot be reached as configured, or writing failed.
pub async fn plan(
    common: &Common,
    args: &PassArgs,
    out: &mut (dyn Write + Send),
) -> Result<Exit, Error> {
    crate::telemetry::init(common.log_format, "warn");
    let desired = super::load(common, out)?;
    let connection = crate::connect::connect(common, &desired)
        .await
        .map_err(Error::Setup)?;
    let planned = pass::plan_pass(
        &connection,
        &desired,
        args.concurrency,
        Some(common.max_tag_deletions),
    )
    .await;
    let summary = Summary::of(&planned.apps, planned.registries.as_ref());
    let retention_lines = planned
        .registries
        .as_ref()
        .map(|r| crate::retention::describe(r, &desired.registries))
        .unwrap_or_default();
    match common.output {
        Output::Json => {
            let items: Vec<Value> = planned
                .apps
                .iter()
                .map(|a| {
                    let key = &a.spec.key;
                    json!({
                        "subscription": key.subscription, "resourceGroup": key.resource_group, "name": key.name,
                        "source": a.spec.source.to_string(),
                        "state": a.state,
                        "status": a.state.plan_status(),
                        "reason": a.reason,
                        "actions": actions(a).iter().map(render::action_json).collect::<Vec<_>>(),
                        "rollout": a.plan.as_ref().and_then(|p| p.rollout.as_ref()),
                    })
                })
                .collect();
            let doc = json!({
                "apps": items,
                "registries": planned.registries.clone().unwrap_or_default(),
                "summary": {"changes": summary.changes, "inSync": summary.in_sync, "suspended": summary.suspended, "errors": summary.errors, "writes": summary.writes, "newRevisions": summary.new_revisions, "registryDeletions": summary.deletions, "registryHeldBack": summary.held_back},
            });
            serde_json::to_writer_pretty(&mut *out, &doc).map_err(std::io::Error::other)?;
            writeln!(out)?;
        }
        Output::Markdown => {
            write_markdown(out, &planned.apps, &retention_lines, &summary.line())?;
        }
        Output::Text => {
            for a in &planned.apps {
                let key = &a.spec.key;
                match a.state {
                    AppState::InSync => writeln!(out, "= {key}: in sync")?,
                    AppState::Drifted | AppState::Suspended => {
                        let tag = if a.state == AppState::Suspended {
                            "  (suspended: nothing will be done)"
                        } else {
                            ""
                        };
                        writeln!(out, "~ {key}  ({}){tag}", a.spec.source)?;
                        for action in actions(a) {
                            writeln!(out, "    {}", render::describe(action))?;
                        }
                        for l in rollout_lines(a) {
                            writeln!(out, "    {l}")?;
                        }
                    }
                    AppState::Progressing => writeln!(
                        out,
                        "↻ {key}: {}",
                        a.plan
                            .as_ref()
                            .and_then(|p| p.rollout.as_ref())
                            .map_or_else(
                                || "rollout in progress".to_owned(),
                                super::status::rollout_line
                            )
                    )?,
                    state => writeln!(
                        out,
                        "! {key}  ({}): {}: {}",
                        a.spec.source,
                        state.plan_status(),
                        a.reason.clone().unwrap_or_default()
                    )?,
                }
            }
            for l in &retention_lines {
                writeln!(out, "{l}")?;
            }
            writeln!(out, "Plan: {}.", summary.line())?;
        }
    }
    Ok(summary.exit())
}

/// The plan as a pull-request comment: a summary table, then each app's actions folded.
fn write_markdown(
    out: &mut (dyn Write + Send),
    apps: &[PlannedApp<'_>],
    retention: &[String],
    summary: &str,
) -> std::io::Result<()> {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    writeln!(out, "### aca-reconciler plan\n\n{summary}.\n")?;
    let changed: Vec<_> = apps
        .iter()
        .filter(|a| a.state != AppState::InSync)
        .collect();
    if !changed.is_empty() {
        writeln!(out, "| | app | what |\n|---|---|---|")?;
        for a in &changed {
            let list = actions(a);
            let (mark, what) = match a.state {
                AppState::Drifted => (
                    "~",
                    format!(
                        "{}, {}",
                        plural(
                            list.iter().filter(|a| a.is_write()).count(),
                            "write",
                            "writes"
                        ),
                        plural(
                            list.iter().filter(|a| a.creates_revision()).count(),
                            "new revision",
                            "new revisions"
                        )
                    ),
                ),
                AppState::Suspended => ("◌", "suspended: nothing will be done".to_owned()),
                other => (
                    "!",
                    format!(
                        "{}: {}",
                        other.plan_status(),
                        a.reason.as_deref().unwrap_or("")
                    ),
                ),
            };
            writeln!(out, "| {mark} | `{}` | {} |", a.spec.key, cell(&what))?;
        }
        writeln!(out)?;
        for a in changed.iter().filter(|a| !actions(a).is_empty()) {
            writeln!(
                out,
                "<details><summary><code>{}</code> ({})</summary>\n\n```text",
                a.spec.key, a.spec.source
            )?;
            for action in actions(a) {
                writeln!(out, "{}", render::describe(action))?;
            }
            for l in rollout_lines(a) {
                writeln!(out, "{l}")?;
            }
            writeln!(out, "```\n</details>\n")?;
        }
    }
    if !retention.is_empty() {
        writeln!(
            out,
            "<details><summary>registry retention</summary>\n\n```text"
        )?;
        for l in retention {
            writeln!(out, "{l}")?;
        }
        writeln!(out, "```\n</details>")?;
    }
    Ok(())
}

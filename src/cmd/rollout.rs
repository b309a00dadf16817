//! `rollout status|promote|abort|retry APP`: progressive delivery controlled at run time,
//! without editing git.
//!
//! The CLI never moves traffic itself. `promote`, `abort` and `retry` leave a
//! [`Command`] in the app's [`COMMAND_TAG`] (a merge PATCH of that one tag), naming the
//! rollout's new revision, so it can never apply to a later rollout. Whichever controller
//! replica leads carries it out in the same PATCH that moves the traffic and rewrites the
//! [`STATE_TAG`], and that PATCH removes the command tag: the command survives a restart or a
//! change of leader, and is applied once. The CLI then watches the tag (every 2 s, up to
//! `--wait`) and reports what the controller did.
//!
//! `status` reads the same two tags, the live traffic and the revisions, and the spec's steps
//! (`AppSpec.rollout`) when the desired state has them.
//!
//! `--simulate` is refused: an in-process simulator lives only as long as this command and no
//! controller watches it, so a command left there would never be carried out. Point
//! `--arm-endpoint` at `aca-reconciler simulate` (and a `run` against it) instead.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Error, Exit};
use crate::arm::models::TrafficWeight;
use crate::arm::{ArmClient, Revision};
use crate::cli::{Common, Output, RolloutCommand, RolloutStatusArgs, RolloutVerbArgs};
use crate::rollout::{COMMAND_TAG, Command, Phase, RolloutState, STATE_TAG, Verb};
use crate::spec::{AppSpec, DesiredState};
use crate::time::{Clock, Millis, format_arm};

/// How often a command's tag is looked at while waiting for the controller.
const POLL: Duration = Duration::from_secs(2);

/// `rollout ...`.
///
/// # Errors
/// The desired state is invalid, the app is not a managed one (or the name is ambiguous),
/// the rollout is in a phase the verb does not fit, a command already waits (without
/// `--force`), Azure cannot be reached, or writing failed.
pub async fn rollout(
    common: &Common,
    command: &RolloutCommand,
    out: &mut (dyn Write + Send),
) -> Result<Exit, Error> {
    if common.simulate {
        return Err(Error::Refused(
            "--simulate starts a private in-process simulator that no controller watches, so a rollout there has no state and a command would never be carried out; point --arm-endpoint at `aca-reconciler simulate` (with `aca-reconciler run` against it) instead".to_owned(),
        ));
    }
    let app = match command {
        RolloutCommand::Status(a) => &a.app,
        RolloutCommand::Promote(a) | RolloutCommand::Abort(a) | RolloutCommand::Retry(a) => &a.app,
    };
    crate::telemetry::init(common.log_format, "warn");
    let desired = super::load(common, out)?;
    let spec = resolve(&desired, app).map_err(Error::Refused)?;
    let connection = crate::connect::connect(common, &desired)
        .await
        .map_err(Error::Setup)?;
    let client = &connection.client;
    match command {
        RolloutCommand::Status(args) => status(client, spec, args, common.output, out).await,
        RolloutCommand::Promote(args) => {
            command_verb(client, spec, Verb::Promote, args, common.output, out).await
        }
        RolloutCommand::Abort(args) => {
            command_verb(client, spec, Verb::Abort, args, common.output, out).await
        }
        RolloutCommand::Retry(args) => {
            command_verb(client, spec, Verb::Retry, args, common.output, out).await
        }
    }
}

/// The managed app `NAME`, `RESOURCE_GROUP/NAME` or `SUBSCRIPTION/RESOURCE_GROUP/NAME` names
/// (subscription and group compared without regard to case, as Azure does).
///
/// # Errors
/// The text is not one of those forms, names no managed app, or names more than one; the
/// message lists the candidates.
pub fn resolve<'a>(desired: &'a DesiredState, app: &str) -> Result<&'a AppSpec, String> {
    let parts: Vec<&str> = app.split('/').collect();
    let (sub, group, name) = match parts.as_slice() {
        [n] => (None, None, *n),
        [g, n] => (None, Some(*g), *n),
        [s, g, n] => (Some(*s), Some(*g), *n),
        _ => {
            return Err(format!(
                "`{app}`: name the app as NAME, RESOURCE_GROUP/NAME or SUBSCRIPTION/RESOURCE_GROUP/NAME"
            ));
        }
    };
    if name.is_empty() || group == Some("") || sub == Some("") {
        return Err(format!(
            "`{app}`: name the app as NAME, RESOURCE_GROUP/NAME or SUBSCRIPTION/RESOURCE_GROUP/NAME"
        ));
    }
    let full = |s: &AppSpec| {
        format!(
            "{}/{}/{}",
            s.key.subscription, s.key.resource_group, s.key.name
        )
    };
    let matches: Vec<&AppSpec> = desired
        .apps
        .values()
        .filter(|s| s.key.name.eq_ignore_ascii_case(name))
        .filter(|s| group.is_none_or(|g| s.key.resource_group.eq_ignore_ascii_case(g)))
        .filter(|s| sub.is_none_or(|x| s.key.subscription.eq_ignore_ascii_case(x)))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => {
            let same_name: Vec<String> = desired
                .apps
                .values()
                .filter(|s| s.key.name.eq_ignore_ascii_case(name))
                .map(full)
                .collect();
            let candidates = if same_name.is_empty() {
                desired.apps.values().map(full).collect()
            } else {
                same_name
            };
            Err(format!(
                "`{app}` is not a managed app in the desired state (only apps the desired state names have rollouts); {}",
                list("the managed apps are", &candidates)
            ))
        }
        many => Err(format!(
            "`{app}` names {} managed apps: {}; write RESOURCE_GROUP/NAME or SUBSCRIPTION/RESOURCE_GROUP/NAME",
            many.len(),
            many.iter().map(|s| full(s)).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// `intro: a, b, c` (at most 20, then how many more), or that there are none.
fn list(intro: &str, items: &[String]) -> String {
    if items.is_empty() {
        return "the desired state names no apps".to_owned();
    }
    let shown: Vec<&str> = items.iter().take(20).map(String::as_str).collect();
    let more = items.len().saturating_sub(shown.len());
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("{intro}: {}{tail}", shown.join(", "))
}

/// What Azure shows of one app's rollout.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// The [`STATE_TAG`] value, if any.
    state_tag: Option<String>,
    /// The [`COMMAND_TAG`] value, if any.
    command_tag: Option<String>,
    /// The app's traffic rules.
    traffic: Vec<TrafficWeight>,
    /// `latestRevisionName` (what a `latestRevision` rule carries).
    latest: Option<String>,
    /// Its revisions (`None`: not read).
    revisions: Option<Vec<Revision>>,
    /// A write of someone's is in flight (`provisioningState: InProgress`).
    busy: bool,
}

impl Snapshot {
    fn state(&self) -> Option<RolloutState> {
        self.state_tag.as_deref().and_then(RolloutState::decode)
    }

    /// The live weight of a revision: rules naming it, and `latestRevision` rules when it is
    /// the latest.
    fn weight(&self, revision: &str) -> i64 {
        self.traffic
            .iter()
            .filter(|t| {
                t.revision_name.as_deref() == Some(revision)
                    || (t.latest_revision && self.latest.as_deref() == Some(revision))
            })
            .map(|t| t.weight)
            .sum()
    }

    fn running_state(&self, revision: &str) -> Option<String> {
        let r = self.revisions.as_ref()?.iter().find(|r| r.name == revision);
        Some(match r {
            None => "absent".to_owned(),
            Some(r) if !r.properties.active => "inactive".to_owned(),
            Some(r) => r
                .properties
                .running_state
                .clone()
                .unwrap_or_else(|| "unknown".to_owned()),
        })
    }
}

/// Reads the app (and, with `revisions`, its revisions).
async fn read(client: &ArmClient, spec: &AppSpec, revisions: bool) -> Result<Snapshot, Error> {
    let key = &spec.key;
    let app = client
        .get_app(key)
        .await
        .map_err(|e| Error::Setup(format!("cannot read {key} from Azure: {e}")))?;
    let revisions = if revisions {
        Some(
            client
                .list_revisions(key)
                .await
                .map_err(|e| Error::Setup(format!("cannot read {key}'s revisions: {e}")))?,
        )
    } else {
        None
    };
    Ok(Snapshot {
        state_tag: app.tags.get(STATE_TAG).cloned(),
        command_tag: app.tags.get(COMMAND_TAG).cloned(),
        traffic: app.traffic().to_vec(),
        latest: app.properties.latest_revision_name.clone(),
        busy: app.is_busy(),
        revisions,
    })
}

/// `2026-12-05T03:00:00+00:00 (4m ago)`.
fn when(at: Millis, now: Millis) -> String {
    let ago = Duration::from_secs(u64::try_from((now - at).max(0) / 1000).unwrap_or(0));
    format!("{} ({} ago)", format_arm(at), human(ago))
}

/// A duration in its two largest units: `4m 12s`, `2h 5m`, `3d 1h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m {}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// Everything `rollout status` shows, as one JSON object (the text form is written from it).
fn view(spec: &AppSpec, snap: &Snapshot, now: Millis) -> Value {
    let key = &spec.key;
    let steps = spec.rollout.as_ref().map(|r| &r.steps);
    let rollout = snap.state().map(|s| {
        let step_weight = steps
            .and_then(|steps| usize::try_from(s.step).ok().and_then(|i| steps.get(i)))
            .map(|st| st.weight);
        let revision = |name: &str| {
            json!({
                "revision": name,
                "weight": snap.weight(name),
                "runningState": snap.running_state(name),
            })
        };
        json!({
            "phase": s.phase.as_str(),
            "step": s.step,
            "steps": steps.map(Vec::len),
            "stepWeight": step_weight,
            "since": format_arm(s.since),
            "sinceSeconds": now.saturating_sub(s.since).max(0) / 1000,
            "failedChecks": s.failed_checks,
            "maxFailedChecks": spec.rollout.as_ref().and_then(|r| r.analysis.as_ref()).map(|a| a.max_failed_checks),
            "stable": (!s.stable.is_empty()).then(|| revision(&s.stable)),
            "canary": revision(&s.canary),
            "reason": s.reason,
        })
    });
    let command = snap
        .command_tag
        .as_ref()
        .map(|raw| match Command::decode(raw) {
            Some(c) => json!({
                "verb": c.verb.as_str(),
                "canary": c.canary,
                "at": format_arm(c.at),
                "forThisRollout": snap.state().is_some_and(|s| s.canary == c.canary),
            }),
            None => json!({"unreadable": raw}),
        });
    let traffic: Vec<Value> = snap
        .traffic
        .iter()
        .map(|t| {
            json!({
                "revision": if t.latest_revision { snap.latest.clone() } else { t.revision_name.clone() },
                "latestRevision": t.latest_revision,
                "weight": t.weight,
                "label": t.label,
            })
        })
        .collect();
    json!({
        "subscription": key.subscription,
        "resourceGroup": key.resource_group,
        "name": key.name,
        "stateTag": snap.state_tag,
        "rollout": rollout,
        "command": command,
        "traffic": traffic,
    })
}

/// The text form of [`view`].
fn write_view(v: &Value, now: Millis, out: &mut dyn Write) -> std::io::Result<()> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    writeln!(
        out,
        "{}/{} (subscription {})",
        s(&v["resourceGroup"]),
        s(&v["name"]),
        s(&v["subscription"])
    )?;
    let r = &v["rollout"];
    if r.is_null() {
        match v["stateTag"].as_str() {
            None => writeln!(
                out,
                "rollout      none recorded (no `{STATE_TAG}` tag): a rollout starts when a new revision is made from a spec with `rollout`"
            )?,
            Some(raw) => writeln!(
                out,
                "rollout      none this version can read: the `{STATE_TAG}` tag holds `{raw}` (the controller treats it as no rollout)"
            )?,
        }
    } else {
        let step = r["step"].as_i64().unwrap_or(-1);
        // `/N` and the step's weight come from the spec's steps; without them (a spec without
        // `rollout`, or one this version cannot read yet) the live weight stands in.
        let of = r["steps"]
            .as_u64()
            .map(|n| format!("/{n}"))
            .unwrap_or_default();
        let step_text = if step < 0 {
            format!("starting the new revision (before step 1{of})")
        } else {
            let weight = match r["stepWeight"].as_u64() {
                Some(w) => format!(", {w}% on the new revision"),
                None => format!(
                    ", {}% live on the new revision",
                    r["canary"]["weight"].as_i64().unwrap_or(0)
                ),
            };
            format!("step {}{of}{weight}", step.saturating_add(1))
        };
        let since = r["sinceSeconds"].as_i64().unwrap_or(0);
        writeln!(
            out,
            "phase        {}: {step_text}, since {}",
            s(&r["phase"]),
            when(now - since * 1000, now)
        )?;
        for (label, rev) in [("new", &r["canary"]), ("stable", &r["stable"])] {
            if rev.is_null() {
                writeln!(out, "{label:<12} none (no revision ran before)")?;
                continue;
            }
            writeln!(
                out,
                "{label:<12} {:<40} {:>3}% live   {}",
                s(&rev["revision"]),
                rev["weight"].as_i64().unwrap_or(0),
                rev["runningState"].as_str().unwrap_or("-")
            )?;
        }
        let of_max = r["maxFailedChecks"]
            .as_u64()
            .map(|m| format!(" (rolls back at {m})"))
            .unwrap_or_default();
        writeln!(
            out,
            "checks       {} failed{of_max}",
            r["failedChecks"].as_u64().unwrap_or(0)
        )?;
        let reason = s(&r["reason"]);
        writeln!(
            out,
            "reason       {}",
            if reason.is_empty() { "-" } else { &reason }
        )?;
    }
    let traffic: Vec<String> = v["traffic"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let who = t["revision"].as_str().unwrap_or("?");
            let latest = if t["latestRevision"] == true {
                " (latest)"
            } else {
                ""
            };
            let label = t["label"]
                .as_str()
                .map(|l| format!(" [{l}]"))
                .unwrap_or_default();
            format!(
                "{who}{latest}{label} {}%",
                t["weight"].as_i64().unwrap_or(0)
            )
        })
        .collect();
    writeln!(
        out,
        "traffic      {}",
        if traffic.is_empty() {
            "-".to_owned()
        } else {
            traffic.join(", ")
        }
    )?;
    let c = &v["command"];
    if c.is_null() {
        writeln!(out, "command      none waiting")?;
    } else if let Some(raw) = c["unreadable"].as_str() {
        writeln!(
            out,
            "command      `{raw}` waits in the `{COMMAND_TAG}` tag, but it is not a command this version reads"
        )?;
    } else {
        let at = c["at"]
            .as_str()
            .and_then(crate::time::parse)
            .map_or_else(|| s(&c["at"]), |at| when(at, now));
        let stale = if c["forThisRollout"] == true {
            String::new()
        } else {
            " (not this rollout's revision: the controller will not carry it out)".to_owned()
        };
        writeln!(
            out,
            "command      {} for {}, waiting since {at}{stale}",
            s(&c["verb"]),
            s(&c["canary"])
        )?;
    }
    if let Some(check) = v.get("lastCheck") {
        match check {
            Value::Null => writeln!(out, "last check   none reported by the controller")?,
            Value::String(note) => writeln!(out, "last check   {note}")?,
            // The controller's check ([`crate::rollout::Check`]) in words where it has them.
            other => match (other["verdict"].as_str(), other["reason"].as_str()) {
                (Some(verdict), Some(reason)) => {
                    let at = other["at"]
                        .as_i64()
                        .map(|at| format!(", {}", when(at, now)))
                        .unwrap_or_default();
                    writeln!(out, "last check   {verdict}: {reason}{at}")?;
                }
                _ => writeln!(out, "last check   {other}")?,
            },
        }
    }
    Ok(())
}

/// `rollout status APP`.
async fn status(
    client: &ArmClient,
    spec: &AppSpec,
    args: &RolloutStatusArgs,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<Exit, Error> {
    let snap = read(client, spec, true).await?;
    let now = Clock::new().now();
    let mut v = view(spec, &snap, now);
    if let Some(server) = &args.server {
        v["lastCheck"] = match last_check(server, spec).await {
            Ok(check) => check.unwrap_or(Value::Null),
            Err(e) => Value::String(format!("unavailable: {e}")),
        };
    }
    if output == Output::Json {
        serde_json::to_writer_pretty(&mut *out, &v).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        write_view(&v, now, out)?;
    }
    Ok(match snap.state() {
        Some(s) if s.phase == Phase::RolledBack => Exit::Changes,
        _ => Exit::Success,
    })
}

/// The app's `rollout.lastCheck` in a running controller's `GET /status` (`None`: the
/// controller reports none, or does not report rollouts).
async fn last_check(server: &str, spec: &AppSpec) -> Result<Option<Value>, String> {
    let url = format!("{}/status", server.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let body: Value = match http.get(&url).send().await {
        Ok(r) if r.status().is_success() => r
            .json()
            .await
            .map_err(|e| format!("{url} did not answer JSON: {e}"))?,
        Ok(r) => return Err(format!("{url} answered {}", r.status())),
        Err(e) => {
            return Err(format!(
                "cannot reach {url} (is `aca-reconciler run` listening there?): {}",
                crate::arm::without_url(&e)
            ));
        }
    };
    let key = &spec.key;
    let eq = |v: &Value, want: &str| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(want));
    Ok(body["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| {
            eq(&a["subscription"], &key.subscription)
                && eq(&a["resourceGroup"], &key.resource_group)
                && eq(&a["name"], &key.name)
        })
        .and_then(|a| a.get("rollout"))
        .and_then(|r| r.get("lastCheck"))
        .filter(|c| !c.is_null())
        .cloned())
}

/// Whether `verb` fits the rollout as it stands; if not, what the state is and what would
/// make sense instead.
fn fits(verb: Verb, state: Option<&RolloutState>, app: &str) -> Result<RolloutState, String> {
    let v = verb.as_str();
    let Some(s) = state else {
        return Err(format!(
            "{app} has no rollout (no readable `{STATE_TAG}` tag), so there is nothing to {v}; a rollout starts when the controller makes a new revision from a spec with `rollout`"
        ));
    };
    let wanted = match verb {
        Verb::Promote | Verb::Abort => Phase::Progressing,
        Verb::Retry => Phase::RolledBack,
    };
    if s.phase == wanted {
        return Ok(s.clone());
    }
    let what = match s.phase {
        Phase::Progressing => format!(
            "the rollout of {} is still progressing (step {}), so there is nothing to retry; `aca-reconciler rollout promote {app}` skips to 100% now, `aca-reconciler rollout abort {app}` rolls back now",
            s.canary,
            s.step.saturating_add(1)
        ),
        Phase::Promoted => format!(
            "the rollout of {} is already promoted (100% on it since {}), so there is nothing to {v}; to go back to an earlier version, change the image in git",
            s.canary,
            format_arm(s.since)
        ),
        Phase::RolledBack => format!(
            "the rollout of {} already rolled back ({}), so there is nothing to {v}; `aca-reconciler rollout retry {app}` runs it again",
            s.canary,
            if s.reason.is_empty() {
                "no reason recorded"
            } else {
                &s.reason
            }
        ),
    };
    Err(what)
}

/// What the controller should have made of a command once it took it away.
fn expected(verb: Verb, before: &RolloutState, state: &RolloutState) -> bool {
    match verb {
        // At a blue/green switch (a 100% step of its own), promote approves the switch: the
        // rollout goes on to that step and its checks, and may still switch back.
        Verb::Promote => {
            state.phase == Phase::Promoted
                || (state.phase == Phase::Progressing && state.step > before.step)
        }
        Verb::Abort => state.phase == Phase::RolledBack,
        Verb::Retry => state.phase != Phase::RolledBack,
    }
}

/// `rollout promote|abort|retry APP`.
async fn command_verb(
    client: &ArmClient,
    spec: &AppSpec,
    verb: Verb,
    args: &RolloutVerbArgs,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<Exit, Error> {
    let key = &spec.key;
    let app = &args.app;
    let snap = read(client, spec, false).await?;
    let state = fits(verb, snap.state().as_ref(), app).map_err(Error::Refused)?;
    if let Some(raw) = &snap.command_tag
        && !args.force
    {
        let waiting = match Command::decode(raw) {
            Some(c) => format!(
                "a {} command for {} waits already, since {}{}",
                c.verb.as_str(),
                c.canary,
                when(c.at, Clock::new().now()),
                if c.canary == state.canary {
                    ""
                } else {
                    " (for an earlier rollout's revision: no controller will carry it out)"
                }
            ),
            None => format!("the `{COMMAND_TAG}` tag already holds `{raw}`"),
        };
        return Err(Error::Refused(format!(
            "{waiting}; it is carried out by whichever controller leads (`aca-reconciler rollout status {app}` shows it); --force replaces it"
        )));
    }
    let now = Clock::new().now();
    let command = Command {
        verb,
        canary: state.canary.clone(),
        at: now - now.rem_euclid(1000),
    };
    let value = command.encode();
    write_command(client, spec, &snap, &value).await?;
    let v = verb.as_str();
    let left = format!(
        "{v} for {} of {key} left in its `{COMMAND_TAG}` tag at {}",
        command.canary,
        format_arm(command.at)
    );
    let how = format!(
        "whichever controller leads carries it out at its next look at the app (is `aca-reconciler run` running against this Azure?); `aca-reconciler rollout status {app}` shows it"
    );
    let report = |outcome: &str, message: &str, after: Option<&Snapshot>| {
        json!({
            "command": {"verb": v, "canary": command.canary, "at": format_arm(command.at), "tag": COMMAND_TAG, "value": value},
            "outcome": outcome,
            "message": message,
            "status": after.map(|s| view(spec, s, Clock::new().now())),
        })
    };
    let emit = |out: &mut (dyn Write + Send), doc: &Value, after: Option<&Snapshot>| {
        if output == Output::Json {
            serde_json::to_writer_pretty(&mut *out, doc).map_err(std::io::Error::other)?;
            writeln!(out)
        } else {
            writeln!(out, "{}", doc["message"].as_str().unwrap_or(""))?;
            match after {
                Some(s) => {
                    let now = Clock::new().now();
                    write_view(&view(spec, s, now), now, out)
                }
                None => Ok(()),
            }
        }
    };
    if args.wait.is_zero() {
        let message = format!("{left}; {how}");
        emit(out, &report("waiting", &message, None), None)?;
        return Ok(Exit::Success);
    }
    let deadline = tokio::time::Instant::now() + args.wait;
    loop {
        let left_now = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left_now.is_zero() {
            break;
        }
        tokio::time::sleep(POLL.min(left_now)).await;
        let after = match read(client, spec, true).await {
            Ok(s) => s,
            // A failed look is not the end of the wait: Azure may answer the next one.
            Err(e) => {
                tracing::warn!(app = %key, error = %e, "cannot look at the command; looking again");
                continue;
            }
        };
        match after.command_tag.as_deref() {
            Some(t) if t == value => {}
            Some(other) => {
                let message = format!(
                    "{left}, but it was replaced by `{other}` before a controller carried it out; nothing of it was done"
                );
                emit(
                    out,
                    &report("replaced", &message, Some(&after)),
                    Some(&after),
                )?;
                return Ok(Exit::Failed);
            }
            None => {
                let new = after.state();
                let (outcome, message, exit) = match &new {
                    Some(s) if s.canary == command.canary && expected(verb, &state, s) => (
                        "done",
                        format!(
                            "{v} for {} carried out: the rollout is {} now",
                            command.canary,
                            s.phase.as_str()
                        ),
                        Exit::Success,
                    ),
                    Some(s) if s.canary != command.canary => (
                        "superseded",
                        format!(
                            "the command was taken away, but a newer rollout (of {}) began: {v} for {} was not carried out",
                            s.canary, command.canary
                        ),
                        Exit::Failed,
                    ),
                    Some(s) => (
                        "declined",
                        format!(
                            "the command was taken away, but the rollout of {} is {}: the controller did not carry out {v} (its log says why)",
                            s.canary,
                            s.phase.as_str()
                        ),
                        Exit::Failed,
                    ),
                    None => (
                        "declined",
                        format!(
                            "the command was taken away, but the app no longer shows a rollout: {v} for {} was not carried out",
                            command.canary
                        ),
                        Exit::Failed,
                    ),
                };
                emit(out, &report(outcome, &message, Some(&after)), Some(&after))?;
                return Ok(exit);
            }
        }
    }
    let message = format!(
        "{left}; it still waits there after {}: {how}",
        crate::duration::Human(args.wait)
    );
    emit(out, &report("waiting", &message, None), None)?;
    Ok(Exit::Changes)
}

/// Writes the command tag, and only it: a JSON merge patch of `tags` adds or replaces that one
/// tag and leaves every other tag and field as it is [doc: learn.microsoft.com rest/api/
/// containerapps/container-apps/update, "Patches a Container App using JSON Merge Patch"].
/// Not while a write of someone's is in flight (contract section 3); a write that may not
/// have landed is looked for before it is sent again.
async fn write_command(
    client: &ArmClient,
    spec: &AppSpec,
    first: &Snapshot,
    value: &str,
) -> Result<(), Error> {
    let key = &spec.key;
    let body = json!({"tags": {COMMAND_TAG: value}});
    let started = tokio::time::Instant::now();
    let mut snap = first.clone();
    let mut attempts = 0;
    loop {
        if snap.busy {
            if started.elapsed() > Duration::from_secs(120) {
                return Err(Error::Setup(format!(
                    "{key} has had a write in progress (provisioningState InProgress) for 2 minutes; the command was not written; try again when it is done"
                )));
            }
            tokio::time::sleep(POLL).await;
            snap = read(client, spec, false).await?;
            continue;
        }
        attempts += 1;
        let written = client
            .patch_app(key, &body)
            .await
            .map_err(|e| Error::Setup(format!("cannot write the command to {key}: {e}")))?;
        if written.landed == crate::arm::Landed::Yes {
            return Ok(());
        }
        let after = read(client, spec, false).await?;
        if after.command_tag.as_deref() == Some(value) {
            return Ok(());
        }
        if after.state_tag != first.state_tag || attempts >= 3 {
            return Err(Error::Setup(format!(
                "the command to {key} did not land (Azure lost the answer or another write held the app) and the app has moved on since; look with `aca-reconciler rollout status` and ask again"
            )));
        }
        snap = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AppKey, Pos, Source};

    fn app(sub: &str, rg: &str, name: &str) -> AppSpec {
        AppSpec {
            key: AppKey::new(sub, rg, name),
            source: Source {
                file: "x.yaml".into(),
                pos: Pos { line: 1, column: 1 },
            },
            suspend: false,
            revision_mode: None,
            images: Default::default(),
            replicas: None,
            traffic: None,
            keep_active: None,
            restart_generation: None,
            rollout: None,
        }
    }

    fn desired() -> DesiredState {
        let mut d = DesiredState::default();
        for a in [
            app("s1", "rg-dev", "api"),
            app("s2", "rg-prod", "api"),
            app("s2", "rg-prod", "web"),
        ] {
            d.apps.insert(a.key.clone(), a);
        }
        d
    }

    #[test]
    fn an_app_is_named_by_name_group_or_subscription() {
        let d = desired();
        assert_eq!(resolve(&d, "web").map(|a| &a.key.name), Ok(&"web".into()));
        assert_eq!(
            resolve(&d, "RG-PROD/api").map(|a| a.key.subscription.as_str()),
            Ok("s2")
        );
        assert_eq!(
            resolve(&d, "s1/rg-dev/api").map(|a| a.key.resource_group.as_str()),
            Ok("rg-dev")
        );
    }

    #[test]
    fn an_ambiguous_or_unknown_name_lists_the_candidates() {
        let d = desired();
        let e = resolve(&d, "api").unwrap_err();
        assert!(
            e.contains("s1/rg-dev/api") && e.contains("s2/rg-prod/api"),
            "{e}"
        );
        let e = resolve(&d, "nope").unwrap_err();
        assert!(
            e.contains("s2/rg-prod/web") && e.contains("s1/rg-dev/api"),
            "{e}"
        );
        let e = resolve(&d, "rg-x/api").unwrap_err();
        assert!(e.contains("s1/rg-dev/api") && !e.contains("web"), "{e}");
        assert!(resolve(&d, "a/b/c/d").unwrap_err().contains("NAME"));
        assert!(resolve(&d, "/api").unwrap_err().contains("NAME"));
    }

    fn state(phase: Phase) -> RolloutState {
        RolloutState {
            phase,
            step: 0,
            since: 1_733_370_000_000,
            failed_checks: 0,
            last_failed_at: 0,
            stable: "api--a".into(),
            canary: "api--b".into(),
            reason: String::new(),
        }
    }

    #[test]
    fn each_verb_fits_one_phase_and_says_what_would_make_sense() {
        for verb in [Verb::Promote, Verb::Abort] {
            assert!(fits(verb, Some(&state(Phase::Progressing)), "api").is_ok());
            let e = fits(verb, Some(&state(Phase::RolledBack)), "api").unwrap_err();
            assert!(e.contains("rollout retry api"), "{e}");
            let e = fits(verb, Some(&state(Phase::Promoted)), "api").unwrap_err();
            assert!(e.contains("already promoted"), "{e}");
        }
        assert!(fits(Verb::Retry, Some(&state(Phase::RolledBack)), "api").is_ok());
        let e = fits(Verb::Retry, Some(&state(Phase::Progressing)), "api").unwrap_err();
        assert!(e.contains("rollout abort api"), "{e}");
        assert!(
            fits(Verb::Retry, None, "api")
                .unwrap_err()
                .contains("no rollout")
        );
    }

    #[test]
    fn live_weight_counts_named_and_latest_rules() {
        let snap = Snapshot {
            traffic: vec![
                TrafficWeight {
                    revision_name: Some("api--a".into()),
                    weight: 80,
                    ..Default::default()
                },
                TrafficWeight {
                    latest_revision: true,
                    weight: 20,
                    ..Default::default()
                },
            ],
            latest: Some("api--b".into()),
            ..Default::default()
        };
        assert_eq!((snap.weight("api--a"), snap.weight("api--b")), (80, 20));
    }
}

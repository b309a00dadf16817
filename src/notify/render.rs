//! What each target receives: pure functions from events to the JSON body a target's API takes.
//! No I/O and no clock, so each shape is tested on its own and shown in the README.
//!
//! | target | body |
//! | --- | --- |
//! | Teams (Workflows) | a `message` with one Adaptive Card 1.4: a title, then per event a line (errors in `attention` colour) and a FactSet (app, reason, commit, details) |
//! | Slack | `{"text": fallback, "blocks": [...]}`: a title section, one `mrkdwn` section per event, a context block "and K more" |
//! | webhook | `{"reportingController": "aca-reconciler", "notification": NAME, "events": [Event...]}` |
//! | GitHub | one commit status per event: `{"state", "context": "aca-reconciler/<resource group>/<app>", "description"}` |

use serde_json::{Value, json};

use super::{Event, Reason, Severity};

/// Who sends: `reportingController` in webhook bodies, the prefix of GitHub contexts.
pub const CONTROLLER: &str = "aca-reconciler";

/// Slack's limit on the text of one section block (Block Kit reference).
pub const SLACK_TEXT_MAX: usize = 3000;

/// Slack's limit on blocks per message (Block Kit reference).
pub const SLACK_BLOCKS_MAX: usize = 50;

/// GitHub's limit on a commit status description (REST docs, "description" of a status; Argo CD
/// truncates at 140 too).
pub const GITHUB_DESCRIPTION_MAX: usize = 140;

/// `s` cut to at most `max` characters, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `resourceGroup/name`, or `None` for an event about no app.
fn app_of(e: &Event) -> Option<String> {
    e.app
        .as_ref()
        .map(|a| format!("{}/{}", a.resource_group, a.name))
}

/// The first 7 digits of a commit, as git shows it.
fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

/// One line per event: `Failed rg/app: the message`.
fn headline(e: &Event) -> String {
    match app_of(e) {
        Some(app) => format!("{} {app}: {}", e.reason.as_str(), e.message),
        None => format!("{}: {}", e.reason.as_str(), e.message),
    }
}

/// The message's title: the event's reason and app for one, counts for several.
pub fn title(events: &[Event]) -> String {
    let errors = events
        .iter()
        .filter(|e| e.severity == Severity::Error)
        .count();
    match events {
        // The event's text follows under the title; the title names it only.
        [one] => match app_of(one) {
            Some(app) => format!("{CONTROLLER}: {} {app}", one.reason.as_str()),
            None => format!("{CONTROLLER}: {}", one.reason.as_str()),
        },
        _ if errors == 0 => format!("{CONTROLLER}: {} events", events.len()),
        _ => format!(
            "{CONTROLLER}: {} events, {errors} error{}",
            events.len(),
            if errors == 1 { "" } else { "s" }
        ),
    }
}

/// The facts shown under an event: app, reason, commit, source, then its details.
fn facts(e: &Event) -> Vec<(String, String)> {
    let mut facts = Vec::new();
    if let Some(app) = app_of(e) {
        facts.push(("app".to_owned(), app));
    }
    facts.push(("reason".to_owned(), e.reason.as_str().to_owned()));
    if let Some(c) = &e.commit {
        facts.push(("commit".to_owned(), short(c).to_owned()));
    }
    if let Some(s) = &e.source {
        facts.push(("source".to_owned(), s.clone()));
    }
    for (k, v) in &e.details {
        facts.push((k.clone(), v.clone()));
    }
    facts
}

fn more(events: &[Event], shown: usize) -> Option<String> {
    let rest = events.len().saturating_sub(shown);
    (rest > 0).then(|| format!("and {rest} more"))
}

/// A Teams Workflows message: one Adaptive Card 1.4 showing the first `shown` events (the shape
/// Flux's msteams provider sends to a Workflows URL).
pub fn teams(events: &[Event], shown: usize) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": title(events),
        "size": "large",
        "weight": "bolder",
        "wrap": true,
    })];
    for e in events.iter().take(shown) {
        let mut line =
            json!({"type": "TextBlock", "text": headline(e), "wrap": true, "weight": "bolder"});
        if e.severity == Severity::Error {
            line["color"] = json!("attention");
        }
        let facts: Vec<Value> = facts(e)
            .into_iter()
            .map(|(title, value)| json!({"title": title, "value": value}))
            .collect();
        body.push(json!({
            "type": "Container",
            "separator": true,
            "items": [line, {"type": "FactSet", "facts": facts}],
        }));
    }
    if let Some(more) = more(events, shown) {
        body.push(json!({"type": "TextBlock", "text": more, "wrap": true, "isSubtle": true}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": body,
            },
        }],
    })
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped (Slack's "Formatting text" reference).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming-webhook message: a title section, one section per shown event (at most
/// [`SLACK_BLOCKS_MAX`] blocks in all, each text at most [`SLACK_TEXT_MAX`] characters) and
/// "and K more".
pub fn slack(events: &[Event], shown: usize) -> Value {
    let shown = shown.min(SLACK_BLOCKS_MAX - 2);
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": truncate(&format!("*{}*", slack_escape(&title(events))), SLACK_TEXT_MAX)},
    })];
    for e in events.iter().take(shown) {
        let mark = match e.severity {
            Severity::Error => ":red_circle:",
            Severity::Info => ":large_green_circle:",
        };
        let mut text = match app_of(e) {
            Some(app) => format!("{mark} *{}* `{}`", e.reason.as_str(), slack_escape(&app)),
            None => format!("{mark} *{}*", e.reason.as_str()),
        };
        text.push('\n');
        text.push_str(&slack_escape(&e.message));
        let extra: Vec<String> = facts(e)
            .into_iter()
            .filter(|(k, _)| k != "app" && k != "reason")
            .map(|(k, v)| format!("{}: `{}`", slack_escape(&k), slack_escape(&v)))
            .collect();
        if !extra.is_empty() {
            text.push('\n');
            text.push_str(&extra.join(" · "));
        }
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&text, SLACK_TEXT_MAX)},
        }));
    }
    if let Some(more) = more(events, shown) {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]}));
    }
    let fallback: Vec<String> = events.iter().take(shown).map(headline).collect();
    // The notification's preview: the title and what happened.
    let text = match events {
        [one] => format!("{CONTROLLER}: {}", headline(one)),
        _ => format!("{}: {}", title(events), fallback.join("; ")),
    };
    json!({"text": truncate(&text, SLACK_TEXT_MAX), "blocks": blocks})
}

/// A generic webhook body: every event as the `events` command shows it.
pub fn webhook(notification: &str, events: &[Event]) -> Value {
    json!({
        "reportingController": CONTROLLER,
        "notification": notification,
        "events": events,
    })
}

/// The commit status state of a reason: `pending` while a change is under way, `success` in
/// sync, `failure` failed or rolled back; `None` for reasons with no state.
pub fn github_state(reason: Reason) -> Option<&'static str> {
    match reason {
        Reason::Progressing | Reason::RolloutStep => Some("pending"),
        // `Synced` only where GitHub still shows the app pending or failed (the worker checks).
        Reason::Applied | Reason::Recovered | Reason::RolloutPromoted | Reason::Synced => {
            Some("success")
        }
        Reason::Failed | Reason::RolledBack => Some("failure"),
        _ => None,
    }
}

/// One commit status to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    /// The commit (checked: 40 or 64 hex digits).
    pub sha: String,
    /// `aca-reconciler/<app name>`.
    pub context: String,
    /// `pending`, `success` or `failure`.
    pub state: &'static str,
    /// The event's message, at most [`GITHUB_DESCRIPTION_MAX`] characters.
    pub description: String,
}

impl CommitStatus {
    /// The status for `e`: `None` if it has no app, no (well-formed) commit or no state.
    pub fn of(e: &Event) -> Option<Self> {
        let state = github_state(e.reason)?;
        let app = e.app.as_ref()?;
        let sha = e.commit.as_ref()?;
        let hex = sha.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex || !(sha.len() == 40 || sha.len() == 64) {
            return None;
        }
        Some(Self {
            sha: sha.to_ascii_lowercase(),
            // The resource group too: the same app name in dev and prod groups is common, and
            // one repository holds both.
            context: format!("{CONTROLLER}/{}/{}", app.resource_group, app.name),
            state,
            description: truncate(&e.message, GITHUB_DESCRIPTION_MAX),
        })
    }

    /// The body of `POST /repos/{owner}/{repo}/statuses/{sha}`.
    pub fn body(&self, target_url: Option<&str>) -> Value {
        let mut body = json!({
            "state": self.state,
            "context": self.context,
            "description": self.description,
        });
        if let Some(url) = target_url {
            body["target_url"] = json!(url);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::AppKey;
    use std::collections::BTreeMap;

    fn event(reason: Reason, app: &str) -> Event {
        Event {
            at: "2026-12-05T06:00:00Z".to_owned(),
            severity: reason.severity(),
            reason,
            app: Some(AppKey::new("sub", "rg", app)),
            source: None,
            message: "a <b> & c".to_owned(),
            details: BTreeMap::new(),
            commit: Some("a".repeat(40)),
        }
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo wörld", 5), "héll…");
        assert_eq!(truncate(&"é".repeat(200), 140).chars().count(), 140);
    }

    #[test]
    fn slack_escapes_and_stays_under_the_limits() {
        let events: Vec<Event> = (0..80)
            .map(|i| event(Reason::Failed, &format!("app-{i}")))
            .collect();
        let v = slack(&events, 200);
        let blocks = v["blocks"].as_array().map_or(0, Vec::len);
        assert!(blocks <= SLACK_BLOCKS_MAX, "{blocks} blocks");
        let text = v["blocks"][1]["text"]["text"].as_str().unwrap_or("");
        assert!(text.contains("a &lt;b&gt; &amp; c"), "{text}");
        assert!(v.to_string().contains("and 32 more"));
    }

    #[test]
    fn github_needs_an_app_a_commit_and_a_state() {
        assert!(CommitStatus::of(&event(Reason::Failed, "a")).is_some());
        assert!(CommitStatus::of(&event(Reason::DesiredStateRejected, "a")).is_none());
        let mut e = event(Reason::Applied, "a");
        e.commit = Some("../../x".to_owned());
        assert!(CommitStatus::of(&e).is_none());
        e.commit = None;
        assert!(CommitStatus::of(&e).is_none());
    }
}

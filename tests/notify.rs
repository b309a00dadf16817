//! The notifier as a library, against a real HTTP receiver on loopback: each target's message
//! shape, filters, the dedup window, grouping, retries that honour `Retry-After`, drops, and
//! secrets kept out of logs and metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aca_reconciler::controller::status::Metrics;
use aca_reconciler::notify::deliver::{Notifier, NotifierOptions};
use aca_reconciler::notify::{
    Event, Filter, NotificationSpec, Reason, SecretRef, Severity, Target, UrlRef,
};
use aca_reconciler::spec::{AppKey, Pos, Source};
use common::Scratch;
use common::receiver::{Answer, Receiver};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const WAIT: Duration = Duration::from_secs(20);

fn event(reason: Reason, app: Option<&str>, message: &str) -> Event {
    Event {
        at: "2026-12-05T06:00:00Z".to_owned(),
        severity: reason.severity(),
        reason,
        app: app.map(|a| AppKey::new("00000000-0000-0000-0000-000000000000", "rg-one", a)),
        source: None,
        message: message.to_owned(),
        details: BTreeMap::new(),
        commit: Some(COMMIT.to_owned()),
    }
}

fn spec(name: &str, target: Target, filter: Filter) -> NotificationSpec {
    NotificationSpec {
        name: name.to_owned(),
        source: Source {
            file: PathBuf::from("notifications.yaml"),
            pos: Pos { line: 1, column: 1 },
        },
        target,
        filter,
        window: Duration::from_secs(3600),
    }
}

/// Delays short enough for tests.
fn fast() -> NotifierOptions {
    NotifierOptions {
        grouping_delay: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
        tries: 3,
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..NotifierOptions::default()
    }
}

/// A URL (or key) in a file, as a mounted secret holds it (with a trailing newline).
fn in_file(dir: &Scratch, name: &str, value: &str) -> SecretRef {
    SecretRef::File(dir.write(name, &format!("{value}\n")))
}

fn url_in_file(dir: &Scratch, name: &str, value: &str) -> UrlRef {
    UrlRef::Secret(in_file(dir, name, value))
}

/// Log lines written while the guard lives (on this thread: `#[tokio::test]` runs the workers
/// here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let buf = Arc::clone(&logs.0);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&buf)))
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Setup {
    metrics: Metrics,
    notifier: Notifier,
}

impl Setup {
    fn new(options: NotifierOptions, specs: &[NotificationSpec], root: &Path) -> Self {
        let metrics = Metrics::default();
        let notifier = Notifier::new(options, metrics.notifications.clone());
        notifier.configure(specs, root);
        Self { metrics, notifier }
    }

    async fn flush(&self) {
        assert!(
            self.notifier.flush(WAIT).await,
            "the notifier did not finish within {WAIT:?}"
        );
    }

    /// `acar_notifications_total{target,result}` as `/metrics` shows it.
    fn count(&self, target: &str, result: &str) -> u64 {
        let text = self.metrics.encode();
        let head = format!("acar_notifications_total{{target=\"{target}\",result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&head))
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

fn failed_app(name: &str) -> Event {
    let mut e = event(
        Reason::Failed,
        Some(name),
        "Azure refused the update: InvalidImage",
    );
    e.details
        .insert("requestId".to_owned(), "7f3a-req-id".to_owned());
    e
}

#[tokio::test]
async fn teams_gets_one_adaptive_card() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    let url = url_in_file(
        &dir,
        "teams",
        &rx.url("/workflows/abc/triggers/manual?sig=SECRET"),
    );
    let s = Setup::new(
        fast(),
        &[spec("team-chat", Target::Teams { url }, Filter::default())],
        dir.path(),
    );
    s.notifier.send(&[
        failed_app("orders"),
        event(Reason::Applied, Some("web"), "in sync after 1 change"),
    ]);
    s.flush().await;
    let got = rx.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/workflows/abc/triggers/manual?sig=SECRET");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["type"], "message");
    let att = &v["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &att["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(card["msteams"]["width"], "Full");
    let body = card["body"].as_array().unwrap();
    assert_eq!(body.len(), 3, "{card:#}");
    assert_eq!(body[0]["text"], "aca-reconciler: 2 events, 1 error");
    let failed = &body[1]["items"];
    assert_eq!(
        failed[0]["text"],
        "Failed rg-one/orders: Azure refused the update: InvalidImage"
    );
    assert_eq!(failed[0]["color"], "attention");
    let facts: Vec<(String, String)> = failed[1]["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().to_owned(),
                f["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let fact = |t: &str| facts.iter().find(|(k, _)| k == t).map(|(_, v)| v.as_str());
    assert_eq!(fact("app"), Some("rg-one/orders"));
    assert_eq!(fact("reason"), Some("Failed"));
    assert_eq!(fact("commit"), Some("0123456"));
    assert_eq!(fact("requestId"), Some("7f3a-req-id"));
    assert!(
        body[2]["items"][0].get("color").is_none(),
        "an info event is not coloured"
    );
    assert_eq!(s.count("team-chat", "sent"), 2);
}

#[tokio::test]
async fn slack_gets_blocks_and_a_fallback_text() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    let url = url_in_file(&dir, "slack", &rx.url("/services/T000/B000/XXXX"));
    let s = Setup::new(
        fast(),
        &[spec("slack", Target::Slack { url }, Filter::default())],
        dir.path(),
    );
    s.notifier.send(&[failed_app("orders")]);
    s.flush().await;
    let got = rx.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/services/T000/B000/XXXX");
    let v = got[0].json();
    assert_eq!(
        v["text"],
        "aca-reconciler: Failed rg-one/orders: Azure refused the update: InvalidImage"
    );
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2, "{v:#}");
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
    assert_eq!(
        blocks[1]["text"]["text"],
        ":red_circle: *Failed* `rg-one/orders`\nAzure refused the update: InvalidImage\ncommit: `0123456` · requestId: `7f3a-req-id`"
    );
}

#[tokio::test]
async fn a_webhook_gets_the_events_signed_with_hmac() {
    use hmac::{KeyInit, Mac};
    let dir = Scratch::new();
    let rx = Receiver::start();
    let key = "hmac-key-Very-Secret-42";
    let target = Target::Webhook {
        url: UrlRef::Inline(rx.url("/hook")),
        secret: Some(in_file(&dir, "key", key)),
    };
    let unsigned = Target::Webhook {
        url: UrlRef::Inline(rx.url("/plain")),
        secret: None,
    };
    let s = Setup::new(
        fast(),
        &[
            spec("signed", target, Filter::default()),
            spec("unsigned", unsigned, Filter::default()),
        ],
        dir.path(),
    );
    let events = vec![
        failed_app("orders"),
        event(Reason::RetentionDone, None, "deleted 3 tags"),
    ];
    s.notifier.send(&events);
    s.flush().await;
    let hook = rx.requests_to("/hook");
    assert_eq!(hook.len(), 1);
    let r = &hook[0];
    let v = r.json();
    assert_eq!(v["reportingController"], "aca-reconciler");
    assert_eq!(v["notification"], "signed");
    assert_eq!(v["events"], serde_json::to_value(&events).unwrap());
    assert_eq!(v["events"][0]["reason"], "Failed");
    assert_eq!(v["events"][0]["severity"], "error");
    assert_eq!(v["events"][0]["commit"], COMMIT);
    assert_eq!(v["events"][0]["details"]["requestId"], "7f3a-req-id");
    let sig = r.header("x-signature").expect("a signature");
    let hex = sig.strip_prefix("sha256=").expect("sha256=");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(&r.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, want, "the signature is HMAC-SHA256 of the exact body");
    let plain = rx.requests_to("/plain");
    assert_eq!(plain.len(), 1);
    assert!(plain[0].header("x-signature").is_none());
}

#[tokio::test]
async fn github_gets_one_commit_status_per_app_and_state() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    let token = "ghp_TopSecretToken123";
    let target = Target::GitHub {
        repository: "octo-org/desired".to_owned(),
        token: in_file(&dir, "token", token),
        api_url: None,
    };
    let options = NotifierOptions {
        github_api_url: rx.url("/api/v3"),
        ..fast()
    };
    let mut s = spec("commits", target, Filter::default());
    s.window = Duration::ZERO;
    let s = Setup::new(options, &[s], dir.path());
    s.notifier.send(&[event(
        Reason::Progressing,
        Some("orders"),
        "applying 1 change",
    )]);
    s.flush().await;
    let long = "x".repeat(200);
    s.notifier.send(&[
        event(Reason::Applied, Some("orders"), &long),
        // No state for these: not posted.
        event(Reason::DesiredStateRejected, Some("web"), "bad file"),
        event(Reason::LeadershipGained, None, "leading"),
    ]);
    s.flush().await;
    let all = rx.requests();
    assert_eq!(
        all[0].method, "GET",
        "the statuses GitHub holds are read first"
    );
    assert_eq!(
        all[0].path,
        format!("/api/v3/repos/octo-org/desired/commits/{COMMIT}/status?per_page=100&page=1")
    );
    let posts = || -> Vec<_> {
        rx.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    };
    let got = posts();
    assert_eq!(got.len(), 2, "{all:#?}");
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.path,
            format!("/api/v3/repos/octo-org/desired/statuses/{COMMIT}")
        );
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
        assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(r.header("x-github-api-version"), Some("2022-11-28"));
        assert_eq!(r.header("user-agent"), Some("aca-reconciler"));
    }
    assert_eq!(
        got[0].json(),
        serde_json::json!({"state": "pending", "context": "aca-reconciler/rg-one/orders", "description": "applying 1 change"})
    );
    let done = got[1].json();
    assert_eq!(done["state"], "success");
    assert_eq!(done["context"], "aca-reconciler/rg-one/orders");
    assert_eq!(done["description"].as_str().unwrap().chars().count(), 140);

    // The same state and description again: GitHub already shows it.
    s.notifier
        .send(&[event(Reason::Applied, Some("orders"), &long)]);
    s.flush().await;
    assert_eq!(posts().len(), 2);
    assert_eq!(s.count("commits", "deduplicated"), 1);

    // Pending then failure within one grouping delay: only the last is posted.
    s.notifier.send(&[
        event(Reason::RolloutStep, Some("web"), "step 1 of 3"),
        event(Reason::RolledBack, Some("web"), "rolled back"),
    ]);
    s.flush().await;
    let got = posts();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(got[2].json()["state"], "failure");
    assert_eq!(got[2].json()["context"], "aca-reconciler/rg-one/web");
    assert_eq!(rx.requests().len(), 4, "one read per commit");
}

#[tokio::test]
async fn a_new_leader_does_not_post_again_what_github_shows() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    // GitHub's combined status (the latest per context): the old leader ended with success
    // for orders.
    rx.script([combined(&[
        ("aca-reconciler/rg-one/orders", "success", "in sync"),
        ("ci/build", "success", "in sync"),
    ])]);
    let target = Target::GitHub {
        repository: "octo-org/desired".to_owned(),
        token: in_file(&dir, "token", "t"),
        api_url: Some(rx.url("/gh")),
    };
    let s = Setup::new(
        fast(),
        &[spec("commits", target, Filter::default())],
        dir.path(),
    );
    s.notifier.send(&[
        event(Reason::Applied, Some("orders"), "in sync"),
        event(Reason::Failed, Some("web"), "failed"),
    ]);
    s.flush().await;
    let got = rx.requests();
    assert_eq!(got.len(), 2, "one read, one post: {got:#?}");
    assert_eq!(got[0].method, "GET");
    assert_eq!(got[1].json()["context"], "aca-reconciler/rg-one/web");
    assert_eq!(s.count("commits", "deduplicated"), 1);
    assert_eq!(s.count("commits", "sent"), 1);
}

/// GitHub's combined status of a commit, one page holding all its contexts.
fn combined(statuses: &[(&str, &str, &str)]) -> Answer {
    page(statuses, statuses.len())
}

/// One page of GitHub's combined status: these contexts, of `total` in all.
fn page(statuses: &[(&str, &str, &str)], total: usize) -> Answer {
    let statuses: Vec<_> = statuses
        .iter()
        .map(|(context, state, description)| {
            serde_json::json!({"context": context, "state": state, "description": description})
        })
        .collect();
    Answer::Json(
        200,
        serde_json::json!({
            "state": "pending",
            "sha": COMMIT,
            "total_count": total,
            "statuses": statuses,
        })
        .to_string(),
    )
}

fn github_target(dir: &Scratch, rx: &Receiver) -> Target {
    Target::GitHub {
        repository: "octo-org/desired".to_owned(),
        token: in_file(dir, "token", "t"),
        api_url: Some(rx.url("/gh")),
    }
}

fn posts(rx: &Receiver) -> Vec<common::receiver::Request> {
    rx.requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

#[tokio::test]
async fn synced_repairs_only_what_github_shows_pending_or_failed() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    // A leader died mid-change: orders pending, billing failed; web is already success; api
    // has no status at all.
    rx.script([combined(&[
        (
            "aca-reconciler/rg-one/orders",
            "pending",
            "applying 1 change",
        ),
        ("aca-reconciler/rg-one/billing", "failure", "failed"),
        ("aca-reconciler/rg-one/web", "success", "in sync"),
    ])]);
    let s = Setup::new(
        fast(),
        &[spec("commits", github_target(&dir, &rx), Filter::default())],
        dir.path(),
    );
    s.notifier.send(&[
        event(Reason::Synced, Some("orders"), "in sync"),
        event(Reason::Synced, Some("billing"), "in sync"),
        event(Reason::Synced, Some("web"), "in sync"),
        event(Reason::Synced, Some("api"), "in sync"),
    ]);
    s.flush().await;
    let got = posts(&rx);
    let mut contexts: Vec<_> = got
        .iter()
        .map(|r| {
            assert_eq!(r.json()["state"], "success");
            r.json()["context"].as_str().unwrap().to_owned()
        })
        .collect();
    contexts.sort();
    assert_eq!(
        contexts,
        [
            "aca-reconciler/rg-one/billing",
            "aca-reconciler/rg-one/orders"
        ],
        "{got:#?}"
    );
    assert_eq!(s.count("commits", "sent"), 2);
    assert_eq!(s.count("commits", "deduplicated"), 2);
    assert_eq!(rx.requests().len(), 3, "one read, two posts");
}

#[tokio::test]
async fn a_commit_with_more_than_100_contexts_is_read_page_by_page() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    let contexts: Vec<String> = (0..150)
        .map(|i| format!("aca-reconciler/rg-one/app-{i:03}"))
        .collect();
    let all: Vec<(&str, &str, &str)> = contexts
        .iter()
        .map(|c| (c.as_str(), "pending", "applying"))
        .collect();
    rx.script([page(&all[..100], 150), page(&all[100..], 150)]);
    let s = Setup::new(
        fast(),
        &[spec("commits", github_target(&dir, &rx), Filter::default())],
        dir.path(),
    );
    // app-120 is on the second page: GitHub shows it pending, so its Synced repairs it, and
    // its Progressing with the same description is not posted again.
    s.notifier.send(&[
        event(Reason::Progressing, Some("app-130"), "applying"),
        event(Reason::Synced, Some("app-120"), "in sync"),
    ]);
    s.flush().await;
    let got = rx.requests();
    let gets: Vec<_> = got.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(gets.len(), 2, "{got:#?}");
    assert!(gets[0].path.ends_with("/status?per_page=100&page=1"));
    assert!(gets[1].path.ends_with("/status?per_page=100&page=2"));
    let posted = posts(&rx);
    assert_eq!(posted.len(), 1, "{got:#?}");
    assert_eq!(posted[0].json()["context"], "aca-reconciler/rg-one/app-120");
    assert_eq!(s.count("commits", "deduplicated"), 1);
}

#[tokio::test]
async fn leadership_changes_reread_github_and_drop_a_former_leaders_queue() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    let options = NotifierOptions {
        grouping_delay: Duration::from_millis(500),
        ..fast()
    };
    let s = Setup::new(
        options,
        &[spec("commits", github_target(&dir, &rx), Filter::default())],
        dir.path(),
    );
    s.notifier.on_leadership(true);
    s.notifier
        .send(&[event(Reason::Applied, Some("orders"), "in sync")]);
    s.flush().await;
    assert_eq!(posts(&rx).len(), 1);

    // Lost while a status waits in the queue: it is dropped, never posted.
    s.notifier
        .send(&[event(Reason::Failed, Some("orders"), "failed")]);
    s.notifier.on_leadership(false);
    s.flush().await;
    assert_eq!(posts(&rx).len(), 1, "{:#?}", rx.requests());
    assert_eq!(s.count("commits", "dropped"), 1);

    // Meanwhile the other leader posted pending; leading again, this replica reads GitHub
    // again instead of trusting that it posted success, and posts success over it.
    rx.clear();
    rx.script([combined(&[(
        "aca-reconciler/rg-one/orders",
        "pending",
        "applying 1 change",
    )])]);
    s.notifier.on_leadership(true);
    s.notifier
        .send(&[event(Reason::Applied, Some("orders"), "in sync")]);
    s.flush().await;
    let got = rx.requests();
    assert_eq!(got.len(), 2, "a read, then a post: {got:#?}");
    assert_eq!(got[0].method, "GET");
    assert_eq!(got[1].json()["state"], "success");
    assert_eq!(s.count("commits", "deduplicated"), 0);
}

#[tokio::test]
async fn filters_choose_the_events() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    let hook = |path: &str| Target::Webhook {
        url: UrlRef::Inline(rx.url(path)),
        secret: None,
    };
    let specs = [
        spec("all", hook("/all"), Filter::default()),
        spec(
            "errors",
            hook("/errors"),
            Filter {
                severity: Severity::Error,
                ..Filter::default()
            },
        ),
        spec(
            "progress",
            hook("/progress"),
            Filter {
                reasons: Some(vec![Reason::Progressing]),
                ..Filter::default()
            },
        ),
        spec(
            "web-apps",
            hook("/web-apps"),
            Filter {
                apps: vec!["web-*".to_owned(), "a?i".to_owned()],
                ..Filter::default()
            },
        ),
        spec(
            "group",
            hook("/group"),
            Filter {
                resource_groups: vec!["RG-Two".to_owned()],
                ..Filter::default()
            },
        ),
        spec(
            "team-a",
            hook("/team-a"),
            Filter {
                directories: vec![PathBuf::from("team-a")],
                ..Filter::default()
            },
        ),
    ];
    let s = Setup::new(fast(), &specs, dir.path());
    let mut other_rg = event(Reason::Applied, Some("api"), "in sync");
    other_rg.app = Some(AppKey::new("sub", "rg-two", "api"));
    let mut in_team_a = event(Reason::Applied, Some("billing"), "in sync");
    in_team_a.source = Some(format!("{}/team-a/apps.yaml:3:1", dir.path().display()));
    let mut in_team_b = event(Reason::Applied, Some("ledger"), "in sync");
    in_team_b.source = Some(format!("{}/team-b/apps.yaml:3:1", dir.path().display()));
    s.notifier.send(&[
        event(Reason::Progressing, Some("web-shop"), "applying"),
        failed_app("web-api"),
        other_rg,
        in_team_a,
        in_team_b,
        event(Reason::LeadershipGained, None, "leading"),
    ]);
    s.flush().await;
    let apps = |path: &str| -> Vec<String> {
        let got = rx.requests_to(path);
        assert!(got.len() <= 1, "{got:#?}");
        got.first().map_or_else(Vec::new, |r| {
            r.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let app = e["app"]["name"].as_str().unwrap_or("-");
                    format!("{}:{app}", e["reason"].as_str().unwrap())
                })
                .collect()
        })
    };
    assert_eq!(
        apps("/all"),
        [
            "Failed:web-api",
            "Applied:api",
            "Applied:billing",
            "Applied:ledger",
            "LeadershipGained:-"
        ],
        "every reason but Progressing"
    );
    assert_eq!(apps("/errors"), ["Failed:web-api"]);
    assert_eq!(apps("/progress"), ["Progressing:web-shop"]);
    assert_eq!(
        apps("/web-apps"),
        ["Failed:web-api", "Applied:api", "LeadershipGained:-"],
        "globs on the app name; an event about no app passes"
    );
    assert_eq!(apps("/group"), ["Applied:api", "LeadershipGained:-"]);
    assert_eq!(apps("/team-a"), ["Applied:billing", "LeadershipGained:-"]);
}

#[tokio::test]
async fn identical_events_are_sent_once_per_window() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    let target = Target::Webhook {
        url: UrlRef::Inline(rx.url("/hook")),
        secret: None,
    };
    let s = Setup::new(
        fast(),
        &[spec("hook", target, Filter::default())],
        dir.path(),
    );
    s.notifier.send(&[failed_app("orders")]);
    s.flush().await;
    // The same facts at another time with other request ids: the same event.
    let mut again = failed_app("orders");
    again.at = "2026-12-05T06:05:00Z".to_owned();
    again
        .details
        .insert("requestId".to_owned(), "other".to_owned());
    s.notifier.send(&[again.clone(), again]);
    s.notifier
        .send(&[event(Reason::Failed, Some("orders"), "another failure")]);
    s.flush().await;
    let got = rx.requests();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[1].json()["events"][0]["message"], "another failure");
    assert_eq!(s.count("hook", "deduplicated"), 2);
    assert_eq!(s.count("hook", "sent"), 2);
}

#[tokio::test]
async fn a_second_failure_after_a_recovery_is_sent() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    let target = Target::Webhook {
        url: UrlRef::Inline(rx.url("/hook")),
        secret: None,
    };
    let s = Setup::new(
        fast(),
        &[spec("hook", target, Filter::default())],
        dir.path(),
    );
    // Same app, same commit, same message, within the window: the last word must be Failed.
    for e in [
        failed_app("orders"),
        event(Reason::Recovered, Some("orders"), "in sync again"),
        failed_app("orders"),
    ] {
        s.notifier.send(&[e]);
        s.flush().await;
    }
    let got = rx.requests();
    let reasons: Vec<_> = got
        .iter()
        .map(|r| r.json()["events"][0]["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons, ["Failed", "Recovered", "Failed"], "{got:#?}");
    assert_eq!(s.count("hook", "deduplicated"), 0);
    // The same failure again right after: still a duplicate.
    s.notifier.send(&[failed_app("orders")]);
    s.flush().await;
    assert_eq!(rx.requests().len(), 3);
    assert_eq!(s.count("hook", "deduplicated"), 1);
}

#[tokio::test]
async fn a_burst_about_many_apps_is_one_message() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    let url = url_in_file(&dir, "slack", &rx.url("/services/T/B/X"));
    let options = NotifierOptions {
        grouping_delay: Duration::from_secs(2),
        max_shown: 5,
        ..fast()
    };
    let s = Setup::new(
        options,
        &[spec("slack", Target::Slack { url }, Filter::default())],
        dir.path(),
    );
    // One by one, as a pass reports its apps, the worker running in between.
    for i in 0..20 {
        s.notifier.send(&[event(
            Reason::Applied,
            Some(&format!("app-{i:02}")),
            "in sync",
        )]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.flush().await;
    let got = rx.requests();
    assert_eq!(got.len(), 1, "20 apps, one message: {got:#?}");
    let v = got[0].json();
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 1 + 5 + 1, "{v:#}");
    assert_eq!(blocks[0]["text"]["text"], "*aca-reconciler: 20 events*");
    assert_eq!(blocks[6]["elements"][0]["text"], "and 15 more");
    assert_eq!(s.count("slack", "sent"), 20);
}

#[tokio::test]
async fn retry_after_is_honoured_and_later_events_wait_their_turn() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    rx.script([
        Answer::TooMany {
            retry_after: "1".to_owned(),
        },
        Answer::Unavailable {
            retry_after: "1".to_owned(),
        },
        Answer::TooMany {
            retry_after: "1".to_owned(),
        },
    ]);
    let url = url_in_file(&dir, "slack", &rx.url("/services/T/B/X"));
    let s = Setup::new(
        fast(),
        &[spec("slack", Target::Slack { url }, Filter::default())],
        dir.path(),
    );
    s.notifier.send(&[failed_app("first")]);
    rx.until(1, WAIT).await;
    // While the worker waits out Retry-After, more events queue and are grouped.
    for i in 0..10 {
        s.notifier.send(&[event(
            Reason::Applied,
            Some(&format!("later-{i}")),
            "in sync",
        )]);
    }
    s.flush().await;
    let got = rx.requests();
    assert_eq!(
        got.len(),
        4,
        "3 tries of the first message, then one for the rest: {got:#?}"
    );
    for pair in got[..3].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(950),
            "retried after {gap:?}, before Retry-After"
        );
    }
    for r in &got[..3] {
        assert_eq!(r.json()["text"], got[0].json()["text"]);
    }
    assert_eq!(
        got[3].json()["text"]
            .as_str()
            .unwrap()
            .matches("later-")
            .count(),
        10
    );
    assert_eq!(s.count("slack", "failed"), 1);
    assert_eq!(s.count("slack", "sent"), 10);
}

#[tokio::test]
async fn github_rate_limits_are_waited_out_not_blamed_on_the_token() {
    let (logs, _guard) = Logs::capture();
    let dir = Scratch::new();
    let rx = Receiver::start();
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        // The third try comes about 1 s after the start (the Retry-After): the reset is then
        // still at least 1 whole second away.
        + 3;
    let header = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    rx.script([
        combined(&[]),
        // The secondary rate limit: 403 with Retry-After.
        Answer::Headers(403, vec![header("retry-after", "1")]),
        // The primary one: 403, nothing left until the reset (epoch seconds).
        Answer::Headers(
            403,
            vec![
                header("x-ratelimit-remaining", "0"),
                header("x-ratelimit-reset", &reset.to_string()),
            ],
        ),
    ]);
    let s = Setup::new(
        fast(),
        &[spec("commits", github_target(&dir, &rx), Filter::default())],
        dir.path(),
    );
    s.notifier
        .send(&[event(Reason::Applied, Some("orders"), "in sync")]);
    s.flush().await;
    let got = posts(&rx);
    assert_eq!(got.len(), 3, "{got:#?}");
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(950), "Retry-After: {gap:?}");
    let gap = got[2].at - got[1].at;
    assert!(
        gap >= Duration::from_millis(950),
        "x-ratelimit-reset: {gap:?}"
    );
    assert_eq!(s.count("commits", "sent"), 1);
    let text = logs.text();
    assert!(text.contains("GitHub rate limit"), "{text}");
    assert!(!text.contains("check the token"), "{text}");
}

#[tokio::test]
async fn retry_after_holds_back_the_next_message_too() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    rx.script([Answer::TooMany {
        retry_after: "2".to_owned(),
    }]);
    let target = Target::Webhook {
        url: UrlRef::Inline(rx.url("/hook")),
        secret: None,
    };
    let options = NotifierOptions { tries: 1, ..fast() };
    let s = Setup::new(
        options,
        &[spec("hook", target, Filter::default())],
        dir.path(),
    );
    s.notifier.send(&[failed_app("orders")]);
    s.flush().await;
    assert_eq!(s.count("hook", "failed"), 1, "one try, spent");
    s.notifier.send(&[failed_app("billing")]);
    s.flush().await;
    let got = rx.requests();
    assert_eq!(got.len(), 2, "{got:#?}");
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "the next message went {gap:?} after a Retry-After of 2 s"
    );
    assert_eq!(s.count("hook", "sent"), 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_dropped_and_refusals_are_not_retried() {
    let (logs, _guard) = Logs::capture();
    let dir = Scratch::new();
    let rx = Receiver::start();
    rx.answer(Answer::Status(500));
    let broken = Target::Webhook {
        url: UrlRef::Inline(rx.url("/broken")),
        secret: None,
    };
    let s = Setup::new(
        fast(),
        &[spec("broken", broken, Filter::default())],
        dir.path(),
    );
    s.notifier.send(&[failed_app("orders")]);
    s.flush().await;
    assert_eq!(rx.requests().len(), 3, "three tries");
    assert_eq!(s.count("broken", "failed"), 1);
    let text = logs.text();
    assert_eq!(
        text.matches("was not delivered after 3 tries (last: HTTP 500); dropped")
            .count(),
        1,
        "{text}"
    );

    let rx = Receiver::start();
    rx.answer(Answer::Status(401));
    let revoked = Target::Slack {
        url: UrlRef::Inline(rx.url("/services/T/B/X")),
    };
    let s = Setup::new(
        fast(),
        &[spec("revoked", revoked, Filter::default())],
        dir.path(),
    );
    s.notifier.send(&[failed_app("orders")]);
    s.flush().await;
    assert_eq!(rx.requests().len(), 1, "a 401 is not retried");
    assert_eq!(s.count("revoked", "failed"), 1);
    let text = logs.text();
    assert!(
        text.contains("refused with HTTP 401") && text.contains("check the webhook URL"),
        "{text}"
    );
}

#[tokio::test]
async fn a_hanging_target_never_blocks_send() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    rx.answer(Answer::Hang);
    let target = Target::Webhook {
        url: UrlRef::Inline(rx.url("/hang")),
        secret: None,
    };
    let options = NotifierOptions {
        queue_capacity: 16,
        timeout: Duration::from_millis(300),
        tries: 2,
        ..fast()
    };
    let s = Setup::new(
        options,
        &[spec("hang", target, Filter::default())],
        dir.path(),
    );
    let events: Vec<Event> = (0..1000)
        .map(|i| event(Reason::Applied, Some(&format!("app-{i}")), "in sync"))
        .collect();
    // Returns without waiting for the target (it never answers).
    s.notifier.send(&events);
    assert_eq!(s.count("hang", "dropped"), 1000 - 16, "the queue holds 16");
    s.flush().await;
    assert_eq!(rx.requests().len(), 2, "two tries, each timed out");
    assert_eq!(s.count("hang", "failed"), 16);
    assert_eq!(s.count("hang", "sent"), 0);
}

#[tokio::test]
async fn reconfiguring_keeps_unchanged_targets_and_stops_removed_ones() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    let hook = |path: &str| Target::Webhook {
        url: UrlRef::Inline(rx.url(path)),
        secret: None,
    };
    let a = spec("a", hook("/a"), Filter::default());
    let b = spec("b", hook("/b"), Filter::default());
    let s = Setup::new(fast(), std::slice::from_ref(&a), dir.path());
    s.notifier.send(&[failed_app("orders")]);
    s.flush().await;
    s.notifier.configure(&[a, b.clone()], dir.path());
    s.notifier.send(&[failed_app("orders")]);
    s.flush().await;
    assert_eq!(rx.requests_to("/a").len(), 1, "a keeps its dedup memory");
    assert_eq!(rx.requests_to("/b").len(), 1);
    s.notifier.configure(&[b], dir.path());
    s.notifier.send(&[failed_app("web")]);
    s.flush().await;
    assert_eq!(rx.requests_to("/a").len(), 1, "a was removed");
    assert_eq!(rx.requests_to("/b").len(), 2);
}

#[tokio::test]
async fn shutdown_sends_what_is_queued_without_the_grouping_delay() {
    let dir = Scratch::new();
    let rx = Receiver::start();
    let target = Target::Webhook {
        url: UrlRef::Inline(rx.url("/hook")),
        secret: None,
    };
    let options = NotifierOptions {
        grouping_delay: Duration::from_secs(600),
        ..fast()
    };
    let s = Setup::new(
        options,
        &[spec("hook", target, Filter::default())],
        dir.path(),
    );
    s.notifier.send(&[failed_app("orders")]);
    s.notifier.shutdown(Duration::from_secs(10)).await;
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(s.count("hook", "sent"), 1);
    s.notifier.send(&[failed_app("web")]);
    assert!(s.notifier.flush(Duration::from_secs(1)).await);
    assert_eq!(rx.requests().len(), 1, "nothing is taken after shutdown");
}

#[tokio::test]
async fn secrets_stay_out_of_logs_and_metrics() {
    let (logs, _guard) = Logs::capture();
    let dir = Scratch::new();
    let rx = Receiver::start();
    let slack_secret = "T0SECRET/B0SECRET/SlackPathSecret";
    let teams_secret = "sig=TeamsSigSecret";
    let hmac_key = "HmacKeySecret";
    let token = "ghp_GitHubTokenSecret";
    let slack = Target::Slack {
        url: url_in_file(&dir, "slack", &rx.url(&format!("/fail/{slack_secret}"))),
    };
    let teams = Target::Teams {
        url: url_in_file(&dir, "teams", &rx.url(&format!("/hang/x?{teams_secret}"))),
    };
    let hook = Target::Webhook {
        url: url_in_file(&dir, "hook", &rx.url("/refuse/hook")),
        secret: Some(in_file(&dir, "key", hmac_key)),
    };
    let github = Target::GitHub {
        repository: "octo/desired".to_owned(),
        token: in_file(&dir, "token", token),
        api_url: Some(rx.url("/refuse/api")),
    };
    let unreachable = Target::Slack {
        url: UrlRef::Inline(format!(
            "http://127.0.0.1:{}/x/UnreachableSecret",
            common::free_port()
        )),
    };
    let missing = Target::Webhook {
        url: UrlRef::Secret(SecretRef::Env("ACAR_TEST_SURELY_UNSET_URL".to_owned())),
        secret: None,
    };
    let options = NotifierOptions {
        timeout: Duration::from_millis(500),
        ..fast()
    };
    let s = Setup::new(
        options,
        &[
            spec("slack", slack, Filter::default()),
            spec("teams", teams, Filter::default()),
            spec("hook", hook, Filter::default()),
            spec("github", github, Filter::default()),
            spec("unreachable", unreachable, Filter::default()),
            spec("missing", missing, Filter::default()),
        ],
        dir.path(),
    );
    rx.answer(Answer::Status(500));
    s.notifier.send(&[failed_app("orders")]);
    s.flush().await;
    let text = logs.text();
    let metrics = s.metrics.encode();
    for secret in [
        slack_secret,
        "SlackPathSecret",
        "TeamsSigSecret",
        hmac_key,
        token,
        "UnreachableSecret",
        rx.base(),
    ] {
        assert!(!text.contains(secret), "{secret} in the logs:\n{text}");
        assert!(
            !metrics.contains(secret),
            "{secret} in the metrics:\n{metrics}"
        );
    }
    assert!(
        text.contains("environment variable ACAR_TEST_SURELY_UNSET_URL is not set"),
        "{text}"
    );
    for name in ["slack", "teams", "hook", "github", "unreachable", "missing"] {
        assert_eq!(s.count(name, "failed"), 1, "{name}: {metrics}\n{text}");
    }
}

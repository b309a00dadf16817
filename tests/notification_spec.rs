//! `kind: Notification` through `validate`: each type loads into its `NotificationSpec`, each
//! refusal is located at the key to edit, and no secret is ever repeated in a message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::path::PathBuf;
use std::time::Duration;

use aca_reconciler::notify::{
    DEFAULT_WINDOW, Filter, NotificationSpec, Reason, SecretRef, Severity, Target, UrlRef,
};
use aca_reconciler::spec::{self, LoadOptions, Pos, Source};
use common::{Scratch, bin, root, run, stdout};

/// A Notification document; `spec` is its spec's lines, indented two spaces. Its first spec
/// line is line 6.
fn doc(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: aca-reconciler/v1\nkind: Notification\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn source(file: &str, line: usize) -> Source {
    Source {
        file: PathBuf::from(file),
        pos: Pos { line, column: 3 },
    }
}

#[test]
fn the_example_of_each_type_validates_through_the_binary_without_its_secrets() {
    // Nothing is read at validate time: the variables and files it names do not exist here.
    let out = run(
        bin(&root())
            .env_remove("TEAMS_WEBHOOK_URL")
            .env_remove("AUDIT_WEBHOOK_HMAC_KEY")
            .args(["validate", "examples/notifications"]),
        0,
    );
    assert_eq!(
        stdout(&out),
        "valid: 4 documents in 1 file (0 apps, 0 registry policies, 4 notification targets)\n"
    );
    let out = run(
        bin(&root()).args(["validate", "--output", "json", "examples/notifications"]),
        0,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["notifications"],
        serde_json::json!([
            "platform-teams",
            "shop-slack",
            "audit-webhook",
            "desired-state-commits"
        ])
    );
}

#[test]
fn each_type_loads_into_its_notification_spec() {
    let file = "examples/notifications/notifications.yaml";
    let loaded = spec::load(&[PathBuf::from(file)], &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let expected = [
        NotificationSpec {
            name: "platform-teams".into(),
            source: source(file, 10),
            target: Target::Teams {
                url: UrlRef::Secret(SecretRef::Env("TEAMS_WEBHOOK_URL".into())),
            },
            filter: Filter {
                severity: Severity::Error,
                resource_groups: vec!["rg-xshopai-prod".into()],
                ..Filter::default()
            },
            window: DEFAULT_WINDOW,
        },
        NotificationSpec {
            name: "shop-slack".into(),
            source: source(file, 22),
            target: Target::Slack {
                url: UrlRef::Secret(SecretRef::File("/mnt/secrets/slack-webhook-url".into())),
            },
            filter: Filter {
                severity: Severity::Info,
                reasons: Some(vec![
                    Reason::Applied,
                    Reason::Failed,
                    Reason::Recovered,
                    Reason::RolloutPromoted,
                    Reason::RolledBack,
                ]),
                apps: vec!["ca-user-*".into(), "ca-cart-service".into()],
                resource_groups: vec![],
                directories: vec![PathBuf::from("prod")],
            },
            window: Duration::from_secs(600),
        },
        NotificationSpec {
            name: "audit-webhook".into(),
            source: source(file, 36),
            target: Target::Webhook {
                url: UrlRef::Inline("https://audit.example.com/aca-reconciler/events".into()),
                secret: Some(SecretRef::Env("AUDIT_WEBHOOK_HMAC_KEY".into())),
            },
            filter: Filter::default(),
            window: DEFAULT_WINDOW,
        },
        NotificationSpec {
            name: "desired-state-commits".into(),
            source: source(file, 46),
            target: Target::GitHub {
                repository: "contoso/platform-desired-state".into(),
                token: SecretRef::File("/mnt/secrets/github-token".into()),
                api_url: None,
            },
            filter: Filter::default(),
            window: DEFAULT_WINDOW,
        },
    ];
    assert_eq!(loaded.state.notifications, expected);
}

#[test]
fn every_field_of_the_documented_shape_is_read() {
    let s = Scratch::new();
    s.write(
        "n.yaml",
        &(doc(
            "platform-teams",
            "  type: webhook\n  url: {fromFile: /mnt/secrets/hook-url}\n  secret: {fromEnv: HOOK_KEY}\n  severity: error\n  reasons: [RolledBack, Failed, Failed]\n  apps:\n    names: [\"user-*\", \"cart-?\"]\n    resourceGroups: [RG-Shop-Prod]\n    directories: [./prod/eu/]\n  window: 30s\n---\n",
        ) + &doc(
            "ghe",
            "  type: github\n  repository: contoso/platform-desired-state\n  secret: {fromEnv: GITHUB_TOKEN}\n  apiUrl: https://github.example.com/api/v3/\n",
        )),
    );
    let loaded = spec::load(&[s.path().to_path_buf()], &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let [hook, ghe] = loaded.state.notifications.as_slice() else {
        panic!("{:#?}", loaded.state.notifications)
    };
    assert_eq!(
        hook.target,
        Target::Webhook {
            url: UrlRef::Secret(SecretRef::File("/mnt/secrets/hook-url".into())),
            secret: Some(SecretRef::Env("HOOK_KEY".into())),
        }
    );
    assert_eq!(
        hook.filter,
        Filter {
            severity: Severity::Error,
            // In Reason's order, once each.
            reasons: Some(vec![Reason::Failed, Reason::RolledBack]),
            apps: vec!["user-*".into(), "cart-?".into()],
            // Compared without regard to case, as Azure does.
            resource_groups: vec!["rg-shop-prod".into()],
            directories: vec![PathBuf::from("prod/eu")],
        }
    );
    assert_eq!(hook.window, Duration::from_secs(30));
    assert_eq!(
        ghe.target,
        Target::GitHub {
            repository: "contoso/platform-desired-state".into(),
            token: SecretRef::Env("GITHUB_TOKEN".into()),
            // Without the trailing `/`, so paths can be appended.
            api_url: Some("https://github.example.com/api/v3".into()),
        }
    );
}

// Secrets as they really look (made up); each holds "S3cret" so that a leak is easy to find.
const TEAMS_URL: &str = "https://prod-12.westeurope.logic.azure.com:443/workflows/0c1d2e3f/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=Zq8S3cretTeamsSig0123456789";
const SLACK_URL: &str =
    "https://hooks.slack.com/services/T0S3CRET1/B0S3CRET2/S3cretSlackPath0123456789";
const QUERY_URL: &str = "https://hooks.example.com/in?code=S3cretFunctionKey";
const USERINFO_URL: &str = "https://alice:S3cretPassw0rd@hooks.example.com/in";
const TOKEN_URL: &str = "https://hooks.example.com/t/ghp_S3cretTokenValue";
const RANDOM_URL: &str = "https://hooks.example.com/in/q7W9e2R4t6Y8u0I3o5S3cret";
const SLACK_PATH_URL: &str = "http://hooks.slack.com/services/S3cret";
const GITHUB_TOKEN: &str = "ghp_S3cretGithubToken0123456789abcdef";
const API_URL: &str = "https://github.example.com/api/v3?access_token=S3cretApiToken";

#[test]
fn every_refusal_is_at_its_key_and_no_secret_is_repeated() {
    let s = Scratch::new();
    let cases: &[(&str, String)] = &[
        (
            "a-teams-inline",
            doc("t", &format!("  type: teams\n  url: {TEAMS_URL}\n")),
        ),
        (
            "b-slack-inline",
            doc("s", &format!("  type: slack\n  url: {SLACK_URL}\n")),
        ),
        (
            "c-webhook-query",
            doc("w", &format!("  type: webhook\n  url: {QUERY_URL}\n")),
        ),
        (
            "d-webhook-userinfo",
            doc("w", &format!("  type: webhook\n  url: {USERINFO_URL}\n")),
        ),
        (
            "e-webhook-token",
            doc("w", &format!("  type: webhook\n  url: {TOKEN_URL}\n")),
        ),
        (
            "f-webhook-random",
            doc("w", &format!("  type: webhook\n  url: {RANDOM_URL}\n")),
        ),
        (
            "g-webhook-slack-path",
            doc(
                "w",
                &format!("  type: webhook\n  url: \"{SLACK_PATH_URL}\"\n"),
            ),
        ),
        (
            "h-secret-inline",
            doc(
                "w",
                &format!(
                    "  type: webhook\n  url: https://hooks.example.com/in\n  secret: {GITHUB_TOKEN}\n"
                ),
            ),
        ),
        (
            "i-webhook-ftp",
            doc("w", "  type: webhook\n  url: ftp://hooks.example.com/in\n"),
        ),
        (
            "j-named-wrongly",
            doc(
                "w",
                &format!(
                    "  type: webhook\n  url:\n    fromEnv: {SLACK_URL}\n  secret:\n    fromFile: secrets/hmac-key\n"
                ),
            ),
        ),
        (
            "k-env-name",
            doc(
                "w",
                "  type: webhook\n  url: {fromEnv: 9-LIVES}\n  secret: {fromEnv: A, fromFile: /b}\n",
            ),
        ),
        (
            "l-fields-of-other-types",
            doc(
                "s",
                "  type: slack\n  url: {fromEnv: SLACK_URL}\n  repository: contoso/x\n  secret: {fromEnv: KEY}\n  apiUrl: https://github.example.com/api/v3\n",
            ),
        ),
        (
            "m-github-missing",
            doc("g", "  type: github\n  url: {fromEnv: X}\n"),
        ),
        (
            "n-github-bad",
            doc(
                "g",
                &format!(
                    "  type: github\n  repository: https://github.com/contoso/x\n  secret: {{fromEnv: GITHUB_TOKEN}}\n  apiUrl: {API_URL}\n"
                ),
            ),
        ),
        ("o-teams-no-url", doc("t", "  type: teams\n")),
        (
            "p-filters",
            doc(
                "w",
                "  type: webhook\n  url: {fromEnv: HOOK}\n  reasons: [Failed, Rolledback, Deployed]\n  apps:\n    names: [User-*]\n    resourceGroups: [rg.]\n    directories: [../other, /abs, .]\n  window: 5 minutes\n",
            ),
        ),
        (
            "q-severity-passes-nothing",
            doc(
                "w",
                "  type: webhook\n  url: {fromEnv: HOOK}\n  severity: error\n  reasons: [Applied, Recovered]\n",
            ),
        ),
        (
            "r-name",
            doc(
                "\"https://x.example.com/a\"",
                "  type: webhook\n  url: {fromEnv: HOOK}\n",
            ),
        ),
        (
            "s-type",
            doc("w", "  type: msteams\n  url: {fromEnv: HOOK}\n"),
        ),
        (
            "t-webhook-plain-http",
            doc("w", "  type: webhook\n  url: http://hooks.example.com/in\n"),
        ),
    ];
    for (name, text) in cases {
        s.write(&format!("{name}.yaml"), text);
    }
    // Two files with one name: a line at each `name:`.
    s.write(
        "y-dup.yaml",
        &doc("platform", "  type: webhook\n  url: {fromEnv: A}\n"),
    );
    s.write(
        "z-dup.yaml",
        &doc("platform", "  type: slack\n  url: {fromEnv: B}\n"),
    );

    let out = run(bin(s.path()).args(["validate", "."]), 1);
    let text = stdout(&out);
    let named_it = "{fromEnv: NAME} or {fromFile: /path}";
    let reasons = "Progressing, Applied, Failed, Recovered, Synced, RolloutStep, RolloutPromoted, RolledBack, DesiredStateRejected, DesiredStateFixed, RetentionDone, RetentionFailed, LeadershipGained, LeadershipLost";
    let holds = |what: &str| {
        format!(
            "spec.url: this URL holds {what}, which must not be written in git; put the URL in an environment variable or a file and name that: {named_it}"
        )
    };
    let expected = [
        format!("./a-teams-inline.yaml:7:3: spec.url: a Teams Workflows URL is a secret (its sig= signature lets anyone post), so it must not be written in git; put it in an environment variable or a file and name that: url: {named_it}"),
        format!("./b-slack-inline.yaml:7:3: spec.url: a Slack webhook URL is a secret (its path lets anyone post), so it must not be written in git; put it in an environment variable or a file and name that: url: {named_it}"),
        format!("./c-webhook-query.yaml:7:3: {}", holds("a query string (signed URLs such as Teams Workflows' carry their signature there)")),
        format!("./d-webhook-userinfo.yaml:7:3: {}", holds("credentials (user:password@)")),
        format!("./e-webhook-token.yaml:7:3: {}", holds("a GitHub token")),
        format!("./f-webhook-random.yaml:7:3: {}", holds("a long random-looking value (a credential?)")),
        format!("./g-webhook-slack-path.yaml:7:3: {}", holds("a Slack webhook path (hooks.slack.com/services/..., the credential itself)")),
        format!("./h-secret-inline.yaml:8:3: spec.secret: a secret is never written in the desired state (it would be in git); name where it is: {named_it}"),
        "./i-webhook-ftp.yaml:7:3: spec.url: must be an http:// or https:// URL".to_owned(),
        "./j-named-wrongly.yaml:8:5: spec.url.fromEnv: holds what looks like the secret itself; write the name of the environment variable that holds it (read when a message is sent)".to_owned(),
        "./j-named-wrongly.yaml:10:5: spec.secret.fromFile: must be an absolute path, such as /mnt/secrets/teams-url (a relative one would depend on where the controller was started)".to_owned(),
        "./k-env-name.yaml:7:9: spec.url.fromEnv: is not an environment variable name (letters, digits and _, not starting with a digit)".to_owned(),
        "./k-env-name.yaml:8:3: spec.secret: write one of fromEnv or fromFile, not both".to_owned(),
        "./l-fields-of-other-types.yaml:8:3: spec.repository: is for type: github; a slack target does not use it".to_owned(),
        format!("./l-fields-of-other-types.yaml:9:3: spec.secret: a slack target takes no secret: its URL is the secret (name it in url: {named_it}); remove secret"),
        "./l-fields-of-other-types.yaml:10:3: spec.apiUrl: is for type: github; a slack target does not use it".to_owned(),
        "./m-github-missing.yaml:5:1: spec: missing field `repository`, the desired-state repository whose commits get statuses: repository: owner/repo".to_owned(),
        format!("./m-github-missing.yaml:5:1: spec: missing field `secret`, the token a github target posts with (statuses:write, or repo:status): secret: {named_it}"),
        "./m-github-missing.yaml:7:3: spec.url: a github target takes no url: it posts commit statuses to repository (owner/repo), on GitHub's API (apiUrl for GitHub Enterprise Server); remove url".to_owned(),
        "./n-github-bad.yaml:7:3: spec.repository: is not a GitHub repository: write owner/repo, not a URL (e.g. contoso/platform-desired-state)".to_owned(),
        format!("./n-github-bad.yaml:9:3: spec.apiUrl: this URL holds a query string (signed URLs such as Teams Workflows' carry their signature there), which must not be written in git; put the URL in an environment variable or a file and name that: {named_it}"),
        format!("./o-teams-no-url.yaml:5:1: spec: missing field `url`, which a teams target posts to; name the Workflows URL (it carries its signature, the secret): url: {named_it}"),
        format!("./p-filters.yaml:8:21: spec.reasons[1]: `Rolledback` is not a reason; the reasons are {reasons}; did you mean `RolledBack`?"),
        format!("./p-filters.yaml:8:33: spec.reasons[2]: `Deployed` is not a reason; the reasons are {reasons}"),
        "./p-filters.yaml:10:13: spec.apps.names[0]: `User-*` is not an app name pattern (lowercase letters, digits and -, with the wildcards * and ?)".to_owned(),
        "./p-filters.yaml:11:22: spec.apps.resourceGroups[0]: `rg.` is not a resource group name (1-90 letters, digits, _ - . ( ), not ending in .)".to_owned(),
        "./p-filters.yaml:12:19: spec.apps.directories[0]: `../other` may not go up (..); name a directory inside the desired-state tree".to_owned(),
        "./p-filters.yaml:12:29: spec.apps.directories[1]: `/abs` must be relative to the desired-state root (such as prod/eu), not absolute".to_owned(),
        "./p-filters.yaml:12:35: spec.apps.directories[2]: `.` is the root itself; leave directories out to take every app".to_owned(),
        "./p-filters.yaml:13:3: spec.window: `5 minutes` is not a duration: write a whole number and one unit of s, m, h or d, e.g. 30s, 5m, 1h, 7d".to_owned(),
        "./q-severity-passes-nothing.yaml:8:3: spec.severity: error passes only Failed, RolledBack, DesiredStateRejected, RetentionFailed, so none of these reasons would ever be sent; write severity: info, or name one of those".to_owned(),
        "./r-name.yaml:4:3: metadata.name: is not a notification name (1-63 letters, digits, . _ and -, starting with a letter or digit); it names the target in logs and metrics".to_owned(),
        "./s-type.yaml:6:3: spec.type: unknown value `msteams`, expected one of `teams`, `slack`, `webhook`, `github`; did you mean `teams`?".to_owned(),
        "./t-webhook-plain-http.yaml:7:3: spec.url: plain http only to loopback (127.0.0.1, ::1, localhost); use https".to_owned(),
        "./y-dup.yaml:4:3: metadata.name: Notification `platform` is defined again at ./z-dup.yaml:4:3; each Notification needs its own name".to_owned(),
        "./z-dup.yaml:4:3: metadata.name: Notification `platform` is already defined at ./y-dup.yaml:4:3; each Notification needs its own name".to_owned(),
        format!("invalid: 36 problems in {n} documents in {n} files (0 apps, 0 registry policies)", n = cases.len() + 2),
    ];
    let expected = expected.join("\n") + "\n";
    assert!(text == expected, "expected:\n{expected}actual:\n{text}");

    for secret in [
        TEAMS_URL,
        SLACK_URL,
        QUERY_URL,
        USERINFO_URL,
        TOKEN_URL,
        RANDOM_URL,
        SLACK_PATH_URL,
        GITHUB_TOKEN,
        API_URL,
        "https://x.example.com/a",
    ] {
        assert!(!text.contains(secret), "{secret} is repeated:\n{text}");
    }
    assert!(!text.to_lowercase().contains("s3cret"), "{text}");
    // Nor in the JSON output.
    let out = run(bin(s.path()).args(["validate", "--output", "json", "."]), 1);
    assert!(!stdout(&out).to_lowercase().contains("s3cret"));
}

#[test]
fn defaults_do_not_apply_to_notifications_and_a_bad_file_contributes_none() {
    let s = Scratch::new();
    // A Defaults beside a Notification neither helps nor hinders it.
    s.write(
        "_defaults.yaml",
        "apiVersion: aca-reconciler/v1\nkind: Defaults\nmetadata: {name: d}\nspec:\n  resourceGroup: rg-x\n",
    );
    s.write(
        "ok.yaml",
        &doc("ok", "  type: slack\n  url: {fromEnv: SLACK_URL}\n"),
    );
    // One bad document: its file's good Notification is not kept either.
    s.write(
        "bad.yaml",
        &(doc("good", "  type: slack\n  url: {fromEnv: SLACK_URL}\n---\n")
            + &doc("bad", "  type: slack\n")),
    );
    let loaded = spec::load(&[s.path().to_path_buf()], &LoadOptions::default());
    assert_eq!(loaded.diagnostics.len(), 1, "{:#?}", loaded.diagnostics);
    let names: Vec<&str> = loaded
        .state
        .notifications
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(names, ["ok"]);
}

#[test]
fn the_schema_accepts_the_examples_and_refuses_what_it_can_express() {
    let v = jsonschema::validator_for(&spec::schema::document_schema()).unwrap();
    let text =
        std::fs::read_to_string(root().join("examples/notifications/notifications.yaml")).unwrap();
    let mut n = 0;
    for de in serde_yaml::Deserializer::from_str(&text) {
        let doc: serde_json::Value = serde_json::to_value(
            <serde_yaml::Value as serde::Deserialize>::deserialize(de).unwrap(),
        )
        .unwrap();
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        n += 1;
    }
    assert_eq!(n, 4);
    let doc = |spec: serde_json::Value| {
        serde_json::json!({
            "apiVersion": "aca-reconciler/v1",
            "kind": "Notification",
            "metadata": {"name": "n"},
            "spec": spec,
        })
    };
    for bad in [
        serde_json::json!({"type": "teams", "url": "https://x.example.com/a"}),
        serde_json::json!({"type": "teams"}),
        serde_json::json!({"type": "slack", "url": {"fromEnv": "A"}, "repository": "a/b"}),
        serde_json::json!({"type": "webhook", "url": "https://x.example.com/a?sig=1"}),
        serde_json::json!({"type": "webhook", "url": {"fromEnv": "A", "fromFile": "/b"}}),
        serde_json::json!({"type": "webhook", "url": {"fromEnv": "A"}, "secret": "k"}),
        serde_json::json!({"type": "webhook", "url": {"fromEnv": "A"}, "reasons": ["Deployed"]}),
        serde_json::json!({"type": "github", "repository": "a/b"}),
        serde_json::json!({"type": "github", "secret": {"fromEnv": "T"}, "repository": "a/b", "url": {"fromEnv": "A"}}),
    ] {
        assert!(!v.is_valid(&doc(bad.clone())), "the schema accepts {bad}");
    }
}

mod never_repeated {
    use super::doc;
    use aca_reconciler::spec::load::parse_bytes;
    use aca_reconciler::spec::{LoadOptions, validate};
    use proptest::prelude::*;
    use std::path::Path;

    /// Where a secret could be written by mistake, with `V` for it.
    const PLACES: &[(&str, &str)] = &[
        ("n", "  type: teams\n  url: \"V\"\n"),
        ("n", "  type: slack\n  url: \"V\"\n"),
        ("n", "  type: webhook\n  url: \"V\"\n"),
        (
            "n",
            "  type: webhook\n  url: {fromEnv: A}\n  secret: \"V\"\n",
        ),
        ("n", "  type: webhook\n  url: {fromEnv: \"V\"}\n"),
        (
            "n",
            "  type: github\n  repository: a/b\n  secret: {fromFile: \"V\"}\n",
        ),
        (
            "n",
            "  type: github\n  repository: a/b\n  secret: {fromEnv: T}\n  apiUrl: \"V\"\n",
        ),
        (
            "n",
            "  type: github\n  repository: \"V\"\n  secret: {fromEnv: T}\n",
        ),
        ("\"V\"", "  type: webhook\n  url: {fromEnv: A}\n"),
    ];

    const PREFIXES: &[&str] = &[
        "",
        "https://",
        "http://hooks.slack.com/services/",
        "https://u:p@h.example.com/",
        "https://h.example.com/x?sig=",
        "ghp_",
        "xoxb-",
        "/mnt/",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever a secret looks like and wherever it is written, no message repeats it.
        #[test]
        fn a_value_in_a_secret_place_is_never_in_a_message(
            place in 0..PLACES.len(),
            prefix in 0..PREFIXES.len(),
            before in "[A-Za-z0-9_./:?=&@#%-]{0,30}",
            after in "[A-Za-z0-9_./:?=&@#%-]{0,30}",
        ) {
            let value = format!("{}{before}S3cretMarker{after}", PREFIXES[prefix]);
            let (name, spec) = PLACES[place];
            let text = doc(&name.replace('V', &value), &spec.replace('V', &value));
            let file = parse_bytes(Path::new("n.yaml"), Path::new(""), text.as_bytes());
            let loaded = validate::assemble(&[file], &LoadOptions::default());
            prop_assert!(!loaded.diagnostics.is_empty() || !loaded.state.notifications.is_empty());
            for d in &loaded.diagnostics {
                prop_assert!(!d.to_string().contains("S3cretMarker"), "{text}\n{d}");
            }
        }
    }
}

//! `kind: Notification`: its rules, and the [`NotificationSpec`] they build.
//!
//! # Guarantees
//! - No secret reaches git through a document that validates: Teams and Slack URLs (the
//!   signature, the secret path) and tokens are only ever named (`fromEnv`, `fromFile`), and an
//!   inline webhook URL with a query string, credentials or a token-looking value is refused.
//! - No message repeats a value that may be a secret (a URL, a token, a `fromEnv` or
//!   `fromFile` value, an `apiUrl`): it says what kind of thing is wrong, at its line.
//! - Nothing is read at validate time: the environment variable or file that holds a secret
//!   need not exist until a message is sent.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::{Checker, check_resource_group};
use crate::duration;
use crate::notify::{
    DEFAULT_WINDOW, Filter, NotificationSpec, Reason, SecretRef, Severity, Target, UrlRef,
};
use crate::spec::load::closest;
use crate::spec::raw::{
    self, NotificationDocument, NotificationSeverity, NotificationType, SecretSource, UrlSource,
};
use crate::spec::{Diagnostic, Source};

/// How to name a secret, for messages.
const NAME_IT: &str = "{fromEnv: NAME} or {fromFile: /path}";

/// Checks one `Notification` document. `None` when a part of it could not be built (the
/// problem is reported).
pub(super) fn check(d: &NotificationDocument, check: &mut Checker<'_>) -> Option<NotificationSpec> {
    let spec = &d.spec;
    let kind = spec.kind;
    let t = kind.as_str();
    check_name(&d.metadata.name, check);

    // Fields the type does not read: each at its own key.
    if kind != NotificationType::Github {
        for (field, written) in [
            ("repository", spec.repository.is_some()),
            ("apiUrl", spec.api_url.is_some()),
        ] {
            if written {
                check.problem(
                    &format!("spec.{field}"),
                    format!("is for type: github; a {t} target does not use it"),
                );
            }
        }
    }
    if matches!(kind, NotificationType::Teams | NotificationType::Slack) && spec.secret.is_some() {
        check.problem(
            "spec.secret",
            format!("a {t} target takes no secret: its URL is the secret (name it in url: {NAME_IT}); remove secret"),
        );
    }

    let url = match (kind, &spec.url) {
        (NotificationType::Github, Some(_)) => {
            check.problem(
                "spec.url",
                "a github target takes no url: it posts commit statuses to repository (owner/repo), on GitHub's API (apiUrl for GitHub Enterprise Server); remove url",
            );
            None
        }
        (NotificationType::Github, None) => None,
        (_, None) => {
            check.problem(
                "spec",
                format!(
                    "missing field `url`, which a {t} target posts to; {}",
                    url_hint(kind)
                ),
            );
            None
        }
        (_, Some(u)) => check_url(kind, u, check),
    };
    let secret = spec
        .secret
        .as_ref()
        .and_then(|s| check_secret_source("spec.secret", s, check));
    let repository = spec.repository.as_deref().filter(|r| {
        let ok = is_repository(r);
        if !ok && kind == NotificationType::Github {
            let why = if r.contains("://") {
                "write owner/repo, not a URL (e.g. contoso/platform-desired-state)"
            } else {
                "write owner/repo, e.g. contoso/platform-desired-state"
            };
            check.problem(
                "spec.repository",
                format!("is not a GitHub repository: {why}"),
            );
        }
        ok
    });
    let api_url = spec
        .api_url
        .as_deref()
        .filter(|_| kind == NotificationType::Github)
        .filter(|u| check_inline_url("spec.apiUrl", u, check))
        .map(|u| u.trim_end_matches('/').to_owned());
    if kind == NotificationType::Github {
        if spec.repository.is_none() {
            check.problem(
                "spec",
                "missing field `repository`, the desired-state repository whose commits get statuses: repository: owner/repo",
            );
        }
        if spec.secret.is_none() {
            check.problem(
                "spec",
                format!("missing field `secret`, the token a github target posts with (statuses:write, or repo:status): secret: {NAME_IT}"),
            );
        }
    }

    let filter = check_filter(spec, check);
    let window = check_window(spec.window.as_deref(), check);

    let target = match kind {
        NotificationType::Teams => Target::Teams { url: url? },
        NotificationType::Slack => Target::Slack { url: url? },
        NotificationType::Webhook => Target::Webhook { url: url?, secret },
        NotificationType::Github => Target::GitHub {
            repository: repository?.to_owned(),
            token: secret?,
            api_url,
        },
    };
    Some(NotificationSpec {
        name: d.metadata.name.clone(),
        source: Source {
            file: check.file.to_path_buf(),
            pos: check.index.locate("metadata.name"),
        },
        target,
        filter: filter?,
        window: window?,
    })
}

/// How to write `url` for a type, for messages.
fn url_hint(kind: NotificationType) -> String {
    match kind {
        NotificationType::Teams => {
            format!("name the Workflows URL (it carries its signature, the secret): url: {NAME_IT}")
        }
        NotificationType::Slack => {
            format!("name the incoming webhook URL (its path is the secret): url: {NAME_IT}")
        }
        _ => format!("url: https://... (with no secret in it), or url: {NAME_IT}"),
    }
}

/// 1-63 letters, digits, `.`, `_` and `-`, starting with a letter or digit: it becomes a log
/// field and a metric label.
fn check_name(name: &str, check: &mut Checker<'_>) {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        // Not repeated: a misplaced URL would be shown.
        check.problem(
            "metadata.name",
            "is not a notification name (1-63 letters, digits, . _ and -, starting with a letter or digit); it names the target in logs and metrics",
        );
    }
}

fn check_url(kind: NotificationType, url: &UrlSource, check: &mut Checker<'_>) -> Option<UrlRef> {
    match url {
        UrlSource::Named(s) => check_secret_source("spec.url", s, check).map(UrlRef::Secret),
        UrlSource::Inline(_) if kind == NotificationType::Teams => {
            check.problem(
                "spec.url",
                format!("a Teams Workflows URL is a secret (its sig= signature lets anyone post), so it must not be written in git; put it in an environment variable or a file and name that: url: {NAME_IT}"),
            );
            None
        }
        UrlSource::Inline(_) if kind == NotificationType::Slack => {
            check.problem(
                "spec.url",
                format!("a Slack webhook URL is a secret (its path lets anyone post), so it must not be written in git; put it in an environment variable or a file and name that: url: {NAME_IT}"),
            );
            None
        }
        UrlSource::Inline(u) => {
            check_inline_url("spec.url", u, check).then(|| UrlRef::Inline(u.clone()))
        }
    }
}

/// An http(s) URL written in the document: no secret in it, an absolute URL with a host, no
/// fragment. The URL itself is never repeated in a message.
fn check_inline_url(path: &str, url: &str, check: &mut Checker<'_>) -> bool {
    if let Some(what) = secret_in(url) {
        check.problem(
            path,
            format!("this URL holds {what}, which must not be written in git; put the URL in an environment variable or a file and name that: {NAME_IT}"),
        );
        return false;
    }
    let why = match reqwest::Url::parse(url) {
        Err(_) => Some("is not an absolute URL; write http://HOST/... or https://HOST/..."),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some("must be an http:// or https:// URL")
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some("names no host"),
        Ok(u) if u.fragment().is_some() => {
            Some("has a fragment (#...), which is never sent; remove it")
        }
        // The delivery refuses it too (deliver.rs `check_url`): said here, before a message is
        // lost.
        Ok(u)
            if u.scheme() == "http"
                && !crate::arm::is_loopback_host(u.host_str().unwrap_or("")) =>
        {
            Some("plain http only to loopback (127.0.0.1, ::1, localhost); use https")
        }
        Ok(_) => None,
    };
    if let Some(why) = why {
        check.problem(path, why);
    }
    why.is_none()
}

/// What in `text` looks like a secret, said without repeating it; `None` if nothing does.
///
/// A query string (Teams Workflows URLs sign theirs: `?...&sig=...`), credentials
/// (`user:pass@`), a known token prefix (GitHub's `ghp_`, `github_pat_`, ...; Slack's `xoxb-`,
/// ...), a Slack webhook path, or a run of 20 or more letters and digits that mixes both (a
/// random credential; words, UUIDs and version numbers are shorter runs).
pub(super) fn secret_in(text: &str) -> Option<&'static str> {
    let authority = text
        .split_once("://")
        .map_or(text, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    if authority.contains('@') {
        return Some("credentials (user:password@)");
    }
    if text.contains('?') {
        return Some(
            "a query string (signed URLs such as Teams Workflows' carry their signature there)",
        );
    }
    // Token prefixes: GitHub's (docs.github.com, "About authentication": ghp_ gho_ ghu_ ghs_
    // ghr_ github_pat_) and Slack's (api.slack.com/authentication/token-types: xoxb- xoxp-
    // xoxa- xoxs- xoxe- xapp-).
    const PREFIXES: [(&str, &str); 13] = [
        ("github_pat_", "a GitHub token"),
        ("ghp_", "a GitHub token"),
        ("gho_", "a GitHub token"),
        ("ghu_", "a GitHub token"),
        ("ghs_", "a GitHub token"),
        ("ghr_", "a GitHub token"),
        ("xoxb-", "a Slack token"),
        ("xoxp-", "a Slack token"),
        ("xoxa-", "a Slack token"),
        ("xoxs-", "a Slack token"),
        ("xoxe-", "a Slack token"),
        ("xapp-", "a Slack token"),
        ("sig=", "a signature (sig=)"),
    ];
    let lower = text.to_ascii_lowercase();
    for word in lower.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=')))
    {
        if let Some((_, what)) = PREFIXES.iter().find(|(p, _)| word.starts_with(p)) {
            return Some(what);
        }
    }
    if lower.contains("hooks.slack.com/services/") {
        return Some("a Slack webhook path (hooks.slack.com/services/..., the credential itself)");
    }
    let random = text.split(|c: char| !c.is_ascii_alphanumeric()).any(|run| {
        run.len() >= 20
            && run.chars().any(|c| c.is_ascii_alphabetic())
            && run.chars().any(|c| c.is_ascii_digit())
    });
    random.then_some("a long random-looking value (a credential?)")
}

/// `{fromEnv: NAME}` or `{fromFile: /path}`, exactly one. Values are never repeated.
fn check_secret_source(path: &str, s: &SecretSource, check: &mut Checker<'_>) -> Option<SecretRef> {
    match (&s.from_env, &s.from_file) {
        (Some(_), Some(_)) => {
            check.problem(path, "write one of fromEnv or fromFile, not both");
            None
        }
        (None, None) => {
            check.problem(path, format!("is empty; write {NAME_IT}"));
            None
        }
        (Some(name), None) => {
            let path = format!("{path}.fromEnv");
            if looks_like_the_value(name) {
                check.problem(
                    &path,
                    "holds what looks like the secret itself; write the name of the environment variable that holds it (read when a message is sent)",
                );
                return None;
            }
            let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                check.problem(
                    &path,
                    "is not an environment variable name (letters, digits and _, not starting with a digit)",
                );
                return None;
            }
            Some(SecretRef::Env(name.clone()))
        }
        (None, Some(file)) => {
            let path = format!("{path}.fromFile");
            if looks_like_the_value(file) {
                check.problem(
                    &path,
                    "holds what looks like the secret itself; write the path of the file that holds it (read when a message is sent)",
                );
                return None;
            }
            if !Path::new(file).is_absolute() {
                check.problem(
                    &path,
                    "must be an absolute path, such as /mnt/secrets/teams-url (a relative one would depend on where the controller was started)",
                );
                return None;
            }
            Some(SecretRef::File(PathBuf::from(file)))
        }
    }
}

/// A URL or a token where a name or a path belongs.
fn looks_like_the_value(text: &str) -> bool {
    text.contains("://") || secret_in(text).is_some()
}

/// `owner/repo`: GitHub's owner names (1-39 letters, digits and `-`, not at either end) and
/// repository names (1-100 letters, digits, `.`, `_`, `-`; not `.` or `..`).
fn is_repository(r: &str) -> bool {
    let Some((owner, repo)) = r.split_once('/') else {
        return false;
    };
    let owner_ok = (1..=39).contains(&owner.len())
        && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !owner.starts_with('-')
        && !owner.ends_with('-');
    let repo_ok = (1..=100).contains(&repo.len())
        && repo
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && repo != "."
        && repo != "..";
    owner_ok && repo_ok
}

fn check_filter(spec: &raw::NotificationSpec, check: &mut Checker<'_>) -> Option<Filter> {
    let before = check.out.len();
    let severity = match spec.severity.unwrap_or(NotificationSeverity::Info) {
        NotificationSeverity::Info => Severity::Info,
        NotificationSeverity::Error => Severity::Error,
    };
    let reasons = spec.reasons.as_ref().map(|names| {
        if names.is_empty() {
            check.problem(
                "spec.reasons",
                "is empty; name reasons, or leave reasons out for every reason but Progressing",
            );
        }
        let all: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        let mut reasons = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match Reason::parse(name) {
                Some(r) => reasons.push(r),
                None => {
                    let hint = closest(name, &all)
                        .map(|n| format!("; did you mean `{n}`?"))
                        .unwrap_or_default();
                    check.problem(
                        &format!("spec.reasons[{i}]"),
                        format!(
                            "`{name}` is not a reason; the reasons are {}{hint}",
                            all.join(", ")
                        ),
                    );
                }
            }
        }
        reasons.sort();
        reasons.dedup();
        reasons
    });
    if let Some(reasons) = &reasons
        && severity == Severity::Error
        && !reasons.is_empty()
        && reasons.iter().all(|r| r.severity() != Severity::Error)
    {
        let errors: Vec<&str> = Reason::ALL
            .iter()
            .filter(|r| r.severity() == Severity::Error)
            .map(|r| r.as_str())
            .collect();
        check.problem(
            "spec.severity",
            format!(
                "error passes only {}, so none of these reasons would ever be sent; write severity: info, or name one of those",
                errors.join(", ")
            ),
        );
    }
    let apps = spec.apps.clone().unwrap_or_default();
    for (field, list) in [
        ("names", &apps.names),
        ("resourceGroups", &apps.resource_groups),
        ("directories", &apps.directories),
    ] {
        if list.as_ref().is_some_and(Vec::is_empty) {
            check.problem(
                &format!("spec.apps.{field}"),
                format!("is empty; leave {field} out to take every app"),
            );
        }
    }
    let names = apps.names.unwrap_or_default();
    for (i, glob) in names.iter().enumerate() {
        let ok = !glob.is_empty()
            && glob.len() <= 64
            && glob.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '*' | '?')
            });
        if !ok {
            check.problem(
                &format!("spec.apps.names[{i}]"),
                format!("`{glob}` is not an app name pattern (lowercase letters, digits and -, with the wildcards * and ?)"),
            );
        }
    }
    let groups = apps.resource_groups.unwrap_or_default();
    for (i, rg) in groups.iter().enumerate() {
        check_resource_group(&format!("spec.apps.resourceGroups[{i}]"), rg, check);
    }
    let mut directories = Vec::new();
    for (i, dir) in apps.directories.iter().flatten().enumerate() {
        match relative_dir(dir) {
            Ok(d) => directories.push(d),
            Err(why) => check.problem(
                &format!("spec.apps.directories[{i}]"),
                format!("`{dir}` {why}"),
            ),
        }
    }
    (check.out.len() == before).then(|| Filter {
        severity,
        reasons,
        apps: names,
        // Compared without regard to case, as Azure does; stored as AppKey stores them.
        resource_groups: groups.iter().map(|g| g.to_lowercase()).collect(),
        directories,
    })
}

/// A directory of the desired-state tree: relative, not going up, `.` and `/`s tidied away.
fn relative_dir(dir: &str) -> Result<PathBuf, &'static str> {
    let path = Path::new(dir);
    if path.is_absolute() {
        return Err("must be relative to the desired-state root (such as prod/eu), not absolute");
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err("may not go up (..); name a directory inside the desired-state tree");
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("must be relative to the desired-state root (such as prod/eu)");
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err("is the root itself; leave directories out to take every app");
    }
    Ok(out)
}

fn check_window(window: Option<&str>, check: &mut Checker<'_>) -> Option<Duration> {
    match window.map(duration::parse) {
        None => Some(DEFAULT_WINDOW),
        Some(Ok(d)) if d.is_zero() => {
            check.problem(
                "spec.window",
                "must be above 0s (identical events would be sent on every pass)",
            );
            None
        }
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            check.problem("spec.window", e);
            None
        }
    }
}

/// Two Notifications with one name could not be told apart in logs and metrics: one line at
/// each `name:`.
pub(super) fn report_duplicates(specs: &[NotificationSpec], diagnostics: &mut Vec<Diagnostic>) {
    let mut first: HashMap<&str, &Source> = HashMap::new();
    for n in specs {
        match first.get(n.name.as_str()) {
            Some(earlier) => {
                diagnostics.push(Diagnostic::new(
                    &n.source.file,
                    n.source.pos,
                    format!(
                        "metadata.name: Notification `{}` is already defined at {earlier}; each Notification needs its own name",
                        n.name
                    ),
                ));
                diagnostics.push(Diagnostic::new(
                    &earlier.file,
                    earlier.pos,
                    format!(
                        "metadata.name: Notification `{}` is defined again at {}; each Notification needs its own name",
                        n.name, n.source
                    ),
                ));
            }
            None => {
                first.insert(&n.name, &n.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_by_kind() {
        let cases = [
            (
                "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers&sv=1.0&sig=AbCd",
                "a query string",
            ),
            ("https://user:pass@hooks.example.com/x", "credentials"),
            ("https://hooks.example.com/ghp_abcdefghij", "a GitHub token"),
            (
                "https://hooks.example.com/github_pat_11AB",
                "a GitHub token",
            ),
            ("https://hooks.example.com/t/xoxb-123", "a Slack token"),
            (
                "https://hooks.slack.com/services/T0/B0/x",
                "a Slack webhook path",
            ),
            (
                "https://hooks.example.com/in/a1b2c3d4e5f6g7h8i9j0k1",
                "a long random-looking value",
            ),
            ("https://hooks.example.com/in;sig=x", "a signature"),
        ];
        for (text, kind) in cases {
            let found = secret_in(text).unwrap_or_else(|| panic!("{text}: nothing found"));
            assert!(found.starts_with(kind), "{text}: {found}");
        }
        for clean in [
            "https://hooks.example.com/aca-reconciler/events",
            "http://127.0.0.1:8080/hook",
            "https://github.example.com/api/v3",
            "https://hooks.example.com/in/0b8f9c1e-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
            "https://hooks.example.com/platform-notifications-2026/v1",
            "TEAMS_WEBHOOK_URL",
            "/mnt/secrets/github-token",
        ] {
            assert_eq!(secret_in(clean), None, "{clean}");
        }
    }

    #[test]
    fn repositories() {
        for ok in ["contoso/platform-desired-state", "a/b", "x-1/.github"] {
            assert!(is_repository(ok), "{ok}");
        }
        for bad in [
            "contoso",
            "contoso/",
            "/x",
            "-a/b",
            "a/b/c",
            "a/..",
            "https://github.com/a/b",
        ] {
            assert!(!is_repository(bad), "{bad}");
        }
    }

    #[test]
    fn directories_are_tidied_and_kept_inside_the_tree() {
        assert_eq!(relative_dir("prod/eu/"), Ok(PathBuf::from("prod/eu")));
        assert_eq!(relative_dir("./prod//eu"), Ok(PathBuf::from("prod/eu")));
        assert!(relative_dir("/prod").is_err());
        assert!(relative_dir("prod/../..").is_err());
        assert!(relative_dir(".").is_err());
    }
}

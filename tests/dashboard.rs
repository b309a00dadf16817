//! The dashboard as an operator sees it: `run` (the real binary) against a `simulate` process,
//! the page drawn by a real headless Chromium (Debian's `chromium`; `.ci/run` installs it).
//!
//! Chromium's `--dump-dom` prints the page once its `load` event has fired. Between Chromium and
//! `run` sits a small proxy of this test's own: it adds one image to the page whose answer it
//! holds back, so the page stays open (polling `/status` by itself) while the test changes
//! Azure; it counts the page's requests (one page load, several `/status` polls: no reload);
//! and it releases the image, so Chromium prints the DOM, only once a poll has seen the change.
//!
//! Ignored by plain `cargo test` (it needs Chromium): `.ci/run` runs it with `--ignored`, and so
//! can you: `cargo test --test dashboard -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proc, Scratch, bin, get, spawn_simulator, wait_for};
use serde_json::{Value, json};

const HEADER: &str = "dashboard-test";
const SUB: &str = "6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b";
const RG: &str = "rg-dash";
const HOSTILE: &str = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

/// Three apps: one walking a canary held at 10% for an hour (90/10), one suspended (drift is
/// shown, never changed), one whose every write Azure refuses with a hostile error code.
fn desired(dir: &Scratch) {
    dir.write(
        "desired/_defaults.yaml",
        &format!(
            "apiVersion: aca-reconciler/v1\nkind: Defaults\nmetadata: {{name: d}}\nspec: {{subscription: {SUB}, resourceGroup: {RG}}}\n"
        ),
    );
    dir.write(
        "desired/split.yaml",
        "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: ca-split}\nspec:\n  revisionMode: multiple\n  images: {web: crxshopaiprod.azurecr.io/web:v2.0.0}\n  rollout:\n    steps:\n      - {weight: 10, pause: 1h}\n    progressDeadline: 2h\n",
    );
    dir.write(
        "desired/frozen.yaml",
        "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: ca-frozen}\nspec:\n  suspend: true\n  images: {api: crxshopaiprod.azurecr.io/api:v1.0.0}\n  replicas: {min: 1, max: 3}\n",
    );
    dir.write(
        "desired/hostile.yaml",
        "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: ca-hostile}\nspec:\n  images: {api: crxshopaiprod.azurecr.io/api:v1.0.1}\n  replicas: {min: 1, max: 2}\n",
    );
}

/// POSTs JSON with curl; the status.
fn send_json(method: &str, url: &str, token: Option<&str>, body: &Value) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(body.to_string())
        .arg(url);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    String::from_utf8_lossy(&cmd.output().unwrap().stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// `/status`'s entry of `app` (Null until it is there).
fn app_status(ep: &str, app: &str) -> Value {
    let (code, body) = get(&format!("{ep}/status"));
    if code != 200 {
        return Value::Null;
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == app).cloned())
        .unwrap_or(Value::Null)
}

/// What the proxy saw and what it holds.
#[derive(Default)]
struct Seen {
    pages: AtomicUsize,
    polls: AtomicUsize,
    release: AtomicBool,
    log: Mutex<Vec<String>>,
}

/// A proxy in front of `run` at `upstream`: serves the page with a held-back image added.
fn proxy(upstream: String) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let s = s.clone();
            let upstream = upstream.clone();
            std::thread::spawn(move || drop(serve_one(stream, &upstream, &s)));
        }
    });
    (format!("http://{addr}"), seen)
}

fn serve_one(mut stream: TcpStream, upstream: &str, seen: &Seen) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    seen.log.lock().unwrap().push(path.clone());
    let (status, headers, body): (u16, String, Vec<u8>) = if path == "/__hold" {
        while !seen.release.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // A 1x1 transparent GIF.
        let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
        (200, "Content-Type: image/gif\r\n".to_owned(), gif.to_vec())
    } else {
        if path == "/" {
            seen.pages.fetch_add(1, Ordering::SeqCst);
        }
        if path.starts_with("/status") {
            seen.polls.fetch_add(1, Ordering::SeqCst);
        }
        let out = Command::new("curl")
            .args(["-s", "-D", "-", "-o", "-"])
            .arg(format!("{upstream}{path}"))
            .output()?;
        let text = out.stdout;
        let split = text
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(text.len(), |i| i + 4);
        let head = String::from_utf8_lossy(&text[..split]).into_owned();
        let mut body = text[split..].to_vec();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(502);
        // Every header of `run`'s answer (its Content-Security-Policy included) but the framing.
        let headers: String = head
            .lines()
            .skip(1)
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                !l.is_empty()
                    && !l.starts_with("content-length:")
                    && !l.starts_with("connection:")
                    && !l.starts_with("transfer-encoding:")
            })
            .map(|l| format!("{}\r\n", l.trim_end()))
            .collect();
        if path == "/" {
            let page = String::from_utf8_lossy(&body).replace(
                "</body>",
                "<img src=\"/__hold\" alt=\"\" width=\"1\" height=\"1\"></body>",
            );
            body = page.into_bytes();
        }
        (status, headers, body)
    };
    write!(
        stream,
        "HTTP/1.1 {status} X\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    stream.flush()
}

/// Headless Chromium printing `url`'s DOM once the page has loaded; stopped after 90 s.
fn chromium_dump(url: &str, profile: &std::path::Path) -> std::process::Child {
    let browser = std::env::var("ACAR_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--window-size=1400,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg("--enable-logging=stderr")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(profile.join("chromium.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {browser} ({e}): install Debian's chromium (apt-get install chromium; .ci/run does) or set ACAR_CHROMIUM to a Chromium binary"
            )
        })
}

/// The row of `app` in the dumped DOM (its `<tr ... data-app="SUB/RG/app"...>...</tr>`).
fn row<'a>(dom: &'a str, app: &str) -> &'a str {
    let marker = format!("data-app=\"{SUB}/{RG}/{app}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no row for {app} in the page:\n{dom}"));
    let start = dom[..at].rfind("<tr").unwrap();
    let end = at + dom[at..].find("</tr>").unwrap();
    &dom[start..end]
}

/// The text of the cell `data-field="field"` in `row` (tags stripped).
fn cell(row: &str, field: &str) -> String {
    let marker = format!("data-field=\"{field}\"");
    let at = row
        .find(&marker)
        .unwrap_or_else(|| panic!("no {field} cell in {row}"));
    let start = at + row[at..].find('>').unwrap() + 1;
    let end = start + row[start..].find("</td>").unwrap();
    let mut text = String::new();
    let mut in_tag = false;
    for c in row[start..end].chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

#[test]
#[ignore = "needs Chromium: run by .ci/run, or `cargo test --test dashboard -- --ignored`"]
fn the_page_shows_every_app_follows_a_drift_without_a_reload_and_escapes_azures_text() {
    let dir = Scratch::new();
    desired(&dir);
    let (_sim, base) = spawn_simulator(
        &dir.path().join("desired"),
        HEADER,
        &["--revision-ready", "1s", "--lro", "async"],
    );
    // Azure refuses every write to ca-hostile with an error code that is markup.
    let fault = json!({
        "method": "PATCH",
        "path": "/subscriptions/*/resourceGroups/*/providers/Microsoft.App/containerApps/ca-hostile",
        "fault": {"kind": "status", "status": 400, "code": HOSTILE},
    });
    assert_eq!(
        send_json("POST", &format!("{base}/_sim/faults"), None, &fault),
        201,
        "the fault rule was not accepted"
    );

    let port = common::free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let _ctl = Proc(
        bin(dir.path())
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--interval", "2s", "--desired-state", "desired"])
            .args(["--arm-endpoint", &base, "--credential", "managed"])
            .env("IDENTITY_ENDPOINT", format!("{base}/msi/token"))
            .env("IDENTITY_HEADER", HEADER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "the three apps to come to rest",
        Duration::from_secs(90),
        || {
            app_status(&ep, "ca-split")["state"] == "progressing"
                && app_status(&ep, "ca-split")["live"]["traffic"]
                    .as_array()
                    .is_some_and(|t| t.len() == 2)
                && app_status(&ep, "ca-frozen")["state"] == "suspended"
                && app_status(&ep, "ca-hostile")["state"] == "failing"
        },
    );
    let before = app_status(&ep, "ca-frozen")["live"]["replicas"].clone();
    assert_ne!(before, json!("5-9"), "the seed already has the drift");

    // The page opens, and polls by itself.
    let (page, seen) = proxy(ep.clone());
    let profile = Scratch::new();
    let browser = Proc(chromium_dump(&format!("{page}/"), profile.path()));
    let mut browser = browser;
    let first = Instant::now();
    while seen.polls.load(Ordering::SeqCst) == 0 {
        assert!(
            first.elapsed() < Duration::from_secs(30),
            "the page did not poll /status within 30 s; it asked for {:?}",
            seen.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Someone scales ca-frozen by hand, through ARM.
    let token: Value = serde_json::from_str(
        &Command::new("curl")
            .args(["-s", "-X", "POST", "-H", "Content-Length: 0"])
            .arg(format!(
                "{base}/_sim/token?audience=https://management.azure.com/"
            ))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap(),
    )
    .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let app_url = format!(
        "{base}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.App/containerApps/ca-frozen?api-version=2025-01-01"
    );
    let code = send_json(
        "PATCH",
        &app_url,
        Some(&token),
        &json!({"properties": {"template": {"scale": {"minReplicas": 5, "maxReplicas": 9}}}}),
    );
    assert!(
        (200..300).contains(&code),
        "the drift PATCH answered {code}"
    );
    wait_for(
        "the controller to see the drift",
        Duration::from_secs(30),
        || app_status(&ep, "ca-frozen")["live"]["replicas"] == "5-9",
    );
    // One more poll of the open page after the controller saw it, then a moment to draw.
    let polls = seen.polls.load(Ordering::SeqCst);
    wait_for("the page's next poll", Duration::from_secs(15), || {
        seen.polls.load(Ordering::SeqCst) > polls
    });
    std::thread::sleep(Duration::from_millis(500));
    seen.release.store(true, Ordering::SeqCst);

    let mut dom = String::new();
    let started = Instant::now();
    let mut out = browser.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    while started.elapsed() < Duration::from_secs(60) {
        if reader.is_finished() {
            dom = reader.join().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.stop();
    let console: Vec<String> = std::fs::read_to_string(profile.path().join("chromium.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    assert!(
        !dom.is_empty(),
        "Chromium printed no DOM within 60 s; its console: {console:#?}"
    );
    let log = seen.log.lock().unwrap().clone();

    // No reload: one page load, several polls.
    assert_eq!(
        seen.pages.load(Ordering::SeqCst),
        1,
        "the page was loaded more than once: {log:?}"
    );
    assert!(
        seen.polls.load(Ordering::SeqCst) >= 2,
        "the page did not poll: {log:?}"
    );

    // Every app, with its state in words (and its colour class).
    for (app, state, words) in [
        ("ca-split", "progressing", "rollout in progress"),
        ("ca-frozen", "suspended", "suspended"),
        ("ca-hostile", "failing", "failing"),
    ] {
        let r = row(&dom, app);
        assert!(r.contains(&format!("data-state=\"{state}\"")), "{app}: {r}");
        assert!(r.contains(&format!("state-{state}")), "{app}: {r}");
        assert_eq!(cell(r, "state").trim(), words, "{app}: {r}");
    }
    // The drift, without a reload.
    let frozen = cell(row(&dom, "ca-frozen"), "replicas");
    assert!(
        frozen.starts_with("1-3 / 5-9") && frozen.contains("live differs from desired"),
        "the drift is not on the page: {frozen:?}"
    );
    // The 90/10 app's traffic bar: two shares, 10% for the new revision, 90% for the stable.
    let split = app_status(&ep, "ca-split");
    let canary = split["rollout"]["canary"].as_str().unwrap();
    let stable = split["rollout"]["stable"].as_str().unwrap();
    let bar = row(&dom, "ca-split");
    let shares: Vec<&str> = bar
        .match_indices("class=\"share ")
        .map(|(i, _)| &bar[i..i + bar[i..].find('>').unwrap()])
        .collect();
    assert_eq!(shares.len(), 2, "not two shares in the traffic bar: {bar}");
    for (revision, width) in [(canary, "10%"), (stable, "90%")] {
        assert!(
            shares
                .iter()
                .any(|s| s.contains(&format!("data-revision=\"{revision}\""))
                    && s.contains(&format!("width: {width};"))),
            "no share of {width} for {revision}: {shares:?}"
        );
    }
    // Recent events: what the controller did, newest first, in words.
    let events = &dom[dom.find("id=\"events-body\"").expect("the events section")..];
    assert!(
        events.contains("data-reason=\"") && events.contains("<td>rg-dash/"),
        "no event on the page: {}",
        &events[..events.len().min(2000)]
    );
    // Azure's hostile text is text: shown escaped, and no element came of it.
    let hostile = row(&dom, "ca-hostile");
    assert!(
        cell(hostile, "last-error").contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"),
        "the hostile error is not shown as text: {hostile}"
    );
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "a <script> element besides dashboard.js: {dom}"
    );
    assert!(
        !dom.contains("<img src=\"x\""),
        "an <img> came of the error text"
    );
    assert!(
        dom.contains("<title>aca-reconciler · 3 apps</title>"),
        "the title changed: {dom}"
    );
    // Nothing went wrong in the page (a script error, a blocked inline handler).
    assert!(
        console.is_empty(),
        "the page logged to the console (a script error?): {console:#?}"
    );
}

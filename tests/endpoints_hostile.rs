//! Hostile HTTP against the controller's endpoints (`run --simulate`, the real binary): huge
//! bodies, wrong methods, garbage, oversized headers and slowloris are refused, and the
//! endpoints keep answering everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Proc, Scratch, bin, copy_tree, free_port, get, root, send, wait_for};

fn start() -> (Proc, Scratch, u16) {
    let s = Scratch::new();
    copy_tree(&root().join("desired-state"), s.path());
    let port = free_port();
    let child = bin(s.path())
        .args([
            "run",
            "--simulate",
            "--desired-state",
            ".",
            "--interval",
            "1h",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("ACAR_TRIGGER_TOKEN", "hook-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_for("healthz", Duration::from_secs(30), || {
        get(&format!("http://127.0.0.1:{port}/healthz")).0 == 200
    });
    (p, s, port)
}

/// Sends raw bytes and returns what came back before the server closed or 3 s passed.
fn raw(port: u16, bytes: &[u8]) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = c.write_all(bytes);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// Whether the server still holds the connection open: a short read times out instead of
/// seeing EOF or a reset.
fn is_open(mut c: &TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut b = [0u8; 1];
    matches!(c.read(&mut b), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

fn rss_kib(p: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.0.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn wrong_methods_garbage_and_huge_requests_are_refused_and_harmless() {
    let (p, _s, port) = start();
    let ep = format!("http://127.0.0.1:{port}");
    let rss_before = rss_kib(&p);

    // Wrong methods and unknown paths.
    assert_eq!(send("DELETE", &format!("{ep}/status"), None), 405);
    assert_eq!(send("PUT", &format!("{ep}/metrics"), None), 405);
    assert_eq!(send("GET", &format!("{ep}/reconcile"), None), 405);
    assert_eq!(send("GET", &format!("{ep}/../../etc/passwd"), None), 404);
    // The trigger wants its token.
    assert_eq!(send("POST", &format!("{ep}/reconcile"), None), 401);

    // Garbage instead of HTTP, a request line of 100 KB, headers of 100 KB.
    assert!(status_line(&raw(port, b"\x16\x03\x01\x02\x00hello\r\n\r\n")).contains("400"));
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let answer = raw(port, long_path.as_bytes());
    assert!(
        answer.is_empty() || status_line(&answer).contains(" 4"),
        "{}",
        status_line(&answer)
    );
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "b".repeat(100_000)
    );
    let answer = raw(port, big_header.as_bytes());
    assert!(
        answer.is_empty() || status_line(&answer).contains(" 4"),
        "{}",
        status_line(&answer)
    );

    // A 64 MB body (announced and sent) to the trigger, authorised: it is not read into memory.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /reconcile HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer hook-secret\r\nContent-Length: {}\r\n\r\n",
        64 << 20
    );
    c.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        if c.write_all(&chunk).is_err() {
            break; // the server may close once it has answered
        }
    }
    let mut answer = [0u8; 64];
    let n = c.read(&mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 202"),
        "{answer}"
    );
    drop(c);

    // Everyone else is still served, and memory did not follow the body.
    assert_eq!(get(&format!("{ep}/healthz")).0, 200);
    assert_eq!(get(&format!("{ep}/status")).0, 200);
    let rss_after = rss_kib(&p);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[test]
fn slowloris_connections_are_capped_and_timed_out() {
    let (_p, _s, port) = start();
    let ep = format!("http://127.0.0.1:{port}");
    // 100 connections that send half a request line and then nothing.
    let opened = Instant::now();
    let slow: Vec<TcpStream> = (0..100)
        .filter_map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
            c.write_all(b"GET /status HTTP/1.1\r\nHost: sl").ok()?;
            Some(c)
        })
        .collect();
    // The ones past the cap are closed at once (a read sees EOF or a reset, not a timeout).
    std::thread::sleep(Duration::from_millis(500));
    let closed = slow.iter().filter(|c| !is_open(c)).count();
    assert!(
        closed >= 100 - 64,
        "only {closed} of 100 slow connections were refused (cap 64)"
    );
    // The header timeout (10 s) closes the rest, and the endpoints answer again.
    let started = Instant::now();
    wait_for(
        "healthz after the slow clients",
        Duration::from_secs(20),
        || get(&format!("{ep}/healthz")).0 == 200,
    );
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "served again after {waited:?}"
    );
    // And every slow connection is closed by the header timeout, not left to linger.
    wait_for(
        "every slow connection closed",
        Duration::from_secs(15),
        || slow.iter().all(|c| !is_open(c)),
    );
    assert!(
        opened.elapsed() < Duration::from_secs(15),
        "slow connections outlived the header timeout (10 s): {:?}",
        opened.elapsed()
    );
}

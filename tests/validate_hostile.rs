//! The real binary against hostile and sloppy desired state, run as the README tells users to:
//! deep nesting is refused at once and located, every problem of a document gets its own
//! line, a problem with a whole file keeps the `FILE:LINE:COLUMN` shape, and Azure's own
//! spelling of `revisionMode` is accepted by `validate` and by `plan`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Scratch, bin, run, stdout};

const APP: &str = "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata:\n  name: ca-demo\n  resourceGroup: rg-demo\n  subscription: 00000000-0000-0000-0000-000000000001\nspec:\n";

/// Runs `cmd`, killing it and failing the test if it has not finished within `limit` (before
/// the pre-scan, the deep file below kept `validate` busy for minutes). Returns the output and
/// how long it took, which the test prints.
fn run_within(cmd: &mut Command, limit: Duration, expected_code: i32) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(expected_code),
        "\ncommand: {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, took)
}

#[test]
fn validate_refuses_250000_nested_brackets_at_once_and_says_where() {
    let s = Scratch::new();
    // 500 KB: 250,000 flow sequences, one inside the other, on one line.
    s.write("deep.yaml", &format!("spec: {}", "[ ".repeat(250_000)));
    let (out, took) = run_within(
        bin(s.path()).args(["validate", "deep.yaml"]),
        Duration::from_secs(60),
        1,
    );
    println!("validate on 250,000 nested brackets: {took:?}");
    let text = stdout(&out);
    // `spec:` is level 1, so the 64th bracket (column 7 + 2 * 63) is level 65.
    assert!(
        text.starts_with("deep.yaml:1:133: nesting deeper than 64 levels; "),
        "{text}"
    );
    assert!(text.contains("unclosed `[`"), "{text}");
    assert!(
        text.ends_with(
            "invalid: 1 problem in 0 documents in 1 file (0 apps, 0 registry policies)\n"
        ),
        "{text}"
    );
}

#[test]
fn validate_refuses_deep_block_nesting_in_every_form() {
    let s = Scratch::new();
    // Compact entries on one line, explicit keys, and indentation that keeps growing.
    s.write("compact.yaml", &format!("{}x\n", "- ".repeat(200_000)));
    s.write("keys.yaml", &format!("{}x\n", "? ".repeat(200_000)));
    let indented: String = (0..1_400)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    s.write("indented.yaml", &indented);
    let (out, took) = run_within(
        bin(s.path()).args(["validate", "."]),
        Duration::from_secs(60),
        1,
    );
    println!("validate on three deep block files: {took:?}");
    let text = stdout(&out);
    for located in [
        "./compact.yaml:1:129: nesting deeper than 64 levels",
        "./indented.yaml:65:65: nesting deeper than 64 levels",
        "./keys.yaml:1:129: nesting deeper than 64 levels",
    ] {
        assert!(text.contains(located), "{located} missing from:\n{text}");
    }
}

#[test]
fn validate_does_not_call_64_levels_too_deep() {
    let s = Scratch::new();
    // 64 levels in block, compact and flow style together: not refused for its depth (it is
    // still no valid desired state, so validate says why).
    let mut text = String::from("a:\n");
    for i in 1..40 {
        text.push_str(&format!("{}k{i}:\n", " ".repeat(2 * i)));
    }
    text.push_str(&format!(
        "{}- - - - {}x{}\n",
        " ".repeat(80),
        "[".repeat(20),
        "]".repeat(20)
    ));
    s.write("sixty-four.yaml", &text);
    let out = run(bin(s.path()).args(["validate", "sixty-four.yaml"]), 1);
    let text = stdout(&out);
    assert!(!text.contains("nesting deeper"), "{text}");
    assert!(text.contains("apiVersion is missing"), "{text}");
}

#[test]
fn validate_reports_both_type_errors_of_a_document_each_at_its_own_line() {
    let s = Scratch::new();
    s.write(
        "app.yaml",
        &format!(
            "{APP}  replicas:\n    min: \"1\"\n    max: 10\n  revisionRetention:\n    keepActive: five\n  colour: blue\n"
        ),
    );
    let out = run(bin(s.path()).args(["validate", "app.yaml"]), 1);
    assert_eq!(
        stdout(&out),
        "app.yaml:9:5: spec.replicas.min: invalid type: string \"1\", expected a whole number (0 or more)\n\
         app.yaml:12:5: spec.revisionRetention.keepActive: invalid type: string \"five\", expected a whole number (0 or more)\n\
         app.yaml:13:3: spec.colour: unknown field `colour` (allowed here: `suspend`, `revisionMode`, `images`, `replicas`, `activeRevision`, `traffic`, `revisionRetention`, `restartGeneration`, `rollout`)\n\
         invalid: 3 problems in 1 document in 1 file (0 apps, 0 registry policies)\n"
    );
}

#[test]
fn a_file_over_1_mib_is_reported_at_line_1_column_1() {
    let s = Scratch::new();
    s.write("big.yaml", &format!("# {}\n", "x".repeat(1024 * 1024)));
    let out = run(bin(s.path()).args(["validate", "big.yaml"]), 1);
    let text = stdout(&out);
    assert!(
        text.starts_with("big.yaml:1:1: file is larger than 1 MiB"),
        "{text}"
    );
    let out = run(
        bin(s.path()).args(["validate", "--output", "json", "big.yaml"]),
        1,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v["diagnostics"][0];
    assert_eq!(
        (d["file"].as_str(), d["line"].as_u64(), d["column"].as_u64()),
        (Some("big.yaml"), Some(1), Some(1)),
        "{v}"
    );
}

#[test]
fn revision_mode_as_azure_spells_it_validates_and_plans() {
    let s = Scratch::new();
    s.write(
        "app.yaml",
        &format!("{APP}  revisionMode: Multiple\n  replicas: {{min: 1, max: 3}}\n"),
    );
    s.write(
        "other.yaml",
        &APP.replace("ca-demo", "ca-other").replace(
            "spec:\n",
            "spec:\n  revisionMode: Single\n  replicas: {min: 1, max: 2}\n",
        ),
    );
    let out = run(bin(s.path()).args(["validate", "."]), 0);
    assert_eq!(
        stdout(&out),
        "valid: 2 documents in 2 files (2 apps, 0 registry policies)\n"
    );
    // plan reads the same documents (the simulator is seeded with drifted copies of them).
    let out = run(
        bin(s.path()).args(["plan", "--simulate", "--desired-state", "."]),
        2,
    );
    let text = stdout(&out);
    assert!(
        text.contains("ca-demo") && text.contains("ca-other"),
        "{text}"
    );

    // A real typo is still refused, with the value it probably meant.
    s.write("app.yaml", &format!("{APP}  revisionMode: multi\n"));
    let out = run(bin(s.path()).args(["validate", "app.yaml"]), 1);
    assert!(
        stdout(&out).starts_with("app.yaml:8:3: spec.revisionMode: unknown value `multi`, expected `single` or `multiple`; did you mean `multiple`?\n"),
        "{}",
        stdout(&out)
    );
}

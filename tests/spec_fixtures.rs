//! The corpus of bad desired state: every entry of `tests/fixtures/invalid/` (a file, or a
//! directory standing for a whole tree) must produce exactly the lines of its `.expected` file,
//! and nothing may be accepted into the desired state from it.
//!
//! To write the `.expected` files after an intended change of wording, run
//! `ACAR_BLESS=1 cargo test --test spec_fixtures`, then read every changed line in `git diff`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

use std::fs;
use std::path::{Path, PathBuf};

use aca_reconciler::spec::{self, LoadOptions};

const INVALID: &str = "tests/fixtures/invalid";

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(INVALID)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|e| e != "expected"))
        .collect();
    cases.sort();
    cases
}

fn expected_path(case: &Path) -> PathBuf {
    let stem = case.file_stem().unwrap().to_string_lossy().into_owned();
    case.with_file_name(format!("{stem}.expected"))
}

/// Diagnostics as printed, with the corpus directory stripped so the lines read `FILE:L:C: ...`.
fn render(case: &Path) -> (String, spec::load::Loaded) {
    let loaded = spec::load(&[case.to_path_buf()], &LoadOptions::default());
    let prefix = format!("{INVALID}/");
    let text: String = loaded
        .diagnostics
        .iter()
        .map(|d| format!("{}\n", d.to_string().replacen(&prefix, "", 1)))
        .collect();
    (text, loaded)
}

#[test]
fn every_invalid_fixture_reports_exactly_its_expected_lines() {
    let bless = std::env::var_os("ACAR_BLESS").is_some();
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "the corpus should hold at least 40 cases, has {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let (actual, loaded) = render(case);
        let expected_file = expected_path(case);
        if bless {
            fs::write(&expected_file, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_file)
            .unwrap_or_else(|_| panic!("{} has no {}", case.display(), expected_file.display()));
        if actual != expected {
            failures.push(format!(
                "--- {}\nexpected:\n{expected}actual:\n{actual}",
                case.display()
            ));
        }
        if actual.is_empty() {
            failures.push(format!(
                "--- {}: reported no problem at all",
                case.display()
            ));
        }
        // Nothing from a file with a problem may reach the desired state.
        for app in loaded.state.apps.values() {
            let bad = loaded.diagnostics.iter().any(|d| d.file == app.source.file);
            if bad {
                failures.push(format!(
                    "--- {}: {} was accepted from a file with problems",
                    case.display(),
                    app.key
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_expected_file_has_a_case() {
    for entry in fs::read_dir(INVALID).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "expected") {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let has_case = fs::read_dir(INVALID).unwrap().any(|e| {
                let q = e.unwrap().path();
                q != p && q.file_stem().is_some_and(|s| s.to_string_lossy() == stem)
            });
            assert!(has_case, "{} has no fixture beside it", p.display());
        }
    }
}

//! No input makes the loader panic: random bytes, random text, and valid files mutated with
//! the characters that matter to YAML. Every reported position lies inside the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

use std::path::Path;

use aca_reconciler::spec::load::parse_bytes;
use aca_reconciler::spec::{LoadOptions, validate};
use proptest::prelude::*;

const SEEDS: &[&str] = &[
    include_str!("../desired-state/prod/ca-order-service.yaml"),
    include_str!("../desired-state/dev/apps.yaml"),
    include_str!("../desired-state/dev/registry-retention.yaml"),
    include_str!("../desired-state/prod/_defaults.yaml"),
];

const TOKENS: &[&str] = &[
    ":",
    "-",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    "\t",
    " ",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "---\n",
    "...\n",
    "? ",
    "|",
    ">",
    "'",
    "\"",
    "%YAML 1.2\n",
    "<<: *a",
    "null",
    "~",
    "-1",
    "1e999",
    "0x10",
    "\u{feff}",
    "\u{0}",
    "é",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, usize),
    Delete(usize, usize),
    Flip(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Mutation::Insert(at, t)),
        (any::<usize>(), 1usize..20).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
    ]
}

fn apply(seed: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Insert(at, t) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, TOKENS[t].bytes());
            }
            Mutation::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::Flip(at, b) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = b;
                }
            }
        }
    }
    bytes
}

fn check(bytes: &[u8]) {
    let file = parse_bytes(Path::new("f.yaml"), Path::new(""), bytes);
    let lines = bytes.iter().filter(|b| **b == b'\n').count() + 1;
    for d in &file.diagnostics {
        let pos = d.pos.expect("a parse problem has a position");
        assert!(
            pos.line >= 1 && pos.line <= lines,
            "{d} is outside a {lines}-line file"
        );
        assert!(pos.column >= 1, "{d}");
        assert!(!d.message.is_empty());
    }
    // Validation of whatever parsed must not panic either.
    let loaded = validate::assemble(&[file], &LoadOptions::default());
    if !loaded.diagnostics.is_empty() {
        assert!(loaded.state.apps.is_empty() && loaded.state.registries.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_valid_files(seed in 0..SEEDS.len(), mutations in prop::collection::vec(mutation(), 1..8)) {
        check(&apply(SEEDS[seed], &mutations));
    }

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn random_yaml_like_text(parts in prop::collection::vec(prop_oneof![
        (0..TOKENS.len()).prop_map(|t| TOKENS[t].to_owned()),
        "[a-z]{1,8}",
        "[0-9]{1,4}",
    ], 0..64)) {
        check(parts.concat().as_bytes());
    }
}

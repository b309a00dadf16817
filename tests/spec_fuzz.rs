//! No input makes the loader panic: random bytes, random text, and valid files mutated with
//! the characters that matter to YAML. Every reported position lies inside the file. And no
//! input stalls it: shapes that make YAML readers quadratic or exponential are each answered
//! in time (the test prints every time; it fails only when one is grossly slow).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

use std::path::Path;
use std::time::{Duration, Instant};

use aca_reconciler::spec::load::parse_bytes;
use aca_reconciler::spec::{LoadOptions, validate};
use proptest::prelude::*;

const SEEDS: &[&str] = &[
    include_str!("../desired-state/prod/ca-order-service.yaml"),
    include_str!("../desired-state/dev/apps.yaml"),
    include_str!("../desired-state/dev/registry-retention.yaml"),
    include_str!("../desired-state/prod/_defaults.yaml"),
    include_str!("../examples/notifications/notifications.yaml"),
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

/// Loads `bytes` as one file and checks what comes back; returns the problems as printed.
fn check(bytes: &[u8]) -> Vec<String> {
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
        assert!(
            loaded.state.apps.is_empty()
                && loaded.state.registries.is_empty()
                && loaded.state.notifications.is_empty()
        );
    }
    loaded.diagnostics.iter().map(ToString::to_string).collect()
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

const APP: &str = "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: ca-a, resourceGroup: rg, subscription: 00000000-0000-0000-0000-000000000000}\nspec:\n";

/// Inputs built to be slow for a YAML reader or for the loader: nesting and long tokens near
/// the 1 MiB limit; shapes whose cost grows with their number of nodes at a quarter of it
/// (enough for quadratic work to show as minutes, little enough for linear work to stay fast
/// in a debug build).
fn hostile_shapes() -> Vec<(String, String)> {
    const BIG: usize = 1000 * 1000;
    let n = |count: usize, line: &dyn Fn(usize) -> String| (0..count).map(line).collect::<String>();
    let shapes: Vec<(&str, String)> = vec![
        // Nesting: refused by the pre-scan before any parser reads the text.
        (
            "250,000 nested `[ ` after a key",
            format!("spec: {}", "[ ".repeat(250_000)),
        ),
        ("250,000 nested `[` on one line", "[".repeat(250_000)),
        ("250,000 nested `[` one per line", "[\n".repeat(250_000)),
        ("100,000 nested `{a: `", "{a: ".repeat(100_000)),
        (
            "250,000 compact `- ` entries",
            format!("{}x", "- ".repeat(250_000)),
        ),
        (
            "250,000 compact `? ` keys",
            format!("{}x", "? ".repeat(250_000)),
        ),
        (
            "250,000 `: ` in one `[` entry",
            format!("[{}]", ": ".repeat(250_000)),
        ),
        (
            "1,400 indentation levels",
            n(1_400, &|i| format!("{}k:\n", " ".repeat(i))),
        ),
        (
            "100,000 nested `[` as a key",
            format!("{}: x", "[".repeat(100_000)),
        ),
        // Long tokens.
        ("a 1 MB key", format!("{}: 1\n", "k".repeat(BIG))),
        ("a 1 MB plain scalar", format!("a: {}\n", "x".repeat(BIG))),
        (
            "a 1 MB quoted scalar",
            format!("a: \"{}\"\n", "x\\\"".repeat(BIG / 3)),
        ),
        (
            "a 1 MB block scalar",
            format!("a: |\n{}", "  [x\n".repeat(BIG / 5)),
        ),
        (
            "a plain scalar of 250,000 lines",
            format!("a: x\n{}", "  y\n".repeat(250_000)),
        ),
        ("a 1 MB comment", format!("# {}\na: 1\n", "[".repeat(BIG))),
        // Many nodes.
        (
            "a flow mapping of 20,000 keys",
            format!("{{{}}}", n(20_000, &|i| format!("k{i}: {i}, "))),
        ),
        (
            "a flow sequence of 100,000 items",
            format!("[{}]", "1,".repeat(100_000)),
        ),
        ("25,000 keys", n(25_000, &|i| format!("k{i}: {i}\n"))),
        ("50,000 duplicate keys", "k: 1\n".repeat(50_000)),
        ("62,500 empty documents", "---\n".repeat(62_500)),
        (
            "7,500 documents with a problem each",
            "apiVersion: aca-reconciler/v1\n---\n".repeat(7_500),
        ),
        // Anchors, aliases, tags.
        ("15,000 anchors", n(15_000, &|i| format!("a{i}: &a{i} x\n"))),
        (
            "75,000 aliases of one anchor",
            format!("a: &a x\nb: [{}]\n", "*a,".repeat(75_000)),
        ),
        (
            "an alias chain 10,000 deep",
            n(10_000, &|i| {
                if i == 0 {
                    "a0: &a0 [x]\n".to_owned()
                } else {
                    format!("a{i}: &a{i} [*a{}]\n", i - 1)
                }
            }),
        ),
        (
            "an alias bomb (9^10 nodes)",
            n(10, &|i| {
                if i == 0 {
                    "a0: &a0 [x,x,x,x,x,x,x,x,x]\n".to_owned()
                } else {
                    format!("a{i}: &a{i} [{}]\n", format!("*a{},", i - 1).repeat(9))
                }
            }),
        ),
        ("15,000 tags", n(15_000, &|i| format!("t{i}: !tag{i} x\n"))),
        // Many problems in one document: each further one costs the loader another pass.
        (
            "12,500 unknown fields in one spec",
            format!("{APP}{}", n(12_500, &|i| format!("  f{i}: 1\n"))),
        ),
        (
            "6,000 wrong images after 6,000 good ones",
            format!(
                "{APP}  images:\n{}{}",
                n(6_000, &|i| format!("    g{i}: r/g:{i}\n")),
                n(6_000, &|i| format!("    b{i}: [{i}]\n"))
            ),
        ),
        (
            "6,000 traffic entries with a wrong weight",
            format!(
                "{APP}  traffic:\n{}",
                n(6_000, &|i| format!("    - {{label: l{i}, weight: w}}\n"))
            ),
        ),
    ];
    shapes
        .into_iter()
        .map(|(name, text)| (name.to_owned(), text))
        .collect()
}

#[test]
fn hostile_shapes_are_answered_in_time() {
    // Far above what any shape takes (the slowest is about a second in a debug build); a
    // shape that is quadratic again takes minutes.
    let bound = Duration::from_secs(10);
    let mut slow = Vec::new();
    for (name, text) in hostile_shapes() {
        assert!(
            text.len() as u64 <= aca_reconciler::spec::load::MAX_FILE_BYTES,
            "{name}: {} bytes",
            text.len()
        );
        let started = Instant::now();
        let problems = check(text.as_bytes());
        let took = started.elapsed();
        let first: String = problems
            .first()
            .map_or("", |p| p.as_str())
            .chars()
            .take(90)
            .collect();
        println!(
            "{took:>12.3?}  {name} ({} KB): {} problems, first: {first}",
            text.len() / 1000,
            problems.len()
        );
        if took > bound {
            slow.push(format!("{name}: {took:?}"));
        }
    }
    assert!(slow.is_empty(), "grossly slow (over {bound:?}): {slow:#?}");
}

/// Found by `mutated_valid_files` in CI: a file that ends in `? ` (an explicit key, no value,
/// no newline) was reported one line past its end.
#[test]
fn a_problem_at_the_end_of_the_stream_is_located_inside_the_file() {
    let text = "apiVersion: aca-reconciler/v1\nkind: Defaults\n1e999metadata: {name: prod}\nspec:\n  resourceGroup: rg\n? ";
    let problems = check(text.as_bytes());
    assert!(!problems.is_empty());
}

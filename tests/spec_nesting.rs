//! The nesting pre-scan (`spec::nesting`) against the two YAML parsers it protects.
//!
//! It must never see less depth than a parser builds (or a file could stall the loader), and on
//! valid YAML it must see exactly the depth there is (or a legitimate file would be refused).
//! saphyr-parser's events give its depth up to its first error; `yaml_serde`'s values give
//! libyaml's depth for the documents it accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

use aca_reconciler::spec::nesting::{self, MAX_DEPTH};
use proptest::prelude::*;
use saphyr_parser::{Event, Parser};
use serde::Deserialize;

/// The deepest saphyr-parser goes before its first error, and whether it read everything.
fn saphyr_depth(text: &str) -> (usize, bool) {
    let (mut depth, mut max) = (0usize, 0);
    for event in Parser::new_from_str(text) {
        match event {
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), _)) => {
                depth += 1;
                max = max.max(depth);
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => depth = depth.saturating_sub(1),
            Ok(_) => {}
            Err(_) => return (max, false),
        }
    }
    (max, true)
}

fn value_depth(v: &serde_yaml::Value) -> usize {
    match v {
        serde_yaml::Value::Sequence(s) => 1 + s.iter().map(value_depth).max().unwrap_or(0),
        serde_yaml::Value::Mapping(m) => {
            1 + m
                .iter()
                .map(|(k, v)| value_depth(k).max(value_depth(v)))
                .max()
                .unwrap_or(0)
        }
        serde_yaml::Value::Tagged(t) => value_depth(&t.value),
        _ => 0,
    }
}

/// The deepest value libyaml (through `yaml_serde`) builds, if it reads every document.
fn libyaml_depth(text: &str) -> Option<usize> {
    let mut max = 0;
    for de in serde_yaml::Deserializer::from_str(text) {
        max = max.max(value_depth(&serde_yaml::Value::deserialize(de).ok()?));
    }
    Some(max)
}

/// The pre-scan never sees less than either parser, and on text both read without error (and
/// without aliases, which a value expands) it sees no more than the deeper of them.
fn compare(text: &str) -> Result<(), TestCaseError> {
    if nesting::check(text).is_err_and(|r| !r.message.starts_with("nesting")) {
        return Ok(()); // a character refused outright: no parser sees the text
    }
    let ours = nesting::depth(text);
    let (saphyr, saphyr_read_all) = saphyr_depth(text);
    prop_assert!(
        ours >= saphyr,
        "saphyr {saphyr} > pre-scan {ours}: {text:?}"
    );
    if !text.contains('*')
        && let Some(libyaml) = libyaml_depth(text)
    {
        prop_assert!(
            ours >= libyaml,
            "libyaml {libyaml} > pre-scan {ours}: {text:?}"
        );
        if saphyr_read_all {
            prop_assert!(
                ours <= saphyr.max(libyaml),
                "pre-scan {ours} > saphyr {saphyr} and libyaml {libyaml} on valid {text:?}"
            );
        }
    }
    Ok(())
}

/// What decides nesting: indicators, brackets, indentation, scalars of every style (whose
/// brackets are text), comments, anchors, tags, documents.
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "-",
    "- ",
    "? ",
    "?",
    "[",
    "]",
    "{",
    "}",
    ",",
    ", ",
    "\n",
    "\n",
    "\n  ",
    "\n    ",
    "\n ",
    "\t",
    " ",
    "  ",
    "#",
    " #c",
    "&a ",
    "*a",
    "&a",
    "!t ",
    "!!str ",
    "!<x> ",
    "---\n",
    "...\n",
    "|\n",
    ">-\n",
    "|2\n",
    "|\n  [[\n",
    "'",
    "\"",
    "\\",
    "''",
    "'q'",
    "\"q\"",
    "a",
    "k: ",
    "k:",
    "x",
    "x: y",
    "%YAML 1.2\n",
    "\r",
    "a:b",
    ":'",
    "?x",
    ":x",
    "[a: b]",
    "{a: [",
    "]}",
    "\u{feff}",
    "é",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec((0..TOKENS.len()).prop_map(|t| TOKENS[t]), 0..60).prop_map(|p| p.concat())
}

/// A collection around a node, from the outside in.
#[derive(Debug, Clone, Copy)]
enum Wrap {
    BlockMap {
        indentless_seq: bool,
    },
    BlockSeq,
    FlowSeq,
    FlowMap,
    /// `[x: y]`: a single-pair mapping in a flow sequence, whose key is the node.
    FlowPairKey,
}

#[derive(Debug, Clone)]
struct Nested {
    /// Block wrappers outside, flow wrappers inside (a flow collection holds no block one).
    block: Vec<Wrap>,
    flow: Vec<Wrap>,
    /// How the innermost value is written.
    leaf: usize,
    /// Siblings written before the nested entry at each level.
    siblings: Vec<bool>,
}

impl Nested {
    fn depth(&self) -> usize {
        let pairs = self
            .flow
            .iter()
            .filter(|w| matches!(w, Wrap::FlowPairKey))
            .count();
        self.block.len() + self.flow.len() + pairs
    }

    fn render(&self) -> String {
        let leaves = ["x", "'a [ b'", "\"c { d\"", "e[f", "&n g", "!!str h"];
        let mut flow = leaves[self.leaf % leaves.len()].to_owned();
        if !self.flow.is_empty() && flow == "e[f" {
            flow = "e".to_owned(); // inside brackets, `[` ends a plain scalar
        }
        if self.leaf % 7 == 6 && self.block.last().is_some() && self.flow.is_empty() {
            flow = "|\n  [[[ ' \" {\n".to_owned(); // a block scalar: its brackets are text
        }
        for (i, wrap) in self.flow.iter().enumerate().rev() {
            let sibling = self
                .siblings
                .get(self.block.len() + i)
                .copied()
                .unwrap_or(false);
            flow = match (wrap, sibling) {
                (Wrap::FlowSeq, false) => format!("[{flow}]"),
                (Wrap::FlowSeq, true) => format!("[s, {flow}]"),
                (Wrap::FlowMap, false) => format!("{{k: {flow}}}"),
                (Wrap::FlowMap, true) => format!("{{s: t, k: {flow}}}"),
                (_, false) => format!("[{flow}: y]"),
                (_, true) => format!("[s, {flow}: y]"),
            };
        }
        if self.block.is_empty() {
            return format!("{flow}\n");
        }
        self.block_lines(0, 0, &flow)
    }

    /// The block wrappers from `level` in, at `indent`.
    fn block_lines(&self, level: usize, indent: usize, flow: &str) -> String {
        let pad = " ".repeat(indent);
        let sibling = self.siblings.get(level).copied().unwrap_or(false);
        let Some(wrap) = self.block.get(level) else {
            return String::new();
        };
        let last = level + 1 == self.block.len();
        let block_scalar = flow.starts_with('|');
        let mut out = String::new();
        match wrap {
            Wrap::BlockSeq => {
                if sibling {
                    out.push_str(&format!("{pad}- s\n"));
                }
                if last {
                    let flow = indent_block_scalar(flow, indent);
                    out.push_str(&format!("{pad}- {flow}"));
                    if !block_scalar {
                        out.push('\n');
                    }
                } else {
                    // Compact: the inner collection starts on the entry's own line.
                    let inner = self.block_lines(level + 1, indent + 2, flow);
                    out.push_str(&format!("{pad}- {}", &inner[indent + 2..]));
                }
            }
            Wrap::BlockMap { indentless_seq } => {
                if sibling {
                    out.push_str(&format!("{pad}s: t\n"));
                }
                if last {
                    let flow = indent_block_scalar(flow, indent);
                    out.push_str(&format!("{pad}k: {flow}"));
                    if !block_scalar {
                        out.push('\n');
                    }
                } else {
                    let inner_indent = match self.block[level + 1] {
                        Wrap::BlockSeq if *indentless_seq => indent,
                        _ => indent + 2,
                    };
                    out.push_str(&format!("{pad}k:\n"));
                    out.push_str(&self.block_lines(level + 1, inner_indent, flow));
                }
            }
            _ => unreachable!("flow wrappers are rendered inline"),
        }
        out
    }
}

/// A block scalar's content line, indented under an entry at `indent`.
fn indent_block_scalar(flow: &str, indent: usize) -> String {
    match flow.strip_prefix("|\n  ") {
        Some(content) => format!("|\n{}  {content}", " ".repeat(indent)),
        None => flow.to_owned(),
    }
}

fn nested() -> impl Strategy<Value = Nested> {
    let block = prop_oneof![
        any::<bool>().prop_map(|i| Wrap::BlockMap { indentless_seq: i }),
        Just(Wrap::BlockSeq),
    ];
    let flow = prop_oneof![
        Just(Wrap::FlowSeq),
        Just(Wrap::FlowMap),
        Just(Wrap::FlowPairKey)
    ];
    (
        prop::collection::vec(block, 0..50),
        prop::collection::vec(flow, 0..30),
        0..7usize,
        prop::collection::vec(any::<bool>(), 80),
    )
        .prop_map(|(block, flow, leaf, siblings)| Nested {
            block,
            flow,
            leaf,
            siblings,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random text: never less depth than a parser sees.
    #[test]
    fn never_below_either_parser_on_any_text(text in token_soup()) {
        compare(&text)?;
    }

    /// Valid desired-state files, mutated with the characters that matter to YAML.
    #[test]
    fn never_below_either_parser_on_mutated_files(
        seed in 0..SEEDS.len(),
        at in prop::collection::vec((any::<usize>(), 0..TOKENS.len()), 1..6),
    ) {
        let mut text = SEEDS[seed].to_owned();
        for (at, t) in at {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, TOKENS[t]);
        }
        compare(&text)?;
    }

    /// Valid YAML nested in every style: the pre-scan counts exactly its depth, so up to 64
    /// levels pass and 65 are refused.
    #[test]
    fn exact_on_valid_nesting_in_every_style(n in nested()) {
        let text = n.render();
        let (saphyr, read_all) = saphyr_depth(&text);
        prop_assert!(read_all && saphyr == n.depth(), "the generator wrote {saphyr}, not {} levels: {text}", n.depth());
        prop_assert_eq!(libyaml_depth(&text), Some(n.depth()), "{}", text);
        prop_assert_eq!(nesting::depth(&text), n.depth(), "{}", text);
        prop_assert_eq!(nesting::check(&text).is_ok(), n.depth() <= MAX_DEPTH, "{}", text);
    }
}

const SEEDS: &[&str] = &[
    include_str!("../desired-state/prod/ca-order-service.yaml"),
    include_str!("../desired-state/dev/apps.yaml"),
    include_str!("../desired-state/dev/registry-retention.yaml"),
    include_str!("../desired-state/prod/_defaults.yaml"),
];

#[test]
fn the_example_tree_and_every_fixture_pass_the_pre_scan() {
    let mut files = Vec::new();
    for dir in ["desired-state", "tests/fixtures/invalid"] {
        collect(std::path::Path::new(dir), &mut files);
    }
    assert!(files.len() > 50);
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue; // the fixtures that are not UTF-8
        };
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let refused = [
            "deep-nesting.yaml",
            "deep-nesting-compact.yaml",
            "deep-nesting-indented.yaml",
            "line-separator-character.yaml",
        ];
        assert_eq!(
            nesting::check(&text).is_err(),
            refused.contains(&name.as_str()),
            "{}",
            f.display()
        );
    }
}

fn collect(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

/// Shapes on which the parsers disagree, or which look deep but are text (U+2028 is a line
/// break to libyaml only; `:'` inside brackets starts a string for libyaml only; a top-level
/// block scalar's content may start at column 0 for saphyr only; brackets in an indented
/// continuation line or block scalar are text).
#[test]
fn crafted_disagreements_between_the_parsers_do_not_hide_depth() {
    let deep = "[".repeat(100);
    for (text, too_deep) in [
        (format!("[:'a, {deep} ']"), true),
        (format!("[:#x\n'a, 'x {deep}'"), true),
        (format!("k: &a:'x [ '\n{deep}\n'"), true),
        (format!("--- |\n'\n---\n{deep}"), true),
        (format!("--- |\n{deep}"), true),
        (format!("a: |2\n   x\n {deep}"), true),
        (format!("- [{deep}]: x"), true),
        (format!("[{deep}]: x"), true),
        (format!("[{deep}: y]"), true),
        (format!("[{}]", "a: ".repeat(100)), true),
        (format!("{}x", "? ".repeat(100)), true),
        (format!("{}x", "- ".repeat(100)), true),
        (format!("a: |\n {deep}"), false),
        (format!("k: v\n  {deep}"), false),
        (format!("k: 'v\n  {deep}'"), false),
        (format!("k: v # {deep}"), false),
        (format!("k: a{deep}"), false),
    ] {
        let saphyr = saphyr_depth(&text).0;
        let libyaml = libyaml_depth(&text).unwrap_or(0);
        assert!(
            nesting::depth(&text) >= saphyr.max(libyaml),
            "{text:?}: saphyr {saphyr}, libyaml {libyaml}"
        );
        assert_eq!(nesting::check(&text).is_err(), too_deep, "{text:?}");
    }
    for c in ['\u{85}', '\u{2028}', '\u{2029}', '\u{feff}'] {
        let refused = nesting::check(&format!("k: v{c}{deep}")).unwrap_err();
        assert!(
            refused.message.starts_with("character U+"),
            "{}",
            refused.message
        );
    }
}

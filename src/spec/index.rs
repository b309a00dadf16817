//! Where each key of a YAML file stands, so that any error can name `FILE:LINE:COLUMN`.
//!
//! `serde_yaml` (yaml_serde) turns a document into values but forgets positions. This module
//! reads the same text once more as a stream of parser events (saphyr-parser, which gives every
//! event a span) and records, for each document, the position of every mapping key and sequence
//! item under its path (`spec.traffic[1].weight`). It also finds duplicate keys, and reports the
//! *second* occurrence, which is the one a person has to delete.
//!
//! The walk is iterative and keeps one small frame per open collection, so hostile nesting
//! costs memory in proportion to the (size-limited) input, never stack. Aliases are not
//! expanded: an alias is one event.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, Span};

/// A 1-based line and column (columns count characters, as editors do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Pos {
    /// The start of a file.
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn of(span: Span) -> Pos {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A key written twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Path of the duplicated key, e.g. `spec.replicas.min`.
    pub path: String,
    /// Where it is written again.
    pub again: Pos,
    /// Where it was first written.
    pub first: Pos,
}

/// Positions within one YAML document.
#[derive(Debug, Clone, Default)]
pub struct DocIndex {
    /// Where the document starts (its first node, or its `---`).
    pub start: Pos,
    keys: HashMap<String, Pos>,
    /// Keys written twice in one mapping, in the order they appear.
    pub duplicates: Vec<DuplicateKey>,
}

impl DocIndex {
    /// An index that knows nothing but where its document starts.
    pub fn empty_at(start: Pos) -> Self {
        Self {
            start,
            ..Self::default()
        }
    }

    /// The position of `path`; if it was not written (a missing field, or a value reached
    /// through an alias), that of its nearest written ancestor, else the document start.
    pub fn locate(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.keys.get(p) {
                return *pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return self.start,
            }
        }
    }

    /// The position of `path` only if that exact key or item is written.
    pub fn get(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied()
    }
}

/// Positions within one YAML file: one [`DocIndex`] per document, in order.
#[derive(Debug, Clone, Default)]
pub struct SourceIndex {
    /// The documents, in the order the file holds them.
    pub docs: Vec<DocIndex>,
    /// The scanner's error, if the index stops early (the documents before it are complete).
    pub error: Option<(Pos, String)>,
}

/// `spec.traffic[1]` -> `spec.traffic`; `spec` -> `""`; `""` -> None.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// Appends a mapping key to a path.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Appends a sequence index to a path.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next, or None when the next node is a key.
        pending: Option<String>,
        seen: HashMap<String, Pos>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

/// The key path that a complex (non-scalar) mapping key stands for; nothing is located there.
const COMPLEX_KEY: &str = "<complex key>";

/// Indexes every document of `text`.
pub fn index(text: &str) -> SourceIndex {
    let mut out = SourceIndex::default();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(ok) => ok,
            Err(e) => {
                let m = e.marker();
                out.error = Some((
                    Pos {
                        line: m.line(),
                        column: m.col() + 1,
                    },
                    e.info().to_owned(),
                ));
                break;
            }
        };
        let pos = Pos::of(span);
        match event {
            Event::DocumentStart(_) => {
                stack.clear();
                out.docs.push(DocIndex::empty_at(pos));
            }
            Event::DocumentEnd => stack.clear(),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Scalar(..)
            | Event::Alias(_)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {
                let Some(doc) = out.docs.last_mut() else {
                    continue;
                };
                let node_path = place_node(&mut stack, doc, &event, pos);
                match event {
                    Event::MappingStart(..) => stack.push(Frame::Map {
                        path: node_path,
                        pending: None,
                        seen: HashMap::new(),
                    }),
                    Event::SequenceStart(..) => stack.push(Frame::Seq {
                        path: node_path,
                        next: 0,
                    }),
                    _ => {}
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
    out
}

/// Records a node that has just started at `pos` and returns the path it stands at.
fn place_node(stack: &mut [Frame], doc: &mut DocIndex, event: &Event<'_>, pos: Pos) -> String {
    match stack.last_mut() {
        None => {
            doc.keys.entry(String::new()).or_insert(pos);
            String::new()
        }
        Some(Frame::Seq { path, next }) => {
            let p = join_index(path, *next);
            *next += 1;
            doc.keys.insert(p.clone(), pos);
            p
        }
        Some(Frame::Map {
            path,
            pending,
            seen,
        }) => match pending.take() {
            // This node is a value: its key was the previous node.
            Some(key_path) => key_path,
            // This node is a key.
            None => {
                let key_path = match event {
                    Event::Scalar(text, ..) => join_key(path, text),
                    _ => join_key(path, COMPLEX_KEY),
                };
                if let Event::Scalar(text, ..) = event {
                    match seen.get(text.as_ref()) {
                        Some(first) => doc.duplicates.push(DuplicateKey {
                            path: key_path.clone(),
                            again: pos,
                            first: *first,
                        }),
                        None => {
                            seen.insert(text.to_string(), pos);
                            doc.keys.insert(key_path.clone(), pos);
                        }
                    }
                }
                *pending = Some(key_path.clone());
                // A complex key's own children hang below this marker path.
                key_path
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    #[test]
    fn locates_keys_and_items_in_block_and_flow_style() {
        let text = "\
kind: ContainerApp
spec:
  replicas: {min: 2, max: 10}
  traffic:
    - {latestRevision: true, weight: 90}
    - revision: app--v1
      weight: 10
";
        let idx = index(text);
        assert_eq!(idx.docs.len(), 1);
        let d = &idx.docs[0];
        assert_eq!(d.get("kind"), Some(at(1, 1)));
        assert_eq!(d.get("spec.replicas"), Some(at(3, 3)));
        assert_eq!(d.get("spec.replicas.max"), Some(at(3, 22)));
        assert_eq!(d.get("spec.traffic"), Some(at(4, 3)));
        assert_eq!(d.get("spec.traffic[1]"), Some(at(6, 7)));
        assert_eq!(d.get("spec.traffic[1].weight"), Some(at(7, 7)));
        // Not written: falls back to the nearest ancestor.
        assert_eq!(d.locate("spec.traffic[1].label"), at(6, 7));
        assert_eq!(d.locate("metadata.name"), d.start);
    }

    #[test]
    fn reports_the_second_of_two_equal_keys() {
        let idx = index("a: 1\nb:\n  c: 1\n  c: 2\n");
        let dups = &idx.docs[0].duplicates;
        assert_eq!(
            dups,
            &[DuplicateKey {
                path: "b.c".into(),
                again: at(4, 3),
                first: at(3, 3)
            }]
        );
    }

    #[test]
    fn one_index_per_document() {
        let idx = index("a: 1\n---\nb: 2\n---\n# only a comment\n");
        assert_eq!(idx.docs.len(), 3);
        assert_eq!(idx.docs[1].get("b"), Some(at(3, 1)));
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let text = "[".repeat(100_000);
        let idx = index(&text);
        assert!(idx.error.is_some());
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent("spec.traffic[1].weight"), Some("spec.traffic[1]"));
        assert_eq!(parent("spec.traffic[1]"), Some("spec.traffic"));
        assert_eq!(parent("spec"), Some(""));
        assert_eq!(parent(""), None);
    }
}

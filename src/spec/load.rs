//! Reading the desired-state tree: files -> documents -> raw typed documents.
//!
//! # Guarantees
//! - Files are visited in a fixed order (paths sorted byte-wise), so output never depends on
//!   the file system's listing order.
//! - Entries whose name starts with `.` (`.git`, `.github`) are skipped: a desired-state repo's
//!   CI workflows are YAML too, and are not desired state.
//! - No input makes this panic, use unbounded memory or stall: files over [`MAX_FILE_BYTES`]
//!   are refused before they are read whole, nesting deeper than
//!   [`nesting::MAX_DEPTH`] is refused by a linear pre-scan before
//!   any YAML parser sees the text, YAML alias expansion is bounded by the YAML parser's limit,
//!   and position indexing is iterative.
//!
//! # Errors
//! Problems are returned as [`Diagnostic`]s, never as a panic or an early return, so one call
//! reports every problem of the tree, and every problem of each document (see `typed`).

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use super::index::{self, DocIndex, Pos, SourceIndex};
use super::nesting;
use super::raw::{
    API_VERSION, ContainerAppDocument, DefaultsDocument, NotificationDocument,
    RegistryRetentionDocument,
};
use super::validate;
use super::{DesiredState, Diagnostic};

/// Files larger than this are refused (contract: 1 MiB).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The document kinds this release reads, in the order messages list them.
pub const KINDS: [&str; 4] = [
    "Defaults",
    "ContainerApp",
    "RegistryRetention",
    "Notification",
];

/// Settings that come from the command line rather than from the documents.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--subscription`: used by apps whose documents and Defaults name none.
    pub subscription: Option<String>,
}

/// One document of a file, deserialized into its kind's raw type.
#[derive(Debug, Clone)]
pub enum RawDocument {
    /// `kind: Defaults`.
    Defaults(DefaultsDocument),
    /// `kind: ContainerApp`.
    ContainerApp(Box<ContainerAppDocument>),
    /// `kind: RegistryRetention`.
    RegistryRetention(RegistryRetentionDocument),
    /// `kind: Notification`.
    Notification(Box<NotificationDocument>),
}

/// A raw document together with the positions of its keys.
#[derive(Debug, Clone)]
pub struct ParsedDoc {
    /// The document.
    pub doc: RawDocument,
    /// Where each of its keys is written.
    pub index: DocIndex,
}

/// Everything read from one file.
#[derive(Debug, Clone)]
pub struct ParsedFile {
    /// The file's path, as reached from the path given.
    pub path: PathBuf,
    /// The directory whose Defaults chain ends here: the path given (for a directory) or the
    /// file's own directory (for a file given directly).
    pub root: PathBuf,
    /// The documents that parsed; empty for an empty file.
    pub docs: Vec<ParsedDoc>,
    /// How many non-empty documents the file holds, including those that did not parse.
    pub documents: usize,
    /// Problems found while reading or parsing.
    pub diagnostics: Vec<Diagnostic>,
}

/// The result of loading a desired-state tree.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// What validated. Files with any problem contribute nothing.
    pub state: DesiredState,
    /// Every problem, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// How many files were read.
    pub files: usize,
    /// How many non-empty documents they held.
    pub documents: usize,
}

/// Loads and validates the desired state under `paths` (files or directories).
pub fn load(paths: &[PathBuf], options: &LoadOptions) -> Loaded {
    let mut diagnostics = Vec::new();
    let files = discover(paths, &mut diagnostics);
    let parsed: Vec<ParsedFile> = files
        .into_iter()
        .map(|(path, root)| parse_file(&path, &root))
        .collect();
    let mut loaded = validate::assemble(&parsed, options);
    loaded.diagnostics.extend(diagnostics);
    loaded.diagnostics.sort();
    loaded.diagnostics.dedup();
    loaded
}

/// Lists the YAML files under `paths`, each with its Defaults root, in a fixed order.
pub fn discover(paths: &[PathBuf], diagnostics: &mut Vec<Diagnostic>) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for path in paths {
        match fs::metadata(path) {
            Err(e) => diagnostics.push(Diagnostic::whole(
                path,
                format!("cannot read: {e} (point --desired-state or ACAR_DESIRED_STATE at the desired-state directory)"),
            )),
            Ok(meta) if meta.is_dir() => {
                let before = out.len();
                let mut visited = HashSet::new();
                walk(path, path, &mut visited, &mut out, diagnostics);
                if out.len() == before {
                    diagnostics.push(Diagnostic::whole(
                        path,
                        "no *.yaml or *.yml files here; is this the desired-state directory?",
                    ));
                }
            }
            Ok(_) => {
                let root = path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                out.push((path.clone(), root));
            }
        }
    }
    out
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn walk(
    dir: &Path,
    root: &Path,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<(PathBuf, PathBuf)>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    // Following symlinked directories is useful (git-sync publishes a tree through one), but a
    // link back up the tree must not loop forever.
    if let Ok(canonical) = fs::canonicalize(dir)
        && !visited.insert(canonical)
    {
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            diagnostics.push(Diagnostic::whole(
                dir,
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        let hidden = child
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        match fs::metadata(&child) {
            Ok(meta) if meta.is_dir() => walk(&child, root, visited, out, diagnostics),
            Ok(meta) if meta.is_file() && is_yaml(&child) => {
                out.push((child, root.to_path_buf()));
            }
            Ok(_) => {}
            Err(e) => diagnostics.push(Diagnostic::whole(&child, format!("cannot read: {e}"))),
        }
    }
}

/// Reads and parses one file.
pub fn parse_file(path: &Path, root: &Path) -> ParsedFile {
    read_and_parse(path, root).0
}

/// Reads and parses a file, and hands back the bytes it parsed (`None`: it could not be read).
pub fn read_and_parse(path: &Path, root: &Path) -> (ParsedFile, Option<Vec<u8>>) {
    match read_limited(path) {
        Ok(bytes) => (parse_bytes(path, root, &bytes), Some(bytes)),
        Err(diagnostic) => (
            ParsedFile {
                path: path.to_path_buf(),
                root: root.to_path_buf(),
                docs: Vec::new(),
                documents: 0,
                diagnostics: vec![diagnostic],
            },
            None,
        ),
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    let file = fs::File::open(path)
        .map_err(|e| Diagnostic::new(path, Pos::START, format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    // Read at most one byte past the limit: enough to know it is too large, without reading
    // a multi-gigabyte file into memory.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Diagnostic::new(path, Pos::START, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Diagnostic::new(
            path,
            Pos::START,
            "file is larger than 1 MiB, the limit for one desired-state file; split it into several files",
        ));
    }
    Ok(bytes)
}

/// Parses a file's bytes. `path` is used for messages only.
pub fn parse_bytes(path: &Path, root: &Path, bytes: &[u8]) -> ParsedFile {
    let mut file = ParsedFile {
        path: path.to_path_buf(),
        root: root.to_path_buf(),
        docs: Vec::new(),
        documents: 0,
        diagnostics: Vec::new(),
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let pos = position_of_byte(bytes, e.valid_up_to());
            file.diagnostics.push(Diagnostic::new(
                path,
                pos,
                "not UTF-8 text: desired-state files must be UTF-8 (is this a binary file, or saved in another encoding?)",
            ));
            return file;
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Before any YAML parser: both scan deep nesting in quadratic time.
    if let Err(refusal) = nesting::check(text) {
        file.diagnostics
            .push(Diagnostic::new(path, refusal.pos, refusal.message));
        return file;
    }
    let source_index = index::index(text);
    for (n, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let positions = doc_index(&source_index, n);
        if !positions.duplicates.is_empty() {
            file.documents += 1;
            for dup in &positions.duplicates {
                file.diagnostics.push(Diagnostic::new(
                    path,
                    dup.again,
                    format!(
                        "{}: this key is written twice in one mapping (first at line {}); remove one",
                        dup.path, dup.first.line
                    ),
                ));
            }
            continue;
        }
        let value = match Value::deserialize(de) {
            Ok(value) => value,
            Err(e) => {
                file.diagnostics
                    .push(yaml_error(path, text, &positions, &e));
                // After a syntax error the parser cannot find the next document reliably.
                break;
            }
        };
        if value.is_null() {
            continue; // an empty document, or one of comments only
        }
        file.documents += 1;
        if value_depth(&value) > nesting::MAX_DEPTH {
            file.diagnostics.push(Diagnostic::new(
                path,
                positions.start,
                nesting::too_deep_message(true),
            ));
            continue;
        }
        match parse_document(value, &positions) {
            Ok(doc) => file.docs.push(ParsedDoc {
                doc,
                index: positions,
            }),
            Err(problems) => file.diagnostics.extend(
                problems
                    .into_iter()
                    .map(|(pos, message)| Diagnostic::new(path, pos, message)),
            ),
        }
    }
    // A parser's mark at the end of the stream can lie past the last line (a file that ends in
    // `? ` with no newline): point at the end of the last line instead.
    let lines = text.split('\n').count();
    let last_end = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    for d in &mut file.diagnostics {
        if let Some(pos) = d.pos.as_mut()
            && pos.line > lines
        {
            *pos = index::Pos {
                line: lines,
                column: last_end,
            };
        }
    }
    file
}

/// How many collections deep a value goes. (Recursion is bounded: `yaml_serde` builds no
/// value deeper than 128 levels.)
fn value_depth(value: &Value) -> usize {
    match value {
        Value::Sequence(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        Value::Mapping(map) => {
            1 + map
                .iter()
                .map(|(k, v)| value_depth(k).max(value_depth(v)))
                .max()
                .unwrap_or(0)
        }
        Value::Tagged(tagged) => value_depth(&tagged.value),
        _ => 0,
    }
}

fn doc_index(source_index: &SourceIndex, n: usize) -> DocIndex {
    // Missing only where the two parsers disagree about where documents start (text the
    // position index could not scan); messages then point at the file's start.
    source_index
        .docs
        .get(n)
        .cloned()
        .unwrap_or_else(|| DocIndex::empty_at(Pos::START))
}

fn yaml_error(path: &Path, text: &str, positions: &DocIndex, e: &serde_yaml::Error) -> Diagnostic {
    let message = e.to_string();
    let located = |l: serde_yaml::Location| {
        clamp_to_text(
            Pos {
                line: l.line(),
                column: l.column(),
            },
            text,
        )
    };
    if message.contains("repetition limit exceeded") {
        return Diagnostic::new(
            path,
            positions.start,
            "YAML aliases expand this document beyond the allowed size (an alias bomb?); write the values out instead",
        );
    }
    if message.contains("recursion limit exceeded") {
        // The pre-scan has refused deep text, so only what aliases stand for nests this deep.
        let pos = e.location().map_or(positions.start, located);
        return Diagnostic::new(path, pos, nesting::too_deep_message(true));
    }
    let pos = e.location().map_or(positions.start, located);
    let hint = if message.contains("cannot start any token") && message.contains("column") {
        " (tabs cannot indent YAML; use spaces)"
    } else {
        ""
    };
    Diagnostic::new(path, pos, format!("YAML syntax: {message}{hint}"))
}

/// The YAML parser reports "unexpected end" one line past a file without a final newline;
/// editors cannot go there, so such a position becomes the end of the last line.
fn clamp_to_text(pos: Pos, text: &str) -> Pos {
    let lines = text.split('\n').count();
    if pos.line <= lines {
        return pos;
    }
    let last = text.rsplit('\n').next().unwrap_or("");
    Pos {
        line: lines,
        column: last.chars().count() + 1,
    }
}

/// 1-based line and column of byte `offset` (columns in characters of the valid prefix).
fn position_of_byte(bytes: &[u8], offset: usize) -> Pos {
    let prefix = &bytes[..offset.min(bytes.len())];
    let line = prefix.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = prefix
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&prefix[line_start..])
        .chars()
        .count()
        + 1;
    Pos { line, column }
}

type Problems = Vec<(Pos, String)>;

/// Checks apiVersion and kind, then deserializes into the kind's raw type.
fn parse_document(mut value: Value, positions: &DocIndex) -> Result<RawDocument, Problems> {
    let Value::Mapping(map) = &value else {
        return Err(vec![(
            positions.start,
            "a document must be a mapping with apiVersion, kind, metadata and spec".to_owned(),
        )]);
    };
    let mut problems = Problems::new();
    match map.get("apiVersion") {
        None => problems.push((
            positions.start,
            format!("apiVersion is missing; write `apiVersion: {API_VERSION}`"),
        )),
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => problems.push((
            positions.locate("apiVersion"),
            format!(
                "apiVersion: `{}` is not supported; this release reads `{API_VERSION}`",
                scalar_text(other)
            ),
        )),
    }
    let kind = match map.get("kind") {
        None => {
            problems.push((
                positions.start,
                format!("kind is missing; write one of {}", KINDS.join(", ")),
            ));
            None
        }
        Some(Value::String(k)) if KINDS.contains(&k.as_str()) => Some(k.clone()),
        Some(other) => {
            let text = scalar_text(other);
            let hint = KINDS
                .iter()
                .find(|k| k.eq_ignore_ascii_case(&text))
                .map(|k| format!(" (kinds are case-sensitive: `{k}`)"))
                .unwrap_or_default();
            problems.push((
                positions.locate("kind"),
                format!(
                    "kind: `{text}` is unknown; expected one of {}{hint}",
                    KINDS.join(", ")
                ),
            ));
            None
        }
    };
    let Some(kind) = kind else {
        return Err(problems);
    };
    if !problems.is_empty()
        && let Value::Mapping(map) = &mut value
    {
        // The apiVersion is reported; check the rest as this release reads it.
        map.insert("apiVersion".into(), API_VERSION.into());
    }
    let typed = match kind.as_str() {
        "Defaults" => typed(&mut value, positions).map(RawDocument::Defaults),
        "ContainerApp" => {
            typed(&mut value, positions).map(|d| RawDocument::ContainerApp(Box::new(d)))
        }
        "Notification" => {
            typed(&mut value, positions).map(|d| RawDocument::Notification(Box::new(d)))
        }
        _ => typed(&mut value, positions).map(RawDocument::RegistryRetention),
    };
    match typed {
        Ok(doc) if problems.is_empty() => Ok(doc),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => "a collection".to_owned(),
    }
}

/// At most this many problems are listed for one document; a last line says there are more.
/// (Each further problem costs one more pass over the document.)
const MAX_PROBLEMS: usize = 100;

/// Every pass reads the whole document, so a document gets at most this many node visits in
/// all (and at most 1,000 passes), which keeps a hostile one to a fraction of a second.
const VISIT_BUDGET: usize = 4_000_000;

/// One step of a path into a YAML value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// What can stand in for a wrong or missing value so that deserializing can go on past it.
const STAND_INS: [fn() -> Option<Value>; 7] = [
    || None, // remove it: right for an optional field
    || Some(Value::from(0)),
    || Some(Value::from("")),
    || Some(Value::from(false)),
    || Some(Value::Sequence(Vec::new())),
    || Some(Value::Mapping(serde_yaml::Mapping::new())),
    || Some(Value::Null),
];

/// Deserializes a whole document into `T` and reports every problem of it, each at its own
/// field, as `path: message`.
///
/// serde stops at the first error, so this loops: it records the error at path P, then takes
/// the value at P out of the way (an unknown field is removed; a wrong or missing value is
/// replaced by the first stand-in that gets deserializing past P) and deserializes again.
/// Errors at or below a path already handled (the "missing field" that a removal causes, a
/// stand-in's own shortcomings) are consequences, not problems, and are not reported. Each pass
/// handles one path or tries one more stand-in, so the passes are bounded by the size of the
/// document, and further by [`MAX_PROBLEMS`] and [`VISIT_BUDGET`].
fn typed<T: serde::de::DeserializeOwned>(
    value: &mut Value,
    positions: &DocIndex,
) -> Result<T, Problems> {
    let mut problems = Problems::new();
    // Paths handled so far, with how many stand-ins each has had.
    let mut handled: Vec<(Vec<Step>, usize)> = Vec::new();
    let passes = (VISIT_BUDGET / node_count(value).max(1)).clamp(10, 1000);
    for _ in 0..passes {
        let error = match serde_path_to_error::deserialize::<_, T>(&*value) {
            Ok(doc) if problems.is_empty() => return Ok(doc),
            Ok(_) => return Err(problems),
            Err(e) => e,
        };
        let path = steps(error.path());
        let message = error.into_inner().to_string();
        let unknown = message.starts_with("unknown field `");
        // The node the error is about: a missing field is below the path serde names.
        let mut target = path.clone();
        if let Some(field) = missing_field(&message) {
            target.push(Step::Key(field.to_owned()));
        }
        let consequence = handled.iter().any(|(p, _)| target.starts_with(p));
        if !consequence {
            if problems.len() == MAX_PROBLEMS {
                return Err(more(problems, positions));
            }
            problems.push(located(&path, &message, positions));
        }
        let tries = match handled.iter_mut().find(|(p, _)| *p == target) {
            Some((_, tries)) => tries,
            None => {
                handled.push((target.clone(), 0));
                match handled.last_mut() {
                    Some((_, tries)) => tries,
                    None => return Err(problems),
                }
            }
        };
        // The stand-ins in order, each tried once; removing (the first) is right for an
        // unknown or optional field, and does nothing for a list item or a missing field.
        loop {
            let Some(make) = STAND_INS.get(*tries) else {
                return Err(problems); // nothing gets past this one
            };
            *tries += 1;
            let stand_in = make();
            if unknown && stand_in.is_some() {
                return Err(problems);
            }
            if put(value, &target, stand_in) {
                break;
            }
        }
    }
    Err(more(problems, positions))
}

/// The problems found, and a last line saying that the check stopped before the end.
fn more(mut problems: Problems, positions: &DocIndex) -> Problems {
    let n = problems.len();
    problems.push((
        positions.start,
        format!("this document may have more problems than the {n} listed here; fix these and validate again"),
    ));
    problems
}

/// How many values a document holds, counted without recursion.
fn node_count(value: &Value) -> usize {
    let mut count = 0;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        count += 1;
        match v {
            Value::Sequence(items) => stack.extend(items),
            Value::Mapping(map) => stack.extend(map.iter().flat_map(|(k, v)| [k, v])),
            Value::Tagged(tagged) => stack.push(&tagged.value),
            _ => {}
        }
    }
    count
}

/// The problem serde reported at `path`, located there and worded for an operator.
fn located(path: &[Step], message: &str, positions: &DocIndex) -> (Pos, String) {
    let path = render_path(path);
    let pos = positions.locate(&path);
    let shown = if path.is_empty() {
        "document".to_owned()
    } else {
        path
    };
    (pos, format!("{shown}: {}", humanize(message)))
}

/// The field that serde's "missing field `x`" names.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
}

/// Replaces the node at `path` with `stand_in`, or removes it (`None`); creates a missing
/// field. False when the path leads nowhere.
fn put(value: &mut Value, path: &[Step], stand_in: Option<Value>) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false; // the document itself: nothing can stand in for it
    };
    let mut node = value;
    for step in parents {
        let next = match (unwrap_tagged(node), step) {
            (Value::Mapping(map), Step::Key(k)) => map.get_mut(k.as_str()),
            (Value::Sequence(items), Step::Index(i)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (unwrap_tagged(node), last, stand_in) {
        (Value::Mapping(map), Step::Key(k), None) => map.shift_remove(k.as_str()).is_some(),
        (Value::Mapping(map), Step::Key(k), Some(v)) => {
            map.insert(Value::String(k.clone()), v);
            true
        }
        (Value::Sequence(items), Step::Index(i), Some(v)) => match items.get_mut(*i) {
            Some(item) => {
                *item = v;
                true
            }
            None => false,
        },
        _ => false,
    }
}

fn unwrap_tagged(value: &mut Value) -> &mut Value {
    match value {
        Value::Tagged(tagged) => unwrap_tagged(&mut tagged.value),
        other => other,
    }
}

/// Makes serde's wording operator-friendly without losing information: Rust type names become
/// plain words, and an unknown field gets the list of allowed ones and a "did you mean".
fn humanize(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once("`, expected ") {
            let allowed = expected.strip_prefix("one of ").unwrap_or(expected);
            let names: Vec<&str> = allowed
                .split(['`', ',', ' '])
                .filter(|w| !w.is_empty() && *w != "or")
                .collect();
            let hint = closest(field, &names)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            return format!("unknown field `{field}` (allowed here: {allowed}){hint}");
        }
        if let Some((field, _)) = rest.split_once("`, there are no fields") {
            return format!("unknown field `{field}`; nothing may be written here");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, expected)) = rest.split_once("`, expected ")
    {
        let names: Vec<&str> = expected
            .split(['`', ',', ' '])
            .filter(|w| !w.is_empty() && *w != "or" && *w != "one" && *w != "of")
            .collect();
        let hint = closest(value, &names)
            .map(|n| format!("; did you mean `{n}`?"))
            .unwrap_or_default();
        return format!("unknown value `{value}`, expected {expected}{hint}");
    }
    message
        .replace("expected u8", "expected a whole number from 0 to 255")
        .replace("expected u32", "expected a whole number (0 or more)")
        .replace("expected u64", "expected a whole number (0 or more)")
}

/// The allowed name nearest to a misspelt one, if it is near enough to be a typo (or the
/// typo is the start of it, such as `multi` for `multiple`).
pub(super) fn closest<'a>(typo: &str, names: &[&'a str]) -> Option<&'a str> {
    let lower = typo.to_ascii_lowercase();
    if lower.len() >= 4
        && let Some(n) = names
            .iter()
            .find(|n| n.to_ascii_lowercase().starts_with(&lower))
    {
        return Some(n);
    }
    names
        .iter()
        .map(|n| {
            (
                edit_distance(&typo.to_ascii_lowercase(), &n.to_ascii_lowercase()),
                *n,
            )
        })
        .filter(|(d, n)| *d <= 2.max(n.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// serde's path as steps into the YAML value.
fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Enum { variant } => Some(Step::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

/// `spec.traffic[1].weight`.
fn render_path(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Index(i) => out = index::join_index(&out, *i),
            Step::Key(k) => out = index::join_key(&out, k),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ParsedFile {
        parse_bytes(Path::new("t.yaml"), Path::new(""), text.as_bytes())
    }

    fn messages(file: &ParsedFile) -> Vec<String> {
        file.diagnostics.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn empty_and_comment_only_files_hold_no_documents() {
        for text in ["", "# nothing\n", "---\n---\n", "\u{feff}"] {
            let f = parse(text);
            assert!(
                f.docs.is_empty() && f.diagnostics.is_empty(),
                "{text:?}: {:?}",
                f.diagnostics
            );
        }
    }

    #[test]
    fn type_error_is_located_at_the_field() {
        let f = parse(
            "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: ca-a}\nspec:\n  replicas:\n    min: two\n    max: 3\n",
        );
        assert_eq!(
            messages(&f),
            [
                "t.yaml:6:5: spec.replicas.min: invalid type: string \"two\", expected a whole number (0 or more)"
            ]
        );
    }

    #[test]
    fn every_type_error_of_a_document_is_reported_at_its_own_field() {
        let f = parse(
            "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata: {name: ca-a}\nspec:\n  replicas:\n    min: \"1\"\n    max: 3\n  revisionRetention:\n    keepActive: five\n  suspend: yes\n  color: blue\n",
        );
        assert_eq!(
            messages(&f),
            [
                "t.yaml:6:5: spec.replicas.min: invalid type: string \"1\", expected a whole number (0 or more)",
                "t.yaml:9:5: spec.revisionRetention.keepActive: invalid type: string \"five\", expected a whole number (0 or more)",
                "t.yaml:10:3: spec.suspend: invalid type: string \"yes\", expected a boolean",
                "t.yaml:11:3: spec.color: unknown field `color` (allowed here: `suspend`, `revisionMode`, `images`, `replicas`, `activeRevision`, `traffic`, `revisionRetention`, `restartGeneration`, `rollout`)",
            ]
        );
    }

    #[test]
    fn a_missing_field_and_a_wrong_one_are_both_reported() {
        let f = parse(
            "apiVersion: aca-reconciler/v2\nkind: RegistryRetention\nmetadata: {}\nspec:\n  registry: cr.example.io\n  repositories: [a, 7, [b]]\n",
        );
        assert_eq!(
            messages(&f),
            [
                "t.yaml:1:1: apiVersion: `aca-reconciler/v2` is not supported; this release reads `aca-reconciler/v1`",
                "t.yaml:3:1: metadata: missing field `name`",
                "t.yaml:6:21: spec.repositories[1]: invalid type: integer `7`, expected a string",
                "t.yaml:6:24: spec.repositories[2]: invalid type: sequence, expected a string",
                "t.yaml:4:1: spec: missing field `keepLast`",
            ]
        );
    }

    #[test]
    fn unknown_field_points_at_the_field() {
        let f = parse(
            "apiVersion: aca-reconciler/v1\nkind: Defaults\nmetadata: {name: d}\nspec:\n  resourceGroup: rg\n  region: uksouth\n",
        );
        let m = messages(&f);
        assert_eq!(m.len(), 1);
        assert!(
            m[0].starts_with("t.yaml:6:3: spec.region: unknown field `region`"),
            "{m:?}"
        );
    }

    #[test]
    fn suggests_the_field_a_typo_meant() {
        assert_eq!(
            closest("replica", &["images", "replicas", "traffic"]),
            Some("replicas")
        );
        assert_eq!(
            closest("resourcegroup", &["name", "resourceGroup"]),
            Some("resourceGroup")
        );
        assert_eq!(closest("region", &["subscription", "resourceGroup"]), None);
        assert_eq!(closest("multi", &["single", "multiple"]), Some("multiple"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn invalid_utf8_is_located() {
        let f = parse_bytes(Path::new("b.yaml"), Path::new(""), b"a: 1\nb: \xff\n");
        assert_eq!(f.diagnostics[0].pos, Some(Pos { line: 2, column: 4 }));
    }
}

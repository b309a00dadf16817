//! Refuses YAML nested deeper than [`MAX_DEPTH`] levels before any YAML parser reads the text.
//!
//! # Why a pre-scan
//! Both YAML readers of the loader spend time quadratic in the depth of flow collections
//! (`[`, `{`): saphyr-parser (the position index) keeps one possible key per open level and,
//! inside brackets, reads ahead to the end of the outermost one before it hands out a single
//! event; libyaml (behind `yaml_serde`) checks every open level's possible key at each token.
//! One line of `{a: ` repeated kept `validate` busy for minutes. Their own depth limits come
//! too late: `yaml_serde` applies its limit while deserializing, after libyaml has read the
//! whole document. So this module reads the text once, in time linear in its length, and
//! refuses it at the first node that would be deeper than [`MAX_DEPTH`].
//!
//! # What it counts
//! The depth of a node is the number of collections around it, as the parsers build them:
//! flow collections, block mappings and sequences (from indentation, `- ` and `? ` entries and
//! `key:`, also several on one line such as `- - - x`), a sequence written at its mapping key's
//! own indentation, and the single-pair mapping that `[a: b]` makes. A desired-state document
//! needs four levels (`spec.traffic[0].weight`), so the limit is far above any real file.
//!
//! # How it reads the text
//! It is a tokenizer that knows only what decides nesting: where each token starts, and from
//! there where quoted, plain and block scalars and comments end (brackets inside them are text),
//! the flow brackets, and the indentation stack of block collections, each rule as the parsers'
//! scanners have it. The two parsers disagree on a few rules: whether `:` and `?` inside
//! brackets are indicators when no space follows, which characters anchors and tags may hold,
//! how far back a key may start, and the indentation of a top-level block scalar. A text can be
//! built to look shallow to one and deep to the other, so the scan runs once in each parser's
//! dialect and refuses the text if either reading is too deep. Where a parser would stop on
//! a syntax error the scan goes on, which can only find more depth, never less.
//!
//! The characters on which the parsers disagree too much to follow both (U+0085, U+2028 and
//! U+2029, which libyaml alone takes as line breaks, and a byte order mark, which each skips in
//! its own way) are refused outright: no desired-state file needs them. (The loader drops the
//! byte order mark that starts a file before this check.)

use super::index::Pos;

/// The deepest nesting accepted, counted in collections around a node.
pub const MAX_DEPTH: usize = 64;

/// Why a text is refused before parsing, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The opening that goes one level too deep, or the refused character.
    pub pos: Pos,
    /// What is wrong and what to do.
    pub message: String,
}

/// The message for text nested deeper than [`MAX_DEPTH`], shared by the pre-scan and the
/// parsers' own limits so that every layer says the same. `aliased`: the depth comes from what
/// aliases stand for, which only the parsers see.
pub fn too_deep_message(aliased: bool) -> String {
    let (how, fix) = if aliased {
        (
            " once its aliases are expanded",
            "write the values out instead of nesting aliases in aliases",
        )
    } else {
        (
            "",
            "look here for an unclosed `[` or `{`, or for indentation that keeps growing",
        )
    };
    format!(
        "nesting deeper than {MAX_DEPTH} levels{how}; a desired-state document needs only a few \
         (spec.traffic[0].weight is 4), so {fix}"
    )
}

/// Checks that no node of `text` is nested deeper than [`MAX_DEPTH`], and that it holds no
/// character the two parsers read differently.
pub fn check(text: &str) -> Result<(), Refusal> {
    let chars: Vec<char> = text.chars().collect();
    if let Some((at, c)) = chars
        .iter()
        .enumerate()
        .find(|(_, c)| matches!(**c, '\u{85}' | '\u{2028}' | '\u{2029}' | BOM))
    {
        let name = match c {
            '\u{85}' => "U+0085 (next line)",
            '\u{2028}' => "U+2028 (line separator)",
            '\u{2029}' => "U+2029 (paragraph separator)",
            _ => "U+FEFF (byte order mark)",
        };
        return Err(Refusal {
            pos: position(&chars, at),
            message: format!(
                "character {name}: YAML readers disagree on how to read it, so desired-state \
                 files may not hold it; delete it (in a double-quoted string, write it as an \
                 escape such as \\u2028)"
            ),
        });
    }
    let first = [Dialect::Libyaml, Dialect::Saphyr]
        .into_iter()
        .filter_map(|dialect| Scanner::new(&chars, dialect).run().err())
        .min();
    match first {
        None => Ok(()),
        Some(at) => Err(Refusal {
            pos: position(&chars, at),
            message: too_deep_message(false),
        }),
    }
}

/// The deepest nesting of `text` as either parser would read it (the larger of the two); for
/// tests, which check that it is never below what a parser builds.
pub fn depth(text: &str) -> usize {
    let chars: Vec<char> = text.chars().collect();
    [Dialect::Libyaml, Dialect::Saphyr]
        .into_iter()
        .map(|dialect| {
            let mut scanner = Scanner::new(&chars, dialect);
            scanner.limit = usize::MAX;
            // With no limit the scan cannot fail.
            let _ = scanner.scan();
            scanner.deepest
        })
        .max()
        .unwrap_or(0)
}

/// 1-based line and column of char `at`, as editors count them (lines end at `\n`).
fn position(chars: &[char], at: usize) -> Pos {
    let before = &chars[..at.min(chars.len())];
    let line = before.iter().filter(|c| **c == '\n').count() + 1;
    let column = before.iter().rev().take_while(|c| **c != '\n').count() + 1;
    Pos { line, column }
}

/// Whose reading of YAML the scan follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// libyaml (YAML 1.1), as `yaml_serde` uses it through libyaml-rs.
    Libyaml,
    /// saphyr-parser (YAML 1.2), as the position index uses it.
    Saphyr,
}

/// One open flow collection.
#[derive(Debug)]
struct Flow {
    /// `[` rather than `{`.
    seq: bool,
    /// An entry of this sequence is a single-pair mapping (`[a: b]`), one level more; saphyr
    /// nests one more for each further `:` in the entry (`[a: b: c]`).
    pairs: usize,
    /// The entry's pair began with `?`: saphyr nests no more for its `:`.
    explicit: bool,
    /// The deepest nesting since the current entry began: if the entry turns out to be a
    /// pair, its key (`[[x]: y]`) was one level deeper than counted while it was read.
    entry_peak: usize,
    /// The deepest nesting inside this collection, for the entry of the one around it.
    peak: usize,
}

/// One open block collection.
#[derive(Debug)]
struct Block {
    /// The column of its entries.
    col: usize,
    /// A sequence rather than a mapping.
    seq: bool,
    /// A sequence at its mapping key's own column (`key:\n- a`): a level the parsers build
    /// without an indentation of its own.
    indentless: bool,
}

/// A token that may turn out to be a block mapping's key once a `:` follows on its line.
#[derive(Debug, Clone, Copy)]
struct Key {
    at: usize,
    byte: usize,
    line: usize,
    col: usize,
    /// The deepest nesting since the key began: a mapping that the key opens holds it, so
    /// everything in the key (`[[x]]: y`) was one level deeper than counted while it was read.
    peak: usize,
}

/// How the token before the current one ended, for `:` right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adjacent {
    /// After a quoted scalar: saphyr reads a `:` at the next token as a value indicator.
    NextToken,
    /// After a closing bracket inside brackets: only at this index (same line, blanks between).
    At(usize),
}

/// Err(index of the opening that went too deep).
type Step = Result<(), usize>;

#[derive(Debug)]
struct Scanner<'a> {
    s: &'a [char],
    dialect: Dialect,
    limit: usize,
    at: usize,
    /// The byte offset of `at` (libyaml measures how far back a key may be in bytes).
    byte: usize,
    line: usize,
    col: usize,
    flow: Vec<Flow>,
    pairs: usize,
    block: Vec<Block>,
    /// The possible simple key outside brackets.
    key: Option<Key>,
    /// Whether a token here may be a simple key (the parsers' `simple_key_allowed`).
    allowed: bool,
    adjacent: Option<Adjacent>,
    deepest: usize,
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_flow(c: char) -> bool {
    matches!(c, ',' | '[' | ']' | '{' | '}')
}

const BOM: char = '\u{feff}';

impl<'a> Scanner<'a> {
    fn new(s: &'a [char], dialect: Dialect) -> Self {
        Self {
            s,
            dialect,
            limit: MAX_DEPTH,
            at: 0,
            byte: 0,
            line: 0,
            col: 0,
            flow: Vec::new(),
            pairs: 0,
            block: Vec::new(),
            key: None,
            allowed: true,
            adjacent: None,
            deepest: 0,
        }
    }

    fn peek(&self, n: usize) -> Option<char> {
        self.s.get(self.at + n).copied()
    }

    fn is_break(&self, c: char) -> bool {
        // U+0085, U+2028 and U+2029, which libyaml also takes as line breaks, are refused
        // before the scan.
        c == '\n' || c == '\r'
    }

    /// A blank, a line break or the end of the text at `n` chars ahead.
    fn blankz(&self, n: usize) -> bool {
        self.peek(n)
            .is_none_or(|c| is_blank(c) || self.is_break(c) || c == '\0')
    }

    fn at_break(&self) -> bool {
        self.peek(0).is_some_and(|c| self.is_break(c))
    }

    fn advance(&mut self) {
        self.byte += self.peek(0).map_or(0, char::len_utf8);
        self.at += 1;
        self.col += 1;
    }

    /// Consumes one line break (`\r\n` counts as one).
    fn newline(&mut self) {
        let crlf = self.peek(0) == Some('\r') && self.peek(1) == Some('\n');
        let n = if crlf { 2 } else { 1 };
        self.at += n;
        self.byte += n;
        self.line += 1;
        self.col = 0;
    }

    fn document_marker(&self) -> bool {
        self.col == 0
            && matches!(
                (self.peek(0), self.peek(1), self.peek(2)),
                (Some('-'), Some('-'), Some('-')) | (Some('.'), Some('.'), Some('.'))
            )
            && self.blankz(3)
    }

    fn in_flow(&self) -> bool {
        !self.flow.is_empty()
    }

    fn depth(&self) -> usize {
        self.block.len() + self.flow.len() + self.pairs
    }

    /// Records the depth after an opening at `at`; fails past the limit.
    fn opened(&mut self, at: usize) -> Step {
        self.reached(self.depth(), at)
    }

    /// Records that something at `at` is nested `depth` deep.
    fn reached(&mut self, depth: usize, at: usize) -> Step {
        if let Some(f) = self.flow.last_mut() {
            f.entry_peak = f.entry_peak.max(depth);
            f.peak = f.peak.max(depth);
        }
        if let Some(k) = &mut self.key {
            k.peak = k.peak.max(depth);
        }
        self.deepest = self.deepest.max(depth);
        if depth > self.limit { Err(at) } else { Ok(()) }
    }

    fn run(mut self) -> Step {
        self.scan()
    }

    fn scan(&mut self) -> Step {
        loop {
            self.skip_to_token();
            let Some(c) = self.peek(0) else {
                return Ok(());
            };
            let start = self.at;
            let adjacent = match self.adjacent.take() {
                Some(Adjacent::NextToken) => true,
                Some(Adjacent::At(i)) => i == start,
                None => false,
            };
            if !self.in_flow() {
                // A token left of an open block collection closes it.
                while self.block.last().is_some_and(|b| b.col > self.col) {
                    self.block.pop();
                }
            }
            if self.col == 0 && (c == '%' || self.document_marker()) {
                // A directive or `---` / `...`: everything open ends here (inside brackets
                // both parsers stop with an error, so resetting can only over-count).
                self.flow.clear();
                self.pairs = 0;
                self.block.clear();
                self.key = None;
                self.allowed = false;
                if c == '%' {
                    self.skip_line();
                } else {
                    for _ in 0..3 {
                        self.advance();
                    }
                }
                continue;
            }
            let entry = c == '-' && self.blankz(1);
            if !self.in_flow()
                && !entry
                && self
                    .block
                    .last()
                    .is_some_and(|b| b.indentless && b.col == self.col)
            {
                // A key at the column of an indentless sequence ends that sequence.
                self.block.pop();
            }
            match c {
                '[' | '{' => {
                    self.save_key();
                    let depth = self.depth() + 1;
                    self.flow.push(Flow {
                        seq: c == '[',
                        pairs: 0,
                        explicit: false,
                        entry_peak: depth,
                        peak: depth,
                    });
                    self.allowed = true;
                    self.advance();
                    self.opened(start)?;
                }
                ']' | '}' => {
                    if let Some(f) = self.flow.pop() {
                        self.pairs -= f.pairs;
                        if let Some(outer) = self.flow.last_mut() {
                            outer.entry_peak = outer.entry_peak.max(f.peak);
                            outer.peak = outer.peak.max(f.peak);
                        }
                    }
                    self.allowed = false;
                    self.advance();
                    if self.in_flow() {
                        let mut i = self.at;
                        while self.s.get(i).is_some_and(|c| is_blank(*c)) {
                            i += 1;
                        }
                        self.adjacent = Some(Adjacent::At(i));
                    }
                }
                ',' => {
                    self.end_pair();
                    self.remove_key();
                    self.allowed = true;
                    self.advance();
                }
                '-' if entry => {
                    if !self.in_flow() {
                        self.roll(self.col, start, true)?;
                    }
                    self.remove_key();
                    self.allowed = true;
                    self.advance();
                }
                '?' if self.blankz(1) || (self.dialect == Dialect::Libyaml && self.in_flow()) => {
                    if self.in_flow() {
                        self.pair(start, false)?;
                        self.allowed = false;
                    } else {
                        self.roll(self.col, start, false)?;
                        self.allowed = true;
                    }
                    self.remove_key();
                    self.advance();
                }
                ':' if self.blankz(1)
                    || (self.in_flow()
                        && (self.dialect == Dialect::Libyaml
                            || adjacent
                            || self.peek(1).is_some_and(is_flow))) =>
                {
                    self.value(start)?;
                    self.advance();
                }
                '*' | '&' => {
                    self.save_key();
                    self.allowed = false;
                    self.advance();
                    while self.peek(0).is_some_and(|c| self.anchor_char(c)) {
                        self.advance();
                    }
                }
                '!' => {
                    self.save_key();
                    self.allowed = false;
                    self.tag();
                }
                '|' | '>' if !self.in_flow() => {
                    self.save_key();
                    self.allowed = true;
                    self.block_scalar();
                }
                '\'' | '"' => {
                    self.save_key();
                    self.allowed = false;
                    self.quoted(c);
                    self.adjacent = Some(Adjacent::NextToken);
                }
                _ => {
                    self.save_key();
                    self.allowed = false;
                    self.plain();
                }
            }
        }
    }

    /// Skips blanks, line breaks and comments up to the next token.
    fn skip_to_token(&mut self) {
        while let Some(c) = self.peek(0) {
            if is_blank(c) {
                self.advance();
            } else if self.is_break(c) {
                self.newline();
                if !self.in_flow() {
                    self.allowed = true;
                }
            } else if c == '#' {
                while self.peek(0).is_some_and(|c| !self.is_break(c)) {
                    self.advance();
                }
            } else {
                break;
            }
        }
    }

    fn skip_line(&mut self) {
        while self.peek(0).is_some_and(|c| !self.is_break(c)) {
            self.advance();
        }
    }

    fn save_key(&mut self) {
        if self.allowed && !self.in_flow() {
            self.key = Some(Key {
                at: self.at,
                byte: self.byte,
                line: self.line,
                col: self.col,
                peak: self.depth(),
            });
        }
    }

    fn remove_key(&mut self) {
        if !self.in_flow() {
            self.key = None;
        }
    }

    /// A block collection whose entries stand at `col` (a no-op inside brackets, and for a
    /// collection already open there).
    fn roll(&mut self, col: usize, at: usize, seq: bool) -> Step {
        if self.in_flow() {
            return Ok(());
        }
        match self.block.last() {
            Some(top) if top.col > col => return Ok(()),
            Some(top) if top.col == col => {
                if !(seq && !top.seq && !top.indentless) {
                    return Ok(());
                }
                self.block.push(Block {
                    col,
                    seq: true,
                    indentless: true,
                });
            }
            _ => self.block.push(Block {
                col,
                seq,
                indentless: false,
            }),
        }
        self.opened(at)
    }

    /// A `:` value indicator at `at`.
    fn value(&mut self, at: usize) -> Step {
        if self.in_flow() {
            self.allowed = false;
            return self.pair(at, true);
        }
        // A simple key must be on this line and at most 1024 characters (libyaml: bytes) back.
        let libyaml = self.dialect == Dialect::Libyaml;
        let here = if libyaml { self.byte } else { at };
        let key = self.key.take().filter(|k| {
            let back = if libyaml { k.byte } else { k.at };
            k.line == self.line && back + 1024 >= here
        });
        match key {
            Some(k) => {
                self.allowed = false;
                let levels = self.block.len();
                self.roll(k.col, k.at, false)?;
                if self.block.len() > levels {
                    self.reached(k.peak + 1, k.at)?;
                }
                Ok(())
            }
            None => {
                self.allowed = true;
                self.roll(self.col, at, false)
            }
        }
    }

    /// An entry of the innermost flow sequence becomes a single-pair mapping, at a `?` or a
    /// `:` (`value`).
    fn pair(&mut self, at: usize, value: bool) -> Step {
        let saphyr = self.dialect == Dialect::Saphyr;
        let Some(f) = self.flow.last_mut() else {
            return Ok(());
        };
        let opens = f.seq && (f.pairs == 0 || (saphyr && value && !f.explicit));
        f.explicit |= !value;
        if !opens {
            return Ok(());
        }
        f.pairs += 1;
        // The entry so far is the pair's key, inside the new mapping.
        let key_depth = f.entry_peak + 1;
        self.pairs += 1;
        self.opened(at)?;
        self.reached(key_depth, at)
    }

    /// A `,`: the next entry of the innermost flow collection begins.
    fn end_pair(&mut self) {
        if let Some(f) = self.flow.last_mut() {
            self.pairs -= f.pairs;
            f.pairs = 0;
            f.explicit = false;
        }
        let depth = self.depth();
        if let Some(f) = self.flow.last_mut() {
            f.entry_peak = depth;
        }
    }

    fn anchor_char(&self, c: char) -> bool {
        match self.dialect {
            Dialect::Libyaml => c.is_ascii_alphanumeric() || c == '_' || c == '-',
            Dialect::Saphyr => !is_blank(c) && !self.is_break(c) && !is_flow(c) && c != '\0',
        }
    }

    fn tag(&mut self) {
        self.advance(); // '!'
        if self.peek(0) == Some('<') {
            self.advance();
            while let Some(c) = self.peek(0) {
                if is_blank(c) || self.is_break(c) {
                    break;
                }
                self.advance();
                if c == '>' {
                    break;
                }
            }
            return;
        }
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        match self.dialect {
            Dialect::Libyaml => {
                while self
                    .peek(0)
                    .is_some_and(|c| word(c) || ";/?:@&=+$.%!~*'()".contains(c))
                {
                    self.advance();
                }
            }
            Dialect::Saphyr => {
                while self.peek(0).is_some_and(word) {
                    self.advance();
                }
                if self.peek(0) == Some('!') {
                    self.advance();
                }
                while self
                    .peek(0)
                    .is_some_and(|c| word(c) || "#;/?:@&=+$_.~*'()%".contains(c))
                {
                    self.advance();
                }
            }
        }
    }

    /// A `'` or `"` scalar, to its closing quote (it may span lines).
    fn quoted(&mut self, quote: char) {
        self.advance();
        while let Some(c) = self.peek(0) {
            if self.document_marker() {
                return; // both parsers stop here with an error
            }
            if quote == '\'' && c == '\'' {
                self.advance();
                if self.peek(0) == Some('\'') {
                    self.advance();
                    continue;
                }
                return;
            }
            if quote == '"' && c == '"' {
                self.advance();
                return;
            }
            if quote == '"' && c == '\\' {
                self.advance();
                match self.peek(0) {
                    Some(e) if self.is_break(e) => self.newline(),
                    Some(_) => self.advance(),
                    None => return,
                }
                continue;
            }
            if self.is_break(c) {
                self.newline();
            } else {
                self.advance();
            }
        }
    }

    fn plain_char(&self, c: char, next: Option<char>) -> bool {
        let next_blankz = next.is_none_or(|n| is_blank(n) || self.is_break(n) || n == '\0');
        if c == ':' && (next_blankz || (self.in_flow() && next.is_some_and(is_flow))) {
            return false;
        }
        if self.in_flow() && is_flow(c) {
            return false;
        }
        true
    }

    /// A plain scalar: to `: `, ` #`, a bracket or comma inside brackets, or a line indented
    /// no deeper than its block collection.
    fn plain(&mut self) {
        let begin = self.at;
        // Continuation lines must be indented past the innermost block collection.
        let min_col = self.block.last().map_or(0, |b| b.col + 1);
        let mut broke = false;
        loop {
            if self.document_marker() || (self.at != begin && self.peek(0) == Some('#')) {
                break;
            }
            while let Some(c) = self.peek(0) {
                if is_blank(c) || self.is_break(c) || !self.plain_char(c, self.peek(1)) {
                    break;
                }
                self.advance();
            }
            if !self
                .peek(0)
                .is_some_and(|c| is_blank(c) || self.is_break(c))
            {
                break;
            }
            while let Some(c) = self.peek(0) {
                if is_blank(c) {
                    self.advance();
                } else if self.is_break(c) {
                    self.newline();
                    broke = true;
                } else {
                    break;
                }
            }
            if !self.in_flow() && self.col < min_col {
                break;
            }
        }
        if self.at == begin {
            self.advance(); // a character no parser accepts here: step over it
        }
        if broke {
            self.allowed = true;
        }
    }

    /// A `|` or `>` scalar: its header line, then every line indented at least as far as its
    /// content (blank lines included).
    fn block_scalar(&mut self) {
        self.advance();
        let mut increment = 0;
        for _ in 0..2 {
            match self.peek(0) {
                Some('+' | '-') => self.advance(),
                Some(d @ '1'..='9') => {
                    increment = d as usize - '0' as usize;
                    self.advance();
                }
                _ => break,
            }
        }
        self.skip_line();
        if self.peek(0).is_none() {
            return;
        }
        self.newline();
        let parent = self.block.last().map(|b| b.col);
        let indent = if increment > 0 {
            let indent = parent.map_or(increment, |p| p + increment);
            self.skip_empty_lines(indent);
            indent
        } else {
            // The first non-empty line sets the indentation, but never at or left of the
            // parent collection's column (libyaml: never left of column 1).
            let mut widest = 0;
            loop {
                self.skip_spaces(usize::MAX);
                widest = widest.max(self.col);
                if self.at_break() {
                    self.newline();
                } else {
                    break;
                }
            }
            let floor = match (parent, self.dialect) {
                (Some(p), _) => p + 1,
                (None, Dialect::Libyaml) => 1,
                (None, Dialect::Saphyr) => 0,
            };
            widest.max(floor)
        };
        // Here: after the indentation of a line that is not empty.
        while self.peek(0).is_some() && self.col >= indent {
            if indent == 0 && self.document_marker() {
                return;
            }
            self.skip_line();
            if self.peek(0).is_none() {
                return;
            }
            self.newline();
            self.skip_empty_lines(indent);
        }
    }

    /// Skips lines that hold at most `indent` spaces, and the indentation of the next line.
    fn skip_empty_lines(&mut self, indent: usize) {
        loop {
            self.skip_spaces(indent);
            if self.at_break() {
                self.newline();
            } else {
                return;
            }
        }
    }

    /// Consumes spaces (not tabs) up to column `upto`.
    fn skip_spaces(&mut self, upto: usize) {
        while self.col < upto && self.peek(0) == Some(' ') {
            self.advance();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(text: &str) -> Option<Pos> {
        check(text).err().map(|r| r.pos)
    }

    #[test]
    fn sixty_four_brackets_pass_and_sixty_five_do_not() {
        assert_eq!(deep(&"[".repeat(64)), None);
        assert_eq!(
            deep(&"[".repeat(65)),
            Some(Pos {
                line: 1,
                column: 65
            })
        );
        assert_eq!(
            deep(&format!("a:\n  b: {}", "{x: ".repeat(70))),
            Some(Pos {
                line: 2,
                column: 6 + 4 * 62
            })
        );
    }
}

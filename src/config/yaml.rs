//! YAML with positions: the file as a small tree whose every node (keys included) knows its
//! line and column, and whose text scalars know where each of their characters sits in the
//! file, so that tokens of a pasted keepalived block map back to alive.yaml.
//!
//! Crate choice: `saphyr` / `saphyr-parser` (0.3, the maintained successor of yaml-rust /
//! yaml-rust2; YAML 1.2, pure Rust, no unsafe in the parser). `serde_yaml` is deprecated and
//! `serde_yml` unsound. saphyr's `MarkedYaml` gives spans but resolves scalars, losing their
//! style, and we need the style to map a literal block scalar (`|`) back to file lines, so we
//! drive `saphyr_parser::Parser` directly: every event carries a `Span` (line 1-based, column
//! 0-based in characters), and for a block scalar the span starts at the first content line
//! at the block's indentation. Events are turned into [`Node`]s here; duplicate keys,
//! aliases and excessive nesting are reported as diagnostics rather than accepted.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::diagnostic::{Diags, Pos};

/// Nesting deeper than this is not a config file; refuse before recursion gets costly.
const MAX_DEPTH: usize = 64;
/// More nodes than this is not a config file either (the seed has about 40 per instance):
/// parsing stops there, so that memory stays bounded by this, not by what a large file holds.
pub const MAX_NODES: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Key/value pairs in file order; keys are unique (duplicates are reported).
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub value: String,
    pub style: Style,
    pub origin: TextOrigin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

impl Style {
    pub fn is_quoted(self) -> bool {
        self != Style::Plain
    }
}

/// Where the characters of a scalar's value are in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TextOrigin {
    /// Where value line `i` (split at `\n`) starts in the file. Empty when the value cannot be
    /// mapped character by character (escapes, folding): then everything maps to `fallback`.
    line_starts: Vec<Pos>,
    fallback: Pos,
}

impl TextOrigin {
    /// The file position of character `col` (0-based) of value line `line` (0-based).
    pub fn pos_of(&self, line: usize, col: usize) -> Pos {
        match self.line_starts.get(line) {
            Some(start) => Pos::new(start.line, start.col + col),
            None => self.fallback,
        }
    }

    pub fn is_exact(&self) -> bool {
        !self.line_starts.is_empty()
    }
}

impl Node {
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar(s) if is_null(s) => "null",
            NodeKind::Scalar(_) => "a scalar",
            NodeKind::Seq(_) => "a sequence",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// `~`, `null` or nothing at all, unquoted.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar(s) if is_null(s))
    }
}

fn is_null(s: &Scalar) -> bool {
    s.style == Style::Plain && matches!(s.value.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

/// Parse `text` into one document's root node. `None` when the YAML itself is broken (the
/// error is in `diags`) or the file holds no document.
pub fn parse(text: &str, diags: &mut Diags<'_>) -> Option<Node> {
    let lines = super::diagnostic::split_lines(text);
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        text: CharIndex::new(text),
        lines,
        diags,
        root: None,
        nodes: 0,
    };
    builder.document().unwrap_or_default()
}

struct Builder<'t, 'd, 'a> {
    parser: Parser<'t, saphyr_parser::StrInput<'t>>,
    text: CharIndex<'t>,
    lines: Vec<&'t str>,
    diags: &'d mut Diags<'a>,
    root: Option<Node>,
    /// Nodes built so far, against [`MAX_NODES`].
    nodes: usize,
}

/// The text from a character index on, without walking from the start each time: the parser
/// reports positions in characters, and a long line holds many scalars (walking the line for
/// each made a one-line file quadratic).
struct CharIndex<'t> {
    text: &'t str,
    /// Byte offset of every [`CharIndex::STRIDE`]th character; empty for ASCII text, where
    /// characters and bytes coincide.
    checkpoints: Vec<usize>,
}

impl<'t> CharIndex<'t> {
    const STRIDE: usize = 64;

    fn new(text: &'t str) -> CharIndex<'t> {
        let checkpoints = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices()
                .step_by(Self::STRIDE)
                .map(|(at, _)| at)
                .collect()
        };
        CharIndex { text, checkpoints }
    }

    /// The text from character `index` on (empty past the end).
    fn text_from(&self, index: usize) -> &'t str {
        if self.checkpoints.is_empty() {
            return self.text.get(index..).unwrap_or("");
        }
        let Some(&at) = self.checkpoints.get(index / Self::STRIDE) else {
            return "";
        };
        let rest = &self.text[at..];
        match rest.char_indices().nth(index % Self::STRIDE) {
            Some((offset, _)) => &rest[offset..],
            None => "",
        }
    }
}

fn pos_of_span(span: &Span) -> Pos {
    Pos::new(span.start.line(), span.start.col() + 1)
}

impl<'t> Builder<'t, '_, '_> {
    fn next(&mut self) -> Result<(Event<'t>, Span), ()> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => {
                let m = e.marker();
                self.diags.error(
                    Pos::new(m.line().max(1), m.col() + 1),
                    format!("invalid YAML: {}", e.info()),
                    "",
                );
                Err(())
            }
            None => Err(()),
        }
    }

    fn document(&mut self) -> Result<Option<Node>, ()> {
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
                Event::DocumentStart(_) => {
                    if self.root.is_some() {
                        self.diags.error(
                            pos_of_span(&span),
                            "a second YAML document",
                            "exactly one document",
                        );
                        return Ok(None);
                    }
                    let (ev, span) = self.next()?;
                    let node = self.node(ev, span, 0)?;
                    self.root = Some(node);
                }
                Event::StreamEnd => return Ok(self.root.take()),
                _ => {
                    self.diags
                        .error(pos_of_span(&span), "unexpected YAML event", "a document");
                    return Err(());
                }
            }
        }
    }

    fn node(&mut self, ev: Event<'t>, span: Span, depth: usize) -> Result<Node, ()> {
        let pos = pos_of_span(&span);
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.diags.error(
                pos,
                format!("the file has more than {MAX_NODES} YAML nodes; reading stops here"),
                "an alive.yaml of a size people write (a few dozen nodes per instance)",
            );
            return Err(());
        }
        if depth > MAX_DEPTH {
            self.diags.error(
                pos,
                format!("YAML nested more than {MAX_DEPTH} levels deep"),
                "the structure of alive.yaml",
            );
            return Err(());
        }
        match ev {
            Event::Scalar(value, style, _, _) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted => Style::SingleQuoted,
                    ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    ScalarStyle::Literal => Style::Literal,
                    ScalarStyle::Folded => Style::Folded,
                };
                let origin = self.origin(&value, style, &span);
                Ok(Node {
                    pos,
                    kind: NodeKind::Scalar(Scalar {
                        value: value.into_owned(),
                        style,
                        origin,
                    }),
                })
            }
            Event::SequenceStart(_, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if ev == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                Ok(Node {
                    pos,
                    kind: NodeKind::Seq(items),
                })
            }
            Event::MappingStart(_, _) => {
                let mut pairs: Vec<(Node, Node)> = Vec::new();
                // Scalar keys by text, so a large mapping is not checked quadratically.
                let mut scalar_keys: std::collections::HashSet<String> =
                    std::collections::HashSet::new();
                loop {
                    let (ev, span) = self.next()?;
                    if ev == Event::MappingEnd {
                        break;
                    }
                    let key = self.node(ev, span, depth + 1)?;
                    let (ev, span) = self.next()?;
                    let value = self.node(ev, span, depth + 1)?;
                    let duplicate = match &key.kind {
                        NodeKind::Scalar(sc) => !scalar_keys.insert(sc.value.clone()),
                        _ => pairs.iter().any(|(k, _)| same_key(k, &key)),
                    };
                    if duplicate {
                        let name = match &key.kind {
                            NodeKind::Scalar(s) => format!("`{}`", s.value),
                            _ => "a complex key".to_string(),
                        };
                        self.diags.error(
                            key.pos,
                            format!("duplicate key {name} in this mapping"),
                            "each key at most once",
                        );
                    } else {
                        pairs.push((key, value));
                    }
                }
                Ok(Node {
                    pos,
                    kind: NodeKind::Map(pairs),
                })
            }
            Event::Alias(_) => {
                self.diags.error(
                    pos,
                    "YAML aliases (`*name`) are not supported",
                    "the value written out",
                );
                Err(())
            }
            _ => {
                self.diags.error(
                    pos,
                    "unexpected YAML event",
                    "a scalar, sequence or mapping",
                );
                Err(())
            }
        }
    }

    /// Map the value's characters back to the file, verifying against the source text; when
    /// the mapping cannot be verified (escapes, folding) every character maps to the node.
    fn origin(&self, value: &str, style: Style, span: &Span) -> TextOrigin {
        let fallback = pos_of_span(span);
        let line_starts = match style {
            Style::Literal => self.literal_starts(value, span),
            Style::Plain | Style::SingleQuoted | Style::DoubleQuoted if !value.contains('\n') => {
                let quote = usize::from(style != Style::Plain);
                let col0 = span.start.col() + quote;
                let ok = starts_with_chars(self.text.text_from(span.start.index() + quote), value);
                if ok {
                    vec![Pos::new(span.start.line(), col0 + 1)]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        TextOrigin {
            line_starts,
            fallback,
        }
    }

    /// A literal block's span starts on its first non-empty line, at the block's indentation;
    /// value line `i` is file line `start - first_non_empty + i`, shifted by that indentation.
    fn literal_starts(&self, value: &str, span: &Span) -> Vec<Pos> {
        let value_lines: Vec<&str> = value.split('\n').collect();
        let Some(first) = value_lines.iter().position(|l| !l.is_empty()) else {
            return Vec::new();
        };
        let Some(base) = span.start.line().checked_sub(first) else {
            return Vec::new();
        };
        let indent = span.start.col();
        let mut starts = Vec::with_capacity(value_lines.len());
        for (i, vline) in value_lines.iter().enumerate() {
            let line = base + i;
            if !vline.is_empty() {
                let ok = self
                    .source_line(line)
                    .is_some_and(|l| chars_match_at(l, indent, vline));
                if !ok {
                    return Vec::new();
                }
            }
            starts.push(Pos::new(line, indent + 1));
        }
        starts
    }

    fn source_line(&self, line: usize) -> Option<&str> {
        line.checked_sub(1).and_then(|i| self.lines.get(i)).copied()
    }
}

/// Keys compare by their text (`a` and `"a"` are the same key); complex keys by structure.
fn same_key(a: &Node, b: &Node) -> bool {
    match (&a.kind, &b.kind) {
        (NodeKind::Scalar(x), NodeKind::Scalar(y)) => x.value == y.value,
        (NodeKind::Seq(x), NodeKind::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_key(p, q))
        }
        (NodeKind::Map(x), NodeKind::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| same_key(k1, k2) && same_key(v1, v2))
        }
        _ => false,
    }
}

/// Does `line`, from character `col0` on, start with `expected`?
fn chars_match_at(line: &str, col0: usize, expected: &str) -> bool {
    let mut rest = line.chars().skip(col0);
    expected.chars().all(|c| rest.next() == Some(c))
}

/// Whether the file text from a scalar's start holds the scalar's value verbatim.
fn starts_with_chars(text: &str, expected: &str) -> bool {
    text.starts_with(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Node {
        let mut diags = Diags::new("t.yaml", text);
        let node = parse(text, &mut diags);
        let (errors, _) = diags.finish();
        assert!(errors.is_empty(), "unexpected errors: {errors:?}");
        node.expect("a document")
    }

    fn get<'n>(node: &'n Node, key: &str) -> &'n Node {
        match &node.kind {
            NodeKind::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(&k.kind, NodeKind::Scalar(s) if s.value == key))
                .map(|(_, v)| v)
                .expect("key present"),
            _ => panic!("not a map"),
        }
    }

    fn scalar(node: &Node) -> &Scalar {
        match &node.kind {
            NodeKind::Scalar(s) => s,
            _ => panic!("not a scalar"),
        }
    }

    #[test]
    fn literal_block_lines_map_to_file_lines_and_columns() {
        let root = parse_ok("a:\n  b: |\n\n    one\n      two\n");
        let s = scalar(get(get(&root, "a"), "b"));
        assert_eq!(s.value, "\none\n  two\n");
        assert_eq!(s.origin.pos_of(1, 0), Pos::new(4, 5));
        assert_eq!(s.origin.pos_of(2, 2), Pos::new(5, 7));
    }

    #[test]
    fn quoted_and_plain_scalars_map_columns() {
        let root = parse_ok("x: \"abc def\"\ny:   plain words\n");
        assert_eq!(scalar(get(&root, "x")).origin.pos_of(0, 4), Pos::new(1, 9));
        assert_eq!(scalar(get(&root, "y")).origin.pos_of(0, 6), Pos::new(2, 12));
    }

    #[test]
    fn escaped_scalar_falls_back_to_node_position() {
        let root = parse_ok("x: \"a\\tb\"\n");
        let s = scalar(get(&root, "x"));
        assert!(!s.origin.is_exact());
        assert_eq!(s.origin.pos_of(0, 2), Pos::new(1, 4));
    }

    #[test]
    fn duplicate_key_is_reported_at_the_second_key() {
        let text = "a: 1\nb: 2\na: 3\n";
        let mut diags = Diags::new("t.yaml", text);
        let _ = parse(text, &mut diags);
        let (errors, _) = diags.finish();
        assert_eq!(
            errors[0].headline(),
            "t.yaml:3:1: error: duplicate key `a` in this mapping; expected each key at most once"
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let text = "[".repeat(10_000);
        let mut diags = Diags::new("t.yaml", &text);
        assert!(parse(&text, &mut diags).is_none());
        assert!(diags.error_count() > 0);
    }
}

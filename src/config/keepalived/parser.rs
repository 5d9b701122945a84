//! keepalived's block grammar over the lexer's tokens, without meaning attached:
//!
//! ```text
//! block     := statement*
//! statement := keyword argument* ( '{' block '}' )?     -- arguments end at a line end,
//!                                                         `{` or `}`
//! ```
//! As in keepalived, a `{` may also open the block on the line after its keyword, and a `}`
//! ends a statement so that `} TCP_CHECK {` and `}}` work. What each keyword means and
//! whether it takes a block is decided by the semantic layer (`virtual_server`,
//! `real_server`, `checkers`).

use super::lexer::{Token, TokenKind};
use crate::config::diagnostic::{Diags, Pos};

/// Deeper than this is not a keepalived config (keepalived nests at most url in HTTP_GET in
/// real_server in virtual_server).
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub keyword: Token,
    pub args: Vec<Token>,
    pub block: Option<Block>,
    /// The arguments as written (quotes kept, `\#` read as `#`), for keywords that keepalived
    /// re-splits with its own quoting rules (`misc_path`).
    pub raw_args: String,
}

impl Statement {
    pub fn name(&self) -> &str {
        self.keyword.text().unwrap_or("")
    }

    pub fn pos(&self) -> Pos {
        self.keyword.pos
    }

    /// Where the arguments would start: the first argument, else just after the keyword.
    pub fn args_pos(&self) -> Pos {
        self.args.first().map(|t| t.pos).unwrap_or(Pos::new(
            self.keyword.pos.line,
            self.keyword.pos.col + (self.keyword.end - self.keyword.start),
        ))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub open: Pos,
    pub statements: Vec<Statement>,
}

/// Parse a whole scalar's tokens into top-level statements. Structural problems (an
/// unmatched brace, a block without keyword) are reported and skipped.
pub fn parse(text: &str, tokens: &[Token], diags: &mut Diags<'_>) -> Vec<Statement> {
    let mut p = Parser {
        lines: text.split('\n').collect(),
        tokens,
        at: 0,
        diags,
    };
    p.statements(0)
}

/// The characters `start..end` of value line `line`, with keepalived's `\#`/`\!` unescaped
/// outside double quotes.
fn raw_slice(lines: &[&str], line: usize, start: usize, end: usize) -> String {
    let Some(text) = lines.get(line) else {
        return String::new();
    };
    let chars: Vec<char> = text
        .chars()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect();
    let mut out = String::with_capacity(chars.len());
    let mut quoted = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            quoted = !quoted;
        } else if c == '\\' && !quoted && matches!(chars.get(i + 1), Some('#' | '!')) {
            i += 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

struct Parser<'t, 'd, 'a> {
    lines: Vec<&'t str>,
    tokens: &'t [Token],
    at: usize,
    diags: &'d mut Diags<'a>,
}

impl Parser<'_, '_, '_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn skip_eols(&mut self) {
        while self
            .peek()
            .is_some_and(|t| matches!(t.kind, TokenKind::Eol))
        {
            self.at += 1;
        }
    }

    /// Statements until the matching `}` (consumed) at depth > 0, or the end at depth 0.
    fn statements(&mut self, depth: usize) -> Vec<Statement> {
        let mut out = Vec::new();
        loop {
            self.skip_eols();
            let Some(tok) = self.peek().cloned() else {
                return out;
            };
            match &tok.kind {
                TokenKind::Close => {
                    self.at += 1;
                    if depth > 0 {
                        return out;
                    }
                    self.diags.error(
                        tok.pos,
                        "`}` without a matching `{`",
                        "a keyword, or remove the `}`",
                    );
                }
                TokenKind::Open => {
                    self.at += 1;
                    self.diags.error(
                        tok.pos,
                        "`{` without a keyword before it",
                        "a keyword such as TCP_CHECK before the block",
                    );
                    // Parse and drop the stray block so its `}` does not count as extra.
                    let _ = self.block_after_open(tok.pos, depth);
                }
                TokenKind::Quoted(_) => {
                    self.at += 1;
                    self.diags.error(
                        tok.pos,
                        format!("a quoted string {} where a keyword belongs", tok.describe()),
                        "a keyword (keywords are not quoted)",
                    );
                    self.skip_line();
                }
                TokenKind::Word(_) => {
                    self.at += 1;
                    if let Some(st) = self.statement(tok, depth) {
                        out.push(st);
                    }
                }
                TokenKind::Eol => {}
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(t) = self.peek() {
            if matches!(t.kind, TokenKind::Eol | TokenKind::Open | TokenKind::Close) {
                return;
            }
            self.at += 1;
        }
    }

    fn statement(&mut self, keyword: Token, depth: usize) -> Option<Statement> {
        let mut args = Vec::new();
        while let Some(t) = self.peek() {
            match t.kind {
                TokenKind::Word(_) | TokenKind::Quoted(_) => {
                    args.push(t.clone());
                    self.at += 1;
                }
                _ => break,
            }
        }
        // A block opens on this line, or alone on a following line.
        let mut look = self.at;
        while self
            .tokens
            .get(look)
            .is_some_and(|t| matches!(t.kind, TokenKind::Eol))
        {
            look += 1;
        }
        let block = match self.tokens.get(look) {
            Some(t) if matches!(t.kind, TokenKind::Open) => {
                let open = t.pos;
                self.at = look + 1;
                Some(self.block_after_open(open, depth)?)
            }
            _ => None,
        };
        let raw_args = match (args.first(), args.last()) {
            (Some(first), Some(last)) => raw_slice(&self.lines, first.line, first.start, last.end),
            _ => String::new(),
        };
        Some(Statement {
            keyword,
            args,
            block,
            raw_args,
        })
    }

    fn block_after_open(&mut self, open: Pos, depth: usize) -> Option<Block> {
        if depth + 1 > MAX_DEPTH {
            self.diags.error(
                open,
                format!("blocks nested more than {MAX_DEPTH} deep"),
                "at most virtual_server → real_server → checker → url nesting",
            );
            self.at = self.tokens.len();
            return None;
        }
        let before = self.at;
        let statements = self.statements(depth + 1);
        // `statements` returns at a `}` (consumed) or at the end of input.
        let closed = self.at > before
            && self
                .tokens
                .get(self.at - 1)
                .is_some_and(|t| matches!(t.kind, TokenKind::Close));
        if !closed {
            self.diags.error(
                open,
                "this `{` is never closed",
                "a matching `}` before the end of the block",
            );
            return None;
        }
        Some(Block { open, statements })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keepalived::lexer::lex;
    use crate::config::yaml;

    fn parse_text(text: &str) -> (Vec<Statement>, Vec<String>) {
        let yaml_text = format!(
            "k: |\n{}",
            text.lines().map(|l| format!("  {l}\n")).collect::<String>()
        );
        let mut diags = Diags::new("t", &yaml_text);
        let root = yaml::parse(&yaml_text, &mut diags).expect("yaml");
        let yaml::NodeKind::Map(pairs) = root.kind else {
            panic!()
        };
        let yaml::NodeKind::Scalar(s) = &pairs[0].1.kind else {
            panic!()
        };
        let toks = lex(&s.value, &s.origin, &mut diags);
        let st = parse(&s.value, &toks, &mut diags);
        let (errors, _) = diags.finish();
        (st, errors.iter().map(|e| e.headline()).collect())
    }

    #[test]
    fn nested_blocks_and_same_line_braces() {
        let (st, errors) =
            parse_text("HTTP_GET { url { path /x\nstatus_code 200 } connect_port 80 }\nretry 2");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(st.len(), 2);
        let http = st[0].block.as_ref().expect("block");
        assert_eq!(http.statements[0].name(), "url");
        assert_eq!(
            http.statements[0]
                .block
                .as_ref()
                .expect("url block")
                .statements
                .len(),
            2
        );
        assert_eq!(http.statements[1].name(), "connect_port");
        assert_eq!(st[1].name(), "retry");
    }

    #[test]
    fn brace_on_the_next_line_opens_the_block() {
        let (st, errors) = parse_text("TCP_CHECK\n{\n  connect_port 1\n}");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(st[0].block.as_ref().map(|b| b.statements.len()), Some(1));
    }

    #[test]
    fn unclosed_and_extra_braces_are_errors_at_their_place() {
        let (_, errors) = parse_text("TCP_CHECK {\n  connect_port 1\n");
        assert_eq!(
            errors,
            vec![
                "t:2:13: error: this `{` is never closed; expected a matching `}` before the end of the block"
            ]
        );
        let (_, errors) = parse_text("a 1\n}");
        assert_eq!(
            errors,
            vec!["t:3:3: error: `}` without a matching `{`; expected a keyword, or remove the `}`"]
        );
    }
}

//! keepalived's lexical rules, applied to the text of one YAML scalar
//! (`virtual_server_config` or `raw_check`).
//!
//! As keepalived's `read_line`/`decomment`/`alloc_strvec_r` (lib/parser.c) do:
//! - `#` and `!` outside double quotes start a comment running to the end of the line;
//!   `\#` and `\!` outside quotes stand for the character itself;
//! - a `\` ending a line continues the statement on the next line;
//! - `{` and `}` outside double quotes are tokens of their own wherever they appear
//!   (`TCP_CHECK{`, `}}`, `url { path / }`);
//! - words are separated by spaces and tabs; a double-quoted string is one token without its
//!   quotes and with no escapes (single quotes are ordinary characters here);
//! - keywords are case-sensitive (keepalived compares with `strcmp`); only a few values
//!   (e.g. `protocol`) are case-insensitive, which the parser handles.
//!
//! Every token records its value line and character columns, which [`TextOrigin`] maps to
//! alive.yaml's line and column.

use crate::config::diagnostic::{Diags, Pos};
use crate::config::yaml::TextOrigin;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// A bare word.
    Word(String),
    /// A double-quoted string, quotes removed.
    Quoted(String),
    Open,
    Close,
    /// End of a logical line.
    Eol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    /// Position in alive.yaml.
    pub pos: Pos,
    /// Line index within the scalar's value and character range on that line (for the raw
    /// text of `misc_path`, which keepalived re-splits with its own quoting rules).
    pub line: usize,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The text of a word or quoted string; `{`, `}` and end of line have none.
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::Word(s) | TokenKind::Quoted(s) => Some(s),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Word(s) => format!("`{s}`"),
            TokenKind::Quoted(s) => format!("\"{s}\""),
            TokenKind::Open => "`{`".to_string(),
            TokenKind::Close => "`}`".to_string(),
            TokenKind::Eol => "end of line".to_string(),
        }
    }
}

/// Split `text` into tokens. Problems (an unterminated quote) go to `diags`; the rest of
/// that line is dropped so that one mistake gives one error.
pub fn lex(text: &str, origin: &TextOrigin, diags: &mut Diags<'_>) -> Vec<Token> {
    let mut tokens = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    for (line_idx, line) in lines.iter().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let continued = lex_line(&chars, line_idx, origin, diags, &mut tokens);
        if !continued {
            tokens.push(Token {
                kind: TokenKind::Eol,
                pos: origin.pos_of(line_idx, chars.len()),
                line: line_idx,
                start: chars.len(),
                end: chars.len(),
            });
        }
    }
    tokens
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\r'
}

/// Lex one line; returns true when it ends with a continuation backslash.
fn lex_line(
    chars: &[char],
    line: usize,
    origin: &TextOrigin,
    diags: &mut Diags<'_>,
    out: &mut Vec<Token>,
) -> bool {
    // Everything after this index is blank: a backslash there continues the line.
    let last_non_blank = chars.iter().rposition(|&c| !is_blank(c)).unwrap_or(0);
    let rest_blank = |i: usize| i >= last_non_blank;
    let mut i = 0;
    let push = |out: &mut Vec<Token>, kind: TokenKind, start: usize, end: usize| {
        out.push(Token {
            kind,
            pos: origin.pos_of(line, start),
            line,
            start,
            end,
        });
    };
    while i < chars.len() {
        let c = chars[i];
        if is_blank(c) {
            i += 1;
            continue;
        }
        match c {
            '#' | '!' => return false,
            '{' => {
                push(out, TokenKind::Open, i, i + 1);
                i += 1;
            }
            '}' => {
                push(out, TokenKind::Close, i, i + 1);
                i += 1;
            }
            '\\' if rest_blank(i) => return true,
            '"' => {
                let start = i;
                match chars[i + 1..].iter().position(|&c| c == '"') {
                    Some(len) => {
                        let s: String = chars[i + 1..i + 1 + len].iter().collect();
                        i += len + 2;
                        push(out, TokenKind::Quoted(s), start, i);
                    }
                    None => {
                        diags.error(
                            origin.pos_of(line, start),
                            "unterminated double quote",
                            "a closing `\"` on the same line",
                        );
                        // Keep the text as a token so the statement is not reported again
                        // as missing its value.
                        let s: String = chars[i + 1..].iter().collect();
                        push(out, TokenKind::Quoted(s), start, chars.len());
                        return false;
                    }
                }
            }
            _ => {
                let start = i;
                let mut word = String::new();
                while i < chars.len() {
                    let c = chars[i];
                    if is_blank(c) || matches!(c, '"' | '{' | '}' | '#' | '!') {
                        break;
                    }
                    if c == '\\' {
                        match chars.get(i + 1) {
                            Some(&e @ ('#' | '!')) => {
                                word.push(e);
                                i += 2;
                                continue;
                            }
                            Some(&e) if is_blank(e) && !rest_blank(i) => {
                                word.push('\\');
                                i += 1;
                                break;
                            }
                            Some(&e) if !rest_blank(i) => {
                                word.push('\\');
                                word.push(e);
                                i += 2;
                                continue;
                            }
                            // A trailing backslash: the continuation ends this word.
                            _ => break,
                        }
                    }
                    word.push(c);
                    i += 1;
                }
                push(out, TokenKind::Word(word), start, i);
            }
        }
    }
    false
}

/// keepalived's `alloc_strvec_quoted_escaped_common`: split a command line into words the
/// way a shell-less `misc_path` is split. Single and double quotes group (and concatenate
/// with adjacent text); with `escapes`, `\n`, `\t`, `\xHH`, octal ... are interpreted,
/// without them a backslash and the next character are kept as they are.
pub fn split_command(src: &str, escapes: bool) -> Result<Vec<String>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut words = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && is_blank(chars[i]) {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            match quote {
                Some(q) if c == q => {
                    quote = None;
                    i += 1;
                }
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    i += 1;
                }
                None if is_blank(c) => break,
                _ if c == '\\' => {
                    let Some(&next) = chars.get(i + 1) else {
                        return Err("a backslash at the end".to_string());
                    };
                    i += 2;
                    if !escapes {
                        word.push('\\');
                        word.push(next);
                        continue;
                    }
                    match next {
                        'x' if chars.get(i).is_some_and(|c| c.is_ascii_hexdigit()) => {
                            let mut v = 0u32;
                            let mut n = 0;
                            while n < 2 && chars.get(i).is_some_and(|c| c.is_ascii_hexdigit()) {
                                v = v * 16 + chars[i].to_digit(16).unwrap_or(0);
                                i += 1;
                                n += 1;
                            }
                            word.push(char::from_u32(v).unwrap_or('?'));
                        }
                        'c' if i < chars.len() => {
                            let ctl = (chars[i] as u32) & 0x1f;
                            word.push(char::from_u32(ctl).unwrap_or('?'));
                            i += 1;
                        }
                        '0'..='7' => {
                            let mut v = next.to_digit(8).unwrap_or(0);
                            let mut n = 1;
                            while n < 3 && chars.get(i).is_some_and(|c| ('0'..='7').contains(c)) {
                                v = v * 8 + chars[i].to_digit(8).unwrap_or(0);
                                i += 1;
                                n += 1;
                            }
                            word.push(char::from_u32(v & 0xff).unwrap_or('?'));
                        }
                        'a' => word.push('\x07'),
                        'b' => word.push('\x08'),
                        'E' => word.push('\x1b'),
                        'f' => word.push('\x0c'),
                        'n' => word.push('\n'),
                        'r' => word.push('\r'),
                        't' => word.push('\t'),
                        'v' => word.push('\x0b'),
                        other => word.push(other),
                    }
                }
                _ => {
                    word.push(c);
                    i += 1;
                }
            }
        }
        if let Some(q) = quote {
            return Err(format!("a missing closing {q}"));
        }
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    fn lex_plain(text: &str) -> Vec<TokenKind> {
        let yaml_text = format!("k: |\n{}", indent(text));
        let mut diags = Diags::new("t", &yaml_text);
        let root = yaml::parse(&yaml_text, &mut diags).expect("yaml");
        let yaml::NodeKind::Map(pairs) = root.kind else {
            panic!()
        };
        let yaml::NodeKind::Scalar(s) = &pairs[0].1.kind else {
            panic!()
        };
        lex(&s.value, &s.origin, &mut diags)
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    fn indent(text: &str) -> String {
        text.lines().map(|l| format!("  {l}\n")).collect()
    }

    fn w(s: &str) -> TokenKind {
        TokenKind::Word(s.to_string())
    }

    #[test]
    fn braces_are_tokens_even_when_glued() {
        use TokenKind::*;
        assert_eq!(
            lex_plain("TCP_CHECK{connect_port 1936}}"),
            vec![
                w("TCP_CHECK"),
                Open,
                w("connect_port"),
                w("1936"),
                Close,
                Close,
                Eol,
                Eol
            ]
        );
    }

    #[test]
    fn hash_and_bang_comments_end_the_line_outside_quotes() {
        use TokenKind::*;
        assert_eq!(
            lex_plain("a 1 # c\nb \"x # y\" ! z\nc a\\#b"),
            vec![
                w("a"),
                w("1"),
                Eol,
                w("b"),
                Quoted("x # y".into()),
                Eol,
                w("c"),
                w("a#b"),
                Eol,
                Eol
            ]
        );
    }

    #[test]
    fn token_positions_are_file_positions() {
        let yaml_text = "x:\n  k: |\n    a {\n      bb 2\n";
        let mut diags = Diags::new("t", yaml_text);
        let root = yaml::parse(yaml_text, &mut diags).expect("yaml");
        let yaml::NodeKind::Map(p) = root.kind else {
            panic!()
        };
        let yaml::NodeKind::Map(p) = &p[0].1.kind else {
            panic!()
        };
        let yaml::NodeKind::Scalar(s) = &p[0].1.kind else {
            panic!()
        };
        let toks = lex(&s.value, &s.origin, &mut diags);
        assert_eq!(toks[1].pos, Pos::new(3, 7));
        assert_eq!(toks[4].pos, Pos::new(4, 10));
    }

    #[test]
    fn command_split_follows_keepalived_quoting() {
        assert_eq!(
            split_command("/bin/check 'a b' \"c d\"e \\x41", true).unwrap(),
            vec!["/bin/check", "a b", "c de", "A"]
        );
        assert_eq!(
            split_command("\"/bin/x 'q r'\" z", false).unwrap(),
            vec!["/bin/x 'q r'", "z"]
        );
        assert!(split_command("'open", true).is_err());
    }
}

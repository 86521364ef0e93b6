//! Inline model text: the Rust tokens inside `rnn! { ... }` written back
//! as text for the parser, each at its own line and column, with a map
//! from byte ranges of the text to the tokens' spans (so that an error in
//! the model lands on the token that caused it).

use proc_macro2::{Delimiter, Spacing, Span, TokenStream, TokenTree};

/// The text handed to pest, and where each of its tokens came from.
#[derive(Default)]
pub(crate) struct Text {
    /// The model text.
    pub(crate) text: String,
    line: usize,
    column: usize,
    /// The previous token must touch the next one (`-` of `->`, `^` of `^T`).
    glue: bool,
    /// Byte range in `text` and Rust span of every token.
    pub(crate) map: Vec<(usize, usize, Span)>,
}

impl Text {
    /// Appends the tokens of `stream`, groups included, skipping doc
    /// comments.
    pub(crate) fn walk(&mut self, stream: TokenStream) {
        let tokens: Vec<TokenTree> = stream.into_iter().collect();
        let mut rest = &tokens[..];
        while let [token, after @ ..] = rest {
            rest = skip_doc_comment(rest).unwrap_or(after);
            match token {
                _ if rest.len() != after.len() => {}
                TokenTree::Group(group) => {
                    let (open, close) = match group.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::None => ("", ""),
                    };
                    self.push(open, group.span_open(), false);
                    self.walk(group.stream());
                    self.push(close, group.span_close(), false);
                }
                TokenTree::Punct(punct) => {
                    let glue = punct.spacing() == Spacing::Joint || punct.as_char() == '^';
                    self.push(&punct.to_string(), punct.span(), glue);
                }
                token => self.push(&token.to_string(), token.span(), false),
            }
        }
    }

    /// Appends a token at its line and column in the Rust file, so that
    /// rendered snippets show what the user wrote, at the same line:column;
    /// where positions are unknown (before Rust 1.88) or go backwards, one
    /// space separates tokens (none after `glue`).
    fn push(&mut self, piece: &str, span: Span, glue: bool) {
        // Text line `self.line + 1` is Rust line `self.line + 1`.
        let (line, column) = (span.start().line.saturating_sub(1), span.start().column);
        if (line, column) >= (self.line, self.column) {
            if line > self.line {
                self.text += &"\n".repeat(line - self.line);
                self.column = 0;
            }
            self.text += &" ".repeat(column - self.column);
            (self.line, self.column) = (line, column);
        } else if !self.glue {
            self.text.push(' ');
            self.column += 1;
        }
        let start = self.text.len();
        self.map.push((start, start + piece.len(), span));
        self.text.push_str(piece);
        self.column += piece.chars().count();
        self.glue = glue;
    }
}

/// The tokens after a doc comment at the start of `tokens`: `///` and
/// `//!` arrive as `#[doc = ".."]` and `#![doc = ".."]`.
fn skip_doc_comment(tokens: &[TokenTree]) -> Option<&[TokenTree]> {
    let [TokenTree::Punct(hash), rest @ ..] = tokens else {
        return None;
    };
    let rest = match rest {
        [TokenTree::Punct(bang), rest @ ..] if bang.as_char() == '!' => rest,
        rest => rest,
    };
    match rest {
        [TokenTree::Group(doc), rest @ ..]
            if hash.as_char() == '#' && doc.stream().to_string().starts_with("doc") =>
        {
            Some(rest)
        }
        _ => None,
    }
}

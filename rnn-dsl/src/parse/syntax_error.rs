//! Pest errors → diagnostics in the language's own words.
//!
//! Input: the text and the error pest gave for it. Output: one
//! [`Diagnostic`] that says what was expected in the DSL's vocabulary ("a
//! name", "a network statement (...)", never a grammar rule's name), what
//! was found, with the whole offending word underlined and a help line for
//! the common slips.

use std::collections::BTreeSet;
use std::fmt;

use pest::error::{ErrorVariant, InputLocation};

use crate::diag::{suggest, Diagnostic};
use crate::source::Span;

use super::{code_bytes, Rule};

/// Turns a pest error into a diagnostic in the language's own words: what
/// was expected (rules become "a name", "a network statement (...)"), what
/// was found, the whole offending word underlined, and a hint for the
/// common slips: a missing `;`, a keyword used as a name, a misspelt
/// keyword, an unclosed comment or body.
pub(super) fn syntax_error(text: &str, error: &pest::error::Error<Rule>) -> Diagnostic {
    let mut pos = match error.location {
        InputLocation::Pos(pos) => pos,
        InputLocation::Span((start, _)) => start,
    };
    let mut positives: &[Rule] = match &error.variant {
        ErrorVariant::CustomError { message } => {
            let diagnostic =
                Diagnostic::error(found_span(text, pos), "model text is too complex to parse")
                    .with_note(message.clone());
            return diagnostic.with_help("split long expressions with `let` bindings");
        }
        ErrorVariant::ParsingError { positives, .. } => positives,
    };
    let mut expected: BTreeSet<String> = positives
        .iter()
        .filter_map(|rule| rule_words(*rule))
        .collect();
    if let Some(attempts) = error.parse_attempts() {
        let tokens: BTreeSet<String> = attempts
            .expected_tokens()
            .iter()
            .filter_map(|token| token_words(&token.to_string()))
            .collect();
        if tokens.contains("`*/`") {
            return unclosed_comment(text, pos, attempts.max_position);
        }
        // Literal tokens are not rules, so pest's own position can stop
        // short of them: `cell c(x: [I]) h: [H]` fails at the `h` where `->`
        // was expected, not at the `]` before it.
        if attempts.max_position > pos && !tokens.is_empty() {
            pos = attempts.max_position;
            expected = tokens;
            // The rules pest names were tried at the earlier position.
            positives = &[];
        } else if attempts.max_position == pos {
            expected.extend(tokens);
        }
    }
    group_expected(positives, &mut expected);
    let found = Found::at(text, pos);
    let span = found_span(text, pos);
    if expected.contains("`;`") {
        if let Some(diagnostic) = missing_semicolon(text, pos, &found) {
            return diagnostic;
        }
    }
    let mut expected: Vec<String> = expected.into_iter().collect();
    // Closers read best last: "a network statement (...) or `}`".
    expected.sort_by_key(|words| (words == "`}`" || words == "end of file", words.clone()));
    let message = match expected.as_slice() {
        [] => format!("unexpected {found}"),
        [only] => format!("expected {only}, found {found}"),
        [init @ .., last] => format!("expected {} or {last}, found {found}", init.join(", ")),
    };
    let mut diagnostic = Diagnostic::error(span, message).with_label("unexpected here");
    match &found {
        Found::Word(word) if is_keyword(word) && expected.iter().any(|words| words == "a name") => {
            diagnostic = diagnostic.with_help(format!(
                "`{word}` is a keyword and cannot be used as a name"
            ));
        }
        Found::Word(word) => {
            let keywords = expected
                .iter()
                .flat_map(|words| words.split('`').skip(1).step_by(2))
                .filter(|candidate| is_keyword(candidate));
            if let Some(close) = suggest(word, keywords) {
                diagnostic = diagnostic.with_help(format!("did you mean `{close}`?"));
            }
        }
        Found::Char('.')
            if text[..pos].ends_with(|ch: char| ch.is_ascii_digit())
                && expected.iter().any(|words| words == "`]`") =>
        {
            diagnostic = diagnostic.with_help("sizes are whole numbers");
        }
        _ if expected.iter().any(|words| words == "`buckets`") => {
            diagnostic = diagnostic.with_help("give the number of steps, e.g. `unroll static 50;`");
        }
        _ if expected == ["`else`"] => {
            diagnostic = diagnostic
                .with_help("an `if` expression has two branches: `if flag { a } else { b }`");
        }
        Found::Char('*') if text[..pos].trim_end().ends_with('*') => {
            diagnostic =
                diagnostic.with_help("there is no power operator; write the product, e.g. `h * h`");
        }
        _ => {}
    }
    let closes_body = matches!(&found, Found::End)
        || matches!(&found, Found::Word(word) if word == "cell" || word == "network");
    if closes_body && expected.iter().any(|words| words == "`}`") {
        if let Some(open) = unclosed_brace(text, pos) {
            diagnostic = diagnostic
                .with_secondary(open, "this `{` is never closed")
                .with_help("add `}` at the end of the body");
        }
    }
    diagnostic
}

/// What the parser found where it stopped.
enum Found {
    /// A name, keyword or number.
    Word(String),
    /// Any other character.
    Char(char),
    /// The end of the text.
    End,
}

impl Found {
    fn at(text: &str, pos: usize) -> Found {
        let rest = &text[pos..];
        let word: String = rest
            .chars()
            .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
            .collect();
        match rest.chars().next() {
            None => Found::End,
            Some(_) if !word.is_empty() => Found::Word(word),
            Some(ch) => Found::Char(ch),
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Word(word) if is_keyword(word) => write!(f, "keyword `{word}`"),
            Found::Word(word) => write!(f, "`{word}`"),
            Found::Char(ch) if ch.is_control() || ch.is_whitespace() => {
                write!(f, "character {ch:?}")
            }
            Found::Char(ch) => write!(f, "`{ch}`"),
            Found::End => write!(f, "end of file"),
        }
    }
}

/// The span of the word (or the one character) at `pos`.
fn found_span(text: &str, pos: usize) -> Span {
    let rest = &text[pos..];
    let word_len: usize = rest
        .chars()
        .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
        .map(char::len_utf8)
        .sum();
    let len = if word_len > 0 {
        word_len
    } else {
        rest.chars().next().map_or(0, char::len_utf8)
    };
    Span::new(pos, pos + len)
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

/// The language's keywords, as in `keyword` in the grammar.
const KEYWORDS: &[&str] = &[
    "cell", "network", "param", "const", "let", "output", "input", "context", "layer", "unroll",
    "static", "dynamic", "buckets", "by", "if", "else", "true", "false", "inf",
];

/// A statement that runs into the next one: `let z = sigmoid(a)` followed
/// by `let hh = ...` on the next line. Points just after the last token of
/// the unfinished statement, where the `;` belongs, the way rustc does.
fn missing_semicolon(text: &str, pos: usize, found: &Found) -> Option<Diagnostic> {
    let end = end_of_previous_token(text, pos);
    let next_line = text[end..pos].contains('\n');
    let starts_statement = match found {
        Found::Word(word) => {
            matches!(
                word.as_str(),
                "param" | "const" | "let" | "output" | "input" | "context" | "layer" | "unroll"
            )
        }
        Found::Char('}') | Found::End => true,
        Found::Char(_) => false,
    };
    if end == 0 || !(next_line || starts_statement) {
        return None;
    }
    let mut diagnostic =
        Diagnostic::error(Span::new(end, end), format!("expected `;`, found {found}"))
            .with_label("add `;` here")
            .with_note("statements end with `;`");
    // On the same line the caret already sits next to what was found.
    if next_line {
        diagnostic = diagnostic.with_secondary(found_span(text, pos), "unexpected here");
    }
    Some(diagnostic)
}

/// The offset just after the last token before `pos`, skipping whitespace
/// and comments (the language has no strings, so `//` always starts one).
fn end_of_previous_token(text: &str, pos: usize) -> usize {
    let mut before = &text[..pos];
    loop {
        let trimmed = before.trim_end();
        let line_start = trimmed.rfind('\n').map_or(0, |idx| idx + 1);
        if let Some(comment) = trimmed[line_start..].find("//") {
            before = &trimmed[..line_start + comment];
        } else if trimmed.ends_with("*/") {
            match trimmed.rfind("/*") {
                Some(open) => before = &trimmed[..open],
                None => return trimmed.len(),
            }
        } else {
            return trimmed.len();
        }
    }
}

/// A block comment that runs to the end of the text: point at its `/*`.
fn unclosed_comment(text: &str, pos: usize, max_position: usize) -> Diagnostic {
    let open = text[pos..]
        .find("/*")
        .map(|idx| pos + idx)
        .or_else(|| text[..max_position.min(text.len())].rfind("/*"))
        .unwrap_or(pos);
    Diagnostic::error(
        Span::new(open, (open + 2).min(text.len())),
        "block comment is never closed",
    )
    .with_label("opened here")
    .with_help("close it with `*/`")
}

/// The last `{` before `pos` that no `}` closes, outside comments.
pub(super) fn unclosed_brace(text: &str, pos: usize) -> Option<Span> {
    let mut open: Vec<usize> = Vec::new();
    for (idx, byte) in code_bytes(&text.as_bytes()[..pos]) {
        match byte {
            b'{' => open.push(idx),
            b'}' => {
                open.pop();
            }
            _ => {}
        }
    }
    open.last().map(|idx| Span::new(*idx, idx + 1))
}

/// Replaces the members of a statement or expression list by one phrase:
/// "a network statement (`input`, ...)" reads better than four keywords,
/// and a body's statement list can always be closed with `}`.
fn group_expected(positives: &[Rule], expected: &mut BTreeSet<String>) {
    let has_all = |rules: &[Rule]| rules.iter().all(|rule| positives.contains(rule));
    fn replace(expected: &mut BTreeSet<String>, members: &[&str], phrase: &str) {
        for member in members {
            expected.remove(*member);
        }
        expected.insert(phrase.to_owned());
    }
    if has_all(&[
        Rule::kw_input,
        Rule::kw_context,
        Rule::kw_layer,
        Rule::kw_unroll,
        Rule::kw_precision,
    ]) {
        replace(
            expected,
            &["`input`", "`context`", "`layer`", "`unroll`", "`precision`"],
            "a network statement (`input`, `context`, `layer`, `unroll` or `precision`)",
        );
        expected.insert("`}`".to_owned());
    }
    if has_all(&[
        Rule::kw_param,
        Rule::kw_const,
        Rule::kw_let,
        Rule::kw_output,
    ]) {
        replace(
            expected,
            &["`param`", "`const`", "`let`", "`output`", "a name"],
            "a cell statement (`param`, `const`, `let`, `output` or a state update)",
        );
        expected.insert("`}`".to_owned());
    }
    if has_all(&[Rule::ident, Rule::float]) || expected.contains("an expression") {
        replace(
            expected,
            &[
                "a name",
                "a number",
                "`inf`",
                "`if`",
                "`(`",
                "an operator",
                "a function call",
            ],
            "an expression",
        );
    }
    let value = "a value (a number, `inf`, `true` or `false`)";
    if expected.contains(value) {
        replace(
            expected,
            &["`true`", "`false`", "`inf`", "an operator", "a number"],
            value,
        );
    }
    let size = "a size (a number or a size name)";
    if expected.contains(size) {
        replace(expected, &["`(`", "a name", "a whole number"], size);
    }
}

/// A literal token pest tried, in the language's own words; whitespace,
/// comment openers and character ranges are left out.
fn token_words(token: &str) -> Option<String> {
    match token {
        ";" | "," | ":" | "(" | ")" | "[" | "]" | "{" | "}" | "=" | "->" | ".." | "*/" => {
            Some(format!("`{token}`"))
        }
        "+" | "-" | "*" | "/" | "@" | "^T" | "'" => Some("an operator".to_owned()),
        _ if is_keyword(token) => Some(format!("`{token}`")),
        _ => None,
    }
}

/// The rule's name in the language's own words, or `None` for rules a user
/// never needs to hear about.
fn rule_words(rule: Rule) -> Option<String> {
    let words = match rule {
        Rule::EOI => "end of file",
        Rule::ident => "a name",
        Rule::int => "a whole number",
        Rule::float => "a number",
        Rule::cell_def | Rule::kw_cell => "`cell`",
        Rule::network_def | Rule::kw_network => "`network`",
        Rule::typed_name | Rule::cell_inputs => "a name with a shape (`x: [I]`)",
        Rule::cell_states => "state variables (`h: [H]` or `(h: [H], c: [H])`)",
        Rule::shape => "a shape such as `[H, I]`",
        Rule::dim => "a size (a number or a size name)",
        Rule::dim_add | Rule::dim_sub | Rule::dim_mul | Rule::dim_div => "an operator",
        Rule::param_decl | Rule::kw_param => "`param`",
        Rule::per_step | Rule::kw_per | Rule::kw_step => "`per step`",
        Rule::frozen => "`frozen`",
        Rule::param_cond | Rule::if_expr | Rule::kw_if => "`if`",
        Rule::kw_else | Rule::else_dynamic => "`else`",
        Rule::const_decl | Rule::kw_const => "`const`",
        Rule::const_value | Rule::signed_num => "a value (a number, `inf`, `true` or `false`)",
        Rule::let_stmt | Rule::kw_let => "`let`",
        Rule::output_stmt | Rule::kw_output => "`output`",
        Rule::update_stmt => "a state update (`h = ...;`)",
        Rule::expr => "an expression",
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::matmul | Rule::neg => "an operator",
        Rule::transpose => "`^T`",
        Rule::index => "`[`",
        Rule::call => "a function call",
        Rule::input_decl | Rule::kw_input => "`input`",
        Rule::context_decl | Rule::kw_context => "`context`",
        Rule::layer_decl | Rule::kw_layer => "`layer`",
        Rule::layer_arg => "a layer argument (`hidden = 64`)",
        Rule::unroll_decl | Rule::kw_unroll => "`unroll`",
        Rule::precision_decl | Rule::kw_precision => "`precision`",
        Rule::precision_name => "a precision (`f32`, `bf16` or `int8`)",
        Rule::static_n | Rule::static_buckets | Rule::kw_static => "`static`",
        Rule::dynamic | Rule::dynamic_by | Rule::kw_dynamic => "`dynamic`",
        Rule::kw_buckets => "`buckets`",
        Rule::kw_by => "`by`",
        Rule::let_tuple => "`(`",
        Rule::inf => "`inf`",
        Rule::bool_lit => "`true` or `false`",
        _ => return None,
    };
    Some(words.to_owned())
}

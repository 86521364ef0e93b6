//! Parser tests: the tree's shape, and syntax errors in the DSL's words at
//! precise spans.

use super::syntax_error::unclosed_brace;
use super::*;
use crate::ast::{BinOp, CellStmt, ExprKind, UnrollMode};

fn parse_ok(text: &str) -> File {
    let mut diags = Diagnostics::new();
    let file = parse(&mut diags, &SourceFile::new("t.rnn", text));
    match diags.finish() {
        Ok(_) => file,
        Err(errors) => panic!("unexpected errors: {errors:?}"),
    }
}

fn parse_err(text: &str) -> Vec<Diagnostic> {
    let mut diags = Diagnostics::new();
    parse(&mut diags, &SourceFile::new("t.rnn", text));
    diags.finish().expect_err("expected a parse error")
}

/// Parses `marked`, whose expected error span is written `>>>here<<<`,
/// and returns the one error after checking its span.
fn parse_err_at(marked: &str) -> Diagnostic {
    let start = marked.find(">>>").expect("a >>> marker");
    let text = marked.replacen(">>>", "", 1);
    let end = text.find("<<<").expect("a <<< marker");
    let text = text.replacen("<<<", "", 1);
    let mut errors = parse_err(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = errors.remove(0);
    assert_eq!(error.span, Span::new(start, end), "{error:#?}");
    error
}

#[test]
fn keywords_are_whole_words() {
    // Each of these once parsed as a keyword followed by a name.
    let file = parse_ok(
        "cell c(x: [N]) -> (letter: [N], constant: [N], outputs: [N]) {
            letter = x; constant = inflow(x); outputs = iffy + infinity;
        }",
    );
    let names: Vec<&str> = file.cells[0]
        .body
        .iter()
        .map(|stmt| match stmt {
            CellStmt::Update { name, .. } => name.name.as_str(),
            other => panic!("not an update: {other:?}"),
        })
        .collect();
    assert_eq!(names, ["letter", "constant", "outputs"]);
    let error = parse_err_at("network N { >>>inputx<<<: [3]; }");
    assert!(
        error.message.starts_with("expected a network statement"),
        "{}",
        error.message
    );
    assert!(
        error.help.contains(&"did you mean `input`?".to_owned()),
        "{error:?}"
    );
}

#[test]
fn missing_semicolon_points_after_the_statement() {
    let error = parse_err_at("cell c(x: [N]) -> h: [N] {\n  let a = x>>><<<\n  h = a;\n}");
    assert_eq!(error.message, "expected `;`, found `h`");
    assert_eq!(error.label.as_deref(), Some("add `;` here"));
}

#[test]
fn keyword_as_name_says_so() {
    let error = parse_err_at("cell c(x: [N]) -> h: [N] { let >>>output<<< = x; h = x; }");
    assert_eq!(
        error.message,
        "expected `(` or a name, found keyword `output`"
    );
    assert_eq!(
        error.help,
        ["`output` is a keyword and cannot be used as a name"]
    );
}

#[test]
fn missing_literal_token_is_found_where_it_belongs() {
    let error = parse_err_at("cell c(x: [N]) >>>h<<<: [N] { h = x; }");
    assert_eq!(error.message, "expected `->`, found `h`");
}

#[test]
fn unclosed_comment_and_body_point_at_their_opening() {
    let error = parse_err_at("network N { input x: [3]; >>>/*<<< layer l = gru(hidden = 2); }");
    assert_eq!(error.message, "block comment is never closed");
    let error = parse_err_at("cell c(x: [N]) -> h: [N] { h = x;\n>>>network<<< N { }");
    assert!(
        error.message.ends_with("or `}`, found keyword `network`"),
        "{}",
        error.message
    );
    assert_eq!(error.secondary[0].1, "this `{` is never closed");
}

#[test]
fn brackets_in_comments_are_not_counted() {
    let text = "a { // }\n b /* } { */ { c } /* ( [";
    let code: String = code_bytes(text.as_bytes())
        .map(|(_, byte)| byte as char)
        .collect();
    assert_eq!(code, "a { \n b  { c } ");
    let positions: Vec<usize> = code_bytes(text.as_bytes())
        .filter(|(_, byte)| *byte == b'{')
        .map(|(idx, _)| idx)
        .collect();
    assert_eq!(positions, [2, 22]);
    // The `{` at 2 is still open at the end; the one at 22 is closed.
    assert_eq!(unclosed_brace(text, text.len()), Some(Span::new(2, 3)));
    let deep = format!("/* {} */ x", "(".repeat(MAX_NESTING + 5));
    assert_eq!(find_deep_nesting(&deep), None);
}

#[test]
fn no_grammar_rule_names_leak() {
    for text in [
        "network",
        "network N { unroll static; }",
        "network N { unroll static buckets [1, ] else; }",
        "cell c(x: [N]) -> h: [N] { h = x ** 2; }",
        "cell c(x: [N]) -> h: [N] { param p: [N] if; }",
        "cell c(x: [N]) -> h: [N] { const k = ; }",
        "cell c(x: [N]) -> h: [N] { let (, a) = x; }",
        "cell c(x: [N.5]) -> h: [N] { }",
        "network N { layer l = gru(hidden = ); }",
        "cell c(x: [N]) -> h: [N] { h = if f { x } { x }; }",
    ] {
        for error in parse_err(text) {
            let words = format!("{} {:?} {:?}", error.message, error.label, error.help);
            assert!(
                !words.contains('_') || words.contains("`_`"),
                "{text}: {words}"
            );
            assert!(
                error.message.starts_with(char::is_lowercase),
                "{text}: {words}"
            );
        }
    }
}

#[test]
fn deep_expressions_are_refused() {
    let text = format!(
        "cell c(x: [N]) -> h: [N] {{ h = x{}; }}",
        " * x".repeat(MAX_EXPR_DEPTH + 1)
    );
    let errors = parse_err(&text);
    assert_eq!(errors[0].message, "expression is nested too deeply");
    let text = format!(
        "cell c(x: [N]) -> h: [N] {{ h = x{}; }}",
        " * x".repeat(MAX_EXPR_DEPTH)
    );
    parse_ok(&text);
}

#[test]
fn precedence_matmul_binds_tighter_than_mul() {
    let file = parse_ok("cell c(x: [N]) -> h: [N] { h = a * b @ x + c; }");
    let CellStmt::Update { value, .. } = &file.cells[0].body[0] else {
        panic!("expected an update");
    };
    let ExprKind::Binary(lhs, BinOp::Add, _) = &value.kind else {
        panic!("top is not +: {value:?}");
    };
    let ExprKind::Binary(_, BinOp::Mul, rhs) = &lhs.kind else {
        panic!("left of + is not *");
    };
    assert!(matches!(rhs.kind, ExprKind::Binary(_, BinOp::MatMul, _)));
}

#[test]
fn parses_networks_and_modes() {
    let file = parse_ok(
        "network N { input x: [3]; context y: [4]; layer l = lstm(hidden = 8, layers = 2, bidirectional); unroll static buckets [1, 2] else dynamic; }",
    );
    let network = &file.networks[0];
    assert_eq!(network.layers[0].args.len(), 3);
    assert_eq!(
        network.unrolls[0].mode,
        UnrollMode::Buckets {
            lengths: vec![1, 2],
            dynamic_fallback: true
        }
    );
}

#[test]
fn missing_semicolon_is_explained() {
    let errors = parse_err("cell c(x: [N]) -> h: [N] {\n  let a = x\n  h = a;\n}");
    let message = &errors[0].message;
    assert!(message.contains("`;`"), "{message}");
}

#[test]
fn keyword_is_not_a_name() {
    let errors = parse_err("cell c(x: [N]) -> h: [N] { let if = x; h = x; }");
    assert_eq!(errors.len(), 1);
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let text = format!(
        "cell c(x: [N]) -> h: [N] {{ h = {}x{}; }}",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    let errors = parse_err(&text);
    assert!(errors[0].message.contains("nested too deeply"));
}

#[test]
fn long_chains_are_bounded() {
    let text = format!(
        "cell c(x: [N]) -> h: [N] {{ h = x{}; }}",
        " + x".repeat(10_000)
    );
    let errors = parse_err(&text);
    assert!(errors[0].message.contains("too large"), "{:?}", errors[0]);
    let text = format!(
        "cell c(x: [N]) -> h: [N] {{ h = {}x; }}",
        "-".repeat(10_000)
    );
    let errors = parse_err(&text);
    assert!(errors[0].message.contains("too large"), "{:?}", errors[0]);
}

/// `precision` starts a network statement and is a name everywhere else
/// (models written before it was a statement keep working).
#[test]
fn precision_is_a_statement_and_still_a_name() {
    let file = parse_ok(
        "cell c(x: [2]) -> precision: [2] { param precision: [2]; precision = x * precision; }
         network N { input precision: [2]; layer precision = c(); unroll dynamic; precision int8; }",
    );
    let names: Vec<&str> = file.networks[0]
        .precisions
        .iter()
        .map(|name| name.name.as_str())
        .collect();
    assert_eq!(names, ["int8"]);
    assert_eq!(file.networks[0].inputs[0].name.name, "precision");
    let error = parse_err_at("network N { input x: [2]; precision>>>;<<< }");
    assert!(error.message.contains("a precision"), "{error:#?}");
}

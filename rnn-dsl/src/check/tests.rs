use super::*;
use crate::diag::Diagnostic;
use crate::source::Span;

fn check_text(text: &str) -> Result<Model, Vec<Diagnostic>> {
    let source = SourceFile::new("t.rnn", text);
    let mut diags = Diagnostics::new();
    let file = parse::parse(&mut diags, &source);
    let model = check(&mut diags, &file);
    diags.finish().map(|_| model)
}

#[test]
fn prelude_checks() {
    assert!(prelude_cells().len() >= 4);
}

#[test]
fn lstm_network_instantiates_with_inferred_sizes() {
    let model = check_text("network N { input x: [7]; layer rnn = lstm(hidden = 10, layers = 2, bidirectional); unroll dynamic; }")
        .expect("checks");
    let layer = &model.networks[0].layers[0];
    assert_eq!(layer.stack.len(), 2);
    assert_eq!(layer.stack[0].output_size, 10);
    let cell = &model.cells[layer.cell];
    let input_size = cell.sizes.iter().position(|name| name == "I").unwrap();
    assert_eq!(layer.stack[0].sizes[input_size], 7);
    assert_eq!(layer.stack[1].sizes[input_size], 20);
}

/// Checks `marked`, whose expected error span is written `>>>here<<<`,
/// and returns every error after checking that the first one is there.
fn check_err_at(marked: &str) -> Vec<Diagnostic> {
    let start = marked.find(">>>").expect("a >>> marker");
    let text = marked.replacen(">>>", "", 1);
    let end = text.find("<<<").expect("a <<< marker");
    let text = text.replacen("<<<", "", 1);
    let errors: Vec<Diagnostic> = check_text(&text)
        .expect_err("the model is rejected")
        .into_iter()
        .filter(Diagnostic::is_error)
        .collect();
    assert_eq!(errors[0].span, Span::new(start, end), "{errors:#?}");
    errors
}

const NET: &str = "network N { input x: [4]; layer l = c(hidden = 3); unroll dynamic; }";

#[test]
fn failed_update_is_not_also_never_updated() {
    let errors = check_err_at(&format!(
        "cell c(x: [H]) -> h: [H] {{ h = >>>sigmod<<<(x); }} {NET}"
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].message, "unknown function `sigmod`");
}

#[test]
fn failed_let_is_not_also_unknown() {
    let errors = check_err_at(&format!(
        "cell c(x: [H]) -> h: [H] {{ let z = >>>tahn<<<(x); h = z * z; }} {NET}"
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

#[test]
fn chunk_count_mismatch_is_one_error() {
    let errors = check_err_at(&format!(
        "cell c(x: [H]) -> h: [H] {{ param w: [2*H, H]; let (a, b) = chunk(w @ x, >>>3<<<); h = a * b; }} {NET}"
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        errors[0].message,
        "`chunk` splits into 3 parts, but 2 names are bound"
    );
}

#[test]
fn let_of_a_state_is_explained() {
    let errors = check_err_at(&format!(
        "cell c(x: [H]) -> h: [H] {{ let >>>h<<< = tanh(x); }} {NET}"
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].help[0].contains("without `let`"), "{errors:#?}");
}

#[test]
fn updated_twice_points_at_the_second() {
    let errors = check_err_at(&format!(
        "cell c(x: [H]) -> h: [H] {{ h = x; >>>h<<< = 2 * x; }} {NET}"
    ));
    assert_eq!(errors[0].message, "state `h` is updated twice");
}

#[test]
fn no_unused_warnings_in_a_cell_with_errors() {
    let diagnostics = check_text(&format!(
        "cell c(x: [H]) -> h: [H] {{ param w: [H, H]; h = clip(w @ x, 1); }} {NET}"
    ))
    .expect_err("the model is rejected");
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
}

#[test]
fn rejected_input_is_not_also_unbound() {
    let errors = check_err_at(
        "network N { input x: [>>>I<<<]; layer l = gru(hidden = 3); unroll dynamic; }",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

#[test]
fn size_mismatch_names_both_sides() {
    let errors = check_err_at(
        "cell c(x: [16]) -> h: [H] { param w: [H, 16]; h = w @ x; }
         network N { input x: [32]; layer l = >>>c<<<(hidden = 3); unroll dynamic; }",
    );
    assert_eq!(
        errors[0].message,
        "size mismatch in layer `l`: network input `x` has size 32, but input `x` of cell `c` is [16]"
    );
}

#[test]
fn cannot_infer_suggests_hidden() {
    let errors = check_err_at("network N { input x: [4]; layer l = >>>gru<<<(); unroll dynamic; }");
    assert_eq!(errors[0].help, ["pass it: `gru(hidden = ...)`"]);
}

#[test]
fn constant_sizes_are_checked_at_the_cell() {
    let errors = check_err_at(&format!(
        "cell c(x: [H]) -> h: [H] {{ param w: [H, >>>2 - 2<<<]; h = x; }} {NET}"
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        errors[0].message,
        "size must be a whole number from 1 to 16777216, found 0"
    );
}

#[test]
fn keyword_prefixed_names_check() {
    check_text(
        "cell c(x: [H]) -> (letter: [H], constant: [H]) {
            let inflow = x; let iffy = inflow;
            letter = iffy; constant = letter;
        }
        network N { input x: [4]; layer l = c(hidden = 4); unroll dynamic; }",
    )
    .expect("checks");
}

#[test]
fn lstm_with_proj_size_is_the_projected_lstm() {
    let model = check_text("network N { input x: [7]; layer l = lstm(hidden = 10, proj_size = 4, layers = 2, bidirectional); unroll dynamic; }")
        .expect("checks");
    let layer = &model.networks[0].layers[0];
    let cell = &model.cells[layer.cell];
    assert_eq!(cell.name, "lstm_proj");
    let size = |name: &str| cell.sizes.iter().position(|size| size == name).unwrap();
    for (stack_idx, input_size) in [(0, 7), (1, 8)] {
        let instance = &layer.stack[stack_idx];
        assert_eq!(instance.sizes[size("H")], 10);
        assert_eq!(instance.sizes[size("proj_size")], 4);
        assert_eq!(instance.sizes[size("I")], input_size);
        assert_eq!(instance.output_size, 4);
    }
    // Without `proj_size`, `lstm` is the plain LSTM.
    let model =
        check_text("network N { input x: [7]; layer l = lstm(hidden = 10); unroll dynamic; }")
            .expect("checks");
    assert_eq!(model.cells[model.networks[0].layers[0].cell].name, "lstm");
}

#[test]
fn proj_size_zero_says_to_leave_it_out() {
    let errors = check_err_at(
        "network N { input x: [4]; layer l = lstm(hidden = 8, proj_size = >>>0<<<); unroll dynamic; }",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].help[0].contains("leave `proj_size` out"),
        "{errors:#?}"
    );
}

#[test]
fn proj_size_not_smaller_than_hidden_points_at_both() {
    let text = "network N { input x: [4]; layer l = lstm(hidden = 8, proj_size = >>>9<<<); unroll dynamic; }";
    let errors = check_err_at(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        errors[0].message,
        "`proj_size` must be smaller than the hidden size 8, found 9"
    );
    let hidden = text
        .replace(">>>", "")
        .replace("<<<", "")
        .find("8")
        .unwrap();
    assert_eq!(errors[0].secondary[0].0, Span::new(hidden, hidden + 1));
    // `H = 8` is the same size, and `proj_size` equal to it is refused too.
    let errors = check_err_at(
        "network N { input x: [4]; layer l = lstm(H = 8, proj_size = >>>8<<<); unroll dynamic; }",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

#[test]
fn proj_size_of_another_cell_names_lstm() {
    let errors = check_err_at(
        "network N { input x: [4]; layer l = gru(hidden = 8, >>>proj_size<<< = 2); unroll dynamic; }",
    );
    assert_eq!(errors[0].message, "cell `gru` has no argument `proj_size`");
    assert!(errors[0].help[0].contains("only `lstm`"), "{errors:#?}");
}

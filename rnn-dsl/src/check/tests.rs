use super::*;
use crate::diag::Diagnostic;

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

//! Generated training code: `forward_train` and `backward` against the
//! interpreter's gradients, in every unroll mode.

rnn_macros::rnn! {
    gradients = true;
    network Tagger { input x: [3]; layer l = lstm(hidden = 4); unroll dynamic; }
}

#[test]
fn lstm_dynamic_compiles() {
    let model = Tagger::random(0);
    let x = rnn_runtime::ndarray::Array3::<f32>::zeros((2, 5, 3));
    let (out, tape) = model
        .forward_train(x.view(), Some(&[5, 3]), None)
        .expect("runs");
    let grads = model.backward(&tape, out.y.view(), None).expect("runs");
    assert_eq!(grads.params.len(), 4);
}

//! Truncated BPTT: windows of a generated model against PyTorch stepping
//! an LSTM cell with the state detached at each boundary, and a window
//! that covers the batch against full BPTT.

use ndarray::{s, Array3, ArrayD};
use rnn_runtime::TensorMap;
use rnn_train::{tbptt, RnnError};

mod common;
use common::{reference, tensor};

rnn_macros::rnn! {
    gradients = true;
    network Stream { input x: [2]; layer l = lstm(hidden = 3); unroll dynamic; }
}

/// Each window's parameter gradients of `sum(y * dy)` over its steps.
fn window_grads(
    model: &Stream,
    x: &Array3<f32>,
    dy: &Array3<f32>,
    lengths: &[usize],
    steps: usize,
) -> Vec<Vec<ArrayD<f32>>> {
    let mut state = model.initial_state(x.dim().0);
    let mut grads = Vec::new();
    for window in tbptt::windows(x.view(), Some(lengths), steps).expect("windows") {
        let (out, tape) = model
            .forward_train(window.x, Some(&window.lengths), Some(&state))
            .expect("forward runs");
        let dy = dy.slice(s![.., window.steps(), ..]);
        grads.push(
            model
                .backward(&tape, dy, None)
                .expect("backward runs")
                .params,
        );
        model.recycle(tape);
        state = out.into_state();
    }
    grads
}

#[test]
fn windows_equal_pytorch_with_the_state_detached_at_each_boundary() {
    let reference = reference();
    let case = &reference["tbptt"];
    let mut weights = TensorMap::new();
    for (name, value) in case["weights"].as_object().expect("weights") {
        weights.insert_f32(name.as_str(), tensor(value));
    }
    let model = Stream::from_weights(&weights).expect("PyTorch's weights load");
    let x: Array3<f32> = tensor(&case["x"]).into_dimensionality().expect("[B, T, I]");
    let dy: Array3<f32> = tensor(&case["dy"])
        .into_dimensionality()
        .expect("[B, T, H]");
    let lengths: Vec<usize> = case["lengths"]
        .as_array()
        .expect("lengths")
        .iter()
        .map(|n| n.as_u64().expect("length") as usize)
        .collect();
    let steps = case["window"].as_u64().expect("window") as usize;
    let ours = window_grads(&model, &x, &dy, &lengths, steps);
    let theirs = case["grads"].as_array().expect("windows");
    assert_eq!(ours.len(), theirs.len(), "windows of {steps} steps in 7");
    let mut worst = 0.0_f32;
    for (w, (ours, theirs)) in ours.iter().zip(theirs).enumerate() {
        for (ours, theirs) in ours.iter().zip(theirs.as_array().expect("grads")) {
            let theirs = tensor(theirs);
            assert_eq!(ours.shape(), theirs.shape());
            for (a, b) in ours.iter().zip(&theirs) {
                let error = (a - b).abs() / (1.0 + b.abs());
                assert!(error < 1e-5, "window {w}: {a} vs {b}");
                worst = worst.max(error);
            }
        }
    }
    println!(
        "{} windows of {steps} steps: largest gradient error {worst:.2e}",
        ours.len()
    );
}

#[test]
fn a_window_that_covers_the_batch_is_full_bptt() {
    let model = Stream::random(2);
    let mut rng = rnn_runtime::init::SplitMix64::new(3);
    let x = Array3::from_shape_simple_fn((3, 6, 2), || rng.uniform(-1.0, 1.0));
    let dy = Array3::from_shape_simple_fn((3, 6, 3), || rng.uniform(-1.0, 1.0));
    let lengths = [6, 2, 0];
    let (_, tape) = model
        .forward_train(x.view(), Some(&lengths), None)
        .expect("forward runs");
    let full = model
        .backward(&tape, dy.view(), None)
        .expect("backward runs")
        .params;
    for steps in [6, 100] {
        let windows = window_grads(&model, &x, &dy, &lengths, steps);
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0], full, "one window of {steps} steps");
    }
}

#[test]
fn windows_count_each_sequences_steps_and_refuse_zero_steps() {
    let x = Array3::<f32>::zeros((2, 7, 1));
    let windows = tbptt::windows(x.view(), Some(&[7, 4]), 3).expect("windows");
    let lengths: Vec<Vec<usize>> = windows.iter().map(|w| w.lengths.clone()).collect();
    assert_eq!(lengths, [vec![3, 3], vec![3, 1], vec![1, 0]]);
    assert_eq!(windows[2].steps(), 6..7);
    let error = tbptt::windows(x.view(), None, 0).expect_err("zero steps");
    assert!(
        matches!(&error, RnnError::InvalidValue { tensor, .. } if tensor == "steps"),
        "{error}"
    );
}

//! Truncated BPTT: windows (k1 = k2) and updates with k2 < k1 of a
//! generated model against PyTorch stepping an LSTM cell with the state
//! detached at each boundary, an update that covers the batch against full
//! BPTT, how parts are cut and counted, resetting rows of a state, and what
//! bad options get.

use ndarray::{s, Array3, ArrayD, Axis};
use rnn_runtime::TensorMap;
use rnn_train::optim::{Optimizer, Sgd};
use rnn_train::tbptt::{self, Tbptt};
use rnn_train::{loss, RnnError};

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

/// A batch of 6 steps (lengths 6, 2, 0), its output gradient, and the
/// parameters' gradients of full BPTT over it.
struct FullBptt {
    model: Stream,
    x: Array3<f32>,
    dy: Array3<f32>,
    lengths: [usize; 3],
    full: Vec<ArrayD<f32>>,
}

fn full_bptt_case() -> FullBptt {
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
    FullBptt {
        model,
        x,
        dy,
        lengths,
        full,
    }
}

#[test]
fn a_window_that_covers_the_batch_is_full_bptt() {
    let FullBptt {
        model,
        x,
        dy,
        lengths,
        full,
    } = full_bptt_case();
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

/// Each update's parameter gradients of `sum(y * dy)` over its train
/// steps, the warm steps run with `forward`.
fn update_grads(
    model: &Stream,
    x: &Array3<f32>,
    dy: &Array3<f32>,
    lengths: &[usize],
    tbptt: Tbptt,
) -> Vec<Vec<ArrayD<f32>>> {
    let mut state = model.initial_state(x.dim().0);
    let mut grads = Vec::new();
    for update in tbptt.updates(x.view(), Some(lengths)).expect("updates") {
        if let Some(warm) = &update.warm {
            state = model
                .forward(warm.x, Some(&warm.lengths), Some(&state))
                .expect("forward runs")
                .into_state();
        }
        let train = &update.train;
        let (out, tape) = model
            .forward_train(train.x, Some(&train.lengths), Some(&state))
            .expect("forward runs");
        let dy = dy.slice(s![.., train.steps(), ..]);
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

/// The largest of `|a − b| / (1 + |b|)` over two tensors of one shape.
fn relative_error(ours: &ArrayD<f32>, theirs: &ArrayD<f32>) -> f32 {
    assert_eq!(ours.shape(), theirs.shape());
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
        .fold(0.0, f32::max)
}

#[test]
fn updates_with_k2_below_k1_equal_pytorch_warming_up_without_gradient() {
    let reference = reference();
    let case = &reference["tbptt_k2"];
    let mut weights = TensorMap::new();
    for (name, value) in case["weights"].as_object().expect("weights") {
        weights.insert_f32(name.as_str(), tensor(value));
    }
    let mut model = Stream::from_weights(&weights).expect("PyTorch's weights load");
    let x: Array3<f32> = tensor(&case["x"]).into_dimensionality().expect("[B, T, I]");
    let target: Array3<f32> = tensor(&case["target"])
        .into_dimensionality()
        .expect("[B, T, H]");
    let lengths: Vec<usize> = case["lengths"]
        .as_array()
        .expect("lengths")
        .iter()
        .map(|n| n.as_u64().expect("length") as usize)
        .collect();
    let number = |name: &str| case[name].as_u64().expect(name) as usize;
    let tbptt = Tbptt::new(number("k1"), number("k2")).expect("k2 ≤ k1");
    let mut sgd = Sgd::new(case["lr"].as_f64().expect("lr"));
    let theirs = case["updates"].as_array().expect("updates");
    let updates = tbptt.updates(x.view(), Some(&lengths)).expect("updates");
    assert_eq!(
        updates.len(),
        theirs.len(),
        "updates of {tbptt:?} in 9 steps"
    );

    let mut state = model.initial_state(x.dim().0);
    let (mut loss_error, mut grad_error, mut state_error) = (0.0_f32, 0.0_f32, 0.0_f32);
    for (u, (update, theirs)) in updates.iter().zip(theirs).enumerate() {
        let range = |name: &str| {
            let bounds = theirs[name].as_array().expect(name);
            let bound = |i: usize| bounds[i].as_u64().expect("step") as usize;
            bound(0)..bound(1)
        };
        let warm = update
            .warm
            .as_ref()
            .map_or(update.train.start..update.train.start, |warm| warm.steps());
        assert_eq!(
            (warm, update.train.steps()),
            (range("warm"), range("train")),
            "update {u}"
        );
        if let Some(warm) = &update.warm {
            state = model
                .forward(warm.x, Some(&warm.lengths), Some(&state))
                .expect("forward runs")
                .into_state();
        }
        let train = &update.train;
        let (out, tape) = model
            .forward_train(train.x, Some(&train.lengths), Some(&state))
            .expect("forward runs");
        let loss = loss::mse(
            out.y.view(),
            target.slice(s![.., train.steps(), ..]),
            Some(&train.lengths),
        )
        .expect("loss");
        let grads = model
            .backward(&tape, loss.grad.view(), None)
            .expect("backward runs");
        model.recycle(tape);
        sgd.step(&mut model, &grads.params).expect("the step runs");
        state = out.into_state();

        let their_loss = theirs["loss"].as_f64().expect("loss") as f32;
        loss_error = loss_error.max((loss.value - their_loss).abs() / (1.0 + their_loss.abs()));
        for (ours, theirs) in grads
            .params
            .iter()
            .zip(theirs["grads"].as_array().expect("grads"))
        {
            grad_error = grad_error.max(relative_error(ours, &tensor(theirs)));
        }
        for (ours, name) in [(&state.h, "h"), (&state.c, "c")] {
            let ours = ours.index_axis(Axis(0), 0).to_owned().into_dyn();
            state_error = state_error.max(relative_error(&ours, &tensor(&theirs[name])));
        }
        assert!(
            loss_error < 1e-6,
            "update {u}: loss {} vs {their_loss}",
            loss.value
        );
        assert!(
            grad_error < 1e-5,
            "update {u}: gradient error {grad_error:.2e}"
        );
        assert!(
            state_error < 1e-6,
            "update {u}: state error {state_error:.2e}"
        );
    }
    println!(
        "{} updates of {tbptt:?} with SGD: largest error of the loss {loss_error:.2e}, \
         of a gradient {grad_error:.2e}, of the state {state_error:.2e}",
        updates.len()
    );
}

#[test]
fn an_update_with_k2_equal_to_k1_that_covers_the_batch_is_full_bptt() {
    let FullBptt {
        model,
        x,
        dy,
        lengths,
        full,
    } = full_bptt_case();
    for k in [6, 100] {
        let tbptt = Tbptt::new(k, k).expect("k1 = k2");
        let updates = update_grads(&model, &x, &dy, &lengths, tbptt);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0], full, "one update of {k} steps");
    }
    // With k2 < k1 the warm steps take no part: the one update's gradient
    // is that of its last k2 steps from the state the first k1 − k2 end in.
    let warm = model
        .forward(x.slice(s![.., ..4, ..]), Some(&[4, 2, 0]), None)
        .expect("forward runs")
        .into_state();
    let (_, tape) = model
        .forward_train(x.slice(s![.., 4.., ..]), Some(&[2, 0, 0]), Some(&warm))
        .expect("forward runs");
    let last_two = model
        .backward(&tape, dy.slice(s![.., 4.., ..]), None)
        .expect("backward runs")
        .params;
    let tbptt = Tbptt::new(6, 2).expect("k2 < k1");
    assert_eq!(update_grads(&model, &x, &dy, &lengths, tbptt), [last_two]);
}

#[test]
fn updates_split_each_into_warm_and_train_steps_and_count_each_sequences_steps() {
    let x = Array3::<f32>::zeros((2, 7, 1));
    let updates = Tbptt::new(3, 2)
        .expect("k2 < k1")
        .updates(x.view(), Some(&[7, 4]))
        .expect("updates");
    let parts: Vec<_> = updates
        .iter()
        .map(|update| {
            let warm = update.warm.as_ref().map(|w| (w.steps(), w.lengths.clone()));
            (
                update.steps(),
                warm,
                update.train.steps(),
                update.train.lengths.clone(),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            (0..3, Some((0..1, vec![1, 1])), 1..3, vec![2, 2]),
            (3..6, Some((3..4, vec![1, 1])), 4..6, vec![2, 0]),
            (6..7, None, 6..7, vec![1, 0]),
        ]
    );
    // k2 = k1 is `windows`: no warm steps, the same windows.
    let updates = Tbptt::new(3, 3)
        .expect("k2 = k1")
        .updates(x.view(), Some(&[7, 4]))
        .expect("updates");
    let windows = tbptt::windows(x.view(), Some(&[7, 4]), 3).expect("windows");
    assert_eq!(updates.len(), windows.len());
    for (update, window) in updates.iter().zip(&windows) {
        assert!(update.warm.is_none());
        assert_eq!(update.train.steps(), window.steps());
        assert_eq!(update.train.lengths, window.lengths);
    }
    let error = Tbptt::new(3, 2)
        .expect("k2 < k1")
        .updates(x.view(), Some(&[7, 8]))
        .expect_err("a length above T");
    assert!(
        matches!(&error, RnnError::InvalidValue { tensor, .. } if tensor == "lengths"),
        "{error}"
    );
}

#[test]
fn a_tbptt_option_refuses_zero_steps_and_more_steps_back_than_forward() {
    for (k1, k2, name, value) in [
        (0, 0, "k1", "0"),
        (0, 1, "k1", "0"),
        (3, 0, "k2", "0"),
        (3, 4, "k2", "4"),
    ] {
        let error = Tbptt::new(k1, k2).expect_err("a bad option");
        assert!(
            matches!(&error, RnnError::InvalidValue { tensor, reason }
                if tensor == name && reason.ends_with(&format!("found {value}"))),
            "k1 = {k1}, k2 = {k2}: {error}"
        );
    }
    assert_eq!(
        Tbptt::new(3, 4).expect_err("k2 > k1").to_string(),
        "tensor `k2`: the steps back must be between 1 and k1 = 3, found 4"
    );
    let tbptt = Tbptt::new(3, 1).expect("k2 < k1");
    assert_eq!((tbptt.k1(), tbptt.k2()), (3, 1));
}

#[test]
fn a_reset_row_starts_its_next_update_as_a_new_sequence() {
    let model = Stream::random(4);
    let mut rng = rnn_runtime::init::SplitMix64::new(5);
    let x = Array3::from_shape_simple_fn((3, 8, 2), || rng.uniform(-1.0, 1.0));
    let mut state = model
        .forward(x.slice(s![.., ..4, ..]), None, None)
        .expect("forward runs")
        .into_state();
    let carried = state.clone();
    let starts = [true, false, true];
    tbptt::reset_rows(&mut state.h, &starts).expect("one value per row");
    tbptt::reset_rows(&mut state.c, &starts).expect("one value per row");
    for (b, &start) in starts.iter().enumerate() {
        let expected = if start {
            model.initial_state(3)
        } else {
            carried.clone()
        };
        assert_eq!(
            state.h.index_axis(Axis(1), b),
            expected.h.index_axis(Axis(1), b)
        );
        assert_eq!(
            state.c.index_axis(Axis(1), b),
            expected.c.index_axis(Axis(1), b)
        );
    }
    // A reset row's next update is that of its new sequence alone, from
    // the zero state; the others carry on.
    let next = x.slice(s![.., 4.., ..]);
    let (out, _) = model
        .forward_train(next, None, Some(&state))
        .expect("forward runs");
    let fresh = model.forward(next, None, None).expect("forward runs");
    let carried_on = model
        .forward(next, None, Some(&carried))
        .expect("forward runs");
    for (b, &start) in starts.iter().enumerate() {
        let expected = if start { &fresh.y } else { &carried_on.y };
        let error = relative_error(
            &out.y.index_axis(Axis(0), b).to_owned().into_dyn(),
            &expected.index_axis(Axis(0), b).to_owned().into_dyn(),
        );
        assert!(error < 1e-6, "row {b}: {error:.2e}");
    }
    let error = tbptt::reset_rows(&mut state.h, &[true]).expect_err("one value for three rows");
    assert!(
        matches!(&error, RnnError::ShapeMismatch { tensor, expected, found }
            if tensor == "reset" && expected == &[3] && found == &[1]),
        "{error}"
    );
}

//! The generated training API: `forward_train`, `backward`, the gradient
//! and tape types, parameters by name, saving, and what bad input gets.
//! (Gradient values against the interpreter and PyTorch are checked in
//! `equivalence.rs` and `codegen.rs`.)

use ndarray::{Array3, ArrayD};
use rnn_runtime::init::SplitMix64;
use rnn_runtime::{RnnError, Threads};

rnn_macros::rnn! {
    gradients = true;
    network Tagger { input x: [3]; layer l = lstm(hidden = 4, layers = 2, bidirectional); unroll dynamic; }
    network Small { input x: [2]; context ctx: [3]; layer g = gru(hidden = 3); unroll static 5; }
    network Wide { input x: [64]; layer l = lstm(hidden = 128); unroll dynamic; }
}

fn random(shape: (usize, usize, usize), seed: u64) -> Array3<f32> {
    let mut rng = SplitMix64::new(seed);
    Array3::from_shape_simple_fn(shape, || rng.uniform(-1.0, 1.0))
}

/// Forward and backward of `sum(y * dy)` on `x` with `lengths`.
fn gradients(model: &Tagger, x: &Array3<f32>, lengths: &[usize], dy: &Array3<f32>) -> TaggerGrads {
    let (_, tape) = model
        .forward_train(x.view(), Some(lengths), None)
        .expect("forward runs");
    let grads = model
        .backward(&tape, dy.view(), None)
        .expect("backward runs");
    model.recycle(tape);
    grads
}

#[test]
fn gradients_are_named_as_pytorch_names_the_parameters() {
    let model = Tagger::random(1);
    let x = random((2, 4, 3), 2);
    let dy = random((2, 4, 8), 3);
    let grads = gradients(&model, &x, &[4, 2], &dy);
    let names: Vec<&str> = grads.named().iter().map(|(name, _)| *name).collect();
    // The cell's parameter order (the model's weight list), layer by layer and direction.
    assert_eq!(
        &names[..4],
        ["weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0"]
    );
    assert!(names.contains(&"weight_ih_l1_reverse"), "{names:?}");
    assert_eq!(&names[names.len() - 3..], ["x", "h0", "c0"]);
    for ((name, gradient), (param_name, param)) in grads.named().iter().zip(model.params()) {
        assert_eq!(*name, param_name);
        assert_eq!(gradient.shape(), param.shape(), "{name}");
    }
}

#[test]
fn padded_steps_get_exactly_zero_input_gradient() {
    let model = Tagger::random(4);
    let x = random((3, 5, 3), 5);
    let dy = random((3, 5, 8), 6);
    let lengths = [5, 0, 2];
    let grads = gradients(&model, &x, &lengths, &dy);
    let dx = &grads.inputs[0];
    for (b, len) in lengths.iter().enumerate() {
        for t in *len..5 {
            for i in 0..3 {
                assert_eq!(dx[[b, t, i]], 0.0, "dx[{b}, {t}, {i}]");
            }
        }
    }
    // A sequence of length 0 passes its final-state gradient through: zero here.
    assert!(grads
        .initial_state
        .h
        .index_axis(ndarray::Axis(1), 1)
        .iter()
        .all(|v| *v == 0.0));
}

/// A sequence's own gradients (its inputs', its initial state's) do not depend on where it sits
/// in the batch, bit for bit; the weights' (sums over the batch, in another order) agree to
/// rounding. Nor do they depend on the thread count.
#[test]
fn gradients_do_not_depend_on_batch_position_or_threads() {
    let mut model = Tagger::random(7);
    let x = random((3, 6, 3), 8);
    let dy = random((3, 6, 8), 9);
    let lengths = [6, 3, 5];
    let grads = gradients(&model, &x, &lengths, &dy);
    let order = [2, 0, 1];
    let permute = |array: &Array3<f32>| array.select(ndarray::Axis(0), &order);
    let permuted_lengths: Vec<usize> = order.iter().map(|b| lengths[*b]).collect();
    let moved = gradients(&model, &permute(&x), &permuted_lengths, &permute(&dy));
    for (new, old) in order.iter().enumerate() {
        let a = grads.inputs[0].index_axis(ndarray::Axis(0), *old);
        let b = moved.inputs[0].index_axis(ndarray::Axis(0), new);
        assert_eq!(a, b, "dx of sequence {old}");
        let a = grads.initial_state.c.index_axis(ndarray::Axis(1), *old);
        let b = moved.initial_state.c.index_axis(ndarray::Axis(1), new);
        assert_eq!(a, b, "dc0 of sequence {old}");
    }
    for (a, b) in grads.params.iter().zip(&moved.params) {
        for (a, b) in a.iter().zip(b.iter()) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "{a} against {b}");
        }
    }
    model.set_threads(Threads::Fixed(2));
    let threaded = gradients(&model, &x, &lengths, &dy);
    assert_eq!(threaded, grads);
}

/// A batch large enough is computed in two halves (on two threads when allowed); the split
/// depends on the batch alone, so the gradients are bit-equal at one and two threads, and each
/// sequence's equal to its gradients computed alone, the weights' to their sum.
#[test]
fn a_batch_split_in_halves_gives_each_sequence_its_own_gradients() {
    let (batch, steps) = (8, 24);
    let mut model = Wide::random(21);
    let x = random((batch, steps, 64), 22);
    let dy = random((batch, steps, 128), 23);
    let lengths = [24, 3, 17, 24, 0, 11, 21, 14];
    let initial = WideState {
        h: random((1, batch, 128), 24),
        c: random((1, batch, 128), 25),
    };
    let d_final = WideState {
        h: random((1, batch, 128), 26),
        c: random((1, batch, 128), 27),
    };
    let run = |model: &Wide,
               x: &Array3<f32>,
               lengths: &[usize],
               dy: &Array3<f32>,
               h0: &WideState,
               dn: &WideState| {
        let (_, tape) = model
            .forward_train(x.view(), Some(lengths), Some(h0))
            .expect("forward runs");
        let grads = model
            .backward(&tape, dy.view(), Some(dn))
            .expect("backward runs");
        model.recycle(tape);
        grads
    };
    model.set_threads(Threads::Fixed(1));
    let one = run(&model, &x, &lengths, &dy, &initial, &d_final);
    model.set_threads(Threads::Fixed(2));
    let two = run(&model, &x, &lengths, &dy, &initial, &d_final);
    assert_eq!(one, two);

    let mut summed: Vec<ArrayD<f32>> = one
        .params
        .iter()
        .map(|p| ArrayD::zeros(p.shape()))
        .collect();
    for b in 0..batch {
        let alone = |array: &Array3<f32>, axis| array.select(ndarray::Axis(axis), &[b]);
        let state = |s: &WideState| WideState {
            h: alone(&s.h, 1),
            c: alone(&s.c, 1),
        };
        let own = run(
            &model,
            &alone(&x, 0),
            &lengths[b..=b],
            &alone(&dy, 0),
            &state(&initial),
            &state(&d_final),
        );
        let close = |a: f32, e: f32| (a - e).abs() <= 1e-5 * (1.0 + e.abs());
        let dx = one.inputs[0].index_axis(ndarray::Axis(0), b);
        let own_dx = own.inputs[0].index_axis(ndarray::Axis(0), 0);
        assert!(
            dx.iter().zip(own_dx.iter()).all(|(a, e)| close(*a, *e)),
            "dx of sequence {b}"
        );
        for (mine, own) in [
            (&one.initial_state.h, &own.initial_state.h),
            (&one.initial_state.c, &own.initial_state.c),
        ] {
            let mine = mine.index_axis(ndarray::Axis(1), b);
            let own = own.index_axis(ndarray::Axis(1), 0);
            assert!(
                mine.iter().zip(own.iter()).all(|(a, e)| close(*a, *e)),
                "initial state of sequence {b}"
            );
        }
        for (sum, p) in summed.iter_mut().zip(&own.params) {
            *sum += p;
        }
    }
    for ((name, _), (got, want)) in one.named().iter().zip(one.params.iter().zip(&summed)) {
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(want.iter())
            .fold(0.0f32, |m, (a, e)| m.max((a - e).abs()));
        assert!(worst <= 1e-5 * scale, "{name}: {worst} off, scale {scale}");
    }
}

#[test]
fn a_saved_model_loads_back_bit_equal() {
    let model = Tagger::random(11);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("training");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join("tagger.safetensors");
    model.save_safetensors(&path).expect("saves");
    let loaded = Tagger::from_safetensors(&path).expect("loads");
    assert_eq!(loaded.to_weights(), model.to_weights());
    for ((name, a), (_, b)) in model.params().iter().zip(loaded.params()) {
        assert!(
            a.iter()
                .zip(b.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}"
        );
    }
}

/// A step against the gradient lowers the loss, and the old tape no longer fits the model.
#[test]
fn updating_the_parameters_rebuilds_the_model() {
    let mut model = Small::random(3);
    let x = random((4, 5, 2), 4);
    let ctx = random((4, 1, 3), 5).index_axis_move(ndarray::Axis(1), 0);
    let loss = |model: &Small| -> f32 {
        let out = model
            .forward(x.view(), ctx.view(), None, None)
            .expect("runs");
        out.y.iter().map(|v| v * v).sum::<f32>()
    };
    let before = loss(&model);
    let (out, tape) = model
        .forward_train(x.view(), ctx.view(), None, None)
        .expect("runs");
    let dy = out.y.mapv(|v| 2.0 * v);
    let grads = model.backward(&tape, dy.view(), None).expect("runs");
    assert_eq!(grads.inputs[1].shape(), [4, 3], "the context's gradient");
    let mut step = grads.params.iter();
    model
        .update_params(|_, mut param| {
            let gradient = step.next().expect("one gradient per parameter");
            param.scaled_add(-0.01, gradient);
        })
        .expect("finite parameters");
    assert!(loss(&model) < before, "{} not below {before}", loss(&model));
    let error = model
        .backward(&tape, dy.view(), None)
        .expect_err("a stale tape");
    assert!(
        matches!(&error, RnnError::InvalidValue { tensor, .. } if tensor == "tape"),
        "{error}"
    );
}

#[test]
fn bad_gradients_and_tapes_are_typed_errors() {
    let model = Tagger::random(5);
    let other = Tagger::random(5);
    let x = random((2, 4, 3), 6);
    let (_, tape) = model.forward_train(x.view(), None, None).expect("runs");
    let names = |error: RnnError| match error {
        RnnError::ShapeMismatch { tensor, .. } | RnnError::InvalidValue { tensor, .. } => tensor,
        other => panic!("unexpected error {other}"),
    };
    // Another model's tape, however alike.
    let dy = Array3::<f32>::zeros((2, 4, 8));
    assert_eq!(
        names(other.backward(&tape, dy.view(), None).unwrap_err()),
        "tape"
    );
    // A gradient of the wrong shape, or for another batch size.
    for shape in [(2, 4, 7), (3, 4, 8), (2, 5, 8)] {
        let dy = Array3::<f32>::zeros(shape);
        assert_eq!(
            names(model.backward(&tape, dy.view(), None).unwrap_err()),
            "dy",
            "{shape:?}"
        );
    }
    // Non-finite values.
    let mut dy = Array3::<f32>::zeros((2, 4, 8));
    dy[[1, 2, 3]] = f32::NAN;
    assert_eq!(
        names(model.backward(&tape, dy.view(), None).unwrap_err()),
        "dy"
    );
    let mut d_final = TaggerState::zeros(2);
    d_final.c[[0, 1, 1]] = f32::INFINITY;
    let dy = Array3::<f32>::zeros((2, 4, 8));
    assert_eq!(
        names(
            model
                .backward(&tape, dy.view(), Some(&d_final))
                .unwrap_err()
        ),
        "c_n"
    );
    // A final-state gradient of the wrong shape, named as the final state.
    let d_final = TaggerState {
        h: Array3::zeros((4, 3, 4)),
        c: Array3::zeros((4, 2, 4)),
    };
    assert_eq!(
        names(
            model
                .backward(&tape, dy.view(), Some(&d_final))
                .unwrap_err()
        ),
        "h_n"
    );
    // A parameter made non-finite leaves the model as it was.
    let mut model = model;
    let before = model.to_weights();
    let error = model
        .update_params(|name, mut param| {
            if name == "bias_hh_l1" {
                param[[0]] = f32::NAN;
            }
        })
        .unwrap_err();
    assert_eq!(names(error), "bias_hh_l1");
    assert_eq!(model.to_weights(), before);
    let _: ArrayD<f32> = model.params()[0].1.to_owned();
}

/// An update of one layer's parameters rebuilds that layer alone; the model
/// then runs, forward and backward, bit for bit as one loaded from the
/// updated weights (two bidirectional layers).
#[test]
fn an_update_of_one_layer_runs_as_its_weights_loaded() {
    let mut model = Tagger::random(21);
    let x = random((3, 5, 3), 22);
    let dy = random((3, 5, 8), 23);
    let lengths = [5, 0, 3];
    for (round, name) in ["weight_hh_l1_reverse", "bias_ih_l0", "weight_ih_l1"]
        .into_iter()
        .enumerate()
    {
        model
            .update_params(|param, mut view| {
                if param == name {
                    view.mapv_inplace(|v| v * 0.9 + 0.01 * (round + 1) as f32);
                }
            })
            .expect("finite parameters");
        let loaded = Tagger::from_weights(&model.to_weights()).expect("loads");
        let (out, tape) = model
            .forward_train(x.view(), Some(&lengths), None)
            .expect("runs");
        let (expected, loaded_tape) = loaded
            .forward_train(x.view(), Some(&lengths), None)
            .expect("runs");
        assert_eq!(out, expected, "after changing `{name}`");
        let grads = model.backward(&tape, dy.view(), None).expect("runs");
        let expected = loaded
            .backward(&loaded_tape, dy.view(), None)
            .expect("runs");
        assert_eq!(grads.params, expected.params, "after changing `{name}`");
        assert_eq!(grads.inputs, expected.inputs, "after changing `{name}`");
    }
}

//! Training generated models: a short run that learns, a resumed run equal
//! to an uninterrupted one, and what bad input gets.

use ndarray::{Array1, Array3, ArrayD};
use rnn_runtime::init::SplitMix64;
use rnn_train::optim::{Adam, Optimizer, Sgd};
use rnn_train::{checkpoint, clip, loss, Parameters, RnnError};

rnn_macros::rnn! {
    gradients = true;
    network Remember { input x: [1]; layer l = lstm(hidden = 2); unroll dynamic; }
    network Other { input x: [2]; layer g = gru(hidden = 8); unroll dynamic; }
}

// The same network with its weights in reduced precision, for inference with
// the weights trained in f32.
rnn_macros::rnn! {
    network RememberBf16 { input x: [1]; layer l = lstm(hidden = 2); unroll dynamic; precision bf16; }
    network RememberInt8 { input x: [1]; layer l = lstm(hidden = 2); unroll dynamic; precision int8; }
}

/// The held-out loss and correct count of outputs `y`.
fn held_out(
    y: ndarray::ArrayView3<'_, f32>,
    lengths: &[usize],
    classes: &Array1<usize>,
) -> (f32, usize) {
    let value = loss::cross_entropy_last(y, classes.view(), Some(lengths))
        .expect("loss")
        .value;
    let predicted = loss::argmax(y);
    let correct = (0..lengths.len())
        .filter(|&b| predicted[(b, lengths[b] - 1)] == classes[b])
        .count();
    (value, correct)
}

/// A batch of the task: sequences of 2 to 10 steps of uniform noise; the
/// class, read at the last step, is whether the first value was positive.
fn batch(rng: &mut SplitMix64, size: usize) -> (Array3<f32>, Vec<usize>, Array1<usize>) {
    let x = Array3::from_shape_simple_fn((size, 10, 1), || rng.uniform(-1.0, 1.0));
    let lengths = (0..size)
        .map(|_| 2 + (rng.uniform(0.0, 1.0) * 8.99) as usize)
        .collect();
    let classes = (0..size).map(|b| usize::from(x[(b, 0, 0)] > 0.0)).collect();
    (x, lengths, classes)
}

/// One step of training on a batch; returns the loss.
fn train_step(model: &mut Remember, optimizer: &mut dyn Optimizer, rng: &mut SplitMix64) -> f32 {
    let (x, lengths, classes) = batch(rng, 32);
    let (out, tape) = model
        .forward_train(x.view(), Some(&lengths), None)
        .expect("forward runs");
    let loss =
        loss::cross_entropy_last(out.y.view(), classes.view(), Some(&lengths)).expect("loss");
    let mut grads = model
        .backward(&tape, loss.grad.view(), None)
        .expect("backward runs");
    model.recycle(tape);
    clip::clip_grad_norm(&mut grads.params, 1.0);
    optimizer.step(model, &grads.params).expect("the step runs");
    loss.value
}

#[test]
fn an_lstm_learns_to_remember_its_first_input() {
    let mut model = Remember::random(0);
    let mut adam = Adam::new(0.03);
    let mut rng = SplitMix64::new(1);
    let losses: Vec<f32> = (0..400)
        .map(|_| train_step(&mut model, &mut adam, &mut rng))
        .collect();
    let early: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let late: f32 = losses[390..].iter().sum::<f32>() / 10.0;
    println!("mean loss over the first 10 steps {early:.3}, the last 10 {late:.3}");
    let (x, lengths, classes) = batch(&mut SplitMix64::new(99), 256);
    let out = model
        .forward(x.view(), Some(&lengths), None)
        .expect("forward runs");
    let predicted = loss::argmax(out.y.view());
    let correct = (0..256)
        .filter(|&b| predicted[(b, lengths[b] - 1)] == classes[b])
        .count();
    println!("held-out accuracy {correct}/256");
    // Chance is ln 2 ≈ 0.69; with logits within ±1 (an LSTM's outputs) the
    // least loss is ln(1 + e⁻²) ≈ 0.13.
    assert!(late < 0.3, "{losses:?}");
    assert!(correct > 240, "accuracy {correct}/256 (chance 128)");

    // The trained weights in bfloat16 and int8: the task's metric moves by
    // the rounding's error (README.md, "Reduced precision"), no more.
    let (f32_loss, f32_correct) = held_out(out.y.view(), &lengths, &classes);
    let weights = model.to_weights();
    let bf16 = RememberBf16::from_weights(&weights).expect("bf16 builds");
    let int8 = RememberInt8::from_weights(&weights).expect("int8 builds");
    let reduced = [
        (
            "bf16",
            bf16.forward(x.view(), Some(&lengths), None)
                .expect("runs")
                .y,
        ),
        (
            "int8",
            int8.forward(x.view(), Some(&lengths), None)
                .expect("runs")
                .y,
        ),
    ];
    println!("f32: held-out loss {f32_loss:.4}, accuracy {f32_correct}/256");
    for (precision, y) in reduced {
        let (loss, correct) = held_out(y.view(), &lengths, &classes);
        println!("{precision}: held-out loss {loss:.4}, accuracy {correct}/256");
        assert!(
            correct + 2 >= f32_correct,
            "{precision}: {correct}/256 against {f32_correct}/256 in f32"
        );
        assert!(
            (loss - f32_loss).abs() <= 0.01 * f32_loss.max(0.1),
            "{precision}: loss {loss} against {f32_loss} in f32"
        );
    }
}

fn params(model: &dyn Parameters) -> Vec<ArrayD<f32>> {
    model
        .params()
        .into_iter()
        .map(|(_, p)| p.to_owned())
        .collect()
}

#[test]
fn a_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run_bit_for_bit() {
    let dir = std::env::temp_dir().join(format!("rnn-train-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("checkpoint.safetensors");
    for name in ["adam", "sgd"] {
        let make = || -> Box<dyn Optimizer> {
            match name {
                "adam" => Box::new(Adam::adamw(0.02)),
                _ => Box::new(Sgd::new(0.1).momentum(0.9).nesterov(true)),
            }
        };
        let mut whole = Remember::random(3);
        let mut whole_opt = make();
        let mut rng = SplitMix64::new(4);
        for _ in 0..10 {
            train_step(&mut whole, whole_opt.as_mut(), &mut rng);
        }

        let mut first = Remember::random(3);
        let mut first_opt = make();
        let mut rng = SplitMix64::new(4);
        for _ in 0..6 {
            train_step(&mut first, first_opt.as_mut(), &mut rng);
        }
        checkpoint::save(&path, &first, first_opt.as_ref()).expect("saves");
        // Another start, then the checkpoint.
        let mut resumed = Remember::random(77);
        let mut resumed_opt = make();
        checkpoint::load(&path, &mut resumed, resumed_opt.as_mut()).expect("loads");
        assert_eq!(resumed_opt.steps(), 6);
        for _ in 6..10 {
            train_step(&mut resumed, resumed_opt.as_mut(), &mut rng);
        }
        assert_eq!(params(&resumed), params(&whole), "{name}");
        assert_eq!(resumed_opt.state(), whole_opt.state(), "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_non_finite_gradient_is_refused_and_changes_nothing() {
    let mut model = Remember::random(5);
    let mut adam = Adam::new(0.01);
    let mut rng = SplitMix64::new(6);
    train_step(&mut model, &mut adam, &mut rng);
    let (before, state) = (params(&model), adam.state());
    let mut grads: Vec<ArrayD<f32>> = params(&model)
        .iter()
        .map(|p| ArrayD::ones(p.raw_dim()))
        .collect();
    grads[2][[1, 0]] = f32::NAN;
    let error = adam.step(&mut model, &grads).expect_err("NaN is refused");
    assert!(
        matches!(&error, RnnError::InvalidValue { tensor, .. } if tensor == "grad_weight_hh_l0"),
        "{error}"
    );
    assert_eq!(params(&model), before);
    assert_eq!(adam.state(), state);
    assert_eq!(adam.steps(), 1);

    grads.pop();
    let error = adam
        .step(&mut model, &grads)
        .expect_err("a missing gradient is refused");
    assert!(
        matches!(&error, RnnError::ShapeMismatch { tensor, .. } if tensor == "grads"),
        "{error}"
    );
    let mut grads: Vec<ArrayD<f32>> = params(&model)
        .iter()
        .map(|p| ArrayD::ones(p.raw_dim()))
        .collect();
    grads[0] = ArrayD::ones(vec![3, 3]);
    let error = adam
        .step(&mut model, &grads)
        .expect_err("a misshaped gradient is refused");
    assert!(
        matches!(&error, RnnError::ShapeMismatch { tensor, .. } if tensor == "grad_weight_ih_l0"),
        "{error}"
    );
    assert_eq!(params(&model), before);
    assert_eq!(adam.state(), state);
}

#[test]
fn a_class_out_of_range_is_a_typed_error() {
    let model = Remember::random(7);
    let (x, lengths, _) = batch(&mut SplitMix64::new(8), 4);
    let out = model
        .forward(x.view(), Some(&lengths), None)
        .expect("forward runs");
    let classes = Array1::from(vec![0, 1, 2, 0]);
    let error = loss::cross_entropy_last(out.y.view(), classes.view(), Some(&lengths))
        .expect_err("class 2 of 2 is refused");
    assert_eq!(
        error.to_string(),
        format!(
            "tensor `targets`: class 2 at sequence 2, step {} is out of range for 2 classes",
            lengths[2] - 1
        )
    );
    let error = loss::cross_entropy_last(out.y.view(), classes.view(), Some(&[1, 2, 3]))
        .expect_err("3 lengths for 4 sequences");
    assert!(
        matches!(&error, RnnError::ShapeMismatch { tensor, .. } if tensor == "lengths"),
        "{error}"
    );
}

#[test]
fn another_models_checkpoint_is_refused_naming_the_tensor() {
    let dir = std::env::temp_dir().join(format!("rnn-train-other-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("other.safetensors");
    let other = Other::random(9);
    checkpoint::save(&path, &other, &Adam::new(0.1)).expect("saves");

    let mut model = Remember::random(10);
    let mut adam = Adam::new(0.1);
    train_step(&mut model, &mut adam, &mut SplitMix64::new(11));
    let (before, state) = (params(&model), adam.state());
    let error = checkpoint::load(&path, &mut model, &mut adam).expect_err("another model's");
    // The GRU's input weights are [24, 2], the LSTM's [8, 1].
    assert_eq!(
        error.to_string(),
        "tensor `weight_ih_l0`: expected shape [8, 1], found [24, 2]"
    );
    assert_eq!(params(&model), before);
    assert_eq!(adam.state(), state);

    // An optimizer of another kind: its slots are missing.
    let mut adam_model = Remember::random(12);
    let mut adam2 = Adam::new(0.1);
    train_step(&mut adam_model, &mut adam2, &mut SplitMix64::new(13));
    checkpoint::save(&path, &adam_model, &adam2).expect("saves");
    let mut sgd = Sgd::new(0.1).momentum(0.9);
    let error = checkpoint::load(&path, &mut model, &mut sgd).expect_err("Adam's state for SGD");
    assert!(
        matches!(&error, RnnError::MissingTensor { tensor, .. } if tensor == "optimizer.momentum_buffer.weight_ih_l0"),
        "{error}"
    );
    assert_eq!(params(&model), before);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_non_finite_output_names_the_element_a_valid_step_holds() {
    let mut y = Array3::<f32>::zeros((2, 3, 2));
    let target = Array3::<f32>::zeros((2, 3, 2));
    // Padded (sequence 1 has 1 step): not read, not an error.
    y[(1, 2, 0)] = f32::NAN;
    let lengths = [3, 1];
    assert!(loss::mse(y.view(), target.view(), Some(&lengths)).is_ok());
    y[(0, 1, 1)] = f32::INFINITY;
    let error = loss::mse(y.view(), target.view(), Some(&lengths)).expect_err("inf is refused");
    assert_eq!(
        error.to_string(),
        "tensor `y`: non-finite value inf at [0, 1, 1]"
    );
    let misshaped = Array3::<f32>::zeros((2, 3, 1));
    let error = loss::mse(y.view(), misshaped.view(), None).expect_err("shapes differ");
    assert!(
        matches!(&error, RnnError::ShapeMismatch { tensor, .. } if tensor == "target"),
        "{error}"
    );
}

#[test]
fn mse_last_counts_the_last_valid_step_of_each_sequence() {
    let mut rng = SplitMix64::new(7);
    let y = Array3::from_shape_simple_fn((3, 4, 2), || rng.uniform(-1.0, 1.0));
    let target = ndarray::Array2::from_shape_simple_fn((3, 2), || rng.uniform(-1.0, 1.0));
    // Sequence 1 has no step: not counted.
    let lengths = [4, 0, 2];
    let loss = loss::mse_last(y.view(), target.view(), Some(&lengths)).unwrap();
    let mut sum = 0.0f64;
    let mut grad = Array3::<f32>::zeros((3, 4, 2));
    for (b, t) in [(0, 3), (2, 1)] {
        for k in 0..2 {
            let diff = f64::from(y[(b, t, k)] - target[(b, k)]);
            sum += diff * diff;
            grad[(b, t, k)] = (2.0 * diff / 4.0) as f32;
        }
    }
    assert!((f64::from(loss.value) - sum / 4.0).abs() < 1e-6);
    assert_eq!(loss.grad, grad);
    // Padded steps are not read; a non-finite last step is named.
    let mut y = y;
    y[(2, 3, 0)] = f32::NAN;
    assert!(loss::mse_last(y.view(), target.view(), Some(&lengths)).is_ok());
    y[(2, 1, 1)] = f32::INFINITY;
    let error = loss::mse_last(y.view(), target.view(), Some(&lengths)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "tensor `y`: non-finite value inf at [2, 1, 1]"
    );
    let error = loss::mse_last(y.view(), target.slice(ndarray::s![..2, ..]), None).unwrap_err();
    assert!(matches!(&error, RnnError::ShapeMismatch { tensor, .. } if tensor == "target"));
}

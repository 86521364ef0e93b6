//! Losses, optimizers, clipping and schedules against PyTorch: the values
//! in `data/torch_reference.json`, written by `data/make_reference.py`.

use ndarray::{Array1, Array2, Array3, ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use rnn_train::clip::{clip_grad_norm, clip_grad_value, global_norm};
use rnn_train::optim::{Adam, Optimizer, Sgd};
use rnn_train::schedule::{Cosine, Schedule, StepDecay, Warmup};
use rnn_train::{loss, Parameters, Result, RnnError};
use serde_json::Value;

mod common;
use common::{reference, tensor};

fn tensors(value: &Value) -> Vec<ArrayD<f32>> {
    value
        .as_array()
        .expect("a list")
        .iter()
        .map(tensor)
        .collect()
}

fn usizes(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .expect("a list")
        .iter()
        .map(|n| n.as_u64().expect("an index") as usize)
        .collect()
}

/// The largest difference relative to `1 + |expected|`.
fn max_error(actual: &ArrayD<f32>, expected: &ArrayD<f32>) -> f64 {
    assert_eq!(actual.shape(), expected.shape());
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| (f64::from(a) - f64::from(e)).abs() / (1.0 + f64::from(e).abs()))
        .fold(0.0, f64::max)
}

/// Parameters alone, to step without a network.
struct Plain(Vec<ArrayD<f32>>);

const NAMES: [&str; 2] = ["weight", "bias"];

impl Parameters for Plain {
    fn params(&self) -> Vec<(&'static str, ArrayViewD<'_, f32>)> {
        NAMES
            .iter()
            .copied()
            .zip(self.0.iter().map(|p| p.view()))
            .collect()
    }

    fn update_params(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, f32>),
    ) -> Result<()> {
        let mut next = self.0.clone();
        for (name, param) in NAMES.iter().zip(&mut next) {
            update(name, param.view_mut());
            if let Some(bad) = param.iter().find(|v| !v.is_finite()) {
                return Err(RnnError::InvalidValue {
                    tensor: (*name).to_owned(),
                    reason: format!("non-finite {bad}"),
                });
            }
        }
        self.0 = next;
        Ok(())
    }
}

fn optimizer(name: &str, hyper: &Value) -> Box<dyn Optimizer> {
    let get = |key: &str| hyper[key].as_f64();
    let lr = get("lr").expect("lr");
    match name {
        "sgd" | "sgd_momentum" | "sgd_nesterov" => {
            let mut sgd = Sgd::new(lr)
                .momentum(get("momentum").unwrap_or(0.0))
                .weight_decay(get("weight_decay").unwrap_or(0.0))
                .nesterov(hyper["nesterov"].as_bool() == Some(true));
            sgd.dampening = get("dampening").unwrap_or(0.0);
            Box::new(sgd)
        }
        "adam" | "adam_l2" => {
            let mut adam = Adam::new(lr).weight_decay(get("weight_decay").unwrap_or(0.0));
            if let Some(betas) = hyper["betas"].as_array() {
                adam = adam.betas(
                    betas[0].as_f64().expect("beta"),
                    betas[1].as_f64().expect("beta"),
                );
            }
            Box::new(adam)
        }
        "adamw" => Box::new(Adam::adamw(lr)),
        other => panic!("no optimizer for the reference case {other}"),
    }
}

/// The gradients of each step of the optimizer cases.
fn step_grads(optimizers: &Value) -> Vec<Vec<ArrayD<f32>>> {
    optimizers["grads"]
        .as_array()
        .expect("steps")
        .iter()
        .map(tensors)
        .collect()
}

/// Checks `model`'s parameters against PyTorch's after step `step` of case
/// `name`, and returns the largest error.
fn trajectory_error(model: &Plain, expected: &Value, name: &str, step: usize) -> f64 {
    let mut worst = 0.0_f64;
    for (param, expected) in model.0.iter().zip(tensors(expected)) {
        let error = max_error(param, &expected);
        assert!(error < 2e-7, "{name}, step {step}: error {error:e}");
        worst = worst.max(error);
    }
    worst
}

#[test]
fn optimizers_follow_pytorch_step_by_step() {
    let reference = reference();
    let optimizers = &reference["optimizers"];
    let grads = step_grads(optimizers);
    let cases = optimizers["cases"].as_object().expect("cases");
    assert_eq!(cases.len(), 6, "every optimizer case is checked");
    for (name, case) in cases {
        let mut model = Plain(tensors(&optimizers["params"]));
        let mut optimizer = optimizer(name, &case["hyper"]);
        let mut worst = 0.0_f64;
        for (step, (step_grads, expected)) in grads
            .iter()
            .zip(case["trajectory"].as_array().expect("trajectory"))
            .enumerate()
        {
            optimizer
                .step(&mut model, step_grads)
                .expect("the step runs");
            worst = worst.max(trajectory_error(&model, expected, name, step));
        }
        assert_eq!(optimizer.steps(), 5);
        println!("{name}: 5 steps, largest error {worst:.2e}");
    }
}

/// A model that runs an optimizer's update and then refuses the result,
/// as a generated model refuses a parameter made non-finite.
struct Refusing<'a>(&'a mut Plain);

impl Parameters for Refusing<'_> {
    fn params(&self) -> Vec<(&'static str, ArrayViewD<'_, f32>)> {
        self.0.params()
    }

    fn update_params(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, f32>),
    ) -> Result<()> {
        let mut next = self.0 .0.clone();
        for (name, param) in NAMES.iter().zip(&mut next) {
            update(name, param.view_mut());
        }
        Err(RnnError::InvalidValue {
            tensor: "weight".to_owned(),
            reason: "refused".to_owned(),
        })
    }
}

#[test]
fn a_refused_step_changes_neither_the_model_nor_the_optimizer() {
    let reference = reference();
    let optimizers = &reference["optimizers"];
    let grads = step_grads(optimizers);
    for (name, case) in optimizers["cases"].as_object().expect("cases") {
        let mut model = Plain(tensors(&optimizers["params"]));
        let mut optimizer = optimizer(name, &case["hyper"]);
        let trajectory = case["trajectory"].as_array().expect("trajectory");
        for (step, (step_grads, expected)) in grads.iter().zip(trajectory).enumerate() {
            // A refused step before every step, the first included: the
            // trajectory is PyTorch's as if it had not been tried.
            let (params, state) = (model.0.clone(), optimizer.state());
            let refused =
                optimizer.step(&mut Refusing(&mut model), &grads[(step + 1) % grads.len()]);
            assert!(
                refused.is_err(),
                "{name}, step {step}: the refusal is passed on"
            );
            assert_eq!(model.0, params, "{name}, step {step}: the parameters");
            let after = optimizer.state();
            assert_eq!(
                after.names().collect::<Vec<_>>(),
                state.names().collect::<Vec<_>>()
            );
            for tensor in state.names() {
                assert_eq!(
                    after.get(tensor),
                    state.get(tensor),
                    "{name}, step {step}: {tensor}"
                );
            }
            optimizer
                .step(&mut model, step_grads)
                .expect("the step runs");
            trajectory_error(&model, expected, name, step);
        }
    }
}

#[test]
fn clip_grad_norm_follows_pytorch() {
    let reference = reference();
    let clipping = &reference["clipping"];
    let grads = tensors(&clipping["grads"]);
    for case in clipping["cases"].as_array().expect("cases") {
        let mut clipped = grads.clone();
        let max_norm = case["max_norm"].as_f64().expect("max_norm") as f32;
        let norm = clip_grad_norm(&mut clipped, max_norm);
        let expected_norm = case["norm"].as_f64().expect("norm");
        assert!(
            (f64::from(norm) - expected_norm).abs() < 1e-5 * expected_norm,
            "{norm} {expected_norm}"
        );
        for (actual, expected) in clipped.iter().zip(tensors(&case["clipped"])) {
            assert!(max_error(actual, &expected) < 1e-6, "max_norm {max_norm}");
        }
        assert!(global_norm(&clipped) <= max_norm * (1.0 + 1e-6));
    }
}

#[test]
fn clip_grad_value_clamps_and_keeps_nan() {
    let mut grads =
        vec![ArrayD::from_shape_vec(IxDyn(&[4]), vec![-3.0, 0.5, f32::NAN, 2.0]).expect("shape")];
    clip_grad_value(&mut grads, 1.0);
    let values: Vec<f32> = grads[0].iter().copied().collect();
    assert_eq!(&values[..2], [-1.0, 0.5]);
    assert!(values[2].is_nan());
    assert_eq!(values[3], 1.0);
}

#[test]
fn a_non_finite_norm_leaves_the_gradients_alone() {
    let mut grads =
        vec![ArrayD::from_shape_vec(IxDyn(&[2]), vec![f32::INFINITY, 1.0]).expect("shape")];
    let norm = clip_grad_norm(&mut grads, 1.0);
    assert!(norm.is_infinite());
    assert_eq!(grads[0][[1]], 1.0);
}

#[test]
fn schedules_follow_pytorch() {
    let reference = reference();
    let schedules = &reference["schedules"];
    let check = |name: &str, schedule: &dyn Schedule| {
        for (step, expected) in schedules[name]
            .as_array()
            .expect("rates")
            .iter()
            .enumerate()
        {
            let expected = expected.as_f64().expect("rate");
            let actual = schedule.lr(step as u64);
            assert!(
                (actual - expected).abs() < 1e-12,
                "{name} step {step}: {actual} vs {expected}"
            );
        }
    };
    check(
        "step",
        &StepDecay {
            base: 0.1,
            gamma: 0.5,
            every: 3,
        },
    );
    check(
        "cosine",
        &Cosine {
            base: 0.1,
            min: 0.001,
            period: 8,
        },
    );
    check(
        "warmup_cosine",
        &Warmup {
            steps: 4,
            start_factor: 0.1,
            then: Cosine {
                base: 0.1,
                min: 0.0,
                period: 6,
            },
        },
    );
}

fn array3(value: &Value) -> Array3<f32> {
    tensor(value)
        .into_dimensionality()
        .expect("three dimensions")
}

#[test]
fn losses_follow_pytorch_with_padded_steps_masked() {
    let reference = reference();
    let losses = &reference["losses"];
    let logits = array3(&losses["logits"]);
    let targets = Array2::from_shape_vec((3, 4), usizes(&losses["targets"])).expect("[3, 4]");
    let lengths = usizes(&losses["lengths"]);
    let check = |what: &str, actual: loss::Loss, expected: &Value| {
        let value = expected["loss"].as_f64().expect("loss");
        assert!(
            (f64::from(actual.value) - value).abs() < 1e-6 * (1.0 + value),
            "{what}: {} vs {value}",
            actual.value
        );
        let error = max_error(&actual.grad.into_dyn(), &tensor(&expected["grad"]));
        assert!(error < 1e-7, "{what}: gradient error {error:e}");
    };
    let every = loss::cross_entropy(logits.view(), targets.view(), Some(&lengths)).expect("runs");
    check("cross_entropy", every, &losses["every"]);

    let last_targets = Array1::from(usizes(&losses["last_targets"]));
    let last_lengths = usizes(&losses["last_lengths"]);
    let last = loss::cross_entropy_last(logits.view(), last_targets.view(), Some(&last_lengths))
        .expect("runs");
    check("cross_entropy_last", last, &losses["last"]);

    let y = array3(&losses["y"]);
    let target = array3(&losses["target"]);
    let mse = loss::mse(y.view(), target.view(), Some(&lengths)).expect("runs");
    check("mse", mse, &losses["mse"]);
}

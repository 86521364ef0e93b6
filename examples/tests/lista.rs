//! LISTA at a small size (20 × 40, 6 layers), in seconds: before training
//! the networks are ISTA (their iterates equal `lista::ista`'s), and after
//! layer-wise training their held-out NMSE at K = 6 beats ISTA's after 6
//! iterations by at least 3 dB. A LISTA-CP trained in PyTorch loads from
//! its `state_dict` as it is and gives PyTorch's iterates and gradients.

use rnn_runtime::init::SplitMix64;
use rnn_runtime::TensorMap;
use unroll_examples::lista::models::{ListaCpSmall, ListaSmall};
use unroll_examples::lista::{
    ista, lista_cp_init, lista_cp_new_step, lista_cp_steps_so_far, lista_init, lista_parts,
    model_nmse_db, nmse_db, LayerWise, Problem, Unrolled,
};

const LAYERS: usize = 6;
const LAMBDA: f32 = 0.05;
/// How much better than ISTA at the same K a trained network must be.
const MARGIN_DB: f64 = 3.0;

fn problem() -> Problem {
    Problem::new(20, 40, 0.1, Some(40.0), &mut SplitMix64::new(11))
}

fn max_difference(a: ndarray::ArrayView2<'_, f32>, b: ndarray::ArrayView2<'_, f32>) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn untrained_networks_are_ista() {
    let problem = problem();
    let test = problem.sample(32, &mut SplitMix64::new(1));
    let mut iterates = Vec::new();
    ista(&problem, test.y.view(), LAMBDA, LAYERS, |_, x| {
        iterates.push(x.clone())
    });
    let tied = ListaSmall::from_weights(&lista_init(&problem, LAMBDA)).unwrap();
    let untied = ListaCpSmall::from_weights(&lista_cp_init(&problem, LAMBDA, LAYERS)).unwrap();
    for (name, model) in [("tied", &tied as &dyn Unrolled), ("untied", &untied)] {
        let solved = model.solve(test.y.view(), LAYERS).unwrap();
        for (k, expected) in iterates.iter().enumerate() {
            let error = max_difference(solved.index_axis(ndarray::Axis(1), k), expected.view());
            assert!(error < 1e-5, "{name} iterate {}: {error}", k + 1);
        }
    }
}

#[test]
fn layer_wise_training_beats_ista_at_the_same_depth() {
    let problem = problem();
    let test = problem.sample(1000, &mut SplitMix64::new(1));
    let validation = problem.sample(256, &mut SplitMix64::new(2));
    let mut ista_db = 0.0;
    ista(&problem, test.y.view(), LAMBDA, LAYERS, |_, x| {
        ista_db = nmse_db(x.view(), test.x.view());
    });
    let schedule = LayerWise {
        lr: 1e-3,
        stages: vec![1.0, 0.2],
        batch: 64,
        max_iterations: 120,
        validate_every: 20,
        patience: 3,
        warm_start: vec![],
        alone: None,
    };
    let mut rng = SplitMix64::new(5);

    let mut untied = ListaCpSmall::from_weights(&lista_cp_init(&problem, LAMBDA, LAYERS)).unwrap();
    let before = untied.to_weights();
    // Each new step starts as the trained step before it, as the example trains.
    let untied_schedule = LayerWise {
        warm_start: vec!["W_l0", "theta_l0"],
        ..schedule.clone()
    };
    let stages = untied_schedule
        .train(
            &mut untied,
            &problem,
            LAYERS,
            lista_cp_new_step,
            lista_cp_steps_so_far,
            &validation,
            &mut rng,
            |_| {},
            |_, _| Ok(()),
        )
        .unwrap();
    // The dictionary is frozen: LISTA-CP couples W to it but trains W alone.
    assert_eq!(
        before.f32("A_l0").unwrap(),
        untied.to_weights().f32("A_l0").unwrap()
    );
    let untied_db = model_nmse_db(&untied, &test, LAYERS).unwrap();

    let mut tied = ListaSmall::from_weights(&lista_init(&problem, LAMBDA)).unwrap();
    schedule
        .train(
            &mut tied,
            &problem,
            LAYERS,
            lista_parts,
            lista_parts,
            &validation,
            &mut rng,
            |_| {},
            |_, _| Ok(()),
        )
        .unwrap();
    let tied_db = model_nmse_db(&tied, &test, LAYERS).unwrap();

    println!(
        "K = {LAYERS}: ISTA {ista_db:.2} dB, LISTA (tied) {tied_db:.2} dB, LISTA-CP (untied) {untied_db:.2} dB; stages {stages:.2?}"
    );
    assert!(
        untied_db < ista_db - MARGIN_DB,
        "LISTA-CP {untied_db:.2} dB against ISTA {ista_db:.2} dB"
    );
    assert!(
        tied_db < ista_db - MARGIN_DB,
        "LISTA {tied_db:.2} dB against ISTA {ista_db:.2} dB"
    );
}

/// The network of the newest step alone, started from the iterate the
/// steps before it reach, gives the full network's loss and the newest
/// copy's gradient (what layer-wise training's first stage trains), and its
/// trained copy goes back to the step it came from, nothing else changed.
#[test]
fn the_newest_step_alone_gives_the_full_networks_gradient() {
    let problem = problem();
    let mut weights = lista_cp_init(&problem, LAMBDA, LAYERS);
    let mut rng = SplitMix64::new(9);
    let mut w = weights.f32("W").unwrap();
    w.mapv_inplace(|v| v * (1.0 + rng.uniform(-0.3, 0.3)));
    weights.insert_f32("W", w);
    let mut model = ListaCpSmall::from_weights(&weights).unwrap();
    let batch = problem.sample(48, &mut SplitMix64::new(6));
    let names: Vec<&str> = model.params().iter().map(|(name, _)| *name).collect();
    let w_at = names.iter().position(|name| *name == "W_l0").unwrap();
    let theta_at = names.iter().position(|name| *name == "theta_l0").unwrap();
    for k in [1, 4] {
        let (loss, grads) = model
            .loss_and_grads(batch.y.view(), batch.x.view(), k)
            .unwrap();
        let one = model.one_step(k - 1).expect("per-step parameters").unwrap();
        let start = (k > 1).then(|| {
            let iterates = model.solve(batch.y.view(), k - 1).unwrap();
            iterates.index_axis(ndarray::Axis(1), k - 2).to_owned()
        });
        let (one_loss, one_grads) = one
            .loss_and_grads_from(
                batch.y.view(),
                start.as_ref().map(|start| start.view()),
                batch.x.view(),
                1,
            )
            .unwrap();
        assert!(
            ((one_loss - loss) / loss).abs() < 1e-5,
            "K = {k}: loss {one_loss} alone, {loss} in the network"
        );
        for at in [w_at, theta_at] {
            let full = grads[at].index_axis(ndarray::Axis(0), k - 1);
            let alone = one_grads[at].index_axis(ndarray::Axis(0), 0);
            let largest = full.iter().fold(0.0f32, |acc, v| acc.max(v.abs()));
            let worst = full
                .iter()
                .zip(&alone)
                .fold(0.0f32, |acc, (a, b)| acc.max((a - b).abs()));
            assert!(largest > 0.0, "K = {k}: {} has a gradient", names[at]);
            assert!(
                worst <= 1e-4 * largest,
                "K = {k}, {}: {worst:e} of {largest:e}",
                names[at]
            );
        }
    }
    // A changed one-step network goes back as copy 2; the others and `A` stay.
    let before = model.to_weights();
    let mut one = model.one_step(2).unwrap().unwrap();
    one.update_params(&mut |name, mut view| {
        if name != "A_l0" {
            view.mapv_inplace(|v| v * 0.5);
        }
    })
    .unwrap();
    model.take_step(2, &*one).unwrap();
    let after = model.to_weights();
    for name in ["W_l0", "theta_l0"] {
        let (old, new) = (before.f32(name).unwrap(), after.f32(name).unwrap());
        for step in 0..LAYERS {
            let (old, new) = (
                old.index_axis(ndarray::Axis(0), step),
                new.index_axis(ndarray::Axis(0), step),
            );
            if step == 2 {
                assert_eq!(new, old.mapv(|v| v * 0.5), "{name} copy {step}");
            } else {
                assert_eq!(new, old, "{name} copy {step}");
            }
        }
    }
    assert_eq!(after.f32("A_l0").unwrap(), before.f32("A_l0").unwrap());
}

/// A warm start sets each new step's copies to the step before it (here
/// with no training, so the copies of step 0 spread to the steps grown),
/// and leaves the copies of steps not grown and the tied `A` alone.
#[test]
fn a_warm_start_copies_the_step_before() {
    let problem = problem();
    let mut weights = lista_cp_init(&problem, LAMBDA, LAYERS);
    let mut w = weights.f32("W").unwrap();
    let mut rng = SplitMix64::new(3);
    w.mapv_inplace(|v| v + rng.uniform(-0.1, 0.1));
    weights.insert_f32("W", w.clone());
    let mut model = ListaCpSmall::from_weights(&weights).unwrap();
    let schedule = LayerWise {
        lr: 1e-3,
        stages: vec![1.0],
        batch: 4,
        max_iterations: 0,
        validate_every: 1,
        patience: 1,
        warm_start: vec!["W_l0", "theta_l0"],
        alone: None,
    };
    let validation = problem.sample(8, &mut SplitMix64::new(2));
    schedule
        .train(
            &mut model,
            &problem,
            3,
            lista_cp_new_step,
            lista_cp_steps_so_far,
            &validation,
            &mut SplitMix64::new(4),
            |_| {},
            |_, _| Ok(()),
        )
        .unwrap();
    let after = model.to_weights().f32("W_l0").unwrap();
    for step in 0..LAYERS {
        let expected = w.index_axis(ndarray::Axis(0), if step < 3 { 0 } else { step });
        assert_eq!(
            after.index_axis(ndarray::Axis(0), step),
            expected,
            "copy {step}"
        );
    }
    assert_eq!(
        model.to_weights().f32("A_l0").unwrap(),
        weights.f32("A").unwrap()
    );
}

/// Where `data/pytorch_lista/make_reference.py` wrote its files.
const PYTORCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pytorch_lista");

/// The largest difference relative to the largest entry of `expected`.
fn relative_difference(
    found: ndarray::ArrayViewD<'_, f32>,
    expected: ndarray::ArrayViewD<'_, f32>,
) -> f32 {
    assert_eq!(found.shape(), expected.shape());
    let largest = expected.iter().fold(0.0f32, |acc, v| acc.max(v.abs()));
    let worst = found
        .iter()
        .zip(&expected)
        .fold(0.0f32, |acc, (a, e)| acc.max((a - e).abs()));
    worst / largest
}

#[test]
fn a_lista_cp_trained_in_pytorch_runs_and_matches() {
    // PyTorch's names as `state_dict()` gives them: `A`, `W` [K, M, N]
    // (one stacked tensor, step first), `theta` [K, 1].
    let model = ListaCpSmall::from_safetensors(format!("{PYTORCH}/lista_cp.safetensors")).unwrap();
    let reference = TensorMap::load(format!("{PYTORCH}/reference.safetensors")).unwrap();
    let tensor = |name: &str| reference.f32(name).unwrap();
    let y = tensor("y").into_dimensionality::<ndarray::Ix2>().unwrap();
    let x = tensor("x").into_dimensionality::<ndarray::Ix2>().unwrap();

    let iterates = model.solve(y.view(), LAYERS).unwrap();
    let error = relative_difference(iterates.view().into_dyn(), tensor("iterates").view());
    assert!(error < 1e-6, "iterates: {error:e} of the largest");

    let (loss, grads) = model.loss_and_grads(y.view(), x.view(), LAYERS).unwrap();
    let expected_loss = tensor("loss")[0];
    assert!(
        ((loss - expected_loss) / expected_loss).abs() < 1e-5,
        "loss {loss} against PyTorch's {expected_loss}"
    );
    // The gradients come in the order of the generated `NAMES` (`W_l0`,
    // `A_l0`, `theta_l0`), PyTorch's names with the layer's suffix. `A` is
    // declared `frozen` (PyTorch's module trains it): its gradient is zero.
    let names = unroll_examples::lista::models::ListaCpSmallGrads::NAMES;
    for (name, grad) in names.iter().zip(&grads) {
        let bare = name.trim_end_matches("_l0");
        if bare == "A" {
            assert!(
                grad.iter().all(|g| *g == 0.0),
                "grad {name} of a frozen `A`"
            );
            continue;
        }
        let error = relative_difference(grad.view(), tensor(&format!("grad.{bare}")).view());
        assert!(error < 1e-5, "grad {name}: {error:e} of the largest");
    }
}

//! Learned ISTA reproduced: ISTA and FISTA against trained LISTA (tied
//! weights) and LISTA-CP (one `W_k` and threshold per step) on the
//! standard problem of the algorithm-unrolling literature: `A` 250 × 500
//! with N(0, 1/250) entries and unit-norm columns, `x` Bernoulli(0.1)·N(0, 1),
//! SNR 40 dB, a held-out test set of 1,000 samples.
//!
//! It prints NMSE (dB) against the number of iterations or layers
//! (K = 1 … 16), how many ISTA and FISTA iterations reach what the trained
//! networks reach at K = 16, and draws the curves as a PNG.
//!
//! Run with `cargo run --release -p unroll-examples --example lista`
//! (`-- --out PATH.png` to choose where the picture goes, `-- --quick` for
//! a short run that trains 4 layers with fewer iterations, `-- --baselines`
//! for ISTA and FISTA alone, `-- --iterations N` for at most N iterations
//! per stage of training, `-- --patience N` for N validations without
//! improvement before a stage stops, `-- --batch N` for training batches
//! of N samples, `-- --alone-iterations N` and `-- --alone-patience N` for
//! the same of LISTA-CP's first stage (the new step trained alone; 20,000
//! and 40 unless given), `-- --layers K` to train K layers, `-- --only lista` or
//! `-- --only lista-cp` for one network, `-- --cold` to start each new
//! LISTA-CP step from ISTA's weights rather than the step before it).

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;

#[path = "common/allocator.rs"]
mod allocator;
use rnn_runtime::init::SplitMix64;
use rnn_train::freeze::Trainable;
use unroll_examples::lista::models::{Lista, ListaCp};
use unroll_examples::lista::{
    best_lambda, fista, ista, iterations_to, lista_cp_init, lista_cp_new_step,
    lista_cp_steps_so_far, lista_init, lista_parts, model_nmse_db, nmse_db, LayerWise, Problem,
    Progress, Unrolled,
};

const M: usize = 250;
const N: usize = 500;
const SPARSITY: f64 = 0.1;
const SNR_DB: f64 = 40.0;
const TEST_SIZE: usize = 1000;
const LAYERS: usize = 16;
/// ISTA's iterations: enough to pass the trained networks' NMSE.
const ISTA_ITERATIONS: usize = 6000;
const FISTA_ITERATIONS: usize = 1500;
/// The λ grid, chosen on the validation set by the NMSE FISTA converges to.
const LAMBDAS: [f32; 6] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05];
/// The networks start as ISTA at this λ (VITA-Group's LISTA-CPSS default): a
/// larger threshold than the λ that solves best, so the first layers' iterates
/// are sparse.
const INIT_LAMBDA: f32 = 0.4;
/// LISTA-CP's first stage of each step (the new step alone): at most this
/// many iterations, stopped after this many validations without a better
/// NMSE (the other stages: 2,000 and 8).
const ALONE_ITERATIONS: usize = 20_000;
const ALONE_PATIENCE: usize = 40;
/// The λ ISTA runs at (a larger λ reaches a given NMSE in fewer iterations, if it reaches it).
const ISTA_LAMBDAS: [f32; 5] = [0.002, 0.005, 0.01, 0.02, 0.05];

fn main() -> Result<(), Box<dyn Error>> {
    allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|arg| arg == "--quick");
    let baselines_only = args.iter().any(|arg| arg == "--baselines");
    let value = |flag: &str| {
        args.iter()
            .position(|arg| arg == flag)
            .and_then(|at| args.get(at + 1))
    };
    let png = value("--out").map_or_else(|| PathBuf::from("target/lista.png"), PathBuf::from);
    let iterations: Option<usize> = value("--iterations").and_then(|text| text.parse().ok());
    let layers = value("--layers")
        .and_then(|text| text.parse().ok())
        .unwrap_or(if quick { 4 } else { LAYERS })
        .clamp(1, LAYERS);
    // `--only lista` or `--only lista-cp` trains one network.
    let only = value("--only").cloned();
    let cold = args.iter().any(|arg| arg == "--cold");
    let start = Instant::now();

    let mut rng = SplitMix64::new(2026);
    let problem = Problem::new(M, N, SPARSITY, Some(SNR_DB), &mut rng);
    let test = problem.sample(TEST_SIZE, &mut SplitMix64::new(1));
    let validation = problem.sample(TEST_SIZE, &mut SplitMix64::new(2));
    println!(
        "problem: A {M} × {N}, x Bernoulli({SPARSITY})·N(0, 1), SNR {SNR_DB} dB (noise σ = {:.2e}), L = ‖A‖² = {:.3}",
        problem.noise_std,
        problem.lipschitz
    );

    let (lambda, converged_db) = best_lambda(&problem, &validation, &LAMBDAS, FISTA_ITERATIONS);
    println!("λ = {lambda} (of {LAMBDAS:?}, best NMSE FISTA converges to on the validation set: {converged_db:.2} dB)");
    let (ista_iterations, fista_iterations) = if quick || only.is_some() {
        (600, 300)
    } else {
        (ISTA_ITERATIONS, FISTA_ITERATIONS)
    };
    // ISTA at every λ of the grid: a larger λ converges faster to a worse
    // floor, so "iterations ISTA needs" is taken at its best λ for each target.
    let ista_lambdas: Vec<f32> = if quick || only.is_some() {
        vec![lambda]
    } else {
        ISTA_LAMBDAS.to_vec()
    };
    let ista_curves: Vec<(f32, Vec<f64>)> = ista_lambdas
        .iter()
        .map(|&at| {
            let mut curve = Vec::with_capacity(ista_iterations);
            ista(&problem, test.y.view(), at, ista_iterations, |_, x| {
                curve.push(nmse_db(x.view(), test.x.view()));
            });
            (at, curve)
        })
        .collect();
    let ista_curve = ista_curves
        .iter()
        .find(|(at, _)| *at == lambda)
        .map(|(_, curve)| curve.clone())
        .unwrap_or_else(|| ista_curves[0].1.clone());
    let ista_needs = |target: f64| -> Option<(usize, f32)> {
        ista_curves
            .iter()
            .filter_map(|(at, curve)| iterations_to(curve, target).map(|n| (n, *at)))
            .min_by_key(|(n, _)| *n)
    };
    let mut fista_curve = Vec::with_capacity(fista_iterations);
    fista(&problem, test.y.view(), lambda, fista_iterations, |_, x| {
        fista_curve.push(nmse_db(x.view(), test.x.view()));
    });
    for (at, curve) in &ista_curves {
        println!(
            "ISTA λ = {at}: {:.2} dB after {ista_iterations} iterations, −30 dB after {}",
            curve.last().copied().unwrap_or(f64::NAN),
            describe(iterations_to(curve, -30.0)),
        );
    }
    println!(
        "FISTA λ = {lambda}: {:.2} dB after {fista_iterations}, −30 dB after {}, −35 dB after {} ({:.0} s so far)",
        fista_curve.last().copied().unwrap_or(f64::NAN),
        describe(iterations_to(&fista_curve, -30.0)),
        describe(iterations_to(&fista_curve, -35.0)),
        start.elapsed().as_secs_f64()
    );
    if baselines_only {
        return Ok(());
    }

    let schedule = LayerWise {
        lr: 5e-4,
        stages: vec![1.0, 0.2, 0.02],
        batch: value("--batch")
            .and_then(|text| text.parse().ok())
            .unwrap_or(64),
        max_iterations: iterations.unwrap_or(if quick { 100 } else { 2000 }),
        validate_every: if quick { 25 } else { 50 },
        // A stage stops after 400 iterations without a better validation
        // NMSE (VITA-Group's waits 4,000 of batches the same size).
        patience: value("--patience")
            .and_then(|text| text.parse().ok())
            .unwrap_or(if quick { 4 } else { 8 }),
        warm_start: Vec::new(),
        alone: None,
    };
    // Early stopping's validation set, as large as the reference's: the
    // best of many noisy looks at a small one is biased low.
    let early_stopping =
        problem.sample(if quick { 256 } else { TEST_SIZE }, &mut SplitMix64::new(3));

    let mut tied = Lista::from_weights(&lista_init(&problem, INIT_LAMBDA))?;
    let trains = |name: &str| only.as_deref().is_none_or(|only| only == name);
    let (tied_stages, tied_curve) = train(
        "LISTA (tied)",
        trains("lista"),
        &mut tied,
        &schedule,
        &problem,
        layers,
        (&early_stopping, &test),
        lista_parts,
        lista_parts,
    )?;

    let mut untied = ListaCp::from_weights(&lista_cp_init(&problem, INIT_LAMBDA, LAYERS))?;
    // Each new step starts as the trained step before it.
    let untied_schedule = LayerWise {
        warm_start: if cold {
            Vec::new()
        } else {
            vec!["W_l0", "theta_l0"]
        },
        // The first stage trains the new step alone, at a fraction of the
        // cost of an iteration of the whole network: it runs longer.
        alone: Some((
            value("--alone-iterations")
                .and_then(|text| text.parse().ok())
                .unwrap_or(if quick { 100 } else { ALONE_ITERATIONS }),
            value("--alone-patience")
                .and_then(|text| text.parse().ok())
                .unwrap_or(if quick { 4 } else { ALONE_PATIENCE }),
        )),
        ..schedule.clone()
    };
    let (untied_stages, untied_curve) = train(
        "LISTA-CP (untied)",
        trains("lista-cp"),
        &mut untied,
        &untied_schedule,
        &problem,
        layers,
        (&early_stopping, &test),
        lista_cp_new_step,
        lista_cp_steps_so_far,
    )?;
    // The last network's own iterates, beside the networks trained for each K.
    let tied_last = layer_curve(&tied, &test, layers)?;
    let untied_last = layer_curve(&untied, &test, layers)?;

    println!("\nNMSE (dB) on the {TEST_SIZE} held-out samples, by iterations / layers K (the networks as trained for K layers; in brackets, iterate K of the network trained for {layers}):");
    println!(
        "{:>3} {:>9} {:>9} {:>22} {:>22}",
        "K", "ISTA", "FISTA", "LISTA (tied)", "LISTA-CP (untied)"
    );
    for k in 0..layers {
        println!(
            "{:>3} {:>9.2} {:>9.2} {:>13.2} ({:>6.2}) {:>13.2} ({:>6.2})",
            k + 1,
            ista_curve[k],
            fista_curve[k],
            tied_curve[k],
            tied_last[k],
            untied_curve[k],
            untied_last[k]
        );
    }
    println!(
        "(validation NMSE after each stage of growth: tied {}, untied {})",
        join(&tied_stages),
        join(&untied_stages)
    );
    for (name, curve) in [
        ("LISTA (tied)", &tied_curve),
        ("LISTA-CP (untied)", &untied_curve),
    ] {
        let reached = curve[layers - 1];
        let fista_needs = iterations_to(&fista_curve, reached);
        let ista = match ista_needs(reached) {
            Some((n, at)) => format!(
                "{n} iterations at λ = {at} ({:.0}× K)",
                n as f64 / layers as f64
            ),
            None => format!("more than {ista_iterations} iterations at every λ"),
        };
        println!(
            "{name} at K = {layers}: {reached:.2} dB; ISTA needs {ista}, FISTA {}",
            describe(fista_needs)
        );
    }
    if let Some(dir) = png.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    draw(
        &png,
        layers,
        &[&ista_curve, &fista_curve, &tied_curve, &untied_curve],
    )?;
    println!(
        "picture: {} (ISTA black, FISTA blue, LISTA red, LISTA-CP green); {:.0} s in all",
        png.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn train<M: Unrolled>(
    name: &str,
    wanted: bool,
    model: &mut M,
    schedule: &LayerWise,
    problem: &Problem,
    layers: usize,
    (validation, test): (
        &unroll_examples::lista::Samples,
        &unroll_examples::lista::Samples,
    ),
    new_part: impl Fn(usize) -> Trainable,
    all_parts: impl Fn(usize) -> Trainable,
) -> Result<(Vec<f64>, Vec<f64>), Box<dyn Error>> {
    if !wanted {
        println!("{name}: not trained (--only)");
        return Ok((Vec::new(), layer_curve(model, test, layers)?));
    }
    let started = Instant::now();
    // The most iterations of each stage of a step.
    let limits: Vec<u64> = (0..schedule.stages.len())
        .map(|stage| match (stage, schedule.alone) {
            (0, Some((alone, _))) => alone as u64,
            _ => schedule.max_iterations as u64,
        })
        .collect();
    let per_step: u64 = limits.iter().sum();
    let total = layers as u64 * per_step;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} (at most) {elapsed_precise} {msg}",
        )?
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_owned());
    let mut rng = SplitMix64::new(7);
    let mut done = 0u64;
    let mut last = (0, 0);
    let mut iterations = 0u64;
    let mut curve = Vec::with_capacity(layers);
    let stages = schedule.train(
        model,
        problem,
        layers,
        new_part,
        all_parts,
        validation,
        &mut rng,
        |p: Progress| {
            if (p.steps, p.stage) != last {
                last = (p.steps, p.stage);
                done = (p.steps - 1) as u64 * per_step + limits[..p.stage].iter().sum::<u64>();
            }
            iterations += 1;
            bar.set_position(done + p.iteration as u64);
            bar.set_message(format!(
                "K = {} stage {} loss {:.2e} best {:.2} dB",
                p.steps, p.stage, p.loss, p.best_db
            ));
        },
        |k, model: &M| {
            curve.push(model_nmse_db(model, test, k)?);
            bar.suspend(|| {
                println!(
                    "{name}: K = {k} trained, held-out NMSE {:.2} dB ({:.0} s)",
                    curve[k - 1],
                    started.elapsed().as_secs_f64()
                )
            });
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    println!(
        "{name}: trained {layers} layers in {:.0} s ({iterations} iterations)",
        started.elapsed().as_secs_f64()
    );
    Ok((stages, curve))
}

fn layer_curve(
    model: &dyn Unrolled,
    test: &unroll_examples::lista::Samples,
    layers: usize,
) -> Result<Vec<f64>, Box<dyn Error>> {
    let iterates = model.solve(test.y.view(), layers)?;
    Ok((0..layers)
        .map(|k| nmse_db(iterates.index_axis(ndarray::Axis(1), k), test.x.view()))
        .collect())
}

fn describe(iterations: Option<usize>) -> String {
    iterations.map_or_else(|| "—".to_owned(), |n| n.to_string())
}

fn join(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// NMSE against K on a log axis of iterations. No text: plotters draws text
/// only with a font backend, left out to keep the build light (the legend
/// is printed).
fn draw(path: &PathBuf, layers: usize, curves: &[&Vec<f64>]) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let low = curves
        .iter()
        .flat_map(|curve| curve.iter().take(layers))
        .fold(0.0f64, |acc, v| acc.min(*v))
        .floor()
        - 1.0;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .build_cartesian_2d(1f64..layers as f64, low..0f64)?;
    for level in (low as i64..=0).filter(|db| db % 5 == 0) {
        chart.draw_series(LineSeries::new(
            [(1.0, level as f64), (layers as f64, level as f64)],
            RGBColor(220, 220, 220),
        ))?;
    }
    let colors = [BLACK, BLUE, RED, GREEN];
    for (curve, color) in curves.iter().zip(colors) {
        chart.draw_series(LineSeries::new(
            curve
                .iter()
                .take(layers)
                .enumerate()
                .map(|(k, db)| ((k + 1) as f64, *db)),
            color.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

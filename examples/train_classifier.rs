//! Training a sequence classifier you can watch learn: an LSTM and a linear
//! head, declared with `rnn!`, trained with `rnn-train` on synthetic
//! variable-length sequences, with a progress bar, a held-out evaluation
//! after every epoch, a loss curve written as a PNG and a checkpoint.
//!
//! The task needs memory: each sequence (5 to 40 steps) carries noise in
//! `[-1, 1]` on its first channel and a marker on its second at exactly two
//! steps; the class is the signs of the two marked values (`--`, `-+`,
//! `+-`, `++`), read only after the last step. Chance is 25%.
//!
//! Run with `cargo run --release -p unroll-examples --example train_classifier`
//! (`-- --out PATH` to choose where the PNG goes; the checkpoint goes beside
//! it, with the extension `.safetensors`).

use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use ndarray::{s, Array1, Array3};
use plotters::prelude::*;
use rnn_runtime::init::SplitMix64;
use rnn_train::optim::{Adam, Optimizer};
use rnn_train::schedule::{Cosine, Schedule, Warmup};
use rnn_train::{checkpoint, clip, loss};

use self::model::Classifier;

mod model {
    rnn_macros::rnn! {
        gradients = true;

        network Classifier {
            input x: [2];
            layer enc = lstm(hidden = 32);
            layer head = linear(out = 4);
            unroll dynamic;
        }
    }
}

/// The same network with its weights rounded to bfloat16 and to int8, for
/// inference with the trained weights.
mod reduced {
    rnn_macros::rnn! {
        network ClassifierBf16 {
            input x: [2];
            layer enc = lstm(hidden = 32);
            layer head = linear(out = 4);
            unroll dynamic;
            precision bf16;
        }
        network ClassifierInt8 {
            input x: [2];
            layer enc = lstm(hidden = 32);
            layer head = linear(out = 4);
            unroll dynamic;
            precision int8;
        }
    }
}

/// The shortest and the longest sequence of the task.
const MIN_LENGTH: usize = 5;
const MAX_LENGTH: usize = 40;
/// The classes, named by the signs of the two marked values.
const CLASS_NAMES: [&str; 4] = ["--", "-+", "+-", "++"];
const N_TRAIN: usize = 4096;
const N_HELD_OUT: usize = 1024;
const BATCH_SIZE: usize = 64;
const EPOCHS: usize = 24;
const PEAK_LR: f64 = 1e-2;
const WARMUP_STEPS: u64 = 100;
const MAX_GRAD_NORM: f32 = 1.0;

fn main() -> Result<(), Box<dyn Error>> {
    let png_path = png_path_from_args();
    let checkpoint_path = png_path.with_extension("safetensors");
    if let Some(dir) = png_path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }

    // Another seed: the held-out sequences are new ones.
    let train = Dataset::generate(N_TRAIN, &mut SplitMix64::new(1));
    let held_out = Dataset::generate(N_HELD_OUT, &mut SplitMix64::new(2));
    let chance = 1.0 / CLASS_NAMES.len() as f32;
    let chance_loss = (CLASS_NAMES.len() as f32).ln();
    println!(
        "task: signs of the two marked values among {MIN_LENGTH} to {MAX_LENGTH} noisy steps; \
         {N_TRAIN} training and {N_HELD_OUT} held-out sequences"
    );
    println!(
        "chance: accuracy {:.1}%, loss ln 4 = {chance_loss:.3}",
        100.0 * chance
    );

    let mut model = Classifier::random(0);
    let steps_per_epoch = N_TRAIN / BATCH_SIZE;
    let total_steps = (EPOCHS * steps_per_epoch) as u64;
    let schedule = Warmup {
        steps: WARMUP_STEPS,
        start_factor: 0.1,
        then: Cosine {
            base: PEAK_LR,
            min: PEAK_LR / 100.0,
            period: total_steps - WARMUP_STEPS,
        },
    };
    let mut optimizer = Adam::adamw(PEAK_LR);
    let before = evaluate(&model, &held_out)?;
    println!(
        "before training: held-out loss {:.3}, accuracy {:.1}%",
        before.loss,
        100.0 * before.accuracy
    );

    let style = ProgressStyle::with_template(
        "{bar:30} step {pos}/{len}, {steps_per_sec}, eta {eta} | {msg}",
    )?
    .with_key(
        "steps_per_sec",
        |state: &ProgressState, out: &mut dyn fmt::Write| {
            // The bar writes into a buffer of its own: there is no error to pass on.
            let _ = write!(out, "{:.0} steps/s", state.per_sec());
        },
    );
    let bar = ProgressBar::new(total_steps).with_style(style);
    let mut order: Vec<usize> = (0..N_TRAIN).collect();
    let mut shuffle_rng = SplitMix64::new(3);
    let mut losses = Vec::with_capacity(total_steps as usize);
    let mut accuracies = vec![before.accuracy];
    let start = Instant::now();
    for epoch in 1..=EPOCHS {
        shuffle(&mut order, &mut shuffle_rng);
        for indices in order.chunks(BATCH_SIZE) {
            let (x, lengths, classes) = train.batch(indices);
            let (out, tape) = model.forward_train(x.view(), Some(&lengths), None)?;
            let loss = loss::cross_entropy_last(out.y.view(), classes.view(), Some(&lengths))?;
            let mut grads = model.backward(&tape, loss.grad.view(), None)?;
            model.recycle(tape);
            clip::clip_grad_norm(&mut grads.params, MAX_GRAD_NORM);
            optimizer.set_lr(schedule.lr(optimizer.steps()));
            optimizer.step(&mut model, &grads.params)?;
            losses.push(loss.value);
            bar.set_message(format!(
                "epoch {epoch}/{EPOCHS}, loss {:.3}",
                mean_of_last(&losses, 20)
            ));
            bar.inc(1);
        }
        let evaluation = evaluate(&model, &held_out)?;
        accuracies.push(evaluation.accuracy);
        // Printed through the bar so that the line stays above it (and is
        // printed even when standard error is not a terminal and the bar
        // is hidden).
        bar.suspend(|| {
            println!(
                "epoch {epoch:2}: training loss {:.3}, held-out loss {:.3}, accuracy {:.1}%",
                mean_of_last(&losses, steps_per_epoch),
                evaluation.loss,
                100.0 * evaluation.accuracy
            );
        });
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();

    let evaluation = evaluate(&model, &held_out)?;
    println!(
        "trained {total_steps} steps in {seconds:.1} s ({:.0} steps/s)",
        total_steps as f64 / seconds
    );
    println!(
        "training loss {:.3} (first 20 steps) -> {:.3} (last 20)",
        losses[..20].iter().sum::<f32>() / 20.0,
        mean_of_last(&losses, 20)
    );
    println!(
        "held-out accuracy {:.1}% ({}/{N_HELD_OUT}); chance {:.1}%",
        100.0 * evaluation.accuracy,
        evaluation.correct,
        100.0 * chance
    );
    print_examples(&held_out, &evaluation, 6);

    // The trained weights in bfloat16 and int8 (states, activations and sums
    // stay f32): what serving the model in reduced precision costs.
    let weights = model.to_weights();
    let reduced = [
        (
            "bf16",
            reduced::ClassifierBf16::from_weights(&weights)?
                .forward(held_out.x.view(), Some(&held_out.lengths), None)?
                .y,
        ),
        (
            "int8",
            reduced::ClassifierInt8::from_weights(&weights)?
                .forward(held_out.x.view(), Some(&held_out.lengths), None)?
                .y,
        ),
    ];
    for (precision, y) in reduced {
        let rounded = evaluate_outputs(&y, &held_out)?;
        println!(
            "held-out in {precision} weights: loss {:.4} (f32 {:.4}), accuracy {:.1}% ({} of {N_HELD_OUT} predictions differ from f32)",
            rounded.loss,
            evaluation.loss,
            100.0 * rounded.accuracy,
            rounded
                .probabilities
                .iter()
                .zip(&evaluation.probabilities)
                .filter(|(a, b)| predicted_class(a) != predicted_class(b))
                .count()
        );
    }

    draw_curves(
        &png_path,
        &losses,
        &accuracies,
        steps_per_epoch,
        chance_loss,
        chance,
    )?;
    println!("loss curve: {}", png_path.display());
    println!(
        "  top: training loss per step (light blue), its mean over 50 steps (blue), chance ln 4 (red);"
    );
    println!(
        "  bottom: held-out accuracy after each epoch (blue), chance 25% (red); \
         grid lines every 0.25 of loss, 10% of accuracy and {} steps (5 epochs)",
        5 * steps_per_epoch
    );
    checkpoint::save(&checkpoint_path, &model, &optimizer)?;
    println!(
        "checkpoint (weights, AdamW state, step {}): {}",
        optimizer.steps(),
        checkpoint_path.display()
    );
    Ok(())
}

/// The PNG's path: `--out PATH`, or `target/train_classifier.png`; exits
/// with a usage line on anything else.
fn png_path_from_args() -> PathBuf {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (None, _, _) => PathBuf::from("target/train_classifier.png"),
        (Some("--out"), Some(path), None) => PathBuf::from(path),
        _ => {
            eprintln!("usage: train_classifier [--out PATH.png]");
            std::process::exit(2);
        }
    }
}

/// Sequences of the task, padded to `MAX_LENGTH` steps.
#[derive(Debug)]
struct Dataset {
    /// `[N, MAX_LENGTH, 2]`: the noise, then the marker (1 at the two marked steps).
    x: Array3<f32>,
    lengths: Vec<usize>,
    /// The marked steps of each sequence, in order.
    marks: Vec<[usize; 2]>,
    /// `2 * (first marked value > 0) + (second marked value > 0)`.
    classes: Array1<usize>,
}

impl Dataset {
    fn generate(size: usize, rng: &mut SplitMix64) -> Dataset {
        let mut x = Array3::<f32>::zeros((size, MAX_LENGTH, 2));
        let mut lengths = Vec::with_capacity(size);
        let mut marks = Vec::with_capacity(size);
        let mut classes = Vec::with_capacity(size);
        for sequence in 0..size {
            let length = MIN_LENGTH + below(rng, MAX_LENGTH - MIN_LENGTH + 1);
            for t in 0..length {
                x[(sequence, t, 0)] = rng.uniform(-1.0, 1.0);
            }
            let first = below(rng, length);
            // A second step other than the first, uniformly.
            let second = (first + 1 + below(rng, length - 1)) % length;
            let marked = [first.min(second), first.max(second)];
            for &t in &marked {
                x[(sequence, t, 1)] = 1.0;
            }
            let positive = |t: usize| usize::from(x[(sequence, t, 0)] > 0.0);
            classes.push(2 * positive(marked[0]) + positive(marked[1]));
            lengths.push(length);
            marks.push(marked);
        }
        Dataset {
            x,
            lengths,
            marks,
            classes: Array1::from(classes),
        }
    }

    /// The sequences at `indices`, padded to the longest of them.
    fn batch(&self, indices: &[usize]) -> (Array3<f32>, Vec<usize>, Array1<usize>) {
        let lengths: Vec<usize> = indices.iter().map(|&i| self.lengths[i]).collect();
        let steps = lengths.iter().copied().max().unwrap_or(0);
        let mut x = Array3::<f32>::zeros((indices.len(), steps, 2));
        for (row, &i) in indices.iter().enumerate() {
            x.slice_mut(s![row, .., ..])
                .assign(&self.x.slice(s![i, ..steps, ..]));
        }
        let classes = indices.iter().map(|&i| self.classes[i]).collect();
        (x, lengths, classes)
    }
}

/// The model's loss and predictions on a whole data set.
#[derive(Debug)]
struct Evaluation {
    loss: f32,
    accuracy: f32,
    correct: usize,
    /// Each sequence's class probabilities at its last step.
    probabilities: Vec<[f32; 4]>,
}

fn evaluate(model: &Classifier, data: &Dataset) -> rnn_runtime::Result<Evaluation> {
    let out = model.forward(data.x.view(), Some(&data.lengths), None)?;
    evaluate_outputs(&out.y, data)
}

/// [`evaluate`] on a model's outputs `y` for the whole data set.
fn evaluate_outputs(y: &Array3<f32>, data: &Dataset) -> rnn_runtime::Result<Evaluation> {
    let loss = loss::cross_entropy_last(y.view(), data.classes.view(), Some(&data.lengths))?;
    let probabilities: Vec<[f32; 4]> = data
        .lengths
        .iter()
        .enumerate()
        .map(|(sequence, &length)| {
            let logits = y.slice(s![sequence, length - 1, ..]);
            let largest = logits.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let exps: Vec<f32> = logits.iter().map(|&l| (l - largest).exp()).collect();
            let sum: f32 = exps.iter().sum();
            std::array::from_fn(|class| exps[class] / sum)
        })
        .collect();
    let correct = probabilities
        .iter()
        .zip(&data.classes)
        .filter(|(p, &class)| predicted_class(p) == class)
        .count();
    Ok(Evaluation {
        loss: loss.value,
        accuracy: correct as f32 / data.lengths.len() as f32,
        correct,
        probabilities,
    })
}

fn predicted_class(probabilities: &[f32; 4]) -> usize {
    (0..4)
        .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
        .expect("four classes")
}

/// Prints the first `count` held-out sequences and the first one the
/// model gets wrong, if any.
fn print_examples(data: &Dataset, evaluation: &Evaluation, count: usize) {
    println!("held-out examples:");
    for sequence in 0..count {
        print_example(data, evaluation, sequence);
    }
    let first_miss = (count..data.lengths.len()).find(|&sequence| {
        predicted_class(&evaluation.probabilities[sequence]) != data.classes[sequence]
    });
    if let Some(sequence) = first_miss {
        println!("the first held-out sequence it gets wrong:");
        print_example(data, evaluation, sequence);
    }
}

fn print_example(data: &Dataset, evaluation: &Evaluation, sequence: usize) {
    let [first, second] = data.marks[sequence];
    let class = data.classes[sequence];
    let probabilities = &evaluation.probabilities[sequence];
    let predicted = predicted_class(probabilities);
    println!(
        "  #{sequence:<4} {:2} steps, marks at {first:2} ({:+.2}) and {second:2} ({:+.2}): \
         class {}, predicted {} with p = {:.2}{}",
        data.lengths[sequence],
        data.x[(sequence, first, 0)],
        data.x[(sequence, second, 0)],
        CLASS_NAMES[class],
        CLASS_NAMES[predicted],
        probabilities[predicted],
        if predicted == class { "" } else { " (wrong)" },
    );
}

/// Draws the training loss (top) and the held-out accuracy (bottom) on a
/// shared step axis. No text: plotters draws text only with a font
/// backend, which needs system libraries or a font file shipped here, so
/// the axes are explained where the picture is shown.
fn draw_curves(
    path: &std::path::Path,
    losses: &[f32],
    accuracies: &[f32],
    steps_per_epoch: usize,
    chance_loss: f32,
    chance: f32,
) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(360);
    let last_step = losses.len() as f64;
    let grid_steps = 5 * steps_per_epoch;

    let max_loss = losses.iter().copied().fold(chance_loss, f32::max).min(2.0);
    let loss_top = (f64::from(max_loss) / 0.25).ceil() * 0.25;
    let mut loss_chart = ChartBuilder::on(&top)
        .margin(16)
        .build_cartesian_2d(0.0..last_step, 0.0..loss_top)?;
    draw_grid(&mut loss_chart, last_step, loss_top, grid_steps, 0.25)?;
    let per_step = losses
        .iter()
        .enumerate()
        .map(|(step, &value)| (step as f64, f64::from(value)));
    loss_chart.draw_series(LineSeries::new(per_step, RGBColor(160, 190, 230)))?;
    let smoothed = (0..losses.len()).map(|step| {
        let window = &losses[step.saturating_sub(49)..=step];
        let mean = window.iter().sum::<f32>() / window.len() as f32;
        (step as f64, f64::from(mean))
    });
    loss_chart.draw_series(LineSeries::new(smoothed, BLUE.stroke_width(2)))?;
    draw_level(&mut loss_chart, last_step, f64::from(chance_loss))?;

    let mut accuracy_chart = ChartBuilder::on(&bottom)
        .margin(16)
        .build_cartesian_2d(0.0..last_step, 0.0..1.0)?;
    draw_grid(&mut accuracy_chart, last_step, 1.0, grid_steps, 0.1)?;
    let per_epoch: Vec<(f64, f64)> = accuracies
        .iter()
        .enumerate()
        .map(|(epoch, &value)| ((epoch * steps_per_epoch) as f64, f64::from(value)))
        .collect();
    accuracy_chart.draw_series(LineSeries::new(per_epoch.clone(), BLUE.stroke_width(2)))?;
    accuracy_chart.draw_series(
        per_epoch
            .into_iter()
            .map(|point| Circle::new(point, 3, BLUE.filled())),
    )?;
    draw_level(&mut accuracy_chart, last_step, f64::from(chance))?;
    root.present()?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Grid lines every `x_every` steps and `y_every` units, and a frame.
fn draw_grid(
    chart: &mut Chart<'_, '_>,
    x_end: f64,
    y_end: f64,
    x_every: usize,
    y_every: f64,
) -> Result<(), Box<dyn Error>> {
    let grid = RGBColor(225, 225, 225);
    let vertical = (0..=x_end as usize)
        .step_by(x_every)
        .map(|step| vec![(step as f64, 0.0), (step as f64, y_end)]);
    let n_horizontal = (y_end / y_every).round() as usize;
    let horizontal = (0..=n_horizontal).map(|k| {
        let y = k as f64 * y_every;
        vec![(0.0, y), (x_end, y)]
    });
    for line in vertical.chain(horizontal) {
        chart.draw_series(LineSeries::new(line, grid))?;
    }
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, 0.0), (x_end, y_end)],
        BLACK,
    )))?;
    Ok(())
}

/// A red horizontal line at `level` (chance).
fn draw_level(chart: &mut Chart<'_, '_>, x_end: f64, level: f64) -> Result<(), Box<dyn Error>> {
    chart.draw_series(LineSeries::new(
        [(0.0, level), (x_end, level)],
        RED.stroke_width(2),
    ))?;
    Ok(())
}

/// The mean of the last `count` values (of all of them when fewer).
fn mean_of_last(values: &[f32], count: usize) -> f32 {
    let tail = &values[values.len().saturating_sub(count)..];
    tail.iter().sum::<f32>() / tail.len().max(1) as f32
}

/// A uniform integer in `0..n` (`n` at least 1; the modulo bias is below
/// 1e-17 for the small `n` used here).
fn below(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// Fisher–Yates.
fn shuffle(items: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(rng, i + 1));
    }
}

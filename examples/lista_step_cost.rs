//! What one training iteration of LISTA-CP costs at the literature's size
//! (`A` 250 × 500, K = 16, batch 64): the forward and backward passes, and
//! the Adam step (`update_params`) when one step's copies are trained (the
//! first stage of layer-wise growth) and when all 16 are, and the first
//! stage as layer-wise training runs it (the newest step alone). Medians of
//! `--reps` timed iterations after two of warm-up.
//!
//! Run with `cargo run --release -p unroll-examples --example lista_step_cost`
//! (`-- --reps N`, `-- --threads N` for a fixed thread count instead of
//! the default `Auto`).

use std::error::Error;
use std::time::Instant;

#[path = "common/allocator.rs"]
mod allocator;

use ndarray::Axis;
use rnn_runtime::init::SplitMix64;
use rnn_runtime::Threads;
use rnn_train::freeze::Trainable;
use rnn_train::optim::{Adam, Optimizer};
use unroll_examples::lista::models::ListaCp;
use unroll_examples::lista::{lista_cp_init, lista_cp_new_step, Problem, Unrolled};

const STEPS: usize = 16;

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The medians, in ms, of the two times (passes, Adam step) in seconds that
/// `iteration` measures, over `reps` runs after two of warm-up.
fn medians(
    reps: usize,
    mut iteration: impl FnMut() -> rnn_runtime::Result<(f64, f64)>,
) -> rnn_runtime::Result<(f64, f64)> {
    let (mut passes, mut updates) = (Vec::new(), Vec::new());
    for rep in 0..reps + 2 {
        let (passed, updated) = iteration()?;
        if rep >= 2 {
            passes.push(passed * 1e3);
            updates.push(updated * 1e3);
        }
    }
    Ok((median(passes), median(updates)))
}

fn main() -> Result<(), Box<dyn Error>> {
    allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = args
        .iter()
        .position(|arg| arg == "--reps")
        .and_then(|at| args.get(at + 1))
        .and_then(|text| text.parse().ok())
        .unwrap_or(9)
        .max(1);
    let mut rng = SplitMix64::new(2026);
    let problem = Problem::new(250, 500, 0.1, Some(40.0), &mut rng);
    let mut model = ListaCp::from_weights(&lista_cp_init(&problem, 0.4, STEPS))?;
    let threads = args
        .iter()
        .position(|arg| arg == "--threads")
        .and_then(|at| args.get(at + 1))
        .and_then(|text| text.parse().ok())
        .map_or(Threads::Auto, Threads::Fixed);
    model.set_threads(threads);
    let batch = problem.sample(64, &mut rng);
    let parts = [
        (
            "one step's copies trained",
            Trainable::new()
                .copies("W_l0", STEPS - 1..STEPS)
                .copies("theta_l0", STEPS - 1..STEPS),
        ),
        (
            "all 16 steps' copies trained",
            Trainable::new()
                .copies("W_l0", 0..STEPS)
                .copies("theta_l0", 0..STEPS),
        ),
    ];
    for (what, part) in parts {
        let mut adam = Adam::new(5e-4);
        let (pass, update) = medians(reps, || {
            let started = Instant::now();
            let (_, grads) = model.loss_and_grads(batch.y.view(), batch.x.view(), STEPS)?;
            let passed = started.elapsed().as_secs_f64();
            let started = Instant::now();
            {
                let mut selected = part.select(&mut model)?;
                let chosen = selected.grads(&grads)?;
                adam.step(&mut selected, &chosen)?;
            }
            let updated = started.elapsed().as_secs_f64();
            // As layer-wise training does: the next backward writes into them.
            model.recycle_grads(grads);
            Ok((passed, updated))
        })?;
        println!(
            "{what}: forward + backward {pass:.1} ms, Adam step {update:.1} ms (medians of {reps})"
        );
    }
    // The first stage as layer-wise training runs it: the 15 frozen steps'
    // inference, then the newest step alone from their last iterate.
    let mut one = model.one_step(STEPS - 1).expect("per-step parameters")?;
    one.set_threads(threads);
    let part = lista_cp_new_step(1);
    let mut adam = Adam::new(5e-4);
    let (pass, update) = medians(reps, || {
        let started = Instant::now();
        let iterates = model.solve(batch.y.view(), STEPS - 1)?;
        let start = iterates.index_axis(Axis(1), STEPS - 2);
        let (_, grads) = one.loss_and_grads_from(batch.y.view(), Some(start), batch.x.view(), 1)?;
        let passed = started.elapsed().as_secs_f64();
        let started = Instant::now();
        {
            let mut selected = part.select(&mut *one)?;
            let chosen = selected.grads(&grads)?;
            adam.step(&mut selected, &chosen)?;
        }
        let updated = started.elapsed().as_secs_f64();
        one.recycle_grads(grads);
        Ok((passed, updated))
    })?;
    println!(
        "the newest step alone (15 steps' inference, then one): forward + backward {pass:.1} ms, Adam step {update:.1} ms (medians of {reps})"
    );
    Ok(())
}

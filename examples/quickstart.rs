//! Quickstart: one model, written in the unroll language with `rnn!`,
//! unrolled two ways — statically for 50 steps and dynamically — and run on
//! a batch of variable-length sequences.
//!
//! Run with `cargo run --release -p unroll-examples --example quickstart`.

use std::time::{Duration, Instant};

use ndarray::Array3;
use rnn_macros::rnn;
use rnn_runtime::init::SplitMix64;

rnn! {
    // A two-layer LSTM tagger over 32-dimensional frames, unrolled
    // statically: straight-line code for exactly 50 steps.
    network TaggerStatic {
        input x: [32];
        layer enc = lstm(hidden = 64, layers = 2);
        unroll static 50;
    }

    // The same model, unrolled dynamically: one loop over the run-time length.
    network TaggerDynamic {
        input x: [32];
        layer enc = lstm(hidden = 64, layers = 2);
        unroll dynamic;
    }
}

/// The median of `runs` timings of `work`.
fn median_time(runs: usize, mut work: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() -> Result<(), rnn_runtime::RnnError> {
    // The same seed gives the same weights to both: they are one model.
    let static_model = TaggerStatic::random(0);
    let dynamic_model = TaggerDynamic::random(0);

    // 16 sequences of up to 50 steps, each with its own length.
    let (batch, steps) = (16, 50);
    let lengths: Vec<usize> = (0..batch).map(|b| 50 - 3 * b).collect();
    let mut rng = SplitMix64::new(1);
    let x = Array3::from_shape_simple_fn((batch, steps, 32), || rng.uniform(-1.0, 1.0));

    let by_static = static_model.forward(x.view(), Some(&lengths), None)?;
    let by_dynamic = dynamic_model.forward(x.view(), Some(&lengths), None)?;
    println!("lengths: {lengths:?}");
    println!(
        "y {:?}, h_n {:?}, c_n {:?}",
        by_static.y.shape(),
        by_static.h_n.shape(),
        by_static.c_n.shape()
    );

    let difference = by_static
        .y
        .iter()
        .zip(by_dynamic.y.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("static vs dynamic: max |difference| of y = {difference:e}");
    let padded_zero = (0..batch).all(|b| {
        by_static
            .y
            .slice(ndarray::s![b, lengths[b].., ..])
            .iter()
            .all(|v| *v == 0.0)
    });
    println!("outputs past each length are zero: {padded_zero}");

    let static_time = median_time(21, || {
        static_model
            .forward(x.view(), Some(&lengths), None)
            .expect("runs");
    });
    let dynamic_time = median_time(21, || {
        dynamic_model
            .forward(x.view(), Some(&lengths), None)
            .expect("runs");
    });
    println!(
        "time per batch (median of 21): static {:.3} ms, dynamic {:.3} ms",
        static_time.as_secs_f64() * 1e3,
        dynamic_time.as_secs_f64() * 1e3
    );
    Ok(())
}

//! Quickstart: compile a model written in the unroll language and run it on
//! a batch of variable-length sequences with the reference interpreter.
//!
//! Run with `cargo run --release -p unroll-examples --example quickstart`.

use std::time::Instant;

use ndarray::{Array1, Array3};
use rnn_dsl::{interp, weights, SourceFile};
use rnn_runtime::init::SplitMix64;
use rnn_runtime::TensorMap;

const MODEL: &str = r#"
// A two-layer bidirectional LSTM tagger over 32-dimensional frames.
network Tagger {
    input x: [32];
    layer enc = lstm(hidden = 64, layers = 2, bidirectional);
    unroll dynamic;
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let compiled = rnn_dsl::compile(SourceFile::new("tagger.rnn", MODEL))?;
    let network = compiled.network(Some("Tagger"))?;

    // PyTorch's default initialisation, from a seed.
    let weights = weights::random(network, 0);
    println!("weights: {} tensors", weights.len());

    // A batch of 8 sequences of up to 50 steps, each with its own length.
    let (batch, steps, features) = (8, 50, 32);
    let lengths: Vec<i64> = (0..batch as i64).map(|b| 50 - 6 * b).collect();
    let mut rng = SplitMix64::new(1);
    let x = Array3::from_shape_simple_fn((batch, steps, features), || rng.uniform(-1.0, 1.0));
    let mut inputs = TensorMap::new();
    inputs.insert_f32("x", x.into_dyn());
    inputs.insert_i64("seq_len", Array1::from(lengths.clone()).into_dyn());

    let start = Instant::now();
    let outputs = interp::run(network, &weights, &inputs)?;
    let elapsed = start.elapsed();

    for (name, tensor) in outputs.iter() {
        println!("{name}: {:?}", tensor.shape());
    }
    let y = outputs.f32("y")?;
    let padded_zero = (0..batch).all(|b| {
        (lengths[b] as usize..steps).all(|t| y.slice(ndarray::s![b, t, ..]).iter().all(|v| *v == 0.0))
    });
    println!("lengths: {lengths:?}; outputs past each length are zero: {padded_zero}");
    println!("interpreter: {:.2} ms per batch", elapsed.as_secs_f64() * 1e3);
    Ok(())
}

//! A model compiled by the build script (`examples/build.rs`, with
//! `rnn_dsl::compile_files`) and included from `OUT_DIR`.
//!
//! Run with `cargo run --release -p unroll-examples --example build_script`.

use ndarray::{Array2, Array3};
use rnn_runtime::init::SplitMix64;

rnn_runtime::include_model!("tagger");
rnn_runtime::include_model!("ista");

fn main() -> Result<(), rnn_runtime::RnnError> {
    let tagger = Tagger::random(0);
    let mut rng = SplitMix64::new(1);
    let x = Array3::from_shape_simple_fn((4, 30, 32), || rng.uniform(-1.0, 1.0));
    let output = tagger.forward(x.view(), Some(&[30, 25, 12, 1]), None)?;
    println!(
        "Tagger: y {:?}, h_n {:?}, c_n {:?}",
        output.y.shape(),
        output.h_n.shape(),
        output.c_n.shape()
    );

    // ISTA unrolled 20 steps: sparse codes of two measurements.
    let ista = Ista::random(2);
    let y = Array2::from_shape_simple_fn((2, 20), || rng.uniform(-1.0, 1.0));
    let codes = ista.forward(y.view(), None, None)?;
    println!(
        "Ista: iterates {:?}, final codes {:?}",
        codes.y.shape(),
        codes.x_n.shape()
    );
    Ok(())
}

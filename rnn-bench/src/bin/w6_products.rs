//! The matrix products of W6's training step, timed alone: how long the
//! products of forward + backward take at one thread with nothing else
//! (no thresholds, tape or gradient bookkeeping), on the kernel unroll's
//! generated code uses. A lower bound for unroll's own W6 training time.
//!
//! Per step `k` of 16 (batch 64, `A` 250 × 500, `W_k` 250 × 500): the
//! forward's `x Aᵀ` and `r W_k`; the backward's `g W_kᵀ` (the residual's
//! gradient), `dr A` (the iterate's) and the two weight gradients
//! `rᵀ g` (for `W_k`) and `drᵀ x` (for `A`), each an outer product over
//! the batch. Each step reads its own `W_k`, as W6 does, so the 16 copies
//! (8 MB) do not stay in cache.
//!
//! Run with `cargo run --release -p rnn-bench --bin w6_products`
//! (`-- --reps N`).

use std::time::Instant;

use ndarray::Array2;
use rnn_bench::W6;
use rnn_runtime::__private::{gemm_packed, outer_acc_step, PackedMatrix, Workspace};
use rnn_runtime::init::SplitMix64;

fn random(rows: usize, cols: usize, rng: &mut SplitMix64) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| rng.next_f32() - 0.5)
}

/// Median over `reps` of the seconds one call of `f` takes (after two
/// calls of warm-up).
fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

fn main() {
    let (batch, steps, m, n) = W6;
    let reps = std::env::args()
        .skip_while(|arg| arg != "--reps")
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(31usize)
        .max(1);
    let mut rng = SplitMix64::new(6);
    let a = random(m, n, &mut rng);
    let ws: Vec<Array2<f32>> = (0..steps).map(|_| random(m, n, &mut rng)).collect();
    // Packed as generated code packs them when the model is built.
    let a_packed = PackedMatrix::new(a.view());
    let at_packed = PackedMatrix::new(a.t().as_standard_layout().view());
    let w_packed: Vec<PackedMatrix> = ws.iter().map(|w| PackedMatrix::new(w.view())).collect();
    let wt_packed: Vec<PackedMatrix> = ws
        .iter()
        .map(|w| PackedMatrix::new(w.t().as_standard_layout().view()))
        .collect();
    let x = random(batch, n, &mut rng);
    let r = random(batch, m, &mut rng);
    let g = random(batch, n, &mut rng);
    let (mut out_m, mut out_n) = (Array2::zeros((batch, m)), Array2::zeros((batch, n)));
    let mut grad_w: Vec<Array2<f32>> = (0..steps).map(|_| Array2::zeros((m, n))).collect();
    let mut grad_a = Array2::zeros((m, n));
    let workspace = Workspace::default();

    let forward = median(reps, || {
        for wt in &wt_packed {
            gemm_packed(x.view(), &a_packed, out_m.view_mut(), false);
            gemm_packed(r.view(), wt, out_n.view_mut(), true);
        }
    });
    let backward = median(reps, || {
        for (w, grad_w) in w_packed.iter().zip(grad_w.iter_mut()) {
            gemm_packed(g.view(), w, out_m.view_mut(), false);
            gemm_packed(r.view(), &at_packed, out_n.view_mut(), true);
            outer_acc_step(&workspace, grad_w.view_mut(), r.view(), g.view());
            outer_acc_step(&workspace, grad_a.view_mut(), r.view(), x.view());
        }
    });
    let flop = |products: usize| (steps * products * 2 * batch * m * n) as f64;
    println!(
        "W6 products alone, one thread (medians of {reps}): forward {:.2} ms ({:.0} GFLOP/s), backward {:.2} ms ({:.0} GFLOP/s), together {:.2} ms",
        forward * 1e3,
        flop(2) / forward / 1e9,
        backward * 1e3,
        flop(4) / backward / 1e9,
        (forward + backward) * 1e3
    );
}

//! Kernel benches: the packed product [`gemm_packed`] against [`matmul_bt`] (ndarray's
//! `general_mat_mul`, i.e. `matrixmultiply`, which packs both operands on every call) on the
//! product shapes of the workloads in `shared/WORKLOADS.md`, and the activation slice kernels.
//!
//! Throughput is reported in elements per second where one element is one floating-point
//! operation (`2·n·k·m` per product), so `Gelem/s` reads as GFLOP/s.
//! `UNROLL_KERNELS=generic cargo bench -p rnn-runtime --bench kernels` measures the portable
//! table instead of the best one for this CPU.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;
use rnn_runtime::init::SplitMix64;
use rnn_runtime::kernels::{
    exp_slice, gemm_packed, matmul_bt, sigmoid_slice, tanh_slice, PackedMatrix,
};

/// `(name, n, k, m)`: `out[n, m] = x[n, k] · w[m, k]ᵀ`.
const SHAPES: [(&str, usize, usize, usize); 5] = [
    // W1: LSTM H=128, B=1, recurrent product per step (a matrix-vector product).
    ("W1 recurrent", 1, 128, 512),
    // W2: LSTM H=256, B=64, recurrent product at a step where all sequences still run.
    ("W2 recurrent", 64, 256, 1024),
    // W3: GRU H=64, B=16, recurrent product per step.
    ("W3 recurrent", 16, 64, 192),
    // W4: LSTM I=80 H=256, layer 1, input product hoisted over B·T = 32·200 rows.
    ("W4 hoisted l1", 6400, 80, 1024),
    // W4: layer 2 (input is both directions of layer 1, 2·256 wide), hoisted.
    ("W4 hoisted l2", 6400, 512, 1024),
];

fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = SplitMix64::new(seed);
    Array2::from_shape_simple_fn((rows, cols), || rng.uniform(-1.0, 1.0))
}

fn products(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    for (name, n, k, m) in SHAPES {
        let x = random(n, k, 1);
        let w = random(m, k, 2);
        let packed = PackedMatrix::new(w.view());
        let mut out = Array2::<f32>::zeros((n, m));
        group.throughput(Throughput::Elements((2 * n * k * m) as u64));
        if n * k * m > 100_000_000 {
            group.sample_size(10);
        } else {
            group.sample_size(50);
        }
        group.bench_function(BenchmarkId::new("gemm_packed", name), |b| {
            b.iter(|| gemm_packed(black_box(x.view()), &packed, out.view_mut(), false))
        });
        group.bench_function(BenchmarkId::new("matmul_bt", name), |b| {
            b.iter(|| matmul_bt(black_box(x.view()), w.view(), out.view_mut(), false))
        });
    }
    group.finish();
}

type SliceKernel = fn(&mut [f32]);

fn activations(c: &mut Criterion) {
    const LEN: usize = 4096;
    let mut group = c.benchmark_group("activations");
    group.throughput(Throughput::Elements(LEN as u64));
    let mut rng = SplitMix64::new(3);
    let input: Vec<f32> = (0..LEN).map(|_| rng.uniform(-10.0, 10.0)).collect();
    let mut values = input.clone();
    let kernels: [(&str, SliceKernel); 3] = [
        ("sigmoid_slice", sigmoid_slice),
        ("tanh_slice", tanh_slice),
        ("exp_slice", exp_slice),
    ];
    for (name, kernel) in kernels {
        group.bench_function(name, |b| {
            b.iter(|| {
                values.copy_from_slice(&input);
                kernel(black_box(&mut values));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, products, activations);
criterion_main!(benches);

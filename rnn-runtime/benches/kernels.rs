//! Kernel benches: the packed product [`gemm_packed`] against [`matmul_bt`] (ndarray's
//! `general_mat_mul`, i.e. `matrixmultiply`, which packs both operands on every call) on the
//! product shapes of the workloads in `shared/WORKLOADS.md`, the activation slice kernels, and
//! the parts of a step split over two threads (W1's half product, the trade of the states), and
//! the recurrent products of W1 and W2 with weights in bfloat16 and int8, and packing a matrix
//! for the product.
//!
//! Throughput is reported in elements per second where one element is one floating-point
//! operation (`2·n·k·m` per product), so `Gelem/s` reads as GFLOP/s.
//! `UNROLL_KERNELS=generic cargo bench -p rnn-runtime --bench kernels` measures the portable
//! table instead of the best one for this CPU.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;
use rnn_runtime::__private::{lockstep, transpose};
use rnn_runtime::init::SplitMix64;
use rnn_runtime::kernels::{
    exp_slice, gemm_packed, gemm_packed_columns, gemm_reduced, matmul_bt, sigmoid_slice,
    tanh_slice, Columns, PackedMatrix, Precision, ReducedMatrix,
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

/// Packing a matrix for the product ([`PackedMatrix::new`]), what building a model and each
/// update of its parameters cost per matrix, beside a plain transpose of the same matrix: W6's
/// `W_k` (250 × 500, rebuilt at every Adam step of LISTA-CP's training) and W2's `W_hh`.
/// Throughput in floats per second.
fn packing(c: &mut Criterion) {
    let mut group = c.benchmark_group("packing");
    for (name, rows, cols) in [("W6 W_k", 250, 500), ("W2 W_hh", 1024, 256)] {
        let w = random(rows, cols, 3);
        group.throughput(Throughput::Elements((rows * cols) as u64));
        group.bench_function(BenchmarkId::new("PackedMatrix::new", name), |b| {
            b.iter(|| PackedMatrix::new(black_box(w.view())))
        });
        group.bench_function(BenchmarkId::new("transpose", name), |b| {
            b.iter(|| transpose(black_box(w.view())))
        });
    }
    group.finish();
}

/// The recurrent products of W1 and W2 with weights in `f32` ([`gemm_packed`]) and in reduced
/// precision ([`gemm_reduced`]), side by side: at W1's one row per step the product reads all
/// of `W_hh` and nothing else, so its time is the bytes of the weights.
fn reduced(c: &mut Criterion) {
    let mut group = c.benchmark_group("reduced");
    // W1's input product, hoisted over its 1000 steps: bound by arithmetic, not bytes.
    let w1_hoisted = ("W1 hoisted", 1000, 64, 512);
    for (name, n, k, m) in SHAPES[..2].iter().chain([&w1_hoisted]) {
        let (n, k, m) = (*n, *k, *m);
        let x = random(n, k, 1);
        let w = random(m, k, 2);
        let packed = PackedMatrix::new(w.view());
        let mut out = Array2::<f32>::zeros((n, m));
        group.throughput(Throughput::Elements((2 * n * k * m) as u64));
        group.sample_size(50);
        group.bench_function(BenchmarkId::new("f32", name), |b| {
            b.iter(|| gemm_packed(black_box(x.view()), &packed, out.view_mut(), false))
        });
        for precision in [Precision::Bf16, Precision::Int8] {
            let reduced = ReducedMatrix::new(w.view(), precision).expect("finite weights");
            group.bench_function(BenchmarkId::new(precision.name(), name), |b| {
                b.iter(|| gemm_reduced(black_box(x.view()), &reduced, out.view_mut(), false))
            });
        }
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

/// W1's step split over two threads: one side's half of the recurrent product (the columns of
/// its 64 units in each of the 4 gates) against the whole, and the trade of the new `h` after
/// each step (both threads doing nothing else: the time per step is the round trip between
/// the cores).
fn split(c: &mut Criterion) {
    let mut group = c.benchmark_group("split");
    let (x, w) = (random(1, 128, 1), random(512, 128, 2));
    let packed = PackedMatrix::new(w.view());
    let mut out = Array2::<f32>::zeros((1, 512));
    let half = Columns::periodic(128, 0, 64).expect("aligned");
    group.bench_function("W1 recurrent, whole", |b| {
        b.iter(|| gemm_packed(black_box(x.view()), &packed, out.view_mut(), false))
    });
    group.bench_function("W1 recurrent, one side's half", |b| {
        b.iter(|| gemm_packed_columns(black_box(x.view()), &packed, out.view_mut(), false, half))
    });
    group.bench_function("trade of h, 128 units", |b| {
        b.iter_custom(|steps| {
            let steps = steps as usize;
            loop {
                let run = lockstep(1, &[128], ((), ()), |side, exchange, ()| {
                    let mut h = vec![1.0f32; 128];
                    let start = std::time::Instant::now();
                    for t in 0..steps {
                        exchange.swap(side, t, 1, &mut [&mut h]);
                    }
                    start.elapsed()
                });
                // The worker did not start in time (see `lockstep`): again.
                if let Ok((first, _)) = run {
                    return first;
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, products, packing, reduced, activations, split);
criterion_main!(benches);

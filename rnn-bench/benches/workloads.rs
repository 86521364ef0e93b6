//! Criterion benches of the workloads W1–W4 (`shared/WORKLOADS.md`) on
//! random weights and inputs, static and dynamic, at 1 and 2 threads
//! (`Threads::Fixed`). `bench/run.sh` compares with the peers; these track
//! unroll's own changes: `cargo bench -p rnn-bench`.

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use ndarray::Array3;
use rnn_bench::{
    W1Dynamic, W1Static, W2Dynamic, W2Static, W3Dynamic, W3Static, W4Dynamic, W4Static, WORKLOADS,
};
use rnn_runtime::init::SplitMix64;
use rnn_runtime::Threads;

fn input(id: &str) -> (Array3<f32>, Vec<usize>) {
    let workload = WORKLOADS
        .iter()
        .find(|w| w.id == id)
        .expect("known workload");
    let mut rng = SplitMix64::new(7);
    let x = Array3::from_shape_simple_fn((workload.batch, workload.steps, workload.input), || {
        rng.uniform(-1.0, 1.0)
    });
    (x, workload.lengths())
}

/// Benches `forward` of one generated model type at 1 and 2 threads.
macro_rules! bench_model {
    ($group:expr, $name:literal, $model:ty, $input:expr) => {{
        let (x, lengths) = $input;
        for threads in [1, 2] {
            let model = <$model>::random(0).with_threads(Threads::Fixed(threads));
            $group.bench_function(format!("{} {threads}t", $name), |b| {
                b.iter(|| model.forward(x.view(), Some(&lengths), None).expect("runs"))
            });
        }
    }};
}

fn workloads(c: &mut Criterion) {
    let mut group: BenchmarkGroup<'_, _> = c.benchmark_group("workloads");
    group.sample_size(10);
    bench_model!(group, "W1 static", W1Static, input("W1"));
    bench_model!(group, "W1 dynamic", W1Dynamic, input("W1"));
    bench_model!(group, "W2 static", W2Static, input("W2"));
    bench_model!(group, "W2 dynamic", W2Dynamic, input("W2"));
    bench_model!(group, "W3 static", W3Static, input("W3"));
    bench_model!(group, "W3 dynamic", W3Dynamic, input("W3"));
    bench_model!(group, "W4 static", W4Static, input("W4"));
    bench_model!(group, "W4 dynamic", W4Dynamic, input("W4"));
    group.finish();
}

criterion_group!(benches, workloads);
criterion_main!(benches);

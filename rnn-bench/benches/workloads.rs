//! Criterion benches of the workloads W1–W4 (`shared/WORKLOADS.md`) on
//! random weights and inputs, static and dynamic where both exist.
//! `bench/run.sh` compares with the peers; these track unroll's own changes.

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array3;
use rnn_bench::{W1Dynamic, W2Dynamic, W3Dynamic, W3Static, W4Dynamic, WORKLOADS};
use rnn_runtime::init::SplitMix64;

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

fn workloads(c: &mut Criterion) {
    let mut group = c.benchmark_group("workloads");
    group.sample_size(10);

    let (x, lengths) = input("W1");
    let model = W1Dynamic::random(0);
    group.bench_function("W1 dynamic", |b| {
        b.iter(|| model.forward(x.view(), Some(&lengths), None).expect("runs"))
    });

    let (x, lengths) = input("W2");
    let model = W2Dynamic::random(0);
    group.bench_function("W2 dynamic", |b| {
        b.iter(|| model.forward(x.view(), Some(&lengths), None).expect("runs"))
    });

    let (x, lengths) = input("W3");
    let static_model = W3Static::random(0);
    let dynamic_model = W3Dynamic::random(0);
    group.bench_function("W3 static", |b| {
        b.iter(|| {
            static_model
                .forward(x.view(), Some(&lengths), None)
                .expect("runs")
        })
    });
    group.bench_function("W3 dynamic", |b| {
        b.iter(|| {
            dynamic_model
                .forward(x.view(), Some(&lengths), None)
                .expect("runs")
        })
    });

    let (x, lengths) = input("W4");
    let model = W4Dynamic::random(0);
    group.bench_function("W4 dynamic", |b| {
        b.iter(|| model.forward(x.view(), Some(&lengths), None).expect("runs"))
    });
    group.finish();
}

criterion_group!(benches, workloads);
criterion_main!(benches);

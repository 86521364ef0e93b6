//! Times unroll on the benchmark workloads and prints one line per
//! measurement: a table, or JSON lines (`--json`) for `bench/table.py`.
//!
//! Data comes from `target/bench-data/<W>.safetensors` (made by
//! `bench/workloads.py`, the peers read the same files); without it the
//! workload runs on random weights and inputs of the same shapes.
//!
//! W6 (LISTA-CP) reads `W6.safetensors` (`A`, `W`, `theta`, `y`, `x`: made
//! by `bench/lista.py`) and checks against `W6.expected.safetensors`.
//!
//! Usage: `bench_unroll [--json] [--reps N] [--data DIR] [--only W2] [--mode M] [--memory] [--threads N]`
//!
//! `--memory` prints the process's resident memory (Linux `/proc`) before
//! the first call and at its peak, to check a workload's footprint.
//!
//! A W6 training step gives its tape and gradients back to the model
//! (`recycle`, `recycle_grads`), as a training loop does, so that the next
//! step writes `W`'s 16 gradient copies (8 MB) into the same array.
//!
//! It runs on mimalloc with freed memory kept, as the LISTA examples do: a
//! training call returns its other gradients in new arrays, which glibc
//! gives back to the kernel when they are freed and page-faults in again at
//! the next call. The feature `system-alloc` builds it on the system
//! allocator instead (BENCHMARKS.md compares the two).

use std::path::PathBuf;
use std::time::Instant;

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h`: how long freed
/// memory waits before it goes back to the kernel.
#[cfg(not(feature = "system-alloc"))]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

use ndarray::Array3;
use rnn_bench::{
    memory_kib, w6_flops, W1Dynamic, W1DynamicBf16, W1DynamicBy4, W1DynamicInt8, W1Static,
    W2Dynamic, W2DynamicBf16, W2DynamicInt8, W2Static, W3Dynamic, W3Static, W4Dynamic, W4Static,
    W5Dynamic, W5Static, W6Dynamic, W6Static, Workload, W6, WORKLOADS,
};
use rnn_runtime::init::SplitMix64;
use rnn_runtime::{Model, RnnError, TensorMap, Threads};

struct Options {
    json: bool,
    reps: usize,
    data: PathBuf,
    only: Option<String>,
    memory: bool,
    threads: Vec<usize>,
    mode: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        json: false,
        reps: 7,
        data: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-data")),
        only: None,
        memory: false,
        threads: vec![1, 2],
        mode: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => options.json = true,
            "--memory" => options.memory = true,
            "--mode" => options.mode = Some(args.next().ok_or("--mode takes static, dynamic or 'dynamic by 4'")?),
            "--threads" => {
                let count = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .filter(|count| *count >= 1)
                    .ok_or("--threads takes a count of at least 1")?;
                options.threads = vec![count];
            }
            "--reps" => {
                options.reps = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .filter(|reps| *reps >= 1)
                    .ok_or("--reps takes a count of at least 1")?;
            }
            "--data" => options.data = PathBuf::from(args.next().ok_or("--data takes a folder")?),
            "--only" => options.only = Some(args.next().ok_or("--only takes a workload id")?),
            other => return Err(format!("unknown argument `{other}`; usage: bench_unroll [--json] [--reps N] [--data DIR] [--only W2] [--mode M] [--memory] [--threads N]")),
        }
    }
    Ok(options)
}

/// Weights and inputs of a workload: from the shared data file if present.
fn data(
    workload: &Workload,
    options: &Options,
) -> Result<(TensorMap, TensorMap, &'static str), RnnError> {
    let path = options.data.join(format!("{}.safetensors", workload.id));
    if path.is_file() {
        let tensors = TensorMap::load(&path)?;
        let mut inputs = TensorMap::new();
        inputs.insert_f32("x", tensors.f32("x")?);
        if let Ok(lengths) = tensors.lengths("seq_len", workload.batch, workload.steps) {
            let lengths: Vec<i64> = lengths.iter().map(|len| *len as i64).collect();
            inputs.insert_i64("seq_len", ndarray::Array1::from(lengths).into_dyn());
        }
        return Ok((tensors, inputs, "shared data"));
    }
    let mut rng = SplitMix64::new(42);
    let x = Array3::from_shape_simple_fn((workload.batch, workload.steps, workload.input), || {
        rng.uniform(-1.0, 1.0)
    });
    let mut inputs = TensorMap::new();
    inputs.insert_f32("x", x.into_dyn());
    let lengths: Vec<i64> = workload.lengths().iter().map(|len| *len as i64).collect();
    inputs.insert_i64("seq_len", ndarray::Array1::from(lengths).into_dyn());
    Ok((TensorMap::new(), inputs, "random data"))
}

fn build<M: Model + 'static>(
    weights: &TensorMap,
    random: impl Fn() -> M,
) -> Result<Box<dyn Model>, RnnError> {
    if weights.is_empty() {
        Ok(Box::new(random()))
    } else {
        Ok(Box::new(M::from_weights(weights)?))
    }
}

/// A model with the system name it is reported under.
type Labelled = (&'static str, Box<dyn Model>);

fn models(workload: &Workload, weights: &TensorMap) -> Result<Vec<Labelled>, RnnError> {
    Ok(match workload.id {
        "W1" => vec![
            ("unroll static", build(weights, || W1Static::random(0))?),
            ("unroll dynamic", build(weights, || W1Dynamic::random(0))?),
            (
                "unroll dynamic by 4",
                build(weights, || W1DynamicBy4::random(0))?,
            ),
            ("unroll bf16", build(weights, || W1DynamicBf16::random(0))?),
            ("unroll int8", build(weights, || W1DynamicInt8::random(0))?),
        ],
        "W2" => vec![
            ("unroll static", build(weights, || W2Static::random(0))?),
            ("unroll dynamic", build(weights, || W2Dynamic::random(0))?),
            ("unroll bf16", build(weights, || W2DynamicBf16::random(0))?),
            ("unroll int8", build(weights, || W2DynamicInt8::random(0))?),
        ],
        "W3" => vec![
            ("unroll static", build(weights, || W3Static::random(0))?),
            ("unroll dynamic", build(weights, || W3Dynamic::random(0))?),
        ],
        "W4" => vec![
            ("unroll static", build(weights, || W4Static::random(0))?),
            ("unroll dynamic", build(weights, || W4Dynamic::random(0))?),
        ],
        other => unreachable!("no workload {other}"),
    })
}

fn main() -> std::process::ExitCode {
    // SAFETY: `mi_option_set` only stores the value; it is not thread-safe,
    // so it runs first, on the only thread.
    #[cfg(not(feature = "system-alloc"))]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1)
    };
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    for workload in WORKLOADS
        .iter()
        .filter(|w| options.only.as_deref().is_none_or(|only| only == w.id))
    {
        if let Err(error) = run(workload, &options) {
            eprintln!("error: {}: {error}", workload.id);
            return std::process::ExitCode::FAILURE;
        }
    }
    if options.only.as_deref().is_none_or(|only| only == "W6") {
        if let Err(error) = run_lista(&options) {
            eprintln!("error: W6: {error}");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}

/// A loss and the parameters' gradients by name.
type LossAndGrads = (f32, Vec<(&'static str, ndarray::ArrayD<f32>)>);

/// One training step of a W5 model: `forward_train`, the gradient of
/// `loss = mean(y²)` over the valid steps, `backward`. Returns the loss and
/// the parameters' gradients by name.
trait TrainStep {
    fn train_step(
        &self,
        x: ndarray::ArrayView3<'_, f32>,
        lengths: &[usize],
    ) -> Result<LossAndGrads, RnnError>;
    fn threads(&mut self, threads: Threads);
}

macro_rules! train_step {
    ($($model:ident),*) => {$(
        impl TrainStep for $model {
            fn train_step(
                &self,
                x: ndarray::ArrayView3<'_, f32>,
                lengths: &[usize],
            ) -> Result<LossAndGrads, RnnError> {
                let (out, tape) = self.forward_train(x, Some(lengths), None)?;
                // Padded outputs are zero, so sums over all of `y` are sums over valid steps.
                let count = (lengths.iter().sum::<usize>() * out.y.shape()[2]) as f32;
                let (loss, dy) = mean_square_and_gradient(out.y, count);
                let grads = self.backward(&tape, dy.view(), None);
                self.recycle(tape);
                let grads = grads?;
                let named = W5StaticGrads::NAMES.iter().copied().zip(grads.params).collect();
                Ok((loss, named))
            }

            fn threads(&mut self, threads: Threads) {
                self.set_threads(threads);
            }
        }
    )*};
}

/// `Σ y² / count` and its gradient `2 y / count`, in `y`'s buffer. The
/// sum runs in 16 partial sums, so that it vectorises as PyTorch's `mean`
/// does; the loss is computed once per call, like the peers'.
fn mean_square_and_gradient(
    mut y: ndarray::Array3<f32>,
    count: f32,
) -> (f32, ndarray::Array3<f32>) {
    let values = y.as_slice_mut().expect("outputs are in standard layout");
    let mut partial = [0.0f32; 16];
    let mut chunks = values.chunks_exact_mut(16);
    for chunk in &mut chunks {
        for (sum, v) in partial.iter_mut().zip(chunk.iter_mut()) {
            *sum += *v * *v;
            *v *= 2.0 / count;
        }
    }
    for v in chunks.into_remainder() {
        partial[0] += *v * *v;
        *v *= 2.0 / count;
    }
    (partial.iter().sum::<f32>() / count, y)
}

use rnn_bench::W5StaticGrads;
train_step!(W5Static, W5Dynamic);

/// The largest difference of `grads` from the reference's `grad.<name>`, relative to the
/// largest reference gradient, and the loss's relative difference; `None` without a reference.
fn against_reference(
    workload: &Workload,
    options: &Options,
    loss: f32,
    grads: &[(&'static str, ndarray::ArrayD<f32>)],
) -> Option<String> {
    let path = options
        .data
        .join(format!("{}.expected.safetensors", workload.id));
    let reference = TensorMap::load(path).ok()?;
    let expected_loss = reference.f32("loss").ok()?[0];
    let mut largest = 0.0f32;
    let mut worst = 0.0f32;
    for (name, grad) in grads {
        let expected = reference.f32(&format!("grad.{name}")).ok()?;
        largest = expected.iter().fold(largest, |acc, v| acc.max(v.abs()));
        for (a, e) in grad.iter().zip(expected.iter()) {
            worst = worst.max((a - e).abs());
        }
    }
    Some(format!(
        "max grad diff {:.1e} of the largest; loss rel diff {:.1e}",
        worst / largest,
        ((loss - expected_loss) / expected_loss).abs()
    ))
}

fn run_training(workload: &Workload, options: &Options) -> Result<(), RnnError> {
    let (weights, inputs, source) = data(workload, options)?;
    let x = inputs
        .f32("x")?
        .into_dimensionality::<ndarray::Ix3>()
        .expect("x is [B, T, I]");
    let lengths = workload.lengths();
    let mut models: Vec<(&str, Box<dyn TrainStep>)> = if weights.is_empty() {
        vec![
            ("unroll static", Box::new(W5Static::random(0))),
            ("unroll dynamic", Box::new(W5Dynamic::random(0))),
        ]
    } else {
        vec![
            ("unroll static", Box::new(W5Static::from_weights(&weights)?)),
            (
                "unroll dynamic",
                Box::new(W5Dynamic::from_weights(&weights)?),
            ),
        ]
    };
    if let Some(mode) = &options.mode {
        models.retain(|(system, _)| *system == format!("unroll {mode}"));
    }
    drop(weights);
    for (system, mut model) in models {
        for &threads in &options.threads {
            model.threads(Threads::Fixed(threads));
            let before = memory_kib("VmRSS");
            let (loss, grads) = model.train_step(x.view(), &lengths)?;
            let check = against_reference(workload, options, loss, &grads)
                .unwrap_or_else(|| "no reference".to_owned());
            let note = format!("{source}; {check}");
            report(
                workload.id,
                workload.flops(),
                options,
                system,
                threads,
                before,
                &note,
                || model.train_step(x.view(), &lengths).map(drop),
            );
        }
    }
    Ok(())
}

/// Times `call` (which has run once already), and prints the resident memory if asked and one
/// line of the median, min, max and GFLOP/s, as a table row or JSON.
#[allow(clippy::too_many_arguments)]
fn report(
    id: &str,
    flops: f64,
    options: &Options,
    system: &str,
    threads: usize,
    before: Option<usize>,
    note: &str,
    mut call: impl FnMut() -> Result<(), RnnError>,
) {
    if options.memory {
        println!(
            "{id} {system} threads {threads}: resident before the first call {} MiB, peak {} MiB",
            before.unwrap_or(0) / 1024,
            memory_kib("VmHWM").unwrap_or(0) / 1024
        );
    }
    let mut times: Vec<f64> = (0..options.reps)
        .map(|_| {
            let start = Instant::now();
            let result = call();
            let elapsed = start.elapsed().as_secs_f64() * 1e3;
            std::hint::black_box(result).expect("ran once already");
            elapsed
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let (median, min, max) = (times[times.len() / 2], times[0], times[times.len() - 1]);
    let gflops = flops / (median * 1e-3) / 1e9;
    if options.json {
        let line = serde_json::json!({
            "workload": id,
            "system": system,
            "threads": threads,
            "median_ms": median,
            "min_ms": min,
            "max_ms": max,
            "gflops": gflops,
            "note": note,
        });
        println!("{line}");
    } else {
        println!(
            "{id:<8} {system:<22} threads {threads}  median {median:9.3} ms  min {min:9.3}  max {max:9.3}  {gflops:6.1} GFLOP/s  ({note})"
        );
    }
}

fn run(workload: &Workload, options: &Options) -> Result<(), RnnError> {
    if workload.train {
        return run_training(workload, options);
    }
    let (weights, inputs, source) = data(workload, options)?;
    let mut models = models(workload, &weights)?;
    // One mode alone, e.g. to measure its memory without another model's.
    if let Some(mode) = &options.mode {
        models.retain(|(system, _)| *system == format!("unroll {mode}"));
    }
    // A serving process keeps the model, not the file's tensors.
    drop(weights);
    let expected = TensorMap::load(
        options
            .data
            .join(format!("{}.expected.safetensors", workload.id)),
    )
    .ok();
    for (system, mut model) in models {
        for &threads in &options.threads {
            model.set_threads(Threads::Fixed(threads));
            let before = memory_kib("VmRSS");
            let outputs = model.run(&inputs)?;
            // The largest absolute difference of `y` and `h_n` from the
            // reference (the figure the peers report as `max_abs_diff`).
            let check = match &expected {
                Some(expected) => {
                    let mut worst = 0.0f32;
                    for name in ["y", "h_n"] {
                        let (found, wanted) = (outputs.f32(name)?, expected.f32(name)?);
                        for (a, e) in found.iter().zip(&wanted) {
                            worst = worst.max((a - e).abs());
                        }
                    }
                    format!("max abs diff {worst:.1e}")
                }
                None => "no reference".to_owned(),
            };
            // Two threads: one per direction for the bidirectional W4, half
            // of each step's columns for W1's one sequence, two halves of
            // the batch for the others.
            let parallel = match (workload.id, threads) {
                (_, 1) => "single-threaded",
                ("W1", _) => "steps split on 2 threads",
                ("W4", _) => "directions on 2 threads",
                _ => "batch halves on 2 threads",
            };
            let note = format!("{source}; {parallel}; {check}");
            report(
                workload.id,
                workload.flops(),
                options,
                system,
                threads,
                before,
                &note,
                || model.run(&inputs).map(drop),
            );
        }
    }
    Ok(())
}

/// A W6 model: LISTA-CP's `K` iterates of `y`, and one training step (the
/// loss `mean((x_K − x*)²)` and the parameters' gradients, by name).
trait Lista {
    fn infer(&self, y: ndarray::ArrayView2<'_, f32>) -> Result<ndarray::Array2<f32>, RnnError>;
    fn train_step(
        &self,
        y: ndarray::ArrayView2<'_, f32>,
        target: ndarray::ArrayView2<'_, f32>,
    ) -> Result<LossAndGrads, RnnError>;
    /// Gives a step's gradients back to the model (the generated
    /// `recycle_grads`), so that the next step writes into them.
    fn recycle_grads(&self, grads: Vec<(&'static str, ndarray::ArrayD<f32>)>);
    /// A training step as a training loop runs it: its tape and, once
    /// read, its gradients given back to the model.
    fn train_step_recycled(
        &self,
        y: ndarray::ArrayView2<'_, f32>,
        target: ndarray::ArrayView2<'_, f32>,
    ) -> Result<f32, RnnError> {
        let (loss, grads) = self.train_step(y, target)?;
        self.recycle_grads(grads);
        Ok(loss)
    }
    fn threads(&mut self, threads: Threads);
}

/// `mean((x_K − x*)²)` over the batch and the coordinates, and its gradient
/// with respect to every iterate (zero but at the last).
fn last_step_mse(
    y: &ndarray::Array3<f32>,
    target: ndarray::ArrayView2<'_, f32>,
) -> (f32, ndarray::Array3<f32>) {
    let last = y.shape()[1] - 1;
    let count = target.len() as f32;
    let diff = &y.index_axis(ndarray::Axis(1), last) - &target;
    let mut dy = ndarray::Array3::<f32>::zeros(y.raw_dim());
    dy.index_axis_mut(ndarray::Axis(1), last)
        .assign(&(&diff * (2.0 / count)));
    (diff.iter().map(|d| d * d).sum::<f32>() / count, dy)
}

macro_rules! lista {
    ($($model:ident: $($steps:expr)?),*) => {$(
        impl Lista for $model {
            fn infer(&self, y: ndarray::ArrayView2<'_, f32>) -> Result<ndarray::Array2<f32>, RnnError> {
                let out = self.forward(y, $($steps,)? None, None)?;
                Ok(out.y.index_axis(ndarray::Axis(1), W6.1 - 1).to_owned())
            }

            fn train_step(
                &self,
                y: ndarray::ArrayView2<'_, f32>,
                target: ndarray::ArrayView2<'_, f32>,
            ) -> Result<LossAndGrads, RnnError> {
                let (out, tape) = self.forward_train(y, $($steps,)? None, None)?;
                let (loss, dy) = last_step_mse(&out.y, target);
                let grads = self.backward(&tape, dy.view(), None);
                self.recycle(tape);
                let named = W6StaticGrads::NAMES.iter().copied().zip(grads?.params).collect();
                Ok((loss, named))
            }

            fn recycle_grads(&self, grads: Vec<(&'static str, ndarray::ArrayD<f32>)>) {
                <$model>::recycle_grads(self, grads.into_iter().map(|(_, grad)| grad).collect());
            }

            fn threads(&mut self, threads: Threads) {
                self.set_threads(threads);
            }
        }
    )*};
}

use rnn_bench::W6StaticGrads;
lista!(W6Static:, W6Dynamic: W6.1);

/// The largest difference of `found` from `expected`, relative to the
/// largest entry of `expected`.
fn relative_diff(
    found: ndarray::ArrayViewD<'_, f32>,
    expected: ndarray::ArrayViewD<'_, f32>,
) -> f32 {
    let largest = expected.iter().fold(0.0f32, |acc, v| acc.max(v.abs()));
    let worst = found
        .iter()
        .zip(expected.iter())
        .fold(0.0f32, |acc, (a, e)| acc.max((a - e).abs()));
    worst / largest
}

/// The matrix `name` of `tensors`, which must be `shape`.
fn matrix(
    tensors: &TensorMap,
    name: &str,
    shape: [usize; 2],
) -> Result<ndarray::Array2<f32>, RnnError> {
    let tensor = tensors.f32_shaped(name, &shape)?;
    Ok(tensor.into_dimensionality().expect("its shape was checked"))
}

/// W6: LISTA-CP inference (`W6`, µs per batch) and forward + backward
/// (`W6 train`), static and dynamic, at each thread count.
fn run_lista(options: &Options) -> Result<(), RnnError> {
    let (batch, _, m, n) = W6;
    let path = options.data.join("W6.safetensors");
    let (weights, y, target, source) = if path.is_file() {
        let tensors = TensorMap::load(&path)?;
        let y = matrix(&tensors, "y", [batch, m])?;
        let x = matrix(&tensors, "x", [batch, n])?;
        (tensors, y, x, "shared data")
    } else {
        let mut rng = SplitMix64::new(42);
        let y = ndarray::Array2::from_shape_simple_fn((batch, m), || rng.uniform(-1.0, 1.0));
        let x = ndarray::Array2::from_shape_simple_fn((batch, n), || rng.uniform(-1.0, 1.0));
        (TensorMap::new(), y, x, "random data")
    };
    let mut models: Vec<(&str, Box<dyn Lista>)> = if weights.is_empty() {
        vec![
            ("unroll static", Box::new(W6Static::random(0))),
            ("unroll dynamic", Box::new(W6Dynamic::random(0))),
        ]
    } else {
        vec![
            ("unroll static", Box::new(W6Static::from_weights(&weights)?)),
            (
                "unroll dynamic",
                Box::new(W6Dynamic::from_weights(&weights)?),
            ),
        ]
    };
    if let Some(mode) = &options.mode {
        models.retain(|(system, _)| *system == format!("unroll {mode}"));
    }
    let expected = TensorMap::load(options.data.join("W6.expected.safetensors")).ok();
    for (system, mut model) in models {
        for &threads in &options.threads {
            model.threads(Threads::Fixed(threads));
            let x_k = model.infer(y.view())?;
            let check = match &expected {
                Some(expected) => format!(
                    "max diff {:.1e} of the largest",
                    relative_diff(x_k.view().into_dyn(), expected.f32("x_K")?.view())
                ),
                None => "no reference".to_owned(),
            };
            let note = format!("{source}; {check}");
            report(
                "W6",
                w6_flops(false),
                options,
                system,
                threads,
                None,
                &note,
                || model.infer(y.view()).map(drop),
            );
            // Checked as timed: after a step whose gradients went back to
            // the model, so that this one writes into them.
            model.train_step_recycled(y.view(), target.view())?;
            let (loss, grads) = model.train_step(y.view(), target.view())?;
            let check = match &expected {
                Some(expected) => {
                    let mut worst = 0.0f32;
                    for (name, grad) in &grads {
                        let bare = name.trim_end_matches("_l0");
                        let reference = expected.f32(&format!("grad.{bare}"))?;
                        worst = worst.max(relative_diff(grad.view(), reference.view()));
                    }
                    let expected_loss = expected.f32("loss")?[0];
                    format!(
                        "max grad diff {worst:.1e} of the largest; loss rel diff {:.1e}",
                        ((loss - expected_loss) / expected_loss).abs()
                    )
                }
                None => "no reference".to_owned(),
            };
            let note = format!("{source}; {check}");
            report(
                "W6 train",
                w6_flops(true),
                options,
                system,
                threads,
                None,
                &note,
                || model.train_step_recycled(y.view(), target.view()).map(drop),
            );
        }
    }
    Ok(())
}

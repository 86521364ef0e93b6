//! Times the Rust peers, tract (on the exported ONNX models) and candle-nn
//! (its LSTM/GRU layers with the same weights), on workloads W1-W4.
//!
//! Usage: rust-peers [--threads N] [--workloads W1,W2,W3,W4] [--systems tract,candle]
//!                   [--reps 7] [--data DIR]
//!
//! One thread count per process: candle's matmuls size their pool from
//! RAYON_NUM_THREADS, which must be set before the pool starts, and tract's
//! default executor is set once. bench/run.sh runs `--threads 1` and
//! `--threads 2`. Output: one JSON line per (workload, system), in the schema of
//! bench/peers.py; a workload a peer cannot run gives a line with "error".
//!
//! Everything about a workload (cell, sizes, layers, directions, lengths) is
//! read from its data file, written by bench/workloads.py.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor as CTensor};
use candle_nn::rnn::{Direction, LSTMConfig, GRUConfig, RNN};
use serde_json::{json, Value};
use tract_onnx::prelude::*;

/// A repetition lasts at least this long (several calls for short ones).
const MIN_REP_S: f64 = 0.05;

// ---------------------------------------------------------------------------
// Workload description, derived from the tensors in `<W>.safetensors`.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell {
    Lstm,
    Gru,
}

#[derive(Debug)]
struct Spec {
    name: String,
    cell: Cell,
    input: usize,
    hidden: usize,
    layers: usize,
    dirs: usize,
    batch: usize,
    steps: usize,
    lens: Vec<usize>,
}

impl Spec {
    fn from_tensors(name: &str, t: &HashMap<String, CTensor>) -> Result<Spec> {
        let get = |k: &str| t.get(k).ok_or_else(|| anyhow!("{name}: no tensor {k}"));
        let (gh, hidden) = get("weight_hh_l0")?.dims2()?;
        let cell = match gh / hidden {
            4 => Cell::Lstm,
            3 => Cell::Gru,
            g => bail!("{name}: {g} gates"),
        };
        let (batch, steps, input) = get("x")?.dims3()?;
        let lens = get("seq_len")?.to_vec1::<i64>()?.into_iter().map(|l| l as usize).collect();
        let layers = (0..).take_while(|l| t.contains_key(&format!("weight_ih_l{l}"))).count();
        let dirs = if t.contains_key("weight_ih_l0_reverse") { 2 } else { 1 };
        Ok(Spec { name: name.into(), cell, input, hidden, layers, dirs, batch, steps, lens })
    }

    fn all_full(&self) -> bool {
        self.lens.iter().all(|&l| l == self.steps)
    }

    /// 2*G*H*(I+H) per sequence, per valid step, per layer and direction.
    fn useful_flops(&self) -> f64 {
        let g = if self.cell == Cell::Lstm { 4 } else { 3 };
        let valid: usize = self.lens.iter().sum();
        let per_step: usize = (0..self.layers)
            .map(|l| {
                let i = if l == 0 { self.input } else { self.hidden * self.dirs };
                2 * g * self.hidden * (i + self.hidden) * self.dirs
            })
            .sum();
        (per_step * valid) as f64
    }
}

// ---------------------------------------------------------------------------
// Timing

struct Stats {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    reps: usize,
    inner: usize,
    cpu_util: f64,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Warm up, then `reps` timed repetitions; times in ms per call.
fn measure(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Stats> {
    f()?;
    let t0 = Instant::now();
    f()?;
    let single = t0.elapsed().as_secs_f64();
    let inner = if single < MIN_REP_S { (MIN_REP_S / single.max(1e-9)).ceil() as usize } else { 1 };
    for _ in 0..inner.min(50) {
        f()?;
    }
    let mut times = Vec::with_capacity(reps);
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    for _ in 0..reps {
        let t0 = Instant::now();
        for _ in 0..inner {
            f()?;
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3 / inner as f64);
    }
    let cpu_util = (cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 { times[n / 2] } else { 0.5 * (times[n / 2 - 1] + times[n / 2]) };
    Ok(Stats { median_ms: median, min_ms: times[0], max_ms: times[n - 1], reps, inner, cpu_util })
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

fn result_line(spec: &Spec, system: &str, threads: usize, s: &Stats, diff: f64, note: Option<&str>) -> Value {
    let mut v = json!({
        "workload": spec.name,
        "system": system,
        "threads": threads,
        "median_ms": round(s.median_ms, 6),
        "min_ms": round(s.min_ms, 6),
        "max_ms": round(s.max_ms, 6),
        "gflops": round(spec.useful_flops() / (s.median_ms * 1e-3) / 1e9, 3),
        "reps": s.reps,
        "inner": s.inner,
        "cpu_util": round(s.cpu_util, 2),
        "loadavg": round(loadavg(), 2),
        "max_abs_diff": format!("{diff:.3e}").parse::<f64>().unwrap_or(diff),
    });
    if let Some(n) = note {
        v["note"] = json!(n);
    }
    v
}

fn error_line(spec: &Spec, system: &str, threads: usize, err: &anyhow::Error) -> Value {
    json!({"workload": spec.name, "system": system, "threads": threads, "error": format!("{err:#}")})
}

/// Max abs diff of y [B, T, D*H] (flat) to the reference; with `valid_only`
/// (runs that ignore lengths) only steps inside each length count.
fn diff_y(spec: &Spec, y: &[f32], expected: &[f32], valid_only: bool) -> f64 {
    let row = y.len() / (spec.batch * spec.steps);
    let mut d = 0f64;
    for b in 0..spec.batch {
        let end = if valid_only { spec.lens[b] } else { spec.steps };
        for t in 0..end {
            let o = (b * spec.steps + t) * row;
            for k in o..o + row {
                d = d.max((y[k] - expected[k]).abs() as f64);
            }
        }
    }
    d
}

// ---------------------------------------------------------------------------
// tract

fn tract_one(
    spec: &Spec,
    path: &Path,
    data: &HashMap<String, CTensor>,
    expected: &[f32],
    reps: usize,
) -> Result<(Stats, f64)> {
    let model = tract_onnx::onnx()
        .model_for_path(path)?
        .into_optimized()
        .context("optimizing")?
        .into_runnable()?;
    let x = data["x"].flatten_all()?.to_vec1::<f32>()?;
    let mut inputs: TVec<TValue> =
        tvec!(Tensor::from_shape(&[spec.batch, spec.steps, spec.input], &x)?.into_tvalue());
    if model.model().input_outlets()?.len() == 2 {
        let lens: Vec<i64> = spec.lens.iter().map(|&l| l as i64).collect();
        inputs.push(Tensor::from_shape(&[spec.batch], &lens)?.into_tvalue());
    }
    let out = model.run(inputs.clone())?;
    let y: Vec<f32> = out[0].to_plain_array_view::<f32>()?.iter().copied().collect();
    let padded = !spec.all_full() && inputs.len() == 1;
    let diff = diff_y(spec, &y, expected, padded);
    let stats = measure(reps, || {
        model.run(inputs.clone())?;
        Ok(())
    })?;
    Ok((stats, diff))
}

fn bench_tract(spec: &Spec, dir: &Path, data: &HashMap<String, CTensor>, expected: &[f32], threads: usize, reps: usize) -> Vec<Value> {
    let name = format!("tract {}", env!("TRACT_VERSION"));
    let mut out = vec![];
    match tract_one(spec, &dir.join(format!("{}.onnx", spec.name)), data, expected, reps) {
        Ok((s, d)) => out.push(result_line(spec, &name, threads, &s, d, None)),
        Err(e) => {
            out.push(error_line(spec, &name, threads, &e));
            // Variable lengths rejected: time the model without sequence_lens
            // (every sequence runs all T steps), labelled as such.
            let padded = dir.join(format!("{}_padded.onnx", spec.name));
            if padded.exists() {
                let name = format!("{name} padded");
                match tract_one(spec, &padded, data, expected, reps) {
                    Ok((s, d)) => out.push(result_line(spec, &name, threads, &s, d,
                        Some("no sequence_lens support: all T steps on every sequence; diff on valid steps only"))),
                    Err(e) => out.push(error_line(spec, &name, threads, &e)),
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// candle

/// One direction of one layer, as candle-nn builds it from PyTorch names.
enum CandleRnn {
    Lstm(candle_nn::LSTM),
    Gru(candle_nn::GRU),
}

impl CandleRnn {
    /// x [B, T, I] -> y [B, T, H], through the layer's own `seq` (one step
    /// after another, input projection inside each step).
    fn run(&self, x: &CTensor) -> Result<CTensor> {
        let hs: Vec<CTensor> = match self {
            CandleRnn::Lstm(m) => m.seq(x)?.into_iter().map(|s| s.h).collect(),
            CandleRnn::Gru(m) => m.seq(x)?.into_iter().map(|s| s.h).collect(),
        };
        Ok(CTensor::stack(&hs, 1)?)
    }
}

fn bench_candle(spec: &Spec, data: &HashMap<String, CTensor>, expected: &[f32], threads: usize, reps: usize) -> Vec<Value> {
    let mut name = format!("candle {}", env!("CANDLE_VERSION"));
    let mut notes = vec![];
    if !spec.all_full() {
        name += " padded";
        notes.push("no length support: all T steps on every sequence; diff on valid steps only");
    }
    if spec.dirs == 2 {
        notes.push("bidirectional composed by hand: reverse-direction layer on the time-flipped input");
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    let run = || -> Result<(Stats, f64)> {
        let dev = Device::Cpu;
        let vb = candle_nn::VarBuilder::from_tensors(data.clone(), DType::F32, &dev);
        let mut layers: Vec<Vec<CandleRnn>> = vec![];
        for l in 0..spec.layers {
            let in_dim = if l == 0 { spec.input } else { spec.hidden * spec.dirs };
            let mut dirs = vec![];
            for d in 0..spec.dirs {
                let direction = if d == 0 { Direction::Forward } else { Direction::Backward };
                dirs.push(match spec.cell {
                    Cell::Lstm => CandleRnn::Lstm(candle_nn::lstm(in_dim, spec.hidden,
                        LSTMConfig { layer_idx: l, direction, ..Default::default() }, vb.clone())?),
                    Cell::Gru => {
                        // candle's GRU reads only the *_l0 names: one layer, one direction.
                        if l > 0 || d > 0 {
                            bail!("candle-nn GRU supports a single forward layer only");
                        }
                        CandleRnn::Gru(candle_nn::gru(in_dim, spec.hidden, GRUConfig::default(), vb.clone())?)
                    }
                });
            }
            layers.push(dirs);
        }
        let x = data["x"].clone();
        let forward = || -> Result<CTensor> {
            let mut cur = x.clone();
            for dirs in &layers {
                let mut outs = vec![dirs[0].run(&cur)?];
                if let Some(back) = dirs.get(1) {
                    // All W4 sequences are full, so reversing the time axis
                    // walks each sequence's valid part backwards.
                    outs.push(back.run(&cur.flip(&[1])?)?.flip(&[1])?);
                }
                cur = if outs.len() == 1 { outs.remove(0) } else { CTensor::cat(&outs, 2)? };
            }
            Ok(cur)
        };
        if spec.dirs == 2 && !spec.all_full() {
            bail!("bidirectional with variable lengths not composed for candle");
        }
        let y = forward()?.flatten_all()?.to_vec1::<f32>()?;
        let diff = diff_y(spec, &y, expected, !spec.all_full());
        let stats = measure(reps, || {
            forward()?;
            Ok(())
        })?;
        Ok((stats, diff))
    };
    match run() {
        Ok((s, d)) => vec![result_line(spec, &name, threads, &s, d, note.as_deref())],
        Err(e) => vec![error_line(spec, &name, threads, &e)],
    }
}

// ---------------------------------------------------------------------------

struct Args {
    threads: usize,
    workloads: Vec<String>,
    systems: Vec<String>,
    reps: usize,
    data: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        threads: 1,
        workloads: ["W1", "W2", "W3", "W4"].map(String::from).to_vec(),
        systems: vec!["tract".into(), "candle".into()],
        reps: 7,
        data: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        let list = |v: String| v.split(',').map(String::from).collect::<Vec<_>>();
        match flag.as_str() {
            "--threads" => a.threads = val()?.parse()?,
            "--workloads" => a.workloads = list(val()?),
            "--systems" => a.systems = list(val()?),
            "--reps" => a.reps = val()?.parse::<usize>()?.max(5),
            "--data" => a.data = PathBuf::from(val()?),
            "--json" => {} // the output is always JSON lines
            _ => bail!("unknown argument {flag}"),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // Before any rayon pool exists: candle's gemm sizes its work from this.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    if args.threads > 1 {
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread(args.threads),
        );
    }
    for w in &args.workloads {
        let path = args.data.join(format!("{w}.safetensors"));
        let data = candle_core::safetensors::load(&path, &Device::Cpu)
            .with_context(|| format!("reading {} (run bench/workloads.py)", path.display()))?;
        let spec = Spec::from_tensors(w, &data)?;
        let expected = candle_core::safetensors::load(args.data.join(format!("{w}.expected.safetensors")), &Device::Cpu)?
            ["y"].flatten_all()?.to_vec1::<f32>()?;
        for system in &args.systems {
            let lines = match system.as_str() {
                "tract" => bench_tract(&spec, &args.data, &data, &expected, args.threads, args.reps),
                "candle" => bench_candle(&spec, &data, &expected, args.threads, args.reps),
                other => bail!("unknown system {other}"),
            };
            for l in lines {
                println!("{l}");
            }
        }
    }
    Ok(())
}

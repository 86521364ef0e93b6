//! The memory of unroll's training calls on W5 or W5v, for `bench/memory.py`.
//!
//! Sets up as a training process would (the shared data file read, the model
//! built from its weights, the file's tensors dropped, `x` kept), then makes
//! `--calls` training calls (`forward_train`, the gradient of the loss,
//! `backward`, `recycle`; as `bench_unroll` times them) and prints one JSON
//! line: the resident memory after the setup, the process's peak and, at
//! the end, its anonymous and file-backed parts (`/proc/self/status`), the
//! bytes of the last call's tape
//! (`…Tape::bytes()`), the heap's peak during the calls (bytes allocated and
//! not yet freed, counted by this binary's allocator, above what the setup
//! left allocated) and the loss. `--calls 0` is the setup alone.
//!
//! Usage: `memory_unroll [--workload W5|W5v] [--mode dynamic|static] [--calls N] [--threads N] [--data DIR]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use rnn_bench::{memory_kib, W5Dynamic, W5Static, WORKLOADS};
use rnn_runtime::{RnnError, TensorMap, Threads};

/// The system allocator, counting the bytes allocated and not yet freed, and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Options {
    workload: String,
    mode: String,
    calls: usize,
    threads: usize,
    data: PathBuf,
}

const USAGE: &str = "usage: memory_unroll [--workload W5|W5v] [--mode dynamic|static] [--calls N] [--threads N] [--data DIR]";

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        workload: "W5".to_owned(),
        mode: "dynamic".to_owned(),
        calls: 1,
        threads: 1,
        data: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-data")),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} takes a value; {USAGE}"));
        match arg.as_str() {
            "--workload" => options.workload = value()?,
            "--mode" => options.mode = value()?,
            "--calls" => options.calls = value()?.parse().map_err(|_| "--calls takes a count")?,
            "--threads" => {
                options.threads = value()?
                    .parse()
                    .ok()
                    .filter(|count| *count >= 1)
                    .ok_or("--threads takes a count of at least 1")?
            }
            "--data" => options.data = PathBuf::from(value()?),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    Ok(options)
}

/// What one training call leaves to report: the loss and the tape's bytes.
struct Call {
    loss: f32,
    tape_bytes: usize,
}

/// A W5 model's training call, whichever mode it was compiled in.
trait TrainCall {
    fn call(&self, x: ndarray::ArrayView3<'_, f32>, lengths: &[usize]) -> Result<Call, RnnError>;
}

macro_rules! train_call {
    ($($model:ident),*) => {$(
        impl TrainCall for $model {
            fn call(
                &self,
                x: ndarray::ArrayView3<'_, f32>,
                lengths: &[usize],
            ) -> Result<Call, RnnError> {
                let (out, tape) = self.forward_train(x, Some(lengths), None)?;
                // Padded outputs are zero: sums over `y` are sums over valid steps.
                let count = (lengths.iter().sum::<usize>() * out.y.shape()[2]) as f32;
                let loss = out.y.iter().map(|v| v * v).sum::<f32>() / count;
                let dy = out.y.mapv(|v| 2.0 * v / count);
                let tape_bytes = tape.bytes();
                let grads = self.backward(&tape, dy.view(), None);
                self.recycle(tape);
                std::hint::black_box(grads?);
                Ok(Call { loss, tape_bytes })
            }
        }
    )*};
}

train_call!(W5Static, W5Dynamic);

fn run(options: &Options) -> Result<String, String> {
    let workload = WORKLOADS
        .iter()
        .find(|w| w.train && w.id == options.workload)
        .ok_or_else(|| format!("no training workload {}", options.workload))?;
    let path = options.data.join(format!("{}.safetensors", workload.id));
    let tensors = TensorMap::load(&path)
        .map_err(|e| format!("{}: {e} (bench/workloads.py makes it)", path.display()))?;
    let x = tensors
        .f32("x")
        .map_err(|e| e.to_string())?
        .into_dimensionality::<ndarray::Ix3>()
        .map_err(|e| format!("x: {e}"))?;
    let lengths = workload.lengths();
    let model: Box<dyn TrainCall> = match options.mode.as_str() {
        "dynamic" => {
            let mut model = W5Dynamic::from_weights(&tensors).map_err(|e| e.to_string())?;
            model.set_threads(Threads::Fixed(options.threads));
            Box::new(model)
        }
        "static" => {
            let mut model = W5Static::from_weights(&tensors).map_err(|e| e.to_string())?;
            model.set_threads(Threads::Fixed(options.threads));
            Box::new(model)
        }
        other => return Err(format!("--mode takes dynamic or static, not {other}")),
    };
    // A training process keeps the model and its input, not the file's tensors.
    drop(tensors);
    let setup_rss = memory_kib("VmRSS");
    let setup_peak = memory_kib("VmHWM");
    let setup_heap = LIVE.load(Ordering::Relaxed);
    PEAK.store(setup_heap, Ordering::Relaxed);
    let mut last = None;
    for _ in 0..options.calls {
        last = Some(model.call(x.view(), &lengths).map_err(|e| e.to_string())?);
    }
    let peak = memory_kib("VmHWM");
    let heap_peak = PEAK.load(Ordering::Relaxed) - setup_heap;
    let valid_steps: usize = lengths.iter().sum();
    Ok(serde_json::json!({
        "system": format!("unroll {}", options.mode),
        "workload": workload.id,
        "threads": options.threads,
        "calls": options.calls,
        "setup_rss_kib": setup_rss,
        "setup_peak_kib": setup_peak,
        "peak_rss_kib": peak,
        "anon_kib": memory_kib("RssAnon"),
        "file_kib": memory_kib("RssFile"),
        "valid_steps": valid_steps,
        "setup_heap_bytes": setup_heap,
        "call_heap_peak_bytes": heap_peak,
        "tape_bytes": last.as_ref().map(|call| call.tape_bytes),
        "loss": last.as_ref().map(|call| call.loss),
    })
    .to_string())
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|options| run(&options));
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

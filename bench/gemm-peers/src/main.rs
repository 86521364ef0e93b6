//! One thread, `out[n, m] += x[n, k] · w[m, k]ᵀ` (a step's product accumulating
//! onto its input projection) on the product shapes of the workloads:
//!
//! - unroll: `gemm_packed`, with `w` packed once beforehand (as a model does at
//!   construction), and with `w` packed on every call (what packing costs);
//! - `matrixmultiply`, through ndarray's `general_mat_mul` (ndarray's default);
//! - the `gemm` crate, `Parallelism::None` (built for stable Rust: its AVX-512
//!   kernels need its `nightly` feature, so it runs its AVX2 + FMA ones);
//! - OpenBLAS's `cblas_sgemm` (the system library, one thread).
//!
//! The peers take `w` as it is stored (`[m, k]`, row-major) and pack what they
//! need on every call: that is how a step would call them. Each line is the
//! best and the median of 7 timings of about 20 ms, the systems alternating
//! within each round (each round starting with the next one) so that they
//! share the machine's noise. Every result is
//! checked against unroll's.

use std::ffi::c_int;
use std::hint::black_box;
use std::time::Instant;

use ndarray::linalg::general_mat_mul;
use ndarray::Array2;
use rnn_runtime::__private::{gemm_packed, PackedMatrix};

// OpenBLAS's C interface (Debian's `libopenblas-dev`): `cblas_sgemm` and the
// thread setting.
#[link(name = "openblas")]
extern "C" {
    fn cblas_sgemm(
        layout: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn openblas_set_num_threads(threads: c_int);
    fn openblas_get_corename() -> *const std::ffi::c_char;
}

const CBLAS_ROW_MAJOR: c_int = 101;
const CBLAS_NO_TRANS: c_int = 111;
const CBLAS_TRANS: c_int = 112;

/// `(name, n, k, m)`; hoisted products are one chunk of about 512 KiB of
/// projections, as unroll computes them.
const SHAPES: [(&str, usize, usize, usize); 9] = [
    ("W1 recurrent", 1, 128, 512),
    ("W1 hoisted chunk", 256, 64, 512),
    ("W2 recurrent", 64, 256, 1024),
    ("W2 hoisted chunk", 128, 128, 1024),
    ("W3 recurrent", 16, 64, 192),
    ("W3 hoisted", 512, 32, 192),
    ("W4 recurrent", 32, 256, 1024),
    ("W4 hoisted l1 chunk", 128, 80, 1024),
    ("W4 hoisted l2 chunk", 128, 512, 1024),
];

const SYSTEMS: [&str; 5] = [
    "unroll",
    "unroll, packing every call",
    "matrixmultiply",
    "gemm crate",
    "OpenBLAS",
];

struct Case {
    x: Array2<f32>,
    w: Array2<f32>,
    packed: PackedMatrix,
    out: Array2<f32>,
}

impl Case {
    fn new(n: usize, k: usize, m: usize) -> Case {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let x = Array2::from_shape_simple_fn((n, k), &mut next);
        let w = Array2::from_shape_simple_fn((m, k), &mut next);
        let packed = PackedMatrix::new(w.view());
        Case {
            x,
            w,
            packed,
            out: Array2::zeros((n, m)),
        }
    }

    /// One product by `system`, accumulating onto `out`.
    fn run(&mut self, system: usize) {
        let (n, k) = self.x.dim();
        let m = self.w.nrows();
        match system {
            0 => gemm_packed(self.x.view(), &self.packed, self.out.view_mut(), true),
            1 => {
                let packed = PackedMatrix::new(self.w.view());
                gemm_packed(self.x.view(), &packed, self.out.view_mut(), true);
            }
            2 => general_mat_mul(1.0, &self.x, &self.w.t(), 1.0, &mut self.out),
            // SAFETY: the pointers and strides describe `out` `[n, m]`, `x`
            // `[n, k]` and `wᵀ` `[k, m]` (w's rows as columns), all row-major
            // and alive for the call.
            3 => unsafe {
                gemm::gemm(
                    n,
                    m,
                    k,
                    self.out.as_mut_ptr(),
                    1,
                    m as isize,
                    true,
                    self.x.as_ptr(),
                    1,
                    k as isize,
                    self.w.as_ptr(),
                    k as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            },
            // SAFETY: as above, with leading dimensions k (x, w) and m (out).
            _ => unsafe {
                cblas_sgemm(
                    CBLAS_ROW_MAJOR,
                    CBLAS_NO_TRANS,
                    CBLAS_TRANS,
                    n as c_int,
                    m as c_int,
                    k as c_int,
                    1.0,
                    self.x.as_ptr(),
                    k as c_int,
                    self.w.as_ptr(),
                    k as c_int,
                    1.0,
                    self.out.as_mut_ptr(),
                    m as c_int,
                )
            },
        }
    }
}

fn main() {
    // SAFETY: a plain setter of OpenBLAS's thread count, and a getter of the
    // name of the kernels it chose for this CPU (a static C string).
    let core = unsafe {
        openblas_set_num_threads(1);
        std::ffi::CStr::from_ptr(openblas_get_corename()).to_string_lossy()
    };
    // The packed matrix's debug form names unroll's kernel table.
    let unroll = PackedMatrix::new(Array2::zeros((1, 1)).view());
    eprintln!("[gemm] OpenBLAS kernels: {core}; unroll: {unroll:?}");
    println!("| product | n × k × m | system | best µs | median µs | GFLOP/s (best) | × unroll |");
    println!("|---|---|---|---:|---:|---:|---:|");
    for (name, n, k, m) in SHAPES {
        let mut case = Case::new(n, k, m);
        // The same result from every system (from zero, one product each).
        let mut reference = None;
        for (system, system_name) in SYSTEMS.iter().enumerate() {
            case.out.fill(0.0);
            case.run(system);
            match &reference {
                None => reference = Some(case.out.clone()),
                Some(expected) => {
                    let diff = (&case.out - expected)
                        .mapv(f32::abs)
                        .fold(0.0f32, |a, &b| a.max(b));
                    assert!(
                        diff < 1e-3,
                        "{name}: {system_name} differs from unroll by {diff}"
                    );
                }
            }
        }
        let flops = 2.0 * (n * k * m) as f64;
        // Calls per timing: about 20 ms at 100 GFLOP/s.
        let calls = ((2e-2 * 1e11 / flops) as usize).max(1);
        let mut times = vec![Vec::new(); SYSTEMS.len()];
        for round in 0..8 {
            // Each round starts with the next system, so that none always
            // runs first (or right after another).
            for offset in 0..SYSTEMS.len() {
                let system = (round + offset) % SYSTEMS.len();
                let samples = &mut times[system];
                case.out.fill(0.0);
                let start = Instant::now();
                for _ in 0..calls {
                    case.run(system);
                }
                black_box(&case.out);
                samples.push(start.elapsed().as_secs_f64() / calls as f64);
            }
        }
        let best_unroll = times[0][1..].iter().copied().fold(f64::MAX, f64::min);
        for (system, samples) in times.iter_mut().enumerate() {
            // The first round warms up.
            let samples = &mut samples[1..];
            samples.sort_by(f64::total_cmp);
            let (best, median) = (samples[0], samples[samples.len() / 2]);
            println!(
                "| {name} | {n} × {k} × {m} | {} | {:.2} | {:.2} | {:.1} | {:.2} |",
                SYSTEMS[system],
                best * 1e6,
                median * 1e6,
                flops / best / 1e9,
                best / best_unroll
            );
        }
    }
}

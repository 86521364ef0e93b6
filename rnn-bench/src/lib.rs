//! The benchmark workloads of `shared/WORKLOADS.md`, as unroll models.
//!
//! Each workload is compiled static (its `T` is fixed) and dynamic. A
//! static network longer than 64 steps calls one copy of its step per time
//! step, so W1's `static 1000` builds as fast as the dynamic one.

use rnn_macros::rnn;

rnn! {
    // W1 stream: LSTM I=64 H=128, B=1, T=1000.
    network W1Static { input x: [64]; layer l = lstm(hidden = 128); unroll static 1000; }
    network W1Dynamic { input x: [64]; layer l = lstm(hidden = 128); unroll dynamic; }
    network W1DynamicBy4 { input x: [64]; layer l = lstm(hidden = 128); unroll dynamic by 4; }
    // W1 with its weights in bfloat16 and int8 (states and sums in f32).
    network W1DynamicBf16 { input x: [64]; layer l = lstm(hidden = 128); unroll dynamic; precision bf16; }
    network W1DynamicInt8 { input x: [64]; layer l = lstm(hidden = 128); unroll dynamic; precision int8; }

    // W2 varlen: LSTM I=128 H=256, B=64, T=100, lengths 10..100.
    network W2Static { input x: [128]; layer l = lstm(hidden = 256); unroll static 100; }
    network W2Dynamic { input x: [128]; layer l = lstm(hidden = 256); unroll dynamic; }
    network W2DynamicBf16 { input x: [128]; layer l = lstm(hidden = 256); unroll dynamic; precision bf16; }
    network W2DynamicInt8 { input x: [128]; layer l = lstm(hidden = 256); unroll dynamic; precision int8; }

    // W3 small-fixed: GRU (reset after) I=32 H=64, B=16, T=32.
    network W3Static { input x: [32]; layer l = gru(hidden = 64); unroll static 32; }
    network W3Dynamic { input x: [32]; layer l = gru(hidden = 64); unroll dynamic; }

    // W4 speech: LSTM I=80 H=256, 2 layers, bidirectional, B=32, T=200.
    network W4Static { input x: [80]; layer l = lstm(hidden = 256, layers = 2, bidirectional); unroll static 200; }
    network W4Dynamic { input x: [80]; layer l = lstm(hidden = 256, layers = 2, bidirectional); unroll dynamic; }
}

rnn! {
    gradients = true;
    // W5 train: LSTM I=64 H=128, B=32, T=50, forward and backward of mean(y²) (W5v: lengths vary).
    network W5Static { input x: [64]; layer l = lstm(hidden = 128); unroll static 50; }
    network W5Dynamic { input x: [64]; layer l = lstm(hidden = 128); unroll dynamic; }
}

rnn! {
    gradients = true;
    // W6 LISTA: LISTA-CP, A 250×500, K = 16 untied steps, B = 64, x₀ = 0:
    // inference, and forward and backward of mean((x_K − x*)²).
    cell lista_cp(y: [M]) -> x: [N] {
        param A: [M, N];
        param W: [M, N] per step;
        param theta: [1] per step;
        x = soft_threshold(x + W^T @ (y - A @ x), theta);
    }
    network W6Static { context y: [250]; layer solver = lista_cp(N = 500, steps = 16); unroll static 16; }
    network W6Dynamic { context y: [250]; layer solver = lista_cp(N = 500, steps = 16); unroll dynamic; }
}

/// W6's shape (`shared/WORKLOADS.md`): batch, steps, `A`'s rows and columns.
pub const W6: (usize, usize, usize, usize) = (64, 16, 250, 500);

/// Useful floating-point operations of one W6 forward pass: two
/// matrix–vector products of `m·n` per sample and step
/// (`2·K·(2·m·n)`); a training step counts three forwards.
pub fn w6_flops(train: bool) -> f64 {
    let (batch, steps, m, n) = W6;
    let passes = if train { 3.0 } else { 1.0 };
    passes * (batch * steps * 2 * 2 * m * n) as f64
}

/// A line of `/proc/self/status` in KiB (`VmRSS`: resident now, `VmHWM`:
/// peak resident), where the system has it.
pub fn memory_kib(field: &str) -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One workload's shape.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// `W1` … `W4`.
    pub id: &'static str,
    /// Batch size.
    pub batch: usize,
    /// Time steps.
    pub steps: usize,
    /// Input size.
    pub input: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Gates: 4 for LSTM, 3 for GRU.
    pub gates: usize,
    /// Layers × directions.
    pub layer_directions: usize,
    /// Whether lengths vary (`len[i] = 10 + (i*37 % m)`, `m` below).
    pub varlen: bool,
    /// `m` of the lengths' formula: 91 for W2, 41 for W5v.
    pub length_modulus: usize,
    /// A training workload: forward and backward of a loss.
    pub train: bool,
}

/// The workloads: four forward, two training.
pub const WORKLOADS: [Workload; 6] = [
    Workload {
        id: "W1",
        batch: 1,
        steps: 1000,
        input: 64,
        hidden: 128,
        gates: 4,
        layer_directions: 1,
        varlen: false,
        length_modulus: 1,
        train: false,
    },
    Workload {
        id: "W2",
        batch: 64,
        steps: 100,
        input: 128,
        hidden: 256,
        gates: 4,
        layer_directions: 1,
        varlen: true,
        length_modulus: 91,
        train: false,
    },
    Workload {
        id: "W3",
        batch: 16,
        steps: 32,
        input: 32,
        hidden: 64,
        gates: 3,
        layer_directions: 1,
        varlen: false,
        length_modulus: 1,
        train: false,
    },
    Workload {
        id: "W4",
        batch: 32,
        steps: 200,
        input: 80,
        hidden: 256,
        gates: 4,
        layer_directions: 4,
        varlen: false,
        length_modulus: 1,
        train: false,
    },
    Workload {
        id: "W5",
        batch: 32,
        steps: 50,
        input: 64,
        hidden: 128,
        gates: 4,
        layer_directions: 1,
        varlen: false,
        length_modulus: 1,
        train: true,
    },
    Workload {
        id: "W5v",
        batch: 32,
        steps: 50,
        input: 64,
        hidden: 128,
        gates: 4,
        layer_directions: 1,
        varlen: true,
        length_modulus: 41,
        train: true,
    },
];

impl Workload {
    /// Each sequence's length.
    pub fn lengths(&self) -> Vec<usize> {
        (0..self.batch)
            .map(|i| {
                if self.varlen {
                    10 + (i * 37 % self.length_modulus)
                } else {
                    self.steps
                }
            })
            .collect()
    }

    /// Useful floating-point operations of one forward pass:
    /// `2·G·H·(I+H)` per valid step, per layer and direction (layer 2 of
    /// W4 reads `2H` inputs).
    pub fn flops(&self) -> f64 {
        let steps: usize = self.lengths().iter().sum();
        let (g, h) = (self.gates as f64, self.hidden as f64);
        let per_step = if self.layer_directions == 4 {
            // Two directions of layer 1 (input I) and of layer 2 (input 2H).
            2.0 * (2.0 * g * h * (self.input as f64 + h)) + 2.0 * (2.0 * g * h * (2.0 * h + h))
        } else {
            2.0 * g * h * (self.input as f64 + h)
        };
        // Training counts about three times the forward (WORKLOADS.md).
        let passes = if self.train { 3.0 } else { 1.0 };
        passes * per_step * steps as f64
    }
}

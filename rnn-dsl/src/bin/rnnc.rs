//! `rnnc`: the unroll compiler's command line.
//!
//! - `rnnc check FILE...` compiles model files and prints every diagnostic.
//! - `rnnc run` runs a network through the reference interpreter on
//!   safetensors weights and inputs and writes the outputs.
//! - `rnnc graph` prints the network unrolled over N steps as Graphviz DOT.
//! - `rnnc convert` converts weights between Keras, TensorFlow 1, ONNX and
//!   PyTorch layouts (`rnn_runtime::layout`).
//!
//! Diagnostics are rendered by `rnn_dsl::diag` exactly as `rnn_dsl::Error`
//! displays them, in colour only when stderr is a terminal. Every other
//! failure is one `error: ...` line on stderr. The exit status is 0 on
//! success, 1 when the model or the data is wrong, 2 when the command line
//! or a file could not be used (see [`EXIT_STATUS`]); nothing panics on user
//! input.

use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rnn_dsl::check::UnrollMode;
use rnn_dsl::{diag, graph, interp, ir, Compiled, Error};
use rnn_runtime::layout::{self, Layout};
use rnn_runtime::{RnnError, TensorMap};

/// The exit status table, shown at the end of every help page.
const EXIT_STATUS: &str = "\
Exit status:
  0  success (warnings do not make a run fail)
  1  the model has errors, or the data does not fit it: a missing, misshaped
     or mistyped tensor, a bad length, a file that is not valid safetensors
  2  the command line or a file could not be used: a bad option or value, an
     unknown network, a file that is missing, a directory, not UTF-8 text,
     over the size limit, or that cannot be written";

const ABOUT: &str =
    "The unroll compiler: check, run and draw recurrent networks written in the unroll language";

const LONG_ABOUT: &str = "\
The unroll compiler: check, run and draw recurrent networks written in the
unroll language (`.rnn` files of cells and networks).

Every diagnostic names the file, line and column, shows the source line with
carets under the problem, and says how to fix it; all errors of a file are
reported in one run.

Examples:
  rnnc check models/*.rnn
  rnnc run ista.rnn --weights w.safetensors --input x.safetensors --output y.safetensors
  rnnc graph tagger.rnn --steps 4 -o tagger.dot && dot -Tsvg tagger.dot -o tagger.svg";

const CHECK_ABOUT: &str = "Check model files and print every error and warning";

const CHECK_LONG_ABOUT: &str = "\
Check model files and print every error and warning.

Each FILE is parsed, checked and compiled to the IR. Diagnostics (warnings
too) go to stderr, in colour when stderr is a terminal; each file that
compiles gets an `ok: FILE (networks: ...)` line on stdout. All files are
checked even when one fails.

Example:
  rnnc check examples/models/ista.rnn models/tagger.rnn";

const RUN_ABOUT: &str =
    "Run a network on safetensors weights and inputs through the reference interpreter";

const RUN_LONG_ABOUT: &str = "\
Run a network on safetensors weights and inputs through the reference
interpreter, and write its outputs as safetensors.

Weights use PyTorch's names (`weight_ih_l0`, `bias_hh_l1_reverse`), prefixed
with the layer's name when the network has several layer statements
(`enc.weight_ih_l0`); a one-layer user cell also accepts its parameters' own
names, such as `A`. Inputs are each
per-step input `[B, T, n]` by its name, each context `[B, n]`, optionally
`seq_len` `[B]` and initial states `h0`, `c0` `[layers*directions, B, H]`,
and `steps` `[1]` for a dynamic network without per-step input.
Outputs are `y` `[B, T, directions*O]` and each final state (`h_n`, `c_n`).
One line per output tensor (name, dtype, shape) goes to stdout.

Example:
  rnnc run ista.rnn --weights ista-weights.safetensors \\
      --input measurements.safetensors --output codes.safetensors";

const GRAD_ABOUT: &str =
    "Run a network forward and backward on safetensors inputs through the reference interpreter";

const GRAD_LONG_ABOUT: &str = "\
Run a network forward and backward through the reference interpreter, and
write its outputs and the gradients of a loss as safetensors: for checking
gradients against another framework without writing Rust.

Weights and inputs are as for `rnnc run`. --seeds holds the gradient of the
loss with respect to each output, named as the output (`y` [B, T, D*O],
`h_n`, `c_n` [layers*directions, B, H]); a missing one is zero, so the loss
is sum(y * seed_y) + sum(h_n * seed_h_n) + ... . The output file holds the
forward outputs and `grad_<name>` for every weight, input and initial state
(an initial state the inputs lack is zero and still gets its gradient).
--f64 computes in float64 (the file stays float32).

Example:
  rnnc grad tagger.rnn --weights w.safetensors --input x.safetensors \\
      --seeds dy.safetensors --output grads.safetensors";

const EMIT_ABOUT: &str = "Generate the Rust code of a network";

const EMIT_LONG_ABOUT: &str = "\
Generate the Rust code of a network: a model type with `from_safetensors`,
`from_weights`, `random`, `forward` (and `step` for streaming), its state and
output types, formatted with prettyplease. The code names the runtime as
`::rnn_runtime`; the crate that includes it depends on `rnn-runtime`.

--mode overrides the file's unroll mode, written as in an `unroll`
statement and checked by the same rules: `static N`, `dynamic`, `dynamic by
K`, `static buckets [A, B] else dynamic` (quote it in the shell).
--precision overrides the file's `precision` statement: `f32`, `bf16` or
`int8` weights for the products (states, activations and sums stay f32).
Without -o the code goes to stdout.

Example:
  rnnc emit tagger.rnn --network Tagger --mode 'static 20' -o src/tagger.rs";

const CONVERT_ABOUT: &str =
    "Convert a network's weights from Keras, TensorFlow 1 or ONNX layout to PyTorch's (or back)";

const CONVERT_LONG_ABOUT: &str = "\
Convert a network's weights between frameworks' layouts: gate order,
orientation, one or two biases, TensorFlow 1's kernel over [x, h] and its
forget_bias, ONNX's directions in one tensor. Models read PyTorch's layout,
the default of --to.

The layers of built-in cells (lstm, gru, rnn_tanh, rnn_relu) are converted;
their tensors in the --from layout keep this project's prefix and `_l{k}`
suffix with the framework's base names:
  keras        kernel_l0 [I, G*H], recurrent_kernel_l0 [H, G*H], bias_l0 [G*H]
               (GRU reset_after=True: [2, 3*H]); `_reverse` for Bidirectional
  tensorflow1  LSTMCell kernel_l0 [I+H, 4*H], bias_l0, w_i_diag_l0 ...;
               GRUCell gates_kernel_l0, gates_bias_l0, candidate_kernel_l0,
               candidate_bias_l0; BasicRNNCell kernel_l0, bias_l0
  onnx         W_l0 [D, G*H, I], R_l0 [D, G*H, H], B_l0 [D, 2*G*H], P_l0 [D, 3*H]
Other tensors are copied as they are. A missing or misshaped tensor, or
weights the layer cannot honour (peepholes it lacks, a Keras GRU bias of the
other reset_after), is an error naming the tensor.

Example:
  rnnc convert tagger.rnn --from keras --weights keras.safetensors -o w.safetensors";

const IMPORT_ABOUT: &str =
    "Import an ONNX model's LSTM, GRU and RNN layers as a .rnn file and PyTorch-named weights";

const IMPORT_LONG_ABOUT: &str = "\
Import an ONNX model whose recurrent part is LSTM, GRU and RNN nodes: write a
.rnn file with one network (a layer statement per stack of nodes, `unroll
dynamic`) and a safetensors file of its weights under PyTorch's names, gates
reordered and biases split as the built-in cells read them.

Read: both ONNX layouts (layout 0 and 1); forward, reverse and bidirectional
nodes; sequence_lens, initial_h and initial_c; peepholes P; GRU's
linear_before_reset; clip (of the gates' pre-activations, as ONNX Runtime
computes it, with cells the .rnn file defines); stacked nodes, followed
through the glue PyTorch's exporters and tf2onnx emit (Transpose, Squeeze,
Reshape, Slice, Concat, shapes computed from shapes); a linear head on the
last layer (MatMul and Add of constants), which becomes a `linear` layer.
The .rnn file's header lists how each ONNX input and output maps to the
network's tensors (`x` [B, T, I], `seq_len`, `h0`, `y` [B, T, D*H], `h_n`,
`c_n`).

The importer is strict: an attribute the cells cannot honour exactly
(non-default activations, activation_alpha/beta, input_forget), any other
operator, or an opset it does not know is an error naming the node, the
attribute and its value.

Weights in an external data file (PyTorch's dynamo exporter writes
model.onnx.data) are read from beside the model. Weights that are graph
inputs rather than initializers (as in ONNX's own node tests) are read from
TensorProto files given with --tensor (each names its input, as
test_data_set_*/input_*.pb do).

Example:
  rnnc import lstm.onnx -o lstm.rnn
  rnnc run lstm.rnn --weights lstm.safetensors --input x.safetensors --output y.safetensors";

const GRAPH_ABOUT: &str = "Print a network unrolled over N steps as a Graphviz DOT graph";

const GRAPH_LONG_ABOUT: &str = "\
Print a network unrolled over N steps as a Graphviz DOT graph: one cluster
per time step with a node per layer and direction, the step's inputs and its
output, state edges from each step to the next (from the next to the previous
for a backward direction), contexts feeding every step, and the initial and
final states. The DOT goes to stdout unless -o names a file.

Example:
  rnnc graph tagger.rnn --steps 3 | dot -Tsvg -o tagger.svg";

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "rnnc", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(about = CHECK_ABOUT, long_about = CHECK_LONG_ABOUT, after_help = EXIT_STATUS)]
    Check(CheckArgs),
    #[command(about = RUN_ABOUT, long_about = RUN_LONG_ABOUT, after_help = EXIT_STATUS)]
    Run(RunArgs),
    #[command(about = GRAD_ABOUT, long_about = GRAD_LONG_ABOUT, after_help = EXIT_STATUS)]
    Grad(GradArgs),
    #[command(about = EMIT_ABOUT, long_about = EMIT_LONG_ABOUT, after_help = EXIT_STATUS)]
    Emit(EmitArgs),
    #[command(about = GRAPH_ABOUT, long_about = GRAPH_LONG_ABOUT, after_help = EXIT_STATUS)]
    Graph(GraphArgs),
    #[command(about = CONVERT_ABOUT, long_about = CONVERT_LONG_ABOUT, after_help = EXIT_STATUS)]
    Convert(ConvertArgs),
    #[command(about = IMPORT_ABOUT, long_about = IMPORT_LONG_ABOUT, after_help = EXIT_STATUS)]
    Import(ImportArgs),
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The ONNX model
    #[arg(value_name = "MODEL.onnx")]
    file: PathBuf,
    /// The .rnn file to write (replaced if it exists)
    #[arg(short, long, value_name = "OUT.rnn")]
    output: PathBuf,
    /// The weights file to write; OUT.safetensors beside OUT.rnn when omitted
    #[arg(short, long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
    /// The network's name; from OUT.rnn's file name when omitted
    #[arg(short, long, value_name = "NAME")]
    name: Option<String>,
    /// A TensorProto file holding the value of a graph input the model needs as a constant
    #[arg(short, long, value_name = "TENSOR.pb", num_args = 1..)]
    tensor: Vec<PathBuf>,
}

/// A `precision` statement on the command line (`rnnc emit --precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PrecisionArg {
    /// float32 weights (the default)
    F32,
    /// bfloat16 weights
    Bf16,
    /// 8-bit weights, one scale per output row
    Int8,
}

impl PrecisionArg {
    fn precision(self) -> Option<rnn_dsl::check::Precision> {
        match self {
            PrecisionArg::F32 => None,
            PrecisionArg::Bf16 => Some(rnn_dsl::check::Precision::Bf16),
            PrecisionArg::Int8 => Some(rnn_dsl::check::Precision::Int8),
        }
    }
}

/// A weight layout on the command line (`rnn_runtime::layout::Layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LayoutArg {
    /// PyTorch's `state_dict`: what models read
    Pytorch,
    /// Keras `LSTM`, `GRU`, `SimpleRNN`, `Bidirectional`
    Keras,
    /// TensorFlow 1's `LSTMCell`, `GRUCell`, `BasicRNNCell`
    #[value(alias = "tf1")]
    Tensorflow1,
    /// ONNX `LSTM`, `GRU`, `RNN` initializers
    Onnx,
}

impl LayoutArg {
    fn layout(self, forget_bias: f32) -> Layout {
        match self {
            LayoutArg::Pytorch => Layout::PyTorch,
            LayoutArg::Keras => Layout::Keras,
            LayoutArg::Tensorflow1 => Layout::TensorFlow1 { forget_bias },
            LayoutArg::Onnx => Layout::Onnx,
        }
    }
}

#[derive(Debug, Args)]
struct ConvertArgs {
    /// The model file
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Safetensors file of the weights, in the --from layout
    #[arg(short, long, value_name = "W.safetensors")]
    weights: PathBuf,
    /// Safetensors file to write, in the --to layout (replaced if it exists)
    #[arg(short, long, value_name = "OUT.safetensors")]
    output: PathBuf,
    /// The layout of --weights
    #[arg(long, value_enum, value_name = "LAYOUT")]
    from: LayoutArg,
    /// The layout to write
    #[arg(long, value_enum, value_name = "LAYOUT", default_value = "pytorch")]
    to: LayoutArg,
    /// TensorFlow 1's LSTMCell `forget_bias`, added at run time by TensorFlow and folded into the bias here
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    forget_bias: f32,
    /// The network whose layers the weights are for; needed when the file defines several
    #[arg(short, long, value_name = "NAME")]
    network: Option<String>,
}

#[derive(Debug, Args)]
struct EmitArgs {
    /// The model file
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The network to emit; all networks of the file when omitted
    #[arg(short, long, value_name = "NAME")]
    network: Option<String>,
    /// Unroll mode instead of the file's, as in an `unroll` statement: `static N`, `dynamic`, `dynamic by K`, `static buckets [..]`
    #[arg(short, long, value_name = "MODE")]
    mode: Option<String>,
    /// Also generate the training code: `forward_train`, `backward`, the tape and gradient types
    #[arg(long)]
    gradients: bool,
    /// Precision of the products' weights instead of the file's `precision` statement
    #[arg(long, value_name = "PRECISION")]
    precision: Option<PrecisionArg>,
    /// Write the code to this file instead of stdout
    #[arg(short, long, value_name = "OUT.rs")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Model files to check
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The model file
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Safetensors file of the weights
    #[arg(short, long, value_name = "W.safetensors")]
    weights: PathBuf,
    /// Safetensors file of the inputs (and optional `seq_len`, initial states)
    #[arg(short, long, value_name = "X.safetensors")]
    input: PathBuf,
    /// Safetensors file to write the outputs to (replaced if it exists)
    #[arg(short, long, value_name = "Y.safetensors")]
    output: PathBuf,
    /// The network to run; needed when the file defines several
    #[arg(short, long, value_name = "NAME")]
    network: Option<String>,
}

#[derive(Debug, Args)]
struct GradArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Safetensors file of the loss's gradients with respect to the outputs (`y`, `h_n`, ...)
    #[arg(short, long, value_name = "DY.safetensors")]
    seeds: PathBuf,
    /// Compute in float64 instead of float32
    #[arg(long)]
    f64: bool,
}

#[derive(Debug, Args)]
struct GraphArgs {
    /// The model file
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Number of time steps to draw (1 to 1000)
    #[arg(short, long, value_name = "N")]
    steps: usize,
    /// The network to draw; needed when the file defines several
    #[arg(short, long, value_name = "NAME")]
    network: Option<String>,
    /// Write the DOT to this file instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let style = Style::for_stderr();
    let result = match cli.command {
        Command::Check(args) => check(&args, style),
        Command::Run(args) => run(&args, style),
        Command::Grad(args) => grad(&args, style),
        Command::Emit(args) => emit(&args, style),
        Command::Graph(args) => draw(&args, style),
        Command::Convert(args) => convert(&args, style),
        Command::Import(args) => import(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            print_stderr(&failure.text);
            ExitCode::from(failure.status)
        }
    }
}

/// Exit status 1: the model has errors or the data does not fit it.
const STATUS_INVALID: u8 = 1;
/// Exit status 2: the command line or a file could not be used.
const STATUS_UNUSABLE: u8 = 2;

/// Why a command failed: the text for stderr (whole lines) and the exit
/// status.
#[derive(Debug)]
struct Failure {
    status: u8,
    text: String,
}

impl Failure {
    /// A one-line error about the command line or a file: status 2.
    fn unusable(message: impl std::fmt::Display) -> Failure {
        Failure {
            status: STATUS_UNUSABLE,
            text: format!("error: {message}\n"),
        }
    }

    /// A one-line error about the model or the data: status 1.
    fn invalid(message: impl std::fmt::Display) -> Failure {
        Failure {
            status: STATUS_INVALID,
            text: format!("error: {message}\n"),
        }
    }

    /// A compile error: unreadable files are status 2, diagnostics status 1.
    fn compile(error: &Error, style: Style) -> Failure {
        match error {
            Error::Io { .. } | Error::Config { .. } => Failure {
                status: STATUS_UNUSABLE,
                text: format!("{error}\n"),
            },
            Error::Diagnostics {
                source,
                diagnostics,
            } => {
                let plain = error.to_string();
                let text = match style {
                    Style::Plain => format!("{plain}\n"),
                    Style::Ansi => {
                        // The summary line after the diagnostics is whatever
                        // `Error`'s Display adds to `diag::render`.
                        let rendered = diag::render(source, diagnostics);
                        let summary = plain.strip_prefix(rendered.as_str()).unwrap_or("");
                        format!("{}{summary}\n", diag::render_ansi(source, diagnostics))
                    }
                };
                Failure {
                    status: STATUS_INVALID,
                    text,
                }
            }
        }
    }

    /// A run-time error: file access is status 2, bad data status 1.
    fn runtime(error: &RnnError) -> Failure {
        if matches!(error, RnnError::Io { .. }) {
            Failure::unusable(error)
        } else {
            Failure::invalid(error)
        }
    }
}

/// How diagnostics are printed to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Ansi,
}

impl Style {
    /// Colour when stderr is a terminal and `NO_COLOR` is unset or empty.
    fn for_stderr() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        if io::stderr().is_terminal() && !no_color {
            Style::Ansi
        } else {
            Style::Plain
        }
    }
}

/// `rnnc check`: every file, then the worst status.
fn check(args: &CheckArgs, style: Style) -> Result<(), Failure> {
    let mut status = 0;
    for path in &args.files {
        match compile_file(path, style) {
            Ok(compiled) => {
                let names: Vec<&str> = compiled
                    .model
                    .networks
                    .iter()
                    .map(|network| network.name.as_str())
                    .collect();
                let networks = if names.is_empty() {
                    "no networks".to_owned()
                } else {
                    format!("networks: {}", names.join(", "))
                };
                print_stdout(&format!("ok: {} ({networks})\n", path.display()))?;
            }
            Err(failure) => {
                print_stderr(&failure.text);
                status = status.max(failure.status);
            }
        }
    }
    match status {
        0 => Ok(()),
        // Everything has been printed; only the status is left.
        status => Err(Failure {
            status,
            text: String::new(),
        }),
    }
}

/// `rnnc run`: compile, load, interpret, save, summarise.
fn run(args: &RunArgs, style: Style) -> Result<(), Failure> {
    let compiled = compile_file(&args.file, style)?;
    let network = choose_network(&compiled, args.network.as_deref())?;
    let weights = TensorMap::load(&args.weights).map_err(|error| Failure::runtime(&error))?;
    let inputs = TensorMap::load(&args.input).map_err(|error| Failure::runtime(&error))?;
    let outputs =
        interp::run(network, &weights, &inputs).map_err(|error| Failure::runtime(&error))?;
    save_outputs(&outputs, &args.output)
}

/// Writes `outputs` to `path` and one line per tensor (name, dtype, shape) to stdout.
fn save_outputs(outputs: &TensorMap, path: &std::path::Path) -> Result<(), Failure> {
    outputs
        .save(path)
        .map_err(|error| Failure::runtime(&error))?;
    let mut summary = String::new();
    for (name, tensor) in outputs.iter() {
        summary.push_str(&format!(
            "{name}: {} {:?}\n",
            tensor.dtype(),
            tensor.shape()
        ));
    }
    print_stdout(&summary)
}

/// `rnnc grad`: compile, run forward and backward, write.
fn grad(args: &GradArgs, style: Style) -> Result<(), Failure> {
    let run = &args.run;
    let compiled = compile_file(&run.file, style)?;
    let network = choose_network(&compiled, run.network.as_deref())?;
    let load = |path: &PathBuf| TensorMap::load(path).map_err(|error| Failure::runtime(&error));
    let (weights, inputs, seeds) = (load(&run.weights)?, load(&run.input)?, load(&args.seeds)?);
    let outputs = if args.f64 {
        let wide = interp::gradients_in::<f64>(
            network,
            &interp::widen(&weights),
            &interp::widen(&inputs),
            &interp::widen(&seeds),
        )
        .map_err(|error| Failure::runtime(&error))?;
        let mut outputs = TensorMap::new();
        for (name, array) in wide {
            outputs.insert_f32(name, array.mapv(|value| value as f32));
        }
        outputs
    } else {
        interp::gradients(network, &weights, &inputs, &seeds)
            .map_err(|error| Failure::runtime(&error))?
    };
    save_outputs(&outputs, &run.output)
}

/// `rnnc graph`: compile, draw, write.
fn draw(args: &GraphArgs, style: Style) -> Result<(), Failure> {
    if !(1..=graph::MAX_STEPS).contains(&args.steps) {
        return Err(Failure::unusable(format!(
            "--steps {} is out of range: rnnc graph draws 1 to {} steps",
            args.steps,
            graph::MAX_STEPS
        )));
    }
    let compiled = compile_file(&args.file, style)?;
    let network = choose_network(&compiled, args.network.as_deref())?;
    if let Some(limit) = step_limit(network).filter(|limit| args.steps > *limit) {
        print_stderr(&format!(
            "warning: network `{}` runs at most {limit} steps; drawing {} anyway\n",
            network.name, args.steps
        ));
    }
    let dot = graph::to_dot(network, args.steps);
    match &args.output {
        Some(path) => fs::write(path, dot).map_err(|error| {
            Failure::unusable(format!("cannot write `{}`: {error}", path.display()))
        }),
        None => print_stdout(&dot),
    }
}

/// `rnnc emit`: generated Rust for one network or all of a file.
fn emit(args: &EmitArgs, style: Style) -> Result<(), Failure> {
    let compiled = compile_file(&args.file, style)?;
    let mode = match &args.mode {
        // A bad mode is a bad command line (status 2), shown as the
        // language's own diagnostic.
        Some(text) => Some(rnn_dsl::unroll_mode(text).map_err(|error| Failure {
            status: STATUS_UNUSABLE,
            ..Failure::compile(&error, style)
        })?),
        None => None,
    };
    if let Some(name) = &args.network {
        choose_network(&compiled, Some(name))?;
    }
    let options = rnn_dsl::Options {
        network: args.network.clone(),
        mode,
        gradients: args.gradients,
        precision: args.precision.map(PrecisionArg::precision),
        ..rnn_dsl::Options::default()
    };
    let code = compiled
        .generate(&options)
        .map_err(|error| Failure::compile(&error, style))?
        .file(true);
    match &args.output {
        Some(path) => fs::write(path, code).map_err(|error| {
            Failure::unusable(format!("cannot write `{}`: {error}", path.display()))
        }),
        None => print_stdout(&code),
    }
}

/// `rnnc convert`: a weight file from one framework's layout to another's, through PyTorch's.
fn convert(args: &ConvertArgs, style: Style) -> Result<(), Failure> {
    let compiled = compile_file(&args.file, style)?;
    let network = choose_network(&compiled, args.network.as_deref())?;
    let layers = rnn_dsl::weights::recurrent_layers(network);
    let source = TensorMap::load(&args.weights).map_err(|error| Failure::runtime(&error))?;
    let (from, to) = (
        args.from.layout(args.forget_bias),
        args.to.layout(args.forget_bias),
    );
    let converted = layout::to_pytorch(&source, &layers, from)
        .and_then(|pytorch| layout::from_pytorch(&pytorch, &layers, to))
        .map_err(|error| Failure::runtime(&error))?;
    save_outputs(&converted, &args.output)
}

/// The largest ONNX or TensorProto file `rnnc import` reads, in bytes (protobuf's own limit).
const MAX_ONNX_BYTES: u64 = 2 << 30;

/// Reads a whole file of at most [`MAX_ONNX_BYTES`].
fn read_binary(path: &Path) -> Result<Vec<u8>, Failure> {
    let unusable = |error: &dyn std::fmt::Display| {
        Failure::unusable(format!("cannot read {}: {error}", path.display()))
    };
    let metadata = std::fs::metadata(path).map_err(|error| unusable(&error))?;
    if metadata.is_dir() {
        return Err(unusable(&"it is a directory"));
    }
    if metadata.len() > MAX_ONNX_BYTES {
        return Err(unusable(&format!(
            "it is {} bytes, over the {MAX_ONNX_BYTES}-byte limit of protobuf files",
            metadata.len()
        )));
    }
    std::fs::read(path).map_err(|error| unusable(&error))
}

/// `rnnc import`: read the ONNX model (and given tensors), import, write both files.
fn import(args: &ImportArgs) -> Result<(), Failure> {
    let bytes = read_binary(&args.file)?;
    let mut given = std::collections::BTreeMap::new();
    for path in &args.tensor {
        let tensor = rnn_dsl::import::proto::tensor(&read_binary(path)?).map_err(|error| {
            Failure::invalid(format!(
                "{}: not an ONNX TensorProto ({error})",
                path.display()
            ))
        })?;
        let values = tensor
            .values()
            .map_err(|message| Failure::invalid(format!("{}: {message}", path.display())))?;
        if tensor.name.is_empty() {
            return Err(Failure::invalid(format!(
                "{}: the tensor has no name, so the input it is for is unknown",
                path.display()
            )));
        }
        given.insert(tensor.name, values);
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None => network_name(&args.output),
    };
    let dir = match args.file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let imported = rnn_dsl::import::onnx_in(&bytes, &given, &name, &dir)
        .map_err(|error| Failure::invalid(format!("{}: {error}", args.file.display())))?;
    let weights_path = args
        .weights
        .clone()
        .unwrap_or_else(|| args.output.with_extension("safetensors"));
    if weights_path == args.output {
        return Err(Failure::unusable(format!(
            "the weights would be written over the model text {}: give -o a .rnn file or -w another path",
            args.output.display()
        )));
    }
    std::fs::write(&args.output, &imported.text).map_err(|error| {
        Failure::unusable(format!("cannot write {}: {error}", args.output.display()))
    })?;
    imported
        .weights
        .save(&weights_path)
        .map_err(|error| Failure::runtime(&error))?;
    print_stdout(&format!(
        "wrote {} (network {name}) and {}\n",
        args.output.display(),
        weights_path.display()
    ))
}

/// A network name from a file name: `lstm_tagger.rnn` is `LstmTagger`; `Model` when nothing
/// of it is a name.
fn network_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name = String::new();
    for word in stem.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    if name.chars().next().is_none_or(|c| !c.is_ascii_alphabetic()) {
        name.insert_str(0, "Model");
    }
    name
}

/// Reads and compiles a model file; prints its warnings to stderr.
fn compile_file(path: &Path, style: Style) -> Result<Compiled, Failure> {
    let compiled = rnn_dsl::read_source(path)
        .and_then(rnn_dsl::compile)
        .map_err(|error| Failure::compile(&error, style))?;
    if !compiled.warnings.is_empty() {
        let text = match style {
            Style::Plain => diag::render(&compiled.source, &compiled.warnings),
            Style::Ansi => diag::render_ansi(&compiled.source, &compiled.warnings),
        };
        print_stderr(&text);
    }
    Ok(compiled)
}

/// The network named on the command line, or the file's only one.
fn choose_network<'a>(
    compiled: &'a Compiled,
    name: Option<&str>,
) -> Result<&'a ir::Network, Failure> {
    compiled.network(name).map_err(|message| {
        if name.is_none() && compiled.model.networks.len() > 1 {
            Failure::unusable(format!("{message} with --network NAME"))
        } else {
            Failure::unusable(message)
        }
    })
}

/// The most steps a network can run, if its unroll mode bounds them.
fn step_limit(network: &ir::Network) -> Option<usize> {
    match &network.unroll {
        UnrollMode::Static(steps) => Some(*steps),
        UnrollMode::Buckets {
            lengths,
            dynamic_fallback: false,
        } => lengths.last().copied(),
        UnrollMode::Buckets { .. } | UnrollMode::Dynamic | UnrollMode::DynamicBy(_) => None,
    }
}

/// Writes to stdout. A closed pipe (`rnnc graph ... | head`) ends the
/// output quietly; any other write error is a failure.
fn print_stdout(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => Err(Failure::unusable(format!(
            "cannot write to standard output: {error}"
        ))),
        _ => Ok(()),
    }
}

/// Writes `text` to stderr as it is. Errors are ignored: there is nowhere
/// left to report them.
fn print_stderr(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

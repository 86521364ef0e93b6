//! End-to-end tests of the `rnnc` binary: exit statuses, what goes to stdout
//! and stderr, and the numbers `rnnc run` writes (against the library's
//! interpreter and against a hand-written reference).
//!
//! Every file a test writes lives in its own directory under
//! `CARGO_TARGET_TMPDIR`.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::{ArrayD, IxDyn};
use rnn_dsl::interp;
use rnn_runtime::{Tensor, TensorMap};

#[path = "support/dot.rs"]
mod dot;

use dot::assert_dot_structure;

/// ISTA as a cell, as in `examples/models/ista.rnn`.
const ISTA: &str = "\
// ISTA: one step is one iteration.
cell ista(y: [M]) -> x: [N] {
    param A: [M, N];
    param L: [1];
    param lam: [1];
    x = soft_threshold(x + (1 / L) * (A^T @ (y - A @ x)), lam / L);
}

network Ista {
    context y: [20];
    layer solver = ista(N = 40);
    unroll static 20;
}
";

const ISTA_M: usize = 20;
const ISTA_N: usize = 40;
const ISTA_STEPS: usize = 20;

const LSTM: &str =
    "network Tagger { input x: [3]; layer rnn = lstm(hidden = 4); unroll dynamic; }\n";

const BIDIRECTIONAL: &str = "\
network Tagger {
    input x: [6];
    layer enc = lstm(hidden = 5, layers = 2, bidirectional);
    unroll dynamic;
}
";

/// An unknown cell on line 3, column 17.
const UNKNOWN_CELL: &str = "\
network N {
    input x: [4];
    layer rnn = lsmt(hidden = 8);
    unroll dynamic;
}
";

/// Independent mistakes in two networks.
const SEVERAL_ERRORS: &str = "\
network Tagger {
    input x: [32];
    layer enc = lstm(hidden = 64, bidirectionl);
    unroll static 0;
}

network Classifier {
    input x: [32];
    layer enc = rnn_tanhh(hidden = 64);
    unroll dynamic;
}
";

/// Valid, with a warning: `b` is never used.
const UNUSED_PARAM: &str = "\
cell my_rnn(x: [I]) -> h: [H] {
    param w: [H, I];
    param u: [H, H];
    param b: [H];
    h = tanh(w @ x + u @ h);
}

network N { input x: [8]; layer l = my_rnn(hidden = 16); unroll dynamic; }
";

// ---- check ----------------------------------------------------------------

#[test]
fn check_ok_file_exits_zero_and_says_ok() {
    let dir = scratch("check_ok");
    let model = write(&dir, "ista.rnn", ISTA);
    let out = rnnc([OsStr::new("check"), model.as_os_str()]);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        format!("ok: {} (networks: Ista)\n", model.display())
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn check_prints_warnings_and_still_succeeds() {
    let dir = scratch("check_warning");
    let model = write(&dir, "unused.rnn", UNUSED_PARAM);
    let out = rnnc([OsStr::new("check"), model.as_os_str()]);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("warning: parameter `b` is never used"),
        "{out:?}"
    );
    let compiled =
        rnn_dsl::compile(rnn_dsl::read_source(&model).expect("readable")).expect("valid");
    assert_eq!(
        out.stderr,
        rnn_dsl::diag::render(&compiled.source, &compiled.warnings)
    );
    assert_eq!(
        out.stdout,
        format!("ok: {} (networks: N)\n", model.display())
    );
}

#[test]
fn check_bad_file_exits_one_with_located_error() {
    let dir = scratch("check_bad");
    let model = write(&dir, "bad.rnn", UNKNOWN_CELL);
    let out = rnnc([OsStr::new("check"), model.as_os_str()]);
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("error: unknown cell `lsmt`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{}:3:17", model.display())),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("layer rnn = lsmt(hidden = 8);"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .lines()
            .any(|line| line.trim_end().ends_with("^^^^ no cell of this name")),
        "{}",
        out.stderr
    );
    // Exactly what the library's `Error` displays.
    let error = rnn_dsl::compile(rnn_dsl::read_source(&model).expect("readable"))
        .expect_err("invalid model");
    assert_eq!(out.stderr, format!("{error}\n"));
    assert_eq!(out.stdout, "");
}

#[test]
fn check_reports_several_errors_in_one_run() {
    let dir = scratch("check_several");
    let model = write(&dir, "several.rnn", SEVERAL_ERRORS);
    let out = rnnc([OsStr::new("check"), model.as_os_str()]);
    assert_eq!(out.status, Some(1), "{out:?}");
    for expected in [
        "error: cell `lstm` has no argument `bidirectionl`",
        "error: static unroll length must be at least 1, found 0",
        "error: unknown cell `rnn_tanhh`",
        ":3:35",
        ":4:5",
        ":9:17",
    ] {
        assert!(
            out.stderr.contains(expected),
            "missing {expected:?} in\n{}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("due to 3 errors"), "{}", out.stderr);
}

#[test]
fn check_goes_through_every_file_and_reports_the_worst_status() {
    let dir = scratch("check_many");
    let good = write(&dir, "good.rnn", LSTM);
    let bad = write(&dir, "bad.rnn", UNKNOWN_CELL);
    let missing = dir.join("missing.rnn");

    let out = rnnc([OsStr::new("check"), bad.as_os_str(), good.as_os_str()]);
    assert_eq!(out.status, Some(1), "{out:?}");
    assert_eq!(
        out.stdout,
        format!("ok: {} (networks: Tagger)\n", good.display())
    );
    assert!(out.stderr.contains("unknown cell `lsmt`"), "{}", out.stderr);

    // An unreadable file outranks a file with errors.
    let out = rnnc([
        OsStr::new("check"),
        bad.as_os_str(),
        missing.as_os_str(),
        good.as_os_str(),
    ]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert!(out.stderr.contains("unknown cell `lsmt`"), "{}", out.stderr);
    assert!(out.stderr.contains("missing.rnn"), "{}", out.stderr);
    assert!(out.stdout.contains("good.rnn"), "{}", out.stdout);
}

#[test]
fn check_missing_file_is_one_line_exit_two() {
    let dir = scratch("check_missing");
    let missing = dir.join("nowhere.rnn");
    let out = rnnc([OsStr::new("check"), missing.as_os_str()]);
    assert_one_line_error(&out, 2, &["cannot read", "nowhere.rnn"]);
}

#[test]
fn check_directory_is_one_line_exit_two() {
    let dir = scratch("check_directory");
    let out = rnnc([OsStr::new("check"), dir.as_os_str()]);
    assert_one_line_error(&out, 2, &["is a directory"]);
}

#[test]
fn check_binary_file_is_one_line_exit_two() {
    let dir = scratch("check_binary");
    let path = dir.join("model.rnn");
    fs::write(&path, [0x89, b'P', b'N', b'G', 0x00, 0xff, 0xfe, 0x01]).expect("write binary file");
    let out = rnnc([OsStr::new("check"), path.as_os_str()]);
    assert_one_line_error(&out, 2, &["not UTF-8", "model.rnn"]);
}

#[test]
fn check_oversized_file_is_one_line_exit_two() {
    let dir = scratch("check_oversized");
    let size = usize::try_from(rnn_dsl::MAX_FILE_BYTES).expect("limit fits in memory") + 1;
    let path = write(&dir, "huge.rnn", &format!("//{}", "x".repeat(size - 2)));
    let out = rnnc([OsStr::new("check"), path.as_os_str()]);
    assert_one_line_error(&out, 2, &["huge.rnn", "bytes"]);
}

// ---- run ------------------------------------------------------------------

#[test]
fn run_ista_matches_the_interpreter_and_a_hand_written_loop() {
    let dir = scratch("run_ista");
    let model = write(&dir, "ista.rnn", ISTA);
    let batch = 2;
    let mut rng = Rng::new(7);
    let a: Vec<f32> = (0..ISTA_M * ISTA_N).map(|_| rng.next()).collect();
    // L at least the largest eigenvalue of AᵀA (here ‖A‖²_F), so ISTA converges.
    let lipschitz: f32 = a.iter().map(|value| value * value).sum();
    let lam = 0.05_f32;
    let y: Vec<f32> = (0..batch * ISTA_M).map(|_| rng.next()).collect();

    let mut weights = TensorMap::new();
    weights.insert_f32("A", array(&[ISTA_M, ISTA_N], a.clone()));
    weights.insert_f32("L", array(&[1], vec![lipschitz]));
    weights.insert_f32("lam", array(&[1], vec![lam]));
    let mut inputs = TensorMap::new();
    inputs.insert_f32("y", array(&[batch, ISTA_M], y.clone()));

    let outputs = run_model(&dir, &model, &weights, &inputs, &[]);
    assert_eq!(outputs.stdout, "x_n: F32 [1, 2, 40]\ny: F32 [2, 20, 40]\n");
    let written = outputs.tensors;

    // Identical to the library's interpreter on the same data.
    let compiled =
        rnn_dsl::compile(rnn_dsl::read_source(&model).expect("readable")).expect("valid");
    let network = compiled.network(None).expect("one network");
    let expected = interp::run(network, &weights, &inputs).expect("interpreter runs");
    assert_eq!(written, expected);

    // Close to a direct ISTA loop.
    let sequence = f32_tensor(&written, "y");
    let final_x = f32_tensor(&written, "x_n");
    assert_eq!(sequence.shape(), [batch, ISTA_STEPS, ISTA_N]);
    assert_eq!(final_x.shape(), [1, batch, ISTA_N]);
    let mut nonzero = 0;
    for b in 0..batch {
        let iterates = ista_reference(
            &a,
            &y[b * ISTA_M..(b + 1) * ISTA_M],
            lipschitz,
            lam,
            ISTA_STEPS,
        );
        for (k, x) in iterates.iter().enumerate() {
            for (j, reference) in x.iter().enumerate() {
                let got = sequence[[b, k, j]];
                assert!(
                    (got - reference).abs() <= 1e-5,
                    "y[{b}, {k}, {j}] = {got}, reference {reference}"
                );
            }
        }
        let last = iterates.last().expect("at least one step");
        for (j, reference) in last.iter().enumerate() {
            let got = final_x[[0, b, j]];
            assert!(
                (got - reference).abs() <= 1e-5,
                "x_n[0, {b}, {j}] = {got}, reference {reference}"
            );
            nonzero += usize::from(*reference != 0.0);
        }
    }
    assert!(
        nonzero > 0,
        "the test data should not shrink everything to zero"
    );
}

#[test]
fn run_lstm_zeroes_outputs_past_each_length() {
    let dir = scratch("run_lstm");
    let model = write(&dir, "lstm.rnn", LSTM);
    let (batch, steps, input_size, hidden) = (3, 5, 3, 4);
    let lengths = [5_i64, 2, 0];
    let mut rng = Rng::new(11);
    let mut weights = TensorMap::new();
    for (name, shape) in [
        ("weight_ih_l0", vec![4 * hidden, input_size]),
        ("weight_hh_l0", vec![4 * hidden, hidden]),
        ("bias_ih_l0", vec![4 * hidden]),
        ("bias_hh_l0", vec![4 * hidden]),
    ] {
        let len = shape.iter().product();
        weights.insert_f32(
            name,
            array(&shape, (0..len).map(|_| 0.5 * rng.next()).collect()),
        );
    }
    let mut inputs = TensorMap::new();
    let x_len = batch * steps * input_size;
    inputs.insert_f32(
        "x",
        array(
            &[batch, steps, input_size],
            (0..x_len).map(|_| rng.next()).collect(),
        ),
    );
    inputs.insert_i64(
        "seq_len",
        ArrayD::from_shape_vec(IxDyn(&[batch]), lengths.to_vec()).expect("shape"),
    );

    let outputs = run_model(&dir, &model, &weights, &inputs, &[]);
    assert_eq!(
        outputs.stdout,
        "c_n: F32 [1, 3, 4]\nh_n: F32 [1, 3, 4]\ny: F32 [3, 5, 4]\n"
    );
    let y = f32_tensor(&outputs.tensors, "y");
    let h_n = f32_tensor(&outputs.tensors, "h_n");
    let c_n = f32_tensor(&outputs.tensors, "c_n");
    for (b, len) in lengths.iter().enumerate() {
        let len = usize::try_from(*len).expect("non-negative");
        for t in 0..steps {
            let row: Vec<f32> = (0..hidden).map(|j| y[[b, t, j]]).collect();
            if t < len {
                assert!(
                    row.iter().any(|value| *value != 0.0),
                    "y[{b}, {t}] is all zero"
                );
            } else {
                assert!(
                    row.iter().all(|value| *value == 0.0),
                    "y[{b}, {t}] = {row:?} past length {len}"
                );
            }
        }
        // The final state is the state after the last valid step.
        for j in 0..hidden {
            let expected_h = if len == 0 { 0.0 } else { y[[b, len - 1, j]] };
            assert_eq!(h_n[[0, b, j]], expected_h, "h_n[0, {b}, {j}]");
        }
        if len == 0 {
            assert!(
                (0..hidden).all(|j| c_n[[0, b, j]] == 0.0),
                "c_n of an empty sequence"
            );
        }
    }
    let compiled =
        rnn_dsl::compile(rnn_dsl::read_source(&model).expect("readable")).expect("valid");
    let expected = interp::run(
        compiled.network(None).expect("one network"),
        &weights,
        &inputs,
    )
    .expect("runs");
    assert_eq!(outputs.tensors, expected);
}

#[test]
fn run_misshaped_weight_names_the_tensor_and_both_shapes() {
    let files = IstaFiles::new("run_misshaped", ISTA_N - 1);
    let out = files.run(&[]);
    assert_one_line_error(&out, 1, &["`A`", "[20, 40]", "[20, 39]"]);
    assert!(!files.output.exists(), "no output on failure");
}

#[test]
fn run_missing_weights_or_input_file_is_one_line_exit_two() {
    let files = IstaFiles::new("run_missing_files", ISTA_N);
    let IstaFiles {
        dir,
        model,
        weights,
        inputs,
        output,
    } = &files;
    let missing = dir.join("absent.safetensors");

    let out = rnnc_run(model, &missing, inputs, output, &[]);
    assert_one_line_error(&out, 2, &["absent.safetensors"]);
    let out = rnnc_run(model, weights, &missing, output, &[]);
    assert_one_line_error(&out, 2, &["absent.safetensors"]);
    let no_dir = dir.join("no/such/dir/y.safetensors");
    let out = rnnc_run(model, weights, inputs, &no_dir, &[]);
    assert_one_line_error(&out, 2, &["y.safetensors"]);
}

#[test]
fn run_truncated_weights_file_is_one_line_exit_one() {
    let files = IstaFiles::new("run_truncated", ISTA_N);
    let bytes = fs::read(&files.weights).expect("read the weights back");
    fs::write(&files.weights, &bytes[..bytes.len() / 2]).expect("write truncated file");
    let out = files.run(&[]);
    assert_one_line_error(&out, 1, &["w.safetensors", "not a valid safetensors file"]);
}

#[test]
fn run_missing_tensor_is_one_line_exit_one() {
    let files = IstaFiles::new("run_missing_tensor", ISTA_N);
    TensorMap::new()
        .save(&files.inputs)
        .expect("save empty inputs");
    let out = files.run(&[]);
    assert_one_line_error(&out, 1, &["tensor `y` not found"]);
}

#[test]
fn run_unknown_network_is_one_line_exit_two() {
    let files = IstaFiles::new("run_unknown_network", ISTA_N);
    let out = files.run(&["--network", "Nope"]);
    assert_one_line_error(&out, 2, &["`Nope`", "Ista"]);
}

#[test]
fn run_several_networks_needs_a_name() {
    let dir = scratch("run_several_networks");
    let text = format!(
        "{LSTM}network Other {{ input x: [3]; layer rnn = gru(hidden = 2); unroll dynamic; }}\n"
    );
    let model = write(&dir, "two.rnn", &text);
    let weights_path = save(&dir, "w.safetensors", &TensorMap::new());
    let out = rnnc_run(
        &model,
        &weights_path,
        &weights_path,
        &dir.join("y.safetensors"),
        &[],
    );
    assert_one_line_error(
        &out,
        2,
        &["several networks", "Tagger", "Other", "--network"],
    );
}

#[test]
fn run_model_with_errors_prints_diagnostics_and_exits_one() {
    let dir = scratch("run_bad_model");
    let model = write(&dir, "bad.rnn", UNKNOWN_CELL);
    let weights_path = save(&dir, "w.safetensors", &TensorMap::new());
    let out = rnnc_run(
        &model,
        &weights_path,
        &weights_path,
        &dir.join("y.safetensors"),
        &[],
    );
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("error: unknown cell `lsmt`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(":3:17"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
}

// ---- graph ----------------------------------------------------------------

#[test]
fn graph_has_a_cluster_per_step_and_state_edges() {
    let dir = scratch("graph_clusters");
    let model = write(&dir, "tagger.rnn", BIDIRECTIONAL);
    let steps = 4;
    let out = rnnc([
        OsStr::new("graph"),
        model.as_os_str(),
        OsStr::new("--steps"),
        OsStr::new("4"),
    ]);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stderr, "");
    let dot = &out.stdout;
    assert_dot_structure(dot);
    assert!(dot.contains("digraph \"Tagger\" {"), "{dot}");
    assert_eq!(dot.matches("subgraph \"cluster_t").count(), steps, "{dot}");
    for t in 0..steps {
        assert!(
            dot.contains(&format!("subgraph \"cluster_t{t}\" {{")),
            "{dot}"
        );
        assert!(dot.contains(&format!("label=\"t = {t}\";")), "{dot}");
        assert!(dot.contains(&format!("[label=\"x_{t}\"")), "{dot}");
        assert!(dot.contains(&format!("[label=\"y_{t}\"")), "{dot}");
    }
    // Two stacked layers, two directions, steps - 1 state edges each.
    assert_eq!(
        dot.matches("[label=\"h, c\"").count(),
        2 * 2 * (steps - 1),
        "{dot}"
    );
    assert!(
        dot.contains("\"l0d0_t0\" -> \"l0d0_t1\" [label=\"h, c\""),
        "{dot}"
    );
    assert!(
        dot.contains("\"l0d1_t1\" -> \"l0d1_t0\" [label=\"h, c\""),
        "{dot}"
    );
    assert!(dot.contains("[label=\"enc #1 backward\\nlstm\"]"), "{dot}");
    assert!(dot.contains("[label=\"h0[0], c0[0]\""), "{dot}");
    assert!(dot.contains("[label=\"h_n[3], c_n[3]\""), "{dot}");

    // Graphviz itself, when it is installed.
    if let Ok(mut child) = Command::new("dot")
        .arg("-Tcanon")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(dot.as_bytes())
            .expect("feed dot");
        let result = child.wait_with_output().expect("dot runs");
        assert!(
            result.status.success(),
            "dot rejected the graph: {}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
}

#[test]
fn graph_writes_the_same_dot_to_a_file() {
    let dir = scratch("graph_file");
    let model = write(&dir, "ista.rnn", ISTA);
    let dot_path = dir.join("ista.dot");
    let args = |extra: &[&OsStr]| {
        let mut args = vec![
            OsStr::new("graph"),
            model.as_os_str(),
            OsStr::new("--steps"),
            OsStr::new("3"),
        ];
        args.extend_from_slice(extra);
        rnnc(args)
    };
    let to_file = args(&[OsStr::new("-o"), dot_path.as_os_str()]);
    assert_eq!(to_file.status, Some(0), "{to_file:?}");
    assert_eq!(to_file.stdout, "");
    let to_stdout = args(&[]);
    assert_eq!(to_stdout.status, Some(0), "{to_stdout:?}");
    assert_eq!(
        fs::read_to_string(&dot_path).expect("dot written"),
        to_stdout.stdout
    );
    // The context feeds every step.
    assert_eq!(
        to_stdout.stdout.matches("\"ctx0\" -> ").count(),
        3,
        "{}",
        to_stdout.stdout
    );
}

#[test]
fn graph_rejects_step_counts_out_of_range() {
    let dir = scratch("graph_steps");
    let model = write(&dir, "lstm.rnn", LSTM);
    for steps in ["0", "1001"] {
        let out = rnnc([
            OsStr::new("graph"),
            model.as_os_str(),
            OsStr::new("--steps"),
            OsStr::new(steps),
        ]);
        assert_one_line_error(&out, 2, &["--steps", "1000"]);
    }
    let out = rnnc([
        OsStr::new("graph"),
        model.as_os_str(),
        OsStr::new("--steps"),
        OsStr::new("many"),
    ]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn graph_warns_when_drawing_past_a_static_length() {
    let dir = scratch("graph_static");
    let model = write(&dir, "ista.rnn", ISTA);
    let out = rnnc([
        OsStr::new("graph"),
        model.as_os_str(),
        OsStr::new("--steps"),
        OsStr::new("21"),
    ]);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("warning: network `Ista` runs at most 20 steps"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout.matches("subgraph").count(), 21);
}

// ---- convert ------------------------------------------------------------------

/// A Keras-made case of `tests/data/layouts` (see its `make_reference.py`).
fn keras_case() -> (String, TensorMap) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/layouts/keras_bidirectional_lstm.safetensors");
    let tensors =
        TensorMap::load(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let model =
        "network N { input x: [3]; layer l = lstm(hidden = 4, bidirectional); unroll dynamic; }\n";
    (model.to_owned(), tensors)
}

#[test]
fn convert_from_keras_then_run_gives_keras_outputs() {
    let dir = scratch("convert_from_keras");
    let (text, tensors) = keras_case();
    let model = write(&dir, "n.rnn", &text);
    let keras = save(&dir, "keras.safetensors", &tensors);
    let pytorch = dir.join("pytorch.safetensors");
    let out = rnnc([
        OsStr::new("convert"),
        model.as_os_str(),
        OsStr::new("--from"),
        OsStr::new("keras"),
        OsStr::new("-w"),
        keras.as_os_str(),
        OsStr::new("-o"),
        pytorch.as_os_str(),
    ]);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("weight_ih_l0_reverse: F32 [16, 3]"),
        "{}",
        out.stdout
    );
    let mut inputs = TensorMap::new();
    for name in ["x", "h0", "c0"] {
        inputs.insert_f32(name, f32_tensor(&tensors, name));
    }
    let Some(Tensor::I64(lengths)) = tensors.get("seq_len") else {
        panic!("seq_len")
    };
    inputs.insert_i64("seq_len", lengths.clone());
    let converted = TensorMap::load(&pytorch).expect("rnnc wrote a valid file");
    let outputs = run_model(&dir, &model, &converted, &inputs, &[]).tensors;
    for name in ["y", "h_n", "c_n"] {
        let (actual, expected) = (f32_tensor(&outputs, name), f32_tensor(&tensors, name));
        let error = (&actual - &expected)
            .iter()
            .fold(0f32, |m, e| m.max(e.abs()));
        assert!(error < 1e-5, "`{name}`: {error}");
    }

    // PyTorch → ONNX → PyTorch gives the same file back.
    let onnx = dir.join("onnx.safetensors");
    let back = dir.join("back.safetensors");
    for (from, to, input, output) in [
        ("pytorch", "onnx", &pytorch, &onnx),
        ("onnx", "pytorch", &onnx, &back),
    ] {
        let out = rnnc([
            OsStr::new("convert"),
            model.as_os_str(),
            OsStr::new("--from"),
            OsStr::new(from),
            OsStr::new("--to"),
            OsStr::new(to),
            OsStr::new("-w"),
            input.as_os_str(),
            OsStr::new("-o"),
            output.as_os_str(),
        ]);
        assert_eq!(out.status, Some(0), "{out:?}");
    }
    assert!(TensorMap::load(&onnx).unwrap().contains("W_l0"));
    assert_eq!(TensorMap::load(&back).unwrap(), converted);
}

#[test]
fn convert_of_a_file_in_another_layout_names_the_tensor() {
    let dir = scratch("convert_wrong_layout");
    let (text, tensors) = keras_case();
    let model = write(&dir, "n.rnn", &text);
    let keras = save(&dir, "keras.safetensors", &tensors);
    let out = rnnc([
        OsStr::new("convert"),
        model.as_os_str(),
        OsStr::new("--from"),
        OsStr::new("onnx"),
        OsStr::new("-w"),
        keras.as_os_str(),
        OsStr::new("-o"),
        dir.join("o.safetensors").as_os_str(),
    ]);
    assert_one_line_error(&out, 1, &["tensor `W_l0` not found"]);
    assert!(!dir.join("o.safetensors").exists());
}

// ---- help and usage -------------------------------------------------------

#[test]
fn help_of_every_subcommand_exits_zero() {
    let top = rnnc(["--help"]);
    assert_eq!(top.status, Some(0), "{top:?}");
    for command in ["check", "run", "grad", "graph", "convert", "import"] {
        assert!(
            top.stdout
                .lines()
                .any(|line| line.trim_start().starts_with(command)),
            "{}",
            top.stdout
        );
    }
    assert!(top.stdout.contains("Exit status:"), "{}", top.stdout);
    for args in [
        &["check", "--help"][..],
        &["run", "--help"],
        &["graph", "--help"],
        &["import", "--help"],
        &["help", "run"],
        &["graph", "-h"],
    ] {
        let out = rnnc(args);
        assert_eq!(out.status, Some(0), "{args:?}: {out:?}");
        assert!(
            out.stdout.contains("Usage: rnnc"),
            "{args:?}: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("Exit status:"),
            "{args:?}: {}",
            out.stdout
        );
    }
    let long = rnnc(["run", "--help"]);
    assert!(long.stdout.contains("Example:"), "{}", long.stdout);
}

#[test]
fn bad_command_lines_exit_two() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["check"],
        &["run", "m.rnn"],
        &["graph", "m.rnn"],
        &[
            "convert",
            "m.rnn",
            "-w",
            "w.safetensors",
            "-o",
            "o.safetensors",
        ],
        &["convert", "m.rnn", "-w", "w", "-o", "o", "--from", "caffe"],
        &["import", "m.onnx"],
    ] {
        let out = rnnc(args);
        assert_eq!(out.status, Some(2), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("Usage:") || out.stderr.contains("error:"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn emit_mode_is_read_and_checked_as_an_unroll_statement() {
    let dir = scratch("emit_mode");
    let model = write(&dir, "ista.rnn", ISTA);
    let emit = |mode: &str| {
        rnnc([
            OsStr::new("emit"),
            model.as_os_str(),
            OsStr::new("--mode"),
            OsStr::new(mode),
        ])
    };
    let out = emit("static buckets [2, 4] else dynamic");
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    for function in [
        "fn __rnn_layer0_static2(",
        "fn __rnn_layer0_static4(",
        "fn __rnn_layer0_dynamic(",
    ] {
        assert!(out.stdout.contains(function), "no {function}");
    }
    assert!(!out.stdout.contains("__rnn_layer0_static20"));
    // A mode the file's `unroll` statement could not hold is refused with
    // the same diagnostic, pointing into the flag's text: status 2.
    for (mode, message) in [
        (
            "static 3000",
            "static unroll length is too large: 3000 (at most 2000)",
        ),
        (
            "dynamic by 0",
            "steps per iteration must be at least 1, found 0",
        ),
        (
            "static buckets [5, 2]",
            "bucket list is not ascending: 5 then 2",
        ),
        ("statc 3", "did you mean `static`?"),
    ] {
        let out = emit(mode);
        assert_eq!(out.status, Some(2), "{mode}: {out:?}");
        assert!(out.stderr.contains(message), "{mode}: {}", out.stderr);
        assert!(out.stderr.contains("--mode:1:1"), "{mode}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{mode}: code written");
    }
}

/// `rnnc emit --precision` overrides the file's `precision` statement: the
/// products read reduced weights exactly when the flag (or, without it, the
/// statement) asks for them, and a precision the language lacks is a bad
/// command line (status 2).
#[test]
fn emit_precision_overrides_the_precision_statement() {
    let dir = scratch("emit_precision");
    let plain = write(&dir, "plain.rnn", LSTM);
    let bf16 = write(
        &dir,
        "bf16.rnn",
        &LSTM.replace("unroll dynamic;", "precision bf16; unroll dynamic;"),
    );
    let emit = |model: &Path, precision: Option<&str>| {
        let mut args = vec![OsStr::new("emit"), model.as_os_str()];
        if let Some(precision) = precision {
            args.extend([OsStr::new("--precision"), OsStr::new(precision)]);
        }
        let out = rnnc(args);
        assert_eq!(out.status, Some(0), "{precision:?}: {}", out.stderr);
        out.stdout
    };
    for (model, precision, expected) in [
        (&plain, None, None),
        (&plain, Some("bf16"), Some("Precision::Bf16")),
        (&plain, Some("int8"), Some("Precision::Int8")),
        (&bf16, None, Some("Precision::Bf16")),
        (&bf16, Some("int8"), Some("Precision::Int8")),
        (&bf16, Some("f32"), None),
    ] {
        let code = emit(model, precision);
        let what = format!("{} with {precision:?}", model.display());
        match expected {
            Some(kind) => {
                assert!(code.contains("ReducedMatrix"), "{what}: no reduced weights");
                assert!(code.contains(kind), "{what}: no {kind}");
            }
            None => assert!(!code.contains("ReducedMatrix"), "{what}: reduced weights"),
        }
    }
    let out = rnnc([
        OsStr::new("emit"),
        plain.as_os_str(),
        OsStr::new("--precision"),
        OsStr::new("fp16"),
    ]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("possible values: f32, bf16, int8"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "code written");
}

// ---- helpers --------------------------------------------------------------

/// What one `rnnc` invocation did.
/// `rnnc grad` on the PyTorch gradient case of the conformance fixtures (an LSTM with lengths
/// and initial states): every `grad_*` tensor within the case's gradient tolerance, in float32
/// and in float64.
#[test]
fn grad_matches_the_pytorch_gradient_case() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/grad_lstm_seqlen_init.safetensors");
    assert!(
        fixture.exists(),
        "the conformance fixtures are missing: {}",
        fixture.display()
    );
    let dir = scratch("grad_lstm");
    let model = write(
        &dir,
        "lstm.rnn",
        "network Case { input x: [5]; layer l = lstm(hidden = 8); unroll dynamic; }\n",
    );
    let tensors = TensorMap::load(&fixture).expect("fixture loads");
    let mut seeds = TensorMap::new();
    for (seed, output) in [("gy", "y"), ("gh", "h_n"), ("gc", "c_n")] {
        seeds.insert_f32(output, f32_tensor(&tensors, seed));
    }
    let seeds = save(&dir, "seeds.safetensors", &seeds);
    for extra in [&[][..], &["--f64"][..]] {
        let output = dir.join("grads.safetensors");
        let mut args = vec![
            OsStr::new("grad"),
            model.as_os_str(),
            OsStr::new("--weights"),
            fixture.as_os_str(),
            OsStr::new("--input"),
            fixture.as_os_str(),
            OsStr::new("--seeds"),
            seeds.as_os_str(),
            OsStr::new("--output"),
            output.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let out = rnnc(args);
        assert_eq!(out.status, Some(0), "{out:?}");
        assert!(
            out.stdout.contains("grad_weight_hh_l0: F32 [32, 8]"),
            "{}",
            out.stdout
        );
        let grads = TensorMap::load(&output).expect("output loads");
        let mut compared = 0;
        for name in tensors.names().filter(|name| name.starts_with("grad_")) {
            let expected = f32_tensor(&tensors, name);
            let actual = f32_tensor(&grads, name);
            for (a, e) in actual.iter().zip(expected.iter()) {
                assert!(
                    (a - e).abs() <= 1e-4 + 1e-3 * e.abs(),
                    "{name} {extra:?}: {a} against PyTorch's {e}"
                );
            }
            compared += 1;
        }
        assert_eq!(compared, 7, "x, h0, c0 and four weights");
    }
}

#[derive(Debug)]
struct Outcome {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

fn rnnc<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(env!("CARGO_BIN_EXE_rnnc"))
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("rnnc starts");
    Outcome {
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn rnnc_run(model: &Path, weights: &Path, inputs: &Path, output: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec![
        OsStr::new("run"),
        model.as_os_str(),
        OsStr::new("--weights"),
        weights.as_os_str(),
        OsStr::new("--input"),
        inputs.as_os_str(),
        OsStr::new("--output"),
        output.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    rnnc(args)
}

/// The ISTA model, its weights (`A` of `[20, n]`) and inputs saved in a
/// fresh directory, for tests of how `rnnc run` fails.
struct IstaFiles {
    dir: PathBuf,
    model: PathBuf,
    weights: PathBuf,
    inputs: PathBuf,
    output: PathBuf,
}

impl IstaFiles {
    fn new(test: &str, n: usize) -> IstaFiles {
        let dir = scratch(test);
        let model = write(&dir, "ista.rnn", ISTA);
        let (weights, inputs) = ista_data(n);
        IstaFiles {
            model,
            weights: save(&dir, "w.safetensors", &weights),
            inputs: save(&dir, "x.safetensors", &inputs),
            output: dir.join("y.safetensors"),
            dir,
        }
    }

    fn run(&self, extra: &[&str]) -> Outcome {
        rnnc_run(
            &self.model,
            &self.weights,
            &self.inputs,
            &self.output,
            extra,
        )
    }
}

/// What a successful `rnnc run` printed and wrote.
struct RunOutputs {
    stdout: String,
    tensors: TensorMap,
}

/// Saves the data, runs the model, and loads what it wrote.
fn run_model(
    dir: &Path,
    model: &Path,
    weights: &TensorMap,
    inputs: &TensorMap,
    extra: &[&str],
) -> RunOutputs {
    let weights_path = save(dir, "weights.safetensors", weights);
    let inputs_path = save(dir, "inputs.safetensors", inputs);
    let output = dir.join("outputs.safetensors");
    let out = rnnc_run(model, &weights_path, &inputs_path, &output, extra);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stderr, "");
    RunOutputs {
        stdout: out.stdout,
        tensors: TensorMap::load(&output).expect("rnnc wrote a valid file"),
    }
}

/// Exit `status`, and exactly one `error: ` line on stderr holding every
/// `needle`.
fn assert_one_line_error(out: &Outcome, status: i32, needles: &[&str]) {
    assert_eq!(out.status, Some(status), "{out:?}");
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "expected one line: {:?}",
        out.stderr
    );
    assert!(out.stderr.starts_with("error: "), "{:?}", out.stderr);
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "missing {needle:?} in {:?}",
            out.stderr
        );
    }
    assert_eq!(out.stdout, "", "nothing on stdout after a failure");
}

/// A fresh directory for one test under `CARGO_TARGET_TMPDIR`.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("rnnc-cli")
        .join(test);
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("clear scratch directory");
    }
    fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("write model");
    path
}

fn save(dir: &Path, name: &str, tensors: &TensorMap) -> PathBuf {
    let path = dir.join(name);
    tensors.save(&path).expect("save tensors");
    path
}

fn array(shape: &[usize], data: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("data fits the shape")
}

fn f32_tensor(tensors: &TensorMap, name: &str) -> ArrayD<f32> {
    match tensors.get(name) {
        Some(Tensor::F32(array)) => array.clone(),
        other => panic!("expected an F32 tensor `{name}`, found {other:?}"),
    }
}

/// ISTA weights with `A` of `[20, n]` and one measurement.
fn ista_data(n: usize) -> (TensorMap, TensorMap) {
    let mut rng = Rng::new(3);
    let mut weights = TensorMap::new();
    weights.insert_f32(
        "A",
        array(&[ISTA_M, n], (0..ISTA_M * n).map(|_| rng.next()).collect()),
    );
    weights.insert_f32("L", array(&[1], vec![300.0]));
    weights.insert_f32("lam", array(&[1], vec![0.1]));
    let mut inputs = TensorMap::new();
    inputs.insert_f32(
        "y",
        array(&[1, ISTA_M], (0..ISTA_M).map(|_| rng.next()).collect()),
    );
    (weights, inputs)
}

/// `steps` ISTA iterations from zero, written out directly: every iterate
/// `x_{k+1} = soft(x_k + (1/L) Aᵀ(y - A x_k), lam / L)`.
fn ista_reference(a: &[f32], y: &[f32], lipschitz: f32, lam: f32, steps: usize) -> Vec<Vec<f32>> {
    let (m, n) = (y.len(), a.len() / y.len());
    let threshold = lam / lipschitz;
    let mut x = vec![0.0_f32; n];
    let mut iterates = Vec::new();
    for _ in 0..steps {
        let residual: Vec<f32> = (0..m)
            .map(|i| y[i] - (0..n).map(|j| a[i * n + j] * x[j]).sum::<f32>())
            .collect();
        x = (0..n)
            .map(|j| {
                let gradient: f32 = (0..m).map(|i| a[i * n + j] * residual[i]).sum();
                let value = x[j] + gradient / lipschitz;
                let shrunk = value.abs() - threshold;
                if shrunk > 0.0 {
                    shrunk.copysign(value)
                } else {
                    0.0
                }
            })
            .collect();
        iterates.push(x.clone());
    }
    iterates
}

/// A small deterministic generator (xorshift64*), uniform in `[-1, 1)`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

// ---- import ---------------------------------------------------------------

/// A case of `tests/data/onnx/` (written by its `make_cases.py`).
fn onnx_case(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/onnx")
        .join(case)
}

/// A TensorProto file of a case: its name and values.
fn onnx_tensor(path: &Path) -> (String, ArrayD<f32>) {
    let tensor = rnn_dsl::import::proto::tensor(&fs::read(path).expect("read")).expect("decodes");
    match tensor.values().expect("values") {
        rnn_dsl::import::proto::Values::F32(array) => (tensor.name, array),
        other => panic!("{other:?}"),
    }
}

#[test]
fn import_of_a_pytorch_export_runs_as_pytorch_did() {
    let dir = scratch("import_pytorch");
    // Exported batch-first, so x, y and the states are laid out as the network's.
    let case = onnx_case("export/torch_gru_bidir_2layers_batch_first");
    let model = dir.join("gru.rnn");
    let out = rnnc([
        OsStr::new("import"),
        case.join("model.onnx").as_os_str(),
        OsStr::new("-o"),
        model.as_os_str(),
    ]);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert!(out.stdout.contains("network Gru"), "{}", out.stdout);
    let text = fs::read_to_string(&model).expect("the .rnn file");
    assert!(
        text.contains("layer l = gru(hidden = 4, layers = 2, bidirectional, reset_after = true);"),
        "{text}"
    );
    let weights = TensorMap::load(dir.join("gru.safetensors")).expect("the weights file");
    assert!(weights.contains("weight_hh_l1_reverse"));
    let data = case.join("test_data_set_0");
    let mut inputs = TensorMap::new();
    for (file, name) in [("input_0.pb", "x"), ("input_1.pb", "h0")] {
        inputs.insert_f32(name, onnx_tensor(&data.join(file)).1);
    }
    let outputs = run_model(&dir, &model, &weights, &inputs, &[]).tensors;
    for (file, name) in [("output_0.pb", "y"), ("output_1.pb", "h_n")] {
        let expected = onnx_tensor(&data.join(file)).1;
        let actual = f32_tensor(&outputs, name);
        assert_eq!(actual.shape(), expected.shape(), "`{name}`");
        let error = (&actual - &expected)
            .iter()
            .fold(0f32, |m, e| m.max(e.abs()));
        assert!(error < 1e-5, "`{name}`: {error}");
    }
}

#[test]
fn import_reads_weights_given_as_tensor_files() {
    let dir = scratch("import_tensors");
    let case = onnx_case("node/test_lstm_with_peepholes");
    let data = case.join("test_data_set_0");
    let model = dir.join("m.rnn");
    let mut args = vec![
        OsStr::new("import").to_owned(),
        case.join("model.onnx").into_os_string(),
        OsStr::new("-o").to_owned(),
        model.clone().into_os_string(),
        OsStr::new("--tensor").to_owned(),
    ];
    for k in 0..8 {
        args.push(data.join(format!("input_{k}.pb")).into_os_string());
    }
    let out = rnnc(&args);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert!(fs::read_to_string(&model).unwrap().contains("peepholes"));
    // Without them, the error says how to give them.
    let out = rnnc([
        OsStr::new("import"),
        case.join("model.onnx").as_os_str(),
        OsStr::new("-o"),
        model.as_os_str(),
    ]);
    assert_one_line_error(&out, 1, &["LSTM node", "`W`", "--tensor"]);
}

#[test]
fn import_of_what_is_not_onnx_is_one_line() {
    let dir = scratch("import_errors");
    let text = write(&dir, "m.rnn.onnx", "network N { }");
    let out = rnnc([
        OsStr::new("import"),
        text.as_os_str(),
        OsStr::new("-o"),
        dir.join("m.rnn").as_os_str(),
    ]);
    assert_one_line_error(&out, 1, &["not an ONNX model"]);
    assert!(!dir.join("m.rnn").exists());
    let out = rnnc([
        OsStr::new("import"),
        dir.join("missing.onnx").as_os_str(),
        OsStr::new("-o"),
        dir.join("m.rnn").as_os_str(),
    ]);
    assert_one_line_error(&out, 2, &["cannot read", "missing.onnx"]);
    let out = rnnc([
        OsStr::new("import"),
        onnx_case("node/test_lstm_defaults/model.onnx").as_os_str(),
        OsStr::new("-o"),
        dir.join("m.rnn").as_os_str(),
        OsStr::new("--tensor"),
        text.as_os_str(),
    ]);
    assert_one_line_error(&out, 1, &["not an ONNX TensorProto"]);
}

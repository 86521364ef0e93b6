//! Per-step parameters (`param W: [M, N] per step;`): one copy per
//! unrolled step, stored as one tensor `[K, M, N]` whose row `t` step `t`
//! reads. The interpreter's forward pass against a loop written out here
//! (LISTA-CP, Chen et al. 2018: `x ← soft(x + W_tᵀ (y − A x), θ_t)`), its
//! limits, names and shapes; generated code, forward and gradients,
//! against the interpreter (whose gradients are checked against finite
//! differences in `gradients.rs`).

use ndarray::{Array1, Array2, Array3, ArrayD, Axis};
use rnn_dsl::{interp, weights, SourceFile};
use rnn_runtime::init::{uniform, SplitMix64};
use rnn_runtime::{Model, Parameters, RnnError, TensorMap, Threads, Train};

const LISTA_CP: &str = "
cell lista_cp(y: [M]) -> x: [N] {
    param A: [M, N];
    param W: [M, N] per step;
    param theta: [N] per step;
    x = soft_threshold(x + W^T @ (y - A @ x), theta);
}
";

const M: usize = 5;
const N: usize = 8;

fn network(unroll: &str, layer_args: &str) -> rnn_dsl::Compiled {
    network_of(LISTA_CP, unroll, layer_args)
}

/// [`network`] with the cell `lista_cp` written as `cell`.
fn network_of(cell: &str, unroll: &str, layer_args: &str) -> rnn_dsl::Compiled {
    let text = format!(
        "{cell}\nnetwork Lista {{ context y: [{M}]; layer solver = lista_cp(N = {N}{layer_args}); unroll {unroll}; }}\n"
    );
    rnn_dsl::compile(SourceFile::new("lista.rnn", text)).unwrap_or_else(|error| panic!("{error}"))
}

/// Weights for K steps: `A`, `W` `[K, M, N]`, `theta` `[K, N]` (positive).
fn lista_weights(steps: usize, seed: u64) -> TensorMap {
    let mut rng = SplitMix64::new(seed);
    let mut weights = TensorMap::new();
    weights.insert_f32("A", uniform(&mut rng, &[M, N], 0.5));
    weights.insert_f32("W", uniform(&mut rng, &[steps, M, N], 0.5));
    weights.insert_f32(
        "theta",
        uniform(&mut rng, &[steps, N], 0.05).mapv(|t| t + 0.06),
    );
    weights
}

fn measurements(batch: usize, seed: u64) -> ArrayD<f32> {
    uniform(&mut SplitMix64::new(seed), &[batch, M], 1.0)
}

/// LISTA-CP written out: every iterate of every measurement, `[B, T, N]`.
fn reference(weights: &TensorMap, y: &ArrayD<f32>, steps: usize) -> Array3<f32> {
    let a: Array2<f32> = weights.f32("A").unwrap().into_dimensionality().unwrap();
    let w: Array3<f32> = weights.f32("W").unwrap().into_dimensionality().unwrap();
    let theta: Array2<f32> = weights.f32("theta").unwrap().into_dimensionality().unwrap();
    let y: Array2<f32> = y.clone().into_dimensionality().unwrap();
    let batch = y.nrows();
    let mut iterates = Array3::zeros((batch, steps, N));
    for b in 0..batch {
        let yb = y.row(b);
        let mut x = Array1::<f32>::zeros(N);
        for t in 0..steps {
            let residual = &yb - &a.dot(&x);
            let v = &x + &w.index_axis(Axis(0), t).t().dot(&residual);
            x = ndarray::Zip::from(&v)
                .and(theta.row(t))
                .map_collect(|v, th| v.signum() * (v.abs() - th).max(0.0));
            iterates.slice_mut(ndarray::s![b, t, ..]).assign(&x);
        }
    }
    iterates
}

fn max_error(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn each_step_reads_its_own_copy() {
    let y = measurements(3, 2);
    for (unroll, args, steps, copies) in [
        ("static 6", "", 6, 6),
        ("static 4", ", steps = 6", 4, 6),
        ("dynamic", ", steps = 6", 6, 6),
        ("dynamic by 4", ", steps = 7", 5, 7),
    ] {
        let compiled = network(unroll, args);
        let network = compiled.network(None).unwrap();
        let weights = lista_weights(copies, 9);
        let mut inputs = TensorMap::new();
        inputs.insert_f32("y", y.clone());
        if !unroll.starts_with("static") {
            inputs.insert_i64("steps", ArrayD::from_elem(vec![1], steps as i64));
        }
        let outputs = interp::run(network, &weights, &inputs).expect("runs");
        let expected = reference(&weights, &y, steps).into_dyn();
        let error = max_error(&outputs.f32("y").unwrap(), &expected);
        println!("{unroll:<14} {steps} of {copies} copies: max error {error:.2e}");
        assert!(error < 1e-5, "{unroll}: {error}");
        // Not the tied iteration: step 1 reads W[1], not W[0].
        let mut tied = weights.clone();
        let w = weights.f32("W").unwrap();
        let first = w.index_axis(Axis(0), 0).to_owned();
        let repeated = ndarray::stack(Axis(0), &vec![first.view(); copies]).unwrap();
        tied.insert_f32("W", repeated);
        let tied_out = interp::run(network, &tied, &inputs).expect("runs");
        assert!(max_error(&tied_out.f32("y").unwrap(), &expected) > 1e-3);
    }
}

#[test]
fn per_step_tensors_are_stacked_by_step() {
    let compiled = network("dynamic", ", steps = 16");
    let network = compiled.network(None).unwrap();
    let specs = weights::specs(network);
    let mut shapes: Vec<(&str, &[usize])> = specs
        .iter()
        .map(|spec| (spec.name.as_str(), &spec.shape[..]))
        .collect();
    shapes.sort();
    assert_eq!(
        shapes,
        [
            ("A_l0", &[M, N][..]),
            ("W_l0", &[16, M, N]),
            ("theta_l0", &[16, N])
        ]
    );
    // The `.rnn` file's own names load too (a one-layer user cell).
    let outputs = {
        let mut inputs = TensorMap::new();
        inputs.insert_f32("y", measurements(2, 3));
        inputs.insert_i64("steps", ArrayD::from_elem(vec![1], 3));
        interp::run(network, &lista_weights(16, 1), &inputs).expect("bare names load")
    };
    assert_eq!(outputs.f32("y").unwrap().shape(), &[2, 3, N]);
    // A weight with one copy too few is refused with both shapes.
    let mut short = lista_weights(16, 1);
    short.insert_f32("W", ArrayD::zeros(vec![15, M, N]));
    let mut inputs = TensorMap::new();
    inputs.insert_f32("y", measurements(2, 3));
    inputs.insert_i64("steps", ArrayD::from_elem(vec![1], 3));
    let error = interp::run(network, &short, &inputs).unwrap_err();
    assert!(
        matches!(&error, RnnError::ShapeMismatch { tensor, .. } if tensor == "W"),
        "{error}"
    );
}

#[test]
fn a_run_past_the_copies_is_a_typed_error() {
    let compiled = network("dynamic", ", steps = 4");
    let network = compiled.network(None).unwrap();
    let mut inputs = TensorMap::new();
    inputs.insert_f32("y", measurements(2, 3));
    inputs.insert_i64("steps", ArrayD::from_elem(vec![1], 5));
    let error = interp::run(network, &lista_weights(4, 1), &inputs).unwrap_err();
    assert_eq!(
        error.to_string(),
        "tensor `steps`: 5 steps, but layer `solver` has per-step parameters for 4"
    );
    // A per-step input: the lengths are what is named.
    let text = "cell untied(x: [I]) -> h: [H] { param W: [H, I] per step; param U: [H, H]; h = tanh(W @ x + U @ h); }
        network N { input x: [2]; layer l = untied(hidden = 3, steps = 2); unroll dynamic; }";
    let compiled = rnn_dsl::compile(SourceFile::new("n.rnn", text)).unwrap();
    let network = compiled.network(None).unwrap();
    let weights = weights::random(network, 1);
    let mut inputs = TensorMap::new();
    inputs.insert_f32("x", ArrayD::zeros(vec![2, 3, 2]));
    inputs.insert_i64("seq_len", ndarray::arr1(&[3i64, 1]).into_dyn());
    let error = interp::run(network, &weights, &inputs).unwrap_err();
    assert!(
        matches!(&error, RnnError::InvalidValue { tensor, .. } if tensor == "seq_len"),
        "{error}"
    );
    inputs.insert_i64("seq_len", ndarray::arr1(&[2i64, 1]).into_dyn());
    interp::run(network, &weights, &inputs).expect("two steps run");
}

rnn_macros::rnn! {
    gradients = true;
    cell lista_cp(y: [M]) -> x: [N] {
        param A: [M, N];
        param W: [M, N] per step;
        param theta: [N] per step;
        x = soft_threshold(x + W^T @ (y - A @ x), theta);
    }
    cell untied(x: [I]) -> h: [H] {
        param W: [H, I] per step;
        param U: [H, H];
        param b: [1] per step;
        h = tanh(W @ x + U @ h + b);
    }
    cell lista_cp_frozen(y: [M]) -> x: [N] {
        param A: [M, N] frozen;
        param W: [M, N] per step;
        param theta: [N] per step;
        x = soft_threshold(x + W^T @ (y - A @ x), theta);
    }
    network ListaFrozen { context y: [5]; layer solver = lista_cp_frozen(N = 8, steps = 6); unroll dynamic; }
    network ListaStatic { context y: [5]; layer solver = lista_cp(N = 8); unroll static 6; }
    network ListaDynamic { context y: [5]; layer solver = lista_cp(N = 8, steps = 6); unroll dynamic; }
    network ListaBy4 { context y: [5]; layer solver = lista_cp(N = 8, steps = 6); unroll dynamic by 4; }
    network ListaBuckets { context y: [5]; layer solver = lista_cp(N = 8); unroll static buckets [2, 6]; }
    network UntiedStatic { input x: [3]; layer l = untied(hidden = 4, layers = 2); layer head = linear(out = 2); unroll static 5; }
    network UntiedDynamic { input x: [3]; layer l = untied(hidden = 4, layers = 2, steps = 5); layer head = linear(out = 2); unroll dynamic; }
    // Large enough for a training call to compute two halves of a batch
    // of 128 (`halves_in_one_pass_give_the_bits_of_halves_apart`).
    cell lista_mixed(y: [M]) -> x: [N] {
        param A: [M, N];
        param B: [N, M];
        param W: [M, N] per step;
        param b: [N];
        param theta: [N] per step;
        x = soft_threshold(x + W^T @ (y - A @ x) + 0.1 * (A^T @ (y - A @ x)) + B @ y + b, theta);
    }
    network WideLista { context y: [64]; layer solver = lista_cp(N = 128, steps = 8); unroll dynamic; }
    network WideMixed { context y: [64]; layer solver = lista_mixed(N = 128); unroll static 8; }
}

const LISTA_MIXED: &str = "
cell lista_mixed(y: [M]) -> x: [N] {
    param A: [M, N];
    param B: [N, M];
    param W: [M, N] per step;
    param b: [N];
    param theta: [N] per step;
    x = soft_threshold(x + W^T @ (y - A @ x) + 0.1 * (A^T @ (y - A @ x)) + B @ y + b, theta);
}
";

/// A batch of 128 sequences of one length is computed in two halves, whose
/// sums over the batch (the weights' gradients) are added: on two threads
/// apart, on one in one pass over the batch (`Packing::in_one_pass`), each
/// sum over a half's rows formed apart. The gradients are the same bits
/// either way, and the interpreter's to rounding. `WideMixed` adds what
/// LISTA-CP lacks: a tied matrix read twice (`A`), one read once per
/// sequence (`B @ y`, whose gradient is formed after the loop from each
/// sequence's row), a tied bias beside the per-step threshold.
#[test]
fn halves_in_one_pass_give_the_bits_of_halves_apart() {
    type OneAndTwo = (Box<dyn Train>, Box<dyn Train>);
    /// The model on one thread and on two.
    fn one_and_two<T: Model + Train + 'static>(weights: &TensorMap) -> Result<OneAndTwo, RnnError> {
        let mut one = T::from_weights(weights)?;
        one.set_threads(Threads::Fixed(1));
        let mut two = T::from_weights(weights)?;
        two.set_threads(Threads::Fixed(2));
        Ok((Box::new(one), Box::new(two)))
    }
    type Build = fn(&TensorMap) -> Result<OneAndTwo, RnnError>;
    let models: [(&str, &str, &str, Build, bool); 2] = [
        (
            "WideLista",
            LISTA_CP,
            "lista_cp",
            one_and_two::<WideLista>,
            true,
        ),
        (
            "WideMixed",
            LISTA_MIXED,
            "lista_mixed",
            one_and_two::<WideMixed>,
            false,
        ),
    ];
    let (batch, steps, m, n) = (128, 8, 64, 128);
    for (name, cell, cell_name, build, dynamic) in models {
        let (unroll, args) = match dynamic {
            true => ("dynamic", format!(", steps = {steps}")),
            false => ("static 8", String::new()),
        };
        let text = format!(
            "{cell}\nnetwork {name} {{ context y: [{m}]; layer solver = {cell_name}(N = {n}{args}); unroll {unroll}; }}\n"
        );
        let compiled = rnn_dsl::compile(SourceFile::new("wide.rnn", text)).unwrap();
        let network = compiled.network(None).unwrap();
        let weights = weights::random(network, 31);
        let mut inputs = TensorMap::new();
        inputs.insert_f32("y", uniform(&mut SplitMix64::new(32), &[batch, m], 1.0));
        if dynamic {
            inputs.insert_i64("steps", ArrayD::from_elem(vec![1], steps as i64));
        }
        let mut seeds = TensorMap::new();
        seeds.insert_f32(
            "y",
            uniform(&mut SplitMix64::new(33), &[batch, steps, n], 1.0),
        );
        seeds.insert_f32(
            "solver.x_n",
            uniform(&mut SplitMix64::new(34), &[1, batch, n], 1.0),
        );
        let (one, two) = build(&weights).unwrap_or_else(|error| panic!("{name}: {error}"));
        let in_one_pass = one.run_gradients(&inputs, &seeds).expect("one thread");
        let apart = two.run_gradients(&inputs, &seeds).expect("two threads");
        assert_eq!(in_one_pass, apart, "{name}: one pass against halves apart");
        let exact = interp::gradients_in::<f64>(
            network,
            &interp::widen(&weights),
            &interp::widen(&inputs),
            &interp::widen(&seeds),
        )
        .expect("interpreter");
        let (error, tensor) = gradient_error(&in_one_pass, &exact);
        println!("{name}: one pass within {error:.2e} of the interpreter (`{tensor}`)");
        assert!(error < 1e-4, "{name}: `{tensor}` off by {error:e}");
    }
}

/// A training loop gives its gradients back (`recycle_grads`), and the
/// next backward writes the per-step copies into them, zeroing only the
/// copies of steps that did not run. Whatever the gradients held, each
/// backward gives the bits of a new model's: runs to every step and short
/// of them (a stale copy past the last step would show), one part and two
/// halves of the batch, one thread and two (whose second half's copies
/// also go back), two stacked layers with variable lengths, one of 0.
#[test]
fn recycled_gradients_give_the_gradients_of_new_ones() {
    // WideLista: 128 sequences, in halves; 4 of them, one part.
    for (batch, threads) in [(128, 1), (128, 2), (4, 1)] {
        let y = uniform(&mut SplitMix64::new(41), &[batch, 64], 1.0)
            .into_dimensionality()
            .expect("2-d");
        let grads = |model: &WideLista, steps: usize| {
            let (out, tape) = model
                .forward_train(y.view(), steps, None, None)
                .expect("forward");
            let grads = model.backward(&tape, out.y.view(), None).expect("backward");
            model.recycle(tape);
            grads
        };
        let mut recycled = WideLista::random(7);
        recycled.set_threads(Threads::Fixed(threads));
        for steps in [8, 5, 8, 1, 8] {
            let mut new = WideLista::random(7);
            new.set_threads(Threads::Fixed(threads));
            let found = grads(&recycled, steps);
            assert_eq!(
                found,
                grads(&new, steps),
                "WideLista, batch {batch}, {threads} thread(s), {steps} steps"
            );
            recycled.recycle_grads(found.params);
        }
    }
    let x: Array3<f32> = uniform(&mut SplitMix64::new(42), &[4, 5, 3], 1.0)
        .into_dimensionality()
        .expect("3-d");
    let grads = |model: &UntiedDynamic, lengths: &[usize]| {
        let (out, tape) = model
            .forward_train(x.view(), Some(lengths), None)
            .expect("forward");
        let dy = out.y.clone();
        let grads = model
            .backward(&tape, dy.view(), Some(&out.into_state()))
            .expect("backward");
        model.recycle(tape);
        grads
    };
    let recycled = UntiedDynamic::random(8);
    for lengths in [
        [5, 0, 2, 4],
        [2, 1, 0, 2],
        [5, 5, 3, 1],
        [0, 0, 0, 0],
        [4, 3, 2, 1],
    ] {
        let found = grads(&recycled, &lengths);
        assert_eq!(
            found,
            grads(&UntiedDynamic::random(8), &lengths),
            "UntiedDynamic, lengths {lengths:?}"
        );
        recycled.recycle_grads(found.params);
    }
}

/// The stacked untied cell of `UntiedStatic`/`UntiedDynamic` compiled for
/// the interpreter, random weights, and inputs with variable lengths (one
/// of 0) and initial states.
fn untied_problem() -> (rnn_dsl::Compiled, TensorMap, TensorMap) {
    let text = "cell untied(x: [I]) -> h: [H] { param W: [H, I] per step; param U: [H, H]; param b: [1] per step; h = tanh(W @ x + U @ h + b); }
        network N { input x: [3]; layer l = untied(hidden = 4, layers = 2, steps = 5); layer head = linear(out = 2); unroll dynamic; }";
    let compiled = rnn_dsl::compile(SourceFile::new("untied.rnn", text)).unwrap();
    let weights = weights::random(compiled.network(None).unwrap(), 12);
    let mut inputs = TensorMap::new();
    inputs.insert_f32("x", uniform(&mut SplitMix64::new(3), &[4, 5, 3], 1.0));
    inputs.insert_f32("l.h0", uniform(&mut SplitMix64::new(4), &[2, 4, 4], 1.0));
    inputs.insert_i64("seq_len", ndarray::arr1(&[5i64, 0, 2, 4]).into_dyn());
    (compiled, weights, inputs)
}

type Build = fn(&TensorMap) -> Result<Box<dyn Model>, RnnError>;

/// Generated code against the interpreter, every mode, with each step's
/// own copy (LISTA-CP, run to the last step and short of it; a stacked
/// untied cell with a per-step input, variable lengths, initial states).
#[test]
fn generated_code_matches_the_interpreter() {
    // (mode, model, the layer's arguments, whether a call says its steps)
    let lista: [(&str, Build, &str, bool); 4] = [
        (
            "static 6",
            |w| Ok(Box::new(ListaStatic::from_weights(w)?)),
            "",
            false,
        ),
        (
            "dynamic",
            |w| Ok(Box::new(ListaDynamic::from_weights(w)?)),
            ", steps = 6",
            true,
        ),
        (
            "dynamic by 4",
            |w| Ok(Box::new(ListaBy4::from_weights(w)?)),
            ", steps = 6",
            true,
        ),
        (
            "static buckets [2, 6]",
            |w| Ok(Box::new(ListaBuckets::from_weights(w)?)),
            "",
            true,
        ),
    ];
    let weights = lista_weights(6, 4);
    let y = measurements(5, 8);
    for (mode, build, layer_args, counts_steps) in lista {
        let model = build(&weights).unwrap_or_else(|error| panic!("{mode}: {error}"));
        let compiled = network(mode, layer_args);
        let network = compiled.network(None).unwrap();
        let runs: &[usize] = if counts_steps { &[6, 5] } else { &[6] };
        for &steps in runs {
            let mut inputs = TensorMap::new();
            inputs.insert_f32("y", y.clone());
            if counts_steps {
                inputs.insert_i64("steps", ArrayD::from_elem(vec![1], steps as i64));
            }
            let expected = interp::run(network, &weights, &inputs).expect("interpreter");
            let actual = model.run(&inputs).expect("generated");
            let error = max_error(&actual.f32("y").unwrap(), &expected.f32("y").unwrap());
            let against_loop = max_error(
                &actual.f32("y").unwrap(),
                &reference(&weights, &y, steps).into_dyn(),
            );
            println!(
                "lista {mode:<22} {steps} steps: {error:.2e} (written-out loop {against_loop:.2e})"
            );
            assert!(
                error < 1e-5 && against_loop < 1e-5,
                "{mode}: {error}, {against_loop}"
            );
        }
        // Past the copies: a typed error, as the interpreter's.
        if layer_args.contains("steps") {
            let mut inputs = TensorMap::new();
            inputs.insert_f32("y", y.clone());
            inputs.insert_i64("steps", ArrayD::from_elem(vec![1], 7));
            let error = model.run(&inputs).unwrap_err().to_string();
            assert_eq!(
                error,
                "tensor `steps`: 7 steps, but layer `solver` has per-step parameters for 6"
            );
        }
    }

    let untied: [(&str, Build); 2] = [
        ("static 5", |w| Ok(Box::new(UntiedStatic::from_weights(w)?))),
        ("dynamic", |w| Ok(Box::new(UntiedDynamic::from_weights(w)?))),
    ];
    let (compiled, weights, inputs) = untied_problem();
    let network = compiled.network(None).unwrap();
    let expected = interp::run(network, &weights, &inputs).expect("interpreter");
    for (mode, build) in untied {
        let model = build(&weights).unwrap_or_else(|error| panic!("{mode}: {error}"));
        let actual = model.run(&inputs).expect("generated");
        for name in ["y", "l.h_n"] {
            let error = max_error(&actual.f32(name).unwrap(), &expected.f32(name).unwrap());
            println!("untied {mode:<10} `{name}`: {error:.2e}");
            assert!(error < 1e-5, "{mode} `{name}`: {error}");
        }
    }
}

type BuildTrain = fn(&TensorMap) -> Result<Box<dyn Train>, RnnError>;

/// The largest error of generated gradients against the interpreter's in
/// `f64`, relative to the largest exact value of each tensor.
fn gradient_error(actual: &TensorMap, exact: &interp::Tensors<f64>) -> (f64, String) {
    let mut worst = (0.0f64, String::new());
    for (name, exact) in exact {
        // The interpreter names a gradient as the weight it was given (`A`, bare as a
        // single-layer cell allows); generated code by its full name (`A_l0`).
        let actual = actual
            .f32(name)
            .or_else(|_| actual.f32(&format!("{name}_l0")))
            .unwrap_or_else(|error| panic!("`{name}`: {error}"));
        assert_eq!(actual.shape(), exact.shape(), "`{name}`");
        let scale = exact.iter().fold(1e-3f64, |acc, e| acc.max(e.abs()));
        for (a, e) in actual.iter().zip(exact) {
            let error = (f64::from(*a) - e).abs() / scale;
            if error > worst.0 {
                worst = (error, name.clone());
            }
        }
    }
    worst
}

/// Generated training code against the interpreter's gradients in `f64`,
/// every mode: each step's copy gets the gradient of its own step alone
/// (`grad_W` `[K, M, N]`, zero past the last step run), the tied `A` the
/// sum over steps; with variable lengths, initial states and stacking for
/// the untied cell.
#[test]
fn generated_gradients_match_the_interpreter() {
    let lista: [(&str, BuildTrain, &str, usize); 4] = [
        (
            "static 6",
            |w| Ok(Box::new(ListaStatic::from_weights(w)?)),
            "",
            6,
        ),
        (
            "dynamic",
            |w| Ok(Box::new(ListaDynamic::from_weights(w)?)),
            ", steps = 6",
            5,
        ),
        (
            "dynamic by 4",
            |w| Ok(Box::new(ListaBy4::from_weights(w)?)),
            ", steps = 6",
            6,
        ),
        (
            "static buckets [2, 6]",
            |w| Ok(Box::new(ListaBuckets::from_weights(w)?)),
            "",
            2,
        ),
    ];
    let weights = lista_weights(6, 4);
    let y = measurements(5, 8);
    for (mode, build, layer_args, steps) in lista {
        let compiled = network(mode, layer_args);
        let network = compiled.network(None).unwrap();
        let mut inputs = TensorMap::new();
        inputs.insert_f32("y", y.clone());
        if mode != "static 6" {
            inputs.insert_i64("steps", ArrayD::from_elem(vec![1], steps as i64));
        }
        let mut seeds = TensorMap::new();
        seeds.insert_f32("y", uniform(&mut SplitMix64::new(9), &[5, steps, N], 1.0));
        seeds.insert_f32(
            "solver.x_n",
            uniform(&mut SplitMix64::new(10), &[1, 5, N], 1.0),
        );
        let exact = interp::gradients_in::<f64>(
            network,
            &interp::widen(&weights),
            &interp::widen(&inputs),
            &interp::widen(&seeds),
        )
        .expect("interpreter");
        let model = build(&weights).unwrap_or_else(|error| panic!("{mode}: {error}"));
        let grads = model
            .run_gradients(&inputs, &seeds)
            .expect("generated gradients");
        let (error, tensor) = gradient_error(&grads, &exact);
        println!("lista {mode:<22} {steps} steps: gradients within {error:.2e} (`{tensor}`)");
        assert!(error < 1e-5, "{mode}: `{tensor}` off by {error:e}");
        // Copies past the last step run get no gradient.
        let grad_w = grads.f32("grad_W_l0").unwrap();
        assert!(grad_w
            .index_axis(Axis(0), steps - 1)
            .iter()
            .any(|g| *g != 0.0));
        for t in steps..6 {
            assert!(
                grad_w.index_axis(Axis(0), t).iter().all(|g| *g == 0.0),
                "{mode}: copy {t}"
            );
        }
    }

    let untied: [(&str, BuildTrain); 2] = [
        ("static 5", |w| Ok(Box::new(UntiedStatic::from_weights(w)?))),
        ("dynamic", |w| Ok(Box::new(UntiedDynamic::from_weights(w)?))),
    ];
    let (compiled, weights, inputs) = untied_problem();
    let network = compiled.network(None).unwrap();
    let mut seeds = TensorMap::new();
    seeds.insert_f32("y", uniform(&mut SplitMix64::new(5), &[4, 5, 2], 1.0));
    seeds.insert_f32("l.h_n", uniform(&mut SplitMix64::new(6), &[2, 4, 4], 1.0));
    let exact = interp::gradients_in::<f64>(
        network,
        &interp::widen(&weights),
        &interp::widen(&inputs),
        &interp::widen(&seeds),
    )
    .expect("interpreter");
    for (mode, build) in untied {
        let model = build(&weights).unwrap_or_else(|error| panic!("{mode}: {error}"));
        let grads = model
            .run_gradients(&inputs, &seeds)
            .expect("generated gradients");
        let (error, tensor) = gradient_error(&grads, &exact);
        println!("untied {mode:<10} gradients within {error:.2e} (`{tensor}`)");
        assert!(error < 1e-5, "{mode}: `{tensor}` off by {error:e}");
    }
}

/// A parameter declared `frozen` (LISTA-CP's measurement matrix `A`, as
/// layer-wise training keeps it): its gradient is zero, in the interpreter
/// and in generated code, and every other gradient is the one the network
/// without `frozen` gets (checked against finite differences in
/// `gradients.rs`). The generated backward forms no product for it.
#[test]
fn a_frozen_parameter_gets_no_gradient_and_changes_no_other() {
    let frozen_text = LISTA_CP.replace("param A: [M, N];", "param A: [M, N] frozen;");
    let (plain, frozen) = (
        network("dynamic", ", steps = 6"),
        network_of(&frozen_text, "dynamic", ", steps = 6"),
    );
    let weights = lista_weights(6, 4);
    let mut inputs = TensorMap::new();
    inputs.insert_f32("y", measurements(5, 8));
    inputs.insert_i64("steps", ArrayD::from_elem(vec![1], 5));
    let mut seeds = TensorMap::new();
    seeds.insert_f32("y", uniform(&mut SplitMix64::new(9), &[5, 5, N], 1.0));
    seeds.insert_f32(
        "solver.x_n",
        uniform(&mut SplitMix64::new(10), &[1, 5, N], 1.0),
    );
    let exact = |compiled: &rnn_dsl::Compiled| {
        interp::gradients_in::<f64>(
            compiled.network(None).unwrap(),
            &interp::widen(&weights),
            &interp::widen(&inputs),
            &interp::widen(&seeds),
        )
        .expect("interpreter")
    };
    let (plain_grads, frozen_grads) = (exact(&plain), exact(&frozen));
    assert_eq!(
        plain_grads.keys().collect::<Vec<_>>(),
        frozen_grads.keys().collect::<Vec<_>>()
    );
    for (name, value) in &frozen_grads {
        if *name == rnn_dsl::names::gradient("A") {
            assert!(
                plain_grads[name].iter().any(|g| *g != 0.0),
                "`{name}` unfrozen"
            );
            assert!(value.iter().all(|g| *g == 0.0), "`{name}` frozen");
        } else {
            assert_eq!(value, &plain_grads[name], "`{name}`");
        }
    }
    let model = ListaFrozen::from_weights(&weights).unwrap();
    let grads = model
        .run_gradients(&inputs, &seeds)
        .expect("generated gradients");
    let (error, tensor) = gradient_error(&grads, &frozen_grads);
    println!("lista frozen A, dynamic: gradients within {error:.2e} (`{tensor}`)");
    assert!(error < 1e-5, "`{tensor}` off by {error:e}");
    assert!(grads.f32("grad_A_l0").unwrap().iter().all(|g| *g == 0.0));
}

/// Changes parameter `name` (copy `copy` of a per-step one, or all of it)
/// of `model`, differently in each `round`.
fn change(model: &mut dyn Parameters, name: &str, copy: Option<usize>, round: usize) {
    model
        .update_params(&mut |param, mut view| {
            if param == name {
                let mut target = match copy {
                    Some(k) => view.index_axis_mut(Axis(0), k),
                    None => view.view_mut(),
                };
                target.mapv_inplace(|v| v * 0.9 + 0.01 * (round + 1) as f32);
            }
        })
        .expect("finite parameters");
}

/// After each update, `model` runs forward and backward exactly as a
/// model loaded from its updated parameters.
fn check_updates<M: Train + Parameters>(
    what: &str,
    weights: &TensorMap,
    inputs: &TensorMap,
    seeds: &TensorMap,
    changes: &[(&str, Option<usize>)],
) {
    let mut model = M::from_weights(weights).expect("loads");
    // Two threads: an update that rebuilds several steps builds half of
    // them on each.
    model.set_threads(Threads::Fixed(2));
    model.run_gradients(inputs, seeds).expect("runs");
    for (round, &(name, copy)) in changes.iter().enumerate() {
        change(&mut model, name, copy, round);
        let mut updated = TensorMap::new();
        for (param, view) in model.params() {
            updated.insert_f32(param, view.to_owned());
        }
        let loaded = M::from_weights(&updated).expect("loads");
        assert_eq!(
            model.run_gradients(inputs, seeds).expect("runs"),
            loaded.run_gradients(inputs, seeds).expect("runs"),
            "{what}: after changing `{name}` (copy {copy:?})"
        );
    }
}

/// An update rebuilds only what reads a changed parameter (one step's
/// weights and training constants for a per-step copy, every step's for a
/// tied parameter, nothing of a layer whose parameters are unchanged); the
/// model then runs, forward and backward, bit for bit as one loaded from
/// the updated weights.
#[test]
fn an_update_runs_as_its_weights_loaded() {
    let weights = lista_weights(6, 4);
    let mut inputs = TensorMap::new();
    inputs.insert_f32("y", measurements(5, 8));
    let mut seeds = TensorMap::new();
    seeds.insert_f32("y", uniform(&mut SplitMix64::new(9), &[5, 6, N], 1.0));
    let lista = [
        ("W_l0", Some(2)),
        ("theta_l0", Some(0)),
        ("A_l0", None),
        ("W_l0", Some(5)),
        ("theta_l0", None),
    ];
    check_updates::<ListaStatic>("lista static 6", &weights, &inputs, &seeds, &lista);
    inputs.insert_i64("steps", ArrayD::from_elem(vec![1], 6));
    check_updates::<ListaDynamic>("lista dynamic", &weights, &inputs, &seeds, &lista);

    let (_, weights, inputs) = untied_problem();
    let mut seeds = TensorMap::new();
    seeds.insert_f32("y", uniform(&mut SplitMix64::new(5), &[4, 5, 2], 1.0));
    seeds.insert_f32("l.h_n", uniform(&mut SplitMix64::new(6), &[2, 4, 4], 1.0));
    let untied = [
        ("l.W_l1", Some(3)),
        ("head.weight", None),
        ("l.U_l0", None),
        ("l.b_l0", Some(0)),
    ];
    check_updates::<UntiedStatic>("untied static 5", &weights, &inputs, &seeds, &untied);
    check_updates::<UntiedDynamic>("untied dynamic", &weights, &inputs, &seeds, &untied);
}

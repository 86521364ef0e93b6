//! The reference interpreter: runs a network's IR on `rnn-runtime` kernels.
//!
//! Input: an [`ir::Network`](crate::ir::Network), its weights and its inputs as tensor maps.
//! Output: `y` `[B, T, D*O]` and each state's final value `<state>_n`
//! `[L*D, B, H]`. Semantics (DESIGN.md): steps `t >= seq_len[b]` leave the
//! state unchanged and output zeros; no step past `max(seq_len)` is
//! computed; a backward direction runs over each sequence's valid part
//! only, reversed, and its outputs are put back in place; layer k reads
//! layer k−1's output sequence. It favours plainness over speed: it is the
//! oracle generated code is tested against, and it backs `rnnc run`.
//!
//! It differentiates too ([`gradients`], `grad.rs`), by evaluating each
//! layer's backward step (`ir::differentiate`), and runs in `f32` (as
//! generated code) or `f64` (for finite-difference checks), see [`Float`].

mod float;
mod grad;
mod source;

use std::collections::BTreeMap;

use ndarray::{s, Array2, Array3, ArrayD, ArrayView2, Axis, Ix2, Ix3};
use rnn_runtime::{RnnError, TensorMap};

use crate::check::{InputSource, Precision, UnrollMode};
use crate::ir::{Dep, Layer, Network, Node, Op, Shape, ValueId};
use crate::names;

pub use self::float::Float;
pub use self::grad::{gradients, gradients_in};
pub use self::source::{widen, Source, Tensors};

/// The most values one output or state tensor may hold (4 GiB of `f32`).
pub const MAX_FLOATS: usize = 1 << 30;

/// Runs `network` on `inputs` with `weights`.
///
/// `inputs` holds each per-step input `[B, T, n]` by name, each context
/// `[B, n]`, optionally `seq_len` `[B]`, initial states (`h0`, `c0`, …)
/// `[L*D, B, H]`, and, for a network without per-step input under
/// `unroll dynamic`, `steps`. Returns `y` and the final states.
///
/// # Errors
///
/// A missing, misshaped or mistyped weight or input, or lengths out of
/// range, give an [`RnnError`] naming the tensor and both shapes.
pub fn run(
    network: &Network,
    weights: &TensorMap,
    inputs: &TensorMap,
) -> Result<TensorMap, RnnError> {
    let forward = run_in::<f32>(network, weights, inputs)?;
    let mut outputs = TensorMap::new();
    for (name, value) in forward {
        outputs.insert_f32(name, value);
    }
    Ok(outputs)
}

/// [`run`] in number type `F`, from any [`Source`] of tensors.
///
/// # Errors
///
/// As [`run`].
pub fn run_in<F: Float>(
    network: &Network,
    weights: &impl Source<F>,
    inputs: &impl Source<F>,
) -> Result<Tensors<F>, RnnError> {
    let layer_weights = load_weights(network, weights)?;
    let prepared = prepare_inputs(network, inputs)?;
    let initial = initial_states(network, &prepared, inputs)?;
    Ok(forward(network, &layer_weights, &prepared, &initial, false).outputs)
}

/// What a forward run gives: the outputs and, when asked for, what the
/// backward pass reads.
struct Forward<F> {
    /// `y` and each `<state>_n`.
    outputs: Tensors<F>,
    /// Per layer, per direction: the states before each step, and the cell
    /// inputs as the direction read them.
    tapes: Vec<Vec<Tape<F>>>,
}

/// What one direction of one layer keeps for its backward pass.
struct Tape<F> {
    /// `states[t][k]`: state k before step t, `[B, n]`.
    states: Vec<Vec<Array2<F>>>,
    /// Each cell input as the direction read it (reversed for a backward
    /// direction): `[B, T, n]`, or `[B, 1, n]` for a context.
    inputs: Vec<Array3<F>>,
}

/// Runs every layer; keeps the tapes when `keep` is set.
fn forward<F: Float>(
    network: &Network,
    layer_weights: &[LayerWeights<F>],
    prepared: &Prepared<F>,
    initial: &[Vec<Vec<Array2<F>>>],
    keep: bool,
) -> Forward<F> {
    let mut sequence = prepared.step_input.clone();
    let mut outputs = Tensors::new();
    let mut tapes = Vec::new();
    let mut finals: BTreeMap<String, Array3<F>> = BTreeMap::new();
    for (layer_idx, (layer, weights)) in network.layers.iter().zip(layer_weights).enumerate() {
        let mut direction_outputs = Vec::new();
        let mut layer_tapes = Vec::new();
        for (direction, params) in weights.params.iter().enumerate() {
            let layer_inputs = gather_layer_inputs(layer, prepared, sequence.as_ref());
            let (output, states, tape) = run_direction(
                layer,
                params,
                &layer_inputs,
                initial[layer_idx][direction].clone(),
                prepared,
                layer.runs_backward(direction),
                keep,
            );
            layer_tapes.extend(tape);
            for (state, value) in layer.states.iter().zip(states) {
                let name = names::final_state(&layer.prefix, &state.name);
                let rows = stack_rows(network, layer);
                let entry = finals
                    .entry(name)
                    .or_insert_with(|| Array3::zeros((rows, prepared.batch, state.size)));
                let row = layer.stack_idx * layer.directions + direction;
                entry.index_axis_mut(Axis(0), row).assign(&value);
            }
            direction_outputs.push(output);
        }
        let views: Vec<_> = direction_outputs
            .iter()
            .map(|output| output.view())
            .collect();
        sequence = Some(ndarray::concatenate(Axis(2), &views).expect("directions share B and T"));
        tapes.push(layer_tapes);
    }
    let y = sequence.expect("a network has at least one layer");
    outputs.insert(names::OUTPUT.to_owned(), y.into_dyn());
    for (name, value) in finals {
        outputs.insert(name, value.into_dyn());
    }
    Forward { outputs, tapes }
}

/// The number of rows of a layer statement's state tensors: layers × directions.
fn stack_rows(network: &Network, layer: &Layer) -> usize {
    let n_stack = network
        .layers
        .iter()
        .filter(|other| other.name == layer.name)
        .count();
    n_stack * layer.directions
}

/// One layer's parameters per direction, in the layer's parameter order,
/// and the name each was read under.
struct LayerWeights<F> {
    params: Vec<Vec<ArrayD<F>>>,
    names: Vec<Vec<String>>,
}

fn load_weights<F: Float>(
    network: &Network,
    weights: &impl Source<F>,
) -> Result<Vec<LayerWeights<F>>, RnnError> {
    let mut loaded = Vec::new();
    for layer in &network.layers {
        let mut params = Vec::new();
        let mut names = Vec::new();
        for direction in 0..layer.directions {
            let mut direction_params = Vec::new();
            let mut direction_names = Vec::new();
            for param in &layer.params {
                let mut name = layer.weight_name(param, direction);
                if let Some(bare) = layer.bare_weight_name(param) {
                    if !weights.contains(&name) && weights.contains(&bare) {
                        name = bare;
                    }
                }
                direction_params.push(weights.float_shaped(&name, &param.tensor_shape())?);
                direction_names.push(name);
            }
            params.push(direction_params);
            names.push(direction_names);
        }
        loaded.push(LayerWeights { params, names });
    }
    Ok(loaded)
}

struct Prepared<F> {
    batch: usize,
    steps: usize,
    lengths: Vec<usize>,
    step_input: Option<Array3<F>>,
    /// Every network input by index: `[B, T, n]` per-step, `[B, 1, n]` context.
    network_inputs: Vec<Array3<F>>,
}

fn prepare_inputs<F: Float>(
    network: &Network,
    inputs: &impl Source<F>,
) -> Result<Prepared<F>, RnnError> {
    let mut batch: Option<(usize, String)> = None;
    let mut steps: Option<usize> = match network.unroll {
        UnrollMode::Static(n) if network.step_input().is_none() => Some(n),
        _ => None,
    };
    let mut network_inputs = Vec::new();
    let mut step_input = None;
    for input in &network.inputs {
        let array = inputs.float(&input.name)?;
        let shape = array.shape().to_vec();
        let array3 = if input.per_step {
            let expected_b = batch
                .as_ref()
                .map_or(shape.first().copied().unwrap_or(0), |(b, _)| *b);
            let expected_t = steps.unwrap_or(shape.get(1).copied().unwrap_or(0));
            if shape.len() != 3
                || shape[0] != expected_b
                || shape[1] != expected_t
                || shape[2] != input.size
            {
                return Err(RnnError::ShapeMismatch {
                    tensor: input.name.clone(),
                    expected: vec![expected_b, expected_t, input.size],
                    found: shape,
                });
            }
            steps = Some(shape[1]);
            array.into_dimensionality::<Ix3>().expect("rank checked")
        } else {
            // A context is `[B, n]`; `[n]` is a batch of one.
            let array2 = match shape.len() {
                1 => array.into_shape_with_order((1, shape[0])).ok(),
                2 => array.into_dimensionality::<Ix2>().ok(),
                _ => None,
            };
            let expected_b = batch
                .as_ref()
                .map_or(shape.first().copied().unwrap_or(1), |(b, _)| *b);
            match array2 {
                Some(array2)
                    if array2.ncols() == input.size
                        && batch.as_ref().is_none_or(|(b, _)| array2.nrows() == *b) =>
                {
                    array2.insert_axis(Axis(1))
                }
                _ => {
                    return Err(RnnError::ShapeMismatch {
                        tensor: input.name.clone(),
                        expected: vec![expected_b, input.size],
                        found: shape,
                    })
                }
            }
        };
        if batch.is_none() {
            batch = Some((array3.shape()[0], input.name.clone()));
        }
        if input.per_step && step_input.is_none() {
            step_input = Some(array3.clone());
        }
        network_inputs.push(array3);
    }
    let batch = batch.map_or(1, |(b, _)| b);
    let steps = match steps {
        Some(steps) => steps,
        None => {
            let lengths =
                inputs
                    .lengths(names::STEPS, 1, usize::MAX)
                    .map_err(|error| match error {
                        RnnError::MissingTensor { available, .. } => RnnError::MissingTensor {
                            tensor: names::STEPS.to_owned(),
                            available,
                        },
                        other => other,
                    })?;
            lengths[0]
        }
    };
    if let UnrollMode::Static(n) = network.unroll {
        if steps > n {
            return Err(RnnError::InvalidValue {
                tensor: network
                    .step_input()
                    .map_or(names::STEPS.to_owned(), |input| input.name.clone()),
                reason: format!("{steps} steps, but the network is unrolled statically for {n}"),
            });
        }
    }
    // The outputs take `B * T * width` floats: refuse sizes that cannot be
    // allocated rather than abort.
    let widest = network
        .layers
        .iter()
        .map(Layer::output_width)
        .max()
        .unwrap_or(0)
        .max(1);
    if batch
        .checked_mul(steps)
        .and_then(|cells| cells.checked_mul(widest))
        .is_none_or(|floats| floats > MAX_FLOATS)
    {
        return Err(RnnError::InvalidValue {
            tensor: network.step_input().map_or(names::STEPS.to_owned(), |input| input.name.clone()),
            reason: format!("{batch} sequences of {steps} steps of {widest} outputs is more than {MAX_FLOATS} values"),
        });
    }
    let lengths = if inputs.contains(names::SEQ_LEN) {
        inputs.lengths(names::SEQ_LEN, batch, steps)?
    } else {
        vec![steps; batch]
    };
    // A layer with per-step parameters runs at most as many steps as they
    // have copies (static unrollings past it are refused by the checker).
    let longest = lengths.iter().copied().max().unwrap_or(0);
    for layer in &network.layers {
        let Some(copies) = layer.params.iter().find_map(|param| param.steps) else {
            continue;
        };
        if longest > copies {
            let tensor = if inputs.contains(names::SEQ_LEN) {
                names::SEQ_LEN.to_owned()
            } else {
                network
                    .step_input()
                    .map_or(names::STEPS.to_owned(), |input| input.name.clone())
            };
            return Err(RnnError::InvalidValue {
                tensor,
                reason: format!(
                    "{longest} steps, but layer `{}` has per-step parameters for {copies}",
                    layer.name
                ),
            });
        }
    }
    Ok(Prepared {
        batch,
        steps,
        lengths,
        step_input,
        network_inputs,
    })
}

fn gather_layer_inputs<F: Float>(
    layer: &Layer,
    prepared: &Prepared<F>,
    previous: Option<&Array3<F>>,
) -> Vec<Array3<F>> {
    layer
        .inputs
        .iter()
        .map(|input| match input.source {
            InputSource::Previous => previous
                .expect("later layers have a previous output")
                .clone(),
            InputSource::Network(idx) => prepared.network_inputs[idx].clone(),
        })
        .collect()
}

/// Each layer's initial states, per direction.
fn initial_states<F: Float>(
    network: &Network,
    prepared: &Prepared<F>,
    inputs: &impl Source<F>,
) -> Result<Vec<Vec<Vec<Array2<F>>>>, RnnError> {
    network
        .layers
        .iter()
        .map(|layer| {
            (0..layer.directions)
                .map(|direction| layer_initial_states(layer, direction, prepared, inputs))
                .collect()
        })
        .collect()
}

fn layer_initial_states<F: Float>(
    layer: &Layer,
    direction: usize,
    prepared: &Prepared<F>,
    inputs: &impl Source<F>,
) -> Result<Vec<Array2<F>>, RnnError> {
    layer
        .states
        .iter()
        .map(|state| {
            let name = names::initial_state(&layer.prefix, &state.name);
            if !inputs.contains(&name) {
                return Ok(Array2::zeros((prepared.batch, state.size)));
            }
            let array = inputs.float(&name)?;
            let rows = array.shape().first().copied().unwrap_or(0);
            let needed = layer.stack_idx * layer.directions + direction;
            if array.ndim() != 3
                || rows <= needed
                || array.shape()[1] != prepared.batch
                || array.shape()[2] != state.size
            {
                // The full expected shape needs the stack depth, which the
                // caller of this layer knows only by counting; report what
                // this layer needs at least.
                return Err(RnnError::ShapeMismatch {
                    tensor: name,
                    expected: vec![rows.max(needed + 1), prepared.batch, state.size],
                    found: array.shape().to_vec(),
                });
            }
            let array = array.into_dimensionality::<Ix3>().expect("rank checked");
            Ok(array.index_axis(Axis(0), needed).to_owned())
        })
        .collect()
}

/// A value during evaluation: a number, per-sequence rows `[B, n]` (or
/// `[1, n]` for values shared by all sequences), or a matrix.
#[derive(Debug, Clone)]
enum Val<F> {
    Scalar(F),
    Rows(Array2<F>),
    Matrix(Array2<F>),
}

impl<F: Float> Val<F> {
    fn rows(&self) -> ArrayView2<'_, F> {
        match self {
            Val::Rows(rows) => rows.view(),
            Val::Matrix(_) | Val::Scalar(_) => unreachable!("IR verification: expected a vector"),
        }
    }

    fn as_2d(&self) -> Array2<F> {
        match self {
            Val::Scalar(value) => Array2::from_elem((1, 1), *value),
            Val::Rows(rows) | Val::Matrix(rows) => rows.clone(),
        }
    }

    /// Rows broadcast to the batch.
    fn batch_rows(&self, batch: usize) -> Array2<F> {
        let rows = self.as_2d();
        rows.broadcast((batch, rows.ncols()))
            .expect("rows are 1 or B")
            .to_owned()
    }
}

/// What one step's evaluation reads besides the parameters.
struct StepContext<'a, F> {
    inputs: &'a [Array3<F>],
    states: &'a [Array2<F>],
    t: usize,
    /// The seeds of a backward step: the output's, then each state's.
    seeds: Option<&'a Seeds<F>>,
    /// Which rows take part in batch sums (a backward step's live sequences).
    live: Option<&'a [bool]>,
    /// The precision products read their matrices in: the layer's, in an
    /// inference run (training computes in `f32`); and which nodes are
    /// values of parameters and numbers alone, whose products generated
    /// code computes in `f32` when the model is built.
    precision: Option<(Precision, &'a [bool])>,
}

/// The gradients arriving for a step's results.
struct Seeds<F> {
    output: Array2<F>,
    states: Vec<Array2<F>>,
}

#[allow(clippy::too_many_arguments)]
fn run_direction<F: Float>(
    layer: &Layer,
    params: &[ArrayD<F>],
    layer_inputs: &[Array3<F>],
    mut states: Vec<Array2<F>>,
    prepared: &Prepared<F>,
    reverse: bool,
    keep: bool,
) -> (Array3<F>, Vec<Array2<F>>, Option<Tape<F>>) {
    let (batch, steps) = (prepared.batch, prepared.steps);
    let lengths = &prepared.lengths;
    // The backward direction reads each sequence's valid part reversed.
    let layer_inputs: Vec<Array3<F>> = layer_inputs
        .iter()
        .zip(&layer.inputs)
        .map(|(input, info)| {
            if reverse && info.per_step {
                reverse_valid(input, lengths)
            } else {
                input.clone()
            }
        })
        .collect();
    let step = &layer.step;
    let mut values: Vec<Option<Val<F>>> = vec![None; step.nodes.len()];
    let mut tape_states = Vec::new();
    let constants = constant_nodes(layer);
    let precision = match (keep, layer.precision) {
        (false, Some(precision)) => Some((precision, &constants[..])),
        _ => None,
    };
    // Parameters and contexts are the same at every step: evaluate once.
    let invariant = StepContext {
        inputs: &layer_inputs,
        states: &states,
        t: 0,
        seeds: None,
        live: None,
        precision,
    };
    evaluate(&step.nodes, 0, &mut values, params, &invariant, |dep| {
        dep <= Dep::Context
    });
    let mut output = Array3::zeros((batch, steps, layer.output_size));
    let max_len = lengths.iter().copied().max().unwrap_or(0);
    for t in 0..max_len {
        if keep {
            tape_states.push(states.clone());
        }
        let cx = StepContext {
            inputs: &layer_inputs,
            states: &states,
            t,
            seeds: None,
            live: None,
            precision,
        };
        let params = params_at(layer, params, t);
        evaluate(&step.nodes, 0, &mut values, &params, &cx, |dep| {
            dep > Dep::Context
        });
        let value_rows = |id: ValueId| {
            values[id.index()]
                .as_ref()
                .expect("evaluated")
                .batch_rows(batch)
        };
        let new_states: Vec<Array2<F>> = step.updates.iter().map(|id| value_rows(*id)).collect();
        let step_output = value_rows(step.output);
        for (b, length) in lengths.iter().enumerate() {
            if t < *length {
                for (state, new_state) in states.iter_mut().zip(&new_states) {
                    state.row_mut(b).assign(&new_state.row(b));
                }
                output.slice_mut(s![b, t, ..]).assign(&step_output.row(b));
            }
        }
    }
    if reverse {
        output = reverse_valid(&output, lengths);
    }
    let tape = keep.then(|| Tape {
        states: tape_states,
        inputs: layer_inputs,
    });
    (output, states, tape)
}

/// The parameters step `t` reads: copy `t` of each per-step parameter
/// (which only per-step values read: its dependence is `State`), the
/// others as they are.
fn params_at<'a, F: Float>(
    layer: &Layer,
    params: &'a [ArrayD<F>],
    t: usize,
) -> std::borrow::Cow<'a, [ArrayD<F>]> {
    if layer.params.iter().all(|param| param.steps.is_none()) {
        return std::borrow::Cow::Borrowed(params);
    }
    let at_t = layer
        .params
        .iter()
        .zip(params)
        .map(|(param, array)| match param.steps {
            Some(_) => array.index_axis(Axis(0), t).to_owned(),
            None => array.clone(),
        });
    std::borrow::Cow::Owned(at_t.collect())
}

/// Evaluates `nodes[from..]` whose dependence `select` accepts, in order.
fn evaluate<F: Float>(
    nodes: &[Node],
    from: usize,
    values: &mut [Option<Val<F>>],
    params: &[ArrayD<F>],
    cx: &StepContext<'_, F>,
    select: impl Fn(Dep) -> bool,
) {
    for idx in from..nodes.len() {
        if select(nodes[idx].dep) {
            values[idx] = Some(eval_node(&nodes[idx], values, params, cx));
        }
    }
}

/// `out[b, t] = x[b, len_b - 1 - t]` for `t < len_b`, zero elsewhere. Its
/// own inverse.
fn reverse_valid<F: Float>(sequence: &Array3<F>, lengths: &[usize]) -> Array3<F> {
    let mut out = Array3::zeros(sequence.raw_dim());
    for (b, len) in lengths.iter().enumerate() {
        for t in 0..*len {
            out.slice_mut(s![b, t, ..])
                .assign(&sequence.slice(s![b, len - 1 - t, ..]));
        }
    }
    out
}

/// Which nodes are values of parameters and numbers alone (per-step
/// parameters included).
fn constant_nodes(layer: &Layer) -> Vec<bool> {
    let mut constant = Vec::with_capacity(layer.step.nodes.len());
    for node in &layer.step.nodes {
        let value = match node.op {
            Op::Param(_) | Op::Literal(_) => true,
            Op::Input(_) | Op::State(_) | Op::Seed(_) => false,
            ref op => op.operands().iter().all(|id| constant[id.index()]),
        };
        constant.push(value);
    }
    constant
}

/// A matrix as a product in `precision` multiplies by: rounded to `f32`,
/// then by the runtime's own rounding (bfloat16, or int8 with one scale
/// per row). A matrix int8 cannot represent (a value not finite, which
/// generated code refuses when the model is built) is left as it is.
fn rounded<F: Float>(matrix: &Array2<F>, precision: Precision) -> Array2<F> {
    let single = matrix.mapv(|value| value.to_f64() as f32);
    match rnn_runtime::kernels::ReducedMatrix::new(single.view(), precision) {
        Some(reduced) => reduced.dequantized().mapv(F::from_f32),
        None => matrix.clone(),
    }
}

fn eval_node<F: Float>(
    node: &Node,
    values: &[Option<Val<F>>],
    params: &[ArrayD<F>],
    cx: &StepContext<'_, F>,
) -> Val<F> {
    let get = |id: ValueId| {
        values[id.index()]
            .as_ref()
            .expect("operands are evaluated first")
    };
    match &node.op {
        Op::Input(k) => {
            let input = &cx.inputs[*k];
            let t = if input.shape()[1] == 1 { 0 } else { cx.t };
            Val::Rows(input.slice(s![.., t, ..]).to_owned())
        }
        Op::State(k) => Val::Rows(cx.states[*k].clone()),
        Op::Param(param) => {
            let array = &params[param.0 as usize];
            match node.shape {
                Shape::Vector(len) => Val::Rows(
                    array
                        .clone()
                        .into_shape_with_order((1, len))
                        .expect("shape checked at load"),
                ),
                _ => Val::Matrix(
                    array
                        .clone()
                        .into_dimensionality::<Ix2>()
                        .expect("shape checked at load"),
                ),
            }
        }
        Op::Literal(value) => match node.shape {
            Shape::Vector(len) => Val::Rows(Array2::from_elem((1, len), F::from_f32(*value))),
            _ => Val::Scalar(F::from_f32(*value)),
        },
        Op::Unary(op, a) => elementwise(&[get(*a)], |args| F::unary(*op, args[0])),
        Op::Binary(op, a, b) => {
            elementwise(&[get(*a), get(*b)], |args| F::binary(*op, args[0], args[1]))
        }
        Op::Clip(a, lo, hi) => elementwise(&[get(*a), get(*lo), get(*hi)], |args| {
            F::clip(args[0], args[1], args[2])
        }),
        Op::MatVec(matrix, vector) => {
            let Val::Matrix(matrix) = get(*matrix) else {
                unreachable!("IR verification: matvec takes a matrix")
            };
            match cx.precision {
                Some((precision, constants)) if !constants[vector.index()] => {
                    let rounded = rounded(matrix, precision);
                    Val::Rows(F::matmul_bt(get(*vector).rows(), rounded.view()))
                }
                _ => Val::Rows(F::matmul_bt(get(*vector).rows(), matrix.view())),
            }
        }
        Op::Transpose(matrix) => {
            let Val::Matrix(matrix) = get(*matrix) else {
                unreachable!("IR verification: transpose takes a matrix")
            };
            Val::Matrix(matrix.t().to_owned())
        }
        Op::Row(matrix, index) => match get(*matrix) {
            Val::Matrix(matrix) => Val::Rows(matrix.slice(s![*index..*index + 1, ..]).to_owned()),
            _ => unreachable!("IR verification: rows are taken of matrices"),
        },
        Op::Slice(inner, start, end) => match get(*inner) {
            Val::Matrix(matrix) => Val::Matrix(matrix.slice(s![*start..*end, ..]).to_owned()),
            Val::Rows(rows) => Val::Rows(rows.slice(s![.., *start..*end]).to_owned()),
            Val::Scalar(_) => unreachable!("IR verification: slices take vectors or matrices"),
        },
        Op::Seed(seed) => {
            let seeds = cx.seeds.expect("seeds are read by backward steps only");
            Val::Rows(match seed {
                crate::ir::Seed::Output => seeds.output.clone(),
                crate::ir::Seed::State(k) => seeds.states[*k].clone(),
            })
        }
        Op::Outer(g, v) => {
            let (g, v) = (get(*g).as_2d(), get(*v).as_2d());
            let rows = g.nrows().max(v.nrows());
            let g = g.broadcast((rows, g.ncols())).expect("rows are 1 or B");
            let v = v.broadcast((rows, v.ncols())).expect("rows are 1 or B");
            let mut out = Array2::zeros((g.ncols(), v.ncols()));
            for r in 0..rows {
                if is_live(cx.live, r, rows) {
                    for (i, gi) in g.row(r).iter().enumerate() {
                        for (j, vj) in v.row(r).iter().enumerate() {
                            out[(i, j)] += *gi * *vj;
                        }
                    }
                }
            }
            Val::Matrix(out)
        }
        Op::SumBatch(a) => {
            let rows = get(*a).as_2d();
            let mut out = Array2::zeros((1, rows.ncols()));
            for (r, row) in rows.outer_iter().enumerate() {
                if is_live(cx.live, r, rows.nrows()) {
                    let mut acc = out.row_mut(0);
                    acc += &row;
                }
            }
            match get(*a) {
                Val::Matrix(_) => Val::Matrix(rows),
                _ => Val::Rows(out),
            }
        }
        Op::Reduce(op, a) => {
            let rows = get(*a).rows();
            let values: Vec<F> = rows
                .outer_iter()
                .map(|row| F::reduce(*op, row.iter().copied()))
                .collect();
            Val::Rows(Array2::from_shape_vec((values.len(), 1), values).expect("one per row"))
        }
        Op::SumElems(a) => {
            let rows = get(*a).rows();
            let sums: Vec<F> = rows
                .outer_iter()
                .map(|row| row.iter().fold(F::zero(), |acc, x| acc + *x))
                .collect();
            Val::Rows(Array2::from_shape_vec((sums.len(), 1), sums).expect("one per row"))
        }
        Op::Place(a, start, len) => match get(*a) {
            Val::Rows(rows) => {
                let mut out = Array2::zeros((rows.nrows(), *len));
                out.slice_mut(s![.., *start..*start + rows.ncols()])
                    .assign(rows);
                Val::Rows(out)
            }
            Val::Matrix(matrix) => {
                let mut out = Array2::zeros((*len, matrix.ncols()));
                out.slice_mut(s![*start..*start + matrix.nrows(), ..])
                    .assign(matrix);
                Val::Matrix(out)
            }
            Val::Scalar(_) => unreachable!("backward verification: place takes vectors"),
        },
        Op::PlaceRow(a, index, rows) => {
            let row = get(*a).rows();
            let mut out = Array2::zeros((*rows, row.ncols()));
            out.row_mut(*index).assign(&row.row(0));
            Val::Matrix(out)
        }
    }
}

/// Whether row `r` of `rows` takes part in a batch sum: every row of a
/// value shared by the batch, the live sequences' rows of a batch.
fn is_live(live: Option<&[bool]>, r: usize, rows: usize) -> bool {
    match live {
        Some(live) if rows == live.len() => live[r],
        _ => true,
    }
}

fn elementwise<F: Float>(operands: &[&Val<F>], func: impl Fn(&[F]) -> F) -> Val<F> {
    if operands
        .iter()
        .all(|operand| matches!(operand, Val::Scalar(_)))
    {
        let args: Vec<F> = operands
            .iter()
            .map(|operand| match operand {
                Val::Scalar(value) => *value,
                _ => unreachable!("checked all scalars"),
            })
            .collect();
        return Val::Scalar(func(&args));
    }
    let is_matrix = operands
        .iter()
        .any(|operand| matches!(operand, Val::Matrix(_)));
    let arrays: Vec<Array2<F>> = operands.iter().map(|operand| operand.as_2d()).collect();
    let rows = arrays.iter().map(Array2::nrows).max().unwrap_or(1);
    let cols = arrays.iter().map(Array2::ncols).max().unwrap_or(1);
    let views: Vec<_> = arrays
        .iter()
        .map(|array| {
            array
                .broadcast((rows, cols))
                .expect("IR verification: operands broadcast")
        })
        .collect();
    let mut out = Array2::zeros((rows, cols));
    let mut args = vec![F::zero(); views.len()];
    for ((r, c), slot) in out.indexed_iter_mut() {
        for (arg, view) in args.iter_mut().zip(&views) {
            *arg = view[(r, c)];
        }
        *slot = func(&args);
    }
    if is_matrix {
        Val::Matrix(out)
    } else {
        Val::Rows(out)
    }
}

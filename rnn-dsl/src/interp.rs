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

use std::collections::BTreeMap;

use ndarray::{s, Array2, Array3, ArrayD, ArrayView2, Axis, Ix2, Ix3};
use rnn_runtime::kernels;
use rnn_runtime::{RnnError, TensorMap};

use crate::check::{InputSource, UnrollMode};
use crate::ir::{Dep, Layer, Network, Op, Shape, Step};
use crate::names;
use crate::ops::Elementwise;

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
    let layer_weights = load_weights(network, weights)?;
    let prepared = prepare_inputs(network, inputs)?;
    let mut sequence = prepared.step_input.clone();
    let mut outputs = TensorMap::new();
    let mut finals: BTreeMap<String, Array3<f32>> = BTreeMap::new();
    for (layer, weights) in network.layers.iter().zip(&layer_weights) {
        let mut direction_outputs = Vec::new();
        for (direction, params) in weights.iter().enumerate() {
            let layer_inputs = gather_layer_inputs(layer, &prepared, sequence.as_ref());
            let initial = initial_states(layer, direction, &prepared, inputs)?;
            let (output, states) = run_direction(
                layer,
                params,
                &layer_inputs,
                initial,
                &prepared,
                direction == 1,
            );
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
    }
    let y = sequence.expect("a network has at least one layer");
    outputs.insert_f32(names::OUTPUT, y.into_dyn());
    for (name, value) in finals {
        outputs.insert_f32(name, value.into_dyn());
    }
    Ok(outputs)
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

/// Each layer's parameters, per direction, in the layer's parameter order.
type LayerWeights = Vec<Vec<ArrayD<f32>>>;

fn load_weights(network: &Network, weights: &TensorMap) -> Result<Vec<LayerWeights>, RnnError> {
    network
        .layers
        .iter()
        .map(|layer| {
            (0..layer.directions)
                .map(|direction| {
                    layer
                        .params
                        .iter()
                        .map(|param| {
                            let name = layer.weight_name(param, direction);
                            match layer.bare_weight_name(param) {
                                Some(bare)
                                    if !weights.contains(&name) && weights.contains(&bare) =>
                                {
                                    weights.f32_shaped(&bare, &param.shape)
                                }
                                _ => weights.f32_shaped(&name, &param.shape),
                            }
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

struct Prepared {
    batch: usize,
    steps: usize,
    lengths: Vec<usize>,
    step_input: Option<Array3<f32>>,
    /// Every network input by index: `[B, T, n]` per-step, `[B, 1, n]` context.
    network_inputs: Vec<Array3<f32>>,
}

fn prepare_inputs(network: &Network, inputs: &TensorMap) -> Result<Prepared, RnnError> {
    let mut batch: Option<(usize, String)> = None;
    let mut steps: Option<usize> = match network.unroll {
        UnrollMode::Static(n) if network.step_input().is_none() => Some(n),
        _ => None,
    };
    let mut network_inputs = Vec::new();
    let mut step_input = None;
    for input in &network.inputs {
        let array = inputs.f32(&input.name)?;
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
    Ok(Prepared {
        batch,
        steps,
        lengths,
        step_input,
        network_inputs,
    })
}

fn gather_layer_inputs(
    layer: &Layer,
    prepared: &Prepared,
    previous: Option<&Array3<f32>>,
) -> Vec<Array3<f32>> {
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

fn initial_states(
    layer: &Layer,
    direction: usize,
    prepared: &Prepared,
    inputs: &TensorMap,
) -> Result<Vec<Array2<f32>>, RnnError> {
    layer
        .states
        .iter()
        .map(|state| {
            let name = names::initial_state(&layer.prefix, &state.name);
            if !inputs.contains(&name) {
                return Ok(Array2::zeros((prepared.batch, state.size)));
            }
            let array = inputs.f32(&name)?;
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
/// `[1, n]` for values shared by all sequences), or a parameter matrix.
#[derive(Debug, Clone)]
enum Val {
    Scalar(f32),
    Rows(Array2<f32>),
    Matrix(Array2<f32>),
}

impl Val {
    fn rows(&self) -> ArrayView2<'_, f32> {
        match self {
            Val::Rows(rows) => rows.view(),
            Val::Matrix(_) | Val::Scalar(_) => unreachable!("IR verification: expected a vector"),
        }
    }

    fn as_2d(&self) -> Array2<f32> {
        match self {
            Val::Scalar(value) => Array2::from_elem((1, 1), *value),
            Val::Rows(rows) | Val::Matrix(rows) => rows.clone(),
        }
    }
}

fn run_direction(
    layer: &Layer,
    params: &[ArrayD<f32>],
    layer_inputs: &[Array3<f32>],
    mut states: Vec<Array2<f32>>,
    prepared: &Prepared,
    reverse: bool,
) -> (Array3<f32>, Vec<Array2<f32>>) {
    let (batch, steps) = (prepared.batch, prepared.steps);
    let lengths = &prepared.lengths;
    // The backward direction reads each sequence's valid part reversed.
    let layer_inputs: Vec<Array3<f32>> = layer_inputs
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
    let mut values: Vec<Option<Val>> = vec![None; step.nodes.len()];
    // Parameters and contexts are the same at every step: evaluate once.
    for idx in 0..step.nodes.len() {
        if step.nodes[idx].dep <= Dep::Context {
            values[idx] = Some(eval_node(
                step,
                idx,
                &values,
                params,
                &layer_inputs,
                &states,
                0,
            ));
        }
    }
    let mut output = Array3::zeros((batch, steps, layer.output_size));
    let max_len = lengths.iter().copied().max().unwrap_or(0);
    for t in 0..max_len {
        for idx in 0..step.nodes.len() {
            if step.nodes[idx].dep > Dep::Context {
                values[idx] = Some(eval_node(
                    step,
                    idx,
                    &values,
                    params,
                    &layer_inputs,
                    &states,
                    t,
                ));
            }
        }
        let value_rows = |id: crate::ir::ValueId| -> Array2<f32> {
            let rows = values[id.index()].as_ref().expect("evaluated").as_2d();
            rows.broadcast((batch, rows.ncols()))
                .expect("rows are 1 or B")
                .to_owned()
        };
        let new_states: Vec<Array2<f32>> = step.updates.iter().map(|id| value_rows(*id)).collect();
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
    (output, states)
}

/// `out[b, t] = x[b, len_b - 1 - t]` for `t < len_b`, zero elsewhere. Its
/// own inverse.
fn reverse_valid(sequence: &Array3<f32>, lengths: &[usize]) -> Array3<f32> {
    let mut out = Array3::zeros(sequence.raw_dim());
    for (b, len) in lengths.iter().enumerate() {
        for t in 0..*len {
            out.slice_mut(s![b, t, ..])
                .assign(&sequence.slice(s![b, len - 1 - t, ..]));
        }
    }
    out
}

fn eval_node(
    step: &Step,
    idx: usize,
    values: &[Option<Val>],
    params: &[ArrayD<f32>],
    inputs: &[Array3<f32>],
    states: &[Array2<f32>],
    t: usize,
) -> Val {
    let node = &step.nodes[idx];
    let get = |id: crate::ir::ValueId| {
        values[id.index()]
            .as_ref()
            .expect("operands are evaluated first")
    };
    match &node.op {
        Op::Input(k) => {
            let input = &inputs[*k];
            let t = if input.shape()[1] == 1 { 0 } else { t };
            Val::Rows(input.slice(s![.., t, ..]).to_owned())
        }
        Op::State(k) => Val::Rows(states[*k].clone()),
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
            Shape::Vector(len) => Val::Rows(Array2::from_elem((1, len), *value)),
            _ => Val::Scalar(*value),
        },
        Op::Unary(op, a) => elementwise(&[get(*a)], |args| op.apply(args[0])),
        Op::Binary(op, a, b) => elementwise(&[get(*a), get(*b)], |args| op.apply(args[0], args[1])),
        Op::Clip(a, lo, hi) => elementwise(&[get(*a), get(*lo), get(*hi)], |args| {
            Elementwise::Clip.apply(args)
        }),
        Op::MatVec(matrix, vector) => {
            let Val::Matrix(matrix) = get(*matrix) else {
                unreachable!("IR verification: matvec takes a matrix")
            };
            let vector = get(*vector).rows();
            let mut out = Array2::zeros((vector.nrows(), matrix.nrows()));
            kernels::matmul_bt(vector, matrix.view(), out.view_mut(), false);
            Val::Rows(out)
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
    }
}

fn elementwise(operands: &[&Val], func: impl Fn(&[f32]) -> f32) -> Val {
    if operands
        .iter()
        .all(|operand| matches!(operand, Val::Scalar(_)))
    {
        let args: Vec<f32> = operands
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
    let arrays: Vec<Array2<f32>> = operands.iter().map(|operand| operand.as_2d()).collect();
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
    let mut args = vec![0.0; views.len()];
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

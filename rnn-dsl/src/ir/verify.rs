//! The IR verifier: the invariants every IR must keep, checked.
//!
//! [`verify`] runs at the end of [`crate::ir::build()`] in debug builds and
//! tests. A violation is our bug (check has rejected every user error), so
//! it returns the first one found, as text naming the network, the layer
//! and what is wrong.
//!
//! Invariants checked (adding an invariant means adding a line here):
//! - every operand of node `k` is a node before `k` (the arena is in
//!   evaluation order, so it has no cycles);
//! - a node's dependence is the largest of its operands' (leaves: inputs
//!   are `Input` or `Context`, states `State`, parameters and literals
//!   `Const`);
//! - matrices are made of parameters and numbers alone (`Const`, or
//!   `State` when a per-step parameter is among them);
//! - `MatVec` takes a matrix `[m, n]` and a vector `[n]` and gives `[m]`;
//! - elementwise operands are scalars, one-element vectors, or of the
//!   node's own shape;
//! - slices and rows lie within their operand;
//! - parameter ids index the layer's parameter list and shapes agree;
//! - there is one update per state, of the state's size; the output is a
//!   vector of the layer's output size;
//! - layer input sizes agree with the previous layer's output width;
//! - a forward step holds no backward operation (`ir/grad.rs` has its own
//!   verifier, `verify_backward`).

use crate::check::InputSource;

use super::{Dep, Layer, Model, Op, Shape, ValueId};

/// Checks the IR's invariants; returns the first violation.
///
/// The invariants are listed in this module's doc (`ir/verify.rs`).
pub fn verify(model: &Model) -> Result<(), String> {
    for network in &model.networks {
        let mut previous_width = None;
        for layer in &network.layers {
            let at = |msg: String| {
                format!(
                    "network `{}` layer `{}`#{}: {msg}",
                    network.name, layer.name, layer.stack_idx
                )
            };
            for input in &layer.inputs {
                if input.source == InputSource::Previous && Some(input.size) != previous_width {
                    return Err(at(format!(
                        "input size {} but previous layer gives {previous_width:?}",
                        input.size
                    )));
                }
            }
            verify_step(layer).map_err(at)?;
            previous_width = Some(layer.output_width());
        }
    }
    Ok(())
}

fn verify_step(layer: &Layer) -> Result<(), String> {
    let step = &layer.step;
    // Whether each node is made of parameters and numbers alone.
    let mut of_params: Vec<bool> = Vec::with_capacity(step.nodes.len());
    for (idx, node) in step.nodes.iter().enumerate() {
        let id = ValueId(idx as u32);
        let operands = node.op.operands();
        for operand in &operands {
            if operand.index() >= idx {
                return Err(format!("{id} reads {operand}, which does not precede it"));
            }
        }
        let shape_of = |value: ValueId| step.nodes[value.index()].shape;
        let expected_dep = match &node.op {
            Op::Input(k) => {
                let input = layer
                    .inputs
                    .get(*k)
                    .ok_or_else(|| format!("{id} reads missing input {k}"))?;
                if node.shape != Shape::Vector(input.size) {
                    return Err(format!(
                        "{id} input shape {} but input size {}",
                        node.shape, input.size
                    ));
                }
                if input.per_step {
                    Dep::Input
                } else {
                    Dep::Context
                }
            }
            Op::State(k) => {
                let state = layer
                    .states
                    .get(*k)
                    .ok_or_else(|| format!("{id} reads missing state {k}"))?;
                if node.shape != Shape::Vector(state.size) {
                    return Err(format!(
                        "{id} state shape {} but state size {}",
                        node.shape, state.size
                    ));
                }
                Dep::State
            }
            Op::Param(param) => {
                let declared = layer
                    .params
                    .get(param.0 as usize)
                    .ok_or_else(|| format!("{id} reads missing {param}"))?;
                let matches = match node.shape {
                    Shape::Vector(len) => declared.shape == [len],
                    Shape::Matrix(rows, cols) => declared.shape == [rows, cols],
                    Shape::Scalar => false,
                };
                if !matches {
                    return Err(format!(
                        "{id} has shape {} but {param} is {:?}",
                        node.shape, declared.shape
                    ));
                }
                // A per-step parameter is another value at each step.
                match declared.steps {
                    Some(_) => Dep::State,
                    None => Dep::Const,
                }
            }
            Op::Literal(_) => Dep::Const,
            _ => operands
                .iter()
                .map(|operand| step.nodes[operand.index()].dep)
                .max()
                .unwrap_or(Dep::Const),
        };
        if node.dep != expected_dep {
            return Err(format!(
                "{id} has dependence {} but its operands give {expected_dep}",
                node.dep
            ));
        }
        of_params.push(match node.op {
            Op::Param(_) | Op::Literal(_) => true,
            Op::Input(_) | Op::State(_) | Op::Seed(_) => false,
            _ => operands.iter().all(|operand| of_params[operand.index()]),
        });
        // A matrix of per-step parameters is `State`: another at each step.
        if matches!(node.shape, Shape::Matrix(..)) && !of_params[idx] {
            return Err(format!("{id} is a matrix that depends on {}", node.dep));
        }
        match &node.op {
            Op::MatVec(matrix, vector) => match (shape_of(*matrix), shape_of(*vector)) {
                (Shape::Matrix(rows, cols), Shape::Vector(len))
                    if cols == len && node.shape == Shape::Vector(rows) => {}
                (lhs, rhs) => {
                    return Err(format!(
                        "{id}: matvec of {lhs} and {rhs} gives {}",
                        node.shape
                    ))
                }
            },
            Op::Transpose(inner) => match shape_of(*inner) {
                Shape::Matrix(rows, cols) if node.shape == Shape::Matrix(cols, rows) => {}
                other => return Err(format!("{id}: transpose of {other} gives {}", node.shape)),
            },
            Op::Slice(inner, start, end) => {
                let (len, expected) = match shape_of(*inner) {
                    Shape::Matrix(rows, cols) => {
                        (rows, Shape::Matrix(end.saturating_sub(*start), cols))
                    }
                    Shape::Vector(len) => (len, Shape::Vector(end.saturating_sub(*start))),
                    Shape::Scalar => return Err(format!("{id} slices a scalar")),
                };
                if !(start < end && *end <= len) || node.shape != expected {
                    return Err(format!(
                        "{id}: slice {start}..{end} of length {len} gives {}",
                        node.shape
                    ));
                }
            }
            Op::Row(inner, index) => match shape_of(*inner) {
                Shape::Matrix(rows, cols) if *index < rows && node.shape == Shape::Vector(cols) => {
                }
                other => return Err(format!("{id}: row {index} of {other} gives {}", node.shape)),
            },
            Op::Reduce(_, inner) => match shape_of(*inner) {
                Shape::Vector(_) if node.shape == Shape::Vector(1) => {}
                other => return Err(format!("{id}: reduction of {other} gives {}", node.shape)),
            },
            Op::Unary(_, _) | Op::Binary(_, _, _) | Op::Clip(_, _, _) => {
                for operand in &operands {
                    let shape = shape_of(*operand);
                    if !(shape == Shape::Scalar || shape == Shape::Vector(1) || shape == node.shape)
                    {
                        return Err(format!(
                            "{id} of shape {} has an operand of shape {shape}",
                            node.shape
                        ));
                    }
                }
            }
            Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Literal(_) => {}
            Op::Seed(_)
            | Op::Outer(..)
            | Op::SumBatch(_)
            | Op::SumElems(_)
            | Op::Place(..)
            | Op::PlaceRow(..) => {
                return Err(format!("{id} is a backward operation in a forward step"))
            }
        }
    }
    if step.updates.len() != layer.states.len() {
        return Err(format!(
            "{} updates for {} states",
            step.updates.len(),
            layer.states.len()
        ));
    }
    for (update, state) in step.updates.iter().zip(&layer.states) {
        let shape = step.nodes.get(update.index()).map(|node| node.shape);
        if shape != Some(Shape::Vector(state.size)) {
            return Err(format!(
                "update of `{}` has shape {shape:?}, state size {}",
                state.name, state.size
            ));
        }
    }
    let output_shape = step.nodes.get(step.output.index()).map(|node| node.shape);
    if output_shape != Some(Shape::Vector(layer.output_size)) {
        return Err(format!(
            "output has shape {output_shape:?}, layer output size {}",
            layer.output_size
        ));
    }
    Ok(())
}

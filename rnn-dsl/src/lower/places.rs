//! Pass 1: where each value lives ([`Place`]), and whether its rows are
//! per valid step (packed) or per sequence.

use crate::ir::{self, Dep, Op, Shape, ValueId};
use crate::lower::{view_root, Place};
use crate::ops::Binary;

/// The place of each node and whether its rows are packed, before
/// [`demote_hoisted_elementwise`].
pub(super) fn place(layer: &ir::Layer) -> (Vec<Place>, Vec<bool>) {
    let step = &layer.step;
    let mut places: Vec<Place> = Vec::with_capacity(step.nodes.len());
    let mut packed_rows: Vec<bool> = Vec::with_capacity(step.nodes.len());
    for node in &step.nodes {
        let operands = node.op.operands();
        let any_packed = operands.iter().any(|id| packed_rows[id.index()]);
        let any_per_sequence = operands
            .iter()
            .any(|id: &ValueId| !places[id.index()].is_const() && !packed_rows[id.index()]);
        let (place, packed) = match &node.op {
            Op::Literal(_) if node.shape == Shape::Scalar => (Place::Literal, false),
            Op::Literal(_) => (Place::Const, false),
            Op::Param(_) => (Place::Param, false),
            Op::Input(k) => (Place::Input, layer.inputs[*k].per_step),
            Op::State(_) => (Place::State, false),
            Op::Row(..) => (Place::Const, false),
            Op::Slice(base, _, _) => {
                let base_place: Place = places[base.index()];
                if base_place.is_const() {
                    (Place::Const, false)
                } else {
                    (Place::View, packed_rows[base.index()])
                }
            }
            // A value of per-step parameters and constants alone (a
            // per-step `W^T`): its dependence is `State`, but it is
            // computed when the model is built, once per step's copy of
            // the weights.
            _ if node.dep == Dep::State
                && !operands.is_empty()
                && operands.iter().all(|id| places[id.index()].is_const()) =>
            {
                (Place::Const, false)
            }
            _ => match node.dep {
                Dep::Const => (Place::Const, false),
                Dep::Context => (Place::Context, false),
                // Input-only values that also read a context, or a value
                // computed per sequence, cannot be laid out per step.
                Dep::Input if any_packed && !any_per_sequence => (Place::Hoisted, true),
                Dep::Input | Dep::State => (Place::Step, false),
            },
        };
        places.push(place);
        packed_rows.push(packed);
    }
    (places, packed_rows)
}

/// Moves into the step the hoisted elementwise values that only the step's
/// elementwise work reads (a GRU's `W_ir x + b_ir` plus `b_hr`): computed
/// ahead, each would cost a pass over every valid step writing a buffer
/// that the step then reads back; computed in the step's fused pass, it is
/// a few operations in registers on rows the pass reads anyway. The number
/// of operations is the same (one per valid step and sequence either way).
/// Kept ahead: sums with a product (they fold into it, [`folds`]), values a
/// matrix product reads, values a step product accumulates onto, values of
/// the input itself, and the step's output and updates.
pub(super) fn demote_hoisted_elementwise(
    layer: &ir::Layer,
    places: &mut [Place],
    packed_rows: &mut [bool],
) {
    let nodes = &layer.step.nodes;
    let uses = layer.step.uses();
    let elementwise = |op: &Op| matches!(op, Op::Unary(..) | Op::Binary(..) | Op::Clip(..));
    let is_product = |id: ValueId| matches!(nodes[id.index()].op, Op::MatVec(..));
    let results: Vec<ValueId> = std::iter::once(layer.step.output)
        .chain(layer.step.updates.iter().copied())
        .collect();
    for idx in (0..nodes.len()).rev() {
        let id = ValueId(idx as u32);
        let node = &nodes[idx];
        if places[idx] != Place::Hoisted || !elementwise(&node.op) {
            continue;
        }
        // A value of the input itself stays ahead, so that a backward
        // direction can still gather its input per chunk
        // ([`LayerPlan::gathers_inputs`]) rather than reverse all of it.
        let reads_input = |operand: ValueId| {
            let root = view_root(layer, places, operand);
            matches!(nodes[root.index()].op, Op::Input(k) if layer.inputs[k].per_step)
        };
        let operands = node.op.operands();
        if operands.iter().any(|o| is_product(*o) || reads_input(*o)) {
            continue;
        }
        // Its readers, through views; and the views, which move with it.
        let mut views = Vec::new();
        let mut readers = Vec::new();
        let mut frontier = vec![id];
        while let Some(value) = frontier.pop() {
            if results.contains(&value) {
                readers.push(None);
            }
            for (user, user_node) in nodes.iter().enumerate() {
                if !user_node.op.operands().contains(&value) {
                    continue;
                }
                if places[user] == Place::View {
                    views.push(user);
                    frontier.push(ValueId(user as u32));
                } else {
                    readers.push(Some(user));
                }
            }
        }
        let step_elementwise = |user: &Option<usize>| {
            let Some(user) = *user else { return false };
            let user_node = &nodes[user];
            // `value + W h` accumulates the product onto the hoisted rows.
            let accumulated = match user_node.op {
                Op::Binary(Binary::Add, a, b) => [a, b].into_iter().any(|other| {
                    is_product(other)
                        && places[other.index()] == Place::Step
                        && uses[other.index()] == 1
                        && nodes[other.index()].shape == user_node.shape
                }),
                _ => false,
            };
            places[user] == Place::Step && elementwise(&user_node.op) && !accumulated
        };
        if readers.is_empty() || !readers.iter().all(step_elementwise) {
            continue;
        }
        places[idx] = Place::Step;
        packed_rows[idx] = false;
        for view in views {
            packed_rows[view] = false;
        }
    }
}

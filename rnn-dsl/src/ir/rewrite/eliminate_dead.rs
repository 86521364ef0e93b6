//! Nodes that no update and no output reads are dropped, and so are the
//! parameters only they read.
//!
//! Input: a layer whose step the build and the other rewrites may have
//! left with unread nodes (a `let` nothing uses, the operands of a folded
//! number, merged products' former matrix slices, regrouped sums). Output:
//! the layer with only the nodes an update or the output reads (directly
//! or through other nodes), in the same order, and only the parameters
//! those read, in the same order, their ids renumbered.
//!
//! After: every node is read, and every parameter the layer keeps is read.
//!
//! Why: emitted code computes every node at every step, and the layer's
//! parameter list should name exactly the weights its step reads.

use crate::ir::{Layer, Node, Op, ParamId, Step, ValueId};

/// `layer` without the nodes nothing reads and the parameters only they
/// read.
pub(in crate::ir) fn eliminate_dead(layer: Layer) -> Layer {
    let (step, used_params) = eliminate_dead_nodes(layer.step, layer.params.len());
    let params = layer
        .params
        .into_iter()
        .zip(&used_params)
        .filter(|(_, used)| **used)
        .map(|(param, _)| param)
        .collect();
    Layer {
        step,
        params,
        ..layer
    }
}

/// The live part of `step`, and which of its layer's `n_params` parameters
/// it still reads.
fn eliminate_dead_nodes(step: Step, n_params: usize) -> (Step, Vec<bool>) {
    let mut live = vec![false; step.nodes.len()];
    for root in step.updates.iter().chain(std::iter::once(&step.output)) {
        live[root.index()] = true;
    }
    for idx in (0..step.nodes.len()).rev() {
        if live[idx] {
            for operand in step.nodes[idx].op.operands() {
                live[operand.index()] = true;
            }
        }
    }
    let mut used_params = vec![false; n_params];
    for (node, alive) in step.nodes.iter().zip(&live) {
        if let (Op::Param(param), true) = (&node.op, alive) {
            used_params[param.0 as usize] = true;
        }
    }
    let mut param_map = vec![None; n_params];
    let mut next = 0;
    for (idx, used) in used_params.iter().enumerate() {
        if *used {
            param_map[idx] = Some(ParamId(next));
            next += 1;
        }
    }
    let mut value_map: Vec<Option<ValueId>> = vec![None; step.nodes.len()];
    let mut nodes = Vec::new();
    let remap = |id: ValueId, value_map: &[Option<ValueId>]| {
        value_map[id.index()].expect("operands are live")
    };
    for (idx, node) in step.nodes.into_iter().enumerate() {
        if !live[idx] {
            continue;
        }
        let op = match node.op {
            Op::Param(param) => Op::Param(param_map[param.0 as usize].expect("live parameter")),
            op => super::map_operands(op, |a| remap(a, &value_map)),
        };
        nodes.push(Node { op, ..node });
        value_map[idx] = Some(ValueId((nodes.len() - 1) as u32));
    }
    let updates = step
        .updates
        .iter()
        .map(|id| remap(*id, &value_map))
        .collect();
    let output = remap(step.output, &value_map);
    (
        Step {
            nodes,
            updates,
            output,
        },
        used_params,
    )
}

//! A state whose old value the step never reads is not a state: it is a
//! value of each step, with no initial and no final value.
//!
//! Input: a layer after `eliminate_dead`, so that every node left is read
//! and an `Op::State(k)` among them means the step really reads state `k`.
//! Output: the layer without the states no node reads, `Op::State`
//! indices and updates renumbered, and without the nodes and parameters
//! only a dropped state's update read (its update was a root).
//!
//! After: every state is read by the step. A cell that reads none of its
//! states (`linear`, a head written `y = weight @ x + bias`) gives a layer
//! with no states: nothing to initialise, carry or return, and no
//! initial-state gradient.
//!
//! Why: a head is a cell whose "state" is its per-step output; asking
//! users for its initial value, or returning its last value as `y_n`,
//! would make the model's API carry what PyTorch's `nn.Linear` has not.

use crate::ir::{Layer, Node, Op, Step};

use super::eliminate_dead;

/// `layer` without the states its step does not read.
pub(in crate::ir) fn drop_unread_states(layer: Layer) -> Layer {
    let mut read = vec![false; layer.states.len()];
    for node in &layer.step.nodes {
        if let Op::State(k) = node.op {
            read[k] = true;
        }
    }
    if read.iter().all(|&read| read) {
        return layer;
    }
    let mut new_index = vec![None; read.len()];
    let mut next = 0;
    for (k, &read) in read.iter().enumerate() {
        if read {
            new_index[k] = Some(next);
            next += 1;
        }
    }
    let nodes = layer
        .step
        .nodes
        .into_iter()
        .map(|node| match node.op {
            Op::State(k) => Node {
                op: Op::State(new_index[k].expect("a read state is kept")),
                ..node
            },
            _ => node,
        })
        .collect();
    let keep = |k: &usize| read[*k];
    let updates = (0..read.len())
        .filter(keep)
        .map(|k| layer.step.updates[k])
        .collect();
    let states = layer
        .states
        .into_iter()
        .enumerate()
        .filter(|(k, _)| keep(k))
        .map(|(_, state)| state)
        .collect();
    eliminate_dead(Layer {
        states,
        step: Step {
            nodes,
            updates,
            output: layer.step.output,
        },
        ..layer
    })
}

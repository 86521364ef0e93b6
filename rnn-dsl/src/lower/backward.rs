//! The plan of a layer's training code: when each value of its forward and
//! backward steps is computed, and what the forward keeps for the backward.
//!
//! Input: a layer and its backward step ([`ir::differentiate`]). Output: a
//! [`BackwardPlan`]. Training code runs over packed rows (sequences sorted
//! by length, time-major, as `rnn_runtime`'s `Packing`): at step `t` the
//! running sequences are the first `n_t` rows, so a finished sequence takes
//! no part in a step, in either direction, by construction.
//!
//! Each value is of one [`Kind`]:
//! - `Invariant`: parameters, numbers, contexts and what only they give,
//!   computed once per call (per sequence for a context);
//! - `Hoisted`: what reads only the step's input and constants, computed
//!   for every step at once (one large product for `W_ih @ x`); the
//!   forward keeps those that per-step work reads, so the backward does
//!   not recompute them;
//! - `Step`: what reads a state or a gradient, computed step by step
//!   (the backward recomputes its forward values from the kept states);
//! - `Sum`: a parameter gradient's share summed over rows (`sum_batch`,
//!   `outer`). An `outer` whose operands exist for every step is one large
//!   product after the loop, `Gᵀ V` over all rows of all steps, instead of
//!   a small one per step;
//! - `After`: what is computed from sums: the rest of a parameter's
//!   gradient, once after the loop. Everything downstream of a sum is
//!   linear in it with coefficients that do not change from step to step
//!   (`ir/grad.rs`), so summing first is exact.

use crate::ir::{self, Backward, Dep, Op, Shape, ValueId};

/// When a value of a layer's training code is computed; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Once per call, before the steps.
    Invariant,
    /// Once per call over the rows of every step.
    Hoisted,
    /// At every step, over its running rows.
    Step,
    /// Accumulated over steps.
    Sum,
    /// Once per call, after the steps.
    After,
}

/// The training plan of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct BackwardPlan {
    /// The backward step.
    pub backward: Backward,
    /// The kind of every node of `backward.nodes`.
    pub kinds: Vec<Kind>,
    /// Step values kept for every step (`[rows, n]`), because a
    /// large product after the loop reads them.
    pub all_steps: Vec<bool>,
    /// The sums formed after the loop as one large product.
    pub deferred: Vec<bool>,
    /// Hoisted forward values the forward keeps for the backward.
    pub kept: Vec<ValueId>,
    /// Forward step values the forward keeps for every step (rows of each
    /// step), because the backward reads them: the backward recomputes
    /// nothing of the forward step.
    pub kept_steps: Vec<ValueId>,
    /// A slice of a vector that is read in place, with no buffer of its
    /// own: `(base, start)`, the base's columns from `start`.
    pub views: Vec<Option<(ValueId, usize)>>,
    /// A step value computed straight into columns of another's buffer:
    /// `(root, start)`. The root is a sum of placed pieces that do not
    /// overlap (the gradient of a vector sliced into gates): a
    /// concatenation, written piece by piece where it lies.
    pub aliases: Vec<Option<(ValueId, usize)>>,
    /// Nodes with no work of their own: the places and sums of a
    /// concatenation (and its root), and views.
    pub free: Vec<bool>,
    /// Floats the tape holds per running row of a step, for one direction:
    /// the layer's input, the states before the step, the kept values.
    pub tape_floats_per_row: usize,
}

impl BackwardPlan {
    /// The kind of a value.
    pub fn kind(&self, id: ValueId) -> Kind {
        self.kinds[id.index()]
    }

    /// Whether a value is one per sequence (`[B, n]` rows) among the
    /// invariants: a context or what a context gives.
    pub fn per_sequence(&self, id: ValueId) -> bool {
        self.backward.node(id).dep == Dep::Context
    }
}

/// The training plan of `layer`.
pub fn plan_backward(layer: &ir::Layer) -> BackwardPlan {
    let backward = ir::differentiate(layer);
    debug_assert_eq!(ir::verify_backward(layer, &backward), Ok(()));
    let forward = backward.forward;
    let mut kinds: Vec<Kind> = Vec::with_capacity(backward.nodes.len());
    for (idx, node) in backward.nodes.iter().enumerate() {
        let operands = node.op.operands();
        let kind_of = |id: &ValueId| kinds[id.index()];
        let kind = if idx < forward {
            match &node.op {
                Op::Input(k) if layer.inputs[*k].per_step => Kind::Hoisted,
                Op::State(_) => Kind::Step,
                _ => match node.dep {
                    Dep::Const | Dep::Context => Kind::Invariant,
                    Dep::Input
                        if operands.iter().all(|operand| {
                            kind_of(operand) == Kind::Hoisted
                                || backward.node(*operand).dep == Dep::Const
                        }) =>
                    {
                        Kind::Hoisted
                    }
                    Dep::Input | Dep::State => Kind::Step,
                },
            }
        } else {
            match &node.op {
                Op::Seed(_) => Kind::Step,
                Op::SumBatch(_) | Op::Outer(..)
                    if operands
                        .iter()
                        .any(|operand| kind_of(operand) == Kind::Step) =>
                {
                    Kind::Sum
                }
                _ if operands
                    .iter()
                    .any(|operand| matches!(kind_of(operand), Kind::Sum | Kind::After)) =>
                {
                    Kind::After
                }
                _ if operands
                    .iter()
                    .any(|operand| matches!(kind_of(operand), Kind::Step | Kind::Hoisted)) =>
                {
                    Kind::Step
                }
                _ => Kind::Invariant,
            }
        };
        kinds.push(kind);
    }
    // An outer product whose operands both exist for every step is formed
    // after the loop; a step value it reads is then kept for every step.
    let mut all_steps = vec![false; backward.nodes.len()];
    let mut deferred = vec![false; backward.nodes.len()];
    for (idx, node) in backward.nodes.iter().enumerate() {
        if let Op::Outer(g, v) = node.op {
            if kinds[idx] == Kind::Sum
                && [g, v]
                    .iter()
                    .all(|operand| matches!(kinds[operand.index()], Kind::Step | Kind::Hoisted))
            {
                deferred[idx] = true;
                for operand in [g, v] {
                    if kinds[operand.index()] == Kind::Step
                        && !matches!(backward.node(operand).op, Op::State(_))
                    {
                        all_steps[operand.index()] = true;
                    }
                }
            }
        }
    }
    // Slices of step and hoisted vectors are views of their base.
    let mut views: Vec<Option<(ValueId, usize)>> = vec![None; backward.nodes.len()];
    for (idx, node) in backward.nodes.iter().enumerate() {
        if let (Op::Slice(inner, start, _), Shape::Vector(_)) = (&node.op, node.shape) {
            if matches!(kinds[idx], Kind::Step | Kind::Hoisted)
                && kinds[inner.index()] == kinds[idx]
                && !matches!(
                    backward.node(*inner).op,
                    Op::Input(_) | Op::State(_) | Op::Seed(_)
                )
            {
                views[idx] = Some(match views[inner.index()] {
                    Some((base, offset)) => (base, offset + start),
                    None => (*inner, *start),
                });
            }
        }
    }
    let base = |id: ValueId| views[id.index()].map_or(id, |(base, _)| base);

    // The hoisted values the backward reads are kept (a per-step input is
    // the layer's input, kept anyway).
    let mut kept: Vec<ValueId> = Vec::new();
    for node in &backward.nodes[forward..] {
        for operand in node.op.operands() {
            let source = base(operand);
            if kinds[source.index()] == Kind::Hoisted
                && !matches!(backward.node(source).op, Op::Input(_))
                && !kept.contains(&source)
            {
                kept.push(source);
            }
        }
    }
    kept.sort();

    // The forward step values the backward reads are kept, so it
    // recomputes none of them.
    let mut kept_steps: Vec<ValueId> = Vec::new();
    for node in &backward.nodes[forward..] {
        for operand in node.op.operands() {
            let source = base(operand);
            if source.index() < forward
                && kinds[source.index()] == Kind::Step
                && !matches!(backward.node(source).op, Op::State(_))
                && !kept_steps.contains(&source)
            {
                kept_steps.push(source);
            }
        }
    }
    kept_steps.sort();

    // Concatenations: a sum of placed pieces that do not overlap.
    let uses = use_counts(&backward);
    let mut aliases: Vec<Option<(ValueId, usize)>> = vec![None; backward.nodes.len()];
    let mut free = vec![false; backward.nodes.len()];
    for (idx, view) in views.iter().enumerate() {
        free[idx] = view.is_some();
    }
    for idx in (forward..backward.nodes.len()).rev() {
        let root = ValueId(idx as u32);
        if free[idx] || aliases[idx].is_some() || kinds[idx] != Kind::Step {
            continue;
        }
        let Some(pieces) = concatenation(&backward, &kinds, &uses, root) else {
            continue;
        };
        let fits = pieces.iter().all(|(_, inner, _)| {
            let source = backward.node(*inner);
            inner.index() >= forward
                && kinds[inner.index()] == Kind::Step
                && aliases[inner.index()].is_none()
                && !free[inner.index()]
                && !matches!(source.op, Op::Seed(_))
        }) && pieces.iter().enumerate().all(|(a, (_, inner_a, _))| {
            pieces[a + 1..]
                .iter()
                .all(|(_, inner_b, _)| inner_a != inner_b)
        }) && pieces.iter().all(|(_, inner, _)| {
            // A piece computed from another piece would read the buffer it writes.
            backward
                .node(*inner)
                .op
                .operands()
                .iter()
                .all(|operand| pieces.iter().all(|(_, other, _)| other != operand))
        });
        if !fits {
            continue;
        }
        for (place, inner, start) in &pieces {
            aliases[inner.index()] = Some((root, *start));
            free[place.index()] = true;
            if all_steps[inner.index()] {
                all_steps[root.index()] = true;
            }
        }
        // The sums between the pieces and the root, and the root itself.
        mark_sums(&backward, root, &mut free);
    }
    // A piece of an all-steps root is stored for every step too.
    for idx in 0..backward.nodes.len() {
        if let Some((root, _)) = aliases[idx] {
            all_steps[idx] = all_steps[root.index()];
        }
    }

    let width = |id: &ValueId| match backward.node(*id).shape {
        Shape::Vector(len) => len,
        Shape::Scalar | Shape::Matrix(..) => 0,
    };
    let input_floats: usize = layer
        .inputs
        .iter()
        .filter(|input| input.per_step)
        .map(|input| input.size)
        .sum();
    let state_floats: usize = layer.states.iter().map(|state| state.size).sum();
    let kept_floats: usize = kept.iter().chain(&kept_steps).map(width).sum();
    BackwardPlan {
        tape_floats_per_row: input_floats + state_floats + kept_floats,
        backward,
        kinds,
        all_steps,
        deferred,
        kept,
        kept_steps,
        views,
        aliases,
        free,
    }
}

/// How many times each node is read: as an operand, or as a result.
fn use_counts(backward: &Backward) -> Vec<usize> {
    let mut uses = vec![0usize; backward.nodes.len()];
    for node in &backward.nodes {
        for operand in node.op.operands() {
            uses[operand.index()] += 1;
        }
    }
    let results = backward
        .states
        .iter()
        .chain(&backward.inputs)
        .chain(&backward.params);
    for id in results.flatten() {
        uses[id.index()] += 1;
    }
    uses
}

/// The pieces `(place, inner, start)` of a concatenation rooted at `root`:
/// a `Place`, or a sum of places and of such sums read only by the sum
/// above them, whose column ranges do not overlap.
fn concatenation(
    backward: &Backward,
    kinds: &[Kind],
    uses: &[usize],
    root: ValueId,
) -> Option<Vec<(ValueId, ValueId, usize)>> {
    fn collect(
        backward: &Backward,
        kinds: &[Kind],
        uses: &[usize],
        id: ValueId,
        is_root: bool,
        pieces: &mut Vec<(ValueId, ValueId, usize)>,
    ) -> bool {
        if !is_root && uses[id.index()] != 1 {
            return false;
        }
        if kinds[id.index()] != Kind::Step {
            return false;
        }
        match backward.node(id).op {
            Op::Place(inner, start, _) => {
                if let Shape::Vector(_) = backward.node(id).shape {
                    pieces.push((id, inner, start));
                    true
                } else {
                    false
                }
            }
            Op::Binary(crate::ops::Binary::Add, a, b) => {
                backward.node(a).shape == backward.node(id).shape
                    && backward.node(b).shape == backward.node(id).shape
                    && collect(backward, kinds, uses, a, false, pieces)
                    && collect(backward, kinds, uses, b, false, pieces)
            }
            _ => false,
        }
    }
    let mut pieces = Vec::new();
    if !collect(backward, kinds, uses, root, true, &mut pieces) {
        return None;
    }
    let width = |id: ValueId| match backward.node(id).shape {
        Shape::Vector(len) => len,
        _ => 0,
    };
    let mut ranges: Vec<(usize, usize)> = pieces
        .iter()
        .map(|(_, inner, start)| (*start, start + width(*inner)))
        .collect();
    ranges.sort();
    if ranges.windows(2).any(|pair| pair[0].1 > pair[1].0) {
        return None;
    }
    Some(pieces)
}

/// Marks the sums of a concatenation, from its root down to its places,
/// as having no work of their own.
fn mark_sums(backward: &Backward, id: ValueId, free: &mut [bool]) {
    if let Op::Binary(crate::ops::Binary::Add, a, b) = backward.node(id).op {
        free[id.index()] = true;
        mark_sums(backward, a, free);
        mark_sums(backward, b, free);
    } else if let Op::Place(..) = backward.node(id).op {
        free[id.index()] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceFile;

    fn plan(text: &str) -> BackwardPlan {
        let compiled = crate::compile(SourceFile::new("t.rnn", text)).expect("valid");
        plan_backward(&compiled.model.networks[0].layers[0])
    }

    #[test]
    fn lstm_weight_gradients_are_large_products_after_the_loop() {
        let plan = plan("network N { input x: [5]; layer l = lstm(hidden = 8); unroll dynamic; }");
        let outers: Vec<usize> = plan
            .backward
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| matches!(node.op, Op::Outer(..)))
            .map(|(idx, _)| idx)
            .collect();
        assert_eq!(outers.len(), 2, "W_ih and W_hh");
        assert!(outers.iter().all(|idx| plan.deferred[*idx]));
        // The tape holds, per running row: x (5), h and c before the step
        // (8 + 8), and the five step values the backward reads: the gates
        // i, f, o, the candidate g and tanh(c') (5 × 8). Nothing hoisted:
        // the backward reads no input projection.
        assert_eq!(plan.tape_floats_per_row, 5 + 16 + 40);
        assert_eq!(plan.kept_steps.len(), 5);
        assert!(plan.kept.is_empty());
        // Nothing of the backward is computed from a parameter gradient
        // before the loop ends.
        for (idx, kind) in plan.kinds.iter().enumerate() {
            if *kind == Kind::After {
                assert!(plan.backward.node(ValueId(idx as u32)).dep == Dep::State);
            }
        }
    }
}

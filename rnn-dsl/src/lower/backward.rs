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
//! - `Invariant`: parameters, numbers, contexts and what only they give:
//!   what reads a context once per call (per sequence), the rest once,
//!   when the model is built;
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
//! - `Rows`: a backward value the recurrence does not read (the input
//!   gradient `G W_ih`), computed after the loop over the rows of every
//!   step at once, as `Hoisted` values are before it;
//! - `After`: what is computed from sums: the rest of a parameter's
//!   gradient, once after the loop. Everything downstream of a sum is
//!   linear in it with coefficients that do not change from step to step
//!   (`ir/grad.rs`), so summing first is exact.
//!
//! A layer with per-step parameters (one copy of the weights per step)
//! differs in two ways. Its values of per-step parameters and constants
//! alone (a per-step `W^T`) are `Invariant` like the tied ones, computed
//! when the model is built, once per step's copy ([`BackwardPlan::consts`]).
//! And the gradient of a per-step parameter is one per step, not a sum
//! over steps: the sums and after-the-loop values it is made of are formed
//! at each step, from that step's rows alone
//! ([`BackwardPlan::per_step_grads`]), and nothing is computed after the
//! loop over every row at once (no `Rows`).

use crate::ir::{self, Backward, Dep, Op, Seed, Shape, ValueId};

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
    /// Once per call after the steps, over the rows of every step.
    Rows,
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
    /// The sums formed after the loop over every row at once: a large
    /// product, or a sum of rows stored for every step.
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
    /// Runs of consecutive elementwise step statements of one width
    /// computed as one pass over each row (forward runs for the training
    /// forward, backward runs for the backward); see [`fused_runs`].
    pub fused: Vec<Vec<ValueId>>,
    /// Values of a fused run read by nothing outside it: never stored.
    pub local: Vec<bool>,
    /// A forward step product `M = W h` accumulated onto the rows of the
    /// step in a hoisted value `H` (`Some(H)`), where the step's sum
    /// `A = H + M` is the only reader of either: `A` is then a view of
    /// `H`'s rows (as the inference code accumulates the recurrent
    /// product onto the input projection), with no add and no buffer.
    pub onto: Vec<Option<ValueId>>,
    /// A step value written straight into the buffer that carries state
    /// `k` to the next step (the forward's new state, the backward's
    /// gradient of the state before the step) instead of a buffer of its
    /// own and a copy: `Some(k)`. Only where every read of the value it
    /// replaces comes first; see [`in_place_results`].
    pub in_place: Vec<Option<usize>>,
    /// The values of parameters and constants alone, computed when the
    /// model is built: those of tied parameters once, those that read a
    /// per-step parameter once per step's copy.
    pub consts: Vec<bool>,
    /// The parameters (by their index in the layer) each value reads,
    /// directly or through its operands, in order: a model's update
    /// rebuilds a constant only if one of them changed, and the steps of
    /// a layer with per-step parameters share the constants that read
    /// tied parameters alone.
    pub param_reads: Vec<Vec<usize>>,
    /// The `Sum` and `After` values formed anew at each step, because a
    /// per-step parameter's gradient is made of them (and what reads
    /// them): the sums start from zero at each step.
    pub per_step_grads: Vec<bool>,
    /// A per-step parameter's gradient that is one sum read by nothing
    /// else: written straight into step `t`'s copy of the gradient, with
    /// no buffer, reset or copy of its own.
    pub into_copy: Vec<bool>,
    /// Floats the tape holds per running row of a step, for one direction:
    /// the layer's input, the states before the step, the kept values.
    pub tape_floats_per_row: usize,
}

impl BackwardPlan {
    /// The parameters (by their index in `layer`) whose gradient is a
    /// per-step parameter's copies formed at each step. Every step the
    /// backward runs writes its copy whole (the first part of the batch
    /// over whatever the copy held), so the array needs zeros only in the
    /// copies of steps that did not run, and can be a gradient given back
    /// by the caller (`Workspace::step_copies`, the generated
    /// `recycle_grads`).
    pub fn step_copy_params(&self, layer: &ir::Layer) -> Vec<usize> {
        layer
            .params
            .iter()
            .zip(&self.backward.params)
            .enumerate()
            .filter(|(_, (param, result))| {
                param.steps.is_some() && result.is_some_and(|id| self.per_step_grads[id.index()])
            })
            .map(|(k, _)| k)
            .collect()
    }

    /// The kind of a value.
    pub fn kind(&self, id: ValueId) -> Kind {
        self.kinds[id.index()]
    }

    /// The outer products formed after the loop, grouped by their left
    /// operand (the gradient rows `G`, packed once per group), in order.
    pub fn deferred_outers(&self) -> Vec<(ValueId, Vec<ValueId>)> {
        let mut groups: Vec<(ValueId, Vec<ValueId>)> = Vec::new();
        for (idx, node) in self.backward.nodes.iter().enumerate() {
            if let (Op::Outer(g, _), true) = (&node.op, self.deferred[idx]) {
                let id = ValueId(idx as u32);
                match groups.iter_mut().find(|(left, _)| left == g) {
                    Some((_, outers)) => outers.push(id),
                    None => groups.push((*g, vec![id])),
                }
            }
        }
        groups
    }

    /// The states whose copy into the tape (the state before the step) the
    /// training forward's run `run` makes, block by block before it
    /// overwrites them: those it writes in place, of the run's width.
    pub fn tape_copies(&self, layer: &ir::Layer, run: &[ValueId]) -> Vec<usize> {
        let width = |id: ValueId| match self.backward.node(id).shape {
            Shape::Vector(len) => len,
            Shape::Scalar | Shape::Matrix(..) => 0,
        };
        run.iter()
            .filter(|id| id.index() < self.backward.forward)
            .filter_map(|id| self.in_place[id.index()])
            .filter(|k| layer.states[*k].size == width(run[0]))
            .collect()
    }

    /// Whether the training forward's fused run that computes the step's
    /// output `output` also stores it in the layer's output rows (rather
    /// than a copy after the run).
    pub fn run_stores_output(&self, output: ValueId) -> bool {
        self.kind(output) == Kind::Step && self.fused.iter().any(|run| run.contains(&output))
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
    let consts = param_values(&backward);
    let param_reads = param_reads(&backward);
    let mut kinds: Vec<Kind> = Vec::with_capacity(backward.nodes.len());
    for (idx, node) in backward.nodes.iter().enumerate() {
        let operands = node.op.operands();
        let kind_of = |id: &ValueId| kinds[id.index()];
        let kind = if idx < forward {
            match &node.op {
                _ if consts[idx] => Kind::Invariant,
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
                _ if consts[idx] || node.dep != Dep::State => Kind::Invariant,
                // A per-step parameter's value with a context's: per step.
                _ => Kind::Step,
            }
        };
        kinds.push(kind);
    }
    let per_step_grads = per_step_gradients(layer, &backward, &kinds);
    // An outer product whose operands both exist for every step is formed
    // after the loop; a step value it reads is then kept for every step.
    let mut all_steps = vec![false; backward.nodes.len()];
    let mut deferred = vec![false; backward.nodes.len()];
    for (idx, node) in backward.nodes.iter().enumerate() {
        if let Op::Outer(g, v) = node.op {
            if kinds[idx] == Kind::Sum
                && !per_step_grads[idx]
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
    // A per-step product added to a hoisted value, each read only by the
    // sum, accumulates onto the hoisted rows: the sum is a view of them.
    let uses = use_counts(&backward);
    let mut views: Vec<Option<(ValueId, usize)>> = vec![None; backward.nodes.len()];
    let mut onto: Vec<Option<ValueId>> = vec![None; backward.nodes.len()];
    for (idx, node) in backward.nodes[..forward].iter().enumerate() {
        let Op::Binary(crate::ops::Binary::Add, a, b) = node.op else {
            continue;
        };
        let is_product = |id: ValueId| {
            kinds[id.index()] == Kind::Step && matches!(backward.node(id).op, Op::MatVec(..))
        };
        let is_hoisted = |id: ValueId| {
            kinds[id.index()] == Kind::Hoisted
                && !matches!(backward.node(id).op, Op::Input(_) | Op::Slice(..))
        };
        let pair = match (is_product(a), is_product(b)) {
            (true, _) if is_hoisted(b) => Some((a, b)),
            (_, true) if is_hoisted(a) => Some((b, a)),
            _ => None,
        };
        let Some((product, hoisted)) = pair else {
            continue;
        };
        let results = layer.step.updates.iter().chain([&layer.step.output]);
        let alone = uses[product.index()] == 1
            && uses[hoisted.index()] == 1
            && results
                .clone()
                .all(|result| *result != product && *result != hoisted);
        let same = backward.node(product).shape == node.shape
            && backward.node(hoisted).shape == node.shape;
        if kinds[idx] == Kind::Step && alone && same && !all_steps[product.index()] {
            onto[product.index()] = Some(hoisted);
            views[idx] = Some((hoisted, 0));
        }
    }
    // Slices of step and hoisted vectors are views of their base.
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

    // A sum of rows stored for every step anyway is one sum after the loop.
    for (idx, node) in backward.nodes.iter().enumerate() {
        if let Op::SumBatch(inner) = node.op {
            if kinds[idx] == Kind::Sum && !per_step_grads[idx] && all_steps[base(inner).index()] {
                deferred[idx] = true;
            }
        }
    }
    // A context's gradient is summed per sequence at each step.
    let per_step: Vec<ValueId> = backward
        .inputs
        .iter()
        .zip(&layer.inputs)
        .filter(|(_, input)| !input.per_step)
        .filter_map(|(result, _)| *result)
        .collect();
    // After the loop, one step's copy of the weights is no longer at hand.
    if layer.steps().is_none() {
        rows_after_loop(
            &backward,
            &mut kinds,
            &per_step,
            Layout {
                all_steps: &all_steps,
                views: &views,
                aliases: &aliases,
                free: &free,
            },
        );
    }
    // A sum over a value computed after the loop is formed after it too.
    for (idx, node) in backward.nodes.iter().enumerate() {
        if kinds[idx] == Kind::Sum
            && node
                .op
                .operands()
                .iter()
                .any(|operand| kinds[base(*operand).index()] == Kind::Rows)
        {
            deferred[idx] = true;
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
    let layout = Layout {
        all_steps: &all_steps,
        views: &views,
        aliases: &aliases,
        free: &free,
    };
    let (fused, local) = fused_runs(layer, &backward, &kinds, layout, (&kept, &kept_steps));
    let in_place = in_place_results(
        layer,
        &backward,
        &kinds,
        layout,
        (&kept, &kept_steps),
        &fused,
    );
    let into_copy = straight_into_copies(layer, &backward, &kinds, &per_step_grads);
    BackwardPlan {
        consts,
        param_reads,
        per_step_grads,
        into_copy,
        fused,
        local,
        in_place,
        onto,
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

/// The values of parameters and constants alone: of tied ones (`Const`),
/// and of per-step parameters (their dependence is `State`, but they read
/// no state, input, context or seed).
fn param_values(backward: &Backward) -> Vec<bool> {
    let mut consts: Vec<bool> = Vec::with_capacity(backward.nodes.len());
    for node in &backward.nodes {
        let operands = node.op.operands();
        let value = node.dep == Dep::Const
            || (node.dep == Dep::State
                && match node.op {
                    Op::Param(_) => true,
                    Op::State(_) | Op::Input(_) | Op::Seed(_) => false,
                    _ => !operands.is_empty() && operands.iter().all(|id| consts[id.index()]),
                });
        consts.push(value);
    }
    consts
}

/// The parameters each value of `backward` reads, in order of index.
fn param_reads(backward: &Backward) -> Vec<Vec<usize>> {
    let mut reads: Vec<Vec<usize>> = Vec::with_capacity(backward.nodes.len());
    for node in &backward.nodes {
        let mut mine: Vec<usize> = match node.op {
            Op::Param(param) => vec![param.0 as usize],
            _ => node
                .op
                .operands()
                .iter()
                .flat_map(|id| reads[id.index()].iter().copied())
                .collect(),
        };
        mine.sort_unstable();
        mine.dedup();
        reads.push(mine);
    }
    reads
}

/// The sums and after-the-loop values formed anew at each step: what the
/// gradients of per-step parameters are made of, and what reads those.
fn per_step_gradients(layer: &ir::Layer, backward: &Backward, kinds: &[Kind]) -> Vec<bool> {
    let mut marked = vec![false; backward.nodes.len()];
    let mut pending: Vec<ValueId> = backward
        .params
        .iter()
        .zip(&layer.params)
        .filter(|(_, param)| param.steps.is_some())
        .filter_map(|(result, _)| *result)
        .collect();
    while let Some(id) = pending.pop() {
        if matches!(kinds[id.index()], Kind::Sum | Kind::After) && !marked[id.index()] {
            marked[id.index()] = true;
            pending.extend(backward.node(id).op.operands());
        }
    }
    for idx in backward.forward..backward.nodes.len() {
        if kinds[idx] == Kind::After
            && backward.nodes[idx]
                .op
                .operands()
                .iter()
                .any(|operand| marked[operand.index()])
        {
            marked[idx] = true;
        }
    }
    marked
}

/// Marks `Rows` the backward step values the recurrence does not read
/// (what the state gradients do not depend on), when every operand is
/// available for every row after the loop: an invariant, a hoisted or
/// kept value, a step value stored for every step, another `Rows` value.
/// Views, concatenations and what they are built from stay per step, and
/// so do `per_step` and what they read.
fn rows_after_loop(
    backward: &Backward,
    kinds: &mut [Kind],
    per_step: &[ValueId],
    layout: Layout<'_>,
) {
    let Layout {
        all_steps,
        views,
        aliases,
        free,
    } = layout;
    let forward = backward.forward;
    let mut recurrent = vec![false; backward.nodes.len()];
    let mut pending: Vec<ValueId> = backward.states.iter().flatten().copied().collect();
    pending.extend(per_step);
    while let Some(id) = pending.pop() {
        if recurrent[id.index()] {
            continue;
        }
        recurrent[id.index()] = true;
        pending.extend(backward.node(id).op.operands());
        if let Some((base, _)) = views[id.index()].or(aliases[id.index()]) {
            pending.push(base);
        }
    }
    let viewed: Vec<bool> = (0..backward.nodes.len())
        .map(|idx| {
            views
                .iter()
                .chain(aliases)
                .any(|view| matches!(view, Some((base, _)) if base.index() == idx))
        })
        .collect();
    let candidate = |idx: usize| {
        let node = &backward.nodes[idx];
        kinds[idx] == Kind::Step
            && !recurrent[idx]
            && matches!(
                node.op,
                Op::MatVec(..) | Op::Unary(..) | Op::Binary(..) | Op::Clip(..)
            )
            && !free[idx]
            && aliases[idx].is_none()
            && !viewed[idx]
            && matches!(node.shape, Shape::Vector(_))
    };
    let mut rows: Vec<bool> = (0..backward.nodes.len())
        .map(|idx| idx >= forward && candidate(idx))
        .collect();
    // Drop a candidate an operand of which is not there for every row, or
    // which a step value reads, until none changes.
    loop {
        let mut changed = false;
        for idx in forward..backward.nodes.len() {
            if !rows[idx] {
                continue;
            }
            let node = &backward.nodes[idx];
            let available = node.op.operands().iter().all(|operand| {
                let source = views[operand.index()].map_or(*operand, |(base, _)| base);
                if rows[source.index()] {
                    return true;
                }
                match kinds[source.index()] {
                    Kind::Invariant => backward.node(source).dep != Dep::Context,
                    Kind::Hoisted => true,
                    Kind::Step => {
                        all_steps[source.index()]
                            || source.index() < forward
                            || matches!(backward.node(source).op, Op::Seed(Seed::Output))
                    }
                    Kind::Sum | Kind::After | Kind::Rows => false,
                }
            });
            if !available {
                rows[idx] = false;
                changed = true;
            }
        }
        for (idx, node) in backward.nodes.iter().enumerate().skip(forward) {
            if kinds[idx] == Kind::Step && !rows[idx] {
                for operand in node.op.operands() {
                    if rows[operand.index()] {
                        rows[operand.index()] = false;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (idx, row) in rows.iter().enumerate() {
        if *row {
            kinds[idx] = Kind::Rows;
        }
    }
}

/// Where the step values live, as planned before the later passes.
#[derive(Clone, Copy)]
struct Layout<'a> {
    all_steps: &'a [bool],
    views: &'a [Option<(ValueId, usize)>],
    aliases: &'a [Option<(ValueId, usize)>],
    free: &'a [bool],
}

/// Where a value is stored: its own buffer, or columns from `start` of
/// another's (a view of a slice, a piece of a concatenation).
fn storage(
    views: &[Option<(ValueId, usize)>],
    aliases: &[Option<(ValueId, usize)>],
    id: ValueId,
) -> (ValueId, usize) {
    match views[id.index()].or(aliases[id.index()]) {
        Some((base, start)) => {
            let (root, offset) = storage(views, aliases, base);
            (root, offset + start)
        }
        None => (id, 0),
    }
}

/// The step statements of each phase fused into passes over rows: runs
/// of consecutive elementwise operations (every binary and unary one,
/// `clip`, and the backward's state seeds) on vectors of one width `w`.
/// Each operand is a literal, a value of the run, or `w` columns (or one,
/// broadcast) of a value stored elsewhere that the run does not write, so
/// that computing every value of a row block by block reads what the
/// separate statements would. A run is emitted as the inference code's
/// passes are, in blocks of the kernel table's lanes, so its activations
/// round as the inference pass's do.
///
/// Also returns the values of a run read by nothing outside it (not kept,
/// not a result, not stored for every step): they are never stored.
fn fused_runs(
    layer: &ir::Layer,
    backward: &Backward,
    kinds: &[Kind],
    layout: Layout<'_>,
    (kept, kept_steps): (&[ValueId], &[ValueId]),
) -> (Vec<Vec<ValueId>>, Vec<bool>) {
    let Layout {
        all_steps,
        views,
        aliases,
        free,
    } = layout;
    let forward = backward.forward;
    let total = backward.nodes.len();
    let vector = |id: ValueId| match backward.node(id).shape {
        Shape::Vector(len) => Some(len),
        Shape::Scalar | Shape::Matrix(..) => None,
    };
    let fusable = |id: ValueId| {
        let node = backward.node(id);
        let op_fuses = matches!(
            node.op,
            Op::Binary(..) | Op::Clip(..) | Op::Unary(..) | Op::Seed(Seed::State(_))
        );
        op_fuses && vector(id).is_some()
    };
    let readable = |operand: ValueId, width: usize| -> Option<ValueId> {
        let node = backward.node(operand);
        if let (Op::Literal(_), Shape::Scalar) = (&node.op, node.shape) {
            return Some(operand);
        }
        let len = vector(operand)?;
        if len != width && len != 1 {
            return None;
        }
        let (root, _) = storage(views, aliases, operand);
        match kinds[root.index()] {
            Kind::Step | Kind::Hoisted | Kind::Invariant => Some(root),
            Kind::Sum | Kind::After | Kind::Rows => None,
        }
    };
    let mut runs: Vec<Vec<ValueId>> = Vec::new();
    for range in [0..forward, forward..total] {
        let mut run: Vec<ValueId> = Vec::new();
        let mut written: Vec<ValueId> = Vec::new();
        let mut read: Vec<ValueId> = Vec::new();
        let statements = range.filter(|idx| {
            kinds[*idx] == Kind::Step
                && !free[*idx]
                && !matches!(
                    backward.nodes[*idx].op,
                    Op::Input(_) | Op::State(_) | Op::Seed(Seed::Output)
                )
        });
        for idx in statements {
            let id = ValueId(idx as u32);
            let joins = fusable(id) && {
                let width = vector(id).unwrap_or(0);
                let same_width = run
                    .first()
                    .is_none_or(|first| vector(*first) == Some(width));
                let (root, _) = storage(views, aliases, id);
                let operands: Option<Vec<ValueId>> = backward
                    .node(id)
                    .op
                    .operands()
                    .iter()
                    .filter(|operand| !run.contains(operand))
                    .map(|operand| readable(*operand, width))
                    .collect();
                same_width
                    && operands.is_some_and(|roots| {
                        roots
                            .iter()
                            .all(|source| !written.contains(source) && *source != root)
                    })
                    && !read.contains(&root)
            };
            if joins {
                let width = vector(id).unwrap_or(0);
                for operand in backward.node(id).op.operands() {
                    if !run.contains(&operand) {
                        read.extend(readable(operand, width));
                    }
                }
                written.push(storage(views, aliases, id).0);
                run.push(id);
                continue;
            }
            if run.len() > 1 {
                runs.push(std::mem::take(&mut run));
            }
            run.clear();
            written.clear();
            read.clear();
            if fusable(id) {
                // It may start the next run.
                let width = vector(id).unwrap_or(0);
                let operands: Option<Vec<ValueId>> = backward
                    .node(id)
                    .op
                    .operands()
                    .iter()
                    .map(|operand| readable(*operand, width))
                    .collect();
                let root = storage(views, aliases, id).0;
                if let Some(roots) = operands.filter(|roots| !roots.contains(&root)) {
                    read.extend(roots);
                    written.push(root);
                    run.push(id);
                }
            }
        }
        if run.len() > 1 {
            runs.push(run);
        }
    }

    // What is read outside its run: by another node (through views and
    // concatenations too), as a result, kept, or stored for every step.
    let mut local = vec![false; total];
    let run_of = |id: ValueId| runs.iter().position(|run| run.contains(&id));
    let mut outside = vec![false; total];
    for (idx, node) in backward.nodes.iter().enumerate() {
        let reader = ValueId(idx as u32);
        for operand in node.op.operands() {
            if run_of(operand).is_none() || run_of(operand) != run_of(reader) {
                outside[operand.index()] = true;
            }
        }
    }
    let results = backward
        .states
        .iter()
        .chain(&backward.inputs)
        .chain(&backward.params)
        .flatten()
        .chain(&layer.step.updates)
        .chain([&layer.step.output])
        .chain(kept)
        .chain(kept_steps);
    for id in results {
        outside[id.index()] = true;
    }
    for run in &runs {
        for id in run {
            let idx = id.index();
            let stored_elsewhere = all_steps[idx]
                || aliases[idx].is_some()
                || views
                    .iter()
                    .chain(aliases)
                    .any(|view| matches!(view, Some((base, _)) if base == id));
            local[idx] = !outside[idx] && !stored_elsewhere;
        }
    }
    (runs, local)
}

/// The results written where their state is carried ([`BackwardPlan::in_place`]).
///
/// In the forward, the new value of state `k` goes straight into the
/// state's buffer when every read of the old value (the `State(k)` node,
/// directly or through a view) runs before it is written: in an earlier
/// statement or run, or earlier in the same run at the same columns (a
/// run computes a block of columns through all its values before the
/// next block, so the old value of those columns is read before they are
/// written). In the backward, the gradient of the state before the step
/// goes into the gradient buffer the `Seed::State(k)` node reads, under
/// the same rule. The value must be a step statement with no other home:
/// not kept, not stored for every step, not a view or a piece. A phase in
/// which an update reads a state as it is (the states are then staged)
/// writes none in place.
fn in_place_results(
    layer: &ir::Layer,
    backward: &Backward,
    kinds: &[Kind],
    layout: Layout<'_>,
    (kept, kept_steps): (&[ValueId], &[ValueId]),
    runs: &[Vec<ValueId>],
) -> Vec<Option<usize>> {
    let Layout {
        all_steps,
        views,
        aliases,
        free,
    } = layout;
    let total = backward.nodes.len();
    let forward = backward.forward;
    let mut in_place = vec![None; total];
    let run_of = |id: ValueId| runs.iter().position(|run| run.contains(&id));
    // Where a statement runs: a run's values all run at its first one.
    let position = |id: ValueId| match run_of(id) {
        Some(run) => runs[run][0].index(),
        None => id.index(),
    };
    let homeless = |id: ValueId| {
        let idx = id.index();
        kinds[idx] == Kind::Step
            && !free[idx]
            && !all_steps[idx]
            && views[idx].is_none()
            && aliases[idx].is_none()
            && !kept.contains(&id)
            && !kept_steps.contains(&id)
            && !matches!(
                backward.node(id).op,
                Op::Input(_) | Op::State(_) | Op::Seed(_)
            )
    };
    // Whether every read of `old` (through views too) in the forward step
    // runs before `new` is written.
    let read_before = |old: ValueId, new: ValueId| {
        let reads_old = |operand: ValueId| storage(views, aliases, operand).0 == old;
        backward.nodes[..forward]
            .iter()
            .enumerate()
            .all(|(idx, node)| {
                let reader = ValueId(idx as u32);
                if free[idx] || !node.op.operands().into_iter().any(reads_old) {
                    return true;
                }
                if position(reader) < position(new) {
                    return true;
                }
                // In the same run, earlier, and at the same columns.
                run_of(reader).is_some()
                    && run_of(reader) == run_of(new)
                    && reader.index() < new.index()
                    && node
                        .op
                        .operands()
                        .into_iter()
                        .filter(|operand| reads_old(*operand))
                        .all(|operand| operand == old)
            })
    };
    let staged = layer.step.updates.iter().any(|update| {
        matches!(
            backward.node(storage(views, aliases, *update).0).op,
            Op::State(_)
        )
    });
    if !staged {
        for (k, update) in layer.step.updates.iter().enumerate() {
            let old = backward.nodes[..forward]
                .iter()
                .position(|node| node.op == Op::State(k))
                .map(|idx| ValueId(idx as u32));
            let output_reads_old =
                old.is_some_and(|old| storage(views, aliases, layer.step.output).0 == old);
            if let Some(old) = old {
                let free_slot = in_place[update.index()].is_none();
                if free_slot && homeless(*update) && !output_reads_old && read_before(old, *update)
                {
                    in_place[update.index()] = Some(k);
                }
            }
        }
    }
    for (k, result) in backward.states.iter().enumerate() {
        let Some(result) = *result else { continue };
        if result.index() < forward || !homeless(result) {
            continue;
        }
        let seed = (forward..total)
            .find(|idx| backward.nodes[*idx].op == Op::Seed(Seed::State(k)))
            .map(|idx| ValueId(idx as u32));
        // The seed's own statement is the one read of the buffer.
        let seed_first = seed.is_none_or(|seed| {
            position(seed) < position(result)
                || (run_of(seed).is_some() && run_of(seed) == run_of(result) && seed < result)
        });
        if seed_first && in_place[result.index()].is_none() {
            in_place[result.index()] = Some(k);
        }
    }
    in_place
}

/// How many times each node is read: as an operand, or as a result.
/// Marks the sums that are a per-step parameter's whole gradient and read
/// by nothing else ([`BackwardPlan::into_copy`]).
fn straight_into_copies(
    layer: &ir::Layer,
    backward: &Backward,
    kinds: &[Kind],
    per_step_grads: &[bool],
) -> Vec<bool> {
    let uses = use_counts(backward);
    let mut marked = vec![false; backward.nodes.len()];
    for (result, param) in backward.params.iter().zip(&layer.params) {
        if let (Some(id), Some(_)) = (result, param.steps) {
            let idx = id.index();
            if kinds[idx] == Kind::Sum && per_step_grads[idx] && uses[idx] == 1 {
                marked[idx] = true;
            }
        }
    }
    marked
}

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
        layer_and_plan(text).1
    }

    fn layer_and_plan(text: &str) -> (ir::Layer, BackwardPlan) {
        let compiled = crate::compile(SourceFile::new("t.rnn", text)).expect("valid");
        let layer = compiled.model.networks[0].layers[0].clone();
        let plan = plan_backward(&layer);
        (layer, plan)
    }

    #[test]
    fn a_state_read_after_the_step_overwrites_it_is_not_written_in_place() {
        // The delay line's new `d` is the old `h`: the states are staged,
        // and nothing of the forward goes where a state is carried.
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/ok/delay_line.rnn"
        ))
        .expect("the delay line model");
        let plan = plan(&text);
        assert!(plan.in_place[..plan.backward.forward]
            .iter()
            .all(Option::is_none));
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
        // The input gradient `G W_ih` is one product over every row after
        // the loop, and so is the bias gradient's sum of rows.
        let dx = plan.backward.inputs[0].expect("x has a gradient");
        assert_eq!(plan.kind(dx), Kind::Rows);
        let sums: Vec<usize> = (0..plan.kinds.len())
            .filter(|idx| matches!(plan.backward.nodes[*idx].op, Op::SumBatch(_)))
            .collect();
        assert!(!sums.is_empty() && sums.iter().all(|idx| plan.deferred[*idx]));
        // The gate gradients are one fused run of the backward; of its
        // values only the state gradient `dc` and the four gate gradients
        // (pieces of G) are stored.
        let runs: Vec<&Vec<ValueId>> = plan
            .fused
            .iter()
            .filter(|run| run[0].index() >= plan.backward.forward)
            .collect();
        assert_eq!(runs.len(), 1, "{:?}", plan.fused);
        let stored = runs[0].iter().filter(|id| !plan.local[id.index()]).count();
        assert_eq!(stored, 5, "{:?}", runs[0]);
        // The new h and c are written where the states are carried, and
        // so are their gradients in the backward (dc by the run, dh by the
        // product `G W_hh`): no buffer of their own, no copy.
        let updates = &plan.backward.forward;
        let forward_in_place: Vec<usize> =
            (0..*updates).filter_map(|idx| plan.in_place[idx]).collect();
        assert_eq!(forward_in_place.len(), 2, "{:?}", plan.in_place);
        for (k, result) in plan.backward.states.iter().enumerate() {
            let result = result.expect("both states have gradients");
            assert_eq!(plan.in_place[result.index()], Some(k));
        }
        let (layer, _) = layer_and_plan(
            "network N { input x: [5]; layer l = lstm(hidden = 8); unroll dynamic; }",
        );
        assert!(plan.run_stores_output(layer.step.output));
        // Nothing of the backward is computed from a parameter gradient
        // before the loop ends.
        for (idx, kind) in plan.kinds.iter().enumerate() {
            if *kind == Kind::After {
                assert!(plan.backward.node(ValueId(idx as u32)).dep == Dep::State);
            }
        }
    }
}

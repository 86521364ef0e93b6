//! IR → execution plan: where each value of a layer's step lives and when
//! it is computed.
//!
//! Input: an [`ir::Layer`]. Output: a [`Place`] per node. After lower:
//! parameter-only values are computed once when the model is built
//! ([`Place::Const`]); values that read contexts once per call
//! ([`Place::Context`]); values that read only the step's input for all
//! steps at once before the time loop, as one matrix product over every
//! valid step of every sequence ([`Place::Hoisted`]); only what reads the
//! state is computed step by step ([`Place::Step`]), as are input-only
//! elementwise values that only the step's elementwise work reads (they
//! cost nothing more there and need no buffer). Slices of computed values
//! are views, never copies ([`Place::View`]).
//!
//! Each phase (context, hoisted, step) is then scheduled as a list of
//! [`Work`]: matrix products, and runs of elementwise operations fused into
//! one pass over the rows. A matrix product whose vector is ready moves
//! ahead of the open fused run, so a step with several products (GRU)
//! still has one elementwise pass. A value used only inside its own fused
//! run needs no `[batch, width]` buffer ([`LayerPlan::scratch`]): it lives
//! in registers, or in a scratch tile when the pass runs as tile operations
//! (`emit.rs`).

mod network;
mod passes;
mod split;
mod weights;

pub use network::{lower_network, NetworkPlan, Variant, HOISTED_CHUNK_BYTES, STATIC_INLINE_STEPS};
pub use passes::operand_columns;
pub use split::{Split, SPLIT_ALIGN};

use crate::ir::{self, Dep, Op, Shape, ValueId};

/// Where a value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A number, written into the code.
    Literal,
    /// A weight tensor.
    Param,
    /// Derived from weights when the model is built.
    Const,
    /// The layer's input (packed rows for a per-step input, one row per
    /// sequence for a context).
    Input,
    /// A state buffer, one row per sequence.
    State,
    /// Computed once per call, one row per sequence.
    Context,
    /// Computed before the time loop, one row per valid step of each
    /// sequence.
    Hoisted,
    /// Computed each step, one row per running sequence.
    Step,
    /// A range of columns of another value.
    View,
}

impl Place {
    /// Whether the value is the same for every sequence and step.
    pub fn is_const(self) -> bool {
        matches!(self, Place::Literal | Place::Param | Place::Const)
    }

    /// Whether the value has one row per valid step (rather than one per
    /// sequence).
    pub fn per_step_rows(self) -> bool {
        matches!(self, Place::Hoisted)
    }
}

/// One unit of work of a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// A matrix product over all rows of the phase: the `MatVec` node
    /// `product`, or `init + product` (the `Add` node `out`; `product` then
    /// has no buffer of its own) computed by accumulating the product onto
    /// `init`. A constant `init` is a row every output row starts from; a
    /// hoisted `init` is accumulated onto in place, at this step's rows of
    /// its buffer, which then holds `out` ([`LayerPlan::alias`]). For a
    /// plain product `out == product`.
    MatVec {
        /// The value written.
        out: ValueId,
        /// The `MatVec` node.
        product: ValueId,
        /// What each output row starts from.
        init: Option<ValueId>,
    },
    /// Elementwise operations, in order, run as one pass: for each row,
    /// every operation on that row.
    Fused(Vec<ValueId>),
}

/// The plan of one layer.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    /// The place of each node, by [`ValueId`].
    pub places: Vec<Place>,
    /// For each node, whether its rows are per valid step (packed, like a
    /// per-step input) rather than per sequence.
    pub packed_rows: Vec<bool>,
    /// Work once per call, on values that read contexts.
    pub context: Vec<Work>,
    /// Work before the time loop, over every valid step at once.
    pub hoisted: Vec<Work>,
    /// Work at each step.
    pub step: Vec<Work>,
    /// For each node, whether it is read only by its own fused run, so it
    /// needs no buffer with a row per sequence (a register, or a scratch
    /// tile).
    pub scratch: Vec<bool>,
    /// For each node, whether it is a product folded into the `Add` of a
    /// constant or hoisted row (see [`Work::MatVec`]) and so has no buffer.
    pub folded: Vec<bool>,
    /// For each node, the value whose buffer holds it: the step sum of a
    /// hoisted row and a product lives in the hoisted buffer, at this
    /// step's rows (so its rows are packed).
    pub alias: Vec<Option<ValueId>>,
    /// For each node, the state whose buffer it is written into: a state's
    /// new value computed by a fused pass after the last read of the old
    /// value goes straight into the state (no buffer, no copy per step).
    pub home: Vec<Option<usize>>,
    /// Whether the layer reads its per-step inputs only in its hoisted work:
    /// then a backward direction takes its inputs in time order and gathers
    /// each chunk's rows reversed as the chunk starts, instead of a reversed
    /// copy of the whole input. When every sequence has the same length it
    /// reads each chunk's rows in place, a block in time order, and finds
    /// a step's hoisted rows from the block's end (`Packing::reversed_block`).
    pub gathers_inputs: bool,
    /// For each node computed by a fused pass, the width of the blocks of
    /// lanes its pass runs in, or `None` when the pass runs as tile
    /// operations ([`passes::lanes_width`]).
    pub lanes: Vec<Option<usize>>,
    /// Rows per tile of the passes run as tile operations.
    pub tile_rows: usize,
    /// Whether a pass of the step computes the output and stores it into
    /// the output rows itself (in lanes as wide as the output), so the time
    /// loop does not copy it.
    pub pass_stores_output: bool,
    /// How two threads share each step, when they can ([`Split`]).
    pub split: Option<Split>,
    /// The matrices per-call products read, once each, in order: kept
    /// packed for the product kernel.
    pub packed: Vec<ValueId>,
    /// Multiply-adds of the per-call products per direction and valid step:
    /// the measure of work that decides whether to use threads.
    pub macs_per_row: usize,
    /// The parameters and derived constants that run time reads (each
    /// once, in order): operands of fused passes, the starting rows of
    /// products, constant outputs or updates. Matrices only multiplied are
    /// kept packed only, and values only used to derive others are dropped
    /// once the model is built.
    pub runtime_weights: Vec<ValueId>,
}

/// The buffer a fused pass binds for a value: a state's buffer is one,
/// whether the pass reads the state or writes its new value into it
/// ([`LayerPlan::home`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// State `k`'s buffer.
    State(usize),
    /// The value's own buffer (or constant vector).
    Value(ValueId),
}

impl LayerPlan {
    /// The place of a value.
    pub fn place(&self, id: ValueId) -> Place {
        self.places[id.index()]
    }

    /// The lane width of a fused pass, `None` for tile operations.
    pub fn lanes_of(&self, pass: &[ValueId]) -> Option<usize> {
        pass.first().and_then(|id| self.lanes[id.index()])
    }

    /// Whether `pass` computes the output and stores it into the output
    /// rows itself ([`LayerPlan::pass_stores_output`]).
    pub fn stores_output(&self, layer: &ir::Layer, pass: &[ValueId]) -> bool {
        self.pass_stores_output && pass.contains(&layer.step.output)
    }

    /// The buffer a fused pass binds for `id`.
    pub fn binding(&self, layer: &ir::Layer, id: ValueId) -> Binding {
        match (&layer.step.node(id).op, self.home[id.index()]) {
            (&Op::State(state), _) | (_, Some(state)) => Binding::State(state),
            _ => Binding::Value(id),
        }
    }
}

/// Plans one layer, in passes:
///
/// 1. place each node (constant, input, hoisted, step, view, ...) and move
///    into the step the hoisted elementwise values only the step reads;
/// 2. fold sums with a product into the product (accumulate onto a row);
/// 3. schedule each phase as products and fused elementwise passes;
/// 4. find values that need no buffer (scratch) and state updates written
///    in place (homes);
/// 5. decide how each pass runs (lanes or tiles), whether two threads can
///    share each step, and which weights run time keeps.
pub fn lower(layer: &ir::Layer) -> LayerPlan {
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
    demote_hoisted_elementwise(layer, &mut places, &mut packed_rows);
    let folds = folds(layer, &places);
    let mut alias = vec![None; step.nodes.len()];
    for fold in &folds {
        if places[fold.init.index()] == Place::Hoisted {
            alias[fold.out.index()] = Some(fold.init);
            packed_rows[fold.out.index()] = true;
        }
    }
    let phase = |wanted: Place| schedule(layer, &places, &folds, wanted);
    let (context, hoisted, step_work) = (
        phase(Place::Context),
        phase(Place::Hoisted),
        phase(Place::Step),
    );
    let scratch = scratch_values(layer, &places, [&context, &hoisted, &step_work]);
    let folded = (0..layer.step.nodes.len())
        .map(|idx| folds.iter().any(|fold| fold.product.index() == idx))
        .collect();
    let home = state_homes(layer, &places, &step_work);
    let gathers_inputs = !hoisted.is_empty() && !reads_inputs_late(layer, &places);
    let n_nodes = places.len();
    let mut plan = LayerPlan {
        places,
        packed_rows,
        context,
        hoisted,
        step: step_work,
        scratch,
        folded,
        alias,
        home,
        gathers_inputs,
        lanes: vec![None; n_nodes],
        tile_rows: 1,
        pass_stores_output: false,
        split: None,
        packed: Vec::new(),
        macs_per_row: 0,
        runtime_weights: Vec::new(),
    };
    plan.lanes = passes::lanes(layer, &plan);
    plan.tile_rows = passes::tile_rows(layer, &plan);
    plan.pass_stores_output = plan.step.iter().any(
        |work| matches!(work, Work::Fused(ids) if passes::pass_stores_output(layer, &plan, ids)),
    );
    plan.split = split::split(layer, &plan);
    plan.packed = weights::packed_matrices(layer, &plan);
    plan.macs_per_row = weights::macs_per_row(layer, &plan);
    plan.runtime_weights = weights::runtime_weights(layer, &plan);
    plan
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
fn demote_hoisted_elementwise(layer: &ir::Layer, places: &mut [Place], packed_rows: &mut [bool]) {
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
                Op::Binary(crate::check::Func::Add, a, b) => [a, b].into_iter().any(|other| {
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

/// `out = product + init` (either order) where `product` is a matrix
/// product read by nothing else, computed in the same phase as `out`, and
/// `init` of the same length is either a constant vector (the product
/// accumulates onto rows set to it: the bias of a hoisted input projection)
/// or, for a step sum, a hoisted value read by nothing else (the product
/// accumulates onto the hoisted rows in place: `W_ih x + b + W_hh h` costs
/// no elementwise pass and no copy).
#[derive(Debug, Clone, Copy)]
struct Fold {
    out: ValueId,
    product: ValueId,
    init: ValueId,
}

fn folds(layer: &ir::Layer, places: &[Place]) -> Vec<Fold> {
    let nodes = &layer.step.nodes;
    let uses = layer.step.uses();
    let mut folds = Vec::new();
    for (idx, node) in nodes.iter().enumerate() {
        let Op::Binary(crate::check::Func::Add, a, b) = node.op else {
            continue;
        };
        let place = places[idx];
        if !matches!(place, Place::Context | Place::Hoisted | Place::Step) {
            continue;
        }
        let is_product = |id: ValueId| {
            matches!(nodes[id.index()].op, Op::MatVec(..))
                && places[id.index()] == place
                && uses[id.index()] == 1
        };
        let is_row = |id: ValueId| {
            let init = &nodes[id.index()];
            let hoisted = place == Place::Step
                && places[id.index()] == Place::Hoisted
                && uses[id.index()] == 1;
            (matches!(places[id.index()], Place::Param | Place::Const) || hoisted)
                && init.shape == node.shape
        };
        let (product, init) = if is_product(a) && is_row(b) {
            (a, b)
        } else if is_product(b) && is_row(a) {
            (b, a)
        } else {
            continue;
        };
        folds.push(Fold {
            out: ValueId(idx as u32),
            product,
            init,
        });
    }
    folds
}

/// Which step values are written straight into their state: state `k`'s
/// new value `u`, computed by a fused pass of the step, when nothing reads
/// the old value of state `k` from the operation computing `u` on (in that
/// pass, in later work of the step, or as the step's output or another
/// state's update). Within a pass each operation reads the old value of a
/// row before the row is written: a pass in tiles runs each operation on
/// whole rows, and a pass in blocks of lanes runs every operation on one
/// block of columns, which [`passes::lanes_width`] allows only when the
/// pass reads the state at those same columns.
fn state_homes(layer: &ir::Layer, places: &[Place], step_work: &[Work]) -> Vec<Option<usize>> {
    let step = &layer.step;
    let mut home = vec![None; step.nodes.len()];
    let reads_state = |id: ValueId, k: usize| matches!(step.node(view_root(layer, places, id)).op, Op::State(state) if state == k);
    let work_reads_state = |work: &Work, k: usize| match work {
        Work::Fused(ids) => ids.iter().any(|id| {
            step.node(*id)
                .op
                .operands()
                .iter()
                .any(|o| reads_state(*o, k))
        }),
        Work::MatVec { product, init, .. } => {
            step.node(*product)
                .op
                .operands()
                .iter()
                .any(|o| reads_state(*o, k))
                || init.is_some_and(|init| reads_state(init, k))
        }
    };
    for (k, &update) in step.updates.iter().enumerate() {
        let shared = step
            .updates
            .iter()
            .filter(|other| **other == update)
            .count()
            > 1;
        let results_read_state = std::iter::once(step.output)
            .chain(step.updates.iter().copied())
            .any(|result| result != update && reads_state(result, k));
        if shared || results_read_state || places[update.index()] != Place::Step {
            continue;
        }
        let found = step_work
            .iter()
            .enumerate()
            .find_map(|(idx, work)| match work {
                Work::Fused(ids) => ids
                    .iter()
                    .position(|id| *id == update)
                    .map(|pos| (idx, pos)),
                Work::MatVec { .. } => None,
            });
        let Some((run, position)) = found else {
            continue;
        };
        let Work::Fused(ids) = &step_work[run] else {
            unreachable!("found in a fused run")
        };
        let read_later_in_run = ids[position..].iter().any(|id| {
            step.node(*id)
                .op
                .operands()
                .iter()
                .any(|o| reads_state(*o, k))
        });
        let read_later = step_work[run + 1..]
            .iter()
            .any(|work| work_reads_state(work, k));
        if !read_later_in_run && !read_later {
            home[update.index()] = Some(k);
        }
    }
    home
}

/// Whether a per-step input is read after the hoisted work: by a value
/// computed per call or per step, or as the output or an update.
fn reads_inputs_late(layer: &ir::Layer, places: &[Place]) -> bool {
    let step = &layer.step;
    let reads_step_input = |id: ValueId| {
        let root = view_root(layer, places, id);
        matches!(step.node(root).op, Op::Input(k) if layer.inputs[k].per_step)
    };
    let by_values = step
        .nodes
        .iter()
        .enumerate()
        .filter(|(idx, _)| matches!(places[*idx], Place::Context | Place::Step))
        .any(|(_, node)| node.op.operands().into_iter().any(reads_step_input));
    let results = std::iter::once(step.output).chain(step.updates.iter().copied());
    by_values || results.into_iter().any(reads_step_input)
}

/// The value a view reads (itself for anything else).
pub fn view_root(layer: &ir::Layer, places: &[Place], mut id: ValueId) -> ValueId {
    while let (Op::Slice(base, _, _), Place::View) = (&layer.step.node(id).op, places[id.index()]) {
        id = *base;
    }
    id
}

/// The work of the nodes placed at `wanted`, in dependency order: runs of
/// elementwise nodes fused, a matrix product moved ahead of the open run
/// when its vector does not come from that run.
fn schedule(layer: &ir::Layer, places: &[Place], folds: &[Fold], wanted: Place) -> Vec<Work> {
    let mut work: Vec<Work> = Vec::new();
    // Index in `work` of the open fused run.
    let mut open: Option<usize> = None;
    for (idx, node) in layer.step.nodes.iter().enumerate() {
        if places[idx] != wanted {
            continue;
        }
        let id = ValueId(idx as u32);
        if folds.iter().any(|fold| fold.product == id) {
            // Computed by the `Add` it folds into.
            continue;
        }
        let fold = folds.iter().find(|fold| fold.out == id);
        let product = match (fold, &node.op) {
            (Some(fold), _) => Some((fold.product, Some(fold.init))),
            (None, Op::MatVec(..)) => Some((id, None)),
            _ => None,
        };
        match product {
            Some((product, init)) => {
                let Op::MatVec(_, vector) = layer.step.node(product).op else {
                    unreachable!("a fold's product is a matrix product")
                };
                let item = Work::MatVec {
                    out: id,
                    product,
                    init,
                };
                let root = view_root(layer, places, vector);
                let in_open = open.is_some_and(|run| match &work[run] {
                    Work::Fused(ids) => ids.contains(&root),
                    Work::MatVec { .. } => false,
                });
                match open {
                    Some(run) if !in_open => {
                        work.insert(run, item);
                        open = Some(run + 1);
                    }
                    _ => {
                        work.push(item);
                        open = None;
                    }
                }
            }
            None => match open {
                Some(run) => {
                    if let Work::Fused(ids) = &mut work[run] {
                        ids.push(id);
                    }
                }
                None => {
                    work.push(Work::Fused(vec![id]));
                    open = Some(work.len() - 1);
                }
            },
        }
    }
    work
}

/// Which values are read only inside their own fused run: not by another
/// run, a matrix product, or as the step's output or a state's update.
fn scratch_values(layer: &ir::Layer, places: &[Place], phases: [&Vec<Work>; 3]) -> Vec<bool> {
    let len = layer.step.nodes.len();
    // The fused run of each value, numbered across phases.
    let mut run_of: Vec<Option<usize>> = vec![None; len];
    let mut scratch = vec![false; len];
    let runs = phases
        .iter()
        .flat_map(|work| work.iter())
        .filter_map(|work| match work {
            Work::Fused(ids) => Some(ids),
            Work::MatVec { .. } => None,
        });
    for (run, ids) in runs.enumerate() {
        for id in ids {
            run_of[id.index()] = Some(run);
            scratch[id.index()] = true;
        }
    }
    for (idx, node) in layer.step.nodes.iter().enumerate() {
        if !matches!(places[idx], Place::Context | Place::Hoisted | Place::Step) {
            continue;
        }
        for operand in node.op.operands() {
            let root = view_root(layer, places, operand);
            if run_of[root.index()].is_some() && run_of[root.index()] != run_of[idx] {
                scratch[root.index()] = false;
            }
        }
    }
    let results = std::iter::once(layer.step.output).chain(layer.step.updates.iter().copied());
    for id in results {
        scratch[view_root(layer, places, id).index()] = false;
    }
    scratch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceFile;

    #[test]
    fn lstm_hoists_the_input_projection_and_steps_the_rest() {
        let compiled = crate::compile(SourceFile::new(
            "t.rnn",
            "network N { input x: [3]; layer l = lstm(hidden = 4); unroll dynamic; }",
        ))
        .expect("compiles");
        let layer = &compiled.model.networks[0].layers[0];
        let plan = lower(layer);
        let matvecs: Vec<Place> = layer
            .step
            .nodes
            .iter()
            .zip(&plan.places)
            .filter(|(node, _)| matches!(node.op, Op::MatVec(..)))
            .map(|(_, place)| *place)
            .collect();
        assert_eq!(matvecs, vec![Place::Hoisted, Place::Step]);
        assert!(plan.places.iter().all(|place| *place != Place::Context));
    }

    fn plan_of(source: &str) -> (ir::Layer, LayerPlan) {
        let compiled = crate::compile(SourceFile::new("t.rnn", source)).expect("compiles");
        let layer = compiled.model.networks[0].layers[0].clone();
        let plan = lower(&layer);
        (layer, plan)
    }

    #[test]
    fn a_gru_step_is_one_product_then_one_fused_pass() {
        let (layer, plan) =
            plan_of("network N { input x: [3]; layer l = gru(hidden = 4); unroll dynamic; }");
        let products = plan
            .step
            .iter()
            .take_while(|work| matches!(work, Work::MatVec { .. }))
            .count();
        // The three row blocks of `weight_hh` times `h` are one product.
        assert_eq!(products, 1, "{:?}", plan.step);
        // Ahead of the loop, only the input projection: the bias sums of
        // its `r` and `z` blocks are left to the step's pass.
        assert!(
            matches!(plan.hoisted[..], [Work::MatVec { .. }]),
            "{:?}",
            plan.hoisted
        );
        assert_eq!(plan.step.len(), 2, "one fused pass after the product");
        // Only the new state leaves the pass: every other value of the pass
        // needs no buffer.
        let Work::Fused(ids) = &plan.step[1] else {
            panic!("the last work is the fused pass")
        };
        let buffered: Vec<ValueId> = ids
            .iter()
            .copied()
            .filter(|id| !plan.scratch[id.index()])
            .collect();
        assert_eq!(
            buffered,
            vec![view_root(&layer, &plan.places, layer.step.updates[0])]
        );
    }

    #[test]
    fn the_input_projection_accumulates_onto_its_bias() {
        let (layer, plan) =
            plan_of("network N { input x: [3]; layer l = lstm(hidden = 4); unroll dynamic; }");
        let [Work::MatVec {
            out,
            product,
            init: Some(init),
        }] = plan.hoisted[..]
        else {
            panic!("one hoisted product with a bias: {:?}", plan.hoisted)
        };
        assert!(plan.folded[product.index()]);
        assert!(matches!(
            layer.step.node(out).op,
            Op::Binary(crate::check::Func::Add, ..)
        ));
        // `bias_ih + bias_hh`, added once when the model is built.
        assert_eq!(plan.place(init), Place::Const);
        // The step's product accumulates onto the hoisted rows in place: no
        // elementwise pass adds them.
        let [Work::MatVec {
            out: sum,
            product: recurrent,
            init: Some(hoisted),
        }, Work::Fused(_)] = &plan.step[..]
        else {
            panic!(
                "one product onto the hoisted rows, one pass: {:?}",
                plan.step
            )
        };
        assert_eq!(*hoisted, out);
        assert_eq!(plan.alias[sum.index()], Some(out));
        assert!(plan.packed_rows[sum.index()] && plan.folded[recurrent.index()]);
    }

    /// The first node of `layer` whose operation `matches`.
    fn node_where(layer: &ir::Layer, matches: impl Fn(&Op) -> bool) -> ValueId {
        let idx = layer
            .step
            .nodes
            .iter()
            .position(|node| matches(&node.op))
            .expect("such a node");
        ValueId(idx as u32)
    }

    #[test]
    fn input_only_elementwise_values_move_into_the_step_unless_kept_ahead() {
        use crate::check::Func;
        // `s` is read, through two views, only by the step's elementwise
        // work: it moves into the step, its views with it.
        let (layer, plan) = plan_of(
            "cell c(x: [I]) -> h: [H] { param w: [2*H, I]; param b: [2*H]; param u: [H, H]; \
             let s = (w @ x + b) * 2; let (a, k) = chunk(s, 2); h = tanh(u @ h) * a + k; } \
             network N { input x: [3]; layer l = c(hidden = 4); unroll dynamic; }",
        );
        let s = node_where(&layer, |op| matches!(op, Op::Binary(Func::Mul, ..)));
        assert_eq!(plan.place(s), Place::Step, "{:?}", plan.places);
        assert!(!plan.packed_rows[s.index()]);
        for (idx, node) in layer.step.nodes.iter().enumerate() {
            if matches!(node.op, Op::Slice(base, ..) if base == s) {
                assert_eq!(plan.places[idx], Place::View);
                assert!(!plan.packed_rows[idx], "a view of a step value");
            }
        }
        // The projection itself stays ahead, accumulated onto its bias.
        assert!(matches!(
            plan.hoisted[..],
            [Work::MatVec { init: Some(_), .. }]
        ));

        // A value of the input itself stays ahead: a backward direction
        // still gathers its input per chunk.
        let (layer, plan) = plan_of(
            "cell c(x: [H]) -> h: [H] { param u: [H, H]; h = tanh(u @ h) * sigmoid(x); } \
             network N { input x: [4]; layer l = c(hidden = 4, bidirectional); unroll dynamic; }",
        );
        let g = node_where(&layer, |op| matches!(op, Op::Unary(Func::Sigmoid, _)));
        assert_eq!(plan.place(g), Place::Hoisted);
        assert!(plan.gathers_inputs);

        // The step's output stays ahead (it is copied out from there).
        let (layer, plan) = plan_of(
            "cell c(x: [I]) -> h: [H] { param w: [H, I]; param b: [H]; param u: [H, H]; \
             h = tanh(u @ h); output (w @ x + b) * 2; } \
             network N { input x: [3]; layer l = c(hidden = 4); unroll dynamic; }",
        );
        let out = node_where(&layer, |op| matches!(op, Op::Binary(Func::Mul, ..)));
        assert_eq!(layer.step.output, out);
        assert_eq!(plan.place(out), Place::Hoisted);
    }
}

//! IR → execution plan: every decision code generation makes, so that
//! `emit` only writes them out.
//!
//! Input: an [`ir::Network`](crate::ir::Network). Output: a
//! [`NetworkPlan`]: the variants of the time loop, and for each layer a
//! [`LayerPlan`]. After lower:
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
//! in registers, or in a scratch tile when the pass runs as tile operations.
//! Last come the decisions about kernels and threads: how each pass runs,
//! whether two threads share each step, which weights are kept.
//!
//! The passes of [`lower`], in order, one file each:
//! 1. `places.rs`: the place of each node; input-only elementwise values
//!    only the step reads move into the step;
//! 2. `schedule.rs`: sums with a product folded into it, then each phase's
//!    products and fused passes;
//! 3. `buffers.rs`: scratch values, state updates written in place, inputs
//!    read late;
//! 4. `passes.rs`: lanes or tiles for each fused pass, rows per tile; then
//!    `buffers.rs` again: the buffers the layer function allocates;
//! 5. `split.rs`: whether two threads share each step;
//! 6. `weights.rs`: packed matrices, work per row, weights kept at run time.
//!
//! `network.rs` plans a whole network: its layers and its time loops;
//! `backward.rs` plans a layer's training code (forward with a tape, and
//! the backward step), when training code is asked for.

mod backward;
mod buffers;
mod network;
mod passes;
mod places;
mod schedule;
mod split;
mod weights;

pub use backward::{plan_backward, BackwardPlan, Kind};
pub use network::{lower_network, NetworkPlan, Variant, HOISTED_CHUNK_BYTES, STATIC_INLINE_STEPS};
pub use passes::operand_columns;
pub use split::{Split, SPLIT_ALIGN};

use crate::ir::{self, Op, ValueId};

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
    /// The buffer of each computed value that has one, in node order.
    pub buffers: Vec<(ValueId, Buffer)>,
    /// The states whose new value is another state as it was, copied
    /// aside before any state is written.
    pub staged_states: Vec<usize>,
    /// Floats per row of the hoisted buffers: what a chunk of steps is
    /// measured in ([`HOISTED_CHUNK_BYTES`]).
    pub hoisted_row_width: usize,
    /// Whether a pass of the step computes the output and stores it into
    /// the output rows itself (in lanes as wide as the output), so the time
    /// loop does not copy it.
    pub pass_stores_output: bool,
    /// How two threads share each step, when they can ([`Split`]).
    pub split: Option<Split>,
    /// The matrices per-call products read, once each, in order: kept
    /// packed for the product kernel.
    pub packed: Vec<ValueId>,
    /// The precision the weights of [`Self::packed`] are rounded to, `None`
    /// for `f32`: the layer's, for every product (the rounding is part of
    /// the model's numbers, so it does not depend on a product's size).
    pub precision: Option<crate::check::Precision>,
    /// For each of [`Self::packed`], whether it is kept in [`Self::precision`]
    /// for the reduced-precision kernel. In int8, only the matrices a
    /// per-step product reads, whose speed is the bytes read per step; a
    /// matrix only products over all steps (hoisted) or per call read keeps
    /// its rounded weights in `f32`, since those products are bound by
    /// arithmetic and int8's widening costs a conversion per weight (the
    /// numbers are the same up to the order of the sums). In bfloat16,
    /// whose widening is a shift, every matrix (measured faster on W1).
    pub reduced: Vec<bool>,
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

/// A buffer the layer function allocates for a computed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    /// A scratch tile of a pass run as tile operations: rows per tile
    /// ([`LayerPlan::tile_rows`]) × `width`.
    Tile {
        /// Columns.
        width: usize,
    },
    /// Rows taken from the workspace: one per sequence, or one per valid
    /// step of a chunk of steps for a hoisted value.
    Rows {
        /// Whether the value is hoisted (rows per step of a chunk).
        hoisted: bool,
        /// Columns.
        width: usize,
    },
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

    /// Whether the packed `matrix` is kept in reduced precision
    /// ([`Self::reduced`]).
    pub fn is_reduced(&self, matrix: ValueId) -> bool {
        self.packed
            .iter()
            .zip(&self.reduced)
            .any(|(packed, reduced)| *packed == matrix && *reduced)
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

/// Plans one layer, in passes (see the module doc for their files):
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
    let (mut places, mut packed_rows) = places::place(layer);
    places::demote_hoisted_elementwise(layer, &mut places, &mut packed_rows);
    let folds = schedule::folds(layer, &places);
    let mut alias = vec![None; step.nodes.len()];
    for fold in &folds {
        if places[fold.init.index()] == Place::Hoisted {
            alias[fold.out.index()] = Some(fold.init);
            packed_rows[fold.out.index()] = true;
        }
    }
    let phase = |wanted: Place| schedule::schedule(layer, &places, &folds, wanted);
    let (context, hoisted, step_work) = (
        phase(Place::Context),
        phase(Place::Hoisted),
        phase(Place::Step),
    );
    let scratch = buffers::scratch_values(layer, &places, [&context, &hoisted, &step_work]);
    let folded = (0..layer.step.nodes.len())
        .map(|idx| folds.iter().any(|fold| fold.product.index() == idx))
        .collect();
    let home = buffers::state_homes(layer, &places, &step_work);
    let gathers_inputs = !hoisted.is_empty() && !buffers::reads_inputs_late(layer, &places);
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
        buffers: Vec::new(),
        staged_states: Vec::new(),
        hoisted_row_width: 0,
        pass_stores_output: false,
        split: None,
        packed: Vec::new(),
        precision: layer.precision,
        reduced: Vec::new(),
        macs_per_row: 0,
        runtime_weights: Vec::new(),
    };
    plan.lanes = passes::lanes(layer, &plan);
    plan.tile_rows = passes::tile_rows(layer, &plan);
    plan.pass_stores_output = passes::pass_stores_output(layer, &plan);
    plan.buffers = buffers::buffers(layer, &plan);
    plan.staged_states = buffers::staged_states(layer, &plan);
    plan.hoisted_row_width = buffers::hoisted_row_width(layer, &plan);
    plan.split = split::split(layer, &plan);
    plan.packed = weights::packed_matrices(layer, &plan);
    plan.reduced = weights::reduced_matrices(layer, &plan);
    plan.macs_per_row = weights::macs_per_row(layer, &plan);
    plan.runtime_weights = weights::runtime_weights(layer, &plan);
    plan
}

/// The value a view reads (itself for anything else).
pub fn view_root(layer: &ir::Layer, places: &[Place], mut id: ValueId) -> ValueId {
    while let (Op::Slice(base, _, _), Place::View) = (&layer.step.node(id).op, places[id.index()]) {
        id = *base;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Binary;
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
            Op::Binary(Binary::Add, ..)
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
        use crate::ops::Unary;
        // `s` is read, through two views, only by the step's elementwise
        // work: it moves into the step, its views with it.
        let (layer, plan) = plan_of(
            "cell c(x: [I]) -> h: [H] { param w: [2*H, I]; param b: [2*H]; param u: [H, H]; \
             let s = (w @ x + b) * 2; let (a, k) = chunk(s, 2); h = tanh(u @ h) * a + k; } \
             network N { input x: [3]; layer l = c(hidden = 4); unroll dynamic; }",
        );
        let s = node_where(&layer, |op| matches!(op, Op::Binary(Binary::Mul, ..)));
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
        let g = node_where(&layer, |op| matches!(op, Op::Unary(Unary::Sigmoid, _)));
        assert_eq!(plan.place(g), Place::Hoisted);
        assert!(plan.gathers_inputs);

        // The step's output stays ahead (it is copied out from there).
        let (layer, plan) = plan_of(
            "cell c(x: [I]) -> h: [H] { param w: [H, I]; param b: [H]; param u: [H, H]; \
             h = tanh(u @ h); output (w @ x + b) * 2; } \
             network N { input x: [3]; layer l = c(hidden = 4); unroll dynamic; }",
        );
        let out = node_where(&layer, |op| matches!(op, Op::Binary(Binary::Mul, ..)));
        assert_eq!(layer.step.output, out);
        assert_eq!(plan.place(out), Place::Hoisted);
    }

    /// In int8, the matrix the step's product reads is kept for the reduced
    /// kernel; the input projection's, hoisted over every step, stays in
    /// f32 (of its rounded weights).
    #[test]
    fn reduced_precision_is_for_the_per_step_product() {
        let (layer, plan) = plan_of(
            "network N { input x: [3]; layer l = lstm(hidden = 4); unroll dynamic; precision int8; }",
        );
        assert_eq!(plan.precision, Some(crate::check::Precision::Int8));
        let names: Vec<(String, bool)> = plan
            .packed
            .iter()
            .zip(&plan.reduced)
            .map(|(matrix, reduced)| match layer.step.node(*matrix).op {
                Op::Param(param) => (layer.params[param.0 as usize].name.clone(), *reduced),
                ref op => panic!("a parameter matrix: {op:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                ("weight_ih".to_owned(), false),
                ("weight_hh".to_owned(), true)
            ]
        );
        let (_, plan) = plan_of(
            "network N { input x: [3]; layer l = lstm(hidden = 4); unroll dynamic; precision bf16; }",
        );
        assert_eq!(
            plan.reduced,
            [true, true],
            "bfloat16 widens by a shift: every matrix"
        );
        let (_, plan) =
            plan_of("network N { input x: [3]; layer l = lstm(hidden = 4); unroll dynamic; }");
        assert_eq!(plan.reduced, [false, false]);
    }
}

//! IR + plan → Rust source, with `quote`, formatted by `prettyplease`.
//!
//! Input: an [`ir::Network`] and the [`lower::LayerPlan`] of each layer.
//! Output: a token stream defining, for a network `Tagger`, the model type
//! `Tagger` (weights, `from_safetensors`, `from_weights`, `random`,
//! `forward`, and `step` for unidirectional networks), `TaggerState` and
//! `TaggerOutput`. The time loop depends on the unroll mode: straight-line
//! blocks for `static N` (one per step, guarded by the batch's longest
//! length; past 64 steps one call per step of a single copy of the step,
//! which keeps build time linear), one loop for `dynamic`, a loop of k steps plus the remainder
//! for `dynamic by k`, one straight-line layer function per bucket for
//! `static buckets`. Generated code holds no `unsafe` and allocates nothing
//! inside the time loop.
//!
//! Emission cannot fail: every size and name was decided by `check`.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use crate::check::{Func, InputSource, UnrollMode};
use crate::interp::{final_state_name, initial_state_name};
use crate::ir::{self, Network, Op, Shape, ValueId};
use crate::lower::{self, LayerPlan, Place, Work};
use crate::weights;

/// Options of code generation.
#[derive(Debug, Clone)]
pub struct Options {
    /// The path of the runtime crate in generated code (`::rnn_runtime`).
    pub runtime_path: syn::Path,
    /// Overrides the model's unroll mode (for `rnnc emit --mode`).
    pub mode: Option<UnrollMode>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            runtime_path: syn::parse_quote!(::rnn_runtime),
            mode: None,
        }
    }
}

/// The generated items of one network.
pub fn emit(network: &Network, options: &Options) -> TokenStream {
    let mut network = network.clone();
    if let Some(mode) = &options.mode {
        network.unroll = mode.clone();
    }
    let cx = Cx {
        rt: &options.runtime_path,
        network: &network,
        plans: network.layers.iter().map(lower::lower).collect(),
        groups: state_groups(&network),
    };
    cx.emit_network()
}

/// Formats tokens as a Rust file with prettyplease.
///
/// # Panics
///
/// If the tokens are not a valid Rust file: that is an internal error of
/// the generator, never a user error.
pub fn format(tokens: &TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens.clone()).unwrap_or_else(|error| {
        panic!("internal error: generated code does not parse: {error}\n{tokens}")
    });
    prettyplease::unparse(&file)
}

/// A layer statement's states, gathered over its stacked layers: one
/// `[L*D, B, H]` tensor per state.
#[derive(Debug, Clone)]
struct StateGroup {
    /// Field name in the state struct (`h`, or `enc_h` with several layer
    /// statements).
    field: Ident,
    /// Field name in the output struct (`h_n`).
    output_field: Ident,
    /// Tensor name of the initial value (`h0`).
    initial_name: String,
    /// Tensor name of the final value (`h_n`).
    final_name: String,
    /// Rows: layers × directions.
    rows: usize,
    /// State size.
    size: usize,
    /// The layer statement.
    layer_name: String,
    /// The state's index in its cell.
    state_idx: usize,
}

fn state_groups(network: &Network) -> Vec<StateGroup> {
    let several = network
        .layers
        .first()
        .is_some_and(|first| network.layers.iter().any(|layer| layer.name != first.name));
    let mut groups: Vec<StateGroup> = Vec::new();
    for layer in &network.layers {
        if layer.stack_idx != 0 {
            continue;
        }
        let n_stack = network
            .layers
            .iter()
            .filter(|other| other.name == layer.name)
            .count();
        for (state_idx, state) in layer.states.iter().enumerate() {
            let field_name = if several {
                format!("{}_{}", layer.name, state.name)
            } else {
                state.name.clone()
            };
            groups.push(StateGroup {
                field: format_ident!("{}", field_name),
                output_field: format_ident!("{}_n", field_name),
                initial_name: initial_state_name(layer, &state.name),
                final_name: final_state_name(layer, &state.name),
                rows: n_stack * layer.directions,
                size: state.size,
                layer_name: layer.name.clone(),
                state_idx,
            });
        }
    }
    groups
}

struct Cx<'a> {
    rt: &'a syn::Path,
    network: &'a Network,
    plans: Vec<LayerPlan>,
    groups: Vec<StateGroup>,
}

/// Which columns emitted work computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    /// Every column.
    All,
    /// This thread's side of a split step (`__rnn_side`, `__rnn_columns`;
    /// see [`split_width`]).
    Side,
}

/// One way to run the time loop of every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Static(usize),
    Dynamic,
    DynamicBy(usize),
    /// The dynamic loop computing one side's half of the columns of every
    /// step, beside a second thread computing the other (`split_width`).
    Split,
}

impl Variant {
    fn suffix(self) -> String {
        match self {
            Variant::Static(steps) => format!("static{steps}"),
            Variant::Dynamic => "dynamic".to_owned(),
            Variant::DynamicBy(steps) => format!("dynamic_by{steps}"),
            Variant::Split => "split".to_owned(),
        }
    }
}

fn usize_lit(value: usize) -> Literal {
    Literal::usize_unsuffixed(value)
}

fn f32_tokens(value: f32) -> TokenStream {
    if value.is_nan() {
        quote!(f32::NAN)
    } else if value == f32::INFINITY {
        quote!(f32::INFINITY)
    } else if value == f32::NEG_INFINITY {
        quote!(f32::NEG_INFINITY)
    } else {
        let literal = Literal::f32_suffixed(value);
        quote!(#literal)
    }
}

fn value_ident(id: ValueId) -> Ident {
    format_ident!("__rnn_v{}", id.0)
}

/// The buffer holding a computed value: its own, the one it lives in
/// ([`LayerPlan::alias`]), or its state's ([`LayerPlan::home`]).
fn buffer_ident(plan: &LayerPlan, id: ValueId) -> Ident {
    match plan.home[id.index()] {
        Some(state) => state_ident(state),
        None => value_ident(plan.alias[id.index()].unwrap_or(id)),
    }
}

fn const_field(id: ValueId) -> Ident {
    format_ident!("__rnn_c{}", id.0)
}

fn param_field(layer: &ir::Layer, param: ir::ParamId) -> Ident {
    format_ident!("{}", layer.params[param.0 as usize].name)
}

/// The field of a layer's weights struct holding a parameter-only value:
/// the parameter's own name, or `__rnn_c<id>` for a derived constant.
fn weight_field(layer: &ir::Layer, id: ValueId) -> Ident {
    match &layer.step.node(id).op {
        Op::Param(param) => param_field(layer, *param),
        _ => const_field(id),
    }
}

/// The field holding a weight matrix packed for the matrix product kernel.
fn packed_field(matrix: ValueId) -> Ident {
    format_ident!("__rnn_k{}", matrix.0)
}

/// The matrices that per-call matrix products read (once each, in order).
fn packed_matrices(layer: &ir::Layer, plan: &LayerPlan) -> Vec<ValueId> {
    let mut matrices = Vec::new();
    for (idx, node) in layer.step.nodes.iter().enumerate() {
        if let Op::MatVec(matrix, _) = node.op {
            if !plan.places[idx].is_const() && !matrices.contains(&matrix) {
                matrices.push(matrix);
            }
        }
    }
    matrices
}

/// A value read only by its own pass, when the pass runs as tile
/// operations: its scratch tile.
fn scratch_ident(id: ValueId) -> Ident {
    format_ident!("__rnn_t{}", id.0)
}

/// The slice a fused pass binds for a buffer (or constant vector): a
/// state's buffer has one name, whether the pass reads the state or writes
/// its new value into it ([`LayerPlan::home`]).
fn binding_ident(layer: &ir::Layer, plan: &LayerPlan, id: ValueId) -> Ident {
    match (&layer.step.node(id).op, plan.home[id.index()]) {
        (&Op::State(state), _) | (_, Some(state)) => format_ident!("__rnn_sb{}", state),
        _ => format_ident!("__rnn_b{}", id.0),
    }
}

/// How a value's buffer is indexed by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// One row per sequence: the running sequences are rows `..__rnn_n`.
    Sequence,
    /// The layer's input, one row per valid step of each sequence: the
    /// current step's rows start at `__rnn_off`.
    Input,
    /// Computed before the loop, one row per valid step of the current
    /// chunk of steps: the current step's rows start at `__rnn_hoff`.
    Hoisted,
}

impl Rows {
    /// The rows of `id`'s buffer, `id` not being a view.
    fn of(layer: &ir::Layer, plan: &LayerPlan, id: ValueId) -> Rows {
        match layer.step.node(id).op {
            _ if !plan.packed_rows[id.index()] => Rows::Sequence,
            Op::Input(_) => Rows::Input,
            _ => Rows::Hoisted,
        }
    }

    /// The current step's (or chunk's) rows.
    fn range(self) -> TokenStream {
        match self {
            Rows::Sequence => quote!(..__rnn_n),
            Rows::Input => quote!(__rnn_off..__rnn_off + __rnn_n),
            Rows::Hoisted => quote!(__rnn_hoff..__rnn_hoff + __rnn_n),
        }
    }

    /// Inside a fused pass, the current row (in blocks of lanes) or the
    /// first row of the current tile (tile operations).
    fn tile_row(self) -> TokenStream {
        match self {
            Rows::Sequence => quote!(__rnn_r0),
            Rows::Input => quote!(__rnn_p0),
            Rows::Hoisted => quote!(__rnn_h0),
        }
    }
}

/// Bytes of input projections (hoisted values) computed ahead of the time
/// loop at once: the steps are taken in chunks of about this size, so the
/// projections are read back from the cache rather than from memory, and a
/// call holds one chunk of them, not every step's.
const HOISTED_CHUNK_BYTES: usize = 512 * 1024;

/// The longest `static N` whose steps are each written out in full; longer
/// ones call one copy of the step N times. Build time grows faster than
/// linearly with the size of the layer function (BENCHMARKS.md: an LSTM at
/// 100 inline steps builds in 11 s, at 500 in 464 s), and a copy per step
/// is no faster to run than a call.
const STATIC_INLINE_STEPS: usize = 64;

/// Bytes of scratch tiles a fused pass aims for. Fewer rows per tile mean
/// more calls per step (one per operation and tile); more mean scratch
/// spilling from L1 to L2, which costs less: with 16 KiB a GRU of H = 64
/// took 5-row tiles (four passes of a dozen calls for 16 sequences) and
/// W3 ran 300 µs, with 64 KiB one 16-row pass and 286 µs (W2 28.9 →
/// 28.5 ms; 128 KiB gained nothing more; BENCHMARKS.md).
const SCRATCH_TILE_BYTES: usize = 64 * 1024;

/// The columns of every node of a fused pass that can run in blocks of
/// lanes (`Emitter::emit_pass_lanes`): all nodes of one width `w`, and
/// every operand a value of this pass (all of it), a literal, or `w`
/// columns (or one, broadcast) of a value computed elsewhere that this
/// pass does not write (or reads in place, all of it: a state updated
/// in place). Otherwise the pass runs as tile operations. A pure function
/// of the plan: the layer function's buffers and the pass itself ask it.
fn lanes_width(layer: &ir::Layer, plan: &LayerPlan, ids: &[ValueId]) -> Option<usize> {
    let width = |id: ValueId| match layer.step.node(id).shape {
        Shape::Vector(len) => len,
        _ => 1,
    };
    let w = width(*ids.first()?);
    if ids.iter().any(|id| width(*id) != w) {
        return None;
    }
    let written: Vec<Ident> = ids
        .iter()
        .filter(|id| !plan.scratch[id.index()])
        .map(|id| binding_ident(layer, plan, *id))
        .collect();
    for id in ids {
        for operand in layer.step.node(*id).op.operands() {
            let (root, start, end) = operand_columns(layer, plan, operand);
            if plan.place(root) == Place::Literal {
                continue;
            }
            let full = start == 0 && end == width(root);
            if ids.contains(&root) {
                if !full || end != w {
                    return None;
                }
                continue;
            }
            if plan.scratch[root.index()] || (end - start != w && end - start != 1) {
                return None;
            }
            let in_place = written.contains(&binding_ident(layer, plan, root));
            if in_place && !(full && end == w) {
                return None;
            }
        }
    }
    Some(w)
}

/// Whether a step pass stores the step's output rows itself: it runs in
/// blocks of lanes and computes the output, a value as wide as the
/// layer's output (not a view of a wider one).
fn pass_stores_output(layer: &ir::Layer, plan: &LayerPlan, ids: &[ValueId]) -> bool {
    ids.contains(&layer.step.output) && lanes_width(layer, plan, ids) == Some(layer.output_size)
}

/// What the bounds of a split step must be multiples of: the runtime's
/// `Columns::ALIGN`, the widest panel of its packed products.
const SPLIT_ALIGN: usize = 64;

/// The width `w` of a layer's units when two threads can share each step
/// (the runtime's `split`), each computing the columns of its half of the
/// units: of each value `w` wide, and of each product's every block of `w`
/// (the gates). `None` unless
///
/// - `w` halves into multiples of [`SPLIT_ALIGN`], and every state is `w`
///   wide and updated in place by a pass, which also stores the output;
/// - the input-only work is products (of whole inputs), and the step's is
///   products of whole states and passes of width `w` in blocks of lanes;
/// - the passes read values computed before them (products, other passes)
///   only in blocks of `w` columns starting at multiples of `w`, the
///   columns each side has computed itself.
///
/// The states are whole on both sides at the start of each step (the
/// sides trade their halves after it), as are inputs, contexts and weights.
fn split_width(layer: &ir::Layer, plan: &LayerPlan) -> Option<usize> {
    let w = layer.output_size;
    if w == 0
        || !w.is_multiple_of(2 * SPLIT_ALIGN)
        || layer.states.iter().any(|state| state.size != w)
    {
        return None;
    }
    let updated_in_place =
        (0..layer.states.len()).all(|k| plan.home[layer.step.updates[k].index()] == Some(k));
    let whole = |id: ValueId, places: &[Place]| {
        let (root, start, end) = operand_columns(layer, plan, id);
        let full = match layer.step.node(root).shape {
            Shape::Vector(len) => len,
            _ => 1,
        };
        start == 0 && end == full && places.contains(&plan.place(root))
    };
    let hoisted_ok = plan.hoisted.iter().all(|work| match work {
        Work::MatVec { product, .. } => match layer.step.node(*product).op {
            Op::MatVec(_, vector) => whole(vector, &[Place::Input]),
            _ => false,
        },
        Work::Fused(_) => false,
    });
    let mut stores_output = false;
    let step_ok = plan.step.iter().all(|work| match work {
        Work::MatVec { product, .. } => match layer.step.node(*product).op {
            Op::MatVec(_, vector) => whole(vector, &[Place::State, Place::Input, Place::Context]),
            _ => false,
        },
        Work::Fused(ids) => {
            stores_output |= pass_stores_output(layer, plan, ids);
            lanes_width(layer, plan, ids) == Some(w)
                && ids.iter().all(|id| {
                    layer.step.node(*id).op.operands().iter().all(|operand| {
                        let (root, start, end) = operand_columns(layer, plan, *operand);
                        let computed = matches!(plan.place(root), Place::Hoisted | Place::Step);
                        ids.contains(&root)
                            || !computed
                            || (start.is_multiple_of(w) && end - start == w)
                    })
                })
        }
    });
    (updated_in_place && hoisted_ok && step_ok && stores_output).then_some(w)
}

/// The states a split step's products read: the ones its two sides trade
/// after each step (the others each side reads only in its own columns;
/// their halves are merged once, at the end).
fn split_traded_states(layer: &ir::Layer, plan: &LayerPlan) -> Vec<usize> {
    let mut traded: Vec<usize> = plan
        .step
        .iter()
        .filter_map(|work| match work {
            Work::MatVec { product, .. } => match layer.step.node(*product).op {
                Op::MatVec(_, vector) => {
                    let (root, _, _) = operand_columns(layer, plan, vector);
                    match layer.step.node(root).op {
                        Op::State(k) => Some(k),
                        _ => None,
                    }
                }
                _ => None,
            },
            Work::Fused(_) => None,
        })
        .collect();
    traded.sort_unstable();
    traded.dedup();
    traded
}

/// The value under a chain of column views, and the columns read.
fn operand_columns(
    layer: &ir::Layer,
    plan: &LayerPlan,
    mut id: ValueId,
) -> (ValueId, usize, usize) {
    let mut cols: Option<(usize, usize)> = None;
    loop {
        let node = layer.step.node(id);
        match (&node.op, plan.place(id)) {
            (Op::Slice(inner, start, end), Place::View) => {
                cols = Some(match cols {
                    Some((a, b)) => (start + a, start + b),
                    None => (*start, *end),
                });
                id = *inner;
            }
            _ => {
                let full = match node.shape {
                    Shape::Vector(len) => len,
                    _ => 1,
                };
                let (start, end) = cols.unwrap_or((0, full));
                return (id, start, end);
            }
        }
    }
}

/// Rows per tile of a layer's fused passes run as tile operations: as
/// many as keep the scratch tiles of its widest such pass within
/// [`SCRATCH_TILE_BYTES`] (1 to 32).
fn tile_rows(layer: &ir::Layer, plan: &LayerPlan) -> usize {
    let widest: usize = [&plan.context, &plan.hoisted, &plan.step]
        .into_iter()
        .flatten()
        .filter_map(|work| match work {
            Work::Fused(ids) if lanes_width(layer, plan, ids).is_none() => Some(
                ids.iter()
                    .filter(|id| plan.scratch[id.index()])
                    .map(|id| match layer.step.node(*id).shape {
                        Shape::Vector(len) => len,
                        _ => 1,
                    })
                    .sum::<usize>(),
            ),
            Work::Fused(_) | Work::MatVec { .. } => None,
        })
        .max()
        .unwrap_or(0);
    (SCRATCH_TILE_BYTES / (4 * widest.max(1))).clamp(1, 32)
}

/// Multiply-adds of a layer's per-call matrix products, per direction and
/// valid step: the measure of work that decides whether to use threads.
fn macs_per_row(layer: &ir::Layer, plan: &LayerPlan) -> usize {
    packed_matrices(layer, plan)
        .iter()
        .map(|matrix| match layer.step.node(*matrix).shape {
            Shape::Matrix(rows, cols) => rows * cols,
            _ => 0,
        })
        .sum()
}

/// The weights-struct fields (parameters and derived constants) that run
/// time reads: operands of fused passes, the starting rows of products,
/// constant outputs or updates. Matrices only multiplied are kept packed
/// only, and values only used to derive others are not kept.
fn runtime_weight_fields(layer: &ir::Layer, plan: &LayerPlan) -> Vec<Ident> {
    let mut ids: Vec<ValueId> = Vec::new();
    for work in [&plan.context, &plan.hoisted, &plan.step]
        .into_iter()
        .flatten()
    {
        match work {
            Work::Fused(fused) => {
                for id in fused {
                    for operand in layer.step.node(*id).op.operands() {
                        ids.push(lower::view_root(layer, &plan.places, operand));
                    }
                }
            }
            Work::MatVec { init, .. } => ids.extend(*init),
        }
    }
    ids.push(layer.step.output);
    ids.extend(layer.step.updates.iter().copied());
    let mut fields: Vec<Ident> = Vec::new();
    for id in ids {
        if matches!(plan.place(id), Place::Param | Place::Const) {
            let field = weight_field(layer, id);
            if !fields.contains(&field) {
                fields.push(field);
            }
        }
    }
    fields
}

fn state_ident(idx: usize) -> Ident {
    format_ident!("__rnn_s{idx}")
}

fn input_ident(idx: usize) -> Ident {
    format_ident!("__rnn_in{idx}")
}

impl Cx<'_> {
    /// Short local names for the runtime, at the start of every generated
    /// function body.
    fn prelude(&self) -> TokenStream {
        let rt = self.rt;
        quote! {
            #[allow(unused_imports)]
            use #rt::ndarray::{self as __rnn_nd, s, Array2, Array3};
            #[allow(unused_imports)]
            use #rt::__private::{self as __rnn_rt, Arg};
        }
    }

    /// The fixed length of a `static N` network.
    fn static_steps(&self) -> Option<usize> {
        match self.network.unroll {
            UnrollMode::Static(steps) => Some(steps),
            _ => None,
        }
    }

    fn model_ident(&self) -> Ident {
        format_ident!("{}", self.network.name)
    }

    fn state_struct(&self) -> Ident {
        format_ident!("{}State", self.network.name)
    }

    fn output_struct(&self) -> Ident {
        format_ident!("{}Output", self.network.name)
    }

    fn weights_struct(&self, layer_idx: usize) -> Ident {
        format_ident!("__Rnn{}Layer{}", self.network.name, layer_idx)
    }

    fn layer_fn(&self, layer_idx: usize, variant: Variant) -> Ident {
        format_ident!("__rnn_layer{}_{}", layer_idx, variant.suffix())
    }

    fn variants(&self) -> Vec<Variant> {
        match &self.network.unroll {
            UnrollMode::Static(steps) => vec![Variant::Static(*steps)],
            UnrollMode::Dynamic => vec![Variant::Dynamic],
            UnrollMode::DynamicBy(steps) => vec![Variant::DynamicBy(*steps)],
            UnrollMode::Buckets {
                lengths,
                dynamic_fallback,
            } => {
                let mut variants: Vec<Variant> =
                    lengths.iter().map(|len| Variant::Static(*len)).collect();
                if *dynamic_fallback {
                    variants.push(Variant::Dynamic);
                }
                variants
            }
        }
    }

    /// Whether a layer's steps can run on two threads, half the columns
    /// each ([`split_width`]): a layer of one direction (the two of a
    /// bidirectional layer already run side by side).
    fn splits(&self, layer_idx: usize) -> bool {
        let layer = &self.network.layers[layer_idx];
        layer.directions == 1 && split_width(layer, &self.plans[layer_idx]).is_some()
    }

    fn emit_network(&self) -> TokenStream {
        let weight_structs =
            (0..self.network.layers.len()).map(|idx| self.emit_weights_struct(idx));
        let layer_fns = (0..self.network.layers.len()).flat_map(|idx| {
            let split = self.splits(idx).then_some(Variant::Split);
            self.variants()
                .into_iter()
                .chain(split)
                .map(move |variant| self.emit_layer_fn(idx, variant))
        });
        let model = self.emit_model_struct();
        let state = self.emit_state_struct();
        let output = self.emit_output_struct();
        let constructors = self.emit_constructors();
        let forward = self.emit_forward();
        let step = self.emit_step();
        let run = self.emit_run();
        let model_impl = self.emit_model_trait();
        let model_ident = self.model_ident();
        quote! {
            #model
            #state
            #output
            #(#weight_structs)*
            // Generated names follow the model's own (`A`, `L` in ISTA).
            #[allow(non_snake_case)]
            impl #model_ident {
                #constructors
                #forward
                #step
                #run
                #(#layer_fns)*
            }
            #model_impl
        }
    }

    /// `impl Model`: the name-based door, as `rnnc run` takes tensors.
    fn emit_model_trait(&self) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let model = self.model_ident();
        let state = self.state_struct();
        let static_steps = self.static_steps();
        let mut loads = Vec::new();
        let mut args = Vec::new();
        for (k, input) in self.network.inputs.iter().enumerate() {
            let local = format_ident!("__rnn_input{}", k);
            let name = &input.name;
            if input.per_step {
                loads.push(quote!(let #local = __rnn_rt::input3(inputs, #name)?;));
            } else {
                loads.push(quote!(let #local = __rnn_rt::input2(inputs, #name)?;));
            }
            args.push(quote!(#local.view()));
        }
        let per_step = self.per_step_inputs();
        let (batch, steps) = match per_step.first() {
            Some((k, _)) => {
                let local = format_ident!("__rnn_input{}", k);
                (quote!(#local.shape()[0]), quote!(#local.shape()[1]))
            }
            None => {
                let (k, _) = self.context_inputs()[0];
                let local = format_ident!("__rnn_input{}", k);
                match static_steps {
                    Some(steps) => {
                        let steps = usize_lit(steps);
                        (quote!(#local.shape()[0]), quote!(#steps))
                    }
                    None => {
                        args.push(quote!(__rnn_steps));
                        (quote!(#local.shape()[0]), quote!(__rnn_rt::steps(inputs)?))
                    }
                }
            }
        };
        let states = self.groups.iter().map(|group| {
            let field = &group.field;
            let name = &group.initial_name;
            let (rows, size) = (usize_lit(group.rows), usize_lit(group.size));
            quote!(#field: __rnn_rt::state_or_zeros(inputs, #name, #rows, __rnn_batch, #size)?)
        });
        let names = self.groups.iter().map(|group| &group.initial_name);
        let outputs = self.groups.iter().map(|group| {
            let field = &group.output_field;
            let name = &group.final_name;
            quote!(__rnn_outputs.insert_f32(#name, __rnn_result.#field.into_dyn());)
        });
        quote! {
            #[allow(non_snake_case)]
            impl #rt::Model for #model {
                fn from_weights(weights: &#rt::TensorMap) -> ::std::result::Result<Self, #rt::RnnError> {
                    #model::from_weights(weights)
                }

                fn set_threads(&mut self, threads: #rt::Threads) {
                    #model::set_threads(self, threads)
                }
                fn run(&self, inputs: &#rt::TensorMap) -> ::std::result::Result<#rt::TensorMap, #rt::RnnError> {
                    #prelude
                    #(#loads)*
                    let __rnn_batch = #batch;
                    let __rnn_steps = #steps;
                    let __rnn_seq_len = __rnn_rt::optional_lengths(inputs, __rnn_batch, __rnn_steps)?;
                    let __rnn_state = if [#(#names),*].iter().any(|name| inputs.contains(name)) {
                        Some(#state { #(#states,)* })
                    } else {
                        None
                    };
                    let __rnn_result = self.forward(#(#args,)* __rnn_seq_len.as_deref(), __rnn_state.as_ref())?;
                    let mut __rnn_outputs = #rt::TensorMap::new();
                    #(#outputs)*
                    __rnn_outputs.insert_f32("y", __rnn_result.y.into_dyn());
                    Ok(__rnn_outputs)
                }
            }
        }
    }

    fn doc_lines(&self) -> Vec<String> {
        let network = self.network;
        let mut lines = vec![
            format!("The `{}` network, compiled by unroll.", network.name),
            String::new(),
        ];
        let mode =
            match &network.unroll {
                UnrollMode::Static(steps) => {
                    format!("static {steps}: straight-line code for exactly {steps} steps")
                }
                UnrollMode::Dynamic => "dynamic: one loop over the run-time length".to_owned(),
                UnrollMode::DynamicBy(steps) => {
                    format!("dynamic by {steps}: a loop of {steps} steps per iteration")
                }
                UnrollMode::Buckets {
                    lengths,
                    dynamic_fallback,
                } => format!(
                "static buckets {lengths:?}: the smallest bucket that holds the longest sequence{}",
                if *dynamic_fallback { ", dynamic past the largest" } else { "" }
            ),
            };
        lines.push(format!("Unrolled {mode}."));
        lines.push(String::new());
        lines.push("Inputs:".to_owned());
        for input in &network.inputs {
            if input.per_step {
                lines.push(format!(
                    "- `{}`: `[B, T, {}]`, a value per step",
                    input.name, input.size
                ));
            } else {
                lines.push(format!(
                    "- `{}`: `[B, {}]`, the same at every step",
                    input.name, input.size
                ));
            }
        }
        lines.push(String::new());
        lines.push("Layers:".to_owned());
        for layer in &network.layers {
            let directions = if layer.directions == 2 {
                ", bidirectional"
            } else {
                ""
            };
            lines.push(format!(
                "- `{}` #{}: cell `{}`, output `[{}]`{directions}",
                layer.name, layer.stack_idx, layer.cell, layer.output_size
            ));
        }
        lines.push(String::new());
        lines.push("Weights (PyTorch names):".to_owned());
        for spec in weights::specs(network) {
            lines.push(format!("- `{}`: `{:?}`", spec.name, spec.shape));
        }
        lines
    }

    fn emit_model_struct(&self) -> TokenStream {
        let rt = self.rt;
        let model = self.model_ident();
        let docs = self.doc_lines();
        let fields = (0..self.network.layers.len()).map(|idx| {
            let field = format_ident!("__rnn_layer{}", idx);
            let ty = self.weights_struct(idx);
            quote!(#field: ::std::vec::Vec<#ty>)
        });
        quote! {
            #(#[doc = #docs])*
            #[derive(Debug, Clone)]
            #[allow(non_snake_case, non_camel_case_types)]
            pub struct #model {
                #(#fields,)*
                /// Buffers of earlier calls, reused by the next.
                __rnn_workspace: #rt::__private::Workspace,
                /// How many threads a call may use.
                __rnn_threads: #rt::Threads,
            }
        }
    }

    fn emit_state_struct(&self) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let state = self.state_struct();
        let name = &self.network.name;
        let fields = self.groups.iter().map(|group| {
            let field = &group.field;
            let doc = format!(
                "`{}` of layer `{}`: `[{}, B, {}]`, row `layer * directions + direction`.",
                group.field, group.layer_name, group.rows, group.size
            );
            quote!(#[doc = #doc] pub #field: #rt::ndarray::Array3<f32>)
        });
        let checks = self.groups.iter().map(|group| {
            let field = &group.field;
            let tensor = &group.initial_name;
            let (rows, size) = (usize_lit(group.rows), usize_lit(group.size));
            quote!(__rnn_rt::check_shape(#tensor, self.#field.shape(), &[Some(#rows), Some(batch), Some(#size)])?;)
        });
        let zeros = self.groups.iter().map(|group| {
            let field = &group.field;
            let (rows, size) = (usize_lit(group.rows), usize_lit(group.size));
            quote!(#field: #rt::ndarray::Array3::zeros((#rows, batch, #size)))
        });
        let selects = self.groups.iter().map(|group| {
            let field = &group.field;
            quote!(#field: self.#field.select(#rt::ndarray::Axis(1), idx))
        });
        let doc = format!(
            "The recurrent state of [`{name}`]: what carries from one step (or call) to the next."
        );
        quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, PartialEq)]
            #[allow(non_snake_case, non_camel_case_types)]
            pub struct #state {
                #(#fields,)*
            }

            impl #state {
                /// The all-zero state for `batch` sequences.
                pub fn zeros(batch: usize) -> Self {
                    Self { #(#zeros,)* }
                }

                /// Checks every tensor's shape for `batch` sequences.
                ///
                /// # Errors
                ///
                /// A shape mismatch naming the tensor and both shapes.
                pub fn check(&self, batch: usize) -> ::std::result::Result<(), #rt::RnnError> {
                #prelude
                    #(#checks)*
                    Ok(())
                }

                /// The state of the sequences `idx` (batch indices), in that order.
                #[doc(hidden)]
                pub fn __rnn_select(&self, idx: &[usize]) -> Self {
                    Self { #(#selects,)* }
                }
            }
        }
    }

    fn emit_output_struct(&self) -> TokenStream {
        let rt = self.rt;
        let output = self.output_struct();
        let state = self.state_struct();
        let name = &self.network.name;
        let y_doc = format!(
            "The top layer's outputs: `[B, T, {}]`, zero past each sequence's length.",
            self.network.output_size()
        );
        let fields = self.groups.iter().map(|group| {
            let field = &group.output_field;
            let doc = format!(
                "Final `{}` of layer `{}` (tensor `{}`): `[{}, B, {}]`, the state after each sequence's last step.",
                group.field, group.layer_name, group.final_name, group.rows, group.size
            );
            quote!(#[doc = #doc] pub #field: #rt::ndarray::Array3<f32>)
        });
        let into_state = self.groups.iter().map(|group| {
            let (field, output_field) = (&group.field, &group.output_field);
            quote!(#field: self.#output_field)
        });
        let merges = self.groups.iter().map(|group| {
            let field = &group.output_field;
            let (rows, size) = (usize_lit(group.rows), usize_lit(group.size));
            quote! {
                let mut #field = #rt::ndarray::Array3::zeros((#rows, batch, #size));
                #rt::__private::scatter(&mut #field, #rt::ndarray::Axis(1), first.0, &first.1.#field);
                #rt::__private::scatter(&mut #field, #rt::ndarray::Axis(1), second.0, &second.1.#field);
            }
        });
        let merged_fields = self.groups.iter().map(|group| &group.output_field);
        let doc = format!("What [`{name}::forward`] returns.");
        quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, PartialEq)]
            #[allow(non_snake_case, non_camel_case_types)]
            pub struct #output {
                #[doc = #y_doc]
                pub y: #rt::ndarray::Array3<f32>,
                #(#fields,)*
            }

            impl #output {
                /// The final states, as the initial state of a next call.
                pub fn into_state(self) -> #state {
                    #state { #(#into_state,)* }
                }

                /// The output of a batch from those of two parts of it
                /// (batch indices and output of each).
                fn __rnn_merge(batch: usize, first: (&[usize], Self), second: (&[usize], Self)) -> Self {
                    let (time, width) = (first.1.y.shape()[1], first.1.y.shape()[2]);
                    let mut y = #rt::ndarray::Array3::zeros((batch, time, width));
                    #rt::__private::scatter(&mut y, #rt::ndarray::Axis(0), first.0, &first.1.y);
                    #rt::__private::scatter(&mut y, #rt::ndarray::Axis(0), second.0, &second.1.y);
                    #(#merges)*
                    Self { y, #(#merged_fields,)* }
                }
            }
        }
    }

    fn emit_weights_struct(&self, layer_idx: usize) -> TokenStream {
        let rt = self.rt;
        let layer = &self.network.layers[layer_idx];
        let plan = &self.plans[layer_idx];
        let ty = self.weights_struct(layer_idx);
        let kept = runtime_weight_fields(layer, plan);
        let mut fields = Vec::new();
        for param in &layer.params {
            let field = format_ident!("{}", param.name);
            if !kept.contains(&field) {
                continue;
            }
            fields.push(match param.shape.len() {
                1 => quote!(#field: #rt::ndarray::Array1<f32>),
                _ => quote!(#field: #rt::ndarray::Array2<f32>),
            });
        }
        for (idx, node) in layer.step.nodes.iter().enumerate() {
            if plan.places[idx] == Place::Const {
                let field = const_field(ValueId(idx as u32));
                if !kept.contains(&field) {
                    continue;
                }
                fields.push(match node.shape {
                    Shape::Matrix(..) => quote!(#field: #rt::ndarray::Array2<f32>),
                    _ => quote!(#field: #rt::ndarray::Array1<f32>),
                });
            }
        }
        for matrix in packed_matrices(layer, plan) {
            let field = packed_field(matrix);
            fields.push(quote!(#field: #rt::__private::PackedMatrix));
        }
        let doc = format!(
            "Weights of layer `{}` #{} (cell `{}`) for one direction.",
            layer.name, layer.stack_idx, layer.cell
        );
        quote! {
            #[doc = #doc]
            #[derive(Debug, Clone)]
            // Fields keep the model's own parameter names. Only what run
            // time reads is kept: matrices only multiplied live packed.
            #[allow(non_snake_case)]
            struct #ty {
                #(#fields,)*
            }
        }
    }

    fn emit_constructors(&self) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let mut layer_inits = Vec::new();
        for (layer_idx, layer) in self.network.layers.iter().enumerate() {
            let plan = &self.plans[layer_idx];
            let ty = self.weights_struct(layer_idx);
            let field = format_ident!("__rnn_layer{}", layer_idx);
            let kept = runtime_weight_fields(layer, plan);
            let mut directions = Vec::new();
            for direction in 0..layer.directions {
                let mut statements = Vec::new();
                let mut field_inits = Vec::new();
                for param in &layer.params {
                    let ident = format_ident!("{}", param.name);
                    let mut names = vec![layer.weight_name(param, direction)];
                    names.extend(layer.bare_weight_name(param));
                    let load = match param.shape[..] {
                        [len] => {
                            let len = usize_lit(len);
                            quote!(__rnn_rt::load1(weights, &[#(#names),*], #len)?)
                        }
                        [rows, cols] => {
                            let (rows, cols) = (usize_lit(rows), usize_lit(cols));
                            quote!(__rnn_rt::load2(weights, &[#(#names),*], #rows, #cols)?)
                        }
                        _ => unreachable!("parameters have rank 1 or 2"),
                    };
                    statements.push(quote!(let #ident = #load;));
                    if kept.contains(&ident) {
                        field_inits.push(quote!(#ident));
                    }
                }
                for (idx, node) in layer.step.nodes.iter().enumerate() {
                    if plan.places[idx] != Place::Const {
                        continue;
                    }
                    let id = ValueId(idx as u32);
                    let ident = const_field(id);
                    let value = self.emit_const_value(layer, plan, id, node);
                    statements.push(quote!(let #ident = #value;));
                    if kept.contains(&ident) {
                        field_inits.push(quote!(#ident));
                    }
                }
                for matrix in packed_matrices(layer, plan) {
                    let field = packed_field(matrix);
                    let local = weight_field(layer, matrix);
                    statements
                        .push(quote!(let #field = __rnn_rt::PackedMatrix::new(#local.view());));
                    field_inits.push(quote!(#field));
                }
                directions.push(quote! {{
                    #(#statements)*
                    #ty { #(#field_inits,)* }
                }});
            }
            layer_inits.push(quote!(#field: ::std::vec::Vec::from([#(#directions),*])));
        }
        let specs = weights::specs(self.network);
        let random_inserts = specs.iter().map(|spec| {
            let name = &spec.name;
            let dims = spec.shape.iter().map(|dim| usize_lit(*dim));
            let hidden = usize_lit(((1.0 / spec.bound).powi(2)).round() as usize);
            quote! {
                weights.insert_f32(#name, __rnn_rt::uniform(&mut rng, &[#(#dims),*], __rnn_rt::pytorch_bound(#hidden)));
            }
        });
        let model = self.model_ident();
        quote! {
            /// Loads the weights from a safetensors file (PyTorch `state_dict`
            /// names; float32 or float64).
            ///
            /// # Errors
            ///
            /// The file cannot be read or parsed, or a weight is missing or
            /// misshaped: the error names the tensor and both shapes.
            pub fn from_safetensors(path: impl ::std::convert::AsRef<::std::path::Path>) -> ::std::result::Result<Self, #rt::RnnError> {
                Self::from_weights(&#rt::TensorMap::load(path)?)
            }

            /// Builds the model from named weight tensors.
            ///
            /// # Errors
            ///
            /// A weight is missing, not floating point, or misshaped.
            pub fn from_weights(weights: &#rt::TensorMap) -> ::std::result::Result<Self, #rt::RnnError> {
                #prelude
                Ok(Self {
                    #(#layer_inits,)*
                    __rnn_workspace: __rnn_rt::Workspace::new(),
                    __rnn_threads: #rt::Threads::default(),
                })
            }

            /// Sets how many threads one call may use (default `Auto`: the
            /// two directions of a bidirectional layer run side by side when
            /// they are large enough). Results do not depend on it.
            pub fn set_threads(&mut self, threads: #rt::Threads) {
                self.__rnn_threads = threads;
            }

            /// The model with a thread setting (see [`Self::set_threads`]).
            #[must_use]
            pub fn with_threads(mut self, threads: #rt::Threads) -> Self {
                self.set_threads(threads);
                self
            }

            /// Weights drawn as PyTorch initialises them, `U(-1/√H, 1/√H)`,
            /// from `seed`: the same on every platform.
            pub fn random(seed: u64) -> Self {
                #prelude
                let mut rng = #rt::__private::SplitMix64::new(seed);
                let mut weights = #rt::TensorMap::new();
                #(#random_inserts)*
                match Self::from_weights(&weights) {
                    Ok(model) => model,
                    Err(error) => unreachable!("internal error: random weights of {} do not load: {error}", stringify!(#model)),
                }
            }
        }
    }

    /// The expression computing a parameter-only value at construction.
    fn emit_const_value(
        &self,
        layer: &ir::Layer,
        plan: &LayerPlan,
        id: ValueId,
        node: &ir::Node,
    ) -> TokenStream {
        let rt = self.rt;
        // At construction, parameters and constants are locals named like
        // the fields they become.
        let local = |operand: ValueId| -> TokenStream {
            let ident = weight_field(layer, operand);
            quote!(#ident)
        };
        let arg = |operand: ValueId| -> TokenStream {
            let operand_node = layer.step.node(operand);
            match (&operand_node.op, operand_node.shape) {
                (Op::Literal(value), Shape::Scalar) => {
                    let value = f32_tokens(*value);
                    quote!(Arg::Scalar(#value))
                }
                (_, Shape::Matrix(..)) => {
                    let local = local(operand);
                    quote!(Arg::Full(#local.view()))
                }
                _ => {
                    let local = local(operand);
                    quote!(Arg::Row(#local.view()))
                }
            }
        };
        debug_assert_eq!(plan.place(id), Place::Const);
        match &node.op {
            Op::Literal(value) => {
                let Shape::Vector(len) = node.shape else {
                    unreachable!("scalar literals are inlined")
                };
                let (len, value) = (usize_lit(len), f32_tokens(*value));
                quote!(#rt::ndarray::Array1::from_elem(#len, #value))
            }
            Op::Slice(base, start, end) => {
                let base = local(*base);
                let (start, end) = (usize_lit(*start), usize_lit(*end));
                match node.shape {
                    Shape::Matrix(..) => quote!(#base.slice(s![#start..#end, ..]).to_owned()),
                    _ => quote!(#base.slice(s![#start..#end]).to_owned()),
                }
            }
            Op::Row(matrix, index) => {
                let matrix = local(*matrix);
                let index = usize_lit(*index);
                quote!(#matrix.row(#index).to_owned())
            }
            Op::Transpose(inner) => {
                let inner = local(*inner);
                quote!(__rnn_rt::transpose(#inner.view()))
            }
            Op::MatVec(matrix, vector) => {
                let (matrix, vector) = (local(*matrix), local(*vector));
                quote!(__rnn_rt::matvec(#matrix.view(), #vector.view()))
            }
            Op::Unary(..) | Op::Binary(..) | Op::Clip(..) => {
                let operands = node.op.operands();
                let args = operands.iter().map(|operand| arg(*operand));
                let (function, operation) = self.elementwise(&node.op, true);
                let operation = operation.into_iter();
                match node.shape {
                    Shape::Matrix(rows, cols) => {
                        let (rows, cols) = (usize_lit(rows), usize_lit(cols));
                        quote!(__rnn_rt::#function(#rows, #cols, #(#args,)* #(#operation)*))
                    }
                    Shape::Vector(len) => {
                        let len = usize_lit(len);
                        quote!(__rnn_rt::into_vector(__rnn_rt::#function(1, #len, #(#args,)* #(#operation)*)))
                    }
                    Shape::Scalar => {
                        unreachable!("scalar arithmetic is folded when the IR is built")
                    }
                }
            }
            Op::Input(_) | Op::State(_) | Op::Param(_) => unreachable!("not a derived constant"),
        }
    }

    /// The runtime call computing an elementwise node (`unary`, `binary`
    /// or `clip`, with a `const_` prefix at construction) and its
    /// operation argument.
    fn elementwise(&self, op: &Op, at_construction: bool) -> (Ident, Option<TokenStream>) {
        let prefix = if at_construction { "const_" } else { "" };
        let (kind, operation) = match op {
            Op::Unary(func, _) => {
                let variant = match func {
                    Func::Neg => "Neg",
                    Func::Sigmoid => "Sigmoid",
                    Func::Tanh => "Tanh",
                    Func::Relu => "Relu",
                    Func::Exp => "Exp",
                    Func::Log => "Log",
                    Func::Abs => "Abs",
                    Func::Sign => "Sign",
                    Func::Sqrt => "Sqrt",
                    Func::Softplus => "Softplus",
                    other => unreachable!("{other:?} takes two operands"),
                };
                let variant = format_ident!("{}", variant);
                ("unary", Some(quote!(__rnn_rt::Unary::#variant)))
            }
            Op::Binary(func, _, _) => {
                let variant = match func {
                    Func::Add => "Add",
                    Func::Sub => "Sub",
                    Func::Mul => "Mul",
                    Func::Div => "Div",
                    Func::Min => "Min",
                    Func::Max => "Max",
                    Func::SoftThreshold => "SoftThreshold",
                    other => unreachable!("{other:?} does not take two operands"),
                };
                let variant = format_ident!("{}", variant);
                ("binary", Some(quote!(__rnn_rt::Binary::#variant)))
            }
            Op::Clip(..) => ("clip", None),
            other => unreachable!("{other:?} is not elementwise"),
        };
        (format_ident!("{prefix}{kind}"), operation)
    }

    /// The rows of a computed value or input as a 2-D view, in the current
    /// phase: values with one row per valid step are read at rows
    /// `__rnn_off..__rnn_off + __rnn_n`, values with one row per sequence
    /// at rows `..__rnn_n`.
    fn view(
        &self,
        layer: &ir::Layer,
        plan: &LayerPlan,
        id: ValueId,
        cols: Option<(usize, usize)>,
    ) -> TokenStream {
        let node = layer.step.node(id);
        let (base, rows) = match (&node.op, plan.place(id)) {
            (Op::Slice(inner, start, end), Place::View) => {
                let cols = match cols {
                    Some((a, b)) => (start + a, start + b),
                    None => (*start, *end),
                };
                return self.view(layer, plan, *inner, Some(cols));
            }
            (Op::Input(k), _) => (input_ident(*k), Rows::of(layer, plan, id)),
            (Op::State(k), _) => (state_ident(*k), Rows::Sequence),
            (_, Place::Hoisted | Place::Context | Place::Step) => {
                (buffer_ident(plan, id), Rows::of(layer, plan, id))
            }
            (op, place) => unreachable!("{op:?} at {place:?} has no rows"),
        };
        let rows = rows.range();
        match cols {
            Some((start, end)) => {
                let (start, end) = (usize_lit(start), usize_lit(end));
                quote!(#base.slice(s![#rows, #start..#end]))
            }
            None => quote!(#base.slice(s![#rows, ..])),
        }
    }

    /// The statements computing `out`: the matrix product `product`, plus
    /// `init` when given: a constant row (rows set to it, then the product
    /// accumulated onto them) or a hoisted value (the product accumulated
    /// onto its rows, in place).
    fn emit_product(
        &self,
        layer: &ir::Layer,
        plan: &LayerPlan,
        out: ValueId,
        product: ValueId,
        init: Option<ValueId>,
        share: Share,
    ) -> TokenStream {
        let Op::MatVec(matrix, vector) = layer.step.node(product).op else {
            unreachable!("a product is a matrix product")
        };
        let buffer = buffer_ident(plan, out);
        let rows = Rows::of(layer, plan, out).range();
        let out_view = quote!(#buffer.slice_mut(s![#rows, ..]));
        let packed = packed_field(matrix);
        let vector = self.view(layer, plan, vector, None);
        // One side of a split step computes its columns only.
        let (suffix, columns) = match share {
            Share::All => ("", TokenStream::new()),
            Share::Side => ("_columns", quote!(, __rnn_columns)),
        };
        match init {
            Some(init) if plan.alias[out.index()] != Some(init) => {
                let function = format_ident!("gemm_packed_onto_row{}", suffix);
                let field = weight_field(layer, init);
                quote! {
                    __rnn_rt::#function(#vector, &__rnn_w.#packed, #out_view, __rnn_rt::vector(&__rnn_w.#field) #columns);
                }
            }
            _ => {
                let function = format_ident!("gemm_packed{}", suffix);
                let accumulate = init.is_some();
                quote!(__rnn_rt::#function(#vector, &__rnn_w.#packed, #out_view, #accumulate #columns);)
            }
        }
    }

    /// The statements of a phase's work, in order; the types of its fused
    /// passes are added to `items`. `step`: the work is the step's, whose
    /// pass may store the step's output rows. `share`: the columns it
    /// computes.
    fn emit_work(
        &self,
        layer: &ir::Layer,
        plan: &LayerPlan,
        (work, step, share): (&[Work], bool, Share),
        items: &mut Vec<TokenStream>,
    ) -> Vec<TokenStream> {
        work.iter()
            .map(|item| match item {
                Work::MatVec { out, product, init } => {
                    self.emit_product(layer, plan, *out, *product, *init, share)
                }
                Work::Fused(ids) => {
                    let stores_output = step && pass_stores_output(layer, plan, ids);
                    self.emit_fused(layer, plan, ids, (stores_output, share), items)
                }
            })
            .collect()
    }

    /// One pass over the rows `..__rnn_n` running the elementwise nodes
    /// `ids` on each row in turn. Buffers are bound as slices once, before
    /// the loop. In blocks of lanes when the pass allows it
    /// ([`lanes_width`]): the pass is a type implementing the
    /// runtime's `Pass`, declared once per layer function in `items`, and
    /// values read only in the pass live in registers. Otherwise in tiles
    /// of rows, one runtime call per operation and tile, with values read
    /// only in this pass in scratch tiles.
    fn emit_fused(
        &self,
        layer: &ir::Layer,
        plan: &LayerPlan,
        ids: &[ValueId],
        (stores_output, share): (bool, Share),
        items: &mut Vec<TokenStream>,
    ) -> TokenStream {
        let places = &plan.places;
        let written: Vec<ValueId> = ids
            .iter()
            .copied()
            .filter(|id| !plan.scratch[id.index()])
            .collect();
        let mut read: Vec<ValueId> = Vec::new();
        for id in ids {
            for operand in layer.step.node(*id).op.operands() {
                let root = lower::view_root(layer, places, operand);
                let place = plan.place(root);
                let name = binding_ident(layer, plan, root);
                let bound = place == Place::Literal
                    || plan.scratch[root.index()]
                    || written.contains(&root)
                    || read.contains(&root)
                    // A state whose new value this pass writes into it.
                    || written.iter().any(|id| binding_ident(layer, plan, *id) == name);
                if !bound {
                    read.push(root);
                }
            }
        }
        let bindings = read.iter().map(|root| {
            let binding = binding_ident(layer, plan, *root);
            let source = match (&layer.step.node(*root).op, plan.place(*root)) {
                (_, Place::Param | Place::Const) => {
                    let field = weight_field(layer, *root);
                    return quote!(let #binding = __rnn_rt::vector(&__rnn_w.#field););
                }
                (Op::Input(k), _) => input_ident(*k),
                (Op::State(k), _) => state_ident(*k),
                _ => buffer_ident(plan, *root),
            };
            quote!(let #binding = __rnn_rt::rows(&#source);)
        });
        let outputs = written.iter().map(|id| {
            let (binding, buffer) = (binding_ident(layer, plan, *id), buffer_ident(plan, *id));
            quote!(let #binding = __rnn_rt::rows_mut(&mut #buffer);)
        });
        let bindings: Vec<TokenStream> = bindings.chain(outputs).collect();
        if let Some(width) = lanes_width(layer, plan, ids) {
            let reads: Vec<Ident> = read
                .iter()
                .map(|id| binding_ident(layer, plan, *id))
                .collect();
            let writes: Vec<Ident> = written
                .iter()
                .map(|id| binding_ident(layer, plan, *id))
                .collect();
            let name = format_ident!("__RnnPass{}", items.len());
            items.push(self.emit_pass_lanes(
                layer,
                plan,
                ids,
                (&name, width),
                (&reads, &writes),
                (stores_output, share),
            ));
            let width = usize_lit(width);
            let output = match (stores_output, share) {
                (false, _) => TokenStream::new(),
                (true, Share::All) => {
                    quote!(__rnn_out: __rnn_out.view_mut(), __rnn_packing, __rnn_t, __rnn_place,)
                }
                // This side's columns of the output, from its first.
                (true, Share::Side) => quote! {
                    __rnn_out: __rnn_out.view_mut(), __rnn_packing, __rnn_t, __rnn_place,
                    __rnn_col0: __rnn_side.columns(#width).start,
                },
            };
            let pass = quote!(#name { #(#reads,)* #(#writes,)* #output __rnn_off, __rnn_hoff });
            let run = if share == Share::Side {
                quote!(__rnn_rt::run_pass_columns(&mut #pass, __rnn_n, __rnn_side.columns(#width));)
            } else {
                quote!(__rnn_rt::run_pass(&mut #pass, __rnn_n, #width);)
            };
            return quote! {{
                #(#bindings)*
                #run
            }};
        }
        let tile_rows = tile_rows(layer, plan);
        let statements = ids.iter().map(|id| {
            let node = layer.step.node(*id);
            let Shape::Vector(width) = node.shape else {
                unreachable!("per-sequence values are vectors")
            };
            let operands = node.op.operands();
            let operands = operands
                .iter()
                .map(|operand| self.tile_operand(layer, plan, *operand, width));
            let (function, operation) = self.elementwise(&node.op, false);
            let function = format_ident!("{}_tile", function);
            let operation = operation.into_iter();
            let width_lit = usize_lit(width);
            let out = if plan.scratch[id.index()] {
                let ident = scratch_ident(*id);
                quote!(&mut #ident)
            } else {
                let binding = binding_ident(layer, plan, *id);
                let row = Rows::of(layer, plan, *id).tile_row();
                quote!(&mut #binding[#row * #width_lit..])
            };
            let tile =
                quote!(__rnn_rt::Tile { rows: __rnn_m, width: #width_lit, out_stride: #width_lit });
            quote!(__rnn_rt::#function(#tile, #out, #(#operands,)* #(#operation)*);)
        });
        let tile_rows = usize_lit(tile_rows);
        quote! {{
            #(#bindings)*
            for __rnn_r0 in (0..__rnn_n).step_by(#tile_rows) {
                let __rnn_m = (__rnn_n - __rnn_r0).min(#tile_rows);
                let __rnn_p0 = __rnn_off + __rnn_r0;
                let __rnn_h0 = __rnn_hoff + __rnn_r0;
                #(#statements)*
            }
        }}
    }

    /// The type of a fused pass in blocks of lanes, and its `Pass`
    /// implementation: one block of columns `__rnn_col..` of one row
    /// through every node of the pass, each node a local value, stored
    /// where it lives beyond the pass.
    ///
    /// With `stores_output`, the step's output (a node of the pass) is also
    /// stored where the step's output rows go (the rows of the layer's
    /// output that the runtime's `Packing::target_row` gives for the
    /// layer's `Placement`), instead of being copied there after the pass.
    fn emit_pass_lanes(
        &self,
        layer: &ir::Layer,
        plan: &LayerPlan,
        ids: &[ValueId],
        (name, width): (&Ident, usize),
        (reads, writes): (&[Ident], &[Ident]),
        (stores_output, share): (bool, Share),
    ) -> TokenStream {
        let rt = self.rt;
        let local = |id: ValueId| format_ident!("__rnn_l{}", id.0);
        let operand = |id: ValueId| -> TokenStream {
            let (root, start, end) = operand_columns(layer, plan, id);
            let node = layer.step.node(root);
            let place = plan.place(root);
            if place == Place::Literal {
                let Op::Literal(value) = node.op else {
                    unreachable!("literal place holds a literal")
                };
                let value = f32_tokens(value);
                return quote!(V::splat(#value));
            }
            if ids.contains(&root) {
                let ident = local(root);
                return quote!(#ident);
            }
            let per_row = end - start == 1 && width != 1;
            let binding = binding_ident(layer, plan, root);
            // The index of the row's first element read, as terms of a sum.
            let mut at = Vec::new();
            if !place.is_const() {
                let full = match node.shape {
                    Shape::Vector(len) => len,
                    _ => 1,
                };
                let row = Rows::of(layer, plan, root).tile_row();
                let full = usize_lit(full);
                at.push(quote!(#row * #full));
            }
            if start != 0 || (per_row && at.is_empty()) {
                let start = usize_lit(start);
                at.push(quote!(#start));
            }
            if per_row {
                quote!(V::splat(#binding[#(#at)+*]))
            } else {
                quote!(V::load(&#binding[#(#at +)* __rnn_col..]))
            }
        };
        let width_lit = usize_lit(width);
        // A split pass owns the columns of its side of the output, from
        // `__rnn_col0` on.
        let (col0_field, col0) = if share == Share::Side {
            (quote!(__rnn_col0: usize,), quote!(-self.__rnn_col0))
        } else {
            (TokenStream::new(), TokenStream::new())
        };
        let output_fields = if stores_output {
            quote! {
                __rnn_out: #rt::ndarray::ArrayViewMut2<'a, f32>,
                __rnn_packing: &'a #rt::__private::Packing,
                __rnn_t: usize,
                __rnn_place: #rt::__private::Placement,
                #col0_field
            }
        } else {
            TokenStream::new()
        };
        let statements = ids.iter().map(|id| {
            let node = layer.step.node(*id);
            let operands: Vec<TokenStream> =
                node.op.operands().iter().map(|o| operand(*o)).collect();
            let (_, operation) = self.elementwise(&node.op, false);
            let value = match (&node.op, operation) {
                (Op::Unary(..), Some(op)) => {
                    let a = &operands[0];
                    quote!(#a.unary(#op))
                }
                (Op::Binary(..), Some(op)) => {
                    let (a, b) = (&operands[0], &operands[1]);
                    quote!(#a.binary(#b, #op))
                }
                (Op::Clip(..), _) => {
                    let (a, lo, hi) = (&operands[0], &operands[1], &operands[2]);
                    quote!(#a.clip(#lo, #hi))
                }
                (op, _) => unreachable!("{op:?} is not elementwise"),
            };
            let ident = local(*id);
            let store = if plan.scratch[id.index()] {
                TokenStream::new()
            } else {
                let binding = binding_ident(layer, plan, *id);
                let row = Rows::of(layer, plan, *id).tile_row();
                quote!(#ident.store(&mut #binding[#row * #width_lit + __rnn_col..]);)
            };
            let output = if stores_output && *id == layer.step.output {
                quote! {
                    let __rnn_target = self.__rnn_packing.target_row(self.__rnn_t, __rnn_row, self.__rnn_place);
                    let mut __rnn_row_out = self.__rnn_out.row_mut(__rnn_target);
                    let __rnn_row_out = __rnn_row_out
                        .as_slice_mut()
                        .expect("output rows are contiguous");
                    #ident.store(&mut __rnn_row_out[__rnn_col #col0..]);
                }
            } else {
                TokenStream::new()
            };
            quote! {
                let #ident: V = #value;
                #store
                #output
            }
        });
        quote! {
            struct #name<'a> {
                #(#reads: &'a [f32],)*
                #(#writes: &'a mut [f32],)*
                #output_fields
                __rnn_off: usize,
                __rnn_hoff: usize,
            }
            impl #rt::__private::Pass for #name<'_> {
                #[inline(always)]
                #[allow(unused_variables, clippy::identity_op, clippy::erasing_op)]
                fn lanes<V: #rt::__private::Lanes>(&mut self, __rnn_row: usize, __rnn_col: usize) {
                    use #rt::__private as __rnn_rt;
                    #(let #reads: &[f32] = self.#reads;)*
                    #(let #writes: &mut [f32] = &mut *self.#writes;)*
                    let __rnn_r0 = __rnn_row;
                    let __rnn_p0 = self.__rnn_off + __rnn_row;
                    let __rnn_h0 = self.__rnn_hoff + __rnn_row;
                    #(#statements)*
                }
            }
        }
    }

    /// An operand of a tile operation inside a fused pass, for an output of
    /// `out_width` columns: the columns of value `id` (a view's, of the
    /// value under it) at the current tile's rows.
    fn tile_operand(
        &self,
        layer: &ir::Layer,
        plan: &LayerPlan,
        id: ValueId,
        out_width: usize,
    ) -> TokenStream {
        let (id, start, end) = operand_columns(layer, plan, id);
        let node = layer.step.node(id);
        let place = plan.place(id);
        if place == Place::Literal {
            let Op::Literal(value) = node.op else {
                unreachable!("literal place holds a literal")
            };
            let value = f32_tokens(value);
            return quote!(__rnn_rt::Operand::Value(#value));
        }
        let full = match node.shape {
            Shape::Vector(len) => len,
            _ => 1,
        };
        // A one-element vector broadcasts over the columns.
        let per_row = end - start == 1 && out_width != 1;
        let binding = binding_ident(layer, plan, id);
        let start_lit = usize_lit(start);
        if place.is_const() {
            if per_row {
                return quote!(__rnn_rt::Operand::Value(#binding[#start_lit]));
            }
            let data = if start == 0 && end == full {
                quote!(#binding)
            } else {
                let end = usize_lit(end);
                quote!(&#binding[#start_lit..#end])
            };
            return quote!(__rnn_rt::Operand::Rows { data: #data, stride: 0 });
        }
        let data = if plan.scratch[id.index()] {
            let ident = scratch_ident(id);
            if start == 0 {
                quote!(&#ident)
            } else {
                quote!(&#ident[#start_lit..])
            }
        } else {
            let row = Rows::of(layer, plan, id).tile_row();
            let full = usize_lit(full);
            if start == 0 {
                quote!(&#binding[#row * #full..])
            } else {
                quote!(&#binding[#row * #full + #start_lit..])
            }
        };
        let stride = usize_lit(full);
        if per_row {
            quote!(__rnn_rt::Operand::PerRow { data: #data, stride: #stride })
        } else {
            quote!(__rnn_rt::Operand::Rows { data: #data, stride: #stride })
        }
    }

    fn emit_layer_fn(&self, layer_idx: usize, variant: Variant) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let layer = &self.network.layers[layer_idx];
        let plan = &self.plans[layer_idx];
        let ty = self.weights_struct(layer_idx);
        let name = self.layer_fn(layer_idx, variant);
        let input_params = (0..layer.inputs.len()).map(|k| {
            let ident = input_ident(k);
            quote!(#ident: #rt::ndarray::ArrayView2<'_, f32>)
        });
        let init_params = (0..layer.states.len()).map(|k| {
            let ident = format_ident!("__rnn_init{}", k);
            quote!(#ident: #rt::ndarray::Array2<f32>)
        });
        let state_types = layer
            .states
            .iter()
            .map(|_| quote!(#rt::ndarray::Array2<f32>));
        let states = (0..layer.states.len()).map(|k| {
            let (state, init) = (state_ident(k), format_ident!("__rnn_init{}", k));
            quote!(let mut #state = #init;)
        });
        let mut buffers = Vec::new();
        // Buffers given back to the workspace at the end.
        let mut returned: Vec<Ident> = Vec::new();
        let tile = usize_lit(tile_rows(layer, plan));
        // Values of passes run in blocks of lanes live in registers.
        let mut in_registers = vec![false; layer.step.nodes.len()];
        for work in [&plan.context, &plan.hoisted, &plan.step]
            .into_iter()
            .flatten()
        {
            if let Work::Fused(ids) = work {
                if lanes_width(layer, plan, ids).is_some() {
                    ids.iter().for_each(|id| in_registers[id.index()] = true);
                }
            }
        }
        for (idx, node) in layer.step.nodes.iter().enumerate() {
            let id = ValueId(idx as u32);
            let place = plan.place(id);
            if !matches!(place, Place::Context | Place::Hoisted | Place::Step) {
                continue;
            }
            if plan.folded[idx] || plan.alias[idx].is_some() || plan.home[idx].is_some() {
                continue;
            }
            let Shape::Vector(len) = node.shape else {
                unreachable!("per-sequence values are vectors")
            };
            let len = usize_lit(len);
            if plan.scratch[idx] {
                if in_registers[idx] {
                    continue;
                }
                let ident = scratch_ident(id);
                buffers.push(quote!(let mut #ident = vec![0f32; #tile * #len];));
                continue;
            }
            let ident = value_ident(id);
            let rows = if place == Place::Hoisted {
                quote!(__rnn_hrows)
            } else {
                quote!(__rnn_batch)
            };
            buffers.push(quote!(let mut #ident = __rnn_ws.take(#rows, #len);));
            returned.push(ident);
        }
        let mut passes = Vec::new();
        let share = if variant == Variant::Split {
            Share::Side
        } else {
            Share::All
        };
        let context_nodes =
            self.emit_work(layer, plan, (&plan.context, false, Share::All), &mut passes);
        let hoisted_nodes = self.emit_work(layer, plan, (&plan.hoisted, false, share), &mut passes);
        let step_nodes = self.emit_work(layer, plan, (&plan.step, true, share), &mut passes);
        let forward_copy = self.copy_into(
            layer,
            plan,
            quote!(__rnn_out.slice_mut(s![__rnn_off..__rnn_off + __rnn_n, ..])),
            layer.step.output,
            layer.output_size,
        );
        let output_rows = match plan.place(layer.step.output) {
            Place::Param | Place::Const => {
                let field = weight_field(layer, layer.step.output);
                let len = usize_lit(layer.output_size);
                quote!(__rnn_w.#field.broadcast((__rnn_n, #len)).expect("a row broadcasts"))
            }
            _ => self.view(layer, plan, layer.step.output, None),
        };
        // Where a step's outputs go: the next step's rows of a packed
        // buffer, or (backward direction: the sequences run reversed; last
        // layer: the network's padded output) rows found per sequence.
        let output_in_pass = plan
            .step
            .iter()
            .any(|work| matches!(work, Work::Fused(ids) if pass_stores_output(layer, plan, ids)));
        let output_copy = if output_in_pass {
            // Stored by the step's pass.
            TokenStream::new()
        } else {
            quote! {
                match __rnn_place {
                    __rnn_rt::Placement::Packed => { #forward_copy }
                    __rnn_place => __rnn_packing.write_step(__rnn_t, #output_rows, __rnn_out.view_mut(), __rnn_place),
                }
            }
        };
        let update = |k: usize| {
            if plan.home[layer.step.updates[k].index()] == Some(k) {
                // Written into the state by the step's pass.
                return TokenStream::new();
            }
            let state = state_ident(k);
            let target = quote!(#state.slice_mut(s![..__rnn_n, ..]));
            self.copy_into(
                layer,
                plan,
                target,
                layer.step.updates[k],
                layer.states[k].size,
            )
        };
        let updates = (0..layer.states.len()).map(update);
        // A state's new value may be another state read as it was (`h = c;
        // c = h;`): copy such values aside before any state is written.
        let reads_state = |id: ValueId| self.reads_state_directly(layer, plan, id);
        let staged: Vec<usize> = (0..layer.states.len())
            .filter(|k| reads_state(layer.step.updates[*k]))
            .collect();
        let stage_buffers = staged.iter().map(|k| {
            let ident = format_ident!("__rnn_next{}", k);
            let len = usize_lit(layer.states[*k].size);
            quote!(let mut #ident = __rnn_ws.take(__rnn_batch, #len);)
        });
        returned.extend(staged.iter().map(|k| format_ident!("__rnn_next{}", k)));
        let stage_copies = staged.iter().map(|k| {
            let ident = format_ident!("__rnn_next{}", k);
            let target = quote!(#ident.slice_mut(s![..__rnn_n, ..]));
            self.copy_into(
                layer,
                plan,
                target,
                layer.step.updates[*k],
                layer.states[*k].size,
            )
        });
        let updates: Vec<TokenStream> = if staged.is_empty() {
            updates.collect()
        } else {
            (0..layer.states.len())
                .map(|k| {
                    let state = state_ident(k);
                    if staged.contains(&k) {
                        let ident = format_ident!("__rnn_next{}", k);
                        quote!(__rnn_rt::copy_rows(#state.slice_mut(s![..__rnn_n, ..]), #ident.slice(s![..__rnn_n, ..]));)
                    } else {
                        update(k)
                    }
                })
                .collect()
        };
        // A backward direction's chunk of each per-step input, gathered
        // reversed into a buffer when the chunk starts.
        let gathered: Vec<usize> = (0..layer.inputs.len())
            .filter(|k| plan.gathers_inputs && layer.inputs[*k].per_step)
            .collect();
        let mut gather_buffers = Vec::new();
        let mut gathers = Vec::new();
        for &k in &gathered {
            let (ident, gather) = (input_ident(k), format_ident!("__rnn_g{}", k));
            let width = usize_lit(layer.inputs[k].size);
            gather_buffers.push(quote! {
                let mut #gather = if __rnn_place.reversed() && !__rnn_packing.uniform() {
                    __rnn_ws.take(__rnn_hrows, #width)
                } else {
                    Array2::zeros((0, #width))
                };
            });
            gathers.push(quote! {
                let #ident = if __rnn_hflip {
                    #ident.slice(s![__rnn_packing.reversed_block(__rnn_t, __rnn_end), ..])
                } else if __rnn_place.reversed() {
                    __rnn_packing.gather_reversed(#ident, __rnn_t, __rnn_end, #gather.view_mut());
                    #gather.slice(s![..__rnn_n, ..])
                } else {
                    #ident.slice(s![__rnn_off..__rnn_off + __rnn_n, ..])
                };
            });
            returned.push(gather);
        }
        if !gathered.is_empty() {
            gather_buffers.push(quote! {
                let mut __rnn_hend = 0usize;
                let mut __rnn_hflip = false;
            });
        }
        // Values that read only the step's input: every step of a chunk of
        // steps at once, when the chunk starts.
        let hoisted_chunk = if hoisted_nodes.is_empty() {
            TokenStream::new()
        } else {
            // Gathered inputs are read from their first row. When every
            // sequence has the same length, a backward direction's chunk
            // is a block of the input in place, in time order: its steps'
            // rows are found from the end of the block (`__rnn_hflip`).
            let (flip, input_offset) = if gathers.is_empty() {
                (TokenStream::new(), TokenStream::new())
            } else {
                (
                    quote! {
                        __rnn_hend = __rnn_end;
                        __rnn_hflip = __rnn_place.reversed() && __rnn_packing.uniform();
                    },
                    quote!(let __rnn_off = 0;),
                )
            };
            quote! {
                if __rnn_t % __rnn_chunk == 0 {
                    __rnn_hbase = __rnn_off;
                    let __rnn_hoff = 0;
                    let __rnn_end = (__rnn_t + __rnn_chunk).min(__rnn_packing.max_len());
                    let __rnn_n = __rnn_packing.offset(__rnn_end) - __rnn_off;
                    #flip
                    #(#gathers)*
                    #input_offset
                    #(#hoisted_nodes)*
                }
            }
        };
        let hoisted_offset = if gathers.is_empty() {
            quote!(let __rnn_hoff = __rnn_off - __rnn_hbase;)
        } else {
            quote! {
                let __rnn_hoff = if __rnn_hflip {
                    __rnn_packing.reversed_block_row(__rnn_t, __rnn_hend)
                } else {
                    __rnn_off - __rnn_hbase
                };
            }
        };
        let step_body = quote! {
            let __rnn_n = __rnn_packing.batch_size(__rnn_t);
            let __rnn_off = __rnn_packing.offset(__rnn_t);
            #hoisted_chunk
            #hoisted_offset
            #(#step_nodes)*
            #output_copy
            #(#stage_copies)*
            #(#updates)*
        };
        let time_loop = match variant {
            Variant::Dynamic => quote! {
                for __rnn_t in 0..__rnn_packing.max_len() {
                    #step_body
                }
            },
            Variant::Split => {
                // After each step the two sides trade their halves of the
                // new states: both start the next step with whole states.
                let states = split_traded_states(layer, plan)
                    .into_iter()
                    .map(state_ident);
                quote! {
                    for __rnn_t in 0..__rnn_packing.max_len() {
                        #step_body
                        __rnn_exchange.swap(__rnn_side, __rnn_t, __rnn_n, &mut [#(__rnn_rt::rows_mut(&mut #states),)*]);
                    }
                }
            }
            Variant::DynamicBy(unroll) => {
                let blocks = (0..unroll).map(|k| {
                    let k = usize_lit(k);
                    quote! {{
                        let __rnn_t = __rnn_t0 + #k;
                        #step_body
                    }}
                });
                let unroll = usize_lit(unroll);
                quote! {
                    let __rnn_max_len = __rnn_packing.max_len();
                    let mut __rnn_t0 = 0;
                    while __rnn_t0 + #unroll <= __rnn_max_len {
                        #(#blocks)*
                        __rnn_t0 += #unroll;
                    }
                    for __rnn_t in __rnn_t0..__rnn_max_len {
                        #step_body
                    }
                }
            }
            Variant::Static(steps) if steps <= STATIC_INLINE_STEPS => {
                let blocks = (0..steps).map(|t| {
                    let t = usize_lit(t);
                    quote! {
                        if __rnn_max_len > #t {
                            let __rnn_t: usize = #t;
                            #step_body
                        }
                    }
                });
                quote! {
                    let __rnn_max_len = __rnn_packing.max_len();
                    #(#blocks)*
                }
            }
            Variant::Static(steps) => {
                // Past `STATIC_INLINE_STEPS` the step is written once, as a
                // closure over the buffers, and called once per step: a
                // copy of the step per time step made `static 500` take
                // minutes of rustc (BENCHMARKS.md), for no speed.
                let calls = (0..steps).map(|t| {
                    let t = usize_lit(t);
                    quote! {
                        if __rnn_max_len > #t {
                            __rnn_step(#t);
                        }
                    }
                });
                quote! {
                    let mut __rnn_step = |__rnn_t: usize| {
                        #step_body
                    };
                    let __rnn_max_len = __rnn_packing.max_len();
                    #(#calls)*
                }
            }
        };
        let state_returns = (0..layer.states.len()).map(state_ident);
        let (split_params, split_columns) = match (variant, split_width(layer, plan)) {
            (Variant::Split, Some(width)) => {
                let width = usize_lit(width);
                (
                    quote! {
                        __rnn_side: #rt::__private::Side,
                        __rnn_exchange: &#rt::__private::Exchange,
                    },
                    quote! {
                        let __rnn_half = __rnn_side.columns(#width);
                        let __rnn_columns = __rnn_rt::Columns::periodic(#width, __rnn_half.start, __rnn_half.end)
                            .expect("split_width keeps the halves aligned");
                    },
                )
            }
            (Variant::Split, None) => {
                unreachable!("internal error: only layers with a split width split")
            }
            _ => (TokenStream::new(), TokenStream::new()),
        };
        let doc = format!(
            "Layer `{}` #{} ({}), one direction, over packed rows.",
            layer.name,
            layer.stack_idx,
            variant.suffix()
        );
        let stage_buffers: Vec<TokenStream> = stage_buffers.collect();
        let context_block = if context_nodes.is_empty() {
            TokenStream::new()
        } else {
            quote! {{
                // Values that read contexts: once per call.
                let __rnn_off = 0;
                let __rnn_hoff = 0;
                let __rnn_n = __rnn_batch;
                #(#context_nodes)*
            }}
        };
        let hoisted_width: usize = layer
            .step
            .nodes
            .iter()
            .enumerate()
            .filter(|(idx, _)| {
                plan.places[*idx] == Place::Hoisted && !plan.folded[*idx] && !plan.scratch[*idx]
            })
            .map(|(_, node)| match node.shape {
                Shape::Vector(len) => len,
                _ => 1,
            })
            .sum();
        // Steps per chunk of input projections, and the rows of the largest
        // chunk (the first: sequences are sorted by length).
        let chunk_bytes = usize_lit(HOISTED_CHUNK_BYTES);
        let row_bytes = usize_lit(4 * hoisted_width.max(1));
        let chunking = quote! {
            let __rnn_chunk = __rnn_packing.chunk_steps(#row_bytes, #chunk_bytes);
            let __rnn_hrows = __rnn_packing.chunk_rows(__rnn_chunk);
            let mut __rnn_hbase = 0usize;
        };
        quote! {
            #[doc = #doc]
            #[allow(clippy::too_many_arguments, clippy::type_complexity, clippy::identity_op, clippy::useless_vec, unused_mut, unused_variables)]
            fn #name(
                __rnn_w: &#ty,
                __rnn_ws: &#rt::__private::Workspace,
                __rnn_packing: &#rt::__private::Packing,
                #(#input_params,)*
                #(#init_params,)*
                mut __rnn_out: #rt::ndarray::ArrayViewMut2<'_, f32>,
                __rnn_place: #rt::__private::Placement,
                #split_params
            ) -> (#(#state_types,)*) {
                #prelude
                #(#passes)*
                #split_columns
                let __rnn_batch = __rnn_packing.batch();
                let __rnn_rows = __rnn_packing.rows();
                #chunking
                #(#gather_buffers)*
                #(#states)*
                #(#buffers)*
                #(#stage_buffers)*
                #context_block
                #time_loop
                #(__rnn_ws.give(#returned);)*
                (#(#state_returns,)*)
            }
        }
    }

    /// Whether a value is a state's buffer itself (possibly a column range).
    fn reads_state_directly(&self, layer: &ir::Layer, plan: &LayerPlan, id: ValueId) -> bool {
        match (&layer.step.node(id).op, plan.place(id)) {
            (Op::State(_), _) => true,
            (Op::Slice(inner, _, _), Place::View) => self.reads_state_directly(layer, plan, *inner),
            _ => false,
        }
    }

    /// The statement copying value `id` (of `len` columns), read whole at
    /// the current step, into the rows `target`: a computed value's rows,
    /// or a constant row repeated.
    fn copy_into(
        &self,
        layer: &ir::Layer,
        plan: &LayerPlan,
        target: TokenStream,
        id: ValueId,
        len: usize,
    ) -> TokenStream {
        match plan.place(id) {
            Place::Param | Place::Const => {
                let field = weight_field(layer, id);
                quote!(__rnn_rt::fill_rows(#target, &__rnn_w.#field);)
            }
            Place::Literal => unreachable!("updates and outputs are vectors of size {len}"),
            _ => {
                let view = self.view(layer, plan, id, None);
                quote!(__rnn_rt::copy_rows(#target, #view);)
            }
        }
    }

    fn per_step_inputs(&self) -> Vec<(usize, &ir::Input)> {
        self.network
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, input)| input.per_step)
            .collect()
    }

    fn context_inputs(&self) -> Vec<(usize, &ir::Input)> {
        self.network
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, input)| !input.per_step)
            .collect()
    }

    /// `__rnn_run`: every layer and direction over packed inputs, given
    /// the variant to use. Returns the padded output `[B, T, n]` and the
    /// final state in batch order.
    fn emit_run(&self) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let state = self.state_struct();
        let network_inputs = self.network.inputs.iter().enumerate().map(|(k, _)| {
            let ident = format_ident!("__rnn_net{}", k);
            quote!(#ident: #rt::ndarray::ArrayView2<'_, f32>)
        });
        let finals = self.groups.iter().map(|group| {
            let field = &group.field;
            let (rows, size) = (usize_lit(group.rows), usize_lit(group.size));
            quote!(let mut #field = Array3::<f32>::zeros((#rows, __rnn_batch, #size));)
        });
        let variants = self.variants();
        let mut layers = Vec::new();
        for (layer_idx, layer) in self.network.layers.iter().enumerate() {
            let weights_field = format_ident!("__rnn_layer{}", layer_idx);
            let mut directions = Vec::new();
            for direction in 0..layer.directions {
                let reverse = direction == 1;
                let row = usize_lit(layer.stack_idx * layer.directions + direction);
                let input_bindings: Vec<TokenStream> = layer
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(k, input)| {
                        let ident = input_ident(k);
                        let source = match input.source {
                            InputSource::Previous => {
                                let previous = format_ident!("__rnn_y{}", layer_idx - 1);
                                quote!(#previous.view())
                            }
                            InputSource::Network(idx) => {
                                let net = format_ident!("__rnn_net{}", idx);
                                quote!(#net)
                            }
                        };
                        let gathered = self.plans[layer_idx].gathers_inputs;
                        if reverse && input.per_step && !gathered {
                            // The input in the backward direction's time
                            // order, in a buffer of the workspace.
                            let width = usize_lit(input.size);
                            quote! {
                                let mut #ident = self.__rnn_workspace.take(__rnn_packing.rows(), #width);
                                __rnn_packing.reverse_into(#source, #ident.view_mut());
                            }
                        } else {
                            quote!(let #ident = #source;)
                        }
                    })
                    .collect();
                let init_bindings = layer.states.iter().enumerate().map(|(k, state_info)| {
                    let group = self
                        .groups
                        .iter()
                        .find(|group| group.layer_name == layer.name && group.state_idx == k)
                        .expect("every state has a group");
                    let field = &group.field;
                    let ident = format_ident!("__rnn_init{}", k);
                    let size = usize_lit(state_info.size);
                    quote! {
                        let #ident = __rnn_packing.sort_rows(
                            __rnn_rt::initial_rows(__rnn_initial.map(|state| &state.#field), #row, __rnn_batch, #size).view(),
                        );
                    }
                });
                let args: Vec<TokenStream> = (0..layer.inputs.len())
                    .map(|k| {
                        let ident = input_ident(k);
                        quote!(#ident.view())
                    })
                    .chain((0..layer.states.len()).map(|k| {
                        let ident = format_ident!("__rnn_init{}", k);
                        quote!(#ident)
                    }))
                    .collect();
                // Where the direction writes its output: the whole output of
                // a one-direction layer, else its own half of the columns;
                // the last layer writes the network's padded output.
                let last = layer_idx + 1 == self.network.layers.len();
                let out_arg = match (layer.directions, reverse) {
                    (1, _) => quote!(__rnn_y2),
                    (_, false) => quote!(__rnn_left),
                    (_, true) => quote!(__rnn_right),
                };
                let place = match (last, reverse) {
                    (false, false) => quote!(__rnn_rt::Placement::Packed),
                    (false, true) => quote!(__rnn_rt::Placement::Reversed),
                    (true, false) => quote!(__rnn_rt::Placement::Padded),
                    (true, true) => quote!(__rnn_rt::Placement::PaddedReversed),
                };
                let calls: Vec<TokenStream> = variants.iter().enumerate().map(|(variant_idx, variant)| {
                    let function = self.layer_fn(layer_idx, *variant);
                    let index = usize_lit(variant_idx);
                    let direction_lit = usize_lit(direction);
                    let call = quote!(Self::#function(&self.#weights_field[#direction_lit], &self.__rnn_workspace, __rnn_packing, #(#args,)* #out_arg, #place));
                    if variants.len() == 1 {
                        call
                    } else if variant_idx + 1 == variants.len() {
                        quote!(_ => #call)
                    } else {
                        quote!(#index => #call)
                    }
                }).collect();
                let call = if variants.len() == 1 {
                    calls[0].clone()
                } else {
                    quote!(match __rnn_variant { #(#calls,)* })
                };
                // A long enough run of a small batch: each step on two
                // threads, each side writing its half of the output's
                // columns, unless the second thread does not start.
                let call = if self.splits(layer_idx) {
                    let function = self.layer_fn(layer_idx, Variant::Split);
                    let macs_per_row = usize_lit(macs_per_row(layer, &self.plans[layer_idx]));
                    let half = usize_lit(layer.output_size / 2);
                    let traded = split_traded_states(layer, &self.plans[layer_idx]);
                    let widths = traded.iter().map(|k| usize_lit(layer.states[*k].size));
                    let (firsts, seconds): (Vec<Ident>, Vec<Ident>) = (0..layer.states.len())
                        .map(|k| (format_ident!("__rnn_a{}", k), format_ident!("__rnn_b{}", k)))
                        .unzip();
                    let inputs = (0..layer.inputs.len()).map(|k| {
                        let ident = input_ident(k);
                        quote!(#ident.view())
                    });
                    let inits: Vec<Ident> = (0..layer.states.len())
                        .map(|k| format_ident!("__rnn_init{}", k))
                        .collect();
                    quote! {{
                        // The initial states go to the first side and a copy
                        // to the second; they come back if the second does
                        // not start.
                        let __rnn_halves = if __rnn_packing.split_steps(__rnn_threads, #macs_per_row) {
                            let (__rnn_left, __rnn_right) = #out_arg.view_mut().split_at(__rnn_nd::Axis(1), #half);
                            let __rnn_copies = (#(#inits.clone(),)*);
                            let __rnn_sides = __rnn_rt::lockstep(
                                __rnn_batch,
                                &[#(#widths),*],
                                ((__rnn_left, (#(#inits,)*)), (__rnn_right, __rnn_copies)),
                                |__rnn_side, __rnn_exchange, (__rnn_half_out, (#(#inits,)*))| {
                                    Self::#function(&self.#weights_field[0], &self.__rnn_workspace, __rnn_packing, #(#inputs,)* #(#inits,)* __rnn_half_out, #place, __rnn_side, __rnn_exchange)
                                },
                            );
                            __rnn_sides.map_err(|((_, __rnn_first), _)| __rnn_first)
                        } else {
                            Err((#(#inits,)*))
                        };
                        match __rnn_halves {
                            Ok(((#(#firsts,)*), (#(#seconds,)*))) => (#(__rnn_rt::merge_halves(#firsts, &#seconds),)*),
                            Err((#(#inits,)*)) => #call,
                        }
                    }}
                } else {
                    call
                };
                let final_idents: Vec<Ident> = (0..layer.states.len())
                    .map(|k| format_ident!("__rnn_final{}", k))
                    .collect();
                let results = format_ident!("__rnn_dir{}", direction);
                let unsorts: Vec<TokenStream> = layer.states.iter().enumerate().map(|(k, _)| {
                    let group = self
                        .groups
                        .iter()
                        .find(|group| group.layer_name == layer.name && group.state_idx == k)
                        .expect("every state has a group");
                    let field = &group.field;
                    let position = syn::Index::from(k + 1);
                    quote!(__rnn_packing.unsort_rows_into(#results.#position.view(), #field.index_axis_mut(__rnn_nd::Axis(0), #row));)
                }).collect();
                // One direction returns its output buffer; each of two has
                // written its own columns of the layer's, on its own thread.
                let width = usize_lit(layer.output_size);
                let y2_mut = if self.splits(layer_idx) {
                    quote!(mut)
                } else {
                    TokenStream::new()
                };
                let (out_buffer, out_result) = match (layer.directions, last) {
                    (1, false) => (
                        quote! {
                            let mut __rnn_y = self.__rnn_workspace.take(__rnn_packing.rows(), #width);
                            let #y2_mut __rnn_y2 = __rnn_y.view_mut();
                        },
                        quote!(__rnn_y),
                    ),
                    (1, true) => (
                        quote! {
                            let mut __rnn_y = Array3::<f32>::zeros((__rnn_batch, __rnn_packing.steps(), #width));
                            let #y2_mut __rnn_y2 = __rnn_rt::flat_steps(&mut __rnn_y);
                        },
                        quote!(__rnn_y),
                    ),
                    _ => (TokenStream::new(), quote!(())),
                };
                let gathered = self.plans[layer_idx].gathers_inputs;
                let reversed_inputs = layer
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, input)| reverse && input.per_step && !gathered)
                    .map(|(k, _)| input_ident(k));
                directions.push((
                    quote! {{
                        #(#input_bindings)*
                        #(#init_bindings)*
                        #out_buffer
                        let (#(#final_idents,)*) = #call;
                        #(self.__rnn_workspace.give(#reversed_inputs);)*
                        (#out_result, #(#final_idents,)*)
                    }},
                    unsorts,
                ));
            }
            let y = format_ident!("__rnn_y{}", layer_idx);
            let value = match &directions[..] {
                [(only, unsorts)] => quote! {{
                    let __rnn_dir0 = #only;
                    #(#unsorts)*
                    __rnn_dir0.0
                }},
                [(forward, forward_unsorts), (backward, backward_unsorts)] => {
                    // Multiply-adds of the per-call matrix products of one
                    // direction per valid step: the size of each half.
                    let macs_per_row = usize_lit(macs_per_row(layer, &self.plans[layer_idx]));
                    let width = usize_lit(layer.output_size);
                    let both = usize_lit(2 * layer.output_size);
                    let both_buffer = if layer_idx + 1 == self.network.layers.len() {
                        quote! {
                            let mut __rnn_both = Array3::<f32>::zeros((__rnn_batch, __rnn_packing.steps(), #both));
                            let (__rnn_left, __rnn_right) = __rnn_rt::flat_steps(&mut __rnn_both).split_at(__rnn_nd::Axis(1), #width);
                        }
                    } else {
                        quote! {
                            let mut __rnn_both = self.__rnn_workspace.take(__rnn_packing.rows(), #both);
                            let (__rnn_left, __rnn_right) = __rnn_both.view_mut().split_at(__rnn_nd::Axis(1), #width);
                        }
                    };
                    quote! {{
                        let __rnn_split = __rnn_threads.split(__rnn_packing.rows() * #macs_per_row);
                        #both_buffer
                        let (__rnn_dir0, __rnn_dir1) = __rnn_rt::join(__rnn_split, || #forward, || #backward);
                        #(#forward_unsorts)*
                        #(#backward_unsorts)*
                        __rnn_both
                    }}
                }
                _ => unreachable!("a layer has one or two directions"),
            };
            layers.push(quote!(let #y = #value;));
            if layer_idx > 0 {
                let previous = format_ident!("__rnn_y{}", layer_idx - 1);
                layers.push(quote!(self.__rnn_workspace.give(#previous);));
            }
        }
        let last = format_ident!("__rnn_y{}", self.network.layers.len() - 1);
        let fields = self.groups.iter().map(|group| &group.field);
        quote! {
            /// Runs every layer over packed inputs with the variant of the
            /// time loop given; returns the output `[B, T, n]` (zeros past
            /// each length) and the final states.
            #[allow(clippy::too_many_arguments, clippy::type_complexity, unused_variables)]
            fn __rnn_run(
                &self,
                __rnn_packing: &#rt::__private::Packing,
                __rnn_variant: usize,
                #(#network_inputs,)*
                __rnn_initial: ::std::option::Option<&#state>,
                __rnn_threads: #rt::Threads,
            ) -> (#rt::ndarray::Array3<f32>, #state) {
                #prelude
                let __rnn_batch = __rnn_packing.batch();
                #(#finals)*
                #(#layers)*
                (#last, #state { #(#fields,)* })
            }
        }
    }

    /// How the public entry points pick the variant of the time loop.
    fn emit_variant_choice(&self, steps_name: &str) -> TokenStream {
        let rt = self.rt;
        match &self.network.unroll {
            UnrollMode::Buckets {
                lengths,
                dynamic_fallback,
            } => {
                let buckets = lengths.iter().map(|len| usize_lit(*len));
                let largest =
                    usize_lit(*lengths.last().expect("check ensures buckets are non-empty"));
                let fallback = if *dynamic_fallback {
                    let idx = usize_lit(lengths.len());
                    quote!(#idx)
                } else {
                    quote! {
                        return Err(#rt::RnnError::InvalidValue {
                            tensor: #steps_name.to_owned(),
                            reason: format!(
                                "the longest sequence has {} steps; the largest bucket is {}",
                                __rnn_packing.max_len(),
                                #largest
                            ),
                        })
                    }
                };
                quote! {
                    let __rnn_variant = match [#(#buckets),*].iter().position(|bucket| __rnn_packing.max_len() <= *bucket) {
                        Some(bucket) => bucket,
                        None => #fallback,
                    };
                }
            }
            _ => quote!(let __rnn_variant = 0;),
        }
    }

    fn emit_forward(&self) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let state = self.state_struct();
        let output = self.output_struct();
        let per_step = self.per_step_inputs();
        let contexts = self.context_inputs();
        let static_steps = self.static_steps();
        let mut params = Vec::new();
        let mut checks = Vec::new();
        for input in &self.network.inputs {
            let ident = format_ident!("{}", input.name);
            let name = &input.name;
            let size = usize_lit(input.size);
            if input.per_step {
                params.push(quote!(#ident: #rt::ndarray::ArrayView3<'_, f32>));
                let steps = match static_steps {
                    Some(steps) => {
                        let steps = usize_lit(steps);
                        quote!(Some(#steps))
                    }
                    None => quote!(Some(__rnn_steps)),
                };
                checks.push(quote!(__rnn_rt::check_shape(#name, #ident.shape(), &[Some(__rnn_batch), #steps, Some(#size)])?;));
            } else {
                params.push(quote!(#ident: #rt::ndarray::ArrayView2<'_, f32>));
                checks.push(quote!(__rnn_rt::check_shape(#name, #ident.shape(), &[Some(__rnn_batch), Some(#size)])?;));
            }
        }
        let (batch_expr, steps_expr, steps_param) = match (per_step.first(), contexts.first()) {
            (Some((_, input)), _) => {
                let ident = format_ident!("{}", input.name);
                (quote!(#ident.shape()[0]), quote!(#ident.shape()[1]), None)
            }
            (None, Some((_, context))) => {
                let ident = format_ident!("{}", context.name);
                match static_steps {
                    Some(steps) => {
                        let steps = usize_lit(steps);
                        (quote!(#ident.shape()[0]), quote!(#steps), None)
                    }
                    None => (
                        quote!(#ident.shape()[0]),
                        quote!(steps),
                        Some(quote!(steps: usize)),
                    ),
                }
            }
            (None, None) => unreachable!("check ensures a network has an input or a context"),
        };
        let steps_name = per_step
            .first()
            .map_or("steps".to_owned(), |(_, input)| input.name.clone());
        let choice = self.emit_variant_choice(&steps_name);
        let packs = self.network.inputs.iter().enumerate().map(|(k, input)| {
            let local = format_ident!("__rnn_net{}", k);
            let ident = format_ident!("{}", input.name);
            if input.per_step {
                quote!(let #local = __rnn_packing.pack(#ident);)
            } else {
                quote!(let #local = __rnn_packing.sort_rows(#ident);)
            }
        });
        let net_args = (0..self.network.inputs.len()).map(|k| {
            let local = format_ident!("__rnn_net{}", k);
            quote!(#local.view())
        });
        let output_fields = self.groups.iter().map(|group| {
            let (field, output_field) = (&group.field, &group.output_field);
            quote!(#output_field: __rnn_state.#field)
        });
        let steps_param: Vec<TokenStream> = steps_param.into_iter().collect();
        let input_doc: Vec<String> = self
            .network
            .inputs
            .iter()
            .map(|input| {
                if input.per_step {
                    format!("- `{}`: `[B, T, {}]`", input.name, input.size)
                } else {
                    format!(
                        "- `{}`: `[B, {}]`, the same at every step",
                        input.name, input.size
                    )
                }
            })
            .collect();
        let static_doc = static_steps.map(|steps| {
            format!("`T` must be {steps}: the network is unrolled for exactly {steps} steps.")
        });
        let static_doc = static_doc.into_iter();
        // Batch halves on two threads for networks without a bidirectional
        // layer (those split by direction instead, in `__rnn_run`).
        let bidirectional = self
            .network
            .layers
            .iter()
            .any(|layer| layer.directions == 2);
        let split_threads = if bidirectional {
            quote!(#rt::Threads::Fixed(1))
        } else {
            quote!(self.__rnn_threads)
        };
        let macs_per_row: usize = self
            .network
            .layers
            .iter()
            .zip(&self.plans)
            .map(|(layer, plan)| macs_per_row(layer, plan) * layer.directions)
            .sum();
        let macs_per_row = usize_lit(macs_per_row);
        let half_inputs = self.network.inputs.iter().map(|input| {
            let ident = format_ident!("{}", input.name);
            quote!(let #ident = #ident.select(__rnn_nd::Axis(0), __rnn_idx);)
        });
        let half_args: Vec<TokenStream> = self
            .network
            .inputs
            .iter()
            .map(|input| {
                let ident = format_ident!("{}", input.name);
                quote!(#ident.view())
            })
            .collect();
        let whole_args: Vec<TokenStream> = self
            .network
            .inputs
            .iter()
            .map(|input| {
                let ident = format_ident!("{}", input.name);
                quote!(#ident)
            })
            .collect();
        quote! {
            /// Runs the network over a batch of sequences.
            ///
            #(#[doc = #input_doc])*
            /// - `seq_len`: each sequence's length (at most `T`); steps past it
            ///   output zeros and leave the state unchanged. `None`: all `T`.
            /// - `initial_state`: `None` for zeros.
            ///
            #(#[doc = #static_doc])*
            ///
            /// # Errors
            ///
            /// A misshaped input or state, or a length out of range: the error
            /// names the tensor and both shapes.
            pub fn forward(
                &self,
                #(#params,)*
                #(#steps_param,)*
                seq_len: ::std::option::Option<&[usize]>,
                initial_state: ::std::option::Option<&#state>,
            ) -> ::std::result::Result<#output, #rt::RnnError> {
                #prelude
                let __rnn_batch = #batch_expr;
                let __rnn_steps = #steps_expr;
                #(#checks)*
                if let Some(state) = initial_state {
                    state.check(__rnn_batch)?;
                }
                // Checks the lengths, and tells whether to run two halves of
                // the batch on two threads.
                let __rnn_packing = #rt::__private::Packing::new(seq_len, __rnn_batch, __rnn_steps)?;
                if let Some((__rnn_a, __rnn_b)) = __rnn_packing.halves(#split_threads, #macs_per_row) {
                    let __rnn_half = |__rnn_idx: &[usize]| {
                        let __rnn_lengths = __rnn_packing.lengths_of(__rnn_idx);
                        let __rnn_half_packing = #rt::__private::Packing::new(Some(&__rnn_lengths), __rnn_idx.len(), __rnn_steps)?;
                        let __rnn_initial = initial_state.map(|state| state.__rnn_select(__rnn_idx));
                        #(#half_inputs)*
                        self.__rnn_forward_whole(#(#half_args,)* &__rnn_half_packing, __rnn_initial.as_ref(), #rt::Threads::Fixed(1))
                    };
                    let (__rnn_ya, __rnn_yb) = __rnn_rt::join(true, || __rnn_half(&__rnn_a), || __rnn_half(&__rnn_b));
                    return Ok(#output::__rnn_merge(__rnn_batch, (&__rnn_a, __rnn_ya?), (&__rnn_b, __rnn_yb?)));
                }
                self.__rnn_forward_whole(#(#whole_args,)* &__rnn_packing, initial_state, self.__rnn_threads)
            }

            /// `forward` after its checks, over the batch `__rnn_packing`
            /// describes, on the calling thread (and a second one for
            /// bidirectional layers if `threads` allows).
            #[allow(clippy::too_many_arguments)]
            fn __rnn_forward_whole(
                &self,
                #(#params,)*
                __rnn_packing: &#rt::__private::Packing,
                initial_state: ::std::option::Option<&#state>,
                __rnn_threads: #rt::Threads,
            ) -> ::std::result::Result<#output, #rt::RnnError> {
                #prelude
                #choice
                #(#packs)*
                let (__rnn_y, __rnn_state) = self.__rnn_run(__rnn_packing, __rnn_variant, #(#net_args,)* initial_state, __rnn_threads);
                Ok(#output {
                    y: __rnn_y,
                    #(#output_fields,)*
                })
            }

            /// The all-zero state for `batch` sequences, to start streaming.
            pub fn initial_state(&self, batch: usize) -> #state {
                #state::zeros(batch)
            }
        }
    }

    /// `step`: one time step of a unidirectional network with a per-step
    /// input, for streaming; the same arithmetic as `forward`.
    fn emit_step(&self) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        if self
            .network
            .layers
            .iter()
            .any(|layer| layer.directions != 1)
        {
            return TokenStream::new();
        }
        let per_step = self.per_step_inputs();
        if per_step.len() != 1 {
            return TokenStream::new();
        }
        let state = self.state_struct();
        let (_, step_input) = per_step[0];
        let x_ident = format_ident!("{}_t", step_input.name);
        let x_name = &step_input.name;
        let x_size = usize_lit(step_input.size);
        let mut params = vec![quote!(#x_ident: #rt::ndarray::ArrayView2<'_, f32>)];
        let mut checks = vec![
            quote!(__rnn_rt::check_shape(#x_name, #x_ident.shape(), &[None, Some(#x_size)])?;),
        ];
        for (_, context) in self.context_inputs() {
            let ident = format_ident!("{}", context.name);
            let name = &context.name;
            let size = usize_lit(context.size);
            params.push(quote!(#ident: #rt::ndarray::ArrayView2<'_, f32>));
            checks.push(quote!(__rnn_rt::check_shape(#name, #ident.shape(), &[Some(__rnn_batch), Some(#size)])?;));
        }
        let packs = self.network.inputs.iter().enumerate().map(|(k, input)| {
            let local = format_ident!("__rnn_net{}", k);
            let ident = if input.per_step {
                x_ident.clone()
            } else {
                format_ident!("{}", input.name)
            };
            quote!(let #local = #ident.to_owned();)
        });
        let net_args = (0..self.network.inputs.len()).map(|k| {
            let local = format_ident!("__rnn_net{}", k);
            quote!(#local.view())
        });
        let choice = self.emit_variant_choice(x_name);
        let output_size = self.network.output_size();
        let doc =
            format!("Returns the output `[B, {output_size}]` of this step and advances `state`.");
        quote! {
            /// Runs one time step for streaming input (audio frames, sensor
            /// samples): the result equals `forward` over the whole sequence,
            /// step by step.
            ///
            #[doc = #doc]
            ///
            /// # Errors
            ///
            /// A misshaped input or state.
            pub fn step(
                &self,
                state: &mut #state,
                #(#params,)*
            ) -> ::std::result::Result<#rt::ndarray::Array2<f32>, #rt::RnnError> {
                #prelude
                let __rnn_batch = #x_ident.nrows();
                #(#checks)*
                state.check(__rnn_batch)?;
                let __rnn_packing = #rt::__private::Packing::new(None, __rnn_batch, 1)?;
                #choice
                // All sequences run this step, so packing keeps batch order.
                #(#packs)*
                let (__rnn_y, __rnn_state) = self.__rnn_run(&__rnn_packing, __rnn_variant, #(#net_args,)* Some(state), self.__rnn_threads);
                *state = __rnn_state;
                Ok(__rnn_y.index_axis_move(__rnn_nd::Axis(1), 0))
            }
        }
    }
}

/// Emits and formats the code of every network of a compiled file, with
/// the `@generated` header.
pub fn emit_file(model: &ir::Model, source_name: &str, options: &Options) -> String {
    let items = model.networks.iter().map(|network| emit(network, options));
    let tokens = quote!(#(#items)*);
    let header = format!(
        "// @generated by unroll {} from `{source_name}`. Do not edit: edit the model and regenerate.\n\n",
        env!("CARGO_PKG_VERSION")
    );
    format!("{header}{}", format(&tokens))
}

/// As [`emit_file`], without prettyplease: the same code on fewer lines,
/// for very long static unrollings that are compiled, not read.
pub fn emit_file_unformatted(model: &ir::Model, source_name: &str, options: &Options) -> String {
    let items = model.networks.iter().map(|network| emit(network, options));
    let tokens = quote!(#(#items)*);
    format!("// @generated by unroll {} from `{source_name}`. Do not edit: edit the model and regenerate.\n\n{tokens}\n", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceFile;

    /// Whether the first layer of the one network in `text` gets a split
    /// time loop.
    fn splits(text: &str) -> bool {
        let compiled = crate::compile(SourceFile::new("split.rnn", text))
            .unwrap_or_else(|error| panic!("{text} does not compile: {error}"));
        let code = emit_file_unformatted(&compiled.model, "split.rnn", &Options::default());
        code.contains("fn __rnn_layer0_split")
    }

    #[test]
    fn steps_split_only_where_each_side_computes_what_it_reads() {
        let network = |layer: &str| {
            format!("network N {{ input x: [8]; layer l = {layer}; unroll dynamic; }}")
        };
        for layer in [
            "lstm(hidden = 128)",
            "lstm(hidden = 256, layers = 2)",
            "gru(hidden = 128)",
            "rnn_tanh(hidden = 384)",
        ] {
            assert!(splits(&network(layer)), "{layer} splits");
        }
        for layer in [
            // Halves that are not whole 64-column panels.
            "lstm(hidden = 96)",
            "gru(hidden = 64)",
            // Two directions already run side by side.
            "lstm(hidden = 128, bidirectional)",
            // A product of `r * h`, computed in the step.
            "gru(hidden = 128, reset_after = false)",
        ] {
            assert!(!splits(&network(layer)), "{layer} does not split");
        }
        let cell = |body: &str| {
            format!(
                "cell c(x: [I]) -> h: [H] {{ {body} }}
                 network N {{ input x: [8]; layer l = c(hidden = 128); unroll dynamic; }}"
            )
        };
        // Elementwise only, beside the input's product: nothing to trade.
        assert!(splits(&cell("param w: [H, I]; h = tanh(w @ x + 0.5 * h);")));
        for (body, why) in [
            (
                "param w: [H, I]; param u: [H, H]; param v: [1, H];
                 let g = sigmoid(v @ h); h = g * tanh(w @ x + u @ h) + (1 - g) * h;",
                "a pass mixing widths 1 and H",
            ),
            (
                "param w: [H, I]; param u: [H, H]; h = tanh(w @ x + u @ h + h[0..1] * h);",
                "one column of the state read by every unit",
            ),
        ] {
            assert!(!splits(&cell(body)), "{why}");
        }
        // A product read from a column that is not a multiple of the width.
        let offset = |start: usize| {
            format!(
                "cell c(x: [8]) -> h: [128] {{
                     param w: [128, 8]; param u: [256, 128];
                     let z = u @ h; h = tanh(w @ x + z[{start}..{}]);
                 }}
                 network N {{ input x: [8]; layer l = c(); unroll dynamic; }}",
                start + 128
            )
        };
        assert!(splits(&offset(128)));
        assert!(!splits(&offset(64)));
    }
}

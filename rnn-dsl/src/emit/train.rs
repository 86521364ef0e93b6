//! Training code, written from each layer's [`BackwardPlan`]: the
//! forward that keeps a tape (`forward_train`), the backward over it
//! (`backward`), and their types.
//!
//! Both run over packed rows (sequences sorted by length, time-major), so
//! at step `t` the running sequences are the first `n` rows and a finished
//! one takes no part in either direction. Each layer has two functions:
//! `__rnn_layer<k>_train` (invariants, hoisted values over every row, then
//! the steps, keeping the states before each step) and
//! `__rnn_layer<k>_backward` (the steps in reverse, recomputing the forward
//! step's values from the kept states, then the sums over every row and
//! what follows from them). The steps are written as the unroll mode asks:
//! calls written out for `static N` (in reverse for the backward), a loop
//! for `dynamic`, `k` calls a turn for `dynamic by k`, and per bucket.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::forward::Entry;
use super::idents::{f32_tokens, packed_field as packed_ident, usize_lit, value_ident};
use super::Cx;
use crate::check::InputSource;
use crate::ir::{self, Op, Seed, Shape, ValueId};
use crate::lower::{BackwardPlan, Kind, Variant};
use crate::weights;

/// Which of a layer's two training functions is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Train,
    Backward,
}

/// One layer's training code being written.
struct Layer<'a> {
    layer: &'a ir::Layer,
    plan: &'a BackwardPlan,
    phase: Phase,
}

impl Layer<'_> {
    fn node(&self, id: ValueId) -> &ir::Node {
        self.plan.backward.node(id)
    }

    fn kind(&self, id: ValueId) -> Kind {
        self.plan.kind(id)
    }

    fn width(&self, id: ValueId) -> usize {
        match self.node(id).shape {
            Shape::Vector(len) => len,
            Shape::Matrix(_, cols) => cols,
            Shape::Scalar => 1,
        }
    }

    /// Where a value is stored: its own buffer, or columns from `start` of
    /// another's (a view of a slice, a piece of a concatenation).
    fn storage(&self, id: ValueId) -> (ValueId, usize) {
        match (self.plan.views[id.index()], self.plan.aliases[id.index()]) {
            (Some((base, start)), _) => {
                let (storage, offset) = self.storage(base);
                (storage, offset + start)
            }
            (None, Some((root, start))) => {
                let (storage, offset) = self.storage(root);
                (storage, offset + start)
            }
            (None, None) => (id, 0),
        }
    }

    /// The place holding a stored value as a whole (an `Array2<f32>`
    /// expression); for a view or a piece, its storage's.
    fn place(&self, id: ValueId) -> TokenStream {
        let (id, _) = self.storage(id);
        let tape = |at: usize| {
            let at = usize_lit(at);
            quote!(__rnn_tape[#at])
        };
        match &self.node(id).op {
            Op::Input(k) if self.layer.inputs[*k].per_step || self.kind(id) == Kind::Invariant => {
                let k = usize_lit(*k);
                quote!(__rnn_in[#k])
            }
            Op::State(k) if self.phase == Phase::Train => {
                let state = format_ident!("__rnn_s{}", k);
                quote!(#state)
            }
            Op::State(k) => tape(*k),
            Op::Seed(Seed::Output) => quote!(__rnn_dout),
            _ if self.kind(id) == Kind::Hoisted && self.phase == Phase::Backward => {
                let position = self
                    .plan
                    .kept
                    .iter()
                    .position(|kept| *kept == id)
                    .expect("the backward reads kept hoisted values only");
                tape(self.layer.states.len() + position)
            }
            _ if self.phase == Phase::Backward
                && id.index() < self.plan.backward.forward
                && self.kind(id) == Kind::Step =>
            {
                let position = self
                    .plan
                    .kept_steps
                    .iter()
                    .position(|kept| *kept == id)
                    .unwrap_or_else(|| {
                        panic!(
                            "the backward reads kept step values only: {id} {:?} of {}",
                            self.node(id).op,
                            self.layer.cell
                        )
                    });
                tape(self.layer.states.len() + self.plan.kept.len() + position)
            }
            _ => {
                let ident = value_ident(id);
                quote!(#ident)
            }
        }
    }

    /// Whether a stored step value is kept for every step (rows `off..off
    /// + n`) rather than one step's (rows `..n`).
    fn by_step_offset(&self, id: ValueId) -> bool {
        let (id, _) = self.storage(id);
        match &self.node(id).op {
            Op::State(_) => self.phase == Phase::Backward,
            Op::Seed(Seed::Output) => true,
            _ if id.index() < self.plan.backward.forward => self.plan.kept_steps.contains(&id),
            _ => self.plan.all_steps[id.index()],
        }
    }

    /// The columns of a view or piece within its storage, when it is one.
    fn columns(&self, id: ValueId) -> Option<TokenStream> {
        let (storage, start) = self.storage(id);
        (storage != id).then(|| {
            let end = usize_lit(start + self.width(id));
            let start = usize_lit(start);
            quote!(#start..#end)
        })
    }

    /// A value over every row of every step (a kept or hoisted value, or
    /// one stored for every step), for a product over all rows.
    fn all_rows(&self, id: ValueId) -> TokenStream {
        let place = self.place(id);
        match self.columns(id) {
            Some(columns) => quote!(#place.slice(s![.., #columns])),
            None => quote!(#place.view()),
        }
    }

    /// A value as an elementwise operand at a step, or over every row for
    /// a hoisted value.
    fn arg(&self, id: ValueId, hoisting: bool) -> TokenStream {
        if let (Op::Literal(value), Shape::Scalar) = (&self.node(id).op, self.node(id).shape) {
            let value = f32_tokens(*value);
            return quote!(Arg::Scalar(#value));
        }
        let view = self.view(id, hoisting);
        quote!(Arg::Full(#view))
    }

    /// A value's rows as a view: at a step, its running rows; over every
    /// row for a hoisted value; whole for an invariant shared by the batch.
    fn view(&self, id: ValueId, hoisting: bool) -> TokenStream {
        let place = self.place(id);
        let columns = self.columns(id).unwrap_or_else(|| quote!(..));
        match self.kind(id) {
            Kind::Invariant if self.plan.per_sequence(id) => {
                quote!(#place.slice(s![..__rnn_n, ..]))
            }
            Kind::Invariant | Kind::Sum | Kind::After => quote!(#place.view()),
            Kind::Hoisted if hoisting => quote!(#place.slice(s![.., #columns])),
            Kind::Hoisted => quote!(#place.slice(s![__rnn_off..__rnn_off + __rnn_n, #columns])),
            Kind::Step if self.by_step_offset(id) => {
                quote!(#place.slice(s![__rnn_off..__rnn_off + __rnn_n, #columns]))
            }
            Kind::Step => quote!(#place.slice(s![..__rnn_n, #columns])),
        }
    }

    /// Where a step value is written at a step.
    fn view_mut(&self, id: ValueId) -> TokenStream {
        let place = self.place(id);
        let columns = self.columns(id).unwrap_or_else(|| quote!(..));
        if self.by_step_offset(id) {
            quote!(#place.slice_mut(s![__rnn_off..__rnn_off + __rnn_n, #columns]))
        } else {
            quote!(#place.slice_mut(s![..__rnn_n, #columns]))
        }
    }

    /// Whether a node is written by a statement of its own in this phase
    /// (the backward computes no forward value: it reads kept ones).
    fn has_statement(&self, id: ValueId) -> bool {
        let recomputed = self.phase == Phase::Backward && id.index() < self.plan.backward.forward;
        !self.plan.free[id.index()] && !recomputed
    }

    /// Whether a node has a buffer of its own in this phase.
    fn has_buffer(&self, id: ValueId) -> bool {
        self.plan.views[id.index()].is_none()
            && self.plan.aliases[id.index()].is_none()
            && !matches!(
                self.node(id).op,
                Op::Input(_) | Op::State(_) | Op::Seed(Seed::Output)
            )
            && !(self.phase == Phase::Backward && id.index() < self.plan.backward.forward)
    }

    /// The statement computing a step value (or, with `hoisting`, a
    /// hoisted one over every row) into its buffer.
    fn step_statement(&self, id: ValueId, hoisting: bool) -> TokenStream {
        let node = self.node(id);
        let out = if hoisting {
            let place = self.place(id);
            quote!(#place.view_mut())
        } else {
            self.view_mut(id)
        };
        match &node.op {
            Op::Unary(op, a) => {
                let (a, op) = (self.arg(*a, hoisting), format_ident!("{}", op.name()));
                quote!(__rnn_rt::unary(#out, #a, __rnn_rt::Unary::#op);)
            }
            Op::Binary(op, a, b) => {
                let (a, b) = (self.arg(*a, hoisting), self.arg(*b, hoisting));
                let op = format_ident!("{}", op.name());
                quote!(__rnn_rt::binary(#out, #a, #b, __rnn_rt::Binary::#op);)
            }
            Op::Clip(a, lo, hi) => {
                let (a, lo, hi) = (
                    self.arg(*a, hoisting),
                    self.arg(*lo, hoisting),
                    self.arg(*hi, hoisting),
                );
                quote!(__rnn_rt::clip(#out, #a, #lo, #hi);)
            }
            Op::MatVec(matrix, vector) => {
                let (packed, vector) = (packed_ident(*matrix), self.view(*vector, hoisting));
                quote!(__rnn_rt::gemm_packed(#vector, &#packed, #out, false);)
            }
            Op::Slice(inner, start, end) => {
                let inner = self.view(*inner, hoisting);
                let (start, end) = (usize_lit(*start), usize_lit(*end));
                quote!(#out.assign(&#inner.slice(s![.., #start..#end]));)
            }
            Op::Place(inner, start, _) => {
                let end = usize_lit(start + self.width(*inner));
                let (inner, start) = (self.view(*inner, hoisting), usize_lit(*start));
                quote! {{
                    let mut __rnn_out = #out;
                    __rnn_out.fill(0.0);
                    __rnn_out.slice_mut(s![.., #start..#end]).assign(&#inner);
                }}
            }
            Op::SumElems(inner) => {
                let inner = self.view(*inner, hoisting);
                quote!(__rnn_rt::sum_elems(#out, #inner);)
            }
            Op::Seed(Seed::State(k)) => {
                let seed = format_ident!("__rnn_ds{}", k);
                quote!(#out.assign(&#seed.slice(s![..__rnn_n, ..]));)
            }
            Op::Input(_) | Op::State(_) | Op::Seed(Seed::Output) => TokenStream::new(),
            op => unreachable!("not a step operation: {op:?}"),
        }
    }

    /// The expression of an invariant or after-the-loop value, computed
    /// once (`[1, n]` shared, `[B, n]` per sequence, or a matrix).
    fn whole_expr(&self, id: ValueId) -> TokenStream {
        let node = self.node(id);
        let rows = match node.shape {
            Shape::Matrix(rows, _) => {
                let rows = usize_lit(rows);
                quote!(#rows)
            }
            _ if self.kind(id) == Kind::Invariant && self.plan.per_sequence(id) => {
                quote!(__rnn_batch)
            }
            _ => quote!(1),
        };
        let cols = usize_lit(self.width(id));
        let whole = |operand: &ValueId| -> TokenStream {
            if let (Op::Literal(value), Shape::Scalar) =
                (&self.node(*operand).op, self.node(*operand).shape)
            {
                let value = f32_tokens(*value);
                return quote!(Arg::Scalar(#value));
            }
            let place = self.place(*operand);
            quote!(Arg::Full(#place.view()))
        };
        match &node.op {
            Op::Param(param) => {
                let k = usize_lit(param.0 as usize);
                quote!(__rnn_p[#k].view().into_shape_with_order((#rows, #cols)).expect("loaded with its shape").to_owned())
            }
            Op::Literal(value) => {
                let value = f32_tokens(*value);
                quote!(Array2::<f32>::from_elem((1, #cols), #value))
            }
            Op::Input(k) => {
                let k = usize_lit(*k);
                quote!(__rnn_in[#k].clone())
            }
            Op::Unary(op, a) => {
                let (a, op) = (whole(a), format_ident!("{}", op.name()));
                quote!(__rnn_rt::const_unary(#rows, #cols, #a, __rnn_rt::Unary::#op))
            }
            Op::Binary(op, a, b) => {
                let (a, b, op) = (whole(a), whole(b), format_ident!("{}", op.name()));
                quote!(__rnn_rt::const_binary(#rows, #cols, #a, #b, __rnn_rt::Binary::#op))
            }
            Op::Clip(a, lo, hi) => {
                let (a, lo, hi) = (whole(a), whole(lo), whole(hi));
                quote!(__rnn_rt::const_clip(#rows, #cols, #a, #lo, #hi))
            }
            Op::MatVec(matrix, vector) => {
                let (matrix, vector) = (self.place(*matrix), self.place(*vector));
                let len = usize_lit(self.width(id));
                quote! {{
                    let mut __rnn_out = Array2::<f32>::zeros((#vector.nrows(), #len));
                    __rnn_rt::matmul_bt(#vector.view(), #matrix.view(), __rnn_out.view_mut(), false);
                    __rnn_out
                }}
            }
            Op::Transpose(matrix) => {
                let matrix = self.place(*matrix);
                quote!(__rnn_rt::transpose(#matrix.view()))
            }
            Op::Slice(inner, start, end) => {
                let inner_place = self.place(*inner);
                let (start, end) = (usize_lit(*start), usize_lit(*end));
                match self.node(*inner).shape {
                    Shape::Matrix(..) => {
                        quote!(#inner_place.slice(s![#start..#end, ..]).to_owned())
                    }
                    _ => quote!(#inner_place.slice(s![.., #start..#end]).to_owned()),
                }
            }
            Op::Row(matrix, index) => {
                let matrix = self.place(*matrix);
                let (index, next) = (usize_lit(*index), usize_lit(index + 1));
                quote!(#matrix.slice(s![#index..#next, ..]).to_owned())
            }
            Op::Place(inner, start, len) => {
                let inner_place = self.place(*inner);
                let len = usize_lit(*len);
                let start_lit = usize_lit(*start);
                match node.shape {
                    Shape::Matrix(_, cols) => {
                        let inner_rows = match self.node(*inner).shape {
                            Shape::Matrix(rows, _) => rows,
                            Shape::Vector(_) | Shape::Scalar => 1,
                        };
                        let end = usize_lit(start + inner_rows);
                        let cols = usize_lit(cols);
                        quote! {{
                            let mut __rnn_out = Array2::<f32>::zeros((#len, #cols));
                            __rnn_out.slice_mut(s![#start_lit..#end, ..]).assign(&#inner_place);
                            __rnn_out
                        }}
                    }
                    _ => {
                        let end = usize_lit(start + self.width(*inner));
                        quote! {{
                            let mut __rnn_out = Array2::<f32>::zeros((1, #len));
                            __rnn_out.slice_mut(s![.., #start_lit..#end]).assign(&#inner_place);
                            __rnn_out
                        }}
                    }
                }
            }
            Op::PlaceRow(inner, index, rows) => {
                let inner_place = self.place(*inner);
                let (index, rows) = (usize_lit(*index), usize_lit(*rows));
                quote! {{
                    let mut __rnn_out = Array2::<f32>::zeros((#rows, #cols));
                    __rnn_out.row_mut(#index).assign(&#inner_place.row(0));
                    __rnn_out
                }}
            }
            Op::SumElems(inner) => {
                let inner_place = self.place(*inner);
                quote! {{
                    let mut __rnn_out = Array2::<f32>::zeros((#inner_place.nrows(), 1));
                    __rnn_rt::sum_elems(__rnn_out.view_mut(), #inner_place.view());
                    __rnn_out
                }}
            }
            Op::SumBatch(inner) => {
                let inner_place = self.place(*inner);
                quote! {{
                    let mut __rnn_out = Array2::<f32>::zeros((1, #cols));
                    __rnn_rt::sum_rows(__rnn_out.view_mut(), #inner_place.view());
                    __rnn_out
                }}
            }
            Op::Outer(g, v) => {
                let (g, v) = (self.place(*g), self.place(*v));
                let rows = match node.shape {
                    Shape::Matrix(rows, _) => usize_lit(rows),
                    _ => unreachable!("an outer product is a matrix"),
                };
                quote! {{
                    let mut __rnn_out = Array2::<f32>::zeros((#rows, #cols));
                    __rnn_rt::outer_acc(__rnn_out.view_mut(), #g.view(), #v.view());
                    __rnn_out
                }}
            }
            Op::State(_) | Op::Seed(_) => unreachable!("a step value"),
        }
    }

    /// The ids of the nodes of a kind, in order, up to `end`.
    fn ids(&self, kind: Kind, range: std::ops::Range<usize>) -> Vec<ValueId> {
        range
            .filter(|idx| self.plan.kinds[*idx] == kind)
            .map(|idx| ValueId(idx as u32))
            .collect()
    }

    /// `let` statements of the invariant values among `range`.
    fn invariants(&self, range: std::ops::Range<usize>) -> Vec<TokenStream> {
        self.ids(Kind::Invariant, range)
            .into_iter()
            .filter(|id| !self.is_inline(*id))
            .map(|id| {
                let (ident, expr) = (value_ident(id), self.whole_expr(id));
                quote!(let #ident: Array2<f32> = #expr;)
            })
            .collect()
    }

    /// The matrices that products over rows read (of hoisted or step
    /// values among `range`), packed once per call for the matrix product
    /// kernel.
    fn packed(&self, range: std::ops::Range<usize>) -> Vec<TokenStream> {
        let mut matrices: Vec<ValueId> = Vec::new();
        for idx in range {
            let id = ValueId(idx as u32);
            if let (Op::MatVec(matrix, _), Kind::Step | Kind::Hoisted) =
                (&self.node(id).op, self.kind(id))
            {
                if !matrices.contains(matrix) {
                    matrices.push(*matrix);
                }
            }
        }
        matrices
            .into_iter()
            .map(|matrix| {
                let (packed, place) = (packed_ident(matrix), self.place(matrix));
                quote!(let #packed = __rnn_rt::PackedMatrix::new(#place.view());)
            })
            .collect()
    }

    /// Values written where they are read: scalar numbers, and inputs
    /// (read from the function's arguments).
    fn is_inline(&self, id: ValueId) -> bool {
        matches!(
            (&self.node(id).op, self.node(id).shape),
            (Op::Literal(_), Shape::Scalar) | (Op::Input(_), _)
        )
    }

    /// The buffers of the step values among `range`, and those given back
    /// to the workspace at the end of the call. Buffers that leave the
    /// function (kept for the backward) are new; the others come from the
    /// workspace, zeroed only where something reads what no step writes
    /// (the columns of a concatenation no piece covers).
    fn step_buffers(&self, range: std::ops::Range<usize>) -> (Vec<TokenStream>, Vec<Ident>) {
        let mut declarations = Vec::new();
        let mut given = Vec::new();
        for id in self.ids(Kind::Step, range) {
            if !self.has_buffer(id) {
                continue;
            }
            let ident = value_ident(id);
            let width = usize_lit(self.width(id));
            let rows = if self.by_step_offset(id) {
                quote!(__rnn_rows)
            } else {
                quote!(__rnn_batch)
            };
            if self.phase == Phase::Train && self.plan.kept_steps.contains(&id) {
                // Every row is written at its step; the tape gives it back
                // to the workspace when recycled.
                declarations.push(quote!(let mut #ident = __rnn_ws.take(#rows, #width);));
                continue;
            }
            let covered: usize = (0..self.plan.backward.nodes.len())
                .filter(|idx| matches!(self.plan.aliases[*idx], Some((root, _)) if root == id))
                .map(|idx| self.width(ValueId(idx as u32)))
                .sum();
            let is_root = covered > 0;
            let zero = if is_root && covered < self.width(id) {
                quote!(#ident.fill(0.0);)
            } else {
                TokenStream::new()
            };
            declarations.push(quote! {
                let mut #ident = __rnn_ws.take(#rows, #width);
                #zero
            });
            given.push(ident);
        }
        (declarations, given)
    }
}

impl Cx<'_> {
    fn training_plans(&self) -> &[BackwardPlan] {
        self.training
            .expect("training code is written only when planned")
    }

    /// The calls of the step closure `__rnn_step` in the order the unroll
    /// mode writes them, forward or in reverse, for the variant
    /// `__rnn_variant` chose.
    fn step_calls(&self, reverse: bool) -> TokenStream {
        let variant_loop = |variant: Variant| -> TokenStream {
            match variant {
                Variant::Static(steps) if variant.writes_steps_out() => {
                    let mut order: Vec<usize> = (0..steps).collect();
                    if reverse {
                        order.reverse();
                    }
                    let calls = order.into_iter().map(|t| {
                        let t = usize_lit(t);
                        quote!(if #t < __rnn_max_len { __rnn_step(#t); })
                    });
                    quote!(#(#calls)*)
                }
                Variant::Static(_) | Variant::Dynamic | Variant::Split => {
                    if reverse {
                        quote!(for __rnn_t in (0..__rnn_max_len).rev() {
                            __rnn_step(__rnn_t);
                        })
                    } else {
                        quote!(for __rnn_t in 0..__rnn_max_len {
                            __rnn_step(__rnn_t);
                        })
                    }
                }
                Variant::DynamicBy(k) => {
                    let offsets: Vec<_> = (0..k).map(usize_lit).collect();
                    let k = usize_lit(k);
                    if reverse {
                        quote! {
                            let mut __rnn_end = __rnn_max_len;
                            while __rnn_end >= #k {
                                #( __rnn_step(__rnn_end - 1 - #offsets); )*
                                __rnn_end -= #k;
                            }
                            for __rnn_t in (0..__rnn_end).rev() { __rnn_step(__rnn_t); }
                        }
                    } else {
                        quote! {
                            let full = __rnn_max_len / #k * #k;
                            let mut __rnn_t = 0;
                            while __rnn_t < full {
                                #( __rnn_step(__rnn_t + #offsets); )*
                                __rnn_t += #k;
                            }
                            for __rnn_t in full..__rnn_max_len { __rnn_step(__rnn_t); }
                        }
                    }
                }
            }
        };
        let arms = self.variants.iter().enumerate().map(|(idx, variant)| {
            let idx = usize_lit(idx);
            let body = variant_loop(*variant);
            quote!(#idx => { #body })
        });
        quote! {
            match __rnn_variant {
                #(#arms)*
                _ => unreachable!("the variant is chosen among the network's"),
            }
        }
    }

    /// `__rnn_layer<k>_train`: one direction of a layer over packed rows,
    /// keeping its tape.
    fn emit_layer_train(&self, layer_idx: usize) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let layer = &self.network.layers[layer_idx];
        let plan = &self.training_plans()[layer_idx];
        let cx = Layer {
            layer,
            plan,
            phase: Phase::Train,
        };
        let forward = plan.backward.forward;
        let name = format_ident!("__rnn_layer{}_train", layer_idx);
        let invariants = cx.invariants(0..forward);
        let packed = cx.packed(0..forward);
        let hoisted = cx
            .ids(Kind::Hoisted, 0..forward)
            .into_iter()
            .filter(|id| cx.has_buffer(*id) && cx.has_statement(*id))
            .map(|id| {
                let ident = value_ident(id);
                let width = usize_lit(cx.width(id));
                let statement = cx.step_statement(id, true);
                // Kept ones leave with the tape; the others go back to the workspace.
                let buffer = quote!(__rnn_ws.take(__rnn_rows, #width));
                quote! {
                    let mut #ident = #buffer;
                    #statement
                }
            })
            .collect::<Vec<_>>();
        let hoisted_given: Vec<Ident> = cx
            .ids(Kind::Hoisted, 0..forward)
            .into_iter()
            .filter(|id| cx.has_buffer(*id) && cx.has_statement(*id) && !plan.kept.contains(id))
            .map(value_ident)
            .collect();
        let (buffers, mut given) = cx.step_buffers(0..forward);
        given.extend(hoisted_given);
        let states: Vec<Ident> = (0..layer.states.len())
            .map(|k| format_ident!("__rnn_s{}", k))
            .collect();
        let tapes: Vec<Ident> = (0..layer.states.len())
            .map(|k| format_ident!("__rnn_tape{}", k))
            .collect();
        let state_sizes: Vec<_> = layer
            .states
            .iter()
            .map(|state| usize_lit(state.size))
            .collect();
        let statements = cx
            .ids(Kind::Step, 0..forward)
            .into_iter()
            .filter(|id| cx.has_statement(*id))
            .map(|id| cx.step_statement(id, false));
        let step = &layer.step;
        let staging: Vec<Ident> = (0..layer.states.len())
            .map(|k| format_ident!("__rnn_next{}", k))
            .collect();
        // New states are staged first: an update may read another state.
        let stage = step.updates.iter().enumerate().map(|(k, update)| {
            let value = cx.view(*update, false);
            let staged = &staging[k];
            quote!(#staged.slice_mut(s![..__rnn_n, ..]).assign(&#value);)
        });
        let updates = staging.iter().zip(&states).map(|(staged, state)| {
            quote!(#state.slice_mut(s![..__rnn_n, ..]).assign(&#staged.slice(s![..__rnn_n, ..]));)
        });
        let output = cx.view(step.output, false);
        let output_doc = format!("Layer `{}` #{} in training, one direction, over packed rows: its output, final states and tape.", layer.name, layer.stack_idx);
        let kept = plan
            .kept
            .iter()
            .chain(&plan.kept_steps)
            .map(|id| value_ident(*id));
        let calls = self.step_calls(false);
        let width = usize_lit(layer.output_size);
        quote! {
            #[doc = #output_doc]
            #[allow(clippy::too_many_arguments, clippy::type_complexity, unused_mut, unused_variables, clippy::redundant_clone)]
            fn #name(
                __rnn_p: &[#rt::ndarray::ArrayD<f32>],
                __rnn_ws: &#rt::__private::Workspace,
                __rnn_packing: &#rt::__private::Packing,
                __rnn_variant: usize,
                __rnn_in: &[#rt::ndarray::Array2<f32>],
                __rnn_init: ::std::vec::Vec<#rt::ndarray::Array2<f32>>,
            ) -> (#rt::ndarray::Array2<f32>, ::std::vec::Vec<#rt::ndarray::Array2<f32>>, ::std::vec::Vec<#rt::ndarray::Array2<f32>>) {
                #prelude
                let __rnn_batch = __rnn_packing.batch();
                let __rnn_rows = __rnn_packing.rows();
                let __rnn_max_len = __rnn_packing.max_len();
                let mut __rnn_init = __rnn_init.into_iter();
                #(let mut #states = __rnn_init.next().expect("one initial value per state");)*
                #(let mut #tapes = __rnn_ws.take(__rnn_rows, #state_sizes);)*
                #(#invariants)*
                #(#packed)*
                #(#hoisted)*
                #(#buffers)*
                let mut __rnn_out = Array2::<f32>::zeros((__rnn_rows, #width));
                #(let mut #staging = __rnn_ws.take(__rnn_batch, #state_sizes);)*
                {
                    let mut __rnn_step = |__rnn_t: usize| {
                        let __rnn_n = __rnn_packing.batch_size(__rnn_t);
                        let __rnn_off = __rnn_packing.offset(__rnn_t);
                        #(#tapes.slice_mut(s![__rnn_off..__rnn_off + __rnn_n, ..]).assign(&#states.slice(s![..__rnn_n, ..]));)*
                        #(#statements)*
                        __rnn_out.slice_mut(s![__rnn_off..__rnn_off + __rnn_n, ..]).assign(&#output);
                        #(#stage)*
                        #(#updates)*
                    };
                    #calls
                }
                #(__rnn_ws.give(#given);)*
                #(__rnn_ws.give(#staging);)*
                (__rnn_out, vec![#(#states),*], vec![#(#tapes,)* #(#kept),*])
            }
        }
    }

    /// `__rnn_layer<k>_backward`: one direction of a layer's backward over
    /// its tape.
    fn emit_layer_backward(&self, layer_idx: usize) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let layer = &self.network.layers[layer_idx];
        let plan = &self.training_plans()[layer_idx];
        let cx = Layer {
            layer,
            plan,
            phase: Phase::Backward,
        };
        let total = plan.backward.nodes.len();
        let forward = plan.backward.forward;
        let name = format_ident!("__rnn_layer{}_backward", layer_idx);
        let mut invariants = cx.invariants(0..forward);
        invariants.extend(cx.invariants(forward..total));
        let packed = cx.packed(0..total);
        let (buffers, given) = cx.step_buffers(0..total);
        let sums = cx.ids(Kind::Sum, forward..total);
        let sum_buffers = sums.iter().map(|id| {
            let ident = value_ident(*id);
            let (rows, cols) = match cx.node(*id).shape {
                Shape::Matrix(rows, cols) => (rows, cols),
                Shape::Vector(len) => (1, len),
                Shape::Scalar => (1, 1),
            };
            let (rows, cols) = (usize_lit(rows), usize_lit(cols));
            quote!(let mut #ident = __rnn_ws.take(#rows, #cols); #ident.fill(0.0);)
        });
        let sum_idents: Vec<Ident> = sums.iter().map(|id| value_ident(*id)).collect();
        let statements = cx
            .ids(Kind::Step, forward..total)
            .into_iter()
            .filter(|id| cx.has_statement(*id))
            .map(|id| cx.step_statement(id, false));
        let step_sums = sums
            .iter()
            .filter(|id| !plan.deferred[id.index()])
            .map(|id| {
                let ident = value_ident(*id);
                match cx.node(*id).op {
                    Op::SumBatch(inner) => {
                        let inner = cx.view(inner, false);
                        quote!(__rnn_rt::sum_rows(#ident.view_mut(), #inner);)
                    }
                    Op::Outer(g, v) => {
                        let (g, v) = (cx.view(g, false), cx.view(v, false));
                        quote!(__rnn_rt::outer_acc(#ident.view_mut(), #g, #v);)
                    }
                    _ => unreachable!("sums are sum_batch or outer"),
                }
            });
        let deferred = sums
            .iter()
            .filter(|id| plan.deferred[id.index()])
            .map(|id| {
                let ident = value_ident(*id);
                let Op::Outer(g, v) = cx.node(*id).op else {
                    unreachable!("only outer products are deferred")
                };
                let (g, v) = (cx.all_rows(g), cx.all_rows(v));
                quote!(__rnn_rt::outer_acc(#ident.view_mut(), #g, #v);)
            });
        let afters = cx.ids(Kind::After, forward..total).into_iter().map(|id| {
            let (ident, expr) = (value_ident(id), cx.whole_expr(id));
            quote!(let #ident: Array2<f32> = #expr;)
        });
        let d_states: Vec<Ident> = (0..layer.states.len())
            .map(|k| format_ident!("__rnn_ds{}", k))
            .collect();
        // The gradients of the states before the step are staged first: one
        // may be read from another state's seed.
        let staging: Vec<Ident> = (0..layer.states.len())
            .map(|k| format_ident!("__rnn_next{}", k))
            .collect();
        let staging_buffers = layer.states.iter().zip(&staging).map(|(state, staged)| {
            let size = usize_lit(state.size);
            quote!(let mut #staged = __rnn_ws.take(__rnn_batch, #size);)
        });
        let state_results = plan.backward.states.iter().enumerate().map(|(k, result)| {
            let staged = &staging[k];
            match result {
                Some(id) => {
                    let value = cx.view(*id, false);
                    quote!(#staged.slice_mut(s![..__rnn_n, ..]).assign(&#value);)
                }
                None => quote!(#staged.slice_mut(s![..__rnn_n, ..]).fill(0.0);),
            }
        });
        let state_writes = (0..layer.states.len()).map(|k| {
            let (d_state, staged) = (&d_states[k], &staging[k]);
            quote!(#d_state.slice_mut(s![..__rnn_n, ..]).assign(&#staged.slice(s![..__rnn_n, ..]));)
        });
        let d_inputs: Vec<Ident> = (0..layer.inputs.len())
            .map(|k| format_ident!("__rnn_din{}", k))
            .collect();
        let input_buffers = layer.inputs.iter().enumerate().map(|(k, input)| {
            let ident = &d_inputs[k];
            let size = usize_lit(input.size);
            let rows = if input.per_step {
                quote!(__rnn_rows)
            } else {
                quote!(__rnn_batch)
            };
            quote!(let mut #ident = Array2::<f32>::zeros((#rows, #size));)
        });
        let input_results = plan.backward.inputs.iter().enumerate().filter_map(|(k, result)| {
            let id = (*result)?;
            let ident = &d_inputs[k];
            let value = cx.view(id, false);
            Some(if layer.inputs[k].per_step {
                quote!(#ident.slice_mut(s![__rnn_off..__rnn_off + __rnn_n, ..]).assign(&#value);)
            } else {
                quote! {{
                    let mut __rnn_out = #ident.slice_mut(s![..__rnn_n, ..]);
                    __rnn_out += &#value;
                }}
            })
        });
        let param_results = plan.backward.params.iter().enumerate().map(|(k, result)| {
            let shape: Vec<_> = layer.params[k].shape.iter().map(|dim| usize_lit(*dim)).collect();
            match result {
                Some(id) => {
                    let place = cx.place(*id);
                    quote!(#place.view().into_shape_with_order(__rnn_nd::IxDyn(&[#(#shape),*])).expect("a parameter's gradient has its shape").to_owned())
                }
                None => quote!(#rt::ndarray::ArrayD::<f32>::zeros(__rnn_nd::IxDyn(&[#(#shape),*]))),
            }
        });
        let calls = self.step_calls(true);
        let doc = format!("The backward of layer `{}` #{}, one direction, over its tape: each parameter's gradient, each cell input's, each initial state's.", layer.name, layer.stack_idx);
        quote! {
            #[doc = #doc]
            #[allow(clippy::too_many_arguments, clippy::type_complexity, unused_mut, unused_variables, clippy::redundant_clone, clippy::let_unit_value)]
            fn #name(
                __rnn_p: &[#rt::ndarray::ArrayD<f32>],
                __rnn_ws: &#rt::__private::Workspace,
                __rnn_packing: &#rt::__private::Packing,
                __rnn_variant: usize,
                __rnn_in: &[#rt::ndarray::Array2<f32>],
                __rnn_tape: &[#rt::ndarray::Array2<f32>],
                __rnn_dout: #rt::ndarray::ArrayView2<'_, f32>,
                __rnn_seed: ::std::vec::Vec<#rt::ndarray::Array2<f32>>,
            ) -> (::std::vec::Vec<#rt::ndarray::ArrayD<f32>>, ::std::vec::Vec<#rt::ndarray::Array2<f32>>, ::std::vec::Vec<#rt::ndarray::Array2<f32>>) {
                #prelude
                let __rnn_batch = __rnn_packing.batch();
                let __rnn_rows = __rnn_packing.rows();
                let __rnn_max_len = __rnn_packing.max_len();
                let mut __rnn_seed = __rnn_seed.into_iter();
                #(let mut #d_states = __rnn_seed.next().expect("one seed per state");)*
                #(#invariants)*
                #(#packed)*
                #(#buffers)*
                #(#sum_buffers)*
                #(#input_buffers)*
                #(#staging_buffers)*
                {
                    let mut __rnn_step = |__rnn_t: usize| {
                        let __rnn_n = __rnn_packing.batch_size(__rnn_t);
                        let __rnn_off = __rnn_packing.offset(__rnn_t);
                        #(#statements)*
                        #(#step_sums)*
                        #(#input_results)*
                        #(#state_results)*
                        #(#state_writes)*
                    };
                    #calls
                }
                #(#deferred)*
                #(#afters)*
                let __rnn_result = (vec![#(#param_results),*], vec![#(#d_inputs),*], vec![#(#d_states),*]);
                #(__rnn_ws.give(#given);)*
                #(__rnn_ws.give(#sum_idents);)*
                #(__rnn_ws.give(#staging);)*
                __rnn_result
            }
        }
    }
}

impl Cx<'_> {
    /// The training items of a network: the tape and gradient types
    /// (outside the model's `impl`), and the methods (inside it).
    pub(super) fn emit_training(&self) -> (TokenStream, TokenStream) {
        let rt = self.rt;
        let prelude = self.prelude();
        let model = self.model_ident();
        let state = self.state_struct();
        let output = self.output_struct();
        let tape = format_ident!("{}Tape", self.network.name);
        let grads = format_ident!("{}Grads", self.network.name);
        let specs = weights::specs(self.network);
        let param_names: Vec<&str> = specs.iter().map(|spec| spec.name.as_str()).collect();
        let input_names: Vec<&str> = self
            .network
            .inputs
            .iter()
            .map(|input| input.name.as_str())
            .collect();
        let Entry {
            params,
            checks,
            batch_expr,
            steps_expr,
            steps_param,
            choice,
            packs,
        } = self.entry();
        let width = usize_lit(self.network.output_size());

        // Where each layer's parameters start in the flat list.
        let mut starts = Vec::new();
        let mut start = 0usize;
        for layer in &self.network.layers {
            starts.push(start);
            start += layer.params.len() * layer.directions;
        }

        let mut train_layers = Vec::new();
        let mut backward_layers = Vec::new();
        for (idx, layer) in self.network.layers.iter().enumerate() {
            let train_fn = format_ident!("__rnn_layer{}_train", idx);
            let backward_fn = format_ident!("__rnn_layer{}_backward", idx);
            let y = format_ident!("__rnn_y{}", idx);
            let y_previous = idx
                .checked_sub(1)
                .map(|previous| format_ident!("__rnn_y{}", previous));
            let count = layer.params.len();
            let mut direction_runs = Vec::new();
            let mut direction_backs = Vec::new();
            let mut outs = Vec::new();
            for direction in 0..layer.directions {
                let reverse = direction == 1;
                let first = usize_lit(starts[idx] + direction * count);
                let end = usize_lit(starts[idx] + (direction + 1) * count);
                let row = usize_lit(layer.stack_idx * layer.directions + direction);
                let ins = layer.inputs.iter().map(|input| {
                    let whole = match input.source {
                        InputSource::Previous => {
                            let previous = y_previous.as_ref().expect("a later layer");
                            quote!(#previous)
                        }
                        InputSource::Network(k) => {
                            let net = format_ident!("__rnn_net{}", k);
                            quote!(#net)
                        }
                    };
                    if input.per_step && reverse {
                        quote! {{
                            let mut __rnn_out = self.__rnn_workspace.take(#whole.nrows(), #whole.ncols());
                            __rnn_packing.reverse_into(#whole.view(), __rnn_out.view_mut());
                            __rnn_out
                        }}
                    } else {
                        quote!(self.__rnn_workspace.copy_of(#whole.view()))
                    }
                });
                let inits = layer.states.iter().enumerate().map(|(k, state_info)| {
                    let group = self.state_group(layer, k);
                    let field = &group.field;
                    let size = usize_lit(state_info.size);
                    quote!(__rnn_packing.sort_rows(__rnn_rt::initial_rows(initial_state.map(|state| &state.#field), #row, __rnn_batch, #size).view()))
                });
                let finals = layer.states.iter().enumerate().map(|(k, _)| {
                    let group = self.state_group(layer, k);
                    let field = &group.field;
                    let k = usize_lit(k);
                    quote!(__rnn_packing.unsort_rows_into(__rnn_fin[#k].view(), __rnn_final.#field.index_axis_mut(__rnn_nd::Axis(0), #row));)
                });
                let out = format_ident!("__rnn_out{}", direction);
                let reorder = if reverse {
                    quote!(let #out = __rnn_packing.reversed(#out.view());)
                } else {
                    TokenStream::new()
                };
                direction_runs.push(quote! {
                    let __rnn_ins: ::std::vec::Vec<Array2<f32>> = vec![#(#ins),*];
                    let (#out, __rnn_fin, __rnn_tape) = Self::#train_fn(&self.__rnn_params[#first..#end], &self.__rnn_workspace, &__rnn_packing, __rnn_variant, &__rnn_ins, vec![#(#inits),*]);
                    #reorder
                    #(#finals)*
                    __rnn_inputs.push(__rnn_ins);
                    __rnn_tapes.push(__rnn_tape);
                });
                outs.push(out);

                // The backward of this direction.
                let direction_lit = usize_lit(direction);
                let tape_idx = quote!(__rnn_layer_tape + #direction_lit);
                let columns = (
                    usize_lit(direction * layer.output_size),
                    usize_lit((direction + 1) * layer.output_size),
                );
                let (lo, hi) = columns;
                let dout = if reverse {
                    quote!(__rnn_packing.reversed(__rnn_dout.slice(s![.., #lo..#hi])))
                } else {
                    quote!(__rnn_dout.slice(s![.., #lo..#hi]))
                };
                let seeds = layer.states.iter().enumerate().map(|(k, state_info)| {
                    let group = self.state_group(layer, k);
                    let field = &group.field;
                    let size = usize_lit(state_info.size);
                    quote!(__rnn_packing.sort_rows(__rnn_rt::initial_rows(d_final.map(|state| &state.#field), #row, __rnn_batch, #size).view()))
                });
                let d_inputs = layer.inputs.iter().enumerate().map(|(k, input)| {
                    let k_lit = usize_lit(k);
                    let value = if input.per_step && reverse {
                        quote!(__rnn_packing.reversed(__rnn_din[#k_lit].view()))
                    } else {
                        quote!(__rnn_din[#k_lit])
                    };
                    match input.source {
                        InputSource::Previous => quote!(__rnn_dprev += &#value;),
                        InputSource::Network(net) => {
                            let net = usize_lit(net);
                            quote!(__rnn_dnet[#net] += &#value;)
                        }
                    }
                });
                let d_initials = layer.states.iter().enumerate().map(|(k, _)| {
                    let group = self.state_group(layer, k);
                    let field = &group.field;
                    let k = usize_lit(k);
                    quote!(__rnn_packing.unsort_rows_into(__rnn_dinit[#k].view(), __rnn_initial.#field.index_axis_mut(__rnn_nd::Axis(0), #row));)
                });
                direction_backs.push(quote! {
                    {
                        let __rnn_dout_dir = #dout;
                        let (__rnn_dp, __rnn_din, __rnn_dinit) = Self::#backward_fn(
                            &self.__rnn_params[#first..#end],
                            &self.__rnn_workspace,
                            __rnn_packing,
                            tape.__rnn_variant,
                            &tape.__rnn_inputs[#tape_idx],
                            &tape.__rnn_tapes[#tape_idx],
                            __rnn_dout_dir.view(),
                            vec![#(#seeds),*],
                        );
                        for (__rnn_slot, __rnn_value) in __rnn_params[#first..#end].iter_mut().zip(__rnn_dp) {
                            *__rnn_slot = __rnn_value;
                        }
                        #(#d_inputs)*
                        #(#d_initials)*
                    }
                });
            }
            let joined = if outs.len() == 1 {
                let out = &outs[0];
                quote!(let #y = #out;)
            } else {
                quote!(let #y = __rnn_nd::concatenate(__rnn_nd::Axis(1), &[#(#outs.view()),*]).expect("directions share their rows");)
            };
            train_layers.push(quote! {
                #(#direction_runs)*
                #joined
            });
            let previous_width = layer
                .inputs
                .iter()
                .find(|input| input.source == InputSource::Previous)
                .map_or(0, |input| input.size);
            let previous_width = usize_lit(previous_width);
            let layer_tape = usize_lit(
                self.network.layers[..idx]
                    .iter()
                    .map(|layer| layer.directions)
                    .sum::<usize>(),
            );
            backward_layers.push(quote! {
                {
                    let __rnn_layer_tape = #layer_tape;
                    let mut __rnn_dprev = Array2::<f32>::zeros((__rnn_packing.rows(), #previous_width));
                    #(#direction_backs)*
                    __rnn_dout = __rnn_dprev;
                }
            });
        }
        backward_layers.reverse();
        let last = format_ident!("__rnn_y{}", self.network.layers.len() - 1);
        let finals_init = self.groups.iter().map(|group| {
            let field = &group.field;
            let (rows, size) = (usize_lit(group.rows), usize_lit(group.size));
            quote!(#field: Array3::<f32>::zeros((#rows, __rnn_batch, #size)))
        });
        let initial_init = self.groups.iter().map(|group| {
            let field = &group.field;
            let (rows, size) = (usize_lit(group.rows), usize_lit(group.size));
            quote!(#field: Array3::<f32>::zeros((#rows, __rnn_batch, #size)))
        });
        let output_fields = self.groups.iter().map(|group| {
            let (field, output_field) = (&group.field, &group.output_field);
            quote!(#output_field: __rnn_final.#field)
        });
        let net_grads_init = self.network.inputs.iter().map(|input| {
            let size = usize_lit(input.size);
            if input.per_step {
                quote!(Array2::<f32>::zeros((__rnn_packing.rows(), #size)))
            } else {
                quote!(Array2::<f32>::zeros((__rnn_batch, #size)))
            }
        });
        let net_grads_out = self.network.inputs.iter().enumerate().map(|(k, input)| {
            let k = usize_lit(k);
            if input.per_step {
                quote!(__rnn_packing.unpack(__rnn_dnet[#k].view()).into_dyn())
            } else {
                quote!(__rnn_packing.unsort_rows(__rnn_dnet[#k].view()).into_dyn())
            }
        });
        let initial_fields: Vec<&Ident> = self.groups.iter().map(|group| &group.field).collect();
        let final_names: Vec<&str> = self
            .groups
            .iter()
            .map(|group| group.final_name.as_str())
            .collect();
        let initial_names: Vec<&str> = self
            .groups
            .iter()
            .map(|group| group.initial_name.as_str())
            .collect();
        let per_param_shapes = specs.iter().map(|spec| {
            let dims = spec.shape.iter().map(|dim| usize_lit(*dim));
            quote!(#rt::ndarray::ArrayD::<f32>::zeros(__rnn_nd::IxDyn(&[#(#dims),*])))
        });
        let train_fns = (0..self.network.layers.len()).map(|idx| self.emit_layer_train(idx));
        let backward_fns = (0..self.network.layers.len()).map(|idx| self.emit_layer_backward(idx));
        let tape_doc = format!(
            "What [`{model}::forward_train`] keeps for [`{model}::backward`]: per layer and direction, the cell inputs and the states before each step, and the values the plan keeps, over the running rows of each step (packed). {} floats per running step of a sequence.",
            self.training_plans()
                .iter()
                .zip(&self.network.layers)
                .map(|(plan, layer)| plan.tape_floats_per_row * layer.directions)
                .sum::<usize>()
        );
        let grads_doc = format!("The gradients [`{model}::backward`] returns.");
        let names_doc = format!("The names of the parameters, PyTorch's, in the order of [`{grads}::params`] and [`{model}::params`].");
        let network_name = &self.network.name;

        let items = quote! {
            #[doc = #tape_doc]
            #[derive(Debug, Clone)]
            pub struct #tape {
                __rnn_packing: #rt::__private::Packing,
                __rnn_variant: usize,
                __rnn_steps: usize,
                __rnn_stamp: u64,
                __rnn_inputs: ::std::vec::Vec<::std::vec::Vec<#rt::ndarray::Array2<f32>>>,
                __rnn_tapes: ::std::vec::Vec<::std::vec::Vec<#rt::ndarray::Array2<f32>>>,
            }

            impl #tape {
                /// The bytes the tape holds.
                pub fn bytes(&self) -> usize {
                    self.__rnn_inputs.iter().chain(&self.__rnn_tapes).flatten().map(|array| array.len() * 4).sum()
                }

                /// The batch size of the call that made it.
                pub fn batch(&self) -> usize {
                    self.__rnn_packing.batch()
                }
            }

            #[doc = #grads_doc]
            #[derive(Debug, Clone, PartialEq)]
            pub struct #grads {
                /// Each parameter's gradient, in the order of [`Self::NAMES`].
                pub params: ::std::vec::Vec<#rt::ndarray::ArrayD<f32>>,
                /// Each network input's gradient, in the order of [`Self::INPUTS`]: `[B, T, n]` for a
                /// per-step input (zero at padded steps), `[B, n]` for a context.
                pub inputs: ::std::vec::Vec<#rt::ndarray::ArrayD<f32>>,
                /// The gradient with respect to the initial state (that of a sequence of length 0
                /// is its final state's).
                pub initial_state: #state,
            }

            impl #grads {
                #[doc = #names_doc]
                pub const NAMES: &'static [&'static str] = &[#(#param_names),*];
                /// The names of the network inputs.
                pub const INPUTS: &'static [&'static str] = &[#(#input_names),*];

                /// Every gradient with its tensor's name: the parameters by PyTorch's names, the
                /// inputs by theirs, the initial states as `h0`, `c0`.
                pub fn named(&self) -> ::std::vec::Vec<(&'static str, #rt::ndarray::ArrayViewD<'_, f32>)> {
                    let mut named: ::std::vec::Vec<(&'static str, #rt::ndarray::ArrayViewD<'_, f32>)> = Self::NAMES.iter().copied().zip(self.params.iter().map(|array| array.view())).collect();
                    named.extend(Self::INPUTS.iter().copied().zip(self.inputs.iter().map(|array| array.view())));
                    #(named.push((#initial_names, self.initial_state.#initial_fields.view().into_dyn()));)*
                    named
                }
            }
        };

        let methods = quote! {
            /// Runs the network as [`Self::forward`] does, keeping what
            /// [`Self::backward`] needs (see the tape's type for its size).
            ///
            /// # Errors
            ///
            /// As [`Self::forward`].
            pub fn forward_train(
                &self,
                #(#params,)*
                #(#steps_param,)*
                seq_len: ::std::option::Option<&[usize]>,
                initial_state: ::std::option::Option<&#state>,
            ) -> ::std::result::Result<(#output, #tape), #rt::RnnError> {
                #prelude
                let __rnn_batch = #batch_expr;
                let __rnn_steps = #steps_expr;
                #(#checks)*
                if let Some(state) = initial_state {
                    state.check(__rnn_batch)?;
                }
                let __rnn_packing = #rt::__private::Packing::new(seq_len, __rnn_batch, __rnn_steps)?;
                let __rnn_packing = &__rnn_packing;
                #choice
                #(#packs)*
                let mut __rnn_final = #state { #(#finals_init,)* };
                let mut __rnn_inputs = ::std::vec::Vec::new();
                let mut __rnn_tapes = ::std::vec::Vec::new();
                #(#train_layers)*
                let __rnn_y = __rnn_packing.unpack(#last.view());
                Ok((
                    #output { y: __rnn_y, #(#output_fields,)* },
                    #tape {
                        __rnn_packing: __rnn_packing.clone(),
                        __rnn_variant,
                        __rnn_steps,
                        __rnn_stamp: self.__rnn_stamp,
                        __rnn_inputs,
                        __rnn_tapes,
                    },
                ))
            }

            /// The gradients of a loss with respect to every parameter,
            /// input and initial state, given the loss's gradients with
            /// respect to the outputs of the [`Self::forward_train`] call
            /// that made `tape`: `dy` `[B, T, n]` (its padded steps are
            /// ignored) and, optionally, the final states' (`None`: zero).
            ///
            /// # Errors
            ///
            /// A tape from another model or from before the parameters
            /// changed, a gradient of the wrong shape, or a non-finite one:
            /// the error names the tensor.
            pub fn backward(
                &self,
                tape: &#tape,
                dy: #rt::ndarray::ArrayView3<'_, f32>,
                d_final: ::std::option::Option<&#state>,
            ) -> ::std::result::Result<#grads, #rt::RnnError> {
                #prelude
                if tape.__rnn_stamp != self.__rnn_stamp {
                    return Err(#rt::RnnError::InvalidValue {
                        tensor: "tape".to_owned(),
                        reason: format!("made by another {} or before its parameters changed", #network_name),
                    });
                }
                let __rnn_packing = &tape.__rnn_packing;
                let __rnn_batch = __rnn_packing.batch();
                __rnn_rt::check_shape("dy", dy.shape(), &[Some(__rnn_batch), Some(tape.__rnn_steps), Some(#width)])?;
                __rnn_rt::check_finite("dy", dy.iter())?;
                if let Some(state) = d_final {
                    state.check(__rnn_batch)?;
                    #(__rnn_rt::check_finite(#final_names, state.#initial_fields.iter())?;)*
                }
                let mut __rnn_params: ::std::vec::Vec<#rt::ndarray::ArrayD<f32>> = vec![#(#per_param_shapes),*];
                let mut __rnn_dnet: ::std::vec::Vec<Array2<f32>> = vec![#(#net_grads_init),*];
                let mut __rnn_initial = #state { #(#initial_init,)* };
                let mut __rnn_dout = __rnn_packing.pack(dy);
                #(#backward_layers)*
                let _ = __rnn_dout;
                Ok(#grads {
                    params: __rnn_params,
                    inputs: vec![#(#net_grads_out),*],
                    initial_state: __rnn_initial,
                })
            }

            /// Gives a tape's buffers back to the model's workspace, for the
            /// next [`Self::forward_train`]: a training loop that recycles
            /// its tapes allocates nothing once the workspace has settled.
            pub fn recycle(&self, tape: #tape) {
                for buffer in tape.__rnn_inputs.into_iter().chain(tape.__rnn_tapes).flatten() {
                    self.__rnn_workspace.give(buffer);
                }
            }

            /// The parameters, by PyTorch's names ([`#grads::NAMES`] order).
            pub fn params(&self) -> ::std::vec::Vec<(&'static str, #rt::ndarray::ArrayViewD<'_, f32>)> {
                #grads::NAMES.iter().copied().zip(self.__rnn_params.iter().map(|array| array.view())).collect()
            }

            /// Changes the parameters (an optimizer's step): `update` gets
            /// each one by name, mutably; the model is rebuilt from them
            /// afterwards, and tapes made before no longer fit it.
            ///
            /// # Errors
            ///
            /// A parameter made non-finite: the model is left unchanged.
            pub fn update_params(
                &mut self,
                mut update: impl FnMut(&str, #rt::ndarray::ArrayViewMutD<'_, f32>),
            ) -> ::std::result::Result<(), #rt::RnnError> {
                let mut changed = self.__rnn_params.clone();
                for (name, param) in #grads::NAMES.iter().zip(changed.iter_mut()) {
                    update(name, param.view_mut());
                }
                let mut weights = #rt::TensorMap::new();
                for (name, param) in #grads::NAMES.iter().zip(changed) {
                    #rt::__private::check_finite(name, param.iter())?;
                    weights.insert_f32(*name, param);
                }
                let threads = self.__rnn_threads;
                *self = Self::from_weights(&weights)?.with_threads(threads);
                Ok(())
            }

            /// The parameters as named tensors, PyTorch's names.
            pub fn to_weights(&self) -> #rt::TensorMap {
                let mut weights = #rt::TensorMap::new();
                for (name, param) in #grads::NAMES.iter().zip(&self.__rnn_params) {
                    weights.insert_f32(*name, param.clone());
                }
                weights
            }

            /// Saves the parameters as safetensors, with PyTorch's names:
            /// `load_state_dict` takes them as they are.
            ///
            /// # Errors
            ///
            /// The file cannot be written.
            pub fn save_safetensors(&self, path: impl ::std::convert::AsRef<::std::path::Path>) -> ::std::result::Result<(), #rt::RnnError> {
                self.to_weights().save(path)
            }

            #(#train_fns)*
            #(#backward_fns)*
        };
        (items, methods)
    }
}

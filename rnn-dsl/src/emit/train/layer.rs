//! One node of a layer's training code: where its value lives, and the
//! statement that computes it.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::emit::idents::{f32_tokens, packed_field as packed_ident, usize_lit, value_ident};
use crate::ir::{self, Op, Seed, Shape, ValueId};
use crate::lower::{BackwardPlan, Kind};

/// Which of a layer's two training functions is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Train,
    Backward,
}

/// One layer's training code being written.
pub(super) struct Layer<'a> {
    pub(super) layer: &'a ir::Layer,
    pub(super) plan: &'a BackwardPlan,
    pub(super) phase: Phase,
}

impl Layer<'_> {
    pub(super) fn node(&self, id: ValueId) -> &ir::Node {
        self.plan.backward.node(id)
    }

    pub(super) fn kind(&self, id: ValueId) -> Kind {
        self.plan.kind(id)
    }

    pub(super) fn width(&self, id: ValueId) -> usize {
        match self.node(id).shape {
            Shape::Vector(len) => len,
            Shape::Matrix(_, cols) => cols,
            Shape::Scalar => 1,
        }
    }

    /// Where a value is stored: its own buffer, or columns from `start` of
    /// another's (a view of a slice, a piece of a concatenation).
    pub(super) fn storage(&self, id: ValueId) -> (ValueId, usize) {
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
    pub(super) fn place(&self, id: ValueId) -> TokenStream {
        let (id, _) = self.storage(id);
        if let Some(k) = self.in_place(id) {
            let carried = match self.phase {
                Phase::Train => format_ident!("__rnn_s{}", k),
                Phase::Backward => format_ident!("__rnn_ds{}", k),
            };
            return quote!(#carried);
        }
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

    /// The state whose carried buffer this phase writes a value into
    /// ([`BackwardPlan::in_place`]).
    pub(super) fn in_place(&self, id: ValueId) -> Option<usize> {
        let of_phase = match self.phase {
            Phase::Train => id.index() < self.plan.backward.forward,
            Phase::Backward => id.index() >= self.plan.backward.forward,
        };
        self.plan.in_place[id.index()].filter(|_| of_phase)
    }

    /// Whether a stored step value is kept for every step (rows `off..off
    /// + n`) rather than one step's (rows `..n`).
    pub(super) fn by_step_offset(&self, id: ValueId) -> bool {
        let (id, _) = self.storage(id);
        if self.kind(id) == Kind::Hoisted {
            // A step value accumulated onto hoisted rows (`BackwardPlan::onto`).
            return true;
        }
        match &self.node(id).op {
            Op::State(_) => self.phase == Phase::Backward,
            Op::Seed(Seed::Output) => true,
            _ if id.index() < self.plan.backward.forward => self.plan.kept_steps.contains(&id),
            _ => self.plan.all_steps[id.index()],
        }
    }

    /// The columns of a view or piece within its storage, when it is one.
    pub(super) fn columns(&self, id: ValueId) -> Option<TokenStream> {
        let (storage, start) = self.storage(id);
        (storage != id).then(|| {
            let end = usize_lit(start + self.width(id));
            let start = usize_lit(start);
            quote!(#start..#end)
        })
    }

    /// A value over every row of every step (a kept or hoisted value, or
    /// one stored for every step), for a product over all rows.
    pub(super) fn all_rows(&self, id: ValueId) -> TokenStream {
        let place = self.place(id);
        match self.columns(id) {
            Some(columns) => quote!(#place.slice(s![.., #columns])),
            None => quote!(#place.view()),
        }
    }

    /// A value as an elementwise operand at a step, or over every row for
    /// a hoisted value.
    pub(super) fn arg(&self, id: ValueId, hoisting: bool) -> TokenStream {
        if let (Op::Literal(value), Shape::Scalar) = (&self.node(id).op, self.node(id).shape) {
            let value = f32_tokens(*value);
            return quote!(Arg::Scalar(#value));
        }
        let view = self.view(id, hoisting);
        quote!(Arg::Full(#view))
    }

    /// A value's rows as a view: at a step, its running rows; over every
    /// row for a hoisted value, or with `hoisting` (after the loop, for a
    /// `Rows` value) for any value kept for every step; whole for an
    /// invariant shared by the batch.
    pub(super) fn view(&self, id: ValueId, hoisting: bool) -> TokenStream {
        let place = self.place(id);
        let columns = self.columns(id).unwrap_or_else(|| quote!(..));
        match self.kind(id) {
            Kind::Invariant if self.plan.per_sequence(id) => {
                quote!(#place.slice(s![..__rnn_n, ..]))
            }
            Kind::Invariant | Kind::Sum | Kind::After => quote!(#place.view()),
            Kind::Rows => quote!(#place.slice(s![.., #columns])),
            Kind::Hoisted if hoisting => quote!(#place.slice(s![.., #columns])),
            Kind::Hoisted => quote!(#place.slice(s![__rnn_off..__rnn_off + __rnn_n, #columns])),
            Kind::Step if self.by_step_offset(id) && hoisting => {
                quote!(#place.slice(s![.., #columns]))
            }
            Kind::Step if self.by_step_offset(id) => {
                quote!(#place.slice(s![__rnn_off..__rnn_off + __rnn_n, #columns]))
            }
            Kind::Step => quote!(#place.slice(s![..__rnn_n, #columns])),
        }
    }

    /// A value's rows at a step that part `__rnn_part` of the batch holds
    /// (`__rnn_lo..__rnn_hi` of the running rows, see
    /// `rnn_runtime::Packing::parts`), for a sum over the batch formed over
    /// each part apart; whole for a value shared by the batch.
    pub(super) fn part_view(&self, id: ValueId) -> TokenStream {
        let place = self.place(id);
        let columns = self.columns(id).unwrap_or_else(|| quote!(..));
        match self.kind(id) {
            Kind::Invariant if self.plan.per_sequence(id) => {
                quote!(#place.slice(s![__rnn_lo..__rnn_hi, ..]))
            }
            Kind::Invariant | Kind::Sum | Kind::After => quote!(#place.view()),
            Kind::Rows => quote!(#place.slice(s![.., #columns])),
            Kind::Hoisted => {
                quote!(#place.slice(s![__rnn_off + __rnn_lo..__rnn_off + __rnn_hi, #columns]))
            }
            Kind::Step if self.by_step_offset(id) => {
                quote!(#place.slice(s![__rnn_off + __rnn_lo..__rnn_off + __rnn_hi, #columns]))
            }
            Kind::Step => quote!(#place.slice(s![__rnn_lo..__rnn_hi, #columns])),
        }
    }

    /// Where a step value is written at a step.
    pub(super) fn view_mut(&self, id: ValueId) -> TokenStream {
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
    pub(super) fn has_statement(&self, id: ValueId) -> bool {
        let recomputed = self.phase == Phase::Backward && id.index() < self.plan.backward.forward;
        !self.plan.free[id.index()] && !recomputed
    }

    /// Whether a node has a buffer of its own in this phase.
    pub(super) fn has_buffer(&self, id: ValueId) -> bool {
        !self.plan.local[id.index()]
            && self.in_place(id).is_none()
            && self.plan.onto[id.index()].is_none()
            && self.plan.views[id.index()].is_none()
            && self.plan.aliases[id.index()].is_none()
            && !matches!(
                self.node(id).op,
                Op::Input(_) | Op::State(_) | Op::Seed(Seed::Output)
            )
            && !(self.phase == Phase::Backward && id.index() < self.plan.backward.forward)
    }

    /// The statement computing a step value (or, with `hoisting`, a
    /// hoisted one over every row) into its buffer.
    pub(super) fn step_statement(&self, id: ValueId, hoisting: bool) -> TokenStream {
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
                match self.plan.onto[id.index()] {
                    Some(hoisted) => {
                        let rows = self.place(hoisted);
                        quote!(__rnn_rt::gemm_packed(#vector, &#packed, #rows.slice_mut(s![__rnn_off..__rnn_off + __rnn_n, ..]), true);)
                    }
                    None => quote!(__rnn_rt::gemm_packed(#vector, &#packed, #out, false);),
                }
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
            Op::Reduce(op, inner) => {
                let inner = self.view(*inner, hoisting);
                let op = format_ident!("{}", op.name());
                quote!(__rnn_rt::reduce(#out, #inner, __rnn_rt::Reduction::#op);)
            }
            Op::Seed(Seed::State(k)) => {
                let seed = format_ident!("__rnn_ds{}", k);
                quote!(#out.assign(&#seed.slice(s![..__rnn_n, ..]));)
            }
            Op::Input(_) | Op::State(_) | Op::Seed(Seed::Output) => TokenStream::new(),
            op => unreachable!("not a step operation: {op:?}"),
        }
    }

    /// The index of the first element of value `id` for running row
    /// `__rnn_r` of a step (the row [`view`](Self::view) slices) in the
    /// whole rows of its storage `root`, where it starts at column `start`.
    fn row_start(&self, id: ValueId, root: ValueId, start: usize) -> TokenStream {
        let full = usize_lit(self.width(root));
        let row = match self.kind(id) {
            Kind::Invariant if self.plan.per_sequence(id) => Some(quote!(__rnn_r * #full)),
            Kind::Invariant | Kind::Sum | Kind::After | Kind::Rows => None,
            Kind::Hoisted => Some(quote!((__rnn_off + __rnn_r) * #full)),
            Kind::Step if self.by_step_offset(id) => Some(quote!((__rnn_off + __rnn_r) * #full)),
            Kind::Step => Some(quote!(__rnn_r * #full)),
        };
        let start_lit = usize_lit(start);
        match (row, start) {
            (None, _) => quote!(#start_lit),
            (Some(row), 0) => row,
            (Some(row), _) => quote!(#row + #start_lit),
        }
    }

    /// A fused run ([`BackwardPlan::fused`]): one pass over the running
    /// rows in blocks of lanes, as the inference code's passes run (the
    /// runtime's `Pass`, through the kernel table chosen at run time, so
    /// that activations round as the inference pass and the slice kernels
    /// do). Every value of the run is a local of the block; those read
    /// elsewhere are stored. Buffers are bound as slices of whole rows:
    /// each is in standard layout, a row `width` floats long.
    pub(super) fn fused_statement(&self, run: &[ValueId]) -> TokenStream {
        let width = usize_lit(self.width(run[0]));
        // The buffers read and written, by place, each bound once: one the
        // run writes is bound mutably, also where the run reads it (a state
        // updated in place, read at the same columns first).
        let output = self.layer.step.output;
        let stores_output = self.phase == Phase::Train
            && run.contains(&output)
            && self.plan.run_stores_output(output);
        let mut written: Vec<String> = run
            .iter()
            .filter(|id| !self.plan.local[id.index()])
            .map(|id| self.place(*id).to_string())
            .collect();
        if stores_output {
            written.push(quote!(__rnn_out).to_string());
        }
        // The states before the step go to the tape from here, each block
        // before the run overwrites it.
        let tape_copies = match self.phase {
            Phase::Train => self.plan.tape_copies(self.layer, run),
            Phase::Backward => Vec::new(),
        };
        for k in &tape_copies {
            let tape = format_ident!("__rnn_tape{}", k);
            written.push(quote!(#tape).to_string());
        }
        let mut reads: Vec<(String, Ident, TokenStream)> = Vec::new();
        let mut writes: Vec<(String, Ident, TokenStream)> = Vec::new();
        let mut lanes: Vec<TokenStream> = Vec::new();
        let mut bind = |place: TokenStream| -> Ident {
            let key = place.to_string();
            let mutable = written.contains(&key);
            let bound = if mutable { &mut writes } else { &mut reads };
            match bound.iter().find(|(known, _, _)| *known == key) {
                Some((_, ident, _)) => ident.clone(),
                None => {
                    let ident = if mutable {
                        format_ident!("__rnn_o{}", bound.len())
                    } else {
                        format_ident!("__rnn_b{}", bound.len())
                    };
                    let source = if mutable {
                        quote!(__rnn_rt::rows_mut(&mut #place))
                    } else {
                        quote!(__rnn_rt::rows(&#place))
                    };
                    bound.push((key, ident.clone(), source));
                    ident
                }
            }
        };
        for k in &tape_copies {
            let (state, tape) = (
                format_ident!("__rnn_s{}", k),
                format_ident!("__rnn_tape{}", k),
            );
            let (state, tape) = (bind(quote!(#state)), bind(quote!(#tape)));
            lanes.push(quote! {
                V::load(&#state[__rnn_r * #width + __rnn_col..]).store(&mut #tape[(__rnn_off + __rnn_r) * #width + __rnn_col..]);
            });
        }
        for id in run {
            let node = self.node(*id);
            let mut value_of = |operand: ValueId| -> TokenStream {
                if run.contains(&operand) {
                    let local = format_ident!("__rnn_l{}", operand.0);
                    return quote!(#local);
                }
                let source = self.node(operand);
                if let (Op::Literal(value), Shape::Scalar) = (&source.op, source.shape) {
                    let value = f32_tokens(*value);
                    return quote!(V::splat(#value));
                }
                let (root, start) = self.storage(operand);
                let ident = bind(self.place(operand));
                let at = self.row_start(operand, root, start);
                if self.width(operand) == 1 && self.width(run[0]) != 1 {
                    quote!(V::splat(#ident[#at]))
                } else {
                    quote!(V::load(&#ident[#at + __rnn_col..]))
                }
            };
            let expr = match &node.op {
                Op::Binary(op, a, b) => {
                    let (a, b) = (value_of(*a), value_of(*b));
                    let op = format_ident!("{}", op.name());
                    quote!(#a.binary(#b, __rnn_rt::Binary::#op))
                }
                Op::Unary(op, a) => {
                    let a = value_of(*a);
                    let op = format_ident!("{}", op.name());
                    quote!(#a.unary(__rnn_rt::Unary::#op))
                }
                Op::Clip(a, lo, hi) => {
                    let (a, lo, hi) = (value_of(*a), value_of(*lo), value_of(*hi));
                    quote!(#a.clip(#lo, #hi))
                }
                Op::Seed(Seed::State(k)) => {
                    let seed = format_ident!("__rnn_ds{}", k);
                    let ident = bind(quote!(#seed));
                    quote!(V::load(&#ident[__rnn_r * #width + __rnn_col..]))
                }
                op => unreachable!("not a fused operation: {op:?}"),
            };
            let local = format_ident!("__rnn_l{}", id.0);
            lanes.push(quote!(let #local: V = #expr;));
            if !self.plan.local[id.index()] {
                let (root, start) = self.storage(*id);
                let out = bind(self.place(*id));
                let at = self.row_start(*id, root, start);
                lanes.push(quote!(#local.store(&mut #out[#at + __rnn_col..]);));
            }
            if stores_output && *id == output {
                let out = bind(quote!(__rnn_out));
                let full = usize_lit(self.layer.output_size);
                lanes.push(
                    quote!(#local.store(&mut #out[(__rnn_off + __rnn_r) * #full + __rnn_col..]);),
                );
            }
        }
        let name = format_ident!("__RnnRun{}", run[0].0);
        let (read_idents, read_sources): (Vec<&Ident>, Vec<&TokenStream>) = reads
            .iter()
            .map(|(_, ident, source)| (ident, source))
            .unzip();
        let (write_idents, write_sources): (Vec<&Ident>, Vec<&TokenStream>) = writes
            .iter()
            .map(|(_, ident, source)| (ident, source))
            .unzip();
        quote! {{
            struct #name<'a> {
                #(#read_idents: &'a [f32],)*
                #(#write_idents: &'a mut [f32],)*
                __rnn_off: usize,
            }
            impl __rnn_rt::Pass for #name<'_> {
                #[inline(always)]
                #[allow(unused_variables, clippy::identity_op, clippy::erasing_op)]
                fn lanes<V: __rnn_rt::Lanes>(&mut self, __rnn_r: usize, __rnn_col: usize) {
                    let __rnn_off = self.__rnn_off;
                    #(let #read_idents: &[f32] = self.#read_idents;)*
                    #(let #write_idents: &mut [f32] = &mut *self.#write_idents;)*
                    #(#lanes)*
                }
            }
            __rnn_rt::run_pass(
                &mut #name {
                    #(#read_idents: #read_sources,)*
                    #(#write_idents: #write_sources,)*
                    __rnn_off,
                },
                __rnn_n,
                #width,
            );
        }}
    }

    /// The expression of an invariant or after-the-loop value, computed
    /// once (`[1, n]` shared, `[B, n]` per sequence, or a matrix).
    ///
    /// With `parts`, a sum over the batch (of a value per sequence, or over
    /// every row) is over the rows of part `__rnn_part` alone (see
    /// `rnn_runtime::Packing::parts`): an after-the-loop gradient is formed
    /// for each part apart.
    pub(super) fn whole_expr(&self, id: ValueId, parts: bool) -> TokenStream {
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
            Op::Reduce(op, inner) => {
                let inner_place = self.place(*inner);
                let op = format_ident!("{}", op.name());
                quote! {{
                    let mut __rnn_out = Array2::<f32>::zeros((#inner_place.nrows(), 1));
                    __rnn_rt::reduce(__rnn_out.view_mut(), #inner_place.view(), __rnn_rt::Reduction::#op);
                    __rnn_out
                }}
            }
            Op::SumBatch(inner) if parts => {
                let inner_place = self.place(*inner);
                quote! {{
                    let mut __rnn_out = Array2::<f32>::zeros((1, #cols));
                    let __rnn_rows_a = __rnn_packing.part_rows(__rnn_ws, #inner_place.view(), __rnn_part);
                    __rnn_rt::sum_rows(__rnn_out.view_mut(), __rnn_rows_a.view());
                    __rnn_rows_a.give(__rnn_ws);
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
                match parts {
                    true => quote! {{
                        let mut __rnn_out = Array2::<f32>::zeros((#rows, #cols));
                        let __rnn_rows_a = __rnn_packing.part_rows(__rnn_ws, #g.view(), __rnn_part);
                        let __rnn_rows_b = __rnn_packing.part_rows(__rnn_ws, #v.view(), __rnn_part);
                        __rnn_rt::outer_acc(__rnn_out.view_mut(), __rnn_rows_a.view(), __rnn_rows_b.view());
                        __rnn_rows_a.give(__rnn_ws);
                        __rnn_rows_b.give(__rnn_ws);
                        __rnn_out
                    }},
                    false => quote! {{
                        let mut __rnn_out = Array2::<f32>::zeros((#rows, #cols));
                        __rnn_rt::outer_acc(__rnn_out.view_mut(), #g.view(), #v.view());
                        __rnn_out
                    }},
                }
            }
            Op::State(_) | Op::Seed(_) => unreachable!("a step value"),
        }
    }

    /// The step statements of the nodes in `range`, in order, fused runs
    /// as one pass each.
    pub(super) fn statements(&self, range: std::ops::Range<usize>) -> Vec<TokenStream> {
        let mut statements = Vec::new();
        for id in self.ids(Kind::Step, range) {
            if !self.has_statement(id) {
                continue;
            }
            match self.plan.fused.iter().find(|run| run.contains(&id)) {
                Some(run) if run[0] == id => statements.push(self.fused_statement(run)),
                Some(_) => {}
                None => statements.push(self.step_statement(id, false)),
            }
        }
        statements
    }

    /// The ids of the nodes of a kind, in order, up to `end`.
    pub(super) fn ids(&self, kind: Kind, range: std::ops::Range<usize>) -> Vec<ValueId> {
        range
            .filter(|idx| self.plan.kinds[*idx] == kind)
            .map(|idx| ValueId(idx as u32))
            .collect()
    }

    /// Whether an invariant value depends on the parameters and numbers
    /// alone: computed once, when the model is built ([`Self::consts`]).
    fn is_const(&self, id: ValueId) -> bool {
        self.kind(id) == Kind::Invariant && self.plan.consts[id.index()] && !self.is_inline(id)
    }

    /// `let` statements of the invariant values among `range` that a call
    /// computes (those read from a context).
    pub(super) fn invariants(&self, range: std::ops::Range<usize>) -> Vec<TokenStream> {
        self.ids(Kind::Invariant, range)
            .into_iter()
            .filter(|id| !self.is_inline(*id) && !self.is_const(*id))
            .map(|id| self.invariant_statement(id))
            .collect()
    }

    fn invariant_statement(&self, id: ValueId) -> TokenStream {
        let (ident, expr) = (value_ident(id), self.whole_expr(id, false));
        quote!(let #ident: Array2<f32> = #expr;)
    }

    /// The values among `range` that depend on the parameters alone:
    /// invariants, and the matrices that products over rows read, packed
    /// for the matrix product kernel. The model computes them when it is
    /// built (the statements, then the values and packed matrices, in
    /// order), each taken from the set `__rnn_old` instead where none of
    /// the parameters it reads is marked in `__rnn_changed`
    /// (`rnn_runtime::TrainConsts`); each call binds them by reference
    /// ([`Self::const_bindings`]).
    pub(super) fn consts(
        &self,
        range: std::ops::Range<usize>,
    ) -> (Vec<TokenStream>, Vec<Ident>, Vec<Ident>) {
        let values: Vec<ValueId> = range
            .clone()
            .map(|idx| ValueId(idx as u32))
            .filter(|id| self.is_const(*id))
            .collect();
        let reads = |id: ValueId| {
            let reads = self.plan.param_reads[id.index()]
                .iter()
                .map(|p| usize_lit(*p));
            quote!(&[#(#reads),*])
        };
        let mut statements: Vec<TokenStream> = values
            .iter()
            .enumerate()
            .map(|(k, id)| {
                let (ident, expr, reads, k) =
                    (value_ident(*id), self.whole_expr(*id, false), reads(*id), usize_lit(k));
                quote!(let #ident = __rnn_rt::TrainConsts::value(__rnn_old, #k, #reads, __rnn_changed, || #expr);)
            })
            .collect();
        let packed = self.packed_matrices(range);
        statements.extend(packed.iter().enumerate().map(|(k, matrix)| {
            let (packed, place, reads, k) = (
                packed_ident(*matrix),
                self.place(*matrix),
                reads(*matrix),
                usize_lit(k),
            );
            quote!(let #packed = __rnn_rt::TrainConsts::packed(__rnn_old, #k, #reads, __rnn_changed, || __rnn_rt::PackedMatrix::new(#place.view()));)
        }));
        let values = values.into_iter().map(value_ident).collect();
        let packed = packed.into_iter().map(packed_ident).collect();
        (statements, values, packed)
    }

    /// A call's `let` statements binding [`Self::consts`] from
    /// `__rnn_consts`, the model's.
    pub(super) fn const_bindings(&self, range: std::ops::Range<usize>) -> Vec<TokenStream> {
        let (_, values, packed) = self.consts(range);
        let values = values.iter().enumerate().map(|(k, ident)| {
            let k = usize_lit(k);
            quote!(let #ident: &Array2<f32> = &__rnn_consts.values[#k];)
        });
        let packed = packed.iter().enumerate().map(|(k, ident)| {
            let k = usize_lit(k);
            quote!(let #ident: &__rnn_rt::PackedMatrix = &__rnn_consts.packed[#k];)
        });
        values.chain(packed).collect()
    }

    /// The matrices that products over rows read (of hoisted, step or
    /// row values among `range`).
    fn packed_matrices(&self, range: std::ops::Range<usize>) -> Vec<ValueId> {
        let mut matrices: Vec<ValueId> = Vec::new();
        for idx in range {
            let id = ValueId(idx as u32);
            if let (Op::MatVec(matrix, _), Kind::Step | Kind::Hoisted | Kind::Rows) =
                (&self.node(id).op, self.kind(id))
            {
                if !matrices.contains(matrix) {
                    matrices.push(*matrix);
                }
            }
        }
        matrices
    }

    /// Values written where they are read: scalar numbers, and inputs
    /// (read from the function's arguments).
    pub(super) fn is_inline(&self, id: ValueId) -> bool {
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
    pub(super) fn step_buffers(
        &self,
        range: std::ops::Range<usize>,
    ) -> (Vec<TokenStream>, Vec<Ident>) {
        let mut declarations = Vec::new();
        let mut given = Vec::new();
        let rows_after = self.ids(Kind::Rows, range.clone());
        for id in self.ids(Kind::Step, range).into_iter().chain(rows_after) {
            if !self.has_buffer(id) {
                continue;
            }
            let ident = value_ident(id);
            let width = usize_lit(self.width(id));
            let rows = if self.by_step_offset(id) || self.kind(id) == Kind::Rows {
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

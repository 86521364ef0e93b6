//! Products and fused elementwise passes.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::idents::{
    binding_ident, buffer_ident, f32_tokens, input_ident, packed_field, scratch_ident, state_ident,
    usize_lit, weight_field,
};
use super::{Cx, Share};
use crate::ir::{self, Op, Shape, ValueId};
use crate::lower::{self, LayerPlan, Place, Work};

/// How a value's buffer is indexed by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rows {
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
    pub(super) fn of(layer: &ir::Layer, plan: &LayerPlan, id: ValueId) -> Rows {
        match layer.step.node(id).op {
            _ if !plan.packed_rows[id.index()] => Rows::Sequence,
            Op::Input(_) => Rows::Input,
            _ => Rows::Hoisted,
        }
    }

    /// The current step's (or chunk's) rows.
    pub(super) fn range(self) -> TokenStream {
        match self {
            Rows::Sequence => quote!(..__rnn_n),
            Rows::Input => quote!(__rnn_off..__rnn_off + __rnn_n),
            Rows::Hoisted => quote!(__rnn_hoff..__rnn_hoff + __rnn_n),
        }
    }

    /// Inside a fused pass, the current row (in blocks of lanes) or the
    /// first row of the current tile (tile operations).
    pub(super) fn tile_row(self) -> TokenStream {
        match self {
            Rows::Sequence => quote!(__rnn_r0),
            Rows::Input => quote!(__rnn_p0),
            Rows::Hoisted => quote!(__rnn_h0),
        }
    }
}

impl Cx<'_> {
    /// The runtime call computing an elementwise node (`unary`, `binary`
    /// or `clip`, with a `const_` prefix at construction) and its
    /// operation argument.
    pub(super) fn elementwise(
        &self,
        op: &Op,
        at_construction: bool,
    ) -> (Ident, Option<TokenStream>) {
        let prefix = if at_construction { "const_" } else { "" };
        let (kind, operation) = match op {
            Op::Unary(op, _) => {
                let variant = format_ident!("{}", op.name());
                ("unary", Some(quote!(__rnn_rt::Unary::#variant)))
            }
            Op::Binary(op, _, _) => {
                let variant = format_ident!("{}", op.name());
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
    pub(super) fn view(
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
    pub(super) fn emit_product(
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
        let kernel = match plan.is_reduced(matrix) {
            false => "gemm_packed",
            true => "gemm_reduced",
        };
        match init {
            Some(init) if plan.alias[out.index()] != Some(init) => {
                let function = format_ident!("{kernel}_onto_row{suffix}");
                let field = weight_field(layer, init);
                quote! {
                    __rnn_rt::#function(#vector, &__rnn_w.#packed, #out_view, __rnn_rt::vector(&__rnn_w.#field) #columns);
                }
            }
            _ => {
                let function = format_ident!("{kernel}{suffix}");
                let accumulate = init.is_some();
                quote!(__rnn_rt::#function(#vector, &__rnn_w.#packed, #out_view, #accumulate #columns);)
            }
        }
    }

    /// The statements of a phase's work, in order; the types of its fused
    /// passes are added to `items`. `step`: the work is the step's, whose
    /// pass may store the step's output rows. `share`: the columns it
    /// computes.
    pub(super) fn emit_work(
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
                    let stores_output = step && plan.stores_output(layer, ids);
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
    pub(super) fn emit_fused(
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
        if let Some(width) = plan.lanes_of(ids) {
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
        let tile_rows = plan.tile_rows;
        let statements = ids.iter().map(|id| {
            let node = layer.step.node(*id);
            let Shape::Vector(width) = node.shape else {
                unreachable!("per-sequence values are vectors")
            };
            let width_lit = usize_lit(width);
            let out = if plan.scratch[id.index()] {
                let ident = scratch_ident(*id);
                quote!(&mut #ident)
            } else {
                let binding = binding_ident(layer, plan, *id);
                let row = Rows::of(layer, plan, *id).tile_row();
                quote!(&mut #binding[#row * #width_lit..])
            };
            // A reduction's tile is as wide as its operand's rows, its
            // output one value a row.
            if let Op::Reduce(op, inner) = node.op {
                let Shape::Vector(len) = layer.step.node(inner).shape else {
                    unreachable!("IR verification: reductions take vectors")
                };
                let inner = self.tile_operand(layer, plan, inner, len);
                let (len, op) = (usize_lit(len), format_ident!("{}", op.name()));
                let tile =
                    quote!(__rnn_rt::Tile { rows: __rnn_m, width: #len, out_stride: #width_lit });
                return quote!(__rnn_rt::reduce_tile(#tile, #out, #inner, __rnn_rt::Reduction::#op););
            }
            let operands = node.op.operands();
            let operands = operands
                .iter()
                .map(|operand| self.tile_operand(layer, plan, *operand, width));
            let (function, operation) = self.elementwise(&node.op, false);
            let function = format_ident!("{}_tile", function);
            let operation = operation.into_iter();
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
    pub(super) fn emit_pass_lanes(
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
            let (root, start, end) = lower::operand_columns(layer, plan, id);
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
    pub(super) fn tile_operand(
        &self,
        layer: &ir::Layer,
        plan: &LayerPlan,
        id: ValueId,
        out_width: usize,
    ) -> TokenStream {
        let (id, start, end) = lower::operand_columns(layer, plan, id);
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
}

//! The time loop of one layer, in each variant.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::idents::{
    input_ident, scratch_ident, state_ident, usize_lit, value_ident, variant_suffix, weight_field,
};
use super::{Cx, Share};
use crate::ir::{self, ValueId};
use crate::lower::{self, Buffer, LayerPlan, Place, Variant};

impl Cx<'_> {
    pub(super) fn emit_layer_fn(&self, layer_idx: usize, variant: Variant) -> TokenStream {
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
        // Buffers given back to the workspace at the end.
        let mut returned: Vec<Ident> = Vec::new();
        let tile = usize_lit(plan.tile_rows);
        let buffers: Vec<TokenStream> = plan
            .buffers
            .iter()
            .map(|&(id, buffer)| match buffer {
                Buffer::Tile { width } => {
                    let (ident, width) = (scratch_ident(id), usize_lit(width));
                    quote!(let mut #ident = vec![0f32; #tile * #width];)
                }
                Buffer::Rows { hoisted, width } => {
                    let (ident, width) = (value_ident(id), usize_lit(width));
                    let rows = if hoisted {
                        quote!(__rnn_hrows)
                    } else {
                        quote!(__rnn_batch)
                    };
                    returned.push(ident.clone());
                    quote!(let mut #ident = __rnn_ws.take(#rows, #width);)
                }
            })
            .collect();
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
        let output_copy = if plan.pass_stores_output {
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
        let (stage_buffers, stage_copies, updates) = self.emit_state_updates(layer, plan);
        returned.extend(
            plan.staged_states
                .iter()
                .map(|k| format_ident!("__rnn_next{}", k)),
        );
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
                if __rnn_t.is_multiple_of(__rnn_chunk) {
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
        // With per-step parameters, step t reads the weights of its copy.
        let (weights_param, step_weights) = match layer.steps() {
            Some(_) => (
                quote!(__rnn_wk: &[#ty]),
                quote!(let __rnn_w = &__rnn_wk[__rnn_t];),
            ),
            None => (quote!(__rnn_w: &#ty), TokenStream::new()),
        };
        let first_weights = match layer.steps() {
            Some(_) => quote!(let __rnn_w = &__rnn_wk[0];),
            None => TokenStream::new(),
        };
        let step_body = quote! {
            #step_weights
            let __rnn_n = __rnn_packing.batch_size(__rnn_t);
            let __rnn_off = __rnn_packing.offset(__rnn_t);
            #hoisted_chunk
            #hoisted_offset
            #(#step_nodes)*
            #output_copy
            #(#stage_copies)*
            #(#updates)*
        };
        let time_loop = emit_time_loop(plan, variant, &step_body);
        let state_returns: Vec<Ident> = (0..layer.states.len()).map(state_ident).collect();
        // A stateless layer (a head) returns nothing: no `-> ()` for
        // clippy's `unused_unit` to flag in the user's crate.
        let (returns, result) = if state_returns.is_empty() {
            (TokenStream::new(), TokenStream::new())
        } else {
            (
                quote!(-> (#(#state_types,)*)),
                quote!((#(#state_returns,)*)),
            )
        };
        let (split_params, split_columns) = match (
            variant,
            plan.split.as_ref().map(|split| split.width),
        ) {
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
            variant_suffix(variant)
        );
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
        // Steps per chunk of input projections, and the rows of the largest
        // chunk (the first: sequences are sorted by length).
        let chunk_bytes = usize_lit(lower::HOISTED_CHUNK_BYTES);
        let row_bytes = usize_lit(4 * plan.hoisted_row_width.max(1));
        let chunking = quote! {
            let __rnn_chunk = __rnn_packing.chunk_steps(#row_bytes, #chunk_bytes);
            let __rnn_hrows = __rnn_packing.chunk_rows(__rnn_chunk);
            let mut __rnn_hbase = 0usize;
        };
        quote! {
            #[doc = #doc]
            // The step loops index several per-step arrays by the same
            // counter, which an iterator over one of them would not read
            // better.
            #[allow(clippy::too_many_arguments, clippy::type_complexity, clippy::identity_op, clippy::useless_vec, clippy::needless_range_loop, unused_mut, unused_variables)]
            fn #name(
                #weights_param,
                __rnn_ws: &#rt::__private::Workspace,
                __rnn_packing: &#rt::__private::Packing,
                #(#input_params,)*
                #(#init_params,)*
                mut __rnn_out: #rt::ndarray::ArrayViewMut2<'_, f32>,
                __rnn_place: #rt::__private::Placement,
                #split_params
            ) #returns {
                #prelude
                #first_weights
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
                #result
            }
        }
    }

    /// The statements that give the states their new values at the end of
    /// a step: the buffers of staged states ([`LayerPlan::staged_states`])
    /// and their copies, then one update per state (none for a state its
    /// pass wrote in place).
    fn emit_state_updates(
        &self,
        layer: &ir::Layer,
        plan: &LayerPlan,
    ) -> (Vec<TokenStream>, Vec<TokenStream>, Vec<TokenStream>) {
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
        // c = h;`): such values are copied aside before any state is written.
        let staged = &plan.staged_states;
        let stage_buffers = staged.iter().map(|k| {
            let ident = format_ident!("__rnn_next{}", k);
            let len = usize_lit(layer.states[*k].size);
            quote!(let mut #ident = __rnn_ws.take(__rnn_batch, #len);)
        });
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
        (stage_buffers.collect(), stage_copies.collect(), updates)
    }

    /// The statement copying value `id` (of `len` columns), read whole at
    /// the current step, into the rows `target`: a computed value's rows,
    /// or a constant row repeated.
    pub(super) fn copy_into(
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
}

/// The time loop of a variant around one step's statements: a loop, a loop
/// of k steps written out then the rest, or every step written out (or
/// called) up to the batch's longest length. A split loop trades the
/// states after each step.
fn emit_time_loop(plan: &LayerPlan, variant: Variant, step_body: &TokenStream) -> TokenStream {
    match variant {
        Variant::Dynamic => quote! {
            for __rnn_t in 0..__rnn_packing.max_len() {
                #step_body
            }
        },
        Variant::Split => {
            // After each step the two sides trade their halves of the
            // new states: both start the next step with whole states.
            let states = plan
                .split
                .as_ref()
                .map_or(Vec::new(), |split| split.traded_states.clone())
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
        Variant::Static(steps) if variant.writes_steps_out() => {
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
            // Past `lower::STATIC_INLINE_STEPS` the step is written once,
            // as a closure over the buffers, and called once per step:
            // a copy of the step per time step costs rustc time that
            // grows faster than the steps, for no speed.
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
    }
}

//! A layer's two training functions, `__rnn_layer<k>_train` and
//! `__rnn_layer<k>_backward`, and the order of their step calls.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::layer::{Layer, Phase};
use crate::emit::idents::{usize_lit, value_ident};
use crate::emit::Cx;
use crate::ir::{Op, Shape, ValueId};
use crate::lower::{BackwardPlan, Kind, Variant};

impl Cx<'_> {
    pub(super) fn training_plans(&self) -> &[BackwardPlan] {
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
                    // Step `t + j` of an iteration (`end - 1 - j` in reverse),
                    // written `t` for `j` = 0.
                    let forward_steps: Vec<_> = (0..k)
                        .map(|j| match j {
                            0 => quote!(__rnn_t),
                            _ => {
                                let j = usize_lit(j);
                                quote!(__rnn_t + #j)
                            }
                        })
                        .collect();
                    let reverse_steps: Vec<_> = (0..k)
                        .map(|j| match j {
                            0 => quote!(__rnn_end - 1),
                            _ => {
                                let j = usize_lit(j);
                                quote!(__rnn_end - 1 - #j)
                            }
                        })
                        .collect();
                    let k = usize_lit(k);
                    if reverse {
                        quote! {
                            let mut __rnn_end = __rnn_max_len;
                            while __rnn_end >= #k {
                                #( __rnn_step(#reverse_steps); )*
                                __rnn_end -= #k;
                            }
                            for __rnn_t in (0..__rnn_end).rev() { __rnn_step(__rnn_t); }
                        }
                    } else {
                        quote! {
                            let full = __rnn_max_len / #k * #k;
                            let mut __rnn_t = 0;
                            while __rnn_t < full {
                                #( __rnn_step(#forward_steps); )*
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

    /// How a training function binds the model's constants (`bindings`,
    /// from `__rnn_consts`): before the loop, then (for a layer with
    /// per-step parameters) again at the start of each step, from step
    /// `t`'s copy of them; and its parameter that gives them: one set, or
    /// one per step (`__rnn_all`).
    fn consts_binding(
        &self,
        bindings: Vec<TokenStream>,
        layer: &crate::ir::Layer,
    ) -> (TokenStream, TokenStream, TokenStream) {
        let rt = self.rt;
        let set = quote!(#rt::__private::TrainConsts);
        match layer.steps() {
            None => (
                quote!(#(#bindings)*),
                TokenStream::new(),
                quote!(__rnn_consts: &#set),
            ),
            Some(_) => (
                quote! {
                    let __rnn_consts = &__rnn_all[0];
                    #(#bindings)*
                },
                quote! {
                    let __rnn_consts = &__rnn_all[__rnn_t];
                    #(#bindings)*
                },
                quote!(__rnn_all: &[#set]),
            ),
        }
    }

    /// `__rnn_layer<k>_consts`: what one direction of a layer's training
    /// functions read of its parameters alone (`__rnn_consts`), computed
    /// when the model is built. The training forward reads the first of
    /// them (its nodes come first), the backward all.
    pub(super) fn emit_layer_consts(&self, layer_idx: usize) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let layer = &self.network.layers[layer_idx];
        let plan = &self.training_plans()[layer_idx];
        let cx = Layer {
            layer,
            plan,
            phase: Phase::Backward,
        };
        let (statements, values, packed) = cx.consts(0..plan.backward.nodes.len());
        let name = format_ident!("__rnn_layer{}_consts", layer_idx);
        quote! {
            #[allow(unused_variables)]
            fn #name(
                __rnn_p: &[#rt::ndarray::ArrayViewD<'_, f32>],
                __rnn_old: ::std::option::Option<&#rt::__private::TrainConsts>,
                __rnn_changed: &[bool],
            ) -> #rt::__private::TrainConsts {
                #prelude
                #(#statements)*
                #rt::__private::TrainConsts { values: vec![#(#values),*], packed: vec![#(#packed),*] }
            }
        }
    }

    /// `__rnn_layer<k>_train`: one direction of a layer over packed rows,
    /// keeping its tape.
    pub(super) fn emit_layer_train(&self, layer_idx: usize) -> TokenStream {
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
        let (consts, step_consts, consts_param) =
            self.consts_binding(cx.const_bindings(0..forward), layer);
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
        let statements = cx.statements(0..forward);
        // States whose tape copy a fused run makes are not copied first.
        let copied_by_runs: Vec<usize> = plan
            .fused
            .iter()
            .flat_map(|run| plan.tape_copies(layer, run))
            .collect();
        let tape_copies = (0..layer.states.len())
            .filter(|k| !copied_by_runs.contains(k))
            .map(|k| {
                let (tape, state) = (&tapes[k], &states[k]);
                quote!(#tape.slice_mut(s![__rnn_off..__rnn_off + __rnn_n, ..]).assign(&#state.slice(s![..__rnn_n, ..]));)
            });
        let step = &layer.step;
        // New states are staged first when an update reads a state (one
        // carried unchanged, or a slice of one), which an earlier update
        // would overwrite; otherwise each is written where it belongs.
        let reads_state = step
            .updates
            .iter()
            .any(|update| matches!(cx.node(cx.storage(*update).0).op, Op::State(_)));
        let staging: Vec<Ident> = if reads_state {
            (0..layer.states.len())
                .map(|k| format_ident!("__rnn_next{}", k))
                .collect()
        } else {
            Vec::new()
        };
        let staging_sizes = &state_sizes[..staging.len()];
        let stage = step
            .updates
            .iter()
            .enumerate()
            .filter(|(k, update)| cx.in_place(**update) != Some(*k))
            .map(|(k, update)| {
                let value = cx.view(*update, false);
                let target = staging.get(k).unwrap_or(&states[k]);
                quote!(#target.slice_mut(s![..__rnn_n, ..]).assign(&#value);)
            });
        let updates = staging.iter().zip(&states).map(|(staged, state)| {
            quote!(#state.slice_mut(s![..__rnn_n, ..]).assign(&#staged.slice(s![..__rnn_n, ..]));)
        });
        let output = if plan.run_stores_output(step.output) {
            TokenStream::new()
        } else {
            let output = cx.view(step.output, false);
            quote!(__rnn_out.slice_mut(s![__rnn_off..__rnn_off + __rnn_n, ..]).assign(&#output);)
        };
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
            // The packed constants are bound here by reference (to what
            // `__rnn_prepare` built) and owned where the inference layer
            // packs them; the shared statement emitter writes `&` for both.
            #[allow(clippy::too_many_arguments, clippy::type_complexity, unused_mut, unused_variables, clippy::redundant_clone, clippy::needless_borrow)]
            fn #name(
                #consts_param,
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
                #consts
                #(#invariants)*
                #(#hoisted)*
                #(#buffers)*
                let mut __rnn_out = Array2::<f32>::zeros((__rnn_rows, #width));
                #(let mut #staging = __rnn_ws.take(__rnn_batch, #staging_sizes);)*
                {
                    let mut __rnn_step = |__rnn_t: usize| {
                        let __rnn_n = __rnn_packing.batch_size(__rnn_t);
                        let __rnn_off = __rnn_packing.offset(__rnn_t);
                        #step_consts
                        #(#tape_copies)*
                        #(#statements)*
                        #output
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
    pub(super) fn emit_layer_backward(&self, layer_idx: usize) -> TokenStream {
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
        let (consts, step_consts, consts_param) =
            self.consts_binding(cx.const_bindings(0..total), layer);
        let (buffers, given) = cx.step_buffers(0..total);
        let into_copy = |id: &ValueId| plan.into_copy[id.index()];
        // The gradient copy a sum accumulates into, for `into_copy` sums.
        let copy_of = |id: &ValueId| {
            let k = plan
                .backward
                .params
                .iter()
                .position(|result| *result == Some(*id))
                .expect("a parameter's gradient");
            let ident = format_ident!("__rnn_pg{}", k);
            let (rows, cols) = match cx.node(*id).shape {
                Shape::Matrix(rows, cols) => (rows, cols),
                Shape::Vector(len) => (1, len),
                Shape::Scalar => (1, 1),
            };
            let (rows, cols) = (usize_lit(rows), usize_lit(cols));
            quote!(#ident.index_axis_mut(__rnn_nd::Axis(0), __rnn_t).into_shape_with_order((#rows, #cols)).expect("a parameter's gradient has its shape"))
        };
        let sums: Vec<ValueId> = cx
            .ids(Kind::Sum, forward..total)
            .into_iter()
            .filter(|id| !into_copy(id))
            .collect();
        let per_step_grad = |id: &ValueId| plan.per_step_grads[id.index()];
        // A per-step parameter's sums start from zero at each step.
        let step_resets = sums.iter().filter(|id| per_step_grad(id)).map(|id| {
            let ident = value_ident(*id);
            quote!(#ident.fill(0.0);)
        });
        // A sum over the batch has a buffer per part of the batch (one,
        // or the two training halves run in one pass: `Packing::parts`),
        // bound by its value's name inside the loop over the parts.
        let sum_parts = |id: &ValueId| format_ident!("__rnn_sp{}", id.index());
        let sum_buffers = sums.iter().map(|id| {
            let ident = sum_parts(id);
            let (rows, cols) = match cx.node(*id).shape {
                Shape::Matrix(rows, cols) => (rows, cols),
                Shape::Vector(len) => (1, len),
                Shape::Scalar => (1, 1),
            };
            let (rows, cols) = (usize_lit(rows), usize_lit(cols));
            quote!(let mut #ident = __rnn_packing.sum_buffers(__rnn_ws, #rows, #cols);)
        });
        let sum_idents: Vec<Ident> = sums.iter().map(|id| value_ident(*id)).collect();
        let sum_part_idents: Vec<Ident> = sums.iter().map(sum_parts).collect();
        let statements = cx.statements(forward..total);
        // A copy's outer product is one product over the step's rows,
        // split where the parts meet (`outer_into_step_split`).
        let copy_outer = |id: &ValueId| into_copy(id) && matches!(cx.node(*id).op, Op::Outer(..));
        let copy_outers = cx
            .ids(Kind::Sum, forward..total)
            .into_iter()
            .filter(|id| !plan.deferred[id.index()] && copy_outer(id))
            .map(|id| {
                let target = copy_of(&id);
                let Op::Outer(g, v) = cx.node(id).op else {
                    unreachable!("an outer product")
                };
                let (g, v) = (cx.view(g, false), cx.view(v, false));
                quote!(__rnn_rt::outer_into_step_split(__rnn_ws, #target, #g, #v, __rnn_packing.part(0, __rnn_n).1);)
            });
        let step_sums = cx
            .ids(Kind::Sum, forward..total)
            .into_iter()
            .filter(|id| !plan.deferred[id.index()] && !copy_outer(id))
            .map(|id| {
                let target = match into_copy(&id) {
                    true => copy_of(&id),
                    false => {
                        let ident = value_ident(id);
                        quote!(#ident.view_mut())
                    }
                };
                // Parts of the batch sum into a copy in turn, each onto
                // the sum of those before (`_part`), or into their own
                // buffers.
                match (&cx.node(id).op, into_copy(&id)) {
                    (Op::SumBatch(inner), true) => {
                        let inner = cx.part_view(*inner);
                        quote!(__rnn_rt::sum_rows_into_part(__rnn_ws, #target, #inner, __rnn_part);)
                    }
                    (Op::SumBatch(inner), false) => {
                        let inner = cx.part_view(*inner);
                        quote!(__rnn_rt::sum_rows(#target, #inner);)
                    }
                    (Op::Outer(g, v), _) => {
                        let (g, v) = (cx.part_view(*g), cx.part_view(*v));
                        quote!(__rnn_rt::outer_acc_step(__rnn_ws, #target, #g, #v);)
                    }
                    _ => unreachable!("sums are sum_batch or outer"),
                }
            });
        let rows_after = cx
            .ids(Kind::Rows, forward..total)
            .into_iter()
            .map(|id| cx.step_statement(id, true));
        let deferred = sums
            .iter()
            .filter(|id| plan.deferred[id.index()])
            .filter_map(|id| match cx.node(*id).op {
                Op::SumBatch(inner) => {
                    let (ident, inner) = (value_ident(*id), cx.all_rows(inner));
                    Some(quote! {{
                        let __rnn_rows_a = __rnn_packing.part_rows(__rnn_ws, #inner, __rnn_part);
                        __rnn_rt::sum_rows(#ident.view_mut(), __rnn_rows_a.view());
                        __rnn_rows_a.give(__rnn_ws);
                    }})
                }
                Op::Outer(..) => None,
                _ => unreachable!("sums are sum_batch or outer"),
            });
        let deferred_outers = plan.deferred_outers().into_iter().map(|(g, outers)| {
            let g = cx.all_rows(g);
            let (mut rows, mut pairs) = (Vec::new(), Vec::new());
            for (k, id) in outers.iter().enumerate() {
                let Op::Outer(_, v) = cx.node(*id).op else {
                    unreachable!("a group of outer products")
                };
                let (ident, v) = (value_ident(*id), cx.all_rows(v));
                let row_ident = format_ident!("__rnn_rows_v{}", k);
                rows.push(quote!(let #row_ident = __rnn_packing.part_rows(__rnn_ws, #v, __rnn_part);));
                pairs.push((ident, row_ident));
            }
            let (idents, row_idents): (Vec<Ident>, Vec<Ident>) = pairs.into_iter().unzip();
            quote! {{
                let __rnn_rows_a = __rnn_packing.part_rows(__rnn_ws, #g, __rnn_part);
                #(#rows)*
                __rnn_rt::outer_acc_rows(__rnn_ws, __rnn_rows_a.view(), &mut [#((#idents.view_mut(), #row_idents.view())),*]);
                __rnn_rows_a.give(__rnn_ws);
                #(#row_idents.give(__rnn_ws);)*
            }}
        });
        let after = |id: ValueId| {
            let (ident, expr) = (value_ident(id), cx.whole_expr(id, true));
            quote!(let #ident: Array2<f32> = #expr;)
        };
        let (step_afters, afters): (Vec<ValueId>, Vec<ValueId>) = cx
            .ids(Kind::After, forward..total)
            .into_iter()
            .partition(per_step_grad);
        let step_afters = step_afters.into_iter().map(after);
        let afters = afters.into_iter().map(after);
        let d_states: Vec<Ident> = (0..layer.states.len())
            .map(|k| format_ident!("__rnn_ds{}", k))
            .collect();
        // The gradients of the states before the step are written where
        // they belong: the step's values read a state's gradient from the
        // step after (`__rnn_ds<k>`) only through their own copies or
        // passes, all done by now.
        let state_results = plan.backward.states.iter().enumerate().map(|(k, result)| {
            let d_state = &d_states[k];
            match result {
                Some(id) if cx.in_place(*id) == Some(k) => TokenStream::new(),
                Some(id) => {
                    let value = cx.view(*id, false);
                    quote!(#d_state.slice_mut(s![..__rnn_n, ..]).assign(&#value);)
                }
                None => quote!(#d_state.slice_mut(s![..__rnn_n, ..]).fill(0.0);),
            }
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
        let after_input_results =
            plan.backward
                .inputs
                .iter()
                .enumerate()
                .filter_map(|(k, result)| {
                    let id = (*result)?;
                    (cx.kind(id) == Kind::Rows).then(|| {
                        let (ident, value) = (&d_inputs[k], cx.all_rows(id));
                        quote!(#ident.assign(&#value);)
                    })
                });
        let input_results = plan.backward.inputs.iter().enumerate().filter_map(|(k, result)| {
            let id = (*result)?;
            if cx.kind(id) == Kind::Rows {
                return None;
            }
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
        // A gradient formed at each step is stored as that step's copy's
        // (a per-step parameter) or added up (a tied one) in `__rnn_pg<k>`.
        let param_grad = |k: usize| format_ident!("__rnn_pg{}", k);
        let formed_per_step =
            |k: usize| plan.backward.params[k].is_some_and(|id| per_step_grad(&id));
        // A tied parameter's gradient formed at each step is added up per
        // part of the batch (`__rnn_pgp<k>`), the parts added at the end;
        // a per-step copy's is one buffer the parts add into in turn.
        let grad_parts = |k: usize| format_ident!("__rnn_pgp{}", k);
        let tied_per_step: Vec<usize> = (0..layer.params.len())
            .filter(|k| formed_per_step(*k) && layer.params[*k].steps.is_none())
            .collect();
        let param_buffers = (0..layer.params.len()).filter(|k| formed_per_step(*k)).map(|k| {
            let shape = layer.params[k].tensor_shape().into_iter().map(usize_lit);
            match layer.params[k].steps {
                // Written whole at every step that runs (`step_copy_params`).
                Some(_) => {
                    let ident = param_grad(k);
                    quote!(let mut #ident = __rnn_ws.step_copies(&[#(#shape),*], __rnn_max_len);)
                }
                None => {
                    let ident = grad_parts(k);
                    quote!(let mut #ident = __rnn_packing.grad_parts(&[#(#shape),*]);)
                }
            }
        });
        let tied_bindings: Vec<TokenStream> = tied_per_step
            .iter()
            .map(|k| {
                let (ident, parts) = (param_grad(*k), grad_parts(*k));
                quote!(let mut #ident = #parts[__rnn_part].view_mut();)
            })
            .collect();
        let step_param_results = (0..layer.params.len()).filter(|k| formed_per_step(*k)).filter(|k| !plan.backward.params[*k].is_some_and(|id| into_copy(&id))).map(|k| {
            let (ident, id) = (param_grad(k), plan.backward.params[k].expect("formed per step"));
            let place = cx.place(id);
            let shape: Vec<_> = layer.params[k].shape.iter().map(|dim| usize_lit(*dim)).collect();
            let value = quote!(#place.view().into_shape_with_order(__rnn_nd::IxDyn(&[#(#shape),*])).expect("a parameter's gradient has its shape"));
            match layer.params[k].steps {
                Some(_) => quote! {
                    match __rnn_part {
                        0 => #ident.index_axis_mut(__rnn_nd::Axis(0), __rnn_t).assign(&#value),
                        _ => {
                            let mut __rnn_slot = #ident.index_axis_mut(__rnn_nd::Axis(0), __rnn_t);
                            __rnn_slot += &#value;
                        }
                    }
                },
                None => quote!(#ident += &#value;),
            }
        });
        // A gradient formed after the loop is formed for each part of the
        // batch, and the parts added.
        let part_grads = plan.backward.params.iter().enumerate().filter_map(|(k, result)| {
            let id = result.filter(|_| !formed_per_step(k))?;
            let shape: Vec<_> = layer.params[k].tensor_shape().into_iter().map(usize_lit).collect();
            let place = cx.place(id);
            Some(quote!(#place.view().into_shape_with_order(__rnn_nd::IxDyn(&[#(#shape),*])).expect("a parameter's gradient has its shape").to_owned()))
        });
        let param_results = plan.backward.params.iter().enumerate().map(|(k, result)| {
            let shape: Vec<_> = layer.params[k]
                .tensor_shape()
                .into_iter()
                .map(usize_lit)
                .collect();
            match result {
                Some(_) if formed_per_step(k) && layer.params[k].steps.is_some() => {
                    let ident = param_grad(k);
                    quote!(#ident)
                }
                Some(_) if formed_per_step(k) => {
                    let ident = grad_parts(k);
                    quote!(__rnn_packing.sum_parts(#ident))
                }
                Some(_) => quote!(__rnn_after_grads
                    .next()
                    .expect("a gradient formed after the loop")),
                None => quote!(#rt::ndarray::ArrayD::<f32>::zeros(__rnn_nd::IxDyn(&[#(#shape),*]))),
            }
        });
        let calls = self.step_calls(true);
        let doc = format!("The backward of layer `{}` #{}, one direction, over its tape: each parameter's gradient, each cell input's, each initial state's.", layer.name, layer.stack_idx);
        quote! {
            #[doc = #doc]
            // As in the train layer function: constants are bound by reference.
            // The loops over the parts of the batch index several buffers by part.
            #[allow(clippy::too_many_arguments, clippy::type_complexity, unused_mut, unused_variables, clippy::redundant_clone, clippy::let_unit_value, clippy::needless_borrow, clippy::needless_range_loop)]
            fn #name(
                #consts_param,
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
                #consts
                #(#invariants)*
                #(#buffers)*
                #(#sum_buffers)*
                #(#param_buffers)*
                #(#input_buffers)*
                {
                    let mut __rnn_step = |__rnn_t: usize| {
                        let __rnn_n = __rnn_packing.batch_size(__rnn_t);
                        let __rnn_off = __rnn_packing.offset(__rnn_t);
                        #step_consts
                        #(#statements)*
                        #(#copy_outers)*
                        // Sums over the batch, over each part's rows apart.
                        for __rnn_part in 0..__rnn_packing.parts() {
                            let (__rnn_lo, __rnn_hi) = __rnn_packing.part(__rnn_part, __rnn_n);
                            #(let mut #sum_idents = #sum_part_idents[__rnn_part].view_mut();)*
                            #(#tied_bindings)*
                            #(#step_resets)*
                            #(#step_sums)*
                            #(#step_afters)*
                            #(#step_param_results)*
                        }
                        #(#input_results)*
                        #(#state_results)*
                    };
                    #calls
                }
                #(#rows_after)*
                #(#after_input_results)*
                let mut __rnn_after_grads: ::std::vec::Vec<#rt::ndarray::ArrayD<f32>> = ::std::vec::Vec::new();
                for __rnn_part in 0..__rnn_packing.parts() {
                    #(let mut #sum_idents = #sum_part_idents[__rnn_part].view_mut();)*
                    #(#deferred_outers)*
                    #(#deferred)*
                    #(#afters)*
                    __rnn_rt::add_part(&mut __rnn_after_grads, vec![#(#part_grads),*]);
                }
                let mut __rnn_after_grads = __rnn_after_grads.into_iter();
                let __rnn_result = (vec![#(#param_results),*], vec![#(#d_inputs),*], vec![#(#d_states),*]);
                #(__rnn_ws.give(#given);)*
                #(for __rnn_buffer in #sum_part_idents { __rnn_ws.give(__rnn_buffer); })*
                __rnn_result
            }
        }
    }
}

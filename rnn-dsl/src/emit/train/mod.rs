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
//! What the two functions read of the parameters alone (invariants such as
//! a transposed weight, and packed matrices) the model computes once, when
//! it is built (`__rnn_layer<k>_consts`, `__rnn_consts`).
//!
//! A batch large enough (each half 2²² multiply-adds or more) is computed
//! in two halves of about equal total length, on two threads when the
//! model may use them; whether it splits depends on the batch alone, never
//! on the thread count, so that the gradients do not either (a weight's is
//! the first half's sum plus the second's).
//!
//! `layer.rs` writes one node of a layer's training code; `steps.rs` a
//! layer's two functions; this file the network's methods and types.

mod layer;
mod steps;

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use super::constructors::layer_builder;
use super::forward::{Entry, Halves};
use super::idents::usize_lit;
use super::Cx;
use crate::check::InputSource;
use crate::ir;
use crate::weights;

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
        let Halves {
            macs_per_row,
            half_inputs,
            half_args,
            whole_args,
        } = self.halves();

        // Where each layer's parameters start in the flat list.
        let mut starts = Vec::new();
        let mut start = 0usize;
        for layer in &self.network.layers {
            starts.push(start);
            start += layer.params.len() * layer.directions;
        }

        // The parameters (in the flat list) whose gradients the backward
        // writes whole at every step, so that an array given back by
        // `recycle_grads` serves again (`BackwardPlan::step_copy_params`).
        let step_copies: Vec<Literal> = self
            .network
            .layers
            .iter()
            .zip(self.training_plans())
            .enumerate()
            .flat_map(|(idx, (layer, plan))| {
                let count = layer.params.len();
                let start = starts[idx];
                plan.step_copy_params(layer).into_iter().flat_map(move |k| {
                    (0..layer.directions).map(move |direction| start + direction * count + k)
                })
            })
            .map(usize_lit)
            .collect();

        let mut train_layers = Vec::new();
        let mut backward_layers = Vec::new();
        // The model's constants per layer and direction, for the training
        // function then the backward one (`__rnn_prepare`).
        let mut prepares = Vec::new();
        // What `update_params` rebuilds of each layer whose parameters
        // changed: the fallible weights first, then the constants.
        let mut rebuilds = Vec::new();
        let mut commits = Vec::new();
        let mut slot = 0usize;
        for (idx, layer) in self.network.layers.iter().enumerate() {
            let (rebuild, commit) = self.emit_rebuild(layer, idx, starts[idx], slot);
            rebuilds.push(rebuild);
            commits.push(commit);
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
                let reverse = layer.runs_backward(direction);
                let first = usize_lit(starts[idx] + direction * count);
                let end = usize_lit(starts[idx] + (direction + 1) * count);
                let row = usize_lit(layer.stack_idx * layer.directions + direction);
                // One set of constants serves both training functions: the
                // forward's are the first of the backward's, in order
                // (`Layer::consts` lists them by node, and the forward's
                // nodes come first).
                let consts_fn = format_ident!("__rnn_layer{}_consts", idx);
                // A layer with per-step parameters has a set per step (its
                // training functions take them all).
                let (train_slot, backward_slot) = match layer.steps() {
                    None => {
                        let a = usize_lit(slot);
                        slot += 1;
                        prepares.push(quote! {
                            __rnn_sets.push(Self::#consts_fn(&#rt::__private::step_params(&__rnn_p[#first..#end], &[], 0), None, &[]));
                        });
                        (quote!(#a), quote!(#a))
                    }
                    Some(steps) => {
                        let flags = layer.params.iter().map(|param| param.steps.is_some());
                        let (a, b) = (usize_lit(slot), usize_lit(slot + steps));
                        slot += steps;
                        // Steps after the first take what reads tied
                        // parameters alone from the first's set (a layer of
                        // one step has no loop over them).
                        let later = (steps > 1).then(|| {
                            let steps = usize_lit(steps);
                            quote! {
                                __rnn_sets.push(__rnn_first.clone());
                                for __rnn_t in 1..#steps {
                                    __rnn_sets.push(Self::#consts_fn(&#rt::__private::step_params(&__rnn_p[#first..#end], &__rnn_per_step, __rnn_t), Some(&__rnn_first), &__rnn_per_step));
                                }
                            }
                        });
                        let later = later.unwrap_or_else(|| quote!(__rnn_sets.push(__rnn_first);));
                        prepares.push(quote! {
                            let __rnn_per_step = [#(#flags),*];
                            let __rnn_first = Self::#consts_fn(&#rt::__private::step_params(&__rnn_p[#first..#end], &__rnn_per_step, 0), None, &[]);
                            #later
                        });
                        (quote!(#a..#b), quote!(#a..#b))
                    }
                };
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
                    let (#out, __rnn_fin, __rnn_tape) = Self::#train_fn(&self.__rnn_consts[#train_slot], &self.__rnn_workspace, __rnn_packing, __rnn_variant, &__rnn_ins, vec![#(#inits),*]);
                    #reorder
                    #(#finals)*
                    __rnn_inputs.push(__rnn_ins);
                    __rnn_tapes.push(__rnn_tape);
                });
                outs.push(out);

                // The backward of this direction.
                let direction_lit = usize_lit(direction);
                let tape_idx = match direction {
                    0 => quote!(__rnn_layer_tape),
                    _ => quote!(__rnn_layer_tape + #direction_lit),
                };
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
                        // A fused pass binds it as whole rows: one direction's
                        // columns of two are copied, a single direction's are not.
                        let __rnn_dout_dir = __rnn_dout_dir.as_standard_layout();
                        let (__rnn_dp, __rnn_din, __rnn_dinit) = Self::#backward_fn(
                            &self.__rnn_consts[#backward_slot],
                            &self.__rnn_workspace,
                            __rnn_packing,
                            __rnn_variant,
                            &__rnn_inputs[#tape_idx],
                            &__rnn_tapes[#tape_idx],
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
        let group_rows: Vec<_> = self
            .groups
            .iter()
            .map(|group| usize_lit(group.rows))
            .collect();
        let group_sizes: Vec<_> = self
            .groups
            .iter()
            .map(|group| usize_lit(group.size))
            .collect();
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
        // A network of stateless layers alone has no state to start from
        // or to check the gradient of.
        let stateless = self.groups.is_empty();
        let (initial_state, d_final) = match stateless {
            true => (format_ident!("_initial_state"), format_ident!("_d_final")),
            false => (format_ident!("initial_state"), format_ident!("d_final")),
        };
        let check_d_final = match stateless {
            true => TokenStream::new(),
            false => quote! {
                if let Some(state) = d_final {
                    // Named as the final states, whose gradients they are.
                    #(__rnn_rt::check_shape(#final_names, state.#initial_fields.shape(), &[Some(#group_rows), Some(__rnn_batch), Some(#group_sizes)])?;)*
                    #(__rnn_rt::check_finite_array(#final_names, state.#initial_fields.view().into_dyn())?;)*
                }
            },
        };
        // Empty until each layer's backward puts its parameters' gradients
        // in their slots (every slot gets one): no weight-sized zeros made
        // to be dropped.
        let per_param_shapes = specs
            .iter()
            .map(|_| quote!(#rt::ndarray::ArrayD::<f32>::zeros(__rnn_nd::IxDyn(&[0]))));
        let train_fns = (0..self.network.layers.len()).map(|idx| self.emit_layer_train(idx));
        let backward_fns = (0..self.network.layers.len()).map(|idx| self.emit_layer_backward(idx));
        let consts_fns = (0..self.network.layers.len()).map(|idx| self.emit_layer_consts(idx));
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
            #[allow(clippy::type_complexity)]
            pub struct #tape {
                __rnn_batch: usize,
                __rnn_variant: usize,
                __rnn_steps: usize,
                __rnn_stamp: u64,
                /// The parts of the batch computed apart: the batch indices
                /// (none: the whole batch), their packing, and per layer and
                /// direction the cell inputs and what the forward kept.
                __rnn_parts: ::std::vec::Vec<(
                    ::std::vec::Vec<usize>,
                    #rt::__private::Packing,
                    ::std::vec::Vec<::std::vec::Vec<#rt::ndarray::Array2<f32>>>,
                    ::std::vec::Vec<::std::vec::Vec<#rt::ndarray::Array2<f32>>>,
                )>,
            }

            impl #tape {
                /// The bytes the tape holds.
                pub fn bytes(&self) -> usize {
                    self.__rnn_parts
                        .iter()
                        .flat_map(|(_, _, inputs, tapes)| inputs.iter().chain(tapes))
                        .flatten()
                        .map(|array| array.len() * 4)
                        .sum()
                }

                /// The batch size of the call that made it.
                pub fn batch(&self) -> usize {
                    self.__rnn_batch
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

                /// The gradients of a batch from those of two parts of it
                /// (batch indices and gradients of each): a parameter's is
                /// the first part's plus the second's. The second part's
                /// per-step copies go back to `workspace`, for the next call.
                fn __rnn_merge(batch: usize, first: (&[usize], Self), second: (&[usize], Self), workspace: &#rt::__private::Workspace) -> Self {
                    let params = first.1.params.into_iter().zip(&second.1.params).map(|(a, b)| a + b).collect();
                    workspace.give_copies(second.1.params, &[#(#step_copies),*]);
                    let inputs = first.1.inputs.iter().zip(&second.1.inputs).map(|(a, b)| {
                        let mut shape = a.shape().to_vec();
                        shape[0] = batch;
                        let mut all = #rt::ndarray::ArrayD::<f32>::zeros(shape);
                        for (part, idx) in [(a, first.0), (b, second.0)] {
                            for (k, slot) in idx.iter().enumerate() {
                                all.index_axis_mut(#rt::ndarray::Axis(0), *slot).assign(&part.index_axis(#rt::ndarray::Axis(0), k));
                            }
                        }
                        all
                    }).collect();
                    #(
                        let mut #initial_fields = #rt::ndarray::Array3::<f32>::zeros((#group_rows, batch, #group_sizes));
                        #rt::__private::scatter(&mut #initial_fields, #rt::ndarray::Axis(1), first.0, &first.1.initial_state.#initial_fields);
                        #rt::__private::scatter(&mut #initial_fields, #rt::ndarray::Axis(1), second.0, &second.1.initial_state.#initial_fields);
                    )*
                    Self { params, inputs, initial_state: #state { #(#initial_fields,)* } }
                }
            }
        };

        // Two halves of a large batch are computed apart, on two threads
        // if allowed; the split depends on the batch alone. With
        // `halves_in_one_pass`, on one thread, halves of sequences of one
        // length run in one pass instead, each sum over the batch formed
        // over each half's rows apart, to the same bits.
        let halves = quote! {
                        let __rnn_half = |__rnn_idx: &[usize]| {
                            let __rnn_lengths = __rnn_packing.lengths_of(__rnn_idx);
                            let __rnn_half_packing = #rt::__private::Packing::new(Some(&__rnn_lengths), __rnn_idx.len(), __rnn_steps)?;
                            let __rnn_initial = initial_state.map(|state| state.__rnn_select(__rnn_idx));
                            #(#half_inputs)*
                            let (__rnn_y, __rnn_inputs, __rnn_tapes) = self.__rnn_train_whole(#(#half_args,)* &__rnn_half_packing, __rnn_variant, __rnn_initial.as_ref());
                            ::std::result::Result::<_, #rt::RnnError>::Ok((__rnn_y, (__rnn_idx.to_vec(), __rnn_half_packing, __rnn_inputs, __rnn_tapes)))
                        };
                        let __rnn_split = self.__rnn_threads.split(__rnn_packing.rows() / 2 * #macs_per_row);
                        let (__rnn_ya, __rnn_yb) = __rnn_rt::join(__rnn_split, || __rnn_half(&__rnn_a), || __rnn_half(&__rnn_b));
                        let ((__rnn_ya, __rnn_first), (__rnn_yb, __rnn_right)) = (__rnn_ya?, __rnn_yb?);
                        (#output::__rnn_merge(__rnn_batch, (&__rnn_a, __rnn_ya), (&__rnn_b, __rnn_yb)), vec![__rnn_first, __rnn_right])
        };
        let whole = quote! {
                        let (__rnn_y, __rnn_inputs, __rnn_tapes) = self.__rnn_train_whole(#(#whole_args,)* &__rnn_packing, __rnn_variant, initial_state);
                        (__rnn_y, vec![(::std::vec::Vec::new(), __rnn_packing, __rnn_inputs, __rnn_tapes)])
        };
        let halves_or_one_pass = match self.halves_in_one_pass {
            true => quote! {
                // Two halves of a large batch are computed apart, on two
                // threads if allowed, or on one in one pass over the batch.
                let __rnn_halves = __rnn_packing.training_halves(#macs_per_row);
                let __rnn_one_pass = match &__rnn_halves {
                    Some((__rnn_a, __rnn_b)) if !self.__rnn_threads.split(__rnn_packing.rows() / 2 * #macs_per_row) => {
                        __rnn_packing.in_one_pass(__rnn_a, __rnn_b)
                    }
                    _ => None,
                };
                let (__rnn_y, __rnn_parts) = match (__rnn_halves, __rnn_one_pass) {
                    (_, Some(__rnn_packing)) => { #whole }
                    (Some((__rnn_a, __rnn_b)), None) => { #halves }
                    (None, None) => { #whole }
                };
            },
            false => quote! {
                // Two halves of a large batch are computed apart, on two
                // threads if allowed; the split depends on the batch alone.
                let (__rnn_y, __rnn_parts) = match __rnn_packing.training_halves(#macs_per_row) {
                    Some((__rnn_a, __rnn_b)) => { #halves }
                    None => { #whole }
                };
            },
        };
        let methods = quote! {
            /// Runs the network as [`Self::forward`] does, keeping what
            /// [`Self::backward`] needs (see the tape's type for its size).
            ///
            /// # Errors
            ///
            /// As [`Self::forward`].
            // The halves' closure binds the packing by reference, the
            // whole batch by value; the calls are written once for both.
            #[allow(clippy::needless_borrow, clippy::type_complexity)]
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
                #choice
                #halves_or_one_pass
                Ok((
                    __rnn_y,
                    #tape {
                        __rnn_batch,
                        __rnn_variant,
                        __rnn_steps,
                        __rnn_stamp: self.__rnn_stamp,
                        __rnn_parts,
                    },
                ))
            }

            /// `forward_train` after its checks, over the batch
            /// `__rnn_packing` describes: the output, and per layer and
            /// direction the cell inputs and the tape.
            #[allow(clippy::type_complexity)]
            fn __rnn_train_whole(
                &self,
                #(#params,)*
                __rnn_packing: &#rt::__private::Packing,
                __rnn_variant: usize,
                #initial_state: ::std::option::Option<&#state>,
            ) -> (#output, ::std::vec::Vec<::std::vec::Vec<#rt::ndarray::Array2<f32>>>, ::std::vec::Vec<::std::vec::Vec<#rt::ndarray::Array2<f32>>>) {
                #prelude
                let __rnn_batch = __rnn_packing.batch();
                #(#packs)*
                let mut __rnn_final = #state { #(#finals_init,)* };
                let mut __rnn_inputs = ::std::vec::Vec::new();
                let mut __rnn_tapes = ::std::vec::Vec::new();
                #(#train_layers)*
                let __rnn_y = __rnn_packing.unpack(#last.view());
                (#output { y: __rnn_y, #(#output_fields,)* }, __rnn_inputs, __rnn_tapes)
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
            #[allow(clippy::needless_borrow, clippy::type_complexity)]
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
                let __rnn_batch = tape.__rnn_batch;
                __rnn_rt::check_shape("dy", dy.shape(), &[Some(__rnn_batch), Some(tape.__rnn_steps), Some(#width)])?;
                __rnn_rt::check_finite_array("dy", dy.view().into_dyn())?;
                #check_d_final
                Ok(match tape.__rnn_parts.as_slice() {
                    [__rnn_first, __rnn_right] => {
                        let __rnn_half = |(__rnn_idx, __rnn_packing, __rnn_inputs, __rnn_tapes): &(::std::vec::Vec<usize>, #rt::__private::Packing, ::std::vec::Vec<::std::vec::Vec<Array2<f32>>>, ::std::vec::Vec<::std::vec::Vec<Array2<f32>>>)| {
                            let __rnn_dy = dy.select(__rnn_nd::Axis(0), __rnn_idx);
                            let __rnn_final = d_final.map(|state| state.__rnn_select(__rnn_idx));
                            self.__rnn_backward_whole(__rnn_packing, tape.__rnn_variant, __rnn_inputs, __rnn_tapes, __rnn_dy.view(), __rnn_final.as_ref())
                        };
                        let __rnn_split = self.__rnn_threads.split(tape.__rnn_parts[0].1.rows() * #macs_per_row);
                        let (__rnn_ya, __rnn_yb) = __rnn_rt::join(__rnn_split, || __rnn_half(__rnn_first), || __rnn_half(__rnn_right));
                        #grads::__rnn_merge(__rnn_batch, (&__rnn_first.0, __rnn_ya), (&__rnn_right.0, __rnn_yb), &self.__rnn_workspace)
                    }
                    [(_, __rnn_packing, __rnn_inputs, __rnn_tapes)] => {
                        self.__rnn_backward_whole(__rnn_packing, tape.__rnn_variant, __rnn_inputs, __rnn_tapes, dy, d_final)
                    }
                    _ => unreachable!("a tape holds one part or two"),
                })
            }

            /// `backward` after its checks, over the batch `__rnn_packing`
            /// describes.
            fn __rnn_backward_whole(
                &self,
                __rnn_packing: &#rt::__private::Packing,
                __rnn_variant: usize,
                __rnn_inputs: &[::std::vec::Vec<#rt::ndarray::Array2<f32>>],
                __rnn_tapes: &[::std::vec::Vec<#rt::ndarray::Array2<f32>>],
                dy: #rt::ndarray::ArrayView3<'_, f32>,
                #d_final: ::std::option::Option<&#state>,
            ) -> #grads {
                #prelude
                let __rnn_batch = __rnn_packing.batch();
                let mut __rnn_params: ::std::vec::Vec<#rt::ndarray::ArrayD<f32>> = vec![#(#per_param_shapes),*];
                let mut __rnn_dnet: ::std::vec::Vec<Array2<f32>> = vec![#(#net_grads_init),*];
                let mut __rnn_initial = #state { #(#initial_init,)* };
                let mut __rnn_dout = __rnn_packing.pack(dy);
                #(#backward_layers)*
                let _ = __rnn_dout;
                #grads {
                    params: __rnn_params,
                    inputs: vec![#(#net_grads_out),*],
                    initial_state: __rnn_initial,
                }
            }

            /// Gives a tape's buffers back to the model's workspace, for the
            /// next [`Self::forward_train`]: a training loop that recycles
            /// its tapes allocates nothing once the workspace has settled.
            pub fn recycle(&self, tape: #tape) {
                let __rnn_buffers = tape.__rnn_parts.into_iter().flat_map(|(_, _, inputs, tapes)| inputs.into_iter().chain(tapes));
                for buffer in __rnn_buffers.flatten() {
                    self.__rnn_workspace.give(buffer);
                }
            }

            /// Gives the parameters' gradients (the `params` of
            /// [`Self::backward`]'s result) back to the model's workspace,
            /// for the next backward, which writes the per-step parameters'
            /// copies into them: a training loop that recycles its
            /// gradients once the optimizer has read them spares the
            /// zeroing of new ones. The other gradients are dropped; for a
            /// model without per-step parameters this drops them all.
            pub fn recycle_grads(&self, params: ::std::vec::Vec<#rt::ndarray::ArrayD<f32>>) {
                self.__rnn_workspace.give_copies(params, &[#(#step_copies),*]);
            }

            /// The parameters, by PyTorch's names ([`#grads::NAMES`] order).
            pub fn params(&self) -> ::std::vec::Vec<(&'static str, #rt::ndarray::ArrayViewD<'_, f32>)> {
                #grads::NAMES.iter().copied().zip(self.__rnn_params.iter().map(|array| array.view())).collect()
            }

            /// Changes the parameters (an optimizer's step): `update` gets
            /// each one by name, mutably. Afterwards what reads a changed
            /// parameter is rebuilt (a layer, or one step of a layer with
            /// per-step parameters), and tapes made before no longer fit.
            ///
            /// # Errors
            ///
            /// A parameter made non-finite: the model is left unchanged.
            pub fn update_params(
                &mut self,
                mut update: impl FnMut(&str, #rt::ndarray::ArrayViewMutD<'_, f32>),
            ) -> ::std::result::Result<(), #rt::RnnError> {
                #prelude
                let mut changed = self.__rnn_params.clone();
                for (name, param) in #grads::NAMES.iter().zip(changed.iter_mut()) {
                    update(name, param.view_mut());
                }
                for (name, param) in #grads::NAMES.iter().zip(&changed) {
                    __rnn_rt::check_finite_array(name, param.view())?;
                }
                // Only what reads a changed parameter is rebuilt, as
                // `from_weights` builds it: a layer's weights (a step's,
                // for a layer with per-step parameters) and the training
                // constants of its directions (steps). Nothing is changed
                // before every fallible part has succeeded.
                let __rnn_old = &self.__rnn_params;
                #(#rebuilds)*
                #(#commits)*
                self.__rnn_params = changed;
                self.__rnn_stamp = __rnn_rt::next_stamp();
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

            /// What the training functions read of the parameters `__rnn_p`
            /// alone, per layer and direction: computed once, when the model
            /// is built.
            // One push per layer and direction, each written by its own
            // emitter: a vec![] literal would join them in one expression.
            #[allow(clippy::type_complexity, clippy::vec_init_then_push)]
            fn __rnn_prepare(__rnn_p: &[#rt::ndarray::ArrayD<f32>]) -> ::std::vec::Vec<#rt::__private::TrainConsts> {
                let mut __rnn_sets = ::std::vec::Vec::new();
                #(#prepares)*
                __rnn_sets
            }

            #(#consts_fns)*
            #(#train_fns)*
            #(#backward_fns)*
        };
        (items, methods)
    }

    /// `update_params`'s rebuild of layer `idx` (whose parameters start at
    /// `first` in the flat list and whose training constants at `slot`):
    /// statements building what changed into locals, which may fail, and
    /// statements storing them in the model, which may not.
    fn emit_rebuild(
        &self,
        layer: &ir::Layer,
        idx: usize,
        first: usize,
        slot: usize,
    ) -> (TokenStream, TokenStream) {
        let rt = self.rt;
        let count = layer.params.len();
        let field = format_ident!("__rnn_layer{}", idx);
        let builder = layer_builder(idx);
        let consts_fn = format_ident!("__rnn_layer{}_consts", idx);
        let rebuilt = format_ident!("__rnn_rebuilt{}", idx);
        let (begin, end) = (
            usize_lit(first),
            usize_lit(first + count * layer.directions),
        );
        let grads = format_ident!("{}Grads", self.network.name);
        match layer.steps() {
            Some(steps) => {
                let flags = layer.params.iter().map(|param| param.steps.is_some());
                let dirty = format_ident!("__rnn_steps{}", idx);
                // Per-step parameters go to the builder as they are; the
                // tied ones by name, as `from_weights` reads them.
                let alls = layer
                    .params
                    .iter()
                    .enumerate()
                    .filter(|(_, param)| param.steps.is_some())
                    .map(|(j, _)| {
                        let at = usize_lit(first + j);
                        quote!(&changed[#at])
                    });
                let tied = layer
                    .params
                    .iter()
                    .enumerate()
                    .filter(|(_, param)| param.steps.is_none())
                    .map(|(j, _)| usize_lit(first + j));
                let inserts = quote! {
                    #[allow(unused_mut)]
                    let mut weights = #rt::TensorMap::new();
                    #(weights.insert_f32(#grads::NAMES[#tied], changed[#tied].clone());)*
                    let weights = &weights;
                };
                let steps = usize_lit(steps);
                // The step's set of training constants.
                let at = match slot {
                    0 => quote!(__rnn_k),
                    _ => {
                        let slot = usize_lit(slot);
                        quote!(#slot + __rnn_k)
                    }
                };
                // What a step's rebuild reads: its copies and the tied
                // parameters (the runtime weighs it against the threads).
                let floats = usize_lit(
                    layer
                        .params
                        .iter()
                        .map(|param| param.shape.iter().product::<usize>())
                        .sum(),
                );
                let rebuild = quote! {
                    let __rnn_per_step = [#(#flags),*];
                    let #dirty = __rnn_rt::steps_changed(&__rnn_old[#begin..#end], &changed[#begin..#end], &__rnn_per_step, #steps);
                    let #rebuilt = if #dirty.contains(&true) {
                        #inserts
                        let __rnn_ks: ::std::vec::Vec<usize> = (0..#steps).filter(|k| #dirty[*k]).collect();
                        // A changed tied parameter rebuilds every step:
                        // step 0's constants first, whose values that read
                        // tied parameters alone the others then share.
                        // Otherwise each step keeps those of its own set.
                        let __rnn_base = __rnn_rt::tied_changed(&__rnn_old[#begin..#end], &changed[#begin..#end], &__rnn_per_step)
                            .then(|| Self::#consts_fn(&__rnn_rt::step_params(&changed[#begin..#end], &__rnn_per_step, 0), None, &[]));
                        let __rnn_sets = &self.__rnn_consts;
                        // A step's weights and training constants, each
                        // step's apart from the others'.
                        __rnn_rt::build_steps(self.__rnn_threads, &__rnn_ks, #floats, &|__rnn_k| {
                            let __rnn_p = __rnn_rt::step_params(&changed[#begin..#end], &__rnn_per_step, __rnn_k);
                            let __rnn_set = match &__rnn_base {
                                Some(__rnn_base) if __rnn_k == 0 => __rnn_base.clone(),
                                Some(__rnn_base) => Self::#consts_fn(&__rnn_p, Some(__rnn_base), &__rnn_per_step),
                                None => Self::#consts_fn(&__rnn_p, Some(&__rnn_sets[#at]), &__rnn_per_step),
                            };
                            ::std::result::Result::Ok((Self::#builder(weights, #(#alls,)* __rnn_k)?, __rnn_set))
                        })?
                    } else {
                        ::std::vec::Vec::new()
                    };
                };
                let commit = quote! {
                    for (__rnn_k, (__rnn_weights, __rnn_set)) in #rebuilt {
                        self.#field[__rnn_k] = __rnn_weights;
                        self.__rnn_consts[#at] = __rnn_set;
                    }
                };
                (rebuild, commit)
            }
            None => {
                // The layer's parameters, as changed, named for its builder.
                let inserts = quote! {
                    let weights = &{
                        let mut weights = #rt::TensorMap::new();
                        for (name, param) in #grads::NAMES[#begin..#end].iter().zip(&changed[#begin..#end]) {
                            weights.insert_f32(*name, param.clone());
                        }
                        weights
                    };
                };
                // Which directions read a changed parameter: each is
                // compared once, and the layer is rebuilt if any did.
                let changed_dirs = format_ident!("__rnn_changed{}", idx);
                let dirs = (0..layer.directions).map(|direction| {
                    let (from, to) = (
                        usize_lit(first + direction * count),
                        usize_lit(first + (direction + 1) * count),
                    );
                    quote!(__rnn_rt::params_changed(&__rnn_old[#from..#to], &changed[#from..#to]))
                });
                let rebuild = quote! {
                    let #changed_dirs = [#(#dirs),*];
                    let #rebuilt = if #changed_dirs.contains(&true) {
                        #inserts
                        Some(Self::#builder(weights)?)
                    } else {
                        None
                    };
                };
                // Training constants are per direction.
                let consts = (0..layer.directions).map(|direction| {
                    let (from, to) = (
                        usize_lit(first + direction * count),
                        usize_lit(first + (direction + 1) * count),
                    );
                    let (at, direction) = (usize_lit(slot + direction), usize_lit(direction));
                    quote! {
                        if #changed_dirs[#direction] {
                            self.__rnn_consts[#at] = Self::#consts_fn(&__rnn_rt::step_params(&changed[#from..#to], &[], 0), None, &[]);
                        }
                    }
                });
                let commit = quote! {
                    if let Some(__rnn_weights) = #rebuilt {
                        self.#field = __rnn_weights;
                    }
                    #(#consts)*
                };
                (rebuild, commit)
            }
        }
    }
}

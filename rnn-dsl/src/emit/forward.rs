//! `forward`, `step` and the name-based `run`.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use super::idents::{input_ident, usize_lit};
use super::Cx;
use crate::check::{InputSource, UnrollMode};
use crate::ir::{self};
use crate::lower::Variant;
use crate::names;

impl Cx<'_> {
    pub(super) fn per_step_inputs(&self) -> Vec<(usize, &ir::Input)> {
        self.network
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, input)| input.per_step)
            .collect()
    }

    pub(super) fn context_inputs(&self) -> Vec<(usize, &ir::Input)> {
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
    pub(super) fn emit_run(&self) -> TokenStream {
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
        let variants = self.variants;
        let mut layers = Vec::new();
        for (layer_idx, layer) in self.network.layers.iter().enumerate() {
            let weights_field = format_ident!("__rnn_layer{}", layer_idx);
            let mut directions = Vec::new();
            for direction in 0..layer.directions {
                let reverse = layer.runs_backward(direction);
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
                    let group = self.state_group(layer, k);
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
                    let weights = match layer.steps() {
                        Some(_) => quote!(&self.#weights_field[..]),
                        None => quote!(&self.#weights_field[#direction_lit]),
                    };
                    let call = quote!(Self::#function(#weights, &self.__rnn_workspace, __rnn_packing, #(#args,)* #out_arg, #place));
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
                    let macs_per_row = usize_lit(self.plans[layer_idx].macs_per_row);
                    let half = usize_lit(layer.output_size / 2);
                    let traded = self.plans[layer_idx]
                        .split
                        .as_ref()
                        .map_or(Vec::new(), |split| split.traded_states.clone());
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
                    let group = self.state_group(layer, k);
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
                    let macs_per_row = usize_lit(self.plans[layer_idx].macs_per_row);
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
    pub(super) fn emit_variant_choice(&self, steps_name: &str) -> TokenStream {
        let rt = self.rt;
        // A layer with per-step parameters runs at most as many steps as
        // they have copies.
        let limits = self.network.layers.iter().filter_map(|layer| {
            let steps = usize_lit(layer.steps()?);
            let name = &layer.name;
            Some(quote! {
                if __rnn_packing.max_len() > #steps {
                    return Err(#rt::RnnError::InvalidValue {
                        tensor: #steps_name.to_owned(),
                        reason: format!(
                            "{} steps, but layer `{}` has per-step parameters for {}",
                            __rnn_packing.max_len(),
                            #name,
                            #steps
                        ),
                    });
                }
            })
        });
        let limits: TokenStream = limits.collect();
        let choice = self.emit_bucket_choice(steps_name);
        quote!(#limits #choice)
    }

    /// The variant for the batch's longest sequence: its bucket, or the
    /// only variant.
    fn emit_bucket_choice(&self, steps_name: &str) -> TokenStream {
        let rt = self.rt;
        match &self.network.unroll {
            UnrollMode::Buckets {
                lengths,
                dynamic_fallback,
            } => {
                let buckets = lengths.iter().map(|len| usize_lit(*len));
                let largest =
                    usize_lit(*lengths.last().expect("check ensures buckets are non-empty"));
                if *dynamic_fallback {
                    // Past the largest bucket: the dynamic variant, after the buckets'.
                    let idx = usize_lit(lengths.len());
                    return quote! {
                        let __rnn_variant = [#(#buckets),*].iter().position(|bucket| __rnn_packing.max_len() <= *bucket).unwrap_or(#idx);
                    };
                }
                quote! {
                    let __rnn_variant = match [#(#buckets),*].iter().position(|bucket| __rnn_packing.max_len() <= *bucket) {
                        Some(bucket) => bucket,
                        None => return Err(#rt::RnnError::InvalidValue {
                            tensor: #steps_name.to_owned(),
                            reason: format!(
                                "the longest sequence has {} steps; the largest bucket is {}",
                                __rnn_packing.max_len(),
                                #largest
                            ),
                        }),
                    };
                }
            }
            _ => quote!(let __rnn_variant = 0;),
        }
    }

    /// What a call computing two halves of its batch apart writes about
    /// the network's inputs ([`Halves`]).
    pub(super) fn halves(&self) -> Halves {
        let macs_per_row: usize = self
            .network
            .layers
            .iter()
            .zip(self.plans)
            .map(|(layer, plan)| plan.macs_per_row * layer.directions)
            .sum();
        let idents: Vec<Ident> = self
            .network
            .inputs
            .iter()
            .map(|input| format_ident!("{}", input.name))
            .collect();
        Halves {
            macs_per_row: usize_lit(macs_per_row),
            half_inputs: idents
                .iter()
                .map(|ident| quote!(let #ident = #ident.select(__rnn_nd::Axis(0), __rnn_idx);))
                .collect(),
            half_args: idents.iter().map(|ident| quote!(#ident.view())).collect(),
            whole_args: idents.iter().map(|ident| quote!(#ident)).collect(),
        }
    }

    /// What `forward` and `forward_train` share: the inputs as parameters,
    /// their checks, how batch and steps are read, the choice of the time
    /// loop's variant, and the packed network inputs.
    pub(super) fn entry(&self) -> Entry {
        let rt = self.rt;
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
            .map_or(names::STEPS.to_owned(), |(_, input)| input.name.clone());
        let choice = self.emit_variant_choice(&steps_name);
        let packs = self
            .network
            .inputs
            .iter()
            .enumerate()
            .map(|(k, input)| {
                let local = format_ident!("__rnn_net{}", k);
                let ident = format_ident!("{}", input.name);
                if input.per_step {
                    quote!(let #local = __rnn_packing.pack(#ident);)
                } else {
                    quote!(let #local = __rnn_packing.sort_rows(#ident);)
                }
            })
            .collect();
        Entry {
            params,
            checks,
            batch_expr,
            steps_expr,
            steps_param: steps_param.into_iter().collect(),
            choice,
            packs,
        }
    }

    pub(super) fn emit_forward(&self) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let state = self.state_struct();
        let output = self.output_struct();
        let static_steps = self.static_steps();
        let Entry {
            params,
            checks,
            batch_expr,
            steps_expr,
            steps_param,
            choice,
            packs,
        } = self.entry();
        let net_args = (0..self.network.inputs.len()).map(|k| {
            let local = format_ident!("__rnn_net{}", k);
            quote!(#local.view())
        });
        let output_fields = self.groups.iter().map(|group| {
            let (field, output_field) = (&group.field, &group.output_field);
            quote!(#output_field: __rnn_state.#field)
        });
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
        let Halves {
            macs_per_row,
            half_inputs,
            half_args,
            whole_args,
        } = self.halves();
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
    pub(super) fn emit_step(&self) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        if self
            .network
            .layers
            .iter()
            .any(|layer| layer.directions != 1 || layer.reverse || layer.steps().is_some())
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

/// What `forward` and `forward_train` write to compute two halves of a
/// batch apart ([`Cx::halves`]).
pub(super) struct Halves {
    /// The network's multiply-adds per packed row, all layers and
    /// directions: a half's work is its rows times this.
    pub macs_per_row: Literal,
    /// `let <input> = <input>.select(Axis(0), __rnn_idx);`: a half's rows
    /// of each network input.
    pub half_inputs: Vec<TokenStream>,
    /// Each network input as a view, the arguments of a half's call.
    pub half_args: Vec<TokenStream>,
    /// Each network input as given, the arguments of the whole batch's.
    pub whole_args: Vec<TokenStream>,
}

/// The parts of a public entry point's start that `forward` and
/// `forward_train` share ([`Cx::entry`]).
pub(super) struct Entry {
    /// The network inputs as parameters.
    pub params: Vec<TokenStream>,
    /// Their shape checks.
    pub checks: Vec<TokenStream>,
    /// `__rnn_batch`'s value.
    pub batch_expr: TokenStream,
    /// `__rnn_steps`'s value.
    pub steps_expr: TokenStream,
    /// `steps: usize` for a dynamic network without per-step input.
    pub steps_param: Vec<TokenStream>,
    /// `let __rnn_variant = ...;`, or the error past the largest bucket.
    pub choice: TokenStream,
    /// `let __rnn_net<k> = ...;`: each network input packed or sorted.
    pub packs: Vec<TokenStream>,
}

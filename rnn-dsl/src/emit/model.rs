//! The model, state, output and weights types, and their doc comments.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::idents::{const_field, packed_field, runtime_weight_fields, usize_lit};
use super::Cx;
use crate::check::UnrollMode;
use crate::ir::{Shape, ValueId};
use crate::lower::{Place, Variant};
use crate::{names, weights};

impl Cx<'_> {
    /// Short local names for the runtime, at the start of every generated
    /// function body.
    pub(super) fn prelude(&self) -> TokenStream {
        let rt = self.rt;
        quote! {
            #[allow(unused_imports)]
            use #rt::ndarray::{self as __rnn_nd, s, Array2, Array3};
            #[allow(unused_imports)]
            use #rt::__private::{self as __rnn_rt, Arg};
        }
    }

    /// The fixed length of a `static N` network.
    pub(super) fn static_steps(&self) -> Option<usize> {
        match self.network.unroll {
            UnrollMode::Static(steps) => Some(steps),
            _ => None,
        }
    }

    /// Whether a layer's steps run on two threads, half the columns each
    /// ([`lower::Split`]).
    pub(super) fn splits(&self, layer_idx: usize) -> bool {
        self.plans[layer_idx].split.is_some()
    }

    pub(super) fn emit_network(&self) -> TokenStream {
        let weight_structs =
            (0..self.network.layers.len()).map(|idx| self.emit_weights_struct(idx));
        let layer_fns = (0..self.network.layers.len()).flat_map(|idx| {
            let split = self.splits(idx).then_some(Variant::Split);
            self.variants
                .iter()
                .copied()
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
        let (training_items, training_methods) = match self.training {
            Some(_) => self.emit_training(),
            None => (TokenStream::new(), TokenStream::new()),
        };
        quote! {
            #model
            #state
            #output
            #training_items
            #(#weight_structs)*
            // Generated names follow the model's own (`A`, `L` in ISTA).
            #[allow(non_snake_case)]
            impl #model_ident {
                #constructors
                #forward
                #step
                #run
                #(#layer_fns)*
                #training_methods
            }
            #model_impl
        }
    }

    /// What `impl Model` and `impl Train` share: the inputs read by name,
    /// the batch and steps, the lengths and the initial state.
    fn name_door(&self) -> (TokenStream, Vec<TokenStream>) {
        let static_steps = self.static_steps();
        let state = self.state_struct();
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
        let names: Vec<&String> = self
            .groups
            .iter()
            .map(|group| &group.initial_name)
            .collect();
        // A network of stateless layers has no state to read.
        let read_state = if names.is_empty() {
            quote!(let __rnn_state: Option<#state> = None;)
        } else {
            quote! {
                let __rnn_state = if [#(#names),*].iter().any(|name| inputs.contains(name)) {
                    Some(#state { #(#states,)* })
                } else {
                    None
                };
            }
        };
        let door = quote! {
            #(#loads)*
            let __rnn_batch = #batch;
            let __rnn_steps = #steps;
            let __rnn_seq_len = __rnn_rt::optional_lengths(inputs, __rnn_batch, __rnn_steps)?;
            #read_state
        };
        (door, args)
    }

    /// `impl Model`: the name-based door, as `rnnc run` takes tensors.
    pub(super) fn emit_model_trait(&self) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let model = self.model_ident();
        let output_name = names::OUTPUT;
        let (door, args) = self.name_door();
        let outputs = self.groups.iter().map(|group| {
            let field = &group.output_field;
            let name = &group.final_name;
            quote!(__rnn_outputs.insert_f32(#name, __rnn_result.#field.into_dyn());)
        });
        let train = self.training.map(|_| self.emit_train_trait());
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
                    #door
                    let __rnn_result = self.forward(#(#args,)* __rnn_seq_len.as_deref(), __rnn_state.as_ref())?;
                    let mut __rnn_outputs = #rt::TensorMap::new();
                    #(#outputs)*
                    __rnn_outputs.insert_f32(#output_name, __rnn_result.y.into_dyn());
                    Ok(__rnn_outputs)
                }
            }
            #train
        }
    }

    /// `impl Train`: forward and backward by names, as `rnnc grad` takes
    /// and writes tensors.
    fn emit_train_trait(&self) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let model = self.model_ident();
        let state = self.state_struct();
        let output_name = names::OUTPUT;
        let (door, args) = self.name_door();
        let outputs = self.groups.iter().map(|group| {
            let field = &group.output_field;
            let name = &group.final_name;
            quote!(__rnn_outputs.insert_f32(#name, __rnn_result.#field.clone().into_dyn());)
        });
        let final_names: Vec<&String> = self.groups.iter().map(|group| &group.final_name).collect();
        let final_states = self.groups.iter().map(|group| {
            let field = &group.field;
            let name = &group.final_name;
            let (rows, size) = (usize_lit(group.rows), usize_lit(group.size));
            quote!(#field: __rnn_rt::state_or_zeros(seeds, #name, #rows, __rnn_batch, #size)?)
        });
        let read_final = if final_names.is_empty() {
            quote!(let __rnn_final: Option<#state> = None;)
        } else {
            quote! {
                let __rnn_final = if [#(#final_names),*].iter().any(|name| seeds.contains(name)) {
                    Some(#state { #(#final_states,)* })
                } else {
                    None
                };
            }
        };
        quote! {
            #[allow(non_snake_case)]
            impl #rt::Train for #model {
                fn run_gradients(&self, inputs: &#rt::TensorMap, seeds: &#rt::TensorMap) -> ::std::result::Result<#rt::TensorMap, #rt::RnnError> {
                    #prelude
                    #door
                    let (__rnn_result, __rnn_tape) = self.forward_train(#(#args,)* __rnn_seq_len.as_deref(), __rnn_state.as_ref())?;
                    let __rnn_dy = if seeds.contains(#output_name) {
                        __rnn_rt::input3(seeds, #output_name)?.to_owned()
                    } else {
                        Array3::<f32>::zeros(__rnn_result.y.raw_dim())
                    };
                    #read_final
                    let __rnn_grads = self.backward(&__rnn_tape, __rnn_dy.view(), __rnn_final.as_ref());
                    self.recycle(__rnn_tape);
                    let __rnn_grads = __rnn_grads?;
                    let mut __rnn_outputs = #rt::TensorMap::new();
                    #(#outputs)*
                    __rnn_outputs.insert_f32(#output_name, __rnn_result.y.clone().into_dyn());
                    for (name, gradient) in __rnn_grads.named() {
                        __rnn_outputs.insert_f32(format!("grad_{name}"), gradient.to_owned());
                    }
                    Ok(__rnn_outputs)
                }
            }

            impl #rt::Parameters for #model {
                fn params(&self) -> ::std::vec::Vec<(&'static str, #rt::ndarray::ArrayViewD<'_, f32>)> {
                    #model::params(self)
                }

                fn update_params(&mut self, update: &mut dyn FnMut(&str, #rt::ndarray::ArrayViewMutD<'_, f32>)) -> ::std::result::Result<(), #rt::RnnError> {
                    #model::update_params(self, update)
                }
            }
        }
    }

    pub(super) fn doc_lines(&self) -> Vec<String> {
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

    pub(super) fn emit_model_struct(&self) -> TokenStream {
        let rt = self.rt;
        let model = self.model_ident();
        let docs = self.doc_lines();
        let fields = (0..self.network.layers.len()).map(|idx| {
            let field = format_ident!("__rnn_layer{}", idx);
            let ty = self.weights_struct(idx);
            quote!(#field: ::std::vec::Vec<#ty>)
        });
        let training_fields = self.training.map(|_| {
            quote! {
                /// The parameters as loaded, PyTorch's layout, for training.
                __rnn_params: ::std::vec::Vec<#rt::ndarray::ArrayD<f32>>,
                /// Which parameters these are: a tape carries its model's.
                __rnn_stamp: u64,
                /// What training reads of the parameters alone, per layer,
                /// direction and phase (`__rnn_prepare`).
                __rnn_consts: ::std::vec::Vec<#rt::__private::TrainConsts>,
            }
        });
        quote! {
            #(#[doc = #docs])*
            #[derive(Debug, Clone)]
            #[allow(non_snake_case, non_camel_case_types)]
            pub struct #model {
                #(#fields,)*
                #training_fields
                /// Buffers of earlier calls, reused by the next.
                __rnn_workspace: #rt::__private::Workspace,
                /// How many threads a call may use.
                __rnn_threads: #rt::Threads,
            }
        }
    }

    pub(super) fn emit_state_struct(&self) -> TokenStream {
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
        // A network of stateless layers alone has an empty state, which
        // reads neither the batch size nor the indices.
        let (batch, idx) = match self.groups.is_empty() {
            true => (format_ident!("_batch"), format_ident!("_idx")),
            false => (format_ident!("batch"), format_ident!("idx")),
        };
        quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, PartialEq)]
            #[allow(non_snake_case, non_camel_case_types)]
            pub struct #state {
                #(#fields,)*
            }

            impl #state {
                /// The all-zero state for `batch` sequences.
                pub fn zeros(#batch: usize) -> Self {
                    Self { #(#zeros,)* }
                }

                /// Checks every tensor's shape for `batch` sequences.
                ///
                /// # Errors
                ///
                /// A shape mismatch naming the tensor and both shapes.
                pub fn check(&self, #batch: usize) -> ::std::result::Result<(), #rt::RnnError> {
                #prelude
                    #(#checks)*
                    Ok(())
                }

                /// The state of the sequences `idx` (batch indices), in that order.
                #[doc(hidden)]
                pub fn __rnn_select(&self, #idx: &[usize]) -> Self {
                    Self { #(#selects,)* }
                }
            }
        }
    }

    pub(super) fn emit_output_struct(&self) -> TokenStream {
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

    pub(super) fn emit_weights_struct(&self, layer_idx: usize) -> TokenStream {
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
        for matrix in plan.packed.iter().copied() {
            let field = packed_field(matrix);
            fields.push(match plan.is_reduced(matrix) {
                true => quote!(#field: #rt::__private::ReducedMatrix),
                false => quote!(#field: #rt::__private::PackedMatrix),
            });
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
}

//! Constructors: loading weights, random init, packing.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::idents::{
    const_field, f32_tokens, packed_field, runtime_weight_fields, usize_lit, weight_field,
};
use super::Cx;
use crate::ir::{self, Op, Shape, ValueId};
use crate::lower::{LayerPlan, Place};
use crate::weights;
use rnn_runtime::layout::RecurrentCell;

impl Cx<'_> {
    pub(super) fn emit_constructors(&self) -> TokenStream {
        let rt = self.rt;
        let prelude = self.prelude();
        let mut layer_inits = Vec::new();
        // Each layer's weights are built by a method of their own, which
        // `update_params` calls again for the layers (or steps) whose
        // parameters changed.
        let mut builders = Vec::new();
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
                    if param.steps.is_some() {
                        // Every copy is loaded once, by the caller of the
                        // step's builder (`step_loads`).
                        let all = format_ident!("__rnn_all_{}", param.name);
                        let copy = match param.shape.len() {
                            1 => quote!(__rnn_rt::step_copy1(#all, __rnn_k)),
                            _ => quote!(__rnn_rt::step_copy2(#all, __rnn_k)),
                        };
                        statements.push(quote!(let #ident = #copy;));
                        if kept.contains(&ident) {
                            field_inits.push(quote!(#ident));
                        }
                        continue;
                    }
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
                for matrix in plan.packed.iter().copied() {
                    let field = packed_field(matrix);
                    let local = weight_field(layer, matrix);
                    statements.push(match plan.precision {
                        None => quote!(let #field = __rnn_rt::PackedMatrix::new(#local.view());),
                        Some(precision) => {
                            let precision = format_ident!("{precision:?}");
                            let name = matrix_name(layer, matrix, direction);
                            let reduced = quote!(__rnn_rt::reduce_weights(#name, #local.view(), __rnn_rt::Precision::#precision)?);
                            match plan.is_reduced(matrix) {
                                true => quote!(let #field = #reduced;),
                                // The rounded weights, in f32 for the f32 kernel.
                                false => quote!(let #field = __rnn_rt::PackedMatrix::new(#reduced.dequantized().view());),
                            }
                        }
                    });
                    field_inits.push(quote!(#field));
                }
                match layer.steps() {
                    // One set of weights per step, each with its step's
                    // copies (a layer with per-step parameters runs
                    // forward only, so this is the only direction).
                    Some(_) => {
                        let builder = layer_builder(layer_idx);
                        let (_, alls) = step_loads(layer);
                        builders.push(quote! {
                            /// The weights of one step of a layer with per-step parameters, from every step's copies.
                            #[allow(non_snake_case)]
                            fn #builder(weights: &#rt::TensorMap, #(#alls: &#rt::ndarray::ArrayD<f32>,)* __rnn_k: usize) -> ::std::result::Result<#ty, #rt::RnnError> {
                                #prelude
                                #(#statements)*
                                Ok(#ty { #(#field_inits,)* })
                            }
                        });
                    }
                    None => directions.push(quote! {{
                        #(#statements)*
                        #ty { #(#field_inits,)* }
                    }}),
                }
            }
            let builder = layer_builder(layer_idx);
            let init = match layer.steps() {
                Some(steps) => {
                    let (loads, alls) = step_loads(layer);
                    let steps = usize_lit(steps);
                    quote!(#field: {
                        #(#loads)*
                        let mut __rnn_steps = ::std::vec::Vec::with_capacity(#steps);
                        for __rnn_k in 0..#steps {
                            __rnn_steps.push(Self::#builder(weights, #(#alls,)* __rnn_k)?);
                        }
                        __rnn_steps
                    })
                }
                None => {
                    builders.push(quote! {
                        /// The weights of a layer, one set per direction.
                        #[allow(non_snake_case)]
                        fn #builder(weights: &#rt::TensorMap) -> ::std::result::Result<::std::vec::Vec<#ty>, #rt::RnnError> {
                            #prelude
                            Ok(::std::vec::Vec::from([#(#directions),*]))
                        }
                    });
                    quote!(#field: Self::#builder(weights)?)
                }
            };
            layer_inits.push(init);
        }
        // With training code, the parameters as loaded, in layer, direction,
        // parameter order (`weights::specs`).
        let training_inits = self.training.map(|_| {
            let mut loads = Vec::new();
            for layer in &self.network.layers {
                for direction in 0..layer.directions {
                    for param in &layer.params {
                        let mut names = vec![layer.weight_name(param, direction)];
                        names.extend(layer.bare_weight_name(param));
                        loads.push(match param.shape[..] {
                            _ if param.steps.is_some() => {
                                let shape = param.tensor_shape().into_iter().map(usize_lit);
                                quote!(__rnn_rt::load_steps(weights, &[#(#names),*], &[#(#shape),*])?)
                            }
                            [len] => {
                                let len = usize_lit(len);
                                quote!(__rnn_rt::load1(weights, &[#(#names),*], #len)?.into_dyn())
                            }
                            [rows, cols] => {
                                let (rows, cols) = (usize_lit(rows), usize_lit(cols));
                                quote!(__rnn_rt::load2(weights, &[#(#names),*], #rows, #cols)?.into_dyn())
                            }
                            _ => unreachable!("parameters have rank 1 or 2"),
                        });
                    }
                }
            }
            (
                quote!(let __rnn_params: ::std::vec::Vec<#rt::ndarray::ArrayD<f32>> = vec![#(#loads),*];),
                quote! {
                    __rnn_consts: Self::__rnn_prepare(&__rnn_params),
                    __rnn_params,
                    __rnn_stamp: __rnn_rt::next_stamp(),
                },
            )
        });
        let (training_loads, training_inits) = training_inits.unzip();
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
        let recurrent = weights::recurrent_layers(self.network);
        let recurrent_count = usize_lit(recurrent.len());
        let recurrent = recurrent.iter().map(|layer| {
            let cell = match layer.cell {
                RecurrentCell::Lstm { peepholes } => quote!(Lstm { peepholes: #peepholes }),
                RecurrentCell::Gru { reset_after } => quote!(Gru { reset_after: #reset_after }),
                RecurrentCell::Rnn => quote!(Rnn),
            };
            let (prefix, stack_idx, directions) = (
                &layer.prefix,
                usize_lit(layer.stack_idx),
                usize_lit(layer.directions),
            );
            let (input_size, hidden) = (usize_lit(layer.input_size), usize_lit(layer.hidden));
            quote! {
                __rnn_rt::RecurrentLayer {
                    prefix: ::std::string::String::from(#prefix),
                    stack_idx: #stack_idx,
                    directions: #directions,
                    cell: __rnn_rt::RecurrentCell::#cell,
                    input_size: #input_size,
                    hidden: #hidden,
                }
            }
        });
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

            /// Loads weights saved in another framework's layout (Keras,
            /// TensorFlow 1, ONNX; see `rnn_runtime::layout` for the names
            /// each is read by): gates reordered, matrices transposed and
            /// biases split into PyTorch's layout on the way in.
            ///
            /// # Errors
            ///
            /// As [`Self::from_safetensors`]; or the file holds weights a
            /// layer cannot honour (peepholes it lacks, a GRU bias of the
            /// other `reset_after`): the error names the tensor.
            pub fn from_safetensors_in(path: impl ::std::convert::AsRef<::std::path::Path>, layout: #rt::layout::Layout) -> ::std::result::Result<Self, #rt::RnnError> {
                Self::from_weights_in(&#rt::TensorMap::load(path)?, layout)
            }

            /// Builds the model from named weight tensors in `layout` (see
            /// [`Self::from_safetensors_in`]).
            ///
            /// # Errors
            ///
            /// As [`Self::from_safetensors_in`].
            pub fn from_weights_in(weights: &#rt::TensorMap, layout: #rt::layout::Layout) -> ::std::result::Result<Self, #rt::RnnError> {
                #prelude
                let layers: [__rnn_rt::RecurrentLayer; #recurrent_count] = [#(#recurrent),*];
                Self::from_weights(&__rnn_rt::layout_to_pytorch(weights, &layers, layout)?)
            }

            /// Builds the model from named weight tensors.
            ///
            /// # Errors
            ///
            /// A weight is missing, not floating point, or misshaped.
            pub fn from_weights(weights: &#rt::TensorMap) -> ::std::result::Result<Self, #rt::RnnError> {
                #prelude
                #training_loads
                Ok(Self {
                    #(#layer_inits,)*
                    #training_inits
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

            #(#builders)*

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
    pub(super) fn emit_const_value(
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
            Op::Reduce(op, inner) => {
                let inner = local(*inner);
                let op = format_ident!("{}", op.name());
                quote!(__rnn_rt::const_reduce(#inner.view(), __rnn_rt::Reduction::#op))
            }
            Op::Input(_) | Op::State(_) | Op::Param(_) => unreachable!("not a derived constant"),
            Op::Seed(_)
            | Op::Outer(..)
            | Op::SumBatch(_)
            | Op::SumElems(_)
            | Op::Place(..)
            | Op::PlaceRow(..) => unreachable!("IR verification: a forward step"),
        }
    }
}

/// How an error names a matrix a product reads: its tensor's name, or for a
/// value computed from parameters, what it is computed in.
/// The method building a layer's weights (`Vec` of directions), or one
/// step's of a layer with per-step parameters.
pub(super) fn layer_builder(layer_idx: usize) -> proc_macro2::Ident {
    format_ident!("__rnn_layer{}_weights", layer_idx)
}

/// The statements loading every copy of a layer's per-step parameters from
/// `weights` (each a `&ArrayD<f32>` local), and those locals, in parameter
/// order: what a step's builder takes besides the weights and the step.
fn step_loads(layer: &ir::Layer) -> (Vec<TokenStream>, Vec<proc_macro2::Ident>) {
    layer
        .params
        .iter()
        .filter(|param| param.steps.is_some())
        .map(|param| {
            let mut names = vec![layer.weight_name(param, 0)];
            names.extend(layer.bare_weight_name(param));
            let all = format_ident!("__rnn_all_{}", param.name);
            let shape = param.tensor_shape().into_iter().map(usize_lit);
            (
                quote!(let #all = &__rnn_rt::load_steps(weights, &[#(#names),*], &[#(#shape),*])?;),
                all,
            )
        })
        .unzip()
}

fn matrix_name(layer: &ir::Layer, matrix: ValueId, direction: usize) -> String {
    match layer.step.node(matrix).op {
        Op::Param(param) => layer.weight_name(&layer.params[param.0 as usize], direction),
        _ => format!(
            "a matrix computed from the weights of layer `{}` #{}",
            layer.name, layer.stack_idx
        ),
    }
}

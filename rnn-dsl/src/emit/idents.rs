//! The names generated code uses: `__rnn_*` locals and fields, and the
//! model's types.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use super::Cx;
use crate::ir::{self, Op, ValueId};
use crate::lower::{Binding, LayerPlan, Variant};

pub(super) fn usize_lit(value: usize) -> Literal {
    Literal::usize_unsuffixed(value)
}

pub(super) fn f32_tokens(value: f32) -> TokenStream {
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

pub(super) fn value_ident(id: ValueId) -> Ident {
    format_ident!("__rnn_v{}", id.0)
}

/// The buffer holding a computed value: its own, the one it lives in
/// ([`LayerPlan::alias`]), or its state's ([`LayerPlan::home`]).
pub(super) fn buffer_ident(plan: &LayerPlan, id: ValueId) -> Ident {
    match plan.home[id.index()] {
        Some(state) => state_ident(state),
        None => value_ident(plan.alias[id.index()].unwrap_or(id)),
    }
}

pub(super) fn const_field(id: ValueId) -> Ident {
    format_ident!("__rnn_c{}", id.0)
}

pub(super) fn param_field(layer: &ir::Layer, param: ir::ParamId) -> Ident {
    format_ident!("{}", layer.params[param.0 as usize].name)
}

/// The field of a layer's weights struct holding a parameter-only value:
/// the parameter's own name, or `__rnn_c<id>` for a derived constant.
pub(super) fn weight_field(layer: &ir::Layer, id: ValueId) -> Ident {
    match &layer.step.node(id).op {
        Op::Param(param) => param_field(layer, *param),
        _ => const_field(id),
    }
}

/// The field holding a weight matrix packed for the matrix product kernel.
pub(super) fn packed_field(matrix: ValueId) -> Ident {
    format_ident!("__rnn_k{}", matrix.0)
}

/// A value read only by its own pass, when the pass runs as tile
/// operations: its scratch tile.
pub(super) fn scratch_ident(id: ValueId) -> Ident {
    format_ident!("__rnn_t{}", id.0)
}

/// The slice a fused pass binds for a buffer (or constant vector): a
/// state's buffer has one name, whether the pass reads the state or writes
/// its new value into it ([`LayerPlan::home`]).
pub(super) fn binding_ident(layer: &ir::Layer, plan: &LayerPlan, id: ValueId) -> Ident {
    match plan.binding(layer, id) {
        Binding::State(state) => format_ident!("__rnn_sb{}", state),
        Binding::Value(id) => format_ident!("__rnn_b{}", id.0),
    }
}

/// The weights-struct fields run time reads ([`LayerPlan::runtime_weights`]).
pub(super) fn runtime_weight_fields(layer: &ir::Layer, plan: &LayerPlan) -> Vec<Ident> {
    plan.runtime_weights
        .iter()
        .map(|id| weight_field(layer, *id))
        .collect()
}

/// The suffix of a variant's layer function (`__rnn_layer0_static20`).
pub(super) fn variant_suffix(variant: Variant) -> String {
    match variant {
        Variant::Static(steps) => format!("static{steps}"),
        Variant::Dynamic => "dynamic".to_owned(),
        Variant::DynamicBy(steps) => format!("dynamic_by{steps}"),
        Variant::Split => "split".to_owned(),
    }
}

pub(super) fn state_ident(idx: usize) -> Ident {
    format_ident!("__rnn_s{idx}")
}

pub(super) fn input_ident(idx: usize) -> Ident {
    format_ident!("__rnn_in{idx}")
}

impl Cx<'_> {
    pub(super) fn model_ident(&self) -> Ident {
        format_ident!("{}", self.network.name)
    }

    pub(super) fn state_struct(&self) -> Ident {
        format_ident!("{}State", self.network.name)
    }

    pub(super) fn output_struct(&self) -> Ident {
        format_ident!("{}Output", self.network.name)
    }

    pub(super) fn weights_struct(&self, layer_idx: usize) -> Ident {
        format_ident!("__Rnn{}Layer{}", self.network.name, layer_idx)
    }

    pub(super) fn layer_fn(&self, layer_idx: usize, variant: Variant) -> Ident {
        format_ident!("__rnn_layer{}_{}", layer_idx, variant_suffix(variant))
    }
}

//! The names generated code uses: the model's types, and every `__rnn_*`
//! local, field and item, which cannot collide with a user's names.
//!
//! The numbered names are made by the functions below. The fixed ones are
//! written inside `quote!` where they are used; this list is their one
//! registry, and a test fails when `emit` uses a name it does not list.
//!
//! - Numbered, per value, state or input of a layer: `__rnn_v` (a value's
//!   buffer), `__rnn_c` (a derived constant), `__rnn_k` (a packed matrix),
//!   `__rnn_t` (a scratch tile; also the step index), `__rnn_b` and
//!   `__rnn_sb` (a pass's binding of a value, of a state), `__rnn_s` (a
//!   state), `__rnn_in` (an input), `__rnn_g` (a gathered input), `__rnn_l`
//!   (a pass's local), `__rnn_init` and `__rnn_next` (a state's initial and
//!   staged value), `__rnn_net` (a network input), `__rnn_layer` (a layer's builder,
//!   function and weights field).
//! - Items and aliases: `__Rnn` (a layer's weights struct), `__RnnPass` (a
//!   fused pass), `__RnnRun` (a fused run of a training step, whose
//!   bindings are `__rnn_b`, read, and `__rnn_o`, written), `__rnn_rt` (the runtime's `__private`), `__rnn_nd`
//!   (ndarray), `__rnn_run` (every layer over a batch), `__rnn_w` (a layer's
//!   weights), `__rnn_wk` (a layer's weights for every step, with per-step
//!   parameters), `__rnn_all` (every copy of a per-step parameter, as
//!   `__rnn_all_<name>`), `__rnn_workspace` and `__rnn_ws` (the workspace),
//!   `__rnn_threads`.
//! - A call's batch: `__rnn_packing`, `__rnn_batch`, `__rnn_rows`,
//!   `__rnn_lengths`, `__rnn_seq_len`, `__rnn_steps`, `__rnn_max_len`,
//!   `__rnn_variant`, `__rnn_input`, `__rnn_initial`, `__rnn_state`,
//!   `__rnn_final`, `__rnn_y`, `__rnn_ya`, `__rnn_yb`, `__rnn_out`,
//!   `__rnn_outputs`, `__rnn_result`, `__rnn_select`, `__rnn_idx`.
//! - Two threads: `__rnn_split`, `__rnn_halves`, `__rnn_half`,
//!   `__rnn_half_packing`, `__rnn_half_out`, `__rnn_a`, `__rnn_left`,
//!   `__rnn_right`, `__rnn_both`, `__rnn_first`, `__rnn_dir`,
//!   `__rnn_forward_whole`, `__rnn_side`, `__rnn_sides`, `__rnn_exchange`,
//!   `__rnn_columns`, `__rnn_merge`, `__rnn_copies`.
//! - The time loop: `__rnn_n`, `__rnn_off`, `__rnn_place`, `__rnn_step`,
//!   `__rnn_chunk`, `__rnn_hrows`, `__rnn_hbase`, `__rnn_hoff`, `__rnn_end`,
//!   `__rnn_hend`, `__rnn_hflip`, `__rnn_target`, `__rnn_row`,
//!   `__rnn_row_out`.
//! - Inside a pass: `__rnn_r`, `__rnn_p`, `__rnn_h` (the first row of each
//!   kind of buffer), `__rnn_m` (rows in a tile), `__rnn_col`.
//! - Training (`train/`): `__rnn_params` and `__rnn_stamp` (the model's
//!   parameters and which they are), `__rnn_p` (a direction's parameters),
//!   `__rnn_in` and `__rnn_ins` (a layer's cell inputs), `__rnn_tape`,
//!   `__rnn_tapes`, `__rnn_inputs` (what the forward keeps), `__rnn_fin`
//!   (final states), `__rnn_dout`, `__rnn_dout_dir`, `__rnn_ds`,
//!   `__rnn_seed`, `__rnn_din`, `__rnn_dp`, `__rnn_dinit`, `__rnn_dprev`,
//!   `__rnn_dnet`, `__rnn_dy`, `__rnn_grads` (gradients),
//!   `__rnn_one_pass` (the packing of a batch's halves in one pass),
//!   `__rnn_part`, `__rnn_lo` and `__rnn_hi` (a part of the batch a sum
//!   is formed over apart, and its rows at a step), `__rnn_sp` (a sum's
//!   buffers, one per part), `__rnn_pgp` (a tied parameter's gradient formed
//!   at each step, one per part), `__rnn_rows_a`, `__rnn_rows_b` and
//!   `__rnn_rows_v` (a part's rows of a sum's operands),
//!   `__rnn_after_grads` (the gradients formed after the loop, the parts
//!   added), `__rnn_buffer` (a sum's buffer given back),
//!   `__rnn_layer_tape`, `__rnn_slot`, `__rnn_value`, `__rnn_parts` and
//!   `__rnn_buffers` (a tape's halves of the batch and their buffers),
//!   `__rnn_train_whole`, `__rnn_backward_whole` (a call after its checks),
//!   `__rnn_consts` and `__rnn_prepare` (what training reads of the
//!   parameters alone, computed when the model is built), `__rnn_sets`
//!   (those sets as `__rnn_prepare` builds them, per step for a layer with
//!   per-step parameters), `__rnn_per_step` (which of a layer's
//!   parameters are per step), `__rnn_pg` (a parameter's gradient formed
//!   at each step); in a consts function, `__rnn_old` (the set it
//!   replaces) and `__rnn_changed` (the parameters that changed since);
//!   in `update_params`, `__rnn_old` (the parameters before the update),
//!   `__rnn_steps` (a layer's steps that read a changed copy),
//!   `__rnn_changed` (a layer's directions that read a changed
//!   parameter), `__rnn_ks` (those steps' numbers), `__rnn_base` (step
//!   0's constants, built first when a tied parameter changed, which the
//!   other steps share), `__rnn_rebuilt` (a layer's or its steps' weights
//!   built again), `__rnn_weights` (one of them) and `__rnn_set` (a step's
//!   training constants built again).

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

#[cfg(test)]
mod tests {
    /// Every `__rnn_*` name the emitter writes (digits and format
    /// arguments cut off) is in this module's list. A name added without
    /// listing it fails here.
    #[test]
    fn every_generated_name_is_listed() {
        let doc: String = include_str!("idents.rs")
            .lines()
            .take_while(|line| line.starts_with("//!"))
            .collect();
        let sources = [
            include_str!("mod.rs"),
            include_str!("idents.rs"),
            include_str!("model.rs"),
            include_str!("constructors.rs"),
            include_str!("forward.rs"),
            include_str!("layer.rs"),
            include_str!("compute.rs"),
            include_str!("train/mod.rs"),
            include_str!("train/layer.rs"),
            include_str!("train/steps.rs"),
        ];
        let mut unlisted = Vec::new();
        for source in sources {
            for (start, _) in source
                .match_indices("__rnn_")
                .chain(source.match_indices("__Rnn"))
            {
                let name: String = source[start..]
                    .chars()
                    .take_while(|ch| ch.is_ascii_alphabetic() || *ch == '_')
                    .collect();
                let name = name.trim_end_matches('_');
                // The bare prefix is how the docs and this test write it.
                if name != "__rnn"
                    && !doc.contains(&format!("`{name}`"))
                    && !unlisted.contains(&name.to_owned())
                {
                    unlisted.push(name.to_owned());
                }
            }
        }
        assert!(unlisted.is_empty(), "not listed in idents.rs: {unlisted:?}");
    }
}

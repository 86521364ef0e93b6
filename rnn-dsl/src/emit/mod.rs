//! IR + plan → Rust source, with `quote`, formatted by `prettyplease`.
//!
//! Input: an [`ir::Network`](crate::ir::Network) and its
//! [`NetworkPlan`]. Every decision was made by `lower`; this stage only
//! writes it out.
//! Output: a token stream defining, for a network `Tagger`, the model type
//! `Tagger` (weights, `from_safetensors`, `from_weights`, `random`,
//! `forward`, and `step` for unidirectional networks), `TaggerState` and
//! `TaggerOutput`. The time loop depends on the unroll mode: straight-line
//! blocks for `static N` (one per step, guarded by the batch's longest
//! length; past 64 steps one call per step of a single copy of the step,
//! which keeps build time linear), one loop for `dynamic`, a loop of k steps plus the remainder
//! for `dynamic by k`, one straight-line layer function per bucket for
//! `static buckets`. Generated code holds no `unsafe` and allocates nothing
//! inside the time loop.
//!
//! Emission cannot fail: every size and name was decided by `check`.
//!
//! One file per thing written:
//! - `idents.rs`: every name generated code uses (`__rnn_*` locals and
//!   fields, the model's types, layer functions);
//! - `model.rs`: the model, state, output and weights types with their doc
//!   comments, and `impl Model`;
//! - `constructors.rs`: loading weights, `random`, packing, derived
//!   constants;
//! - `forward.rs`: `forward`, `step`, and `__rnn_run` which runs every
//!   layer over a batch (threads, buckets);
//! - `layer.rs`: the time loop of one layer in each [`Variant`];
//! - `compute.rs`: matrix products and fused elementwise passes;
//! - `train/`: with training code asked for, `forward_train`,
//!   `backward`, the tape and gradient types, and each layer's training
//!   functions.

mod compute;
mod constructors;
mod forward;
mod idents;
mod layer;
mod model;
mod train;

use proc_macro2::{Ident, TokenStream};
use quote::format_ident;

use crate::ir::Network;
use crate::lower::{BackwardPlan, LayerPlan, NetworkPlan, Variant};
use crate::names;

/// The generated items of one network, from its plan. `runtime` is the
/// path of the runtime crate in generated code (`::rnn_runtime`).
pub fn emit(network: &Network, plan: &NetworkPlan, runtime: &syn::Path) -> TokenStream {
    let cx = Cx {
        rt: runtime,
        network,
        plans: &plan.layers,
        variants: &plan.variants,
        training: plan.training.as_deref(),
        halves_in_one_pass: plan.halves_in_one_pass,
        groups: state_groups(network),
    };
    cx.emit_network()
}

/// Formats tokens as a Rust file with prettyplease.
///
/// # Panics
///
/// If the tokens are not a valid Rust file: that is an internal error of
/// the generator, never a user error.
pub fn format(tokens: &TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens.clone()).unwrap_or_else(|error| {
        panic!("internal error: generated code does not parse: {error}\n{tokens}")
    });
    prettyplease::unparse(&file)
}

/// A layer statement's states, gathered over its stacked layers: one
/// `[L*D, B, H]` tensor per state.
#[derive(Debug, Clone)]
struct StateGroup {
    /// Field name in the state struct (`h`, or `enc_h` with several layer
    /// statements).
    field: Ident,
    /// Field name in the output struct (`h_n`).
    output_field: Ident,
    /// Tensor name of the initial value (`h0`).
    initial_name: String,
    /// Tensor name of the final value (`h_n`).
    final_name: String,
    /// Rows: layers × directions.
    rows: usize,
    /// State size.
    size: usize,
    /// The layer statement.
    layer_name: String,
    /// The state's index in its cell.
    state_idx: usize,
}

fn state_groups(network: &Network) -> Vec<StateGroup> {
    let several = network
        .layers
        .first()
        .is_some_and(|first| network.layers.iter().any(|layer| layer.name != first.name));
    let mut groups: Vec<StateGroup> = Vec::new();
    for layer in &network.layers {
        if layer.stack_idx != 0 {
            continue;
        }
        let n_stack = network
            .layers
            .iter()
            .filter(|other| other.name == layer.name)
            .count();
        for (state_idx, state) in layer.states.iter().enumerate() {
            let field_name = if several {
                format!("{}_{}", layer.name, state.name)
            } else {
                state.name.clone()
            };
            groups.push(StateGroup {
                field: format_ident!("{}", field_name),
                output_field: format_ident!("{}_n", field_name),
                initial_name: names::initial_state(&layer.prefix, &state.name),
                final_name: names::final_state(&layer.prefix, &state.name),
                rows: n_stack * layer.directions,
                size: state.size,
                layer_name: layer.name.clone(),
                state_idx,
            });
        }
    }
    groups
}

struct Cx<'a> {
    rt: &'a syn::Path,
    network: &'a Network,
    plans: &'a [LayerPlan],
    variants: &'a [Variant],
    /// Each layer's training plan, when training code is asked for.
    training: Option<&'a [BackwardPlan]>,
    /// [`crate::lower::NetworkPlan::halves_in_one_pass`].
    halves_in_one_pass: bool,
    groups: Vec<StateGroup>,
}

impl Cx<'_> {
    /// The group holding state `k` of a layer.
    fn state_group(&self, layer: &crate::ir::Layer, k: usize) -> &StateGroup {
        self.groups
            .iter()
            .find(|group| group.layer_name == layer.name && group.state_idx == k)
            .expect("every state has a group")
    }
}

/// Which columns emitted work computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    /// Every column.
    All,
    /// This thread's side of a split step (`__rnn_side`, `__rnn_columns`;
    /// see [`lower::Split`]).
    Side,
}

/// A whole generated file: the `@generated` header naming the source,
/// then the items, formatted by prettyplease or, for very long static
/// unrollings that are compiled rather than read, as they are (the same
/// code on fewer lines).
pub fn file(items: &TokenStream, source_name: &str, formatted: bool) -> String {
    let header = format!(
        "// @generated by unroll {} from `{source_name}`. Do not edit: edit the model and regenerate.\n\n",
        env!("CARGO_PKG_VERSION")
    );
    if formatted {
        format!("{header}{}", format(items))
    } else {
        format!("{header}{items}\n")
    }
}

//! The plan of a whole network: each layer's plan, and the variants of
//! the time loop its unroll mode asks for.

use crate::check::UnrollMode;
use crate::ir::Network;
use crate::lower::backward::{plan_backward, BackwardPlan};
use crate::lower::{lower, LayerPlan};

/// Bytes of input projections (hoisted values) computed ahead of the time
/// loop at once: the steps are taken in chunks of about this size, so the
/// projections are read back from the cache rather than from memory, and a
/// call holds one chunk of them, not every step's.
pub const HOISTED_CHUNK_BYTES: usize = 512 * 1024;

/// The longest `static N` whose steps are each written out in full; longer
/// ones call one copy of the step N times. Build time grows faster than
/// linearly with the size of the layer function (figures in BENCHMARKS.md),
/// and a copy per step is no faster to run than a call.
pub const STATIC_INLINE_STEPS: usize = 64;

/// The plan of a network.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    /// The plan of each layer, by index.
    pub layers: Vec<LayerPlan>,
    /// The variants of the time loop every layer gets, from the unroll mode
    /// (the split variant, [`Variant::Split`], is added per layer where
    /// [`LayerPlan::split`] says so).
    pub variants: Vec<Variant>,
    /// The training plan of each layer, when training code is asked for.
    pub training: Option<Vec<BackwardPlan>>,
    /// Whether a training call on one thread computes the two halves of a
    /// large batch (`rnn_runtime::Packing::training_halves`) in one pass
    /// over the batch (`Packing::in_one_pass`), when its sequences have one
    /// length: for a network with per-step parameters, whose halves would
    /// each form every step's copy of their gradients in full, to be added
    /// after (measured on W6, BENCHMARKS.md). Other networks run the halves
    /// one after the other, which measured faster for W5's small products.
    pub halves_in_one_pass: bool,
}

/// One way to run the time loop of every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// A fixed number of steps, written out ([`Variant::writes_steps_out`]).
    Static(usize),
    /// A loop over the run-time length.
    Dynamic,
    /// A loop of this many steps written out, then the remainder.
    DynamicBy(usize),
    /// The dynamic loop computing one side's half of the columns of every
    /// step, beside a second thread computing the other ([`crate::lower::Split`]).
    Split,
}

impl Variant {
    /// Whether a static variant writes each step out in full (up to
    /// [`STATIC_INLINE_STEPS`]) rather than calling one copy of the step.
    pub fn writes_steps_out(self) -> bool {
        matches!(self, Variant::Static(steps) if steps <= STATIC_INLINE_STEPS)
    }
}

/// Plans every layer of a network and its time loops, and with
/// `gradients` its training code.
pub fn lower_network(network: &Network, gradients: bool) -> NetworkPlan {
    let variants = match &network.unroll {
        UnrollMode::Static(steps) => vec![Variant::Static(*steps)],
        UnrollMode::Dynamic => vec![Variant::Dynamic],
        UnrollMode::DynamicBy(steps) => vec![Variant::DynamicBy(*steps)],
        UnrollMode::Buckets {
            lengths,
            dynamic_fallback,
        } => {
            let mut variants: Vec<Variant> =
                lengths.iter().map(|len| Variant::Static(*len)).collect();
            if *dynamic_fallback {
                variants.push(Variant::Dynamic);
            }
            variants
        }
    };
    let per_step = network
        .layers
        .iter()
        .any(|layer| layer.params.iter().any(|param| param.steps.is_some()));
    NetworkPlan {
        layers: network.layers.iter().map(lower).collect(),
        variants,
        training: gradients.then(|| network.layers.iter().map(plan_backward).collect()),
        halves_in_one_pass: gradients && per_step,
    }
}

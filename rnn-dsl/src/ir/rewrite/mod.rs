//! Rewrites of each layer's step after build: same values, cheaper to run.
//!
//! Each takes a layer whose step verifies and returns one that verifies
//! and computes the same outputs and updates (up to the rounding that
//! `reassociate_sums` documents). [`crate::ir::build()`] runs them, in
//! the order below, on every layer.

// In execution order; each line says what the rewrite does.
// Products of adjacent row ranges of one matrix with one vector become one product, sliced.
mod merge_row_products;
// Sums are regrouped so that terms that depend on less are added first.
mod reassociate_sums;
// Nodes nothing reads are dropped, and parameters only they read.
mod eliminate_dead;
// States the step never reads are dropped: a stateless cell (a head) has none left.
mod drop_unread_states;

pub(super) use self::drop_unread_states::drop_unread_states;
pub(super) use self::eliminate_dead::eliminate_dead;
pub(super) use self::merge_row_products::merge_row_products;
pub(super) use self::reassociate_sums::reassociate_sums;

use super::{Layer, Model, Network, Op, Step, ValueId};

/// `model` with `rewrite` applied to every layer's step.
pub(super) fn each_step(model: Model, rewrite: fn(Step) -> Step) -> Model {
    each_layer(model, |layer| Layer {
        step: rewrite(layer.step),
        ..layer
    })
}

/// `model` with `rewrite` applied to every layer.
pub(super) fn each_layer(model: Model, rewrite: impl Fn(Layer) -> Layer) -> Model {
    let networks = model
        .networks
        .into_iter()
        .map(|network| Network {
            layers: network.layers.into_iter().map(&rewrite).collect(),
            ..network
        })
        .collect();
    Model { networks }
}

/// The same operation with every operand mapped by `f`.
fn map_operands(op: Op, f: impl Fn(ValueId) -> ValueId) -> Op {
    match op {
        Op::Unary(func, a) => Op::Unary(func, f(a)),
        Op::Binary(func, a, b) => Op::Binary(func, f(a), f(b)),
        Op::Clip(a, b, c) => Op::Clip(f(a), f(b), f(c)),
        Op::MatVec(a, b) => Op::MatVec(f(a), f(b)),
        Op::Transpose(a) => Op::Transpose(f(a)),
        Op::Slice(a, start, end) => Op::Slice(f(a), start, end),
        Op::Row(a, index) => Op::Row(f(a), index),
        Op::Reduce(op, a) => Op::Reduce(op, f(a)),
        Op::Outer(a, b) => Op::Outer(f(a), f(b)),
        Op::SumBatch(a) => Op::SumBatch(f(a)),
        Op::SumElems(a) => Op::SumElems(f(a)),
        Op::Place(a, start, len) => Op::Place(f(a), start, len),
        Op::PlaceRow(a, index, rows) => Op::PlaceRow(f(a), index, rows),
        leaf @ (Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Literal(_) | Op::Seed(_)) => leaf,
    }
}

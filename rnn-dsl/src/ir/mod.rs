//! The IR: one time step of each layer as a batched dataflow graph.
//!
//! Built from the checked model with every size, constant and `if` decided.
//! Each layer of a network (each stacked layer of a `layer` statement) has a
//! [`Step`]: an arena of [`Node`]s in evaluation order, addressed by
//! [`ValueId`]. Values are pure: a node never changes another. Every node
//! knows its [`Shape`] (per sequence; vectors are `[B, n]` at run time) and
//! its [`Dep`]endence, so terms that read only the step's input (`W_ih @
//! x_t`) are marked for hoisting out of the time loop, and terms that read
//! only parameters are computed once.
//!
//! After build: [`verify()`] holds (`ir/verify.rs` lists the invariants);
//! every node feeds an update or the output, and every parameter a layer
//! lists is read by its step (`rewrite/eliminate_dead.rs`), and every
//! state is read by it (`rewrite/drop_unread_states.rs`): a layer whose
//! cell reads no state (a head) has none.

mod build;
mod display;
mod grad;
mod rewrite;
mod types;
mod verify;

pub use self::grad::{differentiate, verify_backward, Backward};
pub use self::types::{
    Dep, Input, Layer, LayerInput, Model, Network, Node, Op, Param, ParamId, Seed, Shape, State,
    Step, ValueId,
};
pub use self::verify::verify;

use crate::check;

/// Builds the IR of every network. Cannot fail: check has decided every
/// size and condition.
///
/// The build, then the rewrites in order (each in its own file under
/// `rewrite/`); in debug builds and tests the verifier runs after each.
pub fn build(model: &check::Model) -> Model {
    // Each layer's step as the cell writes it: numbers folded, `if`s decided.
    let ir = verified(build::build(model), "build");
    // Merge row products first, on the products as written: one `Slice(param, a, b) @ v` a gate.
    let ir = verified(
        rewrite::each_step(ir, rewrite::merge_row_products),
        "merge_row_products",
    );
    // Reassociate sums next; it regroups only additions, so merged products stay as they are.
    let ir = verified(
        rewrite::each_step(ir, rewrite::reassociate_sums),
        "reassociate_sums",
    );
    // Eliminate dead last, to drop what build and both rewrites left unread (and unread params).
    let ir = verified(
        rewrite::each_layer(ir, rewrite::eliminate_dead),
        "eliminate_dead",
    );
    // Drop unread states after, when every state read left is a live one (and eliminate again).
    verified(
        rewrite::each_layer(ir, rewrite::drop_unread_states),
        "drop_unread_states",
    )
}

/// `ir`, verified in debug builds and tests: a violation after `pass` is
/// our bug, never the user's.
fn verified(ir: Model, pass: &str) -> Model {
    if cfg!(debug_assertions) {
        if let Err(problem) = verify(&ir) {
            panic!("internal error: IR verification failed after {pass}: {problem}");
        }
    }
    ir
}

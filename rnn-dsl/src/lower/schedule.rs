//! Passes 2 and 3: sums folded into products, then each phase scheduled as
//! products and fused elementwise passes.

use crate::ir::{self, Op, ValueId};
use crate::lower::{view_root, Place, Work};
use crate::ops::Binary;

/// `out = product + init` (either order) where `product` is a matrix
/// product read by nothing else, computed in the same phase as `out`, and
/// `init` of the same length is either a constant vector (the product
/// accumulates onto rows set to it: the bias of a hoisted input projection)
/// or, for a step sum, a hoisted value read by nothing else (the product
/// accumulates onto the hoisted rows in place: `W_ih x + b + W_hh h` costs
/// no elementwise pass and no copy).
#[derive(Debug, Clone, Copy)]
pub(super) struct Fold {
    pub(super) out: ValueId,
    pub(super) product: ValueId,
    pub(super) init: ValueId,
}

pub(super) fn folds(layer: &ir::Layer, places: &[Place]) -> Vec<Fold> {
    let nodes = &layer.step.nodes;
    let uses = layer.step.uses();
    let mut folds = Vec::new();
    for (idx, node) in nodes.iter().enumerate() {
        let Op::Binary(Binary::Add, a, b) = node.op else {
            continue;
        };
        let place = places[idx];
        if !matches!(place, Place::Context | Place::Hoisted | Place::Step) {
            continue;
        }
        let is_product = |id: ValueId| {
            matches!(nodes[id.index()].op, Op::MatVec(..))
                && places[id.index()] == place
                && uses[id.index()] == 1
        };
        let is_row = |id: ValueId| {
            let init = &nodes[id.index()];
            let hoisted = place == Place::Step
                && places[id.index()] == Place::Hoisted
                && uses[id.index()] == 1;
            (matches!(places[id.index()], Place::Param | Place::Const) || hoisted)
                && init.shape == node.shape
        };
        let (product, init) = if is_product(a) && is_row(b) {
            (a, b)
        } else if is_product(b) && is_row(a) {
            (b, a)
        } else {
            continue;
        };
        folds.push(Fold {
            out: ValueId(idx as u32),
            product,
            init,
        });
    }
    folds
}

/// The work of the nodes placed at `wanted`, in dependency order: runs of
/// elementwise nodes fused, a matrix product moved ahead of the open run
/// when its vector does not come from that run.
pub(super) fn schedule(
    layer: &ir::Layer,
    places: &[Place],
    folds: &[Fold],
    wanted: Place,
) -> Vec<Work> {
    let mut work: Vec<Work> = Vec::new();
    // Index in `work` of the open fused run.
    let mut open: Option<usize> = None;
    for (idx, node) in layer.step.nodes.iter().enumerate() {
        if places[idx] != wanted {
            continue;
        }
        let id = ValueId(idx as u32);
        if folds.iter().any(|fold| fold.product == id) {
            // Computed by the `Add` it folds into.
            continue;
        }
        let fold = folds.iter().find(|fold| fold.out == id);
        let product = match (fold, &node.op) {
            (Some(fold), _) => Some((fold.product, Some(fold.init))),
            (None, Op::MatVec(..)) => Some((id, None)),
            _ => None,
        };
        match product {
            Some((product, init)) => {
                let Op::MatVec(_, vector) = layer.step.node(product).op else {
                    unreachable!("a fold's product is a matrix product")
                };
                let item = Work::MatVec {
                    out: id,
                    product,
                    init,
                };
                let root = view_root(layer, places, vector);
                let in_open = open.is_some_and(|run| match &work[run] {
                    Work::Fused(ids) => ids.contains(&root),
                    Work::MatVec { .. } => false,
                });
                match open {
                    Some(run) if !in_open => {
                        work.insert(run, item);
                        open = Some(run + 1);
                    }
                    _ => {
                        work.push(item);
                        open = None;
                    }
                }
            }
            None => match open {
                Some(run) => {
                    if let Work::Fused(ids) = &mut work[run] {
                        ids.push(id);
                    }
                }
                None => {
                    work.push(Work::Fused(vec![id]));
                    open = Some(work.len() - 1);
                }
            },
        }
    }
    work
}

//! How each fused pass runs: in blocks of lanes, or as tile operations
//! (and then how many rows a tile holds).

use crate::ir::{self, Op, Shape, ValueId};
use crate::lower::{Binding, LayerPlan, Place, Work};

/// Bytes of scratch tiles a fused pass aims for. Fewer rows per tile mean
/// more calls per step (one per operation and tile); more mean scratch
/// spilling from L1 to L2, which costs less, up to a point (the sizes tried
/// are in BENCHMARKS.md).
pub const SCRATCH_TILE_BYTES: usize = 64 * 1024;

/// The columns of every node of a fused pass that can run in blocks of
/// lanes (`emit::compute`): all nodes of one width `w`, and
/// every operand a value of this pass (all of it), a literal, or `w`
/// columns (or one, broadcast) of a value computed elsewhere that this
/// pass does not write (or reads in place, all of it: a state updated
/// in place), and no reduction (it reads whole rows). Otherwise the pass
/// runs as tile operations.
///
/// This is also the rule that makes writing a state in place safe: a pass
/// in lanes computes every node of one block of columns before the next
/// block, so it may overwrite a state it reads only when it reads all of
/// it, at the same columns it writes ([`LayerPlan::home`]).
pub fn lanes_width(layer: &ir::Layer, plan: &LayerPlan, ids: &[ValueId]) -> Option<usize> {
    let width = |id: ValueId| match layer.step.node(id).shape {
        Shape::Vector(len) => len,
        _ => 1,
    };
    let w = width(*ids.first()?);
    if ids.iter().any(|id| width(*id) != w) {
        return None;
    }
    // A reduction reads whole rows, not a block of columns.
    if ids
        .iter()
        .any(|id| matches!(layer.step.node(*id).op, Op::Reduce(..)))
    {
        return None;
    }
    let written: Vec<Binding> = ids
        .iter()
        .filter(|id| !plan.scratch[id.index()])
        .map(|id| plan.binding(layer, *id))
        .collect();
    for id in ids {
        for operand in layer.step.node(*id).op.operands() {
            let (root, start, end) = operand_columns(layer, plan, operand);
            if plan.place(root) == Place::Literal {
                continue;
            }
            let full = start == 0 && end == width(root);
            if ids.contains(&root) {
                if !full || end != w {
                    return None;
                }
                continue;
            }
            if plan.scratch[root.index()] || (end - start != w && end - start != 1) {
                return None;
            }
            let in_place = written.contains(&plan.binding(layer, root));
            if in_place && !(full && end == w) {
                return None;
            }
        }
    }
    Some(w)
}

/// [`LayerPlan::pass_stores_output`]: the step pass computing the output
/// runs in blocks of lanes as wide as the layer's output (so the output is
/// not a view of a wider value).
pub fn pass_stores_output(layer: &ir::Layer, plan: &LayerPlan) -> bool {
    plan.step.iter().any(|work| {
        matches!(work, Work::Fused(ids)
            if ids.contains(&layer.step.output) && plan.lanes_of(ids) == Some(layer.output_size))
    })
}

/// The lane width of each node's pass ([`LayerPlan::lanes`]).
pub fn lanes(layer: &ir::Layer, plan: &LayerPlan) -> Vec<Option<usize>> {
    let mut lanes = vec![None; layer.step.nodes.len()];
    for work in [&plan.context, &plan.hoisted, &plan.step]
        .into_iter()
        .flatten()
    {
        if let Work::Fused(ids) = work {
            let width = lanes_width(layer, plan, ids);
            for id in ids {
                lanes[id.index()] = width;
            }
        }
    }
    lanes
}

/// The value under a chain of column views, and the columns read.
pub fn operand_columns(
    layer: &ir::Layer,
    plan: &LayerPlan,
    mut id: ValueId,
) -> (ValueId, usize, usize) {
    let mut cols: Option<(usize, usize)> = None;
    loop {
        let node = layer.step.node(id);
        match (&node.op, plan.place(id)) {
            (Op::Slice(inner, start, end), Place::View) => {
                cols = Some(match cols {
                    Some((a, b)) => (start + a, start + b),
                    None => (*start, *end),
                });
                id = *inner;
            }
            _ => {
                let full = match node.shape {
                    Shape::Vector(len) => len,
                    _ => 1,
                };
                let (start, end) = cols.unwrap_or((0, full));
                return (id, start, end);
            }
        }
    }
}

/// Rows per tile of a layer's fused passes run as tile operations: as
/// many as keep the scratch tiles of its widest such pass within
/// [`SCRATCH_TILE_BYTES`] (1 to 32).
pub fn tile_rows(layer: &ir::Layer, plan: &LayerPlan) -> usize {
    let widest: usize = [&plan.context, &plan.hoisted, &plan.step]
        .into_iter()
        .flatten()
        .filter_map(|work| match work {
            Work::Fused(ids) if plan.lanes_of(ids).is_none() => Some(
                ids.iter()
                    .filter(|id| plan.scratch[id.index()])
                    .map(|id| match layer.step.node(*id).shape {
                        Shape::Vector(len) => len,
                        _ => 1,
                    })
                    .sum::<usize>(),
            ),
            Work::Fused(_) | Work::MatVec { .. } => None,
        })
        .max()
        .unwrap_or(0);
    (SCRATCH_TILE_BYTES / (4 * widest.max(1))).clamp(1, 32)
}

//! The weights a layer keeps at run time, and its products' work.

use crate::check::Precision;
use crate::ir::{self, Op, Shape, ValueId};
use crate::lower::{view_root, LayerPlan, Place, Work};

/// [`LayerPlan::packed`].
pub fn packed_matrices(layer: &ir::Layer, plan: &LayerPlan) -> Vec<ValueId> {
    let mut matrices = Vec::new();
    for (idx, node) in layer.step.nodes.iter().enumerate() {
        if let Op::MatVec(matrix, _) = node.op {
            if !plan.places[idx].is_const() && !matrices.contains(&matrix) {
                matrices.push(matrix);
            }
        }
    }
    matrices
}

/// [`LayerPlan::reduced`].
pub fn reduced_matrices(layer: &ir::Layer, plan: &LayerPlan) -> Vec<bool> {
    let per_step = |matrix: ValueId| {
        plan.step.iter().any(|work| match work {
            Work::MatVec { product, .. } => {
                matches!(layer.step.node(*product).op, Op::MatVec(read, _) if read == matrix)
            }
            Work::Fused(_) => false,
        })
    };
    plan.packed
        .iter()
        .map(|matrix| match plan.precision {
            None => false,
            Some(Precision::Bf16) => true,
            Some(Precision::Int8) => per_step(*matrix),
        })
        .collect()
}

/// [`LayerPlan::macs_per_row`].
pub fn macs_per_row(layer: &ir::Layer, plan: &LayerPlan) -> usize {
    plan.packed
        .iter()
        .map(|matrix| match layer.step.node(*matrix).shape {
            Shape::Matrix(rows, cols) => rows * cols,
            _ => 0,
        })
        .sum()
}

/// [`LayerPlan::runtime_weights`]: a parameter read in several places is
/// listed once.
pub fn runtime_weights(layer: &ir::Layer, plan: &LayerPlan) -> Vec<ValueId> {
    let mut ids: Vec<ValueId> = Vec::new();
    for work in [&plan.context, &plan.hoisted, &plan.step]
        .into_iter()
        .flatten()
    {
        match work {
            Work::Fused(fused) => {
                for id in fused {
                    for operand in layer.step.node(*id).op.operands() {
                        ids.push(view_root(layer, &plan.places, operand));
                    }
                }
            }
            Work::MatVec { init, .. } => ids.extend(*init),
        }
    }
    ids.push(layer.step.output);
    ids.extend(layer.step.updates.iter().copied());
    // Two nodes of one parameter are one field.
    let key = |id: ValueId| match layer.step.node(id).op {
        Op::Param(param) => (true, param.0),
        _ => (false, id.0),
    };
    let mut kept: Vec<ValueId> = Vec::new();
    for id in ids {
        if matches!(plan.place(id), Place::Param | Place::Const)
            && !kept.iter().any(|other| key(*other) == key(id))
        {
            kept.push(id);
        }
    }
    kept
}

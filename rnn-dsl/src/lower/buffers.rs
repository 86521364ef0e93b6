//! Buffers: which values need no buffer of their own (scratch), which
//! state updates are written in place (homes), whether a layer reads its
//! inputs after the hoisted work; once the passes are decided, the buffers
//! the layer function allocates and the states staged before writing.

use crate::ir::{self, Op, Shape, ValueId};
use crate::lower::{view_root, Buffer, LayerPlan, Place, Work};

/// Which values are read only inside their own fused run: not by another
/// run, a matrix product, or as the step's output or a state's update.
pub(super) fn scratch_values(
    layer: &ir::Layer,
    places: &[Place],
    phases: [&Vec<Work>; 3],
) -> Vec<bool> {
    let len = layer.step.nodes.len();
    // The fused run of each value, numbered across phases.
    let mut run_of: Vec<Option<usize>> = vec![None; len];
    let mut scratch = vec![false; len];
    let runs = phases
        .iter()
        .flat_map(|work| work.iter())
        .filter_map(|work| match work {
            Work::Fused(ids) => Some(ids),
            Work::MatVec { .. } => None,
        });
    for (run, ids) in runs.enumerate() {
        for id in ids {
            run_of[id.index()] = Some(run);
            scratch[id.index()] = true;
        }
    }
    for (idx, node) in layer.step.nodes.iter().enumerate() {
        if !matches!(places[idx], Place::Context | Place::Hoisted | Place::Step) {
            continue;
        }
        for operand in node.op.operands() {
            let root = view_root(layer, places, operand);
            if run_of[root.index()].is_some() && run_of[root.index()] != run_of[idx] {
                scratch[root.index()] = false;
            }
        }
    }
    let results = std::iter::once(layer.step.output).chain(layer.step.updates.iter().copied());
    for id in results {
        scratch[view_root(layer, places, id).index()] = false;
    }
    scratch
}

/// Which step values are written straight into their state: state `k`'s
/// new value `u`, computed by a fused pass of the step, when nothing reads
/// the old value of state `k` from the operation computing `u` on (in that
/// pass, in later work of the step, or as the step's output or another
/// state's update). Within a pass each operation reads the old value of a
/// row before the row is written: a pass in tiles runs each operation on
/// whole rows, and a pass in blocks of lanes runs every operation on one
/// block of columns, which [`passes::lanes_width`] allows only when the
/// pass reads the state at those same columns.
pub(super) fn state_homes(
    layer: &ir::Layer,
    places: &[Place],
    step_work: &[Work],
) -> Vec<Option<usize>> {
    let step = &layer.step;
    let mut home = vec![None; step.nodes.len()];
    let reads_state = |id: ValueId, k: usize| matches!(step.node(view_root(layer, places, id)).op, Op::State(state) if state == k);
    let work_reads_state = |work: &Work, k: usize| match work {
        Work::Fused(ids) => ids.iter().any(|id| {
            step.node(*id)
                .op
                .operands()
                .iter()
                .any(|o| reads_state(*o, k))
        }),
        Work::MatVec { product, init, .. } => {
            step.node(*product)
                .op
                .operands()
                .iter()
                .any(|o| reads_state(*o, k))
                || init.is_some_and(|init| reads_state(init, k))
        }
    };
    for (k, &update) in step.updates.iter().enumerate() {
        let shared = step
            .updates
            .iter()
            .filter(|other| **other == update)
            .count()
            > 1;
        let results_read_state = std::iter::once(step.output)
            .chain(step.updates.iter().copied())
            .any(|result| result != update && reads_state(result, k));
        if shared || results_read_state || places[update.index()] != Place::Step {
            continue;
        }
        let found = step_work
            .iter()
            .enumerate()
            .find_map(|(idx, work)| match work {
                Work::Fused(ids) => ids
                    .iter()
                    .position(|id| *id == update)
                    .map(|pos| (idx, pos)),
                Work::MatVec { .. } => None,
            });
        let Some((run, position)) = found else {
            continue;
        };
        let Work::Fused(ids) = &step_work[run] else {
            unreachable!("found in a fused run")
        };
        let read_later_in_run = ids[position..].iter().any(|id| {
            step.node(*id)
                .op
                .operands()
                .iter()
                .any(|o| reads_state(*o, k))
        });
        let read_later = step_work[run + 1..]
            .iter()
            .any(|work| work_reads_state(work, k));
        if !read_later_in_run && !read_later {
            home[update.index()] = Some(k);
        }
    }
    home
}

/// Whether a per-step input is read after the hoisted work: by a value
/// computed per call or per step, or as the output or an update.
pub(super) fn reads_inputs_late(layer: &ir::Layer, places: &[Place]) -> bool {
    let step = &layer.step;
    let reads_step_input = |id: ValueId| {
        let root = view_root(layer, places, id);
        matches!(step.node(root).op, Op::Input(k) if layer.inputs[k].per_step)
    };
    let by_values = step
        .nodes
        .iter()
        .enumerate()
        .filter(|(idx, _)| matches!(places[*idx], Place::Context | Place::Step))
        .any(|(_, node)| node.op.operands().into_iter().any(reads_step_input));
    let results = std::iter::once(step.output).chain(step.updates.iter().copied());
    by_values || results.into_iter().any(reads_step_input)
}

/// The buffers of a layer function's computed values ([`LayerPlan::buffers`]):
/// none for values in registers (read only by a pass in lanes), folded
/// products, values living in another's buffer or in their state.
pub(super) fn buffers(layer: &ir::Layer, plan: &LayerPlan) -> Vec<(ValueId, Buffer)> {
    let mut in_registers = vec![false; layer.step.nodes.len()];
    for work in [&plan.context, &plan.hoisted, &plan.step]
        .into_iter()
        .flatten()
    {
        if let Work::Fused(ids) = work {
            if plan.lanes_of(ids).is_some() {
                ids.iter().for_each(|id| in_registers[id.index()] = true);
            }
        }
    }
    let mut buffers = Vec::new();
    for (idx, node) in layer.step.nodes.iter().enumerate() {
        let id = ValueId(idx as u32);
        let place = plan.place(id);
        if !matches!(place, Place::Context | Place::Hoisted | Place::Step) {
            continue;
        }
        if plan.folded[idx] || plan.alias[idx].is_some() || plan.home[idx].is_some() {
            continue;
        }
        let Shape::Vector(width) = node.shape else {
            unreachable!("per-sequence values are vectors")
        };
        if plan.scratch[idx] {
            if !in_registers[idx] {
                buffers.push((id, Buffer::Tile { width }));
            }
            continue;
        }
        let hoisted = place == Place::Hoisted;
        buffers.push((id, Buffer::Rows { hoisted, width }));
    }
    buffers
}

/// The states whose new value is another state read as it was (`h = c;
/// c = h;`): their new values are copied aside before any state is
/// written ([`LayerPlan::staged_states`]).
pub(super) fn staged_states(layer: &ir::Layer, plan: &LayerPlan) -> Vec<usize> {
    (0..layer.states.len())
        .filter(|k| reads_state_directly(layer, plan, layer.step.updates[*k]))
        .collect()
}

/// Whether a value is a state's buffer itself (possibly a column range).
fn reads_state_directly(layer: &ir::Layer, plan: &LayerPlan, id: ValueId) -> bool {
    match (&layer.step.node(id).op, plan.place(id)) {
        (Op::State(_), _) => true,
        (Op::Slice(inner, _, _), Place::View) => reads_state_directly(layer, plan, *inner),
        _ => false,
    }
}

/// Floats per row of the hoisted values that have buffers of their own: the
/// size of a chunk of steps is measured in these rows.
pub(super) fn hoisted_row_width(layer: &ir::Layer, plan: &LayerPlan) -> usize {
    layer
        .step
        .nodes
        .iter()
        .enumerate()
        .filter(|(idx, _)| {
            plan.places[*idx] == Place::Hoisted && !plan.folded[*idx] && !plan.scratch[*idx]
        })
        .map(|(_, node)| match node.shape {
            Shape::Vector(len) => len,
            _ => 1,
        })
        .sum()
}

//! IR → execution plan: where each value of a layer's step lives and when
//! it is computed.
//!
//! Input: an [`ir::Layer`]. Output: a [`Place`] per node. After lower:
//! parameter-only values are computed once when the model is built
//! ([`Place::Const`]); values that read contexts once per call
//! ([`Place::Context`]); values that read only the step's input for all
//! steps at once before the time loop, as one matrix product over every
//! valid step of every sequence ([`Place::Hoisted`]); only what reads the
//! state is computed step by step ([`Place::Step`]). Slices of computed
//! values are views, never copies ([`Place::View`]).

use crate::ir::{self, Dep, Op, Shape, ValueId};

/// Where a value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A number, written into the code.
    Literal,
    /// A weight tensor.
    Param,
    /// Derived from weights when the model is built.
    Const,
    /// The layer's input (packed rows for a per-step input, one row per
    /// sequence for a context).
    Input,
    /// A state buffer, one row per sequence.
    State,
    /// Computed once per call, one row per sequence.
    Context,
    /// Computed before the time loop, one row per valid step of each
    /// sequence.
    Hoisted,
    /// Computed each step, one row per running sequence.
    Step,
    /// A range of columns of another value.
    View,
}

impl Place {
    /// Whether the value is the same for every sequence and step.
    pub fn is_const(self) -> bool {
        matches!(self, Place::Literal | Place::Param | Place::Const)
    }

    /// Whether the value has one row per valid step (rather than one per
    /// sequence).
    pub fn per_step_rows(self) -> bool {
        matches!(self, Place::Hoisted)
    }
}

/// The plan of one layer.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    /// The place of each node, by [`ValueId`].
    pub places: Vec<Place>,
    /// For each node, whether its rows are per valid step (packed, like a
    /// per-step input) rather than per sequence.
    pub packed_rows: Vec<bool>,
}

impl LayerPlan {
    /// The place of a value.
    pub fn place(&self, id: ValueId) -> Place {
        self.places[id.index()]
    }
}

/// Plans one layer.
pub fn lower(layer: &ir::Layer) -> LayerPlan {
    let step = &layer.step;
    let mut places: Vec<Place> = Vec::with_capacity(step.nodes.len());
    let mut packed_rows: Vec<bool> = Vec::with_capacity(step.nodes.len());
    for node in &step.nodes {
        let operands = node.op.operands();
        let any_packed = operands.iter().any(|id| packed_rows[id.index()]);
        let any_per_sequence = operands
            .iter()
            .any(|id: &ValueId| !places[id.index()].is_const() && !packed_rows[id.index()]);
        let (place, packed) = match &node.op {
            Op::Literal(_) if node.shape == Shape::Scalar => (Place::Literal, false),
            Op::Literal(_) => (Place::Const, false),
            Op::Param(_) => (Place::Param, false),
            Op::Input(k) => (Place::Input, layer.inputs[*k].per_step),
            Op::State(_) => (Place::State, false),
            Op::Row(..) => (Place::Const, false),
            Op::Slice(base, _, _) => {
                let base_place: Place = places[base.index()];
                if base_place.is_const() {
                    (Place::Const, false)
                } else {
                    (Place::View, packed_rows[base.index()])
                }
            }
            _ => match node.dep {
                Dep::Const => (Place::Const, false),
                Dep::Context => (Place::Context, false),
                // Input-only values that also read a context, or a value
                // computed per sequence, cannot be laid out per step.
                Dep::Input if any_packed && !any_per_sequence => (Place::Hoisted, true),
                Dep::Input | Dep::State => (Place::Step, false),
            },
        };
        places.push(place);
        packed_rows.push(packed);
    }
    LayerPlan {
        places,
        packed_rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceFile;

    #[test]
    fn lstm_hoists_the_input_projection_and_steps_the_rest() {
        let compiled = crate::compile(SourceFile::new(
            "t.rnn",
            "network N { input x: [3]; layer l = lstm(hidden = 4); unroll dynamic; }",
        ))
        .expect("compiles");
        let layer = &compiled.model.networks[0].layers[0];
        let plan = lower(layer);
        let matvecs: Vec<Place> = layer
            .step
            .nodes
            .iter()
            .zip(&plan.places)
            .filter(|(node, _)| matches!(node.op, Op::MatVec(..)))
            .map(|(_, place)| *place)
            .collect();
        assert_eq!(matvecs, vec![Place::Hoisted, Place::Step]);
        assert!(plan.places.iter().all(|place| *place != Place::Context));
    }
}

//! Which layers run each step on two threads, half the columns each.

use crate::ir::{self, Op, Shape, ValueId};
use crate::lower::passes::operand_columns;
use crate::lower::{LayerPlan, Place, Work};

/// How the two threads of a split step share it (the runtime's `split`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The width of the layer's units ([`split_width`]); each side computes
    /// half of every block of this many columns.
    pub width: usize,
    /// The states the step's products read, which the sides trade after
    /// every step ([`split_traded_states`]).
    pub traded_states: Vec<usize>,
}

/// The split of a layer of one direction whose step two threads can
/// share; the two directions of a bidirectional layer already run side by
/// side. A layer with per-step parameters does not split (yet): each side
/// would take its step's weights.
pub fn split(layer: &ir::Layer, plan: &LayerPlan) -> Option<Split> {
    if layer.directions != 1 || layer.steps().is_some() {
        return None;
    }
    split_width(layer, plan).map(|width| Split {
        width,
        traded_states: split_traded_states(layer, plan),
    })
}

/// What the bounds of a split step must be multiples of: the runtime's
/// `Columns::ALIGN`, the widest panel of its packed products.
pub const SPLIT_ALIGN: usize = 64;

/// The width `w` of a layer's units when two threads can share each step
/// (the runtime's `split`), each computing the columns of its half of the
/// units: of each value `w` wide, and of each product's every block of `w`
/// (the gates). `None` unless
///
/// - `w` halves into multiples of [`SPLIT_ALIGN`], and every state is `w`
///   wide and updated in place by a pass, which also stores the output;
/// - the input-only work is products (of whole inputs), and the step's is
///   products of whole states and passes of width `w` in blocks of lanes;
/// - the passes read values computed before them (products, other passes)
///   only in blocks of `w` columns starting at multiples of `w`, the
///   columns each side has computed itself.
///
/// The states are whole on both sides at the start of each step (the
/// sides trade their halves after it), as are inputs, contexts and weights.
pub fn split_width(layer: &ir::Layer, plan: &LayerPlan) -> Option<usize> {
    let w = layer.output_size;
    if w == 0
        || !w.is_multiple_of(2 * SPLIT_ALIGN)
        || layer.states.iter().any(|state| state.size != w)
    {
        return None;
    }
    let updated_in_place =
        (0..layer.states.len()).all(|k| plan.home[layer.step.updates[k].index()] == Some(k));
    let whole = |id: ValueId, places: &[Place]| {
        let (root, start, end) = operand_columns(layer, plan, id);
        let full = match layer.step.node(root).shape {
            Shape::Vector(len) => len,
            _ => 1,
        };
        start == 0 && end == full && places.contains(&plan.place(root))
    };
    let hoisted_ok = plan.hoisted.iter().all(|work| match work {
        Work::MatVec { product, .. } => match layer.step.node(*product).op {
            Op::MatVec(_, vector) => whole(vector, &[Place::Input]),
            _ => false,
        },
        Work::Fused(_) => false,
    });
    let step_ok = plan.step.iter().all(|work| match work {
        Work::MatVec { product, .. } => match layer.step.node(*product).op {
            Op::MatVec(_, vector) => whole(vector, &[Place::State, Place::Input, Place::Context]),
            _ => false,
        },
        Work::Fused(ids) => {
            plan.lanes_of(ids) == Some(w)
                && ids.iter().all(|id| {
                    layer.step.node(*id).op.operands().iter().all(|operand| {
                        let (root, start, end) = operand_columns(layer, plan, *operand);
                        let computed = matches!(plan.place(root), Place::Hoisted | Place::Step);
                        ids.contains(&root)
                            || !computed
                            || (start.is_multiple_of(w) && end - start == w)
                    })
                })
        }
    });
    (updated_in_place && hoisted_ok && step_ok && plan.pass_stores_output).then_some(w)
}

/// The states a split step's products read: the ones its two sides trade
/// after each step (the others each side reads only in its own columns;
/// their halves are merged once, at the end).
pub fn split_traded_states(layer: &ir::Layer, plan: &LayerPlan) -> Vec<usize> {
    let mut traded: Vec<usize> = plan
        .step
        .iter()
        .filter_map(|work| match work {
            Work::MatVec { product, .. } => match layer.step.node(*product).op {
                Op::MatVec(_, vector) => {
                    let (root, _, _) = operand_columns(layer, plan, vector);
                    match layer.step.node(root).op {
                        Op::State(k) => Some(k),
                        _ => None,
                    }
                }
                _ => None,
            },
            Work::Fused(_) => None,
        })
        .collect();
    traded.sort_unstable();
    traded.dedup();
    traded
}

#[cfg(test)]
mod tests {
    use crate::SourceFile;

    /// Whether the plan of the first layer of the one network in `text`
    /// splits its steps.
    fn splits(text: &str) -> bool {
        let compiled = crate::compile(SourceFile::new("split.rnn", text))
            .unwrap_or_else(|error| panic!("{text} does not compile: {error}"));
        let layer = &compiled.model.networks[0].layers[0];
        crate::lower::lower(layer).split.is_some()
    }

    #[test]
    fn steps_split_only_where_each_side_computes_what_it_reads() {
        let network = |layer: &str| {
            format!("network N {{ input x: [8]; layer l = {layer}; unroll dynamic; }}")
        };
        for layer in [
            "lstm(hidden = 128)",
            "lstm(hidden = 256, layers = 2)",
            "gru(hidden = 128)",
            "rnn_tanh(hidden = 384)",
        ] {
            assert!(splits(&network(layer)), "{layer} splits");
        }
        for layer in [
            // Halves that are not whole 64-column panels.
            "lstm(hidden = 96)",
            "gru(hidden = 64)",
            // Two directions already run side by side.
            "lstm(hidden = 128, bidirectional)",
            // A product of `r * h`, computed in the step.
            "gru(hidden = 128, reset_after = false)",
        ] {
            assert!(!splits(&network(layer)), "{layer} does not split");
        }
        let cell = |body: &str| {
            format!(
                "cell c(x: [I]) -> h: [H] {{ {body} }}
                 network N {{ input x: [8]; layer l = c(hidden = 128); unroll dynamic; }}"
            )
        };
        // Elementwise only, beside the input's product: nothing to trade.
        assert!(splits(&cell("param w: [H, I]; h = tanh(w @ x + 0.5 * h);")));
        for (body, why) in [
            (
                "param w: [H, I]; param u: [H, H]; param v: [1, H];
                 let g = sigmoid(v @ h); h = g * tanh(w @ x + u @ h) + (1 - g) * h;",
                "a pass mixing widths 1 and H",
            ),
            (
                "param w: [H, I]; param u: [H, H]; h = tanh(w @ x + u @ h + h[0..1] * h);",
                "one column of the state read by every unit",
            ),
        ] {
            assert!(!splits(&cell(body)), "{why}");
        }
        // A product read from a column that is not a multiple of the width.
        let offset = |start: usize| {
            format!(
                "cell c(x: [8]) -> h: [128] {{
                     param w: [128, 8]; param u: [256, 128];
                     let z = u @ h; h = tanh(w @ x + z[{start}..{}]);
                 }}
                 network N {{ input x: [8]; layer l = c(); unroll dynamic; }}",
                start + 128
            )
        };
        assert!(splits(&offset(128)));
        assert!(!splits(&offset(64)));
    }
}

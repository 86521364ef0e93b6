//! Sums are regrouped so that terms that depend on less are added first.
//!
//! Input: a step, after `merge_row_products`. Output: the same step where
//! each addition of equal-shaped vectors that reaches, through sums nothing
//! else reads, a term depending on more than the other side has that term
//! added last: `((W_ih x + b_ih) + W_hh h) + b_hh` becomes
//! `(W_ih x + (b_ih + b_hh)) + W_hh h`. The sums it replaces are left
//! unread, for `eliminate_dead`.
//!
//! After: in each sum it regroups, the term added last is one that depends
//! on the most, so the terms before it can be added earlier.
//!
//! Why: the biases' sum is then computed once, `W_ih x + …` before the time
//! loop, and only the last addition per step (see [`reassociate_sums`] for
//! the rounding this costs).

use crate::ir::{Node, Op, Step, ValueId};
use crate::ops::Binary;

use super::map_operands;

/// Sums are regrouped so that terms that depend on less are added first:
/// `((W_ih x + b_ih) + W_hh h) + b_hh` becomes `(W_ih x + (b_ih + b_hh)) +
/// W_hh h`, where `b_ih + b_hh` is computed once when the model is built,
/// `W_ih x + …` before the time loop, and only the last addition per step —
/// which the plan then turns into the product accumulating onto the hoisted
/// row ([`crate::lower`]). Only additions of equal-shaped vectors are
/// regrouped, and only through intermediate sums nothing else reads.
///
/// Floating-point addition is not associative: a regrouped sum can differ
/// from the written order in the last bits (at most one rounding per moved
/// term, like any reordering of a sum; the interpreter runs the same IR, and
/// both are checked against the conformance fixtures).
pub(in crate::ir) fn reassociate_sums(step: Step) -> Step {
    let uses = step.uses();
    let mut sums = SumBuilder {
        nodes: Vec::with_capacity(step.nodes.len()),
        private: Vec::with_capacity(step.nodes.len()),
    };
    let mut value_map: Vec<ValueId> = Vec::with_capacity(step.nodes.len());
    for (idx, node) in step.nodes.iter().enumerate() {
        let op = map_operands(node.op.clone(), |operand| value_map[operand.index()]);
        let id = match op {
            Op::Binary(Binary::Add, a, b) => sums.add(a, b, node),
            op => sums.push(Node { op, ..node.clone() }),
        };
        sums.private[id.index()] = uses[idx] == 1;
        value_map.push(id);
    }
    step.rebuilt(sums.nodes, &value_map)
}

/// The arena being rebuilt by [`reassociate_sums`].
struct SumBuilder {
    nodes: Vec<Node>,
    /// Whether a value is read by one node only (so it may be regrouped).
    private: Vec<bool>,
}

impl SumBuilder {
    fn push(&mut self, node: Node) -> ValueId {
        self.nodes.push(node);
        self.private.push(false);
        ValueId((self.nodes.len() - 1) as u32)
    }

    /// A private sum `x + y` of vectors shaped like `like`, as its terms.
    fn terms(&self, id: ValueId, like: &Node) -> Option<(ValueId, ValueId)> {
        let node = &self.nodes[id.index()];
        match node.op {
            Op::Binary(Binary::Add, x, y)
                if self.private[id.index()]
                    && node.shape == like.shape
                    && [x, y]
                        .iter()
                        .all(|term| self.nodes[term.index()].shape == like.shape) =>
            {
                Some((x, y))
            }
            _ => None,
        }
    }

    /// `a + b` (the node `like` written in the source), regrouped: when
    /// one side is a private sum with a term that depends on more than the
    /// other side, that term is added last.
    fn add(&mut self, a: ValueId, b: ValueId, like: &Node) -> ValueId {
        let dep = |id: ValueId| self.nodes[id.index()].dep;
        // Addition commutes exactly: look into whichever side is a sum.
        let split = match (self.terms(a, like), self.terms(b, like)) {
            (Some(terms), _) => Some((terms, b)),
            (None, Some(terms)) => Some((terms, a)),
            (None, None) => None,
        };
        if let Some(((x, y), term)) = split {
            let (low, high) = if dep(x) <= dep(y) { (x, y) } else { (y, x) };
            let same_shape = self.nodes[term.index()].shape == like.shape;
            if same_shape && dep(high) > dep(term) {
                // (low + high) + term = (low + term) + high: `term` joins
                // what is computed earlier (before the loop, or once).
                let inner = self.add(low, term, like);
                self.private[inner.index()] = true;
                return self.push_add(inner, high, like);
            }
        }
        self.push_add(a, b, like)
    }

    fn push_add(&mut self, a: ValueId, b: ValueId, like: &Node) -> ValueId {
        let dep = self.nodes[a.index()].dep.max(self.nodes[b.index()].dep);
        self.push(Node {
            op: Op::Binary(Binary::Add, a, b),
            dep,
            ..like.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{Dep, Op, Shape, Step, ValueId};
    use crate::ops::Binary;
    use crate::SourceFile;

    fn step_of(source: &str) -> Step {
        let compiled = crate::compile(SourceFile::new("t.rnn", source)).expect("compiles");
        compiled.model.networks[0].layers[0].step.clone()
    }

    /// The terms of a sum, as (dependence, operation) in evaluation order,
    /// with nested sums flattened left to right.
    fn terms(step: &Step, id: ValueId) -> Vec<(Dep, String)> {
        let node = step.node(id);
        match node.op {
            Op::Binary(Binary::Add, ..) if node.dep == Dep::Const => {
                vec![(Dep::Const, "const".into())]
            }
            Op::Binary(Binary::Add, a, b) => {
                let mut out = terms(step, a);
                out.extend(terms(step, b));
                out
            }
            ref op => vec![(
                node.dep,
                format!("{op:?}").split('(').next().unwrap().into(),
            )],
        }
    }

    #[test]
    fn lstm_gate_sums_add_the_biases_first_and_the_recurrent_product_last() {
        let step =
            step_of("network N { input x: [3]; layer l = lstm(hidden = 4); unroll dynamic; }");
        // The gates: one sum of four terms, regrouped.
        let gates = step
            .nodes
            .iter()
            .enumerate()
            .rev()
            .find(|(_, node)| {
                matches!(node.op, Op::Binary(Binary::Add, ..)) && node.shape == Shape::Vector(16)
            })
            .map(|(idx, _)| ValueId(idx as u32))
            .expect("a gate sum");
        assert_eq!(
            terms(&step, gates),
            vec![
                (Dep::Const, "const".to_string()),
                (Dep::Input, "MatVec".to_string()),
                (Dep::State, "MatVec".to_string()),
            ]
        );
    }

    #[test]
    fn a_sum_read_twice_keeps_its_grouping() {
        let step = step_of(
            "cell c(x: [I]) -> h: [H] { param w: [H, I]; param u: [H, H]; param b: [H];
                 let s = w @ x + u @ h; h = tanh(s + b) + s; }
             network N { input x: [3]; layer l = c(hidden = 4); unroll dynamic; }",
        );
        // `s + b` still adds `b` to `s`: regrouping would compute `w @ x`
        // twice (once inside `s`, once in `(w @ x + b) + u @ h`).
        let sums_with_b = step
            .nodes
            .iter()
            .filter(|node| match node.op {
                Op::Binary(Binary::Add, a, b) => {
                    [a, b]
                        .iter()
                        .any(|id| matches!(step.node(*id).op, Op::Param(_)))
                        && [a, b]
                            .iter()
                            .any(|id| matches!(step.node(*id).op, Op::Binary(Binary::Add, ..)))
                }
                _ => false,
            })
            .count();
        assert_eq!(sums_with_b, 1, "{:#?}", step.nodes);
        assert_eq!(
            step.nodes
                .iter()
                .filter(|node| matches!(node.op, Op::MatVec(..)))
                .count(),
            2
        );
    }
}

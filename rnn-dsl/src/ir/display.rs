//! The IR's stable text form: what IR snapshots contain.
//!
//! Ids print with a short prefix (`v3`, `p1`); a model prints one line per
//! network, network input, layer, layer input, state, parameter and node,
//! then one line of each layer's updates and output. Changing this text
//! changes every IR snapshot.

use std::fmt;

use crate::check::InputSource;
use crate::ops::Elementwise;

use super::{Dep, Layer, Model, Network, Op, ParamId, Shape, ValueId};

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl fmt::Display for ParamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Scalar => write!(f, "[]"),
            Shape::Vector(len) => write!(f, "[{len}]"),
            Shape::Matrix(rows, cols) => write!(f, "[{rows}, {cols}]"),
        }
    }
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dep::Const => "const",
            Dep::Context => "context",
            Dep::Input => "input",
            Dep::State => "state",
        })
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for network in &self.networks {
            write!(f, "{network}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "network {} unroll {:?}", self.name, self.unroll)?;
        for input in &self.inputs {
            let kind = if input.per_step { "input" } else { "context" };
            writeln!(f, "  {kind} {}: [{}]", input.name, input.size)?;
        }
        for layer in &self.layers {
            write!(f, "{layer}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  layer {}#{} = {} directions {} output [{}]{}",
            self.name,
            self.stack_idx,
            self.cell,
            self.directions,
            self.output_size,
            match self.precision {
                Some(precision) => format!(" weights {}", precision.name()),
                None => String::new(),
            }
        )?;
        for (idx, input) in self.inputs.iter().enumerate() {
            let source = match input.source {
                InputSource::Previous => "previous layer".to_owned(),
                InputSource::Network(k) => format!("network input {k}"),
            };
            writeln!(f, "    in{idx}: [{}] from {source}", input.size)?;
        }
        for state in &self.states {
            writeln!(f, "    state {}: [{}]", state.name, state.size)?;
        }
        for (idx, param) in self.params.iter().enumerate() {
            writeln!(
                f,
                "    p{idx} = {}: {:?}{}{} ({})",
                param.name,
                param.shape,
                match param.steps {
                    Some(steps) => format!(" per step, {steps} copies"),
                    None => String::new(),
                },
                if param.frozen { " frozen" } else { "" },
                self.weight_name(param, 0)
            )?;
        }
        for (idx, node) in self.step.nodes.iter().enumerate() {
            let op = match &node.op {
                Op::Input(k) => format!("in{k}"),
                Op::State(k) => format!("state {}", self.states[*k].name),
                Op::Param(param) => format!("{param}"),
                Op::Literal(value) => format!("{value:?}"),
                Op::Unary(op, a) => format!("{}({a})", Elementwise::Unary(*op).word()),
                Op::Binary(op, a, b) => {
                    format!("{}({a}, {b})", Elementwise::Binary(*op).word())
                }
                Op::Clip(a, b, c) => format!("clip({a}, {b}, {c})"),
                Op::MatVec(a, b) => format!("matvec({a}, {b})"),
                Op::Transpose(a) => format!("transpose({a})"),
                Op::Slice(a, start, end) => format!("{a}[{start}..{end}]"),
                Op::Row(a, index) => format!("{a}[{index}]"),
                Op::Reduce(op, a) => format!("{}({a})", reduction_name(*op)),
                op => super::grad::op_text(op),
            };
            writeln!(f, "    v{idx}: {} {} = {op}", node.shape, node.dep)?;
        }
        let updates: Vec<String> = self
            .step
            .updates
            .iter()
            .zip(&self.states)
            .map(|(id, state)| format!("{} = {id}", state.name))
            .collect();
        writeln!(
            f,
            "    update {}; output {}",
            updates.join(", "),
            self.step.output
        )
    }
}

/// How the text form writes a reduction: the language's name for it.
pub(super) fn reduction_name(op: crate::ops::Reduction) -> &'static str {
    match op {
        crate::ops::Reduction::Sum => "sum",
        crate::ops::Reduction::Max => "max",
    }
}

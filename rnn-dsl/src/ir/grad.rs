//! Reverse-mode differentiation of a layer's step: the backward step, as IR.
//!
//! Input: a verified [`Layer`]. Output: its [`Backward`] step, which
//! [`verify_backward`] accepts. The backward step's arena starts with the
//! forward step's nodes, id for id (so the forward values it reads are
//! named as in the forward step: an executor stores them on a tape or
//! recomputes them), then the adjoint nodes. It reads the gradients
//! arriving for the step's results as [`Op::Seed`]s and gives:
//! - the gradient with respect to each state before the step (the seed of
//!   the step before, or the initial state's gradient);
//! - the gradient with respect to each cell input at this step (for a
//!   context, this step's share: the executor sums it over steps);
//! - this step's share of each parameter's gradient, summed over the batch
//!   ([`Op::SumBatch`], [`Op::Outer`]): the executor sums it over steps.
//!   Outer products read only seed-derived and forward values, so an
//!   executor may instead keep both factors for every step and form the sum
//!   over all steps as one large product.
//!
//! Masking is the executor's: a sequence that has finished by a step gives
//! the step no rows; its state gradients pass through unchanged.
//!
//! The rules are the chain rule, each written with the language's own
//! operations: a comparison is `relu(sign(a - b))` (1 where `a > b`, else
//! 0), so the backward step needs no new elementwise operation. Where a
//! function has no derivative (`relu`, `abs`, `sign`, `soft_threshold`, `min`,
//! `max` and `clip` at their kinks) the rules take PyTorch's choice: `relu`
//! and `soft_threshold` pass nothing at the kink, `abs` passes `sign(a)`, a
//! tie of `min`/`max` goes to the first operand, and `clip` passes its value
//! at either bound.

use std::fmt;

use crate::ops::{Binary, Elementwise, Reduction, Unary};

use super::{Dep, Layer, Node, Op, Param, Seed, Shape, ValueId};

/// The reverse of one step. See the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct Backward {
    /// The forward step's nodes (ids `0..forward`), then the adjoint nodes.
    pub nodes: Vec<Node>,
    /// How many of `nodes` are the forward step's.
    pub forward: usize,
    /// The gradient with respect to each state before the step; `None`
    /// where it is zero (the step does not read the state).
    pub states: Vec<Option<ValueId>>,
    /// The gradient with respect to each cell input at this step; `None`
    /// where it is zero.
    pub inputs: Vec<Option<ValueId>>,
    /// This step's share of each parameter's gradient, shared by the batch;
    /// `None` where it is zero.
    pub params: Vec<Option<ValueId>>,
}

impl Backward {
    /// The node behind a value.
    pub fn node(&self, id: ValueId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Whether a value is one for the whole batch (parameters, numbers and
    /// batch sums) rather than one per sequence.
    pub fn shared(&self) -> Vec<bool> {
        shared(&self.nodes)
    }
}

fn shared(nodes: &[Node]) -> Vec<bool> {
    let mut shared = Vec::with_capacity(nodes.len());
    for node in nodes {
        let value = is_shared(&node.op, &shared);
        shared.push(value);
    }
    shared
}

/// Whether `op` gives one value for the whole batch, given its operands'.
fn is_shared(op: &Op, shared: &[bool]) -> bool {
    match op {
        Op::Param(_) | Op::Literal(_) | Op::SumBatch(_) | Op::Outer(..) => true,
        Op::Input(_) | Op::State(_) | Op::Seed(_) => false,
        op => op.operands().iter().all(|operand| shared[operand.index()]),
    }
}

/// The backward step of `layer`'s step.
pub fn differentiate(layer: &Layer) -> Backward {
    let step = &layer.step;
    let forward = step.nodes.len();
    let active = active(&step.nodes, &layer.params);
    let mut builder = Builder {
        shared: shared(&step.nodes),
        active: active.clone(),
        nodes: step.nodes.clone(),
        adjoints: vec![None; forward],
        states: vec![None; layer.states.len()],
        inputs: vec![None; layer.inputs.len()],
        params: vec![None; layer.params.len()],
        transposes: Vec::new(),
        literals: Vec::new(),
    };
    let span = step.node(step.output).span;
    if active[step.output.index()] {
        let seed = builder.push(
            Op::Seed(Seed::Output),
            Shape::Vector(layer.output_size),
            span,
        );
        builder.accumulate(step.output, seed);
    }
    for (k, (update, state)) in step.updates.iter().zip(&layer.states).enumerate() {
        if active[update.index()] {
            let span = step.node(*update).span;
            let seed = builder.push(Op::Seed(Seed::State(k)), Shape::Vector(state.size), span);
            builder.accumulate(*update, seed);
        }
    }
    for idx in (0..forward).rev() {
        if !builder.active[idx] {
            continue;
        }
        if let Some(adjoint) = builder.adjoints[idx] {
            builder.propagate(ValueId(idx as u32), adjoint);
        }
    }
    Backward {
        nodes: builder.nodes,
        forward,
        states: builder.states,
        inputs: builder.inputs,
        params: builder.params,
    }
}

/// Whether each forward node depends on something with a gradient: an
/// input, a state or a parameter not declared `frozen` (numbers and frozen
/// parameters alone have none, so no product forms their gradient).
fn active(nodes: &[Node], params: &[Param]) -> Vec<bool> {
    let mut active = Vec::with_capacity(nodes.len());
    for node in nodes {
        let value = match &node.op {
            Op::Input(_) | Op::State(_) => true,
            Op::Param(k) => !params[k.0 as usize].frozen,
            Op::Literal(_) => false,
            op => op.operands().iter().any(|operand| active[operand.index()]),
        };
        active.push(value);
    }
    active
}

struct Builder {
    nodes: Vec<Node>,
    /// Whether each node is one value for the whole batch.
    shared: Vec<bool>,
    /// Whether each forward node has a gradient at all.
    active: Vec<bool>,
    /// The adjoint of each forward node so far.
    adjoints: Vec<Option<ValueId>>,
    states: Vec<Option<ValueId>>,
    inputs: Vec<Option<ValueId>>,
    params: Vec<Option<ValueId>>,
    /// Transposes made for `matvec` operands, so each is made once.
    transposes: Vec<(ValueId, ValueId)>,
    /// Numbers made, so each is made once.
    literals: Vec<(u32, ValueId)>,
}

impl Builder {
    fn node(&self, id: ValueId) -> &Node {
        &self.nodes[id.index()]
    }

    fn shape(&self, id: ValueId) -> Shape {
        self.node(id).shape
    }

    fn is_shared(&self, id: ValueId) -> bool {
        self.shared[id.index()]
    }

    /// Appends a node; its dependence is its operands' largest (a seed's
    /// is `State`: it changes every step).
    fn push(&mut self, op: Op, shape: Shape, span: crate::source::Span) -> ValueId {
        let dep = match &op {
            Op::Seed(_) => Dep::State,
            op => op
                .operands()
                .iter()
                .map(|operand| self.node(*operand).dep)
                .max()
                .unwrap_or(Dep::Const),
        };
        let id = ValueId(self.nodes.len() as u32);
        self.shared.push(is_shared(&op, &self.shared));
        self.nodes.push(Node {
            op,
            shape,
            dep,
            span,
        });
        id
    }

    fn literal(&mut self, value: f32, span: crate::source::Span) -> ValueId {
        let bits = value.to_bits();
        if let Some((_, id)) = self.literals.iter().find(|(known, _)| *known == bits) {
            return *id;
        }
        let id = self.push(Op::Literal(value), Shape::Scalar, span);
        self.literals.push((bits, id));
        id
    }

    /// An elementwise node, shaped as the broadcast of its operands.
    fn elementwise(&mut self, op: Elementwise, args: &[ValueId]) -> ValueId {
        let shape =
            args.iter()
                .map(|arg| self.shape(*arg))
                .fold(Shape::Scalar, |acc, shape| match (acc, shape) {
                    (Shape::Scalar, other) | (other, Shape::Scalar) => other,
                    (Shape::Vector(1), other) | (other, Shape::Vector(1)) => other,
                    (wider, _) => wider,
                });
        let span = self.node(args[0]).span;
        let op = match op {
            Elementwise::Unary(func) => Op::Unary(func, args[0]),
            Elementwise::Binary(func) => Op::Binary(func, args[0], args[1]),
            Elementwise::Clip => Op::Clip(args[0], args[1], args[2]),
        };
        self.push(op, shape, span)
    }

    fn unary(&mut self, func: Unary, a: ValueId) -> ValueId {
        self.elementwise(Elementwise::Unary(func), &[a])
    }

    fn binary(&mut self, func: Binary, a: ValueId, b: ValueId) -> ValueId {
        self.elementwise(Elementwise::Binary(func), &[a, b])
    }

    fn mul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(Binary::Mul, a, b)
    }

    /// `1` where `a > b`, else `0`: `relu(sign(a - b))`.
    fn greater(&mut self, a: ValueId, b: ValueId) -> ValueId {
        let difference = self.binary(Binary::Sub, a, b);
        let sign = self.unary(Unary::Sign, difference);
        self.unary(Unary::Relu, sign)
    }

    /// `1 - mask`.
    fn complement(&mut self, mask: ValueId) -> ValueId {
        let one = self.literal(1.0, self.node(mask).span);
        self.binary(Binary::Sub, one, mask)
    }

    /// Adds `gradient` to the adjoint of forward value `target`, reduced to
    /// its shape: summed over the elements of a broadcast one-element
    /// vector, over the batch for a value the batch shares.
    fn accumulate(&mut self, target: ValueId, gradient: ValueId) {
        let span = self.node(target).span;
        let mut gradient = gradient;
        if let (Shape::Vector(1), Shape::Vector(len)) = (self.shape(target), self.shape(gradient)) {
            if len > 1 {
                gradient = self.push(Op::SumElems(gradient), Shape::Vector(1), span);
            }
        }
        if self.is_shared(target) && !self.is_shared(gradient) {
            let shape = self.shape(gradient);
            gradient = self.push(Op::SumBatch(gradient), shape, span);
        }
        let sum = match self.adjoints[target.index()] {
            None => gradient,
            Some(previous) => {
                let shape = self.shape(previous);
                self.push(Op::Binary(Binary::Add, previous, gradient), shape, span)
            }
        };
        self.adjoints[target.index()] = Some(sum);
    }

    /// Adds to a result of the backward step (a state's, an input's or a
    /// parameter's gradient).
    fn add_result(&mut self, slot: Slot, gradient: ValueId) {
        let span = self.node(gradient).span;
        let previous = match slot {
            Slot::State(k) => self.states[k],
            Slot::Input(k) => self.inputs[k],
            Slot::Param(k) => self.params[k],
        };
        let sum = match previous {
            None => gradient,
            Some(previous) => {
                let shape = self.shape(previous);
                self.push(Op::Binary(Binary::Add, previous, gradient), shape, span)
            }
        };
        match slot {
            Slot::State(k) => self.states[k] = Some(sum),
            Slot::Input(k) => self.inputs[k] = Some(sum),
            Slot::Param(k) => self.params[k] = Some(sum),
        }
    }

    /// Passes the adjoint `g` of forward value `id` to its operands.
    fn propagate(&mut self, id: ValueId, g: ValueId) {
        let op = self.node(id).op.clone();
        let span = self.node(id).span;
        match op {
            Op::Input(k) => self.add_result(Slot::Input(k), g),
            Op::State(k) => self.add_result(Slot::State(k), g),
            Op::Param(param) => self.add_result(Slot::Param(param.0 as usize), g),
            Op::Literal(_) => {}
            Op::Unary(func, a) => {
                let da = match func {
                    Unary::Neg => Some(self.unary(Unary::Neg, g)),
                    // σ' = σ (1 - σ), tanh' = 1 - tanh², exp' = exp: from the result.
                    Unary::Sigmoid => {
                        let rest = self.complement(id);
                        let slope = self.mul(id, rest);
                        Some(self.mul(g, slope))
                    }
                    Unary::Tanh => {
                        let square = self.mul(id, id);
                        let slope = self.complement(square);
                        Some(self.mul(g, slope))
                    }
                    Unary::Exp => Some(self.mul(g, id)),
                    Unary::Relu => {
                        let zero = self.literal(0.0, span);
                        let mask = self.greater(a, zero);
                        Some(self.mul(g, mask))
                    }
                    Unary::Log => Some(self.binary(Binary::Div, g, a)),
                    Unary::Abs => {
                        let sign = self.unary(Unary::Sign, a);
                        Some(self.mul(g, sign))
                    }
                    Unary::Sign => None,
                    // sqrt' = 1 / (2 sqrt).
                    Unary::Sqrt => {
                        let twice = self.binary(Binary::Add, id, id);
                        Some(self.binary(Binary::Div, g, twice))
                    }
                    Unary::Softplus => {
                        let slope = self.unary(Unary::Sigmoid, a);
                        Some(self.mul(g, slope))
                    }
                };
                if let Some(da) = da {
                    self.accumulate(a, da);
                }
            }
            Op::Binary(func, a, b) => {
                let (da, db) = match func {
                    Binary::Add => (Some(g), Some(g)),
                    Binary::Sub => (Some(g), Some(self.unary(Unary::Neg, g))),
                    Binary::Mul => (Some(self.mul(g, b)), Some(self.mul(g, a))),
                    Binary::Div => {
                        let da = self.binary(Binary::Div, g, b);
                        let scaled = self.mul(g, id);
                        let quotient = self.binary(Binary::Div, scaled, b);
                        (Some(da), Some(self.unary(Unary::Neg, quotient)))
                    }
                    // A tie goes to `a`.
                    Binary::Min | Binary::Max => {
                        let b_wins = if func == Binary::Min {
                            self.greater(a, b)
                        } else {
                            self.greater(b, a)
                        };
                        let a_wins = self.complement(b_wins);
                        (Some(self.mul(g, a_wins)), Some(self.mul(g, b_wins)))
                    }
                    // sign(a) max(|a| - b, 0): slope 1 in a and -sign(a) in b
                    // where |a| > b, else 0.
                    Binary::SoftThreshold => {
                        let magnitude = self.unary(Unary::Abs, a);
                        let live = self.greater(magnitude, b);
                        let da = self.mul(g, live);
                        let sign = self.unary(Unary::Sign, a);
                        let signed = self.mul(da, sign);
                        (Some(da), Some(self.unary(Unary::Neg, signed)))
                    }
                };
                if let Some(da) = da {
                    self.accumulate(a, da);
                }
                if let Some(db) = db {
                    self.accumulate(b, db);
                }
            }
            // clip(a, lo, hi) = min(max(a, lo), hi), by the min and max rules.
            Op::Clip(a, lo, hi) => {
                let raised = self.binary(Binary::Max, a, lo);
                let above = self.greater(raised, hi);
                let kept = self.complement(above);
                let to_raised = self.mul(g, kept);
                let to_hi = self.mul(g, above);
                let below = self.greater(lo, a);
                let kept = self.complement(below);
                let to_a = self.mul(to_raised, kept);
                let to_lo = self.mul(to_raised, below);
                self.accumulate(a, to_a);
                self.accumulate(lo, to_lo);
                self.accumulate(hi, to_hi);
            }
            Op::MatVec(matrix, vector) => {
                if self.active[vector.index()] {
                    let transposed = self.transpose(matrix);
                    let len = match self.shape(vector) {
                        Shape::Vector(len) => len,
                        _ => unreachable!("IR verification: matvec takes a vector"),
                    };
                    let dv = self.push(Op::MatVec(transposed, g), Shape::Vector(len), span);
                    self.accumulate(vector, dv);
                }
                if self.active[matrix.index()] {
                    // The product of a transpose (`W^T @ v`) gives `W` its
                    // gradient as the outer product the other way round,
                    // `outer(v, g)`, rather than the transpose of
                    // `outer(g, v)`: no transposed copy of a weight-sized
                    // gradient, per step or after the loop.
                    let (target, dm) = match self.node(matrix).op {
                        Op::Transpose(inner) => (inner, Op::Outer(vector, g)),
                        _ => (matrix, Op::Outer(g, vector)),
                    };
                    let shape = self.shape(target);
                    let dm = self.push(dm, shape, span);
                    self.accumulate(target, dm);
                }
            }
            Op::Transpose(matrix) => {
                let shape = self.shape(matrix);
                let dm = self.push(Op::Transpose(g), shape, span);
                self.accumulate(matrix, dm);
            }
            Op::Slice(inner, start, _) => {
                let shape = self.shape(inner);
                let len = match shape {
                    Shape::Vector(len) | Shape::Matrix(len, _) => len,
                    Shape::Scalar => unreachable!("IR verification: slices take vectors"),
                };
                let placed = self.push(Op::Place(g, start, len), shape, span);
                self.accumulate(inner, placed);
            }
            Op::Row(matrix, index) => {
                let shape = self.shape(matrix);
                let Shape::Matrix(rows, _) = shape else {
                    unreachable!("IR verification: rows are taken of matrices")
                };
                let g = if self.is_shared(g) {
                    g
                } else {
                    let row_shape = self.shape(g);
                    self.push(Op::SumBatch(g), row_shape, span)
                };
                let placed = self.push(Op::PlaceRow(g, index, rows), shape, span);
                self.accumulate(matrix, placed);
            }
            // Each element gets the sum's gradient.
            Op::Reduce(Reduction::Sum, a) => {
                let da = match self.shape(a) {
                    Shape::Vector(len) if len > 1 => {
                        let ones = self.push(Op::Literal(1.0), Shape::Vector(len), span);
                        self.mul(g, ones)
                    }
                    _ => g,
                };
                self.accumulate(a, da);
            }
            // The largest elements share the gradient equally (PyTorch's
            // `amax`): `g / count` where `a` equals the maximum, else 0.
            Op::Reduce(Reduction::Max, a) => {
                let below = self.greater(id, a);
                let at_max = self.complement(below);
                let count = self.push(Op::SumElems(at_max), Shape::Vector(1), span);
                let share = self.binary(Binary::Div, g, count);
                let da = self.mul(share, at_max);
                self.accumulate(a, da);
            }
            Op::Seed(_)
            | Op::Outer(..)
            | Op::SumBatch(_)
            | Op::SumElems(_)
            | Op::Place(..)
            | Op::PlaceRow(..) => unreachable!("forward steps hold no backward operation"),
        }
    }

    /// The transpose of a forward matrix, made once; that of a transpose
    /// is the matrix it transposes.
    fn transpose(&mut self, matrix: ValueId) -> ValueId {
        if let Op::Transpose(inner) = self.node(matrix).op {
            return inner;
        }
        if let Some((_, id)) = self.transposes.iter().find(|(of, _)| *of == matrix) {
            return *id;
        }
        let Shape::Matrix(rows, cols) = self.shape(matrix) else {
            unreachable!("IR verification: matvec takes a matrix")
        };
        let span = self.node(matrix).span;
        let id = self.push(Op::Transpose(matrix), Shape::Matrix(cols, rows), span);
        self.transposes.push((matrix, id));
        id
    }
}

#[derive(Clone, Copy)]
enum Slot {
    State(usize),
    Input(usize),
    Param(usize),
}

/// Checks a backward step against its layer: operands precede their users,
/// the forward nodes are the layer's, shapes agree operation by operation,
/// and each result has the shape of what it is the gradient of.
pub fn verify_backward(layer: &Layer, backward: &Backward) -> Result<(), String> {
    if backward.nodes.get(..backward.forward) != Some(&layer.step.nodes[..]) {
        return Err("the backward step does not start with the forward step".to_owned());
    }
    let shape_of = |id: ValueId| backward.nodes[id.index()].shape;
    for (idx, node) in backward.nodes.iter().enumerate().skip(backward.forward) {
        let id = ValueId(idx as u32);
        for operand in node.op.operands() {
            if operand.index() >= idx {
                return Err(format!("{id} reads {operand}, which does not precede it"));
            }
        }
        let ok = match &node.op {
            Op::Seed(Seed::Output) => node.shape == Shape::Vector(layer.output_size),
            Op::Seed(Seed::State(k)) => layer
                .states
                .get(*k)
                .is_some_and(|state| node.shape == Shape::Vector(state.size)),
            Op::Outer(g, v) => match (shape_of(*g), shape_of(*v)) {
                (Shape::Vector(m), Shape::Vector(n)) => node.shape == Shape::Matrix(m, n),
                _ => false,
            },
            Op::SumBatch(a) => node.shape == shape_of(*a),
            Op::SumElems(a) | Op::Reduce(_, a) => {
                matches!(shape_of(*a), Shape::Vector(_)) && node.shape == Shape::Vector(1)
            }
            Op::Place(a, start, len) => match (shape_of(*a), node.shape) {
                (Shape::Vector(n), Shape::Vector(total)) => total == *len && start + n <= *len,
                (Shape::Matrix(n, cols), Shape::Matrix(total, c)) => {
                    total == *len && c == cols && start + n <= *len
                }
                _ => false,
            },
            Op::PlaceRow(a, index, rows) => match shape_of(*a) {
                Shape::Vector(cols) => index < rows && node.shape == Shape::Matrix(*rows, cols),
                _ => false,
            },
            Op::MatVec(m, v) => match (shape_of(*m), shape_of(*v)) {
                (Shape::Matrix(rows, cols), Shape::Vector(len)) => {
                    cols == len && node.shape == Shape::Vector(rows)
                }
                _ => false,
            },
            Op::Transpose(m) => match shape_of(*m) {
                Shape::Matrix(rows, cols) => node.shape == Shape::Matrix(cols, rows),
                _ => false,
            },
            Op::Unary(..) | Op::Binary(..) | Op::Clip(..) => {
                node.op.operands().iter().all(|operand| {
                    let shape = shape_of(*operand);
                    shape == Shape::Scalar || shape == Shape::Vector(1) || shape == node.shape
                })
            }
            // Ones that broadcast a sum's gradient are vectors.
            Op::Literal(_) => matches!(node.shape, Shape::Scalar | Shape::Vector(_)),
            Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Slice(..) | Op::Row(..) => false,
        };
        if !ok {
            return Err(format!("{id} of shape {} is malformed", node.shape));
        }
    }
    let results = [
        (&backward.states, "state"),
        (&backward.inputs, "input"),
        (&backward.params, "parameter"),
    ];
    for (values, kind) in results {
        for (k, value) in values.iter().enumerate() {
            let Some(value) = value else { continue };
            let expected = match kind {
                "state" => Shape::Vector(layer.states[k].size),
                "input" => Shape::Vector(layer.inputs[k].size),
                _ => match layer.params[k].shape[..] {
                    [len] => Shape::Vector(len),
                    [rows, cols] => Shape::Matrix(rows, cols),
                    _ => return Err(format!("parameter {k} has rank > 2")),
                },
            };
            if value.index() >= backward.nodes.len() || shape_of(*value) != expected {
                return Err(format!(
                    "the gradient of {kind} {k} is not of shape {expected}"
                ));
            }
        }
    }
    let shared = backward.shared();
    for (k, value) in backward.params.iter().enumerate() {
        if let Some(value) = value {
            if !shared[value.index()] {
                return Err(format!(
                    "the gradient of parameter {k} is per sequence, not summed over the batch"
                ));
            }
        }
    }
    Ok(())
}

impl fmt::Display for Backward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "    backward (v0..v{} as forward)", self.forward)?;
        for (idx, node) in self.nodes.iter().enumerate().skip(self.forward) {
            writeln!(
                f,
                "    v{idx}: {} {} = {}",
                node.shape,
                node.dep,
                op_text(&node.op)
            )?;
        }
        let list = |values: &[Option<ValueId>]| {
            values
                .iter()
                .map(|value| value.map_or("0".to_owned(), |id| id.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "    gradients: states [{}]; inputs [{}]; params [{}]",
            list(&self.states),
            list(&self.inputs),
            list(&self.params)
        )
    }
}

pub(super) fn op_text(op: &Op) -> String {
    match op {
        Op::Input(k) => format!("in{k}"),
        Op::State(k) => format!("state{k}"),
        Op::Param(param) => format!("{param}"),
        Op::Literal(value) => format!("{value:?}"),
        Op::Unary(op, a) => format!("{}({a})", Elementwise::Unary(*op).word()),
        Op::Binary(op, a, b) => format!("{}({a}, {b})", Elementwise::Binary(*op).word()),
        Op::Clip(a, b, c) => format!("clip({a}, {b}, {c})"),
        Op::MatVec(a, b) => format!("matvec({a}, {b})"),
        Op::Transpose(a) => format!("transpose({a})"),
        Op::Slice(a, start, end) => format!("{a}[{start}..{end}]"),
        Op::Row(a, index) => format!("{a}[{index}]"),
        Op::Reduce(op, a) => format!("{}({a})", super::display::reduction_name(*op)),
        Op::Seed(Seed::Output) => "seed output".to_owned(),
        Op::Seed(Seed::State(k)) => format!("seed state{k}"),
        Op::Outer(g, v) => format!("outer({g}, {v})"),
        Op::SumBatch(a) => format!("sum_batch({a})"),
        Op::SumElems(a) => format!("sum_elems({a})"),
        Op::Place(a, start, len) => format!("place({a}, {start}, {len})"),
        Op::PlaceRow(a, index, rows) => format!("place_row({a}, {index}, {rows})"),
    }
}

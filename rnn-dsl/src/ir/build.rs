//! Checked model → IR: each stacked layer's step, built expression by
//! expression, with numbers folded as they are built.
//!
//! Input: a [`check::Model`] in which every size, constant and `if` is
//! decided. Output: one [`Layer`] per stacked layer, its [`Step`] in the
//! cell's binding order, every node with its shape and dependence.
//! Arithmetic on numbers alone becomes one literal ([`Elementwise::apply`]),
//! `clip(x, -inf, inf)` becomes `x`, and an `if` takes its decided branch.
//!
//! After build: the model verifies, but a step may still hold nodes
//! nothing reads (a `let` nothing uses, the operands of a folded number),
//! and a layer's parameter list names every parameter the cell's bindings
//! mention. The rewrites that follow ([`crate::ir::build()`]) change that.

use crate::check::{self, InputSource, TExpr, TKind, Value, VectorFunc};
use crate::ops::{Binary, Elementwise, Reduction, Unary};
use crate::source::Span;

use super::{
    Dep, Input, Layer, LayerInput, Model, Network, Node, Op, Param, ParamId, Shape, State, Step,
    ValueId,
};

/// The IR of every network, as the cells write it, before any rewrite.
pub(super) fn build(model: &check::Model) -> Model {
    let networks = model
        .networks
        .iter()
        .map(|network| build_network(model, network))
        .collect();
    Model { networks }
}

fn build_network(model: &check::Model, network: &check::Network) -> Network {
    let inputs: Vec<Input> = network
        .inputs
        .iter()
        .map(|input| Input {
            name: input.name.clone(),
            size: input.size,
            per_step: input.per_step,
        })
        .collect();
    let prefixed = network.layers.len() > 1;
    let mut layers = Vec::new();
    let mut previous_width = 0;
    for layer in &network.layers {
        let cell = &model.cells[layer.cell];
        let directions = if layer.bidirectional { 2 } else { 1 };
        for (stack_idx, instance) in layer.stack.iter().enumerate() {
            let layer_inputs: Vec<LayerInput> = instance
                .inputs
                .iter()
                .map(|source| match source {
                    InputSource::Previous => LayerInput {
                        source: *source,
                        size: previous_width,
                        per_step: true,
                    },
                    InputSource::Network(idx) => LayerInput {
                        source: *source,
                        size: inputs[*idx].size,
                        per_step: inputs[*idx].per_step,
                    },
                })
                .collect();
            let mut builder = StepBuilder::new(cell, instance, &layer_inputs, layer.steps);
            let step = builder.build();
            let params = builder.params;
            let built = Layer {
                name: layer.name.clone(),
                stack_idx,
                prefix: if prefixed {
                    format!("{}.", layer.name)
                } else {
                    String::new()
                },
                cell: cell.name.clone(),
                directions,
                reverse: layer.reverse,
                inputs: layer_inputs,
                states: cell
                    .states
                    .iter()
                    .map(|state| State {
                        name: state.name.clone(),
                        size: eval(&state.dim, &instance.sizes),
                    })
                    .collect(),
                params,
                step,
                output_size: instance.output_size,
                alone: layer.stack.len() == 1 && directions == 1,
                precision: network.precision,
                accepts_bare_names: !cell.from_prelude && layer.stack.len() == 1 && directions == 1,
                consts: cell
                    .consts
                    .iter()
                    .zip(&instance.consts)
                    .map(|(constant, value)| (constant.name.clone(), *value))
                    .collect(),
            };
            previous_width = built.output_width();
            layers.push(built);
        }
    }
    Network {
        name: network.name.clone(),
        span: network.span,
        inputs,
        layers,
        unroll: network.unroll.clone(),
    }
}

fn eval(dim: &check::dim::SymDim, sizes: &[usize]) -> usize {
    let values: Vec<Option<i128>> = sizes.iter().map(|size| Some(*size as i128)).collect();
    let value = dim
        .eval(&values)
        .and_then(|ratio| ratio.as_int())
        .expect("check ensures every size is a whole number");
    usize::try_from(value).expect("check ensures sizes are positive")
}

struct StepBuilder<'a> {
    cell: &'a check::Cell,
    instance: &'a check::Instance,
    inputs: &'a [LayerInput],
    /// Copies of each per-step parameter.
    steps: Option<usize>,
    nodes: Vec<Node>,
    bindings: Vec<Option<ValueId>>,
    params: Vec<Param>,
    param_ids: Vec<Option<ParamId>>,
}

impl<'a> StepBuilder<'a> {
    fn new(
        cell: &'a check::Cell,
        instance: &'a check::Instance,
        inputs: &'a [LayerInput],
        steps: Option<usize>,
    ) -> StepBuilder<'a> {
        StepBuilder {
            cell,
            instance,
            inputs,
            steps,
            nodes: Vec::new(),
            bindings: vec![None; cell.bindings.len()],
            params: Vec::new(),
            param_ids: vec![None; cell.params.len()],
        }
    }

    fn build(&mut self) -> Step {
        for idx in 0..self.cell.bindings.len() {
            let value = self.expr(&self.cell.bindings[idx].value);
            self.bindings[idx] = Some(value);
        }
        let updates = self
            .cell
            .updates
            .iter()
            .enumerate()
            .map(|(state_idx, binding)| {
                let value = self.bindings[*binding].expect("bindings are built in order");
                // A scalar assigned to a state broadcasts to the state's size.
                let size = eval(&self.cell.states[state_idx].dim, &self.instance.sizes);
                self.broadcast_to(value, size)
            })
            .collect();
        let output = self.bindings[self.cell.output].expect("bindings are built in order");
        Step {
            nodes: std::mem::take(&mut self.nodes),
            updates,
            output,
        }
    }

    fn broadcast_to(&mut self, value: ValueId, size: usize) -> ValueId {
        let node = &self.nodes[value.index()];
        if node.shape == Shape::Vector(size) {
            return value;
        }
        // `h = 0` or `h = b[0]`: add a zero vector of the right size.
        let span = node.span;
        let zero_state = self.push(Op::Literal(0.0), Shape::Vector(size), Dep::Const, span);
        self.push(
            Op::Binary(Binary::Add, zero_state, value),
            Shape::Vector(size),
            self.nodes[value.index()].dep,
            span,
        )
    }

    fn push(&mut self, op: Op, shape: Shape, dep: Dep, span: Span) -> ValueId {
        self.nodes.push(Node {
            op,
            shape,
            dep,
            span,
        });
        ValueId((self.nodes.len() - 1) as u32)
    }

    fn dep_of(&self, operands: &[ValueId]) -> Dep {
        operands
            .iter()
            .map(|id| self.nodes[id.index()].dep)
            .max()
            .unwrap_or(Dep::Const)
    }

    fn size(&self, dim: &check::dim::SymDim) -> usize {
        eval(dim, &self.instance.sizes)
    }

    fn literal(&self, value: ValueId) -> Option<f32> {
        match self.nodes[value.index()].op {
            Op::Literal(number) if self.nodes[value.index()].shape == Shape::Scalar => Some(number),
            _ => None,
        }
    }

    fn expr(&mut self, expr: &TExpr) -> ValueId {
        let span = expr.span;
        match &expr.kind {
            TKind::Number(value) => {
                self.push(Op::Literal(*value as f32), Shape::Scalar, Dep::Const, span)
            }
            TKind::Const(idx) => {
                let Value::Number(value) = self.instance.consts[*idx] else {
                    unreachable!("check rejects flags used as numbers")
                };
                self.push(Op::Literal(value as f32), Shape::Scalar, Dep::Const, span)
            }
            TKind::Input(idx) => {
                let input = &self.inputs[*idx];
                let dep = if input.per_step {
                    Dep::Input
                } else {
                    Dep::Context
                };
                self.push(Op::Input(*idx), Shape::Vector(input.size), dep, span)
            }
            TKind::State(idx) => {
                let size = self.size(&self.cell.states[*idx].dim);
                self.push(Op::State(*idx), Shape::Vector(size), Dep::State, span)
            }
            TKind::Binding(idx) => self.bindings[*idx].expect("bindings are built in order"),
            TKind::Param(idx) => {
                let param = &self.cell.params[*idx];
                let shape: Vec<usize> = param.dims.iter().map(|dim| self.size(dim)).collect();
                let param_id = match self.param_ids[*idx] {
                    Some(id) => id,
                    None => {
                        self.params.push(Param {
                            name: param.name.clone(),
                            shape: shape.clone(),
                            steps: param.per_step.and(self.steps),
                            frozen: param.frozen,
                        });
                        let id = ParamId((self.params.len() - 1) as u32);
                        self.param_ids[*idx] = Some(id);
                        id
                    }
                };
                let node_shape = match shape[..] {
                    [len] => Shape::Vector(len),
                    [rows, cols] => Shape::Matrix(rows, cols),
                    _ => unreachable!("check limits parameters to rank 2"),
                };
                // A per-step parameter is another value at each step.
                let dep = match self.params[param_id.0 as usize].steps {
                    Some(_) => Dep::State,
                    None => Dep::Const,
                };
                self.push(Op::Param(param_id), node_shape, dep, span)
            }
            TKind::Unary(func, inner) => {
                let inner = self.expr(inner);
                if let Some(number) = self.literal(inner) {
                    return self.push(
                        Op::Literal(Elementwise::Unary(*func).apply(&[number])),
                        Shape::Scalar,
                        Dep::Const,
                        span,
                    );
                }
                let node = &self.nodes[inner.index()];
                let (shape, dep) = (node.shape, node.dep);
                self.push(Op::Unary(*func, inner), shape, dep, span)
            }
            TKind::Call(Elementwise::Clip, args) => {
                let ids: Vec<ValueId> = args.iter().map(|arg| self.expr(arg)).collect();
                // `clip(x, -inf, inf)` (an LSTM without `cell_clip`) is `x`.
                if self.literal(ids[1]) == Some(f32::NEG_INFINITY)
                    && self.literal(ids[2]) == Some(f32::INFINITY)
                {
                    return ids[0];
                }
                let shape = self.broadcast_shape(&ids);
                let dep = self.dep_of(&ids);
                self.push(Op::Clip(ids[0], ids[1], ids[2]), shape, dep, span)
            }
            TKind::Call(func, args) => {
                let ids: Vec<ValueId> = args.iter().map(|arg| self.expr(arg)).collect();
                // Arithmetic on numbers alone is done here, once: `1 - 0.5`.
                let literals: Option<Vec<f32>> = ids.iter().map(|id| self.literal(*id)).collect();
                if let Some(values) = literals {
                    return self.push(
                        Op::Literal(func.apply(&values)),
                        Shape::Scalar,
                        Dep::Const,
                        span,
                    );
                }
                let shape = self.broadcast_shape(&ids);
                let dep = self.dep_of(&ids);
                match (func, &ids[..]) {
                    (Elementwise::Binary(op), &[lhs, rhs]) => {
                        self.push(Op::Binary(*op, lhs, rhs), shape, dep, span)
                    }
                    _ => unreachable!("check types one-operand calls as unary and clip apart"),
                }
            }
            TKind::MatVec(matrix, vector) => {
                let matrix = self.expr(matrix);
                let vector = self.expr(vector);
                let Shape::Matrix(rows, _) = self.nodes[matrix.index()].shape else {
                    unreachable!("check ensures the left of `@` is a matrix")
                };
                let dep = self.dep_of(&[matrix, vector]);
                self.push(Op::MatVec(matrix, vector), Shape::Vector(rows), dep, span)
            }
            TKind::Transpose(inner) => {
                let inner = self.expr(inner);
                let Shape::Matrix(rows, cols) = self.nodes[inner.index()].shape else {
                    unreachable!("check ensures only matrices are transposed")
                };
                let dep = self.nodes[inner.index()].dep;
                self.push(Op::Transpose(inner), Shape::Matrix(cols, rows), dep, span)
            }
            TKind::Slice(inner, start, end) => {
                let inner = self.expr(inner);
                let (start, end) = (self.size_or_zero(start), self.size(end));
                let node = &self.nodes[inner.index()];
                let shape = match node.shape {
                    Shape::Matrix(_, cols) => Shape::Matrix(end - start, cols),
                    _ => Shape::Vector(end - start),
                };
                let dep = node.dep;
                self.push(Op::Slice(inner, start, end), shape, dep, span)
            }
            TKind::Row(inner, index) => {
                let inner = self.expr(inner);
                let index = self.size_or_zero(index);
                let node = &self.nodes[inner.index()];
                let Shape::Matrix(_, cols) = node.shape else {
                    unreachable!("check ensures rows are taken of matrices")
                };
                let dep = node.dep;
                self.push(Op::Row(inner, index), Shape::Vector(cols), dep, span)
            }
            TKind::If(flag, then, otherwise) => {
                let Value::Bool(flag) = self.instance.consts[*flag] else {
                    unreachable!("check ensures conditions are flags")
                };
                self.expr(if flag { then } else { otherwise })
            }
            TKind::Vector(func, args) => {
                let ids: Vec<ValueId> = args.iter().map(|arg| self.expr(arg)).collect();
                self.vector_func(*func, &ids, span)
            }
        }
    }

    /// A function of whole vectors, written with the IR's two reductions
    /// and elementwise operations. `softmax` and `log_softmax` subtract the
    /// largest element first, so `exp` never overflows; its gradient
    /// through the maximum is zero in exact arithmetic (both are invariant
    /// under a shift), so no gradient is stopped.
    fn vector_func(&mut self, func: VectorFunc, args: &[ValueId], span: Span) -> ValueId {
        let Shape::Vector(len) = self.nodes[args[0].index()].shape else {
            unreachable!("check ensures vector functions take vectors")
        };
        let reduce = |cx: &mut Self, op: Reduction, value: ValueId| {
            let dep = cx.nodes[value.index()].dep;
            cx.push(Op::Reduce(op, value), Shape::Vector(1), dep, span)
        };
        let binary = |cx: &mut Self, op: Binary, a: ValueId, b: ValueId| {
            let shape = cx.broadcast_shape(&[a, b]);
            let dep = cx.dep_of(&[a, b]);
            cx.push(Op::Binary(op, a, b), shape, dep, span)
        };
        let unary = |cx: &mut Self, op: Unary, a: ValueId| {
            let node = &cx.nodes[a.index()];
            let (shape, dep) = (node.shape, node.dep);
            cx.push(Op::Unary(op, a), shape, dep, span)
        };
        // `v - max(v)`, and `sum(exp(v - max(v)))`.
        let shifted = |cx: &mut Self, value: ValueId| {
            let max = reduce(cx, Reduction::Max, value);
            let shifted = binary(cx, Binary::Sub, value, max);
            let exp = unary(cx, Unary::Exp, shifted);
            let total = reduce(cx, Reduction::Sum, exp);
            (shifted, exp, total)
        };
        match func {
            VectorFunc::Sum => reduce(self, Reduction::Sum, args[0]),
            VectorFunc::Max => reduce(self, Reduction::Max, args[0]),
            VectorFunc::Mean => {
                let total = reduce(self, Reduction::Sum, args[0]);
                let count = self.push(Op::Literal(len as f32), Shape::Scalar, Dep::Const, span);
                binary(self, Binary::Div, total, count)
            }
            VectorFunc::Dot => {
                let product = binary(self, Binary::Mul, args[0], args[1]);
                reduce(self, Reduction::Sum, product)
            }
            VectorFunc::Softmax => {
                let (_, exp, total) = shifted(self, args[0]);
                binary(self, Binary::Div, exp, total)
            }
            VectorFunc::LogSoftmax => {
                let (shifted, _, total) = shifted(self, args[0]);
                let log_total = unary(self, Unary::Log, total);
                binary(self, Binary::Sub, shifted, log_total)
            }
        }
    }

    fn size_or_zero(&self, dim: &check::dim::SymDim) -> usize {
        let values: Vec<Option<i128>> = self
            .instance
            .sizes
            .iter()
            .map(|size| Some(*size as i128))
            .collect();
        dim.eval(&values)
            .and_then(|ratio| ratio.as_int())
            .and_then(|value| usize::try_from(value).ok())
            .expect("check ensures slice bounds are whole numbers in range")
    }

    fn broadcast_shape(&self, ids: &[ValueId]) -> Shape {
        let mut shape = Shape::Scalar;
        for id in ids {
            match (shape, self.nodes[id.index()].shape) {
                (_, Shape::Scalar) => {}
                (Shape::Scalar, other) => shape = other,
                (Shape::Vector(1), other @ Shape::Vector(_)) => shape = other,
                (current, _) => shape = current,
            }
        }
        shape
    }
}

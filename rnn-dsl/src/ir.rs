//! The IR: one time step of each layer as a batched dataflow graph.
//!
//! Built from the checked model with every size, constant and `if` decided.
//! Each layer of a network (each stacked layer of a `layer` statement) has a
//! [`Step`]: an arena of [`Node`]s in evaluation order, addressed by
//! [`ValueId`]. Values are pure: a node never changes another. Every node
//! knows its [`Shape`] (per sequence; vectors are `[B, n]` at run time) and
//! its [`Dep`]endence, so terms that read only the step's input (`W_ih @
//! x_t`) are marked for hoisting out of the time loop, and terms that read
//! only parameters are computed once.
//!
//! After build: [`verify`] holds (see its doc for the list of invariants).

use std::fmt;

use crate::check::{self, Func, InputSource, TExpr, TKind, Value};
use crate::source::Span;

/// A value in a [`Step`], printed `v3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The arena index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A parameter of a [`Layer`], printed `p1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

impl fmt::Display for ParamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// Every network of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Networks in source order.
    pub networks: Vec<Network>,
}

/// A network, its layers flattened: a `layer` statement with `layers = 2`
/// gives two [`Layer`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// Where it was defined.
    pub span: Span,
    /// Inputs and contexts.
    pub inputs: Vec<Input>,
    /// Layers in order; each reads the previous one's output sequence.
    pub layers: Vec<Layer>,
    /// How to unroll it.
    pub unroll: check::UnrollMode,
}

impl Network {
    /// The per-step input, if the network has one.
    pub fn step_input(&self) -> Option<&Input> {
        self.inputs.iter().find(|input| input.per_step)
    }

    /// Size of the output sequence `y` per step (both directions).
    pub fn output_size(&self) -> usize {
        self.layers.last().map_or(0, Layer::output_width)
    }
}

/// A network input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The tensor name.
    pub name: String,
    /// Size per step and sequence.
    pub size: usize,
    /// A value per step (`[B, T, n]`), or one for all steps (`[B, n]`).
    pub per_step: bool,
}

/// One layer: a cell instance with known sizes, in one or two directions.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// The `layer` statement's name.
    pub name: String,
    /// Index within the statement's stack (`layers = N`).
    pub stack_idx: usize,
    /// Prefix of weight and state tensor names: empty when the network has
    /// one `layer` statement, `"name."` otherwise.
    pub prefix: String,
    /// The cell's name.
    pub cell: String,
    /// 1, or 2 for a bidirectional layer (same step, separate weights).
    pub directions: usize,
    /// What each cell input reads, and its size.
    pub inputs: Vec<LayerInput>,
    /// States: name and size.
    pub states: Vec<State>,
    /// Parameters this instance reads.
    pub params: Vec<Param>,
    /// The step function.
    pub step: Step,
    /// Size of one direction's per-step output.
    pub output_size: usize,
    /// Whether the weight name without `_l{k}` suffix is accepted too.
    pub accepts_bare_names: bool,
}

impl Layer {
    /// The output size per step over both directions.
    pub fn output_width(&self) -> usize {
        self.output_size * self.directions
    }

    /// The tensor name of a parameter for a direction (0 forward, 1
    /// backward): PyTorch's `weight_ih_l0`, `weight_hh_l1_reverse`.
    pub fn weight_name(&self, param: &Param, direction: usize) -> String {
        let reverse = if direction == 1 { "_reverse" } else { "" };
        format!("{}{}_l{}{reverse}", self.prefix, param.name, self.stack_idx)
    }

    /// The plain name (`A`) also accepted for a single-layer, one-direction
    /// user cell, so its weights can be named as the `.rnn` file names them.
    pub fn bare_weight_name(&self, param: &Param) -> Option<String> {
        self.accepts_bare_names
            .then(|| format!("{}{}", self.prefix, param.name))
    }
}

/// What a layer's cell input reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInput {
    /// The previous layer's output, or a network input by index.
    pub source: InputSource,
    /// Size per step.
    pub size: usize,
    /// Whether it changes from step to step (`false` for contexts).
    pub per_step: bool,
}

/// A state of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The cell's name for it (`h`, `c`).
    pub name: String,
    /// Its size.
    pub size: usize,
}

/// A parameter of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The cell's name for it (`weight_ih`).
    pub name: String,
    /// `[n]` or `[m, n]`.
    pub shape: Vec<usize>,
}

/// One time step: nodes in evaluation order, then what becomes of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The arena; operands always precede their users.
    pub nodes: Vec<Node>,
    /// The new value of each state, in state order.
    pub updates: Vec<ValueId>,
    /// The per-step output.
    pub output: ValueId,
}

impl Step {
    /// The node behind a value.
    pub fn node(&self, id: ValueId) -> &Node {
        &self.nodes[id.index()]
    }

    /// How many times each value is read: as an operand, the output or an
    /// update (once per role).
    pub fn uses(&self) -> Vec<usize> {
        let mut uses = vec![0usize; self.nodes.len()];
        for node in &self.nodes {
            for operand in node.op.operands() {
                uses[operand.index()] += 1;
            }
        }
        for root in self.updates.iter().chain(std::iter::once(&self.output)) {
            uses[root.index()] += 1;
        }
        uses
    }

    /// This step's results in a rebuilt arena, `value_map[old]` being the
    /// new id of each old value.
    fn rebuilt(&self, nodes: Vec<Node>, value_map: &[ValueId]) -> Step {
        Step {
            nodes,
            updates: self
                .updates
                .iter()
                .map(|id| value_map[id.index()])
                .collect(),
            output: value_map[self.output.index()],
        }
    }
}

/// One operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What it computes.
    pub op: Op,
    /// Its shape per sequence.
    pub shape: Shape,
    /// What it depends on.
    pub dep: Dep,
    /// The expression it came from.
    pub span: Span,
}

/// Operations. Elementwise ones broadcast scalars and one-element vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The layer's k-th cell input at this step.
    Input(usize),
    /// The k-th state before this step.
    State(usize),
    /// A parameter.
    Param(ParamId),
    /// A number.
    Literal(f32),
    /// An elementwise function of one value.
    Unary(Func, ValueId),
    /// An elementwise function of two values.
    Binary(Func, ValueId, ValueId),
    /// `min(max(value, lo), hi)`.
    Clip(ValueId, ValueId, ValueId),
    /// `matrix @ vector`.
    MatVec(ValueId, ValueId),
    /// A transposed matrix.
    Transpose(ValueId),
    /// Rows `start..end` of a matrix, or elements of a vector.
    Slice(ValueId, usize, usize),
    /// One row of a matrix, as a vector.
    Row(ValueId, usize),
}

impl Op {
    /// The values it reads.
    pub fn operands(&self) -> Vec<ValueId> {
        match self {
            Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Literal(_) => Vec::new(),
            Op::Unary(_, a) | Op::Transpose(a) | Op::Slice(a, _, _) | Op::Row(a, _) => vec![*a],
            Op::Binary(_, a, b) | Op::MatVec(a, b) => vec![*a, *b],
            Op::Clip(a, b, c) => vec![*a, *b, *c],
        }
    }
}

/// The shape of a value per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One number.
    Scalar,
    /// `[n]`
    Vector(usize),
    /// `[m, n]` (parameters only)
    Matrix(usize, usize),
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

/// What a value depends on, from least to most: the order is the hoisting
/// order (a value depends on the most of its operands' dependences).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dep {
    /// Only parameters and numbers: the same for every sequence and step.
    Const,
    /// Contexts too: per sequence, the same at every step.
    Context,
    /// The step's input too: can be computed for all steps before the loop.
    Input,
    /// The state: must be computed step by step.
    State,
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

/// Builds the IR of every network. Cannot fail: check has decided every
/// size and condition.
pub fn build(model: &check::Model) -> Model {
    let networks = model
        .networks
        .iter()
        .map(|network| build_network(model, network))
        .collect();
    let ir = Model { networks };
    if cfg!(debug_assertions) {
        if let Err(problem) = verify(&ir) {
            panic!("internal error: IR verification failed after build: {problem}");
        }
    }
    ir
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
            let mut builder = StepBuilder::new(cell, instance, &layer_inputs);
            let step = reassociate_sums(merge_row_products(builder.build()));
            let (step, used_params) = eliminate_dead(step, builder.params.len());
            let params = builder
                .params
                .into_iter()
                .zip(&used_params)
                .filter(|(_, used)| **used)
                .map(|(param, _)| param)
                .collect();
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
                accepts_bare_names: !cell.from_prelude && layer.stack.len() == 1 && directions == 1,
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
    ) -> StepBuilder<'a> {
        StepBuilder {
            cell,
            instance,
            inputs,
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
            Op::Binary(Func::Add, zero_state, value),
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
                self.push(Op::Param(param_id), node_shape, Dep::Const, span)
            }
            TKind::Unary(func, inner) => {
                let inner = self.expr(inner);
                if let Some(number) = self.literal(inner) {
                    return self.push(
                        Op::Literal(fold(*func, &[number])),
                        Shape::Scalar,
                        Dep::Const,
                        span,
                    );
                }
                let node = &self.nodes[inner.index()];
                let (shape, dep) = (node.shape, node.dep);
                self.push(Op::Unary(*func, inner), shape, dep, span)
            }
            TKind::Call(Func::Clip, args) => {
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
                        Op::Literal(fold(*func, &values)),
                        Shape::Scalar,
                        Dep::Const,
                        span,
                    );
                }
                let shape = self.broadcast_shape(&ids);
                let dep = self.dep_of(&ids);
                match ids[..] {
                    [only] => self.push(Op::Unary(*func, only), shape, dep, span),
                    [lhs, rhs] => self.push(Op::Binary(*func, lhs, rhs), shape, dep, span),
                    _ => unreachable!("check gives elementwise calls one or two operands"),
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

/// Evaluates an elementwise function of numbers, as the kernels would.
pub fn fold(func: Func, args: &[f32]) -> f32 {
    let a = args[0];
    match func {
        Func::Neg => -a,
        Func::Add => a + args[1],
        Func::Sub => a - args[1],
        Func::Mul => a * args[1],
        Func::Div => a / args[1],
        Func::Sigmoid => rnn_runtime::kernels::sigmoid(a),
        Func::Tanh => rnn_runtime::kernels::tanh(a),
        Func::Relu => rnn_runtime::kernels::relu(a),
        Func::Exp => a.exp(),
        Func::Log => a.ln(),
        Func::Abs => a.abs(),
        Func::Sign => rnn_runtime::__private::sign(a),
        Func::Sqrt => a.sqrt(),
        Func::Softplus => rnn_runtime::__private::softplus(a),
        Func::Min => a.min(args[1]),
        Func::Max => a.max(args[1]),
        Func::SoftThreshold => rnn_runtime::kernels::soft_threshold(a, args[1]),
        Func::Clip => a.max(args[1]).min(args[2]),
        Func::Transpose => unreachable!("transpose is not elementwise"),
    }
}

/// A product of rows `start..end` of a parameter matrix with a vector.
#[derive(Debug, Clone, Copy)]
struct RowProduct {
    product: ValueId,
    start: usize,
    end: usize,
}

/// Products of row ranges of one parameter with one vector, by start.
#[derive(Debug, Clone)]
struct Merge {
    param: ValueId,
    vector: ValueId,
    members: Vec<RowProduct>,
}

impl Merge {
    fn start(&self) -> usize {
        self.members[0].start
    }

    fn end(&self) -> usize {
        self.members[self.members.len() - 1].end
    }
}

/// The same operation with every operand mapped by `f`.
fn map_operands(op: Op, f: impl Fn(ValueId) -> ValueId) -> Op {
    match op {
        Op::Unary(func, a) => Op::Unary(func, f(a)),
        Op::Binary(func, a, b) => Op::Binary(func, f(a), f(b)),
        Op::Clip(a, b, c) => Op::Clip(f(a), f(b), f(c)),
        Op::MatVec(a, b) => Op::MatVec(f(a), f(b)),
        Op::Transpose(a) => Op::Transpose(f(a)),
        Op::Slice(a, start, end) => Op::Slice(f(a), start, end),
        Op::Row(a, index) => Op::Row(f(a), index),
        leaf @ (Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Literal(_)) => leaf,
    }
}

/// Products of adjacent row ranges of one parameter matrix with one vector
/// (a GRU's `W_hr @ h`, `W_hz @ h`, `W_hn @ h`, written as slices of
/// `weight_hh`) become one product of the rows they cover, sliced: one
/// larger matrix product per step instead of several small ones. The
/// values are the same (each output element is the same inner product).
fn merge_row_products(step: Step) -> Step {
    // Leaves are written once per use (`weight_hh` and `h` three times in
    // a GRU): each leaf's first occurrence stands for the others.
    let mut first_of_leaf: std::collections::HashMap<(u8, usize), ValueId> =
        std::collections::HashMap::new();
    let canonical: Vec<ValueId> = step
        .nodes
        .iter()
        .enumerate()
        .map(|(idx, node)| {
            let id = ValueId(idx as u32);
            let key = match node.op {
                Op::Param(param) => (0, param.0 as usize),
                Op::State(k) => (1, k),
                Op::Input(k) => (2, k),
                _ => return id,
            };
            *first_of_leaf.entry(key).or_insert(id)
        })
        .collect();
    // Products `Slice(param, a, b) @ v`, grouped by (param, v).
    let mut groups: Vec<Merge> = Vec::new();
    for (idx, node) in step.nodes.iter().enumerate() {
        let Op::MatVec(matrix, vector) = node.op else {
            continue;
        };
        let Op::Slice(param, start, end) = step.node(matrix).op else {
            continue;
        };
        if !matches!(step.node(param).op, Op::Param(_)) {
            continue;
        }
        let (param, vector) = (canonical[param.index()], canonical[vector.index()]);
        let member = RowProduct {
            product: ValueId(idx as u32),
            start,
            end,
        };
        match groups
            .iter_mut()
            .find(|group| (group.param, group.vector) == (param, vector))
        {
            Some(group) => group.members.push(member),
            None => groups.push(Merge {
                param,
                vector,
                members: vec![member],
            }),
        }
    }
    // Keep groups of two or more whose row ranges tile one range exactly.
    let merges: Vec<Merge> = groups
        .into_iter()
        .filter_map(|mut group| {
            group.members.sort_by_key(|member| member.start);
            let adjacent = group
                .members
                .windows(2)
                .all(|pair| pair[0].end == pair[1].start);
            (group.members.len() >= 2 && adjacent).then_some(group)
        })
        .collect();
    if merges.is_empty() {
        return step;
    }
    let mut nodes: Vec<Node> = Vec::with_capacity(step.nodes.len() + 2 * merges.len());
    let mut value_map: Vec<ValueId> = Vec::with_capacity(step.nodes.len());
    // For each merge, the id of its product once emitted.
    let mut products: Vec<Option<ValueId>> = vec![None; merges.len()];
    for (idx, node) in step.nodes.iter().enumerate() {
        let id = ValueId(idx as u32);
        let found = merges.iter().enumerate().find_map(|(merge_idx, merge)| {
            merge
                .members
                .iter()
                .find(|member| member.product == id)
                .map(|member| (merge_idx, member.start))
        });
        let Some((merge_idx, member_start)) = found else {
            if canonical[idx] != id {
                // A repeated leaf: the first occurrence is already there.
                value_map.push(value_map[canonical[idx].index()]);
                continue;
            }
            let op = map_operands(node.op.clone(), |operand| value_map[operand.index()]);
            nodes.push(Node { op, ..node.clone() });
            value_map.push(ValueId((nodes.len() - 1) as u32));
            continue;
        };
        let merge = &merges[merge_idx];
        let (param, vector) = (&merge.param, &merge.vector);
        let (start, end) = (&merge.start(), &merge.end());
        let product = match products[merge_idx] {
            Some(product) => product,
            None => {
                // The first member in evaluation order: the merged product
                // goes here, after the parameter and the vector.
                let Shape::Matrix(rows, cols) = step.node(*param).shape else {
                    unreachable!("a sliced parameter under `@` is a matrix")
                };
                let matrix = if (*start, *end) == (0, rows) {
                    value_map[param.index()]
                } else {
                    nodes.push(Node {
                        op: Op::Slice(value_map[param.index()], *start, *end),
                        shape: Shape::Matrix(end - start, cols),
                        dep: Dep::Const,
                        span: node.span,
                    });
                    ValueId((nodes.len() - 1) as u32)
                };
                nodes.push(Node {
                    op: Op::MatVec(matrix, value_map[vector.index()]),
                    shape: Shape::Vector(end - start),
                    dep: node.dep,
                    span: node.span,
                });
                let product = ValueId((nodes.len() - 1) as u32);
                products[merge_idx] = Some(product);
                product
            }
        };
        let Shape::Vector(len) = node.shape else {
            unreachable!("a product is a vector")
        };
        let offset = member_start - start;
        nodes.push(Node {
            op: Op::Slice(product, offset, offset + len),
            ..node.clone()
        });
        value_map.push(ValueId((nodes.len() - 1) as u32));
    }
    step.rebuilt(nodes, &value_map)
}

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
fn reassociate_sums(step: Step) -> Step {
    let uses = step.uses();
    let mut sums = SumBuilder {
        nodes: Vec::with_capacity(step.nodes.len()),
        private: Vec::with_capacity(step.nodes.len()),
    };
    let mut value_map: Vec<ValueId> = Vec::with_capacity(step.nodes.len());
    for (idx, node) in step.nodes.iter().enumerate() {
        let op = map_operands(node.op.clone(), |operand| value_map[operand.index()]);
        let id = match op {
            Op::Binary(Func::Add, a, b) => sums.add(a, b, node),
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
            Op::Binary(Func::Add, x, y)
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
            op: Op::Binary(Func::Add, a, b),
            dep,
            ..like.clone()
        })
    }
}

fn eliminate_dead(step: Step, n_params: usize) -> (Step, Vec<bool>) {
    let mut live = vec![false; step.nodes.len()];
    for root in step.updates.iter().chain(std::iter::once(&step.output)) {
        live[root.index()] = true;
    }
    for idx in (0..step.nodes.len()).rev() {
        if live[idx] {
            for operand in step.nodes[idx].op.operands() {
                live[operand.index()] = true;
            }
        }
    }
    let mut used_params = vec![false; n_params];
    for (node, alive) in step.nodes.iter().zip(&live) {
        if let (Op::Param(param), true) = (&node.op, alive) {
            used_params[param.0 as usize] = true;
        }
    }
    let mut param_map = vec![None; n_params];
    let mut next = 0;
    for (idx, used) in used_params.iter().enumerate() {
        if *used {
            param_map[idx] = Some(ParamId(next));
            next += 1;
        }
    }
    let mut value_map: Vec<Option<ValueId>> = vec![None; step.nodes.len()];
    let mut nodes = Vec::new();
    let remap = |id: ValueId, value_map: &[Option<ValueId>]| {
        value_map[id.index()].expect("operands are live")
    };
    for (idx, node) in step.nodes.into_iter().enumerate() {
        if !live[idx] {
            continue;
        }
        let op = match node.op {
            Op::Param(param) => Op::Param(param_map[param.0 as usize].expect("live parameter")),
            Op::Unary(func, a) => Op::Unary(func, remap(a, &value_map)),
            Op::Binary(func, a, b) => Op::Binary(func, remap(a, &value_map), remap(b, &value_map)),
            Op::Clip(a, b, c) => Op::Clip(
                remap(a, &value_map),
                remap(b, &value_map),
                remap(c, &value_map),
            ),
            Op::MatVec(a, b) => Op::MatVec(remap(a, &value_map), remap(b, &value_map)),
            Op::Transpose(a) => Op::Transpose(remap(a, &value_map)),
            Op::Slice(a, start, end) => Op::Slice(remap(a, &value_map), start, end),
            Op::Row(a, index) => Op::Row(remap(a, &value_map), index),
            leaf @ (Op::Input(_) | Op::State(_) | Op::Literal(_)) => leaf,
        };
        nodes.push(Node { op, ..node });
        value_map[idx] = Some(ValueId((nodes.len() - 1) as u32));
    }
    let updates = step
        .updates
        .iter()
        .map(|id| remap(*id, &value_map))
        .collect();
    let output = remap(step.output, &value_map);
    (
        Step {
            nodes,
            updates,
            output,
        },
        used_params,
    )
}

/// Checks the IR's invariants; returns the first violation.
///
/// Invariants:
/// - every operand of node `k` is a node before `k` (the arena is in
///   evaluation order, so it has no cycles);
/// - a node's dependence is the largest of its operands' (leaves: inputs
///   are `Input` or `Context`, states `State`, parameters and literals
///   `Const`);
/// - matrices are `Const` or `Context`-free: only parameters are matrices;
/// - `MatVec` takes a matrix `[m, n]` and a vector `[n]` and gives `[m]`;
/// - elementwise operands are scalars, one-element vectors, or of the
///   node's own shape;
/// - slices and rows lie within their operand;
/// - parameter ids index the layer's parameter list and shapes agree;
/// - there is one update per state, of the state's size; the output is a
///   vector of the layer's output size;
/// - layer input sizes agree with the previous layer's output width.
pub fn verify(model: &Model) -> Result<(), String> {
    for network in &model.networks {
        let mut previous_width = None;
        for layer in &network.layers {
            let at = |msg: String| {
                format!(
                    "network `{}` layer `{}`#{}: {msg}",
                    network.name, layer.name, layer.stack_idx
                )
            };
            for input in &layer.inputs {
                if input.source == InputSource::Previous && Some(input.size) != previous_width {
                    return Err(at(format!(
                        "input size {} but previous layer gives {previous_width:?}",
                        input.size
                    )));
                }
            }
            verify_step(layer).map_err(at)?;
            previous_width = Some(layer.output_width());
        }
    }
    Ok(())
}

fn verify_step(layer: &Layer) -> Result<(), String> {
    let step = &layer.step;
    for (idx, node) in step.nodes.iter().enumerate() {
        let id = ValueId(idx as u32);
        let operands = node.op.operands();
        for operand in &operands {
            if operand.index() >= idx {
                return Err(format!("{id} reads {operand}, which does not precede it"));
            }
        }
        let shape_of = |value: ValueId| step.nodes[value.index()].shape;
        let expected_dep = match &node.op {
            Op::Input(k) => {
                let input = layer
                    .inputs
                    .get(*k)
                    .ok_or_else(|| format!("{id} reads missing input {k}"))?;
                if node.shape != Shape::Vector(input.size) {
                    return Err(format!(
                        "{id} input shape {} but input size {}",
                        node.shape, input.size
                    ));
                }
                if input.per_step {
                    Dep::Input
                } else {
                    Dep::Context
                }
            }
            Op::State(k) => {
                let state = layer
                    .states
                    .get(*k)
                    .ok_or_else(|| format!("{id} reads missing state {k}"))?;
                if node.shape != Shape::Vector(state.size) {
                    return Err(format!(
                        "{id} state shape {} but state size {}",
                        node.shape, state.size
                    ));
                }
                Dep::State
            }
            Op::Param(param) => {
                let declared = layer
                    .params
                    .get(param.0 as usize)
                    .ok_or_else(|| format!("{id} reads missing {param}"))?;
                let matches = match node.shape {
                    Shape::Vector(len) => declared.shape == [len],
                    Shape::Matrix(rows, cols) => declared.shape == [rows, cols],
                    Shape::Scalar => false,
                };
                if !matches {
                    return Err(format!(
                        "{id} has shape {} but {param} is {:?}",
                        node.shape, declared.shape
                    ));
                }
                Dep::Const
            }
            Op::Literal(_) => Dep::Const,
            _ => operands
                .iter()
                .map(|operand| step.nodes[operand.index()].dep)
                .max()
                .unwrap_or(Dep::Const),
        };
        if node.dep != expected_dep {
            return Err(format!(
                "{id} has dependence {} but its operands give {expected_dep}",
                node.dep
            ));
        }
        if matches!(node.shape, Shape::Matrix(..)) && node.dep != Dep::Const {
            return Err(format!("{id} is a matrix that depends on {}", node.dep));
        }
        match &node.op {
            Op::MatVec(matrix, vector) => match (shape_of(*matrix), shape_of(*vector)) {
                (Shape::Matrix(rows, cols), Shape::Vector(len))
                    if cols == len && node.shape == Shape::Vector(rows) => {}
                (lhs, rhs) => {
                    return Err(format!(
                        "{id}: matvec of {lhs} and {rhs} gives {}",
                        node.shape
                    ))
                }
            },
            Op::Transpose(inner) => match shape_of(*inner) {
                Shape::Matrix(rows, cols) if node.shape == Shape::Matrix(cols, rows) => {}
                other => return Err(format!("{id}: transpose of {other} gives {}", node.shape)),
            },
            Op::Slice(inner, start, end) => {
                let (len, expected) = match shape_of(*inner) {
                    Shape::Matrix(rows, cols) => {
                        (rows, Shape::Matrix(end.saturating_sub(*start), cols))
                    }
                    Shape::Vector(len) => (len, Shape::Vector(end.saturating_sub(*start))),
                    Shape::Scalar => return Err(format!("{id} slices a scalar")),
                };
                if !(start < end && *end <= len) || node.shape != expected {
                    return Err(format!(
                        "{id}: slice {start}..{end} of length {len} gives {}",
                        node.shape
                    ));
                }
            }
            Op::Row(inner, index) => match shape_of(*inner) {
                Shape::Matrix(rows, cols) if *index < rows && node.shape == Shape::Vector(cols) => {
                }
                other => return Err(format!("{id}: row {index} of {other} gives {}", node.shape)),
            },
            Op::Unary(_, _) | Op::Binary(_, _, _) | Op::Clip(_, _, _) => {
                for operand in &operands {
                    let shape = shape_of(*operand);
                    if !(shape == Shape::Scalar || shape == Shape::Vector(1) || shape == node.shape)
                    {
                        return Err(format!(
                            "{id} of shape {} has an operand of shape {shape}",
                            node.shape
                        ));
                    }
                }
            }
            Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Literal(_) => {}
        }
    }
    if step.updates.len() != layer.states.len() {
        return Err(format!(
            "{} updates for {} states",
            step.updates.len(),
            layer.states.len()
        ));
    }
    for (update, state) in step.updates.iter().zip(&layer.states) {
        let shape = step.nodes.get(update.index()).map(|node| node.shape);
        if shape != Some(Shape::Vector(state.size)) {
            return Err(format!(
                "update of `{}` has shape {shape:?}, state size {}",
                state.name, state.size
            ));
        }
    }
    let output_shape = step.nodes.get(step.output.index()).map(|node| node.shape);
    if output_shape != Some(Shape::Vector(layer.output_size)) {
        return Err(format!(
            "output has shape {output_shape:?}, layer output size {}",
            layer.output_size
        ));
    }
    Ok(())
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
            "  layer {}#{} = {} directions {} output [{}]",
            self.name, self.stack_idx, self.cell, self.directions, self.output_size
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
                "    p{idx} = {}: {:?} ({})",
                param.name,
                param.shape,
                self.weight_name(param, 0)
            )?;
        }
        for (idx, node) in self.step.nodes.iter().enumerate() {
            let op = match &node.op {
                Op::Input(k) => format!("in{k}"),
                Op::State(k) => format!("state {}", self.states[*k].name),
                Op::Param(param) => format!("{param}"),
                Op::Literal(value) => format!("{value:?}"),
                Op::Unary(func, a) => format!("{}({a})", func_word(*func)),
                Op::Binary(func, a, b) => format!("{}({a}, {b})", func_word(*func)),
                Op::Clip(a, b, c) => format!("clip({a}, {b}, {c})"),
                Op::MatVec(a, b) => format!("matvec({a}, {b})"),
                Op::Transpose(a) => format!("transpose({a})"),
                Op::Slice(a, start, end) => format!("{a}[{start}..{end}]"),
                Op::Row(a, index) => format!("{a}[{index}]"),
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

fn func_word(func: Func) -> &'static str {
    match func {
        Func::Neg => "neg",
        Func::Add => "add",
        Func::Sub => "sub",
        Func::Mul => "mul",
        Func::Div => "div",
        other => other.name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            Op::Binary(Func::Add, ..) if node.dep == Dep::Const => {
                vec![(Dep::Const, "const".into())]
            }
            Op::Binary(Func::Add, a, b) => {
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
                matches!(node.op, Op::Binary(Func::Add, ..)) && node.shape == Shape::Vector(16)
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
                Op::Binary(Func::Add, a, b) => {
                    [a, b]
                        .iter()
                        .any(|id| matches!(step.node(*id).op, Op::Param(_)))
                        && [a, b]
                            .iter()
                            .any(|id| matches!(step.node(*id).op, Op::Binary(Func::Add, ..)))
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

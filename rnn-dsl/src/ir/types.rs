//! The IR's entities: typed ids, the model, its networks and layers, and
//! the nodes of a layer's step.
//!
//! Ids are `u32` newtypes indexing Vec-backed arenas ([`ValueId`] into
//! [`Step::nodes`], [`ParamId`] into [`Layer::params`]): nothing points at
//! another entity by reference. Their text form is in `display.rs`.

use crate::check::{self, InputSource};
use crate::names;
use crate::ops::{Binary, Reduction, Unary};
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

/// A parameter of a [`Layer`], printed `p1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

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
    /// Whether its one direction runs backward (`reverse`).
    pub reverse: bool,
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
    /// Whether it is its statement's only layer, in one direction.
    pub alone: bool,
    /// Whether the weight name without `_l{k}` suffix is accepted too.
    pub accepts_bare_names: bool,
    /// The cell's constants (`reset_after`, `cell_clip`) with this instance's values.
    pub consts: Vec<(String, check::Value)>,
    /// The precision of the matrices its products read (the network's
    /// `precision` statement), `None` for `f32`.
    pub precision: Option<check::Precision>,
}

impl Layer {
    /// Whether `direction` runs backward: over each sequence's valid part
    /// from its end, its outputs put back in time order. The second
    /// direction of a bidirectional layer, or the one of a `reverse` layer.
    pub fn runs_backward(&self, direction: usize) -> bool {
        direction == 1 || self.reverse
    }

    /// The copies of its per-step parameters (`steps = K`), if it has some:
    /// the most steps it runs.
    pub fn steps(&self) -> Option<usize> {
        self.params.iter().find_map(|param| param.steps)
    }

    /// The value of the constant `name` if the cell has one.
    pub fn constant(&self, name: &str) -> Option<check::Value> {
        self.consts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| *value)
    }
}

impl Layer {
    /// The output size per step over both directions.
    pub fn output_width(&self) -> usize {
        self.output_size * self.directions
    }

    /// Whether its names are plain (`weight`, `head.bias`), as PyTorch's
    /// `nn.Linear` names its parameters: a layer without states, alone in
    /// its statement.
    fn plain_names(&self) -> bool {
        self.alone && self.states.is_empty()
    }

    /// The tensor name of a parameter for a direction (0 forward, 1
    /// backward): PyTorch's `weight_ih_l0`, `weight_hh_l1_reverse`, or
    /// `weight` for a stateless layer alone in its statement.
    pub fn weight_name(&self, param: &Param, direction: usize) -> String {
        if self.plain_names() {
            names::bare_weight(&self.prefix, &param.name)
        } else {
            names::weight(&self.prefix, &param.name, self.stack_idx, direction)
        }
    }

    /// The plain name (`A`) also accepted for a single-layer, one-direction
    /// user cell, so its weights can be named as the `.rnn` file names them.
    pub fn bare_weight_name(&self, param: &Param) -> Option<String> {
        (self.accepts_bare_names && !self.plain_names())
            .then(|| names::bare_weight(&self.prefix, &param.name))
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
    /// `[n]` or `[m, n]`: one step's copy for a per-step parameter.
    pub shape: Vec<usize>,
    /// For a per-step parameter, its copies: one per step, stored as one
    /// tensor `[steps, ..shape]` whose row `t` step `t` reads.
    pub steps: Option<usize>,
    /// Declared `frozen`: the backward gives it no gradient (its entry in
    /// the gradients is zero).
    pub frozen: bool,
}

impl Param {
    /// The shape of its tensor: `shape`, or `[steps, ..shape]`.
    pub fn tensor_shape(&self) -> Vec<usize> {
        self.steps
            .into_iter()
            .chain(self.shape.iter().copied())
            .collect()
    }
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
    pub(super) fn rebuilt(&self, nodes: Vec<Node>, value_map: &[ValueId]) -> Step {
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
    Unary(Unary, ValueId),
    /// An elementwise function of two values.
    Binary(Binary, ValueId, ValueId),
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
    /// A vector reduced to one value (its sum, its largest element), as a
    /// one-element vector.
    Reduce(Reduction, ValueId),

    // Operations only the backward step has (`ir/grad.rs`).
    /// The gradient arriving for this step's output or a state's new value.
    Seed(Seed),
    /// `Σ_b g_b v_bᵀ`: the batch's sum of outer products, a matrix.
    Outer(ValueId, ValueId),
    /// `Σ_b v_b`: a value shared by the batch.
    SumBatch(ValueId),
    /// The sum of a vector's elements, as a one-element vector.
    SumElems(ValueId),
    /// A vector (or matrix) of `len` elements (rows), zero but for the
    /// operand at `start..`.
    Place(ValueId, usize, usize),
    /// A matrix of `rows` rows, zero but for row `index`, the operand.
    PlaceRow(ValueId, usize, usize),
}

/// What a [`Op::Seed`] reads: the gradient of the loss with respect to one
/// of the step's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// The step's output.
    Output,
    /// The k-th state's new value (from the step after, or the final state).
    State(usize),
}

impl Op {
    /// The values it reads.
    pub fn operands(&self) -> Vec<ValueId> {
        match self {
            Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Literal(_) | Op::Seed(_) => Vec::new(),
            Op::Unary(_, a)
            | Op::Transpose(a)
            | Op::Slice(a, _, _)
            | Op::Row(a, _)
            | Op::Reduce(_, a)
            | Op::SumBatch(a)
            | Op::SumElems(a)
            | Op::Place(a, _, _)
            | Op::PlaceRow(a, _, _) => vec![*a],
            Op::Binary(_, a, b) | Op::MatVec(a, b) | Op::Outer(a, b) => vec![*a, *b],
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

//! Syntax tree → checked model: names resolved, types and sizes inferred,
//! every rule of the language enforced.
//!
//! After check: every name resolves; every cell is typed with symbolic
//! sizes; every layer of every network has concrete sizes, constants and
//! input bindings for each stacked layer; the unroll mode is valid. User
//! errors end here: later stages cannot fail on user input.

mod cell;
pub mod dim;
mod network;
mod unroll;

pub use self::network::{MAX_LAYERS, MAX_SIZE};
pub use self::unroll::{check_unroll_mode, MAX_STATIC_STEPS, MAX_STEPS_PER_ITERATION};

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::ast;
pub(crate) use crate::diag::suggest;
use crate::diag::Diagnostics;
use crate::ops::{Elementwise, Unary};
use crate::parse;
use crate::source::{SourceFile, Span};
pub use rnn_runtime::kernels::Precision;

use self::dim::SymDim;

/// The built-in cells, written in the language itself.
pub const PRELUDE: &str = include_str!("../prelude.rnn");

/// The prelude's name in diagnostics.
pub const PRELUDE_NAME: &str = "<prelude>";

/// A checked file: the cells it uses or defines, and its networks.
#[derive(Debug, Clone)]
pub struct Model {
    /// Every user cell and every prelude cell a network uses.
    pub cells: Vec<Cell>,
    /// Networks in source order.
    pub networks: Vec<Network>,
}

/// Checks a parsed file against the language's rules.
pub fn check(diags: &mut Diagnostics, file: &ast::File) -> Model {
    let prelude = prelude_cells();
    let mut cells: Vec<Cell> = Vec::new();
    let mut failed: Vec<&str> = Vec::new();
    for cell in &file.cells {
        if check_cell_name(diags, cell, &file.cells, prelude) {
            match cell::check_cell(diags, cell, false) {
                Some(checked) => cells.push(checked),
                None => failed.push(&cell.name.name),
            }
        }
    }
    // Built-in cells join the model only when a layer uses them.
    for layer in file.networks.iter().flat_map(|network| &network.layers) {
        let name = network::layer_cell_name(layer);
        if cells.iter().all(|cell| cell.name != name) {
            if let Some(built_in) = prelude.iter().find(|cell| cell.name == name) {
                cells.push(built_in.clone());
            }
        }
    }
    let known: Vec<&str> = file
        .cells
        .iter()
        .map(|cell| cell.name.name.as_str())
        .chain(prelude.iter().map(|cell| cell.name.as_str()))
        .collect();
    let lookup = network::CellTable {
        cells: &cells,
        failed: &failed,
        known: &known,
    };
    let mut networks = Vec::new();
    let mut seen_networks: HashMap<&str, Span> = HashMap::new();
    for network in &file.networks {
        check_network_name(diags, network, &mut seen_networks);
        if let Some(checked) = network::check_network(diags, network, &lookup) {
            networks.push(checked);
        }
    }
    Model { cells, networks }
}

/// Cell names are unique in a file and distinct from the prelude's, so a
/// layer's cell is never ambiguous.
///
/// ```text
/// cell lstm(x: [I]) -> h: [H] { ... }   // `lstm` is built in
/// ```
fn check_cell_name(
    diags: &mut Diagnostics,
    cell: &ast::Cell,
    all: &[ast::Cell],
    prelude: &[Cell],
) -> bool {
    use crate::diag::Diagnostic;
    if let Some(first) = all.iter().find(|other| other.name.name == cell.name.name) {
        if first.name.span != cell.name.span {
            diags.push(
                Diagnostic::error(
                    cell.name.span,
                    format!("cell `{}` is defined twice", cell.name.name),
                )
                .with_label("second definition")
                .with_secondary(first.name.span, "first defined here")
                .with_help("rename one of them"),
            );
            return false;
        }
    }
    if prelude
        .iter()
        .any(|built_in| built_in.name == cell.name.name)
    {
        diags.push(
            Diagnostic::error(
                cell.name.span,
                format!("`{}` is a built-in cell", cell.name.name),
            )
            .with_label("this name is taken by the prelude")
            .with_help(format!(
                "give your cell another name, e.g. `my_{}`",
                cell.name.name
            )),
        );
        return false;
    }
    true
}

/// Network names are unique in a file: `rnnc run --network NAME` and the
/// generated type names depend on it.
fn check_network_name<'a>(
    diags: &mut Diagnostics,
    network: &'a ast::Network,
    seen: &mut HashMap<&'a str, Span>,
) {
    use crate::diag::Diagnostic;
    if let Some(first) = seen.get(network.name.name.as_str()) {
        diags.push(
            Diagnostic::error(
                network.name.span,
                format!("network `{}` is defined twice", network.name.name),
            )
            .with_label("defined again here")
            .with_secondary(*first, "first defined here")
            .with_help("rename one of them"),
        );
    } else {
        seen.insert(&network.name.name, network.name.span);
    }
}

/// The prelude's cells, parsed and checked once.
pub fn prelude_cells() -> &'static [Cell] {
    static CELLS: OnceLock<Vec<Cell>> = OnceLock::new();
    CELLS.get_or_init(|| {
        let source = SourceFile::new(PRELUDE_NAME, PRELUDE);
        let mut diags = Diagnostics::new();
        let file = parse::parse(&mut diags, &source);
        let cells: Vec<Cell> = file
            .cells
            .iter()
            .filter_map(|cell| cell::check_cell(&mut diags, cell, true))
            .collect();
        if let Err(errors) = diags.finish() {
            panic!(
                "internal error: the prelude does not check:\n{}",
                crate::diag::render(&source, &errors)
            );
        }
        cells
    })
}

/// A typed cell. Sizes are symbolic: `sizes[k]` names size `k`.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The cell's name.
    pub name: String,
    /// Where its name was written (in the prelude for built-in cells).
    pub span: Span,
    /// Whether it comes from the prelude (its spans point there).
    pub from_prelude: bool,
    /// Size names, indexed by [`dim::SymId`].
    pub sizes: Vec<String>,
    /// Per-step inputs.
    pub inputs: Vec<Var>,
    /// States.
    pub states: Vec<Var>,
    /// Parameters in declaration order.
    pub params: Vec<Param>,
    /// Constants with their defaults.
    pub consts: Vec<Const>,
    /// Every value the body names, in evaluation order.
    pub bindings: Vec<Binding>,
    /// For each state, the binding holding its new value.
    pub updates: Vec<usize>,
    /// The binding holding the per-step output.
    pub output: usize,
    /// Size conditions checked when the cell is instantiated.
    pub constraints: Vec<Constraint>,
}

/// An input or state: a vector per sequence.
#[derive(Debug, Clone)]
pub struct Var {
    /// Its name.
    pub name: String,
    /// Its size.
    pub dim: SymDim,
    /// Where it was declared.
    pub span: Span,
}

/// A learned parameter.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its name in the cell (and the stem of its weight name).
    pub name: String,
    /// One size for a vector, two for a matrix.
    pub dims: Vec<SymDim>,
    /// Where `per step` was written, if it was: one copy per unrolled
    /// step, the layer's `steps` of them.
    pub per_step: Option<Span>,
    /// Whether it was declared `frozen`: read as the weights give it, never
    /// given a gradient.
    pub frozen: bool,
    /// The flag it depends on, if declared with `if flag`.
    pub condition: Option<usize>,
    /// Where it was declared.
    pub span: Span,
}

/// A compile-time constant of a cell, overridable per layer.
#[derive(Debug, Clone)]
pub struct Const {
    /// Its name.
    pub name: String,
    /// Its default.
    pub default: Value,
    /// Where it was declared.
    pub span: Span,
}

/// A constant's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A flag.
    Bool(bool),
    /// A number.
    Number(f64),
}

/// A named value in a cell body (`let`, a state update, the output).
#[derive(Debug, Clone)]
pub struct Binding {
    /// The name (generated for hidden bindings).
    pub name: String,
    /// The value.
    pub value: TExpr,
    /// Its type.
    pub ty: Ty,
    /// Where the name was written.
    pub span: Span,
    /// Whether this is a state's new value.
    pub is_update: bool,
    /// Whether the compiler made it up (chunk sources, the output).
    pub hidden: bool,
}

/// The type of a value in a step: a scalar, a vector, or a (parameter)
/// matrix. The batch dimension is implicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    /// A number.
    Scalar,
    /// `[n]`
    Vector(SymDim),
    /// `[m, n]`
    Matrix(SymDim, SymDim),
}

impl Ty {
    /// Writes the type with the cell's size names: `[4*H, I]`.
    pub fn display(&self, names: &[String]) -> String {
        match self {
            Ty::Scalar => "a scalar".to_owned(),
            Ty::Vector(len) => format!("[{}]", len.display(names)),
            Ty::Matrix(rows, cols) => format!("[{}, {}]", rows.display(names), cols.display(names)),
        }
    }
}

/// A typed expression.
#[derive(Debug, Clone)]
pub struct TExpr {
    /// What it computes.
    pub kind: TKind,
    /// Its type.
    pub ty: Ty,
    /// Where it was written.
    pub span: Span,
}

/// Typed expression forms.
#[derive(Debug, Clone)]
pub enum TKind {
    /// A literal.
    Number(f64),
    /// The cell's k-th input at this step.
    Input(usize),
    /// The k-th state before this step's update.
    State(usize),
    /// A binding.
    Binding(usize),
    /// A parameter.
    Param(usize),
    /// A numeric constant.
    Const(usize),
    /// `f(a)`.
    Unary(Unary, Box<TExpr>),
    /// `f(a, b, ...)` elementwise with broadcasting (operators too).
    Call(Elementwise, Vec<TExpr>),
    /// `matrix @ vector`.
    MatVec(Box<TExpr>, Box<TExpr>),
    /// `matrix^T`.
    Transpose(Box<TExpr>),
    /// Rows (or elements) `start..end`.
    Slice(Box<TExpr>, SymDim, SymDim),
    /// Row `index` of a matrix, as a vector.
    Row(Box<TExpr>, SymDim),
    /// Chosen by a flag when the cell is instantiated.
    If(usize, Box<TExpr>, Box<TExpr>),
    /// A function of whole vectors: `sum(v)`, `softmax(v)`, `dot(a, b)`.
    Vector(VectorFunc, Vec<TExpr>),
}

/// The functions of whole vectors: reductions to one value (a one-element
/// vector, which broadcasts) and the normalisations built on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorFunc {
    /// `sum(v)`: the sum of the elements.
    Sum,
    /// `mean(v)`: their mean.
    Mean,
    /// `max(v)`: the largest (`max(a, b)` is elementwise).
    Max,
    /// `dot(a, b)`: `sum(a * b)`.
    Dot,
    /// `softmax(v)`: `exp(v - max(v)) / sum(exp(v - max(v)))`.
    Softmax,
    /// `log_softmax(v)`: `v - max(v) - log(sum(exp(v - max(v))))`.
    LogSoftmax,
}

impl VectorFunc {
    /// Every one, in the order diagnostics list them.
    pub const ALL: [VectorFunc; 6] = [
        VectorFunc::Sum,
        VectorFunc::Mean,
        VectorFunc::Max,
        VectorFunc::Dot,
        VectorFunc::Softmax,
        VectorFunc::LogSoftmax,
    ];

    /// Its name in the language.
    pub fn name(self) -> &'static str {
        match self {
            VectorFunc::Sum => "sum",
            VectorFunc::Mean => "mean",
            VectorFunc::Max => "max",
            VectorFunc::Dot => "dot",
            VectorFunc::Softmax => "softmax",
            VectorFunc::LogSoftmax => "log_softmax",
        }
    }

    /// How many vectors it takes.
    pub fn arity(self) -> usize {
        match self {
            VectorFunc::Dot => 2,
            _ => 1,
        }
    }

    /// Whether it gives one value (a one-element vector) rather than a
    /// vector of its argument's size.
    pub fn reduces(self) -> bool {
        !matches!(self, VectorFunc::Softmax | VectorFunc::LogSoftmax)
    }
}

/// A size condition that can only be decided once sizes are known.
#[derive(Debug, Clone)]
pub enum Constraint {
    /// The size is a whole number of at least 1.
    Positive(SymDim, Span),
    /// `0 <= index < len`.
    Index {
        /// The index.
        index: SymDim,
        /// The length indexed.
        len: SymDim,
        /// The indexing expression.
        span: Span,
    },
    /// `0 <= start < end <= len`.
    Slice {
        /// First row.
        start: SymDim,
        /// One past the last row.
        end: SymDim,
        /// The length sliced.
        len: SymDim,
        /// The slicing expression.
        span: Span,
    },
}

/// A checked network.
#[derive(Debug, Clone)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// Where its name was written.
    pub span: Span,
    /// Per-step inputs and contexts, in declaration order.
    pub inputs: Vec<NetInput>,
    /// Layer statements in order.
    pub layers: Vec<Layer>,
    /// How it is unrolled.
    pub unroll: UnrollMode,
    /// The precision of the weights its products read (`precision bf16;`),
    /// `None` for `f32`. States, activations and sums stay `f32`, and so
    /// does training.
    pub precision: Option<Precision>,
}

/// A network input.
#[derive(Debug, Clone)]
pub struct NetInput {
    /// Its name (the tensor name at run time).
    pub name: String,
    /// Its size per step.
    pub size: usize,
    /// `input` (a value per step) or `context` (one value for all steps).
    pub per_step: bool,
    /// Where it was declared.
    pub span: Span,
}

/// A checked `layer` statement.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Its name.
    pub name: String,
    /// The statement.
    pub span: Span,
    /// Index into [`Model::cells`].
    pub cell: usize,
    /// Whether a backward direction runs too.
    pub bidirectional: bool,
    /// Whether its one direction runs backward (`reverse`): over each
    /// sequence's valid part from its end, as the backward half of a
    /// bidirectional layer does.
    pub reverse: bool,
    /// The copies of each per-step parameter when its cell has some: the
    /// layer's `steps = K`, or N of `unroll static N`.
    pub steps: Option<usize>,
    /// `steps = K` as written, until the network's unroll mode is known.
    pub steps_arg: Option<(usize, Span)>,
    /// One instance per stacked layer (`layers = N`).
    pub stack: Vec<Instance>,
}

/// One stacked layer: a cell with every size and constant known.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Value of each size, by [`dim::SymId`].
    pub sizes: Vec<usize>,
    /// Value of each constant.
    pub consts: Vec<Value>,
    /// Where each cell input comes from.
    pub inputs: Vec<InputSource>,
    /// Size of the per-step output of one direction.
    pub output_size: usize,
}

/// Where a cell input's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSource {
    /// The previous layer's output sequence (or the network's per-step
    /// input for the first layer).
    Previous,
    /// A network input or context, by index into [`Network::inputs`].
    Network(usize),
}

/// A checked unroll mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnrollMode {
    /// Exactly N steps, straight-line.
    Static(usize),
    /// One static unrolling per bucket, sorted ascending.
    Buckets {
        /// Bucket lengths, ascending, distinct.
        lengths: Vec<usize>,
        /// Whether longer batches run dynamically instead of failing.
        dynamic_fallback: bool,
    },
    /// A loop over the run-time length.
    Dynamic,
    /// A loop whose body holds k steps.
    DynamicBy(usize),
}

#[cfg(test)]
mod tests;

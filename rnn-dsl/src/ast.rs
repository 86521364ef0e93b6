//! The syntax tree, as written. Every node carries its [`Span`].
//!
//! After parse: the text matched the grammar; nothing is resolved yet.

use crate::source::Span;

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where it stands.
    pub span: Span,
}

/// One parsed file: cells and networks in source order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct File {
    /// Cell definitions.
    pub cells: Vec<Cell>,
    /// Network definitions.
    pub networks: Vec<Network>,
}

/// `cell name(inputs) -> states { body }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The cell's name.
    pub name: Ident,
    /// Per-step inputs.
    pub inputs: Vec<TypedName>,
    /// State variables; the first is the default output.
    pub states: Vec<TypedName>,
    /// Statements in order.
    pub body: Vec<CellStmt>,
    /// The whole definition.
    pub span: Span,
}

/// `name: [dims]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedName {
    /// The name.
    pub name: Ident,
    /// Its shape.
    pub shape: Shape,
}

/// `[d0, d1, ...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// The dimensions.
    pub dims: Vec<Dim>,
    /// The brackets and all between.
    pub span: Span,
}

/// A dimension expression over whole numbers and size names.
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    /// A whole number.
    Int(u64, Span),
    /// A size name such as `H`.
    Name(Ident),
    /// `a op b`.
    Binary(Box<Dim>, DimOp, Box<Dim>, Span),
}

impl Dim {
    /// Where the dimension was written.
    pub fn span(&self) -> Span {
        match self {
            Dim::Int(_, span) | Dim::Binary(_, _, _, span) => *span,
            Dim::Name(ident) => ident.span,
        }
    }
}

/// Arithmetic in dimension expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (must divide exactly)
    Div,
}

/// A statement in a cell body.
#[derive(Debug, Clone, PartialEq)]
pub enum CellStmt {
    /// `param name: shape [per step] [frozen] [if flag];`
    Param {
        /// Parameter name.
        name: Ident,
        /// Its shape.
        shape: Shape,
        /// Where `per step` was written: one copy per unrolled step.
        per_step: Option<Span>,
        /// Where `frozen` was written: no gradient.
        frozen: Option<Span>,
        /// The boolean constant that decides whether it exists.
        condition: Option<Ident>,
    },
    /// `const name = value;`
    Const {
        /// Constant name.
        name: Ident,
        /// Its default value.
        value: ConstValue,
    },
    /// `let name = expr;` or `let (a, b) = chunk(v, 2);`
    Let {
        /// Names bound, one or several.
        names: Vec<Ident>,
        /// Whether the target was written as a tuple.
        tuple: bool,
        /// The value.
        value: Expr,
    },
    /// `state = expr;`
    Update {
        /// The state updated.
        name: Ident,
        /// Its new value.
        value: Expr,
    },
    /// `output expr;`
    Output {
        /// The per-step output.
        value: Expr,
        /// The statement.
        span: Span,
    },
}

/// A constant's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConstValue {
    /// `true` or `false`.
    Bool(bool, Span),
    /// A number (possibly `inf` or negative).
    Number(f64, Span),
}

impl ConstValue {
    /// Where the value was written.
    pub fn span(&self) -> Span {
        match self {
            ConstValue::Bool(_, span) | ConstValue::Number(_, span) => *span,
        }
    }
}

/// An expression over per-step values.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What kind of expression.
    pub kind: ExprKind,
    /// Where it was written.
    pub span: Span,
}

/// Expression forms.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A numeric literal (`inf` too).
    Number(f64),
    /// A name: input, state, parameter, constant or `let` binding.
    Name(Ident),
    /// `-e`
    Neg(Box<Expr>),
    /// `a op b`
    Binary(Box<Expr>, BinOp, Box<Expr>),
    /// `f(args)`
    Call(Ident, Vec<Expr>),
    /// `e^T`
    Transpose(Box<Expr>),
    /// `e[i]` (a row of a matrix, or an element of a vector)
    Index(Box<Expr>, Dim),
    /// `e[a..b]`
    Slice(Box<Expr>, Dim, Dim),
    /// `if flag { a } else { b }`, decided when the cell is instantiated.
    If(Ident, Box<Expr>, Box<Expr>),
}

/// Binary operators. `@` binds tighter than `*` and `/`, which bind tighter
/// than `+` and `-`; all are left-associative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+` elementwise
    Add,
    /// `-` elementwise
    Sub,
    /// `*` elementwise
    Mul,
    /// `/` elementwise
    Div,
    /// `@` matrix–vector product
    MatMul,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::MatMul => "@",
        }
    }
}

/// `network Name { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// The network's name.
    pub name: Ident,
    /// Per-step inputs (`input x: [I];`).
    pub inputs: Vec<NetInput>,
    /// Inputs that are the same at every step (`context y: [M];`).
    pub contexts: Vec<NetInput>,
    /// Layers in order; each consumes the previous one's output sequence.
    pub layers: Vec<Layer>,
    /// Every `unroll` statement (the checker wants exactly one).
    pub unrolls: Vec<Unroll>,
    /// Every `precision` statement (the checker wants at most one): the
    /// name written, e.g. `bf16`.
    pub precisions: Vec<Ident>,
    /// The whole definition.
    pub span: Span,
}

/// A network input or context.
#[derive(Debug, Clone, PartialEq)]
pub struct NetInput {
    /// Its name.
    pub name: Ident,
    /// Its per-step shape.
    pub shape: Shape,
}

/// `layer name = cell(args);`
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// The layer's name.
    pub name: Ident,
    /// The cell it instantiates.
    pub cell: Ident,
    /// Arguments: sizes, constants, `layers`, `bidirectional`.
    pub args: Vec<LayerArg>,
    /// The statement.
    pub span: Span,
}

/// `name = value` or a bare flag `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerArg {
    /// Argument name.
    pub name: Ident,
    /// Value; `None` for a bare flag (which means `true`).
    pub value: Option<ConstValue>,
}

/// `unroll mode;`
#[derive(Debug, Clone, PartialEq)]
pub struct Unroll {
    /// The mode.
    pub mode: UnrollMode,
    /// The statement.
    pub span: Span,
}

/// How a network is unrolled over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnrollMode {
    /// `static N`: straight-line code for exactly N steps.
    Static(u64),
    /// `static buckets [a, b, ...] [else dynamic]`.
    Buckets {
        /// Bucket lengths as written.
        lengths: Vec<u64>,
        /// Whether a batch longer than the largest bucket runs dynamically.
        dynamic_fallback: bool,
    },
    /// `dynamic`: a loop over the run-time length.
    Dynamic,
    /// `dynamic by k`: a loop whose body holds k steps.
    DynamicBy(u64),
}

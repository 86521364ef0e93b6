//! Resolving and typing one cell definition, before any size is known.
//!
//! After this pass: every name in the body resolves to an input, a state
//! (before or after its update), a parameter, a constant or a `let`
//! binding; every expression has a symbolic type; every state is updated
//! exactly once; and every size that must be checked once sizes are known
//! is recorded as a [`Constraint`].
//!
//! Here: the entry, the cell's context and its declarations (sizes,
//! inputs, states, parameters, constants). `stmt.rs` checks the body's
//! statements; `expr.rs` types expressions.

mod expr;
mod stmt;

use std::collections::HashMap;

use crate::ast;
use crate::check::dim::{DimError, SymDim, SymId};
use crate::check::network::MAX_SIZE;
use crate::check::{suggest, Binding, Cell, Const, Constraint, Param, Value, Var};
use crate::diag::{Diagnostic, Diagnostics};
use crate::source::Span;

/// Resolves and types `cell`. Returns `None` if it has errors.
pub(super) fn check_cell(
    diags: &mut Diagnostics,
    cell: &ast::Cell,
    from_prelude: bool,
) -> Option<Cell> {
    let errors_before = diags.error_count();
    let mut cx = CellCx {
        diags,
        sizes: Vec::new(),
        names: HashMap::new(),
        true_flags: Vec::new(),
        constraints: Vec::new(),
        params: Vec::new(),
        consts: Vec::new(),
        bindings: Vec::new(),
        param_used: Vec::new(),
        binding_used: Vec::new(),
        var_dims: HashMap::new(),
        states: Vec::new(),
        updates: Vec::new(),
        assigned: Vec::new(),
    };
    let inputs: Vec<Var> = cell
        .inputs
        .iter()
        .filter_map(|input| cx.var(input))
        .collect();
    let states: Vec<Var> = cell
        .states
        .iter()
        .filter_map(|state| cx.var(state))
        .collect();
    cx.states = states.clone();
    cx.updates = vec![None; states.len()];
    cx.assigned = vec![None; states.len()];
    for (idx, input) in inputs.iter().enumerate() {
        cx.declare(&input.name, input.span, Name::Input(idx));
        cx.var_dims.insert(Name::Input(idx), input.dim.clone());
    }
    for (idx, state) in states.iter().enumerate() {
        cx.declare(&state.name, state.span, Name::State(idx));
        cx.var_dims.insert(Name::State(idx), state.dim.clone());
    }
    // Parameters and constants are declarations: usable anywhere in the body.
    for stmt in &cell.body {
        match stmt {
            ast::CellStmt::Param {
                name,
                shape,
                per_step,
                frozen,
                condition,
            } => cx.declare_param(name, shape, *per_step, frozen.is_some(), condition.as_ref()),
            ast::CellStmt::Const { name, value } => cx.declare_const(name, *value),
            _ => {}
        }
    }
    for param in 0..cx.params.len() {
        if let Some(flag) = cx.params[param].condition_name.clone() {
            cx.params[param].param.condition = cx.resolve_flag(&flag);
        }
    }
    let mut output: Option<(usize, Span)> = None;
    for stmt in &cell.body {
        match stmt {
            ast::CellStmt::Param { .. } | ast::CellStmt::Const { .. } => {}
            ast::CellStmt::Let {
                names,
                tuple,
                value,
            } => cx.check_let(names, *tuple, value),
            ast::CellStmt::Update { name, value } => cx.check_update(name, value),
            ast::CellStmt::Output { value, span } => cx.check_output(value, *span, &mut output),
        }
    }
    check_every_state_updated(cx.diags, cell, &states, &cx.assigned);
    if cx.diags.error_count() > errors_before {
        return None;
    }
    // Only a cell without errors is linted: in a broken cell, a value that
    // looks unused is usually read by the statement that failed to check.
    check_unused(&mut cx);
    let updates: Vec<usize> = cx
        .updates
        .iter()
        .map(|update| update.expect("every state is assigned and no error"))
        .collect();
    let output = output.map_or(updates[0], |(binding, _)| binding);
    for var in inputs.iter().chain(&states) {
        cx.constraints
            .push(Constraint::Positive(var.dim.clone(), var.span));
    }
    Some(Cell {
        name: cell.name.name.clone(),
        span: cell.name.span,
        from_prelude,
        sizes: cx.sizes.iter().map(|(name, _)| name.clone()).collect(),
        inputs,
        states,
        params: cx.params.into_iter().map(|param| param.param).collect(),
        consts: cx.consts,
        bindings: cx.bindings,
        updates,
        output,
        constraints: cx.constraints,
    })
}

/// Every state must be updated once per step: a state that is never
/// assigned would silently stay at its initial value. A state whose
/// assignment has an error counts as assigned, so that error is not
/// followed by this one.
///
/// ```text
/// cell c(x: [N]) -> (h: [N], c: [N]) { h = x; }   // `c` never updated
/// ```
fn check_every_state_updated(
    diags: &mut Diagnostics,
    cell: &ast::Cell,
    states: &[Var],
    assigned: &[Option<Span>],
) {
    for (state, assigned) in states.iter().zip(assigned) {
        if assigned.is_none() {
            diags.push(
                Diagnostic::error(
                    state.span,
                    format!("state `{}` is never updated", state.name),
                )
                .with_label("declared here")
                .with_secondary(cell.name.span, "in this cell")
                .with_help(format!("add `{} = ...;` to the cell body", state.name)),
            );
        }
    }
}

/// Parameters and `let` bindings that nothing reads are probably mistakes;
/// an unused parameter would also make weight files carry dead tensors.
///
/// ```text
/// param w: [H, I];   // never used
/// ```
fn check_unused(cx: &mut CellCx<'_>) {
    for (param, used) in cx.params.iter().zip(&cx.param_used) {
        if !used {
            cx.diags.push(
                Diagnostic::warning(
                    param.param.span,
                    format!("parameter `{}` is never used", param.param.name),
                )
                .with_help("remove it, or use it in an expression"),
            );
        }
    }
    for (binding, used) in cx.bindings.iter().zip(&cx.binding_used) {
        if !used && !binding.is_update && !binding.name.starts_with('_') && !binding.hidden {
            cx.diags.push(
                Diagnostic::warning(binding.span, format!("`{}` is never used", binding.name))
                    .with_help(format!("remove it, or name it `_{}`", binding.name)),
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Name {
    Input(usize),
    State(usize),
    Param(usize),
    Const(usize),
    Binding(usize),
    /// A name whose declaration had an error (already reported): uses of
    /// it report nothing more.
    Poisoned,
}

struct PendingParam {
    param: Param,
    condition_name: Option<ast::Ident>,
}

struct CellCx<'d> {
    diags: &'d mut Diagnostics,
    sizes: Vec<(String, Span)>,
    names: HashMap<String, (Name, Span)>,
    true_flags: Vec<usize>,
    constraints: Vec<Constraint>,
    params: Vec<PendingParam>,
    consts: Vec<Const>,
    bindings: Vec<Binding>,
    param_used: Vec<bool>,
    binding_used: Vec<bool>,
    var_dims: HashMap<Name, SymDim>,
    /// The cell's states, by [`Name::State`] index.
    states: Vec<Var>,
    /// For each state, the binding holding its new value.
    updates: Vec<Option<usize>>,
    /// For each state, where it was first assigned (even with an error).
    assigned: Vec<Option<Span>>,
}

impl CellCx<'_> {
    fn size(&mut self, ident: &ast::Ident, create: bool) -> Option<SymId> {
        if let Some(idx) = self.sizes.iter().position(|(name, _)| *name == ident.name) {
            return Some(idx as SymId);
        }
        if create {
            self.sizes.push((ident.name.clone(), ident.span));
            return Some((self.sizes.len() - 1) as SymId);
        }
        let known: Vec<&str> = self.sizes.iter().map(|(name, _)| name.as_str()).collect();
        let mut diagnostic =
            Diagnostic::error(ident.span, format!("unknown size `{}`", ident.name))
                .with_label("not a size of this cell")
                .with_note(
                    "sizes are named in the shapes of the cell's inputs, states and parameters",
                );
        if let Some(close) = suggest(&ident.name, known.iter().copied()) {
            diagnostic = diagnostic.with_help(format!("did you mean `{close}`?"));
        }
        self.diags.push(diagnostic);
        None
    }

    /// Converts a dimension expression; `create` lets new size names in
    /// (shapes declare sizes; indices only use them).
    fn dim(&mut self, dim: &ast::Dim, create: bool) -> Option<SymDim> {
        match dim {
            ast::Dim::Int(value, _) => Some(SymDim::int(i128::from(*value))),
            ast::Dim::Name(ident) => self.size(ident, create).map(SymDim::sym),
            ast::Dim::Binary(lhs, op, rhs, span) => {
                let lhs = self.dim(lhs, create);
                let rhs = self.dim(rhs, create);
                let (lhs, rhs) = (lhs?, rhs?);
                let result = match op {
                    ast::DimOp::Add => lhs.add(&rhs),
                    ast::DimOp::Sub => lhs.sub(&rhs),
                    ast::DimOp::Mul => lhs.mul(&rhs),
                    ast::DimOp::Div => lhs.div(&rhs),
                };
                self.dim_result(result, *span)
            }
        }
    }

    /// Reports a failed size computation at `span`.
    fn dim_result(&mut self, result: Result<SymDim, DimError>, span: Span) -> Option<SymDim> {
        let error = match result {
            Ok(dim) => return Some(dim),
            Err(error) => error,
        };
        let (message, help) = match error {
            DimError::DivideBySize => (
                "a size can only be divided by a number",
                "write the size in other terms, e.g. `[H]` instead of `[G*H/G]`",
            ),
            DimError::DivideByZero => ("size divided by zero", "divide by a positive number"),
            DimError::Overflow => ("size is too large", "use smaller numbers"),
            DimError::TooComplex => (
                "size expression is too complex",
                "write sizes as a few terms over the size names, e.g. `4*H + 1`",
            ),
        };
        self.diags
            .push(Diagnostic::error(span, message).with_help(help));
        None
    }

    /// Inputs and states are vectors (one size: the batch is implicit);
    /// parameters are vectors or matrices. Larger ranks have no meaning in
    /// a step.
    ///
    /// ```text
    /// param w: [4, H, I];   // stack gates along the rows: [4*H, I]
    /// ```
    fn check_shape_rank(&mut self, what: &str, shape: &ast::Shape, max_rank: usize) -> bool {
        let rank = shape.dims.len();
        if rank <= max_rank {
            return true;
        }
        let (message, note) = if max_rank == 1 {
            (
                format!("{what} must have one size, found {rank} sizes"),
                "the batch dimension is implicit: `x: [I]` holds one vector per sequence",
            )
        } else {
            (
                format!("{what} has {rank} dimensions; parameters have at most {max_rank}"),
                "parameters are vectors `[n]` or matrices `[m, n]`; stack gates along the rows, e.g. `[4*H, I]`",
            )
        };
        self.diags.push(
            Diagnostic::error(shape.span, message)
                .with_label(format!("{rank} dimensions"))
                .with_note(note),
        );
        false
    }

    fn shape(&mut self, what: &str, shape: &ast::Shape, max_rank: usize) -> Option<Vec<SymDim>> {
        if !self.check_shape_rank(what, shape, max_rank) {
            return None;
        }
        let dims: Vec<Option<SymDim>> = shape
            .dims
            .iter()
            .map(|dim| {
                let sym = self.dim(dim, true)?;
                self.check_constant_size(&sym, dim.span()).then_some(sym)
            })
            .collect();
        dims.into_iter().collect()
    }

    /// A size written as a number (or arithmetic on numbers) is a whole
    /// number from 1 to [`MAX_SIZE`]; that is known without any layer, so
    /// it is reported at the cell.
    ///
    /// ```text
    /// param w: [0, H];   // an empty matrix
    /// ```
    fn check_constant_size(&mut self, dim: &SymDim, span: Span) -> bool {
        let Some(value) = dim.as_const() else {
            return true;
        };
        if value
            .as_int()
            .is_some_and(|int| (1..=MAX_SIZE).contains(&int))
        {
            return true;
        }
        self.diags.push(
            Diagnostic::error(
                span,
                format!("size must be a whole number from 1 to {MAX_SIZE}, found {value}"),
            )
            .with_label("invalid size"),
        );
        false
    }

    fn var(&mut self, typed: &ast::TypedName) -> Option<Var> {
        let Some(dims) = self.shape(&format!("`{}`", typed.name.name), &typed.shape, 1) else {
            self.names
                .entry(typed.name.name.clone())
                .or_insert((Name::Poisoned, typed.name.span));
            return None;
        };
        Some(Var {
            name: typed.name.name.clone(),
            dim: dims
                .into_iter()
                .next()
                .expect("grammar: shapes have a dimension"),
            span: typed.name.span,
        })
    }

    /// Names in a cell are unique: inputs, states, parameters, constants and
    /// `let` bindings share one namespace, so `h` always means one thing.
    ///
    /// ```text
    /// param h: [H];   // `h` is already the state
    /// ```
    fn declare(&mut self, name: &str, span: Span, value: Name) -> bool {
        if let Some((_, previous)) = self.names.get(name) {
            self.diags.push(
                Diagnostic::error(span, format!("`{name}` is defined twice"))
                    .with_label("second definition")
                    .with_secondary(*previous, "first defined here")
                    .with_help("give it another name"),
            );
            return false;
        }
        self.names.insert(name.to_owned(), (value, span));
        true
    }

    fn declare_param(
        &mut self,
        name: &ast::Ident,
        shape: &ast::Shape,
        per_step: Option<Span>,
        frozen: bool,
        condition: Option<&ast::Ident>,
    ) {
        let Some(dims) = self.shape(&format!("parameter `{}`", name.name), shape, 2) else {
            self.declare(&name.name, name.span, Name::Poisoned);
            return;
        };
        for dim in &dims {
            self.constraints
                .push(Constraint::Positive(dim.clone(), shape.span));
        }
        let idx = self.params.len();
        if self.declare(&name.name, name.span, Name::Param(idx)) {
            self.params.push(PendingParam {
                param: Param {
                    name: name.name.clone(),
                    dims,
                    per_step,
                    frozen,
                    condition: None,
                    span: name.span,
                },
                condition_name: condition.cloned(),
            });
            self.param_used.push(false);
        }
    }

    fn declare_const(&mut self, name: &ast::Ident, value: ast::ConstValue) {
        let idx = self.consts.len();
        if self.declare(&name.name, name.span, Name::Const(idx)) {
            let value = match value {
                ast::ConstValue::Bool(flag, _) => Value::Bool(flag),
                ast::ConstValue::Number(number, _) => Value::Number(number),
            };
            self.consts.push(Const {
                name: name.name.clone(),
                default: value,
                span: name.span,
            });
        }
    }

    /// A condition (`param p: [H] if flag;`, `if flag { } else { }`) must
    /// name a boolean constant of the cell, so it is decided per layer.
    ///
    /// ```text
    /// const clip = 3.0;
    /// param p: [H] if clip;   // `clip` is a number
    /// ```
    fn resolve_flag(&mut self, flag: &ast::Ident) -> Option<usize> {
        match self.names.get(&flag.name) {
            Some((Name::Const(idx), _)) if matches!(self.consts[*idx].default, Value::Bool(_)) => {
                Some(*idx)
            }
            Some((Name::Poisoned, _)) => None,
            Some((name, declared)) => {
                let what = match name {
                    Name::Const(_) => "a number",
                    Name::Input(_) => "an input",
                    Name::State(_) => "a state",
                    Name::Param(_) => "a parameter",
                    Name::Binding(_) | Name::Poisoned => "a value",
                };
                self.diags.push(
                    Diagnostic::error(flag.span, format!("`{}` is {what}, not a flag", flag.name))
                        .with_label("expected a `true`/`false` constant")
                        .with_secondary(*declared, format!("`{}` is declared here", flag.name))
                        .with_help("conditions name a constant declared as `const flag = false;`"),
                );
                None
            }
            None => {
                let mut diagnostic =
                    Diagnostic::error(flag.span, format!("unknown flag `{}`", flag.name))
                        .with_help(format!("declare it with `const {} = false;`", flag.name));
                let flags = self
                    .consts
                    .iter()
                    .filter(|konst| matches!(konst.default, Value::Bool(_)))
                    .map(|konst| konst.name.as_str());
                if let Some(close) = suggest(&flag.name, flags) {
                    diagnostic = diagnostic.with_help(format!("did you mean `{close}`?"));
                }
                self.diags.push(diagnostic);
                None
            }
        }
    }
}

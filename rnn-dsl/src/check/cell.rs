//! Resolving and typing one cell definition, before any size is known.
//!
//! After this pass: every name in the body resolves to an input, a state
//! (before or after its update), a parameter, a constant or a `let`
//! binding; every expression has a symbolic type; every state is updated
//! exactly once; and every size that must be checked once sizes are known
//! is recorded as a [`Constraint`].

use std::collections::HashMap;

use crate::ast;
use crate::check::dim::{DimError, SymDim, SymId};
use crate::check::network::MAX_SIZE;
use crate::check::{
    suggest, Binding, Cell, Const, Constraint, Func, Param, TExpr, TKind, Ty, Value, Var,
};
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
                condition,
            } => cx.declare_param(name, shape, condition.as_ref()),
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

    fn push_binding(
        &mut self,
        name: &ast::Ident,
        value: TExpr,
        is_update: bool,
        hidden: bool,
    ) -> usize {
        self.bindings.push(Binding {
            name: name.name.clone(),
            ty: value.ty.clone(),
            value,
            span: name.span,
            is_update,
            hidden,
        });
        self.binding_used.push(false);
        self.bindings.len() - 1
    }

    fn check_let(&mut self, names: &[ast::Ident], tuple: bool, value: &ast::Expr) {
        let mut names_state = false;
        for name in names {
            names_state |= !self.check_let_not_state(name);
        }
        if names_state {
            // Still check the value: it may hold errors of its own.
            self.expr(value);
            for name in names {
                self.declare_poisoned(name);
            }
            return;
        }
        if tuple {
            self.check_chunk_let(names, value);
            return;
        }
        let name = &names[0];
        match self.expr(value) {
            Some(value) => {
                let idx = self.bindings.len();
                if self.declare(&name.name, name.span, Name::Binding(idx)) {
                    self.push_binding(name, value, false, false);
                }
            }
            None => self.declare_poisoned(name),
        }
    }

    /// `let` names a new value; a state is updated without it. Writing
    /// `let h = ...` for a state `h` is the likely slip, so it gets its own
    /// message, and the state counts as assigned (no "never updated").
    ///
    /// ```text
    /// cell c(x: [H]) -> h: [H] { let h = tanh(x); }
    /// ```
    fn check_let_not_state(&mut self, name: &ast::Ident) -> bool {
        let Some(state_idx) = self.states.iter().position(|state| state.name == name.name) else {
            return true;
        };
        let state_span = self.states[state_idx].span;
        self.diags.push(
            Diagnostic::error(
                name.span,
                format!(
                    "`let {}` declares a new name, but `{}` is a state",
                    name.name, name.name
                ),
            )
            .with_label("already the name of a state")
            .with_secondary(state_span, "declared as a state here")
            .with_help(format!(
                "to update the state, write `{} = ...;` without `let`",
                name.name
            )),
        );
        self.assigned[state_idx].get_or_insert(name.span);
        false
    }

    /// Reserves a name whose value had an error, so later uses of it are
    /// not reported again as unknown.
    fn declare_poisoned(&mut self, name: &ast::Ident) {
        self.names
            .entry(name.name.clone())
            .or_insert((Name::Poisoned, name.span));
    }

    /// A tuple `let` splits a vector into equal chunks, in order:
    /// `let (i, f, g, o) = chunk(gates, 4);`. The count must match.
    ///
    /// ```text
    /// let (a, b) = chunk(v, 3);   // three chunks, two names
    /// ```
    fn check_chunk_let(&mut self, names: &[ast::Ident], value: &ast::Expr) {
        if self.chunk_let(names, value).is_none() {
            for name in names {
                self.declare_poisoned(name);
            }
        }
    }

    /// Checks `let (a, b, ...) = chunk(v, n);` and binds the names; `None`
    /// if it has an error (reported).
    fn chunk_let(&mut self, names: &[ast::Ident], value: &ast::Expr) -> Option<()> {
        let names_span = names[0].span.to(names[names.len() - 1].span);
        let list = names
            .iter()
            .map(|name| name.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let ast::ExprKind::Call(func, args) = &value.kind else {
            self.expr(value);
            self.diags.push(
                Diagnostic::error(value.span, "only `chunk` can be bound to several names")
                    .with_secondary(names_span, format!("{} names", names.len()))
                    .with_help(format!("write `let ({list}) = chunk(v, {});`", names.len())),
            );
            return None;
        };
        if func.name != "chunk" {
            self.expr(value);
            self.diags.push(
                Diagnostic::error(
                    func.span,
                    format!("`{}` returns one value, not {}", func.name, names.len()),
                )
                .with_secondary(names_span, format!("{} names", names.len()))
                .with_help(format!(
                    "to split a vector into {} names, write `chunk(v, {})`",
                    names.len(),
                    names.len()
                )),
            );
            return None;
        }
        let whole = args.first().and_then(|arg| self.expr(arg));
        if args.len() != 2 {
            self.diags.push(
                Diagnostic::error(
                    value.span,
                    format!("`chunk` takes 2 arguments, found {}", args.len()),
                )
                .with_label(format!("{} given", args.len()))
                .with_help(format!("write `chunk(v, {})`", names.len())),
            );
            return None;
        }
        let count = &args[1];
        match count.kind {
            ast::ExprKind::Number(parts) if parts == names.len() as f64 => {}
            ast::ExprKind::Number(parts) => {
                self.diags.push(
                    Diagnostic::error(
                        count.span,
                        format!(
                            "`chunk` splits into {parts} parts, but {} names are bound",
                            names.len()
                        ),
                    )
                    .with_label(format!("{parts} parts"))
                    .with_secondary(names_span, format!("{} names", names.len()))
                    .with_help(format!(
                        "split into {} parts: `chunk(..., {})`, or bind {parts} names",
                        names.len(),
                        names.len()
                    )),
                );
                return None;
            }
            _ => {
                self.diags.push(
                    Diagnostic::error(
                        count.span,
                        "the number of chunks must be written as a number",
                    )
                    .with_label("not a number")
                    .with_help(format!("write `chunk(..., {})`", names.len())),
                );
                return None;
            }
        }
        let whole = whole?;
        let (Ty::Vector(len) | Ty::Matrix(len, _)) = whole.ty.clone() else {
            self.diags.push(
                Diagnostic::error(args[0].span, "`chunk` splits a vector, found a scalar")
                    .with_label("this is a scalar"),
            );
            return None;
        };
        let count = SymDim::int(names.len() as i128);
        let part = self.dim_result(len.div(&count), args[0].span)?;
        self.constraints
            .push(Constraint::Positive(part.clone(), args[0].span));
        let whole_span = whole.span;
        let hidden_name = ast::Ident {
            name: format!("__chunk{}", self.bindings.len()),
            span: whole_span,
        };
        let whole_idx = self.push_binding(&hidden_name, whole, false, true);
        self.binding_used[whole_idx] = true;
        for (k, name) in names.iter().enumerate() {
            // Chunk k covers `k*part..(k+1)*part`, within the whole length,
            // so these products cannot overflow; report it if they do.
            let start = self.dim_result(part.mul(&SymDim::int(k as i128)), name.span)?;
            let end = self.dim_result(part.mul(&SymDim::int(k as i128 + 1)), name.span)?;
            let ty = match &self.bindings[whole_idx].ty {
                Ty::Matrix(_, cols) => Ty::Matrix(part.clone(), cols.clone()),
                _ => Ty::Vector(part.clone()),
            };
            let reference = TExpr {
                kind: TKind::Binding(whole_idx),
                ty: self.bindings[whole_idx].ty.clone(),
                span: whole_span,
            };
            let slice = TExpr {
                kind: TKind::Slice(Box::new(reference), start, end),
                ty,
                span: name.span,
            };
            let idx = self.bindings.len();
            if self.declare(&name.name, name.span, Name::Binding(idx)) {
                self.push_binding(name, slice, false, false);
            }
        }
        Some(())
    }

    /// Each state is assigned once; later statements see the new value, the
    /// way `c = f * c + i * g; h = o * tanh(c);` reads.
    ///
    /// ```text
    /// h = x; h = 2 * x;   // updated twice
    /// ```
    fn check_update(&mut self, name: &ast::Ident, value: &ast::Expr) {
        let value = self.expr(value);
        let Some(state_idx) = self.states.iter().position(|state| state.name == name.name) else {
            self.check_not_assignable(name);
            return;
        };
        if let Some(first) = self.assigned[state_idx] {
            self.diags.push(
                Diagnostic::error(name.span, format!("state `{}` is updated twice", name.name))
                    .with_label("second update")
                    .with_secondary(first, "first updated here")
                    .with_help("compute the value with `let` bindings and assign the state once"),
            );
            return;
        }
        self.assigned[state_idx] = Some(name.span);
        let Some(value) = value else {
            return;
        };
        let state = &self.states[state_idx];
        let fits = match &value.ty {
            Ty::Scalar => true,
            Ty::Vector(dim) => {
                *dim == state.dim || dim.as_const() == Some(super::dim::Ratio::int(1))
            }
            Ty::Matrix(..) => false,
        };
        if !fits {
            let state_ty = Ty::Vector(state.dim.clone());
            self.diags.push(
                Diagnostic::error(
                    value.span,
                    format!(
                        "shape mismatch: state `{}` is {}, the new value is {}",
                        state.name,
                        self.show(&state_ty),
                        self.show(&value.ty)
                    ),
                )
                .with_label(format!("this is {}", self.show(&value.ty)))
                .with_secondary(state.span, format!("declared as {}", self.show(&state_ty)))
                .with_help(
                    "a per-step result of another size goes in `output ...;`, not in a state",
                ),
            );
            return;
        }
        let state_dim = state.dim.clone();
        let value = TExpr {
            ty: Ty::Vector(state_dim),
            ..value
        };
        let idx = self.push_binding(name, value, true, false);
        self.updates[state_idx] = Some(idx);
        self.names
            .insert(name.name.clone(), (Name::Binding(idx), name.span));
    }

    /// Only states are assigned (`h = ...;`); inputs, parameters,
    /// constants and `let` bindings are fixed within a step.
    ///
    /// ```text
    /// cell c(x: [H]) -> h: [H] { x = 2 * x; h = x; }
    /// ```
    fn check_not_assignable(&mut self, name: &ast::Ident) {
        let what = match self.names.get(&name.name).copied() {
            Some((Name::Poisoned, _)) => return,
            Some((Name::Input(_), span)) => Some(("an input", span)),
            Some((Name::Param(_), span)) => Some(("a parameter", span)),
            Some((Name::Const(_), span)) => Some(("a constant", span)),
            Some((Name::Binding(_), span)) => Some(("a `let` binding", span)),
            Some((Name::State(_), span)) => Some(("a state", span)),
            None => None,
        };
        let Some((what, declared)) = what else {
            let mut diagnostic =
                Diagnostic::error(name.span, format!("unknown state `{}`", name.name))
                    .with_label("assigned here");
            if let Some(close) = suggest(
                &name.name,
                self.states.iter().map(|state| state.name.as_str()),
            ) {
                diagnostic = diagnostic.with_help(format!("did you mean `{close}`?"));
            } else {
                diagnostic = diagnostic.with_help(format!(
                    "declare it as a state after `->`, or name a value with `let {} = ...;`",
                    name.name
                ));
            }
            self.diags.push(diagnostic);
            return;
        };
        self.diags.push(
            Diagnostic::error(
                name.span,
                format!(
                    "`{}` is {what}, not a state, and cannot be assigned",
                    name.name
                ),
            )
            .with_label("assigned here")
            .with_secondary(declared, format!("declared as {what} here"))
            .with_help(
                "only states (declared after `->`) are assigned; name a new value with `let`",
            ),
        );
    }

    fn check_output(&mut self, value: &ast::Expr, span: Span, output: &mut Option<(usize, Span)>) {
        if let Some((_, first)) = output {
            self.diags.push(
                Diagnostic::error(span, "the cell has two `output` statements")
                    .with_secondary(*first, "first output here")
                    .with_help("a cell has one per-step output"),
            );
            return;
        }
        let Some(value) = self.expr(value) else {
            return;
        };
        if !matches!(value.ty, Ty::Vector(_)) {
            self.diags.push(
                Diagnostic::error(
                    value.span,
                    format!(
                        "the output must be a vector, found {}",
                        self.show(&value.ty)
                    ),
                )
                .with_note("the per-step output is one vector per sequence"),
            );
            return;
        }
        let ident = ast::Ident {
            name: "output".to_owned(),
            span,
        };
        let idx = self.push_binding(&ident, value, false, true);
        self.binding_used[idx] = true;
        *output = Some((idx, span));
    }

    fn show(&self, ty: &Ty) -> String {
        let names: Vec<String> = self.sizes.iter().map(|(name, _)| name.clone()).collect();
        ty.display(&names)
    }

    fn expr(&mut self, expr: &ast::Expr) -> Option<TExpr> {
        let span = expr.span;
        let (kind, ty) = match &expr.kind {
            ast::ExprKind::Number(value) => (TKind::Number(*value), Ty::Scalar),
            ast::ExprKind::Name(ident) => return self.name(ident),
            ast::ExprKind::Neg(inner) => {
                let inner = self.expr(inner)?;
                let ty = inner.ty.clone();
                (TKind::Unary(Func::Neg, Box::new(inner)), ty)
            }
            ast::ExprKind::Binary(lhs, op, rhs) => {
                let lhs = self.expr(lhs);
                let rhs = self.expr(rhs);
                let (lhs, rhs) = (lhs?, rhs?);
                if *op == ast::BinOp::MatMul {
                    let ty = self.matmul_ty(&lhs, &rhs, span)?;
                    (TKind::MatVec(Box::new(lhs), Box::new(rhs)), ty)
                } else {
                    let func = match op {
                        ast::BinOp::Add => Func::Add,
                        ast::BinOp::Sub => Func::Sub,
                        ast::BinOp::Mul => Func::Mul,
                        ast::BinOp::Div => Func::Div,
                        ast::BinOp::MatMul => unreachable!("handled above"),
                    };
                    let ty = self.broadcast(&[&lhs, &rhs], op.symbol(), span)?;
                    (TKind::Call(func, vec![lhs, rhs]), ty)
                }
            }
            ast::ExprKind::Transpose(inner) => {
                let inner = self.expr(inner)?;
                let ty = self.transpose_ty(&inner)?;
                (TKind::Transpose(Box::new(inner)), ty)
            }
            ast::ExprKind::Index(base, index) => {
                let base = self.expr(base)?;
                let index = self.dim(index, false)?;
                let (len, ty) = match &base.ty {
                    Ty::Matrix(rows, cols) => (rows.clone(), Ty::Vector(cols.clone())),
                    Ty::Vector(len) => (len.clone(), Ty::Vector(SymDim::int(1))),
                    Ty::Scalar => {
                        self.diags.push(
                            Diagnostic::error(span, "cannot index a scalar")
                                .with_label("this is a scalar"),
                        );
                        return None;
                    }
                };
                self.constraints.push(Constraint::Index {
                    index: index.clone(),
                    len,
                    span,
                });
                if matches!(base.ty, Ty::Matrix(..)) {
                    (TKind::Row(Box::new(base), index), ty)
                } else {
                    let end = self.dim_result(index.add(&SymDim::int(1)), span)?;
                    (TKind::Slice(Box::new(base), index, end), ty)
                }
            }
            ast::ExprKind::Slice(base, start, end) => {
                let base = self.expr(base)?;
                let start = self.dim(start, false);
                let end = self.dim(end, false);
                let (start, end) = (start?, end?);
                let part = self.dim_result(end.sub(&start), span)?;
                let (len, ty) = match &base.ty {
                    Ty::Matrix(rows, cols) => (rows.clone(), Ty::Matrix(part, cols.clone())),
                    Ty::Vector(len) => (len.clone(), Ty::Vector(part)),
                    Ty::Scalar => {
                        self.diags.push(
                            Diagnostic::error(span, "cannot slice a scalar")
                                .with_label("this is a scalar"),
                        );
                        return None;
                    }
                };
                self.constraints.push(Constraint::Slice {
                    start: start.clone(),
                    end: end.clone(),
                    len,
                    span,
                });
                (TKind::Slice(Box::new(base), start, end), ty)
            }
            ast::ExprKind::Call(func, args) => return self.call(func, args, span),
            ast::ExprKind::If(flag, then, otherwise) => {
                let flag_idx = self.resolve_flag(flag);
                if let Some(flag_idx) = flag_idx {
                    self.true_flags.push(flag_idx);
                }
                let then = self.expr(then);
                if flag_idx.is_some() {
                    self.true_flags.pop();
                }
                let otherwise = self.expr(otherwise);
                let (flag_idx, then, otherwise) = (flag_idx?, then?, otherwise?);
                let ty = self.broadcast(&[&then, &otherwise], "if/else", span)?;
                (TKind::If(flag_idx, Box::new(then), Box::new(otherwise)), ty)
            }
        };
        Some(TExpr { kind, ty, span })
    }

    fn name(&mut self, ident: &ast::Ident) -> Option<TExpr> {
        let span = ident.span;
        let Some((name, _)) = self.names.get(&ident.name).copied() else {
            let candidates: Vec<String> = self
                .names
                .keys()
                .filter(|name| !name.starts_with("__"))
                .cloned()
                .collect();
            if self.sizes.iter().any(|(size, _)| *size == ident.name) {
                self.diags.push(
                    Diagnostic::error(span, format!("size `{}` cannot be used as a value", ident.name))
                        .with_label("a size of this cell")
                        .with_note("sizes appear in shapes and indices; expressions compute on vectors")
                        .with_help("for a number that depends on the layer, declare `const k = 1.0;` and set it per layer"),
                );
                return None;
            }
            let mut diagnostic = Diagnostic::error(span, format!("unknown name `{}`", ident.name))
                .with_label("not defined in this cell");
            if let Some(close) = suggest(&ident.name, candidates.iter().map(String::as_str)) {
                diagnostic = diagnostic.with_help(format!("did you mean `{close}`?"));
            } else if FUNCS.iter().any(|(name, _)| *name == ident.name) {
                diagnostic = diagnostic.with_help(format!(
                    "`{}` is a function: call it as `{}(...)`",
                    ident.name, ident.name
                ));
            } else {
                diagnostic = diagnostic.with_help(format!(
                    "declare it: `param {}: [H];` or `let {} = ...;`",
                    ident.name, ident.name
                ));
            }
            self.diags.push(diagnostic);
            return None;
        };
        let (kind, ty) = match name {
            Name::Poisoned => return None,
            Name::Input(idx) => (TKind::Input(idx), None),
            Name::State(idx) => (TKind::State(idx), None),
            Name::Param(idx) => {
                self.param_used[idx] = true;
                let param = &self.params[idx].param;
                if let Some(flag) = param.condition {
                    if !self.true_flags.contains(&flag) {
                        let flag_name = self.consts[flag].name.clone();
                        self.diags.push(
                            Diagnostic::error(
                                span,
                                format!(
                                    "parameter `{}` exists only when `{flag_name}` is true",
                                    ident.name
                                ),
                            )
                            .with_label(format!("used where `{flag_name}` may be false"))
                            .with_secondary(param.span, format!("declared with `if {flag_name}`"))
                            .with_help(format!(
                                "use it inside `if {flag_name} {{ ... }} else {{ ... }}`"
                            )),
                        );
                        return None;
                    }
                }
                let ty = match &param.dims[..] {
                    [len] => Ty::Vector(len.clone()),
                    [rows, cols] => Ty::Matrix(rows.clone(), cols.clone()),
                    _ => unreachable!("parameters have rank 1 or 2"),
                };
                (TKind::Param(idx), Some(ty))
            }
            Name::Const(idx) => {
                if matches!(self.consts[idx].default, Value::Bool(_)) {
                    self.diags.push(
                        Diagnostic::error(
                            span,
                            format!("`{}` is a flag, not a number", ident.name),
                        )
                        .with_help(format!(
                            "choose between values with `if {} {{ ... }} else {{ ... }}`",
                            ident.name
                        )),
                    );
                    return None;
                }
                (TKind::Const(idx), Some(Ty::Scalar))
            }
            Name::Binding(idx) => {
                self.binding_used[idx] = true;
                (TKind::Binding(idx), Some(self.bindings[idx].ty.clone()))
            }
        };
        let ty = match ty {
            Some(ty) => ty,
            None => Ty::Vector(self.var_dims.get(&name)?.clone()),
        };
        Some(TExpr { kind, ty, span })
    }

    fn call(&mut self, func: &ast::Ident, args: &[ast::Expr], span: Span) -> Option<TExpr> {
        let Some((_, (resolved, arity))) = FUNCS.iter().find(|(name, _)| *name == func.name) else {
            let mut diagnostic =
                Diagnostic::error(func.span, format!("unknown function `{}`", func.name))
                    .with_label("not a function");
            if let Some(close) = suggest(&func.name, FUNCS.iter().map(|(name, _)| *name)) {
                diagnostic = diagnostic.with_help(format!("did you mean `{close}`?"));
            }
            let list: Vec<&str> = FUNCS.iter().map(|(name, _)| *name).collect();
            self.diags
                .push(diagnostic.with_note(format!("functions: {}", list.join(", "))));
            for arg in args {
                self.expr(arg);
            }
            return None;
        };
        if args.len() != *arity {
            // The arguments may hold errors of their own, and they use names.
            for arg in args {
                self.expr(arg);
            }
            self.diags.push(
                Diagnostic::error(
                    span,
                    format!(
                        "`{}` takes {} argument{}, found {}",
                        func.name,
                        arity,
                        if *arity == 1 { "" } else { "s" },
                        args.len()
                    ),
                )
                .with_label(format!("{} given", args.len()))
                .with_help(format!("call it as `{}`", signature(&func.name))),
            );
            return None;
        }
        match resolved {
            None => {
                // `chunk` outside a tuple `let`.
                self.diags.push(
                    Diagnostic::error(func.span, "`chunk` can only be the value of a tuple `let`")
                        .with_label("splits a vector into several names")
                        .with_help("write `let (a, b) = chunk(v, 2);`"),
                );
                None
            }
            Some(Func::Transpose) => {
                let inner = self.expr(&args[0])?;
                let ty = self.transpose_ty(&inner)?;
                Some(TExpr {
                    kind: TKind::Transpose(Box::new(inner)),
                    ty,
                    span,
                })
            }
            Some(func) => {
                let typed: Vec<Option<TExpr>> = args.iter().map(|arg| self.expr(arg)).collect();
                let typed: Vec<TExpr> = typed.into_iter().collect::<Option<_>>()?;
                let refs: Vec<&TExpr> = typed.iter().collect();
                let ty = self.broadcast(&refs, func.name(), span)?;
                let kind = if typed.len() == 1 {
                    TKind::Unary(
                        *func,
                        Box::new(typed.into_iter().next().expect("one argument")),
                    )
                } else {
                    TKind::Call(*func, typed)
                };
                Some(TExpr { kind, ty, span })
            }
        }
    }

    /// Elementwise operations take operands of one shape; a scalar or a
    /// one-element vector stands for a vector of any size.
    ///
    /// ```text
    /// param b: [I];
    /// h = tanh(w @ x + b);   // `w @ x` is [H], `b` is [I]
    /// ```
    fn broadcast(&mut self, operands: &[&TExpr], what: &str, span: Span) -> Option<Ty> {
        let mut result: Option<&TExpr> = None;
        for operand in operands {
            let Some(current) = result else {
                result = Some(operand);
                continue;
            };
            let merged = match (&current.ty, &operand.ty) {
                (_, Ty::Scalar) => current,
                (Ty::Scalar, _) => operand,
                (Ty::Vector(a), Ty::Vector(b)) if a == b => current,
                (Ty::Vector(a), Ty::Vector(_))
                    if a.as_const() == Some(super::dim::Ratio::int(1)) =>
                {
                    operand
                }
                (Ty::Vector(_), Ty::Vector(b))
                    if b.as_const() == Some(super::dim::Ratio::int(1)) =>
                {
                    current
                }
                (Ty::Matrix(a, b), Ty::Matrix(c, d)) if a == c && b == d => current,
                (lhs, rhs) => {
                    let mut diagnostic = Diagnostic::error(
                        span,
                        format!(
                            "shape mismatch in `{what}`: {} and {}",
                            self.show(lhs),
                            self.show(rhs)
                        ),
                    )
                    .with_secondary(current.span, format!("this is {}", self.show(lhs)))
                    .with_secondary(operand.span, format!("this is {}", self.show(rhs)));
                    if matches!(
                        (lhs, rhs),
                        (Ty::Matrix(..), Ty::Vector(_)) | (Ty::Vector(_), Ty::Matrix(..))
                    ) {
                        diagnostic = diagnostic.with_help("for a matrix–vector product, use `@`");
                    }
                    self.diags.push(diagnostic);
                    return None;
                }
            };
            result = Some(merged);
        }
        Some(result.map_or(Ty::Scalar, |expr| expr.ty.clone()))
    }

    /// `A @ v` takes a matrix `[m, n]` and a vector `[n]` and gives `[m]`.
    ///
    /// ```text
    /// param w: [H, I];
    /// let a = w @ h;   // `h` is [H], `w` wants [I]
    /// ```
    fn matmul_ty(&mut self, lhs: &TExpr, rhs: &TExpr, span: Span) -> Option<Ty> {
        match (&lhs.ty, &rhs.ty) {
            (Ty::Matrix(rows, cols), Ty::Vector(len)) if cols == len => {
                Some(Ty::Vector(rows.clone()))
            }
            (Ty::Matrix(_, cols), Ty::Vector(len)) => {
                self.diags.push(
                    Diagnostic::error(
                        span,
                        format!(
                            "shape mismatch in `@`: {} @ {}",
                            self.show(&lhs.ty),
                            self.show(&rhs.ty)
                        ),
                    )
                    .with_secondary(
                        lhs.span,
                        format!("this matrix takes vectors of size {}", self.show_dim(cols)),
                    )
                    .with_secondary(
                        rhs.span,
                        format!("this vector has size {}", self.show_dim(len)),
                    ),
                );
                None
            }
            (Ty::Matrix(..), Ty::Matrix(..)) => {
                self.diags.push(
                    Diagnostic::error(span, "`@` of two matrices is not supported")
                        .with_help("multiply the vector in two steps: `a @ (b @ x)`"),
                );
                None
            }
            (Ty::Matrix(..), Ty::Scalar) => {
                self.diags.push(
                    Diagnostic::error(
                        rhs.span,
                        "right side of `@` must be a vector, found a scalar",
                    )
                    .with_label("this is a scalar")
                    .with_help("to scale a matrix, use `*`"),
                );
                None
            }
            (lhs_ty, _) => {
                self.diags.push(
                    Diagnostic::error(
                        lhs.span,
                        format!(
                            "left side of `@` must be a matrix, found {}",
                            self.show(lhs_ty)
                        ),
                    )
                    .with_label(format!("this is {}", self.show(lhs_ty)))
                    .with_help("write the matrix first: `w @ x`; for elementwise products use `*`"),
                );
                None
            }
        }
    }

    fn transpose_ty(&mut self, inner: &TExpr) -> Option<Ty> {
        match &inner.ty {
            Ty::Matrix(rows, cols) => Some(Ty::Matrix(cols.clone(), rows.clone())),
            other => {
                self.diags.push(
                    Diagnostic::error(
                        inner.span,
                        format!(
                            "only matrices can be transposed, found {}",
                            self.show(other)
                        ),
                    )
                    .with_label(format!("this is {}", self.show(other)))
                    .with_note(
                        "vectors have no orientation here: `w @ x` already treats `x` as a column",
                    ),
                );
                None
            }
        }
    }

    fn show_dim(&self, dim: &SymDim) -> String {
        let names: Vec<String> = self.sizes.iter().map(|(name, _)| name.clone()).collect();
        let text = dim.display(&names).to_string();
        text
    }
}

/// How a function is called, for help lines.
fn signature(func: &str) -> &'static str {
    match func {
        "sigmoid" => "sigmoid(v)",
        "tanh" => "tanh(v)",
        "relu" => "relu(v)",
        "exp" => "exp(v)",
        "log" => "log(v)",
        "abs" => "abs(v)",
        "sign" => "sign(v)",
        "sqrt" => "sqrt(v)",
        "softplus" => "softplus(v)",
        "min" => "min(a, b)",
        "max" => "max(a, b)",
        "soft_threshold" => "soft_threshold(v, threshold)",
        "clip" => "clip(v, low, high)",
        "transpose" => "transpose(matrix)",
        "chunk" => "let (a, b) = chunk(v, 2)",
        _ => "f(...)",
    }
}

/// The functions of the language: name, (meaning, arity). `None` marks
/// `chunk`, which only a tuple `let` may call.
pub(super) const FUNCS: &[(&str, (Option<Func>, usize))] = &[
    ("sigmoid", (Some(Func::Sigmoid), 1)),
    ("tanh", (Some(Func::Tanh), 1)),
    ("relu", (Some(Func::Relu), 1)),
    ("exp", (Some(Func::Exp), 1)),
    ("log", (Some(Func::Log), 1)),
    ("abs", (Some(Func::Abs), 1)),
    ("sign", (Some(Func::Sign), 1)),
    ("sqrt", (Some(Func::Sqrt), 1)),
    ("softplus", (Some(Func::Softplus), 1)),
    ("min", (Some(Func::Min), 2)),
    ("max", (Some(Func::Max), 2)),
    ("soft_threshold", (Some(Func::SoftThreshold), 2)),
    ("clip", (Some(Func::Clip), 3)),
    ("transpose", (Some(Func::Transpose), 1)),
    ("chunk", (None, 2)),
];

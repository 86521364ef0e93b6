//! The statements of a cell body: `let` (plain and tuple), state updates
//! and `output`.
//!
//! Each check types the statement's value (see `expr.rs`), reports what
//! breaks the statement's own rule, and binds the result, so that after
//! the body every name a statement introduced resolves, even one whose
//! value had an error (it is then poisoned and reports nothing more).

use crate::ast;
use crate::check::dim::SymDim;
use crate::check::{suggest, Binding, Constraint, TExpr, TKind, Ty};
use crate::diag::Diagnostic;
use crate::source::Span;

use super::{CellCx, Name};

impl CellCx<'_> {
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

    pub(super) fn check_let(&mut self, names: &[ast::Ident], tuple: bool, value: &ast::Expr) {
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
    pub(super) fn check_update(&mut self, name: &ast::Ident, value: &ast::Expr) {
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
                *dim == state.dim || dim.as_const() == Some(crate::check::dim::Ratio::int(1))
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

    pub(super) fn check_output(
        &mut self,
        value: &ast::Expr,
        span: Span,
        output: &mut Option<(usize, Span)>,
    ) {
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
}

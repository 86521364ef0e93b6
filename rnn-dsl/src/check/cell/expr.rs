//! Typing the expressions of a cell body, with symbolic sizes.
//!
//! Input: an expression of the syntax tree. Output: a [`TExpr`] whose
//! every node has a symbolic [`Ty`], or `None` after reporting why not.
//! Names resolve through the cell's declarations; calls are checked
//! against [`builtin`]; a size that can only be compared once sizes are
//! known becomes a `Constraint`.

use crate::ast;
use crate::check::dim::SymDim;
use crate::check::{suggest, Constraint, TExpr, TKind, Ty, Value, VectorFunc};
use crate::diag::Diagnostic;
use crate::ops::{Binary, Elementwise, Unary};
use crate::source::Span;

use super::{CellCx, Name};

impl CellCx<'_> {
    pub(super) fn show(&self, ty: &Ty) -> String {
        let names: Vec<String> = self.sizes.iter().map(|(name, _)| name.clone()).collect();
        ty.display(&names)
    }

    pub(super) fn expr(&mut self, expr: &ast::Expr) -> Option<TExpr> {
        let span = expr.span;
        let (kind, ty) = match &expr.kind {
            ast::ExprKind::Number(value) => (TKind::Number(*value), Ty::Scalar),
            ast::ExprKind::Name(ident) => return self.name(ident),
            ast::ExprKind::Neg(inner) => {
                let inner = self.expr(inner)?;
                let ty = inner.ty.clone();
                (TKind::Unary(Unary::Neg, Box::new(inner)), ty)
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
                        ast::BinOp::Add => Elementwise::Binary(Binary::Add),
                        ast::BinOp::Sub => Elementwise::Binary(Binary::Sub),
                        ast::BinOp::Mul => Elementwise::Binary(Binary::Mul),
                        ast::BinOp::Div => Elementwise::Binary(Binary::Div),
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
            } else if builtin(&ident.name).is_some() {
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
        // `max(v)` reduces a vector; `max(a, b)` is elementwise.
        let resolved = match (func.name.as_str(), args.len()) {
            ("max", 1) => Some((Builtin::Vector(VectorFunc::Max), 1)),
            (name, _) => builtin(name),
        };
        let Some((resolved, arity)) = resolved else {
            let mut diagnostic =
                Diagnostic::error(func.span, format!("unknown function `{}`", func.name))
                    .with_label("not a function");
            let list = builtin_names();
            if let Some(close) = suggest(&func.name, list.iter().map(String::as_str)) {
                diagnostic = diagnostic.with_help(format!("did you mean `{close}`?"));
            }
            self.diags
                .push(diagnostic.with_note(format!("functions: {}", list.join(", "))));
            for arg in args {
                self.expr(arg);
            }
            return None;
        };
        if args.len() != arity {
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
                        if arity == 1 { "" } else { "s" },
                        args.len()
                    ),
                )
                .with_label(format!("{} given", args.len()))
                .with_help(format!("call it as `{}`", signature(&func.name))),
            );
            return None;
        }
        match resolved {
            Builtin::Chunk => {
                // `chunk` outside a tuple `let`.
                self.diags.push(
                    Diagnostic::error(func.span, "`chunk` can only be the value of a tuple `let`")
                        .with_label("splits a vector into several names")
                        .with_help("write `let (a, b) = chunk(v, 2);`"),
                );
                None
            }
            Builtin::Transpose => {
                let inner = self.expr(&args[0])?;
                let ty = self.transpose_ty(&inner)?;
                Some(TExpr {
                    kind: TKind::Transpose(Box::new(inner)),
                    ty,
                    span,
                })
            }
            Builtin::Vector(func) => {
                let typed: Vec<Option<TExpr>> = args.iter().map(|arg| self.expr(arg)).collect();
                let typed: Vec<TExpr> = typed.into_iter().collect::<Option<_>>()?;
                let ty = self.vector_func_ty(func, &typed, span)?;
                Some(TExpr {
                    kind: TKind::Vector(func, typed),
                    ty,
                    span,
                })
            }
            Builtin::Elementwise(func) => {
                let typed: Vec<Option<TExpr>> = args.iter().map(|arg| self.expr(arg)).collect();
                let typed: Vec<TExpr> = typed.into_iter().collect::<Option<_>>()?;
                let refs: Vec<&TExpr> = typed.iter().collect();
                let ty = self.broadcast(&refs, &func.name(), span)?;
                let kind = match func {
                    Elementwise::Unary(op) => TKind::Unary(
                        op,
                        Box::new(typed.into_iter().next().expect("one argument")),
                    ),
                    _ => TKind::Call(func, typed),
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
                    if a.as_const() == Some(crate::check::dim::Ratio::int(1)) =>
                {
                    operand
                }
                (Ty::Vector(_), Ty::Vector(b))
                    if b.as_const() == Some(crate::check::dim::Ratio::int(1)) =>
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

    /// A function of whole vectors takes vectors (`dot` two of one size)
    /// and gives a one-element vector (a reduction) or a vector of its
    /// argument's size (`softmax`, `log_softmax`).
    ///
    /// ```text
    /// let m = mean(h);          // [1], broadcasts: `h - m` is [H]
    /// let s = sum(2.0);         // a number has no elements to sum
    /// let d = dot(h, x);        // `h` is [H], `x` is [I]
    /// ```
    fn vector_func_ty(&mut self, func: VectorFunc, args: &[TExpr], span: Span) -> Option<Ty> {
        let name = func.name();
        let mut size: Option<&SymDim> = None;
        for arg in args {
            match &arg.ty {
                Ty::Vector(len) => match size {
                    Some(first) if first != len => {
                        self.diags.push(
                            Diagnostic::error(
                                span,
                                format!(
                                    "shape mismatch in `{name}`: [{}] and [{}]",
                                    self.show_dim(first),
                                    self.show_dim(len)
                                ),
                            )
                            .with_secondary(
                                args[0].span,
                                format!("this is [{}]", self.show_dim(first)),
                            )
                            .with_secondary(arg.span, format!("this is [{}]", self.show_dim(len)))
                            .with_help(format!("`{name}` takes two vectors of one size")),
                        );
                        return None;
                    }
                    _ => size = Some(len),
                },
                other => {
                    let help = match other {
                        Ty::Scalar => "a number is already one value".to_owned(),
                        _ => format!(
                            "to reduce a matrix's rows, apply `{name}` to each row: `{name}(m[0])`"
                        ),
                    };
                    self.diags.push(
                        Diagnostic::error(
                            arg.span,
                            format!("`{name}` takes a vector, found {}", self.show(other)),
                        )
                        .with_label(format!("this is {}", self.show(other)))
                        .with_help(help),
                    );
                    return None;
                }
            }
        }
        let size = size.expect("a vector function takes at least one argument");
        Some(if func.reduces() {
            Ty::Vector(SymDim::int(1))
        } else {
            Ty::Vector(size.clone())
        })
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
        "max" => "max(a, b) or max(v)",
        "soft_threshold" => "soft_threshold(v, threshold)",
        "clip" => "clip(v, low, high)",
        "transpose" => "transpose(matrix)",
        "chunk" => "let (a, b) = chunk(v, 2)",
        "sum" => "sum(v)",
        "mean" => "mean(v)",
        "dot" => "dot(a, b)",
        "softmax" => "softmax(v)",
        "log_softmax" => "log_softmax(v)",
        _ => "f(...)",
    }
}

/// What a function name of the language means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Builtin {
    /// An elementwise operation ([`Elementwise::function`]).
    Elementwise(Elementwise),
    /// `transpose(matrix)`, the same as `matrix^T`.
    Transpose,
    /// `chunk(v, n)`, which only a tuple `let` may call.
    Chunk,
    /// A function of whole vectors (`sum`, `softmax`, ...).
    Vector(VectorFunc),
}

/// The meaning and arity of a function of the language: the elementwise
/// operations by their names, then `transpose` and `chunk`.
pub(super) fn builtin(name: &str) -> Option<(Builtin, usize)> {
    match name {
        "transpose" => Some((Builtin::Transpose, 1)),
        "chunk" => Some((Builtin::Chunk, 2)),
        _ => Elementwise::function(name)
            .map(|op| (Builtin::Elementwise(op), op.arity()))
            .or_else(|| {
                VectorFunc::ALL
                    .into_iter()
                    .find(|func| func.name() == name)
                    .map(|func| (Builtin::Vector(func), func.arity()))
            }),
    }
}

/// Every function name of the language, in the order diagnostics list them.
pub(super) fn builtin_names() -> Vec<String> {
    Elementwise::all()
        .filter(|op| op.operator().is_none())
        .map(Elementwise::word)
        .chain(["transpose".to_owned(), "chunk".to_owned()])
        .chain(
            VectorFunc::ALL
                .into_iter()
                .filter(|func| *func != VectorFunc::Max)
                .map(|func| func.name().to_owned()),
        )
        .collect()
}

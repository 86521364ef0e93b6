//! Pest's pairs → syntax tree, with the size limits later stages rely on.
//!
//! Input: the pairs of a text that matched the grammar. Output: [`Cell`]s
//! and [`Network`]s whose every node carries its span. A statement with
//! more than [`MAX_EXPR_NODES`] terms, or an expression or size more than
//! [`MAX_EXPR_DEPTH`] operations deep, gets a diagnostic and is left out
//! of the tree (in a cell, the whole cell is), so every tree after parse
//! is safe to walk recursively.

use pest::iterators::Pair;

use crate::ast::{
    BinOp, Cell, CellStmt, ConstValue, Dim, DimOp, Expr, ExprKind, Ident, Layer, LayerArg,
    NetInput, Network, Shape, TypedName, Unroll, UnrollMode,
};
use crate::diag::{Diagnostic, Diagnostics};
use crate::source::Span;

use super::{Rule, MAX_EXPR_DEPTH, MAX_EXPR_NODES};

/// How many operations deep an expression is, counting the size
/// expressions in its indices; iterative, so any tree is safe to measure.
fn expr_depth(expr: &Expr) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Expr, usize)> = vec![(expr, 0)];
    while let Some((expr, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match &expr.kind {
            ExprKind::Number(_) | ExprKind::Name(_) => {}
            ExprKind::Neg(inner) | ExprKind::Transpose(inner) => stack.push((inner, depth + 1)),
            ExprKind::Binary(lhs, _, rhs) => {
                stack.push((lhs, depth + 1));
                stack.push((rhs, depth + 1));
            }
            ExprKind::Call(_, args) => stack.extend(args.iter().map(|arg| (arg, depth + 1))),
            ExprKind::Index(base, index) => {
                deepest = deepest.max(depth + 1 + dim_depth(index));
                stack.push((base, depth + 1));
            }
            ExprKind::Slice(base, start, end) => {
                deepest = deepest.max(depth + 1 + dim_depth(start).max(dim_depth(end)));
                stack.push((base, depth + 1));
            }
            ExprKind::If(_, then, otherwise) => {
                stack.push((then, depth + 1));
                stack.push((otherwise, depth + 1));
            }
        }
    }
    deepest
}

/// How many operations deep a size expression is; iterative.
fn dim_depth(dim: &Dim) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Dim, usize)> = vec![(dim, 0)];
    while let Some((dim, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if let Dim::Binary(lhs, _, rhs, _) = dim {
            stack.push((lhs, depth + 1));
            stack.push((rhs, depth + 1));
        }
    }
    deepest
}

pub(super) struct Builder<'d> {
    pub(super) diags: &'d mut Diagnostics,
}

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    Span::new(pair.as_span().start(), pair.as_span().end())
}

fn ident(pair: Pair<'_, Rule>) -> Ident {
    debug_assert_eq!(pair.as_rule(), Rule::ident);
    Ident {
        name: pair.as_str().to_owned(),
        span: span_of(&pair),
    }
}

impl Builder<'_> {
    pub(super) fn cell(&mut self, pair: Pair<'_, Rule>) -> Option<Cell> {
        let span = span_of(&pair);
        let mut inner = pair.into_inner();
        let name = ident(inner.next().expect("grammar: cell name"));
        let mut too_large = false;
        let mut typed_names = |builder: &mut Self, list: Pair<'_, Rule>| -> Vec<TypedName> {
            let mut names = Vec::new();
            for pair in list.into_inner() {
                if builder.check_statement_size(&pair) {
                    let typed = builder.typed_name(pair);
                    if builder.check_shape_depth(&typed.shape) {
                        names.push(typed);
                        continue;
                    }
                }
                too_large = true;
            }
            names
        };
        let inputs = typed_names(self, inner.next().expect("grammar: cell inputs"));
        let states = typed_names(self, inner.next().expect("grammar: cell states"));
        let mut body = Vec::new();
        for stmt in inner {
            if !self.check_statement_size(&stmt) {
                too_large = true;
                continue;
            }
            let stmt = self.cell_stmt(stmt);
            let deep_enough = match &stmt {
                CellStmt::Param { shape, .. } => self.check_shape_depth(shape),
                CellStmt::Const { .. } => true,
                CellStmt::Let { value, .. }
                | CellStmt::Update { value, .. }
                | CellStmt::Output { value, .. } => self.check_expr_depth(value),
            };
            if deep_enough {
                body.push(stmt);
            } else {
                too_large = true;
            }
        }
        (!too_large).then_some(Cell {
            name,
            inputs,
            states,
            body,
            span,
        })
    }

    /// A statement holds at most [`MAX_EXPR_NODES`] terms, so that building
    /// and checking it takes bounded time and memory.
    fn check_statement_size(&mut self, pair: &Pair<'_, Rule>) -> bool {
        let nodes = pair.clone().into_inner().flatten().count();
        if nodes <= MAX_EXPR_NODES {
            return true;
        }
        self.diags.push(
            Diagnostic::error(span_of(pair), "statement is too large")
                .with_note(format!(
                    "it has {nodes} terms; the limit is {MAX_EXPR_NODES}"
                ))
                .with_help("split it with `let` bindings"),
        );
        false
    }

    /// An expression is at most [`MAX_EXPR_DEPTH`] operations deep: later
    /// stages walk it recursively.
    fn check_expr_depth(&mut self, expr: &Expr) -> bool {
        self.check_depth(expr.span, expr_depth(expr))
    }

    fn check_shape_depth(&mut self, shape: &Shape) -> bool {
        let depth = shape.dims.iter().map(dim_depth).max().unwrap_or(0);
        self.check_depth(shape.span, depth)
    }

    fn check_depth(&mut self, span: Span, depth: usize) -> bool {
        if depth <= MAX_EXPR_DEPTH {
            return true;
        }
        self.diags.push(
            Diagnostic::error(span, "expression is nested too deeply")
                .with_note(format!(
                    "it is {depth} operations deep; the limit is {MAX_EXPR_DEPTH}"
                ))
                .with_help("split it with `let` bindings"),
        );
        false
    }

    fn typed_name(&mut self, pair: Pair<'_, Rule>) -> TypedName {
        let mut inner = pair.into_inner();
        let name = ident(inner.next().expect("grammar: typed name"));
        let shape = self.shape(inner.next().expect("grammar: typed shape"));
        TypedName { name, shape }
    }

    fn shape(&mut self, pair: Pair<'_, Rule>) -> Shape {
        let span = span_of(&pair);
        let dims = pair.into_inner().map(|pair| self.dim(pair)).collect();
        Shape { dims, span }
    }

    /// Builds a dimension expression from the flat `atom (op atom)*` list
    /// by precedence climbing; nesting only comes from parentheses, which
    /// the depth check bounds.
    fn dim(&mut self, pair: Pair<'_, Rule>) -> Dim {
        debug_assert_eq!(pair.as_rule(), Rule::dim);
        let mut operands: Vec<Dim> = Vec::new();
        let mut operators: Vec<DimOp> = Vec::new();
        let prec = |op: DimOp| match op {
            DimOp::Add | DimOp::Sub => 1,
            DimOp::Mul | DimOp::Div => 2,
        };
        fn reduce(operands: &mut Vec<Dim>, op: DimOp) {
            let rhs = operands.pop().expect("grammar: dim operand");
            let lhs = operands.pop().expect("grammar: dim operand");
            let span = lhs.span().to(rhs.span());
            operands.push(Dim::Binary(Box::new(lhs), op, Box::new(rhs), span));
        }
        for item in pair.into_inner() {
            let op = match item.as_rule() {
                Rule::dim_add => DimOp::Add,
                Rule::dim_sub => DimOp::Sub,
                Rule::dim_mul => DimOp::Mul,
                Rule::dim_div => DimOp::Div,
                Rule::int => {
                    let span = span_of(&item);
                    let value = item.as_str().parse::<u64>().unwrap_or_else(|_| {
                        self.diags.push(
                            Diagnostic::error(span, "number is too large for a size")
                                .with_label("does not fit in 64 bits"),
                        );
                        0
                    });
                    operands.push(Dim::Int(value, span));
                    continue;
                }
                Rule::ident => {
                    operands.push(Dim::Name(ident(item)));
                    continue;
                }
                Rule::dim => {
                    let inner = self.dim(item);
                    operands.push(inner);
                    continue;
                }
                rule => unreachable!("grammar: unexpected {rule:?} in dim"),
            };
            while operators.last().is_some_and(|top| prec(*top) >= prec(op)) {
                let top = operators.pop().expect("checked non-empty");
                reduce(&mut operands, top);
            }
            operators.push(op);
        }
        while let Some(op) = operators.pop() {
            reduce(&mut operands, op);
        }
        operands.pop().expect("grammar: dim has an operand")
    }

    fn cell_stmt(&mut self, pair: Pair<'_, Rule>) -> CellStmt {
        let span = span_of(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        match rule {
            Rule::param_decl => {
                let name = ident(inner.next().expect("grammar: param name"));
                let shape = self.shape(inner.next().expect("grammar: param shape"));
                let mut per_step = None;
                let mut frozen = None;
                let mut condition = None;
                for pair in inner {
                    match pair.as_rule() {
                        Rule::per_step => per_step = Some(span_of(&pair)),
                        Rule::frozen => frozen = Some(span_of(&pair)),
                        _ => {
                            condition = Some(ident(
                                pair.into_inner().next().expect("grammar: param condition"),
                            ))
                        }
                    }
                }
                CellStmt::Param {
                    name,
                    shape,
                    per_step,
                    frozen,
                    condition,
                }
            }
            Rule::const_decl => {
                let name = ident(inner.next().expect("grammar: const name"));
                let value = self.const_value(inner.next().expect("grammar: const value"));
                CellStmt::Const { name, value }
            }
            Rule::let_stmt => {
                let target = inner.next().expect("grammar: let target");
                let (names, tuple) = match target.as_rule() {
                    Rule::ident => (vec![ident(target)], false),
                    _ => (target.into_inner().map(ident).collect(), true),
                };
                let value = self.expr(inner.next().expect("grammar: let value"));
                CellStmt::Let {
                    names,
                    tuple,
                    value,
                }
            }
            Rule::update_stmt => {
                let name = ident(inner.next().expect("grammar: update target"));
                let value = self.expr(inner.next().expect("grammar: update value"));
                CellStmt::Update { name, value }
            }
            Rule::output_stmt => {
                let value = self.expr(inner.next().expect("grammar: output value"));
                CellStmt::Output { value, span }
            }
            rule => unreachable!("grammar: unexpected {rule:?} in cell body"),
        }
    }

    fn const_value(&mut self, pair: Pair<'_, Rule>) -> ConstValue {
        let inner = pair.into_inner().next().expect("grammar: const value");
        let span = span_of(&inner);
        match inner.as_rule() {
            Rule::bool_lit => ConstValue::Bool(inner.as_str() == "true", span),
            Rule::signed_num => {
                let mut negative = false;
                let mut value = 0.0;
                for part in inner.into_inner() {
                    match part.as_rule() {
                        Rule::neg_sign => negative = true,
                        Rule::inf => value = f64::INFINITY,
                        Rule::float => value = self.number(&part),
                        rule => unreachable!("grammar: unexpected {rule:?} in number"),
                    }
                }
                ConstValue::Number(if negative { -value } else { value }, span)
            }
            rule => unreachable!("grammar: unexpected {rule:?} in const value"),
        }
    }

    fn number(&mut self, pair: &Pair<'_, Rule>) -> f64 {
        match pair.as_str().parse::<f64>() {
            Ok(value) if value.is_finite() => value,
            _ => {
                self.diags.push(
                    Diagnostic::error(span_of(pair), "number is out of range")
                        .with_help("write `inf` for an infinite value"),
                );
                0.0
            }
        }
    }

    /// Builds an expression from the flat `prefix* primary postfix* (infix
    /// prefix* primary postfix*)*` list with a shunting-yard loop, so only
    /// parentheses and calls recurse.
    fn expr(&mut self, pair: Pair<'_, Rule>) -> Expr {
        debug_assert_eq!(pair.as_rule(), Rule::expr);
        let mut operands: Vec<Expr> = Vec::new();
        let mut operators: Vec<BinOp> = Vec::new();
        let mut pending_negs: Vec<Span> = Vec::new();
        let mut current: Option<Expr> = None;
        let prec = |op: BinOp| match op {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div => 2,
            BinOp::MatMul => 3,
        };
        fn finish_operand(
            current: &mut Option<Expr>,
            negs: &mut Vec<Span>,
            operands: &mut Vec<Expr>,
        ) {
            let mut operand = current.take().expect("grammar: operand before operator");
            while let Some(neg_span) = negs.pop() {
                let span = neg_span.to(operand.span);
                operand = Expr {
                    kind: ExprKind::Neg(Box::new(operand)),
                    span,
                };
            }
            operands.push(operand);
        }
        fn reduce(operands: &mut Vec<Expr>, op: BinOp) {
            let rhs = operands.pop().expect("grammar: binary operand");
            let lhs = operands.pop().expect("grammar: binary operand");
            let span = lhs.span.to(rhs.span);
            operands.push(Expr {
                kind: ExprKind::Binary(Box::new(lhs), op, Box::new(rhs)),
                span,
            });
        }
        for item in pair.into_inner() {
            let span = span_of(&item);
            let op = match item.as_rule() {
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul => BinOp::Mul,
                Rule::div => BinOp::Div,
                Rule::matmul => BinOp::MatMul,
                Rule::neg => {
                    pending_negs.push(span);
                    continue;
                }
                Rule::transpose => {
                    let base = current.take().expect("grammar: postfix after operand");
                    current = Some(Expr {
                        span: base.span.to(span),
                        kind: ExprKind::Transpose(Box::new(base)),
                    });
                    continue;
                }
                Rule::index => {
                    let base = current.take().expect("grammar: postfix after operand");
                    let mut dims = item.into_inner().filter(|part| part.as_rule() == Rule::dim);
                    let first = self.dim(dims.next().expect("grammar: index"));
                    let kind = match dims.next() {
                        Some(second) => {
                            ExprKind::Slice(Box::new(base.clone()), first, self.dim(second))
                        }
                        None => ExprKind::Index(Box::new(base.clone()), first),
                    };
                    current = Some(Expr {
                        kind,
                        span: base.span.to(span),
                    });
                    continue;
                }
                _ => {
                    current = Some(self.primary(item));
                    continue;
                }
            };
            finish_operand(&mut current, &mut pending_negs, &mut operands);
            while operators.last().is_some_and(|top| prec(*top) >= prec(op)) {
                let top = operators.pop().expect("checked non-empty");
                reduce(&mut operands, top);
            }
            operators.push(op);
        }
        finish_operand(&mut current, &mut pending_negs, &mut operands);
        while let Some(op) = operators.pop() {
            reduce(&mut operands, op);
        }
        operands.pop().expect("grammar: expression has an operand")
    }

    fn primary(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = span_of(&pair);
        let kind = match pair.as_rule() {
            Rule::float => ExprKind::Number(self.number(&pair)),
            Rule::inf => ExprKind::Number(f64::INFINITY),
            Rule::ident => ExprKind::Name(ident(pair)),
            Rule::expr => return self.expr(pair),
            Rule::call => {
                let mut inner = pair.into_inner();
                let func = ident(inner.next().expect("grammar: call name"));
                let args = inner.map(|arg| self.expr(arg)).collect();
                ExprKind::Call(func, args)
            }
            Rule::if_expr => {
                let mut inner = pair.into_inner();
                let flag = ident(inner.next().expect("grammar: if flag"));
                let then = self.expr(inner.next().expect("grammar: if branch"));
                let otherwise = self.expr(inner.next().expect("grammar: else branch"));
                ExprKind::If(flag, Box::new(then), Box::new(otherwise))
            }
            rule => unreachable!("grammar: unexpected {rule:?} as an operand"),
        };
        Expr { kind, span }
    }

    pub(super) fn network(&mut self, pair: Pair<'_, Rule>) -> Network {
        let span = span_of(&pair);
        let mut inner = pair.into_inner();
        let name = ident(inner.next().expect("grammar: network name"));
        let mut network = Network {
            name,
            inputs: Vec::new(),
            contexts: Vec::new(),
            layers: Vec::new(),
            unrolls: Vec::new(),
            precisions: Vec::new(),
            span,
        };
        for stmt in inner {
            let stmt_span = span_of(&stmt);
            if !self.check_statement_size(&stmt) {
                continue;
            }
            match stmt.as_rule() {
                Rule::input_decl | Rule::context_decl => {
                    let is_input = stmt.as_rule() == Rule::input_decl;
                    let mut parts = stmt.into_inner();
                    let input = NetInput {
                        name: ident(parts.next().expect("grammar: input name")),
                        shape: self.shape(parts.next().expect("grammar: input shape")),
                    };
                    if !self.check_shape_depth(&input.shape) {
                        continue;
                    }
                    if is_input {
                        network.inputs.push(input);
                    } else {
                        network.contexts.push(input);
                    }
                }
                Rule::layer_decl => {
                    let mut parts = stmt.into_inner();
                    let name = ident(parts.next().expect("grammar: layer name"));
                    let cell = ident(parts.next().expect("grammar: layer cell"));
                    let args = parts
                        .map(|arg| {
                            let mut arg_parts = arg.into_inner();
                            let name = ident(arg_parts.next().expect("grammar: arg name"));
                            let value = arg_parts.next().map(|value| self.const_value(value));
                            LayerArg { name, value }
                        })
                        .collect();
                    network.layers.push(Layer {
                        name,
                        cell,
                        args,
                        span: stmt_span,
                    });
                }
                Rule::unroll_decl => {
                    let mode_pair = stmt.into_inner().next().expect("grammar: unroll mode");
                    let mode = self.unroll_mode(mode_pair);
                    network.unrolls.push(Unroll {
                        mode,
                        span: stmt_span,
                    });
                }
                Rule::precision_decl => {
                    let name = stmt.into_inner().next().expect("grammar: precision name");
                    network.precisions.push(Ident {
                        name: name.as_str().to_owned(),
                        span: span_of(&name),
                    });
                }
                rule => unreachable!("grammar: unexpected {rule:?} in network"),
            }
        }
        network
    }

    pub(super) fn unroll_mode(&mut self, pair: Pair<'_, Rule>) -> UnrollMode {
        let rule = pair.as_rule();
        let mut ints = Vec::new();
        let mut fallback = false;
        for part in pair.into_inner() {
            match part.as_rule() {
                Rule::int => ints.push(self.count(&part)),
                Rule::else_dynamic => fallback = true,
                other => unreachable!("grammar: unexpected {other:?} in unroll mode"),
            }
        }
        match rule {
            Rule::static_n => UnrollMode::Static(ints[0]),
            Rule::static_buckets => UnrollMode::Buckets {
                lengths: ints,
                dynamic_fallback: fallback,
            },
            Rule::dynamic => UnrollMode::Dynamic,
            Rule::dynamic_by => UnrollMode::DynamicBy(ints[0]),
            other => unreachable!("grammar: unexpected {other:?} as unroll mode"),
        }
    }

    fn count(&mut self, pair: &Pair<'_, Rule>) -> u64 {
        pair.as_str().parse::<u64>().unwrap_or_else(|_| {
            self.diags.push(
                Diagnostic::error(span_of(pair), "number is too large")
                    .with_label("does not fit in 64 bits"),
            );
            u64::MAX
        })
    }
}

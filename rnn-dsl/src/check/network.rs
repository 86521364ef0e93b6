//! Checking networks: inputs, layers and their arguments, size inference
//! for every stacked layer, and the unroll mode.

use std::collections::HashMap;

use crate::ast;
use crate::check::dim::{SymDim, SymId};
use crate::check::unroll::check_unroll;
use crate::check::Precision;
use crate::check::{
    suggest, Cell, Constraint, InputSource, Instance, Layer, NetInput, Network, Ty, UnrollMode,
    Value,
};
use crate::diag::{Diagnostic, Diagnostics};
use crate::source::Span;

/// The most stacked layers one `layer` statement may ask for.
pub const MAX_LAYERS: usize = 64;
/// The largest size (input, hidden, any cell size) accepted.
pub const MAX_SIZE: i128 = 1 << 24;
/// The most copies a per-step parameter may have (`steps = K`).
pub const MAX_STEPS: usize = 1 << 16;

/// The built-in LSTM, and the prelude cell it is with a projection.
const LSTM: &str = "lstm";
const PROJECTED_LSTM: &str = "lstm_proj";
/// The projected LSTM's output size, named as PyTorch names it.
const PROJ_SIZE: &str = "proj_size";

/// The name of the cell a layer statement uses: the cell it names, except
/// that `lstm` with a `proj_size` argument is the prelude's `lstm_proj`
/// (PyTorch's `nn.LSTM(proj_size = P)`). A cell's state sizes cannot
/// depend on an argument, so the projected LSTM, whose `h` has P elements
/// and `c` H, is a cell of its own, reached through the name users know.
pub(super) fn layer_cell_name(layer: &ast::Layer) -> &str {
    let projected = layer.args.iter().any(|arg| arg.name.name == PROJ_SIZE);
    if layer.cell.name == LSTM && projected {
        PROJECTED_LSTM
    } else {
        &layer.cell.name
    }
}

/// The cells a network can use.
pub(super) struct CellTable<'a> {
    /// Checked cells.
    pub cells: &'a [Cell],
    /// User cells that had errors (already reported).
    pub failed: &'a [&'a str],
    /// Every cell name, for suggestions.
    pub known: &'a [&'a str],
}

pub(super) fn check_network(
    diags: &mut Diagnostics,
    network: &ast::Network,
    table: &CellTable<'_>,
) -> Option<Network> {
    let errors_before = diags.error_count();
    let inputs_before = diags.error_count();
    let inputs = check_inputs(diags, network);
    // A layer's input that would read a rejected input declaration is not
    // reported again.
    let inputs_ok = diags.error_count() == inputs_before;
    let unroll = check_unroll(diags, network);
    let precision = check_precision(diags, network);
    if network.layers.is_empty() {
        diags.push(
            Diagnostic::error(
                network.name.span,
                format!("network `{}` has no layers", network.name.name),
            )
            .with_help("add a layer, e.g. `layer rnn = lstm(hidden = 64);`"),
        );
    }
    let mut layers: Vec<Layer> = Vec::new();
    let mut layer_names: HashMap<&str, Span> = HashMap::new();
    let mut used_inputs = vec![false; inputs.len()];
    let mut previous_size: Option<usize> = None;
    for (layer_idx, layer) in network.layers.iter().enumerate() {
        if let Some(first) = layer_names.insert(&layer.name.name, layer.name.span) {
            diags.push(
                Diagnostic::error(
                    layer.name.span,
                    format!("layer `{}` is defined twice", layer.name.name),
                )
                .with_label("defined again here")
                .with_secondary(first, "first defined here")
                .with_help("rename one of them"),
            );
        }
        let checked = check_layer(
            diags,
            layer,
            layer_idx,
            table,
            &inputs,
            inputs_ok,
            previous_size,
            &mut used_inputs,
        );
        match checked {
            Some(checked) => {
                let last = checked.stack.last().expect("at least one stacked layer");
                let directions = if checked.bidirectional { 2 } else { 1 };
                previous_size = Some(last.output_size * directions);
                layers.push(checked);
            }
            // Later layers cannot know their input size; stop here.
            None => break,
        }
    }
    if !layers.is_empty() && layers.len() == network.layers.len() {
        for (input, used) in inputs.iter().zip(&used_inputs) {
            if !used {
                diags.push(
                    Diagnostic::warning(input.span, format!("`{}` is never used", input.name))
                        .with_note("no layer's cell reads it")
                        .with_help("remove it, or give a cell an input of this name"),
                );
            }
        }
    }
    if let Some(unroll) = &unroll {
        for (checked, layer) in layers.iter_mut().zip(&network.layers) {
            check_per_step(
                diags,
                checked,
                layer,
                &table.cells[checked.cell],
                unroll,
                network,
            );
        }
    }
    if diags.error_count() > errors_before {
        return None;
    }
    Some(Network {
        name: network.name.name.clone(),
        span: network.name.span,
        inputs,
        layers,
        unroll: unroll?,
        precision,
    })
}

/// At most one `precision` statement, naming `f32`, `bf16` or `int8`.
///
/// ```text
/// precision fp16;
/// ```
fn check_precision(diags: &mut Diagnostics, network: &ast::Network) -> Option<Precision> {
    let first = network.precisions.first()?;
    for extra in &network.precisions[1..] {
        diags.push(
            Diagnostic::error(
                extra.span,
                "a network has at most one `precision` statement",
            )
            .with_secondary(first.span, "first `precision` here")
            .with_help("remove one of them"),
        );
    }
    match first.name.as_str() {
        "f32" => None,
        "bf16" => Some(Precision::Bf16),
        "int8" => Some(Precision::Int8),
        other => {
            diags.push(
                Diagnostic::error(first.span, format!("unknown precision `{other}`"))
                    .with_label("not a precision")
                    .with_help(
                        "write `f32` (the default), `bf16` (bfloat16 weights) or `int8` (8-bit \
                         weights, one scale per output row)",
                    ),
            );
            None
        }
    }
}

fn check_inputs(diags: &mut Diagnostics, network: &ast::Network) -> Vec<NetInput> {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    let mut inputs = Vec::new();
    let all = network
        .inputs
        .iter()
        .map(|input| (input, true))
        .chain(network.contexts.iter().map(|input| (input, false)));
    for (input, per_step) in all {
        if let Some(first) = seen.insert(&input.name.name, input.name.span) {
            diags.push(
                Diagnostic::error(
                    input.name.span,
                    format!("input `{}` is declared twice", input.name.name),
                )
                .with_label("declared again here")
                .with_secondary(first, "first declared here")
                .with_help("inputs and contexts share one namespace; rename one of them"),
            );
            continue;
        }
        if let Some(size) = check_input_shape(diags, &input.shape) {
            inputs.push(NetInput {
                name: input.name.name.clone(),
                size,
                per_step,
                span: input.name.span,
            });
        }
    }
    inputs
}

/// A network input's size is a plain number: the network is where sizes
/// become concrete.
///
/// ```text
/// input x: [I];   // which I?
/// ```
fn check_input_shape(diags: &mut Diagnostics, shape: &ast::Shape) -> Option<usize> {
    if shape.dims.len() != 1 {
        diags.push(
            Diagnostic::error(
                shape.span,
                format!(
                    "an input has one size per step, found {} sizes",
                    shape.dims.len()
                ),
            )
            .with_note(
                "the batch and time dimensions are implicit: `input x: [32];` takes `[B, T, 32]`",
            ),
        );
        return None;
    }
    let value = const_dim(diags, &shape.dims[0])?;
    if !(1..=MAX_SIZE).contains(&value) {
        diags.push(
            Diagnostic::error(
                shape.span,
                format!("input size must be a whole number from 1 to {MAX_SIZE}, found {value}"),
            )
            .with_label("invalid size"),
        );
        return None;
    }
    Some(value as usize)
}

fn const_dim(diags: &mut Diagnostics, dim: &ast::Dim) -> Option<i128> {
    match dim {
        ast::Dim::Int(value, _) => Some(i128::from(*value)),
        ast::Dim::Name(ident) => {
            diags.push(
                Diagnostic::error(
                    ident.span,
                    format!("network sizes are numbers, found the name `{}`", ident.name),
                )
                .with_label("a size name")
                .with_note("size names belong to cells; the network gives them values")
                .with_help("write the size, e.g. `input x: [32];`"),
            );
            None
        }
        ast::Dim::Binary(lhs, op, rhs, span) => {
            let lhs = const_dim(diags, lhs);
            let rhs = const_dim(diags, rhs);
            let (lhs, rhs) = (lhs?, rhs?);
            let result = match op {
                ast::DimOp::Add => lhs.checked_add(rhs),
                ast::DimOp::Sub => lhs.checked_sub(rhs),
                ast::DimOp::Mul => lhs.checked_mul(rhs),
                ast::DimOp::Div if rhs != 0 && lhs % rhs == 0 => Some(lhs / rhs),
                ast::DimOp::Div => None,
            };
            if result.is_none() {
                diags.push(
                    Diagnostic::error(*span, "size is not a whole number")
                        .with_label("this does not divide exactly or is too large"),
                );
            }
            result
        }
    }
}

/// A size condition from one layer: the cell's `dim` must equal `target`,
/// the value `given` by the network.
struct SizeEquation {
    dim: SymDim,
    target: i128,
    /// What fixes the value: "`hidden = 64`", "network input `x` has size 32".
    given: String,
    /// Where that value was written in the network.
    given_span: Option<Span>,
    /// What in the cell has the size: "input `x` of cell `my_rnn`".
    cell_side: String,
    /// Where the cell declares it (`None` for prelude cells).
    cell_span: Option<Span>,
}

impl SizeEquation {
    fn labels(&self, mut diagnostic: Diagnostic, target: i128, names: &[String]) -> Diagnostic {
        if let Some(span) = self.given_span {
            diagnostic = diagnostic.with_secondary(span, format!("size {target} here"));
        }
        if let Some(span) = self.cell_span {
            diagnostic = diagnostic.with_secondary(
                span,
                format!("declared as [{}] here", self.dim.display(names)),
            );
        }
        diagnostic
    }
}

struct LayerArgs {
    n_layers: usize,
    bidirectional: bool,
    reverse: bool,
    /// `steps = K`: the copies of each per-step parameter.
    steps: Option<(usize, Span)>,
    hidden: Option<(i128, Span)>,
    sizes: Vec<Option<(i128, Span)>>,
    consts: Vec<Value>,
}

#[allow(clippy::too_many_arguments)] // FIXME(cleanup): group the per-network context in a struct
fn check_layer(
    diags: &mut Diagnostics,
    layer: &ast::Layer,
    layer_idx: usize,
    table: &CellTable<'_>,
    inputs: &[NetInput],
    inputs_ok: bool,
    previous_size: Option<usize>,
    used_inputs: &mut [bool],
) -> Option<Layer> {
    let cell_name = layer_cell_name(layer);
    let Some(cell_idx) = table.cells.iter().position(|cell| cell.name == cell_name) else {
        if !table.failed.contains(&layer.cell.name.as_str()) {
            let mut diagnostic = Diagnostic::error(
                layer.cell.span,
                format!("unknown cell `{}`", layer.cell.name),
            )
            .with_label("no cell of this name");
            if let Some(close) = suggest(&layer.cell.name, table.known.iter().copied()) {
                diagnostic = diagnostic.with_help(format!("did you mean `{close}`?"));
            } else {
                diagnostic = diagnostic.with_note(format!("cells: {}", table.known.join(", ")));
            }
            diags.push(diagnostic);
        }
        return None;
    };
    let cell = &table.cells[cell_idx];
    let args = check_layer_args(diags, layer, cell)?;
    check_projection(diags, cell, &args);
    let mut stack = Vec::new();
    let mut input_size = previous_size;
    for stack_idx in 0..args.n_layers {
        let first = layer_idx == 0 && stack_idx == 0;
        let sources = bind_inputs(diags, layer, cell, inputs, inputs_ok, first, used_inputs)?;
        let instance = instantiate(diags, layer, cell, &args, inputs, &sources, input_size)?;
        input_size = Some(instance.output_size * if args.bidirectional { 2 } else { 1 });
        stack.push(instance);
    }
    Some(Layer {
        name: layer.name.name.clone(),
        span: layer.span,
        cell: cell_idx,
        bidirectional: args.bidirectional,
        reverse: args.reverse,
        steps: None,
        steps_arg: args.steps,
        stack,
    })
}

/// The per-step parameters of a layer's cell and their count: `steps = K`,
/// or the N of `unroll static N`. A per-step parameter has one copy per
/// step, so the layer runs forward only and at most K steps: a static
/// unrolling past K is an error here, a dynamic run past K at run time.
///
/// ```text
/// layer l = lista(N = 500);                  // dynamic: how many copies?
/// layer l = lista(N = 500, steps = 8);       // unroll static 16: past 8
/// layer l = lista(N = 500, bidirectional);   // per-step runs forward only
/// ```
fn check_per_step(
    diags: &mut Diagnostics,
    checked: &mut Layer,
    layer: &ast::Layer,
    cell: &Cell,
    unroll: &UnrollMode,
    network: &ast::Network,
) {
    let per_step: Vec<&crate::check::Param> = cell
        .params
        .iter()
        .filter(|param| param.per_step.is_some())
        .collect();
    let given = checked.steps_arg.take();
    let unroll_span = network
        .unrolls
        .first()
        .map_or(network.name.span, |unroll| unroll.span);
    let Some(first) = per_step.first() else {
        if let Some((_, span)) = given {
            diags.push(
                Diagnostic::error(span, format!("cell `{}` has no per-step parameters", cell.name))
                    .with_label("nothing to count")
                    .with_help("remove `steps`, or declare a parameter `per step`: `param W: [N, M] per step;`"),
            );
        }
        return;
    };
    let names = per_step
        .iter()
        .map(|param| format!("`{}`", param.name))
        .collect::<Vec<_>>()
        .join(", ");
    if checked.bidirectional || checked.reverse {
        diags.push(
            Diagnostic::error(
                layer.span,
                format!("layer `{}` has per-step parameters ({names}) and runs backward", checked.name),
            )
            .with_secondary(first.per_step.unwrap_or(first.span), "declared per step here")
            .with_help("a per-step parameter's copy k belongs to step k of a forward run: remove `bidirectional` or `reverse`"),
        );
        return;
    }
    let longest = match unroll {
        UnrollMode::Static(steps) => Some(*steps),
        UnrollMode::Buckets {
            lengths,
            dynamic_fallback: false,
        } => lengths.last().copied(),
        _ => None,
    };
    let steps = match (given, longest) {
        (Some((steps, span)), Some(longest)) if longest > steps => {
            diags.push(
                Diagnostic::error(
                    unroll_span,
                    format!("this unrolling runs {longest} steps, past the {steps} copies of layer `{}`'s per-step parameters", checked.name),
                )
                .with_label(format!("{longest} steps"))
                .with_secondary(span, format!("{steps} copies"))
                .with_help(format!("give the layer `steps = {longest}`, or unroll at most {steps} steps")),
            );
            return;
        }
        (Some((steps, _)), _) => steps,
        (None, Some(longest)) => longest,
        (None, None) => {
            diags.push(
                Diagnostic::error(
                    layer.span,
                    format!(
                        "layer `{}` has per-step parameters ({names}) but no step count",
                        checked.name
                    ),
                )
                .with_secondary(
                    first.per_step.unwrap_or(first.span),
                    "declared per step here",
                )
                .with_secondary(unroll_span, "runs as many steps as its input has")
                .with_help(format!(
                    "give the layer its most steps: `{}({}steps = 16)`",
                    layer.cell.name,
                    args_prefix(layer)
                )),
            );
            return;
        }
    };
    checked.steps = Some(steps);
}

/// The arguments a layer statement already has, as a prefix for a hint:
/// `"N = 500, "`.
fn args_prefix(layer: &ast::Layer) -> String {
    layer
        .args
        .iter()
        .map(|arg| match arg.value {
            Some(ast::ConstValue::Number(number, _)) => format!("{} = {number}, ", arg.name.name),
            Some(ast::ConstValue::Bool(flag, _)) => format!("{} = {flag}, ", arg.name.name),
            None => format!("{}, ", arg.name.name),
        })
        .collect()
}

/// Layer arguments are `layers = N`, `bidirectional`, `reverse`, `hidden = N` (the
/// size of the cell's first state), or the name of one of the cell's sizes
/// or constants (`proj_size` of `lstm` is a size of `lstm_proj`, which
/// the layer then uses). Each is given once, with a value of the right
/// kind.
///
/// ```text
/// layer l = lstm(hiden = 64);      // unknown argument
/// layer l = lstm(peepholes = 2);   // a flag, not a number
/// layer l = gru(proj_size = 16);   // only `lstm` has a projection
/// ```
fn check_layer_args(diags: &mut Diagnostics, layer: &ast::Layer, cell: &Cell) -> Option<LayerArgs> {
    let errors_before = diags.error_count();
    let mut args = LayerArgs {
        n_layers: 1,
        bidirectional: false,
        reverse: false,
        steps: None,
        hidden: None,
        sizes: vec![None; cell.sizes.len()],
        consts: cell.consts.iter().map(|konst| konst.default).collect(),
    };
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for arg in &layer.args {
        let name = arg.name.name.as_str();
        if let Some(first) = seen.insert(name, arg.name.span) {
            diags.push(
                Diagnostic::error(arg.name.span, format!("argument `{name}` is given twice"))
                    .with_label("given again here")
                    .with_secondary(first, "first given here")
                    .with_help("remove one of them"),
            );
            continue;
        }
        let value_span = arg.value.map_or(arg.name.span, |value| value.span());
        let value = arg.value.map_or(Value::Bool(true), |value| match value {
            ast::ConstValue::Bool(flag, _) => Value::Bool(flag),
            ast::ConstValue::Number(number, _) => Value::Number(number),
        });
        let whole = |diags: &mut Diagnostics, what: &str, max: i128| -> Option<i128> {
            match value {
                Value::Number(number)
                    if number.fract() == 0.0 && number >= 1.0 && number <= max as f64 =>
                {
                    Some(number as i128)
                }
                Value::Number(number) => {
                    let mut diagnostic = Diagnostic::error(
                        value_span,
                        format!("{what} must be a whole number from 1 to {max}, found {number}"),
                    )
                    .with_label("invalid value");
                    if name == PROJ_SIZE && is_projected_lstm(cell) && number == 0.0 {
                        // PyTorch's default, which means no projection.
                        diagnostic = diagnostic.with_help(
                            "`proj_size = 0` is PyTorch's LSTM without projection: leave `proj_size` out",
                        );
                    }
                    diags.push(diagnostic);
                    None
                }
                Value::Bool(_) => {
                    diags.push(
                        Diagnostic::error(value_span, format!("{what} needs a number"))
                            .with_help(format!("write `{name} = 64`")),
                    );
                    None
                }
            }
        };
        match name {
            "layers" => {
                if let Some(count) = whole(diags, "`layers`", MAX_LAYERS as i128) {
                    args.n_layers = count as usize;
                }
            }
            "bidirectional" => match value {
                Value::Bool(flag) => args.bidirectional = flag,
                Value::Number(_) => diags.push(
                    Diagnostic::error(value_span, "`bidirectional` is a flag")
                        .with_help("write `bidirectional` or `bidirectional = false`"),
                ),
            },
            "steps" => {
                if let Some(count) = whole(diags, "`steps`", MAX_STEPS as i128) {
                    args.steps = Some((count as usize, value_span));
                }
            }
            "reverse" => match value {
                Value::Bool(flag) => args.reverse = flag,
                Value::Number(_) => diags.push(
                    Diagnostic::error(value_span, "`reverse` is a flag")
                        .with_help("write `reverse` or `reverse = false`"),
                ),
            },
            "hidden" => {
                if let Some(size) = whole(diags, "`hidden`", MAX_SIZE) {
                    args.hidden = Some((size, value_span));
                }
            }
            _ => {
                if let Some(size_idx) = cell.sizes.iter().position(|size| size == name) {
                    if let Some(size) = whole(diags, &format!("size `{name}`"), MAX_SIZE) {
                        args.sizes[size_idx] = Some((size, value_span));
                    }
                } else if let Some(const_idx) =
                    cell.consts.iter().position(|konst| konst.name == name)
                {
                    match (cell.consts[const_idx].default, value) {
                        (Value::Bool(_), Value::Bool(_)) | (Value::Number(_), Value::Number(_)) => {
                            args.consts[const_idx] = value
                        }
                        (Value::Bool(_), Value::Number(_)) => diags.push(
                            Diagnostic::error(
                                value_span,
                                format!("`{name}` is a flag, found a number"),
                            )
                            .with_label("a number")
                            .with_help(format!("write `{name}` or `{name} = false`")),
                        ),
                        (Value::Number(_), Value::Bool(_)) => diags.push(
                            Diagnostic::error(
                                value_span,
                                format!("`{name}` is a number, found a flag"),
                            )
                            .with_label("a flag")
                            .with_help(format!("write `{name} = 1.0`")),
                        ),
                    }
                } else {
                    let mut accepted: Vec<&str> =
                        vec!["hidden", "layers", "bidirectional", "reverse", "steps"];
                    accepted.extend(cell.sizes.iter().map(String::as_str));
                    accepted.extend(cell.consts.iter().map(|konst| konst.name.as_str()));
                    if cell.from_prelude && cell.name == LSTM {
                        // Given, it makes the layer an `lstm_proj`.
                        accepted.push(PROJ_SIZE);
                    }
                    let mut diagnostic = Diagnostic::error(
                        arg.name.span,
                        format!("cell `{}` has no argument `{name}`", cell.name),
                    )
                    .with_label("unknown argument");
                    if let Some(close) = suggest(name, accepted.iter().copied()) {
                        diagnostic = diagnostic.with_help(format!("did you mean `{close}`?"));
                    } else if name == PROJ_SIZE && cell.from_prelude {
                        diagnostic = diagnostic.with_help(format!(
                            "only `{LSTM}` has a projection: `{LSTM}(hidden = 64, {PROJ_SIZE} = 16)`"
                        ));
                    } else if name == PROJ_SIZE {
                        diagnostic = diagnostic.with_help(
                            "a cell projects its output itself: `param proj: [P, H];` and `output proj @ h;`",
                        );
                    }
                    diags.push(diagnostic.with_note(format!(
                        "arguments of `{}`: {}",
                        cell.name,
                        accepted.join(", ")
                    )));
                }
            }
        }
    }
    if args.reverse && args.bidirectional {
        let span = |name: &str| {
            layer
                .args
                .iter()
                .find(|arg| arg.name.name == name)
                .map(|arg| arg.name.span)
        };
        if let (Some(reverse), Some(bidirectional)) = (span("reverse"), span("bidirectional")) {
            diags.push(
                Diagnostic::error(reverse, "a layer is `reverse` or `bidirectional`, not both")
                    .with_label("runs backward only")
                    .with_secondary(bidirectional, "already runs both ways")
                    .with_help("a bidirectional layer's backward half is a reverse layer: keep one of the two"),
            );
        }
    }
    (diags.error_count() == errors_before).then_some(args)
}

/// Whether `cell` is the prelude's projected LSTM.
fn is_projected_lstm(cell: &Cell) -> bool {
    cell.from_prelude && cell.name == PROJECTED_LSTM
}

/// A projection maps the LSTM's H cell-state units to fewer, so
/// `proj_size` is smaller than `hidden`, as PyTorch requires ("proj_size
/// has to be smaller than hidden_size"): a state dict with
/// `proj_size >= hidden` cannot come from PyTorch.
///
/// ```text
/// layer l = lstm(hidden = 16, proj_size = 16);
/// ```
fn check_projection(diags: &mut Diagnostics, cell: &Cell, args: &LayerArgs) {
    if !is_projected_lstm(cell) {
        return;
    }
    let size_arg = |name: &str| {
        let idx = cell.sizes.iter().position(|size| size == name)?;
        args.sizes[idx]
    };
    let hidden = args.hidden.or_else(|| size_arg("H"));
    let (Some((proj_size, proj_span)), Some((hidden, hidden_span))) = (size_arg(PROJ_SIZE), hidden)
    else {
        // A missing size is reported when the layer is instantiated.
        return;
    };
    if proj_size < hidden {
        return;
    }
    diags.push(
        Diagnostic::error(
            proj_span,
            format!("`{PROJ_SIZE}` must be smaller than the hidden size {hidden}, found {proj_size}"),
        )
        .with_label(format!("not smaller than {hidden}"))
        .with_secondary(hidden_span, format!("hidden size {hidden} here"))
        .with_note("a projection maps the cell state's units to fewer; PyTorch's `nn.LSTM` refuses this too: \"proj_size has to be smaller than hidden_size\"")
        .with_help(format!("lower `{PROJ_SIZE}` below {hidden}, or leave it out for an LSTM without projection")),
    );
}

/// Every cell input reads something: the first layer's inputs read the
/// network's inputs and contexts by name (a single unnamed per-step input
/// also binds to the network's single per-step input); later layers read
/// the previous layer's output in their first input and contexts by name.
///
/// ```text
/// network N { context y: [4]; layer l = lstm(hidden = 8); ... }   // `x`?
/// ```
fn bind_inputs(
    diags: &mut Diagnostics,
    layer: &ast::Layer,
    cell: &Cell,
    inputs: &[NetInput],
    inputs_ok: bool,
    first: bool,
    used_inputs: &mut [bool],
) -> Option<Vec<InputSource>> {
    let mut sources: Vec<Option<InputSource>> = vec![None; cell.inputs.len()];
    let mut bound_by_name = vec![false; inputs.len()];
    for (slot, var) in sources
        .iter_mut()
        .zip(&cell.inputs)
        .skip(usize::from(!first))
    {
        if let Some(idx) = inputs.iter().position(|input| input.name == var.name) {
            *slot = Some(InputSource::Network(idx));
            bound_by_name[idx] = true;
        }
    }
    if !first {
        if let Some(slot) = sources.first_mut() {
            *slot = Some(InputSource::Previous);
        }
    } else {
        let unbound: Vec<usize> = (0..sources.len())
            .filter(|idx| sources[*idx].is_none())
            .collect();
        let free_steps: Vec<usize> = (0..inputs.len())
            .filter(|idx| inputs[*idx].per_step && !bound_by_name[*idx])
            .collect();
        if let ([slot], [input]) = (&unbound[..], &free_steps[..]) {
            sources[*slot] = Some(InputSource::Network(*input));
        }
    }
    let mut ok = true;
    for (slot, var) in sources.iter().zip(&cell.inputs) {
        match slot {
            Some(InputSource::Network(idx)) => used_inputs[*idx] = true,
            Some(InputSource::Previous) => {}
            None if !inputs_ok => ok = false,
            None => {
                ok = false;
                diags.push(
                    Diagnostic::error(layer.cell.span, format!("input `{}` of cell `{}` has nothing to read", var.name, cell.name))
                        .with_label(format!("`{}` is not bound", var.name))
                        .with_help(format!("declare `input {}: [N];` (a value per step) or `context {}: [N];` (one value for all steps) in the network", var.name, var.name)),
                );
            }
        }
    }
    ok.then(|| {
        sources
            .into_iter()
            .map(|slot| slot.expect("checked above"))
            .collect()
    })
}

/// Sizes are inferred from what a layer's inputs receive, `hidden`, and
/// explicit size arguments; every size must end up known and consistent,
/// and every shape, index and slice of the cell must be valid with them.
///
/// ```text
/// input x: [10];
/// layer l = my_cell(hidden = 8);   // my_cell(x: [H]) wants x of size 8
/// ```
fn instantiate(
    diags: &mut Diagnostics,
    layer: &ast::Layer,
    cell: &Cell,
    args: &LayerArgs,
    inputs: &[NetInput],
    sources: &[InputSource],
    previous_size: Option<usize>,
) -> Option<Instance> {
    let names = &cell.sizes;
    let mut values: Vec<Option<i128>> = args
        .sizes
        .iter()
        .map(|size| size.map(|(value, _)| value))
        .collect();
    let cell_span = |span: Span| (!cell.from_prelude).then_some(span);
    let mut equations: Vec<SizeEquation> = Vec::new();
    if let Some((hidden, span)) = args.hidden {
        let state = &cell.states[0];
        equations.push(SizeEquation {
            dim: state.dim.clone(),
            target: hidden,
            given: format!("`hidden = {hidden}`"),
            given_span: Some(span),
            cell_side: format!("state `{}` of cell `{}`", state.name, cell.name),
            cell_span: cell_span(state.span),
        });
    }
    for (var, source) in cell.inputs.iter().zip(sources) {
        let (size, given, given_span) = match source {
            InputSource::Network(idx) => {
                let input = &inputs[*idx];
                let kind = if input.per_step {
                    "network input"
                } else {
                    "context"
                };
                (
                    input.size,
                    format!("{kind} `{}` has size {}", input.name, input.size),
                    Some(input.span),
                )
            }
            InputSource::Previous => {
                let size = previous_size.expect("later layers know their input size");
                (
                    size,
                    format!("the previous layer's output has size {size}"),
                    None,
                )
            }
        };
        equations.push(SizeEquation {
            dim: var.dim.clone(),
            target: size as i128,
            given,
            given_span,
            cell_side: format!("input `{}` of cell `{}`", var.name, cell.name),
            cell_span: cell_span(var.span),
        });
    }
    let mut ok = true;
    let mut pending = equations;
    loop {
        let before = pending.len();
        let mut still = Vec::new();
        for equation in pending {
            let SizeEquation { dim, target, .. } = &equation;
            if let Some(value) = dim.eval(&values) {
                if value.as_int() != Some(*target) {
                    ok = false;
                    let shown = if dim.as_const().is_some() {
                        format!("[{value}]")
                    } else {
                        format!("[{}] (= {value})", dim.display(names))
                    };
                    let message = format!(
                        "size mismatch in layer `{}`: {}, but {} is {shown}",
                        layer.name.name, equation.given, equation.cell_side
                    );
                    diags.push(
                        equation
                            .labels(Diagnostic::error(layer.cell.span, message), *target, names)
                            .with_label("in this layer")
                            .with_note(size_note(cell, &values)),
                    );
                }
                continue;
            }
            match dim.solve(&values, *target) {
                Some((sym, value)) => match value.as_int() {
                    Some(int) if (1..=MAX_SIZE).contains(&int) => values[sym as usize] = Some(int),
                    _ => {
                        ok = false;
                        let message = format!(
                            "size `{}` of cell `{}` would be {value}: {}, and {} is [{}]",
                            names[sym as usize],
                            cell.name,
                            equation.given,
                            equation.cell_side,
                            dim.display(names)
                        );
                        diags.push(
                            equation
                                .labels(Diagnostic::error(layer.cell.span, message), *target, names)
                                .with_note(format!("sizes are whole numbers from 1 to {MAX_SIZE}")),
                        );
                    }
                },
                None => still.push(equation),
            }
        }
        pending = still;
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    if !ok {
        return None;
    }
    let unknown: Vec<&str> = values
        .iter()
        .zip(names)
        .filter(|(value, _)| value.is_none())
        .map(|(_, name)| name.as_str())
        .collect();
    if !unknown.is_empty() {
        // The first state's size is what `hidden` sets, and that is the
        // word users know it by.
        let first_state = &cell.states[0].dim;
        let hidden_size = first_state
            .symbols()
            .next()
            .filter(|sym| *first_state == SymDim::sym(*sym));
        let example: Vec<String> = values
            .iter()
            .enumerate()
            .filter(|(_, value)| value.is_none())
            .map(|(sym, _)| {
                if hidden_size == Some(sym as SymId) {
                    "hidden = ...".to_owned()
                } else {
                    format!("{} = ...", names[sym])
                }
            })
            .collect();
        diags.push(
            Diagnostic::error(
                layer.cell.span,
                format!("cannot infer size{} {} of cell `{}`", if unknown.len() == 1 { "" } else { "s" }, unknown.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", "), cell.name),
            )
            .with_label(format!("no value for {}", unknown.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")))
            .with_note("sizes come from the layer's inputs, from `hidden` (the first state's size) and from size arguments")
            .with_help(format!("pass {}: `{}({})`", if unknown.len() == 1 { "it" } else { "them" }, layer.cell.name, example.join(", "))),
        );
        return None;
    }
    for constraint in &cell.constraints {
        if let Some(message) = violated(constraint, &values, names) {
            ok = false;
            let span = match constraint {
                Constraint::Positive(_, span)
                | Constraint::Index { span, .. }
                | Constraint::Slice { span, .. } => *span,
            };
            let mut diagnostic = Diagnostic::error(
                layer.cell.span,
                format!("in layer `{}`: {message}", layer.name.name),
            )
            .with_label("with the sizes of this layer")
            .with_note(size_note(cell, &values));
            if !cell.from_prelude {
                diagnostic = diagnostic.with_secondary(span, "in the cell here");
            }
            diags.push(diagnostic);
        }
    }
    if !ok {
        return None;
    }
    let sizes: Vec<usize> = values
        .iter()
        .map(|value| value.expect("all known") as usize)
        .collect();
    let Ty::Vector(output_dim) = &cell.bindings[cell.output].ty else {
        unreachable!("check_output ensures the output is a vector")
    };
    // Every size the output can have is covered by a constraint above, so
    // this only guards against a gap in them.
    let Some(output_size) = eval_usize(output_dim, &values).filter(|size| *size >= 1) else {
        diags.push(
            Diagnostic::error(
                layer.cell.span,
                format!("in layer `{}`: the output size [{}] of cell `{}` is not a positive whole number", layer.name.name, output_dim.display(names), cell.name),
            )
            .with_note(size_note(cell, &values)),
        );
        return None;
    };
    Some(Instance {
        sizes,
        consts: args.consts.clone(),
        inputs: sources.to_vec(),
        output_size,
    })
}

fn size_note(cell: &Cell, values: &[Option<i128>]) -> String {
    let known: Vec<String> = cell
        .sizes
        .iter()
        .zip(values)
        .filter_map(|(name, value)| value.map(|value| format!("{name} = {value}")))
        .collect();
    if known.is_empty() {
        format!("no size of cell `{}` is known", cell.name)
    } else {
        format!("sizes of cell `{}`: {}", cell.name, known.join(", "))
    }
}

fn eval_usize(dim: &SymDim, values: &[Option<i128>]) -> Option<usize> {
    let value = dim.eval(values)?.as_int()?;
    usize::try_from(value).ok()
}

fn violated(constraint: &Constraint, values: &[Option<i128>], names: &[String]) -> Option<String> {
    let show = |dim: &SymDim| dim.display(names).to_string();
    let length = |len: &SymDim, value: i128| {
        if len.as_const().is_some() {
            format!("length {value}")
        } else {
            format!("length {} = {value}", show(len))
        }
    };
    match constraint {
        Constraint::Positive(dim, _) => match dim.eval(values) {
            Some(value)
                if value
                    .as_int()
                    .is_some_and(|int| (1..=MAX_SIZE).contains(&int)) =>
            {
                None
            }
            Some(value) => Some(format!(
                "size `{}` is {value}, not a whole number from 1 to {MAX_SIZE}",
                show(dim)
            )),
            None => Some(format!("size `{}` is too large", show(dim))),
        },
        Constraint::Index { index, len, .. } => {
            let index_value = dim_int(index, values)?;
            let len_value = dim_int(len, values)?;
            (!(0..len_value).contains(&index_value)).then(|| {
                format!(
                    "index `[{}]` is {index_value}, past the end of {}",
                    show(index),
                    length(len, len_value)
                )
            })
        }
        Constraint::Slice {
            start, end, len, ..
        } => {
            let start_value = dim_int(start, values)?;
            let end_value = dim_int(end, values)?;
            let len_value = dim_int(len, values)?;
            let slice = format!(
                "slice `[{}..{}]` is `[{start_value}..{end_value}]`",
                show(start),
                show(end)
            );
            if start_value < 0 || end_value > len_value {
                Some(format!("{slice}, outside {}", length(len, len_value)))
            } else if start_value >= end_value {
                Some(format!("{slice}, which is empty"))
            } else {
                None
            }
        }
    }
}

fn dim_int(dim: &SymDim, values: &[Option<i128>]) -> Option<i128> {
    dim.eval(values)?.as_int()
}

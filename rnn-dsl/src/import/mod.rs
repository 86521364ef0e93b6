//! Models from other formats, as a model text and its weights: `rnnc import`.
//!
//! Input: the bytes of an ONNX model (and, for weights that are graph inputs rather than
//! initializers, their values). Output: an [`Imported`] model: the text of a `.rnn` network
//! whose layers are the graph's `LSTM`, `GRU` and `RNN` nodes, its weights under PyTorch's
//! names (through [`rnn_runtime::layout`]'s ONNX conversion), and how each ONNX graph input
//! and output maps to the network's tensors ([`Binding`]).
//!
//! The importer is strict: what the built-in cells cannot compute exactly (a non-default
//! activation, `activation_alpha`/`beta`, `input_forget`, an operator around the recurrence
//! other than the layout glue exporters emit) is an [`ImportError`] naming the node, the
//! attribute and its value, never an approximation. ONNX's `clip` (of the gates'
//! pre-activations, as ONNX Runtime computes it) is honoured with the cells of `clip.rnn`,
//! written into the text. The glue it follows (`Identity`, `Transpose`, `Squeeze`,
//! `Unsqueeze`, `Reshape` with a constant shape, `Slice` and `Concat` of states and of a
//! bidirectional output's directions, `Cast` of the lengths, and the `Shape` … `Expand` that
//! builds zero initial states; a `MatMul` and `Add` of constants on the last layer's output is a
//! linear head, the network's `linear` layer) is tracked exactly: every value of the graph is described by
//! what each of its axes holds ([`Atom`]), and a value reaching a recurrent node or a graph
//! output must hold what the node or a network tensor holds, in some order the binding
//! records.
//!
//! This is a front door, not a stage: it writes text that then goes through the pipeline like
//! any model's (`compile` checks it, `weights::recurrent_layers` describes its layers).

mod assemble;
mod axes;
pub mod proto;

use axes::{
    axes_text, drop_unit, drop_units, is_whole, multiply, reshape_axes, reshape_to_dims,
    solve_input_axes, squeeze_axes, ShapeDim,
};
pub use axes::{Atom, Axes, Binding};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ndarray::ArrayD;
use rnn_runtime::layout::{self, Layout};
use rnn_runtime::TensorMap;

use crate::names;
use crate::source::SourceFile;
use proto::{AttributeProto, NodeProto, Values};

/// The opsets of the default domain whose `LSTM`, `GRU` and `RNN` the importer reads: the
/// operators' versions 7, 14 and 22 (version 14 added `layout`; 22 more types), up to the newest
/// opset the importer was tested with.
pub const OPSETS: std::ops::RangeInclusive<i64> = 7..=28;

/// The largest hidden or input size imported: the language's own bound on a size.
const MAX_SIZE: usize = 1 << 24;

/// An imported model.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The `.rnn` text: one network.
    pub text: String,
    /// Its weights, PyTorch-named.
    pub weights: TensorMap,
    /// The ONNX graph inputs the network reads, and as what.
    pub inputs: Vec<Binding>,
    /// The ONNX graph outputs the network writes, and as what.
    pub outputs: Vec<Binding>,
}

/// Why a model cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The node it is about (`LSTM node "lstm_1"`), or empty for the model as a whole.
    pub node: String,
    /// What is wrong, and where it can be, what to do.
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.node.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.node, self.message)
        }
    }
}

impl std::error::Error for ImportError {}

type Result<T> = std::result::Result<T, ImportError>;

fn model_error(message: impl Into<String>) -> ImportError {
    ImportError {
        node: String::new(),
        message: message.into(),
    }
}

/// A node's label in messages: `LSTM node "lstm_1"` (or its index when it has no name).
fn node_label(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("{} node #{index}", node.op_type)
    } else {
        format!("{} node \"{}\"", node.op_type, node.name)
    }
}

/// The recurrent operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lstm,
    Gru,
    Rnn,
}

impl Op {
    fn of(op_type: &str) -> Option<Op> {
        match op_type {
            "LSTM" => Some(Op::Lstm),
            "GRU" => Some(Op::Gru),
            "RNN" => Some(Op::Rnn),
            _ => None,
        }
    }

    fn gates(self) -> usize {
        match self {
            Op::Lstm => 4,
            Op::Gru => 3,
            Op::Rnn => 1,
        }
    }

    /// Its default activations, per direction.
    fn activations(self) -> &'static [&'static str] {
        match self {
            Op::Lstm => &["Sigmoid", "Tanh", "Tanh"],
            Op::Gru => &["Sigmoid", "Tanh"],
            Op::Rnn => &["Tanh"],
        }
    }
}

/// One recurrent node, read.
#[derive(Debug, Clone)]
struct Recurrent {
    node: usize,
    label: String,
    op: Op,
    /// The built-in cell: `lstm`, `gru`, `rnn_tanh`, `rnn_relu`.
    cell: &'static str,
    hidden: usize,
    input_size: usize,
    directions: usize,
    reverse: bool,
    batch_major: bool,
    peepholes: bool,
    reset_after: bool,
    /// ONNX's `clip` of the gates' pre-activations.
    clip: Option<f32>,
    w: ArrayD<f32>,
    r: ArrayD<f32>,
    b: Option<ArrayD<f32>>,
    p: Option<ArrayD<f32>>,
    /// The node's `X`, `sequence_lens`, `initial_h`, `initial_c` value names ("" when absent).
    x: String,
    lengths: String,
    initial: [String; 2],
    /// Its outputs `Y`, `Y_h`, `Y_c` ("" when absent).
    outputs: [String; 3],
}

impl Recurrent {
    /// Whether `next` can be the next stacked layer of the same layer statement.
    fn stacks_with(&self, next: &Recurrent) -> bool {
        self.cell == next.cell
            && self.hidden == next.hidden
            && self.directions == next.directions
            && self.reverse == next.reverse
            && self.peepholes == next.peepholes
            && self.reset_after == next.reset_after
            && self.batch_major == next.batch_major
            && self.clip == next.clip
            && next.input_size == self.directions * self.hidden
    }

    /// The layer statement's arguments.
    fn arguments(&self, layers: usize, for_weights: bool) -> String {
        let mut args = vec![format!("hidden = {}", self.hidden)];
        if layers > 1 {
            args.push(format!("layers = {layers}"));
        }
        if self.directions == 2 {
            args.push("bidirectional".into());
        }
        if self.reverse {
            args.push("reverse".into());
        }
        if self.peepholes {
            args.push("peepholes".into());
        }
        if self.op == Op::Gru {
            args.push(format!("reset_after = {}", self.reset_after));
        }
        if let (Some(clip), false) = (self.clip, for_weights) {
            args.push(format!("gate_clip = {clip:?}"));
        }
        args.join(", ")
    }

    /// The cell of its layer statement: a built-in one, or with `clip` its variant from
    /// `clip.rnn` (`for_weights` asks for the built-in one, whose weights it shares).
    fn cell_name(&self, for_weights: bool) -> String {
        match self.clip {
            Some(_) if !for_weights => format!("{}_gate_clip", self.cell),
            _ => self.cell.to_string(),
        }
    }
}

/// What a value of the graph is, as far as the importer follows it.
#[derive(Debug, Clone)]
enum Value {
    /// A constant (an initializer, a `Constant` node, or a value given for a graph input).
    Const(Values),
    /// Derived from graph input `input` with the axes `axes`.
    Input { input: String, axes: Axes },
    /// Node `node`'s sequence output `Y`, with the axes `axes`; with `direction`, only that
    /// direction of a bidirectional node, sliced out (tf2onnx's export of Keras's
    /// `Bidirectional` slices the two and concatenates them along the features).
    Sequence {
        node: usize,
        axes: Axes,
        direction: Option<usize>,
    },
    /// The final state `state` (0: `Y_h`, 1: `Y_c`) of the nodes listed (concatenated
    /// along the layer axis when several), with the axes `axes`.
    State {
        nodes: Vec<usize>,
        state: usize,
        axes: Axes,
    },
    /// A linear head on node `node`'s output (`MatMul` by a constant `[K, O]`, then maybe
    /// `Add` of a constant `[O]`): PyTorch's `nn.Linear`, Keras's `Dense`. Its axes hold
    /// the head's `O` outputs as `Feature`.
    Head {
        node: usize,
        axes: Axes,
        weight: ArrayD<f32>,
        bias: Option<ArrayD<f32>>,
        labels: Vec<String>,
    },
    /// Integers computed from shapes (`Shape`, and `Gather`, `Slice`, `Concat`, `Cast`, `Mul`
    /// of them): what exporters build the shapes of zero initial states and of reshapes from.
    /// Each element is known as what it measures ([`ShapeDim`]) where the importer could
    /// follow it.
    Shape(Option<Vec<ShapeDim>>),
    /// Zeros of a shape known at run time (`Expand` of a zero constant): a zero initial state.
    Zeros,
    /// Rows `rows` of the leading axis of graph input `input` (a `Slice` of initial states).
    Rows {
        input: String,
        axes: Axes,
        rows: std::ops::Range<usize>,
    },
}

/// The elements of a value used as a shape, if they are known.
fn shape_of(value: &Value) -> Option<Vec<ShapeDim>> {
    match value {
        Value::Shape(dims) => dims.clone(),
        Value::Const(Values::I64(numbers)) if numbers.ndim() <= 1 => {
            Some(numbers.iter().map(|&n| ShapeDim::Number(n)).collect())
        }
        _ => None,
    }
}

/// Whether a value is integers computed from shapes (or a constant that can take part).
fn is_shape(value: &Value) -> bool {
    matches!(value, Value::Shape(_) | Value::Const(Values::I64(_)))
}

/// The axes of a followed tensor.
fn axes_of(value: &Value) -> Option<&Axes> {
    match value {
        Value::Input { axes, .. }
        | Value::Sequence { axes, .. }
        | Value::State { axes, .. }
        | Value::Head { axes, .. } => Some(axes),
        _ => None,
    }
}

/// Elements `start..end` of a list, with ONNX's `Slice` clamping of negative and large ends.
fn slice_list<T: Clone>(list: &[T], start: i64, end: i64) -> Vec<T> {
    let len = list.len() as i64;
    let clamp = |at: i64| (if at < 0 { at + len } else { at }).clamp(0, len) as usize;
    let (start, end) = (clamp(start), clamp(end));
    list[start..end.max(start)].to_vec()
}

/// Imports an ONNX model. `given` holds values of graph inputs by name, read where a node
/// needs a constant: the weights of a graph that takes them as inputs rather than initializers
/// (ONNX's node tests feed `W`, `R`, `B` so); data inputs among them are left as inputs.
/// `network` is the network's name in the text.
///
/// # Errors
///
/// An [`ImportError`]: not an ONNX model, an opset outside [`OPSETS`], a node or attribute the
/// importer cannot honour exactly, a graph it cannot follow.
pub fn onnx(bytes: &[u8], given: &BTreeMap<String, Values>, network: &str) -> Result<Imported> {
    import(bytes, given, network, None)
}

/// [`onnx`] for a model saved with its weights in external files (PyTorch's exporter does so
/// by default), which are read from `dir`, the model's directory.
///
/// # Errors
///
/// As [`onnx`], and an external file that cannot be read or does not hold the tensor.
pub fn onnx_in(
    bytes: &[u8],
    given: &BTreeMap<String, Values>,
    network: &str,
    dir: &std::path::Path,
) -> Result<Imported> {
    import(bytes, given, network, Some(dir))
}

fn import(
    bytes: &[u8],
    given: &BTreeMap<String, Values>,
    network: &str,
    dir: Option<&std::path::Path>,
) -> Result<Imported> {
    let model = proto::model(bytes).map_err(|error| {
        model_error(format!(
            "not an ONNX model: the file does not decode as an ONNX ModelProto ({error})"
        ))
    })?;
    let graph = model.graph.as_ref().ok_or_else(|| {
        model_error("not an ONNX model: it has no graph (is it an ONNX file, and complete?)")
    })?;
    let opset = model
        .opset_import
        .iter()
        .find(|opset| opset.domain.is_empty() || opset.domain == "ai.onnx")
        .map(|opset| opset.version)
        .ok_or_else(|| {
            model_error("not an ONNX model: it imports no opset of the default domain")
        })?;
    if !OPSETS.contains(&opset) {
        return Err(model_error(format!(
            "the model uses ONNX opset {opset}; `rnnc import` reads opsets {} to {} (re-export it with one of those, e.g. `torch.onnx.export(..., opset_version=17)`)",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let identifier = network
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && network
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    // A keyword (`cell`, `inf`) is an identifier the language will not take as a name.
    let probe = format!(
        "network {network} {{ input x: [1]; layer l = rnn_tanh(hidden = 1); unroll dynamic; }}"
    );
    if !identifier || crate::compile(SourceFile::new("name.rnn", probe)).is_err() {
        return Err(model_error(format!(
            "`{network}` cannot name a network: a name is a letter, then letters, digits and `_`, and not a keyword of the language"
        )));
    }
    Importer::new(graph, given, opset, dir)?.run(network)
}

struct Importer<'a> {
    graph: &'a proto::GraphProto,
    /// Values of graph inputs, used where a node needs a constant.
    given: &'a BTreeMap<String, Values>,
    values: BTreeMap<String, Value>,
    recurrent: Vec<Recurrent>,
    /// Graph inputs that are data (not weights), with their declared rank.
    data_inputs: BTreeMap<String, usize>,
    /// The sizes graph inputs declare (`None` where a dimension is symbolic).
    declared: BTreeMap<String, Vec<Option<usize>>>,
    /// Time and batch sizes fixed by the declared shape of the input the first recurrent node
    /// reads (an export without dynamic axes reshapes with them as numbers).
    fixed: BTreeMap<Atom, usize>,
    opset: i64,
    /// Where external data is read from.
    dir: Option<&'a std::path::Path>,
}

impl<'a> Importer<'a> {
    fn new(
        graph: &'a proto::GraphProto,
        given: &'a BTreeMap<String, Values>,
        opset: i64,
        dir: Option<&'a std::path::Path>,
    ) -> Result<Importer<'a>> {
        let mut values = BTreeMap::new();
        for tensor in &graph.initializer {
            let value = tensor.values_in(dir).map_err(|message| {
                model_error(format!("initializer `{}`: {message}", tensor.name))
            })?;
            values.insert(tensor.name.clone(), Value::Const(value));
        }
        let mut data_inputs = BTreeMap::new();
        let mut declared = BTreeMap::new();
        for input in &graph.input {
            if values.contains_key(&input.name) {
                continue;
            }
            let rank = input
                .r#type
                .as_ref()
                .and_then(|ty| ty.tensor_type.as_ref())
                .and_then(|tensor| tensor.shape.as_ref())
                .map(|shape| shape.dim.len());
            let rank = rank.ok_or_else(|| {
                model_error(format!(
                    "graph input `{}` has no tensor shape; `rnnc import` needs the rank of every input",
                    input.name
                ))
            })?;
            data_inputs.insert(input.name.clone(), rank);
            let declared_dims = input
                .r#type
                .as_ref()
                .and_then(|ty| ty.tensor_type.as_ref())
                .and_then(|tensor| tensor.shape.as_ref())
                .map(|shape| {
                    shape
                        .dim
                        .iter()
                        .map(|dim| dim.dim_value.and_then(|v| usize::try_from(v).ok()))
                        .collect()
                })
                .unwrap_or_default();
            declared.insert(input.name.clone(), declared_dims);
            values.insert(
                input.name.clone(),
                Value::Input {
                    input: input.name.clone(),
                    axes: (0..rank).map(|k| vec![Atom::In(k)]).collect(),
                },
            );
        }
        for name in given.keys() {
            if !graph.input.iter().any(|input| &input.name == name) {
                return Err(model_error(format!(
                    "a value is given for `{name}`, which is not an input of the graph"
                )));
            }
        }
        Ok(Importer {
            graph,
            given,
            values,
            recurrent: Vec::new(),
            data_inputs,
            declared,
            fixed: BTreeMap::new(),
            opset,
            dir,
        })
    }

    fn run(mut self, network: &str) -> Result<Imported> {
        // A recurrence written out as a loop is not one of the recurrent operators, whatever
        // its body computes: say so before the loop's condition is refused as an unknown op.
        if let Some((index, node)) = self
            .graph
            .node
            .iter()
            .enumerate()
            .find(|(_, node)| matches!(node.op_type.as_str(), "Loop" | "Scan"))
        {
            return Err(ImportError {
                node: node_label(node, index),
                message: format!(
                    "the recurrence is a {} over the cell's equations, not an LSTM, GRU or RNN node (tf2onnx writes Keras's SimpleRNN, GRU(reset_after=False) and layers after a Masking so); `rnnc import` reads the recurrent operators only: write the network in a .rnn file (the built-in `gru(reset_after = false)` and `rnn_tanh` are those layers) and convert its Keras weights with `rnnc convert --from keras`",
                    node.op_type
                ),
            });
        }
        if let Some((index, node)) = self
            .graph
            .node
            .iter()
            .enumerate()
            .find(|(_, node)| node.op_type == "ReverseSequence")
        {
            return Err(ImportError {
                node: node_label(node, index),
                message: "a sequence reversed in time (tf2onnx's Keras go_backwards): the layer's outputs stay in reversed order, which a network's `y` is not; write the layer with `reverse` in a .rnn file, reverse its `y` in time, and convert the Keras weights with `rnnc convert --from keras`".into(),
            });
        }
        for (index, node) in self.graph.node.iter().enumerate() {
            self.node(index, node)?;
        }
        if self.recurrent.is_empty() {
            return Err(model_error(
                "the graph has no LSTM, GRU or RNN node: `rnnc import` imports recurrent models",
            ));
        }
        self.assemble(network)
    }

    fn value(&self, name: &str, label: &str) -> Result<&Value> {
        self.values.get(name).ok_or_else(|| ImportError {
            node: label.to_string(),
            message: format!("reads `{name}`, which no node or input of the graph defines"),
        })
    }

    fn constant(&self, name: &str, label: &str, what: &str) -> Result<Values> {
        match self.value(name, label)? {
            Value::Const(values) => Ok(values.clone()),
            Value::Input { input, axes } if self.given.contains_key(input) && is_whole(axes) => {
                Ok(self.given[input].clone())
            }
            Value::Input { axes, .. } if is_whole(axes) => Err(ImportError {
                node: label.to_string(),
                message: format!(
                    "its {what} `{name}` is an input of the graph with no initializer; give its value with `--tensor FILE.pb` (a TensorProto naming it, as ONNX's test_data_set_*/input_*.pb)"
                ),
            }),
            _ => Err(ImportError {
                node: label.to_string(),
                message: format!(
                    "its {what} `{name}` is computed from the model's inputs; `rnnc import` needs it constant (an initializer or a Constant node)"
                ),
            }),
        }
    }

    fn floats(&self, name: &str, label: &str, what: &str) -> Result<ArrayD<f32>> {
        match self.constant(name, label, what)? {
            Values::F32(array) => Ok(array),
            Values::I64(_) => Err(ImportError {
                node: label.to_string(),
                message: format!("its {what} `{name}` is integer; it must be float"),
            }),
        }
    }

    fn ints(&self, name: &str, label: &str, what: &str) -> Result<Vec<i64>> {
        match self.constant(name, label, what)? {
            Values::I64(array) => Ok(array.iter().copied().collect()),
            Values::F32(_) => Err(ImportError {
                node: label.to_string(),
                message: format!("its {what} `{name}` is float; it must be integer"),
            }),
        }
    }

    fn define(&mut self, name: &str, value: Value) {
        if !name.is_empty() {
            self.values.insert(name.to_string(), value);
        }
    }

    /// Reads one node: a constant, glue, or a recurrent node; anything else is refused.
    fn node(&mut self, index: usize, node: &NodeProto) -> Result<()> {
        let label = node_label(node, index);
        let refuse = |message: String| ImportError {
            node: label.clone(),
            message,
        };
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(refuse(format!(
                "its domain `{}` is not ONNX's default; `rnnc import` reads LSTM, GRU and RNN and their layout glue",
                node.domain
            )));
        }
        let input = |k: usize| node.input.get(k).map(String::as_str).unwrap_or("");
        let output = node.output.first().map(String::as_str).unwrap_or("");
        match node.op_type.as_str() {
            "LSTM" | "GRU" | "RNN" => self.recurrent_node(index, node, label),
            "Constant" => {
                let attribute = node
                    .attribute
                    .iter()
                    .find(|attribute| attribute.name == "value")
                    .and_then(|attribute| attribute.t.as_ref())
                    .ok_or_else(|| {
                        refuse("it has no tensor `value` (other forms of Constant are not read)".into())
                    })?;
                let values = attribute.values_in(self.dir).map_err(&refuse)?;
                self.define(output, Value::Const(values));
                Ok(())
            }
            "Identity" => {
                let value = self.value(input(0), &label)?.clone();
                self.define(output, value);
                Ok(())
            }
            "Shape" => {
                let value = self.value(input(0), &label)?;
                let dims = axes_of(value).map(|axes| {
                    let all: Vec<ShapeDim> = axes.iter().cloned().map(ShapeDim::Atoms).collect();
                    let start = attribute_int(node, "start").unwrap_or(0);
                    let end = attribute_int(node, "end").unwrap_or(i64::MAX);
                    slice_list(&all, start, end)
                });
                self.define(output, Value::Shape(dims));
                Ok(())
            }
            "Gather" if is_shape(self.value(input(0), &label)?) => {
                let dims = shape_of(self.value(input(0), &label)?);
                let indices = match self.value(input(1), &label)? {
                    Value::Const(Values::I64(indices)) => Some(indices.clone()),
                    _ => None,
                };
                let picked = dims.zip(indices).and_then(|(dims, indices)| {
                    let len = dims.len() as i64;
                    indices
                        .iter()
                        .map(|&at| {
                            let at = if at < 0 { at + len } else { at };
                            usize::try_from(at).ok().and_then(|at| dims.get(at).cloned())
                        })
                        .collect::<Option<Vec<_>>>()
                });
                self.define(output, Value::Shape(picked));
                Ok(())
            }
            "Gather" => Err(refuse(
                "`rnnc import` follows a Gather only of shapes (to build zero initial states and reshapes)".into(),
            )),
            "ReduceProd" if is_shape(self.value(input(0), &label)?) => {
                // tf2onnx's Tensordot (Keras's Dense on a sequence) flattens all but the last
                // axis: their sizes' product.
                let product = shape_of(self.value(input(0), &label)?).and_then(|dims| {
                    dims.into_iter().try_fold(ShapeDim::Number(1), |acc, dim| {
                        multiply(&acc, &dim)
                    })
                });
                self.define(output, Value::Shape(product.map(|dim| vec![dim])));
                Ok(())
            }
            "Mul" => {
                let (a, b) = (self.value(input(0), &label)?, self.value(input(1), &label)?);
                if !(is_shape(a) && is_shape(b)) {
                    return Err(refuse(
                        "`rnnc import` follows a Mul only of shapes (the size of merged dimensions)".into(),
                    ));
                }
                let product = match (shape_of(a).as_deref(), shape_of(b).as_deref()) {
                    (Some([x]), Some([y])) => multiply(x, y),
                    _ => None,
                };
                self.define(output, Value::Shape(product.map(|dim| vec![dim])));
                Ok(())
            }
            "Expand" => match self.value(input(0), &label)? {
                Value::Const(Values::F32(zeros)) if zeros.iter().all(|&v| v == 0.0) => {
                    self.define(output, Value::Zeros);
                    Ok(())
                }
                Value::Zeros => {
                    self.define(output, Value::Zeros);
                    Ok(())
                }
                _ => Err(refuse(
                    "`rnnc import` follows an Expand only of zeros (a zero initial state)".into(),
                )),
            },
            "Cast" if is_shape(self.value(input(0), &label)?) => {
                let dims = shape_of(self.value(input(0), &label)?);
                self.define(output, Value::Shape(dims));
                Ok(())
            }
            "Cast" => {
                // Lengths cast between integer types, as exporters do for `sequence_lens`.
                let to = attribute_int(node, "to").unwrap_or(0);
                let value = self.value(input(0), &label)?.clone();
                let integer = to == i64::from(proto::data_type::INT32)
                    || to == i64::from(proto::data_type::INT64);
                let is_data = matches!(value, Value::Input { ref axes, .. } if axes.len() == 1);
                if !integer || !is_data {
                    return Err(refuse(format!(
                        "a Cast to {} of `{}`: `rnnc import` follows only casts of the lengths between INT32 and INT64",
                        proto::data_type::name(to as i32),
                        input(0)
                    )));
                }
                self.define(output, value);
                Ok(())
            }
            "Transpose" => {
                let value = self.value(input(0), &label)?.clone();
                let perm = attribute_ints(node, "perm");
                let value = map_axes(value, |axes| {
                    let given = perm.clone();
                    let perm: Vec<usize> = if perm.is_empty() {
                        (0..axes.len()).rev().collect()
                    } else {
                        perm.iter()
                            .map(|&p| usize::try_from(p).unwrap_or(usize::MAX))
                            .collect()
                    };
                    let mut seen = BTreeSet::new();
                    if perm.len() != axes.len()
                        || perm.iter().any(|&p| p >= axes.len() || !seen.insert(p))
                    {
                        return Err(format!(
                            "its perm {given:?} is not a permutation of {} axes",
                            axes.len()
                        ));
                    }
                    Ok(perm.iter().map(|&p| axes[p].clone()).collect())
                })
                .map_err(refuse)?;
                self.define(output, value);
                Ok(())
            }
            "Squeeze" | "Unsqueeze" => {
                let axes_list = if self.opset >= 13 {
                    if input(1).is_empty() {
                        Vec::new()
                    } else {
                        self.ints(input(1), &label, "axes")?
                    }
                } else {
                    attribute_ints(node, "axes")
                };
                let value = self.value(input(0), &label)?.clone();
                let sizes = self.atom_sizes(&value);
                let squeeze = node.op_type == "Squeeze";
                let value = map_axes(value, |axes| {
                    squeeze_axes(axes, &axes_list, squeeze, &sizes)
                })
                .map_err(refuse)?;
                self.define(output, value);
                Ok(())
            }
            "Reshape" if is_shape(self.value(input(0), &label)?) => {
                let dims = shape_of(self.value(input(0), &label)?);
                self.define(output, Value::Shape(dims));
                Ok(())
            }
            "Reshape" if matches!(self.value(input(1), &label)?, Value::Shape(_)) => {
                let Value::Shape(dims) = self.value(input(1), &label)?.clone() else {
                    unreachable!("matched a shape");
                };
                let dims = dims.ok_or_else(|| {
                    refuse(format!(
                        "its shape `{}` is computed from shapes in a way `rnnc import` does not follow",
                        input(1)
                    ))
                })?;
                let value = self.value(input(0), &label)?.clone();
                let sizes = self.atom_sizes(&value);
                let value = map_axes(value, |axes| reshape_to_dims(axes, &dims, &sizes))
                    .map_err(refuse)?;
                self.define(output, value);
                Ok(())
            }
            "Reshape" => {
                let shape = self.ints(input(1), &label, "shape")?;
                if attribute_int(node, "allowzero") == Some(1) && shape.contains(&0) {
                    return Err(refuse(
                        "allowzero = 1 with a 0 in the shape: a dimension of size 0".into(),
                    ));
                }
                let value = self.value(input(0), &label)?.clone();
                let sizes = self.atom_sizes(&value);
                let value = map_axes(value, |axes| reshape_axes(axes, &shape, &sizes))
                    .map_err(refuse)?;
                self.define(output, value);
                Ok(())
            }
            "MatMul" => self.head_product(node, label),
            "Add" => self.head_bias(node, label),
            "Slice" => self.slice(node, label),
            "Concat" => self.concat(node, label),
            other => Err(refuse(format!(
                "`rnnc import` does not import {other}: it reads LSTM, GRU and RNN nodes, with Identity, Transpose, Squeeze, Unsqueeze, Reshape, Slice and Concat for their layouts and Shape, Gather, Cast and Expand for zero initial states; the rest of a model (embeddings, heads) stays with the framework or is written as layers in the .rnn file"
            ))),
        }
    }

    /// The known sizes of a value's atoms.
    fn atom_sizes(&self, value: &Value) -> BTreeMap<Atom, usize> {
        let mut sizes = self.fixed.clone();
        let node = match value {
            Value::Sequence { node, .. } => Some(*node),
            Value::Head { weight, .. } => {
                sizes.insert(Atom::Feature, weight.shape()[1]);
                return sizes;
            }
            Value::State { nodes, .. } => {
                sizes.insert(Atom::Layer, nodes.len());
                nodes.first().copied()
            }
            _ => None,
        };
        if let Some(node) = node.and_then(|node| self.recurrent.iter().find(|r| r.node == node)) {
            sizes.insert(Atom::Direction, node.directions);
            sizes.insert(Atom::Feature, node.hidden);
        }
        sizes
    }

    /// `Slice` of an initial state input along its first axis (PyTorch's export of a stack).
    fn slice(&mut self, node: &NodeProto, label: String) -> Result<()> {
        let refuse = |message: String| ImportError {
            node: label.clone(),
            message,
        };
        let input = |k: usize| node.input.get(k).map(String::as_str).unwrap_or("");
        let output = node.output.first().map(String::as_str).unwrap_or("");
        if is_shape(self.value(input(0), &label)?) {
            let dims = shape_of(self.value(input(0), &label)?);
            let number = |k: usize| match self.values.get(input(k)) {
                Some(Value::Const(Values::I64(numbers))) if numbers.len() == 1 => {
                    numbers.iter().next().copied()
                }
                _ => None,
            };
            let on_first = input(3).is_empty() || number(3) == Some(0);
            let unit = input(4).is_empty() || number(4) == Some(1);
            let sliced = match (dims, number(1), number(2)) {
                (Some(dims), Some(start), Some(end)) if self.opset >= 10 && on_first && unit => {
                    Some(slice_list(&dims, start, end))
                }
                _ => None,
            };
            self.define(output, Value::Shape(sliced));
            return Ok(());
        }
        let (starts, ends, axes, steps) = if self.opset >= 10 {
            let optional = |k: usize, what: &str| -> Result<Option<Vec<i64>>> {
                if input(k).is_empty() {
                    Ok(None)
                } else {
                    self.ints(input(k), &label, what).map(Some)
                }
            };
            (
                self.ints(input(1), &label, "starts")?,
                self.ints(input(2), &label, "ends")?,
                optional(3, "axes")?,
                optional(4, "steps")?,
            )
        } else {
            (
                attribute_ints(node, "starts"),
                attribute_ints(node, "ends"),
                Some(attribute_ints(node, "axes")).filter(|axes| !axes.is_empty()),
                None,
            )
        };
        let value = self.value(input(0), &label)?.clone();
        let unit = steps.as_deref().is_none_or(|steps| steps == [1]);
        let (&[start], &[end]) = (starts.as_slice(), ends.as_slice()) else {
            return Err(refuse(format!(
                "it has starts {starts:?} and ends {ends:?}; `rnnc import` follows a Slice of one axis"
            )));
        };
        if let Value::Sequence {
            node: producer,
            axes: value_axes,
            direction: None,
        } = &value
        {
            // One direction of a bidirectional node's Y.
            let rank = value_axes.len() as i64;
            // ONNX's default axes for one start are `[0]`.
            let axis = match axes.as_deref() {
                Some(&[axis]) if axis < 0 => axis + rank,
                Some(&[axis]) => axis,
                None => 0,
                Some(_) => -1,
            };
            let direction_axis = value_axes
                .iter()
                .position(|atoms| atoms.as_slice() == [Atom::Direction]);
            let two = self
                .recurrent
                .iter()
                .any(|r| r.node == *producer && r.directions == 2);
            if !unit
                || !two
                || direction_axis.is_none()
                || direction_axis != usize::try_from(axis).ok()
                || !(0..2).contains(&start)
                || end != start + 1
            {
                return Err(refuse(format!(
                    "it takes [{start}:{end}] of axes {axes:?} of a sequence with the axes {}; `rnnc import` follows a Slice of one direction of a bidirectional output only",
                    axes_text(value_axes)
                )));
            }
            let mut sliced = value_axes.clone();
            sliced[axis as usize] = Vec::new();
            self.define(
                output,
                Value::Sequence {
                    node: *producer,
                    axes: sliced,
                    direction: Some(start as usize),
                },
            );
            return Ok(());
        }
        let Value::Input {
            input: name,
            axes: value_axes,
        } = value
        else {
            return Err(refuse(
                "`rnnc import` follows a Slice only of an input of the graph (the initial states of stacked layers), of one direction of a sequence, and of shapes".into(),
            ));
        };
        let on_first = axes.as_deref().unwrap_or(&[0]) == [0];
        if !on_first || !unit || start < 0 || end <= start {
            return Err(refuse(format!(
                "it takes [{start}:{end}] of axes {axes:?} with steps {steps:?}; `rnnc import` follows a Slice of rows of the first axis only"
            )));
        }
        self.define(
            output,
            Value::Rows {
                input: name,
                axes: value_axes,
                rows: start as usize..end as usize,
            },
        );
        Ok(())
    }

    /// `MatMul` of a recurrent output by a constant matrix: a linear head.
    fn head_product(&mut self, node: &NodeProto, label: String) -> Result<()> {
        let refuse = |message: String| ImportError {
            node: label.clone(),
            message,
        };
        let input = |k: usize| node.input.get(k).map(String::as_str).unwrap_or("");
        let value = self.value(input(0), &label)?.clone();
        let Value::Sequence {
            node: producer,
            axes,
            direction: None,
        } = value
        else {
            return Err(refuse(
                "`rnnc import` reads a MatMul only as a linear head on a recurrent layer's output (the sequence by a constant matrix)".into(),
            ));
        };
        let weight = match self.value(input(1), &label)? {
            Value::Const(Values::F32(weight)) if weight.ndim() == 2 => weight.clone(),
            _ => {
                return Err(refuse(format!(
                    "its second input `{}` is not a constant matrix: `rnnc import` reads a MatMul only as a linear head",
                    input(1)
                )))
            }
        };
        let recurrent = self
            .recurrent
            .iter()
            .find(|r| r.node == producer)
            .expect("a sequence's node is read");
        let features = drop_unit(&axes, recurrent.directions);
        let last = features.last().cloned().unwrap_or_default();
        let wanted = drop_unit(
            &vec![vec![Atom::Direction, Atom::Feature]],
            recurrent.directions,
        );
        let inputs = recurrent.directions * recurrent.hidden;
        if last != wanted[0] || weight.shape()[0] != inputs || weight.shape()[1] == 0 {
            return Err(refuse(format!(
                "it multiplies a sequence with the axes {} by a {:?} matrix; a linear head multiplies the last axis, of the layer's {inputs} outputs",
                axes_text(&axes),
                weight.shape()
            )));
        }
        let mut head_axes = axes.clone();
        *head_axes.last_mut().expect("not empty") = vec![Atom::Feature];
        let output = node.output.first().map(String::as_str).unwrap_or("");
        self.define(
            output,
            Value::Head {
                node: producer,
                axes: head_axes,
                weight,
                bias: None,
                labels: vec![label.clone()],
            },
        );
        Ok(())
    }

    /// `Add` of a constant vector to a linear head: its bias.
    fn head_bias(&mut self, node: &NodeProto, label: String) -> Result<()> {
        let input = |k: usize| node.input.get(k).map(String::as_str).unwrap_or("");
        let (a, b) = (
            self.value(input(0), &label)?.clone(),
            self.value(input(1), &label)?.clone(),
        );
        let (head, constant) = match (a, b) {
            (head @ Value::Head { .. }, Value::Const(Values::F32(c)))
            | (Value::Const(Values::F32(c)), head @ Value::Head { .. }) => (head, c),
            _ => {
                return Err(ImportError {
                    node: label,
                    message: "`rnnc import` reads an Add only as the bias of a linear head (its output plus a constant vector)".into(),
                })
            }
        };
        let Value::Head {
            node: producer,
            axes,
            weight,
            bias,
            mut labels,
        } = head
        else {
            unreachable!("matched a head");
        };
        let out = weight.shape()[1];
        let on_last = axes
            .last()
            .is_some_and(|atoms| atoms.as_slice() == [Atom::Feature]);
        if bias.is_some()
            || !on_last
            || constant.len() != out
            || constant.shape().iter().rev().skip(1).any(|&d| d != 1)
        {
            return Err(ImportError {
                node: label,
                message: format!(
                    "it adds a {:?} constant to a linear head of {out} outputs; a bias is one vector of {out}, added once",
                    constant.shape()
                ),
            });
        }
        labels.push(label);
        let output = node.output.first().map(String::as_str).unwrap_or("");
        let bias = constant
            .into_shape_with_order(ndarray::IxDyn(&[out]))
            .expect("one vector of `out`");
        self.define(
            output,
            Value::Head {
                node: producer,
                axes,
                weight,
                bias: Some(bias),
                labels,
            },
        );
        Ok(())
    }

    /// `Concat` of final states along their first axis (PyTorch's export of a stack).
    fn concat(&mut self, node: &NodeProto, label: String) -> Result<()> {
        let refuse = |message: String| ImportError {
            node: label.clone(),
            message,
        };
        let axis = attribute_int(node, "axis").unwrap_or(0);
        let output = node.output.first().map(String::as_str).unwrap_or("");
        let inputs: Vec<Value> = node
            .input
            .iter()
            .map(|name| self.value(name, &label).cloned())
            .collect::<Result<_>>()?;
        // Shapes (of zero initial states) and zeros stay what they are.
        if inputs.iter().any(|value| matches!(value, Value::Shape(_)))
            && inputs.iter().all(is_shape)
        {
            let joined = inputs
                .iter()
                .map(shape_of)
                .collect::<Option<Vec<_>>>()
                .map(|parts| parts.concat());
            self.define(output, Value::Shape(joined));
            return Ok(());
        }
        if !inputs.is_empty() && inputs.iter().all(|value| matches!(value, Value::Zeros)) {
            self.define(output, Value::Zeros);
            return Ok(());
        }
        // The two directions of a bidirectional node, joined along the features again.
        if let [Value::Sequence {
            node: forward,
            axes,
            direction: Some(0),
        }, Value::Sequence {
            node: backward,
            axes: backward_axes,
            direction: Some(1),
        }] = inputs.as_slice()
        {
            let rank = axes.len() as i64;
            let axis = if axis < 0 { axis + rank } else { axis };
            let feature_axis = axes
                .iter()
                .position(|atoms| atoms.as_slice() == [Atom::Feature]);
            if forward != backward
                || axes != backward_axes
                || feature_axis.is_none()
                || feature_axis != usize::try_from(axis).ok()
            {
                return Err(refuse(format!(
                    "it joins the two directions of a sequence with the axes {} along axis {axis}; `rnnc import` follows them joined along the features, forward first",
                    axes_text(axes)
                )));
            }
            let mut joined = axes.clone();
            joined[axis as usize] = vec![Atom::Direction, Atom::Feature];
            self.define(
                output,
                Value::Sequence {
                    node: *forward,
                    axes: joined,
                    direction: None,
                },
            );
            return Ok(());
        }
        let mut nodes = Vec::new();
        let mut common = None;
        for name in &node.input {
            match self.value(name, &label)? {
                Value::State {
                    nodes: these,
                    state,
                    axes,
                } if axis == 0 && axes.first().is_some_and(|first| first.contains(&Atom::Direction) || first.contains(&Atom::Layer)) => {
                    if common.as_ref().is_some_and(|(s, a): &(usize, Axes)| s != state || a != axes) {
                        return Err(refuse("it joins different states".into()));
                    }
                    common = Some((*state, axes.clone()));
                    nodes.extend(these.iter().copied());
                }
                _ => {
                    return Err(refuse(format!(
                        "`rnnc import` follows a Concat only of final states along their first axis (PyTorch's stacked `h_n`); input `{name}` is something else or axis is {axis}"
                    )))
                }
            }
        }
        let (state, mut axes) = common.ok_or_else(|| refuse("it has no inputs".into()))?;
        if !axes[0].contains(&Atom::Layer) {
            axes[0].insert(0, Atom::Layer);
        }
        self.define(output, Value::State { nodes, state, axes });
        Ok(())
    }

    fn recurrent_node(&mut self, index: usize, node: &NodeProto, label: String) -> Result<()> {
        let op = Op::of(&node.op_type).expect("a recurrent op");
        let refuse = |message: String| ImportError {
            node: label.clone(),
            message,
        };
        let mut hidden_size = None;
        let mut directions = 1;
        let mut reverse = false;
        let mut batch_major = false;
        let mut reset_after = false;
        let mut relu = false;
        let mut clip = None;
        let mut seen = BTreeSet::new();
        for attribute in &node.attribute {
            let value = attribute_text(attribute);
            if !seen.insert(attribute.name.as_str()) {
                return Err(refuse(format!(
                    "attribute `{}` is given twice",
                    attribute.name
                )));
            }
            let unsupported =
                |why: &str| refuse(format!("attribute `{}` = {value}: {why}", attribute.name));
            match attribute.name.as_str() {
                "hidden_size" => hidden_size = Some(attribute.i),
                "direction" => match attribute.s.as_slice() {
                    b"forward" => {}
                    b"reverse" => reverse = true,
                    b"bidirectional" => directions = 2,
                    _ => return Err(unsupported("not forward, reverse or bidirectional")),
                },
                "layout" => match attribute.i {
                    0 => {}
                    1 => batch_major = true,
                    _ => return Err(unsupported("layout is 0 or 1")),
                },
                "linear_before_reset" if op == Op::Gru => match attribute.i {
                    0 => reset_after = false,
                    1 => reset_after = true,
                    _ => return Err(unsupported("linear_before_reset is 0 or 1")),
                },
                "input_forget" if op == Op::Lstm => {
                    if attribute.i != 0 {
                        return Err(unsupported(
                            "the coupled input and forget gates are not a built-in cell (write the cell's equations in a .rnn file)",
                        ));
                    }
                }
                "activations" => {
                    let names: Vec<String> = attribute
                        .strings
                        .iter()
                        .map(|name| String::from_utf8_lossy(name).into_owned())
                        .collect();
                    let defaults = op.activations();
                    let per_direction: Vec<&[String]> = names.chunks(defaults.len()).collect();
                    let all = |wanted: &[&str]| {
                        names.len() == defaults.len() * per_direction.len()
                            && per_direction.iter().all(|chunk| {
                                chunk
                                    .iter()
                                    .zip(wanted)
                                    .all(|(a, b)| a.eq_ignore_ascii_case(b))
                            })
                    };
                    if all(defaults) {
                    } else if op == Op::Rnn && all(&["Relu"]) {
                        relu = true;
                    } else {
                        return Err(unsupported(&format!(
                            "the built-in cells compute {} (and RNN also Relu), the same in both directions",
                            defaults.join(", ")
                        )));
                    }
                }
                "activation_alpha" | "activation_beta" => {
                    return Err(unsupported(
                        "no activation the built-in cells compute takes parameters",
                    ))
                }
                "clip" => {
                    if attribute.f.is_nan() || attribute.f <= 0.0 {
                        return Err(unsupported("a clip is a positive threshold"));
                    }
                    clip = Some(attribute.f);
                }
                _ => return Err(unsupported("an attribute `rnnc import` does not know")),
            }
        }
        let input = |k: usize| node.input.get(k).cloned().unwrap_or_default();
        let output = |k: usize| node.output.get(k).cloned().unwrap_or_default();
        let w = self.floats(&input(1), &label, "W")?;
        let r = self.floats(&input(2), &label, "R")?;
        let (gates, d) = (op.gates(), directions);
        let (hidden, input_size) = match (w.shape(), r.shape()) {
            (&[wd, wg, i], &[rd, rg, h])
                if wd == d
                    && rd == d
                    && Some(wg) == gates.checked_mul(h)
                    && Some(rg) == gates.checked_mul(h)
                    && (1..=MAX_SIZE).contains(&h)
                    && (1..=MAX_SIZE).contains(&i) =>
            {
                (h, i)
            }
            (w_shape, r_shape) => {
                return Err(refuse(format!(
                    "W has shape {w_shape:?} and R {r_shape:?}; with {d} direction(s) and {gates} gate(s) they must be [{d}, {gates}·H, I] and [{d}, {gates}·H, H], H and I from 1 to {MAX_SIZE}"
                )))
            }
        };
        if hidden_size.is_some_and(|size| size != hidden as i64) {
            return Err(refuse(format!(
                "hidden_size = {} but R's shape {:?} says {hidden}",
                hidden_size.unwrap_or_default(),
                r.shape()
            )));
        }
        let optional = |k: usize, what: &str| -> Result<Option<ArrayD<f32>>> {
            let name = input(k);
            if name.is_empty() {
                Ok(None)
            } else {
                self.floats(&name, &label, what).map(Some)
            }
        };
        let b = optional(3, "B")?;
        let p = if op == Op::Lstm {
            optional(7, "P")?
        } else {
            None
        };
        for (what, array, shape) in [
            ("B", &b, vec![d, 2 * gates * hidden]),
            ("P", &p, vec![d, 3 * hidden]),
        ] {
            if let Some(array) = array {
                if array.shape() != shape.as_slice() {
                    return Err(refuse(format!(
                        "{what} has shape {:?}; it must be {shape:?}",
                        array.shape()
                    )));
                }
            }
        }
        // A peephole of zeros changes nothing: read as none.
        let p = p.filter(|p| p.iter().any(|&v| v != 0.0));
        let cell = match (op, relu) {
            (Op::Lstm, _) => "lstm",
            (Op::Gru, _) => "gru",
            (Op::Rnn, false) => "rnn_tanh",
            (Op::Rnn, true) => "rnn_relu",
        };
        let recurrent = Recurrent {
            node: index,
            label: label.clone(),
            op,
            cell,
            hidden,
            input_size,
            directions,
            reverse,
            batch_major,
            peepholes: p.is_some(),
            reset_after,
            clip,
            w,
            r,
            b,
            p,
            x: input(0),
            lengths: input(4),
            initial: [
                input(5),
                if op == Op::Lstm {
                    input(6)
                } else {
                    String::new()
                },
            ],
            outputs: [
                output(0),
                output(1),
                if op == Op::Lstm {
                    output(2)
                } else {
                    String::new()
                },
            ],
        };
        let (t, b_) = (Atom::Time, Atom::Batch);
        let (dir, f) = (Atom::Direction, Atom::Feature);
        let y_axes: Axes = if batch_major {
            vec![vec![b_], vec![t], vec![dir], vec![f]]
        } else {
            vec![vec![t], vec![dir], vec![b_], vec![f]]
        };
        let state_axes: Axes = if batch_major {
            vec![vec![b_], vec![dir], vec![f]]
        } else {
            vec![vec![dir], vec![b_], vec![f]]
        };
        let outputs = recurrent.outputs.clone();
        if self.recurrent.is_empty() {
            // Time and batch sizes the graph fixes, for reshapes written with them.
            if let Ok(Value::Input { input, axes }) =
                self.value(&recurrent.x, &recurrent.label).cloned()
            {
                let input = &input;
                let wanted = node_x_axes(&recurrent);
                for (have, want) in axes.iter().zip(&wanted) {
                    if let ([Atom::In(k)], [atom @ (Atom::Time | Atom::Batch)]) =
                        (have.as_slice(), want.as_slice())
                    {
                        if let Some(Some(size)) = self.declared[input].get(*k) {
                            self.fixed.insert(*atom, *size);
                        }
                    }
                }
            }
        }
        self.recurrent.push(recurrent);
        self.define(
            &outputs[0],
            Value::Sequence {
                node: index,
                axes: y_axes,
                direction: None,
            },
        );
        for (state, name) in outputs[1..].iter().enumerate() {
            self.define(
                name,
                Value::State {
                    nodes: vec![index],
                    state,
                    axes: state_axes.clone(),
                },
            );
        }
        Ok(())
    }
}

/// The axes of a node's `X` by its layout, for the first node (features of the input).
fn node_x_axes(node: &Recurrent) -> Axes {
    if node.batch_major {
        vec![vec![Atom::Batch], vec![Atom::Time], vec![Atom::Feature]]
    } else {
        vec![vec![Atom::Time], vec![Atom::Batch], vec![Atom::Feature]]
    }
}

/// Applies `f` to the axes of a followed value; shapes and zeros pass as they are.
fn map_axes(
    mut value: Value,
    f: impl FnOnce(&Axes) -> std::result::Result<Axes, String>,
) -> std::result::Result<Value, String> {
    match &mut value {
        Value::Input { axes, .. }
        | Value::Sequence { axes, .. }
        | Value::State { axes, .. }
        | Value::Head { axes, .. } => *axes = f(axes)?,
        Value::Shape(_) | Value::Zeros => {}
        Value::Const(_) | Value::Rows { .. } => {
            return Err("`rnnc import` follows layout glue on the recurrent layers' inputs and outputs only, not on constants or sliced states".into())
        }
    }
    Ok(value)
}

fn attribute_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute
        .iter()
        .find(|attribute| attribute.name == name)
        .map(|attribute| attribute.i)
}

fn attribute_ints(node: &NodeProto, name: &str) -> Vec<i64> {
    node.attribute
        .iter()
        .find(|attribute| attribute.name == name)
        .map(|attribute| attribute.ints.clone())
        .unwrap_or_default()
}

/// An attribute's value as text, for messages.
fn attribute_text(attribute: &AttributeProto) -> String {
    // The AttributeType discriminator: 1 FLOAT, 2 INT, 3 STRING, 6 FLOATS, 7 INTS, 8 STRINGS.
    match attribute.r#type {
        1 => attribute.f.to_string(),
        2 => attribute.i.to_string(),
        3 => format!("\"{}\"", String::from_utf8_lossy(&attribute.s)),
        6 => format!("{:?}", attribute.floats),
        7 => format!("{:?}", attribute.ints),
        8 => format!(
            "{:?}",
            attribute
                .strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
        ),
        _ => "(a value)".into(),
    }
}

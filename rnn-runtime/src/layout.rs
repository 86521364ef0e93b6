//! The weight layouts of other frameworks, converted to and from PyTorch's, which is the one
//! generated code and the interpreter read.
//!
//! The frameworks differ in three ways: gate order (PyTorch stacks an LSTM's gates i, f, g, o;
//! TensorFlow 1 i, j, f, o; ONNX i, o, f, c), orientation (PyTorch stores `[G·H, I]`, Keras
//! and TensorFlow `[I, G·H]`) and grouping (TensorFlow 1 stacks the input and recurrent
//! matrices in one kernel; ONNX keeps both directions of a layer in one tensor). A conversion
//! is exact: it moves values and, where a framework has one bias, adds the two of PyTorch (or
//! splits one into a bias and a zero).
//!
//! A recurrent layer of a network is described by a [`RecurrentLayer`]. Its tensors in another
//! layout are named as the PyTorch ones are, the layer's prefix and the `_l{k}` (`_reverse`)
//! suffix kept, with the framework's own base names:
//!
//! | layout | cell | tensors (per layer `k`, per direction unless said) |
//! | --- | --- | --- |
//! | Keras | all | `kernel` `[I, G·H]`, `recurrent_kernel` `[H, G·H]`, `bias` `[G·H]` (GRU `reset_after=True`: `[2, 3·H]`) |
//! | TensorFlow 1 | `LSTMCell` | `kernel` `[I+H, 4·H]`, `bias` `[4·H]`, peepholes `w_i_diag`, `w_f_diag`, `w_o_diag` `[H]` |
//! | TensorFlow 1 | `GRUCell` | `gates_kernel` `[I+H, 2·H]`, `gates_bias` `[2·H]`, `candidate_kernel` `[I+H, H]`, `candidate_bias` `[H]` |
//! | TensorFlow 1 | `BasicRNNCell` | `kernel` `[I+H, H]`, `bias` `[H]` |
//! | ONNX | all | both directions in one: `W` `[D, G·H, I]`, `R` `[D, G·H, H]`, `B` `[D, 2·G·H]` (optional), `P` `[D, 3·H]` (LSTM peepholes) |
//!
//! Keras's `bias_l0`, TensorFlow 1's `kernel_l1_reverse`, ONNX's `enc.W_l0`. Tensors that
//! belong to no recurrent layer (a user cell's, a head's) pass through unchanged.
//!
//! What the weights cannot tell is checked where it can be: a file with peephole weights for a
//! layer without peepholes, a Keras GRU bias of the other `reset_after`, a TensorFlow 1
//! `GRUCell` (which resets before the product) for a layer with `reset_after`, and every shape,
//! are typed errors naming the tensor. An ONNX GRU's `linear_before_reset` is not in its
//! weights: the layer must say `reset_after` when it is 1.

use std::collections::BTreeSet;

use ndarray::{concatenate, s, stack, Array1, Array2, ArrayD, ArrayView1, ArrayView2, Axis};

use crate::error::{Result, RnnError};
use crate::tensor::TensorMap;

/// The framework a weight file's names and layouts come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// PyTorch's `state_dict` (`weight_ih_l0`, gates i, f, g, o and r, z, n): the layout
    /// models read, left as it is.
    PyTorch,
    /// Keras 2 and 3 (`LSTM`, `GRU` with `reset_after` either way, `SimpleRNN`,
    /// `Bidirectional`): gates i, f, c, o and z, r, h, matrices `[inputs, gates]`.
    Keras,
    /// TensorFlow 1's `tf.compat.v1.nn.rnn_cell` (`LSTMCell`, `GRUCell`, `BasicRNNCell`,
    /// `MultiRNNCell`): one kernel over `[x, h]`, LSTM gates i, j, f, o.
    TensorFlow1 {
        /// The `forget_bias` the cell added at run time (TensorFlow's default is 1.0): added
        /// to the forget gate's bias on the way in, taken off on the way out.
        forget_bias: f32,
    },
    /// ONNX's `LSTM`, `GRU` and `RNN` operators: `W`, `R`, `B`, `P` per node, gates i, o, f, c
    /// and z, r, h.
    Onnx,
}

impl Layout {
    /// Every layout's name as [`Layout::parse`] reads it.
    pub const NAMES: [&'static str; 4] = ["pytorch", "keras", "tensorflow1", "onnx"];

    /// The layout called `name` (one of [`Layout::NAMES`], or `tf1`), with TensorFlow 1's
    /// default forget bias of 1.0.
    pub fn parse(name: &str) -> Option<Layout> {
        match name {
            "pytorch" => Some(Layout::PyTorch),
            "keras" => Some(Layout::Keras),
            "tensorflow1" | "tf1" => Some(Layout::TensorFlow1 { forget_bias: 1.0 }),
            "onnx" => Some(Layout::Onnx),
            _ => None,
        }
    }
}

/// A built-in recurrent cell, as far as its weights' layout is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecurrentCell {
    /// `lstm`.
    Lstm {
        /// Whether it has `weight_peephole`.
        peepholes: bool,
    },
    /// `gru`.
    Gru {
        /// Whether the reset gate scales the recurrent product (PyTorch's GRU) rather than the
        /// state before it.
        reset_after: bool,
    },
    /// `rnn_tanh` and `rnn_relu`.
    Rnn,
}

impl RecurrentCell {
    /// Gates stacked in its matrices: 4, 3 or 1.
    fn gates(self) -> usize {
        match self {
            RecurrentCell::Lstm { .. } => 4,
            RecurrentCell::Gru { .. } => 3,
            RecurrentCell::Rnn => 1,
        }
    }
}

/// One stacked layer of built-in cells, all its directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurrentLayer {
    /// The prefix of its tensor names: `""`, or `"enc."` in a network of several layer
    /// statements.
    pub prefix: String,
    /// Its index in its statement's stack: the `k` of `_l{k}`.
    pub stack_idx: usize,
    /// 1, or 2 when bidirectional.
    pub directions: usize,
    /// Its cell.
    pub cell: RecurrentCell,
    /// Inputs per step.
    pub input_size: usize,
    /// Hidden size.
    pub hidden: usize,
}

impl RecurrentLayer {
    /// A tensor's name: `{prefix}{base}_l{k}`, plus `_reverse` in direction 1.
    fn name(&self, base: &str, direction: usize) -> String {
        let reverse = if direction == 1 { "_reverse" } else { "" };
        format!("{}{base}_l{}{reverse}", self.prefix, self.stack_idx)
    }

    /// The `[G·H, …]` height of its stacked gates.
    fn gate_rows(&self) -> usize {
        self.cell.gates() * self.hidden
    }
}

/// The tensors of `source`, in `layout`, as PyTorch names and lays them out for `layers`;
/// tensors of no layer pass through.
///
/// # Errors
///
/// [`RnnError::MissingTensor`], [`RnnError::ShapeMismatch`] or [`RnnError::WrongDtype`] naming
/// a layer's tensor in `source`; [`RnnError::InvalidValue`] when the file holds weights the
/// layer's cell cannot honour (peepholes it does not have, a GRU bias of the other kind).
pub fn to_pytorch(
    source: &TensorMap,
    layers: &[RecurrentLayer],
    layout: Layout,
) -> Result<TensorMap> {
    convert(source, layers, |reader, layer, out| match layout {
        Layout::PyTorch => pytorch_to_pytorch(reader, layer, out),
        Layout::Keras => keras_to_pytorch(reader, layer, out),
        Layout::TensorFlow1 { forget_bias } => tf1_to_pytorch(reader, layer, forget_bias, out),
        Layout::Onnx => onnx_to_pytorch(reader, layer, out),
    })
}

/// PyTorch-named tensors for `layers`, in `layout`: the inverse of [`to_pytorch`], for saving
/// a model where another framework reads it. Single-bias layouts get the sum of the two
/// biases.
///
/// # Errors
///
/// As [`to_pytorch`], naming the PyTorch tensor.
pub fn from_pytorch(
    weights: &TensorMap,
    layers: &[RecurrentLayer],
    layout: Layout,
) -> Result<TensorMap> {
    convert(weights, layers, |reader, layer, out| {
        let torch = TorchLayer::read(reader, layer)?;
        match layout {
            Layout::PyTorch => torch.write(layer, out),
            Layout::Keras => {
                keras_refuses_peepholes(layer, layer.name("weight_peephole", 0))?;
                pytorch_to_keras(&torch, layer, out)
            }
            Layout::TensorFlow1 { forget_bias } => {
                if layer.cell == (RecurrentCell::Gru { reset_after: true }) {
                    return Err(tf1_reset_after(layer, layer.name("weight_hh", 0)));
                }
                pytorch_to_tf1(&torch, layer, forget_bias, out)
            }
            Layout::Onnx => pytorch_to_onnx(&torch, layer, out),
        }
        Ok(())
    })
}

/// Runs `layer_fn` for each layer, then copies every tensor it did not read.
fn convert(
    source: &TensorMap,
    layers: &[RecurrentLayer],
    layer_fn: impl Fn(&mut Reader, &RecurrentLayer, &mut TensorMap) -> Result<()>,
) -> Result<TensorMap> {
    let mut reader = Reader {
        source,
        read: BTreeSet::new(),
    };
    let mut out = TensorMap::new();
    for layer in layers {
        layer_fn(&mut reader, layer, &mut out)?;
    }
    for (name, tensor) in source.iter() {
        if !reader.read.contains(name) && !out.contains(name) {
            out.insert(name, tensor.clone());
        }
    }
    Ok(out)
}

/// Reads a layer's tensors from a map, remembering which it read.
struct Reader<'a> {
    source: &'a TensorMap,
    read: BTreeSet<String>,
}

impl Reader<'_> {
    fn array(&mut self, name: &str, shape: &[usize]) -> Result<ArrayD<f32>> {
        let array = self.source.f32_shaped(name, shape)?;
        self.read.insert(name.to_owned());
        Ok(array)
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Array2<f32>> {
        Ok(into2(self.array(name, &[rows, cols])?))
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Array1<f32>> {
        Ok(into1(self.array(name, &[len])?))
    }

    /// A tensor that may be absent.
    fn optional(&mut self, name: &str, shape: &[usize]) -> Result<Option<ArrayD<f32>>> {
        match self.source.contains(name) {
            true => self.array(name, shape).map(Some),
            false => Ok(None),
        }
    }

    /// Refuses peephole weights in the file for a layer that has none: loading the rest would
    /// give a model that silently differs from the one trained.
    fn refuse_peepholes(&self, layer: &RecurrentLayer, name: &str) -> Result<()> {
        match self.source.contains(name) {
            true => Err(RnnError::InvalidValue {
                tensor: name.to_owned(),
                reason: format!(
                    "peephole weights, but layer {} of `{}` is an LSTM without peepholes (write `peepholes = true`)",
                    layer.stack_idx,
                    layer_label(layer)
                ),
            }),
            false => Ok(()),
        }
    }
}

/// A layer's statement name for messages (`enc`, or `the network` without a prefix).
fn layer_label(layer: &RecurrentLayer) -> String {
    match layer.prefix.strip_suffix('.') {
        Some(name) => name.to_owned(),
        None => "the network".to_owned(),
    }
}

fn into2(array: ArrayD<f32>) -> Array2<f32> {
    array
        .into_dimensionality()
        .expect("shape checked as two-dimensional")
}

fn into1(array: ArrayD<f32>) -> Array1<f32> {
    array
        .into_dimensionality()
        .expect("shape checked as one-dimensional")
}

/// Gate orders, as the source block each PyTorch block takes: PyTorch's block `j` is the
/// source's block `order[j]`.
mod order {
    /// Keras's LSTM (i, f, c, o) is PyTorch's.
    pub const SAME: &[usize] = &[0, 1, 2, 3];
    /// TensorFlow 1's LSTM: i, j, f, o.
    pub const TF1_LSTM: &[usize] = &[0, 2, 1, 3];
    /// ONNX's LSTM: i, o, f, c.
    pub const ONNX_LSTM: &[usize] = &[0, 2, 3, 1];
    /// ONNX's peepholes: i, o, f (PyTorch's rows are i, f, o).
    pub const ONNX_PEEPHOLES: &[usize] = &[0, 2, 1];
    /// Keras's and ONNX's GRU: z, r, h (PyTorch's r, z, n).
    pub const ZRH: &[usize] = &[1, 0, 2];
}

/// The gate order of a cell's blocks in Keras or ONNX.
fn gate_order(cell: RecurrentCell, lstm: &'static [usize]) -> &'static [usize] {
    match cell {
        RecurrentCell::Lstm { .. } => lstm,
        RecurrentCell::Gru { .. } => order::ZRH,
        RecurrentCell::Rnn => &order::SAME[..1],
    }
}

/// Rows regrouped in blocks: block `j` of the result is block `order[j]` of `rows`.
fn reorder_rows(rows: ArrayView2<f32>, order: &[usize]) -> Array2<f32> {
    let height = rows.nrows() / order.len();
    let blocks: Vec<_> = order
        .iter()
        .map(|block| rows.slice(s![block * height..(block + 1) * height, ..]))
        .collect();
    concatenate(Axis(0), &blocks).expect("blocks of one width")
}

/// [`reorder_rows`] undone: block `order[j]` of the result is block `j` of `rows`.
fn unorder_rows(rows: ArrayView2<f32>, order: &[usize]) -> Array2<f32> {
    reorder_rows(rows, &inverse(order))
}

fn inverse(order: &[usize]) -> Vec<usize> {
    let mut inverse = vec![0; order.len()];
    for (j, block) in order.iter().enumerate() {
        inverse[*block] = j;
    }
    inverse
}

fn reorder(vector: ArrayView1<f32>, order: &[usize]) -> Array1<f32> {
    let column = vector.insert_axis(Axis(1));
    reorder_rows(column, order).remove_axis(Axis(1))
}

fn unorder(vector: ArrayView1<f32>, order: &[usize]) -> Array1<f32> {
    reorder(vector, &inverse(order))
}

/// A layer's tensors in PyTorch's layout, one entry per direction.
struct TorchLayer {
    weight_ih: Vec<Array2<f32>>,
    weight_hh: Vec<Array2<f32>>,
    bias_ih: Vec<Array1<f32>>,
    bias_hh: Vec<Array1<f32>>,
    /// `[3, H]` rows i, f, o, for an LSTM with peepholes.
    peepholes: Vec<Option<Array2<f32>>>,
}

impl TorchLayer {
    fn new() -> TorchLayer {
        TorchLayer {
            weight_ih: Vec::new(),
            weight_hh: Vec::new(),
            bias_ih: Vec::new(),
            bias_hh: Vec::new(),
            peepholes: Vec::new(),
        }
    }

    fn read(reader: &mut Reader, layer: &RecurrentLayer) -> Result<TorchLayer> {
        let (rows, h) = (layer.gate_rows(), layer.hidden);
        let mut torch = TorchLayer::new();
        for d in 0..layer.directions {
            torch.weight_ih.push(reader.matrix(
                &layer.name("weight_ih", d),
                rows,
                layer.input_size,
            )?);
            torch
                .weight_hh
                .push(reader.matrix(&layer.name("weight_hh", d), rows, h)?);
            torch
                .bias_ih
                .push(reader.vector(&layer.name("bias_ih", d), rows)?);
            torch
                .bias_hh
                .push(reader.vector(&layer.name("bias_hh", d), rows)?);
            let peephole = layer.name("weight_peephole", d);
            torch.peepholes.push(match layer.cell {
                RecurrentCell::Lstm { peepholes: true } => Some(reader.matrix(&peephole, 3, h)?),
                RecurrentCell::Lstm { peepholes: false } => {
                    reader.refuse_peepholes(layer, &peephole)?;
                    None
                }
                _ => None,
            });
        }
        Ok(torch)
    }

    fn write(&self, layer: &RecurrentLayer, out: &mut TensorMap) {
        for d in 0..layer.directions {
            out.insert_f32(
                layer.name("weight_ih", d),
                self.weight_ih[d].clone().into_dyn(),
            );
            out.insert_f32(
                layer.name("weight_hh", d),
                self.weight_hh[d].clone().into_dyn(),
            );
            out.insert_f32(layer.name("bias_ih", d), self.bias_ih[d].clone().into_dyn());
            out.insert_f32(layer.name("bias_hh", d), self.bias_hh[d].clone().into_dyn());
            if let Some(peepholes) = &self.peepholes[d] {
                out.insert_f32(
                    layer.name("weight_peephole", d),
                    peepholes.clone().into_dyn(),
                );
            }
        }
    }
}

fn pytorch_to_pytorch(
    reader: &mut Reader,
    layer: &RecurrentLayer,
    out: &mut TensorMap,
) -> Result<()> {
    TorchLayer::read(reader, layer)?.write(layer, out);
    Ok(())
}

/// Keras: `kernel` `[I, G·H]` and `recurrent_kernel` `[H, G·H]` are PyTorch's matrices
/// transposed, in Keras's gate order; one bias, or for a GRU with `reset_after` two rows of one.
fn keras_to_pytorch(
    reader: &mut Reader,
    layer: &RecurrentLayer,
    out: &mut TensorMap,
) -> Result<()> {
    keras_refuses_peepholes(layer, layer.name("kernel", 0))?;
    let (rows, h) = (layer.gate_rows(), layer.hidden);
    let order = gate_order(layer.cell, order::SAME);
    let mut torch = TorchLayer::new();
    for d in 0..layer.directions {
        let kernel = reader.matrix(&layer.name("kernel", d), layer.input_size, rows)?;
        let recurrent = reader.matrix(&layer.name("recurrent_kernel", d), h, rows)?;
        torch.weight_ih.push(reorder_rows(kernel.t(), order));
        torch.weight_hh.push(reorder_rows(recurrent.t(), order));
        let bias_name = layer.name("bias", d);
        let (bias_ih, bias_hh) = match layer.cell {
            RecurrentCell::Gru { reset_after: true } => {
                let found = reader.source.get(&bias_name).map(|t| t.shape().to_vec());
                if found.as_deref() == Some(&[rows][..]) {
                    return Err(keras_gru_mismatch(&bias_name, layer, true));
                }
                let bias = reader.matrix(&bias_name, 2, rows)?;
                (reorder(bias.row(0), order), reorder(bias.row(1), order))
            }
            RecurrentCell::Gru { reset_after: false } => {
                let found = reader.source.get(&bias_name).map(|t| t.shape().to_vec());
                if found.as_deref() == Some(&[2, rows][..]) {
                    return Err(keras_gru_mismatch(&bias_name, layer, false));
                }
                let bias = reader.vector(&bias_name, rows)?;
                (reorder(bias.view(), order), Array1::zeros(rows))
            }
            _ => (
                reorder(reader.vector(&bias_name, rows)?.view(), order),
                Array1::zeros(rows),
            ),
        };
        torch.bias_ih.push(bias_ih);
        torch.bias_hh.push(bias_hh);
        torch.peepholes.push(None);
    }
    torch.write(layer, out);
    Ok(())
}

/// Keras's `LSTM` has no peepholes: neither way is a peephole layer expressible.
fn keras_refuses_peepholes(layer: &RecurrentLayer, tensor: String) -> Result<()> {
    match layer.cell {
        RecurrentCell::Lstm { peepholes: true } => Err(RnnError::InvalidValue {
            tensor,
            reason: format!(
                "Keras's LSTM has no peepholes, but layer {} of `{}` has them",
                layer.stack_idx,
                layer_label(layer)
            ),
        }),
        _ => Ok(()),
    }
}

/// A Keras GRU bias whose shape says the other `reset_after` than the layer's.
fn keras_gru_mismatch(bias: &str, layer: &RecurrentLayer, layer_reset_after: bool) -> RnnError {
    let (file, written) = match layer_reset_after {
        true => (
            "[3·H]: a Keras GRU with reset_after=False",
            "gru(..., reset_after = false)",
        ),
        false => (
            "[2, 3·H]: a Keras GRU with reset_after=True",
            "gru(...) (reset_after is the default)",
        ),
    };
    RnnError::InvalidValue {
        tensor: bias.to_owned(),
        reason: format!(
            "shape {file}, but layer {} of `{}` is {}; write `{written}` to load it",
            layer.stack_idx,
            layer_label(layer),
            if layer_reset_after {
                "gru(reset_after = true)"
            } else {
                "gru(reset_after = false)"
            },
        ),
    }
}

fn pytorch_to_keras(torch: &TorchLayer, layer: &RecurrentLayer, out: &mut TensorMap) {
    let order = gate_order(layer.cell, order::SAME);
    for d in 0..layer.directions {
        let kernel = unorder_rows(torch.weight_ih[d].view(), order).reversed_axes();
        let recurrent = unorder_rows(torch.weight_hh[d].view(), order).reversed_axes();
        out.insert_f32(layer.name("kernel", d), kernel.into_dyn());
        out.insert_f32(layer.name("recurrent_kernel", d), recurrent.into_dyn());
        let (b_ih, b_hh) = (&torch.bias_ih[d], &torch.bias_hh[d]);
        let bias = match layer.cell {
            RecurrentCell::Gru { reset_after: true } => {
                let rows = [unorder(b_ih.view(), order), unorder(b_hh.view(), order)];
                stack(Axis(0), &[rows[0].view(), rows[1].view()])
                    .expect("two rows")
                    .into_dyn()
            }
            _ => unorder((b_ih + b_hh).view(), order).into_dyn(),
        };
        out.insert_f32(layer.name("bias", d), bias);
    }
}

/// TensorFlow 1: a kernel over `[x, h]` (`[I+H, G·H]`), so PyTorch's two matrices are its
/// two blocks of rows, transposed.
fn split_kernel(kernel: &Array2<f32>, inputs: usize) -> (Array2<f32>, Array2<f32>) {
    let x_rows = kernel.slice(s![..inputs, ..]).t().to_owned();
    let h_rows = kernel.slice(s![inputs.., ..]).t().to_owned();
    (x_rows, h_rows)
}

fn join_kernel(weight_ih: ArrayView2<f32>, weight_hh: ArrayView2<f32>) -> Array2<f32> {
    concatenate(Axis(0), &[weight_ih.t(), weight_hh.t()]).expect("one width")
}

/// The forget gate's block (block 1 in PyTorch's order) of an LSTM bias.
fn forget_block(bias: &mut Array1<f32>, hidden: usize) -> ndarray::ArrayViewMut1<'_, f32> {
    bias.slice_mut(s![hidden..2 * hidden])
}

fn tf1_to_pytorch(
    reader: &mut Reader,
    layer: &RecurrentLayer,
    forget_bias: f32,
    out: &mut TensorMap,
) -> Result<()> {
    let (i, h) = (layer.input_size, layer.hidden);
    let mut torch = TorchLayer::new();
    for d in 0..layer.directions {
        let name = |base: &str| layer.name(base, d);
        match layer.cell {
            RecurrentCell::Lstm { peepholes } => {
                let kernel = reader.matrix(&name("kernel"), i + h, 4 * h)?;
                let (w_ih, w_hh) = split_kernel(&kernel, i);
                torch
                    .weight_ih
                    .push(reorder_rows(w_ih.view(), order::TF1_LSTM));
                torch
                    .weight_hh
                    .push(reorder_rows(w_hh.view(), order::TF1_LSTM));
                let mut bias =
                    reorder(reader.vector(&name("bias"), 4 * h)?.view(), order::TF1_LSTM);
                forget_block(&mut bias, h).mapv_inplace(|b| b + forget_bias);
                torch.bias_ih.push(bias);
                torch.bias_hh.push(Array1::zeros(4 * h));
                let diagonals = ["w_i_diag", "w_f_diag", "w_o_diag"].map(name);
                torch.peepholes.push(match peepholes {
                    true => {
                        let rows = diagonals
                            .iter()
                            .map(|diagonal| reader.vector(diagonal, h))
                            .collect::<Result<Vec<_>>>()?;
                        let views: Vec<_> = rows.iter().map(|row| row.view()).collect();
                        Some(stack(Axis(0), &views).expect("three rows of H"))
                    }
                    false => {
                        for diagonal in &diagonals {
                            reader.refuse_peepholes(layer, diagonal)?;
                        }
                        None
                    }
                });
            }
            RecurrentCell::Gru { reset_after } => {
                if reset_after {
                    return Err(tf1_reset_after(layer, name("gates_kernel")));
                }
                // Gates r, u (PyTorch's r, z), then the candidate n.
                let gates = reader.matrix(&name("gates_kernel"), i + h, 2 * h)?;
                let candidate = reader.matrix(&name("candidate_kernel"), i + h, h)?;
                let kernel =
                    concatenate(Axis(1), &[gates.view(), candidate.view()]).expect("one height");
                let (w_ih, w_hh) = split_kernel(&kernel, i);
                torch.weight_ih.push(w_ih);
                torch.weight_hh.push(w_hh);
                let gates_bias = reader.vector(&name("gates_bias"), 2 * h)?;
                let candidate_bias = reader.vector(&name("candidate_bias"), h)?;
                torch.bias_ih.push(
                    concatenate(Axis(0), &[gates_bias.view(), candidate_bias.view()])
                        .expect("vectors"),
                );
                torch.bias_hh.push(Array1::zeros(3 * h));
                torch.peepholes.push(None);
            }
            RecurrentCell::Rnn => {
                let kernel = reader.matrix(&name("kernel"), i + h, h)?;
                let (w_ih, w_hh) = split_kernel(&kernel, i);
                torch.weight_ih.push(w_ih);
                torch.weight_hh.push(w_hh);
                torch.bias_ih.push(reader.vector(&name("bias"), h)?);
                torch.bias_hh.push(Array1::zeros(h));
                torch.peepholes.push(None);
            }
        }
    }
    torch.write(layer, out);
    Ok(())
}

/// TensorFlow 1's `GRUCell` for a layer with `reset_after`, which it cannot express.
fn tf1_reset_after(layer: &RecurrentLayer, tensor: String) -> RnnError {
    RnnError::InvalidValue {
        tensor,
        reason: format!(
            "TensorFlow 1's GRUCell resets the state before the recurrent product, but layer {} of `{}` is gru(reset_after = true); write `gru(..., reset_after = false)`",
            layer.stack_idx,
            layer_label(layer)
        ),
    }
}

fn pytorch_to_tf1(
    torch: &TorchLayer,
    layer: &RecurrentLayer,
    forget_bias: f32,
    out: &mut TensorMap,
) {
    let h = layer.hidden;
    for d in 0..layer.directions {
        let name = |base: &str| layer.name(base, d);
        let bias = &torch.bias_ih[d] + &torch.bias_hh[d];
        let (w_ih, w_hh) = (torch.weight_ih[d].view(), torch.weight_hh[d].view());
        match layer.cell {
            RecurrentCell::Lstm { .. } => {
                let kernel = join_kernel(w_ih, w_hh);
                out.insert_f32(
                    name("kernel"),
                    unorder_rows(kernel.t(), order::TF1_LSTM)
                        .reversed_axes()
                        .into_dyn(),
                );
                let mut bias = bias;
                forget_block(&mut bias, h).mapv_inplace(|b| b - forget_bias);
                out.insert_f32(
                    name("bias"),
                    unorder(bias.view(), order::TF1_LSTM).into_dyn(),
                );
                if let Some(peepholes) = &torch.peepholes[d] {
                    for (row, diagonal) in
                        ["w_i_diag", "w_f_diag", "w_o_diag"].into_iter().enumerate()
                    {
                        out.insert_f32(name(diagonal), peepholes.row(row).to_owned().into_dyn());
                    }
                }
            }
            RecurrentCell::Gru { .. } => {
                let gates = join_kernel(w_ih.slice(s![..2 * h, ..]), w_hh.slice(s![..2 * h, ..]));
                let candidate =
                    join_kernel(w_ih.slice(s![2 * h.., ..]), w_hh.slice(s![2 * h.., ..]));
                out.insert_f32(name("gates_kernel"), gates.into_dyn());
                out.insert_f32(name("candidate_kernel"), candidate.into_dyn());
                out.insert_f32(
                    name("gates_bias"),
                    bias.slice(s![..2 * h]).to_owned().into_dyn(),
                );
                out.insert_f32(
                    name("candidate_bias"),
                    bias.slice(s![2 * h..]).to_owned().into_dyn(),
                );
            }
            RecurrentCell::Rnn => {
                out.insert_f32(name("kernel"), join_kernel(w_ih, w_hh).into_dyn());
                out.insert_f32(name("bias"), bias.into_dyn());
            }
        }
    }
}

/// ONNX: one node per stacked layer, its `W`, `R`, `B` and `P` holding every direction, in
/// PyTorch's orientation; `B` is the input bias then the recurrent one, and may be absent
/// (zeros).
fn onnx_to_pytorch(reader: &mut Reader, layer: &RecurrentLayer, out: &mut TensorMap) -> Result<()> {
    let (rows, h, dirs) = (layer.gate_rows(), layer.hidden, layer.directions);
    let order = gate_order(layer.cell, order::ONNX_LSTM);
    let name = |base: &str| layer.name(base, 0);
    let w = reader.array(&name("W"), &[dirs, rows, layer.input_size])?;
    let r = reader.array(&name("R"), &[dirs, rows, h])?;
    let b = reader.optional(&name("B"), &[dirs, 2 * rows])?;
    let p_name = name("P");
    let p = match layer.cell {
        RecurrentCell::Lstm { peepholes: true } => Some(reader.array(&p_name, &[dirs, 3 * h])?),
        _ => {
            if reader.source.contains(&p_name) {
                return Err(RnnError::InvalidValue {
                    tensor: p_name,
                    reason: format!(
                        "peephole weights, but layer {} of `{}` has no peepholes (write `lstm(..., peepholes = true)`)",
                        layer.stack_idx,
                        layer_label(layer)
                    ),
                });
            }
            None
        }
    };
    let mut torch = TorchLayer::new();
    for d in 0..dirs {
        torch.weight_ih.push(reorder_rows(
            into2(w.index_axis(Axis(0), d).to_owned()).view(),
            order,
        ));
        torch.weight_hh.push(reorder_rows(
            into2(r.index_axis(Axis(0), d).to_owned()).view(),
            order,
        ));
        let (b_ih, b_hh) = match &b {
            Some(b) => {
                let b = b.index_axis(Axis(0), d);
                let b = into1(b.to_owned());
                (
                    reorder(b.slice(s![..rows]), order),
                    reorder(b.slice(s![rows..]), order),
                )
            }
            None => (Array1::zeros(rows), Array1::zeros(rows)),
        };
        torch.bias_ih.push(b_ih);
        torch.bias_hh.push(b_hh);
        torch.peepholes.push(p.as_ref().map(|p| {
            let rows = into2(
                p.index_axis(Axis(0), d)
                    .to_owned()
                    .into_shape_with_order(vec![3, h])
                    .expect("3·H"),
            );
            reorder_rows(rows.view(), order::ONNX_PEEPHOLES)
        }));
    }
    torch.write(layer, out);
    Ok(())
}

fn pytorch_to_onnx(torch: &TorchLayer, layer: &RecurrentLayer, out: &mut TensorMap) {
    let order = gate_order(layer.cell, order::ONNX_LSTM);
    let per_direction = |arrays: Vec<ArrayD<f32>>| {
        let views: Vec<_> = arrays.iter().map(|array| array.view()).collect();
        stack(Axis(0), &views).expect("one shape per direction")
    };
    let dirs = 0..layer.directions;
    let name = |base: &str| layer.name(base, 0);
    let w = dirs
        .clone()
        .map(|d| unorder_rows(torch.weight_ih[d].view(), order).into_dyn())
        .collect();
    let r = dirs
        .clone()
        .map(|d| unorder_rows(torch.weight_hh[d].view(), order).into_dyn())
        .collect();
    let b = dirs
        .clone()
        .map(|d| {
            let (b_ih, b_hh) = (
                unorder(torch.bias_ih[d].view(), order),
                unorder(torch.bias_hh[d].view(), order),
            );
            concatenate(Axis(0), &[b_ih.view(), b_hh.view()])
                .expect("vectors")
                .into_dyn()
        })
        .collect();
    out.insert_f32(name("W"), per_direction(w));
    out.insert_f32(name("R"), per_direction(r));
    out.insert_f32(name("B"), per_direction(b));
    if torch.peepholes.iter().all(Option::is_some) && !torch.peepholes.is_empty() {
        let p = dirs
            .map(|d| {
                let rows = torch.peepholes[d].as_ref().expect("checked");
                let onnx = unorder_rows(rows.view(), order::ONNX_PEEPHOLES);
                Array1::from_iter(onnx.iter().copied()).into_dyn()
            })
            .collect();
        out.insert_f32(name("P"), per_direction(p));
    }
}

#[cfg(test)]
mod tests;

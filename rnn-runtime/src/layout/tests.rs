use ndarray::{Array1, Array2, ArrayD};

use super::*;
use crate::init::{uniform, SplitMix64};

fn layer(cell: RecurrentCell, directions: usize) -> RecurrentLayer {
    RecurrentLayer {
        prefix: String::new(),
        stack_idx: 0,
        directions,
        cell,
        input_size: 3,
        hidden: 2,
    }
}

const CELLS: [RecurrentCell; 5] = [
    RecurrentCell::Lstm { peepholes: false },
    RecurrentCell::Lstm { peepholes: true },
    RecurrentCell::Gru { reset_after: true },
    RecurrentCell::Gru { reset_after: false },
    RecurrentCell::Rnn,
];

/// Random PyTorch weights for `layer`; `bias_hh` zero when `one_bias`, as a framework with a
/// single bias gives it back.
fn pytorch_weights(layer: &RecurrentLayer, one_bias: bool, seed: u64) -> TensorMap {
    let mut rng = SplitMix64::new(seed);
    let (rows, h) = (layer.gate_rows(), layer.hidden);
    let mut weights = TensorMap::new();
    for d in 0..layer.directions {
        weights.insert_f32(
            layer.name("weight_ih", d),
            uniform(&mut rng, &[rows, layer.input_size], 1.0),
        );
        weights.insert_f32(
            layer.name("weight_hh", d),
            uniform(&mut rng, &[rows, h], 1.0),
        );
        weights.insert_f32(layer.name("bias_ih", d), uniform(&mut rng, &[rows], 1.0));
        let bias_hh = match one_bias {
            true => ArrayD::zeros(vec![rows]),
            false => uniform(&mut rng, &[rows], 1.0),
        };
        weights.insert_f32(layer.name("bias_hh", d), bias_hh);
        if layer.cell == (RecurrentCell::Lstm { peepholes: true }) {
            weights.insert_f32(
                layer.name("weight_peephole", d),
                uniform(&mut rng, &[3, h], 1.0),
            );
        }
    }
    weights
}

/// Whether the layout keeps PyTorch's two biases apart for this cell.
fn two_biases(layout: Layout, cell: RecurrentCell) -> bool {
    match layout {
        Layout::PyTorch | Layout::Onnx => true,
        Layout::Keras => cell == RecurrentCell::Gru { reset_after: true },
        Layout::TensorFlow1 { .. } => false,
    }
}

const LAYOUTS: [Layout; 4] = [
    Layout::PyTorch,
    Layout::Keras,
    Layout::TensorFlow1 { forget_bias: 1.0 },
    Layout::Onnx,
];

#[test]
fn every_layout_gives_back_the_weights_it_was_given() {
    for layout in LAYOUTS {
        for cell in CELLS {
            let inexpressible = match layout {
                Layout::TensorFlow1 { .. } => cell == RecurrentCell::Gru { reset_after: true },
                Layout::Keras => cell == RecurrentCell::Lstm { peepholes: true },
                _ => false,
            };
            if inexpressible {
                continue; // refused below
            }
            for directions in [1, 2] {
                let layer = layer(cell, directions);
                let mut weights = pytorch_weights(&layer, !two_biases(layout, cell), 3);
                weights.insert_f32("head.weight", ArrayD::from_elem(vec![2, 2], 0.5));
                let theirs =
                    from_pytorch(&weights, std::slice::from_ref(&layer), layout).expect("exports");
                let back =
                    to_pytorch(&theirs, std::slice::from_ref(&layer), layout).expect("imports");
                assert_eq!(back, weights, "{layout:?} {cell:?} x{directions}");
            }
        }
    }
}

#[test]
fn a_single_bias_layout_keeps_the_sum_of_the_two() {
    let layer = layer(RecurrentCell::Lstm { peepholes: false }, 1);
    let weights = pytorch_weights(&layer, false, 5);
    let sum = weights.f32("bias_ih_l0").unwrap() + weights.f32("bias_hh_l0").unwrap();
    for layout in [Layout::Keras, Layout::TensorFlow1 { forget_bias: 0.25 }] {
        let back = to_pytorch(
            &from_pytorch(&weights, std::slice::from_ref(&layer), layout).unwrap(),
            std::slice::from_ref(&layer),
            layout,
        )
        .unwrap();
        let back_sum = back.f32("bias_ih_l0").unwrap() + back.f32("bias_hh_l0").unwrap();
        let error = (&back_sum - &sum).iter().fold(0f32, |m, e| m.max(e.abs()));
        assert!(error < 1e-6, "{layout:?}: {error}");
        assert!(back.f32("bias_hh_l0").unwrap().iter().all(|b| *b == 0.0));
    }
}

/// A `[rows, cols]` matrix whose every row in block `g` (of `rows / blocks`) holds `values[g]`.
fn blocks_of_rows(values: &[f32], block: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((values.len() * block, cols), |(r, _)| values[r / block])
}

fn block_values(matrix: &ArrayD<f32>, block: usize) -> Vec<f32> {
    (0..matrix.shape()[0] / block)
        .map(|g| matrix[[g * block, 0]])
        .collect()
}

// The gate orders below are the frameworks' documented ones, independent of the code: Keras's
// GRU kernel is z, r, h (keras.layers.GRUCell), TensorFlow 1's LSTMCell i, j, f, o
// (rnn_cell_impl.LSTMCell.call), ONNX's LSTM i, o, f, c (ONNX operator docs, "LSTM").
#[test]
fn gates_land_in_pytorch_order() {
    let (i, h) = (3, 2);
    // Keras GRU: columns z, r, h → PyTorch rows r, z, n.
    let gru = layer(RecurrentCell::Gru { reset_after: false }, 1);
    let mut keras = TensorMap::new();
    keras.insert_f32(
        "kernel_l0",
        blocks_of_rows(&[1.0, 2.0, 3.0], h, i)
            .reversed_axes()
            .into_dyn(),
    );
    keras.insert_f32(
        "recurrent_kernel_l0",
        blocks_of_rows(&[1.0, 2.0, 3.0], h, h)
            .reversed_axes()
            .into_dyn(),
    );
    keras.insert_f32(
        "bias_l0",
        Array1::from(vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]).into_dyn(),
    );
    let torch = to_pytorch(&keras, &[gru], Layout::Keras).unwrap();
    assert_eq!(
        block_values(&torch.f32("weight_ih_l0").unwrap(), h),
        [2.0, 1.0, 3.0]
    );
    assert_eq!(
        block_values(&torch.f32("weight_hh_l0").unwrap(), h),
        [2.0, 1.0, 3.0]
    );
    assert_eq!(
        torch.f32("bias_ih_l0").unwrap().as_slice().unwrap(),
        [2.0, 2.0, 1.0, 1.0, 3.0, 3.0]
    );

    // TensorFlow 1 LSTM: columns i, j, f, o over [x, h] → rows i, f, g, o; forget bias added.
    let lstm = layer(RecurrentCell::Lstm { peepholes: false }, 1);
    let mut tf1 = TensorMap::new();
    tf1.insert_f32(
        "kernel_l0",
        blocks_of_rows(&[1.0, 2.0, 3.0, 4.0], h, i + h)
            .reversed_axes()
            .into_dyn(),
    );
    tf1.insert_f32(
        "bias_l0",
        Array1::from_iter((0..8).map(|k| (k / 2) as f32)).into_dyn(),
    );
    let torch = to_pytorch(
        &tf1,
        std::slice::from_ref(&lstm),
        Layout::TensorFlow1 { forget_bias: 1.0 },
    )
    .unwrap();
    assert_eq!(
        block_values(&torch.f32("weight_ih_l0").unwrap(), h),
        [1.0, 3.0, 2.0, 4.0]
    );
    assert_eq!(
        block_values(&torch.f32("weight_hh_l0").unwrap(), h),
        [1.0, 3.0, 2.0, 4.0]
    );
    assert_eq!(
        torch.f32("bias_ih_l0").unwrap().as_slice().unwrap(),
        [0.0, 0.0, 3.0, 3.0, 1.0, 1.0, 3.0, 3.0]
    );

    // ONNX LSTM: rows i, o, f, c → i, f, g, o; peepholes i, o, f → i, f, o.
    let peephole = layer(RecurrentCell::Lstm { peepholes: true }, 1);
    let mut onnx = TensorMap::new();
    let stacked = |m: Array2<f32>| m.insert_axis(ndarray::Axis(0)).into_dyn();
    onnx.insert_f32("W_l0", stacked(blocks_of_rows(&[1.0, 2.0, 3.0, 4.0], h, i)));
    onnx.insert_f32("R_l0", stacked(blocks_of_rows(&[1.0, 2.0, 3.0, 4.0], h, h)));
    onnx.insert_f32(
        "P_l0",
        Array1::from_iter((0..6).map(|k| (k / 2) as f32))
            .insert_axis(ndarray::Axis(0))
            .into_dyn(),
    );
    let torch = to_pytorch(&onnx, &[peephole], Layout::Onnx).unwrap();
    assert_eq!(
        block_values(&torch.f32("weight_ih_l0").unwrap(), h),
        [1.0, 3.0, 4.0, 2.0]
    );
    assert_eq!(
        block_values(&torch.f32("weight_peephole_l0").unwrap(), 1),
        [0.0, 2.0, 1.0]
    );
    assert!(
        torch.f32("bias_hh_l0").unwrap().iter().all(|b| *b == 0.0),
        "absent B is zero"
    );
}

#[test]
fn a_file_of_another_layout_is_a_missing_tensor() {
    let layer = layer(RecurrentCell::Lstm { peepholes: false }, 1);
    let weights = pytorch_weights(&layer, false, 1);
    let error = to_pytorch(&weights, &[layer], Layout::Keras).unwrap_err();
    assert!(
        matches!(&error, RnnError::MissingTensor { tensor, .. } if tensor == "kernel_l0"),
        "{error}"
    );
}

#[test]
fn a_wrong_shape_names_the_tensor() {
    let layer = layer(RecurrentCell::Rnn, 1);
    let mut keras = from_pytorch(
        &pytorch_weights(&layer, true, 1),
        std::slice::from_ref(&layer),
        Layout::Keras,
    )
    .unwrap();
    keras.insert_f32("kernel_l0", ArrayD::zeros(vec![2, 3])); // PyTorch's orientation
    let error = to_pytorch(&keras, &[layer], Layout::Keras).unwrap_err();
    assert_eq!(
        error.to_string(),
        "tensor `kernel_l0`: expected shape [3, 2], found [2, 3]"
    );
}

#[test]
fn weights_the_layer_cannot_honour_are_refused() {
    // A Keras GRU bias of the other reset_after, both ways.
    for reset_after in [true, false] {
        let file = layer(RecurrentCell::Gru { reset_after }, 1);
        let model = layer(
            RecurrentCell::Gru {
                reset_after: !reset_after,
            },
            1,
        );
        let keras = from_pytorch(&pytorch_weights(&file, true, 2), &[file], Layout::Keras).unwrap();
        let error = to_pytorch(&keras, &[model], Layout::Keras).unwrap_err();
        assert!(
            matches!(&error, RnnError::InvalidValue { tensor, .. } if tensor == "bias_l0"),
            "{error}"
        );
        assert!(error.to_string().contains("reset_after"), "{error}");
    }
    // Peepholes in the file, none in the layer: TensorFlow 1, ONNX, PyTorch.
    let file = layer(RecurrentCell::Lstm { peepholes: true }, 1);
    let model = layer(RecurrentCell::Lstm { peepholes: false }, 1);
    for (layout, tensor) in [
        (Layout::TensorFlow1 { forget_bias: 1.0 }, "w_i_diag_l0"),
        (Layout::Onnx, "P_l0"),
        (Layout::PyTorch, "weight_peephole_l0"),
    ] {
        let theirs = from_pytorch(
            &pytorch_weights(&file, true, 2),
            std::slice::from_ref(&file),
            layout,
        )
        .unwrap();
        let error = to_pytorch(&theirs, std::slice::from_ref(&model), layout).unwrap_err();
        assert!(
            matches!(&error, RnnError::InvalidValue { tensor: t, .. } if t == tensor),
            "{layout:?}: {error}"
        );
        assert!(error.to_string().contains("peepholes"), "{error}");
    }
    // Keras has no peephole LSTM.
    let error = from_pytorch(
        &pytorch_weights(&file, true, 2),
        std::slice::from_ref(&file),
        Layout::Keras,
    )
    .unwrap_err();
    assert!(error.to_string().contains("no peepholes"), "{error}");
    let keras = from_pytorch(
        &pytorch_weights(&model, true, 2),
        std::slice::from_ref(&model),
        Layout::Keras,
    )
    .unwrap();
    let error = to_pytorch(&keras, std::slice::from_ref(&file), Layout::Keras).unwrap_err();
    assert!(
        matches!(&error, RnnError::InvalidValue { tensor, .. } if tensor == "kernel_l0"),
        "{error}"
    );
    // TensorFlow 1's GRUCell resets before the product.
    let gru = layer(RecurrentCell::Gru { reset_after: false }, 1);
    let tf1 = from_pytorch(
        &pytorch_weights(&gru, true, 2),
        &[gru],
        Layout::TensorFlow1 { forget_bias: 1.0 },
    )
    .unwrap();
    let reset_after = layer(RecurrentCell::Gru { reset_after: true }, 1);
    let error = to_pytorch(
        &tf1,
        std::slice::from_ref(&reset_after),
        Layout::TensorFlow1 { forget_bias: 1.0 },
    )
    .unwrap_err();
    assert!(error.to_string().contains("reset_after = false"), "{error}");
    let weights = pytorch_weights(&reset_after, false, 2);
    assert!(from_pytorch(
        &weights,
        &[reset_after],
        Layout::TensorFlow1 { forget_bias: 1.0 }
    )
    .is_err());
}

#[test]
fn names_keep_the_prefix_and_stack_index() {
    let layer = RecurrentLayer {
        prefix: "enc.".into(),
        stack_idx: 1,
        ..layer(RecurrentCell::Rnn, 2)
    };
    let keras = from_pytorch(&pytorch_weights(&layer, true, 4), &[layer], Layout::Keras).unwrap();
    let names: Vec<&str> = keras.names().collect();
    assert_eq!(
        names,
        [
            "enc.bias_l1",
            "enc.bias_l1_reverse",
            "enc.kernel_l1",
            "enc.kernel_l1_reverse",
            "enc.recurrent_kernel_l1",
            "enc.recurrent_kernel_l1_reverse"
        ]
    );
}

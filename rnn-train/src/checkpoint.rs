//! Checkpoints: a model's parameters, an optimizer's state and the step,
//! in one safetensors file.
//!
//! The parameters keep PyTorch's names (the file loads into a model as a
//! weight file does); the optimizer's tensors are named
//! `optimizer.<slot>.<parameter>` and `optimizer.step`. Resuming from a
//! checkpoint gives the same bits as not stopping: everything a step reads
//! is in the file, in float32 as it was.

use std::path::Path;

use ndarray::Dimension;
use rnn_runtime::{Parameters, Result, RnnError, TensorMap};

use crate::optim::Optimizer;

const PREFIX: &str = "optimizer.";

/// The checkpoint of `model` and `optimizer` as named tensors.
pub fn to_tensors(model: &dyn Parameters, optimizer: &dyn Optimizer) -> TensorMap {
    let mut tensors = TensorMap::new();
    for (name, param) in model.params() {
        tensors.insert_f32(name, param.to_owned());
    }
    for (name, tensor) in optimizer.state().iter() {
        let name = format!("{PREFIX}{name}");
        match tensor {
            rnn_runtime::Tensor::F32(array) => tensors.insert_f32(name, array.clone()),
            rnn_runtime::Tensor::I64(array) => tensors.insert_i64(name, array.clone()),
            rnn_runtime::Tensor::Unsupported { .. } => {}
        }
    }
    tensors
}

/// Saves `model` and `optimizer` to `path`.
///
/// # Errors
///
/// The file cannot be written.
pub fn save(
    path: impl AsRef<Path>,
    model: &dyn Parameters,
    optimizer: &dyn Optimizer,
) -> Result<()> {
    to_tensors(model, optimizer).save(path)
}

/// Loads a checkpoint from `path` into `model` and `optimizer`.
///
/// # Errors
///
/// The file cannot be read or is not safetensors; a tensor the model or
/// the optimizer needs is missing or misshaped, or the file holds a tensor
/// that is not this model's (another model's checkpoint): an error naming
/// the tensor, with the model and the optimizer unchanged.
pub fn load(
    path: impl AsRef<Path>,
    model: &mut dyn Parameters,
    optimizer: &mut dyn Optimizer,
) -> Result<()> {
    from_tensors(&TensorMap::load(path)?, model, optimizer)
}

/// Restores `model` and `optimizer` from `tensors` (as [`load`]).
///
/// # Errors
///
/// As [`load`].
pub fn from_tensors(
    tensors: &TensorMap,
    model: &mut dyn Parameters,
    optimizer: &mut dyn Optimizer,
) -> Result<()> {
    let shapes: Vec<(&'static str, Vec<usize>)> = model
        .params()
        .into_iter()
        .map(|(name, param)| (name, param.shape().to_vec()))
        .collect();
    let params = shapes
        .iter()
        .map(|(name, shape)| tensors.f32_shaped(name, shape))
        .collect::<Result<Vec<_>>>()?;
    let mut state = TensorMap::new();
    for (name, tensor) in tensors.iter() {
        if let Some(state_name) = name.strip_prefix(PREFIX) {
            match tensor {
                rnn_runtime::Tensor::F32(array) => state.insert_f32(state_name, array.clone()),
                rnn_runtime::Tensor::I64(array) => state.insert_i64(state_name, array.clone()),
                rnn_runtime::Tensor::Unsupported { .. } => {}
            }
        } else if !shapes.iter().any(|(param, _)| *param == name) {
            return Err(RnnError::InvalidValue {
                tensor: name.to_owned(),
                reason: "is not a parameter of this model: the checkpoint is another model's"
                    .to_owned(),
            });
        }
    }
    if let Some(((name, _), (index, value))) =
        shapes.iter().zip(&params).find_map(|(shape, param)| {
            param
                .indexed_iter()
                .find(|(_, v)| !v.is_finite())
                .map(|found| (shape, found))
        })
    {
        return Err(RnnError::InvalidValue {
            tensor: (*name).to_owned(),
            reason: format!("non-finite value {value} at {:?}", index.slice()),
        });
    }
    // The optimizer checks its whole state before taking any of it; the
    // model can then only refuse non-finite parameters, ruled out above:
    // either both change or neither does.
    optimizer
        .load_state(&state, &shapes)
        .map_err(as_named_in_file)?;
    model.update_params(&mut |name, mut param| {
        if let Some(k) = shapes
            .iter()
            .position(|(param_name, _)| *param_name == name)
        {
            param.assign(&params[k]);
        }
    })
}

/// An optimizer's error about one of its tensors, naming the tensor as the
/// file does (`optimizer.<name>`).
fn as_named_in_file(error: RnnError) -> RnnError {
    let prefixed = |tensor: String| format!("{PREFIX}{tensor}");
    match error {
        RnnError::MissingTensor { tensor, available } => RnnError::MissingTensor {
            tensor: prefixed(tensor),
            available: available.into_iter().map(prefixed).collect(),
        },
        RnnError::ShapeMismatch {
            tensor,
            expected,
            found,
        } => RnnError::ShapeMismatch {
            tensor: prefixed(tensor),
            expected,
            found,
        },
        RnnError::WrongDtype {
            tensor,
            expected,
            found,
        } => RnnError::WrongDtype {
            tensor: prefixed(tensor),
            expected,
            found,
        },
        RnnError::InvalidValue { tensor, reason } => RnnError::InvalidValue {
            tensor: prefixed(tensor),
            reason,
        },
        other => other,
    }
}

//! Where the interpreter reads named tensors: a [`TensorMap`] in `f32`, or a
//! map of `f64` arrays for gradient checks.

use std::collections::BTreeMap;

use ndarray::ArrayD;
use rnn_runtime::{RnnError, TensorMap};

/// Named `f64` tensors; lengths (`seq_len`, `steps`) are whole numbers.
pub type Tensors<F> = BTreeMap<String, ArrayD<F>>;

/// `map` in `f64`, for the interpreter's exact values: `f32` tensors
/// widened, integer ones (lengths) as whole floats; others left out.
pub fn widen(map: &TensorMap) -> Tensors<f64> {
    map.iter()
        .filter_map(|(name, tensor)| match tensor {
            rnn_runtime::Tensor::F32(array) => Some((name.to_owned(), array.mapv(f64::from))),
            rnn_runtime::Tensor::I64(array) => {
                Some((name.to_owned(), array.mapv(|value| value as f64)))
            }
            rnn_runtime::Tensor::Unsupported { .. } => None,
        })
        .collect()
}

/// Named tensors the interpreter reads in number type `F`.
pub trait Source<F> {
    /// Whether a tensor of this name is present.
    fn contains(&self, name: &str) -> bool;

    /// A floating-point tensor.
    ///
    /// # Errors
    ///
    /// A missing or non-float tensor.
    fn float(&self, name: &str) -> Result<ArrayD<F>, RnnError>;

    /// Per-sequence lengths: `[batch]` whole numbers in `0..=max_time`.
    ///
    /// # Errors
    ///
    /// A missing, misshaped or out-of-range tensor.
    fn lengths(&self, name: &str, batch: usize, max_time: usize) -> Result<Vec<usize>, RnnError>;

    /// A floating-point tensor of exactly the `expected` shape.
    ///
    /// # Errors
    ///
    /// As [`Source::float`], or a shape other than `expected`.
    fn float_shaped(&self, name: &str, expected: &[usize]) -> Result<ArrayD<F>, RnnError> {
        let array = self.float(name)?;
        if array.shape() != expected {
            return Err(RnnError::ShapeMismatch {
                tensor: name.to_owned(),
                expected: expected.to_vec(),
                found: array.shape().to_vec(),
            });
        }
        Ok(array)
    }
}

impl Source<f32> for TensorMap {
    fn contains(&self, name: &str) -> bool {
        TensorMap::contains(self, name)
    }

    fn float(&self, name: &str) -> Result<ArrayD<f32>, RnnError> {
        self.f32(name)
    }

    fn lengths(&self, name: &str, batch: usize, max_time: usize) -> Result<Vec<usize>, RnnError> {
        TensorMap::lengths(self, name, batch, max_time)
    }
}

impl Source<f64> for Tensors<f64> {
    fn contains(&self, name: &str) -> bool {
        self.contains_key(name)
    }

    fn float(&self, name: &str) -> Result<ArrayD<f64>, RnnError> {
        self.get(name)
            .cloned()
            .ok_or_else(|| RnnError::MissingTensor {
                tensor: name.to_owned(),
                available: self.keys().cloned().collect(),
            })
    }

    fn lengths(&self, name: &str, batch: usize, max_time: usize) -> Result<Vec<usize>, RnnError> {
        let array = self.float_shaped(name, &[batch])?;
        array
            .iter()
            .enumerate()
            .map(|(idx, &value)| {
                if value.fract() == 0.0 && (0.0..=max_time as f64).contains(&value) {
                    Ok(value as usize)
                } else {
                    Err(RnnError::InvalidValue {
                        tensor: name.to_owned(),
                        reason: format!("entry {idx} is {value}, not a length in 0..={max_time}"),
                    })
                }
            })
            .collect()
    }
}

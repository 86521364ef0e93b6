//! Losses over a batch of padded sequences, masked by their lengths.
//!
//! Each returns the mean loss over the positions it counts and its
//! gradient with respect to the outputs: zero at padded steps, so that it
//! can be passed to a generated model's `backward` as it is. Sums are
//! taken in float64.

use ndarray::{Array3, ArrayView1, ArrayView2, ArrayView3, Axis};
use rnn_runtime::{Result, RnnError};

/// A loss's value and its gradient with respect to the outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Loss {
    /// The mean over the counted positions (0 when none is counted).
    pub value: f32,
    /// The gradient with respect to the outputs `[B, T, n]`; zero where nothing is counted.
    pub grad: Array3<f32>,
}

/// Mean squared error over the valid steps of each sequence: the mean of
/// `(y - target)²` over every element of the steps `t < lengths[b]` (all
/// steps without lengths: PyTorch's `MSELoss()`).
///
/// # Errors
///
/// `target` shaped unlike `y`, `lengths` of the wrong size or above `T`,
/// or a non-finite loss (naming the first non-finite element of `y` or
/// `target`).
pub fn mse(
    y: ArrayView3<'_, f32>,
    target: ArrayView3<'_, f32>,
    lengths: Option<&[usize]>,
) -> Result<Loss> {
    if target.shape() != y.shape() {
        return Err(RnnError::ShapeMismatch {
            tensor: "target".to_owned(),
            expected: y.shape().to_vec(),
            found: target.shape().to_vec(),
        });
    }
    let (batch, time, width) = y.dim();
    let lengths = valid_lengths(lengths, batch, time)?;
    let count = lengths.iter().sum::<usize>() * width;
    let mut grad = Array3::<f32>::zeros(y.raw_dim());
    let mut sum = 0.0_f64;
    let scale = if count == 0 { 0.0 } else { 2.0 / count as f64 };
    for (b, &length) in lengths.iter().enumerate() {
        for t in 0..length {
            for k in 0..width {
                let diff = f64::from(y[(b, t, k)]) - f64::from(target[(b, t, k)]);
                sum += diff * diff;
                grad[(b, t, k)] = (scale * diff) as f32;
            }
        }
    }
    let value = if count == 0 { 0.0 } else { sum / count as f64 } as f32;
    if !value.is_finite() {
        return Err(first_non_finite(&[("y", y), ("target", target)], &lengths));
    }
    Ok(Loss { value, grad })
}

/// Mean squared error at the last valid step of each sequence: the mean of
/// `(y[b, lengths[b] - 1] - target[b])²` over the sequences that have a
/// step and the `n` outputs (an unrolled solver trained on its final
/// iterate). [`mse`] with the target repeated at every step is the loss
/// summed over steps instead (as a mean).
///
/// # Errors
///
/// `target` not `[B, n]`, `lengths` of the wrong size or above `T`, or a
/// non-finite loss (naming the first non-finite element).
pub fn mse_last(
    y: ArrayView3<'_, f32>,
    target: ArrayView2<'_, f32>,
    lengths: Option<&[usize]>,
) -> Result<Loss> {
    let (batch, time, width) = y.dim();
    if target.dim() != (batch, width) {
        return Err(RnnError::ShapeMismatch {
            tensor: "target".to_owned(),
            expected: vec![batch, width],
            found: target.shape().to_vec(),
        });
    }
    let lengths = valid_lengths(lengths, batch, time)?;
    let counted = lengths.iter().filter(|&&length| length > 0).count();
    let count = counted * width;
    let scale = if count == 0 { 0.0 } else { 2.0 / count as f64 };
    let mut grad = Array3::<f32>::zeros(y.raw_dim());
    let mut sum = 0.0_f64;
    for (b, &length) in lengths.iter().enumerate().filter(|(_, &length)| length > 0) {
        for k in 0..width {
            let diff = f64::from(y[(b, length - 1, k)]) - f64::from(target[(b, k)]);
            sum += diff * diff;
            grad[(b, length - 1, k)] = (scale * diff) as f32;
        }
    }
    let value = if count == 0 { 0.0 } else { sum / count as f64 } as f32;
    if !value.is_finite() {
        let found = (0..batch)
            .filter(|b| lengths[*b] > 0)
            .flat_map(|b| (0..width).map(move |k| (b, k)))
            .find_map(|(b, k)| {
                let (t, output, wanted) =
                    (lengths[b] - 1, y[(b, lengths[b] - 1, k)], target[(b, k)]);
                if !output.is_finite() {
                    Some(("y", format!("non-finite value {output} at [{b}, {t}, {k}]")))
                } else if !wanted.is_finite() {
                    Some(("target", format!("non-finite value {wanted} at [{b}, {k}]")))
                } else {
                    None
                }
            });
        let (tensor, reason) = found.unwrap_or(("loss", "overflowed to infinity".to_owned()));
        return Err(RnnError::InvalidValue {
            tensor: tensor.to_owned(),
            reason,
        });
    }
    Ok(Loss { value, grad })
}

/// Softmax cross-entropy at every valid step: `logits` `[B, T, C]`,
/// `targets` `[B, T]` class indices; the mean of `-log softmax(logits)[target]`
/// over the steps `t < lengths[b]` (PyTorch's `cross_entropy` with padded
/// steps ignored). Targets at padded steps are not read.
///
/// # Errors
///
/// `targets` not `[B, T]`, a class index `>= C` at a valid step, `lengths`
/// of the wrong size or above `T`, or non-finite logits at a valid step.
pub fn cross_entropy(
    logits: ArrayView3<'_, f32>,
    targets: ArrayView2<'_, usize>,
    lengths: Option<&[usize]>,
) -> Result<Loss> {
    let (batch, time, _) = logits.dim();
    if targets.dim() != (batch, time) {
        return Err(RnnError::ShapeMismatch {
            tensor: "targets".to_owned(),
            expected: vec![batch, time],
            found: targets.shape().to_vec(),
        });
    }
    let lengths = valid_lengths(lengths, batch, time)?;
    let positions = lengths
        .iter()
        .enumerate()
        .flat_map(|(b, &length)| (0..length).map(move |t| (b, t, targets[(b, t)])));
    softmax_cross_entropy(logits, positions)
}

/// Softmax cross-entropy at each sequence's last valid step: `logits`
/// `[B, T, C]`, `targets` `[B]`; the mean over the sequences of
/// `-log softmax(logits[b, lengths[b] - 1])[targets[b]]` (step `T - 1`
/// without lengths). A sequence of length 0 has no last step and is not
/// counted.
///
/// # Errors
///
/// `targets` not `[B]`, a class index `>= C`, `lengths` of the wrong size
/// or above `T`, or non-finite logits at a counted step.
pub fn cross_entropy_last(
    logits: ArrayView3<'_, f32>,
    targets: ArrayView1<'_, usize>,
    lengths: Option<&[usize]>,
) -> Result<Loss> {
    let (batch, time, _) = logits.dim();
    if targets.len() != batch {
        return Err(RnnError::ShapeMismatch {
            tensor: "targets".to_owned(),
            expected: vec![batch],
            found: targets.shape().to_vec(),
        });
    }
    let lengths = valid_lengths(lengths, batch, time)?;
    let positions = lengths
        .iter()
        .enumerate()
        .filter(|(_, &length)| length > 0)
        .map(|(b, &length)| (b, length - 1, targets[b]));
    softmax_cross_entropy(logits, positions)
}

/// The index of each step's largest logit `[B, T]` (the first on ties):
/// the predicted classes.
pub fn argmax(logits: ArrayView3<'_, f32>) -> ndarray::Array2<usize> {
    logits.map_axis(Axis(2), |row| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (k, &value)| {
                if value > best.1 {
                    (k, value)
                } else {
                    best
                }
            })
            .0
    })
}

/// The mean of `-log softmax(logits[b, t])[class]` over `positions`
/// `(b, t, class)`, and its gradient `(softmax - onehot) / count`.
fn softmax_cross_entropy(
    logits: ArrayView3<'_, f32>,
    positions: impl Iterator<Item = (usize, usize, usize)>,
) -> Result<Loss> {
    let classes = logits.dim().2;
    let positions: Vec<(usize, usize, usize)> = positions.collect();
    if let Some(&(b, t, class)) = positions.iter().find(|(_, _, class)| *class >= classes) {
        return Err(RnnError::InvalidValue {
            tensor: "targets".to_owned(),
            reason: format!(
                "class {class} at sequence {b}, step {t} is out of range for {classes} classes"
            ),
        });
    }
    let mut grad = Array3::<f32>::zeros(logits.raw_dim());
    let scale = 1.0 / positions.len().max(1) as f64;
    let mut sum = 0.0_f64;
    for &(b, t, class) in &positions {
        let row = logits.slice(ndarray::s![b, t, ..]);
        if let Some(k) = row.iter().position(|value| !value.is_finite()) {
            return Err(RnnError::InvalidValue {
                tensor: "logits".to_owned(),
                reason: format!("non-finite value {} at [{b}, {t}, {k}]", row[k]),
            });
        }
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let total: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        let log_total = max + total.ln();
        sum += log_total - f64::from(row[class]);
        for (k, &value) in row.iter().enumerate() {
            let softmax = (f64::from(value) - log_total).exp();
            let onehot = if k == class { 1.0 } else { 0.0 };
            grad[(b, t, k)] = (scale * (softmax - onehot)) as f32;
        }
    }
    Ok(Loss {
        value: (sum * if positions.is_empty() { 0.0 } else { scale }) as f32,
        grad,
    })
}

/// The lengths, checked: `batch` of them, none above `time`; all `time`
/// when there are none.
pub(crate) fn valid_lengths(
    lengths: Option<&[usize]>,
    batch: usize,
    time: usize,
) -> Result<Vec<usize>> {
    let Some(lengths) = lengths else {
        return Ok(vec![time; batch]);
    };
    if lengths.len() != batch {
        return Err(RnnError::ShapeMismatch {
            tensor: "lengths".to_owned(),
            expected: vec![batch],
            found: vec![lengths.len()],
        });
    }
    if let Some((b, length)) = lengths.iter().enumerate().find(|(_, &l)| l > time) {
        return Err(RnnError::InvalidValue {
            tensor: "lengths".to_owned(),
            reason: format!("length {length} of sequence {b} is above the {time} steps"),
        });
    }
    Ok(lengths.to_vec())
}

/// The error for a non-finite loss: the first non-finite element among
/// the valid steps of `tensors` (padded steps are not read), or the loss
/// itself (an overflow of finite values).
fn first_non_finite(tensors: &[(&str, ArrayView3<'_, f32>)], lengths: &[usize]) -> RnnError {
    for (name, tensor) in tensors {
        let found = tensor
            .indexed_iter()
            .find(|((b, t, _), v)| *t < lengths[*b] && !v.is_finite());
        if let Some(((b, t, k), value)) = found {
            return RnnError::InvalidValue {
                tensor: (*name).to_owned(),
                reason: format!("non-finite value {value} at [{b}, {t}, {k}]"),
            };
        }
    }
    RnnError::InvalidValue {
        tensor: "loss".to_owned(),
        reason: "overflowed to infinity".to_owned(),
    }
}

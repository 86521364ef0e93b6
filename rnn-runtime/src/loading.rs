//! Loading what generated code reads: parameters from the weights by
//! name, inputs, lengths and initial states from the inputs, each checked
//! against the shape the network expects; and the row copies that set up
//! its buffers.

use std::sync::Arc;

use ndarray::{
    s, Array1, Array2, Array3, ArrayD, ArrayView2, ArrayView3, ArrayViewD, ArrayViewMut2, Axis,
    Ix1, Ix2,
};

use crate::error::RnnError;
use crate::kernels::{PackedMatrix, Precision, ReducedMatrix};
use crate::packing::copy_row;
use crate::tensor::TensorMap;
use crate::workspace::{join, Threads};

/// Loads a vector parameter by its first name in `names` that exists (the
/// PyTorch name first, then a plain one).
///
/// # Errors
///
/// The tensor is missing, not float, or not of length `len`.
pub fn load1(weights: &TensorMap, names: &[&str], len: usize) -> Result<Array1<f32>, RnnError> {
    let name = pick(weights, names);
    let array = weights.f32_shaped(name, &[len])?;
    Ok(array.into_dimensionality::<Ix1>().expect("shape checked"))
}

/// Loads a matrix parameter; see [`load1`].
///
/// # Errors
///
/// The tensor is missing, not float, or not `[rows, cols]`.
pub fn load2(
    weights: &TensorMap,
    names: &[&str],
    rows: usize,
    cols: usize,
) -> Result<Array2<f32>, RnnError> {
    let name = pick(weights, names);
    let array = weights.f32_shaped(name, &[rows, cols])?;
    Ok(array.into_dimensionality::<Ix2>().expect("shape checked"))
}

/// Loads a per-step parameter: every step's copy, `[steps, ..shape]`; see [`load1`].
///
/// # Errors
///
/// The tensor is missing, not float, or not `shape`.
pub fn load_steps(
    weights: &TensorMap,
    names: &[&str],
    shape: &[usize],
) -> Result<ArrayD<f32>, RnnError> {
    weights.f32_shaped(pick(weights, names), shape)
}

/// Copy `step` of a per-step vector parameter loaded by [`load_steps`].
pub fn step_copy1(all: &ArrayD<f32>, step: usize) -> Array1<f32> {
    all.index_axis(Axis(0), step)
        .to_owned()
        .into_dimensionality::<Ix1>()
        .expect("[steps, n]")
}

/// Copy `step` of a per-step matrix parameter loaded by [`load_steps`].
pub fn step_copy2(all: &ArrayD<f32>, step: usize) -> Array2<f32> {
    all.index_axis(Axis(0), step)
        .to_owned()
        .into_dimensionality::<Ix2>()
        .expect("[steps, m, n]")
}

/// One step's parameters of a layer whose `per_step` ones are stacked
/// `[steps, ..]`, as views: copy `step` of those, the others as they are
/// (a parameter past `per_step`'s end is not per step). Training code
/// builds its constants from each step's set.
pub fn step_params<'a>(
    params: &'a [ArrayD<f32>],
    per_step: &[bool],
    step: usize,
) -> Vec<ArrayViewD<'a, f32>> {
    params
        .iter()
        .enumerate()
        .map(|(k, param)| match per_step.get(k) {
            Some(true) => param.index_axis(Axis(0), step),
            _ => param.view(),
        })
        .collect()
}

/// How many multiply-adds of the packed product take as long as moving one
/// float (a copy, a transpose, a packing): what a model's rebuild does to
/// its parameters, weighed against [`Threads`]' threshold. The product
/// runs at about 60 G multiply-adds per second on one core; packing ran at
/// about 1 G floats when this was set, and runs at several since it packs
/// by panels, so the estimate errs toward splitting a rebuild.
const MOVE_COST: usize = 64;

/// `build(step)` for each of `steps`, in their order, as `(step, value)`:
/// the steps a parameter update rebuilds, each of `floats_per_step` floats
/// of parameters. On two threads, half of the steps each, when `threads`
/// allows it for the work; the values are the same either way.
///
/// # Errors
///
/// The first error of `build`, in the order of `steps`.
pub fn build_steps<T: Send>(
    threads: Threads,
    steps: &[usize],
    floats_per_step: usize,
    build: &(dyn Fn(usize) -> Result<T, RnnError> + Sync),
) -> Result<Vec<(usize, T)>, RnnError> {
    let in_order = |steps: &[usize]| -> Result<Vec<(usize, T)>, RnnError> {
        steps.iter().map(|&step| Ok((step, build(step)?))).collect()
    };
    let work = steps
        .len()
        .saturating_mul(floats_per_step)
        .saturating_mul(MOVE_COST);
    if steps.len() < 2 || !threads.split(work) {
        return in_order(steps);
    }
    let (first, second) = steps.split_at(steps.len() / 2);
    let (first, second) = join(true, || in_order(first), || in_order(second));
    let mut built = first?;
    built.extend(second?);
    Ok(built)
}

/// Whether `new` differs from `old` in any bit: a parameter update
/// rebuilds only what reads a changed parameter (bits, so that `-0.0` for
/// `0.0` counts as a change and a rebuilt model equals a model loaded
/// from the same weights).
pub fn params_changed(old: &[ArrayD<f32>], new: &[ArrayD<f32>]) -> bool {
    old.iter()
        .zip(new)
        .any(|(old, new)| differs(old.view(), new.view()))
}

/// Which of `steps` steps read a changed parameter of a layer whose
/// `per_step` parameters are stacked `[steps, ..]` (see [`step_params`]):
/// every step if a tied parameter changed, else the steps whose copies did.
pub fn steps_changed(
    old: &[ArrayD<f32>],
    new: &[ArrayD<f32>],
    per_step: &[bool],
    steps: usize,
) -> Vec<bool> {
    let tied = tied_changed(old, new, per_step);
    let per_step = |k: usize| per_step.get(k).copied().unwrap_or(false);
    (0..steps)
        .map(|step| {
            tied || old.iter().zip(new).enumerate().any(|(k, (old, new))| {
                per_step(k) && differs(old.index_axis(Axis(0), step), new.index_axis(Axis(0), step))
            })
        })
        .collect()
}

/// Whether a tied parameter (one not `per_step`) changed in any bit.
pub fn tied_changed(old: &[ArrayD<f32>], new: &[ArrayD<f32>], per_step: &[bool]) -> bool {
    old.iter().zip(new).enumerate().any(|(k, (old, new))| {
        !per_step.get(k).copied().unwrap_or(false) && differs(old.view(), new.view())
    })
}

/// What a layer's training functions read of its parameters alone
/// (constant values, transposes, matrices packed for the product), built
/// when the model is built and bound by reference at each call. Held by
/// `Arc`, so that a set can take a value from another set instead of
/// computing it again: the steps of a layer with per-step parameters share
/// what reads tied parameters alone, and an update keeps what reads no
/// changed parameter.
#[derive(Clone, Debug, Default)]
pub struct TrainConsts {
    /// The values, in the order the training functions bind them.
    pub values: Vec<Arc<Array2<f32>>>,
    /// The packed matrices, likewise.
    pub packed: Vec<Arc<PackedMatrix>>,
}

impl TrainConsts {
    /// Value `k` of `old` if it reads none of the `changed` parameters
    /// (`reads`: their indices; `changed[p]`: parameter `p` differs from
    /// the one `old` was built from), else `build()`.
    pub fn value(
        old: Option<&TrainConsts>,
        k: usize,
        reads: &[usize],
        changed: &[bool],
        build: impl FnOnce() -> Array2<f32>,
    ) -> Arc<Array2<f32>> {
        match old.and_then(|old| old.values.get(k)) {
            Some(value) if !any_changed(reads, changed) => Arc::clone(value),
            _ => Arc::new(build()),
        }
    }

    /// Packed matrix `k`; see [`TrainConsts::value`].
    pub fn packed(
        old: Option<&TrainConsts>,
        k: usize,
        reads: &[usize],
        changed: &[bool],
        build: impl FnOnce() -> PackedMatrix,
    ) -> Arc<PackedMatrix> {
        match old.and_then(|old| old.packed.get(k)) {
            Some(packed) if !any_changed(reads, changed) => Arc::clone(packed),
            _ => Arc::new(build()),
        }
    }
}

/// Whether any parameter of `reads` is marked in `changed` (one past its
/// end counts as changed).
fn any_changed(reads: &[usize], changed: &[bool]) -> bool {
    reads
        .iter()
        .any(|&p| changed.get(p).copied().unwrap_or(true))
}

fn differs(old: ArrayViewD<'_, f32>, new: ArrayViewD<'_, f32>) -> bool {
    if old.shape() != new.shape() {
        return true;
    }
    match (old.as_slice(), new.as_slice()) {
        // In blocks without stopping early, so that the comparison vectorises.
        (Some(old), Some(new)) => old.chunks(CHUNK).zip(new.chunks(CHUNK)).any(|(old, new)| {
            old.iter().zip(new).fold(false, |differ, (a, b)| {
                differ | (a.to_bits() != b.to_bits())
            })
        }),
        _ => old
            .iter()
            .zip(new.iter())
            .any(|(a, b)| a.to_bits() != b.to_bits()),
    }
}

/// Values a vectorised check reads between two looks at its result.
const CHUNK: usize = 256;

/// Whether every value is finite (read in blocks without stopping early,
/// so that the check vectorises).
pub fn all_finite(values: &[f32]) -> bool {
    values
        .chunks(CHUNK)
        .all(|chunk| chunk.iter().fold(true, |all, v| all & v.is_finite()))
}

/// [`check_finite`] of an array, fast when its values are contiguous.
///
/// # Errors
///
/// As [`check_finite`].
pub fn check_finite_array(tensor: &str, values: ArrayViewD<'_, f32>) -> Result<(), RnnError> {
    match values.as_slice_memory_order() {
        Some(slice) if all_finite(slice) => Ok(()),
        _ => check_finite(tensor, values.iter()),
    }
}

fn pick<'a>(weights: &TensorMap, names: &[&'a str]) -> &'a str {
    names
        .iter()
        .copied()
        .find(|name| weights.contains(name))
        .unwrap_or(names[0])
}

/// Checks a run-time tensor's shape; `None` in `expected` matches any size
/// (and is reported as the size found).
///
/// # Errors
///
/// [`RnnError::ShapeMismatch`] naming `tensor` and both shapes.
pub fn check_shape(
    tensor: &str,
    found: &[usize],
    expected: &[Option<usize>],
) -> Result<(), RnnError> {
    let matches = found.len() == expected.len()
        && found
            .iter()
            .zip(expected)
            .all(|(found, expected)| expected.is_none_or(|expected| expected == *found));
    if matches {
        return Ok(());
    }
    Err(RnnError::ShapeMismatch {
        tensor: tensor.to_owned(),
        expected: expected
            .iter()
            .enumerate()
            .map(|(idx, size)| size.unwrap_or_else(|| found.get(idx).copied().unwrap_or(0)))
            .collect(),
        found: found.to_vec(),
    })
}

/// `target = source`, both `[n, w]`: rows copied as slices when they are
/// contiguous (always, for the buffers generated code passes).
///
/// # Panics
///
/// If the shapes differ (generated code passes matching views).
pub fn copy_rows(mut target: ArrayViewMut2<'_, f32>, source: ArrayView2<'_, f32>) {
    assert_eq!(target.dim(), source.dim(), "copy_rows: shapes differ");
    if let (Some(target), Some(source)) = (target.as_slice_mut(), source.as_slice()) {
        target.copy_from_slice(source);
        return;
    }
    for (target, source) in target.rows_mut().into_iter().zip(source.rows()) {
        copy_row(target, source);
    }
}

/// Every row of `target` set to `row`.
///
/// # Panics
///
/// If `row` is not as long as a row of `target`.
pub fn fill_rows(mut target: ArrayViewMut2<'_, f32>, row: &ndarray::ArrayRef1<f32>) {
    assert_eq!(target.ncols(), row.len(), "fill_rows: row length differs");
    for target in target.rows_mut() {
        copy_row(target, row.view());
    }
}

/// A float input `[B, T, n]` by name, borrowed (not copied).
///
/// # Errors
///
/// Missing, not float, or of another rank.
pub fn input3<'a>(inputs: &'a TensorMap, name: &str) -> Result<ArrayView3<'a, f32>, RnnError> {
    let array = inputs.f32_ref(name)?;
    let shape = array.shape().to_vec();
    array
        .view()
        .into_dimensionality::<ndarray::Ix3>()
        .map_err(|_| RnnError::ShapeMismatch {
            tensor: name.to_owned(),
            expected: vec![
                shape.first().copied().unwrap_or(0),
                shape.get(1).copied().unwrap_or(0),
                shape.last().copied().unwrap_or(0),
            ],
            found: shape,
        })
}

/// A float context `[B, n]` by name, borrowed (not copied).
///
/// # Errors
///
/// Missing, not float, or not of rank 2.
pub fn input2<'a>(inputs: &'a TensorMap, name: &str) -> Result<ArrayView2<'a, f32>, RnnError> {
    let array = inputs.f32_ref(name)?;
    let shape = array.shape().to_vec();
    array
        .view()
        .into_dimensionality::<Ix2>()
        .map_err(|_| RnnError::ShapeMismatch {
            tensor: name.to_owned(),
            expected: vec![
                shape.first().copied().unwrap_or(0),
                shape.last().copied().unwrap_or(0),
            ],
            found: shape,
        })
}

/// `seq_len` if present.
///
/// # Errors
///
/// See [`TensorMap::lengths`].
pub fn optional_lengths(
    inputs: &TensorMap,
    batch: usize,
    steps: usize,
) -> Result<Option<Vec<usize>>, RnnError> {
    if inputs.contains("seq_len") {
        inputs.lengths("seq_len", batch, steps).map(Some)
    } else {
        Ok(None)
    }
}

/// The `steps` count of a network without per-step input.
///
/// # Errors
///
/// Missing or not a single non-negative whole number.
pub fn steps(inputs: &TensorMap) -> Result<usize, RnnError> {
    Ok(inputs.lengths("steps", 1, usize::MAX)?[0])
}

/// An initial state tensor `[rows, B, size]` by name, or zeros.
///
/// # Errors
///
/// Present but not float or misshaped.
pub fn state_or_zeros(
    inputs: &TensorMap,
    name: &str,
    rows: usize,
    batch: usize,
    size: usize,
) -> Result<Array3<f32>, RnnError> {
    if !inputs.contains(name) {
        return Ok(Array3::zeros((rows, batch, size)));
    }
    let array = inputs.f32_shaped(name, &[rows, batch, size])?;
    Ok(array
        .into_dimensionality::<ndarray::Ix3>()
        .expect("shape checked"))
}

/// Checks that every value of a tensor is finite.
///
/// # Errors
///
/// [`RnnError::InvalidValue`] naming the tensor and the first value that is NaN or infinite.
pub fn check_finite<'a>(
    tensor: &str,
    values: impl IntoIterator<Item = &'a f32>,
) -> Result<(), RnnError> {
    match values
        .into_iter()
        .enumerate()
        .find(|(_, value)| !value.is_finite())
    {
        Some((idx, value)) => Err(RnnError::InvalidValue {
            tensor: tensor.to_owned(),
            reason: format!("value {idx} is {value}, not finite"),
        }),
        None => Ok(()),
    }
}

/// Rounds a weight matrix to a reduced precision for the products that read it
/// ([`ReducedMatrix::new`]).
///
/// # Errors
///
/// [`RnnError::InvalidValue`] naming `tensor` when the precision is int8 and a value is NaN or
/// infinite (no scale represents it).
pub fn reduce_weights(
    tensor: &str,
    w: ArrayView2<'_, f32>,
    precision: Precision,
) -> Result<ReducedMatrix, RnnError> {
    // Int8 refuses values that are not finite; name the first of them.
    if precision == Precision::Int8 {
        check_finite(tensor, w.iter())?;
    }
    ReducedMatrix::new(w, precision).ok_or_else(|| RnnError::InvalidValue {
        tensor: tensor.to_owned(),
        reason: format!("cannot be rounded to {}", precision.name()),
    })
}

/// A number no earlier call gave, for telling one model's parameters from
/// another's (a training tape names the parameters it was made with).
pub fn next_stamp() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Row `row` of an initial state `[L*D, B, H]`, or zeros.
pub fn initial_rows(
    state: Option<&Array3<f32>>,
    row: usize,
    batch: usize,
    size: usize,
) -> Array2<f32> {
    match state {
        Some(state) => state.slice(s![row, .., ..]).to_owned(),
        None => Array2::zeros((batch, size)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_is_taken_from_the_old_set_unless_a_parameter_it_reads_changed() {
        let matrix = |value: f32| Array2::from_elem((3, 4), value);
        let old = TrainConsts {
            values: vec![Arc::new(matrix(1.0)), Arc::new(matrix(2.0))],
            packed: vec![Arc::new(PackedMatrix::new(matrix(3.0).view()))],
        };
        let changed = [false, true];
        // Reads parameter 0 alone, unchanged: the old value, shared.
        let kept = TrainConsts::value(Some(&old), 0, &[0], &changed, || matrix(9.0));
        assert!(Arc::ptr_eq(&kept, &old.values[0]));
        // Reads parameter 1, changed: built again.
        let built = TrainConsts::value(Some(&old), 1, &[0, 1], &changed, || matrix(9.0));
        assert_eq!(*built, matrix(9.0));
        // No old set, or a mark missing: built.
        assert_eq!(
            *TrainConsts::value(None, 0, &[0], &changed, || matrix(9.0)),
            matrix(9.0)
        );
        assert_eq!(
            *TrainConsts::value(Some(&old), 0, &[2], &changed, || matrix(9.0)),
            matrix(9.0)
        );
        let packed = TrainConsts::packed(Some(&old), 0, &[], &changed, || {
            PackedMatrix::new(matrix(9.0).view())
        });
        assert!(Arc::ptr_eq(&packed, &old.packed[0]));
    }

    #[test]
    fn a_tied_change_is_told_from_a_copy_changed() {
        let old = vec![ArrayD::zeros(vec![2, 3]), ArrayD::zeros(vec![3])];
        let mut copy = old.clone();
        copy[0][[1, 2]] = 1.0;
        assert!(!tied_changed(&old, &copy, &[true, false]));
        assert!(tied_changed(&old, &copy, &[false, false]));
        let mut tied = old.clone();
        tied[1][[0]] = -0.0;
        assert!(tied_changed(&old, &tied, &[true, false]));
    }

    #[test]
    fn steps_are_built_in_order_on_one_thread_or_two() {
        let steps = [0, 2, 3, 5, 7];
        let build = |step: usize| -> Result<Vec<f32>, RnnError> {
            Ok((0..1000).map(|k| (step * 1000 + k) as f32).collect())
        };
        let one = build_steps(Threads::Fixed(1), &steps, 1 << 20, &build).unwrap();
        let two = build_steps(Threads::Fixed(2), &steps, 1 << 20, &build).unwrap();
        assert_eq!(one, two);
        assert_eq!(one.iter().map(|(step, _)| *step).collect::<Vec<_>>(), steps);
        assert!(one
            .iter()
            .all(|(step, values)| values[999] == (step * 1000 + 999) as f32));
        // The first failing step's error, in the steps' order, from either half.
        let failing = |step: usize| -> Result<usize, RnnError> {
            if step >= 3 {
                Err(RnnError::InvalidValue {
                    tensor: format!("W.{step}"),
                    reason: "fails".to_owned(),
                })
            } else {
                Ok(step)
            }
        };
        for threads in [Threads::Fixed(1), Threads::Fixed(2)] {
            match build_steps(threads, &steps, 1 << 20, &failing) {
                Err(RnnError::InvalidValue { tensor, .. }) => assert_eq!(tensor, "W.3"),
                other => panic!("expected step 3's error, got {other:?}"),
            }
        }
    }

    #[test]
    fn changes_are_found_by_bits_and_by_step() {
        let w = ArrayD::from_shape_fn(vec![3, 2, 2], |i| (i[0] * 4 + i[1] * 2 + i[2]) as f32);
        let a = ArrayD::from_elem(vec![2, 2], 1.0f32);
        let old = vec![w.clone(), a.clone()];
        assert!(!params_changed(&old, &old));
        assert_eq!(steps_changed(&old, &old, &[true, false], 3), [false; 3]);
        // One copy of the per-step parameter: that step alone.
        let mut new = old.clone();
        new[0][[1, 0, 1]] = 7.5;
        assert!(params_changed(&old, &new));
        assert_eq!(
            steps_changed(&old, &new, &[true, false], 3),
            [false, true, false]
        );
        // The tied parameter: every step. A zero's sign is a change.
        let mut new = old.clone();
        new[1][[1, 1]] = 0.0;
        new[1][[0, 0]] = 0.0;
        let mut signed = new.clone();
        signed[1][[0, 0]] = -0.0;
        assert_eq!(steps_changed(&old, &new, &[true, false], 3), [true; 3]);
        assert!(params_changed(&new, &signed));
        // Not contiguous: the same answers.
        let view = |arrays: &[ArrayD<f32>]| -> Vec<ArrayD<f32>> {
            arrays
                .iter()
                .map(|a| a.t().to_owned().reversed_axes())
                .collect()
        };
        assert!(!differs(old[0].t(), old[0].t()));
        assert!(differs(old[0].t(), new[0].t()) == params_changed(&old[..1], &new[..1]));
        assert!(!params_changed(&view(&old), &old));
    }

    #[test]
    fn finite_checks_find_the_first_bad_value() {
        let mut values = ArrayD::from_elem(vec![3, 700], 0.5f32);
        assert!(all_finite(values.as_slice().unwrap()));
        assert!(check_finite_array("w", values.view()).is_ok());
        values[[2, 650]] = f32::NEG_INFINITY;
        assert!(!all_finite(values.as_slice().unwrap()));
        let expected = "tensor `w`: value 2050 is -inf, not finite";
        assert_eq!(
            check_finite_array("w", values.view())
                .unwrap_err()
                .to_string(),
            expected
        );
        // Column-major: the index is still the logical one.
        let transposed = values.t();
        assert_eq!(
            check_finite_array("w", transposed.view())
                .unwrap_err()
                .to_string(),
            format!("tensor `w`: value {} is -inf, not finite", 650 * 3 + 2)
        );
    }

    #[test]
    fn check_shape_reports_both_shapes() {
        let error = check_shape("x", &[2, 5, 7], &[None, None, Some(8)]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "tensor `x`: expected shape [2, 5, 8], found [2, 5, 7]"
        );
        assert!(check_shape("x", &[2, 5, 8], &[None, None, Some(8)]).is_ok());
    }
}

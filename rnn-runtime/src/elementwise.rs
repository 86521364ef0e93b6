//! Elementwise operations on ndarray views with broadcasting operands
//! ([`Arg`]), the parameter-only values generated code computes once, and
//! small matrix helpers.
//!
//! The operation is a value ([`Unary`], [`Binary`]), not a closure, so
//! generated code instantiates nothing: each operation's loop is compiled
//! once, here.

use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Zip};

use crate::kernels::{
    exp_slice, gemm_packed, gemm_packed_add, gemm_packed_split, matmul, matmul_bt, sigmoid_slice,
    tanh_slice, transpose_slice, PackedMatrix,
};
use crate::ops::{specialise_binary, specialise_unary, Binary, Reduction, Unary};
use crate::workspace::Workspace;

/// An operand of an elementwise kernel.
#[derive(Debug, Clone)]
pub enum Arg<'a> {
    /// The output's own shape.
    Full(ArrayView2<'a, f32>),
    /// One row for every row of the output (a parameter vector); a row of
    /// length 1 stands for every element.
    Row(ArrayView1<'a, f32>),
    /// One value per row of the output, for every column.
    Col(ArrayView1<'a, f32>),
    /// One value for every element.
    Scalar(f32),
}

/// The operand as a 2-D view that broadcasts to the output: `[n, c]`,
/// `[1, c]`, `[n, 1]` or `[1, 1]` (`scalar` holds a scalar's value).
fn as_2d<'s>(arg: &'s Arg<'_>, scalar: &'s [f32; 1]) -> ArrayView2<'s, f32> {
    match arg {
        Arg::Full(view) => view.view(),
        Arg::Row(row) => row.view().insert_axis(Axis(0)),
        Arg::Col(col) => col.view().insert_axis(Axis(1)),
        Arg::Scalar(_) => ArrayView2::from_shape((1, 1), &scalar[..]).expect("one element"),
    }
}

fn scalar_of(arg: &Arg<'_>) -> [f32; 1] {
    match arg {
        Arg::Scalar(value) => [*value],
        _ => [0.0],
    }
}

/// `out = f(a)` elementwise.
pub fn map1(out: ArrayViewMut2<'_, f32>, a: Arg<'_>, f: impl Fn(f32) -> f32) {
    let sa = scalar_of(&a);
    Zip::from(out)
        .and_broadcast(as_2d(&a, &sa))
        .for_each(|o, &a| *o = f(a));
}

/// `out = f(a, b)` elementwise.
pub fn map2(out: ArrayViewMut2<'_, f32>, a: Arg<'_>, b: Arg<'_>, f: impl Fn(f32, f32) -> f32) {
    let (sa, sb) = (scalar_of(&a), scalar_of(&b));
    Zip::from(out)
        .and_broadcast(as_2d(&a, &sa))
        .and_broadcast(as_2d(&b, &sb))
        .for_each(|o, &a, &b| *o = f(a, b));
}

/// `out = f(a, b, c)` elementwise.
pub fn map3(
    out: ArrayViewMut2<'_, f32>,
    a: Arg<'_>,
    b: Arg<'_>,
    c: Arg<'_>,
    f: impl Fn(f32, f32, f32) -> f32,
) {
    let (sa, sb, sc) = (scalar_of(&a), scalar_of(&b), scalar_of(&c));
    Zip::from(out)
        .and_broadcast(as_2d(&a, &sa))
        .and_broadcast(as_2d(&b, &sb))
        .and_broadcast(as_2d(&c, &sc))
        .for_each(|o, &a, &b, &c| *o = f(a, b, c));
}

/// `out = op(a)` elementwise. The operation is a value, not a closure, so
/// generated code instantiates nothing: each operation's loop is compiled
/// once, here.
pub fn unary(mut out: ArrayViewMut2<'_, f32>, a: Arg<'_>, op: Unary) {
    // The transcendental functions have vectorised slice kernels: copy the
    // operand, then run the kernel over each (contiguous) row.
    let slice_kernel: Option<fn(&mut [f32])> = match op {
        Unary::Sigmoid => Some(sigmoid_slice),
        Unary::Tanh => Some(tanh_slice),
        Unary::Exp => Some(exp_slice),
        _ => None,
    };
    if let Some(kernel) = slice_kernel {
        map1(out.view_mut(), a, |a| a);
        for mut row in out.rows_mut() {
            match row.as_slice_mut() {
                Some(values) => kernel(values),
                None => row.mapv_inplace(|a| op.apply(a)),
            }
        }
        return;
    }
    specialise_unary!(op, |f| map1(out, a, f));
}

/// `out = op(a, b)` elementwise; see [`unary`].
pub fn binary(out: ArrayViewMut2<'_, f32>, a: Arg<'_>, b: Arg<'_>, op: Binary) {
    specialise_binary!(op, |f| map2(out, a, b, f));
}

/// `out = min(max(a, lo), hi)` elementwise.
pub fn clip(out: ArrayViewMut2<'_, f32>, a: Arg<'_>, lo: Arg<'_>, hi: Arg<'_>) {
    map3(out, a, lo, hi, |a, lo, hi| a.max(lo).min(hi));
}

/// A parameter-only value `op(a)` of shape `[rows, cols]`, computed once.
pub fn const_unary(rows: usize, cols: usize, a: Arg<'_>, op: Unary) -> Array2<f32> {
    let mut out = Array2::zeros((rows, cols));
    unary(out.view_mut(), a, op);
    out
}

/// A parameter-only value `op(a, b)`, computed once.
pub fn const_binary(rows: usize, cols: usize, a: Arg<'_>, b: Arg<'_>, op: Binary) -> Array2<f32> {
    let mut out = Array2::zeros((rows, cols));
    binary(out.view_mut(), a, b, op);
    out
}

/// A parameter-only value `clip(a, lo, hi)`, computed once.
pub fn const_clip(rows: usize, cols: usize, a: Arg<'_>, lo: Arg<'_>, hi: Arg<'_>) -> Array2<f32> {
    let mut out = Array2::zeros((rows, cols));
    clip(out.view_mut(), a, lo, hi);
    out
}

/// The only row of a `[1, n]` matrix, as a vector.
pub fn into_vector(matrix: Array2<f32>) -> Array1<f32> {
    matrix.row(0).to_owned()
}

/// `matrix @ vector` of parameters, computed once.
pub fn matvec(matrix: ArrayView2<'_, f32>, vector: ArrayView1<'_, f32>) -> Array1<f32> {
    let mut out = Array2::zeros((1, matrix.nrows()));
    matmul_bt(vector.insert_axis(Axis(0)), matrix, out.view_mut(), false);
    out.row(0).to_owned()
}

/// `acc += Σ_r g_r v_rᵀ`: the gradient of a matrix over a batch of rows, `g` `[n, m]` and `v`
/// `[n, k]` (either may be one row shared by the batch, which counts once per row of the other).
///
/// Over many rows (every step of a batch) this is one large product, `gᵀ v`, read in place
/// (the product kernel packs its operands block by block).
pub fn outer_acc(acc: ArrayViewMut2<'_, f32>, g: ArrayView2<'_, f32>, v: ArrayView2<'_, f32>) {
    match (g.nrows(), v.nrows()) {
        (a, b) if a == b => matmul(g.t(), v, acc, true),
        (1, _) => matmul(g.t(), column_sums(v).view(), acc, true),
        (_, 1) => matmul(column_sums(g).t(), v, acc, true),
        (a, b) => panic!("outer_acc: {a} rows against {b}"),
    }
}

/// [`outer_acc`] at one step on the packed product, for a sum formed anew
/// at each step (a per-step parameter's gradient): `acc += gᵀ v` with `vᵀ`
/// packed and `gᵀ` copied into buffers of `ws`, accumulated onto `acc` in
/// place. A row shared by the batch goes to [`outer_acc`].
pub fn outer_acc_step(
    ws: &Workspace,
    acc: ArrayViewMut2<'_, f32>,
    g: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
) {
    if g.nrows() != v.nrows() || g.nrows() == 1 {
        return outer_acc(acc, g, v);
    }
    packed_outer(ws, g, v, |gt, packed| gemm_packed(gt, packed, acc, true));
}

/// Runs `product` on `gᵀ` and `v` packed as the product's weights (`vᵀ`),
/// both in buffers of `ws`: the packed form of `gᵀ v` the `outer_acc_step`
/// family shares, each with its own start.
fn packed_outer(
    ws: &Workspace,
    g: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
    product: impl FnOnce(ArrayView2<'_, f32>, &PackedMatrix),
) {
    let floats = PackedMatrix::transposed_floats(v.nrows(), v.ncols());
    let packed = PackedMatrix::transposed_in(v, ws.take_buffer(floats));
    let mut gt = ws.take(g.ncols(), g.nrows());
    transpose_into(g, gt.view_mut(), false);
    product(gt.view(), &packed);
    ws.give(gt);
    ws.give_buffer(packed.into_buffer());
}

/// [`outer_acc_step`] for part `part` of a batch whose parts are summed
/// apart ([`Packing::parts`](crate::packing::Packing::parts)) into one
/// target: the first part's sum accumulates onto `acc`; a later part's is
/// formed from zero and then added, so that `acc` ends as the first part's
/// sum plus the second's, the bits of the two parts computed apart.
pub fn outer_acc_step_part(
    ws: &Workspace,
    acc: ArrayViewMut2<'_, f32>,
    g: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
    part: usize,
) {
    if part == 0 {
        return outer_acc_step(ws, acc, g, v);
    }
    if g.nrows() != v.nrows() || g.nrows() == 1 {
        return add_from_zero(ws, acc, |sum| outer_acc(sum, g, v));
    }
    packed_outer(ws, g, v, |gt, packed| gemm_packed_add(gt, packed, acc));
}

/// `acc += s`, with `s` the sum `form` makes in a zeroed buffer of `ws`:
/// a later part's sum formed apart, then added.
fn add_from_zero(
    ws: &Workspace,
    mut acc: ArrayViewMut2<'_, f32>,
    form: impl FnOnce(ArrayViewMut2<'_, f32>),
) {
    let mut sum = ws.take(acc.nrows(), acc.ncols());
    sum.fill(0.0);
    form(sum.view_mut());
    acc += &sum;
    ws.give(sum);
}

/// The rows of `a` before `split` and from it, for a batch of `rows`
/// rows; a row shared by the batch (`a` of another height) in both.
fn rows_at(
    a: ArrayView2<'_, f32>,
    rows: usize,
    split: usize,
) -> (ArrayView2<'_, f32>, ArrayView2<'_, f32>) {
    match a.nrows() == rows {
        true => a.split_at(Axis(0), split),
        false => (a, a),
    }
}

/// [`outer_acc_step`] writing rather than accumulating: `out = gᵀ v`,
/// whatever `out` held before, the bits of the sum onto zeros.
fn outer_into_step(
    ws: &Workspace,
    mut out: ArrayViewMut2<'_, f32>,
    g: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
) {
    if g.nrows() != v.nrows() || g.nrows() <= 1 {
        out.fill(0.0);
        return outer_acc(out, g, v);
    }
    packed_outer(ws, g, v, |gt, packed| gemm_packed(gt, packed, out, false));
}

/// A step's copy of a per-step parameter's gradient over a batch of two
/// parts, its rows before `split` and from it: `out = g₁ᵀ v₁ + g₂ᵀ v₂`,
/// each part's sum formed from zero and the two added, the bits of the two
/// parts computed apart ([`outer_acc_step_part`]) in one product. `split`
/// at the last row or past it is one part. `out` is written whole and its
/// previous contents ignored, so a copy needs no zeroing first (a recycled
/// gradient, [`Workspace::step_copies`]).
pub fn outer_into_step_split(
    ws: &Workspace,
    mut out: ArrayViewMut2<'_, f32>,
    g: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
    split: usize,
) {
    // A row shared by the batch (either operand's) counts in each part.
    let rows = g.nrows().max(v.nrows());
    if split >= rows {
        return outer_into_step(ws, out, g, v);
    }
    if g.nrows() != v.nrows() || split == 0 {
        let ((g1, g2), (v1, v2)) = (rows_at(g, rows, split), rows_at(v, rows, split));
        outer_into_step(ws, out.view_mut(), g1, v1);
        return outer_acc_step_part(ws, out, g2, v2, 1);
    }
    packed_outer(ws, g, v, |gt, packed| {
        gemm_packed_split(gt, packed, out, split)
    });
}

/// A step's copy of a per-step parameter's sum of rows, for part `part` of
/// a batch whose parts are summed apart into it (see
/// [`outer_acc_step_part`]): the first part's sum is written over the
/// copy's previous contents, a later part's formed from zero and added.
pub fn sum_rows_into_part(
    ws: &Workspace,
    mut acc: ArrayViewMut2<'_, f32>,
    a: ArrayView2<'_, f32>,
    part: usize,
) {
    match part {
        0 => {
            acc.fill(0.0);
            sum_rows(acc, a)
        }
        _ => add_from_zero(ws, acc, |sum| sum_rows(sum, a)),
    }
}

/// Adds one part's gradients (see
/// [`Packing::parts`](crate::packing::Packing::parts)) to those of the
/// parts before it, in order: the first part's are taken as they are.
pub fn add_part(grads: &mut Vec<ArrayD<f32>>, part: Vec<ArrayD<f32>>) {
    if grads.is_empty() {
        *grads = part;
        return;
    }
    for (grad, value) in grads.iter_mut().zip(&part) {
        *grad += value;
    }
}

/// [`outer_acc`] over many rows (every step's) for each `(acc, v)`
/// pair, on the packed product: `acc += (vᵀ g)ᵀ`, with `gᵀ` packed once
/// (row by row) for all pairs and `vᵀ` copied, in buffers of `ws`. Each
/// element is one sum over the rows in order, whatever the thread count.
pub fn outer_acc_rows(
    ws: &Workspace,
    g: ArrayView2<'_, f32>,
    pairs: &mut [(ArrayViewMut2<'_, f32>, ArrayView2<'_, f32>)],
) {
    let floats = PackedMatrix::transposed_floats(g.nrows(), g.ncols());
    let packed = PackedMatrix::transposed_in(g, ws.take_buffer(floats));
    for (acc, v) in pairs.iter_mut() {
        assert_eq!(g.nrows(), v.nrows(), "outer_acc_rows: rows of g and v");
        let mut vt = ws.take(v.ncols(), v.nrows());
        transpose_into(v.view(), vt.view_mut(), false);
        let mut out = ws.take(v.ncols(), g.ncols());
        gemm_packed(vt.view(), &packed, out.view_mut(), false);
        transpose_into(out.view(), acc.view_mut(), true);
        ws.give(vt);
        ws.give(out);
    }
    ws.give_buffer(packed.into_buffer());
}

/// `acc[0] += Σ_r a_r`: a batch's rows summed into one row.
pub fn sum_rows(mut acc: ArrayViewMut2<'_, f32>, a: ArrayView2<'_, f32>) {
    let mut acc = acc.row_mut(0);
    match acc.as_slice_mut() {
        // Contiguous rows as slices: a loop the compiler vectorises (a
        // broadcasting `+=` per row costs more than the sum for short rows).
        Some(sums) if a.ncols() == sums.len() => {
            for row in a.rows() {
                match row.as_slice() {
                    Some(row) => sums
                        .iter_mut()
                        .zip(row)
                        .for_each(|(sum, value)| *sum += value),
                    None => sums
                        .iter_mut()
                        .zip(&row)
                        .for_each(|(sum, value)| *sum += value),
                }
            }
        }
        _ => {
            for row in a.rows() {
                acc += &row;
            }
        }
    }
}

/// `out[r, 0] = op(a[r, ..])`: each row reduced to one value
/// ([`Reduction::apply`], so every executor gives the same bits).
pub fn reduce(mut out: ArrayViewMut2<'_, f32>, a: ArrayView2<'_, f32>, op: Reduction) {
    for (mut slot, row) in out.rows_mut().into_iter().zip(a.rows()) {
        slot[0] = op.apply(row.iter().copied());
    }
}

/// A parameter-only value `op(a)`, one element, computed once.
pub fn const_reduce(a: ArrayView1<'_, f32>, op: Reduction) -> Array1<f32> {
    Array1::from_elem(1, op.apply(a.iter().copied()))
}

/// `out[r, 0] = Σ_c a[r, c]`: each row's elements summed.
pub fn sum_elems(mut out: ArrayViewMut2<'_, f32>, a: ArrayView2<'_, f32>) {
    for (mut slot, row) in out.rows_mut().into_iter().zip(a.rows()) {
        slot[0] = row.sum();
    }
}

fn column_sums(a: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut sums = Array2::zeros((1, a.ncols()));
    sum_rows(sums.view_mut(), a);
    sums
}

/// A transposed copy in standard layout.
pub fn transpose(matrix: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut out = Array2::zeros((matrix.ncols(), matrix.nrows()));
    transpose_into(matrix, out.view_mut(), false);
    out
}

/// `out = aᵀ`, or `out += aᵀ` when `accumulate`: by the dispatched kernel
/// ([`transpose_slice`]) when both are contiguous, where assigning from a
/// transposed view would read a cache line of `a` per element (W5's weight
/// gradients spent 8 % of a training call that way).
pub fn transpose_into(a: ArrayView2<'_, f32>, mut out: ArrayViewMut2<'_, f32>, accumulate: bool) {
    assert_eq!(
        out.dim(),
        (a.ncols(), a.nrows()),
        "transpose_into: out is not the shape of aᵀ"
    );
    let (rows, cols) = a.dim();
    match (a.as_slice(), out.as_slice_mut()) {
        (Some(src), Some(dst)) => transpose_slice(src, rows, cols, dst, accumulate),
        _ if accumulate => out += &a.t(),
        _ => out.assign(&a.t()),
    }
}

#[cfg(test)]
mod tests {
    use ndarray::s;

    use super::*;

    /// A step's sum over two parts of the batch into a per-step copy: the
    /// first part's sum plus the second's, each formed from zero, as two
    /// halves computed apart and added give it.
    #[test]
    fn sums_over_two_parts_are_the_parts_formed_apart_and_added() {
        let mut rng = crate::init::SplitMix64::new(3);
        let g = crate::init::uniform(&mut rng, &[40, 30], 1.0)
            .into_dimensionality()
            .expect("2-d");
        let v = crate::init::uniform(&mut rng, &[40, 50], 1.0)
            .into_dimensionality()
            .expect("2-d");
        let ws = Workspace::new();
        let apart = |g: ArrayView2<'_, f32>, v: ArrayView2<'_, f32>| {
            let mut sum = Array2::zeros((30, 50));
            outer_acc_step(&ws, sum.view_mut(), g, v);
            sum
        };
        let split = 17;
        let expected = apart(g.slice(s![..split, ..]), v.slice(s![..split, ..]))
            + apart(g.slice(s![split.., ..]), v.slice(s![split.., ..]));
        // Written over whatever the copy held (a recycled gradient's).
        let mut acc = Array2::from_elem((30, 50), f32::NAN);
        outer_into_step_split(&ws, acc.view_mut(), g.view(), v.view(), split);
        assert_eq!(acc, expected);
        // One part (the split past the last row), and the first part empty.
        let mut acc = Array2::from_elem((30, 50), f32::NAN);
        outer_into_step_split(&ws, acc.view_mut(), g.view(), v.view(), 40);
        assert_eq!(acc, apart(g.view(), v.view()));
        let mut acc = Array2::from_elem((30, 50), f32::NAN);
        outer_into_step_split(&ws, acc.view_mut(), g.view(), v.view(), 0);
        assert_eq!(acc, apart(g.view(), v.view()));
        // A row shared by the batch counts once per row of each part.
        let shared = g.slice(s![..1, ..]);
        let expected =
            apart(shared, v.slice(s![..split, ..])) + apart(shared, v.slice(s![split.., ..]));
        let mut acc = Array2::from_elem((30, 50), f32::NAN);
        outer_into_step_split(&ws, acc.view_mut(), shared, v.view(), split);
        assert_eq!(acc, expected);
        // Sums of rows, the second part's onto the first's.
        let mut first = Array2::zeros((1, 50));
        sum_rows(first.view_mut(), v.slice(s![..split, ..]));
        let mut second = Array2::zeros((1, 50));
        sum_rows(second.view_mut(), v.slice(s![split.., ..]));
        let mut acc = Array2::from_elem((1, 50), f32::NAN);
        sum_rows_into_part(&ws, acc.view_mut(), v.slice(s![..split, ..]), 0);
        sum_rows_into_part(&ws, acc.view_mut(), v.slice(s![split.., ..]), 1);
        assert_eq!(acc, &first + &second);
        // Gradients of parts added in order.
        let mut grads = Vec::new();
        add_part(&mut grads, vec![first.clone().into_dyn()]);
        add_part(&mut grads, vec![second.clone().into_dyn()]);
        assert_eq!(grads, vec![(&first + &second).into_dyn()]);
    }

    #[test]
    fn outer_products_sum_over_rows_and_broadcast_a_shared_row() {
        let g = Array2::from_shape_vec((2, 2), vec![1.0, 2.0, 3.0, 4.0]).expect("shape");
        let v = Array2::from_shape_vec((2, 3), vec![1.0, 0.0, -1.0, 2.0, 1.0, 0.5]).expect("shape");
        let mut acc = Array2::from_elem((2, 3), 1.0);
        outer_acc(acc.view_mut(), g.view(), v.view());
        // acc[i][j] = 1 + g[0][i] v[0][j] + g[1][i] v[1][j]
        let expected = [[8.0, 4.0, 1.5], [11.0, 5.0, 1.0]];
        for i in 0..2 {
            for j in 0..3 {
                assert_eq!(acc[(i, j)], expected[i][j], "[{i}, {j}]");
            }
        }
        let shared = Array2::from_shape_vec((1, 2), vec![1.0, -1.0]).expect("shape");
        let mut acc = Array2::zeros((2, 3));
        outer_acc(acc.view_mut(), shared.view(), v.view());
        // column sums of v: [3, 1, -0.5]
        assert_eq!(acc.row(0).to_vec(), vec![3.0, 1.0, -0.5]);
        assert_eq!(acc.row(1).to_vec(), vec![-3.0, -1.0, 0.5]);
        let mut sums = Array2::zeros((2, 1));
        sum_elems(sums.view_mut(), v.view());
        assert_eq!(sums.column(0).to_vec(), vec![0.0, 3.5]);
    }

    /// The packed product over many rows against a float64 sum, for
    /// widths that fill panels and that leave one short, in a workspace
    /// whose buffers hold an earlier call's values.
    #[test]
    fn outer_products_over_many_rows_match_a_float64_sum() {
        let ws = Workspace::new();
        for (rows, m, k) in [(300, 128, 64), (77, 70, 3), (1, 5, 1)] {
            let g = Array2::from_shape_fn((rows, m), |(r, c)| ((r * 7 + c * 3) % 11) as f32 - 5.0);
            let v = Array2::from_shape_fn((rows, k), |(r, c)| ((r * 5 + c) % 13) as f32 * 0.25);
            let mut acc = Array2::from_elem((m, k), 1.0);
            let mut twice = Array2::zeros((m, k));
            outer_acc_rows(
                &ws,
                g.view(),
                &mut [(acc.view_mut(), v.view()), (twice.view_mut(), v.view())],
            );
            for i in 0..m {
                for j in 0..k {
                    let exact: f64 = (0..rows).map(|r| g[(r, i)] as f64 * v[(r, j)] as f64).sum();
                    // Integers and quarters: every partial sum is exact in f32.
                    assert_eq!(
                        acc[(i, j)] as f64,
                        1.0 + exact,
                        "[{i}, {j}] of {rows}x{m}x{k}"
                    );
                    assert_eq!(twice[(i, j)], acc[(i, j)] - 1.0);
                }
            }
        }
    }

    /// `transpose` and `transpose_into` against ndarray's transposed view,
    /// for shapes that fill blocks and that leave short ones, contiguous
    /// (the dispatched kernel) or not (ndarray's assignment).
    #[test]
    fn transposes_equal_the_transposed_view() {
        for (rows, cols) in [(1, 1), (3, 40), (16, 16), (37, 17), (100, 64)] {
            let a = Array2::from_shape_fn((rows, cols), |(r, c)| (r * 1000 + c) as f32);
            assert_eq!(transpose(a.view()), a.t(), "{rows}x{cols}");
            let start = Array2::from_shape_fn((cols, rows), |(r, c)| (r * 7 + c) as f32 * 0.5);
            let mut sum = start.clone();
            transpose_into(a.view(), sum.view_mut(), true);
            assert_eq!(sum, &start + &a.t(), "{rows}x{cols} accumulated");
            // A strided operand takes the general path.
            let wide = Array2::from_shape_fn((rows, 2 * cols), |(r, c)| (r + c) as f32);
            let every_other = wide.slice(ndarray::s![.., ..;2]);
            let mut out = Array2::zeros((cols, rows));
            transpose_into(every_other, out.view_mut(), false);
            assert_eq!(out, every_other.t(), "{rows}x{cols} strided");
        }
    }

    #[test]
    fn maps_broadcast_rows_columns_and_scalars() {
        let mut out = Array2::zeros((2, 3));
        let full = Array2::from_shape_fn((2, 3), |(r, c)| (r * 3 + c) as f32);
        let row = Array1::from(vec![10.0, 20.0, 30.0]);
        let col = Array1::from(vec![100.0, 200.0]);
        map3(
            out.view_mut(),
            Arg::Full(full.view()),
            Arg::Row(row.view()),
            Arg::Col(col.view()),
            |a, b, c| a + b + c,
        );
        assert_eq!(out[(1, 2)], 5.0 + 30.0 + 200.0);
        map2(
            out.view_mut(),
            Arg::Full(full.view()),
            Arg::Scalar(2.0),
            |a, b| a * b,
        );
        assert_eq!(out[(1, 1)], 8.0);
        let one = Array1::from(vec![3.0]);
        map1(out.view_mut(), Arg::Row(one.view()), |a| -a);
        assert_eq!(out[(0, 0)], -3.0);
    }
}

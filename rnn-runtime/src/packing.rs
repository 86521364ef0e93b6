//! The layout of a batch of variable-length sequences ([`Packing`]), where a
//! layer writes each step's rows ([`Placement`]), and the row copies that
//! move rows between the layouts.

use ndarray::{
    s, Array2, Array3, ArrayD, ArrayView1, ArrayView2, ArrayView3, ArrayViewMut1, ArrayViewMut2,
    Axis, IxDyn,
};

use crate::error::RnnError;
use crate::workspace::{Threads, Workspace, PARALLEL_MIN_WORK};

/// Steps below which a layer's steps never split over two threads
/// ([`Packing::split_steps`]).
const SPLIT_MIN_STEPS: usize = 32;

/// The rows of one part of a batch over every step ([`Packing::part_rows`]).
#[derive(Debug)]
pub enum PartRows<'a> {
    /// The rows in place: all of them for a batch of one part (or a row
    /// shared by the batch), a part's for one row per sequence.
    View(ArrayView2<'a, f32>),
    /// The part's rows, in a buffer of the workspace.
    Gathered(Array2<f32>),
}

impl PartRows<'_> {
    /// The rows, as a view.
    pub fn view(&self) -> ArrayView2<'_, f32> {
        match self {
            PartRows::View(view) => view.view(),
            PartRows::Gathered(rows) => rows.view(),
        }
    }

    /// Gives a gathered buffer back to `ws`.
    pub fn give(self, ws: &Workspace) {
        if let PartRows::Gathered(rows) = self {
            ws.give(rows);
        }
    }
}

/// The layout of a batch of variable-length sequences, as PyTorch's packed
/// sequences: sequences sorted by length (longest first, ties in batch
/// order), time-major, so the sequences still running at step `t` are the
/// first `batch_size(t)` rows of step `t`'s block of rows. Work at step
/// `t` is proportional to the sequences still running.
#[derive(Debug, Clone)]
pub struct Packing {
    batch: usize,
    steps: usize,
    /// `order[k]`: the batch index of the k-th longest sequence.
    order: Vec<usize>,
    /// Lengths in sorted order.
    sorted_lengths: Vec<usize>,
    /// `offsets[t]`: first packed row of step `t`; `offsets[max_len]` = total.
    offsets: Vec<usize>,
    /// For the training halves run in one pass ([`in_one_pass`](Self::in_one_pass)):
    /// the first half's rows in every step.
    halves: Option<usize>,
}

impl Packing {
    /// The packing of `batch` sequences of `steps` steps, cut to
    /// `seq_len` when given.
    ///
    /// # Errors
    ///
    /// `seq_len` of the wrong length, or a length above `steps`.
    pub fn new(seq_len: Option<&[usize]>, batch: usize, steps: usize) -> Result<Packing, RnnError> {
        let lengths: Vec<usize> = match seq_len {
            None => vec![steps; batch],
            Some(lengths) => {
                if lengths.len() != batch {
                    return Err(RnnError::ShapeMismatch {
                        tensor: "seq_len".to_owned(),
                        expected: vec![batch],
                        found: vec![lengths.len()],
                    });
                }
                if let Some((idx, len)) = lengths.iter().enumerate().find(|(_, len)| **len > steps)
                {
                    return Err(RnnError::InvalidValue {
                        tensor: "seq_len".to_owned(),
                        reason: format!("length {len} at index {idx} is above the {steps} time steps of the input"),
                    });
                }
                lengths.to_vec()
            }
        };
        let mut order: Vec<usize> = (0..batch).collect();
        order.sort_by_key(|b| std::cmp::Reverse(lengths[*b]));
        let sorted_lengths: Vec<usize> = order.iter().map(|b| lengths[*b]).collect();
        let max_len = sorted_lengths.first().copied().unwrap_or(0);
        let mut offsets = Vec::with_capacity(max_len + 1);
        let mut total = 0;
        for t in 0..max_len {
            offsets.push(total);
            total += sorted_lengths.iter().take_while(|len| **len > t).count();
        }
        offsets.push(total);
        Ok(Packing {
            batch,
            steps,
            order,
            sorted_lengths,
            offsets,
            halves: None,
        })
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Time steps of the padded input.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The longest length: steps actually computed.
    pub fn max_len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Sequences still running at step `t`.
    pub fn batch_size(&self, t: usize) -> usize {
        self.offsets[t + 1] - self.offsets[t]
    }

    /// First packed row of step `t`.
    pub fn offset(&self, t: usize) -> usize {
        self.offsets[t]
    }

    /// Steps per chunk of work ahead of the time loop, so that a chunk's
    /// rows of `row_bytes` each take about `bytes` at most (at least one
    /// step per chunk).
    pub fn chunk_steps(&self, row_bytes: usize, bytes: usize) -> usize {
        (bytes / (row_bytes.max(1) * self.batch.max(1))).max(1)
    }

    /// Rows of the largest chunk of `chunk` steps: the first, as sequences
    /// are sorted by length.
    pub fn chunk_rows(&self, chunk: usize) -> usize {
        self.offsets[chunk.min(self.max_len())]
    }

    /// Total packed rows: the sum of the lengths.
    pub fn rows(&self) -> usize {
        self.offsets[self.max_len()]
    }

    /// The lengths of the sequences `idx` (batch indices), in that order.
    pub fn lengths_of(&self, idx: &[usize]) -> Vec<usize> {
        let mut lengths = vec![0; self.batch];
        for (k, b) in self.order.iter().enumerate() {
            lengths[*b] = self.sorted_lengths[k];
        }
        idx.iter().map(|b| lengths[*b]).collect()
    }

    /// Two halves of the batch (batch indices, ascending) with about equal
    /// total length, when `threads` says a call of `macs_per_row`
    /// multiply-adds per valid step should run on two threads: `None` for
    /// one thread or a single sequence.
    pub fn halves(
        &self,
        threads: Threads,
        macs_per_row: usize,
    ) -> Option<(Vec<usize>, Vec<usize>)> {
        if self.batch < 2 || !threads.split(self.rows() / 2 * macs_per_row) {
            return None;
        }
        Some(self.by_length())
    }

    /// The halves a training call computes apart ([`halves`](Self::halves)'
    /// split), decided by the batch alone: when each half has
    /// 2²² multiply-adds at least (`Threads::Auto`'s threshold), whatever the number
    /// of threads, so that the gradients (a weight's is the first half's
    /// sum plus the second's) do not depend on it.
    pub fn training_halves(&self, macs_per_row: usize) -> Option<(Vec<usize>, Vec<usize>)> {
        if self.batch < 2 || self.rows() / 2 * macs_per_row < PARALLEL_MIN_WORK {
            return None;
        }
        Some(self.by_length())
    }

    /// The packing of this batch that computes the training halves `first`
    /// and `second` (of [`training_halves`](Self::training_halves)) in one
    /// pass, on one thread: in every step the first half's sequences, then
    /// the second's, each in its own half's order. A row's values do not
    /// depend on where it sits, so the products and passes run over every
    /// row at once, and a sum over the batch is formed over each half's
    /// block of rows apart ([`parts`](Self::parts)) and the two added, as
    /// the halves computed apart give it. `None` unless every sequence has
    /// the same length: otherwise a step's running rows would not be the
    /// first of its block.
    pub fn in_one_pass(&self, first: &[usize], second: &[usize]) -> Option<Packing> {
        if !self.uniform() || first.len() + second.len() != self.batch {
            return None;
        }
        Some(Packing {
            order: first.iter().chain(second).copied().collect(),
            halves: Some(first.len()),
            ..self.clone()
        })
    }

    /// The parts a sum over the batch is formed over apart: two for the
    /// halves in one pass ([`in_one_pass`](Self::in_one_pass)), else one.
    pub fn parts(&self) -> usize {
        match self.halves {
            Some(_) => 2,
            None => 1,
        }
    }

    /// The rows `lo..hi` of a step of `n` running rows that part `p` holds
    /// (see [`parts`](Self::parts)).
    pub fn part(&self, p: usize, n: usize) -> (usize, usize) {
        match (self.halves, p) {
            (None, _) => (0, n),
            (Some(h), 0) => (0, h.min(n)),
            (Some(h), _) => (h.min(n), n),
        }
    }

    /// The rows of part `p` (see [`parts`](Self::parts)) of a value over
    /// every packed row, step after step, or of one row per sequence:
    /// `all` itself for a single part (or a row shared by the batch), a
    /// part's rows of one per sequence in place, else the part's packed
    /// rows copied into a buffer of `ws`.
    pub fn part_rows<'a>(
        &self,
        ws: &Workspace,
        all: ArrayView2<'a, f32>,
        p: usize,
    ) -> PartRows<'a> {
        if self.halves.is_none() {
            return PartRows::View(all);
        }
        if all.nrows() == self.batch {
            // One row per sequence.
            let (lo, hi) = self.part(p, self.batch);
            return PartRows::View(all.slice_move(s![lo..hi, ..]));
        }
        if all.nrows() != self.rows() {
            // A row shared by the batch.
            return PartRows::View(all);
        }
        let block = |t: usize| {
            let (lo, hi) = self.part(p, self.batch_size(t));
            self.offsets[t] + lo..self.offsets[t] + hi
        };
        let rows = (0..self.max_len()).map(|t| block(t).len()).sum();
        let mut gathered = ws.take(rows, all.ncols());
        let mut next = 0;
        for t in 0..self.max_len() {
            let rows = block(t);
            gathered
                .slice_mut(s![next..next + rows.len(), ..])
                .assign(&all.slice(s![rows.clone(), ..]));
            next += rows.len();
        }
        PartRows::Gathered(gathered)
    }

    /// A sum's zeroed buffers of `rows × cols`, one per part (see
    /// [`parts`](Self::parts)), from `ws`; the second is empty for one part.
    pub fn sum_buffers(&self, ws: &Workspace, rows: usize, cols: usize) -> [Array2<f32>; 2] {
        let second = if self.parts() == 2 { rows } else { 0 };
        let mut buffers = [ws.take(rows, cols), ws.take(second, cols)];
        for buffer in &mut buffers {
            buffer.fill(0.0);
        }
        buffers
    }

    /// A gradient's zeroed accumulators of `shape`, one per part (see
    /// [`parts`](Self::parts)); the second is empty for one part.
    pub fn grad_parts(&self, shape: &[usize]) -> [ArrayD<f32>; 2] {
        let second = match self.parts() {
            2 => IxDyn(shape),
            _ => IxDyn(&vec![0; shape.len()]),
        };
        [ArrayD::zeros(IxDyn(shape)), ArrayD::zeros(second)]
    }

    /// A gradient from its parts' accumulators (see
    /// [`grad_parts`](Self::grad_parts)): the first part's plus the
    /// second's, as the two halves computed apart add theirs.
    pub fn sum_parts(&self, parts: [ArrayD<f32>; 2]) -> ArrayD<f32> {
        let [mut first, second] = parts;
        if self.parts() == 2 {
            first += &second;
        }
        first
    }

    /// The batch in two halves of about equal total length: longest first,
    /// each to the half with less work so far.
    fn by_length(&self) -> (Vec<usize>, Vec<usize>) {
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let (mut first_rows, mut second_rows) = (0, 0);
        for (k, b) in self.order.iter().enumerate() {
            if first_rows <= second_rows {
                first.push(*b);
                first_rows += self.sorted_lengths[k];
            } else {
                second.push(*b);
                second_rows += self.sorted_lengths[k];
            }
        }
        first.sort_unstable();
        second.sort_unstable();
        (first, second)
    }

    /// Whether each step of a one-direction layer should run on two
    /// threads, half of its columns each (see `split`), for a call of
    /// `macs_per_row` multiply-adds per valid step: when `threads` allows
    /// two for the work, and there are steps enough to pay for starting
    /// the second thread (not a single streaming step).
    pub fn split_steps(&self, threads: Threads, macs_per_row: usize) -> bool {
        self.max_len() >= SPLIT_MIN_STEPS && threads.split(self.rows() * macs_per_row)
    }

    /// `[B, T, n]` → packed `[rows, n]`.
    pub fn pack(&self, x: ArrayView3<'_, f32>) -> Array2<f32> {
        let width = x.shape()[2];
        let mut packed = Vec::with_capacity(self.rows() * width);
        for t in 0..self.max_len() {
            for &b in &self.order[..self.batch_size(t)] {
                extend_row(&mut packed, x.slice(s![b, t, ..]));
            }
        }
        Array2::from_shape_vec((self.rows(), width), packed).expect("one row per valid step")
    }

    /// Packed `[rows, n]` → `[B, T, n]`, zeros past each length: the layout
    /// the tests check [`write_step`](Self::write_step) against, and the
    /// output of a training forward (inference writes the padded output
    /// directly).
    pub fn unpack(&self, packed: ArrayView2<'_, f32>) -> Array3<f32> {
        let width = packed.ncols();
        let mut rank = vec![0; self.batch];
        for (k, &b) in self.order.iter().enumerate() {
            rank[b] = k;
        }
        let mut out = Vec::with_capacity(self.batch * self.steps * width);
        for &k in &rank {
            let len = self.sorted_lengths[k];
            for t in 0..len {
                extend_row(&mut out, packed.row(self.offsets[t] + k));
            }
            out.resize(out.len() + (self.steps - len) * width, 0.0);
        }
        Array3::from_shape_vec((self.batch, self.steps, width), out)
            .expect("every step of every sequence")
    }

    /// Packed rows with each sequence reversed within its own length, into
    /// `out` (same shape, e.g. a range of columns of a wider buffer): row
    /// `(t, k)` takes row `(len_k - 1 - t, k)`. Its own inverse.
    pub fn reverse_into(&self, packed: ArrayView2<'_, f32>, out: ArrayViewMut2<'_, f32>) {
        assert_eq!(packed.dim(), out.dim(), "reverse_into: shapes differ");
        self.gather_reversed(packed, 0, self.max_len(), out);
    }

    /// Writes the rows `[batch_size(t), n]` of step `t` (one per running
    /// sequence, in sorted order) into `out` at the rows `place` gives:
    /// [`Placement::Packed`] rows of step `t`, [`Placement::Reversed`] rows
    /// of step `len_k - 1 - t` of each sequence `k`, or, for a flattened
    /// `[B, T, n]` output ([`flat_steps`]), row `b·T + t` of batch index `b`
    /// (`b·T + len_k - 1 - t` reversed).
    pub fn write_step(
        &self,
        t: usize,
        rows: ArrayView2<'_, f32>,
        mut out: ArrayViewMut2<'_, f32>,
        place: Placement,
    ) {
        for (k, row) in rows.outer_iter().enumerate() {
            copy_row(out.row_mut(self.target_row(t, k, place)), row);
        }
    }

    /// The row of `out` (see [`write_step`](Self::write_step)) where the
    /// output of step `t` of the `k`-th sequence (in sorted order) goes.
    #[inline]
    pub fn target_row(&self, t: usize, k: usize, place: Placement) -> usize {
        let step = match place {
            Placement::Packed | Placement::Padded => t,
            Placement::Reversed | Placement::PaddedReversed => self.sorted_lengths[k] - 1 - t,
        };
        match place {
            Placement::Packed | Placement::Reversed => self.offsets[step] + k,
            Placement::Padded | Placement::PaddedReversed => self.order[k] * self.steps + step,
        }
    }

    /// Whether every sequence has the longest length. A backward
    /// direction then reads each chunk of its input in place
    /// ([`reversed_block`](Self::reversed_block)) instead of gathering it.
    pub fn uniform(&self) -> bool {
        self.sorted_lengths.first() == self.sorted_lengths.last()
    }

    /// For a [`uniform`](Self::uniform) packing, the packed rows that
    /// steps `start..end` of the sequences reversed read: those of times
    /// `max_len - end..max_len - start`, one contiguous block in time
    /// order, which is the reverse of step order.
    pub fn reversed_block(&self, start: usize, end: usize) -> std::ops::Range<usize> {
        debug_assert!(self.uniform() && start <= end && end <= self.max_len());
        let len = self.max_len();
        self.offsets[len - end]..self.offsets[len - start]
    }

    /// For a [`uniform`](Self::uniform) packing: the first row of step `t`
    /// of the sequences reversed within the block
    /// [`reversed_block`](Self::reversed_block) of a chunk of steps that
    /// ends at `end`.
    pub fn reversed_block_row(&self, t: usize, end: usize) -> usize {
        debug_assert!(self.uniform() && t < end && end <= self.max_len());
        self.offsets[end - 1 - t]
    }

    /// The packed rows of steps `start..end` of the sequences reversed
    /// (see [`reverse_into`](Self::reverse_into)), gathered from `packed`
    /// in time order into the first rows of `out`.
    pub fn gather_reversed(
        &self,
        packed: ArrayView2<'_, f32>,
        start: usize,
        end: usize,
        mut out: ArrayViewMut2<'_, f32>,
    ) {
        let base = self.offsets[start];
        for t in start..end {
            for k in 0..self.batch_size(t) {
                let source = self.sorted_lengths[k] - 1 - t;
                let row = packed.row(self.offsets[source] + k);
                copy_row(out.row_mut(self.offsets[t] - base + k), row);
            }
        }
    }

    /// `[B, n]` in batch order → sorted order.
    pub fn sort_rows(&self, rows: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut out = Array2::zeros(rows.raw_dim());
        for (k, b) in self.order.iter().enumerate() {
            out.row_mut(k).assign(&rows.row(*b));
        }
        out
    }

    /// Packed rows with each sequence reversed within its own length (see
    /// [`reverse_into`](Self::reverse_into)), as a new array.
    pub fn reversed(&self, packed: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut out = Array2::zeros(packed.raw_dim());
        self.reverse_into(packed, out.view_mut());
        out
    }

    /// `[B, n]` in sorted order → batch order, as a new array.
    pub fn unsort_rows(&self, sorted: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut out = Array2::zeros(sorted.raw_dim());
        self.unsort_rows_into(sorted, out.view_mut());
        out
    }

    /// `[B, n]` in sorted order → batch order, written into `out`.
    pub fn unsort_rows_into(&self, sorted: ArrayView2<'_, f32>, mut out: ArrayViewMut2<'_, f32>) {
        for (k, b) in self.order.iter().enumerate() {
            out.row_mut(*b).assign(&sorted.row(k));
        }
    }
}

/// Where a layer writes the rows of each step's output (see
/// [`Packing::write_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Packed rows in time order.
    Packed,
    /// Packed rows, the layer running over the sequences reversed (a
    /// backward direction): each row goes back to its time order.
    Reversed,
    /// The network's output `[B, T, n]`, flattened to `[B·T, n]`.
    Padded,
    /// As `Padded`, from a backward direction.
    PaddedReversed,
}

impl Placement {
    /// Whether the layer runs over the sequences reversed.
    pub fn reversed(self) -> bool {
        matches!(self, Placement::Reversed | Placement::PaddedReversed)
    }
}

/// A standard-layout `[B, T, n]` array as `[B·T, n]` rows (row `b·T + t`).
///
/// # Panics
///
/// If the array is not in standard layout (generated code passes arrays
/// it has just made).
pub fn flat_steps(array: &mut Array3<f32>) -> ArrayViewMut2<'_, f32> {
    let (batch, steps, width) = array.dim();
    array
        .view_mut()
        .into_shape_with_order((batch * steps, width))
        .expect("a new array is in standard layout")
}

/// `target = source` for one row: one slice copy when both are contiguous.
pub(crate) fn copy_row(mut target: ArrayViewMut1<'_, f32>, source: ArrayView1<'_, f32>) {
    match (target.as_slice_mut(), source.as_slice()) {
        (Some(target), Some(source)) => target.copy_from_slice(source),
        _ => target.assign(&source),
    }
}

/// Appends a row: one copy when it is contiguous.
fn extend_row(out: &mut Vec<f32>, row: ArrayView1<'_, f32>) {
    match row.as_slice() {
        Some(values) => out.extend_from_slice(values),
        None => out.extend(row.iter().copied()),
    }
}

/// Writes the parts of a batch computed apart back in batch order: index
/// `k` of `part` along `axis` goes to index `idx[k]` of `into`.
pub fn scatter(into: &mut Array3<f32>, axis: Axis, idx: &[usize], part: &Array3<f32>) {
    for (k, b) in idx.iter().enumerate() {
        into.index_axis_mut(axis, *b)
            .assign(&part.index_axis(axis, k));
    }
}

#[cfg(test)]
mod tests {
    use ndarray::s;

    use super::*;

    #[test]
    fn packing_sorts_by_length_and_round_trips() {
        let packing = Packing::new(Some(&[2, 0, 3, 1]), 4, 3).expect("valid");
        assert_eq!(packing.max_len(), 3);
        assert_eq!(
            (
                packing.batch_size(0),
                packing.batch_size(1),
                packing.batch_size(2)
            ),
            (3, 2, 1)
        );
        assert_eq!(packing.rows(), 6);
        let x = Array3::from_shape_fn((4, 3, 2), |(b, t, f)| (100 * b + 10 * t + f) as f32 + 1.0);
        let packed = packing.pack(x.view());
        // Step 0 holds sequences 2, 0, 3 (lengths 3, 2, 1).
        assert_eq!(packed.row(0)[0], x[(2, 0, 0)]);
        assert_eq!(packed.row(1)[0], x[(0, 0, 0)]);
        assert_eq!(packed.row(2)[0], x[(3, 0, 0)]);
        let unpacked = packing.unpack(packed.view());
        for b in 0..4 {
            for t in 0..3 {
                let valid = t < [2, 0, 3, 1][b];
                for f in 0..2 {
                    assert_eq!(unpacked[(b, t, f)], if valid { x[(b, t, f)] } else { 0.0 });
                }
            }
        }
    }

    /// The halves in one pass: each half's sequences in its own order, its
    /// rows of every step one block, which `part_rows` gathers step after
    /// step as the half's own packing holds them.
    #[test]
    fn halves_in_one_pass_keep_each_halfs_rows_together() {
        let packing = Packing::new(None, 5, 3).expect("valid");
        assert_eq!(packing.parts(), 1);
        assert_eq!(packing.part(0, 5), (0, 5));
        let (first, second) = (vec![0, 2, 4], vec![1, 3]);
        let one = packing.in_one_pass(&first, &second).expect("one length");
        assert_eq!(
            (one.parts(), one.part(0, 5), one.part(1, 5)),
            (2, (0, 3), (3, 5))
        );
        let x = Array3::from_shape_fn((5, 3, 2), |(b, t, f)| (100 * b + 10 * t + f) as f32);
        let packed = one.pack(x.view());
        assert_eq!(one.unpack(packed.view()), x);
        let ws = Workspace::new();
        for (p, half) in [(0, &first), (1, &second)] {
            let own = Packing::new(None, half.len(), 3).expect("valid");
            let expected = own.pack(x.select(Axis(0), half).view());
            let rows = one.part_rows(&ws, packed.view(), p);
            assert_eq!(rows.view(), expected.view(), "part {p}");
            rows.give(&ws);
            // One row per sequence: the part's rows, in place.
            let per_sequence = one.sort_rows(x.index_axis(Axis(1), 0));
            let rows = one.part_rows(&ws, per_sequence.view(), p);
            assert_eq!(rows.view(), x.index_axis(Axis(1), 0).select(Axis(0), half));
            // A row shared by the batch stays whole.
            let shared = Array2::from_elem((1, 2), 7.0);
            assert_eq!(one.part_rows(&ws, shared.view(), p).view(), shared.view());
        }
        // Sequences of several lengths do not run in one pass.
        let varied = Packing::new(Some(&[3, 2, 3, 1, 3]), 5, 3).expect("valid");
        assert!(varied.in_one_pass(&first, &second).is_none());
    }

    #[test]
    fn parts_buffers_add_up_in_order() {
        let one = Packing::new(None, 4, 2).expect("valid");
        let two = one.in_one_pass(&[0, 1], &[2, 3]).expect("one length");
        let ws = Workspace::new();
        assert_eq!(one.sum_buffers(&ws, 3, 2)[1].dim(), (0, 2));
        assert_eq!(two.sum_buffers(&ws, 3, 2)[1].dim(), (3, 2));
        assert!(two
            .sum_buffers(&ws, 3, 2)
            .iter()
            .all(|b| b.iter().all(|v| *v == 0.0)));
        let parts = |first: f32, second: f32| {
            let mut parts = two.grad_parts(&[2]);
            parts[0].fill(first);
            parts[1].fill(second);
            parts
        };
        assert_eq!(
            two.sum_parts(parts(1.5, 0.25)),
            ArrayD::from_elem(IxDyn(&[2]), 1.75)
        );
        assert_eq!(one.grad_parts(&[2, 3])[1].shape(), &[0, 0]);
        let mut single = one.grad_parts(&[2]);
        single[0].fill(1.5);
        assert_eq!(one.sum_parts(single), ArrayD::from_elem(IxDyn(&[2]), 1.5));
    }

    #[test]
    fn reverse_is_within_each_length_and_an_involution() {
        let packing = Packing::new(Some(&[3, 1]), 2, 3).expect("valid");
        let x = Array3::from_shape_fn((2, 3, 1), |(b, t, _)| (10 * b + t) as f32);
        let packed = packing.pack(x.view());
        let reverse = |rows: &Array2<f32>| {
            let mut out = Array2::from_elem(rows.raw_dim(), f32::NAN);
            packing.reverse_into(rows.view(), out.view_mut());
            out
        };
        let reversed = reverse(&packed);
        let unpacked = packing.unpack(reversed.view());
        assert_eq!(unpacked[(0, 0, 0)], 2.0);
        assert_eq!(unpacked[(0, 2, 0)], 0.0 + 0.0);
        assert_eq!(unpacked[(1, 0, 0)], 10.0);
        assert_eq!(reverse(&reversed), packed);
        // The reversed rows written back one step at a time are in time
        // order again (how a backward direction writes its outputs), and
        // in the padded layout they are the unpacked input.
        let mut back = Array2::from_elem(packed.raw_dim(), f32::NAN);
        let mut padded = Array3::zeros(x.raw_dim());
        let mut padded_forward = Array3::zeros(x.raw_dim());
        for t in 0..packing.max_len() {
            let rows = packing.offset(t)..packing.offset(t) + packing.batch_size(t);
            let forward = packed.slice(s![rows.clone(), ..]);
            let rows = reversed.slice(s![rows, ..]);
            packing.write_step(t, rows, back.view_mut(), Placement::Reversed);
            packing.write_step(t, rows, flat_steps(&mut padded), Placement::PaddedReversed);
            packing.write_step(
                t,
                forward,
                flat_steps(&mut padded_forward),
                Placement::Padded,
            );
        }
        assert_eq!(back, packed);
        // Gathered a chunk of steps at a time, the reversed rows are the same.
        for chunk in 1..=packing.max_len() {
            let mut gathered = Array2::from_elem(packed.raw_dim(), f32::NAN);
            for start in (0..packing.max_len()).step_by(chunk) {
                let end = (start + chunk).min(packing.max_len());
                let rows = packing.offset(start)..packing.offset(end);
                packing.gather_reversed(
                    packed.view(),
                    start,
                    end,
                    gathered.slice_mut(s![rows, ..]),
                );
            }
            assert_eq!(gathered, reversed, "chunks of {chunk} steps");
        }
        let unpacked = packing.unpack(packed.view());
        assert_eq!(padded, unpacked);
        assert_eq!(padded_forward, unpacked);
    }

    #[test]
    fn bad_lengths_are_typed_errors() {
        assert!(matches!(
            Packing::new(Some(&[1, 2]), 3, 4),
            Err(RnnError::ShapeMismatch { .. })
        ));
        let error = Packing::new(Some(&[1, 5]), 2, 4).unwrap_err();
        assert!(error.to_string().contains("length 5 at index 1"), "{error}");
    }
}

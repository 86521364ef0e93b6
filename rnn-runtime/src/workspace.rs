//! Buffers kept from one call to the next, and the model's thread setting.
//!
//! A call's buffers (input projections of every step, per-step values,
//! layer outputs) are megabytes for real workloads. Allocating them afresh
//! on every call costs page faults and zeroing of new pages, a sizeable
//! part of a call's run time; a model therefore keeps the buffers of its
//! earlier calls in a [`Workspace`] and takes them back on the next call.
//! Only what is returned to the caller is allocated anew.

use std::sync::{Mutex, PoisonError};

use ndarray::{s, Array2, ArrayD, IxDyn};

/// Free buffers of earlier calls, shared by the threads that call one model.
///
/// The pool holds at most the buffers of the largest call made so far (a
/// call gives back what it took), and the gradients given back for reuse
/// (at most two of a length, [`Workspace::give_copies`]); dropping or
/// cloning the model releases them (a clone starts empty).
#[derive(Default)]
pub struct Workspace {
    free: Mutex<Vec<Vec<f32>>>,
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Workspace {
        Workspace::default()
    }

    /// A `[rows, cols]` matrix in a free buffer of exactly that many
    /// elements if there is one, else in the smallest free buffer that
    /// holds it (a new one, of zeros, if none does). A reused buffer keeps
    /// values of an earlier call: generated code writes every element it
    /// reads.
    ///
    /// A call takes the same sizes as the call before it with the same
    /// shapes, so in a settled workspace each take finds a buffer of its
    /// own length, the one it gave back, and writes nothing: a buffer
    /// grown past what an earlier call wrote is zeroed first.
    pub fn take(&self, rows: usize, cols: usize) -> Array2<f32> {
        let len = rows * cols;
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            let exact = free
                .iter()
                .enumerate()
                .filter(|(_, buffer)| buffer.len() == len && len > 0)
                .min_by_key(|(_, buffer)| buffer.capacity())
                .map(|(idx, _)| idx);
            let best = exact.or_else(|| {
                free.iter()
                    .enumerate()
                    .filter(|(_, buffer)| buffer.capacity() >= len)
                    .min_by_key(|(_, buffer)| buffer.capacity())
                    .map(|(idx, _)| idx)
            });
            best.map(|idx| free.swap_remove(idx))
        };
        let mut buffer = reused.unwrap_or_default();
        // Shrinking keeps old values without a pass over them; growing
        // (within the capacity, or a new buffer) writes zeros.
        buffer.truncate(len);
        buffer.resize(len, 0.0);
        Array2::from_shape_vec((rows, cols), buffer).expect("the buffer has rows * cols elements")
    }

    /// A buffer of the pool as it is (any length and contents), for
    /// kernels that lay out their own data; give it back with
    /// [`give_buffer`](Self::give_buffer).
    pub fn take_buffer(&self, len: usize) -> Vec<f32> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, buffer)| buffer.capacity() >= len)
            .min_by_key(|(_, buffer)| buffer.capacity())
            .map(|(idx, _)| idx);
        best.map(|idx| free.swap_remove(idx)).unwrap_or_default()
    }

    /// Returns a buffer for later calls.
    pub fn give_buffer(&self, buffer: Vec<f32>) {
        if buffer.capacity() > 0 {
            self.free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(buffer);
        }
    }

    /// A copy of `rows` in a buffer of the pool.
    pub fn copy_of(&self, rows: ndarray::ArrayView2<'_, f32>) -> Array2<f32> {
        let mut copy = self.take(rows.nrows(), rows.ncols());
        copy.assign(&rows);
        copy
    }

    /// Returns a matrix's buffer for later calls.
    pub fn give(&self, matrix: Array2<f32>) {
        let (buffer, _) = matrix.into_raw_vec_and_offset();
        if buffer.capacity() == 0 {
            return;
        }
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(buffer);
    }

    /// An array of `shape` for a per-step parameter's gradient, whose
    /// copies (along the first axis) before `written` the caller writes
    /// whole, each at the step it belongs to (`outer_into_step_split`,
    /// `sum_rows_into_part`): a buffer of the pool (a gradient given back
    /// by [`give_copies`](Self::give_copies)) with only the copies from
    /// `written` on zeroed, those of steps that did not run, or a new one
    /// of zeros. For W6 this spares the zeroing of 8 MB per call.
    pub fn step_copies(&self, shape: &[usize], written: usize) -> ArrayD<f32> {
        let copies = shape.first().copied().unwrap_or(1);
        let per_copy: usize = shape.iter().skip(1).product();
        let mut all = self.take(copies, per_copy);
        all.slice_mut(s![written.min(copies).., ..]).fill(0.0);
        all.into_shape_with_order(IxDyn(shape))
            .expect("the buffer has the shape's elements")
    }

    /// Gives back the gradients of `grads` at the indices `which`, those
    /// made by [`step_copies`](Self::step_copies), for the next backward.
    /// At most two of one length are kept (one per half of a batch that
    /// two threads share), so that giving without taking cannot grow the
    /// pool without bound.
    pub fn give_copies(&self, grads: Vec<ArrayD<f32>>, which: &[usize]) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        for (idx, grad) in grads.into_iter().enumerate() {
            if !which.contains(&idx) || grad.is_empty() {
                continue;
            }
            let len = grad.len();
            if free.iter().filter(|buffer| buffer.len() == len).count() < 2 {
                let (buffer, _) = grad.into_raw_vec_and_offset();
                free.push(buffer);
            }
        }
    }

    /// Bytes held for later calls.
    pub fn held_bytes(&self) -> usize {
        let free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.iter().map(|buffer| buffer.capacity() * 4).sum()
    }
}

impl Clone for Workspace {
    /// An empty workspace: buffers are per model value.
    fn clone(&self) -> Workspace {
        Workspace::new()
    }
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("held_bytes", &self.held_bytes())
            .finish()
    }
}

/// How many threads one call of a model may use.
///
/// Work splits along independent parts of a network: halves of the batch,
/// the two directions of a bidirectional layer side by side, or, for a
/// batch too small to halve (streaming one sequence, say), the two halves
/// of each step's units, which trade their new states after every step
/// (`split`: layers whose units halve into multiples of 64). `Auto` (the
/// default) does so when a part has enough work to pay for starting a
/// thread and the machine has a second core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threads {
    /// Parallel where it pays, up to the available parallelism.
    #[default]
    Auto,
    /// Exactly this many at most (`Fixed(1)`: only the calling thread).
    Fixed(usize),
}

/// Multiply-adds per direction below which `Auto` stays on one thread:
/// handing half the work to the pool's worker and waiting for it has a
/// fixed cost, which only this much work per direction repays.
pub const PARALLEL_MIN_WORK: usize = 1 << 22;

impl Threads {
    /// Whether two independent parts of `work` multiply-adds each should
    /// run on two threads.
    pub fn split(self, work: usize) -> bool {
        match self {
            Threads::Fixed(threads) => threads >= 2,
            Threads::Auto => {
                work >= PARALLEL_MIN_WORK
                    && std::thread::available_parallelism().is_ok_and(|cores| cores.get() >= 2)
            }
        }
    }
}

/// Runs `a` and `b`, on two threads when `parallel`, and returns both
/// results. A panic in either is resumed on the calling thread.
///
/// `a` runs on the calling thread (whose caches hold what the call has
/// touched so far) and `b` on a worker of rayon's global pool, which stays
/// alive between calls: waking it costs several times less than spawning a
/// scoped thread per call, which would be a large part of a small call.
pub fn join<A: Send, B: Send>(
    parallel: bool,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if !parallel {
        let first = a();
        return (first, b());
    }
    let mut second = None;
    let first = rayon::in_place_scope(|scope| {
        scope.spawn(|_| second = Some(b()));
        a()
    });
    (first, second.expect("the scope ran the spawned half"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_best_fitting_and_new_ones_zeroed() {
        let workspace = Workspace::new();
        let mut big = workspace.take(10, 10);
        big.fill(7.0);
        let small = workspace.take(2, 2);
        let (big_ptr, small_ptr) = (big.as_ptr(), small.as_ptr());
        workspace.give(big);
        workspace.give(small);
        let again = workspace.take(1, 3);
        assert_eq!(again.as_ptr(), small_ptr, "the smallest buffer that fits");
        let large = workspace.take(5, 20);
        assert_eq!(large.as_ptr(), big_ptr);
        assert_eq!(large.len(), 100);
        let fresh = workspace.take(3, 3);
        assert!(fresh.iter().all(|value| *value == 0.0));
        assert_eq!(workspace.held_bytes(), 0);
    }

    #[test]
    fn step_copies_come_back_with_the_copies_of_steps_not_run_zeroed() {
        let workspace = Workspace::new();
        let fresh = workspace.step_copies(&[4, 2, 3], 4);
        assert_eq!(fresh.shape(), &[4, 2, 3]);
        assert!(fresh.iter().all(|value| *value == 0.0));
        let ptr = fresh.as_ptr();
        let mut grads = vec![ArrayD::from_elem(IxDyn(&[5]), 1.0), fresh];
        grads[1].fill(7.0);
        // Only the indices named come back.
        workspace.give_copies(grads, &[1]);
        assert_eq!(workspace.held_bytes(), 24 * 4);
        let again = workspace.step_copies(&[4, 2, 3], 3);
        assert_eq!(again.as_ptr(), ptr, "the recycled buffer");
        let copy = |t: usize| again.index_axis(ndarray::Axis(0), t).to_owned();
        // The copies the backward writes keep the old values until then.
        assert!((0..3).all(|t| copy(t).iter().all(|value| *value == 7.0)));
        assert!(copy(3).iter().all(|value| *value == 0.0));
        // At most two of one length are kept.
        for _ in 0..4 {
            workspace.give_copies(vec![ArrayD::zeros(IxDyn(&[4, 2, 3]))], &[0]);
        }
        assert_eq!(workspace.held_bytes(), 2 * 24 * 4);
    }

    #[test]
    fn join_returns_both_results_in_order_either_way() {
        for parallel in [false, true] {
            let (a, b) = join(parallel, || 1 + 1, || "two");
            assert_eq!((a, b), (2, "two"));
        }
        assert!(Threads::Fixed(2).split(0));
        assert!(!Threads::Fixed(1).split(usize::MAX));
        assert!(!Threads::Auto.split(10));
    }

    #[test]
    fn a_panic_in_either_half_reaches_the_caller_with_its_message() {
        let message = |payload: Box<dyn std::any::Any + Send>| {
            payload.downcast_ref::<&str>().map(|text| text.to_string())
        };
        for parallel in [false, true] {
            let second = std::panic::catch_unwind(|| {
                join(parallel, || 1, || -> i32 { panic!("second half") })
            });
            assert_eq!(message(second.unwrap_err()).as_deref(), Some("second half"));
            let first = std::panic::catch_unwind(|| {
                join(parallel, || -> i32 { panic!("first half") }, || 2)
            });
            assert_eq!(message(first.unwrap_err()).as_deref(), Some("first half"));
        }
    }
}

//! Truncated backpropagation through time: a long batch trained in
//! updates, the state carried forward from one to the next and the
//! gradient cut at each update's boundary.
//!
//! [`Tbptt`] is the option, TBPTT(k1, k2) as Sutskever's thesis states it:
//! each update takes `k1` new steps and backpropagates through the last
//! `k2` of them (`1 ≤ k2 ≤ k1`). [`Tbptt::updates`] cuts a batch into
//! [`Update`]s, each in two [`Window`]s:
//!
//! - `warm`, the first `k1 − k2` steps: run with the inference `forward`,
//!   carrying the state, with no tape; their outputs take no part in the
//!   loss, and no gradient reaches them.
//! - `train`, the last `k2` steps: run with `forward_train` from the state
//!   `warm` ends in, the loss over these steps only, then `backward`; the
//!   gradient stops at the state they start from.
//!
//! The last update takes the steps that are left, `n < k1` of them: it
//! trains the last `min(n, k2)` and warms up through the rest.
//!
//! ```text
//! let tbptt = Tbptt::new(50, 20)?;                // 50 new steps per update, 20 back
//! let mut state = model.initial_state(batch);
//! for update in tbptt.updates(x.view(), Some(&lengths))? {
//!     if let Some(warm) = &update.warm {          // no tape, no loss
//!         state = model.forward(warm.x, Some(&warm.lengths), Some(&state))?.into_state();
//!     }
//!     let train = &update.train;
//!     let (out, tape) = model.forward_train(train.x, Some(&train.lengths), Some(&state))?;
//!     let loss = loss::mse(out.y.view(), targets.slice(s![.., train.steps(), ..]), Some(&train.lengths))?;
//!     let grads = model.backward(&tape, loss.grad.view(), None)?; // nothing flows into the next update
//!     model.recycle(tape);
//!     optimizer.step(&mut model, &grads.params)?;
//!     state = out.into_state();                   // carried, as a constant
//! }
//! ```
//!
//! With `k2 = k1` there is no warm part: [`windows`] is that case, each
//! update a window of `k` steps. An update that covers the whole batch
//! with `k2 = k1` is full BPTT.
//!
//! Each part counts each sequence's valid steps in it: a sequence of
//! length `n` has `clamp(n, start, end) − start` valid steps in the part
//! `start..end`, so one that has ended before a part has length 0 in it,
//! and the generated code passes its state through unchanged and outputs
//! zeros there. A sequence that ends in the warm part contributes nothing
//! to that update's loss.
//!
//! A stream that starts a new sequence in some rows of the batch resets
//! those rows' state between two updates with [`reset_rows`], once per
//! tensor of the model's state type, before the update whose first step
//! is the new sequence's first:
//!
//! ```text
//! tbptt::reset_rows(&mut state.h, &starts)?; // starts[b]: row b begins a new sequence
//! tbptt::reset_rows(&mut state.c, &starts)?;
//! ```
//!
//! A reset happens between updates only, so new sequences start at
//! multiples of `k1`: one that starts inside an update would start from
//! the previous sequence's state.

use std::ops::Range;

use ndarray::{s, Array3, ArrayView3, Axis};
use rnn_runtime::{Result, RnnError};

use crate::loss::valid_lengths;

/// TBPTT(k1, k2): each update takes `k1` new steps and backpropagates
/// through the last `k2` of them (see the [module](self) for what the
/// loop does with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbptt {
    k1: usize,
    k2: usize,
}

impl Tbptt {
    /// `k1` new steps per update, the gradient through the last `k2` of
    /// them.
    ///
    /// # Errors
    ///
    /// `k1` is 0, or `k2` is 0 or above `k1`: an
    /// [`RnnError::InvalidValue`] naming `k1` or `k2` and its value.
    pub fn new(k1: usize, k2: usize) -> Result<Tbptt> {
        if k1 == 0 {
            return Err(RnnError::InvalidValue {
                tensor: "k1".to_owned(),
                reason: "an update needs at least one new step, found 0".to_owned(),
            });
        }
        if k2 == 0 || k2 > k1 {
            return Err(RnnError::InvalidValue {
                tensor: "k2".to_owned(),
                reason: format!("the steps back must be between 1 and k1 = {k1}, found {k2}"),
            });
        }
        Ok(Tbptt { k1, k2 })
    }

    /// The new steps of each update.
    pub fn k1(&self) -> usize {
        self.k1
    }

    /// The steps each update backpropagates through.
    pub fn k2(&self) -> usize {
        self.k2
    }

    /// Cuts `x` `[B, T, n]` (with its sequences' `lengths`, all `T` if
    /// none) into updates of `k1` steps, the last one shorter if `k1` does
    /// not divide `T`, each split into its warm and train parts.
    ///
    /// # Errors
    ///
    /// `lengths` are of the wrong size or above `T`.
    pub fn updates<'a>(
        &self,
        x: ArrayView3<'a, f32>,
        lengths: Option<&[usize]>,
    ) -> Result<Vec<Update<'a>>> {
        let (batch, time, _) = x.dim();
        let lengths = valid_lengths(lengths, batch, time)?;
        Ok((0..time)
            .step_by(self.k1)
            .map(|start| {
                let end = (start + self.k1).min(time);
                let split = end - (end - start).min(self.k2);
                Update {
                    warm: (split > start).then(|| window(x, &lengths, start..split)),
                    train: window(x, &lengths, split..end),
                }
            })
            .collect())
    }
}

/// One update of [`Tbptt::updates`]: the steps run without gradient, then
/// the steps trained.
#[derive(Debug, Clone)]
pub struct Update<'a> {
    /// The first `k1 − k2` steps, run with `forward` to carry the state
    /// (no tape, no loss); `None` when there are none (`k2 = k1`, or a last
    /// update of at most `k2` steps).
    pub warm: Option<Window<'a>>,
    /// The last `k2` steps (all of them in a last update of fewer), run
    /// with `forward_train` from the state `warm` ends in; the loss covers
    /// these steps only.
    pub train: Window<'a>,
}

impl Update<'_> {
    /// The update's steps in the whole batch, warm and train.
    pub fn steps(&self) -> Range<usize> {
        let start = self.warm.as_ref().unwrap_or(&self.train).start;
        start..self.train.steps().end
    }
}

/// One window of a batch: its steps of the input and each sequence's
/// number of valid steps in it.
#[derive(Debug, Clone)]
pub struct Window<'a> {
    /// The first step of the window in the whole batch.
    pub start: usize,
    /// The input at the window's steps, `[B, steps, n]`.
    pub x: ArrayView3<'a, f32>,
    /// Each sequence's valid steps in the window (0 once it has ended).
    pub lengths: Vec<usize>,
}

impl Window<'_> {
    /// The window's steps in the whole batch, to slice targets with.
    pub fn steps(&self) -> Range<usize> {
        self.start..self.start + self.x.dim().1
    }
}

/// Cuts `x` `[B, T, n]` (with its sequences' `lengths`, all `T` if none)
/// into windows of `steps` steps, the last one shorter if `steps` does not
/// divide `T`: TBPTT(k, k), the train parts of
/// [`Tbptt::new(steps, steps)`](Tbptt::new)'s updates.
///
/// # Errors
///
/// `steps` is 0, or `lengths` are of the wrong size or above `T`.
pub fn windows<'a>(
    x: ArrayView3<'a, f32>,
    lengths: Option<&[usize]>,
    steps: usize,
) -> Result<Vec<Window<'a>>> {
    if steps == 0 {
        return Err(RnnError::InvalidValue {
            tensor: "steps".to_owned(),
            reason: "a window needs at least one step".to_owned(),
        });
    }
    Ok(Tbptt::new(steps, steps)?
        .updates(x, lengths)?
        .into_iter()
        .map(|update| update.train)
        .collect())
}

/// Resets the rows of one state tensor `[layers × directions, B, n]` (a
/// field of a generated model's `…State`: `h`, `c`, …) whose `reset` is
/// true to zeros, the initial state of a new sequence (as the model's
/// `initial_state`); the other rows keep theirs.
///
/// # Errors
///
/// `reset` does not have one value per sequence (`B`).
pub fn reset_rows(state: &mut Array3<f32>, reset: &[bool]) -> Result<()> {
    let batch = state.dim().1;
    if reset.len() != batch {
        return Err(RnnError::ShapeMismatch {
            tensor: "reset".to_owned(),
            expected: vec![batch],
            found: vec![reset.len()],
        });
    }
    for (mut row, _) in state
        .axis_iter_mut(Axis(1))
        .zip(reset)
        .filter(|(_, &reset)| reset)
    {
        row.fill(0.0);
    }
    Ok(())
}

/// The steps `steps` of `x` and each sequence's valid steps among them.
fn window<'a>(x: ArrayView3<'a, f32>, lengths: &[usize], steps: Range<usize>) -> Window<'a> {
    Window {
        start: steps.start,
        x: x.slice_move(s![.., steps.clone(), ..]),
        lengths: lengths
            .iter()
            .map(|&length| length.clamp(steps.start, steps.end) - steps.start)
            .collect(),
    }
}

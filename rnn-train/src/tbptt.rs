//! Truncated backpropagation through time: a long batch cut into windows
//! of `steps` steps, each trained on its own, the state carried forward
//! from one window to the next and the gradient cut at the boundary
//! (k1 = k2 = `steps`).
//!
//! ```text
//! let mut state = model.initial_state(batch);
//! for window in tbptt::windows(x.view(), Some(&lengths), 50)? {
//!     let (out, tape) = model.forward_train(window.x, Some(&window.lengths), Some(&state))?;
//!     let loss = loss::mse(out.y.view(), targets.slice(s![.., window.steps(), ..]), Some(&window.lengths))?;
//!     let grads = model.backward(&tape, loss.grad.view(), None)?; // nothing flows into the last window
//!     model.recycle(tape);
//!     optimizer.step(&mut model, &grads.params)?;
//!     state = out.into_state();                                    // carried, as a constant
//! }
//! ```
//!
//! A sequence that has ended before a window has length 0 in it: the
//! generated code passes its state through unchanged, and its outputs
//! there are zero. A window that covers the whole batch is full BPTT.

use std::ops::Range;

use ndarray::{s, ArrayView3};
use rnn_runtime::{Result, RnnError};

use crate::loss::valid_lengths;

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
/// divide `T`.
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
    let (batch, time, _) = x.dim();
    let lengths = valid_lengths(lengths, batch, time)?;
    Ok((0..time)
        .step_by(steps)
        .map(|start| {
            let end = (start + steps).min(time);
            Window {
                start,
                x: x.slice_move(s![.., start..end, ..]),
                lengths: lengths
                    .iter()
                    .map(|&length| length.clamp(start, end) - start)
                    .collect(),
            }
        })
        .collect())
}

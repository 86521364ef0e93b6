//! Training for unroll models: what goes around a generated model's
//! `forward_train` and `backward`.
//!
//! - [`loss`]: mean squared error and softmax cross-entropy, masked by the
//!   sequences' lengths, each returning the loss and its gradient with
//!   respect to the outputs (the `dy` that `backward` takes).
//! - [`optim`]: SGD with momentum, Adam and AdamW, with PyTorch's update
//!   rules, stepping any model that implements [`rnn_runtime::Parameters`]
//!   (every model generated with gradients on).
//! - [`clip`]: gradient clipping by global norm and by value.
//! - [`schedule`]: learning-rate schedules (step decay, cosine, warm-up) as
//!   plain values a loop asks for the rate of a step.
//! - [`tbptt`]: truncated BPTT(k1, k2), a batch cut into updates of `k1`
//!   new steps that backpropagate through their last `k2`, the state
//!   carried forward and reset row by row when a new sequence starts.
//! - [`freeze`]: training some parameters, or some of a per-step
//!   parameter's copies, with the rest frozen (layer-wise training of
//!   unrolled algorithms).
//! - [`checkpoint`]: weights, optimizer state and step in one safetensors
//!   file; resuming gives the same bits as not stopping.
//!
//! A separate crate from `rnn-runtime` because serving a model needs none
//! of it: inference binaries do not compile optimizers.
//!
//! ```
//! use ndarray::{Array1, Array3};
//! use rnn_train::loss;
//! use rnn_train::optim::{Adam, Optimizer};
//!
//! rnn_macros::rnn! {
//!     gradients = true;
//!     network Tagger { input x: [3]; layer l = lstm(hidden = 4); unroll dynamic; }
//! }
//!
//! let mut model = Tagger::random(0);
//! let mut adam = Adam::new(1e-2);
//! let x = Array3::<f32>::ones((2, 5, 3));
//! let lengths = [5, 3];
//! let targets = Array1::from(vec![1_usize, 3]);
//! for _ in 0..3 {
//!     let (out, tape) = model.forward_train(x.view(), Some(&lengths), None)?;
//!     let loss = loss::cross_entropy_last(out.y.view(), targets.view(), Some(&lengths))?;
//!     let grads = model.backward(&tape, loss.grad.view(), None)?;
//!     model.recycle(tape);
//!     adam.step(&mut model, &grads.params)?;
//!     model.recycle_grads(grads.params); // written into by the next backward
//! }
//! assert_eq!(adam.steps(), 3);
//! # Ok::<(), rnn_runtime::RnnError>(())
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod clip;
pub mod freeze;
pub mod loss;
pub mod optim;
pub mod schedule;
pub mod tbptt;

pub use rnn_runtime::{Parameters, Result, RnnError};

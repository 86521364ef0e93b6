//! Run-time support for unroll: what the generated RNN code and the reference interpreter call.
//!
//! - [`TensorMap`]: named tensors loaded from (and saved to) safetensors files, with accessors
//!   that check names, dtypes and shapes.
//! - [`ops`]: the elementwise operations ([`ops::Unary`], [`ops::Binary`]) and the scalar
//!   definition of each.
//! - [`kernels`]: activations, soft thresholding and matrix products on `f32`.
//! - [`init`]: PyTorch's default initialisation from a seed, the same on every platform.
//! - [`RnnError`]: the one error type, for every problem with user data; nothing here panics on a
//!   bad file, a misshaped tensor or an out-of-range length.
//!
//! Arrays are [`ndarray`] arrays: views go in, owned arrays come out.
//!
//! ```
//! use ndarray::ArrayD;
//! use rnn_runtime::{RnnError, TensorMap};
//!
//! let mut weights = TensorMap::new();
//! weights.insert_f32("weight_ih_l0", ArrayD::zeros(vec![40, 8]));
//! let bytes = weights.to_bytes()?;
//!
//! let loaded = TensorMap::from_bytes(&bytes, "<memory>")?;
//! let error = loaded.f32_shaped("weight_ih_l0", &[40, 7]).unwrap_err();
//! assert!(matches!(error, RnnError::ShapeMismatch { .. }));
//! assert_eq!(
//!     error.to_string(),
//!     "tensor `weight_ih_l0`: expected shape [40, 7], found [40, 8]"
//! );
//! # Ok::<(), RnnError>(())
//! ```

#![warn(missing_docs)]

mod elementwise;
mod error;
mod fused;
pub mod init;
pub mod kernels;
pub mod layout;
mod loading;
mod model;
pub mod ops;
mod packing;
mod split;
mod tensor;
mod workspace;

pub use error::{Result, RnnError};
pub use loading::all_finite;
pub use model::{Model, Parameters, Train};
pub use tensor::{Tensor, TensorMap};
pub use workspace::Threads;

/// Includes the Rust that `rnn_dsl::compile_files` wrote for a model into
/// `OUT_DIR`: `include_model!("tagger")` for `models/tagger.rnn`.
///
/// ```text
/// rnn_runtime::include_model!("tagger");
/// let model = Tagger::random(0);
/// ```
#[macro_export]
macro_rules! include_model {
    ($name:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $name, ".rs"));
    };
}

/// The `ndarray` version the runtime (and generated code) uses.
pub use ndarray;

/// Items that generated code needs but users should not name.
///
/// Nothing here is covered by semantic versioning.
#[doc(hidden)]
pub mod __private;

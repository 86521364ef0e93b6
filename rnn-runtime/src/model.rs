//! The interface every generated model implements, for code that handles
//! models by name rather than by type (tools, tests, serving).

use ndarray::{ArrayViewD, ArrayViewMutD};

use crate::error::Result;
use crate::tensor::TensorMap;
use crate::workspace::Threads;

/// A compiled network, driven by named tensors.
///
/// Generated types also have typed `forward` methods; this trait is the
/// uniform, name-based door: inputs as `rnnc run` takes them (each input by
/// its name, `seq_len`, initial states `h0`, `c0`, …, `steps` for a
/// network without per-step input), outputs `y` and the final states
/// (`h_n`, `c_n`, …).
pub trait Model: Send + Sync {
    /// Builds the model from named weights (PyTorch `state_dict` names).
    ///
    /// # Errors
    ///
    /// A weight is missing, not floating point, or misshaped.
    fn from_weights(weights: &TensorMap) -> Result<Self>
    where
        Self: Sized;

    /// Runs the model on named inputs.
    ///
    /// # Errors
    ///
    /// An input is missing or misshaped, or a length is out of range.
    fn run(&self, inputs: &TensorMap) -> Result<TensorMap>;

    /// Sets how many threads one call may use; results do not depend on
    /// it (see [`Threads`]).
    fn set_threads(&mut self, threads: Threads);
}

/// A compiled network with training code (generated with gradients on),
/// driven by named tensors.
pub trait Train: Model {
    /// Runs the model forward and backward on named inputs (as
    /// [`Model::run`]), with `seeds` the loss's gradients with respect to
    /// the outputs, named as the outputs (`y`, `h_n`, …; a missing one is
    /// zero). Returns the outputs, and `grad_<name>` for every parameter
    /// (PyTorch's names), input and initial state (`grad_h0`): the names
    /// `rnnc grad` writes.
    ///
    /// # Errors
    ///
    /// As [`Model::run`], or a seed misshaped or not finite.
    fn run_gradients(&self, inputs: &TensorMap, seeds: &TensorMap) -> Result<TensorMap>;
}

/// A model's trainable parameters by name, for optimizers and checkpoints
/// (implemented by every model generated with gradients on).
pub trait Parameters {
    /// The parameters, by PyTorch's names, in the order of the gradients'
    /// `params` (the generated `…Grads::NAMES`).
    fn params(&self) -> Vec<(&'static str, ArrayViewD<'_, f32>)>;

    /// Changes the parameters: `update` gets each one by name, mutably.
    ///
    /// # Errors
    ///
    /// A parameter made non-finite: the model is left unchanged.
    fn update_params(&mut self, update: &mut dyn FnMut(&str, ArrayViewMutD<'_, f32>))
        -> Result<()>;
}

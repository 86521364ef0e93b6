//! Training a part of a model: some parameters, or some of a per-step
//! parameter's copies, with the rest frozen.
//!
//! [`Trainable`] names what an optimizer may change: whole parameters, and
//! ranges of copies of per-step ones (rows of their first axis, `W[k]` for
//! steps `k` in the range). [`Trainable::select`] gives a view of a model
//! holding only those ([`Selected`], itself [`Parameters`]), and
//! [`Selected::grads`] the matching slices of a full set of gradients; an
//! optimizer stepped on the two changes nothing else, and its state
//! (momentum, Adam's averages) covers only what is trained.
//!
//! Layer-wise training of an unrolled algorithm (LISTA, Gregor & LeCun
//! 2010; LISTA-CP, Chen et al. 2018) grows the network a step at a time:
//! train step `k`'s copies alone, then every step so far at a lower rate.
//!
//! ```
//! use rnn_train::freeze::Trainable;
//! use rnn_train::optim::{Adam, Optimizer};
//!
//! rnn_macros::rnn! {
//!     gradients = true;
//!     cell lista(y: [M]) -> x: [N] {
//!         param A: [M, N];
//!         param W: [M, N] per step;
//!         param theta: [N] per step;
//!         x = soft_threshold(x + W^T @ (y - A @ x), theta);
//!     }
//!     network Lista { context y: [3]; layer solver = lista(N = 4); unroll static 3; }
//! }
//!
//! let mut model = Lista::random(0);
//! let y = ndarray::Array2::<f32>::ones((2, 3));
//! let (out, tape) = model.forward_train(y.view(), None, None)?;
//! let grads = model.backward(&tape, out.y.view(), None)?;
//! // Step 1's copies alone; `A` and steps 0 and 2 stay as they are.
//! // Generated models name a layer's parameters `<name>_l<k>`.
//! let only_step_1 = Trainable::new().copies("W_l0", 1..2).copies("theta_l0", 1..2);
//! let before = model.to_weights();
//! let mut selected = only_step_1.select(&mut model)?;
//! let part = selected.grads(&grads.params)?;
//! Adam::new(1e-2).step(&mut selected, &part)?;
//! let after = model.to_weights();
//! assert_eq!(before.f32("A_l0")?, after.f32("A_l0")?);
//! assert_ne!(before.f32("W_l0")?, after.f32("W_l0")?);
//! # Ok::<(), rnn_runtime::RnnError>(())
//! ```

use std::ops::Range;

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, Slice};
use rnn_runtime::{Parameters, Result, RnnError};

/// What an optimizer may change of a model: whole parameters and ranges of
/// per-step parameters' copies, by PyTorch's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trainable {
    parts: Vec<(String, Option<Range<usize>>)>,
}

impl Trainable {
    /// Nothing yet: add parameters with [`Trainable::param`] and
    /// [`Trainable::copies`].
    pub fn new() -> Trainable {
        Trainable::default()
    }

    /// The whole parameter `name`.
    pub fn param(mut self, name: &str) -> Trainable {
        self.parts.push((name.to_owned(), None));
        self
    }

    /// The copies `steps` of the per-step parameter `name` (rows of its
    /// first axis).
    pub fn copies(mut self, name: &str, steps: Range<usize>) -> Trainable {
        self.parts.push((name.to_owned(), Some(steps)));
        self
    }

    /// The view of `model` an optimizer steps to change only what is
    /// trainable.
    ///
    /// # Errors
    ///
    /// A name `model` lacks ([`RnnError::MissingTensor`]), a parameter
    /// named twice, or a range of copies empty or past the parameter's
    /// first axis ([`RnnError::InvalidValue`] naming the parameter).
    pub fn select<'m>(&self, model: &'m mut dyn Parameters) -> Result<Selected<'m>> {
        let params: Vec<(&'static str, Vec<usize>)> = model
            .params()
            .into_iter()
            .map(|(name, param)| (name, param.shape().to_vec()))
            .collect();
        let mut parts = Vec::with_capacity(self.parts.len());
        for (name, steps) in &self.parts {
            let Some(index) = params.iter().position(|(param, _)| param == name) else {
                return Err(RnnError::MissingTensor {
                    tensor: name.clone(),
                    available: params.iter().map(|(name, _)| (*name).to_owned()).collect(),
                });
            };
            if parts.iter().any(|part: &Part| part.index == index) {
                return Err(invalid(name, "is named twice".to_owned()));
            }
            if let Some(steps) = steps {
                let copies = params[index].1.first().copied().unwrap_or(0);
                if steps.is_empty() || steps.end > copies {
                    return Err(invalid(
                        name,
                        format!(
                            "copies {}..{} asked for, but it has {copies} along its first axis",
                            steps.start, steps.end
                        ),
                    ));
                }
            }
            parts.push(Part {
                index,
                name: params[index].0,
                steps: steps.clone(),
            });
        }
        parts.sort_by_key(|part| part.index);
        Ok(Selected { model, parts })
    }
}

fn invalid(name: &str, reason: String) -> RnnError {
    RnnError::InvalidValue {
        tensor: name.to_owned(),
        reason: format!("trainable: {reason}"),
    }
}

#[derive(Debug, Clone)]
struct Part {
    /// The parameter's position in the model's `params()`.
    index: usize,
    name: &'static str,
    steps: Option<Range<usize>>,
}

impl Part {
    fn slice<'a>(&self, view: ArrayViewD<'a, f32>) -> ArrayViewD<'a, f32> {
        match &self.steps {
            Some(steps) => view.slice_axis_move(Axis(0), Slice::from(steps.clone())),
            None => view,
        }
    }
}

/// A model seen through a [`Trainable`]: its parameters are the trainable
/// parts, in the model's order.
pub struct Selected<'m> {
    model: &'m mut dyn Parameters,
    parts: Vec<Part>,
}

impl std::fmt::Debug for Selected<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selected")
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

impl Selected<'_> {
    /// The trainable parts of `grads`, a gradient per parameter of the
    /// whole model (a generated model's `…Grads::params`), in the order of
    /// [`Selected`]'s parameters.
    ///
    /// # Errors
    ///
    /// `grads` not one per parameter of the model, or one shaped unlike
    /// its parameter ([`RnnError::ShapeMismatch`] naming `grad_<name>`).
    pub fn grads(&self, grads: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        let params = self.model.params();
        if grads.len() != params.len() {
            return Err(RnnError::ShapeMismatch {
                tensor: "grads".to_owned(),
                expected: vec![params.len()],
                found: vec![grads.len()],
            });
        }
        for ((name, param), grad) in params.iter().zip(grads) {
            if param.shape() != grad.shape() {
                return Err(RnnError::ShapeMismatch {
                    tensor: format!("grad_{name}"),
                    expected: param.shape().to_vec(),
                    found: grad.shape().to_vec(),
                });
            }
        }
        Ok(self
            .parts
            .iter()
            .map(|part| part.slice(grads[part.index].view()).to_owned())
            .collect())
    }
}

impl Parameters for Selected<'_> {
    fn params(&self) -> Vec<(&'static str, ArrayViewD<'_, f32>)> {
        let all = self.model.params();
        self.parts
            .iter()
            .map(|part| (part.name, part.slice(all[part.index].1.clone())))
            .collect()
    }

    fn update_params(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, f32>),
    ) -> Result<()> {
        let parts = &self.parts;
        self.model.update_params(&mut |name, view| {
            if let Some(part) = parts.iter().find(|part| part.name == name) {
                let view = match &part.steps {
                    Some(steps) => view.slice_axis_move(Axis(0), Slice::from(steps.clone())),
                    None => view,
                };
                update(name, view);
            }
        })
    }
}

#[cfg(test)]
mod tests;

//! Optimizers with PyTorch's update rules (`torch.optim.SGD`, `Adam`,
//! `AdamW`, single-tensor path), stepping a model by its named parameters.
//!
//! A step is all or nothing: gradients of the wrong number or shape, or
//! holding a NaN or an infinity, are a typed error naming the tensor, and
//! then neither the model nor the optimizer's state has changed.

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Dimension, Zip};
use rnn_runtime::{Parameters, Result, RnnError, TensorMap};

/// An optimizer: updates a model's parameters from their gradients.
pub trait Optimizer {
    /// One update of every parameter of `model` from `grads`, one per
    /// parameter in the order of [`Parameters::params`] (a generated
    /// model's `…Grads::params`).
    ///
    /// # Errors
    ///
    /// A gradient missing, misshaped or non-finite ([`RnnError::ShapeMismatch`],
    /// [`RnnError::InvalidValue`] naming `grad_<parameter>`), a state made
    /// for another model, or a parameter made non-finite: the model and
    /// the optimizer are left unchanged.
    fn step(&mut self, model: &mut dyn Parameters, grads: &[ArrayD<f32>]) -> Result<()>;

    /// How many steps have been taken.
    fn steps(&self) -> u64;

    /// The learning rate of the next step.
    fn lr(&self) -> f64;

    /// Sets the learning rate of the next steps (a schedule's value).
    fn set_lr(&mut self, lr: f64);

    /// The state a resumed run needs, as named tensors: `<slot>.<parameter>`
    /// with PyTorch's slot names (`exp_avg`, `exp_avg_sq`, `momentum_buffer`)
    /// and `step`.
    fn state(&self) -> TensorMap;

    /// Restores a state written by [`Optimizer::state`] for a model with
    /// `params`.
    ///
    /// # Errors
    ///
    /// A tensor missing or misshaped, naming it: the optimizer is left
    /// unchanged.
    fn load_state(&mut self, state: &TensorMap, params: &[(&str, Vec<usize>)]) -> Result<()>;
}

/// Stochastic gradient descent with momentum, as `torch.optim.SGD`.
#[derive(Debug, Clone)]
pub struct Sgd {
    /// The learning rate.
    pub lr: f64,
    /// The momentum factor (0: plain SGD, no state).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    slots: Slots,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Sgd {
        Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            slots: Slots::default(),
        }
    }

    /// With momentum `momentum`.
    pub fn momentum(mut self, momentum: f64) -> Sgd {
        self.momentum = momentum;
        self
    }

    /// With an L2 penalty `weight_decay`.
    pub fn weight_decay(mut self, weight_decay: f64) -> Sgd {
        self.weight_decay = weight_decay;
        self
    }

    /// With Nesterov momentum.
    pub fn nesterov(mut self, nesterov: bool) -> Sgd {
        self.nesterov = nesterov;
        self
    }

    fn slot_names(&self) -> &'static [&'static str] {
        if self.momentum == 0.0 {
            &[]
        } else {
            &["momentum_buffer"]
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, model: &mut dyn Parameters, grads: &[ArrayD<f32>]) -> Result<()> {
        let lr = self.lr as f32;
        let momentum = self.momentum as f32;
        let dampening = (1.0 - self.dampening) as f32;
        let decay = self.weight_decay as f32;
        let nesterov = self.nesterov;
        let names = self.slot_names();
        self.slots
            .step(names, model, grads, |t, old, new, mut param, grad| {
                // PyTorch's `d = g + decay p`, its momentum buffer, and
                // the step, one element at a time.
                let direction = |g: f32, p: f32| if decay != 0.0 { g + decay * p } else { g };
                match (old.first(), new.first_mut()) {
                    (Some(old), Some(new)) => {
                        Zip::from(&mut param).and(old).and(new).and(&grad).for_each(
                            |p, &b, buf, &g| {
                                let d = direction(g, *p);
                                *buf = if t == 1 {
                                    d
                                } else {
                                    momentum * b + dampening * d
                                };
                                let d = if nesterov { d + momentum * *buf } else { *buf };
                                *p -= lr * d;
                            },
                        )
                    }
                    _ => Zip::from(&mut param)
                        .and(&grad)
                        .for_each(|p, &g| *p -= lr * direction(g, *p)),
                }
            })
    }

    fn steps(&self) -> u64 {
        self.slots.step
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn state(&self) -> TensorMap {
        self.slots.to_tensors(self.slot_names())
    }

    fn load_state(&mut self, state: &TensorMap, params: &[(&str, Vec<usize>)]) -> Result<()> {
        self.slots = Slots::from_tensors(state, self.slot_names(), params)?;
        Ok(())
    }
}

/// Adam, as `torch.optim.Adam`, or with decoupled weight decay AdamW, as
/// `torch.optim.AdamW`.
#[derive(Debug, Clone)]
pub struct Adam {
    /// The learning rate.
    pub lr: f64,
    /// The decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// The weight decay: an L2 penalty added to the gradient (Adam), or
    /// the parameter shrunk by `lr * weight_decay` (AdamW).
    pub weight_decay: f64,
    /// AdamW: weight decay decoupled from the gradient.
    pub decoupled: bool,
    slots: Slots,
}

impl Adam {
    /// Adam with learning rate `lr` and PyTorch's defaults: betas (0.9,
    /// 0.999), eps 1e-8, no weight decay.
    pub fn new(lr: f64) -> Adam {
        Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            slots: Slots::default(),
        }
    }

    /// AdamW with learning rate `lr` and PyTorch's defaults: betas (0.9,
    /// 0.999), eps 1e-8, weight decay 0.01.
    pub fn adamw(lr: f64) -> Adam {
        Adam {
            weight_decay: 0.01,
            decoupled: true,
            ..Adam::new(lr)
        }
    }

    /// With decay rates `betas`.
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Adam {
        self.betas = (beta1, beta2);
        self
    }

    /// With weight decay `weight_decay`.
    pub fn weight_decay(mut self, weight_decay: f64) -> Adam {
        self.weight_decay = weight_decay;
        self
    }

    /// With `eps` added to the denominator.
    pub fn eps(mut self, eps: f64) -> Adam {
        self.eps = eps;
        self
    }
}

const ADAM_SLOTS: &[&str] = &["exp_avg", "exp_avg_sq"];

impl Optimizer for Adam {
    fn step(&mut self, model: &mut dyn Parameters, grads: &[ArrayD<f32>]) -> Result<()> {
        let (beta1, beta2) = self.betas;
        let (lr, eps, decay, decoupled) =
            (self.lr, self.eps as f32, self.weight_decay, self.decoupled);
        self.slots
            .step(ADAM_SLOTS, model, grads, |t, old, new, mut param, grad| {
                // The scalars in float64 and the tensors in float32, as PyTorch.
                let bias1 = 1.0 - beta1.powi(t as i32);
                let bias2_sqrt = (1.0 - beta2.powi(t as i32)).sqrt() as f32;
                let step_size = (lr / bias1) as f32;
                let (w1, b2, w2) = ((1.0 - beta1) as f32, beta2 as f32, (1.0 - beta2) as f32);
                let (shrink, coupled) = match (decay != 0.0, decoupled) {
                    (true, true) => ((1.0 - lr * decay) as f32, 0.0),
                    (true, false) => (1.0, decay as f32),
                    (false, _) => (1.0, 0.0),
                };
                let ([avg, avg_sq], [next_avg, next_avg_sq]) = (old, new) else {
                    unreachable!("Adam has two slots")
                };
                // One pass: the moments read from the old slots and written
                // to the new ones, the gradient read where it lies.
                Zip::from(&mut param)
                    .and(avg)
                    .and(avg_sq)
                    .and(next_avg)
                    .and(next_avg_sq)
                    .and(&grad)
                    .for_each(|p, &m, &v, next_m, next_v, &g| {
                        let g = if coupled != 0.0 { g + coupled * *p } else { g };
                        if shrink != 1.0 {
                            *p *= shrink;
                        }
                        let m = m + w1 * (g - m);
                        let v = b2 * v + w2 * g * g;
                        (*next_m, *next_v) = (m, v);
                        let denom = v.sqrt() / bias2_sqrt + eps;
                        *p -= step_size * (m / denom);
                    });
            })
    }

    fn steps(&self) -> u64 {
        self.slots.step
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn state(&self) -> TensorMap {
        self.slots.to_tensors(ADAM_SLOTS)
    }

    fn load_state(&mut self, state: &TensorMap, params: &[(&str, Vec<usize>)]) -> Result<()> {
        self.slots = Slots::from_tensors(state, ADAM_SLOTS, params)?;
        Ok(())
    }
}

/// An optimizer's per-parameter buffers (`buffers[slot][parameter]`),
/// the parameters' names, and the number of steps taken; `spare` holds
/// buffers of the same shapes that a step writes its new values into.
#[derive(Debug, Clone, Default)]
struct Slots {
    names: Vec<String>,
    buffers: Vec<Vec<ArrayD<f32>>>,
    spare: Vec<Vec<ArrayD<f32>>>,
    step: u64,
}

impl Slots {
    /// Checks `grads` against `model`'s parameters, then runs `update` on
    /// each parameter with its slots (zero before the first step) to read
    /// and the spare buffers to write, and swaps the two only if the model
    /// took the new parameters: a failed step changes nothing, without a
    /// copy of the slots.
    fn step(
        &mut self,
        slot_names: &[&str],
        model: &mut dyn Parameters,
        grads: &[ArrayD<f32>],
        update: impl Fn(
            u64,
            &[ArrayViewD<'_, f32>],
            &mut [ArrayViewMutD<'_, f32>],
            ArrayViewMutD<'_, f32>,
            ArrayViewD<'_, f32>,
        ),
    ) -> Result<()> {
        let params: Vec<(String, Vec<usize>)> = model
            .params()
            .into_iter()
            .map(|(name, param)| (name.to_owned(), param.shape().to_vec()))
            .collect();
        check_grads(&params, grads)?;
        let zeros = || -> Vec<Vec<ArrayD<f32>>> {
            slot_names
                .iter()
                .map(|_| {
                    params
                        .iter()
                        .map(|(_, shape)| ArrayD::zeros(shape.clone()))
                        .collect()
                })
                .collect()
        };
        let fresh = self.step == 0 && self.names.is_empty();
        if !fresh
            && (self.names.len() != params.len()
                || self.names.iter().zip(&params).any(|(a, (b, _))| a != b))
        {
            return Err(RnnError::InvalidValue {
                tensor: params
                    .first()
                    .map_or_else(String::new, |(name, _)| name.clone()),
                reason: format!(
                    "the optimizer's state is for parameters {:?}, not this model's",
                    self.names
                ),
            });
        }
        let first = fresh.then(zeros);
        let current = first.as_ref().unwrap_or(&self.buffers);
        let spare_fits = self.spare.len() == current.len()
            && self.spare.iter().zip(current).all(|(a, b)| {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.shape() == b.shape())
            });
        let mut spare = if spare_fits {
            std::mem::take(&mut self.spare)
        } else {
            zeros()
        };
        let t = self.step + 1;
        let names: Vec<&str> = params.iter().map(|(name, _)| name.as_str()).collect();
        let mut updated = vec![false; names.len()];
        let result = model.update_params(&mut |name, param| {
            let Some(k) = names.iter().position(|n| *n == name) else {
                return;
            };
            let old: Vec<ArrayViewD<'_, f32>> = current.iter().map(|slot| slot[k].view()).collect();
            let mut new: Vec<ArrayViewMutD<'_, f32>> =
                spare.iter_mut().map(|slot| slot[k].view_mut()).collect();
            update(t, &old, &mut new, param, grads[k].view());
            updated[k] = true;
        });
        if let Err(error) = result {
            self.spare = spare;
            return Err(error);
        }
        let mut buffers = first.unwrap_or_else(|| std::mem::take(&mut self.buffers));
        // A parameter the model did not hand over keeps its slots.
        for (slot, next) in buffers.iter_mut().zip(spare.iter_mut()) {
            for (k, _) in updated.iter().enumerate().filter(|(_, done)| **done) {
                std::mem::swap(&mut slot[k], &mut next[k]);
            }
        }
        if fresh {
            self.names = params.into_iter().map(|(name, _)| name).collect();
        }
        self.buffers = buffers;
        self.spare = spare;
        self.step = t;
        Ok(())
    }

    fn to_tensors(&self, slot_names: &[&str]) -> TensorMap {
        let mut tensors = TensorMap::new();
        for (slot, buffers) in slot_names.iter().zip(&self.buffers) {
            for (name, buffer) in self.names.iter().zip(buffers) {
                tensors.insert_f32(format!("{slot}.{name}"), buffer.clone());
            }
        }
        tensors.insert_i64("step", ndarray::arr1(&[self.step as i64]).into_dyn());
        tensors
    }

    fn from_tensors(
        tensors: &TensorMap,
        slot_names: &[&str],
        params: &[(&str, Vec<usize>)],
    ) -> Result<Slots> {
        let step = match tensors.get("step") {
            Some(rnn_runtime::Tensor::I64(step))
                if step.len() == 1 && step.iter().all(|&s| s >= 0) =>
            {
                step.iter().map(|&s| s as u64).sum()
            }
            Some(_) => {
                return Err(RnnError::InvalidValue {
                    tensor: "step".to_owned(),
                    reason: "expected one non-negative int64".to_owned(),
                })
            }
            None => {
                return Err(RnnError::MissingTensor {
                    tensor: "step".to_owned(),
                    available: tensors.names().map(str::to_owned).collect(),
                })
            }
        };
        let buffers = slot_names
            .iter()
            .map(|slot| {
                params
                    .iter()
                    .map(|(name, shape)| tensors.f32_shaped(&format!("{slot}.{name}"), shape))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Slots {
            names: params.iter().map(|(name, _)| (*name).to_owned()).collect(),
            buffers,
            spare: Vec::new(),
            step,
        })
    }
}

/// One gradient per parameter, each shaped as its parameter and finite.
fn check_grads(params: &[(String, Vec<usize>)], grads: &[ArrayD<f32>]) -> Result<()> {
    if grads.len() != params.len() {
        return Err(RnnError::ShapeMismatch {
            tensor: "grads".to_owned(),
            expected: vec![params.len()],
            found: vec![grads.len()],
        });
    }
    for ((name, shape), grad) in params.iter().zip(grads) {
        if grad.shape() != shape.as_slice() {
            return Err(RnnError::ShapeMismatch {
                tensor: format!("grad_{name}"),
                expected: shape.clone(),
                found: grad.shape().to_vec(),
            });
        }
        let finite = grad
            .as_slice_memory_order()
            .is_some_and(rnn_runtime::all_finite);
        if finite {
            continue;
        }
        if let Some((index, value)) = grad.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(RnnError::InvalidValue {
                tensor: format!("grad_{name}"),
                reason: format!(
                    "non-finite value {value} at {:?}; the model and the optimizer are unchanged",
                    index.slice()
                ),
            });
        }
    }
    Ok(())
}

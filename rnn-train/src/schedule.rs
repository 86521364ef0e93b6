//! Learning-rate schedules as plain values: a loop asks for the rate of a
//! step and gives it to the optimizer ([`crate::optim::Optimizer::set_lr`]).
//! Steps count from 0; the closed forms of PyTorch's `StepLR`,
//! `CosineAnnealingLR` and `LinearLR`.

/// A learning rate for every step.
pub trait Schedule {
    /// The learning rate of step `step` (0 for the first).
    fn lr(&self, step: u64) -> f64;
}

/// The same rate at every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant(pub f64);

impl Schedule for Constant {
    fn lr(&self, _step: u64) -> f64 {
        self.0
    }
}

/// `base * gamma^(step / every)`: the rate multiplied by `gamma` every
/// `every` steps (PyTorch's `StepLR`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepDecay {
    /// The rate of the first steps.
    pub base: f64,
    /// The factor applied every `every` steps.
    pub gamma: f64,
    /// How many steps between decays (at least 1).
    pub every: u64,
}

impl Schedule for StepDecay {
    fn lr(&self, step: u64) -> f64 {
        let decays = step / self.every.max(1);
        self.base * self.gamma.powf(decays as f64)
    }
}

/// Cosine annealing from `base` down to `min` over `period` steps, then
/// `min` (PyTorch's `CosineAnnealingLR` for its first period).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cosine {
    /// The rate at step 0.
    pub base: f64,
    /// The rate at step `period` and after.
    pub min: f64,
    /// The number of steps of the descent (at least 1).
    pub period: u64,
}

impl Schedule for Cosine {
    fn lr(&self, step: u64) -> f64 {
        let progress = step.min(self.period) as f64 / self.period.max(1) as f64;
        self.min + (self.base - self.min) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
    }
}

/// A linear warm-up from `start_factor` times the rate to the full rate
/// over `steps` steps (PyTorch's `LinearLR`), then `then`, whose steps
/// count from the end of the warm-up (PyTorch's `SequentialLR`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmup<S> {
    /// How many steps the warm-up lasts.
    pub steps: u64,
    /// The fraction of the rate at step 0.
    pub start_factor: f64,
    /// The schedule after the warm-up.
    pub then: S,
}

impl<S: Schedule> Schedule for Warmup<S> {
    fn lr(&self, step: u64) -> f64 {
        if step >= self.steps {
            return self.then.lr(step - self.steps);
        }
        let factor =
            self.start_factor + (1.0 - self.start_factor) * step as f64 / self.steps as f64;
        self.then.lr(0) * factor
    }
}

//! Learned ISTA: the sparse-recovery problem of the algorithm-unrolling
//! literature, ISTA and FISTA on it, and layer-wise training of unrolled
//! networks (LISTA, Gregor & LeCun 2010; LISTA-CP, Chen et al. 2018).
//! `examples/lista.rs` runs it at the literature's size; `tests/lista.rs`
//! at a small one.
//!
//! The problem: `y = A x + n` with `A` `M × N` of i.i.d. `N(0, 1/M)`
//! entries and columns scaled to unit norm, `x` Bernoulli(`p`)·`N(0, 1)`,
//! and `n` Gaussian at a signal-to-noise ratio given in dB:
//! `σ² = E‖A x‖² / M · 10^(−SNR/10)`, with `E‖A x‖² = p N` (unit columns).
//! Errors are NMSE in dB, `10 log10(Σ ‖x̂ − x‖² / Σ ‖x‖²)` over a set.

use ndarray::{Array1, Array2, Array3, ArrayD, ArrayView2, Axis, Zip};
use rnn_runtime::init::SplitMix64;
use rnn_runtime::{Parameters, Result, RnnError, TensorMap};
use rnn_train::freeze::Trainable;
use rnn_train::optim::{Adam, Optimizer};

/// A sparse-recovery problem: the dictionary and how signals and noise
/// are drawn.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The dictionary `A`, `[M, N]`.
    pub a: Array2<f32>,
    /// The probability that an entry of `x` is non-zero.
    pub sparsity: f64,
    /// The noise's standard deviation (0: noiseless).
    pub noise_std: f32,
    /// `‖A‖₂²`, the Lipschitz constant of the least-squares gradient.
    pub lipschitz: f32,
}

/// Signals and their measurements, one per row.
#[derive(Debug, Clone)]
pub struct Samples {
    /// The sparse signals, `[B, N]`.
    pub x: Array2<f32>,
    /// Their noisy measurements, `[B, M]`.
    pub y: Array2<f32>,
}

/// A standard normal draw (Box–Muller, in `f64`).
pub fn normal(rng: &mut SplitMix64) -> f64 {
    normal_pair(rng).0
}

/// Two independent standard normal draws from one Box–Muller transform
/// (its cosine and its sine): sampling a batch is mostly these.
fn normal_pair(rng: &mut SplitMix64) -> (f64, f64) {
    let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let radius = (-2.0 * u1.ln()).sqrt();
    let (sin, cos) = (2.0 * std::f64::consts::PI * u2).sin_cos();
    (radius * cos, radius * sin)
}

/// Fills `values` with standard normal draws times `scale`, two per transform.
fn fill_normal<'a>(
    rng: &mut SplitMix64,
    values: impl IntoIterator<Item = &'a mut f32>,
    scale: f64,
) {
    let mut values = values.into_iter();
    while let Some(first) = values.next() {
        let (a, b) = normal_pair(rng);
        *first = (a * scale) as f32;
        if let Some(second) = values.next() {
            *second = (b * scale) as f32;
        }
    }
}

impl Problem {
    /// An `m × n` problem with signals of density `sparsity`, at `snr_db`
    /// (`None`: noiseless), its dictionary drawn from `rng`.
    pub fn new(
        m: usize,
        n: usize,
        sparsity: f64,
        snr_db: Option<f64>,
        rng: &mut SplitMix64,
    ) -> Problem {
        let std = 1.0 / (m as f64).sqrt();
        let mut a = Array2::from_shape_simple_fn((m, n), || (normal(rng) * std) as f32);
        for mut column in a.columns_mut() {
            let norm = column
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            column.mapv_inplace(|v| (f64::from(v) / norm) as f32);
        }
        let noise_std = match snr_db {
            Some(snr) => (sparsity * n as f64 / m as f64 * 10f64.powf(-snr / 10.0)).sqrt(),
            None => 0.0,
        } as f32;
        Problem {
            lipschitz: largest_eigenvalue(&a),
            a,
            sparsity,
            noise_std,
        }
    }

    /// `batch` fresh signals and measurements: the support is drawn first,
    /// then normal values for the entries on it alone, then the noise.
    pub fn sample(&self, batch: usize, rng: &mut SplitMix64) -> Samples {
        let (m, n) = self.a.dim();
        let mut x = Array2::<f32>::zeros((batch, n));
        let threshold = (self.sparsity * (1u64 << 53) as f64) as u64;
        let mut support: Vec<&mut f32> = x
            .iter_mut()
            .filter(|_| (rng.next_u64() >> 11) < threshold)
            .collect();
        fill_normal(rng, support.iter_mut().map(|value| &mut **value), 1.0);
        let mut y = x.dot(&self.a.t());
        if self.noise_std > 0.0 {
            let mut noise = Array2::<f32>::zeros((batch, m));
            fill_normal(rng, noise.iter_mut(), f64::from(self.noise_std));
            y += &noise;
        }
        Samples { x, y }
    }
}

/// The largest eigenvalue of `AᵀA` (`‖A‖₂²`), by power iteration.
fn largest_eigenvalue(a: &Array2<f32>) -> f32 {
    let gram = a.t().dot(a).mapv(f64::from);
    let mut v = Array1::<f64>::from_elem(gram.nrows(), 1.0);
    let mut eigenvalue = 0.0;
    for _ in 0..500 {
        let next = gram.dot(&v);
        eigenvalue = next.dot(&next).sqrt();
        v = next / eigenvalue;
    }
    eigenvalue as f32
}

/// NMSE in dB of `estimate` against `truth` over all rows.
pub fn nmse_db(estimate: ArrayView2<'_, f32>, truth: ArrayView2<'_, f32>) -> f64 {
    let (mut error, mut power) = (0.0f64, 0.0f64);
    Zip::from(estimate).and(truth).for_each(|e, t| {
        error += f64::from(e - t).powi(2);
        power += f64::from(*t).powi(2);
    });
    10.0 * (error / power).log10()
}

/// One ISTA step from `from`: `soft(from + Aᵀ(y − A from)/L, λ/L)`.
fn ista_step(
    problem: &Problem,
    y: ArrayView2<'_, f32>,
    lambda: f32,
    from: &Array2<f32>,
) -> Array2<f32> {
    let (a, l) = (&problem.a, problem.lipschitz);
    let residual = &y - &from.dot(&a.t());
    let mut next = from.clone();
    next.scaled_add(1.0 / l, &residual.dot(a));
    next.mapv_inplace(|v| v.signum() * (v.abs() - lambda / l).max(0.0));
    next
}

/// ISTA, `x ← soft(x + Aᵀ(y − A x)/L, λ/L)` from `x = 0`, on every row of
/// `y` for `iterations` iterations; `each(k, x)` sees iterate `k` (from 1).
pub fn ista(
    problem: &Problem,
    y: ArrayView2<'_, f32>,
    lambda: f32,
    iterations: usize,
    mut each: impl FnMut(usize, &Array2<f32>),
) -> Array2<f32> {
    let mut x = Array2::<f32>::zeros((y.nrows(), problem.a.ncols()));
    for k in 1..=iterations {
        x = ista_step(problem, y, lambda, &x);
        each(k, &x);
    }
    x
}

/// FISTA (Beck & Teboulle 2009): ISTA's step from an extrapolated point,
/// with momentum `(t_k − 1)/t_{k+1}`; as [`ista`] otherwise.
pub fn fista(
    problem: &Problem,
    y: ArrayView2<'_, f32>,
    lambda: f32,
    iterations: usize,
    mut each: impl FnMut(usize, &Array2<f32>),
) -> Array2<f32> {
    let mut x = Array2::<f32>::zeros((y.nrows(), problem.a.ncols()));
    let mut z = x.clone();
    let mut t = 1.0f64;
    for k in 1..=iterations {
        let next = ista_step(problem, y, lambda, &z);
        let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let momentum = ((t - 1.0) / t_next) as f32;
        z = &next + &((&next - &x) * momentum);
        x = next;
        t = t_next;
        each(k, &x);
    }
    x
}

/// What layer-wise training of LISTA trains: its tied `B`, `S` and `θ`, at
/// every stage of every step.
pub fn lista_parts(_steps: usize) -> Trainable {
    Trainable::new()
        .param("B_l0")
        .param("S_l0")
        .param("theta_l0")
}

/// What the first stage of step `k` of LISTA-CP's layer-wise training
/// trains: the new step's `W_k` and `θ_k` (`A` stays frozen).
pub fn lista_cp_new_step(k: usize) -> Trainable {
    Trainable::new()
        .copies("W_l0", k - 1..k)
        .copies("theta_l0", k - 1..k)
}

/// What the later stages of step `k` of LISTA-CP's training train: the
/// copies of every step so far.
pub fn lista_cp_steps_so_far(k: usize) -> Trainable {
    Trainable::new()
        .copies("W_l0", 0..k)
        .copies("theta_l0", 0..k)
}

/// An unrolled solver generated with gradients on: its iterates, and the
/// gradient of the mean squared error of its last one.
pub trait Unrolled: Parameters {
    /// Every iterate of `steps` iterations on each row of `y` from `start`
    /// (`[B, N]`; `None`: zero): `[B, steps, N]`.
    ///
    /// # Errors
    ///
    /// As the generated `forward`.
    fn solve_from(
        &self,
        y: ArrayView2<'_, f32>,
        start: Option<ArrayView2<'_, f32>>,
        steps: usize,
    ) -> Result<Array3<f32>>;

    /// The mean squared error of the last of `steps` iterates from `start`
    /// against `x` ([`loss::mse_last`]) and its gradient for every parameter.
    ///
    /// # Errors
    ///
    /// As the generated `forward_train` and `backward`, or a non-finite loss.
    fn loss_and_grads_from(
        &self,
        y: ArrayView2<'_, f32>,
        start: Option<ArrayView2<'_, f32>>,
        x: ArrayView2<'_, f32>,
        steps: usize,
    ) -> Result<(f32, Vec<ArrayD<f32>>)>;

    /// Gives the gradients [`Unrolled::loss_and_grads_from`] returned back
    /// once read (the generated `recycle_grads`): the next backward writes
    /// the per-step parameters' copies into them instead of zeroing new
    /// ones.
    fn recycle_grads(&self, grads: Vec<ArrayD<f32>>);

    /// Every iterate of `steps` iterations from zero: `[B, steps, N]`.
    ///
    /// # Errors
    ///
    /// As the generated `forward`.
    fn solve(&self, y: ArrayView2<'_, f32>, steps: usize) -> Result<Array3<f32>> {
        self.solve_from(y, None, steps)
    }

    /// [`Unrolled::loss_and_grads_from`] from zero.
    ///
    /// # Errors
    ///
    /// As [`Unrolled::loss_and_grads_from`].
    fn loss_and_grads(
        &self,
        y: ArrayView2<'_, f32>,
        x: ArrayView2<'_, f32>,
        steps: usize,
    ) -> Result<(f32, Vec<ArrayD<f32>>)> {
        self.loss_and_grads_from(y, None, x, steps)
    }

    /// For a network with per-step parameters, the network of one step
    /// whose copy is this one's copy `step` (and whose tied parameters are
    /// this one's): trained from the iterate the steps before reach, it is
    /// step `step` trained alone, without a backward through the others.
    /// `None` for a network without per-step parameters.
    ///
    /// # Errors
    ///
    /// The one-step network refuses the weights.
    fn one_step(&self, _step: usize) -> Option<Result<Box<dyn Unrolled>>> {
        None
    }

    /// Sets the thread count of the model's runs (the generated
    /// `set_threads`).
    fn set_threads(&mut self, threads: rnn_runtime::Threads);

    /// Takes a one-step network's parameters back ([`Unrolled::one_step`]):
    /// its copy becomes copy `step`, its tied parameters this one's.
    ///
    /// # Errors
    ///
    /// The parameters do not fit, or are not finite.
    fn take_step(&mut self, _step: usize, _from: &dyn Unrolled) -> Result<()> {
        Ok(())
    }
}

/// The networks: LISTA (tied, Gregor & LeCun 2010, `x ← soft(B y + S x, θ)`)
/// and LISTA-CP (untied, Chen et al. 2018, `x ← soft(x + W_kᵀ(y − A x), θ_k)`),
/// at the literature's size (250 × 500, 16 steps) and a small one for tests
/// (20 × 40, 6 steps).
pub mod models {
    rnn_macros::rnn! {
        gradients = true;
        cell lista(y: [M]) -> x: [N] {
            param B: [N, M];
            param S: [N, N];
            param theta: [N];
            x = soft_threshold(B @ y + S @ x, theta);
        }
        // `A` is the problem's measurement matrix, given, not learned: the
        // backward forms no gradient for it.
        cell lista_cp(y: [M]) -> x: [N] {
            param A: [M, N] frozen;
            param W: [M, N] per step;
            param theta: [1] per step;
            x = soft_threshold(x + W^T @ (y - A @ x), theta);
        }
        network Lista { context y: [250]; layer solver = lista(N = 500); unroll dynamic; }
        network ListaCp { context y: [250]; layer solver = lista_cp(N = 500, steps = 16); unroll dynamic; }
        network ListaSmall { context y: [20]; layer solver = lista(N = 40); unroll dynamic; }
        network ListaCpSmall { context y: [20]; layer solver = lista_cp(N = 40, steps = 6); unroll dynamic; }
        // One step of each: layer-wise training trains a new step alone on
        // it, from the iterate the steps before it reach.
        network ListaCpStep { context y: [250]; layer solver = lista_cp(N = 500, steps = 1); unroll dynamic; }
        network ListaCpSmallStep { context y: [20]; layer solver = lista_cp(N = 40, steps = 1); unroll dynamic; }
    }
}

/// Implements [`Unrolled`] for generated models of dynamic networks with a
/// context `y` and one layer whose state is `x` (`Model: State`), and with
/// `=> OneStep` the network of one step of a model with per-step
/// parameters.
macro_rules! unrolled {
    ($model:ty : $state:ty $(=> $one:ty)?) => {
        impl Unrolled for $model {
            fn solve_from(
                &self,
                y: ::ndarray::ArrayView2<'_, f32>,
                start: Option<::ndarray::ArrayView2<'_, f32>>,
                steps: usize,
            ) -> ::rnn_runtime::Result<::ndarray::Array3<f32>> {
                let start = start.map(|x| <$state>::from_iterate(x));
                Ok(self.forward(y, steps, None, start.as_ref())?.y)
            }

            fn set_threads(&mut self, threads: ::rnn_runtime::Threads) {
                <$model>::set_threads(self, threads);
            }

            fn recycle_grads(&self, grads: ::std::vec::Vec<::ndarray::ArrayD<f32>>) {
                <$model>::recycle_grads(self, grads);
            }

            fn loss_and_grads_from(
                &self,
                y: ::ndarray::ArrayView2<'_, f32>,
                start: Option<::ndarray::ArrayView2<'_, f32>>,
                x: ::ndarray::ArrayView2<'_, f32>,
                steps: usize,
            ) -> ::rnn_runtime::Result<(f32, ::std::vec::Vec<::ndarray::ArrayD<f32>>)> {
                let start = start.map(|x| <$state>::from_iterate(x));
                let (out, tape) = self.forward_train(y, steps, None, start.as_ref())?;
                let loss = ::rnn_train::loss::mse_last(out.y.view(), x, None)?;
                let grads = self.backward(&tape, loss.grad.view(), None)?;
                self.recycle(tape);
                Ok((loss.value, grads.params))
            }

            $(
                fn one_step(&self, step: usize) -> Option<::rnn_runtime::Result<Box<dyn Unrolled>>> {
                    let build = || -> ::rnn_runtime::Result<Box<dyn Unrolled>> {
                        let mut one = <$one>::random(0);
                        one.update_params(&mut |name: &str, view: ::ndarray::ArrayViewMutD<'_, f32>| copy_step(&*self, name, step, view))?;
                        Ok(Box::new(one))
                    };
                    Some(build())
                }

                fn take_step(&mut self, step: usize, from: &dyn Unrolled) -> ::rnn_runtime::Result<()> {
                    let params: Vec<(&str, ::ndarray::ArrayD<f32>)> = from
                        .params()
                        .into_iter()
                        .map(|(name, view)| (name, view.to_owned()))
                        .collect();
                    self.update_params(&mut |name: &str, mut view: ::ndarray::ArrayViewMutD<'_, f32>| {
                        if let Some((_, value)) = params.iter().find(|(n, _)| *n == name) {
                            if view.shape() == value.shape() {
                                view.assign(value);
                            } else {
                                view.slice_axis_mut(Axis(0), (step..step + 1).into()).assign(value);
                            }
                        }
                    })
                }
            )?
        }

        impl $state {
            /// The state whose iterate is `x` (`[B, N]`).
            fn from_iterate(x: ::ndarray::ArrayView2<'_, f32>) -> $state {
                Self { x: x.insert_axis(Axis(0)).to_owned() }
            }
        }
    };
}

/// Sets `view`, parameter `name` of a one-step network, to that of `model`:
/// copy `step` of a per-step parameter (whose shapes differ in their first
/// axis), the tied parameter as it is.
fn copy_step(
    model: &dyn Parameters,
    name: &str,
    step: usize,
    mut view: ndarray::ArrayViewMutD<'_, f32>,
) {
    let params = model.params();
    let Some((_, value)) = params.iter().find(|(n, _)| *n == name) else {
        return;
    };
    if view.shape() == value.shape() {
        view.assign(value);
    } else {
        view.assign(&value.slice_axis(Axis(0), (step..step + 1).into()));
    }
}

unrolled!(models::Lista: models::ListaState);
unrolled!(models::ListaCp: models::ListaCpState => models::ListaCpStep);
unrolled!(models::ListaSmall: models::ListaSmallState);
unrolled!(models::ListaCpStep: models::ListaCpStepState);
unrolled!(models::ListaCpSmallStep: models::ListaCpSmallStepState);
unrolled!(models::ListaCpSmall: models::ListaCpSmallState => models::ListaCpSmallStep);

/// NMSE in dB of the last of `steps` iterates of `model` on `samples`.
///
/// # Errors
///
/// As [`Unrolled::solve`].
pub fn model_nmse_db(model: &dyn Unrolled, samples: &Samples, steps: usize) -> Result<f64> {
    nmse_from(model, samples, None, steps)
}

/// [`model_nmse_db`] with the iterations started from `start` (`[B, N]`).
fn nmse_from(
    model: &dyn Unrolled,
    samples: &Samples,
    start: Option<ArrayView2<'_, f32>>,
    steps: usize,
) -> Result<f64> {
    let iterates = model.solve_from(samples.y.view(), start, steps)?;
    Ok(nmse_db(last_iterate(&iterates), samples.x.view()))
}

/// Layer-wise training (as VITA-Group's LISTA-CPSS): for `k = 1 … K`, the
/// network of `k` steps is trained in stages, each with a fresh Adam at
/// `lr` times its factor, on fresh batches, with early stopping on a
/// validation set (the best weights of the stage are kept).
#[derive(Debug, Clone)]
pub struct LayerWise {
    /// The base learning rate.
    pub lr: f64,
    /// The stages' learning-rate factors; the first trains what
    /// `new_part(k)` names, the others what `all_parts(k)` names.
    pub stages: Vec<f64>,
    /// The batch size.
    pub batch: usize,
    /// The most iterations of a stage.
    pub max_iterations: usize,
    /// Iterations between validations.
    pub validate_every: usize,
    /// Validations without improvement before a stage stops.
    pub patience: usize,
    /// Per-step parameters whose new step's copy starts as the trained
    /// copy of the step before it rather than as its initial value (empty:
    /// every step starts from its initial weights).
    pub warm_start: Vec<&'static str>,
    /// The most iterations and the validations without improvement of a
    /// first stage run on the new step alone ([`Unrolled::one_step`]),
    /// where they differ from the other stages' (`None`: the same): such an
    /// iteration costs a fraction of one of the whole network.
    pub alone: Option<(usize, usize)>,
}

/// Where layer-wise training is, for a progress report.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The number of steps being trained.
    pub steps: usize,
    /// The stage (0: the new step alone).
    pub stage: usize,
    /// Iterations so far in the stage.
    pub iteration: usize,
    /// The latest training loss.
    pub loss: f32,
    /// The best validation NMSE of the stage so far, in dB.
    pub best_db: f64,
}

/// What a parameter of a model is made of: its current values.
fn snapshot(model: &dyn Parameters) -> Vec<ArrayD<f32>> {
    model
        .params()
        .into_iter()
        .map(|(_, view)| view.to_owned())
        .collect()
}

/// Sets copy `step` of each of the per-step parameters `names` to copy
/// `step - 1`.
fn copy_previous_step(model: &mut dyn Parameters, names: &[&str], step: usize) -> Result<()> {
    model.update_params(&mut |name, mut view| {
        if names.contains(&name) {
            let previous = view.index_axis(Axis(0), step - 1).to_owned();
            view.index_axis_mut(Axis(0), step).assign(&previous);
        }
    })
}

fn restore(model: &mut dyn Parameters, values: &[ArrayD<f32>]) -> Result<()> {
    let mut values = values.iter();
    model.update_params(&mut |_, mut view| {
        view.assign(values.next().expect("a value per parameter"));
    })
}

/// The last of `iterates` (`[B, steps, N]`): `[B, N]`.
fn last_iterate(iterates: &Array3<f32>) -> ArrayView2<'_, f32> {
    iterates.index_axis(Axis(1), iterates.dim().1 - 1)
}

/// Where a stage's network starts: from zero, or (a new step trained
/// alone) from the iterate a frozen network reaches on each sample.
type Start<'a> = &'a dyn Fn(ArrayView2<'_, f32>) -> Result<Option<Array2<f32>>>;

impl LayerWise {
    /// Trains `model` up to `steps` steps; `new_part(k)` and `all_parts(k)`
    /// say what the first and the later stages of step `k` train. Returns
    /// the validation NMSE (dB) of the network of `k` steps after its
    /// stages, for each `k`. `grown(k, model)` sees the network trained
    /// for `k` steps (to measure it on a test set: the literature's curve
    /// of NMSE against depth is of networks each trained for its depth).
    ///
    /// A model with per-step parameters ([`Unrolled::one_step`]) trains
    /// the first stage on a network of the new step alone, started from
    /// the iterate the `k − 1` frozen steps reach: the same gradients for
    /// the new step's copies, without a backward through the others, and
    /// an optimizer step over one copy. `new_part(1)` says what it trains.
    ///
    /// # Errors
    ///
    /// A part naming what the model lacks, a failed run (a non-finite
    /// loss, …), or an error of `grown`.
    #[allow(clippy::too_many_arguments)]
    pub fn train<M: Unrolled>(
        &self,
        model: &mut M,
        problem: &Problem,
        steps: usize,
        new_part: impl Fn(usize) -> Trainable,
        all_parts: impl Fn(usize) -> Trainable,
        validation: &Samples,
        rng: &mut SplitMix64,
        mut progress: impl FnMut(Progress),
        mut grown: impl FnMut(usize, &M) -> Result<()>,
    ) -> Result<Vec<f64>> {
        let mut by_steps = Vec::with_capacity(steps);
        for k in 1..=steps {
            if k > 1 && !self.warm_start.is_empty() {
                copy_previous_step(model, &self.warm_start, k - 1)?;
            }
            let mut best_db = model_nmse_db(model, validation, k)?;
            for (stage, factor) in self.stages.iter().enumerate() {
                let lr = self.lr * factor;
                let mut report = |iteration, loss, best_db| {
                    progress(Progress {
                        steps: k,
                        stage,
                        iteration,
                        loss,
                        best_db,
                    });
                };
                let alone = if stage == 0 {
                    model.one_step(k - 1)
                } else {
                    None
                };
                if let Some(one) = alone {
                    let mut one = one?;
                    let frozen = &*model;
                    let before = |y: ArrayView2<'_, f32>| -> Result<Option<Array2<f32>>> {
                        match k {
                            1 => Ok(None),
                            _ => Ok(Some(last_iterate(&frozen.solve(y, k - 1)?).to_owned())),
                        }
                    };
                    let validation_start = before(validation.y.view())?;
                    best_db = self.stage(
                        &mut *one,
                        &new_part(1),
                        (lr, 1),
                        self.alone.unwrap_or((self.max_iterations, self.patience)),
                        problem,
                        (validation, validation_start.as_ref()),
                        &before,
                        rng,
                        best_db,
                        &mut report,
                    )?;
                    model.take_step(k - 1, &*one)?;
                } else {
                    let part = if stage == 0 {
                        new_part(k)
                    } else {
                        all_parts(k)
                    };
                    best_db = self.stage(
                        model,
                        &part,
                        (lr, k),
                        (self.max_iterations, self.patience),
                        problem,
                        (validation, None),
                        &|_| Ok(None),
                        rng,
                        best_db,
                        &mut report,
                    )?;
                }
            }
            by_steps.push(best_db);
            grown(k, model)?;
        }
        Ok(by_steps)
    }

    /// One stage: `part` of `net` of `steps` steps trained with a fresh
    /// Adam at `lr` on fresh batches (at most `max_iterations`), each run
    /// from `start`, with early stopping on `validation` (run from its
    /// start) after `patience` validations without improvement; the stage's best
    /// weights are kept. Returns the best validation NMSE, no worse than
    /// `best_db`, which the network had when the stage began.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        net: &mut dyn Unrolled,
        part: &Trainable,
        (lr, steps): (f64, usize),
        (max_iterations, patience): (usize, usize),
        problem: &Problem,
        (validation, validation_start): (&Samples, Option<&Array2<f32>>),
        start: Start<'_>,
        rng: &mut SplitMix64,
        mut best_db: f64,
        report: &mut dyn FnMut(usize, f32, f64),
    ) -> Result<f64> {
        let mut adam = Adam::new(lr);
        let mut best = snapshot(net);
        let mut since_best = 0;
        for iteration in 1..=max_iterations {
            let batch = problem.sample(self.batch, rng);
            let from = start(batch.y.view())?;
            let (loss, grads) = net.loss_and_grads_from(
                batch.y.view(),
                from.as_ref().map(|from| from.view()),
                batch.x.view(),
                steps,
            )?;
            {
                let mut selected = part.select(net)?;
                let grads = selected.grads(&grads)?;
                adam.step(&mut selected, &grads)?;
            }
            net.recycle_grads(grads);
            if iteration % self.validate_every == 0 {
                let start = validation_start.map(|start| start.view());
                let db = nmse_from(net, validation, start, steps)?;
                if db < best_db {
                    (best_db, best, since_best) = (db, snapshot(net), 0);
                } else {
                    since_best += 1;
                }
            }
            report(iteration, loss, best_db);
            if since_best >= patience {
                break;
            }
        }
        restore(net, &best)?;
        Ok(best_db)
    }
}

/// LISTA's initial weights from ISTA at `lambda` (the network computes
/// ISTA exactly before training): tied `B = Aᵀ/L`, `S = I − AᵀA/L`,
/// `theta = λ/L`.
pub fn lista_init(problem: &Problem, lambda: f32) -> TensorMap {
    let l = problem.lipschitz;
    let a = &problem.a;
    let n = a.ncols();
    let mut weights = TensorMap::new();
    weights.insert_f32("B", a.t().mapv(|v| v / l).into_dyn());
    let s = Array2::<f32>::eye(n) - a.t().dot(a).mapv(|v| v / l);
    weights.insert_f32("S", s.into_dyn());
    weights.insert_f32("theta", Array1::from_elem(n, lambda / l).into_dyn());
    weights
}

/// LISTA-CP's initial weights from ISTA at `lambda` for `steps` steps:
/// `A`, and per step `W_k = A/L` and `theta_k = λ/L`.
pub fn lista_cp_init(problem: &Problem, lambda: f32, steps: usize) -> TensorMap {
    let l = problem.lipschitz;
    let a = &problem.a;
    let mut weights = TensorMap::new();
    weights.insert_f32("A", a.clone().into_dyn());
    let w = a.mapv(|v| v / l).insert_axis(Axis(0));
    let w = ndarray::concatenate(Axis(0), &vec![w.view(); steps]).expect("same shapes");
    weights.insert_f32("W", w.into_dyn());
    weights.insert_f32("theta", ArrayD::from_elem(vec![steps, 1], lambda / l));
    weights
}

/// The λ of `lambdas` whose ISTA solution (FISTA run `iterations`, to
/// convergence) has the lowest NMSE on `samples`, and that NMSE.
pub fn best_lambda(
    problem: &Problem,
    samples: &Samples,
    lambdas: &[f32],
    iterations: usize,
) -> (f32, f64) {
    lambdas
        .iter()
        .map(|&lambda| {
            let x = fista(problem, samples.y.view(), lambda, iterations, |_, _| {});
            (lambda, nmse_db(x.view(), samples.x.view()))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least one λ")
}

/// The first iteration at which `curve` (NMSE in dB by iteration, from 1)
/// reaches `target_db`.
pub fn iterations_to(curve: &[f64], target_db: f64) -> Option<usize> {
    curve.iter().position(|db| *db <= target_db).map(|k| k + 1)
}

/// Checks that a problem's sizes match a model's.
///
/// # Errors
///
/// [`RnnError::ShapeMismatch`] naming `A`.
pub fn check_sizes(problem: &Problem, m: usize, n: usize) -> Result<()> {
    if problem.a.dim() != (m, n) {
        return Err(RnnError::ShapeMismatch {
            tensor: "A".to_owned(),
            expected: vec![m, n],
            found: problem.a.shape().to_vec(),
        });
    }
    Ok(())
}

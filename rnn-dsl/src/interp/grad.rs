//! The interpreter's backward pass: each layer's backward step
//! ([`ir::differentiate`](crate::ir::differentiate)) evaluated step by step
//! in reverse, over the states the forward pass kept.
//!
//! Masking follows the forward semantics: at a step past a sequence's end
//! (its state copied through, its output zero) the sequence's row takes no
//! part: its state gradients pass through unchanged, and it adds nothing to
//! the input, context or parameter gradients. So a padded step's input
//! gradient is exactly zero and a sequence of length 0 gets its final-state
//! gradient as its initial-state gradient.

use std::collections::BTreeMap;

use ndarray::{s, Array2, Array3, ArrayD, Axis, Ix3};
use rnn_runtime::{RnnError, TensorMap};

use crate::check::InputSource;
use crate::ir::{differentiate, Dep, Network};
use crate::names;

use super::{
    evaluate, forward, initial_states, load_weights, params_at, prepare_inputs, reverse_valid,
    stack_rows, Float, Seeds, Source, StepContext, Tensors, Val,
};

/// Runs `network` forward and backward: the outputs of [`run`](super::run),
/// and the gradient of `loss = Σ y ⊙ seed_y + Σ_s Σ s_n ⊙ seed_s_n` with
/// respect to every weight, network input and initial state, each named
/// `grad_<name>` ([`names::gradient`]) with the shape of what it is the
/// gradient of.
///
/// `seeds` holds the gradient of the loss with respect to the outputs,
/// named as the outputs are (`y` `[B, T, D*O]`, `h_n` `[L*D, B, H]`, …); a
/// missing one is zero. Initial states that `inputs` lacks are zero and
/// still get a gradient.
///
/// # Errors
///
/// As [`run`](super::run), or a seed of the wrong shape.
pub fn gradients(
    network: &Network,
    weights: &TensorMap,
    inputs: &TensorMap,
    seeds: &TensorMap,
) -> Result<TensorMap, RnnError> {
    let mut outputs = TensorMap::new();
    for (name, value) in gradients_in::<f32>(network, weights, inputs, seeds)? {
        outputs.insert_f32(name, value);
    }
    Ok(outputs)
}

/// [`gradients`] in number type `F`, from any [`Source`] of tensors.
///
/// # Errors
///
/// As [`gradients`].
pub fn gradients_in<F: Float>(
    network: &Network,
    weights: &impl Source<F>,
    inputs: &impl Source<F>,
    seeds: &impl Source<F>,
) -> Result<Tensors<F>, RnnError> {
    let layer_weights = load_weights(network, weights)?;
    let prepared = prepare_inputs(network, inputs)?;
    let initial = initial_states(network, &prepared, inputs)?;
    let (batch, steps) = (prepared.batch, prepared.steps);
    let lengths = &prepared.lengths;
    let max_len = lengths.iter().copied().max().unwrap_or(0);

    let mut dy = seed(seeds, names::OUTPUT, &[batch, steps, network.output_size()])?
        .into_dimensionality::<Ix3>()
        .expect("shape checked");
    let mut final_seeds: BTreeMap<String, Array3<F>> = BTreeMap::new();
    let mut initial_grads: BTreeMap<String, Array3<F>> = BTreeMap::new();
    for layer in &network.layers {
        for state in &layer.states {
            let rows = stack_rows(network, layer);
            let name = names::final_state(&layer.prefix, &state.name);
            if let std::collections::btree_map::Entry::Vacant(slot) = final_seeds.entry(name) {
                let value = seed(seeds, slot.key(), &[rows, batch, state.size])?;
                slot.insert(value.into_dimensionality().expect("shape checked"));
            }
            initial_grads
                .entry(names::initial_state(&layer.prefix, &state.name))
                .or_insert_with(|| Array3::zeros((rows, batch, state.size)));
        }
    }

    let run = forward(network, &layer_weights, &prepared, &initial, true);
    let mut outputs = run.outputs;
    let mut input_grads: Vec<Array3<F>> = prepared
        .network_inputs
        .iter()
        .map(|input| Array3::zeros(input.raw_dim()))
        .collect();

    for (layer_idx, layer) in network.layers.iter().enumerate().rev() {
        let backward = differentiate(layer);
        debug_assert_eq!(crate::ir::verify_backward(layer, &backward), Ok(()));
        let previous_width = layer
            .inputs
            .iter()
            .find(|input| input.source == InputSource::Previous)
            .map_or(0, |input| input.size);
        let mut d_previous = Array3::zeros((batch, steps, previous_width));
        for (direction, tape) in run.tapes[layer_idx].iter().enumerate() {
            let params = &layer_weights[layer_idx].params[direction];
            let reverse = layer.runs_backward(direction);
            let width = layer.output_size;
            let mut dy_dir = dy
                .slice(s![.., .., direction * width..(direction + 1) * width])
                .to_owned();
            if reverse {
                dy_dir = reverse_valid(&dy_dir, lengths);
            }
            let row = layer.stack_idx * layer.directions + direction;
            let mut d_states: Vec<Array2<F>> = layer
                .states
                .iter()
                .map(|state| {
                    final_seeds[&names::final_state(&layer.prefix, &state.name)]
                        .index_axis(Axis(0), row)
                        .to_owned()
                })
                .collect();
            let mut d_params: Vec<ArrayD<F>> = params
                .iter()
                .map(|param| ArrayD::zeros(param.raw_dim()))
                .collect();
            let mut d_inputs: Vec<Array3<F>> = tape
                .inputs
                .iter()
                .map(|input| Array3::zeros(input.raw_dim()))
                .collect();

            let mut values: Vec<Option<Val<F>>> = vec![None; backward.nodes.len()];
            let forward_nodes = &backward.nodes[..backward.forward];
            let invariant = StepContext {
                inputs: &tape.inputs,
                states: &initial[layer_idx][direction],
                t: 0,
                seeds: None,
                live: None,
                precision: None,
            };
            evaluate(forward_nodes, 0, &mut values, params, &invariant, |dep| {
                dep <= Dep::Context
            });
            for t in (0..max_len).rev() {
                let live: Vec<bool> = lengths.iter().map(|len| t < *len).collect();
                let mut output_seed = dy_dir.slice(s![.., t, ..]).to_owned();
                for (b, is_live) in live.iter().enumerate() {
                    if !is_live {
                        output_seed.row_mut(b).fill(F::zero());
                    }
                }
                let step_seeds = Seeds {
                    output: output_seed,
                    states: d_states.clone(),
                };
                let cx = StepContext {
                    inputs: &tape.inputs,
                    states: &tape.states[t],
                    t,
                    seeds: Some(&step_seeds),
                    live: Some(&live),
                    precision: None,
                };
                let step_params = params_at(layer, params, t);
                evaluate(forward_nodes, 0, &mut values, &step_params, &cx, |dep| {
                    dep > Dep::Context
                });
                evaluate(
                    &backward.nodes,
                    backward.forward,
                    &mut values,
                    &step_params,
                    &cx,
                    |_| true,
                );
                let value =
                    |id: crate::ir::ValueId| values[id.index()].as_ref().expect("evaluated");
                for (k, gradient) in backward.states.iter().enumerate() {
                    let rows = gradient.map_or_else(
                        || Array2::zeros(d_states[k].raw_dim()),
                        |id| value(id).batch_rows(batch),
                    );
                    for (b, is_live) in live.iter().enumerate() {
                        if *is_live {
                            d_states[k].row_mut(b).assign(&rows.row(b));
                        }
                    }
                }
                for (k, gradient) in backward.params.iter().enumerate() {
                    if let Some(id) = gradient {
                        let share = value(*id).as_2d();
                        // A per-step parameter's step t gradient is its copy t's.
                        let mut slot = match layer.params[k].steps {
                            Some(_) => d_params[k].index_axis_mut(Axis(0), t),
                            None => d_params[k].view_mut(),
                        };
                        let share = share
                            .to_shape(slot.raw_dim())
                            .expect("verified: the parameter's shape");
                        slot += &share;
                    }
                }
                for (k, gradient) in backward.inputs.iter().enumerate() {
                    if let Some(id) = gradient {
                        let rows = value(*id).batch_rows(batch);
                        let at = if layer.inputs[k].per_step { t } else { 0 };
                        for (b, is_live) in live.iter().enumerate() {
                            if *is_live {
                                let mut slot = d_inputs[k].slice_mut(s![b, at, ..]);
                                slot += &rows.row(b);
                            }
                        }
                    }
                }
            }

            for (state, d_state) in layer.states.iter().zip(&d_states) {
                let name = names::initial_state(&layer.prefix, &state.name);
                initial_grads
                    .get_mut(&name)
                    .expect("made above")
                    .index_axis_mut(Axis(0), row)
                    .assign(d_state);
            }
            for (name, d_param) in layer_weights[layer_idx].names[direction]
                .iter()
                .zip(d_params)
            {
                outputs.insert(names::gradient(name), d_param);
            }
            for (info, d_input) in layer.inputs.iter().zip(d_inputs) {
                let d_input = if reverse && info.per_step {
                    reverse_valid(&d_input, lengths)
                } else {
                    d_input
                };
                match info.source {
                    InputSource::Previous => d_previous += &d_input,
                    InputSource::Network(idx) => input_grads[idx] += &d_input,
                }
            }
        }
        dy = d_previous;
    }

    for (input, grad) in network.inputs.iter().zip(input_grads) {
        let shape = inputs.float(&input.name)?.shape().to_vec();
        let grad = grad
            .into_dyn()
            .into_shape_with_order(shape)
            .expect("a context's gradient has its shape");
        outputs.insert(names::gradient(&input.name), grad);
    }
    for (name, grad) in initial_grads {
        outputs.insert(names::gradient(&name), grad.into_dyn());
    }
    Ok(outputs)
}

/// The seed named `name`, of exactly `shape`, or zeros when there is none.
fn seed<F: Float>(
    seeds: &impl Source<F>,
    name: &str,
    shape: &[usize],
) -> Result<ArrayD<F>, RnnError> {
    if seeds.contains(name) {
        seeds.float_shaped(name, shape)
    } else {
        Ok(ArrayD::zeros(shape))
    }
}

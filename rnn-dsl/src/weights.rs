//! The weight tensors a network reads: their names and shapes, and a
//! deterministic random set of them.

use rnn_runtime::init::{pytorch_bound, uniform, SplitMix64};
use rnn_runtime::layout::{RecurrentCell, RecurrentLayer};
use rnn_runtime::TensorMap;

use crate::check::Value;
use crate::ir::Network;

/// One weight tensor a network needs.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightSpec {
    /// Its tensor name (`weight_ih_l0`, `enc.bias_hh_l1_reverse`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// PyTorch's initialisation bound for it: `1/√H`, or `1/√fan_in` for a
    /// stateless layer (`nn.Linear`).
    pub bound: f32,
}

/// Every weight tensor of `network`, in layer, direction, parameter order.
pub fn specs(network: &Network) -> Vec<WeightSpec> {
    let mut specs = Vec::new();
    for layer in &network.layers {
        // A recurrent layer's bound is 1/√H (nn.LSTM, nn.GRU); a stateless
        // one's 1/√fan_in, as nn.Linear draws its weight and bias.
        let hidden = match layer.states.first() {
            Some(state) => state.size,
            None => layer
                .inputs
                .iter()
                .map(|input| input.size)
                .sum::<usize>()
                .max(1),
        };
        for direction in 0..layer.directions {
            for param in &layer.params {
                specs.push(WeightSpec {
                    name: layer.weight_name(param, direction),
                    shape: param.tensor_shape(),
                    bound: pytorch_bound(hidden),
                });
            }
        }
    }
    specs
}

/// The network's layers of built-in recurrent cells as [`rnn_runtime::layout`] describes them,
/// for reading other frameworks' weights. Other layers (user cells, `linear`, and the LSTM with
/// `proj_size`, which only PyTorch has) are not listed: their tensors keep this project's names
/// in every layout.
pub fn recurrent_layers(network: &Network) -> Vec<RecurrentLayer> {
    let mut layers = Vec::new();
    for layer in &network.layers {
        let cell = match layer.cell.as_str() {
            "lstm" => RecurrentCell::Lstm {
                peepholes: layer
                    .params
                    .iter()
                    .any(|param| param.name == "weight_peephole"),
            },
            "gru" => RecurrentCell::Gru {
                reset_after: layer.constant("reset_after") == Some(Value::Bool(true)),
            },
            "rnn_tanh" | "rnn_relu" => RecurrentCell::Rnn,
            _ => continue,
        };
        layers.push(RecurrentLayer {
            prefix: layer.prefix.clone(),
            stack_idx: layer.stack_idx,
            directions: layer.directions,
            cell,
            input_size: layer.inputs.iter().map(|input| input.size).sum(),
            hidden: layer.states[0].size,
        });
    }
    layers
}

/// Weights drawn as PyTorch draws them, `U(-1/√H, 1/√H)`, from `seed`.
pub fn random(network: &Network, seed: u64) -> TensorMap {
    let mut rng = SplitMix64::new(seed);
    let mut weights = TensorMap::new();
    for spec in specs(network) {
        weights.insert_f32(spec.name, uniform(&mut rng, &spec.shape, spec.bound));
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceFile;

    #[test]
    fn bidirectional_two_layer_lstm_has_pytorch_names() {
        let compiled = crate::compile(SourceFile::new(
            "t.rnn",
            "network N { input x: [5]; layer l = lstm(hidden = 3, layers = 2, bidirectional); unroll dynamic; }",
        ))
        .expect("compiles");
        let specs = specs(&compiled.model.networks[0]);
        let names: Vec<&str> = specs.iter().map(|spec| spec.name.as_str()).collect();
        assert_eq!(names.len(), 16);
        assert!(names.contains(&"weight_ih_l0"));
        assert!(names.contains(&"bias_hh_l1_reverse"));
        let ih_l1 = specs
            .iter()
            .find(|spec| spec.name == "weight_ih_l1")
            .expect("present");
        assert_eq!(ih_l1.shape, vec![12, 6]);
        let weights = random(&compiled.model.networks[0], 1);
        assert_eq!(weights.len(), 16);
    }
}

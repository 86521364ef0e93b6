//! The names of tensors a model reads and writes: one home for the
//! conventions that weight files, `rnnc run`'s inputs and outputs, the
//! interpreter and generated code share.
//!
//! Weights take PyTorch's names (`weight_ih_l0`, `bias_hh_l1_reverse`), so
//! a PyTorch `state_dict` loads as it is; with several `layer` statements
//! each name is prefixed with the layer's (`enc.weight_ih_l0`). Inputs are
//! named as the network names them, states as PyTorch's `nn.LSTM` takes
//! and returns them (`h0`, `c0`; `h_n`, `c_n`).

/// The output sequence.
pub const OUTPUT: &str = "y";

/// Per-sequence lengths.
pub const SEQ_LEN: &str = "seq_len";

/// The step count of a network with no per-step input under `unroll
/// dynamic`.
pub const STEPS: &str = "steps";

/// A layer statement's initial value of `state` (`h0`, `enc.c0`), given
/// the statement's prefix (`""`, or `"enc."` with several statements).
pub fn initial_state(prefix: &str, state: &str) -> String {
    format!("{prefix}{state}0")
}

/// A layer statement's final value of `state` (`h_n`, `enc.c_n`).
pub fn final_state(prefix: &str, state: &str) -> String {
    format!("{prefix}{state}_n")
}

/// A parameter of stacked layer `stack_idx` in a direction (0 forward, 1
/// backward): `weight_ih_l0`, `enc.weight_hh_l1_reverse`.
pub fn weight(prefix: &str, param: &str, stack_idx: usize, direction: usize) -> String {
    let reverse = if direction == 1 { "_reverse" } else { "" };
    format!("{prefix}{param}_l{stack_idx}{reverse}")
}

/// The plain name (`A`, `enc.A`) also accepted for the parameters of a
/// one-layer, one-direction user cell, as the `.rnn` file names them.
pub fn bare_weight(prefix: &str, param: &str) -> String {
    format!("{prefix}{param}")
}

/// The name of the gradient of tensor `name` in the interpreter's and
/// `rnnc grad`'s results: `grad_weight_ih_l0`, `grad_x`, `grad_h0`.
pub fn gradient(name: &str) -> String {
    format!("grad_{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_pytorch() {
        assert_eq!(weight("", "weight_ih", 0, 0), "weight_ih_l0");
        assert_eq!(weight("enc.", "bias_hh", 1, 1), "enc.bias_hh_l1_reverse");
        assert_eq!(initial_state("", "h"), "h0");
        assert_eq!(final_state("enc.", "c"), "enc.c_n");
        assert_eq!(bare_weight("", "A"), "A");
    }
}

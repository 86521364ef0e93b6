// The model file does not exist.
rnn_macros::rnn!(file = "ui/files/missing.rnn");

fn main() {}

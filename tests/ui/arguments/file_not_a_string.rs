// The model path must be a string literal.
rnn_macros::rnn!(file = models::tagger);

fn main() {}

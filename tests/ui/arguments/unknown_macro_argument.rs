// `path` is not an argument of `rnn!`: it takes `file` and `runtime`.
rnn_macros::rnn!(path = "models/tagger.rnn");

fn main() {}

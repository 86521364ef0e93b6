// The LSTM's hidden size is given nowhere.
rnn_macros::rnn! {
    network Tagger {
        input x: [32];
        layer enc = lstm(layers = 2);
        unroll dynamic;
    }
}

fn main() {
    let _ = Tagger::random(0);
}

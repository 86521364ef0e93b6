// A static unrolling of zero steps computes nothing.
rnn_macros::rnn! {
    network Tagger {
        input x: [32];
        layer enc = gru(hidden = 64);
        unroll static 0;
    }
}

fn main() {
    let _ = Tagger::random(0);
}

// Bucket lengths must be ascending.
rnn_macros::rnn! {
    network Tagger {
        input x: [32];
        layer enc = lstm(hidden = 64);
        unroll static buckets [10, 50, 20] else dynamic;
    }
}

fn main() {
    let _ = Tagger::random(0);
}

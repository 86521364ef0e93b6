// `hiden` is a typo for `hidden`.
rnn_macros::rnn! {
    network Tagger {
        input x: [32];
        layer enc = lstm(hiden = 64, layers = 2);
        unroll dynamic;
    }
}

fn main() {
    let _ = Tagger::from_safetensors("tagger.safetensors");
}

// `lsmt` is a typo for the built-in cell `lstm`.
rnn_macros::rnn! {
    network Tagger {
        input x: [32];
        layer enc = lsmt(hidden = 64);
        unroll dynamic;
    }
}

fn main() {
    let x = vec![0.0f32; 32];
    let output: TaggerOutput = Tagger::random(0).forward(&x, None, None).unwrap();
    let _ = output.y;
}

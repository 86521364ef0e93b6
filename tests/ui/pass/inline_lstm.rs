// Inline models build and run in a user crate.
rnn_macros::rnn! {
    // Comments are fine.
    network Tagger {
        input x: [4];
        layer enc = lstm(hidden = 3, layers = 2, bidirectional);
        unroll dynamic;
    }
}

mod rt {
    pub use rnn_runtime::*;
}

// A user cell, `^T` for transpose, and the runtime named through a re-export.
rnn_macros::rnn! {
    runtime = crate::rt;

    /// Doc comments are skipped like comments.
    cell my_rnn(x: [I]) -> h: [H] {
        param w: [H, I];
        param u: [H, H];
        h = tanh(w @ x + (u^T)^T @ h);
    }

    network Small {
        input x: [2];
        layer l = my_rnn(hidden = 5);
        unroll static 3;
    }
}

fn main() {
    let model = Tagger::random(0);
    let x = ndarray::Array3::<f32>::ones((2, 6, 4));
    let output: TaggerOutput = model.forward(x.view(), Some(&[6, 2]), None).unwrap();
    assert_eq!(output.y.shape(), &[2, 6, 6]);
    assert!(output.y.iter().all(|value| value.is_finite()));

    let small = Small::random(1)
        .forward(ndarray::Array3::zeros((1, 3, 2)).view(), None, None)
        .unwrap();
    assert_eq!(small.y.shape(), &[1, 3, 5]);
}

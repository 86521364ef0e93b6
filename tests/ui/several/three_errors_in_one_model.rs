// Every error is reported, each at its own token.
rnn_macros::rnn! {
    /// A doc comment is skipped like any comment.
    cell my_rnn(x: [I]) -> h: [H] {
        param w: [H, I];
        param u: [H, H];
        h = tahn(w @ x + u @ h);
    }

    network Tagger {
        input x: [32];
        layer enc = lstm(hidden = 64, bidirectionl);
        unroll static 0;
    }

    network Other { input x: [4]; layer l = my_rnn(hidden = 8); unroll dynamic; }
}

fn main() {
    let tagger = Tagger::random(0);
    let state: TaggerState = tagger.initial_state(2);
    let _ = Other::random(1).step(&state);
    let _: Option<OtherOutput> = None;
}

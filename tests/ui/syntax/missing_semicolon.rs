// The `let z = ...` line of a user cell has no `;`.
rnn_macros::rnn! {
    cell my_gru(x: [I]) -> h: [H] {
        param w_z: [H, I];
        param u_z: [H, H];
        let z = sigmoid(w_z @ x + u_z @ h)
        h = (1 - z) * h;
    }

    network Tagger { input x: [8]; layer l = my_gru(hidden = 16); unroll dynamic; }
}

fn main() {
    let _ = Tagger::random(0);
}

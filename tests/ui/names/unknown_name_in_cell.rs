// `h_tilde` is a typo for the binding `h_tild`.
rnn_macros::rnn! {
    cell my_gru(x: [I]) -> h: [H] {
        param w_z: [H, I];
        param u_z: [H, H];
        param w_h: [H, I];
        param u_h: [H, H];
        let z = sigmoid(w_z @ x + u_z @ h);
        let h_tild = tanh(w_h @ x + u_h @ h);
        h = (1 - z) * h + z * h_tilde;
    }

    network Tagger { input x: [8]; layer l = my_gru(hidden = 16); unroll dynamic; }
}

fn main() {
    let model = Tagger::random(0);
    let _state: TaggerState = model.initial_state(4);
}

// The recurrent term multiplies the input weight `w_z` ([H, I]) by `h` ([H]).
rnn_macros::rnn! {
    cell my_rnn(x: [I]) -> h: [H] {
        param w_z: [H, I];
        param u_z: [H, H];
        h = tanh(w_z @ x + w_z @ h);
    }

    network Tagger { input x: [8]; layer l = my_rnn(hidden = 16); unroll dynamic; }
}

fn main() {
    let _ = Tagger::random(0);
}

// A model from a file, with the runtime named through a re-export.
mod rt {
    pub use rnn_runtime::*;
}

rnn_macros::rnn!(file = "ui/pass/gru_counter.rnn", runtime = crate::rt);

fn main() {
    let model = Counter::random(0);
    let x = ndarray::Array3::<f32>::ones((2, 5, 3));
    let output = model.forward(x.view(), Some(&[5, 3]), None).unwrap();
    assert_eq!(output.y.shape(), &[2, 5, 2]);
    let state: CounterState = output.into_state();
    assert_eq!(state.h.shape(), &[1, 2, 2]);
}

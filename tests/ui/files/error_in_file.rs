// The model file has an error: the message names the file, line and column.
rnn_macros::rnn!(file = "ui/files/bad_model.rnn");

fn main() {
    let _ = Ista::random(0);
}

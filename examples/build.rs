//! Compiles the example models to Rust in `OUT_DIR` with the build-script
//! API; `examples/build_script.rs` includes the result.

fn main() -> Result<(), rnn_dsl::Error> {
    rnn_dsl::compile_files(&["models/tagger.rnn", "models/ista.rnn"])
}

//! UI tests of the `rnn!` macro: each `ui/<category>/*.rs` is one
//! user-facing failure whose compiler output must match its `.stderr`, and
//! `ui/pass/*.rs` must build and run.
//!
//! Regenerate with `TRYBUILD=overwrite cargo test -p rnn-tests --test ui`
//! and read the diff: the caret must sit under the offending token.

#[test]
fn ui() {
    // trybuild builds each case in a crate of its own under `target/`, so
    // `rnn!(file = "ui/...")` resolves against this directory through the
    // macro's override of `CARGO_MANIFEST_DIR` (dtolnay/trybuild#202).
    std::env::set_var("RNN_MACROS_MANIFEST_DIR", env!("CARGO_MANIFEST_DIR"));
    let cases = trybuild::TestCases::new();
    for category in [
        "syntax",
        "names",
        "shapes",
        "unroll",
        "several",
        "files",
        "arguments",
    ] {
        cases.compile_fail(format!("ui/{category}/*.rs"));
    }
    cases.pass("ui/pass/*.rs");
}

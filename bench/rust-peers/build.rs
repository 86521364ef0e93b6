//! Records the resolved versions of tract-onnx and candle-nn (from Cargo.lock)
//! so that the benchmark can name exactly what it measured.
use std::fs;

fn locked_version(lock: &str, name: &str) -> String {
    let needle = format!("name = \"{name}\"\n");
    lock.split("[[package]]")
        .find(|block| block.contains(&needle))
        .and_then(|block| block.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_else(|| "?".into())
}

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = fs::read_to_string("Cargo.lock").unwrap_or_default();
    println!("cargo:rustc-env=TRACT_VERSION={}", locked_version(&lock, "tract-onnx"));
    println!("cargo:rustc-env=CANDLE_VERSION={}", locked_version(&lock, "candle-nn"));
}

//! The PyTorch reference values (`data/torch_reference.json`), read.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

pub fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch_reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{} is readable: {error}", path.display()));
    serde_json::from_str(&text).expect("the reference is JSON")
}

pub fn tensor(value: &Value) -> ArrayD<f32> {
    let shape: Vec<usize> = value["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|n| n.as_u64().expect("dimension") as usize)
        .collect();
    let data: Vec<f32> = value["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("data fits the shape")
}

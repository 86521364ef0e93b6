//! Tests of [`TensorMap`](super::TensorMap): reading and writing safetensors, the checked
//! accessors, and the errors for bad files and misshaped tensors.

use ndarray::{arr1, arr2, ArrayD, IxDyn};
use proptest::collection::vec;
use proptest::prelude::*;
use safetensors::tensor::TensorView;

use super::*;

/// Serialises raw tensors with the safetensors crate, for dtypes `TensorMap` never writes.
fn raw_file(tensors: &[(&str, Dtype, &[usize], &[u8])]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|&(name, dtype, shape, data)| {
            let view = TensorView::new(dtype, shape.to_vec(), data).expect("consistent view");
            (name, view)
        })
        .collect();
    safetensors::serialize(views, None).expect("serialisable")
}

fn le_bytes<const N: usize, T: Copy>(values: &[T], to_bytes: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&value| to_bytes(value)).collect()
}

fn sample_map() -> TensorMap {
    let mut map = TensorMap::new();
    map.insert_f32(
        "weight_ih_l0",
        arr2(&[[1.5, -2.0, 0.0], [f32::MAX, f32::MIN_POSITIVE, -0.0]]).into_dyn(),
    );
    map.insert_f32("scale", ArrayD::from_elem(IxDyn(&[]), 0.25));
    map.insert_f32("empty", ArrayD::zeros(IxDyn(&[0, 4])));
    map.insert_i64("seq_len", arr1(&[3, 0, i64::MAX, i64::MIN]).into_dyn());
    map
}

fn bad_file_reason(result: Result<TensorMap>) -> String {
    match result {
        Err(RnnError::BadFile { reason, .. }) => reason,
        other => panic!("expected BadFile, got {other:?}"),
    }
}

#[test]
fn round_trip_keeps_f32_and_i64_tensors() {
    let map = sample_map();
    let bytes = map.to_bytes().unwrap();
    let loaded = TensorMap::from_bytes(&bytes, "<memory>").unwrap();
    assert_eq!(loaded, map);
    assert_eq!(
        loaded.names().collect::<Vec<_>>(),
        ["empty", "scale", "seq_len", "weight_ih_l0"]
    );
}

#[test]
fn to_bytes_writes_f32_and_i64_deterministically() {
    let map = sample_map();
    let bytes = map.to_bytes().unwrap();
    assert_eq!(bytes, map.clone().to_bytes().unwrap());
    let parsed = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(parsed.tensor("weight_ih_l0").unwrap().dtype(), Dtype::F32);
    assert_eq!(parsed.tensor("seq_len").unwrap().dtype(), Dtype::I64);
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    assert!(metadata.metadata().is_none());
}

#[test]
fn to_bytes_writes_logical_order_for_transposed_arrays() {
    let mut map = TensorMap::new();
    let transposed = arr2(&[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).reversed_axes();
    map.insert_f32("w", transposed.clone().into_dyn());
    let loaded = TensorMap::from_bytes(&map.to_bytes().unwrap(), "<memory>").unwrap();
    assert_eq!(loaded.f32("w").unwrap(), transposed.into_dyn());
}

#[test]
fn f64_tensor_loads_as_f32() {
    let values = [1.0, -0.1, 1e300, 2.5e-3];
    let bytes = raw_file(&[(
        "x",
        Dtype::F64,
        &[2, 2],
        &le_bytes(&values, f64::to_le_bytes),
    )]);
    let map = TensorMap::from_bytes(&bytes, "<memory>").unwrap();
    let x = map.f32_shaped("x", &[2, 2]).unwrap();
    let expected = [1.0, -0.1_f64 as f32, f32::INFINITY, 2.5e-3_f64 as f32];
    assert_eq!(x.iter().copied().collect::<Vec<_>>(), expected);
}

#[test]
fn half_precision_tensors_load_exactly() {
    // 1, -2, 0.5, 65504 (largest f16), 2^-24 (smallest subnormal), -0, infinity.
    let f16_bits: [u16; 7] = [0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000, 0x7c00];
    // 1, -2, 3.140625, smallest normal bf16 (= f32::MIN_POSITIVE).
    let bf16_bits: [u16; 4] = [0x3f80, 0xc000, 0x4049, 0x0080];
    let bytes = raw_file(&[
        (
            "half",
            Dtype::F16,
            &[7],
            &le_bytes(&f16_bits, u16::to_le_bytes),
        ),
        (
            "brain",
            Dtype::BF16,
            &[4],
            &le_bytes(&bf16_bits, u16::to_le_bytes),
        ),
    ]);
    let map = TensorMap::from_bytes(&bytes, "<memory>").unwrap();
    let half = map.f32("half").unwrap();
    let expected_half = [1.0, -2.0, 0.5, 65504.0, 2f32.powi(-24), -0.0, f32::INFINITY];
    assert_eq!(
        half.iter().map(|value| value.to_bits()).collect::<Vec<_>>(),
        expected_half.map(f32::to_bits)
    );
    assert_eq!(
        map.f32("brain")
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [1.0, -2.0, 3.140625, f32::MIN_POSITIVE]
    );
    assert!(f16_to_f32(0x7e00).is_nan());
}

#[test]
fn integer_and_bool_tensors_load_as_i64() {
    let bytes = raw_file(&[
        (
            "i32",
            Dtype::I32,
            &[3],
            &le_bytes(&[-7i32, 0, i32::MAX], i32::to_le_bytes),
        ),
        ("u8", Dtype::U8, &[2], &[0, 255]),
        ("bool", Dtype::BOOL, &[3], &[0, 1, 2]),
        (
            "u64",
            Dtype::U64,
            &[1],
            &le_bytes(&[1u64 << 40], u64::to_le_bytes),
        ),
    ]);
    let map = TensorMap::from_bytes(&bytes, "<memory>").unwrap();
    let values = |name: &str| match map.get(name) {
        Some(Tensor::I64(array)) => array.iter().copied().collect::<Vec<_>>(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(values("i32"), [-7, 0, i64::from(i32::MAX)]);
    assert_eq!(values("u8"), [0, 255]);
    assert_eq!(values("bool"), [0, 1, 1]);
    assert_eq!(values("u64"), [1 << 40]);
}

#[test]
fn unsupported_dtype_does_not_spoil_the_other_tensors() {
    let bytes = raw_file(&[
        ("fp8", Dtype::F8_E4M3, &[2], &[0x38, 0x40]),
        (
            "huge",
            Dtype::U64,
            &[1],
            &le_bytes(&[u64::MAX], u64::to_le_bytes),
        ),
        (
            "x",
            Dtype::F32,
            &[1],
            &le_bytes(&[3.0f32], f32::to_le_bytes),
        ),
    ]);
    let map = TensorMap::from_bytes(&bytes, "<memory>").unwrap();
    assert_eq!(map.len(), 3);
    assert_eq!(map.f32("x").unwrap().into_raw_vec_and_offset().0, [3.0]);
    let fp8 = map.get("fp8").unwrap();
    assert_eq!((fp8.dtype(), fp8.shape()), ("F8_E4M3", &[2][..]));
    assert!(matches!(map.get("huge"), Some(Tensor::Unsupported { .. })));

    let error = map.f32("fp8").unwrap_err();
    assert_eq!(
        error.to_string(),
        "tensor `fp8`: expected dtype F32, found F8_E4M3"
    );
    assert!(matches!(
        map.lengths("fp8", 2, 5),
        Err(RnnError::WrongDtype { .. })
    ));
    assert!(matches!(
        map.to_bytes(),
        Err(RnnError::WrongDtype { tensor, .. }) if tensor == "fp8"
    ));
}

#[test]
fn missing_tensor_lists_available_names() {
    let error = sample_map().f32("weight_ih_l1").unwrap_err();
    let RnnError::MissingTensor { tensor, available } = &error else {
        panic!("expected MissingTensor, got {error:?}");
    };
    assert_eq!(tensor, "weight_ih_l1");
    assert_eq!(available, &["empty", "scale", "seq_len", "weight_ih_l0"]);
    let message = error.to_string();
    assert!(
        message.contains("did you mean `weight_ih_l0`?"),
        "{message}"
    );
    assert!(message.contains("`seq_len`"), "{message}");
}

#[test]
fn integer_tensor_is_not_a_float_tensor() {
    let error = sample_map().f32("seq_len").unwrap_err();
    assert_eq!(
        error.to_string(),
        "tensor `seq_len`: expected dtype F32, found I64"
    );
}

#[test]
fn shape_mismatch_names_both_shapes() {
    let map = sample_map();
    let error = map.f32_shaped("weight_ih_l0", &[2, 4]).unwrap_err();
    assert!(matches!(error, RnnError::ShapeMismatch { .. }));
    let message = error.to_string();
    assert!(message.contains("`weight_ih_l0`"), "{message}");
    assert!(message.contains("[2, 4]"), "{message}");
    assert!(message.contains("[2, 3]"), "{message}");
    assert_eq!(
        map.f32_shaped("scale", &[])
            .unwrap()
            .into_raw_vec_and_offset()
            .0,
        [0.25]
    );
}

#[test]
fn every_truncation_of_a_real_file_is_a_bad_file() {
    let bytes = sample_map().to_bytes().unwrap();
    for len in 0..bytes.len() {
        let reason = bad_file_reason(TensorMap::from_bytes(&bytes[..len], "cut.safetensors"));
        assert!(!reason.is_empty());
    }
    let cut = TensorMap::from_bytes(&bytes[..bytes.len() - 1], "cut.safetensors");
    let message = cut.unwrap_err().to_string();
    assert!(message.starts_with("`cut.safetensors` is not a valid safetensors file: "));
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn garbage_is_a_bad_file() {
    for garbage in [
        &b""[..],
        b"\x01",
        b"not a safetensors file at all",
        b"\x04\x00\x00\x00\x00\x00\x00\x00null",
        // A valid empty file followed by a stray byte.
        b"\x02\x00\x00\x00\x00\x00\x00\x00{}\x00",
        b"\xff\xff\xff\xff\xff\xff\xff\xff{}",
        b"\x11\x00\x00\x00\x00\x00\x00\x00{\"x\":{\"dtype\":1}}",
    ] {
        bad_file_reason(TensorMap::from_bytes(garbage, "<memory>"));
    }
}

#[test]
fn header_with_offsets_near_usize_max_is_a_bad_file() {
    // Eight tensors of 2^61 - 1 bytes and one of 7 declare 2^64 - 1 bytes of data, which the
    // parser's final length check would overflow on (see `deserialize`).
    let big = (1usize << 61) - 1;
    let mut entries = Vec::new();
    let mut start = 0usize;
    for (idx, size) in std::iter::repeat_n(big, 8).chain([7]).enumerate() {
        let end = start.wrapping_add(size);
        entries.push(format!(
            "\"t{idx}\":{{\"dtype\":\"U8\",\"shape\":[{size}],\"data_offsets\":[{start},{end}]}}"
        ));
        start = end;
    }
    assert_eq!(start, usize::MAX);
    let header = format!("{{{}}}", entries.join(","));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bad_file_reason(TensorMap::from_bytes(&bytes, "<memory>"));
}

#[test]
fn lengths_accepts_integers_and_whole_floats() {
    let mut map = TensorMap::new();
    map.insert_i64("seq_len", arr1(&[5, 0, 3]).into_dyn());
    map.insert_f32("float_len", arr1(&[5.0, 0.0, -0.0]).into_dyn());
    assert_eq!(map.lengths("seq_len", 3, 5).unwrap(), [5, 0, 3]);
    assert_eq!(map.lengths("float_len", 3, 5).unwrap(), [5, 0, 0]);
}

#[test]
fn lengths_rejects_bad_values_naming_index_and_value() {
    let cases: [(Tensor, &str); 7] = [
        (
            Tensor::I64(arr1(&[4, -1, 2]).into_dyn()),
            "tensor `seq_len`: length -1 at index 1 is negative",
        ),
        (
            Tensor::I64(arr1(&[4, 6, 2]).into_dyn()),
            "tensor `seq_len`: length 6 at index 1 is above max_time 5",
        ),
        (
            Tensor::F32(arr1(&[4.0, f32::NAN, 2.0]).into_dyn()),
            "tensor `seq_len`: length at index 1 is NaN",
        ),
        (
            Tensor::F32(arr1(&[4.0, 2.5, 2.0]).into_dyn()),
            "tensor `seq_len`: length 2.5 at index 1 is not a whole number",
        ),
        (
            Tensor::F32(arr1(&[4.0, -1.0, 2.0]).into_dyn()),
            "tensor `seq_len`: length -1 at index 1 is negative",
        ),
        (
            Tensor::F32(arr1(&[4.0, f32::INFINITY, 2.0]).into_dyn()),
            "tensor `seq_len`: length inf at index 1 is above max_time 5",
        ),
        (
            Tensor::F32(arr1(&[4.0, 1e30, 2.0]).into_dyn()),
            "tensor `seq_len`: length 1000000000000000000000000000000 at index 1 is above \
             max_time 5",
        ),
    ];
    for (tensor, expected) in cases {
        let mut map = TensorMap::new();
        map.tensors.insert("seq_len".to_owned(), tensor);
        let error = map.lengths("seq_len", 3, 5).unwrap_err();
        assert!(matches!(error, RnnError::InvalidValue { .. }), "{error:?}");
        assert_eq!(error.to_string(), expected);
    }
}

#[test]
fn lengths_rejects_wrong_count_and_rank() {
    let mut map = TensorMap::new();
    map.insert_i64("seq_len", arr1(&[1, 2]).into_dyn());
    map.insert_i64("matrix", arr2(&[[1, 2, 3]]).into_dyn());
    assert_eq!(
        map.lengths("seq_len", 3, 5).unwrap_err().to_string(),
        "tensor `seq_len`: expected shape [3], found [2]"
    );
    assert_eq!(
        map.lengths("matrix", 3, 5).unwrap_err().to_string(),
        "tensor `matrix`: expected shape [3], found [1, 3]"
    );
    assert!(matches!(
        map.lengths("lengths", 2, 5),
        Err(RnnError::MissingTensor { .. })
    ));
}

#[test]
fn collection_accessors() {
    let mut map = TensorMap::new();
    assert!(map.is_empty());
    map.insert_i64("b", arr1(&[1]).into_dyn());
    map.insert_f32("a", arr1(&[1.0]).into_dyn());
    map.insert_f32("b", arr1(&[2.0, 3.0]).into_dyn());
    assert_eq!(map.len(), 2);
    assert!(map.contains("a") && !map.contains("c"));
    let summary: Vec<(&str, &str, &[usize])> = map
        .iter()
        .map(|(name, tensor)| (name, tensor.dtype(), tensor.shape()))
        .collect();
    assert_eq!(summary, [("a", "F32", &[1][..]), ("b", "F32", &[2][..])]);
}

proptest! {
    #[test]
    fn from_bytes_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512)) {
        let _ = TensorMap::from_bytes(&bytes, "<memory>");
    }

    #[test]
    fn from_bytes_never_panics_on_corrupted_files(
        cut in any::<prop::sample::Index>(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut bytes = sample_map().to_bytes().unwrap();
        for (position, value) in flips {
            let idx = position.index(bytes.len());
            bytes[idx] ^= value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = TensorMap::from_bytes(&bytes, "<memory>");
    }

    #[test]
    fn from_bytes_never_panics_on_arbitrary_headers(
        dtype in prop::sample::select(vec!["F32", "F64", "F16", "I64", "U64", "BOOL", "F4", "C64", "X"]),
        shape in vec(0usize..5, 0..4),
        offsets in (0usize..64, 0usize..64),
        data_len in 0usize..64,
    ) {
        let header = format!(
            "{{\"t\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{},{}]}}}}",
            offsets.0, offsets.1
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data_len, 0x3f);
        let _ = TensorMap::from_bytes(&bytes, "<memory>");
    }
}

#[test]
fn a_column_major_tensor_is_held_as_rows() {
    // A transposed matrix's copy is column-major; generated code reshapes
    // parameters, which needs rows.
    let matrix =
        ndarray::Array2::from_shape_vec((2, 3), vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let transposed = matrix.t().mapv(|v| v);
    assert!(!transposed.is_standard_layout());
    let mut map = TensorMap::new();
    map.insert_f32("W", transposed.clone().into_dyn());
    let held = map.f32("W").unwrap();
    assert!(held.is_standard_layout());
    assert_eq!(held, transposed.into_dyn());
    let flat = held.into_shape_with_order(6).expect("rows reshape");
    assert_eq!(flat.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
}

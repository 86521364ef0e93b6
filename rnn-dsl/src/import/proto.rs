//! The part of ONNX's protobuf schema (`onnx/onnx.proto3`) that `rnnc import` reads, declared
//! with prost's derive; field numbers are the schema's. Fields not declared here are skipped
//! by the decoder, so a model with training information, sparse initializers or metadata
//! decodes as well as any.
//!
//! Also the decoding of a `TensorProto`'s values, which may be in `raw_data` (little-endian)
//! or in the typed repeated field, and of the attributes the importer reads.

// The fields are onnx.proto3's, under its names, and documented there.
#![allow(missing_docs)]

use ndarray::ArrayD;
use prost::Message;

/// `ModelProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
}

/// `OperatorSetIdProto`.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `GraphProto`.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

/// `NodeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// `AttributeProto` (graphs and sparse tensors left out: no operator read here has them).
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

/// `ValueInfoProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `TypeProto`, tensors only (a sequence or map type decodes with `tensor_type` absent).
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

/// `TypeProto.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a size, a symbol, or neither (unknown).
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// `TensorProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

/// `StringStringEntryProto`.
#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `TensorProto.DataType` values the importer reads.
pub mod data_type {
    pub const FLOAT: i32 = 1;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const DOUBLE: i32 = 11;

    /// A data type's name as ONNX spells it, for messages.
    pub fn name(data_type: i32) -> &'static str {
        const NAMES: [&str; 17] = [
            "UNDEFINED",
            "FLOAT",
            "UINT8",
            "INT8",
            "UINT16",
            "INT16",
            "INT32",
            "INT64",
            "STRING",
            "BOOL",
            "FLOAT16",
            "DOUBLE",
            "UINT32",
            "UINT64",
            "COMPLEX64",
            "COMPLEX128",
            "BFLOAT16",
        ];
        usize::try_from(data_type)
            .ok()
            .and_then(|index| NAMES.get(index))
            .copied()
            .unwrap_or("an unknown data type")
    }
}

/// A decoded tensor's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// `FLOAT` (and `DOUBLE`, narrowed: weights are read as `f32`).
    F32(ArrayD<f32>),
    /// `INT32` and `INT64`.
    I64(ArrayD<i64>),
}

impl TensorProto {
    /// The tensor's values in its shape; a message saying what is wrong otherwise. Data in an
    /// external file is an error: see [`TensorProto::values_in`].
    pub fn values(&self) -> Result<Values, String> {
        self.values_in(None)
    }

    /// The tensor's values, its external data (ONNX's `location`, `offset`, `length`) read
    /// from a file in `dir`, the model's directory: how PyTorch's exporter saves weights by
    /// default. A location that leaves `dir` is refused, as ONNX's checker refuses it.
    pub fn values_in(&self, dir: Option<&std::path::Path>) -> Result<Values, String> {
        if self.data_location == 1 || !self.external_data.is_empty() {
            let bytes = self.external_bytes(dir)?;
            return self.decode_values(&bytes);
        }
        self.decode_values(&self.raw_data)
    }

    /// The bytes of external data.
    fn external_bytes(&self, dir: Option<&std::path::Path>) -> Result<Vec<u8>, String> {
        use std::io::{Read, Seek, SeekFrom};
        let entry = |key: &str| {
            self.external_data
                .iter()
                .find(|entry| entry.key == key)
                .map(|entry| entry.value.as_str())
        };
        let Some(dir) = dir else {
            return Err(
                "its data is in an external file, and no directory to read it from was given"
                    .into(),
            );
        };
        let location = entry("location").ok_or("its external data has no `location`")?;
        let relative = std::path::Path::new(location);
        if relative.is_absolute()
            || relative
                .components()
                .any(|part| !matches!(part, std::path::Component::Normal(_)))
        {
            return Err(format!(
                "its external data's location `{location}` is not a file beside the model"
            ));
        }
        let number = |key: &str| -> Result<Option<u64>, String> {
            entry(key)
                .map(|text| {
                    text.parse::<u64>()
                        .map_err(|_| format!("its external data's {key} `{text}` is not a number"))
                })
                .transpose()
        };
        let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
        let path = dir.join(relative);
        let mut file = std::fs::File::open(&path)
            .map_err(|error| format!("its external data {}: {error}", path.display()))?;
        let size = file
            .metadata()
            .map_err(|error| format!("its external data {}: {error}", path.display()))?
            .len();
        let length = length.unwrap_or(size.saturating_sub(offset));
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(format!(
                "its external data is bytes {offset}..+{length} of {}, which has {size}",
                path.display()
            ));
        }
        let mut bytes =
            vec![0; usize::try_from(length).map_err(|_| "its external data is too large")?];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|error| format!("its external data {}: {error}", path.display()))?;
        Ok(bytes)
    }

    /// The values, with `raw_data` (the message's own, or the external file's) in place of
    /// the field.
    fn decode_values(&self, raw_data: &[u8]) -> Result<Values, String> {
        let shape: Vec<usize> = self
            .dims
            .iter()
            .map(|&dim| usize::try_from(dim).map_err(|_| format!("dimension {dim} is negative")))
            .collect::<Result<_, _>>()?;
        let count = shape
            .iter()
            .try_fold(1usize, |count, &dim| count.checked_mul(dim))
            .ok_or("its dimensions overflow")?;
        let raw = !raw_data.is_empty();
        let (width, typed_len) = match self.data_type {
            data_type::FLOAT => (4, self.float_data.len()),
            data_type::DOUBLE => (8, self.double_data.len()),
            data_type::INT32 => (4, self.int32_data.len()),
            data_type::INT64 => (8, self.int64_data.len()),
            other => {
                return Err(format!(
                    "its data type is {}; `rnnc import` reads FLOAT, DOUBLE, INT32 and INT64",
                    data_type::name(other)
                ))
            }
        };
        let found = if raw {
            raw_data.len() / width
        } else {
            typed_len
        };
        if found != count || (raw && !raw_data.len().is_multiple_of(width)) {
            return Err(format!(
                "its dimensions {:?} need {count} values but it holds {}",
                self.dims,
                if raw {
                    format!("{} bytes", raw_data.len())
                } else {
                    format!("{typed_len} values")
                }
            ));
        }
        let floats = |values: Vec<f32>| {
            ArrayD::from_shape_vec(shape.clone(), values)
                .map(Values::F32)
                .map_err(|error| error.to_string())
        };
        let ints = |values: Vec<i64>| {
            ArrayD::from_shape_vec(shape.clone(), values)
                .map(Values::I64)
                .map_err(|error| error.to_string())
        };
        let chunks = |width: usize| raw_data.chunks_exact(width);
        match (self.data_type, raw) {
            (data_type::FLOAT, true) => floats(
                chunks(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            (data_type::FLOAT, false) => floats(self.float_data.clone()),
            (data_type::DOUBLE, true) => floats(
                chunks(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                    .collect(),
            ),
            (data_type::DOUBLE, false) => {
                floats(self.double_data.iter().map(|&v| v as f32).collect())
            }
            (data_type::INT32, true) => ints(
                chunks(4)
                    .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .collect(),
            ),
            (data_type::INT32, false) => ints(self.int32_data.iter().map(|&v| v.into()).collect()),
            (data_type::INT64, true) => ints(
                chunks(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
            ),
            (_, _) => ints(self.int64_data.clone()),
        }
    }
}

/// Decodes a `ModelProto`.
pub fn model(bytes: &[u8]) -> Result<ModelProto, prost::DecodeError> {
    ModelProto::decode(bytes)
}

/// Decodes a `TensorProto` (ONNX's test data files, `input_0.pb`).
pub fn tensor(bytes: &[u8]) -> Result<TensorProto, prost::DecodeError> {
    TensorProto::decode(bytes)
}

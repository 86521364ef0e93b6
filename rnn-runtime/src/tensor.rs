//! Named tensors: loading and saving safetensors files, and typed access with shape checks.
//!
//! Input: safetensors bytes (from a file or memory) or arrays inserted by the caller.
//! Output: a [`TensorMap`] whose every entry is an `f32` array, an `i64` array, or a record of a
//! dtype this runtime does not compute with.
//! After loading, floating-point tensors (F64, F32, F16, BF16) are `f32`, and integer and boolean
//! tensors are `i64`; all are owned, C-ordered arrays.
//! Accessors hand out owned copies and check names, dtypes and shapes, returning a
//! [`RnnError`] that names the tensor instead of panicking.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::panic;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensorError, SafeTensors, View};

use crate::error::{Result, RnnError};

/// The origin reported in errors about bytes that did not come from a file.
const MEMORY_ORIGIN: &str = "<memory>";

/// One named tensor's data, after conversion to one of the two element types the runtime
/// computes with.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    /// Floating-point data. F64, F16 and BF16 tensors are converted to this on load; F64 values
    /// are rounded to nearest, and those beyond the `f32` range become infinite.
    F32(ArrayD<f32>),
    /// Integer or boolean data. I8, I16, I32, U8, U16, U32 and U64 tensors are converted to this
    /// on load, and BOOL becomes 0 or 1.
    I64(ArrayD<i64>),
    /// A tensor whose dtype the runtime does not compute with (for example `F8_E4M3` or `C64`),
    /// or a U64 tensor holding values above `i64::MAX`.
    /// Only its description is kept; asking for its data gives [`RnnError::WrongDtype`].
    Unsupported {
        /// The dtype as the file spells it, e.g. `F8_E4M3`.
        dtype: String,
        /// The shape recorded in the file.
        shape: Vec<usize>,
    },
}

impl Tensor {
    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(array) => array.shape(),
            Tensor::I64(array) => array.shape(),
            Tensor::Unsupported { shape, .. } => shape,
        }
    }

    /// The name of the element type as used in error messages: `F32`, `I64`, or the file's own
    /// spelling for an unsupported dtype.
    pub fn dtype(&self) -> &str {
        match self {
            Tensor::F32(_) => "F32",
            Tensor::I64(_) => "I64",
            Tensor::Unsupported { dtype, .. } => dtype,
        }
    }
}

/// An ordered collection of named tensors, such as the weights of a model or the inputs of one
/// run; the contents of one safetensors file.
///
/// Names are kept sorted, so iteration, error messages and saved files are deterministic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorMap {
    tensors: BTreeMap<String, Tensor>,
}

impl TensorMap {
    /// An empty collection.
    pub fn new() -> TensorMap {
        TensorMap::default()
    }

    /// Reads a safetensors file.
    ///
    /// # Errors
    ///
    /// [`RnnError::Io`] if the file cannot be read, and [`RnnError::BadFile`] if its contents are
    /// not a complete, valid safetensors file (for example when it is truncated).
    /// A tensor of an unsupported dtype is not an error here; see [`Tensor::Unsupported`].
    pub fn load(path: impl AsRef<Path>) -> Result<TensorMap> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| RnnError::Io {
            path: path.display().to_string(),
            source,
        })?;
        TensorMap::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses the bytes of a safetensors file; `origin` names them in errors (a path, or
    /// `"<memory>"`).
    ///
    /// # Errors
    ///
    /// [`RnnError::BadFile`] if the bytes are not a complete, valid safetensors file.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<TensorMap> {
        let bad_file = |reason: String| RnnError::BadFile {
            path: origin.to_owned(),
            reason,
        };
        let safetensors = deserialize(bytes).map_err(bad_file)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in safetensors.iter() {
            let tensor = decode_tensor(view.dtype(), view.shape(), view.data())
                .map_err(|reason| bad_file(format!("tensor `{name}`: {reason}")))?;
            tensors.insert(name.to_owned(), tensor);
        }
        Ok(TensorMap { tensors })
    }

    /// Writes the collection to a safetensors file, replacing any existing file.
    ///
    /// # Errors
    ///
    /// [`RnnError::WrongDtype`] if a tensor is [`Tensor::Unsupported`] (its data was not kept),
    /// [`RnnError::Io`] if the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let bytes = self.serialize(&origin)?;
        fs::write(path, bytes).map_err(|source| RnnError::Io {
            path: origin,
            source,
        })
    }

    /// Serialises the collection in the safetensors format.
    ///
    /// `F32` tensors are written as F32 and `I64` tensors as I64, with no metadata.
    /// The same collection always gives the same bytes.
    ///
    /// # Errors
    ///
    /// [`RnnError::WrongDtype`] if a tensor is [`Tensor::Unsupported`] (its data was not kept).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.serialize(MEMORY_ORIGIN)
    }

    /// Adds an `f32` tensor, replacing any tensor of the same name. Held in
    /// row-major order whatever `array`'s (a transposed view's copy is
    /// column-major): readers reshape and save it as rows.
    pub fn insert_f32(&mut self, name: impl Into<String>, array: ArrayD<f32>) {
        self.tensors
            .insert(name.into(), Tensor::F32(standard_layout(array)));
    }

    /// Adds a tensor, replacing any tensor of the same name (row-major, as
    /// [`TensorMap::insert_f32`]).
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let tensor = match tensor {
            Tensor::F32(array) => Tensor::F32(standard_layout(array)),
            Tensor::I64(array) => Tensor::I64(standard_layout(array)),
            other => other,
        };
        self.tensors.insert(name.into(), tensor);
    }

    /// Adds an `i64` tensor, replacing any tensor of the same name
    /// (row-major, as [`TensorMap::insert_f32`]).
    pub fn insert_i64(&mut self, name: impl Into<String>, array: ArrayD<i64>) {
        self.tensors
            .insert(name.into(), Tensor::I64(standard_layout(array)));
    }

    /// Whether a tensor of this name is present, whatever its dtype.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor names, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensors with their names, in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors
            .iter()
            .map(|(name, tensor)| (name.as_str(), tensor))
    }

    /// The tensor of this name, if present.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the collection holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// A copy of a floating-point tensor, whatever its shape.
    ///
    /// # Errors
    ///
    /// [`RnnError::MissingTensor`] if there is no tensor of this name, [`RnnError::WrongDtype`]
    /// if it is not floating-point.
    pub fn f32(&self, name: &str) -> Result<ArrayD<f32>> {
        self.f32_ref(name).cloned()
    }

    /// A copy of a floating-point tensor that must have exactly the `expected` shape.
    ///
    /// # Errors
    ///
    /// [`RnnError::MissingTensor`] if there is no tensor of this name, [`RnnError::WrongDtype`]
    /// if it is not floating-point, [`RnnError::ShapeMismatch`] if its shape differs.
    pub fn f32_shaped(&self, name: &str, expected: &[usize]) -> Result<ArrayD<f32>> {
        let array = self.f32_ref(name)?;
        if array.shape() != expected {
            return Err(RnnError::ShapeMismatch {
                tensor: name.to_owned(),
                expected: expected.to_vec(),
                found: array.shape().to_vec(),
            });
        }
        Ok(array.clone())
    }

    /// Reads a vector of per-sequence lengths, such as `seq_len`.
    ///
    /// The tensor must be one-dimensional with `batch` entries, and every entry must be a whole
    /// number in `0..=max_time`.
    /// Integer tensors are the norm; floating-point tensors are accepted when every value is
    /// whole.
    ///
    /// # Errors
    ///
    /// [`RnnError::MissingTensor`] if there is no tensor of this name,
    /// [`RnnError::WrongDtype`] if its dtype is unsupported,
    /// [`RnnError::ShapeMismatch`] if its shape is not `[batch]`,
    /// [`RnnError::InvalidValue`] naming the first entry that is negative, above `max_time`, not
    /// a whole number, or NaN.
    pub fn lengths(&self, name: &str, batch: usize, max_time: usize) -> Result<Vec<usize>> {
        let tensor = self.require(name)?;
        if tensor.shape() != [batch] {
            return Err(RnnError::ShapeMismatch {
                tensor: name.to_owned(),
                expected: vec![batch],
                found: tensor.shape().to_vec(),
            });
        }
        let invalid = |reason: String| RnnError::InvalidValue {
            tensor: name.to_owned(),
            reason,
        };
        match tensor {
            Tensor::I64(array) => array
                .iter()
                .enumerate()
                .map(|(idx, &value)| integer_length(idx, value, max_time).map_err(invalid))
                .collect(),
            Tensor::F32(array) => array
                .iter()
                .enumerate()
                .map(|(idx, &value)| float_length(idx, value, max_time).map_err(invalid))
                .collect(),
            Tensor::Unsupported { dtype, .. } => Err(RnnError::WrongDtype {
                tensor: name.to_owned(),
                expected: "I64".to_owned(),
                found: dtype.clone(),
            }),
        }
    }

    fn require(&self, name: &str) -> Result<&Tensor> {
        self.get(name).ok_or_else(|| RnnError::MissingTensor {
            tensor: name.to_owned(),
            available: self.names().map(str::to_owned).collect(),
        })
    }

    pub(crate) fn f32_ref(&self, name: &str) -> Result<&ArrayD<f32>> {
        match self.require(name)? {
            Tensor::F32(array) => Ok(array),
            other => Err(RnnError::WrongDtype {
                tensor: name.to_owned(),
                expected: "F32".to_owned(),
                found: other.dtype().to_owned(),
            }),
        }
    }

    /// [`TensorMap::to_bytes`], with `origin` naming the destination in errors.
    fn serialize(&self, origin: &str) -> Result<Vec<u8>> {
        let encoded = self
            .tensors
            .iter()
            .map(|(name, tensor)| encode_tensor(name, tensor).map(|raw| (name.as_str(), raw)))
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(encoded, None).map_err(|error| RnnError::BadFile {
            path: origin.to_owned(),
            reason: format!("cannot serialise: {error}"),
        })
    }
}

/// Parses a safetensors buffer, with messages that say what a truncated file looks like.
fn deserialize(bytes: &[u8]) -> std::result::Result<SafeTensors<'_>, String> {
    // safetensors 0.8 adds the declared data length to the header length unchecked, so with
    // overflow checks on, a header whose offsets sum to nearly `usize::MAX` panics instead of
    // returning an error (https://github.com/safetensors/safetensors/pull/808). Such bytes are
    // just a bad file, so the panic is turned back into one. With `panic = "abort"` this guard
    // cannot help; release builds do not check overflow and reject the file normally.
    let parsed = panic::catch_unwind(|| SafeTensors::deserialize(bytes));
    match parsed {
        Ok(Ok(safetensors)) => Ok(safetensors),
        Ok(Err(error)) => Err(describe_parse_error(&error)),
        Err(_) => Err("tensor offsets overflow the file size".to_owned()),
    }
}

fn describe_parse_error(error: &SafeTensorError) -> String {
    match error {
        SafeTensorError::HeaderTooSmall => {
            "shorter than the 8-byte header length (truncated or empty)".to_owned()
        }
        SafeTensorError::InvalidHeaderLength => {
            "the header length runs past the end of the data (truncated, or not safetensors)"
                .to_owned()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensor data does not match the sizes in the header (truncated or padded)"
                .to_owned()
        }
        other => other.to_string(),
    }
}

/// Converts one tensor's little-endian bytes to the runtime's element types.
///
/// The caller has checked, through the safetensors header validation, that `data` holds exactly
/// as many bytes as `shape` and `dtype` require.
fn decode_tensor(
    dtype: Dtype,
    shape: &[usize],
    data: &[u8],
) -> std::result::Result<Tensor, String> {
    if let Some(values) = decode_floats(dtype, data) {
        return shaped(shape, values).map(Tensor::F32);
    }
    if let Some(values) = decode_integers(dtype, data) {
        return shaped(shape, values).map(Tensor::I64);
    }
    let dtype = if dtype == Dtype::U64 {
        "U64 (values above i64::MAX)".to_owned()
    } else {
        dtype.to_string()
    };
    Ok(Tensor::Unsupported {
        dtype,
        shape: shape.to_vec(),
    })
}

/// The values of a floating-point tensor as `f32`, or `None` for other dtypes.
fn decode_floats(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let values = match dtype {
        Dtype::F32 => decode(data, f32::from_le_bytes),
        // Rounding to the nearest f32 is the point of this conversion.
        Dtype::F64 => decode(data, |bytes| f64::from_le_bytes(bytes) as f32),
        Dtype::F16 => decode(data, |bytes| f16_to_f32(u16::from_le_bytes(bytes))),
        Dtype::BF16 => decode(data, |bytes| bf16_to_f32(u16::from_le_bytes(bytes))),
        _ => return None,
    };
    Some(values)
}

/// The values of an integer or boolean tensor as `i64`, or `None` for other dtypes and for U64
/// data that does not fit.
fn decode_integers(dtype: Dtype, data: &[u8]) -> Option<Vec<i64>> {
    let values = match dtype {
        Dtype::BOOL => decode(data, |[byte]: [u8; 1]| i64::from(byte != 0)),
        Dtype::U8 => decode(data, |[byte]: [u8; 1]| i64::from(byte)),
        Dtype::I8 => decode(data, |bytes| i64::from(i8::from_le_bytes(bytes))),
        Dtype::U16 => decode(data, |bytes| i64::from(u16::from_le_bytes(bytes))),
        Dtype::I16 => decode(data, |bytes| i64::from(i16::from_le_bytes(bytes))),
        Dtype::U32 => decode(data, |bytes| i64::from(u32::from_le_bytes(bytes))),
        Dtype::I32 => decode(data, |bytes| i64::from(i32::from_le_bytes(bytes))),
        Dtype::I64 => decode(data, i64::from_le_bytes),
        Dtype::U64 => {
            return decode(data, u64::from_le_bytes)
                .into_iter()
                .map(|value| i64::try_from(value).ok())
                .collect()
        }
        _ => return None,
    };
    Some(values)
}

/// Decodes consecutive `N`-byte little-endian elements.
fn decode<const N: usize, T>(data: &[u8], from_bytes: impl Fn([u8; N]) -> T) -> Vec<T> {
    debug_assert_eq!(
        data.len() % N,
        0,
        "tensor data is not a whole number of elements"
    );
    data.chunks_exact(N)
        .map(|chunk| from_bytes(chunk.try_into().expect("chunks_exact yields N-byte chunks")))
        .collect()
}

fn shaped<T>(shape: &[usize], values: Vec<T>) -> std::result::Result<ArrayD<T>, String> {
    ArrayD::from_shape_vec(IxDyn(shape), values)
        .map_err(|error| format!("cannot hold shape {shape:?} in memory: {error}"))
}

/// IEEE 754 binary16 to binary32; exact for every input, NaN payloads kept.
fn f16_to_f32(bits: u16) -> f32 {
    /// The value of the lowest mantissa bit of a subnormal f16: 2^-24.
    const F16_SUBNORMAL_UNIT: f32 = 1.0 / 16_777_216.0;
    /// Difference between the f32 exponent bias (127) and the f16 one (15).
    const EXPONENT_BIAS_DIFFERENCE: u32 = 127 - 15;

    let sign = u32::from(bits & 0x8000) << 16;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = bits & 0x03ff;
    let magnitude = match exponent {
        0 => (f32::from(mantissa) * F16_SUBNORMAL_UNIT).to_bits(),
        0x1f => 0x7f80_0000 | (u32::from(mantissa) << 13),
        _ => ((exponent + EXPONENT_BIAS_DIFFERENCE) << 23) | (u32::from(mantissa) << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// bfloat16 to binary32: bfloat16 is the upper half of an f32, so this is exact.
fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// A tensor in the form `safetensors::serialize` takes.
struct EncodedTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for EncodedTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }

    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Little-endian bytes of a tensor, in logical (C) order whatever the array's memory layout.
fn encode_tensor(name: &str, tensor: &Tensor) -> Result<EncodedTensor> {
    let (dtype, data) = match tensor {
        Tensor::F32(array) => (
            Dtype::F32,
            array.iter().flat_map(|value| value.to_le_bytes()).collect(),
        ),
        Tensor::I64(array) => (
            Dtype::I64,
            array.iter().flat_map(|value| value.to_le_bytes()).collect(),
        ),
        Tensor::Unsupported { dtype, .. } => {
            return Err(RnnError::WrongDtype {
                tensor: name.to_owned(),
                expected: "F32 or I64".to_owned(),
                found: dtype.clone(),
            })
        }
    };
    Ok(EncodedTensor {
        dtype,
        shape: tensor.shape().to_vec(),
        data,
    })
}

fn integer_length(idx: usize, value: i64, max_time: usize) -> std::result::Result<usize, String> {
    let Ok(length) = usize::try_from(value) else {
        return Err(format!("length {value} at index {idx} is negative"));
    };
    if length > max_time {
        return Err(format!(
            "length {value} at index {idx} is above max_time {max_time}"
        ));
    }
    Ok(length)
}

fn float_length(idx: usize, value: f32, max_time: usize) -> std::result::Result<usize, String> {
    if value.is_nan() {
        return Err(format!("length at index {idx} is NaN"));
    }
    if value < 0.0 {
        return Err(format!("length {value} at index {idx} is negative"));
    }
    // Compare in f64, which holds every f32 and every realistic `max_time` exactly.
    if f64::from(value) > max_time as f64 {
        return Err(format!(
            "length {value} at index {idx} is above max_time {max_time}"
        ));
    }
    if value.fract() != 0.0 {
        return Err(format!(
            "length {value} at index {idx} is not a whole number"
        ));
    }
    // The checks above leave a whole number in 0..=max_time, which converts exactly.
    Ok(value as usize)
}

#[cfg(test)]
mod tests;

/// `array` in row-major order, copied only if it is not.
fn standard_layout<T: Clone>(array: ArrayD<T>) -> ArrayD<T> {
    if array.is_standard_layout() {
        array
    } else {
        array.as_standard_layout().into_owned()
    }
}

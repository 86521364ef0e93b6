//! The runtime's one error type.
//!
//! Everything in this crate that can fail on user data (a weight file, an input tensor, a length
//! vector) returns [`RnnError`].
//! Each variant names the tensor or file it is about and says what was expected and what was
//! found, so that the message alone is enough to fix the data.

use std::io;

/// A problem with the data handed to the runtime: a weight file, an input tensor or a length.
///
/// Messages start in lowercase, name the tensor (or file) in backticks and state both what was
/// expected and what was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RnnError {
    /// A tensor exists but has the wrong shape.
    #[error("tensor `{tensor}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// Name of the tensor.
        tensor: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape that was supplied.
        found: Vec<usize>,
    },

    /// A tensor the model needs is not in the collection.
    #[error("tensor `{tensor}` not found{}", missing_tensor_detail(.tensor, .available))]
    MissingTensor {
        /// Name of the tensor that was asked for.
        tensor: String,
        /// Names of the tensors that are present, in order.
        available: Vec<String>,
    },

    /// A tensor exists but holds the wrong kind of element.
    #[error("tensor `{tensor}`: expected dtype {expected}, found {found}")]
    WrongDtype {
        /// Name of the tensor.
        tensor: String,
        /// The dtype (or dtypes) that would have been accepted, e.g. `F32`.
        expected: String,
        /// The dtype that was supplied, e.g. `I64` or `F8_E4M3`.
        found: String,
    },

    /// A tensor has the right shape and dtype but a value that is not allowed, such as a sequence
    /// length that is negative or above the number of time steps.
    #[error("tensor `{tensor}`: {reason}")]
    InvalidValue {
        /// Name of the tensor.
        tensor: String,
        /// What is wrong, naming the offending index and value.
        reason: String,
    },

    /// Bytes that are not a valid safetensors file (truncated, corrupt, or another format).
    #[error("`{path}` is not a valid safetensors file: {reason}")]
    BadFile {
        /// The file, or `<memory>` (or another caller-chosen origin) for an in-memory buffer.
        path: String,
        /// What the parser rejected.
        reason: String,
    },

    /// Reading or writing a file failed.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The file that was being read or written.
        path: String,
        /// The underlying operating-system error.
        source: io::Error,
    },
}

/// The runtime's result type: [`RnnError`] unless said otherwise.
pub type Result<T, E = RnnError> = std::result::Result<T, E>;

/// How many available names a [`RnnError::MissingTensor`] message lists before it says
/// "and N more".
const MAX_LISTED_NAMES: usize = 6;

/// Renders the tail of a [`RnnError::MissingTensor`] message: a suggestion when one of the
/// available names is close to the requested one, then the first few available names.
fn missing_tensor_detail(tensor: &str, available: &[String]) -> String {
    if available.is_empty() {
        return " (no tensors are available)".to_owned();
    }
    let mut detail = String::new();
    if let Some(suggestion) = closest_name(tensor, available) {
        detail.push_str(&format!(", did you mean `{suggestion}`?"));
    }
    let listed: Vec<String> = available
        .iter()
        .take(MAX_LISTED_NAMES)
        .map(|name| format!("`{name}`"))
        .collect();
    detail.push_str(&format!(" (available: {}", listed.join(", ")));
    if available.len() > MAX_LISTED_NAMES {
        detail.push_str(&format!(
            ", and {} more",
            available.len() - MAX_LISTED_NAMES
        ));
    }
    detail.push(')');
    detail
}

/// The available name closest to `wanted` by edit distance, if it is close enough to be a
/// plausible typo: at most a third of the longer name's length, and at least one edit allowed.
/// Ties go to the name listed first.
fn closest_name<'a>(wanted: &str, available: &'a [String]) -> Option<&'a str> {
    available
        .iter()
        .map(|name| (edit_distance(wanted, name), name))
        .filter(|(distance, name)| {
            let longest = wanted.chars().count().max(name.chars().count());
            *distance <= (longest / 3).max(1)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name.as_str())
}

/// Levenshtein distance between two strings, counted in chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b_chars: Vec<char> = b.chars().collect();
    let mut previous_row: Vec<usize> = (0..=b_chars.len()).collect();
    let mut current_row = vec![0; b_chars.len() + 1];
    for (a_idx, a_char) in a.chars().enumerate() {
        current_row[0] = a_idx + 1;
        for (b_idx, &b_char) in b_chars.iter().enumerate() {
            let substitution = previous_row[b_idx] + usize::from(a_char != b_char);
            let deletion = previous_row[b_idx + 1] + 1;
            let insertion = current_row[b_idx] + 1;
            current_row[b_idx + 1] = substitution.min(deletion).min(insertion);
        }
        std::mem::swap(&mut previous_row, &mut current_row);
    }
    previous_row[b_chars.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn shape_mismatch_names_tensor_and_both_shapes() {
        let error = RnnError::ShapeMismatch {
            tensor: "weight_ih_l0".to_owned(),
            expected: vec![40, 7],
            found: vec![40, 8],
        };
        assert_eq!(
            error.to_string(),
            "tensor `weight_ih_l0`: expected shape [40, 7], found [40, 8]"
        );
    }

    #[test]
    fn missing_tensor_suggests_close_name_and_lists_available() {
        let error = RnnError::MissingTensor {
            tensor: "weight_ih_l1".to_owned(),
            available: names(&["bias_hh_l0", "bias_ih_l0", "weight_hh_l0", "weight_ih_l0"]),
        };
        assert_eq!(
            error.to_string(),
            "tensor `weight_ih_l1` not found, did you mean `weight_ih_l0`? \
             (available: `bias_hh_l0`, `bias_ih_l0`, `weight_hh_l0`, `weight_ih_l0`)"
        );
    }

    #[test]
    fn missing_tensor_without_close_name_only_lists() {
        let error = RnnError::MissingTensor {
            tensor: "seq_len".to_owned(),
            available: names(&["x", "h0"]),
        };
        assert_eq!(
            error.to_string(),
            "tensor `seq_len` not found (available: `x`, `h0`)"
        );
    }

    #[test]
    fn missing_tensor_truncates_long_lists() {
        let available: Vec<String> = (0..10).map(|idx| format!("t{idx}")).collect();
        let error = RnnError::MissingTensor {
            tensor: "weights".to_owned(),
            available,
        };
        let message = error.to_string();
        assert!(message.contains("`t5`, and 4 more)"), "{message}");
        assert!(!message.contains("`t6`"), "{message}");
    }

    #[test]
    fn missing_tensor_in_empty_collection() {
        let error = RnnError::MissingTensor {
            tensor: "x".to_owned(),
            available: Vec::new(),
        };
        assert_eq!(
            error.to_string(),
            "tensor `x` not found (no tensors are available)"
        );
    }

    #[test]
    fn io_error_names_path_and_exposes_source() {
        let error = RnnError::Io {
            path: "weights.safetensors".to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(
            error.to_string(),
            "cannot access `weights.safetensors`: no such file"
        );
        assert!(std::error::Error::source(&error).is_some());
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("weight_ih_l0", "weight_ih_l1"), 1);
        assert_eq!(edit_distance("h0", "0h"), 2);
    }

    #[test]
    fn closest_name_rejects_distant_names() {
        let available = names(&["bias_ih_l0", "x"]);
        assert_eq!(closest_name("bias_ih_l1", &available), Some("bias_ih_l0"));
        assert_eq!(closest_name("y", &available), Some("x"));
        assert_eq!(closest_name("weight_hh_l0", &available), None);
    }
}

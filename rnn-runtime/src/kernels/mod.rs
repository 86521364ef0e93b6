//! CPU kernels on `f32`: activations, soft thresholding and matrix products.
//!
//! Three kinds of entry point:
//!
//! - scalar functions ([`sigmoid`], [`tanh`], [`relu`], [`soft_threshold`]): the reference
//!   formulas, always the portable implementation;
//! - in-place slice kernels ([`sigmoid_slice`], [`tanh_slice`], [`relu_slice`]): dispatched
//!   through a table of implementations chosen once per process, on first use;
//! - matrix products ([`matmul_bt`], [`matmul`]) on ndarray views, computed by ndarray's
//!   `general_mat_mul`, whose `matrixmultiply` backend does its own CPU feature detection.
//!
//! Only the portable implementation (`generic`) exists so far, so every entry point gives exactly
//! the reference result.
//! Architecture-specific implementations will each replace table entries after runtime feature
//! detection; they must agree with the scalar reference within the tolerance that the shared
//! test suite (`kernels/tests.rs`) documents.

mod generic;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

pub use generic::{matmul, matmul_bt, relu, sigmoid, soft_threshold, tanh};

/// Applies [`sigmoid`] to every element, in place.
pub fn sigmoid_slice(values: &mut [f32]) {
    (table().sigmoid_f32)(values);
}

/// Applies [`tanh`] to every element, in place.
pub fn tanh_slice(values: &mut [f32]) {
    (table().tanh_f32)(values);
}

/// Applies [`relu`] to every element, in place.
pub fn relu_slice(values: &mut [f32]) {
    (table().relu_f32)(values);
}

/// An elementwise kernel that rewrites a slice in place.
type SliceKernel = fn(&mut [f32]);

/// One implementation of every dispatched kernel.
#[derive(Debug, Clone, Copy)]
struct Kernels {
    sigmoid_f32: SliceKernel,
    tanh_f32: SliceKernel,
    relu_f32: SliceKernel,
}

/// The portable implementations: the starting point of every table.
const GENERIC: Kernels = Kernels {
    sigmoid_f32: generic::sigmoid_f32_generic,
    tanh_f32: generic::tanh_f32_generic,
    relu_f32: generic::relu_f32_generic,
};

/// The table in use, chosen on first call and fixed for the rest of the process.
fn table() -> &'static Kernels {
    static TABLE: OnceLock<Kernels> = OnceLock::new();
    TABLE.get_or_init(select)
}

/// Builds the table for this CPU.
///
/// Architecture modules will start from [`GENERIC`] and patch the entries their detected CPU
/// features allow; until they exist, the generic table is the answer everywhere.
fn select() -> Kernels {
    GENERIC
}

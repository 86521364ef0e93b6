//! unroll's language and compiler.
#![warn(missing_docs)]

pub mod source;
pub mod diag;
pub mod ast;
pub mod parse;
pub mod check;

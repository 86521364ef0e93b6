//! Runnable unroll examples, and what they share with their tests.

pub mod lista;

//! Runnable unroll examples.

//! Integration tests of the unroll workspace live in the test targets.

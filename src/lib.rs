//! xent_rs: the softmax family and cross-entropy losses for NumPy arrays.
//!
//! [`kernels`] is plain Rust over strided rows (tested and benchmarked without Python);
//! `bindings` is the thin PyO3 layer that validates, dispatches dtypes and releases the GIL.

pub mod kernels;

mod bindings;

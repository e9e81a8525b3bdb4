//! Pure Rust kernels over strided rows: no Python here, so they build, test and bench with
//! plain `cargo`.

#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod binary;
pub mod error;
pub mod losses;
pub mod parallel;
pub mod real;
pub mod rows;
mod short_rows;
pub mod simd;
pub mod softmax;
pub mod vlog;

pub use error::KernelError;
pub use real::{Element, Real};
pub use rows::{Rows, RowsMut};
pub use simd::Isa;

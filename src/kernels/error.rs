//! Errors the kernels report; the bindings turn them into Python exceptions.

use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum KernelError {
    /// A class index outside `[0, n_classes)` that is not `ignore_index`; `row` is its
    /// position in the target array (C order).
    TargetOutOfRange {
        value: i64,
        row: usize,
        n_classes: usize,
        ignore_index: i64,
    },
    /// A binary-cross-entropy probability outside `[0, 1]`, at C-order position `index`.
    ProbabilityOutOfRange { value: f64, index: usize },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::TargetOutOfRange {
                value,
                row,
                n_classes,
                ignore_index,
            } => write!(
                f,
                "class index {value} at row {row} is out of range for {n_classes} classes \
                 (expected 0 <= index < {n_classes}, or ignore_index={ignore_index})"
            ),
            KernelError::ProbabilityOutOfRange { value, index } => {
                write!(
                    f,
                    "probabilities must lie in [0, 1]; found {value} at flat index {index}"
                )
            }
        }
    }
}

impl std::error::Error for KernelError {}

//! Errors of the formats crate.

use crate::types::GgmlType;

/// Why a block operation could not run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FormatError {
    /// The type has no decoder (or encoder) in this crate.
    #[error("type {0} is not supported for {1}")]
    Unsupported(GgmlType, &'static str),
    /// A row length is not a whole number of blocks.
    #[error("row of {len} weights is not a multiple of the {ty} block size {block}")]
    NotBlockMultiple {
        /// The type.
        ty: GgmlType,
        /// Weights in the row.
        len: usize,
        /// Block size of the type.
        block: usize,
    },
    /// Input and output buffers disagree in size.
    #[error("{ty}: {what} has {got} elements, expected {expected}")]
    LengthMismatch {
        /// The type.
        ty: GgmlType,
        /// Which buffer.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length it should have.
        expected: usize,
    },
    /// A weight to quantise is NaN or infinite.
    #[error("weight {index} is not finite ({value})")]
    NonFinite {
        /// Position in the row.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A QE format with code bits outside `2..=4` or pool bytes outside `0..=2`.
    #[error("invalid QE format: bits {bits}, pool {pool} (bits must be 2..=4, pool 0..=2)")]
    BadQeFormat {
        /// Code bits given.
        bits: u8,
        /// Pool bytes per block given.
        pool: u8,
    },
    /// A field of a QE row (packed bytes being decoded, or arguments being encoded) breaks the
    /// format's rules.
    #[error("{ty}: invalid {field} at index {index}: {reason}")]
    InvalidField {
        /// The QE type.
        ty: GgmlType,
        /// Which field (e.g. `outlier column`, `outlier value`, `code`).
        field: &'static str,
        /// Position of the offending element (block, code, pool entry or byte index).
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

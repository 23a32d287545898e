//! GGUF reading and writing.
//!
//! - [`GgufHeader::parse`] validates a whole file held in memory against the rules of ggml's
//!   loader (`ggml/src/gguf.cpp`), never panicking and never allocating from a count it has not
//!   checked against the bytes that remain.
//! - [`GgufFile`] memory-maps a file and hands out zero-copy tensor data.
//! - [`GgufWriter`] streams a new file through a temporary file that is renamed on success.
//!
//! Validation follows ggml's loader: versions 2 and 3; the 13 value types with arrays of any
//! non-array type; UTF-8, non-empty, unique keys; strings ≤ 1 GiB and arrays ≤ 2^30 elements;
//! `general.alignment` a power-of-two U32; tensor names UTF-8, unique and < 64 bytes; 1–4
//! dimensions, each ≥ 0, element count within i64; a known type whose block size divides
//! `ne[0]`; aligned offsets with the data inside the file. Two deliberate differences: a tensor
//! with 0 dimensions is rejected (ggml treats it as a scalar; no writer we know produces one),
//! and offsets need not be ggml's running padded sum as long as data ranges do not overlap
//! (newer ggml insists on the running sum; [`GgufHeader::has_canonical_layout`] tells, and
//! [`GgufWriter`] always produces it).
//!
//! Metadata is kept losslessly and in file order ([`MetaValue`], [`MetaArray`]), so copying a
//! file through reader and writer reproduces it byte for byte.

mod error;
mod reader;
mod value;
mod writer;

pub use error::GgufError;
pub use reader::{
    GgufFile, GgufHeader, TensorInfo, GGUF_MAGIC, KEY_ALIGNMENT, MAX_ARRAY_LEN, MAX_DIMS,
    MAX_NAME_LEN, MAX_STRING_LEN,
};
pub use value::{MetaArray, MetaValue, ValueType, JSON_ARRAY_LIMIT};
pub use writer::{encode_value, GgufWriter, TensorPlan, WRITE_VERSION};

/// Data alignment when the file has no `general.alignment` key (ggml's default).
pub const DEFAULT_ALIGNMENT: u64 = 32;

#[cfg(test)]
mod tests;

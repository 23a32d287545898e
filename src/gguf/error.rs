//! Errors of GGUF reading and writing.
//!
//! Every variant names the file it concerns; parse errors also name the field (for example
//! `metadata[12] 'tokenizer.ggml.tokens' array length` or `tensor 'blk.0.attn_q.weight' offset`),
//! so a message alone tells the user what is wrong and where.

use std::path::PathBuf;

/// Why a GGUF file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The operating system refused an operation on the file.
    #[error("{}: I/O error: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file ends (or a declared section ends) before a field is complete.
    #[error("{}: truncated: {field} at byte {offset} needs {needed} bytes but the file ends first", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The field being read.
        field: String,
        /// Byte offset of the field in the file.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
    },
    /// The file does not start with `GGUF`.
    #[error("{}: not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes found.
        found: [u8; 4],
    },
    /// The GGUF version is not 2 or 3.
    #[error("{}: unsupported GGUF version {version} (supported: 2 and 3){}", path.display(), endian_hint(*version))]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// A tensor has a ggml type id this build does not know.
    #[error("{}: tensor '{tensor}' has unknown ggml type id {id}", path.display())]
    UnknownType {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The type id found.
        id: u32,
    },
    /// A field holds a value the format does not allow.
    #[error("{}: invalid {field}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The writer was used out of order (too many or too few bytes for a tensor, tensors
    /// missing at `finish`, or use after an earlier failure).
    #[error("{}: writing tensor '{tensor}': {reason}", path.display())]
    WriteOrder {
        /// The file being written.
        path: PathBuf,
        /// The tensor concerned (empty when none is current).
        tensor: String,
        /// What went wrong.
        reason: String,
    },
}

fn endian_hint(version: u32) -> &'static str {
    if version != 0 && version & 0xffff == 0 {
        "; a big-endian file?"
    } else {
        ""
    }
}

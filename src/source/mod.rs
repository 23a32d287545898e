//! Where weights enter: a source yields metadata and, tensor by tensor, f32 rows, without loading
//! the model into memory. [`GgufSource`] reads GGUF files; [`HfSource`] reads Hugging Face
//! safetensors directories (weights, config and tokenizer turned into llama.cpp's GGUF layout).

mod gguf_source;
pub mod hf;
pub mod safetensors;

pub use gguf_source::GgufSource;
pub use hf::HfSource;

use crate::gguf::MetaValue;
use quantease_formats::GgmlType;
use std::path::{Path, PathBuf};

/// A tensor as a source describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceTensor {
    /// GGUF-style name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions, ne\[0\] (row length) first.
    pub dims: Vec<u64>,
    /// Storage type in the source.
    pub ty: GgmlType,
}

impl SourceTensor {
    /// Row length (ne\[0\]).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }

    /// Number of rows (product of the other dimensions).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
}

impl From<&SourceTensor> for crate::plan::TensorShape {
    fn from(t: &SourceTensor) -> Self {
        crate::plan::TensorShape {
            name: t.name.clone(),
            dims: t.dims.clone(),
            source_type: t.ty,
        }
    }
}

/// Why a source could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The GGUF container is malformed.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// A safetensors file (or shard set) is malformed.
    #[error(transparent)]
    Safetensors(safetensors::SafetensorsError),
    /// A Hugging Face model directory cannot be converted (config, tokenizer, tensor names).
    #[error(transparent)]
    Hf(hf::HfError),
    /// The file holds QE tensors of another QE format version.
    #[error(transparent)]
    QeVersion(#[from] crate::qe_version::QeVersionError),
    /// Decoding a tensor's rows failed.
    #[error("{path}: tensor '{tensor}' row {row}: {source}")]
    Decode {
        /// Source file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Row index.
        row: usize,
        /// The decoding error.
        source: quantease_formats::FormatError,
    },
    /// A caller asked for rows outside the tensor.
    #[error("{path}: tensor '{tensor}': rows {first}..{end} requested but it has {n_rows}")]
    RowRange {
        /// Source file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// First row requested.
        first: usize,
        /// End of the requested range.
        end: usize,
        /// Rows in the tensor.
        n_rows: usize,
    },
}

/// A model to read weights from.
pub trait TensorSource: Sync {
    /// The file (or directory) the weights come from.
    fn path(&self) -> &Path;
    /// GGUF metadata describing the model, in order.
    fn metadata(&self) -> &[(String, MetaValue)];
    /// The tensors, in the order they should appear in the output.
    fn tensors(&self) -> &[SourceTensor];
    /// The stored bytes of tensor `index`, when they are already in GGUF layout for its type
    /// (so an unchanged tensor can be copied).
    fn raw(&self, index: usize) -> Option<&[u8]>;
    /// Decode `out.len() / row_len` rows of tensor `index`, starting at `first_row`, to f32.
    fn read_rows(&self, index: usize, first_row: usize, out: &mut [f32])
        -> Result<(), SourceError>;
    /// Hint that tensor `index` will not be read again (lets a memory-mapped source drop pages).
    fn release(&self, _index: usize) {}
}

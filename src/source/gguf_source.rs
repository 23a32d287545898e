//! A GGUF file as a source of f32 rows.

use super::{SourceError, SourceTensor, TensorSource};
use crate::gguf::{GgufFile, MetaValue};
use std::path::Path;

/// A memory-mapped GGUF model; every decodable type is a valid source.
pub struct GgufSource {
    file: GgufFile,
    tensors: Vec<SourceTensor>,
}

impl GgufSource {
    /// Open and validate a GGUF file; a file with QE tensors must carry this build's QE format
    /// version ([`crate::qe_version::check`]).
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let file = GgufFile::open(path)?;
        crate::qe_version::check(path, file.header())?;
        let tensors = file
            .header()
            .tensors
            .iter()
            .map(|t| SourceTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
            })
            .collect();
        Ok(GgufSource { file, tensors })
    }

    /// The underlying file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

impl TensorSource for GgufSource {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn metadata(&self) -> &[(String, MetaValue)] {
        &self.file.header().metadata
    }

    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    fn raw(&self, index: usize) -> Option<&[u8]> {
        Some(self.file.tensor_data(&self.file.header().tensors[index]))
    }

    fn read_rows(
        &self,
        index: usize,
        first_row: usize,
        out: &mut [f32],
    ) -> Result<(), SourceError> {
        let info = &self.file.header().tensors[index];
        let t = &self.tensors[index];
        let row_len = t.row_len();
        let n = out.len() / row_len.max(1);
        if !out.len().is_multiple_of(row_len.max(1)) || first_row + n > t.n_rows() {
            return Err(SourceError::RowRange {
                path: self.path().to_path_buf(),
                tensor: t.name.clone(),
                first: first_row,
                end: first_row + n,
                n_rows: t.n_rows(),
            });
        }
        let data = self.file.tensor_data(info);
        let row_bytes = info.row_bytes() as usize;
        for (i, dst) in out.chunks_exact_mut(row_len).enumerate() {
            let row = first_row + i;
            let src = &data[row * row_bytes..(row + 1) * row_bytes];
            quantease_formats::dequantize_row(t.ty, src, dst).map_err(|source| {
                SourceError::Decode {
                    path: self.path().to_path_buf(),
                    tensor: t.name.clone(),
                    row,
                    source,
                }
            })?;
        }
        Ok(())
    }

    fn release(&self, index: usize) {
        self.file.release(&self.file.header().tensors[index]);
    }
}

//! The QE format version of a file: a GGUF file holding any QE tensor must carry
//! `quantease.format_version` equal to this build's [`FORMAT_VERSION`]; every reader of QE data
//! (`convert`/`dequantize` through [`crate::source::GgufSource`], `inspect`, `perplexity`,
//! [`crate::eval`]) checks it with [`check`] before touching a tensor, because the bytes of a QE
//! block mean different things in different versions (version 1: one f16 scale and half-integer
//! levels per 32 weights; version 2: two 8-bit scale codes and non-uniform level tables;
//! version 3: version 2 with 3-bit codes packed as a bit stream) while the type ids and sizes are
//! the same.

use crate::gguf::{GgufHeader, MetaValue};
use quantease_formats::qe::{FORMAT_VERSION, FORMAT_VERSION_KEY};
use std::path::{Path, PathBuf};

/// Why a file's QE tensors cannot be read by this build.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QeVersionError {
    /// QE tensors, but no version key.
    #[error(
        "{path}: tensor '{tensor}' has QE type {ty} but the metadata key '{key}' is missing: \
         not a QE file of format version {expected} (written by an older or foreign tool); re-convert"
    )]
    Missing {
        /// The file.
        path: PathBuf,
        /// The first QE tensor.
        tensor: String,
        /// Its type name.
        ty: &'static str,
        /// The metadata key.
        key: &'static str,
        /// The version this build reads.
        expected: u32,
    },
    /// The key is present but not an unsigned integer.
    #[error("{path}: metadata key '{key}' is {found}, not an unsigned integer QE format version")]
    NotAnInteger {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: &'static str,
        /// The stored value, as text.
        found: String,
    },
    /// An older version.
    #[error(
        "{path}: metadata key '{key}' = {found}: written by an older quantease-gguf \
         (QE format version {found}); re-convert (this build reads QE format version {expected})"
    )]
    Older {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: &'static str,
        /// The stored version.
        found: u64,
        /// The version this build reads.
        expected: u32,
    },
    /// A newer version.
    #[error(
        "{path}: metadata key '{key}' = {found}: written by a newer quantease-gguf \
         (QE format version {found}); this build reads QE format version {expected} only"
    )]
    Newer {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: &'static str,
        /// The stored version.
        found: u64,
        /// The version this build reads.
        expected: u32,
    },
}

/// `Ok` if the file at `path` with header `header` holds no QE tensor, or holds QE tensors and
/// `quantease.format_version` equals [`FORMAT_VERSION`]. A version key without QE tensors is
/// ignored (it says nothing about the other types).
pub fn check(path: &Path, header: &GgufHeader) -> Result<(), QeVersionError> {
    let Some(first) = header
        .tensors
        .iter()
        .find(|t| crate::plan::qe_params(t.ty).is_some())
    else {
        return Ok(());
    };
    let key = FORMAT_VERSION_KEY;
    let value = match header.get(key) {
        None => {
            return Err(QeVersionError::Missing {
                path: path.to_path_buf(),
                tensor: first.name.clone(),
                ty: first.ty.name(),
                key,
                expected: FORMAT_VERSION,
            })
        }
        Some(v) => v,
    };
    let found = match value {
        MetaValue::U8(_)
        | MetaValue::U16(_)
        | MetaValue::U32(_)
        | MetaValue::U64(_)
        | MetaValue::I8(_)
        | MetaValue::I16(_)
        | MetaValue::I32(_)
        | MetaValue::I64(_) => value.as_u64(),
        _ => None,
    };
    let Some(found) = found else {
        return Err(QeVersionError::NotAnInteger {
            path: path.to_path_buf(),
            key,
            found: value.to_string(),
        });
    };
    match found.cmp(&u64::from(FORMAT_VERSION)) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(QeVersionError::Older {
            path: path.to_path_buf(),
            key,
            found,
            expected: FORMAT_VERSION,
        }),
        std::cmp::Ordering::Greater => Err(QeVersionError::Newer {
            path: path.to_path_buf(),
            key,
            found,
            expected: FORMAT_VERSION,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::TensorInfo;
    use quantease_formats::GgmlType;

    fn header(ty: GgmlType, version: Option<MetaValue>) -> GgufHeader {
        let mut metadata = vec![("general.architecture".to_string(), MetaValue::string("x"))];
        if let Some(v) = version {
            metadata.push((FORMAT_VERSION_KEY.to_string(), v));
        }
        GgufHeader {
            version: 3,
            metadata,
            tensors: vec![TensorInfo {
                name: "blk.0.attn_q.weight".into(),
                dims: vec![64, 2],
                ty,
                offset: 0,
                n_elements: 128,
                n_bytes: ty.row_bytes(64).unwrap() * 2,
            }],
            alignment: 32,
            data_offset: 0,
        }
    }

    #[test]
    fn only_the_current_version_is_accepted_for_qe_tensors() {
        let p = Path::new("m.gguf");
        let cur = Some(MetaValue::U32(FORMAT_VERSION));
        assert_eq!(check(p, &header(GgmlType::QE3_1, cur.clone())), Ok(()));
        // No QE tensor: no requirement, whatever the key says.
        assert_eq!(check(p, &header(GgmlType::Q4_0, None)), Ok(()));
        assert_eq!(
            check(p, &header(GgmlType::Q4_0, Some(MetaValue::U32(1)))),
            Ok(())
        );
        let e = check(p, &header(GgmlType::QE4_0, Some(MetaValue::U32(1)))).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("m.gguf")
                && msg.contains(FORMAT_VERSION_KEY)
                && msg.contains(
                    "written by an older quantease-gguf (QE format version 1); re-convert"
                ),
            "{msg}"
        );
        let e = check(p, &header(GgmlType::QE2_2, None)).unwrap_err();
        assert!(matches!(e, QeVersionError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("blk.0.attn_q.weight"), "{e}");
        let newer = Some(MetaValue::U64(u64::from(FORMAT_VERSION) + 1));
        let e = check(p, &header(GgmlType::QE2_0, newer)).unwrap_err();
        assert!(matches!(e, QeVersionError::Newer { .. }), "{e}");
        let e = check(p, &header(GgmlType::QE2_0, Some(MetaValue::string("2")))).unwrap_err();
        assert!(matches!(e, QeVersionError::NotAnInteger { .. }), "{e}");
        let e = check(p, &header(GgmlType::QE2_0, Some(MetaValue::I32(-2)))).unwrap_err();
        assert!(matches!(e, QeVersionError::NotAnInteger { .. }), "{e}");
    }
}

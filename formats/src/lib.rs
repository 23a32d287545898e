//! Block formats for GGUF tensors: ggml's own types (byte-exact with ggml's layouts) and, later,
//! the QuantEase formats.
//!
//! Every format has
//! - a packed block struct layout (bytes as ggml stores them),
//! - an *unpacked* form: explicit integer codes plus the block's scales/mins, which the solver
//!   chooses and packs,
//! - a decoder to f32 that is bit-exact with ggml's `dequantize_row_*`,
//! - a round-to-nearest quantiser accepting optional per-weight importance (imatrix) weights.
//!
//! The row-level entry points [`dequantize_row`] and [`quantize_row`] dispatch on [`GgmlType`].

#![warn(missing_docs)]

pub mod error;
pub mod float;
pub mod types;

pub use error::FormatError;
pub use types::{GgmlType, QK_K};

/// True if [`dequantize_row`] can decode this type.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16)
}

/// True if [`quantize_row`] can encode this type.
pub fn can_quantize(ty: GgmlType) -> bool {
    can_dequantize(ty)
}

fn check_lengths(ty: GgmlType, weights: usize, bytes: usize) -> Result<(), FormatError> {
    let block = ty.block_size();
    if weights % block != 0 {
        return Err(FormatError::NotBlockMultiple {
            ty,
            len: weights,
            block,
        });
    }
    let expected = weights / block * ty.type_size();
    if bytes != expected {
        return Err(FormatError::LengthMismatch {
            ty,
            what: "packed buffer",
            got: bytes,
            expected,
        });
    }
    Ok(())
}

/// Decode one row of packed `ty` data into `dst` (`dst.len()` weights).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), FormatError> {
    check_lengths(ty, dst.len(), src.len())?;
    use GgmlType::*;
    match ty {
        F32 => float::decode_f32(src, dst),
        F16 => float::decode_f16(src, dst),
        BF16 => float::decode_bf16(src, dst),
        _ => return Err(FormatError::Unsupported(ty, "decoding")),
    }
    Ok(())
}

/// Round-to-nearest quantise one row into packed `ty` data.
///
/// `importance`, when given, has one non-negative weight per element of `src` (an imatrix's
/// per-column mean squared activation); the quantiser then minimises the importance-weighted
/// squared error instead of the plain one. Non-finite weights are an error.
pub fn quantize_row(
    ty: GgmlType,
    src: &[f32],
    importance: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<(), FormatError> {
    check_lengths(ty, src.len(), dst.len())?;
    if let Some(w) = importance {
        if w.len() != src.len() {
            return Err(FormatError::LengthMismatch {
                ty,
                what: "importance",
                got: w.len(),
                expected: src.len(),
            });
        }
    }
    if let Some((index, &value)) = src.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(FormatError::NonFinite { index, value });
    }
    use GgmlType::*;
    match ty {
        F32 => float::encode_f32(src, dst),
        F16 => float::encode_f16(src, dst),
        BF16 => float::encode_bf16(src, dst),
        _ => return Err(FormatError::Unsupported(ty, "encoding")),
    }
    Ok(())
}

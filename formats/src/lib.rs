//! Block formats for GGUF tensors: ggml's own types (byte-exact with ggml's layouts) and the
//! QuantEase (QE) formats ([`qe`], spec in `formats/SPEC.md`).
//!
//! Every format has
//! - a packed block struct layout (bytes as ggml stores them),
//! - an *unpacked* form: explicit integer codes plus the block's scales/mins, which the solver
//!   chooses and packs,
//! - a decoder to f32 that is bit-exact with ggml's `dequantize_row_*`,
//! - a round-to-nearest quantiser accepting optional per-weight importance (imatrix) weights.
//!
//! The row-level entry points [`dequantize_row`] and [`quantize_row`] dispatch on [`GgmlType`].
//! They take **exactly one row**: QE rows end in a row-level outlier pool, so several QE rows
//! passed as one buffer would be misread (use [`dequantize_rows`] for several).

#![warn(missing_docs)]

pub mod error;
pub mod float;
#[cfg(test)]
mod golden;
pub mod iq4;
pub mod kquants;
pub mod legacy;
pub mod qe;
pub mod search;
pub mod types;

pub use error::FormatError;
pub use qe::QeFormat;
pub use types::{GgmlType, QK_K};

/// True if [`dequantize_row`] can decode this type.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ4_NL
            | IQ4_XS
    ) || ty.is_qe()
}

/// True if [`quantize_row`] can encode this type.
pub fn can_quantize(ty: GgmlType) -> bool {
    can_dequantize(ty)
}

fn check_lengths(ty: GgmlType, weights: usize, bytes: usize) -> Result<(), FormatError> {
    let block = ty.block_size();
    if !weights.is_multiple_of(block) {
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
///
/// Exactly one row: for QE types the outlier pool follows the row's blocks, so `dst.len()` must
/// be the tensor's row width (QE rows are validated and at most 65504 wide).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), FormatError> {
    if let Some(fmt) = QeFormat::from_type(ty) {
        return qe::dequantize_row(fmt, src, dst);
    }
    check_lengths(ty, dst.len(), src.len())?;
    use GgmlType::*;
    match ty {
        F32 => float::decode_f32(src, dst),
        F16 => float::decode_f16(src, dst),
        BF16 => float::decode_bf16(src, dst),
        Q4_0 => legacy::dequantize_row_q4_0(src, dst),
        Q4_1 => legacy::dequantize_row_q4_1(src, dst),
        Q5_0 => legacy::dequantize_row_q5_0(src, dst),
        Q5_1 => legacy::dequantize_row_q5_1(src, dst),
        Q8_0 => legacy::dequantize_row_q8_0(src, dst),
        IQ4_NL => iq4::dequantize_row_iq4_nl(src, dst),
        IQ4_XS => iq4::dequantize_row_iq4_xs(src, dst),
        Q2_K => kquants::dequantize_row_q2_k(src, dst),
        Q3_K => kquants::dequantize_row_q3_k(src, dst),
        Q4_K => kquants::dequantize_row_q4_k(src, dst),
        Q5_K => kquants::dequantize_row_q5_k(src, dst),
        Q6_K => kquants::dequantize_row_q6_k(src, dst),
        _ => return Err(FormatError::Unsupported(ty, "decoding")),
    }
    Ok(())
}

/// Decode `dst.len() / n_per_row` consecutive rows of `n_per_row` weights (packed back to back
/// in `src`), one row at a time, as every type (QE included) requires.
pub fn dequantize_rows(
    ty: GgmlType,
    src: &[u8],
    n_per_row: usize,
    dst: &mut [f32],
) -> Result<(), FormatError> {
    if n_per_row == 0 || !dst.len().is_multiple_of(n_per_row) {
        return Err(FormatError::LengthMismatch {
            ty,
            what: "output (not a whole number of rows)",
            got: dst.len(),
            expected: dst.len() / n_per_row.max(1) * n_per_row,
        });
    }
    let n_rows = dst.len() / n_per_row;
    let rb = match ty.row_bytes(n_per_row as u64) {
        Some(b) => b as usize,
        None => {
            return Err(FormatError::NotBlockMultiple {
                ty,
                len: n_per_row,
                block: ty.block_size(),
            })
        }
    };
    if src.len() != n_rows * rb {
        return Err(FormatError::LengthMismatch {
            ty,
            what: "packed rows",
            got: src.len(),
            expected: n_rows * rb,
        });
    }
    for (s, d) in src.chunks_exact(rb).zip(dst.chunks_exact_mut(n_per_row)) {
        dequantize_row(ty, s, d)?;
    }
    Ok(())
}

/// Round-to-nearest quantise one row into packed `ty` data.
///
/// Exactly one row (see [`dequantize_row`]); for QE types this is
/// [`qe::quantize_row_rtn`] (weighted RTN with outliers).
///
/// `importance`, when given, has one non-negative weight per element of `src` (an imatrix's
/// per-column mean squared activation); the quantiser then minimises the importance-weighted
/// squared error instead of the plain one. Non-finite weights (in `src` or `importance`) are an
/// error; negative importances count as 0.
pub fn quantize_row(
    ty: GgmlType,
    src: &[f32],
    importance: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<(), FormatError> {
    if let Some(fmt) = QeFormat::from_type(ty) {
        return qe::quantize_row_rtn(fmt, src, importance, dst);
    }
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
        if let Some((index, &value)) = w.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(FormatError::NonFinite { index, value });
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
        Q4_0 => legacy::quantize_row_q4_0(src, importance, dst),
        Q4_1 => legacy::quantize_row_q4_1(src, importance, dst),
        Q5_0 => legacy::quantize_row_q5_0(src, importance, dst),
        Q5_1 => legacy::quantize_row_q5_1(src, importance, dst),
        Q8_0 => legacy::quantize_row_q8_0(src, importance, dst),
        IQ4_NL => iq4::quantize_row_iq4_nl(src, importance, dst),
        IQ4_XS => iq4::quantize_row_iq4_xs(src, importance, dst),
        Q2_K => kquants::quantize_row_q2_k(src, importance, dst),
        Q3_K => kquants::quantize_row_q3_k(src, importance, dst),
        Q4_K => kquants::quantize_row_q4_k(src, importance, dst),
        Q5_K => kquants::quantize_row_q5_k(src, importance, dst),
        Q6_K => kquants::quantize_row_q6_k(src, importance, dst),
        _ => return Err(FormatError::Unsupported(ty, "encoding")),
    }
    Ok(())
}

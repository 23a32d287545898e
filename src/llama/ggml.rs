//! ggml's own quantisation and dot-product kernels, for side-by-side checks and benchmarks.
//!
//! Safe accessors over `ggml_get_type_traits` (block layout, `to_float`), `ggml_quantize_chunk`
//! (ggml's reference quantisers, with optional importance weights) and
//! `ggml_get_type_traits_cpu` (the CPU backend's SIMD `from_float` and `vec_dot`). Every function
//! validates sizes first: ggml asserts (aborts the process) on inconsistent arguments.

use std::ffi::CStr;

use llama_cpp_sys_2 as sys;

use super::{init, LlamaError, Result};
use crate::formats::GgmlType;

fn ggml_err(msg: impl Into<String>) -> LlamaError {
    LlamaError::Ggml(msg.into())
}

/// ggml's description of a type (`ggml_get_type_traits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeTraits {
    /// The type.
    pub ty: GgmlType,
    /// ggml's name of the type.
    pub name: &'static str,
    /// Weights per block.
    pub block_size: usize,
    /// Bytes per block.
    pub type_size: usize,
    /// Whether ggml flags the type as quantised.
    pub is_quantized: bool,
    /// Whether ggml can decode the type to f32.
    pub has_to_float: bool,
}

fn raw_traits(ty: GgmlType) -> Result<&'static sys::ggml_type_traits> {
    if ty.id() >= sys::GGML_TYPE_COUNT {
        return Err(ggml_err(format!("type {ty} is newer than this ggml")));
    }
    // SAFETY: id < GGML_TYPE_COUNT; ggml returns a pointer into its static table.
    let p = unsafe { sys::ggml_get_type_traits(ty.id()) };
    // SAFETY: static table entry, never freed.
    let t = unsafe { p.as_ref() }.ok_or_else(|| ggml_err(format!("no traits for {ty}")))?;
    if t.blck_size <= 0 || t.type_name.is_null() {
        return Err(ggml_err(format!("type {ty} is not defined in this ggml")));
    }
    Ok(t)
}

/// ggml's traits of `ty`.
pub fn type_traits(ty: GgmlType) -> Result<TypeTraits> {
    let t = raw_traits(ty)?;
    // SAFETY: type_name is a static NUL-terminated string (checked non-null).
    let name = unsafe { CStr::from_ptr(t.type_name) }
        .to_str()
        .map_err(|_| ggml_err("non-UTF-8 type name"))?;
    Ok(TypeTraits {
        ty,
        name,
        block_size: t.blck_size as usize,
        type_size: t.type_size,
        is_quantized: t.is_quantized,
        has_to_float: t.to_float.is_some(),
    })
}

fn row_bytes(t: &sys::ggml_type_traits, n: usize) -> usize {
    n / t.blck_size as usize * t.type_size
}

/// Decode `n = dst.len()` weights of type `ty` from `src` with ggml's `to_float`.
pub fn to_float(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    let t = raw_traits(ty)?;
    let f = t
        .to_float
        .ok_or_else(|| ggml_err(format!("ggml cannot decode {ty}")))?;
    let n = dst.len();
    if !n.is_multiple_of(t.blck_size as usize) {
        return Err(ggml_err(format!(
            "{n} weights is not a multiple of {ty}'s block size {}",
            t.blck_size
        )));
    }
    let need = row_bytes(t, n);
    if src.len() != need {
        return Err(ggml_err(format!(
            "{n} {ty} weights need {need} bytes, got {}",
            src.len()
        )));
    }
    // SAFETY: src holds exactly the blocks for n weights; dst has room for n floats.
    unsafe { f(src.as_ptr().cast(), dst.as_mut_ptr(), n as i64) };
    Ok(())
}

/// Whether `ggml_quantize_chunk` supports `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        Q1_0 | Q2_0
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | MXFP4
            | NVFP4
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | TQ1_0
            | TQ2_0
            | IQ2_XXS
            | IQ2_XS
            | IQ3_XXS
            | IQ3_S
            | IQ2_S
            | IQ1_S
            | IQ1_M
            | IQ4_NL
            | IQ4_XS
            | F16
            | BF16
            | F32
    ) && ty.id() < sys::GGML_TYPE_COUNT
}

/// Whether ggml refuses to quantise `ty` without importance weights.
pub fn requires_imatrix(ty: GgmlType) -> bool {
    if ty.id() >= sys::GGML_TYPE_COUNT {
        return false;
    }
    // SAFETY: pure function of the type id.
    unsafe { sys::ggml_quantize_requires_imatrix(ty.id()) }
}

/// `ggml_quantize_chunk`: quantise rows `start_row..start_row + nrows` of the row-major f32
/// matrix `src` (`n_per_row` columns) into the same rows of `dst` (the packed matrix), with
/// optional per-column importance weights. Returns the bytes written.
pub fn quantize_chunk(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    start_row: usize,
    nrows: usize,
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<usize> {
    if !can_quantize(ty) {
        return Err(ggml_err(format!(
            "ggml_quantize_chunk does not support {ty}"
        )));
    }
    let t = raw_traits(ty)?;
    let bs = t.blck_size as usize;
    if n_per_row == 0 || !n_per_row.is_multiple_of(bs) {
        return Err(ggml_err(format!(
            "row length {n_per_row} is not a positive multiple of {ty}'s block size {bs}"
        )));
    }
    let end_row = start_row
        .checked_add(nrows)
        .ok_or_else(|| ggml_err("row range overflows"))?;
    let src_need = end_row
        .checked_mul(n_per_row)
        .ok_or_else(|| ggml_err("matrix size overflows"))?;
    if src.len() < src_need {
        return Err(ggml_err(format!(
            "source has {} values, rows ..{end_row} of {n_per_row} need {src_need}",
            src.len()
        )));
    }
    let rb = row_bytes(t, n_per_row);
    let dst_need = end_row
        .checked_mul(rb)
        .ok_or_else(|| ggml_err("output size overflows"))?;
    if dst.len() < dst_need {
        return Err(ggml_err(format!(
            "output has {} bytes, rows ..{end_row} need {dst_need}",
            dst.len()
        )));
    }
    let chunk = &src[start_row * n_per_row..src_need];
    if let Some(i) = chunk.iter().position(|v| !v.is_finite()) {
        return Err(ggml_err(format!(
            "non-finite value at row {}, column {}",
            start_row + i / n_per_row,
            i % n_per_row
        )));
    }
    match imatrix {
        Some(w) if w.len() != n_per_row => {
            return Err(ggml_err(format!(
                "importance weights have {} values, rows have {n_per_row}",
                w.len()
            )))
        }
        Some(w) if w.iter().any(|v| !v.is_finite() || *v < 0.0) => {
            return Err(ggml_err(
                "importance weights must be finite and non-negative",
            ))
        }
        None if requires_imatrix(ty) => {
            return Err(ggml_err(format!("{ty} requires importance weights")))
        }
        _ => {}
    }
    if nrows == 0 {
        return Ok(0);
    }
    init();
    let start = (start_row * n_per_row) as i64;
    // SAFETY: bounds checked above: src covers rows ..end_row, dst covers their packed bytes,
    // imatrix is null or n_per_row floats, start is a multiple of n_per_row and the block size.
    let written = unsafe {
        sys::ggml_quantize_chunk(
            ty.id(),
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            start,
            nrows as i64,
            n_per_row as i64,
            imatrix.map_or(std::ptr::null(), |w| w.as_ptr()),
        )
    };
    Ok(written)
}

/// Quantise a whole row-major matrix with ggml; returns the packed bytes.
pub fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>> {
    if n_per_row == 0 || !src.len().is_multiple_of(n_per_row) {
        return Err(ggml_err(format!(
            "{} values do not form rows of {n_per_row}",
            src.len()
        )));
    }
    let nrows = src.len() / n_per_row;
    let t = raw_traits(ty)?;
    if !n_per_row.is_multiple_of(t.blck_size as usize) {
        return Err(ggml_err(format!(
            "row length {n_per_row} is not a multiple of {ty}'s block size {}",
            t.blck_size
        )));
    }
    let mut dst = vec![0u8; nrows * row_bytes(t, n_per_row)];
    let n = quantize_chunk(ty, src, &mut dst, 0, nrows, n_per_row, imatrix)?;
    if n != dst.len() {
        return Err(ggml_err(format!(
            "ggml wrote {n} bytes, expected {}",
            dst.len()
        )));
    }
    Ok(dst)
}

/// The CPU backend's kernels for one type (`ggml_get_type_traits_cpu`).
#[derive(Clone, Copy, Debug)]
pub struct CpuKernels {
    ty: GgmlType,
    block_size: usize,
    type_size: usize,
    raw: &'static sys::ggml_type_traits_cpu,
    dot_block_size: usize,
    dot_type_size: usize,
    dot_type: GgmlType,
    dot_from_float: sys::ggml_from_float_t,
}

fn raw_cpu_traits(ty: GgmlType) -> Result<&'static sys::ggml_type_traits_cpu> {
    raw_traits(ty)?;
    // SAFETY: id < GGML_TYPE_COUNT (checked by raw_traits); static table entry.
    unsafe { sys::ggml_get_type_traits_cpu(ty.id()).as_ref() }
        .ok_or_else(|| ggml_err(format!("no CPU traits for {ty}")))
}

impl CpuKernels {
    /// The CPU kernels of `ty`, or an error if the CPU backend has no dot product for it.
    pub fn new(ty: GgmlType) -> Result<CpuKernels> {
        init();
        let t = raw_traits(ty)?;
        let raw = raw_cpu_traits(ty)?;
        if raw.vec_dot.is_none() {
            return Err(ggml_err(format!("the CPU backend has no vec_dot for {ty}")));
        }
        let dot_type = GgmlType::from_id(raw.vec_dot_type)
            .ok_or_else(|| ggml_err(format!("unknown vec_dot_type {}", raw.vec_dot_type)))?;
        let dt = raw_traits(dot_type)?;
        let dot_from_float = raw_cpu_traits(dot_type)?.from_float;
        Ok(CpuKernels {
            ty,
            block_size: t.blck_size as usize,
            type_size: t.type_size,
            raw,
            dot_block_size: dt.blck_size as usize,
            dot_type_size: dt.type_size,
            dot_type,
            dot_from_float,
        })
    }

    /// The weight type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// The type activations are converted to for the dot product (e.g. Q8_0 for Q4_0, Q8_K for
    /// the k-quants).
    pub fn vec_dot_type(&self) -> GgmlType {
        self.dot_type
    }

    /// Rows the kernel processes at once (1 or 2).
    pub fn nrows(&self) -> usize {
        self.raw.nrows.max(1) as usize
    }

    /// Bytes of `n` values of the activation type.
    pub fn dot_row_bytes(&self, n: usize) -> usize {
        n / self.dot_block_size * self.dot_type_size
    }

    /// Convert activations to [`Self::vec_dot_type`] with the CPU backend's SIMD `from_float`.
    pub fn activations_from_f32(&self, src: &[f32], dst: &mut [u8]) -> Result<()> {
        let f = self.dot_from_float.ok_or_else(|| {
            ggml_err(format!(
                "the CPU backend has no from_float for {}",
                self.dot_type
            ))
        })?;
        let n = src.len();
        if !n.is_multiple_of(self.dot_block_size) {
            return Err(ggml_err(format!(
                "{n} values is not a multiple of {}'s block size {}",
                self.dot_type, self.dot_block_size
            )));
        }
        if dst.len() != self.dot_row_bytes(n) {
            return Err(ggml_err(format!(
                "{n} {} values need {} bytes, got {}",
                self.dot_type,
                self.dot_row_bytes(n),
                dst.len()
            )));
        }
        // SAFETY: sizes checked above.
        unsafe { f(src.as_ptr(), dst.as_mut_ptr().cast(), n as i64) };
        Ok(())
    }

    /// Dot product of `n` weights (`x`, packed as [`Self::ty`]) with `n` activations (`y`,
    /// packed as [`Self::vec_dot_type`]), with the CPU backend's SIMD kernel.
    pub fn vec_dot(&self, n: usize, x: &[u8], y: &[u8]) -> Result<f32> {
        if n == 0 || !n.is_multiple_of(self.block_size) || !n.is_multiple_of(self.dot_block_size) {
            return Err(ggml_err(format!(
                "{n} is not a positive multiple of the block sizes of {} and {}",
                self.ty, self.dot_type
            )));
        }
        let xb = n / self.block_size * self.type_size;
        if x.len() != xb || y.len() != self.dot_row_bytes(n) {
            return Err(ggml_err(format!(
                "vec_dot of {n}: need {xb} + {} bytes, got {} + {}",
                self.dot_row_bytes(n),
                x.len(),
                y.len()
            )));
        }
        let n_i32 = i32::try_from(n).map_err(|_| ggml_err("row too long"))?;
        let f = self.raw.vec_dot.ok_or_else(|| ggml_err("no vec_dot"))?;
        let mut s = 0f32;
        // SAFETY: one row each (nrc = 1, strides unused), sizes checked above.
        unsafe {
            f(
                n_i32,
                &mut s,
                0,
                x.as_ptr().cast(),
                0,
                y.as_ptr().cast(),
                0,
                1,
            )
        };
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random normals (xorshift + Box-Muller), no extra dependency.
    fn randn(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (next(), next());
                ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
            })
            .collect()
    }

    fn rel_rmse(a: &[f32], b: &[f32]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
        (num / den).sqrt()
    }

    #[test]
    fn traits_match_our_type_table() {
        for &ty in GgmlType::ALL {
            let Ok(t) = type_traits(ty) else { continue };
            assert_eq!(t.block_size, ty.block_size(), "{ty}");
            assert_eq!(t.type_size, ty.type_size(), "{ty}");
            assert_eq!(t.name.to_ascii_uppercase(), ty.name(), "{ty}");
        }
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::IQ4_NL,
        ] {
            assert!(type_traits(ty).unwrap().has_to_float);
        }
    }

    #[test]
    fn quantize_then_decode_round_trips() {
        let n_per_row = 512;
        let nrows = 8;
        let src = randn(n_per_row * nrows, 42);
        // Relative RMS error bounds well above what each format reaches on Gaussian data and
        // far below what a wrong layout would give (~1).
        for (ty, bound) in [
            (GgmlType::Q4_0, 0.15),
            (GgmlType::Q4_K, 0.12),
            (GgmlType::Q6_K, 0.04),
            (GgmlType::IQ4_NL, 0.13),
        ] {
            let packed = quantize_rows(ty, &src, n_per_row, None).unwrap();
            assert_eq!(
                packed.len(),
                nrows * ty.row_bytes(n_per_row as u64).unwrap() as usize
            );
            let mut back = vec![0f32; src.len()];
            to_float(ty, &packed, &mut back).unwrap();
            assert!(back.iter().all(|v| v.is_finite()), "{ty}");
            let e = rel_rmse(&src, &back);
            assert!(e < bound, "{ty}: relative RMS error {e}");
            assert!(e > 1e-4, "{ty}: suspiciously exact ({e})");

            // With importance weights the weighted error must not be worse than a coin flip,
            // and the output must still decode.
            let w: Vec<f32> = (0..n_per_row).map(|j| 1.0 + (j % 7) as f32).collect();
            let packed_w = quantize_rows(ty, &src, n_per_row, Some(&w)).unwrap();
            to_float(ty, &packed_w, &mut back).unwrap();
            assert!(rel_rmse(&src, &back) < bound * 1.5, "{ty} with imatrix");
        }
    }

    #[test]
    fn chunks_land_in_their_rows() {
        let n_per_row = 256;
        let src = randn(n_per_row * 4, 7);
        let ty = GgmlType::Q4_K;
        let whole = quantize_rows(ty, &src, n_per_row, None).unwrap();
        let mut parts = vec![0u8; whole.len()];
        let a = quantize_chunk(ty, &src, &mut parts, 0, 1, n_per_row, None).unwrap();
        let b = quantize_chunk(ty, &src, &mut parts, 1, 3, n_per_row, None).unwrap();
        assert_eq!(a + b, whole.len());
        assert_eq!(parts, whole);
    }

    #[test]
    fn bad_arguments_are_errors_not_aborts() {
        let src = randn(64, 1);
        let mut dst = vec![0u8; 1024];
        // Row length not a multiple of the block size.
        assert!(quantize_chunk(GgmlType::Q4_K, &src, &mut dst, 0, 1, 64, None).is_err());
        // Source too short.
        assert!(quantize_chunk(GgmlType::Q4_0, &src, &mut dst, 1, 2, 32, None).is_err());
        // Output too short.
        assert!(quantize_chunk(GgmlType::Q8_0, &src, &mut dst[..10], 0, 2, 32, None).is_err());
        // Needs an imatrix.
        let big = randn(256, 2);
        assert!(quantize_chunk(GgmlType::IQ2_XXS, &big, &mut dst, 0, 1, 256, None).is_err());
        // Non-finite input.
        let mut nan = src.clone();
        nan[3] = f32::NAN;
        assert!(quantize_chunk(GgmlType::Q4_0, &nan, &mut dst, 0, 2, 32, None).is_err());
        // Wrong imatrix length.
        assert!(quantize_chunk(GgmlType::Q4_0, &src, &mut dst, 0, 2, 32, Some(&[1.0; 3])).is_err());
        // Decode size mismatch.
        let mut out = vec![0f32; 32];
        assert!(to_float(GgmlType::Q4_0, &dst[..17], &mut out).is_err());
    }

    #[test]
    fn cpu_vec_dot_matches_dequantized_dot() {
        let n = 512;
        let w = randn(n, 3);
        let x = randn(n, 4);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::IQ4_NL,
        ] {
            let k = CpuKernels::new(ty).unwrap();
            let packed = quantize_rows(ty, &w, n, None).unwrap();
            let mut wd = vec![0f32; n];
            to_float(ty, &packed, &mut wd).unwrap();
            let mut xq = vec![0u8; k.dot_row_bytes(n)];
            k.activations_from_f32(&x, &mut xq).unwrap();
            let got = k.vec_dot(n, &packed, &xq).unwrap();
            let want: f32 = wd.iter().zip(&x).map(|(a, b)| a * b).sum();
            let scale: f32 = wd.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            // The activations are quantised to 8 bits, so allow ~1% of the absolute sum.
            assert!(
                (got - want).abs() < 0.01 * scale,
                "{ty}: vec_dot {got} vs dequantised dot {want} (scale {scale})"
            );
        }
    }
}

//! Dot-product and decode kernels for QE rows: a portable scalar reference, AVX2 and AVX-512
//! (x86-64, chosen at run time), NEON (aarch64).
//!
//! All kernels work on one whole row (`p` weights) at a time, like ggml's `vec_dot`/`to_float`
//! for weights. The `_with` variants take an explicit [`Kernel`] (tests, benchmarks); the plain
//! ones use [`Kernel::detect`].
//!
//! Results: the integer part of every block's product with Q8_0 activations is exact in every
//! kernel; only the order of the f32 additions (block scale products, pool terms) differs
//! between kernels, so SIMD and scalar agree within `2·(n_terms + 2)·ε·Σ|terms|` (see the tests).
//!
//! The unchecked kernels never read out of bounds, whatever the row bytes contain: the pool walk
//! stops at the first entry whose column is `≥ p` (every unused entry is 0xFFFF ≥ p), so a
//! corrupt pool gives a wrong number, never a crash. Use [`crate::qe::decode_row`] or
//! [`crate::qe::dequantize_row`] to validate untrusted rows.

#[cfg(target_arch = "aarch64")]
mod neon;
pub(crate) mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::{check_width, length_mismatch, QeFormat, QK, TABLE_2, TABLE_3, TABLE_4};
use crate::error::FormatError;
use crate::float::f16_to_f32;
use crate::types::GgmlType;

pub use crate::legacy::quantize_row_q8_0_activations;

/// Bytes of one ggml `block_q8_0` (f16 d + 32 int8 codes), the activation type of the Q8_0 dot.
pub const BLOCK_Q8_0_BYTES: usize = 34;

/// An implementation of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Portable scalar reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL) + FMA + F16C.
    Avx512,
    /// aarch64 NEON.
    Neon,
}

impl Kernel {
    /// Every kernel, fastest last.
    pub const ALL: [Kernel; 4] = [Kernel::Scalar, Kernel::Neon, Kernel::Avx2, Kernel::Avx512];

    /// Whether this CPU can run the kernel (run-time detection).
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => x86::has_avx512(),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest kernel this CPU supports.
    pub fn detect() -> Kernel {
        Kernel::ALL
            .into_iter()
            .rev()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Scalar)
    }

    /// Every kernel this CPU supports.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// Lower-case name (`scalar`, `avx2`, `avx512`, `neon`).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Neon => "neon",
        }
    }
}

/// Walk the used pool entries `(column, h)` without validation, stopping at the first column
/// `≥ p` (unused entries are 0xFFFF, and a valid row's used columns are `< p ≤ 65504`).
#[inline]
pub(crate) fn pool_walk(pool: &[u8], p: usize, mut f: impl FnMut(usize, f32)) {
    for ent in pool.chunks_exact(super::POOL_ENTRY_BYTES) {
        let col = u16::from_le_bytes([ent[0], ent[1]]) as usize;
        if col >= p {
            break;
        }
        f(col, f16_to_f32(u16::from_le_bytes([ent[2], ent[3]])));
    }
}

fn unavailable(fmt: QeFormat, _k: Kernel) -> FormatError {
    FormatError::Unsupported(
        fmt.to_type().unwrap_or(GgmlType::QE2_0),
        "this kernel on this CPU",
    )
}

/// Q8_0 dot without checks (fmt valid, `row.len() = row_bytes(p)`, `q8.len() = p/32·34`,
/// kernel available).
#[inline]
pub(crate) fn dot_q8_0_unchecked(k: Kernel, fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    match k {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers pass an available kernel and checked lengths.
        Kernel::Avx2 => unsafe { x86::dot_q8_0_avx2(fmt, row, q8, p) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Avx512 => unsafe { x86::dot_q8_0_avx512(fmt, row, q8, p) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Kernel::Neon => unsafe { neon::dot_q8_0_neon(fmt, row, q8, p) },
        _ => scalar::dot_q8_0(fmt, row, q8, p),
    }
}

/// f32 dot without checks (as [`dot_q8_0_unchecked`], `x.len() = p`).
#[inline]
pub(crate) fn dot_f32_unchecked(k: Kernel, fmt: QeFormat, row: &[u8], x: &[f32]) -> f32 {
    match k {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers pass an available kernel and checked lengths.
        Kernel::Avx2 | Kernel::Avx512 => unsafe { x86::dot_f32_avx2(fmt, row, x) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Kernel::Neon => unsafe { neon::dot_f32_neon(fmt, row, x) },
        _ => scalar::dot_f32(fmt, row, x),
    }
}

/// Decode without validation (see the module docs); `row.len() = row_bytes(y.len())`.
#[allow(dead_code)] // used by the C ABI
pub(crate) fn to_float_unchecked(fmt: QeFormat, row: &[u8], y: &mut [f32]) {
    scalar::to_float(fmt, row, y)
}

fn check_row(fmt: QeFormat, row: &[u8], p: usize) -> Result<(), FormatError> {
    check_width(fmt, p)?;
    if row.len() != fmt.row_bytes(p) {
        return Err(length_mismatch(
            fmt,
            "packed row",
            row.len(),
            fmt.row_bytes(p),
        ));
    }
    Ok(())
}

fn q8_width(fmt: QeFormat, q8: &[u8]) -> Result<usize, FormatError> {
    if !q8.len().is_multiple_of(BLOCK_Q8_0_BYTES) {
        return Err(FormatError::LengthMismatch {
            ty: fmt.to_type().unwrap_or(GgmlType::QE2_0),
            what: "Q8_0 activations (bytes, not a whole number of 34-byte blocks)",
            got: q8.len(),
            expected: q8.len() / BLOCK_Q8_0_BYTES * BLOCK_Q8_0_BYTES,
        });
    }
    Ok(q8.len() / BLOCK_Q8_0_BYTES * QK)
}

/// Dot product of one QE row (`p` weights, `p = x.len()`) with f32 activations, using `kernel`.
pub fn vec_dot_f32_with(
    kernel: Kernel,
    fmt: QeFormat,
    row: &[u8],
    x: &[f32],
) -> Result<f32, FormatError> {
    check_row(fmt, row, x.len())?;
    if !kernel.is_available() {
        return Err(unavailable(fmt, kernel));
    }
    Ok(dot_f32_unchecked(kernel, fmt, row, x))
}

/// Dot product of one QE row with f32 activations (`x.len()` = the row width), fastest kernel.
pub fn vec_dot_f32(fmt: QeFormat, row: &[u8], x: &[f32]) -> Result<f32, FormatError> {
    vec_dot_f32_with(Kernel::detect(), fmt, row, x)
}

/// Dot product of one QE row with ggml `block_q8_0` activations (`q8` = `p/32` blocks of 34
/// bytes; the row width `p` follows from it), using `kernel`.
///
/// Called once per row: the checks are one combined test (a chain of early returns cost ~4 ns
/// of a 50 ns row of 1536 weights), the error, if any, is worked out by [`q8_0_error`].
#[inline]
pub fn vec_dot_q8_0_with(
    kernel: Kernel,
    fmt: QeFormat,
    row: &[u8],
    q8: &[u8],
) -> Result<f32, FormatError> {
    let p = q8.len() / BLOCK_Q8_0_BYTES * QK;
    let ok = q8.len().is_multiple_of(BLOCK_Q8_0_BYTES)
        & fmt.is_valid()
        & (p <= super::MAX_WIDTH)
        & (row.len() == fmt.row_bytes(p))
        & kernel.is_available();
    if !ok {
        return Err(q8_0_error(kernel, fmt, row, q8));
    }
    Ok(dot_q8_0_unchecked(kernel, fmt, row, q8, p))
}

/// The error [`vec_dot_q8_0_with`] reports (the checks in their documented order).
#[cold]
#[inline(never)]
fn q8_0_error(kernel: Kernel, fmt: QeFormat, row: &[u8], q8: &[u8]) -> FormatError {
    let check = || {
        let p = q8_width(fmt, q8)?;
        check_row(fmt, row, p)?;
        if !kernel.is_available() {
            return Err(unavailable(fmt, kernel));
        }
        Ok(())
    };
    // The combined test and the detailed checks agree; should they ever not, this is still an
    // error, not a panic.
    check().err().unwrap_or_else(|| unavailable(fmt, kernel))
}

/// Dot product of one QE row with ggml `block_q8_0` activations, fastest kernel. This is the
/// `vec_dot` a ggml runtime calls (`vec_dot_type = Q8_0`).
pub fn vec_dot_q8_0(fmt: QeFormat, row: &[u8], q8: &[u8]) -> Result<f32, FormatError> {
    vec_dot_q8_0_with(Kernel::detect(), fmt, row, q8)
}

/// `y = W·x` for `n_rows` QE rows of width `p` (`weights` = `n_rows` packed rows back to back)
/// and `m = x.len()/p` activation vectors (`x` row-major, `m × p`); `y` is `m × n_rows`
/// (`y[v·n_rows + r]`, ggml's `dst` layout).
///
/// Like ggml's `mul_mat`, activations are first quantised to Q8_0
/// ([`quantize_row_q8_0_activations`]) and each output is one [`vec_dot_q8_0`]. Rows are split
/// into `threads` contiguous ranges (`std::thread::scope`); every output is computed by the same
/// kernel on the same data whatever the split, so results do not depend on `threads`.
pub fn matmul(
    fmt: QeFormat,
    weights: &[u8],
    n_rows: usize,
    p: usize,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<(), FormatError> {
    matmul_with(Kernel::detect(), fmt, weights, n_rows, p, x, y, threads)
}

/// [`matmul`] with an explicit kernel.
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    kernel: Kernel,
    fmt: QeFormat,
    weights: &[u8],
    n_rows: usize,
    p: usize,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<(), FormatError> {
    check_width(fmt, p)?;
    if !kernel.is_available() {
        return Err(unavailable(fmt, kernel));
    }
    let rb = fmt.row_bytes(p);
    let need = n_rows
        .checked_mul(rb)
        .ok_or_else(|| length_mismatch(fmt, "weights", weights.len(), usize::MAX))?;
    if weights.len() != need {
        return Err(length_mismatch(fmt, "weights", weights.len(), need));
    }
    if p == 0 || n_rows == 0 {
        if !y.is_empty() {
            return Err(length_mismatch(fmt, "y", y.len(), 0));
        }
        return Ok(());
    }
    if !x.len().is_multiple_of(p) {
        return Err(length_mismatch(fmt, "x", x.len(), x.len() / p * p));
    }
    let m = x.len() / p;
    if y.len() != m * n_rows {
        return Err(length_mismatch(fmt, "y", y.len(), m * n_rows));
    }
    let qrow = p / QK * BLOCK_Q8_0_BYTES;
    let mut q8 = vec![0u8; m * qrow];
    for (xv, qv) in x.chunks_exact(p).zip(q8.chunks_exact_mut(qrow)) {
        quantize_row_q8_0_activations(xv, qv);
    }
    let threads = threads.clamp(1, n_rows);
    let per = n_rows.div_ceil(threads);
    for (qv, yv) in q8.chunks_exact(qrow).zip(y.chunks_exact_mut(n_rows)) {
        let work = |r0: usize, out: &mut [f32]| {
            for (i, o) in out.iter_mut().enumerate() {
                let r = r0 + i;
                *o = dot_q8_0_unchecked(kernel, fmt, &weights[r * rb..(r + 1) * rb], qv, p);
            }
        };
        if threads == 1 {
            work(0, yv);
        } else {
            std::thread::scope(|s| {
                for (t, out) in yv.chunks_mut(per).enumerate() {
                    let work = &work;
                    s.spawn(move || work(t * per, out));
                }
            });
        }
    }
    Ok(())
}

/// A level table padded with zeros to 16 bytes (the SIMD byte-lookup table: `vpshufb`, `tbl`).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(super) const fn padded<const N: usize>(t: [i8; N]) -> [i8; 16] {
    let mut out = [0i8; 16];
    let mut i = 0;
    while i < N {
        out[i] = t[i];
        i += 1;
    }
    out
}

/// The 2-, 3- and 4-bit level tables padded to 16 bytes, indexed by `bits − 2`.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
/// The padded level table of `b`-bit codes (`b` ∈ 2..=4).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) const fn padded_table(b: u8) -> [i8; 16] {
    match b {
        2 => padded(TABLE_2),
        3 => padded(TABLE_3),
        _ => padded(TABLE_4),
    }
}

pub(super) static PADDED_TABLES: [[i8; 16]; 3] =
    [padded(TABLE_2), padded(TABLE_3), padded(TABLE_4)];

#[cfg(test)]
mod tests;

//! C ABI for the QE formats (`formats/include/quantease.h`): ggml-shaped type traits
//! (`to_float`, `from_float`, `vec_dot` against `block_q8_0`) and `quantease_row_size`.
//!
//! No panic crosses the boundary: every entry point checks its arguments and runs inside
//! `catch_unwind`; errors are reported in-band (NaN outputs, see the header).

use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::qe::{self, kernels, QeFormat, BLOCK_Q8_0_BYTES, MAX_WIDTH, QE_TYPE_FIRST, QK};

/// `quantease_to_float_t`.
pub type ToFloat = unsafe extern "C" fn(x: *const c_void, y: *mut f32, k: i64);
/// `quantease_from_float_t`.
pub type FromFloat = unsafe extern "C" fn(x: *const f32, y: *mut c_void, k: i64);
/// `quantease_vec_dot_t` (ggml's `ggml_vec_dot_t`).
pub type VecDot = unsafe extern "C" fn(
    n: c_int,
    s: *mut f32,
    bs: usize,
    x: *const c_void,
    bx: usize,
    y: *const c_void,
    by: usize,
    nrc: c_int,
);

/// `quantease_type_traits` (layout as in the header).
#[repr(C)]
pub struct QuanteaseTypeTraits {
    /// NUL-terminated type name.
    pub type_name: *const c_char,
    /// Weights per block (32).
    pub blck_size: i64,
    /// Bytes per 32 weights including the pool share.
    pub type_size: usize,
    /// Always true.
    pub is_quantized: bool,
    /// Row decoder.
    pub to_float: Option<ToFloat>,
    /// Row quantiser (reference RTN).
    pub from_float: Option<FromFloat>,
    /// Row dot product with Q8_0 activations.
    pub vec_dot: Option<VecDot>,
    /// `GGML_TYPE_Q8_0` (8).
    pub vec_dot_type: c_int,
}

// SAFETY: the table is immutable and its name pointers point at static C strings.
unsafe impl Sync for QuanteaseTypeTraits {}

/// ggml's id of Q8_0.
const GGML_TYPE_Q8_0: c_int = 8;

/// Row width from a C `k`/`n`, if it is a positive multiple of 32 within the QE maximum.
fn width(k: i64) -> Option<usize> {
    let k = usize::try_from(k).ok()?;
    (k > 0 && k % QK == 0 && k <= MAX_WIDTH).then_some(k)
}

/// # Safety
/// `x` must point at `fmt.row_bytes(k)` bytes and `y` at `k` floats (when `k` is valid).
unsafe fn to_float_impl(fmt: QeFormat, x: *const c_void, y: *mut f32, k: i64) {
    if y.is_null() || k <= 0 {
        return;
    }
    let Some(p) = width(k) else {
        if let Ok(n) = usize::try_from(k) {
            // SAFETY: the caller provides k floats at y.
            unsafe { std::slice::from_raw_parts_mut(y, n) }.fill(f32::NAN);
        }
        return;
    };
    // SAFETY: the caller provides k floats at y.
    let out = unsafe { std::slice::from_raw_parts_mut(y, p) };
    if x.is_null() {
        out.fill(f32::NAN);
        return;
    }
    // SAFETY: the caller provides one packed row of k weights at x.
    let row = unsafe { std::slice::from_raw_parts(x as *const u8, fmt.row_bytes(p)) };
    if catch_unwind(AssertUnwindSafe(|| {
        kernels::to_float_unchecked(fmt, row, out)
    }))
    .is_err()
    {
        // SAFETY: as above (the previous borrow ended with the closure).
        unsafe { std::slice::from_raw_parts_mut(y, p) }.fill(f32::NAN);
    }
}

/// # Safety
/// `x` must point at `k` floats and `y` at `fmt.row_bytes(k)` bytes (when `k` is valid).
unsafe fn from_float_impl(fmt: QeFormat, x: *const f32, y: *mut c_void, k: i64) {
    let Some(p) = width(k) else { return };
    if x.is_null() || y.is_null() {
        return;
    }
    // SAFETY: the caller provides k floats at x and one packed row at y.
    let src = unsafe { std::slice::from_raw_parts(x, p) };
    // SAFETY: as above.
    let out = unsafe { std::slice::from_raw_parts_mut(y as *mut u8, fmt.row_bytes(p)) };
    let ok = catch_unwind(AssertUnwindSafe(|| {
        qe::quantize_row_rtn(fmt, src, None, out).is_ok()
    }));
    if !matches!(ok, Ok(true)) {
        // A valid all-zero row: zero scale codes and codes, every pool slot unused.
        let zero_codes = vec![0u8; p];
        let zero_scales = vec![0u8; p / qe::SUB];
        let _ = catch_unwind(AssertUnwindSafe(|| {
            qe::encode_row(fmt, &zero_scales, &zero_codes, &[], out)
        }));
    }
}

/// # Safety
/// `x` must point at one packed row of `n` weights, `y` at `n/32` `block_q8_0`, `s` at a float.
#[allow(clippy::too_many_arguments)]
unsafe fn vec_dot_impl(
    fmt: QeFormat,
    n: c_int,
    s: *mut f32,
    x: *const c_void,
    y: *const c_void,
    nrc: c_int,
) {
    if s.is_null() {
        return;
    }
    let result = (|| {
        let p = width(n as i64)?;
        if nrc != 1 || x.is_null() || y.is_null() {
            return None;
        }
        // SAFETY: the caller provides one packed row of n weights at x and n/32 Q8_0 blocks at y.
        let row = unsafe { std::slice::from_raw_parts(x as *const u8, fmt.row_bytes(p)) };
        // SAFETY: as above.
        let q8 = unsafe { std::slice::from_raw_parts(y as *const u8, p / QK * BLOCK_Q8_0_BYTES) };
        catch_unwind(AssertUnwindSafe(|| {
            kernels::dot_q8_0_unchecked(kernels::Kernel::detect(), fmt, row, q8, p)
        }))
        .ok()
    })();
    // SAFETY: s is non-null and points at a float (caller contract).
    unsafe { *s = result.unwrap_or(f32::NAN) };
}

macro_rules! qe_abi {
    ($($bits:literal, $pool:literal, $name:literal, $tf:ident, $ff:ident, $vd:ident;)*) => {
        $(
            unsafe extern "C" fn $tf(x: *const c_void, y: *mut f32, k: i64) {
                // SAFETY: forwarded caller contract (see the header).
                unsafe { to_float_impl(QeFormat { bits: $bits, pool: $pool }, x, y, k) }
            }
            unsafe extern "C" fn $ff(x: *const f32, y: *mut c_void, k: i64) {
                // SAFETY: forwarded caller contract.
                unsafe { from_float_impl(QeFormat { bits: $bits, pool: $pool }, x, y, k) }
            }
            #[allow(clippy::too_many_arguments)]
            unsafe extern "C" fn $vd(
                n: c_int, s: *mut f32, _bs: usize, x: *const c_void, _bx: usize,
                y: *const c_void, _by: usize, nrc: c_int,
            ) {
                // SAFETY: forwarded caller contract.
                unsafe { vec_dot_impl(QeFormat { bits: $bits, pool: $pool }, n, s, x, y, nrc) }
            }
        )*

        static TRAITS: [QuanteaseTypeTraits; qe::QE_TYPE_COUNT] = [
            $(
                QuanteaseTypeTraits {
                    type_name: $name.as_ptr(),
                    blck_size: QK as i64,
                    type_size: QeFormat { bits: $bits, pool: $pool }.type_size(),
                    is_quantized: true,
                    to_float: Some($tf),
                    from_float: Some($ff),
                    vec_dot: Some($vd),
                    vec_dot_type: GGML_TYPE_Q8_0,
                },
            )*
        ];
    };
}

qe_abi! {
    2, 0, c"QE2_0", tf_qe2_0, ff_qe2_0, vd_qe2_0;
    2, 1, c"QE2_1", tf_qe2_1, ff_qe2_1, vd_qe2_1;
    2, 2, c"QE2_2", tf_qe2_2, ff_qe2_2, vd_qe2_2;
    3, 0, c"QE3_0", tf_qe3_0, ff_qe3_0, vd_qe3_0;
    3, 1, c"QE3_1", tf_qe3_1, ff_qe3_1, vd_qe3_1;
    3, 2, c"QE3_2", tf_qe3_2, ff_qe3_2, vd_qe3_2;
    4, 0, c"QE4_0", tf_qe4_0, ff_qe4_0, vd_qe4_0;
    4, 1, c"QE4_1", tf_qe4_1, ff_qe4_1, vd_qe4_1;
    4, 2, c"QE4_2", tf_qe4_2, ff_qe4_2, vd_qe4_2;
}

fn traits_index(ty: c_int) -> Option<usize> {
    let i = (ty as i64).checked_sub(QE_TYPE_FIRST as i64)?;
    (0..qe::QE_TYPE_COUNT as i64)
        .contains(&i)
        .then_some(i as usize)
}

/// Traits of QE type `ty` (200..=208), or NULL.
#[no_mangle]
pub extern "C" fn quantease_get_type_traits(ty: c_int) -> *const QuanteaseTypeTraits {
    match traits_index(ty) {
        Some(i) => &TRAITS[i],
        None => std::ptr::null(),
    }
}

/// Bytes of a row of `n` weights of QE type `ty`; 0 for an unknown type or `n` not a
/// non-negative multiple of 32.
#[no_mangle]
pub extern "C" fn quantease_row_size(ty: c_int, n: i64) -> usize {
    let Some(i) = traits_index(ty) else { return 0 };
    match usize::try_from(n) {
        Ok(n) if n % QK == 0 => (n / QK).saturating_mul(TRAITS[i].type_size),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GgmlType;

    #[test]
    fn traits_table_matches_the_type_table() {
        for (i, fmt) in QeFormat::ALL.iter().enumerate() {
            let ty = fmt.to_type().unwrap();
            let t = quantease_get_type_traits(ty.id() as c_int);
            // SAFETY: non-null pointers into the static table.
            let t = unsafe { t.as_ref() }.unwrap();
            // SAFETY: static NUL-terminated names.
            let name = unsafe { std::ffi::CStr::from_ptr(t.type_name) };
            assert_eq!(name.to_str().unwrap(), ty.name());
            assert_eq!(t.type_size, ty.type_size());
            assert_eq!(t.blck_size, 32);
            assert_eq!(
                quantease_row_size(200 + i as c_int, 576),
                fmt.row_bytes(576)
            );
        }
        for bad in [-1, 0, 8, 199, 209, c_int::MAX, c_int::MIN] {
            assert!(quantease_get_type_traits(bad).is_null());
            assert_eq!(quantease_row_size(bad, 64), 0);
        }
        assert_eq!(quantease_row_size(GgmlType::QE3_1.id() as c_int, 33), 0);
        assert_eq!(quantease_row_size(GgmlType::QE3_1.id() as c_int, -32), 0);
    }

    #[test]
    fn entry_points_survive_bad_arguments() {
        // SAFETY: static table entry.
        let t = unsafe { quantease_get_type_traits(204).as_ref() }.unwrap();
        let (tf, ff, vd) = (
            t.to_float.unwrap(),
            t.from_float.unwrap(),
            t.vec_dot.unwrap(),
        );
        let mut y = [0f32; 40];
        let row = [0u8; 15 * 2];
        // SAFETY: the buffers are large enough for every k tried.
        unsafe {
            tf(row.as_ptr().cast(), y.as_mut_ptr(), 33);
            assert!(y[..33].iter().all(|v| v.is_nan()));
            tf(std::ptr::null(), y.as_mut_ptr(), 32);
            assert!(y[0].is_nan());
            tf(row.as_ptr().cast(), std::ptr::null_mut(), 32);
            tf(row.as_ptr().cast(), y.as_mut_ptr(), -5);
            let mut out = [7u8; 30];
            let mut x = [1f32; 64];
            x[3] = f32::NAN;
            ff(x.as_ptr(), out.as_mut_ptr().cast(), 64);
            // Non-finite input: a valid zero row (pool: 2 bytes, no entries).
            assert!(out.iter().all(|&b| b == 0), "{out:?}");
            ff(x.as_ptr(), out.as_mut_ptr().cast(), 31); // ignored
            let mut s = 0f32;
            let q8 = [0u8; 68];
            vd(
                64,
                &mut s,
                0,
                row.as_ptr().cast(),
                0,
                q8.as_ptr().cast(),
                0,
                2,
            );
            assert!(s.is_nan());
            vd(
                48,
                &mut s,
                0,
                row.as_ptr().cast(),
                0,
                q8.as_ptr().cast(),
                0,
                1,
            );
            assert!(s.is_nan());
            vd(
                64,
                &mut s,
                0,
                row.as_ptr().cast(),
                0,
                q8.as_ptr().cast(),
                0,
                1,
            );
            assert_eq!(s, 0.0);
            vd(
                64,
                std::ptr::null_mut(),
                0,
                row.as_ptr().cast(),
                0,
                q8.as_ptr().cast(),
                0,
                1,
            );
        }
    }
}

//! x86-64 SIMD kernels (placeholder: scalar until the SIMD commit).

use super::scalar;
use crate::qe::QeFormat;

pub(crate) fn has_avx2() -> bool {
    false
}

pub(crate) fn has_avx512() -> bool {
    false
}

pub(crate) unsafe fn dot_q8_0_avx2(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    scalar::dot_q8_0(fmt, row, q8, p)
}

pub(crate) unsafe fn dot_q8_0_avx512(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    scalar::dot_q8_0(fmt, row, q8, p)
}

pub(crate) unsafe fn dot_f32_avx2(fmt: QeFormat, row: &[u8], x: &[f32]) -> f32 {
    scalar::dot_f32(fmt, row, x)
}

//! aarch64 NEON kernels (placeholder: scalar until the SIMD commit).

use super::scalar;
use crate::qe::QeFormat;

pub(crate) unsafe fn dot_q8_0_neon(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    scalar::dot_q8_0(fmt, row, q8, p)
}

pub(crate) unsafe fn dot_f32_neon(fmt: QeFormat, row: &[u8], x: &[f32]) -> f32 {
    scalar::dot_f32(fmt, row, x)
}

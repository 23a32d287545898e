//! aarch64 NEON kernels: codes unpacked per block (scalar bit ops into 32 bytes), then
//! `x = 2c − M` times the Q8_0 codes with widening multiplies (`vmull_s8`, exact i16 products,
//! pairwise-accumulated into i32 lanes), one f32 scale multiply-add per block. The f32 dot uses
//! 4-lane f32 FMAs. The pool is added by the scalar walk, as in every kernel.

use std::arch::aarch64::*;

use super::scalar;
use crate::float::f16_to_f32;
use crate::qe::{unpack_codes, QeFormat, QK};

const Q8: usize = super::BLOCK_Q8_0_BYTES;

#[inline]
fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// NEON dot with Q8_0 activations. Safety: NEON available; `row.len() = fmt.row_bytes(p)`,
/// `q8.len() = p/32·34`, `fmt` valid.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_q8_0_neon(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    let nb = p / QK;
    let bb = fmt.block_bytes();
    let (blocks, pool) = row.split_at(nb * bb);
    let m = vdupq_n_s8(fmt.max_code() as i8);
    let mut codes = [0u8; QK];
    let mut sum = 0f32;
    for (blk, qb) in blocks.chunks_exact(bb).zip(q8.chunks_exact(Q8)) {
        unpack_codes(fmt.bits, &blk[2..], &mut codes);
        let c0 = vreinterpretq_s8_u8(vld1q_u8(codes.as_ptr()));
        let c1 = vreinterpretq_s8_u8(vld1q_u8(codes.as_ptr().add(16)));
        let x0 = vsubq_s8(vaddq_s8(c0, c0), m);
        let x1 = vsubq_s8(vaddq_s8(c1, c1), m);
        let q0 = vld1q_s8(qb.as_ptr().add(2) as *const i8);
        let q1 = vld1q_s8(qb.as_ptr().add(18) as *const i8);
        let mut acc = vdupq_n_s32(0);
        acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(x0), vget_low_s8(q0)));
        acc = vpadalq_s16(acc, vmull_high_s8(x0, q0));
        acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(x1), vget_low_s8(q1)));
        acc = vpadalq_s16(acc, vmull_high_s8(x1, q1));
        let isum = vaddvq_s32(acc);
        sum += 0.5 * f16_to_f32(le16(blk)) * f16_to_f32(le16(qb)) * isum as f32;
    }
    sum + scalar::pool_q8_0(pool, q8, p)
}

/// NEON dot with f32 activations. Safety: NEON available; `row.len() =
/// fmt.row_bytes(x.len())`, `fmt` valid.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_f32_neon(fmt: QeFormat, row: &[u8], x: &[f32]) -> f32 {
    let nb = x.len() / QK;
    let bb = fmt.block_bytes();
    let (blocks, pool) = row.split_at(nb * bb);
    let half_m = fmt.max_code() as f32 * 0.5;
    let mut codes = [0u8; QK];
    let mut lv = [0f32; QK];
    let mut acc = vdupq_n_f32(0.0);
    for (blk, xb) in blocks.chunks_exact(bb).zip(x.chunks_exact(QK)) {
        unpack_codes(fmt.bits, &blk[2..], &mut codes);
        for (l, &c) in lv.iter_mut().zip(&codes) {
            *l = c as f32 - half_m;
        }
        let mut s = vdupq_n_f32(0.0);
        for i in (0..QK).step_by(4) {
            s = vfmaq_f32(
                s,
                vld1q_f32(lv.as_ptr().add(i)),
                vld1q_f32(xb.as_ptr().add(i)),
            );
        }
        acc = vfmaq_n_f32(acc, s, f16_to_f32(le16(blk)));
    }
    vaddvq_f32(acc) + scalar::pool_f32(pool, x)
}

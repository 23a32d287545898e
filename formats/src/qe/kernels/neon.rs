//! aarch64 NEON kernels for QE format version 3 (compile-checked in CI-less development; the
//! x86 kernels are the measured ones).
//!
//! Per block: the codes unpacked with vector shifts (3-bit stream: a table lookup into 16-bit
//! words, per-word shifts, a narrowing move) into two 16-byte registers (weights 0..15
//! and 16..31 — the two sub-blocks), levels by one table lookup (`tbl`), then `T·q` with
//! widening multiplies (`vmull_s8`: |T·q| ≤ 127·128 fits i16), pairwise-accumulated into i32
//! and summed per sub-block: the exact `isum_j`. The f32 part is the scalar reference's
//! `d_q·(S(u0)·isum0 + S(u1)·isum1)` in block order, and the pool is the reference walk, so the
//! result is bit-identical to the scalar kernel. The f32 dot uses 4-lane FMAs per sub-block.

use std::arch::aarch64::*;

use super::scalar;
use crate::float::f16_to_f32;
use crate::qe::{QeFormat, QK, SCALES, SUB};

const Q8: usize = super::BLOCK_Q8_0_BYTES;

#[inline]
fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// The 32 codes of a block (`qs` = the bytes after the scale codes): weights 0..15, 16..31.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn codes_neon<const B: u8>(qs: *const u8) -> (uint8x16_t, uint8x16_t) {
    if B == 4 {
        let v = vld1q_u8(qs);
        (vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v))
    } else if B == 3 {
        // Word k of eight weights 8g..8g+7 = code bytes ⌊3i/8⌋, ⌊3i/8⌋ + 1 (i = 8g + k; the
        // 12 stream bytes are copied so nothing past them is read), shifted right by 3i mod 8.
        let mut buf = [0u8; 16];
        std::ptr::copy_nonoverlapping(qs, buf.as_mut_ptr(), 12);
        let v = vld1q_u8(buf.as_ptr());
        let m7 = vdupq_n_u16(7);
        let group = |g: usize| {
            let mut idx = [0u8; 16];
            let mut sh = [0i16; 8];
            for k in 0..8 {
                let i = 8 * g + k;
                idx[2 * k] = (3 * i / 8) as u8;
                idx[2 * k + 1] = (3 * i / 8 + 1) as u8;
                sh[k] = -((3 * i % 8) as i16);
            }
            let w = vreinterpretq_u16_u8(vqtbl1q_u8(v, vld1q_u8(idx.as_ptr())));
            vmovn_u16(vandq_u16(vshlq_u16(w, vld1q_s16(sh.as_ptr())), m7))
        };
        (
            vcombine_u8(group(0), group(1)),
            vcombine_u8(group(2), group(3)),
        )
    } else {
        let planes = vld1_u8(qs);
        let m3 = vdup_n_u8(3);
        let c0 = vcombine_u8(vand_u8(planes, m3), vand_u8(vshr_n_u8::<2>(planes), m3));
        let c1 = vcombine_u8(vand_u8(vshr_n_u8::<4>(planes), m3), vshr_n_u8::<6>(planes));
        (c0, c1)
    }
}

/// Exact `Σ T·q` of 16 levels and 16 activations.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn isum16(t: int8x16_t, q: int8x16_t) -> i32 {
    let acc = vpaddlq_s16(vmull_s8(vget_low_s8(t), vget_low_s8(q)));
    vaddvq_s32(vpadalq_s16(acc, vmull_high_s8(t, q)))
}

#[target_feature(enable = "neon")]
unsafe fn blocks_q8_0_neon<const B: u8>(blocks: &[u8], q8: &[u8]) -> f32 {
    let bb = 2 + 4 * B as usize;
    let tbl = vld1q_s8(super::PADDED_TABLES[B as usize - 2].as_ptr());
    let mut sum = 0f32;
    for (blk, qb) in blocks.chunks_exact(bb).zip(q8.chunks_exact(Q8)) {
        let (c0, c1) = codes_neon::<B>(blk.as_ptr().add(2));
        let t0 = vqtbl1q_s8(tbl, c0);
        let t1 = vqtbl1q_s8(tbl, c1);
        let q0 = vld1q_s8(qb.as_ptr().add(2) as *const i8);
        let q1 = vld1q_s8(qb.as_ptr().add(2 + SUB) as *const i8);
        let i0 = isum16(t0, q0);
        let i1 = isum16(t1, q1);
        let s0 = SCALES[blk[0] as usize];
        let s1 = SCALES[blk[1] as usize];
        sum += f16_to_f32(le16(qb)) * (s0 * i0 as f32 + s1 * i1 as f32);
    }
    sum
}

/// NEON dot with Q8_0 activations. Safety: NEON available; `row.len() = fmt.row_bytes(p)`,
/// `q8.len() = p/32·34`, `fmt` valid.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_q8_0_neon(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    let nb = p / QK;
    let (blocks, pool) = row.split_at(nb * fmt.block_bytes());
    let s = match fmt.bits {
        2 => blocks_q8_0_neon::<2>(blocks, q8),
        3 => blocks_q8_0_neon::<3>(blocks, q8),
        _ => blocks_q8_0_neon::<4>(blocks, q8),
    };
    s + scalar::pool_q8_0(pool, q8, p)
}

/// `Σ T·x` of 16 levels and 16 f32 activations, in 4 lanes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn fdot16(t: int8x16_t, x: *const f32) -> float32x4_t {
    let lo = vmovl_s8(vget_low_s8(t));
    let hi = vmovl_high_s8(t);
    let f = |v: int32x4_t| vcvtq_f32_s32(v);
    let mut s = vmulq_f32(f(vmovl_s16(vget_low_s16(lo))), vld1q_f32(x));
    s = vfmaq_f32(s, f(vmovl_high_s16(lo)), vld1q_f32(x.add(4)));
    s = vfmaq_f32(s, f(vmovl_s16(vget_low_s16(hi))), vld1q_f32(x.add(8)));
    vfmaq_f32(s, f(vmovl_high_s16(hi)), vld1q_f32(x.add(12)))
}

#[target_feature(enable = "neon")]
unsafe fn blocks_f32_neon<const B: u8>(blocks: &[u8], x: &[f32]) -> f32 {
    let bb = 2 + 4 * B as usize;
    let tbl = vld1q_s8(super::PADDED_TABLES[B as usize - 2].as_ptr());
    let mut acc = vdupq_n_f32(0.0);
    for (blk, xb) in blocks.chunks_exact(bb).zip(x.chunks_exact(QK)) {
        let (c0, c1) = codes_neon::<B>(blk.as_ptr().add(2));
        let s0 = fdot16(vqtbl1q_s8(tbl, c0), xb.as_ptr());
        let s1 = fdot16(vqtbl1q_s8(tbl, c1), xb.as_ptr().add(SUB));
        acc = vfmaq_n_f32(acc, s0, SCALES[blk[0] as usize]);
        acc = vfmaq_n_f32(acc, s1, SCALES[blk[1] as usize]);
    }
    vaddvq_f32(acc)
}

/// NEON dot with f32 activations. Safety: NEON available; `row.len() =
/// fmt.row_bytes(x.len())`, `fmt` valid.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_f32_neon(fmt: QeFormat, row: &[u8], x: &[f32]) -> f32 {
    let nb = x.len() / QK;
    let (blocks, pool) = row.split_at(nb * fmt.block_bytes());
    let s = match fmt.bits {
        2 => blocks_f32_neon::<2>(blocks, x),
        3 => blocks_f32_neon::<3>(blocks, x),
        _ => blocks_f32_neon::<4>(blocks, x),
    };
    s + scalar::pool_f32(pool, x)
}

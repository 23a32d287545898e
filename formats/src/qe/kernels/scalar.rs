//! Portable reference kernels. They define the results the SIMD kernels are tested against:
//! per block an exact integer (or f32 lane-free) sum, scaled and added in block order, then the
//! outlier pool in pool order.

use super::{pool_walk, BLOCK_Q8_0_BYTES};
use crate::float::f16_to_f32;
use crate::qe::{unpack_codes, QeFormat, QK};

#[inline]
fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// Exact integer part of one block against one Q8_0 block: `Σ (2c − M)·q`.
#[inline]
pub(crate) fn block_isum(fmt: QeFormat, blk: &[u8], q8: &[u8]) -> i32 {
    let mut codes = [0u8; QK];
    unpack_codes(fmt.bits, &blk[2..], &mut codes);
    let m = fmt.max_code() as i32;
    codes
        .iter()
        .zip(&q8[2..2 + QK])
        .map(|(&c, &q)| (2 * c as i32 - m) * (q as i8 as i32))
        .sum()
}

/// Dot product of one QE row with `p/32` Q8_0 blocks (lengths checked by the caller).
pub(crate) fn dot_q8_0(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    let nb = p / QK;
    let bb = fmt.block_bytes();
    let (blocks, pool) = row.split_at(nb * bb);
    let mut sum = 0f32;
    for (blk, qb) in blocks
        .chunks_exact(bb)
        .zip(q8.chunks_exact(BLOCK_Q8_0_BYTES))
    {
        let scale = 0.5 * f16_to_f32(le16(blk)) * f16_to_f32(le16(qb));
        sum += scale * block_isum(fmt, blk, qb) as f32;
    }
    sum + pool_q8_0(pool, q8, p)
}

/// The pool's contribution `Σ h·(d_q·q)` against Q8_0 activations.
#[inline]
pub(crate) fn pool_q8_0(pool: &[u8], q8: &[u8], p: usize) -> f32 {
    let mut sum = 0f32;
    pool_walk(pool, p, |col, h| {
        let qb = &q8[col / QK * BLOCK_Q8_0_BYTES..];
        let a = f16_to_f32(le16(qb)) * (qb[2 + col % QK] as i8 as f32);
        sum += h * a;
    });
    sum
}

/// The pool's contribution `Σ h·x[col]` against f32 activations.
#[inline]
pub(crate) fn pool_f32(pool: &[u8], x: &[f32]) -> f32 {
    let mut sum = 0f32;
    pool_walk(pool, x.len(), |col, h| sum += h * x[col]);
    sum
}

/// Dot product of one QE row with f32 activations `x` (`x.len() = p`, checked by the caller):
/// per block `d·Σ level·x` (f32, element order), blocks in order, then the pool.
pub(crate) fn dot_f32(fmt: QeFormat, row: &[u8], x: &[f32]) -> f32 {
    let nb = x.len() / QK;
    let bb = fmt.block_bytes();
    let (blocks, pool) = row.split_at(nb * bb);
    let mut codes = [0u8; QK];
    let mut sum = 0f32;
    for (blk, xb) in blocks.chunks_exact(bb).zip(x.chunks_exact(QK)) {
        unpack_codes(fmt.bits, &blk[2..], &mut codes);
        let s: f32 = codes
            .iter()
            .zip(xb)
            .map(|(&c, &xi)| fmt.level(c) * xi)
            .sum();
        sum += f16_to_f32(le16(blk)) * s;
    }
    sum + pool_f32(pool, x)
}

/// Decode one row without validation (`y.len() = p`): the grid values, then `+ h` for the pool
/// entries before the first column `≥ p` (see [`pool_walk`]).
#[allow(dead_code)] // used by the C ABI
pub(crate) fn to_float(fmt: QeFormat, row: &[u8], y: &mut [f32]) {
    let p = y.len();
    let nb = p / QK;
    let bb = fmt.block_bytes();
    let (blocks, pool) = row.split_at(nb * bb);
    let mut codes = [0u8; QK];
    for (blk, out) in blocks.chunks_exact(bb).zip(y.chunks_exact_mut(QK)) {
        let d = f16_to_f32(le16(blk));
        unpack_codes(fmt.bits, &blk[2..], &mut codes);
        for (o, &c) in out.iter_mut().zip(&codes) {
            *o = fmt.value(d, c);
        }
    }
    pool_walk(pool, p, |col, h| y[col] += h);
}

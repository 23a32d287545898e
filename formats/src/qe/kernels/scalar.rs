//! Portable reference kernels. They define the results the SIMD kernels are tested against:
//! per 16-weight sub-block an exact integer (or f32, element order) sum, scaled and added in
//! block order, then the outlier pool in pool order.

use super::{pool_walk, BLOCK_Q8_0_BYTES};
use crate::float::f16_to_f32;
use crate::qe::{unpack_codes, QeFormat, QK, SCALES, SUB};

#[inline]
fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// Exact integer parts of one block against one Q8_0 block: `Σ T[c]·q` over weights 0..15 and
/// over 16..31 (each |sum| ≤ 16·127·128 < 2¹⁸).
#[inline]
pub(crate) fn block_isums(fmt: QeFormat, blk: &[u8], q8: &[u8]) -> [i32; 2] {
    let mut codes = [0u8; QK];
    unpack_codes(fmt.bits, &blk[2..], &mut codes);
    let t = fmt.table();
    let mut s = [0i32; 2];
    for (h, (cs, qs)) in codes
        .chunks_exact(SUB)
        .zip(q8[2..2 + QK].chunks_exact(SUB))
        .enumerate()
    {
        s[h] = cs
            .iter()
            .zip(qs)
            .map(|(&c, &q)| t[c as usize] as i32 * (q as i8 as i32))
            .sum();
    }
    s
}

/// Dot product of one QE row with `p/32` Q8_0 blocks (lengths checked by the caller): per block
/// `d_q·(S(u0)·isum0 + S(u1)·isum1)` (each `S·isum` is exact in f32: ≤ 5 + 18 significant
/// bits), added in block order, then the pool.
pub(crate) fn dot_q8_0(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    let nb = p / QK;
    let bb = fmt.block_bytes();
    let (blocks, pool) = row.split_at(nb * bb);
    let mut sum = 0f32;
    for (blk, qb) in blocks
        .chunks_exact(bb)
        .zip(q8.chunks_exact(BLOCK_Q8_0_BYTES))
    {
        let [i0, i1] = block_isums(fmt, blk, qb);
        let s0 = SCALES[blk[0] as usize];
        let s1 = SCALES[blk[1] as usize];
        sum += f16_to_f32(le16(qb)) * (s0 * i0 as f32 + s1 * i1 as f32);
    }
    sum + pool_q8_0(pool, q8, p)
}

/// The pool's contribution `Σ h·(d_q·q)` against Q8_0 activations: entries up to the first
/// column `≥ p`; entry `e` goes to partial sum `s[e mod 8]`, combined as
/// `((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))` — eight independent add chains (one
/// chain of dependent adds made the pool cost a quarter of the SIMD block loop), and exactly
/// the lanes and reduction tree of an 8-lane vector sum. Every kernel computes exactly this,
/// so pool terms never differ between kernels.
#[inline]
pub(crate) fn pool_q8_0(pool: &[u8], q8: &[u8], p: usize) -> f32 {
    let mut s = [0f32; 8];
    let mut e = 0usize;
    pool_walk(pool, p, |col, h| {
        let qb = &q8[col / QK * BLOCK_Q8_0_BYTES..];
        let a = f16_to_f32(le16(qb)) * (qb[2 + col % QK] as i8 as f32);
        s[e & 7] += h * a;
        e += 1;
    });
    combine8(&s)
}

/// `((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))`: the horizontal sum of an 8-lane vector.
#[inline(always)]
pub(crate) fn combine8(s: &[f32; 8]) -> f32 {
    ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))
}

/// The pool's contribution `Σ h·x[col]` against f32 activations.
#[inline]
pub(crate) fn pool_f32(pool: &[u8], x: &[f32]) -> f32 {
    let mut sum = 0f32;
    pool_walk(pool, x.len(), |col, h| sum += h * x[col]);
    sum
}

/// Dot product of one QE row with f32 activations `x` (`x.len() = p`, checked by the caller):
/// per sub-block `S(u)·Σ T[c]·x` (f32, element order), sub-blocks in order, then the pool.
pub(crate) fn dot_f32(fmt: QeFormat, row: &[u8], x: &[f32]) -> f32 {
    let nb = x.len() / QK;
    let bb = fmt.block_bytes();
    let (blocks, pool) = row.split_at(nb * bb);
    let mut codes = [0u8; QK];
    let mut sum = 0f32;
    for (blk, xb) in blocks.chunks_exact(bb).zip(x.chunks_exact(QK)) {
        unpack_codes(fmt.bits, &blk[2..], &mut codes);
        for (h, (cs, xs)) in codes
            .chunks_exact(SUB)
            .zip(xb.chunks_exact(SUB))
            .enumerate()
        {
            let s: f32 = cs.iter().zip(xs).map(|(&c, &xi)| fmt.level(c) * xi).sum();
            sum += SCALES[blk[h] as usize] * s;
        }
    }
    sum + pool_f32(pool, x)
}

/// Decode one row without validation (`y.len() = p`): the grid values, then `+ h` for the pool
/// entries before the first column `≥ p` (see [`pool_walk`]).
#[allow(dead_code)] // used by the C ABI
pub(crate) fn to_float(fmt: QeFormat, row: &[u8], y: &mut [f32]) {
    let p = y.len();
    let nb = p / QK;
    let (blocks, pool) = row.split_at(nb * fmt.block_bytes());
    crate::qe::decode_blocks(fmt, blocks, y);
    pool_walk(pool, p, |col, h| y[col] += h);
}

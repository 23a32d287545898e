//! x86-64 kernels: AVX2 (+FMA, F16C) and AVX-512 (F, BW, VL, DQ; VNNI when present).
//!
//! Per 32-weight block against a Q8_0 block:
//! 1. unpack the codes into 32 bytes in natural order (2-bit planes: one 64-bit broadcast and
//!    per-lane shifts by 0/2/4/6; bit 2: the u32 mask spread to bytes, or one masked add with
//!    AVX-512BW; nibbles: and/shift);
//! 2. the exact integer `Σ (2c − M)·q` = `maddubs(2c, q) − maddubs(M, q)` (i16, no saturation
//!    for any q in −128..=127) then `madd(·, 1)`; with VNNI two `vpdpbusd` and a subtraction;
//! 3. the 8 (16) i32 lane sums go to f32 and are accumulated with `fma(d_w·d_q/2, ·, acc)`.
//!
//! AVX-512 handles two blocks per 512-bit register; both use two independent accumulators.
//! The outlier pool is added afterwards by the scalar walk, exactly as the reference does.

use std::arch::x86_64::*;

use super::scalar;
use crate::qe::{QeFormat, QK};

const Q8: usize = super::BLOCK_Q8_0_BYTES;

/// AVX2 + FMA + F16C present.
pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// AVX-512 F/BW/VL/DQ present (plus everything [`has_avx2`] needs).
pub(crate) fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512dq")
}

pub(crate) fn has_avx512vnni() -> bool {
    is_x86_feature_detected!("avx512vnni")
}

/// f16 bits at `p` (unaligned) to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Spread the 32 bits of `m` to bytes: byte `i` = 0xFF if bit `i` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mask_to_bytes(m: u32) -> __m256i {
    let v = _mm256_set1_epi32(m as i32);
    let idx = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let b = _mm256_and_si256(_mm256_shuffle_epi8(v, idx), bits);
    _mm256_cmpeq_epi8(b, bits)
}

/// The 32 codes of a block (`qs` = the bytes after the scale) in natural order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes_avx2<const B: u8>(qs: *const u8) -> __m256i {
    if B == 4 {
        let v = _mm_loadu_si128(qs as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(v, m);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        _mm256_set_m128i(hi, lo)
    } else {
        let planes = (qs as *const i64).read_unaligned();
        let v = _mm256_srlv_epi64(_mm256_set1_epi64x(planes), _mm256_setr_epi64x(0, 2, 4, 6));
        let low = _mm256_and_si256(v, _mm256_set1_epi8(3));
        if B == 3 {
            let m = (qs.add(8) as *const u32).read_unaligned();
            _mm256_or_si256(low, _mm256_and_si256(mask_to_bytes(m), _mm256_set1_epi8(4)))
        } else {
            low
        }
    }
}

/// Exact `Σ (2c − M)·q` of one block in 8 i32 lanes: `maddubs(2c, q) − maddubs(M, q)` in i16
/// (|pair| ≤ 2·30·128 = 7680 and 2·15·128 = 3840: no saturation for any q in −128..=127),
/// then `madd(·, 1)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_dot_avx2<const B: u8>(blk: *const u8, qb: *const u8) -> __m256i {
    let c = codes_avx2::<B>(blk.add(2));
    let q = _mm256_loadu_si256(qb.add(2) as *const __m256i);
    let p = _mm256_maddubs_epi16(_mm256_add_epi8(c, c), q);
    let bias = _mm256_maddubs_epi16(_mm256_set1_epi8(((1u16 << B) - 1) as i8), q);
    _mm256_madd_epi16(_mm256_sub_epi16(p, bias), _mm256_set1_epi16(1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blocks_q8_0_avx2<const B: u8>(blocks: &[u8], q8: &[u8], nb: usize) -> f32 {
    let bb = 2 + 4 * B as usize;
    debug_assert!(blocks.len() >= nb * bb && q8.len() >= nb * Q8);
    let (xp, yp) = (blocks.as_ptr(), q8.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut k = 0;
    while k + 2 <= nb {
        let (b0, q0) = (xp.add(k * bb), yp.add(k * Q8));
        let (b1, q1) = (b0.add(bb), q0.add(Q8));
        let s0 = _mm256_cvtepi32_ps(block_dot_avx2::<B>(b0, q0));
        let s1 = _mm256_cvtepi32_ps(block_dot_avx2::<B>(b1, q1));
        let d0 = 0.5 * f16_at(b0) * f16_at(q0);
        let d1 = 0.5 * f16_at(b1) * f16_at(q1);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0), s0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d1), s1, acc1);
        k += 2;
    }
    if k < nb {
        let (b0, q0) = (xp.add(k * bb), yp.add(k * Q8));
        let s0 = _mm256_cvtepi32_ps(block_dot_avx2::<B>(b0, q0));
        let d0 = 0.5 * f16_at(b0) * f16_at(q0);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0), s0, acc0);
    }
    hsum256(_mm256_add_ps(acc0, acc1))
}

/// AVX2 dot with Q8_0 activations. Safety: AVX2/FMA/F16C available; `row.len() =
/// fmt.row_bytes(p)`, `q8.len() = p/32·34`, `fmt` valid.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_avx2(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    let nb = p / QK;
    let (blocks, pool) = row.split_at(nb * fmt.block_bytes());
    let s = match fmt.bits {
        2 => blocks_q8_0_avx2::<2>(blocks, q8, nb),
        3 => blocks_q8_0_avx2::<3>(blocks, q8, nb),
        _ => blocks_q8_0_avx2::<4>(blocks, q8, nb),
    };
    s + scalar::pool_q8_0(pool, q8, p)
}

// ---------------------------------------------------------------------------------------------
// AVX-512: two blocks per 512-bit register.

/// Codes of blocks `b0` and `b1` (pointers to their code bytes): block 0 in the low 256 bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn codes_avx512<const B: u8>(qs0: *const u8, qs1: *const u8) -> __m512i {
    if B == 4 {
        let a = _mm512_broadcast_i32x4(_mm_loadu_si128(qs0 as *const __m128i));
        let b = _mm512_broadcast_i32x4(_mm_loadu_si128(qs1 as *const __m128i));
        let v = _mm512_mask_blend_epi64(0xF0, a, b);
        let v = _mm512_srlv_epi64(v, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
        _mm512_and_si512(v, _mm512_set1_epi8(0x0f))
    } else {
        let a = (qs0 as *const i64).read_unaligned();
        let b = (qs1 as *const i64).read_unaligned();
        let v = _mm512_mask_blend_epi64(0xF0, _mm512_set1_epi64(a), _mm512_set1_epi64(b));
        let v = _mm512_srlv_epi64(v, _mm512_setr_epi64(0, 2, 4, 6, 0, 2, 4, 6));
        let low = _mm512_and_si512(v, _mm512_set1_epi8(3));
        if B == 3 {
            let m0 = (qs0.add(8) as *const u32).read_unaligned() as u64;
            let m1 = (qs1.add(8) as *const u32).read_unaligned() as u64;
            _mm512_mask_add_epi8(low, m0 | (m1 << 32), low, _mm512_set1_epi8(4))
        } else {
            low
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn q8_pair(q0: *const u8, q1: *const u8) -> __m512i {
    let lo = _mm256_loadu_si256(q0.add(2) as *const __m256i);
    let hi = _mm256_loadu_si256(q1.add(2) as *const __m256i);
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
}

/// Exact `Σ (2c − M)·q` of two blocks (lanes 0..8 block 0, 8..16 block 1), as
/// [`block_dot_avx2`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn pair_dot<const B: u8>(c: __m512i, q: __m512i) -> __m512i {
    let p = _mm512_maddubs_epi16(_mm512_add_epi8(c, c), q);
    let bias = _mm512_maddubs_epi16(_mm512_set1_epi8(((1u16 << B) - 1) as i8), q);
    _mm512_madd_epi16(_mm512_sub_epi16(p, bias), _mm512_set1_epi16(1))
}

/// [`pair_dot`] with VNNI: `vpdpbusd(2c, q) − vpdpbusd(M, q)` straight into i32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn pair_dot_vnni<const B: u8>(c: __m512i, q: __m512i) -> __m512i {
    let z = _mm512_setzero_si512();
    let p = _mm512_dpbusd_epi32(z, _mm512_add_epi8(c, c), q);
    let bias = _mm512_dpbusd_epi32(z, _mm512_set1_epi8(((1u16 << B) - 1) as i8), q);
    _mm512_sub_epi32(p, bias)
}

/// The AVX-512 block loop, shared by the plain and the VNNI variant (which differ only in the
/// target features that let `vnni_dot` inline).
macro_rules! blocks_avx512_body {
    ($B:ident, $VNNI:expr, $blocks:ident, $q8:ident, $nb:ident) => {{
        let bb = 2 + 4 * $B as usize;
        debug_assert!($blocks.len() >= $nb * bb && $q8.len() >= $nb * Q8);
        let (xp, yp) = ($blocks.as_ptr(), $q8.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut k = 0;
        macro_rules! pair {
            ($k:expr) => {{
                let (b0, q0) = (xp.add($k * bb), yp.add($k * Q8));
                let (b1, q1) = (b0.add(bb), q0.add(Q8));
                let c = codes_avx512::<$B>(b0.add(2), b1.add(2));
                let q = q8_pair(q0, q1);
                let i = if $VNNI {
                    pair_dot_vnni::<$B>(c, q)
                } else {
                    pair_dot::<$B>(c, q)
                };
                let d0 = _mm256_set1_ps(0.5 * f16_at(b0) * f16_at(q0));
                let d1 = _mm256_set1_ps(0.5 * f16_at(b1) * f16_at(q1));
                (
                    _mm512_insertf32x8(_mm512_castps256_ps512(d0), d1, 1),
                    _mm512_cvtepi32_ps(i),
                )
            }};
        }
        while k + 4 <= $nb {
            let (d0, s0) = pair!(k);
            let (d1, s1) = pair!(k + 2);
            acc0 = _mm512_fmadd_ps(d0, s0, acc0);
            acc1 = _mm512_fmadd_ps(d1, s1, acc1);
            k += 4;
        }
        if k + 2 <= $nb {
            let (d0, s0) = pair!(k);
            acc0 = _mm512_fmadd_ps(d0, s0, acc0);
            k += 2;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        if k < $nb {
            let (b0, q0) = (xp.add(k * bb), yp.add(k * Q8));
            let s0 = _mm256_cvtepi32_ps(block_dot_avx2::<$B>(b0, q0));
            let d0 = 0.5 * f16_at(b0) * f16_at(q0);
            sum += hsum256(_mm256_mul_ps(_mm256_set1_ps(d0), s0));
        }
        sum
    }};
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn blocks_q8_0_avx512<const B: u8>(blocks: &[u8], q8: &[u8], nb: usize) -> f32 {
    blocks_avx512_body!(B, false, blocks, q8, nb)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn blocks_q8_0_avx512_vnni<const B: u8>(blocks: &[u8], q8: &[u8], nb: usize) -> f32 {
    blocks_avx512_body!(B, true, blocks, q8, nb)
}

/// AVX-512 dot with Q8_0 activations (VNNI `vpdpbusd` when the CPU has it). Safety: as
/// [`dot_q8_0_avx2`], with AVX-512 F/BW/VL/DQ available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_avx512(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    dot_q8_0_avx512_impl(fmt, row, q8, p, has_avx512vnni())
}

/// [`dot_q8_0_avx512`] with the VNNI choice explicit (`vnni` needs AVX512-VNNI; tests run both).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_avx512_impl(
    fmt: QeFormat,
    row: &[u8],
    q8: &[u8],
    p: usize,
    vnni: bool,
) -> f32 {
    let nb = p / QK;
    let (blocks, pool) = row.split_at(nb * fmt.block_bytes());
    let s = match (fmt.bits, vnni) {
        (2, false) => blocks_q8_0_avx512::<2>(blocks, q8, nb),
        (3, false) => blocks_q8_0_avx512::<3>(blocks, q8, nb),
        (_, false) => blocks_q8_0_avx512::<4>(blocks, q8, nb),
        (2, true) => blocks_q8_0_avx512_vnni::<2>(blocks, q8, nb),
        (3, true) => blocks_q8_0_avx512_vnni::<3>(blocks, q8, nb),
        (_, true) => blocks_q8_0_avx512_vnni::<4>(blocks, q8, nb),
    };
    s + scalar::pool_q8_0(pool, q8, p)
}

// ---------------------------------------------------------------------------------------------
// f32 activations.

/// `2c − M` as f32 for the 8 codes in the low bytes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lv(v: __m128i, m: __m256i) -> __m256 {
    let c32 = _mm256_cvtepu8_epi32(v);
    _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_add_epi32(c32, c32), m))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blocks_f32_avx2<const B: u8>(blocks: &[u8], x: &[f32], nb: usize) -> f32 {
    let bb = 2 + 4 * B as usize;
    debug_assert!(blocks.len() >= nb * bb && x.len() >= nb * QK);
    let (bp, xp) = (blocks.as_ptr(), x.as_ptr());
    let m = _mm256_set1_epi32(((1u16 << B) - 1) as i32);
    let mut acc = _mm256_setzero_ps();
    for k in 0..nb {
        let blk = bp.add(k * bb);
        let c = codes_avx2::<B>(blk.add(2));
        let lo = _mm256_castsi256_si128(c);
        let hi = _mm256_extracti128_si256(c, 1);
        let xs = xp.add(k * QK);
        let mut s = _mm256_mul_ps(lv(lo, m), _mm256_loadu_ps(xs));
        s = _mm256_fmadd_ps(lv(_mm_srli_si128(lo, 8), m), _mm256_loadu_ps(xs.add(8)), s);
        s = _mm256_fmadd_ps(lv(hi, m), _mm256_loadu_ps(xs.add(16)), s);
        s = _mm256_fmadd_ps(lv(_mm_srli_si128(hi, 8), m), _mm256_loadu_ps(xs.add(24)), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(0.5 * f16_at(blk)), s, acc);
    }
    hsum256(acc)
}

/// AVX2 dot with f32 activations. Safety: AVX2/FMA/F16C available; `row.len() =
/// fmt.row_bytes(x.len())`, `fmt` valid.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32_avx2(fmt: QeFormat, row: &[u8], x: &[f32]) -> f32 {
    let nb = x.len() / QK;
    let (blocks, pool) = row.split_at(nb * fmt.block_bytes());
    let s = match fmt.bits {
        2 => blocks_f32_avx2::<2>(blocks, x, nb),
        3 => blocks_f32_avx2::<3>(blocks, x, nb),
        _ => blocks_f32_avx2::<4>(blocks, x, nb),
    };
    s + scalar::pool_f32(pool, x)
}

//! x86-64 kernels: AVX2 (+FMA, F16C) and AVX-512 (F, BW, VL; VNNI when present).
//!
//! Per 32-weight block against a Q8_0 block:
//! 1. unpack the codes into 32 bytes in natural order (2-bit planes: one 64-bit broadcast and
//!    per-lane shifts by 0/2/4/6; bit 2: the u32 mask spread to bytes, or one masked byte add
//!    with AVX-512BW; nibbles: a 128-bit broadcast and per-lane shifts by 0/4);
//! 2. the exact integer `Σ (2c − M)·q` = `maddubs(2c, q) − maddubs(M, q)` (i16, no saturation
//!    for any q in −128..=127) then `madd(·, 1)`; with VNNI two `vpdpbusd` and a subtraction;
//! 3. the 8 i32 lane sums go to f32 and are accumulated with `fma(d_w·d_q, ·, acc)` (scales
//!    from a f16→f32 table; the factor 1/2 once at the end), four blocks per iteration into two
//!    accumulators.
//!
//! The outlier pool is added afterwards by a scalar walk with the same operations and order as
//! the reference.

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

/// AVX-512 F/BW/VL present (plus everything [`has_avx2`] needs).
pub(crate) fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
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

/// f32 value of every f16 bit pattern (256 KiB, built on first use): two loads per block
/// instead of two `vcvtph2ps` (which need a vector shuffle port each).
fn f16_table() -> &'static [f32; 65536] {
    static TABLE: std::sync::OnceLock<Box<[f32; 65536]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![0f32; 65536].into_boxed_slice();
        for (i, v) in t.iter_mut().enumerate() {
            *v = crate::float::f16_to_f32(i as u16);
        }
        t.try_into().expect("65536 entries")
    })
}

/// `d_w·d_q` of the block at `blk` and the Q8_0 block at `qb` (table lookups).
#[inline(always)]
unsafe fn scale_product(t: &[f32; 65536], blk: *const u8, qb: *const u8) -> f32 {
    let a = (blk as *const u16).read_unaligned();
    let b = (qb as *const u16).read_unaligned();
    t[a as usize] * t[b as usize]
}

/// The block loop shared by all x86 Q8_0 kernels: four blocks per iteration into two
/// accumulators; `$dot(blk, qb)` gives a block's exact i32 lane sums. The factor 1/2 of
/// `(d/2)·(2c − M)` is applied once at the end (exact: a power of two).
macro_rules! blocks_q8_0_body {
    ($B:ident, $dot:ident, $blocks:ident, $q8:ident, $nb:ident) => {{
        let bb = 2 + 4 * $B as usize;
        debug_assert!($blocks.len() >= $nb * bb && $q8.len() >= $nb * Q8);
        let t = f16_table();
        let (xp, yp) = ($blocks.as_ptr(), $q8.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut k = 0;
        macro_rules! step {
            ($acc:ident, $k:expr) => {{
                let (b, q) = (xp.add($k * bb), yp.add($k * Q8));
                let s = _mm256_cvtepi32_ps($dot::<$B>(b, q));
                $acc = _mm256_fmadd_ps(_mm256_set1_ps(scale_product(t, b, q)), s, $acc);
            }};
        }
        while k + 4 <= $nb {
            step!(acc0, k);
            step!(acc1, k + 1);
            step!(acc0, k + 2);
            step!(acc1, k + 3);
            k += 4;
        }
        while k < $nb {
            step!(acc0, k);
            k += 1;
        }
        0.5 * hsum256(_mm256_add_ps(acc0, acc1))
    }};
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blocks_q8_0_avx2<const B: u8>(blocks: &[u8], q8: &[u8], nb: usize) -> f32 {
    blocks_q8_0_body!(B, block_dot_avx2, blocks, q8, nb)
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
    s + pool_q8_0_f16c(pool, q8, p)
}

/// The pool's contribution against Q8_0 activations, exactly as [`scalar::pool_q8_0`] computes
/// it (same operations, same four partial sums); `h` and the activation scale are converted
/// together by one `vcvtph2ps`. Safety: F16C available; `q8.len() = p/32·34`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pool_q8_0_f16c(pool: &[u8], q8: &[u8], p: usize) -> f32 {
    debug_assert!(q8.len() >= p / QK * Q8);
    let mut s = [0f32; 4];
    let (pp, qp) = (pool.as_ptr(), q8.as_ptr());
    for e in 0..pool.len() / 4 {
        let ent = (pp.add(4 * e) as *const u32).read_unaligned();
        let col = (ent & 0xffff) as usize;
        if col >= p {
            break;
        }
        // col < p: the Q8_0 block col/32 lies inside q8.
        let qb = qp.add(col / QK * Q8);
        let dq = (qb as *const u16).read_unaligned() as u32;
        let hd = _mm_cvtph_ps(_mm_cvtsi32_si128(((ent >> 16) | (dq << 16)) as i32));
        let h = _mm_cvtss_f32(hd);
        let d = _mm_cvtss_f32(_mm_movehdup_ps(hd));
        s[e & 3] += h * (d * (*qb.add(2 + col % QK) as i8 as f32));
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

// ---------------------------------------------------------------------------------------------
// AVX-512 (VL/BW, VNNI when present) on 256-bit registers: the k-mask add for bit 2 and
// `vpdpbusd` are the gains; 512-bit registers would only add cross-lane shuffles (and on many
// cores run at the width of two 256-bit operations anyway).

/// Codes of one block with AVX-512BW/VL: bit 2 by one masked byte add.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn codes_avx512<const B: u8>(qs: *const u8) -> __m256i {
    if B == 4 {
        let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(qs as *const __m128i));
        let v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4));
        _mm256_and_si256(v, _mm256_set1_epi8(0x0f))
    } else {
        let planes = (qs as *const i64).read_unaligned();
        let v = _mm256_srlv_epi64(_mm256_set1_epi64x(planes), _mm256_setr_epi64x(0, 2, 4, 6));
        let low = _mm256_and_si256(v, _mm256_set1_epi8(3));
        if B == 3 {
            let m = (qs.add(8) as *const u32).read_unaligned();
            _mm256_mask_add_epi8(low, m, low, _mm256_set1_epi8(4))
        } else {
            low
        }
    }
}

/// Exact lane sums of `Σ (2c − M)·q` with `maddubs` (AVX-512 unpack, no VNNI).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn block_dot_avx512<const B: u8>(blk: *const u8, qb: *const u8) -> __m256i {
    let c = codes_avx512::<B>(blk.add(2));
    let q = _mm256_loadu_si256(qb.add(2) as *const __m256i);
    let p = _mm256_maddubs_epi16(_mm256_add_epi8(c, c), q);
    let bias = _mm256_maddubs_epi16(_mm256_set1_epi8(((1u16 << B) - 1) as i8), q);
    _mm256_madd_epi16(_mm256_sub_epi16(p, bias), _mm256_set1_epi16(1))
}

/// Exact lane sums with VNNI: `vpdpbusd(2c, q) − vpdpbusd(M, q)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn block_dot_vnni<const B: u8>(blk: *const u8, qb: *const u8) -> __m256i {
    let c = codes_avx512::<B>(blk.add(2));
    let q = _mm256_loadu_si256(qb.add(2) as *const __m256i);
    let z = _mm256_setzero_si256();
    let p = _mm256_dpbusd_epi32(z, _mm256_add_epi8(c, c), q);
    let bias = _mm256_dpbusd_epi32(z, _mm256_set1_epi8(((1u16 << B) - 1) as i8), q);
    _mm256_sub_epi32(p, bias)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn blocks_q8_0_avx512<const B: u8>(blocks: &[u8], q8: &[u8], nb: usize) -> f32 {
    blocks_q8_0_body!(B, block_dot_avx512, blocks, q8, nb)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn blocks_q8_0_vnni<const B: u8>(blocks: &[u8], q8: &[u8], nb: usize) -> f32 {
    blocks_q8_0_body!(B, block_dot_vnni, blocks, q8, nb)
}

/// AVX-512 dot with Q8_0 activations (VNNI `vpdpbusd` when the CPU has it). Safety: as
/// [`dot_q8_0_avx2`], with AVX-512 F/BW/VL available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_avx512(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    dot_q8_0_avx512_impl(fmt, row, q8, p, has_avx512vnni())
}

/// [`dot_q8_0_avx512`] with the VNNI choice explicit (`vnni` needs AVX512-VNNI; tests run both).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
        (2, true) => blocks_q8_0_vnni::<2>(blocks, q8, nb),
        (3, true) => blocks_q8_0_vnni::<3>(blocks, q8, nb),
        (_, true) => blocks_q8_0_vnni::<4>(blocks, q8, nb),
    };
    s + pool_q8_0_f16c(pool, q8, p)
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

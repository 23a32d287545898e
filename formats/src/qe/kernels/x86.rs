//! x86-64 kernels for QE format version 3: AVX2 (+FMA, F16C) and AVX-512 (F, BW, VL; VNNI when
//! present).
//!
//! Per 32-weight block against a Q8_0 block:
//! 1. unpack the codes into 32 bytes in natural order (2-bit planes: one 64-bit broadcast and
//!    per-lane shifts by 0/2/4/6; the 3-bit stream: a byte shuffle into 16-bit words, equal-shift
//!    word pairs shifted per 32-bit lane, a pack — or with AVX512-VBMI one `vpermb` and one
//!    `vpmultishiftqb`; nibbles: a 128-bit broadcast and per-lane shifts by 0/4);
//! 2. levels `T[c]` by one byte shuffle (`vpshufb`) of the format's table (padded to 16 bytes);
//! 3. the exact integer sums `Σ T[c]·q`: AVX2 `maddubs(|q|, sign(T, q))` then `madd(·, 1)`
//!    (pairs ≤ 2·128·127 = 32512: no i16 saturation for any q in −128..=127, including −128,
//!    which `sign(q, T)` would not negate); AVX-512 without VNNI the same with the sign applied
//!    by a byte mask; VNNI `vpdpbusd(T + 128, q) − vpdpbusd(128, q)` (u8 × i8, no saturation).
//!    Each i32 lane holds 4 consecutive weights, so lanes 0–3 of a block are sub-block 0
//!    (weights 0..15) and lanes 4–7 sub-block 1;
//! 4. the lane sums go to f32 (exact, |lane| < 2¹⁶) and are accumulated with
//!    `fma(d_q·S(u), lanes, acc)`, the factor vector holding `d_q·S(u0)` in lanes 0–3 and
//!    `d_q·S(u1)` in lanes 4–7 (`d_q·S` is exact: ≤ 11 + 5 significant bits); four blocks per
//!    iteration into two accumulators. AVX-512 puts two blocks in one 512-bit register.
//!
//! The outlier pool is added afterwards, eight entries per vector step, with the same f32
//! operations and order as the reference (bit-identical pool sum).

use std::arch::x86_64::*;

use super::scalar;
use crate::qe::{QeFormat, QK, SCALES, SUB, TABLE_2, TABLE_3, TABLE_4};

const Q8: usize = super::BLOCK_Q8_0_BYTES;

/// `T + 128` as unsigned bytes (the VNNI operand), padded to 16 bytes.
const fn biased(t: [i8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (t[i] as i16 + 128) as u8;
        i += 1;
    }
    out
}

static TABLES_BIASED: [[u8; 16]; 3] = [
    biased(super::padded(TABLE_2)),
    biased(super::padded(TABLE_3)),
    biased(super::padded(TABLE_4)),
];

/// The 16-byte level table of `B`-bit codes.
#[inline(always)]
unsafe fn table128<const B: u8>() -> __m128i {
    _mm_loadu_si128(super::PADDED_TABLES[B as usize - 2].as_ptr() as *const __m128i)
}

/// The 16-byte `T + 128` table of `B`-bit codes.
#[inline(always)]
unsafe fn table128_biased<const B: u8>() -> __m128i {
    _mm_loadu_si128(TABLES_BIASED[B as usize - 2].as_ptr() as *const __m128i)
}

const F_INIT: u8 = 1;
const F_AVX2: u8 = 2;
const F_AVX512: u8 = 4;
const F_VNNI: u8 = 8;
const F_VBMI: u8 = 16;

/// The CPU features the kernels use, detected once (one relaxed load per query afterwards:
/// `vec_dot` asks per row).
#[inline]
fn features() -> u8 {
    let f = FEATURES.load(std::sync::atomic::Ordering::Relaxed);
    if f != 0 {
        return f;
    }
    detect_features()
}

static FEATURES: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

#[cold]
#[inline(never)]
fn detect_features() -> u8 {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    let avx512 = avx2
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl");
    let vnni = is_x86_feature_detected!("avx512vnni");
    let vbmi = vnni && is_x86_feature_detected!("avx512vbmi");
    let f = F_INIT
        | if avx2 { F_AVX2 } else { 0 }
        | if avx512 { F_AVX512 } else { 0 }
        | if vnni { F_VNNI } else { 0 }
        | if vbmi { F_VBMI } else { 0 };
    FEATURES.store(f, std::sync::atomic::Ordering::Relaxed);
    f
}

/// AVX2 + FMA + F16C present.
pub(crate) fn has_avx2() -> bool {
    features() & F_AVX2 != 0
}

/// AVX-512 F/BW/VL present (plus everything [`has_avx2`] needs).
pub(crate) fn has_avx512() -> bool {
    features() & F_AVX512 != 0
}

/// AVX512-VNNI present (tests pick the block loops by hand).
#[cfg(test)]
pub(crate) fn has_avx512vnni() -> bool {
    features() & F_VNNI != 0
}

/// AVX512-VBMI and AVX512-VNNI present (the [`Avx512Variant::Vbmi`] block loop).
#[cfg(test)]
pub(crate) fn has_avx512vbmi() -> bool {
    features() & F_VBMI != 0
}

#[repr(align(32))]
struct A32<T>(T);

/// The 12 code bytes of a 3-bit block in the low 12 bytes (the rest unused): with `F` (the 4
/// bytes after them are readable: the block is not the last of its slice) one 16-byte load,
/// else exactly 12 bytes.
#[inline(always)]
unsafe fn load_stream3<const F: bool>(qs: *const u8) -> __m128i {
    if F {
        _mm_loadu_si128(qs as *const __m128i)
    } else {
        _mm_insert_epi32::<2>(
            _mm_loadl_epi64(qs as *const __m128i),
            (qs.add(8) as *const i32).read_unaligned(),
        )
    }
}

/// Dword shuffle of the 3-bit stream for a shift per dword: dword `d` of 128-bit lane `l` holds
/// the words of weights `a = 16h + 4l + d` and `a + 8` (same shift `3a mod 8`).
const fn stream3_pairs(half: usize) -> [i8; 32] {
    let mut o = [0i8; 32];
    let mut l = 0;
    while l < 2 {
        let mut d = 0;
        while d < 4 {
            let a = 16 * half + 4 * l + d;
            let mut w = 0;
            while w < 2 {
                let i = a + 8 * w;
                let lo = (3 * i / 8) as i8;
                o[16 * l + 4 * d + 2 * w] = lo;
                o[16 * l + 4 * d + 2 * w + 1] = if lo + 1 < 12 { lo + 1 } else { -1 };
                w += 1;
            }
            d += 1;
        }
        l += 1;
    }
    o
}
static STREAM3_PAIRS: [A32<[i8; 32]>; 2] = [A32(stream3_pairs(0)), A32(stream3_pairs(1))];

/// The 32 codes of a 3-bit block (the 12 stream bytes at `qs`; see [`load_stream3`] for `F`)
/// in natural order with AVX2, which has no per-word shift: weights `a` and `a + 8` need the
/// same shift `3a mod 8`, so their 16-bit words share a 32-bit lane shifted by `vpsrlvd`; then
/// a mask, a pack, a byte shuffle and a dword permute restore the order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes3_avx2<const F: bool>(qs: *const u8) -> __m256i {
    let v = _mm256_broadcastsi128_si256(load_stream3::<F>(qs));
    let ld = |a: &A32<[i8; 32]>| _mm256_load_si256(a.0.as_ptr() as *const __m256i);
    let sh = _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5);
    let m = _mm256_set1_epi16(7);
    let x = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_shuffle_epi8(v, ld(&STREAM3_PAIRS[0])), sh),
        m,
    );
    let y = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_shuffle_epi8(v, ld(&STREAM3_PAIRS[1])), sh),
        m,
    );
    // Per lane: [a0, a0+8, a1, a1+8, …] of x then of y → groups of four consecutive weights.
    let p = _mm256_packus_epi16(x, y);
    let g = _mm256_setr_epi8(
        0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15, 0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12,
        14, 9, 11, 13, 15,
    );
    let p = _mm256_shuffle_epi8(p, g);
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// The 32 codes of a block (`qs` = the bytes after the scale codes) in natural order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes_avx2<const B: u8, const F: bool>(qs: *const u8) -> __m256i {
    if B == 4 {
        let v = _mm_loadu_si128(qs as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(v, m);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        _mm256_set_m128i(hi, lo)
    } else if B == 3 {
        codes3_avx2::<F>(qs)
    } else {
        let planes = (qs as *const i64).read_unaligned();
        let v = _mm256_srlv_epi64(_mm256_set1_epi64x(planes), _mm256_setr_epi64x(0, 2, 4, 6));
        _mm256_and_si256(v, _mm256_set1_epi8(3))
    }
}

/// Exact `Σ T[c]·q` of one block in 8 i32 lanes (lanes 0–3: weights 0..15, 4–7: 16..31):
/// `maddubs(|q|, sign(T, q))` in i16 (pairs ≤ 2·128·127: no saturation), then `madd(·, 1)`.
/// `tbl` = the level table in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_dot_avx2<const B: u8, const F: bool>(
    blk: *const u8,
    qb: *const u8,
    tbl: __m256i,
) -> __m256i {
    let c = codes_avx2::<B, F>(blk.add(2));
    let t = _mm256_shuffle_epi8(tbl, c);
    let q = _mm256_loadu_si256(qb.add(2) as *const __m256i);
    let p = _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(t, q));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// f32 value of every f16 bit pattern (256 KiB, built on first use): one load per activation
/// scale instead of a `vcvtph2ps` (which needs a vector shuffle port).
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

/// [`f16_table`] divided by 8 (exact: every f16, subnormals included, divided by 8 is a normal
/// f32 or 0).
fn f16_table_eighth() -> &'static [f32; 65536] {
    static TABLE: std::sync::OnceLock<Box<[f32; 65536]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let t: Vec<f32> = f16_table().iter().map(|&v| v * 0.125).collect();
        t.into_boxed_slice().try_into().expect("65536 entries")
    })
}

/// `d_q` of the Q8_0 block at `qb` (table lookup).
#[inline(always)]
unsafe fn act_scale(t: &[f32; 65536], qb: *const u8) -> f32 {
    t[(qb as *const u16).read_unaligned() as usize]
}

/// The factor vector of one block: `d_q·S(u0)` in lanes 0–3, `d_q·S(u1)` in lanes 4–7 (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_factors(t: &[f32; 65536], blk: *const u8, qb: *const u8) -> __m256 {
    let s0 = _mm256_broadcast_ss(&SCALES[*blk as usize]);
    let s1 = _mm256_broadcast_ss(&SCALES[*blk.add(1) as usize]);
    let dq = _mm256_set1_ps(act_scale(t, qb));
    _mm256_mul_ps(_mm256_blend_ps::<0xF0>(s0, s1), dq)
}

/// The block loop shared by the 256-bit Q8_0 kernels: four blocks per iteration into two
/// accumulators; `$dot(blk, qb, tbl)` gives a block's exact i32 lane sums.
macro_rules! blocks_q8_0_body {
    ($B:ident, $dot:ident, $tbl:expr, $blocks:ident, $q8:ident, $nb:ident) => {{
        let bb = 2 + 4 * $B as usize;
        debug_assert!($blocks.len() >= $nb * bb && $q8.len() >= $nb * Q8);
        let t = f16_table();
        let tbl = $tbl;
        let (xp, yp) = ($blocks.as_ptr(), $q8.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut k = 0;
        // `F`: the block is not the last one (3-bit codes may then be read with 4 bytes more).
        macro_rules! step {
            ($acc:ident, $k:expr, $f:expr) => {{
                let (b, q) = (xp.add($k * bb), yp.add($k * Q8));
                let s = _mm256_cvtepi32_ps($dot::<$B, $f>(b, q, tbl));
                $acc = _mm256_fmadd_ps(block_factors(t, b, q), s, $acc);
            }};
        }
        while k + 4 < $nb {
            step!(acc0, k, true);
            step!(acc1, k + 1, true);
            step!(acc0, k + 2, true);
            step!(acc1, k + 3, true);
            k += 4;
        }
        while k < $nb {
            step!(acc0, k, false);
            k += 1;
        }
        hsum256(_mm256_add_ps(acc0, acc1))
    }};
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blocks_q8_0_avx2<const B: u8>(blocks: &[u8], q8: &[u8], nb: usize) -> f32 {
    blocks_q8_0_body!(
        B,
        block_dot_avx2,
        _mm256_broadcastsi128_si256(table128::<B>()),
        blocks,
        q8,
        nb
    )
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
    s + pool_q8_0_avx2(pool, q8, p)
}

/// One eight-entry step of the pool's vector pass, shared by both pool walks: `ent` holds eight
/// entries (u16 column, f16 `h`), `d` their activation blocks' f16 scales and `q` (low 8 bytes)
/// their activation bytes; lane `j < cnt` gets `acc + h·(d·q)`, the other lanes keep `acc`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pool_step(acc: __m256, ent: __m256i, d: __m128i, q: __m128i, cnt: usize) -> __m256 {
    // h (bytes 2, 3 of each entry) of four entries to the low 64 bits of each 128-bit lane.
    let h_shuf = _mm256_setr_epi8(
        2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, 2, 3, 6, 7, 10, 11, 14, 15, -1,
        -1, -1, -1, -1, -1, -1, -1,
    );
    let d = _mm256_cvtph_ps(d);
    let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    let hv = _mm256_permute4x64_epi64::<0b1000>(_mm256_shuffle_epi8(ent, h_shuf));
    let h = _mm256_cvtph_ps(_mm256_castsi256_si128(hv));
    let sum = _mm256_add_ps(acc, _mm256_mul_ps(h, _mm256_mul_ps(d, q)));
    if cnt >= 8 {
        return sum;
    }
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt as i32), lanes);
    _mm256_blendv_ps(acc, sum, _mm256_castsi256_ps(keep))
}

/// The pool's contribution against Q8_0 activations, eight entries per step: entry `e` goes to
/// lane `e mod 8` (= partial sum `s[e mod 8]` of [`scalar::pool_q8_0`]) with the same f32
/// operations `h·(d_q·q)`, and the final horizontal sum is [`scalar::combine8`]'s tree, so the
/// result is bit-identical to the reference. Columns, `h` and the validity test (the walk stops
/// at the first column `≥ p`) are vector operations; only the two activation loads per entry
/// (`d_q` and `q[col]`, addressed from the column) are scalar, into small buffers that are then
/// loaded as vectors. Safety: AVX2/FMA/F16C; `q8.len() = p/32·34`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn pool_q8_0_avx2(pool: &[u8], q8: &[u8], p: usize) -> f32 {
    debug_assert!(q8.len() >= p / QK * Q8);
    let n = pool.len() / 4;
    let (pp, qp) = (pool.as_ptr(), q8.as_ptr());
    let pv = _mm256_set1_epi32(p as i32);
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut acc = _mm256_setzero_ps();
    let mut dbuf = [0u16; 8];
    let mut qbuf = [0i8; 8];
    // `col < p`: the activation block col/32 (34 bytes from 34·(col/32)) lies inside q8.
    let load = |j: usize, dbuf: &mut [u16; 8], qbuf: &mut [i8; 8], ep: *const u8| {
        let col = (ep.add(4 * j) as *const u16).read_unaligned() as usize;
        let blk = col / QK;
        dbuf[j] = (qp.add(blk * Q8) as *const u16).read_unaligned();
        qbuf[j] = *qp.add(2 + col + 2 * blk) as i8;
    };
    let mut e = 0;
    while e < n {
        let left = n - e;
        let ep = pp.add(4 * e);
        let ent = if left >= 8 {
            _mm256_loadu_si256(ep as *const __m256i)
        } else {
            _mm256_maskload_epi32(
                ep as *const i32,
                _mm256_cmpgt_epi32(_mm256_set1_epi32(left as i32), lanes),
            )
        };
        let col = _mm256_and_si256(ent, _mm256_set1_epi32(0xffff));
        // Columns and p are < 2^16: the signed compare is exact.
        let ok = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(pv, col))) as u32;
        let ok = if left >= 8 {
            ok
        } else {
            ok & ((1 << left) - 1)
        };
        // Entries before the first column ≥ p (the walk stops there).
        let cnt = (!ok).trailing_zeros() as usize;
        if cnt == 0 {
            break;
        }
        if cnt == 8 {
            for j in 0..8 {
                load(j, &mut dbuf, &mut qbuf, ep);
            }
        } else {
            for j in 0..cnt {
                load(j, &mut dbuf, &mut qbuf, ep);
            }
        }
        acc = pool_step(
            acc,
            ent,
            _mm_loadu_si128(dbuf.as_ptr() as *const __m128i),
            _mm_loadl_epi64(qbuf.as_ptr() as *const __m128i),
            cnt,
        );
        if cnt < 8 {
            break;
        }
        e += 8;
    }
    hsum256(acc)
}

// ---------------------------------------------------------------------------------------------
// AVX-512 (VL/BW, VNNI when present): `vpdpbusd` is the gain,
// and two blocks share one 512-bit register (no cross-lane work: block k in the low 256 bits,
// block k + 1 in the high ones), which cuts the instructions per block by about a third — the
// loop is front-end bound, not port bound (measured on Zen 5 with format version 1).

/// Exact lane sums with VNNI: `vpdpbusd(T + 128, q) − vpdpbusd(128, q)` (u8 × i8 products
/// summed in i32 without saturation). `tbl`: the `T + 128` table in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn block_dot_vnni<const B: u8, const F: bool>(
    blk: *const u8,
    qb: *const u8,
    tbl: __m256i,
) -> __m256i {
    let c = codes_avx2::<B, F>(blk.add(2));
    let t = _mm256_shuffle_epi8(tbl, c);
    let q = _mm256_loadu_si256(qb.add(2) as *const __m256i);
    let z = _mm256_setzero_si256();
    let p = _mm256_dpbusd_epi32(z, t, q);
    let bias = _mm256_dpbusd_epi32(z, _mm256_set1_epi8(-128), q);
    _mm256_sub_epi32(p, bias)
}

/// Codes of two consecutive blocks (`qs0`, `qs1` = the bytes after each block's scale codes)
/// in one 512-bit register, block 0 in the low 256 bits, each in natural order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn codes2_avx512<const B: u8, const F: bool>(qs0: *const u8, qs1: *const u8) -> __m512i {
    if B == 4 {
        let a = _mm512_castsi128_si512(_mm_loadu_si128(qs0 as *const __m128i));
        let b = _mm512_castsi128_si512(_mm_loadu_si128(qs1 as *const __m128i));
        // 128-bit lanes a, a, b, b; then nibbles 0/1 per lane pair.
        let v = _mm512_shuffle_i64x2::<0>(a, b);
        let v = _mm512_srlv_epi64(v, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
        _mm512_and_si512(v, _mm512_set1_epi8(0x0f))
    } else if B == 3 {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(codes3_avx2::<true>(qs0)),
            codes3_avx2::<F>(qs1),
        )
    } else {
        let p0 = (qs0 as *const i64).read_unaligned();
        let p1 = (qs1 as *const i64).read_unaligned();
        let v = _mm512_mask_set1_epi64(_mm512_set1_epi64(p0), 0xf0, p1);
        let v = _mm512_srlv_epi64(v, _mm512_setr_epi64(0, 2, 4, 6, 0, 2, 4, 6));
        _mm512_and_si512(v, _mm512_set1_epi8(3))
    }
}

/// The Q8_0 codes of two consecutive Q8_0 blocks at `qb` in one 512-bit register.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn q8_pair(qb: *const u8) -> __m512i {
    let lo = _mm256_loadu_si256(qb.add(2) as *const __m256i);
    let hi = _mm256_loadu_si256(qb.add(Q8 + 2) as *const __m256i);
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Exact lane sums of two blocks (16 i32 lanes, 8 per block) with 512-bit `maddubs`: AVX-512
/// has no `vpsignb`, so `T` is negated where `q < 0` by a byte mask. `tbl`: the level table in
/// every 128-bit lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn block2_dot_avx512<const B: u8, const F: bool>(
    blk: *const u8,
    bb: usize,
    qb: *const u8,
    tbl: __m512i,
) -> __m512i {
    let c = codes2_avx512::<B, F>(blk.add(2), blk.add(bb + 2));
    let t = _mm512_shuffle_epi8(tbl, c);
    let q = q8_pair(qb);
    let neg = _mm512_movepi8_mask(q);
    let st = _mm512_mask_sub_epi8(t, neg, _mm512_setzero_si512(), t);
    let p = _mm512_maddubs_epi16(_mm512_abs_epi8(q), st);
    _mm512_madd_epi16(p, _mm512_set1_epi16(1))
}

/// Exact lane sums of two blocks with 512-bit VNNI. `tbl`: the `T + 128` table in every
/// 128-bit lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn block2_dot_vnni<const B: u8, const F: bool>(
    blk: *const u8,
    bb: usize,
    qb: *const u8,
    tbl: __m512i,
) -> __m512i {
    let c = codes2_avx512::<B, F>(blk.add(2), blk.add(bb + 2));
    let t = _mm512_shuffle_epi8(tbl, c);
    let q = q8_pair(qb);
    let z = _mm512_setzero_si512();
    let p = _mm512_dpbusd_epi32(z, t, q);
    let bias = _mm512_dpbusd_epi32(z, _mm512_set1_epi8(-128), q);
    _mm512_sub_epi32(p, bias)
}

/// Factors of two consecutive blocks at `b` (stride `bb`) against the Q8_0 blocks at `q`:
/// lanes 0–3 `d_q0·S(u0)`, 4–7 `d_q0·S(u1)`, 8–11 `d_q1·S(u2)`, 12–15 `d_q1·S(u3)` — the four
/// products in one 128-bit register, spread by one `vpermps`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn block2_factors(t: &[f32; 65536], b: *const u8, bb: usize, q: *const u8) -> __m512 {
    let s = |p: *const u8| SCALES[*p as usize];
    let sv = _mm_setr_ps(s(b), s(b.add(1)), s(b.add(bb)), s(b.add(bb + 1)));
    let d0 = act_scale(t, q);
    let d1 = act_scale(t, q.add(Q8));
    let dv = _mm_setr_ps(d0, d0, d1, d1);
    let f = _mm512_castps128_ps512(_mm_mul_ps(sv, dv));
    let idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    _mm512_permutexvar_ps(idx, f)
}

/// The AVX-512 block loop: two blocks per 512-bit register (`$dot2`), four blocks per
/// iteration into two accumulators, a last odd block with the 256-bit `$dot`.
macro_rules! blocks_q8_0_body_512 {
    ($B:ident, $dot:ident, $dot2:ident, $tbl:expr, $blocks:ident, $q8:ident, $nb:ident) => {{
        let bb = 2 + 4 * $B as usize;
        debug_assert!($blocks.len() >= $nb * bb && $q8.len() >= $nb * Q8);
        let t = f16_table();
        let tbl128: __m128i = $tbl;
        let tbl = _mm512_broadcast_i32x4(tbl128);
        let (xp, yp) = ($blocks.as_ptr(), $q8.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut k = 0;
        // `F`: the pair's second block is not the last one (see `load_stream3`).
        macro_rules! step2 {
            ($acc:ident, $k:expr, $f:expr) => {{
                let (b, q) = (xp.add($k * bb), yp.add($k * Q8));
                let s = _mm512_cvtepi32_ps($dot2::<$B, $f>(b, bb, q, tbl));
                $acc = _mm512_fmadd_ps(block2_factors(t, b, bb, q), s, $acc);
            }};
        }
        while k + 4 < $nb {
            step2!(acc0, k, true);
            step2!(acc1, k + 2, true);
            k += 4;
        }
        while k + 2 <= $nb {
            step2!(acc0, k, false);
            k += 2;
        }
        let acc = _mm512_add_ps(acc0, acc1);
        let mut acc = _mm256_add_ps(
            _mm512_castps512_ps256(acc),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc))),
        );
        if k < $nb {
            let (b, q) = (xp.add(k * bb), yp.add(k * Q8));
            let s = _mm256_cvtepi32_ps($dot::<$B, false>(b, q, _mm512_castsi512_si256(tbl)));
            acc = _mm256_fmadd_ps(block_factors(t, b, q), s, acc);
        }
        hsum256(acc)
    }};
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn blocks_q8_0_avx512<const B: u8>(blocks: &[u8], q8: &[u8], nb: usize) -> f32 {
    blocks_q8_0_body_512!(
        B,
        block_dot_avx2,
        block2_dot_avx512,
        table128::<B>(),
        blocks,
        q8,
        nb
    )
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn blocks_q8_0_vnni<const B: u8>(blocks: &[u8], q8: &[u8], nb: usize) -> f32 {
    blocks_q8_0_body_512!(
        B,
        block_dot_vnni,
        block2_dot_vnni,
        table128_biased::<B>(),
        blocks,
        q8,
        nb
    )
}

// ---------------------------------------------------------------------------------------------
// AVX-512 VBMI + VNNI: everything a pair of blocks needs comes from one load of its bytes
// (unmasked while inside the row: masked loads are slow on Zen 5), spread by byte permutes
// (`vpermb`): the code planes or 3-bit groups (then shifted: `vpsrlvq`, or `vpmultishiftqb`
// for the 3-bit stream), and the four scale codes as f16 bit patterns
// `u << 6` (= 8·S(u), §3.3) converted by one `vcvtph2ps` (no scale table lookups). `d_q/8`
// (exact) comes from a table and is applied by one broadcast FMA per block. No intermediate is
// subnormal, so FTZ/DAZ in MXCSR do not change the result. (The f32 bit pattern `u << 19` is
// S(u)·2^−109 and saves a little more, but is subnormal for u < 16.) The pool's activations
// are fetched by scalar loads inside the block loop and summed afterwards with the reference's
// lanes and operations.

/// Source byte (within a pair's `2·bb` bytes) of every byte of the code register: block
/// `j/32`; 2-bit planes: qword `j/8` holds the block's 8 plane bytes; 3-bit stream: qword `g`
/// (mod 4) holds the group's 3 bytes `3g..3g+2` (then copies of its last byte); nibbles:
/// 128-bit lane `j/16` holds the block's 16 code bytes.
const fn vbmi_codes_idx(b: u8) -> [u8; 64] {
    let bb = 2 + 4 * b as usize;
    let mut o = [0u8; 64];
    let mut j = 0;
    while j < 64 {
        let within = if b == 4 {
            j % 16
        } else if b == 3 {
            let k = j % 8;
            3 * ((j / 8) % 4) + if k < 3 { k } else { 2 }
        } else {
            j % 8
        };
        o[j] = ((j / 32) * bb + 2 + within) as u8;
        j += 1;
    }
    o
}

/// Per-qword shift counts that bring each weight's code to the low bits of its byte; for the
/// 3-bit stream the `vpmultishiftqb` control: byte `k` of every qword = bit offset `3k`.
const fn vbmi_shifts(b: u8) -> [u64; 8] {
    let mut o = [0u64; 8];
    let mut l = 0;
    while l < 8 {
        o[l] = if b == 4 {
            4 * ((l / 2) % 2) as u64
        } else if b == 3 {
            0x1512_0f0c_0906_0300
        } else {
            2 * (l % 4) as u64
        };
        l += 1;
    }
    o
}

/// A 64-byte `vpermb` table (the index's low 6 bits are used): entry `i` is
/// `T[i & m] + 128` (the VNNI operand), `m = 2^b − 1` (garbage above the code bits does not
/// matter).
const fn vbmi_table(b: u8) -> [u8; 64] {
    let t = super::padded_table(b);
    let m = (1usize << b) - 1;
    let mut o = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        o[i] = (t[i & m] as i16 + 128) as u8;
        i += 1;
    }
    o
}

#[repr(align(64))]
struct A64<T>(T);

static VBMI_CODES_IDX: [A64<[u8; 64]>; 3] = [
    A64(vbmi_codes_idx(2)),
    A64(vbmi_codes_idx(3)),
    A64(vbmi_codes_idx(4)),
];
static VBMI_SHIFTS: [A64<[u64; 8]>; 3] = [
    A64(vbmi_shifts(2)),
    A64(vbmi_shifts(3)),
    A64(vbmi_shifts(4)),
];
static VBMI_TBL: [A64<[u8; 64]>; 3] = [A64(vbmi_table(2)), A64(vbmi_table(3)), A64(vbmi_table(4))];
/// Scale codes to f16 words: byte `2w` (factor lane `w`) = the code of block `w/8`, sub-block
/// `(w mod 8)/4` (the high bytes are zeroed by the permute's mask).
const fn vbmi_scale_idx(b: u8) -> [u8; 32] {
    let bb = 2 + 4 * b as usize;
    let mut o = [0u8; 32];
    let mut w = 0;
    while w < 16 {
        o[2 * w] = ((w / 8) * bb + (w % 8) / 4) as u8;
        w += 1;
    }
    o
}
static VBMI_SCALE_IDX: [A64<[u8; 32]>; 3] = [
    A64(vbmi_scale_idx(2)),
    A64(vbmi_scale_idx(3)),
    A64(vbmi_scale_idx(4)),
];

#[inline(always)]
unsafe fn load512<T>(a: &A64<T>) -> __m512i {
    _mm512_load_si512(a as *const A64<T> as *const __m512i)
}

/// The VBMI + VNNI block loop: one pair of blocks per step, four blocks per iteration into two
/// accumulators, a last odd block with the 256-bit VNNI step.
#[inline(never)] // keeps the other loops' dispatcher small (no 3 KiB pool buffers on its stack)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q8_0_vbmi<const B: u8, const S: usize>(
    row: &[u8],
    q8: &[u8],
    nb: usize,
    p: usize,
) -> f32 {
    let bb = 2 + 4 * B as usize;
    debug_assert!(row.len() == nb * (bb + S) && q8.len() >= nb * Q8 && p == nb * QK);
    let (blocks, avail) = (row, row.len());
    // Pool entries: their activations (q byte, d_q bits) are fetched by scalar loads inside the
    // block loop, S entries per four blocks (= a full pool of a QE*_S row), where they fill
    // issue slots the vector-bound loop leaves free; the rest after the loop.
    let pool = row.as_ptr().add(nb * bb);
    let n_pool = nb * S / 4;
    let mut qbuf = [const { std::mem::MaybeUninit::<i8>::uninit() }; POOL_BUF];
    let mut dbuf = [const { std::mem::MaybeUninit::<u16>::uninit() }; POOL_BUF];
    let (qb, db) = (qbuf.as_mut_ptr() as *mut i8, dbuf.as_mut_ptr() as *mut u16);
    // Defined values after the last entry for the loads of a last partial chunk (its lanes are
    // discarded); written first, so the stores are long done when the chunk is loaded.
    (qb.add(n_pool) as *mut [i8; 8]).write_unaligned([0; 8]);
    (db.add(n_pool) as *mut [u16; 8]).write_unaligned([0; 8]);
    let mut e = 0;
    let bi = B as usize - 2;
    let codes_idx = load512(&VBMI_CODES_IDX[bi]);
    let shifts = load512(&VBMI_SHIFTS[bi]);
    let tbl = load512(&VBMI_TBL[bi]);
    let sc_idx = _mm256_load_si256(VBMI_SCALE_IDX[bi].0.as_ptr() as *const __m256i);
    let t8 = f16_table_eighth();
    let bias = _mm512_set1_epi8(-128);
    let load_mask: __mmask64 = (1u64 << (2 * bb)) - 1;
    let (xp, yp) = (blocks.as_ptr(), q8.as_ptr());
    let mut acc0 = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut acc1 = acc0;
    let mut k = 0;
    macro_rules! step2 {
        ($acc:ident, $k:expr, $fast:expr) => {{
            let (b, q) = (xp.add($k * bb), yp.add($k * Q8));
            // Unmasked while the load stays inside the row (masked loads are slow on Zen 5).
            let h = if $fast {
                if B == 4 {
                    _mm512_loadu_si512(b as *const __m512i)
                } else {
                    _mm512_castsi256_si512(_mm256_loadu_si256(b as *const __m256i))
                }
            } else {
                _mm512_maskz_loadu_epi8(load_mask, b as *const i8)
            };
            let spread = _mm512_permutexvar_epi8(codes_idx, h);
            let c = if B == 3 {
                _mm512_multishift_epi64_epi8(shifts, spread)
            } else {
                _mm512_srlv_epi64(spread, shifts)
            };
            let tv = _mm512_permutexvar_epi8(c, tbl);
            let qv = q8_pair(q);
            let z = _mm512_setzero_si512();
            let s = _mm512_sub_epi32(
                _mm512_dpbusd_epi32(z, tv, qv),
                _mm512_dpbusd_epi32(z, bias, qv),
            );
            // Scale codes to f16 words `u << 6` = 8·S(u) (§3.3), converted exactly.
            let sw = _mm256_maskz_permutexvar_epi8(0x5555_5555, sc_idx, _mm512_castsi512_si256(h));
            let s8 = _mm512_cvtph_ps(_mm256_slli_epi16::<6>(sw));
            // 8·S·isum (exact: 5 + 16 significant bits, normal), then d_q/8 (exact, normal) by a
            // broadcast FMA per block: lanes 0–7 of `lo` and 8–15 of `hi` are used (the others
            // are discarded at the end).
            let v = _mm512_mul_ps(s8, _mm512_cvtepi32_ps(s));
            let (lo, hi) = $acc;
            $acc = (
                _mm512_fmadd_ps(v, _mm512_set1_ps(act_scale(t8, q)), lo),
                _mm512_fmadd_ps(v, _mm512_set1_ps(act_scale(t8, q.add(Q8))), hi),
            );
        }};
    }
    // Blocks `k < fast` may start an unmasked pair load (32 or 64 bytes from the block start,
    // inside the `avail` bytes of the row).
    let width = if B == 4 { 64 } else { 32 };
    let fast = if avail >= width {
        (avail - width) / bb + 1
    } else {
        0
    };
    while k + 4 <= nb && k + 2 < fast {
        step2!(acc0, k, true);
        for _ in 0..S {
            // e < n_pool: at most nb/4 iterations, S entries each.
            pool_fetch(pool, yp, p, e, qb, db);
            e += 1;
        }
        step2!(acc1, k + 2, true);
        k += 4;
    }
    while k + 2 <= nb {
        if k < fast {
            step2!(acc0, k, true);
        } else {
            step2!(acc0, k, false);
        }
        k += 2;
    }
    let lo = _mm512_add_ps(acc0.0, acc1.0);
    let hi = _mm512_add_ps(acc0.1, acc1.1);
    let acc = _mm256_add_ps(
        _mm512_castps512_ps256(lo),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(hi))),
    );
    let mut acc = acc;
    if k < nb {
        let t = f16_table();
        let (b, q) = (xp.add(k * bb), yp.add(k * Q8));
        let tbl = _mm256_broadcastsi128_si256(table128_biased::<B>());
        let s = _mm256_cvtepi32_ps(block_dot_vnni::<B, false>(b, q, tbl));
        acc = _mm256_fmadd_ps(block_factors(t, b, q), s, acc);
    }
    while e < n_pool {
        pool_fetch(pool, yp, p, e, qb, db);
        e += 1;
    }
    hsum256(acc) + pool_q8_0_buffered(pool, n_pool, p, qb, db)
}

/// Pool entries per row at most (`p ≤ 65504`, 2 pool bytes per block: 1023), plus 8 of padding.
const POOL_BUF: usize = 1031;

/// Fetch the activation of pool entry `e` into `qb[e]` (the int8 code) and `db[e]` (the f16
/// bits of its block's `d_q`). The column is clamped to `p − 1`, so any entry bytes stay inside
/// the activations (entries from the first column `≥ p` on are discarded by
/// [`pool_q8_0_buffered`]).
#[inline(always)]
unsafe fn pool_fetch(
    pool: *const u8,
    q8: *const u8,
    p: usize,
    e: usize,
    qb: *mut i8,
    db: *mut u16,
) {
    let col = ((pool.add(4 * e) as *const u16).read_unaligned() as usize).min(p - 1);
    let blk = col / QK;
    *qb.add(e) = *q8.add(col + 2 * blk + 2) as i8;
    *db.add(e) = (q8.add(blk * Q8) as *const u16).read_unaligned();
}

/// [`pool_q8_0_avx2`] with the activations already fetched into `qb`, `db` (entries `0..n`, and
/// defined values up to `n + 8`): the same lanes and operations, so bit-identical to
/// [`scalar::pool_q8_0`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn pool_q8_0_buffered(
    pool: *const u8,
    n: usize,
    p: usize,
    qb: *mut i8,
    db: *mut u16,
) -> f32 {
    let pv = _mm256_set1_epi32(p as i32);
    let mut acc = _mm256_setzero_ps();
    let mut e = 0;
    while e < n {
        let left = n - e;
        let ep = pool.add(4 * e);
        // Unmasked loads for whole chunks (masked loads are slow on Zen 5).
        let (live, ent) = if left >= 8 {
            (0xff, _mm256_loadu_si256(ep as *const __m256i))
        } else {
            let live = (1u8 << left) - 1;
            (live, _mm256_maskz_loadu_epi32(live, ep as *const i32))
        };
        let col = _mm256_and_si256(ent, _mm256_set1_epi32(0xffff));
        // Columns and p are < 2^16: the signed compare is exact.
        let ok = _mm256_cmpgt_epi32_mask(pv, col) & live;
        // Entries before the first column ≥ p (the walk stops there).
        let cnt = (!ok).trailing_zeros() as usize;
        if cnt == 0 {
            break;
        }
        acc = pool_step(
            acc,
            ent,
            _mm_loadu_si128(db.add(e) as *const __m128i),
            _mm_loadl_epi64(qb.add(e) as *const __m128i),
            cnt,
        );
        if cnt < 8 {
            break;
        }
        e += 8;
    }
    hsum256(acc)
}

/// AVX-512 dot with Q8_0 activations (VNNI `vpdpbusd` when the CPU has it). Safety: as
/// [`dot_q8_0_avx2`], with AVX-512 F/BW/VL available.
///
/// Not a `target_feature` function, so it inlines into `vec_dot` and the VBMI kernels are
/// called directly (one call per row instead of three: the dispatch was ~6 % of a 1536-wide
/// row).
#[inline(always)]
pub(crate) unsafe fn dot_q8_0_avx512(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    let f = features();
    // VBMI: more work per row before and after its block loop; it wins from about 1024
    // weights per row (576-wide rows were ~15 % slower with it, 1536-wide ~5 % faster).
    if f & F_VBMI != 0 && (p >= 1024 || fmt.bits == 3) {
        return dot_q8_0_vbmi_dispatch(fmt, row, q8, p);
    }
    let v = if f & F_VNNI != 0 {
        Avx512Variant::Vnni
    } else {
        Avx512Variant::Maddubs
    };
    dot_q8_0_avx512_impl(fmt, row, q8, p, v)
}

/// The VBMI kernel of `fmt`. Safety: AVX512-VBMI and VNNI available, lengths as
/// [`dot_q8_0_avx2`].
#[inline(always)]
unsafe fn dot_q8_0_vbmi_dispatch(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> f32 {
    let nb = p / QK;
    match (fmt.bits, fmt.pool) {
        (2, 0) => dot_q8_0_vbmi::<2, 0>(row, q8, nb, p),
        (2, 1) => dot_q8_0_vbmi::<2, 1>(row, q8, nb, p),
        (2, _) => dot_q8_0_vbmi::<2, 2>(row, q8, nb, p),
        (3, 0) => dot_q8_0_vbmi::<3, 0>(row, q8, nb, p),
        (3, 1) => dot_q8_0_vbmi::<3, 1>(row, q8, nb, p),
        (3, _) => dot_q8_0_vbmi::<3, 2>(row, q8, nb, p),
        (_, 0) => dot_q8_0_vbmi::<4, 0>(row, q8, nb, p),
        (_, 1) => dot_q8_0_vbmi::<4, 1>(row, q8, nb, p),
        (_, _) => dot_q8_0_vbmi::<4, 2>(row, q8, nb, p),
    }
}

/// The AVX-512 block loops: `maddubs` (F/BW/VL only), VNNI, VBMI + VNNI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Avx512Variant {
    Maddubs,
    Vnni,
    Vbmi,
}

/// [`dot_q8_0_avx512`] with the block loop explicit (VNNI needs AVX512-VNNI, VBMI needs
/// AVX512-VBMI and VNNI; tests run every one the CPU has).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_avx512_impl(
    fmt: QeFormat,
    row: &[u8],
    q8: &[u8],
    p: usize,
    v: Avx512Variant,
) -> f32 {
    use Avx512Variant::*;
    let nb = p / QK;
    if v == Vbmi {
        return dot_q8_0_vbmi_dispatch(fmt, row, q8, p);
    }
    let (blocks, pool) = row.split_at(nb * fmt.block_bytes());
    let s = match (fmt.bits, v) {
        (2, Maddubs) => blocks_q8_0_avx512::<2>(blocks, q8, nb),
        (3, Maddubs) => blocks_q8_0_avx512::<3>(blocks, q8, nb),
        (_, Maddubs) => blocks_q8_0_avx512::<4>(blocks, q8, nb),
        (2, Vnni) => blocks_q8_0_vnni::<2>(blocks, q8, nb),
        (3, Vnni) => blocks_q8_0_vnni::<3>(blocks, q8, nb),
        (_, _) => blocks_q8_0_vnni::<4>(blocks, q8, nb),
    };
    s + pool_q8_0_avx2(pool, q8, p)
}

// ---------------------------------------------------------------------------------------------
// f32 activations.

/// The 8 levels of the low 8 bytes of `t` (i8) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lv(t: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(t))
}

/// Per sub-block `S(u)·Σ T[c]·x` (two 8-lane FMAs per sub-block), accumulated over the blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blocks_f32_avx2<const B: u8>(blocks: &[u8], x: &[f32], nb: usize) -> f32 {
    let bb = 2 + 4 * B as usize;
    debug_assert!(blocks.len() >= nb * bb && x.len() >= nb * QK);
    let (bp, xp) = (blocks.as_ptr(), x.as_ptr());
    let tbl = _mm256_broadcastsi128_si256(table128::<B>());
    let mut acc = _mm256_setzero_ps();
    for k in 0..nb {
        let blk = bp.add(k * bb);
        let c = if k + 1 < nb {
            codes_avx2::<B, true>(blk.add(2))
        } else {
            codes_avx2::<B, false>(blk.add(2))
        };
        let t = _mm256_shuffle_epi8(tbl, c);
        let lo = _mm256_castsi256_si128(t);
        let hi = _mm256_extracti128_si256(t, 1);
        let xs = xp.add(k * QK);
        let mut s0 = _mm256_mul_ps(lv(lo), _mm256_loadu_ps(xs));
        s0 = _mm256_fmadd_ps(lv(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(xs.add(8)), s0);
        let mut s1 = _mm256_mul_ps(lv(hi), _mm256_loadu_ps(xs.add(SUB)));
        s1 = _mm256_fmadd_ps(
            lv(_mm_srli_si128(hi, 8)),
            _mm256_loadu_ps(xs.add(SUB + 8)),
            s1,
        );
        acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&SCALES[*blk as usize]), s0, acc);
        acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&SCALES[*blk.add(1) as usize]), s1, acc);
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

//! ggml's non-linear 4-bit formats IQ4_NL and IQ4_XS.
//!
//! Both map a 4-bit code through the fixed table [`KVALUES_IQ4NL`] (a fact from `ggml-common.h`):
//!
//! | type | weights | bytes | layout | value of weight `i` |
//! |---|---|---|---|---|
//! | IQ4_NL | 32 | 18 | `d: f16, qs[16]` | `d·K[q]` |
//! | IQ4_XS | 256 | 136 | `d: f16, scales_h: u16, scales_l[4], qs[128]` | `(d·(ls − 32))·K[q]` |
//!
//! `qs` nibbles: for each 32-weight (sub-)block, byte `j` holds weight `j` (low nibble) and weight
//! `j + 16` (high nibble). IQ4_XS has 8 sub-blocks with 6-bit scales `ls`: the low 4 bits in
//! `scales_l[ib/2]` (low nibble for even `ib`, high for odd), the top 2 bits at bit `2·ib` of
//! `scales_h`.
//!
//! # Quantisers
//!
//! Weighted squared error of the decoded values (f16 `d`, integer sub-scales), with `w` =
//! importance, or `w = 1` without one. (ggml without an imatrix weights by `x²`, with one by
//! `importance·sqrt(σ² + x²)`; we optimise the stated objective directly.)
//! - IQ4_NL: [`search::search_grid_scale`] on [`Iq4Grid`]: least-squares fits of RTN codes along
//!   an inverse-scale ladder around both ends of the table (both signs of `d`), ggml's starting
//!   scale `max/127`, f16 neighbours and least-squares refits.
//! - IQ4_XS: per sub-block the best two least-squares scales from the same ladder; then
//!   super-scales `d` from `max_scale/−32` and `max_scale/31` stretched by 0–7 %, each rounded to
//!   f16; for every `d`, each sub-block independently takes the best 6-bit scale among
//!   `round(s/d) ± 1` for its candidate scales `s` (estimated decoded error); finally the best
//!   `d`'s f16 neighbours are tried. Codes are then chosen exactly for the stored scales.

use crate::float::f16_to_f32;
use crate::legacy::{le16, nibble_codes, pack_nibbles, unpack_nibbles};
use crate::search::{self, fill_weights, CodeGrid};
use crate::types::{GgmlType, QK_K};

/// The IQ4_NL / IQ4_XS code book (`kvalues_iq4nl` in ggml).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Weights per IQ4_NL block and per IQ4_XS sub-block.
pub const QK4_NL: usize = 32;

/// Sub-blocks per IQ4_XS super-block.
const XS_SUBBLOCKS: usize = QK_K / QK4_NL;

/// Least-squares fits kept from the IQ4_NL ladder.
const SEARCH_KEEP_NL: usize = 2;
/// f16 steps tried either side of the best IQ4_XS super-scale.
const F16_RADIUS: u16 = 2;
/// Stretches of the IQ4_XS super-scale candidates `max_scale/−32`, `max_scale/31`.
const XS_STRETCHES: [f32; 4] = [1.0, 1.02, 1.04, 1.07];

/// IQ4_NL block, unpacked: value of weight `i` = `d·K[codes[i]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IQ4NlBlock {
    /// f16 bits of the scale.
    pub d: u16,
    /// Codes `0..=15` into [`KVALUES_IQ4NL`].
    pub codes: [u8; QK4_NL],
}

/// IQ4_XS super-block, unpacked: value of weight `i` = `(d·scales[i/32])·K[codes[i]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IQ4XsBlock {
    /// f16 bits of the super-block scale.
    pub d: u16,
    /// Signed 6-bit sub-block scales `−32..=31` (stored in the file as `scale + 32`).
    pub scales: [i8; XS_SUBBLOCKS],
    /// Codes `0..=15` into [`KVALUES_IQ4NL`].
    pub codes: [u8; QK_K],
}

const _: () = assert!(
    GgmlType::IQ4_NL.type_size() == 2 + QK4_NL / 2 && GgmlType::IQ4_NL.block_size() == QK4_NL
);
const _: () = assert!(
    GgmlType::IQ4_XS.type_size() == 2 + 2 + QK_K / 64 + QK_K / 2
        && GgmlType::IQ4_XS.block_size() == QK_K
);

impl IQ4NlBlock {
    /// Packed size in bytes.
    pub const BYTES: usize = GgmlType::IQ4_NL.type_size();

    /// The scale as f32.
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// Write the 18 packed bytes into `out[..18]`. Codes are taken modulo 16.
    ///
    /// # Panics
    /// If `out` is shorter than [`Self::BYTES`].
    pub fn pack(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        pack_nibbles(&self.codes, &mut out[2..18]);
    }

    /// Read a block from `bytes[..18]`.
    ///
    /// # Panics
    /// If `bytes` is shorter than [`Self::BYTES`].
    pub fn unpack(bytes: &[u8]) -> Self {
        IQ4NlBlock {
            d: le16(bytes, 0),
            codes: nibble_codes(&bytes[2..18]),
        }
    }

    /// Decoded value of weight `i`, exactly as ggml computes it.
    pub fn value(&self, i: usize) -> f32 {
        self.d() * KVALUES_IQ4NL[self.codes[i] as usize & 15] as f32
    }
}

impl IQ4XsBlock {
    /// Packed size in bytes.
    pub const BYTES: usize = GgmlType::IQ4_XS.type_size();

    /// The super-block scale as f32.
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// The scale of sub-block `ib` (`d·scale`, computed in f32 as ggml does).
    pub fn sub_scale(&self, ib: usize) -> f32 {
        self.d() * self.scales[ib] as f32
    }

    /// Write the 136 packed bytes into `out[..136]`. Scales are taken modulo 64 after the +32
    /// offset, codes modulo 16.
    ///
    /// # Panics
    /// If `out` is shorter than [`Self::BYTES`].
    pub fn pack(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        let mut scales_h = 0u16;
        let mut scales_l = [0u8; XS_SUBBLOCKS / 2];
        for (ib, &s) in self.scales.iter().enumerate() {
            let ls = (s as i32 + 32) as u8 & 63;
            scales_l[ib / 2] |= (ls & 0x0f) << (4 * (ib % 2));
            scales_h |= ((ls >> 4) as u16) << (2 * ib);
        }
        out[2..4].copy_from_slice(&scales_h.to_le_bytes());
        out[4..8].copy_from_slice(&scales_l);
        for ib in 0..XS_SUBBLOCKS {
            pack_nibbles(
                &self.codes[32 * ib..32 * ib + 32],
                &mut out[8 + 16 * ib..8 + 16 * ib + 16],
            );
        }
    }

    /// Read a block from `bytes[..136]`.
    ///
    /// # Panics
    /// If `bytes` is shorter than [`Self::BYTES`].
    pub fn unpack(bytes: &[u8]) -> Self {
        let scales_h = u16::from_le_bytes([bytes[2], bytes[3]]);
        let mut scales = [0i8; XS_SUBBLOCKS];
        for (ib, s) in scales.iter_mut().enumerate() {
            let lo = (bytes[4 + ib / 2] >> (4 * (ib % 2))) & 0x0f;
            let hi = ((scales_h >> (2 * ib)) & 3) as u8;
            *s = (lo | (hi << 4)) as i8 - 32;
        }
        let mut codes = [0u8; QK_K];
        for ib in 0..XS_SUBBLOCKS {
            unpack_nibbles(
                &bytes[8 + 16 * ib..8 + 16 * ib + 16],
                &mut codes[32 * ib..32 * ib + 32],
            );
        }
        IQ4XsBlock {
            d: le16(bytes, 0),
            scales,
            codes,
        }
    }

    /// Decoded value of weight `i`, exactly as ggml computes it.
    pub fn value(&self, i: usize) -> f32 {
        self.sub_scale(i / 32) * KVALUES_IQ4NL[self.codes[i] as usize & 15] as f32
    }
}

/// Decode an IQ4_NL row, bit-exact with ggml's `dequantize_row_iq4_nl`.
pub fn dequantize_row_iq4_nl(src: &[u8], dst: &mut [f32]) {
    for (block, out) in src
        .chunks_exact(IQ4NlBlock::BYTES)
        .zip(dst.chunks_exact_mut(QK4_NL))
    {
        let b = IQ4NlBlock::unpack(block);
        for (i, o) in out.iter_mut().enumerate() {
            *o = b.value(i);
        }
    }
}

/// Decode an IQ4_XS row, bit-exact with ggml's `dequantize_row_iq4_xs`.
pub fn dequantize_row_iq4_xs(src: &[u8], dst: &mut [f32]) {
    for (block, out) in src
        .chunks_exact(IQ4XsBlock::BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let b = IQ4XsBlock::unpack(block);
        for (ib, sub) in out.chunks_exact_mut(32).enumerate() {
            let dl = b.sub_scale(ib);
            for (j, o) in sub.iter_mut().enumerate() {
                *o = dl * KVALUES_IQ4NL[b.codes[32 * ib + j] as usize] as f32;
            }
        }
    }
}

/// Signed value of largest magnitude (first on ties).
fn signed_absmax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

/// Half-unit lookup table for [`Iq4Grid`]: entry `k` is the code nearest to every `r` in
/// `[−127 + k/2, −127 + (k+1)/2)`. Every midpoint between two table values is a multiple of ½,
/// so no such interval straddles a decision boundary.
const IQ4_NEAREST: [u8; 481] = {
    let mut t = [0u8; 481];
    let mut k = 0;
    while k < t.len() {
        // Centre of the half-unit interval, in quarter units to stay in integers.
        let r4 = -127 * 4 + 2 * k as i32 + 1;
        let mut best = 0;
        let mut c = 1;
        while c < 16 {
            let e = (4 * KVALUES_IQ4NL[c] as i32 - r4).abs();
            if e < (4 * KVALUES_IQ4NL[best] as i32 - r4).abs() {
                best = c;
            }
            c += 1;
        }
        t[k] = best as u8;
        k += 1;
    }
    t
};

/// The IQ4 code book as a [`CodeGrid`] with O(1) nearest lookup through [`IQ4_NEAREST`].
pub struct Iq4Grid;

impl CodeGrid for Iq4Grid {
    const LEN: usize = 16;
    const MIN: f32 = -127.0;
    const MAX: f32 = 113.0;

    #[inline(always)]
    fn value(c: usize) -> f32 {
        KVALUES_IQ4NL[c] as f32
    }

    #[inline(always)]
    fn nearest_in_range(r: f32) -> (usize, f32) {
        let k = ((r + 127.0) * 2.0) as usize;
        let c = IQ4_NEAREST[k.min(IQ4_NEAREST.len() - 1)] as usize;
        (c, KVALUES_IQ4NL[c] as f32)
    }
}

/// Relative step and steps either side of the inverse-scale ladder (IQ4_NL, IQ4_XS sub-blocks).
const LADDER_REL: f32 = 0.01;
const LADDER_N: i32 = 10;

/// Quantise one IQ4_NL block (`x.len() == w.len() == 32`).
pub fn quantize_block_iq4_nl(x: &[f32], w: &[f32]) -> IQ4NlBlock {
    let xm = signed_absmax(x);
    let d_bits = if xm == 0.0 {
        0
    } else {
        let ladder = search::iscale_ladder(xm, Iq4Grid::MIN, Iq4Grid::MAX, LADDER_REL, LADDER_N);
        search::search_grid_scale::<Iq4Grid>(x, w, ladder, &[xm / 127.0], SEARCH_KEEP_NL).0
    };
    let mut codes = [0u8; QK4_NL];
    search::grid_codes::<Iq4Grid>(x, f16_to_f32(d_bits), &mut codes);
    IQ4NlBlock { d: d_bits, codes }
}

/// The best continuous scales of one IQ4_XS sub-block (up to 2, best first; empty if all zero).
fn sub_block_scales(x: &[f32], w: &[f32]) -> ([f32; 2], usize) {
    let xm = signed_absmax(x);
    if xm == 0.0 {
        return ([0.0; 2], 0);
    }
    let mut top = [(f32::NEG_INFINITY, 0f32); 2];
    for is in search::iscale_ladder(xm, Iq4Grid::MIN, Iq4Grid::MAX, LADDER_REL, LADDER_N) {
        let (sxg, sgg) = search::grid_stats::<Iq4Grid>(x, w, is);
        if sgg <= 0.0 {
            continue;
        }
        let score = sxg * sxg / sgg;
        if score > top[0].0 {
            top = [(score, sxg / sgg), top[0]];
        } else if score > top[1].0 {
            top[1] = (score, sxg / sgg);
        }
    }
    let n = top.iter().filter(|t| t.0 > f32::NEG_INFINITY).count();
    ([top[0].1, top[1].1], n)
}

/// For super-scale `d`, the best 6-bit scale of one sub-block among `round(s/d) ± 1` for its
/// candidate scales `s` (and 0, whose error is `zero_err`), with its estimated error.
fn best_sub_scale(x: &[f32], w: &[f32], cands: &[f32], zero_err: f32, d: f32) -> (i8, f32) {
    let mut best = (0i8, zero_err);
    let mut tried = [false; 64];
    tried[32] = true;
    for &s in cands {
        let centre = search::round_fast(search::clamp_fast(s / d, -40.0, 40.0));
        for off in [0.0f32, -1.0, 1.0] {
            let ls = (centre + off).clamp(-32.0, 31.0) as i32;
            if std::mem::replace(&mut tried[(ls + 32) as usize], true) {
                continue;
            }
            let err = search::grid_error::<Iq4Grid>(x, w, d * ls as f32);
            if err < best.1 {
                best = (ls as i8, err);
            }
        }
    }
    best
}

/// Quantise one IQ4_XS super-block (`x.len() == w.len() == 256`).
pub fn quantize_block_iq4_xs(x: &[f32], w: &[f32]) -> IQ4XsBlock {
    let mut cands = [([0f32; 2], 0usize); XS_SUBBLOCKS];
    let mut zero_err = [0f32; XS_SUBBLOCKS];
    for ib in 0..XS_SUBBLOCKS {
        let r = 32 * ib..32 * ib + 32;
        cands[ib] = sub_block_scales(&x[r.clone()], &w[r.clone()]);
        zero_err[ib] = search::grid_error::<Iq4Grid>(&x[r.clone()], &w[r], 0.0);
    }
    let max_scale = cands
        .iter()
        .filter(|c| c.1 > 0)
        .map(|c| c.0[0])
        .fold(0.0f32, |m, s| if s.abs() > m.abs() { s } else { m });

    // Evaluate a super-scale (f16 bits): total estimated error and chosen sub-scales.
    let evaluate = |d_bits: u16| -> (f32, [i8; XS_SUBBLOCKS]) {
        let d = f16_to_f32(d_bits);
        let mut scales = [0i8; XS_SUBBLOCKS];
        let mut total = 0.0;
        for ib in 0..XS_SUBBLOCKS {
            let r = 32 * ib..32 * ib + 32;
            let (ls, err) = if d == 0.0 {
                (0, zero_err[ib])
            } else {
                let (c, n) = &cands[ib];
                best_sub_scale(&x[r.clone()], &w[r], &c[..*n], zero_err[ib], d)
            };
            scales[ib] = ls;
            total += err;
        }
        (total, scales)
    };

    let mut best_bits = 0u16;
    let (mut best_err, mut best_scales) = evaluate(0);
    if max_scale != 0.0 {
        let mut tried = [0u16; 32];
        let mut n_tried = 0;
        let mut consider = |bits: u16, best_bits: &mut u16| {
            let d = f16_to_f32(bits);
            if d == 0.0 || !d.is_finite() || tried[..n_tried].contains(&bits) {
                return;
            }
            if n_tried < tried.len() {
                tried[n_tried] = bits;
                n_tried += 1;
            }
            let (err, scales) = evaluate(bits);
            if err < best_err {
                best_err = err;
                best_scales = scales;
                *best_bits = bits;
            }
        };
        for stretch in XS_STRETCHES {
            for base in [max_scale / -32.0, max_scale / 31.0] {
                // Radius 0 unless the f16 value is tiny (subnormal scales need the neighbours).
                for bits in search::f16_neighbours(base * stretch, 0) {
                    if bits & 0x7fff < 4 {
                        for b in search::f16_neighbours(base * stretch, 3) {
                            consider(b, &mut best_bits);
                        }
                    } else {
                        consider(bits, &mut best_bits);
                    }
                }
            }
        }
        for bits in search::f16_neighbours(f16_to_f32(best_bits), F16_RADIUS) {
            consider(bits, &mut best_bits);
        }
    }

    let d = f16_to_f32(best_bits);
    let mut codes = [0u8; QK_K];
    for (ib, &ls) in best_scales.iter().enumerate() {
        let r = 32 * ib..32 * ib + 32;
        search::grid_codes::<Iq4Grid>(&x[r.clone()], d * ls as f32, &mut codes[r]);
    }
    IQ4XsBlock {
        d: best_bits,
        scales: best_scales,
        codes,
    }
}

/// Quantise a row to IQ4_NL, minimising the importance-weighted squared error (see module docs).
pub fn quantize_row_iq4_nl(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    let mut w = [0f32; QK4_NL];
    for (b, (x, out)) in src
        .chunks_exact(QK4_NL)
        .zip(dst.chunks_exact_mut(IQ4NlBlock::BYTES))
        .enumerate()
    {
        fill_weights(
            importance.map(|imp| &imp[b * QK4_NL..(b + 1) * QK4_NL]),
            &mut w,
        );
        quantize_block_iq4_nl(x, &w).pack(out);
    }
}

/// Quantise a row to IQ4_XS, minimising the importance-weighted squared error (see module docs).
pub fn quantize_row_iq4_xs(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    let mut w = [0f32; QK_K];
    for (b, (x, out)) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(IQ4XsBlock::BYTES))
        .enumerate()
    {
        // Weights per 32-weight sub-block, so an all-zero sub-block falls back to plain error.
        for (ib, wsub) in w.chunks_exact_mut(32).enumerate() {
            let at = b * QK_K + 32 * ib;
            fill_weights(importance.map(|imp| &imp[at..at + 32]), wsub);
        }
        quantize_block_iq4_xs(x, &w).pack(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden;
    use crate::{dequantize_row, quantize_row, FormatError};

    #[test]
    fn decoders_are_bit_exact_with_ggml() {
        golden::assert_decoder_bit_exact(&golden::load(GgmlType::IQ4_NL), dequantize_row_iq4_nl);
        golden::assert_decoder_bit_exact(&golden::load(GgmlType::IQ4_XS), dequantize_row_iq4_xs);
    }

    #[test]
    fn iq4_grid_nearest_matches_brute_force() {
        let grid = KVALUES_IQ4NL.map(|v| v as f32);
        for k in -1400..1300 {
            let r = k as f32 * 0.0973;
            let (c, v) = Iq4Grid::nearest(r);
            assert_eq!(v, grid[c]);
            let want = search::nearest_grid_index(&grid, r);
            assert_eq!((grid[c] - r).abs(), (grid[want] - r).abs(), "r = {r}");
        }
    }

    #[test]
    fn grid_codes_match_the_general_search() {
        let grid = KVALUES_IQ4NL.map(|v| v as f32);
        let x: Vec<f32> = bytes(64, 3)
            .iter()
            .map(|&b| b as f32 / 97.0 - 1.3)
            .collect();
        for d in [0.0113f32, -0.0087, 0.002] {
            let mut codes = [0u8; 64];
            search::grid_codes::<Iq4Grid>(&x, d, &mut codes);
            for (i, &xi) in x.iter().enumerate() {
                let (_, want) = search::best_grid_code(&grid, d, xi);
                assert_eq!((xi - d * grid[codes[i] as usize]).abs(), (xi - want).abs());
            }
        }
    }

    #[test]
    fn block_value_matches_row_decoder() {
        let g = golden::load(GgmlType::IQ4_XS);
        let b = IQ4XsBlock::unpack(&g.imat_q[..IQ4XsBlock::BYTES]);
        for i in 0..QK_K {
            assert_eq!(b.value(i).to_bits(), g.imat_deq[i].to_bits(), "weight {i}");
        }
    }

    #[test]
    fn quantisers_are_not_worse_than_ggml() {
        for (ty, q, deq) in [
            (
                GgmlType::IQ4_NL,
                quantize_row_iq4_nl as fn(&[f32], Option<&[f32]>, &mut [u8]),
                dequantize_row_iq4_nl as fn(&[u8], &mut [f32]),
            ),
            (GgmlType::IQ4_XS, quantize_row_iq4_xs, dequantize_row_iq4_xs),
        ] {
            let [plain, imat] = golden::assert_quantiser_not_worse(&golden::load(ty), q, deq);
            assert!(plain.0 < plain.1, "{ty}");
            assert!(imat.0 < imat.1, "{ty}");
        }
    }

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(7);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as u8
            })
            .collect()
    }

    #[test]
    fn pack_unpack_round_trip() {
        for seed in 0..20 {
            let b = bytes(IQ4NlBlock::BYTES, seed);
            let mut out = vec![0u8; b.len()];
            IQ4NlBlock::unpack(&b).pack(&mut out);
            assert_eq!(out, b);
            let b = bytes(IQ4XsBlock::BYTES, seed);
            let mut out = vec![0u8; b.len()];
            IQ4XsBlock::unpack(&b).pack(&mut out);
            assert_eq!(out, b);
        }
        let mut blk = IQ4XsBlock {
            d: 0x3c00,
            scales: [-32, -1, 0, 1, 15, 16, 30, 31],
            codes: [0; QK_K],
        };
        for (i, c) in blk.codes.iter_mut().enumerate() {
            *c = (i * 11 % 16) as u8;
        }
        let mut out = [0u8; IQ4XsBlock::BYTES];
        blk.pack(&mut out);
        let back = IQ4XsBlock::unpack(&out);
        assert_eq!(back, blk);
        assert_eq!(
            back.value(32 * 7 + 5),
            31.0 * KVALUES_IQ4NL[(32 * 7 + 5) * 11 % 16] as f32
        );
    }

    #[test]
    fn quantise_dequantise_error_is_bounded() {
        // Uniform data on [-1, 1): the largest table gap is 24 (89 → 113), so with d ≈ 1/113 the
        // worst-case error is about 12/113; the RMSE is far smaller.
        let x: Vec<f32> = bytes(512, 5)
            .iter()
            .map(|&b| b as f32 / 128.0 - 1.0)
            .collect();
        for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS] {
            let mut packed = vec![0u8; ty.row_bytes(512).unwrap() as usize];
            let mut y = vec![0f32; 512];
            quantize_row(ty, &x, None, &mut packed).unwrap();
            dequantize_row(ty, &packed, &mut y).unwrap();
            let rmse = golden::weighted_rmse(&x, &y, None);
            let max_err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(rmse < 0.06, "{ty}: rmse {rmse}");
            assert!(max_err < 0.12, "{ty}: max error {max_err}");
        }
    }

    #[test]
    fn zero_rows_decode_to_zero_and_nan_is_rejected() {
        for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS] {
            let mut x = vec![0f32; 256];
            let mut packed = vec![0x55u8; ty.row_bytes(256).unwrap() as usize];
            quantize_row(ty, &x, Some(&[0.0; 256]), &mut packed).unwrap();
            let mut y = vec![1f32; 256];
            dequantize_row(ty, &packed, &mut y).unwrap();
            assert!(y.iter().all(|&v| v == 0.0), "{ty}");
            x[100] = f32::NAN;
            let err = quantize_row(ty, &x, None, &mut packed).unwrap_err();
            assert!(
                matches!(err, FormatError::NonFinite { index: 100, .. }),
                "{ty}: {err:?}"
            );
        }
    }

    #[test]
    fn exact_table_data_is_reproduced() {
        // Each sub-block an exact multiple of the table with a different 6-bit scale.
        let d = 0.001f32;
        let d16 = f16_to_f32(crate::float::f32_to_f16(d));
        let mut x = vec![0f32; QK_K];
        for (i, v) in x.iter_mut().enumerate() {
            let ls = [-32, -7, 3, 31, 12, -20, 1, 25][i / 32] as f32;
            *v = (d16 * ls) * KVALUES_IQ4NL[(i * 7) % 16] as f32;
        }
        let mut packed = vec![0u8; IQ4XsBlock::BYTES];
        let mut y = vec![0f32; QK_K];
        quantize_row_iq4_xs(&x, None, &mut packed);
        dequantize_row_iq4_xs(&packed, &mut y);
        assert_eq!(x, y);
        // IQ4_NL: one f16 scale per block (powers of two times d16 stay exact in f16).
        for (i, v) in x.iter_mut().enumerate() {
            let s = [1.0f32, -2.0, 0.5, 4.0, -0.25, 8.0, 1.0, -1.0][i / 32];
            *v = (d16 * s) * KVALUES_IQ4NL[(i * 5) % 16] as f32;
        }
        let mut packed = vec![0u8; 8 * IQ4NlBlock::BYTES];
        quantize_row_iq4_nl(&x, None, &mut packed);
        dequantize_row_iq4_nl(&packed, &mut y);
        assert_eq!(x, y);
    }
}

//! ggml's "legacy" 32-weight block formats: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
//!
//! Layouts (facts from `ggml-common.h`, all little-endian):
//!
//! | type | bytes | layout | value of weight `i` |
//! |---|---|---|---|
//! | Q4_0 | 18 | `d: f16, qs[16]` | `(q − 8)·d` |
//! | Q4_1 | 20 | `d: f16, m: f16, qs[16]` | `q·d + m` |
//! | Q5_0 | 22 | `d: f16, qh: u32, qs[16]` | `(q − 16)·d` |
//! | Q5_1 | 24 | `d: f16, m: f16, qh: u32, qs[16]` | `q·d + m` |
//! | Q8_0 | 34 | `d: f16, qs: [i8; 32]` | `q·d` |
//!
//! Nibbles: `qs[j]` holds weight `j` in its low nibble and weight `j + 16` in its high nibble. For
//! the 5-bit types, bit `i` of `qh` is bit 4 of weight `i`'s code.
//!
//! # Quantisers
//!
//! `quantize_row_*` minimise the weighted squared error `Σ wᵢ (xᵢ − x̂ᵢ)²` of the *decoded* values
//! (f16 scales included) per block, with `w` = the importance, or `w = 1` when there is none.
//! (ggml itself, without an imatrix, uses plain min/max rounding for these types; with one it
//! weights by `importance·sqrt(σ² + x²)`. We optimise the stated objective directly.)
//! - Q4_0, Q5_0: [`search::search_grid_scale`]: least-squares fits of RTN codes along an
//!   inverse-scale ladder around both ends of the grid (both signs of `d`), ggml's reference scale
//!   `max/−8` (`max/−16`), f16 neighbours and least-squares refits.
//! - Q4_1, Q5_1: [`search::search_affine_f16`] (reference min/max pair, least-squares fits over
//!   a scale grid, f16 neighbourhood, refits).
//! - Q8_0: the same search as Q4_0 with ggml's `amax/127` and the grid ends `xm/−128`, `xm/127`.
//!
//! For a given stored scale every code is chosen as the nearest decoded value, which is optimal
//! for any weights; so where our candidate set contains ggml's stored scale we can only do better.

use crate::float::f16_to_f32;
use crate::search::{self, fill_weights, CodeGrid, UniformGrid};
use crate::types::GgmlType;

/// Weights per block of every legacy type.
pub const QK: usize = 32;

/// Least-squares fits kept from the inverse-scale ladder.
const SEARCH_KEEP: usize = 2;
/// Relative step of the inverse-scale ladder (Q4_0, Q5_0).
const LADDER_REL: f32 = 0.0125;
/// Steps either side of each end of the grid in the ladder.
const LADDER_N: i32 = 8;

/// The little-endian `u16` at `b[at..at + 2]` (an f16 bit pattern).
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Pack 32 codes (`codes[..32]`) into `qs[..16]`: low nibble = weight `j`, high nibble =
/// weight `j + 16`, for `j` in `0..16`. Codes are taken modulo 16. Shared with the IQ4 formats.
pub(crate) fn pack_nibbles(codes: &[u8], qs: &mut [u8]) {
    for j in 0..QK / 2 {
        qs[j] = (codes[j] & 0x0f) | ((codes[j + QK / 2] & 0x0f) << 4);
    }
}

/// Inverse of [`pack_nibbles`]: read 32 codes from `qs[..16]` into `codes[..32]`.
pub(crate) fn unpack_nibbles(qs: &[u8], codes: &mut [u8]) {
    for j in 0..QK / 2 {
        codes[j] = qs[j] & 0x0f;
        codes[j + QK / 2] = qs[j] >> 4;
    }
}

/// The 32 4-bit codes stored as nibbles in `qs[..16]` (see [`pack_nibbles`]).
pub(crate) fn nibble_codes(qs: &[u8]) -> [u8; QK] {
    let mut codes = [0u8; QK];
    unpack_nibbles(qs, &mut codes);
    codes
}

/// Pack 5-bit codes (taken modulo 32) into `out[..20]`: the `qh` word (bit `i` = bit 4 of code
/// `i`, little-endian) followed by the low nibbles, as Q5_0 and Q5_1 store them.
fn pack_5bit_codes(codes: &[u8; QK], out: &mut [u8]) {
    let qh = codes
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &c)| acc | (((c >> 4) as u32 & 1) << i));
    out[0..4].copy_from_slice(&qh.to_le_bytes());
    pack_nibbles(codes, &mut out[4..20]);
}

/// Inverse of [`pack_5bit_codes`]: the 5-bit codes stored in `bytes[..20]`.
fn unpack_5bit_codes(bytes: &[u8]) -> [u8; QK] {
    let qh = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let mut codes = nibble_codes(&bytes[4..20]);
    for (i, c) in codes.iter_mut().enumerate() {
        *c |= (((qh >> i) & 1) as u8) << 4;
    }
    codes
}

/// Q4_0 block, unpacked: value of weight `i` = `(codes[i] − 8)·d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q4_0Block {
    /// f16 bits of the scale.
    pub d: u16,
    /// Codes `0..=15`.
    pub codes: [u8; QK],
}

/// Q4_1 block, unpacked: value of weight `i` = `codes[i]·d + m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q4_1Block {
    /// f16 bits of the scale.
    pub d: u16,
    /// f16 bits of the offset (the block minimum).
    pub m: u16,
    /// Codes `0..=15`.
    pub codes: [u8; QK],
}

/// Q5_0 block, unpacked: value of weight `i` = `(codes[i] − 16)·d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q5_0Block {
    /// f16 bits of the scale.
    pub d: u16,
    /// Codes `0..=31`.
    pub codes: [u8; QK],
}

/// Q5_1 block, unpacked: value of weight `i` = `codes[i]·d + m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q5_1Block {
    /// f16 bits of the scale.
    pub d: u16,
    /// f16 bits of the offset.
    pub m: u16,
    /// Codes `0..=31`.
    pub codes: [u8; QK],
}

/// Q8_0 block, unpacked: value of weight `i` = `codes[i]·d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q8_0Block {
    /// f16 bits of the scale.
    pub d: u16,
    /// Signed codes `−128..=127`.
    pub codes: [i8; QK],
}

const _: () = assert!(GgmlType::Q4_0.type_size() == 18 && GgmlType::Q4_0.block_size() == QK);
const _: () = assert!(GgmlType::Q4_1.type_size() == 20 && GgmlType::Q4_1.block_size() == QK);
const _: () = assert!(GgmlType::Q5_0.type_size() == 22 && GgmlType::Q5_0.block_size() == QK);
const _: () = assert!(GgmlType::Q5_1.type_size() == 24 && GgmlType::Q5_1.block_size() == QK);
const _: () = assert!(GgmlType::Q8_0.type_size() == 34 && GgmlType::Q8_0.block_size() == QK);

impl Q4_0Block {
    /// Packed size in bytes.
    pub const BYTES: usize = GgmlType::Q4_0.type_size();

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
        Q4_0Block {
            d: le16(bytes, 0),
            codes: nibble_codes(&bytes[2..18]),
        }
    }

    /// Decoded value of weight `i`, exactly as ggml computes it.
    pub fn value(&self, i: usize) -> f32 {
        (self.codes[i] as i32 - 8) as f32 * self.d()
    }
}

impl Q4_1Block {
    /// Packed size in bytes.
    pub const BYTES: usize = GgmlType::Q4_1.type_size();

    /// The scale as f32.
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// The offset as f32.
    pub fn m(&self) -> f32 {
        f16_to_f32(self.m)
    }

    /// Write the 20 packed bytes into `out[..20]`. Codes are taken modulo 16.
    ///
    /// # Panics
    /// If `out` is shorter than [`Self::BYTES`].
    pub fn pack(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_le_bytes());
        pack_nibbles(&self.codes, &mut out[4..20]);
    }

    /// Read a block from `bytes[..20]`.
    ///
    /// # Panics
    /// If `bytes` is shorter than [`Self::BYTES`].
    pub fn unpack(bytes: &[u8]) -> Self {
        Q4_1Block {
            d: le16(bytes, 0),
            m: le16(bytes, 2),
            codes: nibble_codes(&bytes[4..20]),
        }
    }

    /// Decoded value of weight `i`: `q·d + m` in f32 (a multiply then an add, no fused op).
    pub fn value(&self, i: usize) -> f32 {
        self.codes[i] as f32 * self.d() + self.m()
    }
}

impl Q5_0Block {
    /// Packed size in bytes.
    pub const BYTES: usize = GgmlType::Q5_0.type_size();

    /// The scale as f32.
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// Write the 22 packed bytes into `out[..22]`. Codes are taken modulo 32.
    ///
    /// # Panics
    /// If `out` is shorter than [`Self::BYTES`].
    pub fn pack(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        pack_5bit_codes(&self.codes, &mut out[2..22]);
    }

    /// Read a block from `bytes[..22]`.
    ///
    /// # Panics
    /// If `bytes` is shorter than [`Self::BYTES`].
    pub fn unpack(bytes: &[u8]) -> Self {
        Q5_0Block {
            d: le16(bytes, 0),
            codes: unpack_5bit_codes(&bytes[2..22]),
        }
    }

    /// Decoded value of weight `i`, exactly as ggml computes it.
    pub fn value(&self, i: usize) -> f32 {
        (self.codes[i] as i32 - 16) as f32 * self.d()
    }
}

impl Q5_1Block {
    /// Packed size in bytes.
    pub const BYTES: usize = GgmlType::Q5_1.type_size();

    /// The scale as f32.
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// The offset as f32.
    pub fn m(&self) -> f32 {
        f16_to_f32(self.m)
    }

    /// Write the 24 packed bytes into `out[..24]`. Codes are taken modulo 32.
    ///
    /// # Panics
    /// If `out` is shorter than [`Self::BYTES`].
    pub fn pack(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_le_bytes());
        pack_5bit_codes(&self.codes, &mut out[4..24]);
    }

    /// Read a block from `bytes[..24]`.
    ///
    /// # Panics
    /// If `bytes` is shorter than [`Self::BYTES`].
    pub fn unpack(bytes: &[u8]) -> Self {
        Q5_1Block {
            d: le16(bytes, 0),
            m: le16(bytes, 2),
            codes: unpack_5bit_codes(&bytes[4..24]),
        }
    }

    /// Decoded value of weight `i`: `q·d + m` in f32 (a multiply then an add, no fused op).
    pub fn value(&self, i: usize) -> f32 {
        self.codes[i] as f32 * self.d() + self.m()
    }
}

impl Q8_0Block {
    /// Packed size in bytes.
    pub const BYTES: usize = GgmlType::Q8_0.type_size();

    /// The scale as f32.
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// Write the 34 packed bytes into `out[..34]`.
    ///
    /// # Panics
    /// If `out` is shorter than [`Self::BYTES`].
    pub fn pack(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        for (o, &c) in out[2..34].iter_mut().zip(&self.codes) {
            *o = c as u8;
        }
    }

    /// Read a block from `bytes[..34]`.
    ///
    /// # Panics
    /// If `bytes` is shorter than [`Self::BYTES`].
    pub fn unpack(bytes: &[u8]) -> Self {
        let mut codes = [0i8; QK];
        for (c, &b) in codes.iter_mut().zip(&bytes[2..34]) {
            *c = b as i8;
        }
        Q8_0Block {
            d: le16(bytes, 0),
            codes,
        }
    }

    /// Decoded value of weight `i`, exactly as ggml computes it.
    pub fn value(&self, i: usize) -> f32 {
        self.codes[i] as f32 * self.d()
    }
}

/// Decode the blocks of `src` into `dst` (`dst.len()` must be a multiple of 32 and `src` hold
/// that many blocks of `bytes` each).
fn decode_blocks<B>(
    src: &[u8],
    dst: &mut [f32],
    bytes: usize,
    unpack: fn(&[u8]) -> B,
    value: fn(&B, usize) -> f32,
) {
    for (block, out) in src.chunks_exact(bytes).zip(dst.chunks_exact_mut(QK)) {
        let b = unpack(block);
        for (i, o) in out.iter_mut().enumerate() {
            *o = value(&b, i);
        }
    }
}

/// Decode a Q4_0 row, bit-exact with ggml's `dequantize_row_q4_0`.
pub fn dequantize_row_q4_0(src: &[u8], dst: &mut [f32]) {
    decode_blocks(
        src,
        dst,
        Q4_0Block::BYTES,
        Q4_0Block::unpack,
        Q4_0Block::value,
    );
}

/// Decode a Q4_1 row, bit-exact with ggml's `dequantize_row_q4_1`.
pub fn dequantize_row_q4_1(src: &[u8], dst: &mut [f32]) {
    decode_blocks(
        src,
        dst,
        Q4_1Block::BYTES,
        Q4_1Block::unpack,
        Q4_1Block::value,
    );
}

/// Decode a Q5_0 row, bit-exact with ggml's `dequantize_row_q5_0`.
pub fn dequantize_row_q5_0(src: &[u8], dst: &mut [f32]) {
    decode_blocks(
        src,
        dst,
        Q5_0Block::BYTES,
        Q5_0Block::unpack,
        Q5_0Block::value,
    );
}

/// Decode a Q5_1 row, bit-exact with ggml's `dequantize_row_q5_1`.
pub fn dequantize_row_q5_1(src: &[u8], dst: &mut [f32]) {
    decode_blocks(
        src,
        dst,
        Q5_1Block::BYTES,
        Q5_1Block::unpack,
        Q5_1Block::value,
    );
}

/// Decode a Q8_0 row, bit-exact with ggml's `dequantize_row_q8_0`.
pub fn dequantize_row_q8_0(src: &[u8], dst: &mut [f32]) {
    decode_blocks(
        src,
        dst,
        Q8_0Block::BYTES,
        Q8_0Block::unpack,
        Q8_0Block::value,
    );
}

/// Signed value of largest magnitude (the first one on ties), as ggml's reference quantisers pick it.
fn signed_absmax(x: &[f32]) -> f32 {
    let mut best = 0.0f32;
    for &v in x {
        if v.abs() > best.abs() {
            best = v;
        }
    }
    best
}

/// Symmetric single-scale block `x̂ = d·g` on grid `G`: best f16 scale and exact codes.
///
/// Candidates: the inverse-scale ladder around both ends of the grid (±[`LADDER_N`] steps of
/// [`LADDER_REL`]), the best [`SEARCH_KEEP`] least-squares fits with f16 neighbours, ggml's own
/// scale `reference_scale`, and least-squares refits ([`search::search_grid_scale`]).
fn quantize_symmetric<G: CodeGrid>(
    x: &[f32],
    w: &[f32],
    reference_scale: f32,
    codes: &mut [u8],
) -> u16 {
    let xm = signed_absmax(x);
    let d_bits = if xm == 0.0 {
        0
    } else {
        let ladder = search::iscale_ladder(xm, G::MIN, G::MAX, LADDER_REL, LADDER_N);
        search::search_grid_scale::<G>(x, w, ladder, &[reference_scale], SEARCH_KEEP).0
    };
    search::grid_codes::<G>(x, f16_to_f32(d_bits), codes);
    d_bits
}

/// Q4_0's codes: `−8..=7`.
type GridQ4 = UniformGrid<-8, 7>;
/// Q5_0's codes: `−16..=15`.
type GridQ5 = UniformGrid<-16, 15>;
/// Q8_0's codes: `−128..=127`.
type GridQ8 = UniformGrid<-128, 127>;

/// Quantise one Q4_0 block (`x.len() == w.len() == 32`).
pub fn quantize_block_q4_0(x: &[f32], w: &[f32]) -> Q4_0Block {
    let mut codes = [0u8; QK];
    let d = quantize_symmetric::<GridQ4>(x, w, signed_absmax(x) / -8.0, &mut codes);
    Q4_0Block { d, codes }
}

/// Quantise one Q5_0 block (`x.len() == w.len() == 32`).
pub fn quantize_block_q5_0(x: &[f32], w: &[f32]) -> Q5_0Block {
    let mut codes = [0u8; QK];
    let d = quantize_symmetric::<GridQ5>(x, w, signed_absmax(x) / -16.0, &mut codes);
    Q5_0Block { d, codes }
}

/// Affine block `x̂ = q·d + m`, `q ∈ 0..=nmax`: best f16 pair and exact codes.
fn quantize_affine(x: &[f32], w: &[f32], nmax: u8, codes: &mut [u8; QK]) -> (u16, u16) {
    let fit = search::search_affine_f16(x, w, nmax);
    search::affine_error(
        x,
        w,
        nmax,
        f16_to_f32(fit.d_bits),
        f16_to_f32(fit.m_bits),
        Some(codes),
    );
    (fit.d_bits, fit.m_bits)
}

/// Quantise one Q4_1 block (`x.len() == w.len() == 32`).
pub fn quantize_block_q4_1(x: &[f32], w: &[f32]) -> Q4_1Block {
    let mut codes = [0u8; QK];
    let (d, m) = quantize_affine(x, w, 15, &mut codes);
    Q4_1Block { d, m, codes }
}

/// Quantise one Q5_1 block (`x.len() == w.len() == 32`).
pub fn quantize_block_q5_1(x: &[f32], w: &[f32]) -> Q5_1Block {
    let mut codes = [0u8; QK];
    let (d, m) = quantize_affine(x, w, 31, &mut codes);
    Q5_1Block { d, m, codes }
}

/// Quantise one Q8_0 block (`x.len() == w.len() == 32`).
///
/// Candidates: ggml's `amax/127`, the ends of the grid for both signs (`xm/−128`, `xm/127`) with
/// small stretches, least-squares refits, f16 neighbours ([`search::search_grid_scale`]).
pub fn quantize_block_q8_0(x: &[f32], w: &[f32]) -> Q8_0Block {
    let xm = signed_absmax(x);
    let d_bits = if xm == 0.0 {
        0
    } else {
        let ladder = search::iscale_ladder(xm, -128.0, 127.0, 0.004, 1);
        search::search_grid_scale::<GridQ8>(x, w, ladder, &[xm.abs() / 127.0], 2).0
    };
    let mut idx = [0u8; QK];
    search::grid_codes::<GridQ8>(x, f16_to_f32(d_bits), &mut idx);
    Q8_0Block {
        d: d_bits,
        codes: idx.map(|k| (k as i32 - 128) as i8),
    }
}

/// Quantise a row block by block: `quantize_block(x, w)` then `pack`.
fn quantize_blocks<B>(
    src: &[f32],
    importance: Option<&[f32]>,
    dst: &mut [u8],
    bytes: usize,
    quantize_block: fn(&[f32], &[f32]) -> B,
    pack: fn(&B, &mut [u8]),
) {
    let mut w = [0f32; QK];
    for (b, (x, out)) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(bytes))
        .enumerate()
    {
        fill_weights(importance.map(|imp| &imp[b * QK..(b + 1) * QK]), &mut w);
        pack(&quantize_block(x, &w), out);
    }
}

/// Quantise a row to Q4_0, minimising the importance-weighted squared error (see module docs).
pub fn quantize_row_q4_0(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    quantize_blocks(
        src,
        importance,
        dst,
        Q4_0Block::BYTES,
        quantize_block_q4_0,
        Q4_0Block::pack,
    );
}

/// Quantise a row to Q4_1, minimising the importance-weighted squared error (see module docs).
pub fn quantize_row_q4_1(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    quantize_blocks(
        src,
        importance,
        dst,
        Q4_1Block::BYTES,
        quantize_block_q4_1,
        Q4_1Block::pack,
    );
}

/// Quantise a row to Q5_0, minimising the importance-weighted squared error (see module docs).
pub fn quantize_row_q5_0(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    quantize_blocks(
        src,
        importance,
        dst,
        Q5_0Block::BYTES,
        quantize_block_q5_0,
        Q5_0Block::pack,
    );
}

/// Quantise a row to Q5_1, minimising the importance-weighted squared error (see module docs).
pub fn quantize_row_q5_1(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    quantize_blocks(
        src,
        importance,
        dst,
        Q5_1Block::BYTES,
        quantize_block_q5_1,
        Q5_1Block::pack,
    );
}

/// Quantise a row to Q8_0, minimising the importance-weighted squared error (see module docs).
pub fn quantize_row_q8_0(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    quantize_blocks(
        src,
        importance,
        dst,
        Q8_0Block::BYTES,
        quantize_block_q8_0,
        Q8_0Block::pack,
    );
}

/// Quantise activations to Q8_0 the way ggml's `quantize_row_q8_0_ref` does (the `from_float`
/// of the Q8_0 activation type): `d = amax/127` stored as f16, codes `round(x·127/amax)` (ties
/// away from zero). Fast, no search: this is the activation format ggml's `vec_dot`s consume.
/// `src.len()` must be a multiple of 32 and `dst` hold `src.len()/32` blocks (extra input or
/// output is ignored).
pub fn quantize_row_q8_0_activations(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(Q8_0Block::BYTES))
    {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut codes = [0i8; QK];
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = (v * id).round() as i8;
        }
        Q8_0Block {
            d: crate::float::f32_to_f16(d),
            codes,
        }
        .pack(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden;
    use crate::{dequantize_row, quantize_row, FormatError};

    type Quant = fn(&[f32], Option<&[f32]>, &mut [u8]);
    type Dequant = fn(&[u8], &mut [f32]);

    const ALL: [(GgmlType, Quant, Dequant); 5] = [
        (GgmlType::Q4_0, quantize_row_q4_0, dequantize_row_q4_0),
        (GgmlType::Q4_1, quantize_row_q4_1, dequantize_row_q4_1),
        (GgmlType::Q5_0, quantize_row_q5_0, dequantize_row_q5_0),
        (GgmlType::Q5_1, quantize_row_q5_1, dequantize_row_q5_1),
        (GgmlType::Q8_0, quantize_row_q8_0, dequantize_row_q8_0),
    ];

    #[test]
    fn decoders_are_bit_exact_with_ggml() {
        for (ty, _, deq) in ALL {
            golden::assert_decoder_bit_exact(&golden::load(ty), deq);
        }
    }

    #[test]
    fn quantisers_are_not_worse_than_ggml() {
        for (ty, q, deq) in ALL {
            let [plain, imat] = golden::assert_quantiser_not_worse(&golden::load(ty), q, deq);
            // On the whole fixture we must be strictly better than ggml's reference rounding.
            assert!(
                plain.0 < plain.1 || ty == GgmlType::Q8_0 && plain.0 <= plain.1,
                "{ty}"
            );
            assert!(imat.0 <= imat.1, "{ty}");
        }
    }

    /// A pseudo-random byte pattern for round trips.
    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
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
            let b = bytes(Q4_0Block::BYTES, seed);
            let mut out = vec![0u8; b.len()];
            Q4_0Block::unpack(&b).pack(&mut out);
            assert_eq!(out, b);
            let b = bytes(Q4_1Block::BYTES, seed);
            let mut out = vec![0u8; b.len()];
            Q4_1Block::unpack(&b).pack(&mut out);
            assert_eq!(out, b);
            let b = bytes(Q5_0Block::BYTES, seed);
            let mut out = vec![0u8; b.len()];
            Q5_0Block::unpack(&b).pack(&mut out);
            assert_eq!(out, b);
            let b = bytes(Q5_1Block::BYTES, seed);
            let mut out = vec![0u8; b.len()];
            Q5_1Block::unpack(&b).pack(&mut out);
            assert_eq!(out, b);
            let b = bytes(Q8_0Block::BYTES, seed);
            let mut out = vec![0u8; b.len()];
            Q8_0Block::unpack(&b).pack(&mut out);
            assert_eq!(out, b);
        }
        // And from the unpacked side: explicit codes survive packing.
        let mut codes = [0u8; QK];
        for (i, c) in codes.iter_mut().enumerate() {
            *c = (i * 7 % 32) as u8;
        }
        let blk = Q5_1Block {
            d: 0x3c00,
            m: 0xbc00,
            codes,
        };
        let mut out = [0u8; 24];
        blk.pack(&mut out);
        assert_eq!(Q5_1Block::unpack(&out), blk);
        assert_eq!(
            Q5_1Block::unpack(&out).value(31),
            (31 * 7 % 32) as f32 - 1.0
        );
    }

    #[test]
    fn quantise_dequantise_error_is_bounded() {
        // Uniform data in [-1, 1): with step d the nearest-rounding error is at most d/2 per weight.
        let x: Vec<f32> = bytes(256, 99)
            .iter()
            .map(|&b| b as f32 / 128.0 - 1.0)
            .collect();
        for (ty, q, deq) in ALL {
            let mut packed = vec![0u8; ty.row_bytes(256).unwrap() as usize];
            let mut y = vec![0f32; 256];
            q(&x, None, &mut packed);
            deq(&packed, &mut y);
            let levels = match ty {
                GgmlType::Q4_0 | GgmlType::Q4_1 => 15.0,
                GgmlType::Q5_0 | GgmlType::Q5_1 => 31.0,
                _ => 254.0,
            };
            // Max-based scale: range 2 over `levels` steps, plus f16 rounding slack.
            let bound = 2.0 / levels * 0.5 * 1.01;
            let max_err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let rmse = golden::weighted_rmse(&x, &y, None);
            assert!(rmse < bound, "{ty}: rmse {rmse} bound {bound}");
            assert!((max_err as f64) < 2.0 * bound, "{ty}: max error {max_err}");
        }
    }

    #[test]
    fn zero_rows_decode_to_zero() {
        for (ty, _, _) in ALL {
            let x = vec![0f32; 64];
            let mut packed = vec![0xAAu8; ty.row_bytes(64).unwrap() as usize];
            quantize_row(ty, &x, None, &mut packed).unwrap();
            let mut y = vec![1f32; 64];
            dequantize_row(ty, &packed, &mut y).unwrap();
            assert!(y.iter().all(|&v| v == 0.0), "{ty}: {y:?}");
            // Zero importance everywhere is also fine.
            quantize_row(ty, &x, Some(&[0.0; 64]), &mut packed).unwrap();
        }
    }

    #[test]
    fn exact_grid_data_is_reproduced() {
        // Values that are exactly representable must come back exactly, whatever the weights.
        let d = 0.125f32;
        let x: Vec<f32> = (0..32)
            .map(|i| ((i * 5) % 16) as f32 * d - 8.0 * d)
            .collect();
        let w: Vec<f32> = (0..32).map(|i| 1.0 + i as f32).collect();
        for (ty, q, deq) in [ALL[0], ALL[1], ALL[2], ALL[3], ALL[4]] {
            let mut packed = vec![0u8; ty.type_size()];
            let mut y = vec![0f32; 32];
            q(&x, Some(&w), &mut packed);
            deq(&packed, &mut y);
            assert_eq!(x, y, "{ty}");
        }
    }

    #[test]
    fn nan_is_rejected_by_the_dispatcher() {
        for (ty, _, _) in ALL {
            let mut x = vec![0.5f32; 32];
            x[7] = f32::NAN;
            let mut packed = vec![0u8; ty.type_size()];
            let err = quantize_row(ty, &x, None, &mut packed).unwrap_err();
            assert!(
                matches!(err, FormatError::NonFinite { index: 7, .. }),
                "{ty}: {err:?}"
            );
            x[7] = 0.5;
            let mut imp = vec![1.0f32; 32];
            imp[3] = f32::INFINITY;
            let err = quantize_row(ty, &x, Some(&imp), &mut packed).unwrap_err();
            assert!(
                matches!(err, FormatError::NonFinite { index: 3, .. }),
                "{ty}: {err:?}"
            );
        }
    }

    #[test]
    fn dispatcher_checks_lengths() {
        let mut packed = vec![0u8; 17];
        let err = quantize_row(GgmlType::Q4_0, &[0.0; 32], None, &mut packed).unwrap_err();
        assert!(matches!(err, FormatError::LengthMismatch { .. }));
        let mut y = [0f32; 31];
        let err = dequantize_row(GgmlType::Q8_0, &[0u8; 34], &mut y).unwrap_err();
        assert!(matches!(err, FormatError::NotBlockMultiple { .. }));
    }
}

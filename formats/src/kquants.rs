//! The k-quants Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: 256-weight super-blocks split into sub-blocks,
//! each with a small integer scale (and, for Q2_K/Q4_K/Q5_K, a small integer min) that multiplies
//! the super-block's f16 scale `d` (and `dmin`).
//!
//! Layout facts (byte order, bit packing, value formulas) follow `ggml-common.h` and
//! `ggml-quants.c` of the llama.cpp sources vendored by `llama-cpp-sys-2` 0.1.161; the code is our
//! own.
//!
//! Every type has an *unpacked* block struct ([`BlockQ2K`] … [`BlockQ6K`]) holding the f16 bit
//! patterns of `d`/`dmin`, the integer sub-block scales/mins and the 256 integer codes, with
//! the common interface [`KQuantBlock`]: `pack`, `unpack`, `value` (the dequantised weight,
//! computed with exactly the f32 operations of ggml's `dequantize_row_*`), `sub_scale`/`sub_min`
//! and the code/scale ranges as associated constants.
//!
//! Decoded weight `i` (sub-block `j = i / SUB_BLOCK_LEN`, code `q`):
//!
//! | type | value | code range | sub-scale range | sub-min range |
//! |---|---|---|---|---|
//! | Q2_K | `(d·sc)·q − (dmin·m)` | 0..=3 | 0..=15 | 0..=15 |
//! | Q3_K | `(d·sc)·q` | −4..=3 | −32..=31 | – |
//! | Q4_K | `(d·sc)·q − (dmin·m)` | 0..=15 | 0..=63 | 0..=63 |
//! | Q5_K | `(d·sc)·q − (dmin·m)` | 0..=31 | 0..=63 | 0..=63 |
//! | Q6_K | `(d·sc)·q` | −32..=31 | −128..=127 | – |
//!
//! The quantisers ([`quantize_row_q2_k`] …) are round-to-nearest: for each super-block they fit a
//! continuous scale (and min) per sub-block minimising the importance-weighted squared error,
//! pick the f16 super-scales and integer sub-scales by a surrogate search, then refine by
//! coordinate descent on the *true* block error (codes re-rounded against the quantised scales
//! at every step), and finally re-round every code against the chosen quantised scales.

use crate::float::{f16_to_f32, f32_to_f16};
use crate::types::{GgmlType, QK_K};

/// Common interface of the unpacked k-quant blocks.
///
/// Integer accessors return `i32` whatever the storage type, so generic code (the quantiser, the
/// solver) can treat all five formats alike.
pub trait KQuantBlock: Sized + Clone + PartialEq + std::fmt::Debug {
    /// The ggml type.
    const TYPE: GgmlType;
    /// Packed bytes per block.
    const BYTES: usize;
    /// Sub-blocks per super-block.
    const SUB_BLOCKS: usize;
    /// Weights per sub-block.
    const SUB_BLOCK_LEN: usize = QK_K / Self::SUB_BLOCKS;
    /// Smallest code.
    const CODE_MIN: i32;
    /// Largest code.
    const CODE_MAX: i32;
    /// Smallest integer sub-block scale.
    const SCALE_MIN: i32;
    /// Largest integer sub-block scale.
    const SCALE_MAX: i32;
    /// Largest integer sub-block min (the smallest is 0); 0 for types without mins.
    const MIN_MAX: i32;
    /// True if the type has sub-block mins (and a `dmin`).
    const HAS_MIN: bool = Self::MIN_MAX > 0;

    /// Build a block from its parts. `scales` and `mins` have [`Self::SUB_BLOCKS`] entries
    /// (`mins` is ignored for types without mins), `codes` has 256. Values must lie in the
    /// type's ranges (checked in debug builds; out-of-range bits are masked when packing).
    fn from_parts(d: u16, dmin: u16, scales: &[i32], mins: &[i32], codes: &[i32]) -> Self;
    /// f16 bits of the super-block scale `d`.
    fn d_bits(&self) -> u16;
    /// f16 bits of the super-block min scale `dmin` (0 for types without mins).
    fn dmin_bits(&self) -> u16;
    /// Integer scale of sub-block `j`.
    fn scale(&self, j: usize) -> i32;
    /// Integer min of sub-block `j` (0 for types without mins).
    fn min(&self, j: usize) -> i32;
    /// Code of weight `i`.
    fn code(&self, i: usize) -> i32;
    /// Write the packed block (ggml layout) into `out[..Self::BYTES]`.
    ///
    /// # Panics
    /// If `out` is shorter than [`Self::BYTES`].
    fn pack(&self, out: &mut [u8]);
    /// Read a packed block from `bytes[..Self::BYTES]`.
    ///
    /// # Panics
    /// If `bytes` is shorter than [`Self::BYTES`].
    fn unpack(bytes: &[u8]) -> Self;

    /// Effective scale of sub-block `j`: `f32(d) · scale(j)`, as ggml computes it.
    #[inline]
    fn sub_scale(&self, j: usize) -> f32 {
        f16_to_f32(self.d_bits()) * self.scale(j) as f32
    }

    /// Effective min of sub-block `j` (subtracted from `sub_scale · code`): `f32(dmin) · min(j)`;
    /// 0 for types without mins.
    #[inline]
    fn sub_min(&self, j: usize) -> f32 {
        if Self::HAS_MIN {
            f16_to_f32(self.dmin_bits()) * self.min(j) as f32
        } else {
            0.0
        }
    }

    /// The dequantised weight `i`, bit-exact with ggml's `dequantize_row_*`.
    #[inline]
    fn value(&self, i: usize) -> f32 {
        let j = i / Self::SUB_BLOCK_LEN;
        decode(
            self.sub_scale(j),
            self.sub_min(j),
            self.code(i),
            Self::HAS_MIN,
        )
    }

    /// Dequantise the whole block into `out[..256]` (same values as [`Self::value`]).
    fn dequantize(&self, out: &mut [f32]) {
        for (j, chunk) in out[..QK_K]
            .chunks_exact_mut(Self::SUB_BLOCK_LEN)
            .enumerate()
        {
            let (a, b) = (self.sub_scale(j), self.sub_min(j));
            for (k, y) in chunk.iter_mut().enumerate() {
                *y = decode(a, b, self.code(j * Self::SUB_BLOCK_LEN + k), Self::HAS_MIN);
            }
        }
    }
}

/// ggml's value formula given the effective sub-block scale `a` and min `b`.
#[inline]
fn decode(a: f32, b: f32, q: i32, has_min: bool) -> f32 {
    if has_min {
        a * q as f32 - b
    } else {
        a * q as f32
    }
}

#[inline]
fn read_f16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

#[inline]
fn write_f16(out: &mut [u8], at: usize, bits: u16) {
    out[at..at + 2].copy_from_slice(&bits.to_le_bytes());
}

fn check_parts(kind: &str, n: usize, lo: i32, hi: i32, values: &[i32]) {
    debug_assert!(
        values.len() >= n,
        "{kind}: {} entries, need {n}",
        values.len()
    );
    debug_assert!(
        values[..n].iter().all(|v| (lo..=hi).contains(v)),
        "{kind} out of range {lo}..={hi}"
    );
}

/// Pack eight 6-bit scales and eight 6-bit mins into ggml's 12-byte `K_SCALE_SIZE` layout
/// (Q4_K/Q5_K): bytes 0–3 scales 0–3 (+ top bits of scales 4–7 in bits 6–7), bytes 4–7 mins 0–3
/// (+ top bits of mins 4–7), bytes 8–11 low nibbles of scale (low) and min (high) 4–7.
fn pack_scale_min_k4(scales: &[u8; 8], mins: &[u8; 8], out: &mut [u8]) {
    for j in 0..4 {
        out[j] = (scales[j] & 63) | ((scales[j + 4] >> 4) << 6);
        out[j + 4] = (mins[j] & 63) | ((mins[j + 4] >> 4) << 6);
        out[j + 8] = (scales[j + 4] & 0xF) | ((mins[j + 4] & 0xF) << 4);
    }
}

/// Inverse of [`pack_scale_min_k4`] (ggml's `get_scale_min_k4` for all eight sub-blocks).
fn unpack_scale_min_k4(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut scales = [0u8; 8];
    let mut mins = [0u8; 8];
    for j in 0..4 {
        scales[j] = q[j] & 63;
        mins[j] = q[j + 4] & 63;
        scales[j + 4] = (q[j + 8] & 0xF) | ((q[j] >> 6) << 4);
        mins[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (scales, mins)
}

// ------------------------------------------------------------------------------------------------
// Q2_K

/// Unpacked Q2_K block (84 bytes packed: 16 scale/min bytes, 64 code bytes, `d`, `dmin`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockQ2K {
    /// f16 bits of the super-block scale.
    pub d: u16,
    /// f16 bits of the super-block min scale.
    pub dmin: u16,
    /// 4-bit sub-block scales (0..=15), one per 16 weights.
    pub scales: [u8; 16],
    /// 4-bit sub-block mins (0..=15), one per 16 weights.
    pub mins: [u8; 16],
    /// 2-bit codes (0..=3).
    pub codes: [u8; QK_K],
}

impl KQuantBlock for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const BYTES: usize = 16 + QK_K / 4 + 2 + 2;
    const SUB_BLOCKS: usize = 16;
    const CODE_MIN: i32 = 0;
    const CODE_MAX: i32 = 3;
    const SCALE_MIN: i32 = 0;
    const SCALE_MAX: i32 = 15;
    const MIN_MAX: i32 = 15;

    fn from_parts(d: u16, dmin: u16, scales: &[i32], mins: &[i32], codes: &[i32]) -> Self {
        check_parts("Q2_K scales", 16, 0, 15, scales);
        check_parts("Q2_K mins", 16, 0, 15, mins);
        check_parts("Q2_K codes", QK_K, 0, 3, codes);
        BlockQ2K {
            d,
            dmin,
            scales: std::array::from_fn(|j| scales[j] as u8),
            mins: std::array::from_fn(|j| mins[j] as u8),
            codes: std::array::from_fn(|i| codes[i] as u8),
        }
    }
    fn d_bits(&self) -> u16 {
        self.d
    }
    fn dmin_bits(&self) -> u16 {
        self.dmin
    }
    fn scale(&self, j: usize) -> i32 {
        self.scales[j] as i32
    }
    fn min(&self, j: usize) -> i32 {
        self.mins[j] as i32
    }
    fn code(&self, i: usize) -> i32 {
        self.codes[i] as i32
    }

    fn pack(&self, out: &mut [u8]) {
        let out = &mut out[..Self::BYTES];
        for ((o, &sc), &mn) in out[..16].iter_mut().zip(&self.scales).zip(&self.mins) {
            *o = (sc & 0xF) | ((mn & 0xF) << 4);
        }
        out[16..80].fill(0);
        // Weight e = 128·c + 32·k + r lives in byte 16 + 32·c + r at bit 2·k.
        for (e, &q) in self.codes.iter().enumerate() {
            let (c, k, r) = (e / 128, (e % 128) / 32, e % 32);
            out[16 + 32 * c + r] |= (q & 3) << (2 * k);
        }
        write_f16(out, 80, self.d);
        write_f16(out, 82, self.dmin);
    }

    fn unpack(bytes: &[u8]) -> Self {
        let b = &bytes[..Self::BYTES];
        BlockQ2K {
            d: read_f16(b, 80),
            dmin: read_f16(b, 82),
            scales: std::array::from_fn(|j| b[j] & 0xF),
            mins: std::array::from_fn(|j| b[j] >> 4),
            codes: std::array::from_fn(|e| {
                let (c, k, r) = (e / 128, (e % 128) / 32, e % 32);
                (b[16 + 32 * c + r] >> (2 * k)) & 3
            }),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Q3_K

/// Unpacked Q3_K block (110 bytes packed: 32 high-bit bytes, 64 low-bit bytes, 12 scale bytes, `d`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockQ3K {
    /// f16 bits of the super-block scale.
    pub d: u16,
    /// Signed 6-bit sub-block scales (−32..=31), one per 16 weights (stored as `scale + 32`).
    pub scales: [i8; 16],
    /// Signed 3-bit codes (−4..=3) (stored as `code + 4`: low 2 bits plus a high bit).
    pub codes: [i8; QK_K],
}

impl KQuantBlock for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;
    const SUB_BLOCKS: usize = 16;
    const CODE_MIN: i32 = -4;
    const CODE_MAX: i32 = 3;
    const SCALE_MIN: i32 = -32;
    const SCALE_MAX: i32 = 31;
    const MIN_MAX: i32 = 0;

    fn from_parts(d: u16, _dmin: u16, scales: &[i32], _mins: &[i32], codes: &[i32]) -> Self {
        check_parts("Q3_K scales", 16, -32, 31, scales);
        check_parts("Q3_K codes", QK_K, -4, 3, codes);
        BlockQ3K {
            d,
            scales: std::array::from_fn(|j| scales[j] as i8),
            codes: std::array::from_fn(|i| codes[i] as i8),
        }
    }
    fn d_bits(&self) -> u16 {
        self.d
    }
    fn dmin_bits(&self) -> u16 {
        0
    }
    fn scale(&self, j: usize) -> i32 {
        self.scales[j] as i32
    }
    fn min(&self, _j: usize) -> i32 {
        0
    }
    fn code(&self, i: usize) -> i32 {
        self.codes[i] as i32
    }

    fn pack(&self, out: &mut [u8]) {
        let out = &mut out[..Self::BYTES];
        out[..108].fill(0);
        // Weight e = 128·c + 32·k + r: low 2 bits of (code + 4) in byte 32 + 32·c + r at bit 2·k,
        // the high bit in hmask byte r at bit 4·c + k.
        for (e, &q) in self.codes.iter().enumerate() {
            let u = (q as i32 + 4) as u8 & 7;
            let (c, k, r) = (e / 128, (e % 128) / 32, e % 32);
            out[32 + 32 * c + r] |= (u & 3) << (2 * k);
            out[r] |= (u >> 2) << (4 * c + k);
        }
        // Scale j as 6-bit (scale + 32): low nibble in byte 96 + j % 8 (low half for j < 8,
        // high half otherwise), top 2 bits in byte 104 + j % 4 at bit 2·(j / 4).
        for (j, &s) in self.scales.iter().enumerate() {
            let u = (s as i32 + 32) as u8 & 63;
            out[96 + j % 8] |= (u & 0xF) << (4 * (j / 8));
            out[104 + j % 4] |= (u >> 4) << (2 * (j / 4));
        }
        write_f16(out, 108, self.d);
    }

    fn unpack(bytes: &[u8]) -> Self {
        let b = &bytes[..Self::BYTES];
        BlockQ3K {
            d: read_f16(b, 108),
            scales: std::array::from_fn(|j| {
                let lo = (b[96 + j % 8] >> (4 * (j / 8))) & 0xF;
                let hi = (b[104 + j % 4] >> (2 * (j / 4))) & 3;
                (lo | (hi << 4)) as i8 - 32
            }),
            codes: std::array::from_fn(|e| {
                let (c, k, r) = (e / 128, (e % 128) / 32, e % 32);
                let lo = (b[32 + 32 * c + r] >> (2 * k)) & 3;
                let hi = (b[r] >> (4 * c + k)) & 1;
                (lo | (hi << 2)) as i8 - 4
            }),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Q4_K

/// Unpacked Q4_K block (144 bytes packed: `d`, `dmin`, 12 scale/min bytes, 128 code bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockQ4K {
    /// f16 bits of the super-block scale.
    pub d: u16,
    /// f16 bits of the super-block min scale.
    pub dmin: u16,
    /// 6-bit sub-block scales (0..=63), one per 32 weights.
    pub scales: [u8; 8],
    /// 6-bit sub-block mins (0..=63), one per 32 weights.
    pub mins: [u8; 8],
    /// 4-bit codes (0..=15).
    pub codes: [u8; QK_K],
}

impl KQuantBlock for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BYTES: usize = 2 + 2 + 12 + QK_K / 2;
    const SUB_BLOCKS: usize = 8;
    const CODE_MIN: i32 = 0;
    const CODE_MAX: i32 = 15;
    const SCALE_MIN: i32 = 0;
    const SCALE_MAX: i32 = 63;
    const MIN_MAX: i32 = 63;

    fn from_parts(d: u16, dmin: u16, scales: &[i32], mins: &[i32], codes: &[i32]) -> Self {
        check_parts("Q4_K scales", 8, 0, 63, scales);
        check_parts("Q4_K mins", 8, 0, 63, mins);
        check_parts("Q4_K codes", QK_K, 0, 15, codes);
        BlockQ4K {
            d,
            dmin,
            scales: std::array::from_fn(|j| scales[j] as u8),
            mins: std::array::from_fn(|j| mins[j] as u8),
            codes: std::array::from_fn(|i| codes[i] as u8),
        }
    }
    fn d_bits(&self) -> u16 {
        self.d
    }
    fn dmin_bits(&self) -> u16 {
        self.dmin
    }
    fn scale(&self, j: usize) -> i32 {
        self.scales[j] as i32
    }
    fn min(&self, j: usize) -> i32 {
        self.mins[j] as i32
    }
    fn code(&self, i: usize) -> i32 {
        self.codes[i] as i32
    }

    fn pack(&self, out: &mut [u8]) {
        let out = &mut out[..Self::BYTES];
        write_f16(out, 0, self.d);
        write_f16(out, 2, self.dmin);
        pack_scale_min_k4(&self.scales, &self.mins, &mut out[4..16]);
        out[16..].fill(0);
        // Weight e = 64·c + r: byte 16 + 32·c + r % 32, low nibble for r < 32, else high.
        for (e, &q) in self.codes.iter().enumerate() {
            let (c, r) = (e / 64, e % 64);
            out[16 + 32 * c + r % 32] |= (q & 0xF) << (4 * (r / 32));
        }
    }

    fn unpack(bytes: &[u8]) -> Self {
        let b = &bytes[..Self::BYTES];
        let (scales, mins) = unpack_scale_min_k4(&b[4..16]);
        BlockQ4K {
            d: read_f16(b, 0),
            dmin: read_f16(b, 2),
            scales,
            mins,
            codes: std::array::from_fn(|e| {
                let (c, r) = (e / 64, e % 64);
                (b[16 + 32 * c + r % 32] >> (4 * (r / 32))) & 0xF
            }),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Q5_K

/// Unpacked Q5_K block (176 bytes packed: `d`, `dmin`, 12 scale/min bytes, 32 high-bit bytes,
/// 128 low-nibble bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockQ5K {
    /// f16 bits of the super-block scale.
    pub d: u16,
    /// f16 bits of the super-block min scale.
    pub dmin: u16,
    /// 6-bit sub-block scales (0..=63), one per 32 weights.
    pub scales: [u8; 8],
    /// 6-bit sub-block mins (0..=63), one per 32 weights.
    pub mins: [u8; 8],
    /// 5-bit codes (0..=31).
    pub codes: [u8; QK_K],
}

impl KQuantBlock for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BYTES: usize = 2 + 2 + 12 + QK_K / 8 + QK_K / 2;
    const SUB_BLOCKS: usize = 8;
    const CODE_MIN: i32 = 0;
    const CODE_MAX: i32 = 31;
    const SCALE_MIN: i32 = 0;
    const SCALE_MAX: i32 = 63;
    const MIN_MAX: i32 = 63;

    fn from_parts(d: u16, dmin: u16, scales: &[i32], mins: &[i32], codes: &[i32]) -> Self {
        check_parts("Q5_K scales", 8, 0, 63, scales);
        check_parts("Q5_K mins", 8, 0, 63, mins);
        check_parts("Q5_K codes", QK_K, 0, 31, codes);
        BlockQ5K {
            d,
            dmin,
            scales: std::array::from_fn(|j| scales[j] as u8),
            mins: std::array::from_fn(|j| mins[j] as u8),
            codes: std::array::from_fn(|i| codes[i] as u8),
        }
    }
    fn d_bits(&self) -> u16 {
        self.d
    }
    fn dmin_bits(&self) -> u16 {
        self.dmin
    }
    fn scale(&self, j: usize) -> i32 {
        self.scales[j] as i32
    }
    fn min(&self, j: usize) -> i32 {
        self.mins[j] as i32
    }
    fn code(&self, i: usize) -> i32 {
        self.codes[i] as i32
    }

    fn pack(&self, out: &mut [u8]) {
        let out = &mut out[..Self::BYTES];
        write_f16(out, 0, self.d);
        write_f16(out, 2, self.dmin);
        pack_scale_min_k4(&self.scales, &self.mins, &mut out[4..16]);
        out[16..].fill(0);
        // Weight e = 64·c + r (sub-block e / 32 = 2·c + r / 32): low nibble as in Q4_K at
        // byte 48 + 32·c + r % 32, the fifth bit in byte 16 + r % 32 at bit e / 32.
        for (e, &q) in self.codes.iter().enumerate() {
            let (c, r) = (e / 64, e % 64);
            out[48 + 32 * c + r % 32] |= (q & 0xF) << (4 * (r / 32));
            out[16 + r % 32] |= ((q >> 4) & 1) << (e / 32);
        }
    }

    fn unpack(bytes: &[u8]) -> Self {
        let b = &bytes[..Self::BYTES];
        let (scales, mins) = unpack_scale_min_k4(&b[4..16]);
        BlockQ5K {
            d: read_f16(b, 0),
            dmin: read_f16(b, 2),
            scales,
            mins,
            codes: std::array::from_fn(|e| {
                let (c, r) = (e / 64, e % 64);
                let lo = (b[48 + 32 * c + r % 32] >> (4 * (r / 32))) & 0xF;
                let hi = (b[16 + r % 32] >> (e / 32)) & 1;
                lo | (hi << 4)
            }),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Q6_K

/// Unpacked Q6_K block (210 bytes packed: 128 low-nibble bytes, 64 high-bit bytes, 16 scale
/// bytes, `d`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockQ6K {
    /// f16 bits of the super-block scale.
    pub d: u16,
    /// Signed 8-bit sub-block scales (−128..=127), one per 16 weights.
    pub scales: [i8; 16],
    /// Signed 6-bit codes (−32..=31) (stored as `code + 32`).
    pub codes: [i8; QK_K],
}

impl KQuantBlock for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BYTES: usize = QK_K / 2 + QK_K / 4 + 16 + 2;
    const SUB_BLOCKS: usize = 16;
    const CODE_MIN: i32 = -32;
    const CODE_MAX: i32 = 31;
    const SCALE_MIN: i32 = -128;
    const SCALE_MAX: i32 = 127;
    const MIN_MAX: i32 = 0;

    fn from_parts(d: u16, _dmin: u16, scales: &[i32], _mins: &[i32], codes: &[i32]) -> Self {
        check_parts("Q6_K scales", 16, -128, 127, scales);
        check_parts("Q6_K codes", QK_K, -32, 31, codes);
        BlockQ6K {
            d,
            scales: std::array::from_fn(|j| scales[j] as i8),
            codes: std::array::from_fn(|i| codes[i] as i8),
        }
    }
    fn d_bits(&self) -> u16 {
        self.d
    }
    fn dmin_bits(&self) -> u16 {
        0
    }
    fn scale(&self, j: usize) -> i32 {
        self.scales[j] as i32
    }
    fn min(&self, _j: usize) -> i32 {
        0
    }
    fn code(&self, i: usize) -> i32 {
        self.codes[i] as i32
    }

    fn pack(&self, out: &mut [u8]) {
        let out = &mut out[..Self::BYTES];
        out[..192].fill(0);
        // Weight e = 128·c + 32·k + l, u = code + 32: low nibble in byte 64·c + 32·(k & 1) + l
        // (low half for k < 2, else high), top 2 bits in byte 128 + 32·c + l at bit 2·k.
        for (e, &q) in self.codes.iter().enumerate() {
            let u = (q as i32 + 32) as u8 & 63;
            let (c, k, l) = (e / 128, (e % 128) / 32, e % 32);
            out[64 * c + 32 * (k & 1) + l] |= (u & 0xF) << (4 * (k >> 1));
            out[128 + 32 * c + l] |= (u >> 4) << (2 * k);
        }
        for (j, &s) in self.scales.iter().enumerate() {
            out[192 + j] = s as u8;
        }
        write_f16(out, 208, self.d);
    }

    fn unpack(bytes: &[u8]) -> Self {
        let b = &bytes[..Self::BYTES];
        BlockQ6K {
            d: read_f16(b, 208),
            scales: std::array::from_fn(|j| b[192 + j] as i8),
            codes: std::array::from_fn(|e| {
                let (c, k, l) = (e / 128, (e % 128) / 32, e % 32);
                let lo = (b[64 * c + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 0xF;
                let hi = (b[128 + 32 * c + l] >> (2 * k)) & 3;
                (lo | (hi << 4)) as i8 - 32
            }),
        }
    }
}

// Packed sizes agree with the type table.
const _: () = assert!(<BlockQ2K as KQuantBlock>::BYTES == GgmlType::Q2_K.type_size());
const _: () = assert!(<BlockQ3K as KQuantBlock>::BYTES == GgmlType::Q3_K.type_size());
const _: () = assert!(<BlockQ4K as KQuantBlock>::BYTES == GgmlType::Q4_K.type_size());
const _: () = assert!(<BlockQ5K as KQuantBlock>::BYTES == GgmlType::Q5_K.type_size());
const _: () = assert!(<BlockQ6K as KQuantBlock>::BYTES == GgmlType::Q6_K.type_size());
const _: () = assert!(GgmlType::Q2_K.block_size() == QK_K);
const _: () = assert!(GgmlType::Q3_K.block_size() == QK_K);
const _: () = assert!(GgmlType::Q4_K.block_size() == QK_K);
const _: () = assert!(GgmlType::Q5_K.block_size() == QK_K);
const _: () = assert!(GgmlType::Q6_K.block_size() == QK_K);

// ------------------------------------------------------------------------------------------------
// Row decoding

fn dequantize_row_generic<B: KQuantBlock>(src: &[u8], dst: &mut [f32]) {
    assert!(
        dst.len() / QK_K * QK_K == dst.len() && src.len() == dst.len() / QK_K * B::BYTES,
        "{}: {} bytes cannot hold {} weights",
        B::TYPE,
        src.len(),
        dst.len()
    );
    for (bytes, out) in src.chunks_exact(B::BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        B::unpack(bytes).dequantize(out);
    }
}

/// Decode a row of Q2_K blocks, bit-exact with ggml's `dequantize_row_q2_K`.
///
/// # Panics
/// If `dst.len()` is not a multiple of 256 or `src` is not exactly its packed size.
pub fn dequantize_row_q2_k(src: &[u8], dst: &mut [f32]) {
    dequantize_row_generic::<BlockQ2K>(src, dst)
}

/// Decode a row of Q3_K blocks, bit-exact with ggml's `dequantize_row_q3_K`.
///
/// # Panics
/// If `dst.len()` is not a multiple of 256 or `src` is not exactly its packed size.
pub fn dequantize_row_q3_k(src: &[u8], dst: &mut [f32]) {
    dequantize_row_generic::<BlockQ3K>(src, dst)
}

/// Decode a row of Q4_K blocks, bit-exact with ggml's `dequantize_row_q4_K`.
///
/// # Panics
/// If `dst.len()` is not a multiple of 256 or `src` is not exactly its packed size.
pub fn dequantize_row_q4_k(src: &[u8], dst: &mut [f32]) {
    dequantize_row_generic::<BlockQ4K>(src, dst)
}

/// Decode a row of Q5_K blocks, bit-exact with ggml's `dequantize_row_q5_K`.
///
/// # Panics
/// If `dst.len()` is not a multiple of 256 or `src` is not exactly its packed size.
pub fn dequantize_row_q5_k(src: &[u8], dst: &mut [f32]) {
    dequantize_row_generic::<BlockQ5K>(src, dst)
}

/// Decode a row of Q6_K blocks, bit-exact with ggml's `dequantize_row_q6_K`.
///
/// # Panics
/// If `dst.len()` is not a multiple of 256 or `src` is not exactly its packed size.
pub fn dequantize_row_q6_k(src: &[u8], dst: &mut [f32]) {
    dequantize_row_generic::<BlockQ6K>(src, dst)
}

// ------------------------------------------------------------------------------------------------
// Quantisation

/// Ranges of one k-quant type, as plain numbers for the search.
#[derive(Clone, Copy)]
struct Spec {
    n_sub: usize,
    sub_len: usize,
    qlo: i32,
    qhi: i32,
    slo: i32,
    shi: i32,
    mhi: i32,
    has_min: bool,
}

impl Spec {
    fn of<B: KQuantBlock>() -> Spec {
        Spec {
            n_sub: B::SUB_BLOCKS,
            sub_len: B::SUB_BLOCK_LEN,
            qlo: B::CODE_MIN,
            qhi: B::CODE_MAX,
            slo: B::SCALE_MIN,
            shi: B::SCALE_MAX,
            mhi: B::MIN_MAX,
            has_min: B::HAS_MIN,
        }
    }
}

/// Round to the nearest integer (ties to even), saturating beyond ±2²²; NaN gives 0.
///
/// Adding 1.5·2²³ puts the integer part in the low mantissa bits; this is much cheaper than
/// `f32::round` (a libm call on baseline x86-64) in the quantiser's inner loops.
#[inline]
fn round_i32(v: f32) -> i32 {
    if v.is_nan() {
        return 0;
    }
    let v = v.clamp(-4_194_303.0, 4_194_303.0) + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Round-to-nearest code of `x` on the grid `a·q − b`, clamped to `qlo..=qhi` (0 when `a == 0`).
#[inline]
fn nearest_code(x: f32, a: f32, b: f32, qlo: i32, qhi: i32) -> i32 {
    if a == 0.0 {
        return 0i32.clamp(qlo, qhi);
    }
    round_i32((x + b) / a).clamp(qlo, qhi)
}

/// Like [`nearest_code`] but checked against the exact f32 decode of the neighbouring codes, so
/// the result is the best code for `x` under ggml's arithmetic.
#[inline]
fn best_code(x: f32, a: f32, b: f32, sp: &Spec) -> i32 {
    let q0 = nearest_code(x, a, b, sp.qlo, sp.qhi);
    let mut best = (q0, (x - decode(a, b, q0, sp.has_min)).abs());
    for q in [q0 - 1, q0 + 1] {
        if (sp.qlo..=sp.qhi).contains(&q) {
            let e = (x - decode(a, b, q, sp.has_min)).abs();
            if e < best.1 {
                best = (q, e);
            }
        }
    }
    best.0
}

/// Weighted squared error of one sub-block under effective scale `a` and min `b`, with codes
/// re-rounded to nearest, using ggml's exact decode arithmetic.
#[inline]
fn sub_error(x: &[f32], w: &[f32], a: f32, b: f32, sp: &Spec) -> f64 {
    // Multiplying by the reciprocal may round a near-tie the other way than dividing would;
    // both codes are then equally good up to f32 rounding, and the final pass uses `best_code`.
    // f32 lane accumulators (vectorised); sub-blocks are 16 or 32 weights.
    use crate::search::{clamp_fast, round_fast, LANES};
    let ia = if a == 0.0 { 0.0 } else { 1.0 / a };
    let (qlo, qhi) = (sp.qlo as f32, sp.qhi as f32);
    let mut acc = [0f32; LANES];
    for (xc, wc) in x.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
        for l in 0..LANES {
            let q = round_fast(clamp_fast((xc[l] + b) * ia, qlo, qhi));
            // ggml's decode: `a·q − b` (or `a·q`), in f32.
            let y = if sp.has_min { a * q - b } else { a * q };
            let e = xc[l] - y;
            acc[l] += wc[l] * e * e;
        }
    }
    acc.iter().map(|&v| v as f64).sum()
}

/// Weighted least squares `x ≈ s·q − m` with `s ≥ 0`, `m ≥ 0`, for fixed codes.
fn ls_affine(x: &[f32], w: &[f32], q: &[i32]) -> (f64, f64) {
    let (mut sw, mut swq, mut swq2, mut swx, mut swqx) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for ((&xi, &wi), &qi) in x.iter().zip(w).zip(q) {
        let (wi, xi, qi) = (wi as f64, xi as f64, qi as f64);
        sw += wi;
        swq += wi * qi;
        swq2 += wi * qi * qi;
        swx += wi * xi;
        swqx += wi * qi * xi;
    }
    let det = sw * swq2 - swq * swq;
    let (mut s, mut offset) = if det > 1e-12 * sw * swq2 && det > 0.0 {
        (
            (sw * swqx - swq * swx) / det,
            (swq2 * swx - swq * swqx) / det,
        )
    } else {
        (0.0, if sw > 0.0 { swx / sw } else { 0.0 })
    };
    if offset > 0.0 {
        offset = 0.0;
        s = if swq2 > 0.0 { swqx / swq2 } else { 0.0 };
    }
    if s < 0.0 {
        s = 0.0;
        offset = if sw > 0.0 { (swx / sw).min(0.0) } else { 0.0 };
    }
    (s, -offset)
}

fn cont_error(x: &[f32], w: &[f32], q: &[i32], s: f64, m: f64) -> f64 {
    x.iter()
        .zip(w)
        .zip(q)
        .map(|((&xi, &wi), &qi)| {
            let e = s * qi as f64 - m - xi as f64;
            wi as f64 * e * e
        })
        .sum()
}

/// Steps of the initial-scale grids of [`fit_affine`] and [`fit_symmetric`] (over ±1 level).
const FIT_STEPS: usize = 10;

/// Continuous per-sub-block fit `x ≈ s·q − m` (`q` in `0..=qmax`, `s, m ≥ 0`) minimising the
/// weighted squared error: a grid of initial step sizes, each refined by alternating
/// least squares and re-rounding.
fn fit_affine(x: &[f32], w: &[f32], qmax: i32) -> (f32, f32) {
    let lo = x.iter().copied().fold(0.0f32, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if hi <= lo {
        return (0.0, -lo);
    }
    let range = (hi - lo) as f64;
    let n = x.len();
    let mut q = [0i32; 32];
    let q = &mut q[..n];
    let mut best = (f64::INFINITY, range / qmax as f64, -lo as f64);
    for step in 0..=FIT_STEPS {
        let iscale = ((qmax as f64 - 1.0 + 2.0 * step as f64 / FIT_STEPS as f64) / range) as f32;
        for (qi, &xi) in q.iter_mut().zip(x) {
            *qi = round_i32((xi - lo) * iscale).clamp(0, qmax);
        }
        for _ in 0..3 {
            let (s, m) = ls_affine(x, w, q);
            if s <= 0.0 {
                break;
            }
            let err = cont_error(x, w, q, s, m);
            if err < best.0 {
                best = (err, s, m);
            }
            // Re-round against the refitted scale; stop when the codes no longer change.
            let (is, mf) = ((1.0 / s) as f32, m as f32);
            let mut changed = false;
            for (qi, &xi) in q.iter_mut().zip(x) {
                let nq = round_i32((xi + mf) * is).clamp(0, qmax);
                changed |= nq != *qi;
                *qi = nq;
            }
            if !changed {
                break;
            }
        }
    }
    (best.1 as f32, best.2 as f32)
}

/// Continuous per-sub-block fit `x ≈ s·q` (`q` in `qlo..=qhi`, `s` of either sign).
fn fit_symmetric(x: &[f32], w: &[f32], qlo: i32, qhi: i32) -> f32 {
    let xm = x
        .iter()
        .copied()
        .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    if xm == 0.0 {
        return 0.0;
    }
    let n = x.len();
    let mut q = [0i32; 32];
    let q = &mut q[..n];
    let mut best = (f64::INFINITY, (xm / qlo as f32) as f64);
    for target in [qlo, qhi] {
        let sign = target.signum() as f64;
        for step in 0..=FIT_STEPS {
            let t = target as f64 + sign * (-1.0 + 2.0 * step as f64 / FIT_STEPS as f64);
            let iscale = (t / xm as f64) as f32;
            for (qi, &xi) in q.iter_mut().zip(x) {
                *qi = round_i32(xi * iscale).clamp(qlo, qhi);
            }
            for _ in 0..3 {
                let (mut sxq, mut sqq) = (0.0f64, 0.0f64);
                for ((&xi, &wi), &qi) in x.iter().zip(w).zip(q.iter()) {
                    sxq += wi as f64 * xi as f64 * qi as f64;
                    sqq += wi as f64 * (qi * qi) as f64;
                }
                if sqq <= 0.0 || sxq == 0.0 {
                    break;
                }
                let s = sxq / sqq;
                // Error of the least-squares scale for these codes: Σwx² − (Σwxq)²/Σwq²,
                // ranked without the constant Σwx².
                let err = -sxq * sxq / sqq;
                if err < best.0 {
                    best = (err, s);
                }
                let is = (1.0 / s) as f32;
                let mut changed = false;
                for (qi, &xi) in q.iter_mut().zip(x) {
                    let nq = round_i32(xi * is).clamp(qlo, qhi);
                    changed |= nq != *qi;
                    *qi = nq;
                }
                if !changed {
                    break;
                }
            }
        }
    }
    best.1 as f32
}

/// f32 to f16 bits, saturating at the largest finite f16 instead of overflowing to infinity.
fn f16_sat(v: f32) -> u16 {
    f32_to_f16(v.clamp(-65504.0, 65504.0))
}

/// Candidate f16 super-scales for quantising `vals` (continuous sub-block scales or mins) to
/// integers in `lo..=hi`: the `keep` best by the surrogate `Σ c_j (v_j − d·round(v_j/d))²`
/// over a grid of levels for the largest-magnitude value, plus the plain `max/limit` choice.
fn super_scale_candidates(vals: &[f32], c: &[f64], lo: i32, hi: i32, keep: usize) -> Vec<u16> {
    let ext = vals
        .iter()
        .copied()
        .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    if ext == 0.0 {
        return vec![0];
    }
    let mut scored: Vec<(f64, u16)> = Vec::new();
    let mut try_level = |t: f64| {
        let bits = f16_sat((ext as f64 / t) as f32);
        let d = f16_to_f32(bits);
        if d == 0.0 || !d.is_finite() {
            return;
        }
        let sur: f64 = vals
            .iter()
            .zip(c)
            .map(|(&v, &cj)| {
                let l = round_i32(v / d).clamp(lo, hi);
                let e = v as f64 - d as f64 * l as f64;
                cj * e * e
            })
            .sum();
        scored.push((sur, bits));
    };
    const STEPS: usize = 120;
    for limit in [lo, hi] {
        if limit == 0 {
            continue;
        }
        let (top, sign) = (limit.unsigned_abs() as f64 + 0.45, limit.signum() as f64);
        let bottom = 0.5 * limit.unsigned_abs() as f64;
        for k in 0..=STEPS {
            try_level(sign * (top - (top - bottom) * k as f64 / STEPS as f64));
        }
        // Coarser, geometric levels below half the range: they matter when `ext / limit`
        // underflows f16 (tiny weights), where a larger integer scale on a subnormal `d` is
        // the only way to keep the sub-block non-zero.
        let mut t = bottom * 0.9;
        while t >= 1.0 {
            try_level(sign * t);
            t *= 0.9;
        }
    }
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<u16> = Vec::with_capacity(keep + 1);
    let plain = if ext > 0.0 && hi > 0 {
        ext / hi as f32
    } else {
        ext / lo as f32
    };
    out.push(f16_sat(plain));
    for &(_, bits) in &scored {
        if out.len() > keep {
            break;
        }
        if !out.contains(&bits) {
            out.push(bits);
        }
    }
    out
}

/// One candidate quantisation of a super-block: f16 super-scales and integer sub-scales/mins.
#[derive(Clone)]
struct State {
    d: u16,
    dmin: u16,
    ls: [i32; 16],
    lm: [i32; 16],
    err: [f64; 16],
}

impl State {
    fn total(&self, n_sub: usize) -> f64 {
        self.err[..n_sub].iter().sum()
    }
}

fn sub_params(d: f32, dmin: f32, ls: i32, lm: i32, has_min: bool) -> (f32, f32) {
    (d * ls as f32, if has_min { dmin * lm as f32 } else { 0.0 })
}

/// Integer candidates around the current value and the continuous target.
fn int_candidates(cur: i32, target: f32, lo: i32, hi: i32) -> ([i32; 5], usize) {
    let mut out = [0i32; 5];
    let mut n = 0;
    let t = if target.is_finite() {
        target.clamp(lo as f32, hi as f32)
    } else {
        cur as f32
    };
    for v in [cur, cur - 1, cur + 1, t.floor() as i32, t.ceil() as i32] {
        let v = v.clamp(lo, hi);
        if !out[..n].contains(&v) {
            out[n] = v;
            n += 1;
        }
    }
    (out, n)
}

/// Total block error for super-scales `(d, dmin)` with the state's integer sub-scales.
fn block_error(x: &[f32], w: &[f32], st: &State, d: u16, dmin: u16, sp: &Spec) -> [f64; 16] {
    let (df, mf) = (f16_to_f32(d), f16_to_f32(dmin));
    let mut err = [0.0f64; 16];
    for (j, e) in err.iter_mut().enumerate().take(sp.n_sub) {
        let r = j * sp.sub_len..(j + 1) * sp.sub_len;
        let (a, b) = sub_params(df, mf, st.ls[j], st.lm[j], sp.has_min);
        *e = sub_error(&x[r.clone()], &w[r], a, b, sp);
    }
    err
}

/// The starting state for super-scales `(d0, dm0)`: sub-scales/mins rounded from the
/// continuous fit, with its true block error.
fn start_state(x: &[f32], w: &[f32], s: &[f32], m: &[f32], d0: u16, dm0: u16, sp: &Spec) -> State {
    let mut st = State {
        d: d0,
        dmin: dm0,
        ls: [0; 16],
        lm: [0; 16],
        err: [0.0; 16],
    };
    {
        let (df, mf) = (f16_to_f32(d0), f16_to_f32(dm0));
        for j in 0..sp.n_sub {
            if df != 0.0 {
                st.ls[j] = round_i32(s[j] / df).clamp(sp.slo, sp.shi);
            }
            if sp.has_min && mf != 0.0 {
                st.lm[j] = round_i32(m[j] / mf).clamp(0, sp.mhi);
            }
        }
    }
    st.err = block_error(x, w, &st, st.d, st.dmin, sp);
    st
}

/// Coordinate descent on the true block error: alternately the integer sub-scales/mins of
/// each sub-block and the f16 super-scales, until nothing improves (at most 8 rounds).
fn descend(x: &[f32], w: &[f32], s: &[f32], m: &[f32], mut st: State, sp: &Spec) -> State {
    for _ in 0..8 {
        let mut changed = false;
        let (df, mf) = (f16_to_f32(st.d), f16_to_f32(st.dmin));

        // (a) Integer sub-block scales/mins, one sub-block at a time.
        for j in 0..sp.n_sub {
            let r = j * sp.sub_len..(j + 1) * sp.sub_len;
            let (xs, ws) = (&x[r.clone()], &w[r]);
            let (cs, ns) = int_candidates(st.ls[j], s[j] / df, sp.slo, sp.shi);
            let (cm, nm) = if sp.has_min {
                int_candidates(st.lm[j], m[j] / mf, 0, sp.mhi)
            } else {
                ([0; 5], 1)
            };
            // Scale first (min fixed), then min (scale fixed): 10 trials instead of 25.
            for &ls in &cs[..ns] {
                if ls == st.ls[j] {
                    continue;
                }
                let (a, b) = sub_params(df, mf, ls, st.lm[j], sp.has_min);
                let e = sub_error(xs, ws, a, b, sp);
                if e < st.err[j] {
                    st.err[j] = e;
                    st.ls[j] = ls;
                    changed = true;
                }
            }
            for &lm in &cm[..nm] {
                if lm == st.lm[j] {
                    continue;
                }
                let (a, b) = sub_params(df, mf, st.ls[j], lm, sp.has_min);
                let e = sub_error(xs, ws, a, b, sp);
                if e < st.err[j] {
                    st.err[j] = e;
                    st.lm[j] = lm;
                    changed = true;
                }
            }
        }

        // (b) Super-scales by least squares for the current codes, then f16 neighbours.
        let (mut suu, mut suv, mut svv, mut sux, mut svx) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
        for j in 0..sp.n_sub {
            let (a, b) = sub_params(df, mf, st.ls[j], st.lm[j], sp.has_min);
            let v = st.lm[j] as f64;
            for i in j * sp.sub_len..(j + 1) * sp.sub_len {
                let q = nearest_code(x[i], a, b, sp.qlo, sp.qhi);
                let u = (st.ls[j] * q) as f64;
                let wi = w[i] as f64;
                suu += wi * u * u;
                suv += wi * u * v;
                svv += wi * v * v;
                sux += wi * u * x[i] as f64;
                svx += wi * v * x[i] as f64;
            }
        }
        if suu > 0.0 {
            // Model x ≈ d·u − dmin·v.
            let mut dmin_new = mf as f64;
            let mut d_new = (sux + dmin_new * suv) / suu;
            if sp.has_min {
                let det = suu * svv - suv * suv;
                if det > 1e-12 * suu * svv && det > 0.0 {
                    let dd = (sux * svv - suv * svx) / det;
                    let dm = (suv * sux - suu * svx) / det;
                    if dm >= 0.0 {
                        d_new = dd;
                        dmin_new = dm;
                    }
                }
            }
            let db = f16_sat(d_new as f32);
            let mb = if sp.has_min {
                f16_sat(dmin_new as f32)
            } else {
                0
            };
            let mut cands = vec![(db, mb), (db.wrapping_add(1), mb), (db.wrapping_sub(1), mb)];
            if sp.has_min {
                cands.push((db, mb.wrapping_add(1)));
                cands.push((db, mb.wrapping_sub(1)));
            }
            let mut best_total = st.total(sp.n_sub);
            for (cd, cm) in cands {
                if (cd, cm) == (st.d, st.dmin)
                    || !f16_to_f32(cd).is_finite()
                    || !f16_to_f32(cm).is_finite()
                    || (sp.has_min && f16_to_f32(cm) < 0.0)
                {
                    continue;
                }
                let err = block_error(x, w, &st, cd, cm, sp);
                let total: f64 = err[..sp.n_sub].iter().sum();
                if total < best_total {
                    best_total = total;
                    st.d = cd;
                    st.dmin = cm;
                    st.err = err;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    st
}

/// Quantise one super-block of 256 weights with per-weight weights `w` (all finite, ≥ 0, not
/// all zero).
fn quantize_block_weighted<B: KQuantBlock>(x: &[f32], w: &[f32]) -> B {
    let sp = Spec::of::<B>();
    let mut s = [0f32; 16];
    let mut m = [0f32; 16];
    let mut cs = [0f64; 16];
    let mut cm = [0f64; 16];
    for j in 0..sp.n_sub {
        let r = j * sp.sub_len..(j + 1) * sp.sub_len;
        let (xs, ws) = (&x[r.clone()], &w[r]);
        if sp.has_min {
            (s[j], m[j]) = fit_affine(xs, ws, sp.qhi);
        } else {
            s[j] = fit_symmetric(xs, ws, sp.qlo, sp.qhi);
        }
        // Sensitivity of the sub-block error to its scale (Σ w q²) and min (Σ w).
        for (&xi, &wi) in xs.iter().zip(ws) {
            let q = nearest_code(xi, s[j], m[j], sp.qlo, sp.qhi) as f64;
            cs[j] += wi as f64 * q * q;
            cm[j] += wi as f64;
        }
    }
    let n = sp.n_sub;
    let d_starts = super_scale_candidates(&s[..n], &cs[..n], sp.slo, sp.shi, 3);
    let m_starts = if sp.has_min {
        super_scale_candidates(&m[..n], &cm[..n], 0, sp.mhi, 2)
    } else {
        vec![0]
    };
    // Score every start by its true error; descend from the two best.
    let mut starts: Vec<State> = Vec::with_capacity(d_starts.len() * m_starts.len());
    for &d0 in &d_starts {
        for &m0 in &m_starts {
            starts.push(start_state(x, w, &s, &m, d0, m0, &sp));
        }
    }
    starts.sort_by(|a, b| a.total(n).total_cmp(&b.total(n)));
    let st = starts
        .into_iter()
        .take(2)
        .map(|st| descend(x, w, &s, &m, st, &sp))
        .min_by(|a, b| a.total(n).total_cmp(&b.total(n)))
        .expect("at least one start");

    // Final pass: every code re-rounded against the quantised scales, exactly.
    let (df, mf) = (f16_to_f32(st.d), f16_to_f32(st.dmin));
    let mut codes = [0i32; QK_K];
    for (i, c) in codes.iter_mut().enumerate() {
        let j = i / sp.sub_len;
        let (a, b) = sub_params(df, mf, st.ls[j], st.lm[j], sp.has_min);
        *c = best_code(x[i], a, b, &sp);
    }
    B::from_parts(st.d, st.dmin, &st.ls[..n], &st.lm[..n], &codes)
}

/// The per-weight weights the search uses for one super-block: the importance (non-finite or
/// negative entries count as 0) plus a 10⁻⁶ relative floor so all-zero sub-blocks still get a
/// sensible fit; all ones without importance or if the block's importance is all zero.
fn block_weights(importance: Option<&[f32]>, out: &mut [f32; QK_K]) {
    out.fill(1.0);
    if let Some(imp) = importance {
        let clean = |v: f32| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        let mean = imp.iter().map(|&v| clean(v) as f64).sum::<f64>() / QK_K as f64;
        if mean > 0.0 && mean.is_finite() {
            let floor = (1e-6 * mean) as f32;
            for (o, &v) in out.iter_mut().zip(imp) {
                *o = clean(v) + floor;
            }
        }
    }
}

/// Quantise one super-block of 256 weights to the unpacked block `B`, minimising the
/// `importance`-weighted squared error (plain squared error when `None`).
///
/// # Panics
/// If `x` (or `importance`) does not have 256 entries.
pub fn quantize_block<B: KQuantBlock>(x: &[f32], importance: Option<&[f32]>) -> B {
    assert_eq!(x.len(), QK_K, "a super-block has {QK_K} weights");
    if let Some(imp) = importance {
        assert_eq!(imp.len(), QK_K, "one importance per weight");
    }
    let mut w = [0f32; QK_K];
    block_weights(importance, &mut w);
    quantize_block_weighted::<B>(x, &w)
}

fn quantize_row_generic<B: KQuantBlock>(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    assert!(
        src.len() / QK_K * QK_K == src.len() && dst.len() == src.len() / QK_K * B::BYTES,
        "{}: {} bytes cannot hold {} weights",
        B::TYPE,
        dst.len(),
        src.len()
    );
    if let Some(imp) = importance {
        assert_eq!(imp.len(), src.len(), "one importance per weight");
    }
    for (b, (x, out)) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(B::BYTES))
        .enumerate()
    {
        let imp = importance.map(|w| &w[b * QK_K..(b + 1) * QK_K]);
        quantize_block::<B>(x, imp).pack(out);
    }
}

/// Quantise a row to Q2_K (round-to-nearest with importance-weighted scale search).
///
/// `importance` (one non-negative weight per element, e.g. an imatrix row) weights the squared
/// error; `None` means uniform weights.
///
/// # Panics
/// If `src.len()` is not a multiple of 256, `dst` is not exactly the packed size, or
/// `importance` has a different length than `src`.
pub fn quantize_row_q2_k(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    quantize_row_generic::<BlockQ2K>(src, importance, dst)
}

/// Quantise a row to Q3_K; see [`quantize_row_q2_k`] for the arguments.
///
/// # Panics
/// As [`quantize_row_q2_k`].
pub fn quantize_row_q3_k(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    quantize_row_generic::<BlockQ3K>(src, importance, dst)
}

/// Quantise a row to Q4_K; see [`quantize_row_q2_k`] for the arguments.
///
/// # Panics
/// As [`quantize_row_q2_k`].
pub fn quantize_row_q4_k(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    quantize_row_generic::<BlockQ4K>(src, importance, dst)
}

/// Quantise a row to Q5_K; see [`quantize_row_q2_k`] for the arguments.
///
/// # Panics
/// As [`quantize_row_q2_k`].
pub fn quantize_row_q5_k(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    quantize_row_generic::<BlockQ5K>(src, importance, dst)
}

/// Quantise a row to Q6_K; see [`quantize_row_q2_k`] for the arguments.
///
/// # Panics
/// As [`quantize_row_q2_k`].
pub fn quantize_row_q6_k(src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    quantize_row_generic::<BlockQ6K>(src, importance, dst)
}

#[cfg(test)]
mod tests;

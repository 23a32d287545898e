//! The QuantEase (QE) block formats, **format version 3**: `QE{b}_{s}`, `b` code bits ∈
//! {2, 3, 4}, `s` outlier-pool bytes per 32-weight block ∈ {0, 1, 2}. Full specification:
//! `formats/SPEC.md`.
//!
//! # Row layout (a row of `p = 32·nb` weights, `nb·(2 + 4b + s)` bytes)
//!
//! ```text
//! [ block 0 | block 1 | … | block nb−1 ][ outlier pool: nb·s bytes ]
//! block (2 + 4b bytes) = u0, u1 (8-bit scale codes of weights 0..15 and 16..31)
//!                        + 32 b-bit codes, packed per bit width:
//!   b = 2: qs[8]            byte j bits 2k..2k+1 = code of weight j + 8k   (j < 8, k < 4)
//!   b = 3: qs[12]           a 96-bit LE bit stream: code i = bits 3i..3i+2 (eight codes
//!                           per 3 bytes: weights 8g..8g+7 in bytes 3g..3g+2)
//!   b = 4: qs[16]           byte j low nibble = weight j, high nibble = weight j + 16
//! pool = floor(nb·s/4) entries of (u16 LE column, f16 LE additive value h),
//!        used entries first with strictly increasing columns, unused = (0xFFFF, 0),
//!        then nb·s mod 4 zero bytes.
//! ```
//!
//! Value of weight `i` of block `k`: `S(u_{i/16})·T_b[c_i]` (f32 product, exact: at most 12
//! significant bits), plus `h` (f32 addition) if column `32k + i` has a pool entry. `S` is the
//! "e4m4" scale code ([`scale_value`]): `e = u >> 4, m = u & 15`,
//! `S(u) = (e == 0 ? m : (16 + m) << (e − 1))·2⁻²¹`; `T_b` is the format's level table
//! ([`QeFormat::table`], i8, ascending, symmetric).
//!
//! Code packing: 2-bit planes are a 64-bit broadcast and per-lane shifts by 0/2/4/6 (weights
//! come out in natural order); 3-bit codes are a bit stream (version 3; versions 1 and 2 had
//! 2-bit planes plus a mask of third bits), which AVX512-VBMI unpacks with one byte permute and
//! one `vpmultishiftqb`; 4-bit codes are Q4_0's nibble layout; levels are then one byte
//! shuffle of the table.
//!
//! # Row-level pool: one row at a time
//!
//! The outlier pool sits after *all* blocks of the row, so QE data can only be decoded a whole
//! row at a time: a buffer of two rows has the same length as one row of twice the width but a
//! different layout. Every function here takes exactly one row.

pub(crate) mod kernels;
mod rtn;

pub use kernels::{
    matmul, matmul_with, quantize_row_q8_0_activations, vec_dot_f32, vec_dot_f32_with,
    vec_dot_q8_0, vec_dot_q8_0_with, Kernel, BLOCK_Q8_0_BYTES,
};
pub use rtn::quantize_row_rtn;

use crate::error::FormatError;
use crate::float::{f16_to_f32, f32_to_f16};
use crate::types::GgmlType;

/// Weights per QE block.
pub const QK: usize = 32;
/// Weights per scale (sub-block): a block has two 8-bit scale codes.
pub const SUB: usize = 16;
/// GGUF type id of `QE2_0`, the first QE type (`200 + 3·(b − 2) + s`).
pub const QE_TYPE_FIRST: u32 = 200;
/// Number of QE types (ids `200..=208`).
pub const QE_TYPE_COUNT: usize = 9;
/// Widest row a QE tensor may have (pool columns are u16; 0xFFFF marks unused entries).
pub const MAX_WIDTH: usize = 65504;
/// Column of an unused pool entry.
pub const UNUSED_COLUMN: u16 = 0xFFFF;
/// Bytes of one pool entry (u16 column + f16 value).
pub const POOL_ENTRY_BYTES: usize = 4;
/// GGUF metadata key written (u32) when a file holds any QE tensor.
pub const FORMAT_VERSION_KEY: &str = "quantease.format_version";
/// Value of [`FORMAT_VERSION_KEY`] for the format described here. Readers refuse every other
/// value (the converter's `qe_version::check`).
pub const FORMAT_VERSION: u32 = 3;

/// Level table of the 2-bit formats.
pub const TABLE_2: [i8; 4] = [-127, -28, 28, 127];
/// Level table of the 3-bit formats.
pub const TABLE_3: [i8; 8] = [-127, -75, -40, -11, 11, 40, 75, 127];
/// Level table of the 4-bit formats.
pub const TABLE_4: [i8; 16] = [
    -127, -102, -79, -60, -43, -29, -16, -5, 5, 16, 29, 43, 60, 79, 102, 127,
];

/// `2⁻²¹`, the unit of the scale codes.
const SCALE_UNIT: f32 = 1.0 / (1u32 << 21) as f32;

/// Integer significand·2^exponent of `S(u)` in units of `2⁻²¹` (≤ 31·2¹⁴ = 507904).
const fn scale_units(u: u8) -> u32 {
    let (e, m) = ((u >> 4) as u32, (u & 15) as u32);
    if e == 0 {
        m
    } else {
        (16 + m) << (e - 1)
    }
}

/// `S(u)` for every code, `SCALES[u] = scale_value(u)`.
pub(crate) static SCALES: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut u = 0;
    while u < 256 {
        t[u] = scale_units(u as u8) as f32 * SCALE_UNIT;
        u += 1;
    }
    t
};

/// The scale `S(u)` of scale code `u` (exact in f32; 0 for `u = 0`, at most
/// `S(255) = 31·2⁻⁷ = 0.2421875`, strictly increasing in `u`).
#[inline]
pub fn scale_value(u: u8) -> f32 {
    SCALES[u as usize]
}

/// The scale code whose [`scale_value`] is nearest to `v`: `v ≤ 0` or NaN → 0,
/// `v ≥ S(255)` → 255, ties → the lower code.
pub fn scale_code(v: f32) -> u8 {
    if v.is_nan() || v <= 0.0 {
        return 0;
    }
    if v >= SCALES[255] {
        return 255;
    }
    // O(1) (the solver calls this for every sub-block candidate): in units of 2^−21, codes
    // 0..=16 are the integers and every octave [2^k, 2^(k+1)), k ≥ 4, holds 16 codes spaced
    // 2^(k−4) apart, code ((k − 4)·16 + m) for the multiple m ∈ [16, 32). All of it is exact in
    // f64 (t has 24 significant bits; dividing by a power of two and subtracting 0.5 are exact),
    // and `ceil(x − 0.5)` is round-half-down, i.e. ties to the lower code.
    let t = v as f64 * (1u64 << 21) as f64;
    let u = if t < 16.0 {
        (t - 0.5).ceil() as i64
    } else {
        let k = ((t.to_bits() >> 52) & 0x7ff) as i64 - 1023;
        let m = (t / ((k - 4) as f64).exp2() - 0.5).ceil() as i64;
        ((k - 4) << 4) + m
    };
    u.clamp(0, 255) as u8
}

/// One QE format: `bits` per code (2, 3 or 4) and `pool` bytes of outlier pool per block (0, 1
/// or 2). Functions taking a `QeFormat` return [`FormatError::BadQeFormat`] for other values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QeFormat {
    /// Code bits `b` ∈ {2, 3, 4}.
    pub bits: u8,
    /// Outlier-pool bytes per 32-weight block `s` ∈ {0, 1, 2}.
    pub pool: u8,
}

impl QeFormat {
    /// All nine formats in type-id order.
    pub const ALL: [QeFormat; QE_TYPE_COUNT] = [
        QeFormat { bits: 2, pool: 0 },
        QeFormat { bits: 2, pool: 1 },
        QeFormat { bits: 2, pool: 2 },
        QeFormat { bits: 3, pool: 0 },
        QeFormat { bits: 3, pool: 1 },
        QeFormat { bits: 3, pool: 2 },
        QeFormat { bits: 4, pool: 0 },
        QeFormat { bits: 4, pool: 1 },
        QeFormat { bits: 4, pool: 2 },
    ];

    /// The format with these parameters, if valid.
    pub const fn new(bits: u8, pool: u8) -> Option<QeFormat> {
        if bits >= 2 && bits <= 4 && pool <= 2 {
            Some(QeFormat { bits, pool })
        } else {
            None
        }
    }

    /// True if `bits` ∈ {2, 3, 4} and `pool` ∈ {0, 1, 2}.
    pub const fn is_valid(self) -> bool {
        QeFormat::new(self.bits, self.pool).is_some()
    }

    /// `Ok(self)` if valid, else [`FormatError::BadQeFormat`].
    pub fn check(self) -> Result<QeFormat, FormatError> {
        if self.is_valid() {
            Ok(self)
        } else {
            Err(FormatError::BadQeFormat {
                bits: self.bits,
                pool: self.pool,
            })
        }
    }

    /// The QE format of a type, or `None` for ggml's own types.
    pub fn from_type(ty: GgmlType) -> Option<QeFormat> {
        let i = ty.id().checked_sub(QE_TYPE_FIRST)? as usize;
        QeFormat::ALL.get(i).copied()
    }

    /// The GGUF type id `200 + 3·(b − 2) + s` (meaningful only for valid formats).
    pub const fn type_id(self) -> u32 {
        QE_TYPE_FIRST + 3 * (self.bits as u32).saturating_sub(2) + self.pool as u32
    }

    /// The type in the type table, or `None` for an invalid format.
    pub fn to_type(self) -> Option<GgmlType> {
        if self.is_valid() {
            GgmlType::from_id(self.type_id())
        } else {
            None
        }
    }

    /// Largest code `2^b − 1`.
    pub const fn max_code(self) -> u8 {
        ((1u16 << (self.bits & 7)) - 1) as u8
    }

    /// Bytes of a block without its pool share: `2 + 4b` (two scale codes + 32 b-bit codes).
    pub const fn block_bytes(self) -> usize {
        2 + 4 * self.bits as usize
    }

    /// ggml `type_size`: bytes per 32 weights including the pool share, `2 + 4b + s`.
    pub const fn type_size(self) -> usize {
        self.block_bytes() + self.pool as usize
    }

    /// Bits per weight, `8·(2 + 4b + s)/32`.
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / QK as f64
    }

    /// Bytes of a row of `p` weights (`p` a multiple of 32; other `p` count whole blocks only).
    pub const fn row_bytes(self, p: usize) -> usize {
        p / QK * self.type_size()
    }

    /// Outlier-pool entries of a row of `p` weights: `floor(nb·s/4)`.
    pub const fn capacity(self, p: usize) -> usize {
        p / QK * self.pool as usize / POOL_ENTRY_BYTES
    }

    /// The level table `T_b` (`2^b` entries, ascending, symmetric, `±127` at the ends). Empty for
    /// an invalid format.
    pub const fn table(self) -> &'static [i8] {
        match self.bits {
            2 => &TABLE_2,
            3 => &TABLE_3,
            4 => &TABLE_4,
            _ => &[],
        }
    }

    /// The level `T_b[c]` as f32. Only the low `b` bits of `c` count (as in the packing);
    /// 0 for an invalid format.
    #[inline]
    pub fn level(self, c: u8) -> f32 {
        let t = self.table();
        if t.is_empty() {
            0.0
        } else {
            t[c as usize & (t.len() - 1)] as f32
        }
    }

    /// All levels as f32, ascending (`T_b` in code order).
    pub fn levels(self) -> Vec<f32> {
        self.table().iter().map(|&t| t as f32).collect()
    }

    /// Decoded grid value of code `c` under scale `s` (normally `s = scale_value(u)`):
    /// `s·level(c)`, exactly as every decoder computes it.
    #[inline]
    pub fn value(self, s: f32, c: u8) -> f32 {
        s * self.level(c)
    }

    /// The code whose level is nearest to `y` (in level units, e.g. `x/s`); ties → the lower
    /// code; NaN → 0.
    #[inline]
    pub fn nearest_code(self, y: f32) -> u8 {
        let t = self.table();
        // Number of midpoints strictly below y (midpoints of i8 levels are exact in f32).
        t.windows(2)
            .filter(|w| y > 0.5 * (w[0] as f32 + w[1] as f32))
            .count() as u8
    }

    /// The code whose decoded value `value(s, c)` is nearest to `x`, compared exactly (the
    /// products `s·midpoint` are exact for every scale code's `s`); ties → the lower code.
    /// With `s = 0` every code decodes to 0 and the answer is 0.
    #[inline]
    pub fn best_code(self, s: f32, x: f32) -> u8 {
        if s == 0.0 {
            return 0;
        }
        let t = self.table();
        t.windows(2)
            .filter(|w| x > s * (0.5 * (w[0] as f32 + w[1] as f32)))
            .count() as u8
    }
}

fn qe_type(fmt: QeFormat) -> GgmlType {
    fmt.to_type().unwrap_or(GgmlType::QE2_0)
}

fn invalid(fmt: QeFormat, field: &'static str, index: usize, reason: String) -> FormatError {
    FormatError::InvalidField {
        ty: qe_type(fmt),
        field,
        index,
        reason,
    }
}

fn length_mismatch(fmt: QeFormat, what: &'static str, got: usize, expected: usize) -> FormatError {
    FormatError::LengthMismatch {
        ty: qe_type(fmt),
        what,
        got,
        expected,
    }
}

/// Check `fmt` and the row width `p`; returns the number of blocks.
fn check_width(fmt: QeFormat, p: usize) -> Result<usize, FormatError> {
    fmt.check()?;
    if !p.is_multiple_of(QK) {
        return Err(FormatError::NotBlockMultiple {
            ty: qe_type(fmt),
            len: p,
            block: QK,
        });
    }
    if p > MAX_WIDTH {
        return Err(invalid(
            fmt,
            "row width",
            0,
            format!("{p} weights exceeds the QE maximum {MAX_WIDTH} (pass one row at a time)"),
        ));
    }
    Ok(p / QK)
}

/// Pack 32 codes (each `< 2^bits`, higher bits ignored) into `out[..4·bits]` (layout in the
/// module docs).
pub(crate) fn pack_codes(bits: u8, codes: &[u8], out: &mut [u8]) {
    match bits {
        4 => crate::legacy::pack_nibbles(codes, out),
        3 => {
            // Eight codes per 24-bit little-endian group.
            for (g, o) in codes[..QK].chunks_exact(8).zip(out.chunks_exact_mut(3)) {
                let v = g
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, &c)| acc | (u32::from(c & 7) << (3 * i)));
                o.copy_from_slice(&v.to_le_bytes()[..3]);
            }
        }
        _ => {
            for j in 0..8 {
                out[j] = (0..4).fold(0u8, |acc, k| acc | ((codes[j + 8 * k] & 3) << (2 * k)));
            }
        }
    }
}

/// Inverse of [`pack_codes`]: the 32 codes of `qs[..4·bits]` into `codes[..32]`.
pub(crate) fn unpack_codes(bits: u8, qs: &[u8], codes: &mut [u8]) {
    match bits {
        4 => crate::legacy::unpack_nibbles(qs, codes),
        3 => {
            for (g, o) in qs[..12]
                .chunks_exact(3)
                .zip(codes[..QK].chunks_exact_mut(8))
            {
                let v = u32::from_le_bytes([g[0], g[1], g[2], 0]);
                for (i, c) in o.iter_mut().enumerate() {
                    *c = ((v >> (3 * i)) & 7) as u8;
                }
            }
        }
        _ => {
            for j in 0..8 {
                for k in 0..4 {
                    codes[j + 8 * k] = (qs[j] >> (2 * k)) & 3;
                }
            }
        }
    }
}

/// Walk a packed pool with full validation, calling `f(column, h)` for every used entry.
/// Returns the number of used entries.
fn parse_pool(
    fmt: QeFormat,
    pool: &[u8],
    p: usize,
    mut f: impl FnMut(usize, f32),
) -> Result<usize, FormatError> {
    let n = pool.len() / POOL_ENTRY_BYTES;
    let mut used = 0usize;
    let mut prev: Option<usize> = None;
    let mut unused_seen = false;
    for (e, ent) in pool.chunks_exact(POOL_ENTRY_BYTES).enumerate() {
        let col = u16::from_le_bytes([ent[0], ent[1]]);
        let hbits = u16::from_le_bytes([ent[2], ent[3]]);
        if col == UNUSED_COLUMN {
            if hbits != 0 {
                return Err(invalid(
                    fmt,
                    "outlier value",
                    e,
                    format!("unused pool entry has value bits {hbits:#06x}, must be 0"),
                ));
            }
            unused_seen = true;
            continue;
        }
        let col = col as usize;
        if unused_seen {
            return Err(invalid(
                fmt,
                "outlier column",
                e,
                format!("used entry (column {col}) after an unused one"),
            ));
        }
        if col >= p {
            return Err(invalid(
                fmt,
                "outlier column",
                e,
                format!("column {col} is outside the row of {p} weights"),
            ));
        }
        if let Some(pc) = prev {
            if col <= pc {
                return Err(invalid(
                    fmt,
                    "outlier column",
                    e,
                    format!("column {col} does not increase (previous {pc})"),
                ));
            }
        }
        let h = f16_to_f32(hbits);
        if !h.is_finite() {
            return Err(invalid(
                fmt,
                "outlier value",
                e,
                format!("value is not finite ({h})"),
            ));
        }
        prev = Some(col);
        used += 1;
        f(col, h);
    }
    if let Some(i) = pool[n * POOL_ENTRY_BYTES..].iter().position(|&b| b != 0) {
        return Err(invalid(
            fmt,
            "outlier pool padding",
            n * POOL_ENTRY_BYTES + i,
            "trailing pool bytes must be zero".into(),
        ));
    }
    Ok(used)
}

/// Pack one row: scale codes (`p/16` values, one per 16-weight sub-block, any byte), codes
/// (`p` values in `0..2^b`), and outliers `(column, h)` (at most [`QeFormat::capacity`]; any
/// order, distinct columns `< p`, `h` finite and within f16 range) into `out` (exactly
/// `fmt.row_bytes(p)` bytes).
///
/// `p = codes.len()` must be a multiple of 32 and at most [`MAX_WIDTH`]. Errors name the field.
pub fn encode_row(
    fmt: QeFormat,
    scale_codes: &[u8],
    codes: &[u8],
    outliers: &[(u16, f32)],
    out: &mut [u8],
) -> Result<(), FormatError> {
    let p = codes.len();
    let nb = check_row_lengths(fmt, p, scale_codes.len(), out.len())?;
    let cap = fmt.capacity(p);
    if outliers.len() > cap {
        return Err(invalid(
            fmt,
            "outliers",
            cap,
            format!("{} outliers exceed the row capacity {cap}", outliers.len()),
        ));
    }
    let max = fmt.max_code();
    if let Some(i) = codes.iter().position(|&c| c > max) {
        return Err(invalid(
            fmt,
            "code",
            i,
            format!("code {} exceeds {max}", codes[i]),
        ));
    }
    let mut pool: Vec<(u16, u16)> = Vec::with_capacity(outliers.len());
    for (e, &(col, h)) in outliers.iter().enumerate() {
        if col as usize >= p {
            return Err(invalid(
                fmt,
                "outliers",
                e,
                format!("column {col} is outside the row of {p} weights"),
            ));
        }
        let hb = f32_to_f16(h);
        if !f16_to_f32(hb).is_finite() {
            return Err(invalid(
                fmt,
                "outliers",
                e,
                format!("value {h} is not finite in f16"),
            ));
        }
        pool.push((col, hb));
    }
    pool.sort_unstable_by_key(|&(c, _)| c);
    if let Some(w) = pool.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(invalid(
            fmt,
            "outliers",
            w[0].0 as usize,
            format!("column {} appears twice", w[0].0),
        ));
    }

    let bb = fmt.block_bytes();
    let (blocks, pool_bytes) = out.split_at_mut(nb * bb);
    for ((blk, cs), us) in blocks
        .chunks_exact_mut(bb)
        .zip(codes.chunks_exact(QK))
        .zip(scale_codes.chunks_exact(2))
    {
        blk[0] = us[0];
        blk[1] = us[1];
        pack_codes(fmt.bits, cs, &mut blk[2..]);
    }
    pool_bytes.fill(0);
    for (e, ent) in pool_bytes.chunks_exact_mut(POOL_ENTRY_BYTES).enumerate() {
        let (c, hb) = pool.get(e).copied().unwrap_or((UNUSED_COLUMN, 0));
        ent[0..2].copy_from_slice(&c.to_le_bytes());
        ent[2..4].copy_from_slice(&hb.to_le_bytes());
    }
    Ok(())
}

/// The checks [`encode_row`] and [`decode_row`] share: a valid width `p`, one scale code per
/// 16 weights and a packed row of exactly [`QeFormat::row_bytes`]. Returns the number of blocks.
fn check_row_lengths(
    fmt: QeFormat,
    p: usize,
    n_scales: usize,
    n_bytes: usize,
) -> Result<usize, FormatError> {
    let nb = check_width(fmt, p)?;
    if n_scales != p / SUB {
        return Err(length_mismatch(fmt, "scale codes", n_scales, p / SUB));
    }
    if n_bytes != fmt.row_bytes(p) {
        return Err(length_mismatch(
            fmt,
            "packed row",
            n_bytes,
            fmt.row_bytes(p),
        ));
    }
    Ok(nb)
}

/// Unpack and validate one row of `codes.len()` weights: scale codes (`p/16`), codes (`p`) and
/// the used outlier entries `(column, h)` (cleared first), in pool order.
///
/// Rejects (naming the field): wrong lengths, pool columns `≥ p`, non-increasing columns, used
/// entries after unused ones, unused entries with a non-zero value, non-finite `h`, non-zero
/// trailing pool bytes. Every scale byte is valid (all 256 codes decode to finite scales).
pub fn decode_row(
    fmt: QeFormat,
    bytes: &[u8],
    scale_codes: &mut [u8],
    codes: &mut [u8],
    outliers: &mut Vec<(u16, f32)>,
) -> Result<(), FormatError> {
    let p = codes.len();
    let nb = check_row_lengths(fmt, p, scale_codes.len(), bytes.len())?;
    let bb = fmt.block_bytes();
    let (blocks, pool) = bytes.split_at(nb * bb);
    for ((blk, cs), us) in blocks
        .chunks_exact(bb)
        .zip(codes.chunks_exact_mut(QK))
        .zip(scale_codes.chunks_exact_mut(2))
    {
        us.copy_from_slice(&blk[..2]);
        unpack_codes(fmt.bits, &blk[2..], cs);
    }
    outliers.clear();
    parse_pool(fmt, pool, p, |c, h| outliers.push((c as u16, h)))?;
    Ok(())
}

/// Decode one row of `y.len()` weights to f32, validating it like [`decode_row`].
///
/// `y[j] = S(u_{j/16})·T_b[c_j]` (+ `h` if column `j` is in the pool).
pub fn dequantize_row(fmt: QeFormat, bytes: &[u8], y: &mut [f32]) -> Result<(), FormatError> {
    let p = y.len();
    let nb = check_width(fmt, p)?;
    if bytes.len() != fmt.row_bytes(p) {
        return Err(length_mismatch(
            fmt,
            "packed row",
            bytes.len(),
            fmt.row_bytes(p),
        ));
    }
    let bb = fmt.block_bytes();
    let (blocks, pool) = bytes.split_at(nb * bb);
    decode_blocks(fmt, blocks, y);
    parse_pool(fmt, pool, p, |c, h| y[c] += h)?;
    Ok(())
}

/// The grid values of `y.len()/32` blocks (no pool): `S(u)·T_b[c]`.
pub(crate) fn decode_blocks(fmt: QeFormat, blocks: &[u8], y: &mut [f32]) {
    let bb = fmt.block_bytes();
    let mut codes = [0u8; QK];
    for (blk, out) in blocks.chunks_exact(bb).zip(y.chunks_exact_mut(QK)) {
        unpack_codes(fmt.bits, &blk[2..], &mut codes);
        for (h, (o, cs)) in out
            .chunks_exact_mut(SUB)
            .zip(codes.chunks_exact(SUB))
            .enumerate()
        {
            let s = scale_value(blk[h]);
            for (o, &c) in o.iter_mut().zip(cs) {
                *o = fmt.value(s, c);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

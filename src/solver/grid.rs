//! One description for every grid the solver handles: a row is a sequence of super-blocks of
//! `len` weights, split into `n_sub` sub-blocks; weight `i` of sub-block `j` decodes to
//!
//! ```text
//!     (d · sc_j) · T[c_i]  −  (dmin · mn_j)          (the subtraction only when the type has a min)
//! ```
//!
//! with `T` the type's sorted level table, `c_i` a code index into it, `sc_j`/`mn_j` integer
//! sub-block scales/mins and `d`/`dmin` the super-block scales (f16 for ggml types). The legacy
//! types are the case `n_sub = 1`, `sc = 1` (and `mn = −1`, so `dmin` is Q4_1's additive `m`). All
//! products are evaluated in f32 exactly as ggml's decoders do, so [`Spec::value`] is bit-exact with
//! `dequantize_row` (tested).
//!
//! The QE formats (versions 2 and 3) have no super-block scale: a 32-weight block is two sub-blocks of
//! 16, each with an 8-bit scale code `u` (kept in `sc_j`, `d` unused and 1) decoding to
//! `S(u)·T_b[c]` with `S` the format's monotonic e4m4 scale map (`qe::scale_value`) and `T_b` its
//! non-uniform level table; the effective scale of sub-block `j` is then `S(sc_j)` instead of
//! `d·sc_j` ([`Spec::ab`]).

use quantease_formats::float::{f16_to_f32, f32_to_f16};
use quantease_formats::iq4::{IQ4NlBlock, IQ4XsBlock, KVALUES_IQ4NL};
use quantease_formats::kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, KQuantBlock};
use quantease_formats::legacy::{Q4_0Block, Q4_1Block, Q5_0Block, Q5_1Block, Q8_0Block};
use quantease_formats::qe::{self, QeFormat};
use quantease_formats::GgmlType;

/// Most sub-blocks of any supported type (Q2_K, Q3_K, Q6_K).
pub const MAX_SUB: usize = 16;

/// What the solver quantises to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A standard ggml block type (packed output is a valid ggml row).
    Ggml(GgmlType),
    /// The QuantEase paper's grid: per row, `2^bits` equally spaced levels spanning the row's
    /// min..max, kept fixed (f32, not a storable ggml type: for experiments).
    Uniform {
        /// Bits per weight (1..=8).
        bits: u32,
    },
    /// A QE block format (`QE{bits}_{pool}`, format version 3, see `formats/SPEC.md`): 32-weight
    /// blocks of two 16-weight sub-blocks, each with an 8-bit scale code `u` and values
    /// `S(u)·T_bits[c]` on the format's non-uniform level table, plus a per-row outlier pool of
    /// `floor(nb·pool/4)` additive f16 values (handled by the solver's outlier step, not here).
    Qe {
        /// Code bits (2, 3 or 4).
        bits: u8,
        /// Outlier-pool bytes per block (0, 1 or 2).
        pool: u8,
    },
}

/// Scales of one super-block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Super-block scale (an f16 value for ggml types; unused and 1 for QE grids).
    pub d: f32,
    /// Super-block min scale (Q4_1/Q5_1: the additive offset `m`; unused without a min).
    pub dmin: f32,
    /// Integer sub-block scales (QE grids: the 8-bit scale codes `u`, 0..=255).
    pub sc: [i32; MAX_SUB],
    /// Integer sub-block mins.
    pub mn: [i32; MAX_SUB],
}

/// The grid of one target type.
#[derive(Clone, Debug)]
pub struct Spec {
    /// What it describes.
    pub target: Target,
    /// Weights per super-block (the unit sharing `d`/`dmin`).
    pub len: usize,
    /// Sub-blocks per super-block.
    pub n_sub: usize,
    /// Weights per sub-block.
    pub sub_len: usize,
    /// Level table `T`, ascending.
    pub levels: Vec<f32>,
    /// True if `levels` are consecutive integers (O(1) nearest search).
    pub unit_levels: bool,
    /// Range of the integer sub-block scales (QE grids: of the scale codes).
    pub scale_range: (i32, i32),
    /// Range of the integer sub-block mins, if the type subtracts a min.
    pub min_range: Option<(i32, i32)>,
    /// Scales may be refitted (false for the fixed per-row uniform grid).
    pub refit: bool,
}

fn int_levels(lo: i32, hi: i32) -> Vec<f32> {
    (lo..=hi).map(|v| v as f32).collect()
}

impl Spec {
    /// The grid of a ggml type, or `None` if the solver does not handle it.
    pub fn for_type(ty: GgmlType) -> Option<Spec> {
        use GgmlType::*;
        if let Some(f) = QeFormat::from_type(ty) {
            return Spec::qe(f.bits, f.pool);
        }
        let legacy = |levels: Vec<f32>, unit: bool, min: bool| Spec {
            target: Target::Ggml(ty),
            len: 32,
            n_sub: 1,
            sub_len: 32,
            levels,
            unit_levels: unit,
            scale_range: (1, 1),
            min_range: min.then_some((-1, -1)),
            refit: true,
        };
        fn kq<B: KQuantBlock>(ty: GgmlType) -> Spec {
            Spec {
                target: Target::Ggml(ty),
                len: 256,
                n_sub: B::SUB_BLOCKS,
                sub_len: B::SUB_BLOCK_LEN,
                levels: int_levels(B::CODE_MIN, B::CODE_MAX),
                unit_levels: true,
                scale_range: (B::SCALE_MIN, B::SCALE_MAX),
                min_range: B::HAS_MIN.then_some((0, B::MIN_MAX)),
                refit: true,
            }
        }
        Some(match ty {
            Q4_0 => legacy(int_levels(-8, 7), true, false),
            Q5_0 => legacy(int_levels(-16, 15), true, false),
            Q8_0 => legacy(int_levels(-128, 127), true, false),
            Q4_1 => legacy(int_levels(0, 15), true, true),
            Q5_1 => legacy(int_levels(0, 31), true, true),
            IQ4_NL => legacy(
                KVALUES_IQ4NL.iter().map(|&v| v as f32).collect(),
                false,
                false,
            ),
            IQ4_XS => Spec {
                target: Target::Ggml(ty),
                len: 256,
                n_sub: 8,
                sub_len: 32,
                levels: KVALUES_IQ4NL.iter().map(|&v| v as f32).collect(),
                unit_levels: false,
                scale_range: (-32, 31),
                min_range: None,
                refit: true,
            },
            Q2_K => kq::<BlockQ2K>(ty),
            Q3_K => kq::<BlockQ3K>(ty),
            Q4_K => kq::<BlockQ4K>(ty),
            Q5_K => kq::<BlockQ5K>(ty),
            Q6_K => kq::<BlockQ6K>(ty),
            _ => return None,
        })
    }

    /// The QE grid `QE{bits}_{pool}` (format version 3): blocks of 32 weights in two sub-blocks
    /// of [`qe::SUB`] = 16, each with an 8-bit scale code (`sc_j`, range 0..=255, decoding to
    /// `qe::scale_value`), the format's level table `T_bits` (non-uniform, ascending, no zero), no
    /// min, no super-block scale (`d` = 1, unused). `None` unless bits ∈ 2..=4 and pool ∈ 0..=2.
    pub fn qe(bits: u8, pool: u8) -> Option<Spec> {
        let fmt = QeFormat::new(bits, pool)?;
        Some(Spec {
            target: Target::Qe { bits, pool },
            len: qe::QK,
            n_sub: qe::QK / qe::SUB,
            sub_len: qe::SUB,
            levels: fmt.levels(),
            unit_levels: false,
            scale_range: (0, 255),
            min_range: None,
            refit: true,
        })
    }

    /// The QE format (without pool: the block layout) if this is a QE grid.
    #[inline]
    pub fn qe_block_format(&self) -> Option<QeFormat> {
        match self.target {
            Target::Qe { bits, .. } => Some(QeFormat { bits, pool: 0 }),
            _ => None,
        }
    }

    /// Outliers a row of `p` weights can hold: `floor(nb·pool/4)` (0 for non-QE grids).
    pub fn outlier_capacity(&self, p: usize) -> usize {
        match self.target {
            Target::Qe { bits, pool } => QeFormat { bits, pool }.capacity(p),
            _ => 0,
        }
    }

    /// The per-row uniform grid with `bits` bits over a row of `p` weights.
    pub fn uniform(bits: u32, p: usize) -> Spec {
        Spec {
            target: Target::Uniform { bits },
            len: p,
            n_sub: 1,
            sub_len: p,
            levels: int_levels(0, (1i32 << bits) - 1),
            unit_levels: true,
            scale_range: (1, 1),
            min_range: Some((-1, -1)),
            refit: false,
        }
    }

    /// True if values subtract a min.
    #[inline]
    pub fn has_min(&self) -> bool {
        self.min_range.is_some()
    }

    /// True if `d`/`dmin` are stored as f16 (the ggml types).
    pub fn f16_scales(&self) -> bool {
        matches!(self.target, Target::Ggml(_))
    }

    /// True for the per-row uniform grid (its scales come from [`Spec::uniform_params`]).
    pub fn is_uniform(&self) -> bool {
        matches!(self.target, Target::Uniform { .. })
    }

    /// Packed bytes per super-block (0 for the uniform grid).
    pub fn block_bytes(&self) -> usize {
        match self.target {
            Target::Ggml(ty) => ty.type_size(),
            Target::Uniform { .. } => 0,
            Target::Qe { bits, .. } => QeFormat { bits, pool: 0 }.block_bytes(),
        }
    }

    /// Effective `(a, b)` of sub-block `j`: value = `a·T[c] − b` (QE grids: `a = S(sc_j)`).
    #[inline]
    pub fn ab(&self, pr: &Params, j: usize) -> (f32, f32) {
        if let Target::Qe { .. } = self.target {
            return (qe::scale_value(pr.sc[j].clamp(0, 255) as u8), 0.0);
        }
        let a = pr.d * pr.sc[j] as f32;
        let b = if self.has_min() {
            pr.dmin * pr.mn[j] as f32
        } else {
            0.0
        };
        (a, b)
    }

    /// Decoded value of code `c` given the sub-block's `(a, b)`, bit-exact with ggml.
    #[inline]
    pub fn value(&self, a: f32, b: f32, c: u8) -> f32 {
        let t = self.levels[c as usize];
        if self.has_min() {
            a * t - b
        } else {
            a * t
        }
    }

    /// The code whose decoded value is nearest to `beta` (`cur` when `a == 0`: all codes equal).
    #[inline]
    pub fn nearest(&self, a: f32, b: f32, beta: f32, cur: u8) -> u8 {
        if a == 0.0 || !a.is_finite() {
            return cur;
        }
        let t = (beta + b) / a;
        let n = self.levels.len();
        let idx = if self.unit_levels {
            // Clamp, then round half up by truncation (no libm call; NaN casts to 0).
            ((t - self.levels[0]).clamp(0.0, (n - 1) as f32) + 0.5) as usize
        } else {
            let k = self.levels.partition_point(|&l| l < t);
            if k == 0 {
                0
            } else if k == n {
                n - 1
            } else if t - self.levels[k - 1] <= self.levels[k] - t {
                k - 1
            } else {
                k
            }
        };
        // Check the neighbours under exact f32 decoding.
        let mut best = idx as u8;
        let mut err = (self.value(a, b, best) - beta).abs();
        for c in [idx.wrapping_sub(1), idx + 1] {
            if c < n {
                let e = (self.value(a, b, c as u8) - beta).abs();
                if e < err {
                    err = e;
                    best = c as u8;
                }
            }
        }
        best
    }

    /// Unpack one packed super-block into scales and code indices (QE grids: one block of the
    /// row, without the row's outlier pool).
    ///
    /// # Panics
    /// For the uniform grid (it has no packed form) or a too short `bytes`.
    pub fn unpack(&self, bytes: &[u8], codes: &mut [u8]) -> Params {
        let mut pr = Params {
            d: 0.0,
            dmin: 0.0,
            sc: [1; MAX_SUB],
            mn: [-1; MAX_SUB],
        };
        if let Some(fmt) = self.qe_block_format() {
            let mut u = [0u8; qe::QK / qe::SUB];
            let mut outl = Vec::new();
            qe::decode_row(
                fmt,
                &bytes[..fmt.block_bytes()],
                &mut u,
                &mut codes[..qe::QK],
                &mut outl,
            )
            .expect("every QE block without pool decodes");
            pr.d = 1.0;
            for (s, &v) in pr.sc.iter_mut().zip(&u) {
                *s = v as i32;
            }
            return pr;
        }
        let Target::Ggml(ty) = self.target else {
            panic!("the uniform grid has no packed form")
        };
        fn kq<B: KQuantBlock>(bytes: &[u8], pr: &mut Params, codes: &mut [u8]) {
            let b = B::unpack(bytes);
            pr.d = f16_to_f32(b.d_bits());
            pr.dmin = f16_to_f32(b.dmin_bits());
            for j in 0..B::SUB_BLOCKS {
                pr.sc[j] = b.scale(j);
                pr.mn[j] = b.min(j);
            }
            for (i, c) in codes.iter_mut().enumerate().take(256) {
                *c = (b.code(i) - B::CODE_MIN) as u8;
            }
        }
        use GgmlType::*;
        match ty {
            Q4_0 => {
                let b = Q4_0Block::unpack(bytes);
                pr.d = b.d();
                codes[..32].copy_from_slice(&b.codes);
            }
            Q5_0 => {
                let b = Q5_0Block::unpack(bytes);
                pr.d = b.d();
                codes[..32].copy_from_slice(&b.codes);
            }
            Q4_1 => {
                let b = Q4_1Block::unpack(bytes);
                pr.d = b.d();
                pr.dmin = b.m();
                codes[..32].copy_from_slice(&b.codes);
            }
            Q5_1 => {
                let b = Q5_1Block::unpack(bytes);
                pr.d = b.d();
                pr.dmin = b.m();
                codes[..32].copy_from_slice(&b.codes);
            }
            Q8_0 => {
                let b = Q8_0Block::unpack(bytes);
                pr.d = b.d();
                for (c, &v) in codes.iter_mut().zip(&b.codes) {
                    *c = (v as i32 + 128) as u8;
                }
            }
            IQ4_NL => {
                let b = IQ4NlBlock::unpack(bytes);
                pr.d = b.d();
                codes[..32].copy_from_slice(&b.codes);
            }
            IQ4_XS => {
                let b = IQ4XsBlock::unpack(bytes);
                pr.d = b.d();
                for j in 0..8 {
                    pr.sc[j] = b.scales[j] as i32;
                }
                codes[..256].copy_from_slice(&b.codes);
            }
            Q2_K => kq::<BlockQ2K>(bytes, &mut pr, codes),
            Q3_K => kq::<BlockQ3K>(bytes, &mut pr, codes),
            Q4_K => kq::<BlockQ4K>(bytes, &mut pr, codes),
            Q5_K => kq::<BlockQ5K>(bytes, &mut pr, codes),
            Q6_K => kq::<BlockQ6K>(bytes, &mut pr, codes),
            _ => unreachable!("Spec::for_type only builds supported types"),
        }
        pr
    }

    /// Pack one super-block (`codes.len() == self.len`) into `out[..self.block_bytes()]` (QE
    /// grids: one block of a row; the row's outlier pool is written by `qe::encode_row`).
    ///
    /// # Panics
    /// For the uniform grid, a too short `out`, or (QE grids) codes or scale codes out of range.
    pub fn pack(&self, pr: &Params, codes: &[u8], out: &mut [u8]) {
        if let Some(fmt) = self.qe_block_format() {
            let mut u = [0u8; qe::QK / qe::SUB];
            for (v, &s) in u.iter_mut().zip(&pr.sc) {
                *v = u8::try_from(s).expect("QE scale codes are 0..=255");
            }
            qe::encode_row(
                fmt,
                &u,
                &codes[..qe::QK],
                &[],
                &mut out[..fmt.block_bytes()],
            )
            .expect("QE codes are below 2^bits");
            return;
        }
        let Target::Ggml(ty) = self.target else {
            panic!("the uniform grid has no packed form")
        };
        let d = f32_to_f16(pr.d);
        let m = f32_to_f16(pr.dmin);
        let c32 = || -> [u8; 32] { codes[..32].try_into().expect("32 codes") };
        fn kq<B: KQuantBlock>(d: u16, m: u16, pr: &Params, codes: &[u8], out: &mut [u8]) {
            let ci: Vec<i32> = codes.iter().map(|&c| c as i32 + B::CODE_MIN).collect();
            let mn = if B::HAS_MIN {
                &pr.mn[..B::SUB_BLOCKS]
            } else {
                &[0; MAX_SUB][..B::SUB_BLOCKS]
            };
            B::from_parts(
                d,
                if B::HAS_MIN { m } else { 0 },
                &pr.sc[..B::SUB_BLOCKS],
                mn,
                &ci,
            )
            .pack(out);
        }
        use GgmlType::*;
        match ty {
            Q4_0 => Q4_0Block { d, codes: c32() }.pack(out),
            Q5_0 => Q5_0Block { d, codes: c32() }.pack(out),
            Q4_1 => Q4_1Block { d, m, codes: c32() }.pack(out),
            Q5_1 => Q5_1Block { d, m, codes: c32() }.pack(out),
            Q8_0 => Q8_0Block {
                d,
                codes: c32().map(|c| (c as i32 - 128) as i8),
            }
            .pack(out),
            IQ4_NL => IQ4NlBlock { d, codes: c32() }.pack(out),
            IQ4_XS => {
                let mut scales = [0i8; 8];
                for (s, &v) in scales.iter_mut().zip(&pr.sc) {
                    *s = v as i8;
                }
                IQ4XsBlock {
                    d,
                    scales,
                    codes: codes[..256].try_into().expect("256 codes"),
                }
                .pack(out)
            }
            Q2_K => kq::<BlockQ2K>(d, m, pr, codes, out),
            Q3_K => kq::<BlockQ3K>(d, m, pr, codes, out),
            Q4_K => kq::<BlockQ4K>(d, m, pr, codes, out),
            Q5_K => kq::<BlockQ5K>(d, m, pr, codes, out),
            Q6_K => kq::<BlockQ6K>(d, m, pr, codes, out),
            _ => unreachable!("Spec::for_type only builds supported types"),
        }
    }

    /// Scales of the uniform grid for a row: `2^bits` levels from min to max.
    pub fn uniform_params(&self, row: &[f32]) -> Params {
        let lo = row.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 0.0) };
        let n = (self.levels.len() - 1) as f32;
        Params {
            d: (hi - lo) / n,
            dmin: lo,
            sc: [1; MAX_SUB],
            mn: [-1; MAX_SUB],
        }
    }

    /// Round-to-nearest start for one super-block `x` with per-weight `importance`: the formats
    /// crate's weighted quantiser for ggml and QE types (`qe::quantize_row_rtn` on one block, no
    /// outliers); nearest level on the fixed row grid otherwise (`uniform` gives that grid).
    pub fn rtn_block(
        &self,
        x: &[f32],
        importance: Option<&[f32]>,
        uniform: Option<&Params>,
        codes: &mut [u8],
    ) -> Params {
        match self.target {
            Target::Ggml(ty) => {
                let mut buf = vec![0u8; ty.type_size()];
                quantease_formats::quantize_row(ty, x, importance, &mut buf)
                    .expect("finite inputs of block length were checked by the caller");
                self.unpack(&buf, codes)
            }
            Target::Qe { bits, .. } => {
                let fmt = QeFormat { bits, pool: 0 };
                let mut buf = [0u8; 18];
                let buf = &mut buf[..fmt.block_bytes()];
                qe::quantize_row_rtn(fmt, &x[..qe::QK], importance.map(|i| &i[..qe::QK]), buf)
                    .expect("finite inputs of block length were checked by the caller");
                self.unpack(buf, codes)
            }
            Target::Uniform { .. } => {
                let pr = *uniform.expect("uniform grid needs its row params");
                let (a, b) = self.ab(&pr, 0);
                for (c, &v) in codes.iter_mut().zip(x) {
                    *c = self.nearest(a, b, v, 0);
                }
                pr
            }
        }
    }

    /// Candidate storable values near a continuous scale `v` (f16 neighbours for ggml types).
    pub fn scale_candidates(&self, v: f32, out: &mut Vec<f32>) {
        if !v.is_finite() {
            return;
        }
        if self.f16_scales() {
            for b in quantease_formats::search::f16_neighbours(v, 1) {
                out.push(f16_to_f32(b));
            }
        } else {
            out.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const TYPES: [GgmlType; 12] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
    ];

    /// Deterministic xorshift values uniform in [−1, 1).
    fn uniform_pm1(mut s: u64) -> impl FnMut() -> f32 {
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
        }
    }

    #[test]
    fn unpack_value_pack_is_bit_exact_with_the_decoder() {
        let mut rnd = uniform_pm1(12345u64);
        for ty in TYPES {
            let spec = Spec::for_type(ty).unwrap();
            let x: Vec<f32> = (0..512).map(|_| rnd() * 0.1).collect();
            let mut bytes = vec![0u8; ty.row_bytes(512).unwrap() as usize];
            quantease_formats::quantize_row(ty, &x, None, &mut bytes).unwrap();
            let mut deq = vec![0f32; 512];
            quantease_formats::dequantize_row(ty, &bytes, &mut deq).unwrap();
            let bb = ty.type_size();
            let mut repacked = vec![0u8; bytes.len()];
            for (k, blk) in bytes.chunks_exact(bb).enumerate() {
                let mut codes = vec![0u8; spec.len];
                let pr = spec.unpack(blk, &mut codes);
                for i in 0..spec.len {
                    let (a, b) = spec.ab(&pr, i / spec.sub_len);
                    let v = spec.value(a, b, codes[i]);
                    assert_eq!(
                        v.to_bits(),
                        deq[k * spec.len + i].to_bits(),
                        "{ty} weight {i}"
                    );
                }
                spec.pack(&pr, &codes, &mut repacked[k * bb..(k + 1) * bb]);
            }
            assert_eq!(repacked, bytes, "{ty}: pack(unpack(b)) == b");
        }
    }

    #[test]
    fn qe_unpack_value_pack_is_bit_exact_with_the_decoder() {
        let mut rnd = uniform_pm1(777u64);
        let p = 512;
        for fmt in QeFormat::ALL {
            let ty = fmt.to_type().unwrap();
            let spec = Spec::for_type(ty).unwrap();
            assert_eq!((spec.len, spec.n_sub, spec.sub_len), (32, 2, 16), "{ty}");
            // Ordinary weights, a few large ones (pool), a block of tiny weights and a block
            // beyond the largest scale (clamped to code 255).
            let mut x: Vec<f32> = (0..p).map(|_| rnd() * 0.05).collect();
            x[37] = 0.9;
            x[300] = -1.3;
            for v in &mut x[64..96] {
                *v *= 1e-4;
            }
            for v in &mut x[128..160] {
                *v *= 1e4;
            }
            let mut bytes = vec![0u8; fmt.row_bytes(p)];
            qe::quantize_row_rtn(fmt, &x, None, &mut bytes).unwrap();
            let mut deq = vec![0f32; p];
            qe::dequantize_row(fmt, &bytes, &mut deq).unwrap();
            let mut u = vec![0u8; p / qe::SUB];
            let mut all = vec![0u8; p];
            let mut outl = Vec::new();
            qe::decode_row(fmt, &bytes, &mut u, &mut all, &mut outl).unwrap();
            assert!(
                u[128 / 16..160 / 16].iter().all(|&c| c == 255),
                "{ty}: {u:?}"
            );
            let mut h = vec![None; p];
            for &(j, v) in &outl {
                h[j as usize] = Some(v);
            }
            let bb = fmt.block_bytes();
            let nb = p / 32;
            let mut repacked = bytes.clone();
            repacked[..nb * bb].fill(0);
            for k in 0..nb {
                let mut codes = [0u8; 32];
                let pr = spec.unpack(&bytes[k * bb..(k + 1) * bb], &mut codes);
                assert_eq!(&codes[..], &all[k * 32..(k + 1) * 32], "{ty} block {k}");
                assert_eq!([pr.sc[0], pr.sc[1]], [u[2 * k] as i32, u[2 * k + 1] as i32]);
                for i in 0..32 {
                    let (a, b) = spec.ab(&pr, i / spec.sub_len);
                    let v = spec.value(a, b, codes[i]);
                    // The contract's formula, independently of `levels`.
                    let want =
                        qe::scale_value(u[2 * k + i / 16]) * fmt.table()[codes[i] as usize] as f32;
                    assert_eq!(v.to_bits(), want.to_bits(), "{ty} weight {}", 32 * k + i);
                    let v = h[32 * k + i].map_or(v, |hv| v + hv);
                    assert_eq!(
                        v.to_bits(),
                        deq[32 * k + i].to_bits(),
                        "{ty} weight {}",
                        32 * k + i
                    );
                }
                spec.pack(&pr, &codes, &mut repacked[k * bb..(k + 1) * bb]);
            }
            assert_eq!(repacked, bytes, "{ty}: pack(unpack(b)) == b");
        }
    }

    #[test]
    fn nearest_is_the_closest_decoded_value() {
        let qe_specs = QeFormat::ALL
            .iter()
            .map(|f| Spec::for_type(f.to_type().unwrap()).unwrap());
        for spec in TYPES
            .iter()
            .map(|&ty| Spec::for_type(ty).unwrap())
            .chain(qe_specs)
        {
            let ty = format!("{:?}", spec.target);
            for &(a, b) in &[(0.013f32, 0.0f32), (-0.02, 0.0), (0.011, -0.05), (0.5, 0.3)] {
                let b = if spec.has_min() { b } else { 0.0 };
                for k in -300..300 {
                    let beta = k as f32 * 0.0037;
                    let c = spec.nearest(a, b, beta, 0);
                    let best = (0..spec.levels.len())
                        .map(|c| (spec.value(a, b, c as u8) - beta).abs())
                        .fold(f32::INFINITY, f32::min);
                    assert_eq!(
                        (spec.value(a, b, c) - beta).abs(),
                        best,
                        "{ty} a={a} b={b} beta={beta}"
                    );
                    if let Target::Qe { bits, .. } = spec.target {
                        // The formats crate's own nearest level agrees (up to exact ties).
                        let f = QeFormat { bits, pool: 0 };
                        let c2 = f.nearest_code(beta / a);
                        let e2 = (spec.value(a, b, c2) - beta).abs();
                        assert!(e2 <= best * (1.0 + 1e-6) + 1e-9, "{ty} a={a} beta={beta}");
                    }
                }
            }
        }
    }
}

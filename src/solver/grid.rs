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
    /// A QE block format (`QE{bits}_{pool}`, see `formats/SPEC.md`): 32-weight blocks with an f16
    /// scale `d` and half-integer levels `d·(c − (2^bits − 1)/2)`, plus a per-row outlier pool of
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
    /// Super-block scale (an f16 value for ggml types).
    pub d: f32,
    /// Super-block min scale (Q4_1/Q5_1: the additive offset `m`; unused without a min).
    pub dmin: f32,
    /// Integer sub-block scales.
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
    /// Range of the integer sub-block scales.
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
            return Some(Spec::qe(f.bits, f.pool));
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

    /// The QE grid `QE{bits}_{pool}`: blocks of 32 weights, one f16 scale, half-integer levels
    /// `−(2^bits−1)/2 … +(2^bits−1)/2` (no zero), no min.
    pub fn qe(bits: u8, pool: u8) -> Spec {
        let n = 1i32 << bits;
        Spec {
            target: Target::Qe { bits, pool },
            len: 32,
            n_sub: 1,
            sub_len: 32,
            levels: (0..n).map(|c| c as f32 - (n - 1) as f32 / 2.0).collect(),
            unit_levels: true,
            scale_range: (1, 1),
            min_range: None,
            refit: true,
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

    /// True if `d`/`dmin` are stored as f16.
    pub fn f16_scales(&self) -> bool {
        matches!(self.target, Target::Ggml(_) | Target::Qe { .. })
    }

    /// Packed bytes per super-block (0 for the uniform grid).
    pub fn block_bytes(&self) -> usize {
        match self.target {
            Target::Ggml(ty) => ty.type_size(),
            Target::Uniform { .. } => 0,
            Target::Qe { bits, .. } => 2 + 4 * bits as usize,
        }
    }

    /// Effective `(a, b)` of sub-block `j`: value = `a·T[c] − b`.
    #[inline]
    pub fn ab(&self, pr: &Params, j: usize) -> (f32, f32) {
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

    /// Unpack one packed super-block into scales and code indices.
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

    /// Pack one super-block (`codes.len() == self.len`) into `out[..self.block_bytes()]`.
    ///
    /// # Panics
    /// For the uniform grid or a too short `out`.
    pub fn pack(&self, pr: &Params, codes: &[u8], out: &mut [u8]) {
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
    /// crate's weighted quantiser for ggml types; nearest level on the fixed row grid otherwise
    /// (`uniform` gives that grid).
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
            Target::Qe { .. } => self.qe_rtn_block(x, importance, codes),
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

    /// Weighted round-to-nearest on the QE grid for one 32-weight block: the formats crate's
    /// QE quantiser (`qe::quantize_row_rtn`, no outliers on a single block).
    fn qe_rtn_block(&self, x: &[f32], importance: Option<&[f32]>, codes: &mut [u8]) -> Params {
        let Target::Qe { bits, .. } = self.target else {
            unreachable!("QE grids only")
        };
        let fmt = QeFormat { bits, pool: 0 };
        let mut buf = [0u8; 18];
        let buf = &mut buf[..fmt.row_bytes(x.len())];
        qe::quantize_row_rtn(fmt, x, importance, buf)
            .expect("finite inputs of block length were checked by the caller");
        let mut d = [0f32; 1];
        let mut outl = Vec::new();
        qe::decode_row(fmt, buf, &mut d, &mut codes[..x.len()], &mut outl)
            .expect("the encoder writes valid rows");
        Params {
            d: d[0],
            dmin: 0.0,
            sc: [1; MAX_SUB],
            mn: [-1; MAX_SUB],
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

    #[test]
    fn unpack_value_pack_is_bit_exact_with_the_decoder() {
        let mut s = 12345u64;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
        };
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
    fn nearest_is_the_closest_decoded_value() {
        for ty in TYPES {
            let spec = Spec::for_type(ty).unwrap();
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
                }
            }
        }
    }
}

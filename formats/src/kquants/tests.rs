//! Tests of the k-quant blocks, decoders and quantisers, including the golden fixtures produced
//! by ggml's own `ggml-quants.c` (see `fixtures/golden/README.md`).

use super::*;
use std::path::PathBuf;

/// xorshift64* with Box–Muller gaussians: deterministic test data without extra dependencies.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
    fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i32
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    /// f16 bits of a random, finite, normal value of magnitude about 1e-4..1 and random sign.
    fn f16_bits(&mut self, signed: bool) -> u16 {
        let mag = 10f64.powf(-4.0 * self.uniform()) as f32;
        let v = if signed && self.next_u64() & 1 == 1 {
            -mag
        } else {
            mag
        };
        f32_to_f16(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Golden fixtures

const ROWS: usize = 8;
const COLS: usize = 512;

fn golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/golden")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn golden_f32(name: &str) -> Vec<f32> {
    golden(name)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Weighted RMSE `sqrt(Σ w e² / Σ w)` of a row; `w` is per column (`None`: all ones).
fn weighted_rmse(src: &[f32], deq: &[f32], w: Option<&[f32]>) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (&x, &y)) in src.iter().zip(deq).enumerate() {
        let wi = w.map_or(1.0, |w| w[i % w.len()] as f64);
        let e = x as f64 - y as f64;
        num += wi * e * e;
        den += wi;
    }
    (num / den).sqrt()
}

type DequantizeFn = fn(&[u8], &mut [f32]);
type QuantizeFn = fn(&[f32], Option<&[f32]>, &mut [u8]);

/// ggml's bytes decode to ggml's own dequantisation, bit for bit; unpack/pack reproduces them.
fn golden_decode<B: KQuantBlock>(dequantize: DequantizeFn) {
    for variant in ["ref", "imat"] {
        let bytes = golden(&format!("{}.{variant}.q", B::TYPE));
        let expect = golden_f32(&format!("{}.{variant}.deq.f32", B::TYPE));
        assert_eq!(bytes.len(), ROWS * COLS / QK_K * B::BYTES);
        assert_eq!(expect.len(), ROWS * COLS);
        let mut got = vec![0f32; ROWS * COLS];
        dequantize(&bytes, &mut got);
        for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
            assert_eq!(
                g.to_bits(),
                e.to_bits(),
                "{} {variant}: weight {i}: ours {g:e}, ggml {e:e}",
                B::TYPE
            );
        }
        let mut repacked = vec![0u8; B::BYTES];
        for (b, block) in bytes.chunks_exact(B::BYTES).enumerate() {
            let unpacked = B::unpack(block);
            unpacked.pack(&mut repacked);
            assert_eq!(repacked, block, "{} {variant}: block {b} repack", B::TYPE);
            for i in 0..QK_K {
                assert_eq!(
                    unpacked.value(i).to_bits(),
                    expect[b * QK_K + i].to_bits(),
                    "{} {variant}: value({i}) of block {b}",
                    B::TYPE
                );
            }
        }
    }
}

/// Our quantiser's weighted RMSE is ≤ ggml's on every golden row, without and with the imatrix
/// (weights: 1, resp. the imatrix). Returns `(ours, ggml)` over all rows for both variants.
fn golden_beats_ggml<B: KQuantBlock>(
    quantize: QuantizeFn,
    dequantize: DequantizeFn,
) -> [(f64, f64); 2] {
    let src = golden_f32(&format!("{}.src.f32", B::TYPE));
    let imatrix = golden_f32("imatrix.f32");
    assert_eq!(src.len(), ROWS * COLS);
    assert_eq!(imatrix.len(), COLS);
    let mut totals = [(0.0, 0.0); 2];
    for (v, (variant, imp)) in [("ref", None), ("imat", Some(&imatrix[..]))]
        .into_iter()
        .enumerate()
    {
        let ggml = golden_f32(&format!("{}.{variant}.deq.f32", B::TYPE));
        let mut ours = vec![0f32; ROWS * COLS];
        let mut packed = vec![0u8; COLS / QK_K * B::BYTES];
        for r in 0..ROWS {
            let row = &src[r * COLS..(r + 1) * COLS];
            quantize(row, imp, &mut packed);
            dequantize(&packed, &mut ours[r * COLS..(r + 1) * COLS]);
            let e_ours = weighted_rmse(row, &ours[r * COLS..(r + 1) * COLS], imp);
            let e_ggml = weighted_rmse(row, &ggml[r * COLS..(r + 1) * COLS], imp);
            println!(
                "{} {variant:4} row {r}: weighted RMSE ours {e_ours:.6e}  ggml {e_ggml:.6e}",
                B::TYPE
            );
            assert!(
                e_ours <= e_ggml,
                "{} {variant} row {r}: ours {e_ours:e} > ggml {e_ggml:e}",
                B::TYPE
            );
        }
        let e_ours = weighted_rmse(&src, &ours, imp);
        let e_ggml = weighted_rmse(&src, &ggml, imp);
        println!(
            "{} {variant:4} all rows: weighted RMSE ours {e_ours:.6e}  ggml {e_ggml:.6e}  ratio {:.3}",
            B::TYPE,
            e_ours / e_ggml
        );
        totals[v] = (e_ours, e_ggml);
    }
    totals
}

#[test]
fn golden_decode_q2_k() {
    golden_decode::<BlockQ2K>(dequantize_row_q2_k);
}
#[test]
fn golden_decode_q3_k() {
    golden_decode::<BlockQ3K>(dequantize_row_q3_k);
}
#[test]
fn golden_decode_q4_k() {
    golden_decode::<BlockQ4K>(dequantize_row_q4_k);
}
#[test]
fn golden_decode_q5_k() {
    golden_decode::<BlockQ5K>(dequantize_row_q5_k);
}
#[test]
fn golden_decode_q6_k() {
    golden_decode::<BlockQ6K>(dequantize_row_q6_k);
}

#[test]
fn quantiser_beats_ggml_q2_k() {
    golden_beats_ggml::<BlockQ2K>(quantize_row_q2_k, dequantize_row_q2_k);
}
#[test]
fn quantiser_beats_ggml_q3_k() {
    golden_beats_ggml::<BlockQ3K>(quantize_row_q3_k, dequantize_row_q3_k);
}
#[test]
fn quantiser_beats_ggml_q4_k() {
    golden_beats_ggml::<BlockQ4K>(quantize_row_q4_k, dequantize_row_q4_k);
}
#[test]
fn quantiser_beats_ggml_q5_k() {
    golden_beats_ggml::<BlockQ5K>(quantize_row_q5_k, dequantize_row_q5_k);
}
#[test]
fn quantiser_beats_ggml_q6_k() {
    golden_beats_ggml::<BlockQ6K>(quantize_row_q6_k, dequantize_row_q6_k);
}

// ---------------------------------------------------------------------------------------------
// Packing

fn random_block<B: KQuantBlock>(rng: &mut Rng) -> B {
    let d = rng.f16_bits(!B::HAS_MIN);
    let dmin = if B::HAS_MIN { rng.f16_bits(false) } else { 0 };
    let scales: Vec<i32> = (0..B::SUB_BLOCKS)
        .map(|_| rng.int(B::SCALE_MIN, B::SCALE_MAX))
        .collect();
    let mins: Vec<i32> = (0..B::SUB_BLOCKS).map(|_| rng.int(0, B::MIN_MAX)).collect();
    let codes: Vec<i32> = (0..QK_K)
        .map(|_| rng.int(B::CODE_MIN, B::CODE_MAX))
        .collect();
    B::from_parts(d, dmin, &scales, &mins, &codes)
}

fn pack_round_trip<B: KQuantBlock>() {
    let mut rng = Rng::new(B::TYPE.id() as u64);
    let mut buf = vec![0xAAu8; B::BYTES + 3];
    for _ in 0..200 {
        let block = random_block::<B>(&mut rng);
        block.pack(&mut buf);
        assert_eq!(
            &buf[B::BYTES..],
            &[0xAA; 3],
            "{}: wrote past BYTES",
            B::TYPE
        );
        let back = B::unpack(&buf);
        assert_eq!(back, block, "{}", B::TYPE);
        for j in 0..B::SUB_BLOCKS {
            assert_eq!(back.scale(j), block.scale(j));
            assert_eq!(back.min(j), if B::HAS_MIN { block.min(j) } else { 0 });
        }
    }
    // Every bit of the packed format is used: arbitrary bytes survive unpack → pack.
    for _ in 0..200 {
        let bytes = rng.bytes(B::BYTES);
        let mut again = vec![0u8; B::BYTES];
        B::unpack(&bytes).pack(&mut again);
        assert_eq!(again, bytes, "{}", B::TYPE);
    }
}

#[test]
fn pack_round_trip_all() {
    pack_round_trip::<BlockQ2K>();
    pack_round_trip::<BlockQ3K>();
    pack_round_trip::<BlockQ4K>();
    pack_round_trip::<BlockQ5K>();
    pack_round_trip::<BlockQ6K>();
}

/// `value`, `dequantize` and the row decoder agree, and `value` follows the documented formula.
fn value_consistency<B: KQuantBlock>(dequantize: DequantizeFn) {
    let mut rng = Rng::new(100 + B::TYPE.id() as u64);
    let blocks: Vec<B> = (0..4).map(|_| random_block::<B>(&mut rng)).collect();
    let mut bytes = vec![0u8; 4 * B::BYTES];
    for (b, block) in blocks.iter().enumerate() {
        block.pack(&mut bytes[b * B::BYTES..]);
    }
    let mut row = vec![0f32; 4 * QK_K];
    dequantize(&bytes, &mut row);
    for (b, block) in blocks.iter().enumerate() {
        for i in 0..QK_K {
            let j = i / B::SUB_BLOCK_LEN;
            let d = f16_to_f32(block.d_bits());
            let a = d * block.scale(j) as f32;
            let formula = if B::HAS_MIN {
                a * block.code(i) as f32 - f16_to_f32(block.dmin_bits()) * block.min(j) as f32
            } else {
                a * block.code(i) as f32
            };
            assert_eq!(block.value(i).to_bits(), formula.to_bits(), "{}", B::TYPE);
            assert_eq!(
                row[b * QK_K + i].to_bits(),
                formula.to_bits(),
                "{}",
                B::TYPE
            );
        }
    }
}

#[test]
fn value_matches_row_decoder() {
    value_consistency::<BlockQ2K>(dequantize_row_q2_k);
    value_consistency::<BlockQ3K>(dequantize_row_q3_k);
    value_consistency::<BlockQ4K>(dequantize_row_q4_k);
    value_consistency::<BlockQ5K>(dequantize_row_q5_k);
    value_consistency::<BlockQ6K>(dequantize_row_q6_k);
}

/// Hand-checked placement of single bits in the packed layouts.
#[test]
fn layout_spot_checks() {
    let zeros = [0i32; QK_K];
    // Q2_K: weight 128 + 32·1 + 5 = 165 is byte 16 + 32 + 5, bits 2–3.
    let mut codes = zeros;
    codes[165] = 3;
    let mut out = [0u8; 84];
    BlockQ2K::from_parts(0x3c00, 0, &[0; 16], &[0; 16], &codes).pack(&mut out);
    assert_eq!(out[16 + 32 + 5], 0b1100);
    // Q3_K: code −4 is stored as 0 (high bit clear), code 0 as 4 (high bit set).
    let mut codes = [0i32; QK_K];
    codes[130] = -4; // c = 1, k = 0, r = 2: hmask[2] bit 4 clear
    let mut out = [0u8; 110];
    BlockQ3K::from_parts(0x3c00, 0, &[-32; 16], &[], &codes).pack(&mut out);
    assert_eq!(out[2] & (1 << 4), 0);
    assert_eq!(out[3] & (1 << 4), 1 << 4);
    assert_eq!(&out[96..108], &[0u8; 12]); // scale −32 is stored as 0
                                           // Q5_K: weight 200 (sub-block 6) has its fifth bit in qh[200 % 32] bit 6.
    let mut codes = zeros;
    codes[200] = 16;
    let mut out = [0u8; 176];
    BlockQ5K::from_parts(0x3c00, 0, &[1; 8], &[0; 8], &codes).pack(&mut out);
    assert_eq!(out[16 + 200 % 32], 1 << 6);
    // Q6_K: scale bytes are plain i8, d is the last two bytes.
    let mut out = [0u8; 210];
    let mut scales = [0i32; 16];
    scales[3] = -7;
    BlockQ6K::from_parts(0xabcd, 0, &scales, &[], &[0; QK_K]).pack(&mut out);
    assert_eq!(out[192 + 3], (-7i8) as u8);
    assert_eq!(&out[208..], &[0xcd, 0xab]);
}

// ---------------------------------------------------------------------------------------------
// Quantiser properties

fn for_all_types(mut f: impl FnMut(GgmlType, QuantizeFn, DequantizeFn)) {
    f(GgmlType::Q2_K, quantize_row_q2_k, dequantize_row_q2_k);
    f(GgmlType::Q3_K, quantize_row_q3_k, dequantize_row_q3_k);
    f(GgmlType::Q4_K, quantize_row_q4_k, dequantize_row_q4_k);
    f(GgmlType::Q5_K, quantize_row_q5_k, dequantize_row_q5_k);
    f(GgmlType::Q6_K, quantize_row_q6_k, dequantize_row_q6_k);
}

#[test]
fn zero_rows_decode_to_zero() {
    for_all_types(|ty, quantize, dequantize| {
        let src = vec![0f32; 2 * QK_K];
        let imp: Vec<f32> = (0..src.len()).map(|i| (i % 7) as f32).collect();
        for importance in [None, Some(&imp[..])] {
            let mut packed = vec![0xFFu8; 2 * ty.type_size()];
            quantize(&src, importance, &mut packed);
            let mut back = vec![1f32; src.len()];
            dequantize(&packed, &mut back);
            assert!(back.iter().all(|&v| v == 0.0), "{ty}: {back:?}");
        }
    });
}

#[test]
fn gaussian_error_bounds() {
    // RMSE relative to σ for N(0, 1) weights. This quantiser achieves 0.258, 0.143, 0.069,
    // 0.034 and 0.016; the bounds leave ~40 % headroom and catch gross regressions (the
    // comparison with ggml itself is in the golden tests).
    let bounds = [
        (GgmlType::Q2_K, 0.36),
        (GgmlType::Q3_K, 0.19),
        (GgmlType::Q4_K, 0.095),
        (GgmlType::Q5_K, 0.048),
        (GgmlType::Q6_K, 0.024),
    ];
    let mut rng = Rng::new(7);
    let src: Vec<f32> = (0..16 * QK_K).map(|_| rng.normal()).collect();
    let mut errors = Vec::new();
    for_all_types(|ty, quantize, dequantize| {
        let mut packed = vec![0u8; 16 * ty.type_size()];
        quantize(&src, None, &mut packed);
        let mut back = vec![0f32; src.len()];
        dequantize(&packed, &mut back);
        let e = weighted_rmse(&src, &back, None);
        let bound = bounds.iter().find(|b| b.0 == ty).unwrap().1;
        println!("{ty}: N(0,1) RMSE {e:.5} (bound {bound})");
        assert!(e < bound, "{ty}: RMSE {e} ≥ {bound}");
        errors.push(e);
    });
    assert!(errors.windows(2).all(|w| w[0] > w[1]), "{errors:?}");
}

/// After quantisation no single code can be changed to lower the weighted error: the codes are
/// re-rounded against the final quantised scales.
#[test]
fn codes_are_optimal_for_final_scales() {
    fn check<B: KQuantBlock>(rng: &mut Rng) {
        let x: Vec<f32> = (0..QK_K)
            .map(|i| rng.normal() * (0.01 + (i / 32) as f32 * 0.02) + 0.003)
            .collect();
        let imp: Vec<f32> = (0..QK_K).map(|_| rng.normal().exp()).collect();
        for importance in [None, Some(&imp[..])] {
            let block = quantize_block::<B>(&x, importance);
            for (i, &xi) in x.iter().enumerate() {
                let err = |v: f32| (xi as f64 - v as f64).abs();
                let cur = err(block.value(i));
                let j = i / B::SUB_BLOCK_LEN;
                for q in B::CODE_MIN..=B::CODE_MAX {
                    let v = if B::HAS_MIN {
                        block.sub_scale(j) * q as f32 - block.sub_min(j)
                    } else {
                        block.sub_scale(j) * q as f32
                    };
                    assert!(
                        cur <= err(v),
                        "{}: weight {i}: code {} worse than {q}",
                        B::TYPE,
                        block.code(i)
                    );
                }
            }
        }
    }
    let mut rng = Rng::new(11);
    check::<BlockQ2K>(&mut rng);
    check::<BlockQ3K>(&mut rng);
    check::<BlockQ4K>(&mut rng);
    check::<BlockQ5K>(&mut rng);
    check::<BlockQ6K>(&mut rng);
}

/// Quantising with the importance lowers the importance-weighted error compared with
/// quantising without it (on the golden rows and imatrix).
#[test]
fn importance_lowers_weighted_error() {
    let imatrix = golden_f32("imatrix.f32");
    for_all_types(|ty, quantize, dequantize| {
        let src = golden_f32(&format!("{ty}.src.f32"));
        let mut packed = vec![0u8; src.len() / QK_K * ty.type_size()];
        let mut with = vec![0f32; src.len()];
        let mut without = vec![0f32; src.len()];
        let imp: Vec<f32> = (0..src.len()).map(|i| imatrix[i % COLS]).collect();
        quantize(&src, Some(&imp), &mut packed);
        dequantize(&packed, &mut with);
        quantize(&src, None, &mut packed);
        dequantize(&packed, &mut without);
        let (e_with, e_without) = (
            weighted_rmse(&src, &with, Some(&imatrix)),
            weighted_rmse(&src, &without, Some(&imatrix)),
        );
        println!("{ty}: imatrix-weighted RMSE with {e_with:.5e}, without {e_without:.5e}");
        assert!(e_with < e_without, "{ty}: {e_with} ≥ {e_without}");
    });
}

#[test]
fn round_i32_matches_round_ties_even() {
    let mut rng = Rng::new(9);
    for _ in 0..10_000 {
        let v = rng.normal() * 10f32.powi(rng.int(-3, 6));
        assert_eq!(round_i32(v), v.round_ties_even() as i32, "{v}");
    }
    for (v, r) in [
        (0.5f32, 0),
        (1.5, 2),
        (-2.5, -2),
        (-0.49999997, 0),
        (1e9, 4_194_303),
    ] {
        assert_eq!(round_i32(v), r, "{v}");
    }
    assert_eq!(round_i32(f32::NAN), 0);
    assert_eq!(round_i32(f32::NEG_INFINITY), -4_194_303);
}

#[test]
fn dispatch_and_length_checks() {
    use crate::{can_dequantize, can_quantize, dequantize_row, quantize_row, FormatError};
    let mut rng = Rng::new(3);
    let src: Vec<f32> = (0..2 * QK_K).map(|_| rng.normal()).collect();
    for_all_types(|ty, quantize, dequantize| {
        assert!(can_dequantize(ty) && can_quantize(ty));
        let mut direct = vec![0u8; 2 * ty.type_size()];
        quantize(&src, None, &mut direct);
        let mut via = vec![0u8; 2 * ty.type_size()];
        quantize_row(ty, &src, None, &mut via).unwrap();
        assert_eq!(direct, via, "{ty}");
        let mut a = vec![0f32; src.len()];
        let mut b = vec![0f32; src.len()];
        dequantize(&direct, &mut a);
        dequantize_row(ty, &direct, &mut b).unwrap();
        assert_eq!(a, b);
        assert!(matches!(
            dequantize_row(ty, &direct[1..], &mut b),
            Err(FormatError::LengthMismatch { .. })
        ));
        assert!(matches!(
            quantize_row(ty, &src[..100], None, &mut via),
            Err(FormatError::NotBlockMultiple { .. })
        ));
    });
}

/// Degenerate importance (zeros, NaN, negative, huge) and extreme magnitudes still give finite
/// blocks; a block whose importance is all zero is quantised as if unweighted.
#[test]
fn degenerate_inputs() {
    let mut rng = Rng::new(21);
    let x: Vec<f32> = (0..QK_K).map(|_| rng.normal()).collect();
    let mut imp: Vec<f32> = (0..QK_K).map(|i| (i % 5) as f32).collect();
    imp[3] = f32::NAN;
    imp[4] = -1.0;
    imp[9] = f32::INFINITY;
    imp[10] = 1e30;
    let zero_imp = vec![0f32; QK_K];
    for_all_types(|ty, quantize, dequantize| {
        let mut packed = vec![0u8; ty.type_size()];
        let mut back = vec![0f32; QK_K];
        for scale in [1e-30f32, 1e-3, 1.0, 1e4, 1e7] {
            let xs: Vec<f32> = x.iter().map(|v| v * scale).collect();
            quantize(&xs, Some(&imp), &mut packed);
            dequantize(&packed, &mut back);
            assert!(back.iter().all(|v| v.is_finite()), "{ty} at scale {scale}");
        }
        quantize(&x, Some(&zero_imp), &mut packed);
        let mut plain = vec![0u8; ty.type_size()];
        quantize(&x, None, &mut plain);
        assert_eq!(
            packed, plain,
            "{ty}: all-zero importance should act as uniform"
        );
        // Weights that are only representable at the top of the f16 range still decode close.
        let big: Vec<f32> = x.iter().map(|v| v * 1e4).collect();
        quantize(&big, None, &mut packed);
        dequantize(&packed, &mut back);
        let rel = weighted_rmse(&big, &back, None) / 1e4;
        assert!(rel < 0.4, "{ty}: relative RMSE {rel} at 1e4");
    });
}

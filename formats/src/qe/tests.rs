use super::*;
use crate::float::f32_to_f16;

/// Deterministic xorshift generator.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform() as f64, self.uniform() as f64);
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Random valid row contents: scale codes (any byte, biased towards realistic magnitudes),
/// codes, sorted outliers (f16-exact h).
pub(crate) fn random_row(
    fmt: QeFormat,
    p: usize,
    rng: &mut Rng,
) -> (Vec<u8>, Vec<u8>, Vec<(u16, f32)>) {
    let scale_codes: Vec<u8> = (0..p / SUB)
        .map(|_| {
            if rng.below(4) == 0 {
                rng.below(256) as u8
            } else {
                // Around S ≈ 0.02/127 (weights of a few hundredths).
                (110 + rng.below(40)) as u8
            }
        })
        .collect();
    let codes: Vec<u8> = (0..p)
        .map(|_| rng.below(fmt.max_code() as usize + 1) as u8)
        .collect();
    let cap = fmt.capacity(p);
    let n_out = if cap == 0 { 0 } else { rng.below(cap + 1) };
    let mut cols: Vec<u16> = Vec::new();
    while cols.len() < n_out {
        let c = rng.below(p) as u16;
        if !cols.contains(&c) {
            cols.push(c);
        }
    }
    cols.sort_unstable();
    let outliers = cols
        .into_iter()
        .map(|c| (c, f16_to_f32(f32_to_f16(rng.normal() * 0.3))))
        .collect();
    (scale_codes, codes, outliers)
}

#[test]
fn formats_ids_sizes_and_tables() {
    for (i, f) in QeFormat::ALL.iter().enumerate() {
        let ty = f.to_type().unwrap();
        assert_eq!(ty.id(), 200 + i as u32);
        assert_eq!(QeFormat::from_type(ty), Some(*f));
        assert_eq!(ty.type_size(), f.type_size());
        assert_eq!(ty.row_bytes(576), Some(f.row_bytes(576) as u64));
        assert_eq!(f.bits_per_weight(), ty.bits_per_weight());
        // Tables: 2^b entries, ascending, symmetric, ±127 at the ends.
        let t = f.table();
        assert_eq!(t.len(), 1 << f.bits);
        assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
        assert!((0..t.len()).all(|c| t[c] == -t[t.len() - 1 - c]), "{t:?}");
        assert_eq!((t[0], t[t.len() - 1]), (-127, 127));
        assert_eq!(f.levels(), t.iter().map(|&v| v as f32).collect::<Vec<_>>());
        for c in 0..=f.max_code() {
            assert_eq!(f.level(c), t[c as usize] as f32);
            assert_eq!(f.value(0.5, c), 0.5 * t[c as usize] as f32);
        }
    }
    assert_eq!(QeFormat { bits: 2, pool: 1 }.table(), &[-127, -28, 28, 127]);
    assert_eq!(
        QeFormat { bits: 3, pool: 0 }.table(),
        &[-127, -75, -40, -11, 11, 40, 75, 127]
    );
    assert_eq!(
        QeFormat { bits: 4, pool: 2 }.table(),
        &[-127, -102, -79, -60, -43, -29, -16, -5, 5, 16, 29, 43, 60, 79, 102, 127]
    );
    assert!(QeFormat { bits: 5, pool: 0 }.table().is_empty());
    assert_eq!(QeFormat { bits: 5, pool: 0 }.level(3), 0.0);
    assert_eq!(QeFormat::from_type(GgmlType::Q4_0), None);
    let f = QeFormat { bits: 2, pool: 1 };
    assert_eq!(f.capacity(576), 4); // 18 blocks · 1 byte / 4
    assert_eq!(QeFormat { bits: 3, pool: 2 }.capacity(576), 9);
    assert_eq!(QeFormat { bits: 3, pool: 0 }.capacity(576), 0);
    assert!(QeFormat { bits: 5, pool: 0 }.check().is_err());
    assert!(QeFormat { bits: 3, pool: 3 }.to_type().is_none());
    assert_eq!(FORMAT_VERSION, 3);
    assert_eq!(SUB, 16);
}

#[test]
fn scale_codes_decode_exactly() {
    let unit = (-21f32).exp2();
    assert_eq!(scale_value(0), 0.0);
    assert_eq!(scale_value(1), unit);
    assert_eq!(scale_value(15), 15.0 * unit);
    assert_eq!(scale_value(16), 16.0 * unit);
    assert_eq!(scale_value(17), 17.0 * unit);
    assert_eq!(scale_value(32), 32.0 * unit);
    assert_eq!(scale_value(0x25), (16.0 + 5.0) * 2.0 * unit);
    assert_eq!(scale_value(255), 31.0 * (-7f32).exp2());
    assert_eq!(scale_value(255), 0.2421875);
    for u in 0..=255u8 {
        let (e, m) = ((u >> 4) as i32, (u & 15) as f64);
        let want = if e == 0 {
            m
        } else {
            (16.0 + m) * 2f64.powi(e - 1)
        } * 2f64.powi(-21);
        assert_eq!(scale_value(u) as f64, want, "u = {u}");
        if u > 0 {
            assert!(scale_value(u) > scale_value(u - 1), "not increasing at {u}");
        }
        // Every value·level product is exact in f32 (≤ 12 significant bits).
        for t in TABLE_4.iter().chain(&TABLE_3).chain(&TABLE_2) {
            assert_eq!(
                (scale_value(u) * *t as f32) as f64,
                scale_value(u) as f64 * *t as f64
            );
        }
    }
}

#[test]
fn scale_code_matches_a_search_over_all_codes() {
    // Oracle: the nearest of the 256 values by exact f64 distance, ties to the lower code.
    let oracle = |v: f32| -> u8 {
        if v.is_nan() || v <= 0.0 {
            return 0;
        }
        let mut best = 0u8;
        for u in 1..=255u8 {
            let (d_best, d_u) = (
                (v as f64 - scale_value(best) as f64).abs(),
                (v as f64 - scale_value(u) as f64).abs(),
            );
            if d_u < d_best {
                best = u;
            }
        }
        best
    };
    let mut rng = Rng(0x5eed_0f5c_a1e5_0001);
    for _ in 0..200_000 {
        // Log-uniform over 2^−26 .. 2^2, plus the exact values and midpoints below.
        let v = (rng.uniform() * 28.0 - 26.0).exp2();
        assert_eq!(scale_code(v), oracle(v), "{v:e}");
    }
    for u in 0..255u8 {
        let (a, b) = (scale_value(u), scale_value(u + 1));
        for v in [a, b, (a + b) * 0.5, f32::from_bits(a.to_bits() + 1)] {
            assert_eq!(scale_code(v), oracle(v), "{v:e} near code {u}");
        }
    }
}

#[test]
fn scale_code_is_the_nearest_with_ties_to_the_lower_code() {
    for u in 0..=255u8 {
        assert_eq!(scale_code(scale_value(u)), u);
    }
    for u in 0..255u8 {
        let (a, b) = (scale_value(u) as f64, scale_value(u + 1) as f64);
        let mid = ((a + b) / 2.0) as f32; // exact: both are multiples of 2^-21 below 2^-2
        assert_eq!(mid as f64, (a + b) / 2.0);
        assert_eq!(scale_code(mid), u, "tie between {u} and {}", u + 1);
        assert_eq!(scale_code(f32::from_bits(mid.to_bits() + 1)), u + 1);
        assert_eq!(scale_code(f32::from_bits(mid.to_bits() - 1)), u);
    }
    for v in [
        0.0f32,
        -0.0,
        -1.0,
        f32::NAN,
        -f32::INFINITY,
        1e-30,
        f32::MIN_POSITIVE,
    ] {
        assert_eq!(scale_code(v), 0, "{v}");
    }
    for v in [0.2421875f32, 0.25, 1.0, 1e30, f32::INFINITY, f32::MAX] {
        assert_eq!(scale_code(v), 255, "{v}");
    }
    // Brute force on random magnitudes.
    let mut rng = Rng(8);
    for _ in 0..20000 {
        let v = (rng.uniform() * 24.0 - 23.0).exp2();
        let want = (0..=255u8)
            .min_by(|&a, &b| {
                let da = (scale_value(a) as f64 - v as f64).abs();
                let db = (scale_value(b) as f64 - v as f64).abs();
                da.total_cmp(&db).then(a.cmp(&b))
            })
            .unwrap();
        assert_eq!(scale_code(v), want, "{v}");
    }
}

#[test]
fn nearest_code_and_best_code_match_brute_force() {
    let mut rng = Rng(0x5eed);
    for fmt in [
        QeFormat { bits: 2, pool: 0 },
        QeFormat { bits: 3, pool: 0 },
        QeFormat { bits: 4, pool: 0 },
    ] {
        let t = fmt.table();
        let brute = |y: f64| -> u8 {
            (0..t.len())
                .min_by(|&a, &b| {
                    (t[a] as f64 - y)
                        .abs()
                        .total_cmp(&(t[b] as f64 - y).abs())
                        .then(a.cmp(&b))
                })
                .unwrap() as u8
        };
        // Levels, midpoints (ties → lower code) and their neighbours.
        for (c, w) in t.windows(2).enumerate() {
            let c = c as u8;
            let mid = 0.5 * (w[0] as f32 + w[1] as f32);
            assert_eq!(fmt.nearest_code(w[0] as f32), c);
            assert_eq!(fmt.nearest_code(w[1] as f32), c + 1);
            assert_eq!(fmt.nearest_code(mid), c, "{fmt:?} tie at {mid}");
            assert_eq!(fmt.nearest_code(mid.next_down()), c);
            assert_eq!(
                fmt.nearest_code(mid.next_up()),
                c + 1,
                "{fmt:?} above {mid}"
            );
        }
        assert_eq!(fmt.nearest_code(1e9), fmt.max_code());
        assert_eq!(fmt.nearest_code(-1e9), 0);
        assert_eq!(fmt.nearest_code(f32::NAN), 0);
        for _ in 0..5000 {
            let y = (rng.uniform() - 0.5) * 300.0;
            assert_eq!(fmt.nearest_code(y), brute(y as f64), "{fmt:?} y={y}");
            // best_code: the exact nearest decoded value s·T[c] to x.
            let u = rng.below(256) as u8;
            let s = scale_value(u);
            let x = (rng.uniform() - 0.5) * 300.0 * s;
            let c = fmt.best_code(s, x);
            if s == 0.0 {
                assert_eq!(c, 0);
                continue;
            }
            let want = (0..t.len())
                .min_by(|&a, &b| {
                    let da = (s as f64 * t[a] as f64 - x as f64).abs();
                    let db = (s as f64 * t[b] as f64 - x as f64).abs();
                    da.total_cmp(&db).then(a.cmp(&b))
                })
                .unwrap() as u8;
            assert_eq!(c, want, "{fmt:?} u={u} x={x}");
        }
        // An exact tie between two decoded values goes to the lower code.
        let s = scale_value(77);
        let x = s * 0.5 * (t[1] as f32 + t[2] as f32);
        assert_eq!(fmt.best_code(s, x), 1);
    }
}

#[test]
fn encode_decode_round_trip() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for fmt in QeFormat::ALL {
        for p in [32, 96, 576, 1536] {
            let (scales, codes, outliers) = random_row(fmt, p, &mut rng);
            let mut bytes = vec![0u8; fmt.row_bytes(p)];
            encode_row(fmt, &scales, &codes, &outliers, &mut bytes).unwrap();
            let (mut s2, mut c2, mut o2) = (vec![0u8; p / SUB], vec![0u8; p], Vec::new());
            decode_row(fmt, &bytes, &mut s2, &mut c2, &mut o2).unwrap();
            assert_eq!(
                (&s2, &c2, &o2),
                (&scales, &codes, &outliers),
                "{fmt:?} p={p}"
            );

            // Dequantised values follow the formula exactly.
            let mut y = vec![0f32; p];
            dequantize_row(fmt, &bytes, &mut y).unwrap();
            let mut want: Vec<f32> = (0..p)
                .map(|j| scale_value(scales[j / SUB]) * fmt.table()[codes[j] as usize] as f32)
                .collect();
            for &(c, h) in &outliers {
                want[c as usize] += h;
            }
            assert_eq!(y, want, "{fmt:?} p={p}");

            // The unchecked kernel decoder agrees on valid rows.
            let mut y2 = vec![0f32; p];
            kernels::to_float_unchecked(fmt, &bytes, &mut y2);
            assert_eq!(y2, want);

            // Re-encoding gives the same bytes (outliers in any order).
            let mut rev = outliers.clone();
            rev.reverse();
            let mut bytes2 = vec![0u8; bytes.len()];
            encode_row(fmt, &scales, &codes, &rev, &mut bytes2).unwrap();
            assert_eq!(bytes, bytes2);
        }
    }
}

#[test]
fn bit_level_layout_and_value_formula() {
    // QE2_0: bytes 0, 1 = scale codes of weights 0..15 and 16..31; then byte j bits 2k..2k+1 =
    // weight j + 8k.
    let fmt = QeFormat { bits: 2, pool: 0 };
    let mut row = vec![0u8; 10];
    row[0] = 16; // S = 2^-17
    row[1] = 0x21; // e = 2, m = 1: S = 17·2·2^-21
    row[2] = 0b11_10_01_00; // weights 0, 8, 16, 24 = codes 0, 1, 2, 3
    row[9] = 0b00_00_00_11; // weight 7 = code 3
    let mut y = [0f32; 32];
    dequantize_row(fmt, &row, &mut y).unwrap();
    let (s0, s1) = (16.0 * (-21f32).exp2(), 34.0 * (-21f32).exp2());
    assert_eq!(
        [y[0], y[8], y[16], y[24], y[7], y[1], y[31]],
        [
            -127.0 * s0,
            -28.0 * s0,
            28.0 * s1,
            127.0 * s1,
            127.0 * s0,
            -127.0 * s0,
            -127.0 * s1
        ]
    );

    // QE3_1: code i is bits 3i..3i+2 of the 12 code bytes (a little-endian bit stream).
    let fmt = QeFormat { bits: 3, pool: 1 };
    // One block: 14 bytes + 1 pool byte (capacity 0: the byte is padding).
    let mut row = vec![0u8; 15];
    row[0] = 255;
    row[1] = 1;
    row[2] = 0b101; // weight 0: code 5
    row[13] = 0b100 << 5; // weight 31: bits 93..95 = bits 5..7 of code byte 11: code 4
    let mut y = [0f32; 32];
    dequantize_row(fmt, &row, &mut y).unwrap();
    assert_eq!(y[0], 0.2421875 * 40.0); // code 5
    assert_eq!(y[31], (-21f32).exp2() * 11.0); // code 4
    assert_eq!(y[1], 0.2421875 * -127.0); // code 0
    assert_eq!(y[16], (-21f32).exp2() * -127.0);

    // QE4_2 with 2 blocks: nibbles as Q4_0; pool of 1 entry (4 bytes) at the end.
    let fmt = QeFormat { bits: 4, pool: 2 };
    let mut row = vec![0u8; 2 * 20];
    row[0] = 0x70; // (16 + 0)·2^6·2^-21 = 2^-11
    row[1] = 0x70;
    row[2] = 0xF0; // weight 0 code 0, weight 16 code 15
    row[18] = 0x80; // block 1, weights 0..15: 2^-10
    row[19] = 0; // weights 16..31: S = 0
    let pool = 36;
    row[pool..pool + 2].copy_from_slice(&40u16.to_le_bytes());
    row[pool + 2..pool + 4].copy_from_slice(&f32_to_f16(-3.0).to_le_bytes());
    let mut y = [0f32; 64];
    dequantize_row(fmt, &row, &mut y).unwrap();
    assert_eq!(y[0], -127.0 / 2048.0);
    assert_eq!(y[16], 127.0 / 2048.0);
    assert_eq!(y[40], -127.0 / 1024.0 - 3.0);
    assert_eq!(y[41], -127.0 / 1024.0);
    assert_eq!(y[50], 0.0);
}

fn expect_field(r: Result<(), FormatError>, field: &str) {
    match r {
        Err(FormatError::InvalidField { field: f, .. }) if f == field => {}
        other => panic!("expected invalid {field}, got {other:?}"),
    }
}

#[test]
fn decoder_validation_names_the_field() {
    let fmt = QeFormat { bits: 3, pool: 2 };
    let p = 128; // 4 blocks, pool 8 bytes = 2 entries
    let (scales, codes, _) = random_row(fmt, p, &mut Rng(9));
    let mut good = vec![0u8; fmt.row_bytes(p)];
    encode_row(fmt, &scales, &codes, &[(5, 1.0), (70, -2.0)], &mut good).unwrap();
    let pool = 4 * 14;
    let mut y = vec![0f32; p];
    dequantize_row(fmt, &good, &mut y).unwrap();
    let set_col = |b: &mut Vec<u8>, e: usize, c: u16| {
        b[pool + 4 * e..pool + 4 * e + 2].copy_from_slice(&c.to_le_bytes())
    };
    let set_h = |b: &mut Vec<u8>, e: usize, h: u16| {
        b[pool + 4 * e + 2..pool + 4 * e + 4].copy_from_slice(&h.to_le_bytes())
    };

    let mut b = good.clone();
    set_col(&mut b, 1, 128);
    expect_field(dequantize_row(fmt, &b, &mut y), "outlier column");
    let mut b = good.clone();
    set_col(&mut b, 1, 5);
    expect_field(dequantize_row(fmt, &b, &mut y), "outlier column");
    let mut b = good.clone();
    set_col(&mut b, 0, 0xFFFF);
    set_h(&mut b, 0, 0);
    expect_field(dequantize_row(fmt, &b, &mut y), "outlier column"); // used after unused
    let mut b = good.clone();
    set_h(&mut b, 0, 0x7C00); // +inf
    expect_field(dequantize_row(fmt, &b, &mut y), "outlier value");
    let mut b = good.clone();
    set_h(&mut b, 1, 0x7E00); // NaN
    expect_field(dequantize_row(fmt, &b, &mut y), "outlier value");
    let mut b = good.clone();
    set_col(&mut b, 1, 0xFFFF); // unused with a value
    expect_field(dequantize_row(fmt, &b, &mut y), "outlier value");
    // Every scale byte is valid (no scale validation in version 2).
    let mut b = good.clone();
    b[0] = 0xFF;
    b[1] = 0x00;
    dequantize_row(fmt, &b, &mut y).unwrap();
    assert!(y.iter().all(|v| v.is_finite()));

    // Trailing pool padding (nb·s mod 4 ≠ 0): QE3_1 with 3 blocks has 3 pool bytes, 0 entries.
    let f1 = QeFormat { bits: 3, pool: 1 };
    let mut b = vec![0u8; f1.row_bytes(96)];
    let mut y96 = vec![0f32; 96];
    dequantize_row(f1, &b, &mut y96).unwrap();
    *b.last_mut().unwrap() = 1;
    expect_field(dequantize_row(f1, &b, &mut y96), "outlier pool padding");

    // decode_row reports the same errors.
    let mut b = good.clone();
    set_col(&mut b, 1, 200);
    let (mut s, mut c, mut o) = (vec![0u8; p / SUB], vec![0u8; p], Vec::new());
    match decode_row(fmt, &b, &mut s, &mut c, &mut o) {
        Err(e @ FormatError::InvalidField { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("QE3_2") && msg.contains("outlier column"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Lengths and widths.
    assert!(matches!(
        dequantize_row(fmt, &good[1..], &mut y),
        Err(FormatError::LengthMismatch { .. })
    ));
    assert!(matches!(
        dequantize_row(fmt, &good, &mut y[..100]),
        Err(FormatError::NotBlockMultiple { .. })
    ));
    let wide = 65536;
    let mut yw = vec![0f32; wide];
    expect_field(
        dequantize_row(fmt, &vec![0u8; fmt.row_bytes(wide)], &mut yw),
        "row width",
    );
    assert!(matches!(
        dequantize_row(QeFormat { bits: 1, pool: 0 }, &[], &mut []),
        Err(FormatError::BadQeFormat { bits: 1, pool: 0 })
    ));
}

#[test]
fn encoder_validation_names_the_field() {
    let fmt = QeFormat { bits: 2, pool: 1 };
    let p = 256; // capacity 2
    let scales = vec![100u8; p / SUB];
    let codes = vec![1u8; p];
    let mut out = vec![0u8; fmt.row_bytes(p)];
    let mut bad_codes = codes.clone();
    bad_codes[17] = 4;
    expect_field(encode_row(fmt, &scales, &bad_codes, &[], &mut out), "code");
    let three = [(1u16, 1.0f32), (2, 1.0), (3, 1.0)];
    expect_field(
        encode_row(fmt, &scales, &codes, &three, &mut out),
        "outliers",
    );
    expect_field(
        encode_row(fmt, &scales, &codes, &[(256, 1.0)], &mut out),
        "outliers",
    );
    expect_field(
        encode_row(fmt, &scales, &codes, &[(3, 1.0), (3, 2.0)], &mut out),
        "outliers",
    );
    expect_field(
        encode_row(fmt, &scales, &codes, &[(3, f32::INFINITY)], &mut out),
        "outliers",
    );
    assert!(matches!(
        encode_row(fmt, &scales[1..], &codes, &[], &mut out),
        Err(FormatError::LengthMismatch {
            what: "scale codes",
            ..
        })
    ));
    assert!(matches!(
        encode_row(fmt, &scales, &codes, &[], &mut out[1..]),
        Err(FormatError::LengthMismatch { .. })
    ));
    // Unused entries are (0xFFFF, 0).
    encode_row(fmt, &scales, &codes, &[(9, 0.5)], &mut out).unwrap();
    let pool = &out[8 * 10..];
    assert_eq!(&pool[4..8], &[0xFF, 0xFF, 0, 0]);
    assert_eq!(u16::from_le_bytes([pool[0], pool[1]]), 9);
}

fn weighted_rel_err(x: &[f32], y: &[f32], w: Option<&[f32]>) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for i in 0..x.len() {
        let wi = w.map_or(1.0, |w| w[i] as f64);
        num += wi * ((x[i] - y[i]) as f64).powi(2);
        den += wi * (x[i] as f64).powi(2);
    }
    (num / den).sqrt()
}

/// Heavy-tailed test row: N(0, 0.02²) with 1 % of entries ×15.
pub(crate) fn heavy_row(p: usize, rng: &mut Rng) -> Vec<f32> {
    (0..p)
        .map(|_| {
            let v = 0.02 * rng.normal();
            if rng.uniform() < 0.01 {
                15.0 * v
            } else {
                v
            }
        })
        .collect()
}

#[test]
fn rtn_error_decreases_with_bits_and_pool() {
    let mut rng = Rng(77);
    let p = 1536;
    let x = heavy_row(p, &mut rng);
    let imp: Vec<f32> = (0..p).map(|_| (rng.normal()).exp()).collect();
    for w in [None, Some(&imp[..])] {
        let mut errs = [[0f64; 3]; 3];
        for fmt in QeFormat::ALL {
            let mut out = vec![0u8; fmt.row_bytes(p)];
            quantize_row_rtn(fmt, &x, w, &mut out).unwrap();
            let mut y = vec![0f32; p];
            dequantize_row(fmt, &out, &mut y).unwrap();
            errs[fmt.bits as usize - 2][fmt.pool as usize] = weighted_rel_err(&x, &y, w);
        }
        for s in 0..3 {
            assert!(
                errs[0][s] > errs[1][s] && errs[1][s] > errs[2][s],
                "{errs:?}"
            );
        }
        for b in 0..3 {
            assert!(
                errs[b][0] > errs[b][1] && errs[b][1] > errs[b][2],
                "{errs:?}"
            );
        }
        // Sanity bounds for heavy-tailed data.
        assert!(errs[2][2] < 0.08 && errs[0][0] < 0.8, "{errs:?}");
    }
}

#[test]
fn rtn_importance_lowers_the_weighted_error() {
    let mut rng = Rng(5);
    let p = 576;
    let x = heavy_row(p, &mut rng);
    let imp: Vec<f32> = (0..p).map(|_| (2.0 * rng.normal()).exp()).collect();
    for fmt in QeFormat::ALL {
        let mut a = vec![0u8; fmt.row_bytes(p)];
        let mut b = a.clone();
        quantize_row_rtn(fmt, &x, None, &mut a).unwrap();
        quantize_row_rtn(fmt, &x, Some(&imp), &mut b).unwrap();
        let (mut ya, mut yb) = (vec![0f32; p], vec![0f32; p]);
        dequantize_row(fmt, &a, &mut ya).unwrap();
        dequantize_row(fmt, &b, &mut yb).unwrap();
        let (ea, eb) = (
            weighted_rel_err(&x, &ya, Some(&imp)),
            weighted_rel_err(&x, &yb, Some(&imp)),
        );
        // Without a pool the weighted fit must win; with one, the outlier choice by
        // |x|·sqrt(v) (the contract's rule) ignores how removing a large |x| narrows its block's
        // grid, and can lose to plain |x| under extreme importances (e^±4 here): allow slack.
        let slack = if fmt.pool == 0 { 1.0 } else { 1.25 };
        assert!(eb < ea * slack, "{fmt:?}: weighted {eb} vs plain {ea}");
    }
}

#[test]
fn rtn_outliers_are_the_largest_and_capacity_can_stay_unused() {
    let fmt = QeFormat { bits: 2, pool: 2 };
    let p = 256; // capacity 4
                 // x0 = S(200)·127 sits exactly on the grid of the scale the search finds (h would be 0).
    let x0 = scale_value(200) * 127.0;
    let mut x = vec![x0; p];
    x[3] = 5.0;
    x[100] = -7.0;
    let mut out = vec![0u8; fmt.row_bytes(p)];
    quantize_row_rtn(fmt, &x, None, &mut out).unwrap();
    let (mut s, mut c, mut o) = (vec![0u8; p / SUB], vec![0u8; p], Vec::new());
    decode_row(fmt, &out, &mut s, &mut c, &mut o).unwrap();
    assert!(s.iter().all(|&u| u == 200), "{s:?}");
    let cols: Vec<u16> = o.iter().map(|e| e.0).collect();
    assert!(cols.contains(&3) && cols.contains(&100), "{o:?}");
    let mut y = vec![0f32; p];
    dequantize_row(fmt, &out, &mut y).unwrap();
    assert!(
        (y[3] - 5.0).abs() < 5e-3 && (y[100] + 7.0).abs() < 5e-3,
        "{y:?}"
    );
    // The other two slots would go to x0 entries that already sit on the grid: unused.
    assert_eq!(o.len(), 2, "{o:?}");

    // A zero row: no outliers, all scales 0, decodes to zeros.
    let z = vec![0f32; p];
    quantize_row_rtn(fmt, &z, None, &mut out).unwrap();
    decode_row(fmt, &out, &mut s, &mut c, &mut o).unwrap();
    assert!(o.is_empty() && s.iter().all(|&u| u == 0));

    // An all-outlier block: 32 huge values in one block of a wide row, capacity 32 (QE2_2, p=2048).
    let p = 2048;
    let mut x = vec![0.001f32; p];
    for (i, v) in x[64..96].iter_mut().enumerate() {
        *v = 100.0 + i as f32;
    }
    let mut out = vec![0u8; fmt.row_bytes(p)];
    quantize_row_rtn(fmt, &x, None, &mut out).unwrap();
    let mut y = vec![0f32; p];
    dequantize_row(fmt, &out, &mut y).unwrap();
    for i in 64..96 {
        assert!((y[i] - x[i]).abs() <= 0.07, "{i}: {} vs {}", y[i], x[i]);
    }
}

#[test]
fn rtn_rejects_bad_input() {
    let fmt = QeFormat { bits: 4, pool: 1 };
    let mut out = vec![0u8; fmt.row_bytes(64)];
    let mut x = vec![0.1f32; 64];
    x[7] = f32::NAN;
    assert!(matches!(
        quantize_row_rtn(fmt, &x, None, &mut out),
        Err(FormatError::NonFinite { index: 7, .. })
    ));
    x[7] = 0.0;
    assert!(quantize_row_rtn(fmt, &x, Some(&[1.0; 3]), &mut out).is_err());
    assert!(quantize_row_rtn(fmt, &x[..40], None, &mut out).is_err());
    assert!(quantize_row_rtn(fmt, &x, None, &mut out[1..]).is_err());
    // Huge values clamp into f16 range instead of failing.
    let big = vec![1e6f32; 64];
    quantize_row_rtn(fmt, &big, None, &mut out).unwrap();
    let mut y = vec![0f32; 64];
    dequantize_row(fmt, &out, &mut y).unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
}

#[test]
fn rtn_never_panics_on_extreme_finite_input() {
    let mut rng = Rng(4);
    let p = 256;
    let rows: Vec<Vec<f32>> = vec![
        vec![f32::MAX; p],
        vec![-f32::MAX; p],
        (0..p)
            .map(|i| if i % 2 == 0 { f32::MAX } else { -1e-40 })
            .collect(),
        vec![1e-30; p],
        vec![f32::MIN_POSITIVE / 8.0; p], // subnormal
        (0..p).map(|i| (i as f32 - 128.0) * 1e3).collect(),
        (0..p).map(|_| rng.normal() * 1e-6).collect(),
        (0..p).map(|_| rng.normal() * 100.0).collect(),
    ];
    for fmt in QeFormat::ALL {
        for x in &rows {
            let imp: Vec<f32> = (0..p).map(|i| [0.0, 1e30, 1e-30, 1.0][i % 4]).collect();
            for w in [None, Some(&imp[..])] {
                let mut out = vec![0u8; fmt.row_bytes(p)];
                quantize_row_rtn(fmt, x, w, &mut out).unwrap();
                let mut y = vec![0f32; p];
                dequantize_row(fmt, &out, &mut y).unwrap();
                assert!(y.iter().all(|v| v.is_finite()), "{fmt:?}");
            }
        }
    }
    // Large weights clamp the scale to 255: the grid tops out at S(255)·127 = 30.76.
    let fmt = QeFormat { bits: 3, pool: 0 };
    let x = vec![1000f32; 32];
    let mut out = vec![0u8; fmt.row_bytes(32)];
    quantize_row_rtn(fmt, &x, None, &mut out).unwrap();
    assert_eq!(&out[..2], &[255, 255]);
    let mut y = vec![0f32; 32];
    dequantize_row(fmt, &out, &mut y).unwrap();
    assert!(y.iter().all(|&v| v == 0.2421875 * 127.0));
}

#[test]
fn rtn_fits_a_sub_block_on_the_grid_exactly() {
    // Values exactly on a sub-block's grid are reproduced exactly, per 16-weight sub-block.
    let mut rng = Rng(21);
    for fmt in QeFormat::ALL {
        let p = 128;
        let (u, c, _) = random_row(fmt, p, &mut rng);
        // Every sub-block uses its top level (so amax/127 gives its scale back).
        let mut c = c;
        for j in 0..p / SUB {
            c[j * SUB] = fmt.max_code();
        }
        let u: Vec<u8> = u.iter().map(|&v| v.max(1)).collect();
        let x: Vec<f32> = (0..p)
            .map(|i| fmt.value(scale_value(u[i / SUB]), c[i]))
            .collect();
        let mut out = vec![0u8; fmt.row_bytes(p)];
        quantize_row_rtn(fmt, &x, None, &mut out).unwrap();
        let mut y = vec![0f32; p];
        dequantize_row(fmt, &out, &mut y).unwrap();
        assert_eq!(x, y, "{fmt:?}");
    }
}

#[test]
fn lib_dispatch_handles_qe_one_row_at_a_time() {
    let ty = GgmlType::QE3_1;
    assert!(crate::can_quantize(ty) && crate::can_dequantize(ty));
    let p = 576;
    let mut rng = Rng(3);
    let x: Vec<f32> = (0..3 * p).map(|_| rng.normal()).collect();
    let rb = ty.row_bytes(p as u64).unwrap() as usize;
    let mut packed = vec![0u8; 3 * rb];
    for (s, d) in x.chunks_exact(p).zip(packed.chunks_exact_mut(rb)) {
        crate::quantize_row(ty, s, None, d).unwrap();
    }
    let mut all = vec![0f32; 3 * p];
    crate::dequantize_rows(ty, &packed, p, &mut all).unwrap();
    let mut one = vec![0f32; p];
    crate::dequantize_row(ty, &packed[rb..2 * rb], &mut one).unwrap();
    assert_eq!(&all[p..2 * p], &one[..]);
    assert!(weighted_rel_err(&x, &all, None) < 0.2);
}

#[test]
#[ignore = "diagnostic: pool usage of RTN on Gaussian rows"]
fn pool_usage_histogram() {
    let mut rng = Rng(11);
    for fmt in [
        QeFormat { bits: 2, pool: 1 },
        QeFormat { bits: 3, pool: 1 },
        QeFormat { bits: 4, pool: 1 },
    ] {
        let p = 4096;
        let mut hist = std::collections::BTreeMap::new();
        let mut sub = 0;
        for _ in 0..200 {
            let x: Vec<f32> = (0..p).map(|_| 0.02 * rng.normal()).collect();
            let mut out = vec![0u8; fmt.row_bytes(p)];
            quantize_row_rtn(fmt, &x, None, &mut out).unwrap();
            let (mut s, mut c, mut o) = (vec![0u8; p / SUB], vec![0u8; p], Vec::new());
            decode_row(fmt, &out, &mut s, &mut c, &mut o).unwrap();
            *hist.entry(o.len()).or_insert(0) += 1;
            sub += o.iter().filter(|e| e.1.abs() < 6.1e-5).count();
        }
        eprintln!("{fmt:?}: used-entry histogram {hist:?}, subnormal h {sub}");
    }
}

//! SIMD vs scalar kernels.
//!
//! Tolerance. Every kernel computes the integer sums `Σ T[c]·q` exactly (per 16-weight
//! sub-block in the scalar kernel, per i32 lane of a sub-block in SIMD: lanes never mix the two
//! halves of a block) and scales them by exact factors (`d_q·S(u)` has ≤ 11 + 5 significant
//! bits, `S(u)·isum` ≤ 5 + 18: both exact in f32); the pool terms are bit-identical (same
//! operations and lanes). Only the order (and fusing) of the f32 additions of the `n` scaled
//! terms `t` (≤ 8 lane sums per block, plus the pool terms) differs. Summation of `n` terms in
//! f32 errs by at most `(n − 1)·u·Σ|t|` (u = 2⁻²⁴, first order), each product adds `u·|t|`, and
//! the two kernels err independently. `Σ|t|` is bounded by the element-level
//! `Σ_blocks Σ_i |d_q·S(u_{i/16})·T[c_i]·q_i|` (lane sums can cancel), so with
//! `n = 8·nb + pool entries`
//!
//! `|S_simd − S_scalar| ≤ 2·(n + 2)·ε·Σ|terms|`, ε = f32::EPSILON = 2u
//! (a further factor 2 of slack).
//!
//! The same bound with `n = p + pool + nb` terms covers the f32-activation dot. When every term
//! and partial sum is exactly representable (equal power-of-two scales, small sums) all kernels
//! must agree exactly — which checks that the integer parts are exact.

use super::*;
use crate::qe::tests::{heavy_row, random_row, Rng};
use crate::qe::{encode_row, quantize_row_rtn, scale_value, SUB, UNUSED_COLUMN};

/// Kernels to compare against the scalar reference on this machine.
fn simd_kernels() -> Vec<Kernel> {
    Kernel::available()
        .into_iter()
        .filter(|&k| k != Kernel::Scalar)
        .collect()
}

/// Run the dot with every SIMD variant on this CPU (AVX-512 with and without VNNI).
fn simd_dots(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> Vec<(String, f32)> {
    let mut out = Vec::new();
    for k in simd_kernels() {
        out.push((k.name().to_string(), dot_q8_0_unchecked(k, fmt, row, q8, p)));
        #[cfg(target_arch = "x86_64")]
        if k == Kernel::Avx512 {
            // SAFETY: AVX-512 available (k is); lengths are the caller's valid row.
            use x86::Avx512Variant::*;
            let plain = unsafe { x86::dot_q8_0_avx512_impl(fmt, row, q8, p, Maddubs) };
            out.push(("avx512-maddubs".into(), plain));
            if x86::has_avx512vnni() {
                // SAFETY: VNNI detected.
                let v = unsafe { x86::dot_q8_0_avx512_impl(fmt, row, q8, p, Vnni) };
                out.push(("avx512-vnni".into(), v));
            }
            if x86::has_avx512vbmi() {
                // SAFETY: VBMI and VNNI detected.
                let v = unsafe { x86::dot_q8_0_avx512_impl(fmt, row, q8, p, Vbmi) };
                out.push(("avx512-vbmi".into(), v));
            }
        }
    }
    out
}

/// `(Σ|terms|, n_terms)` of the Q8_0 dot, from the definition.
fn q8_abs_terms(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize) -> (f64, usize) {
    let nb = p / QK;
    let bb = fmt.block_bytes();
    let t = fmt.table();
    let mut abs = 0f64;
    for k in 0..nb {
        let blk = &row[k * bb..(k + 1) * bb];
        let qb = &q8[k * BLOCK_Q8_0_BYTES..(k + 1) * BLOCK_Q8_0_BYTES];
        let dq = f16_to_f32(u16::from_le_bytes([qb[0], qb[1]])) as f64;
        let mut codes = [0u8; QK];
        crate::qe::unpack_codes(fmt.bits, &blk[2..], &mut codes);
        for i in 0..QK {
            let s = crate::qe::scale_value(blk[i / SUB]) as f64;
            let e = (t[codes[i] as usize] as i32 * (qb[2 + i] as i8 as i32)).abs() as f64;
            abs += (dq * s).abs() * e;
        }
    }
    let mut n_pool = 0;
    pool_walk(&row[nb * bb..], p, |col, h| {
        let qb = &q8[col / QK * BLOCK_Q8_0_BYTES..];
        let a = f16_to_f32(u16::from_le_bytes([qb[0], qb[1]])) * (qb[2 + col % QK] as i8 as f32);
        abs += (h as f64 * a as f64).abs();
        n_pool += 1;
    });
    // SIMD kernels scale 8 (or 16) i32 lane sums per block before adding: up to 8 terms per block.
    (abs, 8 * nb + n_pool)
}

fn tol(abs: f64, n: usize) -> f64 {
    2.0 * (n as f64 + 2.0) * f32::EPSILON as f64 * abs
}

fn check_q8(fmt: QeFormat, row: &[u8], q8: &[u8], p: usize, what: &str) {
    let want = scalar::dot_q8_0(fmt, row, q8, p);
    let (abs, n) = q8_abs_terms(fmt, row, q8, p);
    for (name, got) in simd_dots(fmt, row, q8, p) {
        let diff = (got as f64 - want as f64).abs();
        assert!(
            diff <= tol(abs, n) || (got.is_nan() && want.is_nan()),
            "{what} {fmt:?} p={p} {name}: {got} vs scalar {want} (|diff| {diff:e} > tol {:e})",
            tol(abs, n)
        );
    }
}

fn check_f32(fmt: QeFormat, row: &[u8], x: &[f32], what: &str) {
    let want = scalar::dot_f32(fmt, row, x);
    let mut y = vec![0f32; x.len()];
    scalar::to_float(fmt, row, &mut y);
    let abs: f64 = y
        .iter()
        .zip(x)
        .map(|(a, b)| (*a as f64 * *b as f64).abs())
        .sum();
    let n = x.len() + fmt.capacity(x.len()) + x.len() / QK;
    for k in simd_kernels() {
        let got = dot_f32_unchecked(k, fmt, row, x);
        let diff = (got as f64 - want as f64).abs();
        assert!(
            diff <= tol(abs, n) * 2.0,
            "{what} {fmt:?} p={} {k:?}: {got} vs scalar {want} (|diff| {diff:e})",
            x.len()
        );
    }
}

fn q8_of(x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; x.len() / QK * BLOCK_Q8_0_BYTES];
    quantize_row_q8_0_activations(x, &mut q);
    q
}

/// Raw Q8_0 blocks with given scale bits and codes from `code(i)`.
fn q8_raw(p: usize, d_bits: u16, code: impl Fn(usize) -> i8) -> Vec<u8> {
    let mut q = vec![0u8; p / QK * BLOCK_Q8_0_BYTES];
    for (k, b) in q.chunks_exact_mut(BLOCK_Q8_0_BYTES).enumerate() {
        b[0..2].copy_from_slice(&d_bits.to_le_bytes());
        for i in 0..QK {
            b[2 + i] = code(k * QK + i) as u8;
        }
    }
    q
}

const WIDTHS: [usize; 8] = [32, 64, 96, 160, 576, 1536, 4096, 65504];

#[test]
fn report_kernels() {
    eprintln!("kernels available here: {:?}", Kernel::available());
    assert!(Kernel::available().contains(&Kernel::detect()));
}

#[test]
fn random_rows_match_scalar() {
    let mut rng = Rng(0xfeed);
    for fmt in QeFormat::ALL {
        for p in WIDTHS {
            let (scales, codes, outliers) = random_row(fmt, p, &mut rng);
            let mut row = vec![0u8; fmt.row_bytes(p)];
            encode_row(fmt, &scales, &codes, &outliers, &mut row).unwrap();
            let x: Vec<f32> = (0..p).map(|_| rng.normal()).collect();
            check_q8(fmt, &row, &q8_of(&x), p, "random");
            check_f32(fmt, &row, &x, "random");
            // RTN-quantised heavy-tailed rows (real outlier pools).
            let w = heavy_row(p, &mut rng);
            quantize_row_rtn(fmt, &w, None, &mut row).unwrap();
            check_q8(fmt, &row, &q8_of(&x), p, "rtn");
            check_f32(fmt, &row, &x, "rtn");
        }
    }
}

#[test]
fn exact_when_every_term_is_representable() {
    // S = 2^-17 (u = 16) everywhere, d_q = 1: every term is a multiple of 2^-17 and the total
    // |Σ T·q| ≤ 576·127·128 < 2^24, so every partial sum is exact and every kernel must give
    // exactly the integer result.
    let mut rng = Rng(31);
    for fmt in QeFormat::ALL {
        let t = fmt.table();
        for p in [32, 64, 96, 576] {
            let codes: Vec<u8> = (0..p)
                .map(|_| rng.below(fmt.max_code() as usize + 1) as u8)
                .collect();
            let mut row = vec![0u8; fmt.row_bytes(p)];
            encode_row(fmt, &vec![16; p / SUB], &codes, &[], &mut row).unwrap();
            let qc: Vec<i8> = (0..p).map(|_| rng.below(256) as i32 as u8 as i8).collect();
            let q8 = q8_raw(p, 0x3c00, |i| qc[i]);
            let exact: i64 = (0..p)
                .map(|i| t[codes[i] as usize] as i64 * qc[i] as i64)
                .sum();
            let want = exact as f32 * scale_value(16);
            assert_eq!(scalar::dot_q8_0(fmt, &row, &q8, p), want);
            for (name, got) in simd_dots(fmt, &row, &q8, p) {
                assert_eq!(got, want, "{fmt:?} p={p} {name}");
            }
        }
    }
}

#[test]
fn adversarial_rows_match_scalar() {
    let mut rng = Rng(99);
    for fmt in QeFormat::ALL {
        let m = fmt.max_code();
        for p in WIDTHS {
            let nb = p / QK;
            let ns = p / SUB;
            let cap = fmt.capacity(p);
            let mut row = vec![0u8; fmt.row_bytes(p)];
            // Max codes, max scale codes, activations at both ends of int8 (incl. −128).
            encode_row(fmt, &vec![255; ns], &vec![m; p], &[], &mut row).unwrap();
            for (dq, code) in [(0x7bffu16, 127i8), (0x7bff, -128), (0x0001, -128)] {
                let q8 = q8_raw(p, dq, |_| code);
                check_q8(fmt, &row, &q8, p, "max codes");
                // T = ±127 against −128 is the extreme of the i16 intermediate (maddubs).
            }
            let q8 = q8_raw(p, 0x3c00, |i| if i % 2 == 0 { -128 } else { 127 });
            check_q8(fmt, &row, &q8, p, "alternating extremes");
            // Min codes (−127) against −128, max scales: every maddubs pair at 2·127·128.
            encode_row(fmt, &vec![255; ns], &vec![0; p], &[], &mut row).unwrap();
            check_q8(fmt, &row, &q8_raw(p, 0x7bff, |_| -128), p, "min codes");
            // Every one of the 256 scale codes, cycling over the sub-blocks, random codes.
            let us: Vec<u8> = (0..ns).map(|j| (j % 256) as u8).collect();
            let codes: Vec<u8> = (0..p).map(|_| rng.below(m as usize + 1) as u8).collect();
            encode_row(fmt, &us, &codes, &[], &mut row).unwrap();
            let x: Vec<f32> = (0..p).map(|_| rng.normal()).collect();
            check_q8(fmt, &row, &q8_of(&x), p, "all scale codes");
            check_f32(fmt, &row, &x, "all scale codes");
            check_q8(fmt, &row, &q8_raw(p, 1, |_| -128), p, "subnormal d_q");
            // Huge and zero scales alternating per sub-block, extreme codes.
            let us: Vec<u8> = (0..ns).map(|j| if j % 2 == 0 { 255 } else { 0 }).collect();
            let codes: Vec<u8> = (0..p).map(|i| if i % 3 == 0 { m } else { 0 }).collect();
            encode_row(fmt, &us, &codes, &[], &mut row).unwrap();
            check_q8(fmt, &row, &q8_of(&x), p, "mixed scales");
            check_f32(fmt, &row, &x, "mixed scales");
            // All-outlier pool: every slot used, large values.
            let step = p.checked_div(cap).unwrap_or(1);
            let outs: Vec<(u16, f32)> = (0..cap)
                .map(|e| {
                    (
                        (e * step) as u16,
                        if e % 2 == 0 { 60000.0 } else { -3.0e-5 },
                    )
                })
                .collect();
            let codes: Vec<u8> = (0..p).map(|_| rng.below(m as usize + 1) as u8).collect();
            let us: Vec<u8> = (0..ns).map(|_| rng.below(256) as u8).collect();
            encode_row(fmt, &us, &codes, &outs, &mut row).unwrap();
            check_q8(fmt, &row, &q8_of(&x), p, "full pool");
            check_f32(fmt, &row, &x, "full pool");
            // Zero row and zero activations.
            row.fill(0);
            let pool = nb * fmt.block_bytes();
            for e in row[pool..].chunks_exact_mut(4) {
                e[0..2].copy_from_slice(&UNUSED_COLUMN.to_le_bytes());
            }
            let zq = q8_of(&vec![0.0; p]);
            check_q8(fmt, &row, &zq, p, "zero");
            for (_, got) in simd_dots(fmt, &row, &zq, p) {
                assert_eq!(got, 0.0);
            }
        }
    }
}

#[test]
fn corrupt_pools_never_read_out_of_bounds() {
    // Columns ≥ p stop the walk; garbage elsewhere gives some number, never a panic.
    let fmt = QeFormat { bits: 3, pool: 2 };
    let p = 64;
    let mut rng = Rng(1);
    let x: Vec<f32> = (0..p).map(|_| rng.normal()).collect();
    let q8 = q8_of(&x);
    for trial in 0..200 {
        let row: Vec<u8> = (0..fmt.row_bytes(p))
            .map(|i| {
                if trial % 2 == 0 {
                    rng.below(256) as u8
                } else {
                    (i * 37) as u8
                }
            })
            .collect();
        for k in Kernel::available() {
            let _ = vec_dot_q8_0_with(k, fmt, &row, &q8).unwrap();
            let _ = vec_dot_f32_with(k, fmt, &row, &x).unwrap();
        }
        let mut y = vec![0f32; p];
        to_float_unchecked(fmt, &row, &mut y);
    }
}

#[test]
fn checked_entry_points_reject_bad_lengths() {
    let fmt = QeFormat { bits: 4, pool: 1 };
    let row = vec![0u8; fmt.row_bytes(64)];
    let q8 = vec![0u8; 2 * BLOCK_Q8_0_BYTES];
    assert!(vec_dot_q8_0(fmt, &row, &q8).is_ok());
    assert!(vec_dot_q8_0(fmt, &row[1..], &q8).is_err());
    assert!(vec_dot_q8_0(fmt, &row, &q8[1..]).is_err());
    assert!(vec_dot_q8_0(fmt, &row, &q8[..BLOCK_Q8_0_BYTES]).is_err());
    assert!(vec_dot_f32(fmt, &row, &[0.0; 63]).is_err());
    assert!(vec_dot_f32(QeFormat { bits: 9, pool: 0 }, &row, &[0.0; 64]).is_err());
    let mut y = [0f32; 2];
    assert!(matmul(fmt, &row, 1, 64, &[0.0; 64], &mut y, 1).is_err());
    assert!(matmul(fmt, &row, 2, 64, &[0.0; 64], &mut y, 1).is_err());
}

#[test]
fn matmul_matches_vec_dot_and_ignores_thread_count() {
    let fmt = QeFormat { bits: 3, pool: 1 };
    let (n_rows, p, m) = (37, 576, 3);
    let mut rng = Rng(4242);
    let rb = fmt.row_bytes(p);
    let mut w = vec![0u8; n_rows * rb];
    for r in w.chunks_exact_mut(rb) {
        quantize_row_rtn(fmt, &heavy_row(p, &mut rng), None, r).unwrap();
    }
    let x: Vec<f32> = (0..m * p).map(|_| rng.normal()).collect();
    let mut y1 = vec![0f32; m * n_rows];
    matmul(fmt, &w, n_rows, p, &x, &mut y1, 1).unwrap();
    for threads in [2, 3, 8, 100] {
        let mut yt = vec![0f32; m * n_rows];
        matmul(fmt, &w, n_rows, p, &x, &mut yt, threads).unwrap();
        assert_eq!(y1, yt, "threads = {threads}");
    }
    for v in 0..m {
        let q8 = q8_of(&x[v * p..(v + 1) * p]);
        for r in 0..n_rows {
            let want = vec_dot_q8_0(fmt, &w[r * rb..(r + 1) * rb], &q8).unwrap();
            assert_eq!(y1[v * n_rows + r], want);
        }
    }
    // Against the f32 definition: within the Q8_0 activation error.
    let mut wd = vec![0f32; p];
    for r in 0..n_rows {
        crate::qe::dequantize_row(fmt, &w[r * rb..(r + 1) * rb], &mut wd).unwrap();
        let exact: f64 = wd
            .iter()
            .zip(&x[..p])
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let abs: f64 = wd
            .iter()
            .zip(&x[..p])
            .map(|(a, b)| (*a as f64 * *b as f64).abs())
            .sum();
        assert!((y1[r] as f64 - exact).abs() < 0.01 * abs, "row {r}");
        let f = vec_dot_f32(fmt, &w[r * rb..(r + 1) * rb], &x[..p]).unwrap();
        assert!((f as f64 - exact).abs() < 1e-5 * abs, "row {r} f32 dot");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_pool_sums_are_bit_identical_to_scalar() {
    let mut rng = Rng(777);
    for fmt in QeFormat::ALL.into_iter().filter(|f| f.pool > 0) {
        for p in [128, 160, 576, 1536, 4096, 65504] {
            let (scales, codes, mut outliers) = random_row(fmt, p, &mut rng);
            // Also a full pool.
            if rng.below(2) == 0 {
                let cap = fmt.capacity(p);
                outliers = (0..cap)
                    .map(|e| ((e * (p / cap.max(1))) as u16, rng.normal()))
                    .collect();
            }
            let mut row = vec![0u8; fmt.row_bytes(p)];
            encode_row(fmt, &scales, &codes, &outliers, &mut row).unwrap();
            let x: Vec<f32> = (0..p).map(|_| rng.normal()).collect();
            let q8 = q8_of(&x);
            let at = p / QK * fmt.block_bytes();
            let check = |row: &[u8], what: &str| {
                let pool = &row[at..];
                let want = scalar::pool_q8_0(pool, &q8, p);
                if Kernel::Avx2.is_available() {
                    // SAFETY: AVX2/F16C available; q8 has p/32 blocks.
                    let got = unsafe { x86::pool_q8_0_avx2(pool, &q8, p) };
                    assert_eq!(got.to_bits(), want.to_bits(), "{what} {fmt:?} p={p}");
                }
                if x86::has_avx512vbmi() {
                    // The VBMI kernel sums the pool inside the dot: with every scale code 0 the
                    // blocks add exactly +0, so the dot is the pool sum (+0 + pool in both).
                    let mut zr = row.to_vec();
                    for b in zr[..at].chunks_exact_mut(fmt.block_bytes()) {
                        b[0] = 0;
                        b[1] = 0;
                    }
                    let want = scalar::dot_q8_0(fmt, &zr, &q8, p);
                    // SAFETY: VBMI and VNNI detected; lengths are the row's.
                    let got = unsafe {
                        x86::dot_q8_0_avx512_impl(fmt, &zr, &q8, p, x86::Avx512Variant::Vbmi)
                    };
                    assert_eq!(got.to_bits(), want.to_bits(), "vbmi {what} {fmt:?} p={p}");
                }
            };
            check(&row, "pool");
            // Every prefix length (partial vector steps) and a walk stopped by a column ≥ p in
            // the middle (later used entries must be ignored).
            let cap = fmt.capacity(p);
            for used in 0..=cap.min(19) {
                let mut r = row.clone();
                for e in used..cap {
                    let c = if e == used { p as u16 } else { UNUSED_COLUMN };
                    r[at + 4 * e..at + 4 * e + 2].copy_from_slice(&c.to_le_bytes());
                }
                check(&r, "prefix");
                if used < cap {
                    // Restore the entries after the stop: the walk must still stop there.
                    let mut r2 = row.clone();
                    r2[at + 4 * used..at + 4 * used + 2].copy_from_slice(&(p as u16).to_le_bytes());
                    check(&r2, "stop");
                }
            }
        }
    }
}

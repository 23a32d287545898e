//! Test support: the golden fixtures in `fixtures/golden/` (produced by ggml's own code, see the
//! README there) and the comparisons every format's tests run against them.

use crate::types::GgmlType;
use std::path::PathBuf;

/// Rows in every fixture.
pub(crate) const ROWS: usize = 8;
/// Weights per row.
pub(crate) const COLS: usize = 512;

/// One type's fixtures.
pub(crate) struct Golden {
    pub ty: GgmlType,
    pub src: Vec<f32>,
    pub imatrix: Vec<f32>,
    pub ref_q: Vec<u8>,
    pub imat_q: Vec<u8>,
    pub ref_deq: Vec<f32>,
    pub imat_deq: Vec<f32>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden")
}

fn read(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn read_f32(name: &str) -> Vec<f32> {
    read(name)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Load the fixtures of `ty`.
pub(crate) fn load(ty: GgmlType) -> Golden {
    let n = ty.name();
    let g = Golden {
        ty,
        src: read_f32(&format!("{n}.src.f32")),
        imatrix: read_f32("imatrix.f32"),
        ref_q: read(&format!("{n}.ref.q")),
        imat_q: read(&format!("{n}.imat.q")),
        ref_deq: read_f32(&format!("{n}.ref.deq.f32")),
        imat_deq: read_f32(&format!("{n}.imat.deq.f32")),
    };
    let row_bytes = ty.row_bytes(COLS as u64).unwrap() as usize;
    assert_eq!(g.src.len(), ROWS * COLS);
    assert_eq!(g.imatrix.len(), COLS);
    assert_eq!(g.ref_q.len(), ROWS * row_bytes);
    assert_eq!(g.imat_q.len(), ROWS * row_bytes);
    g
}

/// Weighted RMSE `sqrt(Σ w (x − y)² / Σ w)`, with `w` = 1 when `weights` is `None`.
pub(crate) fn weighted_rmse(x: &[f32], y: &[f32], weights: Option<&[f32]>) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (&a, &b)) in x.iter().zip(y).enumerate() {
        let w = weights.map_or(1.0, |w| w[i] as f64);
        let d = a as f64 - b as f64;
        num += w * d * d;
        den += w;
    }
    if den > 0.0 {
        (num / den).sqrt()
    } else {
        0.0
    }
}

/// Our decoder on ggml's packed rows must reproduce ggml's dequantised floats bit for bit.
pub(crate) fn assert_decoder_bit_exact(g: &Golden, decode: fn(&[u8], &mut [f32])) {
    let row_bytes = g.ty.row_bytes(COLS as u64).unwrap() as usize;
    for (q, want, what) in [
        (&g.ref_q, &g.ref_deq, "ref"),
        (&g.imat_q, &g.imat_deq, "imat"),
    ] {
        let mut got = vec![0f32; COLS];
        for r in 0..ROWS {
            decode(&q[r * row_bytes..(r + 1) * row_bytes], &mut got);
            for (j, (a, b)) in got.iter().zip(&want[r * COLS..(r + 1) * COLS]).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{} {what} row {r} col {j}: {a} vs ggml {b}",
                    g.ty
                );
            }
        }
    }
}

/// Quantise every fixture row with `quantize` (with and without the imatrix), decode with
/// `decode`, and require our weighted RMSE to be no worse than ggml's on every row. Returns
/// `[(ours, ggml) without imatrix, (ours, ggml) with imatrix]` over all rows, and prints them.
pub(crate) fn assert_quantiser_not_worse(
    g: &Golden,
    quantize: fn(&[f32], Option<&[f32]>, &mut [u8]),
    decode: fn(&[u8], &mut [f32]),
) -> [(f64, f64); 2] {
    let row_bytes = g.ty.row_bytes(COLS as u64).unwrap() as usize;
    let mut out = [(0.0, 0.0); 2];
    for (k, (imp, ggml_deq)) in [(None, &g.ref_deq), (Some(&g.imatrix[..]), &g.imat_deq)]
        .into_iter()
        .enumerate()
    {
        let mut ours = vec![0f32; ROWS * COLS];
        let mut packed = vec![0u8; row_bytes];
        for r in 0..ROWS {
            let x = &g.src[r * COLS..(r + 1) * COLS];
            quantize(x, imp, &mut packed);
            let y = &mut ours[r * COLS..(r + 1) * COLS];
            decode(&packed, y);
            let e_ours = weighted_rmse(x, y, imp);
            let e_ggml = weighted_rmse(x, &ggml_deq[r * COLS..(r + 1) * COLS], imp);
            let label = if imp.is_some() {
                "imatrix"
            } else {
                "no imatrix"
            };
            assert!(
                e_ours <= e_ggml,
                "{} {label} row {r}: our weighted RMSE {e_ours:e} > ggml {e_ggml:e}",
                g.ty
            );
        }
        // Whole-fixture numbers (importance repeats per row).
        let w_full: Option<Vec<f32>> =
            imp.map(|w| w.iter().copied().cycle().take(ROWS * COLS).collect());
        out[k] = (
            weighted_rmse(&g.src, &ours, w_full.as_deref()),
            weighted_rmse(&g.src, ggml_deq, w_full.as_deref()),
        );
    }
    println!(
        "{:7} weighted RMSE  no imatrix: ours {:.6e} ggml {:.6e} ({:+.2}%)   imatrix: ours {:.6e} ggml {:.6e} ({:+.2}%)",
        g.ty.name(),
        out[0].0,
        out[0].1,
        100.0 * (out[0].0 / out[0].1 - 1.0),
        out[1].0,
        out[1].1,
        100.0 * (out[1].0 / out[1].1 - 1.0),
    );
    out
}

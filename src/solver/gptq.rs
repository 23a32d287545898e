//! GPTQ (Frantar et al. 2022) on the same grids: columns are quantised one at a time and each
//! column's rounding error is pushed onto the not-yet-quantised columns through the upper
//! Cholesky factor `U` of `(Σ+λI)⁻¹` (`(Σ+λI)⁻¹ = UᵀU`), in lazy batches: inside a batch
//! immediately, onto later columns with one GEMM per batch. A super-block's scales are chosen
//! (by the formats crate's weighted round-to-nearest on the current, error-updated weights) when
//! the first of its columns is reached, as GPTQ does with groups. With act-order the columns are
//! visited by decreasing `Σ_jj`; super-blocks keep their layout, and a super-block's scales are
//! chosen from its current weights when its first column in visiting order comes up.
//!
//! The factorisation is done once per tensor in f64 (faer's Cholesky), the row work in f32.

use super::cd::{Chunk, Ctx};
use super::grid::Params;
use super::sigma::Sigma;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, MatRef, Side};

/// Columns per GPTQ lazy batch.
const BATCH: usize = 128;

/// The shared factor: visiting order and `U` (row-major f32, in visiting order).
pub(crate) struct Factor {
    /// `perm[k]` = original column visited at step `k`.
    pub perm: Vec<usize>,
    /// Upper-triangular `U`, row-major p×p, rows/columns in visiting order.
    pub u: Vec<f32>,
}

/// Factor `Σ + λI` (permuted by act-order if asked). Fails if it is not positive definite.
pub(crate) fn factor(sigma: &Sigma, p: usize, lam: f64, act_order: bool) -> Option<Factor> {
    let mut perm: Vec<usize> = (0..p).collect();
    if act_order {
        // Stable sort: ties keep the natural order, so the result is deterministic.
        perm.sort_by(|&a, &b| sigma.diag(b).total_cmp(&sigma.diag(a)));
    }
    let h = Mat::<f64>::from_fn(p, p, |i, j| {
        let (a, b) = (perm[i], perm[j]);
        let s = match sigma {
            Sigma::Full(m) => m.get(a, b) as f64,
            Sigma::Diagonal(d) => {
                if a == b {
                    d[a] as f64
                } else {
                    0.0
                }
            }
            Sigma::Identity => (a == b) as u8 as f64,
        };
        if i == j {
            s + lam
        } else {
            s
        }
    });
    let llt = h.llt(Side::Lower).ok()?;
    drop(h);
    let hinv = llt.inverse();
    drop(llt);
    let l2 = hinv.llt(Side::Lower).ok()?;
    drop(hinv);
    let l = l2.L();
    let mut u = vec![0f32; p * p];
    for i in 0..p {
        for j in i..p {
            u[i * p + j] = l[(j, i)] as f32;
        }
    }
    if u.iter().any(|v| !v.is_finite()) {
        return None;
    }
    Some(Factor { perm, u })
}

/// GPTQ on rows `r0..r0+rows`; `importance` (diag Σ) weights the per-block scale choice.
pub(crate) fn run(
    ctx: &Ctx<'_>,
    f: &Factor,
    r0: usize,
    rows: usize,
    importance: Option<&[f32]>,
) -> Chunk {
    let (p, spec) = (ctx.p, ctx.spec);
    let nsb = p / spec.len;
    let mut pos = vec![0usize; p];
    for (k, &c) in f.perm.iter().enumerate() {
        pos[c] = k;
    }
    // Working copy in visiting order.
    let mut wc = vec![0f32; rows * p];
    for r in 0..rows {
        for k in 0..p {
            wc[r * p + k] = ctx.w[(r0 + r) * p + f.perm[k]];
        }
    }
    let uni: Vec<Option<Params>> = (0..rows)
        .map(|r| {
            spec.is_uniform()
                .then(|| spec.uniform_params(&ctx.w[(r0 + r) * p..(r0 + r + 1) * p]))
        })
        .collect();
    let mut params: Vec<Option<Params>> = vec![None; rows * nsb];
    let mut codes = vec![0u8; rows * p];
    let mut errs = vec![0f32; rows * BATCH];
    let mut xb = vec![0f32; spec.len];
    let mut cb = vec![0u8; spec.len];
    let ur = MatRef::from_row_major_slice(&f.u, p, p);
    let mut c0 = 0;
    while c0 < p {
        let nb = BATCH.min(p - c0);
        for k in c0..c0 + nb {
            let orig = f.perm[k];
            let sb = orig / spec.len;
            let ukk = f.u[k * p + k];
            for r in 0..rows {
                let pr = match params[r * nsb + sb] {
                    Some(pr) => pr,
                    None => {
                        for (i, x) in xb.iter_mut().enumerate() {
                            *x = wc[r * p + pos[sb * spec.len + i]];
                        }
                        let s = sb * spec.len..(sb + 1) * spec.len;
                        let pr = spec.rtn_block(
                            &xb,
                            importance.map(|v| &v[s]),
                            uni[r].as_ref(),
                            &mut cb,
                        );
                        params[r * nsb + sb] = Some(pr);
                        pr
                    }
                };
                let (a, b) = spec.ab(&pr, (orig % spec.len) / spec.sub_len);
                let x = wc[r * p + k];
                let c = spec.nearest(a, b, x, 0);
                codes[r * p + orig] = c;
                let err = (x - spec.value(a, b, c)) / ukk;
                errs[r * BATCH + (k - c0)] = err;
                let urow = &f.u[k * p + k + 1..k * p + c0 + nb];
                let wrow = &mut wc[r * p + k + 1..r * p + c0 + nb];
                for (wv, &uv) in wrow.iter_mut().zip(urow) {
                    *wv -= err * uv;
                }
            }
        }
        let c1 = c0 + nb;
        if c1 < p {
            let lhs = MatRef::from_row_major_slice_with_stride(&errs, rows, nb, BATCH);
            let rhs = ur.submatrix(c0, c1, nb, p - c1);
            let mut dst = faer::MatMut::from_row_major_slice_mut(&mut wc, rows, p);
            let dst = dst.as_mut().submatrix_mut(0, c1, rows, p - c1);
            faer::linalg::matmul::matmul(dst, faer::Accum::Add, lhs, rhs, -1.0f32, faer::Par::Seq);
        }
        c0 = c1;
    }
    let params = params
        .into_iter()
        .map(|p| p.expect("every super-block has a visited column"))
        .collect();
    Chunk::from_parts(ctx, r0, rows, params, codes)
}

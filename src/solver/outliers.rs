//! The outlier side-table of the QE formats: `Ŵ + H` with `Ŵ` on the block grid and `H` sparse
//! (at most `cap` entries per row, each an f16 value), minimising
//!
//! ```text
//!     f(Ŵ, H) = tr((W − Ŵ − H) Σ (W − Ŵ − H)ᵀ)
//! ```
//!
//! by alternating a CD sweep on `Ŵ` with target `W − H` (the ordinary sweep of `cd.rs`, whose
//! chunks then carry their own target) and an iterative-hard-thresholding step on `H`.
//!
//! Derivation of the `H` step. With `E = W − Ŵ − H`, `∇_H f = −2 E Σ`, and `∇f` is Lipschitz with
//! constant `L = 2 λ_max(Σ)`. The gradient step with step size `1/L` is
//! `H + E Σ / λ_max = H − η (Ŵ + H − W) Σ` with `η = 1/λ_max`; projecting it onto "at most `cap`
//! entries per row" keeps the `cap` entries of largest magnitude per row (`top_s`). Because the
//! projected point minimises the quadratic majoriser `f(H) + ⟨∇f, H'−H⟩ + L/2 ‖H'−H‖²` over the
//! sparse set, the step never increases `f` in exact arithmetic; rows are independent given `Σ`.
//! After the step the kept values are refitted exactly on their support `S`:
//! `min_δ −2δᵀ g_S + δᵀ Σ_SS δ` with `g = E Σ`, i.e. `δ = Σ_SS⁻¹ g_S` (a `|S|×|S|` Cholesky per
//! row). Both steps round `h` to f16 (the stored precision) and are applied to a row only if the
//! exact change of the objective, computed with the rounded values, is negative — so the
//! objective never increases.
//!
//! The start ([`rtn_start`]) is the formats crate's RTN: the `cap` weights of largest
//! `|w|·sqrt(Σ_jj)` of each row become outliers, the sub-block scale codes are fitted on the
//! remaining weights (the outliers get zero importance) and `h = w − ŵ` is stored at the outlier
//! positions.

use super::cd::{Chunk, Ctx};
use super::grid::{Params, MAX_SUB};
use quantease_formats::float::{f16_to_f32, f32_to_f16};
use quantease_formats::qe::{self, QeFormat};

/// Round to the nearest f16 value (clamped to the finite range).
#[inline]
pub(crate) fn f16r(v: f32) -> f32 {
    f16_to_f32(f32_to_f16(v.clamp(-65504.0, 65504.0)))
}

/// Keep the `cap` largest scores (ties: lower column first); returns their columns sorted.
fn top_cols(score: &mut [(f32, u32)], cap: usize) -> Vec<u32> {
    let cap = cap.min(score.len());
    if cap == 0 {
        return Vec::new();
    }
    let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if cap < score.len() {
        score.select_nth_unstable_by(cap - 1, order);
    }
    let mut cols: Vec<u32> = score[..cap].iter().map(|s| s.1).collect();
    cols.sort_unstable();
    cols
}

/// Round-to-nearest start: the formats crate's QE quantiser (`qe::quantize_row_rtn`: outliers
/// picked by `|w|·sqrt(Σ_jj)`, the grid fitted on the other weights, a slot left unused when its
/// value would not lower the weight's error), with the pool `pool` (0: no outliers).
pub(crate) fn rtn_start(
    ctx: &Ctx<'_>,
    r0: usize,
    rows: usize,
    importance: Option<&[f32]>,
    bits: u8,
    pool: u8,
) -> Result<Chunk, quantease_formats::FormatError> {
    let (p, spec) = (ctx.p, ctx.spec);
    let fmt = QeFormat { bits, pool };
    let nb = p / spec.len;
    let mut codes = vec![0u8; rows * p];
    let mut params = Vec::with_capacity(rows * nb);
    let mut outl = Vec::with_capacity(rows);
    let mut buf = vec![0u8; fmt.row_bytes(p)];
    let n_sub = spec.n_sub;
    let mut scales = vec![0u8; nb * n_sub];
    let mut list = Vec::new();
    for r in 0..rows {
        let x = &ctx.w[(r0 + r) * p..(r0 + r + 1) * p];
        qe::quantize_row_rtn(fmt, x, importance, &mut buf)?;
        qe::decode_row(
            fmt,
            &buf,
            &mut scales,
            &mut codes[r * p..(r + 1) * p],
            &mut list,
        )?;
        params.extend(scales.chunks_exact(n_sub).map(|u| {
            let mut sc = [0; MAX_SUB];
            for (s, &v) in sc.iter_mut().zip(u) {
                *s = v as i32;
            }
            Params {
                d: 1.0,
                dmin: 0.0,
                sc,
                mn: [-1; MAX_SUB],
            }
        }));
        outl.push(list.iter().map(|&(j, h)| (j as u32, h)).collect());
    }
    Ok(if pool > 0 {
        Chunk::with_outliers(ctx, r0, rows, params, codes, outl)
    } else {
        Chunk::from_parts(ctx, r0, rows, params, codes)
    })
}

/// Replace row `r`'s outliers by `new` (sorted by column) if that lowers the objective; `g` is
/// the row's `E·(Σ+λI)` and is kept up to date. Returns the (negative) change, or 0.
fn try_outliers(
    ctx: &Ctx<'_>,
    ch: &mut Chunk,
    r: usize,
    g: &mut [f32],
    new: Vec<(u32, f32)>,
    delta: &mut Vec<(usize, f32)>,
) -> f64 {
    let old = &ch.outl[r];
    // Merge the two sorted lists into the changes δ = h_new − h_old.
    delta.clear();
    let (mut a, mut b) = (0, 0);
    while a < old.len() || b < new.len() {
        let ca = old.get(a).map_or(u32::MAX, |x| x.0);
        let cb = new.get(b).map_or(u32::MAX, |x| x.0);
        let (j, d) = if ca == cb {
            a += 1;
            b += 1;
            (ca, new[b - 1].1 - old[a - 1].1)
        } else if ca < cb {
            a += 1;
            (ca, -old[a - 1].1)
        } else {
            b += 1;
            (cb, new[b - 1].1)
        };
        if d != 0.0 {
            delta.push((j as usize, d));
        }
    }
    if delta.is_empty() {
        ch.outl[r] = new;
        return 0.0;
    }
    // E' = E − δ: change = −2 δ·g + δᵀ S δ.
    let mut change = 0f64;
    for (k, &(i, di)) in delta.iter().enumerate() {
        change -= 2.0 * di as f64 * g[i] as f64;
        change += (di as f64) * (di as f64) * ctx.op.entry(i, i) as f64;
        for &(j, dj) in &delta[k + 1..] {
            change += 2.0 * (di as f64) * (dj as f64) * ctx.op.entry(i, j) as f64;
        }
    }
    if change.is_nan() || change >= 0.0 {
        return 0.0;
    }
    let p = ctx.p;
    let w = &ctx.w[(ch.r0 + r) * p..(ch.r0 + r + 1) * p];
    let tgt = ch.tgt.as_mut().expect("outlier chunks carry a target");
    for &(j, d) in delta.iter() {
        ctx.op.sub_row(g, j, d);
        tgt[r * p + j] = w[j];
    }
    for &(j, h) in &new {
        tgt[r * p + j as usize] = w[j as usize] - h;
    }
    for &(j, _) in delta.iter() {
        ch.e[r * p + j] = tgt[r * p + j] - ch.what[r * p + j];
    }
    ch.outl[r] = new;
    change
}

/// In-place Cholesky solve of the small SPD system `a x = b` (`a` row-major n×n); `None` if it
/// is not numerically positive definite.
fn cholesky_solve(a: &mut [f64], b: &mut [f64], n: usize) -> Option<()> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[k * n + i] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    Some(())
}

/// Exact refit of row `r`'s kept outlier values given `Ŵ` (see the module docs).
fn refit_row(
    ctx: &Ctx<'_>,
    ch: &mut Chunk,
    r: usize,
    g: &mut [f32],
    delta: &mut Vec<(usize, f32)>,
) -> f64 {
    let cur = &ch.outl[r];
    let n = cur.len();
    if n == 0 {
        return 0.0;
    }
    let mut a = vec![0f64; n * n];
    let mut b = vec![0f64; n];
    let mut max_diag = 0f64;
    for (k, &(i, _)) in cur.iter().enumerate() {
        for (l, &(j, _)) in cur.iter().enumerate() {
            a[k * n + l] = ctx.op.entry(i as usize, j as usize) as f64;
        }
        max_diag = max_diag.max(a[k * n + k]);
        b[k] = g[i as usize] as f64;
    }
    if max_diag <= 0.0 {
        return 0.0;
    }
    for k in 0..n {
        a[k * n + k] += 1e-9 * max_diag;
    }
    if cholesky_solve(&mut a, &mut b, n).is_none() {
        return 0.0;
    }
    let new: Vec<(u32, f32)> = cur
        .iter()
        .zip(&b)
        .map(|(&(j, h), &d)| (j, f16r(h + d as f32)))
        .collect();
    try_outliers(ctx, ch, r, g, new, delta)
}

/// One IHT step on the outliers of every row of the chunk, each followed by the exact refit of
/// the kept values. `eta = 1/λ_max(Σ+λI)`; `g` is scratch. Returns the (non-positive) change
/// of the damped objective.
pub(crate) fn iht_step(
    ctx: &Ctx<'_>,
    ch: &mut Chunk,
    cap: usize,
    eta: f64,
    g: &mut Vec<f32>,
) -> f64 {
    let (p, rows) = (ctx.p, ch.rows);
    if cap == 0 || rows == 0 {
        return 0.0;
    }
    g.resize(rows * p, 0.0);
    ctx.op.block_product(&ch.e, rows, 0, p, &mut g[..rows * p]);
    let mut total = 0.0;
    let mut score: Vec<(f32, u32)> = Vec::with_capacity(p);
    let mut v = vec![0f32; p];
    let mut delta = Vec::new();
    for r in 0..rows {
        let gr = &mut g[r * p..(r + 1) * p];
        // v = H + η·E·Σ (H = 0 off its support).
        for (vj, &gj) in v.iter_mut().zip(gr.iter()) {
            *vj = (eta * gj as f64) as f32;
        }
        for &(j, h) in &ch.outl[r] {
            v[j as usize] += h;
        }
        score.clear();
        score.extend(v.iter().enumerate().map(|(j, &x)| (x.abs(), j as u32)));
        let cols = top_cols(&mut score, cap);
        let new = cols.iter().map(|&j| (j, f16r(v[j as usize]))).collect();
        total += try_outliers(ctx, ch, r, gr, new, &mut delta);
        total += refit_row(ctx, ch, r, gr, &mut delta);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let mut b = vec![2.0, 1.0];
        cholesky_solve(&mut a, &mut b, 2).unwrap();
        // 4x + 2y = 2, 2x + 3y = 1 → x = 0.5, y = 0.
        assert!((b[0] - 0.5).abs() < 1e-12 && b[1].abs() < 1e-12, "{b:?}");
    }

    #[test]
    fn top_cols_is_deterministic_with_ties() {
        let mut s = vec![(1.0, 0), (3.0, 1), (3.0, 2), (0.5, 3), (3.0, 4)];
        assert_eq!(top_cols(&mut s, 2), vec![1, 2]);
        let mut s = vec![(1.0, 0), (3.0, 1), (3.0, 2), (0.5, 3), (3.0, 4)];
        assert_eq!(top_cols(&mut s, 0), Vec::<u32>::new());
    }
}

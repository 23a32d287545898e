//! Importance-weighted round-to-nearest (RTN) quantiser for the QE formats (versions 2 and 3), with
//! outliers.
//!
//! For a row `x` (`p` weights) and importances `v` (default 1; negative/NaN count as 0):
//!
//! 1. **Outlier candidates**: the `capacity(p)` entries with the largest `|xᵢ|·sqrt(vᵢ)` (ties:
//!    lower column first), among entries with a positive score.
//! 2. **Grid fit**, per 16-weight sub-block: the candidates get weight 0 and the scale code `u`
//!    minimising `Σ vᵢ (xᵢ − S(u)·T[cᵢ])²` over the remaining weights (each `cᵢ` the nearest
//!    level for that scale) is searched: the codes of the scales `amax/127·(0.7 + 0.03k)`,
//!    `k = 0..=20` (`amax` = the sub-block's largest non-candidate `|x|`; below 1 the top level
//!    clips, above 1 the inner levels spread), then, from every evaluated code, the
//!    least-squares scale `Σ v x T / Σ v T²` of its codes, whose code and the neighbours ±1, ±2
//!    are evaluated too; the refits are repeated from the best code until it stops changing
//!    (at most 4 rounds). Ties → the lower `u`. A best scale above `S(255)` clamps to 255 (the
//!    pool may then correct the largest weights). Every code is then the exact nearest decoded
//!    value for the stored scale ([`QeFormat::best_code`]; outliers included: their code is the
//!    nearest, usually clamped, grid value).
//! 3. **Outlier values**: each candidate stores `h = xᵢ − S·T[cᵢ]` rounded to f16 (clamped to
//!    ±65504). **Rule for unused capacity**: a candidate is kept only if the rounded `h` strictly
//!    lowers its weighted error, `vᵢ (xᵢ − ĝᵢ − h)² < vᵢ (xᵢ − ĝᵢ)²`; so entries whose value
//!    already sits on the grid (h = 0), and zero-score entries, leave their slot unused
//!    (column 0xFFFF). A row never has more outliers than it has such meaningful candidates.
//!
//! If a sub-block's only positive-importance weights are all candidates, the remaining weights
//! are fitted with unit importance (so they still get a sensible grid).

use super::{encode_row, scale_code, QeFormat, SCALES, SUB};
use crate::error::FormatError;
use crate::float::{f16_to_f32, f32_to_f16};
use crate::search::fill_weights;

/// Positive half of a symmetric level table (`T[N/2..]`) and the midpoints between its
/// consecutive levels, as f32 (half-integers: exact).
struct Half {
    levels: [f32; 8],
    mids: [f32; 7],
    n: usize,
}

impl Half {
    fn of(fmt: QeFormat) -> Half {
        let t = fmt.table();
        let pos = &t[t.len() / 2..];
        let mut h = Half {
            levels: [0.0; 8],
            mids: [f32::INFINITY; 7],
            n: pos.len(),
        };
        for (l, &v) in h.levels.iter_mut().zip(pos) {
            *l = v as f32;
        }
        for (m, w) in h.mids.iter_mut().zip(pos.windows(2)) {
            *m = 0.5 * (w[0] as f32 + w[1] as f32);
        }
        h
    }
}

/// Weighted error and least-squares statistics of one sub-block under scale `s`, codes nearest:
/// `(Σ w (x − s·T)², Σ w x T, Σ w T²)`. Works on `|x|` against the positive half of the
/// symmetric table (a tie between two levels has equal error either way).
#[inline]
fn eval(h: &Half, ax: &[f32; SUB], w: &[f32; SUB], s: f32) -> (f32, f32, f32) {
    let mut thr = [f32::INFINITY; 7];
    for (t, &m) in thr.iter_mut().zip(&h.mids[..h.n - 1]) {
        *t = s * m;
    }
    let (mut err, mut sxt, mut stt) = (0f32, 0f32, 0f32);
    for (&a, &wi) in ax.iter().zip(w) {
        let k = thr.iter().filter(|&&t| a > t).count();
        let lev = h.levels[k];
        let e = a - s * lev;
        err += wi * e * e;
        sxt += wi * a * lev;
        stt += wi * lev * lev;
    }
    (err, sxt, stt)
}

/// Best scale code of one sub-block (`w` already zero at outlier candidates; see the module docs).
fn fit_sub(h: &Half, x: &[f32], w: &[f32; SUB]) -> u8 {
    let mut ax = [0f32; SUB];
    for (a, &v) in ax.iter_mut().zip(x) {
        *a = v.abs();
    }
    let amax = ax
        .iter()
        .zip(w)
        .filter(|(_, &wi)| wi > 0.0)
        .fold(0f32, |m, (&a, _)| m.max(a));
    if amax == 0.0 {
        return 0;
    }
    let mut seen = [false; 256];
    // (error, u); ties to the lower u.
    let mut best = (f32::INFINITY, 0u8);
    let mut refits: Vec<u8> = Vec::with_capacity(32);
    let mut try_code = |u: u8, refits: &mut Vec<u8>, best: &mut (f32, u8)| {
        if std::mem::replace(&mut seen[u as usize], true) {
            return;
        }
        let (err, sxt, stt) = eval(h, &ax, w, SCALES[u as usize]);
        if err < best.0 || (err == best.0 && u < best.1) {
            *best = (err, u);
        }
        if stt > 0.0 {
            refits.push(scale_code(sxt / stt));
        }
    };
    let base = amax / 127.0;
    for k in 0..=20 {
        try_code(
            scale_code(base * (0.7 + 0.03 * k as f32)),
            &mut refits,
            &mut best,
        );
    }
    for _round in 0..4 {
        let before = best.1;
        let centres = std::mem::take(&mut refits);
        for c in centres {
            for d in -2i32..=2 {
                let u = (c as i32 + d).clamp(0, 255) as u8;
                try_code(u, &mut refits, &mut best);
            }
        }
        if best.1 == before || refits.is_empty() {
            break;
        }
    }
    best.1
}

/// Outlier candidates of a row: indices of the `cap` largest positive scores `|x|·sqrt(v)`,
/// sorted by column.
fn outlier_candidates(x: &[f32], importance: Option<&[f32]>, cap: usize) -> Vec<usize> {
    if cap == 0 {
        return Vec::new();
    }
    let score = |i: usize| -> f32 {
        let v = importance.map_or(1.0, |imp| imp[i].max(0.0));
        x[i].abs() * v.sqrt()
    };
    let mut idx: Vec<usize> = (0..x.len()).filter(|&i| score(i) > 0.0).collect();
    if idx.len() > cap {
        // Descending score, ties to the lower column: deterministic.
        idx.select_nth_unstable_by(cap - 1, |&a, &b| {
            score(b).total_cmp(&score(a)).then(a.cmp(&b))
        });
        idx.truncate(cap);
    }
    idx.sort_unstable();
    idx
}

/// Quantise one row (`src.len()` weights, a multiple of 32, at most 65504) into `out`
/// (`fmt.row_bytes(p)` bytes) with importance-weighted RTN and outliers (rules in the module
/// docs). `importance`, when given, has one entry per weight. Non-finite inputs are an error;
/// every finite input is accepted (scales clamp to the largest scale code).
pub fn quantize_row_rtn(
    fmt: QeFormat,
    src: &[f32],
    importance: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), FormatError> {
    let p = src.len();
    super::check_width(fmt, p)?;
    if let Some(imp) = importance {
        if imp.len() != p {
            return Err(super::length_mismatch(fmt, "importance", imp.len(), p));
        }
        if let Some((index, &value)) = imp.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(FormatError::NonFinite { index, value });
        }
    }
    if let Some((index, &value)) = src.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(FormatError::NonFinite { index, value });
    }
    if out.len() != fmt.row_bytes(p) {
        return Err(super::length_mismatch(
            fmt,
            "packed row",
            out.len(),
            fmt.row_bytes(p),
        ));
    }

    let cand = outlier_candidates(src, importance, fmt.capacity(p));
    let mut is_cand = vec![false; p];
    for &i in &cand {
        is_cand[i] = true;
    }

    let half = Half::of(fmt);
    let mut scale_codes = vec![0u8; p / SUB];
    let mut codes = vec![0u8; p];
    let mut w = [0f32; SUB];
    for (j, u) in scale_codes.iter_mut().enumerate() {
        let r = j * SUB..(j + 1) * SUB;
        let x = &src[r.clone()];
        fill_weights(importance.map(|imp| &imp[r.clone()]), &mut w);
        for (wi, &c) in w.iter_mut().zip(&is_cand[r.clone()]) {
            if c {
                *wi = 0.0;
            }
        }
        if w.iter().all(|&v| v == 0.0) {
            for (wi, &c) in w.iter_mut().zip(&is_cand[r.clone()]) {
                *wi = if c { 0.0 } else { 1.0 };
            }
        }
        *u = fit_sub(&half, x, &w);
        let s = SCALES[*u as usize];
        for (c, &xi) in codes[r].iter_mut().zip(x) {
            *c = fmt.best_code(s, xi);
        }
    }

    let mut outliers = Vec::with_capacity(cand.len());
    for &i in &cand {
        let g = fmt.value(SCALES[scale_codes[i / SUB] as usize], codes[i]);
        let h = f16_to_f32(f32_to_f16((src[i] - g).clamp(-65504.0, 65504.0)));
        let before = (src[i] - g).abs();
        let after = (src[i] - (g + h)).abs();
        if after < before {
            outliers.push((i as u16, h));
        }
    }
    encode_row(fmt, &scale_codes, &codes, &outliers, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qe::scale_value;

    #[test]
    fn candidates_pick_largest_weighted_magnitudes() {
        let x = [0.1f32, -5.0, 0.2, 3.0, 0.0, 4.0];
        assert_eq!(outlier_candidates(&x, None, 2), vec![1, 5]);
        let imp = [1.0f32, 0.0, 1.0, 4.0, 1.0, 1.0];
        // |x|·sqrt(v): 0.1, 0, 0.2, 6, 0, 4.
        assert_eq!(outlier_candidates(&x, Some(&imp), 3), vec![2, 3, 5]);
        // Zero scores never become candidates.
        assert_eq!(outlier_candidates(&x, Some(&imp), 10), vec![0, 2, 3, 5]);
    }

    /// The fast |x| evaluation equals the exact error of the codes the encoder stores.
    #[test]
    fn eval_matches_the_exact_codes() {
        let mut rng = crate::qe::tests::Rng(17);
        for fmt in [
            QeFormat { bits: 2, pool: 0 },
            QeFormat { bits: 3, pool: 0 },
            QeFormat { bits: 4, pool: 0 },
        ] {
            let h = Half::of(fmt);
            for _ in 0..200 {
                let mut x = [0f32; SUB];
                let mut w = [0f32; SUB];
                for i in 0..SUB {
                    x[i] = 0.02 * rng.normal();
                    w[i] = rng.uniform();
                }
                let u = (rng.below(200) + 40) as u8;
                let s = scale_value(u);
                let ax = x.map(f32::abs);
                let (err, _, _) = eval(&h, &ax, &w, s);
                let exact: f64 = (0..SUB)
                    .map(|i| {
                        let e = (x[i] - fmt.value(s, fmt.best_code(s, x[i]))) as f64;
                        w[i] as f64 * e * e
                    })
                    .sum();
                assert!(
                    (err as f64 - exact).abs() <= 1e-5 * exact + 1e-30,
                    "{fmt:?} u={u}: {err} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn search_is_never_worse_than_amax_over_127() {
        let mut rng = crate::qe::tests::Rng(23);
        let fmt = QeFormat { bits: 3, pool: 0 };
        let h = Half::of(fmt);
        for _ in 0..500 {
            let x: Vec<f32> = (0..SUB).map(|_| 0.03 * rng.normal()).collect();
            let w = [1f32; SUB];
            let ax: [f32; SUB] = std::array::from_fn(|i| x[i].abs());
            let amax = ax.iter().fold(0f32, |m, &a| m.max(a));
            let u = fit_sub(&h, &x, &w);
            let naive = scale_code(amax / 127.0);
            let e = eval(&h, &ax, &w, scale_value(u)).0;
            let e0 = eval(&h, &ax, &w, scale_value(naive)).0;
            assert!(e <= e0, "{e} > {e0}");
        }
    }
}

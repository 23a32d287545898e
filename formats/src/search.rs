//! Shared round-to-nearest (RTN) search helpers for block quantisers.
//!
//! All helpers minimise a *weighted squared error* `Σ wᵢ (xᵢ − x̂ᵢ)²` where `x̂ᵢ` is the value the
//! decoder will produce, computed with the same f32 operations as ggml's dequantisers (the scale is
//! first rounded to the f16 the file stores). Errors are accumulated in f64.
//!
//! The building blocks are:
//! - [`grid_scale_candidates`]: for a *fixed sorted grid* of code values `g` (uniform like
//!   `-8..=7`, or non-linear like IQ4_NL's table) and reconstruction `x̂ = d·g[code]`, an exact sweep
//!   over every code assignment reachable by nearest rounding at some inverse scale (both signs of
//!   `d`), returning the least-squares scales of the best few assignments;
//! - [`best_f16_scale`]: turns continuous candidate scales into the best f16 scale, trying a few f16
//!   neighbours of each and re-deriving the optimal codes for every f16 value tried;
//! - [`best_affine_f16`]: the same for `x̂ = d·q + m` formats (Q4_1, Q5_1) with a scale grid and
//!   alternating least-squares refits;
//! - small utilities: [`fill_weights`], [`nearest_grid_index`], [`f16_neighbours`].
//!
//! Given the stored scale, choosing each code independently as the nearest decoded value is exactly
//! optimal (the error is separable), so every search reduces to choosing the f16 scale(s).

use crate::float::{f16_to_f32, f32_to_f16};

/// Largest finite f16 magnitude bit pattern (65504).
const F16_MAX_FINITE_BITS: u16 = 0x7bff;

/// Copy per-weight importances into `out`, or fill it with 1 when there are none.
///
/// Negative or NaN importances are treated as 0. If every importance of the block is 0 (the
/// weighted error cannot distinguish any two encodings) plain squared error is used instead,
/// so the block still gets a sensible encoding.
pub fn fill_weights(importance: Option<&[f32]>, out: &mut [f32]) {
    match importance {
        None => out.fill(1.0),
        Some(imp) => {
            for (o, &v) in out.iter_mut().zip(imp) {
                // `max` maps NaN to 0 as well.
                *o = v.max(0.0);
            }
            if out.iter().all(|&v| v == 0.0 || !v.is_finite()) {
                out.fill(1.0);
            }
        }
    }
}

/// Index of the grid value nearest to `r` in a sorted `grid` (ties to the lower index).
pub fn nearest_grid_index(grid: &[f32], r: f32) -> usize {
    let n = grid.len();
    if r <= grid[0] || r.is_nan() {
        return 0;
    }
    if r >= grid[n - 1] {
        return n - 1;
    }
    // First index with grid[hi] > r; then grid[hi-1] <= r < grid[hi].
    let hi = grid.partition_point(|&g| g <= r);
    if r - grid[hi - 1] <= grid[hi] - r {
        hi - 1
    } else {
        hi
    }
}

/// The code whose decoded value `d * grid[code]` (f32 product, as ggml computes it) is nearest to
/// `x`, and that decoded value.
///
/// The candidate from `x / d` is checked against its neighbours using the exact decoded products,
/// so rounding in the division cannot pick a worse code.
#[inline]
pub fn best_grid_code(grid: &[f32], d: f32, x: f32) -> (usize, f32) {
    if d == 0.0 {
        return (nearest_grid_index(grid, 0.0), 0.0);
    }
    let k = nearest_grid_index(grid, x / d);
    let lo = k.saturating_sub(1);
    let hi = (k + 1).min(grid.len() - 1);
    let mut best = (k, d * grid[k]);
    let mut best_err = (x - best.1).abs();
    for (j, &g) in grid.iter().enumerate().take(hi + 1).skip(lo) {
        let v = d * g;
        let e = (x - v).abs();
        if e < best_err {
            best_err = e;
            best = (j, v);
        }
    }
    best
}

/// [`best_grid_code`] for the uniform integer grid `lo..=hi` (code index = value − `lo`), in O(1).
#[inline]
pub fn best_uniform_code(lo: i32, hi: i32, d: f32, x: f32) -> (usize, f32) {
    if d == 0.0 {
        return ((0.clamp(lo, hi) - lo) as usize, 0.0);
    }
    let r = (x / d).round().clamp(lo as f32, hi as f32) as i32;
    let mut best = (r, r as f32 * d);
    let mut best_err = (x - best.1).abs();
    for q in [r - 1, r + 1] {
        if q < lo || q > hi {
            continue;
        }
        let v = q as f32 * d;
        let e = (x - v).abs();
        if e < best_err {
            best_err = e;
            best = (q, v);
        }
    }
    ((best.0 - lo) as usize, best.1)
}

/// Weighted squared error of `x̂ = d·grid[code]` with optimal codes for the given f32 scale `d`;
/// writes the codes into `codes` when given.
pub fn scaled_grid_error(
    x: &[f32],
    w: &[f32],
    grid: &[f32],
    d: f32,
    mut codes: Option<&mut [u8]>,
) -> f64 {
    // Integer grids with unit spacing (Q4_0, Q5_0, Q8_0) take the O(1) path.
    let (lo, hi) = (grid[0], grid[grid.len() - 1]);
    let uniform = lo.fract() == 0.0
        && hi - lo == (grid.len() - 1) as f32
        && grid.windows(2).all(|p| p[1] - p[0] == 1.0);
    let mut err = 0.0f64;
    for (i, (&xi, &wi)) in x.iter().zip(w).enumerate() {
        let (c, v) = if uniform {
            best_uniform_code(lo as i32, hi as i32, d, xi)
        } else {
            best_grid_code(grid, d, xi)
        };
        let diff = (xi - v) as f64;
        err += wi as f64 * diff * diff;
        if let Some(codes) = codes.as_deref_mut() {
            codes[i] = c as u8;
        }
    }
    err
}

/// f16 bit patterns near `v`: the rounded value and up to `radius` steps of magnitude either
/// side (never crossing zero, never infinite). NaN or infinite `v` map to the largest finite value.
pub fn f16_neighbours(v: f32, radius: u16) -> impl Iterator<Item = u16> {
    let b = if v.is_finite() {
        f32_to_f16(v)
    } else {
        F16_MAX_FINITE_BITS | if v.is_sign_negative() { 0x8000 } else { 0 }
    };
    let sign = b & 0x8000;
    let mag = (b & 0x7fff).min(F16_MAX_FINITE_BITS);
    let lo = mag.saturating_sub(radius);
    let hi = mag.saturating_add(radius).min(F16_MAX_FINITE_BITS);
    (lo..=hi).map(move |m| sign | m)
}

/// Keeps the `cap` best (score, value) pairs, best first.
struct TopK {
    cap: usize,
    items: Vec<(f64, f32)>,
}

impl TopK {
    fn new(cap: usize) -> Self {
        TopK {
            cap,
            items: Vec::with_capacity(cap + 1),
        }
    }

    fn offer(&mut self, score: f64, value: f32) {
        if self.items.len() == self.cap && self.items.last().is_some_and(|&(s, _)| s >= score) {
            return;
        }
        if self.items.iter().any(|&(_, v)| v == value) {
            return;
        }
        let pos = self.items.partition_point(|&(s, _)| s >= score);
        self.items.insert(pos, (score, value));
        self.items.truncate(self.cap);
    }
}

/// Continuous least-squares scales for `x̂ = d·grid[code]`, best first (at most `top` of them).
///
/// The sweep visits, for each sign of `d`, every code assignment that nearest rounding of `x/d`
/// produces as `1/|d|` grows from 0 to ∞ (the assignment only changes when some `xᵢ/d` crosses a
/// midpoint between two grid values). For each assignment the weighted least-squares scale
/// `Σwxg / Σwg²` is optimal, and its error is `Σwx² − (Σwxg)²/Σwg²`; the assignments with the
/// largest `(Σwxg)²/Σwg²` are returned. `grid` must be sorted ascending with at least two values.
///
/// Cost: `O(n·L·log(n·L))` for `n` weights and `L` grid values.
pub fn grid_scale_candidates(x: &[f32], w: &[f32], grid: &[f32], top: usize) -> Vec<f32> {
    let mut best = TopK::new(top.max(1));
    let mut events: Vec<(f32, u32)> = Vec::with_capacity(x.len() * grid.len());
    for sign in [1.0f32, -1.0] {
        sweep(x, w, grid, sign, &mut events, &mut best);
    }
    best.items.into_iter().map(|(_, v)| v).collect()
}

/// One sign of [`grid_scale_candidates`]: fit `sign·x` with a positive scale `s`, report `sign·s`.
fn sweep(
    x: &[f32],
    w: &[f32],
    grid: &[f32],
    sign: f32,
    events: &mut Vec<(f32, u32)>,
    best: &mut TopK,
) {
    let n = grid.len();
    // Code of every weight for an infinitesimal inverse scale: the grid value nearest zero.
    let start = nearest_grid_index(grid, 0.0);
    let mut idx = vec![start; x.len()];
    let (mut sxg, mut sgg) = (0.0f64, 0.0f64);
    events.clear();
    for (i, (&xv, &wv)) in x.iter().zip(w).enumerate() {
        let xi = (sign * xv) as f64;
        let wi = wv as f64;
        let g = grid[start] as f64;
        sxg += wi * xi * g;
        sgg += wi * g * g;
        if wv == 0.0 {
            continue;
        }
        if xi > 0.0 {
            for k in start..n - 1 {
                let mid = 0.5 * (grid[k] + grid[k + 1]);
                if mid > 0.0 {
                    events.push(((mid as f64 / xi) as f32, i as u32 * 2));
                }
            }
        } else if xi < 0.0 {
            for k in (1..=start).rev() {
                let mid = 0.5 * (grid[k - 1] + grid[k]);
                if mid < 0.0 {
                    events.push(((mid as f64 / xi) as f32, i as u32 * 2 + 1));
                }
            }
        }
    }
    events.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut consider = |sxg: f64, sgg: f64| {
        if sgg > 0.0 && sxg > 0.0 {
            best.offer(sxg * sxg / sgg, sign * (sxg / sgg) as f32);
        }
    };
    consider(sxg, sgg);
    for (e, &(t, code)) in events.iter().enumerate() {
        let i = (code / 2) as usize;
        let old = grid[idx[i]] as f64;
        idx[i] = if code & 1 == 0 {
            idx[i] + 1
        } else {
            idx[i] - 1
        };
        let new = grid[idx[i]] as f64;
        let xi = (sign * x[i]) as f64;
        let wi = w[i] as f64;
        sxg += wi * xi * (new - old);
        sgg += wi * (new * new - old * old);
        // Only assignments between distinct event points are reachable; evaluate once per point.
        if events.get(e + 1).is_none_or(|next| next.0 != t) {
            consider(sxg, sgg);
        }
    }
}

/// Result of an f16 scale search: the stored scale bits and the weighted squared error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleFit {
    /// The f16 bit pattern of the chosen scale.
    pub d_bits: u16,
    /// Weighted squared error with optimal codes at that scale.
    pub err: f64,
}

/// Best f16 scale for `x̂ = d·grid[code]` among f16 values within `radius` steps of each
/// candidate (and zero). Codes for the result come from [`scaled_grid_error`].
pub fn best_f16_scale(
    x: &[f32],
    w: &[f32],
    grid: &[f32],
    candidates: impl IntoIterator<Item = f32>,
    radius: u16,
) -> ScaleFit {
    let mut best = ScaleFit {
        d_bits: 0,
        err: scaled_grid_error(x, w, grid, 0.0, None),
    };
    for c in candidates {
        for bits in f16_neighbours(c, radius) {
            let d = f16_to_f32(bits);
            if d == 0.0 {
                continue;
            }
            let err = scaled_grid_error(x, w, grid, d, None);
            if err < best.err {
                best = ScaleFit { d_bits: bits, err };
            }
        }
    }
    best
}

/// Result of an affine (`x̂ = d·q + m`) search: stored f16 scale and offset, and the error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineFit {
    /// f16 bits of the scale `d` (non-negative).
    pub d_bits: u16,
    /// f16 bits of the offset `m`.
    pub m_bits: u16,
    /// Weighted squared error with optimal codes.
    pub err: f64,
}

/// Optimal code in `0..=nmax` for `x` under `x̂ = q·d + m` (f32 ops in ggml's order), and `x̂`.
#[inline]
pub fn best_affine_code(nmax: u8, d: f32, m: f32, x: f32) -> (u8, f32) {
    if d == 0.0 {
        return (0, m);
    }
    let r = ((x - m) / d).round().clamp(0.0, nmax as f32) as i32;
    let mut best = (r as u8, r as f32 * d + m);
    let mut best_err = (x - best.1).abs();
    for q in [r - 1, r + 1] {
        if q < 0 || q > nmax as i32 {
            continue;
        }
        let v = q as f32 * d + m;
        let e = (x - v).abs();
        if e < best_err {
            best_err = e;
            best = (q as u8, v);
        }
    }
    best
}

/// Weighted squared error of `x̂ = q·d + m` with optimal codes; writes codes when given.
pub fn affine_error(
    x: &[f32],
    w: &[f32],
    nmax: u8,
    d: f32,
    m: f32,
    mut codes: Option<&mut [u8]>,
) -> f64 {
    let mut err = 0.0f64;
    for (i, (&xi, &wi)) in x.iter().zip(w).enumerate() {
        let (q, v) = best_affine_code(nmax, d, m, xi);
        let diff = (xi - v) as f64;
        err += wi as f64 * diff * diff;
        if let Some(codes) = codes.as_deref_mut() {
            codes[i] = q;
        }
    }
    err
}

/// Weighted least-squares `(d, m)` for fixed codes `q`: minimises `Σ w (x − d·q − m)²`.
/// Falls back to `d = 0`, `m` = weighted mean when the codes are all equal.
pub fn fit_affine(x: &[f32], w: &[f32], q: &[u8]) -> (f64, f64) {
    let (mut sw, mut sq, mut sqq, mut sx, mut sqx) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for ((&xi, &wi), &qi) in x.iter().zip(w).zip(q) {
        let (xi, wi, qi) = (xi as f64, wi as f64, qi as f64);
        sw += wi;
        sq += wi * qi;
        sqq += wi * qi * qi;
        sx += wi * xi;
        sqx += wi * qi * xi;
    }
    let det = sw * sqq - sq * sq;
    if sw <= 0.0 {
        return (0.0, 0.0);
    }
    if det <= 1e-12 * sw * sqq.max(1.0) {
        return (0.0, sx / sw);
    }
    let d = (sw * sqx - sq * sx) / det;
    let m = (sqq * sx - sq * sqx) / det;
    (d, m)
}

/// Best stored `(d, m)` (f16 each, `d ≥ 0`) for `x̂ = q·d + m`, `q ∈ 0..=nmax`.
///
/// Candidates: ggml's reference choice `d = (max − min)/nmax, m = min`, then for inverse scales
/// `(nmax + δ)/(max − min)` with `δ ∈ [−1, 1]` in steps of 0.1: RTN codes, weighted least-squares
/// `(d, m)`, and two rounds of (round to f16 → best `m` for the rounded `d` → optimal codes →
/// refit). Finally the best pair's f16 neighbours (±2 steps each) are tried. Every pair is scored
/// by its exact decoded error with optimal codes, so the result is never worse than the
/// reference choice.
pub fn best_affine_f16(x: &[f32], w: &[f32], nmax: u8) -> AffineFit {
    let (min, max) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let mut best = AffineFit {
        d_bits: 0,
        m_bits: f32_to_f16(min),
        err: f64::INFINITY,
    };
    let try_pair = |d_bits: u16, m_bits: u16, best: &mut AffineFit| -> f64 {
        let (d, m) = (f16_to_f32(d_bits), f16_to_f32(m_bits));
        if !d.is_finite() || !m.is_finite() || d < 0.0 {
            return f64::INFINITY;
        }
        let err = affine_error(x, w, nmax, d, m, None);
        if err < best.err {
            *best = AffineFit {
                d_bits,
                m_bits,
                err,
            };
        }
        err
    };
    let clamp16 = |v: f64| f16_neighbours(v as f32, 0).next().unwrap_or(0);
    // Reference choice (what ggml's quantize_row_q*_1_ref stores).
    try_pair(
        clamp16(((max - min) / nmax as f32) as f64),
        clamp16(min as f64),
        &mut best,
    );
    let range = max - min;
    if range > 0.0 && range.is_finite() {
        let mut q = vec![0u8; x.len()];
        for step in -10..=10 {
            let t = (nmax as f32 + 0.1 * step as f32) / range;
            for (qi, &xi) in q.iter_mut().zip(x) {
                *qi = ((xi - min) * t).round().clamp(0.0, nmax as f32) as u8;
            }
            let (mut d, mut _m) = fit_affine(x, w, &q);
            for _ in 0..2 {
                if d < 0.0 {
                    break;
                }
                let d_bits = clamp16(d);
                let d16 = f16_to_f32(d_bits) as f64;
                // Best offset for the rounded scale and current codes.
                let (mut sw, mut sr) = (0.0f64, 0.0f64);
                for ((&xi, &wi), &qi) in x.iter().zip(w).zip(&q) {
                    sw += wi as f64;
                    sr += wi as f64 * (xi as f64 - d16 * qi as f64);
                }
                let m_bits = clamp16(if sw > 0.0 { sr / sw } else { min as f64 });
                if try_pair(d_bits, m_bits, &mut best).is_infinite() {
                    break;
                }
                affine_error(x, w, nmax, d16 as f32, f16_to_f32(m_bits), Some(&mut q));
                (d, _m) = fit_affine(x, w, &q);
            }
        }
    } else {
        // Constant block: d = 0 and m as close as f16 allows.
        for m_bits in f16_neighbours(min, 1) {
            try_pair(0, m_bits, &mut best);
        }
    }
    let centre = best;
    for d_bits in f16_neighbours(f16_to_f32(centre.d_bits), 2) {
        for m_bits in f16_neighbours(f16_to_f32(centre.m_bits), 2) {
            try_pair(d_bits, m_bits, &mut best);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_grid_index_matches_brute_force() {
        let grid: Vec<f32> = [
            -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
        ]
        .iter()
        .map(|&v| v as f32)
        .collect();
        for k in -1500..1500 {
            let r = k as f32 * 0.1;
            let got = nearest_grid_index(&grid, r);
            let best = grid
                .iter()
                .map(|g| (g - r).abs())
                .fold(f32::INFINITY, f32::min);
            assert_eq!((grid[got] - r).abs(), best, "r = {r}");
        }
    }

    #[test]
    fn sweep_finds_the_exhaustive_optimum_on_small_blocks() {
        // Brute force: the continuous optimum over a dense scale grid can't beat the sweep.
        let grid: Vec<f32> = (-4..=3).map(|v| v as f32).collect();
        let x = [0.9f32, -0.35, 0.1, 0.62, -1.3, 0.05, 0.44, -0.8];
        let w = [1.0f32, 2.0, 0.5, 1.0, 3.0, 1.0, 0.2, 1.0];
        let cands = grid_scale_candidates(&x, &w, &grid, 1);
        let sweep_err = scaled_grid_error(&x, &w, &grid, cands[0], None);
        let mut brute = f64::INFINITY;
        for k in 1..200_000 {
            for s in [1.0f32, -1.0] {
                let d = s * k as f32 * 2.0e-5;
                brute = brute.min(scaled_grid_error(&x, &w, &grid, d, None));
            }
        }
        assert!(
            sweep_err <= brute * (1.0 + 1e-9),
            "sweep {sweep_err} vs brute {brute}"
        );
    }

    #[test]
    fn uniform_code_agrees_with_general_search() {
        let grid: Vec<f32> = (-16..=15).map(|v| v as f32).collect();
        for k in -4000..4000 {
            let x = k as f32 * 0.0137;
            for d in [0.1f32, -0.1, 0.0371, -1.3e-3, 0.0] {
                let (a, va) = best_uniform_code(-16, 15, d, x);
                let (b, vb) = best_grid_code(&grid, d, x);
                assert_eq!((x - va).abs(), (x - vb).abs(), "x {x} d {d}: codes {a} {b}");
            }
        }
    }

    #[test]
    fn f16_neighbours_stay_finite_and_keep_sign() {
        let n: Vec<u16> = f16_neighbours(-1.0, 2).collect();
        assert_eq!(n.len(), 5);
        assert!(n.iter().all(|&b| b & 0x8000 != 0));
        assert!(f16_neighbours(1.0e9, 3).all(|b| f16_to_f32(b).is_finite()));
        assert_eq!(f16_neighbours(0.0, 2).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn affine_fit_recovers_exact_affine_data() {
        let x: Vec<f32> = (0..32).map(|i| 0.25 * (i % 16) as f32 - 1.0).collect();
        let w = vec![1.0f32; 32];
        let fit = best_affine_f16(&x, &w, 15);
        assert_eq!(fit.err, 0.0);
        assert_eq!(f16_to_f32(fit.d_bits), 0.25);
        assert_eq!(f16_to_f32(fit.m_bits), -1.0);
    }

    #[test]
    fn zero_importance_block_falls_back_to_plain_error() {
        let mut w = [5.0f32; 4];
        fill_weights(Some(&[0.0, -1.0, f32::NAN, 0.0]), &mut w);
        assert_eq!(w, [1.0; 4]);
        fill_weights(Some(&[0.0, -1.0, 2.0, 0.5]), &mut w);
        assert_eq!(w, [0.0, 0.0, 2.0, 0.5]);
    }
}

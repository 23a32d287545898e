//! Shared round-to-nearest (RTN) search helpers for block quantisers.
//!
//! All helpers minimise a *weighted squared error* `Σ wᵢ (xᵢ − x̂ᵢ)²` where `x̂ᵢ` is the value the
//! decoder will produce, computed with the same f32 operations as ggml's dequantisers (the scale is
//! first rounded to the f16 the file stores). Errors are accumulated in f64.
//!
//! The building blocks are:
//! - [`search_grid_scale`]: for a code grid `g` (uniform like `-8..=7`, or non-linear like
//!   IQ4_NL's table) and reconstruction `x̂ = d·g[code]`, least-squares fits of RTN codes along an
//!   inverse-scale ladder, f16 neighbours and refits;
//! - [`search_affine_f16`]: the same for `x̂ = d·q + m` formats (Q4_1, Q5_1);
//! - exact scoring for a stored scale: [`grid_codes`], [`affine_error`];
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

// ------------------------------------------------------------------------------------------------
// Fast search: the quantisers' hot path.
//
// Rather than sweeping every reachable code assignment exactly, the helpers below evaluate a
// small, smart set of scales, in f32 with fixed-size lane accumulators that the compiler
// vectorises. They only *rank* candidate scales: the final codes always come from the exact
// [`grid_codes`] (every code the nearest decoded value under ggml's f32 arithmetic).

/// Lanes of the f32 accumulators (slices passed to the fast helpers are multiples of this long).
pub const LANES: usize = 8;

/// Round to the nearest integer (ties to even) for `|v| ≤ 2²²`.
///
/// Adding and subtracting 1.5·2²³ leaves the rounded value; unlike `f32::round` (a libm call on
/// baseline x86-64) this is two additions and vectorises.
#[inline(always)]
pub fn round_fast(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// `v` clamped to `[lo, hi]` by plain comparisons (compiles to `maxps`/`minps`; a NaN `v`
/// gives `hi`).
#[inline(always)]
pub fn clamp_fast(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v > lo { v } else { lo };
    if v < hi {
        v
    } else {
        hi
    }
}

/// `x` and `w` in fixed-size lane groups (both lengths must be multiples of [`LANES`]).
#[inline(always)]
fn lane_groups<'a>(
    x: &'a [f32],
    w: &'a [f32],
) -> impl Iterator<Item = (&'a [f32; LANES], &'a [f32; LANES])> {
    debug_assert!(x.len().is_multiple_of(LANES) && w.len() == x.len());
    x.chunks_exact(LANES)
        .zip(w.chunks_exact(LANES))
        .map(|(a, b)| (a.try_into().unwrap(), b.try_into().unwrap()))
}

/// A sorted set of code values (in units of the block scale) with an O(1) nearest-code lookup.
pub trait CodeGrid {
    /// Number of codes.
    const LEN: usize;
    /// Smallest code value.
    const MIN: f32;
    /// Largest code value.
    const MAX: f32;
    /// Value of code `c`.
    fn value(c: usize) -> f32;
    /// Code nearest to `r` and its value; `r` must already lie in `[MIN, MAX]`.
    fn nearest_in_range(r: f32) -> (usize, f32);

    /// Code nearest to `r` (clamped to the grid) and its value.
    #[inline(always)]
    fn nearest(r: f32) -> (usize, f32) {
        Self::nearest_in_range(clamp_fast(r, Self::MIN, Self::MAX))
    }
}

/// The integer grid `LO..=HI` (code = value − `LO`), as in Q4_0 (`-8..=7`), Q5_0, Q8_0.
pub struct UniformGrid<const LO: i32, const HI: i32>;

impl<const LO: i32, const HI: i32> CodeGrid for UniformGrid<LO, HI> {
    const LEN: usize = (HI - LO + 1) as usize;
    const MIN: f32 = LO as f32;
    const MAX: f32 = HI as f32;

    #[inline(always)]
    fn value(c: usize) -> f32 {
        (c as i32 + LO) as f32
    }

    #[inline(always)]
    fn nearest_in_range(r: f32) -> (usize, f32) {
        let q = round_fast(r);
        ((q - LO as f32) as usize, q)
    }
}

/// Weighted least-squares statistics `(Σ w·x·g, Σ w·g²)` of the codes nearest to `x·iscale`
/// (`g` = code value). The best scale for these codes is `Σwxg / Σwg²`, and it lowers the error
/// below `Σwx²` by `(Σwxg)² / Σwg²`.
#[inline]
pub fn grid_stats<G: CodeGrid>(x: &[f32], w: &[f32], iscale: f32) -> (f32, f32) {
    let (mut sxg, mut sgg) = ([0f32; LANES], [0f32; LANES]);
    for (xc, wc) in lane_groups(x, w) {
        let mut g = [0f32; LANES];
        for l in 0..LANES {
            g[l] = G::nearest(xc[l] * iscale).1;
        }
        for l in 0..LANES {
            let wg = wc[l] * g[l];
            sxg[l] += wg * xc[l];
            sgg[l] += wg * g[l];
        }
    }
    (sxg.iter().sum(), sgg.iter().sum())
}

/// Weighted squared error of `x̂ = d·g` with every code the nearest to `x/d` (fast estimate:
/// multiplies by `1/d` and accumulates in f32). With `d = 0` it is `Σ w·x²`.
#[inline]
pub fn grid_error<G: CodeGrid>(x: &[f32], w: &[f32], d: f32) -> f32 {
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let mut acc = [0f32; LANES];
    for (xc, wc) in lane_groups(x, w) {
        let mut g = [0f32; LANES];
        for l in 0..LANES {
            g[l] = G::nearest(xc[l] * id).1;
        }
        for l in 0..LANES {
            let e = xc[l] - d * g[l];
            acc[l] += wc[l] * e * e;
        }
    }
    acc.iter().sum()
}

/// Exact optimal codes for the stored scale `d`: each code's decoded value `d·g` (the f32
/// product ggml computes) is the nearest to `x` (the code from `x/d` is checked against its
/// neighbours). With `d = 0` every code is the one nearest to zero.
pub fn grid_codes<G: CodeGrid>(x: &[f32], d: f32, codes: &mut [u8]) {
    if d == 0.0 {
        codes.fill(G::nearest(0.0).0 as u8);
        return;
    }
    for (c, &xi) in codes.iter_mut().zip(x) {
        let (k, g) = G::nearest(xi / d);
        let mut best = (k, (xi - d * g).abs());
        if k > 0 {
            let e = (xi - d * G::value(k - 1)).abs();
            if e < best.1 {
                best = (k - 1, e);
            }
        }
        if k + 1 < G::LEN {
            let e = (xi - d * G::value(k + 1)).abs();
            if e < best.1 {
                best = (k + 1, e);
            }
        }
        *c = best.0 as u8;
    }
}

/// Inverse-scale ladder for a symmetric grid: for each end `t` of the grid (`lo < 0 < hi`), the
/// inverse scales mapping the block's signed extreme `xm` to `t·(1 + rel·k)`, `k ∈ −n..=n`.
/// This is where the optimal scale lies for any sensible block (ggml's `make_qx_quants` and
/// IQ4 searches scan the same region).
pub fn iscale_ladder(xm: f32, lo: f32, hi: f32, rel: f32, n: i32) -> impl Iterator<Item = f32> {
    [lo, hi]
        .into_iter()
        .flat_map(move |t| (-n..=n).map(move |k| t * (1.0 + rel * k as f32) / xm))
}

/// Best f16 scale for `x̂ = d·g` (codes on grid `G`, either sign of `d`) from a smart candidate
/// set, by the fast error estimate:
/// 1. every inverse scale in `iscales` gives RTN codes and their least-squares scale; the
///    `keep` best by least-squares gain are tried with their f16 neighbours (±1 step);
/// 2. each scale in `extra` (e.g. ggml's own choice) is tried as rounded to f16;
/// 3. the best scale's codes are refitted by least squares and the refit's f16 neighbours tried,
///    while that improves (at most 4 times).
///
/// Returns the f16 bits (0 for an all-zero block) and the estimated error.
pub fn search_grid_scale<G: CodeGrid>(
    x: &[f32],
    w: &[f32],
    iscales: impl IntoIterator<Item = f32>,
    extra: &[f32],
    keep: usize,
) -> (u16, f32) {
    const MAX_KEEP: usize = 4;
    let keep = keep.clamp(1, MAX_KEEP);
    let mut top = [(f32::NEG_INFINITY, 0f32); MAX_KEEP];
    for is in iscales {
        if !is.is_finite() || is == 0.0 {
            continue;
        }
        let (sxg, sgg) = grid_stats::<G>(x, w, is);
        if sgg <= 0.0 {
            continue;
        }
        let score = sxg * sxg / sgg;
        if score > top[keep - 1].0 {
            let mut pos = keep - 1;
            while pos > 0 && top[pos - 1].0 < score {
                top[pos] = top[pos - 1];
                pos -= 1;
            }
            top[pos] = (score, sxg / sgg);
        }
    }

    let mut tried = Tried::default();
    let mut best = (0u16, grid_error::<G>(x, w, 0.0));
    let mut try_bits = |bits: u16, best: &mut (u16, f32)| -> bool {
        let d = f16_to_f32(bits);
        if d == 0.0 || !d.is_finite() || !tried.insert(bits) {
            return false;
        }
        let e = grid_error::<G>(x, w, d);
        if e < best.1 {
            *best = (bits, e);
            return true;
        }
        false
    };
    for &(score, s) in &top[..keep] {
        if score > f32::NEG_INFINITY {
            for bits in f16_neighbours(s, 1) {
                try_bits(bits, &mut best);
            }
        }
    }
    for &s in extra {
        if s.is_finite() {
            try_bits(f32_to_f16(s), &mut best);
        }
    }
    for _ in 0..4 {
        let d = f16_to_f32(best.0);
        if d == 0.0 {
            break;
        }
        let (sxg, sgg) = grid_stats::<G>(x, w, 1.0 / d);
        if sgg <= 0.0 {
            break;
        }
        let mut improved = false;
        for bits in f16_neighbours(sxg / sgg, 1) {
            improved |= try_bits(bits, &mut best);
        }
        if !improved {
            break;
        }
    }
    best
}

/// A small set of f16 bit patterns already evaluated (linear scan; searches try a few dozen).
struct Tried {
    n: usize,
    bits: [u16; 64],
}

impl Default for Tried {
    fn default() -> Self {
        Tried {
            n: 0,
            bits: [0; 64],
        }
    }
}

impl Tried {
    /// Record `b`; false if it was already there. When full, everything counts as new.
    fn insert(&mut self, b: u16) -> bool {
        if self.bits[..self.n].contains(&b) {
            return false;
        }
        if self.n < self.bits.len() {
            self.bits[self.n] = b;
            self.n += 1;
        }
        true
    }
}

/// Fast estimate of [`affine_error`]: codes `q = round((x − m)/d)` clamped to `0..=nmax` (via
/// `1/d`), f32 accumulation.
#[inline]
pub fn affine_error_fast(x: &[f32], w: &[f32], nmax: f32, d: f32, m: f32) -> f32 {
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let mut acc = [0f32; LANES];
    for (xc, wc) in lane_groups(x, w) {
        for l in 0..LANES {
            let q = round_fast(clamp_fast((xc[l] - m) * id, 0.0, nmax));
            let e = xc[l] - (q * d + m);
            acc[l] += wc[l] * e * e;
        }
    }
    acc.iter().sum()
}

/// Weighted sums for fitting `y = x − offset ≈ d·q + m'` with `q = round(y·iscale)` clamped to
/// `0..=nmax`: `Σw, Σwq, Σwq², Σwy, Σwqy, Σwy²`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AffineStats {
    sums: [f64; 6],
    offset: f64,
}

impl AffineStats {
    /// Collect the sums for the RTN codes at inverse scale `iscale` about `offset`.
    #[inline]
    pub fn collect(x: &[f32], w: &[f32], offset: f32, iscale: f32, nmax: f32) -> Self {
        let mut acc = [[0f32; LANES]; 6];
        for (xc, wc) in lane_groups(x, w) {
            for l in 0..LANES {
                let y = xc[l] - offset;
                let q = round_fast(clamp_fast(y * iscale, 0.0, nmax));
                let wl = wc[l];
                let (wq, wy) = (wl * q, wl * y);
                acc[0][l] += wl;
                acc[1][l] += wq;
                acc[2][l] += wq * q;
                acc[3][l] += wy;
                acc[4][l] += wq * y;
                acc[5][l] += wy * y;
            }
        }
        AffineStats {
            sums: acc.map(|a| a.iter().map(|&v| v as f64).sum()),
            offset: offset as f64,
        }
    }

    /// Least-squares `(d, m, error)` for the collected codes (`m` including the offset), or
    /// `None` when the codes are all equal or the scale comes out negative.
    pub fn fit(&self) -> Option<(f64, f64, f64)> {
        let [sw, sq, sqq, sy, sqy, syy] = self.sums;
        let det = sw * sqq - sq * sq;
        if sw <= 0.0 || det <= 1e-12 * sw * sqq.max(1.0) {
            return None;
        }
        let d = (sw * sqy - sq * sy) / det;
        let m = (sqq * sy - sq * sqy) / det;
        (d > 0.0).then_some((d, m + self.offset, syy - d * sqy - m * sy))
    }

    /// The least-squares offset for the collected codes and a fixed scale `d`.
    pub fn offset_for(&self, d: f64) -> f64 {
        let [sw, sq, _, sy, _, _] = self.sums;
        self.offset + (sy - d * sq) / sw.max(f64::MIN_POSITIVE)
    }
}

/// Best stored `(d, m)` (f16 each, `d ≥ 0`) for `x̂ = q·d + m`, `q ∈ 0..=nmax`, from a smart
/// candidate set, by the fast error estimate:
/// 1. ggml's reference choice `d = (max − min)/nmax, m = min`;
/// 2. RTN codes at inverse scales `(nmax + 0.1·k)/(max − min)`, `k ∈ −10..=10`, each refitted by
///    weighted least squares; the 3 best fits are rounded to f16 (`m` re-fitted for the rounded
///    `d`);
/// 3. the best pair's f16 neighbours (±1 step each);
/// 4. least-squares refits of the best pair's codes while they improve (at most 3).
///
/// The returned error is the fast estimate; codes for the result come from [`affine_error`].
pub fn search_affine_f16(x: &[f32], w: &[f32], nmax: u8) -> AffineFit {
    let nmaxf = nmax as f32;
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
    let mut tried = Tried::default();
    let mut try_pair = |d_bits: u16, m_bits: u16, best: &mut AffineFit| -> bool {
        let (d, m) = (f16_to_f32(d_bits), f16_to_f32(m_bits));
        if !d.is_finite() || !m.is_finite() || d < 0.0 {
            return false;
        }
        // Pairs are remembered by a 16-bit hash; a collision only skips a candidate.
        if !tried.insert(d_bits.rotate_left(7) ^ m_bits) {
            return false;
        }
        let err = affine_error_fast(x, w, nmaxf, d, m) as f64;
        if err < best.err {
            *best = AffineFit {
                d_bits,
                m_bits,
                err,
            };
            return true;
        }
        false
    };
    let to16 = |v: f64| f16_neighbours(v as f32, 0).next().unwrap_or(0);
    let range = max - min;
    try_pair(to16((range / nmaxf) as f64), to16(min as f64), &mut best);
    if !(range > 0.0 && range.is_finite()) {
        for m_bits in f16_neighbours(min, 1) {
            try_pair(0, m_bits, &mut best);
        }
        return best;
    }
    // Keep the three best continuous fits (by their continuous error).
    let mut top: [(f64, f64, AffineStats); 3] = [(f64::INFINITY, 0.0, AffineStats::default()); 3];
    for k in -10..=10 {
        let st = AffineStats::collect(x, w, min, (nmaxf + 0.1 * k as f32) / range, nmaxf);
        if let Some((d, _, err)) = st.fit() {
            if err < top[2].0 {
                let mut pos = 2;
                while pos > 0 && top[pos - 1].0 > err {
                    top[pos] = top[pos - 1];
                    pos -= 1;
                }
                top[pos] = (err, d, st);
            }
        }
    }
    for &(err, d, st) in &top {
        if err.is_finite() {
            let d_bits = to16(d);
            try_pair(
                d_bits,
                to16(st.offset_for(f16_to_f32(d_bits) as f64)),
                &mut best,
            );
        }
    }
    let centre = best;
    for d_bits in f16_neighbours(f16_to_f32(centre.d_bits), 1) {
        for m_bits in f16_neighbours(f16_to_f32(centre.m_bits), 1) {
            try_pair(d_bits, m_bits, &mut best);
        }
    }
    for _ in 0..3 {
        let (d, m) = (f16_to_f32(best.d_bits), f16_to_f32(best.m_bits));
        if d == 0.0 {
            break;
        }
        let st = AffineStats::collect(x, w, m, 1.0 / d, nmaxf);
        let Some((d, m, _)) = st.fit() else { break };
        let d_bits = to16(d);
        let mut improved = try_pair(d_bits, to16(m), &mut best);
        improved |= try_pair(
            d_bits,
            to16(st.offset_for(f16_to_f32(d_bits) as f64)),
            &mut best,
        );
        if !improved {
            break;
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
    fn zero_importance_block_falls_back_to_plain_error() {
        let mut w = [5.0f32; 4];
        fill_weights(Some(&[0.0, -1.0, f32::NAN, 0.0]), &mut w);
        assert_eq!(w, [1.0; 4]);
        fill_weights(Some(&[0.0, -1.0, 2.0, 0.5]), &mut w);
        assert_eq!(w, [0.0, 0.0, 2.0, 0.5]);
    }
}

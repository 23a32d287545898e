//! Importance-weighted round-to-nearest (RTN) quantiser for the QE formats, with outliers.
//!
//! For a row `x` (`p` weights) and importances `v` (default 1; negative/NaN count as 0):
//!
//! 1. **Outlier candidates**: the `capacity(p)` entries with the largest `|xᵢ|·sqrt(vᵢ)` (ties:
//!    lower column first), among entries with a positive score.
//! 2. **Grid fit**: per block, the candidates get weight 0 and the f16 scale `d` minimising
//!    `Σ vᵢ (xᵢ − d·levelᵢ)²` over the remaining weights is searched: RTN codes for the inverse
//!    scales `(L − 0.2 + 0.1·k)/amax`, `k = 0..=17` (`L` = top level `(2^b − 1)/2`, `amax` the
//!    block's largest non-candidate `|x|`; the upper end stretches the top level by up to 1.5
//!    steps, i.e. clipping), their least-squares scales and f16 neighbours, `amax/L`, then
//!    least-squares refits ([`search::search_grid_scale`]). Every code is then the exact nearest
//!    decoded value for that `d` (outliers included: their code is the nearest, usually clamped,
//!    grid value).
//! 3. **Outlier values**: each candidate stores `h = xᵢ − d·levelᵢ` rounded to f16 (clamped to
//!    ±65504). **Rule for unused capacity**: a candidate is kept only if the rounded `h` strictly
//!    lowers its weighted error, `vᵢ (xᵢ − ĝᵢ − h)² < vᵢ (xᵢ − ĝᵢ)²`; so entries whose value
//!    already sits on the grid (h = 0), and zero-score entries, leave their slot unused
//!    (column 0xFFFF). A row never has more outliers than it has such meaningful candidates.
//!
//! If a block's only positive-importance weights are all candidates, the remaining weights are
//! fitted with unit importance (so they still get a sensible grid).

use super::{encode_row, QeFormat, QK};
use crate::error::FormatError;
use crate::float::{f16_to_f32, f32_to_f16};
use crate::search::{self, fill_weights, round_fast, CodeGrid};

/// The QE half-integer grid with top code `M = 2^b − 1`: levels `c − M/2`.
pub(crate) struct HalfGrid<const M: u8>;

impl<const M: u8> CodeGrid for HalfGrid<M> {
    const LEN: usize = M as usize + 1;
    const MIN: f32 = -(M as f32) * 0.5;
    const MAX: f32 = M as f32 * 0.5;

    #[inline(always)]
    fn value(c: usize) -> f32 {
        c as f32 - M as f32 * 0.5
    }

    #[inline(always)]
    fn nearest_in_range(r: f32) -> (usize, f32) {
        let c = round_fast(r + M as f32 * 0.5);
        (c as usize, c - M as f32 * 0.5)
    }
}

/// Best f16 scale and codes for one block (weights `w` already zero at outlier candidates).
fn fit_block<G: CodeGrid>(x: &[f32], w: &[f32], codes: &mut [u8]) -> f32 {
    let amax = x
        .iter()
        .zip(w)
        .filter(|(_, &wi)| wi > 0.0)
        .fold(0f32, |m, (&xi, _)| m.max(xi.abs()));
    let d = if amax == 0.0 {
        0.0
    } else {
        let ladder = (0..=17).map(move |k| (G::MAX - 0.2 + 0.1 * k as f32) / amax);
        let bits = search::search_grid_scale::<G>(x, w, ladder, &[amax / G::MAX], 3).0;
        f16_to_f32(bits)
    };
    search::grid_codes::<G>(x, d, codes);
    d
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
/// docs). `importance`, when given, has one entry per weight. Non-finite inputs are an error.
pub fn quantize_row_rtn(
    fmt: QeFormat,
    src: &[f32],
    importance: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), FormatError> {
    let p = src.len();
    let nb = super::check_width(fmt, p)?;
    let ty = super::qe_type(fmt);
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
        return Err(FormatError::LengthMismatch {
            ty,
            what: "packed row",
            got: out.len(),
            expected: fmt.row_bytes(p),
        });
    }

    let cand = outlier_candidates(src, importance, fmt.capacity(p));
    let mut is_cand = vec![false; p];
    for &i in &cand {
        is_cand[i] = true;
    }

    let mut scales = vec![0f32; nb];
    let mut codes = vec![0u8; p];
    let mut w = [0f32; QK];
    for (k, scale) in scales.iter_mut().enumerate() {
        let r = k * QK..(k + 1) * QK;
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
        let cs = &mut codes[r];
        *scale = match fmt.bits {
            2 => fit_block::<HalfGrid<3>>(x, &w, cs),
            3 => fit_block::<HalfGrid<7>>(x, &w, cs),
            _ => fit_block::<HalfGrid<15>>(x, &w, cs),
        };
    }

    let mut outliers = Vec::with_capacity(cand.len());
    for &i in &cand {
        let g = fmt.value(scales[i / QK], codes[i]);
        let h = f16_to_f32(f32_to_f16((src[i] - g).clamp(-65504.0, 65504.0)));
        let before = (src[i] - g).abs();
        let after = (src[i] - (g + h)).abs();
        if after < before {
            outliers.push((i as u16, h));
        }
    }
    encode_row(fmt, &scales, &codes, &outliers, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_grid_matches_levels() {
        let f = QeFormat { bits: 3, pool: 0 };
        for c in 0..8u8 {
            assert_eq!(HalfGrid::<7>::value(c as usize), f.level(c));
            assert_eq!(HalfGrid::<7>::nearest(f.level(c)), (c as usize, f.level(c)));
        }
        assert_eq!(HalfGrid::<3>::nearest(100.0), (3, 1.5));
        assert_eq!(HalfGrid::<3>::nearest(-100.0), (0, -1.5));
    }

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
}

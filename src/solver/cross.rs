//! The paired-calibration target: aim the quantised layer at the *float* model's outputs from
//! the *quantised* model's inputs.
//!
//! The one-shot objective `‖(W − Ŵ)X‖²` scores a layer on the float model's inputs X, but in the
//! quantised model the layer sees X̃ = X + δ, δ being what the layers before it got wrong. A
//! paired calibration (`calibrate --paired Q.gguf`) runs the float model and a quantised model Q
//! in lockstep and records Σ̃ = Σ_t x̃ x̃ᵀ and the cross products M = Σ_t x x̃ᵀ. Then
//!
//! ```text
//! ‖WX − ŴX̃‖² = tr(Ŵ Σ̃ Ŵᵀ) − 2 tr(W M Ŵᵀ) + const = ‖(W* − Ŵ)X̃‖² + const,   W* = W M Σ̃⁻¹,
//! ```
//!
//! so the ordinary solver on (W*, Σ̃) minimises the output error of the layer as it will run,
//! compensating the upstream error where the weights can. W* is a least-squares fit over the
//! calibration tokens, so it is regularised the way Σ is in the solver: both second moments are
//! shrunk towards their diagonals by the same `shrink` (`M_s = (1−s)M + s·diag M`,
//! `Σ̃_s = (1−s)Σ̃ + s·diag Σ̃`), and a ridge `λ‖W* − W‖²` with `λ = damp·mean(diag Σ̃)` keeps W*
//! near W where the tokens say little: `W* = W(M_s + λI)(Σ̃_s + λI)⁻¹`, which is W exactly when
//! X̃ = X. With `s = 1` the correction is a per-column rescaling. `strength` α blends:
//! `(1−α)W + αW*`.
//!
//! Cost per tensor of q rows, p columns: one q×p×p GEMM (f32) and one Cholesky factorisation and
//! two triangular solves with q right-hand sides (f64), sequential so the result does not depend
//! on the thread count.

use super::sigma::FullSigma;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};

/// How the target is regularised; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct CrossOptions {
    /// Shrinkage towards the diagonals of M and Σ̃ (0..=1).
    pub shrink: f64,
    /// Damping of Σ̃ as a fraction of `mean(diag Σ̃)`.
    pub damp: f64,
    /// Blend between W (0) and W* (1).
    pub strength: f64,
}

/// Replace `w` (`n` rows of width `p`, row-major) by `(1−α)W + α·W(M_s + λI)(Σ̃_s + λI)⁻¹`. `m` is the p×p
/// row-major cross-product matrix (float-model input index first). Returns `None` (leaving `w`
/// unchanged) when the damped Σ̃ is not positive definite or the result is not finite.
pub fn cross_target(
    w: &mut [f32],
    n: usize,
    p: usize,
    sigma: &FullSigma,
    m: &[f32],
    opts: &CrossOptions,
) -> Option<()> {
    if opts.strength == 0.0 {
        return Some(());
    }
    if sigma.p() != p || m.len() != p * p || w.len() != n * p {
        return None;
    }
    let s = opts.shrink.clamp(0.0, 1.0);
    let off = (1.0 - s) as f32;
    let mean = (0..p).map(|j| sigma.get(j, j) as f64).sum::<f64>() / p.max(1) as f64;
    if mean.is_nan() || mean <= 0.0 {
        return None;
    }
    let lam = opts.damp.max(0.0) * mean;
    // M_s + λI, row-major f32 (the ridge pulls W* towards W, not towards 0).
    let mut ms = m.to_vec();
    for (k, v) in ms.iter_mut().enumerate() {
        if k / p != k % p {
            *v *= off;
        } else {
            *v += lam as f32;
        }
    }
    // Z = W·M_s (n×p), row-major destination viewed as the transpose of a column-major one.
    let mut z = vec![0f32; n * p];
    {
        let dst = MatMut::from_column_major_slice_mut(&mut z, p, n);
        let wm = MatRef::from_row_major_slice(w, n, p);
        let mm = MatRef::from_row_major_slice(&ms, p, p);
        // dst = Zᵀ = M_sᵀ·Wᵀ.
        faer::linalg::matmul::matmul(
            dst,
            Accum::Replace,
            mm.transpose(),
            wm.transpose(),
            1.0f32,
            Par::Seq,
        );
    }
    drop(ms);
    let h = Mat::<f64>::from_fn(p, p, |i, j| {
        let v = sigma.get(i, j) as f64;
        if i == j {
            v + lam
        } else {
            v * (1.0 - s)
        }
    });
    let llt = h.llt(Side::Lower).ok()?;
    drop(h);
    // Σ̃_s W*ᵀ = Zᵀ: solve L·Y = Zᵀ, then Lᵀ·W*ᵀ = Y (columns = rows of W).
    let mut rhs = Mat::<f64>::from_fn(p, n, |i, r| z[r * p + i] as f64);
    drop(z);
    let l = llt.L();
    solve_lower_triangular_in_place(l, rhs.as_mut(), Par::Seq);
    solve_upper_triangular_in_place(l.transpose(), rhs.as_mut(), Par::Seq);
    let a = opts.strength;
    let mut out = vec![0f32; n * p];
    for r in 0..n {
        for i in 0..p {
            let v = (1.0 - a) * w[r * p + i] as f64 + a * rhs[(i, r)];
            if !v.is_finite() {
                return None;
            }
            out[r * p + i] = v as f32;
        }
    }
    w.copy_from_slice(&out);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }

    /// ‖W X − V X̃‖² by brute force over the tokens.
    fn out_err(w: &[f32], v: &[f32], x: &[f32], xt: &[f32], n: usize, p: usize, t: usize) -> f64 {
        let mut e = 0.0;
        for r in 0..n {
            for k in 0..t {
                let a: f64 = (0..p).map(|i| (w[r * p + i] * x[k * p + i]) as f64).sum();
                let b: f64 = (0..p).map(|i| (v[r * p + i] * xt[k * p + i]) as f64).sum();
                e += (a - b) * (a - b);
            }
        }
        e
    }

    /// Without regularisation, ‖WX − ŴX̃‖² − ‖(W* − Ŵ)X̃‖² is the same constant for every Ŵ, and
    /// W* itself has the least output error of all candidates.
    #[test]
    fn target_turns_the_paired_objective_into_the_plain_one() {
        let (n, p, t) = (3, 5, 40);
        let mut seed = 7;
        let x: Vec<f32> = (0..t * p).map(|_| lcg(&mut seed)).collect();
        let xt: Vec<f32> = x.iter().map(|&v| v + 0.2 * lcg(&mut seed)).collect();
        let w: Vec<f32> = (0..n * p).map(|_| lcg(&mut seed)).collect();
        let mut sig = vec![0f32; p * p];
        let mut m = vec![0f32; p * p];
        for k in 0..t {
            for i in 0..p {
                for j in 0..p {
                    sig[i * p + j] += xt[k * p + i] * xt[k * p + j];
                    m[i * p + j] += x[k * p + i] * xt[k * p + j];
                }
            }
        }
        let sigma = FullSigma::new(p, sig).unwrap();
        let mut ws = w.clone();
        let opts = CrossOptions {
            shrink: 0.0,
            damp: 0.0,
            strength: 1.0,
        };
        cross_target(&mut ws, n, p, &sigma, &m, &opts).unwrap();
        let zero = vec![0f32; n * p];
        let c0 = out_err(&w, &zero, &x, &xt, n, p, t) - out_err(&ws, &zero, &xt, &xt, n, p, t);
        let best = out_err(&w, &ws, &x, &xt, n, p, t);
        for trial in 0..5 {
            let v: Vec<f32> = (0..n * p).map(|_| lcg(&mut seed)).collect();
            let c = out_err(&w, &v, &x, &xt, n, p, t) - out_err(&ws, &v, &xt, &xt, n, p, t);
            assert!(
                (c - c0).abs() < 1e-3 * c0.abs().max(1.0),
                "trial {trial}: {c} vs {c0}"
            );
            assert!(out_err(&w, &v, &x, &xt, n, p, t) >= best);
            // Plain W is worse than W* on the paired objective (X̃ ≠ X).
        }
        assert!(out_err(&w, &w, &x, &xt, n, p, t) > best);
    }

    /// Identical inputs (X̃ = X, so M = Σ̃) give W* = W whatever the shrinkage and damping.
    #[test]
    fn identical_inputs_leave_the_weights_alone() {
        let (n, p, t) = (4, 6, 30);
        let mut seed = 3;
        let x: Vec<f32> = (0..t * p).map(|_| lcg(&mut seed)).collect();
        let w: Vec<f32> = (0..n * p).map(|_| lcg(&mut seed)).collect();
        let mut sig = vec![0f32; p * p];
        for k in 0..t {
            for i in 0..p {
                for j in 0..p {
                    sig[i * p + j] += x[k * p + i] * x[k * p + j];
                }
            }
        }
        let sigma = FullSigma::new(p, sig.clone()).unwrap();
        for (shrink, damp, strength) in [
            (0.0, 0.0, 1.0),
            (0.5, 0.01, 1.0),
            (1.0, 0.0, 1.0),
            (0.3, 0.1, 0.0),
        ] {
            let mut ws = w.clone();
            let opts = CrossOptions {
                shrink,
                damp,
                strength,
            };
            cross_target(&mut ws, n, p, &sigma, &sig, &opts).unwrap();
            for (a, b) in ws.iter().zip(&w) {
                assert!((a - b).abs() < 1e-4, "shrink {shrink}: {a} vs {b}");
            }
        }
    }
}

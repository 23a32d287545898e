//! The layer-wise solver: minimise `tr((W − Ŵ) Σ (W − Ŵ)ᵀ)` over `Ŵ` whose rows are representable
//! in a block format, by coordinate descent (QuantEase, Behdin et al. 2023) started from the
//! better of round-to-nearest and GPTQ.
//!
//! Conventions: `W` is q×p, row-major; a row is one GGUF row (q = `n_rows` = output features,
//! p = `ne[0]` = input features); Σ is p×p. Modules: [`sigma`] (Σ and damping), [`grid`] (every
//! format as scales + codes), `cd` (the sweeps), `gptq` (the baseline / initialiser), [`cross`]
//! (the target of a paired calibration).
//!
//! Determinism: rows are processed in fixed chunks of [`SolveOptions::chunk_rows`] rows, each
//! chunk wholly by one thread with sequential GEMMs, and objectives are summed in chunk order, so
//! the output does not depend on the number of threads.

mod cd;
pub mod cross;
mod gptq;
pub mod grid;
mod outliers;
pub mod sigma;

pub use cross::{cross_target, CrossOptions};
pub use grid::{Spec, Target};
pub use sigma::{FullSigma, Sigma};

use quantease_formats::GgmlType;
use rayon::prelude::*;
use std::time::Instant;

/// Which algorithm produces the codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// The formats crate's importance-weighted round-to-nearest (importance = diag Σ).
    Rtn,
    /// GPTQ with lazy batches (equal to RTN when Σ is diagonal).
    Gptq,
    /// Coordinate descent from the better of RTN and GPTQ.
    QuantEase,
}

impl Method {
    /// Lower-case name, as written in `quantease.method`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
            Method::QuantEase => "quantease",
        }
    }
}

/// Solver settings.
///
/// Defaults, from the measurements of `solver::tests::study_defaults` (synthetic layers, 64×512,
/// Σ with a decaying spectrum; numbers in `docs/solver.md`):
/// - `iters = 8`, `tol = 1e-3`: from the better start, sweep 1 removes 16–30 % of the
///   objective, sweeps 2–3 another 3–5 %, and by sweep 5–8 a sweep gains < 0.1 %.
/// - `damp = 0.003`: on a held-out Gram the best damping was 0.001–0.01 depending on the number
///   of calibration samples n (n = p/2 … 8p); 0.003 was within 5 % of the best in every case,
///   0 was up to 1.7× worse when n < p, 0.03 and above always worse.
/// - `act_order = false`: act-order improves GPTQ alone (objective −15…20 %) but CD started
///   from it ends 1–2 % worse than CD started from plain GPTQ.
#[derive(Clone, Debug)]
pub struct SolveOptions {
    /// Maximum CD sweeps.
    pub iters: usize,
    /// Stop when a sweep lowers the (damped) objective by less than this fraction.
    pub tol: f64,
    /// Damping `λ` as a fraction of `mean(diag Σ)`: with a full Σ the solver works with
    /// `Σ + λ·mean·I` (reported objectives use the undamped Σ). Ignored for diagonal Σ.
    pub damp: f64,
    /// GPTQ visits columns by decreasing `Σ_jj`.
    pub act_order: bool,
    /// Refit block scales between code updates (ggml types: super-block and sub-block scales; QE
    /// grids: the sub-block scale codes).
    pub refit_scales: bool,
    /// Also start CD from GPTQ (when Σ is full) and keep the better start.
    pub gptq_init: bool,
    /// Rows per work unit (fixed, so results do not depend on the thread count).
    pub chunk_rows: usize,
    /// Columns per lazy block of a sweep (rounded up to a multiple of the super-block length).
    pub block_cols: usize,
    /// Recompute the exact objective after every sweep instead of tracking the changes (for tests).
    pub exact_history: bool,
    /// Use the outlier pool of QE types (false: leave it empty, as for a pool of 0 bytes).
    pub outliers: bool,
    /// Shrink a full Σ towards its diagonal: the solver works with `(1−α)Σ + α·diag(Σ)`
    /// (`α` = this, in 0..=1; reported objectives use the original Σ). `α = 1` is the
    /// imatrix (diagonal) problem; costs a copy of Σ when non-zero.
    pub shrink: f64,
}

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions {
            iters: 8,
            tol: 1e-3,
            damp: 0.003,
            act_order: false,
            refit_scales: true,
            gptq_init: true,
            chunk_rows: 128,
            block_cols: 256,
            exact_history: false,
            outliers: true,
            shrink: 0.0,
        }
    }
}

/// Why a tensor could not be solved.
#[derive(Debug, thiserror::Error)]
pub enum SolverError {
    /// Sizes do not fit.
    #[error("tensor '{tensor}': {what}")]
    Shape {
        /// Tensor name.
        tensor: String,
        /// What is wrong.
        what: String,
    },
    /// A NaN or infinity in the input.
    #[error("tensor '{tensor}': {what} at index {index} is not finite ({value})")]
    NonFinite {
        /// Tensor name.
        tensor: String,
        /// `"weight"` or `"Σ"`.
        what: &'static str,
        /// Flat index.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Σ is not symmetric.
    #[error("tensor '{tensor}': Σ is not symmetric at ({i}, {j}): {a} vs {b}")]
    NotSymmetric {
        /// Tensor name.
        tensor: String,
        /// Row.
        i: usize,
        /// Column.
        j: usize,
        /// `Σ[i, j]`.
        a: f32,
        /// `Σ[j, i]`.
        b: f32,
    },
    /// The solver has no grid for this type.
    #[error("tensor '{tensor}': type {ty} is not supported by the solver")]
    Unsupported {
        /// Tensor name.
        tensor: String,
        /// Target type.
        ty: GgmlType,
    },
    /// GPTQ's Cholesky factorisation failed even with extra damping.
    #[error("tensor '{tensor}': Σ + damping is not positive definite (Cholesky failed at damping {damp})")]
    NotPositiveDefinite {
        /// Tensor name.
        tensor: String,
        /// Largest relative damping tried.
        damp: f64,
    },
}

/// A solved tensor.
#[derive(Clone, Debug)]
pub struct Solution {
    /// Packed rows (q × row bytes), a valid ggml tensor; empty for the uniform grid.
    pub bytes: Vec<u8>,
    /// Dequantised `Ŵ` (q×p), only for the uniform grid.
    pub values: Vec<f32>,
    /// `tr((W−Ŵ)Σ(W−Ŵ)ᵀ)` with the undamped Σ.
    pub objective: f64,
    /// The same for round-to-nearest.
    pub rtn_objective: f64,
    /// The same for GPTQ, if it ran.
    pub gptq_objective: Option<f64>,
    /// `objective / tr(WΣWᵀ)` = ‖(W−Ŵ)X‖² / ‖WX‖².
    pub rel_error: f64,
    /// `rtn_objective / tr(WΣWᵀ)`.
    pub rtn_rel_error: f64,
    /// `tr(WΣWᵀ)` = ‖WX‖², the denominator of the relative errors.
    pub base: f64,
    /// Which start CD used (`Rtn` or `Gptq`), or the method itself for RTN/GPTQ.
    pub init: Method,
    /// CD sweeps run.
    pub sweeps: usize,
    /// Damped objective at the start and after every sweep (never increasing).
    pub history: Vec<f64>,
    /// Outliers stored (QE types; summed over rows).
    pub outliers: usize,
    /// Wall time.
    pub seconds: f64,
}

fn check_inputs(
    name: &str,
    w: &[f32],
    q: usize,
    p: usize,
    sigma: &Sigma,
    spec: &Spec,
) -> Result<(), SolverError> {
    let shape = |what: String| SolverError::Shape {
        tensor: name.to_string(),
        what,
    };
    if q.checked_mul(p) != Some(w.len()) {
        return Err(shape(format!("{} weights for {q}×{p}", w.len())));
    }
    if p == 0 || !p.is_multiple_of(spec.len) {
        return Err(shape(format!(
            "row length {p} is not a multiple of the block size {}",
            spec.len
        )));
    }
    if let Some((index, &value)) = w.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(SolverError::NonFinite {
            tensor: name.to_string(),
            what: "weight",
            index,
            value,
        });
    }
    if let Some(side) = sigma.side() {
        if side != p {
            return Err(shape(format!("Σ is {side}×{side}, rows have {p} columns")));
        }
    }
    let nonfinite = |index, value| SolverError::NonFinite {
        tensor: name.to_string(),
        what: "Σ",
        index,
        value,
    };
    match sigma {
        Sigma::Full(m) => {
            if let Some((index, &value)) = m.data().iter().enumerate().find(|(_, v)| !v.is_finite())
            {
                return Err(nonfinite(index, value));
            }
            for i in 0..p {
                for j in i + 1..p {
                    let (a, b) = (m.get(i, j), m.get(j, i));
                    let tol =
                        1e-5 * (m.get(i, i).abs() * m.get(j, j).abs()).sqrt() + f32::MIN_POSITIVE;
                    if (a - b).abs() > tol {
                        return Err(SolverError::NotSymmetric {
                            tensor: name.to_string(),
                            i,
                            j,
                            a,
                            b,
                        });
                    }
                }
            }
        }
        Sigma::Diagonal(d) => {
            if let Some((index, &value)) = d.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(nonfinite(index, value));
            }
        }
        Sigma::Identity => {}
    }
    Ok(())
}

fn chunk_ranges(q: usize, rows: usize) -> Vec<(usize, usize)> {
    let rows = rows.max(1);
    (0..q)
        .step_by(rows)
        .map(|r0| (r0, rows.min(q - r0)))
        .collect()
}

fn total_objective(chunks: &[cd::Chunk], op: &sigma::Op<'_>, p: usize, bc: usize) -> f64 {
    let parts: Vec<f64> = chunks.par_iter().map(|c| c.objective(op, p, bc)).collect();
    parts.iter().sum()
}

/// Quantise the q×p matrix `w` (row-major) to `ty`, minimising `tr((W−Ŵ)Σ(W−Ŵ)ᵀ)`.
#[allow(clippy::too_many_arguments)]
pub fn solve(
    name: &str,
    w: &[f32],
    q: usize,
    p: usize,
    sigma: &Sigma,
    ty: GgmlType,
    method: Method,
    opts: &SolveOptions,
) -> Result<Solution, SolverError> {
    let spec = Spec::for_type(ty).ok_or_else(|| SolverError::Unsupported {
        tensor: name.to_string(),
        ty,
    })?;
    solve_spec(name, w, q, p, sigma, &spec, method, opts)
}

/// Like [`solve`] on the paper's per-row uniform `bits`-bit grid (min..max of each row, fixed);
/// returns the dequantised values instead of packed bytes.
#[allow(clippy::too_many_arguments)]
pub fn solve_uniform(
    name: &str,
    w: &[f32],
    q: usize,
    p: usize,
    sigma: &Sigma,
    bits: u32,
    method: Method,
    opts: &SolveOptions,
) -> Result<Solution, SolverError> {
    if !(1..=8).contains(&bits) {
        return Err(SolverError::Shape {
            tensor: name.to_string(),
            what: format!("uniform grid needs 1..=8 bits, got {bits}"),
        });
    }
    solve_spec(name, w, q, p, sigma, &Spec::uniform(bits, p), method, opts)
}

/// Like [`solve`] on the QE grid `QE{bits}_{pool}` with its outlier pool (see `outliers.rs`).
#[allow(clippy::too_many_arguments)]
pub fn solve_qe(
    name: &str,
    w: &[f32],
    q: usize,
    p: usize,
    sigma: &Sigma,
    bits: u8,
    pool: u8,
    method: Method,
    opts: &SolveOptions,
) -> Result<Solution, SolverError> {
    let spec = Spec::qe(bits, pool).ok_or_else(|| SolverError::Shape {
        tensor: name.to_string(),
        what: format!("no QE format with {bits} bits and pool {pool}"),
    })?;
    solve_spec(name, w, q, p, sigma, &spec, method, opts)
}

#[allow(clippy::too_many_arguments)]
fn solve_spec(
    name: &str,
    w: &[f32],
    q: usize,
    p: usize,
    sigma: &Sigma,
    spec: &Spec,
    method: Method,
    opts: &SolveOptions,
) -> Result<Solution, SolverError> {
    let start = Instant::now();
    check_inputs(name, w, q, p, sigma, spec)?;
    let mean = sigma.mean_diag(p);
    // Damping regularises the coupling through a full Σ (as in GPTQ). With a diagonal Σ the
    // problem separates per weight and damping would only re-weight the columns, so it is off.
    let lam = if mean > 0.0 && matches!(sigma, Sigma::Full(_)) {
        opts.damp.max(0.0) * mean
    } else {
        0.0
    };
    let op0 = sigma::Op::new(sigma, p, 0.0);
    let shrunk;
    let sigma: &Sigma = match sigma {
        Sigma::Full(m) if opts.shrink > 0.0 => {
            let a = opts.shrink.min(1.0) as f32;
            let mut data = m.data().to_vec();
            for (k, v) in data.iter_mut().enumerate() {
                if k / p != k % p {
                    *v *= 1.0 - a;
                }
            }
            shrunk = Sigma::Full(FullSigma::new(p, data).expect("same size"));
            &shrunk
        }
        _ => sigma,
    };
    let op = sigma::Op::new(sigma, p, lam as f32);
    let block_cols = if spec.refit {
        opts.block_cols.max(1).div_ceil(spec.len) * spec.len
    } else {
        opts.block_cols.max(1)
    };
    let ctx = cd::Ctx {
        spec,
        op: &op,
        w,
        p,
        block_cols,
    };
    let importance: Option<Vec<f32>> = match sigma {
        Sigma::Identity => None,
        _ => Some((0..p).map(|j| sigma.diag(j).max(0.0)).collect()),
    };
    let imp = importance.as_deref();
    let ranges = chunk_ranges(q, opts.chunk_rows);

    let full_sigma = matches!(sigma, Sigma::Full(_));
    let cap = if opts.outliers {
        spec.outlier_capacity(p)
    } else {
        0
    };
    let mut chunks: Vec<cd::Chunk> = match spec.target {
        Target::Qe { bits, .. } => {
            let pool = if cap > 0 {
                match spec.target {
                    Target::Qe { pool, .. } => pool,
                    _ => 0,
                }
            } else {
                0
            };
            ranges
                .par_iter()
                .map(|&(r0, n)| {
                    outliers::rtn_start(&ctx, r0, n, imp, bits, pool).map_err(|e| {
                        SolverError::Shape {
                            tensor: name.to_string(),
                            what: format!("rows {r0}..{}: {e}", r0 + n),
                        }
                    })
                })
                .collect::<Result<_, _>>()?
        }
        _ => ranges
            .par_iter()
            .map(|&(r0, n)| cd::Chunk::rtn(&ctx, r0, n, imp))
            .collect(),
    };
    let rtn_objective = total_objective(&chunks, &op0, p, block_cols);
    let mut current = total_objective(&chunks, &op, p, block_cols);
    let mut init = Method::Rtn;
    let mut gptq_objective = None;
    if full_sigma && (method == Method::Gptq || (method == Method::QuantEase && opts.gptq_init)) {
        let mut damp = opts.damp.max(0.0);
        let f = loop {
            let l = if mean > 0.0 { damp * mean } else { 1.0 };
            if let Some(f) = gptq::factor(sigma, p, l, opts.act_order) {
                break f;
            }
            damp = if damp == 0.0 { 1e-6 } else { damp * 10.0 };
            if damp > 1.0 {
                return Err(SolverError::NotPositiveDefinite {
                    tensor: name.to_string(),
                    damp,
                });
            }
        };
        // With outliers, GPTQ quantises the target W − H of the RTN start and keeps its H.
        let tw: Option<Vec<f32>> = (cap > 0).then(|| {
            chunks
                .iter()
                .flat_map(|c| c.tgt.as_deref().expect("outlier chunks carry a target"))
                .copied()
                .collect()
        });
        let gctx = cd::Ctx {
            w: tw.as_deref().unwrap_or(w),
            ..ctx
        };
        let g: Vec<cd::Chunk> = ranges
            .par_iter()
            .zip(chunks.par_iter())
            .map(|(&(r0, n), start)| {
                let mut c = gptq::run(&gctx, &f, r0, n, imp);
                if let Some(tw) = &tw {
                    c.tgt = Some(tw[r0 * p..(r0 + n) * p].to_vec());
                    c.outl = start.outl.clone();
                }
                c
            })
            .collect();
        drop(tw);
        let g_obj = total_objective(&g, &op, p, block_cols);
        gptq_objective = Some(total_objective(&g, &op0, p, block_cols));
        if method == Method::Gptq || g_obj < current {
            chunks = g;
            current = g_obj;
            init = Method::Gptq;
        }
    } else if method == Method::Gptq {
        // Without off-diagonal Σ, GPTQ's error feedback is zero: it is round-to-nearest.
        gptq_objective = Some(rtn_objective);
        init = Method::Gptq;
    }

    let mut history = vec![current];
    let mut sweeps = 0;
    let eta = if cap > 0 {
        let l = op.lambda_max(p);
        if l > 0.0 {
            1.0 / l
        } else {
            0.0
        }
    } else {
        0.0
    };
    if method == Method::QuantEase {
        while sweeps < opts.iters {
            let changes: Vec<f64> = chunks
                .par_iter_mut()
                .map_init(Vec::new, |g, ch| {
                    let c = cd::sweep(&ctx, ch, opts.refit_scales, g);
                    if cap > 0 && eta > 0.0 {
                        c + outliers::iht_step(&ctx, ch, cap, eta, g)
                    } else {
                        c
                    }
                })
                .collect();
            sweeps += 1;
            let next = if opts.exact_history {
                total_objective(&chunks, &op, p, block_cols)
            } else {
                current + changes.iter().sum::<f64>()
            };
            history.push(next);
            let rel = if current > 0.0 {
                (current - next) / current
            } else {
                0.0
            };
            current = next;
            if rel < opts.tol {
                break;
            }
        }
    }

    let objective = total_objective(&chunks, &op0, p, block_cols);
    let (bytes, values) = match spec.target {
        Target::Ggml(ty) => {
            let rb = ty.row_bytes(p as u64).expect("checked width") as usize;
            let mut out = vec![0u8; q * rb];
            let nsb = p / spec.len;
            let bb = spec.block_bytes();
            out.par_chunks_mut(rb * opts.chunk_rows.max(1))
                .zip(chunks.par_iter())
                .for_each(|(o, ch)| {
                    for r in 0..ch.rows {
                        for b in 0..nsb {
                            let at = r * rb + b * bb;
                            spec.pack(
                                &ch.params[r * nsb + b],
                                &ch.codes[r * p + b * spec.len..r * p + (b + 1) * spec.len],
                                &mut o[at..at + bb],
                            );
                        }
                    }
                });
            (out, Vec::new())
        }
        Target::Uniform { .. } => (
            Vec::new(),
            chunks.iter().flat_map(|c| c.what.iter().copied()).collect(),
        ),
        Target::Qe { bits, pool } => {
            let fmt = quantease_formats::qe::QeFormat { bits, pool };
            let rb = fmt.row_bytes(p);
            let mut out = vec![0u8; q * rb];
            let nsb = p / spec.len;
            out.par_chunks_mut(rb * opts.chunk_rows.max(1))
                .zip(chunks.par_iter())
                .try_for_each(|(o, ch)| {
                    let n_sub = spec.n_sub;
                    let mut scales = vec![0u8; nsb * n_sub];
                    let mut list: Vec<(u16, f32)> = Vec::new();
                    for r in 0..ch.rows {
                        for (s, pr) in scales
                            .chunks_exact_mut(n_sub)
                            .zip(&ch.params[r * nsb..(r + 1) * nsb])
                        {
                            for (u, &v) in s.iter_mut().zip(&pr.sc) {
                                // Scale codes stay in 0..=255 (the refit's candidate range).
                                *u = v.clamp(0, 255) as u8;
                            }
                        }
                        list.clear();
                        if let Some(l) = ch.outl.get(r) {
                            list.extend(l.iter().map(|&(j, h)| (j as u16, h)));
                        }
                        quantease_formats::qe::encode_row(
                            fmt,
                            &scales,
                            &ch.codes[r * p..(r + 1) * p],
                            &list,
                            &mut o[r * rb..(r + 1) * rb],
                        )
                        .map_err(|e| SolverError::Shape {
                            tensor: name.to_string(),
                            what: format!("row {}: {e}", ch.r0 + r),
                        })?;
                    }
                    Ok::<(), SolverError>(())
                })?;
            (out, Vec::new())
        }
    };
    let n_outliers = chunks
        .iter()
        .map(|c| c.outl.iter().map(|l| l.len()).sum::<usize>())
        .sum();
    let base: f64 = ranges
        .par_iter()
        .map(|&(r0, n)| cd::quadratic_form(&op0, &w[r0 * p..(r0 + n) * p], n, p, block_cols))
        .collect::<Vec<_>>()
        .iter()
        .sum();
    let rel = |o: f64| if base > 0.0 { o / base } else { 0.0 };
    Ok(Solution {
        bytes,
        values,
        objective,
        rtn_objective,
        gptq_objective,
        rel_error: rel(objective),
        rtn_rel_error: rel(rtn_objective),
        base,
        init,
        sweeps,
        history,
        outliers: n_outliers,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Run `sweeps` CD sweeps from round-to-nearest and return the wall time of each, in seconds
/// (for benchmarks: no GPTQ start, no objective evaluations, no packing).
#[allow(clippy::too_many_arguments)]
pub fn time_sweeps(
    name: &str,
    w: &[f32],
    q: usize,
    p: usize,
    sigma: &Sigma,
    ty: GgmlType,
    opts: &SolveOptions,
    sweeps: usize,
) -> Result<Vec<f64>, SolverError> {
    let spec = Spec::for_type(ty).ok_or_else(|| SolverError::Unsupported {
        tensor: name.to_string(),
        ty,
    })?;
    check_inputs(name, w, q, p, sigma, &spec)?;
    let lam = if matches!(sigma, Sigma::Full(_)) {
        opts.damp * sigma.mean_diag(p)
    } else {
        0.0
    };
    let op = sigma::Op::new(sigma, p, lam as f32);
    let block_cols = opts.block_cols.max(1).div_ceil(spec.len) * spec.len;
    let ctx = cd::Ctx {
        spec: &spec,
        op: &op,
        w,
        p,
        block_cols,
    };
    let ranges = chunk_ranges(q, opts.chunk_rows);
    let mut chunks: Vec<cd::Chunk> = ranges
        .par_iter()
        .map(|&(r0, n)| cd::Chunk::rtn(&ctx, r0, n, None))
        .collect();
    let mut times = Vec::with_capacity(sweeps);
    for _ in 0..sweeps {
        let t = Instant::now();
        chunks.par_iter_mut().for_each_init(Vec::new, |g, ch| {
            cd::sweep(&ctx, ch, opts.refit_scales, g);
        });
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_qe;

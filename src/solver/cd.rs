//! Coordinate descent (QuantEase) on the codes and scales of a block of rows.
//!
//! For row `r` and column `j`, with `E = W − Ŵ` and `G = E·Σ`, the exact minimiser of the
//! objective over `Ŵ_rj` alone is `β = Ŵ_rj + G_rj / Σ_jj` (the paper's
//! `W_j + Σ_{k≠j}(W_k − Ŵ_k)Σ_kj/Σ_jj` rewritten with the residual product); the update rounds `β`
//! to the nearest decodable value of the weight's block, which is the minimiser on the grid since
//! the objective is `Σ_jj·(Ŵ_rj − β)² + const` along that coordinate.
//!
//! A sweep processes columns in blocks of `B`: one GEMM `G[:, blk] = E·Σ[:, blk]` brings the
//! residual product of the block up to date with every earlier change (the lazy-batch idea), and
//! inside the block each change `δ` of `Ŵ_rj` is applied at once to the block's `G` with
//! `Σ[j, blk]` (cost `B` per update). Per sweep that is `2·rows·p²` GEMM flops plus `rows·p·B`
//! scalar ones. Rows are independent, so a block of rows ([`Chunk`]) runs a whole sweep alone.
//!
//! Scale refits (ggml types): at the start of each super-block, with codes fixed, the decoded
//! values are linear in `(d, dmin)` and, per sub-block, in the integer `(sc, mn)`; each is a 2-variable
//! quadratic `f(δθ) = −2 δθᵀAᵀg + δθᵀ(AᵀΣ_SS A)δθ` in the current residual (an exact block-coordinate
//! step under the full Σ). The continuous optimum is snapped to storable values (f16 neighbours for
//! `d`/`dmin`, the nearest integers ±1 for sub-block scales/mins), candidates are ranked by the
//! quadratic model and the winner is accepted only if its exact change of the objective, with the
//! f32-decoded values, is negative. Every step therefore never increases the objective.
//!
//! QE grids have no super-block scale: each 16-weight sub-block's 8-bit scale code is refitted the
//! same way, the continuous optimum of its scale mapped to the nearest code and the codes ±2
//! around it ranked by the (exact, linear-in-scale) quadratic, see `refit_qe_scales`.

use super::grid::{Params, Spec, Target};
use super::sigma::{Block, Op};
use quantease_formats::qe;

/// The solver state of a block of consecutive rows.
pub(crate) struct Chunk {
    /// First row.
    pub r0: usize,
    /// Number of rows.
    pub rows: usize,
    /// Decoded values `Ŵ` (rows×p).
    pub what: Vec<f32>,
    /// Residual `W − Ŵ` (rows×p).
    pub e: Vec<f32>,
    /// Code indices (rows×p).
    pub codes: Vec<u8>,
    /// Scales per (row, super-block).
    pub params: Vec<Params>,
    /// The rows' own target `W − H` (rows×p) when the grid has an outlier pool; `None` means
    /// the target is `W` itself (`ctx.w`).
    pub tgt: Option<Vec<f32>>,
    /// Outliers per row: `(column, h)` sorted by column, `h` an f16 value (QE grids only).
    pub outl: Vec<Vec<(u32, f32)>>,
}

/// Shared read-only context.
pub(crate) struct Ctx<'a> {
    pub spec: &'a Spec,
    pub op: &'a Op<'a>,
    /// Whole weight matrix, row-major q×p.
    pub w: &'a [f32],
    pub p: usize,
    /// Columns per lazy block (a multiple of the super-block length, except for the uniform grid).
    pub block_cols: usize,
}

impl Chunk {
    /// State from scales and codes; fills `what` and `e`.
    pub(crate) fn from_parts(
        ctx: &Ctx<'_>,
        r0: usize,
        rows: usize,
        params: Vec<Params>,
        codes: Vec<u8>,
    ) -> Chunk {
        Chunk::with_outliers(ctx, r0, rows, params, codes, Vec::new())
    }

    /// State from scales, codes and outliers (`outl` empty, or one list per row); the target is
    /// `W − H` when there are outliers.
    pub(crate) fn with_outliers(
        ctx: &Ctx<'_>,
        r0: usize,
        rows: usize,
        params: Vec<Params>,
        codes: Vec<u8>,
        outl: Vec<Vec<(u32, f32)>>,
    ) -> Chunk {
        let p = ctx.p;
        let spec = ctx.spec;
        let nsb = p / spec.len;
        let mut what = vec![0f32; rows * p];
        for r in 0..rows {
            for j in 0..p {
                let pr = &params[r * nsb + j / spec.len];
                let (a, b) = spec.ab(pr, (j % spec.len) / spec.sub_len);
                what[r * p + j] = spec.value(a, b, codes[r * p + j]);
            }
        }
        let w = &ctx.w[r0 * p..(r0 + rows) * p];
        let tgt = (!outl.is_empty()).then(|| {
            let mut t = w.to_vec();
            for (r, list) in outl.iter().enumerate() {
                for &(j, h) in list {
                    t[r * p + j as usize] -= h;
                }
            }
            t
        });
        let t = tgt.as_deref().unwrap_or(w);
        let e = t.iter().zip(&what).map(|(&x, &y)| x - y).collect();
        Chunk {
            r0,
            rows,
            what,
            e,
            codes,
            params,
            tgt,
            outl,
        }
    }

    /// Round-to-nearest start (the formats crate's weighted quantiser, importance = diag Σ).
    pub(crate) fn rtn(ctx: &Ctx<'_>, r0: usize, rows: usize, importance: Option<&[f32]>) -> Chunk {
        let (p, spec) = (ctx.p, ctx.spec);
        let nsb = p / spec.len;
        let mut codes = vec![0u8; rows * p];
        let mut params = Vec::with_capacity(rows * nsb);
        for r in 0..rows {
            let x = &ctx.w[(r0 + r) * p..(r0 + r + 1) * p];
            let uni = spec.is_uniform().then(|| spec.uniform_params(x));
            for b in 0..nsb {
                let s = b * spec.len..(b + 1) * spec.len;
                let imp = importance.map(|i| &i[s.clone()]);
                params.push(spec.rtn_block(
                    &x[s.clone()],
                    imp,
                    uni.as_ref(),
                    &mut codes[r * p + s.start..r * p + s.end],
                ));
            }
        }
        Chunk::from_parts(ctx, r0, rows, params, codes)
    }

    /// Exact objective `Σ_r e_r (Σ+λI) e_rᵀ` of this chunk (f64 accumulation).
    pub(crate) fn objective(&self, op: &Op<'_>, p: usize, block_cols: usize) -> f64 {
        quadratic_form(op, &self.e, self.rows, p, block_cols)
    }
}

/// `Σ_r x_r S x_rᵀ` for the rows of `x` (rows×p).
pub(crate) fn quadratic_form(
    op: &Op<'_>,
    x: &[f32],
    rows: usize,
    p: usize,
    block_cols: usize,
) -> f64 {
    if rows == 0 || p == 0 {
        return 0.0;
    }
    let mut g = vec![0f32; rows * block_cols.min(p)];
    let mut acc = 0f64;
    let mut c0 = 0;
    while c0 < p {
        let nb = block_cols.min(p - c0);
        op.block_product(x, rows, c0, nb, &mut g[..rows * nb]);
        for r in 0..rows {
            let xr = &x[r * p + c0..r * p + c0 + nb];
            acc += xr
                .iter()
                .zip(&g[r * nb..(r + 1) * nb])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>();
        }
        c0 += nb;
    }
    acc
}

/// Solve the 2×2 system `H δ = b` (or the 1×1 one when `two` is false or `H` is near-singular).
fn solve2(h: [[f64; 2]; 2], b: [f64; 2], two: bool) -> [f64; 2] {
    if two {
        let det = h[0][0] * h[1][1] - h[0][1] * h[1][0];
        if det > 1e-12 * h[0][0] * h[1][1] && det.is_finite() {
            return [
                (b[0] * h[1][1] - b[1] * h[0][1]) / det,
                (h[0][0] * b[1] - h[1][0] * b[0]) / det,
            ];
        }
    }
    if h[0][0] > 0.0 {
        [b[0] / h[0][0], 0.0]
    } else {
        [0.0, 0.0]
    }
}

fn model(h: &[[f64; 2]; 2], b: &[f64; 2], t: [f64; 2]) -> f64 {
    -2.0 * (t[0] * b[0] + t[1] * b[1])
        + t[0] * t[0] * h[0][0]
        + 2.0 * t[0] * t[1] * h[0][1]
        + t[1] * t[1] * h[1][1]
}

/// Mutable view of one row inside a column block.
struct RowView<'a> {
    spec: &'a Spec,
    blk: &'a Block<'a>,
    /// Residual product of the block (len nb).
    g: &'a mut [f32],
    /// Row slices (len p).
    what: &'a mut [f32],
    e: &'a mut [f32],
    codes: &'a mut [u8],
    w: &'a [f32],
    /// First column of the block.
    c0: usize,
    /// Start (local) of the current granule.
    first: usize,
    /// End (local) of the current granule: in-block updates of `g` stop there; the rest of the
    /// block is brought up to date by one GEMM per granule.
    lim: usize,
}

impl RowView<'_> {
    /// Replace the values of columns `s0..s0+n` (absolute) by `new`; returns the exact change of the
    /// objective if it is negative and applies it, otherwise leaves everything and returns `None`.
    fn try_values(&mut self, s0: usize, new: &[f32], delta: &mut Vec<f32>) -> Option<f64> {
        let n = new.len();
        delta.clear();
        delta.extend(new.iter().zip(&self.what[s0..s0 + n]).map(|(&a, &b)| a - b));
        let ls = s0 - self.c0;
        let lin: f64 = delta
            .iter()
            .zip(&self.g[ls..ls + n])
            .map(|(&d, &g)| d as f64 * g as f64)
            .sum();
        let change = -2.0 * lin + self.blk.quad(ls, delta);
        if change.is_nan() || change >= 0.0 {
            return None;
        }
        self.blk.sub_rows(self.g, ls, delta, self.first, self.lim);
        for (k, &v) in new.iter().enumerate() {
            self.what[s0 + k] = v;
            self.e[s0 + k] = self.w[s0 + k] - v;
        }
        Some(change)
    }

    /// Refit `(d, dmin)` of the super-block at `s0` given its codes (no-op for QE grids, which
    /// have no super-block scale).
    fn refit_super(&mut self, pr: &mut Params, s0: usize, scratch: &mut Scratch) -> f64 {
        let spec = self.spec;
        if matches!(spec.target, Target::Qe { .. }) {
            return 0.0;
        }
        let n = spec.len;
        let ls = s0 - self.c0;
        let has_min = spec.has_min();
        scratch.u.clear();
        scratch.v.clear();
        for i in 0..n {
            let j = i / spec.sub_len;
            scratch
                .u
                .push(pr.sc[j] as f32 * spec.levels[self.codes[s0 + i] as usize]);
            scratch.v.push(-(pr.mn[j] as f32));
        }
        let (h, b) = scratch.normal(self.blk, ls, &self.g[ls..ls + n], has_min);
        let t = solve2(h, b, has_min);
        scratch.cand_a.clear();
        scratch.cand_b.clear();
        spec.scale_candidates(pr.d + t[0] as f32, &mut scratch.cand_a);
        scratch.cand_a.push(pr.d);
        if has_min {
            spec.scale_candidates(pr.dmin + t[1] as f32, &mut scratch.cand_b);
        }
        scratch.cand_b.push(pr.dmin);
        let mut best = (0.0f64, pr.d, pr.dmin);
        for &d in &scratch.cand_a {
            for &m in &scratch.cand_b {
                let f = model(&h, &b, [(d - pr.d) as f64, (m - pr.dmin) as f64]);
                if f < best.0 {
                    best = (f, d, m);
                }
            }
        }
        // Accept only a decrease that is clear of the rounding of the f32 normal equations.
        let step = [(best.1 - pr.d) as f64, (best.2 - pr.dmin) as f64];
        let curv = model(&h, &[0.0, 0.0], step);
        if (best.1 == pr.d && best.2 == pr.dmin) || best.0 > -1e-4 * curv {
            return 0.0;
        }
        // The values are linear in (d, dmin): the change of the objective is the model value
        // and the change of `g` on the super-block is `−(δd·Su + δm·Sv)` (already computed).
        let (dd, dm) = ((best.1 - pr.d) as f64, (best.2 - pr.dmin) as f64);
        pr.d = best.1;
        pr.dmin = best.2;
        for i in 0..n {
            let (a, b) = spec.ab(pr, i / spec.sub_len);
            let v = spec.value(a, b, self.codes[s0 + i]);
            self.what[s0 + i] = v;
            self.e[s0 + i] = self.w[s0 + i] - v;
            let sv = if has_min { scratch.sv[i] } else { 0.0 };
            self.g[ls + i] -= (dd * scratch.su[i] + dm * sv) as f32;
        }
        best.0
    }

    /// Refit the integer scale/min of every sub-block of the super-block at `s0`.
    fn refit_subs(&mut self, pr: &mut Params, s0: usize, scratch: &mut Scratch) -> f64 {
        let spec = self.spec;
        if matches!(spec.target, Target::Qe { .. }) {
            return self.refit_qe_scales(pr, s0, scratch);
        }
        let (slo, shi) = spec.scale_range;
        if spec.n_sub == 1 || slo == shi {
            return 0.0;
        }
        let mut total = 0.0;
        let m_free = spec.min_range.filter(|&(lo, hi)| lo < hi);
        for j in 0..spec.n_sub {
            let a0 = s0 + j * spec.sub_len;
            let la = a0 - self.c0;
            let n = spec.sub_len;
            scratch.u.clear();
            scratch.v.clear();
            for i in 0..n {
                scratch
                    .u
                    .push(pr.d * spec.levels[self.codes[a0 + i] as usize]);
                scratch.v.push(-pr.dmin);
            }
            let (h, b) = scratch.normal(self.blk, la, &self.g[la..la + n], m_free.is_some());
            let t = solve2(h, b, m_free.is_some());
            let mut best = (0.0f64, pr.sc[j], pr.mn[j]);
            let s_star = (pr.sc[j] as f64 + t[0]).round();
            let m_star = (pr.mn[j] as f64 + t[1]).round();
            for ds in -1..=1 {
                let s = (s_star as i64 + ds).clamp(slo as i64, shi as i64) as i32;
                let mrange: Vec<i32> = match m_free {
                    Some((lo, hi)) => (-1..=1)
                        .map(|dm| (m_star as i64 + dm).clamp(lo as i64, hi as i64) as i32)
                        .collect(),
                    None => vec![pr.mn[j]],
                };
                for m in mrange {
                    let f = model(&h, &b, [(s - pr.sc[j]) as f64, (m - pr.mn[j]) as f64]);
                    if f < best.0 {
                        best = (f, s, m);
                    }
                }
            }
            if best.1 == pr.sc[j] && best.2 == pr.mn[j] {
                continue;
            }
            let mut trial = *pr;
            trial.sc[j] = best.1;
            trial.mn[j] = best.2;
            total += self.apply_params(pr, trial, s0, j..j + 1, scratch);
        }
        total
    }

    /// Refit the 8-bit scale code of every sub-block of the QE block at `s0` given its codes.
    ///
    /// The values `S(u)·T[c_i]` are linear in the scale `S`, so the change of the objective for a
    /// new scale `S' = S + δ` is exactly the quadratic `−2δ·Tᵀg + δ²·TᵀΣ_SS T` (`T` the levels of
    /// the sub-block's codes, `g` its residual product). Its continuous minimiser `S* = S + δ*` is
    /// mapped to the nearest code `u* = scale_code(S*)`; since `S(u)` is increasing and the
    /// quadratic convex, the best code lies next to `u*`, and the codes `u*−2 ..= u*+2` are ranked
    /// by that quadratic at their exact `S(u)`. The winner is applied only if the exact change,
    /// recomputed from the f32-decoded values, is negative.
    fn refit_qe_scales(&mut self, pr: &mut Params, s0: usize, scratch: &mut Scratch) -> f64 {
        let spec = self.spec;
        let n = spec.sub_len;
        let mut total = 0.0;
        for j in 0..spec.n_sub {
            let a0 = s0 + j * n;
            let la = a0 - self.c0;
            scratch.u.clear();
            scratch.v.clear();
            scratch.u.extend(
                self.codes[a0..a0 + n]
                    .iter()
                    .map(|&c| spec.levels[c as usize]),
            );
            let (h, b) = scratch.normal(self.blk, la, &self.g[la..la + n], false);
            let t = solve2(h, b, false);
            let cur = pr.sc[j];
            let s_cur = spec.ab(pr, j).0;
            let u_star = qe::scale_code((s_cur as f64 + t[0]) as f32) as i32;
            let mut best = (0.0f64, cur);
            for u in (u_star - 2).max(0)..=(u_star + 2).min(255) {
                if u == cur {
                    continue;
                }
                let ds = qe::scale_value(u as u8) as f64 - s_cur as f64;
                let f = model(&h, &b, [ds, 0.0]);
                if f < best.0 {
                    best = (f, u);
                }
            }
            if best.1 == cur {
                continue;
            }
            let mut trial = *pr;
            trial.sc[j] = best.1;
            total += self.apply_params(pr, trial, s0, j..j + 1, scratch);
        }
        total
    }

    /// Try scales `trial` on sub-blocks `subs` of the super-block at `s0` (codes fixed).
    fn apply_params(
        &mut self,
        pr: &mut Params,
        trial: Params,
        s0: usize,
        subs: std::ops::Range<usize>,
        scratch: &mut Scratch,
    ) -> f64 {
        let spec = self.spec;
        let a0 = s0 + subs.start * spec.sub_len;
        let a1 = s0 + subs.end * spec.sub_len;
        scratch.new.clear();
        for i in a0..a1 {
            let (a, b) = spec.ab(&trial, (i - s0) / spec.sub_len);
            scratch.new.push(spec.value(a, b, self.codes[i]));
        }
        let new = std::mem::take(&mut scratch.new);
        let r = self.try_values(a0, &new, &mut scratch.delta);
        scratch.new = new;
        match r {
            Some(change) => {
                *pr = trial;
                change
            }
            None => 0.0,
        }
    }

    /// One coordinate step on every column of `cols` (absolute) of the super-block with scales `pr`.
    fn cd_columns(&mut self, pr: &Params, s0: usize, cols: std::ops::Range<usize>) -> f64 {
        let spec = self.spec;
        let mut total = 0.0;
        let mut cur_sub = usize::MAX;
        let (mut a, mut b) = (0.0, 0.0);
        for j in cols {
            let sub = (j - s0) / spec.sub_len;
            if sub != cur_sub {
                (a, b) = spec.ab(pr, sub);
                cur_sub = sub;
            }
            let k = j - self.c0;
            let s = self.blk.diag(k);
            let cur = self.codes[j];
            let v = self.what[j];
            let beta = if s > 0.0 {
                v + self.g[k] / s
            } else {
                self.w[j]
            };
            let c = spec.nearest(a, b, beta, cur);
            if c == cur {
                continue;
            }
            let vn = spec.value(a, b, c);
            let delta = vn - v;
            let change =
                -2.0 * delta as f64 * self.g[k] as f64 + (delta as f64) * (delta as f64) * s as f64;
            if s > 0.0 && (change.is_nan() || change >= 0.0) {
                continue;
            }
            self.codes[j] = c;
            self.what[j] = vn;
            self.e[j] = self.w[j] - vn;
            self.blk.sub_row(self.g, k, delta, k + 1, self.lim);
            total += change;
        }
        total
    }
}

/// Scratch buffers of one row's refits.
#[derive(Default)]
pub(crate) struct Scratch {
    u: Vec<f32>,
    v: Vec<f32>,
    su: Vec<f64>,
    sv: Vec<f64>,
    cand_a: Vec<f32>,
    cand_b: Vec<f32>,
    new: Vec<f32>,
    delta: Vec<f32>,
}

impl Scratch {
    /// `H = [u v]ᵀ S [u v]`, `b = [u v]ᵀ g` over the local columns `ls..ls+u.len()`.
    fn normal(
        &mut self,
        blk: &Block<'_>,
        ls: usize,
        g: &[f32],
        two: bool,
    ) -> ([[f64; 2]; 2], [f64; 2]) {
        let n = self.u.len();
        self.su.resize(n, 0.0);
        blk.matvec(ls, &self.u, &mut self.su);
        let dot = |a: &[f32], b: &[f64]| a.iter().zip(b).map(|(&x, y)| x as f64 * y).sum::<f64>();
        let gd = |a: &[f32]| super::sigma::dot8(a, g);
        let huu = dot(&self.u, &self.su);
        let bu = gd(&self.u);
        if !two {
            return ([[huu, 0.0], [0.0, 1.0]], [bu, 0.0]);
        }
        self.sv.resize(n, 0.0);
        blk.matvec(ls, &self.v, &mut self.sv);
        let huv = dot(&self.u, &self.sv);
        let hvv = dot(&self.v, &self.sv);
        ([[huu, huv], [huv, hvv]], [bu, gd(&self.v)])
    }
}

/// One sweep over every column of the chunk; returns the (non-positive) change of the damped
/// objective. `refit` turns the scale refits on.
pub(crate) fn sweep(ctx: &Ctx<'_>, ch: &mut Chunk, refit: bool, g: &mut Vec<f32>) -> f64 {
    let (p, spec) = (ctx.p, ctx.spec);
    let rows = ch.rows;
    let nsb = p / spec.len;
    let refit = refit && spec.refit;
    let mut scratch = Scratch::default();
    let mut dacc: Vec<f32> = Vec::new();
    let mut total = 0.0;
    let mut c0 = 0;
    while c0 < p {
        let nb = ctx.block_cols.min(p - c0);
        g.resize(rows * nb, 0.0);
        ctx.op
            .block_product(&ch.e, rows, c0, nb, &mut g[..rows * nb]);
        let blk = ctx.op.block(c0, nb);
        // Granules: the super-blocks inside this column block (or the whole block for the
        // uniform grid, whose single super-block spans the row).
        let gran = if spec.len <= nb { spec.len } else { nb };
        let mut l0 = 0;
        while l0 < nb {
            let l1 = (l0 + gran).min(nb);
            let gl = l1 - l0;
            dacc.resize(rows * gl, 0.0);
            for r in 0..rows {
                let row = r * p..(r + 1) * p;
                dacc[r * gl..(r + 1) * gl]
                    .copy_from_slice(&ch.what[row.start + c0 + l0..row.start + c0 + l1]);
                let mut view = RowView {
                    spec,
                    blk: &blk,
                    g: &mut g[r * nb..(r + 1) * nb],
                    what: &mut ch.what[row.clone()],
                    e: &mut ch.e[row.clone()],
                    codes: &mut ch.codes[row.clone()],
                    w: match &ch.tgt {
                        Some(t) => &t[row.clone()],
                        None => &ctx.w[(ch.r0 + r) * p..(ch.r0 + r + 1) * p],
                    },
                    c0,
                    first: l0,
                    lim: l1,
                };
                let j = c0 + l0;
                let sb = j / spec.len;
                let s0 = sb * spec.len;
                let pr = &mut ch.params[r * nsb + sb];
                if refit && j == s0 {
                    total += view.refit_super(pr, s0, &mut scratch);
                    total += view.refit_subs(pr, s0, &mut scratch);
                }
                total += view.cd_columns(pr, s0, j..c0 + l1);
                for (d, &v) in dacc[r * gl..(r + 1) * gl]
                    .iter_mut()
                    .zip(&ch.what[row.start + c0 + l0..row.start + c0 + l1])
                {
                    *d = v - *d;
                }
            }
            if l1 < nb {
                if let Some(s) = blk.off_diagonal(l0, l1) {
                    let lhs = faer::MatRef::from_row_major_slice(&dacc[..rows * gl], rows, gl);
                    let mut gm =
                        faer::MatMut::from_row_major_slice_mut(&mut g[..rows * nb], rows, nb);
                    let dst = gm.as_mut().submatrix_mut(0, l1, rows, nb - l1);
                    faer::linalg::matmul::matmul(
                        dst,
                        faer::Accum::Add,
                        lhs,
                        s,
                        -1.0f32,
                        faer::Par::Seq,
                    );
                }
            }
            l0 = l1;
        }
        c0 += nb;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::super::sigma::Sigma;
    use super::super::tests::{activations, gram, Rng};
    use super::*;

    /// `e Σ eᵀ` in f64 for one row.
    fn quad(sigma: &Sigma, e: &[f32]) -> f64 {
        let p = e.len();
        (0..p)
            .map(|i| {
                let t: f64 = (0..p)
                    .map(|j| {
                        let s = match sigma {
                            Sigma::Full(m) => m.get(i, j) as f64,
                            _ => unreachable!(),
                        };
                        s * e[j] as f64
                    })
                    .sum();
                e[i] as f64 * t
            })
            .sum()
    }

    /// Objective of one QE block with codes `codes` and scale codes `u`.
    fn block_objective(spec: &Spec, sigma: &Sigma, w: &[f32], codes: &[u8], u: [i32; 2]) -> f64 {
        let e: Vec<f32> = (0..32)
            .map(|i| w[i] - qe::scale_value(u[i / 16] as u8) * spec.levels[codes[i] as usize])
            .collect();
        quad(sigma, &e)
    }

    /// With the codes fixed, the refit picks, for each sub-block in turn (the other's scale as it
    /// is at that moment), the scale code minimising the exact objective over all 256 codes —
    /// including blocks whose best scale is 0-ish or beyond the largest code.
    #[test]
    fn qe_scale_refit_finds_the_best_code_for_fixed_codes() {
        let p = 32;
        let sigma = gram(&activations(p, 64, 5));
        let op = Op::new(&sigma, p, 0.0);
        let mut rng = Rng::new(99);
        let mut n_changed = 0;
        for bits in [2u8, 3, 4] {
            let spec = Spec::qe(bits, 0).unwrap();
            for trial in 0..40 {
                let mag = [1e-5, 1e-3, 0.02, 0.3, 40.0][trial % 5];
                let w: Vec<f32> = (0..p).map(|_| (mag * rng.normal()) as f32).collect();
                let ctx = Ctx {
                    spec: &spec,
                    op: &op,
                    w: &w,
                    p,
                    block_cols: p,
                };
                let codes: Vec<u8> = (0..p)
                    .map(|_| (rng.uniform() * spec.levels.len() as f64) as u8)
                    .collect();
                let u0 = [
                    (rng.uniform() * 256.0) as i32,
                    (rng.uniform() * 256.0) as i32,
                ];
                let mut pr = Params {
                    d: 1.0,
                    dmin: 0.0,
                    sc: [0; crate::solver::grid::MAX_SUB],
                    mn: [-1; crate::solver::grid::MAX_SUB],
                };
                pr.sc[..2].copy_from_slice(&u0);
                let mut ch = Chunk::from_parts(&ctx, 0, 1, vec![pr], codes.clone());
                let mut g = vec![0f32; p];
                op.block_product(&ch.e, 1, 0, p, &mut g);
                let blk = op.block(0, p);
                let mut view = RowView {
                    spec: &spec,
                    blk: &blk,
                    g: &mut g,
                    what: &mut ch.what,
                    e: &mut ch.e,
                    codes: &mut ch.codes,
                    w: &w,
                    c0: 0,
                    first: 0,
                    lim: p,
                };
                let before = block_objective(&spec, &sigma, &w, &codes, u0);
                let change = view.refit_qe_scales(&mut pr, 0, &mut Scratch::default());
                let got = [pr.sc[0], pr.sc[1]];
                let after = block_objective(&spec, &sigma, &w, &codes, got);
                let tag = format!("QE{bits} trial {trial} (|w| ~ {mag}): {u0:?} → {got:?}");
                assert!(
                    change <= 0.0 && after <= before,
                    "{tag}: {before} → {after}"
                );
                assert!(
                    (before + change - after).abs() <= 1e-5 * before.max(1e-30),
                    "{tag}: tracked change {change} vs {}",
                    after - before
                );
                // Sub-block 0 given the old scale of sub-block 1, then 1 given the new 0.
                let best0 = (0..256)
                    .map(|u| block_objective(&spec, &sigma, &w, &codes, [u, u0[1]]))
                    .fold(f64::INFINITY, f64::min);
                let at0 = block_objective(&spec, &sigma, &w, &codes, [got[0], u0[1]]);
                assert!(
                    at0 <= best0 * (1.0 + 1e-5) + 1e-30,
                    "{tag}: sub 0 {at0} vs best {best0}"
                );
                let best1 = (0..256)
                    .map(|u| block_objective(&spec, &sigma, &w, &codes, [got[0], u]))
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    after <= best1 * (1.0 + 1e-5) + 1e-30,
                    "{tag}: sub 1 {after} vs best {best1}"
                );
                n_changed += (got != u0) as usize;
            }
        }
        assert!(
            n_changed > 100,
            "the refit changed only {n_changed} of 120 blocks"
        );
    }
}

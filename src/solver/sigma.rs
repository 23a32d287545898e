//! The input covariance Σ = X Xᵀ of a layer, in the three forms the solver accepts, and the
//! damped operator the sweeps use.
//!
//! Storage choice for the full matrix: **f32**, row-major, symmetric. The sweep's cost is the
//! product `E·Σ` (a GEMM), which runs twice as fast in f32 as in f64 and needs half the memory
//! (a 8960-wide Gram is 321 MB in f32, 642 MB in f64). The coordinate-descent decisions only need
//! the residual product to a few digits; objectives are accumulated in f64. Grams should still be
//! *accumulated* in f64 by their producer ([`FullSigma::from_f64`] rounds once at the end). The
//! GPTQ factorisation is done in f64 ([`super::gptq`]).

use faer::MatRef;

/// A p×p symmetric positive semi-definite matrix in f32, row-major.
#[derive(Clone, Debug)]
pub struct FullSigma {
    p: usize,
    data: Vec<f32>,
}

impl FullSigma {
    /// Wrap `data` (row-major, `p·p` entries). Returns `None` if the length is not `p·p`.
    /// Symmetry and finiteness are checked by [`super::solve`], which knows the tensor's name.
    pub fn new(p: usize, data: Vec<f32>) -> Option<Self> {
        (p.checked_mul(p) == Some(data.len())).then_some(FullSigma { p, data })
    }

    /// Round an f64 matrix (row-major, `p·p`) to f32 storage.
    pub fn from_f64(p: usize, data: &[f64]) -> Option<Self> {
        Self::new(p, data.iter().map(|&v| v as f32).collect())
    }

    /// Side length.
    pub fn p(&self) -> usize {
        self.p
    }

    /// Row-major entries.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Entry `(i, j)`.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.p + j]
    }

    /// A faer view.
    pub fn mat(&self) -> MatRef<'_, f32> {
        MatRef::from_row_major_slice(&self.data, self.p, self.p)
    }
}

/// The second-moment matrix Σ of a layer's inputs.
#[derive(Clone, Debug)]
pub enum Sigma {
    /// A full Gram matrix (from `calibrate`): the solver couples columns through it.
    Full(FullSigma),
    /// Only the diagonal (an imatrix): the problem separates per weight.
    Diagonal(Vec<f32>),
    /// No calibration data: plain squared weight error.
    Identity,
}

impl Sigma {
    /// Diagonal entry `j` (undamped).
    pub fn diag(&self, j: usize) -> f32 {
        match self {
            Sigma::Full(m) => m.get(j, j),
            Sigma::Diagonal(d) => d[j],
            Sigma::Identity => 1.0,
        }
    }

    /// The side length, if the matrix fixes one (`None` for the identity).
    pub fn side(&self) -> Option<usize> {
        match self {
            Sigma::Full(m) => Some(m.p()),
            Sigma::Diagonal(d) => Some(d.len()),
            Sigma::Identity => None,
        }
    }

    /// Mean of the diagonal over `p` columns.
    pub fn mean_diag(&self, p: usize) -> f64 {
        if p == 0 {
            return 0.0;
        }
        (0..p).map(|j| self.diag(j) as f64).sum::<f64>() / p as f64
    }

    /// A short name for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Sigma::Full(_) => "full",
            Sigma::Diagonal(_) => "diagonal",
            Sigma::Identity => "identity",
        }
    }
}

/// Σ + λ·I as the sweeps see it (λ already in absolute units), without copying a full Σ.
pub(crate) enum Op<'a> {
    /// Full matrix plus `lam` on the diagonal.
    Dense { m: &'a FullSigma, lam: f32 },
    /// Diagonal matrix, damping included.
    Diag(Vec<f32>),
}

impl<'a> Op<'a> {
    pub(crate) fn new(sigma: &'a Sigma, p: usize, lam: f32) -> Self {
        match sigma {
            Sigma::Full(m) => Op::Dense { m, lam },
            Sigma::Diagonal(d) => Op::Diag(d.iter().map(|&v| v + lam).collect()),
            Sigma::Identity => Op::Diag(vec![1.0 + lam; p]),
        }
    }

    /// `out (rows×nb, row-major) = E (rows×p, row-major) · (Σ+λI)[:, c0..c0+nb]`.
    pub(crate) fn block_product(
        &self,
        e: &[f32],
        rows: usize,
        c0: usize,
        nb: usize,
        out: &mut [f32],
    ) {
        let p = e.len() / rows.max(1);
        match self {
            Op::Dense { m, lam } => {
                let lhs = MatRef::from_row_major_slice(e, rows, p);
                let rhs = m.mat().submatrix(0, c0, p, nb);
                let dst = faer::MatMut::from_row_major_slice_mut(out, rows, nb);
                faer::linalg::matmul::matmul(
                    dst,
                    faer::Accum::Replace,
                    lhs,
                    rhs,
                    1.0f32,
                    faer::Par::Seq,
                );
                if *lam != 0.0 {
                    for r in 0..rows {
                        for k in 0..nb {
                            out[r * nb + k] += lam * e[r * p + c0 + k];
                        }
                    }
                }
            }
            Op::Diag(d) => {
                for r in 0..rows {
                    for k in 0..nb {
                        out[r * nb + k] = e[r * p + c0 + k] * d[c0 + k];
                    }
                }
            }
        }
    }

    /// Entry `(i, j)` of `Σ + λI`.
    #[inline]
    pub(crate) fn entry(&self, i: usize, j: usize) -> f32 {
        match self {
            Op::Dense { m, lam } => m.get(i, j) + if i == j { *lam } else { 0.0 },
            Op::Diag(d) => {
                if i == j {
                    d[i]
                } else {
                    0.0
                }
            }
        }
    }

    /// `g[k] −= δ·(Σ+λI)[i, k]` for every `k` (`g` has the full row length).
    pub(crate) fn sub_row(&self, g: &mut [f32], i: usize, delta: f32) {
        match self {
            Op::Dense { m, lam } => {
                let p = m.p();
                for (gk, &s) in g.iter_mut().zip(&m.data()[i * p..(i + 1) * p]) {
                    *gk -= delta * s;
                }
                g[i] -= delta * lam;
            }
            Op::Diag(d) => g[i] -= delta * d[i],
        }
    }

    /// The largest eigenvalue of `Σ + λI` (power iteration in f64 from a fixed start, so the
    /// result is deterministic; exact for a diagonal Σ). Returns 0 for a zero matrix.
    pub(crate) fn lambda_max(&self, p: usize) -> f64 {
        match self {
            Op::Diag(d) => d.iter().fold(0f32, |a, &b| a.max(b)) as f64,
            Op::Dense { m, lam } => {
                let mut v: Vec<f64> = (0..p).map(|i| 1.0 + (i % 7) as f64 * 0.01).collect();
                let mut y = vec![0f64; p];
                let mut est = 0f64;
                for _ in 0..100 {
                    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                    if norm == 0.0 || !norm.is_finite() {
                        return 0.0;
                    }
                    v.iter_mut().for_each(|x| *x /= norm);
                    for (i, yi) in y.iter_mut().enumerate() {
                        let row = &m.data()[i * p..(i + 1) * p];
                        *yi = row.iter().zip(&v).map(|(&s, &x)| s as f64 * x).sum::<f64>()
                            + *lam as f64 * v[i];
                    }
                    let rq: f64 = y.iter().zip(&v).map(|(a, b)| a * b).sum();
                    std::mem::swap(&mut v, &mut y);
                    if (rq - est).abs() <= 1e-9 * rq.abs() {
                        est = rq;
                        break;
                    }
                    est = rq;
                }
                est
            }
        }
    }

    /// The damped diagonal block `(Σ+λI)[c0..c0+nb, c0..c0+nb]`.
    pub(crate) fn block(&self, c0: usize, nb: usize) -> Block<'_> {
        match self {
            Op::Dense { m, lam } => {
                let mut b = vec![0f32; nb * nb];
                for i in 0..nb {
                    b[i * nb..(i + 1) * nb].copy_from_slice(
                        &m.data()[(c0 + i) * m.p() + c0..(c0 + i) * m.p() + c0 + nb],
                    );
                    b[i * nb + i] += lam;
                }
                Block::Dense { nb, m: b }
            }
            Op::Diag(d) => Block::Diag(&d[c0..c0 + nb]),
        }
    }
}

/// A diagonal block of the damped Σ, indexed locally (`0..nb`).
pub(crate) enum Block<'a> {
    /// Dense `nb×nb`, row-major.
    Dense { nb: usize, m: Vec<f32> },
    /// Diagonal.
    Diag(&'a [f32]),
}

impl Block<'_> {
    /// Entry `(j, j)`.
    #[inline]
    pub(crate) fn diag(&self, j: usize) -> f32 {
        match self {
            Block::Dense { nb, m } => m[j * nb + j],
            Block::Diag(d) => d[j],
        }
    }

    /// `g[k] −= δ·S[j, k]` for `k` in `from..to` (`g` indexed like the block).
    #[inline]
    pub(crate) fn sub_row(&self, g: &mut [f32], j: usize, delta: f32, from: usize, to: usize) {
        match self {
            Block::Dense { nb, m } => {
                for (gk, &s) in g[from..to].iter_mut().zip(&m[j * nb + from..j * nb + to]) {
                    *gk -= delta * s;
                }
            }
            Block::Diag(d) => {
                if (from..to).contains(&j) {
                    g[j] -= delta * d[j];
                }
            }
        }
    }

    /// `g[k] −= Σ_i Δ_i S[s0 + i, k]` for `k` in `from..to`.
    pub(crate) fn sub_rows(&self, g: &mut [f32], s0: usize, delta: &[f32], from: usize, to: usize) {
        for (i, &dl) in delta.iter().enumerate() {
            if dl != 0.0 {
                self.sub_row(g, s0 + i, dl, from, to);
            }
        }
    }

    /// The dense rows `l0..l1`, columns `l1..nb` (for propagating a granule's changes by GEMM);
    /// `None` for a diagonal block (nothing to propagate).
    pub(crate) fn off_diagonal(&self, l0: usize, l1: usize) -> Option<faer::MatRef<'_, f32>> {
        match self {
            Block::Dense { nb, m } => {
                let v = faer::MatRef::from_row_major_slice(m, *nb, *nb);
                Some(v.submatrix(l0, l1, l1 - l0, nb - l1))
            }
            Block::Diag(_) => None,
        }
    }

    /// `out = S[s0.., s0..] · v` for the `v.len()` columns starting at `s0` (f32 products in
    /// eight lanes, the sum in f64).
    pub(crate) fn matvec(&self, s0: usize, v: &[f32], out: &mut [f64]) {
        let n = v.len();
        match self {
            Block::Dense { nb, m } => {
                for i in 0..n {
                    out[i] = dot8(&m[(s0 + i) * nb + s0..(s0 + i) * nb + s0 + n], v);
                }
            }
            Block::Diag(d) => {
                for i in 0..n {
                    out[i] = d[s0 + i] as f64 * v[i] as f64;
                }
            }
        }
    }

    /// `Δᵀ S[s0.., s0..] Δ` in f64.
    pub(crate) fn quad(&self, s0: usize, delta: &[f32]) -> f64 {
        let n = delta.len();
        match self {
            Block::Dense { nb, m } => {
                let mut acc = 0f64;
                for i in 0..n {
                    if delta[i] == 0.0 {
                        continue;
                    }
                    let row = &m[(s0 + i) * nb + s0..(s0 + i) * nb + s0 + n];
                    let t: f64 = row
                        .iter()
                        .zip(delta)
                        .map(|(&s, &x)| s as f64 * x as f64)
                        .sum();
                    acc += delta[i] as f64 * t;
                }
                acc
            }
            Block::Diag(d) => delta
                .iter()
                .enumerate()
                .map(|(i, &x)| d[s0 + i] as f64 * (x as f64) * (x as f64))
                .sum(),
        }
    }
}

/// Dot product with eight independent f32 accumulators (vectorisable), summed in f64.
#[inline]
pub(crate) fn dot8(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f64 = acc.iter().map(|&v| v as f64).sum();
    for (x, y) in ra.iter().zip(rb) {
        s += (*x as f64) * (*y as f64);
    }
    s
}

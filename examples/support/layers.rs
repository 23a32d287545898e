//! Shared by the layer-study examples (`real_layers`, `qe_layers`, `heldout`): the weights of
//! chosen layers that have a full Gram, read as f32 rows, and solver options from the environment.

use quantease_gguf::gram::GramFile;
use quantease_gguf::solver::{FullSigma, Sigma, SolveOptions};
use quantease_gguf::source::{GgufSource, TensorSource};

/// One weight matrix of the model: `q` rows of `p` inputs.
pub struct Weight {
    /// GGUF tensor name.
    pub name: String,
    /// Rows, row-major (q × p).
    pub w: Vec<f32>,
    /// Output rows.
    pub q: usize,
    /// Inputs per row.
    pub p: usize,
}

/// The weights of blocks `layers` (`blk.N.`) with a full Gram in `gram` and a row length that is a
/// multiple of `block`, in the Gram file's (name) order; read lazily.
pub fn weights<'a>(
    model: &'a GgufSource,
    gram: &'a GramFile,
    layers: &'a [String],
    block: usize,
) -> impl Iterator<Item = Weight> + 'a {
    gram.weights().filter_map(move |name| {
        if !layers
            .iter()
            .any(|l| name.starts_with(&format!("blk.{l}.")))
            || !gram.has_full(name)
        {
            return None;
        }
        let idx = model.tensors().iter().position(|x| x.name == name)?;
        let info = &model.tensors()[idx];
        let p = info.dims[0] as usize;
        let q = info.dims[1..].iter().product::<u64>() as usize;
        if !p.is_multiple_of(block) {
            return None;
        }
        let mut w = vec![0f32; q * p];
        model.read_rows(idx, 0, &mut w).expect("rows");
        Some(Weight {
            name: name.to_string(),
            w,
            q,
            p,
        })
    })
}

/// The full Gram of `weight` in `gram`, dense (p × p, row-major).
pub fn gram_f32(gram: &GramFile, weight: &Weight) -> Vec<f32> {
    gram.gram(&weight.name, Some(weight.p))
        .and_then(|g| g.full_f32())
        .unwrap_or_else(|e| panic!("{}: {e}", weight.name))
}

/// The full Σ of `weight` (p × p).
pub fn sigma(gram: &GramFile, weight: &Weight) -> Sigma {
    Sigma::Full(FullSigma::new(weight.p, gram_f32(gram, weight)).expect("square"))
}

/// Default solver options with `ITERS=N`, `TOL=X`, `DAMP=X`, `SHRINK=X` overrides.
pub fn options_from_env() -> SolveOptions {
    let mut opts = SolveOptions::default();
    let env = |k: &str| std::env::var(k).ok();
    if let Some(n) = env("ITERS").and_then(|v| v.parse().ok()) {
        opts.iters = n;
    }
    if let Some(t) = env("TOL").and_then(|v| v.parse().ok()) {
        opts.tol = t;
    }
    if let Some(t) = env("DAMP").and_then(|v| v.parse().ok()) {
        opts.damp = t;
    }
    if let Some(t) = env("SHRINK").and_then(|v| v.parse().ok()) {
        opts.shrink = t;
    }
    opts
}

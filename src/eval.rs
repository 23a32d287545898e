//! Perplexity and KL-divergence measurement, computed as `llama-perplexity` computes them.
//!
//! Method (facts from llama.cpp's `tools/perplexity/perplexity.cpp`): the whole text is tokenised
//! once, with BOS if the model adds one; it is cut into `n_tokens / n_ctx` chunks of `n_ctx`
//! tokens (at least two chunks' worth of text is required); each chunk is evaluated from an empty
//! KV cache with its first token replaced by BOS when the model adds BOS; only the second half is
//! scored: the logits at positions `n_ctx/2 ..= n_ctx-2` predict the next token. PPL is
//! `exp(mean NLL)`. With a base model both models run chunk by chunk in this process and, per
//! scored token, KLD(base‖model) is summed over the full vocabulary from f64 softmaxes (llama.cpp
//! stores the base log-probabilities as 16-bit values and drops those below e⁻¹⁶; we do not).
//! Uncertainties, the PPL-ratio covariance, the percentiles and the same-top-token rate follow
//! llama.cpp's formulas.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::llama::{argmax, Context, ContextParams, LlamaError, Model};

/// Largest decode batch: bounds the logits kept per model to `MAX_BATCH × n_vocab` floats.
const MAX_BATCH: usize = 512;

/// Errors from [`evaluate`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// llama.cpp failed (load, context, decode).
    #[error(transparent)]
    Llama(#[from] LlamaError),
    /// The text is too short for two chunks.
    #[error("the text tokenises to {have} tokens; at least {need} (2 × n_ctx {n_ctx}) are needed")]
    NotEnoughTokens {
        /// Tokens in the text.
        have: usize,
        /// Tokens needed.
        need: usize,
        /// The chunk length.
        n_ctx: usize,
    },
    /// A model holds QE tensors of another QE format version (llama.cpp patched with the QE
    /// types would misread them).
    #[error(transparent)]
    QeVersion(#[from] crate::qe_version::QeVersionError),
    /// Invalid options.
    #[error("invalid evaluation options: {0}")]
    InvalidOptions(String),
    /// The model and the base model do not share a vocabulary.
    #[error("vocabularies differ: model has {model} tokens, base has {base}")]
    VocabMismatch {
        /// Model vocabulary size.
        model: usize,
        /// Base vocabulary size.
        base: usize,
    },
    /// The two models tokenise the text differently.
    #[error("the model and the base model tokenise the text differently (first difference at token {index})")]
    TokenizationMismatch {
        /// Index of the first differing token.
        index: usize,
    },
    /// llama-perplexity's method assumes the tokenizer adds no EOS.
    #[error("model {0} adds EOS to every text; perplexity chunks would be wrong")]
    AddsEos(String),
}

/// Options of [`evaluate`].
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Chunk length in tokens (llama-perplexity's `-c`, default 512).
    pub n_ctx: usize,
    /// Evaluate at most this many chunks (`--chunks`); `None` = all.
    pub n_chunks: Option<usize>,
    /// Threads for llama.cpp and the softmax work (0 = all cores).
    pub n_threads: usize,
    /// Print a line per chunk to stderr.
    pub progress: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            n_ctx: 512,
            n_chunks: None,
            n_threads: 0,
            progress: false,
        }
    }
}

/// A value with its standard uncertainty.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// The value.
    pub value: f64,
    /// One standard error.
    pub uncertainty: f64,
}

/// Order statistics of the per-token KL divergence.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KldPercentiles {
    /// Smallest.
    pub min: f64,
    /// 1st percentile.
    pub p01: f64,
    /// 5th percentile.
    pub p05: f64,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

/// Comparison of the model against a base model (`llama-perplexity --kl-divergence`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KldReport {
    /// The base model file.
    pub base: String,
    /// Perplexity of the base model.
    pub ppl_base: Estimate,
    /// Correlation of the per-token NLLs of model and base.
    pub ln_ppl_correlation: f64,
    /// Mean ln(PPL(model) / PPL(base)).
    pub ln_ppl_ratio: Estimate,
    /// PPL(model) / PPL(base).
    pub ppl_ratio: Estimate,
    /// PPL(model) − PPL(base).
    pub ppl_diff: Estimate,
    /// Mean KL divergence of the model from the base, per token (nats).
    pub kld_mean: Estimate,
    /// Distribution of the per-token KL divergence.
    pub kld: KldPercentiles,
    /// Fraction of tokens where both models rank the same token first (0–1).
    pub same_top: Estimate,
    /// Mean change of the probability of the correct token (model − base, 0–1 scale).
    pub delta_p_mean: Estimate,
    /// RMS of that change.
    pub delta_p_rms: Estimate,
    /// Largest absolute change.
    pub delta_p_max_abs: f64,
}

/// Result of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    /// The evaluated model file.
    pub model: String,
    /// Chunk length.
    pub n_ctx: usize,
    /// Chunks evaluated.
    pub n_chunks: usize,
    /// Tokens scored (`n_chunks × (n_ctx − 1 − n_ctx/2)`).
    pub n_scored: usize,
    /// Tokens in the whole text.
    pub n_text_tokens: usize,
    /// Perplexity of the model.
    pub ppl: Estimate,
    /// Comparison with the base model, when one was given.
    pub kl: Option<KldReport>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// llama.cpp's `mean_and_uncertainty`: mean of a sample from its sum and sum of squares.
fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> Estimate {
    if count < 1 {
        return Estimate {
            value: 0.0,
            uncertainty: 0.0,
        };
    }
    let n = count as f64;
    let f = sum / n;
    let var = sum2 / n - f * f;
    let df = if var > 0.0 && count > 10 {
        (var / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Estimate {
        value: f,
        uncertainty: df,
    }
}

/// llama.cpp's covariance of two sample means.
fn covariance(sa: f64, sb: f64, sab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (sab / n - (sa / n) * (sb / n)) / (n - 1.0)
}

/// llama.cpp's percentile: linear interpolation between order statistics of a sorted sample.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return sorted[sorted.len() - 1];
    }
    let p = fraction * (sorted.len() - 1) as f64;
    let ip = p as usize;
    let frac = p - ip as f64;
    (1.0 - frac) * sorted[ip] + frac * sorted[(ip + 1).min(sorted.len() - 1)]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n.is_multiple_of(2) => 0.5 * (sorted[n / 2] + sorted[n / 2 - 1]),
        _ => sorted[n / 2],
    }
}

/// log(Σ exp(logits)) in f64, and the argmax.
fn log_sum_exp(logits: &[f32]) -> (f64, usize) {
    let imax = argmax(logits);
    let max = logits[imax] as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    (max + sum.ln(), imax)
}

/// Per-token result.
#[derive(Clone, Copy, Debug, Default)]
struct TokenStats {
    nll: f64,
    nll_base: f64,
    kld: f64,
    same_top: bool,
}

/// Score one position against the base: NLLs, KLD(base‖model) over the full vocabulary in f64,
/// top-token agreement. `scratch` holds the base's unnormalised probabilities (two exponentials
/// per vocabulary entry instead of three).
fn score_pair(logits: &[f32], base: &[f32], target: usize, scratch: &mut Vec<f64>) -> TokenStats {
    let (lse, imax) = log_sum_exp(logits);
    let imax_b = argmax(base);
    let max_b = base[imax_b] as f64;
    scratch.clear();
    scratch.extend(base.iter().map(|&b| (b as f64 - max_b).exp()));
    let sum_b: f64 = scratch.iter().sum();
    let lse_b = max_b + sum_b.ln();
    let mut kld = 0.0;
    for ((&l, &b), &e_b) in logits.iter().zip(base).zip(scratch.iter()) {
        if e_b > 0.0 {
            let logp_b = b as f64 - lse_b;
            let logp = l as f64 - lse;
            kld += (e_b / sum_b) * (logp_b - logp);
        }
    }
    TokenStats {
        nll: lse - logits[target] as f64,
        nll_base: lse_b - base[target] as f64,
        kld,
        same_top: imax == imax_b,
    }
}

fn score_single(logits: &[f32], target: usize) -> TokenStats {
    let (lse, _) = log_sum_exp(logits);
    TokenStats {
        nll: lse - logits[target] as f64,
        ..TokenStats::default()
    }
}

/// Running sums, as llama.cpp's `kl_divergence_result`.
#[derive(Default)]
struct Sums {
    nll: f64,
    nll2: f64,
    nll_base: f64,
    nll_base2: f64,
    nll_nll_base: f64,
    kld: f64,
    kld2: f64,
    p_diff: f64,
    p_diff2: f64,
    p_diff4: f64,
    max_p_diff: f64,
    n_same_top: usize,
    count: usize,
}

impl Sums {
    fn add(&mut self, t: &TokenStats, with_base: bool) {
        self.nll += t.nll;
        self.nll2 += t.nll * t.nll;
        self.count += 1;
        if !with_base {
            return;
        }
        self.nll_base += t.nll_base;
        self.nll_base2 += t.nll_base * t.nll_base;
        self.nll_nll_base += t.nll * t.nll_base;
        self.kld += t.kld;
        self.kld2 += t.kld * t.kld;
        let p_diff = (-t.nll).exp() - (-t.nll_base).exp();
        self.p_diff += p_diff;
        let d2 = p_diff * p_diff;
        self.p_diff2 += d2;
        self.p_diff4 += d2 * d2;
        self.max_p_diff = self.max_p_diff.max(p_diff.abs());
        self.n_same_top += usize::from(t.same_top);
    }

    fn ppl(&self) -> Estimate {
        let l = mean_and_uncertainty(self.nll, self.nll2, self.count);
        let v = l.value.exp();
        Estimate {
            value: v,
            uncertainty: v * l.uncertainty,
        }
    }
}

fn tokenize_checked(model: &Model, text: &str) -> Result<Vec<i32>, EvalError> {
    if model.add_eos() {
        return Err(EvalError::AddsEos(model.path().display().to_string()));
    }
    Ok(model.tokenize(text, true)?)
}

/// Refuse a file with QE tensors of another QE format version. A file this crate's GGUF reader
/// cannot parse is left to llama.cpp, whose load error is then the one reported.
fn check_qe_version(path: &Path) -> Result<(), EvalError> {
    if let Ok(f) = crate::gguf::GgufFile::open(path) {
        crate::qe_version::check(path, f.header())?;
    }
    Ok(())
}

/// Measure the perplexity of `model` on `text`, and with `base` its KL divergence from the base
/// model, exactly as `llama-perplexity` (`--kl-divergence`) does; see the module docs.
pub fn evaluate(
    model: &Path,
    base: Option<&Path>,
    text: &str,
    opts: EvalOptions,
) -> Result<EvalReport, EvalError> {
    let t0 = Instant::now();
    check_qe_version(model)?;
    if let Some(b) = base {
        check_qe_version(b)?;
    }
    let model_m = Model::load(model)?;
    let base_m = base.map(Model::load).transpose()?;
    let mut report = evaluate_loaded(&model_m, base_m.as_ref(), text, opts)?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// [`evaluate`] with models already loaded (to compare several models against one base without
/// reloading it).
pub fn evaluate_loaded(
    model_m: &Model,
    base_m: Option<&Model>,
    text: &str,
    opts: EvalOptions,
) -> Result<EvalReport, EvalError> {
    let t0 = Instant::now();
    let n_ctx = opts.n_ctx;
    if n_ctx < 4 {
        return Err(EvalError::InvalidOptions(format!(
            "n_ctx {n_ctx} is too small"
        )));
    }
    let n_ctx_u32 = u32::try_from(n_ctx)
        .map_err(|_| EvalError::InvalidOptions(format!("n_ctx {n_ctx} is too large")))?;
    if opts.n_chunks == Some(0) {
        return Err(EvalError::InvalidOptions(
            "n_chunks must be positive".into(),
        ));
    }
    let threads = if opts.n_threads == 0 {
        crate::llama::default_threads()
    } else {
        opts.n_threads
    };

    let tokens = tokenize_checked(model_m, text)?;
    if let Some(b) = base_m {
        if b.n_vocab() != model_m.n_vocab() {
            return Err(EvalError::VocabMismatch {
                model: model_m.n_vocab(),
                base: b.n_vocab(),
            });
        }
        let base_tokens = tokenize_checked(b, text)?;
        if base_tokens != tokens {
            let index = tokens
                .iter()
                .zip(&base_tokens)
                .position(|(a, b)| a != b)
                .unwrap_or(tokens.len().min(base_tokens.len()));
            return Err(EvalError::TokenizationMismatch { index });
        }
    }
    if tokens.len() < 2 * n_ctx {
        return Err(EvalError::NotEnoughTokens {
            have: tokens.len(),
            need: 2 * n_ctx,
            n_ctx,
        });
    }
    let n_chunk_max = tokens.len() / n_ctx;
    let n_chunks = opts.n_chunks.map_or(n_chunk_max, |c| c.min(n_chunk_max));

    // Decode each chunk in sub-batches of at most MAX_BATCH tokens, model and base in lockstep,
    // scoring each sub-batch's outputs before the next: logits memory stays at
    // MAX_BATCH × n_vocab per model whatever n_ctx is.
    let n_batch = n_ctx.min(MAX_BATCH);
    let params = || ContextParams {
        n_ctx: n_ctx_u32,
        n_batch: n_batch as u32,
        n_threads: threads,
        eval_callback: None,
    };
    let mut ctx = Context::new(model_m, params())?;
    let mut ctx_base = match base_m {
        Some(b) => Some(Context::new(b, params())?),
        None => None,
    };
    if ctx.n_batch() < n_batch || ctx.n_ctx() < n_ctx {
        return Err(EvalError::InvalidOptions(format!(
            "llama.cpp allocated n_ctx {} / n_batch {}, below the {n_ctx} / {n_batch} needed",
            ctx.n_ctx(),
            ctx.n_batch()
        )));
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| EvalError::InvalidOptions(format!("thread pool: {e}")))?;

    let first = n_ctx / 2;
    let n_scored_per_chunk = n_ctx - 1 - first;
    let with_base = ctx_base.is_some();
    let mut sums = Sums::default();
    let mut klds: Vec<f64> = Vec::with_capacity(n_chunks * n_scored_per_chunk);

    for chunk in 0..n_chunks {
        let start = chunk * n_ctx;
        let mut batch = tokens[start..start + n_ctx].to_vec();
        if model_m.add_bos() {
            batch[0] = model_m.bos();
        }
        let mut bbatch = tokens[start..start + n_ctx].to_vec();
        if let Some(b) = base_m.filter(|b| b.add_bos()) {
            bbatch[0] = b.bos();
        }
        ctx.clear_kv_cache();
        if let Some(cb) = ctx_base.as_mut() {
            cb.clear_kv_cache();
        }
        let mut stats: Vec<TokenStats> = Vec::with_capacity(n_scored_per_chunk);
        for b0 in (0..n_ctx).step_by(n_batch) {
            let b1 = (b0 + n_batch).min(n_ctx);
            let out_from = first.max(b0) - b0;
            let pos0 = b0 as i32;
            ctx.decode_with_outputs(&batch[b0..b1], pos0, out_from)?;
            if let Some(cb) = ctx_base.as_mut() {
                cb.decode_with_outputs(&bbatch[b0..b1], pos0, out_from)?;
            }
            // Scored positions in this sub-batch: first ..= n_ctx-2, predicting the next token.
            let scored = first.max(b0)..b1.min(n_ctx - 1);
            let rows: Vec<&[f32]> = scored
                .clone()
                .map(|j| ctx.logits(j - b0))
                .collect::<Result<_, _>>()?;
            let base_rows: Option<Vec<&[f32]>> = match &ctx_base {
                Some(cb) => Some(
                    scored
                        .clone()
                        .map(|j| cb.logits(j - b0))
                        .collect::<Result<_, _>>()?,
                ),
                None => None,
            };
            let targets: Vec<usize> = scored.map(|j| tokens[start + j + 1] as usize).collect();
            stats.extend(pool.install(|| {
                (0..rows.len())
                    .into_par_iter()
                    .map_init(Vec::new, |scratch, k| match &base_rows {
                        Some(b) => score_pair(rows[k], b[k], targets[k], scratch),
                        None => score_single(rows[k], targets[k]),
                    })
                    .collect::<Vec<_>>()
            }));
        }
        // Summed in token order, so the result does not depend on the thread count.
        for s in &stats {
            sums.add(s, with_base);
            if with_base {
                klds.push(s.kld);
            }
        }
        if opts.progress {
            let ppl = sums.ppl();
            if with_base {
                let kl = mean_and_uncertainty(sums.kld, sums.kld2, sums.count);
                eprintln!(
                    "[{}/{n_chunks}] PPL {:.4} ± {:.4}  KLD {:.6} ± {:.6}  same top {:.2}%",
                    chunk + 1,
                    ppl.value,
                    ppl.uncertainty,
                    kl.value,
                    kl.uncertainty,
                    100.0 * sums.n_same_top as f64 / sums.count as f64
                );
            } else {
                eprintln!(
                    "[{}/{n_chunks}] PPL {:.4} ± {:.4}",
                    chunk + 1,
                    ppl.value,
                    ppl.uncertainty
                );
            }
        }
    }

    let kl = match base_m {
        Some(b) if with_base => Some(kl_report(&sums, klds, b.path())),
        _ => None,
    };
    Ok(EvalReport {
        model: model_m.path().display().to_string(),
        n_ctx,
        n_chunks,
        n_scored: sums.count,
        n_text_tokens: tokens.len(),
        ppl: sums.ppl(),
        kl,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn kl_report(s: &Sums, mut klds: Vec<f64>, base: &Path) -> KldReport {
    let n = s.count;
    let log_ppl = mean_and_uncertainty(s.nll, s.nll2, n);
    let log_ppl_base = mean_and_uncertainty(s.nll_base, s.nll_base2, n);
    let ppl = log_ppl.value.exp();
    let ppl_unc = ppl * log_ppl.uncertainty;
    let ppl_base = log_ppl_base.value.exp();
    let ppl_base_unc = ppl_base * log_ppl_base.uncertainty;
    let cov = covariance(s.nll, s.nll_base, s.nll_nll_base, n);
    let denom = log_ppl.uncertainty * log_ppl_base.uncertainty;
    let cor = if denom > 0.0 { cov / denom } else { 0.0 };
    let ratio_ln = log_ppl.value - log_ppl_base.value;
    let ratio_ln_unc = (log_ppl.uncertainty.powi(2) + log_ppl_base.uncertainty.powi(2) - 2.0 * cov)
        .max(0.0)
        .sqrt();
    let ratio = ratio_ln.exp();
    let ppl_cov = ppl * ppl_base * cov;
    let diff_unc = (ppl_unc * ppl_unc + ppl_base_unc * ppl_base_unc - 2.0 * ppl_cov)
        .max(0.0)
        .sqrt();

    klds.sort_by(|a, b| a.total_cmp(b));
    let same = if n > 0 {
        s.n_same_top as f64 / n as f64
    } else {
        0.0
    };
    let same_unc = if n > 1 {
        (same * (1.0 - same) / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    let mse = mean_and_uncertainty(s.p_diff2, s.p_diff4, n);
    let rms = mse.value.max(0.0).sqrt();
    let rms_unc = if rms > 0.0 {
        0.5 / rms * mse.uncertainty
    } else {
        0.0
    };
    KldReport {
        base: base.display().to_string(),
        ppl_base: Estimate {
            value: ppl_base,
            uncertainty: ppl_base_unc,
        },
        ln_ppl_correlation: cor,
        ln_ppl_ratio: Estimate {
            value: ratio_ln,
            uncertainty: ratio_ln_unc,
        },
        ppl_ratio: Estimate {
            value: ratio,
            uncertainty: ratio * ratio_ln_unc,
        },
        ppl_diff: Estimate {
            value: ppl - ppl_base,
            uncertainty: diff_unc,
        },
        kld_mean: mean_and_uncertainty(s.kld, s.kld2, n),
        kld: KldPercentiles {
            min: percentile(&klds, 0.0),
            p01: percentile(&klds, 0.01),
            p05: percentile(&klds, 0.05),
            p10: percentile(&klds, 0.10),
            median: median(&klds),
            p90: percentile(&klds, 0.90),
            p95: percentile(&klds, 0.95),
            p99: percentile(&klds, 0.99),
            p99_9: percentile(&klds, 0.999),
            max: percentile(&klds, 1.0),
        },
        same_top: Estimate {
            value: same,
            uncertainty: same_unc,
        },
        delta_p_mean: mean_and_uncertainty(s.p_diff, s.p_diff2, n),
        delta_p_rms: Estimate {
            value: rms,
            uncertainty: rms_unc,
        },
        delta_p_max_abs: s.max_p_diff,
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model      {}", self.model)?;
        if let Some(kl) = &self.kl {
            writeln!(f, "base       {}", kl.base)?;
        }
        writeln!(
            f,
            "chunks     {} × {} tokens, {} scored ({} in text), {:.1} s",
            self.n_chunks, self.n_ctx, self.n_scored, self.n_text_tokens, self.seconds
        )?;
        writeln!(
            f,
            "PPL        {:.4} ± {:.4}",
            self.ppl.value, self.ppl.uncertainty
        )?;
        if let Some(kl) = &self.kl {
            writeln!(
                f,
                "PPL base   {:.4} ± {:.4}",
                kl.ppl_base.value, kl.ppl_base.uncertainty
            )?;
            writeln!(
                f,
                "PPL ratio  {:.5} ± {:.5}   (ln {:+.6} ± {:.6}, cor {:.2}%)",
                kl.ppl_ratio.value,
                kl.ppl_ratio.uncertainty,
                kl.ln_ppl_ratio.value,
                kl.ln_ppl_ratio.uncertainty,
                100.0 * kl.ln_ppl_correlation
            )?;
            writeln!(
                f,
                "KLD        {:.6} ± {:.6}",
                kl.kld_mean.value, kl.kld_mean.uncertainty
            )?;
            writeln!(
                f,
                "KLD pct    median {:.6}  90% {:.6}  95% {:.6}  99% {:.6}  max {:.6}",
                kl.kld.median, kl.kld.p90, kl.kld.p95, kl.kld.p99, kl.kld.max
            )?;
            writeln!(
                f,
                "same top   {:.3} ± {:.3} %",
                100.0 * kl.same_top.value,
                100.0 * kl.same_top.uncertainty
            )?;
            writeln!(
                f,
                "Δp         mean {:+.3} ± {:.3} %   RMS {:.3} ± {:.3} %   max |Δp| {:.3} %",
                100.0 * kl.delta_p_mean.value,
                100.0 * kl.delta_p_mean.uncertainty,
                100.0 * kl.delta_p_rms.value,
                100.0 * kl.delta_p_rms.uncertainty,
                100.0 * kl.delta_p_max_abs
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_llama_cpp() {
        let v: Vec<f64> = (0..11).map(|i| i as f64).collect();
        assert_eq!(percentile(&v, 0.0), 0.0);
        assert_eq!(percentile(&v, 1.0), 10.0);
        assert!((percentile(&v, 0.95) - 9.5).abs() < 1e-12);
        assert!((percentile(&v, 0.99) - 9.9).abs() < 1e-12);
        assert_eq!(median(&v), 5.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), 2.5);
    }

    #[test]
    fn mean_and_uncertainty_matches_sample_stats() {
        let xs: Vec<f64> = (0..20).map(|i| (i * i) as f64 * 0.1).collect();
        let (s, s2) = xs.iter().fold((0.0, 0.0), |(a, b), x| (a + x, b + x * x));
        let e = mean_and_uncertainty(s, s2, xs.len());
        let mean = s / 20.0;
        let var_pop = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 20.0;
        assert!((e.value - mean).abs() < 1e-12);
        assert!((e.uncertainty - (var_pop / 19.0).sqrt()).abs() < 1e-9);
        // Too few samples: no uncertainty, as llama.cpp.
        assert_eq!(mean_and_uncertainty(3.0, 5.0, 2).uncertainty, 0.0);
    }

    #[test]
    fn kld_of_known_distributions() {
        // base p = softmax([0, ln 3]) = (1/4, 3/4); model q = (1/2, 1/2).
        let base = [0.0f32, 3f32.ln()];
        let model = [5.0f32, 5.0];
        let mut scratch = Vec::new();
        let s = score_pair(&model, &base, 1, &mut scratch);
        let want = 0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln();
        assert!((s.kld - want).abs() < 1e-6, "{} vs {want}", s.kld);
        assert!((s.nll - 2f64.ln()).abs() < 1e-6);
        assert!((s.nll_base - (4.0f64 / 3.0).ln()).abs() < 1e-6);
        // Ties go to the first index, so the model's top is 0, the base's 1.
        assert!(!s.same_top);
        let same = score_pair(&base, &base, 0, &mut scratch);
        assert_eq!(same.kld, 0.0);
        assert!(same.same_top);
    }
}

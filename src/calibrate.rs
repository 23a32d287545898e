//! Calibration: run llama.cpp over a text and collect, for every matmul whose weight is a model
//! tensor, the full Gram Σ = Σ_t x_t x_tᵀ of its input plus llama.cpp's imatrix statistics
//! (Σ x², counts), written as a Gram file ([`crate::gram`]).
//!
//! How it works:
//! 1. The text is tokenised as llama.cpp's imatrix / perplexity tools do (whole text with BOS,
//!    `n_ctx`-token chunks, BOS substituted at each chunk start when the model adds one).
//! 2. A *probe* decode of a few tokens asks llama.cpp for every matmul node without observing any
//!    (no graph splits): which model weights are multiplied, with which input node. Weights whose
//!    matmuls read the same input node in one decode (q/k/v, gate/up) share one Gram — detected
//!    from the graph, not from names.
//! 3. Inputs are grouped into passes so that the f64 accumulators of one pass fit the memory
//!    budget; each pass decodes every chunk (logits for all tokens, so the output projection sees
//!    every row) and observes only the first matmul of each active input. Each chunk's XᵀX is one
//!    f32 GEMM (faer, upper triangle), added into f64. Finished Grams are streamed into the file
//!    after their pass, so at most one pass's Grams are in memory.
//!
//! A *paired* calibration ([`CalibrateOptions::paired_model`]) loads a quantised version Q of the
//! model too and decodes every chunk twice, float model first: the float model's inputs X of the
//! pass's matmuls are kept, then Q's inputs X̃ of the same matmuls (same weight names) are
//! accumulated into Σ̃ = Σ x̃x̃ᵀ, the imatrix statistics and the cross products M = Σ x x̃ᵀ (one
//! f32 GEMM per input per chunk). The file then describes the layers as Q runs them
//! ([`crate::solver::cross`] uses it).
//!
//! Mixture-of-experts weights (`MUL_MAT_ID`) get per-expert diagonal statistics only (see
//! [`crate::gram`] for what full Grams would need), collected in the first pass.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use faer::Par;

use crate::gguf::{GgufError, GgufFile};
use crate::gram::{
    CrossAccumulator, ExpertAccumulator, GramError, GramLayout, GramWriter, InputAccumulator,
    WeightStats,
};
use crate::llama::{
    Context, ContextParams, EvalCallback, LlamaError, MatMulInfo, MatMulInput, MatMulKind, Model,
};

/// Why calibration failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// llama.cpp failed.
    #[error(transparent)]
    Llama(#[from] LlamaError),
    /// The Gram file could not be written.
    #[error(transparent)]
    Gram(#[from] GramError),
    /// The model's tensor table could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Bad options.
    #[error("invalid calibration options: {0}")]
    InvalidOptions(String),
    /// The text is shorter than one chunk.
    #[error("the calibration text has {tokens} tokens, fewer than one chunk of {n_ctx}")]
    TextTooShort {
        /// Tokens in the text.
        tokens: usize,
        /// Chunk length.
        n_ctx: usize,
    },
    /// One input's accumulator alone exceeds the memory budget.
    #[error("the Gram of input '{input}' (width {p}, used by {weight}) needs {needed} bytes, more than the memory budget of {budget} bytes (raise --max-memory)")]
    MemoryBudget {
        /// Graph node of the input.
        input: String,
        /// A weight reading it.
        weight: String,
        /// Input width.
        p: usize,
        /// Bytes needed (accumulator and GEMM scratch).
        needed: u64,
        /// The budget.
        budget: u64,
    },
    /// The computation graph did not behave as the probe decode said it would.
    #[error("model {model}: {reason}")]
    Graph {
        /// The model file.
        model: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Default [`CalibrateOptions::sink_weight`], chosen by end-to-end KLD (docs/CALIBRATION.md).
pub const DEFAULT_SINK_WEIGHT: f32 = 30.0;

/// Options of [`calibrate`].
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Chunk length in tokens.
    pub n_ctx: usize,
    /// Use at most this many chunks (`None`: every whole chunk of the text).
    pub n_chunks: Option<usize>,
    /// Threads for llama.cpp and the Gram GEMMs (0 = all cores).
    pub n_threads: usize,
    /// Collect only the diagonal statistics (a plain imatrix, what `llama-imatrix` computes).
    pub diag_only: bool,
    /// Memory budget for the accumulators in bytes; more passes over the text when exceeded.
    pub max_memory: u64,
    /// Print progress to stderr.
    pub progress: bool,
    /// Name recorded in `imatrix.datasets`.
    pub dataset: String,
    /// Weight of each chunk's first token in every statistic (Gram, `in_sum2`): its input row is
    /// scaled by `√w` before it is accumulated. The first position is the attention sink: every
    /// later token attends to it heavily, so the errors a quantised weight makes on that one
    /// input reach every output. A plain sum (w = 1, what `llama-imatrix` does) lets the solver
    /// trade that one row away; see `docs/CALIBRATION.md` for the measurements behind the default.
    pub sink_weight: f32,
    /// Paired calibration: a quantised version of the model (same architecture, same
    /// vocabulary). Its inputs give the Gram and imatrix statistics, and the cross products with
    /// the float model's inputs are written too (see the module docs). Needs full Grams.
    pub paired_model: Option<PathBuf>,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            n_ctx: 512,
            n_chunks: None,
            n_threads: 0,
            diag_only: false,
            max_memory: default_max_memory(),
            progress: false,
            dataset: String::new(),
            sink_weight: DEFAULT_SINK_WEIGHT,
            paired_model: None,
        }
    }
}

/// What a calibration did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CalibrateSummary {
    /// Weights with statistics.
    pub n_weights: usize,
    /// Distinct dense inputs (one Gram each).
    pub n_inputs: usize,
    /// MoE weights (diagonal statistics only).
    pub n_expert_weights: usize,
    /// Chunks decoded per pass.
    pub n_chunks: usize,
    /// Chunk length.
    pub n_ctx: usize,
    /// Passes over the text.
    pub passes: usize,
    /// Bytes of the largest pass's accumulators.
    pub peak_accumulator_bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Half of `MemAvailable` from /proc/meminfo (4 GiB when it cannot be read).
pub fn default_max_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024 / 2)
        .unwrap_or(4 << 30)
}

/// Parse a size such as `512M`, `4G`, `1.5GiB`, `100000` (bytes). Binary units (K = 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = v * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Split a token stream into `n_ctx`-token chunks as llama.cpp's imatrix tool does: whole chunks
/// only, BOS substituted at each chunk start when `bos` is given.
pub fn make_chunks(
    tokens: &[i32],
    n_ctx: usize,
    max_chunks: Option<usize>,
    bos: Option<i32>,
) -> Vec<Vec<i32>> {
    let mut n = tokens.len() / n_ctx.max(1);
    if let Some(m) = max_chunks {
        n = n.min(m);
    }
    (0..n)
        .map(|i| {
            let mut c = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
            if let Some(b) = bos {
                c[0] = b;
            }
            c
        })
        .collect()
}

/// Options of [`generate_chunks`]: calibration text the model writes itself.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Number of sequences.
    pub n_chunks: usize,
    /// Tokens per sequence (BOS included when the model adds one).
    pub n_ctx: usize,
    /// Seed of the sampler; sequence `i` uses seed `seed + i`.
    pub seed: u64,
    /// Sample among the `top_k` most likely tokens (1 = greedy).
    pub top_k: usize,
    /// Softmax temperature over those tokens.
    pub temperature: f32,
    /// llama.cpp threads (0 = all cores).
    pub n_threads: usize,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            n_chunks: 8,
            n_ctx: 512,
            seed: 1,
            top_k: 40,
            temperature: 1.0,
            n_threads: 0,
            progress: false,
        }
    }
}

/// A small deterministic generator (splitmix64) for the sampler.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Choose a token from `logits`: softmax at `temperature` over the `top_k` largest (ties broken
/// by the lower id), never a token for which `banned` is true, drawn with `u` ∈ [0, 1).
fn sample_top_k(
    logits: &[f32],
    top_k: usize,
    temperature: f32,
    u: f64,
    banned: impl Fn(i32) -> bool,
) -> Option<i32> {
    let mut cand: Vec<(f32, i32)> = logits
        .iter()
        .enumerate()
        .filter(|(i, v)| v.is_finite() && !banned(*i as i32))
        .map(|(i, &v)| (v, i as i32))
        .collect();
    let k = top_k.max(1).min(cand.len());
    if k == 0 {
        return None;
    }
    let cmp = |a: &(f32, i32), b: &(f32, i32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if k < cand.len() {
        cand.select_nth_unstable_by(k - 1, cmp);
        cand.truncate(k);
    }
    cand.sort_by(cmp);
    let t = f64::from(temperature.max(1e-6));
    let top = f64::from(cand[0].0);
    let w: Vec<f64> = cand
        .iter()
        .map(|&(v, _)| ((f64::from(v) - top) / t).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut target = u * total;
    for (&(_, id), wi) in cand.iter().zip(&w) {
        if target < *wi {
            return Some(id);
        }
        target -= wi;
    }
    cand.last().map(|c| c.1)
}

/// Let the model write its own calibration text (no dataset): each sequence starts at BOS and
/// continues by seeded top-k sampling, end-of-generation tokens excluded, until `n_ctx` tokens.
/// Deterministic for a given model file, options and thread count.
pub fn generate_chunks(
    model: &Model,
    opts: &GenerateOptions,
) -> Result<Vec<Vec<i32>>, CalibrateError> {
    if opts.n_chunks == 0 || !(8..=1 << 20).contains(&opts.n_ctx) {
        return Err(CalibrateError::InvalidOptions(format!(
            "generation needs at least one chunk and 8 ≤ n_ctx ≤ 2^20 (got {} × {})",
            opts.n_chunks, opts.n_ctx
        )));
    }
    let mut ctx = Context::new(
        model,
        ContextParams {
            n_ctx: opts.n_ctx as u32,
            n_batch: opts.n_ctx as u32,
            n_threads: opts.n_threads,
            eval_callback: None,
        },
    )?;
    let bos = model.bos();
    let first = if bos >= 0 { bos } else { 0 };
    let mut chunks = Vec::with_capacity(opts.n_chunks);
    for c in 0..opts.n_chunks {
        let mut rng = SplitMix(opts.seed.wrapping_add(c as u64));
        let mut toks = vec![first];
        ctx.clear_kv_cache();
        while toks.len() < opts.n_ctx {
            let pos = toks.len() - 1;
            ctx.decode(&toks[pos..], pos as i32, false)?;
            let next = sample_top_k(
                ctx.logits(0)?,
                opts.top_k,
                opts.temperature,
                rng.next_f64(),
                |t| model.is_eog(t),
            )
            .ok_or_else(|| CalibrateError::Graph {
                model: model.path().to_path_buf(),
                reason: "no finite logit to sample from".into(),
            })?;
            toks.push(next);
        }
        if opts.progress {
            eprintln!("generate: sequence {}/{}", c + 1, opts.n_chunks);
        }
        chunks.push(toks);
    }
    Ok(chunks)
}

/// One matmul seen by the probe decode.
#[derive(Clone, Debug)]
struct Seen {
    weight: String,
    kind: MatMulKind,
    input_id: usize,
    input_name: String,
    p: usize,
    n_expert: usize,
}

/// What the callback does with the inputs of a decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    /// Accumulate Gram and imatrix statistics (plain calibration).
    #[default]
    Accumulate,
    /// Keep the float model's inputs of the chunk (paired calibration, first decode).
    Capture,
    /// Accumulate the quantised model's inputs and their cross products with the kept ones
    /// (paired calibration, second decode).
    Paired,
}

#[derive(Default)]
struct State {
    probing: bool,
    mode: Mode,
    /// Float-model input rows of the current chunk, per input (paired calibration).
    captured: Vec<Vec<f32>>,
    /// Rows of `captured[i]` already paired with the quantised model's.
    cursor: Vec<usize>,
    cross: Vec<Option<CrossAccumulator>>,
    model_tensors: HashSet<String>,
    probe: Vec<Seen>,
    weights: HashMap<String, WeightStats>,
    input_active: Vec<bool>,
    experts_active: bool,
    /// input_id → input index, for the current decode.
    decode_inputs: HashMap<usize, usize>,
    observed: Vec<bool>,
    accs: Vec<Option<InputAccumulator>>,
    experts: Vec<ExpertAccumulator>,
    scratch: Vec<f32>,
    n_threads: usize,
    /// √(sink weight); 1 = plain sums.
    sink_scale: f32,
    /// Row buffer for the scaled first row.
    weighted: Vec<f32>,
    error: Option<String>,
}

impl State {
    fn fail(&mut self, msg: String) {
        if self.error.is_none() {
            self.error = Some(msg);
        }
    }

    fn wants(&mut self, info: &MatMulInfo<'_>) -> bool {
        if self.error.is_some() || !self.model_tensors.contains(info.weight_name) {
            return false;
        }
        if self.probing {
            let seen = Seen {
                weight: info.weight_name.to_string(),
                kind: info.kind,
                input_id: info.input_id,
                input_name: info.input_name.to_string(),
                p: info.weight_shape[0].max(0) as usize,
                n_expert: info.weight_shape[2].max(1) as usize,
            };
            if let Some(prev) = self.probe.iter().find(|s| s.weight == seen.weight) {
                if prev.input_id != seen.input_id {
                    self.fail(format!(
                        "weight '{}' is multiplied with two different inputs ('{}' and '{}') in one decode; not supported",
                        seen.weight, prev.input_name, seen.input_name
                    ));
                }
                return false;
            }
            self.probe.push(seen);
            return false;
        }
        match self.weights.get(info.weight_name) {
            None => {
                self.fail(format!(
                    "weight '{}' was multiplied in a chunk but not in the probe decode",
                    info.weight_name
                ));
                false
            }
            Some(WeightStats::Experts(_)) => self.experts_active,
            Some(&WeightStats::Input(i)) => match self.decode_inputs.get(&info.input_id) {
                Some(&j) if j == i => false,
                Some(&j) => {
                    self.fail(format!(
                        "weight '{}' shares its input with input #{j} in a chunk but not in the probe decode",
                        info.weight_name
                    ));
                    false
                }
                None => {
                    self.decode_inputs.insert(info.input_id, i);
                    self.input_active[i]
                }
            },
        }
    }

    fn observe(&mut self, info: &MatMulInfo<'_>, input: &MatMulInput<'_>) -> bool {
        if self.error.is_some() {
            return false;
        }
        let stats = self.weights.get(info.weight_name).cloned();
        match stats {
            Some(WeightStats::Input(i)) => {
                let par = if self.n_threads > 1 {
                    Par::rayon(self.n_threads)
                } else {
                    Par::Seq
                };
                let State {
                    accs,
                    scratch,
                    weighted,
                    sink_scale,
                    observed,
                    mode,
                    captured,
                    cursor,
                    cross,
                    error,
                    ..
                } = self;
                let fail = |error: &mut Option<String>, msg: String| {
                    if error.is_none() {
                        *error = Some(msg);
                    }
                    false
                };
                let Some(acc) = accs[i].as_mut() else {
                    return fail(
                        error,
                        format!("input of '{}' has no accumulator", info.weight_name),
                    );
                };
                if input.n_cols() != acc.p() {
                    let p = acc.p();
                    return fail(
                        error,
                        format!(
                            "input of '{}' has {} columns, expected {p}",
                            info.weight_name,
                            input.n_cols()
                        ),
                    );
                }
                if let Some(k) = input.data().iter().position(|v| !v.is_finite()) {
                    return fail(
                        error,
                        format!(
                            "input of '{}' holds a non-finite value ({}) at element {k}",
                            info.weight_name,
                            input.data()[k]
                        ),
                    );
                }
                // The first observation of an input in a chunk's decode holds position 0 first
                // (decodes start at position 0, ubatches go in order).
                let first = !observed[i];
                let rows: &[f32] = if first && *sink_scale != 1.0 && input.n_rows() > 0 {
                    let p = input.n_cols();
                    weighted.clear();
                    weighted.extend_from_slice(input.data());
                    for v in &mut weighted[..p] {
                        *v *= *sink_scale;
                    }
                    weighted
                } else {
                    input.data()
                };
                observed[i] = true;
                match mode {
                    Mode::Accumulate => acc.add_rows(rows, scratch, par),
                    Mode::Capture => captured[i].extend_from_slice(rows),
                    Mode::Paired => {
                        let c = cursor[i];
                        let Some(x) = captured[i].get(c..c + rows.len()) else {
                            return fail(
                                error,
                                format!(
                                    "the paired model's input of '{}' has more rows than the model's",
                                    info.weight_name
                                ),
                            );
                        };
                        let Some(cr) = cross[i].as_mut() else {
                            return fail(
                                error,
                                format!("input of '{}' has no cross accumulator", info.weight_name),
                            );
                        };
                        cr.add_rows(x, rows, scratch, par);
                        cursor[i] += rows.len();
                        acc.add_rows(rows, scratch, par);
                    }
                }
                true
            }
            Some(WeightStats::Experts(e)) => {
                let Some((ids, n_used)) = input.expert_ids() else {
                    self.fail(format!("'{}' has no expert ids", info.weight_name));
                    return false;
                };
                let n_tokens = ids.len() / n_used.max(1);
                for t in 0..n_tokens {
                    for s in 0..n_used {
                        let ok = input
                            .expert_input(t, s)
                            .is_some_and(|(ex, row)| self.experts[e].add_row(ex, row));
                        if !ok {
                            self.fail(format!(
                                "'{}': bad routing for token {t} slot {s}",
                                info.weight_name
                            ));
                            return false;
                        }
                    }
                }
                true
            }
            None => true,
        }
    }
}

struct Collector(Arc<Mutex<State>>);

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl EvalCallback for Collector {
    fn wants(&mut self, info: &MatMulInfo<'_>) -> bool {
        lock(&self.0).wants(info)
    }

    fn observe(&mut self, info: &MatMulInfo<'_>, input: &MatMulInput<'_>) -> bool {
        lock(&self.0).observe(info, input)
    }
}

/// Tokenise `text` for `model` and calibrate on its chunks (see the module docs), writing the
/// Gram file (or, with `diag_only`, a plain imatrix) to `output`.
pub fn calibrate(
    model_path: &Path,
    text: &str,
    output: &Path,
    opts: &CalibrateOptions,
) -> Result<CalibrateSummary, CalibrateError> {
    let model = Model::load(model_path)?;
    let tokens = model.tokenize(text, true)?;
    let bos = model.add_bos().then(|| model.bos());
    let chunks = make_chunks(&tokens, opts.n_ctx, opts.n_chunks, bos);
    if chunks.is_empty() {
        return Err(CalibrateError::TextTooShort {
            tokens: tokens.len(),
            n_ctx: opts.n_ctx,
        });
    }
    calibrate_chunks(&model, &chunks, output, opts)
}

/// Calibrate on pre-tokenised chunks (each exactly `opts.n_ctx` tokens) with a loaded model.
pub fn calibrate_chunks(
    model: &Model,
    chunks: &[Vec<i32>],
    output: &Path,
    opts: &CalibrateOptions,
) -> Result<CalibrateSummary, CalibrateError> {
    let t0 = Instant::now();
    let n_ctx = opts.n_ctx;
    if !(8..=1 << 20).contains(&n_ctx) {
        return Err(CalibrateError::InvalidOptions(format!(
            "n_ctx {n_ctx} must be between 8 and 2^20"
        )));
    }
    if !(opts.sink_weight.is_finite() && opts.sink_weight > 0.0) {
        return Err(CalibrateError::InvalidOptions(format!(
            "sink weight {} must be a positive finite number",
            opts.sink_weight
        )));
    }
    if chunks.is_empty() {
        return Err(CalibrateError::InvalidOptions("no chunks".into()));
    }
    if opts.paired_model.is_some() && opts.diag_only {
        return Err(CalibrateError::InvalidOptions(
            "a paired calibration needs full Grams (not diag-only)".into(),
        ));
    }
    if let Some(c) = chunks.iter().find(|c| c.len() != n_ctx) {
        return Err(CalibrateError::InvalidOptions(format!(
            "a chunk has {} tokens, expected {n_ctx}",
            c.len()
        )));
    }
    let graph_err = |reason: String| CalibrateError::Graph {
        model: model.path().to_path_buf(),
        reason,
    };
    let n_threads = if opts.n_threads == 0 {
        crate::llama::default_threads()
    } else {
        opts.n_threads
    };
    let model_tensors: HashSet<String> = GgufFile::open(model.path())?
        .tensors
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let state = Arc::new(Mutex::new(State {
        probing: true,
        model_tensors,
        n_threads,
        sink_scale: opts.sink_weight.sqrt(),
        ..State::default()
    }));
    let mut ctx = Context::new(
        model,
        ContextParams {
            n_ctx: n_ctx as u32,
            n_batch: n_ctx as u32,
            n_threads,
            eval_callback: Some(Box::new(Collector(state.clone()))),
        },
    )?;
    let paired_model = match &opts.paired_model {
        Some(path) => {
            let q = Model::load(path)?;
            if q.n_vocab() != model.n_vocab() || q.n_embd() != model.n_embd() {
                return Err(CalibrateError::InvalidOptions(format!(
                    "paired model {}: vocabulary {} and width {} differ from {}'s {} and {}",
                    path.display(),
                    q.n_vocab(),
                    q.n_embd(),
                    model.path().display(),
                    model.n_vocab(),
                    model.n_embd()
                )));
            }
            Some(q)
        }
        None => None,
    };
    let mut paired_ctx = match &paired_model {
        Some(q) => Some(Context::new(
            q,
            ContextParams {
                n_ctx: n_ctx as u32,
                n_batch: n_ctx as u32,
                n_threads,
                eval_callback: Some(Box::new(Collector(state.clone()))),
            },
        )?),
        None => None,
    };
    let paired = paired_ctx.is_some();

    // 1. Probe: which weights are multiplied with which input.
    let probe_len = n_ctx.min(64);
    ctx.clear_kv_cache();
    ctx.decode(&chunks[0][..probe_len], 0, true)?;
    let probe = {
        let mut st = lock(&state);
        if let Some(e) = st.error.take() {
            return Err(graph_err(e));
        }
        st.probing = false;
        std::mem::take(&mut st.probe)
    };
    if probe.is_empty() {
        return Err(graph_err(
            "no matmul with a model weight was seen (not a transformer?)".into(),
        ));
    }
    let mut inputs: Vec<(String, usize)> = Vec::new();
    let mut input_weight: Vec<String> = Vec::new();
    let mut input_of_id: HashMap<usize, usize> = HashMap::new();
    let mut experts: Vec<(usize, usize)> = Vec::new();
    let mut weights = std::collections::BTreeMap::new();
    for s in &probe {
        let stats = match s.kind {
            MatMulKind::MulMatId => {
                experts.push((s.p, s.n_expert));
                WeightStats::Experts(experts.len() - 1)
            }
            MatMulKind::MulMat => {
                let i = *input_of_id.entry(s.input_id).or_insert_with(|| {
                    inputs.push((s.input_name.clone(), s.p));
                    input_weight.push(s.weight.clone());
                    inputs.len() - 1
                });
                if inputs[i].1 != s.p {
                    return Err(graph_err(format!(
                        "'{}' and '{}' read the same input with different widths",
                        s.weight, input_weight[i]
                    )));
                }
                WeightStats::Input(i)
            }
        };
        weights.insert(s.weight.clone(), stats);
    }

    // 2. Passes under the memory budget.
    let full = !opts.diag_only;
    let mut passes: Vec<std::ops::Range<usize>> = Vec::new();
    let mut peak = 0u64;
    {
        let mut start = 0;
        let mut bytes = 0u64;
        let mut scratch = 0u64;
        for (i, &(ref name, p)) in inputs.iter().enumerate() {
            let b = InputAccumulator::bytes(p, full)
                + if paired {
                    CrossAccumulator::bytes(p) + (n_ctx * p * 4) as u64
                } else {
                    0
                };
            let s = if full { (p * p * 4) as u64 } else { 0 };
            if b + s > opts.max_memory && full {
                return Err(CalibrateError::MemoryBudget {
                    input: name.clone(),
                    weight: input_weight[i].clone(),
                    p,
                    needed: b + s,
                    budget: opts.max_memory,
                });
            }
            if i > start && bytes + b + scratch.max(s) > opts.max_memory {
                passes.push(start..i);
                peak = peak.max(bytes + scratch);
                start = i;
                bytes = 0;
                scratch = 0;
            }
            bytes += b;
            scratch = scratch.max(s);
        }
        passes.push(start..inputs.len());
        peak = peak.max(bytes + scratch);
    }

    let layout = GramLayout {
        datasets: vec![opts.dataset.clone()],
        chunk_count: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
        chunk_size: n_ctx as u32,
        inputs: inputs.clone(),
        experts: experts.clone(),
        weights: weights.clone(),
        full,
        sink_weight: opts.sink_weight,
        paired_model: opts.paired_model.as_ref().map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
    };
    let mut writer = GramWriter::create(output, layout)?;
    {
        let mut st = lock(&state);
        st.weights = weights.into_iter().collect();
        st.accs = vec![None; inputs.len()];
        st.cross = vec![None; inputs.len()];
        st.captured = vec![Vec::new(); inputs.len()];
        st.cursor = vec![0; inputs.len()];
        st.experts = experts
            .iter()
            .map(|&(p, n)| ExpertAccumulator::new(p, n))
            .collect();
    }
    let mut diag: Vec<(Vec<f64>, u64)> = Vec::with_capacity(inputs.len());
    for (k, pass) in passes.iter().enumerate() {
        {
            let mut st = lock(&state);
            st.input_active = (0..inputs.len()).map(|i| pass.contains(&i)).collect();
            for i in pass.clone() {
                st.accs[i] = Some(InputAccumulator::new(inputs[i].1, full));
                if paired {
                    st.cross[i] = Some(CrossAccumulator::new(inputs[i].1));
                }
            }
        }
        for (c, chunk) in chunks.iter().enumerate() {
            // Plain: one decode that accumulates. Paired: the float model's decode keeps its
            // inputs, then the quantised model's decode accumulates against them.
            let decodes: &[Mode] = if paired {
                &[Mode::Capture, Mode::Paired]
            } else {
                &[Mode::Accumulate]
            };
            for &mode in decodes {
                {
                    let mut st = lock(&state);
                    st.decode_inputs.clear();
                    st.observed = vec![false; inputs.len()];
                    st.mode = mode;
                    st.experts_active = k == 0 && mode != Mode::Capture;
                    if mode == Mode::Capture {
                        for v in &mut st.captured {
                            v.clear();
                        }
                    }
                    st.cursor.iter_mut().for_each(|c| *c = 0);
                }
                let (which, res) = match (mode, paired_ctx.as_mut()) {
                    (Mode::Paired, Some(pc)) => {
                        pc.clear_kv_cache();
                        (pc.model().path().to_path_buf(), pc.decode(chunk, 0, true))
                    }
                    _ => {
                        ctx.clear_kv_cache();
                        (model.path().to_path_buf(), ctx.decode(chunk, 0, true))
                    }
                };
                let mut st = lock(&state);
                if let Some(e) = st.error.take() {
                    return Err(CalibrateError::Graph {
                        model: which,
                        reason: format!("chunk {c}: {e}"),
                    });
                }
                res?;
                if let Some(i) = pass.clone().find(|&i| !st.observed[i]) {
                    return Err(CalibrateError::Graph {
                        model: which,
                        reason: format!(
                            "chunk {c}: input '{}' (of '{}') was not observed",
                            inputs[i].0, input_weight[i]
                        ),
                    });
                }
                if mode == Mode::Paired {
                    if let Some(i) = pass.clone().find(|&i| st.cursor[i] != st.captured[i].len()) {
                        return Err(CalibrateError::Graph {
                            model: which,
                            reason: format!(
                                "chunk {c}: input of '{}' has {} values, the float model's has {}",
                                input_weight[i],
                                st.cursor[i],
                                st.captured[i].len()
                            ),
                        });
                    }
                }
            }
            if opts.progress {
                eprintln!(
                    "calibrate: pass {}/{}, chunk {}/{} ({:.1} s)",
                    k + 1,
                    passes.len(),
                    c + 1,
                    chunks.len(),
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        let finished: Vec<(InputAccumulator, Option<CrossAccumulator>)> = {
            let mut st = lock(&state);
            let done = pass
                .clone()
                .map(|i| {
                    let acc = st.accs[i].take().expect("allocated for this pass");
                    (acc, st.cross[i].take())
                })
                .collect();
            for v in &mut st.captured {
                *v = Vec::new();
            }
            done
        };
        for (acc, cross) in finished {
            writer.write_gram(&acc, cross.as_ref())?;
            diag.push((acc.sum2().to_vec(), acc.count()));
        }
    }
    let expert_accs = std::mem::take(&mut lock(&state).experts);
    drop(ctx);
    drop(paired_ctx);
    writer.finish(&diag, &expert_accs)?;
    Ok(CalibrateSummary {
        n_weights: probe.len(),
        n_inputs: inputs.len(),
        n_expert_weights: experts.len(),
        n_chunks: chunks.len(),
        n_ctx,
        passes: passes.len(),
        peak_accumulator_bytes: peak,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_sampling_is_deterministic_and_respects_k_and_bans() {
        let logits = [0.0f32, 5.0, 4.0, f32::NAN, 4.5, -1.0];
        // Greedy: the largest.
        assert_eq!(sample_top_k(&logits, 1, 1.0, 0.9, |_| false), Some(1));
        // Banning the largest moves greedy to the next.
        assert_eq!(sample_top_k(&logits, 1, 1.0, 0.0, |t| t == 1), Some(4));
        // Top-2 only ever yields ids 1 or 4; u near 0 gives the first, near 1 the second.
        for i in 0..100 {
            let t = sample_top_k(&logits, 2, 1.0, i as f64 / 100.0, |_| false).unwrap();
            assert!(t == 1 || t == 4, "{t}");
        }
        assert_eq!(sample_top_k(&logits, 2, 1.0, 0.0, |_| false), Some(1));
        assert_eq!(sample_top_k(&logits, 2, 1.0, 0.999, |_| false), Some(4));
        // The split follows the softmax: P(1) = 1/(1+e^-0.5) ≈ 0.622.
        assert_eq!(sample_top_k(&logits, 2, 1.0, 0.60, |_| false), Some(1));
        assert_eq!(sample_top_k(&logits, 2, 1.0, 0.64, |_| false), Some(4));
        assert_eq!(sample_top_k(&[f32::NAN], 3, 1.0, 0.5, |_| false), None);
        let mut a = SplitMix(7);
        let mut b = SplitMix(7);
        let xs: Vec<f64> = (0..5).map(|_| a.next_f64()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert_eq!(xs, (0..5).map(|_| b.next_f64()).collect::<Vec<_>>());
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("512 MB"), Some(512 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("3Q"), None);
        assert!(default_max_memory() > 0);
    }

    #[test]
    fn chunks_are_whole_and_start_with_bos() {
        let toks: Vec<i32> = (10..30).collect();
        let c = make_chunks(&toks, 8, None, Some(1));
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], [1, 11, 12, 13, 14, 15, 16, 17]);
        assert_eq!(c[1][0], 1);
        assert_eq!(c[1][1], 19);
        assert_eq!(make_chunks(&toks, 8, Some(1), None).len(), 1);
        assert_eq!(make_chunks(&toks, 8, None, None)[1][0], 18);
        assert!(make_chunks(&toks, 21, None, None).is_empty());
    }
}

//! The `quantease-gguf` command-line tool.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use quantease_gguf::convert::{convert, ConvertSettings, ConvertSummary, SigmaProvider};
use quantease_gguf::formats::GgmlType;
use quantease_gguf::gguf::GgufFile;
use quantease_gguf::gram::GramFile;
use quantease_gguf::imatrix::Imatrix;
use quantease_gguf::inspect;
use quantease_gguf::plan::{self, Mix, ModelFacts, PlanOptions, PlannedTensor, TensorShape};
use quantease_gguf::solver::{Method, SolveOptions};
use quantease_gguf::source::hf::is_hf_input;
use quantease_gguf::source::{GgufSource, HfSource, TensorSource};
use regex::Regex;
use std::path::PathBuf;

/// Turn LLM weights into small, high-quality GGUF files for llama.cpp-style runtimes.
#[derive(Parser)]
#[command(name = "quantease-gguf", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Quantise a model (any GGUF, or Hugging Face safetensors) into a GGUF of the chosen type or mix.
    Convert(Box<ConvertArgs>),
    /// Show a GGUF file's metadata, tensor table and totals.
    Inspect(InspectArgs),
    /// Decode every quantised tensor (standard ggml or QE types) to a float type, giving a file
    /// any runtime loads.
    Dequantize(DequantizeArgs),
    /// Perplexity of a model on a text, and with --base its KL divergence from a reference model
    /// (as `llama-perplexity --kl-divergence` measures them). Needs the `llama` feature.
    Perplexity(PerplexityArgs),
    /// Run the model over a calibration text and write the Gram matrix of every distinct matmul
    /// input plus llama.cpp imatrix statistics (a GGUF that also works as `--imatrix`). Needs the
    /// `llama` feature.
    Calibrate(CalibrateArgs),
    /// Quantise with llama.cpp's own quantiser (llama_model_quantize, in process): the baseline.
    /// Needs the `llama` feature.
    LlamaQuantize(LlamaQuantizeArgs),
}

#[derive(Args)]
struct CalibrateArgs {
    /// Model (GGUF that llama.cpp loads).
    model: PathBuf,
    /// Calibration text (UTF-8). Without it the model writes its own calibration text (seeded
    /// top-k sampling from BOS; --chunks sequences, default 8).
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// Seed of the self-generated text (without --text).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Top-k of the self-generated text's sampler (1 = greedy).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Temperature of the self-generated text's sampler.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Threads for generating the self-generated text (one token per decode scales poorly with
    /// threads on a busy machine: 8× slower with 2 than with 1 on our loaded 2-core box).
    #[arg(long, default_value_t = 1, value_name = "N")]
    gen_threads: usize,
    /// Also write the self-generated text to FILE (for inspection).
    #[arg(long, value_name = "FILE")]
    save_generated: Option<PathBuf>,
    /// Output Gram file.
    #[arg(short, long, value_name = "OUT.gram.gguf")]
    output: PathBuf,
    /// Chunk length in tokens.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Use at most N chunks (default: the whole text).
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
    /// Threads for llama.cpp and the Gram GEMMs (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Only diagonal statistics: a plain imatrix GGUF, as llama-imatrix writes.
    #[arg(long)]
    diag_only: bool,
    /// Memory budget for the Gram accumulators (e.g. 2G, 512M); when exceeded, layers are
    /// collected in groups over several passes. Default: half of MemAvailable.
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    /// Weight of each chunk's first token (the attention sink every later token attends to) in
    /// the Gram and imatrix sums. 1 is a plain sum, as llama-imatrix computes; the default
    /// makes the solver keep that token's projections accurate, which lowers KLD (SmolLM2 Q4_0: 0.199 → 0.116)
    /// (docs/CALIBRATION.md).
    #[arg(long, value_name = "W", default_value_t = quantease_gguf::calibrate::DEFAULT_SINK_WEIGHT)]
    sink_weight: f32,
    /// Paired calibration: also run this quantised version of MODEL (same architecture and
    /// vocabulary, e.g. a first `convert` of it) on the same tokens, and write the statistics of
    /// ITS matmul inputs X̃ (Gram, imatrix) plus the cross products Σ x·x̃ᵀ with MODEL's inputs x.
    /// `convert MODEL --gram` with that file then aims each layer at the float model's output
    /// from the inputs it will really see, min ‖W·x − Ŵ·x̃‖² (docs/solver.md, "Paired
    /// calibration"). Needs about twice the memory of a plain calibration per pass.
    #[arg(long, value_name = "Q.gguf", conflicts_with = "diag_only")]
    paired: Option<PathBuf>,
    /// No progress lines or summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct LlamaQuantizeArgs {
    /// Input GGUF.
    input: PathBuf,
    /// Output GGUF.
    output: PathBuf,
    /// llama.cpp file type (Q4_0, Q4_K_M, Q3_K_M, Q2_K, IQ4_NL, ...).
    #[arg(long = "type", value_name = "TYPE")]
    ty: String,
    /// Importance matrix (imatrix GGUF, Gram file or legacy .dat).
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// Threads (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Args)]
struct PerplexityArgs {
    /// Model to evaluate (GGUF). A file with QE tensors, which llama.cpp cannot load, is
    /// dequantised to a temporary F16 GGUF in --tmp-dir first (the same bytes `dequantize --type
    /// F16` writes), evaluated, and deleted; the numbers are those of that F16 file.
    model: PathBuf,
    /// Directory for the temporary F16 file of a QE model (default: the system temp dir,
    /// $TMPDIR). Needs room for the model at 16 bits per weight.
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
    /// Evaluation text (UTF-8), e.g. wiki.dev.raw.
    #[arg(long, value_name = "FILE")]
    text: PathBuf,
    /// Reference model: also report KL divergence, PPL ratio and same-top-token rate against it.
    #[arg(long, value_name = "REF")]
    base: Option<PathBuf>,
    /// Chunk length in tokens (the second half of each chunk is scored).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most N chunks (default: all of the text).
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
    /// llama.cpp threads (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Print a line per chunk to stderr.
    #[arg(long)]
    progress: bool,
}

#[derive(Args)]
struct DequantizeArgs {
    /// Input GGUF file.
    input: PathBuf,
    /// Output GGUF file (written to a temporary file and renamed when complete).
    output: PathBuf,
    /// Float type of the output: F32, F16 or BF16.
    #[arg(long = "type", value_name = "TYPE", default_value = "F16")]
    ty: String,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// No progress bars or summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct ConvertArgs {
    /// Input model: a GGUF file of any decodable type (F32, F16, BF16, Q4_0 … Q8_0, Q2_K … Q6_K,
    /// IQ4_NL, IQ4_XS), or a Hugging Face model: a directory with *.safetensors (single or sharded
    /// with model.safetensors.index.json), config.json and tokenizer.json, or one .safetensors file
    /// or *.safetensors.index.json (with --config, or those files beside it).
    input: PathBuf,
    /// For Hugging Face input: config.json, or the directory holding config.json, tokenizer.json
    /// and tokenizer_config.json (default: the weights' directory).
    #[arg(long, value_name = "DIR_OR_FILE")]
    config: Option<PathBuf>,
    /// Output GGUF file. Written to a temporary file beside it and renamed when complete.
    output: PathBuf,
    /// Target type or mix, as llama-quantize names them: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q2_K_S,
    /// Q3_K_S, Q3_K_M (or Q3_K), Q3_K_L, Q4_K_S, Q4_K_M (or Q4_K), Q5_K_S, Q5_K_M (or Q5_K), Q6_K,
    /// IQ4_NL, IQ4_XS, F16, BF16, F32. Mixes give sensitive tensors (attn_v, ffn_down, output) more
    /// bits exactly as llama-quantize does. Or a QE type for every matrix: QE{2,3,4}_{0,1,2}
    /// (bits _ outlier-pool bytes per 32 weights; QE2 = QE2_1, QE3 = QE3_1, QE4 = QE4_1), with
    /// output.weight (or the tied token_embd.weight) in QE4 — as `--format qe --bits N`.
    #[arg(long = "type", value_name = "TYPE", conflicts_with_all = ["bits", "format"])]
    ty: Option<String>,
    /// Bits per weight. With --format ggml (default) a standard mix: 2 → Q2_K, 3 → Q3_K_M,
    /// 4 → Q4_K_M, 5 → Q5_K_M, 6 → Q6_K, 8 → Q8_0, 16 → F16. With --format qe: 2, 3 or 4 →
    /// QE{N}_1 for every matrix (pool from --outliers), output.weight / tied token_embd in QE4.
    #[arg(long, value_name = "N")]
    bits: Option<u32>,
    /// Family of the --bits mix: `ggml` (standard llama.cpp types, loadable everywhere) or `qe`
    /// (the QE formats: 2/3/4-bit codes on non-uniform level tables, an 8-bit scale code per 16
    /// weights, plus a per-row outlier table; any width that is a multiple of 32; stock
    /// llama.cpp cannot load them — use `dequantize` for a file it loads, or the kernels in
    /// formats/ for a runtime that links them). Metadata `quantease.format_version` (QE format
    /// version, now 3) marks files with QE tensors; readers refuse other versions.
    #[arg(long, value_name = "FAMILY", value_parser = ["ggml", "qe"], requires = "bits")]
    format: Option<String>,
    /// Fraction of each row's weights stored as full-precision (f16) outliers in QE tensors, as
    /// a number or a percentage (`0.0078`, `0.78%`). Picks the smallest outlier pool that holds
    /// it: 0 → pool 0 (QE*_0), up to 0.78125 % → pool 1 (QE*_1), up to 1.5625 % → pool 2
    /// (QE*_2); more is an error. Sets the pool of every QE tensor; the solver may fill the pool's
    /// whole capacity (its bytes are stored anyway) and leaves a slot unused only when an outlier
    /// there would not lower the error. Default: the pool of the type (1 for QE2/3/4).
    #[arg(long, value_name = "FRACTION", allow_hyphen_values = true)]
    outliers: Option<String>,
    /// Per-tensor outlier fraction for QE tensors whose name matches REGEX (first match wins,
    /// before --outliers), e.g. `--outliers-tensor 'ffn_down=1.56%'`. Repeatable.
    #[arg(long = "outliers-tensor", value_name = "REGEX=FRACTION")]
    outliers_tensor: Vec<String>,
    /// Override the type of tensors whose name matches REGEX (first matching pattern wins; e.g.
    /// `--tensor-type 'ffn_down=Q6_K'`, `--tensor-type 'attn_=QE4'`). Repeatable.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    tensor_type: Vec<String>,
    /// Type of output.weight (and of token_embd.weight when the two are tied).
    #[arg(long, value_name = "TYPE")]
    output_tensor_type: Option<String>,
    /// Type of token_embd.weight.
    #[arg(long, value_name = "TYPE")]
    token_embedding_type: Option<String>,
    /// Give every quantisable tensor the default type of the mix (no per-tensor rules).
    #[arg(long)]
    pure: bool,
    /// llama.cpp importance matrix (GGUF imatrix or legacy .dat): per-column weights for rounding
    /// (a diagonal Σ).
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// Gram file from `quantease-gguf calibrate`: the full Σ = XXᵀ of each weight's input, used by
    /// the gptq and quantease methods. Its diagonal statistics also serve as the imatrix when
    /// --imatrix is not given.
    #[arg(long, value_name = "FILE.gram.gguf")]
    gram: Option<PathBuf>,
    /// How codes are chosen: `quantease` (coordinate descent from the better of RTN and GPTQ),
    /// `gptq`, or `rtn` (weighted round-to-nearest). Default: quantease with --gram, rtn otherwise
    /// (with only a diagonal Σ the problem separates per weight and CD cannot beat weighted
    /// rounding).
    #[arg(long, value_name = "METHOD", value_parser = ["quantease", "gptq", "rtn"])]
    method: Option<String>,
    /// Maximum coordinate-descent sweeps per tensor.
    #[arg(long, value_name = "N", default_value_t = SolveOptions::default().iters)]
    iters: usize,
    /// Stop sweeping when a sweep lowers the objective by less than this fraction.
    #[arg(long, value_name = "X", default_value_t = SolveOptions::default().tol)]
    tol: f64,
    /// Damping with a full Σ: add X·mean(diag Σ) to the diagonal (GPTQ-style).
    #[arg(long, value_name = "X", default_value_t = SolveOptions::default().damp)]
    damp: f64,
    /// Shrink a full Σ towards its diagonal: solve with (1−X)·Σ + X·diag(Σ), X in 0..1
    /// (0 = the full Gram, 1 = the imatrix problem). Reported errors use the original Σ.
    /// Measured on SmolLM2-135M (QuantEase, mean KLD): Q4_0 0.116 / 0.110 / 0.106 / 0.118 with
    /// X = 0 / 0.25 / 0.5 / 0.75; Q3_K_M 0.062 / 0.056 / 0.057 with X = 0 / 0.5 / 0.75; QE4_0
    /// (QE format version 1) 0.218 / 0.170 / 0.181 with X = 0 / 0.5 / 0.8 (docs/solver.md).
    #[arg(long, value_name = "X", default_value_t = 0.5)]
    shrink: f64,
    /// With a Gram file from `calibrate --paired`: move each tensor's target from W (0) to
    /// W* = W·M·Σ̃⁻¹ (1), the weights that best reproduce the float model's outputs from the
    /// quantised model's inputs (regularised with the same --shrink and --damp). At 0 the file's
    /// Σ̃ (the quantised model's inputs) is used with the plain target W. All layers are re-solved
    /// at once, each compensating errors the layers before it now also correct, so large values
    /// overshoot. Measured (mean KLD, docs/solver.md): SmolLM2-135M Q2_K 0.186 / 0.175 / 0.408
    /// with X = 0 / 0.3 / 1 (one-shot 0.179), and 0.3 helped its Q4_0, Q4_K_M, IQ4_NL and
    /// Q3_K_M by 3–9 %; Qwen2.5-Coder-1.5B Q2_K 0.251 / 0.320 with X = 0 / 0.3 (one-shot 0.263).
    /// No value helps every model: compare with `perplexity --base` before publishing. Ignored
    /// for Gram files without cross products.
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    cross_strength: f64,
    /// GPTQ visits columns by decreasing Σ_jj.
    #[arg(long)]
    act_order: bool,
    /// Write a JSON report (per tensor: type, bpw, relative error for the method and for RTN,
    /// time, sweeps) to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the plan (type, size per tensor, totals, bits per weight) and exit without writing.
    #[arg(long)]
    dry_run: bool,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// No progress bars or summary (errors still go to stderr).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// GGUF file to read.
    file: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

fn parse_type(s: &str, flag: &str) -> Result<GgmlType> {
    if let Some(Mix::Qe { bits, pool }) = Mix::from_name(s) {
        return plan::qe_type(bits, pool)
            .with_context(|| format!("{flag}: type {s} is not known to the formats crate"));
    }
    match GgmlType::from_name(s) {
        Some(t) if quantease_gguf::formats::can_quantize(t) => Ok(t),
        Some(t) => bail!("{flag}: type {t} cannot be produced by this tool"),
        None => bail!("{flag}: unknown type '{s}'"),
    }
}

fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting up the thread pool")?;
    }
    Ok(())
}

/// Parse an outlier fraction (`0.0078` or `0.78%`) into the pool that holds it.
fn parse_outliers(s: &str, flag: &str) -> Result<u8> {
    let t = s.trim();
    let value = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| {
        anyhow::anyhow!(
            "{flag} '{s}': expected a fraction such as 0.0078 or a percentage such as 0.78%"
        )
    })?;
    plan::pool_for_fraction(value).with_context(|| {
        format!(
            "{flag} '{s}': the outlier fraction must be between 0 and 1.5625 % (0.015625) of a row's weights — pool 1 holds up to 0.78125 %, pool 2 up to 1.5625 %"
        )
    })
}

fn plan_options(a: &ConvertArgs, has_imatrix: bool) -> Result<PlanOptions> {
    let qe = a.format.as_deref() == Some("qe");
    let outlier_pool = a
        .outliers
        .as_deref()
        .map(|s| parse_outliers(s, "--outliers"))
        .transpose()?;
    let mix = match (&a.ty, a.bits) {
        (Some(t), None) => Mix::from_name(t).with_context(|| {
            let names: Vec<_> = Mix::ALL.iter().map(|m| m.name()).collect();
            format!(
                "--type: unknown type or mix '{t}' (known: {}, QE2, QE3, QE4, QE2_0 … QE4_2)",
                names.join(", ")
            )
        })?,
        (None, Some(b)) if qe => match b {
            // The mix (its name in `quantease.mix`, the output type) carries the --outliers pool.
            2..=4 => Mix::Qe {
                bits: b as u8,
                pool: outlier_pool.unwrap_or(1),
            },
            _ => bail!("--format qe: --bits must be 2, 3 or 4, not {b}"),
        },
        (None, Some(b)) => Mix::from_bits(b)
            .with_context(|| format!("--bits: no mix for {b} bits (use 2, 3, 4, 5, 6, 8 or 16)"))?,
        (None, None) => bail!("give --type TYPE or --bits N"),
        (Some(_), Some(_)) => unreachable!("clap rejects --type with --bits"),
    };
    let mut tensor_types = Vec::new();
    for spec in &a.tensor_type {
        let (re, ty) = spec
            .rsplit_once('=')
            .with_context(|| format!("--tensor-type '{spec}': expected REGEX=TYPE"))?;
        let re = Regex::new(re)
            .with_context(|| format!("--tensor-type '{spec}': bad regular expression"))?;
        tensor_types.push((re, parse_type(ty, "--tensor-type")?));
    }
    let mut outlier_tensors = Vec::new();
    for spec in &a.outliers_tensor {
        let (re, f) = spec
            .rsplit_once('=')
            .with_context(|| format!("--outliers-tensor '{spec}': expected REGEX=FRACTION"))?;
        let re = Regex::new(re)
            .with_context(|| format!("--outliers-tensor '{spec}': bad regular expression"))?;
        outlier_tensors.push((re, parse_outliers(f, "--outliers-tensor")?));
    }
    Ok(PlanOptions {
        outlier_pool,
        outlier_tensors,
        mix,
        tensor_types,
        output_tensor_type: a
            .output_tensor_type
            .as_deref()
            .map(|t| parse_type(t, "--output-tensor-type"))
            .transpose()?,
        token_embedding_type: a
            .token_embedding_type
            .as_deref()
            .map(|t| parse_type(t, "--token-embedding-type"))
            .transpose()?,
        pure: a.pure,
        has_imatrix,
    })
}

fn print_plan(plan: &[PlannedTensor]) {
    println!(
        "{:<40} {:>18} {:>8} → {:<8} {:>12}  note",
        "tensor", "shape", "source", "target", "bytes"
    );
    for p in plan {
        let shape = p
            .dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×");
        let note = match (p.fallback_from, p.manual, p.quantize) {
            (Some(f), _, _) => format!("fallback from {f} (width {})", p.dims[0]),
            (None, true, _) => "manual override".to_string(),
            (None, false, false) => "copied".to_string(),
            _ => String::new(),
        };
        println!(
            "{:<40} {:>18} {:>8} → {:<8} {:>12}  {}",
            p.name,
            shape,
            p.source_type.name(),
            p.target_type.name(),
            p.target_bytes(),
            note
        );
    }
}

fn print_totals(plan: &[PlannedTensor], mix: Mix) {
    let t = plan::totals(plan);
    let mut by_type: std::collections::BTreeMap<GgmlType, (usize, u64)> = Default::default();
    for p in plan {
        let e = by_type.entry(p.target_type).or_default();
        e.0 += 1;
        e.1 += p.target_bytes();
    }
    let types: Vec<String> = by_type
        .iter()
        .map(|(ty, (n, _))| format!("{ty}: {n}"))
        .collect();
    eprintln!(
        "plan {mix}: {} tensors ({}), {} quantised, {:.2} MiB of tensors ({:.2} MiB in the source), {:.3} bits per weight",
        plan.len(),
        types.join(", "),
        t.n_quantized,
        t.bytes as f64 / 1048576.0,
        t.source_bytes as f64 / 1048576.0,
        t.bits_per_weight()
    );
    if t.n_fallback > 0 {
        eprintln!(
            "note: {} tensor(s) fell back to another type because their width is not a multiple of the block size (see the `note` column of --dry-run); `--format qe --bits N` stores any width that is a multiple of 32 without fallbacks",
            t.n_fallback
        );
    }
}

fn run_convert(a: ConvertArgs) -> Result<()> {
    set_threads(a.threads)?;
    if a.input
        .canonicalize()
        .ok()
        .is_some_and(|p| Some(p) == a.output.canonicalize().ok())
    {
        bail!("{}: output would overwrite the input", a.output.display());
    }
    let imatrix = a
        .imatrix
        .as_deref()
        .or(a.gram.as_deref())
        .map(|p| Imatrix::load(p).with_context(|| format!("reading imatrix {}", p.display())))
        .transpose()?;
    let gram = a
        .gram
        .as_deref()
        .map(|p| GramFile::open(p).with_context(|| format!("reading Gram file {}", p.display())))
        .transpose()?;
    let opts = plan_options(&a, imatrix.is_some())?;
    let source: Box<dyn TensorSource> = if a.config.is_some() || is_hf_input(&a.input) {
        Box::new(
            HfSource::open(&a.input, a.config.as_deref())
                .with_context(|| format!("reading {}", a.input.display()))?,
        )
    } else {
        Box::new(
            GgufSource::open(&a.input).with_context(|| format!("reading {}", a.input.display()))?,
        )
    };
    let facts = ModelFacts::from_metadata(source.metadata());
    let shapes: Vec<TensorShape> = source.tensors().iter().map(TensorShape::from).collect();
    let planned = plan::plan(&shapes, &facts, &opts)
        .with_context(|| format!("planning {}", a.input.display()))?;
    let n_qe = planned
        .iter()
        .filter(|p| plan::qe_params(p.target_type).is_some())
        .count();
    if n_qe == 0 && (a.outliers.is_some() || !a.outliers_tensor.is_empty()) {
        bail!("--outliers and --outliers-tensor apply to QE tensors only: use --format qe --bits N, a QE --type, or --tensor-type REGEX=QE3");
    }
    if a.dry_run {
        print_plan(&planned);
        print_totals(&planned, opts.mix);
        return Ok(());
    }
    if !a.quiet {
        print_totals(&planned, opts.mix);
    }
    let method = match a.method.as_deref() {
        Some("quantease") => Method::QuantEase,
        Some("gptq") => Method::Gptq,
        Some("rtn") => Method::Rtn,
        Some(m) => bail!("--method: unknown method '{m}'"),
        None if gram.is_some() => Method::QuantEase,
        None => Method::Rtn,
    };
    let non_negative = |x: f64| x.is_finite() && x >= 0.0;
    if !non_negative(a.damp) || !non_negative(a.tol) {
        bail!("--damp and --tol must be finite and non-negative");
    }
    let shrink = a.shrink;
    if !(0.0..=1.0).contains(&shrink) {
        bail!("--shrink must be between 0 and 1, not {shrink}");
    }
    let solve = SolveOptions {
        iters: a.iters,
        tol: a.tol,
        damp: a.damp,
        act_order: a.act_order,
        shrink,
        ..SolveOptions::default()
    };
    if !a.cross_strength.is_finite() {
        bail!("--cross-strength must be finite");
    }
    let settings = ConvertSettings {
        mix: opts.mix,
        imatrix: imatrix.as_ref(),
        gram: gram.as_ref().map(|g| g as &dyn SigmaProvider),
        method,
        solve,
        cross_strength: a.cross_strength,
        quiet: a.quiet,
    };
    let summary = convert(source.as_ref(), &a.output, &planned, &settings)?;
    if let Some(path) = &a.report {
        let json = serde_json::json!({
            "input": a.input.display().to_string(),
            "output": a.output.display().to_string(),
            "method": method.name(),
            "iters": a.iters,
            "tol": a.tol,
            "damp": a.damp,
            "shrink": shrink,
            "cross_strength": a.cross_strength,
            "summary": &summary,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing report {}", path.display()))?;
    }
    if !a.quiet {
        print_solver_table(&summary);
    }
    if !a.quiet {
        eprintln!(
            "wrote {}: {} tensors ({} quantised, {} with imatrix), {:.2} MiB in {:.1} s",
            a.output.display(),
            summary.n_tensors,
            summary.n_quantized,
            summary.n_with_imatrix,
            summary.file_bytes as f64 / 1048576.0,
            summary.seconds
        );
    }
    Ok(())
}

/// Per target type: tensors, weighted mean relative error of the output and of RTN, time.
fn print_solver_table(summary: &ConvertSummary) {
    if summary.tensors.is_empty() {
        return;
    }
    #[derive(Default)]
    struct Acc {
        n: usize,
        rel: f64,
        rtn: f64,
        secs: f64,
        sweeps: usize,
        outliers: f64,
    }
    let mut by_type: std::collections::BTreeMap<&str, Acc> = Default::default();
    for t in &summary.tensors {
        let e = by_type.entry(&t.ty).or_default();
        e.n += 1;
        e.rel += t.rel_error;
        e.rtn += t.rtn_rel_error;
        e.secs += t.seconds;
        e.sweeps += t.sweeps;
        e.outliers += t.outlier_fraction;
    }
    eprintln!(
        "{:<8} {:>7} {:>14} {:>14} {:>8} {:>9} {:>10} {:>8}",
        "type", "tensors", "rel error", "RTN rel error", "ratio", "sweeps", "outliers", "time s"
    );
    for (ty, a) in by_type {
        let nf = a.n as f64;
        eprintln!(
            "{:<8} {:>7} {:>14.4e} {:>14.4e} {:>8.3} {:>9.1} {:>9.3}% {:>8.1}",
            ty,
            a.n,
            a.rel / nf,
            a.rtn / nf,
            if a.rtn > 0.0 { a.rel / a.rtn } else { 1.0 },
            a.sweeps as f64 / nf,
            100.0 * a.outliers / nf,
            a.secs
        );
    }
}

/// Decode every quantised tensor of `input` (standard or QE types) to `float`.
fn dequantize_file(
    input: &std::path::Path,
    output: &std::path::Path,
    float: GgmlType,
    quiet: bool,
) -> Result<ConvertSummary> {
    let mix = match float {
        GgmlType::F32 => Mix::F32,
        GgmlType::BF16 => Mix::BF16,
        _ => Mix::F16,
    };
    let source = GgufSource::open(input).with_context(|| format!("reading {}", input.display()))?;
    let shapes: Vec<TensorShape> = source.tensors().iter().map(TensorShape::from).collect();
    let planned = plan::dequantize_plan(&shapes, float);
    let settings = ConvertSettings {
        mix,
        imatrix: None,
        gram: None,
        method: Method::Rtn,
        solve: SolveOptions::default(),
        cross_strength: 0.0,
        quiet,
    };
    Ok(convert(&source, output, &planned, &settings)?)
}

fn run_dequantize(a: DequantizeArgs) -> Result<()> {
    set_threads(a.threads)?;
    let float = match a.ty.to_ascii_uppercase().as_str() {
        "F32" => GgmlType::F32,
        "F16" => GgmlType::F16,
        "BF16" => GgmlType::BF16,
        other => bail!("--type: dequantize writes F32, F16 or BF16, not '{other}'"),
    };
    let summary = dequantize_file(&a.input, &a.output, float, a.quiet)?;
    if !a.quiet {
        eprintln!(
            "wrote {}: {:.2} MiB in {:.1} s",
            a.output.display(),
            summary.file_bytes as f64 / 1048576.0,
            summary.seconds
        );
    }
    Ok(())
}

fn run_inspect(a: InspectArgs) -> Result<()> {
    let file = GgufFile::open(&a.file)?;
    quantease_gguf::qe_version::check(&a.file, file.header())?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&inspect::render_json(&file))?
        );
    } else {
        print!("{}", inspect::render_text(&file));
    }
    Ok(())
}

/// A file deleted when dropped.
#[cfg(feature = "llama")]
struct TempFile(PathBuf);

#[cfg(feature = "llama")]
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `path` itself if llama.cpp can load it; if it holds QE tensors, a temporary F16
/// dequantisation of it in `tmp_dir` (exactly what `dequantize --type F16` writes), deleted when
/// the returned guard is dropped.
#[cfg(feature = "llama")]
fn loadable_model(
    path: &std::path::Path,
    tmp_dir: &std::path::Path,
    quiet: bool,
) -> Result<(PathBuf, Option<TempFile>)> {
    let file = GgufFile::open(path).with_context(|| format!("reading {}", path.display()))?;
    quantease_gguf::qe_version::check(path, file.header())?;
    let n_qe = file
        .header()
        .tensors
        .iter()
        .filter(|t| plan::qe_params(t.ty).is_some())
        .count();
    drop(file);
    if n_qe == 0 {
        return Ok((path.to_path_buf(), None));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = tmp_dir.join(format!(
        "quantease-perplexity-{}-{stem}.F16.gguf",
        std::process::id()
    ));
    if !quiet {
        eprintln!(
            "{}: {n_qe} QE tensor(s), which llama.cpp cannot load: evaluating its F16 dequantisation {} (deleted afterwards)",
            path.display(),
            out.display()
        );
    }
    let guard = TempFile(out.clone());
    dequantize_file(path, &out, GgmlType::F16, true)
        .with_context(|| format!("dequantizing {} for llama.cpp", path.display()))?;
    Ok((out, Some(guard)))
}

#[cfg(feature = "llama")]
fn run_perplexity(a: PerplexityArgs) -> Result<()> {
    use quantease_gguf::eval::{evaluate, EvalOptions};
    if a.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let tmp_dir = a.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let (model, _model_tmp) = loadable_model(&a.model, &tmp_dir, a.json)?;
    let (base, _base_tmp) = match &a.base {
        Some(b) => {
            let (p, g) = loadable_model(b, &tmp_dir, a.json)?;
            (Some(p), g)
        }
        None => (None, None),
    };
    let text = std::fs::read_to_string(&a.text)
        .with_context(|| format!("reading text {}", a.text.display()))?;
    let opts = EvalOptions {
        n_ctx: a.ctx,
        n_chunks: a.chunks,
        n_threads: a.threads.unwrap_or(0),
        progress: a.progress,
    };
    let report = evaluate(&model, base.as_deref(), &text, opts)
        .with_context(|| format!("evaluating {}", a.model.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

#[cfg(feature = "llama")]
fn run_calibrate(a: CalibrateArgs) -> Result<()> {
    use quantease_gguf::calibrate::{calibrate, default_max_memory, parse_size, CalibrateOptions};
    if a.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let max_memory = match &a.max_memory {
        Some(s) => parse_size(s).with_context(|| format!("--max-memory: cannot parse '{s}'"))?,
        None => default_max_memory(),
    };
    let mut opts = CalibrateOptions {
        n_ctx: a.ctx,
        n_chunks: a.chunks,
        n_threads: a.threads.unwrap_or(0),
        diag_only: a.diag_only,
        max_memory,
        progress: !a.quiet,
        dataset: String::new(),
        sink_weight: a.sink_weight,
        paired_model: a.paired.clone(),
    };
    let s = match &a.text {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading text {}", path.display()))?;
            opts.dataset = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            calibrate(&a.model, &text, &a.output, &opts)
        }
        None => {
            use quantease_gguf::calibrate::{calibrate_chunks, generate_chunks, GenerateOptions};
            use quantease_gguf::llama::Model;
            let model = Model::load(&a.model)?;
            let gen = GenerateOptions {
                n_chunks: a.chunks.unwrap_or(8),
                n_ctx: a.ctx,
                seed: a.seed,
                top_k: a.top_k,
                temperature: a.temperature,
                n_threads: a.gen_threads,
                progress: !a.quiet,
            };
            let chunks = generate_chunks(&model, &gen)
                .with_context(|| format!("generating text with {}", a.model.display()))?;
            if let Some(out) = &a.save_generated {
                let mut text = String::new();
                for c in &chunks {
                    for &t in &c[1..] {
                        text.push_str(&model.token_to_piece(t)?);
                    }
                    text.push_str("\n\n");
                }
                std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
            }
            opts.dataset = format!(
                "self-generated (seed {}, top-k {}, temperature {})",
                a.seed, a.top_k, a.temperature
            );
            calibrate_chunks(&model, &chunks, &a.output, &opts)
        }
    }
    .with_context(|| format!("calibrating {}", a.model.display()))?;
    if !a.quiet {
        eprintln!(
            "wrote {}: {} weights, {} distinct inputs{}, {} MoE weights (diagonal only), {} chunks × {} tokens, {} pass(es), {:.1} MiB peak accumulators, {:.1} s",
            a.output.display(),
            s.n_weights,
            s.n_inputs,
            if a.diag_only { " (diagonal only)" } else { " with full Grams" },
            s.n_expert_weights,
            s.n_chunks,
            s.n_ctx,
            s.passes,
            s.peak_accumulator_bytes as f64 / 1048576.0,
            s.seconds
        );
    }
    Ok(())
}

#[cfg(feature = "llama")]
fn run_llama_quantize(a: LlamaQuantizeArgs) -> Result<()> {
    use quantease_gguf::llama::{llama_quantize, Ftype, ImatrixData};
    let ftype: Ftype =
        a.ty.to_ascii_uppercase()
            .parse()
            .map_err(|e| anyhow::anyhow!("--type: {e}"))?;
    let imatrix = match &a.imatrix {
        None => None,
        Some(p) => {
            let im =
                Imatrix::load(p).with_context(|| format!("reading imatrix {}", p.display()))?;
            let mut data = ImatrixData::new();
            for name in im.names() {
                let values = im.importance(name).unwrap_or_default().to_vec();
                data.insert(name, values)
                    .with_context(|| format!("imatrix {}", p.display()))?;
            }
            Some(data)
        }
    };
    let t0 = std::time::Instant::now();
    llama_quantize(
        &a.input,
        &a.output,
        ftype,
        imatrix.as_ref(),
        a.threads.unwrap_or(0),
    )?;
    eprintln!(
        "wrote {} ({}) in {:.1} s",
        a.output.display(),
        ftype.name(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(not(feature = "llama"))]
fn run_calibrate(_: CalibrateArgs) -> Result<()> {
    bail!("calibrate needs llama.cpp: this binary was built without the `llama` cargo feature")
}

#[cfg(not(feature = "llama"))]
fn run_llama_quantize(_: LlamaQuantizeArgs) -> Result<()> {
    bail!("llama-quantize needs llama.cpp: this binary was built without the `llama` cargo feature")
}

#[cfg(not(feature = "llama"))]
fn run_perplexity(_: PerplexityArgs) -> Result<()> {
    bail!("perplexity needs llama.cpp: this binary was built without the `llama` cargo feature")
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(a) => run_convert(*a),
        Command::Inspect(a) => run_inspect(a),
        Command::Dequantize(a) => run_dequantize(a),
        Command::Perplexity(a) => run_perplexity(a),
        Command::Calibrate(a) => run_calibrate(a),
        Command::LlamaQuantize(a) => run_llama_quantize(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

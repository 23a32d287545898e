//! The `quantease-gguf` command-line tool.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use quantease_gguf::convert::{convert, ConvertSettings};
use quantease_gguf::formats::GgmlType;
use quantease_gguf::gguf::GgufFile;
use quantease_gguf::imatrix::Imatrix;
use quantease_gguf::inspect;
use quantease_gguf::plan::{self, Mix, ModelFacts, PlanOptions, PlannedTensor, TensorShape};
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
    Convert(ConvertArgs),
    /// Show a GGUF file's metadata, tensor table and totals.
    Inspect(InspectArgs),
    /// Decode every quantised tensor to a float type, giving a file any runtime loads.
    Dequantize(DequantizeArgs),
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
    /// bits exactly as llama-quantize does.
    #[arg(long = "type", value_name = "TYPE", conflicts_with = "bits")]
    ty: Option<String>,
    /// Bits per weight, mapped to a default mix: 2 → Q2_K, 3 → Q3_K_M, 4 → Q4_K_M, 5 → Q5_K_M,
    /// 6 → Q6_K, 8 → Q8_0, 16 → F16.
    #[arg(long, value_name = "N")]
    bits: Option<u32>,
    /// Override the type of tensors whose name matches REGEX (first matching pattern wins; e.g.
    /// `--tensor-type 'ffn_down=Q6_K'`). Repeatable.
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
    /// llama.cpp importance matrix (GGUF imatrix or legacy .dat): per-column weights for rounding.
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
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

fn plan_options(a: &ConvertArgs, has_imatrix: bool) -> Result<PlanOptions> {
    let mix = match (&a.ty, a.bits) {
        (Some(t), None) => Mix::from_name(t).with_context(|| {
            let names: Vec<_> = Mix::ALL.iter().map(|m| m.name()).collect();
            format!(
                "--type: unknown type or mix '{t}' (known: {})",
                names.join(", ")
            )
        })?,
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
    Ok(PlanOptions {
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
            "note: {} tensor(s) fell back to another type because their width is not a multiple of the block size (see the `note` column of --dry-run)",
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
        .map(|p| Imatrix::load(p).with_context(|| format!("reading imatrix {}", p.display())))
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
    let shapes: Vec<TensorShape> = source
        .tensors()
        .iter()
        .map(|t| TensorShape {
            name: t.name.clone(),
            dims: t.dims.clone(),
            source_type: t.ty,
        })
        .collect();
    let planned = plan::plan(&shapes, &facts, &opts)
        .with_context(|| format!("planning {}", a.input.display()))?;
    if a.dry_run {
        print_plan(&planned);
        print_totals(&planned, opts.mix);
        return Ok(());
    }
    if !a.quiet {
        print_totals(&planned, opts.mix);
    }
    let settings = ConvertSettings {
        mix: opts.mix,
        imatrix: imatrix.as_ref(),
        quiet: a.quiet,
    };
    let summary = convert(source.as_ref(), &a.output, &planned, &settings)?;
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

fn run_dequantize(a: DequantizeArgs) -> Result<()> {
    set_threads(a.threads)?;
    let (float, mix) = match a.ty.to_ascii_uppercase().as_str() {
        "F32" => (GgmlType::F32, Mix::F32),
        "F16" => (GgmlType::F16, Mix::F16),
        "BF16" => (GgmlType::BF16, Mix::BF16),
        other => bail!("--type: dequantize writes F32, F16 or BF16, not '{other}'"),
    };
    let source =
        GgufSource::open(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let shapes: Vec<TensorShape> = source
        .tensors()
        .iter()
        .map(|t| TensorShape {
            name: t.name.clone(),
            dims: t.dims.clone(),
            source_type: t.ty,
        })
        .collect();
    let planned = plan::dequantize_plan(&shapes, float);
    let settings = ConvertSettings {
        mix,
        imatrix: None,
        quiet: a.quiet,
    };
    let summary = convert(&source, &a.output, &planned, &settings)?;
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

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(a) => run_convert(a),
        Command::Inspect(a) => run_inspect(a),
        Command::Dequantize(a) => run_dequantize(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

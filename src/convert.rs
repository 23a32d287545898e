//! The conversion pipeline: source → plan → quantise rows → streaming GGUF writer.
//!
//! Tensors are processed one at a time, in the source's order, each in chunks of rows; rows of a
//! chunk are quantised in parallel (rows are independent, so the bytes do not depend on the
//! thread count) and land in the output in order. Peak memory is one chunk of f32 rows plus its
//! packed bytes, whatever the model size.

use crate::gguf::{GgufError, GgufWriter, MetaValue, TensorPlan};
use crate::imatrix::Imatrix;
use crate::plan::{Mix, PlannedTensor};
use crate::solver::{self, Method, Sigma, SolveOptions, SolverError, Spec};
use crate::source::{SourceError, TensorSource};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use quantease_formats::{FormatError, GgmlType};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Weights decoded per chunk (bounds memory: 4 Mi f32 = 16 MiB plus packed output).
const CHUNK_WEIGHTS: usize = 4 << 20;

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Reading the source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Writing the output failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A row could not be quantised (e.g. a NaN weight).
    #[error("{path}: tensor '{tensor}' row {row}: cannot quantise to {ty}: {source}")]
    Quantize {
        /// Source file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Row index.
        row: usize,
        /// Target type.
        ty: GgmlType,
        /// The encoder's error.
        source: FormatError,
    },
    /// The solver rejected a tensor (NaN weights, a bad Σ …).
    #[error("{path}: {source}")]
    Solve {
        /// Source file.
        path: PathBuf,
        /// The solver's error (names the tensor).
        source: SolverError,
    },
    /// A Σ provider failed for a tensor.
    #[error("tensor '{tensor}': cannot get its Σ: {message}")]
    Sigma {
        /// Tensor name.
        tensor: String,
        /// What went wrong.
        message: String,
    },
    /// The importance matrix does not fit a tensor.
    #[error(
        "{path}: imatrix entry for '{tensor}' has {got} values, the tensor's rows have {expected}"
    )]
    ImatrixShape {
        /// Imatrix file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Values in the imatrix entry.
        got: usize,
        /// Row length.
        expected: usize,
    },
}

/// Where full Σ matrices come from (a Gram file); consulted per tensor before the imatrix.
pub trait SigmaProvider: Sync {
    /// Σ for `tensor` (row length `p`), or `None` if this source has none for it.
    fn sigma(&self, tensor: &str, p: usize) -> Result<Option<Sigma>, String>;

    /// Cross products M = Σ_t x_t x̃_tᵀ of `tensor`'s float-model inputs `x` with the quantised
    /// model's `x̃` (p×p row-major), when Σ came from a paired calibration; `None` otherwise.
    fn cross(&self, _tensor: &str, _p: usize) -> Result<Option<Vec<f32>>, String> {
        Ok(None)
    }
}

/// Settings of one conversion besides the plan.
pub struct ConvertSettings<'a> {
    /// The mix (sets `general.file_type`).
    pub mix: Mix,
    /// Importance weights (a diagonal Σ).
    pub imatrix: Option<&'a Imatrix>,
    /// Full Σ per tensor, preferred over the imatrix when it has the tensor.
    pub gram: Option<&'a dyn SigmaProvider>,
    /// How codes are chosen.
    pub method: Method,
    /// Solver settings.
    pub solve: SolveOptions,
    /// With a paired Gram file (cross products present): how far to move the target from W
    /// towards W* ([`crate::solver::cross_target`]); 0 ignores the cross products.
    pub cross_strength: f64,
    /// Hide progress bars.
    pub quiet: bool,
}

/// What happened to one quantised tensor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorReport {
    /// Tensor name.
    pub name: String,
    /// Target type.
    pub ty: String,
    /// Bits per weight of the type.
    pub bpw: f64,
    /// Method used.
    pub method: String,
    /// Start the solver used (`rtn` or `gptq`).
    pub init: String,
    /// Σ form: `full`, `diagonal` or `identity`.
    pub sigma: String,
    /// ‖(W−Ŵ)X‖²/‖WX‖² of the output.
    pub rel_error: f64,
    /// The same for round-to-nearest.
    pub rtn_rel_error: f64,
    /// The same for GPTQ, when it ran.
    pub gptq_rel_error: Option<f64>,
    /// CD sweeps (the largest over the tensor's row batches).
    pub sweeps: usize,
    /// Outliers stored (QE types: entries used in the rows' outlier pools), 0 otherwise.
    pub outliers: usize,
    /// `outliers` as a fraction of the tensor's weights.
    pub outlier_fraction: f64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// What a conversion did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ConvertSummary {
    /// Tensors written.
    pub n_tensors: usize,
    /// Tensors quantised (the others were copied).
    pub n_quantized: usize,
    /// Quantised tensors that had importance weights.
    pub n_with_imatrix: usize,
    /// Output file size in bytes.
    pub file_bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Per quantised tensor (those the solver handles).
    pub tensors: Vec<TensorReport>,
}

/// Metadata for the output: the source's, in order, with the file type, quantisation version and
/// our provenance keys set (replaced in place if present, appended otherwise).
pub fn output_metadata(
    source: &[(String, MetaValue)],
    mix: Mix,
    method: &str,
    source_path: &Path,
    imatrix: Option<&Imatrix>,
    has_qe: bool,
) -> Vec<(String, MetaValue)> {
    let mut md: Vec<(String, MetaValue)> = source
        .iter()
        .filter(|(k, _)| !k.starts_with("quantease."))
        .cloned()
        .collect();
    let mut set = |key: &str, value: MetaValue| {
        if let Some(slot) = md.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            md.push((key.to_string(), value));
        }
    };
    set("general.quantization_version", MetaValue::U32(2));
    set("general.file_type", MetaValue::U32(mix.file_type()));
    set(
        "quantease.version",
        MetaValue::string(env!("CARGO_PKG_VERSION")),
    );
    set("quantease.method", MetaValue::string(method));
    if has_qe {
        set(
            quantease_formats::qe::FORMAT_VERSION_KEY,
            MetaValue::U32(quantease_formats::qe::FORMAT_VERSION),
        );
    }
    set("quantease.mix", MetaValue::string(mix.name()));
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    set(
        "quantease.source",
        MetaValue::string(&file_name(source_path)),
    );
    if let Some(im) = imatrix {
        set(
            "quantease.imatrix",
            MetaValue::string(&file_name(im.path())),
        );
    }
    md
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
        .expect("static template")
        .progress_chars("=> ")
}

/// Convert `source` into `out` following `plan` (same order as `source.tensors()`).
pub fn convert(
    source: &dyn TensorSource,
    out: &Path,
    plan: &[PlannedTensor],
    settings: &ConvertSettings<'_>,
) -> Result<ConvertSummary, ConvertError> {
    let start = Instant::now();
    let metadata = output_metadata(
        source.metadata(),
        settings.mix,
        settings.method.name(),
        source.path(),
        settings.imatrix,
        plan.iter()
            .any(|p| crate::plan::qe_params(p.target_type).is_some()),
    );
    let infos: Vec<TensorPlan> = plan
        .iter()
        .map(|p| TensorPlan {
            name: p.name.clone(),
            dims: p.dims.clone(),
            ty: p.target_type,
        })
        .collect();
    let mut writer = GgufWriter::create(out, &metadata, &infos)?;

    let multi = MultiProgress::with_draw_target(if settings.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let overall = multi.add(ProgressBar::new(plan.len() as u64));
    overall.set_style(bar_style());
    overall.set_prefix("tensors");
    let rows_bar = multi.add(ProgressBar::new(0));
    rows_bar.set_style(bar_style());
    rows_bar.set_prefix("rows");

    let mut summary = ConvertSummary {
        n_tensors: plan.len(),
        ..Default::default()
    };
    for (index, p) in plan.iter().enumerate() {
        overall.set_message(format!("{} → {}", p.name, p.target_type));
        if !p.quantize {
            match source.raw(index) {
                Some(raw) => writer.write_tensor(raw)?,
                // Same type but not stored in GGUF layout (e.g. rows permuted, or a BF16
                // vector kept as F32): decode and re-encode, which is exact for these types.
                None => quantize_tensor(source, index, p, None, &mut writer, &rows_bar)?,
            }
        } else {
            let importance = lookup_importance(settings.imatrix, p)?;
            summary.n_with_imatrix += importance.is_some() as usize;
            summary.n_quantized += 1;
            if Spec::for_type(p.target_type).is_some() {
                let report = solve_tensor(
                    source,
                    index,
                    p,
                    importance,
                    settings,
                    &mut writer,
                    &rows_bar,
                )?;
                summary.tensors.push(report);
            } else {
                quantize_tensor(source, index, p, importance, &mut writer, &rows_bar)?;
            }
        }
        source.release(index);
        overall.inc(1);
    }
    writer.finish()?;
    rows_bar.finish_and_clear();
    overall.finish_and_clear();
    summary.file_bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

fn lookup_importance<'a>(
    imatrix: Option<&'a Imatrix>,
    p: &PlannedTensor,
) -> Result<Option<&'a [f32]>, ConvertError> {
    let Some(im) = imatrix else { return Ok(None) };
    let Some(values) = im.importance(&p.name) else {
        return Ok(None);
    };
    let width = p.dims[0] as usize;
    if values.len() != width {
        return Err(ConvertError::ImatrixShape {
            path: im.path().to_path_buf(),
            tensor: p.name.clone(),
            got: values.len(),
            expected: width,
        });
    }
    Ok(Some(values))
}

fn quantize_tensor(
    source: &dyn TensorSource,
    index: usize,
    p: &PlannedTensor,
    importance: Option<&[f32]>,
    writer: &mut GgufWriter,
    bar: &ProgressBar,
) -> Result<(), ConvertError> {
    let width = p.dims[0] as usize;
    let n_rows: usize = p.dims.iter().skip(1).product::<u64>() as usize;
    let row_bytes = p
        .target_type
        .row_bytes(width as u64)
        .expect("planner checked the width") as usize;
    let rows_per_chunk = (CHUNK_WEIGHTS / width.max(1)).clamp(1, n_rows.max(1));
    let mut f32_buf = vec![0f32; rows_per_chunk * width];
    let mut out_buf = vec![0u8; rows_per_chunk * row_bytes];
    bar.set_length(n_rows as u64);
    bar.set_position(0);
    let mut first = 0;
    while first < n_rows {
        let n = rows_per_chunk.min(n_rows - first);
        let src = &mut f32_buf[..n * width];
        // Decode in parallel, row blocks independent.
        src.par_chunks_mut(width * 16)
            .enumerate()
            .try_for_each(|(i, chunk)| source.read_rows(index, first + i * 16, chunk))?;
        let dst = &mut out_buf[..n * row_bytes];
        dst.par_chunks_mut(row_bytes)
            .zip(src.par_chunks(width))
            .enumerate()
            .try_for_each(|(i, (d, s))| {
                quantease_formats::quantize_row(p.target_type, s, importance, d).map_err(|e| {
                    ConvertError::Quantize {
                        path: source.path().to_path_buf(),
                        tensor: p.name.clone(),
                        row: first + i,
                        ty: p.target_type,
                        source: e,
                    }
                })
            })?;
        writer.write_data(dst)?;
        first += n;
        bar.set_position(first as u64);
    }
    writer.end_tensor()?;
    Ok(())
}

/// Quantise one tensor with the solver. With a full Σ the whole tensor is solved at once (one
/// GPTQ factorisation); with a diagonal or identity Σ rows are independent and are solved in
/// batches of about [`CHUNK_WEIGHTS`] weights, bounding memory.
fn solve_tensor(
    source: &dyn TensorSource,
    index: usize,
    p: &PlannedTensor,
    importance: Option<&[f32]>,
    settings: &ConvertSettings<'_>,
    writer: &mut GgufWriter,
    bar: &ProgressBar,
) -> Result<TensorReport, ConvertError> {
    let start = Instant::now();
    let width = p.dims[0] as usize;
    let n_rows: usize = p.dims.iter().skip(1).product::<u64>() as usize;
    let sigma_err = |message| ConvertError::Sigma {
        tensor: p.name.clone(),
        message,
    };
    let full = match settings.gram {
        Some(g) => g.sigma(&p.name, width).map_err(sigma_err)?,
        None => None,
    };
    let cross = match (settings.gram, &full) {
        (Some(g), Some(Sigma::Full(_))) if settings.cross_strength != 0.0 => {
            g.cross(&p.name, width).map_err(sigma_err)?
        }
        _ => None,
    };
    let sigma = match (full, importance) {
        (Some(s), _) => s,
        (None, Some(imp)) => Sigma::Diagonal(imp.to_vec()),
        (None, None) => Sigma::Identity,
    };
    let batch_rows = if matches!(sigma, Sigma::Full(_)) {
        n_rows.max(1)
    } else {
        (CHUNK_WEIGHTS / width.max(1)).clamp(1, n_rows.max(1))
    };
    let mut f32_buf = vec![0f32; batch_rows * width];
    bar.set_length(n_rows as u64);
    bar.set_position(0);
    let (mut obj, mut rtn, mut gptq, mut base) = (0f64, 0f64, 0f64, 0f64);
    let mut has_gptq = true;
    let mut sweeps = 0;
    let mut n_outliers = 0;
    let mut init = Method::Rtn;
    let mut first = 0;
    while first < n_rows {
        let n = batch_rows.min(n_rows - first);
        let src = &mut f32_buf[..n * width];
        src.par_chunks_mut(width * 16)
            .enumerate()
            .try_for_each(|(i, chunk)| source.read_rows(index, first + i * 16, chunk))?;
        if let (Sigma::Full(fs), Some(m)) = (&sigma, cross.as_deref()) {
            let opts = solver::CrossOptions {
                shrink: settings.solve.shrink,
                damp: settings.solve.damp,
                strength: settings.cross_strength,
            };
            if solver::cross_target(src, n, width, fs, m, &opts).is_none() {
                return Err(ConvertError::Sigma {
                    tensor: p.name.clone(),
                    message: "the paired target W·M·Σ̃⁻¹ could not be formed (damped Σ̃ not positive definite, or a non-finite result); try a larger --damp or --cross-strength 0".into(),
                });
            }
        }
        let sol = solver::solve(
            &p.name,
            src,
            n,
            width,
            &sigma,
            p.target_type,
            settings.method,
            &settings.solve,
        )
        .map_err(|e| ConvertError::Solve {
            path: source.path().to_path_buf(),
            source: e,
        })?;
        writer.write_data(&sol.bytes)?;
        obj += sol.objective;
        rtn += sol.rtn_objective;
        base += sol.base;
        match sol.gptq_objective {
            Some(g) => gptq += g,
            None => has_gptq = false,
        }
        sweeps = sweeps.max(sol.sweeps);
        n_outliers += sol.outliers;
        if sol.init == Method::Gptq {
            init = Method::Gptq;
        }
        first += n;
        bar.set_position(first as u64);
    }
    writer.end_tensor()?;
    let rel = |o: f64| if base > 0.0 { o / base } else { 0.0 };
    Ok(TensorReport {
        name: p.name.clone(),
        ty: p.target_type.name().to_string(),
        bpw: p.target_type.bits_per_weight(),
        method: settings.method.name().to_string(),
        init: init.name().to_string(),
        sigma: sigma.kind().to_string(),
        rel_error: rel(obj),
        rtn_rel_error: rel(rtn),
        gptq_rel_error: has_gptq.then(|| rel(gptq)),
        sweeps,
        outliers: n_outliers,
        outlier_fraction: n_outliers as f64 / (n_rows * width).max(1) as f64,
        seconds: start.elapsed().as_secs_f64(),
    })
}

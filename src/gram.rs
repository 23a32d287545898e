//! Gram files: llama.cpp imatrix GGUF plus the full Gram matrix Σ = Σ_t x_t x_tᵀ of every distinct
//! matmul input (DESIGN.md §4).
//!
//! # File layout
//!
//! A Gram file is a GGUF that llama.cpp's imatrix loader (`common/imatrix-loader.cpp`, used by
//! `llama-quantize --imatrix`) and [`crate::imatrix::Imatrix::load`] accept as an ordinary
//! imatrix, because both only look at tensors ending in `.in_sum2` / `.counts`:
//!
//! - `general.type = "imatrix"`, `imatrix.datasets` (array of STRING), `imatrix.chunk_count` and
//!   `imatrix.chunk_size` (U32);
//! - per weight `W`: `W.in_sum2`, F32 `[p, n_expert]` (Σ x² per input column, per expert) and
//!   `W.counts`, F32 `[1, n_expert]` (activation rows summed), exactly as llama.cpp's imatrix
//!   tool writes them (`n_expert = 1` for dense weights);
//! - per distinct input (q/k/v of a layer share one, so do gate/up): one Gram tensor, F32, 1-D,
//!   holding the **lower triangle packed row by row**: row `r` contributes `Σ[r][0..=r]`, so
//!   element `(r, c)`, `c ≤ r`, is at `r(r+1)/2 + c` and the tensor has `p(p+1)/2` elements.
//!   Half the bytes of a full matrix, and symmetric by construction. Its name is
//!   `<first weight>.gram` (or `gram.<index>` when that would reach 64 bytes);
//! - `quantease.gram.weights` and `quantease.gram.tensors` (parallel STRING arrays) map every
//!   weight that has a full Gram to its Gram tensor; `quantease.gram.inputs` (parallel to the
//!   distinct tensors in `quantease.gram.tensors` order of first appearance) names the graph node
//!   the input came from; `quantease.gram.layout = "lower_packed_rows"`.
//!
//! - optionally (a *paired* calibration, `calibrate --paired Q.gguf`: the statistics are those of
//!   the quantised model Q's inputs X̃, run in lockstep with the float model's X on the same
//!   tokens), per distinct input one **cross tensor** M = Σ_t x_t x̃_tᵀ, F32 `[p, p]`, row `i`
//!   holding `M[i][0..p]` (M is not symmetric). `quantease.gram.cross_tensors` (parallel to
//!   `quantease.gram.tensors`) names it, `quantease.gram.paired_model` names Q. The solver uses it
//!   to aim at the float model's outputs from the quantised model's inputs, min ‖WX − ŴX̃‖²
//!   ([`crate::solver::cross_target`]).
//!
//! Its diagonal equals the weight's `in_sum2` (both are Σ x²); `in_sum2` is accumulated directly
//! in f64, the Gram chunk by chunk in f32 GEMMs added into f64 accumulators, so the two agree to
//! float precision. Mixture-of-experts weights (`MUL_MAT_ID`) carry diagonal statistics only; a
//! full Gram for them would need one p×p accumulator per expert, fed only by the tokens routed to
//! it (`n_expert` times the memory of a dense input, and a routed gather before each GEMM).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, MatMut, MatRef, Par};
use quantease_formats::GgmlType;

use crate::gguf::{GgufError, GgufFile, GgufWriter, MetaArray, MetaValue, TensorInfo, TensorPlan};
use crate::imatrix::{
    KEY_CHUNK_COUNT, KEY_CHUNK_SIZE, KEY_DATASETS, SUFFIX_COUNTS, SUFFIX_IN_SUM2,
};

/// Metadata key: weights that have a full Gram (STRING array).
pub const KEY_GRAM_WEIGHTS: &str = "quantease.gram.weights";
/// Metadata key: the Gram tensor of each entry of [`KEY_GRAM_WEIGHTS`] (STRING array).
pub const KEY_GRAM_TENSORS: &str = "quantease.gram.tensors";
/// Metadata key: graph-node names of the distinct inputs (STRING array, one per Gram tensor).
pub const KEY_GRAM_INPUTS: &str = "quantease.gram.inputs";
/// Metadata key: storage layout of the Gram tensors.
pub const KEY_GRAM_LAYOUT: &str = "quantease.gram.layout";
/// Metadata key: weight of each chunk's first token in the statistics (F32; absent = 1).
pub const KEY_SINK_WEIGHT: &str = "quantease.gram.sink_weight";
/// Metadata key: the cross tensor of each entry of [`KEY_GRAM_WEIGHTS`] (STRING array; paired
/// calibrations only).
pub const KEY_GRAM_CROSS_TENSORS: &str = "quantease.gram.cross_tensors";
/// Metadata key: file name of the quantised model a paired calibration ran beside the float one.
pub const KEY_PAIRED_MODEL: &str = "quantease.gram.paired_model";
/// Suffix of cross tensors named after their first weight.
pub const SUFFIX_CROSS: &str = ".cross";
/// The only layout written and read: lower triangle packed row by row, F32.
pub const GRAM_LAYOUT: &str = "lower_packed_rows";
/// Suffix of Gram tensors named after their first weight.
pub const SUFFIX_GRAM: &str = ".gram";

/// Why a Gram file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum GramError {
    /// The GGUF container is malformed or could not be written.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A field or tensor holds something a Gram file may not.
    #[error("{}: invalid {field}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field or tensor.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The file has no statistics for a weight.
    #[error("{}: no statistics for weight '{weight}'", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The weight asked for.
        weight: String,
    },
    /// The file has only diagonal statistics for a weight (plain imatrix, or an MoE weight).
    #[error("{}: weight '{weight}' has no full Gram matrix (diagonal statistics only)", path.display())]
    NoFullGram {
        /// The file.
        path: PathBuf,
        /// The weight asked for.
        weight: String,
    },
    /// A Gram's size does not match the weight it is asked for.
    #[error("{}: weight '{weight}': Gram is {found}×{found} but the weight has {expected} input columns", path.display())]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The weight.
        weight: String,
        /// Input width of the weight.
        expected: usize,
        /// Side of the stored Gram.
        found: usize,
    },
}

/// Number of elements of a packed p×p lower triangle.
pub fn packed_len(p: usize) -> usize {
    p * (p + 1) / 2
}

/// Index of element `(r, c)` (either order) of a packed lower triangle.
pub fn packed_index(r: usize, c: usize) -> usize {
    let (r, c) = if c > r { (c, r) } else { (r, c) };
    r * (r + 1) / 2 + c
}

/// Statistics of one distinct matmul input: Σ x² per column, rows seen and, unless diagonal-only,
/// the packed f64 Gram accumulator.
#[derive(Clone, Debug)]
pub struct InputAccumulator {
    p: usize,
    count: u64,
    sum2: Vec<f64>,
    gram: Option<Vec<f64>>,
}

impl InputAccumulator {
    /// A zeroed accumulator for inputs of width `p`; `full` allocates the Gram (`p(p+1)/2` f64).
    pub fn new(p: usize, full: bool) -> InputAccumulator {
        InputAccumulator {
            p,
            count: 0,
            sum2: vec![0.0; p],
            gram: full.then(|| vec![0.0; packed_len(p)]),
        }
    }

    /// Bytes an accumulator of width `p` holds.
    pub fn bytes(p: usize, full: bool) -> u64 {
        let gram = if full { packed_len(p) as u64 * 8 } else { 0 };
        p as u64 * 8 + gram
    }

    /// Input width.
    pub fn p(&self) -> usize {
        self.p
    }

    /// Rows accumulated.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Σ x² per column.
    pub fn sum2(&self) -> &[f64] {
        &self.sum2
    }

    /// The packed Gram (lower triangle by rows), if accumulated.
    pub fn gram(&self) -> Option<&[f64]> {
        self.gram.as_deref()
    }

    /// Add `x` (row-major, `x.len() / p` rows of width `p`). The chunk's XᵀX is one f32 GEMM
    /// (upper triangle only) into `scratch`, added into the f64 accumulator; Σ x² is summed in
    /// f64 directly. `par` is faer's parallelism for the GEMM.
    pub fn add_rows(&mut self, x: &[f32], scratch: &mut Vec<f32>, par: Par) {
        let p = self.p;
        if p == 0 || x.is_empty() {
            return;
        }
        let n = x.len() / p;
        let x = &x[..n * p];
        for row in x.chunks_exact(p) {
            for (acc, &v) in self.sum2.iter_mut().zip(row) {
                *acc += f64::from(v) * f64::from(v);
            }
        }
        self.count += n as u64;
        let Some(gram) = self.gram.as_mut() else {
            return;
        };
        scratch.clear();
        scratch.resize(p * p, 0.0);
        let xm = MatRef::from_row_major_slice(x, n, p);
        {
            // Column-major p×p destination: column c holds rows 0..=c of the upper triangle,
            // which (by symmetry) is row c of the packed lower triangle.
            let dst = MatMut::from_column_major_slice_mut(&mut scratch[..], p, p);
            tri_matmul(
                dst,
                BlockStructure::TriangularUpper,
                Accum::Replace,
                xm.transpose(),
                BlockStructure::Rectangular,
                xm,
                BlockStructure::Rectangular,
                1.0f32,
                par,
            );
        }
        for c in 0..p {
            let col = &scratch[c * p..c * p + c + 1];
            let base = c * (c + 1) / 2;
            for (acc, &v) in gram[base..base + c + 1].iter_mut().zip(col) {
                *acc += f64::from(v);
            }
        }
    }
}

/// The cross-product accumulator of a paired calibration: M = Σ_t x_t x̃_tᵀ (p×p, row-major, f64)
/// over rows `x` of the float model's input and `x̃` of the quantised model's, same tokens.
#[derive(Clone, Debug)]
pub struct CrossAccumulator {
    p: usize,
    count: u64,
    m: Vec<f64>,
}

impl CrossAccumulator {
    /// A zeroed accumulator for inputs of width `p`.
    pub fn new(p: usize) -> CrossAccumulator {
        CrossAccumulator {
            p,
            count: 0,
            m: vec![0.0; p * p],
        }
    }

    /// Bytes an accumulator of width `p` holds.
    pub fn bytes(p: usize) -> u64 {
        (p * p) as u64 * 8
    }

    /// Input width.
    pub fn p(&self) -> usize {
        self.p
    }

    /// Row pairs accumulated.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// M, row-major: `m()[i·p + j] = Σ_t x_t[i]·x̃_t[j]`.
    pub fn m(&self) -> &[f64] {
        &self.m
    }

    /// Add the row pairs of `x` and `xt` (row-major, same number of rows of width `p`): one f32
    /// GEMM `xᵀ·x̃` into `scratch`, added into f64. Returns false (and adds nothing) when the
    /// shapes differ.
    pub fn add_rows(&mut self, x: &[f32], xt: &[f32], scratch: &mut Vec<f32>, par: Par) -> bool {
        let p = self.p;
        if p == 0 || x.len() != xt.len() || !x.len().is_multiple_of(p) {
            return false;
        }
        let n = x.len() / p;
        if n == 0 {
            return true;
        }
        scratch.clear();
        scratch.resize(p * p, 0.0);
        {
            // Row-major p×p destination = the transpose of a column-major one.
            let dst = MatMut::from_column_major_slice_mut(&mut scratch[..], p, p);
            let a = MatRef::from_row_major_slice(x, n, p);
            let b = MatRef::from_row_major_slice(xt, n, p);
            // dstᵀ (column-major) = x̃ᵀ·x, so dst read row-major is xᵀ·x̃.
            faer::linalg::matmul::matmul(dst, Accum::Replace, b.transpose(), a, 1.0f32, par);
        }
        for (acc, &v) in self.m.iter_mut().zip(scratch.iter()) {
            *acc += f64::from(v);
        }
        self.count += n as u64;
        true
    }
}

/// Diagonal statistics of a mixture-of-experts weight (`MUL_MAT_ID`): Σ x² per column per expert
/// over the tokens routed to that expert, and their counts.
#[derive(Clone, Debug)]
pub struct ExpertAccumulator {
    p: usize,
    sum2: Vec<f64>,
    counts: Vec<u64>,
}

impl ExpertAccumulator {
    /// A zeroed accumulator for `n_expert` experts of input width `p`.
    pub fn new(p: usize, n_expert: usize) -> ExpertAccumulator {
        ExpertAccumulator {
            p,
            sum2: vec![0.0; p * n_expert],
            counts: vec![0; n_expert],
        }
    }

    /// Input width.
    pub fn p(&self) -> usize {
        self.p
    }

    /// Number of experts.
    pub fn n_expert(&self) -> usize {
        self.counts.len()
    }

    /// Add one routed row for `expert`. Returns `false` (and adds nothing) when the expert id or
    /// the row length is out of range.
    pub fn add_row(&mut self, expert: i32, row: &[f32]) -> bool {
        let Ok(e) = usize::try_from(expert) else {
            return false;
        };
        if e >= self.counts.len() || row.len() != self.p {
            return false;
        }
        for (acc, &v) in self.sum2[e * self.p..(e + 1) * self.p].iter_mut().zip(row) {
            *acc += f64::from(v) * f64::from(v);
        }
        self.counts[e] += 1;
        true
    }

    /// Σ x², `p` values per expert, expert-major.
    pub fn sum2(&self) -> &[f64] {
        &self.sum2
    }

    /// Rows seen per expert.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
}

/// What a weight's statistics come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightStats {
    /// A dense weight reading distinct input number `usize` (shared with the other weights of
    /// the same input).
    Input(usize),
    /// A mixture-of-experts weight with its own per-expert diagonal statistics (index into the
    /// expert list).
    Experts(usize),
}

/// Everything a Gram file records, known before any data is collected (so the file's header can
/// be written first and Grams streamed out pass by pass).
#[derive(Clone, Debug)]
pub struct GramLayout {
    /// Dataset names (`imatrix.datasets`).
    pub datasets: Vec<String>,
    /// Chunks processed.
    pub chunk_count: u32,
    /// Tokens per chunk.
    pub chunk_size: u32,
    /// Distinct inputs: graph-node name and width, in collection order.
    pub inputs: Vec<(String, usize)>,
    /// MoE weights: input width and number of experts.
    pub experts: Vec<(usize, usize)>,
    /// Every weight and where its statistics come from.
    pub weights: BTreeMap<String, WeightStats>,
    /// Whether full Grams are written (false: a plain imatrix).
    pub full: bool,
    /// Weight of each chunk's first token in every statistic (see
    /// [`crate::calibrate::CalibrateOptions::sink_weight`]); written as
    /// `quantease.gram.sink_weight` when it is not 1.
    pub sink_weight: f32,
    /// Paired calibration: the quantised model's file name; a cross tensor is written after
    /// each Gram (needs `full`).
    pub paired_model: Option<String>,
}

impl GramLayout {
    /// The name of input `i`'s Gram tensor: `<first weight>.gram`, or `gram.<i>` if too long.
    pub fn gram_tensor_name(&self, i: usize) -> String {
        let first = self
            .weights
            .iter()
            .find(|(_, s)| **s == WeightStats::Input(i))
            .map(|(w, _)| w.as_str());
        match first {
            Some(w) if w.len() + SUFFIX_GRAM.len() < crate::gguf::MAX_NAME_LEN => {
                format!("{w}{SUFFIX_GRAM}")
            }
            _ => format!("gram.{i}"),
        }
    }

    /// The name of input `i`'s cross tensor: `<first weight>.cross`, or `cross.<i>` if too long.
    pub fn cross_tensor_name(&self, i: usize) -> String {
        match self.gram_tensor_name(i).strip_suffix(SUFFIX_GRAM) {
            Some(w) if w.len() + SUFFIX_CROSS.len() < crate::gguf::MAX_NAME_LEN => {
                format!("{w}{SUFFIX_CROSS}")
            }
            _ => format!("cross.{i}"),
        }
    }

    fn paired(&self) -> bool {
        self.full && self.paired_model.is_some()
    }

    fn metadata(&self) -> Vec<(String, MetaValue)> {
        let strings = |v: Vec<&str>| {
            MetaValue::Array(MetaArray::String(
                v.iter().map(|s| s.as_bytes().to_vec()).collect(),
            ))
        };
        let mut md = vec![
            ("general.type".to_string(), MetaValue::string("imatrix")),
            (
                KEY_DATASETS.to_string(),
                strings(self.datasets.iter().map(String::as_str).collect()),
            ),
            (
                KEY_CHUNK_COUNT.to_string(),
                MetaValue::U32(self.chunk_count),
            ),
            (KEY_CHUNK_SIZE.to_string(), MetaValue::U32(self.chunk_size)),
        ];
        if self.sink_weight != 1.0 {
            md.push((
                KEY_SINK_WEIGHT.to_string(),
                MetaValue::F32(self.sink_weight),
            ));
        }
        if self.full && !self.inputs.is_empty() {
            let names: Vec<String> = (0..self.inputs.len())
                .map(|i| self.gram_tensor_name(i))
                .collect();
            let cross_names: Vec<String> = (0..self.inputs.len())
                .map(|i| self.cross_tensor_name(i))
                .collect();
            let mut ws = Vec::new();
            let mut ts = Vec::new();
            let mut cs = Vec::new();
            for (w, s) in &self.weights {
                if let WeightStats::Input(i) = s {
                    ws.push(w.as_str());
                    ts.push(names[*i].as_str());
                    cs.push(cross_names[*i].as_str());
                }
            }
            if let (true, Some(model)) = (self.paired(), &self.paired_model) {
                md.push((KEY_GRAM_CROSS_TENSORS.to_string(), strings(cs)));
                md.push((KEY_PAIRED_MODEL.to_string(), MetaValue::string(model)));
            }
            md.push((KEY_GRAM_LAYOUT.to_string(), MetaValue::string(GRAM_LAYOUT)));
            md.push((KEY_GRAM_WEIGHTS.to_string(), strings(ws)));
            md.push((KEY_GRAM_TENSORS.to_string(), strings(ts)));
            md.push((
                KEY_GRAM_INPUTS.to_string(),
                strings(self.inputs.iter().map(|(n, _)| n.as_str()).collect()),
            ));
        }
        md
    }

    fn tensor_plans(&self) -> Vec<TensorPlan> {
        let mut plans = Vec::new();
        if self.full {
            for (i, (_, p)) in self.inputs.iter().enumerate() {
                plans.push(TensorPlan {
                    name: self.gram_tensor_name(i),
                    dims: vec![packed_len(*p) as u64],
                    ty: GgmlType::F32,
                });
                if self.paired() {
                    plans.push(TensorPlan {
                        name: self.cross_tensor_name(i),
                        dims: vec![*p as u64, *p as u64],
                        ty: GgmlType::F32,
                    });
                }
            }
        }
        for (w, s) in &self.weights {
            let (p, n_exp) = match s {
                WeightStats::Input(i) => (self.inputs[*i].1, 1),
                WeightStats::Experts(e) => self.experts[*e],
            };
            plans.push(TensorPlan {
                name: format!("{w}{SUFFIX_IN_SUM2}"),
                dims: vec![p as u64, n_exp as u64],
                ty: GgmlType::F32,
            });
            plans.push(TensorPlan {
                name: format!("{w}{SUFFIX_COUNTS}"),
                dims: vec![1, n_exp as u64],
                ty: GgmlType::F32,
            });
        }
        plans
    }
}

fn f32_bytes(values: impl IntoIterator<Item = f64>) -> Vec<u8> {
    values
        .into_iter()
        .flat_map(|v| (v as f32).to_le_bytes())
        .collect()
}

/// Streams a Gram file: the header first (from a [`GramLayout`]), then the Gram tensors in input
/// order as they are finished (so a multi-pass collection never holds every Gram at once), then
/// the diagonal statistics. The file appears at its path only after [`GramWriter::finish`].
pub struct GramWriter {
    layout: GramLayout,
    writer: GgufWriter,
    path: PathBuf,
    next_gram: usize,
}

impl GramWriter {
    /// Create the file (as a temporary file beside `path`) and write its header.
    pub fn create(path: &Path, layout: GramLayout) -> Result<GramWriter, GramError> {
        for (w, s) in &layout.weights {
            let ok = match s {
                WeightStats::Input(i) => *i < layout.inputs.len(),
                WeightStats::Experts(e) => *e < layout.experts.len(),
            };
            if !ok {
                return Err(GramError::Invalid {
                    path: path.to_path_buf(),
                    field: format!("weight '{w}'"),
                    reason: "refers to an input that does not exist".into(),
                });
            }
        }
        let writer = GgufWriter::create(path, &layout.metadata(), &layout.tensor_plans())?;
        Ok(GramWriter {
            layout,
            writer,
            path: path.to_path_buf(),
            next_gram: 0,
        })
    }

    /// Index of the next Gram to write.
    pub fn next_gram(&self) -> usize {
        self.next_gram
    }

    /// Write the Gram of the next input (inputs must come in layout order), and for a paired
    /// layout its cross products `cross` (required then, ignored otherwise). A no-op check when
    /// the layout is diagonal-only.
    pub fn write_gram(
        &mut self,
        acc: &InputAccumulator,
        cross: Option<&CrossAccumulator>,
    ) -> Result<(), GramError> {
        let i = self.next_gram;
        let invalid = |reason: String| GramError::Invalid {
            path: self.path.clone(),
            field: format!("Gram of input {i}"),
            reason,
        };
        let Some(&(_, p)) = self.layout.inputs.get(i) else {
            return Err(invalid("more Grams than inputs".into()));
        };
        if acc.p() != p {
            return Err(invalid(format!(
                "width {} but the layout says {p}",
                acc.p()
            )));
        }
        self.next_gram += 1;
        if !self.layout.full {
            return Ok(());
        }
        let gram = acc
            .gram()
            .ok_or_else(|| invalid("no full Gram was accumulated".into()))?;
        if let Some(k) = gram.iter().position(|v| !v.is_finite()) {
            return Err(invalid(format!("element {k} is {}", gram[k])));
        }
        // Stream in slices to bound the temporary byte buffer.
        for part in gram.chunks(1 << 20) {
            self.writer.write_data(&f32_bytes(part.iter().copied()))?;
        }
        self.writer.end_tensor()?;
        if self.layout.paired() {
            let cross =
                cross.ok_or_else(|| invalid("no cross products were accumulated".into()))?;
            if cross.p() != p {
                return Err(invalid(format!(
                    "cross products of width {} but the layout says {p}",
                    cross.p()
                )));
            }
            if let Some(k) = cross.m().iter().position(|v| !v.is_finite()) {
                return Err(invalid(format!("cross element {k} is {}", cross.m()[k])));
            }
            for part in cross.m().chunks(1 << 20) {
                self.writer.write_data(&f32_bytes(part.iter().copied()))?;
            }
            self.writer.end_tensor()?;
        }
        Ok(())
    }

    /// Write the diagonal statistics of every weight (`inputs[i]` for dense inputs, `experts[e]`
    /// for MoE weights, as the layout numbers them) and rename the file into place.
    pub fn finish(
        mut self,
        inputs: &[(Vec<f64>, u64)],
        experts: &[ExpertAccumulator],
    ) -> Result<(), GramError> {
        let invalid = |field: String, reason: String| GramError::Invalid {
            path: self.path.clone(),
            field,
            reason,
        };
        if self.next_gram != self.layout.inputs.len() {
            return Err(invalid(
                "Grams".into(),
                format!("{} of {} written", self.next_gram, self.layout.inputs.len()),
            ));
        }
        if inputs.len() != self.layout.inputs.len() || experts.len() != self.layout.experts.len() {
            return Err(invalid(
                "statistics".into(),
                "count differs from the layout".into(),
            ));
        }
        let weights = std::mem::take(&mut self.layout.weights);
        for (w, s) in &weights {
            let (sum2, counts): (&[f64], Vec<f64>) = match s {
                WeightStats::Input(i) => (&inputs[*i].0, vec![inputs[*i].1 as f64]),
                WeightStats::Experts(e) => (
                    experts[*e].sum2(),
                    experts[*e].counts().iter().map(|&c| c as f64).collect(),
                ),
            };
            if let Some(k) = sum2.iter().position(|v| !v.is_finite()) {
                return Err(invalid(
                    format!("statistics of '{w}'"),
                    format!("Σx² of column {k} is {}", sum2[k]),
                ));
            }
            self.writer.write_tensor(&f32_bytes(sum2.iter().copied()))?;
            self.writer.write_tensor(&f32_bytes(counts))?;
        }
        self.writer.finish()?;
        Ok(())
    }
}

fn f32_at(bytes: &[u8], i: usize) -> f32 {
    let b = &bytes[4 * i..4 * i + 4];
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// A Gram file (or a plain imatrix GGUF) opened for reading, memory-mapped.
pub struct GramFile {
    file: GgufFile,
    /// weight → Gram tensor name.
    grams: BTreeMap<String, String>,
    /// weight → cross tensor name (paired calibrations).
    crosses: BTreeMap<String, String>,
    paired_model: Option<String>,
    /// weight → (in_sum2, counts) tensor infos.
    stats: BTreeMap<String, (TensorInfo, TensorInfo)>,
    datasets: Vec<String>,
    chunk_count: u64,
    chunk_size: u64,
}

impl std::fmt::Debug for GramFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GramFile")
            .field("path", &self.file.path())
            .field("weights", &self.stats.len())
            .field("full_grams", &self.grams.len())
            .finish()
    }
}

impl GramFile {
    /// Open and validate a Gram file: the imatrix part (types and shapes of `in_sum2`/`counts`) and
    /// the Gram mapping (every listed Gram tensor exists, is F32, 1-D, of `p(p+1)/2` elements for
    /// the `p` of each weight mapped to it). Values are checked when read.
    pub fn open(path: &Path) -> Result<GramFile, GramError> {
        let file = GgufFile::open(path)?;
        let invalid = |field: String, reason: String| GramError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        if let Some(v) = file.get("general.type") {
            if v.as_str() != Some("imatrix") {
                return Err(invalid(
                    "metadata 'general.type'".into(),
                    format!("is {v}, expected \"imatrix\""),
                ));
            }
        }
        let strings = |key: &str| -> Result<Option<Vec<String>>, GramError> {
            match file.get(key) {
                None => Ok(None),
                Some(MetaValue::Array(MetaArray::String(v))) => Ok(Some(
                    v.iter()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .collect(),
                )),
                Some(v) => Err(invalid(
                    format!("metadata '{key}'"),
                    format!("must be an array of STRING, found {}", v.value_type()),
                )),
            }
        };
        let datasets = strings(KEY_DATASETS)?.unwrap_or_default();
        let count = |key: &str| file.get(key).and_then(MetaValue::as_u64).unwrap_or(0);
        let chunk_count = count(KEY_CHUNK_COUNT);
        let chunk_size = count(KEY_CHUNK_SIZE);

        let mut pairs: BTreeMap<String, (Option<TensorInfo>, Option<TensorInfo>)> = BTreeMap::new();
        for t in &file.tensors {
            if let Some(base) = t.name.strip_suffix(SUFFIX_IN_SUM2) {
                pairs.entry(base.to_string()).or_default().0 = Some(t.clone());
            } else if let Some(base) = t.name.strip_suffix(SUFFIX_COUNTS) {
                pairs.entry(base.to_string()).or_default().1 = Some(t.clone());
            }
        }
        let mut stats = BTreeMap::new();
        for (w, pair) in pairs {
            let (Some(s), Some(c)) = pair else {
                return Err(invalid(
                    format!("weight '{w}'"),
                    "has only one of in_sum2 / counts".into(),
                ));
            };
            for t in [&s, &c] {
                if t.ty != GgmlType::F32 {
                    return Err(invalid(
                        format!("tensor '{}' type", t.name),
                        format!("{} (must be F32)", t.ty),
                    ));
                }
            }
            if c.n_elements == 0 || s.n_elements == 0 || s.n_rows() != c.n_elements {
                return Err(invalid(
                    format!("tensor '{}' shape", s.name),
                    format!("{:?} does not match {} counts", s.dims, c.n_elements),
                ));
            }
            stats.insert(w, (s, c));
        }
        if stats.is_empty() {
            return Err(invalid(
                "tensors".into(),
                "no '*.in_sum2' / '*.counts' pairs".into(),
            ));
        }

        let mut grams = BTreeMap::new();
        let mut crosses = BTreeMap::new();
        let ws = strings(KEY_GRAM_WEIGHTS)?;
        let ts = strings(KEY_GRAM_TENSORS)?;
        let cs = strings(KEY_GRAM_CROSS_TENSORS)?;
        let paired_model = file
            .get(KEY_PAIRED_MODEL)
            .and_then(MetaValue::as_str)
            .map(str::to_string);
        match (ws, ts) {
            (None, None) => {
                if cs.is_some() {
                    return Err(invalid(
                        format!("metadata '{KEY_GRAM_CROSS_TENSORS}'"),
                        "present without Gram tensors".into(),
                    ));
                }
            }
            (Some(ws), Some(ts)) => {
                if ws.len() != ts.len() {
                    return Err(invalid(
                        format!("metadata '{KEY_GRAM_TENSORS}'"),
                        format!("{} entries for {} weights", ts.len(), ws.len()),
                    ));
                }
                if let Some(cs) = &cs {
                    if cs.len() != ws.len() {
                        return Err(invalid(
                            format!("metadata '{KEY_GRAM_CROSS_TENSORS}'"),
                            format!("{} entries for {} weights", cs.len(), ws.len()),
                        ));
                    }
                }
                match file.get(KEY_GRAM_LAYOUT).and_then(MetaValue::as_str) {
                    Some(GRAM_LAYOUT) => {}
                    other => {
                        return Err(invalid(
                            format!("metadata '{KEY_GRAM_LAYOUT}'"),
                            format!("{other:?}, expected \"{GRAM_LAYOUT}\""),
                        ))
                    }
                }
                for (k, (w, t)) in ws.into_iter().zip(ts).enumerate() {
                    let info = file.tensor(&t).ok_or_else(|| {
                        invalid(
                            format!("metadata '{KEY_GRAM_TENSORS}'"),
                            format!("tensor '{t}' (Gram of '{w}') is not in the file"),
                        )
                    })?;
                    let (s, _) = stats.get(&w).ok_or_else(|| {
                        invalid(
                            format!("metadata '{KEY_GRAM_WEIGHTS}'"),
                            format!("weight '{w}' has no in_sum2 / counts"),
                        )
                    })?;
                    let p = s.row_len() as usize;
                    if s.n_rows() != 1 {
                        return Err(invalid(
                            format!("weight '{w}'"),
                            "a full Gram for a multi-expert weight is not supported".into(),
                        ));
                    }
                    if info.ty != GgmlType::F32
                        || info.dims.len() != 1
                        || info.n_elements != packed_len(p) as u64
                    {
                        return Err(invalid(
                            format!("tensor '{t}'"),
                            format!(
                                "{} {:?}, expected F32 [{}] (packed {p}×{p})",
                                info.ty,
                                info.dims,
                                packed_len(p)
                            ),
                        ));
                    }
                    if let Some(c) = cs.as_ref().map(|cs| &cs[k]) {
                        let ci = file.tensor(c).ok_or_else(|| {
                            invalid(
                                format!("metadata '{KEY_GRAM_CROSS_TENSORS}'"),
                                format!(
                                    "tensor '{c}' (cross products of '{w}') is not in the file"
                                ),
                            )
                        })?;
                        if ci.ty != GgmlType::F32 || ci.dims != [p as u64, p as u64] {
                            return Err(invalid(
                                format!("tensor '{c}'"),
                                format!("{} {:?}, expected F32 [{p}, {p}]", ci.ty, ci.dims),
                            ));
                        }
                        crosses.insert(w.clone(), c.clone());
                    }
                    grams.insert(w, t);
                }
            }
            _ => {
                return Err(invalid(
                    format!("metadata '{KEY_GRAM_WEIGHTS}' / '{KEY_GRAM_TENSORS}'"),
                    "only one of the two is present".into(),
                ))
            }
        }
        Ok(GramFile {
            file,
            grams,
            crosses,
            paired_model,
            stats,
            datasets,
            chunk_count,
            chunk_size,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Weights with statistics, sorted by name.
    pub fn weights(&self) -> impl Iterator<Item = &str> {
        self.stats.keys().map(String::as_str)
    }

    /// Whether `weight` has a full Gram.
    pub fn has_full(&self, weight: &str) -> bool {
        self.grams.contains_key(weight)
    }

    /// Whether the file comes from a paired calibration (cross products of a float and a
    /// quantised model's inputs): the quantised model's file name.
    pub fn paired_model(&self) -> Option<&str> {
        self.paired_model.as_deref()
    }

    /// The cross products M = Σ_t x_t x̃_tᵀ of `weight` (p×p row-major: float model's input
    /// index first), if the file has them. Errors on a shape mismatch or a non-finite element.
    pub fn cross(&self, weight: &str, p: usize) -> Result<Option<Vec<f32>>, GramError> {
        let Some(t) = self.crosses.get(weight) else {
            return Ok(None);
        };
        let info = self.file.tensor(t).ok_or_else(|| self.missing(weight))?;
        if info.dims != [p as u64, p as u64] {
            return Err(GramError::ShapeMismatch {
                path: self.path().to_path_buf(),
                weight: weight.to_string(),
                expected: p,
                found: info.dims[0] as usize,
            });
        }
        let bytes = self.file.tensor_data(info);
        let m: Vec<f32> = (0..p * p).map(|k| f32_at(bytes, k)).collect();
        if let Some(k) = m.iter().position(|v| !v.is_finite()) {
            return Err(GramError::Invalid {
                path: self.path().to_path_buf(),
                field: format!("tensor '{t}' (cross products of '{weight}')"),
                reason: format!("element {k} (row {}) is {}", k / p, m[k]),
            });
        }
        Ok(Some(m))
    }

    /// Number of weights with a full Gram.
    pub fn n_full(&self) -> usize {
        self.grams.len()
    }

    /// The Gram tensor of `weight`, if it has one.
    pub fn gram_tensor_name(&self, weight: &str) -> Option<&str> {
        self.grams.get(weight).map(String::as_str)
    }

    /// Datasets recorded in the file.
    pub fn datasets(&self) -> &[String] {
        &self.datasets
    }

    /// Chunks processed (0 if not recorded).
    pub fn chunk_count(&self) -> u64 {
        self.chunk_count
    }

    /// Tokens per chunk (0 if not recorded).
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    fn missing(&self, weight: &str) -> GramError {
        GramError::Missing {
            path: self.path().to_path_buf(),
            weight: weight.to_string(),
        }
    }

    /// Diagonal statistics of a weight: Σ x² per column (`p × n_expert` values, expert-major) and
    /// the rows summed per expert. Errors if the weight is missing or a value is not finite.
    pub fn diag_stats(&self, weight: &str) -> Result<(Vec<f64>, Vec<f64>), GramError> {
        let (s, c) = self.stats.get(weight).ok_or_else(|| self.missing(weight))?;
        let read = |t: &TensorInfo| -> Result<Vec<f64>, GramError> {
            let bytes = self.file.tensor_data(t);
            let vals: Vec<f64> = (0..t.n_elements as usize)
                .map(|i| f64::from(f32_at(bytes, i)))
                .collect();
            if let Some(k) = vals.iter().position(|v| !v.is_finite() || *v < 0.0) {
                return Err(GramError::Invalid {
                    path: self.path().to_path_buf(),
                    field: format!("tensor '{}' element {k}", t.name),
                    reason: format!("{} is not a finite non-negative number", vals[k]),
                });
            }
            Ok(vals)
        };
        Ok((read(s)?, read(c)?))
    }

    /// The full Gram of `weight`, checked against the weight's input width `p` when given.
    /// Errors: [`GramError::Missing`], [`GramError::NoFullGram`], [`GramError::ShapeMismatch`].
    pub fn gram(&self, weight: &str, p: Option<usize>) -> Result<GramView<'_>, GramError> {
        let (s, c) = self.stats.get(weight).ok_or_else(|| self.missing(weight))?;
        let t = self
            .grams
            .get(weight)
            .ok_or_else(|| GramError::NoFullGram {
                path: self.path().to_path_buf(),
                weight: weight.to_string(),
            })?;
        let side = s.row_len() as usize;
        if let Some(p) = p {
            if p != side {
                return Err(GramError::ShapeMismatch {
                    path: self.path().to_path_buf(),
                    weight: weight.to_string(),
                    expected: p,
                    found: side,
                });
            }
        }
        let info = self.file.tensor(t).ok_or_else(|| self.missing(weight))?;
        let count = f64::from(f32_at(self.file.tensor_data(c), 0));
        Ok(GramView {
            weight: weight.to_string(),
            tensor: t.clone(),
            path: self.path().to_path_buf(),
            p: side,
            count,
            packed: self.file.tensor_data(info),
        })
    }

    /// Like [`GramFile::gram`], but a missing weight or a weight without a full Gram is `Ok(None)`
    /// with a warning on stderr (for callers that fall back to diagonal or identity Σ).
    pub fn gram_or_warn(
        &self,
        weight: &str,
        p: Option<usize>,
    ) -> Result<Option<GramView<'_>>, GramError> {
        match self.gram(weight, p) {
            Ok(v) => Ok(Some(v)),
            Err(e @ (GramError::Missing { .. } | GramError::NoFullGram { .. })) => {
                eprintln!("warning: {e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// One weight's full Gram in a [`GramFile`] (zero-copy over the mapped file).
#[derive(Clone, Debug)]
pub struct GramView<'a> {
    weight: String,
    tensor: String,
    path: PathBuf,
    p: usize,
    count: f64,
    packed: &'a [u8],
}

impl GramView<'_> {
    /// Side of the Gram (the weight's input width).
    pub fn p(&self) -> usize {
        self.p
    }

    /// Activation rows summed into it.
    pub fn count(&self) -> f64 {
        self.count
    }

    /// The Gram tensor's name.
    pub fn tensor_name(&self) -> &str {
        &self.tensor
    }

    /// Element `(r, c)`.
    pub fn get(&self, r: usize, c: usize) -> f32 {
        f32_at(self.packed, packed_index(r, c))
    }

    fn check(&self, k: usize, v: f64) -> Result<(), GramError> {
        if v.is_finite() {
            return Ok(());
        }
        let r = ((((8 * k + 1) as f64).sqrt() - 1.0) / 2.0) as usize;
        Err(GramError::Invalid {
            path: self.path.clone(),
            field: format!("tensor '{}' (Gram of '{}')", self.tensor, self.weight),
            reason: format!("packed element {k} (row {r}) is {v}"),
        })
    }

    /// The diagonal Σ_jj.
    pub fn diag(&self) -> Result<Vec<f64>, GramError> {
        (0..self.p)
            .map(|j| {
                let k = packed_index(j, j);
                let v = f64::from(f32_at(self.packed, k));
                self.check(k, v).map(|_| v)
            })
            .collect()
    }

    /// The whole symmetric p×p matrix, row-major, in f64. Errors on a non-finite element.
    pub fn full(&self) -> Result<Vec<f64>, GramError> {
        let p = self.p;
        let mut m = vec![0.0f64; p * p];
        for r in 0..p {
            let base = r * (r + 1) / 2;
            for c in 0..=r {
                let v = f64::from(f32_at(self.packed, base + c));
                self.check(base + c, v)?;
                m[r * p + c] = v;
                m[c * p + r] = v;
            }
        }
        Ok(m)
    }

    /// The whole symmetric p×p matrix, row-major, in f32.
    pub fn full_f32(&self) -> Result<Vec<f32>, GramError> {
        Ok(self.full()?.into_iter().map(|v| v as f32).collect())
    }
}

/// A Gram file gives the solver the full Σ of every weight it has one for.
impl crate::convert::SigmaProvider for GramFile {
    fn sigma(&self, tensor: &str, p: usize) -> Result<Option<crate::solver::Sigma>, String> {
        if !self.has_full(tensor) {
            return Ok(None);
        }
        let view = self.gram(tensor, Some(p)).map_err(|e| e.to_string())?;
        let data = view.full_f32().map_err(|e| e.to_string())?;
        Ok(crate::solver::FullSigma::new(p, data).map(crate::solver::Sigma::Full))
    }

    fn cross(&self, tensor: &str, p: usize) -> Result<Option<Vec<f32>>, String> {
        GramFile::cross(self, tensor, p).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], p: usize) -> Vec<f64> {
        let n = x.len() / p;
        let mut g = vec![0.0; p * p];
        for t in 0..n {
            for i in 0..p {
                for j in 0..p {
                    g[i * p + j] += f64::from(x[t * p + i]) * f64::from(x[t * p + j]);
                }
            }
        }
        g
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn packed_indexing_is_symmetric_and_dense() {
        let p = 7;
        let mut seen = vec![false; packed_len(p)];
        for r in 0..p {
            for c in 0..p {
                assert_eq!(packed_index(r, c), packed_index(c, r));
                seen[packed_index(r, c)] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(packed_index(p - 1, p - 1), packed_len(p) - 1);
    }

    #[test]
    fn cross_accumulator_matches_naive_f64_and_rejects_bad_shapes() {
        let p = 19;
        let mut acc = CrossAccumulator::new(p);
        let mut scratch = Vec::new();
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for chunk in 0..3 {
            let x = pseudo_random(p * (20 + chunk * 7), chunk as u64 + 11);
            let y = pseudo_random(p * (20 + chunk * 7), chunk as u64 + 21);
            assert!(acc.add_rows(&x, &y, &mut scratch, Par::Seq));
            xs.extend_from_slice(&x);
            ys.extend_from_slice(&y);
        }
        let n = xs.len() / p;
        for i in 0..p {
            for j in 0..p {
                let want: f64 = (0..n)
                    .map(|t| f64::from(xs[t * p + i]) * f64::from(ys[t * p + j]))
                    .sum();
                let got = acc.m()[i * p + j];
                assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "({i},{j})");
            }
        }
        assert_eq!(acc.count(), n as u64);
        assert!(!acc.add_rows(&xs[..p], &ys[..2 * p], &mut scratch, Par::Seq));
        assert!(!acc.add_rows(&xs[..p + 1], &ys[..p + 1], &mut scratch, Par::Seq));
        assert_eq!(acc.count(), n as u64);
    }

    #[test]
    fn paired_file_round_trips_its_cross_products() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paired.gram.gguf");
        let l = layout_paired();
        let mut scratch = Vec::new();
        let mut accs = Vec::new();
        let mut crosses = Vec::new();
        for (k, p) in [4usize, 6].into_iter().enumerate() {
            let x = pseudo_random(p * 10, 30 + k as u64);
            let y = pseudo_random(p * 10, 40 + k as u64);
            let mut a = InputAccumulator::new(p, true);
            a.add_rows(&y, &mut scratch, Par::Seq);
            let mut c = CrossAccumulator::new(p);
            c.add_rows(&x, &y, &mut scratch, Par::Seq);
            accs.push(a);
            crosses.push(c);
        }
        let mut w = GramWriter::create(&path, l).unwrap();
        // A paired layout needs the cross products.
        assert!(w.write_gram(&accs[0], None).is_err());
        let mut w = GramWriter::create(&path, layout_paired()).unwrap();
        for (a, c) in accs.iter().zip(&crosses) {
            w.write_gram(a, Some(c)).unwrap();
        }
        let diag: Vec<_> = accs
            .iter()
            .map(|a| (a.sum2().to_vec(), a.count()))
            .collect();
        w.finish(&diag, &[ExpertAccumulator::new(4, 2)]).unwrap();
        let g = GramFile::open(&path).unwrap();
        assert_eq!(g.paired_model(), Some("q.gguf"));
        let m = g.cross("blk.0.ffn_down.weight", 6).unwrap().unwrap();
        let want: Vec<f32> = crosses[1].m().iter().map(|&v| v as f32).collect();
        assert_eq!(m, want);
        assert_eq!(
            g.cross("blk.0.attn_q.weight", 4).unwrap(),
            g.cross("blk.0.attn_k.weight", 4).unwrap()
        );
        assert!(g.cross("blk.0.ffn_down.weight", 5).is_err());
        assert!(g.cross("blk.0.ffn_up_exps.weight", 4).unwrap().is_none());
        // A file without cross products has none.
        let plain = dir.path().join("plain.gram.gguf");
        let mut w = GramWriter::create(&plain, layout(true)).unwrap();
        for a in &accs {
            w.write_gram(a, None).unwrap();
        }
        w.finish(&diag, &[ExpertAccumulator::new(4, 2)]).unwrap();
        let g = GramFile::open(&plain).unwrap();
        assert_eq!(g.paired_model(), None);
        assert!(g.cross("blk.0.ffn_down.weight", 6).unwrap().is_none());
    }

    fn layout_paired() -> GramLayout {
        let mut l = layout(true);
        l.paired_model = Some("q.gguf".into());
        l
    }

    #[test]
    fn accumulator_matches_naive_f64_over_chunks() {
        let p = 37;
        let mut acc = InputAccumulator::new(p, true);
        let mut scratch = Vec::new();
        let mut all = Vec::new();
        for chunk in 0..3 {
            let x = pseudo_random(p * (50 + chunk * 13), chunk as u64 + 1);
            acc.add_rows(&x, &mut scratch, Par::Seq);
            all.extend_from_slice(&x);
        }
        let want = naive(&all, p);
        let g = acc.gram().unwrap();
        for r in 0..p {
            for c in 0..=r {
                let w = want[r * p + c];
                let got = g[packed_index(r, c)];
                assert!(
                    (got - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "({r},{c}) {got} vs {w}"
                );
            }
            assert!((acc.sum2()[r] - want[r * p + r]).abs() < 1e-9 * (1.0 + want[r * p + r]));
        }
        assert_eq!(acc.count(), (50 + 63 + 76) as u64);
    }

    #[test]
    fn experts_reject_bad_ids() {
        let mut e = ExpertAccumulator::new(2, 3);
        assert!(e.add_row(1, &[1.0, 2.0]));
        assert!(!e.add_row(3, &[1.0, 2.0]));
        assert!(!e.add_row(-1, &[1.0, 2.0]));
        assert!(!e.add_row(0, &[1.0]));
        assert_eq!(e.counts(), &[0, 1, 0]);
        assert_eq!(e.sum2(), &[0.0, 0.0, 1.0, 4.0, 0.0, 0.0]);
    }

    fn layout(full: bool) -> GramLayout {
        let mut weights = BTreeMap::new();
        weights.insert("blk.0.attn_q.weight".to_string(), WeightStats::Input(0));
        weights.insert("blk.0.attn_k.weight".to_string(), WeightStats::Input(0));
        weights.insert("blk.0.ffn_down.weight".to_string(), WeightStats::Input(1));
        weights.insert(
            "blk.0.ffn_up_exps.weight".to_string(),
            WeightStats::Experts(0),
        );
        GramLayout {
            datasets: vec!["calib.txt".into()],
            chunk_count: 2,
            chunk_size: 16,
            inputs: vec![("attn_norm-0".into(), 4), ("ffn_out-0".into(), 6)],
            experts: vec![(4, 2)],
            weights,
            full,
            sink_weight: 1.0,
            paired_model: None,
        }
    }

    #[test]
    fn write_then_read_round_trips_and_is_an_imatrix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gram.gguf");
        let l = layout(true);
        let mut accs = vec![
            InputAccumulator::new(4, true),
            InputAccumulator::new(6, true),
        ];
        let mut scratch = Vec::new();
        accs[0].add_rows(&pseudo_random(4 * 10, 3), &mut scratch, Par::Seq);
        accs[1].add_rows(&pseudo_random(6 * 10, 4), &mut scratch, Par::Seq);
        let mut ex = ExpertAccumulator::new(4, 2);
        ex.add_row(1, &[1.0, 2.0, 3.0, 4.0]);
        let mut w = GramWriter::create(&path, l.clone()).unwrap();
        // Finishing early is refused.
        for a in &accs {
            w.write_gram(a, None).unwrap();
        }
        let diag: Vec<_> = accs
            .iter()
            .map(|a| (a.sum2().to_vec(), a.count()))
            .collect();
        w.finish(&diag, &[ex]).unwrap();

        let g = GramFile::open(&path).unwrap();
        assert_eq!(g.n_full(), 3);
        assert_eq!(
            g.gram_tensor_name("blk.0.attn_q.weight"),
            g.gram_tensor_name("blk.0.attn_k.weight")
        );
        assert_eq!(
            g.gram_tensor_name("blk.0.attn_k.weight"),
            Some("blk.0.attn_k.weight.gram")
        );
        let v = g.gram("blk.0.ffn_down.weight", Some(6)).unwrap();
        assert_eq!(v.count(), 10.0);
        let full = v.full().unwrap();
        let packed = accs[1].gram().unwrap();
        for r in 0..6 {
            for c in 0..6 {
                assert_eq!(
                    full[r * 6 + c],
                    f64::from(packed[packed_index(r, c)] as f32)
                );
            }
        }
        let (s2, counts) = g.diag_stats("blk.0.ffn_up_exps.weight").unwrap();
        assert_eq!(counts, vec![0.0, 1.0]);
        assert_eq!(s2[4..], [1.0, 4.0, 9.0, 16.0]);
        assert!(matches!(
            g.gram("blk.0.ffn_down.weight", Some(5)),
            Err(GramError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            g.gram("blk.0.ffn_up_exps.weight", None),
            Err(GramError::NoFullGram { .. })
        ));
        assert!(matches!(
            g.gram("blk.9.ffn_down.weight", None),
            Err(GramError::Missing { .. })
        ));
        assert!(g
            .gram_or_warn("blk.9.ffn_down.weight", None)
            .unwrap()
            .is_none());
        let im = crate::imatrix::Imatrix::load(&path).unwrap();
        assert_eq!(im.len(), 4);
        assert_eq!(im.chunk_count(), 2);
        let want: Vec<f32> = accs[0].sum2().iter().map(|s| (*s as f32) / 10.0).collect();
        assert_eq!(im.importance("blk.0.attn_q.weight").unwrap(), &want[..]);
    }

    #[test]
    fn incomplete_writes_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gram.gguf");
        let mut w = GramWriter::create(&path, layout(true)).unwrap();
        w.write_gram(&InputAccumulator::new(4, true), None).unwrap();
        assert!(w.finish(&[], &[]).is_err());
        assert!(!path.exists());
        // A Gram of the wrong width is refused.
        let mut w = GramWriter::create(&path, layout(true)).unwrap();
        assert!(w.write_gram(&InputAccumulator::new(5, true), None).is_err());
    }

    #[test]
    fn diag_only_layout_is_a_plain_imatrix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.imatrix.gguf");
        let mut w = GramWriter::create(&path, layout(false)).unwrap();
        let accs = [
            InputAccumulator::new(4, false),
            InputAccumulator::new(6, false),
        ];
        for a in &accs {
            w.write_gram(a, None).unwrap();
        }
        let diag: Vec<_> = accs.iter().map(|a| (a.sum2().to_vec(), 1)).collect();
        w.finish(&diag, &[ExpertAccumulator::new(4, 2)]).unwrap();
        let g = GramFile::open(&path).unwrap();
        assert_eq!(g.n_full(), 0);
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.tensors.len(), 8);
        assert!(f.get(KEY_GRAM_WEIGHTS).is_none());
    }
}

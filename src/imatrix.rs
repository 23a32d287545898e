//! Importance matrices (imatrix) as llama.cpp's `llama-imatrix` writes them: the per-column mean
//! squared activation entering each weight, the diagonal of the Gram matrix Σ = X Xᵀ / n.
//!
//! Two file formats, told apart by the GGUF magic:
//!
//! - **GGUF** (`general.type = "imatrix"`): for each weight `W`, an F32 tensor `W.in_sum2` of
//!   shape `[n_cols, n_experts]` holding the sums of squared activations, and an F32 tensor
//!   `W.counts` of shape `[1, n_experts]` holding how many activation rows were summed (per
//!   expert). An optional `W.in_sum` (plain sums) is ignored. Metadata: `imatrix.datasets`
//!   (string array), `imatrix.chunk_count` and `imatrix.chunk_size` (U32).
//! - **Legacy `.dat`** (little-endian): i32 entry count, then per entry i32 name length, name
//!   bytes, i32 `ncall`, i32 value count, that many f32 values (already normalised by the
//!   writer so that value / `ncall` is the mean); then optionally i32 chunk count, i32 dataset
//!   name length and the dataset name.
//!
//! [`Imatrix::importance`] returns the means, `sum / count`. For a 3-D MoE expert weight the
//! slice has one row of `n_cols` values per expert, expert `e` at `[e * n_cols, (e + 1) *
//! n_cols)` ([`Imatrix::expert_importance`] slices it); for a 2-D weight it is one row. As in
//! llama.cpp's quantiser, an expert (or a whole weight) with a count of zero gets importance 1
//! for every column, and the counts are rounded to whole numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quantease_formats::GgmlType;

use crate::gguf::{GgufError, GgufFile, MetaValue, TensorInfo};

/// Suffix of the tensors holding sums of squared activations.
pub const SUFFIX_IN_SUM2: &str = ".in_sum2";
/// Suffix of the tensors holding activation counts.
pub const SUFFIX_COUNTS: &str = ".counts";
/// Metadata key: datasets the imatrix was computed on.
pub const KEY_DATASETS: &str = "imatrix.datasets";
/// Metadata key: number of chunks processed.
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
/// Metadata key: tokens per chunk.
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";

/// Why an imatrix file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    /// The GGUF container itself is malformed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The file could not be read.
    #[error("{}: I/O error: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A legacy file ends before a field is complete.
    #[error("{}: truncated: {field} at byte {offset} needs {needed} bytes but the file ends first", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The field being read.
        field: String,
        /// Its byte offset.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
    },
    /// A field or tensor holds something an imatrix may not.
    #[error("{}: invalid {field}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field or tensor.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// Which file format an imatrix came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImatrixFormat {
    /// llama.cpp's GGUF imatrix.
    Gguf,
    /// The legacy binary `.dat` format.
    LegacyDat,
}

/// A loaded importance matrix: per-column mean squared activations for each weight.
#[derive(Clone, Debug)]
pub struct Imatrix {
    path: PathBuf,
    format: ImatrixFormat,
    entries: BTreeMap<String, Vec<f32>>,
    datasets: Vec<String>,
    chunk_count: u64,
    chunk_size: u64,
}

impl Imatrix {
    /// Load a GGUF imatrix or a legacy `.dat` file (detected by the `GGUF` magic).
    pub fn load(path: &Path) -> Result<Imatrix, ImatrixError> {
        let io = |source| ImatrixError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut magic = [0u8; 4];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(io)?;
            let mut got = 0;
            while got < 4 {
                match f.read(&mut magic[got..]).map_err(io)? {
                    0 => break,
                    k => got += k,
                }
            }
            got
        };
        if n == 4 && magic == crate::gguf::GGUF_MAGIC {
            Imatrix::from_gguf(&GgufFile::open(path)?)
        } else {
            let bytes = std::fs::read(path).map_err(io)?;
            Imatrix::from_dat_bytes(&bytes, path)
        }
    }

    /// Read an imatrix from an open GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Imatrix, ImatrixError> {
        let path = file.path();
        let invalid = |field: String, reason: String| ImatrixError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        if let Some(v) = file.get("general.type") {
            if v.as_str() != Some("imatrix") {
                return Err(invalid(
                    "metadata 'general.type'".into(),
                    format!("is {v}, expected \"imatrix\" (is this a model file?)"),
                ));
            }
        }
        let datasets = match file.get(KEY_DATASETS) {
            None => Vec::new(),
            Some(MetaValue::Array(a)) => match a {
                crate::gguf::MetaArray::String(v) => v
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect(),
                _ => {
                    return Err(invalid(
                        format!("metadata '{KEY_DATASETS}'"),
                        format!(
                            "must be an array of STRING, found an array of {}",
                            a.elem_type()
                        ),
                    ))
                }
            },
            Some(v) => {
                return Err(invalid(
                    format!("metadata '{KEY_DATASETS}'"),
                    format!("must be an array of STRING, found {}", v.value_type()),
                ))
            }
        };
        let count_key = |key: &str| -> Result<u64, ImatrixError> {
            match file.get(key) {
                None => Ok(0),
                Some(MetaValue::U32(v)) => Ok(u64::from(*v)),
                Some(v) => Err(invalid(
                    format!("metadata '{key}'"),
                    format!("must be U32, found {}", v.value_type()),
                )),
            }
        };
        let chunk_count = count_key(KEY_CHUNK_COUNT)?;
        let chunk_size = count_key(KEY_CHUNK_SIZE)?;

        // Pair up `W.in_sum2` and `W.counts`.
        let mut pairs: BTreeMap<&str, (Option<&TensorInfo>, Option<&TensorInfo>)> = BTreeMap::new();
        for t in &file.tensors {
            if let Some(base) = t.name.strip_suffix(SUFFIX_IN_SUM2) {
                pairs.entry(base).or_default().0 = Some(t);
            } else if let Some(base) = t.name.strip_suffix(SUFFIX_COUNTS) {
                pairs.entry(base).or_default().1 = Some(t);
            }
        }
        let mut entries = BTreeMap::new();
        for (base, pair) in pairs {
            let (sums, counts) = match pair {
                (Some(s), Some(c)) => (s, c),
                (Some(s), None) => {
                    return Err(invalid(
                        format!("tensor '{}'", s.name),
                        format!("has no matching '{base}{SUFFIX_COUNTS}'"),
                    ))
                }
                (None, Some(c)) => {
                    return Err(invalid(
                        format!("tensor '{}'", c.name),
                        format!("has no matching '{base}{SUFFIX_IN_SUM2}'"),
                    ))
                }
                (None, None) => continue,
            };
            for t in [sums, counts] {
                if t.ty != GgmlType::F32 {
                    return Err(invalid(
                        format!("tensor '{}' type", t.name),
                        format!("{} (must be F32)", t.ty),
                    ));
                }
            }
            let n_experts = counts.n_elements;
            if n_experts == 0 || sums.n_elements == 0 {
                return Err(invalid(
                    format!("tensor '{}'", sums.name),
                    "is empty".into(),
                ));
            }
            if sums.n_rows() != n_experts {
                return Err(invalid(
                    format!("tensor '{}' shape", sums.name),
                    format!(
                        "{:?} has {} rows but '{}' has {n_experts} counts",
                        sums.dims,
                        sums.n_rows(),
                        counts.name
                    ),
                ));
            }
            let n_cols = sums.row_len() as usize;
            let sum_vals = f32s(file.tensor_data(sums));
            let count_vals = f32s(file.tensor_data(counts));
            if let Some((i, c)) = count_vals
                .iter()
                .enumerate()
                .find(|(_, c)| !c.is_finite() || **c < 0.0)
            {
                return Err(invalid(
                    format!("tensor '{}' element {i}", counts.name),
                    format!("count {c} is not a finite non-negative number"),
                ));
            }
            let mut means = Vec::with_capacity(sum_vals.len());
            for (e, row) in sum_vals.chunks_exact(n_cols).enumerate() {
                let count = count_vals[e].round();
                for (j, &s) in row.iter().enumerate() {
                    if !s.is_finite() || s < 0.0 {
                        return Err(invalid(
                            format!("tensor '{}' element {}", sums.name, e * n_cols + j),
                            format!("sum of squares {s} is not a finite non-negative number"),
                        ));
                    }
                    means.push(if count > 0.0 { s / count } else { 1.0 });
                }
            }
            entries.insert(base.to_string(), means);
        }
        if entries.is_empty() {
            return Err(invalid(
                "tensors".into(),
                format!("no '*{SUFFIX_IN_SUM2}' / '*{SUFFIX_COUNTS}' pairs: not an imatrix"),
            ));
        }
        Ok(Imatrix {
            path: path.to_path_buf(),
            format: ImatrixFormat::Gguf,
            entries,
            datasets,
            chunk_count,
            chunk_size,
        })
    }

    /// Parse a legacy `.dat` imatrix held in `bytes` (`path` names it in errors).
    pub fn from_dat_bytes(bytes: &[u8], path: &Path) -> Result<Imatrix, ImatrixError> {
        let mut r = DatReader {
            bytes,
            pos: 0,
            path,
        };
        let n_entries = r.i32(&|| "entry count".into())?;
        // Smallest entry: name length, 1-byte name, ncall, value count, one value.
        const MIN_ENTRY: u64 = 4 + 1 + 4 + 4 + 4;
        if n_entries < 1 {
            return Err(r.invalid("entry count".into(), format!("{n_entries} (must be ≥ 1)")));
        }
        if n_entries as u64 > r.remaining() / MIN_ENTRY {
            return Err(r.truncated("entry count".into(), n_entries as u64 * MIN_ENTRY));
        }
        let mut entries = BTreeMap::new();
        for i in 0..n_entries {
            let len = r.i32(&|| format!("entry {i} name length"))?;
            if len < 1 {
                return Err(r.invalid(
                    format!("entry {i} name length"),
                    format!("{len} (must be ≥ 1)"),
                ));
            }
            let name_bytes = r.take(len as u64, &|| format!("entry {i} name"))?;
            let name = std::str::from_utf8(name_bytes)
                .map_err(|e| r.invalid(format!("entry {i} name"), format!("not UTF-8: {e}")))?
                .to_string();
            let ncall = r.i32(&|| format!("entry '{name}' ncall"))?;
            if ncall < 0 {
                return Err(r.invalid(
                    format!("entry '{name}' ncall"),
                    format!("{ncall} is negative"),
                ));
            }
            let nval_field = || format!("entry '{name}' value count");
            let nval = r.i32(&nval_field)?;
            if nval < 1 {
                return Err(r.invalid(nval_field(), format!("{nval} (must be ≥ 1)")));
            }
            let raw = r.take(nval as u64 * 4, &|| format!("entry '{name}' values"))?;
            let vals = f32s(raw);
            let mut means = Vec::with_capacity(vals.len());
            for (j, &v) in vals.iter().enumerate() {
                if !v.is_finite() || v < 0.0 {
                    return Err(r.invalid(
                        format!("entry '{name}' value {j}"),
                        format!("{v} is not a finite non-negative number"),
                    ));
                }
                means.push(if ncall > 0 { v / ncall as f32 } else { 1.0 });
            }
            if entries.insert(name.clone(), means).is_some() {
                return Err(r.invalid(format!("entry '{name}'"), "duplicate name".into()));
            }
        }
        let mut chunk_count = 0;
        let mut datasets = Vec::new();
        if r.remaining() > 0 {
            let c = r.i32(&|| "chunk count".into())?;
            if c < 0 {
                return Err(r.invalid("chunk count".into(), format!("{c} is negative")));
            }
            chunk_count = c as u64;
            if r.remaining() > 0 {
                let len = r.i32(&|| "dataset name length".into())?;
                if len < 0 {
                    return Err(
                        r.invalid("dataset name length".into(), format!("{len} is negative"))
                    );
                }
                if len > 0 {
                    let name = r.take(len as u64, &|| "dataset name".into())?;
                    datasets.push(String::from_utf8_lossy(name).into_owned());
                }
            }
            if r.remaining() > 0 {
                return Err(r.invalid(
                    "end of file".into(),
                    format!("{} unexpected bytes after the dataset name", r.remaining()),
                ));
            }
        }
        Ok(Imatrix {
            path: path.to_path_buf(),
            format: ImatrixFormat::LegacyDat,
            entries,
            datasets,
            chunk_count,
            chunk_size: 0,
        })
    }

    /// Per-column mean squared activation for weight `tensor_name` (e.g.
    /// `blk.0.attn_q.weight`): `n_cols` values for a 2-D weight, `n_experts × n_cols` (expert
    /// after expert) for a 3-D expert weight.
    pub fn importance(&self, tensor_name: &str) -> Option<&[f32]> {
        self.entries.get(tensor_name).map(Vec::as_slice)
    }

    /// The importance row of expert `expert` of a weight whose rows have `n_cols` columns.
    /// `None` if the weight is unknown, its data is not a whole number of `n_cols` rows, or
    /// the expert is out of range. Expert 0 of a 2-D weight is its whole importance.
    pub fn expert_importance(
        &self,
        tensor_name: &str,
        n_cols: usize,
        expert: usize,
    ) -> Option<&[f32]> {
        let v = self.importance(tensor_name)?;
        if n_cols == 0 || !v.len().is_multiple_of(n_cols) {
            return None;
        }
        v.chunks_exact(n_cols).nth(expert)
    }

    /// Number of weights with importance data.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no entries (never the case for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Weight names with importance data, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Datasets the imatrix was computed on (may be empty).
    pub fn datasets(&self) -> &[String] {
        &self.datasets
    }

    /// Number of chunks processed (0 if not recorded).
    pub fn chunk_count(&self) -> u64 {
        self.chunk_count
    }

    /// Tokens per chunk (0 if not recorded; the legacy format never records it).
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// The format the file was in.
    pub fn format(&self) -> ImatrixFormat {
        self.format
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

struct DatReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> DatReader<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn truncated(&self, field: String, needed: u64) -> ImatrixError {
        ImatrixError::Truncated {
            path: self.path.to_path_buf(),
            field,
            offset: self.pos as u64,
            needed,
        }
    }

    fn invalid(&self, field: String, reason: String) -> ImatrixError {
        ImatrixError::Invalid {
            path: self.path.to_path_buf(),
            field,
            reason,
        }
    }

    fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> Result<&'a [u8], ImatrixError> {
        if n > self.remaining() {
            return Err(self.truncated(field(), n));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn i32(&mut self, field: &dyn Fn() -> String) -> Result<i32, ImatrixError> {
        let b = self.take(4, field)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufWriter, MetaArray, TensorPlan};

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    struct T {
        name: &'static str,
        dims: Vec<u64>,
        ty: GgmlType,
        data: Vec<u8>,
    }

    fn f32_tensor(name: &'static str, dims: &[u64], v: &[f32]) -> T {
        T {
            name,
            dims: dims.to_vec(),
            ty: GgmlType::F32,
            data: f32_bytes(v),
        }
    }

    fn write_gguf(path: &Path, meta: Vec<(String, MetaValue)>, tensors: &[T]) {
        let plans: Vec<TensorPlan> = tensors
            .iter()
            .map(|t| TensorPlan {
                name: t.name.into(),
                dims: t.dims.clone(),
                ty: t.ty,
            })
            .collect();
        let mut w = GgufWriter::create(path, &meta, &plans).unwrap();
        for t in tensors {
            w.write_tensor(&t.data).unwrap();
        }
        w.finish().unwrap();
    }

    fn imatrix_meta() -> Vec<(String, MetaValue)> {
        vec![
            ("general.type".into(), MetaValue::string("imatrix")),
            (
                KEY_DATASETS.into(),
                MetaValue::Array(MetaArray::String(vec![b"calib.txt".to_vec()])),
            ),
            (KEY_CHUNK_COUNT.into(), MetaValue::U32(10)),
            (KEY_CHUNK_SIZE.into(), MetaValue::U32(512)),
        ]
    }

    fn good_tensors() -> Vec<T> {
        vec![
            f32_tensor(
                "blk.0.attn_q.weight.in_sum",
                &[4, 1],
                &[1.0, -1.0, 0.0, 2.0],
            ),
            f32_tensor(
                "blk.0.attn_q.weight.in_sum2",
                &[4, 1],
                &[2.0, 4.0, 6.0, 8.0],
            ),
            f32_tensor("blk.0.attn_q.weight.counts", &[1, 1], &[2.0]),
            f32_tensor(
                "blk.0.ffn_up_exps.weight.in_sum2",
                &[2, 3],
                &[1.0, 2.0, 9.0, 9.0, 4.0, 8.0],
            ),
            f32_tensor("blk.0.ffn_up_exps.weight.counts", &[1, 3], &[1.0, 0.0, 4.0]),
        ]
    }

    #[test]
    fn gguf_imatrix_means_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imatrix.gguf");
        write_gguf(&path, imatrix_meta(), &good_tensors());
        let im = Imatrix::load(&path).unwrap();
        assert_eq!(im.format(), ImatrixFormat::Gguf);
        assert_eq!(im.len(), 2);
        assert!(!im.is_empty());
        assert_eq!(
            im.names().collect::<Vec<_>>(),
            ["blk.0.attn_q.weight", "blk.0.ffn_up_exps.weight"]
        );
        assert_eq!(
            im.importance("blk.0.attn_q.weight").unwrap(),
            &[1.0, 2.0, 3.0, 4.0]
        );
        // Per expert: sums / count, count 0 → ones.
        assert_eq!(
            im.importance("blk.0.ffn_up_exps.weight").unwrap(),
            &[1.0, 2.0, 1.0, 1.0, 1.0, 2.0]
        );
        assert_eq!(
            im.expert_importance("blk.0.ffn_up_exps.weight", 2, 2)
                .unwrap(),
            &[1.0, 2.0]
        );
        assert_eq!(im.expert_importance("blk.0.ffn_up_exps.weight", 2, 3), None);
        assert_eq!(im.expert_importance("blk.0.ffn_up_exps.weight", 4, 0), None);
        assert_eq!(im.importance("blk.0.attn_q.weight.in_sum2"), None);
        assert_eq!(im.datasets(), ["calib.txt"]);
        assert_eq!((im.chunk_count(), im.chunk_size()), (10, 512));
        assert_eq!(im.path(), path);
    }

    fn gguf_error(meta: Vec<(String, MetaValue)>, tensors: &[T]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad-imatrix.gguf");
        write_gguf(&path, meta, tensors);
        let err = Imatrix::load(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bad-imatrix.gguf"), "{msg}");
        msg
    }

    #[test]
    fn malformed_gguf_imatrices_are_rejected() {
        let mut t = good_tensors();
        t.remove(2);
        let m = gguf_error(imatrix_meta(), &t);
        assert!(
            m.contains("'blk.0.attn_q.weight.in_sum2'") && m.contains("no matching"),
            "{m}"
        );

        let mut t = good_tensors();
        t.remove(1);
        let m = gguf_error(imatrix_meta(), &t);
        assert!(
            m.contains("'blk.0.attn_q.weight.counts'") && m.contains("no matching"),
            "{m}"
        );

        let mut t = good_tensors();
        t[2] = T {
            name: "blk.0.attn_q.weight.counts",
            dims: vec![1, 1],
            ty: GgmlType::F16,
            data: vec![0, 0x40],
        };
        let m = gguf_error(imatrix_meta(), &t);
        assert!(
            m.contains("counts' type") && m.contains("must be F32"),
            "{m}"
        );

        let mut t = good_tensors();
        t[4] = f32_tensor("blk.0.ffn_up_exps.weight.counts", &[1, 2], &[1.0, 1.0]);
        let m = gguf_error(imatrix_meta(), &t);
        assert!(
            m.contains("in_sum2' shape") && m.contains("2 counts"),
            "{m}"
        );

        let mut t = good_tensors();
        t[1] = f32_tensor(
            "blk.0.attn_q.weight.in_sum2",
            &[4, 1],
            &[1.0, f32::NAN, 1.0, 1.0],
        );
        let m = gguf_error(imatrix_meta(), &t);
        assert!(m.contains("in_sum2' element 1"), "{m}");

        let mut t = good_tensors();
        t[1] = f32_tensor(
            "blk.0.attn_q.weight.in_sum2",
            &[4, 1],
            &[1.0, 1.0, -3.0, 1.0],
        );
        assert!(gguf_error(imatrix_meta(), &t).contains("element 2"));

        let mut t = good_tensors();
        t[2] = f32_tensor("blk.0.attn_q.weight.counts", &[1, 1], &[-1.0]);
        assert!(gguf_error(imatrix_meta(), &t).contains("counts' element 0"));

        let mut meta = imatrix_meta();
        meta[0].1 = MetaValue::string("model");
        assert!(gguf_error(meta, &good_tensors()).contains("general.type"));

        let mut meta = imatrix_meta();
        meta[2].1 = MetaValue::I64(10);
        assert!(gguf_error(meta, &good_tensors()).contains("imatrix.chunk_count': must be U32"));

        let mut meta = imatrix_meta();
        meta[1].1 = MetaValue::Array(MetaArray::U8(vec![1]));
        assert!(gguf_error(meta, &good_tensors()).contains("imatrix.datasets"));

        let m = gguf_error(
            imatrix_meta(),
            &[f32_tensor("output.weight", &[4], &[0.0; 4])],
        );
        assert!(m.contains("not an imatrix"), "{m}");
    }

    /// A legacy file: entries (name, ncall, values), then an optional trailer.
    fn dat(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend_from_slice(&(name.len() as i32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&ncall.to_le_bytes());
            b.extend_from_slice(&(vals.len() as i32).to_le_bytes());
            b.extend_from_slice(&f32_bytes(vals));
        }
        if let Some((chunks, dataset)) = trailer {
            b.extend_from_slice(&chunks.to_le_bytes());
            b.extend_from_slice(&(dataset.len() as i32).to_le_bytes());
            b.extend_from_slice(dataset.as_bytes());
        }
        b
    }

    fn dat_entries() -> Vec<(&'static str, i32, &'static [f32])> {
        vec![
            ("blk.0.attn_k.weight", 4, &[4.0, 8.0, 2.0]),
            ("blk.0.ffn_down.weight", 0, &[5.0, 6.0]),
        ]
    }

    #[test]
    fn legacy_dat_means_and_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imatrix.dat");
        std::fs::write(&path, dat(&dat_entries(), Some((100, "groups_merged.txt")))).unwrap();
        let im = Imatrix::load(&path).unwrap();
        assert_eq!(im.format(), ImatrixFormat::LegacyDat);
        assert_eq!(im.len(), 2);
        assert_eq!(
            im.importance("blk.0.attn_k.weight").unwrap(),
            &[1.0, 2.0, 0.5]
        );
        assert_eq!(im.importance("blk.0.ffn_down.weight").unwrap(), &[1.0, 1.0]);
        assert_eq!(im.datasets(), ["groups_merged.txt"]);
        assert_eq!((im.chunk_count(), im.chunk_size()), (100, 0));

        // The trailer is optional, and so is the dataset name within it.
        let p = Path::new("x.dat");
        let im = Imatrix::from_dat_bytes(&dat(&dat_entries(), None), p).unwrap();
        assert_eq!((im.chunk_count(), im.datasets().len()), (0, 0));
        let mut only_chunks = dat(&dat_entries(), None);
        only_chunks.extend_from_slice(&7i32.to_le_bytes());
        assert_eq!(
            Imatrix::from_dat_bytes(&only_chunks, p)
                .unwrap()
                .chunk_count(),
            7
        );
        let im = Imatrix::from_dat_bytes(&dat(&dat_entries(), Some((3, ""))), p).unwrap();
        assert!(im.datasets().is_empty());
    }

    #[test]
    fn every_truncated_dat_prefix_is_rejected() {
        let p = Path::new("t.dat");
        let full = dat(&dat_entries(), Some((100, "calib")));
        let no_trailer = dat(&dat_entries(), None).len();
        // Prefixes that end exactly after the entries or after the chunk count are valid files.
        let valid = [no_trailer, no_trailer + 4, no_trailer + 8, full.len()];
        for n in 0..=full.len() {
            let r = Imatrix::from_dat_bytes(&full[..n], p);
            if valid.contains(&n) && n != no_trailer + 8 {
                assert!(r.is_ok(), "prefix {n}: {r:?}");
            } else {
                assert!(r.is_err(), "prefix {n} accepted");
            }
        }
    }

    fn dat_err(bytes: &[u8]) -> String {
        Imatrix::from_dat_bytes(bytes, Path::new("m.dat"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn malformed_dat_is_rejected() {
        assert!(dat_err(&0i32.to_le_bytes()).contains("entry count"));
        assert!(dat_err(&(-5i32).to_le_bytes()).contains("entry count"));
        let mut huge = dat(&dat_entries(), None);
        huge[..4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(dat_err(&huge).contains("truncated: entry count"));
        // Value count far beyond the file.
        let mut b = dat(&[("w", 1, &[1.0])], None);
        let nval_at = 4 + 4 + 1 + 4;
        b[nval_at..nval_at + 4].copy_from_slice(&(1i32 << 30).to_le_bytes());
        let m = dat_err(&b);
        assert!(m.contains("entry 'w' values"), "{m}");
        b[nval_at..nval_at + 4].copy_from_slice(&0i32.to_le_bytes());
        assert!(dat_err(&b).contains("value count"));
        // Name length beyond the file, zero, negative.
        for len in [1000i32, 0, -1] {
            let mut b = dat(&[("w", 1, &[1.0])], None);
            b[4..8].copy_from_slice(&len.to_le_bytes());
            assert!(dat_err(&b).contains("entry 0 name"), "len {len}");
        }
        assert!(dat_err(&dat(&[("w", -2, &[1.0])], None)).contains("ncall"));
        assert!(dat_err(&dat(&[("w", 1, &[f32::INFINITY])], None)).contains("entry 'w' value 0"));
        assert!(dat_err(&dat(&[("w", 1, &[1.0]), ("w", 1, &[2.0])], None)).contains("duplicate"));
        let mut trailing = dat(&dat_entries(), Some((1, "d")));
        trailing.push(0);
        assert!(dat_err(&trailing).contains("unexpected bytes"));
        assert!(dat_err(&dat(&dat_entries(), Some((-1, "d")))).contains("chunk count"));
        let mut bad_utf8 = dat(&[("ab", 1, &[1.0])], None);
        bad_utf8[8] = 0xff;
        assert!(dat_err(&bad_utf8).contains("UTF-8"));
    }

    #[test]
    fn load_reports_missing_and_bad_gguf() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.dat");
        assert!(matches!(
            Imatrix::load(&missing),
            Err(ImatrixError::Io { .. })
        ));
        let bad = dir.path().join("broken.gguf");
        std::fs::write(&bad, b"GGUF\x03\x00\x00\x00").unwrap();
        let err = Imatrix::load(&bad).unwrap_err();
        assert!(
            matches!(err, ImatrixError::Gguf(GgufError::Truncated { .. })),
            "{err}"
        );
        // Files shorter than the magic are treated as legacy and fail there.
        let tiny = dir.path().join("tiny.dat");
        std::fs::write(&tiny, b"GG").unwrap();
        assert!(matches!(
            Imatrix::load(&tiny),
            Err(ImatrixError::Truncated { .. })
        ));
    }
}

//! A downloaded Hugging Face model (safetensors weights, `config.json`, `tokenizer.json`,
//! `tokenizer_config.json`) as a source: GGUF names, llama.cpp layouts and GGUF metadata, with
//! the weights read zero-copy from the memory-mapped shards.

pub mod arch;
pub mod spm;
pub mod tokenizer;

use super::safetensors::{Dtype, SafetensorsError, SafetensorsSet};
use super::{SourceError, SourceTensor, TensorSource};
use crate::gguf::MetaValue;
use arch::{Arch, HParams, Layout};
use quantease_formats::GgmlType;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why a Hugging Face model directory could not be turned into a GGUF source.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// A file could not be read.
    #[error("{}: I/O error: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON (or not an object).
    #[error("{}: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A field is missing or has the wrong type or value.
    #[error("{}: field '{field}': {message}", path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// `config.json` names no architecture this converter knows.
    #[error("{}: architecture '{arch}' is not supported (supported: {known})", path.display())]
    UnknownArchitecture {
        /// `config.json`.
        path: PathBuf,
        /// The `architectures` entries.
        arch: String,
        /// What is supported.
        known: String,
    },
    /// A tensor name the architecture does not have.
    #[error("{}: tensor '{tensor}' is not part of a {arch} model (or its layer is beyond num_hidden_layers)", path.display())]
    UnknownTensor {
        /// The shard holding it.
        path: PathBuf,
        /// Its name.
        tensor: String,
        /// The HF architecture.
        arch: String,
    },
    /// A tensor's element type cannot be converted.
    #[error("{}: tensor '{tensor}': dtype {dtype} is not supported (F32, F16, BF16 are)", path.display())]
    UnsupportedDtype {
        /// The shard holding it.
        path: PathBuf,
        /// Its name.
        tensor: String,
        /// Its dtype.
        dtype: Dtype,
    },
    /// A tensor's shape does not fit the model.
    #[error("{}: tensor '{tensor}': {message}", path.display())]
    Shape {
        /// The shard holding it.
        path: PathBuf,
        /// Its name.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// Two HF tensors map to the same GGUF name.
    #[error("{}: tensors '{first}' and '{second}' both map to '{gguf}'", path.display())]
    DuplicateTarget {
        /// The shard holding the second.
        path: PathBuf,
        /// First HF name.
        first: String,
        /// Second HF name.
        second: String,
        /// The GGUF name.
        gguf: String,
    },
    /// A sentencepiece `tokenizer.model` is malformed or of a kind llama.cpp cannot use.
    #[error("{}: field '{field}' (byte {offset}): {message}", path.display())]
    Protobuf {
        /// `tokenizer.model`.
        path: PathBuf,
        /// The protobuf field (`pieces[7].score`, `trainer_spec.model_type`, …).
        field: String,
        /// Byte offset in the file where reading failed.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// The BPE pre-tokenizer is not one llama.cpp has a name for.
    #[error("{}: pre_tokenizer {summary} is not recognised; llama.cpp needs a known pre-tokenizer name (recognised: {known})", path.display())]
    UnknownPreTokenizer {
        /// `tokenizer.json`.
        path: PathBuf,
        /// A short description of what was found.
        summary: String,
        /// The recognised layouts.
        known: String,
    },
}

/// A parsed JSON object file with typed, error-naming accessors.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file.
    pub path: PathBuf,
    /// Its top-level object.
    pub json: serde_json::Map<String, Value>,
}

impl Config {
    /// Read a JSON file whose top level is an object.
    pub fn load(path: &Path) -> Result<Config, HfError> {
        let bytes = std::fs::read(path).map_err(|source| HfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes, path)
    }

    /// Parse JSON bytes whose top level is an object.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Config, HfError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| HfError::Json {
            path: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })?;
        match v {
            Value::Object(json) => Ok(Config {
                path: path.to_path_buf(),
                json,
            }),
            _ => Err(HfError::Json {
                path: path.to_path_buf(),
                message: "top level is not a JSON object".into(),
            }),
        }
    }

    /// An error about `field` of this file.
    pub fn field_err(&self, field: &str, message: String) -> HfError {
        HfError::Field {
            path: self.path.clone(),
            field: field.to_string(),
            message,
        }
    }

    /// An optional non-negative integer (null counts as absent).
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, HfError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.field_err(key, format!("{v} is not a non-negative integer"))),
        }
    }

    /// A required non-negative integer.
    pub fn req_u64(&self, key: &str) -> Result<u64, HfError> {
        self.opt_u64(key)?
            .ok_or_else(|| self.field_err(key, "missing".into()))
    }

    /// An optional finite number.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, HfError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.field_err(key, format!("{v} is not a finite number"))),
        }
    }

    /// A required finite number.
    pub fn req_f64(&self, key: &str) -> Result<f64, HfError> {
        self.opt_f64(key)?
            .ok_or_else(|| self.field_err(key, "missing".into()))
    }

    /// An optional string.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, HfError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.field_err(key, format!("{v} is not a string"))),
        }
    }

    /// A list of strings (absent reads as empty).
    pub fn str_list(&self, key: &str) -> Result<Vec<String>, HfError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.field_err(key, "entries must be strings".into())),
            Some(v) => Err(self.field_err(key, format!("{v} is not a list"))),
        }
    }
}

/// Where a tensor's values come from.
enum Backing {
    /// Stored in a shard: entry index in the set, and how to reorder rows.
    Stored {
        entry: usize,
        dtype: Dtype,
        layout: Layout,
    },
    /// Computed at open (e.g. Llama 3 `rope_freqs.weight`), little-endian F32 bytes.
    Computed(Vec<u8>),
}

/// A Hugging Face model as a [`TensorSource`].
pub struct HfSource {
    path: PathBuf,
    set: SafetensorsSet,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<SourceTensor>,
    backing: Vec<Backing>,
    /// The architecture.
    pub arch: Arch,
}

impl From<SafetensorsError> for SourceError {
    fn from(e: SafetensorsError) -> Self {
        SourceError::Safetensors(e)
    }
}

impl From<HfError> for SourceError {
    fn from(e: HfError) -> Self {
        SourceError::Hf(e)
    }
}

/// Whether `path` looks like Hugging Face safetensors input (a directory, a `.safetensors`
/// file or a `*.safetensors.index.json`) rather than a GGUF file.
pub fn is_hf_input(path: &Path) -> bool {
    let s = path.to_string_lossy();
    path.is_dir() || s.ends_with(".safetensors") || s.ends_with(".index.json")
}

impl HfSource {
    /// Open the weights at `weights` (see [`SafetensorsSet::open`]) with `config.json` and the
    /// tokenizer files from `config` (a directory, or a `config.json` whose directory holds the
    /// tokenizer files), defaulting to the weights' directory.
    pub fn open(weights: &Path, config: Option<&Path>) -> Result<HfSource, SourceError> {
        let weights_dir = if weights.is_dir() {
            weights.to_path_buf()
        } else {
            weights.parent().unwrap_or(Path::new(".")).to_path_buf()
        };
        let (config_file, meta_dir) = match config {
            Some(c) if c.is_dir() => (c.join("config.json"), c.to_path_buf()),
            Some(c) => (
                c.to_path_buf(),
                c.parent().unwrap_or(Path::new(".")).to_path_buf(),
            ),
            None => (weights_dir.join("config.json"), weights_dir.clone()),
        };
        let cfg = Config::load(&config_file)?;
        let arch = Arch::from_config(&cfg)?;
        let (hp, hp_md) = arch::hparams(&cfg, &arch)?;
        let set = SafetensorsSet::open(weights)?;

        let mut metadata = vec![
            (
                "general.architecture".to_string(),
                MetaValue::string(arch.gguf),
            ),
            ("general.type".to_string(), MetaValue::string("model")),
        ];
        let name = meta_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        metadata.push(("general.name".to_string(), MetaValue::string(&name)));
        metadata.extend(hp_md);
        metadata.extend(tokenizer::tokenizer_metadata(&meta_dir, &cfg, &arch)?);

        let (tensors, backing) = map_tensors(&set, &arch, &hp, &cfg)?;
        // llama.cpp refuses a model whose embedding rows differ from the vocabulary size, and
        // whose matrices do not have the configured width: catch both here, naming the tensor.
        let n_tokens = metadata
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.tokens")
            .and_then(|(_, v)| v.as_array())
            .map(|a| a.len() as u64);
        for (t, b) in tensors.iter().zip(&backing) {
            let rows = t.dims.get(1).copied();
            let problem = match t.name.as_str() {
                "token_embd.weight" | "output.weight" if rows != n_tokens => Some(format!(
                    "{} rows but the vocabulary has {} tokens",
                    rows.unwrap_or(1),
                    n_tokens.unwrap_or(0)
                )),
                "token_embd.weight" | "output.weight" | "output_norm.weight"
                    if t.dims[0] != hp.n_embd =>
                {
                    Some(format!(
                        "width {} but hidden_size is {}",
                        t.dims[0], hp.n_embd
                    ))
                }
                _ => None,
            };
            if let Some(message) = problem {
                let path = match b {
                    Backing::Stored { entry, .. } => {
                        set.file_path(&set.entries()[*entry]).to_path_buf()
                    }
                    Backing::Computed(_) => cfg.path.clone(),
                };
                return Err(HfError::Shape {
                    path,
                    tensor: t.name.clone(),
                    message,
                }
                .into());
            }
        }
        Ok(HfSource {
            path: weights.to_path_buf(),
            set,
            metadata,
            tensors,
            backing,
            arch,
        })
    }
}

/// Map every stored tensor, check shapes, and order them like llama.cpp's converter output:
/// embeddings, then layer by layer, then the final norm and output.
fn map_tensors(
    set: &SafetensorsSet,
    arch: &Arch,
    hp: &HParams,
    cfg: &Config,
) -> Result<(Vec<SourceTensor>, Vec<Backing>), HfError> {
    struct Item {
        key: (u8, u64, String),
        tensor: SourceTensor,
        backing: Backing,
        hf: String,
    }
    let mut items: Vec<Item> = Vec::new();
    for (ei, e) in set.entries().iter().enumerate() {
        let name = &e.info.name;
        let path = set.file_path(e).to_path_buf();
        let Some(mapped) = arch::map_tensor(name, arch, hp) else {
            return Err(HfError::UnknownTensor {
                path,
                tensor: name.clone(),
                arch: arch.hf.into(),
            });
        };
        let Some((gguf, layout)) = mapped else {
            continue;
        };
        let ty = match e.info.dtype {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            d => {
                return Err(HfError::UnsupportedDtype {
                    path,
                    tensor: name.clone(),
                    dtype: d,
                })
            }
        };
        let shape_err = |message: String| HfError::Shape {
            path: path.clone(),
            tensor: name.clone(),
            message,
        };
        let shape = &e.info.shape;
        if shape.is_empty() || shape.len() > 2 || shape.contains(&0) {
            return Err(shape_err(format!(
                "shape {shape:?}: expected a non-empty vector or matrix"
            )));
        }
        let dims: Vec<u64> = shape.iter().rev().copied().collect();
        if let Layout::RotaryPermute { heads } = layout {
            let rows = shape[0];
            if rows % (2 * heads) != 0 {
                return Err(shape_err(format!(
                    "{rows} rows do not split into {heads} heads of an even size"
                )));
            }
        }
        // llama.cpp keeps vectors (norms, biases) in F32.
        let ty = if dims.len() == 1 { GgmlType::F32 } else { ty };
        let key = if let Some(rest) = gguf.strip_prefix("blk.") {
            let layer: u64 = rest
                .split('.')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (1, layer, name.clone())
        } else if gguf == "token_embd.weight" {
            (0, 0, name.clone())
        } else {
            (2, 0, name.clone())
        };
        items.push(Item {
            key,
            tensor: SourceTensor {
                name: gguf,
                dims,
                ty,
            },
            backing: Backing::Stored {
                entry: ei,
                dtype: e.info.dtype,
                layout,
            },
            hf: name.clone(),
        });
    }
    if let Some(factors) = arch::llama3_rope_factors(cfg, hp)? {
        let bytes = factors.iter().flat_map(|f| f.to_le_bytes()).collect();
        items.push(Item {
            key: (0, 1, String::new()),
            tensor: SourceTensor {
                name: "rope_freqs.weight".into(),
                dims: vec![factors.len() as u64],
                ty: GgmlType::F32,
            },
            backing: Backing::Computed(bytes),
            hf: "rope_scaling".into(),
        });
    }
    items.sort_by(|a, b| a.key.cmp(&b.key));
    let mut by_gguf: Vec<usize> = (0..items.len()).collect();
    by_gguf.sort_by(|&a, &b| items[a].tensor.name.cmp(&items[b].tensor.name));
    for w in by_gguf.windows(2) {
        let (a, b) = (&items[w[0]], &items[w[1]]);
        if a.tensor.name == b.tensor.name {
            return Err(HfError::DuplicateTarget {
                path: cfg.path.clone(),
                first: a.hf.clone(),
                second: b.hf.clone(),
                gguf: a.tensor.name.clone(),
            });
        }
    }
    if !items.iter().any(|i| i.tensor.name == "token_embd.weight") {
        return Err(HfError::UnknownTensor {
            path: cfg.path.clone(),
            tensor: "model.embed_tokens.weight (missing)".into(),
            arch: arch.hf.into(),
        });
    }
    Ok(items.into_iter().map(|i| (i.tensor, i.backing)).unzip())
}

fn decode(dtype: Dtype, src: &[u8], dst: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        Dtype::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
            }
        }
        Dtype::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f32::from_bits((u16::from_le_bytes([s[0], s[1]]) as u32) << 16);
            }
        }
        // Rejected when the source was opened.
        _ => dst.fill(f32::NAN),
    }
}

impl TensorSource for HfSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    fn raw(&self, index: usize) -> Option<&[u8]> {
        let t = &self.tensors[index];
        match &self.backing[index] {
            Backing::Computed(b) => Some(b),
            Backing::Stored {
                entry,
                dtype,
                layout,
            } => {
                let same_type = matches!(
                    (dtype, t.ty),
                    (Dtype::F32, GgmlType::F32)
                        | (Dtype::F16, GgmlType::F16)
                        | (Dtype::BF16, GgmlType::BF16)
                );
                (same_type && *layout == Layout::Plain)
                    .then(|| self.set.data(&self.set.entries()[*entry]))
            }
        }
    }

    fn read_rows(
        &self,
        index: usize,
        first_row: usize,
        out: &mut [f32],
    ) -> Result<(), SourceError> {
        let t = &self.tensors[index];
        let row_len = t.row_len();
        let n_rows = t.n_rows();
        let n = out.len() / row_len.max(1);
        if !out.len().is_multiple_of(row_len.max(1)) || first_row + n > n_rows {
            return Err(SourceError::RowRange {
                path: self.path.clone(),
                tensor: t.name.clone(),
                first: first_row,
                end: first_row + n,
                n_rows,
            });
        }
        match &self.backing[index] {
            Backing::Computed(b) => {
                let start = first_row * row_len * 4;
                decode(Dtype::F32, &b[start..start + out.len() * 4], out);
            }
            Backing::Stored {
                entry,
                dtype,
                layout,
            } => {
                let data = self.set.data(&self.set.entries()[*entry]);
                let es = dtype.size() as usize;
                match (*layout, t.dims.len()) {
                    (Layout::Plain, _) => {
                        let start = first_row * row_len * es;
                        decode(*dtype, &data[start..start + out.len() * es], out);
                    }
                    (Layout::RotaryPermute { heads }, 1) => {
                        // A bias: one row whose elements are permuted.
                        for (r, d) in out.iter_mut().enumerate() {
                            let s = arch::rotary_source_row(r, row_len, heads as usize);
                            decode(*dtype, &data[s * es..(s + 1) * es], std::slice::from_mut(d));
                        }
                    }
                    (Layout::RotaryPermute { heads }, _) => {
                        for (i, dst) in out.chunks_exact_mut(row_len).enumerate() {
                            let s = arch::rotary_source_row(first_row + i, n_rows, heads as usize);
                            let rb = row_len * es;
                            decode(*dtype, &data[s * rb..(s + 1) * rb], dst);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn release(&self, index: usize) {
        if let Backing::Stored { entry, .. } = &self.backing[index] {
            self.set.release(&self.set.entries()[*entry]);
        }
    }
}

#[cfg(test)]
mod tests;

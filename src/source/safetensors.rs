//! Safetensors files: a validating header parser and memory-mapped, zero-copy tensor access,
//! for a single file or a set of shards listed by a `*.safetensors.index.json`.
//!
//! Layout (the format's published description): an 8-byte little-endian header length `N`, `N`
//! bytes of UTF-8 JSON mapping each tensor name to `{"dtype", "shape", "data_offsets": [begin,
//! end]}` (offsets relative to the first byte after the header) plus an optional `__metadata__`
//! object of strings, then the data. The parser checks everything the header claims against the
//! file before anything is read: the header length against a cap and the file size, each tensor's
//! byte count against dtype × shape, offsets inside the data section, no two tensors overlapping,
//! no duplicate names.

use memmap2::Mmap;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Largest header accepted (the reference implementation uses the same 100 MB limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;
/// Largest number of dimensions accepted for a tensor.
pub const MAX_DIMS: usize = 8;

/// Why a safetensors file (or set of shards) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// The operating system refused an operation on a file.
    #[error("{}: I/O error: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is too short to hold the 8-byte header length.
    #[error("{}: truncated: {len} bytes, too short for the 8-byte header length", path.display())]
    TooShort {
        /// The file.
        path: PathBuf,
        /// File size.
        len: u64,
    },
    /// The header length is larger than the cap or than the file.
    #[error("{}: header length {header_len} {why} (file has {file_len} bytes)", path.display())]
    HeaderLength {
        /// The file.
        path: PathBuf,
        /// Declared header length.
        header_len: u64,
        /// File size.
        file_len: u64,
        /// Which limit it breaks.
        why: &'static str,
    },
    /// The header is not a JSON object of the expected shape.
    #[error("{}: header: {field}: {message}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// The field (`tensor 'x' dtype`, `JSON`, …).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor's byte range disagrees with its dtype and shape.
    #[error("{}: tensor '{tensor}': data_offsets give {got} bytes but dtype {dtype} × shape {shape:?} needs {expected}", path.display())]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Its dtype.
        dtype: String,
        /// Its shape.
        shape: Vec<u64>,
        /// Bytes the offsets span.
        got: u64,
        /// Bytes dtype × shape needs.
        expected: u64,
    },
    /// A tensor's data lies (partly) outside the file.
    #[error("{}: tensor '{tensor}': data_offsets [{begin}, {end}] go past the end of the data section ({data_len} bytes)", path.display())]
    OutOfBounds {
        /// The file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Start offset.
        begin: u64,
        /// End offset.
        end: u64,
        /// Bytes after the header.
        data_len: u64,
    },
    /// Two tensors share bytes.
    #[error("{}: tensors '{first}' and '{second}' overlap (data_offsets [{first_begin}, {first_end}] and [{second_begin}, {second_end}])", path.display())]
    Overlap {
        /// The file.
        path: PathBuf,
        /// One tensor.
        first: String,
        /// Its start.
        first_begin: u64,
        /// Its end.
        first_end: u64,
        /// The other tensor.
        second: String,
        /// Its start.
        second_begin: u64,
        /// Its end.
        second_end: u64,
    },
    /// A name appears twice (in one header or in two shards).
    #[error("{}: tensor '{tensor}' appears twice{}", path.display(), other.as_ref().map(|o| format!(" (also in {})", o.display())).unwrap_or_default())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// The other file holding it, if it is another shard.
        other: Option<PathBuf>,
    },
    /// The shard index is malformed or names a file that cannot be used.
    #[error("{}: {message}", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A shard the index names does not exist.
    #[error("{}: shard '{shard}' (holding tensor '{tensor}') is missing", path.display())]
    MissingShard {
        /// The index file.
        path: PathBuf,
        /// The shard's file name.
        shard: String,
        /// A tensor the index places in it.
        tensor: String,
    },
    /// The index places a tensor in a shard that does not hold it.
    #[error("{}: the index places tensor '{tensor}' in '{shard}', which does not contain it", path.display())]
    NotInShard {
        /// The index file.
        path: PathBuf,
        /// The shard's file name.
        shard: String,
        /// Tensor name.
        tensor: String,
    },
    /// No safetensors file was found.
    #[error("{}: no *.safetensors file found", path.display())]
    NoFiles {
        /// The directory searched.
        path: PathBuf,
    },
}

/// Element types of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// Boolean, one byte.
    Bool,
    /// Unsigned 8-bit.
    U8,
    /// Signed 8-bit.
    I8,
    /// 8-bit float E4M3.
    F8E4M3,
    /// 8-bit float E5M2.
    F8E5M2,
    /// Signed 16-bit.
    I16,
    /// Unsigned 16-bit.
    U16,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit.
    I32,
    /// Unsigned 32-bit.
    U32,
    /// IEEE single.
    F32,
    /// IEEE double.
    F64,
    /// Signed 64-bit.
    I64,
    /// Unsigned 64-bit.
    U64,
}

impl Dtype {
    /// Parse the header's dtype string.
    pub fn from_name(s: &str) -> Option<Dtype> {
        use Dtype::*;
        Some(match s {
            "BOOL" => Bool,
            "U8" => U8,
            "I8" => I8,
            "F8_E4M3" => F8E4M3,
            "F8_E5M2" => F8E5M2,
            "I16" => I16,
            "U16" => U16,
            "F16" => F16,
            "BF16" => BF16,
            "I32" => I32,
            "U32" => U32,
            "F32" => F32,
            "F64" => F64,
            "I64" => I64,
            "U64" => U64,
            _ => return None,
        })
    }

    /// The header's name for this dtype.
    pub fn name(self) -> &'static str {
        use Dtype::*;
        match self {
            Bool => "BOOL",
            U8 => "U8",
            I8 => "I8",
            F8E4M3 => "F8_E4M3",
            F8E5M2 => "F8_E5M2",
            I16 => "I16",
            U16 => "U16",
            F16 => "F16",
            BF16 => "BF16",
            I32 => "I32",
            U32 => "U32",
            F32 => "F32",
            F64 => "F64",
            I64 => "I64",
            U64 => "U64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        use Dtype::*;
        match self {
            Bool | U8 | I8 | F8E4M3 | F8E5M2 => 1,
            I16 | U16 | F16 | BF16 => 2,
            I32 | U32 | F32 => 4,
            F64 | I64 | U64 => 8,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor as a header describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct StTensorInfo {
    /// Name as stored (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost dimension first (row-major).
    pub shape: Vec<u64>,
    /// Start of the data, relative to the data section.
    pub begin: u64,
    /// End of the data (exclusive), relative to the data section.
    pub end: u64,
}

/// A parsed and validated header.
#[derive(Clone, Debug, PartialEq)]
pub struct StHeader {
    /// Tensors in header order.
    pub tensors: Vec<StTensorInfo>,
    /// The `__metadata__` strings, if any.
    pub metadata: Vec<(String, String)>,
    /// Absolute file offset of the data section (8 + header length).
    pub data_start: u64,
}

/// JSON object entries in file order, keeping duplicates so they can be reported.
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = map.next_entry::<String, Value>()? {
                    v.push((k, val));
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

impl StHeader {
    /// Parse and validate the header of a safetensors file whose bytes are `bytes` (the whole
    /// file, or at least its header when `file_len` is given separately for bounds checks).
    pub fn parse(bytes: &[u8], file_len: u64, path: &Path) -> Result<StHeader, SafetensorsError> {
        let p = || path.to_path_buf();
        let Some(len_bytes) = bytes.get(..8).filter(|_| file_len >= 8) else {
            return Err(SafetensorsError::TooShort {
                path: p(),
                len: file_len,
            });
        };
        let header_len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let fail = |why| SafetensorsError::HeaderLength {
            path: p(),
            header_len,
            file_len,
            why,
        };
        if header_len > MAX_HEADER_LEN {
            return Err(fail("exceeds the 100 MB limit"));
        }
        if header_len > file_len - 8 {
            return Err(fail("runs past the end of the file"));
        }
        let Some(json) = bytes.get(8..8 + header_len as usize) else {
            return Err(fail("runs past the end of the bytes given"));
        };
        let data_start = 8 + header_len;
        let data_len = file_len - data_start;
        let header_err = |field: String, message: String| SafetensorsError::Header {
            path: p(),
            field,
            message,
        };
        let entries: Entries =
            serde_json::from_slice(json).map_err(|e| header_err("JSON".into(), e.to_string()))?;

        let mut tensors = Vec::with_capacity(entries.0.len());
        let mut metadata = Vec::new();
        let mut seen_meta = false;
        for (name, value) in entries.0 {
            if name == "__metadata__" {
                if seen_meta {
                    return Err(SafetensorsError::Duplicate {
                        path: p(),
                        tensor: name,
                        other: None,
                    });
                }
                seen_meta = true;
                let Value::Object(m) = value else {
                    return Err(header_err("__metadata__".into(), "is not an object".into()));
                };
                for (k, v) in m {
                    let Value::String(s) = v else {
                        return Err(header_err(
                            format!("__metadata__ '{k}'"),
                            "is not a string".into(),
                        ));
                    };
                    metadata.push((k, s));
                }
                continue;
            }
            let field = |f: &str| format!("tensor '{name}' {f}");
            let Value::Object(obj) = value else {
                return Err(header_err(field("entry"), "is not an object".into()));
            };
            if let Some(k) = obj
                .keys()
                .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
            {
                return Err(header_err(field("entry"), format!("unexpected key '{k}'")));
            }
            let dtype_name = obj
                .get("dtype")
                .and_then(Value::as_str)
                .ok_or_else(|| header_err(field("dtype"), "missing or not a string".into()))?;
            let dtype = Dtype::from_name(dtype_name).ok_or_else(|| {
                header_err(field("dtype"), format!("unknown dtype '{dtype_name}'"))
            })?;
            let shape_v = obj
                .get("shape")
                .and_then(Value::as_array)
                .ok_or_else(|| header_err(field("shape"), "missing or not an array".into()))?;
            if shape_v.len() > MAX_DIMS {
                return Err(header_err(
                    field("shape"),
                    format!("{} dimensions (at most {MAX_DIMS})", shape_v.len()),
                ));
            }
            let shape = shape_v
                .iter()
                .map(Value::as_u64)
                .collect::<Option<Vec<u64>>>()
                .ok_or_else(|| {
                    header_err(
                        field("shape"),
                        "entries must be non-negative integers".into(),
                    )
                })?;
            let offs = obj
                .get("data_offsets")
                .and_then(Value::as_array)
                .filter(|a| a.len() == 2)
                .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
                .ok_or_else(|| {
                    header_err(
                        field("data_offsets"),
                        "must be two non-negative integers".into(),
                    )
                })?;
            let (begin, end) = offs;
            if end < begin {
                return Err(header_err(
                    field("data_offsets"),
                    format!("end {end} is before begin {begin}"),
                ));
            }
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| {
                    header_err(field("shape"), format!("{shape:?} overflows 64 bits"))
                })?;
            if end - begin != expected {
                return Err(SafetensorsError::SizeMismatch {
                    path: p(),
                    tensor: name,
                    dtype: dtype.name().into(),
                    shape,
                    got: end - begin,
                    expected,
                });
            }
            if end > data_len {
                return Err(SafetensorsError::OutOfBounds {
                    path: p(),
                    tensor: name,
                    begin,
                    end,
                    data_len,
                });
            }
            tensors.push(StTensorInfo {
                name,
                dtype,
                shape,
                begin,
                end,
            });
        }

        // Names unique, byte ranges disjoint (empty tensors occupy no bytes).
        let mut by_name: Vec<usize> = (0..tensors.len()).collect();
        by_name.sort_by(|&a, &b| tensors[a].name.cmp(&tensors[b].name));
        for w in by_name.windows(2) {
            if tensors[w[0]].name == tensors[w[1]].name {
                return Err(SafetensorsError::Duplicate {
                    path: p(),
                    tensor: tensors[w[0]].name.clone(),
                    other: None,
                });
            }
        }
        let mut by_offset: Vec<usize> = (0..tensors.len())
            .filter(|&i| tensors[i].end > tensors[i].begin)
            .collect();
        by_offset.sort_by_key(|&i| (tensors[i].begin, tensors[i].end));
        for w in by_offset.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            if b.begin < a.end {
                return Err(SafetensorsError::Overlap {
                    path: p(),
                    first: a.name.clone(),
                    first_begin: a.begin,
                    first_end: a.end,
                    second: b.name.clone(),
                    second_begin: b.begin,
                    second_end: b.end,
                });
            }
        }
        Ok(StHeader {
            tensors,
            metadata,
            data_start,
        })
    }
}

/// One memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Option<Mmap>,
    header: StHeader,
}

impl SafetensorsFile {
    /// Map and validate a file.
    pub fn open(path: &Path) -> Result<SafetensorsFile, SafetensorsError> {
        let io = |source| SafetensorsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        // An empty file cannot be mapped; it is rejected by the parser as too short.
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only; like every mmap-based reader we assume the file is not
            // truncated by another process while we hold it.
            Some(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let header = StHeader::parse(bytes, len, path)?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map,
            header,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated header.
    pub fn header(&self) -> &StHeader {
        &self.header
    }

    /// The bytes of a tensor of this file's header (zero-copy).
    pub fn data(&self, t: &StTensorInfo) -> &[u8] {
        let bytes: &[u8] = self.map.as_deref().unwrap_or(&[]);
        // Bounds were validated against the file length at open.
        let start = (self.header.data_start + t.begin) as usize;
        let end = (self.header.data_start + t.end) as usize;
        &bytes[start..end]
    }

    /// Drop the resident pages that lie entirely inside a tensor's data.
    pub fn release(&self, t: &StTensorInfo) {
        let Some(map) = self.map.as_ref() else { return };
        const PAGE: u64 = 4096;
        let start = self.header.data_start + t.begin;
        let first = start.div_ceil(PAGE) * PAGE;
        let end = (self.header.data_start + t.end) / PAGE * PAGE;
        #[cfg(unix)]
        if end > first && end <= map.len() as u64 {
            // SAFETY: read-only, file-backed shared mapping; MADV_DONTNEED drops clean pages,
            // which are re-read from the file if touched again.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    first as usize,
                    (end - first) as usize,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = (map, first, end);
    }
}

/// A located tensor of a [`SafetensorsSet`].
#[derive(Clone, Debug)]
pub struct StEntry {
    /// Which file of the set.
    pub file: usize,
    /// The tensor's description.
    pub info: StTensorInfo,
}

/// A model's safetensors files: one file, or the shards an index lists.
pub struct SafetensorsSet {
    files: Vec<SafetensorsFile>,
    entries: Vec<StEntry>,
}

impl SafetensorsSet {
    /// Open `path`: a `.safetensors` file, a `*.safetensors.index.json`, or a directory holding
    /// `model.safetensors.index.json`, `model.safetensors`, or otherwise all its `*.safetensors`.
    pub fn open(path: &Path) -> Result<SafetensorsSet, SafetensorsError> {
        if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            if index.is_file() {
                return Self::open_index(&index);
            }
            let single = path.join("model.safetensors");
            if single.is_file() {
                return Self::open_files(&[single]);
            }
            let rd = std::fs::read_dir(path).map_err(|source| SafetensorsError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let mut files = Vec::new();
            for e in rd {
                let e = e.map_err(|source| SafetensorsError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                let p = e.path();
                if p.extension().is_some_and(|x| x == "safetensors") && p.is_file() {
                    files.push(p);
                }
            }
            if files.is_empty() {
                return Err(SafetensorsError::NoFiles {
                    path: path.to_path_buf(),
                });
            }
            files.sort();
            return Self::open_files(&files);
        }
        if path.to_string_lossy().ends_with(".index.json") {
            return Self::open_index(path);
        }
        Self::open_files(&[path.to_path_buf()])
    }

    /// Open a list of files; every tensor of every file is part of the set.
    pub fn open_files(paths: &[PathBuf]) -> Result<SafetensorsSet, SafetensorsError> {
        let mut files = Vec::with_capacity(paths.len());
        for p in paths {
            files.push(SafetensorsFile::open(p)?);
        }
        let mut entries = Vec::new();
        for (i, f) in files.iter().enumerate() {
            entries.extend(f.header.tensors.iter().map(|t| StEntry {
                file: i,
                info: t.clone(),
            }));
        }
        let set = SafetensorsSet { files, entries };
        set.check_unique()?;
        Ok(set)
    }

    fn check_unique(&self) -> Result<(), SafetensorsError> {
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        order.sort_by(|&a, &b| self.entries[a].info.name.cmp(&self.entries[b].info.name));
        for w in order.windows(2) {
            let (a, b) = (&self.entries[w[0]], &self.entries[w[1]]);
            if a.info.name == b.info.name {
                return Err(SafetensorsError::Duplicate {
                    path: self.files[b.file].path.clone(),
                    tensor: b.info.name.clone(),
                    other: Some(self.files[a.file].path.clone()),
                });
            }
        }
        Ok(())
    }

    /// Open the shards a `*.safetensors.index.json` lists (`weight_map`: tensor → file name in the
    /// index's directory), checking that each tensor is where the index says.
    pub fn open_index(index: &Path) -> Result<SafetensorsSet, SafetensorsError> {
        let ierr = |message: String| SafetensorsError::Index {
            path: index.to_path_buf(),
            message,
        };
        let text = std::fs::read(index).map_err(|source| SafetensorsError::Io {
            path: index.to_path_buf(),
            source,
        })?;
        let v: Value =
            serde_json::from_slice(&text).map_err(|e| ierr(format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| ierr("'weight_map' missing or not an object".into()))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<String> = Vec::new();
        for (tensor, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| ierr(format!("weight_map '{tensor}': file name is not a string")))?;
            let plain = Path::new(file)
                .file_name()
                .is_some_and(|n| n == std::ffi::OsStr::new(file));
            if !plain || file == ".." {
                return Err(ierr(format!(
                    "weight_map '{tensor}': shard '{file}' is not a plain file name"
                )));
            }
            if !shard_names.iter().any(|s| s == file) {
                if !dir.join(file).is_file() {
                    return Err(SafetensorsError::MissingShard {
                        path: index.to_path_buf(),
                        shard: file.to_string(),
                        tensor: tensor.clone(),
                    });
                }
                shard_names.push(file.to_string());
            }
        }
        if shard_names.is_empty() {
            return Err(ierr("'weight_map' is empty".into()));
        }
        shard_names.sort();
        let paths: Vec<PathBuf> = shard_names.iter().map(|s| dir.join(s)).collect();
        let set = Self::open_files(&paths)?;
        for (tensor, file) in map {
            let file = file.as_str().unwrap_or_default();
            let fi = shard_names
                .iter()
                .position(|s| s == file)
                .expect("listed above");
            if !set
                .entries
                .iter()
                .any(|e| e.file == fi && &e.info.name == tensor)
            {
                return Err(SafetensorsError::NotInShard {
                    path: index.to_path_buf(),
                    shard: file.to_string(),
                    tensor: tensor.clone(),
                });
            }
        }
        Ok(set)
    }

    /// Every tensor of the set, file by file in header order.
    pub fn entries(&self) -> &[StEntry] {
        &self.entries
    }

    /// The files of the set.
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// The bytes of an entry (zero-copy).
    pub fn data(&self, e: &StEntry) -> &[u8] {
        self.files[e.file].data(&e.info)
    }

    /// The file an entry lives in.
    pub fn file_path(&self, e: &StEntry) -> &Path {
        &self.files[e.file].path
    }

    /// Drop the resident pages of an entry.
    pub fn release(&self, e: &StEntry) {
        self.files[e.file].release(&e.info)
    }
}

#[cfg(test)]
mod tests;

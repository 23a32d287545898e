//! GGUF reader: validates a whole header against the rules of ggml's loader and gives zero-copy
//! access to tensor data through a memory map.
//!
//! Layout (little-endian): magic `GGUF`, version u32, tensor count u64, metadata count u64,
//! metadata (key string, type u32, value), tensor infos (name string, n_dims u32, ne i64 ×
//! n_dims, type u32, offset u64), padding to the alignment, tensor data. Strings are a u64 byte
//! length followed by the bytes.

use std::collections::HashSet;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use quantease_formats::GgmlType;

use super::error::GgufError;
use super::value::{MetaArray, MetaValue, ValueType};
use super::DEFAULT_ALIGNMENT;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Longest tensor name plus one (`GGML_MAX_NAME`): names must be shorter than this.
pub const MAX_NAME_LEN: usize = 64;
/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Longest string ggml's loader accepts (1 GiB).
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// Most elements in one metadata array ggml's loader accepts (2^30).
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// Metadata key holding the data alignment.
pub const KEY_ALIGNMENT: &str = "general.alignment";

/// Fewest bytes one tensor info can occupy: name length, n_dims, type and offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;
/// Fewest bytes one metadata pair can occupy: key length, a 1-byte key, type, a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name (valid UTF-8, shorter than [`MAX_NAME_LEN`] bytes).
    pub name: String,
    /// Dimensions, `ne[0]` (the row length, contiguous) first, as stored in the file.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Number of elements (product of `dims`).
    pub n_elements: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of `dims[1..]` (1 for a 1-D tensor).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> u64 {
        // Validated at parse time (row length divisible by the block size, no overflow).
        self.ty.row_bytes(self.row_len()).unwrap_or(0)
    }
}

/// A parsed and validated GGUF header.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHeader {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data alignment (`general.alignment`, or [`DEFAULT_ALIGNMENT`]).
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

/// Bounds-checked little-endian reading over a byte slice; every failure names the field.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                field: field(),
                offset: self.pos as u64,
                needed: n,
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, field: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let b = self.take(N as u64, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, field: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array::<4>(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array::<8>(field).map(u64::from_le_bytes)
    }

    fn invalid(&self, field: String, reason: String) -> GgufError {
        GgufError::Invalid {
            path: self.path.to_path_buf(),
            field,
            reason,
        }
    }

    /// A length-prefixed string's bytes.
    fn string(&mut self, field: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let len_field = || format!("{} length", field());
        let start = self.pos;
        let len = self.u64(&len_field)?;
        if len > MAX_STRING_LEN {
            return Err(self.invalid(
                len_field(),
                format!("{len} bytes at byte {start} exceeds the 1 GiB limit"),
            ));
        }
        self.take(len, field)
    }

    /// Check a claimed element count against the limit and the bytes that remain, before
    /// anything is allocated for it.
    fn check_count(
        &self,
        count: u64,
        min_elem_bytes: u64,
        limit: u64,
        field: &dyn Fn() -> String,
    ) -> Result<usize, GgufError> {
        if count > limit {
            return Err(self.invalid(field(), format!("{count} exceeds the limit of {limit}")));
        }
        let fits = self.remaining() / min_elem_bytes.max(1);
        if count > fits {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                field: field(),
                offset: self.pos as u64,
                needed: count.saturating_mul(min_elem_bytes),
            });
        }
        Ok(count as usize)
    }
}

fn fixed<const N: usize, T>(bytes: &[u8], conv: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            conv(a)
        })
        .collect()
}

fn read_scalar(
    cur: &mut Cursor<'_>,
    ty: ValueType,
    field: &dyn Fn() -> String,
) -> Result<MetaValue, GgufError> {
    Ok(match ty {
        ValueType::U8 => MetaValue::U8(cur.array::<1>(field)?[0]),
        ValueType::I8 => MetaValue::I8(i8::from_le_bytes(cur.array(field)?)),
        ValueType::U16 => MetaValue::U16(u16::from_le_bytes(cur.array(field)?)),
        ValueType::I16 => MetaValue::I16(i16::from_le_bytes(cur.array(field)?)),
        ValueType::U32 => MetaValue::U32(u32::from_le_bytes(cur.array(field)?)),
        ValueType::I32 => MetaValue::I32(i32::from_le_bytes(cur.array(field)?)),
        ValueType::F32 => MetaValue::F32(f32::from_le_bytes(cur.array(field)?)),
        ValueType::Bool => MetaValue::Bool(cur.array::<1>(field)?[0] != 0),
        ValueType::String => MetaValue::String(cur.string(field)?.to_vec()),
        ValueType::U64 => MetaValue::U64(u64::from_le_bytes(cur.array(field)?)),
        ValueType::I64 => MetaValue::I64(i64::from_le_bytes(cur.array(field)?)),
        ValueType::F64 => MetaValue::F64(f64::from_le_bytes(cur.array(field)?)),
        ValueType::Array => {
            let elem_field = || format!("{} array element type", field());
            let elem_id = cur.u32(&elem_field)?;
            let elem = match ValueType::from_id(elem_id) {
                Some(ValueType::Array) => {
                    return Err(cur.invalid(elem_field(), "nested arrays are not allowed".into()))
                }
                Some(t) => t,
                None => {
                    return Err(
                        cur.invalid(elem_field(), format!("unknown value type id {elem_id}"))
                    )
                }
            };
            let len_field = || format!("{} array length", field());
            let n = cur.u64(&len_field)?;
            let n = cur.check_count(n, elem.min_size() as u64, MAX_ARRAY_LEN, &len_field)?;
            let arr = if let Some(size) = elem.fixed_size() {
                // check_count guarantees n * size <= remaining.
                let b = cur.take((n * size) as u64, field)?;
                match elem {
                    ValueType::U8 => MetaArray::U8(b.to_vec()),
                    ValueType::I8 => MetaArray::I8(fixed(b, i8::from_le_bytes)),
                    ValueType::U16 => MetaArray::U16(fixed(b, u16::from_le_bytes)),
                    ValueType::I16 => MetaArray::I16(fixed(b, i16::from_le_bytes)),
                    ValueType::U32 => MetaArray::U32(fixed(b, u32::from_le_bytes)),
                    ValueType::I32 => MetaArray::I32(fixed(b, i32::from_le_bytes)),
                    ValueType::F32 => MetaArray::F32(fixed(b, f32::from_le_bytes)),
                    ValueType::Bool => MetaArray::Bool(b.iter().map(|&x| x != 0).collect()),
                    ValueType::U64 => MetaArray::U64(fixed(b, u64::from_le_bytes)),
                    ValueType::I64 => MetaArray::I64(fixed(b, i64::from_le_bytes)),
                    ValueType::F64 => MetaArray::F64(fixed(b, f64::from_le_bytes)),
                    ValueType::String | ValueType::Array => unreachable!("not fixed-size"),
                }
            } else {
                let mut v = Vec::with_capacity(n);
                for j in 0..n {
                    v.push(cur.string(&|| format!("{}[{j}]", field()))?.to_vec());
                }
                MetaArray::String(v)
            };
            MetaValue::Array(arr)
        }
    })
}

fn round_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v / align * align)
}

impl GgufHeader {
    /// Parse and validate a complete GGUF file held in `bytes` (`path` only names it in
    /// errors). Checks everything ggml's loader checks, plus that every tensor's data lies
    /// inside `bytes` and that no two tensors' data overlap. Never panics and never allocates
    /// more than a small multiple of `bytes.len()`, whatever the input.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<GgufHeader, GgufError> {
        let mut cur = Cursor {
            bytes,
            pos: 0,
            path,
        };
        let magic: [u8; 4] = cur.array(&|| "magic".into())?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic {
                path: path.to_path_buf(),
                found: magic,
            });
        }
        let version = cur.u32(&|| "version".into())?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        let n_tensors = cur.u64(&|| "tensor count".into())?;
        let n_kv = cur.u64(&|| "metadata count".into())?;
        // Loose bounds so absurd counts fail up front with a clear message.
        cur.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, u64::MAX, &|| {
            "tensor count".into()
        })?;
        cur.check_count(n_kv, MIN_KV_BYTES, u64::MAX, &|| "metadata count".into())?;

        let mut metadata: Vec<(String, MetaValue)> = Vec::new();
        let mut seen_keys: HashSet<String> = HashSet::new();
        for i in 0..n_kv {
            let key_bytes = cur.string(&|| format!("metadata[{i}] key"))?;
            let key = match std::str::from_utf8(key_bytes) {
                Ok(k) => k.to_owned(),
                Err(e) => {
                    return Err(cur.invalid(format!("metadata[{i}] key"), format!("not UTF-8: {e}")))
                }
            };
            if key.is_empty() {
                return Err(cur.invalid(format!("metadata[{i}] key"), "empty key".into()));
            }
            if !seen_keys.insert(key.clone()) {
                return Err(cur.invalid(format!("metadata[{i}] '{key}'"), "duplicate key".into()));
            }
            let type_field = || format!("metadata[{i}] '{key}' type");
            let type_id = cur.u32(&type_field)?;
            let ty = ValueType::from_id(type_id).ok_or_else(|| {
                cur.invalid(type_field(), format!("unknown value type id {type_id}"))
            })?;
            let value = read_scalar(&mut cur, ty, &|| format!("metadata[{i}] '{key}'"))?;
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().position(|(k, _)| k == KEY_ALIGNMENT) {
            None => DEFAULT_ALIGNMENT,
            Some(i) => {
                let field = format!("metadata[{i}] '{KEY_ALIGNMENT}'");
                match metadata[i].1 {
                    MetaValue::U32(a) if a.is_power_of_two() => u64::from(a),
                    MetaValue::U32(a) => {
                        return Err(cur.invalid(field, format!("{a} is not a power of two")))
                    }
                    ref other => {
                        return Err(cur.invalid(
                            field,
                            format!("must be of type U32, found {}", other.value_type()),
                        ))
                    }
                }
            }
        };

        let mut tensors: Vec<TensorInfo> = Vec::new();
        let mut seen_names: HashSet<String> = HashSet::new();
        for i in 0..n_tensors {
            let name_bytes = cur.string(&|| format!("tensor[{i}] name"))?;
            let name = match std::str::from_utf8(name_bytes) {
                Ok(n) => n.to_owned(),
                Err(e) => {
                    return Err(cur.invalid(format!("tensor[{i}] name"), format!("not UTF-8: {e}")))
                }
            };
            if name.len() >= MAX_NAME_LEN {
                return Err(cur.invalid(
                    format!("tensor[{i}] '{name}' name"),
                    format!("{} bytes, must be < {MAX_NAME_LEN}", name.len()),
                ));
            }
            if !seen_names.insert(name.clone()) {
                return Err(cur.invalid(
                    format!("tensor[{i}] '{name}' name"),
                    "duplicate tensor name".into(),
                ));
            }
            let n_dims = cur.u32(&|| format!("tensor '{name}' n_dims"))?;
            if n_dims == 0 || n_dims as usize > MAX_DIMS {
                return Err(cur.invalid(
                    format!("tensor '{name}' n_dims"),
                    format!("{n_dims} dimensions, must be 1..={MAX_DIMS}"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            // Product of the dimensions with zeros counted as 1: bounding it (not just the true
            // element count, which a zero dimension makes 0) keeps `n_rows` from overflowing.
            let mut extent: u64 = 1;
            for j in 0..n_dims {
                let ne = cur.u64(&|| format!("tensor '{name}' ne[{j}]"))?;
                if ne > i64::MAX as u64 {
                    return Err(cur.invalid(
                        format!("tensor '{name}' ne[{j}]"),
                        format!("{} is negative", ne as i64),
                    ));
                }
                extent = extent
                    .checked_mul(ne.max(1))
                    .filter(|&n| n <= i64::MAX as u64)
                    .ok_or_else(|| {
                        cur.invalid(
                            format!("tensor '{name}' ne[{j}]"),
                            "element count overflows i64".into(),
                        )
                    })?;
                dims.push(ne);
            }
            let n_elements: u64 = dims.iter().product();
            let type_id = cur.u32(&|| format!("tensor '{name}' type"))?;
            let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownType {
                path: path.to_path_buf(),
                tensor: name.clone(),
                id: type_id,
            })?;
            let block = ty.block_size() as u64;
            if !dims[0].is_multiple_of(block) {
                return Err(cur.invalid(
                    format!("tensor '{name}' ne[0]"),
                    format!(
                        "{} is not a multiple of the {ty} block size {block}",
                        dims[0]
                    ),
                ));
            }
            let n_bytes = (n_elements / block)
                .checked_mul(ty.type_size() as u64)
                .ok_or_else(|| {
                    cur.invalid(
                        format!("tensor '{name}' size"),
                        "byte size overflows".into(),
                    )
                })?;
            let offset = cur.u64(&|| format!("tensor '{name}' offset"))?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                n_elements,
                n_bytes,
            });
        }

        let header_end = cur.pos as u64;
        let data_offset = round_up(header_end, alignment)
            .ok_or_else(|| cur.invalid("data section offset".into(), "overflows".into()))?;
        let file_len = bytes.len() as u64;
        if !tensors.is_empty() && data_offset > file_len {
            return Err(GgufError::Truncated {
                path: path.to_path_buf(),
                field: "padding before the data section".into(),
                offset: header_end,
                needed: data_offset - header_end,
            });
        }

        let mut ranges: Vec<(u64, u64, usize)> = Vec::new();
        for (idx, t) in tensors.iter().enumerate() {
            let field = || format!("tensor '{}' offset", t.name);
            if !t.offset.is_multiple_of(alignment) {
                return Err(cur.invalid(
                    field(),
                    format!(
                        "{} is not a multiple of the alignment {alignment}",
                        t.offset
                    ),
                ));
            }
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.n_bytes));
            match (start, end) {
                (Some(s), Some(e)) if e <= file_len => {
                    if t.n_bytes > 0 {
                        ranges.push((s, e, idx));
                    }
                }
                _ => {
                    return Err(GgufError::Truncated {
                        path: path.to_path_buf(),
                        field: format!("tensor '{}' data", t.name),
                        offset: start.unwrap_or(u64::MAX),
                        needed: t.n_bytes,
                    })
                }
            }
        }
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            if b.0 < a.1 {
                return Err(cur.invalid(
                    format!("tensor '{}' offset", tensors[b.2].name),
                    format!(
                        "data [{}, {}) overlaps tensor '{}' at [{}, {})",
                        b.0, b.1, tensors[a.2].name, a.0, a.1
                    ),
                ));
            }
        }

        Ok(GgufHeader {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// True if the tensors are laid out exactly as ggml's writer does it (and as current ggml
    /// loaders require): offsets are the running sum of sizes padded to the alignment, in
    /// tensor-info order. Files that pass [`GgufHeader::parse`] but not this are readable here,
    /// but newer llama.cpp versions refuse them.
    pub fn has_canonical_layout(&self) -> bool {
        let mut expected = 0u64;
        for t in &self.tensors {
            if t.offset != expected {
                return false;
            }
            match round_up(t.n_bytes, self.alignment).and_then(|p| expected.checked_add(p)) {
                Some(next) => expected = next,
                None => return false,
            }
        }
        true
    }
}

/// An open, memory-mapped, validated GGUF file.
///
/// The map is read-only; as with every memory map, the file must not be truncated or modified
/// by another process while it is open.
pub struct GgufFile {
    path: PathBuf,
    map: Option<Mmap>,
    header: GgufHeader,
}

impl GgufFile {
    /// Open, map and validate `path`.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        // An empty file cannot be mapped portably; parse the empty slice for the error.
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only and every access is bounds-checked against its
            // length; the documented requirement is that the file is not modified meanwhile.
            Some(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        let header = GgufHeader::parse(map.as_deref().unwrap_or(&[]), path)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            header,
        })
    }

    /// The validated header.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.header.get(key)
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor(name)
    }

    /// The tensor's data: a zero-copy slice of the map.
    ///
    /// # Panics
    /// If `t` does not describe data inside this file (a `TensorInfo` from a different file);
    /// infos from this file's header were checked when it was opened.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = self.header.data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.bytes().len() as u64 => {
                &self.bytes()[s as usize..e as usize]
            }
            _ => panic!(
                "{}: tensor '{}' (offset {}, {} bytes) is not inside this file",
                self.path.display(),
                t.name,
                t.offset,
                t.n_bytes
            ),
        }
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Tell the kernel the pages of this tensor's data will not be needed again, so a streaming
    /// pass over a large model does not keep the whole file resident. Purely advisory.
    pub fn release(&self, t: &TensorInfo) {
        let (Some(map), Some(start)) = (
            self.map.as_ref(),
            self.header.data_offset.checked_add(t.offset),
        ) else {
            return;
        };
        // Round inwards to whole pages that lie entirely inside the tensor.
        const PAGE: u64 = 4096;
        let first = start.div_ceil(PAGE) * PAGE;
        let end = (start + t.n_bytes) / PAGE * PAGE;
        #[cfg(unix)]
        if end > first && end <= map.len() as u64 {
            // SAFETY: the map is a read-only, file-backed shared mapping; MADV_DONTNEED only
            // drops clean pages, which are re-read from the file if touched again.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    first as usize,
                    (end - first) as usize,
                )
            };
        }
    }
}

impl Deref for GgufFile {
    type Target = GgufHeader;
    fn deref(&self) -> &GgufHeader {
        &self.header
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("len", &self.bytes().len())
            .field("version", &self.header.version)
            .field("metadata", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

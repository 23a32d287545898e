//! Streaming GGUF writer.
//!
//! The whole header (metadata and tensor infos with their final offsets) is computed and written
//! up front from a [`TensorPlan`] list, then tensor data is streamed in plan order, so a model
//! never has to be held in memory. The output goes to a temporary file in the target's
//! directory that is renamed onto the target only by [`GgufWriter::finish`]; an interrupted or
//! failed run leaves no file at the target path.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use quantease_formats::GgmlType;
use tempfile::NamedTempFile;

use super::error::GgufError;
use super::reader::{
    GGUF_MAGIC, KEY_ALIGNMENT, MAX_ARRAY_LEN, MAX_DIMS, MAX_NAME_LEN, MAX_STRING_LEN,
};
use super::value::{MetaArray, MetaValue};
use super::DEFAULT_ALIGNMENT;

/// The GGUF version the writer produces.
pub const WRITE_VERSION: u32 = 3;

/// A tensor to be written: its name, dimensions (`ne[0]` first) and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    /// Tensor name (shorter than 64 bytes, unique in the file).
    pub name: String,
    /// Dimensions, `ne[0]` (row length) first; 1 to 4 of them.
    pub dims: Vec<u64>,
    /// Element type; `dims[0]` must be a multiple of its block size.
    pub ty: GgmlType,
}

struct Slot {
    name: String,
    n_bytes: u64,
}

/// Writes one GGUF file: header at creation, then each tensor's bytes in plan order.
pub struct GgufWriter {
    path: PathBuf,
    out: Option<BufWriter<NamedTempFile>>,
    alignment: u64,
    slots: Vec<Slot>,
    current: usize,
    written: u64,
    failed: bool,
}

fn put_string(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s);
}

fn put_array(buf: &mut Vec<u8>, a: &MetaArray) {
    buf.extend_from_slice(&a.elem_type().id().to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        MetaArray::U8(v) => buf.extend_from_slice(v),
        MetaArray::I8(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::U16(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I16(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::U32(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I32(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F32(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::Bool(v) => v.iter().for_each(|&x| buf.push(u8::from(x))),
        MetaArray::String(v) => v.iter().for_each(|s| put_string(buf, s)),
        MetaArray::U64(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I64(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F64(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
    }
}

/// Append the on-disk form of `v` (type tag, then payload) to `buf`.
pub fn encode_value(buf: &mut Vec<u8>, v: &MetaValue) {
    buf.extend_from_slice(&v.value_type().id().to_le_bytes());
    match v {
        MetaValue::U8(x) => buf.push(*x),
        MetaValue::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => buf.push(u8::from(*x)),
        MetaValue::String(s) => put_string(buf, s),
        MetaValue::Array(a) => put_array(buf, a),
        MetaValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
}

/// Why ggml's loader would refuse this value's size, if it would.
fn too_big(v: &MetaValue) -> Option<String> {
    let long = |s: &[u8]| s.len() as u64 > MAX_STRING_LEN;
    match v {
        MetaValue::String(s) if long(s) => {
            Some(format!("string of {} bytes exceeds 1 GiB", s.len()))
        }
        MetaValue::Array(a) if a.len() as u64 > MAX_ARRAY_LEN => Some(format!(
            "array of {} elements exceeds {MAX_ARRAY_LEN}",
            a.len()
        )),
        MetaValue::Array(MetaArray::String(v)) if v.iter().any(|s| long(s)) => {
            Some("array element string exceeds 1 GiB".into())
        }
        _ => None,
    }
}

fn padding(n: u64, alignment: u64) -> u64 {
    (alignment - n % alignment) % alignment
}

impl GgufWriter {
    /// Validate the plan, create a temporary file beside `path` and write the header: version
    /// 3, `metadata` in the given order, tensor infos whose offsets are the running sum of
    /// tensor sizes padded to the alignment (in plan order), and padding up to the data
    /// section. The alignment is `general.alignment` (a power-of-two U32) or
    /// [`DEFAULT_ALIGNMENT`].
    pub fn create(
        path: &Path,
        metadata: &[(String, MetaValue)],
        tensors: &[TensorPlan],
    ) -> Result<Self, GgufError> {
        let invalid = |field: String, reason: String| GgufError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        let mut keys = HashSet::new();
        let mut alignment = DEFAULT_ALIGNMENT;
        for (i, (key, value)) in metadata.iter().enumerate() {
            if key.is_empty() {
                return Err(invalid(format!("metadata[{i}] key"), "empty key".into()));
            }
            if !keys.insert(key.as_str()) {
                return Err(invalid(
                    format!("metadata[{i}] '{key}'"),
                    "duplicate key".into(),
                ));
            }
            if let Some(reason) = too_big(value) {
                return Err(invalid(format!("metadata[{i}] '{key}'"), reason));
            }
            if key == KEY_ALIGNMENT {
                match *value {
                    MetaValue::U32(a) if a.is_power_of_two() => alignment = u64::from(a),
                    MetaValue::U32(a) => {
                        return Err(invalid(
                            format!("metadata[{i}] '{key}'"),
                            format!("{a} is not a power of two"),
                        ))
                    }
                    ref other => {
                        return Err(invalid(
                            format!("metadata[{i}] '{key}'"),
                            format!("must be of type U32, found {}", other.value_type()),
                        ))
                    }
                }
            }
        }

        let mut names = HashSet::new();
        let mut slots = Vec::with_capacity(tensors.len());
        for t in tensors {
            let name = &t.name;
            if name.len() >= MAX_NAME_LEN {
                return Err(invalid(
                    format!("tensor '{name}' name"),
                    format!("{} bytes, must be < {MAX_NAME_LEN}", name.len()),
                ));
            }
            if !names.insert(name.as_str()) {
                return Err(invalid(
                    format!("tensor '{name}' name"),
                    "duplicate tensor name".into(),
                ));
            }
            if t.dims.is_empty() || t.dims.len() > MAX_DIMS {
                return Err(invalid(
                    format!("tensor '{name}' dims"),
                    format!("{} dimensions, must be 1..={MAX_DIMS}", t.dims.len()),
                ));
            }
            // Zeros count as 1 in the bound, as in the reader.
            let n_elements = t
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| {
                    acc.checked_mul(d.max(1)).filter(|&n| n <= i64::MAX as u64)
                })
                .map(|_| t.dims.iter().product::<u64>())
                .ok_or_else(|| {
                    invalid(
                        format!("tensor '{name}' dims"),
                        "element count overflows i64".into(),
                    )
                })?;
            let block = t.ty.block_size() as u64;
            if !t.dims[0].is_multiple_of(block) {
                return Err(invalid(
                    format!("tensor '{name}' ne[0]"),
                    format!(
                        "{} is not a multiple of the {} block size {block}",
                        t.dims[0], t.ty
                    ),
                ));
            }
            let n_bytes = (n_elements / block)
                .checked_mul(t.ty.type_size() as u64)
                .ok_or_else(|| invalid(format!("tensor '{name}' size"), "overflows".into()))?;
            slots.push(Slot {
                name: name.clone(),
                n_bytes,
            });
        }

        let mut head = Vec::new();
        head.extend_from_slice(&GGUF_MAGIC);
        head.extend_from_slice(&WRITE_VERSION.to_le_bytes());
        head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            put_string(&mut head, key.as_bytes());
            encode_value(&mut head, value);
        }
        let mut offset = 0u64;
        for (t, slot) in tensors.iter().zip(&slots) {
            put_string(&mut head, t.name.as_bytes());
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset = slot
                .n_bytes
                .checked_add(padding(slot.n_bytes, alignment))
                .and_then(|p| offset.checked_add(p))
                .ok_or_else(|| {
                    invalid(
                        format!("tensor '{}' offset", t.name),
                        "data section overflows".into(),
                    )
                })?;
        }
        let pad = padding(head.len() as u64, alignment);
        head.resize(head.len() + pad as usize, 0);

        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = NamedTempFile::new_in(dir).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, tmp);
        out.write_all(&head).map_err(io)?;
        Ok(GgufWriter {
            path: path.to_path_buf(),
            out: Some(out),
            alignment,
            slots,
            current: 0,
            written: 0,
            failed: false,
        })
    }

    fn order_error(&self, reason: String) -> GgufError {
        GgufError::WriteOrder {
            path: self.path.clone(),
            tensor: self
                .slots
                .get(self.current)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            reason,
        }
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        let res = match self.out.as_mut() {
            Some(out) => out.write_all(bytes),
            None => Ok(()),
        };
        res.map_err(|source| {
            self.failed = true;
            GgufError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }

    fn check_usable(&self) -> Result<(), GgufError> {
        if self.failed {
            return Err(self.order_error("an earlier write failed".into()));
        }
        if self.current >= self.slots.len() {
            return Err(self.order_error(format!(
                "all {} planned tensors are already written",
                self.slots.len()
            )));
        }
        Ok(())
    }

    /// Append `bytes` to the current tensor. Fails if they would exceed its size.
    pub fn write_data(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        self.check_usable()?;
        let size = self.slots[self.current].n_bytes;
        let total = self.written.checked_add(bytes.len() as u64);
        if !matches!(total, Some(t) if t <= size) {
            return Err(self.order_error(format!(
                "{} more bytes after {} would exceed its size of {size} bytes",
                bytes.len(),
                self.written
            )));
        }
        self.emit(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Finish the current tensor: fails unless exactly its size was written; writes the
    /// padding and moves to the next tensor of the plan.
    pub fn end_tensor(&mut self) -> Result<(), GgufError> {
        self.check_usable()?;
        let size = self.slots[self.current].n_bytes;
        if self.written != size {
            return Err(
                self.order_error(format!("{} bytes written, expected {size}", self.written))
            );
        }
        let pad = padding(size, self.alignment) as usize;
        const ZEROS: [u8; 256] = [0; 256];
        let mut left = pad;
        while left > 0 {
            let n = left.min(ZEROS.len());
            self.emit(&ZEROS[..n])?;
            left -= n;
        }
        self.current += 1;
        self.written = 0;
        Ok(())
    }

    /// Write the whole current tensor: [`write_data`](Self::write_data) then
    /// [`end_tensor`](Self::end_tensor).
    pub fn write_tensor(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        self.write_data(bytes)?;
        self.end_tensor()
    }

    /// The name of the tensor the next bytes belong to (`None` when all are written).
    pub fn current_tensor(&self) -> Option<&str> {
        self.slots.get(self.current).map(|s| s.name.as_str())
    }

    /// Check that every tensor was written, flush, sync and atomically rename the temporary
    /// file onto the target path (replacing any file there).
    pub fn finish(mut self) -> Result<(), GgufError> {
        if self.failed {
            return Err(self.order_error("an earlier write failed".into()));
        }
        if self.current < self.slots.len() {
            return Err(self.order_error(format!(
                "finish called with {} of {} tensors written",
                self.current,
                self.slots.len()
            )));
        }
        let path = self.path.clone();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let out = self
            .out
            .take()
            .ok_or_else(|| self.order_error("writer already finished".into()))?;
        let tmp = out.into_inner().map_err(|e| io(e.into_error()))?;
        tmp.as_file().sync_all().map_err(io)?;
        #[cfg(unix)]
        {
            // Temporary files are created 0600; a model file should be readable like any
            // other output.
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io)?;
        }
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("path", &self.path)
            .field("alignment", &self.alignment)
            .field("tensors", &self.slots.len())
            .field("current", &self.current)
            .field("written", &self.written)
            .finish()
    }
}

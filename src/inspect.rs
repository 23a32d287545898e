//! `inspect`: what a GGUF file holds — metadata, a tensor table and totals, as text or JSON.

use crate::gguf::GgufFile;
use quantease_formats::GgmlType;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Per-type totals of a file.
#[derive(Clone, Debug, Default)]
pub struct TypeTotals {
    /// Tensors of this type.
    pub n_tensors: usize,
    /// Weights.
    pub n_elements: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Totals per type and overall.
pub fn totals(file: &GgufFile) -> (BTreeMap<GgmlType, TypeTotals>, TypeTotals) {
    let mut by_type: BTreeMap<GgmlType, TypeTotals> = BTreeMap::new();
    let mut all = TypeTotals::default();
    for t in &file.header().tensors {
        let e = by_type.entry(t.ty).or_default();
        for x in [&mut *e, &mut all] {
            x.n_tensors += 1;
            x.n_elements += t.n_elements;
            x.bytes += t.n_bytes;
        }
    }
    (by_type, all)
}

fn bpw(bytes: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        bytes as f64 * 8.0 / n as f64
    }
}

fn shape(dims: &[u64]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// Human-readable report.
pub fn render_text(file: &GgufFile) -> String {
    let h = file.header();
    let mut s = String::new();
    let file_len = file.bytes().len();
    let _ = writeln!(
        s,
        "{}: GGUF v{}, {} bytes, alignment {}, data at {}",
        file.path().display(),
        h.version,
        file_len,
        h.alignment,
        h.data_offset
    );
    let _ = writeln!(s, "\nmetadata ({} keys):", h.metadata.len());
    for (k, v) in &h.metadata {
        let _ = writeln!(
            s,
            "  {:<44} {:<7} {}",
            k,
            format!("{:?}", v.value_type()),
            v
        );
    }
    let _ = writeln!(s, "\ntensors ({}):", h.tensors.len());
    let _ = writeln!(
        s,
        "  {:<40} {:<8} {:>18} {:>12} {:>7}",
        "name", "type", "shape", "bytes", "bpw"
    );
    for t in &h.tensors {
        let _ = writeln!(
            s,
            "  {:<40} {:<8} {:>18} {:>12} {:>7.3}",
            t.name,
            t.ty.name(),
            shape(&t.dims),
            t.n_bytes,
            bpw(t.n_bytes, t.n_elements)
        );
    }
    let (by_type, all) = totals(file);
    let _ = writeln!(s, "\nby type:");
    for (ty, x) in &by_type {
        let _ = writeln!(
            s,
            "  {:<8} {:>4} tensors {:>13} weights {:>12} bytes {:>7.3} bpw",
            ty.name(),
            x.n_tensors,
            x.n_elements,
            x.bytes,
            bpw(x.bytes, x.n_elements)
        );
    }
    let _ = writeln!(
        s,
        "total: {} tensors, {} weights, {} tensor bytes ({:.2} MiB), {:.3} bits per weight",
        all.n_tensors,
        all.n_elements,
        all.bytes,
        all.bytes as f64 / (1u64 << 20) as f64,
        bpw(all.bytes, all.n_elements)
    );
    s
}

/// Machine-readable report.
pub fn render_json(file: &GgufFile) -> serde_json::Value {
    let h = file.header();
    let metadata: Vec<_> = h
        .metadata
        .iter()
        .map(|(k, v)| json!({"key": k, "type": format!("{:?}", v.value_type()), "value": v.to_json()}))
        .collect();
    let tensors: Vec<_> = h
        .tensors
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "type": t.ty.name(), "dims": t.dims, "offset": t.offset,
                "bytes": t.n_bytes, "n_elements": t.n_elements, "bpw": bpw(t.n_bytes, t.n_elements),
            })
        })
        .collect();
    let (by_type, all) = totals(file);
    let by_type: serde_json::Map<String, serde_json::Value> = by_type
        .iter()
        .map(|(ty, x)| {
            (
                ty.name().to_string(),
                json!({"tensors": x.n_tensors, "n_elements": x.n_elements, "bytes": x.bytes}),
            )
        })
        .collect();
    json!({
        "path": file.path().display().to_string(),
        "version": h.version,
        "alignment": h.alignment,
        "data_offset": h.data_offset,
        "file_bytes": file.bytes().len(),
        "metadata": metadata,
        "tensors": tensors,
        "by_type": by_type,
        "total": {"tensors": all.n_tensors, "n_elements": all.n_elements, "bytes": all.bytes, "bpw": bpw(all.bytes, all.n_elements)},
    })
}

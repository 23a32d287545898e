//! Safe observation of matrix-multiplication inputs through llama.cpp's `cb_eval`.
//!
//! Facts (from ggml-backend.h and how llama.cpp's imatrix tool uses the hook): the scheduler
//! calls `cb_eval(t, ask = true)` for every graph node to ask whether the caller wants to see it;
//! for the nodes answered `true` it splits the graph there and calls `cb_eval(t, ask = false)` once
//! the node is computed. Returning `false` from the second call cancels the graph. For a
//! `MUL_MAT` node `t = src0 · src1`: `src0` is the weight (`ne = [n_in, n_out, …]`, named after the
//! GGUF weight, possibly wrapped as `backend#name#copy`), `src1` the activations
//! (`ne = [n_in, n_tokens, …]`, usually F32). For `MUL_MAT_ID` (mixture of experts) `src0` is
//! `[n_in, n_out, n_expert]`, `src1` is `[n_in, n_expert_used or 1, n_tokens]` and `src[2]` holds
//! the I32 expert ids `[n_expert_used, n_tokens]`.

use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use llama_cpp_sys_2 as sys;

/// Which matrix multiplication a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatMulKind {
    /// Dense `MUL_MAT`.
    MulMat,
    /// Expert-routed `MUL_MAT_ID`.
    MulMatId,
}

impl MatMulKind {
    /// ggml's name of the op (`MUL_MAT`, `MUL_MAT_ID`).
    pub fn ggml_name(self) -> String {
        op_name(match self {
            MatMulKind::MulMat => sys::GGML_OP_MUL_MAT,
            MatMulKind::MulMatId => sys::GGML_OP_MUL_MAT_ID,
        })
    }
}

/// Static facts about an observed matrix multiplication (known before it is computed).
#[derive(Clone, Copy, Debug)]
pub struct MatMulInfo<'a> {
    /// The op.
    pub kind: MatMulKind,
    /// Name of the graph node (e.g. `ffn_up-3`).
    pub node_name: &'a str,
    /// Name of the weight, with backend prefixes/suffixes removed (e.g. `blk.3.ffn_up.weight`).
    pub weight_name: &'a str,
    /// Shape of the weight, ggml order (`[n_in, n_out, n_expert, 1]`).
    pub weight_shape: [i64; 4],
    /// Shape of the activations, ggml order (`[n_in, n_tokens, …]`).
    pub input_shape: [i64; 4],
}

/// The activations entering a matrix multiplication, converted to contiguous f32 rows.
#[derive(Clone, Copy, Debug)]
pub struct MatMulInput<'a> {
    data: &'a [f32],
    n_cols: usize,
    ids: Option<(&'a [i32], usize)>,
}

impl<'a> MatMulInput<'a> {
    /// Row length (the weight's input width).
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// Number of rows. For `MUL_MAT` one per token (times any higher dimensions); for
    /// `MUL_MAT_ID` row `token * input_shape[1] + slot`.
    pub fn n_rows(&self) -> usize {
        self.data.len().checked_div(self.n_cols).unwrap_or(0)
    }

    /// All rows, row-major.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.n_cols..(i + 1) * self.n_cols]
    }

    /// Iterate over the rows.
    pub fn rows(&self) -> impl Iterator<Item = &'a [f32]> + 'a {
        self.data.chunks_exact(self.n_cols.max(1))
    }

    /// For `MUL_MAT_ID`: the expert ids, `n_expert_used` per token, token-major, and
    /// `n_expert_used`. `None` for dense matmuls.
    pub fn expert_ids(&self) -> Option<(&'a [i32], usize)> {
        self.ids
    }

    /// For `MUL_MAT_ID`: the expert that slot `slot` of token `token` was routed to, and the
    /// input row it multiplied. The activations have one row per slot (`input_shape[1] ==
    /// n_expert_used`) or one shared row per token (`input_shape[1] == 1`, as for gate/up).
    /// `None` for dense matmuls or out-of-range indices.
    pub fn expert_input(&self, token: usize, slot: usize) -> Option<(i32, &'a [f32])> {
        let (ids, n_used) = self.ids?;
        if slot >= n_used {
            return None;
        }
        let expert = *ids.get(token * n_used + slot)?;
        let n_tokens = ids.len() / n_used;
        let rows_per_token = self.n_rows().checked_div(n_tokens)?;
        if rows_per_token == 0 {
            return None;
        }
        let row = token * rows_per_token + slot % rows_per_token;
        (row < self.n_rows()).then(|| (expert, self.row(row)))
    }
}

/// Observer of matrix-multiplication inputs during [`super::Context::decode`].
///
/// Only `MUL_MAT` and `MUL_MAT_ID` nodes whose activations are F32 or F16 are offered, every
/// one of them (llama.cpp's imatrix tool, for comparison, skips batches of fewer than 16 tokens
/// and weights outside `blk.*` unless asked to process `output.weight`). Nodes whose weight is not
/// a GGUF tensor (e.g. attention's `K·Q`, whose "weight" is the KV cache) are offered too; filter
/// on [`MatMulInfo::weight_name`].
pub trait EvalCallback {
    /// Whether to observe this node (asked before it is computed). Observing splits llama.cpp's
    /// graph at the node, so decline what you do not need. Default: every matmul.
    fn wants(&mut self, info: &MatMulInfo<'_>) -> bool {
        let _ = info;
        true
    }

    /// The node was computed; `input` holds its activations. Return `false` to abort the decode
    /// (it then fails with [`super::LlamaError::CallbackAborted`]).
    fn observe(&mut self, info: &MatMulInfo<'_>, input: &MatMulInput<'_>) -> bool;
}

impl<F> EvalCallback for F
where
    F: FnMut(&MatMulInfo<'_>, &MatMulInput<'_>) -> bool,
{
    fn observe(&mut self, info: &MatMulInfo<'_>, input: &MatMulInput<'_>) -> bool {
        self(info, input)
    }
}

/// State behind `cb_eval_user_data`.
pub(crate) struct CallbackState {
    observer: Box<dyn EvalCallback + Send>,
    bytes: Vec<u8>,
    rows: Vec<f32>,
    ids: Vec<i32>,
    panic: Option<String>,
    aborted: bool,
}

impl CallbackState {
    pub(crate) fn new(observer: Box<dyn EvalCallback + Send>) -> CallbackState {
        CallbackState {
            observer,
            bytes: Vec::new(),
            rows: Vec::new(),
            ids: Vec::new(),
            panic: None,
            aborted: false,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.panic = None;
        self.aborted = false;
    }

    pub(crate) fn take_panic(&mut self) -> Option<String> {
        self.panic.take()
    }

    pub(crate) fn take_aborted(&mut self) -> bool {
        std::mem::take(&mut self.aborted)
    }
}

/// Strip a backend prefix and copy suffix: `CPU#blk.0.attn_k.weight#0` → `blk.0.attn_k.weight`.
pub(crate) fn weight_name(raw: &str) -> &str {
    match raw.split_once('#') {
        Some((_, rest)) => rest.split_once('#').map_or(rest, |(name, _)| name),
        None => raw,
    }
}

fn tensor_name(t: &sys::ggml_tensor) -> &str {
    // SAFETY: ggml tensor names are NUL-terminated within their 64-byte array.
    let bytes: &[u8] = unsafe { std::slice::from_raw_parts(t.name.as_ptr().cast(), t.name.len()) };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).unwrap_or("")
}

/// The observable facts of node `t`, or `None` if it is not an observable matmul.
///
/// # Safety
/// `t` must be a valid ggml tensor whose `src` pointers are null or valid.
unsafe fn describe(t: &sys::ggml_tensor) -> Option<MatMulInfo<'_>> {
    let kind = match t.op {
        sys::GGML_OP_MUL_MAT => MatMulKind::MulMat,
        sys::GGML_OP_MUL_MAT_ID => MatMulKind::MulMatId,
        _ => return None,
    };
    // SAFETY: per the contract, src pointers are null or valid tensors of the same graph.
    let src0 = unsafe { t.src[0].as_ref()? };
    let src1 = unsafe { t.src[1].as_ref()? };
    if src1.type_ != sys::GGML_TYPE_F32 && src1.type_ != sys::GGML_TYPE_F16 {
        return None;
    }
    if kind == MatMulKind::MulMatId {
        let ids = unsafe { t.src[2].as_ref()? };
        if ids.type_ != sys::GGML_TYPE_I32 {
            return None;
        }
    }
    if src1.ne.iter().any(|&n| n <= 0) || src1.ne[0] != src0.ne[0] {
        return None;
    }
    Some(MatMulInfo {
        kind,
        node_name: tensor_name(t),
        weight_name: weight_name(tensor_name(src0)),
        weight_shape: src0.ne,
        input_shape: src1.ne,
    })
}

/// Bytes of `t` as a host slice (copied from the backend when not host-visible).
///
/// # Safety
/// `t` must be a computed tensor of the current graph.
unsafe fn host_bytes<'b>(t: &'b sys::ggml_tensor, scratch: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    // SAFETY: valid tensor.
    let nbytes = unsafe { sys::ggml_nbytes(t) };
    if t.data.is_null() {
        return None;
    }
    // SAFETY: buffer is null or a valid backend buffer.
    let is_host = t.buffer.is_null() || unsafe { sys::ggml_backend_buffer_is_host(t.buffer) };
    if is_host {
        // SAFETY: a host tensor's data spans ggml_nbytes bytes.
        Some(unsafe { std::slice::from_raw_parts(t.data.cast::<u8>(), nbytes) })
    } else {
        scratch.clear();
        scratch.resize(nbytes, 0);
        // SAFETY: scratch is writable for nbytes.
        unsafe { sys::ggml_backend_tensor_get(t, scratch.as_mut_ptr().cast(), 0, nbytes) };
        Some(&scratch[..])
    }
}

/// Gather `src1` (F32 or F16, any strides) into contiguous f32 rows.
fn gather_rows(t: &sys::ggml_tensor, bytes: &[u8], out: &mut Vec<f32>) -> Option<()> {
    let elem = if t.type_ == sys::GGML_TYPE_F32 { 4 } else { 2 };
    let ne: [usize; 4] = t.ne.map(|n| n as usize);
    out.clear();
    out.reserve(ne.iter().product());
    for i3 in 0..ne[3] {
        for i2 in 0..ne[2] {
            for i1 in 0..ne[1] {
                let base = i1 * t.nb[1] + i2 * t.nb[2] + i3 * t.nb[3];
                if t.nb[0] == elem {
                    // Contiguous row: one bounds check, a vectorisable conversion.
                    let row = bytes.get(base..base + ne[0] * elem)?;
                    if elem == 4 {
                        out.extend(
                            row.chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                        );
                    } else {
                        out.extend(row.chunks_exact(2).map(|b| {
                            half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
                        }));
                    }
                    continue;
                }
                for i0 in 0..ne[0] {
                    let off = base + i0 * t.nb[0];
                    let b = bytes.get(off..off + elem)?;
                    let v = if elem == 4 {
                        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
                    } else {
                        half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
                    };
                    out.push(v);
                }
            }
        }
    }
    Some(())
}

/// Gather the I32 expert ids `[n_expert_used, n_tokens]` (any strides).
fn gather_ids(t: &sys::ggml_tensor, bytes: &[u8], out: &mut Vec<i32>) -> Option<()> {
    out.clear();
    for i1 in 0..t.ne[1] as usize {
        for i0 in 0..t.ne[0] as usize {
            let off = i1 * t.nb[1] + i0 * t.nb[0];
            let b = bytes.get(off..off + 4)?;
            out.push(i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
    }
    Some(())
}

/// The `ggml_backend_sched_eval_callback` installed on contexts with an [`EvalCallback`].
pub(crate) unsafe extern "C" fn trampoline(
    t: *mut sys::ggml_tensor,
    ask: bool,
    user_data: *mut c_void,
) -> bool {
    if t.is_null() || user_data.is_null() {
        return !ask;
    }
    // SAFETY: user_data is the boxed CallbackState owned by the Context being decoded, which
    // holds &mut self for the duration of llama_decode; t is a valid graph node.
    let state = unsafe { &mut *user_data.cast::<CallbackState>() };
    let t = unsafe { &*t };
    if state.panic.is_some() || state.aborted {
        // Already failed: observe nothing more, cancel on the next computed node.
        return false;
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: t is a valid node (see above).
        let Some(info) = (unsafe { describe(t) }) else {
            // Not ours: never ask for it; if asked to observe anyway, let the graph continue.
            return !ask;
        };
        if ask {
            return state.observer.wants(&info);
        }
        // SAFETY: describe() checked src[1] (and src[2] for MUL_MAT_ID) are non-null.
        let src1 = unsafe { &*t.src[1] };
        let CallbackState {
            observer,
            bytes,
            rows,
            ids,
            ..
        } = state;
        // SAFETY: the node has been computed, so its inputs hold data.
        let Some(raw) = (unsafe { host_bytes(src1, bytes) }) else {
            return true;
        };
        if gather_rows(src1, raw, rows).is_none() {
            return true;
        }
        let expert_ids = if info.kind == MatMulKind::MulMatId {
            let ids_t = unsafe { &*t.src[2] };
            let mut id_bytes = Vec::new();
            // SAFETY: computed tensor of the same graph.
            let Some(raw_ids) = (unsafe { host_bytes(ids_t, &mut id_bytes) }) else {
                return true;
            };
            if gather_ids(ids_t, raw_ids, ids).is_none() {
                return true;
            }
            Some((&ids[..], ids_t.ne[0] as usize))
        } else {
            None
        };
        let input = MatMulInput {
            data: rows,
            n_cols: src1.ne[0] as usize,
            ids: expert_ids,
        };
        observer.observe(&info, &input)
    }));
    match result {
        Ok(keep_going) => {
            if !ask && !keep_going {
                state.aborted = true;
            }
            keep_going
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            state.panic = Some(msg);
            false
        }
    }
}

/// Name of a ggml op, for diagnostics.
pub(crate) fn op_name(op: u32) -> String {
    // SAFETY: ggml_op_name returns a static string for every op below GGML_OP_COUNT.
    if op >= sys::GGML_OP_COUNT {
        return format!("op#{op}");
    }
    unsafe { CStr::from_ptr(sys::ggml_op_name(op)) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_names_are_filtered_like_llama_cpp() {
        assert_eq!(weight_name("blk.0.attn_k.weight"), "blk.0.attn_k.weight");
        assert_eq!(
            weight_name("CUDA0#blk.0.attn_k.weight#0"),
            "blk.0.attn_k.weight"
        );
        assert_eq!(weight_name("CPU#output.weight"), "output.weight");
    }

    fn fake_tensor(ty: u32, ne: [i64; 4], nb: [usize; 4]) -> sys::ggml_tensor {
        // SAFETY: ggml_tensor is plain data (integers, arrays, raw pointers); all-zero is valid.
        let mut t: sys::ggml_tensor = unsafe { std::mem::zeroed() };
        t.type_ = ty;
        t.ne = ne;
        t.nb = nb;
        t
    }

    #[test]
    fn rows_are_gathered_through_strides_and_f16() {
        // A 3×2 F32 view with a padded row stride of 4 floats: [[1,2,3],[5,6,7]].
        let floats: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let bytes: Vec<u8> = floats.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = fake_tensor(sys::GGML_TYPE_F32, [3, 2, 1, 1], [4, 16, 32, 32]);
        let mut out = Vec::new();
        gather_rows(&t, &bytes, &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]);

        // A transposed F16 view: element (i0, i1) at i0*nb0 + i1*nb1 with nb0 = 4, nb1 = 2.
        let halves: Vec<u8> = [0.5f32, -1.0, 2.0, 4.0]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        let t = fake_tensor(sys::GGML_TYPE_F16, [2, 2, 1, 1], [4, 2, 8, 8]);
        gather_rows(&t, &halves, &mut out).unwrap();
        assert_eq!(out, [0.5, 2.0, -1.0, 4.0]);

        // A view running past the data is refused, not read out of bounds.
        let t = fake_tensor(sys::GGML_TYPE_F32, [3, 3, 1, 1], [4, 16, 48, 48]);
        assert!(gather_rows(&t, &bytes, &mut out).is_none());
    }

    #[test]
    fn expert_ids_are_gathered_token_major() {
        let ids: Vec<u8> = [3i32, 1, 0, 2]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = fake_tensor(sys::GGML_TYPE_I32, [2, 2, 1, 1], [4, 8, 16, 16]);
        let mut out = Vec::new();
        gather_ids(&t, &ids, &mut out).unwrap();
        assert_eq!(out, [3, 1, 0, 2]);
    }

    #[test]
    fn expert_inputs_follow_the_routing() {
        // 2 tokens, 2 experts used per token, one shared input row per token.
        let data = [1.0f32, 1.0, 2.0, 2.0];
        let ids = [5i32, 7, 6, 5];
        let shared = MatMulInput {
            data: &data,
            n_cols: 2,
            ids: Some((&ids, 2)),
        };
        assert_eq!(shared.expert_input(0, 1), Some((7, &data[0..2])));
        assert_eq!(shared.expert_input(1, 0), Some((6, &data[2..4])));
        assert_eq!(shared.expert_input(1, 2), None);
        assert_eq!(shared.expert_input(2, 0), None);
        // One row per slot.
        let per_slot = [1.0f32, 2.0, 3.0, 4.0];
        let x = MatMulInput {
            data: &per_slot,
            n_cols: 1,
            ids: Some((&ids, 2)),
        };
        assert_eq!(x.expert_input(1, 1), Some((5, &per_slot[3..4])));
        let dense = MatMulInput {
            data: &per_slot,
            n_cols: 1,
            ids: None,
        };
        assert_eq!(dense.expert_input(0, 0), None);
    }

    #[test]
    fn op_names_come_from_ggml() {
        assert_eq!(op_name(sys::GGML_OP_MUL_MAT), "MUL_MAT");
        assert_eq!(op_name(sys::GGML_OP_MUL_MAT_ID), "MUL_MAT_ID");
        assert_eq!(op_name(u32::MAX), format!("op#{}", u32::MAX));
    }
}

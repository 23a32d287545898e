//! Planning: which type each tensor gets.
//!
//! The mixes follow `llama-quantize` (llama.cpp `src/llama-quant.cpp`, as vendored by
//! llama-cpp-sys-2 0.1.161) so that `--type Q4_K_M` means here what it means there, tensor for
//! tensor. Facts carried over from that code, restated:
//!
//! - Only tensors whose name ends in `weight`, with 2+ dimensions, that are not norms
//!   (`_norm.weight`), MoE routers (`ffn_gate_inp.weight`) or a few small special tensors, are
//!   quantised; everything else keeps its source type (norms and other 1-D tensors are copied).
//! - Tensors are visited in llama.cpp's loader order (a `std::map` ordered by the layer number of
//!   `blk.N.` names, then by name), and the per-category counters (`attn_v` index, `ffn_down`
//!   index) advance in that order.
//! - `output.weight` (and `token_embd.weight` when embeddings are tied, i.e. there is no
//!   `output.weight`) gets Q6_K, or Q8_0 when its width is not a multiple of the default type's
//!   block size.
//! - A width a type cannot hold falls back: Q2_K/Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1,
//!   Q6_K → Q8_0, IQ4_XS → IQ4_NL, and to F16 if even that does not fit. Each fallback is
//!   reported in the plan.
//!
//! `--bits N` maps to a documented mix (see [`Mix::from_bits`]).

use quantease_formats::GgmlType;
use regex::Regex;
use std::fmt;

/// A file type as `llama-quantize` names it: one default tensor type plus per-tensor rules.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// All F32.
    F32,
    /// F16 except 1-D tensors.
    F16,
    /// BF16 except 1-D tensors.
    BF16,
    /// Q4_0.
    Q4_0,
    /// Q4_1.
    Q4_1,
    /// Q5_0.
    Q5_0,
    /// Q5_1.
    Q5_1,
    /// Q8_0.
    Q8_0,
    /// Q2_K with Q3_K/Q4_K for sensitive tensors.
    Q2_K,
    /// Q2_K, smaller (needs an importance matrix in llama.cpp).
    Q2_K_S,
    /// Q3_K small.
    Q3_K_S,
    /// Q3_K medium.
    Q3_K_M,
    /// Q3_K large.
    Q3_K_L,
    /// Q4_K small.
    Q4_K_S,
    /// Q4_K medium.
    Q4_K_M,
    /// Q5_K small.
    Q5_K_S,
    /// Q5_K medium.
    Q5_K_M,
    /// Q6_K.
    Q6_K,
    /// IQ4_NL.
    IQ4_NL,
    /// IQ4_XS.
    IQ4_XS,
    /// A QE format for every matrix (`QE{bits}_{pool}`), a higher-precision output matrix
    /// (see [`qe_output_type`]); not loadable by stock llama.cpp.
    Qe {
        /// Code bits (2, 3, 4).
        bits: u8,
        /// Outlier-pool bytes per 32-weight block (0, 1, 2).
        pool: u8,
    },
}

/// The GGUF type `QE{bits}_{pool}` (ids 200 + 3·(bits−2) + pool), if the formats crate knows it.
pub fn qe_type(bits: u8, pool: u8) -> Option<GgmlType> {
    quantease_formats::qe::QeFormat::new(bits, pool).and_then(|f| f.to_type())
}

/// `(bits, pool)` of a QE type, `None` for other types.
pub fn qe_params(ty: GgmlType) -> Option<(u8, u8)> {
    quantease_formats::qe::QeFormat::from_type(ty).map(|f| (f.bits, f.pool))
}

/// The outlier pool (bytes per 32-weight block) needed for a fraction of outliers per row:
/// the smallest pool whose capacity (pool 1: one per 128 weights = 0.78125 %, pool 2: one per 64
/// = 1.5625 %) is at least `fraction`. `None` if the fraction is negative, not finite, or above
/// 1.5625 %.
pub fn pool_for_fraction(fraction: f64) -> Option<u8> {
    if !fraction.is_finite() || fraction < 0.0 {
        None
    } else if fraction == 0.0 {
        Some(0)
    } else if fraction <= 1.0 / 128.0 + 1e-12 {
        Some(1)
    } else if fraction <= 1.0 / 64.0 + 1e-12 {
        Some(2)
    } else {
        None
    }
}

/// The type of `output.weight` (or of `token_embd.weight` when tied) in a QE mix: QE4 with the
/// mix's pool. The output matrix is the most sensitive one (llama.cpp gives it Q6_K, or Q8_0
/// where the width cannot hold Q6_K, in every k-quant mix); QE4 is the most precise QE type and
/// keeps the file small (Q8_0 would add 13 MB on SmolLM2-135M, whose tied embedding is a fifth
/// of the weights). `--output-tensor-type` overrides it (measurements in
/// results/smollm2/qe-sweep.md).
pub fn qe_output_type(_bits: u8, pool: u8) -> Option<GgmlType> {
    qe_type(4, pool)
}

impl Mix {
    /// Every mix this tool can produce.
    pub const ALL: &'static [Mix] = &[
        Mix::F32,
        Mix::F16,
        Mix::BF16,
        Mix::Q4_0,
        Mix::Q4_1,
        Mix::Q5_0,
        Mix::Q5_1,
        Mix::Q8_0,
        Mix::Q2_K,
        Mix::Q2_K_S,
        Mix::Q3_K_S,
        Mix::Q3_K_M,
        Mix::Q3_K_L,
        Mix::Q4_K_S,
        Mix::Q4_K_M,
        Mix::Q5_K_S,
        Mix::Q5_K_M,
        Mix::Q6_K,
        Mix::IQ4_NL,
        Mix::IQ4_XS,
    ];

    /// The name `llama-quantize` uses.
    pub fn name(self) -> &'static str {
        match self {
            Mix::F32 => "F32",
            Mix::F16 => "F16",
            Mix::BF16 => "BF16",
            Mix::Q4_0 => "Q4_0",
            Mix::Q4_1 => "Q4_1",
            Mix::Q5_0 => "Q5_0",
            Mix::Q5_1 => "Q5_1",
            Mix::Q8_0 => "Q8_0",
            Mix::Q2_K => "Q2_K",
            Mix::Q2_K_S => "Q2_K_S",
            Mix::Q3_K_S => "Q3_K_S",
            Mix::Q3_K_M => "Q3_K_M",
            Mix::Q3_K_L => "Q3_K_L",
            Mix::Q4_K_S => "Q4_K_S",
            Mix::Q4_K_M => "Q4_K_M",
            Mix::Q5_K_S => "Q5_K_S",
            Mix::Q5_K_M => "Q5_K_M",
            Mix::Q6_K => "Q6_K",
            Mix::IQ4_NL => "IQ4_NL",
            Mix::IQ4_XS => "IQ4_XS",
            Mix::Qe { bits, pool } => {
                const NAMES: [&str; 9] = [
                    "QE2_0", "QE2_1", "QE2_2", "QE3_0", "QE3_1", "QE3_2", "QE4_0", "QE4_1", "QE4_2",
                ];
                NAMES[(3 * (bits.clamp(2, 4) - 2) + pool.min(2)) as usize]
            }
        }
    }

    /// Parse a mix name, case-insensitively. `Q3_K` and `Q4_K`/`Q5_K` mean their `_M` mixes, as in
    /// llama-quantize.
    pub fn from_name(name: &str) -> Option<Mix> {
        let upper = name.to_ascii_uppercase();
        let alias = match upper.as_str() {
            "Q3_K" => "Q3_K_M",
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            "QE2" => "QE2_1",
            "QE3" => "QE3_1",
            "QE4" => "QE4_1",
            other => other,
        };
        if let Some(rest) = alias.strip_prefix("QE") {
            let b = rest.as_bytes();
            if b.len() == 3
                && b[1] == b'_'
                && (b'2'..=b'4').contains(&b[0])
                && (b'0'..=b'2').contains(&b[2])
            {
                return Some(Mix::Qe {
                    bits: b[0] - b'0',
                    pool: b[2] - b'0',
                });
            }
            return None;
        }
        Mix::ALL.iter().copied().find(|m| m.name() == alias)
    }

    /// The documented `--bits N` mixes: 2 → Q2_K, 3 → Q3_K_M, 4 → Q4_K_M, 5 → Q5_K_M, 6 → Q6_K,
    /// 8 → Q8_0, 16 → F16.
    pub fn from_bits(bits: u32) -> Option<Mix> {
        Some(match bits {
            2 => Mix::Q2_K,
            3 => Mix::Q3_K_M,
            4 => Mix::Q4_K_M,
            5 => Mix::Q5_K_M,
            6 => Mix::Q6_K,
            8 => Mix::Q8_0,
            16 => Mix::F16,
            _ => return None,
        })
    }

    /// `general.file_type` value (llama.h `llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            Mix::F32 => 0,
            Mix::F16 => 1,
            Mix::Q4_0 => 2,
            Mix::Q4_1 => 3,
            Mix::Q8_0 => 7,
            Mix::Q5_0 => 8,
            Mix::Q5_1 => 9,
            Mix::Q2_K => 10,
            Mix::Q3_K_S => 11,
            Mix::Q3_K_M => 12,
            Mix::Q3_K_L => 13,
            Mix::Q4_K_S => 14,
            Mix::Q4_K_M => 15,
            Mix::Q5_K_S => 16,
            Mix::Q5_K_M => 17,
            Mix::Q6_K => 18,
            Mix::Q2_K_S => 21,
            Mix::IQ4_NL => 25,
            Mix::IQ4_XS => 30,
            Mix::BF16 => 32,
            // No llama_ftype exists for QE files: the code of the standard mix `--bits N` gives
            // for the same N (Q2_K, Q3_K_M, Q4_K_M); the QE types themselves say what is inside.
            Mix::Qe { bits: 2, .. } => 10,
            Mix::Qe { bits: 3, .. } => 12,
            Mix::Qe { .. } => 15,
        }
    }

    /// The default tensor type of the mix.
    pub fn default_type(self) -> GgmlType {
        use GgmlType as T;
        match self {
            Mix::F32 => T::F32,
            Mix::F16 => T::F16,
            Mix::BF16 => T::BF16,
            Mix::Q4_0 => T::Q4_0,
            Mix::Q4_1 => T::Q4_1,
            Mix::Q5_0 => T::Q5_0,
            Mix::Q5_1 => T::Q5_1,
            Mix::Q8_0 => T::Q8_0,
            Mix::Q2_K | Mix::Q2_K_S => T::Q2_K,
            Mix::Q3_K_S | Mix::Q3_K_M | Mix::Q3_K_L => T::Q3_K,
            Mix::Q4_K_S | Mix::Q4_K_M => T::Q4_K,
            Mix::Q5_K_S | Mix::Q5_K_M => T::Q5_K,
            Mix::Q6_K => T::Q6_K,
            Mix::IQ4_NL => T::IQ4_NL,
            Mix::IQ4_XS => T::IQ4_XS,
            Mix::Qe { bits, pool } => qe_type(bits, pool).unwrap_or(T::F16),
        }
    }

    /// True for the QE mixes.
    pub fn is_qe(self) -> bool {
        matches!(self, Mix::Qe { .. })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Model facts the mix rules depend on (read from GGUF metadata).
#[derive(Clone, Debug, Default)]
pub struct ModelFacts {
    /// `general.architecture`.
    pub arch: String,
    /// `{arch}.block_count`.
    pub n_layer: u32,
    /// `{arch}.attention.head_count`.
    pub n_head: u32,
    /// `{arch}.attention.head_count_kv` (defaults to `n_head`).
    pub n_head_kv: u32,
    /// `{arch}.expert_count` (0 when absent).
    pub n_expert: u32,
}

impl ModelFacts {
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(1)
    }
}

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// The mix.
    pub mix: Mix,
    /// `--tensor-type REGEX=TYPE` overrides, first match wins.
    pub tensor_types: Vec<(Regex, GgmlType)>,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--pure`: every quantisable tensor gets the default type (no per-tensor rules).
    pub pure: bool,
    /// An importance matrix is given (some rules depend on it).
    pub has_imatrix: bool,
    /// `--outliers`: the outlier pool of every QE tensor (overrides the pool of its type).
    pub outlier_pool: Option<u8>,
    /// `--outliers-tensor REGEX=FRACTION` as pools, first match wins (before `outlier_pool`).
    pub outlier_tensors: Vec<(Regex, u8)>,
}

/// A tensor as the planner sees it.
#[derive(Clone, Debug)]
pub struct TensorShape {
    /// GGUF name.
    pub name: String,
    /// Dimensions, ne\[0\] (row length) first.
    pub dims: Vec<u64>,
    /// Type in the source.
    pub source_type: GgmlType,
}

/// The decision for one tensor.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    /// GGUF name.
    pub name: String,
    /// Dimensions.
    pub dims: Vec<u64>,
    /// Type in the source.
    pub source_type: GgmlType,
    /// Type in the output.
    pub target_type: GgmlType,
    /// Whether the tensor is (re)quantised, as opposed to copied unchanged.
    pub quantize: bool,
    /// The type the rules chose before a width fallback, if one happened.
    pub fallback_from: Option<GgmlType>,
    /// Set when a `--tensor-type` pattern chose the type.
    pub manual: bool,
}

impl PlannedTensor {
    /// Number of weights.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of this tensor in the output (the planner checked that the width fits the type).
    pub fn target_bytes(&self) -> u64 {
        let rows: u64 = self.dims.iter().skip(1).product();
        self.target_type.row_bytes(self.dims[0]).unwrap_or(0) * rows
    }

    /// Bytes of this tensor in the source.
    pub fn source_bytes(&self) -> u64 {
        let rows: u64 = self.dims.iter().skip(1).product();
        self.source_type.row_bytes(self.dims[0]).unwrap_or(0) * rows
    }
}

/// Errors of planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The chosen type has no encoder yet.
    #[error("tensor '{tensor}': type {ty} (chosen by {why}) cannot be produced by this tool")]
    UnsupportedTarget {
        /// Tensor name.
        tensor: String,
        /// The type.
        ty: GgmlType,
        /// Which rule chose it.
        why: String,
    },
    /// The source type cannot be decoded.
    #[error("tensor '{tensor}': source type {ty} cannot be decoded by this tool")]
    UnsupportedSource {
        /// Tensor name.
        tensor: String,
        /// The type.
        ty: GgmlType,
    },
    /// A fallback type does not fit either and there is nothing left.
    #[error("tensor '{tensor}': width {width} is not a multiple of 32, cannot be stored as {ty}")]
    NoFallback {
        /// Tensor name.
        tensor: String,
        /// Row length.
        width: u64,
        /// Type wanted.
        ty: GgmlType,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        Category::AttnQkv
    } else if name.contains("attn_kv_b.weight") {
        Category::AttnKvB
    } else if name.contains("attn_v.weight") {
        Category::AttnV
    } else if name.contains("attn_k.weight") {
        Category::AttnK
    } else if name.contains("attn_q.weight") {
        Category::AttnQ
    } else if name.contains("attn_output.weight") {
        Category::AttnOutput
    } else if name.contains("ffn_up") {
        Category::FfnUp
    } else if name.contains("ffn_gate") {
        Category::FfnGate
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

fn is_attn_v_like(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// Whether llama-quantize would quantise this tensor at all.
pub fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    if dims.len() < 2 || !name.ends_with("weight") {
        return false;
    }
    const SKIP: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    if SKIP.iter().any(|s| name.contains(s)) {
        return false;
    }
    // Positional embeddings and BERT token types.
    !(name == "position_embd.weight" || name == "token_types.weight")
}

/// The width fallback llama.cpp applies when a row length is not a multiple of the block size.
/// Returns the type to use (possibly unchanged) or an error if nothing fits.
pub fn width_fallback(name: &str, width: u64, ty: GgmlType) -> Result<GgmlType, PlanError> {
    use GgmlType as T;
    if width.is_multiple_of(ty.block_size() as u64) {
        return Ok(ty);
    }
    let fallback = match ty {
        T::IQ1_S
        | T::IQ1_M
        | T::IQ2_XXS
        | T::IQ2_XS
        | T::IQ2_S
        | T::IQ3_XXS
        | T::IQ3_S
        | T::IQ4_XS => T::IQ4_NL,
        T::Q2_0 | T::Q2_K | T::Q3_K | T::TQ1_0 | T::TQ2_0 => T::Q4_0,
        T::Q4_K => T::Q5_0,
        T::Q5_K => T::Q5_1,
        T::Q6_K => T::Q8_0,
        other if other.block_size() <= 32 => other,
        other => {
            return Err(PlanError::NoFallback {
                tensor: name.to_string(),
                width,
                ty: other,
            });
        }
    };
    if width.is_multiple_of(fallback.block_size() as u64) {
        Ok(fallback)
    } else {
        Ok(T::F16)
    }
}

struct Counters {
    n_attention_wv: u32,
    i_attention_wv: u32,
    n_ffn: u32,
    i_ffn_down: u32,
    i_ffn_gate: u32,
    i_ffn_up: u32,
    tied_embeddings: bool,
}

fn use_more_bits(i_layer: u32, n_layers: u32) -> bool {
    let i = i_layer as i64;
    let n = n_layers as i64;
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The layer index a counter-driven rule uses: the counter, or, for MoE models, the layer number
/// parsed from the name (llama.cpp does the same).
fn layer_of(counter: u32, facts: &ModelFacts, name: &str) -> u32 {
    if facts.n_expert > 1 {
        if let Some(rest) = name.strip_prefix("blk.") {
            if let Some(n) = rest.split('.').next().and_then(|s| s.parse().ok()) {
                return n;
            }
        }
    }
    counter
}

/// llama-quantize's per-tensor rules (`llama_tensor_get_type_impl`) for the mixes this tool makes.
fn mix_rule(
    c: &mut Counters,
    facts: &ModelFacts,
    opts: &PlanOptions,
    name: &str,
    width: u64,
    cat: Category,
) -> GgmlType {
    use GgmlType as T;
    use Mix as M;
    let mix = opts.mix;
    let mut t = mix.default_type();
    let falcon = facts.arch == "falcon";
    if cat == Category::Output || (c.tied_embeddings && cat == Category::TokenEmbd) {
        if let Some(o) = opts.output_tensor_type {
            return o;
        }
        if let M::Qe { bits, pool } = mix {
            return qe_output_type(bits, pool).unwrap_or(t);
        }
        if falcon || !width.is_multiple_of(t.block_size() as u64) {
            return T::Q8_0;
        }
        if t != T::Q8_0 {
            return T::Q6_K;
        }
        return t;
    }
    if cat == Category::TokenEmbd {
        return opts.token_embedding_type.unwrap_or(t);
    }
    if mix.is_qe() {
        // One QE type for every other matrix; per-tensor choices via --tensor-type.
        return t;
    }
    let n_layer = c.n_ffn;
    if is_attn_v_like(cat) {
        let gqa4 = facts.n_gqa() >= 4;
        match mix {
            M::Q2_K => t = if gqa4 { T::Q4_K } else { T::Q3_K },
            M::Q2_K_S if gqa4 => t = T::Q4_K,
            M::Q3_K_M => {
                t = if c.i_attention_wv < 2 {
                    T::Q5_K
                } else {
                    T::Q4_K
                }
            }
            M::Q3_K_L => t = T::Q5_K,
            M::IQ4_NL | M::IQ4_XS if gqa4 => t = T::Q5_K,
            M::Q4_K_M | M::Q5_K_M if use_more_bits(c.i_attention_wv, c.n_attention_wv) => {
                t = T::Q6_K
            }
            M::Q4_K_S if c.i_attention_wv < 4 => t = T::Q5_K,
            _ => {}
        }
        if facts.n_expert == 8 {
            t = T::Q8_0;
        }
        c.i_attention_wv += 1;
    } else if cat == Category::AttnK {
        if facts.n_expert == 8 {
            t = T::Q8_0;
        }
    } else if cat == Category::FfnDown {
        let i_layer = layer_of(c.i_ffn_down, facts, name);
        match mix {
            M::Q2_K => t = T::Q3_K,
            M::Q2_K_S if i_layer < n_layer / 8 => t = T::Q4_K,
            M::Q3_K_M => {
                t = if i_layer < n_layer / 16 {
                    T::Q5_K
                } else if !falcon || use_more_bits(i_layer, n_layer) {
                    T::Q4_K
                } else {
                    T::Q3_K
                }
            }
            M::Q3_K_L => t = if falcon { T::Q4_K } else { T::Q5_K },
            M::Q4_K_M => {
                if falcon {
                    t = if i_layer < n_layer / 16 {
                        T::Q6_K
                    } else if use_more_bits(i_layer, n_layer) {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    };
                } else if use_more_bits(i_layer, n_layer) {
                    t = T::Q6_K;
                }
            }
            M::IQ4_NL | M::IQ4_XS if i_layer < n_layer / 8 && !opts.has_imatrix => t = T::Q5_K,
            M::Q5_K_M if use_more_bits(i_layer, n_layer) => t = T::Q6_K,
            M::Q4_K_S if !falcon && i_layer < n_layer / 8 => t = T::Q5_K,
            M::Q4_0 | M::Q5_0 if opts.has_imatrix && i_layer < n_layer / 8 => {
                t = if mix == M::Q4_0 { T::Q4_1 } else { T::Q5_1 }
            }
            _ => {}
        }
        c.i_ffn_down += 1;
    } else if cat == Category::AttnOutput {
        if !falcon {
            if facts.n_expert == 8 {
                if matches!(
                    mix,
                    M::Q2_K | M::Q3_K_S | M::Q3_K_M | M::IQ4_NL | M::Q4_K_S | M::Q4_K_M | M::IQ4_XS
                ) {
                    t = T::Q5_K;
                }
            } else {
                match mix {
                    M::Q2_K => t = T::Q3_K,
                    M::Q3_K_M => t = T::Q4_K,
                    M::Q3_K_L => t = T::Q5_K,
                    _ => {}
                }
            }
        } else if mix == M::Q3_K_L {
            t = T::Q4_K;
        }
    } else if cat == Category::AttnQkv {
        match mix {
            M::Q3_K_M | M::Q3_K_L => t = T::Q4_K,
            M::Q4_K_M => t = T::Q5_K,
            M::Q5_K_M => t = T::Q6_K,
            _ => {}
        }
    } else if cat == Category::FfnGate {
        c.i_ffn_gate += 1;
    } else if cat == Category::FfnUp {
        c.i_ffn_up += 1;
    }
    t
}

/// The order llama.cpp's model loader keeps tensors in (a `std::map` with a comparator): by the
/// layer number of `blk.N.` names (−1 for the others), then by name bytes.
fn visit_key(name: &str) -> (i64, &[u8]) {
    let layer = name
        .strip_prefix("blk.")
        .and_then(|rest| {
            let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
            rest[..digits].parse::<i64>().ok()
        })
        .unwrap_or(-1);
    (layer, name.as_bytes())
}

/// Plan the output type of every tensor. The result is in the same order as `tensors`.
pub fn plan(
    tensors: &[TensorShape],
    facts: &ModelFacts,
    opts: &PlanOptions,
) -> Result<Vec<PlannedTensor>, PlanError> {
    let mut counters = Counters {
        n_attention_wv: tensors
            .iter()
            .filter(|t| is_attn_v_like(category(&t.name)))
            .count() as u32,
        i_attention_wv: 0,
        n_ffn: facts.n_layer,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        tied_embeddings: !tensors.iter().any(|t| t.name == "output.weight"),
    };
    // llama.cpp visits tensors in its loader's order (layer number, then name); counters depend on it.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| visit_key(&tensors[a].name).cmp(&visit_key(&tensors[b].name)));
    let default_type = opts.mix.default_type();
    let mut out: Vec<Option<PlannedTensor>> = vec![None; tensors.len()];
    for idx in order {
        let t = &tensors[idx];
        let width = t.dims.first().copied().unwrap_or(0);
        let cat = category(&t.name);
        let mut planned = PlannedTensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            source_type: t.source_type,
            target_type: t.source_type,
            quantize: false,
            fallback_from: None,
            manual: false,
        };
        let why;
        if !allows_quantization(&t.name, &t.dims) {
            out[idx] = Some(planned);
            continue;
        }
        let chosen = if let (Some(ty), Category::TokenEmbd) = (opts.token_embedding_type, cat) {
            why = "--token-embedding-type".to_string();
            ty
        } else if let (Some(ty), Category::Output) = (opts.output_tensor_type, cat) {
            why = "--output-tensor-type".to_string();
            ty
        } else if default_type.is_quantized() {
            let manual = opts
                .tensor_types
                .iter()
                .find(|(re, _)| re.is_match(&t.name));
            let mut ty = if let Some((re, ty)) = manual {
                planned.manual = true;
                why = format!("--tensor-type {}", re.as_str());
                *ty
            } else if opts.pure {
                why = format!("--pure {}", opts.mix);
                default_type
            } else {
                why = format!("mix {}", opts.mix);
                mix_rule(&mut counters, facts, opts, &t.name, width, cat)
            };
            let fb = width_fallback(&t.name, width, ty)?;
            if fb != ty {
                planned.fallback_from = Some(ty);
                ty = fb;
            }
            ty
        } else {
            why = format!("mix {}", opts.mix);
            default_type
        };
        let chosen = match qe_params(chosen) {
            Some((bits, pool)) => {
                let pool = opts
                    .outlier_tensors
                    .iter()
                    .find(|(re, _)| re.is_match(&t.name))
                    .map(|(_, p)| *p)
                    .or(opts.outlier_pool)
                    .unwrap_or(pool);
                qe_type(bits, pool).unwrap_or(chosen)
            }
            None => chosen,
        };
        if !quantease_formats::can_quantize(chosen) {
            return Err(PlanError::UnsupportedTarget {
                tensor: t.name.clone(),
                ty: chosen,
                why,
            });
        }
        if width % chosen.block_size() as u64 != 0 {
            return Err(PlanError::NoFallback {
                tensor: t.name.clone(),
                width,
                ty: chosen,
            });
        }
        if chosen != t.source_type && !quantease_formats::can_dequantize(t.source_type) {
            return Err(PlanError::UnsupportedSource {
                tensor: t.name.clone(),
                ty: t.source_type,
            });
        }
        planned.target_type = chosen;
        planned.quantize = chosen != t.source_type;
        out[idx] = Some(planned);
    }
    Ok(out
        .into_iter()
        .map(|p| p.expect("every tensor planned"))
        .collect())
}

/// The plan of `dequantize`: every tensor stored in a quantised type becomes `float`
/// (F32, F16 or BF16); float tensors of another float type are converted too, so the file holds
/// one float type throughout; 1-D tensors stay F32 as llama.cpp expects.
pub fn dequantize_plan(tensors: &[TensorShape], float: GgmlType) -> Vec<PlannedTensor> {
    tensors
        .iter()
        .map(|t| {
            let target = if t.dims.len() < 2 && t.source_type == GgmlType::F32 {
                GgmlType::F32
            } else {
                float
            };
            PlannedTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                source_type: t.source_type,
                target_type: target,
                quantize: target != t.source_type,
                fallback_from: None,
                manual: false,
            }
        })
        .collect()
}

/// Totals of a plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanTotals {
    /// Weights in all tensors.
    pub n_elements: u64,
    /// Output tensor bytes.
    pub bytes: u64,
    /// Source tensor bytes.
    pub source_bytes: u64,
    /// Tensors that fell back to another type because of their width.
    pub n_fallback: usize,
    /// Tensors that will be (re)quantised.
    pub n_quantized: usize,
}

impl PlanTotals {
    /// Bits per weight over all tensors.
    pub fn bits_per_weight(&self) -> f64 {
        if self.n_elements == 0 {
            0.0
        } else {
            self.bytes as f64 * 8.0 / self.n_elements as f64
        }
    }
}

/// Sum a plan.
pub fn totals(plan: &[PlannedTensor]) -> PlanTotals {
    let mut t = PlanTotals::default();
    for p in plan {
        t.n_elements += p.n_elements();
        t.bytes += p.target_bytes();
        t.source_bytes += p.source_bytes();
        t.n_fallback += p.fallback_from.is_some() as usize;
        t.n_quantized += p.quantize as usize;
    }
    t
}

impl ModelFacts {
    /// Read the facts from GGUF metadata (`general.architecture`, `{arch}.block_count`,
    /// `{arch}.attention.head_count[_kv]`, `{arch}.expert_count`). Missing keys read as 0.
    pub fn from_metadata(md: &[(String, crate::gguf::MetaValue)]) -> ModelFacts {
        let get = |k: &str| md.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        let arch = get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let num = |suffix: &str| {
            get(&format!("{arch}.{suffix}"))
                .and_then(|v| v.as_u64().or_else(|| v.as_array().and_then(first_u64)))
                .unwrap_or(0) as u32
        };
        let n_head = num("attention.head_count");
        let n_head_kv = match num("attention.head_count_kv") {
            0 => n_head,
            n => n,
        };
        ModelFacts {
            n_layer: num("block_count"),
            n_head,
            n_head_kv,
            n_expert: num("expert_count"),
            arch,
        }
    }
}

/// Per-layer hyper-parameters are sometimes arrays; llama.cpp then uses the first layer's value
/// for these rules.
fn first_u64(a: &crate::gguf::MetaArray) -> Option<u64> {
    use crate::gguf::MetaArray as A;
    match a {
        A::U32(v) => v.first().map(|&x| x as u64),
        A::I32(v) => v.first().and_then(|&x| u64::try_from(x).ok()),
        A::U64(v) => v.first().copied(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smol_like(n_layer: u32, width: u64) -> (Vec<TensorShape>, ModelFacts) {
        let mut ts = vec![TensorShape {
            name: "token_embd.weight".into(),
            dims: vec![width, 1000],
            source_type: GgmlType::F32,
        }];
        for l in 0..n_layer {
            for (n, d) in [
                ("attn_norm.weight", vec![width]),
                ("attn_q.weight", vec![width, width]),
                ("attn_k.weight", vec![width, width / 3]),
                ("attn_v.weight", vec![width, width / 3]),
                ("attn_output.weight", vec![width, width]),
                ("ffn_gate.weight", vec![width, 4 * width]),
                ("ffn_up.weight", vec![width, 4 * width]),
                ("ffn_down.weight", vec![4 * width, width]),
            ] {
                ts.push(TensorShape {
                    name: format!("blk.{l}.{n}"),
                    dims: d,
                    source_type: GgmlType::F32,
                });
            }
        }
        let facts = ModelFacts {
            arch: "llama".into(),
            n_layer,
            n_head: 9,
            n_head_kv: 3,
            n_expert: 0,
        };
        (ts, facts)
    }

    fn opts(mix: Mix) -> PlanOptions {
        PlanOptions {
            outlier_pool: None,
            outlier_tensors: Vec::new(),
            mix,
            tensor_types: vec![],
            output_tensor_type: None,
            token_embedding_type: None,
            pure: false,
            has_imatrix: false,
        }
    }

    #[test]
    fn q4_k_m_bumps_attn_v_and_ffn_down_in_layer_order() {
        let (ts, facts) = smol_like(16, 512);
        let p = plan(&ts, &facts, &opts(Mix::Q4_K_M)).unwrap();
        let get = |n: &str| p.iter().find(|t| t.name == n).unwrap().target_type;
        // Tied embeddings: token_embd is treated like output → Q6_K.
        assert_eq!(get("token_embd.weight"), GgmlType::Q6_K);
        assert_eq!(get("blk.0.attn_norm.weight"), GgmlType::F32);
        assert_eq!(get("blk.0.attn_q.weight"), GgmlType::Q4_K);
        // Layer order: n = 16, more bits for i < 2, i >= 14, and (i - 2) % 3 == 2.
        assert_eq!(get("blk.0.attn_v.weight"), GgmlType::Q6_K);
        assert_eq!(get("blk.1.attn_v.weight"), GgmlType::Q6_K);
        assert_eq!(get("blk.2.attn_v.weight"), GgmlType::Q4_K);
        assert_eq!(get("blk.4.attn_v.weight"), GgmlType::Q6_K);
        assert_eq!(get("blk.10.attn_v.weight"), GgmlType::Q6_K);
        assert_eq!(get("blk.11.ffn_down.weight"), GgmlType::Q4_K);
        assert_eq!(get("blk.15.ffn_down.weight"), GgmlType::Q6_K);
    }

    #[test]
    fn width_576_falls_back_like_llama_cpp() {
        let (ts, facts) = smol_like(4, 576);
        let p = plan(&ts, &facts, &opts(Mix::Q2_K)).unwrap();
        let get = |n: &str| p.iter().find(|t| t.name == n).unwrap().clone();
        // output/tied embd: width not a multiple of 256 → Q8_0.
        assert_eq!(get("token_embd.weight").target_type, GgmlType::Q8_0);
        let q = get("blk.0.attn_q.weight");
        assert_eq!(q.target_type, GgmlType::Q4_0);
        assert_eq!(q.fallback_from, Some(GgmlType::Q2_K));
        // ffn_down of Q2_K is Q3_K → Q4_0 as well (width 2304 = 9·256 holds Q3_K though).
        assert_eq!(get("blk.0.ffn_down.weight").target_type, GgmlType::Q3_K);
        assert!(totals(&p).n_fallback > 0);
    }

    #[test]
    fn overrides_and_pure() {
        let (ts, facts) = smol_like(2, 512);
        let mut o = opts(Mix::Q4_K_M);
        o.pure = true;
        o.tensor_types = vec![(Regex::new("ffn_down").unwrap(), GgmlType::Q8_0)];
        o.token_embedding_type = Some(GgmlType::Q4_0);
        let p = plan(&ts, &facts, &o).unwrap();
        let get = |n: &str| p.iter().find(|t| t.name == n).unwrap().clone();
        assert_eq!(get("blk.0.attn_v.weight").target_type, GgmlType::Q4_K);
        assert_eq!(get("blk.0.ffn_down.weight").target_type, GgmlType::Q8_0);
        assert!(get("blk.0.ffn_down.weight").manual);
        assert_eq!(get("token_embd.weight").target_type, GgmlType::Q4_0);
    }

    #[test]
    fn mix_names_and_bits() {
        for &m in Mix::ALL {
            assert_eq!(Mix::from_name(m.name()), Some(m));
        }
        assert_eq!(Mix::from_name("q4_k"), Some(Mix::Q4_K_M));
        assert_eq!(Mix::from_bits(3), Some(Mix::Q3_K_M));
        assert_eq!(Mix::from_bits(7), None);
    }
}

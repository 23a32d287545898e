//! Architectures: which Hugging Face model classes we convert, the GGUF hyper-parameters llama.cpp
//! reads for them (from `config.json`), and how tensor names and layouts map.

use super::{Config, HfError};
use crate::gguf::MetaValue;

/// A supported Hugging Face architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    /// The class name in `config.json` `architectures`.
    pub hf: &'static str,
    /// `general.architecture` in GGUF.
    pub gguf: &'static str,
    /// Whether Q/K rows are permuted into the rotary layout llama.cpp's llama graph expects
    /// (HF stores the two rotary halves of a head apart; llama.cpp interleaves them).
    pub permute_qk: bool,
    /// Whether `{arch}.vocab_size` and `{arch}.rope.dimension_count` are written (llama.cpp's
    /// converter does so for the llama family, not for Qwen2).
    pub vocab_and_rope_dims: bool,
}

/// Every architecture this converter knows, by HF class name.
pub const ARCHES: &[Arch] = &[
    Arch {
        hf: "LlamaForCausalLM",
        gguf: "llama",
        permute_qk: true,
        vocab_and_rope_dims: true,
    },
    Arch {
        hf: "MistralForCausalLM",
        gguf: "llama",
        permute_qk: true,
        vocab_and_rope_dims: true,
    },
    Arch {
        hf: "Qwen2ForCausalLM",
        gguf: "qwen2",
        permute_qk: false,
        vocab_and_rope_dims: false,
    },
];

impl Arch {
    /// Pick the architecture from `config.json` `architectures` (first known entry).
    pub fn from_config(cfg: &Config) -> Result<Arch, HfError> {
        let names = cfg.str_list("architectures")?;
        if names.is_empty() {
            return Err(cfg.field_err("architectures", "missing or empty".into()));
        }
        names
            .iter()
            .find_map(|n| ARCHES.iter().find(|a| a.hf == n).copied())
            .ok_or_else(|| HfError::UnknownArchitecture {
                path: cfg.path.clone(),
                arch: names.join(", "),
                known: ARCHES.iter().map(|a| a.hf).collect::<Vec<_>>().join(", "),
            })
    }
}

/// The hyper-parameters of a model, as read from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct HParams {
    /// `num_hidden_layers`.
    pub n_layer: u64,
    /// `hidden_size`.
    pub n_embd: u64,
    /// `num_attention_heads`.
    pub n_head: u64,
    /// `num_key_value_heads` (defaults to `n_head`).
    pub n_head_kv: u64,
    /// `head_dim` (defaults to `n_embd / n_head`).
    pub head_dim: u64,
}

/// How a tensor is stored relative to what llama.cpp expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Copy as is.
    Plain,
    /// Permute rows (or, for a 1-D bias, elements) per rotary head: `heads` heads.
    RotaryPermute {
        /// Number of heads the rows split into.
        heads: u64,
    },
}

/// Check the config's numbers and produce the GGUF `{arch}.*` metadata.
pub fn hparams(cfg: &Config, arch: &Arch) -> Result<(HParams, Vec<(String, MetaValue)>), HfError> {
    let a = arch.gguf;
    let n_ctx = cfg.req_u64("max_position_embeddings")?;
    let n_embd = cfg.req_u64("hidden_size")?;
    let n_ff = cfg.req_u64("intermediate_size")?;
    let n_layer = cfg.req_u64("num_hidden_layers")?;
    let n_head = cfg.req_u64("num_attention_heads")?;
    let n_head_kv_cfg = cfg.opt_u64("num_key_value_heads")?;
    let rms_eps = cfg.req_f64("rms_norm_eps")?;
    let rope_theta = cfg.opt_f64("rope_theta")?;
    let head_dim_cfg = cfg.opt_u64("head_dim")?;
    for (k, v) in [
        ("hidden_size", n_embd),
        ("num_hidden_layers", n_layer),
        ("num_attention_heads", n_head),
        ("intermediate_size", n_ff),
    ] {
        if v == 0 || v > u32::MAX as u64 {
            return Err(cfg.field_err(k, format!("{v} is out of range")));
        }
    }
    let n_head_kv = n_head_kv_cfg.unwrap_or(n_head);
    if n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(cfg.field_err(
            "num_key_value_heads",
            format!("{n_head_kv} does not divide num_attention_heads {n_head}"),
        ));
    }
    let head_dim = match head_dim_cfg {
        Some(d) if d > 0 && d <= u32::MAX as u64 => d,
        Some(d) => return Err(cfg.field_err("head_dim", format!("{d} is out of range"))),
        None if n_embd % n_head == 0 => n_embd / n_head,
        None => {
            return Err(cfg.field_err(
                "hidden_size",
                format!("{n_embd} is not a multiple of num_attention_heads {n_head}"),
            ))
        }
    };
    let u32v = |v: u64| MetaValue::U32(v as u32);
    let mut md = vec![
        (format!("{a}.block_count"), u32v(n_layer)),
        (
            format!("{a}.context_length"),
            u32v(n_ctx.min(u32::MAX as u64)),
        ),
        (format!("{a}.embedding_length"), u32v(n_embd)),
        (format!("{a}.feed_forward_length"), u32v(n_ff)),
        (format!("{a}.attention.head_count"), u32v(n_head)),
    ];
    if n_head_kv_cfg.is_some() {
        md.push((format!("{a}.attention.head_count_kv"), u32v(n_head_kv)));
    }
    if let Some(t) = rope_theta {
        md.push((format!("{a}.rope.freq_base"), MetaValue::F32(t as f32)));
    }
    md.push((
        format!("{a}.attention.layer_norm_rms_epsilon"),
        MetaValue::F32(rms_eps as f32),
    ));
    if head_dim_cfg.is_some() {
        md.push((format!("{a}.attention.key_length"), u32v(head_dim)));
        md.push((format!("{a}.attention.value_length"), u32v(head_dim)));
    }
    if arch.vocab_and_rope_dims {
        if let Some(v) = cfg.opt_u64("vocab_size")? {
            md.push((format!("{a}.vocab_size"), u32v(v)));
        }
        md.push((format!("{a}.rope.dimension_count"), u32v(head_dim)));
    }
    md.extend(rope_scaling_metadata(cfg, a)?);
    Ok((
        HParams {
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
        },
        md,
    ))
}

/// A `rope_scaling` object: its type and its fields.
type RopeScaling = (String, serde_json::Map<String, serde_json::Value>);

/// The `rope_scaling` object: its type (`type` or `rope_type`) and its fields.
fn rope_scaling(cfg: &Config) -> Result<Option<RopeScaling>, HfError> {
    match cfg.json.get("rope_scaling") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(m)) => {
            let ty = m
                .get("rope_type")
                .or_else(|| m.get("type"))
                .and_then(|v| v.as_str())
                .ok_or_else(|| {
                    cfg.field_err("rope_scaling.rope_type", "missing or not a string".into())
                })?;
            Ok(Some((ty.to_string(), m.clone())))
        }
        Some(_) => Err(cfg.field_err("rope_scaling", "is not an object".into())),
    }
}

fn scaling_f64(
    cfg: &Config,
    m: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<f64, HfError> {
    m.get(key)
        .and_then(|v| v.as_f64())
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            cfg.field_err(
                &format!("rope_scaling.{key}"),
                "missing or not a finite number".into(),
            )
        })
}

fn rope_scaling_metadata(cfg: &Config, a: &str) -> Result<Vec<(String, MetaValue)>, HfError> {
    let Some((ty, m)) = rope_scaling(cfg)? else {
        return Ok(vec![]);
    };
    match ty.as_str() {
        "default" => Ok(vec![]),
        // Encoded as the rope_freqs.weight tensor instead (see `llama3_rope_factors`).
        "llama3" => Ok(vec![]),
        "linear" => Ok(vec![
            (
                format!("{a}.rope.scaling.type"),
                MetaValue::string("linear"),
            ),
            (
                format!("{a}.rope.scaling.factor"),
                MetaValue::F32(scaling_f64(cfg, &m, "factor")? as f32),
            ),
        ]),
        "yarn" => {
            let mut md = vec![
                (format!("{a}.rope.scaling.type"), MetaValue::string("yarn")),
                (
                    format!("{a}.rope.scaling.factor"),
                    MetaValue::F32(scaling_f64(cfg, &m, "factor")? as f32),
                ),
            ];
            if let Some(orig) = m
                .get("original_max_position_embeddings")
                .and_then(|v| v.as_u64())
            {
                md.push((
                    format!("{a}.rope.scaling.original_context_length"),
                    MetaValue::U32(orig.min(u32::MAX as u64) as u32),
                ));
            }
            Ok(md)
        }
        other => Err(cfg.field_err(
            "rope_scaling.rope_type",
            format!("'{other}' is not supported (known: default, linear, yarn, llama3)"),
        )),
    }
}

/// Llama 3.1-style frequency factors (`rope_scaling.rope_type = "llama3"`), one per rotary pair,
/// which llama.cpp reads from a `rope_freqs.weight` tensor. `None` when the model has no such
/// scaling.
pub fn llama3_rope_factors(cfg: &Config, hp: &HParams) -> Result<Option<Vec<f32>>, HfError> {
    let Some((ty, m)) = rope_scaling(cfg)? else {
        return Ok(None);
    };
    if ty != "llama3" {
        return Ok(None);
    }
    let base = cfg.opt_f64("rope_theta")?.unwrap_or(10000.0);
    let factor = scaling_f64(cfg, &m, "factor")?;
    let low = scaling_f64(cfg, &m, "low_freq_factor")?;
    let high = scaling_f64(cfg, &m, "high_freq_factor")?;
    let old_ctx = scaling_f64(cfg, &m, "original_max_position_embeddings")?;
    if high <= low || factor <= 0.0 || low <= 0.0 {
        return Err(cfg.field_err(
            "rope_scaling",
            format!(
                "factor {factor}, low_freq_factor {low}, high_freq_factor {high} are inconsistent"
            ),
        ));
    }
    let dim = hp.head_dim as f64;
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    let factors = (0..hp.head_dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf((2 * i) as f64 / dim);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect();
    Ok(Some(factors))
}

/// Map an HF tensor name to its GGUF name and layout. `Ok(None)` for tensors llama.cpp does not
/// use (rotary `inv_freq` buffers); an error for names this architecture does not have.
pub fn map_tensor(name: &str, arch: &Arch, hp: &HParams) -> Option<Option<(String, Layout)>> {
    let plain = |s: String| Some(Some((s, Layout::Plain)));
    match name {
        "model.embed_tokens.weight" => return plain("token_embd.weight".into()),
        "model.norm.weight" => return plain("output_norm.weight".into()),
        "lm_head.weight" => return plain("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (idx, suffix) = rest.split_once('.')?;
    if idx.is_empty()
        || !idx.bytes().all(|b| b.is_ascii_digit())
        || (idx.len() > 1 && idx.starts_with('0'))
    {
        return None;
    }
    let layer: u64 = idx.parse().ok()?;
    if layer >= hp.n_layer {
        return None;
    }
    if suffix == "self_attn.rotary_emb.inv_freq" {
        return Some(None);
    }
    let (module, kind) = suffix.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let rot = |heads: u64| {
        if arch.permute_qk {
            Layout::RotaryPermute { heads }
        } else {
            Layout::Plain
        }
    };
    let (gguf, layout) = match (module, kind) {
        ("input_layernorm", "weight") => ("attn_norm", Layout::Plain),
        ("post_attention_layernorm", "weight") => ("ffn_norm", Layout::Plain),
        ("self_attn.q_proj", _) => ("attn_q", rot(hp.n_head)),
        ("self_attn.k_proj", _) => ("attn_k", rot(hp.n_head_kv)),
        ("self_attn.v_proj", _) => ("attn_v", Layout::Plain),
        ("self_attn.o_proj", "weight") => ("attn_output", Layout::Plain),
        ("mlp.gate_proj", "weight") => ("ffn_gate", Layout::Plain),
        ("mlp.up_proj", "weight") => ("ffn_up", Layout::Plain),
        ("mlp.down_proj", "weight") => ("ffn_down", Layout::Plain),
        _ => return None,
    };
    Some(Some((format!("blk.{layer}.{gguf}.{kind}"), layout)))
}

/// For a [`Layout::RotaryPermute`] tensor with `rows` rows: the HF row holding GGUF row `r`.
///
/// Within each head of `d = rows / heads` rows, HF stores the first rotary component of every pair
/// in rows `0..d/2` and the second in `d/2..d`; llama.cpp wants them interleaved, so GGUF row
/// `h·d + 2i + j` is HF row `h·d + j·d/2 + i`.
pub fn rotary_source_row(r: usize, rows: usize, heads: usize) -> usize {
    let d = rows / heads;
    let (h, within) = (r / d, r % d);
    let (i, j) = (within / 2, within % 2);
    h * d + j * (d / 2) + i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_permutation_matches_reshape_swap() {
        // GGUF = HF.reshape(heads, 2, d/2).swapaxes(1, 2).reshape(rows), written out by hand.
        let (heads, d) = (3usize, 8usize);
        let rows = heads * d;
        let mut expect = Vec::new();
        for h in 0..heads {
            for i in 0..d / 2 {
                for j in 0..2 {
                    expect.push(h * d + j * (d / 2) + i);
                }
            }
        }
        let got: Vec<usize> = (0..rows)
            .map(|r| rotary_source_row(r, rows, heads))
            .collect();
        assert_eq!(got, expect);
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, (0..rows).collect::<Vec<_>>(), "a permutation");
        assert_ne!(got, (0..rows).collect::<Vec<_>>());
    }

    fn hp() -> HParams {
        HParams {
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 16,
        }
    }

    #[test]
    fn names_map() {
        let llama = ARCHES[0];
        let qwen = ARCHES[2];
        assert_eq!(
            map_tensor("model.layers.1.self_attn.k_proj.weight", &llama, &hp()),
            Some(Some((
                "blk.1.attn_k.weight".into(),
                Layout::RotaryPermute { heads: 2 }
            )))
        );
        assert_eq!(
            map_tensor("model.layers.1.self_attn.q_proj.bias", &qwen, &hp()),
            Some(Some(("blk.1.attn_q.bias".into(), Layout::Plain)))
        );
        assert_eq!(
            map_tensor("model.layers.2.mlp.up_proj.weight", &llama, &hp()),
            None,
            "layer out of range"
        );
        assert_eq!(
            map_tensor("model.layers.01.mlp.up_proj.weight", &llama, &hp()),
            None
        );
        assert_eq!(
            map_tensor(
                "model.layers.0.self_attn.rotary_emb.inv_freq",
                &llama,
                &hp()
            ),
            Some(None)
        );
        assert_eq!(
            map_tensor("model.layers.0.mlp.experts.weight", &llama, &hp()),
            None
        );
        assert_eq!(
            map_tensor("lm_head.weight", &llama, &hp()),
            Some(Some(("output.weight".into(), Layout::Plain)))
        );
    }
}

use super::*;
use serde_json::json;

/// Write a safetensors file of (name, dtype, shape, little-endian bytes).
fn write_st(path: &Path, tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let begin = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            (*name).into(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let h = serde_json::Value::Object(header).to_string();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

fn f32s(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bf16s(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter()
        .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
        .collect()
}

/// A 1-layer llama-like model: width 8, 2 heads of 4, 1 KV head, vocab 6.
fn tiny(dir: &Path, arch: &str, extra_cfg: serde_json::Value) {
    let mut cfg = json!({
        "architectures": [arch], "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": 6
    });
    for (k, v) in extra_cfg.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let tok = json!({
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "special": true}, {"id": 4, "content": "<tool>", "special": false}],
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
        "model": {"type": "BPE", "vocab": {"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3, "<tool>": 4}, "merges": [["a", "b"]]}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"}, "add_bos_token": false, "chat_template": "{{x}}"}).to_string(),
    )
    .unwrap();
    let seq = |n: usize| (0..n).map(|i| i as f32);
    write_st(
        &dir.join("model.safetensors"),
        &[
            (
                "model.embed_tokens.weight",
                "BF16",
                vec![6, 8],
                bf16s(seq(48)),
            ),
            ("model.norm.weight", "BF16", vec![8], bf16s(seq(8))),
            (
                "model.layers.0.input_layernorm.weight",
                "F32",
                vec![8],
                f32s(seq(8)),
            ),
            (
                "model.layers.0.post_attention_layernorm.weight",
                "F32",
                vec![8],
                f32s(seq(8)),
            ),
            (
                "model.layers.0.self_attn.q_proj.weight",
                "F32",
                vec![8, 8],
                f32s(seq(64)),
            ),
            (
                "model.layers.0.self_attn.k_proj.weight",
                "F32",
                vec![4, 8],
                f32s(seq(32)),
            ),
            (
                "model.layers.0.self_attn.v_proj.weight",
                "F32",
                vec![4, 8],
                f32s(seq(32)),
            ),
            (
                "model.layers.0.self_attn.o_proj.weight",
                "F32",
                vec![8, 8],
                f32s(seq(64)),
            ),
            (
                "model.layers.0.mlp.gate_proj.weight",
                "F16",
                vec![16, 8],
                seq(128)
                    .flat_map(|x| half::f16::from_f32(x).to_bits().to_le_bytes())
                    .collect(),
            ),
            (
                "model.layers.0.mlp.up_proj.weight",
                "F32",
                vec![16, 8],
                f32s(seq(128)),
            ),
            (
                "model.layers.0.mlp.down_proj.weight",
                "F32",
                vec![8, 16],
                f32s(seq(128)),
            ),
            (
                "model.layers.0.self_attn.rotary_emb.inv_freq",
                "F32",
                vec![2],
                f32s(seq(2)),
            ),
        ],
    );
}

fn meta<'a>(s: &'a HfSource, key: &str) -> Option<&'a MetaValue> {
    s.metadata().iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn rows(s: &HfSource, name: &str) -> Vec<f32> {
    let i = s.tensors().iter().position(|t| t.name == name).unwrap();
    let t = &s.tensors()[i];
    let mut out = vec![0f32; t.dims.iter().product::<u64>() as usize];
    s.read_rows(i, 0, &mut out).unwrap();
    out
}

#[test]
fn llama_metadata_names_and_permutation() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path(), "LlamaForCausalLM", json!({}));
    let s = HfSource::open(d.path(), None).unwrap();
    assert_eq!(
        meta(&s, "general.architecture").unwrap().as_str(),
        Some("llama")
    );
    assert_eq!(
        meta(&s, "llama.attention.head_count_kv").unwrap().as_u64(),
        Some(1)
    );
    assert_eq!(
        meta(&s, "llama.rope.dimension_count").unwrap().as_u64(),
        Some(4)
    );
    assert_eq!(meta(&s, "llama.vocab_size").unwrap().as_u64(), Some(6));
    assert_eq!(
        meta(&s, "tokenizer.ggml.pre").unwrap().as_str(),
        Some("smollm")
    );
    assert_eq!(
        meta(&s, "tokenizer.ggml.bos_token_id").unwrap().as_u64(),
        Some(0)
    );
    assert_eq!(
        meta(&s, "tokenizer.ggml.eos_token_id").unwrap().as_u64(),
        Some(0)
    );
    assert_eq!(
        meta(&s, "tokenizer.ggml.add_bos_token").unwrap().as_bool(),
        Some(false)
    );
    assert_eq!(
        meta(&s, "tokenizer.chat_template").unwrap().as_str(),
        Some("{{x}}")
    );
    let toks = meta(&s, "tokenizer.ggml.tokens")
        .unwrap()
        .as_array()
        .unwrap()
        .strings()
        .unwrap();
    assert_eq!(
        toks,
        vec!["<|endoftext|>", "a", "b", "ab", "<tool>", "[PAD5]"]
    );
    let types = meta(&s, "tokenizer.ggml.token_type")
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(types, crate::gguf::MetaArray::I32(vec![3, 1, 1, 1, 4, 5]));
    let merges = meta(&s, "tokenizer.ggml.merges")
        .unwrap()
        .as_array()
        .unwrap()
        .strings()
        .unwrap();
    assert_eq!(merges, vec!["a b"]);

    let names: Vec<&str> = s.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names[0], "token_embd.weight");
    assert_eq!(*names.last().unwrap(), "output_norm.weight");
    assert!(!names
        .iter()
        .any(|n| n.contains("inv_freq") || n.contains("rotary")));
    assert_eq!(names.len(), 11);
    let emb = &s.tensors()[0];
    assert_eq!((emb.dims.clone(), emb.ty), (vec![8, 6], GgmlType::BF16));
    assert!(s.raw(0).is_some(), "BF16 matrix is copied as is");
    let norm = s
        .tensors()
        .iter()
        .position(|t| t.name == "output_norm.weight")
        .unwrap();
    assert_eq!(s.tensors()[norm].ty, GgmlType::F32, "vectors become F32");
    assert!(s.raw(norm).is_none());
    assert_eq!(
        rows(&s, "output_norm.weight"),
        (0..8).map(|i| i as f32).collect::<Vec<_>>()
    );
    assert_eq!(rows(&s, "blk.0.ffn_gate.weight")[127], 127.0);

    // Q: 2 heads of 4 rows; GGUF row order within a head is 0, 2, 1, 3.
    let q = rows(&s, "blk.0.attn_q.weight");
    let row_of = |v: &[f32], r: usize| v[r * 8] as usize / 8;
    assert_eq!(
        (0..8).map(|r| row_of(&q, r)).collect::<Vec<_>>(),
        vec![0, 2, 1, 3, 4, 6, 5, 7]
    );
    let k = rows(&s, "blk.0.attn_k.weight");
    assert_eq!(
        (0..4).map(|r| row_of(&k, r)).collect::<Vec<_>>(),
        vec![0, 2, 1, 3]
    );
    let v = rows(&s, "blk.0.attn_v.weight");
    assert_eq!(
        (0..4).map(|r| row_of(&v, r)).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    // Reading from a row offset gives the same rows.
    let qi = s
        .tensors()
        .iter()
        .position(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    let mut two = vec![0f32; 16];
    s.read_rows(qi, 5, &mut two).unwrap();
    assert_eq!(&two[..], &q[40..56]);
    assert!(s.read_rows(qi, 7, &mut two).is_err());
}

#[test]
fn qwen2_is_not_permuted_and_unknowns_are_errors() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path(), "Qwen2ForCausalLM", json!({}));
    // A Digits pre-tokenizer is SmolLM's, which is llama-arch only.
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(e.contains("pre_tokenizer") && e.contains("Digits"), "{e}");
    let mut tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("tokenizer.json")).unwrap()).unwrap();
    tok["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]});
    std::fs::write(d.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let s = HfSource::open(d.path(), None).unwrap();
    assert_eq!(
        meta(&s, "tokenizer.ggml.pre").unwrap().as_str(),
        Some("qwen2")
    );
    assert!(meta(&s, "qwen2.rope.dimension_count").is_none());
    let q = rows(&s, "blk.0.attn_q.weight");
    assert_eq!(q[8], 8.0, "rows in HF order");

    std::fs::write(
        d.path().join("config.json"),
        json!({"architectures": ["GPTNeoXForCausalLM"]}).to_string(),
    )
    .unwrap();
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(
        e.contains("config.json")
            && e.contains("GPTNeoXForCausalLM")
            && e.contains("not supported"),
        "{e}"
    );
}

#[test]
fn bad_tensors_and_config_fields_are_named() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path(), "LlamaForCausalLM", json!({"rms_norm_eps": "x"}));
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(
        e.contains("config.json") && e.contains("rms_norm_eps"),
        "{e}"
    );

    tiny(d.path(), "LlamaForCausalLM", json!({}));
    write_st(
        &d.path().join("model.safetensors"),
        &[("model.embed_tokens.weight", "I64", vec![1], vec![0; 8])],
    );
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(
        e.contains("model.embed_tokens.weight") && e.contains("I64"),
        "{e}"
    );
    write_st(
        &d.path().join("model.safetensors"),
        &[(
            "model.layers.0.mlp.experts.0.w1.weight",
            "F32",
            vec![1],
            vec![0; 4],
        )],
    );
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(
        e.contains("model.layers.0.mlp.experts.0.w1.weight") && e.contains("not part of"),
        "{e}"
    );
    write_st(
        &d.path().join("model.safetensors"),
        &[(
            "model.layers.0.self_attn.q_proj.weight",
            "F32",
            vec![6, 1],
            vec![0; 24],
        )],
    );
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(e.contains("q_proj") && e.contains("heads"), "{e}");
}

#[test]
fn llama3_rope_factors() {
    let d = tempfile::tempdir().unwrap();
    tiny(
        d.path(),
        "LlamaForCausalLM",
        json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8}}),
    );
    let s = HfSource::open(d.path(), None).unwrap();
    let f = rows(&s, "rope_freqs.weight");
    // head_dim 4, theta 1e4: wavelengths 2π (< 8/4 = 2? no: 6.28 > 2) and 2π·100; low wavelen 8.
    // pair 0: 6.28 between 2 and 8 → smoothed; pair 1: 628 > 8 → factor 8.
    let smooth = (8.0 / (2.0 * std::f64::consts::PI) - 1.0) / 3.0;
    assert!(
        (f[0] as f64 - 1.0 / ((1.0 - smooth) / 8.0 + smooth)).abs() < 1e-6,
        "{f:?}"
    );
    assert_eq!(f[1], 8.0);
    tiny(
        d.path(),
        "LlamaForCausalLM",
        json!({"rope_scaling": {"type": "dynamic", "factor": 2.0}}),
    );
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(e.contains("rope_scaling") && e.contains("dynamic"), "{e}");
}

#[test]
fn tokenizer_details() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path(), "LlamaForCausalLM", json!({"bos_token_id": 3}));
    let mut tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("tokenizer.json")).unwrap()).unwrap();
    // Llama 3 layout: Split(regex) + ByteLevel, merges as pairs (one with a space), a post-processor
    // that adds BOS.
    tok["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]});
    tok["model"]["merges"] = json!([["a", "b"], ["a b", "c"]]);
    tok["post_processor"] = json!({"type": "Sequence", "processors": [
        {"type": "ByteLevel"},
        {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]}]});
    std::fs::write(d.path().join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(
        d.path().join("tokenizer_config.json"),
        json!({"bos_token": "<|endoftext|>", "eos_token": "<tool>", "unk_token": "no-such-token",
               "chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]})
        .to_string(),
    )
    .unwrap();
    let s = HfSource::open(d.path(), None).unwrap();
    assert_eq!(
        meta(&s, "tokenizer.ggml.pre").unwrap().as_str(),
        Some("llama-bpe")
    );
    let merges = meta(&s, "tokenizer.ggml.merges")
        .unwrap()
        .as_array()
        .unwrap()
        .strings()
        .unwrap();
    assert_eq!(merges, vec!["a b", "a\u{120}b c"]);
    assert_eq!(
        meta(&s, "tokenizer.ggml.add_bos_token").unwrap().as_bool(),
        Some(true)
    );
    assert_eq!(
        meta(&s, "tokenizer.ggml.eos_token_id").unwrap().as_u64(),
        Some(4)
    );
    assert!(
        meta(&s, "tokenizer.ggml.unknown_token_id").is_none(),
        "unknown content is not guessed"
    );
    assert_eq!(
        meta(&s, "tokenizer.chat_template").unwrap().as_str(),
        Some("D")
    );
    assert_eq!(
        meta(&s, "tokenizer.chat_template.tool_use")
            .unwrap()
            .as_str(),
        Some("T")
    );
    assert_eq!(
        meta(&s, "tokenizer.chat_templates")
            .unwrap()
            .as_array()
            .unwrap()
            .strings()
            .unwrap(),
        vec!["tool_use"]
    );
    // Without tokenizer_config's bos_token, config.json's bos_token_id is used.
    std::fs::write(d.path().join("tokenizer_config.json"), "{}").unwrap();
    let s = HfSource::open(d.path(), None).unwrap();
    assert_eq!(
        meta(&s, "tokenizer.ggml.bos_token_id").unwrap().as_u64(),
        Some(3)
    );
    // SentencePiece-style BPE is refused with the field named; a missing tokenizer.json too.
    tok["model"]["byte_fallback"] = json!(true);
    std::fs::write(d.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("byte_fallback"),
        "{e}"
    );
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("required"),
        "{e}"
    );
}

#[test]
fn embedding_rows_must_match_the_vocabulary() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path(), "LlamaForCausalLM", json!({"vocab_size": 7}));
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(
        e.contains("model.safetensors")
            && e.contains("token_embd.weight")
            && e.contains("7 tokens"),
        "{e}"
    );
}

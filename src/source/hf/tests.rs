use super::*;
use crate::gguf::MetaArray;
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
    // Other model types are refused naming the file and the type; a missing tokenizer.json too.
    for t in ["Unigram", "WordPiece", "WordLevel"] {
        tok["model"]["type"] = json!(t);
        std::fs::write(d.path().join("tokenizer.json"), tok.to_string()).unwrap();
        let e = HfSource::open(d.path(), None).err().unwrap().to_string();
        assert!(
            e.contains("tokenizer.json") && e.contains("model.type") && e.contains(t),
            "{e}"
        );
    }
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("required"),
        "{e}"
    );
}

/// Protobuf writing helpers for hand-made `tokenizer.model` files.
fn pb_varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn pb_field(num: u64, wire: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = pb_varint(num << 3 | wire as u64);
    if wire == 2 {
        out.extend(pb_varint(payload.len() as u64));
    }
    out.extend_from_slice(payload);
    out
}

fn pb_piece(piece: &str, score: f32, kind: Option<u64>) -> Vec<u8> {
    let mut p = pb_field(1, 2, piece.as_bytes());
    p.extend(pb_field(2, 5, &score.to_le_bytes()));
    if let Some(k) = kind {
        p.extend(pb_field(3, 0, &pb_varint(k)));
    }
    pb_field(1, 2, &p)
}

/// A 6-piece BPE sentencepiece model: <unk> <s> </s> ▁a b <0x0A>, plus trainer and normalizer
/// specs (`add_dummy_prefix` as given) and an unknown field that must be skipped.
fn spm_proto(add_dummy_prefix: bool, model_type: u64) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend(pb_piece("<unk>", 0.0, Some(2)));
    m.extend(pb_piece("<s>", 0.0, Some(3)));
    m.extend(pb_piece("</s>", 0.0, Some(3)));
    m.extend(pb_piece("\u{2581}a", -1.0, None));
    m.extend(pb_piece("b", -2.0, Some(4)));
    m.extend(pb_piece("<0x0A>", 0.0, Some(6)));
    let mut trainer = pb_field(3, 0, &pb_varint(model_type));
    trainer.extend(pb_field(35, 0, &[1]));
    trainer.extend(pb_field(2, 2, b"prefix")); // model_prefix: skipped
    trainer.extend(pb_field(10, 5, &0.9995f32.to_le_bytes())); // character_coverage: skipped
    m.extend(pb_field(2, 2, &trainer));
    let mut norm = pb_field(1, 2, b"identity");
    norm.extend(pb_field(3, 0, &[add_dummy_prefix as u8]));
    norm.extend(pb_field(4, 0, &[0]));
    m.extend(pb_field(3, 2, &norm));
    m.extend(pb_field(9, 1, &[0; 8])); // an unknown 64-bit field
    m
}

#[test]
fn sentencepiece_model_proto_is_parsed() {
    let path = Path::new("tokenizer.model");
    let m = spm::SpmModel::parse(&spm_proto(false, 2), path).unwrap();
    let pieces: Vec<(&str, f32, i32)> = m
        .pieces
        .iter()
        .map(|p| (p.piece.as_str(), p.score, p.kind))
        .collect();
    assert_eq!(
        pieces,
        vec![
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("\u{2581}a", -1.0, 1),
            ("b", -2.0, 4),
            ("<0x0A>", 0.0, 6)
        ]
    );
    assert_eq!(m.model_type, Some(2));
    assert!(m.byte_fallback && !m.add_dummy_prefix && !m.remove_extra_whitespaces);
    // No trainer spec: model type unknown; defaults for the normalizer.
    let m = spm::SpmModel::parse(&pb_piece("x", 0.5, None), path).unwrap();
    assert_eq!((m.model_type, m.add_dummy_prefix), (None, true));
}

#[test]
fn malformed_sentencepiece_models_are_errors_naming_file_and_field() {
    let path = Path::new("dir/tokenizer.model");
    let good = spm_proto(true, 2);
    // Every truncation fails cleanly (or, cut between top-level fields, parses).
    for n in 0..good.len() {
        match spm::SpmModel::parse(&good[..n], path) {
            Ok(m) => assert!(!m.pieces.is_empty()),
            Err(e) => assert!(e.to_string().contains("dir/tokenizer.model"), "{e}"),
        }
    }
    let cases: Vec<(Vec<u8>, &[&str])> = vec![
        (vec![], &["pieces", "no pieces"]),
        (
            pb_field(1, 2, &pb_field(2, 0, &[1])),
            &["pieces[0].score", "wire type 0"],
        ),
        (
            pb_field(1, 2, &[pb_field(1, 2, b"x"), pb_field(3, 0, &[9])].concat()),
            &["pieces[0].type", "9"],
        ),
        (
            pb_field(
                1,
                2,
                &[
                    pb_field(1, 2, b"x"),
                    pb_field(2, 5, &f32::NAN.to_le_bytes()),
                ]
                .concat(),
            ),
            &["pieces[0].score", "not finite"],
        ),
        (
            pb_field(1, 2, &pb_field(1, 2, &[0xff, 0xfe])),
            &["pieces[0].piece", "UTF-8"],
        ),
        (
            pb_field(1, 2, &pb_field(2, 5, &[0; 4])),
            &["pieces[0].piece", "missing"],
        ),
        (vec![0x0a, 0x80], &["pieces[0]", "varint"]),
        (vec![0x0a, 0x05, 0x0a], &["pieces[0]", "past the end"]),
        (vec![0x0b, 0x00], &["pieces[0]", "wire type 3, expected 2"]),
        (
            vec![0x4b, 0x00],
            &["ModelProto field 9", "unsupported wire type 3"],
        ),
        (vec![0x00], &["field number 0"]),
        (vec![0x88], &["ModelProto", "varint runs past the end"]),
        (
            [pb_piece("x", 0.0, None), vec![0xff; 11]].concat(),
            &["longer than"],
        ),
    ];
    for (bytes, words) in cases {
        let e = spm::SpmModel::parse(&bytes, path)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("dir/tokenizer.model"), "{e}");
        for w in words {
            assert!(e.contains(w), "'{w}' not in: {e}");
        }
    }
}

/// The tiny model of [`tiny`] with a SentencePiece tokenizer instead (6 tokens).
fn tiny_spm(dir: &Path, with_model: bool, with_json: bool) {
    tiny(dir, "MistralForCausalLM", json!({"sliding_window": 4096}));
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    if with_model {
        std::fs::write(dir.join("tokenizer.model"), spm_proto(true, 2)).unwrap();
    }
    if with_json {
        let tok = json!({
            "added_tokens": [
                {"id": 0, "content": "<unk>", "special": true},
                {"id": 1, "content": "<s>", "special": true},
                {"id": 2, "content": "</s>", "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false},
            "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
            "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>",
                      "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "\u{2581}a": 3, "b": 4, "<0x0A>": 5},
                      "merges": ["\u{2581} a", "\u{2581}a b"]}
        });
        std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    }
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true, "add_eos_token": false,
               "chat_template": "[INST]"})
        .to_string(),
    )
    .unwrap();
}

fn strings(s: &HfSource, key: &str) -> Vec<String> {
    meta(s, key)
        .unwrap()
        .as_array()
        .unwrap()
        .strings()
        .unwrap()
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn array<'a>(s: &'a HfSource, key: &str) -> &'a MetaArray {
    meta(s, key).unwrap().as_array().unwrap()
}

#[test]
fn sentencepiece_vocabulary_from_tokenizer_model() {
    let d = tempfile::tempdir().unwrap();
    tiny_spm(d.path(), true, true);
    let s = HfSource::open(d.path(), None).unwrap();
    assert_eq!(
        meta(&s, "general.architecture").unwrap().as_str(),
        Some("llama")
    );
    assert_eq!(
        meta(&s, "tokenizer.ggml.model").unwrap().as_str(),
        Some("llama")
    );
    assert_eq!(
        meta(&s, "tokenizer.ggml.pre").unwrap().as_str(),
        Some("default")
    );
    assert!(meta(&s, "tokenizer.ggml.merges").is_none());
    assert!(meta(&s, "tokenizer.ggml.add_space_prefix").is_none());
    assert!(
        !s.metadata()
            .iter()
            .any(|(k, _)| k.contains("sliding_window")),
        "llama.cpp's llama arch has no sliding window"
    );
    assert_eq!(
        strings(&s, "tokenizer.ggml.tokens"),
        ["<unk>", "<s>", "</s>", "\u{2581}a", "b", "<0x0A>"]
    );
    assert_eq!(
        array(&s, "tokenizer.ggml.scores"),
        &MetaArray::F32(vec![0.0, 0.0, 0.0, -1.0, -2.0, 0.0])
    );
    // USER_DEFINED pieces of the model read as NORMAL, as llama.cpp's converter does.
    assert_eq!(
        array(&s, "tokenizer.ggml.token_type"),
        &MetaArray::I32(vec![2, 3, 3, 1, 1, 6])
    );
    for (key, want) in [
        ("bos_token_id", 1),
        ("eos_token_id", 2),
        ("unknown_token_id", 0),
    ] {
        assert_eq!(
            meta(&s, &format!("tokenizer.ggml.{key}")).unwrap().as_u64(),
            Some(want),
            "{key}"
        );
    }
    assert_eq!(
        meta(&s, "tokenizer.ggml.add_bos_token").unwrap().as_bool(),
        Some(true)
    );
    assert_eq!(
        meta(&s, "tokenizer.ggml.add_eos_token").unwrap().as_bool(),
        Some(false)
    );
    assert_eq!(
        meta(&s, "tokenizer.chat_template").unwrap().as_str(),
        Some("[INST]")
    );

    // tokenizer.model alone; vocab_size larger than the model pads; added_tokens_decoder
    // overrides (special → CONTROL; not special → USER_DEFINED with ▁ as a space), and a model
    // without the dummy prefix says so.
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    std::fs::write(d.path().join("tokenizer.model"), spm_proto(false, 2)).unwrap();
    std::fs::write(
        d.path().join("tokenizer_config.json"),
        json!({"bos_token": "<s>", "add_bos_token": false,
               "added_tokens_decoder": {"4": {"content": "\u{2581}tool", "special": false}, "6": {"content": "[INST]", "special": true}}})
        .to_string(),
    )
    .unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("config.json")).unwrap()).unwrap();
    let mut cfg = cfg;
    cfg["vocab_size"] = json!(8);
    std::fs::write(d.path().join("config.json"), cfg.to_string()).unwrap();
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(
        e.contains("token_embd.weight") && e.contains("8 tokens"),
        "{e}"
    );
    let tdir = d.path().join("tok");
    std::fs::create_dir(&tdir).unwrap();
    for f in ["config.json", "tokenizer.model", "tokenizer_config.json"] {
        std::fs::rename(d.path().join(f), tdir.join(f)).unwrap();
    }
    let cfg_path = tdir.join("config.json");
    let cfg = Config::load(&cfg_path).unwrap();
    let arch = arch::Arch::from_config(&cfg).unwrap();
    let md = tokenizer::tokenizer_metadata(&tdir, &cfg, &arch).unwrap();
    let get = |k: &str| md.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("tokenizer.ggml.tokens")
            .unwrap()
            .as_array()
            .unwrap()
            .strings()
            .unwrap(),
        [
            "<unk>",
            "<s>",
            "</s>",
            "\u{2581}a",
            " tool",
            "<0x0A>",
            "[INST]",
            "[PAD7]"
        ]
    );
    assert_eq!(
        get("tokenizer.ggml.scores").unwrap().as_array().unwrap(),
        &MetaArray::F32(vec![0.0, 0.0, 0.0, -1.0, -1000.0, 0.0, -1000.0, -10000.0])
    );
    assert_eq!(
        get("tokenizer.ggml.token_type")
            .unwrap()
            .as_array()
            .unwrap(),
        &MetaArray::I32(vec![2, 3, 3, 1, 4, 6, 3, 5])
    );
    assert_eq!(
        get("tokenizer.ggml.add_space_prefix").and_then(|v| v.as_bool()),
        Some(false)
    );
    // Without tokenizer.json the ids come from the model's control pieces.
    assert_eq!(
        get("tokenizer.ggml.bos_token_id").and_then(|v| v.as_u64()),
        Some(1)
    );

    // A Unigram model (T5-style) is not llama.cpp's llama tokenizer: an error naming the field.
    std::fs::write(tdir.join("tokenizer.model"), spm_proto(true, 1)).unwrap();
    let e = tokenizer::tokenizer_metadata(&tdir, &cfg, &arch)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("tokenizer.model")
            && e.contains("trainer_spec.model_type")
            && e.contains("UNIGRAM"),
        "{e}"
    );
}

#[test]
fn sentencepiece_vocabulary_from_tokenizer_json() {
    let d = tempfile::tempdir().unwrap();
    tiny_spm(d.path(), false, true);
    let s = HfSource::open(d.path(), None).unwrap();
    assert_eq!(
        meta(&s, "tokenizer.ggml.model").unwrap().as_str(),
        Some("llama")
    );
    assert_eq!(
        strings(&s, "tokenizer.ggml.tokens"),
        ["<unk>", "<s>", "</s>", "\u{2581}a", "b", "<0x0A>"]
    );
    // Scores by merge order ("▁a" first, then "▁ab" which is not in the vocabulary); "b" is made
    // by no merge and sorts below.
    assert_eq!(
        array(&s, "tokenizer.ggml.scores"),
        &MetaArray::F32(vec![0.0, 0.0, 0.0, -1.0, -(2.0 + 1.0 + 4.0), 0.0])
    );
    assert_eq!(
        array(&s, "tokenizer.ggml.token_type"),
        &MetaArray::I32(vec![2, 3, 3, 1, 1, 6])
    );
    assert!(meta(&s, "tokenizer.ggml.add_space_prefix").is_none());
    assert_eq!(
        meta(&s, "tokenizer.ggml.add_bos_token").unwrap().as_bool(),
        Some(true)
    );
    assert_eq!(
        meta(&s, "tokenizer.ggml.unknown_token_id")
            .unwrap()
            .as_u64(),
        Some(0)
    );

    // No dummy prefix (Metaspace "never") is written; the legacy normalizer form has one; a
    // byte-level pre-tokenizer on a byte_fallback model is refused.
    let path = d.path().join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    tok["pre_tokenizer"]["prepend_scheme"] = json!("never");
    std::fs::write(&path, tok.to_string()).unwrap();
    let s = HfSource::open(d.path(), None).unwrap();
    assert_eq!(
        meta(&s, "tokenizer.ggml.add_space_prefix")
            .unwrap()
            .as_bool(),
        Some(false)
    );
    tok["pre_tokenizer"] = serde_json::Value::Null;
    tok["normalizer"] = json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u{2581}"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]});
    std::fs::write(&path, tok.to_string()).unwrap();
    let s = HfSource::open(d.path(), None).unwrap();
    assert!(meta(&s, "tokenizer.ggml.add_space_prefix").is_none());
    tok["pre_tokenizer"] = json!({"type": "ByteLevel", "add_prefix_space": false});
    std::fs::write(&path, tok.to_string()).unwrap();
    let e = HfSource::open(d.path(), None).err().unwrap().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("ByteLevel") && e.contains("Metaspace"),
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

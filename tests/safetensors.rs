//! Hugging Face safetensors input, driven through the binary.
//!
//! - A small synthetic HF directory (sharded, BF16/F16/F32) converts, with llama's Q/K rows
//!   permuted and names mapped; a single .safetensors file works with `--config`.
//! - Malformed inputs fail with a message naming the file and tensor.
//! - Real models (env `QUANTEASE_TEST_MODEL` = SmolLM2 GGUF, `QUANTEASE_TEST_QWEN` = Qwen2.5
//!   GGUF): `scripts/hf_fixture.py` turns the GGUF into an HF directory, we convert it back to F16
//!   and the `gguf` Python package checks hyper-parameters, tokenizer and tensors against the
//!   original; llama.cpp tokenises texts to the same ids with both and computes the same logits.
//!   Qwen2 is cut to 2 layers, the reference too (`hf_fixture.py derive`).
//! - SentencePiece (env `QUANTEASE_TEST_SPM_VOCAB` = llama.cpp's vocab-only
//!   `ggml-vocab-llama-spm.gguf`, Llama 2's vocabulary, with SmolLM2): the vocabulary is grafted
//!   onto SmolLM2's weights, the HF directory has `tokenizer.model` + a `byte_fallback`
//!   `tokenizer.json` (and then `tokenizer.json` alone); metadata, ids and logits as above, and
//!   ids also against llama.cpp's reference tokenisations of that vocabulary (`.inp`/`.out`).

mod common;

use common::run;
use quantease_gguf::formats::GgmlType;
use quantease_gguf::gguf::GgufFile;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Write a safetensors file of (name, dtype, shape, little-endian bytes).
fn write_st(path: &Path, tensors: &[(String, &str, Vec<u64>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let begin = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let h = serde_json::Value::Object(header).to_string();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

fn encode(dtype: &str, v: &[f32]) -> Vec<u8> {
    match dtype {
        "F32" => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        "F16" => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
        _ => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
    }
}

const WIDTH: u64 = 64;
const FF: u64 = 128;
const HEADS: u64 = 4;
const KV_HEADS: u64 = 2;
const VOCAB: u64 = 40;

/// Value of HF tensor `t`, row `r`, column `c`: identifies the row exactly (small integers are
/// exact in BF16 too).
fn val(t: usize, r: u64, c: u64) -> f32 {
    (t as f32) * 16.0 + (r as f32) + if c == 0 { 0.0 } else { 0.5 }
}

/// A 2-layer llama HF directory in two shards (BF16 then F32), plus one F16 tensor.
fn tiny_hf(dir: &Path) -> Vec<(String, Vec<u64>)> {
    std::fs::write(
        dir.join("config.json"),
        json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": WIDTH, "intermediate_size": FF,
            "num_hidden_layers": 2, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "vocab_size": VOCAB, "tie_word_embeddings": true
        })
        .to_string(),
    )
    .unwrap();
    let mut vocab = serde_json::Map::new();
    for i in 0..VOCAB - 2 {
        vocab.insert(format!("t{i}"), json!(i));
    }
    std::fs::write(
        dir.join("tokenizer.json"),
        json!({
            "added_tokens": [{"id": VOCAB - 2, "content": "<|im_end|>", "special": true}],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "vocab": vocab, "merges": ["t 1"]}
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"eos_token": "<|im_end|>"}).to_string(),
    )
    .unwrap();
    let mut shapes: Vec<(String, Vec<u64>)> = vec![
        ("model.embed_tokens.weight".into(), vec![VOCAB, WIDTH]),
        ("model.norm.weight".into(), vec![WIDTH]),
    ];
    for l in 0..2 {
        let p = format!("model.layers.{l}.");
        shapes.push((p.clone() + "input_layernorm.weight", vec![WIDTH]));
        shapes.push((p.clone() + "post_attention_layernorm.weight", vec![WIDTH]));
        shapes.push((p.clone() + "self_attn.q_proj.weight", vec![WIDTH, WIDTH]));
        shapes.push((
            p.clone() + "self_attn.k_proj.weight",
            vec![WIDTH / 2, WIDTH],
        ));
        shapes.push((
            p.clone() + "self_attn.v_proj.weight",
            vec![WIDTH / 2, WIDTH],
        ));
        shapes.push((p.clone() + "self_attn.o_proj.weight", vec![WIDTH, WIDTH]));
        shapes.push((p.clone() + "mlp.gate_proj.weight", vec![FF, WIDTH]));
        shapes.push((p.clone() + "mlp.up_proj.weight", vec![FF, WIDTH]));
        shapes.push((p.clone() + "mlp.down_proj.weight", vec![WIDTH, FF]));
    }
    let make = |range: std::ops::Range<usize>,
                dtype: &'static str|
     -> Vec<(String, &'static str, Vec<u64>, Vec<u8>)> {
        range
            .map(|t| {
                let (name, shape) = &shapes[t];
                let (rows, cols) = if shape.len() == 1 {
                    (1, shape[0])
                } else {
                    (shape[0], shape[1])
                };
                let v: Vec<f32> = (0..rows)
                    .flat_map(|r| (0..cols).map(move |c| val(t, r, c)))
                    .collect();
                let dt = if name.ends_with("gate_proj.weight") {
                    "F16"
                } else {
                    dtype
                };
                (name.clone(), dt, shape.clone(), encode(dt, &v))
            })
            .collect()
    };
    write_st(
        &dir.join("model-00001-of-00002.safetensors"),
        &make(0..11, "BF16"),
    );
    write_st(
        &dir.join("model-00002-of-00002.safetensors"),
        &make(11..shapes.len(), "F32"),
    );
    let mut map = serde_json::Map::new();
    for (t, (name, _)) in shapes.iter().enumerate() {
        let f = if t < 11 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(name.clone(), json!(f));
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    shapes
}

fn row_f32(file: &GgufFile, name: &str, row: usize) -> Vec<f32> {
    let t = file
        .tensor(name)
        .unwrap_or_else(|| panic!("{name} in output"));
    let rb = t.row_bytes() as usize;
    let data = &file.tensor_data(t)[row * rb..(row + 1) * rb];
    let mut out = vec![0f32; t.row_len() as usize];
    quantease_gguf::formats::dequantize_row(t.ty, data, &mut out).unwrap();
    out
}

#[test]
fn synthetic_directory_converts_with_names_types_and_permutation() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    let shapes = tiny_hf(&hf);
    let out = dir.path().join("out.gguf");
    let o = run(&[
        "convert",
        hf.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "F16",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.get("general.architecture").unwrap().as_str(),
        Some("llama")
    );
    assert_eq!(f.get("llama.block_count").unwrap().as_u64(), Some(2));
    assert_eq!(
        f.get("llama.attention.head_count_kv").unwrap().as_u64(),
        Some(KV_HEADS)
    );
    assert_eq!(f.get("tokenizer.ggml.pre").unwrap().as_str(), Some("gpt-2"));
    assert_eq!(
        f.get("tokenizer.ggml.eos_token_id").unwrap().as_u64(),
        Some(VOCAB - 2)
    );
    assert_eq!(f.get("general.file_type").unwrap().as_u64(), Some(1));
    let names: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), shapes.len());
    assert_eq!(names[0], "token_embd.weight");
    assert!(
        !names.contains(&"output.weight"),
        "tied embeddings: no output tensor"
    );
    // Vectors are F32 whatever they were stored as; matrices F16.
    assert_eq!(f.tensor("output_norm.weight").unwrap().ty, GgmlType::F32);
    assert_eq!(f.tensor("blk.1.ffn_down.weight").unwrap().ty, GgmlType::F16);
    let idx = |hf: &str| shapes.iter().position(|(n, _)| n == hf).unwrap();
    // Rows of a plain tensor stay in order, values exact.
    let t = idx("model.layers.1.mlp.down_proj.weight");
    assert_eq!(
        row_f32(&f, "blk.1.ffn_down.weight", 5)[..2],
        [val(t, 5, 0), val(t, 5, 1)]
    );
    let t = idx("model.norm.weight");
    assert_eq!(row_f32(&f, "output_norm.weight", 0)[3], val(t, 0, 3));
    // Q (4 heads of 16) and K (2 heads of 16): GGUF row h*16 + 2i + j is HF row h*16 + 8j + i.
    for (hf_name, gguf, heads, rows) in [
        (
            "model.layers.0.self_attn.q_proj.weight",
            "blk.0.attn_q.weight",
            HEADS,
            WIDTH,
        ),
        (
            "model.layers.1.self_attn.k_proj.weight",
            "blk.1.attn_k.weight",
            KV_HEADS,
            WIDTH / 2,
        ),
    ] {
        let t = idx(hf_name);
        let d = rows / heads;
        for r in 0..rows {
            let (h, i, j) = (r / d, (r % d) / 2, r % 2);
            let src = h * d + j * (d / 2) + i;
            assert_eq!(
                row_f32(&f, gguf, r as usize)[0],
                val(t, src, 0),
                "{gguf} row {r}"
            );
        }
    }
    // V is not permuted.
    let t = idx("model.layers.0.self_attn.v_proj.weight");
    assert_eq!(row_f32(&f, "blk.0.attn_v.weight", 1)[0], val(t, 1, 0));

    // Quantised mixes work on the same input, and --dry-run plans it.
    let q = dir.path().join("q.gguf");
    let o = run(&[
        "convert",
        hf.to_str().unwrap(),
        q.to_str().unwrap(),
        "--type",
        "Q4_K_M",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fq = GgufFile::open(&q).unwrap();
    assert_ne!(fq.tensor("blk.0.attn_q.weight").unwrap().ty, GgmlType::F16);
    let o = run(&[
        "convert",
        hf.to_str().unwrap(),
        q.to_str().unwrap(),
        "--bits",
        "3",
        "--dry-run",
    ]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("blk.1.ffn_down.weight"));
}

#[test]
fn single_file_with_config_flag() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    tiny_hf(&hf);
    // Merge the two shards into one file elsewhere, with the config directory given by --config.
    let weights = dir.path().join("weights");
    std::fs::create_dir(&weights).unwrap();
    let mut all = Vec::new();
    for s in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        let st = quantease_gguf::source::safetensors::SafetensorsFile::open(&hf.join(s)).unwrap();
        for t in &st.header().tensors {
            all.push((
                t.name.clone(),
                t.dtype.name(),
                t.shape.clone(),
                st.data(t).to_vec(),
            ));
        }
    }
    let single = weights.join("model.safetensors");
    write_st(&single, &all);
    let out = dir.path().join("single.gguf");
    let o = run(&[
        "convert",
        single.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "F16",
        "--quiet",
    ]);
    assert!(!o.status.success(), "no config.json beside the file");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("config.json"), "{err}");
    for config in [hf.clone(), hf.join("config.json")] {
        let o = run(&[
            "convert",
            single.to_str().unwrap(),
            out.to_str().unwrap(),
            "--type",
            "F16",
            "--config",
            config.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // Same output as from the sharded directory.
    let sharded = dir.path().join("sharded.gguf");
    let o = run(&[
        "convert",
        hf.to_str().unwrap(),
        sharded.to_str().unwrap(),
        "--type",
        "F16",
        "--quiet",
    ]);
    assert!(o.status.success());
    let (a, b) = (
        GgufFile::open(&out).unwrap(),
        GgufFile::open(&sharded).unwrap(),
    );
    for t in &a.tensors {
        assert_eq!(
            a.tensor_data(t),
            b.tensor_data(b.tensor(&t.name).unwrap()),
            "{}",
            t.name
        );
    }
}

/// Convert `dir` and expect failure with every word of `expect` in the message.
fn expect_error(dir: &Path, expect: &[&str]) {
    let out = dir.join("out.gguf");
    let o = run(&[
        "convert",
        dir.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "F16",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for w in expect {
        assert!(err.contains(w), "'{w}' not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists());
}

/// Rewrite shard 2 of a fresh synthetic directory with `edit` applied to its header JSON (the
/// data section is kept) or to the whole file bytes.
fn broken(edit: impl FnOnce(&mut serde_json::Value, &mut Vec<u8>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny_hf(dir.path());
    let path = dir.path().join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut data = bytes[8 + n..].to_vec();
    edit(&mut header, &mut data);
    let h = header.to_string();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    std::fs::write(&path, out).unwrap();
    dir
}

const SHARD2: &str = "model-00002-of-00002.safetensors";

#[test]
fn malformed_inputs_give_clear_errors() {
    // Header length beyond the file.
    let d = tempfile::tempdir().unwrap();
    tiny_hf(d.path());
    let p = d.path().join(SHARD2);
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len() as u64;
    b[..8].copy_from_slice(&n.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    expect_error(d.path(), &[SHARD2, "header length", "past the end"]);

    // Offsets past the end (file truncated).
    let d = broken(|_, data| data.truncate(data.len() - 100));
    expect_error(
        d.path(),
        &[
            SHARD2,
            "model.layers.1.mlp.down_proj.weight",
            "past the end",
        ],
    );

    // Overlapping tensors.
    let d = broken(|h, _| {
        h["model.layers.1.mlp.up_proj.weight"]["data_offsets"] =
            h["model.layers.1.mlp.gate_proj.weight"]["data_offsets"].clone();
        h["model.layers.1.mlp.up_proj.weight"]["dtype"] = json!("F16");
    });
    expect_error(d.path(), &[SHARD2, "overlap", "up_proj", "gate_proj"]);

    // dtype × shape ≠ bytes.
    let d = broken(|h, _| h["model.layers.1.mlp.up_proj.weight"]["dtype"] = json!("BF16"));
    expect_error(
        d.path(),
        &[SHARD2, "model.layers.1.mlp.up_proj.weight", "BF16", "needs"],
    );

    // Missing shard.
    let d = tempfile::tempdir().unwrap();
    tiny_hf(d.path());
    std::fs::remove_file(d.path().join(SHARD2)).unwrap();
    expect_error(
        d.path(),
        &["model.safetensors.index.json", SHARD2, "missing"],
    );

    // Unsupported dtype, unknown architecture, unknown tensor.
    let d = broken(|h, data| {
        h["model.layers.1.mlp.up_proj.weight"]["dtype"] = json!("I32");
        let _ = data;
    });
    expect_error(
        d.path(),
        &[
            SHARD2,
            "model.layers.1.mlp.up_proj.weight",
            "I32",
            "not supported",
        ],
    );
    let d = tempfile::tempdir().unwrap();
    tiny_hf(d.path());
    std::fs::write(
        d.path().join("config.json"),
        r#"{"architectures": ["MambaForCausalLM"]}"#,
    )
    .unwrap();
    expect_error(
        d.path(),
        &["config.json", "MambaForCausalLM", "not supported"],
    );
    let d = broken(|h, _| {
        let v = h["model.layers.1.mlp.up_proj.weight"].clone();
        h.as_object_mut()
            .unwrap()
            .remove("model.layers.1.mlp.up_proj.weight");
        h["model.layers.1.mlp.experts.0.weight"] = v;
    });
    // The index still names up_proj in shard 2, which no longer holds it.
    expect_error(
        d.path(),
        &["model.layers.1.mlp.up_proj.weight", "does not contain"],
    );
    std::fs::remove_file(d.path().join("model.safetensors.index.json")).unwrap();
    expect_error(
        d.path(),
        &[SHARD2, "model.layers.1.mlp.experts.0.weight", "not part of"],
    );
}

fn python_with_gguf() -> bool {
    Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/hf_fixture.py")
}

/// Texts every round trip tokenises: special tokens, digits, Unicode, code, whitespace (leading,
/// repeated, trailing, tabs, newlines) and characters a SentencePiece vocabulary has no piece for
/// (byte fallback).
const TEXTS: &[&str] = &[
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "  leading spaces, tabs\tand\nnewlines\n\n\nend",
    "Numbers: 1234567890 3.14159 2026-11-24, 1,000,000",
    "Unicode: naïve café, Ελληνικά, 日本語のテキスト, emoji 🦀🚀",
    "code: fn main() { println!(\"{}\", x >= 10 && y != 0); } // comment",
    "<|im_start|>user\nWhat's up?<|im_end|>\n<|im_start|>assistant\n",
    "I'm you're they'll we've it's DON'T",
    " one leading space, two  spaces,   three,    four; trailing   ",
    "\n\nstarts with newlines\r\nand CRLF\t\ttabs",
    "bytes: \u{10348}\u{E000} \u{1F9A9} \u{2603} 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ﷽",
    "<s> </s> <unk> [INST] look like specials [/INST]",
];

/// llama.cpp's reference tokenisations next to a vocab-only GGUF (`X.gguf.inp`: texts separated
/// by `__ggml_vocab_test__` lines; `X.gguf.out`: their ids, a line each, no BOS).
fn reference_tokenisations(vocab: &Path) -> Vec<(String, Vec<i32>)> {
    let inp = std::fs::read_to_string(format!("{}.inp", vocab.display())).unwrap();
    let out = std::fs::read_to_string(format!("{}.out", vocab.display())).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let ids: Vec<Vec<i32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    assert!(
        texts.len() >= ids.len() && ids.len() > 10,
        "{} texts, {} id lines",
        texts.len(),
        ids.len()
    );
    texts
        .into_iter()
        .zip(ids)
        .map(|(t, i)| (t.to_string(), i))
        .collect()
}

/// llama.cpp reads both files alike: same token ids for [`TEXTS`] (and, when given, the reference
/// tokenisations of `expected`), and, when `logits`, logits over those tokens within
/// `tolerance`.
#[cfg(feature = "llama")]
fn llama_cpp_agrees(
    reference: &Path,
    converted: &Path,
    logits: bool,
    tolerance: f32,
    expected: Option<&Path>,
) {
    use quantease_gguf::llama::{Context, ContextParams, Model};
    let a = Model::load(reference).expect("llama.cpp loads the reference");
    let b = Model::load(converted).expect("llama.cpp loads the conversion");
    assert_eq!((a.add_bos(), a.bos()), (b.add_bos(), b.bos()));
    assert_eq!(a.n_vocab(), b.n_vocab());
    let texts = TEXTS;
    if let Some(vocab) = expected {
        let refs = reference_tokenisations(vocab);
        for (text, ids) in &refs {
            assert_eq!(
                &b.tokenize(text, false).unwrap(),
                ids,
                "conversion: reference ids differ for {text:?}"
            );
            assert_eq!(
                &a.tokenize(text, false).unwrap(),
                ids,
                "original: reference ids differ for {text:?}"
            );
        }
        eprintln!(
            "llama.cpp: reference tokenisations of {} texts reproduced",
            refs.len()
        );
    }
    let mut all = Vec::new();
    for t in texts {
        for special in [false, true] {
            let ta = a.tokenize(t, special).unwrap();
            assert_eq!(
                ta,
                b.tokenize(t, special).unwrap(),
                "token ids differ for {t:?}"
            );
            if special {
                all.extend(ta);
            }
        }
    }
    eprintln!(
        "llama.cpp: {} tokens identical over {} texts",
        all.len(),
        texts.len()
    );
    if !logits {
        return;
    }
    all.truncate(96);
    let params = || ContextParams {
        n_ctx: 128,
        n_batch: 128,
        ..Default::default()
    };
    let (mut ca, mut cb) = (
        Context::new(&a, params()).unwrap(),
        Context::new(&b, params()).unwrap(),
    );
    ca.decode(&all, 0, true).unwrap();
    cb.decode(&all, 0, true).unwrap();
    let mut max_diff = 0f32;
    for i in 0..all.len() {
        let (la, lb) = (ca.logits(i).unwrap(), cb.logits(i).unwrap());
        assert!(lb.iter().all(|x| x.is_finite()));
        for (x, y) in la.iter().zip(lb) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    eprintln!(
        "llama.cpp: logits over {} positions, max |difference| {max_diff:e}",
        all.len()
    );
    assert!(
        max_diff <= tolerance,
        "logits differ by {max_diff} (tolerance {tolerance})"
    );
}

/// `hf_fixture.py derive MODEL OUT ARGS…`: a reference GGUF cut to fewer layers or with another
/// vocabulary.
fn derive(model: &Path, out: &Path, args: &[&str]) {
    let o = Command::new("python3")
        .arg(script())
        .arg("derive")
        .arg(model)
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "derive: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&o.stdout));
}

/// How a round trip checks llama.cpp's view of the two files.
struct LlamaCheck<'a> {
    /// Compare logits (else token ids only).
    logits: bool,
    /// Largest |logit difference| accepted: 1e-3 when every tensor is byte-identical (F16-level
    /// noise only); more when the fixture stores some tensors in BF16.
    tolerance: f32,
    /// A vocab-only GGUF whose `.inp`/`.out` reference tokenisations must be reproduced.
    expected: Option<&'a Path>,
}

/// GGUF → HF fixture → our converter (F16) → compare with the original via gguf-py.
fn round_trip(model: &Path, make_args: &[&str], check: LlamaCheck<'_>) {
    assert!(
        python_with_gguf(),
        "the real-model round trip needs python3 with the gguf package and numpy"
    );
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    let o = Command::new("python3")
        .arg(script())
        .arg("make")
        .arg(model)
        .arg(&hf)
        .args(make_args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fixture: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    let out = dir.path().join("roundtrip.f16.gguf");
    let o = run(&[
        "convert",
        hf.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "F16",
        "--quiet",
    ]);
    assert!(
        o.status.success(),
        "convert: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("python3")
        .arg(script())
        .arg("compare")
        .arg(model)
        .arg(&out)
        .arg(&hf)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.status.success(),
        "round trip differs from the original:\n{report}"
    );
    // A quantised mix from the same directory also works. Each file is removed once it is no
    // longer needed: with Qwen2's two 151936-row matrices the directory and the F16 files are
    // ≈ 1 GB each, and CI's disk is shared.
    let q = dir.path().join("roundtrip.q4_0.gguf");
    let o = run(&[
        "convert",
        hf.to_str().unwrap(),
        q.to_str().unwrap(),
        "--type",
        "Q4_0",
        "--quiet",
    ]);
    assert!(
        o.status.success(),
        "convert Q4_0: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_file(&q).unwrap();
    let stored: std::collections::HashMap<String, String> =
        serde_json::from_slice(&std::fs::read(hf.join("fixture_dtypes.json")).unwrap()).unwrap();
    std::fs::remove_dir_all(&hf).unwrap();
    // Independently of gguf-py: every tensor stored as F32 or F16 in the fixture must be
    // byte-identical to the original dequantised straight to F16 (both are F16(dequantised value)).
    let reference = dir.path().join("reference.f16.gguf");
    let o = run(&[
        "dequantize",
        model.to_str().unwrap(),
        reference.to_str().unwrap(),
        "--type",
        "F16",
        "--quiet",
    ]);
    assert!(
        o.status.success(),
        "dequantize: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (r, c) = (
        GgufFile::open(&reference).unwrap(),
        GgufFile::open(&out).unwrap(),
    );
    let mut identical = 0;
    for t in &c.tensors {
        if stored.get(&t.name).map(String::as_str) == Some("BF16") {
            continue;
        }
        let rt = r
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{} in the original", t.name));
        assert_eq!((rt.ty, &rt.dims), (t.ty, &t.dims), "{}", t.name);
        assert!(
            r.tensor_data(rt) == c.tensor_data(t),
            "{}: bytes differ from the F16 original",
            t.name
        );
        identical += 1;
    }
    eprintln!(
        "{identical} of {} tensors byte-identical to the original dequantised to F16",
        c.tensors.len()
    );
    assert!(identical > 0);
    #[cfg(feature = "llama")]
    llama_cpp_agrees(
        &reference,
        &out,
        check.logits,
        check.tolerance,
        check.expected,
    );
    #[cfg(not(feature = "llama"))]
    eprintln!(
        "built without the llama feature: llama.cpp comparison skipped (logits: {})",
        check.logits
    );
}

#[test]
fn smollm2_round_trip_through_hf_directory() {
    let Some(model) = common::test_model() else {
        return;
    };
    round_trip(
        &model,
        &["--shards", "2", "--dtypes", "f32,f16"],
        LlamaCheck {
            logits: true,
            tolerance: 1e-3,
            expected: None,
        },
    );
}

#[test]
fn qwen2_round_trip_through_hf_directory() {
    let model = match std::env::var_os("QUANTEASE_TEST_QWEN") {
        Some(p) if Path::new(&p).exists() => PathBuf::from(p),
        _ => {
            eprintln!("QUANTEASE_TEST_QWEN not set: skipping the Qwen2 round trip");
            return;
        }
    };
    // The fixture keeps 2 layers: so does the reference its logits are compared with.
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("qwen2-2layers.gguf");
    derive(&model, &reference, &["--layers", "2"]);
    round_trip(
        &reference,
        &[
            "--shards",
            "3",
            "--dtypes",
            "bf16,f16,f32",
            "--merge-pairs",
            "--bos-from-config",
        ],
        LlamaCheck {
            logits: true,
            // The first shard is BF16 (8 bits of mantissa): it holds the embedding (measured:
            // 0.048).
            tolerance: 0.1,
            expected: None,
        },
    );
}

/// Llama 2's SentencePiece vocabulary (llama.cpp's vocab-only GGUF) on SmolLM2's weights.
fn spm_reference(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let model = common::test_model()?;
    let vocab = match std::env::var_os("QUANTEASE_TEST_SPM_VOCAB") {
        Some(p) if Path::new(&p).exists() => PathBuf::from(p),
        _ => {
            eprintln!("QUANTEASE_TEST_SPM_VOCAB not set: skipping the SentencePiece round trip");
            return None;
        }
    };
    let reference = dir.join("smollm2-llama-spm.gguf");
    derive(&model, &reference, &["--vocab", vocab.to_str().unwrap()]);
    Some((reference, vocab))
}

#[test]
fn spm_round_trip_with_tokenizer_model() {
    let dir = tempfile::tempdir().unwrap();
    let Some((reference, vocab)) = spm_reference(dir.path()) else {
        return;
    };
    round_trip(
        &reference,
        &["--shards", "2", "--dtypes", "f32,f16"],
        LlamaCheck {
            logits: true,
            tolerance: 1e-3,
            expected: Some(&vocab),
        },
    );
}

#[test]
fn spm_round_trip_from_tokenizer_json_alone() {
    let dir = tempfile::tempdir().unwrap();
    let Some((reference, vocab)) = spm_reference(dir.path()) else {
        return;
    };
    // Scores derived from the merges (compare skips them), Metaspace pre-tokenizer.
    round_trip(
        &reference,
        &[
            "--shards",
            "2",
            "--dtypes",
            "f16,f32",
            "--no-tokenizer-model",
            "--metaspace",
        ],
        LlamaCheck {
            logits: true,
            tolerance: 1e-3,
            expected: Some(&vocab),
        },
    );
}

#[test]
fn imatrix_applies_to_hf_input() {
    use quantease_gguf::gguf::{GgufWriter, MetaValue, TensorPlan};
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    tiny_hf(&hf);
    // A GGUF imatrix with entries for the two Q matrices (GGUF names, as llama.cpp writes them).
    let im = dir.path().join("imatrix.gguf");
    let names = ["blk.0.attn_q.weight", "blk.1.attn_q.weight"];
    let mut plans = Vec::new();
    for n in names {
        plans.push(TensorPlan {
            name: format!("{n}.in_sum2"),
            dims: vec![WIDTH, 1],
            ty: GgmlType::F32,
        });
        plans.push(TensorPlan {
            name: format!("{n}.counts"),
            dims: vec![1, 1],
            ty: GgmlType::F32,
        });
    }
    let md = vec![
        ("general.type".to_string(), MetaValue::string("imatrix")),
        ("imatrix.chunk_count".to_string(), MetaValue::U32(1)),
        ("imatrix.chunk_size".to_string(), MetaValue::U32(512)),
    ];
    let mut w = GgufWriter::create(&im, &md, &plans).unwrap();
    for _ in names {
        let sums: Vec<u8> = (0..WIDTH)
            .flat_map(|c| (1.0 + c as f32).to_le_bytes())
            .collect();
        w.write_tensor(&sums).unwrap();
        w.write_tensor(&512f32.to_le_bytes()).unwrap();
    }
    w.finish().unwrap();
    let out = dir.path().join("q.gguf");
    let o = run(&[
        "convert",
        hf.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "Q4_0",
        "--imatrix",
        im.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("2 with imatrix"), "{err}");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.get("quantease.imatrix").and_then(|v| v.as_str()),
        Some("imatrix.gguf")
    );
}

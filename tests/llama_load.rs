//! llama.cpp engine checks on a real model: set `QUANTEASE_TEST_MODEL` to a GGUF (e.g.
//! SmolLM2-135M-Instruct.Q4_1.gguf); the tests print a message and pass when it is unset.
#![cfg(feature = "llama")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use quantease_gguf::llama::{
    llama_quantize, smoke_test, Context, ContextParams, Ftype, ImatrixData, LlamaError, MatMulInfo,
    MatMulInput, MatMulKind, Model,
};

fn test_model() -> Option<PathBuf> {
    match std::env::var_os("QUANTEASE_TEST_MODEL") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("QUANTEASE_TEST_MODEL is not set; skipping llama.cpp model test");
            None
        }
    }
}

#[test]
fn smoke_test_loads_and_predicts() {
    let Some(path) = test_model() else { return };
    let r = smoke_test(&path).unwrap();
    eprintln!("{r:?}");
    assert!(r.n_vocab > 1000, "{r:?}");
    assert!(r.all_logits_finite, "{r:?}");
    assert!(r.n_prompt_tokens >= 4, "{r:?}");
    assert!((r.argmax_token as usize) < r.n_vocab);
    // "The capital of France is" → " Paris" for any sane instruct model.
    assert!(r.argmax_piece.contains("Paris"), "{r:?}");
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let err = Model::load(&missing).unwrap_err();
    assert!(matches!(err, LlamaError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.gguf"), "{err}");

    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(
        &garbage,
        b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\x7fjunk",
    )
    .unwrap();
    let err = Model::load(&garbage).unwrap_err();
    assert!(matches!(err, LlamaError::ModelLoad { .. }), "{err}");
    assert!(err.to_string().contains("garbage.gguf"), "{err}");

    let err = Model::load(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains(&*dir.path().to_string_lossy()),
        "{err}"
    );
}

#[test]
fn decode_validates_input_and_positions() {
    let Some(path) = test_model() else { return };
    let model = Model::load(&path).unwrap();
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: 32,
            n_batch: 16,
            ..ContextParams::default()
        },
    )
    .unwrap();
    let n_vocab = model.n_vocab() as i32;
    assert!(matches!(
        ctx.decode(&[1, n_vocab], 0, true),
        Err(LlamaError::InvalidToken { .. })
    ));
    assert!(matches!(
        ctx.decode(&[1; 17], 0, true),
        Err(LlamaError::BatchTooLarge { .. })
    ));
    // llama.cpp may round the context up; the limit is the context it allocated.
    let end = ctx.n_ctx() as i32;
    assert!(matches!(
        ctx.decode(&[1; 4], end - 2, true),
        Err(LlamaError::ContextOverflow { .. })
    ));
    assert!(ctx.decode(&[], 0, true).is_err());

    // Decoding a prefix and then the rest continues the sequence: the last logits equal those
    // of decoding everything at once.
    let toks = model.tokenize("One two three four five six", true).unwrap();
    ctx.decode(&toks, 0, false).unwrap();
    assert!(matches!(ctx.logits(0), Err(LlamaError::NoLogits { .. })));
    let whole = ctx.logits(toks.len() - 1).unwrap().to_vec();
    ctx.clear_kv_cache();
    ctx.decode(&toks[..3], 0, false).unwrap();
    ctx.decode(&toks[3..], 3, false).unwrap();
    let split = ctx.logits(toks.len() - 4).unwrap();
    let max_diff = whole
        .iter()
        .zip(split)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-2, "continued decode differs by {max_diff}");
    // After clearing, the same prompt gives the same logits again (no stale cache).
    ctx.clear_kv_cache();
    ctx.decode(&toks, 0, true).unwrap();
    assert_eq!(ctx.logits(toks.len() - 1).unwrap(), &whole[..]);
}

/// Per weight: input width, rows seen, sum of squares per column.
type Seen = BTreeMap<String, (usize, usize, Vec<f64>)>;

fn collecting_callback(
    seen: Arc<Mutex<Seen>>,
) -> impl FnMut(&MatMulInfo<'_>, &MatMulInput<'_>) -> bool {
    move |info, input| {
        assert_eq!(info.kind, MatMulKind::MulMat);
        assert_eq!(input.n_cols() as i64, info.weight_shape[0]);
        assert_eq!(input.n_cols() as i64, info.input_shape[0]);
        let mut seen = seen.lock().unwrap();
        let e = seen
            .entry(info.weight_name.to_string())
            .or_insert_with(|| (input.n_cols(), 0, vec![0.0; input.n_cols()]));
        for row in input.rows() {
            for (acc, &x) in e.2.iter_mut().zip(row) {
                assert!(x.is_finite());
                *acc += (x as f64) * (x as f64);
            }
            e.1 += 1;
        }
        true
    }
}

#[test]
fn eval_callback_sees_every_matmul_input() {
    let Some(path) = test_model() else { return };
    let model = Model::load(&path).unwrap();
    let seen = Arc::new(Mutex::new(Seen::new()));
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: 64,
            n_batch: 64,
            n_threads: 2,
            eval_callback: Some(Box::new(collecting_callback(seen.clone()))),
        },
    )
    .unwrap();
    let toks = model
        .tokenize("The quick brown fox jumps over the lazy dog.", true)
        .unwrap();
    ctx.decode(&toks, 0, true).unwrap();
    let seen = seen.lock().unwrap();
    let n_embd = model.n_embd();
    for il in 0..model.n_layer() {
        for w in ["attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up"] {
            let name = format!("blk.{il}.{w}.weight");
            let (cols, rows, sq) = seen.get(&name).unwrap_or_else(|| panic!("{name} not seen"));
            assert_eq!(*cols, n_embd, "{name}");
            assert_eq!(*rows, toks.len(), "{name}");
            assert!(sq.iter().any(|&v| v > 0.0), "{name} input is all zero");
        }
        // q, k and v read the same normalised hidden state.
        let q = &seen[&format!("blk.{il}.attn_q.weight")].2;
        let k = &seen[&format!("blk.{il}.attn_k.weight")].2;
        assert_eq!(q, k, "layer {il}");
        assert!(seen.contains_key(&format!("blk.{il}.attn_output.weight")));
        let down = &seen[&format!("blk.{il}.ffn_down.weight")];
        assert!(down.0 > n_embd, "ffn_down input is the wide FFN activation");
    }
    // The output projection (tied to token_embd in SmolLM2) is observed for the logit rows.
    assert!(seen
        .keys()
        .any(|k| k == "output.weight" || k == "token_embd.weight"));
}

#[test]
fn eval_callback_can_abort_and_panics_are_contained() {
    let Some(path) = test_model() else { return };
    let model = Model::load(&path).unwrap();
    let toks = model
        .tokenize("Hello there, general Kenobi.", true)
        .unwrap();

    let mut calls = 0usize;
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: 64,
            n_batch: 64,
            n_threads: 1,
            eval_callback: Some(Box::new(move |_: &MatMulInfo<'_>, _: &MatMulInput<'_>| {
                calls += 1;
                calls < 3
            })),
        },
    )
    .unwrap();
    assert!(matches!(
        ctx.decode(&toks, 0, true),
        Err(LlamaError::CallbackAborted)
    ));

    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: 64,
            n_batch: 64,
            n_threads: 1,
            eval_callback: Some(Box::new(|info: &MatMulInfo<'_>, _: &MatMulInput<'_>| {
                if info.weight_name == "blk.1.attn_q.weight" {
                    panic!("boom in {}", info.weight_name);
                }
                true
            })),
        },
    )
    .unwrap();
    match ctx.decode(&toks, 0, true) {
        Err(LlamaError::CallbackPanicked(msg)) => assert!(msg.contains("boom"), "{msg}"),
        other => panic!("expected a contained panic, got {other:?}"),
    }
}

#[test]
fn llama_quantize_in_process_with_and_without_imatrix() {
    let Some(path) = test_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("q4_0.gguf");
    llama_quantize(&path, &plain, Ftype::Q4_0, None, 2).unwrap();
    let r = smoke_test(&plain).unwrap();
    assert!(r.all_logits_finite, "{r:?}");
    let q = Model::load(&plain).unwrap();
    assert!(q.description().contains("Q4_0"), "{}", q.description());
    drop(q);

    // An importance matrix collected through the eval callback, in llama.cpp's convention
    // (mean squared activation per input column).
    let model = Model::load(&path).unwrap();
    let seen = Arc::new(Mutex::new(Seen::new()));
    {
        let mut ctx = Context::new(
            &model,
            ContextParams {
                n_ctx: 128,
                n_batch: 128,
                n_threads: 2,
                eval_callback: Some(Box::new(collecting_callback(seen.clone()))),
            },
        )
        .unwrap();
        let text = "Quantisation maps each weight to a small grid. An importance matrix tells the \
                    quantiser which input columns matter most, so their weights are rounded with \
                    more care. This paragraph is only calibration text for a test.";
        let toks = model.tokenize(text, true).unwrap();
        ctx.decode(&toks, 0, false).unwrap();
    }
    let mut im = ImatrixData::new();
    for (name, (_, rows, sq)) in seen.lock().unwrap().iter() {
        if name.starts_with("blk.") {
            im.insert(
                name.clone(),
                sq.iter().map(|&s| (s / *rows as f64) as f32).collect(),
            )
            .unwrap();
        }
    }
    assert!(im.len() >= 7 * model.n_layer());
    drop(model);
    let weighted = dir.path().join("q4_0_imatrix.gguf");
    llama_quantize(&path, &weighted, Ftype::Q4_0, Some(&im), 2).unwrap();
    let r = smoke_test(&weighted).unwrap();
    assert!(r.all_logits_finite, "{r:?}");
    let a = std::fs::read(&plain).unwrap();
    let b = std::fs::read(&weighted).unwrap();
    // (Sizes may differ: with an imatrix llama.cpp upgrades the first ffn_down layers of Q4_0.)
    assert_ne!(a, b, "the importance matrix changed nothing");

    // Bad imatrix sizes are reported, not aborted on.
    let mut bad = ImatrixData::new();
    bad.insert("blk.0.attn_q.weight", vec![1.0; 3]).unwrap();
    let err = llama_quantize(
        &path,
        &dir.path().join("bad.gguf"),
        Ftype::Q4_0,
        Some(&bad),
        2,
    )
    .unwrap_err();
    assert!(matches!(err, LlamaError::Quantize { .. }), "{err}");
}

#[test]
fn truncated_model_is_an_error() {
    let Some(path) = test_model() else { return };
    let bytes = std::fs::read(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("head.gguf", 4096), ("half.gguf", bytes.len() / 2)] {
        let cut = dir.path().join(name);
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let err = Model::load(&cut).unwrap_err();
        eprintln!("{err}");
        assert!(matches!(err, LlamaError::ModelLoad { .. }), "{err}");
        assert!(err.to_string().contains(name), "{err}");
        let err = smoke_test(&cut).unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
    }
}

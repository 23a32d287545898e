//! Perplexity/KLD engine on a real model (`QUANTEASE_TEST_MODEL`), with the evaluation text
//! `../shared/data/wiki.dev.raw` (override with `QUANTEASE_TEST_TEXT`).
#![cfg(feature = "llama")]

use std::path::PathBuf;

use quantease_gguf::eval::{evaluate, EvalError, EvalOptions};

fn inputs() -> Option<(PathBuf, String)> {
    let Some(model) = std::env::var_os("QUANTEASE_TEST_MODEL") else {
        eprintln!("QUANTEASE_TEST_MODEL is not set; skipping evaluation test");
        return None;
    };
    let text_path = std::env::var_os("QUANTEASE_TEST_TEXT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/wiki.dev.raw")
        });
    let text = std::fs::read_to_string(&text_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", text_path.display()));
    Some((PathBuf::from(model), text))
}

#[test]
fn model_against_itself_has_zero_kld() {
    let Some((model, text)) = inputs() else {
        return;
    };
    let opts = EvalOptions {
        n_ctx: 512,
        n_chunks: Some(2),
        n_threads: 2,
        progress: true,
    };
    let r = evaluate(&model, Some(&model), &text, opts).unwrap();
    eprintln!("{r}");
    assert_eq!(r.n_chunks, 2);
    assert_eq!(r.n_scored, 2 * (512 - 1 - 256));
    let kl = r.kl.as_ref().unwrap();
    assert!(kl.kld_mean.value.abs() <= 1e-6, "{}", kl.kld_mean.value);
    assert!(kl.kld.max.abs() <= 1e-6, "{}", kl.kld.max);
    assert_eq!(kl.same_top.value, 1.0);
    assert!((kl.ppl_ratio.value - 1.0).abs() < 1e-9);
    assert!((kl.ppl_base.value - r.ppl.value).abs() < 1e-9);
    // A 135M model on wikitext: PPL in a plausible range, with an uncertainty.
    assert!(r.ppl.value > 5.0 && r.ppl.value < 200.0, "{}", r.ppl.value);
    assert!(r.ppl.uncertainty > 0.0);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"kld_mean\""));

    // PPL alone gives the same number.
    let alone = evaluate(
        &model,
        None,
        &text,
        EvalOptions {
            n_ctx: 512,
            n_chunks: Some(2),
            n_threads: 1,
            progress: false,
        },
    )
    .unwrap();
    assert!(alone.kl.is_none());
    assert!((alone.ppl.value - r.ppl.value).abs() < 1e-6 * r.ppl.value);
}

#[test]
fn short_text_is_an_error() {
    let Some((model, _)) = inputs() else { return };
    let err = evaluate(&model, None, "Far too short.", EvalOptions::default()).unwrap_err();
    assert!(matches!(err, EvalError::NotEnoughTokens { .. }), "{err}");
}

#[test]
fn requantized_model_diverges_from_its_source() {
    let Some((model, text)) = inputs() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q4_0.gguf");
    quantease_gguf::llama::llama_quantize(&model, &q, quantease_gguf::llama::Ftype::Q4_0, None, 2)
        .unwrap();
    let opts = EvalOptions {
        n_ctx: 256,
        n_chunks: Some(2),
        n_threads: 2,
        progress: false,
    };
    let r = evaluate(&q, Some(&model), &text, opts).unwrap();
    eprintln!("{r}");
    let kl = r.kl.as_ref().unwrap();
    // Q4_1 → Q4_0 on a 135M model: clearly nonzero, far from total disagreement.
    assert!(
        kl.kld_mean.value > 1e-3 && kl.kld_mean.value < 1.0,
        "{}",
        kl.kld_mean.value
    );
    assert!(kl.kld_mean.uncertainty > 0.0);
    assert!(kl.kld.min >= -1e-9, "KLD is never negative: {}", kl.kld.min);
    assert!(kl.kld.median <= kl.kld.p90 && kl.kld.p90 <= kl.kld.p99 && kl.kld.p99 <= kl.kld.max);
    assert!(
        kl.same_top.value > 0.5 && kl.same_top.value < 1.0,
        "{}",
        kl.same_top.value
    );
    assert!((kl.ppl_ratio.value - r.ppl.value / kl.ppl_base.value).abs() < 1e-9);
}

/// Long chunks are decoded in sub-batches; the result must equal a direct computation from one
/// whole-chunk decode (independent check of chunking, BOS substitution and target alignment).
#[test]
fn split_chunks_match_a_direct_computation() {
    use quantease_gguf::llama::{Context, ContextParams, Model};
    let Some((model_path, text)) = inputs() else {
        return;
    };
    let n_ctx = 768;
    let r = evaluate(
        &model_path,
        None,
        &text,
        EvalOptions {
            n_ctx,
            n_chunks: Some(2),
            n_threads: 2,
            progress: false,
        },
    )
    .unwrap();
    assert_eq!(r.n_scored, 2 * (n_ctx - 1 - n_ctx / 2));

    let model = Model::load(&model_path).unwrap();
    let tokens = model.tokenize(&text, true).unwrap();
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: n_ctx as u32,
            n_batch: n_ctx as u32,
            n_threads: 2,
            eval_callback: None,
        },
    )
    .unwrap();
    let (mut nll, mut count) = (0f64, 0usize);
    for c in 0..2 {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if model.add_bos() {
            chunk[0] = model.bos();
        }
        ctx.clear_kv_cache();
        ctx.decode(&chunk, 0, true).unwrap();
        for j in n_ctx / 2..n_ctx - 1 {
            let l = ctx.logits(j).unwrap();
            let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let lse = m + l.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            nll += lse - l[tokens[c * n_ctx + j + 1] as usize] as f64;
            count += 1;
        }
    }
    let ppl = (nll / count as f64).exp();
    assert!(
        (ppl - r.ppl.value).abs() < 1e-3 * ppl,
        "direct {ppl} vs evaluate {}",
        r.ppl.value
    );
}

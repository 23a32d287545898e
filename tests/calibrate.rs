//! Calibration (full Gram files) on a real model: set `QUANTEASE_TEST_MODEL` to a GGUF (e.g.
//! SmolLM2-135M-Instruct.Q4_1.gguf); the tests print a message and pass when it is unset. The
//! calibration text defaults to ../shared/data/groups_merged.txt (`QUANTEASE_CALIB_TEXT`).
#![cfg(feature = "llama")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use common::{run, test_model};
use faer::{Mat, Side};
use quantease_gguf::calibrate::{
    calibrate, generate_chunks, make_chunks, CalibrateOptions, GenerateOptions,
};
use quantease_gguf::gguf::GgufFile;
use quantease_gguf::gram::GramFile;
use quantease_gguf::imatrix::Imatrix;
use quantease_gguf::llama::{
    llama_quantize, Context, ContextParams, Ftype, ImatrixData, MatMulInfo, MatMulInput, Model,
};

const N_CTX: usize = 128;
const N_CHUNKS: usize = 2;

fn calib_text() -> String {
    let p = std::env::var_os("QUANTEASE_CALIB_TEXT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/groups_merged.txt")
        });
    match std::fs::read_to_string(&p) {
        Ok(t) => t,
        // A fixed English text when the shared data is absent: enough tokens for 2×128.
        Err(_) => {
            "The history of the city begins with a small settlement on the river. ".repeat(60)
        }
    }
}

fn opts(diag_only: bool, max_memory: u64) -> CalibrateOptions {
    CalibrateOptions {
        n_ctx: N_CTX,
        n_chunks: Some(N_CHUNKS),
        n_threads: 2,
        diag_only,
        max_memory,
        progress: false,
        dataset: "test".into(),
        sink_weight: SINK_WEIGHT,
        paired_model: None,
    }
}

/// Not the default, so the test sees that the option is honoured.
const SINK_WEIGHT: f32 = 50.0;

struct Fixture {
    _dir: tempfile::TempDir,
    model: PathBuf,
    full: PathBuf,
    diag: PathBuf,
}

/// One full and one diagonal-only calibration shared by the tests of this file.
fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let model = test_model()?;
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.gram.gguf");
        let diag = dir.path().join("diag.imatrix.gguf");
        let text = calib_text();
        let s = calibrate(&model, &text, &full, &opts(false, 8 << 30)).unwrap();
        assert_eq!(s.passes, 1);
        assert_eq!(s.n_chunks, N_CHUNKS);
        calibrate(&model, &text, &diag, &opts(true, 8 << 30)).unwrap();
        Some(Fixture {
            _dir: dir,
            model,
            full,
            diag,
        })
    })
    .as_ref()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn grams_are_shared_by_input_and_diagonals_match_in_sum2() {
    let Some(f) = fixture() else { return };
    let g = GramFile::open(&f.full).unwrap();
    let model = Model::load(&f.model).unwrap();
    let n_layer = model.n_layer();
    let n_embd = model.n_embd();
    assert_eq!(g.chunk_count(), N_CHUNKS as u64);
    assert_eq!(g.chunk_size(), N_CTX as u64);
    for il in 0..n_layer {
        let t = |w: &str| {
            g.gram_tensor_name(&format!("blk.{il}.{w}.weight"))
                .unwrap_or_else(|| panic!("layer {il} {w}: no Gram"))
                .to_string()
        };
        assert_eq!(t("attn_q"), t("attn_k"));
        assert_eq!(t("attn_q"), t("attn_v"));
        assert_eq!(t("ffn_gate"), t("ffn_up"));
        assert_ne!(t("attn_q"), t("ffn_up"));
        assert_ne!(t("attn_q"), t("attn_output"));
        assert_ne!(t("ffn_up"), t("ffn_down"));
    }
    // The output projection (token_embd when tied) has its own Gram.
    let out = ["output.weight", "token_embd.weight"]
        .into_iter()
        .find(|w| g.has_full(w))
        .expect("output projection Gram");
    assert_eq!(
        g.gram(out, Some(n_embd)).unwrap().count(),
        (N_CTX * N_CHUNKS) as f64
    );

    let mut n = 0;
    for w in g.weights().collect::<Vec<_>>() {
        let v = g.gram(w, None).unwrap();
        assert_eq!(v.count(), (N_CTX * N_CHUNKS) as f64, "{w}");
        let (sum2, counts) = g.diag_stats(w).unwrap();
        assert_eq!(counts, vec![(N_CTX * N_CHUNKS) as f64]);
        let d = v.diag().unwrap();
        assert_eq!(d.len(), sum2.len());
        for (j, (a, b)) in d.iter().zip(&sum2).enumerate() {
            assert!(
                (a - b).abs() <= 2e-6 * b.abs() + 1e-30,
                "{w} column {j}: Gram diagonal {a} vs in_sum2 {b}"
            );
        }
        assert!(sum2.iter().any(|&s| s > 0.0), "{w}: all-zero input");
        n += 1;
    }
    assert_eq!(n, 7 * n_layer + 1);

    // The diagonal-only run computes the very same in_sum2 and counts, bit for bit.
    let full = GgufFile::open(&f.full).unwrap();
    let diag = GgufFile::open(&f.diag).unwrap();
    assert_eq!(diag.tensors.len(), 2 * n);
    for t in &diag.tensors {
        let u = full.tensor(&t.name).unwrap();
        assert_eq!(diag.tensor_data(t), full.tensor_data(u), "{}", t.name);
    }
    assert!(GramFile::open(&f.diag).unwrap().n_full() == 0);
}

/// Whether Σ + shift·I has a Cholesky factor.
fn cholesky_ok(s: &[f64], p: usize, shift: f64) -> bool {
    let m = Mat::<f64>::from_fn(p, p, |i, j| s[i * p + j] + if i == j { shift } else { 0.0 });
    m.llt(Side::Lower).is_ok()
}

#[test]
fn every_gram_is_symmetric_positive_semidefinite() {
    let Some(f) = fixture() else { return };
    let g = GramFile::open(&f.full).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for w in g.weights().collect::<Vec<_>>() {
        let v = g.gram(w, None).unwrap();
        if !seen.insert(v.tensor_name().to_string()) {
            continue;
        }
        let p = v.p();
        let s = v.full().unwrap();
        for i in 0..p {
            for j in 0..i {
                assert_eq!(s[i * p + j], s[j * p + i]);
            }
        }
        let tr: f64 = (0..p).map(|i| s[i * p + i]).sum();
        // Rank ≤ 256 < p for most inputs: only rounding separates Σ from singular. A shift of
        // 1e-6·tr bounds the most negative eigenvalue by −1e-6·λ_max·p.
        assert!(
            cholesky_ok(&s, p, 1e-6 * tr),
            "{w}: Σ + 1e-6·tr·I is not PD"
        );
        // Negative control: breaking the 2×2 minor of the two largest diagonal entries makes it
        // clearly indefinite (eigenvalue below −(a+b)), and the check notices.
        let mut idx: Vec<usize> = (0..p).collect();
        idx.sort_by(|&a, &b| s[b * p + b].total_cmp(&s[a * p + a]));
        let (i, j) = (idx[0], idx[1]);
        let mut bad = s.clone();
        let off = 2.0 * (s[i * p + i] + s[j * p + j]);
        bad[i * p + j] = off;
        bad[j * p + i] = off;
        assert!(!cholesky_ok(&bad, p, 1e-6 * tr), "{w}: control passed");
    }
    assert!(seen.len() > 4);
}

#[test]
fn gram_matches_a_naive_f64_reference_from_captured_inputs() {
    let Some(f) = fixture() else { return };
    const W: &str = "blk.3.ffn_down.weight";
    let model = Model::load(&f.model).unwrap();
    let tokens = model.tokenize(&calib_text(), true).unwrap();
    let chunks = make_chunks(
        &tokens,
        N_CTX,
        Some(N_CHUNKS),
        model.add_bos().then(|| model.bos()),
    );
    let rows: Arc<Mutex<Vec<Vec<f32>>>> = Arc::default();
    let sink = rows.clone();
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: N_CTX as u32,
            n_batch: N_CTX as u32,
            n_threads: 2,
            eval_callback: Some(Box::new(
                move |info: &MatMulInfo<'_>, input: &MatMulInput<'_>| {
                    if info.weight_name == W {
                        sink.lock()
                            .unwrap()
                            .extend(input.rows().map(<[f32]>::to_vec));
                    }
                    true
                },
            )),
        },
    )
    .unwrap();
    for c in &chunks {
        ctx.clear_kv_cache();
        ctx.decode(c, 0, true).unwrap();
    }
    let rows = rows.lock().unwrap();
    assert_eq!(rows.len(), N_CTX * N_CHUNKS);
    let p = rows[0].len();
    let mut want = vec![0f64; p * p];
    for (t, x) in rows.iter().enumerate() {
        // Each chunk's first token counts SINK_WEIGHT times.
        let w = if t % N_CTX == 0 {
            f64::from(SINK_WEIGHT)
        } else {
            1.0
        };
        for i in 0..p {
            let xi = f64::from(x[i]);
            for j in 0..=i {
                want[i * p + j] += w * xi * f64::from(x[j]);
            }
        }
    }
    let g = GramFile::open(&f.full).unwrap();
    let md = quantease_gguf::gguf::GgufFile::open(&f.full).unwrap();
    let sw = md.get(quantease_gguf::gram::KEY_SINK_WEIGHT).cloned();
    assert!(
        matches!(sw, Some(quantease_gguf::gguf::MetaValue::F32(x)) if x == SINK_WEIGHT),
        "{sw:?}"
    );
    let v = g.gram(W, Some(p)).unwrap();
    let got = v.full().unwrap();
    let mut worst = 0f64;
    for i in 0..p {
        for j in 0..=i {
            let scale = (want[i * p + i] * want[j * p + j]).sqrt();
            let err = (got[i * p + j] - want[i * p + j]).abs() / scale.max(1e-30);
            worst = worst.max(err);
        }
    }
    eprintln!("{W}: worst |Σ − Σ_ref| / sqrt(Σii Σjj) = {worst:.3e}");
    assert!(worst < 1e-5, "{worst}");
}

#[test]
fn gram_file_works_as_an_imatrix_for_llama_quantize() {
    let Some(f) = fixture() else { return };
    let im = Imatrix::load(&f.full).unwrap();
    let g = GramFile::open(&f.full).unwrap();
    assert_eq!(im.len(), g.weights().count());
    let mut data = ImatrixData::new();
    for name in im.names() {
        let (sum2, counts) = g.diag_stats(name).unwrap();
        let means: Vec<f32> = sum2.iter().map(|s| (s / counts[0]) as f32).collect();
        let loaded = im.importance(name).unwrap();
        for (a, b) in loaded.iter().zip(&means) {
            assert!((a - b).abs() <= 1e-6 * b.abs(), "{name}: {a} vs {b}");
        }
        data.insert(name, loaded.to_vec()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.gguf");
    llama_quantize(&f.model, &out, Ftype::Q4_0, Some(&data), 2).unwrap();
    let q = Model::load(&out).unwrap();
    let toks = q.tokenize("The capital of France is", true).unwrap();
    let mut ctx = Context::new(&q, ContextParams::default()).unwrap();
    ctx.decode(&toks, 0, false).unwrap();
    assert!(ctx
        .logits(toks.len() - 1)
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn multi_pass_output_is_identical_to_single_pass() {
    let Some(f) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let multi = dir.path().join("multi.gram.gguf");
    let s = calibrate(&f.model, &calib_text(), &multi, &opts(false, 120 << 20)).unwrap();
    assert!(s.passes >= 3, "{s:?}");
    assert!(s.peak_accumulator_bytes <= 120 << 20, "{s:?}");
    let a = std::fs::read(&f.full).unwrap();
    let b = std::fs::read(&multi).unwrap();
    assert!(a == b, "multi-pass file differs from single-pass");
    // A budget below one Gram is a clear error.
    let err = calibrate(&f.model, &calib_text(), &multi, &opts(false, 1 << 20)).unwrap_err();
    assert!(err.to_string().contains("--max-memory"), "{err}");
}

/// A model paired with itself sees the same inputs twice: its Grams are the plain calibration's
/// byte for byte, and every cross-product matrix equals its Gram (up to GEMM rounding).
#[test]
fn paired_with_itself_gives_cross_products_equal_to_the_gram() {
    let Some(f) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let paired = dir.path().join("paired.gram.gguf");
    let mut o = opts(false, 8 << 30);
    o.paired_model = Some(f.model.clone());
    calibrate(&f.model, &calib_text(), &paired, &o).unwrap();
    let (g, p0) = (
        GramFile::open(&paired).unwrap(),
        GramFile::open(&f.full).unwrap(),
    );
    assert!(g.paired_model().is_some());
    assert_eq!(p0.paired_model(), None);
    let mut n = 0;
    for w in p0.weights().filter(|w| p0.has_full(w)).collect::<Vec<_>>() {
        let a = p0.gram(w, None).unwrap();
        let b = g.gram(w, None).unwrap();
        let (fa, fb) = (a.full().unwrap(), b.full().unwrap());
        assert!(fa == fb, "{w}: paired Gram differs from the plain one");
        let p = a.p();
        let m = g.cross(w, p).unwrap().expect("cross products");
        let scale = (0..p).map(|j| fa[j * p + j]).fold(0.0, f64::max);
        for (k, (&c, &s)) in m.iter().zip(&fa).enumerate() {
            assert!(
                (f64::from(c) - s).abs() <= 1e-5 * scale,
                "{w} ({}, {}): cross {c} vs Gram {s}",
                k / p,
                k % p
            );
        }
        n += 1;
    }
    assert!(n > 0);
    // Diagonal-only and paired do not mix.
    let mut o = opts(true, 8 << 30);
    o.paired_model = Some(f.model.clone());
    let err = calibrate(&f.model, &calib_text(), &paired, &o).unwrap_err();
    assert!(err.to_string().contains("paired"), "{err}");
}

#[test]
fn calibrate_and_perplexity_through_the_binary() {
    let Some(model) = test_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("calib.txt");
    std::fs::write(&text, calib_text()).unwrap();
    let gram = dir.path().join("m.gram.gguf");
    let o = run(&[
        "calibrate",
        model.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "-o",
        gram.to_str().unwrap(),
        "--ctx",
        "128",
        "--chunks",
        "2",
        "--threads",
        "2",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g = GramFile::open(&gram).unwrap();
    assert!(g.n_full() > 0);
    assert_eq!(g.datasets(), ["calib.txt"]);

    let o = run(&[
        "perplexity",
        model.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--base",
        model.to_str().unwrap(),
        "--ctx",
        "128",
        "--chunks",
        "2",
        "--threads",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["n_chunks"], 2);
    let ppl = r["ppl"]["value"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl.is_finite(), "{r}");
    // The model against itself: zero KL divergence, every top token the same.
    let kld = r["kl"]["kld_mean"]["value"].as_f64().unwrap();
    assert!(kld.abs() < 1e-9, "{r}");
    assert_eq!(r["kl"]["same_top"]["value"].as_f64().unwrap(), 1.0, "{r}");

    // Missing text file and a bad --max-memory are clear errors.
    let o = run(&[
        "calibrate",
        model.to_str().unwrap(),
        "--text",
        "/nonexistent.txt",
        "-o",
        gram.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nonexistent.txt"));
    let o = run(&[
        "calibrate",
        model.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "-o",
        gram.to_str().unwrap(),
        "--max-memory",
        "lots",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-memory"));
}

#[test]
fn in_sum2_tensors_use_llama_cpp_shapes() {
    let Some(f) = fixture() else { return };
    let file = GgufFile::open(&f.full).unwrap();
    let t = file.tensor("blk.0.attn_q.weight.in_sum2").unwrap();
    assert_eq!(t.dims.len(), 2);
    assert_eq!(t.dims[1], 1);
    let c = file.tensor("blk.0.attn_q.weight.counts").unwrap();
    assert_eq!(c.dims, vec![1, 1]);
    assert_eq!(f32s(file.tensor_data(c)), vec![(N_CTX * N_CHUNKS) as f32]);
    assert_eq!(
        file.get("general.type").and_then(|v| v.as_str()),
        Some("imatrix")
    );
    assert!(file.tensors.iter().all(|t| t.name.len() < 64));
}

#[test]
fn self_generated_text_is_deterministic_and_seed_dependent() {
    let Some(path) = test_model() else { return };
    let model = Model::load(&path).unwrap();
    let opts = GenerateOptions {
        n_chunks: 2,
        n_ctx: 16,
        seed: 5,
        n_threads: 1,
        ..GenerateOptions::default()
    };
    let a = generate_chunks(&model, &opts).unwrap();
    let b = generate_chunks(&model, &opts).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 2);
    for c in &a {
        assert_eq!(c.len(), 16);
        assert_eq!(c[0], model.bos());
        assert!(c[1..].iter().all(|&t| !model.is_eog(t)));
    }
    // Each sequence has its own seed, and another base seed gives other text.
    assert_ne!(a[0], a[1]);
    let c = generate_chunks(
        &model,
        &GenerateOptions {
            seed: 6,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_ne!(a, c);
    assert_eq!(a[1], c[0], "sequence i uses seed + i");
    // Greedy decoding ignores the seed.
    let greedy = GenerateOptions {
        top_k: 1,
        ..opts.clone()
    };
    let g = generate_chunks(&model, &greedy).unwrap();
    assert_eq!(g[0], g[1]);
}

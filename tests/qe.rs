//! The QE formats end to end through the binary: `convert --format qe` → `inspect` →
//! `dequantize` → llama.cpp, `perplexity` on QE files, determinism and CLI errors. The real-model
//! parts need `QUANTEASE_TEST_MODEL` (SmolLM2-135M) and pass with a message when it is unset.

mod common;

use common::{run, test_model, tiny_model};
use quantease_gguf::gguf::GgufFile;
use quantease_gguf::plan::qe_params;
use quantease_gguf::source::{GgufSource, TensorSource};
use std::path::{Path, PathBuf};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn convert(args: &[&str]) {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
}

/// Count the tensors of each QE type and check the format-version key.
fn qe_tensors(path: &Path) -> Vec<(String, u8, u8)> {
    let f = GgufFile::open(path).unwrap();
    let out: Vec<(String, u8, u8)> = f
        .header()
        .tensors
        .iter()
        .filter_map(|t| qe_params(t.ty).map(|(b, p)| (t.name.clone(), b, p)))
        .collect();
    let version = f.get("quantease.format_version").and_then(|v| v.as_u64());
    assert_eq!(
        version,
        (!out.is_empty()).then_some(u64::from(quantease_gguf::formats::qe::FORMAT_VERSION)),
        "{}: quantease.format_version",
        path.display()
    );
    out
}

#[test]
fn tiny_model_qe_round_trip_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.gguf");
    tiny_model(&input, false);
    let src = GgufSource::open(&input).unwrap();
    for (bits, outliers) in [("2", "0"), ("3", "0.78%"), ("4", "1.56%")] {
        let mut outs = Vec::new();
        for threads in ["1", "2"] {
            let out = dir.path().join(format!("tiny-qe{bits}-{threads}.gguf"));
            convert(&[
                "convert",
                s(&input),
                s(&out),
                "--format",
                "qe",
                "--bits",
                bits,
                "--outliers",
                outliers,
                "--method",
                "quantease",
                "--threads",
                threads,
                "--quiet",
            ]);
            outs.push(out);
        }
        let (a, b) = (
            std::fs::read(&outs[0]).unwrap(),
            std::fs::read(&outs[1]).unwrap(),
        );
        assert!(a == b, "QE{bits}: 1 and 2 threads differ");
        let qe = qe_tensors(&outs[0]);
        assert!(!qe.is_empty());
        let pool = match outliers {
            "0" => 0,
            "0.78%" => 1,
            _ => 2,
        };
        for (name, b, p) in &qe {
            let want_bits = if name == "token_embd.weight" {
                4
            } else {
                bits.parse().unwrap()
            };
            assert_eq!((*b, *p), (want_bits, pool), "{name}");
        }
        let mix = GgufFile::open(&outs[0])
            .unwrap()
            .get("quantease.mix")
            .and_then(|v| v.as_str().map(str::to_owned));
        assert_eq!(mix.as_deref(), Some(format!("QE{bits}_{pool}").as_str()));
        // Decodes close to the source.
        let q = GgufSource::open(&outs[0]).unwrap();
        for (i, t) in src.tensors().iter().enumerate() {
            let n = t.row_len() * t.n_rows();
            let (mut x, mut y) = (vec![0f32; n], vec![0f32; n]);
            src.read_rows(i, 0, &mut x).unwrap();
            q.read_rows(i, 0, &mut y).unwrap();
            let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
            let pow: f32 = x.iter().map(|a| a * a).sum();
            assert!(err <= 0.25 * pow, "QE{bits} {}: {}", t.name, err / pow);
        }
        // Dequantize gives an F16 file without QE tensors.
        let f16 = dir.path().join(format!("tiny-qe{bits}.f16.gguf"));
        convert(&[
            "dequantize",
            s(&outs[0]),
            s(&f16),
            "--type",
            "F16",
            "--quiet",
        ]);
        assert!(qe_tensors(&f16).is_empty());
    }
}

#[test]
fn bad_outlier_values_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.gguf");
    tiny_model(&input, false);
    let out = dir.path().join("out.gguf");
    for (bad, needle) in [
        ("2%", "1.5625 %"),
        ("0.02", "1.5625 %"),
        ("-0.001", "between 0 and"),
        ("NaN", "between 0 and"),
        ("lots", "expected a fraction"),
    ] {
        let o = run(&[
            "convert",
            s(&input),
            s(&out),
            "--format",
            "qe",
            "--bits",
            "3",
            "--outliers",
            bad,
        ]);
        assert!(!o.status.success(), "{bad} accepted");
        let e = stderr(&o);
        assert!(e.contains("--outliers") && e.contains(needle), "{bad}: {e}");
    }
    for (args, needle) in [
        // A per-tensor fraction beyond the largest pool.
        (
            &[
                "--format",
                "qe",
                "--bits",
                "3",
                "--outliers-tensor",
                "ffn_down=5%",
            ][..],
            "--outliers-tensor",
        ),
        // Outliers on a plan without QE tensors.
        (
            &["--type", "Q4_0", "--outliers", "0.5%"][..],
            "QE tensors only",
        ),
        // --format qe only has 2, 3 and 4 bits.
        (&["--format", "qe", "--bits", "5"][..], "2, 3 or 4"),
    ] {
        let mut argv = vec!["convert", s(&input), s(&out)];
        argv.extend_from_slice(args);
        let o = run(&argv);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
    assert!(!out.exists());
}

fn eval_text() -> PathBuf {
    std::env::var_os("QUANTEASE_TEST_TEXT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/wiki.dev.raw")
        })
}

#[test]
fn smollm2_qe_plan_has_no_fallbacks() {
    let Some(model) = test_model() else { return };
    let o = run(&[
        "convert",
        s(&model),
        "x.gguf",
        "--format",
        "qe",
        "--bits",
        "3",
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(!plan.contains("fallback"), "{plan}");
    assert!(plan.contains("QE3_1") && plan.contains("QE4_1"), "{plan}");
    // The standard 2-bit mix falls back on width 576 and says so, pointing to --format qe.
    let o = run(&["convert", s(&model), "x.gguf", "--bits", "2", "--dry-run"]);
    assert!(o.status.success());
    assert!(stderr(&o).contains("--format qe"), "{}", stderr(&o));
}

#[cfg(feature = "llama")]
#[test]
fn smollm2_qe_dequantizes_loads_and_evaluates_like_its_f16() {
    let Some(model) = test_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let qe = dir.path().join("smollm2-qe3.gguf");
    convert(&[
        "convert",
        s(&model),
        s(&qe),
        "--format",
        "qe",
        "--bits",
        "3",
        "--outliers",
        "1.56%",
        "--quiet",
    ]);
    let n_qe = qe_tensors(&qe).len();
    assert_eq!(n_qe, 211, "every matrix is QE");
    let o = run(&["inspect", s(&qe)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("QE3_2"));

    let f16 = dir.path().join("smollm2-qe3.f16.gguf");
    convert(&["dequantize", s(&qe), s(&f16), "--type", "F16", "--quiet"]);
    let r = quantease_gguf::llama::smoke_test(&f16).unwrap();
    assert!(r.all_logits_finite, "{r:?}");

    // perplexity on the QE file (through a temporary F16) == on its F16 dequantisation.
    let text = eval_text();
    let ppl = |m: &Path| {
        let o = run(&[
            "perplexity",
            s(m),
            "--text",
            s(&text),
            "--chunks",
            "2",
            "--base",
            s(&model),
            "--json",
            "--tmp-dir",
            s(dir.path()),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            v["ppl"]["value"].as_f64().unwrap(),
            v["kl"]["kld_mean"]["value"].as_f64().unwrap(),
        )
    };
    let (a, b) = (ppl(&qe), ppl(&f16));
    assert_eq!(a, b, "QE file vs its F16 dequantisation");
    assert!(a.0.is_finite() && a.1 > 0.0);
    // The temporary file is gone.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("quantease-perplexity")
        })
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// A tiny GGUF with one QE3_1 tensor (2 rows of 64, valid current-version bytes) and
/// `quantease.format_version` = `version` (absent for `None`).
fn qe_file_with_version(path: &Path, version: Option<u32>) {
    use quantease_gguf::formats::qe::{quantize_row_rtn, QeFormat, FORMAT_VERSION_KEY};
    use quantease_gguf::formats::GgmlType;
    use quantease_gguf::gguf::{GgufWriter, MetaValue, TensorPlan};
    let mut md = vec![(
        "general.architecture".to_string(),
        MetaValue::string("llama"),
    )];
    if let Some(v) = version {
        md.push((FORMAT_VERSION_KEY.to_string(), MetaValue::U32(v)));
    }
    let plans = [TensorPlan {
        name: "blk.0.attn_q.weight".into(),
        dims: vec![64, 2],
        ty: GgmlType::QE3_1,
    }];
    let fmt = QeFormat { bits: 3, pool: 1 };
    let mut bytes = Vec::new();
    let mut rng = common::Rng::new(3);
    for _ in 0..2 {
        let x: Vec<f32> = (0..64).map(|_| 0.05 * rng.normal()).collect();
        let mut row = vec![0u8; fmt.row_bytes(64)];
        quantize_row_rtn(fmt, &x, None, &mut row).unwrap();
        bytes.extend_from_slice(&row);
    }
    let mut w = GgufWriter::create(path, &md, &plans).unwrap();
    w.write_tensor(&bytes).unwrap();
    w.finish().unwrap();
}

#[test]
fn files_of_another_qe_format_version_are_refused() {
    use quantease_gguf::formats::qe::{FORMAT_VERSION, FORMAT_VERSION_KEY};
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "Some text to evaluate. ".repeat(200)).unwrap();
    let old = dir.path().join("old-v1.gguf");
    qe_file_with_version(&old, Some(1));
    let out = dir.path().join("out.gguf");
    let v1_msg = "written by an older quantease-gguf (QE format version 1); re-convert";
    let mut cases: Vec<Vec<&str>> = vec![
        vec!["inspect", s(&old)],
        vec!["dequantize", s(&old), s(&out), "--type", "F16"],
        vec!["convert", s(&old), s(&out), "--type", "Q8_0"],
    ];
    if cfg!(feature = "llama") {
        cases.push(vec![
            "perplexity",
            s(&old),
            "--text",
            s(&text),
            "--chunks",
            "1",
        ]);
    }
    for args in &cases {
        let o = run(args);
        assert!(!o.status.success(), "{args:?} accepted a version 1 file");
        let e = stderr(&o);
        assert!(
            e.contains(s(&old)) && e.contains(FORMAT_VERSION_KEY) && e.contains(v1_msg),
            "{args:?}: {e}"
        );
        assert!(!out.exists(), "{args:?} wrote an output");
    }
    // The library's readers give the typed error.
    match GgufSource::open(&old) {
        Err(quantease_gguf::source::SourceError::QeVersion(e)) => {
            assert!(e.to_string().contains(v1_msg), "{e}")
        }
        other => panic!("expected a QE version error, got {:?}", other.err()),
    }
    #[cfg(feature = "llama")]
    {
        use quantease_gguf::eval::{evaluate, EvalError, EvalOptions};
        let e = evaluate(&old, None, "text", EvalOptions::default()).unwrap_err();
        assert!(matches!(e, EvalError::QeVersion(_)), "{e}");
    }
    // No key at all, and a newer version: refused too.
    let none = dir.path().join("no-key.gguf");
    qe_file_with_version(&none, None);
    let o = run(&["dequantize", s(&none), s(&out), "--type", "F16"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is missing"), "{}", stderr(&o));
    let newer = dir.path().join("newer.gguf");
    qe_file_with_version(&newer, Some(FORMAT_VERSION + 1));
    let o = run(&["inspect", s(&newer)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("newer"), "{}", stderr(&o));
    // The current version is read.
    let cur = dir.path().join("current.gguf");
    qe_file_with_version(&cur, Some(FORMAT_VERSION));
    let o = run(&["inspect", s(&cur)]);
    assert!(o.status.success(), "{}", stderr(&o));
    convert(&["dequantize", s(&cur), s(&out), "--type", "F16", "--quiet"]);
    assert!(out.exists());
}

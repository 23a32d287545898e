//! End-to-end tests of the binary on real files.

mod common;

use common::{run, test_model, tiny_model};
use quantease_gguf::gguf::GgufFile;
use quantease_gguf::source::{GgufSource, TensorSource};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn convert_tiny_model_to_every_type_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.gguf");
    tiny_model(&input, false);
    let src = GgufSource::open(&input).unwrap();
    for ty in [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "F16", "BF16",
    ] {
        let out = dir.path().join(format!("tiny-{ty}.gguf"));
        let o = run(&[
            "convert",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--type",
            ty,
            "--quiet",
        ]);
        assert!(o.status.success(), "{ty}: {}", stderr(&o));
        let q = GgufSource::open(&out).unwrap();
        // Every tensor decodes and stays close to the source.
        for (i, t) in src.tensors().iter().enumerate() {
            let n = t.row_len() * t.n_rows();
            let mut a = vec![0f32; n];
            let mut b = vec![0f32; n];
            src.read_rows(i, 0, &mut a).unwrap();
            q.read_rows(i, 0, &mut b).unwrap();
            let err: f32 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                / n as f32;
            let pow: f32 = a.iter().map(|x| x * x).sum::<f32>() / n as f32;
            assert!(
                err <= 0.02 * pow,
                "{ty} {}: relative error {}",
                t.name,
                err / pow
            );
        }
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(
            f.get("general.quantization_version")
                .and_then(|v| v.as_u64()),
            Some(2)
        );
        assert!(f.get("quantease.version").is_some());
        assert_eq!(
            f.tensor("blk.0.attn_norm.weight").unwrap().ty.name(),
            "F32",
            "norms are copied"
        );
    }
}

#[test]
fn dry_run_prints_plan_and_totals_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.gguf");
    tiny_model(&input, false);
    let out = dir.path().join("never.gguf");
    let o = run(&[
        "convert",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "Q4_K_M",
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("blk.0.attn_q.weight"));
    // Width 64 cannot hold 256-blocks: the plan reports the fallback.
    assert!(stdout.contains("fallback from Q4_K"), "{stdout}");
    assert!(stderr(&o).contains("bits per weight"));
    assert!(!out.exists());
}

#[test]
fn nan_weight_is_an_error_naming_file_and_tensor_and_no_output_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("poisoned.gguf");
    tiny_model(&input, true);
    let out = dir.path().join("out.gguf");
    let o = run(&[
        "convert",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "Q8_0",
        "--quiet",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("poisoned.gguf")
            && e.contains("blk.1.ffn_down.weight")
            && e.contains("not finite"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    assert!(
        !out.exists(),
        "a failed conversion must not leave an output file"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn inspect_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.gguf");
    tiny_model(&input, false);
    let o = run(&["inspect", input.to_str().unwrap()]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("general.architecture")
            && text.contains("blk.1.ffn_down.weight")
            && text.contains("bits per weight")
    );
    let o = run(&["inspect", "--json", input.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tensors"].as_array().unwrap().len(), 20);
    assert_eq!(v["total"]["bpw"].as_f64().unwrap(), 32.0);
}

#[test]
fn output_is_identical_with_one_and_two_threads() {
    let Some(model) = test_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    for ty in ["Q4_K_M", "IQ4_NL"] {
        let a = dir.path().join(format!("t1-{ty}.gguf"));
        let b = dir.path().join(format!("t2-{ty}.gguf"));
        for (out, threads) in [(&a, "1"), (&b, "2")] {
            let o = run(&[
                "convert",
                model.to_str().unwrap(),
                out.to_str().unwrap(),
                "--type",
                ty,
                "--threads",
                threads,
                "--quiet",
            ]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{ty}: bytes differ between 1 and 2 threads"
        );
    }
}

#[test]
fn smollm2_plans_like_llama_quantize() {
    let Some(model) = test_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let o = run(&[
        "convert",
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "Q2_K",
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    // Width 576 cannot hold Q2_K/Q3_K blocks: llama.cpp falls back to Q4_0 and says so.
    assert!(stdout.contains("fallback from Q2_K"));
    assert!(stderr(&o).contains("fell back"));
}

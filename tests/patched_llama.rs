//! The QE-patched llama.cpp (ggml-patch/, built by scripts/build-patched-llama.sh) against our own
//! tool. Runs only when `QUANTEASE_PATCHED_LLAMA` names the built `qe_eval` (its siblings
//! `qe_selftest` and `qe_requant` are used too); otherwise each test prints a message and passes,
//! since the patched build takes minutes (see docs/RUNTIME.md).
//!
//! With `QUANTEASE_TEST_QE_MODEL` (a QE GGUF, e.g. from `convert --format qe`) or
//! `QUANTEASE_TEST_MODEL` (any GGUF: re-quantised to QE4_1 by `qe_requant` through the library the
//! patched ggml links), the QE file is evaluated natively by the patched llama.cpp and compared
//! with its F16 dequantisation written by `quantease-gguf dequantize`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use quantease_gguf::formats;
use quantease_gguf::gguf::GgufFile;

fn patched_tool(name: &str) -> Option<PathBuf> {
    let qe_eval = match std::env::var_os("QUANTEASE_PATCHED_LLAMA") {
        Some(p) if Path::new(&p).exists() => PathBuf::from(p),
        _ => {
            eprintln!("QUANTEASE_PATCHED_LLAMA not set: skipping the patched llama.cpp test");
            return None;
        }
    };
    let p = qe_eval.with_file_name(name);
    assert!(
        p.exists(),
        "{} not found beside {}",
        name,
        qe_eval.display()
    );
    Some(p)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("process runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn value(report: &str, key: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no '{key}' in qe_eval output:\n{report}"));
    line[key.len()..]
        .trim_start_matches([' ', '='])
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse '{line}'"))
}

#[test]
fn patched_ggml_selftest() {
    let Some(selftest) = patched_tool("qe_selftest") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(Command::new(selftest).current_dir(dir.path()));
    assert!(out.contains("all QE self-tests passed"), "{out}");
}

#[test]
fn qe_file_in_patched_llama_matches_f16_dequantisation() {
    let Some(qe_eval) = patched_tool("qe_eval") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(qe) = qe_model(dir.path()) else {
        return;
    };

    // F16 dequantisation by our tool
    let f16 = dir.path().join("model.f16.gguf");
    let out = common::run(&[
        "dequantize",
        qe.to_str().unwrap(),
        f16.to_str().unwrap(),
        "--type",
        "F16",
        "-q",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // the Rust decoder and the file agree: every QE tensor decodes to the F16 file's values
    let qf = GgufFile::open(&qe).unwrap();
    let ff = GgufFile::open(&f16).unwrap();
    let mut n_qe = 0;
    for t in &qf.header().tensors {
        if !t.ty.is_qe() {
            continue;
        }
        n_qe += 1;
        let ft = ff.tensor(&t.name).unwrap();
        assert_eq!(ft.ty, formats::GgmlType::F16);
        let (p, rb) = (t.row_len() as usize, t.row_bytes() as usize);
        let (qd, fd) = (qf.tensor_data(t), ff.tensor_data(ft));
        let mut row = vec![0f32; p];
        for r in 0..(t.n_rows() as usize).min(64) {
            formats::dequantize_row(t.ty, &qd[r * rb..(r + 1) * rb], &mut row).unwrap();
            for (j, &v) in row.iter().enumerate() {
                let o = 2 * (r * p + j);
                let h = half::f16::from_le_bytes([fd[o], fd[o + 1]]);
                assert_eq!(half::f16::from_f32(v), h, "{} row {r} col {j}", t.name);
            }
        }
    }
    assert!(n_qe > 0, "{} has no QE tensors", qe.display());

    // the QE file natively in the patched llama.cpp vs the F16 file in the same build
    let report = run_ok(Command::new(qe_eval).args([
        "-m".as_ref(),
        qe.as_os_str(),
        "--ref".as_ref(),
        f16.as_os_str(),
        "-f".as_ref(),
        text_path().as_os_str(),
        "-c".as_ref(),
        "128".as_ref(),
        "--chunks".as_ref(),
        "2".as_ref(),
    ]));
    eprintln!("{report}");
    let (ppl, ppl_ref) = (value(&report, "PPL"), value(&report, "reference PPL"));
    let kld = value(&report, "mean KLD(ref||model)");
    let top = value(&report, "same top token");
    // Q8_0 activations in the QE vec_dot versus F16 activations for the F16 weights: see
    // docs/RUNTIME.md for the tolerance
    assert!((ppl / ppl_ref - 1.0).abs() < 0.02, "PPL {ppl} vs {ppl_ref}");
    assert!(kld < 0.01, "KLD {kld}");
    assert!(top >= 90.0, "same top token {top} %");
}

/// The QE model the tests run: `QUANTEASE_TEST_QE_MODEL`, else `QUANTEASE_TEST_MODEL` re-quantised
/// to QE4_1 by `qe_requant` into `dir`; `None` (test skipped) without either.
fn qe_model(dir: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QUANTEASE_TEST_QE_MODEL") {
        return Some(PathBuf::from(p));
    }
    let model = common::test_model()?;
    let qe = dir.join("model.qe4_1.gguf");
    let requant = patched_tool("qe_requant").unwrap();
    run_ok(Command::new(requant).args([
        "quant".as_ref(),
        model.as_os_str(),
        qe.as_os_str(),
        "qe4_1".as_ref(),
    ]));
    Some(qe)
}

/// The patched loader decodes one QE format version: a file claiming another one, or none, is
/// refused with a message naming the key, instead of being decoded with the wrong tables.
#[test]
fn patched_llama_refuses_other_qe_format_versions() {
    use quantease_gguf::formats::qe::{FORMAT_VERSION, FORMAT_VERSION_KEY};
    use quantease_gguf::gguf::{GgufWriter, MetaValue, TensorPlan};
    let Some(qe_eval) = patched_tool("qe_eval") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(qe) = qe_model(dir.path()) else {
        return;
    };
    let src = GgufFile::open(&qe).unwrap();
    let plans: Vec<TensorPlan> = src
        .header()
        .tensors
        .iter()
        .map(|t| TensorPlan {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "Some text to evaluate, long enough for one chunk. ".repeat(40),
    )
    .unwrap();
    for (i, (version, shown)) in [
        (
            Some(FORMAT_VERSION - 1),
            format!("is {}", FORMAT_VERSION - 1),
        ),
        (
            Some(FORMAT_VERSION + 1),
            format!("is {}", FORMAT_VERSION + 1),
        ),
        (None, "is missing".to_string()),
    ]
    .into_iter()
    .enumerate()
    {
        let mut md: Vec<(String, MetaValue)> = src
            .header()
            .metadata
            .iter()
            .filter(|(k, _)| k != FORMAT_VERSION_KEY)
            .cloned()
            .collect();
        if let Some(v) = version {
            md.push((FORMAT_VERSION_KEY.to_string(), MetaValue::U32(v)));
        }
        let path = dir.path().join(format!("case{i}.gguf"));
        let mut w = GgufWriter::create(&path, &md, &plans).unwrap();
        for t in &src.header().tensors {
            w.write_tensor(src.tensor_data(t)).unwrap();
        }
        w.finish().unwrap();
        let o = Command::new(&qe_eval)
            .args([
                "-m".as_ref(),
                path.as_os_str(),
                "-f".as_ref(),
                text.as_os_str(),
            ])
            .args(["-c", "64", "--chunks", "1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "version {version:?} accepted:\n{err}");
        assert!(
            err.contains(&format!("{FORMAT_VERSION_KEY} {shown}")),
            "version {version:?}: the refusal should name the key and value:\n{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}

fn text_path() -> PathBuf {
    std::env::var_os("QUANTEASE_EVAL_TEXT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/wiki.dev.raw")
        })
}

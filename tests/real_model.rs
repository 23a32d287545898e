//! The foundation's promise on a real model (SmolLM2-135M): files we write are read identically by
//! the `gguf` Python package, load in llama.cpp and give finite logits; a reader+writer copy is
//! byte-identical (tests/gguf_copy.rs).

mod common;

use common::{run, test_model};
use std::process::Command;

const TYPES: &[&str] = &["Q4_0", "Q4_K", "Q6_K", "Q8_0", "IQ4_NL"];

#[test]
fn converted_files_agree_with_gguf_py_and_load_in_llama_cpp() {
    let Some(model) = test_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check_with_gguf_py.py");
    for ty in TYPES {
        let out = dir.path().join(format!("smol-{ty}.gguf"));
        let f32_out = dir.path().join(format!("smol-{ty}.f32.gguf"));
        let o = run(&[
            "convert",
            model.to_str().unwrap(),
            out.to_str().unwrap(),
            "--type",
            ty,
            "--quiet",
        ]);
        assert!(
            o.status.success(),
            "{ty}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = run(&[
            "dequantize",
            out.to_str().unwrap(),
            f32_out.to_str().unwrap(),
            "--type",
            "F32",
            "--quiet",
        ]);
        assert!(
            o.status.success(),
            "{ty}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let py = Command::new("python3")
            .arg(script)
            .arg(&out)
            .arg(&f32_out)
            .output()
            .expect("python3 runs");
        let report = String::from_utf8_lossy(&py.stdout);
        eprintln!(
            "{ty}: gguf-py\n{report}{}",
            String::from_utf8_lossy(&py.stderr)
        );
        assert!(
            py.status.success(),
            "{ty}: gguf-py disagrees with our decoding"
        );
        #[cfg(feature = "llama")]
        {
            let r = quantease_gguf::llama::smoke_test(&out)
                .unwrap_or_else(|e| panic!("{ty}: llama.cpp: {e}"));
            eprintln!(
                "{ty}: llama.cpp loaded '{}', next token {:?}",
                r.description, r.argmax_piece
            );
            assert!(r.all_logits_finite, "{ty}: non-finite logits");
            assert_eq!(r.n_vocab, 49152);
        }
        std::fs::remove_file(&f32_out).unwrap();
    }
}

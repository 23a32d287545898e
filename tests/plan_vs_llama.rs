//! Our plan gives every tensor the type llama.cpp's own quantiser gives it, for every mix we
//! produce, on a real model (SmolLM2-135M: width 576, so the fallbacks are exercised too).
#![cfg(feature = "llama")]

mod common;

use common::test_model;
use quantease_gguf::gguf::GgufFile;
use quantease_gguf::llama::quantize::llama_quantize;
use quantease_gguf::plan::{self, Mix, ModelFacts, PlanOptions, TensorShape};

#[test]
fn plan_matches_llama_quantize_tensor_for_tensor() {
    let Some(model) = test_model() else { return };
    let src = GgufFile::open(&model).unwrap();
    let shapes: Vec<TensorShape> = src
        .header()
        .tensors
        .iter()
        .map(|t| TensorShape {
            name: t.name.clone(),
            dims: t.dims.clone(),
            source_type: t.ty,
        })
        .collect();
    let facts = ModelFacts::from_metadata(&src.header().metadata);
    let dir = tempfile::tempdir().unwrap();
    let mixes = [
        Mix::Q4_0,
        Mix::Q5_1,
        Mix::Q2_K,
        Mix::Q3_K_S,
        Mix::Q3_K_M,
        Mix::Q3_K_L,
        Mix::Q4_K_S,
        Mix::Q4_K_M,
        Mix::Q5_K_M,
        Mix::Q6_K,
        Mix::IQ4_NL,
        Mix::IQ4_XS,
        Mix::Q8_0,
    ];
    for mix in mixes {
        let out = dir.path().join(format!("llama-{mix}.gguf"));
        llama_quantize(&model, &out, mix.name(), None, 2).unwrap_or_else(|e| panic!("{mix}: {e}"));
        let theirs = GgufFile::open(&out).unwrap();
        let opts = PlanOptions {
            outlier_pool: None,
            outlier_tensors: Vec::new(),
            mix,
            tensor_types: vec![],
            output_tensor_type: None,
            token_embedding_type: None,
            pure: false,
            has_imatrix: false,
        };
        let ours = plan::plan(&shapes, &facts, &opts).unwrap();
        let mut differ = Vec::new();
        for p in &ours {
            let t = theirs
                .tensor(&p.name)
                .unwrap_or_else(|| panic!("{mix}: llama.cpp wrote no {}", p.name));
            if t.ty != p.target_type {
                differ.push(format!(
                    "{}: ours {} llama.cpp {}",
                    p.name, p.target_type, t.ty
                ));
            }
        }
        assert!(
            differ.is_empty(),
            "{mix}: {} tensors differ:\n{}",
            differ.len(),
            differ.join("\n")
        );
        assert_eq!(
            theirs.get("general.file_type").and_then(|v| v.as_u64()),
            Some(mix.file_type() as u64),
            "{mix}: general.file_type"
        );
        let ours_bytes: u64 = ours.iter().map(|p| p.target_bytes()).sum();
        let theirs_bytes: u64 = theirs.header().tensors.iter().map(|t| t.n_bytes).sum();
        assert_eq!(ours_bytes, theirs_bytes, "{mix}: tensor bytes");
        eprintln!(
            "{mix}: all {} tensor types match llama.cpp ({:.2} MiB)",
            ours.len(),
            ours_bytes as f64 / 1048576.0
        );
        std::fs::remove_file(&out).unwrap();
    }
}

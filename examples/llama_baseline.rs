//! llama.cpp baseline: dequantise a source GGUF to an F32 reference, quantise it with
//! `llama_model_quantize` to FTYPE, and measure PPL/KLD of the result against the reference.
//!
//! Usage: cargo run --release --example llama_baseline -- SOURCE TEXT OUTDIR FTYPE [CHUNKS]
use std::path::PathBuf;

use quantease_gguf::eval::{evaluate, EvalOptions};
use quantease_gguf::llama::{llama_quantize, Ftype};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err("usage: llama_baseline SOURCE TEXT OUTDIR FTYPE [CHUNKS]".into());
    }
    let source = PathBuf::from(&args[1]);
    let text = std::fs::read_to_string(&args[2])?;
    let outdir = PathBuf::from(&args[3]);
    let ftype: Ftype = args[4].parse()?;
    let chunks: Option<usize> = args.get(5).map(|s| s.parse()).transpose()?;
    std::fs::create_dir_all(&outdir)?;

    let reference = outdir.join("reference-f32.gguf");
    if !reference.exists() {
        llama_quantize(&source, &reference, Ftype::F32, None, 0)?;
    }
    let quantised = outdir.join(format!("llama-{ftype}.gguf"));
    llama_quantize(&reference, &quantised, ftype, None, 0)?;
    let size = std::fs::metadata(&quantised)?.len();
    let report = evaluate(
        &quantised,
        Some(&reference),
        &text,
        EvalOptions {
            n_chunks: chunks,
            progress: true,
            ..EvalOptions::default()
        },
    )?;
    println!("{report}");
    println!("file size  {:.2} MB", size as f64 / 1e6);
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

//! Time the pieces of an evaluation: model load, one 512-token decode, logits scoring.
//! Usage: cargo run --release --example llama_timing -- MODEL TEXT [THREADS]
use std::time::Instant;

use quantease_gguf::llama::{Context, ContextParams, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: llama_timing MODEL TEXT [THREADS]";
    let path = args.get(1).ok_or(usage)?;
    let text_path = args.get(2).ok_or(usage)?;
    let threads: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let t = Instant::now();
    let model = Model::load(path)?;
    println!(
        "load        {:8.3} s  ({})",
        t.elapsed().as_secs_f64(),
        model.description()
    );
    let text = std::fs::read_to_string(text_path)?;
    let t = Instant::now();
    let toks = model.tokenize(&text, true)?;
    println!(
        "tokenize    {:8.3} s  ({} tokens)",
        t.elapsed().as_secs_f64(),
        toks.len()
    );
    let t = Instant::now();
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: 512,
            n_batch: 512,
            n_threads: threads,
            eval_callback: None,
        },
    )?;
    println!("context     {:8.3} s", t.elapsed().as_secs_f64());
    if toks.len() < 3 * 512 {
        return Err("text too short: need 1536 tokens".into());
    }
    for rep in 0..3 {
        ctx.clear_kv_cache();
        let t = Instant::now();
        ctx.decode_with_outputs(&toks[rep * 512..(rep + 1) * 512], 0, 256)?;
        println!("decode 512  {:8.3} s", t.elapsed().as_secs_f64());
    }
    Ok(())
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use quantease_gguf::formats::GgmlType;
use quantease_gguf::gguf::{GgufWriter, MetaValue, TensorPlan};
use std::path::{Path, PathBuf};
use std::process::Output;

/// The real model the CI script fetches, if the environment names it.
pub fn test_model() -> Option<PathBuf> {
    match std::env::var_os("QUANTEASE_TEST_MODEL") {
        Some(p) if Path::new(&p).exists() => Some(PathBuf::from(p)),
        _ => {
            eprintln!("QUANTEASE_TEST_MODEL not set: skipping the real-model part of this test");
            None
        }
    }
}

/// Run the binary with arguments.
pub fn run(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_quantease-gguf"))
        .args(args)
        .output()
        .expect("binary runs")
}

/// A small deterministic pseudo-random generator (xorshift), so fixtures need no dependency.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Roughly normal(0, 1): sum of uniforms.
    pub fn normal(&mut self) -> f32 {
        let mut s = 0.0f32;
        for _ in 0..6 {
            s += (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        }
        (s - 3.0) * std::f32::consts::SQRT_2
    }
}

/// Write a tiny llama-shaped F32 model (2 layers, width 64) for tests that need no real model.
/// `poison` puts a NaN into the first weight of `blk.1.ffn_down.weight`.
pub fn tiny_model(path: &Path, poison: bool) {
    let width = 64u64;
    let ff = 128u64;
    let mut tensors = vec![("token_embd.weight".to_string(), vec![width, 100u64])];
    for l in 0..2 {
        tensors.push((format!("blk.{l}.attn_norm.weight"), vec![width]));
        tensors.push((format!("blk.{l}.attn_q.weight"), vec![width, width]));
        tensors.push((format!("blk.{l}.attn_k.weight"), vec![width, width / 2]));
        tensors.push((format!("blk.{l}.attn_v.weight"), vec![width, width / 2]));
        tensors.push((format!("blk.{l}.attn_output.weight"), vec![width, width]));
        tensors.push((format!("blk.{l}.ffn_norm.weight"), vec![width]));
        tensors.push((format!("blk.{l}.ffn_gate.weight"), vec![width, ff]));
        tensors.push((format!("blk.{l}.ffn_up.weight"), vec![width, ff]));
        tensors.push((format!("blk.{l}.ffn_down.weight"), vec![ff, width]));
    }
    tensors.push(("output_norm.weight".to_string(), vec![width]));
    let metadata = vec![
        (
            "general.architecture".to_string(),
            MetaValue::string("llama"),
        ),
        (
            "general.name".to_string(),
            MetaValue::string("tiny test model"),
        ),
        ("llama.block_count".to_string(), MetaValue::U32(2)),
        (
            "llama.embedding_length".to_string(),
            MetaValue::U32(width as u32),
        ),
        ("llama.attention.head_count".to_string(), MetaValue::U32(4)),
        (
            "llama.attention.head_count_kv".to_string(),
            MetaValue::U32(2),
        ),
    ];
    let plans: Vec<TensorPlan> = tensors
        .iter()
        .map(|(n, d)| TensorPlan {
            name: n.clone(),
            dims: d.clone(),
            ty: GgmlType::F32,
        })
        .collect();
    let mut w = GgufWriter::create(path, &metadata, &plans).expect("create");
    let mut rng = Rng::new(7);
    for (name, dims) in &tensors {
        let n: u64 = dims.iter().product();
        let mut bytes = Vec::with_capacity(n as usize * 4);
        for i in 0..n {
            let v = if name.ends_with("norm.weight") {
                1.0
            } else if poison && i == 0 && name == "blk.1.ffn_down.weight" {
                f32::NAN
            } else {
                rng.normal() * 0.05
            };
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        w.write_tensor(&bytes).expect("write");
    }
    w.finish().expect("finish");
}

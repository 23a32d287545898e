//! Throughput of the round-to-nearest quantisers, single thread.
//!
//! Run with `cargo bench -p quantease-formats --bench quantize [-- TYPE...]`. Prints, for every
//! type, million weights quantised per second without and with importance weights (median of
//! [`RUNS`] runs) on a matrix of gaussian weights with outliers.
//!
//! Environment: `QUANT_BENCH_ROWS` (default 256) rows of `QUANT_BENCH_COLS` (default 4096)
//! weights; `QUANT_BENCH_RUNS` (default 5) runs per measurement.

use quantease_formats::{quantize_row, GgmlType};
use std::time::Instant;

/// Runs per measurement (the median is reported).
const RUNS: usize = 5;

/// The types benchmarked, in report order.
const TYPES: [GgmlType; 12] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// xorshift64* with Box–Muller gaussians: deterministic test data without dependencies.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median of the wall times of `runs` calls of `f`, in seconds.
fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let rows = env_usize("QUANT_BENCH_ROWS", 256);
    let cols = env_usize("QUANT_BENCH_COLS", 4096);
    let runs = env_usize("QUANT_BENCH_RUNS", RUNS).max(1);
    assert!(
        cols.is_multiple_of(256),
        "QUANT_BENCH_COLS must be a multiple of 256"
    );
    // Type filter from the command line (cargo passes its own `--bench` flag: skip flags).
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();

    // Weights: N(0, 0.02²) with 1 % outliers ×20; importance: log-normal per column.
    let mut rng = Rng(0x5eed_beef_0123_4567);
    let weights: Vec<f32> = (0..rows * cols)
        .map(|_| {
            let v = 0.02 * rng.normal();
            (if rng.uniform() < 0.01 { 20.0 * v } else { v }) as f32
        })
        .collect();
    let importance: Vec<f32> = (0..cols)
        .map(|_| (1.2 * rng.normal()).exp() as f32)
        .collect();

    println!("{rows} rows x {cols} weights, median of {runs} runs, single thread (M weights/s)");
    println!("{:<8} {:>14} {:>14}", "type", "no importance", "importance");
    for ty in TYPES {
        if !wanted.is_empty() && !wanted.iter().any(|w| w.eq_ignore_ascii_case(ty.name())) {
            continue;
        }
        let row_bytes = cols / ty.block_size() * ty.type_size();
        let mut out = vec![0u8; row_bytes];
        let mut rate = |imp: Option<&[f32]>| {
            let secs = median_seconds(runs, || {
                for x in weights.chunks_exact(cols) {
                    quantize_row(ty, x, imp, &mut out).expect("quantise");
                }
                std::hint::black_box(&out);
            });
            (rows * cols) as f64 / secs / 1e6
        };
        let plain = rate(None);
        let weighted = rate(Some(&importance));
        println!("{:<8} {:>14.2} {:>14.2}", ty.name(), plain, weighted);
    }
}

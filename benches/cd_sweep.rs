//! CD sweep throughput against the GEMM peak measured in the same run.
//!
//! Shapes are `q×p` = rows (output features) × row length (input features); a sweep costs
//! `2·q·p²` flops (the residual products `E·Σ`). The GEMM reference is faer's `W·Σ` (q×p times
//! p×p, the same flop count) in f32 and f64 with the same number of threads.
//!
//! `cargo bench --no-default-features --bench cd_sweep [-- THREADS [SHAPE...]]`, e.g. `-- 2 576x1536`.

use faer::{Mat, Par};
use quantease_gguf::formats::GgmlType;
use quantease_gguf::solver::{time_sweeps, FullSigma, Sigma, SolveOptions};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn gemm_gflops<T: faer::traits::ComplexField + Copy>(
    q: usize,
    p: usize,
    threads: usize,
    one: T,
    f: impl Fn(f32) -> T,
) -> f64 {
    let mut rng = Lcg(7);
    let a = Mat::<T>::from_fn(q, p, |_, _| f(rng.next()));
    let b = Mat::<T>::from_fn(p, p, |_, _| f(rng.next()));
    let mut c = Mat::<T>::zeros(q, p);
    let flops = 2.0 * q as f64 * p as f64 * p as f64;
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    let times: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            faer::linalg::matmul::matmul(
                c.as_mut(),
                faer::Accum::Replace,
                a.as_ref(),
                b.as_ref(),
                one,
                par,
            );
            t.elapsed().as_secs_f64()
        })
        .collect();
    std::hint::black_box(&c);
    flops / median(times) / 1e9
}

/// The sweep's GEMM decomposition alone: rows in chunks of `rows` (one thread each, sequential
/// GEMMs), columns of Σ in blocks of `cols` — `2·q·p²` flops like a sweep, no CD work.
fn chunked_gemm_gflops(q: usize, p: usize, rows: usize, cols: usize) -> f64 {
    use rayon::prelude::*;
    let mut rng = Lcg(11);
    let e: Vec<f32> = (0..q * p).map(|_| rng.next()).collect();
    let s = Mat::<f32>::from_fn(p, p, |_, _| rng.next());
    let flops = 2.0 * q as f64 * p as f64 * p as f64;
    let times: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            e.par_chunks(rows * p).for_each(|chunk| {
                let r = chunk.len() / p;
                let lhs = faer::MatRef::from_row_major_slice(chunk, r, p);
                let mut g = vec![0f32; r * cols];
                let mut c0 = 0;
                while c0 < p {
                    let nb = cols.min(p - c0);
                    let dst = faer::MatMut::from_row_major_slice_mut(&mut g[..r * nb], r, nb);
                    faer::linalg::matmul::matmul(
                        dst,
                        faer::Accum::Replace,
                        lhs,
                        s.as_ref().submatrix(0, c0, p, nb),
                        1.0f32,
                        Par::Seq,
                    );
                    std::hint::black_box(&g);
                    c0 += nb;
                }
            });
            t.elapsed().as_secs_f64()
        })
        .collect();
    flops / median(times) / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let threads: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2);
    let mut shapes: Vec<(usize, usize)> = args
        .iter()
        .skip(1)
        .filter_map(|s| {
            s.split_once('x')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        })
        .collect();
    if shapes.is_empty() {
        shapes = vec![(576, 1536), (1536, 8960), (4096, 4096)];
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("thread pool");
    let ty = GgmlType::Q4_0;
    println!(
        "CD sweep ({ty}, scale refits on) vs faer GEMM, {threads} threads, median of 3; \
         q×p = rows × row length; GF/s counts 2·q·p² per sweep"
    );
    println!(
        "{:>11} {:>9} {:>11} {:>9} {:>9} {:>12} {:>8} {:>8} {:>10}",
        "q×p",
        "sweep s",
        "sweep GF/s",
        "f32 GEMM",
        "f64 GEMM",
        "chunked f32",
        "vs f32",
        "vs f64",
        "vs chunked"
    );
    for (q, p) in shapes {
        let mut rng = Lcg(q as u64 * 31 + p as u64);
        let w: Vec<f32> = (0..q * p).map(|_| 0.02 * rng.next()).collect();
        // Σ = V Vᵀ + I with V p×64: symmetric positive definite, correlated columns.
        let v = Mat::<f32>::from_fn(p, 64, |_, _| rng.next());
        let s = &v * v.transpose();
        let data: Vec<f32> = (0..p * p)
            .map(|k| s[(k / p, k % p)] + ((k / p == k % p) as u8 as f32))
            .collect();
        drop(s);
        let sigma = Sigma::Full(FullSigma::new(p, data).expect("p·p entries"));
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
        let mut opts = SolveOptions::default();
        if let Some(v) = env("CD_CHUNK_ROWS") {
            opts.chunk_rows = v;
        }
        if let Some(v) = env("CD_BLOCK_COLS") {
            opts.block_cols = v;
        }
        if let Some(v) = env("CD_REFIT") {
            opts.refit_scales = v != 0;
        }
        let times = time_sweeps("bench", &w, q, p, &sigma, ty, &opts, 3).expect("valid problem");
        let sweep = median(times);
        let flops = 2.0 * q as f64 * p as f64 * p as f64;
        let gf = flops / sweep / 1e9;
        let g32 = gemm_gflops::<f32>(q, p, threads, 1.0, |x| x);
        let g64 = gemm_gflops::<f64>(q, p, threads, 1.0, |x| x as f64);
        let gch = chunked_gemm_gflops(q, p, opts.chunk_rows, opts.block_cols);
        println!(
            "{:>11} {:>9.3} {:>11.1} {:>9.1} {:>9.1} {:>12.1} {:>7.0}% {:>7.0}% {:>9.0}%",
            format!("{q}x{p}"),
            sweep,
            gf,
            g32,
            g64,
            gch,
            100.0 * gf / g32,
            100.0 * gf / g64,
            100.0 * gf / gch
        );
    }
}

//! QE dot-product kernels against ggml's own CPU `vec_dot`s, same process, single thread.
//!
//! For each matrix (rows × width) the matrix-vector product `y = W·x` is timed as one `vec_dot`
//! per row, with the activations already converted to the kernel's `vec_dot_type` (Q8_0 for QE
//! and Q4_0, Q8_K for the k-quants) — what ggml's `mul_mat` does per row. Median of `REPS` runs.
//! Reports GB/s of weight bytes read and G weights/s, and QE3_1 / Q3_K in weights per second.
//! k-quants need widths that are multiples of 256 (n/a on width 576, as in llama.cpp).
//!
//! `cargo bench --bench qe_kernels [-- REPS]` (feature `llama`, on by default; build with the
//! repo's `-C target-cpu=native` so ggml gets its SIMD paths).

use std::time::Instant;

use quantease_gguf::formats::qe::{self, Kernel, QeFormat};
use quantease_gguf::formats::{quantize_row, GgmlType};
use quantease_gguf::llama::ggml::{self, CpuKernels};

struct Rng(u64);
impl Rng {
    fn normal(&mut self) -> f32 {
        let mut u = || {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (a, b) = (u(), u());
        ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
    }
}

fn median_secs(reps: usize, mut f: impl FnMut() -> f32) -> f64 {
    let mut sink = 0f32;
    sink += f(); // warm-up (caches, page faults)
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            sink += f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    std::hint::black_box(sink);
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

struct Row {
    name: String,
    bpw: f64,
    secs: f64,
    bytes: usize,
}

fn main() {
    let reps: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(7);
    println!(
        "QE vs ggml vec_dot, single thread, median of {reps}; kernel {:?} (available {:?})",
        Kernel::detect(),
        Kernel::available()
    );
    let qe_formats = [
        GgmlType::QE2_1,
        GgmlType::QE3_0,
        GgmlType::QE3_1,
        GgmlType::QE4_1,
    ];
    let ggml_types = [GgmlType::Q4_0, GgmlType::Q3_K, GgmlType::Q2_K];
    for (n_rows, width) in [(1536usize, 576usize), (576, 1536), (4096, 4096)] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n_rows * width) as u64);
        let w: Vec<f32> = (0..n_rows * width).map(|_| 0.02 * rng.normal()).collect();
        let x: Vec<f32> = (0..width).map(|_| rng.normal()).collect();
        let mut rows: Vec<Row> = Vec::new();

        // QE formats: our RTN quantiser, Q8_0 activations (as ggml's from_float produces).
        let mut q8 = vec![0u8; width / 32 * qe::BLOCK_Q8_0_BYTES];
        qe::quantize_row_q8_0_activations(&x, &mut q8);
        for ty in qe_formats {
            let fmt = QeFormat::from_type(ty).expect("QE type");
            let rb = fmt.row_bytes(width);
            let mut packed = vec![0u8; n_rows * rb];
            for (src, dst) in w.chunks_exact(width).zip(packed.chunks_exact_mut(rb)) {
                quantize_row(ty, src, None, dst).expect("quantise");
            }
            let kernels: Vec<Kernel> = if ty == GgmlType::QE3_1 {
                Kernel::available()
            } else {
                vec![Kernel::detect()]
            };
            for k in kernels {
                let secs = median_secs(reps, || {
                    packed
                        .chunks_exact(rb)
                        .map(|r| qe::vec_dot_q8_0_with(k, fmt, r, &q8).expect("dot"))
                        .sum()
                });
                let name = if k == Kernel::detect() {
                    ty.name().to_string()
                } else {
                    format!("{} ({})", ty.name(), k.name())
                };
                rows.push(Row {
                    name,
                    bpw: fmt.bits_per_weight(),
                    secs,
                    bytes: packed.len(),
                });
            }
            if ty == GgmlType::QE3_1 {
                // The same rows with every pool slot marked unused: the cost of the pool walk.
                let mut nopool = packed.clone();
                let pool_at = width / 32 * fmt.block_bytes();
                for r in nopool.chunks_exact_mut(rb) {
                    for e in r[pool_at..].chunks_exact_mut(4) {
                        e.copy_from_slice(&[0xff, 0xff, 0, 0]);
                    }
                }
                let secs = median_secs(reps, || {
                    nopool
                        .chunks_exact(rb)
                        .map(|r| qe::vec_dot_q8_0(fmt, r, &q8).expect("dot"))
                        .sum()
                });
                rows.push(Row {
                    name: "QE3_1 (no pool)".into(),
                    bpw: fmt.bits_per_weight(),
                    secs,
                    bytes: nopool.len(),
                });
            }
        }

        // ggml's own kernels.
        for ty in ggml_types {
            if width % ty.block_size() != 0 {
                rows.push(Row {
                    name: ty.name().to_string(),
                    bpw: ty.bits_per_weight(),
                    secs: f64::NAN,
                    bytes: 0,
                });
                continue;
            }
            let k = CpuKernels::new(ty).expect("ggml CPU kernels");
            let packed = ggml::quantize_rows(ty, &w, width, None).expect("ggml quantise");
            let mut act = vec![0u8; k.dot_row_bytes(width)];
            k.activations_from_f32(&x, &mut act)
                .expect("ggml from_float");
            let rb = packed.len() / n_rows;
            let secs = median_secs(reps, || {
                packed
                    .chunks_exact(rb)
                    .map(|r| k.vec_dot(width, r, &act).expect("ggml vec_dot"))
                    .sum()
            });
            rows.push(Row {
                name: ty.name().to_string(),
                bpw: ty.bits_per_weight(),
                secs,
                bytes: packed.len(),
            });
        }

        println!("\n{n_rows} x {width} (rows x width), y = W·x");
        println!(
            "{:<16} {:>6} {:>10} {:>9} {:>11}",
            "type", "bpw", "µs", "GB/s", "G weights/s"
        );
        let n = (n_rows * width) as f64;
        for r in &rows {
            if r.secs.is_nan() {
                println!("{:<16} {:>6.3} {:>10}", r.name, r.bpw, "n/a (width)");
            } else {
                println!(
                    "{:<16} {:>6.3} {:>10.1} {:>9.2} {:>11.2}",
                    r.name,
                    r.bpw,
                    r.secs * 1e6,
                    r.bytes as f64 / r.secs / 1e9,
                    n / r.secs / 1e9
                );
            }
        }
        let get = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.secs);
        match (get("QE3_1"), get("Q3_K")) {
            (Some(qe3), Some(q3k)) if !q3k.is_nan() => {
                println!("QE3_1 / Q3_K weights per second: {:.2}", q3k / qe3)
            }
            _ => println!("QE3_1 / Q3_K: n/a (Q3_K needs width % 256 == 0)"),
        }
        if let (Some(qe3), Some(q40)) = (get("QE3_1"), get("Q4_0")) {
            println!("QE3_1 / Q4_0 weights per second: {:.2}", q40 / qe3);
        }
    }
}

//! Held-out study of the solver: solve real layers with the Gram of one calibration text and score
//! every solution with the Gram of *another* text, `‖(W−Ŵ)X_test‖² / ‖W X_test‖²`. The gap between
//! the calibration-set error the solver reports and this held-out error is the overfit; the
//! example prints both for RTN, GPTQ and QuantEase at several `shrink` values, per weight and summed
//! per weight class (attn_q, ffn_down, …), to choose the shrink from measurements.
//!
//! `cargo run --release --no-default-features --example heldout -- MODEL.gguf TRAIN.gram.gguf TEST.gram.gguf TYPE LAYER...`
//!
//! Env: `SHRINKS` (comma list, default `0,0.25,0.5,0.75,0.9`; empty: no solver runs); `FILES`
//! (comma list of quantised GGUFs of the same model, e.g. llama.cpp's: their tensors are scored
//! too, as extra columns); `ITERS`, `TOL`, `DAMP` as in `real_layers`.

#[path = "support/layers.rs"]
mod layers;

use quantease_gguf::formats::{dequantize_rows, GgmlType};
use quantease_gguf::gram::GramFile;
use quantease_gguf::solver::{solve, Method, SolveOptions};
use quantease_gguf::source::{GgufSource, TensorSource};
use std::collections::BTreeMap;
use std::path::Path;

/// `tr(D Σ Dᵀ)` for `D` (q×p, row-major) and a dense symmetric `Σ` (p×p).
fn quad(d: &[f32], sigma: &[f32], q: usize, p: usize) -> f64 {
    let mut prod = vec![0f32; q * p];
    faer::linalg::matmul::matmul(
        faer::MatMut::from_row_major_slice_mut(&mut prod, q, p),
        faer::Accum::Replace,
        faer::MatRef::from_row_major_slice(d, q, p),
        faer::MatRef::from_row_major_slice(sigma, p, p),
        1.0f32,
        faer::Par::rayon(0),
    );
    prod.iter()
        .zip(d)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(
        args.len() >= 5,
        "usage: MODEL.gguf TRAIN.gram.gguf TEST.gram.gguf TYPE LAYER..."
    );
    let model = GgufSource::open(Path::new(&args[0])).expect("model");
    let train = GramFile::open(Path::new(&args[1])).expect("train gram");
    let test = GramFile::open(Path::new(&args[2])).expect("test gram");
    let ty = GgmlType::from_name(&args[3]).expect("type");
    let layers = &args[4..];
    let shrinks: Vec<f64> = std::env::var("SHRINKS")
        .unwrap_or_else(|_| "0,0.25,0.5,0.75,0.9".into())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("SHRINKS"))
        .collect();
    let files: Vec<(String, GgufSource)> = std::env::var("FILES")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|f| {
            let name = Path::new(f)
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, GgufSource::open(Path::new(f)).expect("FILES"))
        })
        .collect();
    let mut head = format!("{:<26} {:>6} {:>9} {:>9}", "weight", "p", "RTN", "GPTQ.5");
    for s in &shrinks {
        head += &format!(" {:>9}", format!("QE{s}"));
    }
    for (name, _) in &files {
        head += &format!(" {:>9}", &name[..name.len().min(9)]);
    }
    println!("{head}   (held-out rel. error; in brackets: calibration-set error of QE)");
    // Per class: sums of held-out relative errors, in the column order above.
    let mut class: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let base_opts = layers::options_from_env();
    for wt in layers::weights(&model, &train, layers, ty.block_size()) {
        if !test.has_full(&wt.name) {
            continue;
        }
        let (w, x, q, p) = (wt.name.as_str(), &wt.w, wt.q, wt.p);
        let s_test = layers::gram_f32(&test, &wt);
        let base = quad(x, &s_test, q, p);
        let sigma = layers::sigma(&train, &wt);
        let held_out = |bytes: &[u8]| -> f64 {
            let mut wh = vec![0f32; q * p];
            dequantize_rows(ty, bytes, p, &mut wh).expect("dequantize");
            for (a, b) in wh.iter_mut().zip(x) {
                *a = b - *a;
            }
            quad(&wh, &s_test, q, p) / base
        };
        let mut row = Vec::new();
        let rtn = solve(w, x, q, p, &sigma, ty, Method::Rtn, &base_opts).expect("rtn");
        row.push(held_out(&rtn.bytes));
        let gptq_opts = SolveOptions {
            shrink: 0.5,
            ..base_opts.clone()
        };
        let g = solve(w, x, q, p, &sigma, ty, Method::Gptq, &gptq_opts).expect("gptq");
        row.push(held_out(&g.bytes));
        let mut train_err = Vec::new();
        for &s in &shrinks {
            let opts = SolveOptions {
                shrink: s,
                ..base_opts.clone()
            };
            let e = solve(w, x, q, p, &sigma, ty, Method::QuantEase, &opts).expect("qe");
            row.push(held_out(&e.bytes));
            train_err.push(e.rel_error);
        }
        for (_, f) in &files {
            let idx = f
                .tensors()
                .iter()
                .position(|t| t.name == w)
                .unwrap_or_else(|| panic!("{w} missing from a FILES entry"));
            let mut wh = vec![0f32; q * p];
            f.read_rows(idx, 0, &mut wh).expect("rows");
            for (a, b) in wh.iter_mut().zip(x) {
                *a = b - *a;
            }
            row.push(quad(&wh, &s_test, q, p) / base);
        }
        let mut line = format!("{w:<26} {p:>6}");
        for v in &row {
            line += &format!(" {v:>9.3e}");
        }
        let tr: Vec<String> = train_err.iter().map(|v| format!("{v:.2e}")).collect();
        println!("{line}   [{}]", tr.join(" "));
        let kind = w.split('.').nth(2).unwrap_or(w).to_string();
        let acc = class.entry(kind).or_insert_with(|| vec![0.0; row.len()]);
        for (a, v) in acc.iter_mut().zip(&row) {
            *a += v;
        }
    }
    println!("\nper class, held-out error relative to RTN:");
    for (k, v) in &class {
        let r: Vec<String> = v.iter().map(|x| format!("{:>9.3}", x / v[0])).collect();
        println!("{k:<26} {:>6} {}", "", r.join(" "));
    }
}

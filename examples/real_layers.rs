//! Solver study on real layers: RTN vs GPTQ vs QuantEase relative error `‖(W−Ŵ)X‖²/‖WX‖²` with
//! the full Grams of a calibration file (the `calibrate` output: `quantease.gram.weights` /
//! `quantease.gram.tensors`, packed lower-triangular f32 rows).
//!
//! `cargo run --release --no-default-features --example real_layers -- MODEL.gguf GRAM.gguf TYPE [LAYER...]`

use quantease_gguf::formats::GgmlType;
use quantease_gguf::gguf::{GgufFile, MetaArray, MetaValue};
use quantease_gguf::solver::{solve, FullSigma, Method, Sigma, SolveOptions};
use quantease_gguf::source::{GgufSource, TensorSource};
use std::path::Path;

fn strings(f: &GgufFile, key: &str) -> Vec<String> {
    match f.get(key) {
        Some(MetaValue::Array(MetaArray::String(v))) => v
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect(),
        _ => panic!("{key}: missing or not a string array"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(
        args.len() >= 3,
        "usage: MODEL.gguf GRAM.gguf TYPE [LAYER...]"
    );
    let model = GgufSource::open(Path::new(&args[0])).expect("model");
    let gram = GgufFile::open(Path::new(&args[1])).expect("gram file");
    let ty = GgmlType::from_name(&args[2]).expect("type");
    let layers: Vec<String> = if args.len() > 3 {
        args[3..].to_vec()
    } else {
        vec!["0".into(), "15".into(), "29".into()]
    };
    let weights = strings(&gram, "quantease.gram.weights");
    let tensors = strings(&gram, "quantease.gram.tensors");
    // `ITERS=N` / `TOL=X` override the defaults (to study the stopping rule).
    let mut opts = SolveOptions::default();
    if let Some(n) = std::env::var("ITERS").ok().and_then(|v| v.parse().ok()) {
        opts.iters = n;
    }
    if let Some(t) = std::env::var("TOL").ok().and_then(|v| v.parse().ok()) {
        opts.tol = t;
    }
    println!(
        "{:<28} {:>11} {:>11} {:>11} {:>8} {:>6} {:>5} {:>7}",
        "weight", "RTN", "GPTQ", "QuantEase", "QE/RTN", "init", "sw", "s"
    );
    let (mut sr, mut sg, mut sq) = (0.0, 0.0, 0.0);
    for (w, t) in weights.iter().zip(&tensors) {
        if !layers.iter().any(|l| w.starts_with(&format!("blk.{l}."))) {
            continue;
        }
        let Some(idx) = model.tensors().iter().position(|x| &x.name == w) else {
            continue;
        };
        let info = &model.tensors()[idx];
        let p = info.dims[0] as usize;
        let q: usize = info.dims[1..].iter().product::<u64>() as usize;
        if !p.is_multiple_of(ty.block_size()) {
            continue;
        }
        let mut x = vec![0f32; q * p];
        model.read_rows(idx, 0, &mut x).expect("rows");
        let gt = gram.tensor(t).expect("gram tensor");
        let data = gram.tensor_data(gt);
        let at = |k: usize| f32::from_le_bytes(data[4 * k..4 * k + 4].try_into().unwrap());
        let mut s = vec![0f32; p * p];
        for r in 0..p {
            for c in 0..=r {
                let v = at(r * (r + 1) / 2 + c);
                s[r * p + c] = v;
                s[c * p + r] = v;
            }
        }
        let sigma = Sigma::Full(FullSigma::new(p, s).unwrap());
        let g = solve(w, &x, q, p, &sigma, ty, Method::Gptq, &opts).expect("gptq");
        let e = solve(w, &x, q, p, &sigma, ty, Method::QuantEase, &opts).expect("qe");
        sr += e.rtn_rel_error;
        sg += g.rel_error;
        sq += e.rel_error;
        println!(
            "{:<28} {:>11.4e} {:>11.4e} {:>11.4e} {:>8.3} {:>6} {:>5} {:>7.2}",
            w,
            e.rtn_rel_error,
            g.rel_error,
            e.rel_error,
            e.rel_error / e.rtn_rel_error,
            e.init.name(),
            e.sweeps,
            e.seconds
        );
        if std::env::var("HISTORY").is_ok() {
            let h0 = e.history[0];
            let h: Vec<String> = e.history.iter().map(|v| format!("{:.3}", v / h0)).collect();
            println!("    history/start {}", h.join(" "));
        }
    }
    println!("sum of rel errors: RTN {sr:.4e}  GPTQ {sg:.4e}  QuantEase {sq:.4e}  (QE/RTN {:.3}, QE/GPTQ {:.3})", sq / sr, sq / sg);
}

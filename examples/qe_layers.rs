//! QE-format study on real layers (bits × outlier pool × method): RTN vs QuantEase relative error `‖(W−Ŵ)X‖²/‖WX‖²` with
//! the full Grams of a calibration file (the `calibrate` output: `quantease.gram.weights` /
//! `quantease.gram.tensors`, packed lower-triangular f32 rows).
//!
//! `cargo run --release --no-default-features --example qe_layers -- MODEL.gguf GRAM.gguf BITS [LAYER...]`
//! (`DAMP=x` sets the damping)

use quantease_gguf::gguf::{GgufFile, MetaArray, MetaValue};
use quantease_gguf::solver::{solve_qe, FullSigma, Method, Sigma, SolveOptions};
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
    let bits: u8 = args[2].parse().expect("bits");
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
    if let Some(t) = std::env::var("DAMP").ok().and_then(|v| v.parse().ok()) {
        opts.damp = t;
    }
    println!(
        "{:<28} {:>5} {:>11} {:>11} {:>8} {:>5} {:>7}",
        "weight", "pool", "RTN", "QuantEase", "QE/RTN", "sw", "s"
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
        if !p.is_multiple_of(32) {
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
        for pool in [0u8, 1, 2] {
            let e =
                solve_qe(w, &x, q, p, &sigma, bits, pool, Method::QuantEase, &opts).expect("qe");
            println!(
                "{:<28} {:>5} {:>11.4e} {:>11.4e} {:>8.3} {:>5} {:>7.2}",
                w,
                pool,
                e.rtn_rel_error,
                e.rel_error,
                e.rel_error / e.rtn_rel_error,
                e.sweeps,
                e.seconds
            );
            if pool == 1 {
                sr += e.rtn_rel_error;
                sq += e.rel_error;
                sg += 0.0;
            }
        }
    }
    println!("pool 1 sums: RTN {sr:.4e} QuantEase {sq:.4e} {sg}");
}

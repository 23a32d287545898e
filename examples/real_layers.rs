//! Solver study on real layers: RTN vs GPTQ vs QuantEase relative error `‖(W−Ŵ)X‖²/‖WX‖²` with
//! the full Grams of a calibration file (the `calibrate` output). `ITERS`, `TOL`, `DAMP`, `SHRINK`
//! override the solver defaults (`SHRINK` is 0 here; `convert` defaults to 0.5).
//!
//! `cargo run --release --no-default-features --example real_layers -- MODEL.gguf GRAM.gguf TYPE [LAYER...]`

#[path = "support/layers.rs"]
mod layers;

use quantease_gguf::formats::GgmlType;
use quantease_gguf::gram::GramFile;
use quantease_gguf::solver::{solve, Method};
use quantease_gguf::source::GgufSource;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(
        args.len() >= 3,
        "usage: MODEL.gguf GRAM.gguf TYPE [LAYER...]"
    );
    let model = GgufSource::open(Path::new(&args[0])).expect("model");
    let gram = GramFile::open(Path::new(&args[1])).expect("gram file");
    let ty = GgmlType::from_name(&args[2]).expect("type");
    let layers: Vec<String> = if args.len() > 3 {
        args[3..].to_vec()
    } else {
        vec!["0".into(), "15".into(), "29".into()]
    };
    let opts = layers::options_from_env();
    println!(
        "{:<28} {:>11} {:>11} {:>11} {:>8} {:>6} {:>5} {:>7}",
        "weight", "RTN", "GPTQ", "QuantEase", "QE/RTN", "init", "sw", "s"
    );
    let (mut sr, mut sg, mut sq) = (0.0, 0.0, 0.0);
    for wt in layers::weights(&model, &gram, &layers, ty.block_size()) {
        let sigma = layers::sigma(&gram, &wt);
        let (w, x, q, p) = (wt.name.as_str(), &wt.w, wt.q, wt.p);
        let g = solve(w, x, q, p, &sigma, ty, Method::Gptq, &opts).expect("gptq");
        let e = solve(w, x, q, p, &sigma, ty, Method::QuantEase, &opts).expect("qe");
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

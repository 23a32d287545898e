//! QE-format study on real layers (bits × outlier pool × method): RTN vs QuantEase relative error `‖(W−Ŵ)X‖²/‖WX‖²` with
//! the full Grams of a calibration file (the `calibrate` output).
//!
//! `cargo run --release --no-default-features --example qe_layers -- MODEL.gguf GRAM.gguf BITS [LAYER...]`
//! (`ITERS`, `TOL`, `DAMP`, `SHRINK` override the solver defaults)

#[path = "support/layers.rs"]
mod layers;

use quantease_gguf::gram::GramFile;
use quantease_gguf::solver::{solve_qe, Method};
use quantease_gguf::source::GgufSource;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(
        args.len() >= 3,
        "usage: MODEL.gguf GRAM.gguf BITS [LAYER...]"
    );
    let model = GgufSource::open(Path::new(&args[0])).expect("model");
    let gram = GramFile::open(Path::new(&args[1])).expect("gram file");
    let bits: u8 = args[2].parse().expect("bits");
    let layers: Vec<String> = if args.len() > 3 {
        args[3..].to_vec()
    } else {
        vec!["0".into(), "15".into(), "29".into()]
    };
    let opts = layers::options_from_env();
    println!(
        "{:<28} {:>5} {:>11} {:>11} {:>8} {:>5} {:>7}",
        "weight", "pool", "RTN", "QuantEase", "QE/RTN", "sw", "s"
    );
    let (mut sr, mut sq) = (0.0, 0.0);
    for wt in layers::weights(&model, &gram, &layers, 32) {
        let sigma = layers::sigma(&gram, &wt);
        let (w, x, q, p) = (wt.name.as_str(), &wt.w, wt.q, wt.p);
        for pool in [0u8, 1, 2] {
            let e = solve_qe(w, x, q, p, &sigma, bits, pool, Method::QuantEase, &opts).expect("qe");
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
            }
        }
    }
    println!("pool 1 sums: RTN {sr:.4e} QuantEase {sq:.4e}");
}

//! Proxy sweep for the QE block design: weighted-RTN relative error of real tensors for block
//! sizes 16/32/64, f16 vs 8-bit block scales, 2/3/4 bits, without and with an outlier pool.
//!
//! Error of a tensor: `Σ v_j (w − ŵ)² / Σ v_j w²` over all its weights, `v_j` = the imatrix
//! importance of input column `j` (the expected relative output error `‖(W − Ŵ)x‖²/‖Wx‖²` for
//! inputs with `E x_j² = v_j` and uncorrelated columns); `v = 1` without an imatrix. Summed
//! over the selected tensors (numerator and denominator separately).
//!
//! The grid is QE's half-integer symmetric grid `d·(c − (2^b − 1)/2)`; per block the scale is
//! searched (inverse scales `(L − 0.2 + 0.1k)/amax`, k = 0..17, each with its least-squares
//! refit; best weighted error), then stored: f16, or 8-bit (`d = D·s/255`, `s` in 0..=255, one
//! f32 `D` per row) with the codes re-chosen for the stored scale. Outliers (pool of 1 byte per
//! 32 weights: `floor(p/128)` per row) follow the QE rule: largest `|w|·sqrt(v)`, removed before
//! the fit, stored as f16 `h = w − grid`. The rows `QE*` use the real QE quantiser
//! (`quantize_row` + `dequantize_row`) of the current QE format version (with version 1 they
//! were a check of the half-integer proxy; since version 2 they measure the chosen design);
//! `Q4_0`/`IQ4_NL` are ggml's.
//!
//! Further 8-bit scale encodings for 16-weight blocks: minifloats `e5m3`/`e4m4` (relative step
//! 2^−m), and `2^e·u8` (linear 8-bit under a power-of-two row scale). Non-uniform level tables
//! (`d·t[c]`, scale searched over `amax/tmax·(0.7 … 1.3)` with least-squares refits, stored
//! rounded: `m0` = f16, `m4`/`m3` = minifloat with that many mantissa bits): `LM` = Gaussian
//! Lloyd–Max, `emp` = Lloyd–Max of block-max-normalised SmolLM2 weights, `mid` = between the two,
//! `iq4` = ggml's IQ4_NL table. These chose format version 2 (`formats/SPEC.md` §8).
//!
//! `cargo run --release --no-default-features --example qe_block_sweep -- MODEL.gguf [IMATRIX] [LAYER...]`

use std::path::Path;

use quantease_gguf::formats::{dequantize_row, quantize_row, GgmlType};
use quantease_gguf::imatrix::Imatrix;
use quantease_gguf::source::{GgufSource, TensorSource};

/// A row quantiser under test: `(row, importance) -> reconstruction`.
type RowFn = Box<dyn Fn(&[f32], &[f32]) -> Vec<f32>>;

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    F16,
    U8,
    /// 8-bit minifloat with this many mantissa bits (exponent range assumed wide enough).
    Mini(u32),
    /// 8-bit linear under a power-of-two row scale: `d = 2^e·s`, `s` in 0..=255.
    RowExpU8,
}

/// Weighted-RTN block fit: returns the continuous best scale.
fn fit_block(x: &[f32], w: &[f32], levels: f32) -> f32 {
    let amax = x
        .iter()
        .zip(w)
        .filter(|(_, &wi)| wi > 0.0)
        .fold(0f32, |m, (&v, _)| m.max(v.abs()));
    if amax == 0.0 {
        return 0.0;
    }
    let mut best = (f64::INFINITY, 0f32);
    for k in 0..=17 {
        let d0 = amax / (levels - 0.2 + 0.1 * k as f32);
        // Codes for d0, then the least-squares scale for those codes.
        let (mut sxg, mut sgg) = (0f64, 0f64);
        for (&xi, &wi) in x.iter().zip(w) {
            let g = level_of(xi, d0, levels);
            sxg += (wi * xi * g) as f64;
            sgg += (wi * g * g) as f64;
        }
        for d in [d0, if sgg > 0.0 { (sxg / sgg) as f32 } else { d0 }] {
            let e = block_err(x, w, d, levels);
            if e < best.0 {
                best = (e, d);
            }
        }
    }
    best.1
}

/// Nearest half-integer level in `[−levels, levels]` for `x/d`.
fn level_of(x: f32, d: f32, levels: f32) -> f32 {
    if d == 0.0 {
        return 0.5;
    }
    ((x / d - 0.5).round() + 0.5).clamp(-levels, levels)
}

fn block_err(x: &[f32], w: &[f32], d: f32, levels: f32) -> f64 {
    x.iter()
        .zip(w)
        .map(|(&xi, &wi)| {
            let e = (xi - d * level_of(xi, d, levels)) as f64;
            wi as f64 * e * e
        })
        .sum()
}

/// Lloyd–Max levels for a unit Gaussian, 8 and 16 levels (symmetric).
const LM8: [f32; 8] = [-2.152, -1.344, -0.756, -0.245, 0.245, 0.756, 1.344, 2.152];
const LM16: [f32; 16] = [
    -2.7326, -2.0690, -1.6180, -1.2562, -0.9424, -0.6568, -0.3881, -0.1284, 0.1284, 0.3881, 0.6568,
    0.9424, 1.2562, 1.6180, 2.0690, 2.7326,
];

const EMP8: [f32; 8] = [-127.0, -71.0, -34.0, -7.0, 7.0, 34.0, 71.0, 127.0];
const EMP16: [f32; 16] = [
    -127.0, -99.0, -74.0, -55.0, -38.0, -24.0, -11.0, -3.0, 3.0, 11.0, 24.0, 38.0, 55.0, 74.0,
    99.0, 127.0,
];
const IQ4: [f32; 16] = [
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0,
    89.0, 113.0,
];
const MID8: [f32; 8] = [-127.0, -75.0, -40.0, -11.0, 11.0, 40.0, 75.0, 127.0];
const MID16: [f32; 16] = [
    -127.0, -102.0, -79.0, -60.0, -43.0, -29.0, -16.0, -5.0, 5.0, 16.0, 29.0, 43.0, 60.0, 79.0,
    102.0, 127.0,
];

fn nearest(t: &[f32], y: f32) -> f32 {
    t.iter()
        .copied()
        .min_by(|a, b| (a - y).abs().total_cmp(&(b - y).abs()))
        .unwrap()
}

/// Non-uniform grid `d·t[c]`: block size `block`, scale stored as f16 or e4m4 minifloat.
fn table_row(x: &[f32], v: &[f32], t: &'static [f32], block: usize, mini: u32) -> Vec<f32> {
    let tmax = t.iter().fold(0f32, |m, &a| m.max(a.abs()));
    let round_scale = |d: f32| -> f32 {
        if mini > 0 && d > 0.0 {
            let step = (d.log2().floor() - mini as f32).exp2();
            (d / step).round() * step
        } else {
            half::f16::from_f32(d).to_f32()
        }
    };
    let err = |xb: &[f32], wb: &[f32], d: f32| -> f64 {
        xb.iter()
            .zip(wb)
            .map(|(&a, &w)| {
                let q = if d > 0.0 { d * nearest(t, a / d) } else { 0.0 };
                w as f64 * ((a - q) as f64).powi(2)
            })
            .sum()
    };
    let mut y = Vec::with_capacity(x.len());
    for (xb, wb) in x.chunks(block).zip(v.chunks(block)) {
        let amax = xb.iter().fold(0f32, |m, &a| m.max(a.abs()));
        let mut best = (f64::INFINITY, 0f32);
        if amax > 0.0 {
            for k in 0..=20 {
                let d0 = amax / tmax * (0.7 + 0.03 * k as f32);
                let (mut sxg, mut sgg) = (0f64, 0f64);
                for (&a, &w) in xb.iter().zip(wb) {
                    let g = nearest(t, a / d0);
                    sxg += (w * a * g) as f64;
                    sgg += (w * g * g) as f64;
                }
                let d1 = if sgg > 0.0 { (sxg / sgg) as f32 } else { d0 };
                for d in [d0, d1] {
                    let d = round_scale(d);
                    let e = err(xb, wb, d);
                    if e < best.0 {
                        best = (e, d);
                    }
                }
            }
        }
        let d = best.1;
        y.extend(
            xb.iter()
                .map(|&a| if d > 0.0 { d * nearest(t, a / d) } else { 0.0 }),
        );
    }
    y
}

/// Quantise one row with the proxy format; returns the reconstruction.
fn proxy_row(x: &[f32], v: &[f32], bits: u32, block: usize, scale: Scale, pool: bool) -> Vec<f32> {
    let p = x.len();
    let levels = ((1u32 << bits) - 1) as f32 * 0.5;
    let mut out_mask = vec![false; p];
    if pool {
        let cap = p / 128;
        let mut idx: Vec<usize> = (0..p).collect();
        let score = |i: usize| x[i].abs() * v[i].max(0.0).sqrt();
        idx.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
        for &i in idx.iter().take(cap) {
            if score(i) > 0.0 {
                out_mask[i] = true;
            }
        }
    }
    let w: Vec<f32> = (0..p)
        .map(|i| if out_mask[i] { 0.0 } else { v[i].max(0.0) })
        .collect();
    let mut d: Vec<f32> = x
        .chunks(block)
        .zip(w.chunks(block))
        .map(|(xb, wb)| fit_block(xb, wb, levels))
        .collect();
    match scale {
        Scale::F16 => {
            for s in &mut d {
                *s = half::f16::from_f32(*s).to_f32();
            }
        }
        Scale::Mini(_) | Scale::RowExpU8 => {}
        Scale::U8 => {
            let dmax = d.iter().fold(0f32, |m, &s| m.max(s));
            for s in &mut d {
                *s = if dmax > 0.0 {
                    (*s / dmax * 255.0).round() * dmax / 255.0
                } else {
                    0.0
                };
            }
        }
    }
    if let Scale::Mini(m) = scale {
        for s in &mut d {
            if *s > 0.0 {
                let e = s.log2().floor();
                let step = (e - m as f32).exp2();
                *s = (*s / step).round() * step;
            }
        }
    }
    if scale == Scale::RowExpU8 {
        let dmax = d.iter().fold(0f32, |m, &s| m.max(s));
        if dmax > 0.0 {
            let unit = (dmax / 255.0).log2().ceil().exp2();
            for s in &mut d {
                *s = (*s / unit).round().min(255.0) * unit;
            }
        }
    }
    let mut y: Vec<f32> = (0..p)
        .map(|i| {
            let s = d[i / block];
            s * level_of(x[i], s, levels)
        })
        .collect();
    for i in 0..p {
        if out_mask[i] {
            y[i] += half::f16::from_f32(x[i] - y[i]).to_f32();
        }
    }
    y
}

/// One configuration under test and its accumulated weighted error.
struct Cfg {
    name: String,
    bpw: f64,
    num: f64,
    den: f64,
    run: RowFn,
}

/// A real row quantiser of this crate (`quantize_row` + `dequantize_row`) as a configuration.
fn real_type(ty: GgmlType) -> Cfg {
    Cfg {
        name: format!("{} (real)", ty.name()),
        bpw: ty.bits_per_weight(),
        num: 0.0,
        den: 0.0,
        run: Box::new(move |x, v| {
            let mut packed = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
            quantize_row(ty, x, Some(v), &mut packed).expect("quantise");
            let mut y = vec![0f32; x.len()];
            dequantize_row(ty, &packed, &mut y).expect("decode");
            y
        }),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(!args.is_empty(), "usage: MODEL.gguf [IMATRIX] [LAYER...]");
    let model = GgufSource::open(Path::new(&args[0])).expect("open model");
    let (imatrix, layers): (Option<Imatrix>, Vec<String>) = match args.get(1) {
        Some(a) if a.parse::<u32>().is_err() => (
            Some(Imatrix::load(Path::new(a)).expect("load imatrix")),
            args[2..].to_vec(),
        ),
        _ => (None, args[1..].to_vec()),
    };
    let layers = if layers.is_empty() {
        vec!["0".into(), "10".into(), "20".into(), "29".into()]
    } else {
        layers
    };
    let kinds = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    let mut cfgs: Vec<Cfg> = Vec::new();
    for bits in [2u32, 3, 4] {
        for pool in [false, true] {
            for block in [16usize, 32, 64] {
                let extra: &[Scale] = if block == 16 {
                    &[Scale::Mini(3), Scale::Mini(4), Scale::RowExpU8]
                } else {
                    &[]
                };
                for &scale in [Scale::F16, Scale::U8].iter().chain(extra) {
                    let sbits = if scale == Scale::F16 { 16.0 } else { 8.0 };
                    let bpw = bits as f64 + sbits / block as f64 + if pool { 0.25 } else { 0.0 };
                    cfgs.push(Cfg {
                        name: format!(
                            "b{bits} B{block} {} {}",
                            match scale {
                                Scale::F16 => "f16".to_string(),
                                Scale::U8 => "u8 ".to_string(),
                                Scale::Mini(m) => format!("e{}m{m}", 8 - m),
                                Scale::RowExpU8 => "2^e·u8".to_string(),
                            },
                            if pool { "pool" } else { "-   " }
                        ),
                        bpw,
                        num: 0.0,
                        den: 0.0,
                        run: Box::new(move |x, v| proxy_row(x, v, bits, block, scale, pool)),
                    });
                }
            }
        }
        for s in [0u32, 1, 2] {
            let ty = GgmlType::from_id(200 + 3 * (bits - 2) + s).expect("QE type");
            cfgs.push(real_type(ty));
        }
    }

    for (name, t, bpw) in [
        ("b3 LM", &LM8[..], 3.0),
        ("b3 emp", &EMP8[..], 3.0),
        ("b3 mid", &MID8[..], 3.0),
        ("b4 LM", &LM16[..], 4.0),
        ("b4 emp", &EMP16[..], 4.0),
        ("b4 mid", &MID16[..], 4.0),
        ("b4 iq4", &IQ4[..], 4.0),
    ] {
        for (block, mini) in [(32usize, 0), (16, 4), (16, 3)] {
            cfgs.push(Cfg {
                name: format!("{name} B{block} m{mini}"),
                bpw: bpw
                    + if mini > 0 {
                        8.0 / block as f64
                    } else {
                        16.0 / block as f64
                    },
                num: 0.0,
                den: 0.0,
                run: Box::new(move |x, v| table_row(x, v, t, block, mini)),
            });
        }
    }
    for ty in [GgmlType::Q4_0, GgmlType::IQ4_NL] {
        cfgs.push(real_type(ty));
    }
    let mut n_tensors = 0;
    for (idx, t) in model.tensors().iter().enumerate() {
        let sel = layers
            .iter()
            .any(|l| t.name.starts_with(&format!("blk.{l}.")))
            && kinds.iter().any(|k| t.name.contains(&format!(".{k}.")));
        if !sel {
            continue;
        }
        let p = t.row_len();
        let q = t.n_rows();
        let mut w = vec![0f32; p * q];
        model.read_rows(idx, 0, &mut w).expect("read rows");
        let v: Vec<f32> = imatrix
            .as_ref()
            .and_then(|im| im.importance(&t.name))
            .map(|s| s.to_vec())
            .unwrap_or_else(|| vec![1.0; p]);
        for c in &mut cfgs {
            for x in w.chunks_exact(p) {
                let y = (c.run)(x, &v);
                for j in 0..p {
                    c.num += v[j] as f64 * ((x[j] - y[j]) as f64).powi(2);
                    c.den += v[j] as f64 * (x[j] as f64).powi(2);
                }
            }
        }
        n_tensors += 1;
        eprintln!("{} ({q}x{p})", t.name);
    }
    println!(
        "{n_tensors} tensors, layers {layers:?}, importance: {}",
        if imatrix.is_some() {
            "imatrix"
        } else {
            "none (v = 1)"
        }
    );
    println!("{:<22} {:>6} {:>12}", "config", "bpw", "rel. error");
    for c in &cfgs {
        println!("{:<22} {:>6.3} {:>12.5}", c.name, c.bpw, c.num / c.den);
    }
}

//! Check that two GGUF files tokenise texts identically in llama.cpp and (with `logits`) give the
//! same logits. Needs the `llama` feature of quantease-gguf (src/llama/, branch `llama`).
//!
//!     cargo run --release -- A.gguf B.gguf [logits]
//!
//! Used for the Hugging Face round trips: the original GGUF dequantised to F16 (`quantease-gguf
//! dequantize`) against `convert HF_DIR --type F16` of its `scripts/hf_fixture.py` directory.
use quantease_gguf::llama::{Context, ContextParams, Model};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: llama-check A.gguf B.gguf [logits]");
        std::process::exit(2);
    }
    let (a, b, logits) = (
        &args[1],
        &args[2],
        args.get(3).map(|s| s == "logits").unwrap_or(false),
    );
    let ma = Model::load(a).expect("load a");
    let mb = Model::load(b).expect("load b");
    println!("a: {} | b: {}", ma.description(), mb.description());
    println!(
        "add_bos a={} b={}, bos a={} b={}",
        ma.add_bos(),
        mb.add_bos(),
        ma.bos(),
        mb.bos()
    );
    let texts = [
        "Hello world! The quick brown fox jumps over the lazy dog.",
        "  leading spaces, tabs\tand\nnewlines\n\n\nend",
        "Numbers: 1234567890 3.14159 2026-11-24, 1,000,000",
        "Unicode: naïve café, Ελληνικά, 日本語のテキスト, emoji 🦀🚀",
        "code: fn main() { println!(\"{}\", x >= 10 && y != 0); } // comment",
        "<|im_start|>user\nWhat's up?<|im_end|>\n<|im_start|>assistant\n",
        "I'm you're they'll we've it's DON'T",
    ];
    let mut ok = true;
    let mut all = Vec::new();
    for t in texts {
        for special in [false, true] {
            let ta = ma.tokenize(t, special).expect("tok a");
            let tb = mb.tokenize(t, special).expect("tok b");
            if ta != tb {
                ok = false;
                println!("TOKENS DIFFER (special={special}) {t:?}\n a={ta:?}\n b={tb:?}");
            }
            if special {
                all.extend(ta);
            }
        }
    }
    println!(
        "tokenisation: {} ({} tokens total over {} texts)",
        if ok { "identical" } else { "DIFFERENT" },
        all.len(),
        texts.len()
    );
    if logits {
        all.truncate(96);
        let p = || ContextParams {
            n_ctx: 128,
            n_batch: 128,
            ..Default::default()
        };
        let mut ca = Context::new(&ma, p()).unwrap();
        let mut cb = Context::new(&mb, p()).unwrap();
        ca.decode(&all, 0, true).unwrap();
        cb.decode(&all, 0, true).unwrap();
        let (mut max_abs, mut max_logit, mut same_top) = (0f32, 0f32, 0);
        for i in 0..all.len() {
            let (la, lb) = (ca.logits(i).unwrap(), cb.logits(i).unwrap());
            for (x, y) in la.iter().zip(lb) {
                max_abs = max_abs.max((x - y).abs());
                max_logit = max_logit.max(x.abs());
            }
            let am = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .max_by(|p, q| p.1.total_cmp(q.1))
                    .unwrap()
                    .0
            };
            same_top += (am(la) == am(lb)) as usize;
        }
        println!("logits over {} positions: max |a-b| = {max_abs:e} (max |logit| {max_logit}), same argmax {same_top}/{}", all.len(), all.len());
    }
    std::process::exit(if ok { 0 } else { 1 });
}

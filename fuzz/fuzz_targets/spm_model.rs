//! Fuzz target: `SpmModel::parse` (the sentencepiece `tokenizer.model` protobuf reader) must
//! return Ok or Err on any input, never panic; an Ok model has pieces of known types with finite
//! scores (each piece takes at least two bytes of input), and an error names the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use quantease_gguf::source::hf::spm::SpmModel;

fuzz_target!(|data: &[u8]| {
    match SpmModel::parse(data, Path::new("fuzz/tokenizer.model")) {
        Ok(m) => {
            assert!(!m.pieces.is_empty());
            assert!(m.pieces.len() <= data.len() / 2);
            for p in &m.pieces {
                assert!((1..=6).contains(&p.kind));
                assert!(p.score.is_finite());
                assert!(p.piece.len() < data.len());
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz/tokenizer.model: ")),
    }
});

//! Fuzz target: `GgufHeader::parse` must return Ok or Err on any input, never panic, and an Ok
//! header must describe tensor data inside the input.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use quantease_gguf::gguf::GgufHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = GgufHeader::parse(data, Path::new("fuzz.gguf")) {
        for t in &h.tensors {
            let end = h.data_offset + t.offset + t.n_bytes;
            assert!(end <= data.len() as u64);
            assert_eq!(t.row_bytes() * t.n_rows(), t.n_bytes);
            let _ = t.row_len();
        }
        for (_, v) in &h.metadata {
            let _ = v.to_string();
            let _ = v.to_json();
        }
    }
});

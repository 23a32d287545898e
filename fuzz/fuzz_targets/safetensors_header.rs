//! Fuzz target: `StHeader::parse` must return Ok or Err on any input, never panic, and an Ok
//! header must describe disjoint tensors inside the input whose sizes match dtype × shape.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use quantease_gguf::source::safetensors::StHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = StHeader::parse(data, data.len() as u64, Path::new("fuzz.safetensors")) {
        let data_len = data.len() as u64 - h.data_start;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for t in &h.tensors {
            assert!(t.begin <= t.end && t.end <= data_len);
            let n: u64 = t.shape.iter().product();
            assert_eq!(t.end - t.begin, n * t.dtype.size());
            if t.end > t.begin {
                ranges.push((t.begin, t.end));
            }
        }
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap accepted");
        }
    }
});

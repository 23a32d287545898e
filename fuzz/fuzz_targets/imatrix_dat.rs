//! Fuzz target: the legacy imatrix `.dat` parser must never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use quantease_gguf::imatrix::Imatrix;

fuzz_target!(|data: &[u8]| {
    if let Ok(im) = Imatrix::from_dat_bytes(data, Path::new("fuzz.dat")) {
        for name in im.names() {
            let v = im.importance(name).unwrap();
            assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0));
        }
    }
});

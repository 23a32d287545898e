//! Malformed input: every broken file gives exit ≠ 0 and a message naming the file and the field,
//! never a panic.

mod common;

use common::run;
use std::path::Path;

/// Hand-built GGUF v3 bytes with full control over every field.
struct Raw {
    magic: [u8; 4],
    version: u32,
    n_tensors_claim: Option<u64>,
    key_len_claim: Option<u64>,
    tensors: Vec<(String, Vec<u64>, u32, u64)>,
    data: Vec<u8>,
}

impl Raw {
    fn valid() -> Raw {
        // Two F32 tensors of 32×2 each: 256 bytes of data apiece.
        Raw {
            magic: *b"GGUF",
            version: 3,
            n_tensors_claim: None,
            key_len_claim: None,
            tensors: vec![
                ("a.weight".into(), vec![32, 2], 0, 0),
                ("b.weight".into(), vec![32, 2], 0, 256),
            ],
            data: (0..128u32)
                .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
                .collect(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.magic);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(
            &self
                .n_tensors_claim
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        b.extend_from_slice(&1u64.to_le_bytes()); // one key
        let key = b"general.architecture";
        b.extend_from_slice(&self.key_len_claim.unwrap_or(key.len() as u64).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(&8u32.to_le_bytes()); // string
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(b"llama");
        for (name, dims, ty, off) in &self.tensors {
            b.extend_from_slice(&(name.len() as u64).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
        }
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend_from_slice(&self.data);
        b
    }
}

fn check_rejected(dir: &Path, name: &str, bytes: &[u8], expect_words: &[&str]) {
    let path = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    let out = dir.join(format!("{name}.out.gguf"));
    for args in [
        vec!["inspect", path.to_str().unwrap()],
        vec![
            "convert",
            path.to_str().unwrap(),
            out.to_str().unwrap(),
            "--type",
            "Q8_0",
            "--quiet",
        ],
    ] {
        let o = run(&args);
        let e = String::from_utf8_lossy(&o.stderr).to_lowercase();
        assert!(
            !o.status.success(),
            "{name}: {:?} accepted a malformed file",
            args[0]
        );
        assert!(!e.contains("panicked"), "{name}: panic: {e}");
        assert!(
            e.contains(&format!("{name}.gguf")),
            "{name}: message does not name the file: {e}"
        );
        assert!(
            expect_words.iter().any(|w| e.contains(w)),
            "{name}: message names none of {expect_words:?}: {e}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn the_valid_base_file_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("valid.gguf");
    std::fs::write(&path, Raw::valid().bytes()).unwrap();
    let o = run(&["inspect", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let full = Raw::valid().bytes();
    check_rejected(
        dir.path(),
        "truncated",
        &full[..full.len() - 100],
        &["truncated", "outside", "beyond", "past", "end"],
    );
    check_rejected(
        dir.path(),
        "truncated_header",
        &full[..30],
        &["truncated", "end"],
    );
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Raw::valid();
    r.magic = *b"GGML";
    check_rejected(dir.path(), "magic", &r.bytes(), &["magic"]);
}

#[test]
fn tensor_count_larger_than_the_file_can_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Raw::valid();
    r.n_tensors_claim = Some(1 << 40);
    check_rejected(
        dir.path(),
        "count",
        &r.bytes(),
        &["tensor count", "tensor_count", "n_tensors", "tensors"],
    );
}

#[test]
fn offset_outside_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Raw::valid();
    r.tensors[1].3 = 1 << 20;
    check_rejected(dir.path(), "offset_out", &r.bytes(), &["offset"]);
}

#[test]
fn misaligned_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Raw::valid();
    r.tensors[1].3 = 250;
    check_rejected(dir.path(), "misaligned", &r.bytes(), &["align"]);
}

#[test]
fn unknown_type_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Raw::valid();
    r.tensors[0].2 = 77;
    check_rejected(dir.path(), "unknown_type", &r.bytes(), &["type"]);
}

#[test]
fn string_length_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Raw::valid();
    r.key_len_claim = Some(u64::MAX - 3);
    check_rejected(
        dir.path(),
        "strlen",
        &r.bytes(),
        &["length", "string", "key"],
    );
}

#[test]
fn unsupported_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Raw::valid();
    r.version = 1;
    check_rejected(dir.path(), "version", &r.bytes(), &["version"]);
}

#[test]
fn overlapping_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Raw::valid();
    r.tensors[1].3 = 0;
    check_rejected(dir.path(), "overlap", &r.bytes(), &["overlap"]);
}

#[test]
fn missing_input_file() {
    let o = run(&["inspect", "/nonexistent/nothing.gguf"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("nothing.gguf"), "{e}");
}

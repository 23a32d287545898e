//! Copying a real model through reader and writer reproduces it byte for byte, and a file our
//! writer produces reads back identically in the `gguf` Python package.
//!
//! The real model comes from `QUANTEASE_TEST_MODEL` (a GGUF file path); the tests that need it
//! print a message and return when it is unset.

use std::path::{Path, PathBuf};
use std::process::Command;

use quantease_gguf::formats::GgmlType;
use quantease_gguf::gguf::{GgufFile, GgufWriter, MetaArray, MetaValue, TensorPlan};

fn test_model() -> Option<PathBuf> {
    match std::env::var_os("QUANTEASE_TEST_MODEL") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("QUANTEASE_TEST_MODEL is not set: skipping the real-model test");
            None
        }
    }
}

fn copy_through(src: &GgufFile, dst: &Path) {
    let plans: Vec<TensorPlan> = src
        .tensors
        .iter()
        .map(|t| TensorPlan {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    let mut w = GgufWriter::create(dst, &src.metadata, &plans).unwrap();
    for t in &src.tensors {
        // Stream in row-sized pieces, as the converter will.
        let data = src.tensor_data(t);
        let row = (t.row_bytes() as usize).max(1);
        for chunk in data.chunks(row) {
            w.write_data(chunk).unwrap();
        }
        w.end_tensor().unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn real_model_copies_byte_identically() {
    let Some(model) = test_model() else { return };
    let src = GgufFile::open(&model).unwrap();
    assert!(src.has_canonical_layout(), "source layout is not ggml's");
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("copy.gguf");
    copy_through(&src, &dst);
    let copy = GgufFile::open(&dst).unwrap();
    assert_eq!(copy.header(), src.header());
    let (a, b) = (src.bytes(), copy.bytes());
    assert_eq!(a.len(), b.len(), "file sizes differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("copy differs from the source at byte {i}");
    }
}

#[test]
fn real_model_header_is_as_expected() {
    let Some(model) = test_model() else { return };
    let f = GgufFile::open(&model).unwrap();
    eprintln!(
        "{}: v{}, {} metadata, {} tensors, data at {}",
        model.display(),
        f.version,
        f.metadata.len(),
        f.tensors.len(),
        f.data_offset
    );
    assert!(f.version == 2 || f.version == 3);
    assert!(!f.tensors.is_empty());
    let tokens = f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array());
    if let Some(tokens) = tokens {
        assert!(tokens.len() > 1000);
        assert!(tokens.strings().is_some());
    }
    for t in &f.tensors {
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
        assert_eq!(t.row_bytes() * t.n_rows(), t.n_bytes, "{}", t.name);
    }
    // Specific facts about the SmolLM2 test model, when it is the one given.
    if f.get("general.architecture").and_then(|v| v.as_str()) == Some("llama")
        && f.tensors.len() == 272
    {
        assert_eq!(f.version, 3);
        assert_eq!(f.get("llama.embedding_length"), Some(&MetaValue::U32(576)));
        assert_eq!(tokens.map(|t| t.len()), Some(49152));
        let types: std::collections::BTreeSet<GgmlType> = f.tensors.iter().map(|t| t.ty).collect();
        assert_eq!(
            types,
            [GgmlType::F32, GgmlType::Q4_1, GgmlType::Q8_0]
                .into_iter()
                .collect()
        );
    }
}

/// Write a file with every value type and a few tensors, then let the `gguf` Python package
/// read it (scripts/check_gguf_py.py asserts the same contents). Skips when python3 or the
/// package is missing.
#[test]
fn gguf_python_package_reads_our_output() {
    let has_gguf = Command::new("python3")
        .args(["-c", "import gguf"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_gguf {
        eprintln!("python3 with the gguf package is not available: skipping the cross-check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cross.gguf");
    write_cross_check_file(&path);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_gguf_py.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check_gguf_py.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("OK"), "{stdout}");
}

/// The file scripts/check_gguf_py.py expects (keep the two in step).
fn write_cross_check_file(path: &Path) {
    use MetaArray as A;
    use MetaValue as V;
    let kv = |k: &str, v| (k.to_string(), v);
    let meta = vec![
        kv("general.architecture", V::string("llama")),
        kv("general.alignment", V::U32(64)),
        kv("x.u8", V::U8(200)),
        kv("x.i8", V::I8(-100)),
        kv("x.u16", V::U16(60000)),
        kv("x.i16", V::I16(-30000)),
        kv("x.u32", V::U32(4_000_000_000)),
        kv("x.i32", V::I32(-2_000_000_000)),
        kv("x.f32", V::F32(0.25)),
        kv("x.bool", V::Bool(true)),
        kv("x.string", V::string("héllo")),
        kv("x.u64", V::U64(1 << 50)),
        kv("x.i64", V::I64(-(1 << 50))),
        kv("x.f64", V::F64(-1.5)),
        kv(
            "x.arr_str",
            V::Array(A::String(vec![b"a".to_vec(), b"bc".to_vec(), vec![]])),
        ),
        kv("x.arr_i32", V::Array(A::I32(vec![1, -2, 3]))),
        kv("x.arr_f32", V::Array(A::F32(vec![0.5, 1.5]))),
        kv("x.arr_bool", V::Array(A::Bool(vec![false, true]))),
    ];
    let plans = vec![
        TensorPlan {
            name: "f32".into(),
            dims: vec![4, 3],
            ty: GgmlType::F32,
        },
        TensorPlan {
            name: "q8".into(),
            dims: vec![64, 2],
            ty: GgmlType::Q8_0,
        },
        TensorPlan {
            name: "q4k".into(),
            dims: vec![256],
            ty: GgmlType::Q4_K,
        },
    ];
    let mut w = GgufWriter::create(path, &meta, &plans).unwrap();
    let f32_data: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.write_tensor(&f32_data).unwrap();
    w.write_tensor(&(0..136).map(|i| i as u8).collect::<Vec<_>>())
        .unwrap();
    w.write_tensor(&[7u8; 144]).unwrap();
    w.finish().unwrap();
}

/// A small file written by gguf-py's GGUFWriter (fuzz/seeds/small_pygguf.bin, made with the
/// `gguf` package) reads with the expected types, values and tensors.
#[test]
fn reads_a_file_written_by_gguf_py() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/small_pygguf.bin");
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(
        f.get("general.architecture").and_then(|v| v.as_str()),
        Some("llama")
    );
    assert_eq!(f.get("t.u8"), Some(&MetaValue::U8(7)));
    assert_eq!(f.get("t.i8"), Some(&MetaValue::I8(-3)));
    assert_eq!(f.get("t.u16"), Some(&MetaValue::U16(600)));
    assert_eq!(f.get("t.i16"), Some(&MetaValue::I16(-600)));
    assert_eq!(f.get("t.u32"), Some(&MetaValue::U32(70000)));
    assert_eq!(f.get("t.i32"), Some(&MetaValue::I32(-70000)));
    assert_eq!(f.get("t.f32"), Some(&MetaValue::F32(1.5)));
    assert_eq!(f.get("t.b"), Some(&MetaValue::Bool(true)));
    assert_eq!(f.get("t.s").and_then(|v| v.as_str()), Some("hello"));
    assert_eq!(f.get("t.u64"), Some(&MetaValue::U64(1 << 40)));
    assert_eq!(f.get("t.i64"), Some(&MetaValue::I64(-(1 << 40))));
    assert_eq!(f.get("t.f64"), Some(&MetaValue::F64(2.25)));
    let strs = f
        .get("t.arr_s")
        .and_then(|v| v.as_array())
        .and_then(|a| a.strings());
    assert_eq!(strs, Some(vec!["a", "bc", "def"]));
    assert_eq!(
        f.get("t.arr_i").and_then(|v| v.as_array()).map(|a| a.len()),
        Some(3)
    );
    let names: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["w", "h", "q"]);
    let w = f.tensor("w").unwrap();
    assert_eq!((w.dims.clone(), w.ty), (vec![32, 2], GgmlType::F32));
    let w_vals: Vec<f32> = f
        .tensor_data(w)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(w_vals, (0..64).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(f.tensor("h").unwrap().ty, GgmlType::F16);
    let q = f.tensor("q").unwrap();
    assert_eq!(
        (q.dims.clone(), q.ty, q.n_bytes),
        (vec![32, 2], GgmlType::Q8_0, 68)
    );
    assert!(f.has_canonical_layout());
}

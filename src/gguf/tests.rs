//! Unit tests: round trips through writer and reader, a byte-exact layout check, every
//! validation rule on a hand-made malformed buffer, and seeded random mutation.

use std::path::Path;

use quantease_formats::GgmlType;

use super::*;

const P: &str = "test.gguf";

fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    GgufHeader::parse(bytes, Path::new(P))
}

// ---------------------------------------------------------------------------------------------
// A raw GGUF builder that can express invalid files.

struct RawTensor {
    name: Vec<u8>,
    dims: Vec<i64>,
    ty: u32,
    offset: u64,
}

struct Raw {
    magic: [u8; 4],
    version: u32,
    n_tensors: Option<u64>,
    n_kv: Option<u64>,
    kv: Vec<u8>,
    kv_count: u64,
    tensors: Vec<RawTensor>,
    alignment: u64,
    /// Bytes after the header padding (tensor data).
    data_len: u64,
    /// Pad the header to the alignment.
    pad_header: bool,
}

fn le_string(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s);
}

impl Raw {
    fn new() -> Raw {
        Raw {
            magic: *b"GGUF",
            version: 3,
            n_tensors: None,
            n_kv: None,
            kv: Vec::new(),
            kv_count: 0,
            tensors: Vec::new(),
            alignment: 32,
            data_len: 0,
            pad_header: true,
        }
    }

    /// A key with a raw type id and raw payload bytes.
    fn kv_raw(mut self, key: &[u8], type_id: u32, payload: &[u8]) -> Raw {
        le_string(&mut self.kv, key);
        self.kv.extend_from_slice(&type_id.to_le_bytes());
        self.kv.extend_from_slice(payload);
        self.kv_count += 1;
        self
    }

    fn kv(self, key: &str, v: &MetaValue) -> Raw {
        let mut enc = Vec::new();
        encode_value(&mut enc, v);
        let (ty, payload) = enc.split_at(4);
        let ty = u32::from_le_bytes(ty.try_into().unwrap());
        self.kv_raw(key.as_bytes(), ty, payload)
    }

    fn tensor(mut self, name: &str, dims: &[i64], ty: u32, offset: u64) -> Raw {
        self.tensors.push(RawTensor {
            name: name.as_bytes().to_vec(),
            dims: dims.to_vec(),
            ty,
            offset,
        });
        self
    }

    fn data(mut self, n: u64) -> Raw {
        self.data_len = n;
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.magic);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(
            &self
                .n_tensors
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        b.extend_from_slice(&self.n_kv.unwrap_or(self.kv_count).to_le_bytes());
        b.extend_from_slice(&self.kv);
        for t in &self.tensors {
            le_string(&mut b, &t.name);
            b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.ty.to_le_bytes());
            b.extend_from_slice(&t.offset.to_le_bytes());
        }
        if self.pad_header {
            while !(b.len() as u64).is_multiple_of(self.alignment) {
                b.push(0);
            }
        }
        // Distinct non-zero data so slices can be told apart.
        b.extend((0..self.data_len).map(|i| (i % 251) as u8 + 1));
        b
    }
}

/// Two F32 tensors of 8 elements (32 bytes each) at canonical offsets.
fn two_tensors() -> Raw {
    Raw::new()
        .kv("general.architecture", &MetaValue::string("llama"))
        .tensor("a", &[8], 0, 0)
        .tensor("b", &[4, 2], 0, 32)
        .data(64)
}

fn expect_invalid(bytes: &[u8], field_part: &str, reason_part: &str) {
    match parse(bytes) {
        Err(GgufError::Invalid {
            field,
            reason,
            path,
        }) => {
            assert_eq!(path, Path::new(P));
            assert!(
                field.contains(field_part),
                "field {field:?} lacks {field_part:?}"
            );
            assert!(
                reason.contains(reason_part),
                "reason {reason:?} lacks {reason_part:?}"
            );
        }
        other => panic!("expected Invalid({field_part}, {reason_part}), got {other:?}"),
    }
}

fn expect_truncated(bytes: &[u8], field_part: &str) {
    match parse(bytes) {
        Err(GgufError::Truncated { field, .. }) => {
            assert!(
                field.contains(field_part),
                "field {field:?} lacks {field_part:?}"
            )
        }
        other => panic!("expected Truncated({field_part}), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Valid files.

fn every_value() -> Vec<(String, MetaValue)> {
    use MetaArray as A;
    use MetaValue as V;
    let kv = |k: &str, v| (k.to_string(), v);
    vec![
        kv("general.architecture", V::string("llama")),
        kv("t.u8", V::U8(250)),
        kv("t.i8", V::I8(-120)),
        kv("t.u16", V::U16(65000)),
        kv("t.i16", V::I16(-32000)),
        kv("t.u32", V::U32(4_000_000_000)),
        kv("t.i32", V::I32(-2_000_000_000)),
        kv("t.f32", V::F32(-1.25e-3)),
        kv("t.f32nan", V::F32(f32::from_bits(0x7fc0_1234))),
        kv("t.bool_t", V::Bool(true)),
        kv("t.bool_f", V::Bool(false)),
        kv("t.string", V::string("héllo wörld")),
        kv("t.string_bytes", V::String(vec![0xff, 0x00, 0xfe])),
        kv("t.empty_string", V::String(vec![])),
        kv("t.u64", V::U64(u64::MAX)),
        kv("t.i64", V::I64(i64::MIN)),
        kv("t.f64", V::F64(std::f64::consts::PI)),
        kv("a.u8", V::Array(A::U8(vec![0, 1, 255]))),
        kv("a.i8", V::Array(A::I8(vec![-128, 0, 127]))),
        kv("a.u16", V::Array(A::U16(vec![1, 65535]))),
        kv("a.i16", V::Array(A::I16(vec![-32768, 32767]))),
        kv("a.u32", V::Array(A::U32(vec![7, u32::MAX]))),
        kv("a.i32", V::Array(A::I32(vec![-1, i32::MAX]))),
        kv("a.f32", V::Array(A::F32(vec![0.5, -0.0, f32::INFINITY]))),
        kv("a.bool", V::Array(A::Bool(vec![true, false, true]))),
        kv(
            "a.string",
            V::Array(A::String(vec![b"a".to_vec(), vec![], vec![0xc3]])),
        ),
        kv("a.u64", V::Array(A::U64(vec![u64::MAX, 0]))),
        kv("a.i64", V::Array(A::I64(vec![i64::MIN, 5]))),
        kv("a.f64", V::Array(A::F64(vec![1e300, -2.5]))),
        kv("a.empty", V::Array(A::F64(vec![]))),
        kv("a.empty_strings", V::Array(A::String(vec![]))),
    ]
}

fn sample_plans() -> Vec<TensorPlan> {
    let plan = |name: &str, dims: &[u64], ty| TensorPlan {
        name: name.into(),
        dims: dims.to_vec(),
        ty,
    };
    vec![
        plan("token_embd.weight", &[64, 3], GgmlType::Q8_0),
        plan("blk.0.attn_norm.weight", &[5], GgmlType::F32),
        plan("blk.0.ffn_up.weight", &[32, 2, 1], GgmlType::Q4_1),
        plan("blk.0.experts", &[256, 1, 2, 1], GgmlType::Q4_K),
        plan("empty", &[0, 3], GgmlType::F16),
    ]
}

fn plan_bytes(p: &TensorPlan, seed: u8) -> Vec<u8> {
    let n: u64 = p.dims.iter().product();
    let len = n / p.ty.block_size() as u64 * p.ty.type_size() as u64;
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Write a file with every value type and the sample tensors; return its bytes.
fn write_sample(dir: &Path, metadata: &[(String, MetaValue)]) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("sample.gguf");
    let plans = sample_plans();
    let mut w = GgufWriter::create(&path, metadata, &plans).unwrap();
    for (i, p) in plans.iter().enumerate() {
        let data = plan_bytes(p, i as u8);
        // Exercise chunked writes.
        let (a, b) = data.split_at(data.len() / 2);
        w.write_data(a).unwrap();
        w.write_data(b).unwrap();
        w.end_tensor().unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// The bytes of a small valid file for the mutation test and the fuzz seed.
pub(crate) fn sample_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), &every_value()).1
}

#[test]
fn round_trip_every_value_type_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let meta = every_value();
    let (path, _) = write_sample(dir.path(), &meta);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, DEFAULT_ALIGNMENT);
    assert_eq!(f.data_offset % 32, 0);
    // Bitwise comparison (NaN payloads included): compare encodings.
    assert_eq!(f.metadata.len(), meta.len());
    for ((k1, v1), (k2, v2)) in f.metadata.iter().zip(&meta) {
        assert_eq!(k1, k2);
        let (mut e1, mut e2) = (Vec::new(), Vec::new());
        encode_value(&mut e1, v1);
        encode_value(&mut e2, v2);
        assert_eq!(e1, e2, "value of {k1}");
    }
    assert_eq!(f.get("t.u16"), Some(&MetaValue::U16(65000)));
    assert_eq!(
        f.get("t.string").and_then(|v| v.as_str()),
        Some("héllo wörld")
    );
    assert_eq!(
        f.get("t.string_bytes"),
        Some(&MetaValue::String(vec![0xff, 0, 0xfe]))
    );
    let plans = sample_plans();
    assert_eq!(f.tensors.len(), plans.len());
    for (i, p) in plans.iter().enumerate() {
        let t = f.tensor(&p.name).unwrap();
        assert_eq!(&f.tensors[i], t, "file order");
        assert_eq!(t.dims, p.dims);
        assert_eq!(t.ty, p.ty);
        assert_eq!(t.offset % 32, 0);
        assert_eq!(
            f.tensor_data(t),
            plan_bytes(p, i as u8).as_slice(),
            "{}",
            p.name
        );
        assert_eq!(t.row_bytes() * t.n_rows(), t.n_bytes);
    }
    let ffn = f.tensor("blk.0.ffn_up.weight").unwrap();
    assert_eq!((ffn.row_len(), ffn.n_rows(), ffn.row_bytes()), (32, 2, 20));
    assert_eq!(f.tensor("blk.0.experts").unwrap().n_rows(), 2);
    assert!(f.has_canonical_layout());
    assert_eq!(f.tensor("missing"), None);
    // The file ends with the last tensor's padding.
    let last = f.tensors.last().unwrap();
    let end = f.data_offset + last.offset + last.n_bytes.div_ceil(32) * 32;
    assert_eq!(f.bytes().len() as u64, end);
}

#[test]
fn version_2_is_read() {
    let mut raw = two_tensors();
    raw.version = 2;
    let h = parse(&raw.build()).unwrap();
    assert_eq!(h.version, 2);
    assert_eq!(h.tensors.len(), 2);
}

#[test]
fn layout_is_byte_exact() {
    // One U32 key and one F32 tensor of 3 elements, written by hand from the spec.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let meta = vec![("k".to_string(), MetaValue::U32(0x01020304))];
    let plans = vec![TensorPlan {
        name: "t".into(),
        dims: vec![3],
        ty: GgmlType::F32,
    }];
    let mut w = GgufWriter::create(&path, &meta, &plans).unwrap();
    w.write_tensor(&[9u8; 12]).unwrap();
    w.finish().unwrap();
    let mut want = Vec::new();
    want.extend_from_slice(b"GGUF");
    want.extend_from_slice(&[3, 0, 0, 0]); // version
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // tensors
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // kv
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, b'k']); // key
    want.extend_from_slice(&[4, 0, 0, 0]); // U32
    want.extend_from_slice(&[4, 3, 2, 1]);
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, b't']); // name
    want.extend_from_slice(&[1, 0, 0, 0]); // n_dims
    want.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]); // ne[0]
    want.extend_from_slice(&[0, 0, 0, 0]); // F32
    want.extend_from_slice(&[0; 8]); // offset
    assert_eq!(want.len(), 74);
    want.resize(96, 0); // header padding
    want.extend_from_slice(&[9; 12]);
    want.resize(128, 0); // tensor padding
    assert_eq!(std::fs::read(&path).unwrap(), want);
}

#[test]
fn custom_alignment_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.gguf");
    let meta = vec![(KEY_ALIGNMENT.to_string(), MetaValue::U32(64))];
    let plans: Vec<TensorPlan> = ["x", "y"]
        .iter()
        .map(|n| TensorPlan {
            name: n.to_string(),
            dims: vec![3],
            ty: GgmlType::F32,
        })
        .collect();
    let mut w = GgufWriter::create(&path, &meta, &plans).unwrap();
    w.write_tensor(&[1; 12]).unwrap();
    w.write_tensor(&[2; 12]).unwrap();
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_offset % 64, 0);
    assert_eq!(f.tensor("y").unwrap().offset, 64);
    assert_eq!(f.tensor_data(f.tensor("y").unwrap()), &[2; 12]);
    assert_eq!(f.bytes().len() as u64, f.data_offset + 128);
}

#[test]
fn zero_tensor_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.gguf");
    let meta = vec![("general.type".to_string(), MetaValue::string("imatrix"))];
    GgufWriter::create(&path, &meta, &[])
        .unwrap()
        .finish()
        .unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert!(f.tensors.is_empty());
    assert_eq!(f.get("general.type").unwrap().as_str(), Some("imatrix"));
}

// ---------------------------------------------------------------------------------------------
// Every validation rule.

#[test]
fn valid_raw_file_parses() {
    let h = parse(&two_tensors().build()).unwrap();
    assert_eq!(h.tensors[1].dims, vec![4, 2]);
    assert_eq!(h.data_offset % 32, 0);
    assert!(h.has_canonical_layout());
}

#[test]
fn rejects_bad_magic_and_versions() {
    let mut raw = two_tensors();
    raw.magic = *b"GGML";
    assert!(
        matches!(parse(&raw.build()), Err(GgufError::BadMagic { found, .. }) if &found == b"GGML")
    );
    for v in [0u32, 1, 4, 0x0300_0000] {
        let mut raw = two_tensors();
        raw.version = v;
        assert!(
            matches!(parse(&raw.build()), Err(GgufError::UnsupportedVersion { version, .. }) if version == v),
            "version {v}"
        );
    }
    let mut raw = two_tensors();
    raw.version = 0x0300_0000;
    let msg = parse(&raw.build()).unwrap_err().to_string();
    assert!(msg.contains("big-endian"), "{msg}");
    raw.version = 1;
    assert!(!parse(&raw.build())
        .unwrap_err()
        .to_string()
        .contains("big-endian"));
}

#[test]
fn every_truncation_is_an_error() {
    let full = two_tensors().build();
    for n in 0..full.len() {
        match parse(&full[..n]) {
            Err(GgufError::Truncated { .. }) => {}
            other => panic!("prefix of {n} bytes: {other:?}"),
        }
    }
    expect_truncated(&full[..3], "magic");
    // The counts are checked against the remaining bytes first.
    expect_truncated(&full[..30], "tensor count");
    let kv_only = Raw::new()
        .kv("general.name", &MetaValue::string("x"))
        .build();
    expect_truncated(&kv_only[..40], "metadata[0] key");
    expect_truncated(&kv_only[..46], "metadata[0] 'general.name' type");
    expect_truncated(&full[..full.len() - 1], "tensor 'b' data");
}

#[test]
fn rejects_counts_larger_than_the_file() {
    let mut raw = two_tensors();
    raw.n_tensors = Some(u64::MAX);
    expect_truncated(&raw.build(), "tensor count");
    let mut raw = two_tensors();
    raw.n_kv = Some(1 << 40);
    expect_truncated(&raw.build(), "metadata count");
    // A plausible but too-large count fails when the data runs out.
    let mut raw = two_tensors();
    raw.n_kv = Some(2);
    assert!(parse(&raw.build()).is_err());
}

#[test]
fn rejects_lying_string_and_array_lengths() {
    // Key length beyond the file.
    let raw = Raw::new().kv_raw(b"k", 4, &[0; 4]);
    let mut bytes = raw.build();
    bytes[24..32].copy_from_slice(&(1u64 << 33).to_le_bytes());
    expect_invalid(&bytes, "metadata[0] key length", "1 GiB");
    bytes[24..32].copy_from_slice(&1000u64.to_le_bytes());
    expect_truncated(&bytes, "metadata[0] key");
    // String value claiming more than remains.
    let mut payload = 500u64.to_le_bytes().to_vec();
    payload.extend_from_slice(b"abc");
    expect_truncated(
        &Raw::new().kv_raw(b"s", 8, &payload).build(),
        "metadata[0] 's'",
    );
    // String array whose count cannot fit 8 bytes per element in what remains.
    let mut payload = 8u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&(1u64 << 29).to_le_bytes());
    payload.extend_from_slice(&[0; 64]);
    let bytes = Raw::new()
        .kv_raw(b"tokenizer.ggml.tokens", 9, &payload)
        .build();
    expect_truncated(&bytes, "metadata[0] 'tokenizer.ggml.tokens' array length");
    // Above ggml's element limit.
    let mut payload = 0u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&((1u64 << 30) + 1).to_le_bytes());
    expect_invalid(
        &Raw::new().kv_raw(b"x", 9, &payload).build(),
        "array length",
        "limit",
    );
    // U32 array with too few bytes.
    let mut payload = 4u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&10u64.to_le_bytes());
    payload.extend_from_slice(&[0; 36]);
    let mut raw = Raw::new().kv_raw(b"x", 9, &payload);
    raw.pad_header = false;
    expect_truncated(&raw.build(), "'x' array length");
}

#[test]
fn rejects_bad_value_types() {
    expect_invalid(
        &Raw::new().kv_raw(b"x", 13, &[0; 8]).build(),
        "metadata[0] 'x' type",
        "13",
    );
    let mut nested = 9u32.to_le_bytes().to_vec();
    nested.extend_from_slice(&1u64.to_le_bytes());
    nested.extend_from_slice(&[0; 16]);
    expect_invalid(
        &Raw::new().kv_raw(b"n", 9, &nested).build(),
        "element type",
        "nested",
    );
    let mut unknown = 77u32.to_le_bytes().to_vec();
    unknown.extend_from_slice(&0u64.to_le_bytes());
    expect_invalid(
        &Raw::new().kv_raw(b"u", 9, &unknown).build(),
        "'u' array element type",
        "77",
    );
}

#[test]
fn keys_must_be_utf8_nonempty_and_unique() {
    expect_invalid(
        &Raw::new().kv_raw(&[0xff, 0xfe], 0, &[1]).build(),
        "metadata[0] key",
        "UTF-8",
    );
    expect_invalid(
        &Raw::new().kv_raw(b"", 0, &[1]).build(),
        "metadata[0] key",
        "empty",
    );
    let dup = Raw::new()
        .kv("a", &MetaValue::U8(1))
        .kv("b", &MetaValue::U8(1))
        .kv("a", &MetaValue::U8(2));
    expect_invalid(&dup.build(), "metadata[2] 'a'", "duplicate");
    // Values need not be UTF-8.
    let h = parse(&Raw::new().kv("s", &MetaValue::String(vec![0xff])).build()).unwrap();
    assert_eq!(h.get("s"), Some(&MetaValue::String(vec![0xff])));
}

#[test]
fn bool_bytes_follow_ggml() {
    let h = parse(&Raw::new().kv_raw(b"b", 7, &[2]).build()).unwrap();
    assert_eq!(h.get("b"), Some(&MetaValue::Bool(true)));
}

#[test]
fn alignment_must_be_power_of_two_u32() {
    let with = |v: MetaValue| two_tensors().kv(KEY_ALIGNMENT, &v).build();
    expect_invalid(
        &with(MetaValue::U64(32)),
        "'general.alignment'",
        "U32, found U64",
    );
    expect_invalid(&with(MetaValue::I32(32)), "'general.alignment'", "U32");
    expect_invalid(
        &with(MetaValue::U32(48)),
        "metadata[1] 'general.alignment'",
        "power of two",
    );
    expect_invalid(
        &with(MetaValue::U32(0)),
        "'general.alignment'",
        "power of two",
    );
    // 16 is fine; offsets and padding then follow 16.
    let mut raw = Raw::new()
        .kv(KEY_ALIGNMENT, &MetaValue::U32(16))
        .tensor("a", &[2], 0, 0)
        .tensor("b", &[2], 0, 16)
        .data(24);
    raw.alignment = 16;
    let h = parse(&raw.build()).unwrap();
    assert_eq!(h.alignment, 16);
    assert_eq!(h.data_offset % 16, 0);
}

#[test]
fn tensor_names_are_bounded_unique_utf8() {
    let name63 = "n".repeat(63);
    let ok = Raw::new().tensor(&name63, &[8], 0, 0).data(32);
    assert_eq!(parse(&ok.build()).unwrap().tensors[0].name, name63);
    let long = Raw::new().tensor(&"n".repeat(64), &[8], 0, 0).data(32);
    expect_invalid(&long.build(), "tensor[0]", "64 bytes, must be < 64");
    let dup = Raw::new()
        .tensor("a", &[8], 0, 0)
        .tensor("a", &[8], 0, 32)
        .data(64);
    expect_invalid(&dup.build(), "tensor[1] 'a' name", "duplicate");
    let mut bad = Raw::new().tensor("x", &[8], 0, 0).data(32);
    bad.tensors[0].name = vec![0xc3, 0x28];
    expect_invalid(&bad.build(), "tensor[0] name", "UTF-8");
}

#[test]
fn tensor_shapes_are_checked() {
    expect_invalid(
        &Raw::new().tensor("z", &[], 0, 0).build(),
        "tensor 'z' n_dims",
        "0 dimensions",
    );
    expect_invalid(
        &Raw::new()
            .tensor("f", &[1, 1, 1, 1, 1], 0, 0)
            .data(32)
            .build(),
        "tensor 'f' n_dims",
        "5 dimensions",
    );
    expect_invalid(
        &Raw::new().tensor("neg", &[8, -1], 0, 0).build(),
        "tensor 'neg' ne[1]",
        "-1 is negative",
    );
    expect_invalid(
        &Raw::new().tensor("big", &[1 << 32, 1 << 32], 0, 0).build(),
        "tensor 'big' ne[1]",
        "overflows",
    );
    // A zero dimension does not hide an overflowing product of the others.
    expect_invalid(
        &Raw::new()
            .tensor("zero", &[0, 1 << 40, 1 << 40], 0, 0)
            .build(),
        "tensor 'zero' ne[2]",
        "overflows",
    );
    // Q8_0 rows must be whole blocks of 32.
    expect_invalid(
        &Raw::new().tensor("q", &[33], 8, 0).data(64).build(),
        "tensor 'q' ne[0]",
        "block size 32",
    );
    // A shape whose element count fits but whose byte count does not.
    expect_invalid(
        &Raw::new().tensor("b", &[1 << 62], 0, 0).build(),
        "tensor 'b' size",
        "overflows",
    );
    // Zero-sized tensors are allowed.
    let h = parse(&Raw::new().tensor("e", &[0, 4], 0, 0).build()).unwrap();
    assert_eq!(h.tensors[0].n_bytes, 0);
}

#[test]
fn unknown_tensor_type_names_tensor_and_id() {
    for id in [4u32, 31, 43, 1 << 31] {
        let bytes = Raw::new()
            .tensor("blk.0.attn_q.weight", &[32], id, 0)
            .data(32)
            .build();
        match parse(&bytes) {
            Err(GgufError::UnknownType {
                tensor, id: got, ..
            }) => {
                assert_eq!(tensor, "blk.0.attn_q.weight");
                assert_eq!(got, id);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn offsets_must_be_aligned_inside_and_disjoint() {
    let mis = Raw::new()
        .tensor("a", &[8], 0, 0)
        .tensor("b", &[8], 0, 40)
        .data(96);
    expect_invalid(&mis.build(), "tensor 'b' offset", "alignment 32");
    let outside = Raw::new()
        .tensor("a", &[8], 0, 0)
        .tensor("b", &[8], 0, 64)
        .data(64);
    expect_truncated(&outside.build(), "tensor 'b' data");
    let huge = Raw::new().tensor("a", &[8], 0, u64::MAX - 31).data(64);
    expect_truncated(&huge.build(), "tensor 'a' data");
    let overlap = Raw::new()
        .tensor("a", &[16], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(96);
    expect_invalid(&overlap.build(), "tensor 'b' offset", "overlaps tensor 'a'");
    // Same offset twice overlaps too, whatever the order.
    let same = Raw::new()
        .tensor("a", &[8], 0, 32)
        .tensor("b", &[8], 0, 32)
        .data(96);
    expect_invalid(&same.build(), "offset", "overlaps");
    // Out-of-order but disjoint offsets are readable, though not canonical.
    let swapped = Raw::new()
        .tensor("a", &[8], 0, 32)
        .tensor("b", &[8], 0, 0)
        .data(64);
    let h = parse(&swapped.build()).unwrap();
    assert!(!h.has_canonical_layout());
}

#[test]
fn header_padding_must_exist() {
    let mut raw = Raw::new().tensor("a", &[0], 0, 0);
    raw.pad_header = false;
    expect_truncated(&raw.build(), "padding before the data section");
}

#[test]
fn open_reports_path_for_missing_empty_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.gguf");
    let err = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(err.to_string().contains("nope.gguf"), "{err}");
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let err = GgufFile::open(&empty).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    assert!(
        err.to_string().contains("empty.gguf") && err.to_string().contains("magic"),
        "{err}"
    );
    let bad = dir.path().join("bad.gguf");
    let bytes = Raw::new()
        .tensor("blk.3.ffn_down.weight", &[8], 99, 0)
        .data(32)
        .build();
    std::fs::write(&bad, bytes).unwrap();
    let msg = GgufFile::open(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("bad.gguf") && msg.contains("blk.3.ffn_down.weight") && msg.contains("99"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// Writer misuse.

fn one_plan(ty: GgmlType, dims: &[u64]) -> Vec<TensorPlan> {
    vec![TensorPlan {
        name: "w".into(),
        dims: dims.to_vec(),
        ty,
    }]
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn writer_enforces_sizes_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.gguf");
    let plans = vec![
        TensorPlan {
            name: "a".into(),
            dims: vec![4],
            ty: GgmlType::F32,
        },
        TensorPlan {
            name: "b".into(),
            dims: vec![2],
            ty: GgmlType::F16,
        },
    ];
    let mut w = GgufWriter::create(&path, &[], &plans).unwrap();
    assert_eq!(w.current_tensor(), Some("a"));
    w.write_data(&[0; 10]).unwrap();
    let err = w.write_data(&[0; 7]).unwrap_err();
    assert!(
        matches!(&err, GgufError::WriteOrder { tensor, .. } if tensor == "a"),
        "{err}"
    );
    let err = w.end_tensor().unwrap_err();
    assert!(
        err.to_string().contains("10 bytes written, expected 16"),
        "{err}"
    );
    w.write_data(&[0; 6]).unwrap();
    w.end_tensor().unwrap();
    assert_eq!(w.current_tensor(), Some("b"));
    assert!(w.write_tensor(&[0; 3]).is_err());
    let err = GgufWriter::finish(w).unwrap_err();
    assert!(err.to_string().contains("1 of 2 tensors"), "{err}");
    // Neither the target nor a temporary file is left behind.
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );

    let mut w = GgufWriter::create(&path, &[], &plans).unwrap();
    w.write_tensor(&[1; 16]).unwrap();
    w.write_tensor(&[2; 4]).unwrap();
    assert_eq!(w.current_tensor(), None);
    assert!(w.write_data(&[]).is_err());
    assert!(w.end_tensor().is_err());
    w.finish().unwrap();
    assert_eq!(dir_entries(dir.path()), vec!["o.gguf".to_string()]);
}

#[test]
fn dropping_writer_leaves_nothing_and_keeps_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.gguf");
    std::fs::write(&path, b"old").unwrap();
    {
        let mut w = GgufWriter::create(&path, &[], &one_plan(GgmlType::F32, &[4])).unwrap();
        w.write_data(&[0; 8]).unwrap();
        // dropped here without finish
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(dir_entries(dir.path()), vec!["keep.gguf".to_string()]);
}

#[test]
fn writer_validates_plan_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.gguf");
    let check = |meta: &[(String, MetaValue)], plans: &[TensorPlan], field: &str, reason: &str| {
        match GgufWriter::create(&path, meta, plans) {
            Err(GgufError::Invalid {
                field: f,
                reason: r,
                ..
            }) => {
                assert!(f.contains(field) && r.contains(reason), "{f}: {r}")
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    };
    let kv = |k: &str, v: MetaValue| (k.to_string(), v);
    check(
        &[kv(KEY_ALIGNMENT, MetaValue::U64(32))],
        &[],
        "general.alignment",
        "U32",
    );
    check(
        &[kv(KEY_ALIGNMENT, MetaValue::U32(24))],
        &[],
        "general.alignment",
        "power of two",
    );
    check(
        &[kv("a", MetaValue::U8(1)), kv("a", MetaValue::U8(1))],
        &[],
        "metadata[1] 'a'",
        "duplicate",
    );
    check(&[kv("", MetaValue::U8(1))], &[], "metadata[0] key", "empty");
    check(
        &[],
        &one_plan(GgmlType::Q4_0, &[48]),
        "tensor 'w' ne[0]",
        "block size 32",
    );
    check(
        &[],
        &one_plan(GgmlType::F32, &[]),
        "tensor 'w' dims",
        "0 dimensions",
    );
    check(
        &[],
        &one_plan(GgmlType::F32, &[1, 1, 1, 1, 1]),
        "tensor 'w' dims",
        "5 dimensions",
    );
    check(
        &[],
        &one_plan(GgmlType::F32, &[1 << 40, 1 << 40]),
        "tensor 'w' dims",
        "overflows",
    );
    check(
        &[],
        &one_plan(GgmlType::F32, &[0, 1 << 40, 1 << 40]),
        "tensor 'w' dims",
        "overflows",
    );
    // A zero-sized tensor with a large but representable shape is fine.
    assert!(GgufWriter::create(&path, &[], &one_plan(GgmlType::F32, &[0, 1 << 40])).is_ok());
    let mut long = one_plan(GgmlType::F32, &[4]);
    long[0].name = "x".repeat(64);
    check(&[], &long, "name", "must be < 64");
    let mut two = one_plan(GgmlType::F32, &[4]);
    two.push(two[0].clone());
    check(&[], &two, "tensor 'w' name", "duplicate");
    assert!(dir_entries(dir.path()).is_empty());
    let err = GgufWriter::create(&dir.path().join("no/such/dir/x.gguf"), &[], &[]).unwrap_err();
    assert!(
        matches!(err, GgufError::Io { .. }) && err.to_string().contains("x.gguf"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Seeded random mutation: parse must never panic, and what it accepts must be consistent.

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Apply 1–4 random structural mutations to `buf`.
fn mutate(rng: &mut XorShift, buf: &mut Vec<u8>) {
    const INTERESTING: [u64; 10] = [0, 1, 2, 31, 32, 63, 64, 1 << 30, 1 << 63, u64::MAX];
    for _ in 0..1 + rng.below(4) {
        let len = buf.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                buf[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                buf[i] = rng.next() as u8;
            }
            2 if len >= 8 => {
                let i = rng.below(len - 7);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                buf[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            3 if len >= 4 => {
                let i = rng.below(len - 3);
                let v = INTERESTING[rng.below(INTERESTING.len())] as u32;
                buf[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            4 => buf.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(16);
                let end = (i + n).min(len);
                buf.drain(i..end);
            }
            _ => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                buf.splice(i..i, bytes);
            }
        }
    }
}

pub(crate) fn run_mutations(seed: u64, iterations: usize) -> (usize, usize) {
    let base = sample_bytes();
    assert!(parse(&base).is_ok());
    let mut rng = XorShift(seed | 1);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..iterations {
        let mut buf = base.clone();
        mutate(&mut rng, &mut buf);
        match parse(&buf) {
            Ok(h) => {
                ok += 1;
                for t in &h.tensors {
                    assert!(h.data_offset + t.offset + t.n_bytes <= buf.len() as u64);
                    assert_eq!(t.row_bytes() * t.n_rows(), t.n_bytes);
                }
                for (_, v) in &h.metadata {
                    let _ = v.to_string();
                }
            }
            Err(e) => {
                err += 1;
                assert!(e.to_string().starts_with(P), "{e}");
            }
        }
    }
    (ok, err)
}

#[test]
fn random_mutations_never_panic() {
    let (ok, err) = run_mutations(0x5eed_1234_abcd_0001, 30_000);
    // Both outcomes must occur, or the mutator is not exercising the parser.
    assert!(ok > 100 && err > 100, "ok {ok}, err {err}");
}

/// The long fallback run the brief asks for when cargo-fuzz is unavailable:
/// `cargo test --release -- --ignored mutations_200k`.
#[test]
#[ignore]
fn mutations_200k() {
    let (ok, err) = run_mutations(0x0dd_ba11, 200_000);
    eprintln!("200k mutations: {ok} accepted, {err} rejected");
}

/// Writes the fuzz seed corpus file when `QUANTEASE_WRITE_FUZZ_SEED` names a path.
#[test]
fn write_fuzz_seed_when_asked() {
    match std::env::var_os("QUANTEASE_WRITE_FUZZ_SEED") {
        Some(p) => std::fs::write(p, sample_bytes()).unwrap(),
        None => eprintln!("QUANTEASE_WRITE_FUZZ_SEED not set: no seed written"),
    }
}

use super::*;

/// A safetensors file from (name, dtype, shape, data_offsets) entries and a data section.
fn file(entries: &[(&str, &str, &[u64], [u64; 2])], data: &[u8]) -> Vec<u8> {
    let mut obj = serde_json::Map::new();
    obj.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    for (name, dtype, shape, offs) in entries {
        obj.insert(
            (*name).into(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": offs}),
        );
    }
    raw(&serde_json::Value::Object(obj).to_string(), data)
}

fn raw(json: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(data);
    out
}

fn parse(bytes: &[u8]) -> Result<StHeader, SafetensorsError> {
    StHeader::parse(bytes, bytes.len() as u64, Path::new("m.safetensors"))
}

#[test]
fn parses_valid_header() {
    let b = file(
        &[
            ("a", "F32", &[2, 3], [0, 24]),
            ("b", "BF16", &[4], [24, 32]),
            ("e", "F16", &[0], [32, 32]),
        ],
        &[0u8; 32],
    );
    let h = parse(&b).unwrap();
    assert_eq!(h.tensors.len(), 3);
    assert_eq!(h.metadata, vec![("format".to_string(), "pt".to_string())]);
    let a = h.tensors.iter().find(|t| t.name == "a").unwrap();
    assert_eq!(
        (a.dtype, a.shape.clone(), a.begin, a.end),
        (Dtype::F32, vec![2, 3], 0, 24)
    );
    assert_eq!(h.data_start, b.len() as u64 - 32);
}

fn err(bytes: &[u8]) -> String {
    parse(bytes).unwrap_err().to_string()
}

#[test]
fn rejects_bad_headers() {
    assert!(err(&[1, 2, 3]).contains("too short"), "{}", err(&[1, 2, 3]));
    // Header length beyond the file, and beyond the cap.
    let mut b = file(&[("a", "F32", &[1], [0, 4])], &[0; 4]);
    let n = b.len() as u64;
    b[..8].copy_from_slice(&n.to_le_bytes());
    assert!(err(&b).contains("past the end of the file"), "{}", err(&b));
    b[..8].copy_from_slice(&(MAX_HEADER_LEN + 1).to_le_bytes());
    assert!(err(&b).contains("100 MB"), "{}", err(&b));
    // Offsets past the end of the data.
    let e = err(&file(&[("a", "F32", &[2], [4, 12])], &[0; 8]));
    assert!(
        e.contains("tensor 'a'") && e.contains("past the end"),
        "{e}"
    );
    // Overlap.
    let e = err(&file(
        &[("a", "F32", &[2], [0, 8]), ("b", "F32", &[2], [4, 12])],
        &[0; 12],
    ));
    assert!(
        e.contains("overlap") && e.contains("'a'") && e.contains("'b'"),
        "{e}"
    );
    // dtype × shape ≠ bytes.
    let e = err(&file(&[("a", "F16", &[3], [0, 8])], &[0; 8]));
    assert!(e.contains("tensor 'a'") && e.contains("needs 6"), "{e}");
    // Unknown dtype, bad shape, reversed offsets, shape overflow, not JSON, duplicate name.
    assert!(err(&file(&[("a", "Q4", &[1], [0, 1])], &[0])).contains("unknown dtype 'Q4'"));
    assert!(err(&raw(
        r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
        &[0; 4]
    ))
    .contains("shape"));
    assert!(err(&raw(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
        &[0; 4]
    ))
    .contains("before begin"));
    let huge = u64::MAX / 2;
    assert!(err(&raw(
        &format!(r#"{{"a":{{"dtype":"F32","shape":[{huge},4],"data_offsets":[0,4]}}}}"#),
        &[0; 4]
    ))
    .contains("overflows"));
    assert!(err(&raw("{not json", &[])).contains("JSON"));
    assert!(err(&raw("[1,2]", &[])).contains("JSON"));
    let e = err(&raw(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        &[0; 8],
    ));
    assert!(e.contains("'a' appears twice"), "{e}");
    assert!(err(&raw(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}"#,
        &[0; 4]
    ))
    .contains("unexpected key"));
    assert!(err(&raw(r#"{"__metadata__":{"k":1}}"#, &[])).contains("not a string"));
}

#[test]
fn shards_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("a.safetensors"),
        file(&[("x", "F32", &[1], [0, 4])], &1f32.to_le_bytes()),
    )
    .unwrap();
    std::fs::write(
        d.join("b.safetensors"),
        file(&[("y", "F16", &[1], [0, 2])], &[0, 0x3c]),
    )
    .unwrap();
    let index = d.join("model.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"metadata":{},"weight_map":{"x":"a.safetensors","y":"b.safetensors"}}"#,
    )
    .unwrap();
    let set = SafetensorsSet::open(d).unwrap();
    assert_eq!(set.entries().len(), 2);
    let y = set.entries().iter().find(|e| e.info.name == "y").unwrap();
    assert_eq!(set.data(y), &[0, 0x3c]);

    std::fs::write(
        &index,
        r#"{"weight_map":{"x":"a.safetensors","y":"c.safetensors"}}"#,
    )
    .unwrap();
    let e = SafetensorsSet::open(d).err().unwrap().to_string();
    assert!(
        e.contains("shard 'c.safetensors'") && e.contains("missing") && e.contains("'y'"),
        "{e}"
    );
    std::fs::write(
        &index,
        r#"{"weight_map":{"x":"a.safetensors","y":"a.safetensors"}}"#,
    )
    .unwrap();
    let e = SafetensorsSet::open(d).err().unwrap().to_string();
    assert!(e.contains("'y'") && e.contains("does not contain"), "{e}");
    std::fs::write(&index, r#"{"weight_map":{"x":"../a.safetensors"}}"#).unwrap();
    assert!(SafetensorsSet::open(d)
        .err()
        .unwrap()
        .to_string()
        .contains("plain file name"));
    std::fs::write(&index, r#"{"weight_map":[]}"#).unwrap();
    assert!(SafetensorsSet::open(d)
        .err()
        .unwrap()
        .to_string()
        .contains("weight_map"));

    // Without an index, every file is loaded; a name in two files is an error.
    std::fs::remove_file(&index).unwrap();
    assert_eq!(SafetensorsSet::open(d).unwrap().entries().len(), 2);
    std::fs::write(
        d.join("c.safetensors"),
        file(&[("x", "F32", &[1], [0, 4])], &[0; 4]),
    )
    .unwrap();
    let e = SafetensorsSet::open(d).err().unwrap().to_string();
    assert!(e.contains("'x' appears twice"), "{e}");
    // A truncated file names itself.
    std::fs::write(d.join("c.safetensors"), [1u8, 0]).unwrap();
    let e = SafetensorsSet::open(d).err().unwrap().to_string();
    assert!(
        e.contains("c.safetensors") && e.contains("too short"),
        "{e}"
    );
}

/// Seeded mutation test of the header parser: random byte flips, truncations, and length-field
/// rewrites of valid files never panic, and anything accepted satisfies the invariants.
#[test]
fn mutation_never_panics() {
    let seeds = [
        file(
            &[
                ("a", "F32", &[2, 3], [0, 24]),
                ("b", "BF16", &[4], [24, 32]),
            ],
            &[7u8; 32],
        ),
        file(
            &[(
                "model.layers.0.self_attn.q_proj.weight",
                "F16",
                &[4, 4],
                [0, 32],
            )],
            &[1u8; 32],
        ),
    ];
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut accepted = 0;
    let iterations = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    for _ in 0..iterations {
        let mut b = seeds[(next() % 2) as usize].clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            match next() % 4 {
                0 => b[i] = next() as u8,
                1 => b.truncate(i),
                2 => b[i] = b"{}[],:\"0123456789"[(next() % 17) as usize],
                _ if b.len() >= 8 => {
                    let l = u64::from_le_bytes(b[..8].try_into().unwrap())
                        .wrapping_add(next() % 5)
                        .wrapping_sub(2);
                    b[..8].copy_from_slice(&l.to_le_bytes());
                }
                _ => {}
            }
            if b.is_empty() {
                break;
            }
        }
        if let Ok(h) = parse(&b) {
            accepted += 1;
            let data_len = b.len() as u64 - h.data_start;
            for t in &h.tensors {
                assert!(t.begin <= t.end && t.end <= data_len);
                assert_eq!(
                    t.end - t.begin,
                    t.shape.iter().product::<u64>() * t.dtype.size()
                );
            }
        }
    }
    assert!(accepted > 0, "some mutations keep the file valid");
}

#!/usr/bin/env python3
"""Cross-check: read a GGUF file written by quantease-gguf with the `gguf` Python package.

Usage: check_gguf_py.py FILE            # checks the file tests/gguf_copy.rs writes
       check_gguf_py.py --summary FILE  # just prints what gguf-py sees (any file)

Prints OK and exits 0 when gguf-py reads the exact metadata, types, shapes, offsets and
tensor bytes the Rust test wrote; otherwise prints the mismatch and exits 1.
"""
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType as VT, GGMLQuantizationType as QT


def field_value(f):
    """Decode a ReaderField into (type list, python value)."""
    types = list(f.types)
    if types[0] == VT.ARRAY:
        if types[1] == VT.STRING:
            val = [bytes(f.parts[i]) for i in f.data]
        else:
            val = [f.parts[i][0].item() for i in f.data]
    elif types[0] == VT.STRING:
        val = bytes(f.parts[f.data[0]])
    else:
        val = f.parts[f.data[0]][0].item()
    return types, val


def summary(path):
    r = GGUFReader(path)
    for name, f in r.fields.items():
        types, val = field_value(f)
        if isinstance(val, list) and len(val) > 8:
            val = f"[{len(val)} items]"
        print(name, [t.name for t in types], val)
    for t in r.tensors:
        print(t.name, t.tensor_type.name, list(t.shape), t.data_offset, t.n_bytes)


EXPECTED = {
    "general.architecture": ([VT.STRING], b"llama"),
    "general.alignment": ([VT.UINT32], 64),
    "x.u8": ([VT.UINT8], 200),
    "x.i8": ([VT.INT8], -100),
    "x.u16": ([VT.UINT16], 60000),
    "x.i16": ([VT.INT16], -30000),
    "x.u32": ([VT.UINT32], 4_000_000_000),
    "x.i32": ([VT.INT32], -2_000_000_000),
    "x.f32": ([VT.FLOAT32], 0.25),
    "x.bool": ([VT.BOOL], True),
    "x.string": ([VT.STRING], "héllo".encode()),
    "x.u64": ([VT.UINT64], 1 << 50),
    "x.i64": ([VT.INT64], -(1 << 50)),
    "x.f64": ([VT.FLOAT64], -1.5),
    "x.arr_str": ([VT.ARRAY, VT.STRING], [b"a", b"bc", b""]),
    "x.arr_i32": ([VT.ARRAY, VT.INT32], [1, -2, 3]),
    "x.arr_f32": ([VT.ARRAY, VT.FLOAT32], [0.5, 1.5]),
    "x.arr_bool": ([VT.ARRAY, VT.BOOL], [False, True]),
}


def check(path):
    r = GGUFReader(path)
    errors = []
    fields = {k: v for k, v in r.fields.items() if not k.startswith("GGUF.")}
    if list(fields) != list(EXPECTED):
        errors.append(f"keys/order: {list(fields)}")
    for key, (types, val) in EXPECTED.items():
        if key not in fields:
            continue
        got_types, got = field_value(fields[key])
        if got_types != types or got != val:
            errors.append(f"{key}: got {got_types} {got!r}, want {types} {val!r}")
    version = r.fields["GGUF.version"].parts[-1][0]
    if version != 3:
        errors.append(f"version {version}")
    if r.alignment != 64:
        errors.append(f"alignment {r.alignment}")

    want = [
        ("f32", QT.F32, [4, 3], np.arange(12, dtype=np.float32).tobytes()),
        ("q8", QT.Q8_0, [64, 2], bytes(range(136))),
        ("q4k", QT.Q4_K, [256], bytes([7] * 144)),
    ]
    if [t.name for t in r.tensors] != [w[0] for w in want]:
        errors.append(f"tensor order {[t.name for t in r.tensors]}")
    for t, (name, ty, shape, data) in zip(r.tensors, want):
        if t.tensor_type != ty:
            errors.append(f"{name}: type {t.tensor_type}")
        if [int(x) for x in t.shape] != shape:
            errors.append(f"{name}: shape {list(t.shape)}")
        if (t.data_offset - r.data_offset) % 64 != 0:
            errors.append(f"{name}: offset {t.data_offset} not aligned")
        raw = np.asarray(t.data).tobytes()
        if raw != data:
            errors.append(f"{name}: data differs ({len(raw)} bytes)")
    if errors:
        print("MISMATCH")
        for e in errors:
            print("  " + e)
        return 1
    print(f"OK: gguf-py read {len(fields)} keys and {len(r.tensors)} tensors from {path}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--summary":
        summary(sys.argv[2])
        sys.exit(0)
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(check(sys.argv[1]))

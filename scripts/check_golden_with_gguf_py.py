#!/usr/bin/env python3
"""Cross-check fixtures/golden/ with the `gguf` Python package's numpy dequantisers.

For every `<TYPE>.{ref,imat}.q` this decodes the bytes with `gguf.quants.dequantize` and compares
with ggml's own `dequantize_row_*` output in `<TYPE>.{ref,imat}.deq.f32`. Bit-exact agreement is
reported as such; otherwise the largest absolute difference is printed and the exit status is 1.
"""

import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]
NROWS, NCOLS = 8, 512


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "fixtures" / "golden"
    failed = 0
    for name in TYPES:
        qtype = GGMLQuantizationType[name]
        for kind in ("ref", "imat"):
            raw = np.fromfile(root / f"{name}.{kind}.q", dtype=np.uint8).reshape(NROWS, -1)
            want = np.fromfile(root / f"{name}.{kind}.deq.f32", dtype="<f4").reshape(NROWS, NCOLS)
            got = dequantize(raw, qtype).astype(np.float32).reshape(NROWS, NCOLS)
            same = np.array_equal(got.view(np.uint32), want.view(np.uint32))
            if same:
                print(f"{name:7s} {kind:4s}: bit-exact")
            else:
                diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                nbits = int(np.count_nonzero(got.view(np.uint32) != want.view(np.uint32)))
                rel = float(diff.max() / max(np.abs(want).max(), 1e-30))
                close = np.allclose(got, want, rtol=1e-6, atol=0)
                print(f"{name:7s} {kind:4s}: {nbits} values differ in bits, max |diff| {diff.max():.3e} "
                      f"(relative {rel:.2e}){' - within 1e-6 relative' if close else ''}")
                if not close:
                    failed += 1
    print("OK" if not failed else f"{failed} mismatching file(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

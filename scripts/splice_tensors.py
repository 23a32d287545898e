#!/usr/bin/env python3
"""Copy a GGUF file, taking the data of some tensors from a second file of the same layout.

usage: splice_tensors.py BASE DONOR OUT REGEX

Every tensor of BASE whose name matches REGEX (Python `re.search`) gets DONOR's bytes; both files
must hold that tensor with the same type and shape. Metadata and all other tensors stay BASE's.
Used for KLD attribution (scripts/attribute-kld.sh): which tensors of one quantised file make it
better or worse than another of the same mix. OUT is written to a temporary name and renamed.
"""
import os
import re
import shutil
import sys

from gguf import GGUFReader


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__.strip())
    base, donor, out, pattern = sys.argv[1:5]
    rx = re.compile(pattern)
    rb, rd = GGUFReader(base), GGUFReader(donor)
    donor_tensors = {t.name: t for t in rd.tensors}
    tmp = out + ".tmp"
    shutil.copyfile(base, tmp)
    n = 0
    with open(tmp, "r+b") as f:
        for t in rb.tensors:
            if not rx.search(t.name):
                continue
            d = donor_tensors.get(t.name)
            if d is None:
                sys.exit(f"{donor}: no tensor '{t.name}' (present in {base})")
            if d.tensor_type != t.tensor_type or list(d.shape) != list(t.shape):
                sys.exit(
                    f"{donor}: tensor '{t.name}' is {d.tensor_type.name} {list(d.shape)}, "
                    f"{base} has {t.tensor_type.name} {list(t.shape)}"
                )
            f.seek(t.data_offset)
            f.write(d.data.tobytes())
            n += 1
    if n == 0:
        os.remove(tmp)
        sys.exit(f"{base}: no tensor name matches /{pattern}/")
    os.replace(tmp, out)
    print(f"{out}: {n} tensors from {donor}", file=sys.stderr)


if __name__ == "__main__":
    main()

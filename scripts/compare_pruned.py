#!/usr/bin/env python3
"""Compares two lpvit safetensors files made by runs that should agree (1 process against mpirun -n R):
the same tensors, every integer tensor (the BSR structure: which blocks were kept) equal, and every float
tensor within a relative tolerance: ||a - b|| / ||a|| (Frobenius) per tensor (float sums in another order;
a refit amplifies them along directions its data barely constrain, so a few weights may move much more).

    compare_pruned.py A.safetensors B.safetensors [--rtol 1e-2]

Prints one line: the worst relative difference and the largest single-element one, or what differs; exits 1
when they disagree. Needs numpy.
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "I8": np.int8, "U8": np.uint8, "I16": np.int16,
          "I32": np.int32, "I64": np.int64, "BF16": np.uint16}


def load(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = (v["dtype"], np.frombuffer(b[8 + n + s:8 + n + e], dtype=DTYPES[v["dtype"]]).reshape(v["shape"]))
    return out


def main():
    args = sys.argv[1:]
    rtol = 1e-2
    if "--rtol" in args:
        i = args.index("--rtol")
        rtol = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-3].strip(), file=sys.stderr)
        return 2
    a, b = load(args[0]), load(args[1])
    if a.keys() != b.keys():
        print("different tensors: %s" % sorted(set(a) ^ set(b)))
        return 1
    worst, where, elem = 0.0, "", 0.0
    for k in sorted(a):
        (da, xa), (db, xb) = a[k], b[k]
        if da != db or xa.shape != xb.shape:
            print("'%s': %s %s against %s %s" % (k, da, list(xa.shape), db, list(xb.shape)))
            return 1
        if da in ("F32", "F64") and xa.size:
            x, y = xa.astype(np.float64), xb.astype(np.float64)
            d = float(np.linalg.norm(x - y)) / max(float(np.linalg.norm(x)), 1e-30)
            elem = max(elem, float(np.abs(x - y).max()) / max(float(np.abs(x).max()), 1e-30))
            if d > worst:
                worst, where = d, k
        elif not np.array_equal(xa, xb):
            print("'%s' differs (%d of %d values)" % (k, int((xa != xb).sum()), xa.size))
            return 1
    ok = worst <= rtol
    print("%s: integer tensors (kept blocks) equal; float tensors within %.1e (relative Frobenius norm, worst '%s'; "
          "tolerance %.0e), largest element difference %.1e of its tensor's largest"
          % ("agree" if ok else "DISAGREE", worst, where or "-", rtol, elem))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

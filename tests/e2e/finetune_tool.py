#!/usr/bin/env python3
"""What import_e2e.sh and finetune_e2e.sh look at in safetensors files (numpy only, no torch):

  finetune_tool.py same-blocks P Q          the BSR layers of Q have exactly P's structure (row_ptr, col_indices,
                                            block shape) and Q has the same tensor names; prints the layer count
  finetune_tool.py changed P Q              Q's weights differ from P's (max |diff| printed); status 1 if equal
  finetune_tool.py meta FILE [KEY]          the metadata KEY (default "lpvit") of FILE, as it is stored
  finetune_tool.py finetune P D OUT [--poke LAYER] [--no-meta]
                                            a stand-in for a masked fine-tune: D (P's --dense-masked export) with
                                            noise added to the weights P keeps, pruned blocks left at zero;
                                            --poke puts one nonzero weight in a pruned block of LAYER (a linear
                                            weight name), --no-meta drops the metadata (a plain timm file)
"""
import json, struct, sys

import numpy as np

DT = {"F32": np.float32, "I32": np.int32, "I64": np.int64}


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    meta = hdr.pop("__metadata__", {}) or {}
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dtype=DT[v["dtype"]])
            .reshape(v["shape"]).copy() for k, v in hdr.items()}, meta


def write(path, tensors, meta):
    hdr, blobs, off = ({"__metadata__": meta} if meta else {}), [], 0
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k], dtype=np.float32)
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def layers(t):
    return sorted(k[: -len(".bsr_values")] for k in t if k.endswith(".bsr_values"))


def same_blocks(p, q):
    a, _ = read(p)
    b, _ = read(q)
    if sorted(a) != sorted(b):
        sys.exit("tensor names differ: %s" % sorted(set(a) ^ set(b)))
    for name in layers(a):
        for s in (".bsr_row_ptr", ".bsr_col_indices"):
            if not np.array_equal(a[name + s], b[name + s]):
                sys.exit("%s%s differs" % (name, s))
        if a[name + ".bsr_values"].shape != b[name + ".bsr_values"].shape:
            sys.exit("%s.bsr_values has another shape" % name)
    print(len(layers(a)))


def changed(p, q):
    a, _ = read(p)
    b, _ = read(q)
    d = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a if k in b and a[k].dtype == np.float32)
    print("%.3g" % d)
    sys.exit(0 if d > 0 else 1)


def kept(pt, name, shape):
    """The element mask (True = kept) of weight `name` of dense `shape`, from P's BSR arrays pt."""
    v, rows, cols = pt[name + ".bsr_values"], pt[name + ".bsr_row_ptr"].astype(np.int64), pt[name + ".bsr_col_indices"]
    R, C = v.shape[1], v.shape[2]
    bm = np.zeros((len(rows) - 1, -(-shape[1] // C)), dtype=bool)
    bm[np.repeat(np.arange(len(rows) - 1), np.diff(rows)), cols] = True
    return np.repeat(np.repeat(bm, R, 0), C, 1)[: shape[0], : shape[1]]


def finetune(p, d, out, poke=None, no_meta=False):
    pt, _ = read(p)
    t, meta = read(d)
    rng = np.random.default_rng(0)
    for name in layers(pt):
        w = t[name]
        keep = kept(pt, name, w.shape)
        w += (keep * rng.normal(0, 1e-3, w.shape)).astype(np.float32)
        if name == poke:
            r, c = np.argwhere(~keep)[0]
            w[r, c] = 1e-6
    write(out, t, None if no_meta else meta)


def main():
    a = sys.argv[1:]
    if a[:1] == ["same-blocks"]:
        same_blocks(a[1], a[2])
    elif a[:1] == ["changed"]:
        changed(a[1], a[2])
    elif a[:1] == ["meta"]:
        print(read(a[1])[1].get(a[2] if len(a) > 2 else "lpvit", ""))
    elif a[:1] == ["finetune"]:
        poke = a[a.index("--poke") + 1] if "--poke" in a else None
        finetune(a[1], a[2], a[3], poke, "--no-meta" in a)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

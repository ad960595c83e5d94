#!/usr/bin/env python3
"""PyTorch fake-quantization reference of lpvit's int8 model (W8A8 on the four block linears), written
independently of lpvit's C code from the rules in include/lpvit/bsr.h:

  weights: per output row, scale = max|w| / 127 (1 for an all-zero row), q = round-half-even(w / scale)
           clamped to [-127, 127]; the linear uses q * scale
  inputs:  per token, lo = min(0, min x), hi = max(0, max x), scale = (hi - lo) / 255 (1 if hi == lo),
           zp = clamp(round(-lo / scale), 0, 255), u = clamp(round(x * (1 / scale)) + zp, 0, 255) (float32
           arithmetic, round half to even), the linear sees scale * (u - zp)
  everything else (patch embedding, LayerNorm, attention, GELU, heads) FP32, as timm computes it.

  q8_reference.py logits  --model FP32.safetensors --input REF.safetensors --out LOGITS.safetensors
  q8_reference.py linears --model FP32.safetensors --out LINEARS.safetensors [--tokens 8]

logits: the whole model on the 'input' tensor (N, 3, S, S) of --input (the fixtures' *.ref.safetensors).
Per-token rounding is discontinuous: one FP32 ulp of difference upstream (LayerNorm, attention) can move
an activation by a whole grid step, and a model amplifies that, so whole-model logits only agree loosely.
linears: every block linear on its own, on an input both sides build exactly (linear_input below, dyadic
rationals with outliers), so the quantized inputs are the same bytes: tensor NAME (tokens, out) is the
int8 linear's output (bias included). tests/golden/q8_linears.ref.safetensors was made with
  /usr/bin/python3 scripts/q8_reference.py linears --model ../shared/fixtures/timm_deit_tiny_d2.safetensors \\
      --out tests/golden/q8_linears.ref.safetensors
and test_q8_golden compares lpvit's int8 linears with it. Needs torch + numpy (Debian's python3-torch).
"""
import argparse, json, os, struct, sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_deit import load, read_safetensors  # noqa: E402


def quantize_weight(w):
    s = w.abs().amax(dim=1, keepdim=True) / 127.0
    s = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.clamp(torch.round(w / s), -127, 127)
    return q * s


def fake_quant_tokens(x):
    # x (..., features): each token (row) its own range
    lo = torch.clamp(x.amin(dim=-1, keepdim=True), max=0.0)
    hi = torch.clamp(x.amax(dim=-1, keepdim=True), min=0.0)
    s = torch.where(hi > lo, (hi - lo) / 255.0, torch.ones_like(hi))
    zp = torch.clamp(torch.round(-lo / s), 0, 255)
    inv = 1.0 / s
    v = torch.clamp(x * inv, -512.0, 512.0)
    u = torch.clamp(torch.round(v) + zp, 0, 255)
    return s * (u - zp)


class QLinear(nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.weight = nn.Parameter(quantize_weight(lin.weight.data), requires_grad=False)
        self.bias = lin.bias

    def forward(self, x):
        return nn.functional.linear(fake_quant_tokens(x), self.weight, self.bias)


def write_safetensors(path, tensors):
    hdr, off, blobs = {}, 0, []
    for k, a in tensors.items():
        b = np.ascontiguousarray(a, dtype=np.float32).tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(path + ".tmp", path)


def linear_input(tokens, features):
    """x[t][k] = ((37 k + 101 t) mod 199 - 99) / 64, times 8 where k mod 17 == 0 (outlier channels): exact in
    float32, the same numbers tests/golden/test_q8_golden.c builds."""
    t = np.arange(tokens)[:, None]
    k = np.arange(features)[None, :]
    x = ((37 * k + 101 * t) % 199 - 99) / 64.0
    return (x * np.where(k % 17 == 0, 8.0, 1.0)).astype(np.float32)


def linears(a):
    m = load(a.model, a.heads)
    out = {}
    with torch.no_grad():
        for i, b in enumerate(m.blocks):
            for ours, timm in (("qkv", "attn.qkv"), ("proj", "attn.proj"), ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
                lin = getattr(b, ours)
                x = torch.from_numpy(linear_input(a.tokens, lin.in_features))
                out["blocks.%d.%s" % (i, timm)] = QLinear(lin)(x).numpy()
    write_safetensors(a.out, out)
    print("wrote %s: %d linears on %d tokens" % (a.out, len(out), a.tokens))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["logits", "linears"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--input")
    ap.add_argument("--out", required=True)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.mode == "linears":
        return linears(a)
    if not a.input:
        ap.error("logits needs --input")
    m = load(a.model, a.heads)
    for b in m.blocks:
        for name in ("qkv", "proj", "fc1", "fc2"):
            setattr(b, name, QLinear(getattr(b, name)))
    x = torch.from_numpy(read_safetensors(a.input)["input"])
    with torch.no_grad():
        y = m(x).numpy()
    write_safetensors(a.out, {"logits": y})
    print("wrote %s: logits %s" % (a.out, y.shape))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch fake-quantization reference of lpvit's int8 model (W8A8 on the four block linears), written
independently of lpvit's C code from the rules in include/lpvit/bsr.h:

  weights: per output row, scale = max|w| / 127 (1 for an all-zero row), q = round-half-even(w / scale)
           clamped to [-127, 127]; the linear uses q * scale
  inputs:  per token, lo = min(0, min x), hi = max(0, max x), scale = (hi - lo) / 255 (1 if hi == lo),
           zp = clamp(round(-lo / scale), 0, 255), u = clamp(round(x * (1 / scale)) + zp, 0, 255) (float32
           arithmetic, round half to even), the linear sees scale * (u - zp); with --levels 127 (the grid of
           lpvit's AVX2 int8 kernel, whose vpmaddubsw would saturate on 8-bit inputs) 127 replaces 255
  everything else (patch embedding, LayerNorm, attention, GELU, heads) FP32, as timm computes it; with
  --int8-attention, attention's two products by the int8 rules below (lpvit's default with VNNI).

  q8_reference.py logits    --model FP32.safetensors --input REF.safetensors --out LOGITS.safetensors
  q8_reference.py linears   --model FP32.safetensors --out LINEARS.safetensors [--tokens 8] [--levels 255|127]
  q8_reference.py attention --out ATTENTION.safetensors
  q8_reference.py val       --model FP32.safetensors --data DIR [--mean a b c --std a b c] [--int8-attention]

val: top-1 / top-5 of the fake-quantized model on an image folder of the imagenet-val-1000 layout (timm's
preprocessing, scripts/q8_schemes.py's; mean/std default 0.5; the decoded images are cached in
$LPVIT_Q8_OUT under the folder's name), one JSON line: the PyTorch side of
`lpvit eval --precision int8 [--attention fp32]` (docs/benchmarks.md, int8 attention).

attention: the int8 attention of --int8-attention (include/lpvit/ops.h, lpv_attention_fm_q8) on a qkv both
sides build exactly (attention_input below: 2 images of 37 tokens, width 128, 2 heads of 64), from its rules:
q and k symmetric int8 per token (scale max |x| / 127 over the head's features, codes round-half-even of
x * (1 / scale) in float32, clamped to +-127), v the same per feature row over the image's tokens, scores
sq sk (q8 . k8) with exact integer sums, e = exp(s / sqrt(hd) - max) in float32, p = round(255 e), out =
(sv / 255) (p . v8) / sum e. Tensors: 'qkv' (384, 74) and 'out' (128, 74), feature-major as lpvit keeps
them. tests/golden/q8_attention.ref.safetensors was made with
  /usr/bin/python3 scripts/q8_reference.py attention --out tests/golden/q8_attention.ref.safetensors

logits: the whole model on the 'input' tensor (N, 3, S, S) of --input (the fixtures' *.ref.safetensors).
Per-token rounding is discontinuous: one FP32 ulp of difference upstream (LayerNorm, attention) can move
an activation by a whole grid step, and a model amplifies that, so whole-model logits only agree loosely.
linears: every block linear on its own, on an input both sides build exactly (linear_input below, dyadic
rationals with outliers), so the quantized inputs are the same bytes: tensor NAME (tokens, out) is the
int8 linear's output (bias included). tests/golden/q8_linears.ref.safetensors was made with
  /usr/bin/python3 scripts/q8_reference.py linears --model ../shared/fixtures/timm_deit_tiny_d2.safetensors \\
      --out tests/golden/q8_linears.ref.safetensors
and tests/golden/q8_linears_l127.ref.safetensors with the same command plus --levels 127; test_q8_golden
compares lpvit's int8 linears with the one of each kernel's grid. Needs torch + numpy (Debian's python3-torch).
"""
import argparse, json, math, os, struct, sys

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


LEVELS = 255  # the input grid: 255, or 127 (--levels)


def fake_quant_tokens(x):
    # x (..., features): each token (row) its own range
    n = float(LEVELS)
    lo = torch.clamp(x.amin(dim=-1, keepdim=True), max=0.0)
    hi = torch.clamp(x.amax(dim=-1, keepdim=True), min=0.0)
    s = torch.where(hi > lo, (hi - lo) / n, torch.ones_like(hi))
    zp = torch.clamp(torch.round(-lo / s), 0, n)
    inv = 1.0 / s
    v = torch.clamp(x * inv, -512.0, 512.0)
    u = torch.clamp(torch.round(v) + zp, 0, n)
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


def attention_input(features, tokens):
    """qkv[f][t] = ((37 f + 101 t) mod 199 - 99) / 64, times 4 where f mod 13 == 0: exact in float32, the same
    numbers tests/golden/test_attn_q8_golden.c builds."""
    f = np.arange(features)[:, None]
    t = np.arange(tokens)[None, :]
    x = ((37 * f + 101 * t) % 199 - 99) / 64.0
    return (x * np.where(f % 13 == 0, 4.0, 1.0)).astype(np.float32)


def sym8(x, dim):
    """Symmetric int8 codes along dim: scale = max |x| / 127 (codes 0 for an all-zero vector)."""
    s = x.abs().amax(dim=dim, keepdim=True) / torch.tensor(127.0, dtype=torch.float32)
    inv = torch.where(s > 0, 1.0 / s, torch.zeros_like(s))
    return torch.clamp(torch.round(x * inv), -127, 127), s


def attention_q8(q, k, v):
    """lpvit's int8 attention on q, k, v (..., T, hd) of one image's heads: q and k symmetric int8 per token
    (over the head's features), v per feature (over the tokens), exact integer sums (float64), e = exp(s /
    sqrt(hd) - max) in float32, p = round(255 e), out = (sv / 255) (p . v8) / sum e."""
    hd = q.shape[-1]
    q8, sq = sym8(q, -1)                                         # sq (..., T, 1)
    k8, sk = sym8(k, -1)
    v8, sv = sym8(v, -2)                                         # sv (..., 1, hd)
    s = (q8.double() @ k8.double().transpose(-2, -1)).float() * (sq * sk.transpose(-2, -1))
    r = 1.0 / math.sqrt(hd)
    e = torch.exp(s * r - s.amax(dim=-1, keepdim=True) * r)
    p = torch.round(255.0 * e)
    y = (p.double() @ v8.double()).float()                      # (..., T, hd)
    return y * (sv / 255.0) / e.sum(dim=-1, keepdim=True)


def block_forward_q8(self, x):
    """torch_deit.Block.forward with attention_q8 in place of the FP32 attention."""
    B, T, D = x.shape
    hd = D // self.H
    qkv = self.qkv(self.norm1(x)).reshape(B, T, 3, self.H, hd).permute(2, 0, 3, 1, 4)
    y = attention_q8(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(B, T, D)
    x = x + self.proj(y)
    return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


def attention(a):
    B, T, D, H = 2, 37, 128, 2
    hd = D // H
    qkv = torch.from_numpy(attention_input(3 * D, B * T))
    out = torch.zeros(D, B * T, dtype=torch.float32)
    for b in range(B):
        cols = slice(b * T, (b + 1) * T)
        for h in range(H):
            q = qkv[h * hd:(h + 1) * hd, cols].t()              # (T, hd)
            k = qkv[D + h * hd:D + (h + 1) * hd, cols].t()
            v = qkv[2 * D + h * hd:2 * D + (h + 1) * hd, cols].t()
            out[h * hd:(h + 1) * hd, cols] = attention_q8(q, k, v).t()
    write_safetensors(a.out, {"qkv": qkv.numpy(), "out": out.numpy()})
    print("wrote %s: int8 attention of %d images x %d tokens, width %d, %d heads" % (a.out, B, T, D, H))


def quantized_model(a):
    """The FP32 model of --model with the four block linears fake-quantized (and attention, --int8-attention)."""
    m = load(a.model, a.heads)
    for b in m.blocks:
        for name in ("qkv", "proj", "fc1", "fc2"):
            setattr(b, name, QLinear(getattr(b, name)))
        if a.int8_attention:
            b.forward = block_forward_q8.__get__(b)
    return m


def val(a):
    """top-1 / top-5 on the --data folder (the imagenet-val-1000 layout), timm's preprocessing (q8_schemes)."""
    import q8_schemes
    mean, std = (0.5,) * 3, (0.5,) * 3
    if a.mean:
        mean, std = tuple(a.mean), tuple(a.std)
    data = os.path.abspath(a.data)
    q8_schemes.D = os.path.dirname(data)  # load_set reads D/<name>/*/*.JPEG; its cache is named by the folder
    x, y = q8_schemes.load_set(os.path.basename(data))
    m = quantized_model(a)
    n1 = n5 = 0
    with torch.no_grad():
        for i in range(0, len(x), 50):
            t5 = m(q8_schemes.to_tensor(x[i:i + 50], mean, std)).topk(5, dim=1).indices
            yy = torch.from_numpy(y[i:i + 50])
            n1 += int((t5[:, 0] == yy).sum())
            n5 += int((t5 == yy[:, None]).any(dim=1).sum())
    print(json.dumps({"model": a.model, "levels": LEVELS, "int8_attention": bool(a.int8_attention),
                      "images": len(y), "top1": 100.0 * n1 / len(y), "top5": 100.0 * n5 / len(y)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["logits", "linears", "attention", "val"])
    ap.add_argument("--model")
    ap.add_argument("--input")
    ap.add_argument("--out")
    ap.add_argument("--int8-attention", action="store_true")
    ap.add_argument("--data", help="val: the image folder (imagenet-val-1000 layout)")
    ap.add_argument("--mean", type=float, nargs=3)
    ap.add_argument("--std", type=float, nargs=3)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--levels", type=int, choices=[255, 127], default=255)
    a = ap.parse_args()
    global LEVELS
    LEVELS = a.levels
    torch.set_num_threads(1)
    if a.mode != "val" and not a.out:
        ap.error("%s needs --out" % a.mode)
    if a.mode == "attention":
        return attention(a)
    if not a.model:
        ap.error("%s needs --model" % a.mode)
    if a.mode == "linears":
        return linears(a)
    if a.mode == "val":
        if not a.data:
            ap.error("val needs --data")
        if (a.mean is None) != (a.std is None):
            ap.error("--mean and --std go together")
        return val(a)
    if not a.input:
        ap.error("logits needs --input")
    m = quantized_model(a)
    x = torch.from_numpy(read_safetensors(a.input)["input"])
    with torch.no_grad():
        y = m(x).numpy()
    write_safetensors(a.out, {"logits": y})
    print("wrote %s: logits %s" % (a.out, y.shape))

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A timm-equivalent DeiT/ViT in plain PyTorch (Debian's python3-torch, no timm), reading the
same safetensors files lpvit reads. Used by the benchmarks as the PyTorch peer and to export
ONNX (an explicit timm-style block: nn.TransformerEncoderLayer's fused path does not export).

  torch_deit.py bench  --model FILE [--threads N] [--batch 1,16] [--reps K] [--warmup W] [--json OUT]
  torch_deit.py logits --model FILE --input X.safetensors --out Y.npy
  torch_deit.py onnx   --model FILE --out M.onnx [--opset 17] [--quant int8]
  torch_deit.py logits --model FILE --input X.safetensors --out Y.npy --quant int8
--quant int8 (the ONNX Runtime int8 peer): every block linear (qkv, proj, fc1, fc2) gets int8 weights by
lpvit's rule (one symmetric scale per output row, max |w| / 127, round half to even) and uint8 inputs by
ONNX's DynamicQuantizeLinear (one asymmetric scale per tensor, computed at run time: ONNX Runtime's own
dynamic quantization, what its quantize_dynamic writes); the ONNX holds DynamicQuantizeLinear ->
MatMulInteger -> Cast -> Mul -> Add per linear, which ONNX Runtime runs with its int8 GEMM (MLAS: AVX2,
AVX-512 VNNI, AMX). `logits --quant int8` computes the same arithmetic in PyTorch (integer sums in
float64, exact) to check ONNX Runtime's logits. Everything else stays FP32, as in lpvit's int8.
--depth N keeps the first N blocks (the int8 check runs on one block: through 12, float differences of 1e-6
flip the rounding of some inputs and the flips compound, so whole models agree only to a few % of a logit).
A model spec "random:deit_s" builds random weights of that preset's shape instead of a file
(torch's RNG: not the weights lpvit create-model writes; export a create-model file to compare).
Run it with a python3 that imports torch and numpy (Debian's torch imports only under the system
python, which a pyenv python3 may hide): "$(. scripts/lib.sh; lpv_python torch numpy)" scripts/torch_deit.py ...
OpenBLAS (torch's BLAS here) reads OPENBLAS_CORETYPE / OPENBLAS_NUM_THREADS when it loads, so set them
in the environment; bench sets OPENBLAS_NUM_THREADS to --threads when it is unset and reports the core
OpenBLAS picked.
"""
import argparse, json, math, os, struct, sys, time

if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "bench":
    # before torch loads OpenBLAS: its thread count is read once, at load time
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            os.environ.setdefault("OPENBLAS_NUM_THREADS", sys.argv[i + 1])
        elif a.startswith("--threads="):
            os.environ.setdefault("OPENBLAS_NUM_THREADS", a.split("=", 1)[1])

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DT = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I8": np.int8, "U8": np.uint8}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        base = 8 + n
        data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        if v["dtype"] == "BF16":
            raw = np.frombuffer(data[base + a: base + b], dtype=np.uint16).astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(data[base + a: base + b], dtype=DT[v["dtype"]])
        out[k] = arr.reshape(v["shape"]).copy()
    return out


class Block(nn.Module):
    def __init__(self, D, H, Fh, eps):
        super().__init__()
        self.H = H
        self.norm1 = nn.LayerNorm(D, eps=eps)
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
        self.norm2 = nn.LayerNorm(D, eps=eps)
        self.fc1 = nn.Linear(D, Fh)
        self.fc2 = nn.Linear(Fh, D)

    def forward(self, x):
        B, T, D = x.shape
        hd = D // self.H
        qkv = self.qkv(self.norm1(x)).reshape(B, T, 3, self.H, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)) * (hd ** -0.5)
        a = a.softmax(dim=-1)
        y = (a @ v).transpose(1, 2).reshape(B, T, D)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class DeiT(nn.Module):
    def __init__(self, D, depth, H, Fh, classes, distilled, eps=1e-6, img=224, patch=16, chans=3):
        super().__init__()
        self.distilled = distilled
        self.patch = nn.Conv2d(chans, D, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, D))
        self.dist = nn.Parameter(torch.zeros(1, 1, D)) if distilled else None
        T = (img // patch) ** 2 + (2 if distilled else 1)
        self.pos = nn.Parameter(torch.zeros(1, T, D))
        self.blocks = nn.ModuleList([Block(D, H, Fh, eps) for _ in range(depth)])
        self.norm = nn.LayerNorm(D, eps=eps)
        self.head = nn.Linear(D, classes)
        self.head_dist = nn.Linear(D, classes) if distilled else None

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        B = x.shape[0]
        toks = [self.cls.expand(B, -1, -1)]
        if self.distilled:
            toks.append(self.dist.expand(B, -1, -1))
        x = torch.cat(toks + [x], dim=1) + self.pos
        for b in self.blocks:
            x = b(x)
        x = self.norm(x)
        if self.distilled:
            return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2
        return self.head(x[:, 0])


def quantize_rows(w):
    """lpvit's int8 weights (src/engine/bsr_q8.c round_rows): per output row s = max |w| / 127 (1 for a zero
    row), q = round half to even of w / s in float32, clamped to [-127, 127]."""
    w = w.detach().float()
    s = w.abs().amax(dim=1)
    s = torch.where(s > 0, s / 127.0, torch.ones_like(s))
    q = torch.round(w / s[:, None]).clamp(-127, 127).to(torch.int8)
    return q, s


class _DynQuantLinear(torch.autograd.Function):
    """y = (u - zp) . q^T * (sx * s) + b with (u, sx, zp) = DynamicQuantizeLinear(x): forward in PyTorch,
    exported as the ONNX ops ONNX Runtime's dynamic quantization writes."""

    @staticmethod
    def forward(ctx, x, qt, s, b):
        # ONNX DynamicQuantizeLinear: the range always holds 0; scale = (max - min) / 255;
        # zp = saturate(round(-min / scale)); u = saturate(round(x / scale) + zp), rounding half to even
        lo = torch.clamp(x.min(), max=0.0)
        hi = torch.clamp(x.max(), min=0.0)
        sx = (hi - lo) / 255.0
        sx = torch.where(sx > 0, sx, torch.ones_like(sx))
        zp = torch.clamp(torch.round(-lo / sx), 0, 255)
        u = torch.clamp(torch.round(x / sx) + zp, 0, 255)
        acc = (u.double() - zp.double()) @ qt.double()  # exact integer sums
        return (acc.float() * (sx * s) + b).float()

    @staticmethod
    def symbolic(g, x, qt, s, b):
        u, sx, zp = g.op("DynamicQuantizeLinear", x, outputs=3)
        acc = g.op("MatMulInteger", u, qt, zp)
        y = g.op("Cast", acc, to_i=1)  # TensorProto.FLOAT
        return g.op("Add", g.op("Mul", y, g.op("Mul", sx, s)), b)


class Int8Linear(nn.Module):
    def __init__(self, lin):
        super().__init__()
        q, s = quantize_rows(lin.weight)
        self.register_buffer("qt", q.t().contiguous())  # (K, N) int8: MatMulInteger's B
        self.register_buffer("s", s)
        self.register_buffer("b", lin.bias.detach().clone())

    def forward(self, x):
        return _DynQuantLinear.apply(x, self.qt, self.s, self.b)


def to_int8(m):
    """The block linears of model m replaced by Int8Linear, in place."""
    for blk in m.blocks:
        for name in ("qkv", "proj", "fc1", "fc2"):
            setattr(blk, name, Int8Linear(getattr(blk, name)))
    return m


PRESETS = {"deit_t": (192, 3), "deit_s": (384, 6), "deit_b": (768, 12)}


def timm_names(depth, distilled):
    """{this module's parameter name: timm's name} for a model of that depth."""
    names = {"patch.weight": "patch_embed.proj.weight", "patch.bias": "patch_embed.proj.bias", "cls": "cls_token",
             "pos": "pos_embed", "norm.weight": "norm.weight", "norm.bias": "norm.bias",
             "head.weight": "head.weight", "head.bias": "head.bias"}
    if distilled:
        names.update({"dist": "dist_token", "head_dist.weight": "head_dist.weight", "head_dist.bias": "head_dist.bias"})
    for i in range(depth):
        for ours, timm in [("norm1", "norm1"), ("qkv", "attn.qkv"), ("proj", "attn.proj"), ("norm2", "norm2"),
                           ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")]:
            for p in ("weight", "bias"):
                names["blocks.%d.%s.%s" % (i, ours, p)] = "blocks.%d.%s.%s" % (i, timm, p)
    return names


def from_timm(w, heads=None, eps=1e-6):
    """The model for timm-named weights w ({name: numpy array}), its shapes read off the tensors."""
    D = w["cls_token"].shape[2]
    depth = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
    H = heads or {192: 3, 384: 6, 768: 12}[D]
    distilled = "head_dist.weight" in w
    pw = w["patch_embed.proj.weight"]
    side = math.isqrt(w["pos_embed"].shape[1] - (2 if distilled else 1))
    m = DeiT(D, depth, H, w["blocks.0.mlp.fc1.weight"].shape[0], w["head.weight"].shape[0], distilled, eps=eps,
             img=side * pw.shape[2], patch=pw.shape[2], chans=pw.shape[1])
    sd = {ours: w[timm] for ours, timm in timm_names(depth, distilled).items()}
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
    return m.eval()


def load(spec, heads=None):
    if spec.startswith("random:"):
        D, H = PRESETS[spec.split(":", 1)[1]]
        torch.manual_seed(0)
        m = DeiT(D, 12, H, 4 * D, 1000, False)
        for p in m.parameters():
            nn.init.trunc_normal_(p, std=0.02)
        return m.eval()
    return from_timm(read_safetensors(spec), heads)


def openblas_core():
    """The core OpenBLAS picked, if torch's BLAS is OpenBLAS (Debian: libblas.so.3 -> openblas)."""
    import ctypes
    for name in ("libblas.so.3", "libopenblas.so.0"):
        try:
            f = ctypes.CDLL(name).openblas_get_corename
        except (OSError, AttributeError):
            continue
        f.restype = ctypes.c_char_p
        return f().decode()
    return None


def cmd_bench(a):
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    m = load(a.model)
    res = {"runtime": "pytorch", "torch": torch.__version__, "threads": a.threads, "model": a.model,
           "openblas_core": openblas_core(), "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
           "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"), "batches": {}}
    for B in [int(b) for b in a.batch.split(",")]:
        x = torch.randn(B, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for _ in range(a.warmup):
                m(x)
            raw = []
            for _ in range(a.reps):
                t = time.perf_counter()
                m(x)
                raw.append(1e3 * (time.perf_counter() - t))
        ts = sorted(raw)
        med = ts[len(ts) // 2] if len(ts) % 2 else 0.5 * (ts[len(ts) // 2 - 1] + ts[len(ts) // 2])
        res["batches"][str(B)] = {"median_ms": med, "min_ms": ts[0], "median_ms_per_image": med / B,
                                  "min_ms_per_image": ts[0] / B, "images_per_sec": 1e3 * B / med,
                                  "reps": a.reps, "warmup": a.warmup, "times_ms": raw}
    s = json.dumps(res, indent=2)
    if a.json:
        open(a.json, "w").write(s + "\n")
    else:
        print(s)


def load_variant(a):
    """The model of --model, cut to --depth blocks and with --quant applied (logits and onnx)."""
    m = load(a.model)
    if a.depth:
        m.blocks = m.blocks[:a.depth]
    return to_int8(m) if a.quant == "int8" else m


def cmd_logits(a):
    torch.set_num_threads(a.threads)
    m = load_variant(a)
    x = torch.from_numpy(read_safetensors(a.input)["input"])
    with torch.no_grad():
        np.save(a.out, m(x).numpy())


def cmd_onnx(a):
    m = load_variant(a)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tmp = a.out + ".tmp.onnx"
    with torch.no_grad():
        torch.onnx.export(m, x, tmp, input_names=["input"], output_names=["logits"], opset_version=a.opset,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    os.replace(tmp, a.out)  # never leave a half-written model under the final name


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--model", required=True)
    b.add_argument("--threads", type=int, default=os.cpu_count())
    b.add_argument("--batch", default="1,16")
    b.add_argument("--reps", type=int, default=10)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--json")
    l = sub.add_parser("logits")
    l.add_argument("--model", required=True)
    l.add_argument("--input", required=True)
    l.add_argument("--out", required=True)
    l.add_argument("--threads", type=int, default=os.cpu_count())
    l.add_argument("--quant", choices=["none", "int8"], default="none")
    l.add_argument("--depth", type=int, default=0, help="only the first N blocks (0: all)")
    o = sub.add_parser("onnx")
    o.add_argument("--model", required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--opset", type=int, default=17)
    o.add_argument("--quant", choices=["none", "int8"], default="none")
    o.add_argument("--depth", type=int, default=0, help="only the first N blocks (0: all)")
    a = p.parse_args()
    {"bench": cmd_bench, "logits": cmd_logits, "onnx": cmd_onnx}[a.cmd](a)


if __name__ == "__main__":
    main()

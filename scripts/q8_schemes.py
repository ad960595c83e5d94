#!/usr/bin/env python3
"""Which int8 activation scheme to ship: a PyTorch fake-quantization experiment on the real models.
int8 weights (symmetric per output channel) + uint8 asymmetric activations on the inputs of qkv/proj/fc1/fc2 of every block; everything else FP32.

Schemes for the activations (the linear's input):
  fp32      no quantization at all
  w8        weights int8 only, activations FP32
  a_minmax  per-tensor static, min/max over 256 calibration images
  b_mse     per-tensor static, [lo,hi] chosen per linear input by minimising the MSE of the
            quantized input (2-D grid: 100 shrink factors of lo x 100 of hi, evaluated on a
            16384-bin histogram of the 256 calibration images)
  c_token   per-token dynamic min/max (no calibration)
  d_mixed   b_mse for qkv/proj/fc1 inputs, c_token for the fc2 input
  e_tokclip_mse  per-token dynamic everywhere, fc2 input's max clipped to b_mse's hi of that linear
  e_tokclip_p9999 per-token dynamic everywhere, fc2 input's max clipped to the 99.99th percentile
  e_tokclip_p999  same with the 99.9th percentile
All ranges include 0 (lo<=0<=hi) so the zero point is an integer in [0,255].
Calibration statistics are collected on the FP32 model (no quantization while calibrating).

Results on imagenet-val-1000 are in docs/benchmarks.md (int8 section); it took ~45 min on 2 busy cores.
--smooth A: SmoothQuant first (alpha A; lpvit quantize --smooth's rule, written independently): per block, the
max |x| per channel of qkv's, proj's and fc1's inputs over the calibration images, s = max|x|^A / max|w|^(1-A),
divided out of norm1 / norm2 and of qkv's v rows, multiplied into the weight columns; the FP32 logits are
checked unchanged. Results with it: docs/benchmarks.md (int8 section, the PyTorch cross-check).
usage: /usr/bin/python3 scripts/q8_schemes.py [--schemes s1,s2,...] [--models vit,deit] [--smooth A]
  (data from $LPVIT_DATA, default ../shared/data beside the repository; caches and results.json in
  $LPVIT_Q8_OUT, default /tmp/lpvit-q8-schemes)
"""
import argparse, copy, glob, json, os, sys, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_deit  # noqa: E402  (read-only import of the project's timm-equivalent model)

torch.set_num_threads(2)
D = os.environ.get("LPVIT_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/data"))
OUT = os.environ.get("LPVIT_Q8_OUT", "/tmp/lpvit-q8-schemes")
os.makedirs(OUT, exist_ok=True)
MODELS = {
    "vit": (D + "/vit_tiny_patch16_224.safetensors", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "deit": (D + "/deit_tiny_patch16_224.ln-rounded.safetensors",
             (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
LINEARS = ("qkv", "proj", "fc1", "fc2")
NBINS = 16384
NGRID = 100
BATCH = 50


# ---------------------------------------------------------------- data
def preprocess(path):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = int(224 / 0.9)  # 248
    if w <= h:
        nw, nh = s, int(s * h / w)
    else:
        nw, nh = int(s * w / h), s
    im = im.resize((nw, nh), Image.BICUBIC)
    l, t = int(round((nw - 224) / 2.0)), int(round((nh - 224) / 2.0))
    im = im.crop((l, t, l + 224, t + 224))
    return np.asarray(im, dtype=np.uint8)  # HWC uint8; /255 later is exact


def load_set(name, limit=None):
    cache = "%s/%s.npz" % (OUT, name)
    if os.path.exists(cache):
        z = np.load(cache)
        return z["x"], z["y"]
    syn = [l.split()[0] for l in open(D + "/synset_words.txt")]
    idx = {s: i for i, s in enumerate(syn)}
    files = sorted(glob.glob("%s/%s/*/*.JPEG" % (D, name)))
    if limit:
        files = files[:limit]
    x = np.stack([preprocess(f) for f in files])
    y = np.array([idx[os.path.basename(os.path.dirname(f))] for f in files], dtype=np.int64)
    np.savez(cache, x=x, y=y)
    return x, y


def to_tensor(xu8, mean, std):
    x = torch.from_numpy(xu8).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


# ---------------------------------------------------------------- quantizers
def fq_range(x, lo, hi):
    """uint8 asymmetric fake quant with range [lo,hi] (tensors broadcastable to x), lo<=0<=hi."""
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / 255.0, min=1e-12)
    zp = torch.round(-lo / scale)
    q = torch.clamp(torch.round(x / scale) + zp, 0, 255)
    return (q - zp) * scale


def fq_weight(w):
    s = w.abs().amax(dim=1, keepdim=True) / 127.0
    s = torch.clamp(s, min=1e-12)
    return torch.clamp(torch.round(w / s), -127, 127) * s


class QLinear(nn.Module):
    """Wraps nn.Linear; mode: None (FP32 input) | ('static', lo, hi) | ('token', clip_hi or None)."""

    def __init__(self, lin, name):
        super().__init__()
        self.lin, self.name = lin, name
        self.w_fp = lin.weight.data.clone()
        self.w_q = fq_weight(self.w_fp)
        self.qw = False
        self.mode = None
        self.observer = None

    def forward(self, x):
        if self.observer is not None:
            self.observer(self.name, x)
        m = self.mode
        if m is None:
            pass
        elif m[0] == "static":
            x = fq_range(x, torch.tensor(m[1]), torch.tensor(m[2]))
        elif m[0] == "token":
            lo = x.amin(dim=-1, keepdim=True)
            hi = x.amax(dim=-1, keepdim=True)
            if m[1] is not None:
                hi = torch.clamp(hi, max=m[1])
            x = fq_range(x, lo, hi)
        w = self.w_q if self.qw else self.w_fp
        return F.linear(x, w, self.lin.bias)


def smooth_model(m, xc, mean, std, alpha):
    """SmoothQuant-style smoothing of FP32 model m in place (FP32 function unchanged up to rounding).
    Per block: qkv input (norm1 out), fc1 input (norm2 out), proj input (attention out, via the v rows
    of qkv). fc2 (GELU output) untouched. Returns {layer: (s_min, s_max, xmax_max/xmax_min-ish info)}."""
    amax = {}
    hooks = []
    for i, b in enumerate(m.blocks):
        for n in ("qkv", "proj", "fc1"):
            def hook(mod, inp, key="%d.%s" % (i, n)):
                a = inp[0].detach().abs().amax(dim=(0, 1))
                amax[key] = torch.maximum(amax[key], a) if key in amax else a
            hooks.append(getattr(b, n).register_forward_pre_hook(hook))
    with torch.no_grad():
        for i in range(0, len(xc), BATCH):
            m(to_tensor(xc[i:i + BATCH], mean, std))
    for h in hooks:
        h.remove()
    info = {}
    with torch.no_grad():
        for i, b in enumerate(m.blocks):
            C = b.proj.weight.shape[1]
            for n in ("qkv", "proj", "fc1"):
                key = "%d.%s" % (i, n)
                lin = getattr(b, n)
                xm = amax[key].double()
                wm = lin.weight.detach().abs().amax(dim=0).double()
                sc = xm.pow(alpha) / wm.clamp(min=1e-12).pow(1 - alpha)
                sc = sc.clamp(1e-5, 1e5)
                sc = torch.where(xm > 0, sc, torch.ones_like(sc)).float()
                info[key] = {"s_min": sc.min().item(), "s_max": sc.max().item(),
                             "s_ratio": (sc.max() / sc.min()).item(),
                             "xmax_max": xm.max().item(), "xmax_min": xm.min().item(),
                             "xmax_after_max": (xm.float() / sc).max().item(),
                             "xmax_after_min": (xm.float() / sc).min().item()}
                lin.weight.mul_(sc[None, :])
                if n == "qkv":
                    b.norm1.weight.div_(sc)
                    b.norm1.bias.div_(sc)
                elif n == "fc1":
                    b.norm2.weight.div_(sc)
                    b.norm2.bias.div_(sc)
                else:  # proj: attention output channel j = convex comb. of v channel j
                    b.qkv.weight[2 * C:3 * C, :].div_(sc[:, None])
                    b.qkv.bias[2 * C:3 * C].div_(sc)
    return info


def build(key, alpha=0.0, xc=None):
    path, mean, std = MODELS[key]
    m = torch_deit.load(path)
    if alpha > 0:
        ref = copy.deepcopy(m)
        info = smooth_model(m, xc, mean, std, alpha)
        with torch.no_grad():
            xt = to_tensor(xc[:8], mean, std)
            l0, l1 = ref(xt), m(xt)
        d = (l1 - l0).abs().max().item()
        print("[%s] smooth alpha=%g: FP32 logits max abs diff %.3e (max |logit| %.2f, rel %.2e), argmax equal %s"
              % (key, alpha, d, l0.abs().max().item(), d / l0.abs().max().item(),
                 bool((l0.argmax(1) == l1.argmax(1)).all())), flush=True)
        json.dump(info, open("%s/smooth_%s.json" % (OUT, key), "w"), indent=1)
        worst = sorted(info.items(), key=lambda kv: -kv[1]["s_ratio"])[:5]
        for k, v in worst:
            print("   %-8s s in [%.3g, %.3g] (ratio %.3g); max|x| in [%.3g, %.3g] -> [%.3g, %.3g]"
                  % (k, v["s_min"], v["s_max"], v["s_ratio"], v["xmax_min"], v["xmax_max"],
                     v["xmax_after_min"], v["xmax_after_max"]), flush=True)
        del ref
    qls = {}
    for i, b in enumerate(m.blocks):
        for n in LINEARS:
            ql = QLinear(getattr(b, n), "%d.%s" % (i, n))
            setattr(b, n, ql)
            qls[ql.name] = ql
    return m, qls, mean, std


def evaluate(m, x, y, mean, std):
    c1 = c5 = 0
    with torch.no_grad():
        for i in range(0, len(x), BATCH):
            logits = m(to_tensor(x[i:i + BATCH], mean, std))
            t5 = logits.topk(5, dim=1).indices
            yy = torch.from_numpy(y[i:i + BATCH])
            c1 += (t5[:, 0] == yy).sum().item()
            c5 += (t5 == yy[:, None]).any(dim=1).sum().item()
    return 100.0 * c1 / len(x), 100.0 * c5 / len(x)


# ---------------------------------------------------------------- calibration
def calibrate(m, qls, xc, mean, std):
    """Pass 1: per-tensor min/max. Pass 2: histograms on [min,max]. Returns stats per linear."""
    for q in qls.values():
        q.mode, q.qw = None, False
    mm = {}

    def obs_minmax(name, x):
        lo, hi = x.min().item(), x.max().item()
        a, b = mm.get(name, (np.inf, -np.inf))
        mm[name] = (min(a, lo), max(b, hi))

    hist = {}

    def obs_hist(name, x):
        lo, hi = mm[name]
        h = torch.histc(x.flatten().double(), bins=NBINS, min=lo, max=hi)
        hist[name] = hist.get(name, 0) + h

    for obs in (obs_minmax, obs_hist):
        for q in qls.values():
            q.observer = obs
        with torch.no_grad():
            for i in range(0, len(xc), BATCH):
                m(to_tensor(xc[i:i + BATCH], mean, std))
    for q in qls.values():
        q.observer = None

    stats = {}
    for name, (lo, hi) in mm.items():
        h = hist[name]
        edges = torch.linspace(lo, hi, NBINS + 1, dtype=torch.float64)
        centers = 0.5 * (edges[1:] + edges[:-1])
        lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
        # MSE grid search: lo' = lo0*a, hi' = hi0*b, a,b in (0,1] (100 each)
        f = torch.arange(1, NGRID + 1, dtype=torch.float64) / NGRID
        best = (np.inf, lo0, hi0)
        for a in f:
            los = (lo0 * a).expand(NGRID)
            his = hi0 * f
            scale = torch.clamp((his - los) / 255.0, min=1e-12)[:, None]
            zp = torch.round(-los[:, None] / scale)
            q = torch.clamp(torch.round(centers[None] / scale) + zp, 0, 255)
            err = (((q - zp) * scale - centers[None]) ** 2 * h[None]).sum(1)
            j = int(err.argmin())
            if err[j] < best[0]:
                best = (err[j].item(), los[j].item(), his[j].item())
        cdf = torch.cumsum(h, 0) / h.sum()
        pct = {}
        for p in (0.999, 0.9999):
            k = int(torch.searchsorted(cdf, torch.tensor([p], dtype=torch.float64))[0])
            pct[p] = edges[min(k + 1, NBINS)].item()
        mse_mm = None
        stats[name] = {"min": lo, "max": hi, "mse_lo": best[1], "mse_hi": best[2],
                       "p999": pct[0.999], "p9999": pct[0.9999]}
    return stats


def set_scheme(qls, scheme, stats):
    for name, q in qls.items():
        kind = name.split(".")[1]
        s = stats.get(name) if stats else None
        q.qw = scheme != "fp32"
        if scheme in ("fp32", "w8"):
            q.mode = None
        elif scheme == "a_minmax":
            q.mode = ("static", s["min"], s["max"])
        elif scheme == "b_mse":
            q.mode = ("static", s["mse_lo"], s["mse_hi"])
        elif scheme == "c_token":
            q.mode = ("token", None)
        elif scheme == "d_mixed":
            q.mode = ("token", None) if kind == "fc2" else ("static", s["mse_lo"], s["mse_hi"])
        elif scheme.startswith("e_tokclip_"):
            key = {"mse": "mse_hi", "p9999": "p9999", "p999": "p999"}[scheme[len("e_tokclip_"):]]
            q.mode = ("token", s[key] if kind == "fc2" else None)
        else:
            raise ValueError(scheme)


ALL = ["fp32", "w8", "a_minmax", "b_mse", "c_token", "d_mixed",
       "e_tokclip_mse", "e_tokclip_p9999", "e_tokclip_p999"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--schemes", default=",".join(ALL))
    ap.add_argument("--models", default="vit,deit")
    ap.add_argument("--smooth", type=float, default=0.0, help="SmoothQuant alpha (0: off)")
    a = ap.parse_args()
    t0 = time.time()
    xv, yv = load_set("imagenet-val-1000")
    xc, _ = load_set("imagenet-calib-1000", limit=256)
    print("data: val %s calib %s (%.1fs)" % (xv.shape, xc.shape, time.time() - t0), flush=True)
    res = {}
    rpath = OUT + "/results.json"
    if os.path.exists(rpath):
        res = json.load(open(rpath))
    for key in a.models.split(","):
        m, qls, mean, std = build(key, a.smooth, xc)
        t = time.time()
        stats = calibrate(m, qls, xc, mean, std)
        json.dump(stats, open("%s/calib_%s.json" % (OUT, key), "w"), indent=1)
        print("[%s] calibrated in %.1fs" % (key, time.time() - t), flush=True)
        for sc in a.schemes.split(","):
            t = time.time()
            set_scheme(qls, sc, stats)
            t1, t5 = evaluate(m, xv, yv, mean, std)
            res.setdefault(key, {})[sc] = [t1, t5]
            json.dump(res, open(rpath, "w"), indent=1)
            print("[%s] %-16s top1 %.2f top5 %.2f (%.1fs)" % (key, sc, t1, t5, time.time() - t), flush=True)


if __name__ == "__main__":
    main()

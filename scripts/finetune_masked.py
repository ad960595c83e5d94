#!/usr/bin/env python3
"""Fine-tunes an lpvit-pruned DeiT/ViT in PyTorch with its block masks held fixed, and writes dense weights
(timm names, zeros in every pruned block) that `lpvit import` packs back into the pruned file's BSR structure.

  finetune_masked.py --model P.safetensors --train-dir DIR --out FT.safetensors
                     [--teacher DENSE.safetensors] [--epochs 5] [--batch-size 64] [--lr 1e-4] [--resume CKPT]
  lpvit import --model FT.safetensors --masks-from P.safetensors --out Q.safetensors
  lpvit eval --model Q.safetensors --imagenet-dir VAL

The masks are the BSR structure of the pruned file (NAME.weight.bsr_row_ptr / .bsr_col_indices, block shape
from .bsr_values), never the zeros of its weights. --model may also be the file `lpvit export --dense-masked`
wrote; --masks then names the pruned BSR file it came from. Every pruned block stays exactly zero: the
gradients are masked before each AdamW step, the mask is applied to the weights again after it (weight decay
and Adam's epsilon would otherwise be the only things keeping them at zero), and every save checks it.

Training: ImageFolder (DIR/<wnid>/*.JPEG, the class of a folder is its line in models/synset_words.txt, as
lpvit eval reads them), timm-style train transforms (RandomResizedCrop bicubic + horizontal flip) with the
pruned file's mean/std (lpvit metadata; --mean/--std otherwise), AdamW (no weight decay on biases, norms and
tokens), cosine learning rate with linear warmup, per step. With --teacher (e.g. the dense model the pruned
file came from): loss = (1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher / T || student / T).
A checkpoint (model, optimiser, step, RNG states) goes to OUT.ckpt after every epoch (and every --ckpt-every
steps, and on Ctrl-C); --resume CKPT continues from it with the command line's settings.

Model: timm's VisionTransformer when timm imports (checked against the plain model on one batch first),
else scripts/torch_deit.py's. Runs on Debian's python3-torch with numpy and PIL; no torchvision needed.
Run it with a python3 that imports torch (Debian's: /usr/bin/python3).
"""
import argparse, hashlib, json, math, os, random, signal, struct, sys, time

# Before torch loads OpenMP and OpenBLAS (both read these once, at load time): torch's own threads split the
# work, so OpenBLAS threads on top only oversubscribe the cores; and passive waiting keeps idle OpenMP threads
# off cores other processes need. On 2 shared vCPUs (Zen 4, ViT-Tiny forward + backward, batch 32, 2 threads)
# these took 5.4-6.3 s where the defaults took 13-15 s. Set them in the environment to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_deit  # noqa: E402  (the plain PyTorch DeiT/ViT, scripts/torch_deit.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
NP_DTYPE = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64, "I8": np.int8}


def die(msg):
    print("finetune_masked: " + msg, file=sys.stderr)
    sys.exit(1)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# safetensors: read (with metadata), write (atomically)
# ---------------------------------------------------------------------------------------------------------

def read_safetensors(path):
    """({name: numpy array}, {metadata key: string}) of a safetensors file."""
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr = json.loads(f.read(n))
            data = f.read()
    except (OSError, ValueError, struct.error) as e:
        die("cannot read '%s': %s" % (path, e))
    meta = hdr.pop("__metadata__", {}) or {}
    out = {}
    for name, v in hdr.items():
        a, b = v["data_offsets"]
        if v["dtype"] == "BF16":
            arr = (np.frombuffer(data[a:b], dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif v["dtype"] in NP_DTYPE:
            arr = np.frombuffer(data[a:b], dtype=NP_DTYPE[v["dtype"]])
        else:
            die("'%s': tensor '%s' has dtype %s, which this script does not read" % (path, name, v["dtype"]))
        out[name] = arr.reshape(v["shape"]).copy()
    return out, meta


def write_safetensors(path, tensors, meta):
    """F32 tensors in name order, 8-byte aligned header, written to a temp file and renamed."""
    hdr, blobs, off = {"__metadata__": meta}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        hdr[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    atomic_write(path, lambda f: [f.write(struct.pack("<Q", len(h))), f.write(h)] + [f.write(b) for b in blobs])


def atomic_write(path, fill):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # never a half-written file under the final name
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_meta(meta, key):
    try:
        return json.loads(meta[key]) if key in meta else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------
# The pruned model: dense weights and the masks of its BSR layers
# ---------------------------------------------------------------------------------------------------------

def linear_shape(name, w, arch):
    """(out, in) of the linear weight `name` (timm name); BSR files do not store it, the architecture does."""
    base = name[: -len(".weight")]
    out = w[base + ".bias"].shape[0]
    D = w["cls_token"].shape[2]
    if base == "patch_embed.proj":
        p, c = int(arch.get("patch", 16)), int(arch.get("chans", 3))
        return out, c * p * p
    if base.endswith("mlp.fc2"):
        return out, w[base[: -len("fc2")] + "fc1.bias"].shape[0]
    return out, D


def bsr_arrays(w, name):
    """The three BSR tensors of a linear weight (values, col_indices, row_ptr), removed from w."""
    keys = [name + s for s in (".bsr_values", ".bsr_col_indices", ".bsr_row_ptr")]
    missing = [k for k in keys if k not in w]
    if missing:
        die("'%s' needs all of .bsr_values, .bsr_col_indices and .bsr_row_ptr" % name)
    return [w.pop(k) for k in keys]


def bsr_to_dense(path, name, vals, cols, rows, out, inp):
    """Dense (out, in) weight with zeros in pruned blocks, and the block mask (nbr, nbc) of kept blocks."""
    if vals.dtype == np.int8:
        die("'%s': '%s' is int8: fine-tune the FP32 pruned file (the one before lpvit quantize)" % (path, name))
    if vals.ndim != 3:
        die("'%s': '%s.bsr_values' is not [nnzb, R, C]" % (path, name))
    R, C = vals.shape[1], vals.shape[2]
    nbr, nbc = -(-out // R), -(-inp // C)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    if (rows.shape != (nbr + 1,) or rows[0] != 0 or np.any(np.diff(rows) < 0) or rows[-1] != len(cols)
            or len(cols) != len(vals) or np.any(cols < 0) or np.any(cols >= nbc)):
        die("'%s': the BSR arrays of '%s' do not fit its shape (%d, %d) in %dx%d blocks" % (path, name, out, inp, R, C))
    block_row = np.repeat(np.arange(nbr), np.diff(rows))
    mask = np.zeros((nbr, nbc), dtype=bool)
    mask[block_row, cols] = True
    blocks = np.zeros((nbr, nbc, R, C), dtype=np.float32)
    blocks[block_row, cols] = vals.astype(np.float32)
    dense = blocks.transpose(0, 2, 1, 3).reshape(nbr * R, nbc * C)[:out, :inp]
    return np.ascontiguousarray(dense), mask, (R, C)


def expand(mask, RC, shape):
    """An element mask of `shape` ((out, in), or the patch embedding's 4-D one) from a block mask."""
    R, C = RC
    out = shape[0]
    inp = int(np.prod(shape[1:]))
    return np.repeat(np.repeat(mask, R, 0), C, 1)[:out, :inp].reshape(shape)


def load_pruned(model_path, masks_path):
    """(timm-named dense weights, {weight name: element mask, True = kept}, the model file's metadata, the masks
    file's metadata, lpvit.arch). The masks come from masks_path's BSR layers (model_path's own when it is the
    pruned file); a dense model file must hold zeros wherever they prune."""
    w, meta = read_safetensors(model_path)
    arch = json_meta(meta, "lpvit.arch") or {}
    if masks_path == model_path:
        mw, mmeta = w, meta
    else:
        mw, mmeta = read_safetensors(masks_path)
        arch = arch or json_meta(mmeta, "lpvit.arch") or {}
    sparse = sorted(k[: -len(".bsr_values")] for k in mw if k.endswith(".bsr_values"))
    if not sparse:
        hint = ""
        src = meta.get("lpvit.exported_from")
        if src:
            hint = " (its metadata says it was exported from '%s')" % src
        die("'%s' has no block-sparse layer: the masks come from the pruned BSR file, give it as --masks%s"
            % (masks_path, hint))
    masks = {}
    for name in sparse:
        vals, cols, rows = bsr_arrays(mw, name)
        out, inp = linear_shape(name, mw, arch)
        dense, bmask, RC = bsr_to_dense(masks_path, name, vals, cols, rows, out, inp)
        shape = (out, inp) if name != "patch_embed.proj.weight" else (out, arch.get("chans", 3),
                                                                       arch.get("patch", 16), arch.get("patch", 16))
        dense = dense.reshape(shape)
        emask = expand(bmask, RC, shape)
        if masks_path == model_path:
            w[name] = dense
        else:
            if name not in w:  # the model file is BSR too: its own values
                w[name] = bsr_to_dense(model_path, name, *bsr_arrays(w, name), out, inp)[0].reshape(shape)
            if tuple(w[name].shape) != shape:
                die("'%s': '%s' has shape %s, the masks' model %s" % (model_path, name, list(w[name].shape), list(shape)))
            nz = int(np.count_nonzero(w[name][~emask]))
            if nz:
                die("'%s': '%s' has %d nonzero weights in blocks that '%s' prunes: not the same pruned model"
                    % (model_path, name, nz, masks_path))
        masks[name] = emask
    leftover = [k for k in w if ".bsr_" in k]
    if leftover:
        die("'%s': '%s' is BSR but '%s' does not prune that layer" % (model_path, leftover[0], masks_path))
    return w, masks, meta, mmeta, arch


# ---------------------------------------------------------------------------------------------------------
# Models: timm's when it imports, else torch_deit's, with a map from module parameter to timm name
# ---------------------------------------------------------------------------------------------------------

def heads_and_eps(w, arch, heads):
    D = w["cls_token"].shape[2]
    H = heads or arch.get("heads") or {192: 3, 384: 6, 768: 12}.get(D)
    if not H:
        die("cannot tell the attention heads of width %d: give --heads" % D)
    return int(H), float(arch.get("ln_eps", 1e-6))


def build_plain(w, H, eps):
    m = torch_deit.from_timm(w, H, eps)
    depth = len(m.blocks)
    return m, torch_deit.timm_names(depth, m.distilled)


def build_timm(w, H, eps):
    import functools
    import timm  # noqa: F401
    from timm.models.vision_transformer import VisionTransformer
    D = w["cls_token"].shape[2]
    pw = w["patch_embed.proj.weight"]
    distilled = "dist_token" in w
    depth = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
    side = math.isqrt(w["pos_embed"].shape[1] - (2 if distilled else 1))
    kw = dict(img_size=side * pw.shape[2], patch_size=pw.shape[2], in_chans=pw.shape[1], num_classes=w["head.weight"].shape[0],
              embed_dim=D, depth=depth, num_heads=H, mlp_ratio=w["blocks.0.mlp.fc1.weight"].shape[0] / D, qkv_bias=True,
              norm_layer=functools.partial(torch.nn.LayerNorm, eps=eps))
    if distilled:
        from timm.models.deit import VisionTransformerDistilled
        m = VisionTransformerDistilled(**kw)
    else:
        m = VisionTransformer(**kw)
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()}, strict=True)
    return m.eval(), {k: k for k in w}


def build_model(w, H, eps, impl):
    """(module, {parameter name: timm name}, impl used)."""
    if impl in ("auto", "timm"):
        try:
            m, names = build_timm(w, H, eps)
        except ImportError:
            if impl == "timm":
                die("--impl timm: timm does not import")
        else:
            ref, _ = build_plain(w, H, eps)  # the same weights in the plain model: the two must agree
            pw = ref.patch.weight
            side = math.isqrt(ref.pos.shape[1] - (2 if ref.distilled else 1)) * pw.shape[2]
            x = torch.randn(2, pw.shape[1], side, side, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                d = (m(x) - ref(x)).abs().max().item()
            if not d < 1e-3:
                die("timm's model and scripts/torch_deit.py's disagree on these weights (max |diff| %.3g): "
                    "use --impl torch_deit" % d)
            return m, names, "timm"
    m, names = build_plain(w, H, eps)
    return m, names, "torch_deit"


def timm_state(model, names):
    """The model's weights as timm-named numpy arrays (the file lpvit reads)."""
    sd = model.state_dict()
    return {names[k]: sd[k].detach().float().cpu().numpy() for k in names}


# ---------------------------------------------------------------------------------------------------------
# Data: an ImageFolder in lpvit's class order, timm-style train transforms in PIL
# ---------------------------------------------------------------------------------------------------------

def read_synsets(path):
    try:
        with open(path) as f:
            return [ln.split()[0] for ln in f if ln.strip()]
    except OSError as e:
        die("cannot read the synsets '%s': %s" % (path, e))


class ImageFolder(torch.utils.data.Dataset):
    def __init__(self, root, synsets, transform, limit=0):
        index = {s: i for i, s in enumerate(synsets)}
        try:
            classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        except OSError as e:
            die("cannot list '%s': %s" % (root, e))
        unknown = [c for c in classes if c not in index]
        if unknown:
            die("'%s': folder '%s' is not a class of the synsets file (DIR/<wnid>/images)" % (root, unknown[0]))
        self.items = [(os.path.join(root, c, f), index[c]) for c in classes
                      for f in sorted(os.listdir(os.path.join(root, c))) if f.lower().endswith(IMG_EXT)]
        if limit:
            self.items = self.items[:limit]
        if not self.items:
            die("'%s' holds no images in class folders" % root)
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        for k in range(len(self.items)):  # an unreadable image is replaced by the next readable one
            path, label = self.items[(i + k) % len(self.items)]
            try:
                with Image.open(path) as im:
                    return self.transform(im.convert("RGB")), label
            except OSError as e:
                print("finetune_masked: skipping unreadable image '%s' (%s)" % (path, e), file=sys.stderr)
        raise RuntimeError("no readable image")


class TrainTransform:
    """timm's train transform without the extras: RandomResizedCrop(size, scale, 3/4..4/3, bicubic),
    horizontal flip with probability 0.5, to float, normalize."""

    def __init__(self, size, mean, std, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio = size, scale, ratio
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def crop_box(self, W, H):
        area = W * H
        logr = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):  # torchvision's RandomResizedCrop.get_params
            a = area * random.uniform(*self.scale)
            r = math.exp(random.uniform(*logr))
            w, h = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
            if 0 < w <= W and 0 < h <= H:
                x, y = random.randint(0, W - w), random.randint(0, H - h)
                return x, y, x + w, y + h
        r = W / H  # fallback: the center crop at the nearest allowed ratio
        w, h = (W, int(round(W / min(r, self.ratio[1])))) if r > self.ratio[1] else \
            (int(round(H * max(r, self.ratio[0]))), H) if r < self.ratio[0] else (W, H)
        w, h = min(w, W), min(h, H)
        x, y = (W - w) // 2, (H - h) // 2
        return x, y, x + w, y + h

    def __call__(self, im):
        im = im.resize((self.size, self.size), Image.BICUBIC, box=self.crop_box(*im.size))
        if random.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std


def seed_worker(worker_id):
    random.seed(torch.initial_seed() % 2 ** 32)  # each worker its own crops (torch seeds it per epoch)


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------

def lr_at(step, total, warmup, lr, min_lr):
    """Linear warmup over `warmup` steps, then cosine from lr down to min_lr at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def param_groups(model, wd):
    """timm's rule: no weight decay on biases, norms (1-D) and the tokens / position embedding."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim <= 1 or name in ("cls", "dist", "pos", "cls_token", "dist_token", "pos_embed")
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


class Masks:
    """The pruned blocks of each masked parameter, as a bool tensor (True = pruned) on the model's device."""

    def __init__(self, model, names, masks, device):
        params = dict(model.named_parameters())
        self.items = [(params[k], torch.from_numpy(~masks[t]).to(device), t) for k, t in names.items() if t in masks]

    def apply(self):
        with torch.no_grad():
            for p, pruned, _ in self.items:
                p.masked_fill_(pruned, 0.0)

    def mask_grads(self):
        for p, pruned, _ in self.items:
            if p.grad is not None:
                p.grad.masked_fill_(pruned, 0.0)

    def check(self, what):
        """Every pruned weight exactly zero, or a hard error (this script's own bug, never written out)."""
        for p, pruned, name in self.items:
            nz = int(torch.count_nonzero(p.detach()[pruned]))
            if nz:
                raise RuntimeError("%s: '%s' has %d nonzero weights in pruned blocks" % (what, name, nz))


class Progress:
    """A redrawn bar on a terminal, else a plain line about every tenth of an epoch."""

    def __init__(self, total, label):
        self.total, self.label, self.t0 = total, label, time.time()
        self.tty = sys.stderr.isatty()
        self.every = max(1, total // 10)

    def update(self, i, loss, lr, images):
        dt = time.time() - self.t0
        rate = images / dt if dt > 0 else 0.0
        eta = dt / i * (self.total - i) if i else 0
        text = "%s %d/%d  loss %.4f  lr %.2e  %.1f img/s  eta %s" % (self.label, i, self.total, loss, lr, rate,
                                                                   time.strftime("%M:%S", time.gmtime(eta)))
        if self.tty:
            n = 24 * i // max(1, self.total)
            sys.stderr.write("\r[%s%s] %s\x1b[K" % ("#" * n, "-" * (24 - n), text))
            sys.stderr.flush()
        elif i % self.every == 0 or i == self.total:
            log(text)

    def done(self):
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def distill_loss(s, t, y, alpha, T, smoothing):
    ce = F.cross_entropy(s, y, label_smoothing=smoothing)
    if t is None:
        return ce, ce, torch.zeros(())
    kd = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean", log_target=True) * T * T
    return (1 - alpha) * ce + alpha * kd, ce, kd


def save_checkpoint(path, model, opt, step, state, masks):
    masks.check("checkpoint")
    state = dict(state, step=step, model=model.state_dict(), optimizer=opt.state_dict(),
                 rng={"torch": torch.get_rng_state(), "python": random.getstate(),
                      "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})
    atomic_write(path, lambda f: torch.save(state, f))


SCHEDULE_ARGS = ("epochs", "batch_size", "lr", "min_lr", "warmup_epochs", "weight_decay", "alpha", "temperature",
                 "smoothing", "scale_min", "seed", "limit")


def load_checkpoint(path, args, model_sha, masks_sha, device):
    try:
        # not weights only: the checkpoint holds the optimiser's and Python's RNG state (torch >= 2.6 defaults to
        # weights_only=True); load only checkpoints this script wrote
        ck = torch.load(path, map_location=device, weights_only=False)
    except (OSError, RuntimeError, EOFError) as e:
        die("cannot read the checkpoint '%s': %s" % (path, e))
    if ck.get("format") != "finetune_masked-v1":
        die("'%s' is not a checkpoint of this script" % path)
    if ck["masks_sha256"] != masks_sha:
        die("'%s' was trained with other masks (sha256 %.12s, these are %.12s)" % (path, ck["masks_sha256"], masks_sha))
    if ck["model_sha256"] != model_sha:
        log("finetune_masked: note: '%s' started from another --model file than this one (same masks)" % path)
    changed = ["--%s %s (was %s)" % (k.replace("_", "-"), getattr(args, k), ck["args"].get(k))
               for k in SCHEDULE_ARGS if ck["args"].get(k) != getattr(args, k)]
    if changed:
        log("finetune_masked: resuming with other settings than the checkpoint's: " + ", ".join(changed))
    return ck


def preprocessing(args, meta):
    pp = (json_meta(meta, "lpvit") or {}).get("preprocess") or {}
    mean = args.mean or pp.get("mean")
    std = args.std or pp.get("std")
    if not mean or not std:
        die("the preprocessing of '%s' is not recorded (no lpvit metadata): give --mean and --std "
            "(augreg ViT: 0.5 0.5 0.5 and 0.5 0.5 0.5; DeiT: 0.485 0.456 0.406 and 0.229 0.224 0.225)" % args.model)
    return {"img_size": int(pp.get("img_size", 224)), "crop_pct": pp.get("crop_pct", 0.9),
            "interpolation": pp.get("interpolation", "bicubic"), "mean": [float(v) for v in mean],
            "std": [float(v) for v in std]}


def load_teacher(path, heads, device):
    w, meta = read_safetensors(path)
    arch = json_meta(meta, "lpvit.arch") or {}
    for name in sorted(k[: -len(".bsr_values")] for k in w if k.endswith(".bsr_values")):
        vals, cols, rows = bsr_arrays(w, name)
        out, inp = linear_shape(name, w, arch)
        w[name] = bsr_to_dense(path, name, vals, cols, rows, out, inp)[0]
    if "cls_token" not in w:
        die("'%s' is not a timm-named DeiT/ViT (no cls_token)" % path)
    H, eps = heads_and_eps(w, arch, heads)
    m = torch_deit.from_timm(w, H, eps).to(device).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def train(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    for p in (args.model, args.masks, args.teacher):
        if p and not os.path.isfile(p):
            die("'%s' is not a file" % p)
    for p in (args.model, args.masks, args.teacher):
        if p and os.path.exists(args.out) and os.path.samefile(p, args.out):
            die("--out '%s' is an input: this script never overwrites an input" % args.out)
    masks_path = args.masks or args.model
    w, masks, meta, mmeta, arch = load_pruned(args.model, masks_path)
    pp = preprocessing(args, meta if json_meta(meta, "lpvit") else mmeta)
    H, eps = heads_and_eps(w, arch, args.heads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model, names, impl = build_model(w, H, eps, args.impl)
    model.to(device)
    mk = Masks(model, names, masks, device)
    mk.check("the pruned model")  # zeros where the masks prune: the BSR file's own dense form

    synsets = read_synsets(args.synsets)
    ds = ImageFolder(args.train_dir, synsets, TrainTransform(pp["img_size"], pp["mean"], pp["std"], (args.scale_min, 1.0)),
                     args.limit)
    if max(lbl for _, lbl in ds.items) >= w["head.weight"].shape[0]:
        die("'%s' has classes past the model's %d" % (args.train_dir, w["head.weight"].shape[0]))
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=len(ds) > args.batch_size,
                                         num_workers=args.workers, worker_init_fn=seed_worker,
                                         persistent_workers=False, pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader)
    total = args.epochs * steps_per_epoch
    warmup = int(round(args.warmup_epochs * steps_per_epoch))
    teacher = load_teacher(args.teacher, args.teacher_heads, device) if args.teacher else None
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999))

    model_sha, masks_sha = sha256(args.model), sha256(masks_path)
    ckpt_path = args.checkpoint or args.out + ".ckpt"
    state = {"format": "finetune_masked-v1", "args": vars(args), "model_sha256": model_sha, "masks_sha256": masks_sha,
             "history": [], "wall_s": 0.0}
    step = 0
    if args.resume:
        ck = load_checkpoint(args.resume, args, model_sha, masks_sha, device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, state["history"], state["wall_s"] = ck["step"], ck["history"], ck["wall_s"]
        torch.set_rng_state(ck["rng"]["torch"])
        random.setstate(ck["rng"]["python"])
        mk.check("the checkpoint")
        log("resumed from '%s' at step %d of %d" % (args.resume, step, total))

    log("fine-tuning '%s' (%s model on %s, %d threads): %d masked layers, %d images, %d epochs of %d steps (batch %d), "
        "lr %g, %s" % (args.model, impl, device, torch.get_num_threads(), len(masks), len(ds), args.epochs,
                       steps_per_epoch, args.batch_size, args.lr,
                       "distilling from '%s' (alpha %g, T %g)" % (args.teacher, args.alpha, args.temperature)
                       if teacher else "labels only"))
    t_start = time.time() - state["wall_s"]
    interrupted = []
    old_int = signal.signal(signal.SIGINT, lambda *_: interrupted.append(1))  # finish the step, then checkpoint
    try:
        while step < total and not interrupted:
            epoch = step // steps_per_epoch
            left = steps_per_epoch - step % steps_per_epoch  # a resumed epoch runs only its remaining steps
            model.train()
            bar = Progress(left, "epoch %d/%d" % (epoch + 1, args.epochs))
            sums, seen, correct, t0 = [0.0, 0.0, 0.0], 0, 0, time.time()
            for i, (x, y) in enumerate(loader):
                if i >= left or interrupted:
                    break
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                lr = lr_at(step, total, warmup, args.lr, args.min_lr)
                for g in opt.param_groups:
                    g["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                    s = model(x)
                    with torch.no_grad():
                        t = teacher(x) if teacher is not None else None
                    loss, ce, kd = distill_loss(s.float(), None if t is None else t.float(), y, args.alpha,
                                                args.temperature, args.smoothing)
                if not torch.isfinite(loss):
                    die("the loss is %s at step %d: lower --lr" % (loss.item(), step))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                mk.mask_grads()
                opt.step()
                mk.apply()
                step += 1
                n = y.shape[0]
                seen += n
                correct += int((s.argmax(-1) == y).sum())
                for k, v in enumerate((loss, ce, kd)):
                    sums[k] += float(v) * n
                bar.update(i + 1, sums[0] / seen, lr, seen)
                if args.ckpt_every and step % args.ckpt_every == 0 and step < total:
                    state["wall_s"] = time.time() - t_start
                    save_checkpoint(ckpt_path, model, opt, step, state, mk)
            bar.done()
            if seen:
                rec = {"epoch": epoch + 1, "step": step, "loss": sums[0] / seen, "ce": sums[1] / seen,
                       "kd": sums[2] / seen if teacher else None, "train_top1": 100.0 * correct / seen,
                       "lr": lr, "seconds": time.time() - t0, "images": seen}
                state["history"].append(rec)
                log("epoch %d/%d: loss %.4f (ce %.4f%s), top-1 on the augmented batches %.1f %%, %d images in %.0f s "
                    "(%.1f img/s)" % (epoch + 1, args.epochs, rec["loss"], rec["ce"],
                                      ", kd %.4f" % rec["kd"] if teacher else "", rec["train_top1"], seen,
                                      rec["seconds"], seen / max(rec["seconds"], 1e-9)))
            state["wall_s"] = time.time() - t_start
            save_checkpoint(ckpt_path, model, opt, step, state, mk)
    finally:
        signal.signal(signal.SIGINT, old_int)
    if interrupted:
        log("interrupted at step %d of %d: checkpoint '%s' (continue with --resume %s)" % (step, total, ckpt_path,
                                                                                           ckpt_path))
        sys.exit(130)

    mk.check("the output")
    out_w = timm_state(model.cpu(), names)
    for name, emask in masks.items():  # the same check on the very arrays that are written
        if np.count_nonzero(out_w[name][~emask]):
            raise RuntimeError("'%s' has nonzero weights in pruned blocks" % name)
    lpvit_meta = json_meta(meta, "lpvit") or json_meta(mmeta, "lpvit") or {}
    settings = {k: getattr(args, k) for k in SCHEDULE_ARGS}
    settings.update({
        "masks_from": {"path": masks_path, "sha256": masks_sha},
        "model_from": {"path": args.model, "sha256": model_sha},
        "teacher": {"path": args.teacher, "sha256": sha256(args.teacher)} if args.teacher else None,
        "train_dir": args.train_dir, "train_images": len(ds), "steps": step, "warmup_steps": warmup,
        "optimizer": "adamw", "schedule": "cosine, linear warmup, per step", "masked_layers": len(masks),
        "augment": "random resized crop (scale %g-1, bicubic) + horizontal flip" % args.scale_min,
        "impl": impl, "device": device.type, "amp": args.amp, "torch": torch.__version__,
        "wall_s": round(time.time() - t_start, 1), "history": state["history"],
    })
    out_meta = {
        "lpvit.arch": json.dumps({"heads": H, "ln_eps": eps, "patch": int(w["patch_embed.proj.weight"].shape[2]),
                                  "chans": int(w["patch_embed.proj.weight"].shape[1]),
                                  "arch": arch.get("arch", "") or lpvit_meta.get("source_model", {}).get("arch", "")}),
        "lpvit": json.dumps({"format": "lpvit-finetuned-dense-v1", "source_model": lpvit_meta.get("source_model"),
                             "preprocess": pp, "pruning": lpvit_meta.get("pruning"), "finetune": settings}),
    }
    write_safetensors(args.out, out_w, out_meta)
    log("wrote '%s' (%d steps, %.0f s); next: lpvit import --model %s --masks-from %s --out PRUNED-FT.safetensors"
        % (args.out, step, time.time() - t_start, args.out, masks_path))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="lpvit's pruned file (BSR), or its --dense-masked export with --masks")
    p.add_argument("--masks", help="the pruned BSR file the masks come from (default: --model)")
    p.add_argument("--train-dir", required=True, help="ImageFolder of training images (DIR/<wnid>/*.JPEG)")
    p.add_argument("--out", required=True, help="output .safetensors: dense, timm names, zeros in pruned blocks")
    p.add_argument("--teacher", help="dense model to distill from (timm-named .safetensors, e.g. the unpruned one)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--min-lr", type=float, default=1e-6, help="learning rate at the end of the cosine (default 1e-6)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warmup (default 1 epoch)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the distillation term (default 0.9)")
    p.add_argument("--temperature", type=float, default=2.0, help="distillation temperature (default 2)")
    p.add_argument("--smoothing", type=float, default=0.0, help="label smoothing of the CE term (default 0)")
    p.add_argument("--scale-min", type=float, default=0.08, help="RandomResizedCrop's smallest area (default 0.08)")
    p.add_argument("--mean", type=float, nargs=3, help="normalization mean (default: the pruned file's)")
    p.add_argument("--std", type=float, nargs=3, help="normalization std (default: the pruned file's)")
    p.add_argument("--heads", type=int, help="attention heads (default: the file's lpvit.arch, else by width)")
    p.add_argument("--teacher-heads", type=int, help="the teacher's attention heads (default: its lpvit.arch, else by width)")
    p.add_argument("--synsets", default=os.path.join(ROOT, "models", "synset_words.txt"),
                   help="class order, one wnid per line (default: models/synset_words.txt)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all)")
    p.add_argument("--workers", type=int, default=2, help="image decoding processes (default 2)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPUs)")
    p.add_argument("--impl", choices=("auto", "timm", "torch_deit"), default="auto",
                   help="the model code: timm when it imports (auto), or scripts/torch_deit.py")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="checkpoint path (default: OUT.ckpt)")
    p.add_argument("--ckpt-every", type=int, default=0, help="also checkpoint every N steps (default: epoch ends)")
    p.add_argument("--resume", help="continue from this checkpoint")
    args = p.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0 or not 0 <= args.alpha <= 1 or not args.temperature > 0:
        p.error("--epochs, --batch-size, --lr and --temperature must be positive, --alpha in [0, 1]")
    train(args)


if __name__ == "__main__":
    main()

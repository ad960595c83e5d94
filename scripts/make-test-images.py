#!/usr/bin/env python3
"""Writes the small committed test/demo image set tests/data/imagenet-mini (deterministic):
an ImageFolder of 4 ImageNet classes x 3 images covering what the decoder must handle
(baseline and progressive JPEG, RGB/grey/RGBA/palette PNG, CMYK JPEG, odd sizes), plus
tests/data/flat (the same images flat, with a labels file). Re-run only to change the set;
the outputs are committed so tests need no Python. It needs numpy and PIL (Debian's python3-numpy and
python3-pil, which import only under the system python):
  "$(. scripts/lib.sh; lpv_python numpy PIL)" scripts/make-test-images.py
With Debian 12's numpy 1.24 and Pillow 9.4 it rewrites the committed files byte for byte; other
versions of Pillow (its JPEG and zlib encoders) or of numpy's generator may write different bytes."""
import os, shutil, sys
import numpy as np
from PIL import Image

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")
mini = os.path.join(root, "imagenet-mini")
flat = os.path.join(root, "flat")
for d in (mini, flat):
    shutil.rmtree(d, ignore_errors=True)
rng = np.random.default_rng(0)
syn = [l.split()[0] for l in open(os.path.join(root, "..", "..", "models", "synset_words.txt"))]
classes = [0, 1, 407, 999]


def pattern(w, h, k):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 120 * np.sin(x / (7 + k) + k)
    g = 127 + 120 * np.cos(y / (5 + 2 * k))
    b = 255 * ((x + y + 13 * k) % 64 < 32)
    img = np.stack([r, g, b], -1) + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


labels = []
n = 0
for ci, c in enumerate(classes):
    d = os.path.join(mini, syn[c])
    os.makedirs(d)
    for k in range(3):
        w, h = [(96, 72), (61, 83), (128, 128)][k]
        im = pattern(w, h, ci * 3 + k)
        kind = (ci * 3 + k) % 6
        if kind == 0:
            name, save = "img%d.JPEG" % n, lambda p: im.save(p, quality=90)
        elif kind == 1:
            name, save = "img%d.png" % n, lambda p: im.save(p)
        elif kind == 2:
            name, save = "img%d.jpg" % n, lambda p: im.convert("L").save(p, quality=85, progressive=True)
        elif kind == 3:
            name, save = "img%d.PNG" % n, lambda p: im.convert("RGBA").save(p)
        elif kind == 4:
            name, save = "img%d.jpeg" % n, lambda p: im.convert("CMYK").save(p, quality=90)
        else:
            name, save = "img%d.png" % n, lambda p: im.convert("P").save(p)
        save(os.path.join(d, name))
        labels.append((name, c))
        n += 1
os.makedirs(flat)
for ci, c in enumerate(classes):
    for f in sorted(os.listdir(os.path.join(mini, syn[c]))):
        shutil.copy(os.path.join(mini, syn[c], f), os.path.join(flat, f))
with open(os.path.join(root, "flat_labels.txt"), "w") as f:
    for name, c in labels:
        f.write("%s %d\n" % (name, c))
print("wrote %d images to %s" % (n, mini), file=sys.stderr)

#!/usr/bin/env python3
"""PIL's decoded pixels, the reference of lpvit's decoder (tests/golden/test_jpeg_pil.c runs it).

  pil_pixels.py OUT [--pick N DIR]... [--variants SRC]... [FILE]...

For every image, OUT/NNN.rgb gets the raw bytes of Image.open(f).convert('RGB') (h, w, 3) and OUT/index.txt a
tab-separated line "NNN ok W H MODE PATH", or "NNN error - - - PATH MESSAGE" when PIL cannot decode it (lpvit
must then fail too). Images, in this order:
  --pick N DIR    N images spread evenly over DIR's sorted *.JPEG/*.jpg/*.png files (recursive)
  --variants SRC  SRC re-encoded by PIL into OUT/variants/: the JPEG kinds a dataset may hold (progressive,
                  grey, CMYK and YCCK with Adobe markers, 4:4:4 / 4:2:2 / 4:2:0, odd sizes, EXIF rotation) and
                  broken ones (truncated, missing end marker, corrupt scan data), and PNG modes
  FILE            as they are
Needs PIL only (Debian: python3-pil); exits 2 on bad usage.
"""
import io
import os
import sys

from PIL import Image

IMAGE_EXT = (".jpeg", ".jpg", ".png")


def pick(n, d):
    files = []
    for root, dirs, names in os.walk(d):
        dirs.sort()
        files += [os.path.join(root, f) for f in sorted(names) if f.lower().endswith(IMAGE_EXT)]
    files.sort()
    if n >= len(files):
        return files
    return [files[i * len(files) // n] for i in range(n)]


def jpeg_bytes(im, **kw):
    b = io.BytesIO()
    im.save(b, "JPEG", **kw)
    return b.getvalue()


def adobe_transform(data, t):
    """The file with its Adobe APP14 marker's transform flag set to t (0 CMYK, 2 YCCK)."""
    i = data.find(b"\xff\xee")
    if i < 0 or data[i + 4:i + 9] != b"Adobe":
        raise SystemExit("pil_pixels.py: PIL wrote no Adobe marker for CMYK")
    j = i + 4 + 11  # "Adobe", version (2), flags0 (2), flags1 (2), transform
    return data[:j] + bytes([t]) + data[j + 1:]


def corrupt(data):
    """Every 97th byte of the second half of the scan flipped (markers kept intact): libjpeg warns and goes on."""
    b = bytearray(data)
    for k in range(len(b) // 2, len(b) - 2, 97):
        if b[k] != 0xFF and b[k - 1] != 0xFF:
            b[k] ^= 0x5A
            if b[k] == 0xFF:
                b[k] = 0xFE
    return bytes(b)


def variants(src, out):
    """Writes SRC's variants into out/ and returns their paths."""
    os.makedirs(out, exist_ok=True)
    base = os.path.splitext(os.path.basename(src))[0]
    im = Image.open(src).convert("RGB")
    odd = im.crop((3, 5, 3 + min(im.width - 3, 97), 5 + min(im.height - 5, 61)))  # sizes not multiples of 16
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90; PIL's convert (and timm) ignore it
    baseline = jpeg_bytes(im, quality=90)
    cmyk = jpeg_bytes(im.convert("CMYK"), quality=90)
    files = {
        "q75-420.jpg": jpeg_bytes(im, quality=75),
        "q95-444.jpg": jpeg_bytes(im, quality=95, subsampling=0),
        "q90-422.jpg": jpeg_bytes(im, quality=90, subsampling=1),
        "q100-optimized.jpg": jpeg_bytes(im, quality=100, optimize=True),
        "progressive.jpg": jpeg_bytes(im, quality=85, progressive=True),
        "progressive-444.jpg": jpeg_bytes(im, quality=85, progressive=True, subsampling=0),
        "odd-420.jpg": jpeg_bytes(odd, quality=80),
        "odd-progressive.jpg": jpeg_bytes(odd, quality=80, progressive=True),
        "grey.jpg": jpeg_bytes(im.convert("L"), quality=90),
        "grey-progressive.jpg": jpeg_bytes(im.convert("L"), quality=90, progressive=True),
        "cmyk-adobe.jpg": adobe_transform(cmyk, 0),
        "ycck-adobe.jpg": adobe_transform(cmyk, 2),
        "cmyk-progressive.jpg": jpeg_bytes(im.convert("CMYK"), quality=90, progressive=True),
        "exif-rotated.jpg": jpeg_bytes(im, quality=90, exif=exif),
        "corrupt-scan.jpg": corrupt(baseline),
        "no-eoi.jpg": baseline[:-2],
        "truncated.jpg": baseline[:len(baseline) * 2 // 3],
        "truncated-progressive.jpg": jpeg_bytes(im, quality=85, progressive=True)[:1500],
    }
    for mode in ("RGB", "RGBA", "L", "LA", "P"):
        b = io.BytesIO()
        (im.convert(mode) if mode != "P" else im.quantize(64)).save(b, "PNG")
        files["png-%s.png" % mode] = b.getvalue()
    paths = []
    for name, data in files.items():
        p = os.path.join(out, "%s-%s" % (base, name))
        with open(p, "wb") as f:
            f.write(data)
        paths.append(p)
    return paths


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    out, args, files = argv[1], argv[2:], []
    i = 0
    while i < len(args):
        if args[i] == "--pick" and i + 2 < len(args):
            files += pick(int(args[i + 1]), args[i + 2])
            i += 3
        elif args[i] == "--variants" and i + 1 < len(args):
            files += variants(args[i + 1], os.path.join(out, "variants"))
            i += 2
        elif args[i].startswith("--"):
            sys.stderr.write("pil_pixels.py: unknown option or missing value: %s\n" % args[i])
            return 2
        else:
            files.append(args[i])
            i += 1
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "index.txt"), "w") as idx:
        for n, p in enumerate(files):
            try:
                with Image.open(p) as im:
                    mode = im.mode
                    rgb = im.convert("RGB")
            except Exception as e:  # what PIL refuses, lpvit must refuse
                msg = " ".join(str(e).split()) or type(e).__name__
                idx.write("%03d\terror\t-\t-\t-\t%s\t%s\n" % (n, p, msg))
                continue
            with open(os.path.join(out, "%03d.rgb" % n), "wb") as f:
                f.write(rgb.tobytes())
            idx.write("%03d\tok\t%d\t%d\t%s\t%s\n" % (n, rgb.width, rgb.height, mode, p))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

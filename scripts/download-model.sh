#!/usr/bin/env bash
# Downloads a preset's official weights (timm's safetensors on the Hugging Face hub) into
# $LPVIT_MODELS or models/, then checks them with `lpvit inspect`: the file must parse and
# hold exactly the preset's tensor data (models/registry.json: data_bytes).
#   scripts/download-model.sh deit_b        # -> models/deit_base_patch16_224.safetensors
# Needs internet (not run in CI) and curl or wget.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ $# -eq 1 ] || { echo "usage: scripts/download-model.sh PRESET   (presets: see models/registry.json)" >&2; exit 2; }
name=$1
py=$(lpv_python) || exit 1   # the registry and the size check: python's json, standard library only
read -r file url bytes < <("$py" - "$name" <<'PY'
import json, sys
reg = json.load(open("models/registry.json"))["presets"]
name = sys.argv[1]
for key, p in reg.items():
    if name == key or name in p["aliases"]:
        print(p["file"], p["url"], p["data_bytes"]); break
else:
    sys.exit("download-model.sh: unknown preset '%s' (known: %s)" % (name, ", ".join(reg)))
PY
)
dest_dir=${LPVIT_MODELS:-models}
mkdir -p "$dest_dir"
dest="$dest_dir/$file"
if [ -f "$dest" ]; then echo "already present: $dest" >&2; exit 0; fi
tmp="$dest.download.$$"
trap 'rm -f "$tmp"' EXIT
echo "downloading $url -> $dest" >&2
if command -v curl >/dev/null; then curl -fL --retry 3 -o "$tmp" "$url"
elif command -v wget >/dev/null; then wget -O "$tmp" "$url"
else echo "download-model.sh: need curl or wget" >&2; exit 1; fi
lpv_build
build/lpvit inspect --json - "$tmp" > "$tmp.json"
got=$("$py" -c "import json,sys; d=json.load(open(sys.argv[1])); import functools,operator
sz={'F32':4,'F16':2,'BF16':2}
print(sum(functools.reduce(operator.mul, t['shape'], 1)*sz.get(t['dtype'],0) for t in d['tensors']))" "$tmp.json")
rm -f "$tmp.json"
if [ "$got" != "$bytes" ]; then
  echo "download-model.sh: '$url' holds $got bytes of tensor data, expected $bytes" >&2; exit 1
fi
mv "$tmp" "$dest"
trap - EXIT
echo "ok: $dest ($bytes bytes of F32 weights)" >&2

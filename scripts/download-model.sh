#!/usr/bin/env bash
# Downloads a preset's official weights (timm's safetensors on the Hugging Face hub) into
# $LPVIT_MODELS or models/, and keeps them only when they are exactly the published file:
#   1. the SHA-256 matches: the one given with --sha256, else the registry's (models/registry.json:
#      "sha256"), else the one the hub publishes for the file (its x-linked-etag header, the LFS
#      object id); when none can be learned the download is refused, never kept unchecked;
#   2. `lpvit inspect` parses it and it holds exactly the preset's tensor data (registry: data_bytes).
#   scripts/download-model.sh deit_b                 # -> models/deit_base_patch16_224.safetensors
#   scripts/download-model.sh deit_b --url MIRROR_URL --sha256 HEX   # from a mirror
# Options: --url URL (another source, e.g. a mirror or file://), --sha256 HEX, --lpvit PATH (the lpvit
# binary that checks the file; default build/lpvit, built when stale).
# Needs internet (not run in CI, except on a file:// URL in tests/e2e/download_model_e2e.sh) and curl or wget.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
usage() { echo "usage: scripts/download-model.sh PRESET [--url URL] [--sha256 HEX] [--lpvit PATH]   (presets: see models/registry.json)" >&2; exit 2; }
name="" url_opt="" sha_opt="" lpvit=""
while [ $# -gt 0 ]; do
  case "$1" in
    --url) [ $# -ge 2 ] || usage; url_opt=$2; shift 2 ;;
    --sha256) [ $# -ge 2 ] || usage; sha_opt=$(printf '%s' "$2" | tr 'A-F' 'a-f'); shift 2 ;;
    --lpvit) [ $# -ge 2 ] || usage; lpvit=$2; shift 2 ;;
    -*) echo "download-model.sh: unknown option '$1'" >&2; usage ;;
    *) [ -z "$name" ] || usage; name=$1; shift ;;
  esac
done
[ -n "$name" ] || usage
if [ -n "$sha_opt" ] && ! printf '%s' "$sha_opt" | grep -Eq '^[0-9a-f]{64}$'; then
  echo "download-model.sh: --sha256: expected 64 hex digits, got '$sha_opt'" >&2; exit 2
fi
py=$(lpv_python) || exit 1   # the registry and the size check: python's json, standard library only
read -r file url bytes reg_sha < <("$py" - "$name" <<'PY'
import json, sys
reg = json.load(open("models/registry.json"))["presets"]
name = sys.argv[1]
for key, p in reg.items():
    if name == key or name in p["aliases"]:
        print(p["file"], p["url"], p["data_bytes"], p.get("sha256", "-")); break
else:
    sys.exit("download-model.sh: unknown preset '%s' (known: %s)" % (name, ", ".join(reg)))
PY
)
[ -n "$url_opt" ] && url=$url_opt
dest_dir=${LPVIT_MODELS:-models}
mkdir -p "$dest_dir"
dest="$dest_dir/$file"
if [ -f "$dest" ]; then echo "already present: $dest" >&2; exit 0; fi
tmp="$dest.download.$$"
trap 'rm -f "$tmp" "$tmp.json"' EXIT
command -v curl >/dev/null || command -v wget >/dev/null || { echo "download-model.sh: need curl or wget" >&2; exit 1; }

# the SHA-256 to expect: given, registered, or the hub's (HEAD request; LFS files carry it as x-linked-etag)
want=$sha_opt src="--sha256"
if [ -z "$want" ] && [ "$reg_sha" != "-" ]; then want=$reg_sha src="models/registry.json"; fi
if [ -z "$want" ] && [ "${url#file:}" = "$url" ]; then
  if command -v curl >/dev/null; then hdr=$(curl -sfIL --retry 3 "$url" || true)
  else hdr=$(wget -q --spider -S "$url" 2>&1 || true); fi
  want=$(printf '%s\n' "$hdr" | tr 'A-F' 'a-f' | sed -n 's/^ *x-linked-etag: *"\{0,1\}\([0-9a-f]\{64\}\)"\{0,1\}.*/\1/p' | tail -1)
  src="the hub (x-linked-etag)"
fi
if [ -z "$want" ]; then
  echo "download-model.sh: cannot learn the SHA-256 of '$url' (no --sha256, none in models/registry.json, none published by the server): give --sha256 HEX" >&2
  exit 1
fi

echo "downloading $url -> $dest" >&2
if command -v curl >/dev/null; then curl -fL --retry 3 -o "$tmp" "$url"
else wget -O "$tmp" "$url"; fi
got_sha=$(sha256sum "$tmp" | cut -d' ' -f1)
if [ "$got_sha" != "$want" ]; then
  echo "download-model.sh: '$url' has SHA-256 $got_sha, expected $want (from $src): not kept" >&2
  exit 1
fi
if [ -z "$lpvit" ]; then lpv_build; lpvit=build/lpvit; fi
"$lpvit" inspect --json - "$tmp" > "$tmp.json"
got=$("$py" -c "import json,sys; d=json.load(open(sys.argv[1])); import functools,operator
sz={'F32':4,'F16':2,'BF16':2}
print(sum(functools.reduce(operator.mul, t['shape'], 1)*sz.get(t['dtype'],0) for t in d['tensors']))" "$tmp.json")
rm -f "$tmp.json"
if [ "$got" != "$bytes" ]; then
  echo "download-model.sh: '$url' holds $got bytes of tensor data, expected $bytes" >&2; exit 1
fi
mv "$tmp" "$dest"
trap - EXIT
echo "ok: $dest ($bytes bytes of F32 weights, sha256 $got_sha)" >&2

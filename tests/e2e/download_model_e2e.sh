#!/usr/bin/env bash
# scripts/download-model.sh keeps a file only when its SHA-256 and its tensor data are the preset's:
# fetched from a file:// URL (no network in CI) into a temporary $LPVIT_MODELS, a random deit_t with
# the right --sha256 is kept; a wrong hash, no hash at all (file:// has no hub to ask), a malformed
# hash, and a file with the right hash but the wrong tensors are refused, leaving no file behind.
#   download_model_e2e.sh path/to/lpvit SOURCE_DIR
set -u
L=$1
SRC=$2
T=$(mktemp -d /tmp/lpvit_dl.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
if ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
  echo "skip: neither curl nor wget installed (scripts/install-deps.sh installs curl)"; exit 77
fi
DL="$SRC/scripts/download-model.sh"
export LPVIT_MODELS="$T/models"
dest="$T/models/deit_tiny_patch16_224.safetensors"
"$L" create-model --preset deit_t --out "$T/deit_t.safetensors" --quiet || { echo "create-model failed"; exit 1; }
"$L" create-model --preset deit_t --depth 11 --out "$T/short.safetensors" --quiet || exit 1
sha=$(sha256sum "$T/deit_t.safetensors" | cut -d' ' -f1)
other=$(sha256sum "$T/short.safetensors" | cut -d' ' -f1)
clean() { [ -z "$(ls -A "$T/models" 2>/dev/null)" ]; }

# refused: exit status, a line naming the reason, nothing left in the models folder
refused() { # name, status, text, args...
  local name=$1 want_rc=$2 text=$3; shift 3
  bash "$DL" deit_t --lpvit "$L" "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  if [ $rc -eq "$want_rc" ] && grep -q -- "$text" "$T/err" && clean; then ok
  else bad "$name: status $rc (want $want_rc), left: $(ls "$T/models" 2>/dev/null | tr '\n' ' '), stderr: $(tail -2 "$T/err")"; fi
}
refused "wrong hash" 1 "expected $other" --url "file://$T/deit_t.safetensors" --sha256 "$other"
refused "no hash to check against" 1 "cannot learn the SHA-256" --url "file://$T/deit_t.safetensors"
refused "malformed hash" 2 "expected 64 hex digits" --url "file://$T/deit_t.safetensors" --sha256 abc
refused "right hash, wrong tensors" 1 "bytes of tensor data" --url "file://$T/short.safetensors" --sha256 "$other"
refused "unknown option" 2 "unknown option" --mirror x

# kept: the right hash, in any case
up=$(printf '%s' "$sha" | tr 'a-f' 'A-F')
if bash "$DL" deit_t --lpvit "$L" --url "file://$T/deit_t.safetensors" --sha256 "$up" >"$T/out" 2>"$T/err"; then ok
else bad "right hash refused: $(tail -2 "$T/err")"; fi
cmp -s "$dest" "$T/deit_t.safetensors" && ok || bad "the kept file differs from the source"
grep -q "sha256 $sha" "$T/err" && ok || bad "the success line does not give the hash"
[ "$(ls "$T/models" | wc -l)" -eq 1 ] && ok || bad "temp files left: $(ls "$T/models")"
bash "$DL" deit_t --lpvit "$L" --url "file://$T/short.safetensors" --sha256 "$other" 2>"$T/err" && grep -q "already present" "$T/err" \
  && cmp -s "$dest" "$T/deit_t.safetensors" && ok || bad "a present model was replaced or not reported"

echo "download_model_e2e: $pass checks passed, $fails failed"
[ "$fails" -eq 0 ]

#!/usr/bin/env bash
# The fine-tuning round trip with PyTorch (skipped, exit 77, when no python3 imports torch, numpy and PIL:
# scripts/install-deps.sh --with-torch): a random 2-block model pruned on tests/data, fine-tuned by
# scripts/finetune_masked.py for a few steps with the dense model as teacher, imported with lpvit import:
# exactly the pruned file's BSR structure, other values, the fine-tune's settings and the masks' sha256 in the
# metadata, eval runs on both the fine-tuned file and the imported one. Also: a run resumed from the
# checkpoint of its first epoch ends bit for bit where a run straight through does, a checkpoint is refused
# for other masks, and a --dense-masked export needs --masks (never guessed from its zeros).
#   finetune_e2e.sh path/to/lpvit SOURCE_DIR
set -u
L=$1
SRC=$2
. "$SRC/scripts/lib.sh"
PY=$(lpv_python torch numpy PIL 2>"${TMPDIR:-/tmp}/lpvit_ft_py.$$") || {
  echo "skip: $(cat "${TMPDIR:-/tmp}/lpvit_ft_py.$$")"; rm -f "${TMPDIR:-/tmp}/lpvit_ft_py.$$"; exit 77; }
rm -f "${TMPDIR:-/tmp}/lpvit_ft_py.$$"
T=$(mktemp -d /tmp/lpvit_finetune.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
TOOL="$SRC/tests/e2e/finetune_tool.py"
MINI="$SRC/tests/data/imagenet-mini"
FTPY="$SRC/scripts/finetune_masked.py"

run() {
  local want=$1; shift
  "$@" >"$T/out" 2>"$T/err"
  local got=$?
  if [ "$got" != "$want" ]; then bad "exit $got, expected $want: $*"; sed 's/^/    /' "$T/err" | tail -5 >&2; return 1; fi
  ok
}
# a few steps: 8 images, batch 4, no worker processes (a resumed run is then bit for bit the straight one)
ft() { "$PY" "$FTPY" --train-dir "$MINI" --limit 8 --batch-size 4 --workers 0 --threads 2 --lr 1e-3 "$@"; }

M=$T/m.safetensors P=$T/p.safetensors A=$T/a.safetensors B=$T/b.safetensors Q=$T/q.safetensors
run 0 "$L" create-model --dim 64 --heads 2 --depth 2 --img 64 --seed 5 --out "$M" --quiet
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --block 16 --threads 2 --no-cache --out "$P" --quiet

# ---- fine-tune, import, evaluate ----
run 0 ft --model "$P" --teacher "$M" --epochs 2 --out "$A"
grep -q "epoch 2/2: loss" "$T/err" && ok || bad "no epoch summary: $(tail -2 "$T/err")"
[ -s "$A.ckpt" ] && ok || bad "no checkpoint '$A.ckpt'"
run 0 "$L" eval --model "$A" --imagenet-dir "$MINI" --threads 2 --quiet   # the dense file runs as it is
run 0 "$L" import --model "$A" --masks-from "$P" --out "$Q"
n=$("$PY" "$TOOL" same-blocks "$P" "$Q") && [ "$n" = 8 ] && ok || bad "the imported masks are not the pruned file's"
d=$("$PY" "$TOOL" changed "$P" "$Q") && ok || bad "fine-tuning changed no weight"
"$PY" "$TOOL" meta "$Q" >"$T/meta.json"
sha() { sha256sum "$1" | cut -d' ' -f1; }
[ "$(lpv_json "$T/meta.json" finetune.masks_from.sha256 masks_from.sha256 finetune.teacher.sha256 finetune.epochs finetune.steps)" \
  = "$(printf '%s\n' "$(sha "$P")" "$(sha "$P")" "$(sha "$M")" 2 4)" ] && ok \
  || bad "provenance: $(lpv_json "$T/meta.json" finetune.masks_from.sha256 finetune.teacher.sha256 finetune.steps | tr '\n' ' ')"
run 0 "$L" eval --model "$Q" --imagenet-dir "$MINI" --threads 2 --quiet
grep -q "^top-1" "$T/out" && ok || bad "eval of the imported model printed no top-1"
run 0 "$L" inspect "$Q"; grep -q "8 of 10 linears block-sparse" "$T/out" && ok || bad "inspect: $(grep pruned "$T/out")"

# ---- resume: one epoch, then the second from its checkpoint = two epochs straight ----
run 0 ft --model "$P" --teacher "$M" --epochs 1 --out "$B"
run 0 ft --model "$P" --teacher "$M" --epochs 2 --out "$B" --resume "$B.ckpt"
grep -q "resumed from '$B.ckpt' at step 2 of 4" "$T/err" && ok || bad "no resume line: $(grep -i resum "$T/err")"
grep -q "resuming with other settings.*--epochs 2 (was 1)" "$T/err" && ok || bad "the changed --epochs was not said"
"$PY" "$TOOL" changed "$A" "$B" >/dev/null && bad "the resumed run differs from the straight one" || ok
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.7 --block 16 --threads 2 --no-cache --out "$T/p7.safetensors" --quiet
run 1 ft --model "$T/p7.safetensors" --epochs 2 --out "$T/x.safetensors" --resume "$B.ckpt"
grep -q "was trained with other masks" "$T/err" && ok || bad "a checkpoint of other masks was not refused: $(tail -1 "$T/err")"

# ---- from the --dense-masked export: the masks must be named ----
run 0 "$L" export --model "$P" --out "$T/d.safetensors" --dense-masked --quiet
run 1 ft --model "$T/d.safetensors" --epochs 1 --out "$T/x.safetensors"
grep -q "no block-sparse layer.*give it as --masks (its metadata says it was exported from '$P')" "$T/err" && ok \
  || bad "a dense export without --masks: $(tail -1 "$T/err")"
run 0 ft --model "$T/d.safetensors" --masks "$P" --epochs 1 --out "$T/e.safetensors"
run 0 "$L" import --model "$T/e.safetensors" --masks-from "$P" --out "$T/qe.safetensors"
"$PY" "$TOOL" same-blocks "$P" "$T/qe.safetensors" >/dev/null && ok || bad "masks of the dense-masked route differ"
[ -e "$T/x.safetensors" ] && bad "a refused run wrote its output" || ok

echo "finetune_e2e: $pass passed, $fails failed"
[ "$fails" = 0 ]

#!/usr/bin/env bash
# lpvit import, without PyTorch: a random 2-block model pruned on tests/data, its --dense-masked export given
# noise on the weights the masks keep (finetune_tool.py: a stand-in for a masked fine-tune), imported back:
# exactly the pruned file's BSR structure, other values, the provenance (both files' sha256) in the metadata,
# eval runs on it; a file without metadata takes the masks file's heads; export + import is the identity. Refused, one line, exit 1, no output
# left: one nonzero weight in a pruned block (the layer and the count named), another width or depth, masks
# from a dense model. Usage errors exit 2. (finetune_e2e.sh runs the real fine-tune when torch is there.)
#   import_e2e.sh path/to/lpvit SOURCE_DIR
set -u
L=$1
SRC=$2
T=$(mktemp -d /tmp/lpvit_import.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
. "$SRC/scripts/lib.sh"
PY=$(lpv_python numpy) || { echo "skip: no python3 with numpy (scripts/install-deps.sh installs python3-numpy)"; exit 77; }
TOOL="$SRC/tests/e2e/finetune_tool.py"
MINI="$SRC/tests/data/imagenet-mini"

# run EXPECTED_CODE cmd...: stdout -> $T/out, stderr -> $T/err
run() {
  local want=$1; shift
  "$@" >"$T/out" 2>"$T/err"
  local got=$?
  if [ "$got" != "$want" ]; then bad "exit $got, expected $want: $*"; sed 's/^/    /' "$T/err" | head -5 >&2; return 1; fi
  ok
}
# exactly one stderr line, "lpvit: ...", holding every argument
one_line_err() {
  local n; n=$(wc -l <"$T/err")
  [ "$n" = 1 ] || { bad "expected one error line, got $n: $(head -3 "$T/err")"; return; }
  grep -q "^lpvit: " "$T/err" || bad "error does not start with 'lpvit: ': $(cat "$T/err")"
  for s in "$@"; do grep -qF -- "$s" "$T/err" && ok || bad "error lacks '$s': $(cat "$T/err")"; done
}

M=$T/m.safetensors P=$T/p.safetensors D=$T/d.safetensors FT=$T/ft.safetensors Q=$T/q.safetensors
run 0 "$L" create-model --dim 64 --heads 2 --depth 2 --img 64 --seed 3 --out "$M" --quiet
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --block 16 --threads 2 --no-cache --out "$P" --quiet
run 0 "$L" export --model "$P" --out "$D" --dense-masked --quiet
run 0 "$PY" "$TOOL" finetune "$P" "$D" "$FT"

# ---- the round trip ----
run 0 "$L" import --model "$FT" --masks-from "$P" --out "$Q"
grep -q "wrote '$Q'" "$T/err" && ok || bad "import said nothing about its output: $(cat "$T/err")"
n=$("$PY" "$TOOL" same-blocks "$P" "$Q") && [ "$n" = 8 ] && ok || bad "imported blocks differ from the pruned file's (or $n != 8 layers)"
"$PY" "$TOOL" changed "$P" "$Q" >/dev/null && ok || bad "the imported weights are the pruned file's"
"$PY" "$TOOL" meta "$Q" >"$T/meta.json"
[ "$(lpv_json "$T/meta.json" masks_from.sha256)" = "$(sha256sum "$P" | cut -d' ' -f1)" ] && ok || bad "masks_from.sha256 is not P's"
[ "$(lpv_json "$T/meta.json" weights_from.sha256)" = "$(sha256sum "$FT" | cut -d' ' -f1)" ] && ok || bad "weights_from.sha256 is not FT's"
[ "$(lpv_json "$T/meta.json" format pruning.block finetune)" = "$(printf '%s\n' lpvit-bsr-v1 16x16 null)" ] && ok \
  || bad "the pruned file's metadata is not kept: $(head -c 300 "$T/meta.json")"
run 0 "$L" inspect "$Q"; grep -q "8 of 10 linears block-sparse" "$T/out" && ok || bad "inspect: $(grep pruned "$T/out")"
run 0 "$L" eval --model "$Q" --imagenet-dir "$MINI" --threads 2 --quiet
grep -q "^top-1" "$T/out" && ok || bad "eval printed no top-1"
# a plain file (no metadata: no heads, no preprocessing) takes the masks file's heads; the output has P's preprocessing
run 0 "$PY" "$TOOL" finetune "$P" "$D" "$T/plain.safetensors" --no-meta
run 0 "$L" import --model "$T/plain.safetensors" --masks-from "$P" --out "$T/q2.safetensors"
grep -q "does not say its attention heads: 2" "$T/err" && ok || bad "no note about the heads: $(cat "$T/err")"
run 0 "$L" eval --model "$T/q2.safetensors" --imagenet-dir "$MINI" --threads 2 --quiet
# an untouched --dense-masked export comes back with the pruned file's weights, bit for bit; so does the pruned file
run 0 "$L" import --model "$D" --masks-from "$P" --out "$T/back.safetensors"
"$PY" "$TOOL" changed "$P" "$T/back.safetensors" >/dev/null && bad "export + import changed weights" || ok
run 0 "$L" import --model "$P" --masks-from "$P" --out "$T/same.safetensors"
"$PY" "$TOOL" changed "$P" "$T/same.safetensors" >/dev/null && bad "importing P onto its own masks changed weights" || ok

# ---- refusals: exit 1, one line, nothing written ----
run 0 "$PY" "$TOOL" finetune "$P" "$D" "$T/poked.safetensors" --poke blocks.1.mlp.fc1.weight
run 1 "$L" import --model "$T/poked.safetensors" --masks-from "$P" --out "$T/r.safetensors"
one_line_err "'$T/poked.safetensors': layer 'blocks.1.mlp.fc1' has 1 of its" "pruned blocks not exactly zero" "'$P'"
run 1 "$L" import --model "$M" --masks-from "$P" --out "$T/r.safetensors"   # the dense model: nothing pruned
one_line_err "layer 'blocks.0.attn.qkv' has" "more layers too"
run 0 "$L" create-model --dim 32 --heads 2 --depth 2 --img 64 --out "$T/w32.safetensors" --quiet
run 1 "$L" import --model "$T/w32.safetensors" --masks-from "$P" --out "$T/r.safetensors"
one_line_err "'$T/w32.safetensors' is not the architecture of '$P': width 32 vs 64"
run 0 "$L" create-model --dim 64 --heads 2 --depth 3 --img 64 --out "$T/d3.safetensors" --quiet
run 1 "$L" import --model "$T/d3.safetensors" --masks-from "$P" --out "$T/r.safetensors"
one_line_err "depth 3 vs 2"
run 1 "$L" import --model "$FT" --masks-from "$M" --out "$T/r.safetensors"
one_line_err "'$M' has no block-sparse layer"
run 1 "$L" import --model "$T/nothing.safetensors" --masks-from "$P" --out "$T/r.safetensors"
one_line_err "nothing.safetensors"
[ -e "$T/r.safetensors" ] && bad "a refused import left '$T/r.safetensors'" || ok
ls "$T" | grep -q '\.tmp\.' && bad "temp files left: $(ls "$T" | grep '\.tmp\.')" || ok

# ---- usage errors: exit 2 ----
run 2 "$L" import --model "$FT" --out "$T/r.safetensors"; one_line_err "--masks-from is required"
run 2 "$L" import --model "$FT" --masks-from "$P" --out "$P"; one_line_err "never overwrites an input"
run 2 "$L" import --model "$FT" --masks-from "$P" --out "$FT"; one_line_err "never overwrites an input"
run 0 "$L" import --help; grep -q -- "--masks-from" "$T/out" && ok || bad "import --help lacks --masks-from"

echo "import_e2e: $pass passed, $fails failed"
[ "$fails" = 0 ]

#!/usr/bin/env bash
# Accuracy and file size of per-layer shared codebooks (lpvit quantize --codebook K) on the real models of
# ../shared/data, against FP32 and int8, on imagenet-val-1000:
#   scripts/bench-codebook.sh [--k "256 64 16 4"] [--pruned P.safetensors ...] [--threads N] [--out DIR]
# Each --pruned file (e.g. from scripts/bench-prune.sh) gets the same rows; --deit adds the real DeiT-Tiny.
# Prints a markdown table (also in OUT/bench-codebook.md): model, weights, top-1/top-5 rounded to nearest, the
# same grid with GPTQ's rounding (lpvit quantize --calib-dir, --calib-size images of imagenet-calib-1000), file
# size, and the codebook file run in int8 on top (--precision int8: the decoded weights re-quantized per row,
# what a user of the small file gets at int8 speed).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ks="256 64 16 4"; threads=$(nproc); out=out/bench-codebook; data=""; pruned=(); calib_size=256; deit=0
while [ $# -gt 0 ]; do
  case "$1" in
    --k) ks=$2; shift 2 ;; --pruned) pruned+=("$2"); shift 2 ;; --threads) threads=$2; shift 2 ;;
    --out) out=$2; shift 2 ;; --data) data=$2; shift 2 ;; --calib-size) calib_size=$2; shift 2 ;;
    --deit) deit=1; shift ;;
    *) echo "bench-codebook.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ -n "$data" ] || data=$(lpv_data_dir) || exit 2
lpv_build || exit 2
L=build/lpvit
val="$data/imagenet-val-1000"
mkdir -p "$out"
table="$out/bench-codebook.md"
acc() { printf '%.1f / %.1f' "$(lpv_json "$1" top1)" "$(lpv_json "$1" top5)"; }
mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
ev() { # model json [flags]
  local m=$1 j=$2; shift 2
  $L eval --model "$m" --imagenet-dir "$val" --threads "$threads" --json "$j" --quiet "$@" >/dev/null
}
{
  echo "$($L --version | head -1)"
  echo
  echo "| model | weights | top-1 / top-5 | top-1 / top-5, GPTQ rounding | file | top-1 / top-5 run in int8 |"
  echo "|---|---|---|---|---|---|"
} >"$table"
gptq() { # model out [quantize flags]: the same grid, GPTQ's rounding
  local m=$1 o=$2; shift 2
  $L quantize --model "$m" --out "$o" --calib-dir "$data/imagenet-calib-1000" --calib-size "$calib_size" \
    --threads "$threads" --quiet "$@" >/dev/null
}
row() { # name model tag
  local name=$1 m=$2 tag=$3
  echo "$name: fp32, int8" >&2
  ev "$m" "$out/$tag-fp32.json"
  ev "$m" "$out/$tag-int8.json" --precision int8
  echo "| $name | FP32 | $(acc "$out/$tag-fp32.json") | - | $(mb "$m") | $(acc "$out/$tag-int8.json") |" >>"$table"
  $L quantize --model "$m" --out "$out/$tag-q8.safetensors" --quiet
  gptq "$m" "$out/$tag-q8g.safetensors"
  ev "$out/$tag-q8g.safetensors" "$out/$tag-q8g.json"
  echo "| $name | int8, a scale per row | $(acc "$out/$tag-int8.json") | $(acc "$out/$tag-q8g.json") | $(mb "$out/$tag-q8.safetensors") | - |" >>"$table"
  for k in $ks; do
    echo "$name: codebook $k" >&2
    $L quantize --model "$m" --codebook "$k" --out "$out/$tag-cb$k.safetensors" --quiet
    ev "$out/$tag-cb$k.safetensors" "$out/$tag-cb$k.json"
    ev "$out/$tag-cb$k.safetensors" "$out/$tag-cb$k-int8.json" --precision int8
    gptq "$m" "$out/$tag-cb${k}g.safetensors" --codebook "$k"
    ev "$out/$tag-cb${k}g.safetensors" "$out/$tag-cb${k}g.json"
    echo "| $name | codebook, $k levels per layer | $(acc "$out/$tag-cb$k.json") | $(acc "$out/$tag-cb${k}g.json") | $(mb "$out/$tag-cb$k.safetensors") | $(acc "$out/$tag-cb$k-int8.json") |" >>"$table"
  done
}
row "ViT-Tiny" "$data/vit_tiny_patch16_224.safetensors" vit
[ "$deit" = 1 ] && row "DeiT-Tiny" "$data/deit_tiny_patch16_224.ln-rounded.safetensors" deit
i=0
for p in "${pruned[@]}"; do
  i=$((i + 1))
  row "$(basename "$p" .safetensors)" "$p" "pruned$i"
done
cat "$table"

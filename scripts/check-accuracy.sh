#!/usr/bin/env bash
# Accuracy gates on ../shared/data (real ImageNet-trained models and images), run by
# scripts/test.sh when the data is present: an accuracy regression fails CI.
#   dense ViT-Tiny, 1000 val images: top-1 within 0.5 of the PyTorch reference (82.10)
#   dense DeiT-Tiny (LN-rounded), 1000 val images: top-1 within 0.5 of 81.00
# The data: $LPVIT_DATA, else ../shared/data. build/lpvit is (re)built first when older than its sources.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
DATA=$(lpv_data_dir) || exit 2
lpv_build || exit 2
L=build/lpvit
out=$(mktemp -d /tmp/lpvit_acc.XXXXXX)
trap 'rm -rf "$out"' EXIT
fail=0
gate() { # name json reference
  local top1
  top1=$(lpv_json "$2" top1)
  if lpv_near "$top1" "$3" 0.5; then
    echo "ok   $1: top-1 $top1 (reference $3, allowed +-0.5)"
  else
    echo "FAIL $1: top-1 $top1, reference $3, allowed +-0.5"; fail=1
  fi
}
$L eval --model "$DATA/vit_tiny_patch16_224.safetensors" --imagenet-dir "$DATA/imagenet-val-1000" \
  --json "$out/vit.json" --quiet >/dev/null
gate "ViT-Tiny dense" "$out/vit.json" 82.10
$L eval --model deit_t --weights "$DATA/deit_tiny_patch16_224.ln-rounded.safetensors" \
  --imagenet-dir "$DATA/imagenet-val-1000" --json "$out/deit.json" --quiet >/dev/null
gate "DeiT-Tiny dense" "$out/deit.json" 81.00
exit $fail

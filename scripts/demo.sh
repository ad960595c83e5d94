#!/usr/bin/env bash
# The main job on a small bundled default (README command 1): install dependencies, build,
# make a random-weight DeiT-Tiny-shaped model, prune it to half its FLOPs with calibration on the
# committed mini ImageFolder (tests/data/imagenet-mini), evaluate dense and pruned, and measure the
# pruned model's speedup. A random model's accuracy is meaningless; the point is to watch the
# whole pipeline run in about a minute. When the shared data is present ($LPVIT_DATA, else
# ../shared/data: the project's real ViT-Tiny and ImageNet images), it also prunes the real model
# (target 0.9, 128 calibration images) and prints the accuracy kept on 300 validation images.
#   scripts/demo.sh [--no-install]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ "${1:-}" = "--no-install" ] || scripts/install-deps.sh --minimal
lpv_build
out=out/demo
mkdir -p "$out"
L=build/lpvit
echo "== create a random DeiT-Tiny-shaped model (4 blocks)"
$L create-model --preset deit_t --depth 4 --seed 0 --out "$out/tiny.safetensors"
echo "== eval on tests/data/imagenet-mini (12 images, 4 classes)"
$L eval --model "$out/tiny.safetensors" --imagenet-dir tests/data/imagenet-mini --batch 12 --json "$out/eval.json"
echo "== infer: top-5 classes of one image"
$L infer --model "$out/tiny.safetensors" tests/data/imagenet-mini/n01440764/img0.JPEG --quiet
echo "== prune to 50% of the FLOPs (taylor2 saliency, greedy allocator, 32x32 blocks)"
$L prune --model "$out/tiny.safetensors" --calib-dir tests/data/imagenet-mini --calib-size 12 --target-flops 0.5 \
  --out "$out/tiny-pruned.safetensors" --json "$out/prune.json" --cache-dir "$out/cache"
echo "== eval the pruned model (BSR engine)"
$L eval --model "$out/tiny-pruned.safetensors" --imagenet-dir tests/data/imagenet-mini --batch 12 --json "$out/eval-pruned.json"
echo "== measured speedup, dense vs pruned, one run"
$L bench --model "$out/tiny.safetensors" --pruned "$out/tiny-pruned.safetensors" --batch 8 --reps 5 --no-layers \
  --json "$out/bench.json" --quiet | sed -n '/end to end/,/speedup/p'
D=$(lpv_data_dir 2>/dev/null) || D=""
if [ -n "$D" ] && [ -f "$D/vit_tiny_patch16_224.safetensors" ]; then
  echo "== real ViT-Tiny ($D): prune to 90% of the FLOPs, eval dense and pruned on 300 images"
  $L prune --model "$D/vit_tiny_patch16_224.safetensors" --calib-dir "$D/imagenet-calib-1000" --calib-size 128 \
    --target-flops 0.9 --out "$out/vit_tiny-pruned.safetensors" --json "$out/vit_tiny-prune.json" \
    --cache-dir "$out/cache" --quiet | tail -4
  for m in "$D/vit_tiny_patch16_224.safetensors" "$out/vit_tiny-pruned.safetensors"; do
    $L eval --model "$m" --imagenet-dir "$D/imagenet-val-1000" --limit 300 --quiet | grep -E '^(model|pruned|top-1) '
  done
  $L bench --model "$D/vit_tiny_patch16_224.safetensors" --pruned "$out/vit_tiny-pruned.safetensors" --batch 8 \
    --reps 5 --no-layers --quiet | sed -n '/end to end/,/speedup/p'
fi
echo "== reports in $out/"

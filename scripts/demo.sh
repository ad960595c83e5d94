#!/usr/bin/env bash
# The main job on a small bundled default (README command 1): install dependencies, build,
# make a random-weight DeiT-Tiny-shaped model, and evaluate it on the committed mini
# ImageFolder (tests/data/imagenet-mini). A random model's accuracy is meaningless; the point
# is to watch the whole pipeline run in about a minute. When ../shared/data is present (the
# project's real ViT-Tiny and ImageNet images), it also evaluates the real model on 200 images.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--no-install" ] || scripts/install-deps.sh --minimal
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
out=out/demo
mkdir -p "$out"
L=build/lpvit
echo "== create a random DeiT-Tiny-shaped model (4 blocks)"
$L create-model --preset deit_t --depth 4 --seed 0 --out "$out/tiny.safetensors"
echo "== eval on tests/data/imagenet-mini (12 images, 4 classes)"
$L eval --model "$out/tiny.safetensors" --imagenet-dir tests/data/imagenet-mini --batch 12 --json "$out/eval.json"
echo "== infer: top-5 classes of one image"
$L infer --model "$out/tiny.safetensors" tests/data/imagenet-mini/n01440764/img0.JPEG --quiet
if [ -f ../shared/data/vit_tiny_patch16_224.safetensors ]; then
  echo "== real ViT-Tiny on 200 ImageNet validation images (../shared/data)"
  $L eval --model ../shared/data/vit_tiny_patch16_224.safetensors --imagenet-dir ../shared/data/imagenet-val-1000 \
    --limit 200 --json "$out/vit_tiny_eval.json"
fi
echo "== reports in $out/"

#!/usr/bin/env bash
# Accuracy gates on ../shared/data (real ImageNet-trained models and images), run by
# scripts/test.sh when the data is present: an accuracy regression fails CI.
#   dense ViT-Tiny, 1000 val images: top-1 / top-5 equal to the PyTorch reference (82.10 / 96.10)
#   dense DeiT-Tiny (LN-rounded), 1000 val images: equal to 81.00 / 94.40
# Equal means within 0.05 (one image is 0.1 point): lpvit decodes JPEG with libjpeg-turbo as PIL does, and its
# per-image predictions agree with PyTorch's on all 1000 images (smallest top-1 logit margin 5e-4, far above
# the engine's 1e-6). A build with the stb_image fallback (the report's environment.jpeg_decoder) decodes
# other pixels and is held to top-1 within 0.5, as before libjpeg.
#   int8 (--precision int8, W8A8 per-token inputs, attention in int8 where the CPU has VNNI): top-1 within 1.0
#   point of the FP32 reference (issue 19's goal), with the best int8 kernel the CPU has and with the AVX2
#   kernel (127-level inputs, FP32 attention); measured 81.8-82.1 and 81.1-81.4 on an Intel Xeon.
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
gate() { # name json top1-reference top5-reference
  local top1 top5 dec
  top1=$(printf '%.2f' "$(lpv_json "$2" top1)"); top5=$(printf '%.2f' "$(lpv_json "$2" top5)")
  dec=$(lpv_json "$2" environment.jpeg_decoder)
  if [ "$dec" = stb_image ]; then
    if lpv_near "$top1" "$3" 0.5; then
      echo "ok   $1: top-1 $top1 (reference $3, allowed +-0.5 with $dec)"
    else
      echo "FAIL $1: top-1 $top1, reference $3, allowed +-0.5 with $dec"; fail=1
    fi
  elif lpv_near "$top1" "$3" 0.05 && lpv_near "$top5" "$4" 0.05; then
    echo "ok   $1: top-1 / top-5 $top1 / $top5 (reference $3 / $4, exact with $dec)"
  else
    echo "FAIL $1: top-1 / top-5 $top1 / $top5, reference $3 / $4, must be equal with $dec"; fail=1
  fi
}
$L eval --model "$DATA/vit_tiny_patch16_224.safetensors" --imagenet-dir "$DATA/imagenet-val-1000" \
  --json "$out/vit.json" --quiet >/dev/null
gate "ViT-Tiny dense" "$out/vit.json" 82.10 96.10
$L eval --model deit_t --weights "$DATA/deit_tiny_patch16_224.ln-rounded.safetensors" \
  --imagenet-dir "$DATA/imagenet-val-1000" --json "$out/deit.json" --quiet >/dev/null
gate "DeiT-Tiny dense" "$out/deit.json" 81.00 94.40
gate_int8() { # name json fp32-top1
  local top1 att kern
  top1=$(printf '%.2f' "$(lpv_json "$2" top1)"); att=$(lpv_json "$2" attention); kern=$(lpv_json "$2" int8_kernel)
  if lpv_less "$top1" "$(awk -v a="$3" 'BEGIN { print a - 1.0 }')"; then
    echo "FAIL $1 ($kern, $att attention): top-1 $top1, more than 1.0 point under FP32's $3"; fail=1
  else
    echo "ok   $1 ($kern, $att attention): top-1 $top1 (FP32 $3, allowed 1.0 under)"
  fi
}
isas=auto
if "$L" --version | grep -qw avx2; then isas="auto avx2"; else echo "SKIP int8 --isa avx2: no AVX2 here"; fi
for isa in $isas; do
  $L eval --model "$DATA/vit_tiny_patch16_224.safetensors" --imagenet-dir "$DATA/imagenet-val-1000" \
    --precision int8 --isa "$isa" --json "$out/vit8.json" --quiet >/dev/null
  gate_int8 "ViT-Tiny int8" "$out/vit8.json" 82.10
  $L eval --model deit_t --weights "$DATA/deit_tiny_patch16_224.ln-rounded.safetensors" --precision int8 \
    --isa "$isa" --imagenet-dir "$DATA/imagenet-val-1000" --json "$out/deit8.json" --quiet >/dev/null
  gate_int8 "DeiT-Tiny int8" "$out/deit8.json" 81.00
done
exit $fail

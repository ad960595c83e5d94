#!/usr/bin/env bash
# Pareto table of pruning x int8 on the real models of ../shared/data (issue 19, item 7): for ViT-Tiny
# and DeiT-Tiny, the dense model and the model pruned to each FLOPs target, each in FP32 and int8 (W8A8,
# `lpvit quantize` of that file): top-1 / top-5 on the validation images, the end-to-end speedup over
# lpvit's FP32 dense model (`lpvit bench`, timed in the same process) and over ONNX Runtime FP32 on the
# same weights (when scripts/peers/node_modules holds onnxruntime-node: bench-peers.sh installs it), at
# each batch, the file size, and the prune + quantize wall time. Writes OUT/pareto.md (also printed),
# OUT/pareto.json and OUT/pareto.svg (top-1 against speedup at the first batch, one curve per model and
# precision).
#
#   scripts/bench-pareto.sh                       # 256 calibration images, targets 0.9 0.8 0.7 0.5, batches 1 8
#   scripts/bench-pareto.sh --rebench             # keep the pruned models and evaluations in OUT; time again
# Options: --data DIR (default $LPVIT_DATA, else ../shared/data), --models "vit_tiny deit_tiny" (or NAME=FILE:
#          any model file, named NAME in the table),
#          --targets "0.9 0.8 0.7 0.5", --calib-size N (256), --val-limit N (0: all), --batches "1 8",
#          --reps K (10), --rounds R (3: the timing is repeated R times, medians reported), --threads N (all CPUs), --block RxC (32x32), --out DIR (out/bench-pareto), --no-ort,
#          --rebench; LPVIT=path/to/lpvit runs that binary instead of building build/lpvit
# Pruning is `lpvit sweep` (default pipeline: taylor2, sorted channels, sequential refit, 32x32 blocks);
# the int8 points quantize the pruned FP32 file (per-row int8 weights, per-token uint8 inputs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
me=bench-pareto.sh
die() { echo "$me: $*" >&2; exit 1; }
orig_args=("$@")
data=""; models="vit_tiny deit_tiny"; targets="0.9 0.8 0.7 0.5"; calib=256; val=0; batches="1 8"; reps=10
threads=$(nproc); out=out/bench-pareto; ort=1; rebench=0; block=32x32; rounds=3
need() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "$me: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --data) need "$@"; data=$2; shift 2 ;; --models) need "$@"; models=$2; shift 2 ;;
    --targets) need "$@"; targets=$2; shift 2 ;; --calib-size) need "$@"; calib=$2; shift 2 ;;
    --val-limit) need "$@"; val=$2; shift 2 ;; --batches) need "$@"; batches=$2; shift 2 ;;
    --reps) need "$@"; reps=$2; shift 2 ;; --threads) need "$@"; threads=$2; shift 2 ;;
    --out) need "$@"; out=$2; shift 2 ;; --no-ort) ort=0; shift ;; --rebench) rebench=1; shift ;;
    --block) need "$@"; block=$2; shift 2 ;; --rounds) need "$@"; rounds=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "$me: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for v in calib reps threads rounds; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$me: --${v/calib/calib-size} must be a positive integer, got '${!v}'" >&2; exit 2; }
done
[[ $val =~ ^[0-9]+$ ]] || { echo "$me: --val-limit must be an integer, got '$val'" >&2; exit 2; }
for b in $batches; do [[ $b =~ ^[1-9][0-9]*$ ]] || { echo "$me: bad batch '$b' in --batches" >&2; exit 2; }; done
for t in $targets; do [[ $t =~ ^0?\.[0-9]+$ ]] || { echo "$me: bad target '$t' in --targets (a FLOPs fraction, e.g. 0.7)" >&2; exit 2; }; done
[ -n "$data" ] || data=$(lpv_data_dir) || exit 2
names=(); files=() # --models as parallel lists: the table's name, the weights file
for m in $models; do
  case "$m" in
    vit_tiny) names+=("$m"); files+=("$data/vit_tiny_patch16_224.safetensors") ;;
    deit_tiny) names+=("$m"); files+=("$data/deit_tiny_patch16_224.ln-rounded.safetensors") ;;
    *=*) [[ ${m%%=*} =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "$me: bad name in --models entry '$m'" >&2; exit 2; }
         names+=("${m%%=*}"); files+=("${m#*=}") ;;
    *) echo "$me: unknown --models entry '$m' (vit_tiny, deit_tiny or NAME=FILE)" >&2; exit 2 ;;
  esac
done
py=$(lpv_python numpy) || die "no python3 with numpy (scripts/install-deps.sh)"
if [ -n "${LPVIT:-}" ]; then
  L=$LPVIT; [ -x "$L" ] || die "LPVIT='$L' is not an executable"
else
  lpv_build || die "building lpvit failed"
  L=build/lpvit
fi
limit=(); [ "$val" -gt 0 ] && limit=(--limit "$val")
if [ "$ort" = 1 ]; then
  if ! node scripts/peers/ort_bench.js info >/dev/null 2>&1 || ! pyt=$(lpv_python torch numpy); then
    echo "$me: no ONNX Runtime peer (run scripts/bench-peers.sh once to install it, and python3-torch); --no-ort assumed" >&2
    ort=0
  fi
fi
mkdir -p "$out"
step() { echo "== $*" >&2; }
now() { date +%s.%N; }

for k in "${!names[@]}"; do
  m=${names[$k]}; f=${files[$k]}
  [ -f "$f" ] || die "'$f' not found"
  d=$out/$m; mkdir -p "$d"
  # 1. prune to every target in one sweep (statistics shared), FP32 top-1 and prune wall time per point
  if [ "$rebench" = 0 ] || [ ! -f "$d/sweep/sweep.json" ]; then
    step "$m: lpvit sweep --targets ${targets// /,} --calib-size $calib"
    rm -rf "$d/sweep"
    $L sweep --model "$f" --calib-dir "$data/imagenet-calib-1000" --calib-size "$calib" \
      --imagenet-dir "$data/imagenet-val-1000" ${limit[@]+"${limit[@]}"} --targets "${targets// /,}" \
      --out-dir "$d/sweep" --cache-dir "$out/cache" --threads "$threads" --block "$block" --bench-batch 8 --reps 3 --quiet >/dev/null \
      || die "lpvit sweep on $m failed"
  fi
  # 2. int8: quantize each file (timed), evaluate the quantized file
  for t in dense $targets; do
    src=$f; [ "$t" = dense ] || src=$d/sweep/pruned-$t.safetensors
    [ -f "$src" ] || die "$src missing (the sweep writes it)"
    q=$d/int8-$t.safetensors
    if [ "$rebench" = 0 ] || [ ! -f "$d/int8-$t.eval.json" ]; then
      step "$m $t: quantize, eval int8"
      t0=$(now)
      $L quantize --model "$src" --out "$q" --quiet || die "lpvit quantize $src failed"
      t1=$(now)
      echo "{\"quantize_s\": $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')}" >"$d/int8-$t.quantize.json.tmp" \
        && mv "$d/int8-$t.quantize.json.tmp" "$d/int8-$t.quantize.json"
      $L eval --model "$q" --imagenet-dir "$data/imagenet-val-1000" ${limit[@]+"${limit[@]}"} --threads "$threads" \
        --json "$d/int8-$t.eval.json" --quiet >/dev/null || die "lpvit eval $q failed"
    fi
  done
  if [ "$ort" = 1 ] && { [ ! -f "$d/dense.onnx" ] || [ "$f" -nt "$d/dense.onnx" ]; }; then
    step "$m: ONNX export (scripts/torch_deit.py)"
    "$pyt" scripts/torch_deit.py onnx --model "$f" --out "$d/dense.onnx" --opset 17 2>"$d/export.log" \
      || { cat "$d/export.log" >&2; die "ONNX export of $f failed"; }
  fi
done

# 3. speed: FP32 dense, FP32 pruned, int8 dense, int8 pruned in one bench process per point, batch and round;
# rounds go over every model and point in turn, so a busy spell of the machine hits one round of each, not all
rm -f "$out"/*/bench-*.json "$out"/*/ort-b*.json
for ((r = 1; r <= rounds; r++)); do
  for k in "${!names[@]}"; do
    m=${names[$k]}; f=${files[$k]}; d=$out/$m
    for B in $batches; do
      for t in dense $targets; do
        step "round $r/$rounds: $m $t batch $B: lpvit bench --precision int8"
        pr=(); [ "$t" = dense ] || pr=(--pruned "$d/sweep/pruned-$t.safetensors")
        $L bench --model "$f" ${pr[@]+"${pr[@]}"} --precision int8 --batch "$B" --reps "$reps" --warmup 2 --no-layers \
          --threads "$threads" --json "$d/bench-$t-b$B-r$r.json" --quiet >/dev/null || die "lpvit bench ($m $t batch $B) failed"
      done
      if [ "$ort" = 1 ]; then
        step "round $r/$rounds: $m batch $B: ONNX Runtime FP32"
        node scripts/peers/ort_bench.js bench --model "$d/dense.onnx" --batch "$B" --threads "$threads" --reps "$reps" --warmup 2 \
          --json "$d/ort-b$B-r$r.json" || die "ONNX Runtime bench ($m batch $B) failed"
      fi
    done
  done
done

"$py" scripts/pareto.py --dir "$out" --models "${names[*]}" --targets "$targets" --batches "$batches" --rounds "$rounds" \
  --command "scripts/$me${orig_args[*]+ $(printf '%q ' "${orig_args[@]}")}" >"$out/pareto.md.tmp" \
  || die "scripts/pareto.py failed (does $out hold every target of --targets? a --rebench reuses the sweep's)"
mv "$out/pareto.md.tmp" "$out/pareto.md"
cat "$out/pareto.md"

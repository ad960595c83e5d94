#!/usr/bin/env bash
# BSR speed sweep (issue: block-sparse engine): lpvit's sparse engine against its dense path
# (its fastest: lpvit's blocked kernel with every block kept, see docs/benchmarks.md) on DeiT-S and DeiT-B shapes with random weights, random block masks at
# densities 1.0 0.7 0.5 0.3 0.1, blocks 16x16 and 32x32, batch 1 and 8, one lpvit process per
# case (dense and sparse interleaved inside it). Prints one markdown table of speedups:
#   linear = sum of the per-layer medians of the 48 block linears, dense / sparse
#   worst  = the slowest single layer's speedup
#   e2e    = whole forward pass, dense / sparse
#   goal   = per-layer bar of the BSR issue: 0.9/d (32x32) or 0.8/d (16x16) for d <= 0.7; 0.95 at d = 1
# Usage: scripts/bench-bsr.sh [--threads N] [--reps K] [--models "deit_s deit_b"] [--batches "1 8"]
#        [--densities "1.0 0.7 0.5 0.3 0.1"] [--blocks "16x16 32x32"] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
threads=$(nproc); reps=7; models="deit_s deit_b"; batches="1 8"; dens="1.0 0.7 0.5 0.3 0.1"; blocks="16x16 32x32"
out=out/bench-bsr
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;; --reps) reps=$2; shift 2 ;; --models) models=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;; --densities) dens=$2; shift 2 ;; --blocks) blocks=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "bench-bsr.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
lpv_build || exit 2
py=$(lpv_python) || exit 2   # the table below: python's json, standard library only
mkdir -p "$out"
for m in $models; do for b in $batches; do for blk in $blocks; do for d in $dens; do
  f="$out/${m}_b${b}_${blk}_d${d}.json"
  echo "bench $m batch $b block $blk density $d" >&2
  build/lpvit bench --model "$m" --random-weights --density "$d" --block "$blk" --batch "$b" \
    --threads "$threads" --reps "$reps" --warmup 2 --json "$f" --quiet >/dev/null
done; done; done; done
"$py" - "$out" $models -- $batches -- $blocks -- $dens <<'PY'
import json, sys, os
out = sys.argv[1]
args = sys.argv[2:]
groups, cur = [], []
for a in args:
    if a == "--": groups.append(cur); cur = []
    else: cur.append(a)
groups.append(cur)
models, batches, blocks, dens = groups
env = None
print("| model | batch | block | density | linear speedup | worst layer | e2e speedup | goal per layer | dense ms/img | sparse ms/img |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    for b in batches:
        for blk in blocks:
            for d in dens:
                j = json.load(open(os.path.join(out, "%s_b%s_%s_d%s.json" % (m, b, blk, d))))
                env = j["environment"]
                ls = [l for l in j["layers"] if l["layer"].startswith("blocks.")]
                sd = sum(l["dense"]["median_ms"] for l in ls); ss = sum(l["sparse"]["median_ms"] for l in ls)
                worst = min(l["speedup"] for l in ls)
                e = j["end_to_end"]
                dv = float(d)
                goal = 0.95 if dv == 1.0 else ((0.9 if blk == "32x32" else 0.8) / dv if dv <= 0.7 else None)
                print("| %s | %s | %s | %s | %.2fx | %.2fx | %.2fx | %s | %.2f | %.2f |" % (
                    m, b, blk, d, sd / ss, worst, e["speedup"], "%.2fx" % goal if goal else "-",
                    e["dense"]["ms_per_image"], e["sparse"]["ms_per_image"]))
print()
print("CPU %s, isa %s, %d threads, OpenBLAS core %s (%s), lpvit %s, load %s" % (
    env["cpu"], env["isa"], env["threads"], env["openblas_core"], env["openblas_core_source"], env["commit"], env["loadavg"]))
PY

#!/usr/bin/env bash
# One process against `mpirun -n R` on the real ViT-Tiny (../shared/data), the same cores either way:
#   eval:  1 rank x 1 thread against R ranks x 1 thread on imagenet-val-1000 (strong scaling), --rounds times,
#          median wall; the top-1/top-5 must be equal;
#   prune: 1 process x R threads against R ranks x 1 thread (the time), default pipeline at each --targets
#          value with --calib-size images, and R ranks x 1 thread against 1 process x 1 thread (the result:
#          the same threads per process, so the same sums in another order; a thread count of its own changes
#          the refit's float sums too): kept blocks and weights (scripts/compare_pruned.py) and the top-1 of
#          each pruned model on val-1000.
# Prints a markdown table (and writes it to OUT/bench-mpi.md); needs a build with MPI (libopenmpi-dev).
#   scripts/bench-mpi.sh [--ranks 2] [--rounds 3] [--targets "0.7"] [--calib-size 256] [--no-prune] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ranks=2; rounds=3; targets="0.7"; calib=256; prune=1; out=out/bench-mpi; data=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) ranks=$2; shift 2 ;; --rounds) rounds=$2; shift 2 ;; --targets) targets=$2; shift 2 ;;
    --calib-size) calib=$2; shift 2 ;; --no-prune) prune=0; shift ;; --out) out=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    *) echo "bench-mpi.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ -n "$data" ] || data=$(lpv_data_dir) || exit 2
lpv_build || exit 2
L=build/lpvit
$L --version | grep -q '^mpi: none' && { echo "bench-mpi.sh: build/lpvit has no mpi (install libopenmpi-dev, rebuild)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "bench-mpi.sh: no mpirun (Debian: openmpi-bin)" >&2; exit 2; }
PY=$(lpv_python numpy) || exit 2
MPI=(mpirun --oversubscribe -n "$ranks")
[ "$(id -u)" = 0 ] && MPI=(mpirun --allow-run-as-root --oversubscribe -n "$ranks")
model="$data/vit_tiny_patch16_224.safetensors"
val="$data/imagenet-val-1000"
mkdir -p "$out"
now() { date +%s.%N; }
calc() { awk "BEGIN { print $1 }"; }
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
acc() { printf '%.2f/%.2f' "$(lpv_json "$1" top1)" "$(lpv_json "$1" top5)"; }

table="$out/bench-mpi.md"
{
  echo "$($L --version | head -1)"
  echo
  echo "| job | 1 process | $ranks mpi ranks | speedup | top-1/top-5: 1 process, $ranks ranks | $ranks ranks against 1 process of as many threads per process |"
  echo "|---|---|---|---|---|---|"
} >"$table"

echo "eval: 1 x 1 thread against $ranks x 1 thread, $rounds rounds" >&2
t1=(); tr=()
for r in $(seq "$rounds"); do
  s=$(now); $L eval --model "$model" --imagenet-dir "$val" --threads 1 --json "$out/eval1.json" --quiet >/dev/null
  t1+=("$(calc "$(now) - $s")")
  s=$(now); "${MPI[@]}" $L eval --model "$model" --imagenet-dir "$val" --threads 1 --json "$out/evalR.json" --quiet >/dev/null
  tr+=("$(calc "$(now) - $s")")
done
m1=$(printf '%s\n' "${t1[@]}" | median); mr=$(printf '%s\n' "${tr[@]}" | median)
same="equal"; [ "$(acc "$out/eval1.json")" = "$(acc "$out/evalR.json")" ] || same="DIFFERENT"
printf '| eval, val-1000, 1 thread per process (median of %d) | %.1f s | %.1f s | %.2fx | %s, %s | %s |\n' \
  "$rounds" "$m1" "$mr" "$(calc "$m1 / $mr")" "$(acc "$out/eval1.json")" "$(acc "$out/evalR.json")" "$same" >>"$table"

if [ "$prune" = 1 ]; then
  for t in $targets; do
    echo "prune $t: 1 x $ranks threads against $ranks x 1 thread" >&2
    P=(prune --model "$model" --calib-dir "$data/imagenet-calib-1000" --calib-size "$calib" --target-flops "$t"
       --block 32 --no-cache --quiet)
    s=$(now); $L "${P[@]}" --threads "$ranks" --out "$out/p1-$t.safetensors" --json "$out/p1-$t.json" >/dev/null
    w1=$(calc "$(now) - $s")
    s=$(now); "${MPI[@]}" $L "${P[@]}" --threads 1 --out "$out/pR-$t.safetensors" --json "$out/pR-$t.json" >/dev/null
    wr=$(calc "$(now) - $s")
    $L "${P[@]}" --threads 1 --out "$out/p11-$t.safetensors" >/dev/null # the result's reference
    cmp=$("$PY" scripts/compare_pruned.py "$out/p11-$t.safetensors" "$out/pR-$t.safetensors" || true)
    for k in 1 R; do
      $L eval --model "$out/p$k-$t.safetensors" --imagenet-dir "$val" --threads "$ranks" --json "$out/e$k-$t.json" --quiet >/dev/null
    done
    printf '| prune %s, %d calibration images, %d steps (%d threads in all) | %.0f s | %.0f s | %.2fx | %s, %s | %s |\n' \
      "$t" "$calib" "$(lpv_json_len "$out/p1-$t.json" steps)" "$ranks" "$w1" "$wr" "$(calc "$w1 / $wr")" \
      "$(acc "$out/e1-$t.json")" "$(acc "$out/eR-$t.json")" "$cmp" >>"$table"
  done
fi
cat "$table"

#!/usr/bin/env bash
# `mpirun -n 2 lpvit eval|prune` computes what one process computes (include/lpvit/dist.h):
#   - eval: the same images, top-1 and top-5 counts; the report (written once, by rank 0) says 2 ranks and the
#     table is printed once;
#   - prune (one step, on the 2-block fixture model, or a random one without ../shared): the same kept blocks
#     in every layer, weights and the pruned model's logits within float-summation-order tolerance;
#   - a rank that fails makes the job fail: one line naming the rank and the cause, a non-zero exit, and no
#     output file; a usage error stops every rank with one line.
# Skipped (77) when this lpvit has no MPI or mpirun is missing.
#   mpi_e2e.sh path/to/lpvit SOURCE_DIR
set -u
L=$1
SRC=$2
"$L" --version | grep -q '^mpi: none' && { echo "SKIP: this lpvit was built without mpi (libopenmpi-dev)"; exit 77; }
command -v mpirun >/dev/null || { echo "SKIP: no mpirun (Debian: openmpi-bin)"; exit 77; }
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
"$PY" -c 'import numpy' 2>/dev/null || { echo "SKIP: no numpy (python3-numpy) to compare the files"; exit 77; }
T=$(mktemp -d /tmp/lpvit_mpi.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
# containers often forbid the cross-memory attach Open MPI's shared-memory transport tries first
export OMPI_MCA_btl_vader_single_copy_mechanism=none
MPI=(mpirun --oversubscribe -n 2)
[ "$(id -u)" = 0 ] && MPI=(mpirun --allow-run-as-root --oversubscribe -n 2)
MINI="$SRC/tests/data/imagenet-mini"
FIX="$SRC/../shared/fixtures"
CMP=("$PY" "$SRC/scripts/compare_pruned.py")

if [ -f "$FIX/timm_deit_tiny_d2.safetensors" ]; then
  M=(--model "$FIX/timm_deit_tiny_d2.safetensors" --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)
  INPUT="$FIX/timm_deit_tiny_d2.ref.safetensors"
else
  echo "note: ../shared/fixtures absent: a random 2-block model stands in for the fixture"
  "$L" create-model --dim 64 --heads 2 --depth 2 --seed 4 --out "$T/m.safetensors" --quiet || exit 1
  M=(--model "$T/m.safetensors")
  INPUT=""
fi

# ---- eval ----
"$L" eval "${M[@]}" --imagenet-dir "$MINI" --threads 1 --json "$T/e1.json" --quiet >/dev/null 2>"$T/err" \
  || bad "1-process eval: $(tail -1 "$T/err")"
"${MPI[@]}" "$L" eval "${M[@]}" --imagenet-dir "$MINI" --threads 1 --json "$T/e2.json" >"$T/e2.out" 2>"$T/err" \
  && ok || bad "2-rank eval: $(tail -3 "$T/err")"
if [ -f "$T/e1.json" ] && [ -f "$T/e2.json" ]; then
  "$PY" - "$T/e1.json" "$T/e2.json" <<'EOF' && ok || bad "2-rank eval differs from 1 process"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
keys = ("images", "skipped", "correct_top1", "correct_top5")
diff = [(k, a[k], b[k]) for k in keys if a[k] != b[k]]
if diff or b["environment"]["ranks"] != 2 or a["environment"]["ranks"] != 1:
    print(diff, a["environment"]["ranks"], b["environment"]["ranks"]); sys.exit(1)
EOF
fi
n=$(grep -c '^top-1' "$T/e2.out")
[ "$n" = 1 ] && ok || bad "2-rank eval printed its table $n times (expected once, by rank 0)"
grep -q 'x 2 mpi ranks' "$T/e2.out" && ok || bad "2-rank eval's table does not say 2 ranks"

# ---- prune: one step, the same blocks kept ----
P=(prune "${M[@]}" --calib-dir "$MINI" --target-flops 0.6 --block 16 --steps 1 --no-cache --quiet --threads 1)
"$L" "${P[@]}" --out "$T/p1.safetensors" >/dev/null 2>"$T/err" || bad "1-process prune: $(tail -1 "$T/err")"
"${MPI[@]}" "$L" "${P[@]}" --out "$T/p2.safetensors" --json "$T/p2.json" >/dev/null 2>"$T/err" \
  && ok || bad "2-rank prune: $(tail -3 "$T/err")"
if [ -f "$T/p1.safetensors" ] && [ -f "$T/p2.safetensors" ]; then
  out=$("${CMP[@]}" "$T/p1.safetensors" "$T/p2.safetensors" --rtol 1e-2) && ok || bad "pruned models: $out"
  if [ -n "$INPUT" ]; then
    for k in 1 2; do
      "$L" infer --model "$T/p$k.safetensors" --input "$INPUT" --out "$T/l$k.safetensors" --quiet || bad "infer p$k"
    done
    out=$("${CMP[@]}" "$T/l1.safetensors" "$T/l2.safetensors" --rtol 1e-3) && ok || bad "pruned models' logits: $out"
  fi
  "$PY" -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["environment"]["ranks"] != 2)' "$T/p2.json" \
    && ok || bad "the 2-rank prune report does not record 2 ranks"
fi

# ---- prune + int8 with smoothing and static input grids: maxima and histograms over both ranks' images ----
Q=(prune "${M[@]}" --calib-dir "$MINI" --target-flops 0.8 --block 16 --steps 1 --no-cache --quiet --threads 1 \
   --quant int8 --quant-smooth 0.5 --quant-act minmax)
"$L" "${Q[@]}" --out "$T/q1.safetensors" >/dev/null 2>"$T/err" || bad "1-process prune --quant-smooth: $(tail -1 "$T/err")"
"${MPI[@]}" "$L" "${Q[@]}" --out "$T/q2.safetensors" >/dev/null 2>"$T/err" \
  && ok || bad "2-rank prune --quant-smooth: $(tail -3 "$T/err")"
# the smoothing factors (folded into the LayerNorms) and the input grids agree: each rank saw half the images,
# so a maximum not taken over both would move them by far more; the int8 weights themselves may flip a rounding
# here and there (GPTQ amplifies the pruned weights' summation-order differences), as they do without smoothing
if [ -f "$T/q1.safetensors" ] && [ -f "$T/q2.safetensors" ]; then
  PYTHONPATH="$SRC/scripts" "$PY" - "$T/q1.safetensors" "$T/q2.safetensors" <<'EOF' && ok || bad "2-rank smoothing or input grids differ"
import sys
import numpy as np
import compare_pruned as c
a, b = c.load(sys.argv[1]), c.load(sys.argv[2])
ks = [k for k in a if ".norm1." in k or ".norm2." in k or k.endswith(".input_scale")]
worst = max(np.abs(a[k][1] - b[k][1]).max() / max(np.abs(a[k][1]).max(), 1e-30) for k in ks)
zp = [k for k in a if k.endswith(".input_zero_point")]
zdiff = max(np.abs(a[k][1].astype(int) - b[k][1].astype(int)).max() for k in zp)
print("LayerNorms and input scales: %d tensors, worst relative difference %.2g; zero points within %d" %
      (len(ks), worst, zdiff))
sys.exit(not (len(ks) == 14 and len(zp) == 6 and worst < 1e-3 and zdiff <= 1))
EOF
fi

# ---- quantize: the calibrated pipeline over both ranks' images, one file written, the report's images summed ----
QZ=(quantize "${M[@]}" --calib-dir "$MINI" --smooth 0.5 --act-scales minmax --threads 1 --quiet --json)
"$L" "${QZ[@]}" --out "$T/z1.safetensors" >"$T/z1.json" 2>"$T/err" || bad "1-process quantize: $(tail -1 "$T/err")"
"${MPI[@]}" "$L" "${QZ[@]}" --out "$T/z2.safetensors" >"$T/z2.json" 2>"$T/err" \
  && ok || bad "2-rank quantize: $(tail -3 "$T/err")"
if [ -f "$T/z1.safetensors" ] && [ -f "$T/z2.safetensors" ]; then
  PYTHONPATH="$SRC/scripts" "$PY" - "$T/z1.safetensors" "$T/z2.safetensors" "$T/z1.json" "$T/z2.json" <<'EOF' \
    && ok || bad "2-rank quantize differs from 1 process"
import json, sys
import numpy as np
import compare_pruned as c
a, b = c.load(sys.argv[1]), c.load(sys.argv[2])
ja, jb = (json.load(open(p)) for p in sys.argv[3:5])
ks = [k for k in a if ".norm1." in k or ".norm2." in k or k.endswith(".input_scale")]
worst = max(np.abs(a[k][1] - b[k][1]).max() / max(np.abs(a[k][1]).max(), 1e-30) for k in ks)
w = [k for k in a if a[k][0] == "I8"]
flips = sum(int((a[k][1] != b[k][1]).sum()) for k in w) / sum(a[k][1].size for k in w)
print("quantize, 2 ranks: LayerNorms and input scales within %.2g, %.3f %% of int8 weights another step" %
      (worst, 100 * flips))
ok = len(ks) == 14 and worst < 1e-4 and flips < 0.01
ok = ok and ja["calibration"]["images"] == jb["calibration"]["images"] > 0
ok = ok and ja["environment"]["ranks"] == 1 and jb["environment"]["ranks"] == 2
sys.exit(not ok)
EOF
fi

# ---- a rank that fails ----
# the list sorts a.JPEG b.png y.JPEG z.JPEG: rank 1's share is the two broken files, so its statistics pass
# has no image while rank 0's is fine
mkdir -p "$T/calib/n01440764"
cp "$MINI/n01440764/img0.JPEG" "$T/calib/n01440764/a.JPEG"
cp "$MINI/n01440764/img1.png" "$T/calib/n01440764/b.png"
printf 'not a jpeg' >"$T/calib/n01440764/y.JPEG"
printf 'not a jpeg either' >"$T/calib/n01440764/z.JPEG"
mkdir -p "$T/outdir"
"${MPI[@]}" "$L" prune "${M[@]}" --calib-dir "$T/calib" --target-flops 0.6 --block 16 --steps 1 --no-cache --quiet \
  --threads 1 --out "$T/outdir/bad.safetensors" >/dev/null 2>"$T/err"
rc=$?
[ "$rc" != 0 ] && ok || bad "a failing rank: the job exited 0"
grep -q '^lpvit: rank 1: .*none of the 2 images could be read' "$T/err" && ok \
  || bad "a failing rank: no line naming rank 1 and the cause: $(grep '^lpvit' "$T/err" | head -3)"
n=$(grep -c '^lpvit: ' "$T/err")
[ "$n" = 1 ] && ok || bad "a failing rank: $n lpvit lines, expected one: $(grep '^lpvit' "$T/err")"
[ -z "$(ls -A "$T/outdir")" ] && ok || bad "a failing rank left files: $(ls -A "$T/outdir")"

# skipped files: the reports list every rank's, as one process's do
"$L" eval "${M[@]}" --imagenet-dir "$T/calib" --threads 1 --json "$T/s1.json" --quiet >/dev/null 2>&1
"${MPI[@]}" "$L" eval "${M[@]}" --imagenet-dir "$T/calib" --threads 1 --json "$T/s2.json" --quiet >/dev/null 2>&1
mkdir -p "$T/calib2/n01440764"
cp "$T/calib/n01440764/"{a.JPEG,b.png,z.JPEG} "$T/calib2/n01440764/"
cp "$MINI/n01440764/img2.jpg" "$T/calib2/n01440764/c.jpg"
PS=(prune "${M[@]}" --calib-dir "$T/calib2" --target-flops 0.6 --block 16 --steps 1 --no-cache --quiet --threads 1)
"$L" "${PS[@]}" --out "$T/s1.safetensors" --json "$T/ps1.json" >/dev/null 2>&1
"${MPI[@]}" "$L" "${PS[@]}" --out "$T/s2.safetensors" --json "$T/ps2.json" >/dev/null 2>&1
"$PY" - "$T" <<'EOF2' && ok || bad "skipped files under mpirun differ from one process's"
import json, os, sys
t = sys.argv[1]
ld = lambda f: json.load(open(os.path.join(t, f)))
e1, e2, p1, p2 = ld("s1.json"), ld("s2.json"), ld("ps1.json"), ld("ps2.json")
names = lambda l: [os.path.basename(x["file"] if isinstance(x, dict) else x) for x in l]
ok = names(e1["skipped_files"]) == names(e2["skipped_files"]) == ["y.JPEG", "z.JPEG"] and e2["skipped"] == 2
ok &= names(p1["calibration"]["skipped_files"]) == names(p2["calibration"]["skipped_files"]) == ["z.JPEG"]
ok &= p2["calibration"]["images_skipped"] == 1
if not ok:
    print(e1["skipped_files"], e2["skipped_files"], p1["calibration"]["skipped_files"], p2["calibration"]["skipped_files"])
sys.exit(0 if ok else 1)
EOF2

# eval --strict: rank 1 meets the broken files
"${MPI[@]}" "$L" eval "${M[@]}" --imagenet-dir "$T/calib" --strict --threads 1 --json "$T/outdir/e.json" \
  >/dev/null 2>"$T/err"
[ $? != 0 ] && ok || bad "eval --strict with a broken image on rank 1 exited 0"
grep -q "^lpvit: rank 1: .*y.JPEG" "$T/err" && ok || bad "eval --strict: no line naming rank 1 and the file: $(grep '^lpvit' "$T/err" | head -3)"
[ ! -e "$T/outdir/e.json" ] && ok || bad "eval --strict failed but wrote its report"

# a rank killed outright: mpirun ends the job, non-zero, and no output file is left (whole or half)
"${MPI[@]}" "$L" prune "${M[@]}" --calib-dir "$MINI" --target-flops 0.5 --block 16 --steps 4 --no-cache --quiet \
  --threads 1 --out "$T/outdir/killed.safetensors" >/dev/null 2>"$T/err" &
job=$!
victim=""
for _ in $(seq 100); do # rank 1: the lpvit whose environment says so
  for p in $(pgrep -f "killed.safetensors" 2>/dev/null); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && victim=$p
  done
  [ -n "$victim" ] && break
  sleep 0.05
done
if [ -n "$victim" ] && sleep 0.3 && kill -9 "$victim" 2>/dev/null; then
  wait "$job"
  rc=$?
  [ "$rc" != 0 ] && ok || bad "rank 1 killed: the job exited 0"
  [ -z "$(ls -A "$T/outdir")" ] && ok || bad "rank 1 killed: files left: $(ls -A "$T/outdir")"
else
  wait "$job"
  echo "note: the job ended before rank 1 could be killed: that check did not run"
fi

# a usage error: every rank stops, one line
"${MPI[@]}" "$L" eval "${M[@]}" --imagenet-dir "$MINI" --batch nope >/dev/null 2>"$T/err"
rc=$?
[ "$rc" != 0 ] && ok || bad "a usage error under mpirun exited 0"
n=$(grep -c '^lpvit: ' "$T/err")
[ "$n" = 1 ] && ok || bad "a usage error under mpirun: $n lpvit lines, expected one: $(grep '^lpvit' "$T/err")"

# a command that does not split its work refuses to run as several ranks
"${MPI[@]}" "$L" bench "${M[@]}" --reps 1 >/dev/null 2>"$T/err"
rc=$?
[ "$rc" = 2 ] || [ "$rc" = 1 ] && grep -q '^lpvit: bench does not run under mpirun' "$T/err" && ok \
  || bad "bench under mpirun: exit $rc, $(grep '^lpvit' "$T/err" | head -2)"

echo "mpi_e2e: $pass passed, $fails failed"
[ "$fails" = 0 ]

#!/usr/bin/env bash
# scripts/bench-prune-time.sh end to end on a small random model (--model-args) and tests/data/imagenet-mini as
# the calibration folder: the table (one row per phase and the total) on stdout and in prune-time.md, and
# prune-time.json whose rates and projections agree with the two prune reports it read (per image = the
# difference of the runs over the difference of images and steps; the default pipeline = its steps times one
# step's cost for the per-step phases). Bad --images refused with exit 2.
#   prune_time_e2e.sh path/to/lpvit SOURCE_DIR
set -u
L=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")   # absolute: the script runs from the repository root
SRC=$(cd "$2" && pwd)
T=$(mktemp -d /tmp/lpvit_ptime.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
PY=$(command -v python3) || { echo "skipped: no python3"; exit 77; }
D=$T/data
mkdir -p "$D"
ln -s "$SRC/tests/data/imagenet-mini" "$D/imagenet-calib-1000"
run() { "$SRC/scripts/bench-prune-time.sh" --lpvit "$L" --data "$D" --model-args "--dim 64 --heads 2 --depth 2 --img 64" \
  --images "2 6" --steps 2 --target 0.5 --calib-size 100 --threads 2 --out "$T/out" "$@"; }

if run >"$T/table.md" 2>"$T/err"; then ok; else bad "bench-prune-time.sh exited $?: $(tail -3 "$T/err")"; fi
cmp -s "$T/table.md" "$T/out/prune-time.md" && ok || bad "stdout differs from prune-time.md"
[ "$(grep -c '^|' "$T/table.md")" = 6 ] && ok || bad "expected 6 table lines (header, rule, 3 phases, total)"
grep -q '^| \*\*total\*\*' "$T/table.md" && ok || bad "no total row"

"$PY" - "$T/out" <<'PYEOF' && ok || bad "prune-time.json checks"
import json, sys
d = sys.argv[1]
j = json.load(open(d + "/prune-time.json"))
r = [json.load(open("%s/prune_%d.json" % (d, n))) for n in (2, 6)]
assert j["images"] == [2, 6] and j["steps_run"] == 2 and j["calib_size"] == 100, j
assert j["default_steps"] == 4, j["default_steps"]              # 0.5 FLOPs: one step per 0.125 removed
for key, per_step in (("permutation", False), ("statistics", True), ("reconstruction", True)):
    p = j["phases"][key]
    k = 2 if per_step else 1
    rate = max(0.0, (r[1]["wall_s"][key] - r[0]["wall_s"][key]) / 4 / k)  # a noisy negative rate is set to 0
    assert abs(p["per_image_s"] - rate) < 1e-9, (key, p, rate)
    n = 100 if per_step else 256
    assert abs(p["one_step_s"] - (rate * n + p["fixed_s"])) < 1e-6, (key, p)
    assert abs(p["default_s"] - p["one_step_s"] * (4 if per_step else 1)) < 1e-6, (key, p)
assert j["default_total_s"] >= j["one_step_total_s"] > 0, j
assert j["environment"]["threads"] == 2 and j["model_args"].startswith("--dim 64"), j["environment"]
PYEOF

for bad_images in "6 2" "4" "x 5"; do
  rc=0; "$SRC/scripts/bench-prune-time.sh" --lpvit "$L" --data "$D" --images "$bad_images" --out "$T/never" >/dev/null 2>"$T/e" || rc=$?
  [ "$rc" = 2 ] && grep -q -- '--images' "$T/e" && ok || bad "--images '$bad_images': exit $rc, $(cat "$T/e")"
done
[ ! -e "$T/never" ] && ok || bad "a refused run made its output folder"

echo "prune_time_e2e: $pass checks passed, $fails failed"
[ "$fails" = 0 ]

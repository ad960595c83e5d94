#!/usr/bin/env bash
# scripts/bench-pareto.sh end to end on a stand-in for ../shared/data: two random 2-block models (--models
# NAME=FILE) and tests/data/imagenet-mini as the calibration and validation folders. Checks that one
# run writes the table (every model x point x precision row, on stdout and in pareto.md), pareto.json (top-1
# equal to the eval reports, speedups from the bench reports, int8 files smaller than FP32) and pareto.svg
# (XML with one marker per row); that --rebench reuses the models and evaluations; and that bad options are
# refused with exit 2. Skipped (77) without a python3 that imports numpy.
#   pareto_e2e.sh path/to/lpvit SOURCE_DIR
set -u
L=$1
SRC=$2
T=$(mktemp -d /tmp/lpvit_pareto.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
"$PY" -c 'import numpy' 2>/dev/null || { echo "skipped: no python3 with numpy"; exit 77; }
MINI="$SRC/tests/data/imagenet-mini"

D=$T/data
mkdir -p "$D"
ln -s "$MINI" "$D/imagenet-calib-1000"
ln -s "$MINI" "$D/imagenet-val-1000"
"$L" create-model --dim 64 --heads 2 --depth 2 --img 64 --seed 3 --out "$D/a.safetensors" --quiet \
  && "$L" create-model --dim 64 --heads 2 --depth 2 --img 64 --seed 4 --out "$D/b.safetensors" --quiet \
  || { echo "create-model failed"; exit 1; }
run() { LPVIT=$L "$SRC/scripts/bench-pareto.sh" --data "$D" --models "vit_tiny=$D/a.safetensors deit_tiny=$D/b.safetensors" --targets "0.8 0.6" --calib-size 12 --batches "1 2" --reps 2 --rounds 2 \
  --threads 2 --block 16x16 --no-ort --out "$T/out" "$@"; }

if run >"$T/table.md" 2>"$T/err"; then ok; else bad "bench-pareto.sh exited $?: $(tail -3 "$T/err")"; fi
rows=$(grep -c '^| \(vit\|deit\)_tiny |' "$T/table.md")
[ "$rows" = 12 ] && ok || bad "expected 12 table rows (2 models x 3 points x 2 precisions), got $rows"
cmp -s "$T/table.md" "$T/out/pareto.md" && ok || bad "stdout differs from pareto.md"
grep -q '^| vit_tiny | pruned 0.6 | int8 |' "$T/table.md" && ok || bad "no int8 row for pruned 0.6"

"$PY" - "$T/out" <<'PYEOF' && ok || bad "pareto.json / pareto.svg checks"
import json, os, sys
import xml.etree.ElementTree as ET
out = sys.argv[1]
j = json.load(open(os.path.join(out, "pareto.json")))
rows = j["rows"]
assert len(rows) == 12, len(rows)
for r in rows:
    d = os.path.join(out, r["model"])
    if r["precision"] == "int8":
        e = json.load(open(os.path.join(d, "int8-%s.eval.json" % r["point"])))
        assert e["precision"] == "int8", e["precision"]
        assert abs(e["top1"] - r["top1"]) < 1e-9, (r, e["top1"])
        fp = [x for x in rows if x["model"] == r["model"] and x["point"] == r["point"] and x["precision"] == "fp32"][0]
        assert r["file_mb"] < 0.8 * fp["file_mb"], (r["file_mb"], fp["file_mb"])  # the head and patch embedding stay FP32
    for B in ("1", "2"):  # two rounds: the medians are the means of the two
        ms, sp = [], []
        for rnd in (1, 2):
            e = json.load(open(os.path.join(d, "bench-%s-b%s-r%d.json" % (r["point"], B, rnd))))["end_to_end"]
            key = "dense" if r["point"] == "dense" else "sparse"
            ms.append(e[key]["ms_per_image"] if r["precision"] == "fp32" else e["int8"][key]["ms_per_image"])
            sp.append(e["dense"]["ms_per_image"] / ms[-1])
        assert r["rounds"][B] == 2 and abs(r["ms_per_image"][B] - sum(ms) / 2) < 1e-9, (r, ms)
        assert abs(r["speedup"][B] - sum(sp) / 2) < 1e-9, (r, sp)
    if r["point"] == "dense" and r["precision"] == "fp32":
        assert r["speedup"]["1"] == 1.0 and r["prep_s"] == 0
    if r["point"] != "dense":
        assert r["prep_s"] > 0 and r["model_flops_kept"] < 1
svg = ET.parse(os.path.join(out, "pareto.svg")).getroot()
circles = [e for e in svg.iter() if e.tag.endswith("circle")]
assert len(circles) == 12, len(circles)
PYEOF

# --rebench: the same models and evaluations, only the timing again
before=$(stat -c %Y "$T/out/vit_tiny/int8-0.6.eval.json")
sleep 1
if run --rebench >"$T/table2.md" 2>"$T/err2"; then ok; else bad "--rebench exited $?: $(tail -3 "$T/err2")"; fi
[ "$(stat -c %Y "$T/out/vit_tiny/int8-0.6.eval.json")" = "$before" ] && ok || bad "--rebench evaluated again"
grep -q 'sweep' "$T/err2" && bad "--rebench ran the sweep again" || ok

# refusals: exit 2 before any work
for args in "--batches x" "--reps 0" "--models resnet" "--models a/b=x" "--targets 7" "--bogus"; do
  # shellcheck disable=SC2086
  LPVIT=$L "$SRC/scripts/bench-pareto.sh" --data "$D" --out "$T/never" --no-ort $args >/dev/null 2>"$T/e"
  rc=$?
  want=2
  [ "$rc" = "$want" ] && [ "$(wc -l <"$T/e")" = 1 ] && ok || bad "'$args': exit $rc (want $want), stderr: $(cat "$T/e")"
done
[ ! -e "$T/never/vit_tiny" ] && ok || bad "a refused run left output"

echo "pareto_e2e: $pass passed, $fails failed"
[ "$fails" = 0 ]

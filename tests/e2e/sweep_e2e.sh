#!/usr/bin/env bash
# lpvit sweep as a user runs it, on a random 2-block model and tests/data/imagenet-mini: one run writes the
# Pareto table, the JSON, both SVG plots and the pruned models; the dense model's statistics are computed
# once and read back from the cache by the other targets (and by a second run, for every target); each
# point's FLOPs and density match what lpvit eval says of its saved model; the SVGs parse as XML, hold one
# marker per point, and render to a non-blank PNG (rsvg-convert, Debian's librsvg2-bin); bad flags and an
# output folder inside an input folder are refused with exit 2 before any work.
#   sweep_e2e.sh path/to/lpvit SOURCE_DIR
set -u
L=$1
SRC=$2
T=$(mktemp -d /tmp/lpvit_sweep.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
MINI="$SRC/tests/data/imagenet-mini"

"$L" create-model --dim 64 --heads 2 --depth 2 --img 64 --seed 3 --out "$T/m.safetensors" --quiet || { echo "create-model failed"; exit 1; }
run_sweep() { # out-dir, then extra flags
  local out=$1; shift
  "$L" sweep --model "$T/m.safetensors" --calib-dir "$MINI" --imagenet-dir "$MINI" --targets 0.6,0.8 --block 16 \
    --out-dir "$out" --cache-dir "$T/cache" --reps 2 --threads 2 "$@"
}

# ---- one run: everything written ----
if run_sweep "$T/out" >"$T/table.md" 2>"$T/err"; then ok; else bad "sweep exited $?: $(tail -3 "$T/err")"; fi
for f in sweep.md sweep.json pareto.svg density.svg pruned-0.8.safetensors pruned-0.6.safetensors; do
  [ -s "$T/out/$f" ] && ok || bad "no $f in the output folder"
done
grep -q '^| 0.6 | fp32 |' "$T/table.md" && grep -q '^| dense | fp32 |' "$T/table.md" && ok || bad "stdout table lacks the rows"
cmp -s <(sed -n '/^| point/,/^$/p' "$T/table.md") <(sed -n '/^| point/,/^$/p' "$T/out/sweep.md") && ok \
  || bad "stdout table differs from sweep.md"

# the JSON: points in order, statistics shared, FLOPs on target, densities per layer
"$PY" - "$T/out/sweep.json" <<'PYEOF' && ok || bad "sweep.json checks"
import json, sys
j = json.load(open(sys.argv[1]))
p = j["points"]
assert [x["kind"] for x in p] == ["dense", "pruned", "pruned"], [x["kind"] for x in p]
assert [x["target_flops"] for x in p] == [1, 0.8, 0.6], [x["target_flops"] for x in p]
assert p[0]["speedup"] == 1 and p[0]["flops_kept"] == 1
for x in p[1:]:
    assert abs(x["flops_kept"] - x["target_flops"]) < 0.03, x["flops_kept"]
    assert len(x["density"]) == len(j["layers"]) == 8, (len(x["density"]), len(j["layers"]))
    assert all(0 < d <= 1 for d in x["density"])
    assert x["prune"]["settings"]["target_flops"] == x["target_flops"]
    assert x["speedup"] > 0 and x["time"]["median_ms"] > 0 and x["dense_time"]["reps"] == 2
# the dense model's statistics: computed for the first target, read back by the second
assert p[1]["statistics"]["from_cache"] == 0, p[1]["statistics"]
assert p[2]["statistics"]["from_cache"] >= 1, p[2]["statistics"]
assert any(x["pareto"] for x in p)
assert j["environment"]["cpu"] and len(j["model_sha256"]) == 64 and len(j["validation"]["list_sha256"]) == 64
assert j["validation"]["items"] == p[0]["images"] + p[0]["skipped"]
PYEOF

# a saved point is what the table says it is
flops=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["points"][2]["model_flops_kept"])' "$T/out/sweep.json")
"$L" eval --model "$T/out/pruned-0.6.safetensors" "$MINI" --json "$T/eval.json" --quiet >/dev/null 2>"$T/eval.err" \
  && "$PY" - "$T/eval.json" "$flops" <<'PYEOF' && ok || bad "eval of pruned-0.6 disagrees with the sweep ($(tail -1 "$T/eval.err"))"
import json, sys
e = json.load(open(sys.argv[1]))
assert abs(e["sparsity"]["flops_kept"] - float(sys.argv[2])) < 1e-6, (e["sparsity"]["flops_kept"], sys.argv[2])
PYEOF

# the plots: XML, one marker per point, rendered
"$PY" - "$T/out/pareto.svg" "$T/out/density.svg" <<'PYEOF' && ok || bad "svg checks"
import sys, xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
par = ET.parse(sys.argv[1]).getroot()
den = ET.parse(sys.argv[2]).getroot()
def markers(root):
    return [c for g in root.iter(ns + "g") if g.get("class") == "series" for c in g.iter(ns + "circle")]
assert len(markers(par)) == 3, len(markers(par))          # dense + 2 targets
assert len(markers(den)) == 2 * 8, len(markers(den))      # 2 targets x 8 layers
assert par.get("width") == "760" and den.get("height") == "480"
titles = [t.text for t in par.iter(ns + "title")]
assert any("0.6" in (t or "") for t in titles), titles
PYEOF
if command -v rsvg-convert >/dev/null 2>&1; then
  for s in pareto density; do
    rsvg-convert -o "$T/$s.png" "$T/out/$s.svg" 2>"$T/rsvg.err" || bad "rsvg-convert $s.svg: $(cat "$T/rsvg.err")"
    "$PY" - "$T/$s.png" <<'PYEOF' && ok || bad "$s.png is blank or the wrong size"
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("L")
assert im.size == (760, 480), im.size
dark = sum(1 for v in im.getdata() if v < 128)
assert dark > 2000, dark
PYEOF
  done
else
  echo "skip: rsvg-convert not installed (librsvg2-bin): the SVGs were parsed, not rendered"
fi

# ---- a second run: every target's first statistics from the cache, nothing recomputed for the dense model ----
if run_sweep "$T/out2" --no-models --json "$T/again.json" >/dev/null 2>"$T/err2"; then ok; else bad "second sweep exited $?"; fi
[ ! -e "$T/out2/pruned-0.8.safetensors" ] && ok || bad "--no-models wrote a model"
"$PY" -c '
import json, sys
p = json.load(open(sys.argv[1]))["points"]
assert all(x["statistics"]["from_cache"] == x["statistics"]["steps"] for x in p[1:]), [x["statistics"] for x in p[1:]]
' "$T/again.json" && ok || bad "second run recomputed statistics"

# int8 points: attention in int8 with their int8 linears where VNNI runs it (lpvit eval's default), and
# the JSON says which ran
if run_sweep "$T/out3" --targets 0.8 --precision int8 --no-models --json "$T/q8.json" >/dev/null 2>"$T/err3"; then ok
else bad "int8 sweep exited $?: $(tail -2 "$T/err3")"; fi
want=fp32
"$L" --version | grep -qw 'avx512_vnni\|avx_vnni' && want=int8
"$PY" - "$T/q8.json" "$want" <<'PYEOF' && ok || bad "int8 sweep's attention (expected $want)"
import json, sys
p = json.load(open(sys.argv[1]))["points"]
got = [(x["kind"], x["precision"], x["attention"]) for x in p]
w = sys.argv[2]
assert got == [("dense", "fp32", "fp32"), ("dense", "int8", w), ("pruned", "int8", w)], got
PYEOF

# ---- refused before any work ----
refused() { # name, expected text, args...
  local name=$1 want=$2; shift 2
  "$L" sweep "$@" >"$T/r.out" 2>"$T/r.err"
  local rc=$?
  if [ $rc -eq 2 ] && grep -q -- "$want" "$T/r.err" && [ "$(wc -l <"$T/r.err")" -eq 1 ]; then ok
  else bad "$name: rc $rc, stderr: $(cat "$T/r.err")"; fi
}
base=(--model "$T/m.safetensors" --calib-dir "$MINI" --imagenet-dir "$MINI" --cache-dir "$T/cache")
refused "target above 1" "--targets: expected FLOPs fractions in (0, 1)" "${base[@]}" --targets 0.8,1.2 --out-dir "$T/o3"
refused "target twice" "0.8 is given twice" "${base[@]}" --targets 0.8,0.8 --out-dir "$T/o3"
refused "no out-dir" "--out-dir is required" "${base[@]}" --targets 0.8
refused "no targets" "--targets is required" "${base[@]}" --out-dir "$T/o3"
refused "bad attention" "expected auto, fp32 or int8" "${base[@]}" --targets 0.8 --attention int4 --out-dir "$T/o3"
refused "int8 attention, fp32 points" "goes with --precision int8" "${base[@]}" --targets 0.8 --attention int8 --out-dir "$T/o3"
[ ! -e "$T/o3" ] && ok || bad "a refused run created its output folder"
cp -r "$MINI" "$T/val"
refused "out-dir inside the validation set" "is inside the input folder" --model "$T/m.safetensors" \
  --calib-dir "$MINI" --imagenet-dir "$T/val" --cache-dir "$T/cache" --targets 0.8 --out-dir "$T/val/results"
[ ! -e "$T/val/results" ] && ok || bad "the refused out-dir was left in the validation folder"
: >"$T/afile"
refused "out-dir is a file" "exists and is not a folder" "${base[@]}" --targets 0.8 --out-dir "$T/afile"

echo "sweep_e2e: $pass checks passed, $fails failed"
[ "$fails" -eq 0 ]

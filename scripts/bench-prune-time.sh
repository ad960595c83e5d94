#!/usr/bin/env bash
# How long `lpvit prune` takes on DeiT-B shapes, per phase, from two short runs (issue 21's accounting): a
# random-weight DeiT-B (`lpvit create-model --preset deit_b`), then `lpvit prune --target-flops T --steps S
# --calib-size N --permute-images N --no-cache` at two image counts N1 < N2 on the shared calibration images.
# The difference of the two runs gives each phase's cost per image (and per step), the rest its fixed cost;
# from those it projects the default pipeline at --calib-size images (the channel sort on its default 256
# images; the default steps for T: one per 0.125 of FLOPs removed) and a 1-step one, so the full 2000-image
# run (hours) need not be repeated to see a change. Prints a markdown table and writes OUT/prune-time.{md,json}.
#   scripts/bench-prune-time.sh [--images "16 48"] [--steps 2] [--target 0.5] [--calib-size 2000]
#                               [--threads 2] [--lpvit BIN] [--out DIR] [--data DIR]
#                               [--model-args "--preset deit_b"]   (lpvit create-model's options: another shape)
# Run it on an idle machine: the two runs are compared with each other.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
images="16 48"; steps=2; target=0.5; calib=2000; threads=2; bin=""; out=out/bench-prune-time; data=""
margs="--preset deit_b"
while [ $# -gt 0 ]; do
  case "$1" in
    --images) images=$2; shift 2 ;; --steps) steps=$2; shift 2 ;; --target) target=$2; shift 2 ;;
    --calib-size) calib=$2; shift 2 ;; --threads) threads=$2; shift 2 ;; --lpvit) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;; --data) data=$2; shift 2 ;; --model-args) margs=$2; shift 2 ;;
    *) echo "bench-prune-time.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
read -r n1 n2 extra <<<"$images" || true
if [ -z "${n1:-}" ] || [ -z "${n2:-}" ] || [ -n "${extra:-}" ] || ! [ "$n1" -ge 1 ] 2>/dev/null || ! [ "$n2" -gt "$n1" ] 2>/dev/null; then
  echo "bench-prune-time.sh: --images takes two counts N1 < N2, got '$images'" >&2; exit 2
fi
[ -n "$data" ] || data=$(lpv_data_dir) || exit 2
if [ -z "$bin" ]; then lpv_build || exit 2; bin=build/lpvit; fi
PY=$(lpv_python) || exit 2
mkdir -p "$out"
model="$out/model.safetensors"
# shellcheck disable=SC2086 # the create-model options are words
"$bin" create-model $margs --seed 0 --out "$model" --quiet || { echo "bench-prune-time.sh: create-model $margs failed" >&2; exit 2; }
for n in "$n1" "$n2"; do
  echo "prune: $n images, $steps steps ..." >&2
  "$bin" prune --model "$model" --calib-dir "$data/imagenet-calib-1000" --calib-size "$n" --permute-images "$n" \
    --target-flops "$target" --steps "$steps" --no-cache --threads "$threads" --quiet \
    --json "$out/prune_$n.json" --out "$out/pruned_$n.safetensors" >/dev/null
done
"$PY" - "$out" "$n1" "$n2" "$steps" "$target" "$calib" "$margs" <<'EOF'
import json, math, sys
out, n1, n2, steps, target, calib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
margs = sys.argv[7]
r = [json.load(open("%s/prune_%d.json" % (out, n))) for n in (n1, n2)]
w = [x["wall_s"] for x in r]
env = r[1]["environment"]
# per phase: (label, key, scales with steps, images of the default pipeline)
phases = [("channel sort (gradient pass on 256 images, once)", "permutation", False, 256),
          ("taylor2 statistics", "statistics", True, calib),
          ("sequential refit", "reconstruction", True, calib)]
default_steps = max(1, math.ceil(round((1.0 - target) / 0.125, 9)))
rows, js = [], {"images": [n1, n2], "steps_run": steps, "target": target, "calib_size": calib,
                "default_steps": default_steps, "model_args": margs, "environment": env, "phases": {}}
fixed_other = sum(w[1].get(k, 0) for k in ("load", "calibration_list", "saliency", "cost_model", "allocation",
                                             "refine", "write"))
tot1, totd = fixed_other, fixed_other
for label, key, per_step, n in phases:
    k = steps if per_step else 1
    rate = (w[1][key] - w[0][key]) / (n2 - n1) / k
    if rate < 0:  # the longer run was faster: noise larger than the work (a busy machine, too few images)
        sys.stderr.write("bench-prune-time.sh: %s took less with %d images than with %d; its rate is set to 0 "
                         "(use more images, on an idle machine)\n" % (key, n2, n1))
        rate = 0.0
    fixed = max(0.0, w[0][key] / k - rate * n1)
    one = rate * n + fixed
    t1, td = one, one * (default_steps if per_step else 1)
    tot1 += t1; totd += td
    js["phases"][key] = {"per_image_s": rate, "fixed_s": fixed, "per_step": per_step, "one_step_s": t1,
                         "default_s": td}
    rows.append("| %s%s | %.3f s | %.0f s | %.1f min | %.1f min |" % (label, ", per step" if per_step else "", rate,
                fixed, t1 / 60, td / 60))
js["one_step_total_s"], js["default_total_s"] = tot1, totd
md = ["`lpvit create-model %s` (random weights), `lpvit prune --target-flops %g`, %s threads, %s (%s, isa %s), "
      "lpvit %s; rates from %d and %d images, %d steps:" % (margs, target, env.get("threads"), env.get("cpu"),
      env.get("cpu_family_model"), env.get("isa"), env.get("commit"), n1, n2, steps), "",
      "| phase | per image | fixed | %d images, 1 step | %d images, default %d steps |" % (calib, calib, default_steps),
      "|---|---|---|---|---|"] + rows + [
      "| **total** (with load, allocation, write: %.0f s) | | | **%.1f min** | **%.1f min** |" % (fixed_other, tot1 / 60, totd / 60)]
open("%s/prune-time.md" % out, "w").write("\n".join(md) + "\n")
json.dump(js, open("%s/prune-time.json" % out, "w"), indent=1)
print("\n".join(md))
EOF

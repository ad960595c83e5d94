#!/usr/bin/env bash
# End-to-end tests of the lpvit command line: exit codes (0 ok, 1 failure, 2 usage),
# one-line errors naming the file or flag, no partial outputs, eval/infer/inspect on the
# committed mini ImageFolder (tests/data) with a random model, and the fixtures when
# ../shared is present.
#   cli_e2e.sh path/to/lpvit SOURCE_DIR
set -u
L=$1
SRC=$2
T=$(mktemp -d /tmp/lpvit_e2e.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# run EXPECTED_CODE cmd...: stdout -> $T/out, stderr -> $T/err
run() {
  local want=$1; shift
  "$@" >"$T/out" 2>"$T/err"
  local got=$?
  if [ "$got" != "$want" ]; then bad "exit $got, expected $want: $*"; sed 's/^/    /' "$T/err" | head -5 >&2; return 1; fi
  ok
}
# an error: exactly one stderr line, starting with "lpvit: ", containing $1
one_line_err() {
  local n; n=$(wc -l <"$T/err")
  if [ "$n" != 1 ]; then bad "expected one error line, got $n: $(head -3 "$T/err")"; return; fi
  grep -q "^lpvit: " "$T/err" || bad "error does not start with 'lpvit: ': $(cat "$T/err")"
  grep -qF -- "$1" "$T/err" && ok || bad "error lacks '$1': $(cat "$T/err")"
}
json_get() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }

MINI=$SRC/tests/data/imagenet-mini
FIX=$SRC/../shared/fixtures
# ---- usage errors: exit 2 ----
run 0 "$L" --help; grep -q "eval" "$T/out" || bad "--help lists no commands"
run 2 "$L" frobnicate; one_line_err "unknown command 'frobnicate'"
run 2 "$L" eval --frob; one_line_err "unknown option '--frob'"
run 2 "$L" eval --imagenet-dir "$MINI"; one_line_err "--model is required"
run 2 "$L" eval --model x --imagenet-dir "$MINI" --batch abc; one_line_err "--batch: expected an integer, got 'abc'"
run 2 "$L" eval --model x --imagenet-dir "$MINI" --batch 0; one_line_err "--batch: expected 1..4096, got 0"
run 2 "$L" eval --model x --imagenet-dir "$MINI" --mean 1,2; one_line_err "--mean: expected three numbers"
run 2 "$L" eval --model x --imagenet-dir "$MINI" --threads; one_line_err "--threads needs a value"
run 0 "$L" eval --help; grep -q -- "--imagenet-dir" "$T/out" || bad "eval --help lacks --imagenet-dir"
for c in eval infer inspect create-model; do run 0 "$L" "$c" --help; done

# ---- a random model ----
M=$T/tiny.safetensors
run 0 "$L" create-model --dim 64 --depth 2 --heads 2 --seed 1 --out "$M" --quiet
[ -s "$M" ] && ok || bad "create-model wrote nothing"
run 0 "$L" inspect "$M"; grep -q "width 64, depth 2" "$T/out" || bad "inspect: $(tail -1 "$T/out")"
run 2 "$L" create-model --dim 64 --depth 2 --heads 3 --out "$T/x.safetensors"; one_line_err "not divisible"

# ---- eval ----
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --batch 5 --json "$T/e.json" --quiet
grep -q "^top-1" "$T/out" || bad "eval printed no top-1 line"
[ "$(json_get "$T/e.json" "d['images']")" = 12 ] && ok || bad "eval images != 12"
[ "$(json_get "$T/e.json" "d['skipped']")" = 0 ] && ok || bad "eval skipped != 0"
[ "$(json_get "$T/e.json" "d['dataset']['classes_present']")" = 4 ] && ok || bad "classes_present != 4"
[ "$(json_get "$T/e.json" "'environment' in d and 'model_file' in d and len(d['model_file']['sha256'])")" = 64 ] && ok || bad "eval json lacks provenance"
# the same images through the flat layout give the same predictions
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$SRC/tests/data/flat" --labels "$SRC/tests/data/flat_labels.txt" --json "$T/f.json" --quiet
[ "$(json_get "$T/e.json" "(d['correct_top1'], d['correct_top5'])")" = "$(json_get "$T/f.json" "(d['correct_top1'], d['correct_top5'])")" ] && ok || bad "flat and imagefolder disagree"
# the OpenBLAS dense path gives the same predictions as the default blocked kernel
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --dense-kernel openblas --json "$T/eb.json" --quiet
[ "$(json_get "$T/eb.json" "(d['correct_top1'], d['correct_top5'], d['environment']['dense_kernel'])")" = "$(json_get "$T/e.json" "(d['correct_top1'], d['correct_top5'], 'openblas')")" ] && ok || bad "openblas and blocked dense disagree"
[ "$(json_get "$T/e.json" "d['environment']['dense_kernel']")" = blocked ] && ok || bad "default dense kernel is not blocked"
run 2 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --dense-kernel fast --quiet && one_line_err "--dense-kernel"
# batch size does not change results
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --batch 12 --threads 1 --json "$T/e2.json" --quiet
[ "$(json_get "$T/e.json" "d['correct_top5']")" = "$(json_get "$T/e2.json" "d['correct_top5']")" ] && ok || bad "batch/threads change results"
# --json - replaces the table with JSON on stdout
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --json - --quiet
/usr/bin/python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$T/out" && ok || bad "--json - is not JSON"

# unreadable images are skipped and listed; --strict makes them fatal; non-images are ignored
cp -r "$MINI" "$T/mini"
printf 'not a jpeg' > "$T/mini/n01440764/broken.JPEG"
printf 'notes' > "$T/mini/n01440764/README.txt"
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$T/mini" --json "$T/s.json" --quiet
[ "$(json_get "$T/s.json" "(d['images'], d['skipped'], d['skipped_files'][0]['file'].endswith('broken.JPEG'))")" = "(12, 1, True)" ] && ok || bad "broken image not skipped+listed"
run 1 "$L" eval --model "$M" --heads 2 --imagenet-dir "$T/mini" --strict --quiet; one_line_err "broken.JPEG"

# bad inputs: one line, exit 1, nothing written
run 1 "$L" eval --model "$M" --heads 2 --imagenet-dir "$T/nope" --quiet; one_line_err "'$T/nope'"
mkdir -p "$T/empty"
run 1 "$L" eval --model "$M" --heads 2 --imagenet-dir "$T/empty" --quiet; one_line_err "$T/empty"
mkdir -p "$T/wrongclass/n99999999" && cp "$MINI/n01440764/img1.png" "$T/wrongclass/n99999999/"
run 1 "$L" eval --model "$M" --heads 2 --imagenet-dir "$T/wrongclass" --quiet; one_line_err "n99999999"
head -c 10000 "$M" > "$T/trunc.safetensors"
run 1 "$L" eval --model "$T/trunc.safetensors" --heads 2 --imagenet-dir "$MINI" --quiet; one_line_err "trunc.safetensors"
run 1 "$L" eval --model "$T/missing.safetensors" --imagenet-dir "$MINI" --quiet; one_line_err "does not exist"
run 2 "$L" eval --model deit_q --imagenet-dir "$MINI" --quiet; one_line_err "unknown model 'deit_q'"
LPVIT_MODELS=$T run 1 "$L" eval --model deit_b --imagenet-dir "$MINI" --quiet; one_line_err "download-model.sh deit_b"
run 1 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --json "$T/no/such/dir/r.json" --quiet; one_line_err "r.json"
[ ! -e "$T/no/such/dir/r.json" ] && ok || bad "partial json written"
# heads are recorded in files lpvit writes; a foreign file of unknown width needs --heads (usage error)
run 0 "$L" eval --model "$M" --imagenet-dir "$MINI" --quiet
[ -d "$FIX" ] && { run 2 "$L" eval --model "$FIX/timm_deit_tiny_d2.safetensors" --heads 5 --imagenet-dir "$MINI" --quiet; one_line_err "not divisible by 5 heads"; }
run 1 "$L" inspect "$T/trunc.safetensors"; one_line_err "truncated"

# ---- infer ----
run 0 "$L" infer --model "$M" --heads 2 "$MINI/n01440764/img0.JPEG" "$MINI/n15075141/img11.png" --quiet
[ "$(grep -c '%' "$T/out")" = 10 ] && ok || bad "infer images: expected 2x5 top-5 lines"
run 0 "$L" infer --model "$M" --heads 2 "$MINI/n01440764/img0.JPEG" --json "$T/i.json" --quiet
[ "$(json_get "$T/i.json" "len(d['images'][0]['top5'])")" = 5 ] && ok || bad "infer json"
run 1 "$L" infer --model "$M" --heads 2 "$T/mini/n01440764/broken.JPEG" --quiet; one_line_err "broken.JPEG"
run 2 "$L" infer --model "$M" --input x.safetensors; one_line_err "--input and --out go together"

# ---- prune -> eval -> bench -> export ----
P=$T/pruned.safetensors
C="--cache-dir $T/cache"
for sal in taylor2 fisher lpvit l1; do
  rm -f "$P"
  refine="--refine 1 --refine-images 4"
  [ $sal = taylor2 ] || [ $sal = fisher ] || refine=""
  run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --calib-batch 3 --saliency $sal --target-flops 0.6 \
    --block 16x16 $refine $C --out "$P" --report "$T/r_$sal.json" --quiet
  [ -s "$P" ] && ok || bad "prune $sal wrote nothing"
  [ "$(json_get "$T/r_$sal.json" "abs(d['totals']['achieved_flops_ratio'] - 0.6) <= 0.005")" = True ] && ok || bad "prune $sal missed the target: $(json_get "$T/r_$sal.json" "d['totals']['achieved_flops_ratio']")"
  [ "$(json_get "$T/r_$sal.json" "len(d['layers']) == 8 and d['settings']['saliency'] == '$sal' and len(d['model_sha256']) == 64")" = True ] && ok || bad "prune $sal report"
done
# reconstruction: obs/wanda saliency from input statistics, lsq/obs/bias updates, sequential refit
for upd in "--saliency obs --update lsq" "--saliency wanda --update obs" "--saliency obs --update lsq --sequential" "--update bias"; do
  run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.6 --block 16x16 --refine 1 --refine-images 4 \
    $upd $C --out "$P" --report "$T/ru.json" --quiet
  [ "$(json_get "$T/ru.json" "abs(d['totals']['achieved_flops_ratio'] - 0.6) <= 0.005 and d['reconstruction']['update'] in ('lsq', 'obs', 'bias')")" = True ] && ok || bad "prune $upd"
  run 0 "$L" eval --model "$P" --imagenet-dir "$MINI" --quiet
done
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --sequential --update none --out "$T/x.safetensors" --quiet; one_line_err "--sequential"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --sequential --no-sequential --out "$T/x.safetensors" --quiet; one_line_err "contradict"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --permute magic --out "$T/x.safetensors" --quiet; one_line_err "--permute"
# taylor2's defaults are the whole pipeline (sorted channels, sequential lsq refit); the baselines stay plain
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --permute-images 4 --target-flops 0.6 --block 16x16 $C --out "$P" --report "$T/rd.json" --quiet
[ "$(json_get "$T/rd.json" "(d['settings']['permute'], d['settings']['permute_images'], d['settings']['update'], d['settings']['sequential'])")" = "('sort', 4, 'lsq', True)" ] && ok || bad "taylor2 defaults: $(json_get "$T/rd.json" "d['settings']")"
[ "$(json_get "$T/r_lpvit.json" "(d['settings']['permute'], d['settings']['update'])")" = "('none', 'none')" ] && ok || bad "lpvit baseline must stay faithful"
# a permutation alone (target 1.0, no update) keeps the model's function: same predictions as the dense file
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 1.0 --update none --permute sort --cache-dir "$T/cache-perm" --out "$T/perm.safetensors" --quiet
run 0 "$L" eval --model "$T/perm.safetensors" --imagenet-dir "$MINI" --json "$T/permd.json" --quiet
run 0 "$L" eval --model "$M" --imagenet-dir "$MINI" --json "$T/dense.json" --quiet
[ "$(json_get "$T/permd.json" "(d['correct_top1'], d['correct_top5'])")" = "$(json_get "$T/dense.json" "(d['correct_top1'], d['correct_top5'])")" ] && ok || bad "permuted model predicts differently"
cmp -s "$T/perm.safetensors" "$M" && bad "permuted model is byte-identical to the input" || ok
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --update magic --out "$T/x.safetensors" --quiet; one_line_err "--update"
# --steps: the schedule walks linearly to the target, each step keeps what the earlier ones pruned
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --permute-images 4 --target-flops 0.5 --block 16x16 --steps 3 \
  $C --out "$P" --report "$T/rs.json" --quiet
[ "$(json_get "$T/rs.json" "([round(s['target_flops'], 4) for s in d['steps']], sum(s['blocks_revived'] for s in d['steps']), d['settings']['steps'], abs(d['totals']['achieved_flops_ratio'] - 0.5) <= 0.005)")" = "([0.8333, 0.6667, 0.5], 0, 3, True)" ] && ok || bad "--steps 3: $(json_get "$T/rs.json" "d['steps']")"
run 0 "$L" eval --model "$P" --imagenet-dir "$MINI" --quiet
# default: one step per 0.125 of FLOPs removed when a sequential refit follows, else one
[ "$(json_get "$T/rd.json" "len(d['steps'])")" = 4 ] && ok || bad "taylor2 default steps at 0.6: $(json_get "$T/rd.json" "d['steps']")"
[ "$(json_get "$T/r_lpvit.json" "len(d['steps'])")" = 1 ] && ok || bad "lpvit baseline must prune in one step"
# without a refit the zeros of one step still reach the next
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --block 16x16 --update none --permute none --steps 2 \
  $C --out "$P" --report "$T/rn.json" --quiet
[ "$(json_get "$T/rn.json" "(len(d['steps']), sum(s['blocks_revived'] for s in d['steps']))")" = "(2, 0)" ] && ok || bad "--steps 2 --update none: $(json_get "$T/rn.json" "d['steps']")"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --steps 17 --out "$T/x.safetensors" --quiet; one_line_err "--steps"
# --tune-epochs: block-wise tuning in the final step; every block tuned, none ends worse than its refit
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --permute-images 4 --target-flops 0.5 --block 16x16 --steps 2 \
  --tune-epochs 2 --tune-batch 2 $C --out "$P" --report "$T/rt.json" --quiet
[ "$(json_get "$T/rt.json" "(d['settings']['tune_epochs'], len(d['reconstruction']['block_tuning']['relative_output_error']) == len([l for l in d['layers'] if l['layer'].endswith('.qkv')]) > 0, all(e['tuned'] <= e['refit'] for e in d['reconstruction']['block_tuning']['relative_output_error']))")" = "(2, True, True)" ] && ok || bad "--tune-epochs 2: $(json_get "$T/rt.json" "d['reconstruction']")"
run 0 "$L" eval --model "$P" --imagenet-dir "$MINI" --quiet
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --update none --tune-epochs 2 --out "$T/x.safetensors" --quiet; one_line_err "--tune-epochs"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --tune-epochs 2 --tune-lr 0 --out "$T/x.safetensors" --quiet; one_line_err "--tune-lr"
# the heads: refit by default with a sequential refit (the logits' error drops), left as they were with --no-refit-heads
[ "$(json_get "$T/rt.json" "(d['settings']['refit_heads'], d['reconstruction']['heads']['refit'], d['reconstruction']['heads']['logit_error_after'] < d['reconstruction']['heads']['logit_error_before'])")" = "(True, 1, True)" ] && ok || bad "heads refit: $(json_get "$T/rt.json" "d['reconstruction'].get('heads')")"
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --permute-images 4 --target-flops 0.5 --block 16x16 --steps 1 \
  --no-refit-heads $C --out "$T/nh.safetensors" --report "$T/rnh.json" --quiet
[ "$(json_get "$T/rnh.json" "(d['settings']['refit_heads'], 'heads' in d['reconstruction'], d['reconstruction']['images'])")" = "(False, False, 8)" ] && ok || bad "--no-refit-heads: $(json_get "$T/rnh.json" "d['reconstruction']")"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --head-damp 0 --out "$T/x.safetensors" --quiet; one_line_err "--head-damp"
# the second run with the same inputs reuses the cached statistics
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --block 32x32 --refine 0 $C --out "$P" --report "$T/r.json" --quiet
[ "$(json_get "$T/r.json" "d['calibration']['from_cache']")" = False ] && ok || bad "first run should not hit the cache"
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.4 --block 32x32 --refine 0 $C --out "$P" --report "$T/r.json" --quiet
[ "$(json_get "$T/r.json" "d['calibration']['from_cache']")" = True ] && ok || bad "second run should hit the cache"
run 0 "$L" inspect "$P"; grep -q "bsr_values" "$T/out" && grep -q '"format":"lpvit-bsr-v1"' "$T/out" && ok || bad "pruned file lacks BSR tensors / metadata"
# the name recorded in lpvit.arch survives create-model -> prune -> load (was replaced by a shape guess)
run 0 "$L" inspect "$P"; grep -q "^architecture: random_d64_l2_h2 " "$T/out" && ok || bad "pruned file lost the model's name: $(grep ^architecture "$T/out")"
run 0 "$L" eval --model "$P" --imagenet-dir "$MINI" --json "$T/pe.json"
[ "$(json_get "$T/pe.json" "d['images']")" = 12 ] && ok || bad "eval of the pruned model"
grep -q "recorded in the pruned file" "$T/out" && ok || bad "pruned eval did not reuse the recorded preprocessing"
run 0 "$L" bench --pruned "$P" --reps 2 --warmup 0 --json "$T/b.json" --quiet
[ "$(json_get "$T/b.json" "d['end_to_end']['speedup'] > 0 and 0.4 < d['linear_density'] < 0.95")" = True ] && ok || bad "bench --pruned"
run 0 "$L" bench --model "$M" --density 0.5 --block 16x16 --reps 2 --warmup 0 --no-layers --quiet
run 0 "$L" export --model "$P" --dense-masked --out "$T/masked.safetensors" --quiet
run 0 "$L" inspect "$T/masked.safetensors"; grep -q "bsr_values" "$T/out" && bad "dense-masked export still has BSR tensors" || ok
run 0 "$L" eval --model "$T/masked.safetensors" --imagenet-dir "$MINI" --json "$T/me.json" --quiet
[ "$(json_get "$T/pe.json" "(d['correct_top1'], d['correct_top5'])")" = "$(json_get "$T/me.json" "(d['correct_top1'], d['correct_top5'])")" ] && ok || bad "BSR and dense-masked disagree"
# speed objectives: a measured time table, reused from a file
run 0 "$L" bench --calibrate --model "$M" --block 32x32 --reps 2 --out "$T/tt.json" --quiet
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --objective speed+power --lambda-power 0.5 --cost-table "$T/tt.json" --refine 0 $C --out "$P" --report "$T/r.json" --quiet
[ "$(json_get "$T/r.json" "'predicted_speedup_pruned_layers' in d['totals']")" = True ] && ok || bad "speed objective reports no predicted speedup"
# bad inputs: usage errors exit 2, data errors exit 1, never an output file
rm -f "$T/x.safetensors"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0 --out "$T/x.safetensors"; one_line_err "--target-flops: expected a ratio in (0, 1], got 0"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 1.5 --out "$T/x.safetensors"; one_line_err "got 1.5"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --block 24x24 --out "$T/x.safetensors"; one_line_err "--block: expected RxC"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --saliency magic --out "$T/x.safetensors"; one_line_err "--saliency"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --out "$M" --quiet; one_line_err "is the input model"
run 1 "$L" prune --model "$M" --calib-dir "$T/empty" --target-flops 0.5 --out "$T/x.safetensors" --quiet; one_line_err "$T/empty"
run 1 "$L" prune --model deit_t --weights "$M" --calib-dir "$MINI" --target-flops 0.5 --out "$T/x.safetensors" --quiet; one_line_err "does not match preset 'deit_t'"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.02 --min-density 0.05 --saliency l1 --allocator greedy --out "$T/x.safetensors" --quiet; one_line_err "--min-density"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --exclude "blocks.9.*" --out "$T/x.safetensors" --quiet; one_line_err "matches no layer"
[ ! -e "$T/x.safetensors" ] && ok || bad "a failed prune left an output file"
ls "$T"/*.tmp.* >/dev/null 2>&1 && bad "temporary files left behind" || ok

if [ -d "$FIX" ]; then
  run 0 "$L" infer --model "$FIX/timm_deit_tiny_d2.safetensors" --input "$FIX/timm_deit_tiny_d2.ref.safetensors" --out "$T/logits.safetensors" --quiet
  run 0 "$L" inspect "$T/logits.safetensors"; grep -q "logits .*F32 .*\[4, 1000\]" "$T/out" && ok || bad "infer --out tensor: $(head -1 "$T/out")"
  cp "$FIX/timm_deit_tiny_d2.ref.safetensors" "$T/in.safetensors"
  run 2 "$L" infer --model "$FIX/timm_deit_tiny_d2.safetensors" --input "$T/in.safetensors" --out "$T/in.safetensors" --quiet; one_line_err "is the input file"
  run 1 "$L" infer --model "$FIX/timm_deit_tiny_d2.safetensors" --input "$M" --out "$T/o.safetensors" --quiet; one_line_err "no tensor named 'input'"
  [ ! -e "$T/o.safetensors" ] && ok || bad "partial infer output"
  # HF folders load as they are
  run 0 "$L" inspect "$FIX/hf_deit_tiny_distilled_d2/model.safetensors"; grep -q "hf-deit names" "$T/out" && ok || bad "HF inspect"
else
  echo "skip fixture checks: $FIX not found"
fi

echo "cli_e2e: $pass checks passed, $fails failed"
[ "$fails" = 0 ]

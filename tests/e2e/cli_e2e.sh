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
# JSON reports are read with lpv_json (a dotted path, nothing evaluated) from scripts/lib.sh
. "$SRC/scripts/lib.sh"

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
grep -q "^throughput .* decoder thread.*lpvit bench times the model alone" "$T/out" && ok || bad "eval's throughput line does not say the decoder shares the CPUs"
[ "$(lpv_json "$T/e.json" images)" = 12 ] && ok || bad "eval images != 12"
[ "$(lpv_json "$T/e.json" skipped)" = 0 ] && ok || bad "eval skipped != 0"
[ "$(lpv_json "$T/e.json" dataset.classes_present)" = 4 ] && ok || bad "classes_present != 4"
lpv_json_has "$T/e.json" environment && [ "$(lpv_json_len "$T/e.json" model_file.sha256)" = 64 ] && ok || bad "eval json lacks provenance"
# the same images through the flat layout give the same predictions
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$SRC/tests/data/flat" --labels "$SRC/tests/data/flat_labels.txt" --json "$T/f.json" --quiet
[ "$(lpv_json "$T/e.json" correct_top1 correct_top5)" = "$(lpv_json "$T/f.json" correct_top1 correct_top5)" ] && ok || bad "flat and imagefolder disagree"
# the OpenBLAS dense path gives the same predictions as lpvit's blocked kernel
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --dense-kernel openblas --json "$T/eb.json" --quiet
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --dense-kernel blocked --json "$T/ek.json" --quiet
[ "$(lpv_json "$T/eb.json" correct_top1 correct_top5)" = "$(lpv_json "$T/ek.json" correct_top1 correct_top5)" ] \
  && [ "$(lpv_json "$T/eb.json" environment.dense_kernel)" = openblas ] \
  && [ "$(lpv_json "$T/ek.json" environment.dense_kernel)" = blocked ] && ok || bad "openblas and blocked dense disagree"
# the default (auto): OpenBLAS only where the kernels run AVX2 and OpenBLAS one of its AVX2 cores
want=blocked
case "$(lpv_json "$T/e.json" environment.isa)/$(lpv_json "$T/e.json" environment.openblas_core)" in
  avx2/Haswell|avx2/Zen|avxvnni/Haswell|avxvnni/Zen) want=openblas ;; # avxvnni's FP32 kernels are avx2's
esac
[ "$(lpv_json "$T/e.json" environment.dense_kernel)" = "$want" ] && ok || bad "default dense kernel is not $want"
case " $(lpv_json "$T/e.json" environment.cpu_features) " in
  *" avx2 "*)
    OPENBLAS_CORETYPE=Haswell run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --isa avx2 --json "$T/ea.json" --quiet
    [ "$(lpv_json "$T/ea.json" environment.dense_kernel)" = openblas ] && ok || bad "auto: avx2 + Haswell core is not openblas"
    OPENBLAS_CORETYPE=Haswell run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --isa ref --json "$T/ea.json" --quiet
    [ "$(lpv_json "$T/ea.json" environment.dense_kernel)" = blocked ] && ok || bad "auto: --isa ref is not blocked" ;;
  *) echo "SKIP auto dense kernel with an AVX2 OpenBLAS core: no avx2 on this cpu" ;;
esac
run 2 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --dense-kernel fast --quiet && one_line_err "--dense-kernel"
# batch size does not change results
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --batch 12 --threads 1 --json "$T/e2.json" --quiet
[ "$(lpv_json "$T/e.json" correct_top5)" = "$(lpv_json "$T/e2.json" correct_top5)" ] && ok || bad "batch/threads change results"
# --json - replaces the table with JSON on stdout
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --json - --quiet
lpv_json "$T/out" . >/dev/null && ok || bad "--json - is not JSON"

# --precision bf16: the block linears in BF16 where the CPU has AVX512-BF16 (the reference kernel under --isa ref)
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --isa ref --precision bf16 --json "$T/ebr.json" --quiet
[ "$(lpv_json "$T/ebr.json" precision)" = bf16 ] && ok || bad "eval --precision bf16 did not run in bf16"
if "$L" --version | grep -q avx512_bf16; then
  run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --precision bf16 --json "$T/eb16.json" --quiet
  [ "$(lpv_json "$T/eb16.json" precision)" = bf16 ] && [ "$(lpv_json "$T/eb16.json" images)" = 12 ] && ok || bad "eval --precision bf16"
else
  echo "skip avx512bf16 eval: not on this cpu"
  run 1 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --precision bf16 --quiet; one_line_err "--precision bf16 needs isa avx512bf16"
fi
run 2 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --precision fp16 --quiet; one_line_err "--precision: expected fp32, bf16 or int8"
# --precision int8: every ISA runs it (reference, AVX2, AVX-VNNI, AVX-512 VNNI). The 255-level kernels have the
# reference's int32 sums; AVX2's inputs have 127 levels (bsr.h), so its count may move by an image.
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --isa ref --precision int8 --json "$T/eqr.json" --quiet
[ "$(lpv_json "$T/eqr.json" precision)" = int8 ] && [ "$(lpv_json "$T/eqr.json" images)" = 12 ] && ok || bad "eval --precision int8 (ref)"
for isa in avx2 avxvnni avx512; do
  feature=$isa; [ $isa = avx512 ] && feature=avx512f; [ $isa = avxvnni ] && feature=avx_vnni
  if "$L" --version | grep -qw "$feature"; then
    run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --isa $isa --precision int8 --json "$T/eq.json" --quiet
    got=$(lpv_json "$T/eq.json" correct_top5) want=$(lpv_json "$T/eqr.json" correct_top5) slack=0
    [ "$(lpv_json "$T/eq.json" int8_kernel)" = avx2 ] && slack=1 # also --isa avx512 without avx512_vnni
    [ "$(lpv_json "$T/eq.json" environment.isa)" = $isa ] && [ $((got > want ? got - want : want - got)) -le $slack ] \
      && ok || bad "eval --precision int8 --isa $isa: top-5 count $got, the reference's $want"
  else echo "skip int8 eval --isa $isa: not on this cpu"; fi
done

# unreadable images are skipped and listed; --strict makes them fatal; non-images are ignored
cp -r "$MINI" "$T/mini"
printf 'not a jpeg' > "$T/mini/n01440764/broken.JPEG"
printf 'notes' > "$T/mini/n01440764/README.txt"
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$T/mini" --json "$T/s.json" --quiet
[ "$(lpv_json "$T/s.json" images skipped)" = "$(printf '%s\n' 12 1)" ] \
  && [[ "$(lpv_json "$T/s.json" skipped_files.0.file)" == *broken.JPEG ]] && ok || bad "broken image not skipped+listed"
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
[ "$(lpv_json_len "$T/i.json" images.0.top5)" = 5 ] && ok || bad "infer json"
run 1 "$L" infer --model "$M" --heads 2 "$T/mini/n01440764/broken.JPEG" --quiet; one_line_err "broken.JPEG"
run 2 "$L" infer --model "$M" --input x.safetensors; one_line_err "--input and --out go together"

# ---- preprocessing from the hub's config beside the weights (timm config.json, transformers preprocessor) ----
mkdir -p "$T/cfg/timm" "$T/cfg/hf"
"$(lpv_python)" - "$M" "$T/cfg/timm/model.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = {k: v for k, v in json.loads(b[8:8 + n]).items() if k != "__metadata__"}
hb = json.dumps(h).encode()
hb += b" " * ((8 - len(hb) % 8) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
cp "$T/cfg/timm/model.safetensors" "$T/cfg/hf/model.safetensors"
echo '{"architecture": "x", "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_pct": 0.95, "interpolation": "bilinear"}}' >"$T/cfg/timm/config.json"
echo '{"crop_size": {"height": 224, "width": 224}, "do_center_crop": true, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": {"height": 256, "width": 256}}' >"$T/cfg/hf/preprocessor_config.json"
run 0 "$L" eval --model "$T/cfg/timm/model.safetensors" --heads 2 "$MINI" --quiet
grep -q "resize 235 bilinear, crop 224 (crop_pct 0.95), mean 0.5,0.5,0.5, std 0.5,0.5,0.5 \[config.json beside" "$T/out" && ok || bad "timm config.json not read: $(grep preprocess "$T/out")"
run 0 "$L" eval --model "$T/cfg/hf/model.safetensors" --heads 2 "$MINI" --quiet
grep -q "resize 256 bicubic, crop 224 (crop_pct 0.875), mean 0.485,0.456,0.406, std 0.229,0.224,0.225 \[preprocessor_config.json" "$T/out" && ok || bad "preprocessor_config.json not read: $(grep preprocess "$T/out")"
rm "$T/cfg/hf/preprocessor_config.json"
run 2 "$L" eval --model "$T/cfg/hf/model.safetensors" --heads 2 "$MINI" --quiet; one_line_err "give --mean and --std"

# ---- models where users keep them: timm hub names, the Hugging Face cache ----
HFC=$T/hf/models--timm--deit_tiny_patch16_224.fb_in1k
mkdir -p "$HFC/refs" "$HFC/snapshots/abc123"
printf 'abc123' >"$HFC/refs/main"
run 0 "$L" create-model --preset deit_t --depth 12 --out "$HFC/snapshots/abc123/model.safetensors" --quiet
HF_HUB_CACHE=$T/hf LPVIT_MODELS=$T/none run 0 "$L" eval --model timm/deit_tiny_patch16_224.fb_in1k "$MINI" --limit 2 --json "$T/hf.json" --quiet
[ "$(lpv_json "$T/hf.json" model_file.path)" = "$HFC/snapshots/abc123/model.safetensors" ] && ok || bad "timm/ name not found in the HF cache"
HF_HUB_CACHE=$T/nohf LPVIT_MODELS=$T/none run 1 "$L" eval --model hf-hub:timm/deit_small_patch16_224.fb_in1k "$MINI" --quiet
one_line_err "$T/nohf/models--timm--deit_small_patch16_224.fb_in1k/snapshots/main/model.safetensors"

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
  lpv_near "$(lpv_json "$T/r_$sal.json" totals.achieved_flops_ratio)" 0.6 0.005 && ok || bad "prune $sal missed the target: $(lpv_json "$T/r_$sal.json" totals.achieved_flops_ratio)"
  [ "$(lpv_json_len "$T/r_$sal.json" layers)" = 8 ] && [ "$(lpv_json "$T/r_$sal.json" settings.saliency)" = "$sal" ] \
    && [ "$(lpv_json_len "$T/r_$sal.json" model_sha256)" = 64 ] && ok || bad "prune $sal report"
done
# reconstruction: obs/wanda saliency from input statistics, lsq/obs/bias updates, sequential refit
for upd in "--saliency obs --update lsq" "--saliency wanda --update obs" "--saliency obs --update lsq --sequential" "--update bias"; do
  run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.6 --block 16x16 --refine 1 --refine-images 4 \
    $upd $C --out "$P" --report "$T/ru.json" --quiet
  lpv_near "$(lpv_json "$T/ru.json" totals.achieved_flops_ratio)" 0.6 0.005 \
    && [[ "$(lpv_json "$T/ru.json" reconstruction.update)" =~ ^(lsq|obs|bias)$ ]] && ok || bad "prune $upd"
  run 0 "$L" eval --model "$P" --imagenet-dir "$MINI" --quiet
done
# int8: quantize writes I8 weights + scales; eval runs the file in int8 with the results of --precision int8;
# calibration from any folder when the loss needs no labels: flat (tests/data/flat) or nested with any names
run 0 "$L" prune --model "$M" --calib-dir "$SRC/tests/data/flat" --calib-size 8 --target-flops 0.6 --no-cache \
  --out "$T/pflat.safetensors" --report "$T/rflat.json" --quiet
[ "$(lpv_json "$T/rflat.json" calibration.images)" = 8 ] && ok || bad "prune from a flat folder: $(lpv_json "$T/rflat.json" calibration.images) images"
# an OPENBLAS_CORETYPE the user set is kept; on an AVX-512 cpu a non-AVX-512 core gets one warning line
if grep -qw avx512f /proc/cpuinfo; then
  for core in Haswell SkylakeX; do
    OPENBLAS_CORETYPE=$core run 0 "$L" prune --model "$M" --calib-dir "$SRC/tests/data/flat" --calib-size 4 --target-flops 0.6 \
      --no-cache --out "$T/pcore.safetensors" --report "$T/rcore.json"
    n=$(grep -c "warning: OPENBLAS_CORETYPE=$core keeps OpenBLAS on its non-AVX-512 kernels" "$T/err")
    if [ $core = Haswell ]; then [ "$n" = 1 ] && ok || bad "OPENBLAS_CORETYPE=Haswell: expected one warning, got $n"
    else [ "$n" = 0 ] && ok || bad "OPENBLAS_CORETYPE=SkylakeX warned: $(grep warning "$T/err" | head -2)"; fi
  done
else
  echo "skip: OPENBLAS_CORETYPE warning (this cpu has no avx512f)"
fi
# every step is announced, the first one too (step 1/N never printed)
run 0 "$L" prune --model "$M" --calib-dir "$SRC/tests/data/flat" --calib-size 8 --target-flops 0.6 --steps 2 --no-cache \
  --out "$T/pflat2.safetensors"
grep -q "^lpvit: step 1/2: target FLOPs" "$T/err" && grep -q "^lpvit: step 2/2: target FLOPs" "$T/err" && ok || bad "prune did not announce its steps"
grep -q $'\r' "$T/err" && bad "prune wrote a carriage return into a log file" || ok
mkdir -p "$T/nest/a/b" "$T/nest/c"
cp "$SRC/tests/data/flat/img0.JPEG" "$T/nest/a/"; cp "$SRC/tests/data/flat/img1.png" "$T/nest/a/b/"; cp "$SRC/tests/data/flat/img2.jpg" "$T/nest/c/"
run 0 "$L" prune --model "$M" --calib-dir "$T/nest" --target-flops 0.6 --no-cache --out "$T/pnest.safetensors" --report "$T/rnest.json" --quiet
[ "$(lpv_json "$T/rnest.json" calibration.images)" = 3 ] && ok || bad "prune from nested folders"
run 1 "$L" prune --model "$M" --calib-dir "$SRC/tests/data/flat" --loss ce --target-flops 0.6 --no-cache --out "$T/x.safetensors" --quiet
one_line_err "--loss ce needs class labels"

# prune --quant int8 writes a pruned int8 file; export --dense-masked gives FP32 again
run 0 "$L" quantize --model "$M" --out "$T/q8.safetensors" --quiet
run 0 "$L" inspect "$T/q8.safetensors" --json "$T/iq8.json"
[ "$(lpv_json "$T/iq8.json" architecture.precision)" = int8 ] && [ "$(lpv_json "$T/iq8.json" architecture.int8.layers)" = 8 ] \
  && ok || bad "inspect of a quantized file: $(lpv_json "$T/iq8.json" architecture)"
run 0 "$L" eval --model "$T/q8.safetensors" --heads 2 --imagenet-dir "$MINI" --json "$T/eq8f.json" --quiet
run 0 "$L" eval --model "$M" --heads 2 --imagenet-dir "$MINI" --precision int8 --json "$T/eq8p.json" --quiet
[ "$(lpv_json "$T/eq8f.json" precision)" = int8 ] && [ "$(lpv_json "$T/eq8f.json" correct_top5)" = "$(lpv_json "$T/eq8p.json" correct_top5)" ] \
  && ok || bad "eval of the quantized file differs from --precision int8"
# --attention auto (the default): attention's products in int8 with int8 linears where AVX-512 VNNI or
# AVX-VNNI runs them, else FP32 silently; --attention int8 (= --int8-attention) warns where it cannot run
run 0 "$L" eval --model "$T/q8.safetensors" --heads 2 --imagenet-dir "$MINI" --int8-attention --json "$T/eq8a.json"
case "$(lpv_json "$T/eq8f.json" int8_kernel)" in
  avx512vnni | avxvnni)
    [ "$(lpv_json "$T/eq8a.json" attention)" = int8 ] && [ "$(lpv_json "$T/eq8f.json" attention)" = int8 ] \
      && [ "$(lpv_json "$T/eq8p.json" attention)" = int8 ] \
      && ok || bad "int8 attention by default and with --int8-attention: $(lpv_json "$T/eq8f.json" attention) $(lpv_json "$T/eq8a.json" attention)" ;;
  *)
    echo "SKIP int8 attention: no AVX-512 VNNI or AVX-VNNI here" >&2
    [ "$(lpv_json "$T/eq8a.json" attention)" = fp32 ] && grep -q "attention stays FP32" "$T/err" \
      && [ "$(lpv_json "$T/eq8f.json" attention)" = fp32 ] && ok || bad "eval --int8-attention fallback" ;;
esac
run 0 "$L" eval --model "$T/q8.safetensors" --heads 2 --imagenet-dir "$MINI" --attention fp32 --json "$T/eq8n.json" --quiet
[ "$(lpv_json "$T/eq8n.json" attention)" = fp32 ] && ok || bad "eval --attention fp32: $(lpv_json "$T/eq8n.json" attention)"
if "$L" --version | grep -qw avx_vnni; then # the AVX-VNNI kernel under its own level
  run 0 "$L" eval --model "$T/q8.safetensors" --heads 2 --imagenet-dir "$MINI" --isa avxvnni --json "$T/eq8v.json" --quiet
  [ "$(lpv_json "$T/eq8v.json" attention)" = int8 ] && [ "$(lpv_json "$T/eq8v.json" int8_kernel)" = avxvnni ] \
    && ok || bad "int8 attention --isa avxvnni: $(lpv_json "$T/eq8v.json" attention) $(lpv_json "$T/eq8v.json" int8_kernel)"
else echo "SKIP int8 attention --isa avxvnni: no AVX-VNNI here" >&2; fi
run 0 "$L" eval --model "$T/q8.safetensors" --heads 2 --imagenet-dir "$MINI" --isa avx2 --json "$T/eq8c.json"
[ "$(lpv_json "$T/eq8c.json" attention)" = fp32 ] && ! grep -q "attention stays FP32" "$T/err" && ok || bad "default attention under --isa avx2"
run 0 "$L" eval --model "$T/q8.safetensors" --heads 2 --imagenet-dir "$MINI" --attention int8 --isa avx2 --json "$T/eq8b.json"
[ "$(lpv_json "$T/eq8b.json" attention)" = fp32 ] && grep -q "attention stays FP32" "$T/err" && ok || bad "--attention int8 under --isa avx2"
run 2 "$L" eval --model "$T/q8.safetensors" --heads 2 --imagenet-dir "$MINI" --attention int4 --quiet; one_line_err "expected auto, fp32 or int8"
run 2 "$L" infer --model "$T/q8.safetensors" --heads 2 --int8-attention --attention fp32 "$MINI"/*/*.JPEG --quiet; one_line_err "disagree"
run 2 "$L" bench --peak --attention int8 --quiet; one_line_err "--precision int8"
run 2 "$L" bench --peak --attention bogus --quiet; one_line_err "expected auto, fp32 or int8"
run 2 "$L" bench --model deit_t --random-weights --int8-attention --reps 1 --no-layers --quiet; one_line_err "--precision int8"
run 2 "$L" quantize --model "$M" --quiet; one_line_err "--out is required"
run 2 "$L" quantize --model "$M" --out "$M" --quiet; one_line_err "never overwrites an input"
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.6 --block 16x16 $C --quant int8 \
  --out "$T/pq8.safetensors" --report "$T/rq8.json" --quiet
[ "$(lpv_json "$T/rq8.json" quantization)" = int8 ] && ok || bad "prune --quant int8 report"
run 0 "$L" inspect "$T/pq8.safetensors"
grep -q 'bsr_values *I8' "$T/out" && grep -q '^int8: 8 of' "$T/out" && ok || bad "prune --quant int8 did not write BSR int8"
run 0 "$L" eval --model "$T/pq8.safetensors" --heads 2 --imagenet-dir "$MINI" --json "$T/epq8.json" --quiet
[ "$(lpv_json "$T/epq8.json" precision)" = int8 ] && ok || bad "eval of a pruned int8 file"
run 0 "$L" export --model "$T/pq8.safetensors" --dense-masked --out "$T/pq8dm.safetensors" --quiet
run 0 "$L" inspect "$T/pq8dm.safetensors"
! grep -q ' I8 ' "$T/out" && ok || bad "export --dense-masked of an int8 file kept I8 tensors"
# --dtype bf16: refused for int8 weights as they are (exit 2, one line), written decoded with --dense-masked
run 2 "$L" export --model "$T/pq8.safetensors" --dtype bf16 --out "$T/pq8bf.safetensors" --quiet; one_line_err "--dense-masked"
[ ! -e "$T/pq8bf.safetensors" ] && ok || bad "a refused bf16 export left a file"
run 0 "$L" export --model "$T/pq8.safetensors" --dense-masked --dtype bf16 --out "$T/pq8bf.safetensors" --quiet
run 0 "$L" inspect "$T/pq8bf.safetensors"
grep -q ' BF16 ' "$T/out" && ! grep -q ' F32 \| I8 ' "$T/out" && ok || bad "export --dtype bf16 left F32 or I8 tensors"
run 2 "$L" export --model "$T/pq8.safetensors" --dtype f16 --out "$T/x.safetensors" --quiet; one_line_err "--dtype"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --quant int4 --out "$T/x.safetensors" --quiet; one_line_err "--quant"
# a codebook per layer: uint8 codes + levels, inspect says so, eval runs it in FP32 (and in int8), prune writes one
run 0 "$L" quantize --model "$M" --codebook 16 --out "$T/cb.safetensors" --quiet
run 0 "$L" inspect "$T/cb.safetensors" --json "$T/icb.json"
[ "$(lpv_json "$T/icb.json" architecture.codebook.layers architecture.codebook.levels_max architecture.codebook.layers_4bit)" = "$(printf '%s\n' 8 16 8)" ] \
  && ok || bad "inspect of a codebook file: $(lpv_json "$T/icb.json" architecture)"
run 0 "$L" inspect "$T/cb.safetensors"
grep -q 'blocks.0.mlp.fc1.weight *U8' "$T/out" && grep -q 'fc1.weight_codebook *F32' "$T/out" && ok || bad "codebook tensors not in the file"
run 0 "$L" eval --model "$T/cb.safetensors" --heads 2 --imagenet-dir "$MINI" --json "$T/ecb.json" --quiet
[ "$(lpv_json "$T/ecb.json" precision)" = fp32 ] && ok || bad "eval of a codebook file: $(lpv_json "$T/ecb.json" precision)"
run 0 "$L" eval --model "$T/cb.safetensors" --heads 2 --imagenet-dir "$MINI" --precision int8 --quiet
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.6 --block 16x16 $C --quant codebook:4 \
  --out "$T/pcb.safetensors" --report "$T/rcb.json" --quiet
[ "$(lpv_json "$T/rcb.json" quantization)" = codebook:4 ] && ok || bad "prune --quant codebook:4 report"
run 0 "$L" inspect "$T/pcb.safetensors"
grep -q 'bsr_values *U8' "$T/out" && grep -q '^codebook: 8 of' "$T/out" && ok || bad "prune --quant codebook:4 did not write BSR codes"
run 0 "$L" export --model "$T/pcb.safetensors" --dense-masked --out "$T/pcbdm.safetensors" --quiet
run 0 "$L" inspect "$T/pcbdm.safetensors"
! grep -q ' U8 ' "$T/out" && ok || bad "export --dense-masked of a codebook file kept U8 codes"
# GPTQ rounding (--calib-dir): the same grid as round to nearest, a report with every block linear's errors
run 0 "$L" quantize --model "$M" --heads 2 --codebook 16 --calib-dir "$MINI" --calib-size 6 --json --out "$T/cbg.safetensors" --quiet
[ "$(lpv_json "$T/out" calibration.images gptq.grid gptq.levels gptq.order gptq.fit)" = "$(printf '%s\n' 6 codebook 16 act energy)" ] \
  && [ "$(grep -c '"err_gptq"' "$T/out")" = 8 ] && lpv_less "$(lpv_json "$T/out" gptq.median_err_gptq)" "$(lpv_json "$T/out" gptq.median_err_rtn)" \
  && ok || bad "quantize --calib-dir report: $(head -c 400 "$T/out")"
run 0 "$L" inspect "$T/cbg.safetensors"
grep -q 'blocks.0.mlp.fc1.weight *U8' "$T/out" && ok || bad "a GPTQ codebook file is not codes"
run 0 "$L" quantize --model "$M" --heads 2 --calib-dir "$MINI" --calib-size 6 --gptq-order index --out "$T/q8g.safetensors"
grep -q '^output error .*gptq' "$T/out" && ok || bad "quantize --calib-dir summary: $(cat "$T/out")"
run 0 "$L" eval --model "$T/q8g.safetensors" --heads 2 --imagenet-dir "$MINI" --json "$T/eq8g.json" --quiet
[ "$(lpv_json "$T/eq8g.json" precision)" = int8 ] && ok || bad "eval of a GPTQ int8 file"
run 2 "$L" quantize --model "$M" --calib-dir "$MINI" --gptq-order random --out "$T/x.safetensors" --quiet; one_line_err "--gptq-order"
run 1 "$L" quantize --model "$M" --calib-dir "$T/nope" --out "$T/x.safetensors" --quiet; one_line_err "--calib-dir '$T/nope'"
run 2 "$L" quantize --model "$T/q8.safetensors" --heads 2 --calib-dir "$MINI" --out "$T/x.safetensors" --quiet; one_line_err "int8 already"
[ ! -e "$T/x.safetensors" ] && ok || bad "a failed quantize left a file"
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.6 --block 16x16 $C --quant int8 \
  --quant-images 4 --out "$T/pq8g.safetensors" --report "$T/rq8g.json" --quiet
[ "$(lpv_json "$T/rq8g.json" quantization_rounding.method quantization_rounding.images)" = "$(printf '%s\n' gptq 4)" ] \
  && ok || bad "prune --quant int8 with gptq: $(lpv_json "$T/rq8g.json" quantization_rounding)"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --quant int8 --quant-rounding up --out "$T/x.safetensors" --quiet; one_line_err "--quant-rounding"
run 2 "$L" quantize --model "$M" --codebook 300 --out "$T/x.safetensors" --quiet; one_line_err "--codebook"
# static input grids (--act-scales) and SmoothQuant (--smooth): the report and the file say which inputs are
# static; usage errors are one line and exit 2
run 0 "$L" quantize --model "$M" --heads 2 --calib-dir "$MINI" --calib-size 6 --act-scales mse \
  --smooth 0.5 --json --out "$T/q8s.safetensors" --quiet
[ "$(lpv_json "$T/out" inputs.scales smoothing.alpha rounding)" = "$(printf '%s\n' mse 0.5 gptq)" ] \
  && [ "$(grep -c '"mse_minmax"' "$T/out")" = 6 ] && [ "$(grep -c '"spread_after"' "$T/out")" = 6 ] \
  && ok || bad "quantize --act-scales --smooth report: $(head -c 400 "$T/out")"
run 0 "$L" inspect "$T/q8s.safetensors" --json "$T/iq8s.json"
[ "$(lpv_json "$T/iq8s.json" architecture.int8.inputs_per_tensor architecture.int8.inputs_per_token)" = "$(printf '%s\n' 6 2)" ] \
  && ok || bad "inspect of a static-input file: $(lpv_json "$T/iq8s.json" architecture.int8)"
run 0 "$L" eval --model "$T/q8s.safetensors" --heads 2 --imagenet-dir "$MINI" --json "$T/eq8s.json" --quiet
[ "$(lpv_json "$T/eq8s.json" precision int8_static_inputs)" = "$(printf '%s\n' int8 6)" ] && ok || bad "eval of a static-input file"
# an unreadable calibration image is skipped and counted once, though the static grids take a second pass
mkdir -p "$T/calq" && cp "$SRC/tests/data/flat/"* "$T/calq/" && echo garbage > "$T/calq/zz.JPEG"
run 0 "$L" quantize --model "$M" --heads 2 --calib-dir "$T/calq" --act-scales minmax --json --out "$T/q8c.safetensors" --quiet
[ "$(lpv_json "$T/out" calibration.images calibration.skipped)" = "$(printf '%s\n' 12 1)" ] \
  && ok || bad "quantize --act-scales with a broken image: $(lpv_json "$T/out" calibration)"
run 2 "$L" quantize --model "$M" --smooth 0.5 --out "$T/x.safetensors" --quiet; one_line_err "--smooth needs --calib-dir"
run 2 "$L" quantize --model "$M" --calib-dir "$MINI" --act-scales p99 --out "$T/x.safetensors" --quiet; one_line_err "--act-scales"
run 2 "$L" quantize --model "$M" --calib-dir "$MINI" --act-scales mse --act-layers qkv,fc3 --out "$T/x.safetensors" --quiet
one_line_err "--act-layers"
run 2 "$L" quantize --model "$M" --calib-dir "$MINI" --act-scales mse --codebook 16 --out "$T/x.safetensors" --quiet
one_line_err "for int8"
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.6 --block 16x16 $C --quant int8 \
  --quant-images 4 --quant-act minmax --quant-smooth 0.8 --out "$T/pq8s.safetensors" --report "$T/rq8s.json" --quiet
[ "$(lpv_json "$T/rq8s.json" quantization_inputs quantization_smooth_alpha)" = "$(printf '%s\n' minmax 0.8)" ] \
  && [ "$(lpv_json_len "$T/rq8s.json" quantization_static_inputs)" = 6 ] \
  && ok || bad "prune --quant-act --quant-smooth report: $(lpv_json "$T/rq8s.json" quantization_inputs quantization_static_inputs)"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --quant-act mse --out "$T/x.safetensors" --quiet
one_line_err "--quant-act"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --quant codebook:0 --out "$T/x.safetensors" --quiet; one_line_err "--quant"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --sequential --update none --out "$T/x.safetensors" --quiet; one_line_err "--sequential"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --sequential --no-sequential --out "$T/x.safetensors" --quiet; one_line_err "contradict"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --permute magic --out "$T/x.safetensors" --quiet; one_line_err "--permute"
# taylor2's defaults are the whole pipeline (sorted channels, sequential lsq refit); the baselines stay plain
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --permute-images 4 --target-flops 0.6 --block 16x16 $C --out "$P" --report "$T/rd.json" --quiet
[ "$(lpv_json "$T/rd.json" settings.permute settings.permute_images settings.update settings.sequential)" = "$(printf '%s\n' sort 4 lsq true)" ] \
  && ok || bad "taylor2 defaults: $(lpv_json "$T/rd.json" settings)"
[ "$(lpv_json "$T/r_lpvit.json" settings.permute settings.update)" = "$(printf '%s\n' none none)" ] && ok || bad "lpvit baseline must stay faithful"
# a permutation alone (target 1.0, no update) keeps the model's function: same predictions as the dense file
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 1.0 --update none --permute sort --cache-dir "$T/cache-perm" --out "$T/perm.safetensors" --quiet
run 0 "$L" eval --model "$T/perm.safetensors" --imagenet-dir "$MINI" --json "$T/permd.json" --quiet
run 0 "$L" eval --model "$M" --imagenet-dir "$MINI" --json "$T/dense.json" --quiet
[ "$(lpv_json "$T/permd.json" correct_top1 correct_top5)" = "$(lpv_json "$T/dense.json" correct_top1 correct_top5)" ] && ok || bad "permuted model predicts differently"
cmp -s "$T/perm.safetensors" "$M" && bad "permuted model is byte-identical to the input" || ok
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --update magic --out "$T/x.safetensors" --quiet; one_line_err "--update"
# --steps: the schedule walks linearly to the target, each step keeps what the earlier ones pruned
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --permute-images 4 --target-flops 0.5 --block 16x16 --steps 3 \
  $C --out "$P" --report "$T/rs.json" --quiet
# (targets to 4 decimals; "3 0": three steps report blocks_revived, 0 in all)
[ "$(lpv_json "$T/rs.json" 'steps.*.target_flops' | awk '{ printf "%.4f ", $1 }')" = "0.8333 0.6667 0.5000 " ] \
  && [ "$(lpv_json "$T/rs.json" 'steps.*.blocks_revived' | awk '{ n++; s += $1 } END { print n + 0, s + 0 }')" = "3 0" ] \
  && [ "$(lpv_json "$T/rs.json" settings.steps)" = 3 ] && lpv_near "$(lpv_json "$T/rs.json" totals.achieved_flops_ratio)" 0.5 0.005 \
  && ok || bad "--steps 3: $(lpv_json "$T/rs.json" steps)"
run 0 "$L" eval --model "$P" --imagenet-dir "$MINI" --quiet
# default: one step per 0.125 of FLOPs removed when a sequential refit follows, else one
[ "$(lpv_json_len "$T/rd.json" steps)" = 4 ] && ok || bad "taylor2 default steps at 0.6: $(lpv_json "$T/rd.json" steps)"
[ "$(lpv_json_len "$T/r_lpvit.json" steps)" = 1 ] && ok || bad "lpvit baseline must prune in one step"
# without a refit the zeros of one step still reach the next
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --block 16x16 --update none --permute none --steps 2 \
  $C --out "$P" --report "$T/rn.json" --quiet
[ "$(lpv_json "$T/rn.json" 'steps.*.blocks_revived' | awk '{ n++; s += $1 } END { print n + 0, s + 0 }')" = "2 0" ] \
  && ok || bad "--steps 2 --update none: $(lpv_json "$T/rn.json" steps)"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --steps 17 --out "$T/x.safetensors" --quiet; one_line_err "--steps"
# --tune-epochs: block-wise tuning in the final step; every block tuned, none ends worse than its refit
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --permute-images 4 --target-flops 0.5 --block 16x16 --steps 2 \
  --tune-epochs 2 --tune-batch 2 $C --out "$P" --report "$T/rt.json" --quiet
# (as many tuned blocks as qkv layers, more than none; every block's tuned error <= its refit error)
[ "$(lpv_json "$T/rt.json" settings.tune_epochs)" = 2 ] \
  && [ "$(lpv_json_len "$T/rt.json" reconstruction.block_tuning.relative_output_error)" = "$(lpv_json "$T/rt.json" 'layers.*.layer' | grep -c '[.]qkv$')" ] \
  && [ "$(lpv_json_len "$T/rt.json" reconstruction.block_tuning.relative_output_error)" != 0 ] \
  && paste <(lpv_json "$T/rt.json" 'reconstruction.block_tuning.relative_output_error.*.tuned') \
           <(lpv_json "$T/rt.json" 'reconstruction.block_tuning.relative_output_error.*.refit') \
     | awk 'NF != 2 || $1 + 0 > $2 + 0 { bad = 1 } END { exit (NR == 0 || bad) }' \
  && ok || bad "--tune-epochs 2: $(lpv_json "$T/rt.json" reconstruction)"
run 0 "$L" eval --model "$P" --imagenet-dir "$MINI" --quiet
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --update none --tune-epochs 2 --out "$T/x.safetensors" --quiet; one_line_err "--tune-epochs"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --tune-epochs 2 --tune-lr 0 --out "$T/x.safetensors" --quiet; one_line_err "--tune-lr"
# the heads: refit by default with a sequential refit (the logits' error drops), left as they were with --no-refit-heads
[ "$(lpv_json "$T/rt.json" settings.refit_heads reconstruction.heads.refit)" = "$(printf '%s\n' true 1)" ] \
  && lpv_less "$(lpv_json "$T/rt.json" reconstruction.heads.logit_error_after)" "$(lpv_json "$T/rt.json" reconstruction.heads.logit_error_before)" \
  && ok || bad "heads refit: $(lpv_json "$T/rt.json" reconstruction.heads)"
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --permute-images 4 --target-flops 0.5 --block 16x16 --steps 1 \
  --no-refit-heads $C --out "$T/nh.safetensors" --report "$T/rnh.json" --quiet
[ "$(lpv_json "$T/rnh.json" settings.refit_heads reconstruction.images)" = "$(printf '%s\n' false 8)" ] \
  && ! lpv_json_has "$T/rnh.json" reconstruction.heads && ok || bad "--no-refit-heads: $(lpv_json "$T/rnh.json" reconstruction)"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --head-damp 0 --out "$T/x.safetensors" --quiet; one_line_err "--head-damp"
# the second run with the same inputs reuses the cached statistics
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --block 32x32 --refine 0 $C --out "$P" --report "$T/r.json" --quiet
[ "$(lpv_json "$T/r.json" calibration.from_cache)" = false ] && ok || bad "first run should not hit the cache"
# prune's dense products are OpenBLAS calls (it never packs dense weights), and its report says so
[ "$(lpv_json "$T/r.json" environment.dense_kernel)" = openblas ] && ok || bad "prune report: dense kernel $(lpv_json "$T/r.json" environment.dense_kernel)"
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.4 --block 32x32 --refine 0 $C --out "$P" --report "$T/r.json" --quiet
[ "$(lpv_json "$T/r.json" calibration.from_cache)" = true ] && ok || bad "second run should hit the cache"
run 0 "$L" inspect "$P"; grep -q "bsr_values" "$T/out" && grep -qE '"format":[[:space:]]*"lpvit-bsr-v1"' "$T/out" && ok || bad "pruned file lacks BSR tensors / metadata"
# the name recorded in lpvit.arch survives create-model -> prune -> load (was replaced by a shape guess)
run 0 "$L" inspect "$P"; grep -q "^architecture: random_d64_l2_h2 " "$T/out" && ok || bad "pruned file lost the model's name: $(grep ^architecture "$T/out")"
run 0 "$L" eval --model "$P" --imagenet-dir "$MINI" --json "$T/pe.json"
[ "$(lpv_json "$T/pe.json" images)" = 12 ] && ok || bad "eval of the pruned model"
grep -q "recorded in the file" "$T/out" && ok || bad "pruned eval did not reuse the recorded preprocessing"
# a pruned model shows it: eval's table and JSON, inspect's per-layer table
grep -q "^pruned .* linears block-sparse: .* of the FLOPs" "$T/out" && ok || bad "eval of a pruned model does not say it is pruned"
fk=$(lpv_json "$T/pe.json" sparsity.flops_kept)
awk -v f="$fk" 'BEGIN { exit !(f > 0.3 && f < 1) }' && [ "$(lpv_json "$T/pe.json" sparsity.pruned_linears)" -gt 0 ] && ok || bad "eval JSON sparsity: $fk"
run 0 "$L" inspect "$P"
grep -q "^layer .* blocks kept  density" "$T/out" && grep -q "^blocks.0.attn.qkv .* [0-9]*/[0-9]* " "$T/out" && ok || bad "inspect has no density table"
run 0 "$L" create-model --dim 32 --depth 11 --heads 2 --img 32 --classes 10 --out "$T/d11.safetensors" --quiet
run 0 "$L" inspect "$T/d11.safetensors"
[ "$(grep -n '^blocks.2.attn.qkv.weight' "$T/out" | cut -d: -f1)" -lt "$(grep -n '^blocks.10.attn.qkv.weight' "$T/out" | cut -d: -f1)" ] \
  && ok || bad "inspect does not sort blocks.2 before blocks.10"
grep -q "^pruned" "$T/out" && bad "a dense model said pruned" || ok
run 0 "$L" bench --pruned "$P" --reps 2 --warmup 0 --json "$T/b.json" --quiet
lpv_less 0 "$(lpv_json "$T/b.json" end_to_end.speedup)" && lpv_less 0.4 "$(lpv_json "$T/b.json" linear_density)" \
  && lpv_less "$(lpv_json "$T/b.json" linear_density)" 0.95 && ok || bad "bench --pruned"
# every layer row carries its GFLOP/s and, with a vector ISA, the share of the measured peak
lpv_less 0 "$(lpv_json "$T/b.json" layers.1.dense_gflops)" && lpv_less 0 "$(lpv_json "$T/b.json" layers.1.sparse_gflops)" \
  && lpv_less 0 "$(lpv_json "$T/b.json" end_to_end.dense.model_gflops)" && ok || bad "bench: no GFLOP/s per layer"
vec=0; case " $(lpv_json "$T/b.json" environment.cpu_features) " in *" avx2 "*) vec=1 ;; esac
if [ "$vec" = 1 ]; then
  lpv_less 0 "$(lpv_json "$T/b.json" layers.1.dense_pct_peak)" && lpv_less 0 "$(lpv_json "$T/b.json" peak.gflops)" \
    && ok || bad "bench: no % of peak: $(lpv_json "$T/b.json" peak)"
  # the peak is measured again after the timings (a VM's clock moves with its host's load)
  lpv_less 0 "$(lpv_json "$T/b.json" peak_after.gflops)" && [ "$(lpv_json "$T/b.json" environment.blocking)" != "" ] \
    && ok || bad "bench: no peak after the timings, or no blocking profile: $(lpv_json "$T/b.json" peak_after)"
fi
run 0 "$L" bench --peak --threads 1 --json "$T/pk.json"
[ "$vec" = 0 ] || { lpv_less 0 "$(lpv_json "$T/pk.json" peaks.0.gflops)" \
  && [ "$(lpv_json "$T/pk.json" peaks.0.isa)" = avx2 ] && grep -q "^  avx2 " "$T/out"; } && ok || bad "bench --peak"
# the int8 units after the FP32 ones, AVX2's loop first (a multiply-add is 2 ops: it runs 1-2x the FMA peak)
[ "$vec" = 0 ] || { [ "$(lpv_json "$T/pk.json" int8_peaks.0.kernel)" = avx2 ] \
  && lpv_less "$(lpv_json "$T/pk.json" peaks.0.gflops)" "$(awk -v g="$(lpv_json "$T/pk.json" int8_peaks.0.gops)" 'BEGIN { print 2 * g }')" \
  && grep -q "^int8 units" "$T/out"; } && ok || bad "bench --peak: int8 units $(lpv_json "$T/pk.json" int8_peaks)"
run 2 "$L" bench --peak --model "$M"; one_line_err "--peak runs alone"
# a preset names the model bench times: vit_tiny's shapes are deit_tiny's, so the file alone can't tell
run 0 "$L" create-model --preset vit_tiny --seed 3 --out "$T/vt.safetensors" --quiet
run 0 "$L" bench --model vit_tiny --weights "$T/vt.safetensors" --reps 1 --warmup 0 --no-layers --json "$T/bvt.json" --quiet
case "$(lpv_json "$T/bvt.json" dense)" in vit_tiny_patch16_224*) ok ;; *) bad "bench names a vit_tiny file: $(lpv_json "$T/bvt.json" dense)" ;; esac
# --precision bf16 adds BF16 times per layer and end to end (the reference kernel under --isa ref)
run 0 "$L" bench --pruned "$P" --reps 1 --warmup 0 --isa ref --precision bf16 --json "$T/b16.json" --quiet
lpv_less 0 "$(lpv_json "$T/b16.json" end_to_end.bf16.sparse.speedup_vs_bf16_dense)" \
  && lpv_json_has "$T/b16.json" layers.1.dense_bf16 && ! lpv_json_has "$T/b16.json" layers.0.dense_bf16 \
  && ok || bad "bench --precision bf16: $(lpv_json "$T/b16.json" end_to_end)"
# on the BF16 unit itself its rows carry a share of the vdpbf16ps peak (a slow unit shows as a high share)
case " $(lpv_json "$T/b.json" environment.cpu_features) " in
  *" avx512_bf16 "*)
    run 0 "$L" bench --pruned "$P" --reps 1 --warmup 0 --precision bf16 --json "$T/b16v.json" --quiet
    lpv_less 0 "$(lpv_json "$T/b16v.json" peak_bf16.gflops)" && lpv_less 0 "$(lpv_json "$T/b16v.json" layers.1.dense_bf16_pct_peak)" \
      && ok || bad "bench --precision bf16: no share of the BF16 peak: $(lpv_json "$T/b16v.json" peak_bf16)" ;;
  *) echo "skip bench --precision bf16 on avx512bf16: not on this cpu" ;;
esac
# and int8 rows a share of the vpdpbusd peak where the int8 kernel is VNNI's
case " $(lpv_json "$T/b.json" environment.cpu_features) " in
  *" avx512_vnni "*)
    run 0 "$L" bench --pruned "$P" --reps 1 --warmup 0 --precision int8 --json "$T/b8v.json" --quiet
    lpv_less 0 "$(lpv_json "$T/b8v.json" peak_int8.gflops)" && lpv_less 0 "$(lpv_json "$T/b8v.json" layers.1.dense_int8_pct_peak)" \
      && ok || bad "bench --precision int8: no share of the VNNI peak: $(lpv_json "$T/b8v.json" peak_int8)" ;;
  *) echo "skip bench --precision int8 on VNNI: not on this cpu" ;;
esac
# --precision int8 adds int8 times per layer (block linears only) and end to end, with speedups over FP32 dense
run 0 "$L" bench --pruned "$P" --reps 1 --warmup 0 --precision int8 --json "$T/b8.json" --quiet
lpv_less 0 "$(lpv_json "$T/b8.json" end_to_end.int8.sparse.speedup_vs_fp32_dense)" \
  && lpv_less 0 "$(lpv_json "$T/b8.json" end_to_end.int8.dense.speedup_vs_fp32_dense)" \
  && lpv_less 0 "$(lpv_json "$T/b8.json" layers.1.int8_sparse_speedup_vs_fp32_dense)" \
  && lpv_json_has "$T/b8.json" layers.1.dense_int8 && ! lpv_json_has "$T/b8.json" layers.0.dense_int8 \
  && lpv_less 0 "$(lpv_json "$T/b8.json" end_to_end.int8.sparse.profile_ms_per_image.quantize)" \
  && [ "$(lpv_json "$T/b8.json" end_to_end.sparse.profile_ms_per_image.quantize)" = 0 ] \
  && ok || bad "bench --precision int8: $(lpv_json "$T/b8.json" end_to_end)"
run 0 "$L" bench --model "$M" --density 0.5 --block 16x16 --reps 2 --warmup 0 --no-layers --quiet
run 0 "$L" export --model "$P" --dense-masked --out "$T/masked.safetensors" --quiet
run 0 "$L" inspect "$T/masked.safetensors"; grep -q "bsr_values" "$T/out" && bad "dense-masked export still has BSR tensors" || ok
# a BSR export in BF16: pruned layers stay BSR, half the bytes, eval runs it with the same predictions here
run 0 "$L" export --model "$P" --dtype bf16 --out "$T/pbf.safetensors" --quiet
run 0 "$L" inspect "$T/pbf.safetensors"; grep -q "bsr_values *BF16" "$T/out" && ok || bad "bf16 export lost its BF16 BSR tensors"
[ "$(stat -c %s "$T/pbf.safetensors")" -lt "$(( $(stat -c %s "$P") * 6 / 10 ))" ] && ok || bad "bf16 export is not about half the size"
run 0 "$L" eval --model "$T/pbf.safetensors" --imagenet-dir "$MINI" --json "$T/pbfe.json" --quiet
run 0 "$L" eval --model "$T/masked.safetensors" --imagenet-dir "$MINI" --json "$T/me.json" --quiet
[ "$(lpv_json "$T/pe.json" correct_top1 correct_top5)" = "$(lpv_json "$T/me.json" correct_top1 correct_top5)" ] && ok || bad "BSR and dense-masked disagree"
# speed objectives: a measured time table, reused from a file
run 0 "$L" bench --calibrate --model "$M" --block 32x32 --reps 2 --out "$T/tt.json" --quiet
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --objective speed+power --lambda-power 0.5 --cost-table "$T/tt.json" --refine 0 $C --out "$P" --report "$T/r.json" --quiet
lpv_json_has "$T/r.json" totals.predicted_speedup_pruned_layers && ok || bad "speed objective reports no predicted speedup"
# joint pruning + int8: the speed objective allocates with int8 kernel times (measured, or an int8 table)
[ "$(lpv_json "$T/tt.json" precision)" = fp32 ] && ok || bad "time table precision"
run 0 "$L" bench --calibrate --model "$M" --block 32x32 --reps 2 --precision int8 --out "$T/tt8.json" --quiet
[ "$(lpv_json "$T/tt8.json" precision)" = int8 ] && ok || bad "int8 time table precision"
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --objective speed --cost-table "$T/tt8.json" \
  --quant int8 --refine 0 $C --out "$T/pq8s.safetensors" --report "$T/rq8s.json" --quiet
[ "$(lpv_json "$T/rq8s.json" quantization)" = int8 ] && lpv_json_has "$T/rq8s.json" totals.predicted_speedup_pruned_layers \
  && ok || bad "prune --quant int8 --objective speed"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --objective speed --cost-table "$T/tt.json" \
  --quant int8 $C --out "$T/x.safetensors" --quiet; one_line_err "holds fp32 times but the pruned model will run in int8"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --objective speed --cost-table "$T/tt8.json" \
  $C --out "$T/x.safetensors" --quiet; one_line_err "holds int8 times but the pruned model will run in fp32"
# --precision bf16: the speed objective allocates with BF16 kernel times (a bf16 table; the reference kernel under
# --isa ref), the file and the report say bf16, and a table of another precision is refused
run 0 "$L" bench --calibrate --model "$M" --block 32x32 --reps 2 --precision bf16 --isa ref --out "$T/tt16.json" --quiet
[ "$(lpv_json "$T/tt16.json" precision)" = bf16 ] && ok || bad "bf16 time table precision"
run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --objective speed --cost-table "$T/tt16.json" \
  --precision bf16 --refine 0 $C --out "$T/p16.safetensors" --report "$T/r16.json" --quiet
run 0 "$L" inspect "$T/p16.safetensors" --json "$T/i16.json" --quiet
[ "$(lpv_json "$T/r16.json" settings.precision)" = bf16 ] && lpv_json "$T/i16.json" metadata.lpvit | grep -q '"precision":"bf16"' \
  && ok || bad "prune --precision bf16 does not record bf16"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --objective speed --cost-table "$T/tt.json" \
  --precision bf16 $C --out "$T/x.safetensors" --quiet; one_line_err "'$T/tt.json' holds fp32 times but the pruned model will run in bf16"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --objective speed --cost-table "$T/tt8.json" \
  --precision bf16 $C --out "$T/x.safetensors" --quiet; one_line_err "holds int8 times but the pruned model will run in bf16"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --quant int8 --precision bf16 --out "$T/x.safetensors" --quiet; one_line_err "--precision bf16 contradicts it"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --precision fp16 --out "$T/x.safetensors" --quiet; one_line_err "--precision: expected fp32, bf16 or int8"
if "$L" --version | grep -q avx512_bf16; then
  run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --objective speed --precision bf16 \
    --refine 0 $C --out "$T/p16m.safetensors" --report "$T/r16m.json" --quiet
  [ "$(lpv_json "$T/r16m.json" settings.precision)" = bf16 ] && lpv_json_has "$T/r16m.json" totals.predicted_speedup_pruned_layers \
    && ok || bad "prune --precision bf16 --objective speed (measured)"
else echo "skip prune --precision bf16 timing the avx512bf16 kernel: not on this cpu"; fi
if "$L" --version | grep -q avx2; then # timing BF16 without the ISA is refused up front; a bf16 table needs no BF16 here
  run 1 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --objective speed --precision bf16 --isa avx2 \
    $C --out "$T/x.safetensors" --quiet; one_line_err "--precision: timing bf16 kernels for the speed objective needs isa avx512bf16"
  run 0 "$L" prune --model "$M" --calib-dir "$MINI" --calib-size 8 --target-flops 0.5 --objective speed --precision bf16 --isa avx2 \
    --cost-table "$T/tt16.json" --refine 0 $C --out "$T/x.safetensors" --quiet
fi
# bad inputs: usage errors exit 2, data errors exit 1, never an output file
rm -f "$T/x.safetensors"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0 --out "$T/x.safetensors"; one_line_err "--target-flops: expected a ratio in (0, 1], got 0"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 1.5 --out "$T/x.safetensors"; one_line_err "got 1.5"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --block 24x24 --out "$T/x.safetensors"; one_line_err "--block: expected RxC"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --saliency magic --out "$T/x.safetensors"; one_line_err "--saliency"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --out "$M" --quiet; one_line_err "--out '$M' is the input --model"
run 1 "$L" prune --model "$M" --calib-dir "$T/empty" --target-flops 0.5 --out "$T/x.safetensors" --quiet; one_line_err "$T/empty"
run 1 "$L" prune --model deit_t --weights "$M" --calib-dir "$MINI" --target-flops 0.5 --out "$T/x.safetensors" --quiet; one_line_err "does not match preset 'deit_t'"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.02 --min-density 0.05 --saliency l1 --allocator greedy --out "$T/x.safetensors" --quiet; one_line_err "--min-density"
run 2 "$L" prune --model "$M" --calib-dir "$MINI" --target-flops 0.5 --exclude "blocks.9.*" --out "$T/x.safetensors" --quiet; one_line_err "matches no layer"
# one unreadable image in the calibration folder: every pass skips it, the prune completes and says so
run 0 "$L" prune --model "$M" --calib-dir "$T/mini" --calib-size 20 --permute-images 4 --target-flops 0.7 --block 16x16 \
  --steps 2 $C --out "$T/skip.safetensors" --report "$T/skip.json"
grep -q "^calibration  *1 image skipped, unreadable (first: .*broken.JPEG" "$T/out" && ok || bad "prune did not report the skipped image: $(tail -3 "$T/out")"
grep -q "warning: image skipped: .*broken.JPEG" "$T/err" && ok || bad "prune did not warn about broken.JPEG"
[ "$(lpv_json "$T/skip.json" calibration.images_skipped)" = 1 ] && [[ "$(lpv_json "$T/skip.json" calibration.skipped_files.0)" == */broken.JPEG ]] \
  && ok || bad "prune report lacks the skipped image"
[ ! -e "$T/x.safetensors" ] && ok || bad "a failed prune left an output file"
ls "$T"/*.tmp.* >/dev/null 2>&1 && bad "temporary files left behind" || ok

# ---- lpvit cache: the statistics and step checkpoints the prune runs above left in $T/cache ----
ncalib=$(ls "$T/cache"/calib-*.lpvc | wc -l)
nstep=$(ls "$T/cache"/step-*.lpvc 2>/dev/null | wc -l)
ncache=$((ncalib + nstep))
[ "$ncalib" -gt 0 ] && [ "$nstep" -gt 0 ] && ok || bad "prune left no cache files to list ($ncalib statistics, $nstep steps)"
count_cache() { ls "$T/cache" | grep -c '^\(calib\|step\)-[0-9a-f]\{64\}\.lpvc$'; }
echo notes >"$T/cache/notes.txt" # not the cache's: never listed or removed
run 0 "$L" cache list --cache-dir "$T/cache"
[ "$(grep -c ' ok  *\(calib\|step\)-[0-9a-f]\{64\}\.lpvc$' "$T/out")" = "$ncache" ] && grep -q "^total: $ncache files, " "$T/out" \
  && ! grep -q notes "$T/out" && ok || bad "cache list: $(tail -2 "$T/out")"
run 0 "$L" cache list --cache-dir "$T/cache" --json "$T/cl.json"
formats=$(lpv_json "$T/cl.json" 'files.*.key.format' | tr -d '[]"' | tr ',' '\n' | sort | uniq -c | awk '{print $2 ":" $1}' | tr '\n' ' ')
[ "$(lpv_json_len "$T/cl.json" files)" = "$ncache" ] && [ "$(lpv_json "$T/cl.json" files.0.state)" = ok ] \
  && [ "$formats" = "lpvit-calib-v1:$ncalib lpvit-step-v1:$nstep " ] && ok || bad "cache list --json: formats $formats"
run 0 "$L" cache clean --cache-dir "$T/cache" --all --dry-run
[ "$(count_cache)" = "$ncache" ] && grep -q "^would remove $ncache cache files, " "$T/out" \
  && ok || bad "cache clean --dry-run: $(tail -1 "$T/out")"
run 0 "$L" cache clean --cache-dir "$T/cache" --stale # this build made them all: none is stale
[ "$(count_cache)" = "$ncache" ] && ok || bad "cache clean --stale removed current entries"
run 2 "$L" cache clean --cache-dir "$T/cache"; one_line_err "choose exactly one of --all, --older-than DAYS, --stale"
run 2 "$L" cache clean --cache-dir "$T/cache" --all --older-than 3; one_line_err "choose exactly one of"
run 2 "$L" cache frob; one_line_err "unknown cache command 'frob'"
run 0 "$L" cache clean --cache-dir "$T/cache" --all
[ "$(count_cache)" = 0 ] && [ -e "$T/cache/notes.txt" ] && grep -q "^removed $ncache cache files, " "$T/out" \
  && ok || bad "cache clean --all: $(ls "$T/cache")"
run 0 "$L" cache list --cache-dir "$T/no-cache"; grep -q "nothing cached" "$T/out" && ok || bad "cache list of a missing folder"
run 1 "$L" cache list --cache-dir "$M"; one_line_err "cannot list cache folder"
run 0 "$L" cache --help; grep -q "lpvit cache clean" "$T/out" && ok || bad "cache --help"
run 0 "$L" help cache; grep -q "lpvit cache list" "$T/out" && ok || bad "help cache"

if [ -d "$FIX" ]; then
  run 0 "$L" infer --model "$FIX/timm_deit_tiny_d2.safetensors" --input "$FIX/timm_deit_tiny_d2.ref.safetensors" --out "$T/logits.safetensors" --quiet
  run 0 "$L" inspect "$T/logits.safetensors"; grep -q "logits .*F32 .*\[4, 1000\]" "$T/out" && ok || bad "infer --out tensor: $(head -1 "$T/out")"
  cp "$FIX/timm_deit_tiny_d2.ref.safetensors" "$T/in.safetensors"
  run 2 "$L" infer --model "$FIX/timm_deit_tiny_d2.safetensors" --input "$T/in.safetensors" --out "$T/in.safetensors" --quiet; one_line_err "is the input --input"
  run 1 "$L" infer --model "$FIX/timm_deit_tiny_d2.safetensors" --input "$M" --out "$T/o.safetensors" --quiet; one_line_err "no tensor named 'input'"
  [ ! -e "$T/o.safetensors" ] && ok || bad "partial infer output"
  # HF folders load as they are
  run 0 "$L" inspect "$FIX/hf_deit_tiny_distilled_d2/model.safetensors"; grep -q "hf-deit names" "$T/out" && ok || bad "HF inspect"
else
  echo "skip fixture checks: $FIX not found"
fi

echo "cli_e2e: $pass checks passed, $fails failed"
[ "$fails" = 0 ]

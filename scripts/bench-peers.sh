#!/usr/bin/env bash
# Peer benchmark (issue: "Beat ONNX Runtime on the same CPU"): lpvit dense and lpvit pruned (random
# 32x32 block masks at 50 % density) against ONNX Runtime (npm onnxruntime-node, CPU EP) and
# Debian's PyTorch, on the SAME weights file, same thread count, batch 1 and 8. One run does all of it:
#   1. installs the Debian packages (python3-torch; nodejs + npm when npm is missing) and, pinned by
#      scripts/peers/package-lock.json, onnxruntime-node into scripts/peers/node_modules
#      (npm ci --ignore-scripts: the package's postinstall downloads from outside the registry), and
#      checks that node loads the bundled linux-x64 libonnxruntime;
#   2. writes the weights with `lpvit create-model --seed` (DeiT-S / DeiT-B shapes; the real ViT-Tiny
#      from ../shared/data when present) and exports exactly that file to ONNX (opset 17, dynamic
#      batch) with scripts/torch_deit.py;
#   3. runs lpvit, ONNX Runtime and PyTorch on one input tensor and fails when ORT's (or torch's)
#      logits differ from lpvit's by more than --tol;
#   4. times them in rounds, the runtimes' order rotating each round; per round each runtime does
#      --warmup untimed and --reps timed forward passes in a fresh process (lpvit bench interleaves
#      dense and pruned itself). Reported: median over rounds of each round's median. Before each
#      round it waits (up to --wait-idle s) until other processes use at most --max-busy % of the
#      CPUs; a measurement during which other processes used more is repeated (--retries times),
#      and the table shows the most CPU other processes took during each row's measurements.
# Prints ONE markdown table (also written to OUT/table.md, everything else as JSON under OUT).
# A benchmark, not a test: it needs the npm registry the first time and is not run in CI.
#
#   scripts/bench-peers.sh                      # DeiT-S, DeiT-B (+ ViT-Tiny if ../shared/data), batch 1 and 8
#   scripts/bench-peers.sh --quick              # smoke run: DeiT-S only, 1 round of 3 reps
# Options: --model M (repeatable: deit_t|deit_s|deit_b|vit_tiny|FILE.safetensors), --threads N
#          (default: all CPUs), --batches "1 8", --reps K (default 7), --rounds R (default 3),
#          --warmup W (default 2), --density d (default 0.5), --block RxC (default 32x32), --seed S,
#          --tol T (default 1e-3), --out DIR (default out/bench-peers), --max-busy P (default 25),
#          --wait-idle S (default 120, --quick 30; 0: never wait), --retries N (default 2, --quick 0), --no-install (do not run scripts/install-deps.sh),
#          --isa ISA (lpvit's kernels: auto, avx512bf16, avx512, avxvnni, avx2, ref; default auto; ONNX Runtime and PyTorch
#          cannot be forced, so compare ISAs against them only on a CPU whose best ISA it is),
#          --quant int8 (adds the int8 peers: ONNX Runtime int8 on the same weights quantized by lpvit's rule,
#          per-row int8 weights and DynamicQuantizeLinear inputs (what its quantize_dynamic writes; the ONNX
#          from scripts/torch_deit.py onnx --quant int8, its logits checked against the same arithmetic in
#          PyTorch), and lpvit's int8 dense and pruned models timed with --precision int8 beside FP32),
#          --precision bf16 (adds lpvit's BF16 dense and pruned models, `lpvit bench --precision bf16` in a run of
#          its own each round; needs AVX512-BF16: on another CPU the script stops before any timing)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
me=bench-peers.sh
die() { echo "$me: $*" >&2; exit 1; }
trap 'echo "$me: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
step() { echo "== $*" >&2; }

orig_args=("$@")
models=(); threads=$(nproc); batches="1 8"; reps=7; rounds=3; warmup=2; density=0.5; block=32x32
seed=0; tol=1e-3; out=out/bench-peers; quick=0; install=1; max_busy=25; retries=; wait_idle=; isa=auto; quant=none; precision=fp32
need() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "$me: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --model) need "$@"; models+=("$2"); shift 2 ;;
    --models) need "$@"; read -r -a _m <<<"$2"; models+=("${_m[@]}"); shift 2 ;;
    --threads) need "$@"; threads=$2; shift 2 ;; --batches) need "$@"; batches=$2; shift 2 ;;
    --reps) need "$@"; reps=$2; shift 2 ;; --rounds) need "$@"; rounds=$2; shift 2 ;;
    --warmup) need "$@"; warmup=$2; shift 2 ;; --density) need "$@"; density=$2; shift 2 ;;
    --block) need "$@"; block=$2; shift 2 ;; --seed) need "$@"; seed=$2; shift 2 ;; --isa) need "$@"; isa=$2; shift 2 ;;
    --tol) need "$@"; tol=$2; shift 2 ;; --out) need "$@"; out=$2; shift 2 ;;
    --quant) need "$@"; quant=$2; shift 2 ;; --precision) need "$@"; precision=$2; shift 2 ;;
    --max-busy) need "$@"; max_busy=$2; shift 2 ;; --retries) need "$@"; retries=$2; shift 2 ;; --wait-idle) need "$@"; wait_idle=$2; shift 2 ;;
    --quick) quick=1; shift ;; --no-install) install=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "$me: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$quick" = 1 ]; then
  [ ${#models[@]} -gt 0 ] || models=(deit_s)
  reps=3; rounds=1; warmup=2; wait_idle=${wait_idle:-30}; retries=${retries:-0}
fi
case "$quant" in none|int8) ;; *) echo "$me: --quant takes none or int8, got '$quant'" >&2; exit 2 ;; esac
case "$precision" in fp32|bf16) ;; *) echo "$me: --precision takes fp32 or bf16, got '$precision'" >&2; exit 2 ;; esac
for v in threads reps rounds; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$me: --$v must be a positive integer, got '${!v}'" >&2; exit 2; }
done
wait_idle=${wait_idle:-120}; retries=${retries:-2}
[[ $wait_idle =~ ^[0-9]+$ && $max_busy =~ ^[0-9]+$ && $retries =~ ^[0-9]+$ ]] \
  || { echo "$me: --wait-idle, --max-busy and --retries take integers" >&2; exit 2; }
[[ $warmup =~ ^[0-9]+$ ]] || { echo "$me: --warmup must be an integer, got '$warmup'" >&2; exit 2; }
for b in $batches; do [[ $b =~ ^[1-9][0-9]*$ ]] || { echo "$me: bad batch '$b' in --batches" >&2; exit 2; }; done
shared=$(lpv_data_dir 2>/dev/null) || shared=../shared/data   # optional: adds the real ViT-Tiny
real_model=$shared/vit_tiny_patch16_224.safetensors
if [ ${#models[@]} -eq 0 ]; then
  models=(deit_s deit_b)
  [ -f "$real_model" ] && models+=(vit_tiny)
fi
L=build/lpvit
peers=scripts/peers
mkdir -p "$out/models" "$out/check" "$out/runs"
rm -f "$out"/runs/*.json "$out"/check/*.json

# ---- 1. dependencies, lpvit, ONNX Runtime ----
if [ "$install" = 1 ]; then
  step "dependencies (Debian packages)"
  deps=(--with-torch)
  command -v npm >/dev/null 2>&1 || deps+=(--with-node)
  scripts/install-deps.sh "${deps[@]}"
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
  || die "node and npm are needed (scripts/install-deps.sh --with-node, or any Node.js >= 16 with npm)"
# torch_deit.py needs torch and numpy, peers.py numpy (Debian's torch imports only under the system python)
py=$(lpv_python torch numpy) || die "no python3 with torch and numpy: run scripts/install-deps.sh --with-torch"
lpv_build || die "building lpvit failed"

pinned=$(node -p "require('./$peers/package-lock.json').packages['node_modules/onnxruntime-node'].version") \
  || die "$peers/package-lock.json does not pin onnxruntime-node"
have=$(node -p "try { require('./$peers/node_modules/onnxruntime-node/package.json').version } catch (e) { '' }")
if [ "$have" != "$pinned" ] || [ "$peers/package-lock.json" -nt "$peers/node_modules/.package-lock.json" ]; then
  step "onnxruntime-node $pinned into $peers/node_modules (npm ci --ignore-scripts, ~290 MB)"
  (cd "$peers" && npm ci --ignore-scripts --no-audit --no-fund) \
    || die "npm ci failed in $peers (it needs the npm registry once; the package is ~290 MB unpacked)"
fi
node "$peers/ort_bench.js" info >"$out/ort_info.json" || die "onnxruntime-node does not load its bundled linux-x64 library"
step "ONNX Runtime $pinned loads $(sed -n 's/.*"library": "\(.*\)".*/\1/p' "$out/ort_info.json")"

# lpvit's environment (CPU, OpenBLAS core) from a tiny run; torch gets the same OpenBLAS core when
# lpvit had to choose it (lpvit re-executes itself with OPENBLAS_CORETYPE on AVX-512 CPUs).
"$L" bench --model deit_t --random-weights --batch 1 --reps 1 --warmup 0 --no-layers --threads "$threads" \
  --json "$out/lpvit_env.json" --quiet >/dev/null || die "lpvit bench does not run"
{ read -r core; read -r core_src; read -r build_type; } < <(lpv_json "$out/lpvit_env.json" \
  environment.openblas_core environment.openblas_core_source environment.build) || die "$out/lpvit_env.json lacks the environment"
[ "$build_type" = Release ] || echo "$me: warning: build/lpvit is a '$build_type' build; timings need Release" >&2
if [ "$precision" = bf16 ]; then
  "$L" bench --model deit_t --random-weights --batch 1 --reps 1 --warmup 0 --no-layers --threads "$threads" \
    --precision bf16 --quiet >/dev/null 2>"$out/bf16_check.log" \
    || die "--precision bf16: lpvit cannot run BF16 here: $(tail -1 "$out/bf16_check.log")"
fi
torch_env=()
[ "$core_src" = lpvit ] && torch_env=(OPENBLAS_CORETYPE="$core")

# ---- 2. the weights and their ONNX export ----
files=(); tags=()
for m in "${models[@]}"; do
  case "$m" in
    vit_tiny)
      [ -f "$real_model" ] || die "--model vit_tiny: $real_model not found (the project's shared data)"
      f=$real_model; tag=vit_tiny ;;
    *.safetensors)
      [ -f "$m" ] || die "--model $m: no such file"
      f=$m; tag=$(basename "$m" .safetensors) ;;
    deit_*|vit_*)
      tag=${m}_seed$seed; f=$out/models/$tag.safetensors
      if [ ! -f "$f" ]; then
        step "weights: lpvit create-model --preset $m --seed $seed"
        "$L" create-model --preset "$m" --seed "$seed" --out "$f" --quiet || die "create-model --preset $m failed"
      fi ;;
    *) die "unknown --model '$m' (deit_t, deit_s, deit_b, vit_tiny or a .safetensors file)" ;;
  esac
  onnx=$out/models/$tag.onnx
  if [ ! -f "$onnx" ] || [ "$f" -nt "$onnx" ] || [ scripts/torch_deit.py -nt "$onnx" ]; then
    step "export $f to ONNX (opset 17, dynamic batch)"
    "$py" scripts/torch_deit.py onnx --model "$f" --out "$onnx" --opset 17 2>"$out/models/$tag.export.log" \
      || { cat "$out/models/$tag.export.log" >&2; die "ONNX export of $f failed"; }
  fi
  if [ "$quant" = int8 ]; then
    onnx8=$out/models/$tag.int8.onnx
    if [ ! -f "$onnx8" ] || [ "$f" -nt "$onnx8" ] || [ scripts/torch_deit.py -nt "$onnx8" ]; then
      step "export $f to ONNX with int8 block linears (MatMulInteger, DynamicQuantizeLinear)"
      "$py" scripts/torch_deit.py onnx --model "$f" --out "$onnx8" --opset 17 --quant int8 2>"$out/models/$tag.export8.log" \
        && "$py" scripts/torch_deit.py onnx --model "$f" --out "$out/models/$tag.int8-d1.onnx" --opset 17 --quant int8 --depth 1 \
          2>>"$out/models/$tag.export8.log" \
        || { cat "$out/models/$tag.export8.log" >&2; die "int8 ONNX export of $f failed"; }
    fi
  fi
  files+=("$f"); tags+=("$tag")
done

# ---- 3. same input, same logits? ----
x=$out/check/input.safetensors
"$py" $peers/peers.py input --out "$x" --batch 2 --seed "$seed"
for i in "${!tags[@]}"; do
  tag=${tags[$i]}; f=${files[$i]}; onnx=$out/models/$tag.onnx
  step "logits check: $tag"
  "$L" infer --model "$f" --input "$x" --out "$out/check/${tag}_lpvit.safetensors" --threads "$threads" --quiet \
    || die "lpvit infer on $f failed"
  node $peers/ort_bench.js infer --model "$onnx" --input "$x" --out "$out/check/${tag}_ort.safetensors" \
    --threads "$threads" 2>/dev/null || die "ONNX Runtime failed on $onnx"
  env ${torch_env[@]+"${torch_env[@]}"} "$py" scripts/torch_deit.py logits --model "$f" --input "$x" \
    --out "$out/check/${tag}_torch.npy" --threads "$threads" || die "torch_deit.py logits on $f failed"
  "$py" $peers/peers.py compare --ref "$out/check/${tag}_lpvit.safetensors" --other "$out/check/${tag}_ort.safetensors" \
    --tol "$tol" --name "ort_vs_lpvit_$tag" --json "$out/check/check_ort_$tag.json" \
    || die "ONNX Runtime and lpvit disagree on $tag (max abs error above $tol): not the same model"
  "$py" $peers/peers.py compare --ref "$out/check/${tag}_lpvit.safetensors" --other "$out/check/${tag}_torch.npy" \
    --tol "$tol" --name "torch_vs_lpvit_$tag" --json "$out/check/check_torch_$tag.json" \
    || die "PyTorch and lpvit disagree on $tag (max abs error above $tol)"
  if [ "$quant" = int8 ]; then
    # Quantized networks amplify float differences: a 1e-6 change upstream flips the rounding of some inputs of
    # the next layer, each flip moves outputs by a quantization step, and 12 blocks compound it (whole models
    # agree to 3-9 % of the largest logit). So the check runs the first block alone (its four linears int8,
    # then the final norm and head), where ORT and PyTorch agree to float precision; the whole model's
    # difference is reported beside it.
    step "logits check: $tag, ONNX Runtime int8 against the same int8 arithmetic in PyTorch (first block)"
    node $peers/ort_bench.js infer --model "$out/models/$tag.int8-d1.onnx" --input "$x" --out "$out/check/${tag}_ort8d1.safetensors" \
      --threads "$threads" 2>/dev/null || die "ONNX Runtime failed on $out/models/$tag.int8-d1.onnx"
    "$py" scripts/torch_deit.py logits --model "$f" --quant int8 --depth 1 --input "$x" --out "$out/check/${tag}_torch8d1.npy" \
      --threads "$threads" || die "torch_deit.py logits --quant int8 on $f failed"
    "$py" $peers/peers.py compare --ref "$out/check/${tag}_ort8d1.safetensors" --other "$out/check/${tag}_torch8d1.npy" \
      --tol "$tol" --tol-rel 0.02 --name "ort8_vs_torch8_$tag" --json "$out/check/check_ort8_$tag.json" \
      || die "ONNX Runtime int8 and its PyTorch emulation disagree on the first block of $tag (by more than 2 % of the largest logit)"
    node $peers/ort_bench.js infer --model "$out/models/$tag.int8.onnx" --input "$x" --out "$out/check/${tag}_ort8.safetensors" \
      --threads "$threads" 2>/dev/null || die "ONNX Runtime failed on $out/models/$tag.int8.onnx"
    "$py" scripts/torch_deit.py logits --model "$f" --quant int8 --input "$x" --out "$out/check/${tag}_torch8.npy" \
      --threads "$threads" || die "torch_deit.py logits --quant int8 on $f failed"
    "$py" $peers/peers.py compare --ref "$out/check/${tag}_ort8.safetensors" --other "$out/check/${tag}_torch8.npy" \
      --tol 1e9 --name "ort8_vs_torch8_full_$tag" --json "$out/check/check_ort8_full_$tag.json"
    "$py" $peers/peers.py compare --ref "$out/check/${tag}_lpvit.safetensors" --other "$out/check/${tag}_ort8.safetensors" \
      --tol 1e9 --name "ort8_vs_lpvit_$tag" --json "$out/check/check_ort8_fp32_$tag.json" >/dev/null
  fi
done

# ---- 4. timing, interleaved by round ----
# Other processes on these CPUs: what share of all CPUs is busy while this script sleeps 1 s, and
# which processes have used >= 20 % of a CPU over their lifetime.
busy_pct() { # share of all CPUs busy (user, nice, system, irq, softirq, steal) over 1 s
  local a b busy all
  read -r -a a < <(head -1 /proc/stat); sleep 1; read -r -a b < <(head -1 /proc/stat)
  busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) ))
  all=$(( busy + (b[4]+b[5]) - (a[4]+a[5]) ))
  echo $((all > 0 ? 100 * busy / all : 0))
}
others() {
  local procs
  procs=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 >= 20 { printf "%s%s %s%%", sep, $2, $1; sep=", " }')
  echo "$(busy_pct)% of CPUs busy while idle${procs:+; busy processes (lifetime %CPU): $procs}"
}
contended=0; nrounds=0
wait_quiet() { # before a round: wait up to --wait-idle s for other processes to leave the CPUs
  local t0=$SECONDS p
  nrounds=$((nrounds + 1))
  while :; do
    p=$(busy_pct)
    [ "$p" -le "$max_busy" ] && return 0
    if ((SECONDS - t0 >= wait_idle)); then
      contended=$((contended + 1))
      echo "   warning: other processes use $p% of the CPUs; timing anyway" >&2
      return 0
    fi
    echo "   waiting: other processes use $p% of the CPUs (> $max_busy%)" >&2
    sleep 4
  done
}
load_before="load $(cut -d' ' -f1-3 /proc/loadavg), $(others)"
step "timing: ${tags[*]}, batches $batches, $threads threads, $rounds round(s) x $reps reps (+$warmup warm-up); $load_before"
run_one() { # runtime tag file batch round
  local rt=$1 tag=$2 f=$3 B=$4 r=$5 j="$out/runs/${2}_b${4}_r${5}_${1}.json"
  case "$rt" in
    ort) node $peers/ort_bench.js bench --model "$out/models/$tag.onnx" --batch "$B" --threads "$threads" \
           --reps "$reps" --warmup "$warmup" --json "$j" || die "ONNX Runtime bench failed ($tag, batch $B)" ;;
    ort8) node $peers/ort_bench.js bench --model "$out/models/$tag.int8.onnx" --batch "$B" --threads "$threads" \
           --reps "$reps" --warmup "$warmup" --json "$j" || die "ONNX Runtime int8 bench failed ($tag, batch $B)" ;;
    torch) env ${torch_env[@]+"${torch_env[@]}"} "$py" scripts/torch_deit.py bench --model "$f" --batch "$B" \
           --threads "$threads" --reps "$reps" --warmup "$warmup" --json "$j" \
           || die "PyTorch bench failed ($tag, batch $B)" ;;
    lpvit16) "$L" bench --model "$f" --density "$density" --block "$block" --batch "$B" --threads "$threads" --isa "$isa" \
           --precision bf16 --reps "$reps" --warmup "$warmup" --seed "$seed" --no-layers --json "$j" --quiet >/dev/null \
           || die "lpvit bench --precision bf16 failed ($tag, batch $B)" ;;
    lpvit) "$L" bench --model "$f" --density "$density" --block "$block" --batch "$B" --threads "$threads" --isa "$isa" \
           $([ "$quant" = int8 ] && echo --precision int8) \
           --reps "$reps" --warmup "$warmup" --seed "$seed" --no-layers --json "$j" --quiet >/dev/null \
           || die "lpvit bench failed ($tag, batch $B)" ;;
  esac
}
# CPU ticks: the whole machine's (busy, all) from /proc/stat and this shell's waited-for children.
sys_ticks() { local a; read -r -a a < <(head -1 /proc/stat); echo "$((a[1]+a[2]+a[3]+a[6]+a[7]+a[8])) $((a[1]+a[2]+a[3]+a[4]+a[5]+a[6]+a[7]+a[8]))"; }
child_ticks() { local s f; s=$(</proc/$$/stat); s=${s##*) }; read -r -a f <<<"$s"; echo $((f[13] + f[14])); }
rts=(ort torch lpvit); [ "$quant" = int8 ] && rts+=(ort8); [ "$precision" = bf16 ] && rts+=(lpvit16)
: >"$out/runs/other_cpu.tsv"
for i in "${!tags[@]}"; do
  for B in $batches; do
    for ((r = 1; r <= rounds; r++)); do
      wait_quiet
      for ((k = 0; k < ${#rts[@]}; k++)); do
        rt=${rts[$(((r - 1 + k) % ${#rts[@]}))]}
        for ((try = 1; ; try++)); do
          echo "   ${tags[$i]} batch $B round $r/$rounds: $rt" >&2
          read -r b0 a0 < <(sys_ticks); c0=$(child_ticks)
          run_one "$rt" "${tags[$i]}" "${files[$i]}" "$B" "$r"
          read -r b1 a1 < <(sys_ticks); c1=$(child_ticks)
          # share of all CPUs that other processes used while this one ran
          other=$(( a1 > a0 ? 100 * ((b1 - b0) - (c1 - c0)) / (a1 - a0) : 0 )); ((other < 0)) && other=0
          if ((other <= max_busy || try > retries)); then break; fi
          echo "   other processes used $other% of the CPUs during that run: again ($try of $retries)" >&2
          wait_quiet
        done
        printf '%s\t%s\t%s\t%s\t%s\n' "${tags[$i]}" "$B" "$r" "$rt" "$other" >>"$out/runs/other_cpu.tsv"
      done
    done
  done
done
load_after="load $(cut -d' ' -f1-3 /proc/loadavg), $(others)"

"$py" $peers/peers.py table --dir "$out/runs" --checks "$out/check" --models "${tags[*]}" --block "$block" --density "$density" \
  --loadavg "before: $load_before; after: $load_after ($(nproc) CPUs); $contended of $nrounds starts (rounds and repeats) found other processes above $max_busy% of the CPUs after waiting up to ${wait_idle} s" \
  --other-cpu "$out/runs/other_cpu.tsv" --json "$out/summary.json" | tee "$out/table.md"
echo "- command: scripts/$me $(printf '%q ' "${orig_args[@]+"${orig_args[@]}"}")" | tee -a "$out/table.md"

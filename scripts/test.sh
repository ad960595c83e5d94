#!/usr/bin/env bash
# The whole test suite (README command 2; .ci/run calls this):
#   1. install build and test dependencies (Debian packages, idempotent; python3-torch included)
#   2. Release build + every ctest test (unit, golden against ../shared/fixtures, e2e CLI runs)
#   3. ASan+UBSan build without MPI, unit + golden tests and the bad-input suite (tests/e2e/bad_input.sh) under it
#   4. the safetensors parser and image decoder fuzz targets for a short run each (clang/libFuzzer)
#   5. when the shared data is present ($LPVIT_DATA, else ../shared/data): the accuracy gates
#      (scripts/check-accuracy.sh) and the pruning gate (scripts/bench-prune.sh --quick: pruned top-1
#      must stay above scripts/bench-prune.floor)
# Options: --quick (skip 3-5), --no-install.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
quick=0; install=1
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    --no-install) install=0 ;;
    *) echo "test.sh: unknown option '$a'" >&2; exit 2 ;;
  esac
done
jobs=$(nproc 2>/dev/null || echo 2)
step() { printf '\n==== %s ====\n' "$*"; }
t0=$(date +%s)

# --with-torch: Debian's python3-torch (about 60 MB to download, 330 MB installed) for the fine-tuning round
# trip (tests/e2e/finetune_e2e.sh, which skips without it)
if [ "$install" = 1 ]; then step "dependencies"; scripts/install-deps.sh --with-torch; fi

step "release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLPVIT_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
step "tests (release)"
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "$quick" = 0 ]; then
  step "asan+ubsan build"
  # without MPI: the plain build's code paths (the release build above has MPI when libopenmpi-dev is there)
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLPVIT_SANITIZE=ON -DLPVIT_WERROR=ON -DLPVIT_MPI=OFF >/dev/null
  cmake --build build-asan -j"$jobs"
  step "tests (asan+ubsan, unit, golden and the bad-input suite)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" -L 'unit|golden|badinput'

  if command -v clang >/dev/null 2>&1; then
    step "fuzz (safetensors parser, 30 s)"
    cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DLPVIT_FUZZ=ON >/dev/null
    cmake --build build-fuzz -j"$jobs" --target fuzz_safetensors fuzz_image
    mkdir -p build-fuzz/corpus build-fuzz/corpus_image
    cp tests/fuzz/corpus/* build-fuzz/corpus/ 2>/dev/null || true
    cp tests/fuzz/corpus_image/* build-fuzz/corpus_image/ 2>/dev/null || true
    build-fuzz/tests/fuzz/fuzz_safetensors -max_total_time=30 -max_len=4096 build-fuzz/corpus >/dev/null 2>build-fuzz/fuzz.log \
      || { tail -40 build-fuzz/fuzz.log; exit 1; }
    grep -E "^#[0-9]+ *DONE" build-fuzz/fuzz.log || tail -2 build-fuzz/fuzz.log
    step "fuzz (image decoders, 15 s)"
    build-fuzz/tests/fuzz/fuzz_image -max_total_time=15 -max_len=2048 build-fuzz/corpus_image >/dev/null \
      2>build-fuzz/fuzz_image.log || { tail -40 build-fuzz/fuzz_image.log; exit 1; }
    grep -E "^#[0-9]+ *DONE" build-fuzz/fuzz_image.log || tail -2 build-fuzz/fuzz_image.log
  else
    echo "skip fuzz: clang not installed"
  fi

  if data=$(lpv_data_dir 2>/dev/null); then
    step "accuracy gates ($data)"
    scripts/check-accuracy.sh
    step "pruning gate (scripts/bench-prune.sh --quick)"
    scripts/bench-prune.sh --quick --out build/bench-prune-quick
  else
    echo "skip accuracy gates: no shared data (\$LPVIT_DATA, ../shared/data)"
  fi
fi
step "all tests passed in $(( $(date +%s) - t0 ))s"

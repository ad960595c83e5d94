#!/usr/bin/env bash
# Installs what lpvit needs to build and test on Debian 12 (idempotent; run as root or with sudo).
#   build:   cmake gcc libopenblas-dev libcjson-dev zlib1g-dev libstb-dev libjpeg62-turbo-dev (the libjpeg PIL
#            decodes with: JPEG pixels identical to PIL's; without it lpvit falls back to stb_image)
#   tests:   clang + libomp-dev (libFuzzer build), python3-numpy python3-pil (demo images, benchmark scripts,
#            PIL's reference pixels for tests/golden/test_jpeg_pil),
#            librsvg2-bin (rsvg-convert renders lpvit sweep's SVG plots in tests/e2e/sweep_e2e.sh),
#            curl (scripts/download-model.sh, tested on a file:// URL),
#            libopenmpi-dev openmpi-bin (the MPI build: mpirun -n R lpvit prune|eval, tests/e2e/mpi_e2e.sh;
#            without them lpvit builds MPI-free)
# Pass --with-torch to also install Debian's PyTorch (benchmark scripts, scripts/finetune_masked.py and its test
# tests/e2e/finetune_e2e.sh; scripts/test.sh passes it), --with-node Node.js + npm (for ONNX Runtime via npm;
# nodejs only when `node` is not on PATH, npm only when `npm` is not; used only by scripts/bench-peers.sh).
set -euo pipefail
pkgs=(cmake gcc make pkg-config libopenblas-dev libcjson-dev zlib1g-dev libstb-dev libjpeg62-turbo-dev)
extra=(clang libomp-dev python3 python3-numpy python3-pil librsvg2-bin curl libopenmpi-dev openmpi-bin)
for a in "$@"; do
  case "$a" in
    --with-torch) extra+=(python3-torch) ;;
    # a Node.js that ships its own npm (NodeSource) conflicts with Debian's npm package: add only
    # what is not on PATH
    --with-node) command -v node >/dev/null 2>&1 || extra+=(nodejs)
                 command -v npm >/dev/null 2>&1 || extra+=(npm) ;;
    --minimal) extra=() ;;
    *) echo "install-deps.sh: unknown option '$a'" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}" "${extra[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

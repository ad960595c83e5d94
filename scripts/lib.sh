# Helpers shared by the scripts in scripts/ and by tests/e2e/cli_e2e.sh. Source it (bash), e.g.
#   cd "$(dirname "$0")/.."; . scripts/lib.sh
# It sets LPV_ROOT (the repository root, absolute), exports LC_NUMERIC=C and defines:
#   lpv_python [MODULE...]   print the path of a python3 that imports every MODULE: python3 on PATH, then
#                            /usr/bin/python3 (Debian's python3-torch/-numpy/-pil import only there), then
#                            the other python3.N on PATH; when none does, one stderr line naming the
#                            missing modules and their Debian packages, and status 1
#   lpv_data_dir             print the shared data folder: $LPVIT_DATA, else ../shared/data beside the
#                            repository; status 1 and a message when it is not there
#   lpv_build                make sure build/lpvit exists and is newer than src/, include/ and the
#                            CMakeLists.txt files; else configure (Release) and build, quietly (the
#                            output shows only when the build fails)
#   lpv_json FILE PATH...    print the value at each dotted PATH, one per line: object keys and list
#                            indices (end_to_end.speedup, layers.0.density, environment.cpu); '*' stands
#                            for every element of a list or object (steps.*.blocks_revived), '.' for the
#                            whole document. Strings print as they are, numbers as Python prints them
#                            (83.667, 12, 1e-05), booleans and null as JSON writes them (true, false,
#                            null), lists and objects as compact JSON. A missing key or index: a line on
#                            stderr and status 1 (2: unreadable file or not JSON). No caller text is ever
#                            evaluated; format numbers with printf ('%.2fx').
#   lpv_json_has FILE PATH   status 0 when PATH exists, 1 when it does not (silent)
#   lpv_json_len FILE PATH   the number of elements of the list, object or string at PATH
#   lpv_near A B TOL         status 0 when |A - B| <= TOL (numbers as double, like Python's float)
#   lpv_less A B             status 0 when A < B
# The functions work under `set -euo pipefail` and without it (tests/e2e uses `set -u` only).

LPV_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export LC_NUMERIC=C   # printf and awk read "0.5" whatever the user's locale

# The probe each candidate python runs: its own path, then the MODULEs (argv) it cannot import;
# status 3 when some are missing. Fixed code: module names arrive as data, never as code.
_lpv_py_probe='import sys
missing = []
for m in sys.argv[1:]:
    try:
        __import__(m)
    except Exception:
        missing.append(m)
print(sys.executable)
print(" ".join(missing))
sys.exit(3 if missing else 0)'

lpv_python() {
  local cands=(python3 /usr/bin/python3) c path real seen=" " ran=" " out rc miss
  local best="" best_miss="" best_n=-1 n tried=()
  # the other python3.N on PATH, newest first
  while IFS= read -r c; do cands+=("$c"); done < <(compgen -c | grep -E '^python3\.[0-9]+$' 2>/dev/null | sort -u -t. -k2,2nr 2>/dev/null)
  for c in "${cands[@]}"; do
    path=$(command -v "$c" 2>/dev/null) || continue
    real=$(readlink -f "$path" 2>/dev/null) || real=$path
    case "$seen" in *" $real "*) continue ;; esac
    seen="$seen$real "
    rc=0; out=$("$path" -c "$_lpv_py_probe" "$@" 2>/dev/null) || rc=$?
    if [ "$rc" = 0 ]; then
      # sys.executable: a pyenv shim resolves to the interpreter it runs (no shim cost per call)
      c=${out%%$'\n'*}; [ -n "$c" ] && [ -x "$c" ] || c=$path
      printf '%s\n' "$c"; return 0
    fi
    [ "$rc" = 3 ] || continue   # not a working interpreter (e.g. a pyenv shim with no such version)
    # the interpreter behind it: python3 and python3.11 may be one pyenv python
    real=$(readlink -f "${out%%$'\n'*}" 2>/dev/null) || real=$path
    case "$ran" in *" $real "*) continue ;; esac
    ran="$ran$real "; tried+=("$c")
    miss=${out#*$'\n'}; n=$(wc -w <<<"$miss")
    if [ "$best_n" -lt 0 ] || [ "$n" -lt "$best_n" ]; then best=$c; best_miss=$miss; best_n=$n; fi
  done
  if [ -z "$best" ]; then
    echo "lpv_python: no working python3 (tried: ${tried[*]:-none on PATH}); Debian package: python3" >&2
    return 1
  fi
  local m pkgs=() unknown=() opt=""
  for m in $best_miss; do
    case "$m" in
      torch) pkgs+=(python3-torch); opt=" --with-torch" ;; numpy) pkgs+=(python3-numpy) ;; PIL) pkgs+=(python3-pil) ;;
      *) unknown+=("$m") ;;
    esac
  done
  local hint=""
  [ ${#pkgs[@]} -eq 0 ] || hint="; Debian packages: ${pkgs[*]} (scripts/install-deps.sh$opt)"
  [ ${#unknown[@]} -eq 0 ] || hint="$hint; no Debian package known for: ${unknown[*]}"
  echo "lpv_python: no python3 imports all of: $*; missing: $best_miss (closest: $best; tried: ${tried[*]})$hint" >&2
  return 1
}

lpv_data_dir() {
  local d=${LPVIT_DATA:-}
  if [ -z "$d" ]; then d=$(cd "$LPV_ROOT/.." && pwd)/shared/data; fi
  if [ ! -d "$d" ]; then
    echo "lpv_data_dir: data folder '$d' not found (set LPVIT_DATA, or put the project's shared data in ../shared/data)" >&2
    return 1
  fi
  printf '%s\n' "$d"
}

# the first file that build/lpvit is built from and is newer than it (nothing when it is up to date)
_lpv_newer() {
  (cd "$LPV_ROOT" && find src include CMakeLists.txt tests/CMakeLists.txt -newer build/lpvit -print -quit 2>/dev/null || true)
}
lpv_build() {
  local bin=build/lpvit why="" stamp log rc=0
  if [ ! -x "$LPV_ROOT/$bin" ]; then
    why="missing"
  else
    why=$(_lpv_newer); [ -z "$why" ] || why="older than $why"
  fi
  [ -n "$why" ] || return 0
  echo "lpv_build: $bin is $why: building it (Release)" >&2
  stamp=$(mktemp /tmp/lpv_build.XXXXXX)
  log=$(cd "$LPV_ROOT" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release 2>&1 \
        && cmake --build build -j"$(nproc 2>/dev/null || echo 2)" 2>&1) || rc=$?
  if [ "$rc" != 0 ] || [ ! -x "$LPV_ROOT/$bin" ]; then
    printf '%s\n' "$log" >&2
    echo "lpv_build: building $bin failed" >&2
    rm -f "$stamp"; return 1
  fi
  # a build that had nothing to redo (the newer file does not go into lpvit) leaves the binary's old
  # time: give it the build's start, so the next call does not build again
  if [ -n "$(_lpv_newer)" ] && [ ! "$LPV_ROOT/$bin" -nt "$stamp" ]; then touch -r "$stamp" "$LPV_ROOT/$bin"; fi
  rm -f "$stamp"
}

# The reader behind lpv_json*: argv = MODE FILE PATH...; plain key / index lookup, nothing evaluated.
_lpv_json_code='import json, re, sys
mode, name, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
def fail(status, msg):
    if mode != "has" or status != 1:
        sys.stderr.write("lpv_json: %s: %s\n" % (name, msg))
    sys.exit(status)
try:
    with open(name) as f:
        doc = json.load(f)
except (OSError, ValueError) as e:
    fail(2, "cannot read JSON (%s)" % e)
def lookup(path):
    vals = [doc]
    if path in ("", "."):
        return vals
    parts = path.split(".")
    for i, key in enumerate(parts):
        at = ".".join(parts[:i]) or "the top level"
        nxt = []
        for v in vals:
            if key == "*" and isinstance(v, (list, dict)):
                nxt.extend(v.values() if isinstance(v, dict) else v)
            elif isinstance(v, dict):
                if key not in v:
                    fail(1, "no key %r at %s (path %s)" % (key, at, path))
                nxt.append(v[key])
            elif isinstance(v, list):
                if not re.fullmatch(r"-?[0-9]+", key) or not -len(v) <= int(key) < len(v):
                    fail(1, "no index %r in the list of %d at %s (path %s)" % (key, len(v), at, path))
                nxt.append(v[int(key)])
            else:
                fail(1, "%s is %s, not a list or object (path %s)" % (at, json.dumps(v), path))
        vals = nxt
    return vals
def text(v):
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(",", ":"))
out = []
for p in paths:
    for v in lookup(p):
        if mode == "len":
            if not isinstance(v, (list, dict, str)):
                fail(1, "%s is %s: it has no length" % (p, json.dumps(v)))
            out.append(str(len(v)))
        elif mode == "get":
            out.append(text(v))
if out:
    print("\n".join(out))'

# A python for lpv_json (the standard library is enough), found once when lib.sh is sourced.
_lpv_json_py=$(lpv_python 2>/dev/null) || _lpv_json_py=""
_lpv_json() {
  local py=$_lpv_json_py
  [ -n "$py" ] || py=$(lpv_python) || return 2
  "$py" -c "$_lpv_json_code" "$@"
}
lpv_json() {
  [ $# -ge 2 ] || { echo "usage: lpv_json FILE PATH..." >&2; return 2; }
  _lpv_json get "$@"
}
lpv_json_has() {
  [ $# -eq 2 ] || { echo "usage: lpv_json_has FILE PATH" >&2; return 2; }
  _lpv_json has "$@"
}
lpv_json_len() {
  [ $# -eq 2 ] || { echo "usage: lpv_json_len FILE PATH" >&2; return 2; }
  _lpv_json len "$@"
}

lpv_near() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = (a + 0) - (b + 0); if (d < 0) d = -d; exit !(d <= t + 0) }'; }
lpv_less() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }

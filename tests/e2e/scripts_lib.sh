#!/usr/bin/env bash
# Tests of scripts/lib.sh, the helpers the scripts share: the python finder's one-line report of
# missing modules, lpv_json's path lookup and output format (and that it evaluates nothing),
# lpv_data_dir, lpv_build's staleness check (with a stand-in cmake), the float comparisons.
#   scripts_lib.sh path/to/lpvit SOURCE_DIR     (lpvit unused; ctest passes it to every e2e script)
set -u
SRC=$2
T=$(mktemp -d /tmp/lpvit_lib.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
. "$SRC/scripts/lib.sh"

# ---- lpv_python ----
py=$(lpv_python) && [ -x "$py" ] && ok || bad "lpv_python finds no python3 at all"
"$py" -c 'import json' && ok || bad "lpv_python's choice cannot import json: $py"
out=$(lpv_python json sys 2>"$T/err") && [ -x "$out" ] && [ ! -s "$T/err" ] && ok || bad "lpv_python json sys: $out $(cat "$T/err")"
out=$(lpv_python nosuchmodule 2>"$T/err"); rc=$?
[ "$rc" = 1 ] && [ -z "$out" ] && ok || bad "lpv_python nosuchmodule: status $rc, stdout '$out'"
[ "$(wc -l <"$T/err")" = 1 ] && grep -q "^lpv_python: .*missing: nosuchmodule" "$T/err" && ok \
  || bad "lpv_python nosuchmodule: expected one line naming the module, got: $(cat "$T/err")"
# a Debian-packaged module that is missing is named with its package (torch -> python3-torch)
if ! lpv_python torch >/dev/null 2>&1; then
  lpv_python torch nosuchmodule 2>"$T/err"
  [ "$(wc -l <"$T/err")" = 1 ] && grep -q "python3-torch" "$T/err" && ok || bad "no package hint for torch: $(cat "$T/err")"
fi
# module names are data: a name with code in it is only a module that does not import
lpv_python "os; open('$T/pwned', 'w')" 2>/dev/null
[ ! -e "$T/pwned" ] && ok || bad "lpv_python ran code from a module name"

# ---- lpv_json ----
cat >"$T/r.json" <<'EOF'
{"top1": 83.667, "images": 300, "tiny": 1e-05, "ratio": 0.1, "quiet": false, "cached": true, "none": null,
 "environment": {"cpu": "AMD EPYC 9654 96-Core", "isa": "avx512"}, "end_to_end": {"speedup": 1.1476503883939153},
 "layers": [{"layer": "blocks.0.attn.qkv", "density": 0.5}, {"layer": "blocks.0.mlp.fc1", "density": 0.75}],
 "steps": [], "7": "seven"}
EOF
[ "$(lpv_json "$T/r.json" top1)" = 83.667 ] && ok || bad "float: $(lpv_json "$T/r.json" top1)"
[ "$(lpv_json "$T/r.json" images)" = 300 ] && ok || bad "int"
[ "$(lpv_json "$T/r.json" tiny ratio)" = "$(printf '%s\n' 1e-05 0.1)" ] && ok || bad "floats as Python prints them"
[ "$(lpv_json "$T/r.json" quiet cached none)" = "$(printf '%s\n' false true null)" ] && ok || bad "booleans, null"
[ "$(lpv_json "$T/r.json" environment.cpu)" = "AMD EPYC 9654 96-Core" ] && ok || bad "string"
[ "$(lpv_json "$T/r.json" end_to_end.speedup)" = 1.1476503883939153 ] && ok || bad "nested float"
[ "$(printf '%.2fx' "$(lpv_json "$T/r.json" end_to_end.speedup)")" = 1.15x ] && ok || bad "printf formatting"
[ "$(lpv_json "$T/r.json" layers.1.density layers.-1.layer)" = "$(printf '%s\n' 0.75 blocks.0.mlp.fc1)" ] && ok || bad "list index"
[ "$(lpv_json "$T/r.json" 'layers.*.density')" = "$(printf '%s\n' 0.5 0.75)" ] && ok || bad "wildcard"
[ "$(lpv_json "$T/r.json" 7)" = seven ] && ok || bad "a digit key of an object"
[ "$(lpv_json "$T/r.json" layers.0)" = '{"layer":"blocks.0.attn.qkv","density":0.5}' ] && ok || bad "object as compact JSON"
[ -z "$(lpv_json "$T/r.json" 'steps.*')" ] && ok || bad "wildcard over an empty list"
[ "$(lpv_json_len "$T/r.json" layers)" = 2 ] && [ "$(lpv_json_len "$T/r.json" steps)" = 0 ] \
  && [ "$(lpv_json_len "$T/r.json" environment.isa)" = 6 ] && ok || bad "lpv_json_len"
lpv_json_has "$T/r.json" environment.isa && ok || bad "lpv_json_has: present"
lpv_json_has "$T/r.json" environment.gpu 2>"$T/err"; [ $? = 1 ] && [ ! -s "$T/err" ] && ok || bad "lpv_json_has: absent"
# missing keys and indices, paths through scalars, bad files: one line on stderr, non-zero status
for p in nope environment.gpu layers.2 layers.x top1.x; do
  out=$(lpv_json "$T/r.json" "$p" 2>"$T/err"); rc=$?
  [ "$rc" = 1 ] && [ -z "$out" ] && [ "$(wc -l <"$T/err")" = 1 ] && grep -q "^lpv_json: .*$p" "$T/err" && ok \
    || bad "lpv_json $p: status $rc, stdout '$out', stderr $(cat "$T/err")"
done
printf 'not json' >"$T/bad.json"
lpv_json "$T/bad.json" top1 2>"$T/err"; [ $? = 2 ] && [ "$(wc -l <"$T/err")" = 1 ] && ok || bad "not JSON: $(cat "$T/err")"
lpv_json "$T/missing.json" top1 2>/dev/null; [ $? = 2 ] && ok || bad "missing file"
# a path is looked up, never evaluated
lpv_json "$T/r.json" "__import__('os').system('touch $T/pwned')" 2>/dev/null
[ ! -e "$T/pwned" ] && ok || bad "lpv_json evaluated a path"

# ---- lpv_near, lpv_less ----
lpv_near 82.4 82.10 0.5 && ok || bad "lpv_near 82.4 82.10 0.5"
lpv_near 82.7 82.10 0.5 && bad "lpv_near 82.7 82.10 0.5" || ok
lpv_less 55.7 57 && ! lpv_less 63.333 57 && ! lpv_less 57 57 && ok || bad "lpv_less"

# ---- lpv_data_dir ----
[ "$(LPVIT_DATA=$T lpv_data_dir)" = "$T" ] && ok || bad "LPVIT_DATA not used"
out=$(LPVIT_DATA=$T/none lpv_data_dir 2>"$T/err"); rc=$?
[ "$rc" = 1 ] && [ -z "$out" ] && grep -q "$T/none" "$T/err" && ok || bad "absent data dir: status $rc, $(cat "$T/err")"

# ---- lpv_build: a stand-in tree and cmake (records its calls, makes build/lpvit) ----
R=$T/repo; mkdir -p "$R/src" "$R/include" "$R/build" "$T/bin"
touch "$R/CMakeLists.txt" "$R/src/a.c" "$R/include/a.h"
cat >"$T/bin/cmake" <<EOF
#!/bin/sh
echo "cmake \$*" >>"$T/calls"
[ -e "$T/fail" ] && { echo "stand-in compiler error"; exit 1; }
case "\$*" in *--build*) [ -e "$T/noop" ] || { touch build/lpvit; chmod +x build/lpvit; } ;; esac
exit 0
EOF
chmod +x "$T/bin/cmake"
build() { (LPV_ROOT=$R; PATH=$T/bin:$PATH; lpv_build) >"$T/out" 2>"$T/err"; }
build && [ -x "$R/build/lpvit" ] && [ "$(grep -c . "$T/calls")" = 2 ] \
  && grep -q "^cmake -S . -B build -DCMAKE_BUILD_TYPE=Release$" "$T/calls" && grep -q "^cmake --build build -j" "$T/calls" \
  && ok || bad "missing binary not built: $(cat "$T/calls" "$T/err")"
[ ! -s "$T/out" ] && ! grep -q "cmake" "$T/err" && ok || bad "lpv_build is not quiet: $(cat "$T/out" "$T/err")"
: >"$T/calls"; build && [ ! -s "$T/calls" ] && ok || bad "up-to-date binary rebuilt"
touch -d '+2 seconds' "$R/src/a.c"
: >"$T/calls"; build && [ "$(grep -c . "$T/calls")" = 2 ] && grep -q "src/a.c" "$T/err" && ok || bad "stale binary not rebuilt: $(cat "$T/err")"
touch -d '+4 seconds' "$R/include/a.h" && touch "$T/fail"
: >"$T/calls"; build; rc=$?
[ "$rc" = 1 ] && grep -q "stand-in compiler error" "$T/err" && grep -q "lpv_build: building build/lpvit failed" "$T/err" \
  && ok || bad "failed build: status $rc, $(cat "$T/err")"
# a build with nothing to redo (the newer file does not go into lpvit) leaves the binary's time: it is
# stamped with the build's start, so the next call does not build again
rm -f "$T/fail"; touch "$T/noop"; touch -d '-1 hour' "$R/build/lpvit"; touch -d '-30 minutes' "$R/src/a.c" "$R/include/a.h"
: >"$T/calls"; build && [ "$(grep -c . "$T/calls")" = 2 ] && ok || bad "no-op build: $(cat "$T/err")"
: >"$T/calls"; build && [ ! -s "$T/calls" ] && ok || bad "built again after a no-op build: $(cat "$T/err")"

echo "scripts_lib: $pass checks passed, $fails failed"
[ "$fails" = 0 ]

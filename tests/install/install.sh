#!/usr/bin/env bash
# The installed library as another program sees it: `cmake --install` into a temp prefix, then
# tests/install/consumer.c compiled with nothing but that prefix's pkg-config flags, linked once
# against liblpvit.so and once against liblpvit.a (pkg-config --static), must print the same
# top-1 class and logit as the installed `lpvit infer` for a random model (and for the timm
# fixture when ../shared/fixtures is there). Also checks what got installed: the soname link,
# the headers, that the .so exports the API's lpv_* names only (no lpv__* internals), and that
# the installed CLI finds its presets in share/lpvit.
#   install.sh BUILD_DIR SOURCE_DIR LIBDIR CC [sanitized]
# Exit 77 (skipped, saying why): a sanitizer build (the consumer would need its runtime), or no
# pkg-config.
set -u
B=$1
SRC=$2
LIBDIR=$3
CC=$4
if [ "${5:-}" = sanitized ]; then echo "skip install test: sanitizer build (a plain consumer cannot load the instrumented library)"; exit 77; fi
command -v pkg-config >/dev/null || { echo "skip install test: pkg-config not installed"; exit 77; }
T=$(mktemp -d /tmp/lpvit_install.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$SRC/scripts/lib.sh"
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
die() { echo "install: $*" >&2; exit 1; }

P=$T/p
unset DESTDIR # cmake --install would put the files under it
cmake --install "$B" --prefix "$P" >"$T/install.log" 2>&1 || { cat "$T/install.log" >&2; die "cmake --install failed"; }
for f in bin/lpvit "$LIBDIR/liblpvit.a" "$LIBDIR/liblpvit.so" "$LIBDIR/pkgconfig/lpvit.pc" include/lpvit/forward.h; do
  [ -e "$P/$f" ] && ok || bad "not installed: $f"
done
soname=$(readelf -d "$P/$LIBDIR/liblpvit.so" 2>/dev/null | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ -n "$soname" ] && [ -e "$P/$LIBDIR/$soname" ] && ok || bad "liblpvit.so has no soname, or no '$soname' link"
[ -z "$(ls "$P/include" | grep -v '^lpvit$')" ] && ok || bad "include/ holds more than lpvit/: $(ls "$P/include")"
others=$(nm -D --defined-only "$P/$LIBDIR/liblpvit.so" | awk 'NF == 3 && $3 !~ /^lpv_[^_]/ {print $3}' | head -5)
[ -z "$others" ] && ok || bad "liblpvit.so exports names outside the API (lpv_*, not lpv__*): $others"

export PKG_CONFIG_PATH=$P/$LIBDIR/pkgconfig
read -r -a cflags <<<"$(pkg-config --cflags lpvit)" || die "pkg-config --cflags lpvit failed"
read -r -a libs <<<"$(pkg-config --libs lpvit)" || die "pkg-config --libs lpvit failed"
read -r -a slibs <<<"$(pkg-config --static --libs lpvit)" || die "pkg-config --static --libs lpvit failed"
# the static link takes the archive by name: -llpvit would pick the .so sitting beside it
slibs=("${slibs[@]/#-llpvit/-l:liblpvit.a}")
cc_run() { "$CC" -std=c11 -Wall -Wextra -Werror "$SRC/tests/install/consumer.c" "$@" 2>"$T/cc.err" || { cat "$T/cc.err" >&2; return 1; }; }
cc_run "${cflags[@]}" "${libs[@]}" -o "$T/consumer_shared" && ok || bad "consumer does not build against liblpvit.so"
cc_run "${cflags[@]}" "${slibs[@]}" -o "$T/consumer_static" && ok || bad "consumer does not build against liblpvit.a"
readelf -d "$T/consumer_shared" 2>/dev/null | grep -q "NEEDED.*\[$soname\]" && ok || bad "consumer_shared does not load $soname"
readelf -d "$T/consumer_static" 2>/dev/null | grep -q "NEEDED.*liblpvit" && bad "consumer_static loads liblpvit.so" || ok

# the installed CLI reads presets and class names from its share/lpvit: a preset whose weights are
# nowhere (HOME, hence the Hugging Face cache, is the temp folder) names that folder in its error
env -u LPVIT_MODELS -u HF_HOME -u HF_HUB_CACHE HOME="$T" "$P/bin/lpvit" infer --model deit_t x.jpg --quiet 2>"$T/err" >/dev/null
grep -qF "'$P/bin/../share/lpvit/" "$T/err" && ok || bad "installed lpvit does not look in share/lpvit: $(cat "$T/err")"

# the models: a random one, always; the timm fixture when ../shared is there
"$P/bin/lpvit" create-model --dim 64 --depth 2 --heads 2 --classes 10 --seed 3 --out "$T/m.safetensors" --quiet \
  || die "installed lpvit create-model failed"
models=("$T/m.safetensors")
FIX=$SRC/../shared/fixtures
if [ -f "$FIX/timm_deit_tiny_d2.safetensors" ]; then models+=("$FIX/timm_deit_tiny_d2.safetensors")
else echo "skip fixture model: $FIX not found"; fi
img=$SRC/tests/data/imagenet-mini/n01440764/img0.JPEG
for m in "${models[@]}"; do
  # DeiT's normalization, which the consumer's lpv_preproc_default has (the fixture file does not say)
  "$P/bin/lpvit" infer --model "$m" --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 "$img" --json "$T/i.json" --quiet || { bad "lpvit infer failed on $m"; continue; }
  want_class=$(lpv_json "$T/i.json" images.0.top5.0.class)
  want_logit=$(lpv_json "$T/i.json" images.0.top5.0.logit)
  for kind in shared static; do
    [ -x "$T/consumer_$kind" ] || continue
    if ! got=$(LD_LIBRARY_PATH=$P/$LIBDIR "$T/consumer_$kind" "$m" "$img"); then bad "consumer_$kind failed on $m"; continue; fi
    read -r class logit <<<"$got"
    # infer runs the blocked dense kernel, the consumer OpenBLAS: equal up to rounding (~1e-6 here;
    # a changed normalization moves the logits by 1e-3 or more)
    [ "$class" = "$want_class" ] && lpv_near "$logit" "$want_logit" 1e-4 && ok \
      || bad "consumer_$kind on $(basename "$m"): '$got', lpvit infer: '$want_class $want_logit'"
  done
done

echo "install: $pass checks passed, $fails failed"
[ "$fails" = 0 ]

#!/usr/bin/env bash
# Temp files that cannot be orphaned (fileio.h): lpvit runs that are writing a file are sent
# SIGINT, SIGTERM or SIGHUP mid-write. Each must die of that signal (exit status 130/143/129 in
# the shell), leave no "*.tmp.*" / "*.raw.*" file in the output or cache folder, and leave the
# target as it was (an existing one byte for byte, a new one absent). With O_TMPFILE (the default
# where the filesystem has it) even SIGKILL leaves nothing; the named fallback
# (LPVIT_NO_O_TMPFILE=1) is checked with one signal. The calibration cache is checked the same way
# during its save, which must also remove the stale temps that older runs left in the cache.
#
# The signal is sent once the process holds a file open in the output folder (polled through
# /proc/PID/fd), so it lands during the write whatever the machine's load; a run that finished
# before the signal arrived is retried, up to 3 times.
#   tmpfiles_e2e.sh path/to/lpvit SOURCE_DIR
set -u
set -m # job control: a background job of a non-interactive shell would have SIGINT ignored
L=$1
SRC=$2
T=$(mktemp -d /tmp/lpvit_tmpfiles.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# leftovers DIR: the temp files in DIR, one line each (none: empty)
leftovers() { find "$1" -maxdepth 1 \( -name '*.tmp.*' -o -name '*.raw.*' \) -printf '%f\n'; }

# interrupt SIG DIR cmd...: runs cmd in the background, waits (at most 20 s) until it has a file in
# DIR open for writing, sends SIG, and waits for it to end. Sets rc (its exit status) and how
# ("named" or "unnamed": the kind of file it had open; "missed" when it ended first or never opened one).
interrupt() {
  local sig=$1 dir=$2; shift 2
  "$@" >"$T/out" 2>"$T/err" &
  local pid=$! end=$((SECONDS + 20)) fd=""
  how=missed
  while [ $SECONDS -lt $end ] && kill -0 "$pid" 2>/dev/null; do
    fd=$(find "/proc/$pid/fd" -lname "$dir/*" -printf '%l\n' 2>/dev/null | head -1)
    [ -n "$fd" ] && break
    sleep 0.01
  done
  if [ -n "$fd" ]; then
    case $fd in *" (deleted)") how=unnamed ;; *) how=named ;; esac
    kill -s "$sig" "$pid"
  else
    kill -s KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  rc=$?
  [ "$rc" = 0 ] && how=missed # the write had finished: the signal came too late
  return 0
}

declare -A CODE=([INT]=130 [TERM]=143 [HUP]=129 [KILL]=137)

# case_model SIG MODE EXISTING: create-model of a large model (about 90 MB) into a folder of its own,
# interrupted by SIG; MODE "" (O_TMPFILE where there is one) or "named"; EXISTING 1: the target
# exists before and must keep its bytes, 0: it must not appear.
case_model() {
  local sig=$1 mode=$2 existing=$3 D="$T/out_$1_$2_$3" tries=0
  mkdir -p "$D"
  local M="$D/model.safetensors" before=""
  if [ "$existing" = 1 ]; then echo "the old model" >"$M"; before=$(sha "$M"); fi
  local envs=()
  [ "$mode" = named ] && envs=(LPVIT_NO_O_TMPFILE=1)
  while :; do
    tries=$((tries + 1))
    interrupt "$sig" "$D" env "${envs[@]}" "$L" create-model --preset deit_s --seed 3 --out "$M" --quiet
    [ "$how" != missed ] || [ $tries -ge 3 ] && break
    rm -f "$M"; [ "$existing" = 1 ] && echo "the old model" >"$M"
  done
  local what="create-model, SIG$sig, ${mode:-default} write, $([ "$existing" = 1 ] && echo existing || echo new) target"
  if [ "$how" = missed ]; then bad "$what: never caught mid-write in $tries tries (rc $rc)"; return; fi
  [ "$rc" = "${CODE[$sig]}" ] && ok || bad "$what: exit status $rc, expected ${CODE[$sig]}"
  [ "$mode" = named ] && [ "$how" != named ] && bad "$what: LPVIT_NO_O_TMPFILE=1 still wrote an unnamed file"
  local left; left=$(leftovers "$D")
  [ -z "$left" ] && ok || bad "$what ($how file): left $(echo $left)"
  if [ "$existing" = 1 ]; then
    [ "$(sha "$M")" = "$before" ] && ok || bad "$what: the existing target changed"
  else
    [ ! -e "$M" ] && ok || bad "$what: the target was created"
  fi
  echo "  $what: rc $rc, $how file, tries $tries"
  last_how=$how
}

last_how=""
case_model INT "" 1
unnamed=$last_how
case_model TERM "" 0
case_model HUP "" 1
case_model TERM named 1
# SIGKILL cannot be caught: only an unnamed file is guaranteed to vanish with the process
if [ "$unnamed" = unnamed ]; then
  case_model KILL "" 1
else
  echo "  the default write had a named temp (no O_TMPFILE where $T is, or an lpvit without it): SIGKILL case skipped"
fi

# ---- the calibration cache ----
MINI=$SRC/tests/data/imagenet-mini
C=$T/cache
mkdir -p "$C"
SM=$T/small.safetensors
"$L" create-model --dim 384 --depth 4 --heads 6 --seed 5 --out "$SM" --quiet || bad "create-model for the cache cases"
# stale temps of older runs: a dead writer's (a reaped pid), and a live pid's (ours) that is days old
sleep 0 & deadpid=$!; wait $deadpid
touch "$C/calib-00aa.lpvc.tmp.$deadpid" "$C/calib-00aa.lpvc.raw.$deadpid" "$C/calib-00bb.lpvc.raw.$$"
touch -d '3 days ago' "$C/calib-00bb.lpvc.raw.$$"
touch "$C/calib-00cc.lpvc.tmp.$$" # a live writer's, recent: kept
# interrupted during the cache save: the statistics are gathered, then the cache file is written
# (the first file prune writes in the cache folder), then pruning goes on. The save first removes
# the stale temps, so the leftovers check covers those too. fisher's statistics hold two weight-sized
# tensors a layer (mean gradient and squares): a write long enough to catch.
prune_args=(prune --model "$SM" --heads 6 --calib-dir "$MINI" --calib-size 4 --calib-batch 4 --target-flops 0.7
  --block 16x16 --saliency fisher --update none --permute none --refine 0 --cache-dir "$C"
  --out "$T/pruned.safetensors" --quiet)
for sig in INT; do
  tries=0
  while :; do
    tries=$((tries + 1))
    interrupt "$sig" "$C" "$L" "${prune_args[@]}"
    [ "$how" != missed ] || [ $tries -ge 3 ] && break
    rm -f "$C"/calib-*.lpvc "$T/pruned.safetensors"
  done
  what="prune, SIG$sig during the cache save"
  if [ "$how" = missed ]; then bad "$what: never caught mid-write in $tries tries (rc $rc)"; continue; fi
  [ "$rc" = "${CODE[$sig]}" ] && ok || bad "$what: exit status $rc, expected ${CODE[$sig]}"
  left=$(leftovers "$C" | grep -v -e "^calib-00cc.lpvc.tmp.$$\$")
  [ -z "$left" ] && ok || bad "$what ($how file): left $(echo $left)"
  [ -z "$(find "$C" -name '*.lpvc')" ] && ok || bad "$what: a cache file was created"
  [ ! -e "$T/pruned.safetensors" ] && ok || bad "$what: the pruned model was written"
  echo "  $what: rc $rc, $how file, tries $tries"
done
# the stale temps went with the interrupted save above (it removes them before it opens its file)
[ -e "$C/calib-00cc.lpvc.tmp.$$" ] && ok || bad "a live writer's recent temp was removed from the cache"

echo "tmpfiles_e2e: $pass passed, $fails failed"
[ "$fails" = 0 ]

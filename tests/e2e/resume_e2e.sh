#!/usr/bin/env bash
# A prune in steps leaves a checkpoint of every step but the last in the cache, and a later run of the same
# command resumes after the latest one it finds: here a 4-step prune of a random 2-block model runs once
# (3 checkpoints), its two newest checkpoints are removed as if it had been killed during step 3, and the
# rerun resumes after step 1, says so on stderr and in the JSON, and writes byte for byte the file that a
# run without any cache writes. Other settings (another seed) never pick up these checkpoints, and
# lpvit cache list shows them.
#   resume_e2e.sh path/to/lpvit SOURCE_DIR
set -u
L=$1
SRC=$2
T=$(mktemp -d /tmp/lpvit_resume.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
MINI="$SRC/tests/data/imagenet-mini"
"$L" create-model --dim 64 --heads 2 --depth 2 --img 64 --seed 4 --out "$T/m.safetensors" --quiet || exit 1
prune() { # out, extra flags
  local out=$1; shift
  "$L" prune --model "$T/m.safetensors" --calib-dir "$MINI" --target-flops 0.5 --block 16 --threads 2 --out "$out" "$@"
}
steps() { ls "$T/cache" 2>/dev/null | grep -c '^step-.*\.lpvc$'; }

prune "$T/fresh.safetensors" --no-cache --json "$T/fresh.json" >/dev/null 2>"$T/err0" && ok || bad "no-cache prune: $(tail -1 "$T/err0")"
prune "$T/a.safetensors" --cache-dir "$T/cache" --json "$T/a.json" >/dev/null 2>"$T/err1" && ok || bad "first prune: $(tail -1 "$T/err1")"
[ "$(steps)" = 3 ] && ok || bad "expected 3 step checkpoints (4 steps), found $(steps)"
cmp -s "$T/a.safetensors" "$T/fresh.safetensors" && ok || bad "checkpointing changed the result"

# as if killed during step 3: only step 1's checkpoint is left (the oldest)
for f in $(ls -tr "$T/cache"/step-*.lpvc | tail -n +2); do rm "$f"; done
[ "$(steps)" = 1 ] && ok || bad "could not leave one checkpoint"
prune "$T/b.safetensors" --cache-dir "$T/cache" --json "$T/b.json" >"$T/b.out" 2>"$T/err2" && ok || bad "resumed prune: $(tail -1 "$T/err2")"
grep -q "step 1 of 4 from its checkpoint" "$T/err2" && ok || bad "the rerun did not say it resumed: $(grep -i step "$T/err2" | head -3)"
grep -q "^resumed *steps 1-1 of 4" "$T/b.out" && ok || bad "the table does not say it resumed"
"$PY" -c '
import json, sys
s = json.load(open(sys.argv[1]))["steps"]
assert [x["resumed"] for x in s] == [True, False, False, False], s
' "$T/b.json" && ok || bad "the JSON does not mark step 1 resumed"
cmp -s "$T/b.safetensors" "$T/fresh.safetensors" && ok || bad "the resumed run wrote another model than a fresh run"
[ "$(steps)" = 3 ] && ok || bad "the resumed run did not checkpoint steps 2 and 3 again ($(steps))"

# other settings never use them
prune "$T/c.safetensors" --cache-dir "$T/cache" --seed 9 >/dev/null 2>"$T/err3" && ok || bad "seed 9 prune failed"
grep -q "from its checkpoint\|from the checkpoint" "$T/err3" && bad "another seed resumed from these checkpoints" || ok

"$L" cache list --cache-dir "$T/cache" >"$T/list" 2>&1 && [ "$(grep -c 'step-.*\.lpvc' "$T/list")" -ge 3 ] && ! grep -q stale "$T/list" \
  && ok || bad "cache list: $(cat "$T/list")"

echo "resume_e2e: $pass checks passed, $fails failed"
[ "$fails" -eq 0 ]

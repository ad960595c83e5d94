#!/usr/bin/env bash
# The bad-input suite: lpvit given hostile or careless inputs never crashes, never hangs, never changes an
# input or a special file, never leaves a temp file, and says what is wrong in one line.
#   bad_input.sh path/to/lpvit SOURCE_DIR
# Every case is one `t` line in the table below: the exit code it must give, a piece of text its one error
# line must contain ("" for a success), and the command (run with --quiet, so the error is the only line
# on stderr). After each case the suite checks, besides the
# exit code and the line: every input file's hash, the FIFO still a FIFO, no *.tmp.* / *.raw.* file in
# the inputs or outputs, and that it finished within the time limit (exit 124 = a hang).
# Also run under ASan/UBSan by scripts/test.sh (label badinput).
set -u
L=$1
SRC=$2
T=$(mktemp -d /tmp/lpvit_bad.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$SRC/scripts/lib.sh"
I=$T/in  # inputs: hashed before and after every case
O=$T/out # outputs
mkdir -p "$I" "$O"
LIMIT=${LPVIT_CASE_TIMEOUT:-120}
fails=0 pass=0 n=0

die() { echo "bad_input: setup failed: $*" >&2; exit 1; }

# ---- inputs --------------------------------------------------------------------------------------
"$L" create-model --dim 64 --depth 1 --heads 2 --seed 1 --out "$I/m.safetensors" --quiet || die "create-model"
"$L" create-model --dim 64 --depth 1 --heads 2 --classes 10 --out "$I/c10.safetensors" --quiet || die "c10"
cp -r "$SRC/tests/data/imagenet-mini" "$I/data"
cp -r "$SRC/tests/data/flat" "$I/flat"
cp "$SRC/tests/data/flat_labels.txt" "$I/labels.txt"
head -5 "$SRC/models/synset_words.txt" >"$I/syn5.txt"
ln "$I/m.safetensors" "$I/hard.safetensors"
ln -s "$I/m.safetensors" "$I/sym.safetensors"
mkfifo "$I/fifo"
mkfifo "$O/fifo.safetensors"
# a folder with a dangling link and a FIFO where images should be
mkdir -p "$I/odd/n01440764"
cp "$SRC/tests/data/imagenet-mini/n01440764/"* "$I/odd/n01440764/"
ln -s "$I/nonexistent.JPEG" "$I/odd/n01440764/dangling.JPEG"
mkfifo "$I/odd/n01440764/pipe.JPEG"
head -c 300 "$SRC/tests/data/imagenet-mini/n01440764/img0.JPEG" >"$I/truncated.JPEG"
"$L" infer --model "$I/m.safetensors" --heads 2 "$I/data/n01440764/img0.JPEG" --quiet >/dev/null || die "infer"
"$L" prune --model "$I/m.safetensors" --heads 2 --calib-dir "$I/data" --target-flops 0.8 --no-cache --calib-size 4 \
  --out "$I/p.safetensors" --quiet >/dev/null || die "prune"
py=$(lpv_python) || die "python3 is needed to write the hostile files"
"$py" - "$I" <<'EOF' || die "python"
import json, struct, sys, zlib
d = sys.argv[1]
b = open(d + "/m.safetensors", "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
def save(name, header, data):
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    open(d + "/" + name, "wb").write(struct.pack("<Q", len(hb)) + hb + data)
# one infinity in a weight
data = bytearray(b[8 + n:])
o = h["blocks.0.mlp.fc1.weight"]["data_offsets"][0]
data[o + 40:o + 44] = struct.pack("<f", float("inf"))
save("inf.safetensors", h, bytes(data))
# a tensor the architecture does not use
end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
h2 = dict(h)
h2["extra.weight"] = {"dtype": "F32", "shape": [2], "data_offsets": [end, end + 8]}
save("extra.safetensors", h2, b[8 + n:8 + n + end] + b"\0" * 8)
# a pruned file whose first BSR row pointer is not 0
bp = open(d + "/p.safetensors", "rb").read()
pn = struct.unpack("<Q", bp[:8])[0]
ph = json.loads(bp[8:8 + pn])
key = sorted(k for k in ph if k.endswith(".bsr_row_ptr"))[0]
pdata = bytearray(bp[8 + pn:])
o = ph[key]["data_offsets"][0]
pdata[o] = 5
open(d + "/badbsr.safetensors", "wb").write(bp[:8 + pn] + bytes(pdata))
# the same model without any metadata: its preprocessing is unknown
h3 = {k: v for k, v in h.items() if k != "__metadata__"}
save("nometa.safetensors", h3, b[8 + n:])
# corrupt files: cut short, a header length past the end, a header that is not JSON
open(d + "/short.safetensors", "wb").write(b[:len(b) // 2])
open(d + "/hugehdr.safetensors", "wb").write(struct.pack("<Q", 1 << 40) + b"{}")
open(d + "/notjson.safetensors", "wb").write(struct.pack("<Q", 8) + b"{not js}")
# a PNG whose header says 20000 x 20000
def chunk(t, p): return struct.pack(">I", len(p)) + t + p + struct.pack(">I", zlib.crc32(t + p) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
open(d + "/huge.png", "wb").write(png + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b""))
EOF
# an input tensor for infer --input: made by lpvit itself from one image is not possible, so reuse a model
# file as a (wrong) input: only the aliasing matters where it is used

snapshot() { (cd "$I" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
BEFORE=$(snapshot)

# ---- one case ------------------------------------------------------------------------------------
# t EXIT NEEDLE cmd...   (cmd runs as: timeout LIMIT lpvit cmd...)
t() {
  local want=$1 needle=$2; shift 2
  n=$((n + 1))
  local what="case $n: lpvit $*" bad=0
  timeout -k 5 "$LIMIT" "$L" "$@" --quiet >"$T/stdout" 2>"$T/stderr" </dev/null
  local got=$?
  if [ "$got" = 124 ] || [ "$got" = 137 ]; then echo "FAIL $what: hung (no exit within ${LIMIT}s)" >&2; bad=1
  elif [ "$got" != "$want" ]; then
    echo "FAIL $what: exit $got, expected $want" >&2; sed 's/^/    /' "$T/stderr" | head -3 >&2; bad=1
  fi
  if [ "$want" != 0 ] && [ "$bad" = 0 ]; then
    local lines; lines=$(wc -l <"$T/stderr")
    if [ "$lines" != 1 ] || ! grep -q '^lpvit: ' "$T/stderr"; then
      echo "FAIL $what: expected one 'lpvit: ' line, got $lines:" >&2; head -3 "$T/stderr" | sed 's/^/    /' >&2; bad=1
    elif ! grep -qF -- "$needle" "$T/stderr"; then
      echo "FAIL $what: error lacks '$needle': $(cat "$T/stderr")" >&2; bad=1
    elif grep -qF "''" "$T/stderr"; then
      echo "FAIL $what: a name quoted twice: $(cat "$T/stderr")" >&2; bad=1
    fi
  fi
  if [ "$(snapshot)" != "$BEFORE" ]; then echo "FAIL $what: an input changed" >&2; bad=1; BEFORE=$(snapshot); fi
  for f in "$I/fifo" "$O/fifo.safetensors" "$I/odd/n01440764/pipe.JPEG"; do
    [ -p "$f" ] || { echo "FAIL $what: '$f' is no longer a FIFO" >&2; bad=1; rm -f "$f"; mkfifo "$f"; }
  done
  local left; left=$(find "$T" \( -name '*.tmp.*' -o -name '*.raw.*' \) | head -3)
  if [ -n "$left" ]; then echo "FAIL $what: temp files left: $left" >&2; bad=1; find "$T" \( -name '*.tmp.*' -o -name '*.raw.*' \) -delete; fi
  if [ "$bad" = 0 ]; then pass=$((pass + 1)); else fails=$((fails + 1)); fi
}

M=$I/m.safetensors
D=$I/data
PR="--calib-dir $D --target-flops 0.8 --no-cache --calib-size 4"
NEVER="never overwrites an input"

# ---- the table -----------------------------------------------------------------------------------
# outputs that are inputs, through every command and output flag, by path, hard link, symlink, ./
t 2 "$NEVER"                    prune --model "$M" $PR --out "$O/p.safetensors" --report "$M"
t 2 "is also --out"             prune --model "$M" $PR --out "$O/x" --report "$O/x"
t 2 "is also --out"             prune --model "$M" $PR --out "$O/x" --report "$O/./x"
t 2 "$NEVER"                    prune --model "$M" $PR --out "$I/sym.safetensors"
t 2 "$NEVER"                    prune --model "$M" $PR --out "$O/p.safetensors" --report "$D/n01440764/img0.JPEG"
t 2 "$NEVER"                    inspect "$M" --json "$M"
t 2 "$NEVER"                    inspect "$M" --json "$I/hard.safetensors"
t 2 "$NEVER"                    eval --model "$M" --heads 2 --imagenet-dir "$D" --json "$M"
t 2 "inside the input --imagenet-dir" eval --model "$M" --heads 2 --imagenet-dir "$D" --json "$D/n01440764/img1.png"
t 2 "$NEVER"                    eval --model "$M" --heads 2 --imagenet-dir "$I/flat" --labels "$I/labels.txt" --json "$I/labels.txt"
t 2 "$NEVER"                    eval --model "$M" --heads 2 --imagenet-dir "$D" --synsets "$I/syn5.txt" --json "$I/syn5.txt"
t 2 "$NEVER"                    infer --model "$M" --heads 2 --input "$I/hard.safetensors" --out "$M"
t 2 "$NEVER"                    infer --model "$M" --heads 2 "$D/n01440764/img0.JPEG" --json "$D/n01440764/img0.JPEG"
t 2 "$NEVER"                    quantize --model "$M" --heads 2 --out "$I/hard.safetensors"
t 2 "$NEVER"                    export --model "$M" --heads 2 --out "$I/sym.safetensors"
t 2 "$NEVER"                    bench --model "$M" --heads 2 --random-weights --json "$M" --reps 1 --warmup 0
t 2 "$NEVER"                    bench --model "$M" --heads 2 --calibrate --out "$M" --reps 1
# outputs that are special files, or in a folder that does not exist (found before any work)
t 2 "is a fifo"                 create-model --dim 64 --depth 1 --heads 2 --out "$O/fifo.safetensors"
t 2 "is a fifo"                 prune --model "$M" $PR --out "$O/p.safetensors" --report "$O/fifo.safetensors"
t 2 "is a folder"               eval --model "$M" --heads 2 --imagenet-dir "$D" --json "$O"
t 1 "does not exist"            create-model --dim 64 --depth 1 --heads 2 --out "$O/nowhere/x.safetensors"
t 1 "does not exist"            prune --model "$M" $PR --out "$O/p.safetensors" --report "$O/nowhere/r.json"
t 2 "--cache-dir '$M' exists and is not a folder" prune --model "$M" --calib-dir "$D" --target-flops 0.8 --out "$O/p.safetensors" --cache-dir "$M"
t 2 "exists and is not a folder" prune --model "$M" --calib-dir "$D" --target-flops 0.8 --out "$O/p.safetensors" --cache-dir "$I/fifo"
# readers given a FIFO with no writer: refused at once, never a hang
t 1 "not a regular file"        inspect "$I/fifo"
t 1 "not a regular file"        eval --model "$I/fifo" --imagenet-dir "$D"
t 1 "not a regular file"        eval --model deit_t --weights "$I/fifo" --imagenet-dir "$D"
t 1 "not a regular file"        eval --model "$M" --heads 2 --imagenet-dir "$D" --synsets "$I/fifo"
t 1 "not a regular file"        eval --model "$M" --heads 2 --imagenet-dir "$I/flat" --labels "$I/fifo"
t 1 "not a regular file"        prune --model "$M" $PR --out "$O/p.safetensors" --cost-table "$I/fifo" --objective speed
t 1 "not a regular file"        infer --model "$M" --heads 2 --input "$I/fifo" --out "$O/y.safetensors"
t 1 "not a regular file"        infer --model "$M" --heads 2 "$I/fifo"
# labels past the model's classes (was exit 139)
t 1 "but the model has 10 classes" eval --model "$I/c10.safetensors" --heads 2 --imagenet-dir "$D"
t 1 "in '$I/labels.txt', but the model has 10 classes" eval --model "$I/c10.safetensors" --heads 2 --imagenet-dir "$I/flat" --labels "$I/labels.txt"
t 1 "but the model has 10 classes" prune --model "$I/c10.safetensors" --heads 2 $PR --loss ce --out "$O/p.safetensors"
t 1 "has 5 classes, but the model has 1000" infer --model "$M" --heads 2 --synsets "$I/syn5.txt" "$D/n01440764/img0.JPEG"
# thread counts past what OpenBLAS was built for (was exit 139 / 134)
t 2 "--threads: expected 0.."   prune --model "$M" $PR --out "$O/p.safetensors" --threads 1024
t 2 "--threads: expected 0.."   eval --model "$M" --heads 2 --imagenet-dir "$D" --threads 600
t 2 "--threads: expected 0..4096" bench --model "$M" --heads 2 --random-weights --threads 5000
# non-finite weights stop at load, naming the tensor (infer printed nan%, prune l1 wrote them out)
t 1 "tensor 'blocks.0.mlp.fc1.weight' has a non-finite value (inf)" infer --model "$I/inf.safetensors" --heads 2 "$D/n01440764/img0.JPEG"
t 1 "non-finite value"          eval --model "$I/inf.safetensors" --heads 2 --imagenet-dir "$D"
t 1 "non-finite value"          prune --model "$I/inf.safetensors" --heads 2 $PR --saliency l1 --out "$O/inf-l1.safetensors"
t 1 "non-finite value"          bench --model "$I/inf.safetensors" --heads 2 --reps 1
# flags: the flag an error suggests exists
t 1 "(see --allow-extra)"       infer --model "$I/extra.safetensors" --heads 2 "$D/n01440764/img0.JPEG"
t 0 ""                          infer --model "$I/extra.safetensors" --heads 2 --allow-extra "$D/n01440764/img0.JPEG"
t 0 ""                          create-model --preset deit_t --depth 1 --classes 10 --img 32 --out "$O/c.safetensors"
# preprocessing is never guessed: a file without metadata needs --mean/--std to read images
PP="is not known (no lpvit metadata"
t 2 "$PP"                       eval --model "$I/nometa.safetensors" --heads 2 "$D"
t 2 "$PP"                       prune --model "$I/nometa.safetensors" --heads 2 $PR --out "$O/p.safetensors"
t 2 "$PP"                       infer --model "$I/nometa.safetensors" --heads 2 "$D/n01440764/img0.JPEG"
t 2 "$PP"                       quantize --model "$I/nometa.safetensors" --heads 2 --out "$O/q.safetensors"
t 0 ""                          eval --model "$I/nometa.safetensors" --heads 2 "$D" --mean 0.5 0.5 0.5 --std 0.5 0.5 0.5
t 0 ""                          bench --model "$I/nometa.safetensors" --heads 2 --reps 1 --warmup 0 --no-layers
# hostile files
t 1 "is 20000x20000"            infer --model "$M" --heads 2 "$I/huge.png"
t 1 "cannot decode image"       infer --model "$M" --heads 2 "$I/truncated.JPEG"
t 1 "short.safetensors"         inspect "$I/short.safetensors"
t 1 "bsr '$I/badbsr.safetensors: blocks." eval --model "$I/badbsr.safetensors" --imagenet-dir "$D"
t 1 "hugehdr.safetensors"       eval --model "$I/hugehdr.safetensors" --imagenet-dir "$D"
t 1 "notjson.safetensors"       prune --model "$I/notjson.safetensors" $PR --out "$O/p.safetensors"
t 0 ""                          eval --model "$M" --heads 2 --imagenet-dir "$I/odd" --json "$O/odd.json"
t 1 "dangling.JPEG"             eval --model "$M" --heads 2 --imagenet-dir "$I/odd" --strict

# ---- what the successes wrote --------------------------------------------------------------------
[ "$(lpv_json "$O/odd.json" skipped)" = 2 ] && pass=$((pass + 1)) || { echo "FAIL: the dangling link and the FIFO image were not skipped and counted" >&2; fails=$((fails + 1)); }
"$L" inspect "$O/c.safetensors" >"$T/stdout" 2>/dev/null
grep -q "10 classes" "$T/stdout" && pass=$((pass + 1)) || { echo "FAIL: create-model --preset ignored --classes" >&2; fails=$((fails + 1)); }
for f in p.safetensors inf-l1.safetensors; do
  [ ! -e "$O/$f" ] && pass=$((pass + 1)) || { echo "FAIL: a failed run wrote '$f'" >&2; fails=$((fails + 1)); }
done

# ---- a full disk: the output is never half written, no temp file stays ----------------------------
# (RLIMIT_FSIZE stands in for a full file system: write(2) then fails with EFBIG, as with ENOSPC)
n=$((n + 1))
(trap '' XFSZ; ulimit -f 64; exec "$L" create-model --dim 192 --depth 2 --heads 3 --out "$O/big.safetensors" --quiet) 2>"$T/stderr"
got=$?
if [ "$got" = 1 ] && grep -q "^lpvit: cannot write" "$T/stderr" && [ ! -e "$O/big.safetensors" ] \
   && [ -z "$(find "$O" -name '*.tmp.*')" ]; then pass=$((pass + 1))
else echo "FAIL case $n: full disk: exit $got, $(cat "$T/stderr"), $(ls "$O")" >&2; fails=$((fails + 1)); fi

# started by an MPI launcher (2 ranks announced) but built without MPI: every rank would redo the whole job
if "$L" --version | grep -q '^mpi: none'; then
  OMPI_COMM_WORLD_SIZE=2 t 1 "built without mpi" eval --model "$M" --imagenet-dir "$D"
fi

echo "bad_input: $n cases, $pass checks passed, $fails failed"
[ "$fails" = 0 ]

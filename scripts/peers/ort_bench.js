#!/usr/bin/env node
// ONNX Runtime (npm onnxruntime-node, CPU execution provider) for scripts/bench-peers.sh.
//
//   node ort_bench.js info                                           versions + which libonnxruntime loaded
//   node ort_bench.js infer --model M.onnx --input X.safetensors --out Y.safetensors [--threads N]
//   node ort_bench.js bench --model M.onnx --batch B [--threads N] [--reps K] [--warmup W] [--json OUT]
//
// Sessions: CPU EP only, intraOpNumThreads = N, interOpNumThreads = 1, graph optimization 'all',
// sequential execution. Every command checks that the native library is the linux-x64
// libonnxruntime bundled in this folder's node_modules, and exits 1 otherwise.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

function die(msg) {
  process.stderr.write(`ort_bench.js: ${msg}\n`);
  process.exit(1);
}

let ort;
try {
  ort = require('onnxruntime-node');
} catch (e) {
  die(`cannot load onnxruntime-node (run: cd scripts/peers && npm ci --ignore-scripts): ${e.message}`);
}

function parseArgs(argv) {
  const a = { threads: os.cpus().length, reps: 10, warmup: 2, batch: 1 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (!k.startsWith('--')) die(`unexpected argument '${k}'`);
    const v = argv[i + 1];
    if (v === undefined) die(`${k} needs a value`);
    i++;
    const name = k.slice(2);
    if (!['model', 'input', 'out', 'threads', 'reps', 'warmup', 'batch', 'json'].includes(name)) die(`unknown option ${k}`);
    a[name] = ['threads', 'reps', 'warmup', 'batch'].includes(name) ? Number(v) : v;
    if (typeof a[name] === 'number' && !(Number.isInteger(a[name]) && a[name] >= 0)) die(`${k}: not a count: '${v}'`);
  }
  return a;
}

// The native library this process mapped, and whether it is the one bundled in node_modules.
function nativeLibrary() {
  let maps = '';
  try {
    maps = fs.readFileSync('/proc/self/maps', 'utf8');
  } catch (e) {
    die(`cannot read /proc/self/maps: ${e.message}`);
  }
  const libs = [...new Set(maps.split('\n').map((l) => l.split(/\s+/).slice(5).join(' ')).filter((p) => /libonnxruntime/.test(p)))];
  const pkg = path.dirname(require.resolve('onnxruntime-node/package.json'));
  const want = path.join(pkg, 'bin', 'napi-v6', 'linux', 'x64');
  if (process.platform !== 'linux' || process.arch !== 'x64') die(`expected linux-x64, running on ${process.platform}-${process.arch}`);
  if (libs.length !== 1) die(`expected one libonnxruntime mapped, found ${libs.length}: ${libs.join(', ') || 'none'}`);
  const real = fs.realpathSync(libs[0]);
  if (path.dirname(real) !== fs.realpathSync(want)) die(`libonnxruntime loaded from ${real}, not the bundled ${want}`);
  return real;
}

function info() {
  const pkg = require('onnxruntime-node/package.json');
  return {
    runtime: 'onnxruntime',
    ort_version: pkg.version,
    ort_versions: ort.env.versions,
    node: process.version,
    library: nativeLibrary(),
    execution_providers: ['cpu'],
  };
}

function sessionOptions(threads) {
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  };
}

function readSafetensors(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 8) die(`${file}: not a safetensors file (too short)`);
  const n = Number(buf.readBigUInt64LE(0));
  if (8 + n > buf.length) die(`${file}: header length ${n} beyond the file`);
  const hdr = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = {};
  for (const [k, v] of Object.entries(hdr)) {
    if (k === '__metadata__') continue;
    if (v.dtype !== 'F32') die(`${file}: tensor '${k}' is ${v.dtype}, only F32 is read here`);
    const [s, e] = v.data_offsets;
    const start = buf.byteOffset + 8 + n + s;
    out[k] = { shape: v.shape, data: new Float32Array(buf.buffer.slice(start, start + (e - s))) };
  }
  return out;
}

function writeSafetensors(file, name, shape, data) {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let h = JSON.stringify({ [name]: { dtype: 'F32', shape, data_offsets: [0, bytes.length] } });
  h += ' '.repeat((8 - (h.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  const tmp = `${file}.tmp.safetensors`;
  fs.writeFileSync(tmp, Buffer.concat([len, Buffer.from(h, 'utf8'), bytes]));
  fs.renameSync(tmp, file);
}

async function session(a) {
  if (!a.model) die('--model is required');
  if (!fs.existsSync(a.model)) die(`${a.model}: no such file`);
  try {
    return await ort.InferenceSession.create(a.model, sessionOptions(a.threads));
  } catch (e) {
    die(`${a.model}: cannot create a session: ${e.message}`);
  }
}

async function infer(a) {
  if (!a.input || !a.out) die('infer needs --input and --out');
  const s = await session(a);
  const t = readSafetensors(a.input).input;
  if (!t) die(`${a.input}: no tensor 'input'`);
  const r = await s.run({ [s.inputNames[0]]: new ort.Tensor('float32', t.data, t.shape) });
  const y = r[s.outputNames[0]];
  writeSafetensors(a.out, 'logits', y.dims.map(Number), y.data);
  process.stderr.write(`ort: ${a.model}: logits ${y.dims.join('x')} for input ${t.shape.join('x')}, library ${nativeLibrary()}\n`);
}

async function bench(a) {
  const s = await session(a);
  const B = a.batch;
  if (B < 1) die('--batch must be at least 1');
  const n = B * 3 * 224 * 224;
  const x = new Float32Array(n);
  let st = 12345;
  for (let i = 0; i < n; i++) { // fixed LCG, values in [-2, 2)
    st = (Math.imul(st, 1103515245) + 12345) >>> 0;
    x[i] = (st / 4294967296) * 4 - 2;
  }
  const feeds = { [s.inputNames[0]]: new ort.Tensor('float32', x, [B, 3, 224, 224]) };
  for (let i = 0; i < a.warmup; i++) await s.run(feeds);
  const raw = [];
  for (let i = 0; i < a.reps; i++) {
    const t0 = process.hrtime.bigint();
    await s.run(feeds);
    raw.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const ts = [...raw].sort((p, q) => p - q);
  const k = ts.length;
  if (k === 0) die('--reps must be at least 1');
  const med = k % 2 ? ts[(k - 1) / 2] : 0.5 * (ts[k / 2 - 1] + ts[k / 2]);
  const res = Object.assign(info(), {
    model: a.model,
    threads: a.threads,
    session_options: sessionOptions(a.threads),
    batches: {
      [String(B)]: {
        median_ms: med, min_ms: ts[0], median_ms_per_image: med / B, min_ms_per_image: ts[0] / B,
        images_per_sec: (1e3 * B) / med, reps: a.reps, warmup: a.warmup, times_ms: raw,
      },
    },
  });
  const txt = JSON.stringify(res, null, 1) + '\n';
  if (a.json) fs.writeFileSync(a.json, txt); else process.stdout.write(txt);
}

async function main() {
  const [cmd, ...rest] = process.argv.slice(2);
  const a = parseArgs(rest);
  if (cmd === 'info') process.stdout.write(JSON.stringify(info(), null, 1) + '\n');
  else if (cmd === 'infer') await infer(a);
  else if (cmd === 'bench') await bench(a);
  else die(`usage: ort_bench.js info | infer --model M --input X --out Y | bench --model M --batch B [--threads N --reps K --warmup W --json OUT]`);
}

main().catch((e) => die(e && e.stack ? e.stack : String(e)));

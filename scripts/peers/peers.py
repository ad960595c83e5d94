#!/usr/bin/env python3
"""Helpers for scripts/bench-peers.sh (numpy only, no torch):

  peers.py input   --out X.safetensors [--batch N] [--seed S]     write tensor 'input' (N,3,224,224) F32
  peers.py compare --ref Y.safetensors --other Z.safetensors|Z.npy [--tol T] [--tol-rel R] [--name NAME]
                   print max |ref - other| over the logits; exit 1 when above --tol (and R x max |ref logit|)
  peers.py table   --dir DIR [--checks DIR2] [--models "a b"]        the markdown table from the JSON files
"""
import argparse, glob, json, os, struct, sys

import numpy as np

DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        buf = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(buf[a:b], dtype=DT[v["dtype"]]).reshape(v["shape"]).copy()
    return out


def write_safetensors(path, tensors, metadata=None):
    """Minimal writer: F32 tensors, header padded to 8 bytes, atomic rename."""
    hdr, blobs, off = {}, [], 0
    if metadata:
        hdr["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    for k, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        b = a.tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp.safetensors"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def cmd_input(a):
    # an already-normalized image tensor: N(0,1) values, roughly what mean/std normalization gives
    x = np.random.default_rng(a.seed).standard_normal((a.batch, 3, a.size, a.size)).astype(np.float32)
    write_safetensors(a.out, {"input": x}, {"seed": a.seed})


def load_logits(path):
    if path.endswith(".npy"):
        return np.load(path)
    t = read_safetensors(path)
    if "logits" not in t:
        sys.exit("peers.py: %s holds no tensor 'logits' (has %s)" % (path, ", ".join(t) or "none"))
    return t["logits"]


def cmd_compare(a):
    r, o = load_logits(a.ref).astype(np.float64), load_logits(a.other).astype(np.float64)
    if r.shape != o.shape:
        sys.exit("peers.py: %s: logits shape %s, but %s has %s" % (a.name, o.shape, a.ref, r.shape))
    err = float(np.abs(r - o).max())
    scale = float(np.abs(r).max())
    same_top1 = float((r.argmax(1) == o.argmax(1)).mean())
    tol = max(a.tol, a.tol_rel * scale)
    res = {"name": a.name, "max_abs_err": err, "max_abs_logit": scale, "top1_agreement": same_top1,
           "shape": list(r.shape), "tol": tol, "ok": err <= tol}
    if a.json:
        json.dump(res, open(a.json, "w"), indent=1)
    print("%-28s max|diff| %.3g (max|logit| %.3g, top-1 agree %.0f%%, tol %g) %s" % (
        a.name, err, scale, 100 * same_top1, tol, "ok" if err <= tol else "FAIL"))
    if not err <= tol:  # also catches NaN
        sys.exit(1)


def med(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def cmd_table(a):
    """DIR holds <model>_b<B>_r<round>_<runtime>.json (runtime: ort, torch, lpvit); CHECKS (default DIR)
    holds check_*.json from compare --json.
    Per runtime: the median over rounds of each round's median ms/batch (lpvit reports medians only)."""
    runs = {}
    env = {}
    for f in sorted(glob.glob(os.path.join(a.dir, "*_b*_r*_*.json"))):
        base = os.path.basename(f)[:-5]
        head, rt = base.rsplit("_", 1)
        head, rnd = head.rsplit("_r", 1)
        model, B = head.rsplit("_b", 1)
        B = int(B)
        j = json.load(open(f))
        key = (model, B)
        d = runs.setdefault(key, {})
        if rt == "lpvit":
            e = j["end_to_end"]
            d.setdefault("dense", []).append(e["dense"]["median_ms"])
            d.setdefault("pruned", []).append(e["sparse"]["median_ms"])
            d["density"] = j.get("linear_density")
            if "model_pct_peak" in e["dense"]:
                d.setdefault("dense_pct_peak", []).append(e["dense"]["model_pct_peak"])
            if "int8" in e:
                d.setdefault("q8_dense", []).append(e["int8"]["dense"]["median_ms"])
                d.setdefault("q8_pruned", []).append(e["int8"]["sparse"]["median_ms"])
            env["lpvit"] = j["environment"]
            env["lpvit_peak"] = j.get("peak", {})
        elif rt == "ort":
            d.setdefault("ort", []).append(j["batches"][str(B)]["median_ms"])
            env["ort"] = j
        elif rt == "lpvit16":
            e = j["end_to_end"]
            d.setdefault("bf16_dense", []).append(e["bf16"]["dense"]["median_ms"])
            d.setdefault("bf16_pruned", []).append(e["bf16"]["sparse"]["median_ms"])
            d.setdefault("bf16_fp32_dense", []).append(e["dense"]["median_ms"])
        elif rt == "ort8":
            d.setdefault("ort8", []).append(j["batches"][str(B)]["median_ms"])
        elif rt == "torch":
            d.setdefault("torch", []).append(j["batches"][str(B)]["median_ms"])
            env["torch"] = j
    if not runs:
        sys.exit("peers.py: no benchmark results in %s" % a.dir)
    checks = {}
    for f in glob.glob(os.path.join(a.checks or a.dir, "check_*.json")):
        j = json.load(open(f))
        checks[j["name"]] = j

    other = {}
    if a.other_cpu and os.path.exists(a.other_cpu):
        for line in open(a.other_cpu):
            f = line.split()
            if len(f) == 5:
                k = (f[0], int(f[1]))
                other[k] = max(other.get(k, 0), int(f[4]))

    def cell(ms, B):
        if ms is None:
            return "–"
        return "%.1f ms · %.1f/s" % (ms / B, 1e3 * B / ms)

    order = []
    for m in a.models.split() if a.models else sorted({k[0] for k in runs}):
        for B in sorted({k[1] for k in runs if k[0] == m}):
            order.append((m, B))
    print("| model | batch | ONNX Runtime | PyTorch | lpvit dense | lpvit pruned %g%% (%s) | dense / ORT | pruned / ORT | rounds | other CPU use | max\\|Δ\\| ORT vs lpvit |"
          % (100 * a.density, a.block))
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for key in order:
        m, B = key
        d = runs[key]
        ms = {k: (med(d[k]) if d.get(k) else None) for k in ("ort", "torch", "dense", "pruned")}
        r1 = ms["dense"] / ms["ort"] if ms["dense"] and ms["ort"] else None
        r2 = ms["pruned"] / ms["ort"] if ms["pruned"] and ms["ort"] else None
        ck = checks.get("ort_vs_lpvit_%s" % m)
        nr = max(len(d.get(k, [])) for k in ("ort", "torch", "dense"))
        print("| %s | %d | %s | %s | %s | %s | %s | %s | %d | %s | %s |" % (
            m, B, cell(ms["ort"], B), cell(ms["torch"], B), cell(ms["dense"], B), cell(ms["pruned"], B),
            "%.2f" % r1 if r1 else "–", "%.2f" % r2 if r2 else "–", nr,
            "≤ %d%%" % other[key] if key in other else "–",
            "%.1e" % ck["max_abs_err"] if ck else "–"))
        summary["%s_b%d" % key] = {"ms_per_image": {k: (v / B if v else None) for k, v in ms.items()},
                                   "rounds_ms_per_batch": {k: d.get(k) for k in ("ort", "torch", "dense", "pruned")},
                                   "lpvit_dense_over_ort": r1, "lpvit_pruned_over_ort": r2,
                                   "pruned_linear_density": d.get("density"),
                                   "lpvit_dense_pct_of_peak": med(d["dense_pct_peak"]) if d.get("dense_pct_peak") else None}
    if any(runs[k].get("ort8") or runs[k].get("q8_dense") for k in order):
        print()
        print("int8 (block linears int8, the rest FP32, in every runtime):")
        print()
        print("| model | batch | ONNX Runtime FP32 | ONNX Runtime int8 | lpvit int8 dense | lpvit int8 pruned %g%% | "
              "ORT int8 speedup over ORT FP32 | lpvit int8 dense / ORT int8 | lpvit int8 pruned / ORT int8 | "
              "lpvit int8 dense speedup over lpvit FP32 dense | max\\|Δ\\| ORT int8 vs its PyTorch emulation (1 block; 12) | "
              "max\\|Δ\\| ORT int8 vs FP32 logits |" % (100 * a.density))
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for key in order:
            m, B = key
            d = runs[key]
            ms = {k: (med(d[k]) if d.get(k) else None) for k in ("ort", "ort8", "dense", "q8_dense", "q8_pruned")}
            rat = lambda x, y: ("%.2f" % (x / y)) if x and y else "–"
            ck8, ckf = checks.get("ort8_vs_torch8_%s" % m), checks.get("ort8_vs_lpvit_%s" % m)
            ck12 = checks.get("ort8_vs_torch8_full_%s" % m)
            print("| %s | %d | %s | %s | %s | %s | %sx | %s | %s | %sx | %s | %s |" % (
                m, B, cell(ms["ort"], B), cell(ms["ort8"], B), cell(ms["q8_dense"], B), cell(ms["q8_pruned"], B),
                rat(ms["ort"], ms["ort8"]), rat(ms["q8_dense"], ms["ort8"]), rat(ms["q8_pruned"], ms["ort8"]),
                rat(ms["dense"], ms["q8_dense"]),
                ("%.1e" % ck8["max_abs_err"] if ck8 else "–") + ("; %.1e" % ck12["max_abs_err"] if ck12 else ""),
                "%.1e" % ckf["max_abs_err"] if ckf else "–"))
            r = summary["%s_b%d" % key]
            r["ms_per_image"].update({k: (ms[k] / B if ms[k] else None) for k in ("ort8", "q8_dense", "q8_pruned")})
            r["rounds_ms_per_batch"].update({k: d.get(k) for k in ("ort8", "q8_dense", "q8_pruned")})
            r["lpvit_int8_dense_over_ort_int8"] = ms["q8_dense"] / ms["ort8"] if ms["q8_dense"] and ms["ort8"] else None
            r["lpvit_int8_pruned_over_ort_int8"] = ms["q8_pruned"] / ms["ort8"] if ms["q8_pruned"] and ms["ort8"] else None
        print()
        print("ONNX Runtime int8: per-row int8 weights (lpvit's rule) and one dynamic uint8 scale per input tensor "
              "(DynamicQuantizeLinear, ORT's quantize_dynamic scheme); lpvit int8: the same weights, one uint8 scale per "
              "token. Their logits differ by the input scheme, so the check is against PyTorch running ORT's own arithmetic.")
    if any(runs[k].get("bf16_dense") for k in order):
        print()
        print("BF16 (lpvit --precision bf16: block linears and attention's products in BF16 with FP32 sums; ONNX Runtime "
              "has no BF16 path on x86 CPUs, so its FP32 is the peer):")
        print()
        print("| model | batch | ONNX Runtime FP32 | lpvit FP32 dense | lpvit BF16 dense | lpvit BF16 pruned %g%% | "
              "BF16 dense / ORT | BF16 pruned / ORT | BF16 dense speedup over lpvit FP32 dense |" % (100 * a.density))
        print("|---|---|---|---|---|---|---|---|---|")
        for key in order:
            m, B = key
            d = runs[key]
            ms = {k: (med(d[k]) if d.get(k) else None) for k in ("ort", "bf16_fp32_dense", "bf16_dense", "bf16_pruned")}
            rat = lambda x, y: ("%.2f" % (x / y)) if x and y else "–"
            print("| %s | %d | %s | %s | %s | %s | %s | %s | %sx |" % (
                m, B, cell(ms["ort"], B), cell(ms["bf16_fp32_dense"], B), cell(ms["bf16_dense"], B),
                cell(ms["bf16_pruned"], B), rat(ms["bf16_dense"], ms["ort"]), rat(ms["bf16_pruned"], ms["ort"]),
                rat(ms["bf16_fp32_dense"], ms["bf16_dense"])))
            r = summary["%s_b%d" % key]
            r["ms_per_image"].update({k: (ms[k] / B if ms[k] else None) for k in ("bf16_dense", "bf16_pruned")})
            r["rounds_ms_per_batch"].update({k: d.get(k) for k in ("bf16_dense", "bf16_pruned", "bf16_fp32_dense")})
            r["lpvit_bf16_dense_over_ort"] = ms["bf16_dense"] / ms["ort"] if ms["bf16_dense"] and ms["ort"] else None
            r["lpvit_bf16_pruned_over_ort"] = ms["bf16_pruned"] / ms["ort"] if ms["bf16_pruned"] and ms["ort"] else None
        print()
        print("lpvit FP32 dense in this table is the BF16 run's own (the same process times both); ratios below 1: "
              "lpvit faster.")
    print()
    print("Cells: median ms per image · images per second (median over rounds of each round's median). "
          "Ratios are time ratios: below 1 means lpvit is faster than ONNX Runtime. "
          "Other CPU use: the largest share of all CPUs that other processes took during one of the row's runs.")
    le, oe, te = env.get("lpvit", {}), env.get("ort", {}), env.get("torch", {})
    dens = sorted({"%.3f" % r["density"] for r in runs.values() if r.get("density") is not None})
    print()
    pk = env.get("lpvit_peak", {})
    pct = [r["lpvit_dense_pct_of_peak"] for r in summary.values() if r.get("lpvit_dense_pct_of_peak") is not None]
    print("- CPU: %s (family/model %s, %s online CPUs, features %s); lpvit ISA %s, measured FMA peak %s; "
          "ONNX Runtime picks its own kernels (MLAS) and does not report its ISA" % (
        le.get("cpu", "?"), le.get("cpu_family_model", "?"), le.get("online_cpus", "?"), le.get("cpu_features", "?"),
        le.get("isa", "?"),
        "%.0f GFLOP/s (%s, %s threads)" % (pk["gflops"], pk.get("isa", "?"), pk.get("threads", "?")) if pk.get("gflops") else "?"))
    if pct:
        print("- lpvit dense end to end: %.0f-%.0f %% of that peak (the model's FLOPs over the median time)" % (min(pct), max(pct)))
    print("- threads: %s for every runtime (ORT intra-op %s, inter-op 1, sequential, graph optimization all; "
          "torch set_num_threads %s + OPENBLAS_NUM_THREADS %s)" % (
              le.get("threads", "?"), oe.get("threads", "?"), te.get("threads", "?"), te.get("openblas_num_threads", "?")))
    print("- lpvit %s, commit %s, %s build, %s; OpenBLAS core %s (%s); %s" % (
        le.get("lpvit", "?"), le.get("commit", "?"), le.get("build", "?"), le.get("compiler", "?"),
        le.get("openblas_core", "?"), le.get("openblas_core_source", "?"), le.get("openblas_config", "?")))
    print("- lpvit pruned: random " + a.block + "-block masks on the block linears, measured linear density %s "
          "(patch embedding and head stay dense)" % (", ".join(dens) or "?"))
    print("- ONNX Runtime %s (npm onnxruntime-node, CPU execution provider, library %s)" % (
        oe.get("ort_version", "?"), oe.get("library", "?")))
    print("- PyTorch %s (Debian python3-torch), OpenBLAS core %s" % (te.get("torch", "?"), te.get("openblas_core", "?")))
    if a.loadavg:
        print("- other load (1/5/15-min load average): %s" % a.loadavg)
    if a.json:
        json.dump({"results": summary, "checks": checks, "environment": env}, open(a.json, "w"), indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("input")
    i.add_argument("--out", required=True)
    i.add_argument("--batch", type=int, default=4)
    i.add_argument("--size", type=int, default=224)
    i.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare")
    c.add_argument("--ref", required=True)
    c.add_argument("--other", required=True)
    c.add_argument("--tol", type=float, default=1e-3)
    c.add_argument("--tol-rel", type=float, default=0.0, help="tolerance as a fraction of max |ref logit| (the larger wins)")
    c.add_argument("--name", default="logits")
    c.add_argument("--json")
    t = sub.add_parser("table")
    t.add_argument("--dir", required=True)
    t.add_argument("--checks", default="")
    t.add_argument("--other-cpu", default="", help="TSV: model, batch, round, runtime, %% of CPUs other processes used")
    t.add_argument("--models", default="")
    t.add_argument("--block", default="32x32")
    t.add_argument("--density", type=float, default=0.5)
    t.add_argument("--loadavg", default="")
    t.add_argument("--json")
    a = p.parse_args()
    {"input": cmd_input, "compare": cmd_compare, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    main()

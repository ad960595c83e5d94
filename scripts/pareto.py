#!/usr/bin/env python3
"""The Pareto table and plot of scripts/bench-pareto.sh (numpy-free: json and the standard library).

  pareto.py --dir OUT --models "vit_tiny deit_tiny" --targets "0.9 0.8 0.7 0.5" --batches "1 8" [--command C]

Reads, per model, OUT/<model>/sweep/sweep.json (FP32 points: top-1, prune wall time), int8-<point>.eval.json,
int8-<point>.quantize.json, bench-<point>-b<B>-r<round>.json (lpvit bench --precision int8: FP32 dense, FP32
pruned, int8 dense, int8 pruned in one process) and ort-b<B>-r<round>.json (ONNX Runtime FP32, optional).
Per cell: the median over rounds (a speedup is each round's ratio, measured in one process, then the median). Prints the markdown
table, writes OUT/pareto.json and OUT/pareto.svg (top-1 against speedup over lpvit FP32 dense at the first batch,
or --plot-batch; one line per model and precision).
"""
import argparse, json, os, sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def sweep_points(sw):
    """{'dense' or target string: point} from a sweep.json, FP32 points only."""
    out = {}
    for p in sw["points"]:
        if p.get("precision", "fp32") != "fp32":
            continue
        out["dense" if p.get("kind") == "dense" else "%g" % p["target_flops"]] = p
    return out


def collect(a):
    rows = []
    batches = [int(b) for b in a.batches.split()]
    for m in a.models.split():
        d = os.path.join(a.dir, m)
        sw = load(os.path.join(d, "sweep", "sweep.json"))
        if sw is None:
            sys.exit("pareto.py: %s/sweep/sweep.json missing (run scripts/bench-pareto.sh)" % d)
        pts = sweep_points(sw)
        rounds = range(1, a.rounds + 1)
        ort = {}
        for B in batches:
            o = [load(os.path.join(d, "ort-b%d-r%d.json" % (B, r))) for r in rounds]
            o = [x["batches"][str(B)]["median_ms_per_image"] for x in o if x is not None]
            ort[B] = median(o) if o else None
        env = None
        for t in ["dense"] + a.targets.split():
            key = "dense" if t == "dense" else "%g" % float(t)
            p = pts.get(key)
            if p is None:
                sys.exit("pareto.py: %s: no FP32 point '%s' in the sweep" % (m, key))
            prune_s = 0.0 if t == "dense" else p["wall_s"]["prune"]
            st = p.get("statistics") or {}
            reuse = "-" if t == "dense" else "%d/%d cached, %d resumed" % (
                st.get("from_cache", 0), st.get("steps", 0), st.get("steps_resumed", 0))
            q8e = load(os.path.join(d, "int8-%s.eval.json" % t))
            q8q = load(os.path.join(d, "int8-%s.quantize.json" % t))
            fp_file = p.get("model_file") or sw.get("model_path")
            if t == "dense":
                fp_file = sw.get("model_path") or fp_file
            q8_file = os.path.join(d, "int8-%s.safetensors" % t)
            bench = {B: [j for j in (load(os.path.join(d, "bench-%s-b%d-r%d.json" % (t, B, r))) for r in rounds) if j]
                     for B in batches}
            for prec in ("fp32", "int8"):
                r = {"model": m, "point": t, "precision": prec,
                     "model_flops_kept": p.get("model_flops_kept", 1.0) if t != "dense" else 1.0,
                     "weights_kept": p.get("weights_kept", 1.0) if t != "dense" else 1.0}
                if prec == "fp32":
                    r["top1"], r["top5"] = p["top1"], p["top5"]
                    r["file"] = fp_file
                    r["prep_s"] = prune_s
                else:
                    if q8e is None:
                        continue
                    r["top1"], r["top5"] = q8e["top1"], q8e["top5"]
                    a.int8_kernel = q8e.get("int8_kernel") or a.int8_kernel
                    r["file"] = q8_file
                    r["prep_s"] = prune_s + (q8q["quantize_s"] if q8q else 0.0)
                try:
                    r["file_mb"] = os.path.getsize(r["file"]) / 1e6
                except (OSError, TypeError):
                    r["file_mb"] = None
                r["steps_reused"] = reuse
                r["ms_per_image"], r["speedup"], r["speedup_vs_ort"], r["speedup_range"] = {}, {}, {}, {}
                r["rounds"] = {}
                for B in batches:
                    mss, sps = [], []
                    for j in bench[B]:
                        env = env or j.get("environment")
                        e = j["end_to_end"]
                        base = e["dense"]["ms_per_image"]
                        if prec == "fp32":
                            ms = base if t == "dense" else e["sparse"]["ms_per_image"]
                        else:
                            ms = e["int8"]["dense" if t == "dense" else "sparse"]["ms_per_image"]
                        mss.append(ms)
                        sps.append(base / ms)
                    if not mss:
                        continue
                    r["rounds"][B] = len(mss)
                    r["ms_per_image"][B] = median(mss)
                    r["speedup"][B] = median(sps)
                    r["speedup_range"][B] = [min(sps), max(sps)]
                    if ort[B] is not None:
                        r["speedup_vs_ort"][B] = ort[B] / median(mss)
                rows.append(r)
    return rows, batches, env


def fmt(x, f="%.2f"):
    return f % x if x is not None else "–"


def table(rows, batches, env, a):
    base = {}
    for r in rows:
        if r["point"] == "dense" and r["precision"] == "fp32":
            base[r["model"]] = r["top1"]
    hdr = ["model", "point", "precision", "model FLOPs kept", "top-1 / top-5", "Δ top-1"]
    hdr += ["speedup b%d" % B for B in batches] + ["vs ORT FP32 b%d" % B for B in batches]
    hdr += ["ms/img b%d" % B for B in batches] + ["file MB", "prune + quantize s", "steps' statistics"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        pt = "dense" if r["point"] == "dense" else "pruned %s" % r["point"]
        c = [r["model"], pt, r["precision"], "%.2f" % r["model_flops_kept"], "%.1f / %.1f" % (r["top1"], r["top5"]),
             "%+.1f" % (r["top1"] - base[r["model"]])]
        c += ["%.2fx" % r["speedup"][B] if B in r["speedup"] else "–" for B in batches]
        c += ["%.2fx" % r["speedup_vs_ort"][B] if B in r["speedup_vs_ort"] else "–" for B in batches]
        c += [fmt(r["ms_per_image"].get(B), "%.2f") for B in batches]
        c += [fmt(r["file_mb"], "%.1f"), "%.0f" % r["prep_s"] if r["prep_s"] else "0", r["steps_reused"]]
        print("| " + " | ".join(c) + " |")
    print()
    print("- top-1 / top-5 on every image of imagenet-val-1000 (% of 1000; one image is 0.1 point); Δ against the "
          "same model's FP32 dense top-1.")
    nr = max([max(r["rounds"].values()) for r in rows if r.get("rounds")] or [0])
    print("- speedup: end to end over lpvit's FP32 dense model, both timed in one `lpvit bench --precision int8` "
          "process (medians of its passes), the median of %d rounds of that; vs ORT FP32: ONNX Runtime (npm "
          "onnxruntime-node, CPU EP, same threads) on the dense FP32 weights, timed in its own process in each "
          "round, its median ms per image over the point's; ms/img: medians over the rounds." % nr)
    for B in batches:
        spread = [(r["speedup_range"][B][1] / r["speedup_range"][B][0], r) for r in rows if B in r.get("speedup_range", {})]
        if spread and nr > 1:
            w, r = max(spread, key=lambda v: v[0])
            print("- batch %d: the widest spread between rounds is %s %s %s, %.2fx-%.2fx (every round's speedups are in "
                  "pareto.json)" % (B, r["model"], r["point"], r["precision"], r["speedup_range"][B][0], r["speedup_range"][B][1]))
    print("- prune + quantize s: the sweep's wall time for that point, plus `lpvit quantize` for int8. The sweep "
          "shares work between targets (last column): a step whose statistics another target computed reads them "
          "from the cache, and a target whose first steps are another's resumes from its checkpoint, so a point "
          "pruned alone (`lpvit prune`) takes longer: it computes every step's statistics itself.")
    print("- int8: the block linears' weights int8 per output row, their inputs uint8 per token at run time; "
          "attention's two products int8 where the CPU has VNNI (lpvit's default; the report's int8_attention), "
          "patch embedding, softmax, LayerNorm, GELU and the heads FP32.")
    if env:
        print("- CPU %s (%s), %s threads, lpvit %s (%s), ISA %s, int8 kernel %s" % (
            env.get("cpu", "?"), env.get("cpu_features", "?"), env.get("threads", "?"), env.get("lpvit", "?"),
            env.get("commit", "?"), env.get("isa", "?"), a.int8_kernel or "?"))
    if a.command:
        print("- command: %s" % a.command)


def svg(rows, B, path):
    """top-1 against speedup over lpvit FP32 dense at batch B: a polyline per model and precision, through its
    points in pruning order (dense, then the targets)."""
    pts = [(r, r["speedup"].get(B)) for r in rows if r["speedup"].get(B)]
    if not pts:
        return
    W, H, L, R, T, Bm = 720, 480, 70, 200, 30, 60
    xs = [s for _, s in pts]
    ys = [r["top1"] for r, _ in pts]
    x0, x1 = 0.0, max(xs) * 1.08
    y0, y1 = max(0.0, min(ys) - 5), min(100.0, max(ys) + 3)
    X = lambda v: L + (v - x0) / (x1 - x0) * (W - L - R)
    Y = lambda v: H - Bm - (v - y0) / (y1 - y0) * (H - T - Bm)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (L, H - Bm, W - R, H - Bm),
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (L, T, L, H - Bm)]
    for i in range(6):
        v = x0 + (x1 - x0) * i / 5
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%.1fx</text>' % (X(v), H - Bm + 16, v))
        u = y0 + (y1 - y0) * i / 5
        out.append('<text x="%d" y="%.1f" text-anchor="end">%.0f</text>' % (L - 6, Y(u) + 4, u))
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (L, Y(u), W - R, Y(u)))
    out.append('<text x="%d" y="%d" text-anchor="middle">end-to-end speedup over lpvit FP32 dense (batch %d)</text>'
               % ((L + W - R) // 2, H - 20, B))
    out.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">top-1 (%%), imagenet-val-1000</text>'
               % ((T + H - Bm) // 2, (T + H - Bm) // 2))
    series = []
    for r, s in pts:
        k = (r["model"], r["precision"])
        if k not in series:
            series.append(k)
    for n, k in enumerate(series):
        col = colors[n % len(colors)]
        sp = [(s, r) for r, s in pts if (r["model"], r["precision"]) == k]
        dash = ' stroke-dasharray="5,3"' if k[1] == "int8" else ""
        out.append('<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>' % (
            col, dash, " ".join("%.1f,%.1f" % (X(s), Y(r["top1"])) for s, r in sp)))
        for s, r in sp:
            out.append('<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s %s %s: top-1 %.1f, %.2fx</title></circle>' % (
                X(s), Y(r["top1"]), col, r["model"], r["point"], r["precision"], r["top1"], s))
            out.append('<text x="%.1f" y="%.1f" font-size="10">%s</text>' % (X(s) + 6, Y(r["top1"]) - 6, r["point"]))
        ly = T + 18 * n + 10
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>' % (W - R + 15, ly, W - R + 45, ly, col, dash))
        out.append('<text x="%d" y="%d">%s %s</text>' % (W - R + 50, ly + 4, k[0], k[1]))
    out.append("</svg>")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True)
    p.add_argument("--models", required=True)
    p.add_argument("--targets", required=True)
    p.add_argument("--batches", default="1 8")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--plot-batch", type=int, default=0, help="the batch pareto.svg plots (default: the first)")
    p.add_argument("--command", default="")
    a = p.parse_args()
    a.int8_kernel = None
    rows, batches, env = collect(a)
    table(rows, batches, env, a)
    tmp = os.path.join(a.dir, "pareto.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"rows": rows, "environment": env, "command": a.command}, f, indent=1)
    os.replace(tmp, os.path.join(a.dir, "pareto.json"))
    svg(rows, a.plot_batch or batches[0], os.path.join(a.dir, "pareto.svg"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The library's layers include only the layers below them, and its modules form no include cycle.

    core < io < engine < train < prune < cli

A module is include/lpvit/<name>.h with its src/<layer>/**/<name>.c; its layer is the folder holding the .c
(header-only modules are listed in HEADER_ONLY). A file may include a public header of its own layer or a
lower one, and the private headers (src/<layer>/...) of its own layer or a lower one. Every public header
needs a home. Exits 1 listing each violation; run by ctest (check_layers) and by hand:
    python3 tests/unit/check_layers.py [SOURCE_DIR]
"""
import os
import re
import sys

LAYERS = ["core", "io", "engine", "train", "prune", "cli"]
HEADER_ONLY = {"layout": "engine"}  # public headers without a .c of their own
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def sources(root):
    for layer in LAYERS:
        base = os.path.join(root, "src", layer)
        for d, _, files in os.walk(base):
            for f in sorted(files):
                if f.endswith((".c", ".h")):
                    yield layer, os.path.join(d, f)


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../.."))
    home = dict(HEADER_ONLY)  # module -> layer
    for layer, path in sources(root):
        if path.endswith(".c"):
            name = os.path.basename(path)[:-2]
            if name in home and home[name] != layer:
                print(f"module '{name}' has sources in two layers: {home[name]} and {layer}")
                return 1
            home[name] = layer
    problems = []
    hdr_dir = os.path.join(root, "include", "lpvit")
    headers = sorted(f[:-2] for f in os.listdir(hdr_dir) if f.endswith(".h"))
    for h in headers:
        if h not in home:
            problems.append(f"include/lpvit/{h}.h has no home: no src/<layer>/{h}.c (add it to HEADER_ONLY if it is header-only)")
    edges = {}  # module -> set of modules it includes (public headers only)

    def check(path, layer, module):
        rel = os.path.relpath(path, root)
        for inc in INCLUDE.findall(open(path, encoding="utf-8").read()):
            if inc.startswith("lpvit/") and inc.endswith(".h"):
                dep = inc[len("lpvit/"):-2]
                if dep not in home:
                    continue  # reported above, or generated (lpvit_commit.h)
                if LAYERS.index(home[dep]) > LAYERS.index(layer):
                    problems.append(f"{rel} ({layer}) includes lpvit/{dep}.h ({home[dep]}), a higher layer")
                if module and dep != module:
                    edges.setdefault(module, set()).add(dep)
            elif "/" in inc and inc.split("/")[0] in LAYERS:
                dep_layer = inc.split("/")[0]
                if LAYERS.index(dep_layer) > LAYERS.index(layer):
                    problems.append(f"{rel} ({layer}) includes {inc}, private to the higher layer {dep_layer}")

    for layer, path in sources(root):
        name = os.path.basename(path)[:-2]
        check(path, layer, name if name in headers else None)
    for h in headers:
        if h in home:
            check(os.path.join(hdr_dir, h + ".h"), home[h], h)

    # a cycle between modules (a.c includes b.h and b.c includes a.h) means two modules own one thing
    state = {}

    def visit(m, stack):
        state[m] = 1
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cyc = stack[stack.index(d):] + [d] if d in stack else [m, d]
                problems.append("include cycle between modules: " + " -> ".join(cyc))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    for p in problems:
        print(p)
    print(f"check_layers: {len(home)} modules in {len(LAYERS)} layers, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

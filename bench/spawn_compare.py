#!/usr/bin/python3
"""bench/spawn_compare.py: the spawn_process row against every peer, in one run.

    bench/spawn_compare.py [--reps N] [--n 1000] [--concurrency 32]
                           [--weft-env 'NAME=V ...'] ... [--systems ...]

Issue 7's target is a ratio taken in one run: weft's spawn_process rate
against Python asyncio's create_subprocess_exec, Go's os/exec and the plain
posix_spawn + waitpid loop from threads (../shared/peers/common/spawn_loop,
concurrency=1: the ceiling on this machine, BENCHMARKS.md). This script
builds what it needs outside the source tree (the Go peer and spawn_loop in
/tmp/weft-spawn-peers, weft's release build through bench/run build), then
runs one warm-up (not counted) and --reps measured rounds; a round runs
every cell once, one process each, in turn, so that the load of a shared
machine falls on every cell alike. It prints a Markdown table: each cell's
median (min-max) and the ratios the target names, weft (w1, w2) over each
peer, "even" when the two spreads overlap.

Cells: weft w1 and w2 (bench/run, WEFT_NO_BUILD=1), go w1 and w2 (GOMAXPROCS
= workers), asyncio (Debian's python3), posix_spawn c1 and c32.
--weft-env adds weft cells run with extra environment variables (for
experiments: each value is a label as well). --base-bin PATH adds cells
"base w1" and "base w2" that run another build's weft_bench (a before/after
comparison in the same run: build the older commit elsewhere, e.g.
git archive OLD | tar -x -C /tmp/old && cmake -S /tmp/old -B /tmp/old/b
-DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/old/b --target weft_bench).
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import build_go_peer, interleaved, json_value, print_cells  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.environ.get("WEFT_PEERS", "/work/shared/peers")
CACHE = os.environ.get("WEFT_SPAWN_PEERS_CACHE", "/tmp/weft-spawn-peers")
PY = "/usr/bin/python3"


def log(msg):
    print("[spawn_compare] " + msg, file=sys.stderr, flush=True)


def build_peers():
    os.makedirs(CACHE, exist_ok=True)
    loop = os.path.join(CACHE, "spawn_loop")
    src = os.path.join(PEERS, "common", "spawn_loop.c")
    if not os.path.exists(loop) or os.path.getmtime(src) > os.path.getmtime(loop):
        subprocess.run(["cc", "-O2", "-Wall", "-o", loop, src, "-lpthread"], check=True)
    gobin = build_go_peer(PEERS, CACHE)
    subprocess.run([os.path.join(ROOT, "bench", "run"), "build"], check=True, stdout=sys.stderr)
    return loop, gobin


def cells(args, loop, gobin):
    p = ["n=%d" % args.n, "concurrency=%d" % args.concurrency]
    weft = os.path.join(ROOT, "bench", "run")
    out = []
    for w in (1, 2):
        out.append(("weft w%d" % w, "weft", [weft, "spawn_process"] + p + ["workers=%d" % w], {"WEFT_NO_BUILD": "1"}))
        for e in args.weft_env:
            kv = dict(x.split("=", 1) for x in e.split())
            out.append(("weft w%d %s" % (w, e), "weft", [weft, "spawn_process"] + p + ["workers=%d" % w],
                        dict(kv, WEFT_NO_BUILD="1")))
    if args.base_bin:
        for w in (1, 2):
            out.append(("base w%d" % w, "weft", [args.base_bin, "spawn_process"] + p + ["workers=%d" % w], {}))
    if gobin:
        for w in (1, 2):
            out.append(("go w%d" % w, "go", [gobin, "spawn_process"] + p + ["workers=%d" % w], {}))
    out.append(("asyncio", "asyncio", [PY, os.path.join(PEERS, "asyncio", "bench.py"), "spawn_process"] + p
                + ["loop=asyncio"], {}))
    out.append(("spawn_loop c1", "posix_spawn", [loop, "n=%d" % args.n, "concurrency=1"], {}))
    out.append(("spawn_loop c%d" % args.concurrency, "posix_spawn",
                [loop, "n=%d" % args.n, "concurrency=%d" % args.concurrency], {}))
    return [c for c in out if c[1] in args.systems]


def run(cell):
    name, _, argv, extra = cell
    return json_value("spawn_compare", name, argv, extra)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--weft-env", action="append", default=[])
    ap.add_argument("--base-bin")
    ap.add_argument("--systems", default="weft,go,asyncio,posix_spawn")
    args = ap.parse_args()
    args.systems = args.systems.split(",")
    loop, gobin = build_peers()
    cs = cells(args, loop, gobin)
    vals = interleaved(cs, args.reps, run, log, "%.1f")
    st = print_cells("spawn_process n=%d concurrency=%d, %d runs per cell (medians, min-max), processes/s"
                     % (args.n, args.concurrency, args.reps), vals, "%.0f")
    peers = [n for n in vals if not n.startswith("weft") and not n.startswith("base")]
    wefts = [n for n in vals if n.startswith("weft") or n.startswith("base")]
    if peers and wefts:
        print()
        print("| ratio | " + " | ".join(peers) + " |")
        print("| --- |" + " --- |" * len(peers))
        for w in wefts:
            row = []
            for p in peers:
                r = st[w][0] / st[p][0]
                overlap = st[w][1] <= st[p][2] and st[p][1] <= st[w][2]
                row.append("%.2f%s" % (r, " (even)" if overlap else ""))
            print("| %s | %s |" % (w, " | ".join(row)))


if __name__ == "__main__":
    main()

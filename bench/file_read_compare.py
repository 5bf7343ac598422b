#!/usr/bin/python3
"""bench/file_read_compare.py: the file_read row against its peers, in one run.

    bench/file_read_compare.py [--reps 5] [--systems weft,go,tokio,libuv]

Issue 5's target is a ratio taken in one run: weft's file_read (BENCHMARKS.md
defaults: 64 tasks, a 256 MiB file, 64 KiB blocks, 200,000 reads, page cache
warm) against libuv's uv_fs_read, Tokio's pread pool and Go's pread
goroutines from ../shared/peers, all reading the same file. Peers are built
outside the source tree (/tmp/weft-file-peers) from ../shared/peers: libuv
with Debian's libuv1-dev, Go with Debian's golang; Tokio needs the offline
cargo build of its build.sh, so an already built binary is used
($TOKIO_PEER, ../shared/peers/tokio/peer-tokio or /tmp/peer-tokio/peer-tokio)
and the cells are left out when there is none. weft runs through bench/run
(its release build, made first). One warm-up round (not counted), then
--reps rounds; a round runs every cell once, one process each, in turn, so
that a shared machine's load falls on every cell alike. Prints a Markdown
table: each cell's median (min-max) in GB/s, and weft (w1, wN) over each
peer at the same worker count (libuv, single-threaded, at both).
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import build_go_peer, interleaved, json_value, print_cells  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.environ.get("WEFT_PEERS", os.path.join(ROOT, "..", "shared", "peers"))
CACHE = os.environ.get("WEFT_FILE_PEERS_CACHE", "/tmp/weft-file-peers")
FILE = "/tmp/weft_peer_file.bin"  # bench/workloads.c's and the peers' default path


def log(msg):
    print("[file_read_compare] " + msg, file=sys.stderr, flush=True)


def newer(src, out):
    return not os.path.exists(out) or os.path.getmtime(src) > os.path.getmtime(out)


def build_peers():
    os.makedirs(CACHE, exist_ok=True)
    found = {}
    uv = os.path.join(CACHE, "peer-libuv")
    src = os.path.join(PEERS, "libuv", "bench.c")
    if newer(src, uv):
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libuv"], stdout=subprocess.PIPE, text=True)
        if flags.returncode == 0:
            subprocess.run(["cc", "-O2", "-o", uv, src] + flags.stdout.split(), check=True)
    if os.path.exists(uv):
        found["libuv"] = uv
    gobin = build_go_peer(PEERS, CACHE)
    if gobin:
        found["go"] = gobin
    for t in (os.environ.get("TOKIO_PEER"), os.path.join(PEERS, "tokio", "peer-tokio"), "/tmp/peer-tokio/peer-tokio"):
        if t and os.access(t, os.X_OK):
            found["tokio"] = t
            break
    subprocess.run([os.path.join(ROOT, "bench", "run"), "build"], check=True, stdout=sys.stderr)
    return found


def cells(systems, peers, nproc):
    counts = [1] if nproc == 1 else [1, nproc]
    out = []
    for w in counts:
        out.append(("weft w%d" % w, [os.path.join(ROOT, "bench", "run"), "file_read", "workers=%d" % w], "weft"))
    for sysname in ("go", "tokio"):
        if sysname in peers:
            for w in counts:
                out.append(("%s w%d" % (sysname, w), [peers[sysname], "file_read", "file=" + FILE, "workers=%d" % w],
                            sysname))
    if "libuv" in peers:
        out.append(("libuv", [peers["libuv"], "file_read", "file=" + FILE], "libuv"))
    return [c for c in out if c[2] in systems]


def run(cell):
    name, argv, _ = cell
    return json_value("file_read_compare", name, argv, {"WEFT_NO_BUILD": "1"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--systems", default="weft,go,tokio,libuv")
    args = ap.parse_args()
    systems = args.systems.split(",")
    nproc = len(os.sched_getaffinity(0))
    peers = build_peers()
    for s in ("go", "tokio", "libuv"):
        if s in systems and s not in peers:
            log("no %s peer here: its cells are left out" % s)
    cs = cells(systems, peers, nproc)
    vals = interleaved(cs, args.reps, run, log, "%.2f GB/s")
    st = print_cells("file_read (BENCHMARKS.md defaults), %d runs per cell after one warm-up, GB/s, median (min-max)"
                     % args.reps, vals)
    med = {name: v[0] for name, v in st.items()}
    print()
    print("| weft ÷ | go (same workers) | tokio (same workers) | libuv |")
    print("| --- | --- | --- | --- |")
    for name in [n for n in vals if n.startswith("weft")]:
        w = name.split()[1]
        cols = []
        for peer in ("go " + w, "tokio " + w, "libuv"):
            cols.append("%.2f" % (med[name] / med[peer]) if peer in med else "-")
        print("| %s | %s |" % (name, " | ".join(cols)))


if __name__ == "__main__":
    main()

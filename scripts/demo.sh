#!/usr/bin/env bash
# scripts/demo.sh: the main job: weft against the single-threaded event loops,
# in the comparison harness's quick mode (a few minutes).
#
# Installs what is missing (scripts/deps.sh bench: the peers' python3-uvloop
# and libuv1-dev, gnuplot for the chart, wrk), then runs
#     bench/compare.py --mode quick
# which builds the release build (build/release) and the libuv peer, runs
# every workload of ../shared/BENCHMARKS.md that weft implements at workers
# = 1 .. nproc and on asyncio, uvloop and libuv, and prints a Markdown table
# of ratios (weft / peer; > 1: weft ahead) and figures; the table, the raw
# JSON lines and a chart (throughput against worker count) are written under
# bench/results/ (bench/results/latest is the newest run).
#
#   MODE=full scripts/demo.sh   the full comparison (BENCHMARKS.md's parameters,
#                               5 runs per cell: about half an hour here)
# Extra arguments go to bench/compare.py (e.g. --rows fib,spawn_many).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/deps.sh bench
exec /usr/bin/python3 bench/compare.py --mode "${MODE:-quick}" "$@"

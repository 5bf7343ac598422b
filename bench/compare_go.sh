#!/usr/bin/env bash
# bench/compare_go.sh: weft against the Go peer (../shared/peers/go) on the
# task workloads of BENCHMARKS.md, at workers=1 and workers=$(nproc).
#
#   bench/compare_go.sh            # REPS=5 measured runs per cell, after 1 warm-up
#   REPS=3 bench/compare_go.sh
#   CASES="lock_contention" REPS=3 bench/compare_go.sh   # a subset of the cells
#
# weft runs through bench/run with WEFT_NO_BUILD=1 (run `bench/run build`
# first); the Go peer is /work/shared/peers/go/peer-go, or, when that binary
# is missing, a copy built from its sources in a temporary folder ($GO_PEER
# overrides). queue_throughput, which that peer lacks, runs against
# bench/peers/go_queue (built the same way, into a temporary folder; $GO_QUEUE_PEER
# overrides). Runs of weft and Go alternate, one process per measurement.
# Prints a Markdown table of medians (min–max) and ratios on stdout.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPS="${REPS:-5}"
peer_src="${PEER_GO_DIR:-/work/shared/peers/go}"
nproc_="$(nproc)"

# ---------------------------------------------------------------- the Go peer
go_peer="${GO_PEER:-$peer_src/peer-go}"
if [[ ! -x "$go_peer" ]]; then
  cache="${TMPDIR:-/tmp}/weft-peer-go"
  go_peer="$cache/peer-go"
  if [[ ! -x "$go_peer" || "$peer_src/main.go" -nt "$go_peer" ]]; then
    echo "compare_go: building the Go peer in $cache" >&2
    rm -rf "$cache"
    mkdir -p "$cache"
    cp -r "$peer_src/." "$cache/"
    (export GOCACHE="${GOCACHE:-$cache/.gocache}" HOME="${HOME:-$cache}"; sh "$cache/build.sh") >&2
  fi
fi

go_queue_peer="${GO_QUEUE_PEER:-}"
if [[ -z "$go_queue_peer" ]]; then
  qsrc="$root/bench/peers/go_queue"
  qcache="${TMPDIR:-/tmp}/weft-peer-go-queue"
  go_queue_peer="$qcache/peer-go-queue"
  if [[ ! -x "$go_queue_peer" || "$qsrc/main.go" -nt "$go_queue_peer" ]]; then
    echo "compare_go: building bench/peers/go_queue in $qcache" >&2
    mkdir -p "$qcache"
    (cd "$qsrc" && GOCACHE="${GOCACHE:-$qcache/.gocache}" HOME="${HOME:-$qcache}" go build -o "$go_queue_peer" .) >&2
  fi
fi

if [[ ! -x "$root/build/release/bench/weft_bench" ]]; then
  echo "compare_go: build/release/bench/weft_bench is missing: run bench/run build first" >&2
  exit 1
fi

# ---------------------------------------------------------------- the cells
cases=(
  "spawn_many"
  "yield_many"
  "ping_pong pairs=1 rounds=200000"
  "ping_pong pairs=64 rounds=20000"
  "queue_throughput pairs=1 maxsize=1"
  "queue_throughput pairs=1 maxsize=1024"
  "queue_throughput pairs=64 maxsize=1024 items=20000"
  "chained_spawn"
  "fib"
  "timers tasks=100000"
  "lock_contention"
  "idle_tasks"
)
# CASES="lock_contention;ping_pong pairs=1 rounds=200000" runs only those cells.
if [[ -n "${CASES:-}" ]]; then IFS=';' read -r -a cases <<<"$CASES"; fi
worker_counts=(1)
[[ "$nproc_" -gt 1 ]] && worker_counts+=("$nproc_")

results="$(mktemp)"
trap 'rm -f "$results"' EXIT

# go_for WORKLOAD: the Go program that implements it.
go_for() { if [[ "$1" == queue_throughput ]]; then echo "$go_queue_peer"; else echo "$go_peer"; fi; }

# run_one LABEL SYSTEM WORKERS ARGS...: one process; appends "label<TAB>system<TAB>workers<TAB>json|FAIL".
run_one() {
  local label="$1" system="$2" workers="$3"
  shift 3
  local out line
  if [[ "$system" == weft ]]; then
    out="$(WEFT_NO_BUILD=1 "$root/bench/run" "$@" "workers=$workers" 2>/dev/null)" || out=""
  else
    out="$("$(go_for "$1")" "$@" "workers=$workers" 2>/dev/null)" || out=""
  fi
  line="$(printf '%s\n' "$out" | tail -n 1)"
  [[ "$line" == "{"* ]] || line=FAIL
  printf '%s\t%s\t%s\t%s\n' "$label" "$system" "$workers" "$line" >>"$results"
}

for w in "${worker_counts[@]}"; do
  for c in "${cases[@]}"; do
    read -r -a args <<<"$c"
    echo "compare_go: $c workers=$w (1 warm-up + $REPS runs each)" >&2
    WEFT_NO_BUILD=1 "$root/bench/run" "${args[@]}" "workers=$w" >/dev/null 2>&1 || true
    "$(go_for "${args[0]}")" "${args[@]}" "workers=$w" >/dev/null 2>&1 || true
    for ((r = 0; r < REPS; r++)); do
      run_one "$c" weft "$w" "${args[@]}"
      run_one "$c" go "$w" "${args[@]}"
    done
  done
done

# ---------------------------------------------------------------- the table
python3 - "$results" "$REPS" <<'PY'
import json, statistics, sys

path, reps = sys.argv[1], sys.argv[2]
cells = {}   # (label, workers) -> system -> list of dicts (or None for a failed run)
order = []
with open(path) as f:
    for line in f:
        label, system, workers, js = line.rstrip("\n").split("\t", 3)
        key = (label, int(workers))
        if key not in cells:
            cells[key] = {"weft": [], "go": []}
            order.append(key)
        try:
            cells[key][system].append(None if js == "FAIL" else json.loads(js))
        except json.JSONDecodeError:
            cells[key][system].append(None)

LOWER_IS_BETTER = {"timers", "idle_tasks"}

def fmt(x):
    if x is None:
        return "-"
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.2f}M"
    if a >= 1e4:
        return f"{x / 1e3:.0f}k"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 1:
        return f"{x:.3g}" if a < 10 else f"{x:.1f}"
    return f"{x:.3g}"

def summary(runs, field):
    vals = [r[field] for r in runs if r is not None and field in r]
    if not vals:
        return None, "FAILED"
    failed = sum(1 for r in runs if r is None)
    s = f"{fmt(statistics.median(vals))} ({fmt(min(vals))}–{fmt(max(vals))})"
    if failed:
        s += f" [{failed} failed]"
    return statistics.median(vals), s

def unit_of(runs):
    for r in runs:
        if r is not None:
            return r.get("unit", "")
    return ""

print(f"Medians of {reps} runs (min–max), after one warm-up run each. "
      "Ratio: weft/go for throughputs; go/weft for timers (x_ideal, and cpu_s) and idle_tasks "
      "(bytes/task, and wake_s), where lower is better. So a ratio > 1 always means weft is ahead.")
print()
print("| workload | workers | unit | weft median (min–max) | go median (min–max) | ratio (>1 = weft ahead) | notes |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for key in order:
    label, workers = key
    name = label.split()[0]
    weft, go = cells[key]["weft"], cells[key]["go"]
    wm, ws = summary(weft, "value")
    gm, gs = summary(go, "value")
    ratio = "-"
    if wm and gm:
        ratio = f"{(gm / wm) if name in LOWER_IS_BETTER else (wm / gm):.2f}"
    notes = ""
    extra = {"timers": "cpu_s", "idle_tasks": "wake_s"}.get(name)
    if extra:
        wx, wxs = summary(weft, extra)
        gx, gxs = summary(go, extra)
        r = f"{gx / wx:.2f}" if wx and gx else "-"
        notes = f"{extra}: weft {wxs}, go {gxs}, go/weft {r}"
    print(f"| {label} | {workers} | {unit_of(weft) or unit_of(go)} | {ws} | {gs} | {ratio} | {notes} |")
PY

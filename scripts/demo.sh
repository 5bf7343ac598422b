#!/usr/bin/env bash
# scripts/demo.sh: the main job. Installs what is missing (scripts/deps.sh),
# builds the release build in build/release, then measures spawn_many
# (one task spawns n=1000000 tasks that each bump a counter, and waits for
# them; ../shared/BENCHMARKS.md) with 1, 2, ..., nproc workers and prints
#   workers | tasks/s | tasks/s per worker
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if [[ ! -x bench/run ]]; then
  echo "demo.sh: bench/run is missing (or not executable): the benchmark programs are not written yet" >&2
  exit 1
fi

scripts/deps.sh

echo "demo.sh: building build/release" >&2
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >&2
cmake --build build/release -j "$(nproc)" >&2

n=${N:-1000000}
max=$(nproc) # the CPUs this process may use (affinity mask)
printf '%7s | %14s | %18s\n' workers tasks/s "tasks/s per worker"
printf '%7s-+-%14s-+-%18s\n' ------- -------------- ------------------
for ((w = 1; w <= max; w++)); do
  # stderr (the runtime's one-line backend report) is kept aside, shown on failure
  if ! out=$(WEFT_NO_BUILD=1 bench/run spawn_many "workers=$w" "n=$n" 2>/tmp/weft-demo.$$.err); then
    cat /tmp/weft-demo.$$.err >&2
    rm -f /tmp/weft-demo.$$.err
    echo "demo.sh: bench/run spawn_many workers=$w n=$n failed" >&2
    exit 1
  fi
  rm -f /tmp/weft-demo.$$.err
  json=$(printf '%s\n' "$out" | tail -n 1)
  value=$(printf '%s' "$json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["value"])') || {
    echo "demo.sh: bench/run's last line is not the JSON result: $json" >&2
    exit 1
  }
  python3 -c 'import sys; w, v = int(sys.argv[1]), float(sys.argv[2]); print("%7d | %14.0f | %18.0f" % (w, v, v / w))' "$w" "$value"
done

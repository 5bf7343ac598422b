#!/usr/bin/env bash
# bench/scaling.sh: weft from 1 to N workers, beside the multi-threaded peers
# (Go, Tokio) at the same worker counts, in one run on one machine.
#
#   bench/scaling.sh                       # task workloads, WORKERS="1 2 4 ... nproc"
#   SERVERS=1 bench/scaling.sh             # also tcp_echo and http_plaintext
#   WORKERS="1 4 16" REPS=3 CASES="fib;spawn_many" bench/scaling.sh
#   SERVERS=1 CASES=none bench/scaling.sh  # the servers only
#
# compare.py answers "weft against the single-threaded loops"; this answers
# "how does weft scale with cores, and where does it stand against the
# runtimes built for many cores". It runs prebuilt binaries only (so that it can
# run on a machine with no compiler or network: carry them there):
#   WEFT_BENCH   weft_bench (default build/release/bench/weft_bench; `bench/run build`)
#   WEFT_EXAMPLES  folder with echo_server and http_hello (default: beside WEFT_BENCH's folder)
#   ECHO_CLIENT  the tcp_echo load client (default build/release/bench/echo_client)
#   GO_PEER, TOKIO_PEER  the peers of ../shared/peers (missing or empty: skipped)
#   OUT_DIR      where results.jsonl and table.md go (default bench/results/scaling-DATE)
#
# Servers: the load must not be the bottleneck on many cores, so the tcp_echo
# load is CLIENTS echo_client processes (64 connections each, their
# messages/s summed) and http_plaintext is `wrk -tCLIENTS -c(100*CLIENTS)`;
# CLIENTS defaults to nproc/4 (at least 1). The server's CPU seconds during
# the load (server_cpu_s, from /proc/PID/stat) are recorded next to the rate.
# Each cell: one warm-up run, then REPS measured runs (one process each), the
# median quoted with min and max; runs of the systems alternate.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nproc_="$(nproc)"
REPS="${REPS:-3}"
WEFT_BENCH="${WEFT_BENCH:-$root/build/release/bench/weft_bench}"
WEFT_EXAMPLES="${WEFT_EXAMPLES:-$(dirname "$(dirname "$WEFT_BENCH")")/examples}"
ECHO_CLIENT="${ECHO_CLIENT:-$root/build/release/bench/echo_client}"
GO_PEER="${GO_PEER-/work/shared/peers/go/peer-go}"
TOKIO_PEER="${TOKIO_PEER-/work/shared/peers/tokio/peer-tokio}"
OUT_DIR="${OUT_DIR:-$root/bench/results/scaling-$(date +%Y%m%d-%H%M%S)}"
SECONDS_PER_LOAD="${SECONDS_PER_LOAD:-3}"
CLIENTS="${CLIENTS:-$((nproc_ / 4 > 0 ? nproc_ / 4 : 1))}"

if [[ -z "${WORKERS:-}" ]]; then
  WORKERS=""
  for ((w = 1; w < nproc_; w *= 2)); do WORKERS+="$w "; done
  WORKERS+="$nproc_"
fi
cases=(
  "spawn_many"
  "yield_many"
  "ping_pong pairs=1 rounds=200000"
  "ping_pong pairs=64 rounds=20000"
  "chained_spawn"
  "fib"
  "timers tasks=100000"
  "lock_contention"
  "idle_tasks"
)
if [[ "${CASES:-}" == none ]]; then cases=(); elif [[ -n "${CASES:-}" ]]; then IFS=';' read -r -a cases <<<"$CASES"; fi

[[ -x "$WEFT_BENCH" ]] || { echo "scaling: $WEFT_BENCH is missing (bench/run build)" >&2; exit 1; }
systems=(weft)
[[ -n "$GO_PEER" && -x "$GO_PEER" ]] && systems+=(go)
[[ -n "$TOKIO_PEER" && -x "$TOKIO_PEER" ]] && systems+=(tokio)
mkdir -p "$OUT_DIR"
results="$OUT_DIR/results.jsonl"
: >"$results"
echo "scaling: systems ${systems[*]}, workers $WORKERS, $REPS runs per cell, into $OUT_DIR" >&2

bin_of() {
  case "$1" in weft) echo "$WEFT_BENCH" ;; go) echo "$GO_PEER" ;; tokio) echo "$TOKIO_PEER" ;; esac
}

# record LABEL SYSTEM WORKERS REP OUTPUT: the JSON line (last line starting
# with '{') tagged with the cell, or a FAIL entry.
record() {
  local line
  line="$(printf '%s\n' "$5" | grep '^{' | tail -n 1 || true)"
  [[ -n "$line" ]] || line='{"failed":true}'
  python3 -c 'import json,sys; d=json.loads(sys.argv[5]); d.update(label=sys.argv[1], system=sys.argv[2], workers=int(sys.argv[3]), rep=int(sys.argv[4])); print(json.dumps(d))' \
    "$1" "$2" "$3" "$4" "$line" >>"$results"
}

# ---------------------------------------------------------------- task workloads
for c in "${cases[@]}"; do
  read -r -a args <<<"$c"
  for w in $WORKERS; do
    echo "scaling: $c workers=$w" >&2
    for s in "${systems[@]}"; do timeout 120 "$(bin_of "$s")" "${args[@]}" "workers=$w" >/dev/null 2>&1 || true; done
    for ((r = 0; r < REPS; r++)); do
      for s in "${systems[@]}"; do
        out="$(timeout 120 "$(bin_of "$s")" "${args[@]}" "workers=$w" 2>/dev/null || true)"
        record "$c" "$s" "$w" "$r" "$out"
      done
    done
  done
done

# ---------------------------------------------------------------- servers
proc_cpu_ticks() { # pid: utime+stime of the process and its children
  local t=0 p
  for p in $1 $(pgrep -P "$1" 2>/dev/null); do
    [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
port=$((20000 + RANDOM % 20000))
server_pid=""
start_server() { # system kind(echo|http) workers
  port=$((port + 1))
  case "$1" in
    weft)
      local ex=echo_server
      [[ "$2" == http ]] && ex=http_hello
      "$WEFT_EXAMPLES/$ex" --host 127.0.0.1 --port "$port" --workers "$3" --max-s 120 >/dev/null 2>&1 &
      ;;
    *)
      local mode=tcp_echo
      [[ "$2" == http ]] && mode=http_plaintext
      "$(bin_of "$1")" "$mode" "port=$port" "workers=$3" max_s=120 >/dev/null 2>&1 &
      ;;
  esac
  server_pid=$!
  for ((t = 0; t < 100; t++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}
stop_server() {
  [[ -n "$server_pid" ]] || return 0
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
trap stop_server EXIT

# one_load SYSTEM KIND WORKERS: prints the JSON line of one measured load
one_load() {
  local sys="$1" kind="$2" w="$3" hz c0 c1 tmp
  hz="$(getconf CLK_TCK)"
  if ! start_server "$sys" "$kind" "$w"; then stop_server; echo '{"failed":true}'; return; fi
  tmp="$(mktemp -d)"
  c0="$(proc_cpu_ticks "$server_pid")"
  if [[ "$kind" == echo ]]; then
    local i
    for ((i = 0; i < CLIENTS; i++)); do
      timeout 60 "$ECHO_CLIENT" "port=$port" conns=64 size=64 "seconds=$SECONDS_PER_LOAD" >"$tmp/c$i" 2>/dev/null &
    done
    wait $(jobs -p | grep -v "^$server_pid\$") 2>/dev/null || true
    c1="$(proc_cpu_ticks "$server_pid")"
    python3 - "$tmp" "$CLIENTS" "$(( (c1 - c0) ))" "$hz" "$SECONDS_PER_LOAD" <<'PY'
import json, os, sys
tmp, n, ticks, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rate, msgs, ok = 0.0, 0, True
for i in range(n):
    try:
        d = json.loads(open(os.path.join(tmp, "c%d" % i)).read().strip().splitlines()[-1])
        rate += d["value"]; msgs += d.get("messages", 0)
    except Exception:
        ok = False
out = {"workload": "tcp_echo", "value": rate, "unit": "messages/s", "clients": n,
       "server_cpu_s": ticks / hz, "seconds": float(sys.argv[5])}
if not ok: out = {"failed": True}
print(json.dumps(out))
PY
  else
    timeout 60 wrk "-t$CLIENTS" "-c$((100 * CLIENTS))" "-d${SECONDS_PER_LOAD}s" --latency "http://127.0.0.1:$port/" >"$tmp/wrk" 2>&1 || true
    c1="$(proc_cpu_ticks "$server_pid")"
    python3 - "$tmp/wrk" "$CLIENTS" "$(( (c1 - c0) ))" "$hz" "$SECONDS_PER_LOAD" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
n, ticks, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
m = re.search(r"Requests/sec:\s*([\d.]+)", text)
p99 = re.search(r"^\s*99%\s+(\S+)", text, re.M)
errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", text)
if not m or errs:
    print(json.dumps({"failed": True}))
else:
    print(json.dumps({"workload": "http_plaintext", "value": float(m.group(1)), "unit": "requests/s",
                      "p99_ms": ms(p99.group(1)) if p99 else None, "clients": n,
                      "server_cpu_s": ticks / hz, "seconds": float(sys.argv[5])}))
PY
  fi
  rm -rf "$tmp"
  stop_server
}

if [[ "${SERVERS:-0}" == 1 ]]; then
  for kind in echo http; do
    [[ "$kind" == http ]] && ! command -v wrk >/dev/null && { echo "scaling: no wrk, http skipped" >&2; continue; }
    label=tcp_echo
    [[ "$kind" == http ]] && label=http_plaintext
    for w in $WORKERS; do
      echo "scaling: $label workers=$w ($CLIENTS clients)" >&2
      for ((r = 0; r < REPS; r++)); do
        for s in "${systems[@]}"; do
          record "$label" "$s" "$w" "$r" "$(one_load "$s" "$kind" "$w")"
        done
      done
    done
  done
fi

# ---------------------------------------------------------------- the table
python3 - "$results" "$REPS" "${systems[@]}" >"$OUT_DIR/table.md" <<'PY'
import json, statistics, sys
path, reps, systems = sys.argv[1], sys.argv[2], sys.argv[3:]
LOWER = {"timers", "idle_tasks"}
cells, labels = {}, []
for line in open(path):
    d = json.loads(line)
    lab = d["label"]
    if lab not in labels:
        labels.append(lab)
    cells.setdefault((lab, d["workers"], d["system"]), []).append(d)

def fig(d, lab):
    if d.get("failed"):
        return None
    if lab.split()[0] == "timers":
        return d.get("cpu_s", d.get("value"))
    if lab.split()[0] == "idle_tasks":
        return d["wake_s"] * 1e3 if "wake_s" in d else None
    return d.get("value")

def fmt(x):
    if x is None: return "-"
    a = abs(x)
    if a >= 1e6: return "%.2fM" % (x / 1e6)
    if a >= 1e4: return "%.0fk" % (x / 1e3)
    if a >= 100: return "%.0f" % x
    return "%.3g" % x

print("Medians of %s runs (min-max). Ratios > 1 mean weft is ahead (weft/peer for rates, "
      "peer/weft for timers' CPU seconds and idle_tasks' wake time). "
      "Servers: per-request server CPU in microseconds in brackets.\n" % reps)
for lab in labels:
    ws = sorted({w for (l, w, s) in cells if l == lab})
    unit = next((d.get("unit", "") for (l, w, s), v in cells.items() if l == lab for d in v if not d.get("failed")), "")
    what = unit
    if lab.split()[0] == "timers": what = "CPU seconds (lower is better)"
    if lab.split()[0] == "idle_tasks": what = "wake-all ms (lower is better)"
    print("### %s — %s\n" % (lab, what))
    head = "| workers | " + " | ".join(systems) + " | " + " | ".join("weft/%s" % s for s in systems[1:]) + " | weft speedup vs w1 |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    base = None
    for w in ws:
        row, med = [], {}
        for s in systems:
            runs = cells.get((lab, w, s), [])
            vals = [fig(d, lab) for d in runs]
            vals = [v for v in vals if v is not None]
            if not vals:
                row.append("FAILED"); continue
            m = statistics.median(vals); med[s] = m
            cell = "%s (%s-%s)" % (fmt(m), fmt(min(vals)), fmt(max(vals)))
            ok = [d for d in runs if not d.get("failed")]
            if ok and "server_cpu_s" in ok[0]:
                per = statistics.median([d["server_cpu_s"] / (d["value"] * d["seconds"]) * 1e6 for d in ok])
                cell += " [%.1f us]" % per
                if ok[0].get("p99_ms") is not None:
                    cell += " p99 %.2f ms" % statistics.median([d["p99_ms"] for d in ok])
            if lab.split()[0] == "timers" and ok:
                cell += " [%.2fx ideal]" % statistics.median([d["value"] for d in ok])
            row.append(cell)
        ratios = []
        for s in systems[1:]:
            if "weft" in med and s in med and med["weft"] and med[s]:
                r = med[s] / med["weft"] if lab.split()[0] in LOWER else med["weft"] / med[s]
                ratios.append("%.2f" % r)
            else:
                ratios.append("-")
        if "weft" in med and base is None:
            base = med["weft"]
        sp = "-"
        if "weft" in med and base:
            sp = "%.2f" % ((base / med["weft"]) if lab.split()[0] in LOWER else (med["weft"] / base))
        print("| %d | %s | %s | %s |" % (w, " | ".join(row), " | ".join(ratios), sp))
    print()
PY
cat "$OUT_DIR/table.md"

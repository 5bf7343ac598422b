#!/usr/bin/python3
"""bench/compare.py: weft against the single-threaded event loops, one command.

    bench/compare.py [--mode full|quick|smoke] [--reps N] [--rows a,b,...]
                     [--systems weft,asyncio,uvloop,libuv] [--max-workers N]
                     [--weft-bin PATH] [--uv-bin PATH] [--out DIR]

For every row (a workload of ../shared/BENCHMARKS.md with its parameters) it
runs weft at workers = 1, 2, ..., nproc and each single-threaded peer that can
be built here from Debian's packages: Python's asyncio and uvloop
(bench/peers/asyncio_bench.py, every workload) and libuv in C
(bench/peers/uv_bench.c: the timer, blocking-pool and file workloads). Each
cell is one warm-up run (not counted) and then --reps measured runs, one
process per run; the cell's figure is the median, quoted with min and max.

Output, in bench/results/RUN_ID/ (bench/results/ is ignored by git; `latest`
points at the newest run):
  results.jsonl  every measured JSON line, tagged with row and rep
  table.md       medians (min-max), and the ratios weft / peer per row, with
                 weft at workers=1 and at workers=nproc
  chart.png      throughput against worker count for each row, the peers as
                 flat lines (gnuplot; chart.gp is the script)
The server rows (tcp_echo, http_plaintext) start each server on a free port
of 127.0.0.1, load it with the same client for every system
(bench/echo_client.c, or wrk -t1), and add the server's CPU seconds during
the load (server_cpu_s) and its RSS; the server is stopped with SIGTERM.
and table.md is printed at the end.

Ratios are oriented so that > 1 means weft is ahead: weft / peer for rates,
peer / weft for the rows where lower is better (timers' wall time over the
ideal, idle_tasks' bytes per task). A difference within the two cells'
spread (min-max) is reported as "even", as BENCHMARKS.md's rules say.

Modes: full (BENCHMARKS.md's parameters; the Python loops get smaller counts
where a run would take more than ~10 s: rates stay comparable, and the table
says which), quick (smaller counts everywhere, 3 reps: the README's main job,
a few minutes), smoke (tiny counts, 1 rep, no warm-up: seconds; the test
suite runs it to keep every benchmark building and checking its work).
A workload that weft does not implement yet (bench/run exits 3) is reported
as such and skipped, not failed. Any other failure of a run (a check that
failed, a crash, a timeout) fails the whole command, exit status 1.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3"  # Debian's python, where python3-uvloop is installed

# Rows, in BENCHMARKS.md's order: (row name, workload, parameters per mode).
# Rates unless the workload is in LOWER_IS_BETTER.
ROWS = [
    ("spawn_many", "spawn_many",
     {"full": "n=1000000", "quick": "n=200000", "smoke": "n=2000"}),
    ("yield_many", "yield_many",
     {"full": "tasks=1000 yields=1000", "quick": "tasks=1000 yields=200", "smoke": "tasks=20 yields=20"}),
    ("ping_pong pairs=1", "ping_pong",
     {"full": "pairs=1 rounds=200000", "quick": "pairs=1 rounds=50000", "smoke": "pairs=1 rounds=500"}),
    ("ping_pong pairs=64", "ping_pong",
     {"full": "pairs=64 rounds=20000", "quick": "pairs=64 rounds=2000", "smoke": "pairs=4 rounds=100"}),
    ("chained_spawn", "chained_spawn",
     {"full": "depth=1000000", "quick": "depth=200000", "smoke": "depth=2000"}),
    ("fib", "fib", {"full": "k=27 cutoff=0", "quick": "k=22 cutoff=0", "smoke": "k=10 cutoff=0"}),
    ("timers", "timers",
     {"full": "tasks=100000 ms=10 times=10", "quick": "tasks=10000 ms=10 times=5", "smoke": "tasks=100 ms=1 times=2"}),
    ("lock_contention", "lock_contention",
     {"full": "tasks=64 iters=20000", "quick": "tasks=64 iters=2000", "smoke": "tasks=8 iters=100"}),
    ("to_thread", "to_thread",
     {"full": "calls=100000 concurrency=64", "quick": "calls=20000 concurrency=64", "smoke": "calls=200 concurrency=8"}),
    ("idle_tasks", "idle_tasks", {"full": "n=100000", "quick": "n=20000", "smoke": "n=200"}),
    ("spawn_process", "spawn_process",
     {"full": "n=1000 concurrency=32", "quick": "n=300 concurrency=32", "smoke": "n=20 concurrency=4"}),
    ("tcp_echo", "tcp_echo",
     {"full": "conns=64 size=64 seconds=5", "quick": "conns=64 size=64 seconds=2", "smoke": "conns=4 size=64 seconds=1"}),
    ("http_plaintext", "http_plaintext",
     {"full": "conns=100 seconds=5", "quick": "conns=100 seconds=2", "smoke": "conns=4 seconds=1"}),
    ("file_read", "file_read",
     {"full": "tasks=64 size_mb=256 block_kb=64 reads=200000", "quick": "tasks=64 size_mb=64 block_kb=64 reads=20000",
      "smoke": "tasks=4 size_mb=1 block_kb=64 reads=64"}),
]

# Full mode: the Python loops run these instead (a run of the defaults takes
# 10-60 s there). Rates are per second, so they compare; the table says so.
PY_FULL = {
    "spawn_many": "n=200000",
    "ping_pong pairs=64": "pairs=64 rounds=2000",
    "chained_spawn": "depth=200000",
    "fib": "k=24 cutoff=0",
    "file_read": "tasks=64 size_mb=256 block_kb=64 reads=20000",
}

LOWER_IS_BETTER = {"timers", "idle_tasks"}
UV_WORKLOADS = {"timers", "to_thread", "file_read", "tcp_echo", "http_plaintext"}
# Server rows: the server runs in the foreground until SIGTERM; the load is the
# same client for every server (bench/echo_client.c; wrk for HTTP).
SERVER_ROWS = {"tcp_echo": "serve_echo", "http_plaintext": "serve_http"}
PEERS = ["asyncio", "uvloop", "libuv"]
FILE_PATH = "/tmp/weft_bench_file.bin"
NOT_IMPLEMENTED = 3  # bench/run's exit status for a workload weft lacks


def log(msg):
    print("[compare %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def die(msg):
    log("ERROR: " + msg)
    sys.exit(1)


def build_go_peer(peers, cache):
    """The Go peer of ../shared/peers built into cache/go (again when its
    source is newer), offline (Debian's golang); its path, or None without
    go (bench/spawn_compare.py, bench/file_read_compare.py)."""
    gobin = os.path.join(cache, "go", "peer-go")
    gosrc = os.path.join(peers, "go", "main.go")
    if shutil.which("go") and (not os.path.exists(gobin) or os.path.getmtime(gosrc) > os.path.getmtime(gobin)):
        d = os.path.join(cache, "go")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(os.path.join(peers, "go"), d)
        for f in os.listdir(d):
            os.chmod(os.path.join(d, f), 0o644)
        env = dict(os.environ, GOCACHE=os.path.join(cache, "gocache"), GOFLAGS="-mod=mod", GOPROXY="off")
        subprocess.run(["go", "build", "-o", "peer-go", "."], cwd=d, env=env, check=True)
    return gobin if os.path.exists(gobin) else None


def json_value(who, name, argv, env):
    """Run one measurement (argv, with env added) and return the "value" of
    the last JSON line it printed; exit with its stderr if it failed."""
    cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300,
                        env=dict(os.environ, **env))
    lines = [l for l in cp.stdout.splitlines() if l.startswith("{")]
    if cp.returncode != 0 or not lines:
        sys.exit("%s: %s failed (exit %d): %s" % (who, name, cp.returncode, cp.stderr.strip()[-500:]))
    return json.loads(lines[-1])["value"]


def interleaved(cells, reps, run, say, fmt="%.2f"):
    """The rounds of a one-run comparison: one warm-up round (not counted),
    then reps rounds, each running every cell once, in turn, so that a shared
    machine's load falls on every cell alike. cells: tuples whose first item
    is the cell's name; run(cell) -> the measured value. Returns
    {name: [values]} in the cells' order (bench/spawn_compare.py,
    bench/file_read_compare.py)."""
    vals = {c[0]: [] for c in cells}
    for rep in range(reps + 1):
        for c in cells:
            v = run(c)
            if rep > 0:
                vals[c[0]].append(v)
            say("%s %s: %s" % ("warm-up" if rep == 0 else "rep %d" % rep, c[0], fmt % v))
    return vals


def print_cells(title, vals, fmt="%.2f"):
    """Print title (the load average appended), then a Markdown table of each
    cell's median (min-max). Returns {name: (median, min, max)}."""
    load = open("/proc/loadavg").read().split()[:3]
    print("%s; load average at the end %s" % (title, " ".join(load)))
    print()
    print("| cell | median | min-max |")
    print("| --- | --- | --- |")
    st = {}
    for name, v in vals.items():
        st[name] = (statistics.median(v), min(v), max(v))
        print("| %s | %s | %s-%s |" % (name, fmt % st[name][0], fmt % st[name][1], fmt % st[name][2]))
    return st


class Runner:
    def __init__(self, args):
        self.args = args
        self.mode = args.mode
        self.timeout = {"full": 300, "quick": 120, "smoke": 60}[self.mode]
        self.results = []       # every measured JSON line (dict), tagged
        self.skipped = {}       # (row, system) -> why
        self.notes = []

    # ------------------------------------------------------------ commands
    def command(self, system, workload, params, workers):
        p = params.split()
        if system == "weft":
            if self.args.weft_bin:
                return [self.args.weft_bin, workload] + p + ["workers=%d" % workers]
            return [os.path.join(ROOT, "bench", "run"), workload] + p + ["workers=%d" % workers]
        if system in ("asyncio", "uvloop"):
            extra = ["file=" + FILE_PATH] if workload == "file_read" else []
            return [PY, os.path.join(HERE, "peers", "asyncio_bench.py"), workload] + p + extra + ["loop=" + system]
        if system == "libuv":
            extra = ["file=" + FILE_PATH] if workload == "file_read" else []
            return [self.args.uv_bin, workload] + p + extra
        raise ValueError(system)

    def run_once(self, argv, env):
        try:
            cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                timeout=self.timeout, text=True)
        except subprocess.TimeoutExpired:
            return None, "timed out after %d s" % self.timeout, None
        lines = [l for l in cp.stdout.splitlines() if l.startswith("{")]
        if cp.returncode != 0:
            return None, cp.stderr.strip() or "exit %d" % cp.returncode, cp.returncode
        if not lines:
            return None, "no JSON line on stdout", 0
        try:
            return json.loads(lines[-1]), None, 0
        except ValueError as e:
            return None, "bad JSON line: %s" % e, 0

    def cell(self, row, workload, params, system, workers):
        """Warm-up plus reps runs of one cell; records them. False if skipped."""
        argv = self.command(system, workload, params, workers)
        env = dict(os.environ)
        env["WEFT_NO_BUILD"] = "1"
        warm = 0 if self.mode == "smoke" else 1
        log("%s / %s w=%d: %s" % (row, system, workers, " ".join(argv[1:] if system != "weft" else argv[1:])))
        for i in range(warm + self.args.reps):
            line, err, rc = self.run_once(argv, env)
            if line is None:
                # bench/run says "not implemented" with exit 3; weft_bench itself
                # (--weft-bin) does not know the name: "unknown workload", exit 2.
                if system == "weft" and (rc == NOT_IMPLEMENTED or (rc == 2 and "unknown workload" in str(err))):
                    self.skipped[(row, system)] = "not implemented in weft yet"
                    log("  skipped: %s is not implemented in weft yet" % workload)
                    return False
                die("%s / %s w=%d failed: %s\n  command: %s" %
                    (row, system, workers, " / ".join(str(err).splitlines()[-3:]), " ".join(argv)))
            if i < warm:
                continue
            line.update({"row": row, "rep": i - warm + 1, "params": line.get("params", params)})
            self.results.append(line)
            log("  %s %s" % (fmt(line["value"]), line.get("unit", "")))
        return True

    # ------------------------------------------------------------ servers
    def server_command(self, system, serve, port, workers):
        if system == "weft":
            if self.args.weft_bin:  # the examples are built beside bench/ (build/examples/...)
                ex = {"serve_echo": "echo_server", "serve_http": "http_hello"}[serve]
                exe = os.path.join(os.path.dirname(os.path.dirname(self.args.weft_bin)), "examples", ex)
                if not os.path.exists(exe):
                    return None
                return [exe, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
            return [os.path.join(ROOT, "bench", "run"), serve, "port=%d" % port, "workers=%d" % workers, "max_s=120"]
        if system in ("asyncio", "uvloop"):
            return [PY, os.path.join(HERE, "peers", "asyncio_bench.py"), serve, "port=%d" % port, "max_s=120",
                    "loop=" + system]
        return [self.args.uv_bin, serve, "port=%d" % port, "max_s=120"]

    def load_once(self, workload, params, system, workers, port):
        p = dict(kv.split("=") for kv in params.split())
        if workload == "tcp_echo":
            argv = [self.args.echo_client, "port=%d" % port, "conns=" + p["conns"], "size=" + p["size"],
                    "seconds=" + p["seconds"], "system=" + system, "workers=%d" % workers]
            line, err, rc = self.run_once(argv, dict(os.environ))
            return line, err
        wrk = shutil.which("wrk")
        argv = [wrk, "-t1", "-c" + p["conns"], "-d%ss" % p["seconds"], "--latency", "http://127.0.0.1:%d/" % port]
        try:
            cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                timeout=int(p["seconds"]) + 30)
        except subprocess.TimeoutExpired:
            return None, "wrk timed out"
        return parse_wrk(cp.stdout, system, workers, params), (cp.stdout + cp.stderr).strip()

    def server_cell(self, row, workload, params, system, workers):
        serve = SERVER_ROWS[workload]
        if workload == "http_plaintext" and not shutil.which("wrk"):
            self.skipped[(row, system)] = "wrk is not installed (scripts/deps.sh bench)"
            return False
        warm = 0 if self.mode == "smoke" else 1
        log("%s / %s w=%d: %s" % (row, system, workers, params))
        for i in range(warm + self.args.reps):
            port = free_port()
            argv = self.server_command(system, serve, port, workers)
            if argv is None:
                self.skipped[(row, system)] = "not implemented in weft yet"
                log("  skipped: weft's %s example is not built" % serve)
                return False
            env = dict(os.environ)
            env["WEFT_NO_BUILD"] = "1"
            srv = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
            try:
                if not wait_listening(port, srv):
                    err = srv.stderr.read() if srv.poll() is not None else ""
                    if system == "weft" and srv.returncode in (2, 3) and ("not implemented" in err or "unknown" in err):
                        self.skipped[(row, system)] = "not implemented in weft yet"
                        log("  skipped: %s is not implemented in weft yet" % serve)
                        return False
                    die("%s / %s w=%d: the server did not start listening: %s" % (row, system, workers, err.strip()))
                cpu0 = proc_cpu(srv.pid)
                line, err = self.load_once(workload, params, system, workers, port)
                cpu1 = proc_cpu(srv.pid)
                rss = proc_rss_kb(srv.pid)
            finally:
                srv.terminate()
                try:
                    srv.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    srv.kill()
                    srv.wait()
            if line is None:
                die("%s / %s w=%d: the load failed: %s" % (row, system, workers, " / ".join(str(err).splitlines()[-3:])))
            if i < warm:
                continue
            line.update({"row": row, "rep": i - warm + 1, "server_cpu_s": round(cpu1 - cpu0, 4), "rss_kb": rss})
            self.results.append(line)
            log("  %s %s (server cpu %.2f s)" % (fmt(line["value"]), line.get("unit", ""), cpu1 - cpu0))
        return True

    # ------------------------------------------------------------ the run
    def run(self):
        rows = [r for r in ROWS if not self.args.rows or r[0] in self.args.rows or r[1] in self.args.rows]
        maxw = self.args.max_workers
        for row, workload, params_by_mode in rows:
            params = params_by_mode[self.mode]
            for system in self.args.systems:
                if system == "libuv" and workload not in UV_WORKLOADS:
                    continue
                if workload == "file_read":
                    ensure_file(params)
                cell = self.server_cell if workload in SERVER_ROWS else self.cell
                if system == "weft":
                    for w in range(1, maxw + 1):
                        if not cell(row, workload, params, system, w):
                            break
                else:
                    p = params
                    if self.mode == "full" and system in ("asyncio", "uvloop") and row in PY_FULL:
                        p = PY_FULL[row]
                        self.notes.append("%s, %s: %s (BENCHMARKS.md: %s); rates compare, as rates." % (row, system, p, params))
                    cell(row, workload, p, system, 1)
        return rows


def free_port():
    import socket
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def wait_listening(port, proc, limit_s=15):
    import socket
    end = time.time() + limit_s
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def proc_cpu(pid):
    """utime + stime of a process and its children, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def proc_rss_kb(pid):
    try:
        with open("/proc/%d/statm" % pid) as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return 0


def parse_wrk(out, system, workers, params):
    """wrk's report -> the JSON line of BENCHMARKS.md, or None when it shows
    errors or non-2xx answers (the check of http_plaintext)."""
    import re
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    n = re.search(r"(\d+) requests in ([0-9.]+)(\w+)", out)
    if not m or not n or "Non-2xx" in out or "Socket errors" in out or int(n.group(1)) == 0:
        return None

    def ms(label):
        q = re.search(r"^\s+%s%%\s+([0-9.]+)(us|ms|s)\s*$" % label, out, re.M)
        if not q:
            return None
        return float(q.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[q.group(2)]

    secs = float(n.group(2)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}.get(n.group(3), 1.0)
    return {"workload": "http_plaintext", "system": system, "workers": workers, "value": float(m.group(1)),
            "unit": "req/s", "wall_s": secs, "rss_kb": 0, "params": params, "p50_ms": ms("50"), "p99_ms": ms("99"),
            "requests": int(n.group(1))}


def ensure_file(params):
    size_mb = int(dict(kv.split("=") for kv in params.split())["size_mb"])
    want = size_mb << 20
    if not os.path.exists(FILE_PATH) or os.path.getsize(FILE_PATH) < want:
        log("writing %s (%d MiB of random bytes)" % (FILE_PATH, size_mb))
        with open("/dev/urandom", "rb") as src, open(FILE_PATH + ".tmp", "wb") as dst:
            left = want
            while left:
                chunk = src.read(min(left, 1 << 20))
                dst.write(chunk)
                left -= len(chunk)
        os.replace(FILE_PATH + ".tmp", FILE_PATH)
    with open(FILE_PATH, "rb") as f:  # page cache warm, as BENCHMARKS.md says
        while f.read(1 << 22):
            pass


# ------------------------------------------------------------ summary
def fmt(v):
    if v is None:
        return "—"
    a = abs(v)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return "%.3g%s" % (v / div, suf)
    return "%.3g" % v


def stats(lines):
    vals = sorted(l["value"] for l in lines)
    return statistics.median(vals), vals[0], vals[-1]


def summarize(runner, rows, out_dir):
    res = runner.results
    maxw = runner.args.max_workers
    peers = [s for s in runner.args.systems if s != "weft"]

    def get(row, system, workers):
        ls = [l for l in res if l["row"] == row and l["system"] == system and l["workers"] == workers]
        return stats(ls) if ls else None

    def extra(row, system, workers, key):
        ls = [l[key] for l in res if l["row"] == row and l["system"] == system and l["workers"] == workers and key in l]
        return statistics.median(ls) if ls else None

    def cellstr(row, system, workers, workload):
        s = get(row, system, workers)
        if not s:
            return runner.skipped.get((row, system), "—") if system == "weft" else "—"
        txt = "%s (%s–%s)" % (fmt(s[0]), fmt(s[1]), fmt(s[2]))
        cpu = extra(row, system, workers, "cpu_s")
        if cpu is not None:
            txt += ", cpu %.2f s" % cpu
        p99 = extra(row, system, workers, "p99_ms")
        if p99 is not None:
            txt += ", p99 %.2f ms" % p99
        scpu = extra(row, system, workers, "server_cpu_s")
        if scpu is not None:
            txt += ", server cpu %.2f s" % scpu
        wake = extra(row, system, workers, "wake_s")
        if wake is not None:
            txt += ", wake %.0f ms" % (wake * 1e3)
        return txt

    def ratio(row, workload, w, peer):
        a, b = get(row, "weft", w), get(row, peer, 1)
        if not a or not b or a[0] <= 0 or b[0] <= 0:
            return "—"
        r = b[0] / a[0] if workload in LOWER_IS_BETTER else a[0] / b[0]
        overlap = a[1] <= b[2] and b[1] <= a[2]
        return "%.2f%s" % (r, " (even)" if overlap else "")

    out = []
    out.append("# weft against the single-threaded loops")
    out.append("")
    out.append("Run `%s`, mode `%s`: median (min–max) of %d measured run(s) per cell after %s, one process per run, "
               "on this machine (nproc=%d, %s). Only ratios taken in one run mean anything across machines." %
               (os.path.basename(out_dir), runner.mode, runner.args.reps,
                "no warm-up" if runner.mode == "smoke" else "one warm-up run", os.cpu_count() or 0, os.uname().release))
    out.append("")
    out.append("## Ratios (> 1: weft ahead)")
    out.append("")
    out.append("weft ÷ peer for rates; peer ÷ weft where lower is better (timers: wall time over the ideal; idle_tasks: "
               "bytes per task). `(even)`: the two cells' min–max ranges overlap, which BENCHMARKS.md counts as not behind.")
    out.append("")
    head = ["row"]
    for p in peers:
        head += ["w1 ÷ %s" % p, "w%d ÷ %s" % (maxw, p)] if maxw > 1 else ["w1 ÷ %s" % p]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    behind = []
    for row, workload, _ in rows:
        cells = [row]
        for p in peers:
            for w in ([1, maxw] if maxw > 1 else [1]):
                r = ratio(row, workload, w, p)
                cells.append(r)
                if w == maxw and r != "—" and "(even)" not in r and float(r.split()[0]) < 1:
                    why = ""
                    if workload == "idle_tasks":  # BENCHMARKS.md, "Comparing"
                        why = (" (bytes per task; BENCHMARKS.md makes this goal absolute, at most 5 KiB per "
                               "suspended task for a stackful runtime, not ahead of every peer)")
                    behind.append("%s vs %s at workers=%d: %s%s" % (row, p, w, r, why))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("## Figures")
    out.append("")
    head = ["row", "unit"] + ["weft w%d" % w for w in range(1, maxw + 1)] + peers
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for row, workload, _ in rows:
        units = [l.get("unit", "") for l in res if l["row"] == row]
        unit = units[0] if units else ""
        if workload in LOWER_IS_BETTER:
            unit += " (lower is better)"
        cells = [row, unit] + [cellstr(row, "weft", w, workload) for w in range(1, maxw + 1)]
        cells += [cellstr(row, p, 1, workload) if (p != "libuv" or workload in UV_WORKLOADS) else "n/a" for p in peers]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    if behind:
        out.append("## Where weft at workers=%d is behind a single-threaded loop" % maxw)
        out.append("")
        out += ["- " + b for b in behind]
        out.append("")
    skipped = sorted(set("%s (%s): %s" % (r, s, why) for (r, s), why in runner.skipped.items()))
    if skipped or runner.notes:
        out.append("## Notes")
        out.append("")
        out += ["- " + s for s in skipped]
        out += ["- " + n for n in sorted(set(runner.notes))]
        out.append("")
    return "\n".join(out)


def chart(runner, rows, out_dir):
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        return "gnuplot is not installed (scripts/deps.sh bench installs gnuplot-nox): no chart"
    res = runner.results
    maxw = runner.args.max_workers
    peers = [s for s in runner.args.systems if s != "weft"]
    plotted = [(row, wl) for row, wl, _ in rows if any(l["row"] == row and l["system"] == "weft" for l in res)]
    if not plotted:
        return "nothing to plot"
    cols = 3
    nrows = math.ceil(len(plotted) / cols)
    gp = ["set terminal pngcairo size %d,%d font ',9'" % (420 * cols, 300 * nrows) if has_cairo(gnuplot)
          else "set terminal png size %d,%d" % (420 * cols, 300 * nrows),
          "set output '%s'" % os.path.join(out_dir, "chart.png"),
          "set multiplot layout %d,%d title 'weft: throughput against worker count (peers: single-threaded, flat)'" % (nrows, cols),
          "set termoption noenhanced",  # names have underscores
          "set key outside right top font ',8'", "set grid", "set xlabel 'workers'", "set xtics 1",
          "set logscale y", "set format y '%.0s%c'",  # the peers are often 10-100x away: a log axis shows both
          "set xrange [0.5:%f]" % (maxw + 0.5)]
    colors = {"asyncio": "#1f77b4", "uvloop": "#2ca02c", "libuv": "#ff7f0e"}
    for i, (row, wl) in enumerate(plotted):
        dat = os.path.join(out_dir, "chart_%d.dat" % i)
        with open(dat, "w") as f:
            for w in range(1, maxw + 1):
                ls = [l["value"] for l in res if l["row"] == row and l["system"] == "weft" and l["workers"] == w]
                if ls:
                    f.write("%d %g %g %g\n" % (w, statistics.median(ls), min(ls), max(ls)))
        units = [l.get("unit", "") for l in res if l["row"] == row]
        gp.append("set title '%s'" % row)
        gp.append("set ylabel '%s%s'" % (units[0] if units else "", " (lower is better)" if wl in LOWER_IS_BETTER else ""))
        plots = ["'%s' using 1:2:3:4 with yerrorlines lw 2 lc rgb '#9400d3' title 'weft'" % dat]
        for p in peers:
            ls = [l["value"] for l in res if l["row"] == row and l["system"] == p]
            if ls:
                plots.append("%g with lines dt 2 lw 2 lc rgb '%s' title '%s'" % (statistics.median(ls), colors[p], p))
        gp.append("plot " + ", ".join(plots))
    gp.append("unset multiplot")
    script = os.path.join(out_dir, "chart.gp")
    with open(script, "w") as f:
        f.write("\n".join(gp) + "\n")
    cp = subprocess.run([gnuplot, script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if cp.returncode != 0:
        die("gnuplot failed: %s" % cp.stderr.strip())
    return None


def has_cairo(gnuplot):
    cp = subprocess.run([gnuplot, "-e", "set terminal"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return "pngcairo" in cp.stdout


def build(args):
    """Bring what the run needs up to date: weft's release build (unless
    --weft-bin names a binary) and the libuv peer (unless --uv-bin does)."""
    if "weft" in args.systems and not args.weft_bin:
        log("building weft (bench/run build)")
        if subprocess.run([os.path.join(ROOT, "bench", "run"), "build"]).returncode != 0:
            die("bench/run build failed")
    if "libuv" in args.systems and not args.uv_bin:
        out = os.path.join(ROOT, "build", "peers")
        os.makedirs(out, exist_ok=True)
        args.uv_bin = os.path.join(out, "uv_bench")
        src = os.path.join(HERE, "peers", "uv_bench.c")
        if not os.path.exists(args.uv_bin) or os.path.getmtime(src) > os.path.getmtime(args.uv_bin):
            flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libuv"], stdout=subprocess.PIPE, text=True)
            if flags.returncode != 0:
                die("libuv not found by pkg-config (scripts/deps.sh bench installs libuv1-dev)")
            cc = os.environ.get("CC", "cc")
            log("building the libuv peer: %s" % args.uv_bin)
            if subprocess.run([cc, "-O2", "-Wall", "-o", args.uv_bin, src] + flags.stdout.split()).returncode != 0:
                die("building %s failed" % src)
    if not args.echo_client:
        out = os.path.join(ROOT, "build", "peers")
        os.makedirs(out, exist_ok=True)
        args.echo_client = os.path.join(out, "echo_client")
        src = os.path.join(HERE, "echo_client.c")
        if not os.path.exists(args.echo_client) or os.path.getmtime(src) > os.path.getmtime(args.echo_client):
            log("building the echo load client: %s" % args.echo_client)
            cc = os.environ.get("CC", "cc")
            if subprocess.run([cc, "-O2", "-Wall", "-o", args.echo_client, src]).returncode != 0:
                die("building %s failed" % src)
    if any(s in args.systems for s in ("asyncio", "uvloop")):
        if not os.path.exists(PY):
            die("%s is missing (scripts/deps.sh bench installs python3)" % PY)
        if "uvloop" in args.systems and subprocess.run([PY, "-c", "import uvloop"]).returncode != 0:
            die("uvloop is missing for %s (scripts/deps.sh bench installs python3-uvloop)" % PY)


def main():
    ap = argparse.ArgumentParser(description="weft against the single-threaded event loops (see the module comment)")
    ap.add_argument("--mode", choices=["full", "quick", "smoke"], default="full")
    ap.add_argument("--reps", type=int, help="measured runs per cell (full: 5, quick: 3, smoke: 1)")
    ap.add_argument("--rows", help="comma-separated rows or workloads (default: all)")
    ap.add_argument("--systems", default="weft,asyncio,uvloop,libuv")
    ap.add_argument("--max-workers", type=int, default=os.cpu_count() or 1,
                    help="weft runs at 1..N workers (default: nproc)")
    ap.add_argument("--weft-bin", help="run this weft_bench instead of bench/run")
    ap.add_argument("--uv-bin", help="run this libuv peer instead of building bench/peers/uv_bench.c")
    ap.add_argument("--echo-client", help="the tcp_echo load client (default: build bench/echo_client.c)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    args.reps = args.reps or {"full": 5, "quick": 3, "smoke": 1}[args.mode]
    args.rows = set(args.rows.split(",")) if args.rows else None
    args.systems = [s for s in args.systems.split(",") if s]
    for s in args.systems:
        if s != "weft" and s not in PEERS:
            ap.error("unknown system %r (weft, %s)" % (s, ", ".join(PEERS)))
    if "weft" not in args.systems:
        ap.error("--systems must include weft")
    if args.reps < 1 or args.max_workers < 1:
        ap.error("--reps and --max-workers must be at least 1")
    if args.max_workers > (os.cpu_count() or 1):
        log("note: --max-workers %d exceeds this machine's %d CPUs" % (args.max_workers, os.cpu_count() or 1))

    build(args)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + args.mode
    out_dir = os.path.join(args.out, run_id)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    runner = Runner(args)
    rows = runner.run()
    with open(os.path.join(out_dir, "results.jsonl"), "w") as f:
        for l in runner.results:
            f.write(json.dumps(l, separators=(",", ":")) + "\n")
    table = summarize(runner, rows, out_dir)
    why_no_chart = chart(runner, rows, out_dir)
    if why_no_chart:
        table += "\n(no chart: %s)\n" % why_no_chart
    else:
        table += "\n![throughput against worker count](chart.png)\n"
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table + "\n")
    latest = os.path.join(args.out, "latest")
    try:
        if os.path.islink(latest) or os.path.exists(latest):
            os.remove(latest)
        os.symlink(run_id, latest)
    except OSError:
        pass
    print(table)
    log("done in %.0f s; results in %s" % (time.time() - t0, out_dir))


if __name__ == "__main__":
    main()

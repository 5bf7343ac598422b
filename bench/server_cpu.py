#!/usr/bin/python3
"""bench/server_cpu.py: the servers' CPU per request, weft against libuv and
nginx, measured back to back in one run.

    bench/server_cpu.py --build DIR [--rows echo,http,accept] [--reps 5] [--seconds 5]
                        [--configs weft1,weft2,libuv,nginx1,nginx2] [--base DIR]
                        [--base-env KEY=VALUE ...]
                        [--env KEY=VALUE ...] [--tag NAME]

DIR is a weft build directory (Release) holding examples/echo_server,
examples/http_hello, bench/echo_client and bench/uv_bench (the libuv peer).
Each rep runs every config once, in the given order (interleaved, so that
the neighbours' load on this shared 2-vCPU VM hits every config alike);
for each run the server is started on a free port of 127.0.0.1, loaded with
bench/echo_client (echo: conns=64 size=64), `wrk -t1 -c100` (http) or
bench/connect_client (accept: 4 threads, each connecting, echoing one
byte and closing, over and over; the echo servers) for --seconds, and its CPU time (utime+stime of the process and its children,
as ../shared/peers/run_all.sh counts server_cpu_s) over the load is divided
by the messages or requests served: microseconds per message. The table
gives, per config, the median (min-max) of that and of the rate, and the
ratio weft / peer of the medians (< 1: weft spends less CPU per message),
and the same ratio taken within each rep (runs back to back), median
(min-max) over the reps.
--env sets variables for weft's servers only (WEFT_BACKEND=epoll, say),
--base-env for the base configs only (the same build as --build with
--base-env WEFT_BACKEND=epoll compares the backends back to back);
--count adds, per config, the server's system calls and context switches
per message (perf stat on the raw_syscalls:sys_enter and
sched:sched_switch tracepoints; steadier than CPU time on a shared VM).
--tag names the weft configs in the output. --base DIR adds configs base1
and base2: weft's servers from another build (the code before a change). nginx (http only) runs from
/usr/sbin/nginx with ../shared/peers/nginx/nginx.conf.in rendered under a
temporary directory.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BASE_ENV = {}
COUNT = [False]  # --count: system calls and context switches per message (perf stat tracepoints)
COUNTS = {}
BASE = [None]  # --base: another weft build, configs base1, base2
HERE = os.path.dirname(os.path.abspath(__file__))
NGINX_CONF = os.path.join(HERE, "..", "..", "shared", "peers", "nginx", "nginx.conf.in")


# the server helpers of the comparison harness (one copy of each)
sys.path.insert(0, HERE)
from compare import free_port, proc_cpu, wait_listening  # noqa: E402


def server_argv(cfg, row, port, build, tmp):
    if cfg.startswith("weft") or cfg.startswith("base"):
        ex = "http_hello" if row == "http" else "echo_server"
        if cfg.startswith("base"):
            build = BASE[0]
        return [os.path.join(build, "examples", ex), "--host", "127.0.0.1", "--port", str(port),
                "--workers", cfg[4:]]
    if cfg == "libuv":
        return [os.path.join(build, "bench", "uv_bench"), "serve_http" if row == "http" else "serve_echo",
                "port=%d" % port, "max_s=120"]
    if cfg.startswith("nginx"):
        with open(NGINX_CONF) as f:
            conf = f.read()
        conf = conf.replace("@PORT@", str(port)).replace("@WORKERS@", cfg[5:]).replace("@PREFIX@", tmp)
        path = os.path.join(tmp, "nginx-%d.conf" % port)
        with open(path, "w") as f:
            f.write(conf)
        return ["/usr/sbin/nginx", "-p", tmp, "-c", path]
    raise SystemExit("unknown config " + cfg)


def load(row, port, build, seconds):
    """-> messages (or requests, or connections) served, or raise."""
    if row == "accept":
        out = subprocess.run([os.path.join(build, "bench", "connect_client"), "port=%d" % port, "threads=4",
                              "seconds=%d" % seconds], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=seconds + 30)
        m = re.search(r'"connections":\s*([0-9]+)', out.stdout)
        if out.returncode or not m:
            raise RuntimeError("connect_client: " + out.stdout + out.stderr)
        return float(m.group(1))
    if row == "echo":
        out = subprocess.run([os.path.join(build, "bench", "echo_client"), "port=%d" % port, "conns=64", "size=64",
                              "seconds=%d" % seconds], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=seconds + 30)
        m = re.search(r'"value":\s*([0-9.eE+]+)', out.stdout)
        if out.returncode or not m:
            raise RuntimeError("echo_client: " + out.stdout + out.stderr)
        return float(m.group(1)) * seconds
    out = subprocess.run([shutil.which("wrk"), "-t1", "-c100", "-d%ds" % seconds, "http://127.0.0.1:%d/" % port],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=seconds + 30)
    n = re.search(r"(\d+) requests in", out.stdout)
    if out.returncode or not n or "Non-2xx" in out.stdout or "Socket errors" in out.stdout:
        raise RuntimeError("wrk: " + out.stdout + out.stderr)
    return float(n.group(1))


def run_one(cfg, row, build, seconds, env, tmp):
    port = free_port()
    e = dict(os.environ)
    if cfg.startswith("weft"):
        e.update(env)
    elif cfg.startswith("base"):
        e.update(BASE_ENV)
    srv = subprocess.Popen(server_argv(cfg, row, port, build, tmp), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=e)
    try:
        if not wait_listening(port, srv):
            raise RuntimeError("%s did not listen" % cfg)
        time.sleep(0.2)  # nginx's workers
        perf = None
        if COUNT[0]:
            pids = [srv.pid]
            try:
                with open("/proc/%d/task/%d/children" % (srv.pid, srv.pid)) as f:
                    pids += [int(x) for x in f.read().split()]
            except OSError:
                pass
            perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter,sched:sched_switch",
                                     "-p", ",".join(map(str, pids))], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            time.sleep(0.2)
        c0 = proc_cpu(srv.pid)
        n = load(row, port, build, seconds)
        c1 = proc_cpu(srv.pid)
        if perf:
            perf.send_signal(2)
            err = perf.communicate(timeout=10)[1]
            counts = {}
            for ln in err.splitlines():
                f = ln.split(",")
                if len(f) > 2 and f[0].strip().isdigit():
                    counts[f[2]] = int(f[0])
            COUNTS.setdefault(cfg, []).append((counts.get("raw_syscalls:sys_enter", 0) / n,
                                               counts.get("sched:sched_switch", 0) / n))
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
    return (c1 - c0) * 1e6 / n, n / seconds


def fmt(xs, unit):
    return "%.2f%s (%.2f-%.2f)" % (statistics.median(xs), unit, min(xs), max(xs))


def main():
    ap = argparse.ArgumentParser(description="server CPU per message, weft against libuv and nginx")
    ap.add_argument("--build", required=True)
    ap.add_argument("--rows", default="echo,http")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--configs", default="weft1,weft2,libuv,nginx1,nginx2")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--tag", default="")
    ap.add_argument("--base", help="a second weft build (before a change): configs base1, base2")
    ap.add_argument("--count", action="store_true",
                    help="also count the server's system calls and context switches per message (perf stat)")
    ap.add_argument("--base-env", action="append", default=[], help="KEY=VALUE for the base configs only")
    a = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in a.env)
    BASE[0] = a.base
    COUNT[0] = a.count
    BASE_ENV.update(kv.split("=", 1) for kv in a.base_env)
    cfgs = a.configs.split(",")
    tmp = tempfile.mkdtemp(prefix="server_cpu-")
    try:
        for row in a.rows.split(","):
            rc = [c for c in cfgs if not (row != "http" and c.startswith("nginx"))]
            res = {c: ([], []) for c in rc}
            for rep in range(a.reps):
                for c in rc:
                    us, rate = run_one(c, row, a.build, a.seconds, env, tmp)
                    res[c][0].append(us)
                    res[c][1].append(rate)
                    print("  %s %s rep %d: %.2f us/msg, %.0f /s" % (row, c, rep + 1, us, rate), file=sys.stderr)
            print("%s%s: cpu us per message, median (min-max); rate /s" % (row, " [" + a.tag + "]" if a.tag else ""))
            for c in rc:
                extra = ""
                if c in COUNTS:
                    extra = "   syscalls/msg %s, switches/msg %s" % (fmt([x[0] for x in COUNTS[c]], ""),
                                                                   fmt([x[1] for x in COUNTS[c]], ""))
                print("  %-7s %s   %s%s" % (c, fmt(res[c][0], " us"), fmt([r / 1000 for r in res[c][1]], "k"), extra))
            COUNTS.clear()
            med = {c: statistics.median(res[c][0]) for c in rc}
            for w in [c for c in rc if c.startswith("weft")]:
                for p in [c for c in rc if not c.startswith("weft") and (c[-1] == w[-1] or not c.startswith("base"))]:
                    paired = [x / y for x, y in zip(res[w][0], res[p][0])]
                    print("  %s / %s = %.2f (medians); per rep %s" % (w, p, med[w] / med[p], fmt(paired, "")))
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

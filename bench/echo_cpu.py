#!/usr/bin/python3
"""bench/echo_cpu.py: the server CPU per echoed message of the streams echo
server (examples/echo_server, bench/run serve_echo) against the protocol-API
echo server (examples/echo_proto, bench/run serve_echo_proto), with the same
load client (bench/echo_client.c) for both: issue 9's target is protocol <=
0.8 x streams.

    bench/echo_cpu.py [--build DIR] [--workers 1,2] [--reps 5] [--conns 64]
                      [--size 64] [--seconds 5] [--backend uring|epoll]

DIR (default build/release, as bench/run builds it) holds examples/ and
bench/echo_client. For each worker count, the runs alternate between the two
servers (streams, proto, streams, ...), one fresh server process per run
listening on a free port of 127.0.0.1; the server's CPU is utime + stime
from /proc/PID/stat just before and just after the load. A run's figure is
server CPU microseconds / messages echoed; the cell is the median of --reps
runs (min-max quoted). Prints a Markdown table and one JSON line per cell.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def wait_listening(port, proc):
    for _ in range(200):
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def one_run(args, exe, workers):
    port = free_port()
    env = dict(os.environ)
    env["WEFT_BACKEND"] = args.backend
    srv = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                            "--max-s", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        if not wait_listening(port, srv):
            sys.exit("ERROR: %s did not listen" % exe)
        cpu0 = proc_cpu(srv.pid)
        out = subprocess.run([os.path.join(args.build, "bench", "echo_client"), "port=%d" % port,
                              "conns=%d" % args.conns, "size=%d" % args.size, "seconds=%d" % args.seconds,
                              "system=" + os.path.basename(exe), "workers=%d" % workers],
                             stdout=subprocess.PIPE, text=True)
        cpu1 = proc_cpu(srv.pid)
    finally:
        srv.terminate()
        srv.wait(timeout=20)
    if out.returncode != 0:
        sys.exit("ERROR: echo_client failed against %s" % exe)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    return (cpu1 - cpu0) * 1e6 / line["messages"], line["value"], cpu1 - cpu0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--backend", default="uring")
    args = ap.parse_args()
    servers = [("streams", os.path.join(args.build, "examples", "echo_server")),
               ("proto", os.path.join(args.build, "examples", "echo_proto"))]
    rows = []
    for w in [int(x) for x in args.workers.split(",")]:
        runs = {name: [] for name, _ in servers}
        for rep in range(args.reps):
            for name, exe in servers:
                us, rate, cpu = one_run(args, exe, w)
                runs[name].append((us, rate, cpu))
                print("w=%d %-7s rep %d: %.2f us/msg  %.0f msgs/s  cpu %.2f s" % (w, name, rep + 1, us, rate, cpu),
                      file=sys.stderr)
        cell = {}
        for name, _ in servers:
            us = [r[0] for r in runs[name]]
            rate = [r[1] for r in runs[name]]
            cell[name] = (statistics.median(us), min(us), max(us), statistics.median(rate))
            print(json.dumps({"server": name, "workers": w, "backend": args.backend, "conns": args.conns,
                              "size": args.size, "seconds": args.seconds, "reps": args.reps,
                              "cpu_us_per_msg_median": round(cell[name][0], 3), "min": round(cell[name][1], 3),
                              "max": round(cell[name][2], 3), "msgs_per_s_median": round(cell[name][3])}))
        rows.append((w, cell))
    print("\n| workers | streams us/msg | proto us/msg | proto/streams | streams msgs/s | proto msgs/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for w, c in rows:
        s, p = c["streams"], c["proto"]
        print("| %d | %.2f (%.2f-%.2f) | %.2f (%.2f-%.2f) | %.2f | %.0f | %.0f |" %
              (w, s[0], s[1], s[2], p[0], p[1], p[2], p[0] / s[0], s[3], p[3]))


if __name__ == "__main__":
    main()

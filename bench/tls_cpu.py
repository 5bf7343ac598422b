#!/usr/bin/python3
"""bench/tls_cpu.py: examples/https_hello against nginx over TLS (issue 9's
performance target): requests/s and server CPU per request, measured back
to back in one run, with the same certificate, key and cipher.

    bench/tls_cpu.py --build DIR [--reps 5] [--seconds 5] [--conns 100]
                     [--configs weft1,weft2,nginx1,nginx2] [--env KEY=VALUE ...]
                     [--base DIR] [--tag NAME] [--nginx PATH] [--wrk PATH] [--wrk-threads 1]
                     [--nginx-conf nginx.conf.in]

DIR is a weft build directory (Release) holding examples/https_hello. The
certificate is made on the fly (openssl req: a self-signed P-256 key for
CN localhost) in a temporary directory that both servers read. nginx
(/usr/sbin/nginx) runs with a TLS variant of ../shared/peers/nginx/nginx.conf.in
that this script renders next to it: the same file with `listen ... ssl`,
the certificate and key, TLS 1.2-1.3, and session reuse off (no session
cache, no tickets; weft's contexts keep OpenSSL's defaults, and wrk's
connections are kept alive for the whole run, so a handshake happens once
per connection on both). Before the runs the script asks each server
(openssl s_client) for its negotiated protocol and cipher and prints them:
both use OpenSSL 3's defaults, so they must match (the script stops if not).
Each rep runs every config once, in order (interleaved: the neighbours'
load on this shared VM hits every config alike); a run starts the server
on a free port of 127.0.0.1, loads it with `wrk -t1 -cCONNS -dSECONDS
https://127.0.0.1:PORT/` (keep-alive, one request in flight per connection;
--wrk-threads sets -t)
and divides the server's CPU time (utime+stime of the process and its
children, /proc) over the load by the requests served. The table gives the
median (min-max) of that and of the rate per config, and weft/nginx ratios
of the medians and per rep. --base DIR adds base1/base2 (https_hello of
another build, the code before a change); --env sets variables for weft's
servers (WEFT_BACKEND=epoll).
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

HERE = os.path.dirname(os.path.abspath(__file__))
NGINX_CONF = [os.path.join(HERE, "..", "..", "shared", "peers", "nginx", "nginx.conf.in")]
NGINX = ["/usr/sbin/nginx"]
WRK = [shutil.which("wrk"), 1]  # the program, its -t

sys.path.insert(0, HERE)
from compare import free_port, proc_cpu, wait_listening  # noqa: E402
from server_cpu import fmt  # noqa: E402  (median (min-max), as server_cpu.py prints it)


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def nginx_tls_conf(port, workers, tmp, cert, key):
    """The shared nginx config with TLS on its listener (the one source of the rest)."""
    with open(NGINX_CONF[0]) as f:
        conf = f.read()
    listen = "listen 127.0.0.1:@PORT@;"
    if listen not in conf:
        raise SystemExit("nginx.conf.in changed: no '%s'" % listen)
    conf = conf.replace(listen, "listen 127.0.0.1:@PORT@ ssl;\n"
                        "        ssl_certificate %s;\n"
                        "        ssl_certificate_key %s;\n"
                        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
                        "        ssl_session_cache off;\n"
                        "        ssl_session_tickets off;" % (cert, key))
    conf = conf.replace("@PORT@", str(port)).replace("@WORKERS@", str(workers)).replace("@PREFIX@", tmp)
    path = os.path.join(tmp, "nginx-tls-%d.conf" % port)
    with open(path, "w") as f:
        f.write(conf)
    return path


def server_argv(cfg, port, build, base, tmp, cert, key):
    if cfg.startswith("weft") or cfg.startswith("base"):
        b = base if cfg.startswith("base") else build
        return [os.path.join(b, "examples", "https_hello"), "--host", "127.0.0.1", "--port", str(port),
                "--workers", cfg[4:], "--cert", cert, "--key", key]
    if cfg.startswith("nginx"):
        return [NGINX[0], "-p", tmp, "-c", nginx_tls_conf(port, cfg[5:], tmp, cert, key)]
    raise SystemExit("unknown config " + cfg)


def start(cfg, port, a, env, tmp, cert, key):
    e = dict(os.environ)
    if not cfg.startswith("nginx"):
        e.update(env)
    srv = subprocess.Popen(server_argv(cfg, port, a.build, a.base, tmp, cert, key), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=e)
    if not wait_listening(port, srv):
        stop(srv)
        raise RuntimeError("%s did not listen" % cfg)
    time.sleep(0.2)  # nginx's workers
    return srv


def stop(srv):
    srv.terminate()
    try:
        srv.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.kill()
        srv.wait()


def negotiated(port):
    """(protocol, cipher) a default OpenSSL client gets from the server."""
    out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "localhost"],
                         input="", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20).stdout
    m = re.search(r"New, (\S+), Cipher is (\S+)", out)
    return (m.group(1), m.group(2)) if m else ("?", "?")


def load(port, seconds, conns):
    out = subprocess.run([WRK[0], "-t%d" % WRK[1], "-c%d" % conns, "-d%ds" % seconds,
                          "https://127.0.0.1:%d/" % port], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=seconds + 60)
    n = re.search(r"(\d+) requests in", out.stdout)
    if out.returncode or not n or "Non-2xx" in out.stdout or "Socket errors" in out.stdout:
        raise RuntimeError("wrk: " + out.stdout + out.stderr)
    return float(n.group(1))


def run_one(cfg, a, env, tmp, cert, key):
    port = free_port()
    srv = start(cfg, port, a, env, tmp, cert, key)
    try:
        c0 = proc_cpu(srv.pid)
        n = load(port, a.seconds, a.conns)
        c1 = proc_cpu(srv.pid)
    finally:
        stop(srv)
    return (c1 - c0) * 1e6 / n, n / a.seconds


def main():
    ap = argparse.ArgumentParser(description="https_hello against nginx over TLS: requests/s, CPU per request")
    ap.add_argument("--build", required=True)
    ap.add_argument("--base", help="a second weft build (before a change): configs base1, base2")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--configs", default="weft1,weft2,nginx1,nginx2")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--tag", default="")
    ap.add_argument("--nginx", default=NGINX[0])
    ap.add_argument("--wrk", default=WRK[0])
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--nginx-conf", default=NGINX_CONF[0], help="the plain nginx config template to add TLS to")
    a = ap.parse_args()
    NGINX[0] = a.nginx
    NGINX_CONF[0] = a.nginx_conf
    WRK[0], WRK[1] = a.wrk, a.wrk_threads
    env = dict(kv.split("=", 1) for kv in a.env)
    cfgs = a.configs.split(",")
    tmp = tempfile.mkdtemp(prefix="tls_cpu-")
    try:
        cert, key = make_cert(tmp)
        seen = {}
        for c in cfgs:
            port = free_port()
            srv = start(c, port, a, env, tmp, cert, key)
            try:
                seen[c] = negotiated(port)
            finally:
                stop(srv)
            print("  %s negotiates %s %s" % (c, seen[c][0], seen[c][1]), file=sys.stderr)
        if len(set(seen.values())) != 1:
            raise SystemExit("the servers negotiate different protocols or ciphers: %s" % seen)
        res = {c: ([], []) for c in cfgs}
        for rep in range(a.reps):
            for c in cfgs:
                us, rate = run_one(c, a, env, tmp, cert, key)
                res[c][0].append(us)
                res[c][1].append(rate)
                print("  https %s rep %d: %.2f us/req, %.0f req/s" % (c, rep + 1, us, rate), file=sys.stderr)
        proto, cipher = next(iter(seen.values()))
        print("https%s (%s %s, wrk -t%d -c%d, %d s x %d reps): server cpu us per request, median (min-max); "
              "requests/s" % (" [" + a.tag + "]" if a.tag else "", proto, cipher, WRK[1], a.conns, a.seconds, a.reps))
        for c in cfgs:
            print("  %-7s %s   %s" % (c, fmt(res[c][0], " us"), fmt([r / 1000 for r in res[c][1]], "k")))
        med = {c: statistics.median(res[c][0]) for c in cfgs}
        rate = {c: statistics.median(res[c][1]) for c in cfgs}
        for w in [c for c in cfgs if not c.startswith("nginx")]:
            for p in [c for c in cfgs if c.startswith("nginx") and c[-1] == w[-1]]:
                paired = [x / y for x, y in zip(res[w][0], res[p][0])]
                print("  %s / %s: cpu/req %.2f (medians; per rep %s), req/s %.2f" %
                      (w, p, med[w] / med[p], fmt(paired, ""), rate[w] / rate[p]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

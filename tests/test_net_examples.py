#!/usr/bin/env python3
"""tests/test_net_examples.py: end-to-end tests of examples/echo_server and
examples/http_hello against clients that weft's authors did not write:
Python's own asyncio streams (random payload sizes, partial writes, abrupt
closes and resets), curl, and a short wrk run (each skipped when missing);
garbage, truncated and oversized HTTP requests; port in use; a clean exit on
SIGTERM. Loopback only; every wait is bounded.

    test_net_examples.py ECHO_SERVER HTTP_HELLO
"""
import asyncio
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

ECHO, HTTP = sys.argv[1], sys.argv[2]
RESPONSE_BODY = b"Hello, World!"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(exe, port, workers=2):
    p = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p
        except OSError:
            if p.poll() is not None:
                raise SystemExit("FAIL: %s exited: %s" % (exe, p.stderr.read().decode()))
            time.sleep(0.02)
    p.kill()
    raise SystemExit("FAIL: %s never listened" % exe)


def stop(p, name):
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        raise SystemExit("FAIL: %s did not stop on SIGTERM" % name)
    if rc != 0:
        raise SystemExit("FAIL: %s exited with %d on SIGTERM" % (name, rc))


def check(cond, what):
    if not cond:
        raise SystemExit("FAIL: " + what)


# ------------------------------------------------------------ echo

async def echo_client(port, rng, abrupt):
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    size = rng.choice([1, 7, 100, 1500, 65536, 200000, rng.randrange(1, 300000)])
    data = rng.randbytes(size)
    sent = 0
    while sent < size:  # partial writes of random sizes
        n = min(size - sent, rng.randrange(1, 70000))
        w.write(data[sent:sent + n])
        await w.drain()
        sent += n
        if abrupt and sent > size // 2:
            if abrupt == "reset":
                w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                      struct.pack("ii", 1, 0))
            w.transport.abort()
            return 0
    got = await asyncio.wait_for(r.readexactly(size), 30)
    check(got == data, "echo mismatch (%d bytes)" % size)
    w.close()
    await w.wait_closed()
    return size


async def echo_load(port):
    rng = random.Random(int(os.environ.get("WEFT_TEST_SEED", "0")) or 12345)
    kinds = [None] * 40 + ["close"] * 5 + ["reset"] * 5
    rng.shuffle(kinds)
    results = await asyncio.gather(*(echo_client(port, random.Random(rng.random()), k) for k in kinds))
    check(sum(1 for x in results if x) >= 40, "some echo clients failed")
    # the server keeps serving after the abrupt ones
    check(await echo_client(port, random.Random(7), None) > 0, "echo after abrupt closes")


def test_echo():
    port = free_port()
    p = start(ECHO, port)
    try:
        asyncio.run(asyncio.wait_for(echo_load(port), 120))
        # port in use: a second server reports it and exits non-zero
        q = subprocess.run([ECHO, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=20)
        check(q.returncode != 0 and b"Address already in use" in q.stderr, "port in use: %r" % q.stderr)
    finally:
        stop(p, "echo_server")
    print("ok   echo_server: asyncio clients, abrupt closes and resets, port in use, SIGTERM")


# ------------------------------------------------------------ http

def http_exchange(port, payload, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
    s.close()
    return out


def test_http():
    port = free_port()
    p = start(HTTP, port)
    try:
        req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        out = http_exchange(port, req * 5)  # pipelined: five answers, in order
        check(out.count(b"HTTP/1.1 200 OK") == 5 and out.count(RESPONSE_BODY) == 5, "pipelined: %r" % out[:200])
        check(http_exchange(port, b"\x00\xffgarbage\r\n\r\n").startswith(b"HTTP/1.1 200"), "garbage head")
        check(http_exchange(port, b"GET / HTTP/1.1\r\nHost") == b"", "truncated request")
        big = b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
        s = socket.create_connection(("127.0.0.1", port), 5)
        try:
            s.sendall(big)
        except OSError:
            pass
        out = s.recv(4096)
        s.close()
        check(out.startswith(b"HTTP/1.1 431"), "oversized head: %r" % out[:80])
        check(http_exchange(port, req).count(RESPONSE_BODY) == 1, "still serving")
        if shutil.which("curl"):
            c = subprocess.run(["curl", "-s", "--max-time", "10", "http://127.0.0.1:%d/" % port,
                                "http://127.0.0.1:%d/again" % port], capture_output=True, timeout=20)
            check(c.returncode == 0 and c.stdout == RESPONSE_BODY * 2, "curl: %r" % c.stdout)
        else:
            print("skip curl (not installed)")
        if shutil.which("wrk"):
            c = subprocess.run(["wrk", "-t1", "-c20", "-d1s", "http://127.0.0.1:%d/" % port],
                               capture_output=True, text=True, timeout=30)
            check(c.returncode == 0 and "Requests/sec" in c.stdout and "Non-2xx" not in c.stdout
                  and "Socket errors" not in c.stdout, "wrk: %s" % c.stdout)
        else:
            print("skip wrk (not installed)")
    finally:
        stop(p, "http_hello")
    print("ok   http_hello: pipelining, garbage, truncated and oversized requests, curl, wrk, SIGTERM")


test_echo()
test_http()

#!/usr/bin/env python3
"""tests/test_net_examples.py: end-to-end tests of examples/echo_server and
examples/http_hello against clients that weft's authors did not write:
Python's own asyncio streams (random payload sizes, partial writes, abrupt
closes and resets), curl, and a short wrk run (each skipped when missing);
garbage, truncated and oversized HTTP requests; "Connection: close" and
HTTP/1.0 (closed after the answer), HTTP/1.0 keep-alive; port in use; a
clean exit on SIGTERM. Loopback only; every wait is bounded. examples/https_hello (when
given) against Python's ssl module and asyncio's streams with ssl= (TLS 1.3
and 1.2, ALPN, verification of its certificate, pipelining, garbage instead
of a handshake, a client gone mid-handshake), curl and openssl s_client;
its certificate is made with the openssl command line (skipped when
missing).

    test_net_examples.py ECHO_SERVER HTTP_HELLO [HTTPS_HELLO [ECHO_PROTO]]

ECHO_PROTO (examples/echo_proto, the echo server on weft/protocol.h) gets
the same echo tests as ECHO_SERVER.
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
HTTPS = sys.argv[3] if len(sys.argv) > 3 else None
ECHO_PROTO = sys.argv[4] if len(sys.argv) > 4 else None
RESPONSE_BODY = b"Hello, World!"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(exe, port, workers=2, extra=()):
    p = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *extra],
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


def test_echo(exe=ECHO, name="echo_server"):
    port = free_port()
    p = start(exe, port)
    try:
        asyncio.run(asyncio.wait_for(echo_load(port), 120))
        # port in use: a second server reports it and exits non-zero
        q = subprocess.run([exe, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=20)
        check(q.returncode != 0 and b"Address already in use" in q.stderr, "port in use: %r" % q.stderr)
        # bad flag values: a message and status 2, nothing started
        for flags in (["--workers", "abc"], ["--port", "99999"], ["--max-s", "-1"], ["--port"]):
            q = subprocess.run([exe] + flags, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=20)
            check(q.returncode == 2 and b"usage:" in q.stderr, "%s: %d %r" % (flags, q.returncode, q.stderr))
    finally:
        stop(p, name)
    print("ok   %s: asyncio clients, abrupt closes and resets, port in use, bad flags, SIGTERM" % name)


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
        # the last request on a connection (RFC 9112 9.3, 9.6): "Connection: close", or HTTP/1.0 without
        # keep-alive, is answered with "Connection: close" and the server closes, though the client keeps
        # its half open (as ab without -k reads until the close: it waited for the 30 s idle timeout)
        for last, extra in ((b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", req),
                            (b"GET / HTTP/1.1\r\nconnection: Foo, CLOSE\r\n\r\n", req),
                            (b"GET / HTTP/1.0\r\n\r\n", b""), (b"GET / HTTP/1.0\r\nUser-Agent: x\r\n\r\n", req)):
            s = socket.create_connection(("127.0.0.1", port), 5)
            s.sendall(req + last + extra)  # nothing after the last is answered
            out, t_end = b"", time.time() + 10
            try:
                while time.time() < t_end:
                    b = s.recv(65536)
                    if not b:
                        break
                    out += b
            except OSError:
                pass
            s.close()
            check(out.count(RESPONSE_BODY) == 2 and out.endswith(b"Connection: close\r\n\r\n" + RESPONSE_BODY),
                  "%r: not closed after its answer: %r" % (last, out[-120:]))
        # HTTP/1.0 with keep-alive: answered "Connection: keep-alive" (which a 1.0 client needs), kept open
        s = socket.create_connection(("127.0.0.1", port), 5)
        ka = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
        s.sendall(ka * 2)
        out = b""
        while out.count(RESPONSE_BODY) < 2:
            b = s.recv(65536)
            check(b, "HTTP/1.0 keep-alive: closed after %r" % out[-120:])
            out += b
        s.close()
        check(out.count(b"Connection: keep-alive\r\n") == 2, "HTTP/1.0 keep-alive: %r" % out[-120:])
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
    print("ok   http_hello: pipelining, garbage, truncated and oversized requests, Connection: close, HTTP/1.0, "
          "curl, wrk, SIGTERM")


def test_https():
    import ssl
    import tempfile
    if not HTTPS:
        return
    if not shutil.which("openssl"):
        print("skip https_hello (no openssl command line to make its certificate)")
        return
    d = tempfile.mkdtemp(prefix="weft-https-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True,
                   timeout=30)
    port = free_port()
    p = start(HTTPS, port, extra=("--cert", cert, "--key", key))
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            ctx = ssl.create_default_context(cafile=cert)
            ctx.minimum_version = ctx.maximum_version = version
            ctx.set_alpn_protocols(["h2", "http/1.1"])
            with socket.create_connection(("127.0.0.1", port), 5) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    check(s.selected_alpn_protocol() == "http/1.1", "alpn: %r" % s.selected_alpn_protocol())
                    s.sendall(req * 5)
                    out = b""
                    while out.count(RESPONSE_BODY) < 5:
                        b = s.recv(65536)
                        check(b, "https: early end after %r" % out[:200])
                        out += b
                    check(out.count(b"HTTP/1.1 200 OK") == 5, "https pipelined: %r" % out[:200])
        # the certificate does not name this host: the client rejects it
        try:
            with socket.create_connection(("127.0.0.1", port), 5) as raw:
                ssl.create_default_context(cafile=cert).wrap_socket(raw, server_hostname="example.com")
            check(False, "wrong host name accepted")
        except ssl.SSLCertVerificationError:
            pass
        # garbage instead of a ClientHello, and a client gone mid-handshake: the server goes on
        with socket.create_connection(("127.0.0.1", port), 5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
            try:
                while raw.recv(4096):
                    pass
            except OSError:
                pass
        with socket.create_connection(("127.0.0.1", port), 5) as raw:
            raw.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then gone

        async def asyncio_client():
            ctx = ssl.create_default_context(cafile=cert)
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                                  server_hostname="localhost"), 10)
            for _ in range(20):
                w.write(req)
                await w.drain()
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
                check(head.startswith(b"HTTP/1.1 200 OK"), "asyncio ssl: %r" % head)
                check(await asyncio.wait_for(r.readexactly(len(RESPONSE_BODY)), 10) == RESPONSE_BODY, "body")
            w.close()
            try:
                await w.wait_closed()
            except (ssl.SSLError, ConnectionError):
                pass
        async def asyncio_clients():
            await asyncio.wait_for(asyncio.gather(*(asyncio_client() for _ in range(8))), 60)
        asyncio.run(asyncio_clients())
        if shutil.which("curl"):
            c = subprocess.run(["curl", "-s", "--max-time", "10", "--cacert", cert, "https://localhost:%d/" % port,
                                "https://localhost:%d/again" % port], capture_output=True, timeout=20)
            check(c.returncode == 0 and c.stdout == RESPONSE_BODY * 2, "curl https: %r" % c.stdout)
        import select
        c = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "localhost",
                              "-CAfile", cert, "-alpn", "http/1.1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        c.stdin.write(req)
        c.stdin.flush()
        out, t_end = b"", time.time() + 20
        while RESPONSE_BODY not in out and time.time() < t_end:  # the server keeps the connection: read, then kill
            if select.select([c.stdout], [], [], 1)[0]:
                b = os.read(c.stdout.fileno(), 65536)
                if not b:
                    break
                out += b
        c.kill()
        c.wait()
        check(b"Verify return code: 0" in out and RESPONSE_BODY in out, "s_client: %r" % out[-400:])
    finally:
        stop(p, "https_hello")
        shutil.rmtree(d, ignore_errors=True)
    print("ok   https_hello: Python ssl (TLS 1.3, 1.2, ALPN, verification), asyncio ssl=, garbage, "
          "curl, openssl s_client, SIGTERM")


# ------------------------------------------------------------ shutdown with a peer that does not read

def test_shutdown_nonreader(exe, name, payload):
    """SIGTERM while a client floods the server and never reads: the handler is stuck in drain;
    server_main.h gives handlers 2 s, then cancels them, so the exit must not wait for the peer."""
    port = free_port()
    p = start(exe, port)
    socks = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", port), 5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            socks.append(s)
            t_end = time.time() + 3
            while time.time() < t_end:  # until the server stops taking bytes (it is blocked in drain)
                try:
                    s.send(payload)
                except BlockingIOError:
                    break
        time.sleep(0.3)
        t = time.time()
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            raise SystemExit("FAIL: %s did not stop on SIGTERM" % name)
        dt = time.time() - t
        check(rc == 0, "%s exited with %d" % (name, rc))
        check(dt < 6, "%s took %.1f s to stop with a peer that does not read (handlers get 2 s)" % (name, dt))
    finally:
        if p.poll() is None:
            p.kill()
        for s in socks:
            s.close()
    print("ok   %s: SIGTERM with a peer that does not read stops in %.1f s" % (name, dt))


test_echo()
if ECHO_PROTO:
    test_echo(ECHO_PROTO, "echo_proto")
test_http()
test_https()
test_shutdown_nonreader(ECHO, "echo_server", b"x" * 65536)
test_shutdown_nonreader(HTTP, "http_hello", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)

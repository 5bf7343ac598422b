#!/usr/bin/python3
"""bench/peers/asyncio_bench.py: the workloads of BENCHMARKS.md on Python's
asyncio, or on uvloop with loop=uvloop: the single-threaded loops that
bench/compare.py measures weft against.

    asyncio_bench.py WORKLOAD [key=value ...] [loop=asyncio|uvloop]
    asyncio_bench.py serve_echo|serve_http port=PORT [max_s=S] [loop=...]

The two servers listen on 127.0.0.1:PORT until SIGTERM/SIGINT or S seconds
(default 60): serve_echo echoes every byte (tcp_echo's server), serve_http
answers every HTTP/1.1 request with "Hello, World!" on a keep-alive
connection (http_plaintext's server; a request ends at its blank line).

Each workload checks its own result and exits 1 with "ERROR: ..." on stderr
when the work was not done; the last line on stdout is the JSON line of
BENCHMARKS.md with system "asyncio" or "uvloop" and workers 1 (a
single-threaded loop has one). A bad command line exits 2.

Semantics follow weft's own bench/workloads.c workload by workload, so that
the two are compared as ratios: the same counters, the same checks.
"""
import asyncio
import json
import os
import random
import resource
import sys
import time

# name -> (unit, [(param, default)], in BENCHMARKS.md's order)
WORKLOADS = {
    "spawn_many": ("tasks/s", [("n", 1000000)]),
    "yield_many": ("yields/s", [("tasks", 1000), ("yields", 1000)]),
    "ping_pong": ("roundtrips/s", [("pairs", 1), ("rounds", 200000)]),
    "chained_spawn": ("spawns/s", [("depth", 1000000)]),
    "fib": ("tasks/s", [("k", 27), ("cutoff", 0)]),
    "timers": ("x_ideal", [("tasks", 100000), ("ms", 10), ("times", 10)]),
    "lock_contention": ("acquisitions/s", [("tasks", 64), ("iters", 20000)]),
    "to_thread": ("calls/s", [("calls", 100000), ("concurrency", 64)]),
    "idle_tasks": ("bytes/task", [("n", 100000)]),
    "spawn_process": ("processes/s", [("n", 1000), ("concurrency", 32)]),
    "file_read": ("GB/s", [("tasks", 64), ("size_mb", 256), ("block_kb", 64), ("reads", 200000)]),
}


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def spawn_many(p):
    n = p["n"]
    count = 0
    done = asyncio.get_running_loop().create_future()

    async def one():
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)

    t0 = time.perf_counter()
    for _ in range(n):
        asyncio.create_task(one())
    await done
    wall = time.perf_counter() - t0
    check(count == n, "counter %d != %d" % (count, n))
    return n / wall, wall, {}


async def yield_many(p):
    tasks, yields = p["tasks"], p["yields"]
    total = 0

    async def one():
        nonlocal total
        for _ in range(yields):
            await asyncio.sleep(0)
            total += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(tasks)))
    wall = time.perf_counter() - t0
    check(total == tasks * yields, "yields %d != %d" % (total, tasks * yields))
    return total / wall, wall, {}


async def ping_pong(p):
    pairs, rounds = p["pairs"], p["rounds"]

    async def pinger(to, back):
        s = 0
        for i in range(rounds):
            await to.put(i)
            s += await back.get()
        return s

    async def ponger(to, back):
        for _ in range(rounds):
            v = await to.get()
            await back.put(v + 1)

    t0 = time.perf_counter()
    jobs = []
    for _ in range(pairs):
        a, b = asyncio.Queue(maxsize=1), asyncio.Queue(maxsize=1)
        jobs.append(pinger(a, b))
        jobs.append(ponger(a, b))
    res = await asyncio.gather(*jobs)
    wall = time.perf_counter() - t0
    want = rounds * (rounds + 1) // 2
    for i in range(0, len(res), 2):
        check(res[i] == want, "pair sum %d != %d" % (res[i], want))
    return pairs * rounds / wall, wall, {}


async def chained_spawn(p):
    depth = p["depth"]
    done = asyncio.get_running_loop().create_future()

    async def step(i):
        if i == depth:
            done.set_result(i)
        else:
            asyncio.create_task(step(i + 1))

    t0 = time.perf_counter()
    asyncio.create_task(step(1))
    got = await done
    wall = time.perf_counter() - t0
    check(got == depth, "chain ended at %d != %d" % (got, depth))
    return depth / wall, wall, {}


def fib_iter(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


async def fib(p):
    k, cutoff = p["k"], p["cutoff"]
    created = 0

    def plain(n):
        return n if n < 2 else plain(n - 1) + plain(n - 2)

    async def task_fib(n):
        nonlocal created
        if n < 2:
            return n
        if n < cutoff:
            return plain(n)
        created += 2
        a = asyncio.create_task(task_fib(n - 1))
        b = asyncio.create_task(task_fib(n - 2))
        return await a + await b

    t0 = time.perf_counter()
    got = await task_fib(k)
    wall = time.perf_counter() - t0
    check(got == fib_iter(k), "fib(%d) = %d is wrong" % (k, got))
    return created / wall, wall, {}


async def timers(p):
    tasks, ms, times = p["tasks"], p["ms"], p["times"]
    done = 0

    async def one():
        nonlocal done
        for _ in range(times):
            await asyncio.sleep(ms / 1000.0)
        done += 1

    c0 = cpu_seconds()
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(tasks)))
    wall = time.perf_counter() - t0
    check(done == tasks, "timer tasks done %d != %d" % (done, tasks))
    ideal = ms * times / 1000.0
    return wall / ideal, wall, {"cpu_s": round(cpu_seconds() - c0, 6)}


async def lock_contention(p):
    tasks, iters = p["tasks"], p["iters"]
    lock = asyncio.Lock()
    counter = 0

    async def one():
        nonlocal counter
        for _ in range(iters):
            async with lock:
                counter += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(tasks)))
    wall = time.perf_counter() - t0
    check(counter == tasks * iters, "counter %d != %d" % (counter, tasks * iters))
    return counter / wall, wall, {}


def identity(x):
    return x


async def to_thread(p):
    calls, conc = p["calls"], p["concurrency"]
    next_call = 0
    total = 0

    async def caller():
        nonlocal next_call, total
        while next_call < calls:
            i = next_call
            next_call += 1
            r = await asyncio.to_thread(identity, i)  # not `total += await ...`: total would be read before the await
            total += r

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(conc)))
    wall = time.perf_counter() - t0
    check(total == calls * (calls - 1) // 2, "sum of results %d is wrong" % total)
    return calls / wall, wall, {}


async def spawn_process(p):
    n, conc = p["n"], p["concurrency"]
    next_child = 0
    ok = 0

    async def starter():
        nonlocal next_child, ok
        while next_child < n:
            next_child += 1
            proc = await asyncio.create_subprocess_exec("/bin/true")
            if await proc.wait() == 0:
                ok += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(starter() for _ in range(conc)))
    wall = time.perf_counter() - t0
    check(ok == n, "%d children exited 0, want %d" % (ok, n))
    return n / wall, wall, {}


async def idle_tasks(p):
    n = p["n"]
    ev = asyncio.Event()
    started = woke = 0

    async def one():
        nonlocal started, woke
        started += 1
        await ev.wait()
        woke += 1

    before = rss_bytes()
    t0 = time.perf_counter()
    ts = [asyncio.create_task(one()) for _ in range(n)]
    while started < n:  # one pass of the loop starts them all (FIFO); bounded by n passes
        await asyncio.sleep(0)
    per_task = (rss_bytes() - before) / n
    w0 = time.perf_counter()
    ev.set()
    await asyncio.gather(*ts)
    wake = time.perf_counter() - w0
    check(woke == n, "woke %d != %d" % (woke, n))
    return per_task, time.perf_counter() - t0, {"wake_s": round(wake, 6)}


async def file_read(p):
    tasks, size_mb, block_kb, reads = p["tasks"], p["size_mb"], p["block_kb"], p["reads"]
    path = P_FILE
    size, block = size_mb << 20, block_kb << 10
    check(os.path.getsize(path) >= size, "%s is smaller than %d MiB" % (path, size_mb))
    fd = os.open(path, os.O_RDONLY)
    loop = asyncio.get_running_loop()
    left = reads
    got = 0
    rng = random.Random(1)
    nblocks = size // block

    async def reader():
        nonlocal left, got
        while left > 0:
            left -= 1
            off = rng.randrange(nblocks) * block
            data = await loop.run_in_executor(None, os.pread, fd, block, off)
            check(len(data) == block, "short read %d at %d" % (len(data), off))
            got += len(data)

    t0 = time.perf_counter()
    await asyncio.gather(*(reader() for _ in range(tasks)))
    wall = time.perf_counter() - t0
    os.close(fd)
    check(got == reads * block, "bytes %d != %d" % (got, reads * block))
    return got / wall / 1e9, wall, {}


P_FILE = "/tmp/weft_bench_file.bin"

HTTP_RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: asyncio_bench\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: 13\r\n\r\nHello, World!")


async def echo_conn(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def http_conn(reader, writer):
    buf = b""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            buf += data
            n = buf.count(b"\r\n\r\n")
            if n:
                buf = buf[buf.rindex(b"\r\n\r\n") + 4:]
                writer.write(HTTP_RESPONSE * n)
                await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def serve(kind, port, max_s):
    import signal
    handler = echo_conn if kind == "serve_echo" else http_conn
    server = await asyncio.start_server(handler, "127.0.0.1", port, backlog=1024)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    try:
        await asyncio.wait_for(stop, max_s)
    except asyncio.TimeoutError:
        pass
    server.close()


def serve_main(argv):
    port, max_s, system = None, 60, "asyncio"
    for arg in argv[2:]:
        key, _, val = arg.partition("=")
        if key == "port" and val.isdigit() and 0 < int(val) < 65536:
            port = int(val)
        elif key == "max_s" and val.isdigit():
            max_s = int(val)
        elif key == "loop" and val in ("asyncio", "uvloop"):
            system = val
        elif key == "workers":
            pass
        else:
            print("bad argument %r (port=PORT max_s=S loop=asyncio|uvloop)" % arg, file=sys.stderr)
            return 2
    if port is None:
        print("port=PORT is required", file=sys.stderr)
        return 2
    if system == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(argv[1], port, max_s))
    return 0


def main(argv):
    if len(argv) >= 2 and argv[1] in ("serve_echo", "serve_http"):
        return serve_main(argv)
    if len(argv) < 2 or argv[1] not in WORKLOADS:
        print("usage: asyncio_bench.py WORKLOAD [key=value ...] [loop=asyncio|uvloop]\n  workloads: "
              + " ".join(WORKLOADS), file=sys.stderr)
        return 2
    name = argv[1]
    unit, spec = WORKLOADS[name]
    p = dict(spec)
    system = "asyncio"
    global P_FILE
    for arg in argv[2:]:
        key, eq, val = arg.partition("=")
        if not eq:
            print("bad argument %r (want key=value)" % arg, file=sys.stderr)
            return 2
        if key == "loop":
            if val not in ("asyncio", "uvloop"):
                print("loop must be asyncio or uvloop", file=sys.stderr)
                return 2
            system = val
        elif key == "file" and name == "file_read":
            P_FILE = val
        elif key == "workers":
            pass  # a single-threaded loop: accepted and ignored, reported as 1
        elif key in p:
            try:
                p[key] = int(val)
            except ValueError:
                print("%s must be an integer" % key, file=sys.stderr)
                return 2
            if p[key] < 0:
                print("%s must not be negative" % key, file=sys.stderr)
                return 2
        else:
            print("unknown parameter %r for %s" % (key, name), file=sys.stderr)
            return 2
    if system == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        value, wall, extra = asyncio.run(globals()[name](p))
    except CheckFailed as e:
        print("ERROR: %s: %s" % (name, e), file=sys.stderr)
        return 1
    line = {"workload": name, "system": system, "workers": 1, "value": round(value, 6), "unit": unit,
            "wall_s": round(wall, 6), "rss_kb": rss_bytes() // 1024,
            "params": " ".join("%s=%d" % (k, p[k]) for k, _ in spec)}
    line.update(extra)
    print(json.dumps(line, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""CPython's multiprocessing, figure by figure, for `cargo xtask bench`.

    python3 bench/python/mp_bench.py <spawn|forkserver|fork> <figure> [key=value]...

prints `RESULT <value>` (or `NA <reason>`), exactly as the Rust contenders in
bench/src do; the figures, keys and units are listed in bench/src/main.rs.
Each run is one repetition; `cargo xtask bench` interleaves the contenders
and takes the median.
"""

import multiprocessing as mp
import os
import sys
import time

IDLE_SECONDS = 600


# ---------------------------------------------------------------- targets --
# Module-level so that the spawn and forkserver start methods find them.


def first_line(w):
    w.send_bytes(b"1\n")


def nothing():
    pass


def idle(w):
    w.send_bytes(b"1\n")
    time.sleep(IDLE_SECONDS)


def echo(conn):
    while True:
        m = conn.recv_bytes()
        if not m:
            break
        conn.send_bytes(m)


def sink(conn, n, typed):
    conn.send_bytes(b"r")
    recv = conn.recv if typed else conn.recv_bytes
    for _ in range(n):
        recv()
    conn.send_bytes(b"k")


def producer(q, ready, gate, n, size):
    item = b"\x5a" * size
    ready.send_bytes(b"1")
    gate.wait()
    for _ in range(n):
        q.put(item)


def consumer(q, ready, gate, done, n):
    ready.send_bytes(b"1")
    gate.wait()
    for _ in range(n):
        q.get()
    done.send_bytes(b"1")


# ---------------------------------------------------------------- figures --


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def spawn_first_line(ctx, p):
    samples = p.get("samples", 200)
    times = []
    for i in range(samples + 1):
        r, w = ctx.Pipe(duplex=False)
        child = ctx.Process(target=first_line, args=(w,))
        t0 = time.perf_counter()
        child.start()
        w.close()
        r.recv_bytes()
        dt = time.perf_counter() - t0
        child.join()
        r.close()
        # The first one warms up (and starts the fork server) and does
        # not count.
        if i > 0:
            times.append(dt * 1e3)
    return median(times)


def start_join(ctx, p):
    n = p.get("procs", 100)
    warm = ctx.Process(target=nothing)
    warm.start()
    warm.join()
    t0 = time.perf_counter()
    procs = [ctx.Process(target=nothing) for _ in range(n)]
    for c in procs:
        c.start()
    for c in procs:
        c.join()
    dt = time.perf_counter() - t0
    bad = [c.exitcode for c in procs if c.exitcode != 0]
    if bad:
        raise RuntimeError(f"children exited with {bad}")
    return dt * 1e3


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def idle_rss(ctx, p):
    samples = p.get("samples", 5)
    rss = []
    for _ in range(samples):
        r, w = ctx.Pipe(duplex=False)
        child = ctx.Process(target=idle, args=(w,))
        child.start()
        w.close()
        r.recv_bytes()
        rss.append(peak_rss_mib(child.pid))
        child.kill()
        child.join()
        r.close()
    return median(rss)


def pin_to_one_cpu():
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def pipe_rt(ctx, p):
    iters = p.get("iters", 20000)
    size = p.get("size", 64)
    if p.get("pinned", 0):
        pin_to_one_cpu()
    a, b = ctx.Pipe()
    child = ctx.Process(target=echo, args=(b,))
    child.start()
    b.close()
    msg = b"\x5a" * size
    send, recv = a.send_bytes, a.recv_bytes
    for _ in range(iters // 10):
        send(msg)
        recv()
    t0 = time.perf_counter()
    for _ in range(iters):
        send(msg)
        recv()
    dt = time.perf_counter() - t0
    send(b"")
    child.join()
    return dt * 1e6 / iters


def pipe_bulk(ctx, p):
    msgs = p.get("msgs", 500)
    size = p.get("size", 1 << 20)
    # typed=1 (Vec<u8>) and typed=2 (ByteBuf) are both a pickled bytes here.
    typed = bool(p.get("typed", 0))
    a, b = ctx.Pipe()
    child = ctx.Process(target=sink, args=(b, msgs, typed))
    child.start()
    b.close()
    msg = b"\x5a" * size
    send = a.send if typed else a.send_bytes
    a.recv_bytes()
    t0 = time.perf_counter()
    for _ in range(msgs):
        send(msg)
    a.recv_bytes()
    dt = time.perf_counter() - t0
    child.join()
    return msgs * size / dt / 1e9


def share(items, ways, i):
    return items // ways + (1 if i < items % ways else 0)


def queue_items(ctx, p):
    items = p.get("items", 200000)
    size = p.get("size", 64)
    producers = max(1, p.get("producers", 1))
    consumers = max(1, p.get("consumers", 1))
    q = ctx.Queue(p.get("maxsize", 0))
    ready_r, ready_w = ctx.Pipe(duplex=False)
    done_r, done_w = ctx.Pipe(duplex=False)
    gate = ctx.Event()
    procs = [
        ctx.Process(target=producer, args=(q, ready_w, gate, share(items, producers, i), size))
        for i in range(producers)
    ] + [
        ctx.Process(target=consumer, args=(q, ready_w, gate, done_w, share(items, consumers, i)))
        for i in range(consumers)
    ]
    for c in procs:
        c.start()
    for _ in procs:
        ready_r.recv_bytes()
    t0 = time.perf_counter()
    gate.set()
    for _ in range(consumers):
        done_r.recv_bytes()
    dt = time.perf_counter() - t0
    for c in procs:
        c.join()
    return items / dt


def pool_sq(x):
    return x * x


def spin_cpu(us):
    """Spins until this thread used `us` µs of CPU (bench/src/pool_side.rs)."""
    end = time.thread_time() + us / 1e6
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


def pool(ctx, p):
    """The `pool` figure: op 0 map, 1 imap (chunksize 1), 2 apply_async,
    3 apply round trip (µs), 4 map of CPU-bound tasks, 5 start + first
    result (ms); tasks/s otherwise."""
    op, n = p["op"], p.get("n", 1000)
    workers = p.get("workers", 0) or os.cpu_count() or 1
    if op == 5:
        t0 = time.perf_counter()
        pl = ctx.Pool(workers)
        v = pl.apply(pool_sq, (3,))
        dt = time.perf_counter() - t0
        pl.terminate()
        pl.join()
        assert v == 9
        return dt * 1e3
    with ctx.Pool(workers) as pl:
        pl.map(pool_sq, range(workers * 4))
        t0 = time.perf_counter()
        if op == 0:
            assert len(pl.map(pool_sq, range(n))) == n
        elif op == 1:
            for _ in pl.imap(pool_sq, range(n), chunksize=1):
                pass
        elif op == 2:
            rs = [pl.apply_async(pool_sq, (i,)) for i in range(n)]
            for r in rs:
                r.get()
        elif op == 3:
            for i in range(n):
                pl.apply(pool_sq, (i,))
            return (time.perf_counter() - t0) * 1e6 / n
        elif op == 4:
            pl.map(spin_cpu, [p.get("us", 1000)] * n)
        else:
            raise ValueError(f"unknown pool op {op}")
        return n / (time.perf_counter() - t0)
# ------------------------------------------------ synchronisation (issue 16) --


def lock_uncontended(ctx, p):
    iters = p.get("iters", 1000000)
    lock = ctx.Lock()
    acquire, release = lock.acquire, lock.release
    t0 = time.perf_counter()
    for _ in range(iters):
        acquire()
        release()
    return (time.perf_counter() - t0) * 1e9 / iters


def incr(v, ready, go, n):
    ready.release()
    go.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def value_incr(ctx, p):
    n = p.get("iters", 100000)
    v, ready, go = ctx.Value("q", 0), ctx.Semaphore(0), ctx.Event()
    ps = [ctx.Process(target=incr, args=(v, ready, go, n)) for _ in range(2)]
    for x in ps:
        x.start()
    for _ in ps:
        ready.acquire()
    t0 = time.perf_counter()
    go.set()
    for x in ps:
        x.join()
    dt = time.perf_counter() - t0
    if v.value != 2 * n:
        raise SystemExit(f"final value {v.value} != {2 * n}")
    return 2 * n / dt


def pong(ping, pong_, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong_.set()


def event_rt(ctx, p):
    iters = p.get("iters", 20000)
    pin_to_one_cpu()
    a, b = ctx.Event(), ctx.Event()
    warm = iters // 10
    child = ctx.Process(target=pong, args=(a, b, warm + iters))
    child.start()

    def rt():
        a.set()
        b.wait()
        b.clear()

    for _ in range(warm):
        rt()
    t0 = time.perf_counter()
    for _ in range(iters):
        rt()
    dt = time.perf_counter() - t0
    child.join()
    return dt * 1e6 / iters


def party(b, n):
    for _ in range(n):
        b.wait()


def barrier_rt(ctx, p):
    iters = p.get("iters", 20000)
    b = ctx.Barrier(2)
    warm = iters // 10
    child = ctx.Process(target=party, args=(b, warm + iters))
    child.start()
    for _ in range(warm):
        b.wait()
    t0 = time.perf_counter()
    for _ in range(iters):
        b.wait()
    dt = time.perf_counter() - t0
    child.join()
    return dt * 1e6 / iters


FIGURES = {
    "spawn-first-line": spawn_first_line,
    "start-join": start_join,
    "idle-rss": idle_rss,
    "pipe-rt": pipe_rt,
    "pipe-bulk": pipe_bulk,
    "queue-items": queue_items,
    "pool": pool,
    "lock-uncontended": lock_uncontended,
    "value-incr": value_incr,
    "event-rt": event_rt,
    "barrier-rt": barrier_rt,
}


def main(argv):
    usage = "usage: mp_bench.py <spawn|forkserver|fork> <figure> [key=value]..."
    if len(argv) < 2 or argv[1] not in FIGURES:
        print(usage, file=sys.stderr)
        return 2
    method, figure = argv[0], argv[1]
    if method not in mp.get_all_start_methods():
        print(f"NA start method {method} is not available")
        return 0
    params = {}
    for kv in argv[2:]:
        k, _, v = kv.partition("=")
        params[k] = int(v)
    ctx = mp.get_context(method)
    print(f"RESULT {FIGURES[figure](ctx, params)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
